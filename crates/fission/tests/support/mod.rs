//! Drives the real `fission` binary: a server on free ports with a temp data dir, and CLI
//! invocations against it, as a user would.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use fission_test_support::{eventually_blocking, require, require_runtimes};

pub const BIN: &str = env!("CARGO_BIN_EXE_fission");

pub mod pods;

pub struct Server {
    pub child: Child,
    pub controller: String,
    pub router: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stderr_log: PathBuf,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Self {
        assert_eq!(
            self.code, 1,
            "command should fail\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.starts_with("Error: "),
            "stderr must start with 'Error: ': {}",
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            self.stderr
        );
        self
    }
}

impl Server {
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut s = Self::start_on(&data_dir, "127.0.0.1:0", "127.0.0.1:0");
        s._tmp = Some(tmp);
        s
    }

    /// Start on `data_dir`; panics if the server does not become ready.
    pub fn start_on(data_dir: &Path, controller: &str, router: &str) -> Self {
        match Self::try_start_on(data_dir, controller, router) {
            Ok(s) => s,
            Err(e) => panic!("server did not start: {e}"),
        }
    }

    pub fn try_start_on(data_dir: &Path, controller: &str, router: &str) -> Result<Self, String> {
        Self::try_start_with_env(data_dir, controller, router, &[])
    }

    /// A server on free ports logging what `rust_log` (the `RUST_LOG` filter) selects.
    pub fn start_logging(rust_log: &str) -> Self {
        Self::start_with_env(&[("RUST_LOG", rust_log)])
    }

    /// A fresh server (own data dir, free ports) with extra environment variables.
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut s = match Self::try_start_with_env(&data_dir, "127.0.0.1:0", "127.0.0.1:0", env) {
            Ok(s) => s,
            Err(e) => panic!("server did not start: {e}"),
        };
        s._tmp = Some(tmp);
        s
    }

    /// `RUST_LOG` is `info` unless `env` sets it; `("RUST_LOG", "")` leaves it unset (the
    /// server's own default filter).
    pub fn try_start_with_env(
        data_dir: &Path,
        controller: &str,
        router: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let stderr_log = data_dir.with_extension(format!("{}.server.log", std::process::id()));
        let log = std::fs::File::create(&stderr_log).expect("log file");
        let mut command = Command::new(BIN);
        if env.contains(&("RUST_LOG", "")) {
            command.env_remove("RUST_LOG");
        } else {
            command.env("RUST_LOG", "info");
        }
        let mut child = command
            .args(["server", "--data-dir"])
            .arg(data_dir)
            .args([
                "--controller-listen",
                controller,
                "--router-listen",
                router,
                "--grace-period",
                "2",
            ])
            .envs(
                env.iter()
                    .copied()
                    .filter(|(k, v)| !(*k == "RUST_LOG" && v.is_empty())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
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
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("fission server ready") => {
                    let controller = field_after(&line, "controller ");
                    let router = field_after(&line, "router ");
                    return Ok(Self {
                        child,
                        controller,
                        router,
                        data_dir: data_dir.to_owned(),
                        _tmp: None,
                        stderr_log,
                    });
                }
                Ok(_) => {}
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                        return Err(format!("server exited with {status}: {log}"));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        return Err("timed out waiting for the ready line".into());
                    }
                }
            }
        }
    }

    /// Run `fission <args>` against this server.
    pub fn fission(&self, args: &[&str]) -> Run {
        self.fission_in(args, None)
    }

    pub fn fission_in(&self, args: &[&str], cwd: Option<&Path>) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("FISSION_URL", &self.controller)
            .env("FISSION_ROUTER_URL", &self.router)
            .env_remove("FISSION_DEFAULT_NAMESPACE")
            .stdin(Stdio::null());
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        Run::from(cmd.output().expect("run fission"))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.router, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first so the server stops its instances; then make sure.
        let pid = self.child.id() as i32;
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.stderr_log);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_log);
    }
}

fn field_after(line: &str, key: &str) -> String {
    line.split(key)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

/// A blocking HTTP client for calling functions through the router.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

pub fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&p, body).expect("write");
    p
}

/// The prerequisites of running functions through a server: the runtimes (see
/// [`require_runtimes`]) and a machine that can sandbox (the server sandboxes every instance and
/// refuses to start otherwise). Missing ones fail under `CI`, print `SKIPPED:` otherwise.
pub fn require_functions() -> Option<()> {
    require_runtimes()?;
    require(
        "a machine that can sandbox function instances",
        "run as root with bubblewrap, iproute2 and nftables installed (apt-get install bubblewrap iproute2 nftables)",
        fission_sandbox::Sandbox::probe(),
    )?;
    Some(())
}

/// The end-to-end setup: a server on free ports (own data dir) that can run functions, and a
/// scratch directory for the files tests deploy.
pub struct Setup {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// A fresh server once [`require_functions`] holds; `None` (the test returns) when it does
    /// not and `CI` is unset.
    pub fn start() -> Option<Self> {
        require_functions()?;
        Some(Self {
            server: Server::start(),
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// [`start`](Self::start) with extra environment variables for the server.
    pub fn start_with_env(env: &[(&str, &str)]) -> Option<Self> {
        require_functions()?;
        Some(Self {
            server: Server::start_with_env(env),
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// `fission <args>` against the server.
    pub fn fission(&self, args: &[&str]) -> Run {
        self.server.fission(args)
    }

    /// `fission env create --name <name> --image <image> <extra…>`, which must succeed.
    pub fn env(&self, name: &str, image: &str, extra: &[&str]) {
        let mut args = vec!["env", "create", "--name", name, "--image", image];
        args.extend_from_slice(extra);
        self.fission(&args).ok();
    }

    /// Write `code` to `<dir>/<name>/<file>` and `fission fn create` it in `env`.
    pub fn function(&self, name: &str, env: &str, file: &str, code: &str, extra: &[&str]) {
        let path = write(self.dir.path(), &format!("{name}/{file}"), code);
        let mut args = vec![
            "fn",
            "create",
            "--name",
            name,
            "--env",
            env,
            "--code",
            path.to_str().expect("path"),
        ];
        args.extend_from_slice(extra);
        self.fission(&args).ok();
    }

    /// Write `files` under `<dir>/<name>/` and return that directory.
    pub fn files(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.path().join(name);
        for (file, body) in files {
            write(&dir, file, body);
        }
        dir
    }

    /// `fission route create <args…>`, which must succeed.
    pub fn route(&self, args: &[&str]) {
        let mut a = vec!["route", "create"];
        a.extend_from_slice(args);
        self.fission(&a).ok();
    }

    /// GET through the router, waiting for the route to appear (routes apply within ms; the
    /// wait is long because a first call may build or cold-start).
    pub fn get(&self, path: &str) -> (u16, String) {
        let client = http();
        eventually_blocking(Duration::from_secs(30), &format!("route {path}"), || {
            let resp = client.get(self.server.url(path)).send().ok()?;
            let status = resp.status().as_u16();
            let body = resp.text().ok()?;
            (status != 404 || !body.contains("404 page not found")).then_some((status, body))
        })
    }

    /// Call a function through its internal route, `/fission-function/<name><query>`.
    pub fn call(&self, name: &str, query: &str) -> (u16, String) {
        let r = http()
            .get(self.server.url(&format!("/fission-function/{name}{query}")))
            .send()
            .expect("call");
        (r.status().as_u16(), r.text().expect("body"))
    }
}

/// The cell under `column` in the row whose first cell is `name`, from a CLI table.
pub fn table_cell(table: &str, name: &str, column: &str) -> String {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    // Cells may contain single spaces (weighted FUNCTION(s)); columns start where headers do.
    let start = header
        .find(column)
        .unwrap_or_else(|| panic!("no {column} column: {table}"));
    let end = header[start..]
        .find(char::is_whitespace)
        .and_then(|w| {
            header[start + w..]
                .find(|c: char| !c.is_whitespace())
                .map(|n| start + w + n)
        })
        .unwrap_or(usize::MAX);
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in: {table}"));
    row.get(start..end.min(row.len()))
        .unwrap_or_default()
        .trim()
        .to_owned()
}
