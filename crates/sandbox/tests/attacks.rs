//! An attacker inside real slots: each case is a small Python (or Node) program run in a
//! sandbox, trying to get out. Needs root and bubblewrap: skipped with a notice without them, failed under CI.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use fission_sandbox::{INSIDE_ID, Limits};
use fission_test_support::eventually_blocking;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_unprivileged_uid_inside_and_on_the_host() {
    let Some(sb) = sandbox() else { return };
    // /etc/shadow itself is not even in the sandbox; bind it in to prove the uid underneath
    // cannot read it (a root-underneath sandbox could).
    let code = r#"
import os
print("uid", os.getuid(), os.getgid())
try:
    open("/hostshadow").read(); print("shadow READ")
except PermissionError:
    print("shadow EACCES")
print("etc_shadow", os.path.exists("/etc/shadow"))
st = open("/proc/self/status").read().splitlines()
def target(fd):
    try:
        return os.readlink("/proc/self/fd/" + fd)
    except OSError:
        return None  # the descriptor listdir used, closed by now
print("fds", sorted(int(f) for f in os.listdir("/proc/self/fd") if target(f) is not None))
for k in ("NoNewPrivs", "CapEff", "CapPrm", "CapBnd", "CapAmb", "Seccomp"):
    print(k, [l.split()[1] for l in st if l.startswith(k + ":")][0])
"#;
    let (slot, out) = run_py(&sb, code, &[], |s| {
        s.readonly_binds
            .push(("/etc/shadow".into(), "/hostshadow".into()));
    })
    .await;
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(out.expect_get("uid"), format!("{INSIDE_ID} {INSIDE_ID}"));
    assert_eq!(out.expect_get("shadow"), "EACCES", "{out:#?}");
    assert_eq!(out.expect_get("etc_shadow"), "False");
    // stdio and the listening socket; nothing else of the host (seccomp fds are consumed).
    assert_eq!(out.expect_get("fds"), "[0, 1, 2, 3]", "{out:#?}");
    assert_eq!(out.expect_get("NoNewPrivs"), "1");
    for cap in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(out.expect_get(cap), "0000000000000000", "{cap}");
    }
    assert_eq!(out.expect_get("Seccomp"), "2", "seccomp filter mode");
    slot.destroy().expect("destroy");

    // Underneath: every process of a running slot has a non-root host uid and gid.
    let (slot, _) = {
        let mut spec = py_spec("import time; time.sleep(60)", &[]);
        spec.egress = false;
        let slot = create(&sb, spec).await;
        (slot, ())
    };
    let pids_dir = slot
        .cgroup_dirs()
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/pids"))
        .expect("pids cgroup");
    eventually_blocking(
        Duration::from_secs(5),
        "bwrap, its init and python in the pids cgroup",
        || cgroup_pids(&pids_dir).len() >= 3,
    );
    for pid in cgroup_pids(&pids_dir) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        for key in ["Uid:", "Gid:"] {
            let Some(line) = status.lines().find(|l| l.starts_with(key)) else {
                continue;
            };
            for id in line.split_whitespace().skip(1) {
                assert_eq!(
                    id.parse::<u32>().expect("id"),
                    slot.host_uid(),
                    "pid {pid} {line}"
                );
            }
        }
    }
    assert!(slot.host_uid() >= 1000);
    slot.destroy().expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_paths_that_are_not_bound_are_invisible() {
    let Some(sb) = sandbox() else { return };
    // World-readable data the sandbox must still not see: it is simply not mounted.
    let data = tempfile::Builder::new()
        .prefix("fission-sandbox-test")
        .tempdir_in("/tmp")
        .expect("tempdir");
    chmod(data.path(), 0o755);
    let secret = data.path().join("secret.txt");
    std::fs::write(&secret, "host data").expect("write");
    chmod(&secret, 0o644);

    let other = create(&sb, py_spec("import time; time.sleep(30)", &[])).await;
    std::fs::write(other.userfunc_dir().join("code.js"), "module.exports = 1").expect("write code");
    let other_code = other.userfunc_dir().join("code.js");

    let code = r#"
import os, sys
for p in sys.argv[1:]:
    print("exists", p, os.path.exists(p))
print("userfunc", sorted(os.listdir("/userfunc")))
print("root", sorted(os.listdir("/")))
"#;
    let targets: Vec<String> = [
        data.path().to_path_buf(),
        secret.clone(),
        other_code.clone(),
        other.dir().to_path_buf(),
        sb.slots_dir().to_path_buf(),
        PathBuf::from("/root"),
        PathBuf::from("/home"),
        PathBuf::from("/var/lib"),
        PathBuf::from("/run"),
        PathBuf::from("/sys"),
        PathBuf::from("/boot"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        PathBuf::from("/etc/shadow"),
        PathBuf::from("/etc/sudoers"),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .collect();
    let args: Vec<&str> = targets.iter().map(String::as_str).collect();
    let (slot, out) = run_py(&sb, code, &args, |_| {}).await;
    assert!(out.status.success(), "{out:#?}");
    for t in &targets {
        let line = format!("exists {t} ");
        let found = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&line))
            .unwrap_or_else(|| panic!("{t}: {out:#?}"));
        assert!(found.ends_with("False"), "visible inside: {found}");
    }
    // The other slot's code is not in this slot's /userfunc either.
    assert_eq!(out.expect_get("userfunc"), "[]");
    let root = out.expect_get("root");
    for dir in [
        "'usr'",
        "'etc'",
        "'tmp'",
        "'proc'",
        "'dev'",
        "'userfunc'",
        "'secrets'",
        "'configs'",
    ] {
        assert!(root.contains(dir), "{dir} missing from / : {root}");
    }
    for dir in [
        "'root'", "'home'", "'sys'", "'run'", "'boot'", "'srv'", "'opt'",
    ] {
        assert!(!root.contains(dir), "{dir} visible in / : {root}");
    }
    slot.destroy().expect("destroy");

    other.destroy().expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_placed_in_userfunc_after_creation_is_visible_read_only() {
    let Some(sb) = sandbox() else { return };
    let code = r#"
import os, time, sys
deadline = time.time() + 10
while not os.path.exists("/userfunc/deployarchive/main.py") and time.time() < deadline:
    time.sleep(0.01)
print("content", open("/userfunc/deployarchive/main.py").read().strip())
try:
    open("/userfunc/deployarchive/main.py", "a").write("x"); print("write OK")
except OSError as e:
    print("write", e.errno)
"#;
    let mut spec = py_spec(code, &[]);
    spec.egress = false;
    let mut slot = create(&sb, spec).await;
    // The executor's specialization step: place the package after the slot exists.
    let pkg = slot.userfunc_dir().join("deployarchive");
    std::fs::create_dir(&pkg).expect("mkdir");
    std::fs::write(pkg.join("main.py"), "def main(): return 'hi'\n").expect("write");
    // World-writable on the host: only the read-only mount can stop the write.
    chmod(&pkg.join("main.py"), 0o666);
    let out = output(&mut slot, Duration::from_secs(30)).await;
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(out.expect_get("content"), "def main(): return 'hi'");
    assert_eq!(out.expect_get("write"), libc::EROFS.to_string());
    slot.destroy().expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_processes_and_their_environment_are_invisible() {
    let Some(sb) = sandbox() else { return };
    // A host process carrying a secret in its environment and command line.
    let secret = format!(
        "s3cr3t-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let mut host = std::process::Command::new("/bin/sleep")
        .arg("30")
        .env("FISSION_TEST_HOST_SECRET", &secret)
        .spawn()
        .expect("spawn host process");
    // Hand the secret over reversed, so that it is not in the script's own command line.
    let reversed: String = secret.chars().rev().collect();
    let code = r#"
import os, sys
secret = sys.argv[1][::-1].encode()
pids = [p for p in os.listdir("/proc") if p.isdigit()]
print("npids", len(pids))
found = []
for p in pids:
    for f in ("environ", "cmdline"):
        try:
            if secret in open(f"/proc/{p}/{f}", "rb").read():
                found.append(f"{p}/{f}")
        except OSError:
            pass
print("found", found)
print("pid1", open("/proc/1/cmdline", "rb").read().split(b"\0")[0].decode())
print("pid1_env_has_secret", secret in open("/proc/1/environ", "rb").read())
"#;
    let (slot, out) = run_py(&sb, code, &[&reversed], |_| {}).await;
    let _ = host.kill();
    let _ = host.wait();
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(out.expect_get("found"), "[]", "{out:#?}");
    assert_eq!(out.expect_get("pid1_env_has_secret"), "False");
    // Its own pid namespace: bwrap's init is pid 1, and only a handful of processes exist.
    assert!(out.expect_get("pid1").ends_with("bwrap"), "{out:#?}");
    let npids: usize = out.expect_get("npids").parse().expect("npids");
    assert!(npids <= 3, "{npids} processes visible");
    slot.destroy().expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_listeners_are_unreachable_from_inside() {
    let Some(sb) = sandbox() else { return };
    // The server's own kind of listener (127.0.0.1) and a wildcard one.
    let lo = TcpListener::bind("127.0.0.1:0").expect("bind");
    let any = TcpListener::bind("0.0.0.0:0").expect("bind");
    lo.set_nonblocking(true).expect("nonblocking");
    any.set_nonblocking(true).expect("nonblocking");
    let lo_port = lo.local_addr().expect("addr").port();
    let any_port = any.local_addr().expect("addr").port();
    // Positive control from the host.
    assert!(std::net::TcpStream::connect(("127.0.0.1", lo_port)).is_ok());
    let _ = lo.accept();

    let code = r#"
import socket, sys
def attempt(host, port):
    s = socket.socket(); s.settimeout(1.0)
    try:
        s.connect((host, int(port))); return "CONNECTED"
    except Exception as e:
        return type(e).__name__
# Inside loopback works (own server).
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
print("own", attempt("127.0.0.1", srv.getsockname()[1]))
for hp in sys.argv[1:]:
    h, p = hp.rsplit(":", 1)
    print("try", hp, attempt(h, p))
"#;
    // Every host IPv4 address (the veth host end included once the slot exists).
    let mut spec = py_spec("import time; time.sleep(30)", &[]);
    spec.egress = true;
    let probe_slot = create(&sb, spec).await;
    let (veth_host_ip, _) = probe_slot.egress_addrs().expect("egress addrs");
    let mut host_ips: Vec<String> = sh("ip", &["-4", "-o", "addr", "show"])
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)
                .and_then(|a| a.split('/').next())
                .map(str::to_owned)
        })
        .collect();
    host_ips.push(veth_host_ip.to_string());
    let mut targets = vec![
        format!("127.0.0.1:{lo_port}"),
        format!("127.0.0.1:{any_port}"),
    ];
    for ip in &host_ips {
        targets.push(format!("{ip}:{any_port}"));
        targets.push(format!("{ip}:{lo_port}"));
    }
    let args: Vec<&str> = targets.iter().map(String::as_str).collect();
    let (slot, out) = run_py(&sb, code, &args, |s| s.egress = true).await;
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(
        out.expect_get("own"),
        "CONNECTED",
        "loopback inside the slot works"
    );
    for t in &targets {
        let res = out
            .get(&format!("try {t}"))
            .unwrap_or_else(|| panic!("{t}: {out:#?}"));
        assert_ne!(res, "CONNECTED", "slot reached host listener {t}");
    }
    // Nothing arrived at the host listeners.
    assert!(
        lo.accept().is_err() && any.accept().is_err(),
        "a connection reached a host listener"
    );
    slot.destroy().expect("destroy");
    probe_slot.destroy().expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_outside_tmp_fail_and_tmp_is_private_writable_and_size_limited() {
    let Some(sb) = sandbox() else { return };
    let code = r#"
import os
for p in ["/x", "/usr/x", "/etc/x", "/etc/passwd", "/userfunc/x", "/secrets/x", "/configs/x", "/dev/x", "/var/x", "/proc/x"]:
    try:
        open(p, "a").write("x"); print("write", p, "OK")
    except OSError as e:
        print("write", p, "ERR")
open("/tmp/ok", "w").write("hello")
print("tmp", open("/tmp/ok").read())
open("/dev/shm/ok", "w").write("shm")
print("shm", open("/dev/shm/ok").read())
st = os.statvfs("/tmp")
print("tmpsize", st.f_blocks * st.f_frsize)
try:
    with open("/tmp/big", "wb") as f:
        for i in range(64):
            f.write(b"\1" * (1 << 20)); f.flush()
    print("big OK")
except OSError as e:
    print("big", e.errno)
"#;
    let limits = Limits {
        tmp_bytes: 8 << 20,
        ..Limits::default()
    };
    let (slot, out) = run_py(&sb, code, &[], |s| {
        s.limits = Some(limits);
        s.egress = false;
    })
    .await;
    assert!(out.status.success(), "{out:#?}");
    for l in out.stdout.lines().filter(|l| l.starts_with("write ")) {
        assert!(l.ends_with("ERR"), "write outside /tmp succeeded: {l}");
    }
    assert_eq!(
        out.expect_get("tmp"),
        "hello",
        "/tmp is writable for the unprivileged uid"
    );
    assert_eq!(out.expect_get("shm"), "shm");
    assert_eq!(out.expect_get("tmpsize"), (8u64 << 20).to_string());
    assert_eq!(out.expect_get("big"), libc::ENOSPC.to_string());
    slot.destroy().expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmp_files_do_not_leak_between_slots() {
    let Some(sb) = sandbox() else { return };
    let writer_code = r#"
import time
open("/tmp/marker", "w").write("slot A")
print("wrote", flush=True)
time.sleep(30)
"#;
    let mut writer = create(&sb, py_spec(writer_code, &[])).await;
    // Wait for the marker to be written.
    let mut stdout = writer
        .child()
        .expect("child")
        .stdout
        .take()
        .expect("stdout");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(&mut stdout, &mut buf),
    )
    .await
    .expect("writer ready")
    .expect("read");
    assert_eq!(&buf[..n], b"wrote\n");
    let (reader, out) = run_py(
        &sb,
        "import os; print('marker', os.path.exists('/tmp/marker'))",
        &[],
        |s| s.egress = false,
    )
    .await;
    assert_eq!(out.expect_get("marker"), "False", "{out:#?}");
    reader.destroy().expect("destroy");
    writer.destroy().expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_over_the_limit_is_oom_killed_and_reported() {
    let Some(sb) = sandbox() else { return };
    let code = r#"
import sys
chunks = []
for i in range(512):
    chunks.append(b"\1" * (1 << 20))
    if i % 16 == 0:
        print("allocated_mib", i, flush=True)
print("survived")
"#;
    let limits = Limits {
        memory_bytes: Some(64 << 20),
        ..Limits::default()
    };
    let (slot, out) = run_py(&sb, code, &[], |s| {
        s.limits = Some(limits);
        s.egress = false;
    })
    .await;
    assert!(!out.status.success(), "{out:#?}");
    assert!(!out.stdout.contains("survived"), "{out:#?}");
    assert!(
        slot.oom_killed(),
        "oom not detected: {:?} {out:#?}",
        slot.stats()
    );
    assert!(slot.stats().oom_kills >= 1);
    slot.destroy().expect("destroy");

    // Control: staying under the limit is not an OOM.
    let (slot, out) = run_py(&sb, "x = b'1' * (8 << 20); print('ok')", &[], |s| {
        s.limits = Some(limits);
        s.egress = false;
    })
    .await;
    assert!(out.status.success(), "{out:#?}");
    assert!(!slot.oom_killed());
    slot.destroy().expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_is_contained_by_the_pids_limit() {
    let Some(sb) = sandbox() else { return };
    let code = r#"
import os, time
print("start", flush=True)
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"#;
    let limits = Limits {
        pids: 48,
        cpu_millis: Some(500),
        ..Limits::default()
    };
    let mut spec = py_spec(code, &[]);
    spec.limits = Some(limits);
    spec.egress = false;
    let slot = create(&sb, spec).await;
    let pids_dir = slot
        .cgroup_dirs()
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/pids"))
        .expect("pids cgroup");
    // Let it saturate.
    eventually_blocking(
        Duration::from_secs(10),
        "the fork bomb to grow to 40 pids",
        || slot.stats().pids >= 40,
    );
    std::thread::sleep(Duration::from_millis(500));
    let stats = slot.stats();
    assert!(stats.pids <= 48, "pids limit exceeded: {stats:?}");
    let max_failures: u64 = std::fs::read_to_string(pids_dir.join("pids.events"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    assert!(max_failures > 0, "fork never refused");
    // The host is fine: it can still start processes.
    assert!(
        std::process::Command::new("/bin/true")
            .status()
            .expect("host spawn")
            .success()
    );
    // And the whole bomb goes away with the slot.
    let victims = cgroup_pids(&pids_dir);
    let started = Instant::now();
    slot.destroy().expect("destroy");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "destroy took {:?}",
        started.elapsed()
    );
    eventually_blocking(
        Duration::from_secs(5),
        "every fork bomb process to die",
        || victims.iter().all(|p| !process_alive(*p)),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_spin_is_capped_by_the_quota() {
    let Some(sb) = sandbox() else { return };
    let limits = Limits {
        cpu_millis: Some(200),
        ..Limits::default()
    };
    let mut spec = py_spec("print('spin', flush=True)\nwhile True: pass", &[]);
    spec.limits = Some(limits);
    spec.egress = false;
    let slot = create(&sb, spec).await;
    std::thread::sleep(Duration::from_millis(300));
    let before = slot.stats().cpu_usage_ns.expect("cpuacct mounted");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let used = slot.stats().cpu_usage_ns.expect("cpuacct") - before;
    let wall = t0.elapsed().as_nanos() as u64;
    let share = used as f64 / wall as f64;
    eprintln!("cpu share with a 200 millicore quota: {share:.3}");
    assert!(share > 0.05, "the spinner did not run: {share}");
    assert!(share < 0.30, "quota not enforced: {share}");
    assert!(slot.stats().cpu_throttled_periods > 0);
    slot.destroy().expect("destroy");
}

#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_system_calls_are_refused() {
    let Some(sb) = sandbox() else { return };
    // x86-64 numbers. Many of these would not fail with EPERM without the filter (ptrace
    // TRACEME and keyctl succeed; bpf, perf_event_open, io_uring_setup, add_key fail with
    // EFAULT/EINVAL on NULL arguments), so EPERM shows the filter answered.
    let code = r#"
import ctypes, errno, os, threading
libc = ctypes.CDLL(None, use_errno=True)
def sc(name, nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if r == 0 and name.startswith("clone"):
        os._exit(0)
    e = ctypes.get_errno()
    print("sys", name, "OK" if r >= 0 else errno.errorcode.get(e, str(e)), flush=True)
CLONE_NEWUSER = 0x10000000
sc("mount", 165, 0, 0, 0, 0, 0)
sc("umount2", 166, 0, 0)
sc("pivot_root", 155, 0, 0)
sc("ptrace", 101, 0, 0, 0, 0)
sc("unshare_newuser", 272, CLONE_NEWUSER)
sc("clone_newuser", 56, CLONE_NEWUSER | 17, 0, 0, 0, 0)
sc("setns", 308, 0, 0)
sc("bpf", 321, 5, 0, 0)
sc("keyctl", 250, 0, -3, 0, 0, 0)
sc("add_key", 248, 0, 0, 0, 0, 0)
sc("perf_event_open", 298, 0, 0, -1, -1, 0)
sc("kexec_load", 246, 0, 0, 0, 0)
sc("init_module", 175, 0, 0, 0)
sc("finit_module", 313, 0, 0, 0)
sc("swapon", 167, 0, 0)
sc("reboot", 169, 0, 0, 0, 0)
sc("io_uring_setup", 425, 1, 0)
sc("userfaultfd", 323, 0)
sc("process_vm_readv", 310, 1, 0, 0, 0, 0, 0)
sc("x32_ptrace", 0x40000000 | 521, 0, 0, 0, 0)
print("clone3", "OK" if libc.syscall(ctypes.c_long(435), ctypes.c_long(0), ctypes.c_long(0)) >= 0 else errno.errorcode.get(ctypes.get_errno()))
# Ordinary things still work: threads (clone3 → ENOSYS → clone fallback) and fork.
t = threading.Thread(target=lambda: None); t.start(); t.join(); print("threads OK")
pid = os.fork()
if pid == 0:
    os._exit(7)
print("fork", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"#;
    let (slot, out) = run_py(&sb, code, &[], |s| s.egress = false).await;
    assert!(out.status.success(), "{out:#?}");
    let calls: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("sys "))
        .collect();
    assert_eq!(calls.len(), 20, "{out:#?}");
    for l in calls {
        assert!(l.ends_with(" EPERM"), "not refused: {l}");
    }
    assert_eq!(out.expect_get("clone3"), "ENOSYS");
    assert_eq!(out.expect_get("threads"), "OK");
    assert_eq!(out.expect_get("fork"), "7");
    slot.destroy().expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_attacker_cannot_read_host_files_or_reach_host_loopback() {
    let Some(sb) = sandbox() else { return };
    let Some(()) = require_program(NODE, "nodejs") else {
        return;
    };
    let lo = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = lo.local_addr().expect("addr").port().to_string();
    let code = r#"
const fs = require('fs'), net = require('net');
for (const p of ['/hostshadow', '/root', '/etc/shadow']) {
  try { fs.readFileSync(p); console.log('read', p, 'OK'); } catch (e) { console.log('read', p, e.code); }
}
const s = net.connect({ host: '127.0.0.1', port: Number(process.argv[1]) });
s.setTimeout(1000, () => { console.log('connect TIMEOUT'); s.destroy(); });
s.on('connect', () => { console.log('connect CONNECTED'); s.destroy(); });
s.on('error', (e) => console.log('connect', e.code));
"#;
    let mut spec = node_spec(code, &[&port]);
    spec.readonly_binds
        .push(("/etc/shadow".into(), "/hostshadow".into()));
    let mut slot = create(&sb, spec).await;
    let out = output(&mut slot, Duration::from_secs(30)).await;
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(out.expect_get("read /hostshadow"), "EACCES");
    assert_eq!(out.expect_get("read /root"), "ENOENT");
    assert_eq!(out.expect_get("read /etc/shadow"), "ENOENT");
    assert_eq!(out.expect_get("connect"), "ECONNREFUSED", "{out:#?}");
    slot.destroy().expect("destroy");
}

#[test]
fn probe_names_the_reason_when_not_root() {
    // Re-run this test binary as an unprivileged user and look at what probe says there.
    if let Ok(v) = std::env::var("FISSION_SANDBOX_PROBE_HELPER") {
        let _ = v;
        match fission_sandbox::Sandbox::probe() {
            Ok(c) => println!("PROBE OK {c}"),
            Err(e) => println!("PROBE ERR {e}"),
        }
        return;
    }
    if fission_sandbox_test_euid() != 0 {
        // Not root: probe must say so right here.
        let err = fission_sandbox::Sandbox::probe().expect_err("probe as non-root");
        assert!(err.to_string().contains("not running as root"), "{err}");
        return;
    }
    // The checkout (and so this binary) may sit where uid 65534 cannot reach it: run a copy
    // from a world-searchable directory instead.
    let copy_dir = tempfile::Builder::new()
        .prefix("fission-probe-helper")
        .tempdir_in("/tmp")
        .expect("tempdir");
    chmod(copy_dir.path(), 0o755);
    let exe = copy_dir.path().join("probe-helper");
    std::fs::copy(std::env::current_exe().expect("current exe"), &exe).expect("copy test binary");
    chmod(&exe, 0o755);
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(&exe)
        .args([
            "--exact",
            "probe_names_the_reason_when_not_root",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FISSION_SANDBOX_PROBE_HELPER", "1")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run helper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("PROBE ERR the server is not running as root (effective uid 65534)"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fission_sandbox_test_euid() -> u32 {
    // The owner of /proc/self is our effective uid.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}
