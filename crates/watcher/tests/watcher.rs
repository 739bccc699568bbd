//! The watcher against test-support's `MemoryStore` (which passes the same store contract as
//! the embedded store), with faults injected through its knobs.

use std::sync::Arc;
use std::time::Duration;

use fission_core::resources::{Environment, EnvironmentSpec, Runtime};
use fission_core::{AnyResource, ResourceKind, ResourceStore, StoreError, WatchEventType};
use fission_test_support::{FeedCut, MemoryStore};
use fission_watcher::{Change, Watcher};
use tokio_util::sync::CancellationToken;

/// A store whose listings can be made to fail and whose feeds can be cut short.
fn setup() -> Arc<MemoryStore> {
    MemoryStore::new()
}

fn env(name: &str) -> AnyResource {
    let spec = EnvironmentSpec {
        version: 3,
        runtime: Runtime {
            image: "fission/node-env".to_owned(),
            ..Runtime::default()
        },
        ..EnvironmentSpec::default()
    };
    AnyResource::Environment(Environment::new("default", name, spec))
}

fn names(objects: &[AnyResource]) -> Vec<String> {
    objects.iter().map(|o| o.meta().name.clone()).collect()
}

async fn next(w: &mut Watcher, cancel: &CancellationToken) -> Change {
    tokio::time::timeout(Duration::from_secs(10), w.next(cancel))
        .await
        .expect("a change within 10 s")
        .expect("not shut down")
        .expect("no error after the first listing")
}

#[tokio::test]
async fn first_listing_holds_everything_and_later_changes_follow_in_order() {
    let store = setup();
    store.create(env("a")).await.expect("create a");
    let mut w = Watcher::new(store.clone(), "test");
    let cancel = CancellationToken::new();
    let Change::Listed { objects, revision } = next(&mut w, &cancel).await else {
        panic!("first is a listing")
    };
    assert_eq!(names(&objects), ["a"]);
    assert!(revision > 0);

    store.create(env("b")).await.expect("create b");
    store
        .delete(ResourceKind::Environment, "default", "a")
        .await
        .expect("delete a");
    let Change::Applied(added) = next(&mut w, &cancel).await else {
        panic!("a change")
    };
    assert_eq!(
        (added.event_type, added.object.meta().name.as_str()),
        (WatchEventType::Added, "b")
    );
    let Change::Applied(deleted) = next(&mut w, &cancel).await else {
        panic!("a change")
    };
    assert_eq!(
        (deleted.event_type, deleted.object.meta().name.as_str()),
        (WatchEventType::Deleted, "a")
    );
    assert!(deleted.revision > added.revision);
    assert!(w.next_ready().is_none(), "nothing else is queued");
}

#[tokio::test]
async fn a_failing_first_listing_is_reported_to_the_caller() {
    let store = setup();
    store.fail_listings(1);
    let mut w = Watcher::new(store.clone(), "test");
    let cancel = CancellationToken::new();
    let first = w.next(&cancel).await.expect("not shut down");
    assert!(matches!(first, Err(StoreError::Backend(_))), "{first:?}");
    // Asked again, it lists (after its backoff) and goes on.
    assert!(matches!(next(&mut w, &cancel).await, Change::Listed { .. }));
}

#[tokio::test]
async fn later_listing_failures_are_retried_with_backoff_not_reported() {
    let store = setup();
    store.cut_feeds(FeedCut::EndAfter(1));
    let mut w = Watcher::new(store.clone(), "test");
    let cancel = CancellationToken::new();
    assert!(matches!(next(&mut w, &cancel).await, Change::Listed { .. }));
    // The feed ends after one event; the next two listings fail; the third works.
    store.fail_listings(2);
    store.create(env("a")).await.expect("create a");
    store.create(env("b")).await.expect("create b");
    let Change::Applied(a) = next(&mut w, &cancel).await else {
        panic!("a change")
    };
    assert_eq!(a.object.meta().name, "a");
    let started = tokio::time::Instant::now();
    let Change::Listed { objects, .. } = next(&mut w, &cancel).await else {
        panic!("a new listing")
    };
    assert_eq!(
        names(&objects),
        ["a", "b"],
        "the listing holds what the lost feed did not deliver"
    );
    // Pauses of 100 + 200 + 400 ms before the three listings.
    assert!(
        started.elapsed() >= Duration::from_millis(650),
        "backed off: {:?}",
        started.elapsed()
    );
    assert_eq!(store.listings(), 4);
}

#[tokio::test]
async fn a_consumer_that_fell_behind_relists_at_once_and_sees_no_replay() {
    let store = setup();
    store.create(env("a")).await.expect("create a");
    store.cut_feeds(FeedCut::LagAfter(1));
    let mut w = Watcher::new(store.clone(), "test");
    let cancel = CancellationToken::new();
    let Change::Listed {
        revision: first, ..
    } = next(&mut w, &cancel).await
    else {
        panic!("listing")
    };
    store.cut_feeds(FeedCut::Never);
    store.create(env("b")).await.expect("create b");
    store.create(env("c")).await.expect("create c");
    let Change::Applied(b) = next(&mut w, &cancel).await else {
        panic!("b")
    };
    assert_eq!(b.object.meta().name, "b");
    let started = tokio::time::Instant::now();
    let Change::Listed { objects, revision } = next(&mut w, &cancel).await else {
        panic!("relisting after Lagged")
    };
    assert!(
        started.elapsed() < Duration::from_millis(90),
        "no backoff after Lagged"
    );
    assert_eq!(names(&objects), ["a", "b", "c"]);
    assert!(revision > first);
    // A change after the new listing arrives once; nothing before it is replayed.
    store.create(env("d")).await.expect("create d");
    let Change::Applied(d) = next(&mut w, &cancel).await else {
        panic!("d")
    };
    assert_eq!(d.object.meta().name, "d");
    assert!(w.next_ready().is_none());
}

#[tokio::test]
async fn shutdown_ends_the_watch_while_waiting() {
    let store = setup();
    let mut w = Watcher::new(store.clone(), "test");
    let cancel = CancellationToken::new();
    assert!(matches!(next(&mut w, &cancel).await, Change::Listed { .. }));
    let stopper = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stopper.cancel();
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(5), w.next(&cancel))
            .await
            .expect("returns")
            .is_none()
    );
}
