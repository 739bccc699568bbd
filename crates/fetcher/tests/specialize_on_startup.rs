//! `fission fetcher --specialize-on-startup` (newdeploy pods): the function is loaded before
//! the fetcher reports ready, and a failed load ends the fetcher instead of leaving a pod that
//! looks ready but serves nothing. Stand-in controller and runtime on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

async fn serve(app: Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

/// A controller with one literal package `hello-pkg`.
async fn controller() -> SocketAddr {
    let code = base64::engine::general_purpose::STANDARD.encode(b"module.exports = () => 'hi'");
    let package = json!({"apiVersion": "fission.io/v1", "kind": "Package",
        "metadata": {"name": "hello-pkg", "namespace": "default", "resourceVersion": "7"},
        "spec": {"environment": {"name": "nodejs", "namespace": "default"},
                 "deployment": {"type": "literal", "literal": code}},
        "status": {"buildstatus": "succeeded"}});
    serve(Router::new().route(
        "/v2/packages/hello-pkg",
        get(move || {
            let p = package.clone();
            async move { axum::Json(p) }
        }),
    ))
    .await
}

/// A runtime that answers the load request with `status` once `go` is notified.
async fn runtime(status: u16, go: Arc<Notify>) -> SocketAddr {
    serve(Router::new().route(
        "/v2/specialize",
        post(move |axum::Json(_): axum::Json<Value>| {
            let go = go.clone();
            async move {
                go.notified().await;
                (
                    StatusCode::from_u16(status).expect("status"),
                    "SyntaxError: Unexpected token",
                )
            }
        }),
    ))
    .await
}

struct Fetcher {
    url: String,
    done: tokio::task::JoinHandle<Result<(), fission_fetcher::FetcherError>>,
    _tmp: tempfile::TempDir,
    shutdown: CancellationToken,
}

async fn fetcher(runtime: SocketAddr) -> Fetcher {
    let tmp = tempfile::tempdir().expect("tempdir");
    let userfunc = tmp.path().join("userfunc");
    std::fs::create_dir_all(&userfunc).expect("mkdir");
    let config = fission_fetcher::Config {
        shared_dir: userfunc,
        secret_dir: tmp.path().join("secrets"),
        configmap_dir: tmp.path().join("configs"),
        controller_url: format!("http://{}", controller().await),
        runtime_url: format!("http://{runtime}"),
        auth_token: None,
        fetch: fission_fetch::FetchConfig::default(),
    };
    let request: fission_fetcher::wire::SpecializeRequest = serde_json::from_value(json!({
        "FetchReq": {"fetchType": 1,
                     "package": {"name": "hello-pkg", "namespace": "default", "resourceVersion": "7"},
                     "filename": "deployarchive"},
        "LoadReq": {"filepath": "/userfunc/deployarchive", "functionName": "", "url": "",
                    "FunctionMetadata": {"name": "hello", "namespace": "default"}, "envVersion": 3}
    }))
    .expect("request");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let done = tokio::spawn(fission_fetcher::serve_specialized(
        config,
        l,
        request,
        shutdown.clone(),
    ));
    Fetcher {
        url,
        done,
        _tmp: tmp,
        shutdown,
    }
}

async fn readiness(url: &str) -> u16 {
    reqwest::get(format!("{url}/readiness-healthz"))
        .await
        .expect("readiness")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_fetcher_is_ready_only_once_the_function_is_loaded() {
    let go = Arc::new(Notify::new());
    let f = fetcher(runtime(202, go.clone()).await).await;
    // The runtime has not answered the load request yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(readiness(&f.url).await, 503);
    assert_eq!(
        reqwest::get(format!("{}/healthz", f.url))
            .await
            .expect("healthz")
            .status()
            .as_u16(),
        200,
        "alive while loading"
    );
    go.notify_one();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while readiness(&f.url).await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.shutdown.cancel();
    f.done.await.expect("join").expect("clean stop");
}

#[tokio::test]
async fn a_failed_load_ends_the_fetcher_with_the_runtimes_error() {
    let go = Arc::new(Notify::new());
    go.notify_one();
    let f = fetcher(runtime(500, go).await).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), f.done)
        .await
        .expect("the fetcher ends")
        .expect("join");
    let error = ended.expect_err("a failed load is an error").to_string();
    assert!(
        error.contains("specialization on startup failed") && error.contains("SyntaxError"),
        "{error}"
    );
}
