//! The `ResourceStore` contract: every behaviour the trait documents, as cases any backend runs.
//!
//! A backend's test file runs the whole suite with one macro call; `store` is an async block
//! yielding a fresh, empty store plus whatever must live as long as it (a temporary directory),
//! and `lags_after` is the number of unread events after which a watcher is guaranteed `Lagged`:
//!
//! ```ignore
//! fission_test_support::store_contract_tests! {
//!     store: async {
//!         let dir = tempfile::tempdir().expect("tempdir");
//!         let store = RedbStore::open(&dir.path().join("db.redb")).expect("open");
//!         (std::sync::Arc::new(store) as std::sync::Arc<dyn ResourceStore>, dir)
//!     },
//!     lags_after: 4096,
//! }
//! ```
//!
//! Each case is also a `pub async fn` taking the store, for a backend that needs its own harness.

use std::collections::BTreeSet;
use std::time::Duration;

use fission_core::resources::{
    Environment, EnvironmentSpec, Function, FunctionReference, FunctionSpec, HttpTrigger,
    HttpTriggerSpec, Runtime,
};
use fission_core::{
    AnyResource, ResourceKind, ResourceStore, StoreError, WatchEvent, WatchEventType, WatchStream,
};
use futures::StreamExt as _;

/// How long a case waits for a change to show up on the feed.
const FEED_WAIT: Duration = Duration::from_secs(10);
/// How long the feed must stay silent for "nothing was published".
const QUIET: Duration = Duration::from_millis(200);

/// Generates one `#[tokio::test]` per contract case for a backend; see the [module docs](self).
#[macro_export]
macro_rules! store_contract_tests {
    (store: $make:expr, lags_after: $lags_after:expr $(,)?) => {
        $crate::store_contract_tests!(@cases $make;
            create_assigns_uid_creation_timestamp_generation_and_resource_version,
            create_of_a_taken_name_is_already_exists_and_changes_nothing,
            the_same_name_may_exist_in_another_namespace_or_kind,
            reading_updating_or_deleting_a_missing_object_is_not_found,
            resource_versions_increase_store_wide_across_kinds_and_objects,
            update_with_the_current_or_an_empty_resource_version_succeeds,
            update_with_a_stale_resource_version_conflicts_and_changes_nothing,
            generation_bumps_only_when_the_spec_changes,
            update_keeps_uid_and_creation_timestamp_whatever_the_caller_sends,
            delete_returns_the_last_state_and_a_recreated_name_is_a_new_object,
            list_is_sorted_by_namespace_then_name_and_filtered_by_namespace,
            list_and_watch_returns_a_snapshot_then_every_later_change_in_revision_order,
            deleted_events_carry_the_last_state,
            refused_writes_publish_nothing,
            every_watcher_sees_the_whole_feed,
            snapshot_and_feed_together_miss_nothing_under_concurrent_writes,
        );
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_watcher_that_falls_behind_gets_lagged_and_must_relist() {
            let (store, _keep) = $make.await;
            $crate::contract::a_watcher_that_falls_behind_gets_lagged_and_must_relist(&*store, $lags_after).await;
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _keep) = $make.await;
                $crate::contract::$case(&*store).await;
            }
        )*
    };
}

// === Fixtures ===

fn environment(namespace: &str, name: &str, image: &str) -> AnyResource {
    let spec = EnvironmentSpec {
        version: 3,
        runtime: Runtime {
            image: image.to_owned(),
            ..Runtime::default()
        },
        ..EnvironmentSpec::default()
    };
    AnyResource::Environment(Environment::new(namespace, name, spec))
}

fn function(namespace: &str, name: &str) -> AnyResource {
    AnyResource::Function(Function::new(namespace, name, FunctionSpec::default()))
}

fn trigger(namespace: &str, name: &str, url: &str) -> AnyResource {
    let spec = HttpTriggerSpec {
        relativeurl: url.to_owned(),
        methods: vec!["GET".to_owned()],
        functionref: FunctionReference::by_name("f"),
        ..HttpTriggerSpec::default()
    };
    AnyResource::HttpTrigger(HttpTrigger::new(namespace, name, spec))
}

fn image(obj: &AnyResource) -> String {
    match obj {
        AnyResource::Environment(e) => e.spec.runtime.image.clone(),
        other => panic!("expected an Environment, got {:?}", other.kind()),
    }
}

fn id(obj: &AnyResource) -> (String, String) {
    (obj.meta().namespace.clone(), obj.meta().name.clone())
}

fn rv(obj: &AnyResource) -> u64 {
    let v = &obj.meta().resource_version;
    v.parse().unwrap_or_else(|_| {
        panic!(
            "resourceVersion {v:?} of {:?} is not a decimal number",
            id(obj)
        )
    })
}

async fn create(store: &dyn ResourceStore, obj: AnyResource) -> AnyResource {
    let what = id(&obj);
    store
        .create(obj)
        .await
        .unwrap_or_else(|e| panic!("create {what:?}: {e}"))
}

async fn update(store: &dyn ResourceStore, obj: AnyResource) -> AnyResource {
    let what = id(&obj);
    store
        .update(obj)
        .await
        .unwrap_or_else(|e| panic!("update {what:?}: {e}"))
}

async fn get(
    store: &dyn ResourceStore,
    kind: ResourceKind,
    namespace: &str,
    name: &str,
) -> AnyResource {
    store
        .get(kind, namespace, name)
        .await
        .unwrap_or_else(|e| panic!("get {kind} {namespace}/{name}: {e}"))
}

async fn watch(store: &dyn ResourceStore) -> (Vec<AnyResource>, u64, WatchStream) {
    store
        .list_and_watch()
        .await
        .unwrap_or_else(|e| panic!("list_and_watch: {e}"))
}

/// The next change, failing the case if the feed errs, ends or stays silent.
async fn next_event(feed: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(FEED_WAIT, feed.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("the change feed failed: {e}"),
        Ok(None) => panic!("the change feed ended"),
        Err(_) => panic!("no change on the feed within {FEED_WAIT:?}"),
    }
}

async fn assert_quiet(feed: &mut WatchStream, after: &str) {
    if let Ok(item) = tokio::time::timeout(QUIET, feed.next()).await {
        panic!("the feed published something after {after}: {item:?}");
    }
}

fn assert_event(ev: &WatchEvent, event_type: WatchEventType, kind: ResourceKind, name: &str) {
    assert_eq!(
        (
            ev.event_type,
            ev.object.kind(),
            ev.object.meta().name.as_str()
        ),
        (event_type, kind, name),
        "unexpected event at revision {}",
        ev.revision
    );
    assert_eq!(
        ev.object.meta().resource_version,
        ev.revision.to_string(),
        "an event's object carries its revision"
    );
}

// === Cases ===

/// `create` fills in uid, creationTimestamp, generation 1 and a numeric resourceVersion (any
/// the caller sent are replaced), stores the rest as given, and `get` returns the same.
pub async fn create_assigns_uid_creation_timestamp_generation_and_resource_version(
    store: &dyn ResourceStore,
) {
    let mut obj = environment("default", "node", "fission/node-env");
    let m = obj.meta_mut();
    m.uid = "caller-made-this-up".to_owned();
    m.resource_version = "999999".to_owned();
    m.generation = 42;
    m.labels = Some([("team".to_owned(), "a".to_owned())].into());
    let created = create(store, obj).await;
    let m = created.meta();
    assert!(
        !m.uid.is_empty() && m.uid != "caller-made-this-up",
        "uid assigned by the store: {:?}",
        m.uid
    );
    assert_eq!(m.generation, 1);
    assert_ne!(
        m.resource_version, "999999",
        "resourceVersion is assigned by the store"
    );
    rv(&created);
    let ts = m
        .creation_timestamp
        .as_deref()
        .expect("creationTimestamp set");
    chrono::DateTime::parse_from_rfc3339(ts)
        .unwrap_or_else(|e| panic!("creationTimestamp {ts:?} is not RFC 3339: {e}"));
    assert_eq!(image(&created), "fission/node-env");
    assert_eq!(m.labels, Some([("team".to_owned(), "a".to_owned())].into()));
    assert_eq!(
        get(store, ResourceKind::Environment, "default", "node").await,
        created
    );
    let other = create(
        store,
        environment("default", "python", "fission/python-env"),
    )
    .await;
    assert_ne!(other.meta().uid, created.meta().uid, "uids are unique");
}

/// Creating a taken name fails with `AlreadyExists` naming the object, and leaves it as it was.
pub async fn create_of_a_taken_name_is_already_exists_and_changes_nothing(
    store: &dyn ResourceStore,
) {
    let first = create(store, environment("default", "node", "fission/node-env")).await;
    let err = store
        .create(environment("default", "node", "other/image"))
        .await
        .expect_err("duplicate create");
    match &err {
        StoreError::AlreadyExists {
            kind,
            namespace,
            name,
        } => {
            assert_eq!(
                (*kind, namespace.as_str(), name.as_str()),
                (ResourceKind::Environment, "default", "node")
            );
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(err.to_string(), "Environment 'default/node' already exists");
    assert_eq!(
        get(store, ResourceKind::Environment, "default", "node").await,
        first
    );
}

/// Names are unique per kind and namespace only.
pub async fn the_same_name_may_exist_in_another_namespace_or_kind(store: &dyn ResourceStore) {
    let a = create(store, function("default", "same")).await;
    let b = create(store, function("other", "same")).await;
    let c = create(store, trigger("default", "same", "/same")).await;
    assert_ne!(a.meta().uid, b.meta().uid);
    assert_ne!(a.meta().uid, c.meta().uid);
    assert_eq!(get(store, ResourceKind::Function, "other", "same").await, b);
    assert_eq!(
        get(store, ResourceKind::HttpTrigger, "default", "same").await,
        c
    );
}

/// `get`, `update` and `delete` of an object that does not exist fail with `NotFound` naming it.
pub async fn reading_updating_or_deleting_a_missing_object_is_not_found(store: &dyn ResourceStore) {
    create(store, function("default", "exists")).await;
    let check = |err: StoreError, op: &str| match &err {
        StoreError::NotFound {
            kind,
            namespace,
            name,
        } => {
            assert_eq!(
                (*kind, namespace.as_str(), name.as_str()),
                (ResourceKind::Function, "default", "nope"),
                "{op}"
            );
            assert_eq!(err.to_string(), "Function 'default/nope' not found", "{op}");
        }
        other => panic!("{op}: expected NotFound, got {other:?}"),
    };
    check(
        store
            .get(ResourceKind::Function, "default", "nope")
            .await
            .expect_err("get missing"),
        "get",
    );
    check(
        store
            .update(function("default", "nope"))
            .await
            .expect_err("update missing"),
        "update",
    );
    check(
        store
            .delete(ResourceKind::Function, "default", "nope")
            .await
            .expect_err("delete missing"),
        "delete",
    );
    assert!(
        store
            .get(ResourceKind::Function, "default", "nope")
            .await
            .is_err(),
        "update must not create"
    );
    // The same name of another kind does not count.
    let err = store
        .get(ResourceKind::Environment, "default", "exists")
        .await
        .expect_err("other kind");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

/// Every write gets a resourceVersion above every earlier one, whatever object or kind it is on.
pub async fn resource_versions_increase_store_wide_across_kinds_and_objects(
    store: &dyn ResourceStore,
) {
    let mut versions = vec![
        rv(&create(store, environment("default", "e", "img")).await),
        rv(&create(store, function("default", "f")).await),
        rv(&create(store, trigger("other", "t", "/t")).await),
        rv(&update(store, environment("default", "e", "img2")).await),
        rv(&store
            .delete(ResourceKind::Function, "default", "f")
            .await
            .expect("delete")),
    ];
    versions.push(rv(&create(store, function("default", "f")).await));
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "resourceVersions not strictly increasing: {versions:?}"
    );
}

/// `update` with the stored resourceVersion, or with none, replaces the object.
pub async fn update_with_the_current_or_an_empty_resource_version_succeeds(
    store: &dyn ResourceStore,
) {
    let created = create(store, environment("default", "e", "v1")).await;
    let mut next = environment("default", "e", "v2");
    next.meta_mut().resource_version = created.meta().resource_version.clone();
    let updated = update(store, next).await;
    assert_eq!(image(&updated), "v2");
    assert!(rv(&updated) > rv(&created));
    let unconditional = update(store, environment("default", "e", "v3")).await;
    assert_eq!(image(&unconditional), "v3");
    assert!(rv(&unconditional) > rv(&updated));
    assert_eq!(
        get(store, ResourceKind::Environment, "default", "e").await,
        unconditional
    );
}

/// `update` with a resourceVersion that is no longer current fails with `Conflict` (saying
/// both versions) and changes nothing.
pub async fn update_with_a_stale_resource_version_conflicts_and_changes_nothing(
    store: &dyn ResourceStore,
) {
    let created = create(store, environment("default", "e", "v1")).await;
    let current = update(store, environment("default", "e", "v2")).await;
    let mut stale = environment("default", "e", "stale");
    stale.meta_mut().resource_version = created.meta().resource_version.clone();
    let err = store.update(stale).await.expect_err("stale update");
    match &err {
        StoreError::Conflict {
            kind,
            namespace,
            name,
            sent,
            current: cur,
        } => {
            assert_eq!(
                (*kind, namespace.as_str(), name.as_str()),
                (ResourceKind::Environment, "default", "e")
            );
            assert_eq!(sent, &created.meta().resource_version);
            assert_eq!(cur, &current.meta().resource_version);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(
        err.to_string().contains("was modified since you read it"),
        "{err}"
    );
    assert_eq!(
        get(store, ResourceKind::Environment, "default", "e").await,
        current
    );
}

/// `generation` counts spec changes: metadata-only updates keep it.
pub async fn generation_bumps_only_when_the_spec_changes(store: &dyn ResourceStore) {
    create(store, environment("default", "e", "v1")).await;
    let mut labelled = environment("default", "e", "v1");
    labelled.meta_mut().labels = Some([("tier".to_owned(), "gold".to_owned())].into());
    let labelled = update(store, labelled).await;
    assert_eq!(
        labelled.meta().generation,
        1,
        "a labels-only update keeps generation"
    );
    let changed = update(store, environment("default", "e", "v2")).await;
    assert_eq!(
        changed.meta().generation,
        2,
        "a spec change bumps generation"
    );
    let same = update(store, environment("default", "e", "v2")).await;
    assert_eq!(
        same.meta().generation,
        2,
        "rewriting the same spec keeps generation"
    );
    assert!(rv(&same) > rv(&changed), "but it is still a write");
    assert_eq!(
        get(store, ResourceKind::Environment, "default", "e")
            .await
            .meta()
            .generation,
        2
    );
}

/// uid and creationTimestamp belong to the object's identity; an update cannot change them.
pub async fn update_keeps_uid_and_creation_timestamp_whatever_the_caller_sends(
    store: &dyn ResourceStore,
) {
    let created = create(store, function("default", "f")).await;
    let mut forged = function("default", "f");
    let m = forged.meta_mut();
    m.uid = "forged".to_owned();
    m.creation_timestamp = Some("2000-01-01T00:00:00Z".to_owned());
    m.generation = 77;
    let updated = update(store, forged).await;
    assert_eq!(updated.meta().uid, created.meta().uid);
    assert_eq!(
        updated.meta().creation_timestamp,
        created.meta().creation_timestamp
    );
    assert_eq!(updated.meta().generation, 1);
}

/// `delete` returns the object as it last was and removes it; creating the name again makes a
/// new object (new uid, generation 1).
pub async fn delete_returns_the_last_state_and_a_recreated_name_is_a_new_object(
    store: &dyn ResourceStore,
) {
    let created = create(store, environment("default", "e", "v1")).await;
    let last = update(store, environment("default", "e", "v2")).await;
    let deleted = store
        .delete(ResourceKind::Environment, "default", "e")
        .await
        .expect("delete");
    assert_eq!(image(&deleted), "v2");
    assert_eq!(deleted.meta().uid, created.meta().uid);
    assert_eq!(deleted.meta().generation, last.meta().generation);
    assert!(rv(&deleted) >= rv(&last));
    let err = store
        .get(ResourceKind::Environment, "default", "e")
        .await
        .expect_err("gone");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(
        store
            .list(ResourceKind::Environment, None)
            .await
            .expect("list")
            .is_empty()
    );
    let again = create(store, environment("default", "e", "v3")).await;
    assert_ne!(
        again.meta().uid,
        created.meta().uid,
        "a recreated object has a new uid"
    );
    assert_eq!(again.meta().generation, 1);
    assert!(rv(&again) > rv(&deleted));
}

/// `list` returns one kind, sorted by namespace then name, in one namespace or all.
pub async fn list_is_sorted_by_namespace_then_name_and_filtered_by_namespace(
    store: &dyn ResourceStore,
) {
    // Namespaces and names where byte order of "namespace/name" keys differs from
    // (namespace, name) order: '-' sorts before '/'.
    for (ns, name) in [
        ("b", "x"),
        ("a-b", "y"),
        ("a", "z"),
        ("a", "y-1"),
        ("a", "y"),
        ("a-b", "a"),
        ("b", "a"),
    ] {
        create(store, function(ns, name)).await;
    }
    create(store, trigger("a", "t", "/t")).await;
    create(store, environment("a", "e", "img")).await;
    let names = |objs: Vec<AnyResource>| objs.iter().map(id).collect::<Vec<_>>();
    let pair = |ns: &str, n: &str| (ns.to_owned(), n.to_owned());
    let all = names(
        store
            .list(ResourceKind::Function, None)
            .await
            .expect("list all"),
    );
    assert_eq!(
        all,
        [
            pair("a", "y"),
            pair("a", "y-1"),
            pair("a", "z"),
            pair("a-b", "a"),
            pair("a-b", "y"),
            pair("b", "a"),
            pair("b", "x")
        ]
    );
    let in_a = names(
        store
            .list(ResourceKind::Function, Some("a"))
            .await
            .expect("list a"),
    );
    assert_eq!(in_a, [pair("a", "y"), pair("a", "y-1"), pair("a", "z")]);
    let in_a_b = names(
        store
            .list(ResourceKind::Function, Some("a-b"))
            .await
            .expect("list a-b"),
    );
    assert_eq!(in_a_b, [pair("a-b", "a"), pair("a-b", "y")]);
    assert!(
        store
            .list(ResourceKind::Function, Some("nowhere"))
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .list(ResourceKind::CanaryConfig, None)
            .await
            .expect("list")
            .is_empty()
    );
    let triggers = names(
        store
            .list(ResourceKind::HttpTrigger, None)
            .await
            .expect("list triggers"),
    );
    assert_eq!(triggers, [pair("a", "t")]);
}

/// `list_and_watch` returns every object of every kind at revision R, then every change after R
/// as (type, object, revision) with strictly increasing revisions above R.
pub async fn list_and_watch_returns_a_snapshot_then_every_later_change_in_revision_order(
    store: &dyn ResourceStore,
) {
    let e = create(store, environment("default", "e", "v1")).await;
    let f = create(store, function("other", "f")).await;
    let t = create(store, trigger("default", "t", "/t")).await;
    let (snapshot, r, mut feed) = watch(store).await;
    let mut expected = vec![e.clone(), f, t];
    let key = |o: &AnyResource| (o.kind(), o.meta().namespace.clone(), o.meta().name.clone());
    let mut got = snapshot.clone();
    got.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(got, expected, "the snapshot is every object of every kind");
    let newest = snapshot.iter().map(rv).max().unwrap_or(0);
    assert!(
        r >= newest,
        "snapshot revision {r} is below an object in it ({newest})"
    );

    let mut next = environment("default", "e", "v2");
    next.meta_mut().resource_version = e.meta().resource_version.clone();
    let updated = update(store, next).await;
    let created = create(store, function("default", "g")).await;
    store
        .delete(ResourceKind::HttpTrigger, "default", "t")
        .await
        .expect("delete");

    let ev1 = next_event(&mut feed).await;
    assert_event(
        &ev1,
        WatchEventType::Modified,
        ResourceKind::Environment,
        "e",
    );
    assert_eq!(
        ev1.object, updated,
        "a Modified event carries the object as stored"
    );
    let ev2 = next_event(&mut feed).await;
    assert_event(&ev2, WatchEventType::Added, ResourceKind::Function, "g");
    assert_eq!(
        ev2.object, created,
        "an Added event carries the object as stored"
    );
    let ev3 = next_event(&mut feed).await;
    assert_event(
        &ev3,
        WatchEventType::Deleted,
        ResourceKind::HttpTrigger,
        "t",
    );
    assert!(
        r < ev1.revision && ev1.revision < ev2.revision && ev2.revision < ev3.revision,
        "revisions must increase along the feed: snapshot {r}, then {}, {}, {}",
        ev1.revision,
        ev2.revision,
        ev3.revision
    );
    assert_quiet(&mut feed, "the last write").await;
}

/// A `Deleted` event's object is the object's last state (spec, uid, generation).
pub async fn deleted_events_carry_the_last_state(store: &dyn ResourceStore) {
    create(store, environment("default", "e", "v1")).await;
    let last = update(store, environment("default", "e", "v2")).await;
    let (_, _, mut feed) = watch(store).await;
    let returned = store
        .delete(ResourceKind::Environment, "default", "e")
        .await
        .expect("delete");
    let ev = next_event(&mut feed).await;
    assert_event(&ev, WatchEventType::Deleted, ResourceKind::Environment, "e");
    assert_eq!(image(&ev.object), "v2");
    assert_eq!(ev.object.meta().uid, last.meta().uid);
    assert_eq!(ev.object.meta().generation, last.meta().generation);
    assert_eq!(
        ev.object, returned,
        "the event carries what delete returned"
    );
}

/// Failed writes (duplicate create, stale update, missing update or delete) publish nothing.
pub async fn refused_writes_publish_nothing(store: &dyn ResourceStore) {
    let e = create(store, environment("default", "e", "v1")).await;
    update(store, environment("default", "e", "v2")).await;
    let (_, r, mut feed) = watch(store).await;
    assert!(
        store
            .create(environment("default", "e", "dup"))
            .await
            .is_err()
    );
    let mut stale = environment("default", "e", "stale");
    stale.meta_mut().resource_version = e.meta().resource_version.clone();
    assert!(store.update(stale).await.is_err());
    assert!(store.update(function("default", "missing")).await.is_err());
    assert!(
        store
            .delete(ResourceKind::Function, "default", "missing")
            .await
            .is_err()
    );
    assert_quiet(&mut feed, "refused writes").await;
    let created = create(store, function("default", "real")).await;
    let ev = next_event(&mut feed).await;
    assert_event(&ev, WatchEventType::Added, ResourceKind::Function, "real");
    assert_eq!(ev.object, created);
    assert!(ev.revision > r);
}

/// Watchers are independent: each gets every change.
pub async fn every_watcher_sees_the_whole_feed(store: &dyn ResourceStore) {
    let (_, _, mut first) = watch(store).await;
    let (_, _, mut second) = watch(store).await;
    for name in ["a", "b", "c"] {
        create(store, function("default", name)).await;
    }
    for feed in [&mut first, &mut second] {
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(next_event(feed).await.object.meta().name.clone());
        }
        assert_eq!(seen, ["a", "b", "c"]);
    }
    drop(first);
    // A watcher going away does not disturb the others or the writers.
    create(store, function("default", "d")).await;
    assert_eq!(next_event(&mut second).await.object.meta().name, "d");
}

/// Writes racing `list_and_watch` land either in the snapshot or on the feed, exactly once.
pub async fn snapshot_and_feed_together_miss_nothing_under_concurrent_writes(
    store: &dyn ResourceStore,
) {
    const N: usize = 60;
    let writer = async {
        for i in 0..N {
            create(store, function("default", &format!("f{i:03}"))).await;
            // Give list_and_watch a chance to run between writes on a single-threaded backend.
            tokio::task::yield_now().await;
        }
    };
    let watcher = async {
        tokio::task::yield_now().await;
        watch(store).await
    };
    let ((), (snapshot, r, mut feed)) = futures::join!(writer, watcher);
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for o in &snapshot {
        assert!(
            rv(o) <= r,
            "{:?} at {} is in the snapshot at {r}",
            id(o),
            rv(o)
        );
        seen.insert(o.meta().name.clone());
    }
    let mut last = r;
    while seen.len() < N {
        let ev = next_event(&mut feed).await;
        assert!(ev.revision > last, "revision {} after {last}", ev.revision);
        last = ev.revision;
        assert_eq!(ev.event_type, WatchEventType::Added);
        assert!(
            seen.insert(ev.object.meta().name.clone()),
            "{} both in the snapshot and on the feed",
            ev.object.meta().name
        );
    }
    assert_quiet(&mut feed, "all writes were seen").await;
}

/// A watcher `lags_after` or more events behind gets `Lagged` and then its feed ends (it must
/// relist); a new `list_and_watch` shows the current state.
pub async fn a_watcher_that_falls_behind_gets_lagged_and_must_relist(
    store: &dyn ResourceStore,
    lags_after: usize,
) {
    create(store, function("default", "busy")).await;
    let (_, _, mut slow) = watch(store).await;
    let mut last = None;
    for _ in 0..lags_after + 8 {
        last = Some(update(store, function("default", "busy")).await);
    }
    let last = last.expect("at least one update");
    let mut delivered = 0usize;
    loop {
        match tokio::time::timeout(FEED_WAIT, slow.next()).await {
            Ok(Some(Ok(_))) => {
                delivered += 1;
                assert!(delivered <= lags_after + 8, "more events than writes");
            }
            Ok(Some(Err(StoreError::Lagged(n)))) => {
                assert!(n > 0, "Lagged(0)");
                break;
            }
            Ok(Some(Err(e))) => panic!("expected Lagged, got {e:?}"),
            Ok(None) => panic!(
                "the feed ended without saying the watcher lagged ({delivered} events delivered)"
            ),
            Err(_) => {
                panic!(
                    "a watcher {} events behind (lags_after {lags_after}) was not told it lagged",
                    lags_after + 8
                )
            }
        }
    }
    assert!(
        delivered < lags_after + 8,
        "a lagged watcher cannot have had every event"
    );
    match tokio::time::timeout(FEED_WAIT, slow.next()).await {
        Ok(None) => {}
        other => panic!("after Lagged the feed must end, got {other:?}"),
    }
    let (snapshot, r, _) = watch(store).await;
    assert_eq!(
        snapshot,
        std::slice::from_ref(&last),
        "a relist shows the current state"
    );
    assert!(
        r >= rv(&last),
        "relist revision {r} is below the last write {}",
        rv(&last)
    );
}
