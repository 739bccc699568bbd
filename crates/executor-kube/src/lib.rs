//! [`PodBackend`]: the executor's [`InstanceBackend`] on Kubernetes — Fission's poolmgr.
//!
//! Per environment version a pool Deployment `poolmgr-<env>-<ns>-<resourceVersion>` keeps
//! `poolsize` generic pods (the runtime container plus the fetcher sidecar, sharing
//! `/userfunc`, `/secrets` and `/configs`), labelled as Fission labels them. Starting an
//! instance *claims* a Ready pool pod: its `managed` label is flipped to `false` with a merge
//! patch that carries the pod's `resourceVersion`, which the API server treats as a
//! precondition — of two executors (or two cold calls) patching the same pod, exactly one
//! succeeds and the other gets 409 Conflict and tries the next pod. The candidates come from a
//! watch-fed view of the pool's unclaimed pods, so a claim makes no LIST. The claimed pod
//! leaves the Deployment's selector, so its ReplicaSet starts a replacement (the pool
//! refills). Loading a function is `POST <podIP>:8000/specialize` to the fetcher; calls then
//! go to `<podIP>:8888`. Stopping an instance deletes its pod. A stopping executor leaves its
//! pods for the next one to adopt.
//!
//! The pool Deployment is the warm pool: the executor keeps no claimed pods in reserve, so an
//! environment has `poolsize` generic pods plus the claimed ones. An environment update or
//! delete deletes the old version's pool Deployment (its generic pods go with it; claimed pods
//! left its selector and serve until reaped); at start, pool Deployments of environment
//! versions that no longer exist are deleted.
//!
//! Each executor holds a Lease (`lease.rs`); specialized pods claimed by an executor whose
//! Lease is missing or expired are adopted (`adopt.rs`) rather than specialized again.
//!
//! What to claim, when, how many instances a function may have and when one is idle are
//! decided by the executor's shared pool logic above this backend, exactly as for local
//! instances.
#![deny(missing_docs)]

mod adopt;
mod lease;
mod newdeploy;

pub use crate::newdeploy::{DeploymentsError, KubeDeployments, object_name as newdeploy_name};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fission_core::ExecutorError;
use fission_core::resources::Environment;
use fission_core::runtime::{BuiltinRuntime, builtin_runtime};
use fission_executor::{
    AdoptedInstance, CodeSlot, EnvironmentPlan, ExitReport, InstanceBackend, LoadError, LogSink,
    RuntimeInstance, Specialization,
};
use fission_fetcher::wire::{FETCH_DEPLOYMENT, FetchRequest, ValueRef};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use tokio::sync::watch;

pub use crate::adopt::ANNOTATION_ENV_RV;
use crate::adopt::Fate;
use crate::lease::{LEASE_DURATION, Leases, Owner, RENEW_EVERY};

/// Label (Fission's) on pool pods: `true` while the pool Deployment owns the pod.
pub const LABEL_MANAGED: &str = "managed";
/// Label naming the pool Deployment a pod came from (ours: Fission selects on env labels
/// only, which two versions of one environment share).
pub const LABEL_POOL: &str = "fission-rs.io/pool";
/// Annotation (Fission's) naming the executor that claimed a pod.
pub const ANNOTATION_EXECUTOR: &str = "executorInstanceId";
/// The runtime's port in the pod.
pub const RUNTIME_PORT: u16 = 8888;
/// The fetcher's port in the pod.
pub const FETCHER_PORT: u16 = 8000;
/// How often a claimed pod is checked for having gone away.
const POD_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a claim waits for a Ready pod before checking that the pool Deployment exists.
const POOL_RECHECK: Duration = Duration::from_secs(5);
/// Longest a claim waits for a pool view's first listing before listing pods itself.
const VIEW_READY_WAIT: Duration = Duration::from_secs(2);

/// Settings of the pod backend.
#[derive(Debug, Clone)]
pub struct PodConfig {
    /// Namespace of pool Deployments and function pods (Fission: `fission-function`).
    pub namespace: String,
    /// Image run for environments whose image is Fission's Node.js environment.
    pub nodejs_image: String,
    /// Image run for environments whose image is Fission's Python environment.
    pub python_image: String,
    /// The fetcher sidecar's image (runs `fission fetcher`).
    pub fetcher_image: String,
    /// `imagePullPolicy` of both containers (`Never` for images imported into the node).
    pub image_pull_policy: String,
    /// The controller's URL as pods reach it (the fetcher reads packages from it).
    pub controller_url: String,
    /// This executor's id (annotation `executorInstanceId` on the pods it claims).
    pub executor_id: String,
    /// How long a cold start waits for a Ready pool pod (Fission: `POD_READY_TIMEOUT`).
    pub pod_ready_timeout: Duration,
    /// The controller's API token, handed to fetchers through the Secret [`TOKEN_SECRET`].
    pub controller_token: Option<String>,
}

/// The Secret (in the pods' namespace) holding the controller's API token for fetchers.
pub const TOKEN_SECRET: &str = "fission-rs-fetcher-token";

/// Why the backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PodBackendError {
    /// The HTTP client for the fetcher could not be built.
    #[error("cannot build the fetcher client: {0}")]
    Client(String),
    /// The fetchers' token Secret could not be written.
    #[error("cannot write Secret {TOKEN_SECRET} in namespace '{namespace}': {source}")]
    TokenSecret {
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// This executor's Lease could not be created.
    #[error("cannot create this executor's Lease in namespace '{namespace}': {source}")]
    Lease {
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// How one environment version's pods run.
#[derive(Debug, Clone)]
pub struct PodPlan {
    env: Arc<Environment>,
    pool: String,
    image: String,
}

impl PodPlan {
    /// The pool Deployment's name.
    pub fn pool_name(&self) -> &str {
        &self.pool
    }
}

/// The Kubernetes [`InstanceBackend`]. See the crate docs.
pub struct PodBackend {
    pods: Api<Pod>,
    deployments: Api<Deployment>,
    config: PodConfig,
    http: reqwest::Client,
    /// Pool Deployments known to exist (created at most once per process).
    ensured: tokio::sync::Mutex<HashSet<String>>,
    /// Pool Deployments deleted (their environment version was replaced): never re-created.
    retired: Mutex<HashSet<String>>,
    /// Pod name of every claimed instance, by instance id.
    names: Arc<Mutex<HashMap<u64, String>>>,
    leases: Arc<Leases>,
    renewing: tokio::task::JoinHandle<()>,
    /// The first adoption pass has run (it waits for undecided owners; later ones do not).
    adopted_once: AtomicBool,
    /// Per pool Deployment, a watch-fed view of its unclaimed pods: a claim is then one
    /// conditional PATCH, with no LIST on the call's path.
    unclaimed: Mutex<HashMap<String, PoolView>>,
}

/// The unclaimed pods of one pool, kept current by a watch on its label selector.
struct PoolView {
    store: kube::runtime::reflector::Store<Pod>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PoolView {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for PodBackend {
    fn drop(&mut self) {
        self.renewing.abort();
    }
}

impl PodBackend {
    /// A backend using `client`, holding (and renewing) this executor's Lease.
    pub async fn new(client: kube::Client, config: PodConfig) -> Result<Self, PodBackendError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| PodBackendError::Client(e.to_string()))?;
        if let Some(token) = &config.controller_token {
            write_token_secret(&client, &config.namespace, token)
                .await
                .map_err(|source| PodBackendError::TokenSecret {
                    namespace: config.namespace.clone(),
                    source,
                })?;
        }
        let leases = Arc::new(Leases::new(
            Api::namespaced(client.clone(), &config.namespace),
            config.executor_id.clone(),
        ));
        leases
            .hold()
            .await
            .map_err(|source| PodBackendError::Lease {
                namespace: config.namespace.clone(),
                source,
            })?;
        let renewing = tokio::spawn({
            let leases = leases.clone();
            async move { leases.renew_forever().await }
        });
        Ok(Self {
            pods: Api::namespaced(client.clone(), &config.namespace),
            deployments: Api::namespaced(client, &config.namespace),
            config,
            http,
            ensured: tokio::sync::Mutex::new(HashSet::new()),
            retired: Mutex::new(HashSet::new()),
            names: Arc::new(Mutex::new(HashMap::new())),
            leases,
            renewing,
            adopted_once: AtomicBool::new(false),
            unclaimed: Mutex::new(HashMap::new()),
        })
    }

    /// Make `pod` (claimed by this executor, Ready) an instance.
    fn instance_of(&self, pod: &Pod, instance_id: u64) -> Result<Arc<PodInstance>, ExecutorError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
            .ok_or_else(|| ExecutorError::Internal(format!("pod {name} has no IP address")))?;
        let (exit, _) = watch::channel(None);
        let instance = Arc::new(PodInstance {
            id: instance_id,
            name: name.clone(),
            addr: SocketAddr::new(ip, RUNTIME_PORT),
            pods: self.pods.clone(),
            exit,
            killed: AtomicBool::new(false),
            owner: self.config.executor_id.clone(),
            handed_over: AtomicBool::new(false),
            restarts_at_claim: restarts(pod),
        });
        tokio::spawn(instance.clone().monitor());
        self.lock_names().insert(instance_id, name);
        // The name is no longer needed once the instance has gone.
        let mut rx = instance.exit.subscribe();
        let names = self.names.clone();
        tokio::spawn(async move {
            let _ = rx.wait_for(|e| e.is_some()).await;
            names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&instance_id);
        });
        Ok(instance)
    }

    /// One adoption pass (see `adopt.rs`). With `wait`, owners not yet known to be alive or
    /// gone are looked at again until they are (at most a Lease's duration and a bit).
    async fn adopt_pods(
        &self,
        next_id: &(dyn Fn() -> u64 + Send + Sync),
        wait: bool,
    ) -> Result<Vec<AdoptedInstance>, kube::Error> {
        let me = &self.config.executor_id;
        let give_up = tokio::time::Instant::now() + LEASE_DURATION + 2 * RENEW_EVERY;
        let (claimed, owners) = loop {
            let claimed = self
                .pods
                .list(&ListParams::default().labels(&format!("{LABEL_MANAGED}=false,{LABEL_POOL}")))
                .await?
                .items;
            let owners = self.leases.owners().await?;
            let undecided = claimed
                .iter()
                .filter_map(|p| match adopt::fate(p, me, &owners) {
                    Fate::Undecided(at) => Some(at),
                    _ => None,
                })
                .min();
            match undecided {
                Some(at) if wait && tokio::time::Instant::now() < give_up => {
                    let at = at
                        .min(give_up)
                        .max(tokio::time::Instant::now() + RENEW_EVERY / 3);
                    tracing::info!(
                        "waiting for the owners of claimed pods to renew their leases or expire"
                    );
                    tokio::time::sleep_until(at).await;
                }
                _ => break (claimed, owners),
            }
        };
        let mut adopted = Vec::new();
        for pod in &claimed {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let precondition = pod.metadata.resource_version.clone();
            match adopt::fate(pod, me, &owners) {
                Fate::Leave | Fate::Undecided(_) => {}
                Fate::Delete(why) => {
                    tracing::info!(pod = %name, why, "deleting a pod of a gone executor");
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            resource_version: precondition,
                            uid: None,
                        }),
                        ..DeleteParams::default()
                    };
                    if let Err(e) = self.pods.delete(&name, &dp).await
                        && !matches!(api_code(&e), Some(404 | 409))
                    {
                        tracing::warn!(pod = %name, error = %e, "cannot delete pod");
                    }
                }
                Fate::Adopt {
                    function,
                    environment,
                } => {
                    let id = next_id();
                    let patch = json!({"metadata": {
                        "resourceVersion": precondition,
                        "annotations": {
                            ANNOTATION_EXECUTOR: me,
                            "fission-rs.io/instance": id.to_string(),
                        },
                    }});
                    let taken = match self
                        .pods
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(p) => p,
                        // Another executor adopted it, or it changed: the next pass decides.
                        Err(e) if matches!(api_code(&e), Some(409 | 404)) => continue,
                        Err(e) => {
                            tracing::warn!(pod = %name, error = %e, "cannot adopt pod");
                            continue;
                        }
                    };
                    match self.instance_of(&taken, id) {
                        Ok(instance) => {
                            tracing::info!(pod = %name, function = %function.name, instance = id, "pod adopted");
                            adopted.push(AdoptedInstance {
                                instance,
                                function,
                                environment,
                            });
                        }
                        Err(e) => tracing::warn!(pod = %name, error = %e, "cannot adopt pod"),
                    }
                }
            }
        }
        for (owner, view) in owners.values() {
            if let (Owner::Gone, Some(view)) = (owner, view) {
                self.leases.forget(view).await;
            }
        }
        Ok(adopted)
    }

    /// Delete pool Deployment `name` (its generic pods go with it).
    async fn delete_pool(&self, name: &str) {
        self.ensured.lock().await.remove(name);
        let dp = DeleteParams {
            propagation_policy: Some(kube::api::PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match self.deployments.delete(name, &dp).await {
            Ok(_) => tracing::info!(pool = %name, "pool deployment deleted"),
            Err(e) if api_code(&e) == Some(404) => {}
            Err(e) => tracing::warn!(pool = %name, error = %e, "cannot delete pool deployment"),
        }
    }

    fn lock_names(&self) -> std::sync::MutexGuard<'_, HashMap<u64, String>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn ensure_pool(&self, plan: &PodPlan) -> Result<(), ExecutorError> {
        let mut ensured = self.ensured.lock().await;
        if ensured.contains(&plan.pool) {
            return Ok(());
        }
        if self
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&plan.pool)
        {
            return Err(ExecutorError::Internal(format!(
                "pool {} belongs to a replaced environment version",
                plan.pool
            )));
        }
        let deployment = pool_deployment(plan, &self.config).map_err(|e| {
            ExecutorError::Internal(format!("cannot describe pool {}: {e}", plan.pool))
        })?;
        match self
            .deployments
            .create(&PostParams::default(), &deployment)
            .await
        {
            Ok(_) => tracing::info!(pool = %plan.pool, "pool deployment created"),
            Err(e) if api_code(&e) == Some(409) => {
                // Left by an earlier run, which may have been configured differently (images,
                // the controller's URL): its generic pods must be what this executor would
                // start. An unchanged template rolls nothing.
                let desired = serde_json::to_value(&deployment).map_err(|e| {
                    ExecutorError::Internal(format!("cannot describe pool {}: {e}", plan.pool))
                })?;
                let patch = json!({"spec": {
                    "replicas": desired["spec"]["replicas"],
                    "template": desired["spec"]["template"],
                }});
                if let Err(e) = self
                    .deployments
                    .patch(&plan.pool, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    return Err(ExecutorError::Internal(format!(
                        "cannot update pool deployment {}: {e}",
                        plan.pool
                    )));
                }
            }
            Err(e) => {
                return Err(ExecutorError::Internal(format!(
                    "cannot create pool deployment {}: {e}",
                    plan.pool
                )));
            }
        }
        ensured.insert(plan.pool.clone());
        Ok(())
    }

    /// The watch-fed view of `pool`'s unclaimed pods, started on first use.
    fn pool_view(&self, pool: &str) -> kube::runtime::reflector::Store<Pod> {
        use futures::StreamExt as _;
        use kube::runtime::{WatchStreamExt as _, reflector, watcher};
        let mut views = self.unclaimed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = views.get(pool) {
            return v.store.clone();
        }
        let (store, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(
                self.pods.clone(),
                watcher::Config::default().labels(&unclaimed_selector(pool)),
            ),
        )
        .default_backoff();
        let name = pool.to_owned();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(error) = event {
                    tracing::debug!(pool = %name, %error, "pool pod watch failed; retrying");
                }
            }
        });
        views.insert(
            pool.to_owned(),
            PoolView {
                store: store.clone(),
                task,
            },
        );
        store
    }

    /// The Ready pods of a pool view, oldest first; None until the watch has listed.
    async fn cached_unclaimed(view: &kube::runtime::reflector::Store<Pod>) -> Option<Vec<Pod>> {
        // The first claim of a pool waits briefly for the watch's first listing.
        tokio::time::timeout(VIEW_READY_WAIT, view.wait_until_ready())
            .await
            .ok()?
            .ok()?;
        Some(
            view.state()
                .into_iter()
                .filter(|p| is_ready(p))
                .map(|p| (*p).clone())
                .collect(),
        )
    }

    /// Claim one Ready pod of the pool: see the crate docs for why this is race-free.
    async fn claim(&self, plan: &PodPlan, instance_id: u64) -> Result<Pod, ExecutorError> {
        let deadline = tokio::time::Instant::now() + self.config.pod_ready_timeout;
        let selector = unclaimed_selector(&plan.pool);
        let mut pause = Duration::from_millis(50);
        let mut recheck_pool = tokio::time::Instant::now() + POOL_RECHECK;
        let view = self.pool_view(&plan.pool);
        loop {
            let mut ready: Vec<Pod> = match Self::cached_unclaimed(&view).await {
                Some(pods) => pods,
                // The watch has not listed yet: ask the API server.
                None => self
                    .pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| ExecutorError::Internal(format!("cannot list pool pods: {e}")))?
                    .items
                    .into_iter()
                    .filter(is_ready)
                    .collect(),
            };
            // Oldest first, as Fission's work queue hands them out.
            ready.sort_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
            });
            for pod in ready {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let patch = json!({
                    "metadata": {
                        "resourceVersion": pod.metadata.resource_version,
                        "labels": { LABEL_MANAGED: "false" },
                        "annotations": {
                            ANNOTATION_EXECUTOR: self.config.executor_id,
                            "fission-rs.io/instance": instance_id.to_string(),
                        },
                    }
                });
                match self
                    .pods
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(claimed) => return Ok(claimed),
                    // Someone else claimed (or changed) it first: try the next.
                    Err(e) if matches!(api_code(&e), Some(409 | 404)) => continue,
                    Err(e) => {
                        return Err(ExecutorError::Internal(format!(
                            "cannot claim pool pod {name}: {e}"
                        )));
                    }
                }
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(ExecutorError::Internal(format!(
                    "no pod of pool {} became ready within {:?}",
                    plan.pool, self.config.pod_ready_timeout
                )));
            }
            if tokio::time::Instant::now() >= recheck_pool {
                // Another executor may have deleted the pool (it saw an older listing of the
                // environments at its start): create it again if so.
                self.ensured.lock().await.remove(&plan.pool);
                self.ensure_pool(plan).await?;
                recheck_pool = tokio::time::Instant::now() + POOL_RECHECK;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// Create or update the Secret fetchers read the controller's token from.
async fn write_token_secret(
    client: &kube::Client,
    namespace: &str,
    token: &str,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": TOKEN_SECRET, "namespace": namespace},
        "stringData": {"token": token},
    }))
    .map_err(kube::Error::SerdeError)?;
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(409) => secrets
            .patch(
                TOKEN_SECRET,
                &PatchParams::default(),
                &Patch::Merge(&json!({"stringData": {"token": token}})),
            )
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

/// The HTTP status of an API error.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The label selector of a pool's unclaimed pods (a claim relabels `managed=false`).
fn unclaimed_selector(pool: &str) -> String {
    format!("{LABEL_POOL}={pool},{LABEL_MANAGED}=true")
}

pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|s| {
            s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
                && s.conditions
                    .as_ref()
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
}

/// `poolmgr-<env>-<ns>-<resourceVersion>`, cut to a valid object name.
pub fn pool_name(env: &Environment) -> String {
    let m = &env.metadata;
    let name = format!(
        "poolmgr-{}-{}-{}",
        m.name,
        m.namespace,
        if m.resource_version.is_empty() {
            "0"
        } else {
            &m.resource_version
        }
    )
    .to_ascii_lowercase();
    // Labels carry it too: at most 63 characters, ending alphanumeric.
    let mut cut: String = name.chars().take(63).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    cut
}

fn env_labels(env: &Environment) -> BTreeMap<String, String> {
    let m = &env.metadata;
    BTreeMap::from([
        ("environmentName".to_owned(), m.name.clone()),
        ("environmentNamespace".to_owned(), m.namespace.clone()),
        ("environmentUid".to_owned(), m.uid.clone()),
        ("executorType".to_owned(), "poolmgr".to_owned()),
    ])
}

fn fetcher_env(config: &PodConfig) -> serde_json::Value {
    let mut env = vec![json!({"name": "FISSION_CONTROLLER_URL", "value": config.controller_url})];
    if config.controller_token.is_some() {
        env.push(
            json!({"name": "FISSION_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": TOKEN_SECRET, "key": "token"}}}),
        );
    }
    serde_json::Value::Array(env)
}

/// Where the runtime and the fetcher of a function pod see [`function_pod_volumes`].
pub(crate) fn function_pod_mounts() -> serde_json::Value {
    json!([
        {"name": "userfunc", "mountPath": "/userfunc"},
        {"name": "secrets", "mountPath": "/secrets"},
        {"name": "configmaps", "mountPath": "/configs"},
        {"name": "podinfo", "mountPath": "/etc/podinfo"},
    ])
}

/// The environment variables the Environment gives its runtime container (`--runtime-env`).
pub(crate) fn runtime_container_env(env: &Environment) -> serde_json::Value {
    env.spec
        .runtime
        .container
        .as_ref()
        .and_then(|c| c.get("env"))
        .cloned()
        .unwrap_or_else(|| json!([]))
}

/// The volumes of a function pod (pool and newdeploy alike): the code, secrets and config maps
/// the fetcher writes for the runtime, and the pod's own name for the fetcher.
pub(crate) fn function_pod_volumes() -> serde_json::Value {
    json!([
        {"name": "userfunc", "emptyDir": {}},
        {"name": "secrets", "emptyDir": {}},
        {"name": "configmaps", "emptyDir": {}},
        {"name": "podinfo", "downwardAPI": {"items": [
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
        ]}},
    ])
}

fn pool_deployment(plan: &PodPlan, config: &PodConfig) -> Result<Deployment, serde_json::Error> {
    let env = &plan.env;
    let mut labels = env_labels(env);
    labels.insert(LABEL_POOL.to_owned(), plan.pool.clone());
    let mut pod_labels = labels.clone();
    pod_labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
    let runtime_name = if env.metadata.name == "fetcher" {
        "runtime".to_owned()
    } else {
        env.metadata.name.clone()
    };
    let container_env = runtime_container_env(env);
    let mounts = function_pod_mounts();
    let grace = match env.spec.termination_grace_period {
        g if g > 0 => g,
        _ => fission_core::resources::DEFAULT_GRACE_PERIOD,
    };
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": plan.pool,
            "namespace": config.namespace,
            "labels": labels,
            "annotations": { ANNOTATION_EXECUTOR: config.executor_id },
        },
        "spec": {
            "replicas": env.spec.effective_poolsize(),
            "selector": { "matchLabels": { LABEL_POOL: plan.pool, LABEL_MANAGED: "true" } },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    // What adoption checks a specialized pod's environment version against.
                    "annotations": { ANNOTATION_ENV_RV: env.metadata.resource_version },
                },
                "spec": {
                    // The runtimes and the fetcher exit on SIGTERM, so a large grace period
                    // costs nothing unless a call is still running.
                    "terminationGracePeriodSeconds": grace,
                    "automountServiceAccountToken": false,
                    "containers": [
                        {
                            "name": runtime_name,
                            "image": plan.image,
                            "imagePullPolicy": config.image_pull_policy,
                            "ports": [{"name": "http-env", "containerPort": RUNTIME_PORT}],
                            "env": container_env,
                            "resources": serde_json::to_value(&env.spec.resources)?,
                            "volumeMounts": mounts,
                        },
                        {
                            "name": "fetcher",
                            "image": config.fetcher_image,
                            "imagePullPolicy": config.image_pull_policy,
                            "args": ["--secret-dir", "/secrets", "--cfgmap-dir", "/configs", "/userfunc"],
                            "env": fetcher_env(config),
                            "ports": [{"name": "http-fetcher", "containerPort": FETCHER_PORT}],
                            "readinessProbe": {
                                "httpGet": {"path": "/readiness-healthz", "port": FETCHER_PORT},
                                "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 30,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": FETCHER_PORT},
                                "periodSeconds": 5,
                            },
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                            "volumeMounts": mounts,
                        },
                    ],
                    "volumes": function_pod_volumes(),
                },
            },
        },
    }))
}

/// A claimed pod.
struct PodInstance {
    id: u64,
    name: String,
    addr: SocketAddr,
    pods: Api<Pod>,
    exit: watch::Sender<Option<ExitReport>>,
    killed: AtomicBool,
    /// This executor's id: a pod whose `executorInstanceId` names another was adopted by it.
    owner: String,
    /// Adopted by another executor (this one stalled past its Lease): never delete it.
    handed_over: AtomicBool,
    /// Container restarts when claimed (a restart before the claim lost nothing).
    restarts_at_claim: i32,
}

impl PodInstance {
    fn exited(&self, status: String) {
        let killed = self.killed.load(Ordering::SeqCst);
        self.exit.send_if_modified(|e| {
            if e.is_some() {
                return false;
            }
            *e = Some(ExitReport { status, killed });
            true
        });
    }

    /// Report the pod's end: deleted, being deleted, finished, or its runtime restarted (the
    /// loaded function is gone with the old container).
    async fn monitor(self: Arc<Self>) {
        let mut rx = self.exit.subscribe();
        loop {
            tokio::select! {
                _ = rx.changed() => return,
                _ = tokio::time::sleep(POD_CHECK_INTERVAL) => {}
            }
            // (why it ended, whether to delete it)
            let gone = match self.pods.get_opt(&self.name).await {
                Ok(None) => Some(("pod deleted".to_owned(), false)),
                Ok(Some(pod)) if owner_of(&pod) != Some(self.owner.as_str()) => {
                    self.handed_over.store(true, Ordering::SeqCst);
                    tracing::warn!(pod = %self.name, "pod adopted by another executor (this one missed renewing its lease)");
                    Some(("adopted by another executor".to_owned(), false))
                }
                // Restarted or finished, it no longer serves its function, and no one else
                // would delete it.
                Ok(Some(pod)) => pod_end(&pod, self.restarts_at_claim)
                    .map(|end| (end, pod.metadata.deletion_timestamp.is_none())),
                Err(error) => {
                    tracing::debug!(pod = %self.name, %error, "cannot check pod");
                    None
                }
            };
            if let Some((status, delete)) = gone {
                self.exited(status);
                if delete {
                    self.kill();
                }
                return;
            }
        }
    }
}

fn owner_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_EXECUTOR))
        .map(String::as_str)
}

/// Container restarts of `pod` so far.
pub(crate) fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

/// Why `pod` no longer serves what was loaded into it, if it does not: deleted, finished, or
/// a container restarted since it was claimed (it had `restarts_at_claim` then).
pub(crate) fn pod_end(pod: &Pod, restarts_at_claim: i32) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Some("pod is being deleted".to_owned());
    }
    let status = pod.status.as_ref()?;
    if let Some(phase @ ("Failed" | "Succeeded")) = status.phase.as_deref() {
        return Some(format!("pod {phase}"));
    }
    (restarts(pod) > restarts_at_claim).then(|| "a container of the pod restarted".to_owned())
}

#[async_trait::async_trait]
impl RuntimeInstance for PodInstance {
    fn id(&self) -> u64 {
        self.id
    }
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn pid(&self) -> Option<u32> {
        None
    }
    fn exit_watch(&self) -> watch::Receiver<Option<ExitReport>> {
        self.exit.subscribe()
    }
    fn kill(&self) {
        if self.handed_over.load(Ordering::SeqCst) || self.killed.swap(true, Ordering::SeqCst) {
            return;
        }
        let (pods, name, exit) = (self.pods.clone(), self.name.clone(), self.exit.clone());
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let status = match pods.delete(&name, &DeleteParams::default()).await {
                Ok(_) => "pod deleted".to_owned(),
                Err(e) if api_code(&e) == Some(404) => "pod deleted".to_owned(),
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "cannot delete pod");
                    format!("pod delete failed: {e}")
                }
            };
            exit.send_if_modified(|e| {
                if e.is_some() {
                    return false;
                }
                *e = Some(ExitReport {
                    status,
                    killed: true,
                });
                true
            });
        });
    }
    async fn install_code(&self, _host_path: &Path, _slot: CodeSlot) -> io::Result<PathBuf> {
        Err(io::Error::other(
            "a pod receives its code through its fetcher, not from the executor's disk",
        ))
    }
}

#[async_trait::async_trait]
impl InstanceBackend for PodBackend {
    type Launch = PodPlan;

    fn plan(&self, env: &Environment) -> Result<EnvironmentPlan<PodPlan>, ExecutorError> {
        let image = &env.spec.runtime.image;
        let (runtime, image) = match builtin_runtime(image) {
            Some(BuiltinRuntime::NodeJs) => ("nodejs", self.config.nodejs_image.clone()),
            Some(BuiltinRuntime::Python) => ("python", self.config.python_image.clone()),
            // Any other image is run as it is: it must serve Fission's runtime contract.
            None if !image.is_empty() => ("image", image.clone()),
            None => {
                return Err(ExecutorError::Unsupported(
                    "the environment has no runtime image".into(),
                ));
            }
        };
        Ok(EnvironmentPlan {
            runtime,
            launch: PodPlan {
                env: Arc::new(env.clone()),
                pool: pool_name(env),
                image,
            },
        })
    }

    fn keeps_generic_instances(&self) -> bool {
        true
    }

    fn instances_outlive_executor(&self) -> bool {
        true
    }

    async fn prepare(&self, plan: &EnvironmentPlan<PodPlan>) {
        // Watching from now on, the first claim finds the view listed.
        self.pool_view(&plan.launch.pool);
        if let Err(error) = self.ensure_pool(&plan.launch).await {
            tracing::warn!(pool = %plan.launch.pool, %error, "cannot create pool deployment");
        }
    }

    async fn retire(&self, plan: &EnvironmentPlan<PodPlan>) {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plan.launch.pool.clone());
        self.unclaimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&plan.launch.pool);
        self.delete_pool(&plan.launch.pool).await;
    }

    async fn forget_other_environments(&self, current: &[Environment]) {
        let keep: HashSet<String> = current.iter().map(pool_name).collect();
        let pools = match self
            .deployments
            .list(&ListParams::default().labels(&format!("executorType=poolmgr,{LABEL_POOL}")))
            .await
        {
            Ok(list) => list.items,
            Err(error) => {
                tracing::warn!(%error, "cannot list pool deployments");
                return;
            }
        };
        for d in pools {
            let name = d.metadata.name.unwrap_or_default();
            if !keep.contains(&name) {
                tracing::info!(pool = %name, "deleting the pool of an environment version that no longer exists");
                self.delete_pool(&name).await;
            }
        }
    }

    async fn stopped(&self) {
        self.renewing.abort();
        self.leases.release().await;
    }

    async fn adopt(&self, next_id: &(dyn Fn() -> u64 + Send + Sync)) -> Vec<AdoptedInstance> {
        let first = !self.adopted_once.swap(true, Ordering::SeqCst);
        match self.adopt_pods(next_id, first).await {
            Ok(adopted) => adopted,
            Err(error) => {
                tracing::warn!(%error, "cannot look for pods to adopt");
                Vec::new()
            }
        }
    }

    async fn start(
        &self,
        plan: &EnvironmentPlan<PodPlan>,
        instance_id: u64,
        _log: LogSink,
    ) -> Result<Arc<dyn RuntimeInstance>, ExecutorError> {
        self.ensure_pool(&plan.launch).await?;
        let pod = self.claim(&plan.launch, instance_id).await?;
        let instance = match self.instance_of(&pod, instance_id) {
            Ok(i) => i,
            Err(e) => {
                // Claimed but unusable: nothing would ever route to it.
                let name = pod.metadata.name.clone().unwrap_or_default();
                let _ = self.pods.delete(&name, &DeleteParams::default()).await;
                return Err(e);
            }
        };
        tracing::debug!(pod = %instance.name, instance = instance_id, "pool pod claimed");
        Ok(instance)
    }

    async fn specialize(
        &self,
        instance: &dyn RuntimeInstance,
        _log: &LogSink,
        target: Specialization<'_>,
    ) -> Result<(), LoadError> {
        let function = target.function;
        let env_version = target.env_version();
        let filename = if env_version >= 2 {
            "deployarchive"
        } else {
            "user"
        };
        let ns = &function.metadata.namespace;
        let pkg_ref = &function.spec.package.packageref;
        let refs = |list: &[fission_core::ObjectReference]| -> Vec<ValueRef> {
            list.iter()
                .map(|r| ValueRef {
                    namespace: if r.namespace.is_empty() {
                        ns.clone()
                    } else {
                        r.namespace.clone()
                    },
                    name: r.name.clone(),
                })
                .collect()
        };
        let fetch = FetchRequest {
            fetch_type: FETCH_DEPLOYMENT,
            package: fission_core::ObjectMeta {
                name: pkg_ref.name.clone(),
                namespace: if pkg_ref.namespace.is_empty() {
                    ns.clone()
                } else {
                    pkg_ref.namespace.clone()
                },
                resource_version: pkg_ref.resourceversion.clone(),
                ..Default::default()
            },
            filename: filename.to_owned(),
            secret_list: refs(&function.spec.secrets),
            config_map_list: refs(&function.spec.configmaps),
            keeparchive: target.environment.spec.keeparchive,
            ..Default::default()
        };
        let body = json!({
            "FetchReq": fetch,
            "LoadReq": {
                "filepath": format!("/userfunc/{filename}"),
                "functionName": function.spec.package.function_name,
                "url": "",
                "FunctionMetadata": function.metadata,
                "envVersion": env_version,
            },
        });
        let ip = instance.addr().ip();
        let url = format!("http://{}/specialize", SocketAddr::new(ip, FETCHER_PORT));
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .timeout(target.timeout)
            .send()
            .await
            .map_err(|e| {
                LoadError::Unreachable(format!("cannot reach the fetcher at {url}: {e}"))
            })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let text = text.trim();
            return Err(LoadError::Rejected(if text.is_empty() {
                format!("the fetcher answered {status}")
            } else {
                text.to_owned()
            }));
        }
        // Fission's labels and annotations for a specialized pod (what adoption reads), off
        // the request path.
        let name = self.lock_names().get(&instance.id()).cloned();
        if let Some(name) = name {
            let patch = json!({
                "metadata": {
                    "labels": {
                        "functionName": function.metadata.name,
                        "functionNamespace": function.metadata.namespace,
                        "functionUid": function.metadata.uid,
                    },
                    "annotations": {
                        "svcHost": instance.addr().to_string(),
                        "functionResourceVersion": function.metadata.resource_version,
                    },
                }
            });
            let pods = self.pods.clone();
            tokio::spawn(async move {
                if let Err(error) = pods
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::debug!(pod = %name, %error, "cannot label specialized pod");
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, rv: &str) -> Environment {
        serde_json::from_value(json!({
            "apiVersion": "fission.io/v1", "kind": "Environment",
            "metadata": {"name": name, "namespace": "default", "uid": "u-1", "resourceVersion": rv},
            "spec": {"version": 3, "runtime": {"image": "fission/node-env"}, "poolsize": 2},
        }))
        .expect("environment")
    }

    fn config() -> PodConfig {
        PodConfig {
            namespace: "fission-function".into(),
            nodejs_image: "localhost/fission-rs-nodejs:local".into(),
            python_image: "localhost/fission-rs-python:local".into(),
            fetcher_image: "localhost/fission-rs-fetcher:local".into(),
            image_pull_policy: "Never".into(),
            controller_url: "http://10.98.0.1:1234".into(),
            executor_id: "e1".into(),
            pod_ready_timeout: Duration::from_secs(1),
            controller_token: None,
        }
    }

    #[test]
    fn pool_names_follow_fission_and_stay_valid_label_values() {
        assert_eq!(pool_name(&env("nodejs", "42")), "poolmgr-nodejs-default-42");
        let long = pool_name(&env(&"n".repeat(80), "42"));
        assert_eq!(long.len(), 63);
        assert!(!long.ends_with('-'));
    }

    #[test]
    fn the_pool_deployment_selects_only_unclaimed_pods_of_its_version() {
        let e = env("nodejs", "42");
        let plan = PodPlan {
            pool: pool_name(&e),
            env: Arc::new(e),
            image: "img".into(),
        };
        let d = serde_json::to_value(pool_deployment(&plan, &config()).expect("deployment"))
            .expect("json");
        assert_eq!(d["spec"]["replicas"], 2);
        assert_eq!(
            d["spec"]["selector"]["matchLabels"],
            json!({"managed": "true", "fission-rs.io/pool": "poolmgr-nodejs-default-42"})
        );
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["environmentName"], "nodejs");
        assert_eq!(labels["environmentUid"], "u-1");
        assert_eq!(labels["executorType"], "poolmgr");
        let containers = d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        assert_eq!(containers[0]["name"], "nodejs");
        assert_eq!(containers[0]["ports"][0]["containerPort"], 8888);
        assert_eq!(containers[1]["name"], "fetcher");
        assert_eq!(
            containers[1]["readinessProbe"]["httpGet"]["path"],
            "/readiness-healthz"
        );
        assert_eq!(
            containers[1]["env"][0],
            json!({"name": "FISSION_CONTROLLER_URL", "value": "http://10.98.0.1:1234"})
        );
    }

    #[test]
    fn a_pod_ends_when_deleted_finished_or_restarted() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).expect("pod") };
        assert_eq!(
            pod_end(&pod(json!({"status": {"phase": "Running"}})), 0),
            None
        );
        assert!(
            pod_end(
                &pod(json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})),
                0
            )
            .is_some()
        );
        assert!(pod_end(&pod(json!({"status": {"phase": "Failed"}})), 0).is_some());
        let restarted_once = pod(json!({"status": {"phase": "Running", "containerStatuses": [
            {"name": "nodejs", "restartCount": 1, "ready": true, "image": "i", "imageID": ""}
        ]}}));
        assert!(pod_end(&restarted_once, 0).is_some());
        // A restart before the claim lost nothing that was loaded.
        assert_eq!(pod_end(&restarted_once, 1), None);
    }
}
