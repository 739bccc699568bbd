//! End-to-end: functions deployed from remote https archives (a local HTTPS server with a
//! CA made for the test), through the real CLI, server, executor and router.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fission_fetch::sha256_hex;
use fission_fetch::test_https::{HttpsServer, Reply};
use support::require_functions;

const BIN: &str = env!("CARGO_BIN_EXE_fission");

/// A server started with `--archive-ca-cert`, on free ports and its own data directory.
struct Server {
    child: Child,
    controller: String,
    router: String,
    log: std::path::PathBuf,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(ca: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("server.log");
        let mut child = Command::new(BIN)
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--controller-listen", "127.0.0.1:0"])
            .args(["--router-listen", "127.0.0.1:0"])
            .args(["--grace-period", "2"])
            .arg("--archive-ca-cert")
            .arg(ca)
            .env("RUST_LOG", "info")
            .env_remove(fission_fetch::CA_CERT_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let field = |line: &str, key: &str| {
            line.split(key)
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_default()
                .to_owned()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("fission server ready") => {
                    return Self {
                        controller: field(&line, "controller "),
                        router: field(&line, "router "),
                        child,
                        log,
                        ca: ca.to_owned(),
                        _dir: dir,
                    };
                }
                Ok(_) => {}
                Err(_) => {
                    if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                        let _ = child.kill();
                        panic!(
                            "server did not start: {}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                }
            }
        }
    }

    /// `fission <args>`, trusting the test CA like the server does; panics unless it succeeds.
    fn fission(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .env("FISSION_URL", &self.controller)
            .env("FISSION_ROUTER_URL", &self.router)
            .env(fission_fetch::CA_CERT_ENV, &self.ca)
            .env_remove("FISSION_DEFAULT_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .expect("run fission");
        assert!(
            out.status.success(),
            "fission {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `fission <args>` without the test CA; returns its stderr, panics if it succeeds.
    fn fission_untrusting(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .env("FISSION_URL", &self.controller)
            .env("FISSION_ROUTER_URL", &self.router)
            .env_remove(fission_fetch::CA_CERT_ENV)
            .env_remove("FISSION_DEFAULT_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .expect("run fission");
        assert!(!out.status.success(), "fission {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .ok()?
            .get(format!("{}{path}", self.router))
            .send()
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().ok()?))
    }
}

impl Drop for Server {
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

#[track_caller]
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn code(answer: &str) -> Vec<u8> {
    format!("module.exports = async () => ({{ status: 200, body: '{answer}' }});\n").into_bytes()
}

#[test]
fn a_remote_archive_with_a_wrong_checksum_is_refused_and_the_function_keeps_its_previous_code() {
    if require_functions().is_none() {
        return;
    }
    let https = HttpsServer::start();
    https.set("/v1.js", Reply::ok(code("v1")));
    https.set("/v2.js", Reply::ok(code("v2")));
    let server = Server::start(https.ca_cert_file());
    server.fission(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
    ]);

    let v1_url = https.url("/v1.js");
    // A certificate the CLI does not trust: nothing is created.
    let err = server.fission_untrusting(&[
        "fn", "create", "--name", "remote", "--env", "nodejs", "--deploy", &v1_url,
    ]);
    assert!(
        err.starts_with("Error: ")
            && err.contains(&format!(
                "error downloading '{v1_url}' to compute its checksum (use --insecure to skip)"
            ))
            && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    // The CLI downloads the archive (through the test CA) to record its checksum.
    server.fission(&[
        "fn", "create", "--name", "remote", "--env", "nodejs", "--deploy", &v1_url,
    ]);
    assert!(https.hits("/v1.js") >= 1, "the CLI downloaded the archive");
    let spec = server.fission(&["fn", "get", "--name", "remote", "-o", "yaml"]);
    let pkg = spec
        .lines()
        .find_map(|l| l.trim().strip_prefix("name: remote-"))
        .map(|rest| format!("remote-{rest}"))
        .unwrap_or_else(|| panic!("package name in:\n{spec}"));
    let pkg_spec = reqwest::blocking::get(format!("{}/v2/packages/{pkg}", server.controller))
        .and_then(|r| r.text())
        .expect("the package from the controller");
    assert!(
        pkg_spec.contains(&sha256_hex(&code("v1"))),
        "the package records the archive's sha256:\n{pkg_spec}"
    );
    server.fission(&[
        "route",
        "create",
        "--url",
        "/remote",
        "--function",
        "remote",
    ]);
    assert_eq!(
        wait_for(20, "v1 answers", || server
            .get("/remote")
            .filter(|(s, _)| *s != 404)),
        (200, "v1".to_owned())
    );

    // An update whose checksum does not match what the URL serves (tampered or wrong).
    let v2_url = https.url("/v2.js");
    let wrong = sha256_hex(b"what the package author built");
    server.fission(&[
        "fn",
        "update",
        "--name",
        "remote",
        "--deploy",
        &v2_url,
        "--deploychecksum",
        &wrong,
    ]);
    let refused = format!(
        "checksum mismatch for {v2_url}: expected sha256 {wrong}, got {}",
        sha256_hex(&code("v2"))
    );
    // The executor tries the new version as soon as it sees it (it prefetches changed
    // functions); by then the old version's instances are retired.
    wait_for(20, "the new archive to be fetched", || {
        (https.hits("/v2.js") >= 1).then_some(())
    });
    // The function keeps serving its previous code, from new instances.
    for _ in 0..5 {
        assert_eq!(server.get("/remote"), Some((200, "v1".to_owned())));
    }
    wait_for(20, "the mismatch to be logged", || {
        server.log().contains(&refused).then_some(())
    });

    // With the right checksum (computed by the CLI) the update goes through.
    server.fission(&["fn", "update", "--name", "remote", "--deploy", &v2_url]);
    assert_eq!(
        wait_for(20, "v2 answers", || server
            .get("/remote")
            .filter(|(_, b)| b == "v2")),
        (200, "v2".to_owned())
    );
}

#[test]
fn a_server_given_an_unreadable_archive_ca_file_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing-ca.pem");
    let out = Command::new(BIN)
        .arg("server")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--controller-listen", "127.0.0.1:0"])
        .args(["--router-listen", "127.0.0.1:0"])
        .args(["--sandbox", "none"])
        .arg("--archive-ca-cert")
        .arg(&missing)
        .stdin(Stdio::null())
        .output()
        .expect("run server");
    let err = String::from_utf8_lossy(&out.stderr);
    // 2: the server cannot start as configured, like a bad flag.
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("Error: --archive-ca-cert")
            && err.contains(&format!(
                "cannot read the archive CA certificates {}: No such file or directory (os error 2)\n",
                missing.display()
            )),
        "{err}"
    );
}
