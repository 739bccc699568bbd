//! `fission server`: the all-in-one process. Opens the data directory, builds the store,
//! controller, executor and router, serves until SIGINT/SIGTERM, then drains.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use fission_core::ResourceStore;
use fission_store::archive::ArchiveStore;
use fission_store::cipher::SecretCipher;
use fission_store::logs::LogStore;
use fission_store::{DataDir, RedbStore};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::env::*;

/// Flags of `fission server`.
#[derive(Debug, Args)]
#[command(after_help = "Every flag can also be set through the environment variable named in brackets.\n\
The server keeps all state (objects, archives, logs, unpacked packages) in --data-dir; \
only one server may use a data directory at a time.\n\
Function instances run as local processes with the server's privileges: no sandbox yet.")]
pub struct ServerArgs {
    /// Where objects, archives and logs are kept [default: $XDG_DATA_HOME/fission or ~/.local/share/fission].
    #[arg(long, env = ENV_DATA_DIR)]
    data_dir: Option<PathBuf>,
    /// Address of the controller API (what `fission` talks to).
    #[arg(long, env = ENV_CONTROLLER_LISTEN, default_value = "127.0.0.1:31313")]
    controller_listen: SocketAddr,
    /// Address of the router (where functions are called).
    #[arg(long, env = ENV_ROUTER_LISTEN, default_value = "127.0.0.1:31314")]
    router_listen: SocketAddr,
    /// Directory holding the built-in runtimes (nodejs/, python/) [default: found next to the binary or in ./environments].
    #[arg(long, env = ENV_ENVIRONMENTS_DIR)]
    environments_dir: Option<PathBuf>,
    /// Node.js binary for Node environments [default: /usr/bin/node, else node on PATH].
    #[arg(long, env = ENV_NODE)]
    node: Option<PathBuf>,
    /// Python binary for Python environments [default: /usr/bin/python3, else python3 on PATH].
    #[arg(long, env = ENV_PYTHON)]
    python: Option<PathBuf>,
    /// How long in-flight requests may take to finish at shutdown, in seconds.
    #[arg(long, env = ENV_GRACE_PERIOD, default_value_t = 10)]
    grace_period: u64,
    /// How function instances are isolated. `bwrap`: each instance in its own sandbox
    /// (bubblewrap with user/pid/mount/ipc/uts/network namespaces, an unprivileged uid, seccomp,
    /// cgroup limits from the environment's --maxmemory/--maxcpu, NAT egress that an
    /// environment can turn off with the annotation fission.io/egress=false); needs root,
    /// bubblewrap, iproute2 and nftables, and the server refuses to start without them.
    /// `none`: plain processes with the server's privileges — no isolation at all.
    #[arg(long, env = ENV_SANDBOX, value_enum, default_value_t = SandboxMode::Bwrap)]
    sandbox: SandboxMode,
    /// Where objects live. `embedded`: a database in --data-dir. `kubernetes`: a cluster's
    /// API server, as fission.io/v1 custom resources (apply deploy/crds/ first) and real
    /// Secrets and ConfigMaps; function instances still run on this machine.
    #[arg(long, env = ENV_STORE, value_enum, default_value_t = StoreMode::Embedded)]
    store: StoreMode,
    /// Kubeconfig for --store kubernetes [default: the pod's service account when run in a
    /// pod, else $KUBECONFIG or ~/.kube/config].
    #[arg(long, env = ENV_KUBECONFIG)]
    kubeconfig: Option<PathBuf>,
}

/// `--store` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreMode {
    /// redb in the data directory.
    Embedded,
    /// A Kubernetes API server.
    Kubernetes,
}

/// `--sandbox` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SandboxMode {
    /// Every instance in a bubblewrap sandbox.
    Bwrap,
    /// No isolation.
    None,
}

/// Whether every directory from `/` down to `dir` lets other users through, as the sandbox's
/// unprivileged uid must to bind `dir`.
fn reachable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    dir.ancestors().all(|d| std::fs::metadata(d).map(|m| m.permissions().mode() & 0o001 != 0).unwrap_or(false))
}

/// The launcher for `mode`: a sandboxing one, or plain processes.
fn instance_launcher(
    mode: SandboxMode,
    environments_dir: &Path,
    run_dir: &Path,
) -> Result<(Arc<dyn fission_executor::InstanceLauncher>, PathBuf, Option<fission_sandbox::Sandbox>)> {
    match mode {
        SandboxMode::None => {
            tracing::warn!("--sandbox none: function instances run as plain processes with this server's privileges; they are NOT isolated from each other or from this machine");
            let launcher = fission_executor::ProcessLauncher::new(run_dir.to_owned())
                .with_context(|| format!("cannot create {}", run_dir.display()))?;
            Ok((Arc::new(launcher), environments_dir.to_owned(), None))
        }
        SandboxMode::Bwrap => {
            if let Err(why) = fission_sandbox::Sandbox::probe() {
                anyhow::bail!(
                    "cannot sandbox function instances on this machine: {why}\n\
                     Run the server as root with bubblewrap, iproute2 and nftables installed \
                     (apt-get install bubblewrap iproute2 nftables), or start it with --sandbox none \
                     to run functions WITHOUT isolation."
                );
            }
            let sandbox = fission_sandbox::Sandbox::new(fission_sandbox::SandboxConfig::default())
                .map_err(|e| anyhow::anyhow!("cannot set up the sandbox: {e}"))?;
            match sandbox.cleanup_leftovers() {
                Ok(report) if !report.dead_runs.is_empty() => {
                    tracing::info!(runs = ?report.dead_runs, processes = report.processes_killed, netns = report.netns, "removed sandbox leftovers of a previous run");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot remove sandbox leftovers"),
            }
            // The runtimes are bound into every slot; the slot's uid must be able to reach them.
            let environments_dir = std::fs::canonicalize(environments_dir).unwrap_or_else(|_| environments_dir.to_owned());
            let environments_dir = environments_dir.as_path();
            let envs = if reachable_by_others(environments_dir) {
                environments_dir.to_owned()
            } else {
                let copy = sandbox.config().state_dir.join(format!("environments-{}", sandbox.run_id()));
                let status = std::process::Command::new("cp")
                    .arg("-a")
                    .arg(environments_dir)
                    .arg(&copy)
                    .status()
                    .context("cannot copy the runtimes for the sandbox")?;
                if !status.success() {
                    anyhow::bail!("cannot copy {} to {} for the sandbox", environments_dir.display(), copy.display());
                }
                tracing::info!(from = %environments_dir.display(), to = %copy.display(), "runtimes copied where sandboxed instances can read them");
                copy
            };
            tracing::info!(sandbox_run = sandbox.run_id(), "function instances run in sandboxes");
            // Bound at a fixed path inside, whatever the host path (it may sit under /tmp, which
            // the sandbox replaces with a private one).
            let launcher = fission_executor::SandboxLauncher::new(
                sandbox.clone(),
                vec![(envs.clone(), PathBuf::from("/opt/fission/environments"))],
            );
            Ok((Arc::new(launcher), envs, Some(sandbox)))
        }
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("fission");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/fission")
}

/// Find `environments/` next to the binary (a cargo build) or in the working directory.
fn default_environments_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            candidates.push(up.join("environments"));
            candidates.push(up.join("share/fission/environments"));
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join("environments"));
    }
    // A binary built from a checkout (and installed elsewhere) still finds that checkout's runtimes.
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../environments"));
    candidates.into_iter().find(|c| c.join("nodejs/server.js").is_file() || c.join("python/server.py").is_file())
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// How often unreferenced archives are removed (Fission's storagesvc: 60 min).
const ARCHIVE_PRUNE_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Uploads younger than this are never pruned: their package may not exist yet.
const ARCHIVE_PRUNE_MIN_AGE: Duration = Duration::from_secs(10 * 60);

async fn prune_archives_periodically(store: Arc<dyn ResourceStore>, archives: ArchiveStore, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ARCHIVE_PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match fission_store::prune::prune_unreferenced(store.as_ref(), &archives, ARCHIVE_PRUNE_MIN_AGE).await {
            Ok(r) if !r.removed.is_empty() => tracing::info!(removed = r.removed.len(), kept = r.kept, "pruned unreferenced archives"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "archive pruning failed"),
        }
    }
}

/// Run the server until a signal arrives.
pub async fn run(args: ServerArgs) -> Result<()> {
    init_tracing();
    let started = tokio::time::Instant::now();
    let data_dir_path = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let data = DataDir::open(&data_dir_path)?;
    let store: Arc<dyn ResourceStore> = match args.store {
        StoreMode::Embedded => {
            let cipher = SecretCipher::load_or_create(&data.secret_key())?;
            let store = RedbStore::open_with_cipher(&data.database(), Some(cipher))
                .with_context(|| format!("cannot open the object database in {}", data.root().display()))?;
            Arc::new(store)
        }
        StoreMode::Kubernetes => {
            let store = fission_store_kube::KubeStore::connect(args.kubeconfig.as_deref()).await?;
            store.check_ready().await?;
            Arc::new(store)
        }
    };
    let archives = ArchiveStore::open(data.archives())?;
    let logs = LogStore::open(data.logs())?;

    let controller_listener = TcpListener::bind(args.controller_listen)
        .await
        .with_context(|| format!("cannot listen on {} (controller); is another server running? use --controller-listen", args.controller_listen))?;
    let router_listener = TcpListener::bind(args.router_listen)
        .await
        .with_context(|| format!("cannot listen on {} (router); use --router-listen", args.router_listen))?;
    let controller_addr = controller_listener.local_addr()?;
    let router_addr = router_listener.local_addr()?;

    let environments_dir = args.environments_dir.clone().or_else(default_environments_dir);
    let environments_dir = match environments_dir {
        Some(d) => d,
        None => {
            tracing::warn!("no built-in runtimes found (environments/nodejs, environments/python); functions cannot run until --environments-dir is set");
            PathBuf::from("environments")
        }
    };
    let (found_node, found_python) = fission_executor::resolve_runtime_binaries();
    let node = args.node.clone().or(found_node).unwrap_or_else(|| PathBuf::from("/usr/bin/node"));
    let python = args.python.clone().or(found_python).unwrap_or_else(|| PathBuf::from("/usr/bin/python3"));

    let shutdown = CancellationToken::new();
    let grace = Duration::from_secs(args.grace_period);
    let mut registry = Registry::default();

    let run_dir = data.root().join("run");
    // Instance homes of a previous (crashed) run are stale: start clean.
    let _ = std::fs::remove_dir_all(&run_dir);
    let (launcher, environments_dir, sandbox) = instance_launcher(args.sandbox, &environments_dir, &run_dir)?;
    let executor_config = fission_executor::Config::new(environments_dir.clone(), data.cache(), node.clone(), python.clone());
    let executor = fission_executor::Executor::new(executor_config, store.clone(), archives.clone(), logs.clone(), launcher, &mut registry);

    let router_config = fission_router::Config { listen: router_addr, ..fission_router::Config::default() };
    let router = fission_router::Router::new(router_config, executor.clone(), &mut registry);
    let registry = Arc::new(Mutex::new(registry));
    let router = router.with_metrics_endpoint(move || {
        let mut text = String::new();
        let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        text
    });

    let controller_config = fission_controller::Config {
        router_url: format!("http://{router_addr}"),
        ..fission_controller::Config::default()
    };
    let mut builder_config = fission_builder::Config::new(data.root().join("builds"));
    builder_config.node_bin = node.clone();
    builder_config.runtime_python_bin = python.clone();
    let builder = fission_builder::BuildManager::new(builder_config, store.clone(), archives.clone(), logs.clone());
    let prune_archives = archives.clone();
    let controller = fission_controller::Controller::new(controller_config, store.clone(), archives, logs, shutdown.clone());

    let mut tasks = JoinSet::new();
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move { executor.run(shutdown).await.context("executor failed") });
    }
    {
        let (router, store, shutdown) = (router.clone(), store.clone(), shutdown.clone());
        tasks.spawn(async move { router.sync_routes(store, shutdown).await.context("route sync failed") });
    }
    {
        let (router, shutdown) = (router.clone(), shutdown.clone());
        tasks.spawn(async move { router.serve(router_listener, shutdown, grace).await.context("router failed") });
    }
    tasks.spawn(async move { controller.serve(controller_listener, grace).await.context("controller failed") });
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move { builder.run(shutdown).await.context("build manager failed") });
    }
    if args.store == StoreMode::Kubernetes {
        // kubectl changes secrets and config maps without the controller seeing it.
        let (store, shutdown) = (store.clone(), shutdown.clone());
        tasks.spawn(async move {
            fission_controller::follow_value_changes(store, shutdown).await;
            Ok(())
        });
    }
    {
        let (store, archives, shutdown) = (store.clone(), prune_archives, shutdown.clone());
        tasks.spawn(async move {
            prune_archives_periodically(store, archives, shutdown).await;
            Ok(())
        });
    }

    router.ready().await;
    tracing::info!(data_dir = %data.root().display(), environments = %environments_dir.display(), node = %node.display(), python = %python.display(), sandbox = ?args.sandbox, "fission server started");
    tracing::info!("controller listening on http://{controller_addr}");
    tracing::info!("router listening on http://{router_addr}");
    println!(
        "fission server ready in {} ms: controller http://{controller_addr} router http://{router_addr}",
        started.elapsed().as_millis()
    );

    let mut first_error = None;
    tokio::select! {
        _ = shutdown_signal() => {}
        Some(res) = tasks.join_next() => {
            // A component stopped on its own: that is a failure; take the others down too.
            match res {
                Ok(Err(e)) => first_error = Some(e),
                Err(e) => first_error = Some(anyhow::anyhow!("component panicked: {e}")),
                Ok(Ok(())) => first_error = Some(anyhow::anyhow!("a component stopped unexpectedly")),
            }
        }
    }
    shutdown.cancel();
    let drained = tokio::time::timeout(grace + Duration::from_secs(5), async {
        while let Some(res) = tasks.join_next().await {
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %format!("{e:#}"), "component stopped with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("components did not stop within the grace period");
    } else {
        tracing::info!("fission server stopped");
    }
    // The sandbox's run state (nft table, run lock) goes after every slot is gone, and with it
    // any copy of the runtimes made for it.
    if let Some(sb) = &sandbox {
        let copy = sb.config().state_dir.join(format!("environments-{}", sb.run_id()));
        if copy.exists() {
            let _ = std::fs::remove_dir_all(copy);
        }
    }
    drop(sandbox);
    drop(data);
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
