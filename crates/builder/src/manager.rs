//! The build manager: watches Packages, claims pending ones, runs their builds and records the
//! result on the package and its functions.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fission_core::resources::{
    Environment, Function, Package, PackageStatus, build_status, initial_build_status,
};
use fission_core::{
    AnyResource, ArchiveStorage, FunctionLogs, ResourceKind, ResourceStore, StoreError, WatchEvent,
    WatchEventType,
};
use fission_watcher::{Change, Watcher};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::build::{self, Outcome};
use crate::log::BuildLog;
use crate::remote::{RemoteBuilds, RemoteLog};
use crate::tools::Tools;
use crate::{Config, Error};

/// How often a write that conflicts with another writer is retried.
const WRITE_ATTEMPTS: usize = 8;

type PkgKey = (String, String);

/// A build that is queued or running.
#[derive(Debug)]
struct InFlight {
    /// resourceVersion of the package version this build is for: the `pending` version that
    /// triggered it, then the `running` version it wrote. Anything at or below it is handled.
    version: u64,
    cancel: CancellationToken,
    id: u64,
}

/// Builds source packages (see the crate documentation).
pub struct BuildManager {
    config: Config,
    store: Arc<dyn ResourceStore>,
    archives: Arc<dyn ArchiveStorage>,
    logs: Arc<dyn FunctionLogs>,
    tools: Tools,
    /// Downloads of remote (http/https) source archives, or why this server cannot make them.
    remote: Result<fission_fetch::Fetcher, String>,
    inflight: Mutex<HashMap<PkgKey, InFlight>>,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    next_id: AtomicU64,
    stopping: CancellationToken,
}

impl std::fmt::Debug for BuildManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BuildManager {
    /// A build manager over `store`, storing deployments in `archives` and build output in
    /// `logs` (under `(namespace, "pkg:<package>")`). Nothing happens until [`Self::run`].
    pub fn new(
        config: Config,
        store: Arc<dyn ResourceStore>,
        archives: impl ArchiveStorage,
        logs: impl FunctionLogs,
    ) -> Arc<Self> {
        let tools = Tools::new(&config);
        // Builds run once per package version: nothing to gain from a cache by checksum.
        let fetch = fission_fetch::FetchConfig {
            max_bytes: config
                .archive_fetch
                .max_bytes
                .min(config.unpack_limits.max_bytes),
            ..config.archive_fetch.clone()
        };
        let remote = fission_fetch::Fetcher::new(&fetch, None).map_err(|e| {
            tracing::error!(error = %e, "remote (http/https) source archives cannot be fetched");
            e.to_string()
        });
        let slots = Arc::new(Semaphore::new(config.max_concurrent_builds.max(1)));
        Arc::new(Self {
            config,
            store,
            archives: Arc::new(archives),
            logs: Arc::new(logs),
            tools,
            remote,
            inflight: Mutex::new(HashMap::new()),
            slots,
            tasks: TaskTracker::new(),
            next_id: AtomicU64::new(1),
            stopping: CancellationToken::new(),
        })
    }

    /// Watch packages and build them until `shutdown`; then stop running builds (killing their
    /// processes) and return. Fails only if the work directory cannot be prepared; store errors
    /// are retried.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), Error> {
        self.prepare_work_dir().await?;
        tracing::info!(work_dir = %self.config.work_dir.display(), "build manager started");
        // Store failures are retried by the watcher, the first listing's too: builds are not
        // worth failing the server over.
        let mut watcher = Watcher::new(self.store.clone(), "build manager");
        while let Some(next) = watcher.next(&shutdown).await {
            match next {
                Ok(Change::Listed { objects, .. }) => {
                    for o in objects {
                        if let AnyResource::Package(p) = o {
                            self.consider(p, true);
                        }
                    }
                }
                Ok(Change::Applied(ev)) => self.on_event(ev),
                Err(e) => tracing::warn!(error = %e, "cannot list packages; retrying"),
            }
        }
        self.stopping.cancel();
        for f in self.lock_inflight().values() {
            f.cancel.cancel();
        }
        self.tasks.close();
        self.tasks.wait().await;
        tracing::info!("build manager stopped");
        Ok(())
    }

    /// Empty the work directory: nothing is building yet, so anything there is left over.
    async fn prepare_work_dir(&self) -> Result<(), Error> {
        let dir = self.config.work_dir.clone();
        tokio::task::spawn_blocking(move || {
            if dir.exists() {
                for entry in std::fs::read_dir(&dir)? {
                    let p = entry?.path();
                    if p.is_dir() {
                        std::fs::remove_dir_all(&p)?
                    } else {
                        std::fs::remove_file(&p)?
                    }
                }
            }
            std::fs::create_dir_all(&dir)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|source| Error::WorkDir {
            path: self.config.work_dir.clone(),
            source,
        })
    }

    fn lock_inflight(&self) -> MutexGuard<'_, HashMap<PkgKey, InFlight>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_event(self: &Arc<Self>, ev: WatchEvent) {
        match (ev.event_type, ev.object) {
            (WatchEventType::Deleted, AnyResource::Package(p)) => {
                let key = (p.metadata.namespace.clone(), p.metadata.name.clone());
                if let Some(f) = self.lock_inflight().get(&key) {
                    tracing::info!(package = %format!("{}/{}", key.0, key.1), "package deleted; stopping its build");
                    f.cancel.cancel();
                }
            }
            (_, AnyResource::Package(p)) => self.consider(p, false),
            _ => {}
        }
    }

    /// Schedule a build if `pkg` needs one. `listed`: seen in a list (where a `running` package
    /// no build of ours is working on was left by a server that stopped mid-build).
    fn consider(self: &Arc<Self>, pkg: Package, listed: bool) {
        let status = if pkg.status.buildstatus.is_empty() {
            initial_build_status(&pkg.spec).0
        } else {
            pkg.status.buildstatus.as_str()
        };
        let wanted = status == build_status::PENDING || (listed && status == build_status::RUNNING);
        if !wanted {
            return;
        }
        let version = pkg.metadata.resource_version_number();
        let key = (pkg.metadata.namespace.clone(), pkg.metadata.name.clone());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = self.stopping.child_token();
        {
            let mut inflight = self.lock_inflight();
            if let Some(f) = inflight.get(&key) {
                if f.version >= version {
                    return; // this version (or a newer one) is already being built
                }
                tracing::info!(package = %format!("{}/{}", key.0, key.1), "newer package version; cancelling its running build");
                f.cancel.cancel();
            }
            inflight.insert(
                key.clone(),
                InFlight {
                    version,
                    cancel: cancel.clone(),
                    id,
                },
            );
        }
        let me = self.clone();
        self.tasks.spawn(async move {
            me.build_task(&key, version, &cancel).await;
            let mut inflight = me.lock_inflight();
            if inflight.get(&key).is_some_and(|f| f.id == id) {
                inflight.remove(&key);
            }
        });
    }

    /// Claim, build and record one package version.
    async fn build_task(&self, key: &PkgKey, version: u64, cancel: &CancellationToken) {
        let _slot = tokio::select! {
            s = self.slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => return },
            () = cancel.cancelled() => return,
        };
        let Some(running) = self.claim(key, version).await else {
            return;
        };
        let running_version = running.metadata.resource_version_number();
        {
            let mut inflight = self.lock_inflight();
            if let Some(f) = inflight.get_mut(key).filter(|f| f.version == version) {
                f.version = running_version;
            }
        }
        let name = format!("{}/{}", key.0, key.1);
        tracing::info!(package = %name, resource_version = running_version, "build started");

        let writer = self
            .logs
            .writer(&key.0, &format!("pkg:{}", key.1), running_version);
        let log = BuildLog::new(Some(writer), self.config.max_log_bytes);
        let env = self.environment_of(&running).await;
        let remote = match (&self.config.remote, &env) {
            (Some(r), Ok(e)) if r.handles(e) => Some((r.clone(), e.clone())),
            _ => None,
        };
        let outcome = match remote {
            Some((remote, env)) => {
                self.remote_build(&running, &env, &*remote, &log, cancel)
                    .await
            }
            None => self.local_build(&running, env, &log, cancel).await,
        };
        match outcome {
            Outcome::Cancelled => tracing::info!(package = %name, "build cancelled"),
            Outcome::Failed => {
                tracing::info!(package = %name, "build failed");
                self.record(running, build_status::FAILED, log.text(), None)
                    .await;
            }
            Outcome::Succeeded(deployment) => {
                tracing::info!(package = %name, "build succeeded");
                if let Some(pkg) = self
                    .record(
                        running,
                        build_status::SUCCEEDED,
                        log.text(),
                        Some(deployment),
                    )
                    .await
                {
                    self.repin_functions(&pkg).await;
                }
            }
        }
    }

    /// Build here, in a fresh work directory that is removed afterwards.
    async fn local_build(
        &self,
        running: &Package,
        env: Result<Environment, String>,
        log: &BuildLog,
        cancel: &CancellationToken,
    ) -> Outcome {
        let work = self.work_dir_for(running);
        let outcome = match tokio::fs::create_dir_all(&work).await {
            Err(e) => {
                log.note(format!(
                    "error building source package: cannot create the build directory: {e}"
                ));
                Outcome::Failed
            }
            Ok(()) => {
                let ctx = build::Ctx {
                    config: &self.config,
                    archives: self.archives.as_ref(),
                    remote: &self.remote,
                    tools: &self.tools,
                    log,
                    cancel,
                };
                build::build(&ctx, running, env, &work).await
            }
        };
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(work)).await;
        outcome
    }

    /// Build through [`Config::remote`], within the build timeout.
    async fn remote_build(
        &self,
        running: &Package,
        env: &Environment,
        remote: &dyn RemoteBuilds,
        log: &BuildLog,
        cancel: &CancellationToken,
    ) -> Outcome {
        let started = std::time::Instant::now();
        let rlog = RemoteLog::new(log.clone());
        rlog.note(format!("Building {}", remote.describe()));
        let limit = self.config.build_timeout;
        let result = tokio::select! {
            r = tokio::time::timeout(limit, remote.build(running, env, &rlog)) => r,
            () = cancel.cancelled() => return Outcome::Cancelled,
        };
        let took = format!("{:.1}s", started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(archive)) => {
                rlog.note(format!("Build succeeded in {took}"));
                Outcome::Succeeded(archive)
            }
            Ok(Err(why)) => {
                rlog.note(format!("error building source package: {why}"));
                rlog.note(format!("Build failed after {took}"));
                Outcome::Failed
            }
            Err(_) => {
                rlog.note(format!(
                    "error building source package: the build took longer than {}s",
                    limit.as_secs()
                ));
                Outcome::Failed
            }
        }
    }

    /// `<work_dir>/<ns>/<pkg>-<rv>`.
    fn work_dir_for(&self, pkg: &Package) -> PathBuf {
        let safe = |s: &str| s.replace(['/', '\\', '\0'], "_").replace("..", "_");
        self.config
            .work_dir
            .join(safe(&pkg.metadata.namespace))
            .join(format!(
                "{}-{}",
                safe(&pkg.metadata.name),
                pkg.metadata.resource_version_number()
            ))
    }

    /// Mark the package `running` if it is still the version this build is for. `None` when
    /// another writer got there first (its change arrives as a new event) or it is gone.
    async fn claim(&self, key: &PkgKey, version: u64) -> Option<Package> {
        let mut pkg = match self.store.get(ResourceKind::Package, &key.0, &key.1).await {
            Ok(AnyResource::Package(p)) => p,
            Ok(_) | Err(StoreError::NotFound { .. }) => return None,
            Err(e) => {
                tracing::warn!(package = %format!("{}/{}", key.0, key.1), error = %e, "cannot read package to build it");
                return None;
            }
        };
        let status = if pkg.status.buildstatus.is_empty() {
            initial_build_status(&pkg.spec).0
        } else {
            pkg.status.buildstatus.as_str()
        };
        let fresh_version = pkg.metadata.resource_version_number();
        if fresh_version != version
            || !(status == build_status::PENDING || status == build_status::RUNNING)
        {
            return None;
        }
        pkg.status = PackageStatus {
            buildstatus: build_status::RUNNING.to_owned(),
            buildlog: String::new(),
            last_update_timestamp: Some(now()),
        };
        match self.store.update(AnyResource::Package(pkg)).await {
            Ok(AnyResource::Package(p)) => Some(p),
            Ok(_) => None,
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => None,
            Err(e) => {
                tracing::warn!(package = %format!("{}/{}", key.0, key.1), error = %e, "cannot mark package running");
                None
            }
        }
    }

    /// The package's environment, or (for the build log) why it cannot be read.
    async fn environment_of(&self, pkg: &Package) -> Result<Environment, String> {
        let r = &pkg.spec.environment;
        let ns = if r.namespace.is_empty() {
            &pkg.metadata.namespace
        } else {
            &r.namespace
        };
        match self.store.get(ResourceKind::Environment, ns, &r.name).await {
            Ok(AnyResource::Environment(e)) => Ok(e),
            Ok(_) => Err("the store returned another kind for the environment".to_owned()),
            Err(StoreError::NotFound { .. }) => Err(format!(
                "environment '{}' (namespace '{ns}') not found",
                r.name
            )),
            Err(e) => Err(format!("cannot read environment '{}': {e}", r.name)),
        }
    }

    /// Write the build's result onto the package, as long as it is still the build this package
    /// is waiting for (still `running`, same source). Returns the written package.
    async fn record(
        &self,
        mut pkg: Package,
        status: &str,
        log: String,
        deployment: Option<fission_core::resources::Archive>,
    ) -> Option<Package> {
        let built_source = pkg.spec.source.clone();
        let name = format!("{}/{}", pkg.metadata.namespace, pkg.metadata.name);
        for _ in 0..WRITE_ATTEMPTS {
            if let Some(d) = &deployment {
                pkg.spec.deployment = d.clone();
            }
            pkg.status = PackageStatus {
                buildstatus: status.to_owned(),
                buildlog: log.clone(),
                last_update_timestamp: Some(now()),
            };
            let (ns, n) = (pkg.metadata.namespace.clone(), pkg.metadata.name.clone());
            match self.store.update(AnyResource::Package(pkg)).await {
                Ok(AnyResource::Package(p)) => return Some(p),
                Ok(_) => return None,
                Err(StoreError::Conflict { .. }) => {
                    // Someone else wrote the package meanwhile (a label, or a new source). Keep our
                    // result only if it is still the build the package waits for.
                    match self.store.get(ResourceKind::Package, &ns, &n).await {
                        Ok(AnyResource::Package(p))
                            if p.status.buildstatus == build_status::RUNNING
                                && p.spec.source == built_source =>
                        {
                            pkg = p;
                        }
                        _ => {
                            tracing::info!(package = %name, "package changed during its build; result discarded");
                            return None;
                        }
                    }
                }
                Err(StoreError::NotFound { .. }) => return None,
                Err(e) => {
                    tracing::warn!(package = %name, error = %e, "cannot record build result; retrying");
                    if self.stopping.is_cancelled() {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match self.store.get(ResourceKind::Package, &ns, &n).await {
                        Ok(AnyResource::Package(p)) if p.spec.source == built_source => pkg = p,
                        _ => return None,
                    }
                }
            }
        }
        tracing::warn!(package = %name, "gave up recording the build result after repeated conflicts");
        None
    }

    /// Point every function using `pkg` at its new version, so the executor retires instances of
    /// the old code and new calls load the new build.
    async fn repin_functions(&self, pkg: &Package) {
        let ns = &pkg.metadata.namespace;
        let rv = &pkg.metadata.resource_version;
        let functions = match self.store.list(ResourceKind::Function, Some(ns)).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(package = %pkg.metadata.name, error = %e, "cannot list functions to re-pin them");
                return;
            }
        };
        for f in functions {
            let AnyResource::Function(mut f) = f else {
                continue;
            };
            for _ in 0..WRITE_ATTEMPTS {
                if !uses(&f, pkg) || f.spec.package.packageref.resourceversion == *rv {
                    break;
                }
                f.spec.package.packageref.resourceversion = rv.clone();
                let (fns, fname) = (f.metadata.namespace.clone(), f.metadata.name.clone());
                match self.store.update(AnyResource::Function(f)).await {
                    Ok(_) => {
                        tracing::info!(function = %format!("{fns}/{fname}"), package_version = %rv, "function re-pinned to the new build");
                        break;
                    }
                    Err(StoreError::Conflict { .. }) => {
                        match self.store.get(ResourceKind::Function, &fns, &fname).await {
                            Ok(AnyResource::Function(fresh)) => f = fresh,
                            _ => break,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(function = %format!("{fns}/{fname}"), error = %e, "cannot re-pin function");
                        break;
                    }
                }
            }
        }
    }
}

fn uses(f: &Function, pkg: &Package) -> bool {
    let r = &f.spec.package.packageref;
    let ns = if r.namespace.is_empty() {
        &f.metadata.namespace
    } else {
        &r.namespace
    };
    r.name == pkg.metadata.name && *ns == pkg.metadata.namespace
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
