//! Validation of a spec set: every object against fission-core's rules, references between
//! objects (in the specs or on the server), duplicates, archives, and the server-side rules a
//! write would trip over (so that `spec apply` fails before it changes anything).

use std::collections::{BTreeMap, BTreeSet};

use fission_core::resources::{
    EnvironmentSpec, FunctionSpec, HttpTrigger, HttpTriggerSpec, KubernetesWatchTriggerSpec,
    MessageQueueTriggerSpec, PackageSpec, TimeTriggerSpec, executor_type, function_ref_type,
};
use fission_core::runtime::{builtin_builder, builtin_runtime, unsupported_image_message};
use fission_core::{API_VERSION, AnyResource, ObjectMeta, ResourceKind};

use super::build::{self, BuiltArchive};
use super::read::{ARCHIVE_URL_PREFIX, DEPLOYMENT_CONFIG_FILE, SpecError, SpecObject, Specs};
use crate::api::{Api, ApiError};

/// Annotation holding the deployment uid on objects `spec apply` writes.
pub(crate) const UID_ANNOTATION: &str = "fission-uid";
/// Annotation holding the deployment name.
pub(crate) const NAME_ANNOTATION: &str = "fission-name";

/// The kinds specs manage, in dependency order (what others refer to first).
pub(crate) const KINDS: [ResourceKind; 7] = [
    ResourceKind::Environment,
    ResourceKind::Package,
    ResourceKind::Function,
    ResourceKind::HttpTrigger,
    ResourceKind::KubernetesWatchTrigger,
    ResourceKind::TimeTrigger,
    ResourceKind::MessageQueueTrigger,
];

/// Every object of the managed kinds on the server, all namespaces.
#[derive(Debug, Default, Clone)]
pub(crate) struct ServerState {
    pub(crate) objects: Vec<AnyResource>,
}

impl ServerState {
    pub(crate) async fn fetch(api: &Api) -> Result<Self, ApiError> {
        let mut objects = Vec::new();
        objects.extend(
            api.list::<EnvironmentSpec>(None)
                .await?
                .into_iter()
                .map(AnyResource::from),
        );
        objects.extend(
            api.list::<PackageSpec>(None)
                .await?
                .into_iter()
                .map(AnyResource::from),
        );
        objects.extend(
            api.list::<FunctionSpec>(None)
                .await?
                .into_iter()
                .map(AnyResource::from),
        );
        objects.extend(
            api.list::<HttpTriggerSpec>(None)
                .await?
                .into_iter()
                .map(AnyResource::from),
        );
        objects.extend(
            api.list::<KubernetesWatchTriggerSpec>(None)
                .await?
                .into_iter()
                .map(AnyResource::from),
        );
        objects.extend(
            api.list::<TimeTriggerSpec>(None)
                .await?
                .into_iter()
                .map(AnyResource::from),
        );
        objects.extend(
            api.list::<MessageQueueTriggerSpec>(None)
                .await?
                .into_iter()
                .map(AnyResource::from),
        );
        Ok(Self { objects })
    }

    pub(crate) fn find(&self, kind: ResourceKind, ns: &str, name: &str) -> Option<&AnyResource> {
        self.objects
            .iter()
            .find(|o| o.kind() == kind && o.meta().namespace == ns && o.meta().name == name)
    }

    pub(crate) fn of_kind(&self, kind: ResourceKind) -> impl Iterator<Item = &AnyResource> {
        self.objects.iter().filter(move |o| o.kind() == kind)
    }

    /// Objects carrying deployment `uid`, in `KINDS` order.
    pub(crate) fn owned_by<'a>(&'a self, uid: &'a str) -> impl Iterator<Item = &'a AnyResource> {
        KINDS.iter().flat_map(move |k| {
            self.of_kind(*k)
                .filter(move |o| deployment_uid(o.meta()) == Some(uid))
        })
    }
}

/// The `fission-uid` annotation of an object.
pub(crate) fn deployment_uid(m: &ObjectMeta) -> Option<&str> {
    m.annotations
        .as_ref()
        .and_then(|a| a.get(UID_ANNOTATION))
        .map(String::as_str)
}

/// `ns` when set, else the referrer's own namespace.
pub(crate) fn ns_or<'a>(reference: &'a str, own: &'a str) -> &'a str {
    if reference.is_empty() { own } else { reference }
}

/// Fill in the namespace of objects written without one (`fission … create --spec` leaves it
/// empty unless `--namespace` is given), as Fission does: the object and the references a
/// function or package makes get `current`. With `force`, every object is moved to `current`.
pub(crate) fn insert_namespace(specs: &mut Specs, current: &str, force: bool) {
    for o in &mut specs.objects {
        if !(o.res.meta().namespace.is_empty() || force) {
            continue;
        }
        o.res.meta_mut().namespace = current.to_owned();
        match &mut o.res {
            AnyResource::Function(f) => {
                f.spec.package.packageref.namespace = current.to_owned();
                f.spec.environment.namespace = current.to_owned();
                for r in f
                    .spec
                    .secrets
                    .iter_mut()
                    .chain(f.spec.configmaps.iter_mut())
                {
                    r.namespace = current.to_owned();
                }
            }
            AnyResource::Package(p) => p.spec.environment.namespace = current.to_owned(),
            _ => {}
        }
    }
}

/// What validation settles on.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CheckOptions {
    /// Run the full validation (`--validation=false` keeps only what apply cannot do without).
    pub(crate) full: bool,
    /// Server objects of other deployments with the same name may be taken over.
    pub(crate) allow_conflicts: bool,
    /// `--delete`: owned objects missing from the specs will be removed.
    pub(crate) deleting: bool,
}

/// Result of [`check`].
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) errors: Vec<SpecError>,
    pub(crate) warnings: Vec<String>,
    /// Archives built from the `ArchiveUploadSpec`s, by name.
    pub(crate) archives: BTreeMap<String, BuiltArchive>,
}

impl Report {
    /// All errors as one message, one per line, after `headline`.
    pub(crate) fn error_text(&self, headline: &str) -> String {
        let n = self.errors.len();
        let mut out = format!(
            "the specs have {n} error{}{headline}:",
            if n == 1 { "" } else { "s" }
        );
        for e in &self.errors {
            out.push_str("\n  ");
            out.push_str(&e.to_string());
        }
        out
    }
}

fn obj_err(o: &SpecObject, field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::at(&o.loc, message)
        .object(o.res.kind().kind_name(), &o.res.meta().name)
        .field(field)
}

/// Where a reference points.
enum Found {
    Specs,
    Server,
    Nowhere,
}

fn lookup(
    specs: &Specs,
    server: Option<&ServerState>,
    kind: ResourceKind,
    ns: &str,
    name: &str,
) -> Found {
    if specs.contains(kind, ns, name).is_some() {
        Found::Specs
    } else if server.is_some_and(|s| s.find(kind, ns, name).is_some()) {
        Found::Server
    } else {
        Found::Nowhere
    }
}

/// Check a reference from `o` and record an error (or, without a server to ask, a warning).
#[allow(clippy::too_many_arguments)]
fn require(
    report: &mut Report,
    specs: &Specs,
    server: Option<&ServerState>,
    o: &SpecObject,
    field: &str,
    kind: ResourceKind,
    ns: &str,
    name: &str,
) {
    if name.is_empty() {
        return; // "is required" comes from the object validation
    }
    match lookup(specs, server, kind, ns, name) {
        Found::Specs | Found::Server => {}
        Found::Nowhere if server.is_none() => report.warnings.push(format!(
            "{}: {} '{}': {field}: {kind} '{ns}/{name}' is not in the specs (the server could not be asked)",
            o.loc,
            o.res.kind(),
            o.res.meta().name
        )),
        Found::Nowhere => report.errors.push(obj_err(
            o,
            field,
            format!("references {kind} '{ns}/{name}', which is neither in the specs nor on the server"),
        )),
    }
}

/// Validate `specs` (namespaces already inserted). `server` is `None` when it cannot be
/// reached (`spec validate` then checks the specs alone).
pub(crate) fn check(specs: &Specs, server: Option<&ServerState>, opts: CheckOptions) -> Report {
    let mut report = Report {
        errors: specs.errors.clone(),
        ..Report::default()
    };
    report.warnings.extend(specs.warnings.iter().cloned());

    match &specs.config {
        None => report.errors.push(SpecError::in_file(
            &specs.dir.join(DEPLOYMENT_CONFIG_FILE),
            "no DeploymentConfig found in the spec directory: run 'fission spec init' first",
        )),
        Some((loc, c)) if c.uid.trim().is_empty() => {
            report.errors.push(
                SpecError::at(
                    loc,
                    "is required: it identifies the objects of this deployment",
                )
                .field("uid"),
            );
        }
        _ => {}
    }

    check_archives(specs, &mut report);
    if !opts.full {
        return report;
    }

    // Duplicates and per-object validation.
    let mut seen: BTreeMap<(ResourceKind, String, String), &SpecObject> = BTreeMap::new();
    for o in &specs.objects {
        let m = o.res.meta();
        let key = (o.res.kind(), m.namespace.clone(), m.name.clone());
        if let Some(first) = seen.get(&key) {
            report.errors.push(obj_err(
                o,
                "metadata.name",
                format!("duplicate {}, first defined in {}", o.res.kind(), first.loc),
            ));
        } else {
            seen.insert(key, o);
        }
        let api_version = api_version_of(&o.res);
        if !api_version.is_empty() && api_version != API_VERSION {
            report.errors.push(obj_err(
                o,
                "apiVersion",
                format!("'{api_version}' is not supported: use {API_VERSION}"),
            ));
        }
        let mut normalized = o.res.clone();
        normalized.normalize();
        if let Err(v) = normalized.validate() {
            for fe in v.errors {
                report.errors.push(obj_err(o, fe.field, fe.message));
            }
        }
    }

    check_references(specs, server, &mut report);
    check_server_rules(specs, &mut report);
    check_routes(specs, server, opts, &mut report);
    if let (Some(server), Some((_, cfg))) = (server, &specs.config) {
        check_conflicts(specs, server, &cfg.uid, opts, &mut report);
    }
    report
}

fn api_version_of(r: &AnyResource) -> String {
    r.to_value()
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn check_archives(specs: &Specs, report: &mut Report) {
    // Archives packages use as source are built as zips.
    let source_archives: BTreeSet<&str> = specs
        .of_kind(ResourceKind::Package)
        .filter_map(|o| match &o.res {
            AnyResource::Package(p) => p.spec.source.url.strip_prefix(ARCHIVE_URL_PREFIX),
            _ => None,
        })
        .collect();
    let mut names: BTreeMap<&str, &super::read::SpecArchive> = BTreeMap::new();
    for a in &specs.archives {
        if a.aus.name.trim().is_empty() {
            report.errors.push(
                SpecError::at(&a.loc, "is required")
                    .object("ArchiveUploadSpec", "")
                    .field("name"),
            );
            continue;
        }
        if let Some(first) = names.get(a.aus.name.as_str()) {
            report.errors.push(
                SpecError::at(
                    &a.loc,
                    format!(
                        "duplicate ArchiveUploadSpec, first defined in {}",
                        first.loc
                    ),
                )
                .object("ArchiveUploadSpec", &a.aus.name)
                .field("name"),
            );
            continue;
        }
        names.insert(&a.aus.name, a);
        match build::build(a, &specs.dir, source_archives.contains(a.aus.name.as_str())) {
            Ok(b) => {
                report.archives.insert(a.aus.name.clone(), b);
            }
            Err(errs) => report.errors.extend(errs),
        }
    }
    // archive:// references from packages, and archives nobody uses.
    let mut used = BTreeSet::new();
    for o in specs.of_kind(ResourceKind::Package) {
        let AnyResource::Package(p) = &o.res else {
            continue;
        };
        for (field, a) in [
            ("spec.source.url", &p.spec.source),
            ("spec.deployment.url", &p.spec.deployment),
        ] {
            if let Some(name) = a.url.strip_prefix(ARCHIVE_URL_PREFIX) {
                if names.contains_key(name) {
                    used.insert(name.to_owned());
                } else {
                    report.errors.push(obj_err(
                        o,
                        field,
                        format!(
                            "references unknown archive '{}': no ArchiveUploadSpec named '{name}'",
                            a.url
                        ),
                    ));
                }
            }
        }
    }
    for (name, a) in &names {
        if !used.contains(*name) {
            report.errors.push(
                SpecError::at(
                    &a.loc,
                    format!("archive '{name}' is not used in any package"),
                )
                .object("ArchiveUploadSpec", name)
                .field("name"),
            );
        }
    }
}

fn check_references(specs: &Specs, server: Option<&ServerState>, report: &mut Report) {
    let mut used_packages = BTreeSet::new();
    for o in &specs.objects {
        let own = o.res.meta().namespace.clone();
        match &o.res {
            AnyResource::Package(p) => {
                let e = &p.spec.environment;
                require(
                    report,
                    specs,
                    server,
                    o,
                    "spec.environment.name",
                    ResourceKind::Environment,
                    ns_or(&e.namespace, &own),
                    &e.name,
                );
            }
            AnyResource::Function(f) => {
                if f.spec.executor_type() == executor_type::CONTAINER {
                    continue;
                }
                let e = &f.spec.environment;
                require(
                    report,
                    specs,
                    server,
                    o,
                    "spec.environment.name",
                    ResourceKind::Environment,
                    ns_or(&e.namespace, &own),
                    &e.name,
                );
                let pr = &f.spec.package.packageref;
                let pkg_ns = ns_or(&pr.namespace, &own);
                if pkg_ns != own {
                    report.errors.push(obj_err(
                        o,
                        "spec.package.packageref.namespace",
                        format!(
                            "references package '{pkg_ns}/{}' outside of the function's namespace '{own}'",
                            pr.name
                        ),
                    ));
                } else {
                    used_packages.insert((pkg_ns.to_owned(), pr.name.clone()));
                    require(
                        report,
                        specs,
                        server,
                        o,
                        "spec.package.packageref.name",
                        ResourceKind::Package,
                        pkg_ns,
                        &pr.name,
                    );
                }
            }
            AnyResource::HttpTrigger(t) => {
                trigger_refs(report, specs, server, o, &t.spec.functionref, true)
            }
            AnyResource::KubernetesWatchTrigger(t) => {
                trigger_refs(report, specs, server, o, &t.spec.functionref, false)
            }
            AnyResource::TimeTrigger(t) => {
                trigger_refs(report, specs, server, o, &t.spec.functionref, false)
            }
            AnyResource::MessageQueueTrigger(t) => {
                trigger_refs(report, specs, server, o, &t.spec.functionref, false)
            }
            _ => {}
        }
    }
    for o in specs.of_kind(ResourceKind::Package) {
        let m = o.res.meta();
        if !used_packages.contains(&(m.namespace.clone(), m.name.clone())) {
            report.warnings.push(format!(
                "{}: package '{}' is not used in any function",
                o.loc, m.name
            ));
        }
    }
}

fn trigger_refs(
    report: &mut Report,
    specs: &Specs,
    server: Option<&ServerState>,
    o: &SpecObject,
    r: &fission_core::resources::FunctionReference,
    allow_weights: bool,
) {
    let ns = o.res.meta().namespace.clone();
    if r.ref_type == function_ref_type::FUNCTION_WEIGHTS && allow_weights {
        for name in r.functionweights.iter().flat_map(|w| w.keys()) {
            require(
                report,
                specs,
                server,
                o,
                &format!("spec.functionref.functionweights.{name}"),
                ResourceKind::Function,
                &ns,
                name,
            );
        }
    } else {
        require(
            report,
            specs,
            server,
            o,
            "spec.functionref.name",
            ResourceKind::Function,
            &ns,
            &r.name,
        );
    }
}

/// Rules the server enforces on writes that would otherwise fail half-way through an apply.
fn check_server_rules(specs: &Specs, report: &mut Report) {
    for o in &specs.objects {
        match &o.res {
            AnyResource::Environment(e) => {
                let image = &e.spec.runtime.image;
                if !image.trim().is_empty() && builtin_runtime(image).is_none() {
                    report.errors.push(obj_err(
                        o,
                        "spec.runtime.image",
                        unsupported_image_message(image),
                    ));
                }
                if let Some(b) = e.spec.builder.as_ref().filter(|b| !b.image.is_empty())
                    && builtin_builder(&b.image).is_none()
                {
                    report.errors.push(obj_err(
                        o,
                        "spec.builder.image",
                        format!(
                            "builder image '{}' is not supported yet: use fission/node-builder or fission/python-builder",
                            b.image
                        ),
                    ));
                }
            }
            AnyResource::Function(f) => {
                let et = f.spec.executor_type();
                if et == executor_type::CONTAINER {
                    report.errors.push(obj_err(
                        o,
                        "spec.InvokeStrategy.ExecutionStrategy.ExecutorType",
                        format!(
                            "executor type '{et}' is not supported by this server yet: use poolmgr or newdeploy"
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
}

/// The path a trigger claims and its methods.
fn route_key(t: &HttpTriggerSpec) -> (String, String, Vec<String>) {
    (
        t.host.clone(),
        t.effective_prefix().unwrap_or(&t.relativeurl).to_owned(),
        t.all_methods(),
    )
}

fn routes_clash(a: &HttpTriggerSpec, b: &HttpTriggerSpec) -> bool {
    let (ha, ua, ma) = route_key(a);
    let (hb, ub, mb) = route_key(b);
    ha == hb && ua == ub && ma.iter().any(|m| mb.contains(m))
}

/// Two triggers may not claim the same host + URL + method (the server refuses the second).
fn check_routes(
    specs: &Specs,
    server: Option<&ServerState>,
    opts: CheckOptions,
    report: &mut Report,
) {
    let triggers: Vec<(&SpecObject, &HttpTrigger)> = specs
        .of_kind(ResourceKind::HttpTrigger)
        .filter_map(|o| match &o.res {
            AnyResource::HttpTrigger(t) => Some((o, t)),
            _ => None,
        })
        .collect();
    let field = |t: &HttpTrigger| {
        if t.spec.effective_prefix().is_some() {
            "spec.prefix"
        } else {
            "spec.relativeurl"
        }
    };
    for (i, (o, t)) in triggers.iter().enumerate() {
        if let Some((first, _)) = triggers[..i]
            .iter()
            .find(|(_, other)| routes_clash(&other.spec, &t.spec))
        {
            report.errors.push(obj_err(
                o,
                field(t),
                format!(
                    "the same host, URL and method are already taken by the trigger at {}",
                    first.loc
                ),
            ));
            continue;
        }
        let uid = specs
            .config
            .as_ref()
            .map(|(_, c)| c.uid.as_str())
            .unwrap_or_default();
        let Some(server) = server else { continue };
        for other in server.of_kind(ResourceKind::HttpTrigger) {
            let AnyResource::HttpTrigger(st) = other else {
                continue;
            };
            let m = &st.metadata;
            // Replaced by a spec trigger of the same name, or removed by --delete first.
            if specs
                .contains(ResourceKind::HttpTrigger, &m.namespace, &m.name)
                .is_some()
            {
                continue;
            }
            if opts.deleting && !uid.is_empty() && deployment_uid(m) == Some(uid) {
                continue;
            }
            if routes_clash(&st.spec, &t.spec) {
                report.errors.push(obj_err(
                    o,
                    field(t),
                    format!(
                        "HTTPTrigger with same Host, URL & method already exists ({}/{})",
                        m.namespace, m.name
                    ),
                ));
                break;
            }
        }
    }
}

/// An object in the specs that exists on the server without this deployment's uid.
fn check_conflicts(
    specs: &Specs,
    server: &ServerState,
    uid: &str,
    opts: CheckOptions,
    report: &mut Report,
) {
    if opts.allow_conflicts {
        return;
    }
    for o in &specs.objects {
        let m = o.res.meta();
        let Some(existing) = server.find(o.res.kind(), &m.namespace, &m.name) else {
            continue;
        };
        let owner = deployment_uid(existing.meta());
        if owner != Some(uid) {
            let whose = match owner {
                Some(other) => format!("another spec deployment (uid {other})"),
                None => "no spec deployment".to_owned(),
            };
            report.errors.push(obj_err(
                o,
                "metadata.name",
                format!(
                    "{} '{}/{}' already exists on the server and belongs to {whose}; delete it or use --allowconflicts to take it over",
                    o.res.kind(),
                    m.namespace,
                    m.name
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::spec::read::parse_file;
    use std::path::Path;

    const CONFIG: &str = "kind: DeploymentConfig\nname: app\nuid: u1\n";
    const ENV: &str = "kind: Environment\nmetadata:\n  name: nodejs\nspec:\n  runtime:\n    image: fission/node-env\n";
    const PKG: &str = "kind: Package\nmetadata:\n  name: p\nspec:\n  environment:\n    name: nodejs\n  deployment:\n    \
                       type: url\n    url: archive://code\n";
    const AUS: &str = "kind: ArchiveUploadSpec\nname: code\ninclude:\n- hello.js\n";
    const FUNC: &str = "kind: Function\nmetadata:\n  name: hello\nspec:\n  environment:\n    name: nodejs\n  package:\n    \
                        packageref:\n      name: p\n";
    const ROUTE: &str = "kind: HTTPTrigger\nmetadata:\n  name: r\nspec:\n  relativeurl: /hello\n  methods: [GET]\n  \
                         functionref:\n    type: name\n    name: hello\n";

    /// A project with `hello.js` and the given documents in `specs/app.yaml`.
    fn specs(docs: &[&str]) -> (tempfile::TempDir, Specs) {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("hello.js"), "x").expect("w");
        let mut s = Specs {
            dir: dir.path().join("specs"),
            ..Specs::default()
        };
        parse_file(&mut s, Path::new("specs/app.yaml"), &docs.join("---\n"));
        insert_namespace(&mut s, "default", false);
        (dir, s)
    }

    fn full() -> CheckOptions {
        CheckOptions {
            full: true,
            ..CheckOptions::default()
        }
    }

    fn errors(r: &Report) -> Vec<String> {
        r.errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_complete_spec_set_has_no_errors_and_builds_its_archive() {
        let (_d, s) = specs(&[CONFIG, ENV, AUS, PKG, FUNC, ROUTE]);
        let r = check(&s, Some(&ServerState::default()), full());
        assert!(r.errors.is_empty(), "{:?}", errors(&r));
        assert_eq!(r.archives["code"].bytes, b"x");
    }

    #[test]
    fn missing_references_name_the_document_and_the_field() {
        let (_d, s) = specs(&[
            CONFIG,
            AUS,
            PKG,
            FUNC,
            ROUTE.replace("name: hello", "name: nope").as_str(),
        ]);
        let e = errors(&check(&s, Some(&ServerState::default()), full()));
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("specs/app.yaml:10 (document 3): Package 'p': spec.environment.name: references Environment 'default/nodejs'"), "{}", e[0]);
        assert!(
            e[1].contains("(document 4): Function 'hello': spec.environment.name:"),
            "{}",
            e[1]
        );
        assert!(
            e[2].contains("(document 5): HTTPTrigger 'r': spec.functionref.name: references Function 'default/nope'"),
            "{}",
            e[2]
        );
    }

    #[test]
    fn references_to_objects_on_the_server_are_fine() {
        let (_d, s) = specs(&[CONFIG, AUS, PKG, FUNC]);
        let env = fission_core::resources::Environment::new(
            "default",
            "nodejs",
            EnvironmentSpec::default(),
        );
        let server = ServerState {
            objects: vec![AnyResource::from(env)],
        };
        let r = check(&s, Some(&server), full());
        assert!(r.errors.is_empty(), "{:?}", errors(&r));
    }

    #[test]
    fn without_a_server_unresolved_references_are_only_warnings() {
        let (_d, s) = specs(&[CONFIG, AUS, PKG, FUNC]);
        let r = check(&s, None, full());
        assert!(r.errors.is_empty(), "{:?}", errors(&r));
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    }

    #[test]
    fn unknown_and_unused_archives_are_errors() {
        let (_d, s) = specs(&[
            CONFIG,
            ENV,
            AUS.replace("name: code", "name: other").as_str(),
            PKG,
            FUNC,
        ]);
        let e = errors(&check(&s, Some(&ServerState::default()), full()));
        assert!(
            e.iter().any(|e| e.contains(
                "Package 'p': spec.deployment.url: references unknown archive 'archive://code'"
            )),
            "{e:?}"
        );
        assert!(
            e.iter().any(|e| e.contains(
                "ArchiveUploadSpec 'other': name: archive 'other' is not used in any package"
            )),
            "{e:?}"
        );
    }

    #[test]
    fn duplicates_and_invalid_fields_are_errors() {
        let (_d, s) = specs(&[
            CONFIG,
            ENV,
            ENV,
            "kind: Function\nmetadata:\n  name: Bad_Name\nspec:\n  functionTimeout: -1\n",
        ]);
        let e = errors(&check(&s, Some(&ServerState::default()), full()));
        assert!(e.iter().any(|e| e.contains("(document 3): Environment 'nodejs': metadata.name: duplicate Environment, first defined in specs/app.yaml:5 (document 2)")), "{e:?}");
        assert!(
            e.iter()
                .any(|e| e.contains("Function 'Bad_Name': metadata.name:")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| e.contains("Function 'Bad_Name': spec.functionTimeout:")),
            "{e:?}"
        );
    }

    #[test]
    fn a_missing_deployment_config_is_an_error() {
        let (_d, s) = specs(&[ENV]);
        let e = errors(&check(&s, Some(&ServerState::default()), full()));
        assert!(
            e[0].contains("fission-deployment-config.yaml: no DeploymentConfig found"),
            "{e:?}"
        );
    }

    #[test]
    fn server_objects_of_other_deployments_conflict_unless_allowed() {
        let (_d, s) = specs(&[CONFIG, ENV]);
        let mut env = fission_core::resources::Environment::new(
            "default",
            "nodejs",
            EnvironmentSpec::default(),
        );
        let server = ServerState {
            objects: vec![AnyResource::from(env.clone())],
        };
        let e = errors(&check(&s, Some(&server), full()));
        assert!(e[0].contains("metadata.name: Environment 'default/nodejs' already exists on the server and belongs to no spec deployment"), "{e:?}");
        let r = check(
            &s,
            Some(&server),
            CheckOptions {
                allow_conflicts: true,
                ..full()
            },
        );
        assert!(r.errors.is_empty());
        env.metadata.annotations = Some([(UID_ANNOTATION.to_owned(), "u1".to_owned())].into());
        let server = ServerState {
            objects: vec![AnyResource::from(env)],
        };
        assert!(check(&s, Some(&server), full()).errors.is_empty());
    }

    #[test]
    fn two_routes_on_the_same_url_and_method_clash() {
        let second = ROUTE.replace("name: r\n", "name: r2\n");
        let (_d, s) = specs(&[CONFIG, ENV, AUS, PKG, FUNC, ROUTE, second.as_str()]);
        let e = errors(&check(&s, Some(&ServerState::default()), full()));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("HTTPTrigger 'r2': spec.relativeurl: the same host, URL and method are already taken"),
            "{e:?}"
        );
    }

    #[test]
    fn a_stale_owned_route_does_not_clash_when_it_will_be_deleted() {
        let (_d, s) = specs(&[CONFIG, ENV, AUS, PKG, FUNC, ROUTE]);
        let mut old: HttpTrigger = match &s
            .contains(ResourceKind::HttpTrigger, "default", "r")
            .expect("r")
            .res
        {
            AnyResource::HttpTrigger(t) => t.clone(),
            _ => unreachable!(),
        };
        old.metadata.name = "old".into();
        old.metadata.annotations = Some([(UID_ANNOTATION.to_owned(), "u1".to_owned())].into());
        let server = ServerState {
            objects: vec![AnyResource::from(old)],
        };
        let e = errors(&check(&s, Some(&server), full()));
        assert!(
            e.iter().any(|e| e.contains("already exists (default/old)")),
            "{e:?}"
        );
        assert!(
            check(
                &s,
                Some(&server),
                CheckOptions {
                    deleting: true,
                    ..full()
                }
            )
            .errors
            .is_empty()
        );
    }

    #[test]
    fn images_the_server_cannot_run_are_caught_before_applying() {
        let (_d, s) = specs(&[
            CONFIG,
            &ENV.replace("fission/node-env", "example.com/my-runtime"),
        ]);
        let e = errors(&check(&s, Some(&ServerState::default()), full()));
        assert!(
            e[0].contains("spec.runtime.image: image 'example.com/my-runtime' is not supported"),
            "{e:?}"
        );
    }

    #[test]
    fn namespaces_are_filled_in_for_objects_written_without_one() {
        let (_d, mut s) = specs(&[FUNC]);
        let AnyResource::Function(f) = &s.objects[0].res else {
            panic!("not fn")
        };
        assert_eq!(
            (
                f.metadata.namespace.as_str(),
                f.spec.environment.namespace.as_str()
            ),
            ("default", "default")
        );
        insert_namespace(&mut s, "other", true);
        let AnyResource::Function(f) = &s.objects[0].res else {
            panic!("not fn")
        };
        assert_eq!(f.spec.package.packageref.namespace, "other");
    }
}
