//! KubernetesWatchTriggers against a real API server (etcd + kube-apiserver, no nodes: Pods
//! are stored, never run) and a stand-in router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FakeFunction, Harness, Seen, fake_router};
use fission_core::AnyResource;
use fission_core::resources::{
    FunctionReference, KubernetesWatchTrigger, KubernetesWatchTriggerSpec,
};
use kube_test_cluster::TestCluster;

fn watch(name: &str, namespace: &str, ty: &str, labels: &[(&str, &str)]) -> AnyResource {
    let mut t = KubernetesWatchTrigger::new(
        "default",
        name,
        KubernetesWatchTriggerSpec {
            namespace: namespace.to_owned(),
            object_type: ty.to_owned(),
            labelselector: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>()
            }),
            functionref: FunctionReference::by_name("hello"),
        },
    );
    t.normalize();
    AnyResource::KubernetesWatchTrigger(t)
}

/// (event type, object kind, object name) of every call, in order.
fn events(f: &FakeFunction) -> Vec<(String, String, String)> {
    f.calls().iter().map(event).collect()
}

fn event(c: &Seen) -> (String, String, String) {
    let h = |k: &str| {
        c.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let obj: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    (
        h("x-kubernetes-event-type"),
        h("x-kubernetes-object-type"),
        obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

async fn wait_for(
    f: &FakeFunction,
    what: &str,
    pred: impl Fn(&[(String, String, String)]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ev = events(f);
        if pred(&ev) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}; got {ev:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has(ev: &[(String, String, String)], t: &str, kind: &str, name: &str) -> bool {
    ev.iter().any(|(a, b, c)| a == t && b == kind && c == name)
}

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"NAME","labels":{"app":"APP"}},
"spec":{"automountServiceAccountToken":false,"containers":[{"name":"c","image":"busybox"}]}}"#;
const SERVICE: &str = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"NAME"},
"spec":{"ports":[{"port":80}],"selector":{"app":"web"}}}"#;

fn apply(cluster: &TestCluster, ns: &str, manifest: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), manifest).unwrap();
    cluster.kubectl_ok([
        "-n".as_ref(),
        ns.as_ref(),
        "apply".as_ref(),
        "-f".as_ref(),
        file.path().as_os_str(),
    ]);
}

fn namespace(cluster: &TestCluster, ns: &str) {
    cluster.kubectl_ok(["create", "namespace", ns]);
    // No controller-manager here to create it; Pods need it to pass admission.
    cluster.kubectl_ok(["-n", ns, "create", "serviceaccount", "default"]);
}

async fn harness(cluster: &TestCluster, f: Arc<FakeFunction>) -> Harness {
    Harness::start_kube(
        fake_router(f).await,
        fission_triggers::KubeSource {
            kubeconfig: Some(cluster.kubeconfig.clone()),
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_service_events_reach_the_function_with_their_type_and_object() {
    let Some(cluster) = TestCluster::start_or_skip() else {
        return;
    };
    namespace(&cluster, "watched");
    // Already there when the trigger starts: announced as ADDED, as Fission's watch does.
    apply(&cluster, "watched", &SERVICE.replace("NAME", "early"));
    let f = Arc::new(FakeFunction::default());
    let h = harness(&cluster, f.clone()).await;
    h.store
        .create(watch("pods", "watched", "pod", &[("app", "web")]))
        .await
        .unwrap();
    h.store
        .create(watch("svcs", "watched", "Service", &[]))
        .await
        .unwrap();
    wait_for(&f, "the existing service is announced", |ev| {
        has(ev, "ADDED", "Service", "early")
    })
    .await;

    apply(
        &cluster,
        "watched",
        &POD.replace("NAME", "web-1").replace("APP", "web"),
    );
    apply(
        &cluster,
        "watched",
        &POD.replace("NAME", "other-1").replace("APP", "other"),
    );
    apply(&cluster, "watched", &SERVICE.replace("NAME", "front"));
    wait_for(&f, "ADDED for the pod and the service", |ev| {
        has(ev, "ADDED", "Pod", "web-1") && has(ev, "ADDED", "Service", "front")
    })
    .await;
    cluster.kubectl_ok(["-n", "watched", "label", "pod", "web-1", "tier=1"]);
    cluster.kubectl_ok(["-n", "watched", "annotate", "service", "front", "note=x"]);
    wait_for(&f, "MODIFIED for both", |ev| {
        has(ev, "MODIFIED", "Pod", "web-1") && has(ev, "MODIFIED", "Service", "front")
    })
    .await;
    cluster.kubectl_ok([
        "-n",
        "watched",
        "delete",
        "pod",
        "web-1",
        "--grace-period=0",
        "--force",
    ]);
    cluster.kubectl_ok(["-n", "watched", "delete", "service", "front"]);
    wait_for(&f, "DELETED for both", |ev| {
        has(ev, "DELETED", "Pod", "web-1") && has(ev, "DELETED", "Service", "front")
    })
    .await;

    // The label selector keeps the other pod out.
    let ev = events(&f);
    assert!(
        !ev.iter().any(|(_, _, name)| name == "other-1"),
        "the selector app=web let another pod through: {ev:?}"
    );
    // The object itself is the body, as JSON.
    let call = f
        .calls()
        .into_iter()
        .find(|c| event(c) == ("ADDED".into(), "Pod".into(), "web-1".into()))
        .unwrap();
    let obj: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(obj["kind"], "Pod");
    assert_eq!(obj["metadata"]["namespace"], "watched");
    assert_eq!(obj["spec"]["containers"][0]["image"], "busybox");
    assert_eq!(call.path, "/fission-function/hello");
    assert_eq!(call.headers["content-type"], "application/json");
    let status = h
        .triggers
        .status()
        .get(&fission_triggers::TriggerKey {
            kind: fission_triggers::TriggerKind::KubernetesWatchTrigger,
            namespace: "default".into(),
            name: "pods".into(),
        })
        .unwrap();
    // ADDED, MODIFIED (the label), maybe MODIFIED (the deletion mark), DELETED: all counted.
    let pod_events: Vec<_> = ev.iter().filter(|(_, k, _)| k == "Pod").collect();
    assert_eq!(pod_events.first().unwrap().0, "ADDED", "{pod_events:?}");
    assert_eq!(pod_events.last().unwrap().0, "DELETED", "{pod_events:?}");
    assert_eq!(status.fired, pod_events.len() as u64, "{status:?}");
    assert_eq!(status.succeeded, status.fired, "{status:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_resumes_the_watch_without_duplicates() {
    let Some(cluster) = TestCluster::start_or_skip() else {
        return;
    };
    namespace(&cluster, "w2");
    let f = Arc::new(FakeFunction::default());
    let h = harness(&cluster, f.clone()).await;
    h.store
        .create(watch("svcs", "w2", "service", &[]))
        .await
        .unwrap();
    for i in 0..3 {
        apply(
            &cluster,
            "w2",
            &SERVICE.replace("NAME", &format!("before-{i}")),
        );
    }
    wait_for(&f, "three services announced", |ev| ev.len() == 3).await;

    cluster.restart_apiserver().expect("restart the API server");
    apply(&cluster, "w2", &SERVICE.replace("NAME", "after"));
    cluster.kubectl_ok(["-n", "w2", "delete", "service", "before-0"]);
    wait_for(&f, "the changes after the restart", |ev| {
        has(ev, "ADDED", "Service", "after") && has(ev, "DELETED", "Service", "before-0")
    })
    .await;
    // Give a replay time to show up, then count: each change exactly once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ev = events(&f);
    let mut sorted = ev.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ev.len(), "duplicate events: {ev:?}");
    assert_eq!(ev.len(), 5, "{ev:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_server_without_a_cluster_says_so_in_the_status() {
    let f = Arc::new(FakeFunction::default());
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start_kube(
        fake_router(f).await,
        fission_triggers::KubeSource {
            kubeconfig: Some(dir.path().join("absent.kubeconfig")),
        },
    )
    .await;
    h.store
        .create(watch("w", "default", "pod", &[]))
        .await
        .unwrap();
    let key = fission_triggers::TriggerKey {
        kind: fission_triggers::TriggerKind::KubernetesWatchTrigger,
        namespace: "default".into(),
        name: "w".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = h.triggers.status().get(&key).and_then(|s| s.last_error) {
            assert!(e.starts_with("no Kubernetes cluster to watch"), "{e}");
            assert!(e.contains("absent.kubeconfig"), "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "no status");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.stop().await;
}
