//! The canary manager against the real embedded store, with call counts the test controls.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fission_controller::canary::{self, status};
use fission_core::resources::{
    CanaryConfig, CanaryConfigSpec, FunctionReference, HttpTrigger, HttpTriggerSpec,
    function_ref_type,
};
use fission_core::{AnyResource, CallCounter, CallCounts, ResourceKind, ResourceStore};
use fission_store::RedbStore;
use tokio_util::sync::CancellationToken;

/// Every read sees `per_read` more calls to the new function.
struct Traffic {
    seen: Mutex<CallCounts>,
    per_read: CallCounts,
}

impl CallCounter for Traffic {
    fn calls(&self, _namespace: &str, function: &str) -> CallCounts {
        assert_eq!(function, "new", "the canary judges the new function");
        let mut seen = self.seen.lock().expect("canary test");
        seen.total += self.per_read.total;
        seen.failed += self.per_read.failed;
        *seen
    }
}

async fn setup(
    per_read: CallCounts,
) -> (tempfile::TempDir, Arc<dyn ResourceStore>, CancellationToken) {
    let dir = tempfile::tempdir().expect("canary test");
    let store: Arc<dyn ResourceStore> =
        Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("canary test"));
    let trigger = HttpTrigger::new(
        "default",
        "route",
        HttpTriggerSpec {
            relativeurl: "/x".into(),
            methods: vec!["GET".into()],
            functionref: FunctionReference {
                ref_type: function_ref_type::FUNCTION_WEIGHTS.into(),
                name: String::new(),
                functionweights: Some(BTreeMap::from([("new".into(), 0), ("old".into(), 100)])),
            },
            ..HttpTriggerSpec::default()
        },
    );
    store
        .create(AnyResource::HttpTrigger(trigger))
        .await
        .expect("canary test");
    let config = CanaryConfig::new(
        "default",
        "rollout",
        CanaryConfigSpec {
            trigger: "route".into(),
            newfunction: "new".into(),
            oldfunction: "old".into(),
            weightincrement: 25,
            duration: "100ms".into(),
            failurethreshold: 10,
            failure_type: "status-code".into(),
        },
    );
    store
        .create(AnyResource::CanaryConfig(config))
        .await
        .expect("canary test");
    let shutdown = CancellationToken::new();
    let calls = Arc::new(Traffic {
        seen: Mutex::new(CallCounts::default()),
        per_read,
    });
    tokio::spawn(canary::run(store.clone(), calls, shutdown.clone()));
    (dir, store, shutdown)
}

async fn weights(store: &dyn ResourceStore) -> (i32, i32) {
    let AnyResource::HttpTrigger(t) = store
        .get(ResourceKind::HttpTrigger, "default", "route")
        .await
        .expect("canary test")
    else {
        panic!("a trigger")
    };
    let w = t.spec.functionref.functionweights.expect("canary test");
    (w["new"], w["old"])
}

async fn outcome(store: &dyn ResourceStore) -> String {
    for _ in 0..100 {
        let AnyResource::CanaryConfig(c) = store
            .get(ResourceKind::CanaryConfig, "default", "rollout")
            .await
            .expect("canary test")
        else {
            panic!("a config")
        };
        if c.status.status == status::SUCCEEDED || c.status.status == status::FAILED {
            return c.status.status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the rollout did not finish within 5 s");
}

#[tokio::test]
async fn a_healthy_new_version_reaches_all_traffic_in_steps() {
    let (_dir, store, shutdown) = setup(CallCounts {
        total: 20,
        failed: 0,
    })
    .await;
    let mut seen = vec![weights(store.as_ref()).await];
    for _ in 0..60 {
        let w = weights(store.as_ref()).await;
        if seen.last() != Some(&w) {
            seen.push(w);
        }
        if w.0 == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen,
        [(0, 100), (25, 75), (50, 50), (75, 25), (100, 0)],
        "weights moved 25 % per step"
    );
    assert_eq!(outcome(store.as_ref()).await, status::SUCCEEDED);
    shutdown.cancel();
}

#[tokio::test]
async fn a_failing_new_version_is_rolled_back_and_marked_failed() {
    // Half the new function's calls fail: far above the 10 % threshold.
    let (_dir, store, shutdown) = setup(CallCounts {
        total: 10,
        failed: 5,
    })
    .await;
    assert_eq!(outcome(store.as_ref()).await, status::FAILED);
    assert_eq!(
        weights(store.as_ref()).await,
        (0, 100),
        "all traffic back on the old function"
    );
    shutdown.cancel();
}
