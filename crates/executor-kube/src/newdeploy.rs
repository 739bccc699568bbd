//! [`KubeDeployments`]: Fission's newdeploy executor — per function a Deployment, a Service
//! and a HorizontalPodAutoscaler (autoscaling/v2), named `newdeploy-<fn>-<ns>-<uid17>`.
//!
//! Each pod's fetcher loads the function at startup (`--specialize-on-startup`) and only then
//! answers its readiness probe, so an endpoint appears only for a pod that serves the
//! function. Calls go straight to ready pod IPs (`podIP:8888`), spread round-robin; the ready
//! endpoints come from one watch on the namespace's EndpointSlices of newdeploy Services, so
//! the warm path is a map lookup. With none ready, the Deployment is scaled to one and the
//! call waits for an endpoint. A function update rolls the Deployment (maxUnavailable 0,
//! maxSurge 1: a new pod is ready before an old one goes), and a leaving pod keeps serving for
//! a preStop pause, so calls already routed to it finish.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fission_core::ExecutorError;
use fission_core::resources::{Environment, Function, ResourceRequirements, function_defaults};
use fission_core::runtime::{BuiltinRuntime, builtin_runtime};
use fission_executor::{Endpoint, FunctionDeployments, Specialization};
use fission_fetcher::wire::{FETCH_DEPLOYMENT, FetchRequest, ValueRef};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{ANNOTATION_EXECUTOR, FETCHER_PORT, PodConfig, RUNTIME_PORT, api_code, fetcher_env};

/// `executorType` of newdeploy objects.
const NEWDEPLOY: &str = "newdeploy";
/// The label EndpointSlices name their Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Upper bound of a leaving pod's preStop pause (calls routed to it just before finish).
const MAX_DRAIN_SECS: i64 = 60;
/// How often a waiting cold call reads the EndpointSlices itself.
const REFRESH_EVERY: Duration = Duration::from_millis(500);
/// Retry-After on a call that found no ready pod in time.
const RETRY_AFTER_SECS: u64 = 5;

/// Why the newdeploy port could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentsError {
    /// The EndpointSlice watch did not list within the bound.
    #[error("cannot list EndpointSlices in namespace '{namespace}' within {secs}s")]
    NotSynced {
        /// The namespace.
        namespace: String,
        /// The bound.
        secs: u64,
    },
}

/// Ready endpoints per newdeploy Service, from the EndpointSlice watch.
#[derive(Default)]
struct Ready {
    /// Service → slice name → ready addresses.
    by_service: HashMap<String, HashMap<String, Vec<SocketAddr>>>,
    /// Service → round-robin position.
    next: HashMap<String, usize>,
}

impl Ready {
    fn pick(&mut self, service: &str) -> Option<SocketAddr> {
        let slices = self.by_service.get(service)?;
        let mut all: Vec<SocketAddr> = slices.values().flatten().copied().collect();
        if all.is_empty() {
            return None;
        }
        // Slices come in map order: sort so the rotation is stable.
        all.sort();
        let next = self.next.entry(service.to_owned()).or_default();
        let addr = all[*next % all.len()];
        *next = next.wrapping_add(1);
        Some(addr)
    }

    fn count(&self, service: &str) -> usize {
        self.by_service
            .get(service)
            .map_or(0, |s| s.values().map(Vec::len).sum())
    }

    fn apply(&mut self, slice: &EndpointSlice) {
        let Some((service, name)) = slice_key(slice) else {
            return;
        };
        let addrs = ready_addrs(slice);
        self.by_service
            .entry(service)
            .or_default()
            .insert(name, addrs);
    }

    fn delete(&mut self, slice: &EndpointSlice) {
        let Some((service, name)) = slice_key(slice) else {
            return;
        };
        if let Some(s) = self.by_service.get_mut(&service) {
            s.remove(&name);
            if s.is_empty() {
                self.by_service.remove(&service);
            }
        }
    }
}

fn slice_key(slice: &EndpointSlice) -> Option<(String, String)> {
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    Some((service, slice.metadata.name.clone()?))
}

/// The slice's ready, not terminating, endpoints at the runtime's port.
fn ready_addrs(slice: &EndpointSlice) -> Vec<SocketAddr> {
    let port = slice
        .ports
        .as_ref()
        .and_then(|ps| ps.iter().find_map(|p| p.port))
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(RUNTIME_PORT);
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| {
            let c = e.conditions.as_ref();
            // An unset `ready` means ready (the API's convention).
            c.and_then(|c| c.ready).unwrap_or(true)
                && !c.and_then(|c| c.terminating).unwrap_or(false)
        })
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// The Kubernetes [`FunctionDeployments`]. See the module docs.
pub struct KubeDeployments {
    config: PodConfig,
    deployments: Api<Deployment>,
    services: Api<Service>,
    hpas: Api<HorizontalPodAutoscaler>,
    slices: Api<EndpointSlice>,
    ready: Arc<Mutex<Ready>>,
    /// Bumped on every EndpointSlice change; cold calls wait on it.
    changed: watch::Receiver<u64>,
    watch_task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeDeployments {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}

impl KubeDeployments {
    /// Start watching the namespace's EndpointSlices; ready once they are listed.
    pub async fn new(client: kube::Client, config: PodConfig) -> Result<Self, DeploymentsError> {
        let ns = config.namespace.clone();
        let ready = Arc::new(Mutex::new(Ready::default()));
        let (tx, changed) = watch::channel(0u64);
        let (synced_tx, mut synced) = watch::channel(false);
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
        let watched = slices.clone();
        let state = ready.clone();
        let watch_task = tokio::spawn(async move {
            let cfg = watcher::Config::default().labels(&format!("executorType={NEWDEPLOY}"));
            let mut events = std::pin::pin!(watcher(watched, cfg).default_backoff());
            let mut relist: Option<Ready> = None;
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(e) => e,
                    Err(error) => {
                        tracing::info!(%error, "EndpointSlice watch error (retrying)");
                        continue;
                    }
                };
                {
                    let mut r = lock(&state);
                    match event {
                        watcher::Event::Init => relist = Some(Ready::default()),
                        watcher::Event::InitApply(s) => {
                            relist.get_or_insert_with(Ready::default).apply(&s);
                        }
                        watcher::Event::InitDone => {
                            let mut fresh = relist.take().unwrap_or_default();
                            fresh.next = std::mem::take(&mut r.next);
                            *r = fresh;
                            let _ = synced_tx.send(true);
                        }
                        watcher::Event::Apply(s) => r.apply(&s),
                        watcher::Event::Delete(s) => r.delete(&s),
                    }
                }
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        });
        let secs = 30;
        let listed = tokio::time::timeout(Duration::from_secs(secs), synced.wait_for(|s| *s)).await;
        if !matches!(listed, Ok(Ok(_))) {
            watch_task.abort();
            return Err(DeploymentsError::NotSynced {
                namespace: ns,
                secs,
            });
        }
        Ok(Self {
            deployments: Api::namespaced(client.clone(), &ns),
            services: Api::namespaced(client.clone(), &ns),
            hpas: Api::namespaced(client, &ns),
            slices,
            config,
            ready,
            changed,
            watch_task,
        })
    }

    /// Scale from zero to one (never down: another call may have scaled up further).
    async fn wake(&self, name: &str) -> Result<(), ExecutorError> {
        let scale = self.deployments.get_scale(name).await.map_err(|e| {
            if api_code(&e) == Some(404) {
                ExecutorError::NotFound(format!("deployment {name} does not exist"))
            } else {
                ExecutorError::Internal(format!("cannot read the scale of {name}: {e}"))
            }
        })?;
        let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        if replicas > 0 {
            return Ok(());
        }
        tracing::info!(deployment = %name, "scaling up from zero for a call");
        // The resourceVersion makes this a compare-and-set: an executor that scaled it
        // meanwhile wins, and this call just waits.
        let patch = json!({
            "metadata": {"resourceVersion": scale.metadata.resource_version},
            "spec": {"replicas": 1},
        });
        match self
            .deployments
            .patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(ExecutorError::Internal(format!(
                "cannot scale {name} up: {e}"
            ))),
        }
    }

    /// Read the Service's EndpointSlices directly: a cold call does not depend on the watch
    /// alone (it may be reconnecting after an error, with a backoff).
    async fn refresh(&self, service: &str) {
        let selector = format!("{SERVICE_NAME_LABEL}={service}");
        match self
            .slices
            .list(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => {
                let mut r = lock(&self.ready);
                let mut fresh: HashMap<String, Vec<SocketAddr>> = HashMap::new();
                for s in &list.items {
                    if let Some((_, name)) = slice_key(s) {
                        fresh.insert(name, ready_addrs(s));
                    }
                }
                r.by_service.insert(service.to_owned(), fresh);
            }
            Err(error) => tracing::debug!(%service, %error, "cannot list EndpointSlices"),
        }
    }

    /// Create `obj`, or on 409 merge-patch `update` into the existing one.
    async fn create_or_patch<K>(
        api: &Api<K>,
        name: &str,
        obj: &K,
        update: &Value,
    ) -> Result<(), ExecutorError>
    where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(409) => api
                .patch(name, &PatchParams::default(), &Patch::Merge(update))
                .await
                .map(|_| ())
                .map_err(|e| ExecutorError::Internal(format!("cannot update {name}: {e}"))),
            Err(e) => Err(ExecutorError::Internal(format!(
                "cannot create {name}: {e}"
            ))),
        }
    }

    async fn delete_all(&self, name: &str) -> Result<(), ExecutorError> {
        let gone = |r: Result<(), kube::Error>| match r {
            Err(e) if api_code(&e) != Some(404) => Err(ExecutorError::Internal(format!(
                "cannot delete {name}: {e}"
            ))),
            _ => Ok(()),
        };
        let dp = DeleteParams::background();
        gone(self.hpas.delete(name, &dp).await.map(|_| ()))?;
        gone(self.deployments.delete(name, &dp).await.map(|_| ()))?;
        gone(self.services.delete(name, &dp).await.map(|_| ()))?;
        tracing::info!(deployment = %name, "newdeploy objects deleted");
        Ok(())
    }
}

fn lock(r: &Mutex<Ready>) -> MutexGuard<'_, Ready> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait::async_trait]
impl FunctionDeployments for KubeDeployments {
    async fn ensure(&self, target: Specialization<'_>) -> Result<(), ExecutorError> {
        let objects = Objects::new(target, &self.config)?;
        let name = &objects.name;
        let service: Service = from_json(&objects.service)?;
        Self::create_or_patch(
            &self.services,
            name,
            &service,
            &json!({"metadata": {"labels": objects.labels}}),
        )
        .await?;
        let deployment: Deployment = from_json(&objects.deployment)?;
        // The replica count stays the cluster's: an update only rolls the pods.
        let update = json!({
            "metadata": {
                "labels": objects.deployment["metadata"]["labels"],
                "annotations": objects.deployment["metadata"]["annotations"],
            },
            "spec": {
                "strategy": objects.deployment["spec"]["strategy"],
                "template": objects.deployment["spec"]["template"],
            },
        });
        Self::create_or_patch(&self.deployments, name, &deployment, &update).await?;
        let hpa: HorizontalPodAutoscaler = from_json(&objects.hpa)?;
        let update = json!({
            "metadata": {"labels": objects.labels},
            "spec": {
                "minReplicas": objects.hpa["spec"]["minReplicas"],
                "maxReplicas": objects.hpa["spec"]["maxReplicas"],
                "metrics": objects.hpa["spec"].get("metrics").cloned().unwrap_or(Value::Null),
            },
        });
        Self::create_or_patch(&self.hpas, name, &hpa, &update).await?;
        tracing::info!(
            deployment = %name,
            function = %target.function.metadata.name,
            resource_version = %target.function.metadata.resource_version,
            "newdeploy objects written"
        );
        Ok(())
    }

    async fn endpoint(
        &self,
        function: &Function,
        timeout: Duration,
    ) -> Result<Endpoint, ExecutorError> {
        let name = object_name(function);
        if let Some(addr) = lock(&self.ready).pick(&name) {
            return Ok(Endpoint { addr, cold: false });
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        self.wake(&name).await?;
        loop {
            if let Some(addr) = lock(&self.ready).pick(&name) {
                return Ok(Endpoint { addr, cold: true });
            }
            let next = (tokio::time::Instant::now() + REFRESH_EVERY).min(deadline);
            match tokio::time::timeout_at(next, changed.changed()).await {
                Ok(Ok(())) => continue,
                // The watch ended (never while the port lives): poll.
                Ok(Err(_)) => tokio::time::sleep_until(next).await,
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ExecutorError::Overloaded {
                    message: format!(
                        "no pod of {name} for function '{}/{}' became ready within {}s",
                        function.metadata.namespace,
                        function.metadata.name,
                        timeout.as_secs()
                    ),
                    retry_after_secs: RETRY_AFTER_SECS,
                    queue_full: false,
                });
            }
            self.refresh(&name).await;
        }
    }

    async fn scale(&self, function: &Function, replicas: i32) -> Result<(), ExecutorError> {
        let name = object_name(function);
        let patch = json!({"spec": {"replicas": replicas}});
        match self
            .deployments
            .patch_scale(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(ExecutorError::Internal(format!(
                "cannot scale {name} to {replicas}: {e}"
            ))),
        }
    }

    fn ready(&self, function: &Function) -> usize {
        lock(&self.ready).count(&object_name(function))
    }

    async fn remove(&self, function: &Function) -> Result<(), ExecutorError> {
        self.delete_all(&object_name(function)).await
    }

    async fn retain(&self, keep: &HashSet<String>) -> Result<(), ExecutorError> {
        let list = self
            .deployments
            .list(&ListParams::default().labels(&format!("executorType={NEWDEPLOY}")))
            .await
            .map_err(|e| ExecutorError::Internal(format!("cannot list deployments: {e}")))?;
        for d in list {
            let uid = d
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("functionUid"))
                .cloned()
                .unwrap_or_default();
            if keep.contains(&uid) {
                continue;
            }
            if let Some(name) = d.metadata.name {
                self.delete_all(&name).await?;
            }
        }
        Ok(())
    }
}

fn from_json<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, ExecutorError> {
    serde_json::from_value(v.clone())
        .map_err(|e| ExecutorError::Internal(format!("cannot describe a newdeploy object: {e}")))
}

/// `newdeploy-<fn>-<ns>-<last 17 characters of the uid>`, name and namespace cut to 17
/// characters each, as Fission names them (at most 63: a valid Service name).
pub fn object_name(function: &Function) -> String {
    let m = &function.metadata;
    let cut = |s: &str, n: usize| -> String { s.chars().take(n).collect() };
    let uid: String = {
        let chars: Vec<char> = m.uid.chars().collect();
        chars[chars.len().saturating_sub(17)..].iter().collect()
    };
    let name = format!(
        "newdeploy-{}-{}-{}",
        cut(&m.name, 17),
        cut(&m.namespace, 17),
        uid
    )
    .to_ascii_lowercase()
    .replace('.', "-");
    name.trim_end_matches('-').to_owned()
}

/// The three objects of one function version, as JSON.
struct Objects {
    name: String,
    labels: Value,
    service: Value,
    deployment: Value,
    hpa: Value,
}

impl Objects {
    fn new(target: Specialization<'_>, config: &PodConfig) -> Result<Self, ExecutorError> {
        let function = target.function;
        let env = target.environment;
        let strategy = &function.spec.invoke_strategy.execution_strategy;
        let name = object_name(function);
        let fm = &function.metadata;
        let em = &env.metadata;
        let labels = json!({
            "functionName": fm.name,
            "functionNamespace": fm.namespace,
            "functionUid": fm.uid,
            "environmentName": em.name,
            "environmentNamespace": em.namespace,
            "environmentUid": em.uid,
            "executorType": NEWDEPLOY,
        });
        let selector = json!({"functionUid": fm.uid, "executorType": NEWDEPLOY});
        let annotations = json!({
            ANNOTATION_EXECUTOR: config.executor_id,
            "functionResourceVersion": fm.resource_version,
        });
        let min_scale = strategy.min_scale.max(0);
        let hpa_min = min_scale.max(1);
        let hpa_max = strategy.max_scale.max(hpa_min);
        let image = runtime_image(env, config)?;
        let runtime_name = if em.name.is_empty() {
            "runtime".to_owned()
        } else {
            em.name.clone()
        };
        let request = serde_json::to_string(&specialize_request(target)).map_err(|e| {
            ExecutorError::Internal(format!("cannot encode the specialize request: {e}"))
        })?;
        // Calls routed to a leaving pod just before its endpoint went away finish during this
        // pause (at most the function's timeout, never past the environment's grace period).
        let fn_timeout = match function.spec.function_timeout {
            t if t > 0 => i64::from(t),
            _ => i64::from(function_defaults::FUNCTION_TIMEOUT),
        };
        let grace = match env.spec.termination_grace_period {
            g if g > 0 => g,
            _ => fission_core::resources::DEFAULT_GRACE_PERIOD,
        };
        let drain = fn_timeout.min(grace).clamp(1, MAX_DRAIN_SECS);
        let resources = serde_json::to_value(merged_resources(
            &env.spec.resources,
            &function.spec.resources,
        ))
        .map_err(|e| ExecutorError::Internal(e.to_string()))?;
        let container_env = crate::runtime_container_env(env);
        let mounts = crate::function_pod_mounts();
        let meta = |kind_labels: &Value| {
            json!({
                "name": name,
                "namespace": config.namespace,
                "labels": kind_labels,
                "annotations": annotations,
            })
        };
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(&labels),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": "http-env", "port": 80, "targetPort": RUNTIME_PORT, "protocol": "TCP"}],
            },
        });
        let deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(&labels),
            "spec": {
                "replicas": min_scale,
                "revisionHistoryLimit": 0,
                "selector": {"matchLabels": selector},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {"functionResourceVersion": fm.resource_version},
                    },
                    "spec": {
                        "terminationGracePeriodSeconds": drain + 5,
                        "automountServiceAccountToken": false,
                        "containers": [
                            {
                                "name": runtime_name,
                                "image": image,
                                "imagePullPolicy": config.image_pull_policy,
                                "ports": [{"name": "http-env", "containerPort": RUNTIME_PORT}],
                                "env": container_env,
                                "resources": resources,
                                "volumeMounts": mounts,
                                "lifecycle": {"preStop": {"sleep": {"seconds": drain}}},
                            },
                            {
                                "name": "fetcher",
                                "image": config.fetcher_image,
                                "imagePullPolicy": config.image_pull_policy,
                                "args": [
                                    "--specialize-on-startup",
                                    "--specialize-request", request,
                                    "--secret-dir", "/secrets",
                                    "--cfgmap-dir", "/configs",
                                    "/userfunc",
                                ],
                                "env": fetcher_env(config),
                                "ports": [{"name": "http-fetcher", "containerPort": FETCHER_PORT}],
                                // Ready = the function is loaded (see the fetcher).
                                "readinessProbe": {
                                    "httpGet": {"path": "/readiness-healthz", "port": FETCHER_PORT},
                                    "periodSeconds": 1, "failureThreshold": 1,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/healthz", "port": FETCHER_PORT},
                                    "periodSeconds": 5,
                                },
                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                                "volumeMounts": mounts,
                            },
                        ],
                        "volumes": crate::function_pod_volumes(),
                    },
                },
            },
        });
        let mut hpa_spec = json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": hpa_min,
            "maxReplicas": hpa_max,
        });
        if (1..=100).contains(&strategy.target_cpu_percent) {
            hpa_spec["metrics"] = json!([{
                "type": "Resource",
                "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": strategy.target_cpu_percent,
                }},
            }]);
        }
        let hpa = json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta(&labels),
            "spec": hpa_spec,
        });
        Ok(Self {
            name,
            labels,
            service,
            deployment,
            hpa,
        })
    }
}

/// The environment's resources with the function's own on top (Fission: function resources
/// override the environment's for newdeploy).
fn merged_resources(
    env: &ResourceRequirements,
    function: &ResourceRequirements,
) -> ResourceRequirements {
    let mut r = env.clone();
    r.limits
        .extend(function.limits.iter().map(|(k, v)| (k.clone(), v.clone())));
    r.requests.extend(
        function
            .requests
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    r
}

/// The image run for `env`'s runtime (the built-in Node and Python images are replaced by the
/// configured ones, as for pool pods).
fn runtime_image(env: &Environment, config: &PodConfig) -> Result<String, ExecutorError> {
    let image = &env.spec.runtime.image;
    match builtin_runtime(image) {
        Some(BuiltinRuntime::NodeJs) => Ok(config.nodejs_image.clone()),
        Some(BuiltinRuntime::Python) => Ok(config.python_image.clone()),
        None if !image.is_empty() => Ok(image.clone()),
        None => Err(ExecutorError::Unsupported(
            "the environment has no runtime image".into(),
        )),
    }
}

/// Fission's `FunctionSpecializeRequest` for `target` (`config.NewSpecializeRequest`).
pub fn specialize_request(target: Specialization<'_>) -> Value {
    let function = target.function;
    let env_version = target.env_version();
    let filename = if env_version >= 2 {
        "deployarchive"
    } else {
        "user"
    };
    let ns = &function.metadata.namespace;
    let or_ns = |n: &str| {
        if n.is_empty() {
            ns.clone()
        } else {
            n.to_owned()
        }
    };
    let refs = |list: &[fission_core::ObjectReference]| -> Vec<ValueRef> {
        list.iter()
            .map(|r| ValueRef {
                namespace: or_ns(&r.namespace),
                name: r.name.clone(),
            })
            .collect()
    };
    let pkg_ref = &function.spec.package.packageref;
    let fetch = FetchRequest {
        fetch_type: FETCH_DEPLOYMENT,
        package: fission_core::ObjectMeta {
            name: pkg_ref.name.clone(),
            namespace: or_ns(&pkg_ref.namespace),
            resource_version: pkg_ref.resourceversion.clone(),
            ..Default::default()
        },
        filename: filename.to_owned(),
        secret_list: refs(&function.spec.secrets),
        config_map_list: refs(&function.spec.configmaps),
        keeparchive: target.environment.spec.keeparchive,
        ..Default::default()
    };
    json!({
        "FetchReq": fetch,
        "LoadReq": {
            "filepath": format!("/userfunc/{filename}"),
            "functionName": function.spec.package.function_name,
            "url": "",
            "FunctionMetadata": function.metadata,
            "envVersion": env_version,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(min: i32, max: i32, cpu: i32) -> Function {
        serde_json::from_value(json!({
            "apiVersion": "fission.io/v1", "kind": "Function",
            "metadata": {"name": "hello", "namespace": "default",
                         "uid": "0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f", "resourceVersion": "7"},
            "spec": {
                "environment": {"name": "nodejs", "namespace": "default"},
                "package": {"packageref": {"name": "hello-pkg", "namespace": "default", "resourceversion": "3"},
                            "functionName": "hello"},
                "InvokeStrategy": {"StrategyType": "execution", "ExecutionStrategy": {
                    "ExecutorType": "newdeploy", "MinScale": min, "MaxScale": max,
                    "TargetCPUPercent": cpu, "SpecializationTimeout": 120}},
                "functionTimeout": 20,
                "resources": {"limits": {"memory": "256Mi"}},
            },
        }))
        .expect("function")
    }

    fn env() -> Environment {
        serde_json::from_value(json!({
            "apiVersion": "fission.io/v1", "kind": "Environment",
            "metadata": {"name": "nodejs", "namespace": "default", "uid": "e-1", "resourceVersion": "2"},
            "spec": {"version": 3, "runtime": {"image": "fission/node-env"},
                     "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}}},
        }))
        .expect("environment")
    }

    fn package() -> fission_core::resources::Package {
        serde_json::from_value(json!({
            "apiVersion": "fission.io/v1", "kind": "Package",
            "metadata": {"name": "hello-pkg", "namespace": "default"},
            "spec": {"environment": {"name": "nodejs", "namespace": "default"}},
        }))
        .expect("package")
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

    fn objects(f: &Function) -> Objects {
        let (e, p) = (env(), package());
        let target = Specialization {
            function: f,
            package: &p,
            environment: &e,
            timeout: Duration::from_secs(30),
        };
        Objects::new(target, &config()).expect("objects")
    }

    #[test]
    fn objects_are_named_as_fission_names_them() {
        assert_eq!(
            object_name(&function(1, 3, 0)),
            "newdeploy-hello-default-8e9f-0a1b2c3d4e5f"
        );
        let mut long = function(1, 1, 0);
        long.metadata.name = "a-very-long-function-name-indeed".into();
        let name = object_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("newdeploy-a-very-long-funct-default-"));
    }

    #[test]
    fn the_deployment_starts_at_min_scale_and_rolls_without_losing_capacity() {
        let o = objects(&function(0, 3, 0));
        let d = &o.deployment;
        assert_eq!(d["spec"]["replicas"], 0);
        assert_eq!(
            d["spec"]["strategy"]["rollingUpdate"],
            json!({"maxUnavailable": 0, "maxSurge": 1})
        );
        let pod = &d["spec"]["template"]["spec"];
        let runtime = &pod["containers"][0];
        assert_eq!(runtime["lifecycle"]["preStop"]["sleep"]["seconds"], 20);
        assert_eq!(pod["terminationGracePeriodSeconds"], 25);
        // The function's memory limit over the environment's; the environment's CPU kept.
        assert_eq!(
            runtime["resources"]["limits"],
            json!({"cpu": "500m", "memory": "256Mi"})
        );
        let fetcher = &pod["containers"][1];
        let args: Vec<&str> = fetcher["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        assert_eq!(args[0], "--specialize-on-startup");
        let request: Value = serde_json::from_str(args[2]).expect("request JSON");
        assert_eq!(request["FetchReq"]["package"]["name"], "hello-pkg");
        assert_eq!(request["LoadReq"]["filepath"], "/userfunc/deployarchive");
        assert_eq!(
            request["LoadReq"]["FunctionMetadata"]["resourceVersion"],
            "7"
        );
        assert_eq!(
            fetcher["readinessProbe"]["httpGet"]["path"],
            "/readiness-healthz"
        );
        assert_eq!(
            d["spec"]["selector"]["matchLabels"]["executorType"],
            "newdeploy"
        );
        assert_eq!(o.service["spec"]["ports"][0]["targetPort"], 8888);
    }

    #[test]
    fn the_hpa_holds_at_least_one_replica_and_targets_cpu_when_asked() {
        let o = objects(&function(0, 3, 50));
        assert_eq!(o.hpa["spec"]["minReplicas"], 1);
        assert_eq!(o.hpa["spec"]["maxReplicas"], 3);
        assert_eq!(
            o.hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        let o = objects(&function(2, 0, 0));
        assert_eq!(o.hpa["spec"]["minReplicas"], 2);
        assert_eq!(o.hpa["spec"]["maxReplicas"], 2);
        assert!(o.hpa["spec"].get("metrics").is_none());
        // Every object parses as its Kubernetes type.
        let _: Deployment = from_json(&o.deployment).expect("deployment");
        let _: Service = from_json(&o.service).expect("service");
        let _: HorizontalPodAutoscaler = from_json(&o.hpa).expect("hpa");
    }

    #[test]
    fn only_ready_endpoints_that_are_not_leaving_take_calls_in_turn() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "s1", "labels": {SERVICE_NAME_LABEL: "svc"}},
            "addressType": "IPv4",
            "ports": [{"name": "http-env", "port": 8888, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "terminating": true}},
                {"addresses": ["10.0.0.4"], "conditions": {"ready": true}},
            ],
        }))
        .expect("slice");
        let mut r = Ready::default();
        r.apply(&slice);
        assert_eq!(r.count("svc"), 2);
        let picks: Vec<String> = (0..4)
            .filter_map(|_| r.pick("svc"))
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            picks,
            [
                "10.0.0.1:8888",
                "10.0.0.4:8888",
                "10.0.0.1:8888",
                "10.0.0.4:8888"
            ]
        );
        r.delete(&slice);
        assert_eq!(r.pick("svc"), None);
    }
}
