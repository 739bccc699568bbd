//! OpenTelemetry traces, exported over OTLP (HTTP/protobuf) when the standard variables ask for
//! it: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), with
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME` and
//! `OTEL_SDK_DISABLED` read as the specification says. Unset: no exporter, no propagation, and
//! the spans stay as cheap as they were (the layer is not installed).
//!
//! The spans are the components' `tracing` spans (router request, route lookup, instance
//! acquisition, specialization, upstream call; builds; trigger fires), bridged by
//! tracing-opentelemetry; W3C `traceparent` is read from incoming requests and written to the
//! function's request.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

/// Why tracing could not be set up as the variables ask.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// Only OTLP over HTTP/protobuf is built in.
    #[error(
        "{var}={value} is not supported: this server exports OTLP over http/protobuf only (unset it or set it to http/protobuf)"
    )]
    Protocol { var: &'static str, value: String },
    /// The exporter rejected its configuration (an invalid endpoint, headers, …).
    #[error("cannot configure the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The installed exporter; dropping it does not flush, [`Tracing::shutdown`] does.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Export what is still buffered (bounded by the exporter's timeout).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "could not flush the last traces");
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether the variables ask for trace export.
pub fn requested() -> bool {
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let exporter_none = var("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none");
    !disabled
        && !exporter_none
        && (var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some())
}

/// The spans worth a trace: fission's own crates at debug (request spans are debug so the log
/// stays quiet), nothing from dependencies.
fn span_filter() -> Targets {
    Targets::new()
        .with_target("fission", tracing::Level::DEBUG)
        .with_target("fission_router", tracing::Level::DEBUG)
        .with_target("fission_executor", tracing::Level::DEBUG)
        .with_target("fission_builder", tracing::Level::DEBUG)
        .with_target("fission_triggers", tracing::Level::DEBUG)
}

/// The layer that turns spans into OTLP traces, when [`requested`]; must be called inside the
/// tokio runtime (the batch exporter runs on it).
pub fn layer<S>() -> Result<Option<(impl Layer<S>, Tracing)>, OtelError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    if !requested() {
        return Ok(None);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = var(name).filter(|v| v != "http/protobuf") {
            return Err(OtelError::Protocol { var: name, value });
        }
    }
    let timeout = var("OTEL_EXPORTER_OTLP_TIMEOUT")
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis);
    let client = opentelemetry_http::hyper::HyperClient::with_default_connector(timeout, None);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_timeout(timeout)
        .build()?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| "fission".to_owned());
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let tracer = provider.tracer("fission");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(span_filter());
    Ok(Some((layer, Tracing { provider })))
}
