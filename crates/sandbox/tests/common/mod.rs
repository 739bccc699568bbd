//! Helpers shared by the sandbox test binaries.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use fission_sandbox::{Sandbox, SandboxConfig, Slot, SlotSpec};
use fission_test_support::{binary_on_path, require, running_as_root};

/// The configuration the sandbox tests run with, once every prerequisite is met: root,
/// bubblewrap (the one on `PATH`), iproute2, nftables (egress) and a machine whose probe passes.
/// A missing one fails the test under `CI` and prints `SKIPPED:` otherwise (then `None`).
pub fn sandbox_config() -> Option<SandboxConfig> {
    require(
        "root",
        "run the sandbox tests as root, e.g. sudo -E cargo test",
        running_as_root(),
    )?;
    let bwrap = require(
        "bubblewrap (`bwrap`)",
        "apt-get install bubblewrap",
        binary_on_path("bwrap"),
    )?;
    require(
        "iproute2 (`ip`)",
        "apt-get install iproute2",
        binary_on_path("ip"),
    )?;
    require(
        "nftables (`nft`)",
        "apt-get install nftables",
        binary_on_path("nft"),
    )?;
    let caps = require(
        "a machine that can sandbox",
        "see the reason; .ci/run prepares a CI machine",
        Sandbox::probe(),
    )?;
    require(
        "sandbox egress",
        "apt-get install nftables",
        caps.egress_unavailable().map_or(Ok(()), Err),
    )?;
    Some(SandboxConfig {
        bwrap: Some(bwrap),
        ..SandboxConfig::default()
    })
}

/// A sandbox, once [`sandbox_config`]'s prerequisites are met.
pub fn sandbox() -> Option<Sandbox> {
    let config = sandbox_config()?;
    Some(Sandbox::new(config).expect("Sandbox::new on a machine whose probe succeeded"))
}

/// `program` exists, or the test cannot run (see [`require`]).
pub fn require_program(program: &str, package: &str) -> Option<()> {
    let found = if Path::new(program).is_file() {
        Ok(())
    } else {
        Err(format!("{program} does not exist"))
    };
    require(program, &format!("apt-get install {package}"), found)
}

pub fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

pub const PY: &str = "/usr/bin/python3";
pub const NODE: &str = "/usr/bin/node";

/// A spec running `python3 -I -S -c code args…`.
pub fn py_spec(code: &str, args: &[&str]) -> SlotSpec {
    let mut a: Vec<String> = vec!["-I".into(), "-S".into(), "-c".into(), code.into()];
    a.extend(args.iter().map(|s| (*s).to_owned()));
    SlotSpec::new(PY, a, loopback_listener())
}

/// A spec running `node -e code args…`.
pub fn node_spec(code: &str, args: &[&str]) -> SlotSpec {
    let mut a: Vec<String> = vec!["-e".into(), code.into()];
    a.extend(args.iter().map(|s| (*s).to_owned()));
    SlotSpec::new(NODE, a, loopback_listener())
}

/// Create a slot from async code the way the executor does (on the blocking pool).
pub async fn create(sb: &Sandbox, spec: SlotSpec) -> Slot {
    let sb = sb.clone();
    tokio::task::spawn_blocking(move || sb.create_slot(spec))
        .await
        .expect("join")
        .expect("create_slot")
}

#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// The value printed after `key ` on a stdout line starting with `key `.
    pub fn get(&self, key: &str) -> Option<String> {
        self.stdout.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix(' '))
                .map(str::to_owned)
        })
    }

    pub fn expect_get(&self, key: &str) -> String {
        self.get(key)
            .unwrap_or_else(|| panic!("no `{key}` line in output: {self:#?}"))
    }
}

/// Wait for the slot's program to exit and collect its output.
pub async fn output(slot: &mut Slot, timeout: Duration) -> Out {
    let child = slot.take_child().expect("child");
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .expect("program did not exit in time")
        .expect("wait");
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run a Python script in a new slot to completion.
pub async fn run_py(
    sb: &Sandbox,
    code: &str,
    args: &[&str],
    tweak: impl FnOnce(&mut SlotSpec),
) -> (Slot, Out) {
    let mut spec = py_spec(code, args);
    tweak(&mut spec);
    let mut slot = create(sb, spec).await;
    let out = output(&mut slot, Duration::from_secs(60)).await;
    (slot, out)
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: fission\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// `environments/<name>` of this repository, at a path the sandbox's unprivileged uids can
/// reach (copied to a world-searchable temporary directory when the checkout is not).
pub fn runtime_dir(name: &str) -> (PathBuf, Option<tempfile::TempDir>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../environments")
        .join(name);
    let dir = dir.canonicalize().expect("environments dir");
    if reachable_by_others(&dir) {
        return (dir, None);
    }
    let tmp = tempfile::Builder::new()
        .prefix("fission-sandbox-env")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&dir)
        .arg(tmp.path())
        .status()
        .expect("cp");
    assert!(status.success(), "copy {}", dir.display());
    chmod(tmp.path(), 0o755);
    (tmp.path().join(name), Some(tmp))
}

pub fn reachable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mut cur = PathBuf::new();
    for c in path.components() {
        cur.push(c);
        match std::fs::metadata(&cur) {
            Ok(m) if m.is_dir() && m.permissions().mode() & 0o001 == 0 => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    true
}

pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Whether a process with this host pid exists (zombies count as gone).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next()),
            Some("Z") | Some("X")
        ),
        Err(_) => false,
    }
}

/// Host pids in a cgroup directory.
pub fn cgroup_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Run a host command, panicking with its stderr on failure.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
