//! `fission secret …` and `fission configmap …`: values functions read from
//! `/secrets/<ns>/<name>/<key>` and `/configs/<ns>/<name>/<key>`.
//!
//! Fission takes these from Kubernetes (`kubectl create secret`); on one machine the server
//! holds them, so the CLI manages them with the same flags as kubectl. Secret values are never
//! printed unless asked for with `-o json|yaml`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use fission_core::resources::{ConfigMap, Secret};
use fission_core::{ObjectMeta, ResourceKind};

use super::{Ctx, say};
use crate::NsKind;
use crate::api::Wrap;
use crate::output::{OutputFormat, Table, print_structured};

/// `fission secret` / `fission configmap` subcommands.
#[derive(Debug, Subcommand)]
pub enum ValuesCommand {
    /// Create from literals and files
    Create(ValuesArgs),
    /// Replace the values
    Update(ValuesArgs),
    /// Show the keys (values only with -o)
    Get(ValuesGetArgs),
    /// List with their keys
    List(ValuesListArgs),
    /// Delete
    Delete(ValuesDeleteArgs),
}

/// Values from the command line.
#[derive(Debug, Args)]
pub struct ValuesArgs {
    /// Name
    #[arg(long)]
    pub name: String,
    /// A value: key=value (repeatable)
    #[arg(long = "from-literal")]
    pub literals: Vec<String>,
    /// A value from a file: key=path, or path (the key is the file name) (repeatable)
    #[arg(long = "from-file")]
    pub files: Vec<String>,
}

/// `get` flags.
#[derive(Debug, Args)]
pub struct ValuesGetArgs {
    /// Name
    #[arg(long)]
    pub name: String,
    /// Print the whole object, values included
    #[arg(long = "output", short = 'o', value_enum)]
    pub output: Option<OutputFormat>,
}

/// `list` flags.
#[derive(Debug, Args)]
pub struct ValuesListArgs {
    /// List every namespace
    #[arg(long = "all-namespaces", short = 'A')]
    pub all: bool,
}

/// `delete` flags.
#[derive(Debug, Args)]
pub struct ValuesDeleteArgs {
    /// Name
    #[arg(long)]
    pub name: String,
    /// Do not fail when it does not exist
    #[arg(long)]
    pub ignorenotfound: bool,
}

/// Which of the two kinds a command works on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Values {
    Secret,
    ConfigMap,
}

impl Values {
    fn kind(self) -> ResourceKind {
        match self {
            Self::Secret => ResourceKind::Secret,
            Self::ConfigMap => ResourceKind::ConfigMap,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::ConfigMap => "configmap",
        }
    }
}

fn collect(a: &ValuesArgs) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for lit in &a.literals {
        let Some((k, v)) = lit.split_once('=') else {
            bail!("--from-literal '{lit}' must be key=value");
        };
        if out.insert(k.to_owned(), v.as_bytes().to_vec()).is_some() {
            bail!("key '{k}' is given twice");
        }
    }
    for f in &a.files {
        let (k, path) = match f.split_once('=') {
            Some((k, p)) => (k.to_owned(), p.to_owned()),
            None => {
                let name = Path::new(f)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (name, f.clone())
            }
        };
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read --from-file '{path}'"))?;
        if out.insert(k.clone(), bytes).is_some() {
            bail!("key '{k}' is given twice");
        }
    }
    if out.is_empty() {
        bail!("give at least one value with --from-literal key=value or --from-file key=path");
    }
    Ok(out)
}

fn secret_object(ns: &str, name: &str, data: BTreeMap<String, Vec<u8>>) -> Secret {
    let mut s = Secret {
        metadata: ObjectMeta::named(ns, name),
        data,
        ..Secret::default()
    };
    s.normalize();
    s
}

fn configmap_object(
    ns: &str,
    name: &str,
    data: BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<ConfigMap> {
    let mut text = BTreeMap::new();
    for (k, v) in data {
        let v = String::from_utf8(v).map_err(|_| {
            anyhow::anyhow!("value of '{k}' is not UTF-8 text; use a secret for binary values")
        })?;
        text.insert(k, v);
    }
    let mut c = ConfigMap {
        metadata: ObjectMeta::named(ns, name),
        data: text,
        ..ConfigMap::default()
    };
    c.normalize();
    Ok(c)
}

pub(crate) async fn run(ctx: &Ctx, which: Values, cmd: ValuesCommand) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Function);
    let kind = which.kind();
    let word = which.word();
    match cmd {
        ValuesCommand::Create(a) => {
            if !fission_core::is_dns1123_label(&a.name) {
                bail!(
                    "invalid {word} name '{}': use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit",
                    a.name
                );
            }
            let data = collect(&a)?;
            match which {
                Values::Secret => {
                    ctx.api
                        .create_kind(kind, &secret_object(&ns, &a.name, data))
                        .await
                }
                Values::ConfigMap => {
                    ctx.api
                        .create_kind(kind, &configmap_object(&ns, &a.name, data)?)
                        .await
                }
            }
            .wrap(&format!("error creating {word}"))?;
            say(format!("{word} '{}' created", a.name));
        }
        ValuesCommand::Update(a) => {
            let data = collect(&a)?;
            // Read first so a missing object is a clear "not found" rather than a create.
            match which {
                Values::Secret => {
                    let cur: Secret = ctx
                        .api
                        .get_kind(kind, &ns, &a.name)
                        .await
                        .wrap(&format!("error getting {word}"))?;
                    let mut next = secret_object(&ns, &a.name, data);
                    next.metadata.resource_version = cur.metadata.resource_version;
                    ctx.api.update_kind(kind, &ns, &a.name, &next).await
                }
                Values::ConfigMap => {
                    let cur: ConfigMap = ctx
                        .api
                        .get_kind(kind, &ns, &a.name)
                        .await
                        .wrap(&format!("error getting {word}"))?;
                    let mut next = configmap_object(&ns, &a.name, data)?;
                    next.metadata.resource_version = cur.metadata.resource_version;
                    ctx.api.update_kind(kind, &ns, &a.name, &next).await
                }
            }
            .wrap(&format!("error updating {word}"))?;
            say(format!("{word} '{}' updated", a.name));
        }
        ValuesCommand::Get(a) => {
            let v: serde_json::Value = ctx
                .api
                .get_kind(kind, &ns, &a.name)
                .await
                .wrap(&format!("error getting {word}"))?;
            if let Some(fmt) = a.output {
                return print_structured(fmt, &v);
            }
            table(&[v]).print();
        }
        ValuesCommand::List(a) => {
            let scope = if a.all { None } else { Some(ns.as_str()) };
            let items: Vec<serde_json::Value> = ctx
                .api
                .list_kind(kind, scope)
                .await
                .wrap(&format!("error listing {word}s"))?;
            table(&items).print();
        }
        ValuesCommand::Delete(a) => match ctx.api.delete_kind(kind, &ns, &a.name).await {
            Ok(()) => say(format!("{word} '{}' deleted", a.name)),
            Err(e) if e.is_not_found() && a.ignorenotfound => {}
            Err(e) => return Err(e).wrap(&format!("error deleting {word}")),
        },
    }
    Ok(())
}

/// NAME KEYS NAMESPACE — never the values.
fn table(items: &[serde_json::Value]) -> Table {
    let mut t = Table::new(&["NAME", "KEYS", "NAMESPACE"]);
    for v in items {
        let keys: Vec<String> = v["data"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        t.row(vec![
            v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            keys.join(","),
            v["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ]);
    }
    t
}
