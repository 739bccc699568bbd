//! `fission environment|env …` (§3.2).

use anyhow::bail;
use clap::{Args, Subcommand};
use fission_core::resources::{
    Builder, DEFAULT_GRACE_PERIOD, DEFAULT_POOLSIZE, Environment, EnvironmentSpec, Function,
    FunctionSpec, Runtime,
};
use serde_json::json;

use super::{Ctx, ListArgs, SpecArgs, delete_one, get_one, print_dry, say, to_yaml};
use crate::NsKind;
use crate::api::Wrap;
use crate::output::{OutputFormat, Table, print_structured};
use crate::util::{
    ResourceArgs, apply_labels_annotations, check_name, env_vars, quantity_cell, validate,
};

/// `fission env` subcommands.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Create an environment
    Create(EnvCreateArgs),
    /// Show an environment
    Get(EnvGetArgs),
    /// List environments
    List(ListArgs),
    /// Update an environment
    Update(EnvUpdateArgs),
    /// Delete an environment
    Delete(EnvDeleteArgs),
}

/// `env create` flags.
#[derive(Debug, Args)]
pub struct EnvCreateArgs {
    /// Environment name
    #[arg(long)]
    pub name: String,
    /// Environment image URL
    #[arg(long)]
    pub image: String,
    /// Size of the pool of warm instances
    #[arg(long)]
    pub poolsize: Option<i32>,
    /// Environment builder image URL
    #[arg(long)]
    pub builder: Option<String>,
    /// Build command for the environment builder (default "build" with --builder)
    #[arg(long)]
    pub buildcmd: Option<String>,
    #[command(flatten)]
    pub resources: ResourceArgs,
    /// Grace time (in seconds) for an instance to stop
    #[arg(long = "graceperiod", visible_alias = "period", default_value_t = DEFAULT_GRACE_PERIOD)]
    pub graceperiod: i64,
    /// Environment API version (1 means v1 interface)
    #[arg(long = "version", default_value_t = 3)]
    pub version: i32,
    /// Secret for pulling the image
    #[arg(long)]
    pub imagepullsecret: Option<String>,
    /// Keep the archive instead of extracting it into a directory
    #[arg(long)]
    pub keeparchive: bool,
    /// Allow instances to access the external network (only with Istio)
    #[arg(long)]
    pub externalnetwork: bool,
    /// Comma-separated labels, e.g. "a=b,c=d"
    #[arg(long)]
    pub labels: Option<String>,
    /// Annotation k=v (repeatable)
    #[arg(long)]
    pub annotation: Vec<String>,
    /// Environment variable K=V for the builder container (repeatable)
    #[arg(long = "builder-env")]
    pub builder_env: Vec<String>,
    /// Environment variable K=V for the runtime container (repeatable)
    #[arg(long = "runtime-env")]
    pub runtime_env: Vec<String>,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// `env get` flags.
#[derive(Debug, Args)]
pub struct EnvGetArgs {
    /// Environment name
    #[arg(long)]
    pub name: String,
    /// Print the full object as json or yaml
    #[arg(long = "output", short = 'o', value_enum)]
    pub output: Option<OutputFormat>,
}

/// `env update` flags.
#[derive(Debug, Args)]
pub struct EnvUpdateArgs {
    /// Environment name
    #[arg(long)]
    pub name: String,
    /// Environment image URL
    #[arg(long)]
    pub image: Option<String>,
    /// Size of the pool of warm instances
    #[arg(long)]
    pub poolsize: Option<i32>,
    /// Environment builder image URL
    #[arg(long)]
    pub builder: Option<String>,
    /// Build command for the environment builder
    #[arg(long)]
    pub buildcmd: Option<String>,
    #[command(flatten)]
    pub resources: ResourceArgs,
    /// Grace time (in seconds) for an instance to stop
    #[arg(long = "graceperiod", visible_alias = "period")]
    pub graceperiod: Option<i64>,
    /// Secret for pulling the image
    #[arg(long)]
    pub imagepullsecret: Option<String>,
    /// Keep the archive instead of extracting it into a directory
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub keeparchive: Option<bool>,
    /// Allow instances to access the external network (only with Istio)
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub externalnetwork: Option<bool>,
    /// Comma-separated labels, e.g. "a=b,c=d"
    #[arg(long)]
    pub labels: Option<String>,
    /// Annotation k=v (repeatable)
    #[arg(long)]
    pub annotation: Vec<String>,
    /// Environment variable K=V for the builder container (repeatable; replaces the list)
    #[arg(long = "builder-env")]
    pub builder_env: Vec<String>,
    /// Environment variable K=V for the runtime container (repeatable; replaces the list)
    #[arg(long = "runtime-env")]
    pub runtime_env: Vec<String>,
}

/// `env delete` flags.
#[derive(Debug, Args)]
pub struct EnvDeleteArgs {
    /// Environment name
    #[arg(long)]
    pub name: String,
    /// Do not fail when the environment does not exist
    #[arg(long)]
    pub ignorenotfound: bool,
    /// Delete even if functions use the environment
    #[arg(long, short = 'f')]
    pub force: bool,
}

pub(crate) async fn run(ctx: &Ctx, cmd: EnvCommand) -> anyhow::Result<()> {
    match cmd {
        EnvCommand::Create(a) => create(ctx, a).await,
        EnvCommand::Get(a) => get(ctx, a).await,
        EnvCommand::List(a) => list(ctx, a).await,
        EnvCommand::Update(a) => update(ctx, a).await,
        EnvCommand::Delete(a) => delete(ctx, a).await,
    }
}

/// The runtime container stub Fission always writes, with optional env vars.
fn container_stub(name: &str, env: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut c = json!({ "name": name });
    let vars = env_vars(env)?;
    if !vars.is_empty() {
        c["env"] = serde_json::Value::Array(vars);
    }
    Ok(c)
}

fn podspec_stub(name: &str) -> serde_json::Value {
    json!({ "containers": [{ "name": name }] })
}

/// Build the Environment `env create` sends (§2.9a shape).
pub(crate) fn build_environment(ns: &str, a: &EnvCreateArgs) -> anyhow::Result<Environment> {
    let mut spec = EnvironmentSpec {
        version: if a.version == 0 { 1 } else { a.version },
        runtime: Runtime {
            image: a.image.clone(),
            container: Some(container_stub(&a.name, &a.runtime_env)?),
            podspec: Some(podspec_stub(&a.name)),
        },
        builder: None,
        poolsize: a.poolsize.unwrap_or(DEFAULT_POOLSIZE),
        termination_grace_period: a.graceperiod,
        keeparchive: a.keeparchive,
        imagepullsecret: a.imagepullsecret.clone().unwrap_or_default(),
        allow_access_to_external_network: a.externalnetwork,
        ..EnvironmentSpec::default()
    };
    if let Some(img) = a.builder.as_deref().filter(|s| !s.is_empty()) {
        spec.builder = Some(Builder {
            image: img.to_owned(),
            command: a
                .buildcmd
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "build".to_owned()),
            container: Some(container_stub("builder", &a.builder_env)?),
            podspec: Some(podspec_stub("builder")),
        });
    } else if a.buildcmd.is_some() || !a.builder_env.is_empty() {
        bail!("--buildcmd and --builder-env need a builder image: use --builder");
    }
    a.resources.apply(&mut spec.resources)?;
    let mut env = Environment::new(ns, &a.name, spec);
    apply_labels_annotations(&mut env.metadata, a.labels.as_deref(), &a.annotation)?;
    Ok(env)
}

async fn create(ctx: &Ctx, a: EnvCreateArgs) -> anyhow::Result<()> {
    if a.spec.saves() {
        return super::spec::save::environment(ctx, &a);
    }
    let dry = a.spec.dry_run()?;
    let ns = ctx.ns(NsKind::Environment);
    check_name::<EnvironmentSpec>(&ns, &a.name)?;
    if a.poolsize.is_none() {
        ctx.info(format!("poolsize setting default to {DEFAULT_POOLSIZE}"));
    } else if a.poolsize.is_some_and(|p| p < 1) {
        ctx.warn("poolsize is less than 1: no warm instances are kept, so every cold start creates one on demand");
    }
    let env = build_environment(&ns, &a)?;
    validate(&env)?;
    if dry {
        return print_dry(&[to_yaml(&env)?]);
    }
    ctx.api
        .create(&env)
        .await
        .wrap("error creating environment")?;
    say(format!("environment '{}' created", a.name));
    Ok(())
}

async fn get(ctx: &Ctx, a: EnvGetArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Environment);
    let env: Environment = get_one(ctx, &ns, &a.name, "environment").await?;
    if let Some(f) = a.output {
        return print_structured(f, &env);
    }
    let mut t = Table::new(&["NAME", "IMAGE", "NAMESPACE"]);
    t.row(vec![
        env.metadata.name.clone(),
        env.spec.runtime.image.clone(),
        env.metadata.namespace.clone(),
    ]);
    t.print();
    Ok(())
}

/// The `env list` table.
pub(crate) fn env_table(envs: &[Environment]) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "IMAGE",
        "BUILDER_IMAGE",
        "POOLSIZE",
        "MINCPU",
        "MAXCPU",
        "MINMEMORY",
        "MAXMEMORY",
        "EXTNET",
        "GRACETIME",
        "NAMESPACE",
    ]);
    for e in envs {
        let r = &e.spec.resources;
        t.row(vec![
            e.metadata.name.clone(),
            e.spec.runtime.image.clone(),
            e.spec
                .builder
                .as_ref()
                .map(|b| b.image.clone())
                .unwrap_or_default(),
            e.spec.poolsize.to_string(),
            quantity_cell(&r.requests, "cpu"),
            quantity_cell(&r.limits, "cpu"),
            quantity_cell(&r.requests, "memory"),
            quantity_cell(&r.limits, "memory"),
            e.spec.allow_access_to_external_network.to_string(),
            e.spec.termination_grace_period.to_string(),
            e.metadata.namespace.clone(),
        ]);
    }
    t
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<()> {
    let scope = a.scope(ctx, NsKind::Environment);
    let envs: Vec<Environment> = ctx
        .api
        .list(scope.as_deref())
        .await
        .wrap("error listing environments")?;
    if let Some(f) = a.output {
        return print_structured(f, &envs);
    }
    env_table(&envs).print();
    Ok(())
}

/// Replace the `env` list of a container stub (creating the stub if needed).
fn set_container_env(
    slot: &mut Option<serde_json::Value>,
    name: &str,
    vars: &[String],
) -> anyhow::Result<()> {
    let vars = env_vars(vars)?;
    let c = slot.get_or_insert_with(|| json!({ "name": name }));
    if let Some(obj) = c.as_object_mut() {
        obj.insert("env".to_owned(), serde_json::Value::Array(vars));
    }
    Ok(())
}

async fn update(ctx: &Ctx, a: EnvUpdateArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Environment);
    let mut env: Environment = get_one(ctx, &ns, &a.name, "environment").await?;
    let s = &mut env.spec;
    if let Some(img) = &a.image {
        s.runtime.image = img.clone();
    }
    if let Some(p) = a.poolsize {
        if p < 1 {
            ctx.warn("poolsize is less than 1: no warm instances are kept, so every cold start creates one on demand");
        }
        s.poolsize = p;
    }
    if let Some(img) = &a.builder {
        let b = s.builder.get_or_insert_with(|| Builder {
            command: "build".to_owned(),
            container: Some(json!({ "name": "builder" })),
            podspec: Some(podspec_stub("builder")),
            ..Builder::default()
        });
        b.image = img.clone();
    }
    if let Some(cmd) = &a.buildcmd {
        match s.builder.as_mut() {
            Some(b) => b.command = cmd.clone(),
            None => bail!("the environment has no builder image: set one with --builder"),
        }
    }
    if !a.builder_env.is_empty() {
        match s.builder.as_mut() {
            Some(b) => set_container_env(&mut b.container, "builder", &a.builder_env)?,
            None => bail!("the environment has no builder image: set one with --builder"),
        }
    }
    if !a.runtime_env.is_empty() {
        set_container_env(&mut s.runtime.container, &a.name, &a.runtime_env)?;
    }
    if let Some(g) = a.graceperiod {
        s.termination_grace_period = g;
    }
    if let Some(ips) = &a.imagepullsecret {
        s.imagepullsecret = ips.clone();
    }
    if let Some(k) = a.keeparchive {
        s.keeparchive = k;
    }
    if let Some(x) = a.externalnetwork {
        s.allow_access_to_external_network = x;
    }
    a.resources.apply(&mut s.resources)?;
    apply_labels_annotations(&mut env.metadata, a.labels.as_deref(), &a.annotation)?;
    validate(&env)?;
    ctx.api
        .update(&env)
        .await
        .wrap("error updating environment")?;
    say(format!("environment '{}' updated", a.name));
    Ok(())
}

async fn delete(ctx: &Ctx, a: EnvDeleteArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Environment);
    check_name::<EnvironmentSpec>(&ns, &a.name)?;
    if !a.force {
        let fns: Vec<Function> = ctx
            .api
            .list(None)
            .await
            .wrap("error getting functions using the environment")?;
        if fns
            .iter()
            .any(|f| uses_env(&f.spec, &ns, &a.name, &f.metadata.namespace))
        {
            bail!("Environment is used by at least one function.");
        }
    }
    if delete_one::<EnvironmentSpec>(ctx, &ns, &a.name, a.ignorenotfound, a.force, "environment")
        .await?
    {
        say(format!("environment '{}' deleted", a.name));
    }
    Ok(())
}

fn uses_env(f: &FunctionSpec, env_ns: &str, env_name: &str, fn_ns: &str) -> bool {
    let ref_ns = if f.environment.namespace.is_empty() {
        fn_ns
    } else {
        &f.environment.namespace
    };
    f.environment.name == env_name && ref_ns == env_ns
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        c: EnvCommand,
    }

    fn create_args(argv: &[&str]) -> EnvCreateArgs {
        let mut full = vec!["t", "create"];
        full.extend_from_slice(argv);
        match T::try_parse_from(full).expect("parse").c {
            EnvCommand::Create(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn env_create_builds_the_fission_shape_with_stubs_and_defaults() {
        let a = create_args(&["--name", "nodejs", "--image", "ghcr.io/fission/node-env-22"]);
        let env = build_environment("default", &a).expect("env");
        let v = serde_json::to_value(&env).expect("json");
        assert_eq!(v["apiVersion"], "fission.io/v1");
        assert_eq!(v["kind"], "Environment");
        assert_eq!(v["spec"]["version"], 3);
        assert_eq!(v["spec"]["poolsize"], 3);
        assert_eq!(v["spec"]["terminationGracePeriod"], 360);
        assert_eq!(v["spec"]["runtime"]["container"], json!({"name": "nodejs"}));
        assert_eq!(
            v["spec"]["runtime"]["podspec"],
            json!({"containers": [{"name": "nodejs"}]})
        );
        assert_eq!(v["spec"]["resources"], json!({}));
        assert!(v["spec"].get("builder").is_none());
        validate(&env).expect("valid");
    }

    #[test]
    fn env_create_with_builder_defaults_the_build_command() {
        let a = create_args(&[
            "--name",
            "py",
            "--image",
            "fission/python-env",
            "--builder",
            "fission/python-builder",
        ]);
        let env = build_environment("default", &a).expect("env");
        let b = env.spec.builder.expect("builder");
        assert_eq!(b.command, "build");
        assert_eq!(b.container, Some(json!({"name": "builder"})));
    }

    #[test]
    fn env_create_resource_flags_become_requests_and_limits() {
        let a = create_args(&[
            "--name",
            "e",
            "--image",
            "i",
            "--mincpu",
            "100",
            "--maxmemory",
            "256",
            "--minmemory",
            "128",
        ]);
        let env = build_environment("default", &a).expect("env");
        assert_eq!(env.spec.resources.requests["cpu"], "100m");
        assert_eq!(env.spec.resources.limits["cpu"], "100m");
        assert_eq!(env.spec.resources.requests["memory"], "128Mi");
        assert_eq!(env.spec.resources.limits["memory"], "256Mi");
    }

    #[test]
    fn env_create_runtime_env_goes_into_the_container_stub() {
        let a = create_args(&[
            "--name",
            "e",
            "--image",
            "i",
            "--runtime-env",
            "A=1",
            "--runtime-env",
            "B=x=y",
        ]);
        let env = build_environment("default", &a).expect("env");
        assert_eq!(
            env.spec.runtime.container,
            Some(
                json!({"name": "e", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "x=y"}]})
            )
        );
    }

    #[test]
    fn env_list_table_has_fission_columns_with_name_first() {
        let a = create_args(&["--name", "nodejs", "--image", "img"]);
        let env = build_environment("default", &a).expect("env");
        let out = env_table(&[env]).render();
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "IMAGE",
                "BUILDER_IMAGE",
                "POOLSIZE",
                "MINCPU",
                "MAXCPU",
                "MINMEMORY",
                "MAXMEMORY",
                "EXTNET",
                "GRACETIME",
                "NAMESPACE"
            ]
        );
        let row = lines.next().expect("row");
        assert!(row.starts_with("nodejs "), "{row}");
        assert!(row.ends_with("360       default"), "{row}");
    }

    #[test]
    fn function_uses_environment_in_its_own_namespace_by_default() {
        let mut f = FunctionSpec::default();
        f.environment.name = "nodejs".into();
        assert!(uses_env(&f, "default", "nodejs", "default"));
        assert!(!uses_env(&f, "other", "nodejs", "default"));
    }
}
