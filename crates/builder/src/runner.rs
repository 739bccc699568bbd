//! Where build steps run: the [`BuildRunner`] port and its two implementations,
//! [`HostRunner`] (plain child processes of the server) and [`SandboxRunner`] (one
//! `fission-sandbox` slot per step, as function instances get).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::process::{Child, Command};

use crate::sys::kill_process_group;

/// One command of a build, with every path as the step sees it (see [`BuildRunner::paths`]).
#[derive(Debug, Clone)]
pub struct BuildStep {
    /// Program (absolute, or looked up on the step's `PATH`).
    pub program: OsString,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Working directory.
    pub cwd: PathBuf,
    /// The complete environment.
    pub env: Vec<(OsString, OsString)>,
    /// Host directories holding the tools the step runs (node, npm, pip's Python): a sandbox
    /// makes those outside `/usr` visible, read-only.
    pub tool_dirs: Vec<PathBuf>,
    /// The build's host directory (holding `src/`, later `deploy/`).
    pub work_dir: PathBuf,
    /// Resource limits of the build.
    pub resources: BuildResources,
}

/// Resource limits of one build: the environment's builder resources
/// (`spec.builder.container.resources`, else `spec.resources`, as Fission's builder pod gets
/// them), else the runner's defaults. Only a sandbox enforces them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildResources {
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU limit in millicores.
    pub cpu_millis: Option<u64>,
}

/// The directories of a build as its steps see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPaths {
    /// `$SRC_PKG`: the unpacked source, the steps' working directory.
    pub src: PathBuf,
    /// `$DEPLOY_PKG`: where a custom command puts the deployment (not created in advance).
    pub deploy: PathBuf,
    /// `$HOME`.
    pub home: PathBuf,
    /// `$TMPDIR`.
    pub tmp: PathBuf,
    /// Where npm's and pip's caches go.
    pub cache: PathBuf,
}

/// Where build steps run (the build manager's only way to start a process).
pub trait BuildRunner: Send + Sync + std::fmt::Debug {
    /// Prepare the build directory `work` (on the host; it holds the unpacked `src/`) and say
    /// where steps see the build's directories. Host-side `work/src` and `work/deploy` are
    /// what steps see at [`StepPaths::src`] and [`StepPaths::deploy`].
    fn paths(&self, work: &Path) -> io::Result<StepPaths>;

    /// Start `step` with nothing on stdin and stdout/stderr piped.
    fn start<'a>(&'a self, step: &'a BuildStep) -> BoxFuture<'a, io::Result<Box<dyn StepProcess>>>;

    /// How the build log names where builds run.
    fn describe(&self) -> String;
}

/// A started build step.
pub trait StepProcess: Send {
    /// The process to wait on (stdout and stderr are piped; take them to read them).
    fn child(&mut self) -> &mut Child;

    /// Kill every process the step started (its process group, or its whole sandbox).
    fn kill_all(&mut self) -> BoxFuture<'_, ()>;

    /// After the step failed: a cause the exit status does not tell (a limit it hit), for the
    /// log, e.g. "out of memory (the build's memory limit is 128 MiB)".
    fn limit_hit(&self) -> Option<String>;

    /// Release what the step held (its sandbox), after it exited and was killed.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

// === Host ===

/// Runs build steps as plain child processes of the server, in their own process group, with
/// the server's privileges: no isolation (`--sandbox none`).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostRunner;

impl BuildRunner for HostRunner {
    fn paths(&self, work: &Path) -> io::Result<StepPaths> {
        let paths = StepPaths {
            src: work.join("src"),
            deploy: work.join("deploy"),
            home: work.join("home"),
            tmp: work.join("tmp"),
            cache: work.join("cache"),
        };
        for d in [&paths.home, &paths.tmp, &paths.cache] {
            std::fs::create_dir_all(d)?;
        }
        Ok(paths)
    }

    fn start<'a>(&'a self, step: &'a BuildStep) -> BoxFuture<'a, io::Result<Box<dyn StepProcess>>> {
        Box::pin(async move {
            let mut cmd = Command::new(&step.program);
            cmd.args(&step.args)
                .current_dir(&step.cwd)
                .env_clear()
                .envs(step.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            let child = cmd.spawn()?;
            let pgid = child.id();
            Ok(Box::new(HostProcess { child, pgid }) as Box<dyn StepProcess>)
        })
    }

    fn describe(&self) -> String {
        "as plain processes of the server (--sandbox none: not isolated)".to_owned()
    }
}

struct HostProcess {
    child: Child,
    pgid: Option<u32>,
}

impl StepProcess for HostProcess {
    fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    fn kill_all(&mut self) -> BoxFuture<'_, ()> {
        if let Some(pgid) = self.pgid {
            kill_process_group(pgid);
        }
        Box::pin(async {})
    }

    fn limit_hit(&self) -> Option<String> {
        None
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        // Drop kills the group (the leader is reaped by then, or being killed).
        Box::pin(async {})
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        // The run was abandoned half-way (or is done): nothing of the step may outlive it.
        if let Some(pgid) = self.pgid {
            kill_process_group(pgid);
        }
    }
}

// === Sandbox ===

/// Where the build directory appears inside a build's sandbox (Fission's builder pods use
/// `/packages` too).
pub const SANDBOX_PACKAGES: &str = "/packages";

/// Default limits of a sandboxed build whose environment sets no resources: 1 GiB of memory
/// (the private `/tmp`, where npm's and pip's caches go, counts against it), one CPU, 1024
/// processes and threads.
pub const DEFAULT_BUILD_LIMITS: fission_sandbox::Limits = fission_sandbox::Limits {
    memory_bytes: Some(1 << 30),
    cpu_millis: Some(1000),
    pids: 1024,
    tmp_bytes: 1 << 30,
};

/// Runs every build step in its own sandbox slot: an unprivileged uid of its own; user, pid,
/// mount, ipc, uts and network namespaces; seccomp; no capabilities; cgroup memory, CPU and
/// pids limits; a private `/tmp` (also `$HOME` and the package caches); read-only `/usr`;
/// the build directory (source and deployment only) writable at `/packages`; egress through
/// NAT to the outside (package registries) but never to this host or its other slots.
#[derive(Debug, Clone)]
pub struct SandboxRunner {
    sandbox: fission_sandbox::Sandbox,
    defaults: fission_sandbox::Limits,
}

impl SandboxRunner {
    /// Build steps in slots of `sandbox`, limited by `defaults` where the environment sets no
    /// resources ([`DEFAULT_BUILD_LIMITS`] is a good start).
    pub fn new(sandbox: fission_sandbox::Sandbox, defaults: fission_sandbox::Limits) -> Self {
        Self { sandbox, defaults }
    }
}

/// Whether `dir` is part of what every slot sees anyway (`/usr`, or a top-level link into it).
fn in_slot_root(dir: &Path) -> bool {
    ["/usr", "/bin", "/sbin", "/lib", "/lib64"]
        .iter()
        .any(|r| dir.starts_with(r))
}

impl BuildRunner for SandboxRunner {
    fn paths(&self, _work: &Path) -> io::Result<StepPaths> {
        let packages = Path::new(SANDBOX_PACKAGES);
        Ok(StepPaths {
            src: packages.join("src"),
            deploy: packages.join("deploy"),
            home: PathBuf::from("/tmp"),
            tmp: PathBuf::from("/tmp"),
            cache: PathBuf::from("/tmp/cache"),
        })
    }

    fn start<'a>(&'a self, step: &'a BuildStep) -> BoxFuture<'a, io::Result<Box<dyn StepProcess>>> {
        Box::pin(async move {
            let limits = fission_sandbox::Limits {
                memory_bytes: step.resources.memory_bytes.or(self.defaults.memory_bytes),
                cpu_millis: step.resources.cpu_millis.or(self.defaults.cpu_millis),
                ..self.defaults
            };
            let text = |s: &std::ffi::OsStr| s.to_string_lossy().into_owned();
            let mut args: Vec<String> = step.args.iter().map(|a| text(a)).collect();
            let program = PathBuf::from(&step.program);
            // The sandbox starts absolute paths only; a bare name (`sh`, `make`) is looked up
            // on the step's PATH inside, by env.
            let program = if program.is_absolute() {
                program
            } else {
                args.splice(0..0, ["--".to_owned(), text(&step.program)]);
                PathBuf::from("/usr/bin/env")
            };
            let mut spec = fission_sandbox::SlotSpec::command(program, args);
            spec.writable_binds = vec![(step.work_dir.clone(), PathBuf::from(SANDBOX_PACKAGES))];
            // Tools installed outside /usr (a node under /opt/node/bin): their whole prefix,
            // read-only, at the same path.
            for dir in &step.tool_dirs {
                if in_slot_root(dir) {
                    continue;
                }
                let prefix = dir.parent().filter(|p| *p != Path::new("/")).unwrap_or(dir);
                let bind = (prefix.to_owned(), prefix.to_owned());
                if !spec.readonly_binds.contains(&bind) {
                    spec.readonly_binds.push(bind);
                }
            }
            spec.limits = Some(limits);
            spec.egress = true;
            spec.env = step.env.iter().map(|(k, v)| (text(k), text(v))).collect();
            spec.cwd = Some(step.cwd.clone());
            let sandbox = self.sandbox.clone();
            let mut slot = tokio::task::spawn_blocking(move || sandbox.create_slot(spec))
                .await
                .map_err(io::Error::other)?
                .map_err(|e| io::Error::other(format!("cannot create the build sandbox: {e}")))?;
            let Some(child) = slot.take_child() else {
                let _ = tokio::task::spawn_blocking(move || slot.destroy()).await;
                return Err(io::Error::other("the build sandbox has no process"));
            };
            tracing::debug!(
                slot = slot.name(),
                uid = slot.host_uid(),
                "build step sandboxed"
            );
            Ok(Box::new(SandboxedStep {
                child,
                slot: Arc::new(Mutex::new(Some(slot))),
                limits,
            }) as Box<dyn StepProcess>)
        })
    }

    fn describe(&self) -> String {
        let l = self.defaults;
        let mib = |b: Option<u64>| b.map_or("unlimited".to_owned(), |b| format!("{} MiB", b >> 20));
        format!(
            "in a sandbox (own uid, namespaces, seccomp; default limits: memory {}, {} millicores, {} processes)",
            mib(l.memory_bytes),
            l.cpu_millis
                .map_or("unlimited".to_owned(), |c| c.to_string()),
            l.pids
        )
    }
}

struct SandboxedStep {
    child: Child,
    /// The slot until released (shared with blocking tasks that kill or destroy it).
    slot: Arc<Mutex<Option<fission_sandbox::Slot>>>,
    limits: fission_sandbox::Limits,
}

impl SandboxedStep {
    fn with_slot<T>(&self, f: impl FnOnce(&fission_sandbox::Slot) -> T) -> Option<T> {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map(f)
    }
}

impl StepProcess for SandboxedStep {
    fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    fn kill_all(&mut self) -> BoxFuture<'_, ()> {
        let slot = self.slot.clone();
        Box::pin(async move {
            // The whole cgroup, frozen first: nothing the step forked survives.
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(s) = slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
                    && let Err(e) = s.kill()
                {
                    tracing::warn!(error = %e, "cannot kill a build sandbox");
                }
            })
            .await;
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        })
    }

    fn limit_hit(&self) -> Option<String> {
        let (oom, pids) = self.with_slot(|s| (s.oom_killed(), s.pids_limit_hits()))?;
        let mut hits = Vec::new();
        if oom {
            hits.push(match self.limits.memory_bytes {
                Some(m) => format!(
                    "out of memory (the build's memory limit is {} MiB)",
                    m >> 20
                ),
                None => "out of memory".to_owned(),
            });
        }
        if pids > 0 {
            hits.push(format!(
                "it reached the build's limit of {} processes and threads",
                self.limits.pids
            ));
        }
        (!hits.is_empty()).then(|| hits.join("; "))
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        let slot = self.slot.clone();
        Box::pin(async move {
            let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(slot) = taken {
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = slot.destroy() {
                        tracing::warn!(error = %e, "cannot remove a build sandbox");
                    }
                })
                .await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_under_usr_need_no_bind() {
        assert!(in_slot_root(Path::new("/usr/bin")));
        assert!(in_slot_root(Path::new("/usr/local/bin")));
        assert!(!in_slot_root(Path::new("/opt/node/bin")));
        assert!(!in_slot_root(Path::new("/usrx/bin")));
    }
}
