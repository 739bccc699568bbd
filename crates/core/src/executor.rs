use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::resources::Function;

/// Why the executor could not hand out an instance. The router's response funnel decides the
/// status each variant is served with (Fission's: 404 for a missing function, 500 otherwise,
/// 503 while shutting down). Serializable so that a router in another process gets the same
/// variant the executor produced (the executor API sends it as JSON on request).
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "camelCase")]
pub enum ExecutorError {
    /// The function, its environment or its package does not exist (any more).
    #[error("{0}")]
    NotFound(String),
    /// The runtime refused or failed to load the function's code.
    #[error("[{function}] error specializing function: {message}")]
    SpecializationFailed {
        /// `namespace/name` of the function.
        function: String,
        /// What the loader said.
        message: String,
    },
    /// No instance became available in time.
    #[error("[{function}] timed out after {secs}s waiting for a function instance")]
    Timeout {
        /// `namespace/name`.
        function: String,
        /// How long we waited.
        secs: u64,
    },
    /// The environment cannot run here (unknown image, missing runtime).
    #[error("{0}")]
    Unsupported(String),
    /// The server has no capacity for another instance now (admission control): try again
    /// after `retry_after_secs`.
    #[error("server overloaded: {message}")]
    Overloaded {
        /// What limit was hit.
        message: String,
        /// When trying again makes sense.
        retry_after_secs: u64,
        /// Refused at once (the queue is full) rather than after waiting.
        queue_full: bool,
    },
    /// The server is shutting down.
    #[error("executor is shutting down")]
    ShuttingDown,
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

/// Called when a lease ends, with whether the instance misbehaved (and must be retired).
pub trait LeaseRelease: Send + Sync {
    /// Release the slot; `broken` retires the instance.
    fn release(&self, broken: bool);
    /// Why the instance died (`out of memory (memory limit 64 MiB)`), once it has.
    fn exit_cause(&self) -> Option<String> {
        None
    }
}

/// The right to send requests to one specialized instance until dropped.
///
/// The router holds it for the duration of one proxied request; dropping it frees the slot
/// (`requestsPerPod`) and refreshes the idle timer.
pub struct InstanceLease {
    /// Where the instance listens.
    pub addr: SocketAddr,
    /// Whether this request caused a specialization (a cold start).
    pub cold: bool,
    /// Identifies the instance (for logs and metrics).
    pub instance_id: u64,
    broken: bool,
    release: Option<Arc<dyn LeaseRelease>>,
}

impl InstanceLease {
    /// A lease that calls `release` when dropped.
    pub fn new(
        addr: SocketAddr,
        instance_id: u64,
        cold: bool,
        release: Arc<dyn LeaseRelease>,
    ) -> Self {
        Self {
            addr,
            cold,
            instance_id,
            broken: false,
            release: Some(release),
        }
    }

    /// Mark the instance as broken (timed out, connection failed): it is retired on release.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Why the instance died, if it has (for error messages after a failed request).
    pub fn exit_cause(&self) -> Option<String> {
        self.release.as_ref().and_then(|r| r.exit_cause())
    }
}

impl fmt::Debug for InstanceLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceLease")
            .field("addr", &self.addr)
            .field("instance_id", &self.instance_id)
            .field("cold", &self.cold)
            .finish()
    }
}

impl Drop for InstanceLease {
    fn drop(&mut self) {
        if let Some(r) = self.release.take() {
            r.release(self.broken);
        }
    }
}

/// The router's view of the executor: "give me an instance of this function".
///
/// In the all-in-one server this is an in-process call, so the warm path costs a map lookup and
/// no RPC; a split deployment implements it over HTTP.
#[async_trait::async_trait]
pub trait FunctionInstances: Send + Sync + 'static {
    /// Lease an instance specialized for `function` (its exact resourceVersion), starting one
    /// if needed and allowed by the function's limits; waits for a free one otherwise.
    async fn acquire(&self, function: &Function) -> Result<InstanceLease, ExecutorError>;
}

/// What the executor tells about running instances (the controller shows it in
/// `fission fn list`).
pub trait InstanceReport: Send + Sync + 'static {
    /// Instances serving `namespace/name` now.
    fn instance_count(&self, namespace: &str, name: &str) -> usize;
    /// `(namespace, name, instances)` of every function with instances now (split roles send
    /// it to the controller).
    fn instance_counts(&self) -> Vec<(String, String, usize)>;
}
