//! End-to-end: hostile source builds run in the sandbox. A build command that reads secrets,
//! writes outside its directories, connects to the server, fork-bombs or fills memory is
//! contained and fails (or achieves nothing) cleanly, while another function keeps serving.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::*;

/// A server with a function `hello` to keep calling, an environment `hostile` whose builds get
/// 128 MiB (`--maxmemory`, which Fission's builder pods get too) and one, `roomy`, whose builds
/// get the default limits.
fn setup() -> Option<Setup> {
    let s = Setup::start()?;
    s.env("nodejs", "fission/node-env", &["--poolsize", "1"]);
    s.function(
        "hello",
        "nodejs",
        "hello.js",
        "module.exports = async () => ({ status: 200, body: 'still serving\\n' });\n",
        &[],
    );
    assert_eq!(s.call("hello", ""), (200, "still serving\n".to_owned()));
    s.env(
        "hostile",
        "fission/python-env",
        &[
            "--builder",
            "fission/python-builder",
            "--maxmemory",
            "128",
            "--poolsize",
            "0",
        ],
    );
    s.env(
        "roomy",
        "fission/python-env",
        &["--builder", "fission/python-builder", "--poolsize", "0"],
    );
    Some(s)
}

/// Build `files` with `buildcmd` in environment `env` while `hello` is called every
/// 100 ms; returns `fission pkg info` of the package. Every call made meanwhile must succeed.
fn build_while_serving(
    s: &Setup,
    env: &str,
    name: &str,
    files: &[(&str, &str)],
    buildcmd: &str,
) -> String {
    let dir = s.files(name, files);
    let stop = AtomicBool::new(false);
    let url = s.server.url("/fission-function/hello");
    let (statuses, run) = std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            let client = http();
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let status = client
                    .get(&url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                statuses.push(status);
                std::thread::sleep(Duration::from_millis(100));
            }
            statuses
        });
        let run = s.fission(&[
            "pkg",
            "create",
            "--name",
            name,
            "--env",
            env,
            "--src",
            &format!("{}/*", dir.display()),
            "--buildcmd",
            buildcmd,
        ]);
        stop.store(true, Ordering::Relaxed);
        (caller.join().expect("caller"), run)
    });
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == 200),
        "hello must keep serving during the build: {statuses:?}"
    );
    eprintln!(
        "{name}: pkg create exit {}, hello answered {} calls during the build",
        run.code,
        statuses.len()
    );
    s.fission(&["pkg", "info", "--name", name]).ok().stdout
}

const ESCAPE_PY: &str = r#"import json, os, socket
cfg = json.load(open("targets.json"))

def attempt(name, fn):
    try:
        print("DONE %s: %s" % (name, fn()))
    except Exception as e:
        print("BLOCKED %s: %s: %s" % (name, type(e).__name__, e))

def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return socket.inet_ntoa(int(f[2], 16).to_bytes(4, "little"))
    return None

def connect(host, port):
    c = socket.create_connection((host, port), timeout=3)
    c.close()
    return "connected"

print("uid %d home %s" % (os.getuid(), os.environ["HOME"]))
attempt("read /etc/shadow", lambda: open("/etc/shadow").read()[:10])
for p in cfg["writes"]:
    attempt("write " + p, lambda p=p: open(p, "w").write("escaped"))
for port in cfg["ports"]:
    attempt("connect loopback:%d" % port, lambda port=port: connect("127.0.0.1", port))
    gw = gateway()
    attempt("connect gateway:%d" % port, lambda port=port: connect(gw, port))
os.makedirs(os.environ["DEPLOY_PKG"])
open(os.path.join(os.environ["DEPLOY_PKG"], "main.py"), "w").write("def main():\n    return 'built'\n")
"#;

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

#[test]
fn a_hostile_build_cannot_read_secrets_write_outside_or_reach_the_server() {
    let Some(s) = setup() else { return };
    let tag = format!("fission-buildsb-{}", std::process::id());
    let writes = [
        format!("/usr/{tag}"),
        format!("/root/{tag}"),
        format!("/tmp/{tag}-marker"),
        format!("/{tag}"),
        s.server.data_dir.join(&tag).display().to_string(),
    ];
    // A host service listening on every interface: reachable from the slot only if its traffic
    // could reach this host at all.
    let host_service = TcpListener::bind("0.0.0.0:0").expect("bind");
    host_service.set_nonblocking(true).expect("nonblocking");
    let ports = [
        port_of(&s.server.controller),
        port_of(&s.server.router),
        host_service.local_addr().expect("addr").port(),
    ];
    let targets = format!(
        r#"{{"writes": [{}], "ports": [{}]}}"#,
        writes
            .iter()
            .map(|w| format!("{w:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let info = build_while_serving(
        &s,
        "hostile",
        "escape",
        &[("escape.py", ESCAPE_PY), ("targets.json", &targets)],
        "python3 escape.py",
    );
    eprintln!("{info}");
    assert!(info.contains("succeeded"), "{info}");
    assert!(info.contains("The build runs in a sandbox"), "{info}");
    assert!(info.contains("uid 1000 home /tmp"), "{info}");
    assert!(
        info.contains("BLOCKED read /etc/shadow: FileNotFoundError"),
        "{info}"
    );
    for w in &writes {
        assert!(!Path::new(w).exists(), "{w} appeared on the host");
        // The slot's own /tmp is private: writing there works and stays there.
        if !w.starts_with("/tmp/") {
            assert!(info.contains(&format!("BLOCKED write {w}")), "{w}: {info}");
        }
    }
    for p in ports {
        for via in ["loopback", "gateway"] {
            let line = format!("BLOCKED connect {via}:{p}:");
            assert!(info.contains(&line), "{line}: {info}");
        }
    }
    assert!(
        host_service.accept().is_err(),
        "the host service got a connection from the build"
    );
}

#[test]
fn a_fork_bomb_build_hits_the_process_limit_and_fails_cleanly() {
    let Some(s) = setup() else { return };
    let bomb = "#!/bin/sh\necho starting a fork bomb\nbomb() { bomb | bomb & }\nbomb\nsleep 5\necho still here\nexit 1\n";
    // Default limits: 1 GiB holds 1024 small shells, so the process limit stops the bomb.
    let info = build_while_serving(&s, "roomy", "bomb", &[("bomb.sh", bomb)], "./bomb.sh");
    assert!(info.contains("Status:      failed"), "{info}");
    assert!(info.contains("starting a fork bomb"), "{info}");
    assert!(
        info.contains("it reached the build's limit of 1024 processes and threads"),
        "{info}"
    );
    // The server still builds (the bomb left nothing behind that holds a build slot).
    let after = build_while_serving(
        &s,
        "roomy",
        "after-bomb",
        &[(
            "build.sh",
            "#!/bin/sh\ncp -r \"$SRC_PKG\" \"$DEPLOY_PKG\"\n",
        )],
        "./build.sh",
    );
    assert!(after.contains("succeeded"), "{after}");
}

#[test]
fn a_build_that_fills_memory_is_oom_killed_and_says_so() {
    let Some(s) = setup() else { return };
    let fill = "print('filling memory', flush=True)\nchunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n";
    let info = build_while_serving(
        &s,
        "hostile",
        "fill",
        &[("fill.py", fill)],
        "python3 fill.py",
    );
    assert!(info.contains("Status:      failed"), "{info}");
    assert!(info.contains("filling memory"), "{info}");
    assert!(
        info.contains("out of memory (the build's memory limit is 128 MiB)"),
        "{info}"
    );
}

/// `--sandbox none` keeps builds as plain processes of the server, and the build log says so.
#[test]
fn with_sandbox_none_builds_run_unisolated_and_the_log_says_so() {
    use std::io::BufRead as _;
    use std::os::unix::fs::MetadataExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(BIN)
        .args(["server", "--sandbox", "none", "--grace-period", "1"])
        .args(["--controller-listen", "127.0.0.1:0"])
        .args(["--router-listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().expect("stdout");
    // Kept open until the server is killed: it prints more after the ready line.
    let mut lines = std::io::BufReader::new(stdout).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("fission server ready"));
    let controller = ready
        .as_deref()
        .and_then(|l| l.split("controller ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_owned);
    let fission = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env("FISSION_URL", controller.as_deref().unwrap_or_default())
            .env_remove("FISSION_DEFAULT_NAMESPACE")
            .output()
            .expect("fission")
    };
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(
        src.join("build.sh"),
        "echo \"build uid $(id -u)\"\ncp -r \"$SRC_PKG\" \"$DEPLOY_PKG\"\n",
    )
    .expect("write");
    let info = controller.as_ref().map(|_| {
        fission(&[
            "env",
            "create",
            "--name",
            "python",
            "--image",
            "fission/python-env",
        ]);
        fission(&[
            "pkg",
            "create",
            "--name",
            "plain",
            "--env",
            "python",
            "--src",
            &format!("{}/*", src.display()),
            "--buildcmd",
            "sh build.sh",
        ]);
        let out = fission(&["pkg", "info", "--name", "plain"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    let _ = child.kill();
    let _ = child.wait();
    drop(lines);
    let info = info.expect("the server started with --sandbox none");
    assert!(info.contains("succeeded"), "{info}");
    assert!(
        info.contains(
            "The build runs as plain processes of the server (--sandbox none: not isolated)"
        ),
        "{info}"
    );
    assert!(
        info.contains(&format!(
            "build uid {}",
            std::fs::metadata(&src).expect("meta").uid()
        )),
        "{info}"
    );
}
