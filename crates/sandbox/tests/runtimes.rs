//! The real runtimes (environments/nodejs, environments/python) inside slots: serve on the
//! passed fd 3, get specialized with code placed in `/userfunc` after the slot exists, and
//! run the function as the sandbox user. Also the numbers (ignored test `measure_…`).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use fission_sandbox::{Sandbox, Slot, SlotSpec};

struct Runtime {
    program: &'static str,
    args: Vec<String>,
    dir: PathBuf,
    _copy: Option<tempfile::TempDir>,
}

/// Where the runtime's directory appears inside a slot.
const INSIDE: &str = "/opt/runtime";

fn node() -> Runtime {
    let (dir, copy) = runtime_dir("nodejs");
    Runtime {
        program: NODE,
        args: vec![format!("{INSIDE}/server.js")],
        dir,
        _copy: copy,
    }
}

fn python() -> Runtime {
    let (dir, copy) = runtime_dir("python");
    Runtime {
        program: PY,
        args: vec!["-I".into(), "-S".into(), format!("{INSIDE}/server.py")],
        dir,
        _copy: copy,
    }
}

fn spec(rt: &Runtime, egress: bool) -> (SlotSpec, SocketAddr) {
    let listener = loopback_listener();
    let addr = listener.local_addr().expect("addr");
    let mut spec = SlotSpec::new(rt.program, rt.args.clone(), listener);
    // A fixed inside path: the checkout may live under /tmp, which the slot replaces.
    spec.readonly_binds
        .push((rt.dir.clone(), PathBuf::from(INSIDE)));
    spec.egress = egress;
    (spec, addr)
}

/// Start a generic instance; returns the slot, its address, creation time and the time from
/// spawn to the first `GET /healthz` answer.
fn start(sb: &Sandbox, rt: &Runtime, egress: bool) -> (Slot, SocketAddr, Duration, Duration) {
    let (spec, addr) = spec(rt, egress);
    let t0 = Instant::now();
    let slot = sb.create_slot(spec).expect("create_slot");
    let created = t0.elapsed();
    let t1 = Instant::now();
    let (code, body) = http(addr, "GET", "/healthz", "", Duration::from_secs(20)).expect("healthz");
    let ready = t1.elapsed();
    assert_eq!(code, 200, "{body}");
    (slot, addr, created, ready)
}

fn has_runtimes() -> bool {
    fission_test_support::require_runtimes().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_runtime_serves_on_the_passed_fd_and_runs_specialized_code_as_the_sandbox_user() {
    let Some(sb) = sandbox() else { return };
    if !has_runtimes() {
        return;
    }
    let rt = node();
    tokio::task::spawn_blocking(move || {
        let (slot, addr, created, ready) = start(&sb, &rt, false);
        eprintln!("node: slot created in {created:?}, spawn → /healthz in {ready:?}");
        let pkg = slot.userfunc_dir().join("deployarchive");
        std::fs::create_dir(&pkg).expect("mkdir");
        std::fs::write(
            pkg.join("hello.js"),
            "module.exports = async function () {\n  const fs = require('fs');\n  let shadow;\n  try { fs.readFileSync('/etc/shadow'); shadow = 'READ'; } catch (e) { shadow = e.code; }\n  return { status: 200, body: `hello from uid ${process.getuid()} shadow ${shadow}` };\n};\n",
        )
        .expect("write code");
        let load = r#"{"filepath":"/userfunc/deployarchive/hello.js","functionName":"","url":"","FunctionMetadata":{},"envVersion":3}"#;
        let (code, body) = http(addr, "POST", "/v2/specialize", load, Duration::from_secs(20)).expect("specialize");
        assert!(code == 202 || code == 200, "{code} {body}");
        let (code, body) = http(addr, "GET", "/", "", Duration::from_secs(20)).expect("invoke");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("hello from uid 1000 shadow ENOENT"), "{body}");
        slot.destroy().expect("destroy");
    })
    .await
    .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_runtime_serves_on_the_passed_fd_and_runs_specialized_code_as_the_sandbox_user() {
    let Some(sb) = sandbox() else { return };
    if !has_runtimes() {
        return;
    }
    let rt = python();
    tokio::task::spawn_blocking(move || {
        let (slot, addr, created, ready) = start(&sb, &rt, false);
        eprintln!("python: slot created in {created:?}, spawn → /healthz in {ready:?}");
        let pkg = slot.userfunc_dir().join("deployarchive");
        std::fs::create_dir(&pkg).expect("mkdir");
        std::fs::write(pkg.join("main.py"), "import os\n\ndef main():\n    return 'hello from uid %d' % os.getuid()\n")
            .expect("write code");
        let load = r#"{"filepath":"/userfunc/deployarchive","functionName":"main","url":"","FunctionMetadata":{},"envVersion":3}"#;
        let (code, body) = http(addr, "POST", "/v2/specialize", load, Duration::from_secs(20)).expect("specialize");
        assert!(code == 200 || code == 202, "{code} {body}");
        let (code, body) = http(addr, "GET", "/", "", Duration::from_secs(20)).expect("invoke");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("hello from uid 1000"), "{body}");
        slot.destroy().expect("destroy");
    })
    .await
    .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_slot_refuses_new_connections() {
    let Some(sb) = sandbox() else { return };
    if !has_runtimes() {
        return;
    }
    let rt = python();
    tokio::task::spawn_blocking(move || {
        let (mut slot, addr, _, _) = start(&sb, &rt, false);
        slot.kill().expect("kill");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let status = rt
            .block_on(async { slot.child().expect("child").wait().await })
            .expect("wait");
        assert!(!status.success());
        assert!(!slot.oom_killed());
        // Nobody holds the listening socket any more (the slot kept no copy).
        assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
        slot.destroy().expect("destroy");
    })
    .await
    .expect("join");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

/// Prints slot creation time, spawn → ready for both runtimes, and idle memory per slot.
/// `cargo test -p fission-sandbox --test runtimes -- --ignored --nocapture measure`
#[test]
#[ignore = "measurement, run by hand"]
fn measure_slot_creation_readiness_and_idle_memory() {
    let Some(sb) = sandbox() else { return };
    let rt_tokio = tokio::runtime::Runtime::new().expect("rt");
    let _guard = rt_tokio.enter();
    const N: usize = 15;
    for (name, rt) in [("node", node()), ("python", python())] {
        for egress in [false, true] {
            let (mut created, mut ready, mut mem, mut rss) = (vec![], vec![], vec![], vec![]);
            let mut slots = Vec::new();
            for _ in 0..N {
                let (slot, _, c, r) = start(&sb, &rt, egress);
                created.push(c.as_secs_f64() * 1e3);
                ready.push(r.as_secs_f64() * 1e3);
                slots.push(slot);
            }
            std::thread::sleep(Duration::from_secs(1));
            for s in &slots {
                let st = s.stats();
                mem.push(st.memory_bytes as f64 / (1 << 20) as f64);
                rss.push(st.rss_bytes as f64 / (1 << 20) as f64);
            }
            let t = Instant::now();
            let n = slots.len();
            for s in slots {
                s.destroy().expect("destroy");
            }
            let destroy_ms = t.elapsed().as_secs_f64() * 1e3 / n as f64;
            println!(
                "{name:6} egress={egress:5}: create {:.1} ms, spawn→ready {:.1} ms, idle memory {:.1} MiB (rss {:.1} MiB), destroy {:.1} ms  (medians of {N})",
                median(&mut created),
                median(&mut ready),
                median(&mut mem),
                median(&mut rss),
                destroy_ms
            );
        }
    }
}
