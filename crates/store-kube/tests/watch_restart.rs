//! The change feed across an API server restart: a cluster of its own, since the restart
//! would disturb tests sharing one.

use std::time::Duration;

use fission_core::resources::{Environment, EnvironmentSpec, Runtime};
use fission_core::{AnyResource, ResourceStore, WatchEvent, WatchEventType, WatchStream};
use fission_store_kube::KubeStore;
use futures::StreamExt as _;
use kube_test_cluster::TestCluster;

fn env(name: &str) -> AnyResource {
    let spec = EnvironmentSpec {
        runtime: Runtime {
            image: "fission/node-env".into(),
            ..Runtime::default()
        },
        ..EnvironmentSpec::default()
    };
    let mut o = Environment::new("default", name, spec);
    o.normalize();
    AnyResource::Environment(o)
}

async fn next(feed: &mut WatchStream, within: Duration) -> Option<WatchEvent> {
    match tokio::time::timeout(within, feed.next()).await {
        Err(_) => None,
        Ok(item) => Some(item.expect("feed open").expect("no feed error")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_survives_an_api_server_restart_without_losing_or_replaying_changes() {
    let Some(cluster) = TestCluster::start_or_skip() else {
        return;
    };
    cluster.apply_crds();
    let store = KubeStore::connect(Some(&cluster.kubeconfig))
        .await
        .expect("connect");
    let (_snapshot, _rev, mut feed) = store.list_and_watch().await.expect("watch");

    store.create(env("before")).await.expect("create");
    let ev = next(&mut feed, Duration::from_secs(20))
        .await
        .expect("event before the restart");
    assert_eq!(ev.object.meta().name, "before");

    // Written just before the API server goes away: delivered either before or after.
    store.create(env("racing")).await.expect("create");
    cluster.restart_apiserver().expect("restart the API server");
    let after = KubeStore::connect(Some(&cluster.kubeconfig))
        .await
        .expect("connect");
    // Written while the feed is reconnecting: it resumes past them or relists and sends the
    // difference; either way each change arrives once.
    let mut changed = env("before");
    if let AnyResource::Environment(e) = &mut changed {
        e.spec.runtime.image = "fission/python-env".into();
    }
    after
        .update(changed)
        .await
        .expect("update after the restart");
    after
        .create(env("after"))
        .await
        .expect("create after the restart");

    let mut seen = Vec::new();
    while let Some(ev) = next(&mut feed, Duration::from_secs(30)).await {
        seen.push((ev.event_type, ev.object.meta().name.clone()));
        if ev.object.meta().name == "after" {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            (WatchEventType::Added, "racing".to_owned()),
            (WatchEventType::Modified, "before".to_owned()),
            (WatchEventType::Added, "after".to_owned()),
        ],
        "each change exactly once, none replayed"
    );
    // And nothing more turns up.
    assert!(
        next(&mut feed, Duration::from_secs(2)).await.is_none(),
        "no replay after the restart"
    );
}
