//! Kubernetes watch triggers, as Fission's kubewatcher: one watch per KubernetesWatchTrigger
//! on the Pods, Services, ReplicationControllers or Jobs of `spec.namespace`; each event's
//! object is POSTed as JSON to the function with `X-Kubernetes-Event-Type` (`ADDED`,
//! `MODIFIED`, `DELETED`) and `X-Kubernetes-Object-Type` (`Pod`, …), through the publisher
//! retries of [`crate::delivery`].
//!
//! Unlike Fission, the label selector is applied. The first listing fires `ADDED` for every
//! object already there (as Fission's watch does). After a disconnect the watch resumes from
//! the last resourceVersion; when that is too old (`410 Gone`) it lists again and fires only
//! the differences from what it had seen (new objects, changed ones, vanished ones), so no
//! old event is replayed as new.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::path::PathBuf;

use bytes::Bytes;
use fission_core::resources::KubernetesWatchTriggerSpec;
use futures::StreamExt as _;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Service};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Call, Delivery, RetryPolicy, TriggerKey, TriggerKind};
use crate::registry::TriggerTasks;

/// Header with the watch event type.
pub const EVENT_TYPE_HEADER: &str = "X-Kubernetes-Event-Type";
/// Header with the object's kind.
pub const OBJECT_TYPE_HEADER: &str = "X-Kubernetes-Object-Type";

/// Where the cluster is: a kubeconfig file, else the pod's service account or `$KUBECONFIG`
/// (kube's inference).
#[derive(Debug, Clone, Default)]
pub struct KubeSource {
    /// Kubeconfig file to use.
    pub kubeconfig: Option<PathBuf>,
}

/// Why a watch trigger cannot run.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// No cluster configuration could be found or read.
    #[error(
        "no Kubernetes cluster to watch: {0} (run the server in a pod, or give it --kubeconfig / KUBECONFIG)"
    )]
    NoCluster(String),
    /// The object type is not one Fission watches.
    #[error(
        "watch type '{0}' is not supported (supported: pod, service, replicationcontroller, job)"
    )]
    UnsupportedType(String),
}

impl KubeSource {
    async fn client(&self) -> Result<kube::Client, WatchError> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| WatchError::NoCluster(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| WatchError::NoCluster(format!("{}: {e}", path.display())))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| WatchError::NoCluster(e.to_string()))?,
        };
        kube::Client::try_from(config).map_err(|e| WatchError::NoCluster(e.to_string()))
    }
}

/// Watches for the [`Registry`](crate::registry::Registry).
pub(crate) struct WatchTasks {
    pub(crate) delivery: Delivery,
    pub(crate) source: KubeSource,
}

impl TriggerTasks for WatchTasks {
    type Spec = KubernetesWatchTriggerSpec;
    const KIND: TriggerKind = TriggerKind::KubernetesWatchTrigger;

    fn start(
        &self,
        key: TriggerKey,
        spec: &KubernetesWatchTriggerSpec,
        stop: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        let w = Watch {
            delivery: self.delivery.clone(),
            key,
            spec: spec.clone(),
        };
        Some(tokio::spawn(run(w, self.source.clone(), stop)))
    }
}

/// One trigger's watch.
struct Watch {
    delivery: Delivery,
    key: TriggerKey,
    spec: KubernetesWatchTriggerSpec,
}

impl Watch {
    /// The watched namespace (Fission: `default` when empty).
    fn namespace(&self) -> &str {
        if self.spec.namespace.is_empty() {
            "default"
        } else {
            &self.spec.namespace
        }
    }

    /// `k=v,k2=v2`, or None when the trigger selects everything.
    fn label_selector(&self) -> Option<String> {
        let labels: &BTreeMap<String, String> = self.spec.labelselector.as_ref()?;
        (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    fn refuse(&self, e: &WatchError) {
        tracing::warn!(trigger = %self.key, error = %e, "watch trigger not served");
        self.delivery.status().set_error(&self.key, e.to_string());
    }

    async fn fire(
        &self,
        event: &str,
        kind: &str,
        object: &serde_json::Value,
        stop: &CancellationToken,
    ) {
        let body = match serde_json::to_vec(object) {
            Ok(b) => b,
            Err(e) => {
                // A value that came from JSON always serializes back.
                tracing::error!(trigger = %self.key, error = %e, "cannot serialize a watched object");
                return;
            }
        };
        let call = Call {
            method: reqwest::Method::POST,
            namespace: self.key.namespace.clone(),
            function: self.spec.functionref.name.clone(),
            subpath: String::new(),
            headers: vec![
                ("Content-Type".to_owned(), "application/json".to_owned()),
                (EVENT_TYPE_HEADER.to_owned(), event.to_owned()),
                (OBJECT_TYPE_HEADER.to_owned(), kind.to_owned()),
            ],
            body: Bytes::from(body),
        };
        self.delivery.fired(&self.key);
        // Failures are recorded (status, metrics, function log) by the delivery.
        let _ = self
            .delivery
            .deliver(&self.key, &call, RetryPolicy::PUBLISHER, stop)
            .await;
    }
}

async fn run(w: Watch, source: KubeSource, stop: CancellationToken) {
    let client = match source.client().await {
        Ok(c) => c,
        Err(e) => return w.refuse(&e),
    };
    let ty = w.spec.object_type.to_ascii_lowercase();
    match ty.as_str() {
        "pod" | "pods" => watch::<Pod>(&w, client, &stop).await,
        "service" | "services" => watch::<Service>(&w, client, &stop).await,
        "replicationcontroller" | "replicationcontrollers" => {
            watch::<ReplicationController>(&w, client, &stop).await
        }
        "job" | "jobs" => watch::<Job>(&w, client, &stop).await,
        _ => w.refuse(&WatchError::UnsupportedType(w.spec.object_type.clone())),
    }
}

/// What the watch has seen of one object: its resourceVersion and last state.
struct Seen {
    resource_version: String,
    object: serde_json::Value,
}

async fn watch<K>(w: &Watch, client: kube::Client, stop: &CancellationToken)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&()).into_owned();
    let api: Api<K> = Api::namespaced(client, w.namespace());
    let mut config = watcher::Config::default();
    if let Some(sel) = w.label_selector() {
        config = config.labels(&sel);
    }
    tracing::info!(trigger = %w.key, namespace = %w.namespace(), %kind, selector = ?w.label_selector(), "kubernetes watch starting");
    // The watcher resumes from the last resourceVersion after an error and relists only on
    // 410 Gone; the backoff spaces out its retries while the API server is away.
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut tracker = Tracker::default();
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            e = events.next() => e,
        };
        let Some(event) = event else { return };
        match event {
            Ok(e) => {
                for (event_type, object) in tracker.on(e) {
                    w.fire(event_type, &kind, &object, stop).await;
                }
            }
            Err(e) => {
                tracing::warn!(trigger = %w.key, error = %e, "kubernetes watch failed; retrying");
                w.delivery
                    .status()
                    .set_error(&w.key, format!("watch {kind}: {e}"));
            }
        }
    }
}

/// Turns the watcher's events (which do not tell an added object from a modified one, and
/// list everything again after a `410 Gone`) into Kubernetes watch event types, each change
/// once.
#[derive(Default)]
struct Tracker {
    /// By uid.
    known: HashMap<String, Seen>,
    /// Between a listing's Init and InitDone: the uids it listed.
    listing: Option<HashSet<String>>,
}

impl Tracker {
    /// The events to fire for one watcher event: (type, object).
    fn on<K: Resource + Serialize>(
        &mut self,
        event: watcher::Event<K>,
    ) -> Vec<(&'static str, serde_json::Value)> {
        let uid = |o: &K| o.uid().unwrap_or_else(|| o.name_any());
        match event {
            watcher::Event::Init => {
                self.listing = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                let id = uid(&o);
                if let Some(l) = self.listing.as_mut() {
                    l.insert(id.clone());
                }
                let rv = o.resource_version().unwrap_or_default();
                let event_type = match self.known.get(&id) {
                    None => "ADDED",
                    Some(s) if s.resource_version != rv => "MODIFIED",
                    // Already seen in this state (listed again): not an event.
                    Some(_) => return Vec::new(),
                };
                let Ok(object) = serde_json::to_value(&o) else {
                    return Vec::new();
                };
                self.known.insert(
                    id,
                    Seen {
                        resource_version: rv,
                        object: object.clone(),
                    },
                );
                vec![(event_type, object)]
            }
            watcher::Event::InitDone => {
                let Some(listed) = self.listing.take() else {
                    return Vec::new();
                };
                // Deleted while the watch could not see it.
                let gone: Vec<String> = self
                    .known
                    .keys()
                    .filter(|k| !listed.contains(*k))
                    .cloned()
                    .collect();
                gone.into_iter()
                    .filter_map(|id| self.known.remove(&id))
                    .map(|s| ("DELETED", s.object))
                    .collect()
            }
            watcher::Event::Delete(o) => {
                self.known.remove(&uid(&o));
                serde_json::to_value(&o)
                    .map(|object| vec![("DELETED", object)])
                    .unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn svc(name: &str, rv: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(rv.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn fired(t: &mut Tracker, e: watcher::Event<Service>) -> Vec<(String, String)> {
        t.on(e)
            .into_iter()
            .map(|(ty, o)| {
                let name = o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (ty.to_owned(), name)
            })
            .collect()
    }

    fn ev(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn the_first_listing_announces_every_object_as_added() {
        let mut t = Tracker::default();
        assert!(fired(&mut t, watcher::Event::Init).is_empty());
        assert_eq!(
            fired(&mut t, watcher::Event::InitApply(svc("a", "1"))),
            ev(&[("ADDED", "a")])
        );
        assert!(fired(&mut t, watcher::Event::InitDone).is_empty());
        assert_eq!(
            fired(&mut t, watcher::Event::Apply(svc("b", "2"))),
            ev(&[("ADDED", "b")])
        );
        assert_eq!(
            fired(&mut t, watcher::Event::Apply(svc("a", "3"))),
            ev(&[("MODIFIED", "a")])
        );
        assert_eq!(
            fired(&mut t, watcher::Event::Delete(svc("b", "4"))),
            ev(&[("DELETED", "b")])
        );
    }

    #[test]
    fn a_relist_after_410_fires_only_what_changed_meanwhile() {
        let mut t = Tracker::default();
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(svc("same", "1")),
            watcher::Event::InitApply(svc("changed", "1")),
            watcher::Event::InitApply(svc("removed", "1")),
            watcher::Event::InitDone,
        ] {
            fired(&mut t, e);
        }
        // The watch expired (410 Gone): the watcher lists again.
        let mut relist = Vec::new();
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(svc("same", "1")),
            watcher::Event::InitApply(svc("changed", "7")),
            watcher::Event::InitApply(svc("new", "8")),
            watcher::Event::InitDone,
        ] {
            relist.extend(fired(&mut t, e));
        }
        assert_eq!(
            relist,
            ev(&[
                ("MODIFIED", "changed"),
                ("ADDED", "new"),
                ("DELETED", "removed")
            ])
        );
    }
}
