//! `fission server --role controller|router|executor`: one component per process, as Fission
//! runs them, each reading and following the cluster's store (`--store kubernetes`; the
//! embedded database can be opened by one process only). The router reaches the executor over
//! Fission's executor API (`--executor-url`), executors read archives from the controller
//! (`--controller-url`), and the controller's triggers call the router (`--router-url`).
//! `--role all` (the default) is the all-in-one server with its in-process fast path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use fission_core::ResourceStore;
use fission_store::DataDir;
use fission_store::archive::ArchiveStore;
use fission_store::logs::LogStore;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    Running, ServerArgs, StoreMode, default_data_dir, default_environments_dir, instance_launcher,
    prune_archives_periodically,
};
use crate::env::*;

/// `--role` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Role {
    /// Every component in this process (the router calls the executor in-process).
    All,
    /// The REST API, archives (Fission's storagesvc), builds, triggers.
    Controller,
    /// The function router; leases instances from an executor over HTTP.
    Router,
    /// Warm pools and function instances, served over Fission's executor API.
    Executor,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Controller => "controller",
            Role::Router => "router",
            Role::Executor => "executor",
        }
    }
}

/// The flags of split roles.
#[derive(Debug, clap::Args)]
pub(super) struct RoleArgs {
    /// Which components this process runs. `all`: the all-in-one server. `controller`,
    /// `router`, `executor`: one component, sharing state through --store kubernetes.
    #[arg(long, env = ENV_ROLE, value_enum, default_value_t = Role::All)]
    pub(super) role: Role,
    /// Where the executor API listens (--role executor).
    #[arg(long, env = ENV_EXECUTOR_LISTEN, default_value = "127.0.0.1:8888")]
    executor_listen: SocketAddr,
    /// The executor API the router leases instances from (--role router).
    #[arg(long, env = ENV_EXECUTOR_URL, default_value = "http://127.0.0.1:8888")]
    executor_url: String,
    /// The controller executors download package archives from (--role executor).
    #[arg(long, env = ENV_CONTROLLER_URL, default_value = "http://127.0.0.1:31313")]
    controller_url: String,
    /// The router that triggers call and `fission fn test` is sent to (--role controller).
    #[arg(long, env = ENV_ROUTER_URL, default_value = "http://127.0.0.1:31314")]
    router_url: String,
}

/// Start the component `args.roles.role` names.
pub(super) async fn start(args: ServerArgs) -> Result<Running> {
    let role = args.roles.role;
    if args.store != StoreMode::Kubernetes {
        anyhow::bail!(
            "--role {} needs --store kubernetes: the embedded store can be opened by one process \
             only, so split roles share a Kubernetes API server's state (use --role all for one process)",
            role.name()
        );
    }
    let started = tokio::time::Instant::now();
    // Roles started on one machine must not share a data directory (it is locked).
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir().join(role.name()));
    let data = DataDir::open(&data_dir)?;
    let store = fission_store_kube::KubeStore::connect(args.kubeconfig.as_deref()).await?;
    store.check_ready().await?;
    let client = store.client().clone();
    let store: Arc<dyn ResourceStore> = Arc::new(store);
    let parts = Parts {
        stop_accepting: CancellationToken::new(),
        stop_backends: CancellationToken::new(),
        grace: Duration::from_secs(args.grace_period),
        front: JoinSet::new(),
        back: JoinSet::new(),
    };
    let (parts, sandbox) = match role {
        Role::Controller => (controller(&args, &store, client, &data, parts).await?, None),
        Role::Router => (router(&args, &store, parts).await?, None),
        Role::Executor => executor(&args, &store, client, &data, parts).await?,
        Role::All => anyhow::bail!("--role all is started by the all-in-one path"),
    };
    tracing::info!(role = role.name(), data_dir = %data.root().display(), "fission server started");
    println!(
        "fission server ready in {} ms: role {} {}",
        started.elapsed().as_millis(),
        role.name(),
        parts.listening
    );
    Ok(Running {
        front: parts.parts.front,
        back: parts.parts.back,
        stop_accepting: parts.parts.stop_accepting,
        stop_backends: parts.parts.stop_backends,
        grace: parts.parts.grace,
        sandbox,
        store,
        data,
    })
}

struct Parts {
    stop_accepting: CancellationToken,
    stop_backends: CancellationToken,
    grace: Duration,
    front: JoinSet<Result<()>>,
    back: JoinSet<Result<()>>,
}

/// A started role and what it announces (`<component> http://addr`).
struct Started {
    parts: Parts,
    listening: String,
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what}); use {flag}"))?;
    let local = l.local_addr()?;
    Ok((l, local))
}

/// This process's name in its reports to the controller: the pod (or host), the process and
/// its start, so a restarted process reports as a new one.
fn reporter_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| "local".to_owned());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{host}-{}-{started}", std::process::id())
}

fn metrics_render(registry: Registry) -> impl Fn() -> String + Clone + Send + Sync + 'static {
    let registry = Arc::new(Mutex::new(registry));
    move || {
        let mut text = String::new();
        let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        text
    }
}

fn runtime_binaries(args: &ServerArgs) -> (PathBuf, PathBuf) {
    let (found_node, found_python) = fission_executor::resolve_runtime_binaries();
    let node = args
        .node
        .clone()
        .or(found_node)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/node"));
    let python = args
        .python
        .clone()
        .or(found_python)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"));
    (node, python)
}

fn archive_fetch(args: &ServerArgs) -> Result<fission_fetch::FetchConfig> {
    let config = fission_fetch::FetchConfig {
        extra_ca_cert: args.archive_ca_cert.clone(),
        ..fission_fetch::FetchConfig::default()
    };
    fission_fetch::Fetcher::new(&config, None)
        .map_err(|e| anyhow::anyhow!("--archive-ca-cert: {e}"))?;
    Ok(config)
}

/// The REST API and archive store, builds, triggers, archive pruning and the secret/config
/// map follower: everything that must run once per cluster.
async fn controller(
    args: &ServerArgs,
    store: &Arc<dyn ResourceStore>,
    client: kube::Client,
    data: &DataDir,
    mut p: Parts,
) -> Result<Started> {
    let (listener, addr) =
        bind(args.controller_listen, "controller", "--controller-listen").await?;
    // The same rules as the all-in-one server: a token whenever the controller listens beyond
    // loopback (a cluster always does), TLS when given.
    let token = super::api_token(args, addr, data)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(fission_controller::TlsConfig::from_pem_files(cert, key)?),
        _ => None,
    };
    let router_url = args.roles.router_url.trim_end_matches('/').to_owned();
    let archives = ArchiveStore::open(data.archives())?;
    let logs = LogStore::open(data.logs())?;
    let mut registry = Registry::default();
    let (node, python) = runtime_binaries(args);
    let triggers = fission_triggers::Triggers::new(
        &router_url,
        store.clone(),
        Some(Arc::new(logs.clone())),
        &mut registry,
    );
    let mut builder_config = fission_builder::Config::new(data.root().join("builds"));
    builder_config.node_bin = node;
    builder_config.runtime_python_bin = python;
    builder_config.archive_fetch = archive_fetch(args)?;
    // --instances pods: environments with a builder image build in builder pods, whose
    // fetchers present the token (from the Secret the executor writes) when one is required.
    let builder_pods = (args.pods.instances == crate::pods::InstancesMode::Pods)
        .then(|| crate::pods::builder_pods(&args.pods, token.is_some(), client, addr))
        .transpose()?;
    builder_config.remote = builder_pods
        .clone()
        .map(|b| b as Arc<dyn fission_builder::RemoteBuilds>);
    let builder = fission_builder::BuildManager::new(
        builder_config,
        store.clone(),
        archives.clone(),
        logs.clone(),
    );
    // Routers send their call counts (the canary manager's input) and executors their instance
    // counts (`fission fn list`) here; any number of each add up.
    let reports = fission_remote::ClusterReports::new();
    let controller = fission_controller::Controller::new(
        fission_controller::Config {
            router_url: router_url.clone(),
            ..fission_controller::Config::default()
        },
        store.clone(),
        archives.clone(),
        logs,
        p.stop_accepting.clone(),
    )
    .with_metrics_endpoint(metrics_render(registry))
    .with_instance_report(Arc::new(reports.clone()))
    .with_routes(triggers.api_routes().merge(reports.routes()));
    let controller = match token {
        Some(token) => controller.with_auth_token(token),
        None => controller,
    };
    let controller = match tls {
        Some(tls) => controller.with_tls(tls),
        None => controller,
    };
    let grace = p.grace;
    p.front.spawn(async move {
        controller
            .serve(listener, grace)
            .await
            .context("controller failed")
    });
    let shutdown = p.stop_backends.clone();
    p.back
        .spawn(async move { builder.run(shutdown).await.context("build manager failed") });
    if let Some(pods) = builder_pods {
        let (s, shutdown) = (store.clone(), p.stop_backends.clone());
        p.back.spawn(async move {
            pods.run(s, shutdown).await;
            Ok(())
        });
    }
    let shutdown = p.stop_backends.clone();
    p.back
        .spawn(async move { triggers.run(shutdown).await.context("triggers failed") });
    let (s, shutdown) = (store.clone(), p.stop_backends.clone());
    p.back.spawn(async move {
        fission_controller::follow_value_changes(s, shutdown).await;
        Ok(())
    });
    let (s, shutdown) = (store.clone(), p.stop_backends.clone());
    p.back.spawn(async move {
        prune_archives_periodically(s, archives, shutdown).await;
        Ok(())
    });
    let (s, shutdown) = (store.clone(), p.stop_backends.clone());
    p.back.spawn(async move {
        fission_controller::canary::run(s, Arc::new(reports), shutdown).await;
        Ok(())
    });
    tracing::info!(router = %router_url, "controller listening on http://{addr}");
    Ok(Started {
        parts: p,
        listening: format!("controller http://{addr}"),
    })
}

/// The function router, leasing instances from the executor API at `--executor-url`.
async fn router(
    args: &ServerArgs,
    store: &Arc<dyn ResourceStore>,
    mut p: Parts,
) -> Result<Started> {
    let (listener, addr) = bind(args.router_listen, "router", "--router-listen").await?;
    let instances = fission_remote::RemoteInstances::new(&args.roles.executor_url)
        .map_err(|e| anyhow::anyhow!("--executor-url: {e}"))?;
    let mut registry = Registry::default();
    let router = fission_router::Router::new(
        fission_router::Config {
            listen: addr,
            ..fission_router::Config::default()
        },
        Arc::new(instances.clone()),
        &mut registry,
    )
    .with_metrics_endpoint(metrics_render(registry));
    let (r, shutdown, grace) = (router.clone(), p.stop_accepting.clone(), p.grace);
    p.front.spawn(async move {
        r.serve(listener, shutdown, grace)
            .await
            .context("router failed")
    });
    let reporter = fission_remote::Reporter::router(
        &args.roles.controller_url,
        args.auth_token.as_deref(),
        &reporter_id(),
    )
    .map_err(|e| anyhow::anyhow!("--controller-url: {e}"))?;
    let (stats, shutdown) = (router.call_stats(), p.stop_backends.clone());
    p.back.spawn(async move {
        reporter.send_calls(stats, shutdown).await;
        Ok(())
    });
    let (r, s, shutdown) = (router.clone(), store.clone(), p.stop_backends.clone());
    p.back.spawn(async move {
        r.sync_routes(s, shutdown)
            .await
            .context("route sync failed")
    });
    let shutdown = p.stop_backends.clone();
    p.back.spawn(async move {
        instances.renew_leases(shutdown).await;
        Ok(())
    });
    router.ready().await;
    tracing::info!(executor = %args.roles.executor_url, "router listening on http://{addr}");
    Ok(Started {
        parts: p,
        listening: format!("router http://{addr}"),
    })
}

/// Warm pools and instances on this machine (or, with `--instances pods`, pods of the
/// store's cluster), served to routers over the executor API; archives come from the
/// controller at `--controller-url`.
async fn executor(
    args: &ServerArgs,
    store: &Arc<dyn ResourceStore>,
    kube_client: kube::Client,
    data: &DataDir,
    mut p: Parts,
) -> Result<(Started, Option<super::SandboxRun>)> {
    let (listener, addr) = bind(
        args.roles.executor_listen,
        "executor API",
        "--executor-listen",
    )
    .await?;
    let fetch = archive_fetch(args)?;
    // The controller requires the token whenever it listens beyond loopback (as in a cluster).
    let archives = fission_remote::RemoteArchives::new(
        &args.roles.controller_url,
        &fetch,
        args.auth_token.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("--controller-url: {e}"))?;
    let logs = LogStore::open(data.logs())?;
    let environments_dir = args
        .environments_dir
        .clone()
        .or_else(default_environments_dir)
        .unwrap_or_else(|| {
            tracing::warn!(
                "no built-in runtimes found; functions cannot run until --environments-dir is set"
            );
            PathBuf::from("environments")
        });
    let (node, python) = runtime_binaries(args);
    let run_dir = data.root().join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let (launcher, environments_dir, sandbox) = instance_launcher(
        args.sandbox,
        &environments_dir,
        &run_dir,
        (args.python_zygote == super::Toggle::On).then_some(python.as_path()),
    )?;
    let mut config = fission_executor::Config::new(environments_dir, data.cache(), node, python);
    config.local.archive_fetch = fetch;
    if let Some(n) = args.max_instances {
        config.admission.max_instances = n as usize;
    }
    if let Some(n) = args.max_specializations {
        config.admission.max_specializations = n as usize;
    }
    // As in the all-in-one server: ids above any a previous run of this process used.
    config.first_instance_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2));
    let mut registry = Registry::default();
    let executor = if args.pods.instances == crate::pods::InstancesMode::Pods {
        // The pods' fetchers read packages from the controller this executor uses (in a
        // cluster: its Service) unless --pod-controller-url says otherwise.
        let mut pods = args.pods.clone();
        pods.pod_controller_url
            .get_or_insert_with(|| args.roles.controller_url.clone());
        crate::pods::executor(
            &pods,
            args.auth_token.clone(),
            kube_client,
            // Only the default of --pod-controller-url, which is set above.
            addr,
            config,
            store.clone(),
            Arc::new(logs),
            &mut registry,
        )
        .await?
    } else {
        crate::pods::AnyExecutor::of(fission_executor::Executor::new(
            config,
            store.clone(),
            archives,
            logs,
            launcher,
            &mut registry,
        ))
    };
    let crate::pods::AnyExecutor {
        instances,
        run,
        report,
    } = executor;
    let reporter = fission_remote::Reporter::executor(
        &args.roles.controller_url,
        args.auth_token.as_deref(),
        &reporter_id(),
    )
    .map_err(|e| anyhow::anyhow!("--controller-url: {e}"))?;
    let shutdown = p.stop_backends.clone();
    p.back.spawn(async move {
        reporter.send_instances(report, shutdown).await;
        Ok(())
    });
    let api = fission_remote::ExecutorApi::new(instances);
    let render = metrics_render(registry);
    let app = api.router().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move { render() }
        }),
    );
    let (shutdown, grace) = (p.stop_accepting.clone(), p.grace);
    p.front.spawn(async move {
        let server =
            axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let server = tokio::spawn(async move { server.await });
        shutdown.cancelled().await;
        match tokio::time::timeout(grace, server).await {
            Ok(joined) => joined
                .context("executor API panicked")?
                .context("executor API failed"),
            Err(_) => {
                tracing::warn!("executor API did not drain within the grace period");
                Ok(())
            }
        }
    });
    let shutdown = p.stop_backends.clone();
    p.back
        .spawn(async move { run(shutdown).await.context("executor failed") });
    let shutdown = p.stop_backends.clone();
    p.back.spawn(async move {
        api.expire_leases(shutdown).await;
        Ok(())
    });
    tracing::info!(controller = %args.roles.controller_url, "executor API listening on http://{addr}");
    Ok((
        Started {
            parts: p,
            listening: format!("executor http://{addr}"),
        },
        sandbox,
    ))
}
