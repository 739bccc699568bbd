//! End-to-end: the server split into roles as Fission runs it — controller, router and
//! executor as three processes sharing a real API server's state (etcd + kube-apiserver on
//! loopback). The CLI talks to the controller, calls go through the router, which leases
//! instances from the executor over Fission's executor API; the executor reads a large
//! package archive from the controller's storagesvc endpoint.

mod support;

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube_test_cluster::{TestCluster, shared};
use support::{BIN, eventually_blocking, http, require_functions, write};

/// One `fission server --role …` process, stopped on drop.
struct RoleProcess {
    role: &'static str,
    child: Child,
    log: PathBuf,
}

impl RoleProcess {
    fn start(role: &'static str, cluster: &TestCluster, dir: &Path, args: &[String]) -> Self {
        let log = dir.join(format!("{role}.log"));
        let mut child = Command::new(BIN)
            .args([
                "server",
                "--role",
                role,
                "--store",
                "kubernetes",
                "--kubeconfig",
            ])
            .arg(&cluster.kubeconfig)
            .arg("--data-dir")
            .arg(dir.join(role))
            .args(["--grace-period", "2"])
            .args(args)
            .env("RUST_LOG", "info")
            // As in the chart: the controller requires the token, executors send it for archives.
            .env("FISSION_AUTH_TOKEN", API_TOKEN)
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
                    assert!(line.contains(&format!("role {role}")), "{line}");
                    return Self { role, child, log };
                }
                Ok(_) => {}
                Err(_) => {
                    let exited = child.try_wait().ok().flatten();
                    if exited.is_some() || Instant::now() > deadline {
                        let _ = child.kill();
                        panic!(
                            "{role} did not start ({exited:?}): {}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                }
            }
        }
    }

    fn log(&self) -> String {
        format!(
            "--- {} log ---\n{}",
            self.role,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(8);
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

/// The API token every role of the test shares.
const API_TOKEN: &str = "split-roles-test-token-0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Bytes zip cannot shrink (an LCG), so the deployment stays above the 256 KiB literal limit
/// and travels through the controller's archive store.
fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as u8
        })
        .collect()
}

#[test]
fn controller_router_and_executor_as_three_processes_serve_functions_and_archives() {
    let Some(()) = require_functions() else {
        return;
    };
    let Some(cluster) = shared() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (pc, pr, pe) = (free_port(), free_port(), free_port());
    let controller_url = format!("http://127.0.0.1:{pc}");
    let router_url = format!("http://127.0.0.1:{pr}");
    let executor_url = format!("http://127.0.0.1:{pe}");
    let executor = RoleProcess::start(
        "executor",
        cluster,
        dir.path(),
        &[
            format!("--executor-listen=127.0.0.1:{pe}"),
            format!("--controller-url={controller_url}"),
        ],
    );
    let controller = RoleProcess::start(
        "controller",
        cluster,
        dir.path(),
        &[
            format!("--controller-listen=127.0.0.1:{pc}"),
            format!("--router-url={router_url}"),
        ],
    );
    let router = RoleProcess::start(
        "router",
        cluster,
        dir.path(),
        &[
            format!("--router-listen=127.0.0.1:{pr}"),
            format!("--executor-url={executor_url}"),
        ],
    );
    let logs = || format!("{}\n{}\n{}", controller.log(), router.log(), executor.log());
    let fission = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("FISSION_URL", &controller_url)
            .env("FISSION_ROUTER_URL", &router_url)
            .env("FISSION_AUTH_TOKEN", API_TOKEN)
            .env_remove("FISSION_DEFAULT_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .expect("run fission");
        assert!(
            out.status.success(),
            "fission {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let get = |path: &str| {
        let r = http().get(format!("{router_url}{path}")).send().ok()?;
        Some((r.status().as_u16(), r.text().ok()?))
    };

    // A small function: env, function and route made through the controller, called through
    // the router, run by the executor.
    let code = write(
        dir.path(),
        "split.js",
        "module.exports = async () => ({ status: 200, body: 'hello from three processes\\n' });\n",
    );
    fission(&[
        "env",
        "create",
        "--name",
        "split-node",
        "--image",
        "fission/node-env",
    ]);
    fission(&[
        "fn",
        "create",
        "--name",
        "split-hello",
        "--env",
        "split-node",
        "--code",
        code.to_str().expect("path"),
    ]);
    fission(&[
        "route",
        "create",
        "--name",
        "split-hello",
        "--function",
        "split-hello",
        "--url",
        "/split-hello",
        "--method",
        "GET",
    ]);
    let (status, body) = eventually_blocking(
        Duration::from_secs(60),
        "the function to answer through the router",
        || get("/split-hello").filter(|(s, _)| *s == 200),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "hello from three processes\n"),
        "{}",
        logs()
    );
    // Warm calls reuse the executor's lease bookkeeping: each is released again.
    for _ in 0..5 {
        assert_eq!(get("/split-hello").map(|(s, _)| s), Some(200));
    }

    // A --deploy archive above the literal limit: stored by the controller, fetched over HTTP
    // by the executor (which has no archive store of its own).
    let src = dir.path().join("big");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(
        src.join("index.js"),
        "const fs = require('fs');\n\
         const pad = fs.readFileSync(__dirname + '/pad.bin');\n\
         module.exports = async () => ({ status: 200, body: 'archive of ' + pad.length + ' bytes\\n' });\n",
    )
    .expect("write");
    std::fs::write(src.join("pad.bin"), incompressible(300 * 1024)).expect("write");
    let glob = format!("{}/*", src.display());
    fission(&[
        "fn",
        "create",
        "--name",
        "split-big",
        "--env",
        "split-node",
        "--deploy",
        &glob,
    ]);
    fission(&[
        "route",
        "create",
        "--name",
        "split-big",
        "--function",
        "split-big",
        "--url",
        "/split-big",
        "--method",
        "GET",
    ]);
    let deployment = cluster.kubectl_ok([
        "get",
        "packages.fission.io",
        "-o",
        "jsonpath={range .items[*]}{.spec.deployment.type}={.spec.deployment.url}{\"\\n\"}{end}",
    ]);
    assert!(
        deployment
            .lines()
            .any(|l| l.starts_with("url=") && l.contains("/v1/archive?id=")),
        "the big package should live in the archive store: {deployment}"
    );
    let (status, body) = eventually_blocking(
        Duration::from_secs(60),
        "the archive function to answer",
        || get("/split-big").filter(|(s, _)| *s == 200),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "archive of 307200 bytes\n"),
        "{}",
        logs()
    );

    // The executor's errors reach the caller through the router, as the same variant: code
    // the runtime cannot load fails its specialization, named with the function.
    let broken = write(dir.path(), "broken.js", "module.exports = (;\n");
    fission(&[
        "fn",
        "create",
        "--name",
        "split-broken",
        "--env",
        "split-node",
        "--code",
        broken.to_str().expect("path"),
    ]);
    fission(&[
        "route",
        "create",
        "--name",
        "split-broken",
        "--function",
        "split-broken",
        "--url",
        "/split-broken",
        "--method",
        "GET",
    ]);
    let (status, body) = eventually_blocking(
        Duration::from_secs(60),
        "the broken function's route to exist",
        || get("/split-broken").filter(|(s, _)| *s != 404),
    );
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("[default/split-broken] error specializing function"),
        "{body}\n{}",
        logs()
    );
}

#[test]
fn a_split_role_on_the_embedded_store_refuses_to_start_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["server", "--role", "router", "--data-dir"])
        .arg(dir.path())
        .args(["--router-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .expect("run server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("Error: "), "{stderr}");
    assert!(
        stderr.contains("--role router needs --store kubernetes"),
        "{stderr}"
    );
}
