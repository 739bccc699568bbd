//! `fission package|pkg …` (§3.5), plus the package plumbing `fn create/update` share.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use fission_core::resources::{
    ARCHIVE_LITERAL, Archive, CODE_FILENAME_ANNOTATION, Environment, EnvironmentSpec, Function,
    FunctionSpec, Package, PackageSpec, PackageStatus, build_status,
};
use fission_core::{ObjectMeta, ObjectReference};

use super::{Ctx, ListArgs, SpecArgs, delete_one, get_one, print_dry, say, to_yaml};
use crate::NsKind;
use crate::api::Wrap;
use crate::archive::{self, ArchiveSource};
use crate::output::{OutputFormat, Table, print_stdout, print_structured};
use crate::util::{check_name, package_name_from_file, random_suffix, validate};

/// `fission pkg` subcommands.
#[derive(Debug, Subcommand)]
pub enum PkgCommand {
    /// Create a package from source or deployment archives
    Create(PkgCreateArgs),
    /// Update a package's archives, environment or build command
    Update(PkgUpdateArgs),
    /// Show a package's status and build logs
    Info(PkgNameArgs),
    /// List packages
    List(PkgListArgs),
    /// Delete a package
    Delete(PkgDeleteArgs),
    /// Download the deployment archive
    Getdeploy(PkgGetArgs),
    /// Download the source archive
    Getsrc(PkgGetArgs),
    /// Retry a failed build
    Rebuild(PkgRebuildArgs),
}

/// Archive flags shared by `pkg create/update` and `fn create/update`.
#[derive(Debug, Clone, Default, Args)]
pub struct CodeArgs {
    /// Local path or URL of a single file of code (stored as is, not zipped)
    #[arg(long)]
    pub code: Option<String>,
    /// Deployment archive: zip file, files, directories or globs (repeatable)
    #[arg(long = "deploy", visible_alias = "deployarchive")]
    pub deploy: Vec<String>,
    /// Source archive to be built: zip file, files, directories or globs (repeatable)
    #[arg(long = "src", visible_aliases = ["source", "sourcearchive"])]
    pub src: Vec<String>,
    /// SHA256 checksum of a source archive given by URL
    #[arg(long)]
    pub srcchecksum: Option<String>,
    /// SHA256 checksum of a deployment archive given by URL
    #[arg(long)]
    pub deploychecksum: Option<String>,
    /// Do not verify/compute the checksum of archives given by URL
    #[arg(long)]
    pub insecure: bool,
    /// Build command for the builder (overrides the environment's)
    #[arg(long)]
    pub buildcmd: Option<String>,
    /// Return as soon as a source package is written instead of waiting for its build
    #[arg(long)]
    pub nowait: bool,
}

/// Archives read from disk, ready to become package archives.
#[derive(Debug, Default)]
pub(crate) struct PreparedCode {
    deploy: Option<ArchiveSource>,
    src: Option<ArchiveSource>,
}

impl PreparedCode {
    pub(crate) fn has_source(&self) -> bool {
        self.src.is_some()
    }
}

impl CodeArgs {
    /// Whether any archive flag was given.
    pub(crate) fn any(&self) -> bool {
        self.code.is_some() || !self.deploy.is_empty() || !self.src.is_empty()
    }

    /// The first path given (for the default package name).
    pub(crate) fn first_arg(&self) -> Option<&str> {
        self.code
            .as_deref()
            .or(self.deploy.first().map(String::as_str))
            .or(self.src.first().map(String::as_str))
    }

    /// The name of the one file `--code` gives (the last path segment of a URL).
    pub(crate) fn code_file_name(&self) -> Option<String> {
        let code = self.code.as_deref()?;
        let path = code.split(['?', '#']).next().unwrap_or(code);
        let name = path.rsplit('/').next()?;
        (!name.is_empty() && name != "." && name != "..").then(|| name.to_owned())
    }

    /// Record on `pkg` the name of its single code file, so its instances keep the user's name
    /// (stack traces then show `hello.js`, not `deployarchive`); forget it when the deployment
    /// is replaced by an archive. Leaves `pkg` alone when no deployment is given.
    pub(crate) fn name_code_file(&self, pkg: &mut Package) {
        if self.code.is_none() && self.deploy.is_empty() {
            return;
        }
        let annotations = pkg.metadata.annotations.get_or_insert_default();
        match self.code_file_name() {
            Some(name) => annotations.insert(CODE_FILENAME_ANNOTATION.to_owned(), name),
            None => annotations.remove(CODE_FILENAME_ANNOTATION),
        };
        if annotations.is_empty() {
            pkg.metadata.annotations = None;
        }
    }

    /// Read the files (all local failures happen here, before anything is written).
    pub(crate) fn prepare(&self) -> anyhow::Result<PreparedCode> {
        if self.code.is_some() && !self.deploy.is_empty() {
            bail!(
                "--code and --deploy cannot be used together: --code takes one file, --deploy zips files"
            );
        }
        let deploy = match (&self.code, self.deploy.is_empty()) {
            (Some(c), _) => Some(archive::from_code(c)?),
            (None, false) => Some(archive::from_files(&self.deploy)?),
            (None, true) => None,
        };
        let src = if self.src.is_empty() {
            None
        } else {
            Some(archive::from_files(&self.src)?)
        };
        Ok(PreparedCode { deploy, src })
    }

    /// Turn prepared code into `(deployment, source)` archives; uploads large ones unless `dry`.
    pub(crate) async fn archives(
        &self,
        ctx: &Ctx,
        p: PreparedCode,
        dry: bool,
    ) -> anyhow::Result<(Option<Archive>, Option<Archive>)> {
        let one = |src: Option<ArchiveSource>, sum: Option<String>| async move {
            match src {
                None => Ok::<_, anyhow::Error>(None),
                Some(s) if dry => Ok(Some(archive::dry_archive(s, sum.as_deref())?)),
                Some(s) => Ok(Some(
                    archive::into_archive(&ctx.api, s, sum.as_deref(), self.insecure).await?,
                )),
            }
        };
        let deploy = one(p.deploy, self.deploychecksum.clone()).await?;
        let src = one(p.src, self.srcchecksum.clone()).await?;
        Ok((deploy, src))
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The status a CLI-written package gets: `pending` when there is source to build, else
/// `succeeded`.
pub(crate) fn initial_status(has_source: bool) -> PackageStatus {
    PackageStatus {
        buildstatus: if has_source {
            build_status::PENDING
        } else {
            build_status::SUCCEEDED
        }
        .to_owned(),
        buildlog: String::new(),
        last_update_timestamp: Some(now_rfc3339()),
    }
}

/// A new Package object as the CLI writes it (§2.9a).
pub(crate) fn new_package(
    ns: &str,
    name: &str,
    env: &ObjectReference,
    deploy: Option<Archive>,
    src: Option<Archive>,
    buildcmd: Option<&str>,
) -> Package {
    let has_source = src.is_some();
    let spec = PackageSpec {
        environment: env.clone(),
        source: src.unwrap_or_default(),
        deployment: deploy.unwrap_or_default(),
        buildcmd: buildcmd.unwrap_or_default().to_owned(),
    };
    let mut p = Package::new(ns, name, spec);
    p.status = initial_status(has_source);
    p
}

/// Check an environment exists (Fission's wording), warning when source code will not build:
/// `needs_builder` is true for source packages without their own `--buildcmd`.
pub(crate) async fn check_environment(
    ctx: &Ctx,
    ns: &str,
    env: &str,
    needs_builder: bool,
) -> anyhow::Result<Environment> {
    check_name::<EnvironmentSpec>(ns, env)?;
    let e: Environment = ctx
        .api
        .get(ns, env)
        .await
        .wrap("error retrieving environment information")?;
    // A builder image, or a build command of its own (`build` means "the builder image's").
    let has_builder = e
        .spec
        .builder
        .as_ref()
        .is_some_and(|b| !b.image.is_empty() || !matches!(b.command.as_str(), "" | "build"));
    // Refused before anything is written: the build could only fail, leaving objects behind.
    if needs_builder && !has_builder {
        bail!(
            "environment '{env}' has no builder image, so a source package cannot be built: use an environment \
             created with --builder, give a build command with --buildcmd, or pass the files with --deploy"
        );
    }
    Ok(e)
}

/// How often `wait_for_build` looks at the package.
const BUILD_POLL: Duration = Duration::from_millis(250);
/// How long the CLI waits for a build (the server gives one build 10 minutes; builds may queue).
const BUILD_WAIT_LIMIT: Duration = Duration::from_secs(30 * 60);
/// Build log lines shown when a build fails.
const FAILED_LOG_TAIL: usize = 20;

/// `pkg info` for a package, with `--namespace` when it is not the default one.
fn info_command(ns: &str, name: &str) -> String {
    if ns == fission_core::DEFAULT_NAMESPACE {
        format!("fission pkg info --name {name}")
    } else {
        format!("fission pkg info --name {name} --namespace {ns}")
    }
}

/// The last `n` lines of a build log (Fission's literal `\n` expanded).
pub(crate) fn log_tail(log: &str, n: usize) -> Vec<String> {
    let log = log.replace("\\n", "\n");
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// Wait until package `name` has built, with progress on stderr. A failed build prints the end
/// of its log to stderr and is an error.
pub(crate) async fn wait_for_build(ctx: &Ctx, ns: &str, name: &str) -> anyhow::Result<Package> {
    let started = Instant::now();
    let progress = |msg: String| {
        if ctx.global.verbosity >= 1 {
            eprintln!("{msg}");
        }
    };
    progress(format!("Waiting for package '{name}' to build..."));
    let mut hinted = false;
    loop {
        let pkg: Package = ctx.api.get(ns, name).await.wrap("error getting package")?;
        let status = pkg.status.buildstatus.as_str();
        match status {
            build_status::SUCCEEDED | build_status::NONE => {
                progress(format!(
                    "Package '{name}' built in {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                return Ok(pkg);
            }
            build_status::FAILED => {
                let tail = log_tail(&pkg.status.buildlog, FAILED_LOG_TAIL);
                if !tail.is_empty() {
                    eprintln!("Build log of package '{name}' (last {} lines):", tail.len());
                    for l in tail {
                        eprintln!("  {l}");
                    }
                }
                bail!(
                    "package '{name}' build failed; see '{}' for the build log",
                    info_command(ns, name)
                );
            }
            _ => {}
        }
        let waited = started.elapsed();
        if waited > BUILD_WAIT_LIMIT {
            bail!(
                "gave up waiting for package '{name}' to build after {} minutes (status: {status}); see '{}'",
                BUILD_WAIT_LIMIT.as_secs() / 60,
                info_command(ns, name)
            );
        }
        if !hinted && status == build_status::PENDING && waited > Duration::from_secs(30) {
            hinted = true;
            progress(format!(
                "Package '{name}' is still pending: its build has not started (other builds may be running). \
                 Ctrl-C stops waiting; the build is not affected."
            ));
        }
        tokio::time::sleep(BUILD_POLL).await;
    }
}

/// Functions in `ns` whose package reference names `pkg`.
pub(crate) async fn functions_using(
    ctx: &Ctx,
    ns: &str,
    pkg: &str,
) -> anyhow::Result<Vec<Function>> {
    let fns: Vec<Function> = ctx
        .api
        .list(Some(ns))
        .await
        .wrap("error listing functions")?;
    Ok(fns
        .into_iter()
        .filter(|f| references_package(&f.spec, ns, pkg, &f.metadata.namespace))
        .collect())
}

fn references_package(f: &FunctionSpec, pkg_ns: &str, pkg: &str, fn_ns: &str) -> bool {
    let r = &f.package.packageref;
    let ns = if r.namespace.is_empty() {
        fn_ns
    } else {
        &r.namespace
    };
    r.name == pkg && ns == pkg_ns
}

/// What `update_package` wrote.
#[derive(Debug)]
pub(crate) struct PackageUpdate {
    /// The package's new metadata.
    pub(crate) meta: ObjectMeta,
    /// Whether the update started a build (the package is `pending`).
    pub(crate) rebuild: bool,
}

/// Apply new archives (and optionally environment/build command) to an existing package and
/// write it. Without a rebuild, every function that uses it except `skip_fn` (whose caller
/// re-pins it) is re-pinned to the new version now; with one, the server's builder re-pins them
/// when the build succeeds, and until then they keep their current code.
pub(crate) async fn update_package(
    ctx: &Ctx,
    mut pkg: Package,
    deploy: Option<Archive>,
    src: Option<Archive>,
    buildcmd: Option<&str>,
    env: Option<ObjectReference>,
    skip_fn: Option<&str>,
) -> anyhow::Result<PackageUpdate> {
    let mut rebuild = false;
    if let Some(d) = deploy {
        pkg.spec.deployment = d;
    }
    if let Some(s) = src {
        pkg.spec.source = s;
        rebuild = true;
    }
    if let Some(b) = buildcmd {
        pkg.spec.buildcmd = b.to_owned();
        rebuild |= !pkg.spec.source.is_empty();
    }
    if let Some(e) = env {
        rebuild |= e != pkg.spec.environment && !pkg.spec.source.is_empty();
        pkg.spec.environment = e;
    }
    pkg.status = initial_status(rebuild);
    validate(&pkg)?;
    let ns = pkg.metadata.namespace.clone();
    let name = pkg.metadata.name.clone();
    let meta = ctx.api.update(&pkg).await.wrap("error updating package")?;
    if rebuild {
        return Ok(PackageUpdate { meta, rebuild });
    }
    for mut f in functions_using(ctx, &ns, &name).await? {
        if Some(f.metadata.name.as_str()) == skip_fn {
            continue;
        }
        f.spec.package.packageref.resourceversion = meta.resource_version.clone();
        ctx.api.update(&f).await.wrap(&format!(
            "error updating function '{}' to the new package version",
            f.metadata.name
        ))?;
    }
    Ok(PackageUpdate { meta, rebuild })
}

/// `pkg create` flags.
#[derive(Debug, Args)]
pub struct PkgCreateArgs {
    /// Package name (default: derived from the first file name)
    #[arg(long)]
    pub name: Option<String>,
    /// Environment name
    #[arg(long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub code: CodeArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// `pkg update` flags.
#[derive(Debug, Args)]
pub struct PkgUpdateArgs {
    /// Package name
    #[arg(long)]
    pub name: String,
    /// Environment name
    #[arg(long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub code: CodeArgs,
    /// Update even if several functions use the package
    #[arg(long, short = 'f')]
    pub force: bool,
}

/// `--name` only.
#[derive(Debug, Args)]
pub struct PkgNameArgs {
    /// Package name
    #[arg(long)]
    pub name: String,
    /// Print the full object as json or yaml
    #[arg(long = "output", short = 'o', value_enum)]
    pub output: Option<OutputFormat>,
}

/// `pkg list` flags.
#[derive(Debug, Args)]
pub struct PkgListArgs {
    #[command(flatten)]
    pub list: ListArgs,
    /// Only packages with this build status (pending, running, succeeded, failed, none)
    #[arg(long)]
    pub status: Option<String>,
    /// Only packages no function uses
    #[arg(long)]
    pub orphan: bool,
}

/// `pkg rebuild` flags.
#[derive(Debug, Args)]
pub struct PkgRebuildArgs {
    /// Package name
    #[arg(long)]
    pub name: String,
    /// Return at once instead of waiting for the build
    #[arg(long)]
    pub nowait: bool,
}

/// `pkg delete` flags.
#[derive(Debug, Args)]
pub struct PkgDeleteArgs {
    /// Package name
    #[arg(long)]
    pub name: Option<String>,
    /// Delete every package no function uses
    #[arg(long)]
    pub orphan: bool,
    /// Delete even if functions use the package
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Do not fail when the package does not exist
    #[arg(long)]
    pub ignorenotfound: bool,
}

/// `pkg getdeploy|getsrc` flags.
#[derive(Debug, Args)]
pub struct PkgGetArgs {
    /// Package name
    #[arg(long)]
    pub name: String,
    /// Write the archive to this file instead of stdout
    #[arg(long = "output", short = 'o')]
    pub output: Option<String>,
}

pub(crate) async fn run(ctx: &Ctx, cmd: PkgCommand) -> anyhow::Result<()> {
    match cmd {
        PkgCommand::Create(a) => create(ctx, a).await,
        PkgCommand::Update(a) => update(ctx, a).await,
        PkgCommand::Info(a) => info(ctx, a).await,
        PkgCommand::List(a) => list(ctx, a).await,
        PkgCommand::Delete(a) => delete(ctx, a).await,
        PkgCommand::Getdeploy(a) => get_archive(ctx, a, false).await,
        PkgCommand::Getsrc(a) => get_archive(ctx, a, true).await,
        PkgCommand::Rebuild(a) => rebuild(ctx, a).await,
    }
}

async fn create(ctx: &Ctx, a: PkgCreateArgs) -> anyhow::Result<()> {
    if a.spec.saves() {
        return super::spec::save::package(ctx, &a);
    }
    let dry = a.spec.dry_run()?;
    let ns = ctx.ns(NsKind::Package);
    let Some(env) = a.env.clone().filter(|e| !e.is_empty()) else {
        bail!("need --env argument")
    };
    if !a.code.any() {
        bail!("need --code or --deploy or --src argument");
    }
    let name = match &a.name {
        Some(n) => n.clone(),
        None => package_name_from_file(a.code.first_arg().unwrap_or_default(), &random_suffix(4)),
    };
    check_name::<PackageSpec>(&ns, &name)?;
    let env_ns = ctx.global.env_ref_namespace(&ns);
    check_name::<EnvironmentSpec>(&env_ns, &env)?;
    let prepared = a.code.prepare().context("error creating package")?;
    let has_source = prepared.has_source();
    if !dry {
        check_environment(ctx, &env_ns, &env, has_source && a.code.buildcmd.is_none()).await?;
        if ctx
            .api
            .get_opt::<PackageSpec>(&ns, &name)
            .await
            .wrap("error creating package")?
            .is_some()
        {
            bail!("error creating package: package '{name}' already exists");
        }
    }
    let (deploy, src) = a
        .code
        .archives(ctx, prepared, dry)
        .await
        .wrap("error creating package")?;
    let env_ref = ObjectReference {
        namespace: env_ns,
        name: env,
    };
    let mut pkg = new_package(
        &ns,
        &name,
        &env_ref,
        deploy,
        src,
        a.code.buildcmd.as_deref(),
    );
    a.code.name_code_file(&mut pkg);
    validate(&pkg)?;
    if dry {
        return print_dry(&[to_yaml(&pkg)?]);
    }
    ctx.api.create(&pkg).await.wrap("error creating package")?;
    say(format!("Package '{name}' created"));
    if has_source && !a.code.nowait {
        wait_for_build(ctx, &ns, &name).await?;
    }
    Ok(())
}

async fn update(ctx: &Ctx, a: PkgUpdateArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Package);
    let pkg: Package = get_one(ctx, &ns, &a.name, "package").await?;
    if !a.code.any() && a.env.is_none() && a.code.buildcmd.is_none() {
        bail!("nothing to update: give --code, --deploy, --src, --env or --buildcmd");
    }
    let users = functions_using(ctx, &ns, &a.name).await?;
    if users.len() > 1 && !a.force {
        bail!("package is used by multiple functions, use --force to force update");
    }
    let prepared = a.code.prepare().context("error updating package")?;
    let env = match &a.env {
        Some(e) => {
            let needs_builder = (prepared.has_source() || !pkg.spec.source.is_empty())
                && a.code
                    .buildcmd
                    .as_deref()
                    .unwrap_or(&pkg.spec.buildcmd)
                    .is_empty();
            let env_ns = ctx.global.env_ref_namespace(&ns);
            check_environment(ctx, &env_ns, e, needs_builder).await?;
            Some(ObjectReference {
                namespace: env_ns,
                name: e.clone(),
            })
        }
        None => None,
    };
    let (deploy, src) = a
        .code
        .archives(ctx, prepared, false)
        .await
        .wrap("error updating package")?;
    let mut pkg = pkg;
    a.code.name_code_file(&mut pkg);
    let updated =
        update_package(ctx, pkg, deploy, src, a.code.buildcmd.as_deref(), env, None).await?;
    say(format!("Package '{}' updated", a.name));
    if updated.rebuild && !a.code.nowait {
        wait_for_build(ctx, &ns, &a.name).await?;
    }
    Ok(())
}

/// `Label:\tvalue` lines, tab-aligned as Fission prints them.
pub(crate) fn info_text(pkg: &Package) -> String {
    let mut t = Table::headless();
    t.row(vec!["Name:".into(), pkg.metadata.name.clone()]);
    t.row(vec![
        "Environment:".into(),
        pkg.spec.environment.name.clone(),
    ]);
    t.row(vec!["Status:".into(), pkg.status.buildstatus.clone()]);
    t.row(vec!["Build Logs:".into(), String::new()]);
    let mut out = t.render();
    let log = pkg.status.buildlog.replace("\\n", "\n");
    if !log.is_empty() {
        out.push_str(&log);
        if !log.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

async fn info(ctx: &Ctx, a: PkgNameArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Package);
    let pkg: Package = get_one(ctx, &ns, &a.name, "package").await?;
    if let Some(f) = a.output {
        return print_structured(f, &pkg);
    }
    print_stdout(info_text(&pkg).as_bytes());
    Ok(())
}

/// Go's `time.RFC822` layout (`02 Jan 06 15:04 MST`) of an RFC 3339 timestamp, in UTC.
pub(crate) fn rfc822(ts: Option<&str>) -> String {
    ts.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%d %b %y %H:%M UTC")
                .to_string()
        })
        .unwrap_or_default()
}

pub(crate) fn pkg_table(pkgs: &[Package]) -> Table {
    let mut t = Table::new(&["NAME", "BUILD_STATUS", "ENV", "LASTUPDATEDAT", "NAMESPACE"]);
    for p in pkgs {
        t.row(vec![
            p.metadata.name.clone(),
            p.status.buildstatus.clone(),
            p.spec.environment.name.clone(),
            rfc822(p.status.last_update_timestamp.as_deref()),
            p.metadata.namespace.clone(),
        ]);
    }
    t
}

/// Packages no function references (functions may live in any namespace of `fns`).
fn orphans(pkgs: Vec<Package>, fns: &[Function]) -> Vec<Package> {
    pkgs.into_iter()
        .filter(|p| {
            !fns.iter().any(|f| {
                references_package(
                    &f.spec,
                    &p.metadata.namespace,
                    &p.metadata.name,
                    &f.metadata.namespace,
                )
            })
        })
        .collect()
}

async fn list(ctx: &Ctx, a: PkgListArgs) -> anyhow::Result<()> {
    let scope = a.list.scope(ctx, NsKind::Package);
    let mut pkgs: Vec<Package> = ctx
        .api
        .list(scope.as_deref())
        .await
        .wrap("error listing packages")?;
    if let Some(st) = &a.status {
        pkgs.retain(|p| p.status.buildstatus.eq_ignore_ascii_case(st));
    }
    if a.orphan {
        let fns: Vec<Function> = ctx
            .api
            .list(scope.as_deref())
            .await
            .wrap("error listing functions")?;
        pkgs = orphans(pkgs, &fns);
    }
    if let Some(f) = a.list.output {
        return print_structured(f, &pkgs);
    }
    pkg_table(&pkgs).print();
    Ok(())
}

async fn delete(ctx: &Ctx, a: PkgDeleteArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Package);
    match (&a.name, a.orphan) {
        (Some(_), true) => bail!("use either --name or --orphan, not both"),
        (None, false) => bail!("need --name argument or --orphan"),
        (None, true) => {
            let pkgs: Vec<Package> = ctx
                .api
                .list(Some(&ns))
                .await
                .wrap("error listing packages")?;
            let fns: Vec<Function> = ctx
                .api
                .list(Some(&ns))
                .await
                .wrap("error listing functions")?;
            for p in orphans(pkgs, &fns) {
                if delete_one::<PackageSpec>(ctx, &ns, &p.metadata.name, true, false, "package")
                    .await?
                {
                    say(format!("Package '{}' deleted", p.metadata.name));
                }
            }
            Ok(())
        }
        (Some(name), false) => {
            check_name::<PackageSpec>(&ns, name)?;
            if !a.force && !functions_using(ctx, &ns, name).await?.is_empty() {
                bail!("Package is used by at least one function, use -f to force delete");
            }
            if delete_one::<PackageSpec>(ctx, &ns, name, a.ignorenotfound, a.force, "package")
                .await?
            {
                say(format!("Package '{name}' deleted"));
            }
            Ok(())
        }
    }
}

/// The bytes of an archive: the literal, or downloaded from its URL.
pub(crate) async fn archive_bytes(ctx: &Ctx, a: &Archive) -> anyhow::Result<Vec<u8>> {
    if a.archive_type == ARCHIVE_LITERAL || (!a.literal.is_empty() && a.url.is_empty()) {
        return Ok(a.literal.clone());
    }
    ctx.api
        .download_archive(&a.url)
        .await
        .wrap("error downloading archive")
}

async fn get_archive(ctx: &Ctx, a: PkgGetArgs, source: bool) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Package);
    let pkg: Package = get_one(ctx, &ns, &a.name, "package").await?;
    let (arch, what) = if source {
        (&pkg.spec.source, "source")
    } else {
        (&pkg.spec.deployment, "deployment")
    };
    if arch.is_empty() {
        bail!(
            "package '{}' has no {what} archive (build status: {})",
            a.name,
            pkg.status.buildstatus
        );
    }
    let bytes = archive_bytes(ctx, arch).await?;
    match &a.output {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| format!("error writing '{path}'"))?
        }
        None => print_stdout(&bytes),
    }
    Ok(())
}

async fn rebuild(ctx: &Ctx, a: PkgRebuildArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Package);
    let mut pkg: Package = get_one(ctx, &ns, &a.name, "package").await?;
    if pkg.status.buildstatus != build_status::FAILED {
        bail!(
            "package '{}' is not in failed state (status: {}); only failed builds can be retried",
            a.name,
            pkg.status.buildstatus
        );
    }
    pkg.status = PackageStatus {
        buildstatus: build_status::PENDING.to_owned(),
        buildlog: String::new(),
        last_update_timestamp: Some(now_rfc3339()),
    };
    ctx.api.update(&pkg).await.wrap("error updating package")?;
    say(format!(
        "Retrying build for pkg {}. Use \"fission pkg info --name {}\" to view status",
        a.name, a.name
    ));
    if !a.nowait {
        wait_for_build(ctx, &ns, &a.name).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_only_packages_are_succeeded_and_source_packages_pending() {
        let env = ObjectReference {
            namespace: "default".into(),
            name: "nodejs".into(),
        };
        let p = new_package(
            "default",
            "p",
            &env,
            Some(Archive::literal(b"x".to_vec())),
            None,
            None,
        );
        assert_eq!(p.status.buildstatus, "succeeded");
        assert!(p.status.last_update_timestamp.is_some());
        let p = new_package(
            "default",
            "p",
            &env,
            None,
            Some(Archive::literal(b"x".to_vec())),
            Some("build"),
        );
        assert_eq!(p.status.buildstatus, "pending");
        assert_eq!(p.spec.buildcmd, "build");
        validate(&p).expect("valid");
    }

    #[test]
    fn package_json_carries_literal_as_base64() {
        let env = ObjectReference {
            namespace: "default".into(),
            name: "nodejs".into(),
        };
        let p = new_package(
            "default",
            "p",
            &env,
            Some(Archive::literal(b"hi".to_vec())),
            None,
            None,
        );
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(v["spec"]["deployment"]["type"], "literal");
        assert_eq!(v["spec"]["deployment"]["literal"], "aGk=");
        assert_eq!(v["status"]["buildstatus"], "succeeded");
    }

    #[test]
    fn pkg_info_prints_aligned_labels_and_expands_log_newlines() {
        let env = ObjectReference {
            namespace: "default".into(),
            name: "py".into(),
        };
        let mut p = new_package("default", "p1", &env, None, None, None);
        p.status.buildstatus = "failed".into();
        p.status.buildlog = "line1\\nline2".into();
        let out = info_text(&p);
        assert_eq!(
            out,
            "Name:        p1\nEnvironment: py\nStatus:      failed\nBuild Logs:\nline1\nline2\n"
        );
    }

    #[test]
    fn last_update_is_shown_in_go_rfc822() {
        assert_eq!(rfc822(Some("2025-03-04T05:06:07Z")), "04 Mar 25 05:06 UTC");
        assert_eq!(rfc822(None), "");
    }

    #[test]
    fn orphan_packages_are_those_no_function_references() {
        let env = ObjectReference {
            namespace: "default".into(),
            name: "e".into(),
        };
        let used = new_package("default", "used", &env, None, None, None);
        let free = new_package("default", "free", &env, None, None, None);
        let mut f = Function::new("default", "f", FunctionSpec::default());
        f.spec.package.packageref.name = "used".into();
        let left = orphans(vec![used, free], &[f]);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].metadata.name, "free");
    }

    #[test]
    fn a_failed_build_shows_the_end_of_its_log() {
        let log = (1..=30)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let tail = log_tail(&log, 20);
        assert_eq!(tail.len(), 20);
        assert_eq!(tail[0], "line 11");
        assert_eq!(tail[19], "line 30");
        assert_eq!(
            log_tail("a\\nb", 20),
            vec!["a", "b"],
            "Fission's literal \\n is expanded"
        );
        assert!(log_tail("", 20).is_empty());
        assert_eq!(info_command("default", "p"), "fission pkg info --name p");
        assert_eq!(
            info_command("dev", "p"),
            "fission pkg info --name p --namespace dev"
        );
    }

    #[test]
    fn code_and_deploy_together_are_refused() {
        let c = CodeArgs {
            code: Some("a.js".into()),
            deploy: vec!["b.js".into()],
            ..Default::default()
        };
        assert!(
            c.prepare()
                .expect_err("must fail")
                .to_string()
                .contains("--code and --deploy")
        );
    }
}
