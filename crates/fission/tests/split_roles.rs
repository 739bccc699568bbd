//! End-to-end: the server split into roles as Fission runs it — controller, router and
//! executor as three processes sharing a real API server's state (etcd + kube-apiserver on
//! loopback). The CLI talks to the controller, calls go through the router, which leases
//! instances from the executor over Fission's executor API; the executor reads a large
//! package archive from the controller's storagesvc endpoint.

mod support;

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube_test_cluster::{TestCluster, shared};
use support::{BIN, eventually_blocking, http, require_functions, write};

/// One `fission server --role …` process, stopped on drop.
struct RoleProcess {
    role: &'static str,
    child: Child,
    log: PathBuf,
}

impl RoleProcess {
    fn start(role: &'static str, cluster: &TestCluster, dir: &Path, args: &[String]) -> Self {
        let log = dir.join(format!("{role}.log"));
        let mut child = Command::new(BIN)
            .args([
                "server",
                "--role",
                role,
                "--store",
                "kubernetes",
                "--kubeconfig",
            ])
            .arg(&cluster.kubeconfig)
            .arg("--data-dir")
            .arg(dir.join(role))
            .args(["--grace-period", "2"])
            .args(args)
            .env("RUST_LOG", "info")
            // As in the chart: the controller requires the token, executors send it for archives.
            .env("FISSION_AUTH_TOKEN", API_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("fission server ready") => {
                    assert!(line.contains(&format!("role {role}")), "{line}");
                    return Self { role, child, log };
                }
                Ok(_) => {}
                Err(_) => {
                    let exited = child.try_wait().ok().flatten();
                    if exited.is_some() || Instant::now() > deadline {
                        let _ = child.kill();
                        panic!(
                            "{role} did not start ({exited:?}): {}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                }
            }
        }
    }

    fn log(&self) -> String {
        format!(
            "--- {} log ---\n{}",
            self.role,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The API token every role of the test shares.
const API_TOKEN: &str = "split-roles-test-token-0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Bytes zip cannot shrink (an LCG), so the deployment stays above the 256 KiB literal limit
/// and travels through the controller's archive store.
fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as u8
        })
        .collect()
}

#[test]
fn controller_router_and_executor_as_three_processes_serve_functions_and_archives() {
    let Some(()) = require_functions() else {
        return;
    };
    let Some(cluster) = shared() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (pc, pr, pe) = (free_port(), free_port(), free_port());
    let controller_url = format!("http://127.0.0.1:{pc}");
    let router_url = format!("http://127.0.0.1:{pr}");
    let executor_url = format!("http://127.0.0.1:{pe}");
    let executor = RoleProcess::start(
        "executor",
        cluster,
        dir.path(),
        &[
            format!("--executor-listen=127.0.0.1:{pe}"),
            format!("--controller-url={controller_url}"),
        ],
    );
    let controller = RoleProcess::start(
        "controller",
        cluster,
        dir.path(),
        &[
            format!("--controller-listen=127.0.0.1:{pc}"),
            format!("--router-url={router_url}"),
        ],
    );
    let router = RoleProcess::start(
        "router",
        cluster,
        dir.path(),
        &[
            format!("--router-listen=127.0.0.1:{pr}"),
            format!("--executor-url={executor_url}"),
        ],
    );
    let logs = || format!("{}\n{}\n{}", controller.log(), router.log(), executor.log());
    let fission = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("FISSION_URL", &controller_url)
            .env("FISSION_ROUTER_URL", &router_url)
            .env("FISSION_AUTH_TOKEN", API_TOKEN)
            .env_remove("FISSION_DEFAULT_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .expect("run fission");
        assert!(
            out.status.success(),
            "fission {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let get = |path: &str| {
        let r = http().get(format!("{router_url}{path}")).send().ok()?;
        Some((r.status().as_u16(), r.text().ok()?))
    };

    // A small function: env, function and route made through the controller, called through
    // the router, run by the executor.
    let code = write(
        dir.path(),
        "split.js",
        "module.exports = async () => ({ status: 200, body: 'hello from three processes\\n' });\n",
    );
    fission(&[
        "env",
        "create",
        "--name",
        "split-node",
        "--image",
        "fission/node-env",
    ]);
    fission(&[
        "fn",
        "create",
        "--name",
        "split-hello",
        "--env",
        "split-node",
        "--code",
        code.to_str().expect("path"),
    ]);
    fission(&[
        "route",
        "create",
        "--name",
        "split-hello",
        "--function",
        "split-hello",
        "--url",
        "/split-hello",
        "--method",
        "GET",
    ]);
    let (status, body) = eventually_blocking(
        Duration::from_secs(60),
        "the function to answer through the router",
        || get("/split-hello").filter(|(s, _)| *s == 200),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "hello from three processes\n"),
        "{}",
        logs()
    );
    // Warm calls reuse the executor's lease bookkeeping: each is released again.
    for _ in 0..5 {
        assert_eq!(get("/split-hello").map(|(s, _)| s), Some(200));
    }

    // A --deploy archive above the literal limit: stored by the controller, fetched over HTTP
    // by the executor (which has no archive store of its own).
    let src = dir.path().join("big");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(
        src.join("index.js"),
        "const fs = require('fs');\n\
         const pad = fs.readFileSync(__dirname + '/pad.bin');\n\
         module.exports = async () => ({ status: 200, body: 'archive of ' + pad.length + ' bytes\\n' });\n",
    )
    .expect("write");
    std::fs::write(src.join("pad.bin"), incompressible(300 * 1024)).expect("write");
    let glob = format!("{}/*", src.display());
    fission(&[
        "fn",
        "create",
        "--name",
        "split-big",
        "--env",
        "split-node",
        "--deploy",
        &glob,
    ]);
    fission(&[
        "route",
        "create",
        "--name",
        "split-big",
        "--function",
        "split-big",
        "--url",
        "/split-big",
        "--method",
        "GET",
    ]);
    let deployment = cluster.kubectl_ok([
        "get",
        "packages.fission.io",
        "-o",
        "jsonpath={range .items[*]}{.spec.deployment.type}={.spec.deployment.url}{\"\\n\"}{end}",
    ]);
    assert!(
        deployment
            .lines()
            .any(|l| l.starts_with("url=") && l.contains("/v1/archive?id=")),
        "the big package should live in the archive store: {deployment}"
    );
    let (status, body) = eventually_blocking(
        Duration::from_secs(60),
        "the archive function to answer",
        || get("/split-big").filter(|(s, _)| *s == 200),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "archive of 307200 bytes\n"),
        "{}",
        logs()
    );

    // The executor's errors reach the caller through the router, as the same variant: code
    // the runtime cannot load fails its specialization, named with the function.
    let broken = write(dir.path(), "broken.js", "module.exports = (;\n");
    fission(&[
        "fn",
        "create",
        "--name",
        "split-broken",
        "--env",
        "split-node",
        "--code",
        broken.to_str().expect("path"),
    ]);
    fission(&[
        "route",
        "create",
        "--name",
        "split-broken",
        "--function",
        "split-broken",
        "--url",
        "/split-broken",
        "--method",
        "GET",
    ]);
    let (status, body) = eventually_blocking(
        Duration::from_secs(60),
        "the broken function's route to exist",
        || get("/split-broken").filter(|(s, _)| *s != 404),
    );
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("[default/split-broken] error specializing function"),
        "{body}\n{}",
        logs()
    );
}

#[test]
fn a_split_role_on_the_embedded_store_refuses_to_start_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["server", "--role", "router", "--data-dir"])
        .arg(dir.path())
        .args(["--router-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .expect("run server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("Error: "), "{stderr}");
    assert!(
        stderr.contains("--role router needs --store kubernetes"),
        "{stderr}"
    );
}

/// A module answering `body` with `status`.
fn answers(body: &str, status: u16) -> String {
    format!("module.exports = async () => ({{ status: {status}, body: '{body}' }});\n")
}

/// Cells of `column` in `table`, by the first column.
fn column(table: &str, name: &str, column: &str) -> String {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let start = header
        .find(column)
        .unwrap_or_else(|| panic!("{column} in {table}"));
    let line = lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} in {table}"));
    line.get(start..)
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn canaries_advance_and_roll_back_from_the_calls_of_two_routers_and_fn_list_counts_the_executors_instances()
 {
    let Some(()) = require_functions() else {
        return;
    };
    // A cluster of this test's own: every controller runs a canary manager over the whole store.
    let Some(cluster) = TestCluster::start_or_skip() else {
        return;
    };
    cluster.apply_crds();
    let dir = tempfile::tempdir().expect("tempdir");
    let (pc, pe) = (free_port(), free_port());
    let controller_url = format!("http://127.0.0.1:{pc}");
    let executor_url = format!("http://127.0.0.1:{pe}");
    let executor = RoleProcess::start(
        "executor",
        &cluster,
        dir.path(),
        &[
            format!("--executor-listen=127.0.0.1:{pe}"),
            format!("--controller-url={controller_url}"),
        ],
    );
    let router_urls: Vec<String> = (0..2)
        .map(|_| format!("http://127.0.0.1:{}", free_port()))
        .collect();
    let controller = RoleProcess::start(
        "controller",
        &cluster,
        dir.path(),
        &[
            format!("--controller-listen=127.0.0.1:{pc}"),
            format!("--router-url={}", router_urls[0]),
        ],
    );
    let routers: Vec<RoleProcess> = router_urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let listen = url.trim_start_matches("http://");
            let dir = dir.path().join(format!("r{i}"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            RoleProcess::start(
                "router",
                &cluster,
                &dir,
                &[
                    format!("--router-listen={listen}"),
                    format!("--executor-url={executor_url}"),
                    format!("--controller-url={controller_url}"),
                ],
            )
        })
        .collect();
    let logs = || {
        let routers: Vec<String> = routers.iter().map(RoleProcess::log).collect();
        format!(
            "{}\n{}\n{}",
            controller.log(),
            routers.join("\n"),
            executor.log()
        )
    };
    let fission = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("FISSION_URL", &controller_url)
            .env("FISSION_ROUTER_URL", &router_urls[0])
            .env("FISSION_AUTH_TOKEN", API_TOKEN)
            .env_remove("FISSION_DEFAULT_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .expect("run fission");
        assert!(
            out.status.success(),
            "fission {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    fission(&[
        "env",
        "create",
        "--name",
        "canary-node",
        "--image",
        "fission/node-env",
    ]);
    // Two rollouts at once: `good` whose new version answers 200, `bad` whose new one fails.
    for (shop, new_status) in [("good", 200), ("bad", 500)] {
        for (version, status) in [("old", 200), ("new", new_status)] {
            let name = format!("{shop}-{version}");
            let code = write(dir.path(), &format!("{name}.js"), &answers(version, status));
            fission(&[
                "fn",
                "create",
                "--name",
                &name,
                "--env",
                "canary-node",
                "--code",
                code.to_str().expect("path"),
            ]);
        }
        fission(&[
            "route",
            "create",
            "--name",
            shop,
            "--url",
            &format!("/{shop}"),
            "--function",
            &format!("{shop}-old"),
            "--weight",
            "100",
            "--function",
            &format!("{shop}-new"),
            "--weight",
            "0",
        ]);
        for url in &router_urls {
            eventually_blocking(
                Duration::from_secs(60),
                "the route to answer on every router",
                || {
                    let r = http().get(format!("{url}/{shop}")).send().ok()?;
                    (r.status().as_u16() == 200).then_some(())
                },
            );
        }
    }

    // INSTANCES comes from the executor process (its report reaches the controller within a
    // second or so).
    let list = eventually_blocking(
        Duration::from_secs(20),
        "fn list to count the old functions' instances",
        || {
            let list = fission(&["fn", "list"]);
            let counted = ["good-old", "bad-old"]
                .iter()
                .all(|f| column(&list, f, "INSTANCES") != "0");
            counted.then_some(list)
        },
    );
    // The called functions have instances (the executor may have scaled out), the uncalled
    // one none.
    for f in ["good-old", "bad-old"] {
        let n: usize = column(&list, f, "INSTANCES").parse().expect("a count");
        assert!(n >= 1, "{list}");
    }
    assert_eq!(column(&list, "good-new", "INSTANCES"), "0", "{list}");

    for shop in ["good", "bad"] {
        fission(&[
            "canary-config",
            "create",
            "--name",
            shop,
            "--httptrigger",
            shop,
            "--newfunction",
            &format!("{shop}-new"),
            "--oldfunction",
            &format!("{shop}-old"),
            "--increment-step",
            "50",
            "--increment-interval",
            "2s",
            "--failure-threshold",
            "10",
        ]);
    }
    // Traffic through both routers, alternately, until both rollouts end.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, urls) = (stop.clone(), router_urls.clone());
        std::thread::spawn(move || {
            let client = http();
            let mut seen = Vec::new();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for shop in ["good", "bad"] {
                    let url = format!("{}/{shop}", urls[i % urls.len()]);
                    if let Ok(r) = client.get(url).send() {
                        seen.push((
                            i % urls.len(),
                            shop,
                            r.status().as_u16(),
                            r.text().unwrap_or_default(),
                        ));
                    }
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        })
    };
    let canary = |name: &str| {
        column(
            &fission(&["canary-config", "get", "--name", name]),
            name,
            "STATUS",
        )
    };
    let outcome = eventually_blocking(Duration::from_secs(90), "both canaries to finish", || {
        let (good, bad) = (canary("good"), canary("bad"));
        (good != "pending" && bad != "pending").then_some((good, bad))
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = traffic.join().expect("traffic");
    assert_eq!(
        outcome,
        ("succeeded".to_owned(), "failed".to_owned()),
        "{}",
        logs()
    );
    for router in 0..2 {
        assert!(
            seen.iter()
                .any(|(r, shop, _, body)| *r == router && *shop == "good" && body == "new"),
            "router {router} sent calls to the new version"
        );
    }
    assert!(
        seen.iter()
            .filter(|(_, shop, _, _)| *shop == "good")
            .all(|(_, _, status, _)| *status == 200),
        "no call of the healthy rollout failed"
    );
    let route = |name: &str| {
        let out = fission(&["route", "get", "--name", name]);
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        route("good").contains("good-new:100 good-old:0"),
        "{}",
        route("good")
    );
    assert!(
        route("bad").contains("bad-new:0 bad-old:100"),
        "{}",
        route("bad")
    );
    for url in &router_urls {
        let r = http().get(format!("{url}/bad")).send().expect("call");
        assert_eq!(
            (r.status().as_u16(), r.text().expect("body")),
            (200, "old".to_owned())
        );
    }
}
