//! [`PodBackend`]: the executor's [`InstanceBackend`] on Kubernetes — Fission's poolmgr.
//!
//! Per environment version a pool Deployment `poolmgr-<env>-<ns>-<resourceVersion>` keeps
//! `poolsize` generic pods (the runtime container plus the fetcher sidecar, sharing
//! `/userfunc`, `/secrets` and `/configs`), labelled as Fission labels them. Starting an
//! instance *claims* a Ready pool pod: its `managed` label is flipped to `false` with a merge
//! patch that carries the pod's `resourceVersion`, which the API server treats as a
//! precondition — of two executors (or two cold calls) patching the same pod, exactly one
//! succeeds and the other gets 409 Conflict and tries the next pod. The claimed pod leaves the
//! Deployment's selector, so its ReplicaSet starts a replacement (the pool refills). Loading a
//! function is `POST <podIP>:8000/specialize` to the fetcher; calls then go to `<podIP>:8888`.
//! Stopping an instance deletes its pod.
//!
//! What to claim, when, how many instances a function may have and when one is idle are
//! decided by the executor's shared pool logic above this backend, exactly as for local
//! instances.
#![deny(missing_docs)]

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
    CodeSlot, EnvironmentPlan, ExitReport, InstanceBackend, LoadError, LogSink, RuntimeInstance,
    Specialization,
};
use fission_fetcher::wire::{FETCH_DEPLOYMENT, FetchRequest, ValueRef};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

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
    /// Listing or deleting pods left by an earlier executor failed.
    #[error("cannot clean up pods of an earlier executor in namespace '{namespace}': {source}")]
    Cleanup {
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
    /// Pod name of every claimed instance, by instance id.
    names: Arc<Mutex<HashMap<u64, String>>>,
}

impl PodBackend {
    /// A backend using `client`; pods of an earlier executor that claimed them and is gone
    /// (another `executorInstanceId`) are deleted, since nothing would ever route to them.
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
        let backend = Self {
            pods: Api::namespaced(client.clone(), &config.namespace),
            deployments: Api::namespaced(client, &config.namespace),
            config,
            http,
            ensured: tokio::sync::Mutex::new(HashSet::new()),
            names: Arc::new(Mutex::new(HashMap::new())),
        };
        backend.delete_orphans().await?;
        Ok(backend)
    }

    async fn delete_orphans(&self) -> Result<(), PodBackendError> {
        let err = |source| PodBackendError::Cleanup {
            namespace: self.config.namespace.clone(),
            source,
        };
        let claimed = self
            .pods
            .list(&ListParams::default().labels(&format!("{LABEL_MANAGED}=false,{LABEL_POOL}")))
            .await
            .map_err(err)?;
        for pod in claimed {
            let owner = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_EXECUTOR));
            if owner.is_some_and(|o| *o == self.config.executor_id) {
                continue;
            }
            let name = pod.metadata.name.unwrap_or_default();
            tracing::info!(pod = %name, "deleting a pod claimed by an earlier executor");
            match self.pods.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if api_code(&e) == Some(404) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    fn lock_names(&self) -> std::sync::MutexGuard<'_, HashMap<u64, String>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn ensure_pool(&self, plan: &PodPlan) -> Result<(), ExecutorError> {
        let mut ensured = self.ensured.lock().await;
        if ensured.contains(&plan.pool) {
            return Ok(());
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
            Err(e) if api_code(&e) == Some(409) => {}
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

    /// Claim one Ready pod of the pool: see the crate docs for why this is race-free.
    async fn claim(&self, plan: &PodPlan, instance_id: u64) -> Result<Pod, ExecutorError> {
        let deadline = tokio::time::Instant::now() + self.config.pod_ready_timeout;
        let selector = format!("{LABEL_POOL}={},{LABEL_MANAGED}=true", plan.pool);
        let mut pause = Duration::from_millis(50);
        loop {
            let mut ready: Vec<Pod> = self
                .pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| ExecutorError::Internal(format!("cannot list pool pods: {e}")))?
                .items
                .into_iter()
                .filter(is_ready)
                .collect();
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
fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn is_ready(pod: &Pod) -> bool {
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
    let container_env = env
        .spec
        .runtime
        .container
        .as_ref()
        .and_then(|c| c.get("env"))
        .cloned()
        .unwrap_or_else(|| json!([]));
    let mounts = json!([
        {"name": "userfunc", "mountPath": "/userfunc"},
        {"name": "secrets", "mountPath": "/secrets"},
        {"name": "configmaps", "mountPath": "/configs"},
        {"name": "podinfo", "mountPath": "/etc/podinfo"},
    ]);
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
                "metadata": { "labels": pod_labels },
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
                    "volumes": [
                        {"name": "userfunc", "emptyDir": {}},
                        {"name": "secrets", "emptyDir": {}},
                        {"name": "configmaps", "emptyDir": {}},
                        {"name": "podinfo", "downwardAPI": {"items": [
                            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
                        ]}},
                    ],
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
            let gone = match self.pods.get_opt(&self.name).await {
                Ok(None) => Some("pod deleted".to_owned()),
                Ok(Some(pod)) => pod_end(&pod),
                Err(error) => {
                    tracing::debug!(pod = %self.name, %error, "cannot check pod");
                    None
                }
            };
            if let Some(status) = gone {
                self.exited(status);
                return;
            }
        }
    }
}

fn pod_end(pod: &Pod) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Some("pod is being deleted".to_owned());
    }
    let status = pod.status.as_ref()?;
    if let Some(phase @ ("Failed" | "Succeeded")) = status.phase.as_deref() {
        return Some(format!("pod {phase}"));
    }
    let restarted = status
        .container_statuses
        .as_ref()
        .is_some_and(|cs| cs.iter().any(|c| c.restart_count > 0));
    restarted.then(|| "a container of the pod restarted".to_owned())
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
        if self.killed.swap(true, Ordering::SeqCst) {
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

    async fn start(
        &self,
        plan: &EnvironmentPlan<PodPlan>,
        instance_id: u64,
        _log: LogSink,
    ) -> Result<Arc<dyn RuntimeInstance>, ExecutorError> {
        self.ensure_pool(&plan.launch).await?;
        let pod = self.claim(&plan.launch, instance_id).await?;
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
        });
        tokio::spawn(instance.clone().monitor());
        self.lock_names().insert(instance_id, name.clone());
        // The name is no longer needed once the instance has gone.
        let mut rx = instance.exit.subscribe();
        let names = self.names.clone();
        tracing::debug!(pod = %name, instance = instance_id, "pool pod claimed");
        tokio::spawn(async move {
            let _ = rx.wait_for(|e| e.is_some()).await;
            names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&instance_id);
        });
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
        assert_eq!(pod_end(&pod(json!({"status": {"phase": "Running"}}))), None);
        assert!(
            pod_end(&pod(
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
            ))
            .is_some()
        );
        assert!(pod_end(&pod(json!({"status": {"phase": "Failed"}}))).is_some());
        assert!(
            pod_end(&pod(json!({"status": {"phase": "Running", "containerStatuses": [
                {"name": "nodejs", "restartCount": 1, "ready": true, "image": "i", "imageID": ""}
            ]}})))
            .is_some()
        );
    }
}
