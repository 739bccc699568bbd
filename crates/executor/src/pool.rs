//! A warm pool: generic instances of one environment version, started ahead of time so a cold
//! start only pays for loading the function. The refill loop that keeps it full lives in
//! `pools.rs` (it needs the backend); this is the pool's bookkeeping.
//!
//! **Sized from demand.** `poolsize` is the floor, not the ceiling: every cold start that finds
//! the pool empty (a *miss*: it has to start an instance and wait ~100 ms for the runtime to
//! boot) raises the pool's target by one, up to [`max_boost`] above `poolsize`, so the next
//! burst of the same size finds its instances warm. After [`BOOST_TTL`] without a miss the
//! target drops back to `poolsize` and the extra ready instances are stopped. A pool of size 0
//! stays empty (the user asked for no warm instances).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fission_core::resources::Environment;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend::EnvironmentPlan;
use crate::launcher::{LogSink, RuntimeInstance};
use crate::metrics::{EnvLabels, Metrics};

/// Longest pause between refill attempts of a pool whose instances keep failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First pause after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long a demand boost lasts after the last miss.
pub(crate) const BOOST_TTL: Duration = Duration::from_secs(300);
/// Pause before each start that only serves the boost: such instances are for the next burst,
/// and must not take CPU from the boots that requests of this one are waiting for.
pub(crate) const BOOST_SPACING: Duration = Duration::from_millis(100);

/// Most instances a pool of `poolsize` keeps beyond it: as many again, at least 4 (a burst of
/// a few concurrent first calls is common even for small pools).
pub(crate) fn max_boost(poolsize: usize) -> usize {
    poolsize.max(4)
}

/// A started, not yet specialized instance.
#[derive(Clone)]
pub(crate) struct GenericInstance {
    pub instance: Arc<dyn RuntimeInstance>,
    /// Its output; re-targeted to the function's log at specialization.
    pub log: LogSink,
}

struct PoolState {
    ready: VecDeque<GenericInstance>,
    /// Consecutive failures (launch errors, generic instances dying on their own); drives the
    /// refill backoff so a broken runtime does not spin.
    failures: u32,
    /// Instances wanted beyond `target` because of recent misses.
    boost: usize,
    /// When the last miss happened (the boost expires [`BOOST_TTL`] later).
    last_miss: Option<Instant>,
}

/// The warm pool of one environment version.
pub(crate) struct Pool<L> {
    /// Unique per pool (a new environment version gets a new pool).
    pub id: u64,
    pub env: Arc<Environment>,
    /// How the backend starts this environment version's instances.
    pub plan: EnvironmentPlan<L>,
    /// Generic instances kept ready (`effective_poolsize`).
    pub target: usize,
    labels: EnvLabels,
    metrics: Metrics,
    state: Mutex<PoolState>,
    closed: AtomicBool,
    /// Wakes the refill loop (an instance was taken or died, or the pool closed).
    pub wake: Notify,
}

impl<L> Pool<L> {
    pub(crate) fn new(
        id: u64,
        env: Environment,
        plan: EnvironmentPlan<L>,
        metrics: Metrics,
    ) -> Self {
        let labels = EnvLabels {
            environment_namespace: env.metadata.namespace.clone(),
            environment_name: env.metadata.name.clone(),
        };
        metrics.pool_ready.get_or_create(&labels).set(0);
        Self {
            id,
            target: env.spec.effective_poolsize(),
            env: Arc::new(env),
            plan,
            labels,
            metrics,
            state: Mutex::new(PoolState {
                ready: VecDeque::new(),
                failures: 0,
                boost: 0,
                last_miss: None,
            }),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, st: &PoolState) {
        self.metrics
            .pool_ready
            .get_or_create(&self.labels)
            .set(st.ready.len() as i64);
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

    /// How many instances the pool is short of its target: `(with the demand boost, without)`.
    pub(crate) fn deficit(&self) -> (usize, usize) {
        let st = self.lock();
        let ready = st.ready.len();
        (
            (self.target + st.boost).saturating_sub(ready),
            self.target.saturating_sub(ready),
        )
    }

    /// A cold start found no ready instance: want one more next time (see the module docs).
    pub(crate) fn note_miss(&self) {
        if self.target == 0 {
            return;
        }
        {
            let mut st = self.lock();
            st.boost = (st.boost + 1).min(max_boost(self.target));
            st.last_miss = Some(Instant::now());
        }
        self.wake.notify_one();
    }

    /// When the current boost expires, if there is one.
    pub(crate) fn boost_expiry(&self) -> Option<Instant> {
        let st = self.lock();
        st.last_miss.filter(|_| st.boost > 0).map(|t| t + BOOST_TTL)
    }

    /// End the boost if it has expired; hands back the ready instances beyond `target` (to be
    /// stopped). The oldest are kept: `take` hands them out first.
    pub(crate) fn expire_boost(&self, now: Instant) -> Vec<GenericInstance> {
        let mut st = self.lock();
        match st.last_miss {
            Some(t) if st.boost > 0 && now >= t + BOOST_TTL => {}
            _ => return Vec::new(),
        }
        st.boost = 0;
        st.last_miss = None;
        let keep = self.target.min(st.ready.len());
        let extra: Vec<GenericInstance> = st.ready.drain(keep..).collect();
        self.publish(&st);
        extra
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
            n => FIRST_BACKOFF
                .saturating_mul(1u32 << (n - 1).min(10))
                .min(MAX_BACKOFF),
        }
    }

    /// Ready instances and the current boost.
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (usize, usize) {
        let st = self.lock();
        (st.ready.len(), st.boost)
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
