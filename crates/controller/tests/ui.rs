//! The dashboard's server side: embedded assets at `/ui` with their content types, and invoking
//! a function through the router (a stand-in router on a real socket records what it was sent).

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, Uri};
use fission_controller::{Config, Controller};
use fission_store::RedbStore;
use fission_store::archive::ArchiveStore;
use fission_store::logs::LogStore;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// What the stand-in router received: method, path and query, `x-test` header, body.
type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

struct Setup {
    app: axum::Router,
    seen: Seen,
    _dir: tempfile::TempDir,
}

/// A controller whose router is a stand-in answering 418 with a header and an echo of the body.
async fn setup() -> Setup {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let router = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let record = record.clone();
            async move {
                let x_test = headers
                    .get("x-test")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                record.lock().expect("lock").push((
                    method.to_string(),
                    uri.to_string(),
                    x_test,
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                (
                    StatusCode::IM_A_TEAPOT,
                    [("x-answer", "42")],
                    format!("echo: {}", String::from_utf8_lossy(&body)),
                )
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open(&dir.path().join("db.redb")).expect("store"));
    let archives = ArchiveStore::open(dir.path().join("archives")).expect("archives");
    let logs = LogStore::open(dir.path().join("logs")).expect("logs");
    let config = Config {
        router_url: format!("http://{addr}"),
        ..Config::default()
    };
    let c = Controller::new(config, store, archives, logs, CancellationToken::new());
    let s = Setup {
        app: c.app(),
        seen,
        _dir: dir,
    };
    for (path, body) in [
        (
            "/v2/environments",
            json!({"metadata": {"name": "nodejs"}, "spec": {"version": 3, "runtime": {"image": "fission/node-env"}, "poolsize": 3}}),
        ),
        (
            "/v2/packages",
            json!({"metadata": {"name": "p"}, "spec": {"environment": {"name": "nodejs", "namespace": "default"},
                   "deployment": {"type": "literal", "literal": "bW9kdWxlLmV4cG9ydHMgPSAoKSA9PiAxOw=="}}}),
        ),
        (
            "/v2/functions",
            json!({"metadata": {"name": "hello"}, "spec": {"environment": {"name": "nodejs", "namespace": "default"},
                   "package": {"packageref": {"name": "p", "namespace": "default"}, "functionName": ""}}}),
        ),
    ] {
        let (status, _, body) = s.call(Method::POST, path, Some(body.to_string())).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {body:?}");
    }
    s
}

impl Setup {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<String>,
    ) -> (StatusCode, String, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, content_type, json)
    }
}

#[tokio::test]
async fn dashboard_page_and_assets_are_served_with_their_content_types() {
    let s = setup().await;
    for (path, expected) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let (status, content_type, body) = s.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(content_type.starts_with(expected), "{path}: {content_type}");
        assert!(!body.as_str().unwrap_or_default().is_empty(), "{path}");
    }
    let (status, _, body) = s.call(Method::GET, "/ui/secrets.txt", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("secrets.txt")
    );
}

#[tokio::test]
async fn invoke_goes_through_the_router_and_returns_what_the_function_answered() {
    let s = setup().await;
    let req = json!({"function": "hello", "method": "post", "path": "/a/b?x=1",
                     "headers": {"X-Test": "yes"}, "body": "ping"});
    let (status, _, body) = s
        .call(Method::POST, "/ui/api/invoke", Some(req.to_string()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], 418);
    assert_eq!(body["body"], "echo: ping");
    assert_eq!(body["truncated"], false);
    assert!(
        body["duration_ms"].as_f64().unwrap_or(-1.0) >= 0.0,
        "{body}"
    );
    let headers = body["headers"].as_array().expect("headers");
    assert!(headers.contains(&json!(["x-answer", "42"])), "{headers:?}");
    let seen = s.seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![(
            "POST".to_owned(),
            "/fission-function/hello/a/b?x=1".to_owned(),
            "yes".to_owned(),
            "ping".to_owned()
        )]
    );
}

#[tokio::test]
async fn invoke_rejects_bad_requests_without_calling_the_router() {
    let s = setup().await;
    for (req, status, message) in [
        (
            "not json".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid invoke request",
        ),
        (
            json!({"function": "nosuch"}).to_string(),
            StatusCode::NOT_FOUND,
            "function 'nosuch' not found in namespace 'default'",
        ),
        (
            json!({"function": "hello", "method": "NOT A METHOD"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid HTTP method 'NOT A METHOD'",
        ),
        (
            json!({"function": "hello", "headers": {"bad header": "v"}}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid header 'bad header'",
        ),
    ] {
        let (got, _, body) = s
            .call(Method::POST, "/ui/api/invoke", Some(req.clone()))
            .await;
        assert_eq!(got, status, "{req}: {body}");
        let text = body["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{req}: {text}");
    }
    assert!(s.seen.lock().expect("lock").is_empty());
}
