//! `fission watch|w …` (§3.6): Kubernetes watch triggers.

use anyhow::bail;
use clap::{Args, Subcommand};
use fission_core::resources::{
    FunctionReference, FunctionSpec, KubernetesWatchTrigger, KubernetesWatchTriggerSpec,
};

use super::{Ctx, ListArgs, SpecArgs, delete_one, get_one, print_dry, say, to_yaml};
use crate::NsKind;
use crate::api::Wrap;
use crate::output::{OutputFormat, Table, go_map, print_structured};
use crate::util::{check_name, random_name, validate};

/// `fission watch` subcommands.
#[derive(Debug, Subcommand)]
pub enum WatchCommand {
    /// Create a watch trigger
    Create(WatchCreateArgs),
    /// Show a watch trigger
    Get(WatchGetArgs),
    /// List watch triggers
    List(ListArgs),
    /// Delete a watch trigger
    Delete(WatchDeleteArgs),
}

/// `watch create` flags.
#[derive(Debug, Args)]
pub struct WatchCreateArgs {
    /// Trigger name (a UUID is generated when omitted)
    #[arg(long)]
    pub name: Option<String>,
    /// Function to call
    #[arg(long)]
    pub function: Option<String>,
    /// Object type to watch: pod, service, replicationcontroller, job
    #[arg(long = "type", default_value = "pod")]
    pub object_type: String,
    /// Namespace of the trigger and of the watched objects (default: --namespace)
    #[arg(long = "ns")]
    pub ns: Option<String>,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// `watch get` flags.
#[derive(Debug, Args)]
pub struct WatchGetArgs {
    /// Trigger name
    #[arg(long)]
    pub name: String,
    /// Print the full object as json or yaml
    #[arg(long = "output", short = 'o', value_enum)]
    pub output: Option<OutputFormat>,
}

/// `watch delete` flags.
#[derive(Debug, Args)]
pub struct WatchDeleteArgs {
    /// Trigger name
    #[arg(long)]
    pub name: String,
    /// Do not fail when the trigger does not exist
    #[arg(long)]
    pub ignorenotfound: bool,
}

pub(crate) async fn run(ctx: &Ctx, cmd: WatchCommand) -> anyhow::Result<()> {
    match cmd {
        WatchCommand::Create(a) => create(ctx, a).await,
        WatchCommand::Get(a) => get(ctx, a).await,
        WatchCommand::List(a) => list(ctx, a).await,
        WatchCommand::Delete(a) => delete(ctx, a).await,
    }
}

/// The same namespace is used for the trigger and as the watched namespace (as in Fission).
pub(crate) fn build(
    ns: &str,
    name: &str,
    a: &WatchCreateArgs,
) -> anyhow::Result<KubernetesWatchTrigger> {
    let Some(function) = a.function.as_deref().filter(|f| !f.is_empty()) else {
        bail!("need --function argument");
    };
    let spec = KubernetesWatchTriggerSpec {
        namespace: ns.to_owned(),
        object_type: a.object_type.to_ascii_lowercase(),
        labelselector: None,
        functionref: FunctionReference::by_name(function),
    };
    Ok(KubernetesWatchTrigger::new(ns, name, spec))
}

async fn create(ctx: &Ctx, a: WatchCreateArgs) -> anyhow::Result<()> {
    let dry = a.spec.dry_run()?;
    let ns =
        a.ns.clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| ctx.ns(NsKind::Trigger));
    let name = a.name.clone().unwrap_or_else(random_name);
    check_name::<KubernetesWatchTriggerSpec>(&ns, &name)?;
    let w = build(&ns, &name, &a)?;
    validate(&w)?;
    if dry {
        return print_dry(&[to_yaml(&w)?]);
    }
    if ctx
        .api
        .get_opt::<FunctionSpec>(&ns, &w.spec.functionref.name)
        .await
        .wrap("error creating watch")?
        .is_none()
    {
        ctx.warn(format!(
            "function '{}' does not exist in namespace '{ns}'",
            w.spec.functionref.name
        ));
    }
    ctx.api.create(&w).await.wrap("error creating watch")?;
    say(format!("trigger '{name}' created"));
    Ok(())
}

pub(crate) fn watch_table(ws: &[KubernetesWatchTrigger]) -> Table {
    let mut t = Table::new(&["NAME", "NAMESPACE", "OBJTYPE", "LABELS", "FUNCTION_NAME"]);
    let empty = Default::default();
    for w in ws {
        t.row(vec![
            w.metadata.name.clone(),
            w.spec.namespace.clone(),
            w.spec.object_type.clone(),
            go_map(w.spec.labelselector.as_ref().unwrap_or(&empty)),
            w.spec.functionref.name.clone(),
        ]);
    }
    t
}

async fn get(ctx: &Ctx, a: WatchGetArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Trigger);
    let w: KubernetesWatchTrigger = get_one(ctx, &ns, &a.name, "watch").await?;
    if let Some(f) = a.output {
        return print_structured(f, &w);
    }
    watch_table(&[w]).print();
    super::timetrigger::print_trigger_status(ctx, "watch", &ns, &a.name).await
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<()> {
    let scope = a.scope(ctx, NsKind::Trigger);
    let ws: Vec<KubernetesWatchTrigger> = ctx
        .api
        .list(scope.as_deref())
        .await
        .wrap("error listing watches")?;
    if let Some(f) = a.output {
        return print_structured(f, &ws);
    }
    watch_table(&ws).print();
    Ok(())
}

async fn delete(ctx: &Ctx, a: WatchDeleteArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Trigger);
    if delete_one::<KubernetesWatchTriggerSpec>(ctx, &ns, &a.name, a.ignorenotfound, false, "watch")
        .await?
    {
        say(format!("trigger '{}' deleted", a.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn watch_uses_its_namespace_as_the_watched_namespace() {
        let a = WatchCreateArgs {
            name: None,
            function: Some("hello".into()),
            object_type: "Pod".into(),
            ns: None,
            spec: SpecArgs::default(),
        };
        let w = build("ns1", "pods", &a).expect("watch");
        assert_eq!(
            serde_json::to_value(&w.spec).expect("json"),
            json!({"namespace": "ns1", "type": "pod", "labelselector": null, "functionref": {"type": "name", "name": "hello", "functionweights": null}})
        );
        validate(&w).expect("valid");
        let row = watch_table(&[w]).render();
        assert_eq!(
            row.lines().nth(1),
            Some("pods ns1       pod     map[]  hello")
        );
    }
}
