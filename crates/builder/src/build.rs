//! One build: source archive → work directory → build steps → deployment archive.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fission_core::ArchiveStorage;
use fission_core::archive::{STORAGE_URL_PREFIX, archive_id_from_url};
use fission_core::resources::{
    ARCHIVE_LITERAL, ARCHIVE_URL, Archive, Checksum, Environment, Package,
};
use fission_core::runtime::BuiltinRuntime;
use fission_fetch::sha256_hex;
use fission_unpack::{is_zip, safe_relative_path, unzip};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::archive::zip_dir;
use crate::log::BuildLog;
use crate::process::{StepError, StepLimits, run_step};
use crate::recipe::{self, Recipe};
use crate::runner::{BuildResources, BuildStep, StepPaths};
use crate::tools::Tools;

/// How a build ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Built: the deployment archive, already in the archive store.
    Succeeded(Archive),
    /// Failed; the log says why.
    Failed,
    /// Stopped because it no longer matters (superseded, deleted, shutdown).
    Cancelled,
}

/// What a build needs from the manager.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a Config,
    pub(crate) archives: &'a dyn ArchiveStorage,
    pub(crate) remote: &'a Result<fission_fetch::Fetcher, String>,
    pub(crate) tools: &'a Tools,
    pub(crate) log: &'a BuildLog,
    pub(crate) cancel: &'a CancellationToken,
}

/// Why a build stopped early: already logged (`Failed`) or cancelled.
enum Stop {
    Failed(String),
    Cancelled,
}

impl From<StepError> for Stop {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Cancelled => Stop::Cancelled,
            e => Stop::Failed(e.to_string()),
        }
    }
}

/// Build `pkg` in `work` (an empty, existing directory). `env` is the package's environment,
/// or why it could not be read.
#[tracing::instrument(name = "build", level = "debug", skip_all, fields(
    fission.package = %pkg.metadata.name,
    fission.namespace = %pkg.metadata.namespace,
))]
pub(crate) async fn build(
    ctx: &Ctx<'_>,
    pkg: &Package,
    env: Result<Environment, String>,
    work: &Path,
) -> Outcome {
    let started = Instant::now();
    match run(ctx, pkg, env, work, started).await {
        Ok(archive) => {
            ctx.log
                .note(format!("Build succeeded in {}", secs(started.elapsed())));
            Outcome::Succeeded(archive)
        }
        Err(Stop::Failed(why)) => {
            ctx.log
                .note(format!("error building source package: {why}"));
            ctx.log
                .note(format!("Build failed after {}", secs(started.elapsed())));
            Outcome::Failed
        }
        Err(Stop::Cancelled) => Outcome::Cancelled,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

async fn run(
    ctx: &Ctx<'_>,
    pkg: &Package,
    env: Result<Environment, String>,
    work: &Path,
    started: Instant,
) -> Result<Archive, Stop> {
    let limits = StepLimits {
        deadline: started + ctx.config.build_timeout,
        timeout: ctx.config.build_timeout,
        max_output_bytes: ctx.config.max_output_bytes,
    };
    let env = env.map_err(Stop::Failed)?;
    let recipe = recipe::select(pkg, &env).map_err(Stop::Failed)?;
    ctx.log.note(format!(
        "Building package '{}' (resourceVersion {}) of environment '{}' with {}",
        pkg.metadata.name,
        pkg.metadata.resource_version,
        env.metadata.name,
        recipe.describe()
    ));
    let resources = build_resources(&env);
    ctx.log.note(format!(
        "The build runs {}{}",
        ctx.config.runner.describe(),
        describe_resources(resources)
    ));

    let bytes = source_bytes(pkg, ctx.archives, ctx.remote)
        .await
        .map_err(Stop::Failed)?;
    let seen = ctx
        .config
        .runner
        .paths(work)
        .map_err(|e| Stop::Failed(format!("cannot prepare the build directory: {e}")))?;
    let dirs = Dirs {
        work: work.to_owned(),
        src: work.join("src"),
        deploy: work.join("deploy"),
        seen,
        resources,
    };
    let src = dirs.src.clone();
    let unpack_limits = ctx.config.unpack_limits;
    {
        let src = src.clone();
        tokio::task::spawn_blocking(move || unzip(&bytes, &src, unpack_limits))
            .await
            .map_err(|e| Stop::Failed(format!("unpacking the source archive failed: {e}")))?
            .map_err(|e| Stop::Failed(format!("cannot unpack the source archive: {e}")))?;
    }
    check_cancel(ctx)?;

    let deploy_from = match &recipe {
        Recipe::Builtin(BuiltinRuntime::Python) => {
            python(ctx, &dirs, &limits).await?;
            dirs.src.clone()
        }
        Recipe::Builtin(BuiltinRuntime::NodeJs) => {
            node(ctx, &dirs, &limits).await?;
            dirs.src.clone()
        }
        Recipe::Command(argv) => {
            command(ctx, argv, &dirs, &limits).await?;
            dirs.deploy.clone()
        }
    };
    check_cancel(ctx)?;
    store_deployment(ctx, &deploy_from).await
}

fn check_cancel(ctx: &Ctx<'_>) -> Result<(), Stop> {
    if ctx.cancel.is_cancelled() {
        Err(Stop::Cancelled)
    } else {
        Ok(())
    }
}

/// The source archive's bytes, checked against its recorded sha256.
async fn source_bytes(
    pkg: &Package,
    archives: &dyn ArchiveStorage,
    remote: &Result<fission_fetch::Fetcher, String>,
) -> Result<Vec<u8>, String> {
    let a = &pkg.spec.source;
    if a.is_empty() {
        return Err("the package has no source archive, so there is nothing to build".to_owned());
    }
    let literal = a.archive_type == ARCHIVE_LITERAL
        || (a.archive_type != ARCHIVE_URL && !a.literal.is_empty());
    let bytes = if literal {
        a.literal.clone()
    } else if archive_id_from_url(&a.url).is_none() && fission_fetch::is_remote_url(&a.url) {
        let fetcher = remote
            .as_ref()
            .map_err(|why| format!("cannot fetch the source archive {}: {why}", a.url))?;
        // Verified here against the recorded sum (none: `--insecure`).
        fetcher
            .fetch(&a.url, &a.checksum.sum)
            .await
            .map_err(|e| format!("cannot fetch the source archive: {e}"))?
    } else {
        let Some(id) = archive_id_from_url(&a.url) else {
            return Err(format!(
                "source archive URL '{}' is not supported: only http(s) URLs and archives stored on this server \
                 (…/v1/archive?id=<id>) can be built; give the files with 'fission pkg update --src <files>' instead",
                a.url
            ));
        };
        archives
            .get(id)
            .await
            .map_err(|e| format!("cannot read the source archive: {e}"))?
    };
    if !literal && !a.checksum.sum.is_empty() {
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(&a.checksum.sum) {
            return Err(format!(
                "source archive checksum mismatch: the package records sha256 {}, the archive is {actual}",
                a.checksum.sum
            ));
        }
    }
    if !is_zip(&bytes) {
        return Err(
            "the source archive is not a zip file; give --src a directory, files or a .zip"
                .to_owned(),
        );
    }
    Ok(bytes)
}

/// The directories of one build.
struct Dirs {
    /// The build's own host directory.
    work: PathBuf,
    /// `$SRC_PKG` on the host: the unpacked source.
    src: PathBuf,
    /// `$DEPLOY_PKG` on the host: where a custom command puts the deployment.
    deploy: PathBuf,
    /// The same as the steps see them (the runner decides).
    seen: StepPaths,
    /// Limits of the build's steps.
    resources: BuildResources,
}

/// Limits of a build from its environment: the builder container's resources, else the
/// environment's (Fission's builder pod gets `spec.resources` merged with
/// `spec.builder.container`); limits before requests.
pub(crate) fn build_resources(env: &Environment) -> BuildResources {
    use fission_core::resources::ResourceRequirements as R;
    let builder: Option<R> = env
        .spec
        .builder
        .as_ref()
        .and_then(|b| b.container.as_ref())
        .and_then(|c| c.get("resources"))
        .and_then(|r| serde_json::from_value(r.clone()).ok());
    let general = &env.spec.resources;
    let maps = builder
        .iter()
        .flat_map(|b| [&b.limits, &b.requests])
        .chain([&general.limits, &general.requests]);
    let mut out = BuildResources::default();
    for m in maps {
        out.memory_bytes = out.memory_bytes.or_else(|| R::memory_bytes(m));
        out.cpu_millis = out.cpu_millis.or_else(|| {
            R::cpu_millis(m)
                .and_then(|c| u64::try_from(c).ok())
                .filter(|c| *c > 0)
        });
    }
    out
}

fn describe_resources(r: BuildResources) -> String {
    let mut parts = Vec::new();
    if let Some(m) = r.memory_bytes {
        parts.push(format!("memory {} MiB", m >> 20));
    }
    if let Some(c) = r.cpu_millis {
        parts.push(format!("{c} millicores"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; the environment sets {}", parts.join(", "))
    }
}

/// The environment every step runs with.
fn step_env(ctx: &Ctx<'_>, dirs: &Dirs, tool_dirs: &[&Path]) -> Vec<(OsString, OsString)> {
    let seen = &dirs.seen;
    let (src, deploy) = (&seen.src, &seen.deploy);
    let mut path: Vec<PathBuf> = Vec::new();
    for d in tool_dirs
        .iter()
        .map(|d| d.to_path_buf())
        .chain(["/usr/local/bin", "/usr/bin", "/bin"].map(PathBuf::from))
    {
        if !path.contains(&d) {
            path.push(d);
        }
    }
    let path = std::env::join_paths(path).unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let cache = &seen.cache;
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), path),
        ("HOME".into(), seen.home.clone().into()),
        ("TMPDIR".into(), seen.tmp.clone().into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("SRC_PKG".into(), src.into()),
        ("DEPLOY_PKG".into(), deploy.into()),
        ("npm_config_cache".into(), cache.join("npm").into()),
        ("npm_config_update_notifier".into(), "false".into()),
        ("npm_config_fund".into(), "false".into()),
        ("npm_config_audit".into(), "false".into()),
        ("PIP_CACHE_DIR".into(), cache.join("pip").into()),
        ("PIP_DISABLE_PIP_VERSION_CHECK".into(), "1".into()),
        ("PIP_NO_INPUT".into(), "1".into()),
        ("PIP_ROOT_USER_ACTION".into(), "ignore".into()),
    ];
    for name in &ctx.config.pass_env {
        if let Some(v) = std::env::var_os(name)
            && !env.iter().any(|(k, _)| k == name)
        {
            env.push((name.clone(), v));
        }
    }
    env
}

/// `program args…` as the log shows it, with the work paths abbreviated.
fn display(program: &Path, args: &[OsString], src: &Path, deploy: &Path) -> String {
    let s = std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    s.replace(&*deploy.to_string_lossy(), "$DEPLOY_PKG")
        .replace(&*src.to_string_lossy(), "$SRC_PKG")
}

/// Run `program args…` in the source directory.
async fn step(
    ctx: &Ctx<'_>,
    program: &Path,
    args: Vec<OsString>,
    (env, tool_dirs): (Vec<(OsString, OsString)>, &[&Path]),
    dirs: &Dirs,
    limits: &StepLimits,
) -> Result<(), Stop> {
    let shown = display(program, &args, &dirs.seen.src, &dirs.seen.deploy);
    ctx.log.note(format!("$ {shown}"));
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| shown.clone());
    let s = BuildStep {
        program: program.as_os_str().to_owned(),
        args,
        cwd: dirs.seen.src.clone(),
        env,
        tool_dirs: tool_dirs.iter().map(|d| d.to_path_buf()).collect(),
        work_dir: dirs.work.clone(),
        resources: dirs.resources,
    };
    run_step(
        ctx.config.runner.as_ref(),
        &s,
        &name,
        ctx.log,
        limits,
        ctx.cancel,
    )
    .await
    .map_err(Stop::from)
}

async fn python(ctx: &Ctx<'_>, dirs: &Dirs, limits: &StepLimits) -> Result<(), Stop> {
    let src = &dirs.src;
    if !src.join("requirements.txt").is_file() {
        ctx.log
            .note("No requirements.txt in the source: nothing to install");
        return Ok(());
    }
    let py = ctx.tools.pip_python().await.map_err(Stop::Failed)?;
    if let Some(w) = ctx.tools.python_version_warning(&py).await {
        ctx.log.note(w);
    }
    let tool_dirs: Vec<&Path> = py.exe.parent().into_iter().collect();
    let env = step_env(ctx, dirs, &tool_dirs);
    let args: Vec<OsString> = ["-m", "pip", "install", "-r", "requirements.txt", "-t"]
        .iter()
        .map(OsString::from)
        .chain([dirs.seen.src.clone().into()])
        .collect();
    step(ctx, &py.exe, args, (env, &tool_dirs), dirs, limits).await
}

async fn node(ctx: &Ctx<'_>, dirs: &Dirs, limits: &StepLimits) -> Result<(), Stop> {
    let src = &dirs.src;
    if !src.join("package.json").is_file() {
        ctx.log
            .note("No package.json in the source: nothing to install");
        return Ok(());
    }
    let node = ctx.tools.node();
    if !node.is_file() {
        return Err(Stop::Failed(format!(
            "node not found at {} (it runs npm)",
            node.display()
        )));
    }
    let npm = ctx.tools.npm().map_err(Stop::Failed)?;
    let locked =
        src.join("package-lock.json").is_file() || src.join("npm-shrinkwrap.json").is_file();
    let sub = if locked { "ci" } else { "install" };
    let tool_dirs: Vec<&Path> = node.parent().into_iter().chain(npm.parent()).collect();
    let env = step_env(ctx, dirs, &tool_dirs);
    let args: Vec<OsString> = [sub, "--no-audit", "--no-fund"]
        .iter()
        .map(OsString::from)
        .collect();
    step(ctx, &npm, args, (env, &tool_dirs), dirs, limits).await
}

async fn command(
    ctx: &Ctx<'_>,
    argv: &[String],
    dirs: &Dirs,
    limits: &StepLimits,
) -> Result<(), Stop> {
    let Some((first, rest)) = argv.split_first() else {
        return Err(Stop::Failed("the build command is empty".to_owned()));
    };
    let mut args: Vec<OsString> = rest.iter().map(OsString::from).collect();
    let program = match script_in_source(&dirs.src, first) {
        Some(script) => {
            let shebang = std::fs::read(&script)
                .map(|b| b.starts_with(b"#!"))
                .unwrap_or(false);
            if shebang {
                use std::os::unix::fs::PermissionsExt as _;
                let _ = std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755));
                seen_path(dirs, &script)
            } else {
                args.insert(0, seen_path(dirs, &script).into());
                PathBuf::from("/bin/sh")
            }
        }
        None => PathBuf::from(first),
    };
    let node = ctx.tools.node();
    let npm = ctx.tools.npm().ok();
    let tool_dirs: Vec<&Path> = node
        .parent()
        .into_iter()
        .chain(npm.as_deref().and_then(Path::parent))
        .collect();
    let env = step_env(ctx, dirs, &tool_dirs);
    step(ctx, &program, args, (env, &tool_dirs), dirs, limits).await?;
    if dirs.deploy.symlink_metadata().is_err() {
        return Err(Stop::Failed(
            "the build command succeeded but did not create $DEPLOY_PKG: a build command must put the deployment there \
             (for example 'cp -r $SRC_PKG $DEPLOY_PKG')"
                .to_owned(),
        ));
    }
    Ok(())
}

/// A host path inside the source directory as the steps see it.
fn seen_path(dirs: &Dirs, host: &Path) -> PathBuf {
    host.strip_prefix(&dirs.src)
        .map_or_else(|_| host.to_owned(), |rel| dirs.seen.src.join(rel))
}

/// The file `word` names inside `src`, if it is one (`build.sh`, `./scripts/build.sh`).
fn script_in_source(src: &Path, word: &str) -> Option<PathBuf> {
    if word.starts_with('/') {
        return None;
    }
    let rel = safe_relative_path(word).ok()?;
    if rel.as_os_str().is_empty() {
        return None;
    }
    let p = src.join(rel);
    p.symlink_metadata().ok().filter(|m| m.is_file()).map(|_| p)
}

/// Zip (a directory) or take (a single file) what the build deployed and store it.
async fn store_deployment(ctx: &Ctx<'_>, from: &Path) -> Result<Archive, Stop> {
    let meta = from.symlink_metadata().map_err(|e| {
        Stop::Failed(format!(
            "cannot read the deployment {}: {e}",
            from.display()
        ))
    })?;
    let limits = ctx.config.unpack_limits;
    let max = ctx.config.max_deploy_bytes;
    let (bytes, what) = if meta.is_dir() {
        let dir = from.to_owned();
        let z = tokio::task::spawn_blocking(move || zip_dir(&dir, limits, max))
            .await
            .map_err(|e| Stop::Failed(format!("zipping the deployment failed: {e}")))?
            .map_err(|e| Stop::Failed(e.to_string()))?;
        for s in &z.skipped_links {
            ctx.log.note(format!("Not deployed: symbolic link {s}"));
        }
        let what = format!("{} files", z.files);
        (z.bytes, what)
    } else if meta.is_file() {
        let bytes = std::fs::read(from)
            .map_err(|e| Stop::Failed(format!("cannot read the deployment: {e}")))?;
        if bytes.len() as u64 > max {
            return Err(Stop::Failed(format!(
                "the deployment is too large: larger than {max} bytes"
            )));
        }
        (bytes, "a single file".to_owned())
    } else {
        return Err(Stop::Failed(
            "$DEPLOY_PKG is neither a directory nor a file".to_owned(),
        ));
    };
    let size = bytes.len();
    let id = ctx
        .archives
        .put(bytes)
        .await
        .map_err(|e| Stop::Failed(format!("cannot store the deployment archive: {e}")))?;
    ctx.log.note(format!(
        "Deployment archive: {what}, {size} bytes, sha256 {id}"
    ));
    Ok(Archive {
        archive_type: ARCHIVE_URL.to_owned(),
        literal: Vec::new(),
        url: format!("{STORAGE_URL_PREFIX}{id}"),
        checksum: Checksum {
            checksum_type: "sha256".to_owned(),
            sum: id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fission_store::archive::ArchiveStore;

    #[test]
    fn builds_are_limited_by_the_builder_container_then_the_environment_resources() {
        use fission_core::resources::{Builder, EnvironmentSpec};
        let env = |builder: Option<serde_json::Value>, limits: &[(&str, &str)]| {
            let mut spec = EnvironmentSpec {
                builder: Some(Builder {
                    image: "fission/python-builder".to_owned(),
                    container: builder,
                    ..Builder::default()
                }),
                ..EnvironmentSpec::default()
            };
            for (k, v) in limits {
                spec.resources
                    .limits
                    .insert((*k).to_owned(), (*v).to_owned());
            }
            Environment::new("default", "e", spec)
        };
        // Nothing set: the runner's defaults apply.
        assert_eq!(build_resources(&env(None, &[])), BuildResources::default());
        // The environment's resources (--maxmemory/--maxcpu), as Fission's builder pod.
        assert_eq!(
            build_resources(&env(None, &[("memory", "128Mi"), ("cpu", "500m")])),
            BuildResources {
                memory_bytes: Some(128 << 20),
                cpu_millis: Some(500),
            }
        );
        // The builder container's own resources win, key by key.
        let container =
            serde_json::json!({"name": "builder", "resources": {"limits": {"memory": "2Gi"}}});
        assert_eq!(
            build_resources(&env(Some(container), &[("memory", "128Mi"), ("cpu", "2")])),
            BuildResources {
                memory_bytes: Some(2 << 30),
                cpu_millis: Some(2000),
            }
        );
    }

    #[test]
    fn scripts_are_found_only_inside_the_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("scripts")).expect("mkdir");
        std::fs::write(dir.path().join("scripts/build.sh"), "echo").expect("write");
        std::fs::write(dir.path().join("build.sh"), "echo").expect("write");
        assert_eq!(
            script_in_source(dir.path(), "./scripts/build.sh"),
            Some(dir.path().join("scripts/build.sh"))
        );
        assert_eq!(
            script_in_source(dir.path(), "build.sh"),
            Some(dir.path().join("build.sh"))
        );
        assert_eq!(script_in_source(dir.path(), "scripts"), None, "a directory");
        assert_eq!(script_in_source(dir.path(), "../etc/passwd"), None);
        assert_eq!(script_in_source(dir.path(), "/bin/sh"), None);
        assert_eq!(script_in_source(dir.path(), "make"), None);
    }

    #[test]
    fn commands_are_shown_with_the_work_paths_abbreviated() {
        let s = display(
            Path::new("/usr/bin/python3"),
            &["-t".into(), "/w/p-1/src".into(), "/w/p-1/deploy/x".into()],
            Path::new("/w/p-1/src"),
            Path::new("/w/p-1/deploy"),
        );
        assert_eq!(s, "/usr/bin/python3 -t $SRC_PKG $DEPLOY_PKG/x");
    }

    #[tokio::test]
    async fn https_source_archives_are_fetched_and_a_checksum_mismatch_fails_the_build() {
        use fission_fetch::test_https::{HttpsServer, Reply};
        let server = HttpsServer::start();
        let good = fission_test_support::zip_of(&[("main.py", b"def main(): return 'src'\n")]);
        server.set("/src.zip", Reply::ok(good.clone()));
        let dir = tempfile::tempdir().expect("tempdir");
        let archives = ArchiveStore::open(dir.path().join("a")).expect("archives");
        let remote = fission_fetch::Fetcher::new(
            &fission_fetch::FetchConfig {
                extra_ca_cert: Some(server.ca_cert_file().to_owned()),
                ..Default::default()
            },
            None,
        )
        .map_err(|e| e.to_string());
        let pkg = |sum: &str| {
            let mut source = Archive {
                archive_type: ARCHIVE_URL.to_owned(),
                url: server.url("/src.zip"),
                ..Default::default()
            };
            source.checksum.checksum_type = "sha256".to_owned();
            source.checksum.sum = sum.to_owned();
            Package::new(
                "default",
                "p",
                fission_core::resources::PackageSpec {
                    source,
                    ..Default::default()
                },
            )
        };
        let sum = fission_fetch::sha256_hex(&good);
        let bytes = source_bytes(&pkg(&sum), &archives, &remote)
            .await
            .expect("fetched");
        assert_eq!(bytes, good);

        let wrong = "0".repeat(64);
        let err = source_bytes(&pkg(&wrong), &archives, &remote)
            .await
            .expect_err("mismatch");
        assert_eq!(
            err,
            format!(
                "cannot fetch the source archive: checksum mismatch for {}: expected sha256 {wrong}, got {sum}",
                server.url("/src.zip")
            )
        );
    }
}
