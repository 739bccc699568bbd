//! Checks against other objects, where Fission makes them: what an object refers to must exist,
//! what is still in use may not be deleted, and two routes may not claim the same
//! host + URL + method.

use fission_core::ResourceStore;
use fission_core::resources::{self, AnyResource, ResourceKind, function_ref_type};
use fission_core::runtime::{builtin_builder, builtin_runtime, unsupported_image_message};

use crate::error::ApiError;

fn ns_or<'a>(reference: &'a str, own: &'a str) -> &'a str {
    if reference.is_empty() { own } else { reference }
}

async fn exists(
    store: &dyn ResourceStore,
    kind: ResourceKind,
    ns: &str,
    name: &str,
) -> Result<bool, ApiError> {
    match store.get(kind, ns, name).await {
        Ok(_) => Ok(true),
        Err(fission_core::StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Checks before a create or update is written.
pub(crate) async fn check_before_write(
    store: &dyn ResourceStore,
    obj: &AnyResource,
) -> Result<(), ApiError> {
    let own_ns = obj.meta().namespace.as_str();
    match obj {
        AnyResource::Environment(env) => {
            if builtin_runtime(&env.spec.runtime.image).is_none() {
                return Err(ApiError::invalid(unsupported_image_message(
                    &env.spec.runtime.image,
                )));
            }
            if let Some(b) = env.spec.builder.as_ref().filter(|b| !b.image.is_empty())
                && builtin_builder(&b.image).is_none()
            {
                return Err(ApiError::invalid(format!(
                    "builder image '{}' is not supported yet: use fission/node-builder or fission/python-builder",
                    b.image
                )));
            }
        }
        AnyResource::Function(f) => {
            if f.spec.executor_type() == resources::executor_type::CONTAINER {
                return Err(ApiError::invalid(format!(
                    "executor type '{}' is not supported by this server yet: use poolmgr or newdeploy",
                    f.spec.executor_type()
                )));
            }
            let env = &f.spec.environment;
            let env_ns = ns_or(&env.namespace, own_ns);
            if !exists(store, ResourceKind::Environment, env_ns, &env.name).await? {
                return Err(ApiError::not_found(format!(
                    "environment '{}' (namespace '{env_ns}') referenced by function '{}' does not exist; create it first with 'fission env create'",
                    env.name, f.metadata.name
                )));
            }
            let pkg = &f.spec.package.packageref;
            let pkg_ns = ns_or(&pkg.namespace, own_ns);
            if !exists(store, ResourceKind::Package, pkg_ns, &pkg.name).await? {
                return Err(ApiError::not_found(format!(
                    "package '{}' (namespace '{pkg_ns}') referenced by function '{}' does not exist",
                    pkg.name, f.metadata.name
                )));
            }
        }
        AnyResource::Package(p) => {
            let env = &p.spec.environment;
            let env_ns = ns_or(&env.namespace, own_ns);
            if !exists(store, ResourceKind::Environment, env_ns, &env.name).await? {
                return Err(ApiError::not_found(format!(
                    "environment '{}' (namespace '{env_ns}') referenced by package '{}' does not exist; create it first with 'fission env create'",
                    env.name, p.metadata.name
                )));
            }
        }
        AnyResource::HttpTrigger(t) => {
            let url = t
                .spec
                .effective_prefix()
                .unwrap_or(&t.spec.relativeurl)
                .to_owned();
            let methods = t.spec.all_methods();
            for other in store.list(ResourceKind::HttpTrigger, None).await? {
                let AnyResource::HttpTrigger(o) = other else {
                    continue;
                };
                if o.metadata.name == t.metadata.name
                    && o.metadata.namespace == t.metadata.namespace
                {
                    continue;
                }
                let other_url = o.spec.effective_prefix().unwrap_or(&o.spec.relativeurl);
                if other_url == url
                    && o.spec.host == t.spec.host
                    && o.spec.all_methods().iter().any(|m| methods.contains(m))
                {
                    return Err(ApiError::conflict(format!(
                        "HTTPTrigger with same Host, URL & method already exists ({})",
                        o.metadata.name
                    )));
                }
            }
            if t.spec.functionref.ref_type == function_ref_type::FUNCTION_WEIGHTS
                && t.spec.functionref.functionweights.is_none()
            {
                return Err(ApiError::invalid(
                    "functionref.functionweights is required for type function-weights",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks before a delete: what is still used may not go unless forced.
pub(crate) async fn check_before_delete(
    store: &dyn ResourceStore,
    kind: ResourceKind,
    ns: &str,
    name: &str,
    force: bool,
) -> Result<(), ApiError> {
    if force {
        return Ok(());
    }
    match kind {
        ResourceKind::Environment => {
            let users = functions_where(store, |f| {
                f.spec.environment.name == name
                    && ns_or(&f.spec.environment.namespace, &f.metadata.namespace) == ns
            })
            .await?;
            if !users.is_empty() {
                return Err(ApiError::conflict(format!(
                    "Environment is used by at least one function ({}); delete those first or use --force",
                    users.join(", ")
                )));
            }
        }
        ResourceKind::Package => {
            let users = functions_where(store, |f| {
                f.spec.package.packageref.name == name
                    && ns_or(&f.spec.package.packageref.namespace, &f.metadata.namespace) == ns
            })
            .await?;
            if !users.is_empty() {
                return Err(ApiError::conflict(format!(
                    "Package is used by at least one function ({}); delete those first or use --force",
                    users.join(", ")
                )));
            }
        }
        _ => {}
    }
    Ok(())
}

async fn functions_where(
    store: &dyn ResourceStore,
    pred: impl Fn(&resources::Function) -> bool,
) -> Result<Vec<String>, ApiError> {
    Ok(store
        .list(ResourceKind::Function, None)
        .await?
        .into_iter()
        .filter_map(|o| match o {
            AnyResource::Function(f) if pred(&f) => {
                Some(format!("{}/{}", f.metadata.namespace, f.metadata.name))
            }
            _ => None,
        })
        .collect())
}

/// Annotation bumped on functions when a secret or config map they use changes, so their
/// instances retire and new calls read the new values (Fission's newdeploy does the same with
/// `RESOURCE_VERSION_COUNT`).
pub(crate) const VALUES_REVISION_ANNOTATION: &str = "fission.io/values-revision";

/// After a secret or config map changed: touch every function of `ns` that uses it.
pub(crate) async fn touch_users(
    store: &dyn ResourceStore,
    kind: ResourceKind,
    ns: &str,
    name: &str,
    revision: &str,
) -> Result<(), ApiError> {
    let uses = |refs: &[fission_core::ObjectReference], fns: &str| {
        refs.iter()
            .any(|r| r.name == name && ns_or(&r.namespace, fns) == ns)
    };
    for obj in store.list(ResourceKind::Function, Some(ns)).await? {
        let AnyResource::Function(mut f) = obj else {
            continue;
        };
        let refs = if kind == ResourceKind::Secret {
            &f.spec.secrets
        } else {
            &f.spec.configmaps
        };
        if !uses(refs, &f.metadata.namespace) {
            continue;
        }
        let stamp = format!("{}/{name}@{revision}", kind.plural());
        f.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(VALUES_REVISION_ANNOTATION.to_owned(), stamp);
        // Unconditional write (no resourceVersion): the annotation is ours alone.
        f.metadata.resource_version.clear();
        store.update(AnyResource::Function(f)).await?;
    }
    Ok(())
}
