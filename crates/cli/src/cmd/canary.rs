//! `fission canary-config|canary …` (§3.6).

use anyhow::bail;
use clap::{Args, Subcommand};
use fission_core::resources::{
    CanaryConfig, CanaryConfigSpec, CanaryConfigStatus, FunctionSpec, HttpTrigger, HttpTriggerSpec,
    function_ref_type,
};
use fission_core::validation::parse_go_duration;

use super::{Ctx, ListArgs, delete_one, get_one, say};
use crate::NsKind;
use crate::api::Wrap;
use crate::output::{OutputFormat, Table, print_structured};
use crate::util::{check_name, validate};

/// `fission canary` subcommands.
#[derive(Debug, Subcommand)]
pub enum CanaryCommand {
    /// Create a canary config
    Create(CanaryCreateArgs),
    /// Show a canary config
    Get(CanaryGetArgs),
    /// List canary configs
    List(ListArgs),
    /// Update a canary config
    Update(CanaryUpdateArgs),
    /// Delete a canary config
    Delete(CanaryDeleteArgs),
}

/// `canary create` flags.
#[derive(Debug, Args)]
pub struct CanaryCreateArgs {
    /// Canary config name
    #[arg(long)]
    pub name: String,
    /// HTTP trigger whose weights are shifted
    #[arg(long)]
    pub httptrigger: String,
    /// New version of the function
    #[arg(long)]
    pub newfunction: String,
    /// Old version of the function
    #[arg(long)]
    pub oldfunction: String,
    /// Weight shifted to the new function per step
    #[arg(long = "increment-step", default_value_t = 20)]
    pub increment_step: i32,
    /// Time between steps (e.g. 2m, 30s)
    #[arg(long = "increment-interval", default_value = "2m")]
    pub increment_interval: String,
    /// Failure percentage of the new function that rolls back
    #[arg(long = "failure-threshold", default_value_t = 10)]
    pub failure_threshold: i32,
}

/// `canary get` flags.
#[derive(Debug, Args)]
pub struct CanaryGetArgs {
    /// Canary config name
    #[arg(long)]
    pub name: String,
    /// Print the full object as json or yaml
    #[arg(long = "output", short = 'o', value_enum)]
    pub output: Option<OutputFormat>,
}

/// `canary update` flags.
#[derive(Debug, Args)]
pub struct CanaryUpdateArgs {
    /// Canary config name
    #[arg(long)]
    pub name: String,
    /// Weight shifted to the new function per step
    #[arg(long = "increment-step")]
    pub increment_step: Option<i32>,
    /// Time between steps
    #[arg(long = "increment-interval")]
    pub increment_interval: Option<String>,
    /// Failure percentage of the new function that rolls back
    #[arg(long = "failure-threshold")]
    pub failure_threshold: Option<i32>,
}

/// `canary delete` flags.
#[derive(Debug, Args)]
pub struct CanaryDeleteArgs {
    /// Canary config name
    #[arg(long)]
    pub name: String,
    /// Do not fail when the canary config does not exist
    #[arg(long)]
    pub ignorenotfound: bool,
}

pub(crate) async fn run(ctx: &Ctx, cmd: CanaryCommand) -> anyhow::Result<()> {
    match cmd {
        CanaryCommand::Create(a) => create(ctx, a).await,
        CanaryCommand::Get(a) => get(ctx, a).await,
        CanaryCommand::List(a) => list(ctx, a).await,
        CanaryCommand::Update(a) => update(ctx, a).await,
        CanaryCommand::Delete(a) => delete(ctx, a).await,
    }
}

fn check_interval(s: &str) -> anyhow::Result<()> {
    if parse_go_duration(s).is_none() {
        bail!("error parsing time duration: '{s}' is not a duration like 30s, 2m, 1h");
    }
    Ok(())
}

/// The trigger must split traffic by weights between both functions (Fission's checks).
pub(crate) fn check_trigger(t: &HttpTrigger, newf: &str, oldf: &str) -> anyhow::Result<()> {
    if t.spec.functionref.ref_type != function_ref_type::FUNCTION_WEIGHTS {
        bail!(
            "canary config cannot be created for http triggers that do not reference functions by weights"
        );
    }
    let names = t.spec.functionref.function_names();
    for f in [newf, oldf] {
        if !names.iter().any(|n| n == f) {
            bail!("HTTP Trigger doesn't reference the function {f} in Canary Config");
        }
    }
    Ok(())
}

pub(crate) fn build(ns: &str, a: &CanaryCreateArgs) -> CanaryConfig {
    let spec = CanaryConfigSpec {
        trigger: a.httptrigger.clone(),
        newfunction: a.newfunction.clone(),
        oldfunction: a.oldfunction.clone(),
        weightincrement: a.increment_step,
        duration: a.increment_interval.clone(),
        failurethreshold: a.failure_threshold,
        failure_type: "status-code".to_owned(),
    };
    let mut c = CanaryConfig::new(ns, &a.name, spec);
    c.status = CanaryConfigStatus {
        status: "pending".to_owned(),
    };
    c
}

async fn create(ctx: &Ctx, a: CanaryCreateArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Canary);
    check_name::<CanaryConfigSpec>(&ns, &a.name)?;
    check_interval(&a.increment_interval)?;
    let c = build(&ns, &a);
    validate(&c)?;
    let t: HttpTrigger = ctx
        .api
        .get::<HttpTriggerSpec>(&ns, &a.httptrigger)
        .await
        .wrap("error finding http trigger referenced in the canary config")?;
    check_trigger(&t, &a.newfunction, &a.oldfunction)?;
    for f in [&a.newfunction, &a.oldfunction] {
        ctx.api.get::<FunctionSpec>(&ns, f).await.wrap(&format!(
            "error checking functions existence: function '{f}'"
        ))?;
    }
    ctx.api
        .create(&c)
        .await
        .wrap("error creating canary config")?;
    say(format!("canary config '{}' created", a.name));
    Ok(())
}

pub(crate) fn canary_table(cs: &[CanaryConfig]) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "TRIGGER",
        "FUNCTION-N",
        "FUNCTION-N-1",
        "WEIGHT-INCREMENT",
        "INTERVAL",
        "FAILURE-THRESHOLD",
        "FAILURE-TYPE",
        "STATUS",
        "NAMESPACE",
    ]);
    for c in cs {
        t.row(vec![
            c.metadata.name.clone(),
            c.spec.trigger.clone(),
            c.spec.newfunction.clone(),
            c.spec.oldfunction.clone(),
            c.spec.weightincrement.to_string(),
            c.spec.duration.clone(),
            c.spec.failurethreshold.to_string(),
            c.spec.failure_type.clone(),
            c.status.status.clone(),
            c.metadata.namespace.clone(),
        ]);
    }
    t
}

async fn get(ctx: &Ctx, a: CanaryGetArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Canary);
    let c: CanaryConfig = get_one(ctx, &ns, &a.name, "canary config").await?;
    if let Some(f) = a.output {
        return print_structured(f, &c);
    }
    canary_table(&[c]).print();
    Ok(())
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<()> {
    let scope = a.scope(ctx, NsKind::Canary);
    let cs: Vec<CanaryConfig> = ctx
        .api
        .list(scope.as_deref())
        .await
        .wrap("error listing canary config")?;
    if let Some(f) = a.output {
        return print_structured(f, &cs);
    }
    canary_table(&cs).print();
    Ok(())
}

async fn update(ctx: &Ctx, a: CanaryUpdateArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Canary);
    let mut c: CanaryConfig = get_one(ctx, &ns, &a.name, "canary config").await?;
    if let Some(s) = a.increment_step {
        c.spec.weightincrement = s;
    }
    if let Some(i) = &a.increment_interval {
        check_interval(i)?;
        c.spec.duration = i.clone();
    }
    if let Some(f) = a.failure_threshold {
        c.spec.failurethreshold = f;
    }
    validate(&c)?;
    ctx.api
        .update(&c)
        .await
        .wrap("error updating canary config")?;
    say(format!("canary config '{}' updated", a.name));
    Ok(())
}

async fn delete(ctx: &Ctx, a: CanaryDeleteArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Canary);
    if delete_one::<CanaryConfigSpec>(ctx, &ns, &a.name, a.ignorenotfound, false, "canary config")
        .await?
    {
        say(format!("canary config '{}' deleted", a.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::route::function_ref;

    fn args() -> CanaryCreateArgs {
        CanaryCreateArgs {
            name: "c1".into(),
            httptrigger: "r".into(),
            newfunction: "v2".into(),
            oldfunction: "v1".into(),
            increment_step: 20,
            increment_interval: "2m".into(),
            failure_threshold: 10,
        }
    }

    #[test]
    fn canary_config_is_pending_with_fission_defaults() {
        let c = build("default", &args());
        let v = serde_json::to_value(&c).expect("json");
        assert_eq!(v["spec"]["weightincrement"], 20);
        assert_eq!(v["spec"]["duration"], "2m");
        assert_eq!(v["spec"]["failureType"], "status-code");
        assert_eq!(v["status"]["status"], "pending");
        validate(&c).expect("valid");
    }

    #[test]
    fn canary_needs_a_weighted_trigger_over_both_functions() {
        let mut t = HttpTrigger::new("default", "r", HttpTriggerSpec::default());
        t.spec.functionref = function_ref(&["v1".into()], &[]).expect("ref");
        assert!(
            check_trigger(&t, "v2", "v1")
                .expect_err("must fail")
                .to_string()
                .contains("do not reference functions by weights")
        );
        t.spec.functionref = function_ref(&["v1".into(), "v2".into()], &[100, 0]).expect("ref");
        check_trigger(&t, "v2", "v1").expect("ok");
        assert!(check_trigger(&t, "v3", "v1").is_err());
        assert!(check_interval("soon").is_err());
    }
}
