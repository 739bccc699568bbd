//! W3C trace context through the router: a request's span continues the trace its caller sent
//! in `traceparent`, and the call to the function carries the upstream span's. Both go through
//! the global propagator, which is a no-op until the server installs OpenTelemetry export; then
//! a `traceparent` sent by the client still reaches the function unchanged, as any header does.

use http::HeaderMap;
use opentelemetry::global;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Make `span` a child of the caller's trace, if it sent one.
pub(crate) fn continue_from(span: &Span, headers: &HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    // Fails only without an OpenTelemetry layer, when there is no trace to join.
    let _ = span.set_parent(parent);
}

/// Write `span`'s trace context into `headers` (`traceparent`, `tracestate`).
pub(crate) fn inject(span: &Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}
