use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{SecondsFormat, Utc};
use fission_core::{
    AnyResource, ResourceKind, ResourceStore, StoreError, WatchEvent, WatchEventType, WatchStream,
};
use tokio::sync::broadcast;

/// Events buffered per watcher before it gets `Lagged`, unless [`MemoryStore::with_feed_capacity`]
/// says otherwise; the same as the durable store's.
pub const DEFAULT_FEED_CAPACITY: usize = 4096;

type Key = (ResourceKind, String, String);

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, AnyResource>,
    revision: u64,
    failing: Option<String>,
}

/// A [`ResourceStore`] in memory, with the durable store's semantics (it passes the same
/// [`contract`](crate::contract) suite): one store-wide revision counter, uids `uid-<n>`, a
/// broadcast change feed published under the write lock so feed order is revision order.
///
/// Test knobs: a small feed capacity ([`with_feed_capacity`](Self::with_feed_capacity)) makes
/// slow watchers lag quickly, and [`fail_with`](Self::fail_with) makes every call fail with a
/// backend error.
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
        let st = self.state()?;
        // Subscribing under the lock: no write can fall between the snapshot and the feed.
        let rx = self.feed.subscribe();
        let snapshot = st.objects.values().cloned().collect();
        // After `Lagged` the feed ends: the consumer has missed changes and must list again.
        let stream = futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(ev) => Some((Ok(ev), Some(rx))),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Some((Err(StoreError::Lagged(n)), None))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Ok((snapshot, st.revision, Box::pin(stream)))
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
}
