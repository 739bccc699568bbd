//! Time triggers: one task per TimeTrigger, firing on its schedule.
//!
//! Fires missed while the server was down (or the task was late) are not replayed: the next
//! fire is always computed from the current time. A fire that comes while the previous call is
//! still running is skipped and counted, so a slow function never has calls stacked on it.

use bytes::Bytes;
use fission_core::resources::TimeTriggerSpec;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Call, Delivery, RetryPolicy, TriggerKey, TriggerKind};
use crate::registry::TriggerTasks;
use crate::schedule::Schedule;

/// Header Fission's timer adds to every call.
pub const TIMER_NAME_HEADER: &str = "X-Fission-Timer-Name";

/// Timer tasks for the [`Registry`](crate::registry::Registry).
pub(crate) struct TimerTasks {
    pub(crate) delivery: Delivery,
}

impl TriggerTasks for TimerTasks {
    type Spec = TimeTriggerSpec;
    const KIND: TriggerKind = TriggerKind::TimeTrigger;

    fn start(
        &self,
        key: TriggerKey,
        spec: &TimeTriggerSpec,
        stop: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        let schedule = match Schedule::parse(&spec.cron) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(trigger = %key, error = %e, "time trigger not scheduled");
                self.delivery.status().set_error(&key, e.to_string());
                return None;
            }
        };
        Some(tokio::spawn(run_timer(
            self.delivery.clone(),
            key,
            spec.clone(),
            schedule,
            stop,
        )))
    }
}

async fn run_timer(
    delivery: Delivery,
    key: TriggerKey,
    spec: TimeTriggerSpec,
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
