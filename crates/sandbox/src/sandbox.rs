//! [`Sandbox`]: one per server run. Owns the run id, its lock, generated files, the run's
//! cgroup parents and firewall table; hands out slots.

use std::fs;
use std::io::{self, Read as _};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cgroup;
use crate::cleanup::{self, CleanupReport};
use crate::net::{self, NetTools};
use crate::probe::{self, Capabilities, SandboxUnavailable};
use crate::slot::{self, Slot};
use crate::{Error, INSIDE_ID, SandboxConfig, SlotSpec, seccomp};

/// Prefix of every host-side name (cgroups, netns, tables, directories).
pub(crate) const PREFIX: &str = "fission-";
/// Prefix of host veth names (interface names are limited to 15 bytes).
pub(crate) const IF_PREFIX: &str = "fsn";
/// Length of a run id (lowercase hex).
pub(crate) const RUN_ID_LEN: usize = 6;

/// Creates and tracks sandboxed slots. Cheap to clone (shared state); the run's host-side
/// objects (firewall table, cgroup parents, generated files, run lock) are removed when the
/// last clone and the last [`Slot`] are gone.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub(crate) run: Arc<Run>,
}

/// State shared by the sandbox and its slots.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) id: String,
    pub(crate) config: SandboxConfig,
    pub(crate) caps: Capabilities,
    pub(crate) tools: NetTools,
    pub(crate) slots_dir: PathBuf,
    pub(crate) run_dir: PathBuf,
    pub(crate) claims_dir: PathBuf,
    pub(crate) lock_path: PathBuf,
    /// Held (flock) for the life of the run.
    _lock: fs::File,
    pub(crate) pool_cidr: String,
    next_index: AtomicU32,
}

impl Run {
    /// `fission-<run>`: cgroup run group and nftables table.
    pub(crate) fn group(&self) -> String {
        format!("{PREFIX}{}", self.id)
    }

    /// Claim a machine-wide free slot index (`claims/<index>` created exclusively).
    pub(crate) fn claim_index(&self) -> Result<u32, Error> {
        let max = self.config.max_slots;
        for _ in 0..max {
            let i = self.next_index.fetch_add(1, Ordering::Relaxed) % max;
            let path = self.claims_dir.join(i.to_string());
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write as _;
                    f.write_all(self.id.as_bytes())
                        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
                    return Ok(i);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("create {}", path.display()), e)),
            }
        }
        Err(Error::NoFreeSlot { max })
    }

    pub(crate) fn release_index(&self, index: u32) {
        let path = self.claims_dir.join(index.to_string());
        // Only ever remove our own claim.
        if fs::read_to_string(&path)
            .map(|s| s.trim() == self.id)
            .unwrap_or(false)
        {
            let _ = fs::remove_file(&path);
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(nft) = &self.tools.nft
            && self.config.egress
            && let Err(e) = net::delete_table(nft, &self.group())
        {
            tracing::warn!(error = %e, "sandbox: removing the firewall table failed");
        }
        if let Err(e) = cgroup::remove_run_group(&self.caps.cgroups, &self.group()) {
            tracing::warn!(error = %e, "sandbox: removing the run's cgroups failed");
        }
        let _ = fs::remove_dir_all(&self.run_dir);
        let _ = fs::remove_file(&self.lock_path);
        // The lock itself goes with the file descriptor.
    }
}

fn mkdir_all(path: &Path, mode: u32) -> Result<(), Error> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io(format!("mkdir {}", path.display()), e))
}

/// Every ancestor of `path` (and `path`) must be searchable by "other": bubblewrap resolves
/// bind sources as the slot's unprivileged uid.
pub(crate) fn check_reachable(path: &Path) -> Result<(), String> {
    let mut cur = PathBuf::new();
    for comp in path.components() {
        cur.push(comp);
        let meta = fs::metadata(&cur).map_err(|e| format!("{}: {e}", cur.display()))?;
        if meta.is_dir() && meta.permissions().mode() & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:o}) is not searchable by other users; sandboxed runtimes run as unprivileged uids and cannot reach {}",
                cur.display(),
                meta.permissions().mode() & 0o7777,
                path.display()
            ));
        }
    }
    Ok(())
}

fn random_run_id() -> Result<String, Error> {
    let mut b = [0u8; RUN_ID_LEN / 2];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("read /dev/urandom", e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The pool as `a.b.c.d/len`, checking alignment.
fn pool_cidr(base: Ipv4Addr, max_slots: u32) -> Result<String, Error> {
    let addrs = u64::from(max_slots.max(1)) * 4;
    let bits = 64 - (addrs - 1).leading_zeros(); // ceil(log2)
    if bits > 24 {
        return Err(Error::Invalid(format!(
            "max_slots {max_slots} needs more than a /8 of addresses"
        )));
    }
    let len = 32 - bits;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    if u32::from(base) & !mask != 0 {
        return Err(Error::Invalid(format!(
            "subnet_base {base} is not aligned to /{len} (needed for {max_slots} slots)"
        )));
    }
    Ok(format!("{base}/{len}"))
}

impl Sandbox {
    /// Can this machine sandbox, with default settings? `Err` says exactly why not (not root,
    /// which tool is missing, user namespaces off, cgroup controllers missing, or what a
    /// trial sandbox printed).
    pub fn probe() -> Result<Capabilities, SandboxUnavailable> {
        probe::probe(&SandboxConfig::default())
    }

    /// Probe (with `config`'s bubblewrap and ids), then set up a new run: lock, generated
    /// `/etc` files, seccomp programs, cgroup parents and — with egress — IPv4 forwarding and
    /// the run's nftables table. Blocking (tens of ms).
    pub fn new(config: SandboxConfig) -> Result<Self, Error> {
        let caps = probe::probe(&config)?;
        if config.max_slots == 0 {
            return Err(Error::Invalid("max_slots is 0".to_owned()));
        }
        if config.id_base == 0 || config.id_base.checked_add(config.max_slots).is_none() {
            return Err(Error::Invalid(format!(
                "id_base {} leaves no room for {} slot ids",
                config.id_base, config.max_slots
            )));
        }
        let pool = pool_cidr(config.subnet_base, config.max_slots)?;
        if config.egress && caps.nft.is_none() {
            return Err(SandboxUnavailable::MissingTool {
                tool: "nft",
                package: "nftables",
                searched: "/usr/sbin, /sbin".into(),
            }
            .into());
        }
        let tools = NetTools {
            ip: caps.ip.clone(),
            nft: caps.nft.clone(),
        };

        let state = config.state_dir.clone();
        let runs_dir = state.join("runs");
        let claims_dir = state.join("claims");
        let slots_dir = config
            .slots_dir
            .clone()
            .unwrap_or_else(|| state.join("slots"));
        mkdir_all(&runs_dir, 0o755)?;
        mkdir_all(&claims_dir, 0o755)?;
        mkdir_all(&slots_dir, 0o755)?;
        let slots_dir = slots_dir
            .canonicalize()
            .map_err(|e| Error::io(format!("resolve {}", slots_dir.display()), e))?;
        check_reachable(&slots_dir).map_err(Error::Invalid)?;

        // A fresh run id whose lock file did not exist yet.
        let (id, lock, lock_path) = loop {
            let id = random_run_id()?;
            let lock_path = runs_dir.join(format!("{id}.lock"));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock_path)
            {
                Ok(f) => {
                    if !crate::sys::try_flock_exclusive(&f)
                        .map_err(|e| Error::io("lock the run file", e))?
                    {
                        return Err(Error::Invalid(format!(
                            "{} is locked by someone else",
                            lock_path.display()
                        )));
                    }
                    break (id, f, lock_path);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("create {}", lock_path.display()), e)),
            }
        };
        let run_dir = runs_dir.join(&id);
        let run = Run {
            id,
            config,
            caps,
            tools,
            slots_dir,
            run_dir,
            claims_dir,
            lock_path,
            _lock: lock,
            pool_cidr: pool,
            next_index: AtomicU32::new(0),
        };
        // From here on, dropping `run` undoes everything.
        Self::prepare_run(&run)?;
        Ok(Self { run: Arc::new(run) })
    }

    fn prepare_run(run: &Run) -> Result<(), Error> {
        let etc = run.run_dir.join("etc");
        mkdir_all(&etc, 0o755)?;
        let files = [
            (
                "passwd",
                format!(
                    "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                     fission:x:{INSIDE_ID}:{INSIDE_ID}:fission function:/tmp:/usr/sbin/nologin\n\
                     nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                ),
            ),
            (
                "group",
                format!("root:x:0:\nfission:x:{INSIDE_ID}:\nnogroup:x:65534:\n"),
            ),
            (
                "hosts",
                format!(
                    "127.0.0.1\tlocalhost {h}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                    h = slot::HOSTNAME
                ),
            ),
        ];
        for (name, content) in files {
            let p = etc.join(name);
            fs::write(&p, content).map_err(|e| Error::io(format!("write {}", p.display()), e))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644))
                .map_err(|e| Error::io(format!("chmod {}", p.display()), e))?;
        }
        let deny = seccomp::deny_program()
            .map_err(|e| Error::Unavailable(SandboxUnavailable::Seccomp(e)))?;
        let clone3 = seccomp::clone3_program()
            .map_err(|e| Error::Unavailable(SandboxUnavailable::Seccomp(e)))?;
        let zygote = seccomp::zygote_program()
            .map_err(|e| Error::Unavailable(SandboxUnavailable::Seccomp(e)))?;
        for (name, prog) in [
            (slot::SECCOMP_DENY, &deny),
            (slot::SECCOMP_CLONE3, &clone3),
            (slot::SECCOMP_ZYGOTE, &zygote),
        ] {
            let p = run.run_dir.join(name);
            fs::write(&p, seccomp::to_bytes(prog))
                .map_err(|e| Error::io(format!("write {}", p.display()), e))?;
        }
        for d in run.caps.cgroups.run_dirs(&run.group()) {
            match fs::create_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("mkdir {}", d.display()), e)),
            }
        }
        if run.config.egress {
            net::enable_ip_forward()?;
            let nft = run.tools.nft.as_deref().ok_or(Error::EgressDisabled)?;
            let script = net::firewall_script(
                &run.group(),
                &format!("{IF_PREFIX}{}", run.id),
                IF_PREFIX,
                &run.pool_cidr,
            );
            net::install_firewall(nft, &script)?;
        }
        Ok(())
    }

    /// This run's id (6 lowercase hex digits), part of every host-side name.
    pub fn run_id(&self) -> &str {
        &self.run.id
    }

    /// The settings in force.
    pub fn config(&self) -> &SandboxConfig {
        &self.run.config
    }

    /// What the probe found.
    pub fn capabilities(&self) -> &Capabilities {
        &self.run.caps
    }

    /// Directory holding the slot directories.
    pub fn slots_dir(&self) -> &Path {
        &self.run.slots_dir
    }

    /// Remove what runs that are no longer alive left behind (a crashed server): kill their
    /// processes (whole cgroups), remove cgroups, network namespaces, veths, firewall tables,
    /// slot directories, claims and run files. Live runs — this one and any other process
    /// holding its run lock — are left alone. Call at server start. Blocking.
    pub fn cleanup_leftovers(&self) -> Result<CleanupReport, Error> {
        cleanup::cleanup(&self.run)
    }

    /// Create a slot and start `spec.program` in it. Blocking (about 20–40 ms: cgroup attach,
    /// network setup); call it from `spawn_blocking`. Must run inside a Tokio runtime context
    /// (the child is a [`tokio::process::Child`]).
    pub fn create_slot(&self, spec: SlotSpec) -> Result<Slot, Error> {
        slot::create(&self.run, spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_sized_and_aligned() {
        assert_eq!(
            pool_cidr(Ipv4Addr::new(10, 213, 0, 0), 4096).expect("pool"),
            "10.213.0.0/18"
        );
        assert_eq!(
            pool_cidr(Ipv4Addr::new(10, 213, 0, 0), 1).expect("pool"),
            "10.213.0.0/30"
        );
        assert!(pool_cidr(Ipv4Addr::new(10, 213, 1, 0), 4096).is_err());
    }

    #[test]
    fn unreachable_dirs_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = dir.path().join("x");
        fs::create_dir(&inner).expect("mkdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        let err = check_reachable(&inner).expect_err("0700 parent");
        assert!(err.contains("not searchable"), "{err}");
    }
}
