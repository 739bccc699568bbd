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

mod roles;

/// Flags of `fission server`.
#[derive(Debug, Args)]
#[command(
    after_help = "Every flag can also be set through the environment variable named in brackets.\n\
The server keeps all state (objects, archives, logs, unpacked packages) in --data-dir; \
only one server may use a data directory at a time.\n\
Each function instance and each source build runs in its own sandbox (--sandbox bwrap, the default; \
needs root, bubblewrap, iproute2 and nftables); --sandbox none runs them as plain processes with the \
server's privileges.\n\
On SIGTERM or SIGINT the server stops accepting, lets in-flight requests finish for up to \
--grace-period, then stops the function instances. Exit status: 0 after a clean stop, 1 when a \
component failed, 2 when the flags or the machine do not allow the server to start.\n\
Logging: RUST_LOG (e.g. RUST_LOG=debug or RUST_LOG=fission_router=debug,info)."
)]
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
    /// How function instances and builds are isolated. `bwrap`: each instance and each build
    /// step in its own sandbox (bubblewrap with user/pid/mount/ipc/uts/network namespaces, an
    /// unprivileged uid, seccomp, cgroup limits from the environment's --maxmemory/--maxcpu —
    /// builds without them get 1 GiB and one CPU — and NAT egress that never reaches this host;
    /// an environment can turn egress off for its instances with the annotation
    /// fission.io/egress=false); needs root, bubblewrap, iproute2 and nftables, and the server
    /// refuses to start without them. `none`: plain processes with the server's privileges —
    /// no isolation at all.
    #[arg(long, env = ENV_SANDBOX, value_enum, default_value_t = SandboxMode::Bwrap)]
    sandbox: SandboxMode,
    /// Python instances (with --sandbox bwrap) are forked from one pre-initialized interpreter
    /// (the loader and Flask imported, memory shared copy-on-write) and each child joins its own
    /// sandbox slot before it loads the function. `off`: every instance starts its own
    /// interpreter. If the zygote cannot start, instances start their own (logged).
    #[arg(long, env = "FISSION_PYTHON_ZYGOTE", value_enum, default_value_t = Toggle::On)]
    python_zygote: Toggle,
    /// Most function instances (warm and specialized) alive at once [default: memory / 48 MiB].
    /// Cold starts beyond it are refused with 503 and Retry-After.
    #[arg(long, env = ENV_MAX_INSTANCES, value_parser = clap::value_parser!(u32).range(1..))]
    max_instances: Option<u32>,
    /// Most specializations in progress at once [default: 2 per CPU]. Cold starts beyond it wait
    /// up to 10 s for a slot or a free instance of their function, then get 503 with Retry-After.
    #[arg(long, env = ENV_MAX_SPECIALIZATIONS, value_parser = clap::value_parser!(u32).range(1..))]
    max_specializations: Option<u32>,
    /// Where objects live. `embedded`: a database in --data-dir. `kubernetes`: a cluster's
    /// API server, as fission.io/v1 custom resources (apply deploy/crds/ first) and real
    /// Secrets and ConfigMaps; function instances still run on this machine.
    #[arg(long, env = ENV_STORE, value_enum, default_value_t = StoreMode::Embedded)]
    store: StoreMode,
    /// Kubeconfig for --store kubernetes and for KubernetesWatchTriggers [default: the pod's
    /// service account when run in a pod, else $KUBECONFIG or ~/.kube/config].
    #[arg(long, env = ENV_KUBECONFIG)]
    kubeconfig: Option<PathBuf>,
    /// PEM file of CA certificates trusted, besides the built-in web roots, when fetching
    /// http(s) package archives (`--deploy`/`--src https://…`).
    #[arg(long, env = fission_fetch::CA_CERT_ENV)]
    archive_ca_cert: Option<PathBuf>,
    #[command(flatten)]
    pods: crate::pods::PodArgs,
    /// The split-role flags (`--role` and the addresses the roles find each other at).
    #[command(flatten)]
    roles: roles::RoleArgs,
    /// Token every controller request must carry (`Authorization: Bearer`), except /healthz.
    /// Without it, a controller listening on anything but loopback uses the token in
    /// <data-dir>/auth-token (generated, mode 0600, on first start); on loopback it then
    /// requires none.
    #[arg(long, env = ENV_AUTH_TOKEN, hide_env_values = true)]
    auth_token: Option<String>,
    /// Serve the controller on a non-loopback address WITHOUT a token: anyone who reaches it
    /// can deploy and run code.
    #[arg(long, env = ENV_INSECURE_NO_AUTH, conflicts_with = "auth_token")]
    insecure_no_auth: bool,
    /// PEM certificate chain: the controller then speaks HTTPS only (needs --tls-key).
    #[arg(long, env = ENV_TLS_CERT, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = ENV_TLS_KEY, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the router's internal /fission-function/… routes on this address only (as
    /// Fission's router does on its internal port); the public router listener then answers
    /// 404 for them. Triggers and `fission fn test` use it. Keep it on loopback or a private
    /// network: like the routes themselves, it takes no token.
    #[arg(long, env = ENV_ROUTER_INTERNAL_LISTEN)]
    router_internal_listen: Option<SocketAddr>,
}

/// The token the controller requires, if any, and where it came from.
fn api_token(
    args: &ServerArgs,
    controller: SocketAddr,
    data: &DataDir,
) -> Result<Option<fission_controller::ApiToken>> {
    use fission_controller::ApiToken;
    if let Some(t) = &args.auth_token {
        let token = ApiToken::new(t, "given with --auth-token/FISSION_AUTH_TOKEN")?;
        tracing::info!("the controller requires the API token given with --auth-token");
        return Ok(Some(token));
    }
    if controller.ip().is_loopback() {
        return Ok(None);
    }
    if args.insecure_no_auth {
        tracing::warn!(
            %controller,
            "--insecure-no-auth: the controller listens beyond loopback WITHOUT a token; anyone who reaches it can deploy and run code"
        );
        return Ok(None);
    }
    let path = data.root().join("auth-token");
    let (token, generated) = ApiToken::load_or_generate(&path)?;
    println!(
        "API token {} {} (clients send it: export FISSION_AUTH_TOKEN=$(cat {}))",
        if generated {
            "generated in"
        } else {
            "read from"
        },
        path.display(),
        path.display()
    );
    Ok(Some(token))
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

/// `on` / `off` flag values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Toggle {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// The sandbox of a run and the runtimes prepared for it (both released at shutdown).
type SandboxRun = (fission_sandbox::Sandbox, fission_executor::PreparedRuntimes);

/// The launcher for `mode`: a sandboxing one, or plain processes.
fn instance_launcher(
    mode: SandboxMode,
    environments_dir: &Path,
    run_dir: &Path,
    python_zygote: Option<&Path>,
) -> Result<(
    Arc<dyn fission_executor::InstanceLauncher>,
    PathBuf,
    Option<SandboxRun>,
)> {
    match mode {
        SandboxMode::None => {
            tracing::warn!(
                "--sandbox none: function instances run as plain processes with this server's privileges; they are NOT isolated from each other or from this machine"
            );
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
            let (mut launcher, runtimes) =
                fission_executor::SandboxLauncher::with_runtimes(sandbox.clone(), environments_dir)
                    .with_context(|| {
                        format!(
                            "cannot make the runtimes in {} readable to sandboxed instances",
                            environments_dir.display()
                        )
                    })?;
            if let Some(python) = python_zygote {
                launcher = launcher.with_python_zygote(fission_executor::ZygoteConfig {
                    python: python.to_owned(),
                    script: runtimes.path().join("python/zygote.py"),
                });
            }
            tracing::info!(
                sandbox_run = sandbox.run_id(),
                "function instances run in sandboxes"
            );
            let envs = runtimes.path().to_owned();
            Ok((Arc::new(launcher), envs, Some((sandbox, runtimes))))
        }
    }
}

/// Where builds run: in slots of the instances' sandbox, or (`--sandbox none`) as plain
/// processes.
fn build_runner(sandbox: Option<&SandboxRun>) -> Arc<dyn fission_builder::BuildRunner> {
    match sandbox {
        Some((sandbox, _)) => Arc::new(fission_builder::SandboxRunner::new(
            sandbox.clone(),
            fission_builder::DEFAULT_BUILD_LIMITS,
        )),
        None => {
            tracing::warn!(
                "--sandbox none: source builds (npm, pip, build commands) run as plain processes with this server's privileges"
            );
            Arc::new(fission_builder::HostRunner)
        }
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("fission");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
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
    candidates
        .into_iter()
        .find(|c| c.join("nodejs/server.js").is_file() || c.join("python/server.py").is_file())
}

/// What logging holds until the process ends.
pub(crate) struct Logging {
    /// Flushes the queued log lines when dropped.
    _guard: tracing_appender::non_blocking::WorkerGuard,
    /// The OTLP exporter, flushed last.
    traces: Option<crate::otel::Tracing>,
}

impl Logging {
    /// Export the traces still buffered (bounded by the exporter's timeout, and by 5 s here).
    async fn flush_traces(&mut self) {
        if let Some(traces) = self.traces.take() {
            // Flushing waits for the exporter, which runs on this runtime: not on a worker.
            let flush = tokio::task::spawn_blocking(move || traces.shutdown());
            if tokio::time::timeout(Duration::from_secs(5), flush)
                .await
                .is_err()
            {
                tracing::warn!("the last traces were not exported within 5 s");
            }
        }
    }
}

/// What is logged without `RUST_LOG`: `info`, without the per-request access lines unless
/// Fission's `DISPLAY_ACCESS_LOG=true` asks for them (a line per request costs the warm path
/// ~40 µs and a quarter of the router's throughput on this class of machine: BENCHMARKS.md).
fn default_log_filter() -> &'static str {
    let access = std::env::var("DISPLAY_ACCESS_LOG")
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    if access {
        "info"
    } else {
        "info,fission_router::access=off"
    }
}

/// Logs to stderr (`RUST_LOG`) from a writer thread, so a request never waits on a slow
/// terminal or pipe (the access log writes a line per request; not lossy: past 128 k queued
/// lines, loggers wait); spans to OTLP when `OTEL_EXPORTER_OTLP_*` asks for it.
pub(crate) fn init_tracing() -> Result<Logging> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_log_filter()));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("fission-log")
        .finish(std::io::stderr());
    let log = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter);
    let (traces, exporter) = match crate::otel::layer()? {
        Some((layer, exporter)) => (Some(layer), Some(exporter)),
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(traces)
        .try_init();
    Ok(Logging {
        _guard: guard,
        traces: exporter,
    })
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
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

async fn prune_archives_periodically(
    store: Arc<dyn ResourceStore>,
    archives: ArchiveStore,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(ARCHIVE_PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match fission_store::prune::prune_unreferenced(
            store.as_ref(),
            &archives,
            ARCHIVE_PRUNE_MIN_AGE,
        )
        .await
        {
            Ok(r) if !r.removed.is_empty() => tracing::info!(
                removed = r.removed.len(),
                kept = r.kept,
                "pruned unreferenced archives"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "archive pruning failed"),
        }
    }
}

/// A component that stopped before shutdown was asked for: always a failure.
fn stopped_on_its_own(res: Result<Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match res {
        Ok(Err(e)) => e,
        Err(e) => anyhow::anyhow!("component panicked: {e}"),
        Ok(Ok(())) => anyhow::anyhow!("a component stopped unexpectedly"),
    }
}

/// The shutdown order: stop accepting → in-flight requests finish (up to `grace`) → instances
/// stopped, builds cancelled, followers stopped. A request in flight at SIGTERM therefore
/// still has its instance until it completes or the grace period ends.
async fn drain_and_stop(
    mut front: JoinSet<Result<()>>,
    mut back: JoinSet<Result<()>>,
    stop_accepting: &CancellationToken,
    stop_backends: &CancellationToken,
    grace: Duration,
) {
    stop_accepting.cancel();
    let drained =
        tokio::time::timeout(grace + Duration::from_secs(1), join_all_logged(&mut front)).await;
    if drained.is_err() {
        tracing::warn!("listeners did not stop within the grace period");
        front.abort_all();
    }
    stop_backends.cancel();
    // The executor waits up to 10 s for killed instances, the builder for killed builds.
    if tokio::time::timeout(Duration::from_secs(15), join_all_logged(&mut back))
        .await
        .is_err()
    {
        tracing::warn!("instances and builds did not stop in time");
        back.abort_all();
    } else if drained.is_ok() {
        tracing::info!("fission server stopped");
    }
}

async fn join_all_logged(set: &mut JoinSet<Result<()>>) {
    while let Some(res) = set.join_next().await {
        match res {
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "component stopped with an error")
            }
            Err(e) if e.is_panic() => tracing::warn!(error = %e, "component panicked"),
            _ => {}
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// It never became ready: the flags, the data directory or the machine do not allow it.
    #[error("{0:#}")]
    Start(anyhow::Error),
    /// A component failed while serving.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

/// A started server: what `serve_until_signal` needs to run and to stop in order.
struct Running {
    front: JoinSet<Result<()>>,
    back: JoinSet<Result<()>>,
    stop_accepting: CancellationToken,
    stop_backends: CancellationToken,
    grace: Duration,
    sandbox: Option<SandboxRun>,
    store: Arc<dyn ResourceStore>,
    data: DataDir,
}

/// Run the server until a signal arrives.
pub async fn run(args: ServerArgs) -> Result<(), ServerError> {
    let mut logging = init_tracing().map_err(ServerError::Start)?;
    let running = start(args).await.map_err(ServerError::Start)?;
    let result = running
        .serve_until_signal()
        .await
        .map_err(ServerError::Failed);
    logging.flush_traces().await;
    result
}

/// Open the data directory, bind the listeners and start every component.
async fn start(args: ServerArgs) -> Result<Running> {
    if args.roles.role != roles::Role::All {
        return roles::start(args).await;
    }
    let started = tokio::time::Instant::now();
    let data_dir_path = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let data = DataDir::open(&data_dir_path)?;
    if args.pods.instances == crate::pods::InstancesMode::Pods
        && args.store != StoreMode::Kubernetes
    {
        anyhow::bail!(
            "--instances pods needs --store kubernetes (pods run in the store's cluster)"
        );
    }
    let mut kube_client = None;
    let store: Arc<dyn ResourceStore> = match args.store {
        StoreMode::Embedded => {
            let cipher = SecretCipher::load_or_create(&data.secret_key())?;
            let store =
                RedbStore::open_with_cipher(&data.database(), Some(cipher)).with_context(|| {
                    format!(
                        "cannot open the object database in {}",
                        data.root().display()
                    )
                })?;
            Arc::new(store)
        }
        StoreMode::Kubernetes => {
            let store = fission_store_kube::KubeStore::connect(args.kubeconfig.as_deref()).await?;
            store.check_ready().await?;
            kube_client = Some(store.client().clone());
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
        .with_context(|| {
            format!(
                "cannot listen on {} (router); use --router-listen",
                args.router_listen
            )
        })?;
    let router_internal_listener = match args.router_internal_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} (router internal routes); use --router-internal-listen"
            )
        })?),
        None => None,
    };
    let controller_addr = controller_listener.local_addr()?;
    let router_addr = router_listener.local_addr()?;
    let router_internal_addr = match &router_internal_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    if router_internal_addr.is_some_and(|a| !a.ip().is_loopback()) {
        tracing::warn!(
            "--router-internal-listen is not on loopback: anyone who reaches it can call every function by name"
        );
    }
    // What calls functions by their internal routes (triggers, `fn test`) goes here.
    let internal_router_addr = router_internal_addr.unwrap_or(router_addr);
    let token = api_token(&args, controller_addr, &data)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(fission_controller::TlsConfig::from_pem_files(cert, key)?),
        _ => None,
    };
    let controller_scheme = if tls.is_some() { "https" } else { "http" };
    if tls.is_none() && token.is_some() && !controller_addr.ip().is_loopback() {
        tracing::warn!(
            %controller_addr,
            "the controller serves plain http beyond loopback: the API token and every object cross the network readable; use --tls-cert/--tls-key or a tunnel"
        );
    }

    let environments_dir = args
        .environments_dir
        .clone()
        .or_else(default_environments_dir);
    let environments_dir = match environments_dir {
        Some(d) => d,
        None => {
            tracing::warn!(
                "no built-in runtimes found (environments/nodejs, environments/python); functions cannot run until --environments-dir is set"
            );
            PathBuf::from("environments")
        }
    };
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

    // Two phases (see `drain_and_stop`): the listeners stop first and drain; only then do the
    // executor (which kills instances), the builder and the store followers stop.
    let stop_accepting = CancellationToken::new();
    let stop_backends = CancellationToken::new();
    let grace = Duration::from_secs(args.grace_period);
    let mut registry = Registry::default();

    let run_dir = data.root().join("run");
    // Instance homes of a previous (crashed) run are stale: start clean.
    let _ = std::fs::remove_dir_all(&run_dir);
    let (launcher, environments_dir, sandbox) = instance_launcher(
        args.sandbox,
        &environments_dir,
        &run_dir,
        (args.python_zygote == Toggle::On).then_some(python.as_path()),
    )?;
    let mut executor_config = fission_executor::Config::new(
        environments_dir.clone(),
        data.cache(),
        node.clone(),
        python.clone(),
    );
    // Instance ids name instances in `fission fn logs`; a restarted server must not reuse the
    // ids of the previous run's lines. Milliseconds since the epoch at start are above any id
    // an earlier run reached (it would have had to start more than one instance a millisecond).
    if let Some(n) = args.max_instances {
        executor_config.admission.max_instances = n as usize;
    }
    let archive_fetch = fission_fetch::FetchConfig {
        extra_ca_cert: args.archive_ca_cert.clone(),
        ..fission_fetch::FetchConfig::default()
    };
    // A bad CA file is a configuration error: refuse to start rather than fail every fetch.
    // Its message already names the cause: no context chain, which would repeat it.
    fission_fetch::Fetcher::new(&archive_fetch, None)
        .map_err(|e| anyhow::anyhow!("--archive-ca-cert: {e}"))?;
    executor_config.local.archive_fetch = archive_fetch.clone();
    if let Some(n) = args.max_specializations {
        executor_config.admission.max_specializations = n as usize;
    }
    tracing::info!(
        max_instances = executor_config.admission.max_instances,
        max_specializations = executor_config.admission.max_specializations,
        "admission limits"
    );
    executor_config.first_instance_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2));
    let mut builder_pods = None;
    let executor = match (args.pods.instances, kube_client) {
        (crate::pods::InstancesMode::Pods, Some(client)) => {
            // The fetchers must present the controller's token when it requires one: the
            // one given, or the one generated in the data directory.
            let raw_token = match (&token, &args.auth_token) {
                (None, _) => None,
                (Some(_), Some(t)) => Some(t.clone()),
                (Some(_), None) => Some(
                    std::fs::read_to_string(data.root().join("auth-token"))
                        .context("cannot read the generated API token for the fetchers")?
                        .trim()
                        .to_owned(),
                ),
            };
            builder_pods = Some(crate::pods::builder_pods(
                &args.pods,
                raw_token.is_some(),
                client.clone(),
                controller_addr,
            )?);
            crate::pods::executor(
                &args.pods,
                raw_token,
                client,
                controller_addr,
                executor_config,
                store.clone(),
                Arc::new(logs.clone()),
                &mut registry,
            )
            .await?
        }
        _ => crate::pods::AnyExecutor::of(fission_executor::Executor::new(
            executor_config,
            store.clone(),
            archives.clone(),
            logs.clone(),
            launcher,
            &mut registry,
        )),
    };

    // Triggers call functions through the router's internal routes, as Fission's do.
    let triggers = fission_triggers::Triggers::new(
        &format!("http://{internal_router_addr}"),
        store.clone(),
        Some(Arc::new(logs.clone())),
        &mut registry,
    )
    // Watch triggers watch the cluster this names (else kube's inference: the pod's service
    // account or $KUBECONFIG).
    .with_kube(fission_triggers::KubeSource {
        kubeconfig: args.kubeconfig.clone(),
    })
    .with_async_jobs(
        &data.root().join("async.redb"),
        fission_triggers::AsyncConfig::default(),
    )?;
    let router_config = fission_router::Config {
        listen: router_addr,
        ..fission_router::Config::default()
    };
    let mut router =
        fission_router::Router::new(router_config, executor.instances.clone(), &mut registry);
    if let Some(queue) = triggers.async_calls() {
        router = router.with_async_calls(queue);
    }
    let registry = Arc::new(Mutex::new(registry));
    // One registry, served by both the router and the controller (one process, one scrape).
    let render_metrics = move || {
        let mut text = String::new();
        let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        text
    };
    let router = router.with_metrics_endpoint(render_metrics.clone());

    let controller_config = fission_controller::Config {
        router_url: format!("http://{internal_router_addr}"),
        ..fission_controller::Config::default()
    };
    let mut builder_config = fission_builder::Config::new(data.root().join("builds"));
    builder_config.node_bin = node.clone();
    builder_config.runtime_python_bin = python.clone();
    builder_config.archive_fetch = archive_fetch;
    builder_config.runner = build_runner(sandbox.as_ref());
    // With pods, environments with a builder image build in their builder pods (Fission's
    // buildermgr); the rest (custom commands without a builder image) still build here.
    builder_config.remote = builder_pods
        .clone()
        .map(|b| b as Arc<dyn fission_builder::RemoteBuilds>);
    let builder = fission_builder::BuildManager::new(
        builder_config,
        store.clone(),
        archives.clone(),
        logs.clone(),
    );
    let prune_archives = archives.clone();
    let controller = fission_controller::Controller::new(
        controller_config,
        store.clone(),
        archives,
        logs,
        stop_accepting.clone(),
    )
    .with_metrics_endpoint(render_metrics)
    .with_instance_report(executor.report.clone())
    .with_call_stats(router.call_stats())
    .with_routes(triggers.api_routes());
    let controller = match token {
        Some(token) => controller.with_auth_token(token),
        None => controller,
    };
    let controller = match tls {
        Some(tls) => controller.with_tls(tls),
        None => controller,
    };
    // Functions no longer called give their last hour's buckets back.
    tokio::spawn({
        let (stats, shutdown) = (router.call_stats(), stop_accepting.clone());
        async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            while shutdown.run_until_cancelled(every.tick()).await.is_some() {
                stats.expire(fission_core::stats::unix_now());
            }
        }
    });

    // Listeners: stop first, drain in-flight requests.
    let mut front = JoinSet::new();
    {
        let (router, shutdown) = (router.clone(), stop_accepting.clone());
        let routes = if router_internal_listener.is_some() {
            fission_router::Routes::Public
        } else {
            fission_router::Routes::All
        };
        front.spawn(async move {
            router
                .serve_routes(router_listener, shutdown, grace, routes)
                .await
                .context("router failed")
        });
    }
    if let Some(listener) = router_internal_listener {
        let (router, shutdown) = (router.clone(), stop_accepting.clone());
        front.spawn(async move {
            router
                .serve(listener, shutdown, grace)
                .await
                .context("router (internal routes) failed")
        });
    }
    front.spawn(async move {
        controller
            .serve(controller_listener, grace)
            .await
            .context("controller failed")
    });
    // What the listeners need while they drain: instances, routes, builds.
    let mut back = JoinSet::new();
    {
        let shutdown = stop_backends.clone();
        back.spawn(async move { (executor.run)(shutdown).await.context("executor failed") });
    }
    {
        let (router, store, shutdown) = (router.clone(), store.clone(), stop_backends.clone());
        back.spawn(async move {
            router
                .sync_routes(store, shutdown)
                .await
                .context("route sync failed")
        });
    }
    {
        let shutdown = stop_backends.clone();
        back.spawn(async move { builder.run(shutdown).await.context("build manager failed") });
    }
    if let Some(pods) = builder_pods {
        let (store, shutdown) = (store.clone(), stop_backends.clone());
        back.spawn(async move {
            pods.run(store, shutdown).await;
            Ok(())
        });
    }
    if args.store == StoreMode::Kubernetes {
        // kubectl changes secrets and config maps without the controller seeing it.
        let (store, shutdown) = (store.clone(), stop_backends.clone());
        back.spawn(async move {
            fission_controller::follow_value_changes(store, shutdown).await;
            Ok(())
        });
    }
    {
        let (store, calls, shutdown) = (
            store.clone(),
            Arc::new(router.clone()),
            stop_backends.clone(),
        );
        back.spawn(async move {
            fission_controller::canary::run(store, calls, shutdown).await;
            Ok(())
        });
    }
    {
        let shutdown = stop_backends.clone();
        back.spawn(async move { triggers.run(shutdown).await.context("triggers failed") });
    }
    {
        let (store, archives, shutdown) = (store.clone(), prune_archives, stop_backends.clone());
        back.spawn(async move {
            prune_archives_periodically(store, archives, shutdown).await;
            Ok(())
        });
    }

    router.ready().await;
    tracing::info!(data_dir = %data.root().display(), environments = %environments_dir.display(), node = %node.display(), python = %python.display(), sandbox = ?args.sandbox, "fission server started");
    tracing::info!("controller listening on {controller_scheme}://{controller_addr}");
    tracing::info!("router listening on http://{router_addr}");
    if let Some(addr) = router_internal_addr {
        tracing::info!("router internal routes on http://{addr}");
    }
    println!(
        "fission server ready in {} ms: controller {controller_scheme}://{controller_addr} router http://{router_addr}",
        started.elapsed().as_millis()
    );
    println!("dashboard: {controller_scheme}://{controller_addr}/ui");

    Ok(Running {
        front,
        back,
        stop_accepting,
        stop_backends,
        grace,
        sandbox,
        store,
        data,
    })
}

impl Running {
    async fn serve_until_signal(self) -> Result<()> {
        let Self {
            mut front,
            mut back,
            stop_accepting,
            stop_backends,
            grace,
            sandbox,
            store,
            data,
        } = self;
        let mut first_error = None;
        tokio::select! {
            _ = shutdown_signal() => {}
            Some(res) = front.join_next() => first_error = Some(stopped_on_its_own(res)),
            Some(res) = back.join_next() => first_error = Some(stopped_on_its_own(res)),
        }
        drain_and_stop(front, back, &stop_accepting, &stop_backends, grace).await;
        // The sandbox's run state (nft table, run lock) goes after every slot is gone, and with
        // it any copy of the runtimes made for it; the store closes last.
        drop(sandbox);
        drop(store);
        drop(data);
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
