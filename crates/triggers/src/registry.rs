//! The running triggers of one kind: a task per trigger, kept equal to what the store holds.
//!
//! Every trigger kind follows the store the same way — the listing replaces the set, an
//! applied object starts or restarts its task (an unchanged spec keeps it, so a resync does
//! not reset a timer or reconnect a consumer), a deleted one stops it — and differs only in
//! what its task does. That part is a [`TriggerTasks`]; this module owns the rest once.

use std::collections::{HashMap, HashSet};

use fission_core::Object;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Delivery, TriggerKey, TriggerKind};

/// What serving one trigger of a kind means.
pub(crate) trait TriggerTasks {
    /// The kind's spec.
    type Spec: fission_core::Spec;
    /// The kind, for status keys.
    const KIND: TriggerKind;

    /// Start serving a trigger until `stop`. `None` when it cannot be served at all; the
    /// implementation has said why in its status (a later apply with any spec tries again).
    fn start(
        &self,
        key: TriggerKey,
        spec: &Self::Spec,
        stop: CancellationToken,
    ) -> Option<JoinHandle<()>>;
}

struct Running<S> {
    spec: S,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The running triggers of kind `T`, keyed by (namespace, name).
pub(crate) struct Registry<T: TriggerTasks> {
    tasks: T,
    delivery: Delivery,
    shutdown: CancellationToken,
    running: HashMap<(String, String), Running<T::Spec>>,
}

impl<T: TriggerTasks> Registry<T> {
    pub(crate) fn new(tasks: T, delivery: Delivery, shutdown: CancellationToken) -> Self {
        Self {
            tasks,
            delivery,
            shutdown,
            running: HashMap::new(),
        }
    }

    /// Make the running set exactly `triggers` (after a listing).
    pub(crate) fn replace_all(&mut self, triggers: Vec<Object<T::Spec>>) {
        let keep: HashSet<(&str, &str)> = triggers
            .iter()
            .map(|t| (t.metadata.namespace.as_str(), t.metadata.name.as_str()))
            .collect();
        let departed: Vec<(String, String)> = self
            .running
            .keys()
            .filter(|(ns, name)| !keep.contains(&(ns.as_str(), name.as_str())))
            .cloned()
            .collect();
        for (ns, name) in departed {
            self.remove(&ns, &name);
        }
        for t in triggers {
            self.apply(t);
        }
    }

    /// Start or restart the task of `t`; an unchanged spec keeps the running one.
    pub(crate) fn apply(&mut self, t: Object<T::Spec>) {
        let id = (t.metadata.namespace, t.metadata.name);
        if self.running.get(&id).is_some_and(|r| r.spec == t.spec) {
            return;
        }
        if let Some(old) = self.running.remove(&id) {
            old.stop.cancel();
        }
        let key = TriggerKey {
            kind: T::KIND,
            namespace: id.0.clone(),
            name: id.1.clone(),
        };
        self.delivery.status().register(&key);
        let stop = self.shutdown.child_token();
        if let Some(task) = self.tasks.start(key, &t.spec, stop.clone()) {
            self.running.insert(
                id,
                Running {
                    spec: t.spec,
                    stop,
                    task,
                },
            );
        }
    }

    /// Stop the task of a deleted trigger and forget its status.
    pub(crate) fn remove(&mut self, namespace: &str, name: &str) {
        if let Some(old) = self
            .running
            .remove(&(namespace.to_owned(), name.to_owned()))
        {
            old.stop.cancel();
        }
        self.delivery.status().remove(&TriggerKey {
            kind: T::KIND,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }

    /// Stop every task and wait for them (in-flight calls are cancelled).
    pub(crate) async fn stop_all(&mut self) {
        for (_, r) in self.running.drain() {
            r.stop.cancel();
            let _ = r.task.await;
        }
    }
}
