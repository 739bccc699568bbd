//! The specialized-instance table: which instances serve which function version, how many
//! requests each carries, and who may start the next specialization.
//!
//! Everything here is synchronous and guarded by one mutex that is never held across an
//! `.await`; the warm path of [`crate::Executor::acquire`] is one lock, one map lookup and a
//! counter increment. Decisions that need I/O (specializing) are handed back to the caller as
//! a [`Ticket`] that reserves a concurrency slot until it is completed or dropped.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use fission_core::resources::{Function, executor_type, function_defaults};
use fission_core::{InstanceLease, LeaseRelease};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;

use crate::launcher::RuntimeInstance;
use crate::metrics::{FunctionLabels, Metrics, function_labels};

/// The per-version limits of a function (Fission's poolmgr knobs, defaulted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most specialized instances (`concurrency`).
    pub concurrency: usize,
    /// Concurrent requests per instance (`requestsPerPod`).
    pub requests_per_pod: usize,
    /// Every request gets a fresh instance (`onceOnly`).
    pub once_only: bool,
    /// Idle instances beyond `retain` are reaped after this (`idletimeout`).
    pub idle_timeout: Duration,
    /// Idle instances kept regardless (`retainPods`; `MinScale` for newdeploy).
    pub retain: usize,
    /// newdeploy: at `concurrency` (`MaxScale`) calls go to the least busy instance rather
    /// than wait, as a Service in front of a Deployment would send them.
    pub overcommit: bool,
}

/// In-flight calls per newdeploy instance before another one is started (up to `MaxScale`).
pub(crate) const NEWDEPLOY_TARGET_INFLIGHT: usize = 8;

impl Limits {
    pub(crate) fn of(function: &Function) -> Self {
        let s = &function.spec;
        let positive = |v: i32, default: i32| if v > 0 { v as usize } else { default as usize };
        if s.executor_type() == executor_type::NEWDEPLOY {
            let es = &s.invoke_strategy.execution_strategy;
            let min_scale = es.min_scale.max(0) as usize;
            return Self {
                concurrency: (es.max_scale.max(1) as usize).max(min_scale),
                requests_per_pod: NEWDEPLOY_TARGET_INFLIGHT,
                once_only: false,
                idle_timeout: Duration::from_secs(s.idle_timeout_secs().max(0) as u64),
                retain: min_scale,
                overcommit: true,
            };
        }
        Self {
            concurrency: positive(s.concurrency, function_defaults::CONCURRENCY),
            requests_per_pod: positive(s.requests_per_pod, function_defaults::REQUESTS_PER_POD),
            once_only: s.once_only,
            idle_timeout: Duration::from_secs(s.idle_timeout_secs().max(0) as u64),
            retain: s.retain_pods.max(0) as usize,
            overcommit: false,
        }
    }
}

/// A lease on the least busy instance of `state` with spare capacity, if there is one.
fn lease_free_slot(state: &mut FunctionState) -> Option<InstanceLease> {
    if state.limits.once_only {
        return None;
    }
    let rpp = state.limits.requests_per_pod;
    let slot = state
        .slots
        .iter_mut()
        .filter(|s| !s.retired && s.active < rpp)
        .min_by_key(|s| s.active)?;
    slot.active += 1;
    let release: Arc<dyn LeaseRelease> = slot.release.clone();
    Some(InstanceLease::new(
        slot.instance.addr(),
        slot.instance.id(),
        false,
        release,
    ))
}

/// A lease on the least busy live instance, whatever its load (newdeploy at `MaxScale`).
fn lease_least_busy(state: &mut FunctionState) -> Option<InstanceLease> {
    let slot = state
        .slots
        .iter_mut()
        .filter(|s| !s.retired)
        .min_by_key(|s| s.active)?;
    slot.active += 1;
    let release: Arc<dyn LeaseRelease> = slot.release.clone();
    Some(InstanceLease::new(
        slot.instance.addr(),
        slot.instance.id(),
        false,
        release,
    ))
}

/// What [`FunctionTable::try_acquire`] decided.
pub(crate) enum Decision {
    /// An instance with spare capacity, leased.
    Leased(InstanceLease),
    /// Nothing free, but below `concurrency`: the caller must specialize a new instance and
    /// report through the ticket.
    Specialize(Ticket),
    /// Wait for this notification (already registered) and try again: at `concurrency`, or
    /// (with a [`JoinGuard`]) counting on the spare capacity of an in-flight specialization.
    Wait(Pin<Box<OwnedNotified>>, Option<JoinGuard>),
}

/// A function version's identity: uid + resourceVersion.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct VersionKey {
    pub uid: String,
    pub rv: String,
}

impl VersionKey {
    pub(crate) fn of(function: &Function) -> Self {
        let m = &function.metadata;
        // Objects from a store always have a uid; fall back to the name for hand-made ones.
        let uid = if m.uid.is_empty() {
            format!("{}/{}", m.namespace, m.name)
        } else {
            m.uid.clone()
        };
        Self {
            uid,
            rv: m.resource_version.clone(),
        }
    }
}

fn rv_number(rv: &str) -> u64 {
    rv.parse().unwrap_or(0)
}

struct Slot {
    instance: Arc<dyn RuntimeInstance>,
    /// The warm pool (environment version) it came from.
    pool_id: u64,
    active: usize,
    last_used: Instant,
    /// No new leases; killed once idle.
    retired: bool,
    release: Arc<SlotRelease>,
}

struct FunctionState {
    labels: FunctionLabels,
    limits: Limits,
    slots: Vec<Slot>,
    specializing: usize,
    /// Requests waiting for the spare capacity (`requestsPerPod` - 1 each) of in-flight
    /// specializations.
    joined: usize,
    /// A newer version exists or the function is gone: no new instances are kept.
    draining: bool,
    notify: Arc<Notify>,
}

impl FunctionState {
    /// The state of a version of `function` nothing has touched yet.
    fn new(function: &Function) -> Self {
        Self {
            labels: function_labels(&function.metadata.namespace, &function.metadata.name),
            limits: Limits::of(function),
            slots: Vec::new(),
            specializing: 0,
            joined: 0,
            draining: false,
            notify: Arc::new(Notify::new()),
        }
    }

    fn live(&self) -> usize {
        self.slots.iter().filter(|s| !s.retired).count()
    }
}

#[derive(Default)]
struct UidEntry {
    /// Highest resourceVersion the change feed reported (`u64::MAX` once deleted).
    latest: u64,
    versions: HashMap<String, FunctionState>,
}

#[derive(Default)]
struct TableState {
    by_uid: HashMap<String, UidEntry>,
    /// instance id → version holding it.
    index: HashMap<u64, VersionKey>,
}

/// An instance the reaper takes out of the table.
pub(crate) struct Reaped {
    /// `namespace/name` of its function.
    pub function: String,
    /// Superseded by a newer function or environment version (else idle past `idletimeout`).
    pub retired: bool,
    pub instance: Arc<dyn RuntimeInstance>,
}

/// The table of specialized instances.
pub(crate) struct FunctionTable {
    state: Mutex<TableState>,
    metrics: Metrics,
    me: Weak<FunctionTable>,
}

impl FunctionTable {
    pub(crate) fn new(metrics: Metrics) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            state: Mutex::new(TableState::default()),
            metrics,
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, TableState> {
        // A panic while holding the lock leaves consistent-enough counters; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lease a free instance of this exact function version, or reserve the right to
    /// specialize one, or register for a wake-up.
    pub(crate) fn try_acquire(&self, function: &Function) -> Decision {
        let m = &function.metadata;
        let mut st = self.lock();
        // The warm path looks the version up by reference: no key to build, nothing allocated.
        if !m.uid.is_empty() {
            let state = st
                .by_uid
                .get_mut(m.uid.as_str())
                .and_then(|e| e.versions.get_mut(m.resource_version.as_str()));
            if let Some(lease) = state.and_then(lease_free_slot) {
                return Decision::Leased(lease);
            }
        }
        let key = VersionKey::of(function);
        let entry = st.by_uid.entry(key.uid.clone()).or_default();
        let latest = entry.latest;
        let state = entry
            .versions
            .entry(key.rv.clone())
            .or_insert_with(|| FunctionState {
                // The caller's copy is older than what the change feed already told us: serve it
                // (the router still routes to it) but keep nothing around afterwards.
                draining: rv_number(&key.rv) < latest,
                ..FunctionState::new(function)
            });

        if let Some(lease) = lease_free_slot(state) {
            return Decision::Leased(lease);
        }
        let mut join = None;
        let promised = state.specializing * (state.limits.requests_per_pod - 1);
        if !state.limits.once_only && promised > state.joined {
            // An instance on its way will have room for this request too: wait for it rather
            // than start another one.
            state.joined += 1;
            join = Some(JoinGuard {
                table: self.me.clone(),
                key,
            });
        } else if state.live() + state.specializing < state.limits.concurrency {
            state.specializing += 1;
            return Decision::Specialize(Ticket {
                table: self.me.clone(),
                key,
                armed: true,
            });
        }
        if join.is_none()
            && state.limits.overcommit
            && let Some(lease) = lease_least_busy(state)
        {
            return Decision::Leased(lease);
        }
        let mut wait = Box::pin(state.notify.clone().notified_owned());
        // Registered while the lock is held, so no release in between is missed.
        wait.as_mut().enable();
        Decision::Wait(wait, join)
    }

    /// newdeploy's `MinScale`: the right to specialize one more instance of `function` while
    /// it has fewer than `MinScale` (live or on their way), not tied to any call.
    pub(crate) fn reserve_below_min_scale(&self, function: &Function) -> Option<Ticket> {
        let key = VersionKey::of(function);
        let mut st = self.lock();
        let entry = st.by_uid.entry(key.uid.clone()).or_default();
        if rv_number(&key.rv) < entry.latest {
            return None;
        }
        let state = entry
            .versions
            .entry(key.rv.clone())
            .or_insert_with(|| FunctionState::new(function));
        if state.draining
            || !state.limits.overcommit
            || state.live() + state.specializing >= state.limits.retain
        {
            return None;
        }
        state.specializing += 1;
        Some(Ticket {
            table: self.me.clone(),
            key,
            armed: true,
        })
    }

    /// newdeploy's CPU scale-out: the right to specialize one more instance of `function`
    /// while it is below `MaxScale` and not already adding one.
    pub(crate) fn reserve_scale_out(&self, function: &Function) -> Option<Ticket> {
        let key = VersionKey::of(function);
        let mut st = self.lock();
        let state = st.by_uid.get_mut(&key.uid)?.versions.get_mut(&key.rv)?;
        if state.draining
            || !state.limits.overcommit
            || state.specializing > 0
            || state.live() >= state.limits.concurrency
        {
            return None;
        }
        state.specializing += 1;
        Some(Ticket {
            table: self.me.clone(),
            key,
            armed: true,
        })
    }

    /// The serving instances of this function version.
    pub(crate) fn instances_of(&self, function: &Function) -> Vec<Arc<dyn RuntimeInstance>> {
        let key = VersionKey::of(function);
        let st = self.lock();
        st.by_uid
            .get(&key.uid)
            .and_then(|e| e.versions.get(&key.rv))
            .map(|v| {
                v.slots
                    .iter()
                    .filter(|s| !s.retired)
                    .map(|s| s.instance.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many instances serve `namespace/name` (every version), for `fission fn get`.
    pub(crate) fn instance_count(&self, namespace: &str, name: &str) -> usize {
        let st = self.lock();
        st.by_uid
            .values()
            .flat_map(|e| e.versions.values())
            .filter(|v| v.labels.function_namespace == namespace && v.labels.function_name == name)
            .map(|v| v.slots.len())
            .sum()
    }

    /// `(namespace, name, instances)` of every function with instances (every version).
    pub(crate) fn instance_counts(&self) -> Vec<(String, String, usize)> {
        let st = self.lock();
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        for v in st.by_uid.values().flat_map(|e| e.versions.values()) {
            if !v.slots.is_empty() {
                *counts
                    .entry((
                        v.labels.function_namespace.as_str(),
                        v.labels.function_name.as_str(),
                    ))
                    .or_default() += v.slots.len();
            }
        }
        counts
            .into_iter()
            .map(|((ns, name), n)| (ns.to_owned(), name.to_owned(), n))
            .collect()
    }

    /// A wake-up for when anything changes for this function version (a lease ends, an
    /// instance joins or leaves), registered now; `None` if the table has no state for it.
    pub(crate) fn change_of(&self, function: &Function) -> Option<Pin<Box<OwnedNotified>>> {
        let key = VersionKey::of(function);
        let st = self.lock();
        let state = st.by_uid.get(&key.uid)?.versions.get(&key.rv)?;
        let mut wait = Box::pin(state.notify.clone().notified_owned());
        wait.as_mut().enable();
        Some(wait)
    }

    fn unjoin(&self, key: &VersionKey) {
        let mut st = self.lock();
        if let Some(state) = st
            .by_uid
            .get_mut(&key.uid)
            .and_then(|e| e.versions.get_mut(&key.rv))
        {
            state.joined = state.joined.saturating_sub(1);
        }
    }

    /// Record a successful specialization: the instance joins the table with one lease, which
    /// is returned (a cold start).
    pub(crate) fn complete(
        &self,
        mut ticket: Ticket,
        instance: Arc<dyn RuntimeInstance>,
        pool_id: u64,
        pool_closed: bool,
    ) -> InstanceLease {
        ticket.armed = false;
        let key = ticket.key.clone();
        let id = instance.id();
        let addr = instance.addr();
        let release = Arc::new(SlotRelease {
            table: self.me.clone(),
            key: key.clone(),
            id,
            exit: instance.exit_watch(),
        });
        let mut st = self.lock();
        let entry = st.by_uid.entry(key.uid.clone()).or_default();
        // The state exists: it is only removed when nothing is specializing for it.
        let state = entry
            .versions
            .entry(key.rv.clone())
            .or_insert_with(|| FunctionState {
                labels: function_labels("", ""),
                limits: Limits {
                    concurrency: 1,
                    requests_per_pod: 1,
                    once_only: true,
                    idle_timeout: Duration::ZERO,
                    retain: 0,
                    overcommit: false,
                },
                slots: Vec::new(),
                specializing: 1,
                joined: 0,
                draining: true,
                notify: Arc::new(Notify::new()),
            });
        state.specializing = state.specializing.saturating_sub(1);
        let retired = state.draining || pool_closed;
        state.slots.push(Slot {
            instance,
            pool_id,
            active: 1,
            last_used: Instant::now(),
            retired,
            release: release.clone(),
        });
        self.metrics
            .function_instances
            .get_or_create(&state.labels)
            .inc();
        self.metrics.cold_starts.inc();
        self.metrics
            .function_cold_starts
            .get_or_create(&state.labels)
            .inc();
        // Requests waiting with requestsPerPod > 1 can share the new instance.
        state.notify.notify_waiters();
        st.index.insert(id, key);
        drop(st);
        let release: Arc<dyn LeaseRelease> = release;
        InstanceLease::new(addr, id, true, release)
    }

    /// An instance adopted from an executor that is gone joins the table idle, as if it had
    /// just served a call: idle reaping, concurrency and requestsPerPod apply from here on.
    /// Returns `false` (the caller kills it) when `function` is no longer the current version.
    pub(crate) fn adopt(
        &self,
        function: &Function,
        instance: Arc<dyn RuntimeInstance>,
        pool_id: u64,
    ) -> bool {
        let key = VersionKey::of(function);
        let id = instance.id();
        let release = Arc::new(SlotRelease {
            table: self.me.clone(),
            key: key.clone(),
            id,
            exit: instance.exit_watch(),
        });
        let mut st = self.lock();
        let entry = st.by_uid.entry(key.uid.clone()).or_default();
        if rv_number(&key.rv) < entry.latest {
            return false;
        }
        let state = entry
            .versions
            .entry(key.rv.clone())
            .or_insert_with(|| FunctionState::new(function));
        if state.draining {
            return false;
        }
        state.slots.push(Slot {
            instance,
            pool_id,
            active: 0,
            last_used: Instant::now(),
            retired: false,
            release,
        });
        self.metrics
            .function_instances
            .get_or_create(&state.labels)
            .inc();
        // Requests waiting at the function's concurrency can use it.
        state.notify.notify_waiters();
        st.index.insert(id, key);
        true
    }

    fn abandon(&self, key: &VersionKey) {
        let mut st = self.lock();
        if let Some(state) = st
            .by_uid
            .get_mut(&key.uid)
            .and_then(|e| e.versions.get_mut(&key.rv))
        {
            state.specializing = state.specializing.saturating_sub(1);
            state.notify.notify_waiters();
        }
    }

    fn release(&self, key: &VersionKey, id: u64, broken: bool) {
        let mut st = self.lock();
        let Some(state) = st
            .by_uid
            .get_mut(&key.uid)
            .and_then(|e| e.versions.get_mut(&key.rv))
        else {
            return;
        };
        let Some(idx) = state.slots.iter().position(|s| s.instance.id() == id) else {
            return; // already removed (crashed, reaped)
        };
        let slot = &mut state.slots[idx];
        slot.active = slot.active.saturating_sub(1);
        slot.last_used = Instant::now();
        let done = slot.active == 0 && (slot.retired || state.limits.once_only);
        let victim = if broken || done {
            let slot = state.slots.swap_remove(idx);
            self.metrics
                .function_instances
                .get_or_create(&state.labels)
                .dec();
            Some(slot.instance)
        } else {
            None
        };
        // One request slot (or one concurrency slot) freed: one waiter can use it. (A woken
        // waiter that was cancelled passes the wake-up on.)
        state.notify.notify_one();
        if victim.is_some() {
            st.index.remove(&id);
        }
        drop(st);
        if let Some(instance) = victim {
            if broken {
                tracing::info!(
                    instance = id,
                    "retiring instance marked broken by its caller"
                );
            }
            instance.kill();
        }
    }

    /// An instance exited (crashed or was killed): forget it and wake waiters.
    pub(crate) fn remove_instance(&self, id: u64) {
        let mut st = self.lock();
        let Some(key) = st.index.remove(&id) else {
            return;
        };
        if let Some(state) = st
            .by_uid
            .get_mut(&key.uid)
            .and_then(|e| e.versions.get_mut(&key.rv))
        {
            if let Some(idx) = state.slots.iter().position(|s| s.instance.id() == id) {
                state.slots.swap_remove(idx);
                self.metrics
                    .function_instances
                    .get_or_create(&state.labels)
                    .dec();
            }
            state.notify.notify_waiters();
        }
    }

    /// The change feed reports version `rv` of function `uid` (`None`: deleted). Instances of
    /// older versions (all, if deleted) stop taking leases and are killed once idle.
    pub(crate) fn function_changed(&self, uid: &str, rv: Option<&str>) {
        let current = rv.map_or(u64::MAX, rv_number);
        let mut victims = Vec::new();
        {
            let mut st = self.lock();
            let entry = st.by_uid.entry(uid.to_owned()).or_default();
            entry.latest = entry.latest.max(current);
            let latest = entry.latest;
            for (version, state) in entry.versions.iter_mut() {
                if rv_number(version) < latest {
                    state.draining = true;
                    retire_where(state, &self.metrics, |_| true, &mut victims);
                }
            }
            let TableState { by_uid, index } = &mut *st;
            for v in &victims {
                index.remove(&v.id());
            }
            if let Some(entry) = by_uid.get_mut(uid) {
                entry
                    .versions
                    .retain(|_, s| !(s.draining && s.slots.is_empty() && s.specializing == 0));
            }
        }
        for v in victims {
            v.kill();
        }
    }

    /// After a relist: every function not in `present` (uid → resourceVersion) is gone.
    pub(crate) fn reconcile(&self, present: &HashMap<String, String>) {
        let known: Vec<String> = self.lock().by_uid.keys().cloned().collect();
        for uid in known.iter().filter(|u| !present.contains_key(*u)) {
            self.function_changed(uid, None);
        }
        for (uid, rv) in present {
            self.function_changed(uid, Some(rv));
        }
    }

    /// The warm pool `pool_id` was replaced (environment updated or deleted): its specialized
    /// instances finish their requests and go.
    pub(crate) fn retire_pool(&self, pool_id: u64) {
        let mut victims = Vec::new();
        {
            let mut st = self.lock();
            for entry in st.by_uid.values_mut() {
                for state in entry.versions.values_mut() {
                    retire_where(state, &self.metrics, |s| s.pool_id == pool_id, &mut victims);
                }
            }
            for v in &victims {
                st.index.remove(&v.id());
            }
        }
        for v in victims {
            v.kill();
        }
    }

    /// Remove instances idle past their function's idle timeout (keeping the `retainPods` most
    /// recently used per function version) and idle retired ones; return them for killing.
    pub(crate) fn reap(&self, now: Instant) -> Vec<Reaped> {
        let mut victims: Vec<Reaped> = Vec::new();
        let mut st = self.lock();
        for entry in st.by_uid.values_mut() {
            for state in entry.versions.values_mut() {
                let mut idle: Vec<(Instant, u64)> = state
                    .slots
                    .iter()
                    .filter(|s| s.active == 0 && !s.retired)
                    .map(|s| (s.last_used, s.instance.id()))
                    .collect();
                idle.sort_by_key(|s| std::cmp::Reverse(s.0)); // most recently used first
                let expired: Vec<u64> = idle
                    .into_iter()
                    .skip(state.limits.retain)
                    .filter(|(t, _)| now.saturating_duration_since(*t) >= state.limits.idle_timeout)
                    .map(|(_, id)| id)
                    .collect();
                let before = victims.len();
                let mut i = 0;
                while i < state.slots.len() {
                    let s = &state.slots[i];
                    if s.active == 0 && (s.retired || expired.contains(&s.instance.id())) {
                        let retired = s.retired;
                        victims.push(Reaped {
                            function: format!(
                                "{}/{}",
                                state.labels.function_namespace, state.labels.function_name
                            ),
                            retired,
                            instance: state.slots.swap_remove(i).instance,
                        });
                    } else {
                        i += 1;
                    }
                }
                let removed = victims.len() - before;
                if removed > 0 {
                    self.metrics
                        .function_instances
                        .get_or_create(&state.labels)
                        .dec_by(removed as i64);
                    state.notify.notify_waiters();
                }
            }
            // Nothing left and nothing on the way: forget the version. (A waiter implies a
            // full version or an in-flight specialization, so no waiter is orphaned.)
            entry
                .versions
                .retain(|_, s| !(s.slots.is_empty() && s.specializing == 0 && s.joined == 0));
        }
        st.by_uid
            .retain(|_, e| !e.versions.is_empty() || e.latest == u64::MAX);
        for v in &victims {
            st.index.remove(&v.instance.id());
        }
        victims
    }

    /// Retire everything and return every instance (shutdown).
    pub(crate) fn take_all(&self) -> Vec<Arc<dyn RuntimeInstance>> {
        let mut st = self.lock();
        let mut all = Vec::new();
        for entry in st.by_uid.values_mut() {
            for state in entry.versions.values_mut() {
                let n = state.slots.len() as i64;
                all.extend(state.slots.drain(..).map(|s| s.instance));
                self.metrics
                    .function_instances
                    .get_or_create(&state.labels)
                    .dec_by(n);
                state.draining = true;
                state.notify.notify_waiters();
            }
        }
        st.index.clear();
        all
    }
}

/// Mark the matching slots retired; move the idle ones to `victims`.
fn retire_where(
    state: &mut FunctionState,
    metrics: &Metrics,
    matches: impl Fn(&Slot) -> bool,
    victims: &mut Vec<Arc<dyn RuntimeInstance>>,
) {
    let mut i = 0;
    let mut removed = 0;
    while i < state.slots.len() {
        if matches(&state.slots[i]) {
            state.slots[i].retired = true;
            if state.slots[i].active == 0 {
                victims.push(state.slots.swap_remove(i).instance);
                removed += 1;
                continue;
            }
        }
        i += 1;
    }
    if removed > 0 {
        metrics
            .function_instances
            .get_or_create(&state.labels)
            .dec_by(removed);
    }
    state.notify.notify_waiters();
}

/// Called by [`InstanceLease`] on drop.
struct SlotRelease {
    table: Weak<FunctionTable>,
    key: VersionKey,
    id: u64,
    /// The instance's exit, kept apart from the instance itself: the table forgets an instance
    /// the moment it dies, which is exactly when a failed request asks why.
    exit: tokio::sync::watch::Receiver<Option<crate::launcher::ExitReport>>,
}

impl LeaseRelease for SlotRelease {
    fn release(&self, broken: bool) {
        if let Some(table) = self.table.upgrade() {
            table.release(&self.key, self.id, broken);
        }
    }

    fn exit_cause(&self) -> Option<String> {
        let report = self.exit.borrow().clone()?;
        (!report.killed).then_some(report.status)
    }
}

/// The right to specialize one instance for a function version (it holds one of the
/// version's `concurrency` slots). Dropping it unused gives the slot back.
pub(crate) struct Ticket {
    table: Weak<FunctionTable>,
    key: VersionKey,
    armed: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let (true, Some(table)) = (self.armed, self.table.upgrade()) {
            table.abandon(&self.key);
        }
    }
}

/// A request counted as waiting for an in-flight specialization's spare capacity; dropping it
/// (woken, timed out or cancelled) uncounts it.
pub(crate) struct JoinGuard {
    table: Weak<FunctionTable>,
    key: VersionKey,
}

impl Drop for JoinGuard {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade() {
            table.unjoin(&self.key);
        }
    }
}
