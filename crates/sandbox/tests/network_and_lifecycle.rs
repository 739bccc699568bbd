//! Egress through NAT (to a peer network namespace the test creates — no traffic leaves the
//! machine), no network without egress, slot-to-slot isolation, and cleanup of slots, runs
//! and crashed runs. Needs root, bubblewrap and nftables: skipped with a notice without them, failed under CI.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fission_sandbox::{Sandbox, SandboxConfig};
use fission_test_support::eventually_blocking;

/// A network namespace with a veth to the host, created for the test only.
struct Peer {
    ns: String,
    veth: String,
    host_ip: String,
    peer_ip: String,
    server: Option<Child>,
}

impl Peer {
    fn new() -> Peer {
        let pid = std::process::id();
        let ns = format!("fxpeer{pid}");
        let veth = format!("fxp{}", pid % 1_000_000);
        let third = pid % 250;
        let host_ip = format!("10.214.{third}.1");
        let peer_ip = format!("10.214.{third}.2");
        let mut peer = Peer {
            ns,
            veth,
            host_ip,
            peer_ip,
            server: None,
        };
        peer.teardown();
        sh("ip", &["netns", "add", &peer.ns]);
        sh(
            "ip",
            &[
                "link", "add", &peer.veth, "type", "veth", "peer", "name", "eth0", "netns",
                &peer.ns,
            ],
        );
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", peer.host_ip),
                "dev",
                &peer.veth,
            ],
        );
        sh("ip", &["link", "set", &peer.veth, "up"]);
        sh(
            "ip",
            &[
                "-n",
                &peer.ns,
                "addr",
                "add",
                &format!("{}/30", peer.peer_ip),
                "dev",
                "eth0",
            ],
        );
        sh("ip", &["-n", &peer.ns, "link", "set", "eth0", "up"]);
        sh("ip", &["-n", &peer.ns, "link", "set", "lo", "up"]);
        peer
    }

    /// A TCP server inside the peer namespace answering every connection with the client's
    /// address as it saw it. Bounded: 20 connections or 60 s.
    fn serve(&mut self, port: u16) {
        let code = r#"
import socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(); srv.settimeout(60)
print("ready", flush=True)
for _ in range(20):
    try:
        c, addr = srv.accept()
    except socket.timeout:
        break
    c.sendall(("hello " + addr[0] + "\n").encode()); c.close()
"#;
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                PY,
                "-I",
                "-S",
                "-c",
                code,
                &self.peer_ip,
                &port.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("peer server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        assert_eq!(line.trim(), "ready");
        self.server = Some(child);
    }

    fn teardown(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.teardown();
    }
}

const CONNECT: &str = r#"
import socket, sys
print("ifaces", sorted(n for _, n in socket.if_nameindex()))
s = socket.socket(); s.settimeout(2.0)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("reply", s.makefile().readline().strip())
except OSError as e:
    print("reply", type(e).__name__, e.errno)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_reaches_outside_through_nat_and_can_be_turned_off() {
    let Some(sb) = sandbox() else { return };
    let mut peer = Peer::new();
    peer.serve(8080);
    let peer_ip = peer.peer_ip.clone();

    // Egress on: reaches the peer, which sees the host's address (masqueraded).
    let (slot, out) = run_py(&sb, CONNECT, &[&peer_ip, "8080"], |s| s.egress = true).await;
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(out.expect_get("ifaces"), "['eth0', 'lo']");
    assert_eq!(
        out.expect_get("reply"),
        format!("hello {}", peer.host_ip),
        "{out:#?}"
    );
    assert!(slot.veth().is_some());
    slot.destroy().expect("destroy");

    // Egress off: only loopback, nothing routable.
    let (slot, out) = run_py(&sb, CONNECT, &[&peer_ip, "8080"], |s| s.egress = false).await;
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(out.expect_get("ifaces"), "['lo']");
    assert_eq!(
        out.expect_get("reply"),
        format!("OSError {}", libc::ENETUNREACH),
        "{out:#?}"
    );
    assert!(slot.veth().is_none() && slot.egress_addrs().is_none());
    slot.destroy().expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_cannot_reach_each_other() {
    let Some(sb) = sandbox() else { return };
    let server_code = r#"
import socket
srv = socket.socket(); srv.bind(("0.0.0.0", 9000)); srv.listen()
print("listening", flush=True)
while True:
    c, a = srv.accept(); c.sendall(b"hello from A\n"); c.close()
"#;
    let mut a = create(&sb, py_spec(server_code, &[])).await;
    let mut stdout = a.child().expect("child").stdout.take().expect("stdout");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(&mut stdout, &mut buf),
    )
    .await
    .expect("A ready")
    .expect("read");
    assert_eq!(&buf[..n], b"listening\n");
    let (_, a_ip) = a.egress_addrs().expect("A has egress");
    let (b, out) = run_py(&sb, CONNECT, &[&a_ip.to_string(), "9000"], |s| {
        s.egress = true
    })
    .await;
    assert!(
        out.expect_get("reply").starts_with("TimeoutError")
            || out.expect_get("reply").starts_with("OSError"),
        "{out:#?}"
    );
    b.destroy().expect("destroy");
    a.destroy().expect("destroy");
}

fn mounts_mention(name: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.contains(name))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroying_a_slot_removes_processes_cgroups_netns_veth_and_dirs() {
    let Some(sb) = sandbox() else { return };
    let mut spec = py_spec("import time; time.sleep(60)", &[]);
    spec.egress = true;
    let slot = create(&sb, spec).await;
    let cgroups = slot.cgroup_dirs();
    let pids_dir = cgroups
        .iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/pids"))
        .expect("pids cgroup")
        .clone();
    eventually_blocking(
        Duration::from_secs(5),
        "3 processes in the pids cgroup",
        || cgroup_pids(&pids_dir).len() >= 3,
    );
    let pids = cgroup_pids(&pids_dir);
    let netns = slot.netns().expect("netns").to_owned();
    let veth = slot.veth().expect("veth").to_owned();
    let dir = slot.dir().to_path_buf();
    let claim = sb
        .config()
        .state_dir
        .join("claims")
        .join(slot.index().to_string());
    assert!(Path::new("/run/netns").join(&netns).exists());
    assert!(Path::new("/sys/class/net").join(&veth).exists());
    assert!(claim.exists() && dir.exists());
    assert!(mounts_mention(&netns));

    slot.destroy().expect("destroy");
    assert!(
        pids.iter().all(|p| !process_alive(*p)),
        "processes survived"
    );
    assert!(
        cgroups.iter().all(|d| !d.exists()),
        "cgroups left: {cgroups:?}"
    );
    assert!(!Path::new("/run/netns").join(&netns).exists());
    assert!(!Path::new("/sys/class/net").join(&veth).exists());
    assert!(!dir.exists() && !claim.exists());
    assert!(!mounts_mention(&netns));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_works_while_the_caller_holds_the_unreaped_child() {
    let Some(sb) = sandbox() else { return };
    // The executor's pattern: its reaper task owns the child and waits on it.
    let mut slot = create(&sb, py_spec("import time; time.sleep(60)", &[])).await;
    let mut child = slot.take_child().expect("child");
    let cgroups = slot.cgroup_dirs();
    let waiter = tokio::spawn(async move { child.wait().await });
    tokio::task::spawn_blocking(move || slot.destroy())
        .await
        .expect("join")
        .expect("destroy");
    let status = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("exit seen")
        .expect("join")
        .expect("wait");
    assert!(!status.success());
    assert!(
        cgroups.iter().all(|d| !d.exists()),
        "cgroups left: {cgroups:?}"
    );
}

#[test]
fn dropping_the_sandbox_removes_the_runs_state() {
    let Some(config) = sandbox_config() else {
        return;
    };
    let sb = Sandbox::new(config).expect("new");
    let group = format!("fission-{}", sb.run_id());
    let run_dir = sb.config().state_dir.join("runs").join(sb.run_id());
    let lock = sb
        .config()
        .state_dir
        .join("runs")
        .join(format!("{}.lock", sb.run_id()));
    assert!(Path::new("/sys/fs/cgroup/memory").join(&group).exists());
    assert!(sh("nft", &["list", "tables"]).contains(&group));
    assert!(run_dir.exists() && lock.exists());
    drop(sb);
    assert!(!Path::new("/sys/fs/cgroup/memory").join(&group).exists());
    assert!(!sh("nft", &["list", "tables"]).contains(&group));
    assert!(!run_dir.exists() && !lock.exists());
}

const CRASH_HELPER_ENV: &str = "FISSION_SANDBOX_CRASH_HELPER";

/// Not a test on its own: when re-run with `FISSION_SANDBOX_CRASH_HELPER=<file>`, creates a
/// sandbox with two slots, writes what it made to `<file>` and exits without any cleanup —
/// a crashed server.
#[test]
fn crash_helper_leaks_slots() {
    let Ok(report) = std::env::var(CRASH_HELPER_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let sb = Sandbox::new(SandboxConfig::default()).expect("new");
        let mut lines = vec![format!("run {}", sb.run_id())];
        for egress in [true, false] {
            let mut spec = py_spec("import time; time.sleep(120)", &[]);
            spec.egress = egress;
            let slot = sb.create_slot(spec).expect("slot");
            let pids_dir = slot
                .cgroup_dirs()
                .into_iter()
                .find(|d| d.starts_with("/sys/fs/cgroup/pids"))
                .expect("pids");
            eventually_blocking(
                Duration::from_secs(5),
                "3 processes in the pids cgroup",
                || cgroup_pids(&pids_dir).len() >= 3,
            );
            for p in cgroup_pids(&pids_dir) {
                lines.push(format!("pid {p}"));
            }
            lines.push(format!("netns {}", slot.netns().expect("netns")));
            if let Some(v) = slot.veth() {
                lines.push(format!("veth {v}"));
            }
            lines.push(format!("dir {}", slot.dir().display()));
            for d in slot.cgroup_dirs() {
                lines.push(format!("cgroup {}", d.display()));
            }
            std::mem::forget(slot);
        }
        std::fs::write(&report, lines.join("\n")).expect("write report");
        std::mem::forget(sb);
        // Crash: no destructors, no cleanup.
        std::process::exit(0);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crashed_run_are_removed_and_live_runs_are_kept() {
    let Some(sb) = sandbox() else { return };
    // A live slot of a live run: cleanup must not touch it.
    let mut live = create(&sb, py_spec("import time; time.sleep(60)", &[])).await;

    let report_file = tempfile::NamedTempFile::new().expect("tempfile");
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "crash_helper_leaks_slots",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_HELPER_ENV, report_file.path())
        .stdout(Stdio::null())
        .output()
        .expect("crash helper");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = std::fs::read_to_string(report_file.path()).expect("report");
    let get = |k: &str| -> Vec<String> {
        report
            .lines()
            .filter_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(' ')))
            .map(str::to_owned)
            .collect()
    };
    let run = get("run").pop().expect("run id");
    let pids: Vec<i32> = get("pid").iter().map(|p| p.parse().expect("pid")).collect();
    let netns = get("netns");
    let veths = get("veth");
    let dirs: Vec<PathBuf> = get("dir").into_iter().map(PathBuf::from).collect();
    let cgroups: Vec<PathBuf> = get("cgroup").into_iter().map(PathBuf::from).collect();
    let group = format!("fission-{run}");
    // The leak is real.
    assert!(
        pids.len() >= 6 && pids.iter().all(|p| process_alive(*p)),
        "{report}"
    );
    assert!(
        netns
            .iter()
            .all(|n| Path::new("/run/netns").join(n).exists())
    );
    assert_eq!(veths.len(), 1);
    assert!(
        veths
            .iter()
            .all(|v| Path::new("/sys/class/net").join(v).exists())
    );
    assert!(dirs.iter().all(|d| d.exists()) && cgroups.iter().all(|d| d.exists()));
    assert!(sh("nft", &["list", "tables"]).contains(&group));

    let sb2 = sb.clone();
    let cleaned = tokio::task::spawn_blocking(move || sb2.cleanup_leftovers())
        .await
        .expect("join")
        .expect("cleanup");
    eprintln!("{cleaned:?}");
    assert!(cleaned.dead_runs.contains(&run), "{cleaned:?}");
    assert!(!cleaned.dead_runs.iter().any(|r| r == sb.run_id()));
    assert!(cleaned.errors.is_empty(), "{cleaned:?}");
    assert!(cleaned.processes_killed >= 2, "{cleaned:?}");

    eventually_blocking(
        Duration::from_secs(5),
        "every slot process to be gone",
        || pids.iter().all(|p| !process_alive(*p)),
    );
    assert!(cgroups.iter().all(|d| !d.exists()), "cgroups left");
    assert!(!Path::new("/sys/fs/cgroup/pids").join(&group).exists());
    assert!(
        netns
            .iter()
            .all(|n| !Path::new("/run/netns").join(n).exists()),
        "netns left"
    );
    assert!(
        veths
            .iter()
            .all(|v| !Path::new("/sys/class/net").join(v).exists()),
        "veth left"
    );
    assert!(dirs.iter().all(|d| !d.exists()), "slot dirs left");
    assert!(
        !sh("nft", &["list", "tables"]).contains(&group),
        "firewall table left"
    );
    assert!(!mounts_mention(&group), "mounts left");
    assert!(
        !sb.config()
            .state_dir
            .join("runs")
            .join(format!("{run}.lock"))
            .exists()
    );

    // The live slot is untouched.
    assert!(
        live.child()
            .expect("child")
            .try_wait()
            .expect("try_wait")
            .is_none(),
        "live slot was killed"
    );
    assert!(live.cgroup_dirs().iter().all(|d| d.exists()));
    live.destroy().expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_slot_hands_out_its_namespaces_cgroups_and_filters() {
    use std::os::unix::fs::MetadataExt as _;
    let Some(sb) = sandbox() else { return };
    let mut spec = fission_sandbox::SlotSpec::holder();
    spec.egress = false;
    let slot = create(&sb, spec).await;
    let sb2 = sb.clone();
    let (slot, handles) = tokio::task::spawn_blocking(move || {
        let h = slot.join_handles(&sb2).expect("join handles");
        (slot, h)
    })
    .await
    .expect("join");
    let names: Vec<&str> = handles.namespaces.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, fission_sandbox::NAMESPACES);
    // Every namespace is the slot's own, none is this process's.
    for (name, file) in &handles.namespaces {
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).expect("own ns");
        let theirs = file.metadata().expect("slot ns");
        assert_ne!(ours.ino(), theirs.ino(), "{name} namespace is the host's");
    }
    // The placeholder runs as the slot's uid, in the slot's cgroups.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", handles.holder_pid)).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert!(
        uid_line.contains(&slot.host_uid().to_string()),
        "{uid_line} (slot uid {})",
        slot.host_uid()
    );
    assert_eq!(handles.cgroup_procs.len(), slot.cgroup_dirs().len());
    // The filters are whole `struct sock_filter` arrays, the deny program first.
    assert_eq!(handles.seccomp.len(), 2);
    for f in &handles.seccomp {
        let len = f.metadata().expect("filter").len();
        assert!(len > 0 && len % 8 == 0, "{len}");
    }
    let zygote = sb.zygote_seccomp_programs().expect("zygote filters");
    assert_eq!(zygote.len(), 2);
    assert_ne!(
        zygote[0].metadata().expect("zygote deny").len(),
        handles.seccomp[0].metadata().expect("deny").len(),
        "the zygote's deny program lets setns through"
    );
    drop(handles);
    slot.destroy().expect("destroy");
}
