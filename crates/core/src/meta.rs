use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The API group/version every Fission object carries.
pub const API_VERSION: &str = "fission.io/v1";

/// Kubernetes-style object metadata, with the keys Fission objects use.
///
/// Unknown keys (`ownerReferences`, `managedFields`, …) are kept in `extra` so objects written by
/// other tools round-trip unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name, unique per kind and namespace.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub name: String,
    /// Namespace; empty means "default" on create.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub namespace: String,
    /// Server-assigned unique id.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub uid: String,
    /// Server-assigned version, a decimal string that grows with every write.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "crate::decode::nullable"
    )]
    pub resource_version: String,
    /// Incremented by the server whenever `spec` changes.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "crate::decode::nullable"
    )]
    pub generation: i64,
    /// RFC 3339 creation time, set by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Keys we do not interpret, preserved verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl ObjectMeta {
    /// Metadata with a name and namespace and nothing else.
    pub fn named(namespace: &str, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            ..Self::default()
        }
    }

    /// The resourceVersion as a number (0 when unset or not numeric).
    pub fn resource_version_number(&self) -> u64 {
        self.resource_version.parse().unwrap_or(0)
    }
}

/// A `{namespace, name}` reference to another object (environment, secret, config map).
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub struct ObjectReference {
    /// Namespace of the referenced object; empty means the referrer's namespace.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub namespace: String,
    /// Name of the referenced object.
    #[serde(default, deserialize_with = "crate::decode::nullable")]
    pub name: String,
}
