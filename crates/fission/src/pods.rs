//! `fission server --instances pods`: function instances as pods of the cluster the store is
//! in (pool Deployments, claimed pods, the fetcher sidecar; see `fission-executor-kube`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use fission_core::{FunctionInstances, FunctionLogs, InstanceReport, ResourceStore};
use prometheus_client::registry::Registry;

/// `--instances` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum InstancesMode {
    /// On this machine (see --sandbox).
    Local,
    /// Pods of the Kubernetes cluster (needs --store kubernetes).
    Pods,
}

/// Flags of the pod backend.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PodArgs {
    /// Where function instances run. `local`: on this machine (--sandbox). `pods`: as pods of
    /// the cluster of --store kubernetes, in pool Deployments per environment, loaded by a
    /// fetcher sidecar (Fission's poolmgr).
    #[arg(long, env = "FISSION_INSTANCES", value_enum, default_value_t = InstancesMode::Local)]
    pub instances: InstancesMode,
    /// Namespace of pool Deployments and function pods (--instances pods).
    #[arg(long, env = "FISSION_POD_NAMESPACE", default_value = "default")]
    pub pod_namespace: String,
    /// The controller's URL as pods reach it; their fetcher reads packages from it
    /// [default: http://<--controller-listen>].
    #[arg(long, env = "FISSION_POD_CONTROLLER_URL")]
    pub pod_controller_url: Option<String>,
    /// Image run for Fission's Node.js environment images.
    #[arg(long, default_value = "localhost/fission-rs-nodejs:local")]
    pub pod_nodejs_image: String,
    /// Image run for Fission's Python environment images.
    #[arg(long, default_value = "localhost/fission-rs-python:local")]
    pub pod_python_image: String,
    /// The fetcher sidecar's image (runs `fission fetcher`).
    #[arg(long, default_value = "localhost/fission-rs-fetcher:local")]
    pub fetcher_image: String,
    /// imagePullPolicy of function pods.
    #[arg(long, default_value = "IfNotPresent")]
    pub pod_image_pull_policy: String,
    /// Seconds a cold start waits for a Ready pool pod.
    #[arg(long, default_value_t = 300)]
    pub pod_ready_timeout: u64,
    /// Image run for Fission's Python builder images (builder pods).
    #[arg(long, default_value = "localhost/fission-rs-python-builder:local")]
    pub pod_python_builder_image: String,
    /// Image run for Fission's Node.js builder images (builder pods).
    #[arg(long, default_value = "localhost/fission-rs-node-builder:local")]
    pub pod_node_builder_image: String,
    /// Seconds a build waits for a Ready builder pod before the package fails.
    #[arg(long, default_value_t = 300)]
    pub pod_builder_ready_timeout: u64,
}

/// The executor's run loop, whatever its backend.
pub(crate) type BoxRun = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), fission_executor::Error>> + Send>,
>;

/// An executor of either backend, seen through the ports the other components use.
pub(crate) struct AnyExecutor {
    pub instances: Arc<dyn FunctionInstances>,
    pub report: Arc<dyn InstanceReport>,
    pub run: Box<dyn FnOnce(tokio_util::sync::CancellationToken) -> BoxRun + Send>,
}

impl AnyExecutor {
    pub(crate) fn of<B: fission_executor::InstanceBackend>(
        e: Arc<fission_executor::Executor<B>>,
    ) -> Self {
        Self {
            instances: e.clone(),
            report: e.clone(),
            run: Box::new(move |shutdown| Box::pin(e.run(shutdown))),
        }
    }
}

/// The pod-backed executor.
#[allow(
    clippy::too_many_arguments,
    reason = "called once, from the server's start"
)]
pub(crate) async fn executor(
    args: &PodArgs,
    controller_token: Option<String>,
    client: kube::Client,
    controller_addr: SocketAddr,
    config: fission_executor::Config,
    store: Arc<dyn ResourceStore>,
    logs: Arc<dyn FunctionLogs>,
    registry: &mut Registry,
) -> Result<AnyExecutor> {
    let pod_config = fission_executor_kube::PodConfig {
        namespace: args.pod_namespace.clone(),
        nodejs_image: args.pod_nodejs_image.clone(),
        python_image: args.pod_python_image.clone(),
        fetcher_image: args.fetcher_image.clone(),
        image_pull_policy: args.pod_image_pull_policy.clone(),
        controller_url: args
            .pod_controller_url
            .clone()
            .unwrap_or_else(|| format!("http://{controller_addr}")),
        executor_id: format!("{}-{}", std::process::id(), config.first_instance_id),
        pod_ready_timeout: Duration::from_secs(args.pod_ready_timeout),
        controller_token,
    };
    // newdeploy functions: a Deployment, Service and HPA each (Fission's newdeploy).
    let deployments =
        fission_executor_kube::KubeDeployments::new(client.clone(), pod_config.clone())
            .await
            .context("cannot start the newdeploy executor")?;
    let backend = fission_executor_kube::PodBackend::new(client, pod_config)
        .await
        .context("cannot start the pod executor")?;
    tracing::info!(namespace = %args.pod_namespace, "function instances run as pods");
    Ok(AnyExecutor::of(
        fission_executor::Executor::with_deployments(
            config,
            store,
            logs,
            backend,
            Arc::new(deployments),
            registry,
        ),
    ))
}

/// Builder pods (Fission's buildermgr): builds of environments with a builder image run in a
/// builder Deployment per environment, in the pods' namespace.
pub(crate) fn builder_pods(
    args: &PodArgs,
    controller_token: bool,
    client: kube::Client,
    controller_addr: SocketAddr,
) -> Result<Arc<fission_builder_kube::BuilderPods>> {
    // Proxies, CA bundles and package index settings of this server, so pip and npm in the
    // builder pod reach their registries as builds here do (the images carry /etc/ssl/certs).
    let builder_env = fission_builder::DEFAULT_PASS_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect();
    let config = fission_builder_kube::BuilderPodConfig {
        namespace: args.pod_namespace.clone(),
        python_builder_image: args.pod_python_builder_image.clone(),
        node_builder_image: args.pod_node_builder_image.clone(),
        fetcher_image: args.fetcher_image.clone(),
        image_pull_policy: args.pod_image_pull_policy.clone(),
        controller_url: args
            .pod_controller_url
            .clone()
            .unwrap_or_else(|| format!("http://{controller_addr}")),
        controller_token,
        ready_timeout: Duration::from_secs(args.pod_builder_ready_timeout),
        builder_env,
    };
    let pods = fission_builder_kube::BuilderPods::new(client, config)
        .context("cannot set up builder pods")?;
    Ok(Arc::new(pods))
}
