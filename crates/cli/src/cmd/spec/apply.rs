//! `fission spec apply`: validate, build archives, then create/update (and with `--delete`
//! remove) server objects so they match the specs.
//!
//! Order matters twice: objects are written in dependency order (environments, packages,
//! functions, triggers) and removed in reverse (stale triggers go first, so a renamed route
//! can take over its URL; stale functions, packages and environments go last, once nothing in
//! the specs uses them any more).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use fission_core::resources::{
    ARCHIVE_URL, Archive, Checksum, EnvironmentSpec, FunctionSpec, HttpTriggerSpec,
    KubernetesWatchTriggerSpec, MessageQueueTriggerSpec, PackageSpec, PackageStatus,
    TimeTriggerSpec, build_status,
};
use fission_core::{AnyResource, ObjectMeta, ResourceKind};

use super::build::{self, BuiltArchive};
use super::check::{
    self, CheckOptions, KINDS, NAME_ANNOTATION, ServerState, UID_ANNOTATION, ns_or,
};
use super::read::{self, ARCHIVE_URL_PREFIX, DeploymentConfig, Specs};
use crate::api::{Api, ApiError, Wrap, storage_archive_url};
use crate::archive::{LITERAL_SIZE_LIMIT, sha256_hex};
use crate::cmd::{Ctx, say};
use crate::output::print_stdout;

/// What `spec apply` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct ApplyOptions {
    pub(crate) dir: PathBuf,
    pub(crate) specignore: String,
    pub(crate) delete: bool,
    pub(crate) wait: bool,
    pub(crate) watch: bool,
    pub(crate) validate: bool,
    pub(crate) allow_conflicts: bool,
    pub(crate) force_namespace: bool,
}

/// The per-kind label Fission prints (`1 environment created: …`, `2 HTTPTriggers updated: …`).
pub(crate) fn kind_label(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Environment => "environment",
        ResourceKind::Package => "package",
        ResourceKind::Function => "function",
        other => other.kind_name(),
    }
}

/// What changed on the server, per kind, as `ns:name`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Changes {
    created: BTreeMap<ResourceKind, Vec<String>>,
    updated: BTreeMap<ResourceKind, Vec<String>>,
    deleted: BTreeMap<ResourceKind, Vec<String>>,
}

impl Changes {
    fn add(map: &mut BTreeMap<ResourceKind, Vec<String>>, kind: ResourceKind, m: &ObjectMeta) {
        map.entry(kind)
            .or_default()
            .push(format!("{}:{}", m.namespace, m.name));
    }

    /// The summary lines, in dependency order, or `Everything up to date.`.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for kind in KINDS {
            for (verb, map) in [
                ("created", &self.created),
                ("updated", &self.updated),
                ("deleted", &self.deleted),
            ] {
                if let Some(names) = map.get(&kind).filter(|n| !n.is_empty()) {
                    let n = names.len();
                    let label = kind_label(kind);
                    let plural = if n == 1 { "" } else { "s" };
                    out.push_str(&format!(
                        "{n} {label}{plural} {verb}: {}\n",
                        names.join(", ")
                    ));
                }
            }
        }
        if out.is_empty() {
            out.push_str("Everything up to date.\n");
        }
        out
    }
}

/// Labels equal (absent = empty) and annotations equal.
fn meta_equal(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    let norm = |m: &Option<BTreeMap<String, String>>| m.clone().unwrap_or_default();
    norm(&a.labels) == norm(&b.labels) && norm(&a.annotations) == norm(&b.annotations)
}

/// Whether the server object already is what the specs ask for. A package counts as unchanged
/// when its spec matches, or when its environment, source and build command match (the
/// builder fills in the deployment archive), unless its last build failed: then it is
/// rewritten, which starts a new build.
pub(crate) fn up_to_date(existing: &AnyResource, desired: &AnyResource) -> bool {
    if !meta_equal(existing.meta(), desired.meta()) {
        return false;
    }
    match (existing, desired) {
        (AnyResource::Package(e), AnyResource::Package(d)) => {
            let same = e.spec == d.spec
                || (e.spec.environment == d.spec.environment
                    && !e.spec.source.is_empty()
                    && e.spec.source == d.spec.source
                    && e.spec.buildcmd == d.spec.buildcmd);
            same && e.status.buildstatus != build_status::FAILED
        }
        _ => !existing.spec_differs(desired),
    }
}

async fn create_any(api: &Api, o: &AnyResource) -> Result<ObjectMeta, ApiError> {
    match o {
        AnyResource::Environment(x) => api.create(x).await,
        AnyResource::Package(x) => api.create(x).await,
        AnyResource::Function(x) => api.create(x).await,
        AnyResource::HttpTrigger(x) => api.create(x).await,
        AnyResource::KubernetesWatchTrigger(x) => api.create(x).await,
        AnyResource::TimeTrigger(x) => api.create(x).await,
        AnyResource::MessageQueueTrigger(x) => api.create(x).await,
        other => Err(unmanaged(other.kind())),
    }
}

async fn update_any(api: &Api, o: &AnyResource) -> Result<ObjectMeta, ApiError> {
    match o {
        AnyResource::Environment(x) => api.update(x).await,
        AnyResource::Package(x) => api.update(x).await,
        AnyResource::Function(x) => api.update(x).await,
        AnyResource::HttpTrigger(x) => api.update(x).await,
        AnyResource::KubernetesWatchTrigger(x) => api.update(x).await,
        AnyResource::TimeTrigger(x) => api.update(x).await,
        AnyResource::MessageQueueTrigger(x) => api.update(x).await,
        other => Err(unmanaged(other.kind())),
    }
}

/// Delete one object by kind.
pub(crate) async fn delete_any(
    api: &Api,
    kind: ResourceKind,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    match kind {
        ResourceKind::Environment => api.delete::<EnvironmentSpec>(ns, name, false).await,
        ResourceKind::Package => api.delete::<PackageSpec>(ns, name, false).await,
        ResourceKind::Function => api.delete::<FunctionSpec>(ns, name, false).await,
        ResourceKind::HttpTrigger => api.delete::<HttpTriggerSpec>(ns, name, false).await,
        ResourceKind::KubernetesWatchTrigger => {
            api.delete::<KubernetesWatchTriggerSpec>(ns, name, false)
                .await
        }
        ResourceKind::TimeTrigger => api.delete::<TimeTriggerSpec>(ns, name, false).await,
        ResourceKind::MessageQueueTrigger => {
            api.delete::<MessageQueueTriggerSpec>(ns, name, false).await
        }
        other => Err(unmanaged(other)),
    }
}

fn unmanaged(kind: ResourceKind) -> ApiError {
    ApiError::Other(format!("{kind} objects are not managed by specs"))
}

/// The archive a package gets for each `archive://name`: literal when small, else a URL of an
/// uploaded (or already stored, same sha256) archive.
async fn resolve_archives(
    ctx: &Ctx,
    built: &BTreeMap<String, BuiltArchive>,
    server: &ServerState,
) -> anyhow::Result<BTreeMap<String, Archive>> {
    let mut stored: BTreeMap<String, String> = BTreeMap::new();
    for o in server.of_kind(ResourceKind::Package) {
        let AnyResource::Package(p) = o else { continue };
        for a in [&p.spec.source, &p.spec.deployment] {
            if a.archive_type == ARCHIVE_URL && !a.url.is_empty() && !a.checksum.sum.is_empty() {
                stored.insert(a.checksum.sum.clone(), a.url.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    for (name, b) in built {
        let url_name = format!("{ARCHIVE_URL_PREFIX}{name}");
        let archive = if b.bytes.len() < LITERAL_SIZE_LIMIT {
            Archive::literal(b.bytes.clone())
        } else {
            let sum = sha256_hex(&b.bytes);
            let url = match stored.get(&sum) {
                Some(url) => {
                    say(format!("archive {url_name} exists, not uploading"));
                    url.clone()
                }
                None => {
                    say(format!("uploading archive {url_name}"));
                    let id = ctx
                        .api
                        .upload_archive(b.bytes.clone())
                        .await
                        .wrap(&format!("error uploading archive {url_name}"))?;
                    let url = storage_archive_url(&id);
                    stored.insert(sum.clone(), url.clone());
                    url
                }
            };
            Archive {
                archive_type: ARCHIVE_URL.to_owned(),
                url,
                checksum: Checksum {
                    checksum_type: "sha256".to_owned(),
                    sum,
                },
                ..Archive::default()
            }
        };
        out.insert(url_name, archive);
    }
    Ok(out)
}

/// A spec object as it is written: normalized like the server does, annotated with the
/// deployment, archives substituted, client-side package status dropped (the server derives
/// it: nothing to build, or a build to start).
fn desired_object(
    res: &AnyResource,
    cfg: &DeploymentConfig,
    archives: &BTreeMap<String, Archive>,
) -> anyhow::Result<AnyResource> {
    let mut o = res.clone();
    o.normalize();
    let m = o.meta_mut();
    m.resource_version.clear();
    m.uid.clear();
    m.generation = 0;
    m.creation_timestamp = None;
    let anns = m.annotations.get_or_insert_with(BTreeMap::new);
    anns.insert(NAME_ANNOTATION.to_owned(), cfg.name.clone());
    anns.insert(UID_ANNOTATION.to_owned(), cfg.uid.clone());
    if let AnyResource::Package(p) = &mut o {
        for a in [&mut p.spec.source, &mut p.spec.deployment] {
            if a.url.starts_with(ARCHIVE_URL_PREFIX) {
                *a = archives.get(&a.url).cloned().ok_or_else(|| {
                    anyhow!(
                        "unknown archive name {}",
                        a.url.trim_start_matches(ARCHIVE_URL_PREFIX)
                    )
                })?;
            }
        }
        p.status = PackageStatus::default();
    }
    Ok(o)
}

/// The outcome of one apply.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub(crate) changes: Changes,
    /// Packages of the specs, `(ns, name)`, for `--wait`.
    pub(crate) packages: Vec<(String, String)>,
}

/// Read, validate and check the specs against the server; the error lists every problem.
pub(crate) async fn prepare(
    ctx: &Ctx,
    opts: &ApplyOptions,
) -> anyhow::Result<(Specs, ServerState, check::Report)> {
    let mut specs = read::read_specs(&opts.dir, &opts.specignore)?;
    let current = ctx.ns(crate::NsKind::Environment);
    check::insert_namespace(&mut specs, &current, opts.force_namespace);
    let server = ServerState::fetch(&ctx.api)
        .await
        .wrap("error reading the current objects from the server")?;
    let report = check::check(
        &specs,
        Some(&server),
        CheckOptions {
            full: opts.validate,
            allow_conflicts: opts.allow_conflicts,
            deleting: opts.delete,
        },
    );
    for w in &report.warnings {
        ctx.warn(w);
    }
    if !report.errors.is_empty() {
        bail!("{}", report.error_text(" (nothing was applied)"));
    }
    Ok((specs, server, report))
}

/// One apply: everything is checked first; then the server is changed.
pub(crate) async fn apply_once(ctx: &Ctx, opts: &ApplyOptions) -> anyhow::Result<Applied> {
    let mut applied = Applied::default();
    let (specs, server, report) = prepare(ctx, opts).await?;
    let cfg = specs.deployment()?.clone();
    let archives = resolve_archives(ctx, &report.archives, &server).await?;

    let mut desired: Vec<AnyResource> = Vec::new();
    for o in &specs.objects {
        desired.push(desired_object(&o.res, &cfg, &archives)?);
    }
    for o in &desired {
        if let AnyResource::Package(p) = o {
            applied
                .packages
                .push((p.metadata.namespace.clone(), p.metadata.name.clone()));
        }
    }

    let result = reconcile(ctx, opts, &cfg, &server, desired, &mut applied.changes).await;
    // After a failure, say what was changed before it (if anything).
    if result.is_ok() || applied.changes != Changes::default() {
        print_stdout(applied.changes.render().as_bytes());
    }
    result.map(|()| applied)
}

fn key(m: &ObjectMeta) -> (String, String) {
    (m.namespace.clone(), m.name.clone())
}

async fn reconcile(
    ctx: &Ctx,
    opts: &ApplyOptions,
    cfg: &DeploymentConfig,
    server: &ServerState,
    mut desired: Vec<AnyResource>,
    changes: &mut Changes,
) -> anyhow::Result<()> {
    let wanted = |kind: ResourceKind, m: &ObjectMeta, desired: &[AnyResource]| {
        desired.iter().any(|d| {
            d.kind() == kind && d.meta().namespace == m.namespace && d.meta().name == m.name
        })
    };
    let stale: Vec<&AnyResource> = if opts.delete {
        server
            .owned_by(&cfg.uid)
            .filter(|o| !wanted(o.kind(), o.meta(), &desired))
            .collect()
    } else {
        Vec::new()
    };
    let is_trigger = |k: ResourceKind| {
        !matches!(
            k,
            ResourceKind::Environment | ResourceKind::Package | ResourceKind::Function
        )
    };

    // Stale triggers first: nothing depends on them, and a replacement may want their route.
    for o in stale.iter().filter(|o| is_trigger(o.kind())) {
        remove(ctx, o, changes).await?;
    }

    let mut package_versions: BTreeMap<(String, String), String> = BTreeMap::new();
    for kind in KINDS {
        if kind == ResourceKind::Function {
            for d in desired.iter_mut() {
                if let AnyResource::Function(f) = d {
                    if f.spec.executor_type() == fission_core::resources::executor_type::CONTAINER {
                        continue;
                    }
                    let pr = &mut f.spec.package.packageref;
                    let pkg_key = (
                        ns_or(&pr.namespace, &f.metadata.namespace).to_owned(),
                        pr.name.clone(),
                    );
                    let rv = package_versions.get(&pkg_key).cloned().or_else(|| {
                        server
                            .find(ResourceKind::Package, &pkg_key.0, &pkg_key.1)
                            .map(|p| p.meta().resource_version.clone())
                    });
                    if let Some(rv) = rv {
                        pr.resourceversion = rv;
                    }
                }
            }
        }
        for d in desired.iter_mut().filter(|d| d.kind() == kind) {
            let (ns, name) = key(d.meta());
            let what = format!("{} '{ns}/{name}'", kind.kind_name());
            let existing = server.find(kind, &ns, &name);
            if let Some(e) = existing
                && !opts.allow_conflicts
                && check::deployment_uid(e.meta()) != Some(cfg.uid.as_str())
            {
                bail!(
                    "{what} already exists on the server and is not managed by this spec deployment"
                );
            }
            let meta = match existing {
                Some(existing) if up_to_date(existing, d) => existing.meta().clone(),
                Some(existing) => {
                    d.meta_mut().resource_version = existing.meta().resource_version.clone();
                    let m = update_any(&ctx.api, d)
                        .await
                        .wrap(&format!("error updating {what}"))?;
                    Changes::add(&mut changes.updated, kind, &m);
                    m
                }
                None => {
                    let m = create_any(&ctx.api, d)
                        .await
                        .wrap(&format!("error creating {what}"))?;
                    if let AnyResource::MessageQueueTrigger(t) = d {
                        crate::cmd::warn_mq_type_not_consumed(ctx, &t.spec.message_queue_type);
                    }
                    Changes::add(&mut changes.created, kind, &m);
                    m
                }
            };
            if kind == ResourceKind::Package {
                package_versions.insert((ns, name), meta.resource_version.clone());
            }
        }
    }

    // Then stale functions, packages and environments, in reverse dependency order.
    for kind in [
        ResourceKind::Function,
        ResourceKind::Package,
        ResourceKind::Environment,
    ] {
        for o in stale.iter().filter(|o| o.kind() == kind) {
            remove(ctx, o, changes).await?;
        }
    }
    Ok(())
}

async fn remove(ctx: &Ctx, o: &AnyResource, changes: &mut Changes) -> anyhow::Result<()> {
    let m = o.meta();
    let kind = o.kind();
    match delete_any(&ctx.api, kind, &m.namespace, &m.name).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => {
            return Err(e).wrap(&format!(
                "error deleting {} '{}/{}'",
                kind.kind_name(),
                m.namespace,
                m.name
            ));
        }
    }
    say(format!(
        "Deleted {} {}/{}",
        kind.kind_name(),
        m.namespace,
        m.name
    ));
    Changes::add(&mut changes.deleted, kind, m);
    Ok(())
}

/// `--wait`: poll the specs' packages until none is `pending` or `running`, printing the
/// summary of each finished build once.
pub(crate) async fn wait_for_builds(
    ctx: &Ctx,
    packages: &[(String, String)],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut reported: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    loop {
        let mut waiting = Vec::new();
        for (ns, name) in packages {
            let p = match ctx.api.get::<PackageSpec>(ns, name).await {
                Ok(p) => p,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e).wrap("error getting package build status"),
            };
            match p.status.buildstatus.as_str() {
                build_status::PENDING | build_status::RUNNING | "" => {
                    waiting.push(format!("{ns}/{name}"))
                }
                build_status::SUCCEEDED | build_status::FAILED => {
                    let k = format!("{ns}/{name}:{}", p.metadata.resource_version);
                    if reported.insert(k) {
                        print_stdout(
                            format!("------\n{}------\n", crate::cmd::package::info_text(&p))
                                .as_bytes(),
                        );
                    }
                }
                _ => {}
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {}s waiting for package builds: {}",
                timeout.as_secs(),
                waiting.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A cheap picture of files for change detection: path, size and modification time.
pub(crate) fn fingerprint(
    files: &[PathBuf],
    spec_dir: &Path,
) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut all: Vec<PathBuf> = files.to_vec();
    // New files in the spec directory count too.
    collect_all(spec_dir, &mut all);
    all.sort();
    all.dedup();
    all.into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map(std::fs::Metadata::len).unwrap_or(0);
            let mtime = meta.and_then(|m| m.modified().ok());
            (p, len, mtime)
        })
        .collect()
}

fn collect_all(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            collect_all(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Editor droppings that must not trigger a re-apply.
fn is_noise(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.starts_with(".#") || name.ends_with('~') || name.ends_with(".swp")
}

/// How long `--wait` waits for package builds.
const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `spec apply`, with `--wait` and `--watch`.
pub(crate) async fn run(ctx: &Ctx, opts: ApplyOptions) -> anyhow::Result<()> {
    if !opts.watch {
        let applied = apply_once(ctx, &opts)
            .await
            .context("error applying specs")?;
        if opts.wait {
            wait_for_builds(ctx, &applied.packages, BUILD_TIMEOUT).await?;
        }
        return Ok(());
    }
    apply_and_wait(ctx, &opts).await;
    // The file list is taken afresh on every poll, so new files matching an include glob count.
    let snapshot = || -> Vec<_> {
        fingerprint(&watch_list(&opts), &opts.dir)
            .into_iter()
            .filter(|(p, _, _)| !is_noise(p))
            .collect()
    };
    let mut last = snapshot();
    say("Watching files for changes...");
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let mut now = snapshot();
        if now == last {
            continue;
        }
        // Let a burst of writes settle before re-applying.
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            let again = snapshot();
            if again == now {
                break;
            }
            now = again;
        }
        say("Noticed a file change, reapplying specs...");
        apply_and_wait(ctx, &opts).await;
        last = snapshot();
        say("Watching files for changes...");
    }
}

/// One apply (and build wait) in `--watch` mode: errors are shown, not fatal.
async fn apply_and_wait(ctx: &Ctx, opts: &ApplyOptions) {
    match apply_once(ctx, opts).await {
        Ok(applied) if opts.wait => {
            report(wait_for_builds(ctx, &applied.packages, BUILD_TIMEOUT).await)
        }
        Ok(_) => {}
        Err(e) => report(Err(e.context("error applying specs"))),
    }
}

/// The spec files and every file the archive specs draw from, as far as they can be read.
fn watch_list(opts: &ApplyOptions) -> Vec<PathBuf> {
    match read::read_specs(&opts.dir, &opts.specignore) {
        Ok(specs) => {
            let mut v = specs.files.clone();
            for a in &specs.archives {
                v.extend(build::watched_files(a, &specs.dir));
            }
            v
        }
        Err(_) => Vec::new(),
    }
}

/// In `--watch` mode errors are shown, not fatal.
fn report(r: anyhow::Result<()>) {
    if let Err(e) = r {
        eprintln!("Error: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fission_core::ObjectReference;
    use fission_core::resources::{Environment, EnvironmentSpec, Package, Runtime};

    fn cfg() -> DeploymentConfig {
        DeploymentConfig {
            api_version: String::new(),
            kind: "DeploymentConfig".into(),
            name: "app".into(),
            uid: "u1".into(),
        }
    }

    fn env(image: &str) -> AnyResource {
        let spec = EnvironmentSpec {
            version: 3,
            runtime: Runtime {
                image: image.into(),
                ..Runtime::default()
            },
            poolsize: 3,
            ..EnvironmentSpec::default()
        };
        AnyResource::from(Environment::new("default", "nodejs", spec))
    }

    /// What the server stores for a create: normalized, with server metadata.
    fn stored(d: &AnyResource) -> AnyResource {
        let mut s = d.clone();
        s.normalize();
        let m = s.meta_mut();
        m.resource_version = "7".into();
        m.uid = "x".into();
        s
    }

    #[test]
    fn an_object_written_before_is_up_to_date_and_a_changed_one_is_not() {
        let d =
            desired_object(&env("fission/node-env"), &cfg(), &BTreeMap::new()).expect("desired");
        assert!(up_to_date(&stored(&d), &d));
        let changed =
            desired_object(&env("fission/python-env"), &cfg(), &BTreeMap::new()).expect("desired");
        assert!(!up_to_date(&stored(&d), &changed));
    }

    #[test]
    fn objects_without_the_deployment_annotations_are_rewritten() {
        let d =
            desired_object(&env("fission/node-env"), &cfg(), &BTreeMap::new()).expect("desired");
        let mut s = stored(&d);
        s.meta_mut().annotations = None;
        assert!(!up_to_date(&s, &d));
    }

    #[test]
    fn desired_objects_carry_the_deployment_annotations_and_server_defaults() {
        let d =
            desired_object(&env("fission/node-env"), &cfg(), &BTreeMap::new()).expect("desired");
        let anns = d.meta().annotations.clone().expect("annotations");
        assert_eq!(anns["fission-uid"], "u1");
        assert_eq!(anns["fission-name"], "app");
        let AnyResource::Environment(e) = d else {
            panic!("not env")
        };
        assert_eq!(e.spec.termination_grace_period, 360);
    }

    fn package(deploy: Archive, source: Archive) -> AnyResource {
        let spec = PackageSpec {
            environment: ObjectReference {
                namespace: "default".into(),
                name: "nodejs".into(),
            },
            deployment: deploy,
            source,
            buildcmd: String::new(),
        };
        let mut p = Package::new("default", "p", spec);
        p.status.buildstatus = "none".into();
        AnyResource::from(p)
    }

    #[test]
    fn archive_urls_are_replaced_and_client_status_dropped() {
        let arch = Archive {
            archive_type: "url".into(),
            url: "archive://code".into(),
            ..Archive::default()
        };
        let mut archives = BTreeMap::new();
        archives.insert(
            "archive://code".to_owned(),
            Archive::literal(b"hi".to_vec()),
        );
        let d =
            desired_object(&package(arch, Archive::default()), &cfg(), &archives).expect("desired");
        let AnyResource::Package(p) = d else {
            panic!("not pkg")
        };
        assert_eq!(p.spec.deployment, Archive::literal(b"hi".to_vec()));
        assert_eq!(p.status, PackageStatus::default());
        let missing = Archive {
            archive_type: "url".into(),
            url: "archive://nope".into(),
            ..Archive::default()
        };
        assert!(desired_object(&package(missing, Archive::default()), &cfg(), &archives).is_err());
    }

    #[test]
    fn a_built_source_package_is_unchanged_but_a_failed_build_is_retried() {
        let src = Archive::literal(b"src".to_vec());
        let d = desired_object(
            &package(Archive::default(), src.clone()),
            &cfg(),
            &BTreeMap::new(),
        )
        .expect("d");
        let mut built = stored(&d);
        if let AnyResource::Package(p) = &mut built {
            p.spec.deployment = Archive::literal(b"built".to_vec());
            p.status.buildstatus = "succeeded".into();
        }
        assert!(up_to_date(&built, &d));
        if let AnyResource::Package(p) = &mut built {
            p.status.buildstatus = "failed".into();
        }
        assert!(!up_to_date(&built, &d));
    }

    #[test]
    fn summary_lines_follow_dependency_order_and_pluralize() {
        let mut c = Changes::default();
        let m = |n: &str| ObjectMeta::named("default", n);
        Changes::add(&mut c.created, ResourceKind::HttpTrigger, &m("r1"));
        Changes::add(&mut c.created, ResourceKind::HttpTrigger, &m("r2"));
        Changes::add(&mut c.created, ResourceKind::Environment, &m("nodejs"));
        Changes::add(&mut c.updated, ResourceKind::Function, &m("hello"));
        Changes::add(&mut c.deleted, ResourceKind::Package, &m("old"));
        assert_eq!(
            c.render(),
            "1 environment created: default:nodejs\n1 package deleted: default:old\n1 function updated: \
             default:hello\n2 HTTPTriggers created: default:r1, default:r2\n"
        );
        assert_eq!(Changes::default().render(), "Everything up to date.\n");
    }

    #[test]
    fn fingerprints_change_when_a_watched_file_changes_or_a_spec_file_appears() {
        let dir = tempfile::tempdir().expect("tmp");
        let specs = dir.path().join("specs");
        std::fs::create_dir_all(&specs).expect("mkdir");
        let code = dir.path().join("hello.js");
        std::fs::write(&code, "a").expect("w");
        let files = vec![code.clone()];
        let first = fingerprint(&files, &specs);
        assert_eq!(first, fingerprint(&files, &specs));
        std::fs::write(&code, "ab").expect("w");
        let second = fingerprint(&files, &specs);
        assert_ne!(first, second);
        std::fs::write(specs.join("new.yaml"), "kind: X\n").expect("w");
        assert_ne!(second, fingerprint(&files, &specs));
    }

    #[test]
    fn editor_backup_files_do_not_count_as_changes() {
        assert!(is_noise(Path::new("specs/.#env.yaml")));
        assert!(is_noise(Path::new("specs/env.yaml~")));
        assert!(!is_noise(Path::new("specs/env.yaml")));
    }
}
