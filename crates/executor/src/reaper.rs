//! The idle reaper: every `reaper_interval`, specialized instances idle longer than their
//! function's `idletimeout` are killed, except the `retainPods` most recently used per
//! function version. It runs on tokio time, so tests can pause and advance the clock.

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
    }
}

/// One reaper pass; returns how many instances were stopped.
pub(crate) fn reap_once<B: InstanceBackend>(executor: &Executor<B>) -> usize {
    let victims = executor.table.reap(Instant::now());
    for v in &victims {
        tracing::info!(instance = v.id(), "stopping idle instance");
        v.kill();
    }
    victims.len()
}
