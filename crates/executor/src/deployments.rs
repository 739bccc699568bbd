//! newdeploy on a cluster: a function's own Deployment, scaled by the cluster, reached at its
//! ready endpoints.
//!
//! Without a [`FunctionDeployments`] port the executor runs newdeploy functions itself (see
//! `scale.rs`). With one, a newdeploy function is the port's business: the executor creates
//! or updates its objects when the function changes (`ensure`), asks for a ready endpoint per
//! call (`endpoint`, which scales up from zero and waits when there is none), scales back to
//! `MinScale` after `idletimeout` without calls (`scale`), and deletes the objects with the
//! function (`remove`). What is decided here: when a function is idle, which function version
//! the objects must describe, and that a call never waits past its bounds.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fission_core::resources::{Environment, Function, function_defaults};
use fission_core::{AnyResource, ExecutorError, InstanceLease, LeaseRelease, ResourceKind};
use tokio::time::Instant;

use crate::Executor;
use crate::backend::{InstanceBackend, Specialization};

/// A ready endpoint handed out for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Where the function's runtime listens.
    pub addr: SocketAddr,
    /// Whether the call had to wait for the function to scale up from zero.
    pub cold: bool,
}

/// Runs newdeploy functions as the cluster's own workloads. See the module docs.
#[async_trait::async_trait]
pub trait FunctionDeployments: Send + Sync + 'static {
    /// Create the function's objects at `MinScale`, or update them to this version (a
    /// rolling update; the replica count is left to the cluster).
    async fn ensure(&self, target: Specialization<'_>) -> Result<(), ExecutorError>;

    /// A ready endpoint of `function`, spreading calls across the ready ones. With none ready,
    /// scale to one and wait at most `timeout` for it.
    async fn endpoint(
        &self,
        function: &Function,
        timeout: Duration,
    ) -> Result<Endpoint, ExecutorError>;

    /// Set the function's replica count (idle: back to `MinScale`, 0 = to zero).
    async fn scale(&self, function: &Function, replicas: i32) -> Result<(), ExecutorError>;

    /// Delete the function's objects.
    async fn remove(&self, function: &Function) -> Result<(), ExecutorError>;

    /// Delete the objects of every function whose uid is not in `keep` (deleted while no
    /// executor was watching).
    async fn retain(&self, keep: &HashSet<String>) -> Result<(), ExecutorError>;
    /// How many ready instances `function` has now (what `fn list` shows). No I/O.
    fn ready(&self, _function: &Function) -> usize {
        0
    }
}

/// Calls in flight and the last call's end, per function uid.
#[derive(Default)]
struct Usage {
    active: usize,
    last: Option<Instant>,
    /// Scaled to `MinScale` since the last call (so an idle function is scaled once).
    idle: bool,
}

/// The executor's side of the port.
pub(crate) struct Deployed {
    port: Arc<dyn FunctionDeployments>,
    usage: Arc<Mutex<HashMap<String, Usage>>>,
    /// uid → resourceVersion whose objects `ensure` wrote.
    ensured: Mutex<HashMap<String, String>>,
    /// One `ensure` at a time: two versions of a function written concurrently could leave
    /// the older one in place.
    ensuring: tokio::sync::Mutex<()>,
}

impl Deployed {
    pub(crate) fn new(port: Arc<dyn FunctionDeployments>) -> Self {
        Self {
            port,
            usage: Arc::new(Mutex::new(HashMap::new())),
            ensured: Mutex::new(HashMap::new()),
            ensuring: tokio::sync::Mutex::new(()),
        }
    }

    fn lock_ensured(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.ensured.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn lock_usage(usage: &Mutex<HashMap<String, Usage>>) -> MutexGuard<'_, HashMap<String, Usage>> {
    usage.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends a call when dropped — with the lease, or at once when no endpoint was found: the
/// function's idle clock starts when its last call ends.
struct CallEnd {
    usage: Arc<Mutex<HashMap<String, Usage>>>,
    uid: String,
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        let mut usage = lock_usage(&self.usage);
        if let Some(u) = usage.get_mut(&self.uid) {
            u.active = u.active.saturating_sub(1);
            u.last = Some(Instant::now());
        }
    }
}

impl LeaseRelease for CallEnd {
    // A broken endpoint is the cluster's to replace (its readiness probe, its restarts).
    fn release(&self, _broken: bool) {}
}

impl<B: InstanceBackend> Executor<B> {
    /// Whether `function` is run by the deployments port.
    pub(crate) fn deployed(&self, function: &Function) -> Option<&Deployed> {
        use fission_core::resources::executor_type;
        self.deployed
            .as_ref()
            .filter(|_| function.spec.executor_type() == executor_type::NEWDEPLOY)
    }

    /// A call to a newdeploy function on the cluster: its objects written for this version
    /// (normally done when the function changed), then a ready endpoint.
    pub(crate) async fn acquire_deployed(
        &self,
        d: &Deployed,
        function: &Function,
        deadline: Instant,
    ) -> Result<InstanceLease, ExecutorError> {
        let uid = function.metadata.uid.clone();
        {
            let mut usage = lock_usage(&d.usage);
            let u = usage.entry(uid.clone()).or_default();
            u.active += 1;
            u.idle = false;
        }
        let end = Arc::new(CallEnd {
            usage: d.usage.clone(),
            uid,
        });
        let ensured = d.lock_ensured().get(&function.metadata.uid)
            == Some(&function.metadata.resource_version);
        if !ensured {
            self.ensure_deployed(d, function).await?;
        }
        let timeout = self
            .specialize_timeout(function)
            .min(deadline.saturating_duration_since(Instant::now()));
        let endpoint = d.port.endpoint(function, timeout).await?;
        Ok(InstanceLease::new(endpoint.addr, 0, endpoint.cold, end))
    }

    /// Write the function's objects for this version.
    pub(crate) async fn ensure_deployed(
        &self,
        d: &Deployed,
        function: &Function,
    ) -> Result<(), ExecutorError> {
        let _one = d.ensuring.lock().await;
        // A newer version may have been written while this one waited.
        let current = self
            .lock_scaled()
            .get(&function.metadata.uid)
            .map(|f| f.metadata.resource_version.clone());
        if current.is_some_and(|rv| rv != function.metadata.resource_version) {
            return Ok(());
        }
        if d.lock_ensured().get(&function.metadata.uid) == Some(&function.metadata.resource_version)
        {
            return Ok(());
        }
        let package = self.package_of(function).await?;
        let environment = self.environment_of(function).await?;
        let target = Specialization {
            function,
            package: &package,
            environment: &environment,
            timeout: self.specialize_timeout(function),
        };
        d.port.ensure(target).await?;
        d.lock_ensured().insert(
            function.metadata.uid.clone(),
            function.metadata.resource_version.clone(),
        );
        lock_usage(&d.usage)
            .entry(function.metadata.uid.clone())
            .or_default()
            .last
            .get_or_insert_with(Instant::now);
        Ok(())
    }

    /// A created or updated newdeploy function: write its objects, in the background.
    pub(crate) fn deploy_changed(&self, function: &Function) {
        let Some(me) = self.me.upgrade() else { return };
        let function = function.clone();
        self.tasks.spawn(async move {
            let Some(d) = me.deployed.as_ref() else { return };
            if let Err(error) = me.ensure_deployed(d, &function).await {
                tracing::warn!(function = %function.metadata.name, %error, "cannot deploy the function");
            }
        });
    }

    /// A deleted newdeploy function: delete its objects, in the background.
    pub(crate) fn undeploy(&self, function: &Function) {
        let Some(me) = self.me.upgrade() else { return };
        let function = function.clone();
        self.tasks.spawn(async move {
            let Some(d) = me.deployed.as_ref() else { return };
            let _one = d.ensuring.lock().await;
            d.lock_ensured().remove(&function.metadata.uid);
            lock_usage(&d.usage).remove(&function.metadata.uid);
            if let Err(error) = d.port.remove(&function).await {
                tracing::warn!(function = %function.metadata.name, %error, "cannot delete the function's deployment");
            }
        });
    }

    /// After a full listing: objects of functions that are gone are deleted.
    pub(crate) fn undeploy_all_but(&self, keep: HashSet<String>) {
        let Some(me) = self.me.upgrade() else { return };
        self.tasks.spawn(async move {
            let Some(d) = me.deployed.as_ref() else {
                return;
            };
            d.lock_ensured().retain(|uid, _| keep.contains(uid));
            lock_usage(&d.usage).retain(|uid, _| keep.contains(uid));
            if let Err(error) = d.port.retain(&keep).await {
                tracing::warn!(%error, "cannot delete deployments of deleted functions");
            }
        });
    }

    /// Scale every newdeploy function idle past its `idletimeout` back to `MinScale`, once per
    /// idle period.
    pub(crate) fn scale_idle_deployments(&self, d: &Deployed) {
        let now = Instant::now();
        let functions: Vec<Function> = self.lock_scaled().values().cloned().collect();
        let mut idle = Vec::new();
        {
            let mut usage = lock_usage(&d.usage);
            for f in functions {
                let Some(u) = usage.get_mut(&f.metadata.uid) else {
                    continue;
                };
                let timeout = match f.spec.idletimeout {
                    Some(t) if t >= 0 => Duration::from_secs(t as u64),
                    _ => Duration::from_secs(function_defaults::IDLE_TIMEOUT as u64),
                };
                let quiet = u
                    .last
                    .is_some_and(|last| now.saturating_duration_since(last) >= timeout);
                if u.active == 0 && quiet && !u.idle {
                    u.idle = true;
                    idle.push(f);
                }
            }
        }
        let Some(me) = self.me.upgrade() else { return };
        for f in idle {
            let replicas = f.spec.invoke_strategy.execution_strategy.min_scale.max(0);
            let me = me.clone();
            self.tasks.spawn(async move {
                let Some(d) = me.deployed.as_ref() else { return };
                tracing::info!(function = %f.metadata.name, replicas, "idle past idletimeout: scaling to MinScale");
                if let Err(error) = d.port.scale(&f, replicas).await {
                    tracing::warn!(function = %f.metadata.name, %error, "cannot scale the idle function down");
                    // Try again on the next pass.
                    if let Some(u) = lock_usage(&d.usage).get_mut(&f.metadata.uid) {
                        u.idle = false;
                    }
                }
            });
        }
    }

    /// Ready instances of the newdeploy function `namespace/name` on the cluster.
    pub(crate) fn deployed_count(&self, namespace: &str, name: &str) -> usize {
        let Some(d) = self.deployed.as_ref() else {
            return 0;
        };
        let function = self
            .lock_scaled()
            .values()
            .find(|f| f.metadata.namespace == namespace && f.metadata.name == name)
            .cloned();
        function.map_or(0, |f| d.port.ready(&f))
    }

    /// The function's environment, read from the store.
    async fn environment_of(&self, function: &Function) -> Result<Environment, ExecutorError> {
        let (ns, name) = crate::feed::env_key(function);
        match self.store.get(ResourceKind::Environment, &ns, &name).await {
            Ok(AnyResource::Environment(e)) => Ok(e),
            Ok(_) => Err(ExecutorError::Internal(
                "store returned another kind".to_owned(),
            )),
            Err(fission_core::StoreError::NotFound { .. }) => {
                Err(ExecutorError::NotFound(format!(
                    "environment '{ns}/{name}' of function '{}' not found",
                    function.metadata.name
                )))
            }
            Err(e) => Err(ExecutorError::Internal(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use fission_core::resources::Package;
    use fission_core::{FunctionInstances, ResourceStore};
    use fission_store::archive::ArchiveStore;
    use fission_store::logs::LogStore;
    use tokio_util::sync::CancellationToken;

    use crate::testing::{self, FakeLauncher, MemoryStore};
    use crate::{Config, LocalBackend};

    /// What the executor asked of the port.
    #[derive(Default)]
    struct Fake {
        ensured: Mutex<Vec<String>>,
        scaled: Mutex<Vec<i32>>,
        removed: Mutex<Vec<String>>,
        /// Fail every endpoint request (no pod ever became ready).
        no_endpoint: bool,
    }

    #[async_trait::async_trait]
    impl FunctionDeployments for Fake {
        async fn ensure(&self, target: Specialization<'_>) -> Result<(), ExecutorError> {
            let rv = target.function.metadata.resource_version.clone();
            self.ensured.lock().expect("lock").push(rv);
            Ok(())
        }
        async fn endpoint(&self, _: &Function, _: Duration) -> Result<Endpoint, ExecutorError> {
            if self.no_endpoint {
                return Err(ExecutorError::Overloaded {
                    message: "no pod became ready".into(),
                    retry_after_secs: 5,
                    queue_full: false,
                });
            }
            Ok(Endpoint {
                addr: "10.0.0.7:8888".parse().expect("addr"),
                cold: true,
            })
        }
        async fn scale(&self, _: &Function, replicas: i32) -> Result<(), ExecutorError> {
            self.scaled.lock().expect("lock").push(replicas);
            Ok(())
        }
        async fn remove(&self, f: &Function) -> Result<(), ExecutorError> {
            self.removed
                .lock()
                .expect("lock")
                .push(f.metadata.name.clone());
            Ok(())
        }
        async fn retain(&self, _: &HashSet<String>) -> Result<(), ExecutorError> {
            Ok(())
        }
        fn ready(&self, _: &Function) -> usize {
            2
        }
    }

    struct H {
        _dir: tempfile::TempDir,
        store: Arc<MemoryStore>,
        exec: Arc<Executor<LocalBackend>>,
        fake: Arc<Fake>,
        function: Function,
        shutdown: CancellationToken,
    }

    async fn harness(fake: Fake) -> H {
        let dir = tempfile::tempdir().expect("tempdir");
        let (envs, bin) = testing::fake_environments(dir.path());
        let mut config = Config::new(envs, dir.path().join("cache"), bin.clone(), bin);
        config.reaper_interval = Duration::from_millis(50);
        let store = MemoryStore::new();
        let _: Environment = testing::create(
            &store,
            testing::environment("nodejs", "fission/node-env", 0),
        )
        .await;
        let _: Package = testing::create(
            &store,
            testing::literal_package("hello-pkg", "nodejs", b"module.exports = 1"),
        )
        .await;
        let mut f = testing::function("hello", "nodejs", "hello-pkg", "");
        let es = &mut f.spec.invoke_strategy.execution_strategy;
        es.executor_type = "newdeploy".to_owned();
        es.min_scale = 0;
        es.max_scale = 3;
        f.spec.idletimeout = Some(1);
        let function: Function = testing::create(&store, f).await;
        let logs = LogStore::open(dir.path().join("logs")).expect("logs");
        let archives = ArchiveStore::open(dir.path().join("archives")).expect("archives");
        let launcher = FakeLauncher::new();
        let backend = LocalBackend::with_limits(
            config.local.clone(),
            launcher,
            Arc::new(archives),
            store.clone(),
            crate::package::UnpackLimits::default(),
        );
        let fake = Arc::new(fake);
        let exec = Executor::build(
            config,
            store.clone(),
            Arc::new(logs),
            backend,
            Some(fake.clone()),
            crate::metrics::Metrics::unregistered(),
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(exec.clone().run(shutdown.clone()));
        H {
            _dir: dir,
            store,
            exec,
            fake,
            function,
            shutdown,
        }
    }

    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    #[tokio::test]
    async fn a_newdeploy_function_is_deployed_called_scaled_down_when_idle_and_removed() {
        let h = harness(Fake::default()).await;
        let rv = h.function.metadata.resource_version.clone();
        eventually("the function deployed", || {
            h.fake.ensured.lock().expect("lock").contains(&rv)
        })
        .await;
        let lease = h.exec.acquire(&h.function).await.expect("lease");
        assert_eq!(lease.addr.to_string(), "10.0.0.7:8888");
        assert!(lease.cold);
        // No instance of its own here: the cluster runs it, and reports its ready pods.
        assert_eq!(h.exec.instance_count("default", "hello"), 2);
        // In use: never scaled down, however long the call takes.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(h.fake.scaled.lock().expect("lock").is_empty());
        drop(lease);
        // Idle past idletimeout (1 s): to MinScale 0, once.
        eventually("scaled to zero", || {
            !h.fake.scaled.lock().expect("lock").is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(*h.fake.scaled.lock().expect("lock"), [0]);

        // An update is deployed as the new version.
        let mut f = h.function.clone();
        f.spec.function_timeout = 30;
        let updated = match h.store.update(f.into()).await.expect("update") {
            AnyResource::Function(f) => f,
            other => panic!("{other:?}"),
        };
        let rv2 = updated.metadata.resource_version.clone();
        eventually("the update deployed", || {
            h.fake.ensured.lock().expect("lock").contains(&rv2)
        })
        .await;

        h.store
            .delete(ResourceKind::Function, "default", "hello")
            .await
            .expect("delete");
        eventually("the function's objects removed", || {
            *h.fake.removed.lock().expect("lock") == ["hello"]
        })
        .await;
        h.shutdown.cancel();
    }

    #[tokio::test]
    async fn a_call_that_finds_no_ready_endpoint_fails_and_still_ends() {
        let h = harness(Fake {
            no_endpoint: true,
            ..Fake::default()
        })
        .await;
        let err = h.exec.acquire(&h.function).await.expect_err("no endpoint");
        assert!(
            matches!(
                err,
                ExecutorError::Overloaded {
                    queue_full: false,
                    ..
                }
            ),
            "{err:?}"
        );
        // The failed call ended: the function idles and is scaled down.
        eventually("scaled to zero", || {
            *h.fake.scaled.lock().expect("lock") == [0]
        })
        .await;
        h.shutdown.cancel();
    }
}
