//! [`SandboxLauncher`]: every instance in its own `fission-sandbox` slot (bubblewrap,
//! namespaces, seccomp, cgroup limits, its own network namespace). The slot — including its
//! cgroups and network namespace — is created when the pool slot is filled, never on the
//! request path; code is hard-linked into the slot's `/userfunc` at specialization.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fission_sandbox::{Limits, Sandbox, Slot, SlotSpec};
use tokio::sync::{Notify, watch};

use crate::zygote::{Zygote, ZygoteConfig, ZygoteError};

use crate::launcher::{
    CodeSlot, ExitReport, InstanceLauncher, LaunchError, LaunchSpec, LogSink, OutputStream,
    RuntimeInstance, describe_status, pump_lines,
};

/// Environment variable names the launcher owns.
const RESERVED_ENV: [&str; 4] = ["PATH", "HOME", "FISSION_LISTEN_FD", "FISSION_CODEPATH"];

/// Starts runtime instances inside sandbox slots.
#[derive(Clone)]
pub struct SandboxLauncher {
    sandbox: Sandbox,
    /// Host directories the runtimes need (the environments directory) and where they appear
    /// inside, read-only; launch arguments naming a host path are rewritten to the inside one.
    binds: Vec<(PathBuf, PathBuf)>,
    /// Python instances forked by the zygote, when on.
    zygote: Option<Arc<ZygoteHandle>>,
}

/// The zygote of a launcher: started on the first Python launch, again after it died.
struct ZygoteHandle {
    config: ZygoteConfig,
    /// For the zygote's own seccomp programs.
    sandbox: Sandbox,
    current: tokio::sync::Mutex<Option<Arc<Zygote>>>,
    /// Set once starting failed: Python instances then start the plain way (said once).
    failed: std::sync::atomic::AtomicBool,
}

impl ZygoteHandle {
    async fn get(&self) -> Result<Arc<Zygote>, ZygoteError> {
        let mut current = self.current.lock().await;
        if let Some(z) = current.as_ref().filter(|z| z.is_alive()) {
            return Ok(z.clone());
        }
        let log = LogSink::new(Arc::new(ZygoteLog));
        let seccomp = self
            .sandbox
            .zygote_seccomp_programs()
            .map_err(|e| ZygoteError::Io(io::Error::other(e.to_string())))?;
        let z = Arc::new(Zygote::start(&self.config, log, seccomp).await?);
        tracing::info!(pid = ?z.pid(), "python zygote started: Python instances are forked from it");
        *current = Some(z.clone());
        Ok(z)
    }
}

/// The zygote's own output, into the server log.
struct ZygoteLog;

impl crate::launcher::LineSink for ZygoteLog {
    fn line(&self, _stream: OutputStream, line: &str) {
        tracing::info!(target: "fission::zygote", "{line}");
    }
}

impl std::fmt::Debug for SandboxLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxLauncher")
            .field("run_id", &self.sandbox.run_id())
            .field("binds", &self.binds)
            .field("python_zygote", &self.zygote.as_ref().map(|z| &z.config))
            .finish()
    }
}

impl SandboxLauncher {
    /// A launcher creating slots in `sandbox`, binding each `(host, inside)` of `binds`
    /// read-only.
    pub fn new(sandbox: Sandbox, binds: Vec<(PathBuf, PathBuf)>) -> Self {
        Self {
            sandbox,
            binds,
            zygote: None,
        }
    }

    /// Fork Python instances (`<python> … python/server.py`) from a zygote started with
    /// `config` instead of starting an interpreter per instance. Each child joins a slot made
    /// for it (same namespaces, cgroups, seccomp programs, uid) before it loads anything of
    /// the user. If the zygote cannot start, instances start the plain way (logged once).
    pub fn with_python_zygote(mut self, config: ZygoteConfig) -> Self {
        self.zygote = Some(Arc::new(ZygoteHandle {
            config,
            sandbox: self.sandbox.clone(),
            current: tokio::sync::Mutex::new(None),
            failed: std::sync::atomic::AtomicBool::new(false),
        }));
        self
    }

    /// Whether `spec` is the Python loader, which the zygote can fork.
    fn forkable(&self, spec: &LaunchSpec) -> Option<&Arc<ZygoteHandle>> {
        let z = self.zygote.as_ref()?;
        let is_loader = spec.args.last().is_some_and(|a| {
            Path::new(a).file_name() == Some(std::ffi::OsStr::new("server.py"))
                && Path::new(a).parent().is_some_and(|d| d.ends_with("python"))
        });
        (spec.program == z.config.python
            && is_loader
            && !z.failed.load(std::sync::atomic::Ordering::Relaxed))
        .then_some(z)
    }
}

/// Where sandboxed instances read the runtimes from: the environments directory itself when
/// the slots' unprivileged uids can reach it, else a private copy (removed when this is dropped).
#[derive(Debug)]
pub struct PreparedRuntimes {
    path: PathBuf,
    is_copy: bool,
}

impl PreparedRuntimes {
    /// The directory to bind into slots.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PreparedRuntimes {
    fn drop(&mut self) {
        if self.is_copy {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Whether every directory from `/` down to `dir` lets other users through, as a slot's
/// unprivileged uid must to read what is bound from `dir`.
fn reachable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    dir.ancestors().all(|d| {
        std::fs::metadata(d)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

impl SandboxLauncher {
    /// A launcher whose slots see `environments_dir` (the runtimes) read-only at
    /// `/opt/fission/environments` — a fixed inside path, whatever the host path (it may sit
    /// under /tmp, which the sandbox replaces with a private one). When the slots' uids cannot
    /// reach the directory (a checkout under /root), the runtimes are copied into the sandbox's
    /// state directory first.
    pub fn with_runtimes(
        sandbox: Sandbox,
        environments_dir: &Path,
    ) -> io::Result<(Self, PreparedRuntimes)> {
        let dir = std::fs::canonicalize(environments_dir)?;
        let prepared = if reachable_by_others(&dir) {
            PreparedRuntimes {
                path: dir,
                is_copy: false,
            }
        } else {
            let copy = sandbox
                .config()
                .state_dir
                .join(format!("environments-{}", sandbox.run_id()));
            let _ = std::fs::remove_dir_all(&copy);
            // `cp -a` keeps node_modules' links and modes exactly; the copy is made once per run.
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(&dir)
                .arg(&copy)
                .status()?;
            if !status.success() {
                return Err(io::Error::other(format!(
                    "cannot copy {} to {} ({status})",
                    dir.display(),
                    copy.display()
                )));
            }
            tracing::info!(from = %dir.display(), to = %copy.display(), "runtimes copied where sandboxed instances can read them");
            PreparedRuntimes {
                path: copy,
                is_copy: true,
            }
        };
        let launcher = Self::new(
            sandbox,
            vec![(
                prepared.path.clone(),
                PathBuf::from("/opt/fission/environments"),
            )],
        );
        Ok((launcher, prepared))
    }
}

#[async_trait::async_trait]
impl InstanceLauncher for SandboxLauncher {
    async fn launch(&self, spec: LaunchSpec) -> Result<Arc<dyn RuntimeInstance>, LaunchError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(LaunchError::Setup)?;
        let addr = listener.local_addr().map_err(LaunchError::Setup)?;
        let defaults = self.sandbox.config().default_limits;
        let limits = Limits {
            memory_bytes: spec.limits.memory_bytes.or(defaults.memory_bytes),
            cpu_millis: spec.limits.cpu_millis.or(defaults.cpu_millis),
            ..defaults
        };
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .filter(|(k, _)| !RESERVED_ENV.contains(&k.as_str()))
            .cloned()
            .collect();
        env.extend([
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ("HOME".to_owned(), "/tmp".to_owned()),
            (
                "FISSION_LISTEN_FD".to_owned(),
                fission_sandbox::LISTEN_FD.to_string(),
            ),
            ("FISSION_CODEPATH".to_owned(), "/userfunc/user".to_owned()),
        ]);
        let args = spec
            .args
            .iter()
            .map(|a| {
                let p = Path::new(a);
                self.binds
                    .iter()
                    .find_map(|(host, inside)| {
                        p.strip_prefix(host).ok().map(|rest| inside.join(rest))
                    })
                    .map_or_else(
                        || a.to_string_lossy().into_owned(),
                        |q| q.to_string_lossy().into_owned(),
                    )
            })
            .collect::<Vec<String>>();
        if let Some(z) = self.forkable(&spec) {
            match z.get().await {
                Ok(zygote) => {
                    let forked = Forked {
                        listener,
                        addr,
                        limits,
                        env,
                        // What follows the loader script (`-I -S <script> …`).
                        args: args.iter().skip(3).cloned().collect(),
                    };
                    return self.launch_forked(&zygote, &spec, forked).await;
                }
                Err(e) => {
                    if !z.failed.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(error = %e, "the Python zygote cannot run here: every Python instance starts its own interpreter");
                    }
                }
            }
        }
        let mut slot_spec = SlotSpec::new(spec.program.clone(), args, listener);
        slot_spec.readonly_binds = self.binds.clone();
        slot_spec.limits = Some(limits);
        slot_spec.egress = spec.limits.egress;
        slot_spec.env = env;
        slot_spec.cwd = Some(PathBuf::from("/tmp"));

        let sandbox = self.sandbox.clone();
        let mut slot = tokio::task::spawn_blocking(move || sandbox.create_slot(slot_spec))
            .await
            .map_err(|e| LaunchError::Setup(io::Error::other(e)))?
            .map_err(|e| LaunchError::Setup(io::Error::other(e.to_string())))?;
        let Some(mut child) = slot.take_child() else {
            let _ = tokio::task::spawn_blocking(move || slot.destroy()).await;
            return Err(LaunchError::Setup(io::Error::other(
                "the sandbox slot has no process",
            )));
        };
        let pid = slot.pid();
        let userfunc = slot.userfunc_dir().to_owned();
        let values = (slot.dir().join("secrets"), slot.dir().join("configs"));
        let memory_limit = limits.memory_bytes;

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

        let slot = Arc::new(Mutex::new(Some(slot)));
        let (exit_tx, exit_rx) = watch::channel(None);
        let kill = Arc::new(Notify::new());
        let kill_requested = kill.clone();
        let reaper_slot = slot.clone();
        let stats_slot = slot.clone();
        tokio::spawn(async move {
            let (status, killed) = tokio::select! {
                status = child.wait() => (status, false),
                () = kill_requested.notified() => {
                    let s = reaper_slot.clone();
                    // Kill the whole cgroup (frozen first, so nothing escapes), then reap.
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Some(slot) = s.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                            let _ = slot.kill();
                        }
                    })
                    .await;
                    let _ = child.start_kill();
                    (child.wait().await, true)
                }
            };
            for p in pumps {
                let _ = p.await;
            }
            let oom = reaper_slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(Slot::oom_killed);
            let status = match (status, oom) {
                (_, true) => match memory_limit {
                    Some(m) => format!("out of memory (memory limit {} MiB)", m / (1024 * 1024)),
                    None => "out of memory".to_owned(),
                },
                (Ok(s), false) => describe_status(s),
                (Err(e), false) => format!("wait failed: {e}"),
            };
            // Announce the exit first (callers waiting to say why a request failed), then
            // remove the slot's cgroups, network namespace and directories.
            let _ = exit_tx.send(Some(ExitReport { status, killed }));
            let taken = reaper_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(slot) = taken {
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = slot.destroy() {
                        tracing::warn!(error = %e, "cannot remove a sandbox slot");
                    }
                })
                .await;
            }
        });

        Ok(Arc::new(SandboxedInstance {
            id: spec.instance_id,
            addr,
            pid,
            slot: stats_slot,
            userfunc,
            values,
            exit: exit_rx,
            kill,
        }))
    }
}

/// What a forked instance gets, prepared as for a regular slot.
struct Forked {
    listener: TcpListener,
    addr: SocketAddr,
    limits: Limits,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl SandboxLauncher {
    /// A slot holding only its namespaces, and a child of the zygote that joins them.
    async fn launch_forked(
        &self,
        zygote: &Zygote,
        spec: &LaunchSpec,
        forked: Forked,
    ) -> Result<Arc<dyn RuntimeInstance>, LaunchError> {
        let setup = |e: String| LaunchError::Setup(io::Error::other(e));
        let mut slot_spec = SlotSpec::holder();
        slot_spec.readonly_binds = self.binds.clone();
        slot_spec.limits = Some(forked.limits);
        slot_spec.egress = spec.limits.egress;
        let sandbox = self.sandbox.clone();
        let (mut slot, handles) = tokio::task::spawn_blocking(move || {
            let slot = sandbox.create_slot(slot_spec)?;
            let handles = slot.join_handles(&sandbox)?;
            Ok::<_, fission_sandbox::Error>((slot, handles))
        })
        .await
        .map_err(|e| setup(e.to_string()))?
        .map_err(|e| setup(e.to_string()))?;
        let userfunc = slot.userfunc_dir().to_owned();
        let values = (slot.dir().join("secrets"), slot.dir().join("configs"));
        let memory_limit = forked.limits.memory_bytes;
        // bubblewrap's own output (setup errors) goes to the instance's log too.
        let mut bwrap = slot.take_child();
        let mut pumps = Vec::new();
        if let Some(child) = bwrap.as_mut() {
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
        }
        let slot = Arc::new(Mutex::new(Some(slot)));
        let destroy = |slot: Arc<Mutex<Option<Slot>>>| async move {
            let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(slot) = taken {
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = slot.destroy() {
                        tracing::warn!(error = %e, "cannot remove a sandbox slot");
                    }
                })
                .await;
            }
        };

        let pipes = (|| Ok::<_, io::Error>((io::pipe()?, io::pipe()?)))();
        let ((out_r, out_w), (err_r, err_w)) = match pipes {
            Ok(p) => p,
            Err(e) => {
                destroy(slot).await;
                return Err(LaunchError::Setup(e));
            }
        };
        let mut fds: Vec<(&str, std::os::fd::BorrowedFd<'_>)> = vec![
            ("listen", forked.listener.as_fd()),
            ("stdout", out_w.as_fd()),
            ("stderr", err_w.as_fd()),
        ];
        fds.extend(handles.namespaces.iter().map(|(n, f)| (*n, f.as_fd())));
        fds.extend(
            handles
                .cgroup_procs
                .iter()
                .map(|f| ("cgroup_procs", f.as_fd())),
        );
        fds.extend(handles.seccomp.iter().map(|f| ("seccomp", f.as_fd())));
        let inside = |p: &Path| p.to_string_lossy().into_owned();
        let mut request = serde_json::Map::new();
        let mut env = vec![("LANG".to_owned(), "C.UTF-8".to_owned())];
        env.extend(forked.env.iter().cloned());
        request.insert("env".into(), serde_json::json!(env));
        request.insert("args".into(), serde_json::json!(forked.args));
        request.insert("cwd".into(), "/tmp".into());
        request.insert("uid".into(), fission_sandbox::INSIDE_ID.into());
        request.insert("gid".into(), fission_sandbox::INSIDE_ID.into());
        request.insert(
            "path_map".into(),
            serde_json::json!(
                self.binds
                    .iter()
                    .map(|(h, i)| [inside(h), inside(i)])
                    .collect::<Vec<_>>()
            ),
        );
        let answer = zygote.spawn(request, &fds).await;
        drop(fds);
        // The child holds its copies now; ours must go (EOF and refused connections once it
        // is gone).
        drop((out_w, err_w, forked.listener, handles));
        let (pid, mut exit_rx) = match answer {
            Ok(a) => a,
            Err(e) => {
                destroy(slot).await;
                return Err(setup(e.to_string()));
            }
        };
        for (reader, stream) in [(out_r, OutputStream::Stdout), (err_r, OutputStream::Stderr)] {
            match tokio::net::unix::pipe::Receiver::from_file(std::fs::File::from(
                std::os::fd::OwnedFd::from(reader),
            )) {
                Ok(r) => pumps.push(tokio::spawn(pump_lines(r, stream, spec.log.clone()))),
                Err(e) => tracing::warn!(error = %e, "cannot read a forked instance's output"),
            }
        }

        let (exit_tx, exit_watch) = watch::channel(None);
        let kill = Arc::new(Notify::new());
        let kill_requested = kill.clone();
        let reaper_slot = slot.clone();
        tokio::spawn(async move {
            let exited = async {
                loop {
                    if let Some(s) = exit_rx.borrow_and_update().clone() {
                        return s;
                    }
                    if exit_rx.changed().await.is_err() {
                        return "unknown".to_owned();
                    }
                }
            };
            let kill_slot = |s: Arc<Mutex<Option<Slot>>>| async move {
                let _ = tokio::task::spawn_blocking(move || {
                    if let Some(slot) = s.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                        let _ = slot.kill();
                    }
                })
                .await;
            };
            tokio::pin!(exited);
            let (status, killed) = tokio::select! {
                status = &mut exited => (status, false),
                () = kill_requested.notified() => {
                    // The whole cgroup (frozen first, so nothing escapes): the child, anything
                    // it forked, the placeholder.
                    kill_slot(reaper_slot.clone()).await;
                    let status = tokio::time::timeout(Duration::from_secs(5), &mut exited)
                        .await
                        .unwrap_or_else(|_| "killed".to_owned());
                    (status, true)
                }
            };
            // The placeholder and bubblewrap outlive the child: end the slot.
            kill_slot(reaper_slot.clone()).await;
            if let Some(mut b) = bwrap {
                let _ = b.start_kill();
                let _ = b.wait().await;
            }
            for p in pumps {
                let _ = p.await;
            }
            let oom = reaper_slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(Slot::oom_killed);
            let status = match (oom, memory_limit) {
                (true, Some(m)) => {
                    format!("out of memory (memory limit {} MiB)", m / (1024 * 1024))
                }
                (true, None) => "out of memory".to_owned(),
                (false, _) => status,
            };
            let _ = exit_tx.send(Some(ExitReport { status, killed }));
            destroy(reaper_slot).await;
        });

        Ok(Arc::new(SandboxedInstance {
            id: spec.instance_id,
            addr: forked.addr,
            pid: Some(pid),
            slot,
            userfunc,
            values,
            exit: exit_watch,
            kill,
        }))
    }
}

struct SandboxedInstance {
    id: u64,
    addr: SocketAddr,
    pid: Option<u32>,
    /// The slot while it exists (for its cgroup's CPU usage).
    slot: Arc<Mutex<Option<Slot>>>,
    userfunc: PathBuf,
    values: (PathBuf, PathBuf),
    exit: watch::Receiver<Option<ExitReport>>,
    kill: Arc<Notify>,
}

#[async_trait::async_trait]
impl RuntimeInstance for SandboxedInstance {
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
        // The whole slot's cgroup: the runtime and anything it started.
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let ns = slot.as_ref()?.stats().cpu_usage_ns?;
        Some(std::time::Duration::from_nanos(ns))
    }

    fn exit_watch(&self) -> watch::Receiver<Option<ExitReport>> {
        self.exit.clone()
    }

    fn kill(&self) {
        self.kill.notify_one();
    }

    async fn install_code(&self, host_path: &Path, slot: CodeSlot) -> io::Result<PathBuf> {
        // The cache names the code: `deployarchive`, or the user's own file name.
        let name = match slot {
            CodeSlot::LoadRequest => host_path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(crate::package::DEPLOY_NAME),
            CodeSlot::V1CodePath => "user",
        };
        let dest = self.userfunc.join(name);
        let src = host_path.to_owned();
        tokio::task::spawn_blocking(move || link_tree(&src, &dest))
            .await
            .map_err(io::Error::other)??;
        Ok(Path::new("/userfunc").join(name))
    }

    fn values_dirs(&self) -> Option<(PathBuf, PathBuf)> {
        Some(self.values.clone())
    }
}

/// Hard-link `src` (a file or a directory tree) to `dest`, copying where linking is not
/// possible (another filesystem); everything world-readable, since the instance runs as an
/// unprivileged uid.
fn link_tree(src: &Path, dest: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::symlink_metadata(src)?;
    if meta.is_dir() {
        std::fs::create_dir_all(dest)?;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            link_tree(&entry.path(), &dest.join(entry.file_name()))?;
        }
        Ok(())
    } else if meta.is_file() {
        // The cache's files are the executor's; make them readable before linking (the link
        // shares the inode and so its mode).
        let mode = meta.permissions().mode() | 0o444;
        std::fs::set_permissions(src, std::fs::Permissions::from_mode(mode))?;
        if std::fs::hard_link(src, dest).is_err() {
            std::fs::copy(src, dest)?;
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    } else {
        // The unpacker refuses symlinks; anything else is skipped.
        Ok(())
    }
}
