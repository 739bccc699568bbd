//! Every response the router makes up itself, in one place.
//!
//! Failures carry `x-fission-error: router` plus `x-fission-error-reason: <reason>`, so a
//! caller can tell "the proxy failed" from "the function answered with an error status"
//! (function responses are relayed verbatim and never carry these headers). Bodies are plain
//! text ending in a newline, as Go's `http.Error` writes them, and keep Fission's wording
//! where Fission has one; unlike Fission we include the executor's error text (a user whose
//! code does not load should be told why).

use std::time::Duration;

use fission_core::ExecutorError;

use crate::error::ProxyError;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::body::RouterBody;

/// Marks a response the router generated because something failed.
pub const ERROR_HEADER: &str = "x-fission-error";
/// Machine-readable reason of a router failure (see the constructors for the values).
pub const ERROR_REASON_HEADER: &str = "x-fission-error-reason";

fn build(
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: RouterBody,
) -> Response<RouterBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    resp
}

/// A failure: status, reason header and a text body (a newline is appended).
fn failure(status: StatusCode, reason: &'static str, text: &str) -> Response<RouterBody> {
    let mut resp = if text.is_empty() {
        build(status, None, RouterBody::empty())
    } else {
        build(
            status,
            Some(HeaderValue::from_static("text/plain; charset=utf-8")),
            RouterBody::full(format!("{text}\n")),
        )
    };
    let h = resp.headers_mut();
    h.insert(ERROR_HEADER, HeaderValue::from_static("router"));
    h.insert(ERROR_REASON_HEADER, HeaderValue::from_static(reason));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

// === The router's own endpoints ===

/// `GET /router-healthz`, and `GET /` when no trigger claims it.
pub(crate) fn ok_empty() -> Response<RouterBody> {
    build(StatusCode::OK, None, RouterBody::empty())
}

/// `GET /_version`.
pub(crate) fn version(version: &str) -> Response<RouterBody> {
    let body = serde_json::json!({ "version": version }).to_string();
    build(
        StatusCode::OK,
        Some(HeaderValue::from_static("application/json")),
        RouterBody::full(body),
    )
}

/// `GET /metrics`. OpenMetrics text (what prometheus-client encodes, ending in `# EOF`) gets
/// its content type; anything else is served as the classic Prometheus text format.
pub(crate) fn metrics(text: String) -> Response<RouterBody> {
    let ct = if text.trim_end().ends_with("# EOF") {
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8")
    } else {
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8")
    };
    build(StatusCode::OK, Some(ct), RouterBody::full(text))
}

// === Failures ===

/// No route matches the path (gorilla/mux's text).
pub(crate) fn not_found() -> Response<RouterBody> {
    failure(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "404 page not found",
    )
}

/// A route matches the path but none matches the method. Empty body, as gorilla/mux, plus the
/// `Allow` header HTTP requires on a 405 (RFC 9110 §15.5.6), which gorilla/mux leaves out.
pub(crate) fn method_not_allowed(allow: &str) -> Response<RouterBody> {
    let mut resp = failure(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "");
    if let Ok(v) = http::HeaderValue::from_str(allow) {
        resp.headers_mut().insert(http::header::ALLOW, v);
    }
    resp
}

/// `/metrics` was asked for but the server wired no registry in.
pub(crate) fn metrics_not_configured() -> Response<RouterBody> {
    failure(
        StatusCode::NOT_FOUND,
        "metrics_not_configured",
        "this router serves no metrics endpoint",
    )
}

/// The request body is over the limit.
pub(crate) fn payload_too_large(limit: usize, content_length: Option<u64>) -> Response<RouterBody> {
    let text = match content_length {
        Some(n) => format!(
            "request body too large: {n} bytes (Content-Length) exceeds the router's limit of {limit} bytes"
        ),
        None => format!("request body too large: it exceeds the router's limit of {limit} bytes"),
    };
    failure(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", &text)
}

/// The one place a proxy failure becomes a response (see [`ProxyError`] for the sources).
pub(crate) fn proxy_error(function: &str, err: &ProxyError) -> Response<RouterBody> {
    match err {
        ProxyError::PayloadTooLarge {
            limit,
            content_length,
        } => payload_too_large(*limit, *content_length),
        ProxyError::ClientBody(e) => bad_request_body(e),
        ProxyError::Acquire(e) => executor_error(function, e),
        ProxyError::AcquireTimeout(timeout) => lease_timeout(function, *timeout),
        ProxyError::Connect { .. } | ProxyError::Upstream { .. } => {
            upstream_failed(function, &err.to_string())
        }
        ProxyError::FunctionTimeout => function_timeout(),
        ProxyError::Internal(text) => internal(text),
    }
}

/// Reading the client's body failed before anything was sent to the function.
fn bad_request_body(err: &str) -> Response<RouterBody> {
    failure(
        StatusCode::BAD_REQUEST,
        "bad_request_body",
        &format!("failed to read the request body: {err}"),
    )
}

/// The function did not produce response headers within `functionTimeout` (Fission's text).
fn function_timeout() -> Response<RouterBody> {
    failure(
        StatusCode::GATEWAY_TIMEOUT,
        "function_timeout",
        "no response from function before timeout",
    )
}

/// The executor could not hand out an instance.
///
/// NotFound → 404; ShuttingDown → 503 (retry elsewhere); Overloaded → 429 (queue full) or 503
/// (waited too long), both with `Retry-After`; anything else → 500, as Fission does, but with
/// the executor's message instead of Fission's generic text.
fn executor_error(function: &str, err: &ExecutorError) -> Response<RouterBody> {
    let (status, reason) = match err {
        ExecutorError::NotFound(_) => (StatusCode::NOT_FOUND, "function_not_found"),
        ExecutorError::SpecializationFailed { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "specialization_failed")
        }
        ExecutorError::Timeout { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "instance_timeout"),
        ExecutorError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "executor_shutting_down"),
        ExecutorError::Overloaded {
            queue_full: true, ..
        } => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
        ExecutorError::Overloaded {
            queue_full: false, ..
        } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        ExecutorError::Unsupported(_) | ExecutorError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "executor_error")
        }
    };
    // Variants whose Display already names the function start with `[ns/name]`.
    let text = match err {
        ExecutorError::SpecializationFailed { .. } | ExecutorError::Timeout { .. } => {
            format!("error sending request to function: {err}")
        }
        _ => format!("error sending request to function: [{function}] {err}"),
    };
    let mut resp = failure(status, reason, &text);
    if let ExecutorError::Overloaded {
        retry_after_secs, ..
    } = err
    {
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(*retry_after_secs),
        );
    }
    resp
}

/// Leasing an instance took longer than `functionTimeout` (Fission answers 500 here, not 504:
/// the function never got the request).
fn lease_timeout(function: &str, timeout: Duration) -> Response<RouterBody> {
    let text = format!(
        "error sending request to function: [{function}] no instance became available within the function timeout of {}s",
        timeout.as_secs()
    );
    failure(StatusCode::INTERNAL_SERVER_ERROR, "instance_timeout", &text)
}

/// The instance could not be reached or dropped the connection without answering.
fn upstream_failed(function: &str, detail: &str) -> Response<RouterBody> {
    let text = format!("error sending request to function: [{function}] {detail}");
    failure(StatusCode::BAD_GATEWAY, "upstream_failed", &text)
}

/// A bug or an impossible state; the text says what.
pub(crate) fn internal(text: &str) -> Response<RouterBody> {
    failure(StatusCode::INTERNAL_SERVER_ERROR, "internal", text)
}
