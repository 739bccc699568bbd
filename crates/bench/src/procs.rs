//! Processes the bench starts: the `fission server` under test and its own runtime instances
//! (the baselines). Both are guarded: dropping the guard stops the process (and, for the
//! server, anything it left behind), so an error or Ctrl-C never leaks processes.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::io::AsyncBufReadExt as _;

use crate::http::Conn;

/// A free loopback port (bound, read, released: the server binds it right after).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Send a signal; false when the process is gone.
#[allow(unsafe_code)]
fn signal(pid: u32, sig: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; pid is a positive process id.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// SIGTERM `pid`; false when it is gone already.
pub fn sigterm(pid: u32) -> bool {
    signal(pid, libc::SIGTERM)
}

/// SIGKILL `pid`; false when it is gone already.
pub fn sigkill(pid: u32) -> bool {
    signal(pid, libc::SIGKILL)
}

/// `VmRSS` of a process in bytes (None when it is gone).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    parent_map().remove(&pid).unwrap_or_default()
}

/// Every live descendant of `root` (children, grandchildren, …), from /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let children = parent_map();
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            out.push(c);
            stack.push(c);
        }
    }
    out
}

/// ppid → pids, for every process in /proc.
fn parent_map() -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid …": comm may hold spaces and parentheses.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let Some(ppid) = after
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            children.entry(ppid).or_default().push(pid);
        }
    }
    children
}

/// CPU time a process has used, in ns (`/proc/<pid>/schedstat`, else utime + stime).
pub fn cpu_ns(pid: u32) -> u64 {
    if let Some(ns) = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
    {
        return ns;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() * 10_000_000
}

/// CPU time of `root` and all its descendants, per pid.
fn tree_cpu(root: u32) -> HashMap<u32, u64> {
    std::iter::once(root)
        .chain(descendants(root))
        .map(|p| (p, cpu_ns(p)))
        .collect()
}

/// Wait until `root` and its descendants are quiet: less than `max_busy` of CPU used over a
/// whole `window` (processes that appeared or vanished meanwhile count as busy). This is how
/// the bench knows that freshly spawned pool instances finished booting: the warm-pool gauge
/// counts an instance as soon as it is spawned on its pre-bound socket. Returns the time
/// waited, or None on timeout.
pub async fn wait_quiet(
    root: u32,
    window: Duration,
    max_busy: Duration,
    timeout: Duration,
) -> Option<Duration> {
    let t0 = Instant::now();
    let mut before = tree_cpu(root);
    loop {
        tokio::time::sleep(window).await;
        let after = tree_cpu(root);
        let same_set = after.len() == before.len() && after.keys().all(|k| before.contains_key(k));
        let used: u64 = after
            .iter()
            .map(|(p, v)| v.saturating_sub(before.get(p).copied().unwrap_or(0)))
            .sum();
        if same_set && used < max_busy.as_nanos() as u64 {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            return None;
        }
        before = after;
    }
}

pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// A running `fission server` with a temporary data directory.
pub struct Server {
    child: Child,
    pub controller: SocketAddr,
    pub router: SocketAddr,
    /// `N` of the "fission server ready in N ms" line.
    pub reported_ready_ms: f64,
    /// Spawn → the ready line read from its stdout.
    pub spawn_to_ready_line: Duration,
    /// Spawn → first `GET /healthz` 200 on the controller (polled every 0.2 ms).
    pub spawn_to_healthz: Duration,
    pub log_path: PathBuf,
    dir: Option<tempfile::TempDir>,
    /// How long [`stop`](Self::stop) waits for the drain before SIGKILL.
    stop_timeout: Duration,
}

impl Server {
    /// Start a server on free ports; returns once it printed its ready line and answered
    /// `/healthz`. Blocking on purpose: nothing else runs while a server starts.
    pub fn start(
        bin: &Path,
        environments: &Path,
        extra_args: &[String],
        keep_dir: bool,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("fission-bench-")
            .tempdir()
            .context("temp dir")?;
        let controller: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()?).into();
        let router: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()?).into();
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(bin);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--controller-listen")
            .arg(controller.to_string())
            .arg("--router-listen")
            .arg(router.to_string())
            .arg("--environments-dir")
            .arg(environments)
            .arg("--grace-period")
            .arg("2")
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (tx, rx) = mpsc::channel::<(Instant, String)>();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                if !sent && line.contains("fission server ready in") {
                    let _ = tx.send((Instant::now(), line));
                    sent = true;
                }
            }
        });
        let mut server = Self {
            child,
            controller,
            router,
            reported_ready_ms: f64::NAN,
            spawn_to_ready_line: Duration::ZERO,
            spawn_to_healthz: Duration::ZERO,
            log_path,
            dir: Some(dir),
            stop_timeout: Duration::from_secs(15),
        };
        if let Some(d) = server.dir.take_if(|_| keep_dir) {
            let _ = d.keep();
        }

        // Poll /healthz from the moment of the spawn.
        let deadline = t0 + Duration::from_secs(30);
        loop {
            if healthz_ok(controller) {
                server.spawn_to_healthz = t0.elapsed();
                break;
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "fission server exited with {status} before it was ready; log: {}",
                    server.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "fission server did not answer /healthz within 30 s; log: {}",
                    server.log_tail()
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let (at, line) = rx.recv_timeout(Duration::from_secs(30)).with_context(|| {
            format!(
                "no ready line from fission server; log: {}",
                server.log_tail()
            )
        })?;
        server.spawn_to_ready_line = at.duration_since(t0);
        server.reported_ready_ms = line
            .split("ready in ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        if !line.contains(&format!("http://{controller}"))
            || !line.contains(&format!("http://{router}"))
        {
            bail!("unexpected ready line: {line}");
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `d` for a clean stop (a server with thousands of instances tears down
    /// thousands of sandboxes) before SIGKILL.
    pub fn set_stop_timeout(&mut self, d: Duration) {
        self.stop_timeout = d;
    }

    /// `key=value` of the server's "fission server started" log line (e.g. `sandbox`).
    pub fn started_field(&self, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.log_path).ok()?;
        let line = text
            .lines()
            .map(strip_ansi)
            .find(|l| l.contains("fission server started"))?;
        let prefix = format!("{key}=");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&prefix).map(str::to_owned))
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGTERM, wait for the drain, SIGKILL if it hangs, then kill any runtime instance the
    /// server left behind.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id();
        let left = descendants(pid);
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + self.stop_timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        for p in left {
            let cmd = cmdline(p);
            if cmd.contains("server.js") || cmd.contains("server.py") {
                signal(p, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Text without ANSI colour sequences (the server colours its log even into a file).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One blocking `GET /healthz`; true on a 200.
fn healthz_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

/// A language runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Node,
    Python,
}

impl Lang {
    pub fn label(self) -> &'static str {
        match self {
            Lang::Node => "Node",
            Lang::Python => "Python",
        }
    }

    pub fn image(self) -> &'static str {
        match self {
            Lang::Node => "fission/node-env",
            Lang::Python => "fission/python-env",
        }
    }

    pub fn hello(self) -> (&'static str, &'static str) {
        match self {
            Lang::Node => (
                "hello.js",
                "module.exports = async function(context) {\n    return { status: 200, body: \"Hello, world!\\n\" };\n}\n",
            ),
            Lang::Python => ("hello.py", "def main():\n    return 'Hello, world!\\n'\n"),
        }
    }
}

/// Where things are: the product binary, the runtimes, the interpreters.
#[derive(Debug, Clone)]
pub struct Paths {
    pub fission: PathBuf,
    pub environments: PathBuf,
    pub node: PathBuf,
    pub python: PathBuf,
}

impl Paths {
    pub fn discover(fission_override: Option<PathBuf>) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find my own executable")?;
        let fission = match fission_override {
            Some(p) => p,
            None => exe
                .parent()
                .map(|d| d.join("fission"))
                .context("executable has no directory")?,
        };
        if !fission.is_file() {
            bail!(
                "{} not found; build it first: cargo build --release -p fission -p fission-bench",
                fission.display()
            );
        }
        let mut candidates: Vec<PathBuf> = exe
            .ancestors()
            .skip(1)
            .take(4)
            .map(|d| d.join("environments"))
            .collect();
        if let Ok(cwd) = std::env::current_dir() {
            candidates.push(cwd.join("environments"));
        }
        candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../environments"));
        let environments = candidates
            .into_iter()
            .find(|c| c.join("nodejs/server.js").is_file() && c.join("python/server.py").is_file())
            .context("environments/nodejs/server.js and environments/python/server.py not found")?;
        let environments = std::fs::canonicalize(&environments)?;
        if !environments.join("nodejs/node_modules").is_dir()
            || !environments.join("python/vendor").is_dir()
        {
            bail!("runtime dependencies are missing: run `bash environments/setup.sh`");
        }
        let node = interpreter("node").context("node not found (needs Node.js >= 20)")?;
        let python = interpreter("python3").context("python3 not found")?;
        Ok(Self {
            fission,
            environments,
            node,
            python,
        })
    }

    pub fn interpreter(&self, lang: Lang) -> &Path {
        match lang {
            Lang::Node => &self.node,
            Lang::Python => &self.python,
        }
    }
}

/// The interpreter the server would pick: /usr/bin first, then PATH, never a pyenv shim.
fn interpreter(name: &str) -> Option<PathBuf> {
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    std::iter::once(Path::new("/usr/bin").join(name))
        .chain(path_dirs.into_iter().map(|d| d.join(name)))
        .filter(|p| p.is_absolute())
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .find(|p| p.is_file() && !p.to_string_lossy().contains("/shims/"))
}

/// A runtime instance the bench starts itself (no server involved), killed on drop.
pub struct Runtime {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    home: tempfile::TempDir,
}

/// Timings of one fresh-interpreter cold start.
#[derive(Debug, Clone, Copy)]
pub struct FreshStart {
    /// Spawn → "listening" line.
    pub listening: Duration,
    /// Spawn → specialize answered.
    pub specialized: Duration,
    /// Spawn → first answer of the function.
    pub first_response: Duration,
}

impl Runtime {
    /// Spawn the loader like the executor does (clean environment, absolute interpreter), but
    /// on `PORT`, and wait for its "listening" line.
    pub async fn spawn(paths: &Paths, lang: Lang) -> Result<Self> {
        let home = tempfile::Builder::new()
            .prefix("fission-bench-rt-")
            .tempdir()?;
        let port = free_port()?;
        let mut cmd = tokio::process::Command::new(paths.interpreter(lang));
        match lang {
            Lang::Node => cmd.arg(paths.environments.join("nodejs/server.js")),
            Lang::Python => cmd
                .arg("-I")
                .arg("-S")
                .arg(paths.environments.join("python/server.py")),
        };
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home.path())
            .env("PORT", port.to_string())
            .current_dir(home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start the {} runtime", lang.label()))?;
        let stdout = child.stdout.take().context("runtime stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let wait = async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("listening on") {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        };
        match tokio::time::timeout(Duration::from_secs(20), wait).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!("the {} runtime exited before listening", lang.label()),
            Ok(Err(e)) => bail!("reading the {} runtime's output: {e}", lang.label()),
            Err(_) => bail!("the {} runtime did not listen within 20 s", lang.label()),
        }
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            addr: (Ipv4Addr::LOCALHOST, port).into(),
            home,
        })
    }

    /// Write the hello code into the instance's home and specialize on it.
    pub async fn specialize(&self, conn: &mut Conn, lang: Lang, function: &str) -> Result<()> {
        let (file, code) = lang.hello();
        let path = self.home.path().join(file);
        tokio::fs::write(&path, code).await?;
        let req = serde_json::json!({
            "filepath": path.to_string_lossy(),
            "functionName": "",
            "url": "",
            "FunctionMetadata": {"name": function, "namespace": "default", "uid": "bench", "resourceVersion": "1"},
            "envVersion": 3,
        });
        let r = conn.post_json("/v2/specialize", &req).await?;
        if !r.status.is_success() {
            bail!("specialize answered {}: {}", r.status, r.text().trim());
        }
        Ok(())
    }

    /// A fresh interpreter serving a first request: spawn, specialize, GET /.
    pub async fn fresh_start(paths: &Paths, lang: Lang) -> Result<FreshStart> {
        let t0 = Instant::now();
        let rt = Self::spawn(paths, lang).await?;
        let listening = t0.elapsed();
        let mut conn = Conn::connect(rt.addr).await?;
        rt.specialize(&mut conn, lang, "fresh").await?;
        let specialized = t0.elapsed();
        let body = conn.get_ok("/").await?;
        let first_response = t0.elapsed();
        if !body.starts_with(b"Hello, world!") {
            bail!(
                "unexpected answer from the {} runtime: {:?}",
                lang.label(),
                String::from_utf8_lossy(&body)
            );
        }
        drop(conn);
        rt.kill().await;
        Ok(FreshStart {
            listening,
            specialized,
            first_response,
        })
    }

    /// A generic instance the bench started and let go idle, then specialized: what a pool hit
    /// costs inside the runtime alone (connect + specialize, then the first request).
    pub async fn pooled_start(paths: &Paths, lang: Lang) -> Result<(Duration, Duration)> {
        let rt = Self::spawn(paths, lang).await?;
        if let Some(pid) = rt.child.id() {
            let _ = wait_quiet(
                pid,
                Duration::from_millis(20),
                Duration::from_millis(1),
                Duration::from_secs(10),
            )
            .await;
        }
        // About as long as an instance waits in a pool of 3 during the pool-hit runs.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        let mut conn = Conn::connect(rt.addr).await?;
        rt.specialize(&mut conn, lang, "pooled").await?;
        let specialized = t0.elapsed();
        let mut conn2 = Conn::connect(rt.addr).await?;
        let body = conn2.get_ok("/").await?;
        let first = t0.elapsed() - specialized;
        if !body.starts_with(b"Hello, world!") {
            bail!(
                "unexpected answer from the {} runtime: {:?}",
                lang.label(),
                String::from_utf8_lossy(&body)
            );
        }
        drop((conn, conn2));
        rt.kill().await;
        Ok((specialized, first))
    }

    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
