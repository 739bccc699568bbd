//! `fission.io/v1` CustomResourceDefinitions generated from the core spec types.
//!
//! The schemas come from `schemars` over the same structs the store (de)serializes, so the API
//! server accepts exactly the shapes fission-rs reads. Kubernetes' structural-schema rules are
//! applied with kube's own transforms (as `#[derive(CustomResource)]` does), plus one rule of
//! ours: free-form fields (`serde_json::Value`: container and pod specs, HPA settings) keep
//! whatever they are given, as Fission's CRDs keep them.

use fission_core::ResourceKind;
use fission_core::resources::{
    CanaryConfigSpec, EnvironmentSpec, FunctionSpec, HttpTriggerSpec, KubernetesWatchTriggerSpec,
    MessageQueueTriggerSpec, PackageSpec, Spec, TimeTriggerSpec,
};
use kube_core::schema::{OptionalEnum, OptionalIntOrString, StructuralSchemaRewriter};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// The API group of every Fission kind.
pub const GROUP: &str = "fission.io";
/// The one served and stored version.
pub const VERSION: &str = "v1";

/// The kinds that are CustomResources (all but Secret and ConfigMap, which are core/v1).
pub const CRD_KINDS: [ResourceKind; 8] = [
    ResourceKind::Environment,
    ResourceKind::Function,
    ResourceKind::Package,
    ResourceKind::HttpTrigger,
    ResourceKind::TimeTrigger,
    ResourceKind::KubernetesWatchTrigger,
    ResourceKind::MessageQueueTrigger,
    ResourceKind::CanaryConfig,
];

/// Whether `kind` is stored as a `fission.io` CustomResource.
pub fn is_custom_resource(kind: ResourceKind) -> bool {
    CRD_KINDS.contains(&kind)
}

/// The CRD file name, as Fission names its own (`fission.io_functions.yaml`).
pub fn file_name(kind: ResourceKind) -> String {
    format!("{GROUP}_{}.yaml", kind.plural())
}

fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(OptionalEnum)
        .with_transform(OptionalIntOrString)
        .with_transform(StructuralSchemaRewriter)
        .into_generator();
    let mut v = generator.into_root_schema_for::<T>().to_value();
    if let Some(o) = v.as_object_mut() {
        // The type's own title/doc would repeat the field description one level up.
        o.remove("title");
    }
    make_structural(&mut v);
    v
}

/// Kubernetes needs a `type` on every field, except fields that keep unknown content. A schema
/// with no type and no combinator is a `serde_json::Value`: let it keep anything. Defaults are
/// dropped: the API server would write them into every object, where Fission's CRDs only
/// default a few fields.
fn make_structural(v: &mut Value) {
    let Some(o) = v.as_object_mut() else { return };
    o.remove("default");
    if o.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        // kube's rewriter hoists the branch types out of `anyOf`; Kubernetes wants them there,
        // as in its own Quantity schema.
        o.insert(
            "anyOf".into(),
            json!([{"type": "integer"}, {"type": "string"}]),
        );
        return;
    }
    const TYPED: [&str; 6] = [
        "type",
        "anyOf",
        "oneOf",
        "allOf",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
    ];
    if !TYPED.iter().any(|k| o.contains_key(*k)) {
        o.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            Value::Bool(true),
        );
    }
    if let Some(Value::Object(props)) = o.get_mut("properties") {
        props.values_mut().for_each(make_structural);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = o.get_mut(key) {
            make_structural(sub);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(subs)) = o.get_mut(key) {
            subs.iter_mut().for_each(make_structural);
        }
    }
}

fn has_properties(schema: &Value) -> bool {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty())
}

fn openapi_schema<S: Spec + JsonSchema>() -> Value
where
    S::Status: JsonSchema,
{
    let mut props = Map::new();
    props.insert("apiVersion".into(), json!({"type": "string"}));
    props.insert("kind".into(), json!({"type": "string"}));
    props.insert("metadata".into(), json!({"type": "object"}));
    props.insert("spec".into(), schema_of::<S>());
    let status = schema_of::<S::Status>();
    if has_properties(&status) {
        props.insert("status".into(), status);
    }
    json!({"type": "object", "required": ["spec"], "properties": props})
}

/// Short names Fission registers (`kubectl get fn`).
fn short_names(kind: ResourceKind) -> &'static [&'static str] {
    match kind {
        ResourceKind::Function => &["fn"],
        ResourceKind::Package => &["pkg"],
        _ => &[],
    }
}

/// The CustomResourceDefinition for `kind`, or None for Secret/ConfigMap.
///
/// There is no status subresource: the store writes `status` with the object (the package
/// build status, the canary status), as Fission v1.22's CRDs allow.
pub fn crd(kind: ResourceKind) -> Option<Value> {
    let schema = match kind {
        ResourceKind::Environment => openapi_schema::<EnvironmentSpec>(),
        ResourceKind::Function => openapi_schema::<FunctionSpec>(),
        ResourceKind::Package => openapi_schema::<PackageSpec>(),
        ResourceKind::HttpTrigger => openapi_schema::<HttpTriggerSpec>(),
        ResourceKind::TimeTrigger => openapi_schema::<TimeTriggerSpec>(),
        ResourceKind::KubernetesWatchTrigger => openapi_schema::<KubernetesWatchTriggerSpec>(),
        ResourceKind::MessageQueueTrigger => openapi_schema::<MessageQueueTriggerSpec>(),
        ResourceKind::CanaryConfig => openapi_schema::<CanaryConfigSpec>(),
        ResourceKind::Secret | ResourceKind::ConfigMap => return None,
    };
    let name = kind.kind_name();
    let mut names = json!({
        "kind": name,
        "listKind": format!("{name}List"),
        "plural": kind.plural(),
        "singular": name.to_ascii_lowercase(),
    });
    if !short_names(kind).is_empty() {
        names["shortNames"] = json!(short_names(kind));
    }
    Some(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{GROUP}", kind.plural())},
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": schema},
            }],
        },
    }))
}

/// The CRD for `kind` as the YAML file checked into `deploy/crds/`.
pub fn crd_yaml(kind: ResourceKind) -> Option<String> {
    let crd = crd(kind)?;
    // Serializing a serde_json::Value to YAML cannot fail.
    let body = serde_norway::to_string(&crd).unwrap_or_default();
    Some(format!(
        "# Generated from the fission-core spec types by fission-store-kube; do not edit.\n\
         # Regenerate: FISSION_UPDATE_CRDS=1 cargo test -p fission-store-kube --lib crd\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn crd_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds")
    }

    #[test]
    fn checked_in_crds_match_the_core_types() {
        let dir = crd_dir();
        let update = std::env::var_os("FISSION_UPDATE_CRDS").is_some();
        let mut drifted = Vec::new();
        for kind in CRD_KINDS {
            let path = dir.join(file_name(kind));
            let want = crd_yaml(kind).expect("a CRD kind");
            if update {
                std::fs::create_dir_all(&dir).expect("create deploy/crds");
                std::fs::write(&path, &want).expect("write CRD");
                continue;
            }
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            if have != want {
                drifted.push(path.display().to_string());
            }
        }
        assert!(
            drifted.is_empty(),
            "CRDs differ from the core types: {drifted:?}; regenerate with \
             FISSION_UPDATE_CRDS=1 cargo test -p fission-store-kube --lib crd"
        );
    }

    fn field<'a>(crd: &'a Value, path: &[&str]) -> &'a Value {
        let mut v = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        for p in path {
            v = &v["properties"][*p];
        }
        v
    }

    #[test]
    fn schemas_keep_fissions_wire_names_and_types() {
        let f = crd(ResourceKind::Function).expect("crd");
        let es = field(&f, &["spec", "InvokeStrategy", "ExecutionStrategy"]);
        assert_eq!(es["properties"]["ExecutorType"]["type"], "string");
        assert_eq!(es["properties"]["MinScale"]["type"], "integer");
        assert_eq!(field(&f, &["spec", "configmaps"])["type"], "array");
        assert_eq!(field(&f, &["spec", "idletimeout"])["nullable"], true);
        let pod = field(&f, &["spec", "podspec"]);
        assert_eq!(pod["x-kubernetes-preserve-unknown-fields"], true, "{pod}");
        let p = crd(ResourceKind::Package).expect("crd");
        assert_eq!(
            field(&p, &["spec", "deployment", "literal"])["format"],
            "byte"
        );
        assert_eq!(field(&p, &["status", "buildstatus"])["type"], "string");
        let limits = field(&p, &["spec"]);
        assert!(limits.is_object());
        let e = crd(ResourceKind::Environment).expect("crd");
        let q = &field(&e, &["spec", "resources", "limits"])["additionalProperties"];
        assert_eq!(q["x-kubernetes-int-or-string"], true, "{q}");
        assert!(
            field(&e, &["status"]).is_null(),
            "Environment has no status in Fission v1.22"
        );
        let h = crd(ResourceKind::HttpTrigger).expect("crd");
        assert_eq!(
            field(&h, &["spec", "functionref", "functionweights"])["nullable"],
            true
        );
        assert!(crd(ResourceKind::Secret).is_none());
    }
}
