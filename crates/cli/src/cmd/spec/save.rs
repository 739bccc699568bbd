//! `--spec` on `env|fn|pkg|route create`: write the object(s) the command would create into
//! the spec directory instead (`env-<name>.yaml`, `function-<name>.yaml` with its package and
//! `ArchiveUploadSpec`s, `package-<name>.yaml`, `route-<name>.yaml`).
//!
//! The objects are built by the same code `create` uses. As in Fission, the namespace is left
//! empty unless `--namespace` was given, so `spec apply -n …` decides where they go; local
//! files become `ArchiveUploadSpec`s referenced as `archive://<name>`, archived at apply time.

use std::path::{Path, PathBuf};

use anyhow::bail;
use fission_core::resources::{
    ARCHIVE_URL, Archive, Checksum, DEFAULT_POOLSIZE, EnvironmentSpec, FunctionSpec, HttpTrigger,
    HttpTriggerSpec, Package, PackageSpec, build_status,
};
use fission_core::{AnyResource, Object, ObjectReference, ResourceKind, Spec};
use serde::Serialize;

use super::read::{
    self, ARCHIVE_URL_PREFIX, ArchiveUploadSpec, DEPLOYMENT_CONFIG_FILE, Specs, absolute,
    normalize_path,
};
use crate::NsKind;
use crate::cmd::env::{EnvCreateArgs, build_environment};
use crate::cmd::function::{FnCreateArgs, build_function, resolve_exec};
use crate::cmd::package::{CodeArgs, PkgCreateArgs, initial_status, new_package};
use crate::cmd::route::{self, IngressArgs, RouteCreateArgs, build_trigger};
use crate::cmd::{Ctx, SpecArgs, to_yaml};
use crate::util::{
    check_name, kubify, package_name_for_function, random_name, random_suffix, validate,
};

/// The spec directory of `--specdir` (default `specs`).
pub(crate) fn spec_dir(a: &SpecArgs) -> PathBuf {
    PathBuf::from(
        a.specdir
            .as_deref()
            .filter(|d| !d.is_empty())
            .unwrap_or("specs"),
    )
}

/// The namespace `--spec` writes: only one given explicitly on the command line.
fn explicit_ns(ctx: &Ctx, kind: NsKind) -> String {
    let g = &ctx.global;
    let deprecated = match kind {
        NsKind::Environment => &g.env_namespace,
        NsKind::Function => &g.fn_namespace,
        NsKind::Package => &g.pkg_namespace,
        NsKind::Trigger => &g.trigger_namespace,
        NsKind::Canary => &g.canary_namespace,
    };
    [g.namespace.as_deref(), deprecated.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// The specs already in the directory; the directory must have been set up by `spec init`.
fn load(a: &SpecArgs) -> anyhow::Result<Specs> {
    let dir = spec_dir(a);
    let config = dir.join(DEPLOYMENT_CONFIG_FILE);
    if !config.is_file() {
        bail!(
            "couldn't find specs: '{}' does not exist; run 'fission spec init' first",
            config.display()
        );
    }
    let ignore = a
        .specignore
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(read::DEFAULT_SPEC_IGNORE);
    let specs = read::read_specs(&dir, ignore)?;
    if !specs.errors.is_empty() {
        let lines: Vec<String> = specs.errors.iter().map(|e| format!("\n  {e}")).collect();
        bail!(
            "error reading the specs in '{}':{}",
            dir.display(),
            lines.concat()
        );
    }
    Ok(specs)
}

/// Refuse a second object of the same kind and name.
fn ensure_new(specs: &Specs, kind: ResourceKind, ns: &str, name: &str) -> anyhow::Result<()> {
    if let Some(o) = specs.contains(kind, ns, name) {
        bail!("{kind} '{name}' already exists in the specs (at {})", o.loc);
    }
    Ok(())
}

/// One document to save: what it is (for the message) and its YAML.
struct Doc {
    kind: &'static str,
    ns: String,
    name: String,
    yaml: String,
}

fn doc<S: Spec>(o: &Object<S>) -> anyhow::Result<Doc>
where
    AnyResource: From<Object<S>>,
{
    Ok(Doc {
        kind: S::KIND.kind_name(),
        ns: o.metadata.namespace.clone(),
        name: o.metadata.name.clone(),
        yaml: to_yaml(o)?,
    })
}

fn aus_doc(a: &ArchiveUploadSpec) -> anyhow::Result<Doc> {
    #[derive(Serialize)]
    struct Out<'a> {
        kind: &'a str,
        name: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        rootdir: &'a str,
        include: &'a [String],
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        exclude: &'a [String],
    }
    let yaml = to_yaml(&Out {
        kind: "ArchiveUploadSpec",
        name: &a.name,
        rootdir: &a.root_dir,
        include: &a.include,
        exclude: &a.exclude,
    })?;
    Ok(Doc {
        kind: "ArchiveUploadSpec",
        ns: String::new(),
        name: a.name.clone(),
        yaml,
    })
}

/// Write (or append, separated by `---`) the documents to `<specdir>/<file>`.
fn save(ctx: &Ctx, a: &SpecArgs, file: &str, docs: &[Doc]) -> anyhow::Result<()> {
    let path = spec_dir(a).join(file);
    let mut text = match std::fs::read_to_string(&path) {
        Ok(mut old) if !old.trim().is_empty() => {
            if !old.ends_with('\n') {
                old.push('\n');
            }
            old.push_str("---\n");
            old
        }
        _ => String::new(),
    };
    let bodies: Vec<String> = docs.iter().map(|d| d.yaml.clone()).collect();
    text.push_str(&crate::output::yaml_documents(&bodies));
    std::fs::write(&path, text)
        .map_err(|e| anyhow::anyhow!("couldn't write spec file '{}': {e}", path.display()))?;
    for d in docs {
        let id = if d.ns.is_empty() {
            d.name.clone()
        } else {
            format!("{}/{}", d.ns, d.name)
        };
        ctx.info(format!("Saving {} '{id}' to '{}'", d.kind, path.display()));
    }
    Ok(())
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// An include entry as stored in the spec: relative to the project root (the parent of the
/// spec directory), with `..` when the file lies elsewhere, so the spec directory keeps working
/// wherever the project is checked out.
pub(crate) fn include_entry(arg: &str, root: &Path) -> String {
    use std::path::Component;
    let abs = if Path::new(arg).is_absolute() {
        normalize_path(Path::new(arg))
    } else {
        absolute(Path::new(arg))
    };
    let a: Vec<Component<'_>> = abs.components().collect();
    let r: Vec<Component<'_>> = root.components().collect();
    let common = a.iter().zip(&r).take_while(|(x, y)| x == y).count();
    // Only the filesystem root in common (or nothing at all): keep the absolute path.
    if common <= 1 {
        return abs.to_string_lossy().into_owned();
    }
    let mut rel = PathBuf::new();
    for _ in common..r.len() {
        rel.push("..");
    }
    for c in &a[common..] {
        rel.push(c.as_os_str());
    }
    if rel.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        rel.to_string_lossy().into_owned()
    }
}

/// The name of a new `ArchiveUploadSpec`: the first input kubified plus 4 random characters.
fn archive_name(first: &str) -> String {
    let stem = kubify(first, 63 - 5);
    let stem = if stem.is_empty() {
        "archive".to_owned()
    } else {
        stem
    };
    format!("{stem}-{}", random_suffix(4))
}

fn checked_sum(sum: &str) -> anyhow::Result<String> {
    let s = sum.trim().to_ascii_lowercase();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("checksum '{sum}' is not a sha256 hex digest (64 hexadecimal digits)");
    }
    Ok(s)
}

/// One archive argument list (`--code` / `--deploy` / `--src`) in spec form: a URL archive as
/// is, or an `ArchiveUploadSpec` and the `archive://` reference to it.
fn spec_archive(
    args: &[String],
    checksum: Option<&str>,
    root: &Path,
    specs: &Specs,
) -> anyhow::Result<(Archive, Option<ArchiveUploadSpec>)> {
    if args.iter().any(|a| is_url(a)) {
        if args.len() > 1 {
            bail!("only one URL can be given as an archive, and not together with local files");
        }
        let sum = checksum.map(checked_sum).transpose()?.unwrap_or_default();
        let checksum = if sum.is_empty() {
            Checksum::default()
        } else {
            Checksum {
                checksum_type: "sha256".to_owned(),
                sum,
            }
        };
        let archive = Archive {
            archive_type: ARCHIVE_URL.to_owned(),
            url: args[0].clone(),
            checksum,
            ..Archive::default()
        };
        return Ok((archive, None));
    }
    // Every input must exist now, as for a direct create.
    crate::archive::expand(args)?;
    let include: Vec<String> = args.iter().map(|a| include_entry(a, root)).collect();
    // Reuse an identical ArchiveUploadSpec already in the specs.
    let existing = specs.archives.iter().find(|a| {
        a.aus.include == include && a.aus.root_dir.is_empty() && a.aus.exclude.is_empty()
    });
    let (name, aus) = match existing {
        Some(a) => (a.aus.name.clone(), None),
        None => {
            let name = archive_name(&args[0]);
            let aus = ArchiveUploadSpec {
                kind: "ArchiveUploadSpec".to_owned(),
                name: name.clone(),
                include,
                ..ArchiveUploadSpec::default()
            };
            (name, Some(aus))
        }
    };
    let archive = Archive {
        archive_type: ARCHIVE_URL.to_owned(),
        url: format!("{ARCHIVE_URL_PREFIX}{name}"),
        ..Archive::default()
    };
    Ok((archive, aus))
}

/// `(deployment, source, new ArchiveUploadSpecs)` for the archive flags.
fn spec_archives(
    code: &CodeArgs,
    a: &SpecArgs,
    specs: &Specs,
) -> anyhow::Result<(Option<Archive>, Option<Archive>, Vec<ArchiveUploadSpec>)> {
    if code.code.is_some() && !code.deploy.is_empty() {
        bail!(
            "--code and --deploy cannot be used together: --code takes one file, --deploy zips files"
        );
    }
    let root = read::project_root(&spec_dir(a));
    let mut new = Vec::new();
    let deploy_args: Vec<String> = match &code.code {
        Some(c) => vec![c.clone()],
        None => code.deploy.clone(),
    };
    let deploy = if deploy_args.is_empty() {
        None
    } else {
        let (arch, aus) = spec_archive(&deploy_args, code.deploychecksum.as_deref(), &root, specs)?;
        new.extend(aus);
        Some(arch)
    };
    let src = if code.src.is_empty() {
        None
    } else {
        let (arch, aus) = spec_archive(&code.src, code.srcchecksum.as_deref(), &root, specs)?;
        new.extend(aus);
        Some(arch)
    };
    Ok((deploy, src, new))
}

/// A package as written to a spec: `none` when there is nothing to build, `pending` with
/// source (the server recomputes it on apply anyway).
fn spec_package(
    ns: &str,
    name: &str,
    env_ns: &str,
    env: &str,
    deploy: Option<Archive>,
    src: Option<Archive>,
    buildcmd: Option<&str>,
) -> Package {
    let has_source = src.is_some();
    let env_ref = ObjectReference {
        namespace: env_ns.to_owned(),
        name: env.to_owned(),
    };
    let mut p = new_package(ns, name, &env_ref, deploy, src, buildcmd);
    p.status = initial_status(has_source);
    if !has_source {
        p.status.buildstatus = build_status::NONE.to_owned();
    }
    p
}

fn warn_missing_env(ctx: &Ctx, specs: &Specs, ns: &str, env: &str) {
    if specs.contains(ResourceKind::Environment, ns, env).is_none() {
        ctx.warn(format!(
            "environment '{env}' is not in the specs: create it with 'fission env create --spec' or make sure it \
             exists on the server before applying"
        ));
    }
}

/// `env create --spec`.
pub(crate) fn environment(ctx: &Ctx, a: &EnvCreateArgs) -> anyhow::Result<()> {
    let ns = explicit_ns(ctx, NsKind::Environment);
    check_name::<EnvironmentSpec>(&ns, &a.name)?;
    let env = build_environment(&ns, a)?;
    validate(&env)?;
    let specs = load(&a.spec)?;
    ensure_new(&specs, ResourceKind::Environment, &ns, &a.name)?;
    if a.poolsize.is_none() {
        ctx.info(format!("poolsize setting default to {DEFAULT_POOLSIZE}"));
    }
    save(ctx, &a.spec, &format!("env-{}.yaml", a.name), &[doc(&env)?])
}

/// `pkg create --spec`.
pub(crate) fn package(ctx: &Ctx, a: &PkgCreateArgs) -> anyhow::Result<()> {
    let Some(name) = a.name.clone().filter(|n| !n.is_empty()) else {
        bail!("--name is necessary when creating spec file");
    };
    let Some(env) = a.env.clone().filter(|e| !e.is_empty()) else {
        bail!("need --env argument")
    };
    if !a.code.any() {
        bail!("need --code or --deploy or --src argument");
    }
    let ns = explicit_ns(ctx, NsKind::Package);
    check_name::<PackageSpec>(&ns, &name)?;
    check_name::<EnvironmentSpec>(&ns, &env)?;
    let specs = load(&a.spec)?;
    ensure_new(&specs, ResourceKind::Package, &ns, &name)?;
    let env_ns = ctx.global.env_ref_namespace(&ns);
    warn_missing_env(ctx, &specs, &env_ns, &env);
    let (deploy, src, new_archives) = spec_archives(&a.code, &a.spec, &specs)?;
    let mut pkg = spec_package(
        &ns,
        &name,
        &env_ns,
        &env,
        deploy,
        src,
        a.code.buildcmd.as_deref(),
    );
    a.code.name_code_file(&mut pkg);
    validate(&pkg)?;
    let mut docs = Vec::new();
    for aus in &new_archives {
        docs.push(aus_doc(aus)?);
    }
    docs.push(doc(&pkg)?);
    save(ctx, &a.spec, &format!("package-{name}.yaml"), &docs)
}

/// `fn create --spec`.
pub(crate) fn function(ctx: &Ctx, a: &FnCreateArgs) -> anyhow::Result<()> {
    let ns = explicit_ns(ctx, NsKind::Function);
    check_name::<FunctionSpec>(&ns, &a.name)?;
    let exec = resolve_exec(&a.exec, None)?;
    for w in &exec.warnings {
        ctx.warn(w);
    }
    let route = legacy_route(&ns, a)?;
    let specs = load(&a.spec)?;
    ensure_new(&specs, ResourceKind::Function, &ns, &a.name)?;

    let mut docs = Vec::new();
    // `--envns`: an environment of another namespace (empty means "the function's", filled in on apply).
    let env_ns = ctx.global.env_ref_namespace(&ns);
    let (env, pkg_name) = match &a.pkgname {
        Some(p) => {
            if a.code.any() {
                bail!("--pkgname cannot be used together with --code, --deploy or --src");
            }
            check_name::<PackageSpec>(&ns, p)?;
            match specs
                .contains(ResourceKind::Package, &ns, p)
                .map(|o| &o.res)
            {
                Some(AnyResource::Package(pkg)) => {
                    let pkg_env = pkg.spec.environment.name.clone();
                    if a.env.as_deref().is_some_and(|e| e != pkg_env) {
                        ctx.warn(
                            "Function's environment is different than package's environment, package's environment \
                             will be used for creating function",
                        );
                    }
                    (pkg_env, p.clone())
                }
                _ => {
                    let Some(env) = a.env.clone().filter(|e| !e.is_empty()) else {
                        bail!(
                            "package '{p}' is not in the specs, so its environment is unknown: give --env"
                        );
                    };
                    ctx.warn(format!(
                        "package '{p}' is not in the specs: make sure it exists on the server before applying"
                    ));
                    (env, p.clone())
                }
            }
        }
        None => {
            let Some(env) = a.env.clone().filter(|e| !e.is_empty()) else {
                bail!("need --env argument")
            };
            check_name::<EnvironmentSpec>(&ns, &env)?;
            if !a.code.any() {
                bail!("need --code or --deploy or --src argument");
            }
            warn_missing_env(ctx, &specs, &env_ns, &env);
            let pkg_name = package_name_for_function(&a.name, &uuid::Uuid::new_v4().to_string());
            let (deploy, src, new_archives) = spec_archives(&a.code, &a.spec, &specs)?;
            let mut pkg = spec_package(
                &ns,
                &pkg_name,
                &env_ns,
                &env,
                deploy,
                src,
                a.code.buildcmd.as_deref(),
            );
            a.code.name_code_file(&mut pkg);
            validate(&pkg)?;
            for aus in &new_archives {
                docs.push(aus_doc(aus)?);
            }
            docs.push(doc(&pkg)?);
            (env, pkg_name)
        }
    };
    let mut function = build_function(&ns, a, &env, &pkg_name, exec.strategy)?;
    function.spec.environment.namespace = env_ns;
    validate(&function)?;
    docs.push(doc(&function)?);
    save(ctx, &a.spec, &format!("function-{}.yaml", a.name), &docs)?;
    if let Some(t) = route {
        save(
            ctx,
            &a.spec,
            &format!("route-{}.yaml", t.metadata.name),
            &[doc(&t)?],
        )?;
    }
    Ok(())
}

/// The route of the deprecated `fn create --url/--prefix` flags.
fn legacy_route(ns: &str, a: &FnCreateArgs) -> anyhow::Result<Option<HttpTrigger>> {
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
    let (t, _) = build_trigger(ns, &random_name(), &args)?;
    validate(&t)?;
    Ok(Some(t))
}

/// `route create --spec`.
pub(crate) fn route(ctx: &Ctx, a: &RouteCreateArgs) -> anyhow::Result<()> {
    let ns = explicit_ns(ctx, NsKind::Trigger);
    route::function_ref(&a.function, &a.weight)?;
    route::trigger_paths(a.url.as_deref(), a.prefix.as_deref())?;
    route::parse_methods(&a.method)?;
    let name = match a.name.clone().filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => {
            ctx.warn("--name will be soon marked as required flag, see 'help' for details");
            random_name()
        }
    };
    check_name::<HttpTriggerSpec>(&ns, &name)?;
    let (trigger, both) = build_trigger(&ns, &name, a)?;
    if both {
        ctx.warn("Prefix will take precedence over URL/RelativeURL");
    }
    validate(&trigger)?;
    let specs = load(&a.spec)?;
    ensure_new(&specs, ResourceKind::HttpTrigger, &ns, &name)?;
    for f in trigger.spec.functionref.function_names() {
        if specs.contains(ResourceKind::Function, &ns, &f).is_none() {
            ctx.warn(format!(
                "function '{f}' is not in the specs: create it with 'fission fn create --spec' or make sure it exists \
                 on the server before applying"
            ));
        }
    }
    save(
        ctx,
        &a.spec,
        &format!("route-{name}.yaml"),
        &[doc(&trigger)?],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_entries_are_relative_to_the_project_root_when_below_it() {
        let root = absolute(Path::new("."));
        assert_eq!(include_entry("hello.js", &root), "hello.js");
        assert_eq!(include_entry("./src/*.py", &root), "src/*.py");
        assert_eq!(include_entry("/elsewhere/x.js", &root), "/elsewhere/x.js");
        assert_eq!(
            include_entry("/p/code/*.js", Path::new("/p/deploy")),
            "../code/*.js"
        );
        assert_eq!(
            include_entry("/p/deploy/a/b.js", Path::new("/p/deploy")),
            "a/b.js"
        );
    }

    #[test]
    fn archive_names_are_kubified_with_a_random_suffix() {
        let n = archive_name("Hello.js");
        assert!(
            n.starts_with("hello-js-") && n.len() == "hello-js-".len() + 4,
            "{n}"
        );
        assert!(fission_core::is_dns1123_label(&n));
        assert!(archive_name("***").starts_with("archive-"));
    }

    #[test]
    fn spec_packages_are_none_without_source_and_pending_with_it() {
        let arch = Archive {
            archive_type: ARCHIVE_URL.into(),
            url: "archive://a".into(),
            ..Archive::default()
        };
        let p = spec_package("", "p", "", "nodejs", Some(arch.clone()), None, None);
        assert_eq!(p.status.buildstatus, "none");
        assert_eq!(p.metadata.namespace, "");
        let p = spec_package("", "p", "", "nodejs", None, Some(arch), Some("build"));
        assert_eq!(p.status.buildstatus, "pending");
    }
}
