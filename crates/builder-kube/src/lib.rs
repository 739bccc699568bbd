//! Fission's buildermgr on Kubernetes: builds run in builder pods, not in the server.
//!
//! [`BuilderPods::run`] watches Environments. Each one with a builder image gets a Deployment
//! and a Service named `<env>-<resourceVersion>` in the builder namespace (labels `envName`,
//! `envNamespace`, `envResourceVersion`, `owner: buildermgr`, as Fission's): a `builder`
//! container running `/builder /packages` (Fission's builder API on :8001, readiness
//! `GET :8001/healthz`) and the `fetcher` sidecar (:8000), sharing the volume `/packages`.
//! Deployments of an older version of the environment, or of an environment that is gone, are
//! deleted.
//!
//! As the build manager's [`RemoteBuilds`], a build of a package of such an environment:
//!
//! 1. waits for a Ready builder pod of the environment's current version (none within the
//!    ready timeout: `Build timeout due to environment builder not ready`);
//! 2. `POST <podIP>:8000/fetch` the package's source into `/packages/<pkg>-<6 letters>`;
//! 3. `POST <podIP>:8001/` the build (`{"srcPkgFilename", "command"}`: the package's build
//!    command, else the environment's, else the image's `/build`); its logs go to the package's
//!    build log; a builder already busy (429) is asked again after its `Retry-After`;
//! 4. `DELETE <podIP>:8001/clean?name=<src>`;
//! 5. `POST <podIP>:8000/upload` the deployment: the fetcher zips it (unless the environment
//!    sets `keeparchive`) into the controller's archive store and answers its URL and sha256,
//!    which become the package's `spec.deployment`.
//!
//! Pods are reached at their pod IP (no Service proxy is needed on the node).
#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fission_builder::{RemoteBuilds, RemoteLog};
use fission_builder_server::{BUILDER_PORT, BuildRequest, BuildResponse};
use fission_core::resources::{ARCHIVE_URL, Archive, Environment, Package};
use fission_core::runtime::{BuiltinRuntime, builtin_builder};
use fission_core::{AnyResource, ResourceStore, WatchEventType};
use fission_executor_kube::{FETCHER_PORT, TOKEN_SECRET};
use fission_fetcher::wire::{FETCH_SOURCE, FetchRequest, UploadRequest, UploadResponse};
use fission_watcher::{Change, Watcher};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rand::Rng as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Label (Fission's) naming the environment of a builder Deployment.
pub const LABEL_ENV_NAME: &str = "envName";
/// Label (Fission's) naming the environment's namespace.
pub const LABEL_ENV_NAMESPACE: &str = "envNamespace";
/// Label (Fission's) with the environment's resourceVersion.
pub const LABEL_ENV_RESOURCE_VERSION: &str = "envResourceVersion";
/// Label (Fission's) marking objects the buildermgr owns (`owner: buildermgr`).
pub const LABEL_OWNER: &str = "owner";
/// The value of [`LABEL_OWNER`].
pub const OWNER_BUILDERMGR: &str = "buildermgr";
/// The shared volume's path in both containers.
const PACKAGES: &str = "/packages";

/// Settings of builder pods.
#[derive(Debug, Clone)]
pub struct BuilderPodConfig {
    /// Namespace of builder Deployments, Services and pods.
    pub namespace: String,
    /// Image run for Fission's Python builder images (`fission/python-builder*`).
    pub python_builder_image: String,
    /// Image run for Fission's Node.js builder images (`fission/node-builder*`).
    pub node_builder_image: String,
    /// The fetcher sidecar's image (runs `fission fetcher`).
    pub fetcher_image: String,
    /// `imagePullPolicy` of both containers.
    pub image_pull_policy: String,
    /// The controller's URL as pods reach it (sources are read from it, deployments stored).
    pub controller_url: String,
    /// Whether the controller wants a token: the fetcher then reads it from the Secret
    /// [`TOKEN_SECRET`] (written by the pod executor in the same namespace).
    pub controller_token: bool,
    /// How long a build waits for a Ready builder pod.
    pub ready_timeout: Duration,
    /// Variables set on the builder container (proxies, CA bundles, package index settings),
    /// so `pip`/`npm` in the pod reach their registries as they do on this host.
    pub builder_env: Vec<(String, String)>,
}

/// Why builder pods cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BuilderPodsError {
    /// The HTTP client for the pods could not be built.
    #[error("cannot build the builder pods' HTTP client: {0}")]
    Client(String),
}

/// Builder Deployments per environment, and builds run in their pods.
pub struct BuilderPods {
    config: BuilderPodConfig,
    deployments: Api<Deployment>,
    services: Api<Service>,
    pods: Api<Pod>,
    http: reqwest::Client,
    /// Builder Deployments known to exist (by name).
    ensured: tokio::sync::Mutex<HashSet<String>>,
    /// The environments last seen with a builder, by (namespace, name).
    wanted: Mutex<HashMap<(String, String), Environment>>,
}

impl std::fmt::Debug for BuilderPods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuilderPods")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What went wrong talking to a builder pod, as the build log tells it.
fn step_error(step: &str, e: impl std::fmt::Display) -> String {
    format!("{step}: {e}")
}

impl BuilderPods {
    /// Builder pods in `config.namespace` through `client`.
    pub fn new(client: kube::Client, config: BuilderPodConfig) -> Result<Self, BuilderPodsError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| BuilderPodsError::Client(e.to_string()))?;
        Ok(Self {
            deployments: Api::namespaced(client.clone(), &config.namespace),
            services: Api::namespaced(client.clone(), &config.namespace),
            pods: Api::namespaced(client, &config.namespace),
            config,
            http,
            ensured: tokio::sync::Mutex::new(HashSet::new()),
            wanted: Mutex::new(HashMap::new()),
        })
    }

    /// Keep builder Deployments in step with the environments in `store` until `shutdown`.
    pub async fn run(self: Arc<Self>, store: Arc<dyn ResourceStore>, shutdown: CancellationToken) {
        let mut watcher = Watcher::new(store, "builder pods");
        while let Some(next) = watcher.next(&shutdown).await {
            match next {
                Ok(Change::Listed { objects, .. }) => {
                    let envs = objects.into_iter().filter_map(|o| match o {
                        AnyResource::Environment(e) if has_builder(&e) => Some(e),
                        _ => None,
                    });
                    let mut wanted = self.lock_wanted();
                    *wanted = envs.map(|e| (env_key(&e), e)).collect();
                }
                Ok(Change::Applied(ev)) => {
                    let AnyResource::Environment(e) = ev.object else {
                        continue;
                    };
                    let mut wanted = self.lock_wanted();
                    if ev.event_type == WatchEventType::Deleted || !has_builder(&e) {
                        wanted.remove(&env_key(&e));
                    } else {
                        wanted.insert(env_key(&e), e);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list environments; retrying");
                    continue;
                }
            }
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "cannot update builder deployments");
            }
        }
    }

    fn lock_wanted(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Environment>> {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create the Deployments of wanted environments; delete the others this owns.
    async fn reconcile(&self) -> Result<(), kube::Error> {
        let wanted: Vec<Environment> = self.lock_wanted().values().cloned().collect();
        let names: HashSet<String> = wanted.iter().map(builder_name).collect();
        for env in &wanted {
            if let Err(e) = self.ensure(env).await {
                tracing::warn!(environment = %env.metadata.name, error = %e, "cannot create builder");
            }
        }
        let owned = ListParams::default().labels(&format!("{LABEL_OWNER}={OWNER_BUILDERMGR}"));
        for d in self.deployments.list(&owned).await?.items {
            let Some(name) = d.metadata.name else {
                continue;
            };
            if names.contains(&name) {
                continue;
            }
            self.ensured.lock().await.remove(&name);
            delete_quietly(&self.deployments, &name).await?;
            delete_quietly(&self.services, &name).await?;
            tracing::info!(builder = %name, "builder deployment of an old or deleted environment removed");
        }
        for s in self.services.list(&owned).await?.items {
            if let Some(name) = s.metadata.name
                && !names.contains(&name)
            {
                delete_quietly(&self.services, &name).await?;
            }
        }
        Ok(())
    }

    /// Create the environment's builder Deployment and Service unless they exist.
    async fn ensure(&self, env: &Environment) -> Result<(), String> {
        let name = builder_name(env);
        let mut ensured = self.ensured.lock().await;
        if ensured.contains(&name) {
            return Ok(());
        }
        let image = self.builder_image(env);
        let deployment = builder_deployment(env, &name, &image, &self.config)
            .map_err(|e| format!("cannot describe builder deployment {name}: {e}"))?;
        let service = builder_service(env, &name, &self.config.namespace)
            .map_err(|e| format!("cannot describe builder service {name}: {e}"))?;
        match self
            .deployments
            .create(&PostParams::default(), &deployment)
            .await
        {
            Ok(_) => {
                tracing::info!(builder = %name, %image, "builder deployment created");
            }
            Err(e) if api_code(&e) == Some(409) => {}
            Err(e) => return Err(format!("cannot create builder deployment {name}: {e}")),
        }
        match self.services.create(&PostParams::default(), &service).await {
            Ok(_) => {}
            Err(e) if api_code(&e) == Some(409) => {}
            Err(e) => return Err(format!("cannot create builder service {name}: {e}")),
        }
        ensured.insert(name);
        Ok(())
    }

    /// The image run for the environment's builder: ours for Fission's builder images.
    fn builder_image(&self, env: &Environment) -> String {
        let image = env
            .spec
            .builder
            .as_ref()
            .map(|b| b.image.clone())
            .unwrap_or_default();
        match builtin_builder(&image) {
            Some(BuiltinRuntime::Python) => self.config.python_builder_image.clone(),
            Some(BuiltinRuntime::NodeJs) => self.config.node_builder_image.clone(),
            None => image,
        }
    }

    /// The IP of a Ready builder pod of `env`'s current version, waiting up to the ready
    /// timeout.
    async fn ready_pod(&self, env: &Environment) -> Result<(String, String), String> {
        let selector = format!(
            "{LABEL_ENV_NAME}={},{LABEL_ENV_NAMESPACE}={},{LABEL_ENV_RESOURCE_VERSION}={}",
            env.metadata.name,
            env.metadata.namespace,
            resource_version(env)
        );
        let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
        let mut pause = Duration::from_millis(100);
        let mut why = String::new();
        loop {
            match self
                .pods
                .list(&ListParams::default().labels(&selector))
                .await
            {
                Ok(list) => {
                    if let Some(found) = list.items.iter().find_map(ready_ip) {
                        return Ok(found);
                    }
                    why = list
                        .items
                        .iter()
                        .filter_map(waiting_reason)
                        .collect::<Vec<_>>()
                        .join("; ");
                }
                Err(e) => tracing::warn!(error = %e, "cannot list builder pods"),
            }
            if tokio::time::Instant::now() + pause > deadline {
                // Its Deployment may have been deleted behind our back: the next build or
                // environment change creates it again.
                self.ensured.lock().await.remove(&builder_name(env));
                let mut msg = "Build timeout due to environment builder not ready".to_owned();
                if !why.is_empty() {
                    msg.push_str(&format!(" ({why})"));
                }
                return Err(msg);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn post_json(
        &self,
        url: &str,
        body: &impl serde::Serialize,
    ) -> Result<(reqwest::StatusCode, Option<Duration>, String), reqwest::Error> {
        let resp = self.http.post(url).json(body).send().await?;
        let status = resp.status();
        let retry = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await?;
        Ok((status, retry, text))
    }

    async fn build_in_pod(
        &self,
        pkg: &Package,
        env: &Environment,
        log: &RemoteLog,
    ) -> Result<Archive, String> {
        self.ensure(env).await?;
        let builder = builder_name(env);
        log.note(format!(
            "Waiting for a ready pod of builder {builder} (namespace '{}')",
            self.config.namespace
        ));
        let (pod, ip) = self.ready_pod(env).await?;
        log.note(format!("Building in pod {pod} ({ip})"));
        let fetcher = format!("http://{ip}:{FETCHER_PORT}");
        let builder_url = format!("http://{ip}:{BUILDER_PORT}");

        let src = format!("{}-{}", pkg.metadata.name, random_suffix());
        let fetch = FetchRequest {
            fetch_type: FETCH_SOURCE,
            package: fission_core::ObjectMeta {
                name: pkg.metadata.name.clone(),
                namespace: pkg.metadata.namespace.clone(),
                resource_version: pkg.metadata.resource_version.clone(),
                ..Default::default()
            },
            filename: src.clone(),
            ..FetchRequest::default()
        };
        let (status, _, text) = self
            .post_json(&format!("{fetcher}/fetch"), &fetch)
            .await
            .map_err(|e| step_error("error fetching source package", e))?;
        if !status.is_success() {
            return Err(step_error(
                "error fetching source package",
                format!("fetcher answered {status}: {}", text.trim()),
            ));
        }

        let command = pkg.spec.buildcmd.trim();
        let command = if command.is_empty() {
            env.spec
                .builder
                .as_ref()
                .map(|b| b.command.trim().to_owned())
                .unwrap_or_default()
        } else {
            command.to_owned()
        };
        let request = BuildRequest {
            src_pkg_filename: src.clone(),
            command,
        };
        let built = loop {
            let (status, retry, text) = self
                .post_json(&format!("{builder_url}/"), &request)
                .await
                .map_err(|e| step_error("cannot reach the builder", e))?;
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                // Another build of this environment is running in the pod: wait our turn (the
                // manager's build timeout bounds the wait).
                let wait = retry.unwrap_or(Duration::from_secs(5));
                log.note(format!(
                    "Builder busy with another build; retrying in {}s",
                    wait.as_secs()
                ));
                tokio::time::sleep(wait).await;
                continue;
            }
            break (status, text);
        };
        self.clean(&builder_url, &src).await;
        let (status, text) = built;
        let answer: BuildResponse = serde_json::from_str(&text)
            .map_err(|_| format!("the builder answered {status}: {}", text.trim()))?;
        log.output(&answer.build_logs);
        if !status.is_success() || answer.artifact_filename.is_empty() {
            return Err(format!("the build in pod {pod} failed ({status})"));
        }

        let upload = UploadRequest {
            filename: answer.artifact_filename.clone(),
            storagesvcurl: self.config.controller_url.clone(),
            archivepackage: !env.spec.keeparchive,
        };
        let (status, _, text) = self
            .post_json(&format!("{fetcher}/upload"), &upload)
            .await
            .map_err(|e| step_error("error uploading deployment package", e))?;
        if !status.is_success() {
            return Err(step_error(
                "error uploading deployment package",
                format!("fetcher answered {status}: {}", text.trim()),
            ));
        }
        let uploaded: UploadResponse = serde_json::from_str(&text)
            .map_err(|e| step_error("error uploading deployment package", e))?;
        Ok(Archive {
            archive_type: ARCHIVE_URL.to_owned(),
            url: uploaded.archive_download_url,
            checksum: uploaded.checksum,
            ..Archive::default()
        })
    }

    async fn clean(&self, builder_url: &str, name: &str) {
        let r = self
            .http
            .delete(format!("{builder_url}/clean"))
            .query(&[("name", name)])
            .send()
            .await;
        if let Err(e) = r.and_then(|r| r.error_for_status()) {
            tracing::warn!(source = %name, error = %e, "cannot clean a builder's source directory");
        }
    }
}

impl RemoteBuilds for BuilderPods {
    fn handles(&self, env: &Environment) -> bool {
        has_builder(env)
    }

    fn build<'a>(
        &'a self,
        pkg: &'a Package,
        env: &'a Environment,
        log: &'a RemoteLog,
    ) -> BoxFuture<'a, Result<Archive, String>> {
        Box::pin(self.build_in_pod(pkg, env, log))
    }

    fn describe(&self) -> String {
        format!(
            "in the environment's builder pod (namespace '{}')",
            self.config.namespace
        )
    }
}

fn has_builder(env: &Environment) -> bool {
    env.spec
        .builder
        .as_ref()
        .is_some_and(|b| !b.image.is_empty())
}

fn env_key(env: &Environment) -> (String, String) {
    (env.metadata.namespace.clone(), env.metadata.name.clone())
}

fn resource_version(env: &Environment) -> &str {
    if env.metadata.resource_version.is_empty() {
        "0"
    } else {
        &env.metadata.resource_version
    }
}

/// `<env>-<resourceVersion>`, cut to a valid object name.
pub fn builder_name(env: &Environment) -> String {
    let name = format!("{}-{}", env.metadata.name, resource_version(env)).to_ascii_lowercase();
    let mut cut: String = name.chars().take(63).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    cut
}

fn labels(env: &Environment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_ENV_NAME.to_owned(), env.metadata.name.clone()),
        (
            LABEL_ENV_NAMESPACE.to_owned(),
            env.metadata.namespace.clone(),
        ),
        (
            LABEL_ENV_RESOURCE_VERSION.to_owned(),
            resource_version(env).to_owned(),
        ),
        (LABEL_OWNER.to_owned(), OWNER_BUILDERMGR.to_owned()),
    ])
}

fn builder_deployment(
    env: &Environment,
    name: &str,
    image: &str,
    config: &BuilderPodConfig,
) -> Result<Deployment, serde_json::Error> {
    let labels = labels(env);
    let builder = env.spec.builder.as_ref();
    let container = builder.and_then(|b| b.container.as_ref());
    // The environment's own builder env first; ours (proxies, CA bundles) only where unset.
    let mut builder_env: Vec<serde_json::Value> = container
        .and_then(|c| c.get("env"))
        .and_then(|e| e.as_array())
        .cloned()
        .unwrap_or_default();
    for (k, v) in &config.builder_env {
        if !builder_env.iter().any(|e| e.get("name") == Some(&json!(k))) {
            builder_env.push(json!({"name": k, "value": v}));
        }
    }
    let resources = container
        .and_then(|c| c.get("resources"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut fetcher_env =
        vec![json!({"name": "FISSION_CONTROLLER_URL", "value": config.controller_url})];
    if config.controller_token {
        fetcher_env.push(
            json!({"name": "FISSION_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": TOKEN_SECRET, "key": "token"}}}),
        );
    }
    let mounts = json!([
        {"name": "packages", "mountPath": PACKAGES},
        {"name": "secrets", "mountPath": "/secrets"},
        {"name": "configmaps", "mountPath": "/configs"},
    ]);
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": config.namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "builder",
                            "image": image,
                            "imagePullPolicy": config.image_pull_policy,
                            "command": ["/builder", PACKAGES],
                            "env": builder_env,
                            "ports": [{"name": "builder-port", "containerPort": BUILDER_PORT}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": BUILDER_PORT},
                                "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 30,
                            },
                            "resources": resources,
                            "volumeMounts": mounts,
                        },
                        {
                            "name": "fetcher",
                            "image": config.fetcher_image,
                            "imagePullPolicy": config.image_pull_policy,
                            "args": ["--secret-dir", "/secrets", "--cfgmap-dir", "/configs", PACKAGES],
                            "env": fetcher_env,
                            "ports": [{"name": "fetcher-port", "containerPort": FETCHER_PORT}],
                            "readinessProbe": {
                                "httpGet": {"path": "/readiness-healthz", "port": FETCHER_PORT},
                                "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 30,
                            },
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                            "volumeMounts": mounts,
                        },
                    ],
                    "volumes": [
                        {"name": "packages", "emptyDir": {}},
                        {"name": "secrets", "emptyDir": {}},
                        {"name": "configmaps", "emptyDir": {}},
                    ],
                },
            },
        },
    }))
}

fn builder_service(
    env: &Environment,
    name: &str,
    namespace: &str,
) -> Result<Service, serde_json::Error> {
    let labels = labels(env);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [
                {"name": "fetcher-port", "port": FETCHER_PORT, "targetPort": FETCHER_PORT},
                {"name": "builder-port", "port": BUILDER_PORT, "targetPort": BUILDER_PORT},
            ],
        },
    }))
}

async fn delete_quietly<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api
        .delete(name, &DeleteParams::background())
        .await
        .map(|_| ())
    {
        Err(e) if api_code(&e) == Some(404) => Ok(()),
        r => r,
    }
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// `(name, IP)` of a pod that is Ready and not going away.
fn ready_ip(pod: &Pod) -> Option<(String, String)> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    ready.then(|| (pod.metadata.name.clone().unwrap_or_default(), ip.to_owned()))
}

/// Why a pod's containers are not running yet (`builder: ErrImagePull: …`), if they say.
fn waiting_reason(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let reasons: Vec<String> = statuses
        .iter()
        .filter_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.as_deref().unwrap_or("waiting");
            Some(match w.message.as_deref().filter(|m| !m.is_empty()) {
                Some(m) => format!("{}: {reason}: {m}", c.name),
                None => format!("{}: {reason}", c.name),
            })
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join(", "))
}

/// Six random lowercase letters, as Fission names source directories.
fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..6)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fission_core::resources::{Builder, EnvironmentSpec};

    fn env(name: &str, rv: &str, builder: &str) -> Environment {
        let mut e = Environment::new(
            "default",
            name,
            EnvironmentSpec {
                builder: Some(Builder {
                    image: builder.to_owned(),
                    ..Builder::default()
                }),
                ..EnvironmentSpec::default()
            },
        );
        e.metadata.resource_version = rv.to_owned();
        e
    }

    fn config() -> BuilderPodConfig {
        BuilderPodConfig {
            namespace: "fission-builder".into(),
            python_builder_image: "localhost/fission-rs-python-builder:local".into(),
            node_builder_image: "localhost/fission-rs-node-builder:local".into(),
            fetcher_image: "localhost/fission-rs-fetcher:local".into(),
            image_pull_policy: "IfNotPresent".into(),
            controller_url: "http://10.0.0.1:8080".into(),
            controller_token: true,
            ready_timeout: Duration::from_secs(1),
            builder_env: vec![("PIP_CERT".into(), "/etc/ssl/certs/ca.crt".into())],
        }
    }

    #[test]
    fn the_builder_is_named_after_the_environment_version_with_fissions_labels() {
        let e = env("Python", "42", "fission/python-builder");
        assert_eq!(builder_name(&e), "python-42");
        let d = builder_deployment(&e, "python-42", "img", &config()).expect("deployment");
        let labels = d.metadata.labels.expect("labels");
        assert_eq!(labels["envName"], "Python");
        assert_eq!(labels["envNamespace"], "default");
        assert_eq!(labels["envResourceVersion"], "42");
        assert_eq!(labels["owner"], "buildermgr");
        let pod = d.spec.template.spec.expect("pod spec");
        let builder = &pod.containers[0];
        assert_eq!(
            builder.command.as_deref(),
            Some(&["/builder".to_owned(), "/packages".to_owned()][..])
        );
        let probe = builder.readiness_probe.as_ref().expect("probe");
        let get = probe.http_get.as_ref().expect("http");
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8001)
        );
        let envs = builder.env.as_ref().expect("env");
        assert!(envs.iter().any(|v| v.name == "PIP_CERT"));
        let fetcher = &pod.containers[1];
        assert!(
            fetcher
                .env
                .as_ref()
                .expect("env")
                .iter()
                .any(|v| v.name == "FISSION_AUTH_TOKEN")
        );
        let s = builder_service(&e, "python-42", "fission-builder").expect("service");
        let ports: Vec<i32> = s
            .spec
            .expect("spec")
            .ports
            .expect("ports")
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [8000, 8001]);
    }
}
