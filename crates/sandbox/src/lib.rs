//! Per-instance sandboxes for function runtimes.
//!
//! One [`Sandbox`] per server; one [`Slot`] per runtime instance, created when the executor
//! fills its warm pool (never on the request path). A slot is:
//!
//! * **bubblewrap**, started *after* this (root) process has dropped to an unprivileged host
//!   uid/gid of its own (`id_base + slot index`), so the user namespace bubblewrap creates maps
//!   the sandbox uid (1000 inside) to a non-root host uid: no host file is readable unless it
//!   is readable by "other";
//! * new user, mount, pid, ipc, uts and cgroup namespaces, nested user namespaces disabled;
//!   `no_new_privs`, every capability dropped, a seccomp filter (see `seccomp.rs`);
//! * a root filesystem holding only: read-only `/usr` (and the `/bin`, `/lib*`, `/sbin`
//!   links), a minimal `/etc` (generated `passwd`/`group`/`hosts`, the host's resolver,
//!   nsswitch, CA certificates, `ld.so.cache`, …), `/proc` of its own pid namespace, a minimal
//!   `/dev`, a private size-limited tmpfs `/tmp` (mode 1777), `/userfunc` (the slot's host
//!   directory, read-only; code is placed there after the slot exists), empty read-only
//!   `/secrets` and `/configs`, and the caller's read-only binds (e.g. the runtime's own
//!   directory);
//! * cgroup v1 limits (memory, cpu quota, pids), with OOM kills detectable afterwards;
//! * its own network namespace. The router reaches the runtime through a listening TCP socket
//!   created on the host and passed as fd 3 (`FISSION_LISTEN_FD=3`). With egress, a veth pair
//!   and NAT give access to the outside but not to the host or other slots; without, the
//!   namespace holds only loopback.
//!
//! Every host-side object is named with a fixed prefix and the run id: cgroups
//! `fission-<run>/<index>`, network namespaces `fission-<run>-<index>`, host veths
//! `fsn<run><index hex>`, nftables table `inet fission-<run>`, slot directories
//! `<slots_dir>/fission-<run>-<index>`. A run holds an `flock` on
//! `<state_dir>/runs/<run>.lock` while it is alive, so [`Sandbox::cleanup_leftovers`] can
//! remove what dead runs left behind without touching live ones.

mod cgroup;
mod cleanup;
mod net;
mod probe;
mod sandbox;
mod seccomp;
mod slot;
mod sys;
mod zygote;

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub use cgroup::CgroupMounts;
pub use cleanup::CleanupReport;
pub use probe::{Capabilities, SandboxUnavailable};
pub use sandbox::Sandbox;
pub use slot::{Slot, SlotStats};
pub use zygote::{HOLDER_PROGRAM, JoinHandles, NAMESPACES};

/// The uid and gid a sandboxed process has inside its user namespace.
pub const INSIDE_ID: u32 = 1000;
/// The descriptor the runtime finds its listening socket on (`FISSION_LISTEN_FD`).
pub const LISTEN_FD: i32 = 3;

/// Resource limits of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit (cgroup `memory.limit_in_bytes`, also memory+swap when swap is
    /// accounted); includes the slot's tmpfs pages. `None`: unlimited.
    pub memory_bytes: Option<u64>,
    /// CPU quota in millicores (1000 = one full CPU), via CFS quota over a 100 ms period.
    /// `None`: unlimited.
    pub cpu_millis: Option<u64>,
    /// Most processes and threads at once (`pids.max`), counting bubblewrap's two processes;
    /// at least 4.
    pub pids: u64,
    /// Size of the private `/tmp` tmpfs in bytes.
    pub tmp_bytes: u64,
}

impl Default for Limits {
    /// 512 MiB memory, one CPU, 256 tasks, 64 MiB `/tmp`.
    fn default() -> Self {
        Self {
            memory_bytes: Some(512 << 20),
            cpu_millis: Some(1000),
            pids: 256,
            tmp_bytes: 64 << 20,
        }
    }
}

/// Settings of a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Run bookkeeping: `runs/<run>.lock`, `runs/<run>/` (generated `/etc` files, seccomp
    /// programs), `claims/<index>`. Default `/run/fission-sandbox`.
    pub state_dir: PathBuf,
    /// Where slot directories (`fission-<run>-<index>/{userfunc,secrets,configs}`) live.
    /// Put it on the same filesystem as the package cache to hard-link code into `userfunc`.
    /// It and its ancestors must be searchable by other users. Default `<state_dir>/slots`.
    pub slots_dir: Option<PathBuf>,
    /// Slot `i` runs as host uid and gid `id_base + i`. Default 2 000 000 000 (far from
    /// regular users and the usual subordinate id ranges).
    pub id_base: u32,
    /// Most slots alive at once, machine-wide (sizes the id and address ranges). Default 4096.
    pub max_slots: u32,
    /// Limits for slots whose [`SlotSpec::limits`] is `None`.
    pub default_limits: Limits,
    /// Whether slots may have egress at all. When true, [`Sandbox::new`] needs `nft`, turns on
    /// `net.ipv4.ip_forward` (machine-wide) and installs the run's nftables table.
    /// Default true.
    pub egress: bool,
    /// First address of the slot address pool (one /30 per slot, `max_slots × 4` addresses,
    /// aligned to the pool size). Default 10.213.0.0.
    pub subnet_base: Ipv4Addr,
    /// The bubblewrap binary; default: `bwrap` from `/usr/bin`, `/usr/local/bin`, `/bin`.
    pub bwrap: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/run/fission-sandbox"),
            slots_dir: None,
            id_base: 2_000_000_000,
            max_slots: 4096,
            default_limits: Limits::default(),
            egress: true,
            subnet_base: Ipv4Addr::new(10, 213, 0, 0),
            bwrap: None,
        }
    }
}

/// What to run in a new slot.
#[derive(Debug)]
pub struct SlotSpec {
    /// Extra read-only bind mounts: (host path, absolute path inside). E.g. the runtime's
    /// directory at the same path. Host paths must be reachable by other users.
    pub readonly_binds: Vec<(PathBuf, PathBuf)>,
    /// Writable bind mounts: (host directory, absolute path inside). The slot's uid is given
    /// the host tree (every entry is `lchown`ed to [`Slot::host_uid`], links not followed)
    /// before the program starts, so the program can write there and nowhere else on the host;
    /// the caller owns what is left afterwards. E.g. a build's source and deploy directories.
    /// Its ancestors need not be searchable by other users (the sandbox mounts it where the
    /// slot can reach it, in a mount namespace of the slot's own). At most 4.
    pub writable_binds: Vec<(PathBuf, PathBuf)>,
    /// `None`: the sandbox's [`SandboxConfig::default_limits`].
    pub limits: Option<Limits>,
    /// Give the slot a veth + NAT route to the outside; false: loopback only.
    pub egress: bool,
    /// Environment of the program (nothing is inherited). `PATH`, `HOME` and `LANG` have
    /// defaults that entries here override; `FISSION_LISTEN_FD=3` is set when there is a
    /// listener.
    pub env: Vec<(String, String)>,
    /// The program, an absolute path as seen inside (e.g. `/usr/bin/node`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Working directory inside; default `/`.
    pub cwd: Option<PathBuf>,
    /// A bound, listening socket; the program gets it as fd 3. The slot keeps no copy.
    /// `None` for a program nobody connects to (a build step).
    pub listener: Option<std::net::TcpListener>,
}

impl SlotSpec {
    /// A spec with no extra binds, default limits, egress on, no extra environment.
    pub fn new(
        program: impl Into<PathBuf>,
        args: Vec<String>,
        listener: std::net::TcpListener,
    ) -> Self {
        Self {
            listener: Some(listener),
            ..Self::command(program, args)
        }
    }

    /// A spec for a program that serves nothing (no listening socket): no binds, default
    /// limits, egress on, no extra environment.
    pub fn command(program: impl Into<PathBuf>, args: Vec<String>) -> Self {
        Self {
            readonly_binds: Vec::new(),
            writable_binds: Vec::new(),
            limits: None,
            egress: true,
            env: Vec::new(),
            program: program.into(),
            args,
            cwd: None,
            listener: None,
        }
    }
}

/// Why a sandbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This machine cannot sandbox (see [`Sandbox::probe`]).
    #[error("sandboxing unavailable: {0}")]
    Unavailable(#[from] SandboxUnavailable),
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A helper command (`ip`, `nft`) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Every slot index is taken.
    #[error("no free sandbox slot: all {max} are in use")]
    NoFreeSlot {
        /// [`SandboxConfig::max_slots`].
        max: u32,
    },
    /// The slot asked for egress but the sandbox was configured without.
    #[error("egress requested for a slot, but the sandbox was created with egress disabled")]
    EgressDisabled,
    /// The [`SlotSpec`] or [`SandboxConfig`] is unusable.
    #[error("invalid sandbox request: {0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn handles_can_move_between_threads() {
        send_sync::<Sandbox>();
        send::<Slot>();
        send_sync::<Error>();
    }
}
