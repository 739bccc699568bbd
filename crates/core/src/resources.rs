//! The `fission.io/v1` kinds. Field names follow Fission's JSON keys exactly, including the
//! inconsistent casing (`InvokeStrategy`, `ExecutorType`, `relativeurl`, `functionref`).

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::meta::{API_VERSION, ObjectMeta, ObjectReference};
use crate::validation::FieldErrors;

/// What every kind's `spec` provides to the generic machinery.
pub trait Spec:
    Serialize + DeserializeOwned + Clone + Default + fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The kind's `status` (`NoStatus` for kinds without one).
    type Status: Serialize
        + DeserializeOwned
        + Clone
        + Default
        + fmt::Debug
        + PartialEq
        + Send
        + Sync
        + 'static;
    /// Which kind this is.
    const KIND: ResourceKind;
    /// Fill in what Fission fills in when a field is absent or zero.
    fn apply_defaults(&mut self) {}
    /// Record every problem with the spec; `namespace` is the object's namespace.
    fn validate(&self, namespace: &str, errs: &mut FieldErrors);
}

/// A full object: `apiVersion`, `kind`, `metadata`, `spec`, `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "S: Spec", deserialize = "S: Spec"))]
pub struct Object<S: Spec> {
    /// Always `fission.io/v1` once stored.
    #[serde(
        rename = "apiVersion",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub api_version: String,
    /// The kind name (`Function`, `HTTPTrigger`, …).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub kind: String,
    /// Metadata.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub metadata: ObjectMeta,
    /// Desired state.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub spec: S,
    /// Observed state.
    #[serde(
        default,
        skip_serializing_if = "is_default",
        deserialize_with = "crate::decode::nullable"
    )]
    pub status: S::Status,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl<S: Spec> Object<S> {
    /// A new object with the given name, namespace and spec.
    pub fn new(namespace: &str, name: &str, spec: S) -> Self {
        Self {
            api_version: API_VERSION.to_owned(),
            kind: S::KIND.kind_name().to_owned(),
            metadata: ObjectMeta::named(namespace, name),
            spec,
            status: S::Status::default(),
        }
    }

    fn validate_into(&self, errs: &mut FieldErrors) {
        self.spec.validate(&self.metadata.namespace, errs);
    }

    fn same_content(&self, other: &Self) -> bool {
        self.spec == other.spec
    }

    /// Set `apiVersion`/`kind`, default the namespace and apply spec defaults.
    pub fn normalize(&mut self) {
        self.api_version = API_VERSION.to_owned();
        self.kind = S::KIND.kind_name().to_owned();
        if self.metadata.namespace.is_empty() {
            self.metadata.namespace = crate::DEFAULT_NAMESPACE.to_owned();
        }
        self.spec.apply_defaults();
    }
}

/// Marker status for kinds that have none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NoStatus {}

/// The kinds this platform stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// `Environment`
    Environment,
    /// `Function`
    Function,
    /// `Package`
    Package,
    /// `HTTPTrigger`
    HttpTrigger,
    /// `TimeTrigger`
    TimeTrigger,
    /// `KubernetesWatchTrigger`
    KubernetesWatchTrigger,
    /// `MessageQueueTrigger`
    MessageQueueTrigger,
    /// `CanaryConfig`
    CanaryConfig,
    /// Kubernetes `Secret` (held by this server on one machine)
    Secret,
    /// Kubernetes `ConfigMap` (held by this server on one machine)
    ConfigMap,
}

impl ResourceKind {
    /// Every kind, in dependency order (what others refer to comes first).
    pub const ALL: [ResourceKind; 10] = [
        Self::Secret,
        Self::ConfigMap,
        Self::Environment,
        Self::Package,
        Self::Function,
        Self::HttpTrigger,
        Self::TimeTrigger,
        Self::KubernetesWatchTrigger,
        Self::MessageQueueTrigger,
        Self::CanaryConfig,
    ];

    /// The wire `kind`.
    pub fn kind_name(self) -> &'static str {
        match self {
            Self::Environment => "Environment",
            Self::Function => "Function",
            Self::Package => "Package",
            Self::HttpTrigger => "HTTPTrigger",
            Self::TimeTrigger => "TimeTrigger",
            Self::KubernetesWatchTrigger => "KubernetesWatchTrigger",
            Self::MessageQueueTrigger => "MessageQueueTrigger",
            Self::CanaryConfig => "CanaryConfig",
            Self::Secret => "Secret",
            Self::ConfigMap => "ConfigMap",
        }
    }

    /// The `apiVersion` objects of this kind carry.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Secret | Self::ConfigMap => "v1",
            _ => API_VERSION,
        }
    }

    /// The Kubernetes plural resource name (also the store's table key).
    pub fn plural(self) -> &'static str {
        match self {
            Self::Environment => "environments",
            Self::Function => "functions",
            Self::Package => "packages",
            Self::HttpTrigger => "httptriggers",
            Self::TimeTrigger => "timetriggers",
            Self::KubernetesWatchTrigger => "kuberneteswatchtriggers",
            Self::MessageQueueTrigger => "messagequeuetriggers",
            Self::CanaryConfig => "canaryconfigs",
            Self::Secret => "secrets",
            Self::ConfigMap => "configmaps",
        }
    }

    /// The controller collection path below `/v2/`.
    pub fn api_path(self) -> &'static str {
        match self {
            Self::Environment => "environments",
            Self::Function => "functions",
            Self::Package => "packages",
            Self::HttpTrigger => "triggers/http",
            Self::TimeTrigger => "triggers/time",
            Self::KubernetesWatchTrigger => "watches",
            Self::MessageQueueTrigger => "triggers/messagequeue",
            Self::CanaryConfig => "canaryconfigs",
            Self::Secret => "secrets",
            Self::ConfigMap => "configmaps",
        }
    }

    /// Parse a wire kind name (case-insensitive).
    pub fn from_kind_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.kind_name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind_name())
    }
}

// === Quantities and resources ===

/// Kubernetes `ResourceRequirements` with quantities kept as strings (`"100m"`, `"128Mi"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceRequirements {
    /// Upper bounds.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "quantities"
    )]
    #[schemars(schema_with = "quantity_map_schema")]
    pub limits: BTreeMap<String, String>,
    /// Reservations.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "quantities"
    )]
    #[schemars(schema_with = "quantity_map_schema")]
    pub requests: BTreeMap<String, String>,
}

/// Quantities are strings or numbers, as in Kubernetes' own `ResourceRequirements` schema.
fn quantity_map_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": true
        }
    })
}

/// Quantities may be written as numbers in YAML (`cpu: 1`); keep them as strings.
fn quantities<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Q {
        S(String),
        I(i64),
        F(f64),
    }
    let raw: Option<BTreeMap<String, Q>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                Q::S(s) => s,
                Q::I(i) => i.to_string(),
                Q::F(f) => f.to_string(),
            };
            (k, s)
        })
        .collect())
}

impl ResourceRequirements {
    /// CPU in millicores for `key` (`"requests"` or `"limits"`), if set and parseable.
    pub fn cpu_millis(map: &BTreeMap<String, String>) -> Option<i64> {
        let q = map.get("cpu")?;
        if let Some(m) = q.strip_suffix('m') {
            m.parse().ok()
        } else {
            q.parse::<f64>().ok().map(|c| (c * 1000.0).round() as i64)
        }
    }

    /// Memory in bytes, if set and parseable.
    pub fn memory_bytes(map: &BTreeMap<String, String>) -> Option<u64> {
        parse_memory(map.get("memory")?)
    }
}

/// Parse a Kubernetes memory quantity (`128Mi`, `1G`, `1048576`).
pub fn parse_memory(q: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 10] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("", 1),
    ];
    for (suffix, mult) in UNITS {
        if let Some(n) = q.strip_suffix(suffix) {
            if let Ok(v) = n.parse::<u64>() {
                return v.checked_mul(mult);
            }
            if let Ok(v) = n.parse::<f64>() {
                return Some((v * mult as f64) as u64);
            }
        }
    }
    None
}

// === Environment ===

/// `Environment` spec (§2.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentSpec {
    /// Interface version, 1..=3 (3 honours `poolsize`).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub version: i32,
    /// The runtime image and container overrides.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub runtime: Runtime,
    /// Optional builder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<Builder>,
    /// `single` (default) or `infinite`.
    #[serde(
        rename = "allowedFunctionsPerContainer",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub allowed_functions_per_container: String,
    /// Whether instances may reach the outside network.
    #[serde(
        rename = "allowAccessToExternalNetwork",
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "crate::decode::nullable"
    )]
    pub allow_access_to_external_network: bool,
    /// Limits applied to every pool instance.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub resources: ResourceRequirements,
    /// Warm instances kept ready (v3 only; v1/v2 always 3).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub poolsize: i32,
    /// Seconds an instance gets to stop.
    #[serde(
        rename = "terminationGracePeriod",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub termination_grace_period: i64,
    /// Deliver archives without unpacking them.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub keeparchive: bool,
    /// Image pull secret name.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub imagepullsecret: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `spec.runtime` of an Environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Runtime {
    /// Runtime image; selects the built-in runtime here.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub image: String,
    /// Kubernetes container overrides (kept verbatim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<serde_json::Value>,
    /// Kubernetes pod spec overrides (kept verbatim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub podspec: Option<serde_json::Value>,
}

/// `spec.builder` of an Environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Builder {
    /// Builder image.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub image: String,
    /// Default build command.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub command: String,
    /// Container overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<serde_json::Value>,
    /// Pod spec overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub podspec: Option<serde_json::Value>,
}

/// Fission's default pool size.
pub const DEFAULT_POOLSIZE: i32 = 3;
/// Fission's default termination grace period, seconds (v1.22).
pub const DEFAULT_GRACE_PERIOD: i64 = 360;

impl EnvironmentSpec {
    /// How many warm instances the pool keeps: `poolsize` for v3, 3 for older versions.
    pub fn effective_poolsize(&self) -> usize {
        if self.version >= 3 {
            self.poolsize.max(0) as usize
        } else {
            DEFAULT_POOLSIZE as usize
        }
    }
}

impl Spec for EnvironmentSpec {
    type Status = NoStatus;
    const KIND: ResourceKind = ResourceKind::Environment;

    fn apply_defaults(&mut self) {
        if self.version == 0 {
            self.version = 3;
        }
        // `builder: {}` (what Go writes for an empty struct) means no builder.
        if self
            .builder
            .as_ref()
            .is_some_and(|b| *b == Builder::default())
        {
            self.builder = None;
        }
        if self.allowed_functions_per_container.is_empty() {
            self.allowed_functions_per_container = "single".to_owned();
        }
        if self.termination_grace_period == 0 {
            self.termination_grace_period = DEFAULT_GRACE_PERIOD;
        }
    }

    fn validate(&self, _ns: &str, errs: &mut FieldErrors) {
        crate::validation::environment(self, errs);
    }
}

// === Package ===

/// Checksum of an archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Checksum {
    /// `sha256`.
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub checksum_type: String,
    /// Lower-case hex digest.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub sum: String,
}

/// A package archive: bytes inline (`literal`) or at a URL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Archive {
    /// `literal`, `url`, or empty when there is no archive.
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub archive_type: String,
    /// The bytes (base64 on the wire).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "base64_bytes")]
    #[schemars(with = "String", extend("format" = "byte"))]
    pub literal: Vec<u8>,
    /// Where the bytes are, for `url` archives.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub url: String,
    /// Checksum of the bytes (ignored for literals).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub checksum: Checksum,
}

/// `literal` archive type.
pub const ARCHIVE_LITERAL: &str = "literal";
/// `url` archive type.
pub const ARCHIVE_URL: &str = "url";

impl Archive {
    /// Whether there is anything in this archive.
    pub fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.url.is_empty()
    }

    /// A literal archive holding `bytes`.
    pub fn literal(bytes: Vec<u8>) -> Self {
        Self {
            archive_type: ARCHIVE_LITERAL.to_owned(),
            literal: bytes,
            ..Self::default()
        }
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(Vec::new()),
            Some(s) => STANDARD
                .decode(s.trim())
                .map_err(|e| serde::de::Error::custom(format!("literal is not valid base64: {e}"))),
        }
    }
}

/// Annotation on a Package whose deployment is one file (`--code hello.js`): the file's own
/// name. Fission names the file `deployarchive` in the instance; keeping the user's name
/// makes stack traces and load errors point at `hello.js`.
pub const CODE_FILENAME_ANNOTATION: &str = "fission.io/code-filename";

/// `Package` spec (§2.2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackageSpec {
    /// The environment whose builder builds this package.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub environment: ObjectReference,
    /// Source archive (built into `deployment`).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub source: Archive,
    /// Deployment archive (what instances load).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub deployment: Archive,
    /// Build command overriding the environment's.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub buildcmd: String,
}

/// `Package` status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackageStatus {
    /// `pending`, `running`, `succeeded`, `failed` or `none`.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub buildstatus: String,
    /// Build output.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub buildlog: String,
    /// When the status last changed (RFC 3339).
    #[serde(
        rename = "lastUpdateTimestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_update_timestamp: Option<String>,
}

/// Build statuses.
pub mod build_status {
    /// Waiting for a builder.
    pub const PENDING: &str = "pending";
    /// Being built.
    pub const RUNNING: &str = "running";
    /// Built; deployable.
    pub const SUCCEEDED: &str = "succeeded";
    /// Build failed.
    pub const FAILED: &str = "failed";
    /// Nothing to build; deployable.
    pub const NONE: &str = "none";
    /// All valid values.
    pub const ALL: [&str; 5] = [PENDING, RUNNING, SUCCEEDED, FAILED, NONE];
}

impl Spec for PackageSpec {
    type Status = PackageStatus;
    const KIND: ResourceKind = ResourceKind::Package;

    fn validate(&self, _ns: &str, errs: &mut FieldErrors) {
        crate::validation::package(self, errs);
    }
}

/// The status Fission's buildermgr gives a package that arrives without one.
pub fn initial_build_status(spec: &PackageSpec) -> (&'static str, &'static str) {
    if !spec.deployment.is_empty() {
        (build_status::NONE, "")
    } else if !spec.source.is_empty() {
        (build_status::PENDING, "")
    } else {
        (
            build_status::FAILED,
            "Both deploy and source archive are empty",
        )
    }
}

// === Function ===

/// `spec.package` of a Function.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FunctionPackageRef {
    /// The package, pinned to a resourceVersion.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub packageref: PackageRef,
    /// The entrypoint, passed verbatim to the runtime.
    #[serde(
        rename = "functionName",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub function_name: String,
}

/// `{namespace, name, resourceversion}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PackageRef {
    /// Namespace.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub namespace: String,
    /// Name.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub name: String,
    /// Pinned resourceVersion of the package.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub resourceversion: String,
}

/// `InvokeStrategy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InvokeStrategy {
    /// Always `execution`.
    #[serde(
        rename = "StrategyType",
        alias = "strategyType",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub strategy_type: String,
    /// How instances are run.
    #[serde(
        rename = "ExecutionStrategy",
        alias = "executionStrategy",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub execution_strategy: ExecutionStrategy,
}

/// `ExecutionStrategy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecutionStrategy {
    /// `poolmgr`, `newdeploy` or `container`.
    #[serde(
        rename = "ExecutorType",
        alias = "executorType",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub executor_type: String,
    /// Minimum instances (newdeploy/container).
    #[serde(
        rename = "MinScale",
        alias = "minScale",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub min_scale: i32,
    /// Maximum instances (newdeploy/container).
    #[serde(
        rename = "MaxScale",
        alias = "maxScale",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub max_scale: i32,
    /// Deprecated HPA CPU target.
    #[serde(
        rename = "TargetCPUPercent",
        alias = "targetCPUPercent",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub target_cpu_percent: i32,
    /// Seconds a specialization may take.
    #[serde(
        rename = "SpecializationTimeout",
        alias = "specializationTimeout",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub specialization_timeout: i32,
    /// HPA metrics (kept verbatim).
    #[serde(
        rename = "hpaMetrics",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub hpa_metrics: Option<serde_json::Value>,
    /// HPA behaviour (kept verbatim).
    #[serde(
        rename = "hpaBehavior",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub hpa_behavior: Option<serde_json::Value>,
}

/// Executor types.
pub mod executor_type {
    /// Warm pool + specialization.
    pub const POOLMGR: &str = "poolmgr";
    /// One deployment per function.
    pub const NEWDEPLOY: &str = "newdeploy";
    /// User container.
    pub const CONTAINER: &str = "container";
}

/// `Function` spec (§2.3).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FunctionSpec {
    /// The environment that runs it.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub environment: ObjectReference,
    /// The code and entrypoint.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub package: FunctionPackageRef,
    /// Secrets mounted under `/secrets`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub secrets: Vec<ObjectReference>,
    /// Config maps mounted under `/configs`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub configmaps: Vec<ObjectReference>,
    /// Resources (newdeploy/container).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub resources: ResourceRequirements,
    /// How it is executed.
    #[serde(
        rename = "InvokeStrategy",
        alias = "invokeStrategy",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub invoke_strategy: InvokeStrategy,
    /// Seconds a call may take.
    #[serde(
        rename = "functionTimeout",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub function_timeout: i32,
    /// Seconds an instance may sit idle before it is reaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idletimeout: Option<i32>,
    /// Maximum specialized instances.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub concurrency: i32,
    /// Concurrent requests per instance.
    #[serde(
        rename = "requestsPerPod",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub requests_per_pod: i32,
    /// Every request gets a fresh instance.
    #[serde(
        rename = "onceOnly",
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "crate::decode::nullable"
    )]
    pub once_only: bool,
    /// Instances kept past the idle timeout.
    #[serde(
        rename = "retainPods",
        default,
        skip_serializing_if = "is_zero_i32",
        deserialize_with = "crate::decode::nullable"
    )]
    pub retain_pods: i32,
    /// Pod spec (container executor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub podspec: Option<serde_json::Value>,
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// Fission defaults for functions.
pub mod function_defaults {
    /// `functionTimeout`, seconds.
    pub const FUNCTION_TIMEOUT: i32 = 60;
    /// `idletimeout`, seconds.
    pub const IDLE_TIMEOUT: i32 = 120;
    /// `concurrency`.
    pub const CONCURRENCY: i32 = 500;
    /// `requestsPerPod`.
    pub const REQUESTS_PER_POD: i32 = 1;
    /// `SpecializationTimeout`, seconds (also the minimum).
    pub const SPECIALIZATION_TIMEOUT: i32 = 120;
}

impl FunctionSpec {
    /// The executor type (defaulted).
    pub fn executor_type(&self) -> &str {
        let t = self
            .invoke_strategy
            .execution_strategy
            .executor_type
            .as_str();
        if t.is_empty() {
            executor_type::POOLMGR
        } else {
            t
        }
    }

    /// Idle timeout in seconds (defaulted).
    pub fn idle_timeout_secs(&self) -> i32 {
        self.idletimeout.unwrap_or(function_defaults::IDLE_TIMEOUT)
    }
}

impl Spec for FunctionSpec {
    type Status = NoStatus;
    const KIND: ResourceKind = ResourceKind::Function;

    fn apply_defaults(&mut self) {
        let es = &mut self.invoke_strategy;
        if es.strategy_type.is_empty() {
            es.strategy_type = "execution".to_owned();
        }
        if es.execution_strategy.executor_type.is_empty() {
            es.execution_strategy.executor_type = executor_type::POOLMGR.to_owned();
        }
        if es.execution_strategy.specialization_timeout == 0 {
            es.execution_strategy.specialization_timeout =
                function_defaults::SPECIALIZATION_TIMEOUT;
        }
        if self.function_timeout == 0 {
            self.function_timeout = function_defaults::FUNCTION_TIMEOUT;
        }
        if self.idletimeout.is_none() {
            self.idletimeout = Some(function_defaults::IDLE_TIMEOUT);
        }
        if self.concurrency == 0 {
            self.concurrency = function_defaults::CONCURRENCY;
        }
        if self.requests_per_pod == 0 {
            self.requests_per_pod = function_defaults::REQUESTS_PER_POD;
        }
    }

    fn validate(&self, ns: &str, errs: &mut FieldErrors) {
        crate::validation::function(self, ns, errs);
    }
}

// === Triggers ===

/// `functionref` of triggers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FunctionReference {
    /// `name` or `function-weights`.
    #[serde(rename = "type", default, deserialize_with = "crate::decode::nullable")]
    pub ref_type: String,
    /// Function name (for `type: name`).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub name: String,
    /// Weights by function name (for `type: function-weights`).
    #[serde(default)]
    pub functionweights: Option<BTreeMap<String, i32>>,
}

/// `functionref.type` values.
pub mod function_ref_type {
    /// A single function by name.
    pub const NAME: &str = "name";
    /// Weighted split between functions.
    pub const FUNCTION_WEIGHTS: &str = "function-weights";
}

impl FunctionReference {
    /// A reference to one function by name.
    pub fn by_name(name: &str) -> Self {
        Self {
            ref_type: function_ref_type::NAME.to_owned(),
            name: name.to_owned(),
            functionweights: None,
        }
    }

    /// Every function name this reference can send traffic to.
    pub fn function_names(&self) -> Vec<String> {
        if self.ref_type == function_ref_type::FUNCTION_WEIGHTS {
            self.functionweights
                .iter()
                .flat_map(|w| w.keys().cloned())
                .collect()
        } else {
            vec![self.name.clone()]
        }
    }
}

/// `ingressconfig` of an HTTPTrigger.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IngressConfig {
    /// Ingress annotations.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Ingress path.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub path: String,
    /// Ingress host (`*` for all).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub host: String,
    /// TLS secret.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub tls: String,
}

/// `HTTPTrigger` spec (§2.4).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HttpTriggerSpec {
    /// Host to match (deprecated).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub host: String,
    /// Path template (`/hello/{name}`).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub relativeurl: String,
    /// Path prefix; wins over `relativeurl` when non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Forward the full path instead of stripping the prefix.
    #[serde(
        rename = "keepPrefix",
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "crate::decode::nullable"
    )]
    pub keep_prefix: bool,
    /// Deprecated single method.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub method: String,
    /// Methods matched.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub methods: Vec<String>,
    /// Target function(s).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub functionref: FunctionReference,
    /// Create a Kubernetes Ingress.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub createingress: bool,
    /// Ingress settings.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub ingressconfig: IngressConfig,
}

impl HttpTriggerSpec {
    /// `methods` ∪ `method`, upper-cased and de-duplicated, in order.
    pub fn all_methods(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in self.methods.iter().chain(std::iter::once(&self.method)) {
            let m = m.trim().to_ascii_uppercase();
            if !m.is_empty() && !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }

    /// The prefix if one is set and non-empty.
    pub fn effective_prefix(&self) -> Option<&str> {
        self.prefix.as_deref().filter(|p| !p.is_empty())
    }
}

/// HTTP methods Fission accepts on triggers.
pub const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

impl Spec for HttpTriggerSpec {
    type Status = NoStatus;
    const KIND: ResourceKind = ResourceKind::HttpTrigger;

    fn validate(&self, _ns: &str, errs: &mut FieldErrors) {
        crate::validation::http_trigger(self, errs);
    }
}

/// `TimeTrigger` spec (§2.6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimeTriggerSpec {
    /// Cron expression (5 or 6 fields, or `@every 1m`, `@hourly`, …).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub cron: String,
    /// Target function.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub functionref: FunctionReference,
    /// HTTP method used to call the function.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub method: String,
    /// Sub-path appended to the function's internal URL.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub subpath: String,
}

impl Spec for TimeTriggerSpec {
    type Status = NoStatus;
    const KIND: ResourceKind = ResourceKind::TimeTrigger;

    fn apply_defaults(&mut self) {
        if self.method.is_empty() {
            self.method = "POST".to_owned();
        }
        if self.subpath.is_empty() {
            self.subpath = "/".to_owned();
        }
        if self.functionref.ref_type.is_empty() {
            self.functionref.ref_type = function_ref_type::NAME.to_owned();
        }
    }

    fn validate(&self, _ns: &str, errs: &mut FieldErrors) {
        crate::validation::time_trigger(self, errs);
    }
}

/// `KubernetesWatchTrigger` spec (§2.5).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KubernetesWatchTriggerSpec {
    /// Namespace to watch.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub namespace: String,
    /// Object type: pod, service, replicationcontroller, job.
    #[serde(rename = "type", default, deserialize_with = "crate::decode::nullable")]
    pub object_type: String,
    /// Label selector (stored, not applied — as in Fission v1.22).
    #[serde(default)]
    pub labelselector: Option<BTreeMap<String, String>>,
    /// Target function.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub functionref: FunctionReference,
}

impl Spec for KubernetesWatchTriggerSpec {
    type Status = NoStatus;
    const KIND: ResourceKind = ResourceKind::KubernetesWatchTrigger;

    fn apply_defaults(&mut self) {
        if self.functionref.ref_type.is_empty() {
            self.functionref.ref_type = function_ref_type::NAME.to_owned();
        }
    }

    fn validate(&self, _ns: &str, errs: &mut FieldErrors) {
        crate::validation::watch_trigger(self, errs);
    }
}

/// `MessageQueueTrigger` spec (§2.7).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageQueueTriggerSpec {
    /// Target function.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub functionref: FunctionReference,
    /// Broker kind (`kafka`, `rabbitmq`, …).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub message_queue_type: String,
    /// Topic consumed.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub topic: String,
    /// Topic responses are published to.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub resp_topic: String,
    /// Topic errors are published to.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub error_topic: String,
    /// Retries after the first attempt.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub max_retries: i32,
    /// Content type of messages.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub content_type: String,
    /// KEDA polling interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<i32>,
    /// KEDA cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_period: Option<i32>,
    /// KEDA min replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replica_count: Option<i32>,
    /// KEDA max replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_count: Option<i32>,
    /// Connector metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Secret with connector credentials.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub secret: String,
    /// `fission` or `keda`.
    #[serde(
        rename = "mqtkind",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub mqtkind: String,
    /// Connector pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub podspec: Option<serde_json::Value>,
}

impl Spec for MessageQueueTriggerSpec {
    type Status = NoStatus;
    const KIND: ResourceKind = ResourceKind::MessageQueueTrigger;

    fn apply_defaults(&mut self) {
        if self.mqtkind.is_empty() {
            self.mqtkind = "keda".to_owned();
        }
        if self.content_type.is_empty() {
            self.content_type = "application/json".to_owned();
        }
        if self.functionref.ref_type.is_empty() {
            self.functionref.ref_type = function_ref_type::NAME.to_owned();
        }
    }

    fn validate(&self, _ns: &str, errs: &mut FieldErrors) {
        crate::validation::mq_trigger(self, errs);
    }
}

/// `CanaryConfig` spec (§2.8).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub struct CanaryConfigSpec {
    /// HTTPTrigger whose weights are shifted.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub trigger: String,
    /// Function receiving more traffic over time.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub newfunction: String,
    /// Function losing traffic.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub oldfunction: String,
    /// Percent shifted per step.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub weightincrement: i32,
    /// Step interval (Go duration, e.g. `2m`).
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub duration: String,
    /// Failure percentage that triggers rollback.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub failurethreshold: i32,
    /// `status-code`.
    #[serde(
        rename = "failureType",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub failure_type: String,
}

/// `CanaryConfig` status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CanaryConfigStatus {
    /// `pending`, `succeeded`, `failed`, `aborted`.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub status: String,
}

impl Spec for CanaryConfigSpec {
    type Status = CanaryConfigStatus;
    const KIND: ResourceKind = ResourceKind::CanaryConfig;

    fn apply_defaults(&mut self) {
        if self.weightincrement == 0 {
            self.weightincrement = 20;
        }
        if self.duration.is_empty() {
            self.duration = "2m".to_owned();
        }
        if self.failurethreshold == 0 {
            self.failurethreshold = 10;
        }
        if self.failure_type.is_empty() {
            self.failure_type = "status-code".to_owned();
        }
    }

    fn validate(&self, _ns: &str, errs: &mut FieldErrors) {
        crate::validation::canary(self, errs);
    }
}

/// An Environment object.
pub type Environment = Object<EnvironmentSpec>;
/// A Function object.
pub type Function = Object<FunctionSpec>;
/// A Package object.
pub type Package = Object<PackageSpec>;
/// An HTTPTrigger object.
pub type HttpTrigger = Object<HttpTriggerSpec>;
/// A TimeTrigger object.
pub type TimeTrigger = Object<TimeTriggerSpec>;
/// A KubernetesWatchTrigger object.
pub type KubernetesWatchTrigger = Object<KubernetesWatchTriggerSpec>;
/// A MessageQueueTrigger object.
pub type MessageQueueTrigger = Object<MessageQueueTriggerSpec>;
/// A CanaryConfig object.
pub type CanaryConfig = Object<CanaryConfigSpec>;

/// An object of any kind, as the store and the change feed carry it.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyResource {
    /// Environment
    Environment(Environment),
    /// Function
    Function(Function),
    /// Package
    Package(Package),
    /// HTTPTrigger
    HttpTrigger(HttpTrigger),
    /// TimeTrigger
    TimeTrigger(TimeTrigger),
    /// KubernetesWatchTrigger
    KubernetesWatchTrigger(KubernetesWatchTrigger),
    /// MessageQueueTrigger
    MessageQueueTrigger(MessageQueueTrigger),
    /// CanaryConfig
    CanaryConfig(CanaryConfig),
    /// Secret
    Secret(Secret),
    /// ConfigMap
    ConfigMap(ConfigMap),
}

/// Apply `$body` to whichever object `$any` holds, bound as `$o`.
macro_rules! each_kind {
    ($any:expr, $o:ident => $body:expr) => {
        match $any {
            AnyResource::Environment($o) => $body,
            AnyResource::Function($o) => $body,
            AnyResource::Package($o) => $body,
            AnyResource::HttpTrigger($o) => $body,
            AnyResource::TimeTrigger($o) => $body,
            AnyResource::KubernetesWatchTrigger($o) => $body,
            AnyResource::MessageQueueTrigger($o) => $body,
            AnyResource::CanaryConfig($o) => $body,
            AnyResource::Secret($o) => $body,
            AnyResource::ConfigMap($o) => $body,
        }
    };
}

impl AnyResource {
    /// Parse JSON as an object of `kind`.
    pub fn from_json(kind: ResourceKind, bytes: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            ResourceKind::Environment => Self::Environment(serde_json::from_slice(bytes)?),
            ResourceKind::Function => Self::Function(serde_json::from_slice(bytes)?),
            ResourceKind::Package => Self::Package(serde_json::from_slice(bytes)?),
            ResourceKind::HttpTrigger => Self::HttpTrigger(serde_json::from_slice(bytes)?),
            ResourceKind::TimeTrigger => Self::TimeTrigger(serde_json::from_slice(bytes)?),
            ResourceKind::KubernetesWatchTrigger => {
                Self::KubernetesWatchTrigger(serde_json::from_slice(bytes)?)
            }
            ResourceKind::MessageQueueTrigger => {
                Self::MessageQueueTrigger(serde_json::from_slice(bytes)?)
            }
            ResourceKind::CanaryConfig => Self::CanaryConfig(serde_json::from_slice(bytes)?),
            ResourceKind::Secret => Self::Secret(serde_json::from_slice(bytes)?),
            ResourceKind::ConfigMap => Self::ConfigMap(serde_json::from_slice(bytes)?),
        })
    }

    /// Parse a JSON value as an object of `kind`.
    pub fn from_value(kind: ResourceKind, v: serde_json::Value) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            ResourceKind::Environment => Self::Environment(serde_json::from_value(v)?),
            ResourceKind::Function => Self::Function(serde_json::from_value(v)?),
            ResourceKind::Package => Self::Package(serde_json::from_value(v)?),
            ResourceKind::HttpTrigger => Self::HttpTrigger(serde_json::from_value(v)?),
            ResourceKind::TimeTrigger => Self::TimeTrigger(serde_json::from_value(v)?),
            ResourceKind::KubernetesWatchTrigger => {
                Self::KubernetesWatchTrigger(serde_json::from_value(v)?)
            }
            ResourceKind::MessageQueueTrigger => {
                Self::MessageQueueTrigger(serde_json::from_value(v)?)
            }
            ResourceKind::CanaryConfig => Self::CanaryConfig(serde_json::from_value(v)?),
            ResourceKind::Secret => Self::Secret(serde_json::from_value(v)?),
            ResourceKind::ConfigMap => Self::ConfigMap(serde_json::from_value(v)?),
        })
    }

    /// The kind held.
    pub fn kind(&self) -> ResourceKind {
        match self {
            Self::Environment(_) => ResourceKind::Environment,
            Self::Function(_) => ResourceKind::Function,
            Self::Package(_) => ResourceKind::Package,
            Self::HttpTrigger(_) => ResourceKind::HttpTrigger,
            Self::TimeTrigger(_) => ResourceKind::TimeTrigger,
            Self::KubernetesWatchTrigger(_) => ResourceKind::KubernetesWatchTrigger,
            Self::MessageQueueTrigger(_) => ResourceKind::MessageQueueTrigger,
            Self::CanaryConfig(_) => ResourceKind::CanaryConfig,
            Self::Secret(_) => ResourceKind::Secret,
            Self::ConfigMap(_) => ResourceKind::ConfigMap,
        }
    }

    /// Metadata.
    pub fn meta(&self) -> &ObjectMeta {
        each_kind!(self, o => &o.metadata)
    }

    /// Mutable metadata.
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_kind!(self, o => &mut o.metadata)
    }

    /// Serialize to JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing these plain data types cannot fail: no maps with non-string keys.
        each_kind!(self, o => serde_json::to_vec(o).unwrap_or_default())
    }

    /// Serialize to a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        each_kind!(self, o => serde_json::to_value(o).unwrap_or_default())
    }

    /// Set apiVersion/kind/namespace and spec defaults.
    pub fn normalize(&mut self) {
        each_kind!(self, o => o.normalize())
    }

    /// Whether `spec` differs between two objects of the same kind.
    pub fn spec_differs(&self, other: &AnyResource) -> bool {
        match (self, other) {
            (Self::Environment(a), Self::Environment(b)) => !a.same_content(b),
            (Self::Function(a), Self::Function(b)) => !a.same_content(b),
            (Self::Package(a), Self::Package(b)) => !a.same_content(b),
            (Self::HttpTrigger(a), Self::HttpTrigger(b)) => !a.same_content(b),
            (Self::TimeTrigger(a), Self::TimeTrigger(b)) => !a.same_content(b),
            (Self::KubernetesWatchTrigger(a), Self::KubernetesWatchTrigger(b)) => {
                !a.same_content(b)
            }
            (Self::MessageQueueTrigger(a), Self::MessageQueueTrigger(b)) => !a.same_content(b),
            (Self::CanaryConfig(a), Self::CanaryConfig(b)) => !a.same_content(b),
            (Self::Secret(a), Self::Secret(b)) => !a.same_content(b),
            (Self::ConfigMap(a), Self::ConfigMap(b)) => !a.same_content(b),
            _ => true,
        }
    }

    /// Validate metadata and spec; every problem is reported.
    pub fn validate(&self) -> Result<(), crate::ValidationError> {
        let mut errs = FieldErrors::default();
        crate::validation::metadata(self.meta(), &mut errs);
        each_kind!(self, o => o.validate_into(&mut errs));
        errs.into_result(self.kind(), &self.meta().name)
    }
}

macro_rules! any_from {
    ($($variant:ident),*) => {$(
        impl From<$variant> for AnyResource {
            fn from(o: $variant) -> Self { Self::$variant(o) }
        }
        impl TryFrom<AnyResource> for $variant {
            type Error = AnyResource;
            fn try_from(a: AnyResource) -> Result<Self, AnyResource> {
                match a { AnyResource::$variant(o) => Ok(o), other => Err(other) }
            }
        }
    )*};
}
any_from!(
    Environment,
    Function,
    Package,
    HttpTrigger,
    TimeTrigger,
    KubernetesWatchTrigger,
    MessageQueueTrigger,
    CanaryConfig,
    Secret,
    ConfigMap
);

// === Secrets and config maps ===
//
// Fission reads these from Kubernetes; on one machine this server holds them itself, in the
// Kubernetes `v1` shapes so they can move to a cluster unchanged.

/// A Kubernetes `Secret`: named byte values, mounted at `/secrets/<ns>/<name>/<key>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Secret {
    /// `v1`.
    #[serde(
        rename = "apiVersion",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub api_version: String,
    /// `Secret`.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub kind: String,
    /// Metadata.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub metadata: ObjectMeta,
    /// Values (base64 on the wire).
    #[serde(default, with = "base64_map")]
    pub data: BTreeMap<String, Vec<u8>>,
    /// Write-only plain-text values, merged into `data` when stored.
    #[serde(
        rename = "stringData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub string_data: Option<BTreeMap<String, String>>,
    /// Secret type (`Opaque`).
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub secret_type: String,
}

/// A Kubernetes `ConfigMap`: named text values, mounted at `/configs/<ns>/<name>/<key>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigMap {
    /// `v1`.
    #[serde(
        rename = "apiVersion",
        default,
        deserialize_with = "crate::decode::nullable"
    )]
    pub api_version: String,
    /// `ConfigMap`.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub kind: String,
    /// Metadata.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub metadata: ObjectMeta,
    /// Values.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub data: BTreeMap<String, String>,
}

/// Largest total size of a secret's or config map's values (Kubernetes' limit).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

fn data_keys<'a>(keys: impl Iterator<Item = &'a String>, total: usize, errs: &mut FieldErrors) {
    for k in keys {
        let ok = !k.is_empty()
            && k.len() <= 253
            && k != "."
            && k != ".."
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok {
            errs.push(
                format!("data.{k}"),
                format!("'{k}' is not a valid key: use letters, digits, '-', '_' and '.'"),
            );
        }
    }
    if total > MAX_DATA_BYTES {
        errs.push(
            "data",
            format!("values total {total} bytes; the limit is {MAX_DATA_BYTES}"),
        );
    }
}

impl Secret {
    /// Merge `stringData`, set `apiVersion`/`kind`/namespace.
    pub fn normalize(&mut self) {
        self.api_version = "v1".to_owned();
        self.kind = "Secret".to_owned();
        if self.metadata.namespace.is_empty() {
            self.metadata.namespace = crate::DEFAULT_NAMESPACE.to_owned();
        }
        if let Some(sd) = self.string_data.take() {
            for (k, v) in sd {
                self.data.insert(k, v.into_bytes());
            }
        }
        if self.secret_type.is_empty() {
            self.secret_type = "Opaque".to_owned();
        }
    }

    fn validate_into(&self, errs: &mut FieldErrors) {
        data_keys(
            self.data.keys(),
            self.data.values().map(Vec::len).sum(),
            errs,
        );
    }

    fn same_content(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl ConfigMap {
    /// Set `apiVersion`/`kind`/namespace.
    pub fn normalize(&mut self) {
        self.api_version = "v1".to_owned();
        self.kind = "ConfigMap".to_owned();
        if self.metadata.namespace.is_empty() {
            self.metadata.namespace = crate::DEFAULT_NAMESPACE.to_owned();
        }
    }

    fn validate_into(&self, errs: &mut FieldErrors) {
        data_keys(
            self.data.keys(),
            self.data.values().map(String::len).sum(),
            errs,
        );
    }

    fn same_content(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

mod base64_map {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, STANDARD.encode(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let raw: Option<BTreeMap<String, String>> = Option::deserialize(d)?;
        raw.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                STANDARD
                    .decode(v.trim())
                    .map(|b| (k.clone(), b))
                    .map_err(|e| {
                        serde::de::Error::custom(format!("data.{k} is not valid base64: {e}"))
                    })
            })
            .collect()
    }
}
