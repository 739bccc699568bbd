use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fission_core::{
    AnyResource, ResourceKind, ResourceStore, StoreError, WatchEvent, WatchEventType, WatchStream,
};
use futures::{Stream, StreamExt as _};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions,
    VersionMatch, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::WatchEvent as KubeWatchEvent;
use kube::{Client, Config};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::crd;

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KubeStoreError {
    /// The kubeconfig file could not be read or parsed.
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig was given and none could be inferred (no in-cluster service account,
    /// no `KUBECONFIG`, no `~/.kube/config`).
    #[error("cannot find a Kubernetes configuration: {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("cannot create a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The API server could not be reached or refused a check.
    #[error("Kubernetes API server: {0}")]
    Api(#[source] kube::Error),
    /// A `fission.io` CRD is not installed, so the store cannot hold that kind.
    #[error(
        "CustomResourceDefinition {0} is not installed; apply deploy/crds/ first (kubectl apply -f deploy/crds/)"
    )]
    MissingCrd(String),
}

/// How long a watch request stays open before the server ends it and it is resumed.
const WATCH_TIMEOUT_SECS: u32 = 290;
/// Retry delays while the API server cannot be reached.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long delete waits for the deletion's watch event before returning the state it read.
const DELETE_WATCH_SECS: u32 = 10;
/// Update retries when the caller asked for an unconditional write and it raced another.
const UNCONDITIONAL_RETRIES: usize = 5;

/// [`ResourceStore`] on a Kubernetes API server.
///
/// Fission kinds are `fission.io/v1` custom resources (the CRDs in `deploy/crds/`); Secrets and
/// ConfigMaps are real `core/v1` objects. Kubernetes resourceVersions are etcd revisions — one
/// counter for the whole cluster, increasing with every write — so they serve as the store
/// revision directly. Optimistic concurrency is the API server's: a stale resourceVersion is
/// refused with 409, mapped to [`StoreError::Conflict`].
///
/// Cluster-wide reads (the snapshot, the feed, `list` of all namespaces) leave out the
/// cluster's own namespaces (`kube-system`, `kube-public`, `kube-node-lease`): their Secrets
/// and ConfigMaps are the cluster's, not Fission's.
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
    feed_capacity: usize,
}

/// Namespaces that belong to the cluster itself.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

fn not_system() -> String {
    SYSTEM_NAMESPACES
        .map(|ns| format!("metadata.namespace!={ns}"))
        .join(",")
}

fn api_resource(kind: ResourceKind) -> ApiResource {
    let (group, version) = if crd::is_custom_resource(kind) {
        (crd::GROUP, crd::VERSION)
    } else {
        ("", "v1")
    };
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: kind.api_version().to_owned(),
        kind: kind.kind_name().to_owned(),
        plural: kind.plural().to_owned(),
    }
}

fn status_of(e: &kube::Error) -> Option<(u16, &str)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.reason.as_str())),
        _ => None,
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn revision_of(obj: &DynamicObject) -> u64 {
    obj.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn to_dynamic(obj: &AnyResource) -> Result<DynamicObject, StoreError> {
    serde_json::from_value(obj.to_value())
        .map_err(|e| backend(format!("cannot encode {}: {e}", obj.kind())))
}

/// Annotation every update sets. The API server skips an update that changes no bytes (no new
/// resourceVersion, no event); the embedded store writes every update, and consumers count on
/// that. Readers never see it.
pub const WRITE_ANNOTATION: &str = "fission.io/last-write";

fn from_dynamic(kind: ResourceKind, mut obj: DynamicObject) -> Result<AnyResource, StoreError> {
    if let Some(a) = &mut obj.metadata.annotations {
        a.remove(WRITE_ANNOTATION);
        if a.is_empty() {
            obj.metadata.annotations = None;
        }
    }
    // Watch and list items may come without apiVersion/kind; the core types want them.
    let ar = api_resource(kind);
    obj.types = Some(kube::core::TypeMeta {
        api_version: ar.api_version,
        kind: ar.kind,
    });
    let name = format!(
        "{}/{}",
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.metadata.name.as_deref().unwrap_or_default()
    );
    let v = serde_json::to_value(obj).map_err(backend)?;
    AnyResource::from_value(kind, v)
        .map_err(|e| backend(format!("{kind} '{name}' cannot be read: {e}")))
}

impl KubeStore {
    /// A store using `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            feed_capacity: FEED_CAPACITY,
        }
    }

    /// Let a consumer fall `events` behind before its feed reports `Lagged` (default 4096).
    pub fn with_feed_capacity(mut self, events: usize) -> Self {
        self.feed_capacity = events.max(1);
        self
    }

    /// Connect with the kubeconfig at `kubeconfig`, or — when None — the in-cluster service
    /// account (inside a pod), `KUBECONFIG`, or `~/.kube/config`, in kube-rs' usual order.
    pub async fn connect(kubeconfig: Option<&Path>) -> Result<Self, KubeStoreError> {
        let config = match kubeconfig {
            Some(path) => {
                let kc =
                    Kubeconfig::read_from(path).map_err(|source| KubeStoreError::Kubeconfig {
                        path: path.display().to_string(),
                        source,
                    })?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|source| KubeStoreError::Kubeconfig {
                        path: path.display().to_string(),
                        source,
                    })?
            }
            None => Config::infer().await.map_err(KubeStoreError::Infer)?,
        };
        let client = Client::try_from(config).map_err(KubeStoreError::Client)?;
        Ok(Self::new(client))
    }

    /// The client, for callers that need the cluster for more than the store.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Check that the API server answers and every `fission.io` CRD is installed, so a server
    /// started on a cluster without them fails at once with a message saying what to apply.
    pub async fn check_ready(&self) -> Result<(), KubeStoreError> {
        let crds: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &ApiResource {
                group: "apiextensions.k8s.io".into(),
                version: "v1".into(),
                api_version: "apiextensions.k8s.io/v1".into(),
                kind: "CustomResourceDefinition".into(),
                plural: "customresourcedefinitions".into(),
            },
        );
        for kind in crd::CRD_KINDS {
            let name = format!("{}.{}", kind.plural(), crd::GROUP);
            match crds.get_opt(&name).await {
                Ok(Some(_)) => {}
                Ok(None) => return Err(KubeStoreError::MissingCrd(name)),
                Err(e) => return Err(KubeStoreError::Api(e)),
            }
        }
        Ok(())
    }

    fn api(&self, kind: ResourceKind, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = api_resource(kind);
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    async fn current_version(&self, kind: ResourceKind, ns: &str, name: &str) -> String {
        match self.api(kind, Some(ns)).get_opt(name).await {
            Ok(Some(o)) => o.metadata.resource_version.unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// Map an API error on `ns/name` of `kind` to the store's errors.
    async fn map_err(
        &self,
        e: kube::Error,
        kind: ResourceKind,
        ns: &str,
        name: &str,
        sent: &str,
    ) -> StoreError {
        let (namespace, name_s) = (ns.to_owned(), name.to_owned());
        match status_of(&e) {
            Some((404, _)) => StoreError::NotFound {
                kind,
                namespace,
                name: name_s,
            },
            Some((409, "AlreadyExists")) => StoreError::AlreadyExists {
                kind,
                namespace,
                name: name_s,
            },
            Some((409, _)) => StoreError::Conflict {
                kind,
                namespace,
                name: name_s,
                sent: sent.to_owned(),
                current: self.current_version(kind, ns, name).await,
            },
            _ => backend(format!("Kubernetes API: {kind} '{ns}/{name}': {e}")),
        }
    }

    /// One consistent snapshot of every kind: the first list is a quorum read at the newest
    /// revision R, every other kind is listed at exactly R.
    async fn snapshot(&self) -> Result<(Vec<AnyResource>, u64), StoreError> {
        // The API server creates a custom resource's watch cache on the first request for it,
        // starting at the then-current revision, and refuses watches from before that (410).
        // A cached read (resourceVersion=0) of every kind first makes sure each cache exists
        // and started before the snapshot's revision.
        for kind in ResourceKind::ALL {
            self.api(kind, None)
                .list(
                    &ListParams::default()
                        .match_any()
                        .limit(1)
                        .fields(&not_system()),
                )
                .await
                .map_err(|e| backend(format!("Kubernetes API: list {}: {e}", kind.plural())))?;
        }
        let mut objects = Vec::new();
        let mut at: Option<String> = None;
        for kind in ResourceKind::ALL {
            let lp = match &at {
                None => ListParams::default(),
                Some(rv) => ListParams::default().at(rv).matching(VersionMatch::Exact),
            }
            .fields(&not_system());
            let list = self
                .api(kind, None)
                .list(&lp)
                .await
                .map_err(|e| backend(format!("Kubernetes API: list {}: {e}", kind.plural())))?;
            if at.is_none() {
                at = list.metadata.resource_version.clone();
            }
            for item in list.items {
                match from_dynamic(kind, item) {
                    Ok(o) => objects.push(o),
                    // One object another tool wrote in a shape we cannot read must not stop
                    // the server; the CRD schema keeps this to what the types accept.
                    Err(e) => warn!(error = %e, "skipping unreadable object"),
                }
            }
        }
        let revision = at.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((objects, revision))
    }
}

#[async_trait::async_trait]
impl ResourceStore for KubeStore {
    async fn create(&self, mut obj: AnyResource) -> Result<AnyResource, StoreError> {
        let kind = obj.kind();
        let (ns, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
        // The API server assigns these; a resourceVersion on create is an error there.
        let m = obj.meta_mut();
        m.resource_version.clear();
        m.uid.clear();
        m.creation_timestamp = None;
        m.generation = 0;
        let d = to_dynamic(&obj)?;
        match self
            .api(kind, Some(&ns))
            .create(&PostParams::default(), &d)
            .await
        {
            Ok(created) => from_dynamic(kind, created),
            // 404 on create is the namespace, not the object.
            Err(e) if status_of(&e).is_some_and(|(c, _)| c == 404) => Err(backend(format!(
                "cannot create {kind} '{ns}/{name}': namespace '{ns}' does not exist"
            ))),
            Err(e) => Err(self.map_err(e, kind, &ns, &name, "").await),
        }
    }

    async fn update(&self, obj: AnyResource) -> Result<AnyResource, StoreError> {
        let kind = obj.kind();
        let (ns, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
        let sent = obj.meta().resource_version.clone();
        let api = self.api(kind, Some(&ns));
        let mut d = to_dynamic(&obj)?;
        // uid and creationTimestamp are the object's identity: whatever the caller sent is
        // replaced (a uid would be taken as a precondition by the API server).
        d.metadata.uid = None;
        d.metadata.creation_timestamp = None;
        let stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        d.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(WRITE_ANNOTATION.to_owned(), stamp);
        for _ in 0..UNCONDITIONAL_RETRIES {
            if sent.is_empty() {
                // No version sent means "whatever is there": take the current one, as the
                // embedded store does, and retry if another writer gets in between.
                match api.get(&name).await {
                    Ok(cur) => d.metadata.resource_version = cur.metadata.resource_version,
                    Err(e) => return Err(self.map_err(e, kind, &ns, &name, "").await),
                }
            }
            match api.replace(&name, &PostParams::default(), &d).await {
                Ok(updated) => return from_dynamic(kind, updated),
                Err(e) if sent.is_empty() && status_of(&e).is_some_and(|(c, _)| c == 409) => {
                    continue;
                }
                Err(e) => return Err(self.map_err(e, kind, &ns, &name, &sent).await),
            }
        }
        Err(backend(format!(
            "{kind} '{ns}/{name}' kept changing; {UNCONDITIONAL_RETRIES} updates lost the race"
        )))
    }

    async fn delete(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<AnyResource, StoreError> {
        let api = self.api(kind, Some(namespace));
        for _ in 0..UNCONDITIONAL_RETRIES {
            // Read first and delete that exact version, so what is returned is the last state.
            let last = api.get(name).await;
            let last = match last {
                Ok(o) => o,
                Err(e) => return Err(self.map_err(e, kind, namespace, name, "").await),
            };
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: last.metadata.resource_version.clone(),
                    uid: last.metadata.uid.clone(),
                }),
                ..DeleteParams::default()
            };
            // The API server answers a delete with a bare Status; the deletion's own
            // resourceVersion is only on the watch event. Watching this one object from the
            // version read makes delete return exactly what the feed publishes.
            let from = last.metadata.resource_version.clone().unwrap_or_default();
            let wp = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(DELETE_WATCH_SECS);
            let watch = api.watch(&wp, &from).await.ok();
            match api.delete(name, &dp).await {
                Ok(_) => {
                    let deleted = match watch {
                        Some(w) => deletion_event(w).await,
                        None => None,
                    };
                    return from_dynamic(kind, deleted.unwrap_or(last));
                }
                Err(e) if status_of(&e).is_some_and(|(c, _)| c == 409) => continue,
                Err(e) => return Err(self.map_err(e, kind, namespace, name, "").await),
            }
        }
        Err(backend(format!(
            "{kind} '{namespace}/{name}' kept changing while being deleted"
        )))
    }

    async fn get(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<AnyResource, StoreError> {
        match self.api(kind, Some(namespace)).get(name).await {
            Ok(o) => from_dynamic(kind, o),
            Err(e) => Err(self.map_err(e, kind, namespace, name, "").await),
        }
    }

    async fn list(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
    ) -> Result<Vec<AnyResource>, StoreError> {
        let lp = match namespace {
            Some(_) => ListParams::default(),
            None => ListParams::default().fields(&not_system()),
        };
        let list = self
            .api(kind, namespace)
            .list(&lp)
            .await
            .map_err(|e| backend(format!("Kubernetes API: list {}: {e}", kind.plural())))?;
        let mut out = Vec::with_capacity(list.items.len());
        for item in list.items {
            match from_dynamic(kind, item) {
                Ok(o) => out.push(o),
                Err(e) => warn!(error = %e, "skipping unreadable object"),
            }
        }
        out.sort_by(|a, b| {
            (&a.meta().namespace, &a.meta().name).cmp(&(&b.meta().namespace, &b.meta().name))
        });
        Ok(out)
    }

    async fn list_and_watch(&self) -> Result<(Vec<AnyResource>, u64, WatchStream), StoreError> {
        let (objects, revision) = self.snapshot().await?;
        let (tx, rx) = mpsc::channel(self.feed_capacity);
        let overflowed = Arc::new(AtomicBool::new(false));
        for kind in ResourceKind::ALL {
            let known = objects
                .iter()
                .filter(|o| o.kind() == kind)
                .map(|o| (key_of(o), o.clone()))
                .collect();
            let feed = Feed {
                tx: tx.clone(),
                overflowed: overflowed.clone(),
            };
            tokio::spawn(watch_kind(
                self.api(kind, None),
                kind,
                revision.to_string(),
                known,
                feed,
            ));
        }
        Ok((
            objects,
            revision,
            Box::pin(ordered(rx, overflowed, revision, self.feed_capacity as u64)),
        ))
    }
}

/// Events buffered for a consumer before it is told to relist (as the embedded store does).
const FEED_CAPACITY: usize = 4096;

type Key = (String, String);

fn key_of(o: &AnyResource) -> Key {
    (o.meta().namespace.clone(), o.meta().name.clone())
}

/// The sending side of one consumer's feed, shared by the per-kind watch tasks.
struct Feed {
    tx: mpsc::Sender<WatchEvent>,
    /// Set when the consumer fell the feed's capacity behind; it then gets `Lagged`.
    overflowed: Arc<AtomicBool>,
}

impl Feed {
    /// Queue one event; false when the feed is gone or full (the task should stop).
    fn send(&self, ev: WatchEvent) -> bool {
        match self.tx.try_send(ev) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::SeqCst);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The feed promises strictly increasing revisions, but each kind is its own watch and two
/// watches can deliver out of etcd order. Every event is still delivered, in order per object;
/// an event that arrives after a later revision of another kind is numbered just past it.
fn ordered(
    rx: mpsc::Receiver<WatchEvent>,
    overflowed: Arc<AtomicBool>,
    start: u64,
    capacity: u64,
) -> impl Stream<Item = Result<WatchEvent, StoreError>> + Send {
    futures::stream::unfold(Some((rx, start)), move |state| {
        let overflowed = overflowed.clone();
        async move {
            let (mut rx, last) = state?;
            if overflowed.load(Ordering::SeqCst) {
                // Dropping the receiver stops every watch task.
                return Some((Err(StoreError::Lagged(capacity)), None));
            }
            let mut ev = rx.recv().await?;
            ev.revision = ev.revision.max(last + 1);
            let r = ev.revision;
            Some((Ok(ev), Some((rx, r))))
        }
    })
}

/// Watch one kind from `rv`, forever, keeping `known` (what the consumer has been told) up to
/// date. When the connection ends it resumes from the last seen resourceVersion. When the API
/// server cannot resume from there (410 Gone: compacted, or its watch cache restarted with the
/// API server) it lists the kind again and sends the difference from `known` — every change
/// once, none replayed — then watches on from the list. Stops when the consumer is gone.
async fn watch_kind(
    api: Api<DynamicObject>,
    kind: ResourceKind,
    mut rv: String,
    mut known: HashMap<Key, AnyResource>,
    feed: Feed,
) {
    let mut backoff = MIN_BACKOFF;
    let mut relist = false;
    loop {
        if relist {
            let lp = ListParams::default().fields(&not_system());
            let listed = tokio::select! {
                () = feed.tx.closed() => return,
                l = api.list(&lp) => l,
            };
            match listed {
                Ok(list) => {
                    debug!(kind = %kind, from = %rv, "watch position expired (410 Gone); relisted");
                    let Some(at) = list.metadata.resource_version.clone() else {
                        return;
                    };
                    if !send_difference(kind, &mut known, list.items, &at, &feed) {
                        return;
                    }
                    rv = at;
                    relist = false;
                    backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    debug!(kind = %kind, error = %e, "relist failed; retrying");
                    if !pause(&feed, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let wp = WatchParams::default()
            .timeout(WATCH_TIMEOUT_SECS)
            .fields(&not_system());
        let started = tokio::select! {
            () = feed.tx.closed() => return,
            s = api.watch(&wp, &rv) => s,
        };
        let stream = match started {
            Ok(s) => s,
            Err(e) => {
                relist = status_of(&e).is_some_and(|(c, _)| c == 410);
                debug!(kind = %kind, error = %e, "watch could not start; retrying");
                if !relist && !pause(&feed, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let item = tokio::select! {
                () = feed.tx.closed() => return,
                i = stream.next() => i,
            };
            let (event_type, obj) = match item {
                None => break,
                Some(Ok(KubeWatchEvent::Added(o))) => (WatchEventType::Added, o),
                Some(Ok(KubeWatchEvent::Modified(o))) => (WatchEventType::Modified, o),
                Some(Ok(KubeWatchEvent::Deleted(o))) => (WatchEventType::Deleted, o),
                Some(Ok(KubeWatchEvent::Bookmark(b))) => {
                    rv = b.metadata.resource_version;
                    continue;
                }
                Some(Ok(KubeWatchEvent::Error(s))) => {
                    relist = s.code == 410;
                    debug!(kind = %kind, status = %s.message, "watch ended with an error; resuming");
                    break;
                }
                Some(Err(e)) => {
                    debug!(kind = %kind, error = %e, "watch connection failed; resuming");
                    break;
                }
            };
            backoff = MIN_BACKOFF;
            let revision = revision_of(&obj);
            if let Some(v) = obj.metadata.resource_version.clone() {
                rv = v;
            }
            let object = match from_dynamic(kind, obj) {
                Ok(o) => o,
                Err(e) => {
                    warn!(error = %e, "skipping unreadable object in the change feed");
                    continue;
                }
            };
            match event_type {
                WatchEventType::Deleted => known.remove(&key_of(&object)),
                _ => known.insert(key_of(&object), object.clone()),
            };
            if !feed.send(WatchEvent {
                event_type,
                object,
                revision,
            }) {
                return;
            }
        }
        if !relist && !pause(&feed, &mut backoff).await {
            return;
        }
    }
}

/// The object of the first `Deleted` event on `watch`, if one comes before it ends.
async fn deletion_event(
    watch: impl Stream<Item = kube::Result<KubeWatchEvent<DynamicObject>>>,
) -> Option<DynamicObject> {
    let mut watch = std::pin::pin!(watch);
    let wait = Duration::from_secs(u64::from(DELETE_WATCH_SECS));
    tokio::time::timeout(wait, async {
        while let Some(ev) = watch.next().await {
            match ev {
                Ok(KubeWatchEvent::Deleted(o)) => return Some(o),
                Ok(KubeWatchEvent::Error(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// Wait `backoff` (doubling it for next time); false when the consumer went away meanwhile.
async fn pause(feed: &Feed, backoff: &mut Duration) -> bool {
    let alive = tokio::select! {
        () = feed.tx.closed() => false,
        () = tokio::time::sleep(*backoff) => true,
    };
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    alive
}

/// Send what changed between `known` and a fresh list at `at`, and make `known` the list.
fn send_difference(
    kind: ResourceKind,
    known: &mut HashMap<Key, AnyResource>,
    items: Vec<DynamicObject>,
    at: &str,
    feed: &Feed,
) -> bool {
    let at_revision = at.parse().unwrap_or(0);
    let mut fresh = HashMap::with_capacity(items.len());
    for item in items {
        match from_dynamic(kind, item) {
            Ok(o) => {
                fresh.insert(key_of(&o), o);
            }
            Err(e) => warn!(error = %e, "skipping unreadable object"),
        }
    }
    let mut events = Vec::new();
    for (k, obj) in &fresh {
        match known.get(k) {
            None => events.push((WatchEventType::Added, obj.clone())),
            Some(old) if old.meta().resource_version != obj.meta().resource_version => {
                events.push((WatchEventType::Modified, obj.clone()));
            }
            Some(_) => {}
        }
    }
    for (k, old) in known.iter() {
        if !fresh.contains_key(k) {
            events.push((WatchEventType::Deleted, old.clone()));
        }
    }
    // In revision order; deletions (whose revision is unknown) at the list's.
    let revision = |t: WatchEventType, o: &AnyResource| match t {
        WatchEventType::Deleted => at_revision,
        _ => o.meta().resource_version_number(),
    };
    events.sort_by_key(|(t, o)| revision(*t, o));
    *known = fresh;
    events.into_iter().all(|(event_type, object)| {
        let revision = revision(event_type, &object);
        feed.send(WatchEvent {
            event_type,
            object,
            revision,
        })
    })
}
