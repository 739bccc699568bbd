//! The canary manager (Fission's `canaryconfigmgr`): for each CanaryConfig that is `pending`,
//! every `duration` it moves `weightincrement` percent of the trigger's traffic from the old
//! function to the new one — after checking the new function's failure percentage over the
//! last interval against `failurethreshold`, from the router's own counters. Above the
//! threshold it rolls back (new 0 %, old 100 %) and marks the config `failed`; at 100 % new it
//! marks it `succeeded`. A tick with no traffic to the new function moves nothing, as
//! Fission's does. The first step (new function at 0 %) is taken without a check.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fission_core::resources::{CanaryConfig, HttpTrigger, function_ref_type};
use fission_core::validation::parse_go_duration;
use fission_core::{
    AnyResource, CallCounter, CallCounts, ResourceKind, ResourceStore, StoreError, WatchEventType,
};
use fission_watcher::{Change, Watcher};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// `status.status` values.
pub mod status {
    /// Rolling out.
    pub const PENDING: &str = "pending";
    /// The new function has all the traffic.
    pub const SUCCEEDED: &str = "succeeded";
    /// Rolled back: the new function failed too often.
    pub const FAILED: &str = "failed";
    /// Stopped: the trigger or a function is gone or does not split between the two.
    pub const ABORTED: &str = "aborted";
}

/// Drive every pending CanaryConfig until `shutdown`.
pub async fn run(
    store: Arc<dyn ResourceStore>,
    calls: Arc<dyn CallCounter>,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    // One task per config (namespace, name), replaced when the config changes.
    let mut running: HashMap<(String, String), CancellationToken> = HashMap::new();
    let mut watcher = Watcher::new(store.clone(), "canary manager");
    while let Some(next) = watcher.next(&shutdown).await {
        let configs: Vec<(bool, CanaryConfig)> = match next {
            Ok(Change::Listed { objects, .. }) => {
                for (_, stop) in running.drain() {
                    stop.cancel();
                }
                objects
                    .into_iter()
                    .filter_map(|o| match o {
                        AnyResource::CanaryConfig(c) => Some((true, c)),
                        _ => None,
                    })
                    .collect()
            }
            Ok(Change::Applied(ev)) => match ev.object {
                AnyResource::CanaryConfig(c) => vec![(ev.event_type != WatchEventType::Deleted, c)],
                _ => continue,
            },
            Err(e) => {
                tracing::warn!(error = %e, "canary manager cannot list the store; retrying");
                continue;
            }
        };
        for (present, config) in configs {
            let key = (
                config.metadata.namespace.clone(),
                config.metadata.name.clone(),
            );
            if let Some(stop) = running.remove(&key) {
                // Our own status writes come back here too: restart only on a spec change.
                stop.cancel();
            }
            let pending =
                config.status.status.is_empty() || config.status.status == status::PENDING;
            if present && pending {
                let stop = shutdown.child_token();
                running.insert(key, stop.clone());
                tasks.spawn(drive(store.clone(), calls.clone(), config, stop));
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// Run one config's rollout until it ends or `stop`.
async fn drive(
    store: Arc<dyn ResourceStore>,
    calls: Arc<dyn CallCounter>,
    config: CanaryConfig,
    stop: CancellationToken,
) {
    let name = format!("{}/{}", config.metadata.namespace, config.metadata.name);
    let interval = parse_go_duration(&config.spec.duration)
        .map_or(Duration::from_secs(120), Duration::from_millis);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ns = config.metadata.namespace.clone();
    let mut last = calls.calls(&ns, &config.spec.newfunction);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = calls.calls(&ns, &config.spec.newfunction);
        let window = now.since(last);
        last = now;
        match step(store.as_ref(), &config, window).await {
            Ok(Step::Continue) => {}
            Ok(Step::Done(outcome)) => {
                tracing::info!(canary = %name, outcome, "canary rollout finished");
                if let Err(e) = set_status(store.as_ref(), &config, outcome).await {
                    tracing::warn!(canary = %name, error = %e, "cannot record the canary's outcome");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(canary = %name, error = %e, "canary step failed; trying again next interval")
            }
        }
    }
}

enum Step {
    Continue,
    Done(&'static str),
}

/// One tick: judge the last window and move the weights.
async fn step(
    store: &dyn ResourceStore,
    config: &CanaryConfig,
    window: CallCounts,
) -> Result<Step, StoreError> {
    let spec = &config.spec;
    let ns = &config.metadata.namespace;
    let trigger = match store
        .get(ResourceKind::HttpTrigger, ns, &spec.trigger)
        .await
    {
        Ok(AnyResource::HttpTrigger(t)) => t,
        Ok(_) => return Ok(Step::Continue),
        Err(StoreError::NotFound { .. }) => return Ok(Step::Done(status::ABORTED)),
        Err(e) => return Err(e),
    };
    let weights = weights_of(&trigger, &spec.newfunction, &spec.oldfunction);
    let Some((new_weight, _)) = weights else {
        return Ok(Step::Done(status::ABORTED));
    };
    let increment = spec.weightincrement.clamp(1, 100);
    let next = if new_weight == 0 {
        increment
    } else {
        let Some(failed) = window.failure_percent() else {
            return Ok(Step::Continue); // no traffic, nothing to judge
        };
        if failed > f64::from(spec.failurethreshold) {
            tracing::info!(
                canary = %config.metadata.name,
                failed_percent = failed,
                threshold = spec.failurethreshold,
                calls = window.total,
                "new function fails too often; rolling back"
            );
            write_weights(store, trigger, &spec.newfunction, &spec.oldfunction, 0).await?;
            return Ok(Step::Done(status::FAILED));
        }
        (new_weight + increment).min(100)
    };
    write_weights(store, trigger, &spec.newfunction, &spec.oldfunction, next).await?;
    tracing::info!(canary = %config.metadata.name, new_percent = next, "canary weights moved");
    Ok(if next >= 100 {
        Step::Done(status::SUCCEEDED)
    } else {
        Step::Continue
    })
}

/// `(new, old)` weights when the trigger splits between exactly these two functions.
fn weights_of(trigger: &HttpTrigger, new: &str, old: &str) -> Option<(i32, i32)> {
    let r = &trigger.spec.functionref;
    if r.ref_type != function_ref_type::FUNCTION_WEIGHTS {
        return None;
    }
    let w = r.functionweights.as_ref()?;
    Some((*w.get(new)?, *w.get(old)?))
}

async fn write_weights(
    store: &dyn ResourceStore,
    mut trigger: HttpTrigger,
    new: &str,
    old: &str,
    new_percent: i32,
) -> Result<(), StoreError> {
    let weights = BTreeMap::from([
        (new.to_owned(), new_percent),
        (old.to_owned(), 100 - new_percent),
    ]);
    trigger.spec.functionref.functionweights = Some(weights);
    store
        .update(AnyResource::HttpTrigger(trigger))
        .await
        .map(|_| ())
}

async fn set_status(
    store: &dyn ResourceStore,
    config: &CanaryConfig,
    outcome: &str,
) -> Result<(), StoreError> {
    // Re-read so a concurrent edit is not overwritten; the status is ours alone.
    let current = match store
        .get(
            ResourceKind::CanaryConfig,
            &config.metadata.namespace,
            &config.metadata.name,
        )
        .await?
    {
        AnyResource::CanaryConfig(c) => c,
        _ => return Ok(()),
    };
    let mut updated = current;
    updated.status.status = outcome.to_owned();
    store
        .update(AnyResource::CanaryConfig(updated))
        .await
        .map(|_| ())
}
