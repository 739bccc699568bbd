//! End-to-end: `fission server --store kubernetes` on a real API server (etcd + kube-apiserver
//! on loopback, see scripts/k8s/). Fission's YAML applied with kubectl is served; what the CLI
//! creates is visible to kubectl; Secrets made with kubectl reach functions.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube_test_cluster::{TestCluster, repo_root, shared};
use support::{BIN, eventually_blocking, http, require_functions, write};

/// A server on the cluster's state, stopped on drop.
struct KubeServer {
    child: Child,
    controller: String,
    router: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl KubeServer {
    fn start(cluster: &TestCluster) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("server.log");
        let mut child = Command::new(BIN)
            .args(["server", "--store", "kubernetes", "--kubeconfig"])
            .arg(&cluster.kubeconfig)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--controller-listen",
                "127.0.0.1:0",
                "--router-listen",
                "127.0.0.1:0",
                "--grace-period",
                "2",
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("fission server ready") => {
                    let after = |key: &str| {
                        line.split(key)
                            .nth(1)
                            .and_then(|r| r.split_whitespace().next())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    return Self {
                        controller: after("controller "),
                        router: after("router "),
                        child,
                        log,
                        _dir: dir,
                    };
                }
                Ok(_) => {}
                Err(_) => {
                    let exited = child.try_wait().ok().flatten();
                    if exited.is_some() || Instant::now() > deadline {
                        let _ = child.kill();
                        panic!(
                            "server did not start ({exited:?}): {}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                }
            }
        }
    }

    fn fission(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .env("FISSION_URL", &self.controller)
            .env("FISSION_ROUTER_URL", &self.router)
            .env_remove("FISSION_DEFAULT_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .expect("run fission")
    }

    #[track_caller]
    fn fission_ok(&self, args: &[&str]) -> String {
        let out = self.fission(args);
        assert!(
            out.status.success(),
            "fission {args:?} failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = http().get(format!("{}{path}", self.router)).send().ok()?;
        Some((r.status().as_u16(), r.text().ok()?))
    }
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cluster and a server on it, or None (outside CI) when the machine lacks what functions
/// need to run (the runtimes' packages, the sandbox) or what the cluster needs.
fn setup() -> Option<(&'static TestCluster, KubeServer)> {
    require_functions()?;
    let cluster = shared()?;
    let server = KubeServer::start(cluster);
    Some((cluster, server))
}

fn kubectl_apply(cluster: &TestCluster, file: &Path) {
    cluster.kubectl_ok([
        std::ffi::OsStr::new("apply"),
        "-f".as_ref(),
        file.as_os_str(),
    ]);
}

#[test]
fn kubernetes_store_serves_kubectl_yaml_shows_cli_objects_to_kubectl_and_delivers_kubectl_secrets()
{
    let Some((cluster, server)) = setup() else {
        return;
    };

    // Fission's YAML, applied with kubectl: served through the router, listed by the CLI.
    kubectl_apply(
        cluster,
        &repo_root().join("deploy/examples/hello-nodejs.yaml"),
    );
    let (status, body) = eventually_blocking(
        Duration::from_secs(60),
        "the kubectl-applied function to answer",
        || server.get("/hello").filter(|(s, _)| *s == 200),
    );
    assert_eq!((status, body.as_str()), (200, "hello from kubernetes\n"));
    let fns = server.fission_ok(&["fn", "list"]);
    assert!(
        fns.lines()
            .any(|l| l.split_whitespace().next() == Some("hello")),
        "{fns}"
    );

    // Made with the CLI, visible to kubectl.
    let dir = tempfile::tempdir().expect("tempdir");
    let code = write(
        dir.path(),
        "secret.js",
        "const fs = require('fs');\n\
         module.exports = async function() {\n\
           return { status: 200, body: fs.readFileSync('/secrets/default/creds/token', 'utf8') };\n\
         };\n",
    );
    cluster.kubectl_ok([
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=token=first",
    ]);
    server.fission_ok(&[
        "fn",
        "create",
        "--name",
        "reads-secret",
        "--env",
        "nodejs",
        "--code",
        code.to_str().expect("path"),
        "--secret",
        "creds",
    ]);
    server.fission_ok(&[
        "route",
        "create",
        "--name",
        "reads-secret",
        "--function",
        "reads-secret",
        "--url",
        "/secret",
        "--method",
        "GET",
    ]);
    let names = cluster.kubectl_ok([
        "get",
        "functions.fission.io",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(
        names.split_whitespace().collect::<Vec<_>>(),
        ["hello", "reads-secret"]
    );
    let routes = cluster.kubectl_ok([
        "get",
        "httptriggers.fission.io",
        "reads-secret",
        "-o",
        "jsonpath={.spec.relativeurl}",
    ]);
    assert_eq!(routes, "/secret");

    // A Secret made with kubectl reaches the function; updating it re-pins the function.
    let (_, first) = eventually_blocking(
        Duration::from_secs(60),
        "the function to read its secret",
        || server.get("/secret").filter(|(s, _)| *s == 200),
    );
    assert_eq!(first, "first");
    let updated = cluster.kubectl_ok([
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=token=second",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let file = write(dir.path(), "creds.yaml", &updated);
    kubectl_apply(cluster, &file);
    let (_, second) = eventually_blocking(
        Duration::from_secs(30),
        "the updated secret to reach the function",
        || {
            server
                .get("/secret")
                .filter(|(s, b)| *s == 200 && b == "second")
        },
    );
    assert_eq!(second, "second");
}

#[test]
fn kubernetes_store_with_an_unreadable_kubeconfig_refuses_to_start_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-kubeconfig");
    let out = Command::new(BIN)
        .args(["server", "--store", "kubernetes", "--kubeconfig"])
        .arg(&missing)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--controller-listen",
            "127.0.0.1:0",
            "--router-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("Error: "), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot read kubeconfig {}", missing.display())),
        "{stderr}"
    );
}

#[test]
fn kubernetes_store_without_the_crds_refuses_to_start_naming_what_to_apply() {
    let Some(cluster) = TestCluster::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["server", "--store", "kubernetes", "--kubeconfig"])
        .arg(&cluster.kubeconfig)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--controller-listen",
            "127.0.0.1:0",
            "--router-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CustomResourceDefinition")
            && stderr.contains("kubectl apply -f deploy/crds/"),
        "{stderr}"
    );
}
