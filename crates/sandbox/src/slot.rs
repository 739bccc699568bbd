//! [`Slot`]: one sandboxed runtime instance and everything the host holds for it.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cgroup::{self, CgroupLimits, SlotCgroups};
use crate::net::{self, SlotNet};
use crate::sandbox::{IF_PREFIX, PREFIX, Run, check_reachable};
use crate::sys::ChildSetup;
use crate::{Error, INSIDE_ID, LISTEN_FD, SlotSpec};

/// Hostname inside every slot.
pub(crate) const HOSTNAME: &str = "fission";
/// File names of the compiled seccomp programs in the run directory.
pub(crate) const SECCOMP_DENY: &str = "seccomp-deny.bpf";
pub(crate) const SECCOMP_CLONE3: &str = "seccomp-clone3.bpf";
pub(crate) const SECCOMP_ZYGOTE: &str = "seccomp-zygote.bpf";
/// Most writable binds of a slot.
const MAX_WRITABLE_BINDS: usize = 4;
/// Name of writable bind `i`'s mount point in the slot's host directory.
fn writable_mount_point(slot_dir: &Path, i: usize) -> PathBuf {
    slot_dir.join(format!("bind-{i}"))
}
/// Inside paths the sandbox owns; binds may not replace them.
const RESERVED: [&str; 6] = ["/userfunc", "/secrets", "/configs", "/tmp", "/proc", "/dev"];
/// Host `/etc` entries made visible (read-only) when they exist.
const HOST_ETC: [&str; 13] = [
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/protocols",
    "/etc/services",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ld.so.cache",
    "/etc/mime.types",
    "/etc/alternatives",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
];

/// Read-only `/usr` plus `/bin`, `/lib*`, `/sbin` as on the host (links on merged-/usr
/// systems, read-only binds otherwise).
pub(crate) fn root_fs_args() -> Vec<String> {
    let mut a: Vec<String> = vec!["--ro-bind".into(), "/usr".into(), "/usr".into()];
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        let Ok(meta) = fs::symlink_metadata(top) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let Ok(target) = fs::read_link(top) {
                a.extend(["--symlink".into(), target.display().to_string(), top.into()]);
            }
        } else if meta.is_dir() {
            a.extend(["--ro-bind".into(), top.into(), top.into()]);
        }
    }
    a
}

/// The target of a host `/etc` entry that is a symbolic link into `/usr` (which the slot sees
/// as on the host), to recreate the link inside instead of binding the file it points to.
/// It matters for `/etc/localtime`: ICU (Node's `Date`) names the local time zone from the
/// link target, and for a plain file it compares the file with every file under
/// `/usr/share/zoneinfo` instead — 5–15 ms on a runtime's first date formatting.
fn etc_symlink_into_usr(path: &str) -> Option<String> {
    use std::path::Component;
    let target = fs::read_link(path).ok()?;
    // The target as the link spells it, made absolute without following links.
    let mut lexical = PathBuf::new();
    for c in Path::new(path).parent()?.join(&target).components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            c => lexical.push(c),
        }
    }
    // Inside, the same link must lead to the same file: both what it names and what it
    // resolves to have to be under /usr.
    let resolved = fs::canonicalize(&lexical).ok()?;
    (lexical.starts_with("/usr/") && resolved.starts_with("/usr/") && resolved.is_file())
        .then(|| target.display().to_string())
}

/// Usage figures of a slot's cgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotStats {
    /// `memory.usage_in_bytes` (includes page cache and tmpfs charged to the slot).
    pub memory_bytes: u64,
    /// Anonymous memory (`rss` in `memory.stat`).
    pub rss_bytes: u64,
    /// `memory.max_usage_in_bytes`.
    pub memory_peak_bytes: u64,
    /// `memory.failcnt`: how often the limit was hit.
    pub memory_failcnt: u64,
    /// OOM kills in the slot (`oom_kill` in `memory.oom_control`).
    pub oom_kills: u64,
    /// CPU time used, nanoseconds (`cpuacct.usage`), when the cpuacct controller is mounted.
    pub cpu_usage_ns: Option<u64>,
    /// Periods in which the CPU quota throttled the slot (`nr_throttled` in `cpu.stat`).
    pub cpu_throttled_periods: u64,
    /// Tasks (processes and threads) now (`pids.current`).
    pub pids: u64,
}

/// One sandboxed runtime instance. Dropping it destroys it (best effort, blocking); prefer
/// [`destroy`](Slot::destroy) from `spawn_blocking` to see errors.
#[derive(Debug)]
pub struct Slot {
    run: Arc<Run>,
    index: u32,
    name: String,
    dir: PathBuf,
    userfunc: PathBuf,
    host_id: u32,
    pub(crate) cgroups: Option<SlotCgroups>,
    net: Option<SlotNet>,
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
    created_in: Duration,
    torn_down: bool,
}

impl Slot {
    /// Machine-wide slot index (also picks the host uid and the /30).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// `fission-<run>-<index>`: the network namespace and slot directory name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host directory seen read-only at `/userfunc` inside. Place code here (files must be
    /// readable by "other", or owned by [`host_uid`](Self::host_uid)); it shows up inside at
    /// once.
    pub fn userfunc_dir(&self) -> &Path {
        &self.userfunc
    }

    /// The slot's host directory (`userfunc/`, `secrets/`, `configs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Host uid (and gid) the slot's processes run as underneath.
    pub fn host_uid(&self) -> u32 {
        self.host_id
    }

    /// Host pid of bubblewrap (the slot's top process), while known.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The running program (bubblewrap, which exits with the runtime's status). stdout and
    /// stderr are piped (bubblewrap's own setup errors arrive on stderr too); stdin is null.
    /// `None` after [`take_child`](Self::take_child).
    pub fn child(&mut self) -> Option<&mut tokio::process::Child> {
        self.child.as_mut()
    }

    /// Take the child to wait on it elsewhere; the slot still kills and cleans up.
    pub fn take_child(&mut self) -> Option<tokio::process::Child> {
        self.child.take()
    }

    /// The network namespace name (`/run/netns/<name>`).
    pub fn netns(&self) -> Option<&str> {
        self.net.as_ref().map(|n| n.netns.as_str())
    }

    /// (host end, slot end) addresses of the veth pair, when the slot has egress.
    pub fn egress_addrs(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        self.net.as_ref().and_then(|n| n.addrs)
    }

    /// Host name of the veth's host end, when the slot has egress.
    pub fn veth(&self) -> Option<&str> {
        self.net.as_ref().and_then(|n| n.veth.as_deref())
    }

    /// cgroup directories of the slot (one per v1 hierarchy).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroups
            .as_ref()
            .map(|c| c.all.clone())
            .unwrap_or_default()
    }

    /// How long [`Sandbox::create_slot`](crate::Sandbox::create_slot) took.
    pub fn created_in(&self) -> Duration {
        self.created_in
    }

    /// Whether the kernel OOM-killed a process of this slot (memory limit reached). Check it
    /// when the child exits with SIGKILL to report "out of memory".
    pub fn oom_killed(&self) -> bool {
        self.cgroups.as_ref().is_some_and(SlotCgroups::oom_killed)
    }

    /// How often a fork or clone in this slot failed because the pids limit was reached
    /// (`max` in `pids.events`): check it when a build fails, to say it ran out of processes.
    pub fn pids_limit_hits(&self) -> u64 {
        self.cgroups
            .as_ref()
            .and_then(|cg| cgroup::read_key(&cg.pids.join("pids.events"), "max"))
            .unwrap_or(0)
    }

    /// Current usage.
    pub fn stats(&self) -> SlotStats {
        let Some(cg) = &self.cgroups else {
            return SlotStats::default();
        };
        let mem = |f: &str| cgroup::read_u64(&cg.memory.join(f)).unwrap_or(0);
        SlotStats {
            memory_bytes: mem("memory.usage_in_bytes"),
            rss_bytes: cgroup::read_key(&cg.memory.join("memory.stat"), "rss").unwrap_or(0),
            memory_peak_bytes: mem("memory.max_usage_in_bytes"),
            memory_failcnt: mem("memory.failcnt"),
            oom_kills: cgroup::read_key(&cg.memory.join("memory.oom_control"), "oom_kill")
                .unwrap_or(0),
            cpu_usage_ns: cg
                .cpuacct
                .as_ref()
                .and_then(|d| cgroup::read_u64(&d.join("cpuacct.usage"))),
            cpu_throttled_periods: cgroup::read_key(&cg.cpu.join("cpu.stat"), "nr_throttled")
                .unwrap_or(0),
            pids: cgroup::read_u64(&cg.pids.join("pids.current")).unwrap_or(0),
        }
    }

    /// Kill every process of the slot (the whole cgroup) and wait until none is left. The
    /// slot's resources stay until [`destroy`](Self::destroy). Blocking (a few ms).
    pub fn kill(&self) -> Result<(), Error> {
        match &self.cgroups {
            Some(cg) => cg
                .kill_all(Duration::from_secs(5))
                .map_err(|e| Error::io(format!("kill slot {}", self.name), e)),
            None => Ok(()),
        }
    }

    /// Kill the slot's processes and remove its cgroups, veth, network namespace, directory
    /// and index claim. Blocking.
    pub fn destroy(mut self) -> Result<(), Error> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), Error> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut first: Option<Error> = None;
        if let Some(cg) = &mut self.cgroups
            && let Err(e) = cg.kill_all(Duration::from_secs(5))
        {
            first.get_or_insert(Error::io(format!("kill slot {}", self.name), e));
        }
        // Reap bubblewrap if we still own it (it is dead or dying now).
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
        if let Some(cg) = &mut self.cgroups
            && let Err(e) = cg.remove()
        {
            first.get_or_insert(Error::io(format!("remove cgroups of {}", self.name), e));
        }
        if let Some(n) = &self.net
            && let Err(e) = net::destroy_slot_net(&self.run.tools, n)
        {
            first.get_or_insert(e);
        }
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            first.get_or_insert(Error::io(format!("remove {}", self.dir.display()), e));
        }
        self.run.release_index(self.index);
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(slot = %self.name, error = %e, "sandbox: slot cleanup failed");
        }
    }
}

fn validate(spec: &SlotSpec) -> Result<(), Error> {
    if !spec.program.is_absolute() {
        return Err(Error::Invalid(format!(
            "program {} is not an absolute path",
            spec.program.display()
        )));
    }
    if spec.writable_binds.len() > MAX_WRITABLE_BINDS {
        return Err(Error::Invalid(format!(
            "{} writable binds; at most {MAX_WRITABLE_BINDS}",
            spec.writable_binds.len()
        )));
    }
    for (i, (host, inside)) in spec
        .readonly_binds
        .iter()
        .chain(&spec.writable_binds)
        .enumerate()
    {
        if !inside.is_absolute() || !host.is_absolute() {
            return Err(Error::Invalid(format!(
                "bind {} -> {}: both paths must be absolute",
                host.display(),
                inside.display()
            )));
        }
        if inside == Path::new("/") || RESERVED.iter().any(|r| inside.starts_with(r)) {
            return Err(Error::Invalid(format!(
                "bind target {} is reserved by the sandbox",
                inside.display()
            )));
        }
        // Writable binds are mounted by the child while still root: their ancestors may be
        // private.
        if i < spec.readonly_binds.len() {
            check_reachable(host).map_err(Error::Invalid)?;
        }
    }
    for (host, _) in &spec.writable_binds {
        let meta = fs::symlink_metadata(host)
            .map_err(|e| Error::Invalid(format!("writable bind {}: {e}", host.display())))?;
        if !meta.is_dir() {
            return Err(Error::Invalid(format!(
                "writable bind {} is not a directory",
                host.display()
            )));
        }
    }
    if let Some(cwd) = &spec.cwd
        && !cwd.is_absolute()
    {
        return Err(Error::Invalid(format!(
            "cwd {} is not absolute",
            cwd.display()
        )));
    }
    Ok(())
}

/// Slot resources created so far; removed again if creation fails.
struct Partial<'a> {
    run: &'a Run,
    index: u32,
    dir: PathBuf,
    pub(crate) cgroups: Option<SlotCgroups>,
    net: Option<SlotNet>,
    armed: bool,
}

impl Drop for Partial<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(cg) = &mut self.cgroups {
            let _ = cg.kill_all(Duration::from_secs(2));
            let _ = cg.remove();
        }
        if let Some(n) = &self.net {
            let _ = net::destroy_slot_net(&self.run.tools, n);
        }
        let _ = fs::remove_dir_all(&self.dir);
        self.run.release_index(self.index);
    }
}

pub(crate) fn create(run: &Arc<Run>, spec: SlotSpec) -> Result<Slot, Error> {
    let started = Instant::now();
    validate(&spec)?;
    if spec.egress && !run.config.egress {
        return Err(Error::EgressDisabled);
    }
    let limits = spec.limits.unwrap_or(run.config.default_limits);
    let index = run.claim_index()?;
    let name = format!("{PREFIX}{}-{index}", run.id);
    let host_id = run.config.id_base + index;
    let mut partial = Partial {
        run,
        index,
        dir: run.slots_dir.join(&name),
        cgroups: None,
        net: None,
        armed: true,
    };

    // Host directories, owned by root, readable (not writable) by the slot.
    let dir = partial.dir.clone();
    let userfunc = dir.join("userfunc");
    for d in [&dir, &userfunc, &dir.join("secrets"), &dir.join("configs")] {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(d)
            .map_err(|e| Error::io(format!("mkdir {}", d.display()), e))?;
        fs::set_permissions(d, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(format!("chmod {}", d.display()), e))?;
    }

    let cg_limits = CgroupLimits {
        memory_bytes: limits.memory_bytes,
        cpu_millis: limits.cpu_millis,
        pids: limits.pids,
    };
    partial.cgroups = Some(
        SlotCgroups::create(
            &run.caps.cgroups,
            &run.group(),
            &index.to_string(),
            cg_limits,
        )
        .map_err(|e| Error::io(format!("create cgroups for {name}"), e))?,
    );

    let veth_name = format!("{IF_PREFIX}{}{index:x}", run.id);
    let (host_ip, slot_ip) = net::slot_addrs(run.config.subnet_base, index);
    let veth = spec
        .egress
        .then_some((veth_name.as_str(), host_ip, slot_ip));
    partial.net = Some(net::create_slot_net(&run.tools, &name, veth)?);

    let netns_path = Path::new("/run/netns").join(&name);
    let netns = fs::File::open(&netns_path)
        .map_err(|e| Error::io(format!("open {}", netns_path.display()), e))?;
    let open_run_file = |n: &str| {
        let p = run.run_dir.join(n);
        fs::File::open(&p).map_err(|e| Error::io(format!("open {}", p.display()), e))
    };
    let seccomp_deny = open_run_file(SECCOMP_DENY)?;
    let seccomp_clone3 = open_run_file(SECCOMP_CLONE3)?;
    let procs = partial
        .cgroups
        .as_ref()
        .map(SlotCgroups::open_procs)
        .transpose()
        .map_err(|e| Error::io(format!("open cgroup.procs for {name}"), e))?
        .unwrap_or_default();

    // Hand the writable trees to the slot's uid: it can write there and nowhere else. The
    // child, still root, bind-mounts each onto a mount point in the slot directory inside a
    // mount namespace of its own (gone with the slot's processes, nothing to undo on the
    // host), so bubblewrap binds it from a path the slot's uid can reach even when the tree
    // sits under a private directory (a data directory in /root).
    let mut bind_mounts = Vec::with_capacity(spec.writable_binds.len());
    for (i, (host, _)) in spec.writable_binds.iter().enumerate() {
        chown_tree(host, host_id)
            .map_err(|e| Error::io(format!("give {} to the slot", host.display()), e))?;
        let point = writable_mount_point(&dir, i);
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&point)
            .map_err(|e| Error::io(format!("mkdir {}", point.display()), e))?;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| Error::Invalid(format!("{} contains a NUL byte", p.display())))
        };
        bind_mounts.push((c(host)?, c(&point)?));
    }

    let args = bwrap_args(run, &spec, &dir, limits.tmp_bytes);
    let mut cmd = tokio::process::Command::new(&run.caps.bwrap);
    cmd.args(&args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/tmp")
        .env("LANG", "C.UTF-8")
        .envs(
            spec.env
                .iter()
                .filter(|(k, _)| k != "FISSION_LISTEN_FD")
                .map(|(k, v)| (k, v)),
        )
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let mut fd_map = vec![
        (seccomp_deny.as_raw_fd(), LISTEN_FD + 1),
        (seccomp_clone3.as_raw_fd(), LISTEN_FD + 2),
    ];
    if let Some(listener) = &spec.listener {
        cmd.env("FISSION_LISTEN_FD", LISTEN_FD.to_string());
        fd_map.push((listener.as_raw_fd(), LISTEN_FD));
    }
    ChildSetup {
        cgroup_procs: procs.iter().map(AsRawFd::as_raw_fd).collect(),
        netns: netns.as_raw_fd(),
        fd_map,
        bind_mounts,
        uid: host_id,
        gid: host_id,
    }
    .install(&mut cmd);

    let child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("start bubblewrap for {name}"), e))?;
    // The child holds the socket now; ours must go so connections are refused once it dies.
    drop(spec.listener);
    drop((procs, netns, seccomp_deny, seccomp_clone3));

    partial.armed = false;
    let slot = Slot {
        run: Arc::clone(run),
        index,
        name,
        dir,
        userfunc,
        host_id,
        cgroups: partial.cgroups.take(),
        net: partial.net.take(),
        pid: child.id(),
        child: Some(child),
        created_in: started.elapsed(),
        torn_down: false,
    };
    tracing::debug!(slot = %slot.name, ms = slot.created_in.as_secs_f64() * 1e3, "sandbox: slot created");
    Ok(slot)
}

/// `lchown` every entry of the tree at `root` (links themselves, never what they point to;
/// no descent through links) to `id:id`.
fn chown_tree(root: &Path, id: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(root, Some(id), Some(id))?;
    if fs::symlink_metadata(root)?.is_dir() {
        for entry in fs::read_dir(root)? {
            chown_tree(&entry?.path(), id)?;
        }
    }
    Ok(())
}

fn bwrap_args(run: &Run, spec: &SlotSpec, slot_dir: &Path, tmp_bytes: u64) -> Vec<String> {
    let mut a: Vec<String> = Vec::with_capacity(96);
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| (*s).to_owned()));
    push(&[
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        HOSTNAME,
    ]);
    let id = INSIDE_ID.to_string();
    push(&["--uid", &id, "--gid", &id]);
    a.extend(root_fs_args());
    let etc = run.run_dir.join("etc");
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| (*s).to_owned()));
    push(&["--dir", "/etc"]);
    for f in ["passwd", "group", "hosts"] {
        let src = etc.join(f);
        push(&[
            "--ro-bind",
            &src.display().to_string(),
            &format!("/etc/{f}"),
        ]);
    }
    for f in HOST_ETC {
        match etc_symlink_into_usr(f) {
            Some(target) => push(&["--symlink", &target, f]),
            None => push(&["--ro-bind-try", f, f]),
        }
    }
    push(&["--proc", "/proc", "--dev", "/dev"]);
    let size = tmp_bytes.max(4096).to_string();
    push(&["--size", &size, "--perms", "1777", "--tmpfs", "/tmp"]);
    push(&["--size", &size, "--perms", "1777", "--tmpfs", "/dev/shm"]);
    push(&["--dir", "/var", "--symlink", "../tmp", "/var/tmp"]);
    for sub in ["userfunc", "secrets", "configs"] {
        let src = slot_dir.join(sub);
        push(&["--ro-bind", &src.display().to_string(), &format!("/{sub}")]);
    }
    for (host, inside) in &spec.readonly_binds {
        push(&[
            "--ro-bind",
            &host.display().to_string(),
            &inside.display().to_string(),
        ]);
    }
    for (i, (_, inside)) in spec.writable_binds.iter().enumerate() {
        let point = writable_mount_point(slot_dir, i).display().to_string();
        push(&["--bind", &point, &inside.display().to_string()]);
    }
    // Everything is in place: the root and /dev (both tmpfs owned by the slot's uid) become
    // read-only; /tmp and /dev/shm are separate mounts and stay writable.
    push(&["--remount-ro", "/dev", "--remount-ro", "/"]);
    let fd1 = (LISTEN_FD + 1).to_string();
    let fd2 = (LISTEN_FD + 2).to_string();
    push(&["--add-seccomp-fd", &fd1, "--add-seccomp-fd", &fd2]);
    let cwd = spec
        .cwd
        .as_deref()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string();
    push(&["--chdir", &cwd, "--", &spec.program.display().to_string()]);
    a.extend(spec.args.iter().cloned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etc_links_into_usr_are_recreated_and_others_are_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = |name: &str, target: &str| {
            let p = dir.path().join(name);
            std::os::unix::fs::symlink(target, &p).expect("symlink");
            p.display().to_string()
        };
        // A file every Linux has under /usr, standing in for a zoneinfo file.
        let usr_file = ["/usr/share/zoneinfo/Etc/UTC", "/usr/bin/env"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("a file under /usr");
        let to_usr = link("localtime", usr_file);
        assert_eq!(etc_symlink_into_usr(&to_usr).as_deref(), Some(usr_file));
        // Relative spellings count by where they lead, and keep their spelling.
        let ups = "../".repeat(dir.path().components().count());
        let relative = format!("{ups}{}", usr_file.trim_start_matches('/'));
        let to_usr_rel = link("localtime-rel", &relative);
        assert_eq!(etc_symlink_into_usr(&to_usr_rel), Some(relative));
        // Links out of /usr, dangling links and plain files are bound instead.
        let outside = dir.path().join("zone");
        fs::write(&outside, b"TZif").expect("write");
        assert_eq!(
            etc_symlink_into_usr(&link("out", &outside.display().to_string())),
            None
        );
        assert_eq!(
            etc_symlink_into_usr(&link("dangling", "/usr/no/such/zone")),
            None
        );
        assert_eq!(etc_symlink_into_usr(&outside.display().to_string()), None);
    }
}
