//! `fission spec …` (§3.7): declarative specs.
//!
//! A spec directory (default `specs/`) holds YAML files of Fission objects plus two local-only
//! kinds: the `DeploymentConfig` written by `spec init` (its `uid` marks every object `spec
//! apply` writes, in the `fission-uid` annotation) and `ArchiveUploadSpec`s (files that become
//! package archives, referenced as `archive://<name>`).

mod apply;
mod build;
mod check;
mod ignore;
mod read;
pub(crate) mod save;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use fission_core::resources::{
    CanaryConfig, Environment, Function, HttpTrigger, KubernetesWatchTrigger, MessageQueueTrigger,
    Package, TimeTrigger,
};
use fission_core::{API_VERSION, AnyResource, ResourceKind};

use self::apply::ApplyOptions;
use self::check::{CheckOptions, ServerState, deployment_uid};
use self::read::{DEFAULT_SPEC_IGNORE, DEPLOYMENT_CONFIG_FILE, DeploymentConfig};
use super::{Ctx, say};
use crate::NsKind;
use crate::api::Wrap;
use crate::output::print_stdout;
use crate::util::kubify;

/// `fission spec` subcommands.
#[derive(Debug, Subcommand)]
pub enum SpecCommand {
    /// Create a spec directory with a deployment config
    Init(SpecInitArgs),
    /// Check the specs without changing anything on the server
    Validate(SpecValidateArgs),
    /// Create or update server objects to match the specs
    Apply(SpecApplyArgs),
    /// Delete every object created from the specs
    Destroy(SpecDestroyArgs),
    /// List the server objects created from the specs
    List(SpecListArgs),
}

/// `--specdir` / `--specignore`.
#[derive(Debug, Clone, Args)]
pub struct SpecDirArgs {
    /// Directory of the spec files
    #[arg(long, default_value = "specs")]
    pub specdir: String,
    /// File in the spec directory listing files to skip (gitignore syntax)
    #[arg(long, default_value = DEFAULT_SPEC_IGNORE)]
    pub specignore: String,
}

/// `spec init` flags.
#[derive(Debug, Args)]
pub struct SpecInitArgs {
    /// Name of the deployment (default: the current directory's name)
    #[arg(long)]
    pub name: Option<String>,
    /// Deployment id (default: a new UUID)
    #[arg(long)]
    pub deployid: Option<String>,
    /// Directory of the spec files
    #[arg(long, default_value = "specs")]
    pub specdir: String,
}

/// `spec validate` flags.
#[derive(Debug, Args)]
pub struct SpecValidateArgs {
    #[command(flatten)]
    pub dir: SpecDirArgs,
    /// Allow objects that exist on the server without this deployment's uid
    #[arg(long)]
    pub allowconflicts: bool,
}

/// `spec apply` flags.
#[derive(Debug, Args)]
pub struct SpecApplyArgs {
    #[command(flatten)]
    pub dir: SpecDirArgs,
    /// Delete server objects of this deployment that are no longer in the specs
    #[arg(long)]
    pub delete: bool,
    /// Wait for package builds to finish
    #[arg(long)]
    pub wait: bool,
    /// Keep watching the spec files and the archive files, re-applying on change
    #[arg(long)]
    pub watch: bool,
    /// Validate the specs before applying ('false' skips the reference checks)
    #[arg(long, default_value = "true")]
    pub validation: String,
    /// Take over objects that exist on the server without this deployment's uid
    #[arg(long)]
    pub allowconflicts: bool,
    /// Put every object into the current namespace, even those that name one
    #[arg(long = "force-namespace")]
    pub force_namespace: bool,
}

/// `spec destroy` flags.
#[derive(Debug, Args)]
pub struct SpecDestroyArgs {
    #[command(flatten)]
    pub dir: SpecDirArgs,
    /// Accepted for compatibility: every object with the deployment uid is deleted anyway
    #[arg(long)]
    pub force: bool,
}

/// `spec list` flags.
#[derive(Debug, Args)]
pub struct SpecListArgs {
    #[command(flatten)]
    pub dir: SpecDirArgs,
    /// Deployment id to list (default: the one in the spec directory)
    #[arg(long)]
    pub deployid: Option<String>,
}

pub(crate) async fn run(ctx: &Ctx, cmd: SpecCommand) -> anyhow::Result<()> {
    match cmd {
        SpecCommand::Init(a) => init(ctx, &a),
        SpecCommand::Validate(a) => validate(ctx, &a).await,
        SpecCommand::Apply(a) => {
            let opts = ApplyOptions {
                dir: PathBuf::from(&a.dir.specdir),
                specignore: a.dir.specignore.clone(),
                delete: a.delete,
                wait: a.wait,
                watch: a.watch,
                validate: a.validation.trim() != "false",
                allow_conflicts: a.allowconflicts,
                force_namespace: a.force_namespace,
            };
            apply::run(ctx, opts).await
        }
        SpecCommand::Destroy(a) => destroy(ctx, &a).await,
        SpecCommand::List(a) => list(ctx, &a).await,
    }
}

const README: &str = "\
Fission specs
=============

The YAML files in this directory describe a Fission application: environments, packages,
functions and triggers, one or more objects per file, separated by '---'.

  fission spec validate   checks the files (syntax, fields, references between objects)
  fission spec apply      makes the server match them: creates what is missing, updates what
                          changed and, with --delete, removes what was dropped from the files
  fission spec destroy    deletes everything that was created from these files

'fission env create --spec', 'fission fn create --spec', 'fission pkg create --spec' and
'fission route create --spec' write new files here instead of creating objects directly.

Source code is not copied into the specs: an ArchiveUploadSpec lists the files (globs relative
to the directory above this one) and packages refer to it as archive://<name>. 'spec apply'
archives the files at that moment, so editing the code and applying again updates the function.
'spec apply --watch' does that automatically whenever a file changes.

fission-deployment-config.yaml holds the uid of this deployment. Every object 'spec apply'
writes is annotated with it (fission-uid); objects without it are never changed or deleted.
Do not edit the uid, or the objects already on the server are no longer recognised.

Files listed in .specignore (gitignore syntax) are skipped.
";

/// `spec init`.
fn init(ctx: &Ctx, a: &SpecInitArgs) -> anyhow::Result<()> {
    let dir = Path::new(&a.specdir);
    let config_path = dir.join(DEPLOYMENT_CONFIG_FILE);
    if config_path.exists() {
        bail!(
            "spec DeploymentConfig already exists in directory '{}'",
            dir.display()
        );
    }
    let name = match a.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => n.to_owned(),
        None => {
            let cwd = std::env::current_dir().context("error getting the current directory")?;
            let base = cwd
                .file_name()
                .map(|b| b.to_string_lossy().into_owned())
                .unwrap_or_default();
            let k = kubify(&base, 63);
            if k.is_empty() {
                "fission-app".to_owned()
            } else {
                k
            }
        }
    };
    let uid = match a
        .deployid
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        Some(d) => d.to_owned(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    ctx.info(format!(
        "Creating fission spec directory '{}'",
        dir.display()
    ));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("error creating spec directory '{}'", dir.display()))?;
    std::fs::write(dir.join("README"), README)
        .with_context(|| format!("error writing '{}/README'", dir.display()))?;
    let config = DeploymentConfig {
        api_version: API_VERSION.to_owned(),
        kind: "DeploymentConfig".to_owned(),
        name,
        uid,
    };
    let yaml = serde_norway::to_string(&config).context("error writing the deployment config")?;
    let text = format!(
        "# Written by 'fission spec init'; see the README in this directory.\n\
         # Do not edit the uid: 'fission spec apply' uses it to recognise the objects it created.\n{yaml}"
    );
    std::fs::write(&config_path, text)
        .with_context(|| format!("error writing '{}'", config_path.display()))?;
    Ok(())
}

/// `spec validate`.
async fn validate(ctx: &Ctx, a: &SpecValidateArgs) -> anyhow::Result<()> {
    let mut specs = read::read_specs(Path::new(&a.dir.specdir), &a.dir.specignore)?;
    check::insert_namespace(&mut specs, &ctx.ns(NsKind::Environment), false);
    let server = match ServerState::fetch(&ctx.api).await {
        Ok(s) => Some(s),
        Err(e) if e.is_unreachable() => {
            ctx.warn(format!(
                "{e}: references are checked against the specs only"
            ));
            None
        }
        Err(e) => return Err(e).wrap("error reading the current objects from the server"),
    };
    let report = check::check(
        &specs,
        server.as_ref(),
        CheckOptions {
            full: true,
            allow_conflicts: a.allowconflicts,
            deleting: false,
        },
    );
    let count = |k: ResourceKind| specs.of_kind(k).count();
    if let Some((_, c)) = &specs.config {
        ctx.info(format!("DeployUID: {}", c.uid));
    }
    ctx.info(format!(
        "Resources:\n * {} Functions\n * {} Environments\n * {} Packages\n * {} Http Triggers\n * {} MessageQueue \
         Triggers\n * {} Time Triggers\n * {} Kube Watchers\n * {} ArchiveUploadSpec",
        count(ResourceKind::Function),
        count(ResourceKind::Environment),
        count(ResourceKind::Package),
        count(ResourceKind::HttpTrigger),
        count(ResourceKind::MessageQueueTrigger),
        count(ResourceKind::TimeTrigger),
        count(ResourceKind::KubernetesWatchTrigger),
        specs.archives.len(),
    ));
    for w in &report.warnings {
        ctx.warn(w);
    }
    if !report.errors.is_empty() {
        bail!("{}", report.error_text(""));
    }
    ctx.info("Validation Successful");
    Ok(())
}

/// The deployment uid of a spec directory; only the config file has to be readable.
fn deployment_of(d: &SpecDirArgs) -> anyhow::Result<DeploymentConfig> {
    let specs = read::read_specs(Path::new(&d.specdir), &d.specignore)?;
    let cfg = specs.deployment()?.clone();
    if cfg.uid.trim().is_empty() {
        bail!("the DeploymentConfig in '{}' has no uid", d.specdir);
    }
    Ok(cfg)
}

/// `spec destroy`: every object carrying the deployment uid, in reverse dependency order.
async fn destroy(ctx: &Ctx, a: &SpecDestroyArgs) -> anyhow::Result<()> {
    let cfg = deployment_of(&a.dir)?;
    let server = ServerState::fetch(&ctx.api)
        .await
        .wrap("error reading the current objects from the server")?;
    let mut owned: Vec<&AnyResource> = server.owned_by(&cfg.uid).collect();
    owned.reverse();
    let order = |k: ResourceKind| match k {
        ResourceKind::Function => 1,
        ResourceKind::Package => 2,
        ResourceKind::Environment => 3,
        _ => 0,
    };
    owned.sort_by_key(|o| order(o.kind()));
    let mut failures = Vec::new();
    for o in owned {
        let m = o.meta();
        match apply::delete_any(&ctx.api, o.kind(), &m.namespace, &m.name).await {
            Ok(()) => say(format!("Deleted {} {}/{}", o.kind(), m.namespace, m.name)),
            Err(e) if e.is_not_found() => {}
            Err(e) => failures.push(format!("{} {}/{}: {e}", o.kind(), m.namespace, m.name)),
        }
    }
    if !failures.is_empty() {
        bail!("error deleting resources:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// Objects of `kind` carrying `uid`, typed.
fn owned<T: TryFrom<AnyResource>>(server: &ServerState, uid: &str, kind: ResourceKind) -> Vec<T> {
    server
        .of_kind(kind)
        .filter(|o| deployment_uid(o.meta()) == Some(uid))
        .filter_map(|o| T::try_from(o.clone()).ok())
        .collect()
}

fn section(title: &str, table: crate::output::Table, empty: bool) {
    if !empty {
        print_stdout(format!("{title}\n{}\n", table.render()).as_bytes());
    }
}

/// `spec list`: the server objects of a deployment, per kind, NAME first.
async fn list(ctx: &Ctx, a: &SpecListArgs) -> anyhow::Result<()> {
    let uid = match a
        .deployid
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        Some(d) => d.to_owned(),
        None => deployment_of(&a.dir)?.uid,
    };
    let server = ServerState::fetch(&ctx.api)
        .await
        .wrap("error reading the current objects from the server")?;
    let canaries: Vec<CanaryConfig> = ctx
        .api
        .list::<fission_core::resources::CanaryConfigSpec>(None)
        .await
        .wrap("error listing canary configs")?
        .into_iter()
        .filter(|c| deployment_uid(&c.metadata) == Some(uid.as_str()))
        .collect();
    let fns: Vec<Function> = owned(&server, &uid, ResourceKind::Function);
    let envs: Vec<Environment> = owned(&server, &uid, ResourceKind::Environment);
    let pkgs: Vec<Package> = owned(&server, &uid, ResourceKind::Package);
    let hts: Vec<HttpTrigger> = owned(&server, &uid, ResourceKind::HttpTrigger);
    let mqts: Vec<MessageQueueTrigger> = owned(&server, &uid, ResourceKind::MessageQueueTrigger);
    let tts: Vec<TimeTrigger> = owned(&server, &uid, ResourceKind::TimeTrigger);
    let ws: Vec<KubernetesWatchTrigger> =
        owned(&server, &uid, ResourceKind::KubernetesWatchTrigger);
    section(
        "Functions:",
        super::function::fn_table(&fns),
        fns.is_empty(),
    );
    section(
        "Environments:",
        super::env::env_table(&envs),
        envs.is_empty(),
    );
    section(
        "Packages:",
        super::package::pkg_table(&pkgs),
        pkgs.is_empty(),
    );
    section(
        "Canary Config:",
        super::canary::canary_table(&canaries),
        canaries.is_empty(),
    );
    section(
        "HTTP Triggers:",
        super::route::route_table(&hts),
        hts.is_empty(),
    );
    section(
        "MessageQueue Triggers:",
        super::mqtrigger::mqt_table(&mqts),
        mqts.is_empty(),
    );
    section(
        "Time Triggers:",
        super::timetrigger::tt_table(&tts),
        tts.is_empty(),
    );
    section(
        "Kube Watchers:",
        super::watch::watch_table(&ws),
        ws.is_empty(),
    );
    Ok(())
}

/// One spec file's text through the reader (for the fuzz target): counts of objects, archive
/// specs and errors.
pub(crate) fn parse_spec_text(text: &str) -> (usize, usize, usize) {
    let mut specs = read::Specs::default();
    read::parse_file(&mut specs, std::path::Path::new("fuzz.yaml"), text);
    (
        specs.objects.len(),
        specs.archives.len(),
        specs.errors.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        c: SpecCommand,
    }

    fn parse(argv: &[&str]) -> SpecCommand {
        let mut full = vec!["t"];
        full.extend_from_slice(argv);
        T::try_parse_from(full).expect("parse").c
    }

    #[test]
    fn apply_flags_parse_with_fission_names_and_defaults() {
        let SpecCommand::Apply(a) = parse(&[
            "apply",
            "--delete",
            "--wait",
            "--validation=false",
            "--specdir",
            "s",
        ]) else {
            panic!("not apply")
        };
        assert!(a.delete && a.wait && !a.watch);
        assert_eq!(a.validation, "false");
        assert_eq!(a.dir.specdir, "s");
        assert_eq!(a.dir.specignore, ".specignore");
        let SpecCommand::Apply(a) = parse(&["apply"]) else {
            panic!("not apply")
        };
        assert_eq!(
            (a.validation.as_str(), a.dir.specdir.as_str()),
            ("true", "specs")
        );
    }

    #[test]
    fn init_writes_a_readme_and_a_deployment_config_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let specdir = dir.path().join("specs").display().to_string();
        let ctx = Ctx::new(crate::GlobalArgs {
            verbosity: 0,
            ..crate::GlobalArgs::default()
        })
        .expect("ctx");
        let a = SpecInitArgs {
            name: Some("my-app".into()),
            deployid: Some("1234".into()),
            specdir: specdir.clone(),
        };
        init(&ctx, &a).expect("init");
        let cfg = std::fs::read_to_string(Path::new(&specdir).join(DEPLOYMENT_CONFIG_FILE))
            .expect("config");
        assert!(
            cfg.contains(
                "apiVersion: fission.io/v1\nkind: DeploymentConfig\nname: my-app\nuid: '1234'\n"
            ) || cfg.contains(
                "apiVersion: fission.io/v1\nkind: DeploymentConfig\nname: my-app\nuid: \"1234\"\n"
            ),
            "{cfg}"
        );
        assert!(Path::new(&specdir).join("README").is_file());
        let specs = read::read_specs(Path::new(&specdir), DEFAULT_SPEC_IGNORE).expect("read");
        assert_eq!(specs.deployment().expect("cfg").uid, "1234");
        let e = init(&ctx, &a).expect_err("second init").to_string();
        assert!(e.contains("already exists"), "{e}");
    }
}
