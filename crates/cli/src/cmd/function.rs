//! `fission function|fn …` (§3.3).

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use fission_core::resources::{
    EnvironmentSpec, ExecutionStrategy, Function, FunctionPackageRef, FunctionSpec, HTTP_METHODS,
    HttpTrigger, HttpTriggerSpec, InvokeStrategy, Package, PackageRef, PackageSpec, executor_type,
    function_defaults,
};
use fission_core::{DEFAULT_NAMESPACE, ObjectReference, ResourceKind};

use super::package::{self, CodeArgs};
use super::route::{self, IngressArgs, RouteCreateArgs};
use super::{Ctx, ListArgs, SpecArgs, delete_one, get_one, print_dry, say, to_yaml};
use crate::NsKind;
use crate::api::{ApiError, Wrap, transport_error};
use crate::output::{OutputFormat, Table, go_list, print_stdout, print_structured};
use crate::util::{
    ResourceArgs, apply_labels_annotations, check_name, package_name_for_function, parse_kv,
    parse_timeout, quantity_cell, random_name, validate,
};

/// `fission fn` subcommands.
#[derive(Debug, Subcommand)]
pub enum FnCommand {
    /// Create a function (and its package)
    Create(FnCreateArgs),
    /// Print the function's deployment code
    Get(FnGetArgs),
    /// Show the function's metadata
    Getmeta(FnNameArgs),
    /// List functions
    List(ListArgs),
    /// Update a function's code or settings
    Update(FnUpdateArgs),
    /// Delete a function
    Delete(FnDeleteArgs),
    /// Call the function through the router
    #[command(visible_alias = "invoke")]
    Test(FnTestArgs),
    /// Show a background call made with `fn test --async` (or the dead-letter list)
    Invocation(FnInvocationArgs),
    /// Show the function's logs
    #[command(visible_alias = "log")]
    Logs(FnLogsArgs),
}

/// Executor flags shared by create and update.
#[derive(Debug, Clone, Default, Args)]
pub struct ExecArgs {
    /// Executor type: poolmgr (default) or newdeploy
    #[arg(long)]
    pub executortype: Option<String>,
    /// Seconds a specialization may take (at least 120)
    #[arg(long = "specializationtimeout", visible_alias = "st")]
    pub specializationtimeout: Option<i32>,
    /// Maximum specialized instances (poolmgr; default 500)
    #[arg(long = "concurrency", visible_alias = "con")]
    pub concurrency: Option<i32>,
    /// Concurrent requests per instance (poolmgr; default 1)
    #[arg(long = "requestsperpod", visible_alias = "rpp")]
    pub requestsperpod: Option<i32>,
    /// Give every request a fresh instance (poolmgr)
    #[arg(long = "onceonly", visible_alias = "yolo", num_args = 0..=1, default_missing_value = "true")]
    pub onceonly: Option<bool>,
    #[command(flatten)]
    pub resources: ResourceArgs,
    /// Minimum instances (newdeploy; default 1)
    #[arg(long)]
    pub minscale: Option<i32>,
    /// Maximum instances (newdeploy; default minscale)
    #[arg(long)]
    pub maxscale: Option<i32>,
    /// Target CPU percent for autoscaling (newdeploy, 1-100; e.g. 80)
    #[arg(long)]
    pub targetcpu: Option<i32>,
}

/// `fn create` flags.
#[derive(Debug, Args)]
pub struct FnCreateArgs {
    /// Function name
    #[arg(long)]
    pub name: String,
    /// Environment name
    #[arg(long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub code: CodeArgs,
    /// Use an existing package instead of creating one
    #[arg(long = "pkgname", visible_alias = "pkg")]
    pub pkgname: Option<String>,
    /// Entry point passed to the environment (e.g. hello.main)
    #[arg(long = "entrypoint", visible_alias = "entry")]
    pub entrypoint: Option<String>,
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Seconds a call may take (must be > 0)
    #[arg(long = "fntimeout", visible_alias = "ft", default_value_t = function_defaults::FUNCTION_TIMEOUT)]
    pub fntimeout: i32,
    /// Seconds an idle instance is kept
    #[arg(long, default_value_t = function_defaults::IDLE_TIMEOUT)]
    pub idletimeout: i32,
    /// Specialized instances kept past the idle timeout (poolmgr)
    #[arg(long, default_value_t = 0)]
    pub retainpods: i32,
    /// Secret to mount (repeatable)
    #[arg(long)]
    pub secret: Vec<String>,
    /// Config map to mount (repeatable)
    #[arg(long)]
    pub configmap: Vec<String>,
    /// Comma-separated labels, e.g. "a=b,c=d"
    #[arg(long)]
    pub labels: Option<String>,
    /// Annotation k=v (repeatable)
    #[arg(long)]
    pub annotation: Vec<String>,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Deprecated: also create a route with this URL
    #[arg(long)]
    pub url: Option<String>,
    /// Deprecated: also create a route with this prefix
    #[arg(long)]
    pub prefix: Option<String>,
    /// Deprecated: method(s) of that route (default GET)
    #[arg(long)]
    pub method: Vec<String>,
}

/// `fn update` flags.
#[derive(Debug, Args)]
pub struct FnUpdateArgs {
    /// Function name
    #[arg(long)]
    pub name: String,
    /// Environment name
    #[arg(long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub code: CodeArgs,
    /// Switch to an existing package
    #[arg(long = "pkgname", visible_alias = "pkg")]
    pub pkgname: Option<String>,
    /// Entry point passed to the environment
    #[arg(long = "entrypoint", visible_alias = "entry")]
    pub entrypoint: Option<String>,
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Seconds a call may take (must be > 0)
    #[arg(long = "fntimeout", visible_alias = "ft")]
    pub fntimeout: Option<i32>,
    /// Seconds an idle instance is kept
    #[arg(long)]
    pub idletimeout: Option<i32>,
    /// Specialized instances kept past the idle timeout (poolmgr)
    #[arg(long)]
    pub retainpods: Option<i32>,
    /// Secret to mount (repeatable; replaces the list)
    #[arg(long)]
    pub secret: Vec<String>,
    /// Config map to mount (repeatable; replaces the list)
    #[arg(long)]
    pub configmap: Vec<String>,
    /// Comma-separated labels, e.g. "a=b,c=d"
    #[arg(long)]
    pub labels: Option<String>,
    /// Annotation k=v (repeatable)
    #[arg(long)]
    pub annotation: Vec<String>,
    /// Update the package even if other functions use it
    #[arg(long, short = 'f')]
    pub force: bool,
}

/// `fn get` flags.
#[derive(Debug, Args)]
pub struct FnGetArgs {
    /// Function name
    #[arg(long)]
    pub name: String,
    /// Print the function object as json or yaml instead of its code
    #[arg(long = "output", short = 'o', value_enum)]
    pub output: Option<OutputFormat>,
}

/// `fn getmeta` flags.
#[derive(Debug, Args)]
pub struct FnNameArgs {
    /// Function name
    #[arg(long)]
    pub name: String,
    /// Print the full object as json or yaml
    #[arg(long = "output", short = 'o', value_enum)]
    pub output: Option<OutputFormat>,
}

/// `fn delete` flags.
#[derive(Debug, Args)]
pub struct FnDeleteArgs {
    /// Function name
    #[arg(long)]
    pub name: String,
    /// Do not fail when the function does not exist
    #[arg(long)]
    pub ignorenotfound: bool,
}

/// `fn test` flags.
#[derive(Debug, Args)]
pub struct FnTestArgs {
    /// Function name
    #[arg(long)]
    pub name: String,
    /// HTTP method (default GET; only one)
    #[arg(long)]
    pub method: Vec<String>,
    /// Request header 'Key: value' (repeatable)
    #[arg(long, short = 'H')]
    pub header: Vec<String>,
    /// Request body
    #[arg(long, short = 'b')]
    pub body: Option<String>,
    /// Query parameter key=value (repeatable)
    #[arg(long, short = 'q')]
    pub query: Vec<String>,
    /// Request timeout (e.g. 30s, 2m; default: the function timeout plus 30s)
    #[arg(long, short = 't')]
    pub timeout: Option<String>,
    /// Sub-path appended to the function URL
    #[arg(long)]
    pub subpath: Option<String>,
    /// Log database (accepted for compatibility)
    #[arg(long, hide = true)]
    pub dbtype: Option<String>,
    /// Queue the call and return at once with its id; the server runs it in the background
    /// with retries (see `fn invocation --id`)
    #[arg(long = "async")]
    pub run_async: bool,
    /// With --async: URL the outcome is POSTed to
    #[arg(long, requires = "run_async")]
    pub callback: Option<String>,
}

/// `fn invocation` flags.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "dead"])))]
pub struct FnInvocationArgs {
    /// The id `fn test --async` printed
    #[arg(long)]
    pub id: Option<String>,
    /// List the calls that failed every attempt (the dead-letter list)
    #[arg(long)]
    pub dead: bool,
}

/// `fn logs` flags.
#[derive(Debug, Args)]
pub struct FnLogsArgs {
    /// Function name
    #[arg(long)]
    pub name: String,
    /// Keep streaming new log records
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Show timestamp, instance and stream of every record
    #[arg(long, short = 'd')]
    pub detail: bool,
    /// Number of most recent records to show
    #[arg(long, default_value_t = 20)]
    pub recordcount: u32,
    /// Show the newest record first (without --follow)
    #[arg(long, short = 'r')]
    pub reverse: bool,
    /// Only records of this instance
    #[arg(long)]
    pub pod: Option<String>,
    /// Log database (accepted for compatibility)
    #[arg(long, hide = true)]
    pub dbtype: Option<String>,
}

pub(crate) async fn run(ctx: &Ctx, cmd: FnCommand) -> anyhow::Result<()> {
    match cmd {
        FnCommand::Create(a) => create(ctx, a).await,
        FnCommand::Get(a) => get(ctx, a).await,
        FnCommand::Getmeta(a) => getmeta(ctx, a).await,
        FnCommand::List(a) => list(ctx, a).await,
        FnCommand::Update(a) => update(ctx, a).await,
        FnCommand::Delete(a) => delete(ctx, a).await,
        FnCommand::Test(a) => test(ctx, a).await,
        FnCommand::Invocation(a) => invocation(ctx, a).await,
        FnCommand::Logs(a) => logs(ctx, a).await,
    }
}

/// The executor settings a create/update resolves to, plus warnings to show.
#[derive(Debug, PartialEq)]
pub(crate) struct ResolvedExec {
    pub(crate) strategy: ExecutionStrategy,
    pub(crate) warnings: Vec<String>,
}

fn parse_executor_type(t: &str) -> anyhow::Result<&'static str> {
    match t {
        "" | executor_type::POOLMGR => Ok(executor_type::POOLMGR),
        executor_type::NEWDEPLOY => Ok(executor_type::NEWDEPLOY),
        executor_type::CONTAINER => bail!(
            "this command does not support functions of executor type container (fission 'fn run-container' is not \
             implemented by this CLI yet)"
        ),
        other => bail!("executor type must be one of 'poolmgr' or 'newdeploy', got '{other}'"),
    }
}

/// Fission's executor flag rules (create when `existing` is `None`, else update).
pub(crate) fn resolve_exec(
    a: &ExecArgs,
    existing: Option<&ExecutionStrategy>,
) -> anyhow::Result<ResolvedExec> {
    let old_type = existing.map(|e| {
        if e.executor_type.is_empty() {
            executor_type::POOLMGR
        } else {
            e.executor_type.as_str()
        }
    });
    let et = match (&a.executortype, old_type) {
        (Some(t), _) => parse_executor_type(t)?,
        (None, Some(t)) => parse_executor_type(t)?,
        (None, None) => executor_type::POOLMGR,
    };
    let st = match a.specializationtimeout {
        Some(s) if s < function_defaults::SPECIALIZATION_TIMEOUT => {
            bail!("specializationtimeout must be greater than or equal to 120 seconds")
        }
        Some(s) => s,
        None => existing
            .map(|e| e.specialization_timeout)
            .filter(|s| *s >= function_defaults::SPECIALIZATION_TIMEOUT)
            .unwrap_or(function_defaults::SPECIALIZATION_TIMEOUT),
    };
    let mut warnings = Vec::new();
    let strategy = if et == executor_type::POOLMGR {
        if a.targetcpu.is_some() || a.minscale.is_some() || a.maxscale.is_some() {
            bail!(
                "to set target CPU or min/max scale for function, please specify \"--executortype newdeploy\""
            );
        }
        if a.resources.any_set() {
            warnings.push(
                "To limit CPU/Memory for function with executor type \"poolmgr\", please specify resources limits when \
                 creating environment"
                    .to_owned(),
            );
        }
        ExecutionStrategy {
            executor_type: executor_type::POOLMGR.to_owned(),
            specialization_timeout: st,
            ..ExecutionStrategy::default()
        }
    } else {
        let same_type = existing.filter(|_| old_type == Some(et));
        let mut min = same_type.map(|e| e.min_scale).unwrap_or(1);
        let mut max = same_type.map(|e| e.max_scale).unwrap_or(0);
        if let Some(m) = a.minscale {
            if m < 0 {
                bail!("minscale must be 0 or more");
            }
            min = m;
        }
        match a.maxscale {
            Some(m) if m <= 0 => bail!("maxscale must be greater than 0"),
            Some(m) => max = m,
            None if existing.is_none() || same_type.is_none() => max = min.max(1),
            None if max <= 0 => max = 1,
            None => {}
        }
        if min > max {
            bail!("minscale ({min}) can not be greater than maxscale ({max})");
        }
        let target = match a.targetcpu {
            Some(t) if !(1..=100).contains(&t) => {
                bail!("targetcpu must be a value between 1 - 100")
            }
            Some(t) => t,
            None => same_type.map(|e| e.target_cpu_percent).unwrap_or(0),
        };
        for (set, flag) in [
            (a.concurrency.is_some(), "concurrency"),
            (a.requestsperpod.is_some(), "requestsperpod"),
            (a.onceonly.is_some(), "onceonly"),
        ] {
            if set {
                warnings.push(format!(
                    "--{flag} is only valid for executortype; `poolmgr`. Check `fission function create --help`"
                ));
            }
        }
        ExecutionStrategy {
            executor_type: et.to_owned(),
            min_scale: min,
            max_scale: max,
            target_cpu_percent: target,
            specialization_timeout: st,
            ..existing.cloned().unwrap_or_default()
        }
    };
    Ok(ResolvedExec { strategy, warnings })
}

fn refs(ns: &str, names: &[String]) -> Vec<ObjectReference> {
    names
        .iter()
        .map(|n| ObjectReference {
            namespace: ns.to_owned(),
            name: n.clone(),
        })
        .collect()
}

/// Build the Function `fn create` sends (package reference without its resourceVersion yet).
pub(crate) fn build_function(
    ns: &str,
    a: &FnCreateArgs,
    env: &str,
    pkg: &str,
    exec: ExecutionStrategy,
) -> anyhow::Result<Function> {
    if a.fntimeout <= 0 {
        bail!("--fntimeout must be greater than 0");
    }
    if a.idletimeout < 0 {
        bail!("--idletimeout must be 0 or more");
    }
    let mut spec = FunctionSpec {
        environment: ObjectReference {
            namespace: ns.to_owned(),
            name: env.to_owned(),
        },
        package: FunctionPackageRef {
            packageref: PackageRef {
                namespace: ns.to_owned(),
                name: pkg.to_owned(),
                resourceversion: String::new(),
            },
            function_name: a.entrypoint.clone().unwrap_or_default(),
        },
        secrets: refs(ns, &a.secret),
        configmaps: refs(ns, &a.configmap),
        invoke_strategy: InvokeStrategy {
            strategy_type: "execution".to_owned(),
            execution_strategy: exec,
        },
        function_timeout: a.fntimeout,
        idletimeout: Some(a.idletimeout),
        concurrency: a.exec.concurrency.unwrap_or(function_defaults::CONCURRENCY),
        requests_per_pod: a
            .exec
            .requestsperpod
            .unwrap_or(function_defaults::REQUESTS_PER_POD),
        once_only: a.exec.onceonly.unwrap_or(false),
        retain_pods: a.retainpods,
        ..FunctionSpec::default()
    };
    a.exec.resources.apply(&mut spec.resources)?;
    let mut f = Function::new(ns, &a.name, spec);
    apply_labels_annotations(&mut f.metadata, a.labels.as_deref(), &a.annotation)?;
    Ok(f)
}

/// The route the deprecated `fn create --url/--prefix` flags ask for.
fn legacy_route(ns: &str, a: &FnCreateArgs) -> anyhow::Result<Option<(HttpTrigger, bool)>> {
    if a.url.as_deref().unwrap_or_default().is_empty()
        && a.prefix.as_deref().unwrap_or_default().is_empty()
    {
        return Ok(None);
    }
    let args = RouteCreateArgs {
        name: None,
        function: vec![a.name.clone()],
        weight: Vec::new(),
        url: a.url.clone(),
        prefix: a.prefix.clone(),
        keepprefix: false,
        method: a.method.clone(),
        host: None,
        createingress: false,
        ingress: IngressArgs::default(),
        spec: SpecArgs::default(),
    };
    let (t, both) = route::build_trigger(ns, &random_name(), &args)?;
    validate(&t)?;
    Ok(Some((t, both)))
}

async fn create(ctx: &Ctx, a: FnCreateArgs) -> anyhow::Result<()> {
    if a.spec.saves() {
        return super::spec::save::function(ctx, &a);
    }
    let dry = a.spec.dry_run()?;
    let ns = ctx.ns(NsKind::Function);
    check_name::<FunctionSpec>(&ns, &a.name)?;

    // Everything that can be checked locally is checked before the first request.
    let exec = resolve_exec(&a.exec, None)?;
    for w in &exec.warnings {
        ctx.warn(w);
    }
    let route = legacy_route(&ns, &a)?;
    if let Some(p) = &a.pkgname {
        if a.code.any() {
            bail!("--pkgname cannot be used together with --code, --deploy or --src");
        }
        check_name::<PackageSpec>(&ns, p)?;
    } else {
        match a.env.as_deref() {
            None | Some("") => bail!("need --env argument"),
            Some(e) => check_name::<EnvironmentSpec>(&ns, e)?,
        }
        if !a.code.any() {
            bail!("need --code or --deploy or --src argument");
        }
    }
    let prepared = if a.pkgname.is_none() {
        Some(a.code.prepare().context("error creating package")?)
    } else {
        None
    };

    if !dry
        && ctx
            .api
            .get_opt::<FunctionSpec>(&ns, &a.name)
            .await
            .wrap("error creating function")?
            .is_some()
    {
        bail!("a function with the same name already exists");
    }

    // The environment may live in another namespace (`--envns`); the package lives with the function.
    let mut env_ns = ctx.global.env_ref_namespace(&ns);
    // Resolve the package: an existing one, or a new one to create.
    let (env, pkg_name, existing_pkg_rv) = match &a.pkgname {
        Some(p) => {
            if dry {
                (a.env.clone().unwrap_or_default(), p.clone(), None)
            } else {
                let pkg: Package = ctx.api.get(&ns, p).await.wrap(&format!(
                    "read package in '{p}' in Namespace: {ns}. Package needs to be present in the same namespace as function"
                ))?;
                let pkg_env = pkg.spec.environment.name.clone();
                // The package's environment is the function's, wherever it lives.
                env_ns = match pkg.spec.environment.namespace.as_str() {
                    "" => ns.clone(),
                    other => other.to_owned(),
                };
                if a.env.as_deref().is_some_and(|e| e != pkg_env) {
                    ctx.warn(
                        "Function's environment is different than package's environment, package's environment will be \
                         used for creating function",
                    );
                }
                (pkg_env, p.clone(), Some(pkg.metadata.resource_version))
            }
        }
        None => {
            let env = a.env.clone().unwrap_or_default();
            let has_source = prepared
                .as_ref()
                .is_some_and(package::PreparedCode::has_source);
            if !dry {
                package::check_environment(
                    ctx,
                    &env_ns,
                    &env,
                    has_source && a.code.buildcmd.is_none(),
                )
                .await?;
            }
            (
                env,
                package_name_for_function(&a.name, &uuid::Uuid::new_v4().to_string()),
                None,
            )
        }
    };

    let mut function = build_function(&ns, &a, &env, &pkg_name, exec.strategy)?;
    function.spec.environment.namespace = env_ns.clone();
    // Validate before anything is written; the package resourceVersion is filled in after its write.
    validate(&function)?;
    if let (false, Some((t, _))) = (dry, &route) {
        route::check_duplicate(ctx, t).await?;
    }
    if !dry {
        warn_missing_values(ctx, &ns, &a.secret, &a.configmap).await?;
    }

    let mut created_pkg = None;
    let mut building = false;
    let mut dry_docs = Vec::new();
    if let Some(prepared) = prepared {
        let (deploy, src) = a
            .code
            .archives(ctx, prepared, dry)
            .await
            .wrap("error creating package")?;
        let env_ref = ObjectReference {
            namespace: env_ns.clone(),
            name: env.clone(),
        };
        let mut pkg = package::new_package(
            &ns,
            &pkg_name,
            &env_ref,
            deploy,
            src,
            a.code.buildcmd.as_deref(),
        );
        a.code.name_code_file(&mut pkg);
        validate(&pkg)?;
        if dry {
            dry_docs.push(to_yaml(&pkg)?);
        } else {
            building = !pkg.spec.source.is_empty();
            let meta = ctx.api.create(&pkg).await.wrap("error creating package")?;
            say(format!("Package '{pkg_name}' created"));
            function.spec.package.packageref.resourceversion = meta.resource_version;
            created_pkg = Some(pkg_name.clone());
        }
    } else if let Some(rv) = existing_pkg_rv {
        function.spec.package.packageref.resourceversion = rv;
    }

    if dry {
        dry_docs.push(to_yaml(&function)?);
        if let Some((t, _)) = &route {
            dry_docs.push(to_yaml(t)?);
        }
        return print_dry(&dry_docs);
    }

    // From here on a failure undoes what this command created: a create that fails creates nothing.
    let mut created = Created {
        ns: ns.clone(),
        package: created_pkg,
        function: None,
        route: None,
    };
    if let Err(e) = ctx.api.create(&function).await {
        created.undo(ctx).await;
        return Err(e).wrap("error creating function");
    }
    created.function = Some(a.name.clone());
    say(format!("function '{}' created", a.name));

    if let Some((t, both)) = route {
        if both {
            ctx.warn("Prefix will take precedence over URL/RelativeURL");
        }
        if let Err(e) = ctx.api.create(&t).await {
            created.undo(ctx).await;
            return Err(e).wrap("error creating HTTP trigger");
        }
        created.route = Some(t.metadata.name.clone());
        let path = t
            .spec
            .effective_prefix()
            .unwrap_or(&t.spec.relativeurl)
            .to_owned();
        say(format!(
            "route created: {} {} -> {}",
            go_list(&t.spec.methods),
            path,
            a.name
        ));
    }

    if building && !a.code.nowait {
        let pkg = match package::wait_for_build(ctx, &ns, &pkg_name).await {
            Ok(pkg) => pkg,
            Err(e) => {
                created.undo(ctx).await;
                return Err(e.context(format!("function '{}' was not created", a.name)));
            }
        };
        repin(ctx, &ns, &a.name, &pkg.metadata.resource_version).await?;
    }
    Ok(())
}

/// Fission's warnings for `--secret`/`--configmap` names that do not exist (yet): the function
/// is still created, and fails to start until they do.
async fn warn_missing_values(
    ctx: &Ctx,
    ns: &str,
    secrets: &[String],
    configmaps: &[String],
) -> anyhow::Result<()> {
    for (kind, word, names) in [
        (ResourceKind::Secret, "Secret", secrets),
        (ResourceKind::ConfigMap, "ConfigMap", configmaps),
    ] {
        for name in names {
            match ctx.api.get_kind::<serde_json::Value>(kind, ns, name).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => ctx.warn(format!(
                    "{word} {name} not found in Namespace: {ns}. {word} needs to be present in the same namespace as function"
                )),
                Err(e) => return Err(e).wrap(&format!("error checking {word} '{name}'")),
            }
        }
    }
    Ok(())
}

/// What `fn create` has written so far, to delete again when a later step fails.
struct Created {
    ns: String,
    package: Option<String>,
    function: Option<String>,
    route: Option<String>,
}

impl Created {
    /// Delete everything recorded, newest first. Best effort: the original error is what the
    /// user needs to see; a leftover is named in a warning.
    async fn undo(&self, ctx: &Ctx) {
        let ns = &self.ns;
        if let Some(r) = &self.route
            && ctx
                .api
                .delete::<HttpTriggerSpec>(ns, r, false)
                .await
                .is_err()
        {
            ctx.warn(format!(
                "could not remove HTTP trigger '{r}' created by this command"
            ));
        }
        if let Some(f) = &self.function
            && ctx.api.delete::<FunctionSpec>(ns, f, false).await.is_err()
        {
            ctx.warn(format!(
                "could not remove function '{f}' created by this command"
            ));
        }
        if let Some(p) = &self.package
            && ctx.api.delete::<PackageSpec>(ns, p, false).await.is_err()
        {
            ctx.warn(format!(
                "could not remove package '{p}' created by this command"
            ));
        }
    }
}

/// Make sure function `name` is pinned to package version `rv`. The server's builder re-pins
/// functions right after it records a build; this covers a function created after that (a very
/// fast build), without fighting the builder's own write.
async fn repin(ctx: &Ctx, ns: &str, name: &str, rv: &str) -> anyhow::Result<()> {
    for attempt in 0..10 {
        let mut f: Function = ctx.api.get(ns, name).await.wrap("error getting function")?;
        if f.spec.package.packageref.resourceversion == rv {
            return Ok(());
        }
        if attempt < 4 {
            // Give the builder a moment first.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        f.spec.package.packageref.resourceversion = rv.to_owned();
        match ctx.api.update(&f).await {
            Ok(_) => return Ok(()),
            Err(ApiError::Status { status: 409, .. }) => continue,
            Err(e) => return Err(e).wrap("error updating function to the built package"),
        }
    }
    Ok(())
}

async fn package_of(ctx: &Ctx, f: &Function) -> anyhow::Result<Package> {
    let r = &f.spec.package.packageref;
    let ns = if r.namespace.is_empty() {
        &f.metadata.namespace
    } else {
        &r.namespace
    };
    ctx.api.get(ns, &r.name).await.wrap("error getting package")
}

async fn get(ctx: &Ctx, a: FnGetArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Function);
    let f: Function = get_one(ctx, &ns, &a.name, "function").await?;
    if let Some(fmt) = a.output {
        return print_structured(fmt, &f);
    }
    let pkg = package_of(ctx, &f).await?;
    if pkg.spec.deployment.is_empty() {
        bail!(
            "package '{}' of function '{}' has no deployment archive (build status: {})",
            pkg.metadata.name,
            a.name,
            pkg.status.buildstatus
        );
    }
    let bytes = package::archive_bytes(ctx, &pkg.spec.deployment).await?;
    print_stdout(&bytes);
    Ok(())
}

/// The `fn getmeta` text.
pub(crate) fn meta_text(f: &Function) -> String {
    let mut out = format!(
        "Name: {}\nEnvironment: {}\n",
        f.metadata.name, f.spec.environment.name
    );
    out.push_str(&format!("Namespace: {}\n", f.metadata.namespace));
    out.push_str(&format!("Package: {}\n", f.spec.package.packageref.name));
    out.push_str(&format!("Entrypoint: {}\n", f.spec.package.function_name));
    out.push_str(&format!("ExecutorType: {}\n", f.spec.executor_type()));
    for (title, map) in [
        ("Labels", &f.metadata.labels),
        ("Annotations", &f.metadata.annotations),
    ] {
        if let Some(m) = map.as_ref().filter(|m| !m.is_empty()) {
            out.push_str(&format!("{title}:\n"));
            for (k, v) in m {
                out.push_str(&format!("  {k}={v}\n"));
            }
        }
    }
    out
}

async fn getmeta(ctx: &Ctx, a: FnNameArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Function);
    let f: Function = get_one(ctx, &ns, &a.name, "function").await?;
    if let Some(fmt) = a.output {
        return print_structured(fmt, &f);
    }
    print_stdout(meta_text(&f).as_bytes());
    Ok(())
}

pub(crate) fn fn_table(fns: &[Function]) -> Table {
    fn_table_with_instances(fns, None)
}

/// The function table; with `instances` (one per function), an INSTANCES column at the end
/// (after Fission's columns, so scripts that cut Fission's columns keep working).
fn fn_table_with_instances(fns: &[Function], instances: Option<&[Option<u64>]>) -> Table {
    let mut columns = vec![
        "NAME",
        "ENV",
        "EXECUTORTYPE",
        "MINSCALE",
        "MAXSCALE",
        "MINCPU",
        "MAXCPU",
        "MINMEMORY",
        "MAXMEMORY",
        "SECRETS",
        "CONFIGMAPS",
        "NAMESPACE",
    ];
    if instances.is_some() {
        columns.push("INSTANCES");
    }
    let mut t = Table::new(&columns);
    for (i, f) in fns.iter().enumerate() {
        let es = &f.spec.invoke_strategy.execution_strategy;
        let r = &f.spec.resources;
        let names = |v: &[ObjectReference]| {
            v.iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut row = vec![
            f.metadata.name.clone(),
            f.spec.environment.name.clone(),
            f.spec.executor_type().to_owned(),
            es.min_scale.to_string(),
            es.max_scale.to_string(),
            quantity_cell(&r.requests, "cpu"),
            quantity_cell(&r.limits, "cpu"),
            quantity_cell(&r.requests, "memory"),
            quantity_cell(&r.limits, "memory"),
            names(&f.spec.secrets),
            names(&f.spec.configmaps),
            f.metadata.namespace.clone(),
        ];
        if let Some(counts) = instances {
            row.push(
                counts
                    .get(i)
                    .copied()
                    .flatten()
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            );
        }
        t.row(row);
    }
    t
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<()> {
    let scope = a.scope(ctx, NsKind::Function);
    let fns: Vec<Function> = ctx
        .api
        .list(scope.as_deref())
        .await
        .wrap("error listing functions")?;
    if let Some(f) = a.output {
        return print_structured(f, &fns);
    }
    let counts = ctx
        .api
        .instance_counts(scope.as_deref())
        .await
        .map(|by_name| {
            fns.iter()
                .map(|f| {
                    by_name
                        .get(&(f.metadata.namespace.clone(), f.metadata.name.clone()))
                        .copied()
                })
                .collect::<Vec<_>>()
        });
    fn_table_with_instances(&fns, counts.as_deref()).print();
    Ok(())
}

async fn update(ctx: &Ctx, a: FnUpdateArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Function);
    check_name::<FunctionSpec>(&ns, &a.name)?;
    if a.fntimeout.is_some_and(|t| t <= 0) {
        bail!("--fntimeout must be greater than 0");
    }
    if a.pkgname.is_some() && a.code.any() {
        bail!("--pkgname cannot be used together with --code, --deploy or --src");
    }
    if let Some(p) = &a.pkgname {
        check_name::<PackageSpec>(&ns, p)?;
    }
    if let Some(e) = &a.env {
        check_name::<EnvironmentSpec>(&ns, e)?;
    }
    let prepared = if a.code.any() {
        Some(a.code.prepare().context("error updating function")?)
    } else {
        None
    };

    let mut f: Function = ctx
        .api
        .get(&ns, &a.name)
        .await
        .wrap("error getting function")?;
    let exec = resolve_exec(&a.exec, Some(&f.spec.invoke_strategy.execution_strategy))?;
    for w in &exec.warnings {
        ctx.warn(w);
    }

    // After a build, the function as the builder re-pinned it (an update without other changes
    // then writes nothing more).
    let mut rebuilt: Option<Function> = None;
    let env_changed = a
        .env
        .as_ref()
        .is_some_and(|e| *e != f.spec.environment.name);
    if let Some(e) = &a.env {
        let env_ns = ctx.global.env_ref_namespace(&ns);
        if env_changed {
            package::check_environment(ctx, &env_ns, e, false).await?;
        }
        f.spec.environment = ObjectReference {
            namespace: env_ns,
            name: e.clone(),
        };
    }

    if let Some(p) = &a.pkgname {
        let pkg: Package = ctx.api.get(&ns, p).await.wrap(&format!(
            "read package in '{p}' in Namespace: {ns}. Package needs to be present in the same namespace as function"
        ))?;
        if a.env.is_none() && pkg.spec.environment.name != f.spec.environment.name {
            ctx.warn("Function's environment is different than package's environment, package's environment will be used for updating function");
            f.spec.environment = ObjectReference {
                namespace: ns.clone(),
                name: pkg.spec.environment.name.clone(),
            };
        }
        f.spec.package.packageref = PackageRef {
            namespace: ns.clone(),
            name: p.clone(),
            resourceversion: pkg.metadata.resource_version,
        };
    } else if prepared.is_some() || a.code.buildcmd.is_some() || env_changed {
        let mut pkg = package_of(ctx, &f).await?;
        a.code.name_code_file(&mut pkg);
        let pkg_ns = pkg.metadata.namespace.clone();
        let others: Vec<String> = package::functions_using(ctx, &pkg_ns, &pkg.metadata.name)
            .await?
            .into_iter()
            .map(|o| o.metadata.name)
            .filter(|n| *n != a.name)
            .collect();
        let code_change = prepared.is_some() || a.code.buildcmd.is_some();
        if code_change && !others.is_empty() && !a.force {
            bail!("package is used by multiple functions, use --force to force update");
        }
        // The package follows the function's environment only when nobody else relies on it.
        let env_ref = (env_changed && others.is_empty()).then(|| f.spec.environment.clone());
        if code_change || env_ref.is_some() {
            let (deploy, src) = match prepared {
                Some(p) => a
                    .code
                    .archives(ctx, p, false)
                    .await
                    .wrap("error updating package")?,
                None => (None, None),
            };
            let pkg_name = pkg.metadata.name.clone();
            let updated = package::update_package(
                ctx,
                pkg,
                deploy,
                src,
                a.code.buildcmd.as_deref(),
                env_ref,
                Some(&a.name),
            )
            .await
            .wrap(&format!("error updating package '{pkg_name}'"))?;
            if !updated.rebuild {
                f.spec.package.packageref.resourceversion = updated.meta.resource_version;
            } else if a.code.nowait {
                // The server's builder re-pins the function when the build succeeds; until then
                // it keeps serving its current code.
                ctx.info(format!(
                    "Package '{pkg_name}' is building; the function keeps its current code until the build succeeds"
                ));
            } else {
                // Only a successful build reaches the function (a failed one leaves it as it is).
                // The builder has re-pinned it meanwhile: apply this update to the current object.
                let built = package::wait_for_build(ctx, &pkg_ns, &pkg_name).await?;
                repin(ctx, &ns, &a.name, &built.metadata.resource_version).await?;
                let environment = f.spec.environment.clone();
                f = ctx
                    .api
                    .get(&ns, &a.name)
                    .await
                    .wrap("error getting function")?;
                rebuilt = Some(f.clone());
                f.spec.environment = environment;
            }
        }
    }

    if let Some(e) = &a.entrypoint {
        f.spec.package.function_name = e.clone();
    }
    if let Some(t) = a.fntimeout {
        f.spec.function_timeout = t;
    }
    if let Some(t) = a.idletimeout {
        f.spec.idletimeout = Some(t);
    }
    if let Some(r) = a.retainpods {
        f.spec.retain_pods = r;
    }
    if let Some(c) = a.exec.concurrency {
        f.spec.concurrency = c;
    }
    if let Some(r) = a.exec.requestsperpod {
        f.spec.requests_per_pod = r;
    }
    if let Some(o) = a.exec.onceonly {
        f.spec.once_only = o;
    }
    warn_missing_values(ctx, &ns, &a.secret, &a.configmap).await?;
    if !a.secret.is_empty() {
        f.spec.secrets = refs(&ns, &a.secret);
    }
    if !a.configmap.is_empty() {
        f.spec.configmaps = refs(&ns, &a.configmap);
    }
    a.exec.resources.apply(&mut f.spec.resources)?;
    f.spec.invoke_strategy.strategy_type = "execution".to_owned();
    f.spec.invoke_strategy.execution_strategy = exec.strategy;
    apply_labels_annotations(&mut f.metadata, a.labels.as_deref(), &a.annotation)?;
    validate(&f)?;
    if rebuilt.as_ref() != Some(&f) {
        ctx.api.update(&f).await.wrap("error updating function")?;
    }
    say(format!("Function '{}' updated", a.name));
    Ok(())
}

/// Deletes only the function. Like Fission, the package (even one `fn create` made) is kept:
/// `fission pkg delete --orphan` removes packages no function uses.
async fn delete(ctx: &Ctx, a: FnDeleteArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Function);
    if delete_one::<FunctionSpec>(ctx, &ns, &a.name, a.ignorenotfound, false, "function").await? {
        say(format!("function '{}' deleted", a.name));
    }
    Ok(())
}

/// The router URL of a function: `/fission-function/<name>` in the default namespace, else
/// `/fission-function/<ns>/<name>`, plus the sub-path.
pub(crate) fn function_url(router: &str, ns: &str, name: &str, subpath: Option<&str>) -> String {
    let mut url = format!("{}/fission-function/", router.trim_end_matches('/'));
    if ns != DEFAULT_NAMESPACE {
        url.push_str(ns);
        url.push('/');
    }
    url.push_str(name);
    if let Some(sp) = subpath.filter(|s| !s.is_empty()) {
        if !sp.starts_with('/') {
            url.push('/');
        }
        url.push_str(sp);
    }
    url
}

/// Parse `-H 'Key: value'`.
pub(crate) fn parse_header(h: &str) -> anyhow::Result<(String, String)> {
    match h.split_once(':') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => bail!("invalid header '{h}': use 'Key: value'"),
    }
}

/// Seconds of slack given to a call beyond the function timeout, for a cold start.
const TEST_COLD_START_ALLOWANCE: Duration = Duration::from_secs(30);

async fn test(ctx: &Ctx, a: FnTestArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Function);
    let method = match a.method.as_slice() {
        [] => "GET".to_owned(),
        [m] => {
            let up = m.trim().to_ascii_uppercase();
            if !HTTP_METHODS.contains(&up.as_str()) {
                bail!("invalid or unsupported HTTP Method {m}");
            }
            up
        }
        _ => bail!("only one HTTP method can be used with fn test"),
    };
    let headers = a
        .header
        .iter()
        .map(|h| parse_header(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let query = a
        .query
        .iter()
        .map(|q| parse_kv(q, "query parameter"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let explicit_timeout = a.timeout.as_deref().map(parse_timeout).transpose()?;

    let f: Function = get_one(ctx, &ns, &a.name, "function").await?;
    let fn_timeout = if f.spec.function_timeout > 0 {
        f.spec.function_timeout
    } else {
        function_defaults::FUNCTION_TIMEOUT
    };
    let timeout = explicit_timeout
        .unwrap_or(Duration::from_secs(fn_timeout as u64) + TEST_COLD_START_ALLOWANCE);

    let router = ctx
        .api
        .router_url()
        .await
        .wrap("error finding the router address")?;
    let url = function_url(&router, &ns, &a.name, a.subpath.as_deref());
    let mut url =
        reqwest::Url::parse(&url).map_err(|e| anyhow!("invalid function URL '{url}': {e}"))?;
    if !query.is_empty() {
        let mut q = url.query_pairs_mut();
        for (k, v) in &query {
            q.append_pair(k, v);
        }
    }
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .context("cannot set up the HTTP client")?;
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| anyhow!("invalid method: {e}"))?;
    if ctx.global.verbosity >= 2 {
        eprintln!("> {method} {url}");
    }
    let mut req = client.request(method, url);
    if a.run_async {
        req = req.header("X-Fission-Async", "true");
        if let Some(cb) = &a.callback {
            req = req.header("X-Fission-Callback-Url", cb.as_str());
        }
    }
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(token) = std::env::var("FISSION_AUTH_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        req = req.bearer_auth(token);
    }
    if let Some(b) = &a.body {
        req = req.body(b.clone());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            bail!(
                "calling function {}: no response within {}s (use -t to wait longer)",
                a.name,
                timeout.as_secs()
            )
        }
        Err(e) => {
            return Err(anyhow!(
                "calling function {}: {}",
                a.name,
                transport_error("fission router", &router, &e)
            ));
        }
    };
    let status = resp.status().as_u16();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) if e.is_timeout() => {
            bail!(
                "calling function {}: no response within {}s (use -t to wait longer)",
                a.name,
                timeout.as_secs()
            )
        }
        Err(e) => bail!(
            "calling function {}: error reading the response: {e}",
            a.name
        ),
    };
    if a.run_async && status == 202 {
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
            .ok_or_else(|| {
                anyhow!(
                    "calling function {}: the router accepted the call but sent no id",
                    a.name
                )
            })?;
        say(format!("invocation '{id}' queued"));
        return Ok(());
    }
    if status < 400 {
        print_stdout(&body);
        return Ok(());
    }
    print_recent_logs(ctx, &ns, &a.name).await;
    Err(anyhow!(
        "calling function {}: {}; Please try again or fix the error: {}",
        a.name,
        status,
        String::from_utf8_lossy(&body).trim_end()
    ))
}

async fn invocation(ctx: &Ctx, a: FnInvocationArgs) -> anyhow::Result<()> {
    let v = match &a.id {
        Some(id) => ctx
            .api
            .get_json(&["v2", "async", id], &[])
            .await
            .wrap("error reading the invocation")?,
        None => ctx
            .api
            .get_json(&["v2", "async"], &[("state", "dead")])
            .await
            .wrap("error reading the dead-letter list")?,
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// After a failed `fn test`: the function's last 20 log records on stderr.
async fn print_recent_logs(ctx: &Ctx, ns: &str, name: &str) {
    let text = match ctx.api.logs(name, ns, 20, false).await {
        Ok(resp) => resp
            .text()
            .await
            .map_err(|e| ApiError::Other(e.to_string())),
        Err(e) => Err(e),
    };
    match text {
        Ok(t) => {
            for line in t.lines().filter(|l| !l.trim().is_empty()) {
                eprintln!("{}", format_log_line(line, false));
            }
        }
        Err(e) => ctx.warn(format!("could not get the function's logs: {e}")),
    }
}

/// A log record `<RFC3339 timestamp> <instance> <stdout|stderr> <message>` split up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LogRecord<'a> {
    pub(crate) timestamp: &'a str,
    pub(crate) instance: &'a str,
    pub(crate) stream: &'a str,
    pub(crate) message: &'a str,
}

pub(crate) fn parse_log_line(line: &str) -> Option<LogRecord<'_>> {
    let mut parts = line.splitn(4, ' ');
    let timestamp = parts.next()?;
    let instance = parts.next()?;
    let stream = parts.next()?;
    let message = parts.next().unwrap_or("");
    chrono::DateTime::parse_from_rfc3339(timestamp).ok()?;
    Some(LogRecord {
        timestamp,
        instance,
        stream,
        message,
    })
}

/// Without `--detail` only the message (like `kubectl logs`); with it the full record.
pub(crate) fn format_log_line(line: &str, detail: bool) -> String {
    match parse_log_line(line) {
        Some(r) if detail => format!(
            "[{}] {} {}: {}",
            r.timestamp, r.instance, r.stream, r.message
        ),
        Some(r) => r.message.to_owned(),
        None => line.to_owned(),
    }
}

fn log_line_wanted(line: &str, pod: Option<&str>) -> bool {
    if line.trim().is_empty() {
        return false;
    }
    match (pod, parse_log_line(line)) {
        (Some(p), Some(r)) => r.instance == p,
        _ => true,
    }
}

async fn logs(ctx: &Ctx, a: FnLogsArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Function);
    check_name::<FunctionSpec>(&ns, &a.name)?;
    let mut resp = ctx
        .api
        .logs(&a.name, &ns, a.recordcount, a.follow)
        .await
        .wrap("error getting function logs")?;
    let pod = a.pod.as_deref();
    let mut buf: Vec<u8> = Vec::new();
    let mut collected: Vec<String> = Vec::new();
    let buffer_all = a.reverse && !a.follow;
    let emit = |line: &str, collected: &mut Vec<String>| {
        if log_line_wanted(line, pod) {
            let out = format_log_line(line, a.detail);
            if buffer_all {
                collected.push(out);
            } else {
                print_stdout(format!("{out}\n").as_bytes());
            }
        }
    };
    loop {
        let chunk = resp
            .chunk()
            .await
            .map_err(|e| anyhow!("error reading function logs: {e}"))?;
        let Some(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1])
                .trim_end_matches('\r')
                .to_owned();
            emit(&line, &mut collected);
        }
    }
    if !buf.is_empty() {
        let line = String::from_utf8_lossy(&buf).into_owned();
        emit(&line, &mut collected);
    }
    if buffer_all {
        collected.reverse();
        for l in collected {
            print_stdout(format!("{l}\n").as_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        c: FnCommand,
    }

    fn parse(argv: &[&str]) -> FnCommand {
        let mut full = vec!["t"];
        full.extend_from_slice(argv);
        T::try_parse_from(full).expect("parse").c
    }

    fn create_args(argv: &[&str]) -> FnCreateArgs {
        let mut full = vec!["create"];
        full.extend_from_slice(argv);
        match parse(&full) {
            FnCommand::Create(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn fn_create_defaults_match_fission() {
        let a = create_args(&["--name", "hello", "--env", "nodejs", "--code", "hello.js"]);
        let exec = resolve_exec(&a.exec, None).expect("exec");
        assert!(exec.warnings.is_empty());
        let f = build_function("default", &a, "nodejs", "hello-x", exec.strategy).expect("fn");
        let v = serde_json::to_value(&f).expect("json");
        assert_eq!(v["spec"]["functionTimeout"], 60);
        assert_eq!(v["spec"]["idletimeout"], 120);
        assert_eq!(v["spec"]["concurrency"], 500);
        assert_eq!(v["spec"]["requestsPerPod"], 1);
        assert_eq!(
            v["spec"]["InvokeStrategy"],
            json!({"StrategyType": "execution", "ExecutionStrategy": {"ExecutorType": "poolmgr", "MinScale": 0, "MaxScale": 0, "TargetCPUPercent": 0, "SpecializationTimeout": 120}})
        );
        assert_eq!(
            v["spec"]["package"],
            json!({"packageref": {"namespace": "default", "name": "hello-x"}, "functionName": ""})
        );
        assert_eq!(
            v["spec"]["environment"],
            json!({"namespace": "default", "name": "nodejs"})
        );
        validate(&f).expect("valid");
    }

    #[test]
    fn fn_create_flag_aliases_are_accepted() {
        let a = create_args(&[
            "--name",
            "f",
            "--env",
            "e",
            "--deployarchive",
            "a.zip",
            "--entry",
            "m.main",
            "--ft",
            "30",
            "--con",
            "7",
            "--rpp",
            "2",
            "--yolo",
            "--st",
            "150",
            "--pkg",
            "p",
        ]);
        assert_eq!(a.code.deploy, ["a.zip"]);
        assert_eq!(a.entrypoint.as_deref(), Some("m.main"));
        assert_eq!(
            (
                a.fntimeout,
                a.exec.concurrency,
                a.exec.requestsperpod,
                a.exec.onceonly
            ),
            (30, Some(7), Some(2), Some(true))
        );
        assert_eq!(a.exec.specializationtimeout, Some(150));
        assert_eq!(a.pkgname.as_deref(), Some("p"));
    }

    #[test]
    fn scale_flags_need_newdeploy() {
        let a = create_args(&["--name", "f", "--minscale", "2"]);
        assert_eq!(
            resolve_exec(&a.exec, None)
                .expect_err("must fail")
                .to_string(),
            "to set target CPU or min/max scale for function, please specify \"--executortype newdeploy\""
        );
    }

    #[test]
    fn newdeploy_defaults_min_1_and_max_min() {
        let a = create_args(&[
            "--name",
            "f",
            "--executortype",
            "newdeploy",
            "--minscale",
            "2",
        ]);
        let s = resolve_exec(&a.exec, None).expect("exec").strategy;
        assert_eq!((s.min_scale, s.max_scale, s.target_cpu_percent), (2, 2, 0));
        let a = create_args(&[
            "--name",
            "f",
            "--executortype",
            "newdeploy",
            "--targetcpu",
            "80",
        ]);
        let s = resolve_exec(&a.exec, None).expect("exec").strategy;
        assert_eq!((s.min_scale, s.max_scale, s.target_cpu_percent), (1, 1, 80));
    }

    #[test]
    fn minscale_above_maxscale_is_refused() {
        let a = create_args(&[
            "--name",
            "f",
            "--executortype",
            "newdeploy",
            "--minscale",
            "3",
            "--maxscale",
            "2",
        ]);
        assert_eq!(
            resolve_exec(&a.exec, None)
                .expect_err("must fail")
                .to_string(),
            "minscale (3) can not be greater than maxscale (2)"
        );
    }

    #[test]
    fn specialization_timeout_below_120_is_refused() {
        let a = create_args(&["--name", "f", "--st", "60"]);
        assert!(
            resolve_exec(&a.exec, None)
                .expect_err("must fail")
                .to_string()
                .contains("120")
        );
    }

    #[test]
    fn container_and_unknown_executor_types_are_refused() {
        let a = create_args(&["--name", "f", "--executortype", "container"]);
        assert!(resolve_exec(&a.exec, None).is_err());
        let a = create_args(&["--name", "f", "--executortype", "lambda"]);
        assert!(
            resolve_exec(&a.exec, None)
                .expect_err("must fail")
                .to_string()
                .starts_with("executor type must be one of")
        );
    }

    #[test]
    fn poolmgr_resource_flags_warn_and_newdeploy_pool_flags_warn() {
        let a = create_args(&["--name", "f", "--mincpu", "100"]);
        let w = resolve_exec(&a.exec, None).expect("exec").warnings;
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("To limit CPU/Memory for function with executor type \"poolmgr\"")
        );
        let a = create_args(&[
            "--name",
            "f",
            "--executortype",
            "newdeploy",
            "--concurrency",
            "3",
            "--yolo",
        ]);
        let w = resolve_exec(&a.exec, None).expect("exec").warnings;
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn update_keeps_existing_scale_unless_changed() {
        let existing = ExecutionStrategy {
            executor_type: "newdeploy".into(),
            min_scale: 2,
            max_scale: 5,
            target_cpu_percent: 70,
            specialization_timeout: 200,
            ..Default::default()
        };
        let s = resolve_exec(&ExecArgs::default(), Some(&existing))
            .expect("exec")
            .strategy;
        assert_eq!(s, existing);
        let s = resolve_exec(
            &ExecArgs {
                maxscale: Some(9),
                ..Default::default()
            },
            Some(&existing),
        )
        .expect("exec")
        .strategy;
        assert_eq!((s.min_scale, s.max_scale), (2, 9));
        let back = resolve_exec(
            &ExecArgs {
                executortype: Some("poolmgr".into()),
                ..Default::default()
            },
            Some(&existing),
        )
        .expect("exec")
        .strategy;
        assert_eq!(
            (
                back.executor_type.as_str(),
                back.min_scale,
                back.max_scale,
                back.specialization_timeout
            ),
            ("poolmgr", 0, 0, 200)
        );
    }

    #[test]
    fn fntimeout_must_be_positive() {
        let a = create_args(&["--name", "f", "--ft", "0"]);
        let exec = resolve_exec(&a.exec, None).expect("exec").strategy;
        assert_eq!(
            build_function("default", &a, "e", "p", exec)
                .expect_err("must fail")
                .to_string(),
            "--fntimeout must be greater than 0"
        );
    }

    #[test]
    fn deprecated_url_flag_builds_a_get_route_for_the_function() {
        let a = create_args(&["--name", "hello", "--url", "hello"]);
        let (t, both) = legacy_route("default", &a).expect("route").expect("some");
        assert!(!both);
        assert_eq!(t.spec.relativeurl, "/hello");
        assert_eq!(t.spec.methods, ["GET"]);
        assert_eq!(t.spec.functionref.name, "hello");
        assert!(
            legacy_route("default", &create_args(&["--name", "x"]))
                .expect("none")
                .is_none()
        );
    }

    #[test]
    fn function_urls_include_the_namespace_unless_default() {
        assert_eq!(
            function_url("http://r:1/", "default", "f", None),
            "http://r:1/fission-function/f"
        );
        assert_eq!(
            function_url("http://r:1", "ns1", "f", Some("a/b")),
            "http://r:1/fission-function/ns1/f/a/b"
        );
        assert_eq!(
            function_url("http://r:1", "default", "f", Some("/x")),
            "http://r:1/fission-function/f/x"
        );
    }

    #[test]
    fn test_headers_split_at_the_first_colon() {
        assert_eq!(
            parse_header("X-A: b:c").expect("h"),
            ("X-A".into(), "b:c".into())
        );
        assert!(parse_header("nocolon").is_err());
    }

    #[test]
    fn log_lines_show_the_message_or_full_detail() {
        let l = "2025-01-02T03:04:05.123Z inst-1 stdout hello world";
        assert_eq!(format_log_line(l, false), "hello world");
        assert_eq!(
            format_log_line(l, true),
            "[2025-01-02T03:04:05.123Z] inst-1 stdout: hello world"
        );
        assert_eq!(format_log_line("not a record", false), "not a record");
        assert!(log_line_wanted(l, Some("inst-1")));
        assert!(!log_line_wanted(l, Some("inst-2")));
    }

    #[test]
    fn fn_list_table_starts_with_name() {
        let a = create_args(&["--name", "hello", "--secret", "s1", "--secret", "s2"]);
        let exec = resolve_exec(&a.exec, None).expect("exec").strategy;
        let f = build_function("default", &a, "nodejs", "p", exec).expect("fn");
        let out = fn_table(&[f]).render();
        let mut lines = out.lines();
        assert!(lines.next().expect("h").starts_with("NAME "));
        let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
        assert_eq!(
            row,
            [
                "hello", "nodejs", "poolmgr", "0", "0", "0", "0", "0", "0", "s1,s2", "default"
            ]
        );
    }

    #[test]
    fn getmeta_prints_name_and_environment_first() {
        let a = create_args(&["--name", "hello", "--labels", "a=b"]);
        let exec = resolve_exec(&a.exec, None).expect("exec").strategy;
        let f = build_function("default", &a, "nodejs", "p", exec).expect("fn");
        let t = meta_text(&f);
        assert!(t.starts_with("Name: hello\nEnvironment: nodejs\n"), "{t}");
        assert!(t.contains("Labels:\n  a=b\n"), "{t}");
    }

    #[test]
    fn logs_alias_log_is_accepted() {
        assert!(matches!(
            parse(&["log", "--name", "x", "-f", "-d"]),
            FnCommand::Logs(FnLogsArgs {
                follow: true,
                detail: true,
                ..
            })
        ));
    }
}
