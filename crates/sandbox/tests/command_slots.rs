//! Slots for programs that serve nothing (build steps): no listening socket, one writable host
//! directory handed to the slot's uid, limits that say why a program died.

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use common::*;
use fission_sandbox::{Limits, Slot, SlotSpec};

/// Wait for the slot's program to exit, then kill what it left behind (bubblewrap's init
/// keeps the output pipes open while any orphan lives) and collect its output.
async fn run_to_exit(slot: &mut Slot) -> Out {
    let mut child = slot.take_child().expect("child");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("program did not exit in time")
        .expect("wait");
    slot.kill().expect("kill");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("output closed")
        .expect("output");
    Out {
        status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn py_command(code: &str) -> SlotSpec {
    SlotSpec::command(PY, vec!["-I".into(), "-S".into(), "-c".into(), code.into()])
}

#[tokio::test]
async fn a_command_slot_writes_only_to_its_writable_bind_even_under_a_private_directory() {
    let Some(sb) = sandbox() else { return };
    // A private parent (0700, like a data directory under /root): the slot's uid could not
    // open it by path, but the bind travels as a descriptor.
    let private = tempfile::tempdir().expect("tempdir");
    chmod(private.path(), 0o700);
    let work = private.path().join("work");
    std::fs::create_dir_all(work.join("src")).expect("mkdir");
    std::fs::write(work.join("src/input.txt"), "from the host").expect("write");
    let code = r#"
import os
print("listen_fd", os.environ.get("FISSION_LISTEN_FD", "unset"))
print("input", open("/packages/src/input.txt").read())
os.makedirs("/packages/deploy")
open("/packages/deploy/out.txt", "w").write("built")
for p in ["/usr/x", "/x", "/packages/../y"]:
    try:
        open(p, "w").write("escaped")
        print("wrote", p)
    except OSError as e:
        print("refused", p, e.errno)
"#;
    let mut spec = py_command(code);
    spec.writable_binds = vec![(work.clone(), "/packages".into())];
    spec.egress = false;
    let mut slot = create(&sb, spec).await;
    let uid = slot.host_uid();
    let out = output(&mut slot, Duration::from_secs(30)).await;
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(out.expect_get("listen_fd"), "unset");
    assert_eq!(out.expect_get("input"), "from the host");
    for p in ["/usr/x", "/x", "/packages/../y"] {
        assert!(
            out.stdout.contains(&format!("refused {p} ")),
            "{p}: {out:#?}"
        );
    }
    let built = work.join("deploy/out.txt");
    assert_eq!(std::fs::read_to_string(&built).expect("deployed"), "built");
    assert_eq!(std::fs::metadata(&built).expect("meta").uid(), uid);
    assert_eq!(
        std::fs::metadata(work.join("src/input.txt"))
            .expect("meta")
            .uid(),
        uid,
        "the tree was handed to the slot"
    );
    slot.destroy().expect("destroy");
}

#[tokio::test]
async fn a_command_slot_reports_its_pids_limit_and_oom_kills() {
    let Some(sb) = sandbox() else { return };
    let forker = r#"
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError as e:
    print("forked", n, "then", e.errno)
"#;
    let mut spec = py_command(forker);
    spec.egress = false;
    spec.limits = Some(Limits {
        pids: 32,
        ..Limits::default()
    });
    let mut slot = create(&sb, spec).await;
    let out = run_to_exit(&mut slot).await;
    assert!(out.status.success(), "{out:#?}");
    let forked: u32 = out
        .expect_get("forked")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(forked < 32, "{forked}");
    assert!(slot.pids_limit_hits() > 0);
    assert!(!slot.oom_killed());
    slot.destroy().expect("destroy");

    let mut spec = py_command("x = []\nwhile True:\n    x.append(bytearray(8 << 20))\n");
    spec.egress = false;
    spec.limits = Some(Limits {
        memory_bytes: Some(64 << 20),
        ..Limits::default()
    });
    let mut slot = create(&sb, spec).await;
    let out = run_to_exit(&mut slot).await;
    assert!(!out.status.success(), "{out:#?}");
    assert!(slot.oom_killed());
    slot.destroy().expect("destroy");
}
