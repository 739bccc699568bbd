//! Adoption of pods claimed by an executor that is gone (see `lease.rs` for "gone").
//!
//! A specialized pod carries what it serves: the function (labels `functionName`,
//! `functionNamespace`, `functionUid`, annotation `functionResourceVersion`, as Fission sets
//! them) and the environment version (labels `environmentName`, `environmentNamespace`,
//! `environmentUid`, annotation [`ANNOTATION_ENV_RV`]). Taking it over is a merge patch of
//! `executorInstanceId` that carries the pod's resourceVersion: of two executors adopting at
//! once, exactly one succeeds, the other gets 409 Conflict and leaves the pod alone. A gone
//! executor's pod that cannot serve (not Ready, never specialized, metadata missing) is
//! deleted, with the same precondition.

use std::collections::HashMap;

use fission_executor::ObjectVersion;
use k8s_openapi::api::core::v1::Pod;

use crate::lease::{LeaseView, Owner};
use crate::{ANNOTATION_EXECUTOR, is_ready, pod_end};

/// Annotation (ours) on pool pods: the resourceVersion of their environment.
pub const ANNOTATION_ENV_RV: &str = "fission-rs.io/environment-resource-version";

/// What to do with one claimed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Its owner is alive (or not known to be gone yet), or it is ours, or it is going.
    Leave,
    /// Its owner is not known to be alive or gone yet: decide at the given instant.
    Undecided(tokio::time::Instant),
    /// Its owner is gone and it serves this function and environment version: take it over.
    Adopt {
        /// The function version loaded into it.
        function: ObjectVersion,
        /// The environment version it runs.
        environment: ObjectVersion,
    },
    /// Its owner is gone and it cannot serve: delete it.
    Delete(&'static str),
}

/// The fate of a claimed pod, given this executor's id and the other executors' state
/// (an owner missing from `owners` has no Lease: gone).
pub fn fate(pod: &Pod, me: &str, owners: &HashMap<String, (Owner, Option<LeaseView>)>) -> Fate {
    let meta = &pod.metadata;
    let annotation = |k: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .filter(|v| !v.is_empty())
    };
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .filter(|v| !v.is_empty())
    };
    let owner = annotation(ANNOTATION_EXECUTOR).map(String::as_str);
    if owner == Some(me) || meta.deletion_timestamp.is_some() {
        return Fate::Leave;
    }
    match owner.and_then(|o| owners.get(o)).map(|(state, _)| *state) {
        Some(Owner::Alive) => return Fate::Leave,
        Some(Owner::Unknown(at)) => return Fate::Undecided(at),
        Some(Owner::Gone) | None => {}
    }
    let version = |ns: &str, name: &str, uid: &str, rv: Option<&String>| {
        Some(ObjectVersion {
            namespace: label(ns)?.clone(),
            name: label(name)?.clone(),
            uid: label(uid)?.clone(),
            resource_version: rv?.clone(),
        })
    };
    let Some(function) = version(
        "functionNamespace",
        "functionName",
        "functionUid",
        annotation("functionResourceVersion"),
    ) else {
        return Fate::Delete("claimed but never specialized");
    };
    let Some(environment) = version(
        "environmentNamespace",
        "environmentName",
        "environmentUid",
        annotation(ANNOTATION_ENV_RV),
    ) else {
        return Fate::Delete("its environment version is not recorded");
    };
    if !is_ready(pod) {
        return Fate::Delete("not ready");
    }
    if pod_end(pod, 0).is_some() {
        // A restarted runtime may have lost the function it had loaded (when is unknown).
        return Fate::Delete("a container restarted");
    }
    Fate::Adopt {
        function,
        environment,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(owner: &str, specialized: bool, ready: bool) -> Pod {
        let mut labels = json!({
            "managed": "false", "fission-rs.io/pool": "poolmgr-nodejs-default-7",
            "environmentName": "nodejs", "environmentNamespace": "default",
            "environmentUid": "e-uid",
        });
        let mut annotations = json!({
            "executorInstanceId": owner,
            ANNOTATION_ENV_RV: "7",
        });
        if specialized {
            labels["functionName"] = json!("hello");
            labels["functionNamespace"] = json!("default");
            labels["functionUid"] = json!("f-uid");
            annotations["functionResourceVersion"] = json!("9");
        }
        serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": labels, "annotations": annotations,
                         "resourceVersion": "100"},
            "status": {"podIP": "10.0.0.5", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .expect("pod")
    }

    fn owners(state: Owner) -> HashMap<String, (Owner, Option<LeaseView>)> {
        HashMap::from([("old".to_owned(), (state, None))])
    }

    #[test]
    fn a_specialized_ready_pod_of_a_gone_executor_is_adopted_with_its_versions() {
        match fate(&pod("old", true, true), "me", &owners(Owner::Gone)) {
            Fate::Adopt {
                function,
                environment,
            } => {
                assert_eq!(
                    (function.name.as_str(), function.uid.as_str()),
                    ("hello", "f-uid")
                );
                assert_eq!(function.resource_version, "9");
                assert_eq!(environment.name, "nodejs");
                assert_eq!(environment.resource_version, "7");
            }
            other => panic!("{other:?}"),
        }
        // No Lease at all is gone too.
        assert!(matches!(
            fate(&pod("old", true, true), "me", &HashMap::new()),
            Fate::Adopt { .. }
        ));
    }

    #[test]
    fn pods_of_live_or_undecided_executors_and_our_own_are_left_alone() {
        assert_eq!(
            fate(&pod("old", true, true), "me", &owners(Owner::Alive)),
            Fate::Leave
        );
        let at = tokio::time::Instant::now();
        assert_eq!(
            fate(&pod("old", true, true), "me", &owners(Owner::Unknown(at))),
            Fate::Undecided(at)
        );
        assert_eq!(
            fate(&pod("me", true, true), "me", &owners(Owner::Gone)),
            Fate::Leave
        );
    }

    #[test]
    fn a_gone_executor_s_pod_that_cannot_serve_is_deleted() {
        assert!(matches!(
            fate(&pod("old", false, true), "me", &owners(Owner::Gone)),
            Fate::Delete(_)
        ));
        assert!(matches!(
            fate(&pod("old", true, false), "me", &owners(Owner::Gone)),
            Fate::Delete(_)
        ));
        let restarted: Pod = {
            let mut p = serde_json::to_value(pod("old", true, true)).expect("json");
            p["status"]["containerStatuses"] = json!([{"name": "nodejs", "restartCount": 1,
                "ready": true, "image": "i", "imageID": ""}]);
            serde_json::from_value(p).expect("pod")
        };
        assert_eq!(
            fate(&restarted, "me", &owners(Owner::Gone)),
            Fate::Delete("a container restarted")
        );
        let mut no_env_rv = pod("old", true, true);
        no_env_rv
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .remove(ANNOTATION_ENV_RV);
        assert!(matches!(
            fate(&no_env_rv, "me", &owners(Owner::Gone)),
            Fate::Delete(_)
        ));
    }
}
