//! newdeploy on a real node: `fission server --store kubernetes --instances pods` against
//! etcd + kube-apiserver + controller-manager + scheduler + containerd + kubelet on this
//! machine (scripts/k8s/node-cluster.sh). A newdeploy function is a Deployment, a Service and
//! a HorizontalPodAutoscaler; its pods load the function at startup (the fetcher's
//! `--specialize-on-startup`) before they turn Ready, and calls go to their ready endpoints.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_test_cluster::{NodeCluster, shared_node};
use support::pods::{PodServer, PodServerOptions, percentile, wait_for};
use support::{BIN, http, write};

/// The controller's API token in these tests.
const TOKEN: &str = "kube-newdeploy-test-token-0123456789abcdef";
/// Namespace of the function pods (and their Deployments, Services, HPAs).
const NS: &str = "fission-newdeploy-it";

/// Create `name` as a newdeploy function of `code` with `extra` flags, routed at `/name`.
fn newdeploy(server: &PodServer, name: &str, code: &std::path::Path, extra: &[&str]) {
    let mut args = vec![
        "fn",
        "create",
        "--name",
        name,
        "--env",
        "nodejs",
        "--executortype",
        "newdeploy",
        "--code",
        code.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    server.fission_ok(&args);
    let url = format!("/{name}");
    server.fission_ok(&[
        "route",
        "create",
        "--function",
        name,
        "--url",
        &url,
        "--method",
        "GET",
    ]);
}

/// `kubectl get <kind> -l functionName=<f>` with a jsonpath over the first item ("" if none).
fn first(node: &NodeCluster, kind: &str, function: &str, jsonpath: &str) -> String {
    let out = node.kubectl([
        "get",
        kind,
        "-n",
        NS,
        "-l",
        &format!("functionName={function},executorType=newdeploy"),
        "-o",
        &format!("jsonpath={{.items[0]{jsonpath}}}"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Names of `kind` objects of `function`.
fn names(node: &NodeCluster, kind: &str, function: &str) -> Vec<String> {
    node.kubectl_ok([
        "get",
        kind,
        "-n",
        NS,
        "-l",
        &format!("functionName={function},executorType=newdeploy"),
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// Everything on one server, in order, so the node runs one set of functions at a time.
#[test]
fn newdeploy_functions_run_as_deployments_on_a_real_kubelet() {
    let Some(node) = shared_node(std::path::Path::new(BIN)) else {
        return;
    };
    node.kubectl_ok(["create", "namespace", NS]);
    let server = PodServer::start(
        node,
        PodServerOptions {
            rust_log: "info,fission_executor_kube=debug,fission_executor=debug",
            ..PodServerOptions::new(NS, TOKEN)
        },
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // No pool: newdeploy functions do not use one.
    server.fission_ok(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--poolsize",
        "0",
    ]);

    min_scale_one_is_ready_before_the_first_call_and_answers(node, &server, dir.path());
    min_scale_zero_scales_to_zero_when_idle_and_starts_cold_from_zero(node, &server, dir.path());
    an_update_rolls_without_a_failed_request(node, &server, dir.path());
    delete_removes_the_deployment_service_and_hpa(node, &server);
}

fn min_scale_one_is_ready_before_the_first_call_and_answers(
    node: &NodeCluster,
    server: &PodServer,
    dir: &std::path::Path,
) {
    let hello = write(
        dir,
        "hello.js",
        "module.exports = async function(context) {\n  return { status: 200, body: \"Hello, world!\\n\" };\n}\n",
    );
    newdeploy(
        server,
        "nd",
        &hello,
        &["--minscale", "1", "--maxscale", "3", "--fntimeout", "5"],
    );
    // A Ready pod of its Deployment before any call.
    wait_for(
        node,
        server,
        Duration::from_secs(120),
        "nd's Deployment to have one ready replica",
        || (first(node, "deployments", "nd", ".status.readyReplicas") == "1").then_some(()),
    );
    let deployment = names(node, "deployments", "nd");
    assert_eq!(deployment.len(), 1, "{deployment:?}");
    assert!(
        deployment[0].starts_with("newdeploy-nd-default-"),
        "{deployment:?}"
    );
    assert_eq!(
        first(
            node,
            "deployments",
            "nd",
            ".spec.strategy.rollingUpdate.maxUnavailable"
        ),
        "0"
    );
    // Service (port 80 → the runtime's 8888) and HPA with the function's bounds, same name.
    assert_eq!(names(node, "services", "nd"), deployment);
    assert_eq!(
        first(node, "services", "nd", ".spec.ports[0].targetPort"),
        "8888"
    );
    assert_eq!(names(node, "hpa", "nd"), deployment);
    assert_eq!(first(node, "hpa", "nd", ".spec.minReplicas"), "1");
    assert_eq!(first(node, "hpa", "nd", ".spec.maxReplicas"), "3");
    assert_eq!(
        first(node, "hpa", "nd", ".spec.scaleTargetRef.name"),
        deployment[0]
    );

    // `fn list` counts its ready pod (INSTANCES, the last column).
    wait_for(
        node,
        server,
        Duration::from_secs(20),
        "fn list to show one instance of nd",
        || {
            let list = server.fission_ok(&["fn", "list"]);
            list.lines()
                .any(|l| {
                    l.split_whitespace().next() == Some("nd")
                        && l.split_whitespace().last() == Some("1")
                })
                .then_some(())
        },
    );
    let (status, body) = wait_for(
        node,
        server,
        Duration::from_secs(30),
        "GET /nd to answer",
        || server.get("/nd").filter(|(s, _)| *s != 404),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello, world!\n"),
        "server log:\n{}",
        server.log_text()
    );

    // Warm latency, through the router and straight to the same pod (printed, not asserted).
    let pod_ip = first(node, "pods", "nd", ".status.podIP");
    let time = |url: &str| {
        let client = http();
        let mut v: Vec<Duration> = (0..300)
            .map(|_| {
                let t0 = Instant::now();
                let r = client.get(url).send().expect("call");
                assert_eq!(r.status().as_u16(), 200);
                let _ = r.bytes();
                t0.elapsed()
            })
            .collect();
        v.sort();
        v
    };
    let via_router = time(&format!("{}/nd", server.router));
    let direct = time(&format!("http://{pod_ip}:8888/"));
    eprintln!(
        "BENCH newdeploy warm: via router p50 {:?} p99 {:?}; same pod direct p50 {:?} p99 {:?} (n=300 each)",
        percentile(&via_router, 0.5),
        percentile(&via_router, 0.99),
        percentile(&direct, 0.5),
        percentile(&direct, 0.99),
    );
}

fn min_scale_zero_scales_to_zero_when_idle_and_starts_cold_from_zero(
    node: &NodeCluster,
    server: &PodServer,
    dir: &std::path::Path,
) {
    let code = write(
        dir,
        "zero.js",
        "module.exports = async function(context) { return { status: 200, body: 'from zero' }; }\n",
    );
    newdeploy(
        server,
        "zero",
        &code,
        &[
            "--minscale",
            "0",
            "--maxscale",
            "2",
            "--idletimeout",
            "2",
            "--fntimeout",
            "3",
        ],
    );
    // Created at zero replicas; the HPA cannot hold zero, so it says one (and is inactive).
    wait_for(
        node,
        server,
        Duration::from_secs(30),
        "zero's Deployment",
        || (first(node, "deployments", "zero", ".spec.replicas") == "0").then_some(()),
    );
    assert_eq!(first(node, "hpa", "zero", ".spec.minReplicas"), "1");
    let mut cold = Vec::new();
    for round in 0..3 {
        // No ready pod: this call scales the Deployment up and waits for its pod.
        let ready = first(node, "deployments", "zero", ".status.readyReplicas");
        assert!(ready.is_empty() || ready == "0", "round {round}: {ready}");
        // Until the router has the route it answers 404 without touching the executor; only
        // the call that reached the function is timed.
        let (answer, took) = wait_for(node, server, Duration::from_secs(60), "a cold call", || {
            let t0 = Instant::now();
            server
                .get("/zero")
                .filter(|(s, _)| *s != 404)
                .map(|a| (Some(a), t0.elapsed()))
        });
        cold.push(took);
        assert_eq!(
            answer,
            Some((200, "from zero".to_owned())),
            "round {round}; server log:\n{}",
            server.log_text()
        );
        // idletimeout 2 s, checked every 5 s: back to zero replicas and no ready pod.
        wait_for(
            node,
            server,
            Duration::from_secs(40),
            "zero to scale back to zero",
            || {
                (first(node, "deployments", "zero", ".spec.replicas") == "0"
                    && matches!(
                        first(node, "deployments", "zero", ".status.readyReplicas").as_str(),
                        "" | "0"
                    ))
                .then_some(())
            },
        );
    }
    cold.sort();
    eprintln!(
        "BENCH newdeploy cold start from zero through the router: p50 {:?} (min {:?}, max {:?}, n={})",
        percentile(&cold, 0.5),
        cold[0],
        cold[cold.len() - 1],
        cold.len()
    );
}

fn an_update_rolls_without_a_failed_request(
    node: &NodeCluster,
    server: &PodServer,
    dir: &std::path::Path,
) {
    let v2 = write(
        dir,
        "hello2.js",
        "module.exports = async function(context) {\n  return { status: 200, body: \"Hello, v2!\\n\" };\n}\n",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let saw_v2 = Arc::new(AtomicBool::new(false));
    let url = format!("{}/nd", server.router);
    let looping = {
        let (stop, calls, failures, saw_v2) = (
            stop.clone(),
            calls.clone(),
            failures.clone(),
            saw_v2.clone(),
        );
        std::thread::spawn(move || {
            let client = http();
            while !stop.load(Ordering::Relaxed) {
                calls.fetch_add(1, Ordering::Relaxed);
                match client.get(&url).send() {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.text().unwrap_or_default();
                        match (status, body.as_str()) {
                            (200, "Hello, world!\n") => {}
                            (200, "Hello, v2!\n") => saw_v2.store(true, Ordering::Relaxed),
                            _ => failures
                                .lock()
                                .expect("failures")
                                .push(format!("{status} {body}")),
                        }
                    }
                    Err(e) => failures.lock().expect("failures").push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    server.fission_ok(&[
        "fn",
        "update",
        "--name",
        "nd",
        "--code",
        v2.to_str().expect("utf-8 path"),
    ]);
    wait_for(
        node,
        server,
        Duration::from_secs(120),
        "the new code to answer",
        || saw_v2.load(Ordering::Relaxed).then_some(()),
    );
    // Until the rollout is over: one ready pod, of the new version only.
    wait_for(
        node,
        server,
        Duration::from_secs(120),
        "the rollout to finish",
        || {
            let d = |p: &str| first(node, "deployments", "nd", p);
            (d(".status.updatedReplicas") == "1"
                && d(".status.replicas") == "1"
                && d(".status.readyReplicas") == "1")
                .then_some(())
        },
    );
    // And a moment more, while the old pod drains.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    looping.join().expect("client thread");
    let failures = failures.lock().expect("failures");
    assert!(
        failures.is_empty(),
        "{} of {} calls failed during the rollout: {:?}\nserver log:\n{}",
        failures.len(),
        calls.load(Ordering::Relaxed),
        &failures[..failures.len().min(10)],
        server.log_text()
    );
    assert_eq!(server.get("/nd"), Some((200, "Hello, v2!\n".to_owned())));
    eprintln!(
        "rollout: {} calls, none failed",
        calls.load(Ordering::Relaxed)
    );
}

fn delete_removes_the_deployment_service_and_hpa(node: &NodeCluster, server: &PodServer) {
    for f in ["nd", "zero"] {
        server.fission_ok(&["fn", "delete", "--name", f]);
    }
    for f in ["nd", "zero"] {
        wait_for(
            node,
            server,
            Duration::from_secs(30),
            "the function's objects to be deleted",
            || {
                ["deployments", "services", "hpa"]
                    .iter()
                    .all(|k| names(node, k, f).is_empty())
                    .then_some(())
            },
        );
    }
}
