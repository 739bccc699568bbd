//! Decoding objects the way Fission's Go types accept them.
//!
//! Go marshals an empty slice, map or pointer as `null`, so specs written by Fission's CLI carry
//! `configmaps: null`, `secrets: null`, `metadata.creationTimestamp: null`. Every field here
//! therefore reads `null` as absent ([`nullable`]). Keys this model does not know are ignored,
//! as Go ignores them, but reported so a typo does not vanish silently ([`decode_object`]).

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::resources::{AnyResource, ResourceKind};

/// Deserialize `T`, reading `null` as `T::default()` (what Go's decoder leaves in the field).
pub fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An object decoded from a request body or spec, with the keys that were ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The object.
    pub object: AnyResource,
    /// Dotted paths of keys this model does not know (`spec.runtime.imagee`).
    pub ignored: Vec<String>,
}

impl Decoded {
    /// One warning line per ignored key, phrased as Kubernetes phrases them.
    pub fn warnings(&self) -> Vec<String> {
        self.ignored
            .iter()
            .map(|p| format!("unknown field \"{p}\" ignored"))
            .collect()
    }
}

/// Decode `value` as an object of `kind`, collecting every key that was ignored.
pub fn decode_object(kind: ResourceKind, value: Value) -> Result<Decoded, serde_json::Error> {
    let mut ignored = Vec::new();
    let object = {
        let record = |path: serde_ignored::Path<'_>| ignored.push(dotted(&path));
        macro_rules! typed {
            ($variant:ident) => {
                AnyResource::$variant(serde_ignored::deserialize(value, record)?)
            };
        }
        match kind {
            ResourceKind::Environment => typed!(Environment),
            ResourceKind::Function => typed!(Function),
            ResourceKind::Package => typed!(Package),
            ResourceKind::HttpTrigger => typed!(HttpTrigger),
            ResourceKind::TimeTrigger => typed!(TimeTrigger),
            ResourceKind::KubernetesWatchTrigger => typed!(KubernetesWatchTrigger),
            ResourceKind::MessageQueueTrigger => typed!(MessageQueueTrigger),
            ResourceKind::CanaryConfig => typed!(CanaryConfig),
            ResourceKind::Secret => typed!(Secret),
            ResourceKind::ConfigMap => typed!(ConfigMap),
        }
    };
    Ok(Decoded { object, ignored })
}

/// `spec.runtime.imagee`, `spec.secrets[0].nam`: the path a user would look for.
pub fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        Path::Map { parent, key } => {
            let p = dotted(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn null_lists_and_pointers_read_as_absent() {
        let d = decode_object(
            ResourceKind::Function,
            json!({
                "metadata": {"name": "f", "creationTimestamp": null, "labels": null},
                "spec": {"secrets": null, "configmaps": null, "environment": {"name": "e", "namespace": null},
                         "package": {"packageref": {"name": "p"}, "functionName": null},
                         "InvokeStrategy": null, "resources": {"limits": null}},
                "status": null
            }),
        )
        .expect("decodes");
        let AnyResource::Function(f) = d.object else {
            panic!("not a function")
        };
        assert!(f.spec.secrets.is_empty() && f.spec.configmaps.is_empty());
        assert_eq!(f.spec.environment.namespace, "");
        assert!(d.ignored.is_empty(), "{:?}", d.ignored);
    }

    #[test]
    fn unknown_keys_are_reported_with_their_path() {
        let d = decode_object(
            ResourceKind::Environment,
            json!({"metadata": {"name": "e"}, "spec": {"runtime": {"image": "i", "imagee": "x"}, "poolSize": 2}}),
        )
        .expect("decodes");
        assert_eq!(
            d.ignored,
            vec!["spec.poolSize".to_owned(), "spec.runtime.imagee".to_owned()]
        );
        assert_eq!(
            d.warnings()[1],
            "unknown field \"spec.runtime.imagee\" ignored"
        );
    }

    #[test]
    fn wrong_types_are_still_errors() {
        let err = decode_object(ResourceKind::Function, json!({"spec": {"secrets": "s"}}))
            .expect_err("string is not a list");
        assert!(err.to_string().contains("sequence"), "{err}");
    }
}
