use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{SecondsFormat, Utc};
use fission_core::{
    AnyResource, ResourceKind, ResourceStore, StoreError, WatchEvent, WatchEventType, WatchStream,
};
use futures::StreamExt as _;
use tokio::sync::broadcast;

/// Events buffered per watcher before it gets `Lagged`, unless [`MemoryStore::with_feed_capacity`]
/// says otherwise; the same as the durable store's.
pub const DEFAULT_FEED_CAPACITY: usize = 4096;

type Key = (ResourceKind, String, String);

/// How the feeds of later `list_and_watch` calls end (see [`MemoryStore::cut_feeds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeedCut {
    /// Feeds run until the store is dropped (or the watcher lags on its own).
    #[default]
    Never,
    /// Feeds end after this many events, as when a connection to the store is lost.
    EndAfter(usize),
    /// Feeds report `Lagged` after this many events, then end.
    LagAfter(usize),
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, AnyResource>,
    revision: u64,
    failing: Option<String>,
    failing_listings: usize,
    listings: usize,
    cut: FeedCut,
}

/// A [`ResourceStore`] in memory, with the durable store's semantics (it passes the same
/// [`contract`](crate::contract) suite): one store-wide revision counter, uids `uid-<n>`, a
/// broadcast change feed published under the write lock so feed order is revision order.
///
/// Test knobs: a small feed capacity ([`with_feed_capacity`](Self::with_feed_capacity)) makes
/// slow watchers lag quickly; [`fail_with`](Self::fail_with) makes every call fail with a
/// backend error, [`fail_listings`](Self::fail_listings) only the next few listings;
/// [`cut_feeds`](Self::cut_feeds) ends or lags feeds early; [`listings`](Self::listings)
/// counts `list_and_watch` calls.
pub struct MemoryStore {
    state: Mutex<State>,
    feed: broadcast::Sender<WatchEvent>,
}

impl MemoryStore {
    /// An empty store with the default feed capacity.
    pub fn new() -> Arc<Self> {
        Self::with_feed_capacity(DEFAULT_FEED_CAPACITY)
    }

    /// An empty store whose watchers get `Lagged` once they are `capacity` events behind.
    pub fn with_feed_capacity(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            feed: broadcast::channel(capacity.max(1)).0,
        })
    }

    /// While `Some`, every operation fails with `StoreError::Backend(message)` and changes
    /// nothing (a broken disk, a lost API server); `None` heals the store.
    pub fn fail_with(&self, message: Option<&str>) {
        self.lock().failing = message.map(str::to_owned);
    }

    /// The next `n` calls of `list_and_watch` fail with a backend error (other calls work).
    pub fn fail_listings(&self, n: usize) {
        self.lock().failing_listings = n;
    }

    /// How the feeds of later `list_and_watch` calls end; feeds already handed out keep theirs.
    pub fn cut_feeds(&self, cut: FeedCut) {
        self.lock().cut = cut;
    }

    /// How many times `list_and_watch` was called, failed calls included.
    pub fn listings(&self) -> usize {
        self.lock().listings
    }

    /// The last assigned revision.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the store from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, unless failure injection is on.
    fn state(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let st = self.lock();
        match &st.failing {
            Some(msg) => Err(StoreError::Backend(msg.clone())),
            None => Ok(st),
        }
    }

    /// Store `next` (None = delete) at the next revision and publish the event, under the lock.
    fn commit(
        &self,
        st: &mut State,
        key: Key,
        next: Option<AnyResource>,
        event: WatchEventType,
        mut obj: AnyResource,
    ) -> AnyResource {
        st.revision += 1;
        let revision = st.revision;
        obj.meta_mut().resource_version = revision.to_string();
        match next {
            Some(_) => st.objects.insert(key, obj.clone()),
            None => st.objects.remove(&key),
        };
        // No receivers is fine: nobody is watching.
        let _ = self.feed.send(WatchEvent {
            event_type: event,
            object: obj.clone(),
            revision,
        });
        obj
    }
}

fn key_of(obj: &AnyResource) -> Key {
    (
        obj.kind(),
        obj.meta().namespace.clone(),
        obj.meta().name.clone(),
    )
}

fn not_found((kind, namespace, name): Key) -> StoreError {
    StoreError::NotFound {
        kind,
        namespace,
        name,
    }
}

#[async_trait::async_trait]
impl ResourceStore for MemoryStore {
    async fn create(&self, mut obj: AnyResource) -> Result<AnyResource, StoreError> {
        let mut st = self.state()?;
        let key = key_of(&obj);
        if st.objects.contains_key(&key) {
            let (kind, namespace, name) = key;
            return Err(StoreError::AlreadyExists {
                kind,
                namespace,
                name,
            });
        }
        let m = obj.meta_mut();
        m.uid = format!("uid-{}", st.revision + 1);
        m.generation = 1;
        m.creation_timestamp = Some(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
        Ok(self.commit(&mut st, key, Some(obj.clone()), WatchEventType::Added, obj))
    }

    async fn update(&self, mut obj: AnyResource) -> Result<AnyResource, StoreError> {
        let mut st = self.state()?;
        let key = key_of(&obj);
        let Some(current) = st.objects.get(&key) else {
            return Err(not_found(key));
        };
        let cur = current.meta();
        let sent = obj.meta().resource_version.clone();
        if !sent.is_empty() && sent != cur.resource_version {
            let (kind, namespace, name) = key;
            return Err(StoreError::Conflict {
                kind,
                namespace,
                name,
                sent,
                current: cur.resource_version.clone(),
            });
        }
        let bump = obj.spec_differs(current);
        let (uid, created, generation) = (
            cur.uid.clone(),
            cur.creation_timestamp.clone(),
            cur.generation,
        );
        let m = obj.meta_mut();
        m.uid = uid;
        m.creation_timestamp = created;
        m.generation = generation + i64::from(bump);
        Ok(self.commit(
            &mut st,
            key,
            Some(obj.clone()),
            WatchEventType::Modified,
            obj,
        ))
    }

    async fn delete(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<AnyResource, StoreError> {
        let mut st = self.state()?;
        let key = (kind, namespace.to_owned(), name.to_owned());
        let Some(last) = st.objects.get(&key).cloned() else {
            return Err(not_found(key));
        };
        Ok(self.commit(&mut st, key, None, WatchEventType::Deleted, last))
    }

    async fn get(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<AnyResource, StoreError> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        self.state()?
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found(key))
    }

    async fn list(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
    ) -> Result<Vec<AnyResource>, StoreError> {
        // The map is ordered by (kind, namespace, name), which is the documented list order.
        Ok(self
            .state()?
            .objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
            .map(|(_, o)| o.clone())
            .collect())
    }

    async fn list_and_watch(&self) -> Result<(Vec<AnyResource>, u64, WatchStream), StoreError> {
        let mut st = self.state()?;
        st.listings += 1;
        if st.failing_listings > 0 {
            st.failing_listings -= 1;
            return Err(StoreError::Backend("injected listing failure".to_owned()));
        }
        // Subscribing under the lock: no write can fall between the snapshot and the feed.
        let rx = self.feed.subscribe();
        let snapshot = st.objects.values().cloned().collect();
        // After `Lagged` the feed ends: the consumer has missed changes and must list again.
        let feed = futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(ev) => Some((Ok(ev), Some(rx))),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Some((Err(StoreError::Lagged(n)), None))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        let feed: WatchStream = match st.cut {
            FeedCut::Never => Box::pin(feed),
            FeedCut::EndAfter(n) => Box::pin(feed.take(n)),
            FeedCut::LagAfter(n) => Box::pin(
                feed.take(n)
                    .chain(futures::stream::iter([Err(StoreError::Lagged(1))])),
            ),
        };
        Ok((snapshot, st.revision, feed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fission_core::resources::{Function, FunctionSpec};

    fn function(name: &str) -> AnyResource {
        AnyResource::Function(Function::new("default", name, FunctionSpec::default()))
    }

    #[tokio::test]
    async fn failure_injection_fails_every_call_and_changes_nothing_until_healed() {
        let store = MemoryStore::new();
        store.create(function("kept")).await.expect("create");
        store.fail_with(Some("disk on fire"));
        let err = store
            .create(function("lost"))
            .await
            .expect_err("injected failure");
        assert_eq!(err.to_string(), "storage backend failed: disk on fire");
        assert!(
            store
                .get(ResourceKind::Function, "default", "kept")
                .await
                .is_err()
        );
        assert!(store.list_and_watch().await.is_err());
        store.fail_with(None);
        let names: Vec<_> = store
            .list(ResourceKind::Function, None)
            .await
            .expect("list")
            .iter()
            .map(|o| o.meta().name.clone())
            .collect();
        assert_eq!(names, ["kept"]);
        assert_eq!(store.revision(), 1);
    }

    #[tokio::test]
    async fn listings_can_fail_a_few_times_and_are_counted() {
        let store = MemoryStore::new();
        store.fail_listings(2);
        for _ in 0..2 {
            let err = store
                .list_and_watch()
                .await
                .err()
                .expect("injected failure");
            assert_eq!(
                err.to_string(),
                "storage backend failed: injected listing failure"
            );
        }
        store
            .create(function("f"))
            .await
            .expect("writes still work");
        let (objects, _, _) = store.list_and_watch().await.expect("third listing works");
        assert_eq!(objects.len(), 1);
        assert_eq!(store.listings(), 3);
    }

    #[tokio::test]
    async fn cut_feeds_end_or_lag_after_n_events_and_only_later_feeds_are_cut() {
        use futures::StreamExt as _;
        let store = MemoryStore::new();
        let (_, _, mut uncut) = store.list_and_watch().await.expect("watch");
        store.cut_feeds(FeedCut::EndAfter(1));
        let (_, _, mut ends) = store.list_and_watch().await.expect("watch");
        store.cut_feeds(FeedCut::LagAfter(1));
        let (_, _, mut lags) = store.list_and_watch().await.expect("watch");
        store.create(function("a")).await.expect("create");
        store.create(function("b")).await.expect("create");
        assert!(matches!(ends.next().await, Some(Ok(_))));
        assert!(ends.next().await.is_none(), "ended after one event");
        assert!(matches!(lags.next().await, Some(Ok(_))));
        assert!(matches!(
            lags.next().await,
            Some(Err(StoreError::Lagged(_)))
        ));
        assert!(lags.next().await.is_none(), "ended after Lagged");
        for name in ["a", "b"] {
            let ev = uncut.next().await.expect("event").expect("ok");
            assert_eq!(ev.object.meta().name, name);
        }
    }
}
