//! The request path: lease a warm instance, or specialize a new one (the cold path), or wait
//! for one at the function's concurrency limit.

use std::sync::Arc;
use std::time::Duration;

use fission_core::resources::{Function, executor_type, function_defaults};
use fission_core::{ExecutorError, InstanceLease};

use crate::Executor;
use tokio::sync::OwnedSemaphorePermit;

use crate::backend::{InstanceBackend, LoadError, Specialization};
use crate::instances::{Decision, Ticket};
use crate::launcher::{RuntimeInstance, wait_exit};
use crate::metrics::{self, SpecializationLabels};

impl<B: InstanceBackend> Executor<B> {
    pub(crate) async fn acquire_instance(
        &self,
        function: &Function,
    ) -> Result<InstanceLease, ExecutorError> {
        if self.stopping.is_cancelled() {
            return Err(ExecutorError::ShuttingDown);
        }
        let secs = match function.spec.function_timeout {
            t if t > 0 => t as u64,
            _ => function_defaults::FUNCTION_TIMEOUT as u64,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let timeout = || ExecutorError::Timeout {
            function: format!("{}/{}", function.metadata.namespace, function.metadata.name),
            secs,
        };
        if let Some(d) = self.deployed(function) {
            return self.acquire_deployed(d, function, deadline).await;
        }
        // A specialization slot won while queueing, kept for the next decision.
        let mut slot: Option<OwnedSemaphorePermit> = None;
        let mut queued_since: Option<tokio::time::Instant> = None;
        loop {
            match self.table.try_acquire(function) {
                Decision::Leased(lease) => return Ok(lease),
                Decision::Specialize(ticket) => {
                    if function.spec.executor_type() == executor_type::CONTAINER {
                        return Err(ExecutorError::Unsupported(format!(
                            "function '{}' uses the container executor, which is not supported yet",
                            function.metadata.name
                        )));
                    }
                    let Some(permit) = slot.take().or_else(|| self.admission.try_specialize())
                    else {
                        // Over the server's budget: give the function's slot back and queue for
                        // a budget slot or for one of the function's instances to free up.
                        drop(ticket);
                        let since = *queued_since.get_or_insert_with(tokio::time::Instant::now);
                        let _place = self.admission.enqueue()?;
                        let queue_deadline =
                            deadline.min(since + self.admission.config.max_queue_wait);
                        let change = self.table.change_of(function);
                        tokio::select! {
                            p = self.admission.specialize() => slot = p,
                            () = wait_for(change) => {}
                            () = tokio::time::sleep_until(queue_deadline) => {
                                return Err(if queue_deadline == deadline { timeout() } else { self.admission.waited_too_long(since.elapsed()) });
                            }
                            () = self.stopping.cancelled() => return Err(ExecutorError::ShuttingDown),
                        }
                        continue;
                    };
                    let me = self.me.upgrade().ok_or(ExecutorError::ShuttingDown)?;
                    // A task of its own: if the caller gives up, the specialization still
                    // completes and the instance serves the next request.
                    // The span is the caller's child: a trace of a cold call shows its specialization.
                    let span = tracing::debug_span!(
                        "specialize",
                        fission.function = %function.metadata.name,
                        fission.namespace = %function.metadata.namespace,
                    );
                    let task = self.tasks.spawn(tracing::Instrument::instrument(
                        me.specialize_new(function.clone(), ticket, permit),
                        span,
                    ));
                    return match tokio::time::timeout_at(deadline, task).await {
                        Ok(Ok(result)) => result,
                        Ok(Err(e)) => Err(ExecutorError::Internal(format!(
                            "specialization task failed: {e}"
                        ))),
                        Err(_) => Err(timeout()),
                    };
                }
                Decision::Wait(wait, joined) => {
                    let _joined = joined;
                    tokio::select! {
                        () = wait => {}
                        () = tokio::time::sleep_until(deadline) => return Err(timeout()),
                        () = self.stopping.cancelled() => return Err(ExecutorError::ShuttingDown),
                    }
                }
            }
        }
    }

    /// How long loading `function` may take: the `specializationtimeout` a user set (Fission's
    /// `--specializationtimeout`), else the executor's own limit. A function left at Fission's
    /// default (120 s) gets the executor's limit (30 s unless configured): a runtime that has
    /// not loaded a function in 30 s is broken, and callers should hear so sooner.
    pub(crate) fn specialize_timeout(&self, function: &Function) -> Duration {
        match function
            .spec
            .invoke_strategy
            .execution_strategy
            .specialization_timeout
        {
            s if s > 0 && s != function_defaults::SPECIALIZATION_TIMEOUT => {
                Duration::from_secs(s as u64)
            }
            _ => self.config.specialize_timeout,
        }
    }

    /// The cold path: specialize a new instance for `function` and lease it.
    pub(crate) async fn specialize_new(
        self: Arc<Self>,
        function: Function,
        ticket: Ticket,
        _budget: OwnedSemaphorePermit,
    ) -> Result<InstanceLease, ExecutorError> {
        let name = format!("{}/{}", function.metadata.namespace, function.metadata.name);
        let failed = |message: String| ExecutorError::SpecializationFailed {
            function: name.clone(),
            message,
        };

        // Phase boundaries for the debug line below (where a cold start's time goes).
        let t_begin = tokio::time::Instant::now();
        let pool = self.pool_for(&function).await?;
        let package = self.package_of(&function).await?;

        let started = tokio::time::Instant::now();
        let generic = self.take_generic(&pool).await?;
        let t_taken = tokio::time::Instant::now();
        let instance = generic.instance.clone();
        let mut guard = KillUnlessKept(Some(instance.clone()));
        let id = instance.id();
        // From here on the runtime's output (including the loader's errors) is the function's.
        generic.log.retarget(self.logs.writer(
            &function.metadata.namespace,
            &function.metadata.name,
            id,
        ));

        let timeout = self.specialize_timeout(&function);
        let target = Specialization {
            function: &function,
            package: &package,
            environment: &pool.env,
            timeout,
        };
        let loading = tokio::time::timeout(
            timeout,
            self.backend.specialize(&*instance, &generic.log, target),
        );
        let outcome = tokio::select! {
            r = loading => match r {
                Ok(r) => r,
                Err(_) => Err(LoadError::Unreachable(format!("the runtime did not answer the specialize request within {timeout:?}"))),
            },
            report = wait_exit(&*instance) => Err(LoadError::Unreachable(with_output(
                format!("the runtime exited while loading the function ({report})"),
                &generic.log.recent_output(),
            ))),
        };
        let runtime = pool.plan.runtime.to_owned();
        let elapsed = started.elapsed().as_secs_f64();
        if let Err(error) = outcome {
            self.metrics
                .specialization_seconds
                .get_or_create(&SpecializationLabels {
                    runtime,
                    outcome: "failure",
                })
                .observe(elapsed);
            self.metrics
                .specialization_failures
                .get_or_create(&metrics::function_labels(
                    &function.metadata.namespace,
                    &function.metadata.name,
                ))
                .inc();
            tracing::info!(function = %name, instance = id, %error, "specialization failed");
            return Err(failed(error.to_string())); // the guard kills the instance
        }
        guard.0 = None;
        pool.note_healthy();
        self.metrics
            .specialization_seconds
            .get_or_create(&SpecializationLabels {
                runtime,
                outcome: "success",
            })
            .observe(elapsed);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        tracing::debug!(
            function = %name,
            instance = id,
            ms = elapsed * 1000.0,
            lookup_ms = ms(started - t_begin),
            take_ms = ms(t_taken - started),
            load_ms = ms(t_taken.elapsed()),
            "specialized"
        );
        let lease = self
            .table
            .complete(ticket, instance.clone(), pool.id, pool.is_closed());
        if instance.exit_watch().borrow().is_some() {
            // Died between answering and joining the table: its exit was processed before it
            // was listed, so remove it now (the caller gets a connection error, as for any crash).
            self.table.remove_instance(id);
        }
        Ok(lease)
    }
}

/// Wait for a registered wake-up; with none, a short pause so the caller decides again.
async fn wait_for(change: Option<std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>>) {
    match change {
        Some(c) => c.await,
        None => tokio::time::sleep(Duration::from_millis(20)).await,
    }
}

/// Kills the instance on drop unless emptied (failed or abandoned specializations).
struct KillUnlessKept(Option<Arc<dyn RuntimeInstance>>);

impl Drop for KillUnlessKept {
    fn drop(&mut self) {
        if let Some(i) = self.0.take() {
            i.kill();
        }
    }
}

fn with_output(message: String, output: &str) -> String {
    if output.is_empty() {
        message
    } else {
        format!("{message}; last output:\n{output}")
    }
}
