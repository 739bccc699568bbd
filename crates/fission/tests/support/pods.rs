//! `fission server --store kubernetes --instances pods` against a test node
//! (`kube_test_cluster::NodeCluster`), for the tests whose function instances are pods, and
//! the polling those tests share.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube_test_cluster::NodeCluster;

use super::{BIN, http};

/// How a [`PodServer`] is started.
#[derive(Clone, Copy)]
pub struct PodServerOptions<'a> {
    /// `--pod-namespace`: where pools, function pods and builder pods go.
    pub namespace: &'a str,
    /// `--auth-token`: beyond loopback the controller requires one (its fetchers get it too).
    pub token: &'a str,
    /// `--router-listen` (a fixed address lets a restarted server keep its router's).
    pub router_listen: &'a str,
    /// `RUST_LOG` of the server.
    pub rust_log: &'a str,
    /// More server flags.
    pub args: &'a [&'a str],
    /// More environment variables of the server.
    pub env: &'a [(&'a str, &'a str)],
}

impl<'a> PodServerOptions<'a> {
    pub fn new(namespace: &'a str, token: &'a str) -> Self {
        Self {
            namespace,
            token,
            router_listen: "127.0.0.1:0",
            rust_log: "info,fission_executor_kube=debug",
            args: &[],
            env: &[],
        }
    }
}

/// A server whose instances are pods of a test node, stopped on drop.
pub struct PodServer {
    pub child: Child,
    pub controller: String,
    pub router: String,
    pub namespace: String,
    token: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PodServer {
    pub fn start(node: &NodeCluster, options: PodServerOptions<'_>) -> Self {
        // Pods reach the controller (their fetcher reads packages from it) at the host's
        // address on the pod bridge.
        let controller_listen = format!("{}:0", node.host_ip);
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("server.log");
        let mut child = Command::new(BIN)
            .args(["server", "--store", "kubernetes", "--instances", "pods"])
            .arg("--kubeconfig")
            .arg(&node.kubeconfig)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--pod-namespace", options.namespace, "--sandbox", "none"])
            .args(["--controller-listen", &controller_listen])
            .args([
                "--router-listen",
                options.router_listen,
                "--grace-period",
                "2",
            ])
            .args(["--auth-token", options.token])
            .args(options.args)
            .env("RUST_LOG", options.rust_log)
            .envs(options.env.iter().copied())
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
                    return Self {
                        controller: super::field_after(&line, "controller "),
                        router: super::field_after(&line, "router "),
                        namespace: options.namespace.to_owned(),
                        token: options.token.to_owned(),
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

    /// Run `fission <args>` against this server.
    pub fn fission(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("FISSION_URL", &self.controller)
            .env("FISSION_ROUTER_URL", &self.router)
            .env("FISSION_AUTH_TOKEN", &self.token)
            .env_remove("FISSION_DEFAULT_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .expect("run fission")
    }

    /// Run `fission <args>`; fails the test (with the server's log) unless it succeeds.
    #[track_caller]
    pub fn fission_ok(&self, args: &[&str]) -> String {
        let out = self.fission(args);
        assert!(
            out.status.success(),
            "fission {args:?} failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` through the router: status and body, None if it could not be called.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = http().get(format!("{}{path}", self.router)).send().ok()?;
        Some((r.status().as_u16(), r.text().ok()?))
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        // Already gone (killed by the test): its pid may belong to someone else by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
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

/// Poll `check` every 200 ms until it gives a value; on timeout fail with the node's function
/// objects and the server's log.
#[track_caller]
pub fn wait_for<T>(
    node: &NodeCluster,
    server: &PodServer,
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {within:?} waiting for {what}\nobjects:\n{}\nserver log:\n{}",
                node.kubectl_ok([
                    "get",
                    "deployments,pods,services,hpa,endpointslices",
                    "-A",
                    "-o",
                    "wide",
                    "--show-labels",
                ]),
                server.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `p` quantile of `sorted`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
