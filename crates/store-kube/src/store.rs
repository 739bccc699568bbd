use std::path::Path;
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
/// Update retries when the caller asked for an unconditional write and it raced another.
const UNCONDITIONAL_RETRIES: usize = 5;

/// [`ResourceStore`] on a Kubernetes API server.
///
/// Fission kinds are `fission.io/v1` custom resources (the CRDs in `deploy/crds/`); Secrets and
/// ConfigMaps are real `core/v1` objects. Kubernetes resourceVersions are etcd revisions — one
/// counter for the whole cluster, increasing with every write — so they serve as the store
/// revision directly. Optimistic concurrency is the API server's: a stale resourceVersion is
/// refused with 409, mapped to [`StoreError::Conflict`].
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
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

fn from_dynamic(kind: ResourceKind, mut obj: DynamicObject) -> Result<AnyResource, StoreError> {
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
        Self { client }
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
        let mut objects = Vec::new();
        let mut at: Option<String> = None;
        for kind in ResourceKind::ALL {
            let lp = match &at {
                None => ListParams::default(),
                Some(rv) => ListParams::default().at(rv).matching(VersionMatch::Exact),
            };
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
            match api.delete(name, &dp).await {
                Ok(_) => return from_dynamic(kind, last),
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
        let list = self
            .api(kind, namespace)
            .list(&ListParams::default())
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
        let (tx, rx) = mpsc::channel(1024);
        for kind in ResourceKind::ALL {
            tokio::spawn(watch_kind(
                self.api(kind, None),
                kind,
                revision.to_string(),
                tx.clone(),
            ));
        }
        Ok((objects, revision, Box::pin(ordered(rx, revision))))
    }
}

/// The feed promises strictly increasing revisions, but each kind is its own watch and two
/// watches can deliver out of etcd order. Every event is still delivered, in order per object;
/// an event that arrives after a later revision of another kind is numbered just past it.
fn ordered(
    rx: mpsc::Receiver<Result<WatchEvent, StoreError>>,
    start: u64,
) -> impl Stream<Item = Result<WatchEvent, StoreError>> + Send {
    futures::stream::unfold((rx, start, false), |(mut rx, last, done)| async move {
        if done {
            return None;
        }
        match rx.recv().await? {
            Ok(mut ev) => {
                ev.revision = ev.revision.max(last + 1);
                let r = ev.revision;
                Some((Ok(ev), (rx, r, false)))
            }
            // An error ends the feed; the consumer lists again.
            Err(e) => Some((Err(e), (rx, last, true))),
        }
    })
}

/// Watch one kind from `rv`, forever: resume from the last seen resourceVersion when the
/// connection ends or the API server restarts; on 410 Gone (that version was compacted away)
/// report `Lagged` so the consumer lists again. Stops when the feed is dropped.
async fn watch_kind(
    api: Api<DynamicObject>,
    kind: ResourceKind,
    mut rv: String,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
) {
    let mut backoff = MIN_BACKOFF;
    let gone = |tx: mpsc::Sender<Result<WatchEvent, StoreError>>, rv: String| async move {
        warn!(kind = %kind, resource_version = %rv, "watch position expired (410 Gone); consumers relist");
        let _ = tx.send(Err(StoreError::Lagged(0))).await;
    };
    loop {
        let wp = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
        let started = tokio::select! {
            () = tx.closed() => return,
            s = api.watch(&wp, &rv) => s,
        };
        let stream = match started {
            Ok(s) => s,
            Err(e) if status_of(&e).is_some_and(|(c, _)| c == 410) => return gone(tx, rv).await,
            Err(e) => {
                debug!(kind = %kind, error = %e, "watch could not start; retrying");
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let item = tokio::select! {
                () = tx.closed() => return,
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
                Some(Ok(KubeWatchEvent::Error(s))) if s.code == 410 => return gone(tx, rv).await,
                Some(Ok(KubeWatchEvent::Error(s))) => {
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
            match from_dynamic(kind, obj) {
                Ok(object) => {
                    if tx
                        .send(Ok(WatchEvent {
                            event_type,
                            object,
                            revision,
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "skipping unreadable object in the change feed"),
            }
        }
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
