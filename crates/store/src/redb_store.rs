use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{SecondsFormat, Utc};
use fission_core::{
    AnyResource, ResourceKind, ResourceStore, StoreError, WatchEvent, WatchEventType, WatchStream,
};
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use tokio::sync::broadcast;

use crate::cipher::SecretCipher;

/// `"<plural>/<namespace>/<name>"` → object JSON.
const OBJECTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("objects");
/// `"revision"` → last assigned revision.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";
/// Events buffered per watcher before it must relist.
const FEED_CAPACITY: usize = 4096;

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn key(kind: ResourceKind, namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", kind.plural())
}

/// [`ResourceStore`] on a redb database file.
///
/// Writes are serialized and committed with redb's default (immediate, fsync'd) durability
/// before the call returns, and published on the change feed under the same lock, so the feed
/// order equals the revision order.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    cipher: Option<SecretCipher>,
    write_lock: Mutex<()>,
    feed: broadcast::Sender<WatchEvent>,
}

impl RedbStore {
    /// Open (creating) the database at `path`; Secrets are stored as given.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cipher(path, None)
    }

    /// Open (creating) the database at `path`, sealing every Secret with `cipher`.
    pub fn open_with_cipher(path: &Path, cipher: Option<SecretCipher>) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(backend)?;
        // Make sure both tables exist so readers never see "table does not exist".
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(OBJECTS).map_err(backend)?;
            txn.open_table(META).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                cipher,
                write_lock: Mutex::new(()),
                feed,
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(backend)?
    }
}

impl Inner {
    fn decode(&self, kind: ResourceKind, bytes: &[u8]) -> Result<AnyResource, StoreError> {
        match (&self.cipher, SecretCipher::is_sealed(bytes)) {
            (Some(c), true) => {
                let plain = c.open(bytes).map_err(backend)?;
                AnyResource::from_json(kind, &plain).map_err(backend)
            }
            (None, true) => Err(StoreError::Backend(
                "a sealed secret was found but no secret key is configured".into(),
            )),
            _ => AnyResource::from_json(kind, bytes).map_err(backend),
        }
    }

    fn encode(&self, obj: &AnyResource) -> Vec<u8> {
        let json = obj.to_json();
        match (&self.cipher, obj.kind()) {
            (Some(c), ResourceKind::Secret) => c.seal(&json),
            _ => json,
        }
    }

    fn read(&self, k: &str, kind: ResourceKind) -> Result<Option<AnyResource>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(OBJECTS).map_err(backend)?;
        match table.get(k).map_err(backend)? {
            None => Ok(None),
            Some(v) => Ok(Some(self.decode(kind, v.value())?)),
        }
    }

    /// Run one write: `f` gets the current object (if any) and the next revision, and returns
    /// the object to store (None = delete) plus the event to publish.
    fn write(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        f: impl FnOnce(
            Option<AnyResource>,
            u64,
        ) -> Result<(Option<AnyResource>, WatchEvent), StoreError>,
    ) -> Result<WatchEvent, StoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(kind, namespace, name);
        let txn = self.db.begin_write().map_err(backend)?;
        let event;
        {
            let mut meta = txn.open_table(META).map_err(backend)?;
            let revision = meta
                .get(REVISION_KEY)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0)
                + 1;
            let mut objects = txn.open_table(OBJECTS).map_err(backend)?;
            let current = match objects.get(k.as_str()).map_err(backend)? {
                None => None,
                Some(v) => Some(self.decode(kind, v.value())?),
            };
            let (next, ev) = f(current, revision)?;
            match next {
                Some(obj) => {
                    objects
                        .insert(k.as_str(), self.encode(&obj).as_slice())
                        .map_err(backend)?;
                }
                None => {
                    objects.remove(k.as_str()).map_err(backend)?;
                }
            }
            meta.insert(REVISION_KEY, revision).map_err(backend)?;
            event = ev;
        }
        txn.commit().map_err(backend)?;
        // No receivers is fine: nobody is watching yet.
        let _ = self.feed.send(event.clone());
        Ok(event)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(OBJECTS).map_err(backend)?;
        let mut out = Vec::new();
        for entry in table.range(prefix..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn revision(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        Ok(meta
            .get(REVISION_KEY)
            .map_err(backend)?
            .map(|v| v.value())
            .unwrap_or(0))
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[async_trait::async_trait]
impl ResourceStore for RedbStore {
    async fn create(&self, mut obj: AnyResource) -> Result<AnyResource, StoreError> {
        self.blocking(move |inner| {
            let kind = obj.kind();
            let (ns, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
            let ev = inner.write(kind, &ns, &name, |current, revision| {
                if current.is_some() {
                    return Err(StoreError::AlreadyExists {
                        kind,
                        namespace: ns.clone(),
                        name: name.clone(),
                    });
                }
                let m = obj.meta_mut();
                m.uid = uuid::Uuid::new_v4().to_string();
                m.resource_version = revision.to_string();
                m.generation = 1;
                m.creation_timestamp = Some(now());
                let ev = WatchEvent {
                    event_type: WatchEventType::Added,
                    object: obj.clone(),
                    revision,
                };
                Ok((Some(obj), ev))
            })?;
            Ok(ev.object)
        })
        .await
    }

    async fn update(&self, mut obj: AnyResource) -> Result<AnyResource, StoreError> {
        self.blocking(move |inner| {
            let kind = obj.kind();
            let (ns, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
            let ev = inner.write(kind, &ns, &name, |current, revision| {
                let Some(current) = current else {
                    return Err(StoreError::NotFound {
                        kind,
                        namespace: ns.clone(),
                        name: name.clone(),
                    });
                };
                let cur = current.meta();
                let sent = obj.meta().resource_version.clone();
                if !sent.is_empty() && sent != cur.resource_version {
                    return Err(StoreError::Conflict {
                        kind,
                        namespace: ns.clone(),
                        name: name.clone(),
                        sent,
                        current: cur.resource_version.clone(),
                    });
                }
                let bump = obj.spec_differs(&current);
                let m = obj.meta_mut();
                m.uid = cur.uid.clone();
                m.creation_timestamp = cur.creation_timestamp.clone();
                m.generation = cur.generation + i64::from(bump);
                m.resource_version = revision.to_string();
                let ev = WatchEvent {
                    event_type: WatchEventType::Modified,
                    object: obj.clone(),
                    revision,
                };
                Ok((Some(obj), ev))
            })?;
            Ok(ev.object)
        })
        .await
    }

    async fn delete(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<AnyResource, StoreError> {
        let (ns, name) = (namespace.to_owned(), name.to_owned());
        self.blocking(move |inner| {
            let ev = inner.write(kind, &ns, &name, |current, revision| {
                let Some(mut last) = current else {
                    return Err(StoreError::NotFound {
                        kind,
                        namespace: ns.clone(),
                        name: name.clone(),
                    });
                };
                last.meta_mut().resource_version = revision.to_string();
                Ok((
                    None,
                    WatchEvent {
                        event_type: WatchEventType::Deleted,
                        object: last,
                        revision,
                    },
                ))
            })?;
            Ok(ev.object)
        })
        .await
    }

    async fn get(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<AnyResource, StoreError> {
        let (ns, name) = (namespace.to_owned(), name.to_owned());
        self.blocking(move |inner| {
            inner
                .read(&key(kind, &ns, &name), kind)?
                .ok_or(StoreError::NotFound {
                    kind,
                    namespace: ns,
                    name,
                })
        })
        .await
    }

    async fn list(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
    ) -> Result<Vec<AnyResource>, StoreError> {
        let prefix = match namespace {
            Some(ns) => format!("{}/{ns}/", kind.plural()),
            None => format!("{}/", kind.plural()),
        };
        let mut objects: Vec<AnyResource> = self
            .blocking(move |inner| {
                inner
                    .list(&prefix)?
                    .into_iter()
                    .map(|(_, v)| inner.decode(kind, &v))
                    .collect()
            })
            .await?;
        // Key order is not (namespace, name) order: '-' sorts before the '/' separator, so
        // "a-b/x" would come before "a/x".
        objects.sort_by(|a, b| {
            (&a.meta().namespace, &a.meta().name).cmp(&(&b.meta().namespace, &b.meta().name))
        });
        Ok(objects)
    }

    async fn list_and_watch(&self) -> Result<(Vec<AnyResource>, u64, WatchStream), StoreError> {
        let (objects, revision, rx) = self
            .blocking(|inner| {
                // Holding the write lock makes snapshot + subscription atomic w.r.t. writes.
                let _guard = inner.write_lock.lock().unwrap_or_else(|e| e.into_inner());
                let rx = inner.feed.subscribe();
                let revision = inner.revision()?;
                let mut objects = Vec::new();
                for kind in ResourceKind::ALL {
                    for (_, v) in inner.list(&format!("{}/", kind.plural()))? {
                        objects.push(inner.decode(kind, &v)?);
                    }
                }
                Ok((objects, revision, rx))
            })
            .await?;
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
        Ok((objects, revision, Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fission_core::Object;
    use fission_core::resources::{EnvironmentSpec, Runtime};
    use futures::StreamExt as _;

    fn env(name: &str, image: &str) -> AnyResource {
        let mut o = Object::new(
            "default",
            name,
            EnvironmentSpec {
                runtime: Runtime {
                    image: image.into(),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        o.normalize();
        AnyResource::Environment(o)
    }

    fn open(dir: &Path) -> RedbStore {
        RedbStore::open(&dir.join("db.redb")).expect("open store")
    }

    #[tokio::test]
    async fn assigns_increasing_resource_versions_and_keeps_uid_across_updates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let a = store
            .create(env("a", "fission/node-env"))
            .await
            .expect("create a");
        let b = store
            .create(env("b", "fission/node-env"))
            .await
            .expect("create b");
        assert!(b.meta().resource_version_number() > a.meta().resource_version_number());
        assert_eq!(a.meta().generation, 1);
        let updated = store
            .update(env("a", "fission/python-env"))
            .await
            .expect("update");
        assert_eq!(updated.meta().uid, a.meta().uid);
        assert_eq!(updated.meta().generation, 2);
        assert!(updated.meta().resource_version_number() > b.meta().resource_version_number());
    }

    #[tokio::test]
    async fn refuses_duplicate_create_and_stale_update_without_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let first = store
            .create(env("a", "fission/node-env"))
            .await
            .expect("create");
        assert!(matches!(
            store.create(env("a", "x")).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        let mut fresh = env("a", "fission/python-env");
        fresh.meta_mut().resource_version = first.meta().resource_version.clone();
        store
            .update(fresh)
            .await
            .expect("update with current version");
        let mut stale = env("a", "stale/image");
        stale.meta_mut().resource_version = first.meta().resource_version.clone();
        assert!(matches!(
            store.update(stale).await,
            Err(StoreError::Conflict { .. })
        ));
        let AnyResource::Environment(e) = store
            .get(ResourceKind::Environment, "default", "a")
            .await
            .expect("get")
        else {
            panic!("wrong kind")
        };
        assert_eq!(e.spec.runtime.image, "fission/python-env");
    }

    #[tokio::test]
    async fn objects_survive_reopening_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(dir.path());
            store
                .create(env("kept", "fission/node-env"))
                .await
                .expect("create");
        }
        let store = open(dir.path());
        let listed = store
            .list(ResourceKind::Environment, Some("default"))
            .await
            .expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].meta().name, "kept");
        assert!(
            store
                .list(ResourceKind::Environment, Some("other"))
                .await
                .expect("list")
                .is_empty()
        );
        let again = store
            .create(env("next", "fission/node-env"))
            .await
            .expect("create");
        assert!(
            again.meta().resource_version_number() > listed[0].meta().resource_version_number()
        );
    }

    #[tokio::test]
    async fn change_feed_delivers_every_write_after_the_snapshot_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store
            .create(env("before", "fission/node-env"))
            .await
            .expect("create");
        let (snapshot, rev, mut feed) = store.list_and_watch().await.expect("watch");
        assert_eq!(snapshot.len(), 1);
        store
            .create(env("after", "fission/node-env"))
            .await
            .expect("create");
        store
            .delete(ResourceKind::Environment, "default", "before")
            .await
            .expect("delete");
        let e1 = feed.next().await.expect("event").expect("ok");
        let e2 = feed.next().await.expect("event").expect("ok");
        assert_eq!(
            (e1.event_type, e1.object.meta().name.as_str()),
            (WatchEventType::Added, "after")
        );
        assert_eq!(
            (e2.event_type, e2.object.meta().name.as_str()),
            (WatchEventType::Deleted, "before")
        );
        assert!(rev < e1.revision && e1.revision < e2.revision);
    }

    #[tokio::test]
    async fn secret_values_are_not_stored_in_plain_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cipher = SecretCipher::load_or_create(&dir.path().join("key")).expect("key");
        let path = dir.path().join("db.redb");
        {
            let store = RedbStore::open_with_cipher(&path, Some(cipher)).expect("open");
            let mut s = fission_core::resources::Secret {
                metadata: fission_core::ObjectMeta::named("default", "db"),
                ..Default::default()
            };
            s.data
                .insert("password".into(), b"correct-horse-battery".to_vec());
            s.normalize();
            store.create(AnyResource::Secret(s)).await.expect("create");
        }
        let raw = std::fs::read(&path).expect("db bytes");
        let encoded = b"Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5"; // base64, as the JSON would hold it
        assert!(
            !raw.windows(21).any(|w| w == b"correct-horse-battery"),
            "plain text found in the database file"
        );
        assert!(
            !raw.windows(encoded.len()).any(|w| w == encoded),
            "base64 of the value found in the database file"
        );
        let cipher = SecretCipher::load_or_create(&dir.path().join("key")).expect("key");
        let store = RedbStore::open_with_cipher(&path, Some(cipher)).expect("reopen");
        let AnyResource::Secret(s) = store
            .get(ResourceKind::Secret, "default", "db")
            .await
            .expect("get")
        else {
            panic!("wrong kind")
        };
        assert_eq!(s.data["password"], b"correct-horse-battery");
    }

    #[tokio::test]
    async fn deleting_a_missing_object_is_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let err = store
            .delete(ResourceKind::Function, "default", "nope")
            .await
            .expect_err("missing");
        assert!(matches!(err, StoreError::NotFound { .. }));
        assert_eq!(err.to_string(), "Function 'default/nope' not found");
    }
}
