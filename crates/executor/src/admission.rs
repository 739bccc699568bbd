//! Server-wide admission control: how many instances may exist and how many specializations
//! may run at once, whatever the functions' own `concurrency` allows. A cold start beyond the
//! specialization budget waits (for a budget slot, or for an instance of its function to free
//! up) in a bounded queue with a deadline; a full queue or a passed deadline is answered with
//! [`ExecutorError::Overloaded`], which the router serves as 429/503 with `Retry-After`.
//! Without this, a burst of N first calls to a function with `requestsPerPod` 1 starts N
//! runtimes at once and every one of them misses its deadline on a small machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fission_core::ExecutorError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Memory a runtime instance is budgeted at when sizing the instance cap from the machine.
const INSTANCE_MEMORY_ESTIMATE: u64 = 48 << 20;

/// The limits (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Most instances (generic and specialized) alive at once.
    pub max_instances: usize,
    /// Most specializations in progress at once.
    pub max_specializations: usize,
    /// Most cold starts waiting for a specialization slot.
    pub max_queued: usize,
    /// Longest a cold start waits in the queue (also bounded by the function's timeout).
    pub max_queue_wait: Duration,
}

impl AdmissionConfig {
    /// Limits for this machine: instances from its memory (a 48 MiB budget each, at least 16),
    /// specializations from its CPUs (2 per CPU: a fresh runtime boot is ~100 ms of CPU, and
    /// boots beyond what the CPUs can run only slow down the calls already being served).
    pub fn for_this_machine() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map_or(4 << 30, |kib| kib * 1024);
        Self::for_resources(cpus, memory)
    }

    /// Limits for a machine with `cpus` and `memory_bytes`.
    pub fn for_resources(cpus: usize, memory_bytes: u64) -> Self {
        let by_memory =
            usize::try_from(memory_bytes / INSTANCE_MEMORY_ESTIMATE).unwrap_or(usize::MAX);
        Self {
            max_instances: by_memory.clamp(16, 100_000),
            max_specializations: (cpus * 2).max(2),
            max_queued: 10_000,
            max_queue_wait: Duration::from_secs(10),
        }
    }
}

/// The live admission state.
pub(crate) struct Admission {
    pub config: AdmissionConfig,
    specializations: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
}

/// A place in the cold-start queue, given back on drop.
pub(crate) struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub(crate) fn new(config: AdmissionConfig) -> Self {
        Self {
            specializations: Arc::new(Semaphore::new(config.max_specializations.max(1))),
            queued: Arc::new(AtomicUsize::new(0)),
            config,
        }
    }

    /// A specialization slot if one is free now.
    pub(crate) fn try_specialize(&self) -> Option<OwnedSemaphorePermit> {
        self.specializations.clone().try_acquire_owned().ok()
    }

    /// Wait for a specialization slot.
    pub(crate) async fn specialize(&self) -> Option<OwnedSemaphorePermit> {
        self.specializations.clone().acquire_owned().await.ok()
    }

    /// Join the queue, or be refused when it is full.
    pub(crate) fn enqueue(&self) -> Result<Queued, ExecutorError> {
        let before = self.queued.fetch_add(1, Ordering::AcqRel);
        let place = Queued(self.queued.clone());
        if before >= self.config.max_queued {
            return Err(ExecutorError::Overloaded {
                message: format!("{before} cold starts are already waiting for this server"),
                retry_after_secs: 1,
                queue_full: true,
            });
        }
        Ok(place)
    }

    /// The error for a cold start whose queue deadline passed.
    pub(crate) fn waited_too_long(&self, waited: Duration) -> ExecutorError {
        ExecutorError::Overloaded {
            message: format!(
                "no capacity for a new instance within {:.1}s ({} specializations at once, {} instances at most)",
                waited.as_secs_f64(),
                self.config.max_specializations,
                self.config.max_instances
            ),
            retry_after_secs: 1,
            queue_full: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_machine() {
        let small = AdmissionConfig::for_resources(2, 24 << 30);
        assert_eq!(small.max_specializations, 4);
        assert_eq!(small.max_instances, 512);
        let tiny = AdmissionConfig::for_resources(1, 256 << 20);
        assert_eq!((tiny.max_specializations, tiny.max_instances), (2, 16));
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let a = Admission::new(AdmissionConfig {
            max_queued: 1,
            ..AdmissionConfig::for_resources(1, 1 << 30)
        });
        let first = a.enqueue().expect("room for one");
        let err = a.enqueue().err().expect("full");
        assert!(
            matches!(
                err,
                ExecutorError::Overloaded {
                    queue_full: true,
                    ..
                }
            ),
            "{err}"
        );
        drop(first);
        assert!(a.enqueue().is_ok(), "the place was given back");
    }
}
