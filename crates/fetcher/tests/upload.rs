//! The fetcher's builder half: `/upload` zips a build's deployment and stores it in the
//! controller's archive store (a stand-in that records what it was given, over real HTTP).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

type Stored = Arc<Mutex<Vec<(Vec<u8>, Option<String>)>>>;

async fn store(State(s): State<Stored>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let id = hex::encode(sha2::Sha256::digest(&body));
    s.lock().expect("lock").push((body.to_vec(), auth));
    (
        StatusCode::CREATED,
        json!({"id": format!("/fission/fission-functions/{id}")}).to_string(),
    )
}

async fn serve(app: Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

async fn setup() -> (String, tempfile::TempDir, Stored) {
    let stored: Stored = Arc::default();
    let controller = serve(
        Router::new()
            .route("/proxy/storage/v1/archive", post(store))
            .with_state(stored.clone()),
    )
    .await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = fission_fetcher::Config {
        shared_dir: tmp.path().to_owned(),
        secret_dir: tmp.path().join("secrets"),
        configmap_dir: tmp.path().join("configs"),
        controller_url: format!("http://{controller}"),
        runtime_url: "http://127.0.0.1:9".into(),
        auth_token: Some("s3cret".into()),
        fetch: fission_fetch::FetchConfig::default(),
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(fission_fetcher::serve(config, l, CancellationToken::new()));
    (format!("http://{addr}"), tmp, stored)
}

async fn upload(url: &str, body: Value) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{url}/upload"))
        .json(&body)
        .send()
        .await
        .expect("send");
    (r.status().as_u16(), r.text().await.expect("text"))
}

#[tokio::test]
async fn upload_zips_the_deployment_stores_it_with_the_token_and_answers_url_and_sha256() {
    let (url, tmp, stored) = setup().await;
    let deploy = tmp.path().join("pkg-abcdef-ghijkl");
    std::fs::create_dir_all(deploy.join("lib")).expect("mkdir");
    std::fs::write(deploy.join("main.py"), "def main():\n    return 'hi'\n").expect("write");
    std::fs::write(deploy.join("lib/dep.py"), "X = 1\n").expect("write");
    let (status, body) = upload(
        &url,
        json!({"filename": "pkg-abcdef-ghijkl", "storagesvcurl": "http://storagesvc.fission", "archivepackage": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    let stored = stored.lock().expect("lock").clone();
    assert_eq!(stored.len(), 1);
    let (zip, auth) = &stored[0];
    assert_eq!(auth.as_deref(), Some("Bearer s3cret"));
    let sum = hex::encode(sha2::Sha256::digest(zip));
    assert_eq!(answer["checksum"], json!({"type": "sha256", "sum": sum}));
    assert_eq!(
        answer["archiveDownloadUrl"],
        json!(format!(
            "http://storagesvc.fission/v1/archive?id=%2Ffission%2Ffission-functions%2F{sum}"
        ))
    );
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.clone())).expect("a zip");
    let mut names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["lib/", "lib/dep.py", "main.py"]);
    let mut main = String::new();
    std::io::Read::read_to_string(&mut archive.by_name("main.py").expect("main.py"), &mut main)
        .expect("read");
    assert!(main.contains("return 'hi'"));
    // The deployment left the builder's volume.
    assert!(!deploy.exists());
}

#[tokio::test]
async fn upload_of_a_missing_file_or_a_path_is_refused() {
    let (url, _tmp, stored) = setup().await;
    let (status, body) = upload(&url, json!({"filename": "nope", "archivepackage": true})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cannot upload"), "{body}");
    let (status, _) = upload(&url, json!({"filename": "../etc", "archivepackage": true})).await;
    assert_eq!(status, 400);
    assert!(stored.lock().expect("lock").is_empty());
}
