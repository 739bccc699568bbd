//! Warm pools: one per environment version, kept at its target size by a refill task, and the
//! exit watch of every instance the backend starts.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fission_core::resources::{Environment, Function};
use fission_core::{AnyResource, ExecutorError, ResourceKind, StoreError};

use crate::backend::InstanceBackend;
use crate::feed::env_key;
use crate::launcher::{ExitReport, LogSink, wait_exit};
use crate::pool::{self, GenericInstance, Pool};
use crate::{EnvKey, Executor};

impl<B: InstanceBackend> Executor<B> {
    /// Make `env` the current version of its environment: keep the pool if the spec is the
    /// same, else replace it (the old pool's generic instances are stopped and its specialized
    /// ones retire once idle).
    pub(crate) fn install_env(
        &self,
        env: Environment,
    ) -> Result<Arc<Pool<B::Launch>>, ExecutorError> {
        let key = (env.metadata.namespace.clone(), env.metadata.name.clone());
        let plan = match self.backend.plan(&env) {
            Ok(p) => p,
            Err(e) => {
                self.remove_pool(&key);
                return Err(e);
            }
        };
        let (pool, replaced) = {
            let mut pools = self.lock_pools();
            if let Some(existing) = pools.get(&key) {
                let newer = env.metadata.resource_version_number()
                    > existing.env.metadata.resource_version_number();
                if existing.env.spec == env.spec || !newer {
                    return Ok(existing.clone());
                }
            }
            let id = self.next_pool.fetch_add(1, Ordering::Relaxed);
            let mut pool = Pool::new(id, env, plan, self.metrics.clone());
            if self.backend.keeps_generic_instances() {
                // The backend's own pool is the warm pool; each cold start takes from it.
                pool.target = 0;
            }
            let pool = Arc::new(pool);
            let replaced = pools.insert(key, pool.clone());
            (pool, replaced)
        };
        if let Some(old) = replaced {
            self.close_pool(&old);
        }
        tracing::info!(
            environment = %format!("{}/{}", pool.env.metadata.namespace, pool.env.metadata.name),
            resource_version = %pool.env.metadata.resource_version,
            poolsize = pool.target,
            "warm pool created"
        );
        if let Some(me) = self.me.upgrade() {
            let prepared = pool.clone();
            let backend = me.clone();
            self.tasks
                .spawn(async move { backend.backend.prepare(&prepared.plan).await });
            self.tasks.spawn(me.refill(pool.clone()));
        }
        Ok(pool)
    }

    pub(crate) fn remove_pool(&self, key: &EnvKey) {
        let removed = self.lock_pools().remove(key);
        if let Some(pool) = removed {
            self.close_pool(&pool);
        }
    }

    fn close_pool(&self, pool: &Arc<Pool<B::Launch>>) {
        for g in pool.close() {
            g.instance.kill();
        }
        self.table.retire_pool(pool.id);
        if let Some(me) = self.me.upgrade() {
            let pool = pool.clone();
            self.tasks
                .spawn(async move { me.backend.retire(&pool.plan).await });
        }
    }

    /// The pool of `function`'s environment, creating it from the store if the change feed has
    /// not delivered the environment yet.
    pub(crate) async fn pool_for(
        &self,
        function: &Function,
    ) -> Result<Arc<Pool<B::Launch>>, ExecutorError> {
        let key = env_key(function);
        if let Some(pool) = self.lock_pools().get(&key) {
            return Ok(pool.clone());
        }
        let (ns, name) = &key;
        match self.store.get(ResourceKind::Environment, ns, name).await {
            Ok(AnyResource::Environment(env)) => self.install_env(env),
            Ok(_) => Err(ExecutorError::Internal(
                "store returned another kind".to_owned(),
            )),
            Err(StoreError::NotFound { .. }) => Err(ExecutorError::NotFound(format!(
                "environment '{ns}/{name}' of function '{}' not found",
                function.metadata.name
            ))),
            Err(e) => Err(ExecutorError::Internal(e.to_string())),
        }
    }

    /// Keep `pool` at its target size until it closes.
    async fn refill(self: Arc<Self>, pool: Arc<Pool<B::Launch>>) {
        loop {
            if pool.is_closed() || self.stopping.is_cancelled() {
                return;
            }
            let (deficit, below_poolsize) = pool.deficit();
            if deficit == 0 {
                // Full: sleep until an instance is taken or dies, or a demand boost expires.
                let expiry = pool.boost_expiry();
                tokio::select! {
                    () = pool.wake.notified() => {}
                    () = sleep_until_some(expiry) => {
                        for g in pool.expire_boost(tokio::time::Instant::now()) {
                            g.instance.kill();
                        }
                    }
                    () = self.stopping.cancelled() => return,
                }
                continue;
            }
            if below_poolsize == 0 {
                tokio::select! {
                    () = tokio::time::sleep(pool::BOOST_SPACING) => {}
                    () = self.stopping.cancelled() => return,
                }
                if pool.is_closed() || pool.deficit().0 == 0 {
                    continue;
                }
            }
            let pause = pool.backoff();
            if !pause.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = self.stopping.cancelled() => return,
                }
                if pool.is_closed() {
                    return;
                }
            }
            match self.launch(&pool).await {
                Ok(generic) => {
                    if let Err(g) = pool.put(generic) {
                        g.instance.kill();
                    }
                }
                Err(e) => {
                    pool.note_failure();
                    tracing::warn!(environment = %pool.env.metadata.name, error = %e, "cannot start a generic instance");
                }
            }
        }
    }

    /// Start one generic instance of `pool`'s environment and watch for its exit.
    pub(crate) async fn launch(
        &self,
        pool: &Arc<Pool<B::Launch>>,
    ) -> Result<GenericInstance, ExecutorError> {
        if self.stopping.is_cancelled() {
            return Err(ExecutorError::ShuttingDown);
        }
        let alive = self.lock_live().instances.len();
        if alive >= self.admission.config.max_instances {
            return Err(ExecutorError::Overloaded {
                message: format!(
                    "{alive} instances are running, the most this server allows (--max-instances)"
                ),
                retry_after_secs: 1,
                queue_full: false,
            });
        }
        let id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let env_meta = &pool.env.metadata;
        let log = LogSink::new(self.logs.writer(
            &env_meta.namespace,
            &format!("env:{}", env_meta.name),
            id,
        ));
        let instance = self.backend.start(&pool.plan, id, log.clone()).await?;
        {
            let mut live = self.lock_live();
            if live.closed {
                drop(live);
                instance.kill();
                return Err(ExecutorError::ShuttingDown);
            }
            live.instances.insert(id, instance.clone());
        }
        tracing::debug!(instance = id, pid = ?instance.pid(), addr = %instance.addr(), environment = %env_meta.name, "instance started");
        if let Some(me) = self.me.upgrade() {
            let watched = instance.clone();
            let pool = pool.clone();
            let log = log.clone();
            self.tasks.spawn(async move {
                let report = wait_exit(&*watched).await;
                me.on_exit(watched.id(), &pool, &report, &log);
            });
        }
        Ok(GenericInstance { instance, log })
    }

    pub(crate) fn on_exit(
        &self,
        id: u64,
        pool: &Pool<B::Launch>,
        report: &ExitReport,
        log: &LogSink,
    ) {
        self.lock_live().instances.remove(&id);
        let was_ready = pool.remove(id);
        self.table.remove_instance(id);
        if report.killed {
            tracing::debug!(instance = id, "instance stopped");
        } else if was_ready {
            tracing::warn!(
                instance = id,
                environment = %pool.env.metadata.name,
                status = %report,
                output = %log.recent_output(),
                "generic instance exited on its own"
            );
        } else {
            tracing::info!(instance = id, status = %report, "instance exited");
        }
    }

    /// A generic instance: from the pool if one is ready, else started now (a miss, which
    /// grows the pool for the next burst).
    pub(crate) async fn take_generic(
        &self,
        pool: &Arc<Pool<B::Launch>>,
    ) -> Result<GenericInstance, ExecutorError> {
        loop {
            match pool.take() {
                // Skip instances that died since they were pooled (their exit is being processed).
                Some(g) if g.instance.exit_watch().borrow().is_some() => continue,
                Some(g) => return Ok(g),
                None => {
                    pool.note_miss();
                    return self.launch(pool).await;
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
