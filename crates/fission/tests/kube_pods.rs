//! End-to-end on a real node: `fission server --store kubernetes --instances pods` against
//! etcd + kube-apiserver + controller-manager + scheduler + containerd + kubelet on this
//! machine (scripts/k8s/node-cluster.sh). Functions run in pool pods (runtime container +
//! `fission fetcher` sidecar, images built from this machine's packages), claimed and
//! specialized by the executor, called at their pod IPs.

mod support;

use std::time::{Duration, Instant};

use kube_test_cluster::{NodeCluster, shared_node};
use support::pods::{PodServer, PodServerOptions, percentile, wait_for};
use support::{BIN, http, write};

/// The controller's API token in these tests.
const TOKEN: &str = "kube-pods-test-token-0123456789abcdef";

fn node() -> Option<&'static NodeCluster> {
    shared_node(std::path::Path::new(BIN))
}

/// `kubectl get pods` in `ns` with `selector`: (name, podIP, ready, terminating) per pod.
fn pods(node: &NodeCluster, ns: &str, selector: &str) -> Vec<(String, String, bool, bool)> {
    let out = node.kubectl_ok([
        "get", "pods", "-n", ns, "-l", selector, "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.status.conditions[?(@.type==\"Ready\")].status} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_owned(),
                f.get(1).copied().unwrap_or("").to_owned(),
                f.get(2) == Some(&"True"),
                f.get(3).is_some_and(|t| !t.is_empty()),
            )
        })
        .collect()
}

/// Everything on one server, in order, so the node runs one set of pools at a time.
#[test]
fn functions_run_in_claimed_pool_pods_on_a_real_kubelet() {
    let Some(node) = node() else { return };
    node.kubectl_ok(["create", "namespace", "fission-pods-it"]);
    let server = PodServer::start(node, PodServerOptions::new("fission-pods-it", TOKEN));
    let code = tempfile::tempdir().expect("tempdir");

    the_seed_walkthrough_answers_from_a_specialized_pool_pod(node, &server, code.path());
    two_concurrent_cold_calls_specialize_two_different_pods(node, &server, code.path());
    an_idle_pod_is_deleted_and_the_pool_refills(node, &server, code.path());
    measure_cold_and_warm_latency(node, &server, code.path());
    a_pool_holds_poolsize_generic_pods_and_no_claimed_spares(node, &server);
    let server = an_executor_restart_adopts_the_specialized_pods(node, server, code.path());
    an_environment_update_replaces_the_pool_deployment(node, &server);
    // A server that stops cleanly gives its Lease up (its specialized pods are left for the
    // next executor to adopt).
    let ns = server.namespace.clone();
    drop(server);
    let leases = node.kubectl_ok([
        "get",
        "leases",
        "-n",
        &ns,
        "-l",
        "fission-rs.io/executor-lease=true",
        "-o",
        "name",
    ]);
    assert_eq!(leases.trim(), "", "leases left after a clean stop");
}

/// Non-terminating pods of `selector`.
fn live_pods(node: &NodeCluster, ns: &str, selector: &str) -> Vec<(String, String, bool, bool)> {
    pods(node, ns, selector)
        .into_iter()
        .filter(|p| !p.3)
        .collect()
}

/// A pool holds `poolsize` generic pods; every claimed pod serves a function (the executor
/// keeps no claimed pods in reserve beside the pool Deployment's).
fn a_pool_holds_poolsize_generic_pods_and_no_claimed_spares(
    node: &NodeCluster,
    server: &PodServer,
) {
    let ns = &server.namespace;
    wait_for(
        node,
        server,
        Duration::from_secs(60),
        "poolsize (1) generic pods and only specialized claimed pods",
        || {
            let generic = live_pods(node, ns, "environmentName=nodejs,managed=true");
            let claimed = live_pods(node, ns, "environmentName=nodejs,managed=false");
            let specialized = live_pods(
                node,
                ns,
                "environmentName=nodejs,managed=false,functionName",
            );
            (generic.len() == 1 && claimed.len() == specialized.len()).then_some(())
        },
    );
}

/// The executor is SIGKILLed with a specialized pod serving `host`; a new one on the same
/// cluster answers the next calls from that same pod, without specializing again, and a
/// client calling all along sees only successes once the new server is up.
fn an_executor_restart_adopts_the_specialized_pods(
    node: &NodeCluster,
    mut first: PodServer,
    dir: &std::path::Path,
) -> PodServer {
    let code = write(
        dir,
        "host.js",
        "const os = require('os');\nmodule.exports = async function(context) {\n  return { status: 200, body: os.hostname() };\n}\n",
    );
    let code = code.to_str().expect("utf-8 path");
    first.fission_ok(&[
        "fn", "create", "--name", "host", "--env", "nodejs", "--code", code,
    ]);
    first.fission_ok(&[
        "route",
        "create",
        "--function",
        "host",
        "--url",
        "/host",
        "--method",
        "GET",
    ]);
    let (_, pod) = wait_for(
        node,
        &first,
        Duration::from_secs(60),
        "GET /host to answer",
        || first.get("/host").filter(|(s, _)| *s == 200),
    );
    let ns = first.namespace.clone();
    let owner = |pod: &str| {
        node.kubectl_ok([
            "get",
            "pod",
            "-n",
            &ns,
            pod,
            "-o",
            "jsonpath={.metadata.annotations.executorInstanceId}",
        ])
    };
    let first_owner = owner(&pod);
    let specializations = |pod: &str| {
        let log = node.kubectl_ok(["logs", "-n", &ns, pod, "-c", "fetcher"]);
        log.lines().filter(|l| l.contains("specialized")).count()
    };
    assert_eq!(specializations(&pod), 1, "the pod was specialized once");

    // The next server listens where the first did, so one client can call across the restart.
    let router_listen = first.router.trim_start_matches("http://").to_owned();
    let url = format!("{}/host", first.router);
    let _ = first.child.kill(); // SIGKILL: nothing cleaned up, the lease left to expire
    let _ = first.child.wait();
    drop(first);

    // One client, calling one at a time (so requestsPerPod 1 never asks for a second pod).
    type Seen = Vec<(Instant, Result<(u16, String), String>)>;
    let seen: std::sync::Arc<std::sync::Mutex<Seen>> = Default::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let client = http();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let sent = Instant::now();
                let answer = client
                    .get(&url)
                    .send()
                    .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
                    .map_err(|e| e.to_string());
                seen.lock().expect("lock").push((sent, answer));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let second = PodServer::start(
        node,
        PodServerOptions {
            router_listen: &router_listen,
            ..PodServerOptions::new(&ns, TOKEN)
        },
    );
    let ready_at = Instant::now();
    let after = |seen: &Seen| -> Vec<Result<(u16, String), String>> {
        seen.iter()
            .filter(|(sent, _)| *sent >= ready_at)
            .map(|(_, a)| a.clone())
            .collect()
    };
    // Calls wait for the adoption (up to a lease's duration: the first executor renewed its
    // lease just before the kill); let a few be answered after it.
    wait_for(
        node,
        &second,
        Duration::from_secs(60),
        "five answers after the restart",
        || (after(&seen.lock().expect("lock")).len() >= 5).then_some(()),
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    client.join().expect("client");
    let seen = seen.lock().expect("lock");
    for answer in after(&seen) {
        assert_eq!(
            answer.as_ref().map(|(s, b)| (*s, b.as_str())),
            Ok((200, pod.as_str())),
            "a call after the new server was up; server log:\n{}",
            second.log_text()
        );
    }
    assert_eq!(
        specializations(&pod),
        1,
        "the adopted pod was specialized again"
    );
    assert_ne!(
        owner(&pod),
        first_owner,
        "the pod still names the killed executor"
    );
    // The killed executor's Lease was deleted once it was found gone: only the new one's is left.
    let leases = node.kubectl_ok([
        "get",
        "leases",
        "-n",
        &ns,
        "-l",
        "fission-rs.io/executor-lease=true",
        "-o",
        "jsonpath={.items[*].spec.holderIdentity}",
    ]);
    assert_eq!(
        leases.split_whitespace().count(),
        1,
        "executor leases: {leases}"
    );
    assert!(!leases.contains(&first_owner), "executor leases: {leases}");
    second
}

/// An environment update brings a pool Deployment for the new version, deletes the old one,
/// and the new pool holds the new poolsize of generic pods.
fn an_environment_update_replaces_the_pool_deployment(node: &NodeCluster, server: &PodServer) {
    let ns = &server.namespace;
    let deployments = || {
        node.kubectl_ok([
            "get",
            "deployments",
            "-n",
            ns,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let before = deployments();
    assert_eq!(before.len(), 1, "one pool deployment: {before:?}");
    server.fission_ok(&["env", "update", "--name", "nodejs", "--poolsize", "2"]);
    let after = wait_for(
        node,
        server,
        Duration::from_secs(60),
        "the old pool deployment replaced by a new one",
        || {
            let now = deployments();
            (now.len() == 1 && now != before).then_some(now)
        },
    );
    assert!(after[0].starts_with("poolmgr-nodejs-default-"), "{after:?}");
    wait_for(
        node,
        server,
        Duration::from_secs(120),
        "poolsize (2) generic pods of the new pool",
        || {
            let generic = live_pods(
                node,
                ns,
                &format!("fission-rs.io/pool={},managed=true", after[0]),
            );
            let old = live_pods(
                node,
                ns,
                &format!("fission-rs.io/pool={},managed=true", before[0]),
            );
            (generic.len() == 2 && generic.iter().all(|p| p.2) && old.is_empty()).then_some(())
        },
    );
    // Calls are served by the new version's pods.
    let (status, _) = wait_for(node, server, Duration::from_secs(60), "GET /host", || {
        server.get("/host").filter(|(s, _)| *s == 200)
    });
    assert_eq!(status, 200);
}

/// Figures for BENCHMARKS.md (printed, never asserted): pool-hit cold start through the
/// router, and warm latency through the router against the same pod called directly.
fn measure_cold_and_warm_latency(node: &NodeCluster, server: &PodServer, dir: &std::path::Path) {
    let code = write(
        dir,
        "bench.js",
        "module.exports = async function(context) { return { status: 200, body: 'ok' }; }\n",
    );
    let ns = server.namespace.clone();
    let mut cold = Vec::new();
    for i in 0..5 {
        let name = format!("cold{i}");
        let url = format!("/{name}");
        server.fission_ok(&[
            "fn",
            "create",
            "--name",
            &name,
            "--env",
            "nodejs",
            "--code",
            code.to_str().expect("utf-8 path"),
        ]);
        server.fission_ok(&[
            "route",
            "create",
            "--function",
            &name,
            "--url",
            &url,
            "--method",
            "GET",
        ]);
        // Until the router has the route it answers 404 without touching the executor; and a
        // claimed generic pod must be waiting (the pool refilled after the last claim).
        std::thread::sleep(Duration::from_secs(6));
        // Only the call that reached the function is timed.
        let (status, took) = wait_for(node, server, Duration::from_secs(30), "a cold call", || {
            let t0 = Instant::now();
            server
                .get(&url)
                .filter(|(s, _)| *s != 404)
                .map(|(s, _)| (s, t0.elapsed()))
        });
        cold.push(took);
        assert_eq!(status, 200, "server log:\n{}", server.log_text());
    }
    let pod_ip = pods(node, &ns, "functionName=cold0,managed=false")
        .first()
        .map(|p| p.1.clone())
        .expect("cold0's pod");
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
    let via_router = time(&format!("{}/cold0", server.router));
    let direct = time(&format!("http://{pod_ip}:8888/"));
    cold.sort();
    eprintln!(
        "BENCH pods: pool-hit cold start through the router p50 {:?} (min {:?}, max {:?}, n={}); \
         warm via router p50 {:?} p99 {:?}; same pod direct p50 {:?} p99 {:?} (n=300 each)",
        percentile(&cold, 0.5),
        cold[0],
        cold[cold.len() - 1],
        cold.len(),
        percentile(&via_router, 0.5),
        percentile(&via_router, 0.99),
        percentile(&direct, 0.5),
        percentile(&direct, 0.99),
    );
}

fn the_seed_walkthrough_answers_from_a_specialized_pool_pod(
    node: &NodeCluster,
    server: &PodServer,
    dir: &std::path::Path,
) {
    server.fission_ok(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--poolsize",
        "1",
    ]);
    // The pool Deployment comes up with the environment, before any call.
    let ns = server.namespace.clone();
    wait_for(
        node,
        server,
        Duration::from_secs(120),
        "a ready pool pod",
        || {
            pods(node, &ns, "environmentName=nodejs,managed=true")
                .iter()
                .any(|p| p.2)
                .then_some(())
        },
    );
    let hello = write(
        dir,
        "hello.js",
        "module.exports = async function(context) {\n  return { status: 200, body: \"Hello, world!\\n\" };\n}\n",
    );
    server.fission_ok(&[
        "fn",
        "create",
        "--name",
        "hello",
        "--env",
        "nodejs",
        "--code",
        hello.to_str().expect("utf-8 path"),
    ]);
    server.fission_ok(&[
        "route",
        "create",
        "--function",
        "hello",
        "--url",
        "/hello",
        "--method",
        "GET",
    ]);
    let (status, body) = wait_for(
        node,
        server,
        Duration::from_secs(60),
        "GET /hello to answer 200",
        || server.get("/hello").filter(|(s, _)| *s == 200),
    );
    assert_eq!((status, body.as_str()), (200, "Hello, world!\n"));

    // It came from a pod the executor claimed and labelled as Fission does.
    let specialized = wait_for(
        node,
        server,
        Duration::from_secs(20),
        "one pod labelled functionName=hello,managed=false",
        || {
            let p = pods(node, &ns, "functionName=hello,managed=false");
            (p.len() == 1).then_some(p)
        },
    );
    let svc_host = node.kubectl_ok([
        "get",
        "pod",
        "-n",
        &ns,
        &specialized[0].0,
        "-o",
        "jsonpath={.metadata.annotations.svcHost}",
    ]);
    assert_eq!(svc_host, format!("{}:8888", specialized[0].1));
    // The pool refilled: the claimed pod left the Deployment, which replaced it.
    wait_for(
        node,
        server,
        Duration::from_secs(60),
        "the pool to refill after a claim",
        || {
            pods(node, &ns, "environmentName=nodejs,managed=true")
                .iter()
                .any(|p| p.2)
                .then_some(())
        },
    );
    let deployments = node.kubectl_ok([
        "get",
        "deployments",
        "-n",
        &ns,
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert!(
        deployments.starts_with("poolmgr-nodejs-default-"),
        "pool deployment name: {deployments}"
    );
    // Warm calls reuse that pod.
    for _ in 0..5 {
        assert_eq!(
            server.get("/hello"),
            Some((200, "Hello, world!\n".to_owned()))
        );
    }
    assert_eq!(pods(node, &ns, "functionName=hello,managed=false").len(), 1);
}

fn two_concurrent_cold_calls_specialize_two_different_pods(
    node: &NodeCluster,
    server: &PodServer,
    dir: &std::path::Path,
) {
    // Answers with the pod's name after a pause, so two calls overlap.
    let slow = write(
        dir,
        "whoami.js",
        "const os = require('os');\nmodule.exports = async function(context) {\n  await new Promise(r => setTimeout(r, 1500));\n  return { status: 200, body: os.hostname() };\n}\n",
    );
    server.fission_ok(&[
        "fn",
        "create",
        "--name",
        "whoami",
        "--env",
        "nodejs",
        "--requestsperpod",
        "1",
        "--code",
        slow.to_str().expect("utf-8 path"),
    ]);
    server.fission_ok(&[
        "route",
        "create",
        "--function",
        "whoami",
        "--url",
        "/whoami",
        "--method",
        "GET",
    ]);
    // The route reaches the router within a moment (a 404 until then).
    std::thread::sleep(Duration::from_secs(2));
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let url = format!("{}/whoami", server.router);
            std::thread::spawn(move || {
                let r = http().get(url).send().expect("call");
                (r.status().as_u16(), r.text().expect("body"))
            })
        })
        .collect();
    let answers: Vec<(u16, String)> = calls.into_iter().map(|h| h.join().expect("join")).collect();
    assert!(
        answers.iter().all(|(s, _)| *s == 200),
        "answers {answers:?}; server log:\n{}",
        server.log_text()
    );
    assert_ne!(answers[0].1, answers[1].1, "both calls ran in one pod");
    let ns = &server.namespace;
    let specialized: Vec<String> = pods(node, ns, "functionName=whoami,managed=false")
        .into_iter()
        .map(|p| p.0)
        .collect();
    for (_, pod) in &answers {
        assert!(specialized.contains(pod), "{pod} not in {specialized:?}");
    }
}

fn an_idle_pod_is_deleted_and_the_pool_refills(
    node: &NodeCluster,
    server: &PodServer,
    dir: &std::path::Path,
) {
    let code = write(
        dir,
        "brief.js",
        "module.exports = async function(context) { return { status: 200, body: 'brief' }; }\n",
    );
    server.fission_ok(&[
        "fn",
        "create",
        "--name",
        "brief",
        "--env",
        "nodejs",
        "--idletimeout",
        "2",
        "--code",
        code.to_str().expect("utf-8 path"),
    ]);
    server.fission_ok(&[
        "route",
        "create",
        "--function",
        "brief",
        "--url",
        "/brief",
        "--method",
        "GET",
    ]);
    wait_for(
        node,
        server,
        Duration::from_secs(60),
        "GET /brief to answer",
        || {
            server
                .get("/brief")
                .filter(|(s, b)| *s == 200 && b == "brief")
        },
    );
    let ns = &server.namespace;
    let pod = pods(node, ns, "functionName=brief")
        .first()
        .map(|p| p.0.clone())
        .expect("a pod serves brief");
    // idletimeout 2 s, reaper every 5 s: deleted within ~10 s.
    wait_for(
        node,
        server,
        Duration::from_secs(30),
        "the idle pod to be deleted",
        || {
            pods(node, ns, "functionName=brief")
                .iter()
                .all(|p| p.0 != pod || p.3)
                .then_some(())
        },
    );
    wait_for(
        node,
        server,
        Duration::from_secs(60),
        "a ready pool pod after the reap",
        || {
            pods(node, ns, "environmentName=nodejs,managed=true")
                .iter()
                .any(|p| p.2)
                .then_some(())
        },
    );
}
