//! [`SandboxLauncher`]: every instance in its own `fission-sandbox` slot (bubblewrap,
//! namespaces, seccomp, cgroup limits, its own network namespace). The slot — including its
//! cgroups and network namespace — is created when the pool slot is filled, never on the
//! request path; code is hard-linked into the slot's `/userfunc` at specialization.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fission_sandbox::{Limits, Sandbox, Slot, SlotSpec};
use tokio::sync::{Notify, watch};

use crate::launcher::{
    CodeSlot, ExitReport, InstanceLauncher, LaunchError, LaunchSpec, OutputStream, RuntimeInstance,
    describe_status, pump_lines,
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
}

impl std::fmt::Debug for SandboxLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxLauncher")
            .field("run_id", &self.sandbox.run_id())
            .field("binds", &self.binds)
            .finish()
    }
}

impl SandboxLauncher {
    /// A launcher creating slots in `sandbox`, binding each `(host, inside)` of `binds`
    /// read-only.
    pub fn new(sandbox: Sandbox, binds: Vec<(PathBuf, PathBuf)>) -> Self {
        Self { sandbox, binds }
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
            .collect();
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
