//! cgroup v1 groups for slots: `<controller mount>/fission-<run>/<index>` in the `memory`,
//! `pids`, `cpu` (and, when mounted, `cpuacct` and `freezer`) hierarchies.
//!
//! Processes join at slot creation (the first attach to a v1 hierarchy waits for an RCU grace
//! period, 8–15 ms; later ones in quick succession are ~0.03 ms), never on the request path.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys;

/// Where the v1 controllers we use are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMounts {
    /// `memory` controller mount point.
    pub memory: PathBuf,
    /// `pids` controller mount point.
    pub pids: PathBuf,
    /// `cpu` controller mount point.
    pub cpu: PathBuf,
    /// `cpuacct` controller mount point (often the same as `cpu`), if mounted.
    pub cpuacct: Option<PathBuf>,
    /// `freezer` controller mount point, if mounted (makes killing a slot race-free).
    pub freezer: Option<PathBuf>,
}

impl CgroupMounts {
    /// Read `/proc/self/mounts`. Err names the first missing controller.
    pub(crate) fn discover() -> Result<Self, String> {
        let mounts = fs::read_to_string("/proc/self/mounts")
            .map_err(|e| format!("cannot read /proc/self/mounts: {e}"))?;
        Self::parse(&mounts)
    }

    pub(crate) fn parse(mounts: &str) -> Result<Self, String> {
        let find = |name: &str| -> Option<PathBuf> {
            mounts.lines().find_map(|line| {
                let mut f = line.split_whitespace();
                let (_src, dir, fstype, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
                (fstype == "cgroup" && opts.split(',').any(|o| o == name))
                    .then(|| PathBuf::from(unescape_mount_path(dir)))
            })
        };
        let missing = |c: &str| {
            format!(
                "the cgroup v1 `{c}` controller is not mounted (this sandbox needs cgroup v1 memory, pids and cpu \
                 hierarchies, e.g. /sys/fs/cgroup/{c}; pure cgroup v2 hosts are not supported yet)"
            )
        };
        let memory = find("memory").ok_or_else(|| missing("memory"))?;
        let pids = find("pids").ok_or_else(|| missing("pids"))?;
        let cpu = find("cpu").ok_or_else(|| missing("cpu"))?;
        let cpuacct = find("cpuacct");
        let freezer = find("freezer");
        Ok(Self {
            memory,
            pids,
            cpu,
            cpuacct,
            freezer,
        })
    }

    /// Every distinct hierarchy we use.
    fn hierarchies(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = vec![&self.memory, &self.pids, &self.cpu];
        v.extend(self.cpuacct.as_deref());
        v.extend(self.freezer.as_deref());
        let mut out: Vec<&Path> = Vec::new();
        for p in v {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// `fission-<run>` in every hierarchy.
    pub(crate) fn run_dirs(&self, run_group: &str) -> Vec<PathBuf> {
        self.hierarchies()
            .into_iter()
            .map(|h| h.join(run_group))
            .collect()
    }

    /// Every directory directly in a hierarchy root whose name starts with `prefix`.
    pub(crate) fn list_run_groups(&self, prefix: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for h in self.hierarchies() {
            if let Ok(rd) = fs::read_dir(h) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with(prefix) && e.path().is_dir() {
                        out.push(e.path());
                    }
                }
            }
        }
        out
    }
}

fn unescape_mount_path(s: &str) -> String {
    // /proc/mounts escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The groups of one slot.
#[derive(Debug)]
pub(crate) struct SlotCgroups {
    pub(crate) memory: PathBuf,
    pub(crate) pids: PathBuf,
    pub(crate) cpu: PathBuf,
    pub(crate) cpuacct: Option<PathBuf>,
    pub(crate) freezer: Option<PathBuf>,
    /// Every distinct directory (creation order).
    pub(crate) all: Vec<PathBuf>,
}

/// Limits as written to the v1 files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CgroupLimits {
    pub(crate) memory_bytes: Option<u64>,
    pub(crate) cpu_millis: Option<u64>,
    pub(crate) pids: u64,
}

/// Smallest `pids.max` we set: bubblewrap's monitor, the sandbox init and the program.
pub(crate) const MIN_PIDS: u64 = 4;

/// CFS period used for CPU quotas.
const CFS_PERIOD_US: u64 = 100_000;

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("write {value:?} to {}: {e}", path.display()),
        )
    })
}

impl SlotCgroups {
    /// Create the slot's groups under `run_group` and apply `limits`. On error, what was
    /// created is removed again.
    pub(crate) fn create(
        mounts: &CgroupMounts,
        run_group: &str,
        slot: &str,
        limits: CgroupLimits,
    ) -> io::Result<Self> {
        let dir = |h: &Path| h.join(run_group).join(slot);
        let mut cg = SlotCgroups {
            memory: dir(&mounts.memory),
            pids: dir(&mounts.pids),
            cpu: dir(&mounts.cpu),
            cpuacct: mounts.cpuacct.as_deref().map(dir),
            freezer: mounts.freezer.as_deref().map(dir),
            all: Vec::new(),
        };
        let result = (|| {
            for h in mounts.hierarchies() {
                let d = dir(h);
                match fs::create_dir(&d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("mkdir {}: {e}", d.display()),
                        ));
                    }
                }
                cg.all.push(d);
            }
            cg.apply(limits)
        })();
        match result {
            Ok(()) => Ok(cg),
            Err(e) => {
                let _ = cg.remove();
                Err(e)
            }
        }
    }

    fn apply(&self, limits: CgroupLimits) -> io::Result<()> {
        if let Some(bytes) = limits.memory_bytes {
            write(
                &self.memory.join("memory.limit_in_bytes"),
                &bytes.to_string(),
            )?;
            // With swap accounting, cap memory+swap too so the limit cannot be dodged by
            // swapping out.
            let memsw = self.memory.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &bytes.to_string())?;
            }
        }
        // bubblewrap itself needs a few tasks (its monitor and the sandbox's init).
        write(
            &self.pids.join("pids.max"),
            &limits.pids.max(MIN_PIDS).to_string(),
        )?;
        match limits.cpu_millis {
            Some(m) => {
                write(
                    &self.cpu.join("cpu.cfs_period_us"),
                    &CFS_PERIOD_US.to_string(),
                )?;
                // millicores → µs of CPU per period; the kernel's minimum quota is 1 ms.
                let quota = (m.saturating_mul(CFS_PERIOD_US) / 1000).max(1000);
                write(&self.cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
            None => write(&self.cpu.join("cpu.cfs_quota_us"), "-1")?,
        }
        Ok(())
    }

    /// Open every `cgroup.procs` for writing (the child joins by writing `0`).
    pub(crate) fn open_procs(&self) -> io::Result<Vec<fs::File>> {
        self.all
            .iter()
            .map(|d| {
                let p = d.join("cgroup.procs");
                fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", p.display())))
            })
            .collect()
    }

    /// Kill every process of the slot; see [`kill_group`].
    pub(crate) fn kill_all(&self, timeout: Duration) -> io::Result<()> {
        kill_group(&self.pids, self.freezer.as_deref(), timeout)
    }

    /// Whether the memory controller OOM-killed a process of this slot.
    pub(crate) fn oom_killed(&self) -> bool {
        let oom = read_key(&self.memory.join("memory.oom_control"), "oom_kill").unwrap_or(0);
        oom > 0
    }

    /// Remove all directories (the groups must be empty; retried briefly while exiting tasks
    /// are released).
    pub(crate) fn remove(&mut self) -> io::Result<()> {
        let mut first_err = None;
        for d in self.all.drain(..).rev() {
            if let Err(e) = rmdir_retry(&d, Duration::from_secs(2)) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// Read `key value` lines (memory.oom_control, memory.stat, cpu.stat) and return `key`'s value.
pub(crate) fn read_key(path: &Path, key: &str) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key)
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

/// Read a file holding one number.
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The process ids listed in `<dir>/cgroup.procs`.
pub(crate) fn procs(dir: &Path) -> io::Result<Vec<i32>> {
    let s = fs::read_to_string(dir.join("cgroup.procs"))?;
    Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Kill every process in the group `pids_dir` (any hierarchy's directory of the group works)
/// and wait until it is empty.
///
/// With a freezer group the processes are frozen first: frozen tasks cannot fork or exit, so
/// the list we read is complete and no listed pid can be recycled by an unrelated process
/// before our SIGKILL lands; thawing then lets them all die. Without a freezer we kill in
/// rounds until the group stays empty.
pub(crate) fn kill_group(
    pids_dir: &Path,
    freezer_dir: Option<&Path>,
    timeout: Duration,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut round = 0u32;
    loop {
        // Freeze for every round: between reading the list and signalling, no listed process
        // can exit (and have its pid reused) or fork.
        if let Some(f) = freezer_dir {
            let _ = freeze(f, Instant::now() + Duration::from_millis(200));
        }
        let listed = procs(pids_dir);
        if let Ok(pids) = &listed {
            for pid in pids {
                let _ = sys::kill(*pid, libc::SIGKILL);
            }
        }
        // Thaw whatever state the freeze reached (FROZEN or still FREEZING): frozen tasks
        // only act on their SIGKILL once thawed.
        if let Some(f) = freezer_dir {
            let _ = write(&f.join("freezer.state"), "THAWED");
        }
        let pids = match listed {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if pids.is_empty() {
            return Ok(());
        }
        round += 1;
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "processes still alive in {} after SIGKILL: {pids:?}",
                    pids_dir.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(if round < 10 { 1 } else { 10 }));
    }
}

/// Freeze the group; true once the kernel reports FROZEN.
fn freeze(dir: &Path, deadline: Instant) -> io::Result<bool> {
    let state = dir.join("freezer.state");
    write(&state, "FROZEN")?;
    loop {
        match fs::read_to_string(&state) {
            Ok(s) if s.trim() == "FROZEN" => return Ok(true),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// `rmdir` a cgroup directory, retrying while it is busy. Missing counts as removed.
pub(crate) fn rmdir_retry(dir: &Path, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("rmdir {}: {e}", dir.display()),
                ));
            }
        }
    }
}

/// Remove a whole run group (`fission-<run>`): kill everything in each slot group, remove
/// the slot groups, then the run group. Returns how many slot groups were removed.
pub(crate) fn remove_run_group(mounts: &CgroupMounts, run_group: &str) -> io::Result<usize> {
    let mut removed = 0;
    let mut first_err: Option<io::Error> = None;
    // Kill first, via the pids hierarchy (with the freezer when there is one).
    let pids_run = mounts.pids.join(run_group);
    if let Ok(rd) = fs::read_dir(&pids_run) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                let name = e.file_name();
                let freezer = mounts
                    .freezer
                    .as_ref()
                    .map(|f| f.join(run_group).join(&name));
                let freezer = freezer.filter(|f| f.is_dir());
                if let Err(err) = kill_group(&e.path(), freezer.as_deref(), Duration::from_secs(5))
                {
                    first_err.get_or_insert(err);
                }
            }
        }
    }
    // Processes sitting directly in the run group (should not happen) die too.
    if let Err(err) = kill_group(&pids_run, None, Duration::from_secs(5))
        && err.kind() != io::ErrorKind::NotFound
    {
        first_err.get_or_insert(err);
    }
    for run_dir in mounts.run_dirs(run_group) {
        if let Ok(rd) = fs::read_dir(&run_dir) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    match rmdir_retry(&e.path(), Duration::from_secs(2)) {
                        Ok(()) => {
                            if run_dir.starts_with(&mounts.pids) {
                                removed += 1;
                            }
                        }
                        Err(err) => {
                            first_err.get_or_insert(err);
                        }
                    }
                }
            }
        }
        if let Err(err) = rmdir_retry(&run_dir, Duration::from_secs(2)) {
            first_err.get_or_insert(err);
        }
    }
    match first_err {
        None => Ok(removed),
        Some(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_split_and_comounted_v1_controllers() {
        let split = "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                     cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0\n\
                     cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
                     cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0\n\
                     cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        let m = CgroupMounts::parse(split).expect("parse");
        assert_eq!(m.cpu, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(m.cpuacct, Some(PathBuf::from("/sys/fs/cgroup/cpuacct")));
        assert_eq!(m.freezer, None);
        assert_eq!(m.hierarchies().len(), 4);

        let co = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n\
                  cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
                  cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n";
        let m = CgroupMounts::parse(co).expect("parse");
        assert_eq!(m.cpu, m.cpuacct.clone().expect("cpuacct"));
        assert_eq!(m.hierarchies().len(), 3);
    }

    #[test]
    fn names_the_missing_controller() {
        let only_v2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        let err = CgroupMounts::parse(only_v2).expect_err("no v1");
        assert!(err.contains("`memory`"), "{err}");
    }

    #[test]
    fn reads_keyed_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("memory.oom_control");
        fs::write(&p, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").expect("write");
        assert_eq!(read_key(&p, "oom_kill"), Some(3));
        assert_eq!(read_key(&p, "missing"), None);
    }
}
