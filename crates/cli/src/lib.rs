//! The client side of the `fission` command line.
//!
//! The binary crate parses [`GlobalArgs`] and a [`Command`] with clap and hands both to [`run`],
//! which talks to the controller REST API (`/v2/...`) at `--server` and prints what Fission's CLI
//! prints. Errors are returned, never printed here: the binary prints `Error: {:#}` and exits 1,
//! so every message is written to read well after that prefix (`error creating function: …`).
//!
//! Output conventions (kept consistent across commands):
//! * success lines (`function 'x' created`) and requested data (tables, `-o json|yaml`, code
//!   bytes) go to **stdout**;
//! * informational lines Fission prints (`poolsize setting default to 3`) go to stdout unless
//!   `--verbosity 0`;
//! * `Warning: …` lines go to **stderr** (unless `--verbosity 0`), so stdout stays parseable for
//!   `-o json`, `fn get` and tables;
//! * `--verbosity 2` additionally traces every HTTP request to stderr.

mod api;
mod archive;
mod cmd;
mod goflags;
mod output;
mod util;

use clap::{Args, Subcommand};

pub use cmd::canary::CanaryCommand;
pub use cmd::env::EnvCommand;
pub use cmd::function::FnCommand;
pub use cmd::mqtrigger::MqtCommand;
pub use cmd::package::PkgCommand;
pub use cmd::route::RouteCommand;
pub use cmd::spec::SpecCommand;
pub use cmd::timetrigger::TtCommand;
pub use cmd::watch::WatchCommand;
pub use goflags::go_style_bools;
pub use output::OutputFormat;

/// Entry points for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Read one spec file's text as `fission spec` does: returns (objects, archives, errors).
    pub fn parse_spec_file(text: &str) -> (usize, usize, usize) {
        crate::cmd::spec::parse_spec_text(text)
    }
}

/// Default controller address (`fission server` listens here).
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:31313";

/// The help heading of the flags every command accepts, so each command's own come first.
const GLOBAL_OPTIONS: &str = "Global options";

/// Flags accepted by every command.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Address of the fission server (controller API)
    #[arg(long = "server", env = "FISSION_URL", default_value = DEFAULT_SERVER_URL, global = true, help_heading = GLOBAL_OPTIONS)]
    pub server: String,

    /// Namespace of the objects [env: FISSION_DEFAULT_NAMESPACE] [default: default]
    #[arg(long = "namespace", short = 'n', global = true, help_heading = GLOBAL_OPTIONS)]
    pub namespace: Option<String>,

    /// 0 = quiet, 1 = default, 2 = verbose (traces HTTP requests)
    #[arg(long = "verbosity", short = 'v', default_value_t = 1, global = true, help_heading = GLOBAL_OPTIONS)]
    pub verbosity: u8,

    /// Deprecated: namespace of functions (use --namespace)
    #[arg(long = "fnNamespace", alias = "fns", hide = true, global = true, help_heading = GLOBAL_OPTIONS)]
    pub fn_namespace: Option<String>,

    /// Deprecated: namespace of environments (use --namespace)
    #[arg(long = "envNamespace", alias = "envns", hide = true, global = true, help_heading = GLOBAL_OPTIONS)]
    pub env_namespace: Option<String>,

    /// Deprecated: namespace of packages (use --namespace)
    #[arg(long = "pkgNamespace", alias = "pkgns", hide = true, global = true, help_heading = GLOBAL_OPTIONS)]
    pub pkg_namespace: Option<String>,

    /// Deprecated: namespace of triggers (use --namespace)
    #[arg(long = "triggerNamespace", alias = "triggerns", hide = true, global = true, help_heading = GLOBAL_OPTIONS)]
    pub trigger_namespace: Option<String>,

    /// Kubernetes context (accepted for compatibility; this CLI talks to --server)
    #[arg(long = "kube-context", hide = true, global = true, help_heading = GLOBAL_OPTIONS)]
    pub kube_context: Option<String>,

    /// Deprecated: namespace of canary configs (use --namespace)
    #[arg(long = "canaryNamespace", alias = "canaryns", hide = true, global = true, help_heading = GLOBAL_OPTIONS)]
    pub canary_namespace: Option<String>,

    /// API token of the server (sent as 'Authorization: Bearer'; the server's --auth-token or <data-dir>/auth-token)
    #[arg(long = "auth-token", env = "FISSION_AUTH_TOKEN", hide_env_values = true, global = true, help_heading = GLOBAL_OPTIONS)]
    pub auth_token: Option<String>,

    /// PEM file of CA certificates trusted for an https --server, besides the built-in roots
    #[arg(long = "ca-cert", env = "FISSION_CA_CERT", global = true, help_heading = GLOBAL_OPTIONS)]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl Default for GlobalArgs {
    fn default() -> Self {
        Self {
            server: DEFAULT_SERVER_URL.to_owned(),
            namespace: None,
            verbosity: 1,
            fn_namespace: None,
            env_namespace: None,
            pkg_namespace: None,
            trigger_namespace: None,
            canary_namespace: None,
            kube_context: None,
            auth_token: None,
            ca_cert: None,
        }
    }
}

/// Which deprecated per-kind namespace flag applies to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NsKind {
    Environment,
    Function,
    Package,
    Trigger,
    Canary,
}

impl GlobalArgs {
    /// The namespace a command acts in: `--namespace` > the kind's deprecated flag >
    /// `$FISSION_DEFAULT_NAMESPACE` > `default`.
    pub(crate) fn namespace_for(&self, kind: NsKind) -> String {
        let deprecated = match kind {
            NsKind::Environment => &self.env_namespace,
            NsKind::Function => &self.fn_namespace,
            NsKind::Package => &self.pkg_namespace,
            NsKind::Trigger => &self.trigger_namespace,
            NsKind::Canary => &self.canary_namespace,
        };
        let from_env = std::env::var("FISSION_DEFAULT_NAMESPACE").ok();
        resolve_namespace(
            self.namespace.as_deref(),
            deprecated.as_deref(),
            from_env.as_deref(),
        )
    }
}

impl GlobalArgs {
    /// The namespace of the environment an object in `own` refers to: `--envNamespace`
    /// (`--envns`) when given, which lets a function or package use an environment of another
    /// namespace, as Fission's deprecated flag does; else the object's own namespace.
    pub(crate) fn env_ref_namespace(&self, own: &str) -> String {
        match self.env_namespace.as_deref().map(str::trim) {
            Some(ns) if !ns.is_empty() => ns.to_owned(),
            _ => own.to_owned(),
        }
    }
}

/// Namespace precedence, separated from the process environment for testing.
fn resolve_namespace(flag: Option<&str>, deprecated: Option<&str>, env: Option<&str>) -> String {
    [flag, deprecated, env]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or(fission_core::DEFAULT_NAMESPACE)
        .to_owned()
}

/// The client commands of `fission`.
///
/// The argument structs are boxed so that `Command` stays small inside the binary's own
/// subcommand enum.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, update and manage environments
    #[command(name = "environment", visible_alias = "env", subcommand)]
    Environment(Box<EnvCommand>),
    /// Create, update and manage functions
    #[command(name = "function", visible_alias = "fn", subcommand)]
    Function(Box<FnCommand>),
    /// Create, update and manage packages
    #[command(name = "package", visible_alias = "pkg", subcommand)]
    Package(Box<PkgCommand>),
    /// Create, update and manage HTTP triggers (routes)
    #[command(name = "httptrigger", visible_aliases = ["route", "ht"], subcommand)]
    HttpTrigger(Box<RouteCommand>),
    /// Create, update and manage time triggers
    #[command(name = "timetrigger", visible_aliases = ["tt", "timer"], subcommand)]
    TimeTrigger(Box<TtCommand>),
    /// Create, update and manage kube watcher triggers
    #[command(name = "watch", visible_alias = "w", subcommand)]
    Watch(Box<WatchCommand>),
    /// Create, update and manage message queue triggers
    #[command(name = "mqtrigger", visible_alias = "mqt", subcommand)]
    MqTrigger(Box<MqtCommand>),
    /// Create, update and manage canary configs
    #[command(name = "canary-config", visible_alias = "canary", subcommand)]
    Canary(Box<CanaryCommand>),
    /// Create, update and manage secrets (mounted at /secrets/<ns>/<name>/<key>)
    #[command(name = "secret", subcommand)]
    Secret(Box<cmd::secret::ValuesCommand>),
    /// Create, update and manage config maps (mounted at /configs/<ns>/<name>/<key>)
    #[command(name = "configmap", visible_alias = "cm", subcommand)]
    ConfigMap(Box<cmd::secret::ValuesCommand>),
    /// Upload, list, download and delete archives in the server's archive store
    #[command(name = "archive", visible_alias = "ar", subcommand)]
    Archive(Box<cmd::archives::ArchiveCommand>),
    /// Declarative specs: save, validate, apply and destroy a directory of YAML objects
    #[command(subcommand)]
    Spec(Box<SpecCommand>),
    /// Show the client and server versions
    Version,
}

/// Run one client command against the server named in `global`.
pub async fn run(global: GlobalArgs, cmd: Command) -> anyhow::Result<()> {
    let ctx = cmd::Ctx::new(global)?;
    match cmd {
        Command::Environment(c) => cmd::env::run(&ctx, *c).await,
        Command::Function(c) => cmd::function::run(&ctx, *c).await,
        Command::Package(c) => cmd::package::run(&ctx, *c).await,
        Command::HttpTrigger(c) => cmd::route::run(&ctx, *c).await,
        Command::TimeTrigger(c) => cmd::timetrigger::run(&ctx, *c).await,
        Command::Watch(c) => cmd::watch::run(&ctx, *c).await,
        Command::MqTrigger(c) => cmd::mqtrigger::run(&ctx, *c).await,
        Command::Canary(c) => cmd::canary::run(&ctx, *c).await,
        Command::Spec(c) => cmd::spec::run(&ctx, *c).await,
        Command::Archive(c) => cmd::archives::run(&ctx, *c).await,
        Command::Secret(c) => cmd::secret::run(&ctx, cmd::secret::Values::Secret, *c).await,
        Command::ConfigMap(c) => cmd::secret::run(&ctx, cmd::secret::Values::ConfigMap, *c).await,
        Command::Version => cmd::version::run(&ctx).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The shape the `fission` binary uses.
    #[derive(Parser, Debug)]
    #[command(name = "fission", version)]
    struct Top {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        cmd: TopCmd,
    }

    #[derive(Subcommand, Debug)]
    enum TopCmd {
        Server,
        #[command(flatten)]
        Cli(Command),
    }

    #[test]
    fn command_tree_is_well_formed() {
        Top::command().debug_assert();
    }

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let top = Top::try_parse_from([
            "fission",
            "fn",
            "list",
            "-n",
            "ns1",
            "--server",
            "http://x:1",
            "-v",
            "2",
        ])
        .expect("parse");
        assert_eq!(top.global.namespace.as_deref(), Some("ns1"));
        assert_eq!(top.global.server, "http://x:1");
        assert_eq!(top.global.verbosity, 2);
    }

    #[test]
    fn env_create_version_flag_does_not_clash_with_the_binary_version_flag() {
        let top = Top::try_parse_from([
            "fission",
            "env",
            "create",
            "--name",
            "e",
            "--image",
            "i",
            "--version",
            "2",
        ])
        .expect("parse");
        let TopCmd::Cli(Command::Environment(env)) = top.cmd else {
            panic!("not env")
        };
        let EnvCommand::Create(a) = *env else {
            panic!("not create")
        };
        assert_eq!(a.version, 2);
    }

    #[test]
    fn deprecated_namespace_flags_are_accepted_with_short_aliases() {
        let top = Top::try_parse_from(["fission", "fn", "list", "--fns", "a", "--envns", "b"])
            .expect("parse");
        assert_eq!(top.global.fn_namespace.as_deref(), Some("a"));
        assert_eq!(top.global.env_namespace.as_deref(), Some("b"));
    }

    #[test]
    fn namespace_flag_beats_deprecated_flag_beats_environment() {
        assert_eq!(resolve_namespace(Some("a"), Some("b"), Some("c")), "a");
        assert_eq!(resolve_namespace(None, Some("b"), Some("c")), "b");
        assert_eq!(resolve_namespace(None, None, Some("c")), "c");
        assert_eq!(resolve_namespace(None, None, None), "default");
        assert_eq!(resolve_namespace(Some(""), None, None), "default");
    }

    #[test]
    fn aliases_of_fission_resolve_to_the_same_commands() {
        for argv in [
            vec!["fission", "env", "list"],
            vec!["fission", "environment", "list"],
            vec!["fission", "route", "list"],
            vec!["fission", "ht", "list"],
            vec!["fission", "httptrigger", "list"],
            vec!["fission", "tt", "list"],
            vec!["fission", "timer", "list"],
            vec!["fission", "mqt", "list"],
            vec!["fission", "w", "list"],
            vec!["fission", "canary", "list"],
            vec!["fission", "pkg", "list"],
            vec!["fission", "fn", "log", "--name", "x"],
            vec!["fission", "fn", "logs", "--name", "x"],
            vec!["fission", "version"],
        ] {
            Top::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
    }
}
