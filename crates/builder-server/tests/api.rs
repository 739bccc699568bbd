//! The builder API over real HTTP, with real build commands.

use std::path::Path;

use fission_builder_server::{BuildResponse, Config};
use tokio_util::sync::CancellationToken;

struct Server {
    url: String,
    shared: tempfile::TempDir,
    stop: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn server() -> Server {
    let shared = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    tokio::spawn(fission_builder_server::serve(
        Config::new(shared.path()),
        listener,
        stop.clone(),
    ));
    Server {
        url,
        shared,
        stop,
        http: reqwest::Client::new(),
    }
}

fn source(shared: &Path, name: &str, files: &[(&str, &str)]) {
    let dir = shared.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (f, body) in files {
        std::fs::write(dir.join(f), body).expect("write");
    }
}

const BUILD_SH: &str = "set -e\necho \"building in $(pwd)\"\ncp -r \"$SRC_PKG\" \"$DEPLOY_PKG\"\necho 'built' > \"$DEPLOY_PKG/marker\"\necho 'to stderr' >&2\n";

#[tokio::test]
async fn a_build_runs_the_command_in_the_source_and_answers_the_artifact_and_its_logs() {
    let s = server().await;
    source(
        s.shared.path(),
        "pkg-abcdef",
        &[("build.sh", BUILD_SH), ("main.py", "x = 1\n")],
    );
    let resp = s
        .http
        .post(format!("{}/", s.url))
        .json(&serde_json::json!({"srcPkgFilename": "pkg-abcdef", "command": "/bin/sh build.sh"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let body: BuildResponse = resp.json().await.expect("json");
    assert!(
        body.artifact_filename.starts_with("pkg-abcdef-")
            && body.artifact_filename.len() == "pkg-abcdef-".len() + 6,
        "{body:?}"
    );
    let src = std::fs::canonicalize(s.shared.path().join("pkg-abcdef")).expect("canon");
    assert!(
        body.build_logs
            .contains(&format!("building in {}", src.display())),
        "{}",
        body.build_logs
    );
    assert!(body.build_logs.contains("to stderr"), "{}", body.build_logs);
    let deploy = s.shared.path().join(&body.artifact_filename);
    assert_eq!(
        std::fs::read_to_string(deploy.join("marker")).expect("marker"),
        "built\n"
    );
    assert_eq!(
        std::fs::read_to_string(deploy.join("main.py")).expect("main.py"),
        "x = 1\n"
    );
}

#[tokio::test]
async fn a_failing_command_answers_500_with_its_output_and_the_error() {
    let s = server().await;
    source(
        s.shared.path(),
        "bad",
        &[(
            "fail.sh",
            "echo 'ERROR: No matching distribution'\nexit 3\n",
        )],
    );
    let resp = s
        .http
        .post(format!("{}/build", s.url))
        .json(&serde_json::json!({"srcPkgFilename": "bad", "command": "/bin/sh fail.sh"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 500);
    let body: BuildResponse = resp.json().await.expect("json");
    assert_eq!(body.artifact_filename, "");
    assert!(
        body.build_logs.contains("ERROR: No matching distribution"),
        "{}",
        body.build_logs
    );
    assert!(
        body.build_logs
            .contains("error building source package: exit status: 3"),
        "{}",
        body.build_logs
    );
}

#[tokio::test]
async fn a_missing_program_or_source_is_a_failed_build_not_a_crash() {
    let s = server().await;
    source(s.shared.path(), "src", &[]);
    let resp = s
        .http
        .post(format!("{}/", s.url))
        .json(&serde_json::json!({"srcPkgFilename": "src", "command": "/no/such/build"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 500);
    let body: BuildResponse = resp.json().await.expect("json");
    assert!(
        body.build_logs
            .contains("error building source package: cannot start '/no/such/build'"),
        "{}",
        body.build_logs
    );
    let resp = s
        .http
        .post(format!("{}/", s.url))
        .json(&serde_json::json!({"srcPkgFilename": "absent"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 500);
    let body: BuildResponse = resp.json().await.expect("json");
    assert!(body.build_logs.contains("does not exist"), "{body:?}");
}

#[tokio::test]
async fn clean_removes_the_named_directory_and_refuses_paths() {
    let s = server().await;
    source(s.shared.path(), "gone", &[("a", "b")]);
    let resp = s
        .http
        .delete(format!("{}/clean?name=gone", s.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 200);
    assert!(!s.shared.path().join("gone").exists());
    let resp = s
        .http
        .delete(format!("{}/clean?name=..", s.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 400);
    let resp = s
        .http
        .delete(format!("{}/clean", s.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn bad_requests_are_refused_with_4xx() {
    let s = server().await;
    let resp = s.http.get(format!("{}/", s.url)).send().await.expect("get");
    assert_eq!(resp.status(), 405);
    let resp = s
        .http
        .post(format!("{}/", s.url))
        .body("not json")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    let resp = s
        .http
        .post(format!("{}/", s.url))
        .json(&serde_json::json!({"srcPkgFilename": "../etc"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    let resp = s
        .http
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_second_build_while_one_runs_is_refused_with_retry_after() {
    let s = server().await;
    source(s.shared.path(), "slow", &[("slow.sh", "sleep 2\n")]);
    source(s.shared.path(), "other", &[]);
    let first = {
        let (http, url) = (s.http.clone(), s.url.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/"))
                .json(&serde_json::json!({"srcPkgFilename": "slow", "command": "/bin/sh slow.sh"}))
                .send()
                .await
                .expect("post")
                .status()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let resp = s
        .http
        .post(format!("{}/", s.url))
        .json(&serde_json::json!({"srcPkgFilename": "other", "command": "/bin/true"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert_eq!(first.await.expect("join"), 200);
    // Free again once the first finished.
    let resp = s
        .http
        .post(format!("{}/", s.url))
        .json(&serde_json::json!({"srcPkgFilename": "other", "command": "/bin/true"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn nothing_a_build_started_outlives_it() {
    let s = server().await;
    // The build leaves a background process behind; it is killed with the build's group.
    source(
        s.shared.path(),
        "bg",
        &[(
            "bg.sh",
            "sleep 30 &\necho $! > \"$SRC_PKG/../bg.pid\"\ncp -r \"$SRC_PKG\" \"$DEPLOY_PKG\"\n",
        )],
    );
    let t0 = std::time::Instant::now();
    let resp = s
        .http
        .post(format!("{}/", s.url))
        .json(&serde_json::json!({"srcPkgFilename": "bg", "command": "/bin/sh bg.sh"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "the answer waited for the background process: {:?}",
        t0.elapsed()
    );
    let pid = std::fs::read_to_string(s.shared.path().join("bg.pid")).expect("pid");
    let proc_dir = Path::new("/proc").join(pid.trim());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    // Gone, or a zombie waiting for init to reap it.
    while proc_dir.exists()
        && !std::fs::read_to_string(proc_dir.join("stat")).is_ok_and(|s| s.contains(") Z "))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the build's background process {} survived it",
            pid.trim()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
