//! The idle reaper: every `reaper_interval`, specialized instances idle longer than their
//! function's `idletimeout` are killed, except the `retainPods` most recently used per
//! function version. It runs on tokio time, so tests can pause and advance the clock.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};

use crate::Executor;
use crate::backend::InstanceBackend;

pub(crate) async fn run<B: InstanceBackend>(executor: Arc<Executor<B>>) {
    let mut tick = tokio::time::interval(executor.config.reaper_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = executor.stopping.cancelled() => return,
        }
        reap_once(&executor);
        executor.ensure_all_min_scale();
        executor.scale_on_cpu().await;
    }
}

/// One reaper pass; returns how many instances were stopped. Logs one line per function.
pub(crate) fn reap_once<B: InstanceBackend>(executor: &Executor<B>) -> usize {
    let victims = executor.table.reap(Instant::now());
    let mut by_function: BTreeMap<(&str, bool), Vec<u64>> = BTreeMap::new();
    for v in &victims {
        v.instance.kill();
        by_function
            .entry((v.function.as_str(), v.retired))
            .or_default()
            .push(v.instance.id());
    }
    for ((function, retired), ids) in by_function {
        let why = if retired {
            "superseded by a newer version"
        } else {
            "idle past idletimeout"
        };
        tracing::info!(function, instances = ?ids, "stopping {} instance(s): {why}", ids.len());
    }
    victims.len()
}
