//! One module per command group; shared plumbing here.

pub(crate) mod archives;
pub(crate) mod canary;
pub(crate) mod env;
pub(crate) mod function;
pub(crate) mod mqtrigger;
pub(crate) mod package;
pub(crate) mod route;
pub(crate) mod secret;
pub(crate) mod spec;
pub(crate) mod timetrigger;
pub(crate) mod version;
pub(crate) mod watch;

use std::fmt::Display;

use anyhow::bail;
use fission_core::{AnyResource, Object, Spec};
use serde::Serialize;

use crate::api::{Api, Wrap};
use crate::output::{self, OutputFormat};
use crate::{GlobalArgs, NsKind};

/// What every command gets: the API client and the global flags.
pub(crate) struct Ctx {
    pub(crate) api: Api,
    pub(crate) global: GlobalArgs,
}

impl Ctx {
    pub(crate) fn new(global: GlobalArgs) -> anyhow::Result<Self> {
        let api = Api::new(&global.server, global.verbosity >= 2)?
            .with_access(global.auth_token.as_deref(), global.ca_cert.as_deref())?;
        Ok(Self { api, global })
    }

    pub(crate) fn ns(&self, kind: NsKind) -> String {
        self.global.namespace_for(kind)
    }

    /// An informational line on stdout (suppressed by `--verbosity 0`).
    pub(crate) fn info(&self, msg: impl Display) {
        if self.global.verbosity >= 1 {
            output::print_stdout(format!("{msg}\n").as_bytes());
        }
    }

    /// `Warning: …` on stderr (suppressed by `--verbosity 0`).
    pub(crate) fn warn(&self, msg: impl Display) {
        if self.global.verbosity >= 1 {
            eprintln!("Warning: {msg}");
        }
    }
}

/// Message-queue types whose triggers this server consumes (`fission-triggers`).
pub(crate) const CONSUMED_MQ_TYPES: [&str; 4] = ["kafka", "rabbitmq", "redis", "nats-jetstream"];

/// Said when a message-queue trigger names a broker type this server does not consume.
pub(crate) fn warn_mq_type_not_consumed(ctx: &Ctx, mq_type: &str) {
    if CONSUMED_MQ_TYPES.contains(&mq_type) {
        return;
    }
    ctx.warn(format!(
        "this server does not consume '{mq_type}' message queues yet (it does: {}): the trigger is \
         stored (and applies unchanged to a Fission cluster) but will not call its function",
        CONSUMED_MQ_TYPES.join(", ")
    ));
}

/// A result line on stdout (`function 'x' created`), always printed.
pub(crate) fn say(msg: impl Display) {
    output::print_stdout(format!("{msg}\n").as_bytes());
}

/// `-A` and `-o` of list commands.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ListArgs {
    /// List objects in all namespaces
    #[arg(long = "all-namespaces", short = 'A')]
    pub all_namespaces: bool,
    /// Print the full objects as json or yaml instead of a table
    #[arg(long = "output", short = 'o', value_enum)]
    pub output: Option<OutputFormat>,
}

impl ListArgs {
    /// The namespace to list: `None` (all) with `-A`.
    pub(crate) fn scope(&self, ctx: &Ctx, kind: NsKind) -> Option<String> {
        if self.all_namespaces {
            None
        } else {
            Some(ctx.ns(kind))
        }
    }
}

/// `--spec` / `--dry` of create commands.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SpecArgs {
    /// Save to the spec directory instead of creating on the server (see 'fission spec')
    #[arg(long)]
    pub spec: bool,
    /// Print the object(s) as YAML instead of creating them
    #[arg(long)]
    pub dry: bool,
    /// Spec directory (for --spec)
    #[arg(long)]
    pub specdir: Option<String>,
    /// Ignore file in the spec directory (for --spec)
    #[arg(long)]
    pub specignore: Option<String>,
}

impl SpecArgs {
    /// Whether the command saves to the spec directory (`--spec` without `--dry`).
    pub(crate) fn saves(&self) -> bool {
        self.spec && !self.dry
    }

    /// Returns whether `--dry` is set. Commands that cannot save specs refuse `--spec`.
    pub(crate) fn dry_run(&self) -> anyhow::Result<bool> {
        if self.saves() {
            bail!(
                "--spec is not supported by this command yet; use --dry to print the object(s) as YAML"
            );
        }
        Ok(self.dry)
    }
}

/// Print objects as `---`-separated YAML (what `--dry` shows).
pub(crate) fn print_dry(docs: &[String]) -> anyhow::Result<()> {
    output::print_stdout(output::yaml_documents(docs).as_bytes());
    Ok(())
}

/// One object as a YAML document, keys in the object's field order.
pub(crate) fn to_yaml<T: Serialize>(v: &T) -> anyhow::Result<String> {
    output::render(OutputFormat::Yaml, v)
}

/// Delete one object, honouring `--ignorenotfound`. Returns whether something was deleted.
pub(crate) async fn delete_one<S: Spec>(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    ignore_not_found: bool,
    force: bool,
    what: &str,
) -> anyhow::Result<bool>
where
    AnyResource: From<Object<S>>,
{
    crate::util::check_name::<S>(ns, name)?;
    match ctx.api.delete::<S>(ns, name, force).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() && ignore_not_found => Ok(false),
        Err(e) => Err(e).wrap(&format!("error deleting {what}")),
    }
}

/// Read one object by name, checking the name first.
pub(crate) async fn get_one<S: Spec>(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    what: &str,
) -> anyhow::Result<Object<S>>
where
    AnyResource: From<Object<S>>,
{
    crate::util::check_name::<S>(ns, name)?;
    ctx.api
        .get::<S>(ns, name)
        .await
        .wrap(&format!("error getting {what}"))
}
