//! KubeStore against a real etcd + kube-apiserver (one per test binary; each test works in its
//! own namespace so they can run in parallel).

use std::time::Duration;

use fission_core::resources::{
    Environment, EnvironmentSpec, Function, FunctionSpec, HttpTrigger, Package, Runtime, Secret,
};
use fission_core::{
    AnyResource, ObjectReference, ResourceKind, ResourceStore, StoreError, WatchEvent,
    WatchEventType, WatchStream,
};
use fission_store_kube::KubeStore;
use futures::StreamExt as _;
use kube_test_cluster::{TestCluster, repo_root, shared};

const FEED_WAIT: Duration = Duration::from_secs(20);

async fn setup(ns: &str) -> Option<(&'static TestCluster, KubeStore)> {
    let cluster = shared()?;
    cluster.kubectl_ok(["create", "namespace", ns]);
    let store = KubeStore::connect(Some(&cluster.kubeconfig))
        .await
        .expect("connect");
    store.check_ready().await.expect("CRDs installed");
    Some((cluster, store))
}

fn env(ns: &str, name: &str, image: &str) -> AnyResource {
    let mut o = Environment::new(
        ns,
        name,
        EnvironmentSpec {
            runtime: Runtime {
                image: image.into(),
                ..Runtime::default()
            },
            ..EnvironmentSpec::default()
        },
    );
    o.normalize();
    AnyResource::Environment(o)
}

fn function(ns: &str, name: &str) -> AnyResource {
    let mut spec = FunctionSpec {
        environment: ObjectReference {
            namespace: ns.into(),
            name: "nodejs".into(),
        },
        ..FunctionSpec::default()
    };
    spec.package.packageref.name = "pkg".into();
    spec.package.packageref.namespace = ns.into();
    let mut o = Function::new(ns, name, spec);
    o.normalize();
    AnyResource::Function(o)
}

/// Next event for an object in `ns` (the feed carries the whole cluster).
async fn next_in(feed: &mut WatchStream, ns: &str) -> WatchEvent {
    loop {
        let ev = tokio::time::timeout(FEED_WAIT, feed.next())
            .await
            .expect("an event within the wait")
            .expect("feed open")
            .expect("no feed error");
        if ev.object.meta().namespace == ns {
            return ev;
        }
    }
}

#[tokio::test]
async fn fission_example_yaml_applied_with_kubectl_is_read_by_the_store() {
    let ns = "example-yaml";
    let Some((cluster, store)) = setup(ns).await else {
        return;
    };
    let example = repo_root().join("deploy/examples/hello-nodejs.yaml");
    cluster.kubectl_ok([
        std::ffi::OsStr::new("apply"),
        "-n".as_ref(),
        ns.as_ref(),
        "-f".as_ref(),
        example.as_os_str(),
    ]);

    let f: Function = store
        .get(ResourceKind::Function, ns, "hello")
        .await
        .expect("function")
        .try_into()
        .expect("kind");
    assert!(
        f.spec.configmaps.is_empty() && f.spec.secrets.is_empty(),
        "configmaps: null reads as none"
    );
    assert_eq!(f.spec.package.packageref.name, "hello-pkg");
    assert_eq!(
        f.spec.invoke_strategy.execution_strategy.executor_type,
        "poolmgr"
    );
    assert_eq!(f.spec.idletimeout, Some(120));
    assert!(f.metadata.resource_version_number() > 0);

    let p: Package = store
        .get(ResourceKind::Package, ns, "hello-pkg")
        .await
        .expect("package")
        .try_into()
        .expect("kind");
    let code = String::from_utf8(p.spec.deployment.literal.clone()).expect("utf-8");
    assert!(code.contains("hello from kubernetes"), "{code}");
    assert_eq!(p.status.buildstatus, "none");

    let t: HttpTrigger = store
        .get(ResourceKind::HttpTrigger, ns, "hello-route")
        .await
        .expect("trigger")
        .try_into()
        .expect("kind");
    assert_eq!(t.spec.relativeurl, "/hello");
    assert_eq!(t.spec.methods, ["GET"]);
    assert_eq!(t.spec.functionref.name, "hello");

    let envs = store
        .list(ResourceKind::Environment, Some(ns))
        .await
        .expect("list");
    assert_eq!(
        envs.iter()
            .map(|e| e.meta().name.as_str())
            .collect::<Vec<_>>(),
        ["nodejs"]
    );
}

#[tokio::test]
async fn invalid_objects_are_refused_by_the_crd_schema_naming_the_field() {
    let ns = "invalid-objects";
    let Some((cluster, _store)) = setup(ns).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_fn = dir.path().join("bad-fn.yaml");
    std::fs::write(
        &bad_fn,
        "apiVersion: fission.io/v1\nkind: Function\nmetadata: {name: bad}\nspec: {functionTimeout: soon}\n",
    )
    .expect("write");
    let out = cluster.kubectl([
        std::ffi::OsStr::new("apply"),
        "-n".as_ref(),
        ns.as_ref(),
        "-f".as_ref(),
        bad_fn.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a string timeout was accepted");
    assert!(stderr.contains("spec.functionTimeout"), "{stderr}");

    let bad_pkg = dir.path().join("bad-pkg.yaml");
    std::fs::write(
        &bad_pkg,
        "apiVersion: fission.io/v1\nkind: Package\nmetadata: {name: bad}\n\
         spec: {deployment: {type: literal, literal: 'not base64 at all!'}}\n",
    )
    .expect("write");
    let out = cluster.kubectl([
        std::ffi::OsStr::new("apply"),
        "-n".as_ref(),
        ns.as_ref(),
        "-f".as_ref(),
        bad_pkg.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a literal that is not base64 was accepted"
    );
    assert!(stderr.contains("spec.deployment.literal"), "{stderr}");
    let listed = cluster.kubectl_ok([
        "get",
        "functions.fission.io,packages.fission.io",
        "-n",
        ns,
        "-o",
        "name",
    ]);
    assert!(listed.trim().is_empty(), "nothing half-written: {listed}");
}

#[tokio::test]
async fn objects_created_through_the_store_are_visible_to_kubectl_with_fissions_wire_names() {
    let ns = "store-to-kubectl";
    let Some((cluster, store)) = setup(ns).await else {
        return;
    };
    store
        .create(function(ns, "made-by-store"))
        .await
        .expect("create");
    let names = cluster.kubectl_ok([
        "get",
        "functions.fission.io",
        "-n",
        ns,
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(names.trim(), "made-by-store");
    let executor = cluster.kubectl_ok([
        "get",
        "fn",
        "made-by-store",
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.InvokeStrategy.ExecutionStrategy.ExecutorType}",
    ]);
    assert_eq!(executor, "poolmgr");
}

#[tokio::test]
async fn writes_map_kubernetes_answers_to_the_store_errors() {
    let ns = "store-errors";
    let Some((_cluster, store)) = setup(ns).await else {
        return;
    };
    let first = store
        .create(env(ns, "a", "fission/node-env"))
        .await
        .expect("create");
    assert!(!first.meta().uid.is_empty() && first.meta().creation_timestamp.is_some());
    assert_eq!(first.meta().generation, 1);

    let dup = store
        .create(env(ns, "a", "other"))
        .await
        .expect_err("duplicate");
    assert!(matches!(dup, StoreError::AlreadyExists { .. }), "{dup}");

    let mut fresh = env(ns, "a", "fission/python-env");
    fresh.meta_mut().resource_version = first.meta().resource_version.clone();
    let second = store
        .update(fresh)
        .await
        .expect("update at the current version");
    assert!(second.meta().resource_version_number() > first.meta().resource_version_number());
    assert_eq!(second.meta().generation, 2, "spec changed");
    assert_eq!(second.meta().uid, first.meta().uid);

    let mut stale = env(ns, "a", "stale/image");
    stale.meta_mut().resource_version = first.meta().resource_version.clone();
    match store.update(stale).await.expect_err("stale") {
        StoreError::Conflict { sent, current, .. } => {
            assert_eq!(sent, first.meta().resource_version);
            assert_eq!(current, second.meta().resource_version);
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let kept: Environment = store
        .get(ResourceKind::Environment, ns, "a")
        .await
        .expect("get")
        .try_into()
        .expect("kind");
    assert_eq!(
        kept.spec.runtime.image, "fission/python-env",
        "the stale write changed nothing"
    );

    // No resourceVersion: replace whatever is there, as the embedded store does.
    let blind = store
        .update(env(ns, "a", "fission/go-env"))
        .await
        .expect("unconditional update");
    assert!(blind.meta().resource_version_number() > second.meta().resource_version_number());

    let missing = store
        .get(ResourceKind::Environment, ns, "nope")
        .await
        .expect_err("missing");
    assert_eq!(
        missing.to_string(),
        format!("Environment '{ns}/nope' not found")
    );
    assert!(matches!(
        store.update(env(ns, "nope", "x")).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete(ResourceKind::Environment, ns, "nope").await,
        Err(StoreError::NotFound { .. })
    ));

    let last = store
        .delete(ResourceKind::Environment, ns, "a")
        .await
        .expect("delete");
    let last: Environment = last.try_into().expect("kind");
    assert_eq!(
        last.spec.runtime.image, "fission/go-env",
        "delete returns the last state"
    );
    assert!(matches!(
        store.get(ResourceKind::Environment, ns, "a").await,
        Err(StoreError::NotFound { .. })
    ));

    let err = store
        .create(env("no-such-namespace", "a", "x"))
        .await
        .expect_err("no namespace");
    assert!(
        err.to_string()
            .contains("namespace 'no-such-namespace' does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn secrets_and_config_maps_are_real_kubernetes_objects_and_their_changes_reach_the_feed() {
    let ns = "secrets-feed";
    let Some((cluster, store)) = setup(ns).await else {
        return;
    };
    let (_snapshot, start, mut feed) = store.list_and_watch().await.expect("watch");

    cluster.kubectl_ok([
        "create",
        "secret",
        "generic",
        "db",
        "-n",
        ns,
        "--from-literal=password=s3cret",
    ]);
    let ev = next_in(&mut feed, ns).await;
    assert_eq!(ev.event_type, WatchEventType::Added);
    assert!(ev.revision > start);
    let AnyResource::Secret(s) = &ev.object else {
        panic!("not a secret: {:?}", ev.object.kind())
    };
    assert_eq!(s.data["password"], b"s3cret");

    cluster.kubectl_ok([
        "patch",
        "secret",
        "db",
        "-n",
        ns,
        "-p",
        r#"{"stringData":{"password":"rotated"}}"#,
    ]);
    let ev2 = next_in(&mut feed, ns).await;
    assert_eq!(ev2.event_type, WatchEventType::Modified);
    assert!(ev2.revision > ev.revision);
    let AnyResource::Secret(s2) = &ev2.object else {
        panic!("not a secret")
    };
    assert_eq!(s2.data["password"], b"rotated");

    // Written by the store, read by kubectl: a core/v1 Secret, not a Fission object.
    let mut mine = Secret {
        metadata: fission_core::ObjectMeta::named(ns, "api-key"),
        ..Secret::default()
    };
    mine.data.insert("token".into(), b"t0k3n".to_vec());
    mine.normalize();
    store
        .create(AnyResource::Secret(mine))
        .await
        .expect("create secret");
    let token = cluster.kubectl_ok([
        "get",
        "secret",
        "api-key",
        "-n",
        ns,
        "-o",
        "jsonpath={.data.token}",
    ]);
    assert_eq!(token, "dDBrM24=");

    cluster.kubectl_ok([
        "create",
        "configmap",
        "settings",
        "-n",
        ns,
        "--from-literal=mode=fast",
    ]);
    let ev3 = loop {
        let ev = next_in(&mut feed, ns).await;
        if ev.object.kind() == ResourceKind::ConfigMap {
            break ev;
        }
    };
    let AnyResource::ConfigMap(c) = &ev3.object else {
        panic!("not a config map")
    };
    assert_eq!(c.data["mode"], "fast");

    cluster.kubectl_ok(["delete", "secret", "db", "-n", ns]);
    let ev4 = next_in(&mut feed, ns).await;
    assert_eq!(
        (ev4.event_type, ev4.object.meta().name.as_str()),
        (WatchEventType::Deleted, "db")
    );
}

#[tokio::test]
async fn the_snapshot_holds_every_kind_and_the_feed_continues_after_it_in_revision_order() {
    let ns = "snapshot-feed";
    let Some((cluster, store)) = setup(ns).await else {
        return;
    };
    let e = store
        .create(env(ns, "nodejs", "fission/node-env"))
        .await
        .expect("create env");
    let f = store.create(function(ns, "fn1")).await.expect("create fn");
    cluster.kubectl_ok(["create", "configmap", "cfg", "-n", ns, "--from-literal=k=v"]);

    let (snapshot, revision, mut feed) = store.list_and_watch().await.expect("watch");
    let mine: Vec<(ResourceKind, &str)> = snapshot
        .iter()
        .filter(|o| o.meta().namespace == ns)
        .map(|o| (o.kind(), o.meta().name.as_str()))
        .collect();
    assert_eq!(
        mine,
        [
            (ResourceKind::ConfigMap, "cfg"),
            (ResourceKind::Environment, "nodejs"),
            (ResourceKind::Function, "fn1")
        ]
    );
    assert!(
        revision >= f.meta().resource_version_number()
            && revision >= e.meta().resource_version_number()
    );

    // Writes of different kinds after the snapshot: all delivered, in strictly increasing order.
    store.create(function(ns, "fn2")).await.expect("create");
    store
        .create(env(ns, "python", "fission/python-env"))
        .await
        .expect("create");
    store
        .delete(ResourceKind::Function, ns, "fn1")
        .await
        .expect("delete");
    let mut seen = Vec::new();
    let mut last = revision;
    while seen.len() < 3 {
        let ev = next_in(&mut feed, ns).await;
        assert!(
            ev.revision > last,
            "revisions strictly increase: {} after {last}",
            ev.revision
        );
        last = ev.revision;
        seen.push((ev.event_type, ev.object.meta().name.clone()));
    }
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        seen,
        [
            (WatchEventType::Deleted, "fn1".to_owned()),
            (WatchEventType::Added, "fn2".to_owned()),
            (WatchEventType::Added, "python".to_owned()),
        ]
    );
}
