//! The executor: Fission's *poolmgr* for local processes.
//!
//! For every Environment it keeps a warm pool of generic runtime instances (node or python
//! processes that have loaded their server and hold a listening socket but no user code). When
//! the router asks for an instance of a function ([`FunctionInstances::acquire`]):
//!
//! 1. **Warm path.** A specialized instance of exactly that function version (uid +
//!    resourceVersion) with fewer than `requestsPerPod` active requests is leased: one mutex, one
//!    map lookup, one counter. No I/O and no RPC.
//! 2. **Cold path.** Below the function's `concurrency`, a generic instance is taken from the
//!    pool (or started if the pool is empty), the package's deployment is unpacked once into
//!    the package cache (already done in the background when the function was created or
//!    updated), the instance's output is re-targeted to the function's log, and the runtime is
//!    told to load the code (Fission's `/v2/specialize` load request; the connection for it is
//!    opened while the code is linked into place, so the runtime wakes up meanwhile). The pool
//!    is refilled in the background, off the request path, and grows for a while after cold
//!    starts that found it empty (see `pool.rs`).
//! 3. **At concurrency.** The request waits (up to the function's `functionTimeout`) for a
//!    lease to end or a specialization to finish. A burst of N first calls with
//!    `requestsPerPod` 1 starts exactly min(N, concurrency) specializations — Fission's poolmgr
//!    overshoots here (fission/fission#1939, #2452) because its in-flight accounting is racy.
//!
//! Leases end when dropped (the slot frees and the idle clock restarts); a lease marked broken
//! kills its instance. Instances of superseded function or environment versions take no new
//! leases and are killed once idle, so no call acquired after an update reaches old code. The
//! reaper stops instances idle past `idletimeout` (keeping `retainPods`). An instance whose
//! process exits is forgotten at once and its pool refilled.
//!
//! Process management sits behind [`InstanceLauncher`] so a sandboxing launcher can replace
//! [`ProcessLauncher`] without touching the pool logic.
//!
//! Choices worth knowing:
//! * Generic instances log under the environment: namespace of the environment, function name
//!   `env:<environment name>`; from specialization on, lines go to the function's log.
//! * `newdeploy` functions are served like `poolmgr` ones (there is no Deployment to create
//!   here); `container` functions are refused as unsupported.
//! * An environment update replaces the pool only when its `spec` changed (label-only edits
//!   keep the warm instances).
//! * Instances are stopped with SIGKILL to their whole process group: they hold no state worth
//!   a graceful exit, and only idle or broken instances are ever stopped.
#![deny(missing_docs)]

mod instances;
mod launcher;
mod metrics;
mod package;
mod pool;
mod reaper;
mod sandboxed;
mod specialize;
mod sys;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use fission_core::resources::{executor_type, Environment, Function, Package};
use fission_core::runtime::{builtin_runtime, unsupported_image_message, BuiltinRuntime};
use fission_core::{
    AnyResource, ExecutorError, FunctionInstances, InstanceLease, ResourceKind, ResourceStore, StoreError,
    WatchEvent, WatchEventType,
};
use fission_store::archive::ArchiveStore;
use fission_store::logs::LogStore;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::instances::{Decision, FunctionTable, Ticket};
use crate::metrics::{Metrics, SpecializationLabels};
use crate::package::{PackageCache, UnpackLimits};
use crate::pool::{GenericInstance, LaunchTemplate, Pool};
use crate::specialize::{LoadRequest, SpecializeError};

pub use crate::launcher::{
    InstanceLimits, resolve_runtime_binaries, wait_exit, CodeSlot, DiscardLines, ExitReport, InstanceLauncher, LaunchError,
    LaunchSpec, LineSink, LogSink, OutputStream, ProcessLauncher, RuntimeInstance,
};
pub use crate::package::{PackageError, UnpackError};
pub use crate::sandboxed::SandboxLauncher;

/// How long shutdown waits for instances to exit after SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Executor settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the runtimes live (`<dir>/nodejs/server.js`, `<dir>/python/server.py`).
    pub environments_dir: PathBuf,
    /// Unpacked deployments, `<dir>/<ns>/<package>/<resourceVersion>/deployarchive`.
    pub cache_dir: PathBuf,
    /// Absolute path of the node interpreter (see [`resolve_runtime_binaries`]).
    pub node_bin: PathBuf,
    /// Absolute path of the python interpreter (never a pyenv shim).
    pub python_bin: PathBuf,
    /// How often idle instances are looked for (Fission: 5 s).
    pub reaper_interval: Duration,
    /// How long a runtime may take to answer the specialize request.
    pub specialize_timeout: Duration,
    /// How long starting one instance may take (the launcher's `launch`).
    pub instance_start_timeout: Duration,
}

impl Config {
    /// Settings with the default timings: reaper every 5 s, specialization 30 s, start 10 s.
    pub fn new(environments_dir: PathBuf, cache_dir: PathBuf, node_bin: PathBuf, python_bin: PathBuf) -> Self {
        Self {
            environments_dir,
            cache_dir,
            node_bin,
            python_bin,
            reaper_interval: Duration::from_secs(5),
            specialize_timeout: Duration::from_secs(30),
            instance_start_timeout: Duration::from_secs(10),
        }
    }
}

/// Why [`Executor::run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be listed at startup.
    #[error("executor cannot read the resource store: {0}")]
    Store(#[from] StoreError),
}

/// `(namespace, name)` of an environment.
type EnvKey = (String, String);

#[derive(Default)]
struct LiveSet {
    instances: HashMap<u64, Arc<dyn RuntimeInstance>>,
    closed: bool,
}

/// The pool manager. Create with [`Executor::new`], drive with [`Executor::run`], and hand it
/// to the router as [`FunctionInstances`].
pub struct Executor {
    me: Weak<Executor>,
    config: Config,
    store: Arc<dyn ResourceStore>,
    logs: LogStore,
    launcher: Arc<dyn InstanceLauncher>,
    packages: PackageCache,
    metrics: Metrics,
    table: Arc<FunctionTable>,
    pools: Mutex<HashMap<EnvKey, Arc<Pool>>>,
    /// Every instance started and not yet exited (so shutdown leaves no orphans).
    live: Mutex<LiveSet>,
    next_instance: AtomicU64,
    next_pool: AtomicU64,
    stopping: CancellationToken,
    tasks: TaskTracker,
    /// One deployment prefetch at a time (see [`Executor::prefetch`]).
    prefetching: tokio::sync::Semaphore,
}

impl Executor {
    /// An executor; nothing starts until [`run`](Self::run) (or a first `acquire`).
    pub fn new(
        config: Config,
        store: Arc<dyn ResourceStore>,
        archives: ArchiveStore,
        logs: LogStore,
        launcher: Arc<dyn InstanceLauncher>,
        metrics: &mut prometheus_client::registry::Registry,
    ) -> Arc<Self> {
        let metrics = Metrics::new(metrics);
        Self::with_metrics(config, store, archives, logs, launcher, metrics, UnpackLimits::default())
    }

    fn with_metrics(
        config: Config,
        store: Arc<dyn ResourceStore>,
        archives: ArchiveStore,
        logs: LogStore,
        launcher: Arc<dyn InstanceLauncher>,
        metrics: Metrics,
        limits: UnpackLimits,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            packages: PackageCache::new(config.cache_dir.clone(), archives, limits),
            config,
            store,
            logs,
            launcher,
            table: FunctionTable::new(metrics.clone()),
            metrics,
            pools: Mutex::new(HashMap::new()),
            live: Mutex::new(LiveSet::default()),
            // Ids start at 1 (0 reads as "none" in logs).
            next_instance: AtomicU64::new(1),
            next_pool: AtomicU64::new(1),
            stopping: CancellationToken::new(),
            tasks: TaskTracker::new(),
            prefetching: tokio::sync::Semaphore::new(1),
        })
    }

    /// Follow the store's change feed (creating, replacing and removing pools; retiring
    /// instances of changed or deleted functions), reap idle instances, and on `shutdown` stop
    /// every instance and wait for them to exit.
    ///
    /// Fails only if the store cannot be listed at startup; later feed errors relist.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), Error> {
        self.tasks.spawn(reaper::run(self.clone()));
        let result = self.follow_store(&shutdown).await;
        self.stop().await;
        result
    }

    async fn follow_store(&self, shutdown: &CancellationToken) -> Result<(), Error> {
        let mut first = true;
        let mut backoff = Duration::from_millis(100);
        loop {
            let listed = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                r = self.store.list_and_watch() => r,
            };
            let (objects, _revision, mut feed) = match listed {
                Ok(l) => l,
                Err(e) if first => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the store; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            first = false;
            backoff = Duration::from_millis(100);
            self.reconcile(objects);
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    n = feed.next() => n,
                };
                match next {
                    Some(Ok(event)) => self.apply(event),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "change feed failed; relisting");
                        break;
                    }
                    None => {
                        tracing::warn!("change feed ended; relisting");
                        break;
                    }
                }
            }
        }
    }

    /// Bring pools and function versions in line with a full listing.
    fn reconcile(&self, objects: Vec<AnyResource>) {
        let mut envs = HashMap::new();
        let mut functions = HashMap::new();
        for obj in objects {
            match obj {
                AnyResource::Environment(e) => {
                    envs.insert((e.metadata.namespace.clone(), e.metadata.name.clone()), e);
                }
                AnyResource::Function(f) => {
                    functions.insert(f.metadata.uid.clone(), f.metadata.resource_version.clone());
                }
                _ => {}
            }
        }
        let gone: Vec<EnvKey> = self.lock_pools().keys().filter(|k| !envs.contains_key(*k)).cloned().collect();
        for key in gone {
            self.remove_pool(&key);
        }
        for env in envs.into_values() {
            if let Err(e) = self.install_env(env) {
                tracing::debug!(error = %e, "environment has no pool");
            }
        }
        self.table.reconcile(&functions);
    }

    fn apply(&self, event: WatchEvent) {
        match (event.event_type, event.object) {
            (WatchEventType::Deleted, AnyResource::Environment(e)) => {
                self.remove_pool(&(e.metadata.namespace.clone(), e.metadata.name.clone()));
            }
            (_, AnyResource::Environment(e)) => {
                if let Err(err) = self.install_env(e) {
                    tracing::debug!(error = %err, "environment has no pool");
                }
            }
            (WatchEventType::Deleted, AnyResource::Function(f)) => self.table.function_changed(&f.metadata.uid, None),
            (_, AnyResource::Function(f)) => {
                self.table.function_changed(&f.metadata.uid, Some(&f.metadata.resource_version));
                if let Some(me) = self.me.upgrade() {
                    self.tasks.spawn(me.prefetch(f));
                }
            }
            _ => {}
        }
    }

    /// Unpack a created or updated function's deployment into the package cache now, so that
    /// its first call finds it there (~0.5 ms less on a cold start; more for archives). One at
    /// a time, in the background; failures are left for the first call to report.
    async fn prefetch(self: Arc<Self>, function: Function) {
        let _one_at_a_time = tokio::select! {
            p = self.prefetching.acquire() => p,
            () = self.stopping.cancelled() => return,
        };
        let env_ref = &function.spec.environment;
        let ns = if env_ref.namespace.is_empty() { &function.metadata.namespace } else { &env_ref.namespace };
        // The cache path depends on the environment's keeparchive; without a pool there is
        // nothing to start soon anyway.
        let Some(keep_archive) = self.lock_pools().get(&(ns.clone(), env_ref.name.clone())).map(|p| p.env.spec.keeparchive)
        else {
            return;
        };
        let result = match self.package_of(&function).await {
            Ok(package) => self.packages.deployment(&package, keep_archive).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = result {
            tracing::debug!(function = %function.metadata.name, %error, "deployment not prefetched");
        }
    }

    fn lock_pools(&self) -> MutexGuard<'_, HashMap<EnvKey, Arc<Pool>>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_live(&self) -> MutexGuard<'_, LiveSet> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How to start instances of `env`, or why it cannot run here.
    fn launch_template(&self, env: &Environment) -> Result<(BuiltinRuntime, LaunchTemplate), ExecutorError> {
        let image = &env.spec.runtime.image;
        let runtime = builtin_runtime(image).ok_or_else(|| ExecutorError::Unsupported(unsupported_image_message(image)))?;
        let dir = self.config.environments_dir.join(runtime.dir_name());
        let (program, args) = match runtime {
            BuiltinRuntime::NodeJs => (self.config.node_bin.clone(), vec![dir.join("server.js").into_os_string()]),
            BuiltinRuntime::Python => (
                self.config.python_bin.clone(),
                vec!["-I".into(), "-S".into(), dir.join("server.py").into_os_string()],
            ),
        };
        let Some(script) = args.last().map(PathBuf::from) else {
            return Err(ExecutorError::Internal("no runtime script".to_owned()));
        };
        if !script.is_file() {
            return Err(ExecutorError::Unsupported(format!(
                "the {} runtime is not installed: {} is missing",
                runtime.dir_name(),
                script.display()
            )));
        }
        if !program.is_file() {
            return Err(ExecutorError::Unsupported(format!(
                "the {} runtime cannot start: interpreter {} not found",
                runtime.dir_name(),
                program.display()
            )));
        }
        Ok((runtime, LaunchTemplate { program, args, env: container_env(env), limits: instance_limits(env) }))
    }

    /// Make `env` the current version of its environment: keep the pool if the spec is the
    /// same, else replace it (the old pool's generic instances are stopped and its specialized
    /// ones retire once idle).
    fn install_env(&self, env: Environment) -> Result<Arc<Pool>, ExecutorError> {
        let key = (env.metadata.namespace.clone(), env.metadata.name.clone());
        let (runtime, template) = match self.launch_template(&env) {
            Ok(t) => t,
            Err(e) => {
                self.remove_pool(&key);
                return Err(e);
            }
        };
        let (pool, replaced) = {
            let mut pools = self.lock_pools();
            if let Some(existing) = pools.get(&key) {
                let newer = env.metadata.resource_version_number() > existing.env.metadata.resource_version_number();
                if existing.env.spec == env.spec || !newer {
                    return Ok(existing.clone());
                }
            }
            let id = self.next_pool.fetch_add(1, Ordering::Relaxed);
            let pool = Arc::new(Pool::new(id, env, runtime, template, self.metrics.clone()));
            let replaced = pools.insert(key, pool.clone());
            (pool, replaced)
        };
        if let Some(old) = replaced {
            self.close_pool(&old);
        }
        tracing::info!(
            environment = %format!("{}/{}", pool.env.metadata.namespace, pool.env.metadata.name),
            resource_version = %pool.env.metadata.resource_version,
            poolsize = pool.target,
            "warm pool created"
        );
        if let Some(me) = self.me.upgrade() {
            self.tasks.spawn(me.refill(pool.clone()));
        }
        Ok(pool)
    }

    fn remove_pool(&self, key: &EnvKey) {
        let removed = self.lock_pools().remove(key);
        if let Some(pool) = removed {
            self.close_pool(&pool);
        }
    }

    fn close_pool(&self, pool: &Pool) {
        for g in pool.close() {
            g.instance.kill();
        }
        self.table.retire_pool(pool.id);
    }

    /// Keep `pool` at its target size until it closes.
    async fn refill(self: Arc<Self>, pool: Arc<Pool>) {
        loop {
            if pool.is_closed() || self.stopping.is_cancelled() {
                return;
            }
            let (deficit, below_poolsize) = pool.deficit();
            if deficit == 0 {
                // Full: sleep until an instance is taken or dies, or a demand boost expires.
                let expiry = pool.boost_expiry();
                tokio::select! {
                    () = pool.wake.notified() => {}
                    () = sleep_until_some(expiry) => {
                        for g in pool.expire_boost(tokio::time::Instant::now()) {
                            g.instance.kill();
                        }
                    }
                    () = self.stopping.cancelled() => return,
                }
                continue;
            }
            if below_poolsize == 0 {
                tokio::select! {
                    () = tokio::time::sleep(pool::BOOST_SPACING) => {}
                    () = self.stopping.cancelled() => return,
                }
                if pool.is_closed() || pool.deficit().0 == 0 {
                    continue;
                }
            }
            let pause = pool.backoff();
            if !pause.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = self.stopping.cancelled() => return,
                }
                if pool.is_closed() {
                    return;
                }
            }
            match self.launch(&pool).await {
                Ok(generic) => {
                    if let Err(g) = pool.put(generic) {
                        g.instance.kill();
                    }
                }
                Err(e) => {
                    pool.note_failure();
                    tracing::warn!(
                        environment = %pool.env.metadata.name,
                        error = %e,
                        "cannot start a generic instance"
                    );
                }
            }
        }
    }

    /// Start one generic instance of `pool`'s environment and watch for its exit.
    async fn launch(&self, pool: &Arc<Pool>) -> Result<GenericInstance, ExecutorError> {
        if self.stopping.is_cancelled() {
            return Err(ExecutorError::ShuttingDown);
        }
        let id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let env_meta = &pool.env.metadata;
        let log = LogSink::new(Arc::new(self.logs.writer(
            &env_meta.namespace,
            &format!("env:{}", env_meta.name),
            id,
        )));
        let spec = LaunchSpec {
            instance_id: id,
            program: pool.template.program.clone(),
            args: pool.template.args.clone(),
            env: pool.template.env.clone(),
            log: log.clone(),
            limits: pool.template.limits.clone(),
        };
        let launched = tokio::time::timeout(self.config.instance_start_timeout, self.launcher.launch(spec)).await;
        let instance = match launched {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => {
                return Err(ExecutorError::Internal(format!("cannot start a {} instance: {e}", pool.runtime.dir_name())));
            }
            Err(_) => {
                return Err(ExecutorError::Internal(format!(
                    "starting a {} instance took longer than {:?}",
                    pool.runtime.dir_name(),
                    self.config.instance_start_timeout
                )));
            }
        };
        {
            let mut live = self.lock_live();
            if live.closed {
                drop(live);
                instance.kill();
                return Err(ExecutorError::ShuttingDown);
            }
            live.instances.insert(id, instance.clone());
        }
        tracing::debug!(instance = id, pid = ?instance.pid(), addr = %instance.addr(), environment = %env_meta.name, "instance started");
        if let Some(me) = self.me.upgrade() {
            let watched = instance.clone();
            let pool = pool.clone();
            let log = log.clone();
            self.tasks.spawn(async move {
                let report = wait_exit(&*watched).await;
                me.on_exit(watched.id(), &pool, &report, &log);
            });
        }
        Ok(GenericInstance { instance, log })
    }

    fn on_exit(&self, id: u64, pool: &Pool, report: &ExitReport, log: &LogSink) {
        self.lock_live().instances.remove(&id);
        let was_ready = pool.remove(id);
        self.table.remove_instance(id);
        if report.killed {
            tracing::debug!(instance = id, "instance stopped");
        } else if was_ready {
            tracing::warn!(
                instance = id,
                environment = %pool.env.metadata.name,
                status = %report,
                output = %log.recent_output(),
                "generic instance exited on its own"
            );
        } else {
            tracing::info!(instance = id, status = %report, "instance exited");
        }
    }

    /// The pool of `function`'s environment, creating it from the store if the change feed has
    /// not delivered the environment yet.
    async fn pool_for(&self, function: &Function) -> Result<Arc<Pool>, ExecutorError> {
        let env_ref = &function.spec.environment;
        let ns = if env_ref.namespace.is_empty() { &function.metadata.namespace } else { &env_ref.namespace };
        let key = (ns.clone(), env_ref.name.clone());
        if let Some(pool) = self.lock_pools().get(&key) {
            return Ok(pool.clone());
        }
        match self.store.get(ResourceKind::Environment, ns, &env_ref.name).await {
            Ok(AnyResource::Environment(env)) => self.install_env(env),
            Ok(_) => Err(ExecutorError::Internal("store returned another kind".to_owned())),
            Err(StoreError::NotFound { .. }) => Err(ExecutorError::NotFound(format!(
                "environment '{}/{}' of function '{}' not found",
                ns, env_ref.name, function.metadata.name
            ))),
            Err(e) => Err(ExecutorError::Internal(e.to_string())),
        }
    }

    async fn package_of(&self, function: &Function) -> Result<Package, ExecutorError> {
        let r = &function.spec.package.packageref;
        let ns = if r.namespace.is_empty() { &function.metadata.namespace } else { &r.namespace };
        match self.store.get(ResourceKind::Package, ns, &r.name).await {
            Ok(AnyResource::Package(p)) => Ok(p),
            Ok(_) => Err(ExecutorError::Internal("store returned another kind".to_owned())),
            Err(StoreError::NotFound { .. }) => Err(ExecutorError::NotFound(format!(
                "package '{}/{}' of function '{}' not found",
                ns, r.name, function.metadata.name
            ))),
            Err(e) => Err(ExecutorError::Internal(e.to_string())),
        }
    }

    /// A generic instance: from the pool if one is ready, else started now (a miss, which
    /// grows the pool for the next burst).
    async fn take_generic(&self, pool: &Arc<Pool>) -> Result<GenericInstance, ExecutorError> {
        loop {
            match pool.take() {
                // Skip instances that died since they were pooled (their exit is being processed).
                Some(g) if g.instance.exit_watch().borrow().is_some() => continue,
                Some(g) => return Ok(g),
                None => {
                    pool.note_miss();
                    return self.launch(pool).await;
                }
            }
        }
    }

    /// The cold path: specialize a new instance for `function` and lease it.
    async fn specialize_new(self: Arc<Self>, function: Function, ticket: Ticket) -> Result<InstanceLease, ExecutorError> {
        let name = format!("{}/{}", function.metadata.namespace, function.metadata.name);
        let failed = |message: String| ExecutorError::SpecializationFailed { function: name.clone(), message };

        // Phase boundaries for the debug line below (where a cold start's time goes).
        let t_begin = tokio::time::Instant::now();
        let pool = self.pool_for(&function).await?;
        let package = self.package_of(&function).await?;
        let code = self
            .packages
            .deployment(&package, pool.env.spec.keeparchive)
            .await
            .map_err(|e| failed(e.to_string()))?;

        let started = tokio::time::Instant::now();
        let generic = self.take_generic(&pool).await?;
        let t_taken = tokio::time::Instant::now();
        let instance = generic.instance.clone();
        let mut guard = KillUnlessKept(Some(instance.clone()));
        let id = instance.id();
        // From here on the runtime's output (including the loader's errors) is the function's.
        generic.log.retarget(Arc::new(self.logs.writer(&function.metadata.namespace, &function.metadata.name, id)));

        let env_version = match pool.env.spec.version {
            v if v <= 0 => 3,
            v => v,
        };
        let slot = if env_version >= 2 { CodeSlot::LoadRequest } else { CodeSlot::V1CodePath };
        let installing = async {
            let filepath = instance
                .install_code(&code, slot)
                .await
                .map_err(|e| failed(format!("cannot give the instance its code: {e}")))?;
            if let Some((secrets_dir, configs_dir)) = instance.values_dirs() {
                self.install_values(&function, &secrets_dir, &configs_dir).await.map_err(failed)?;
            }
            Ok::<_, ExecutorError>(filepath)
        };
        // Connecting wakes the runtime, which overlaps with the file work (see `connect`).
        let (filepath, connection) =
            tokio::join!(installing, specialize::connect(instance.addr(), self.config.specialize_timeout));
        let filepath = filepath?;
        let t_installed = tokio::time::Instant::now();
        let load = LoadRequest {
            filepath: filepath.to_string_lossy().into_owned(),
            function_name: &function.spec.package.function_name,
            url: "",
            function_metadata: &function.metadata,
            env_version,
        };
        let outcome = tokio::select! {
            r = async { specialize::specialize(connection?, &load, self.config.specialize_timeout).await } => r.map_err(|e| match e {
                SpecializeError::Rejected { body, .. } => body,
                e @ SpecializeError::Timeout(_) => e.to_string(),
                e @ SpecializeError::Transport(_) => with_output(e.to_string(), &generic.log),
            }),
            report = wait_exit(&*instance) => Err(with_output(format!("the runtime exited while loading the function ({report})"), &generic.log)),
        };
        let runtime = pool.runtime.dir_name().to_owned();
        let elapsed = started.elapsed().as_secs_f64();
        if let Err(message) = outcome {
            self.metrics
                .specialization_seconds
                .get_or_create(&SpecializationLabels { runtime, outcome: "failure" })
                .observe(elapsed);
            self.metrics
                .specialization_failures
                .get_or_create(&metrics::function_labels(&function.metadata.namespace, &function.metadata.name))
                .inc();
            tracing::info!(function = %name, instance = id, error = %message, "specialization failed");
            return Err(failed(message)); // the guard kills the instance
        }
        guard.0 = None;
        pool.note_healthy();
        self.metrics
            .specialization_seconds
            .get_or_create(&SpecializationLabels { runtime, outcome: "success" })
            .observe(elapsed);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        tracing::debug!(
            function = %name,
            instance = id,
            ms = elapsed * 1000.0,
            package_ms = ms(started - t_begin),
            take_ms = ms(t_taken - started),
            install_ms = ms(t_installed - t_taken),
            load_ms = ms(t_installed.elapsed()),
            "specialized"
        );
        let lease = self.table.complete(ticket, instance.clone(), pool.id, pool.is_closed());
        if instance.exit_watch().borrow().is_some() {
            // Died between answering and joining the table: its exit was processed before it
            // was listed, so remove it now (the caller gets a connection error, as for any crash).
            self.table.remove_instance(id);
        }
        Ok(lease)
    }

    /// Write the function's secrets and config maps where the instance sees them as
    /// `/secrets/<ns>/<name>/<key>` and `/configs/<ns>/<name>/<key>` (Fission's fetcher layout).
    async fn install_values(&self, function: &Function, secrets_dir: &Path, configs_dir: &Path) -> Result<(), String> {
        let ns = &function.metadata.namespace;
        let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for (refs, kind, root) in [
            (&function.spec.secrets, ResourceKind::Secret, secrets_dir),
            (&function.spec.configmaps, ResourceKind::ConfigMap, configs_dir),
        ] {
            for r in refs {
                let rns = if r.namespace.is_empty() { ns.as_str() } else { r.namespace.as_str() };
                let obj = match self.store.get(kind, rns, &r.name).await {
                    Ok(o) => o,
                    Err(StoreError::NotFound { .. }) => {
                        return Err(format!(
                            "{} '{}' (namespace '{rns}') used by the function does not exist; create it with 'fission {} create'",
                            kind.kind_name().to_lowercase(),
                            r.name,
                            kind.kind_name().to_lowercase()
                        ));
                    }
                    Err(e) => return Err(e.to_string()),
                };
                let dir = root.join(rns).join(&r.name);
                match obj {
                    AnyResource::Secret(s) => files.extend(s.data.into_iter().map(|(k, v)| (dir.join(k), v))),
                    AnyResource::ConfigMap(c) => files.extend(c.data.into_iter().map(|(k, v)| (dir.join(k), v.into_bytes()))),
                    _ => {}
                }
            }
        }
        if files.is_empty() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt as _;
            for (path, bytes) in files {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                    let mut d = parent;
                    // Directories down from the slot's root must be traversable by the instance's uid.
                    for _ in 0..2 {
                        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
                        match d.parent() {
                            Some(p) => d = p,
                            None => break,
                        }
                    }
                }
                std::fs::write(&path, bytes)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot give the instance its secrets and config maps: {e}"))
    }

    /// Stop everything: no new instances, every instance killed and waited for.
    async fn stop(&self) {
        self.stopping.cancel();
        let pools: Vec<Arc<Pool>> = self.lock_pools().drain().map(|(_, p)| p).collect();
        for pool in &pools {
            for g in pool.close() {
                g.instance.kill();
            }
        }
        for i in self.table.take_all() {
            i.kill();
        }
        let all: Vec<Arc<dyn RuntimeInstance>> = {
            let mut live = self.lock_live();
            live.closed = true;
            live.instances.values().cloned().collect()
        };
        for i in &all {
            i.kill();
        }
        let waits = all.iter().map(|i| wait_exit(&**i));
        if tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(waits)).await.is_err() {
            tracing::warn!("some instances did not exit within {SHUTDOWN_GRACE:?} of SIGKILL");
        }
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait()).await.is_err() {
            tracing::warn!("executor tasks still running after shutdown");
        }
        tracing::info!(instances = all.len(), "executor stopped");
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Kills the instance on drop unless emptied (failed or abandoned specializations).
struct KillUnlessKept(Option<Arc<dyn RuntimeInstance>>);

impl Drop for KillUnlessKept {
    fn drop(&mut self) {
        if let Some(i) = self.0.take() {
            i.kill();
        }
    }
}

fn with_output(message: String, log: &LogSink) -> String {
    let output = log.recent_output();
    if output.is_empty() { message } else { format!("{message}; last output:\n{output}") }
}

/// `runtime.container.env` of an environment as name/value pairs (`valueFrom` is ignored: there
/// are no Kubernetes secrets to resolve here).
/// Annotation that turns off outside network access for an environment's instances.
pub const EGRESS_ANNOTATION: &str = "fission.io/egress";

/// Limits from the environment: `resources` (Fission's `--maxmemory/--maxcpu`, with the
/// minimum used when only it is set) and the egress annotation.
fn instance_limits(env: &Environment) -> InstanceLimits {
    use fission_core::resources::ResourceRequirements as R;
    let res = &env.spec.resources;
    let memory_bytes = R::memory_bytes(&res.limits).or_else(|| R::memory_bytes(&res.requests));
    let cpu_millis = R::cpu_millis(&res.limits).or_else(|| R::cpu_millis(&res.requests)).and_then(|c| u64::try_from(c).ok()).filter(|c| *c > 0);
    let egress = env
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EGRESS_ANNOTATION))
        .is_none_or(|v| !matches!(v.as_str(), "false" | "off" | "no" | "0"));
    InstanceLimits { memory_bytes, cpu_millis, egress }
}

fn container_env(env: &Environment) -> Vec<(String, String)> {
    let Some(list) = env.spec.runtime.container.as_ref().and_then(|c| c.get("env")).and_then(|e| e.as_array()) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|item| {
            let name = item.get("name")?.as_str()?;
            let value = item.get("value").and_then(|v| v.as_str()).unwrap_or("");
            (!name.is_empty()).then(|| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

#[async_trait::async_trait]
impl FunctionInstances for Executor {
    async fn acquire(&self, function: &Function) -> Result<InstanceLease, ExecutorError> {
        if self.stopping.is_cancelled() {
            return Err(ExecutorError::ShuttingDown);
        }
        let secs = match function.spec.function_timeout {
            t if t > 0 => t as u64,
            _ => fission_core::resources::function_defaults::FUNCTION_TIMEOUT as u64,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let timeout = || ExecutorError::Timeout {
            function: format!("{}/{}", function.metadata.namespace, function.metadata.name),
            secs,
        };
        loop {
            match self.table.try_acquire(function) {
                Decision::Leased(lease) => return Ok(lease),
                Decision::Specialize(ticket) => {
                    if function.spec.executor_type() == executor_type::CONTAINER {
                        return Err(ExecutorError::Unsupported(format!(
                            "function '{}' uses the container executor, which is not supported yet",
                            function.metadata.name
                        )));
                    }
                    let me = self.me.upgrade().ok_or(ExecutorError::ShuttingDown)?;
                    // A task of its own: if the caller gives up, the specialization still
                    // completes and the instance serves the next request.
                    let task = self.tasks.spawn(me.specialize_new(function.clone(), ticket));
                    return match tokio::time::timeout_at(deadline, task).await {
                        Ok(Ok(result)) => result,
                        Ok(Err(e)) => Err(ExecutorError::Internal(format!("specialization task failed: {e}"))),
                        Err(_) => Err(timeout()),
                    };
                }
                Decision::Wait(wait, joined) => {
                    let _joined = joined;
                    tokio::select! {
                        () = wait => {}
                        () = tokio::time::sleep_until(deadline) => return Err(timeout()),
                        () = self.stopping.cancelled() => return Err(ExecutorError::ShuttingDown),
                    }
                }
            }
        }
    }
}
