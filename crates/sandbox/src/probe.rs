//! Can this machine sandbox? [`probe`] answers with the tools it found or exactly why not.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cgroup::CgroupMounts;
use crate::{INSIDE_ID, SandboxConfig};

/// What [`Sandbox::probe`](crate::Sandbox::probe) found.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// The bubblewrap binary.
    pub bwrap: PathBuf,
    /// `bwrap --version`, e.g. `bubblewrap 0.8.0`.
    pub bwrap_version: String,
    /// iproute2's `ip`.
    pub ip: PathBuf,
    /// `nft`, needed for egress (NAT and the firewall table).
    pub nft: Option<PathBuf>,
    /// The cgroup v1 hierarchies used.
    pub cgroups: CgroupMounts,
}

impl Capabilities {
    /// `None` when slots can have egress, else why not.
    pub fn egress_unavailable(&self) -> Option<String> {
        match self.nft {
            Some(_) => None,
            None => Some(
                "nft (package nftables) not found: egress needs it for NAT and the firewall"
                    .to_owned(),
            ),
        }
    }
}

/// Why this machine cannot sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxUnavailable {
    /// Namespaces, cgroups and dropping to per-slot ids need root.
    #[error(
        "the server is not running as root (effective uid {euid}); sandboxing needs root to create cgroups and network namespaces and to start each sandbox under its own unprivileged uid"
    )]
    NotRoot {
        /// The effective uid.
        euid: u32,
    },
    /// A program is missing.
    #[error("`{tool}` not found (looked in {searched}); install the Debian package `{package}`")]
    MissingTool {
        /// Program name.
        tool: &'static str,
        /// Debian package providing it.
        package: &'static str,
        /// Directories searched.
        searched: String,
    },
    /// The kernel does not allow unprivileged user namespaces.
    #[error("user namespaces are unavailable: {0}")]
    UserNamespaces(String),
    /// cgroup controllers are missing.
    #[error("cgroups unavailable: {0}")]
    Cgroups(String),
    /// The seccomp program could not be built.
    #[error("seccomp filter: {0}")]
    Seccomp(String),
    /// A trial sandbox did not start.
    #[error("a trial bubblewrap sandbox (as uid {uid}) failed ({status}): {stderr}")]
    TrialFailed {
        /// Host uid the trial ran as.
        uid: u32,
        /// Its exit status.
        status: String,
        /// What bubblewrap printed.
        stderr: String,
    },
}

const BIN_DIRS: [&str; 5] = ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"];

pub(crate) fn find_tool(
    name: &'static str,
    package: &'static str,
) -> Result<PathBuf, SandboxUnavailable> {
    BIN_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| SandboxUnavailable::MissingTool {
            tool: name,
            package,
            searched: BIN_DIRS.join(", "),
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn read_sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The checks behind [`Sandbox::probe`](crate::Sandbox::probe), with `config`'s bwrap and ids.
pub(crate) fn probe(config: &SandboxConfig) -> Result<Capabilities, SandboxUnavailable> {
    let euid = crate::sys::geteuid();
    if euid != 0 {
        return Err(SandboxUnavailable::NotRoot { euid });
    }
    let bwrap = match &config.bwrap {
        Some(p) if is_executable(p) => p.clone(),
        Some(p) => {
            return Err(SandboxUnavailable::MissingTool {
                tool: "bwrap",
                package: "bubblewrap",
                searched: p.display().to_string(),
            });
        }
        None => find_tool("bwrap", "bubblewrap")?,
    };
    let ip = find_tool("ip", "iproute2")?;
    let nft = find_tool("nft", "nftables").ok();

    match read_sysctl("/proc/sys/user/max_user_namespaces") {
        Some(0) => {
            return Err(SandboxUnavailable::UserNamespaces(
                "/proc/sys/user/max_user_namespaces is 0 (set it above 0, e.g. sysctl user.max_user_namespaces=15000)"
                    .to_owned(),
            ));
        }
        None if !Path::new("/proc/self/ns/user").exists() => {
            return Err(SandboxUnavailable::UserNamespaces(
                "the kernel has no user namespace support".to_owned(),
            ));
        }
        _ => {}
    }
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Err(SandboxUnavailable::UserNamespaces(
            "kernel.unprivileged_userns_clone is 0 (set it to 1)".to_owned(),
        ));
    }
    let cgroups = CgroupMounts::discover().map_err(SandboxUnavailable::Cgroups)?;
    crate::seccomp::deny_program().map_err(SandboxUnavailable::Seccomp)?;

    let bwrap_version = Command::new(&bwrap)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();

    trial_run(&bwrap, config.id_base)?;
    Ok(Capabilities {
        bwrap,
        bwrap_version,
        ip,
        nft,
        cgroups,
    })
}

/// Start `/usr/bin/true` (or `/bin/true`) in a sandbox like a slot's, as host uid `uid`:
/// catches kernels or LSM policies (e.g. AppArmor's userns restriction) that refuse
/// unprivileged user namespaces, and bubblewrap builds lacking an option we use.
fn trial_run(bwrap: &Path, uid: u32) -> Result<(), SandboxUnavailable> {
    use std::os::unix::process::CommandExt;
    let mut args: Vec<String> = [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend([
        "--uid".into(),
        INSIDE_ID.to_string(),
        "--gid".into(),
        INSIDE_ID.to_string(),
    ]);
    args.extend(crate::slot::root_fs_args());
    args.extend(
        [
            "--proc", "/proc", "--dev", "/dev", "--size", "1048576", "--perms", "1777", "--tmpfs",
            "/tmp",
        ]
        .map(String::from),
    );
    let truth = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/usr/bin/true");
    args.extend(["--".into(), truth.into()]);
    let out = Command::new(bwrap)
        .args(&args)
        .env_clear()
        .current_dir("/")
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(SandboxUnavailable::TrialFailed {
            uid,
            status: o.status.to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        }),
        Err(e) => Err(SandboxUnavailable::TrialFailed {
            uid,
            status: "not started".to_owned(),
            stderr: e.to_string(),
        }),
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}), ip {}, nft {}, cgroup v1 memory {} pids {} cpu {}",
            self.bwrap_version,
            self.bwrap.display(),
            self.ip.display(),
            self.nft
                .as_ref()
                .map_or_else(|| "missing".to_owned(), |p| p.display().to_string()),
            self.cgroups.memory.display(),
            self.cgroups.pids.display(),
            self.cgroups.cpu.display()
        )
    }
}
