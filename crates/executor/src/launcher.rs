//! Starting generic runtime instances: the [`InstanceLauncher`] port and [`ProcessLauncher`],
//! its unsandboxed implementation.
//!
//! A launcher is deliberately dumb: it runs the program the executor asks for, hands it an
//! already bound, listening socket on fd 3 (so the instance is reachable the moment it exists
//! and nobody polls a port), pipes its output line by line into a [`LogSink`], and reports when
//! it exits. Pools, specialization and lifetimes are the executor's business. A sandboxing
//! launcher implements the same trait and wraps the same program.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, RwLock};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{Notify, watch};

use crate::sys;

/// Longest line kept as one log record; longer output is split.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// Lines of output remembered per instance, quoted when it fails to start or specialize.
const RECENT_LINES: usize = 20;

pub use fission_core::{LineSink, OutputStream};

/// A sink that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardLines;

impl LineSink for DiscardLines {
    fn line(&self, _stream: OutputStream, _line: &str) {}
}

/// The output destination of one instance; it can be re-targeted while the instance runs
/// (a generic instance logs under its environment until it is specialized for a function).
/// It also remembers the last few lines, for error messages.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<LogSinkInner>,
}

struct LogSinkInner {
    target: RwLock<Arc<dyn LineSink>>,
    recent: Mutex<VecDeque<String>>,
}

impl LogSink {
    /// A sink writing to `target`.
    pub fn new(target: Arc<dyn LineSink>) -> Self {
        Self {
            inner: Arc::new(LogSinkInner {
                target: RwLock::new(target),
                recent: Mutex::new(VecDeque::with_capacity(RECENT_LINES)),
            }),
        }
    }

    /// Send every following line to `target`.
    pub fn retarget(&self, target: Arc<dyn LineSink>) {
        *self.inner.target.write().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// Record one line.
    pub fn write(&self, stream: OutputStream, line: &str) {
        {
            let mut recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT_LINES {
                recent.pop_front();
            }
            recent.push_back(line.to_owned());
        }
        let target = self
            .inner
            .target
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        target.line(stream, line);
    }

    /// The last lines written (oldest first), joined with newlines.
    pub fn recent_output(&self) -> String {
        let recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogSink").finish_non_exhaustive()
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Executor-wide unique id of the instance (also its log instance id).
    pub instance_id: u64,
    /// The interpreter, an absolute path.
    pub program: PathBuf,
    /// Its arguments (the runtime's server script and flags).
    pub args: Vec<OsString>,
    /// Extra environment variables (the Environment's `runtime.container.env`). The launcher
    /// adds `PATH`, `HOME`, `FISSION_LISTEN_FD` and `FISSION_CODEPATH` itself and ignores
    /// entries with those names.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go, line by line.
    pub log: LogSink,
    /// Resource limits and network policy (honoured by sandboxing launchers).
    pub limits: InstanceLimits,
}

/// Limits of one instance, from the Environment's `resources` and annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLimits {
    /// Memory limit in bytes (`resources.limits.memory`, else `requests.memory`).
    pub memory_bytes: Option<u64>,
    /// CPU quota in millicores (`resources.limits.cpu`).
    pub cpu_millis: Option<u64>,
    /// Whether the instance may open connections to the outside network.
    pub egress: bool,
}

impl Default for InstanceLimits {
    fn default() -> Self {
        Self {
            memory_bytes: None,
            cpu_millis: None,
            egress: true,
        }
    }
}

/// Where the executor wants the code of a specialization to appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSlot {
    /// Environment version ≥ 2: the runtime is told the path in the load request.
    LoadRequest,
    /// Environment version 1: the runtime loads the fixed `FISSION_CODEPATH` it was started
    /// with (`<instance home>/user`).
    V1CodePath,
}

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReport {
    /// Human-readable status (`exit status: 1`, `signal: 9 (SIGKILL)`).
    pub status: String,
    /// Whether the executor asked for it to stop.
    pub killed: bool,
}

impl fmt::Display for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.killed {
            write!(f, "stopped ({})", self.status)
        } else {
            write!(f, "{}", self.status)
        }
    }
}

/// A running runtime instance, as a launcher hands it over.
#[async_trait::async_trait]
pub trait RuntimeInstance: Send + Sync + 'static {
    /// The id from the [`LaunchSpec`].
    fn id(&self) -> u64;
    /// Where it accepts HTTP connections (accepting as soon as it exists).
    fn addr(&self) -> SocketAddr;
    /// OS process id, when there is one.
    fn pid(&self) -> Option<u32>;
    /// `None` while running; `Some` once it has exited and been reaped.
    fn exit_watch(&self) -> watch::Receiver<Option<ExitReport>>;
    /// Stop it (SIGKILL for processes). Returns at once; idempotent. Watch
    /// [`exit_watch`](Self::exit_watch) to know when it is gone.
    fn kill(&self);
    /// Make `host_path` (a file or directory in the package cache) visible to the instance and
    /// return the path the runtime must be given.
    async fn install_code(&self, host_path: &Path, slot: CodeSlot) -> io::Result<PathBuf>;
    /// Host directories that appear as `/secrets` and `/configs` inside the instance, if it
    /// has them (sandboxed instances do; plain processes see no such paths).
    fn values_dirs(&self) -> Option<(PathBuf, PathBuf)> {
        None
    }
    /// CPU time it has used so far, where the launcher can tell (newdeploy's
    /// `TargetCPUPercent` scales on it). Blocking: a file read.
    fn cpu_time(&self) -> Option<std::time::Duration> {
        None
    }
    /// Why it died, in words a user understands (`out of memory`), once it has exited.
    fn exit_cause(&self) -> Option<String> {
        self.exit_watch()
            .borrow()
            .as_ref()
            .map(|r| r.status.clone())
    }
}

/// Wait until `instance` has exited.
pub async fn wait_exit(instance: &dyn RuntimeInstance) -> ExitReport {
    let mut rx = instance.exit_watch();
    loop {
        if let Some(report) = rx.borrow_and_update().clone() {
            return report;
        }
        if rx.changed().await.is_err() {
            // The launcher dropped its side without reporting: treat as gone.
            return rx.borrow().clone().unwrap_or(ExitReport {
                status: "unknown".to_owned(),
                killed: false,
            });
        }
    }
}

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Spawning failed (missing binary, no permission, …).
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Setting up the instance (directory, socket) failed.
    #[error("cannot prepare instance: {0}")]
    Setup(#[source] io::Error),
}

/// Starts generic instances of runtimes.
#[async_trait::async_trait]
pub trait InstanceLauncher: Send + Sync + 'static {
    /// Start one instance. When this returns, the instance accepts connections.
    async fn launch(&self, spec: LaunchSpec) -> Result<Arc<dyn RuntimeInstance>, LaunchError>;
}

/// Runs runtimes as plain child processes of this server (no sandbox).
///
/// Each instance gets an empty home directory `<run_dir>/<id>` (its working directory, removed
/// when it exits), a clean environment (`PATH=/usr/bin:/bin`, `HOME`, `FISSION_LISTEN_FD=3`,
/// `FISSION_CODEPATH=<home>/user`, plus the environment's own variables), its own process
/// group (killed as a whole), and a loopback socket bound to an ephemeral port on fd 3.
#[derive(Debug, Clone)]
pub struct ProcessLauncher {
    run_dir: PathBuf,
}

impl ProcessLauncher {
    /// A launcher keeping instance directories under `run_dir` (created if missing).
    pub fn new(run_dir: impl Into<PathBuf>) -> io::Result<Self> {
        let run_dir = run_dir.into();
        std::fs::create_dir_all(&run_dir)?;
        Ok(Self { run_dir })
    }
}

/// Interpreter flags every Node.js instance starts with, before its server script.
///
/// `--v8-pool-size=1`: one V8 background worker instead of one per core (4 here). An idle
/// specialized instance then holds 1.3 MiB less private memory (10.4 instead of 11.8 MiB,
/// the workers' stacks and malloc arenas) with calls no slower (environments/nodejs/bench/
/// memory.js, BENCHMARKS.md "Density"): thousands of idle instances share a few cores
/// anyway. Heap-size flags are left alone: V8's memory reducer shrinks an idle heap to the
/// same size within ~10 s whatever they say.
pub const NODE_FLAGS: [&str; 1] = ["--v8-pool-size=1"];

/// Environment variable names the launcher owns.
const RESERVED_ENV: [&str; 4] = ["PATH", "HOME", "FISSION_LISTEN_FD", "FISSION_CODEPATH"];

#[async_trait::async_trait]
impl InstanceLauncher for ProcessLauncher {
    async fn launch(&self, spec: LaunchSpec) -> Result<Arc<dyn RuntimeInstance>, LaunchError> {
        let home = self.run_dir.join(spec.instance_id.to_string());
        // A leftover from a previous server run with the same id would confuse the runtime.
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).map_err(LaunchError::Setup)?;

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(LaunchError::Setup)?;
        let addr = listener.local_addr().map_err(LaunchError::Setup)?;

        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(
                spec.env
                    .iter()
                    .filter(|(k, _)| !RESERVED_ENV.contains(&k.as_str()))
                    .map(|(k, v)| (k, v)),
            )
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .env("FISSION_LISTEN_FD", sys::LISTEN_FD.to_string())
            .env("FISSION_CODEPATH", home.join("user"))
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        sys::inherit_as_listen_fd(&mut cmd, listener.as_raw_fd());

        let spawned = cmd.spawn();
        // The child holds the socket now; our copy must go, so that connections are refused
        // (not queued forever) once the child is gone.
        drop(listener);
        let mut child = match spawned {
            Ok(c) => c,
            Err(source) => {
                let _ = std::fs::remove_dir_all(&home);
                return Err(LaunchError::Spawn {
                    program: spec.program.clone(),
                    source,
                });
            }
        };
        let pid = child.id();

        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump_lines(
                out,
                OutputStream::Stdout,
                spec.log.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump_lines(
                err,
                OutputStream::Stderr,
                spec.log.clone(),
            )));
        }

        let (exit_tx, exit_rx) = watch::channel(None);
        let kill = Arc::new(Notify::new());
        let kill_requested = kill.clone();
        let reaper_home = home.clone();
        tokio::spawn(async move {
            let (status, killed) = tokio::select! {
                status = child.wait() => {
                    // Take down whatever it left behind in its group.
                    if let Some(pid) = pid { sys::kill_process_group(pid) }
                    (status, false)
                }
                () = kill_requested.notified() => {
                    // Signal the group while the leader is still unreaped (its id cannot have
                    // been reused yet), then reap.
                    if let Some(pid) = pid { sys::kill_process_group(pid) }
                    let _ = child.start_kill();
                    (child.wait().await, true)
                }
            };
            // Flush the last output before announcing the exit.
            for p in pumps {
                let _ = p.await;
            }
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(reaper_home)).await;
            let status = match status {
                Ok(s) => describe_status(s),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = exit_tx.send(Some(ExitReport { status, killed }));
        });

        Ok(Arc::new(ProcessInstance {
            id: spec.instance_id,
            addr,
            pid,
            home,
            exit: exit_rx,
            kill,
        }))
    }
}

pub(crate) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Copy a child's output into `sink`, one record per line.
pub(crate) async fn pump_lines<R: AsyncRead + Unpin>(out: R, stream: OutputStream, sink: LogSink) {
    let mut reader = BufReader::new(out);
    let mut line: Vec<u8> = Vec::new();
    let emit = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line);
        sink.write(stream, text.trim_end_matches('\r'));
        line.clear();
    };
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            break;
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                reader.consume(i + 1);
                emit(&mut line);
            }
            None => {
                let n = buf.len();
                line.extend_from_slice(buf);
                reader.consume(n);
                if line.len() >= MAX_LINE_BYTES {
                    emit(&mut line);
                }
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
}

struct ProcessInstance {
    id: u64,
    addr: SocketAddr,
    pid: Option<u32>,
    home: PathBuf,
    exit: watch::Receiver<Option<ExitReport>>,
    kill: Arc<Notify>,
}

#[async_trait::async_trait]
impl RuntimeInstance for ProcessInstance {
    fn id(&self) -> u64 {
        self.id
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn cpu_time(&self) -> Option<std::time::Duration> {
        proc_cpu_time(self.pid?)
    }

    fn exit_watch(&self) -> watch::Receiver<Option<ExitReport>> {
        self.exit.clone()
    }

    fn kill(&self) {
        // notify_one stores a permit, so a kill before the waiter task polls is not lost.
        self.kill.notify_one();
    }

    async fn install_code(&self, host_path: &Path, slot: CodeSlot) -> io::Result<PathBuf> {
        match slot {
            // Same filesystem, no sandbox: the runtime can read the cache directly.
            CodeSlot::LoadRequest => Ok(host_path.to_owned()),
            CodeSlot::V1CodePath => {
                let link = self.home.join("user");
                let target = host_path.to_owned();
                let l = link.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = std::fs::remove_file(&l);
                    std::os::unix::fs::symlink(target, &l)
                })
                .await
                .map_err(io::Error::other)??;
                Ok(link)
            }
        }
    }
}

/// Find the interpreters to run the built-in runtimes with: `/usr/bin/node` and
/// `/usr/bin/python3` when present, otherwise the first match on `PATH` — always canonicalized
/// (absolute, symlinks resolved) and never a pyenv/asdf shim, which costs ~80 ms per start.
pub fn resolve_runtime_binaries() -> (Option<PathBuf>, Option<PathBuf>) {
    (find_interpreter("node"), find_interpreter("python3"))
}

fn find_interpreter(name: &str) -> Option<PathBuf> {
    let preferred = Path::new("/usr/bin").join(name);
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    std::iter::once(preferred)
        .chain(path_dirs.into_iter().map(|d| d.join(name)))
        .filter(|p| p.is_absolute())
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .find(|p| {
            let s = p.to_string_lossy();
            p.is_file() && !s.contains("/shims/")
        })
}

/// `utime + stime` of a process from `/proc/<pid>/stat` (in USER_HZ ticks, 100 per second on
/// Linux whatever the kernel's own tick rate).
pub(crate) fn proc_cpu_time(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' come state (field 3), … utime is field 14 and stime field 15 overall.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(std::time::Duration::from_millis((utime + stime) * 10))
}
