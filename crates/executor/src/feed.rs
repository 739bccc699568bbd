//! Following the store: pools appear, are replaced and removed with their environments;
//! function versions retire when their function changes or goes; changed functions are
//! prefetched so their first call finds the deployment ready.

use std::collections::HashMap;
use std::sync::Arc;

use fission_core::resources::Function;
use fission_core::{AnyResource, ResourceKind, StoreError, WatchEvent, WatchEventType};
use fission_watcher::{Change, Watcher};
use tokio_util::sync::CancellationToken;

use crate::backend::{InstanceBackend, Specialization};
use crate::{EnvKey, Error, Executor};

impl<B: InstanceBackend> Executor<B> {
    pub(crate) async fn follow_store(&self, shutdown: &CancellationToken) -> Result<(), Error> {
        let mut watcher = Watcher::new(self.store.clone(), "executor");
        while let Some(next) = watcher.next(shutdown).await {
            match next? {
                Change::Listed { objects, .. } => self.reconcile(objects),
                Change::Applied(event) => self.apply(event),
            }
        }
        Ok(())
    }

    /// Bring pools and function versions in line with a full listing.
    fn reconcile(&self, objects: Vec<AnyResource>) {
        let mut envs = HashMap::new();
        let mut functions = HashMap::new();
        let mut newdeploy = Vec::new();
        for obj in objects {
            match obj {
                AnyResource::Environment(e) => {
                    envs.insert((e.metadata.namespace.clone(), e.metadata.name.clone()), e);
                }
                AnyResource::Function(f) => {
                    functions.insert(f.metadata.uid.clone(), f.metadata.resource_version.clone());
                    newdeploy.push(f);
                }
                _ => {}
            }
        }
        let gone: Vec<EnvKey> = self
            .lock_pools()
            .keys()
            .filter(|k| !envs.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.remove_pool(&key);
        }
        for env in envs.into_values() {
            if let Err(e) = self.install_env(env) {
                tracing::debug!(error = %e, "environment has no pool");
            }
        }
        self.table.reconcile(&functions);
        self.lock_scaled()
            .retain(|uid, _| functions.contains_key(uid));
        if self.deployed.is_some() {
            self.undeploy_all_but(functions.keys().cloned().collect());
        }
        for f in newdeploy {
            self.track_scaled(&f);
        }
    }

    fn apply(&self, event: WatchEvent) {
        match (event.event_type, event.object) {
            (WatchEventType::Deleted, AnyResource::Environment(e)) => {
                self.remove_pool(&(e.metadata.namespace.clone(), e.metadata.name.clone()));
            }
            (_, AnyResource::Environment(e)) => {
                if let Err(err) = self.install_env(e) {
                    tracing::debug!(error = %err, "environment has no pool");
                }
            }
            (WatchEventType::Deleted, AnyResource::Function(f)) => {
                self.untrack_scaled(&f.metadata.uid);
                if self.deployed(&f).is_some() {
                    self.undeploy(&f);
                }
                self.table.function_changed(&f.metadata.uid, None);
            }
            (_, AnyResource::Function(f)) => {
                self.table
                    .function_changed(&f.metadata.uid, Some(&f.metadata.resource_version));
                self.track_scaled(&f);
                if let Some(me) = self.me.upgrade() {
                    self.tasks.spawn(me.prefetch(f));
                }
            }
            _ => {}
        }
    }

    /// Let the backend prepare a created or updated function's first specialization now. One
    /// at a time, in the background.
    async fn prefetch(self: Arc<Self>, function: Function) {
        let _one_at_a_time = tokio::select! {
            p = self.prefetching.acquire() => p,
            () = self.stopping.cancelled() => return,
        };
        // Without a pool there is nothing to start soon anyway.
        let Some(pool) = self.lock_pools().get(&env_key(&function)).cloned() else {
            return;
        };
        let package = match self.package_of(&function).await {
            Ok(p) => p,
            Err(error) => {
                tracing::debug!(function = %function.metadata.name, %error, "deployment not prefetched");
                return;
            }
        };
        let target = Specialization {
            function: &function,
            package: &package,
            environment: &pool.env,
            timeout: self.specialize_timeout(&function),
        };
        self.backend.prefetch(target).await;
    }

    /// The function's package, read from the store.
    pub(crate) async fn package_of(
        &self,
        function: &Function,
    ) -> Result<fission_core::resources::Package, fission_core::ExecutorError> {
        use fission_core::ExecutorError;
        let r = &function.spec.package.packageref;
        let ns = if r.namespace.is_empty() {
            &function.metadata.namespace
        } else {
            &r.namespace
        };
        match self.store.get(ResourceKind::Package, ns, &r.name).await {
            Ok(AnyResource::Package(p)) => Ok(p),
            Ok(_) => Err(ExecutorError::Internal(
                "store returned another kind".to_owned(),
            )),
            Err(StoreError::NotFound { .. }) => Err(ExecutorError::NotFound(format!(
                "package '{}/{}' of function '{}' not found",
                ns, r.name, function.metadata.name
            ))),
            Err(e) => Err(ExecutorError::Internal(e.to_string())),
        }
    }
}

/// `(namespace, name)` of the function's environment (its own namespace unless it names one).
pub(crate) fn env_key(function: &Function) -> EnvKey {
    let env_ref = &function.spec.environment;
    let ns = if env_ref.namespace.is_empty() {
        &function.metadata.namespace
    } else {
        &env_ref.namespace
    };
    (ns.clone(), env_ref.name.clone())
}
