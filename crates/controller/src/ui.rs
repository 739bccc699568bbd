//! The web dashboard at `/ui`: the front end built from `ui/` (checked in as `ui/dist`, so the
//! Rust build needs no npm) embedded in the binary, plus the one endpoint the page cannot do with
//! the REST API alone: invoking a function through the router (another origin, so the browser
//! cannot call it directly).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fission_core::DEFAULT_NAMESPACE;
use fission_core::resources::ResourceKind;
use serde::{Deserialize, Serialize};

use crate::Controller;
use crate::error::ApiError;

/// One embedded asset: its path under `/ui/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            bytes: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../ui/dist/",
                $path
            )),
        }
    };
}

/// What `npm run build` writes to `ui/dist` (ui/build.mjs names exactly these files).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
];

/// How long an invocation from the page may take, as the router's own default function timeout.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest response body shown to the page; the rest is cut (and said so), to keep the page usable.
const MAX_SHOWN_BODY: usize = 256 * 1024;

/// The dashboard's routes, merged into the controller's application.
pub(crate) fn routes() -> Router<Controller> {
    Router::new()
        .route("/ui", get(|| async { asset("index.html") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/{file}",
            get(|axum::extract::Path(file): axum::extract::Path<String>| async move {
                asset(&file)
            }),
        )
        .route("/ui/api/invoke", post(invoke))
}

fn asset(path: &str) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                // Asset names are not content-hashed: revalidate so an upgraded server is seen.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            a.bytes,
        )
            .into_response(),
        None => ApiError::not_found(format!("no dashboard asset '{path}'")).into_response(),
    }
}

/// What the invoke form sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InvokeRequest {
    function: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default = "default_method")]
    method: String,
    /// Sub-path after the function's URL, e.g. `/items/1?x=y`.
    #[serde(default)]
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

fn default_method() -> String {
    "GET".to_owned()
}

/// What the page shows of the function's answer.
#[derive(Debug, Serialize)]
pub(crate) struct InvokeResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// Whether `body` was cut at [`MAX_SHOWN_BODY`].
    truncated: bool,
    /// Wall time of the call through the router, in milliseconds.
    duration_ms: f64,
}

/// Why an invocation could not be made (as opposed to the function answering with an error).
#[derive(Debug, thiserror::Error)]
enum InvokeError {
    #[error("invalid invoke request: {0}")]
    Body(String),
    #[error("invalid HTTP method '{0}'")]
    Method(String),
    #[error("invalid header '{name}': {reason}")]
    Header { name: String, reason: String },
    #[error("function '{name}' not found in namespace '{namespace}'")]
    NoFunction { namespace: String, name: String },
    #[error("calling function '{name}' through the router at {router}: {reason}")]
    Router {
        name: String,
        router: String,
        reason: String,
    },
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        match e {
            InvokeError::NoFunction { .. } => ApiError::not_found(e.to_string()),
            InvokeError::Router { .. } => ApiError::internal(e.to_string()),
            _ => ApiError::invalid(e.to_string()),
        }
    }
}

async fn invoke(
    State(c): State<Controller>,
    req: Result<Json<InvokeRequest>, JsonRejection>,
) -> Result<Json<InvokeResponse>, ApiError> {
    let Json(req) = req.map_err(|e| InvokeError::Body(e.body_text()))?;
    Ok(Json(call(&c, req).await?))
}

async fn call(c: &Controller, req: InvokeRequest) -> Result<InvokeResponse, InvokeError> {
    let namespace = req
        .namespace
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let method = Method::from_bytes(req.method.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| InvokeError::Method(req.method.clone()))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &req.headers {
        let bad = |reason: String| InvokeError::Header {
            name: name.clone(),
            reason,
        };
        let n = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| bad(e.to_string()))?;
        let v = HeaderValue::from_str(value.trim()).map_err(|e| bad(e.to_string()))?;
        headers.insert(n, v);
    }
    // A clear 404 beats whatever the router says about an unknown function.
    if c.store
        .get(ResourceKind::Function, &namespace, &req.function)
        .await
        .is_err()
    {
        return Err(InvokeError::NoFunction {
            namespace,
            name: req.function,
        });
    }
    let url = function_url(&c.config.router_url, &namespace, &req.function, &req.path);
    let router_error = |reason: String| InvokeError::Router {
        name: req.function.clone(),
        router: c.config.router_url.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(INVOKE_TIMEOUT)
        .build()
        .map_err(|e| router_error(e.to_string()))?;
    let started = Instant::now();
    let resp = client
        .request(method, &url)
        .headers(headers)
        .body(req.body)
        .send()
        .await
        .map_err(|e| router_error(e.to_string()))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| router_error(e.to_string()))?;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let truncated = bytes.len() > MAX_SHOWN_BODY;
    let body = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_SHOWN_BODY)]).into_owned();
    Ok(InvokeResponse {
        status,
        headers,
        body,
        truncated,
        duration_ms,
    })
}

/// `/fission-function/<name>` in the default namespace, else `/fission-function/<ns>/<name>`,
/// then the sub-path (given a leading `/` if it lacks one).
fn function_url(router: &str, namespace: &str, name: &str, path: &str) -> String {
    let mut url = format!("{}/fission-function/", router.trim_end_matches('/'));
    if namespace != DEFAULT_NAMESPACE {
        url.push_str(namespace);
        url.push('/');
    }
    url.push_str(name);
    if !path.is_empty() {
        if !path.starts_with('/') && !path.starts_with('?') {
            url.push('/');
        }
        url.push_str(path);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_asset_is_nonempty_and_index_loads_the_bundle() {
        for a in ASSETS {
            assert!(!a.bytes.is_empty(), "{} is empty", a.path);
        }
        let index = std::str::from_utf8(ASSETS[0].bytes).expect("utf-8 index.html");
        assert!(index.contains("app.js"), "index.html does not load app.js");
        assert!(
            index.contains("app.css"),
            "index.html does not load app.css"
        );
    }

    #[test]
    fn function_urls_carry_namespace_and_subpath() {
        assert_eq!(
            function_url("http://r:1/", "default", "f", ""),
            "http://r:1/fission-function/f"
        );
        assert_eq!(
            function_url("http://r:1", "ns1", "f", "a/b?x=1"),
            "http://r:1/fission-function/ns1/f/a/b?x=1"
        );
        assert_eq!(
            function_url("http://r:1", "default", "f", "?x=1"),
            "http://r:1/fission-function/f?x=1"
        );
    }
}
