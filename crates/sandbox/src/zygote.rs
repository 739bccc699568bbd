//! Zygote slots: a slot whose program is only a placeholder, so that a process forked
//! elsewhere (the Python zygote) can join the slot's confinement before it runs anything of the
//! user. [`Slot::join_handles`] hands out exactly what such a process needs, as descriptors the
//! zygote cannot widen: the slot's namespaces (bubblewrap made them: user, mount, pid, ipc,
//! uts, cgroup; the network namespace is the slot's own), its cgroups' `cgroup.procs`, and the
//! seccomp programs bubblewrap installs for regular slots. The joiner drops to
//! [`INSIDE_ID`](crate::INSIDE_ID) inside, clears its capabilities and sets `no_new_privs`.

use std::fs::{self, File};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::slot::{SECCOMP_CLONE3, SECCOMP_DENY, SECCOMP_ZYGOTE};
use crate::{Error, Sandbox, Slot, SlotSpec};

/// The placeholder a zygote slot runs: it only holds the namespaces open.
pub const HOLDER_PROGRAM: &str = "/usr/bin/sleep";
/// Its name in `/proc/<pid>/comm` once bubblewrap has executed it.
const HOLDER_COMM: &str = "sleep";
/// How long bubblewrap may take to set the slot up and start the placeholder.
const HOLDER_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Namespace files of the holder, in the order a joiner needs them.
pub const NAMESPACES: [&str; 7] = ["net", "user", "mnt", "ipc", "uts", "cgroup", "pid"];

/// Everything a process needs to take a slot's place (see the module docs). Each descriptor is
/// close-on-exec; send them (SCM_RIGHTS) to the process that joins.
#[derive(Debug)]
pub struct JoinHandles {
    /// Host pid of the placeholder.
    pub holder_pid: u32,
    /// `(name, /proc/<holder>/ns/<name>)` for each of [`NAMESPACES`].
    pub namespaces: Vec<(&'static str, File)>,
    /// The slot's `cgroup.procs` files, opened for writing (write `0` to join).
    pub cgroup_procs: Vec<File>,
    /// The compiled seccomp programs (`struct sock_filter[]`), in the order bubblewrap
    /// installs them.
    pub seccomp: Vec<File>,
}

impl SlotSpec {
    /// A spec for a zygote slot: the placeholder program and no listener (the joining process
    /// gets the socket directly). Binds, limits, egress are set as for a regular slot.
    pub fn holder() -> Self {
        Self::command(HOLDER_PROGRAM, vec!["infinity".to_owned()])
    }
}

impl Sandbox {
    /// The seccomp programs every slot's process runs under, opened from the run directory.
    pub fn seccomp_programs(&self) -> Result<Vec<File>, Error> {
        self.open_run_files(&[SECCOMP_DENY, SECCOMP_CLONE3])
    }

    /// The seccomp programs for the zygote itself: the slots' deny program without `setns`,
    /// and the clone3 program.
    pub fn zygote_seccomp_programs(&self) -> Result<Vec<File>, Error> {
        self.open_run_files(&[SECCOMP_ZYGOTE, SECCOMP_CLONE3])
    }

    fn open_run_files(&self, names: &[&str]) -> Result<Vec<File>, Error> {
        names
            .iter()
            .map(|n| {
                let p = self.run.run_dir.join(n);
                File::open(&p).map_err(|e| Error::io(format!("open {}", p.display()), e))
            })
            .collect()
    }
}

impl Slot {
    /// Wait (blocking, up to 10 s) until the slot's placeholder runs, then open its namespaces
    /// and the slot's cgroups (see [`JoinHandles`]). For slots made with [`SlotSpec::holder`].
    pub fn join_handles(&self, sandbox: &Sandbox) -> Result<JoinHandles, Error> {
        let bwrap = self
            .pid()
            .ok_or_else(|| Error::Invalid(format!("slot {} has no process", self.name())))?;
        let holder = wait_for_holder(bwrap)?;
        let mut namespaces = Vec::with_capacity(NAMESPACES.len());
        for ns in NAMESPACES {
            let p = PathBuf::from(format!("/proc/{holder}/ns/{ns}"));
            let f = File::open(&p).map_err(|e| Error::io(format!("open {}", p.display()), e))?;
            namespaces.push((ns, f));
        }
        let cgroup_procs = self
            .cgroups
            .as_ref()
            .map(crate::cgroup::SlotCgroups::open_procs)
            .transpose()
            .map_err(|e| Error::io(format!("open cgroup.procs of {}", self.name()), e))?
            .unwrap_or_default();
        Ok(JoinHandles {
            holder_pid: holder,
            namespaces,
            cgroup_procs,
            seccomp: sandbox.seccomp_programs()?,
        })
    }
}

/// The placeholder under bubblewrap (bubblewrap → its init in the slot → the program), once
/// it has been executed (its setup is complete).
fn wait_for_holder(bwrap: u32) -> Result<u32, Error> {
    let deadline = Instant::now() + HOLDER_START_TIMEOUT;
    loop {
        if let Some(pid) = first_child(bwrap).and_then(first_child)
            && fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == HOLDER_COMM)
        {
            return Ok(pid);
        }
        if !PathBuf::from(format!("/proc/{bwrap}")).exists() {
            return Err(Error::Invalid(format!(
                "bubblewrap (pid {bwrap}) exited before the slot was ready"
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::Invalid(format!(
                "the slot's placeholder did not start within {HOLDER_START_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_micros(300));
    }
}

fn first_child(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
