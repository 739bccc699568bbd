//! newdeploy in local mode: a function's own instances, at least `MinScale` of them kept
//! specialized (so its first call is warm), more up to `MaxScale` under load (see
//! `instances.rs`: a new instance once every live one carries its target of in-flight calls),
//! back to `MinScale` after `idletimeout` (the reaper keeps `MinScale` idle ones; `MinScale`
//! 0 scales to zero and the next call is a cold start). With `TargetCPUPercent` set, an
//! instance is also added (one at a time, up to `MaxScale`) when the function's instances
//! used more than that share of their CPU over the last reaper interval — what an HPA on the
//! Deployment would do.

use std::sync::Arc;

use fission_core::resources::{Function, executor_type};

use crate::Executor;
use crate::backend::InstanceBackend;

impl<B: InstanceBackend> Executor<B> {
    /// Remember a created or updated function; a newdeploy one is brought to `MinScale`.
    pub(crate) fn track_scaled(&self, function: &Function) {
        let mut scaled = self.lock_scaled();
        if function.spec.executor_type() == executor_type::NEWDEPLOY {
            scaled.insert(function.metadata.uid.clone(), function.clone());
            drop(scaled);
            if self.deployed(function).is_some() {
                // The cluster keeps it at MinScale (see deployments.rs).
                self.deploy_changed(function);
                return;
            }
            self.ensure_min_scale(function.clone());
        } else if let Some(before) = scaled.remove(&function.metadata.uid) {
            drop(scaled);
            // No longer newdeploy: its Deployment goes.
            if self.deployed(&before).is_some() {
                self.undeploy(&before);
            }
        }
    }

    /// Forget a deleted function.
    pub(crate) fn untrack_scaled(&self, uid: &str) {
        self.lock_scaled().remove(uid);
    }

    /// Bring every newdeploy function back to `MinScale` (instances crash, and the reaper's
    /// pass may have left fewer than the floor after an update).
    pub(crate) fn ensure_all_min_scale(&self) {
        if let Some(d) = self.deployed.as_ref() {
            self.scale_idle_deployments(d);
            return;
        }
        let functions: Vec<Function> = self.lock_scaled().values().cloned().collect();
        for f in functions {
            self.ensure_min_scale(f);
        }
    }

    /// Specialize instances of `function` until it has `MinScale`, in the background.
    fn ensure_min_scale(&self, function: Function) {
        let Some(me) = self.me.upgrade() else { return };
        while let Some(ticket) = self.table.reserve_below_min_scale(&function) {
            let me = me.clone();
            let function = function.clone();
            self.tasks.spawn(async move {
                let permit = tokio::select! {
                    p = me.admission.specialize() => p,
                    () = me.stopping.cancelled() => None,
                };
                let Some(permit) = permit else { return };
                let name = format!("{}/{}", function.metadata.namespace, function.metadata.name);
                match Arc::clone(&me).specialize_new(function, ticket, permit).await {
                    // The warm-up holds no call: releasing its lease leaves the instance idle.
                    Ok(lease) => drop(lease),
                    Err(error) => tracing::warn!(function = %name, %error, "cannot bring the function to its MinScale"),
                }
            });
        }
    }

    /// Add an instance to each newdeploy function with a `TargetCPUPercent` whose instances
    /// ran hotter than it since the last sample.
    pub(crate) async fn scale_on_cpu(&self) {
        let functions: Vec<Function> = self
            .lock_scaled()
            .values()
            .filter(|f| f.spec.invoke_strategy.execution_strategy.target_cpu_percent > 0)
            .cloned()
            .collect();
        for function in functions {
            let instances = self.table.instances_of(&function);
            if instances.is_empty() {
                continue;
            }
            let samples = tokio::task::spawn_blocking(move || {
                instances
                    .iter()
                    .map(|i| (i.id(), i.cpu_time()))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let now = tokio::time::Instant::now();
            let mut percents = Vec::new();
            {
                let mut last = self.lock_cpu_samples();
                for (id, cpu) in samples {
                    let Some(cpu) = cpu else { continue };
                    if let Some((then, before)) = last.insert(id, (now, cpu)) {
                        let wall = now.saturating_duration_since(then).as_secs_f64();
                        if wall > 0.0 {
                            percents.push(cpu.saturating_sub(before).as_secs_f64() * 100.0 / wall);
                        }
                    }
                }
            }
            let Some(average) = (!percents.is_empty())
                .then(|| percents.iter().sum::<f64>() / percents.len() as f64)
            else {
                continue;
            };
            let target = f64::from(
                function
                    .spec
                    .invoke_strategy
                    .execution_strategy
                    .target_cpu_percent,
            );
            if average <= target {
                continue;
            }
            let Some(ticket) = self.table.reserve_scale_out(&function) else {
                continue;
            };
            let Some(me) = self.me.upgrade() else { return };
            let name = format!("{}/{}", function.metadata.namespace, function.metadata.name);
            tracing::info!(function = %name, cpu_percent = average, target, "scaling out on CPU");
            self.tasks.spawn(async move {
                let permit = tokio::select! {
                    p = me.admission.specialize() => p,
                    () = me.stopping.cancelled() => None,
                };
                let Some(permit) = permit else { return };
                if let Err(error) = Arc::clone(&me)
                    .specialize_new(function, ticket, permit)
                    .await
                    .map(drop)
                {
                    tracing::warn!(function = %name, %error, "cannot scale out");
                }
            });
        }
        // Forget instances that are gone.
        let live: std::collections::HashSet<u64> =
            self.lock_live().instances.keys().copied().collect();
        self.lock_cpu_samples().retain(|id, _| live.contains(id));
    }

    /// How many instances serve `namespace/name` now (every version).
    pub fn instance_count(&self, namespace: &str, name: &str) -> usize {
        self.table.instance_count(namespace, name) + self.deployed_count(namespace, name)
    }
}

impl<B: InstanceBackend> fission_core::InstanceReport for Executor<B> {
    fn instance_count(&self, namespace: &str, name: &str) -> usize {
        Executor::instance_count(self, namespace, name)
    }
    fn instance_counts(&self) -> Vec<(String, String, usize)> {
        self.table.instance_counts()
    }
}
