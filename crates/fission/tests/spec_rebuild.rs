//! End-to-end: `spec apply` of changed source keeps the function serving its last good
//! deployment while the package rebuilds — every call during the rebuild answers 200, with the
//! old code until the new build is in, and the new code from then on.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::*;

/// A build that takes a few seconds, so calls certainly land while it runs.
const BUILD_SH: &str = "#!/bin/sh\nset -e\nsleep 3\ncp -r \"$SRC_PKG\" \"$DEPLOY_PKG\"\n";

fn main_py(answer: &str) -> String {
    format!("def main():\n    return '{answer}'\n")
}

#[test]
fn spec_apply_of_changed_source_serves_the_old_code_until_the_rebuild_succeeds() {
    let Some(()) = require_functions() else {
        return;
    };
    let server = Server::start();
    let dir = tempfile::tempdir().expect("project dir");
    let project = dir.path();
    let run = |args: &[&str]| server.fission_in(args, Some(project));

    write(project, "src/main.py", &main_py("v1"));
    let build = write(project, "src/build.sh", BUILD_SH);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&build, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    run(&["spec", "init"]).ok();
    run(&[
        "env",
        "create",
        "--name",
        "python",
        "--image",
        "fission/python-env",
        "--builder",
        "fission/python-builder",
        "--poolsize",
        "1",
        "--spec",
    ])
    .ok();
    run(&[
        "fn",
        "create",
        "--name",
        "app",
        "--env",
        "python",
        "--src",
        "src/*",
        "--entrypoint",
        "main.main",
        "--buildcmd",
        "./build.sh",
        "--spec",
    ])
    .ok();
    run(&[
        "route",
        "create",
        "--name",
        "app",
        "--function",
        "app",
        "--url",
        "/app",
        "--spec",
    ])
    .ok();
    run(&["spec", "apply", "--wait"]).ok();
    let url = server.url("/app");
    let get = || {
        let r = http().get(&url).send().expect("call");
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    eventually_blocking(Duration::from_secs(60), "/app answering v1", || {
        get() == (200, "v1".to_owned())
    });

    // Steady sequential traffic while the changed source is applied and rebuilt.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = {
        let (stop, url) = (stop.clone(), url.clone());
        std::thread::spawn(move || {
            let client = http();
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = client.get(&url).send().expect("call");
                seen.push((r.status().as_u16(), r.text().unwrap_or_default()));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    write(project, "src/main.py", &main_py("v2"));
    let out = run(&["spec", "apply"]).ok().stdout;
    assert!(out.contains("package updated"), "{out}");
    eventually_blocking(Duration::from_secs(120), "/app answering v2", || {
        get() == (200, "v2".to_owned())
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let seen = calls.join().expect("traffic");

    let failed: Vec<_> = seen.iter().filter(|(st, _)| *st != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} calls during the rebuild failed, e.g. {:?}\n{}",
        failed.len(),
        seen.len(),
        failed.first(),
        server.log()
    );
    let bodies: Vec<&str> = seen.iter().map(|(_, b)| b.as_str()).collect();
    let first_v2 = bodies
        .iter()
        .position(|b| *b == "v2")
        .expect("traffic saw v2");
    assert!(
        first_v2 > 0 && bodies[..first_v2].iter().all(|b| *b == "v1"),
        "the old code answers until the new build is in: {bodies:?}"
    );
    assert!(
        bodies[first_v2..].iter().all(|b| *b == "v2"),
        "once the new code answers, the old never does again: {bodies:?}"
    );
}
