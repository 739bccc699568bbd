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
//! The pool logic is written once and drives an [`InstanceBackend`] (see `backend.rs`):
//! [`LocalBackend`] runs instances as sandbox slots or plain processes on this machine; a
//! Kubernetes backend runs them as pods. By job:
//!
//! * `feed.rs` follows the store (through `fission-watcher`): pools appear, are replaced and
//!   removed with their environments; function versions retire.
//! * `pools.rs` keeps warm pools full and watches every instance's exit.
//! * `cold.rs` is the request path: lease a warm instance or specialize a new one.
//! * `instances.rs` is the specialized-instance table (concurrency, requestsPerPod, onceOnly,
//!   draining), `reaper.rs` the idle reaper; both are pure bookkeeping.
//! * `adopt.rs` takes over the specialized instances an executor that is gone left behind
//!   (the backend finds them), keeping those whose function and environment versions are
//!   current; calls wait (bounded) for the first adoption after start.
//! * this file is the facade: construction, `run`, and the shutdown order.
//!
//! Choices worth knowing:
//! * Generic instances log under the environment: namespace of the environment, function name
//!   `env:<environment name>`; from specialization on, lines go to the function's log.
//! * `newdeploy` functions get instances of their own, specialized from the same warm pools:
//!   `MinScale` kept ready, up to `MaxScale` under load (`scale.rs`); `container` functions
//!   are refused as unsupported.
//! * An environment update replaces the pool only when its `spec` changed (label-only edits
//!   keep the warm instances).
//! * Instances are stopped with SIGKILL to their whole process group: they hold no state worth
//!   a graceful exit, and only idle or broken instances are ever stopped.
#![deny(missing_docs)]

mod admission;
mod adopt;
mod backend;
mod cold;
mod deployments;
mod feed;
mod instances;
mod launcher;
mod local;
mod metrics;
mod package;
mod pool;
mod pools;
mod reaper;
mod sandboxed;
mod scale;
mod specialize;
mod sys;
mod zygote;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use fission_core::resources::Function;
use fission_core::{
    ArchiveStorage, ExecutorError, FunctionInstances, FunctionLogs, InstanceLease, ResourceStore,
    StoreError,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::instances::FunctionTable;
use crate::metrics::Metrics;
use crate::package::UnpackLimits;
use crate::pool::Pool;

pub use crate::admission::AdmissionConfig;
pub use crate::backend::{
    AdoptedInstance, EnvironmentPlan, InstanceBackend, LoadError, ObjectVersion, Specialization,
};
pub use crate::deployments::{Endpoint, FunctionDeployments};
pub use crate::launcher::{
    CodeSlot, DiscardLines, ExitReport, InstanceLauncher, InstanceLimits, LaunchError, LaunchSpec,
    LineSink, LogSink, OutputStream, ProcessLauncher, RuntimeInstance, resolve_runtime_binaries,
    wait_exit,
};
pub use crate::local::{EGRESS_ANNOTATION, LaunchTemplate, LocalBackend, LocalConfig};
pub use crate::package::{PackageError, UnpackError};
pub use crate::sandboxed::{PreparedRuntimes, SandboxLauncher};
pub use crate::zygote::{ZygoteConfig, ZygoteError};

/// How long shutdown waits for instances to exit after SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Executor settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often idle instances are looked for (Fission: 5 s).
    pub reaper_interval: Duration,
    /// How long a runtime may take to load a function whose `specializationtimeout` is unset.
    pub specialize_timeout: Duration,
    /// The local backend's settings (used by [`Executor::new`]).
    pub local: LocalConfig,
    /// Server-wide limits on instances and concurrent specializations.
    pub admission: AdmissionConfig,
    /// The id of the first instance started. Instance ids name instances in logs; a server
    /// sets this above every id a previous run of it can have used (see the binary).
    pub first_instance_id: u64,
}

impl Config {
    /// Settings with the default timings: reaper every 5 s, specialization 30 s, start 10 s.
    pub fn new(
        environments_dir: PathBuf,
        cache_dir: PathBuf,
        node_bin: PathBuf,
        python_bin: PathBuf,
    ) -> Self {
        Self {
            reaper_interval: Duration::from_secs(5),
            specialize_timeout: Duration::from_secs(30),
            local: LocalConfig::new(environments_dir, cache_dir, node_bin, python_bin),
            admission: AdmissionConfig::for_this_machine(),
            first_instance_id: 1,
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

/// The pool manager. Create with [`Executor::new`] (local instances) or
/// [`Executor::with_backend`], drive with [`Executor::run`], and hand it to the router as
/// [`FunctionInstances`].
pub struct Executor<B: InstanceBackend = LocalBackend> {
    me: Weak<Executor<B>>,
    config: Config,
    store: Arc<dyn ResourceStore>,
    logs: Arc<dyn FunctionLogs>,
    backend: B,
    metrics: Metrics,
    table: Arc<FunctionTable>,
    pools: Mutex<HashMap<EnvKey, Arc<Pool<B::Launch>>>>,
    /// Every instance started and not yet exited (so shutdown leaves no orphans).
    live: Mutex<LiveSet>,
    next_instance: AtomicU64,
    next_pool: AtomicU64,
    stopping: CancellationToken,
    tasks: TaskTracker,
    /// One deployment prefetch at a time (see `feed.rs`).
    prefetching: tokio::sync::Semaphore,
    admission: Admission,
    /// newdeploy functions by uid (current version), kept at `MinScale`.
    scaled: Mutex<HashMap<String, Function>>,
    /// Last CPU sample per instance id (newdeploy's `TargetCPUPercent`).
    cpu_samples: Mutex<HashMap<u64, (tokio::time::Instant, Duration)>>,
    /// Where newdeploy functions run when not here (see `deployments.rs`).
    deployed: Option<deployments::Deployed>,
    /// The first adoption (in `run`) is done: checked on every call, so an atomic.
    adoption_done: AtomicBool,
    /// The same, for calls waiting for it (see `adopt.rs`).
    adoption: tokio::sync::watch::Sender<bool>,
}

impl Executor<LocalBackend> {
    /// An executor of local instances started by `launcher`; nothing starts until
    /// [`run`](Self::run) (or a first `acquire`).
    pub fn new(
        config: Config,
        store: Arc<dyn ResourceStore>,
        archives: impl ArchiveStorage,
        logs: impl FunctionLogs,
        launcher: Arc<dyn InstanceLauncher>,
        metrics: &mut prometheus_client::registry::Registry,
    ) -> Arc<Self> {
        let metrics = Metrics::new(metrics);
        Self::with_metrics(
            config,
            store,
            archives,
            logs,
            launcher,
            metrics,
            UnpackLimits::default(),
        )
    }

    fn with_metrics(
        config: Config,
        store: Arc<dyn ResourceStore>,
        archives: impl ArchiveStorage,
        logs: impl FunctionLogs,
        launcher: Arc<dyn InstanceLauncher>,
        metrics: Metrics,
        limits: UnpackLimits,
    ) -> Arc<Self> {
        let backend = LocalBackend::with_limits(
            config.local.clone(),
            launcher,
            Arc::new(archives),
            store.clone(),
            limits,
        );
        Self::build(config, store, Arc::new(logs), backend, None, metrics)
    }
}

impl<B: InstanceBackend> Executor<B> {
    /// An executor whose instances `backend` runs.
    pub fn with_backend(
        config: Config,
        store: Arc<dyn ResourceStore>,
        logs: Arc<dyn FunctionLogs>,
        backend: B,
        metrics: &mut prometheus_client::registry::Registry,
    ) -> Arc<Self> {
        Self::build(config, store, logs, backend, None, Metrics::new(metrics))
    }

    /// An executor whose instances `backend` runs and whose newdeploy functions `deployments`
    /// runs (a Deployment per function on Kubernetes, instead of instances of their own here).
    pub fn with_deployments(
        config: Config,
        store: Arc<dyn ResourceStore>,
        logs: Arc<dyn FunctionLogs>,
        backend: B,
        deployments: Arc<dyn FunctionDeployments>,
        metrics: &mut prometheus_client::registry::Registry,
    ) -> Arc<Self> {
        Self::build(
            config,
            store,
            logs,
            backend,
            Some(deployments),
            Metrics::new(metrics),
        )
    }

    fn build(
        config: Config,
        store: Arc<dyn ResourceStore>,
        logs: Arc<dyn FunctionLogs>,
        backend: B,
        deployments: Option<Arc<dyn FunctionDeployments>>,
        metrics: Metrics,
    ) -> Arc<Self> {
        let first_instance_id = config.first_instance_id.max(1);
        let admission = config.admission;
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            config,
            store,
            logs,
            backend,
            table: FunctionTable::new(metrics.clone()),
            metrics,
            pools: Mutex::new(HashMap::new()),
            live: Mutex::new(LiveSet::default()),
            // 0 reads as "none" in logs.
            next_instance: AtomicU64::new(first_instance_id),
            next_pool: AtomicU64::new(1),
            stopping: CancellationToken::new(),
            tasks: TaskTracker::new(),
            prefetching: tokio::sync::Semaphore::new(1),
            admission: Admission::new(admission),
            scaled: Mutex::new(HashMap::new()),
            cpu_samples: Mutex::new(HashMap::new()),
            deployed: deployments.map(deployments::Deployed::new),
            // Calls made before `run` has adopted wait for it (bounded): see `adopt.rs`.
            adoption_done: AtomicBool::new(false),
            adoption: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Follow the store's change feed (creating, replacing and removing pools; retiring
    /// instances of changed or deleted functions), reap idle instances, and on `shutdown` stop
    /// every instance and wait for them to exit (unless they outlive the executor: see
    /// [`InstanceBackend::instances_outlive_executor`]).
    ///
    /// `shutdown` must fire only after the router has drained: instances are killed then.
    /// Fails only if the store cannot be listed at startup; later feed errors relist.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), Error> {
        self.tasks.spawn(self.clone().adopt_at_start());
        self.tasks.spawn(reaper::run(self.clone()));
        let result = self.follow_store(&shutdown).await;
        self.stop().await;
        result
    }

    fn lock_pools(&self) -> MutexGuard<'_, HashMap<EnvKey, Arc<Pool<B::Launch>>>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_scaled(&self) -> MutexGuard<'_, HashMap<String, Function>> {
        self.scaled.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cpu_samples(&self) -> MutexGuard<'_, HashMap<u64, (tokio::time::Instant, Duration)>> {
        self.cpu_samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_live(&self) -> MutexGuard<'_, LiveSet> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stop everything: no new instances, every instance killed and waited for.
    async fn stop(&self) {
        self.stopping.cancel();
        let pools: Vec<Arc<Pool<B::Launch>>> = self.lock_pools().drain().map(|(_, p)| p).collect();
        for pool in &pools {
            for g in pool.close() {
                g.instance.kill();
            }
        }
        let all: Vec<Arc<dyn RuntimeInstance>> = {
            let mut live = self.lock_live();
            live.closed = true;
            live.instances.values().cloned().collect()
        };
        let left = self.backend.instances_outlive_executor();
        let all = if left {
            // Left for the next executor to adopt (one being specialized is deleted by it).
            tracing::info!(
                instances = all.len(),
                "leaving instances for the next executor to adopt"
            );
            drop(self.table.take_all());
            // Give up what marks this executor alive now, not after the tasks wind down: the
            // next executor adopts the instances as soon as it sees that.
            self.backend.stopped().await;
            Vec::new()
        } else {
            for i in self.table.take_all() {
                i.kill();
            }
            all
        };
        for i in &all {
            i.kill();
        }
        let waits = all.iter().map(|i| wait_exit(&**i));
        if tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(waits))
            .await
            .is_err()
        {
            tracing::warn!("some instances did not exit within {SHUTDOWN_GRACE:?} of SIGKILL");
        }
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("executor tasks still running after shutdown");
        }
        if !left {
            self.backend.stopped().await;
        }
        tracing::info!(instances = all.len(), "executor stopped");
    }
}

#[async_trait::async_trait]
impl<B: InstanceBackend> FunctionInstances for Executor<B> {
    async fn acquire(&self, function: &Function) -> Result<InstanceLease, ExecutorError> {
        if !self.adoption_done.load(Ordering::Acquire) {
            self.wait_for_first_adoption().await;
        }
        self.acquire_instance(function).await
    }
}
