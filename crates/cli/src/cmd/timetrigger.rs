//! `fission timetrigger|tt|timer …` (§3.6).

use anyhow::bail;
use clap::{Args, Subcommand};
use fission_core::resources::{
    FunctionReference, FunctionSpec, HTTP_METHODS, TimeTrigger, TimeTriggerSpec,
};

use super::{Ctx, ListArgs, SpecArgs, delete_one, get_one, print_dry, say, to_yaml};
use crate::NsKind;
use crate::api::Wrap;
use crate::output::{OutputFormat, Table, print_structured};
use crate::util::{check_name, random_name, validate};

const CRON_HINT: &str =
    "need a cron spec like '30 * * * *', '@every 1h30m', or '@hourly'; use --cron";

/// `fission tt` subcommands.
#[derive(Debug, Subcommand)]
pub enum TtCommand {
    /// Create a time trigger
    Create(TtCreateArgs),
    /// Show a time trigger
    Get(TtGetArgs),
    /// List time triggers
    List(ListArgs),
    /// Update a time trigger
    Update(TtUpdateArgs),
    /// Delete a time trigger
    Delete(TtDeleteArgs),
    /// Show the next fire times of a cron spec
    #[command(name = "showschedule", visible_alias = "show")]
    ShowSchedule(TtShowScheduleArgs),
}

/// `tt showschedule` flags.
#[derive(Debug, Args)]
pub struct TtShowScheduleArgs {
    /// Schedule: '30 * * * *', '0 30 * * * *' (with seconds), '@every 1h30m', '@hourly'
    #[arg(long)]
    pub cron: Option<String>,
    /// How many fire times to show
    #[arg(long, default_value_t = 1)]
    pub round: usize,
}

/// `tt create` flags.
#[derive(Debug, Args)]
pub struct TtCreateArgs {
    /// Trigger name (a UUID is generated when omitted)
    #[arg(long)]
    pub name: Option<String>,
    /// Function to call
    #[arg(long)]
    pub function: Option<String>,
    /// Schedule: '30 * * * *', '0 30 * * * *' (with seconds), '@every 1h30m', '@hourly'
    #[arg(long)]
    pub cron: Option<String>,
    /// HTTP method used to call the function
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Sub-path appended to the function URL
    #[arg(long, default_value = "/")]
    pub subpath: String,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// `tt get` flags.
#[derive(Debug, Args)]
pub struct TtGetArgs {
    /// Trigger name
    #[arg(long)]
    pub name: String,
    /// Print the full object as json or yaml
    #[arg(long = "output", short = 'o', value_enum)]
    pub output: Option<OutputFormat>,
}

/// `tt update` flags.
#[derive(Debug, Args)]
pub struct TtUpdateArgs {
    /// Trigger name
    #[arg(long)]
    pub name: String,
    /// Function to call
    #[arg(long)]
    pub function: Option<String>,
    /// Schedule
    #[arg(long)]
    pub cron: Option<String>,
    /// HTTP method used to call the function
    #[arg(long)]
    pub method: Option<String>,
    /// Sub-path appended to the function URL
    #[arg(long)]
    pub subpath: Option<String>,
}

/// `tt delete` flags.
#[derive(Debug, Args)]
pub struct TtDeleteArgs {
    /// Trigger name
    #[arg(long)]
    pub name: String,
    /// Do not fail when the trigger does not exist
    #[arg(long)]
    pub ignorenotfound: bool,
}

pub(crate) async fn run(ctx: &Ctx, cmd: TtCommand) -> anyhow::Result<()> {
    match cmd {
        TtCommand::Create(a) => create(ctx, a).await,
        TtCommand::Get(a) => get(ctx, a).await,
        TtCommand::List(a) => list(ctx, a).await,
        TtCommand::Update(a) => update(ctx, a).await,
        TtCommand::Delete(a) => delete(ctx, a).await,
        TtCommand::ShowSchedule(a) => {
            print!("{}", show_schedule(&a, chrono::Local::now())?);
            Ok(())
        }
    }
}

/// `tt showschedule`'s output, as Fission prints it: the current time and the next `round`
/// fire times, RFC 3339.
fn show_schedule<Tz: chrono::TimeZone>(
    a: &TtShowScheduleArgs,
    now: chrono::DateTime<Tz>,
) -> anyhow::Result<String>
where
    Tz::Offset: std::fmt::Display,
{
    let Some(cron) = a.cron.as_deref().filter(|c| !c.trim().is_empty()) else {
        bail!(CRON_HINT)
    };
    let schedule = fission_triggers::Schedule::parse(cron)?;
    let rfc3339 = |t: &chrono::DateTime<Tz>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut out = format!("Current Server Time: \t{}\n", rfc3339(&now));
    for (i, t) in schedule.upcoming(&now, a.round).iter().enumerate() {
        out.push_str(&format!("Next {} invocation: \t{}\n", i + 1, rfc3339(t)));
    }
    Ok(out)
}

fn method(m: &str) -> anyhow::Result<String> {
    let up = m.trim().to_ascii_uppercase();
    if !HTTP_METHODS.contains(&up.as_str()) {
        bail!("invalid or unsupported HTTP Method {m}");
    }
    Ok(up)
}

fn subpath(s: &str) -> String {
    if s.starts_with('/') {
        s.to_owned()
    } else {
        format!("/{s}")
    }
}

pub(crate) fn build(ns: &str, name: &str, a: &TtCreateArgs) -> anyhow::Result<TimeTrigger> {
    let Some(function) = a.function.as_deref().filter(|f| !f.is_empty()) else {
        bail!("need --function argument");
    };
    let Some(cron) = a.cron.as_deref().filter(|c| !c.trim().is_empty()) else {
        bail!(CRON_HINT)
    };
    let spec = TimeTriggerSpec {
        cron: cron.trim().to_owned(),
        functionref: FunctionReference::by_name(function),
        method: method(&a.method)?,
        subpath: subpath(&a.subpath),
    };
    Ok(TimeTrigger::new(ns, name, spec))
}

async fn create(ctx: &Ctx, a: TtCreateArgs) -> anyhow::Result<()> {
    let dry = a.spec.dry_run()?;
    let ns = ctx.ns(NsKind::Trigger);
    let name = a.name.clone().unwrap_or_else(random_name);
    check_name::<TimeTriggerSpec>(&ns, &name)?;
    let t = build(&ns, &name, &a)?;
    validate(&t)?;
    if dry {
        return print_dry(&[to_yaml(&t)?]);
    }
    if ctx
        .api
        .get_opt::<FunctionSpec>(&ns, &t.spec.functionref.name)
        .await
        .wrap("error creating time trigger")?
        .is_none()
    {
        ctx.warn(format!(
            "function '{}' does not exist in namespace '{ns}'",
            t.spec.functionref.name
        ));
    }
    ctx.api
        .create(&t)
        .await
        .wrap("error creating time trigger")?;
    say(format!("trigger '{name}' created"));
    Ok(())
}

pub(crate) fn tt_table(tts: &[TimeTrigger]) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "CRON",
        "FUNCTION_NAME",
        "METHOD",
        "SUBPATH",
        "NAMESPACE",
    ]);
    for tt in tts {
        t.row(vec![
            tt.metadata.name.clone(),
            tt.spec.cron.clone(),
            tt.spec.functionref.name.clone(),
            tt.spec.method.clone(),
            tt.spec.subpath.clone(),
            tt.metadata.namespace.clone(),
        ]);
    }
    t
}

async fn get(ctx: &Ctx, a: TtGetArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Trigger);
    let t: TimeTrigger = get_one(ctx, &ns, &a.name, "time trigger").await?;
    if let Some(f) = a.output {
        return print_structured(f, &t);
    }
    tt_table(&[t]).print();
    print_trigger_status(ctx, "time", &ns, &a.name).await
}

/// The server's record of a trigger's deliveries, below its table in `get`: how many fires,
/// the last one, the last error. Nothing when the server does not run the trigger.
pub(crate) async fn print_trigger_status(
    ctx: &Ctx,
    kind: &str,
    ns: &str,
    name: &str,
) -> anyhow::Result<()> {
    let Some(s) = ctx
        .api
        .trigger_status(kind, ns, name)
        .await
        .wrap("error reading trigger status")?
    else {
        return Ok(());
    };
    print!("{}", render_status(&s));
    Ok(())
}

fn render_status(s: &serde_json::Value) -> String {
    let n = |k: &str| s.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let text = |k: &str| s.get(k).and_then(serde_json::Value::as_str);
    let mut out = format!(
        "\nFIRED: {} (succeeded {}, failed {}, retried {}, skipped {})\n",
        n("fired"),
        n("succeeded"),
        n("failed"),
        n("retried"),
        n("skipped")
    );
    out.push_str(&format!(
        "LAST FIRE: {}\n",
        text("lastFire").unwrap_or("never")
    ));
    match (text("lastErrorTime"), text("lastError")) {
        (Some(at), Some(e)) => out.push_str(&format!("LAST ERROR: {at} {e}\n")),
        (None, Some(e)) => out.push_str(&format!("LAST ERROR: {e}\n")),
        _ => out.push_str("LAST ERROR: none\n"),
    }
    out
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<()> {
    let scope = a.scope(ctx, NsKind::Trigger);
    let tts: Vec<TimeTrigger> = ctx
        .api
        .list(scope.as_deref())
        .await
        .wrap("error listing time triggers")?;
    if let Some(f) = a.output {
        return print_structured(f, &tts);
    }
    tt_table(&tts).print();
    Ok(())
}

async fn update(ctx: &Ctx, a: TtUpdateArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Trigger);
    let mut t: TimeTrigger = get_one(ctx, &ns, &a.name, "time trigger").await?;
    if let Some(c) = &a.cron {
        if c.trim().is_empty() {
            bail!(CRON_HINT);
        }
        t.spec.cron = c.trim().to_owned();
    }
    if let Some(f) = &a.function {
        t.spec.functionref = FunctionReference::by_name(f);
    }
    if let Some(m) = &a.method {
        t.spec.method = method(m)?;
    }
    if let Some(s) = &a.subpath {
        t.spec.subpath = subpath(s);
    }
    validate(&t)?;
    ctx.api
        .update(&t)
        .await
        .wrap("error updating time trigger")?;
    say(format!("trigger '{}' updated", a.name));
    Ok(())
}

async fn delete(ctx: &Ctx, a: TtDeleteArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Trigger);
    if delete_one::<TimeTriggerSpec>(ctx, &ns, &a.name, a.ignorenotfound, false, "time trigger")
        .await?
    {
        say(format!("trigger '{}' deleted", a.name));
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
        c: TtCommand,
    }

    fn create_args(argv: &[&str]) -> TtCreateArgs {
        let mut full = vec!["t", "create"];
        full.extend_from_slice(argv);
        match T::try_parse_from(full).expect("parse").c {
            TtCommand::Create(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn time_trigger_defaults_to_post_and_root_subpath() {
        let t = build(
            "default",
            "every-minute",
            &create_args(&["--function", "hello", "--cron", "@every 1m"]),
        )
        .expect("tt");
        assert_eq!(
            serde_json::to_value(&t.spec).expect("json"),
            json!({"cron": "@every 1m", "functionref": {"type": "name", "name": "hello", "functionweights": null}, "method": "POST", "subpath": "/"})
        );
        validate(&t).expect("valid");
    }

    #[test]
    fn missing_cron_gives_fission_hint() {
        let e =
            build("default", "x", &create_args(&["--function", "hello"])).expect_err("must fail");
        assert_eq!(e.to_string(), CRON_HINT);
    }

    #[test]
    fn showschedule_prints_server_time_and_next_fires() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:15:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let a = TtShowScheduleArgs {
            cron: Some("@every 1h30m".to_owned()),
            round: 2,
        };
        assert_eq!(
            show_schedule(&a, now).expect("schedule"),
            "Current Server Time: \t2026-01-01T10:15:00Z\nNext 1 invocation: \t2026-01-01T11:45:00Z\nNext 2 invocation: \t2026-01-01T13:15:00Z\n"
        );
    }

    #[test]
    fn showschedule_refuses_bad_cron() {
        let a = TtShowScheduleArgs {
            cron: Some("* * *".to_owned()),
            round: 1,
        };
        let e = show_schedule(&a, chrono::Utc::now()).expect_err("must fail");
        assert!(e.to_string().contains("invalid cron spec '* * *'"), "{e}");
        let none = TtShowScheduleArgs {
            cron: None,
            round: 1,
        };
        assert_eq!(
            show_schedule(&none, chrono::Utc::now())
                .expect_err("must fail")
                .to_string(),
            CRON_HINT
        );
    }

    #[test]
    fn status_shows_counts_last_fire_and_last_error() {
        let s = json!({"fired": 3, "succeeded": 2, "failed": 1, "retried": 0, "skipped": 4,
            "lastFire": "2026-01-01T10:00:00.000Z", "lastError": "function answered 500: boom",
            "lastErrorTime": "2026-01-01T09:59:00.000Z"});
        assert_eq!(
            render_status(&s),
            "\nFIRED: 3 (succeeded 2, failed 1, retried 0, skipped 4)\nLAST FIRE: 2026-01-01T10:00:00.000Z\nLAST ERROR: 2026-01-01T09:59:00.000Z function answered 500: boom\n"
        );
    }

    #[test]
    fn tt_table_has_fission_columns_and_the_namespace() {
        let t = build(
            "default",
            "t1",
            &create_args(&[
                "--function",
                "f",
                "--cron",
                "*/5 * * * *",
                "--method",
                "get",
            ]),
        )
        .expect("tt");
        let out = tt_table(&[t]).render();
        assert_eq!(
            out,
            "NAME CRON        FUNCTION_NAME METHOD SUBPATH NAMESPACE\nt1   */5 * * * * f             GET    /       default\n"
        );
    }
}
