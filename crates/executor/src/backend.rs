//! The port between the pool logic and what actually runs instances.
//!
//! Everything Fission's poolmgr decides — which instance serves a call, when to specialize,
//! how many instances a function may have, when one is idle, what to do when an environment
//! or function changes — lives in this crate once, and drives an [`InstanceBackend`]: sandbox
//! slots or plain processes on this machine ([`crate::LocalBackend`]) today, pods on
//! Kubernetes next. A backend only starts generic instances, loads a function into one, and
//! reports (through [`RuntimeInstance::exit_watch`]) when one is gone.

use std::sync::Arc;
use std::time::Duration;

use fission_core::ExecutorError;
use fission_core::resources::{Environment, Function, Package};

use crate::launcher::{LogSink, RuntimeInstance};

/// How one environment version's instances are started, decided once per warm pool.
#[derive(Debug, Clone)]
pub struct EnvironmentPlan<P> {
    /// The runtime's short name (`nodejs`, `python`), for metrics and messages.
    pub runtime: &'static str,
    /// The backend's own description of how to start an instance.
    pub launch: P,
}

/// What to load into a generic instance.
#[derive(Debug, Clone, Copy)]
pub struct Specialization<'a> {
    /// The function version.
    pub function: &'a Function,
    /// Its package (with the deployment to load).
    pub package: &'a Package,
    /// The environment version of the instance.
    pub environment: &'a Environment,
    /// How long loading may take (the function's `specializationtimeout`).
    pub timeout: Duration,
}

impl Specialization<'_> {
    /// Fission's environment interface version (unset means the newest, 3).
    pub fn env_version(&self) -> i32 {
        match self.environment.spec.version {
            v if v <= 0 => 3,
            v => v,
        }
    }
}

/// Why loading a function into an instance failed; the text is what the caller is told.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The deployment could not be made available (fetch, checksum, unpack, not built).
    #[error("{0}")]
    Package(String),
    /// The code, secrets or config maps could not be put where the instance sees them.
    #[error("{0}")]
    Install(String),
    /// The runtime answered the load request with an error (its message).
    #[error("{0}")]
    Rejected(String),
    /// The runtime could not be reached or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
}

/// Runs instances for the pool logic. See the module docs.
#[async_trait::async_trait]
pub trait InstanceBackend: Send + Sync + 'static {
    /// The backend's launch description of one environment version.
    type Launch: Send + Sync + 'static;

    /// Check that `env` can run here and decide how its instances start.
    fn plan(&self, env: &Environment) -> Result<EnvironmentPlan<Self::Launch>, ExecutorError>;

    /// Start one generic instance. When this returns, the instance accepts connections (it may
    /// still be booting). `log` receives its output.
    async fn start(
        &self,
        plan: &EnvironmentPlan<Self::Launch>,
        instance_id: u64,
        log: LogSink,
    ) -> Result<Arc<dyn RuntimeInstance>, ExecutorError>;

    /// Load `target` into a generic instance started by [`start`](Self::start). The pool logic
    /// races this with the instance's exit and bounds it by `target.timeout`.
    async fn specialize(
        &self,
        instance: &dyn RuntimeInstance,
        log: &LogSink,
        target: Specialization<'_>,
    ) -> Result<(), LoadError>;

    /// A function was created or changed and will probably be called soon: do the work its
    /// first specialization would otherwise wait for (e.g. fetch and unpack its deployment).
    async fn prefetch(&self, _target: Specialization<'_>) {}

    /// Whether the backend keeps generic instances ready by itself (e.g. a pool Deployment's
    /// pods) and [`start`](Self::start) hands one of those out. The executor then keeps no
    /// warm instances of its own: it would only hold a second `poolsize` of them.
    fn keeps_generic_instances(&self) -> bool {
        false
    }

    /// Specialized instances left by an executor that is gone, taken over by this one (each
    /// gets its id from `next_id`). The executor keeps those whose function and environment
    /// versions are still current and kills the others. Called once the store has been
    /// listed, then every reaper interval; the first call may wait until it can tell whether
    /// the owners of such instances are alive.
    async fn adopt(&self, _next_id: &(dyn Fn() -> u64 + Send + Sync)) -> Vec<AdoptedInstance> {
        Vec::new()
    }

    /// A pool for this environment version was created: get ready to start its instances
    /// (e.g. create the pool Deployment), in the background.
    async fn prepare(&self, _plan: &EnvironmentPlan<Self::Launch>) {}

    /// An environment version's pool was replaced or removed: release what the backend keeps
    /// for it (its generic instances). Its specialized instances are stopped separately.
    async fn retire(&self, _plan: &EnvironmentPlan<Self::Launch>) {}

    /// The executor stopped (every instance it started was killed and waited for): release
    /// what marks this executor as alive to others.
    async fn stopped(&self) {}

    /// After the store's first listing: `current` are all environments. Release what the
    /// backend keeps for any other environment version (left by an earlier run).
    async fn forget_other_environments(&self, _current: &[Environment]) {}
}

/// One version of a named object: what an adopted instance was specialized for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// uid.
    pub uid: String,
    /// resourceVersion.
    pub resource_version: String,
}

/// A specialized instance taken over from an executor that is gone.
pub struct AdoptedInstance {
    /// The instance, serving its function.
    pub instance: Arc<dyn RuntimeInstance>,
    /// The function version loaded into it.
    pub function: ObjectVersion,
    /// The environment version it runs.
    pub environment: ObjectVersion,
}
