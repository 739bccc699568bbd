//! The fetcher's API against a stand-in controller and runtime (real HTTP on loopback): what
//! lands in the shared directories, what the runtime is told, and the errors callers see.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn serve(app: Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

type Packages = Arc<BTreeMap<String, Value>>;

async fn get_package(
    State(p): State<Packages>,
    Path(name): Path<String>,
) -> Result<Json<Value>, StatusCode> {
    p.get(&name).cloned().map(Json).ok_or(StatusCode::NOT_FOUND)
}

async fn get_secret(Path(name): Path<String>) -> Result<Json<Value>, StatusCode> {
    if name != "db" {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(Json(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "default"},
        "data": {"password": b64(b"hunter2")}})))
}

/// A controller holding `packages` and one secret `db` (key `password`).
async fn controller(packages: BTreeMap<String, Value>) -> SocketAddr {
    let app = Router::new()
        .route("/v2/packages/{name}", get(get_package))
        .route("/v2/secrets/{name}", get(get_secret))
        .with_state(Arc::new(packages));
    serve(app).await
}

/// A runtime that records load requests and answers `status`.
async fn runtime(status: u16) -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = Router::new().route(
        "/v2/specialize",
        post(move |Json(body): Json<Value>| {
            let s = s.clone();
            async move {
                s.lock().expect("lock").push(body);
                let code = StatusCode::from_u16(status).expect("status");
                let text = if status >= 300 {
                    "SyntaxError: Unexpected token"
                } else {
                    ""
                };
                (code, text)
            }
        }),
    );
    (serve(app).await, seen)
}

struct Dirs {
    _tmp: tempfile::TempDir,
    userfunc: std::path::PathBuf,
    secrets: std::path::PathBuf,
}

async fn fetcher(controller: SocketAddr, runtime: SocketAddr) -> (String, Dirs) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs = Dirs {
        userfunc: tmp.path().join("userfunc"),
        secrets: tmp.path().join("secrets"),
        _tmp: tmp,
    };
    std::fs::create_dir_all(&dirs.userfunc).expect("mkdir");
    let config = fission_fetcher::Config {
        shared_dir: dirs.userfunc.clone(),
        secret_dir: dirs.secrets.clone(),
        configmap_dir: dirs.userfunc.join("../configs"),
        controller_url: format!("http://{controller}"),
        runtime_url: format!("http://{runtime}"),
        auth_token: None,
        fetch: fission_fetch::FetchConfig::default(),
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(fission_fetcher::serve(config, l, CancellationToken::new()));
    (format!("http://{addr}"), dirs)
}

fn package(literal: &[u8], status: &str) -> Value {
    json!({"apiVersion": "fission.io/v1", "kind": "Package",
        "metadata": {"name": "hello-pkg", "namespace": "default", "resourceVersion": "7"},
        "spec": {"environment": {"name": "nodejs", "namespace": "default"},
                 "deployment": {"type": "literal", "literal": b64(literal)}},
        "status": {"buildstatus": status}})
}

fn specialize_request(secrets: Value) -> Value {
    json!({
        "FetchReq": {"fetchType": 1,
                     "package": {"name": "hello-pkg", "namespace": "default", "resourceVersion": "7"},
                     "url": "", "storagesvcurl": "", "filename": "deployarchive",
                     "secretList": secrets, "configMapList": null, "keeparchive": false},
        "LoadReq": {"filepath": "/userfunc/deployarchive", "functionName": "", "url": "",
                    "FunctionMetadata": {"name": "hello", "namespace": "default"}, "envVersion": 3}
    })
}

async fn post_json(url: String, body: &Value) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("send");
    (r.status().as_u16(), r.text().await.expect("text"))
}

#[tokio::test]
async fn specialize_writes_the_code_and_secrets_then_tells_the_runtime() {
    let code = b"module.exports = async () => 'Hello, world!';\n";
    let c = controller(BTreeMap::from([(
        "hello-pkg".into(),
        package(code, "succeeded"),
    )]))
    .await;
    let (rt, seen) = runtime(202).await;
    let (url, dirs) = fetcher(c, rt).await;
    let req = specialize_request(json!([{"namespace": "default", "name": "db"}]));
    assert_eq!(
        post_json(format!("{url}/specialize"), &req).await,
        (200, String::new())
    );
    assert_eq!(
        std::fs::read(dirs.userfunc.join("deployarchive")).expect("code"),
        code
    );
    assert_eq!(
        std::fs::read(dirs.secrets.join("default/db/password")).expect("secret"),
        b"hunter2"
    );
    let loads = seen.lock().expect("lock").clone();
    assert_eq!(loads, vec![req["LoadReq"].clone()]);
}

#[tokio::test]
async fn a_zip_deployment_is_unpacked_into_a_directory() {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("hello.js", zip::write::SimpleFileOptions::default())
        .expect("zip");
    std::io::Write::write_all(&mut zip, b"module.exports = 1;").expect("zip");
    let bytes = zip.finish().expect("zip").into_inner();
    let c = controller(BTreeMap::from([(
        "hello-pkg".into(),
        package(&bytes, "none"),
    )]))
    .await;
    let (rt, _) = runtime(202).await;
    let (url, dirs) = fetcher(c, rt).await;
    let (status, _) = post_json(
        format!("{url}/specialize"),
        &specialize_request(Value::Null),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        std::fs::read_to_string(dirs.userfunc.join("deployarchive/hello.js")).expect("unpacked"),
        "module.exports = 1;"
    );
}

#[tokio::test]
async fn a_package_not_built_is_refused() {
    let c = controller(BTreeMap::from([(
        "hello-pkg".into(),
        package(b"x", "failed"),
    )]))
    .await;
    let (rt, seen) = runtime(202).await;
    let (url, dirs) = fetcher(c, rt).await;
    let (status, body) = post_json(
        format!("{url}/specialize"),
        &specialize_request(Value::Null),
    )
    .await;
    assert_eq!(status, 500);
    assert!(
        body.contains("package build status was not \"succeeded\""),
        "{body}"
    );
    assert!(!dirs.userfunc.join("deployarchive").exists());
    assert!(seen.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_missing_secret_is_a_404_naming_it() {
    let c = controller(BTreeMap::from([(
        "hello-pkg".into(),
        package(b"x", "succeeded"),
    )]))
    .await;
    let (rt, seen) = runtime(202).await;
    let (url, _dirs) = fetcher(c, rt).await;
    let req = specialize_request(json!([{"namespace": "default", "name": "nope"}]));
    let (status, body) = post_json(format!("{url}/specialize"), &req).await;
    assert_eq!(status, 404);
    assert!(body.contains("'nope'"), "{body}");
    assert!(seen.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn the_runtimes_refusal_is_passed_back_with_its_text() {
    let c = controller(BTreeMap::from([(
        "hello-pkg".into(),
        package(b"x", "succeeded"),
    )]))
    .await;
    let (rt, _) = runtime(500).await;
    let (url, _dirs) = fetcher(c, rt).await;
    let (status, body) = post_json(
        format!("{url}/specialize"),
        &specialize_request(Value::Null),
    )
    .await;
    assert_eq!(status, 500);
    assert!(body.contains("SyntaxError: Unexpected token"), "{body}");
}

#[tokio::test]
async fn a_file_name_leaving_the_shared_directory_is_refused() {
    let c = controller(BTreeMap::new()).await;
    let (rt, _) = runtime(202).await;
    let (url, _dirs) = fetcher(c, rt).await;
    let mut req = specialize_request(Value::Null);
    req["FetchReq"]["filename"] = json!("../etc/passwd");
    let (status, body) = post_json(format!("{url}/specialize"), &req).await;
    assert_eq!(status, 400);
    assert!(body.contains("one path component"), "{body}");
    let (status, _) = post_json(format!("{url}/specialize"), &json!({"nope": 1})).await;
    assert_eq!(status, 400);
}
