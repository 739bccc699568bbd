//! Adoption: specialized instances left by an executor that is gone (a restart, a replica
//! scaled away) are taken over instead of specialized again. The backend finds them and makes
//! them this executor's (see [`InstanceBackend::adopt`]); here each is kept as an idle
//! specialized instance of its function when that function and its environment are still the
//! versions it was loaded with, and stopped otherwise (they changed or went while no executor
//! looked after it).
//!
//! Until the first adoption after the store's first listing is done, calls that find no
//! instance wait for it (bounded), so a restarted executor's first calls reach the adopted
//! instances instead of specializing new ones.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fission_core::resources::{Environment, Function};
use fission_core::{AnyResource, ResourceKind};
use tokio::time::MissedTickBehavior;

use crate::Executor;
use crate::backend::{AdoptedInstance, InstanceBackend};
use crate::launcher::{LogSink, wait_exit};

/// Longest a call waits for the first adoption (it then proceeds without).
const FIRST_ADOPTION_WAIT: Duration = Duration::from_secs(30);

/// Why an adopted instance is not kept, if it is not.
pub(crate) fn rejection(
    adopted: &AdoptedInstance,
    function: Option<&Function>,
    environment: Option<&Environment>,
) -> Option<&'static str> {
    let want = &adopted.function;
    let Some(f) = function else {
        return Some("its function was deleted");
    };
    if f.metadata.uid != want.uid {
        return Some("its function was deleted and created again");
    }
    if f.metadata.resource_version != want.resource_version {
        return Some("its function changed");
    }
    let env_ref = &f.spec.environment;
    let env_ns = if env_ref.namespace.is_empty() {
        &f.metadata.namespace
    } else {
        &env_ref.namespace
    };
    let have = &adopted.environment;
    if env_ref.name != have.name || *env_ns != have.namespace {
        return Some("its function moved to another environment");
    }
    let Some(e) = environment else {
        return Some("its environment was deleted");
    };
    if e.metadata.uid != have.uid || e.metadata.resource_version != have.resource_version {
        return Some("its environment changed");
    }
    None
}

impl<B: InstanceBackend> Executor<B> {
    /// At start: list the environments (their pools are what adopted instances join), release
    /// what earlier runs left for environment versions that are gone, adopt, let waiting calls
    /// go; then adopt every reaper interval (instances of executors that go away later).
    pub(crate) async fn adopt_at_start(self: Arc<Self>) {
        let mut pause = Duration::from_millis(100);
        let environments = loop {
            match self.store.list(ResourceKind::Environment, None).await {
                Ok(list) => break list,
                Err(error) => {
                    tracing::warn!(%error, "cannot list environments for adoption; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.stopping.cancelled() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        };
        let environments: Vec<Environment> = environments
            .into_iter()
            .filter_map(|r| match r {
                AnyResource::Environment(e) => Some(e),
                _ => None,
            })
            .collect();
        for env in &environments {
            // Idempotent: the change feed installs the same pools.
            if let Err(error) = self.install_env(env.clone()) {
                tracing::debug!(%error, "environment has no pool");
            }
        }
        self.backend.forget_other_environments(&environments).await;
        let kept = self.adopt_once().await;
        if kept > 0 {
            tracing::info!(instances = kept, "adopted specialized instances");
        }
        self.adoption_done.store(true, Ordering::Release);
        self.adoption.send_replace(true);
        let mut tick = tokio::time::interval(self.config.reaper_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.reset();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stopping.cancelled() => return,
            }
            let kept = self.adopt_once().await;
            if kept > 0 {
                tracing::info!(instances = kept, "adopted specialized instances");
            }
        }
    }

    /// Wait (bounded) for the first adoption, if it is under way.
    pub(crate) async fn wait_for_first_adoption(&self) {
        let mut done = self.adoption.subscribe();
        tokio::select! {
            _ = done.wait_for(|d| *d) => {}
            () = tokio::time::sleep(FIRST_ADOPTION_WAIT) => {
                tracing::warn!("serving calls before adoption finished");
            }
            () = self.stopping.cancelled() => {}
        }
    }

    /// One adoption pass; returns how many instances were kept.
    async fn adopt_once(&self) -> usize {
        let next_id = || self.next_instance.fetch_add(1, Ordering::Relaxed);
        let adopted = self.backend.adopt(&next_id).await;
        let mut kept = 0;
        for a in adopted {
            if self.take_over(a).await {
                kept += 1;
            }
        }
        kept
    }

    /// Keep `adopted` as an idle specialized instance, or stop it (see the module docs).
    async fn take_over(&self, adopted: AdoptedInstance) -> bool {
        let f = &adopted.function;
        let function = match self
            .store
            .get(ResourceKind::Function, &f.namespace, &f.name)
            .await
        {
            Ok(AnyResource::Function(function)) => Some(function),
            _ => None,
        };
        let env = &adopted.environment;
        let pool = self
            .lock_pools()
            .get(&(env.namespace.clone(), env.name.clone()))
            .cloned();
        let instance = adopted.instance.clone();
        let id = instance.id();
        let what = format!("{}/{}", f.namespace, f.name);
        let function = match (
            rejection(&adopted, function.as_ref(), pool.as_ref().map(|p| &*p.env)),
            function,
            pool,
        ) {
            (None, Some(function), Some(pool)) => Some((function, pool)),
            (why, _, _) => {
                tracing::info!(
                    function = %what,
                    instance = id,
                    why = why.unwrap_or("its environment has no pool"),
                    "stopping an adopted instance"
                );
                None
            }
        };
        let Some((function, pool)) = function else {
            instance.kill();
            return false;
        };
        {
            let mut live = self.lock_live();
            if live.closed {
                drop(live);
                instance.kill();
                return false;
            }
            live.instances.insert(id, instance.clone());
        }
        let log = LogSink::new(self.logs.writer(&f.namespace, &f.name, id));
        if let Some(me) = self.me.upgrade() {
            let watched = instance.clone();
            let pool = pool.clone();
            self.tasks.spawn(async move {
                let report = wait_exit(&*watched).await;
                me.on_exit(watched.id(), &pool, &report, &log);
            });
        }
        if pool.is_closed() || !self.table.adopt(&function, instance.clone(), pool.id) {
            tracing::info!(function = %what, instance = id, "stopping an adopted instance: superseded meanwhile");
            instance.kill();
            return false;
        }
        tracing::debug!(function = %what, instance = id, addr = %instance.addr(), "instance adopted");
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use fission_core::{ExecutorError, FunctionInstances as _, ResourceStore as _};
    use fission_store::archive::ArchiveStore;
    use fission_store::logs::LogStore;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::backend::{EnvironmentPlan, LoadError, ObjectVersion, Specialization};
    use crate::launcher::{
        DiscardLines, InstanceLauncher as _, InstanceLimits, LaunchSpec, RuntimeInstance,
    };
    use crate::metrics::Metrics;
    use crate::package::UnpackLimits;
    use crate::testing::{self, FakeLauncher, MemoryStore};
    use crate::{Config, LocalBackend};

    fn version(namespace: &str, name: &str, uid: &str, rv: &str) -> ObjectVersion {
        ObjectVersion {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            resource_version: rv.into(),
        }
    }

    fn of_function(f: &Function) -> ObjectVersion {
        let m = &f.metadata;
        version(&m.namespace, &m.name, &m.uid, &m.resource_version)
    }

    fn of_env(e: &Environment) -> ObjectVersion {
        let m = &e.metadata;
        version(&m.namespace, &m.name, &m.uid, &m.resource_version)
    }

    /// The local backend, plus instances "left by an executor that is gone" to hand out.
    struct Adopting {
        inner: LocalBackend,
        launcher: Arc<FakeLauncher>,
        offered: Mutex<Vec<(ObjectVersion, ObjectVersion)>>,
        /// Ids of the adopted instances, in the order offered.
        adopted: Mutex<Vec<u64>>,
        /// Say it keeps generic instances itself.
        keeps: bool,
        /// Say its instances outlive the executor.
        outlive: bool,
        /// Pools prepared and retired.
        prepared: std::sync::atomic::AtomicUsize,
        retired: std::sync::atomic::AtomicUsize,
    }

    impl Adopting {
        /// The local backend over `store`, offering nothing, keeping no pool of its own.
        fn over(
            config: &Config,
            launcher: &Arc<FakeLauncher>,
            dir: &std::path::Path,
            store: Arc<dyn fission_core::ResourceStore>,
        ) -> Self {
            Self {
                inner: LocalBackend::with_limits(
                    config.local.clone(),
                    launcher.clone(),
                    Arc::new(ArchiveStore::open(dir.join("archives")).expect("archives")),
                    store,
                    UnpackLimits::default(),
                ),
                launcher: launcher.clone(),
                offered: Mutex::new(Vec::new()),
                adopted: Mutex::new(Vec::new()),
                keeps: false,
                outlive: false,
                prepared: Default::default(),
                retired: Default::default(),
            }
        }
    }

    fn executor(
        config: Config,
        dir: &std::path::Path,
        store: Arc<dyn fission_core::ResourceStore>,
        backend: Adopting,
    ) -> Arc<Executor<Adopting>> {
        let logs = LogStore::open(dir.join("logs")).expect("logs");
        Executor::build(
            config,
            store,
            Arc::new(logs),
            backend,
            None,
            Metrics::unregistered(),
        )
    }

    #[async_trait::async_trait]
    impl InstanceBackend for Adopting {
        type Launch = <LocalBackend as InstanceBackend>::Launch;

        fn plan(&self, env: &Environment) -> Result<EnvironmentPlan<Self::Launch>, ExecutorError> {
            self.inner.plan(env)
        }
        async fn start(
            &self,
            plan: &EnvironmentPlan<Self::Launch>,
            instance_id: u64,
            log: LogSink,
        ) -> Result<Arc<dyn RuntimeInstance>, ExecutorError> {
            self.inner.start(plan, instance_id, log).await
        }
        async fn specialize(
            &self,
            instance: &dyn RuntimeInstance,
            log: &LogSink,
            target: Specialization<'_>,
        ) -> Result<(), LoadError> {
            self.inner.specialize(instance, log, target).await
        }
        fn keeps_generic_instances(&self) -> bool {
            self.keeps
        }
        fn instances_outlive_executor(&self) -> bool {
            self.outlive
        }
        async fn prepare(&self, _plan: &EnvironmentPlan<Self::Launch>) {
            self.prepared.fetch_add(1, Ordering::SeqCst);
        }
        async fn retire(&self, _plan: &EnvironmentPlan<Self::Launch>) {
            self.retired.fetch_add(1, Ordering::SeqCst);
        }
        async fn adopt(&self, next_id: &(dyn Fn() -> u64 + Send + Sync)) -> Vec<AdoptedInstance> {
            let offered: Vec<_> = std::mem::take(&mut *self.offered.lock().expect("lock"));
            let mut out = Vec::new();
            for (function, environment) in offered {
                let instance = self
                    .launcher
                    .launch(LaunchSpec {
                        instance_id: next_id(),
                        program: "/nonexistent".into(),
                        args: Vec::new(),
                        env: Vec::new(),
                        log: LogSink::new(Arc::new(DiscardLines)),
                        limits: InstanceLimits::default(),
                    })
                    .await
                    .expect("fake instance");
                self.adopted.lock().expect("lock").push(instance.id());
                out.push(AdoptedInstance {
                    instance,
                    function,
                    environment,
                });
            }
            out
        }
    }

    #[tokio::test]
    async fn a_restarted_executor_serves_from_adopted_instances_and_stops_outdated_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (envs, bin) = testing::fake_environments(dir.path());
        let config = Config::new(envs, dir.path().join("cache"), bin.clone(), bin);
        let store = MemoryStore::new();
        let env: Environment = testing::create(
            &store,
            testing::environment("nodejs", "fission/node-env", 0),
        )
        .await;
        let _: fission_core::resources::Package = testing::create(
            &store,
            testing::literal_package("pkg", "nodejs", b"module.exports = 1"),
        )
        .await;
        let hello: Function =
            testing::create(&store, testing::function("hello", "nodejs", "pkg", "")).await;
        let changed: Function =
            testing::create(&store, testing::function("changed", "nodejs", "pkg", "")).await;
        let gone: Function =
            testing::create(&store, testing::function("gone", "nodejs", "pkg", "")).await;
        let mut newer = changed.clone();
        newer.spec.package.function_name = "other".into();
        let newer: Function = testing::update(&store, newer).await;
        store
            .delete(ResourceKind::Function, "default", "gone")
            .await
            .expect("delete");
        let mut old_env = of_env(&env);
        old_env.resource_version = "0".into();

        let launcher = FakeLauncher::new();
        let backend = Adopting {
            offered: Mutex::new(vec![
                (of_function(&hello), of_env(&env)),
                (of_function(&changed), of_env(&env)),
                (of_function(&gone), of_env(&env)),
                (of_function(&hello), old_env),
            ]),
            ..Adopting::over(&config, &launcher, dir.path(), store.clone())
        };
        let exec = executor(config, dir.path(), store.clone(), backend);
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(exec.clone().run(shutdown.clone()));

        // The first call waits for the adoption and is served by the adopted instance.
        let lease = exec.acquire(&hello).await.expect("lease");
        let ids = exec.backend.adopted.lock().expect("lock").clone();
        assert_eq!(ids.len(), 4);
        assert_eq!(lease.instance_id, ids[0]);
        assert!(!lease.cold);
        assert_eq!(launcher.specializations(), 0);
        let killed = |id: u64| {
            launcher
                .instance(id)
                .is_some_and(|i| i.kills.load(Ordering::SeqCst) > 0)
        };
        assert!(!killed(ids[0]));
        // Function changed, deleted, or environment changed while nobody looked: stopped.
        assert!(killed(ids[1]), "an instance of an old function version");
        assert!(killed(ids[2]), "an instance of a deleted function");
        assert!(killed(ids[3]), "an instance of an old environment version");

        // The adopted instance counts against requestsPerPod (1): a second call specializes.
        let second = exec.acquire(&hello).await.expect("second lease");
        assert_ne!(second.instance_id, ids[0]);
        assert_eq!(launcher.specializations(), 1);
        // The changed function gets a fresh specialization of its new version.
        let fresh = exec
            .acquire(&newer)
            .await
            .expect("lease of the new version");
        assert!(fresh.cold);
        drop((lease, second, fresh));

        // Idle reaping applies to adopted instances as to any other.
        let reaped = exec
            .table
            .reap(tokio::time::Instant::now() + Duration::from_secs(3600));
        assert!(reaped.iter().any(|r| r.instance.id() == ids[0]));
        for r in reaped {
            r.instance.kill();
        }
        shutdown.cancel();
        run.await.expect("join").expect("run");
        assert_eq!(launcher.alive(), 0);
    }

    #[tokio::test]
    async fn a_backend_that_keeps_generic_instances_gets_no_executor_pool_and_hears_of_env_versions()
     {
        let dir = tempfile::tempdir().expect("tempdir");
        let (envs, bin) = testing::fake_environments(dir.path());
        let config = Config::new(envs, dir.path().join("cache"), bin.clone(), bin);
        let store = MemoryStore::new();
        let env: Environment = testing::create(
            &store,
            testing::environment("nodejs", "fission/node-env", 3),
        )
        .await;
        let _: fission_core::resources::Package = testing::create(
            &store,
            testing::literal_package("pkg", "nodejs", b"module.exports = 1"),
        )
        .await;
        let hello: Function =
            testing::create(&store, testing::function("hello", "nodejs", "pkg", "")).await;
        let launcher = FakeLauncher::new();
        let backend = Adopting {
            keeps: true,
            ..Adopting::over(&config, &launcher, dir.path(), store.clone())
        };
        let exec = executor(config, dir.path(), store.clone(), backend);
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(exec.clone().run(shutdown.clone()));
        exec.wait_for_first_adoption().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // poolsize 3, but the backend's own pool is the warm pool.
        assert_eq!(launcher.launched.load(Ordering::SeqCst), 0);
        assert_eq!(exec.backend.prepared.load(Ordering::SeqCst), 1);
        // A cold start takes one instance from the backend, and the executor keeps none in
        // reserve after it.
        drop(exec.acquire(&hello).await.expect("lease"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(launcher.launched.load(Ordering::SeqCst), 1);
        assert_eq!(launcher.specializations(), 1);
        // An environment update replaces the pool: the old version is retired, the new prepared.
        let mut changed = env.clone();
        changed.spec.poolsize = 1;
        let _: Environment = testing::update(&store, changed).await;
        for _ in 0..200 {
            if exec.backend.retired.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(exec.backend.retired.load(Ordering::SeqCst), 1);
        assert_eq!(exec.backend.prepared.load(Ordering::SeqCst), 2);
        // Deleted: retired too.
        store
            .delete(ResourceKind::Environment, "default", "nodejs")
            .await
            .expect("delete");
        for _ in 0..200 {
            if exec.backend.retired.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(exec.backend.retired.load(Ordering::SeqCst), 2);
        // Shutdown keeps what the backend holds for current versions: nothing more retired.
        shutdown.cancel();
        run.await.expect("join").expect("run");
        assert_eq!(exec.backend.retired.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_stopping_executor_leaves_instances_that_outlive_it_for_the_next_to_adopt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (envs, bin) = testing::fake_environments(dir.path());
        let config = Config::new(envs, dir.path().join("cache"), bin.clone(), bin);
        let store = MemoryStore::new();
        let _: Environment = testing::create(
            &store,
            testing::environment("nodejs", "fission/node-env", 0),
        )
        .await;
        let _: fission_core::resources::Package = testing::create(
            &store,
            testing::literal_package("pkg", "nodejs", b"module.exports = 1"),
        )
        .await;
        let hello: Function =
            testing::create(&store, testing::function("hello", "nodejs", "pkg", "")).await;
        let launcher = FakeLauncher::new();
        let backend = Adopting {
            keeps: true,
            outlive: true,
            ..Adopting::over(&config, &launcher, dir.path(), store.clone())
        };
        let exec = executor(config, dir.path(), store.clone(), backend);
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(exec.clone().run(shutdown.clone()));
        let lease = exec.acquire(&hello).await.expect("lease");
        let id = lease.instance_id;
        drop(lease);
        shutdown.cancel();
        run.await.expect("join").expect("run");
        let instance = launcher.instance(id).expect("the specialized instance");
        assert_eq!(
            instance.kills.load(Ordering::SeqCst),
            0,
            "a stopping executor killed an instance the next one could adopt"
        );
    }

    #[test]
    fn an_instance_is_kept_only_while_its_function_and_environment_versions_are_current() {
        let env = testing::environment("nodejs", "img", 1);
        let mut env = env;
        env.metadata.uid = "e-uid".into();
        env.metadata.resource_version = "7".into();
        let mut f = testing::function("hello", "nodejs", "pkg", "");
        f.metadata.uid = "f-uid".into();
        f.metadata.resource_version = "9".into();
        let adopted = |fv: ObjectVersion, ev: ObjectVersion| AdoptedInstance {
            instance: Arc::new(Dummy),
            function: fv,
            environment: ev,
        };
        let current = adopted(of_function(&f), of_env(&env));
        assert_eq!(rejection(&current, Some(&f), Some(&env)), None);
        assert!(rejection(&current, None, Some(&env)).is_some());
        assert!(rejection(&current, Some(&f), None).is_some());
        let mut f2 = f.clone();
        f2.metadata.resource_version = "10".into();
        assert_eq!(
            rejection(&current, Some(&f2), Some(&env)),
            Some("its function changed")
        );
        f2.metadata.resource_version = "9".into();
        f2.metadata.uid = "other".into();
        assert!(rejection(&current, Some(&f2), Some(&env)).is_some());
        let mut e2 = env.clone();
        e2.metadata.resource_version = "8".into();
        assert_eq!(
            rejection(&current, Some(&f), Some(&e2)),
            Some("its environment changed")
        );
        let mut moved = f.clone();
        moved.spec.environment.name = "python".into();
        assert!(rejection(&current, Some(&moved), Some(&env)).is_some());
    }

    struct Dummy;

    #[async_trait::async_trait]
    impl RuntimeInstance for Dummy {
        fn id(&self) -> u64 {
            1
        }
        fn addr(&self) -> std::net::SocketAddr {
            std::net::SocketAddr::from(([127, 0, 0, 1], 1))
        }
        fn pid(&self) -> Option<u32> {
            None
        }
        fn exit_watch(&self) -> tokio::sync::watch::Receiver<Option<crate::ExitReport>> {
            tokio::sync::watch::channel(None).1
        }
        fn kill(&self) {}
        async fn install_code(
            &self,
            host_path: &std::path::Path,
            _slot: crate::CodeSlot,
        ) -> std::io::Result<std::path::PathBuf> {
            Ok(host_path.to_owned())
        }
    }
}
