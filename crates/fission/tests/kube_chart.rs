//! The Helm chart on a real node: `helm install` of charts/fission-rs with the images built
//! by scripts/k8s/build-images.sh (no registry: imported into the node's containerd,
//! pullPolicy Never) puts controller, router and executor in pods; the executor runs functions
//! as pool pods (`--instances pods`). The components find each other through the Service
//! variables Kubernetes gives every container (the node has no cluster DNS), the host reaches
//! the controller and the router through their NodePorts (kube-proxy, nftables mode), and
//! `helm uninstall` leaves no workload behind. This is what README's "Run on Kubernetes" says.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube_test_cluster::{NodeCluster, helm, repo_root, shared_node};
use support::{BIN, http, write};

/// The release and its namespace, as the README installs it.
const RELEASE: &str = "fission-rs";
const NS: &str = "fission";
/// The chart's default namespace for function pods.
const FN_NS: &str = "fission-function";

/// An installed release, reached from the host through its NodePorts.
struct Install {
    helm: PathBuf,
    /// `http://<host's bridge address>:<controller NodePort>`.
    controller: String,
    /// `http://<host's bridge address>:<router NodePort>`.
    router: String,
    token: String,
}

impl Install {
    /// `fission` (the host's CLI) against the installed controller, as the README exports.
    #[track_caller]
    fn fission_ok(&self, node: &NodeCluster, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .env("FISSION_URL", &self.controller)
            .env("FISSION_ROUTER_URL", &self.router)
            .env("FISSION_AUTH_TOKEN", &self.token)
            .env_remove("FISSION_DEFAULT_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .expect("run fission");
        assert!(
            out.status.success(),
            "fission {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            diagnostics(node)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = http().get(format!("{}{path}", self.router)).send().ok()?;
        Some((r.status().as_u16(), r.text().ok()?))
    }
}

/// What was going on in the cluster, for a failure message: pods, recent events and the
/// components' logs.
fn diagnostics(node: &NodeCluster) -> String {
    let text = |args: &[&str]| {
        let out = node.kubectl(args);
        format!(
            "$ kubectl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let mut all = vec![
        text(&["get", "pods", "-A", "-o", "wide", "--show-labels"]),
        text(&["get", "events", "-A", "--sort-by=.lastTimestamp"]),
    ];
    for component in ["controller", "router", "executor"] {
        all.push(text(&[
            "logs",
            "-n",
            NS,
            &format!("deployment/{component}"),
            "--tail=60",
        ]));
    }
    all.join("\n")
}

/// Poll `check` every 250 ms until it gives a value; on timeout fail with the diagnostics.
#[track_caller]
fn wait_for<T>(
    node: &NodeCluster,
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {within:?} waiting for {what}\n{}",
                diagnostics(node)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Names of the pods in `ns` matching `selector`.
fn pod_names(node: &NodeCluster, ns: &str, selector: &str) -> Vec<String> {
    node.kubectl_ok([
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        selector,
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// Calls to one URL in a loop on a thread of their own, counted, until stopped: a step that
/// disturbs the installation (e.g. deleting the executor pod) runs between `start` and `stop`
/// and then asserts on the failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<TrafficReport>,
}

/// What a [`Traffic`] saw.
#[derive(Debug, Default)]
struct TrafficReport {
    ok: usize,
    /// Every call that did not answer `expect`: status or error, and when.
    failures: Vec<String>,
}

impl Traffic {
    fn start(url: String, expect: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let client = http();
            let t0 = Instant::now();
            let mut report = TrafficReport::default();
            while !flag.load(Ordering::SeqCst) {
                match client
                    .get(&url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
                {
                    Ok((200, body)) if body == expect => report.ok += 1,
                    Ok((status, body)) => report
                        .failures
                        .push(format!("{:?}: {status} {body:?}", t0.elapsed())),
                    Err(e) => report.failures.push(format!("{:?}: {e}", t0.elapsed())),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            report
        });
        Self { stop, thread }
    }

    fn stop(self) -> TrafficReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("traffic thread")
    }
}

/// A NodePort of the default range that differs between runs and from `other`.
fn node_port(other: u16) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let port = 30000 + u16::try_from((nanos ^ std::process::id()) % 2700).unwrap_or(0);
    if port == other { port + 1 } else { port }
}

fn install(node: &NodeCluster, helm: &Path) -> Install {
    let controller_port = node_port(0);
    let router_port = node_port(controller_port);
    let mut cmd = Command::new(helm);
    cmd.arg("install")
        .arg(RELEASE)
        .arg(repo_root().join("charts/fission-rs"))
        .args(["--namespace", NS, "--create-namespace", "--kubeconfig"])
        .arg(&node.kubeconfig);
    for set in [
        // The images build-images.sh imported into the node: no registry to pull from.
        "image.repository=localhost/fission-rs".to_owned(),
        "image.tag=local".to_owned(),
        "image.pullPolicy=Never".to_owned(),
        "executor.runtimeImages.nodejs=localhost/fission-rs-nodejs:local".to_owned(),
        "executor.runtimeImages.python=localhost/fission-rs-python:local".to_owned(),
        "executor.fetcherImage=localhost/fission-rs-fetcher:local".to_owned(),
        // No volume provisioner on the test node: archives on an emptyDir.
        "controller.persistence.enabled=false".to_owned(),
        format!("controller.service.nodePort={controller_port}"),
        format!("router.service.nodePort={router_port}"),
        // Two cores shared with other work: one router is enough to show the path.
        "router.replicas=1".to_owned(),
        "logLevel=info\\,fission_executor_kube=debug".to_owned(),
    ] {
        cmd.args(["--set", &set]);
    }
    let out = cmd.output().expect("run helm");
    assert!(
        out.status.success(),
        "helm install failed: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        diagnostics(node)
    );
    let encoded = node.kubectl_ok([
        "get",
        "secret",
        "-n",
        NS,
        "fission-rs-auth",
        "-o",
        "jsonpath={.data.FISSION_AUTH_TOKEN}",
    ]);
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .expect("base64 token");
    let host = node.host_ip;
    Install {
        helm: helm.to_owned(),
        controller: format!("http://{host}:{controller_port}"),
        router: format!("http://{host}:{router_port}"),
        token: String::from_utf8(token).expect("utf-8 token"),
    }
}

/// Everything on one release, in order: the node runs one installation at a time.
#[test]
fn the_helm_chart_runs_fission_on_a_real_node_and_uninstalls_cleanly() {
    let Some(helm) = helm() else { return };
    let Some(node) = shared_node(Path::new(BIN)) else {
        return;
    };
    let t0 = Instant::now();
    let install = install(node, &helm);
    controller_router_and_executor_pods_become_ready(node);
    let ready = t0.elapsed();
    the_executor_may_manage_function_pods_only_in_the_function_namespace(node);

    let code = tempfile::tempdir().expect("tempdir");
    let t1 = Instant::now();
    the_seed_walkthrough_answers_through_the_router_node_port(node, &install, code.path());
    let walkthrough = t1.elapsed();
    steady_calls_all_succeed(&install);
    measure_cold_and_warm_latency(node, &install, code.path());

    let t2 = Instant::now();
    fission_yaml_applied_with_kubectl_alone_answers_through_the_router(node, &install);
    let kubectl_flow = t2.elapsed();

    let t3 = Instant::now();
    helm_uninstall_leaves_no_workload_behind(node, &install);
    eprintln!(
        "TIME chart: install to Ready {ready:?}, walkthrough {walkthrough:?}, kubectl flow {kubectl_flow:?}, uninstall {:?}, total {:?}",
        t3.elapsed(),
        t0.elapsed()
    );
}

fn controller_router_and_executor_pods_become_ready(node: &NodeCluster) {
    let waited = node.kubectl([
        "wait",
        "-n",
        NS,
        "--for=condition=Available",
        "--timeout=180s",
        "deployment/controller",
        "deployment/router",
        "deployment/executor",
    ]);
    assert!(
        waited.status.success(),
        "the deployments did not become available: {}\n{}",
        String::from_utf8_lossy(&waited.stderr),
        diagnostics(node)
    );
    let pods = node.kubectl_ok([
        "wait",
        "-n",
        NS,
        "--for=condition=Ready",
        "--timeout=60s",
        "pod",
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
    ]);
    for component in ["controller", "router", "executor"] {
        assert!(
            pods.lines()
                .any(|l| l.starts_with(&format!("pod/{component}-"))),
            "no Ready {component} pod: {pods}"
        );
    }
}

fn the_executor_may_manage_function_pods_only_in_the_function_namespace(node: &NodeCluster) {
    let can = |verb: &str, resource: &str, ns: &str| -> bool {
        let out = node.kubectl([
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            ns,
            &format!("--as=system:serviceaccount:{NS}:fission-executor"),
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for (verb, resource) in [
        ("create", "deployments.apps"),
        ("delete", "deployments.apps"),
        ("patch", "pods"),
        ("delete", "pods"),
        ("create", "secrets"),
        ("update", "secrets/fission-rs-fetcher-token"),
    ] {
        assert!(
            can(verb, resource, FN_NS),
            "executor should {verb} {resource}"
        );
        assert!(
            !can(verb, resource, "default"),
            "executor must not {verb} {resource} outside {FN_NS}"
        );
    }
    // Pods come from the pool Deployments; other Secrets are not the executor's to change.
    assert!(!can("create", "pods", FN_NS));
    assert!(!can("update", "secrets/someone-elses", FN_NS));
}

fn the_seed_walkthrough_answers_through_the_router_node_port(
    node: &NodeCluster,
    install: &Install,
    dir: &Path,
) {
    install.fission_ok(
        node,
        &[
            "env",
            "create",
            "--name",
            "nodejs",
            "--image",
            "fission/node-env",
            "--poolsize",
            "1",
        ],
    );
    let hello = write(
        dir,
        "hello.js",
        "module.exports = async function(context) {\n    return { status: 200, body: \"Hello, world!\\n\" };\n}\n",
    );
    install.fission_ok(
        node,
        &[
            "function",
            "create",
            "--name",
            "hello",
            "--env",
            "nodejs",
            "--code",
            hello.to_str().expect("utf-8 path"),
        ],
    );
    install.fission_ok(
        node,
        &[
            "route",
            "create",
            "--method",
            "GET",
            "--url",
            "/hello",
            "--function",
            "hello",
        ],
    );
    // The pool pod starts with the environment; the first call specializes it.
    let (status, body) = wait_for(
        node,
        Duration::from_secs(180),
        "GET /hello through the router's NodePort to answer 200",
        || install.get("/hello").filter(|(s, _)| *s == 200),
    );
    assert_eq!((status, body.as_str()), (200, "Hello, world!\n"));
    // From a pool pod the executor claimed in the function namespace, labelled as Fission
    // labels a specialized pod.
    let specialized = wait_for(
        node,
        Duration::from_secs(20),
        "one specialized pod of hello",
        || {
            let p = pod_names(node, FN_NS, "functionName=hello,managed=false");
            (p.len() == 1).then_some(p)
        },
    );
    assert!(
        specialized[0].starts_with("poolmgr-nodejs-default-"),
        "{specialized:?}"
    );
    // `fission fn test` goes through the router too.
    let tested = install.fission_ok(node, &["fn", "test", "--name", "hello"]);
    assert!(tested.contains("Hello, world!"), "{tested}");
}

/// Warm calls through the NodePort, from a second thread, for a few seconds: none fails.
/// (An executor restart under this traffic is the next step once adoption exists.)
fn steady_calls_all_succeed(install: &Install) {
    let traffic = Traffic::start(format!("{}/hello", install.router), "Hello, world!\n");
    std::thread::sleep(Duration::from_secs(3));
    let report = traffic.stop();
    assert!(report.ok >= 10, "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Figures for BENCHMARKS.md (printed, never asserted), everything in pods as installed:
/// pool-hit cold start through the router's NodePort (router pod → executor Service →
/// claimed pool pod), and warm latency through the NodePort against the same pod called
/// directly from the host.
fn measure_cold_and_warm_latency(node: &NodeCluster, install: &Install, dir: &Path) {
    let code = write(
        dir,
        "bench.js",
        "module.exports = async function(context) { return { status: 200, body: 'ok' }; }\n",
    );
    let mut cold = Vec::new();
    for i in 0..3 {
        let name = format!("cold{i}");
        let url = format!("/{name}");
        install.fission_ok(
            node,
            &[
                "fn",
                "create",
                "--name",
                &name,
                "--env",
                "nodejs",
                "--code",
                code.to_str().expect("utf-8 path"),
            ],
        );
        install.fission_ok(
            node,
            &["route", "create", "--function", &name, "--url", &url],
        );
        // The router learns the route within a moment (404 until then, without touching the
        // executor), and the pool refills after the previous claim.
        std::thread::sleep(Duration::from_secs(6));
        let (status, took) = wait_for(node, Duration::from_secs(60), "a cold call", || {
            let t0 = Instant::now();
            install
                .get(&url)
                .filter(|(s, _)| *s != 404)
                .map(|(s, _)| (s, t0.elapsed()))
        });
        assert_eq!(status, 200, "{}", diagnostics(node));
        cold.push(took);
    }
    let pod_ip = node.kubectl_ok([
        "get",
        "pods",
        "-n",
        FN_NS,
        "-l",
        "functionName=cold0",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    let time = |url: &str| {
        let client = http();
        let mut v: Vec<Duration> = (0..200)
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
    let via_router = time(&format!("{}/cold0", install.router));
    let direct = time(&format!("http://{}:8888/", pod_ip.trim()));
    cold.sort();
    eprintln!(
        "BENCH chart: pool-hit cold start through the router NodePort p50 {:?} (min {:?}, max {:?}, n={}); \
         warm via router NodePort p50 {:?} p99 {:?}; same pod direct p50 {:?} p99 {:?} (n=200 each)",
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

/// Fission's `test_node_hello_http` flow done with kubectl alone: the objects as Fission's
/// CLI writes them (Environment, Package with a literal deployment, Function, HTTPTrigger),
/// in a namespace of their own.
fn fission_yaml_applied_with_kubectl_alone_answers_through_the_router(
    node: &NodeCluster,
    install: &Install,
) {
    use base64::Engine as _;
    let code = "module.exports = async function(context) {\n    return { status: 200, body: \"Hello from kubectl!\\n\" };\n}\n";
    let literal = base64::engine::general_purpose::STANDARD.encode(code);
    let yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: fission-yaml}}
---
apiVersion: fission.io/v1
kind: Environment
metadata: {{name: nodejs, namespace: fission-yaml}}
spec:
  version: 3
  poolsize: 1
  runtime:
    image: ghcr.io/fission/node-env-22
    container: {{name: nodejs}}
    podspec: {{containers: [{{name: nodejs}}]}}
  builder: null
  resources: {{}}
  terminationGracePeriod: 360
  keeparchive: false
  imagepullsecret: ""
---
apiVersion: fission.io/v1
kind: Package
metadata: {{name: kubectl-hello-pkg, namespace: fission-yaml}}
spec:
  environment: {{name: nodejs, namespace: fission-yaml}}
  deployment: {{type: literal, literal: {literal}, checksum: {{}}}}
  source: {{checksum: {{}}}}
status: {{buildstatus: none}}
---
apiVersion: fission.io/v1
kind: Function
metadata: {{name: kubectl-hello, namespace: fission-yaml}}
spec:
  environment: {{name: nodejs, namespace: fission-yaml}}
  package:
    functionName: ""
    packageref: {{name: kubectl-hello-pkg, namespace: fission-yaml}}
  secrets: null
  configmaps: null
  resources: {{}}
  InvokeStrategy:
    StrategyType: execution
    ExecutionStrategy: {{ExecutorType: poolmgr, MinScale: 0, MaxScale: 0, TargetCPUPercent: 0, SpecializationTimeout: 120}}
  functionTimeout: 60
  idletimeout: 120
  concurrency: 500
  requestsPerPod: 1
---
apiVersion: fission.io/v1
kind: HTTPTrigger
metadata: {{name: kubectl-hello, namespace: fission-yaml}}
spec:
  host: ""
  relativeurl: /kubectl-hello
  prefix: ""
  methods: [GET]
  method: ""
  functionref: {{type: name, name: kubectl-hello, functionweights: null}}
  createingress: false
  ingressconfig: {{annotations: null, path: /kubectl-hello, host: "*", tls: ""}}
"#
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "hello-http.yaml", &yaml);
    node.kubectl_ok([
        std::ffi::OsStr::new("apply"),
        "-f".as_ref(),
        file.as_os_str(),
    ]);
    let (status, body) = wait_for(
        node,
        Duration::from_secs(180),
        "GET /kubectl-hello through the router's NodePort to answer 200",
        || install.get("/kubectl-hello").filter(|(s, _)| *s == 200),
    );
    assert_eq!((status, body.as_str()), (200, "Hello from kubectl!\n"));
    let pods = pod_names(
        node,
        FN_NS,
        "functionName=kubectl-hello,functionNamespace=fission-yaml,managed=false",
    );
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert!(
        pods[0].starts_with("poolmgr-nodejs-fission-yaml-"),
        "{pods:?}"
    );
}

fn helm_uninstall_leaves_no_workload_behind(node: &NodeCluster, install: &Install) {
    let out = Command::new(&install.helm)
        .args(["uninstall", RELEASE, "--namespace", NS, "--kubeconfig"])
        .arg(&node.kubeconfig)
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm uninstall failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The function namespace goes with the release, and with it the pool Deployments and
    // every function pod the executor made (Helm never owned those).
    wait_for(
        node,
        Duration::from_secs(180),
        "the function namespace and every pod to be gone",
        || {
            let ns = node.kubectl(["get", "namespace", FN_NS]);
            let gone =
                !ns.status.success() && String::from_utf8_lossy(&ns.stderr).contains("NotFound");
            let pods = node.kubectl_ok(["get", "pods", "-A", "-o", "name"]);
            (gone && pods.trim().is_empty()).then_some(())
        },
    );
    for kind in ["deployments", "replicasets", "services", "secrets"] {
        let left = node.kubectl_ok([
            "get",
            kind,
            "-n",
            NS,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ]);
        assert!(left.trim().is_empty(), "{kind} left in {NS}: {left}");
    }
    let deployments = node.kubectl_ok(["get", "deployments", "-A", "-o", "name"]);
    assert!(deployments.trim().is_empty(), "{deployments}");
    for kind in [
        "clusterroles",
        "clusterrolebindings",
        "serviceaccounts",
        "roles",
    ] {
        let left = node.kubectl_ok([
            "get",
            kind,
            "-A",
            "-l",
            &format!("app.kubernetes.io/instance={RELEASE}"),
            "-o",
            "name",
        ]);
        assert!(left.trim().is_empty(), "{kind} left: {left}");
    }
    // What users made stays, as Helm keeps CRDs and their objects: a new install serves it.
    let functions = node.kubectl_ok(["get", "functions.fission.io", "-A", "-o", "name"]);
    assert!(
        functions.contains("function.fission.io/hello"),
        "{functions}"
    );
}
