//! [`LocalBackend`]: instances on this machine — sandbox slots ([`crate::SandboxLauncher`]) or
//! plain processes ([`crate::ProcessLauncher`]) — specialized by putting the code on disk and
//! telling the runtime directly (there is no fetcher sidecar here).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fission_core::resources::Environment;
use fission_core::runtime::{BuiltinRuntime, builtin_runtime, unsupported_image_message};
use fission_core::{
    AnyResource, ArchiveStorage, ExecutorError, ResourceKind, ResourceStore, StoreError,
};

use crate::backend::{EnvironmentPlan, InstanceBackend, LoadError, Specialization};
use crate::launcher::{
    CodeSlot, InstanceLauncher, InstanceLimits, LaunchSpec, LogSink, NODE_FLAGS, RuntimeInstance,
};
use crate::package::{PackageCache, UnpackLimits};
use crate::specialize::{self, LoadRequest, SpecializeError};

/// Annotation that turns off outside network access for an environment's instances.
pub const EGRESS_ANNOTATION: &str = "fission.io/egress";

/// Settings of the local backend.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where the runtimes live (`<dir>/nodejs/server.js`, `<dir>/python/server.py`).
    pub environments_dir: PathBuf,
    /// Unpacked deployments, `<dir>/<ns>/<package>/<resourceVersion>/deployarchive`.
    pub cache_dir: PathBuf,
    /// Absolute path of the node interpreter (see [`crate::resolve_runtime_binaries`]).
    pub node_bin: PathBuf,
    /// Absolute path of the python interpreter (never a pyenv shim).
    pub python_bin: PathBuf,
    /// How long starting one instance may take (the launcher's `launch`).
    pub instance_start_timeout: Duration,
    /// Downloads of remote (http/https) deployment archives.
    pub archive_fetch: fission_fetch::FetchConfig,
}

impl LocalConfig {
    /// Settings with a 10 s instance start limit.
    pub fn new(
        environments_dir: PathBuf,
        cache_dir: PathBuf,
        node_bin: PathBuf,
        python_bin: PathBuf,
    ) -> Self {
        Self {
            environments_dir,
            cache_dir,
            node_bin,
            python_bin,
            instance_start_timeout: Duration::from_secs(10),
            archive_fetch: fission_fetch::FetchConfig::default(),
        }
    }
}

/// How to start instances of an environment version on this machine.
#[derive(Debug, Clone)]
pub struct LaunchTemplate {
    /// The interpreter.
    pub program: PathBuf,
    /// The loader script and interpreter flags.
    pub args: Vec<std::ffi::OsString>,
    /// `runtime.container.env` of the environment.
    pub env: Vec<(String, String)>,
    /// Limits and network policy from the environment.
    pub limits: InstanceLimits,
}

/// The local [`InstanceBackend`].
pub struct LocalBackend {
    config: LocalConfig,
    launcher: Arc<dyn InstanceLauncher>,
    packages: PackageCache,
    /// For the secrets and config maps functions read.
    store: Arc<dyn ResourceStore>,
}

impl LocalBackend {
    /// A backend starting instances with `launcher`, reading deployments from `archives`.
    pub fn new(
        config: LocalConfig,
        launcher: Arc<dyn InstanceLauncher>,
        archives: Arc<dyn ArchiveStorage>,
        store: Arc<dyn ResourceStore>,
    ) -> Self {
        Self::with_limits(config, launcher, archives, store, UnpackLimits::default())
    }

    pub(crate) fn with_limits(
        config: LocalConfig,
        launcher: Arc<dyn InstanceLauncher>,
        archives: Arc<dyn ArchiveStorage>,
        store: Arc<dyn ResourceStore>,
        limits: UnpackLimits,
    ) -> Self {
        let packages = PackageCache::new(
            config.cache_dir.clone(),
            archives,
            limits,
            &config.archive_fetch,
        );
        Self {
            config,
            launcher,
            packages,
            store,
        }
    }

    /// Write the function's secrets and config maps where the instance sees them as
    /// `/secrets/<ns>/<name>/<key>` and `/configs/<ns>/<name>/<key>` (Fission's fetcher layout).
    async fn install_values(
        &self,
        target: Specialization<'_>,
        secrets_dir: &Path,
        configs_dir: &Path,
    ) -> Result<(), LoadError> {
        let function = target.function;
        let ns = &function.metadata.namespace;
        let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for (refs, kind, root) in [
            (&function.spec.secrets, ResourceKind::Secret, secrets_dir),
            (
                &function.spec.configmaps,
                ResourceKind::ConfigMap,
                configs_dir,
            ),
        ] {
            for r in refs {
                let rns = if r.namespace.is_empty() {
                    ns.as_str()
                } else {
                    r.namespace.as_str()
                };
                let obj = match self.store.get(kind, rns, &r.name).await {
                    Ok(o) => o,
                    Err(StoreError::NotFound { .. }) => {
                        let kind = kind.kind_name().to_lowercase();
                        return Err(LoadError::Install(format!(
                            "{kind} '{}' (namespace '{rns}') used by the function does not exist; create it with 'fission {kind} create'",
                            r.name
                        )));
                    }
                    Err(e) => return Err(LoadError::Install(e.to_string())),
                };
                let dir = root.join(rns).join(&r.name);
                match obj {
                    AnyResource::Secret(s) => {
                        files.extend(s.data.into_iter().map(|(k, v)| (dir.join(k), v)))
                    }
                    AnyResource::ConfigMap(c) => files.extend(
                        c.data
                            .into_iter()
                            .map(|(k, v)| (dir.join(k), v.into_bytes())),
                    ),
                    _ => {}
                }
            }
        }
        if files.is_empty() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt as _;
            for (path, bytes) in files {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                    let mut d = parent;
                    // Directories down from the slot's root must be traversable by the instance's uid.
                    for _ in 0..2 {
                        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
                        match d.parent() {
                            Some(p) => d = p,
                            None => break,
                        }
                    }
                }
                std::fs::write(&path, bytes)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| LoadError::Install(e.to_string()))?
        .map_err(|e| {
            LoadError::Install(format!(
                "cannot give the instance its secrets and config maps: {e}"
            ))
        })
    }
}

#[async_trait::async_trait]
impl InstanceBackend for LocalBackend {
    type Launch = LaunchTemplate;

    fn plan(&self, env: &Environment) -> Result<EnvironmentPlan<LaunchTemplate>, ExecutorError> {
        let image = &env.spec.runtime.image;
        let runtime = builtin_runtime(image)
            .ok_or_else(|| ExecutorError::Unsupported(unsupported_image_message(image)))?;
        let dir = self.config.environments_dir.join(runtime.dir_name());
        let (program, script, args) = match runtime {
            BuiltinRuntime::NodeJs => {
                let script = dir.join("server.js");
                let mut args: Vec<std::ffi::OsString> = NODE_FLAGS.iter().map(Into::into).collect();
                args.push(script.clone().into_os_string());
                (self.config.node_bin.clone(), script, args)
            }
            BuiltinRuntime::Python => {
                let script = dir.join("server.py");
                (
                    self.config.python_bin.clone(),
                    script.clone(),
                    vec!["-I".into(), "-S".into(), script.into_os_string()],
                )
            }
        };
        if !script.is_file() {
            return Err(ExecutorError::Unsupported(format!(
                "the {} runtime is not installed: {} is missing",
                runtime.dir_name(),
                script.display()
            )));
        }
        if !program.is_file() {
            return Err(ExecutorError::Unsupported(format!(
                "the {} runtime cannot start: interpreter {} not found",
                runtime.dir_name(),
                program.display()
            )));
        }
        Ok(EnvironmentPlan {
            runtime: runtime.dir_name(),
            launch: LaunchTemplate {
                program,
                args,
                env: container_env(env),
                limits: instance_limits(env),
            },
        })
    }

    async fn start(
        &self,
        plan: &EnvironmentPlan<LaunchTemplate>,
        instance_id: u64,
        log: LogSink,
    ) -> Result<Arc<dyn RuntimeInstance>, ExecutorError> {
        let template = &plan.launch;
        let spec = LaunchSpec {
            instance_id,
            program: template.program.clone(),
            args: template.args.clone(),
            env: template.env.clone(),
            log,
            limits: template.limits.clone(),
        };
        let limit = self.config.instance_start_timeout;
        match tokio::time::timeout(limit, self.launcher.launch(spec)).await {
            Ok(Ok(i)) => Ok(i),
            Ok(Err(e)) => Err(ExecutorError::Internal(format!(
                "cannot start a {} instance: {e}",
                plan.runtime
            ))),
            Err(_) => Err(ExecutorError::Internal(format!(
                "starting a {} instance took longer than {limit:?}",
                plan.runtime
            ))),
        }
    }

    async fn specialize(
        &self,
        instance: &dyn RuntimeInstance,
        log: &LogSink,
        target: Specialization<'_>,
    ) -> Result<(), LoadError> {
        let code = self
            .packages
            .deployment(target.package, target.environment.spec.keeparchive)
            .await
            .map_err(|e| LoadError::Package(e.to_string()))?;
        let env_version = target.env_version();
        let slot = if env_version >= 2 {
            CodeSlot::LoadRequest
        } else {
            CodeSlot::V1CodePath
        };
        let installing = async {
            let filepath = instance.install_code(&code, slot).await.map_err(|e| {
                LoadError::Install(format!("cannot give the instance its code: {e}"))
            })?;
            if let Some((secrets_dir, configs_dir)) = instance.values_dirs() {
                self.install_values(target, &secrets_dir, &configs_dir)
                    .await?;
            }
            Ok::<_, LoadError>(filepath)
        };
        // Connecting wakes the runtime, which overlaps with the file work (see `connect`).
        let (filepath, connection) = tokio::join!(
            installing,
            specialize::connect(instance.addr(), target.timeout)
        );
        let filepath = filepath?;
        let load = LoadRequest {
            filepath: filepath.to_string_lossy().into_owned(),
            function_name: &target.function.spec.package.function_name,
            url: "",
            function_metadata: &target.function.metadata,
            env_version,
        };
        let result = match connection {
            Ok(c) => specialize::specialize(c, &load, target.timeout).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| match e {
            SpecializeError::Rejected { body, .. } => LoadError::Rejected(body),
            e @ SpecializeError::Timeout(_) => LoadError::Unreachable(e.to_string()),
            e @ SpecializeError::Transport(_) => {
                LoadError::Unreachable(with_output(e.to_string(), log))
            }
        })
    }

    /// Unpack the deployment into the package cache (~0.5 ms less on a cold start; more for
    /// archives). Failures are left for the first call to report.
    async fn prefetch(&self, target: Specialization<'_>) {
        if let Err(error) = self
            .packages
            .deployment(target.package, target.environment.spec.keeparchive)
            .await
        {
            tracing::debug!(function = %target.function.metadata.name, %error, "deployment not prefetched");
        }
    }
}

fn with_output(message: String, log: &LogSink) -> String {
    let output = log.recent_output();
    if output.is_empty() {
        message
    } else {
        format!("{message}; last output:\n{output}")
    }
}

/// Limits from the environment: `resources` (Fission's `--maxmemory/--maxcpu`, with the
/// minimum used when only it is set) and the egress annotation.
fn instance_limits(env: &Environment) -> InstanceLimits {
    use fission_core::resources::ResourceRequirements as R;
    let res = &env.spec.resources;
    let memory_bytes = R::memory_bytes(&res.limits).or_else(|| R::memory_bytes(&res.requests));
    let cpu_millis = R::cpu_millis(&res.limits)
        .or_else(|| R::cpu_millis(&res.requests))
        .and_then(|c| u64::try_from(c).ok())
        .filter(|c| *c > 0);
    let egress = env
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EGRESS_ANNOTATION))
        .is_none_or(|v| !matches!(v.as_str(), "false" | "off" | "no" | "0"));
    InstanceLimits {
        memory_bytes,
        cpu_millis,
        egress,
    }
}

/// `runtime.container.env` of an environment as name/value pairs (`valueFrom` is ignored: there
/// are no Kubernetes secrets to resolve here).
fn container_env(env: &Environment) -> Vec<(String, String)> {
    let Some(list) = env
        .spec
        .runtime
        .container
        .as_ref()
        .and_then(|c| c.get("env"))
        .and_then(|e| e.as_array())
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|item| {
            let name = item.get("name")?.as_str()?;
            let value = item.get("value").and_then(|v| v.as_str()).unwrap_or("");
            (!name.is_empty()).then(|| (name.to_owned(), value.to_owned()))
        })
        .collect()
}
