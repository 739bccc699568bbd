//! A warm pool: generic instances of one environment version, started ahead of time so a cold
//! start only pays for loading the function. The refill loop that keeps it full lives in
//! [`crate::Executor`] (it needs the launcher); this is the pool's bookkeeping.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fission_core::resources::Environment;
use fission_core::runtime::BuiltinRuntime;
use tokio::sync::Notify;

use crate::launcher::{LogSink, RuntimeInstance};
use crate::metrics::{EnvLabels, Metrics};

/// Longest pause between refill attempts of a pool whose instances keep failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First pause after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// A started, not yet specialized instance.
#[derive(Clone)]
pub(crate) struct GenericInstance {
    pub instance: Arc<dyn RuntimeInstance>,
    /// Its output; re-targeted to the function's log at specialization.
    pub log: LogSink,
}

/// How to start instances of an environment version.
#[derive(Debug, Clone)]
pub(crate) struct LaunchTemplate {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub limits: crate::launcher::InstanceLimits,
}

struct PoolState {
    ready: VecDeque<GenericInstance>,
    /// Consecutive failures (launch errors, generic instances dying on their own); drives the
    /// refill backoff so a broken runtime does not spin.
    failures: u32,
}

/// The warm pool of one environment version.
pub(crate) struct Pool {
    /// Unique per pool (a new environment version gets a new pool).
    pub id: u64,
    pub env: Arc<Environment>,
    pub runtime: BuiltinRuntime,
    pub template: LaunchTemplate,
    /// Generic instances kept ready (`effective_poolsize`).
    pub target: usize,
    labels: EnvLabels,
    metrics: Metrics,
    state: Mutex<PoolState>,
    closed: AtomicBool,
    /// Wakes the refill loop (an instance was taken or died, or the pool closed).
    pub wake: Notify,
}

impl Pool {
    pub(crate) fn new(id: u64, env: Environment, runtime: BuiltinRuntime, template: LaunchTemplate, metrics: Metrics) -> Self {
        let labels = EnvLabels {
            environment_namespace: env.metadata.namespace.clone(),
            environment_name: env.metadata.name.clone(),
        };
        metrics.pool_ready.get_or_create(&labels).set(0);
        Self {
            id,
            target: env.spec.effective_poolsize(),
            env: Arc::new(env),
            runtime,
            template,
            labels,
            metrics,
            state: Mutex::new(PoolState { ready: VecDeque::new(), failures: 0 }),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, st: &PoolState) {
        self.metrics.pool_ready.get_or_create(&self.labels).set(st.ready.len() as i64);
    }

    /// Take a ready instance (oldest first: it has had the most time to boot).
    pub(crate) fn take(&self) -> Option<GenericInstance> {
        let taken = {
            let mut st = self.lock();
            let t = st.ready.pop_front();
            self.publish(&st);
            t
        };
        self.wake.notify_one();
        taken
    }

    /// Add a freshly started instance; hands it back if the pool closed meanwhile.
    pub(crate) fn put(&self, generic: GenericInstance) -> Result<(), GenericInstance> {
        let mut st = self.lock();
        if self.is_closed() {
            return Err(generic);
        }
        st.ready.push_back(generic);
        self.publish(&st);
        Ok(())
    }

    /// An instance exited. Returns whether it was waiting in the pool (an unprompted death:
    /// counted as a failure).
    pub(crate) fn remove(&self, id: u64) -> bool {
        let removed = {
            let mut st = self.lock();
            let before = st.ready.len();
            st.ready.retain(|g| g.instance.id() != id);
            let removed = st.ready.len() != before;
            if removed && !self.is_closed() {
                st.failures = st.failures.saturating_add(1);
            }
            self.publish(&st);
            removed
        };
        if removed {
            self.wake.notify_one();
        }
        removed
    }

    /// How many instances the pool is short of its target.
    pub(crate) fn deficit(&self) -> usize {
        self.target.saturating_sub(self.lock().ready.len())
    }

    pub(crate) fn note_failure(&self) {
        let mut st = self.lock();
        st.failures = st.failures.saturating_add(1);
    }

    /// A specialization on an instance of this pool worked: the runtime is healthy.
    pub(crate) fn note_healthy(&self) {
        self.lock().failures = 0;
    }

    /// How long the refill loop should wait before the next start.
    pub(crate) fn backoff(&self) -> Duration {
        match self.lock().failures {
            0 => Duration::ZERO,
            n => FIRST_BACKOFF.saturating_mul(1u32 << (n - 1).min(10)).min(MAX_BACKOFF),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stop refilling and hand back the ready instances (to be killed).
    pub(crate) fn close(&self) -> Vec<GenericInstance> {
        let drained: Vec<GenericInstance> = {
            let mut st = self.lock();
            self.closed.store(true, Ordering::Release);
            st.ready.drain(..).collect()
        };
        self.metrics.pool_ready.remove(&self.labels);
        self.wake.notify_one();
        drained
    }
}
