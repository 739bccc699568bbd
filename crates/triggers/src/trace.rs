//! W3C trace context on the calls a trigger makes: the router's span of the call continues the
//! fire's trace. The global propagator is a no-op until the server installs OpenTelemetry export.

use opentelemetry::global;
use opentelemetry_http::HeaderInjector;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Write `span`'s trace context into `headers` (`traceparent`, `tracestate`).
pub(crate) fn inject(span: &Span, headers: &mut reqwest::header::HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}
