//! Time triggers: one task per TimeTrigger, firing on its schedule.
//!
//! Fires missed while the server was down (or the task was late) are not replayed: the next
//! fire is always computed from the current time. A fire that comes while the previous call is
//! still running is skipped and counted, so a slow function never has calls stacked on it.

use std::collections::HashMap;

use bytes::Bytes;
use fission_core::resources::TimeTrigger;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Call, Delivery, RetryPolicy, TriggerKey, TriggerKind};
use crate::schedule::Schedule;

/// Header Fission's timer adds to every call.
pub const TIMER_NAME_HEADER: &str = "X-Fission-Timer-Name";

struct Running {
    spec: fission_core::resources::TimeTriggerSpec,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The running timers, keyed by (namespace, name).
pub(crate) struct Timers {
    delivery: Delivery,
    shutdown: CancellationToken,
    running: HashMap<(String, String), Running>,
}

impl Timers {
    pub(crate) fn new(delivery: Delivery, shutdown: CancellationToken) -> Self {
        Self {
            delivery,
            shutdown,
            running: HashMap::new(),
        }
    }

    /// Make the running timers exactly `triggers`.
    pub(crate) fn replace_all(&mut self, triggers: Vec<TimeTrigger>) {
        for (ns, name) in crate::delivery::departed(&self.running, &triggers) {
            self.remove(&ns, &name);
        }
        for t in triggers {
            self.apply(t);
        }
    }

    /// Start or restart the timer of `t` (unchanged specs keep their task and schedule).
    pub(crate) fn apply(&mut self, t: TimeTrigger) {
        let id = (t.metadata.namespace.clone(), t.metadata.name.clone());
        if self.running.get(&id).is_some_and(|r| r.spec == t.spec) {
            return;
        }
        if let Some(old) = self.running.remove(&id) {
            old.stop.cancel();
        }
        let key = TriggerKey {
            kind: TriggerKind::TimeTrigger,
            namespace: id.0.clone(),
            name: id.1.clone(),
        };
        self.delivery.status().register(&key);
        let schedule = match Schedule::parse(&t.spec.cron) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(trigger = %key, error = %e, "time trigger not scheduled");
                self.delivery.status().set_error(&key, e.to_string());
                return;
            }
        };
        let stop = self.shutdown.child_token();
        let task = tokio::spawn(run_timer(
            self.delivery.clone(),
            key,
            t.spec.clone(),
            schedule,
            stop.clone(),
        ));
        self.running.insert(
            id,
            Running {
                spec: t.spec,
                stop,
                task,
            },
        );
    }

    /// Stop the timer of a deleted trigger.
    pub(crate) fn remove(&mut self, namespace: &str, name: &str) {
        if let Some(old) = self
            .running
            .remove(&(namespace.to_owned(), name.to_owned()))
        {
            old.stop.cancel();
        }
        self.delivery.status().remove(&TriggerKey {
            kind: TriggerKind::TimeTrigger,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }

    /// Stop every timer and wait for their tasks (in-flight calls are cancelled).
    pub(crate) async fn stop_all(&mut self) {
        for (_, r) in self.running.drain() {
            r.stop.cancel();
            let _ = r.task.await;
        }
    }
}

async fn run_timer(
    delivery: Delivery,
    key: TriggerKey,
    spec: fission_core::resources::TimeTriggerSpec,
    schedule: Schedule,
    stop: CancellationToken,
) {
    let method =
        reqwest::Method::from_bytes(spec.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let call = Call {
        method,
        namespace: key.namespace.clone(),
        function: spec.functionref.name.clone(),
        subpath: spec.subpath.clone(),
        headers: vec![(TIMER_NAME_HEADER.to_owned(), key.name.clone())],
        body: Bytes::new(),
    };
    tracing::info!(trigger = %key, cron = %spec.cron, function = %call.function, "time trigger scheduled");
    let mut in_flight: Option<JoinHandle<()>> = None;
    let mut last_fire: Option<chrono::DateTime<chrono::Local>> = None;
    loop {
        let now = chrono::Local::now();
        // From the later of now and the last fire: never the same instant twice, never a
        // replay of fires that passed while nothing ran.
        let from = match last_fire {
            Some(l) if l > now => l,
            _ => now,
        };
        let Some(next) = schedule.next_after(&from) else {
            tracing::info!(trigger = %key, "schedule has no further fire times");
            break;
        };
        let wait = (next - chrono::Local::now()).to_std().unwrap_or_default();
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        last_fire = Some(next);
        if in_flight.as_ref().is_some_and(|h| !h.is_finished()) {
            delivery.skipped(&key);
            continue;
        }
        delivery.fired(&key);
        let (delivery, key, call, stop) =
            (delivery.clone(), key.clone(), call.clone(), stop.clone());
        in_flight = Some(tokio::spawn(async move {
            // The outcome is recorded by `deliver` (status, metrics, function log).
            let _ = delivery
                .deliver(&key, &call, RetryPolicy::PUBLISHER, &stop)
                .await;
        }));
    }
    if let Some(h) = in_flight {
        let _ = h.await;
    }
}
