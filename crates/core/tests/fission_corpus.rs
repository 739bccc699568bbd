//! Objects exactly as Fission v1.22's CLI writes them (`tests/fission-corpus/`): every one must
//! decode without an ignored key, validate, round-trip unchanged, and mean what Fission means.

use std::path::{Path, PathBuf};

use fission_core::resources::*;
use fission_core::{AnyResource, ResourceKind, decode_object};
use serde_json::Value;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fission-corpus")
}

/// Every Fission object of the corpus, with the file it came from.
fn documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for sub in ["specs", "api"] {
        let mut files: Vec<_> = std::fs::read_dir(corpus().join(sub))
            .expect("corpus dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "json"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read");
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let docs: Vec<Value> = if name.ends_with(".json") {
                vec![serde_json::from_str(&text).expect("json")]
            } else {
                text.split("\n---\n")
                    .map(|d| serde_norway::from_str(d).unwrap_or_else(|e| panic!("{name}: {e}")))
                    .collect()
            };
            out.extend(docs.into_iter().map(|d| (name.clone(), d)));
        }
    }
    out
}

/// Decode, normalize and validate one corpus document as the controller does.
fn accept(file: &str, doc: &Value) -> Option<AnyResource> {
    let kind_name = doc["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("{file}: no kind"));
    if matches!(kind_name, "DeploymentConfig" | "ArchiveUploadSpec") {
        return None;
    }
    let kind = ResourceKind::from_kind_name(kind_name)
        .unwrap_or_else(|| panic!("{file}: unknown kind {kind_name}"));
    let d = decode_object(kind, doc.clone())
        .unwrap_or_else(|e| panic!("{file}: {kind_name} refused: {e}"));
    assert!(
        d.ignored.is_empty(),
        "{file}: {kind_name} has keys this model ignores: {:?}",
        d.ignored
    );
    let mut obj = d.object;
    obj.normalize();
    obj.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
    Some(obj)
}

/// Every key of `a` is in `b` with an equal value, treating Go's empty values as absent.
fn assert_keys_kept(path: &str, a: &Value, b: &Value) {
    let empty = |v: &Value| {
        v.is_null()
            || v.as_str() == Some("")
            || v.as_bool() == Some(false)
            || v.as_object().is_some_and(|o| o.is_empty())
            || v.as_array().is_some_and(|o| o.is_empty())
            || v.as_i64() == Some(0)
    };
    match a {
        Value::Object(ao) => {
            for (k, av) in ao {
                let bv = b.get(k).unwrap_or(&Value::Null);
                if !(empty(av) && empty(bv)) {
                    assert_keys_kept(&format!("{path}.{k}"), av, bv);
                }
            }
        }
        Value::Array(aa) => {
            let ba = b
                .as_array()
                .unwrap_or_else(|| panic!("{path} is no longer a list"));
            assert_eq!(aa.len(), ba.len(), "{path} changed length");
            for (i, (av, bv)) in aa.iter().zip(ba).enumerate() {
                assert_keys_kept(&format!("{path}[{i}]"), av, bv);
            }
        }
        _ => assert_eq!(a, b, "value at {path} changed"),
    }
}

#[test]
fn every_corpus_object_decodes_validates_and_round_trips() {
    let docs = documents();
    let mut kinds = std::collections::BTreeSet::new();
    for (file, doc) in &docs {
        let Some(obj) = accept(file, doc) else {
            continue;
        };
        kinds.insert(obj.kind());
        let back = obj.to_value();
        assert_keys_kept(file, doc, &back);
        let mut again = decode_object(obj.kind(), back).expect("re-decodes").object;
        again.normalize();
        assert_eq!(again, obj, "{file}: changed on a second round trip");
    }
    let expected: std::collections::BTreeSet<_> = ResourceKind::ALL
        .into_iter()
        .filter(|k| !matches!(k, ResourceKind::Secret | ResourceKind::ConfigMap))
        .collect();
    assert_eq!(kinds, expected, "the corpus must hold every Fission kind");
}

fn find(kind: ResourceKind, name: &str) -> AnyResource {
    documents()
        .iter()
        .filter_map(|(f, d)| accept(f, d))
        .find(|o| o.kind() == kind && o.meta().name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the corpus"))
}

#[test]
fn corpus_objects_mean_what_fission_means() {
    let AnyResource::Environment(node) = find(ResourceKind::Environment, "nodejs") else {
        unreachable!()
    };
    assert_eq!(node.spec.builder, None, "builder: {{}} is no builder");
    assert_eq!(node.spec.effective_poolsize(), 3);
    assert_eq!(node.spec.termination_grace_period, 360);
    assert_eq!(
        node.spec
            .runtime
            .container
            .as_ref()
            .and_then(|c| c["name"].as_str()),
        Some("nodejs")
    );

    let AnyResource::Environment(py) = find(ResourceKind::Environment, "python") else {
        unreachable!()
    };
    let b = py.spec.builder.as_ref().expect("python has a builder");
    assert_eq!(
        (b.image.as_str(), b.command.as_str()),
        ("ghcr.io/fission/python-builder-3.10", "build")
    );
    assert_eq!(
        ResourceRequirements::memory_bytes(&py.spec.resources.limits),
        Some(256 << 20)
    );
    assert_eq!(
        ResourceRequirements::cpu_millis(&py.spec.resources.requests),
        Some(100)
    );
    assert_eq!(py.spec.effective_poolsize(), 1);

    let AnyResource::Function(f) = find(ResourceKind::Function, "hello") else {
        unreachable!()
    };
    assert!(
        f.spec.secrets.is_empty() && f.spec.configmaps.is_empty(),
        "null lists are empty"
    );
    assert_eq!(f.spec.executor_type(), "poolmgr");
    assert_eq!(
        (
            f.spec.function_timeout,
            f.spec.idle_timeout_secs(),
            f.spec.concurrency
        ),
        (60, 120, 500)
    );
    assert_eq!(
        f.spec.package.packageref.name,
        "hello-2f0e6b1c-7c61-4a7e-9a3e-3d1b6f1f7e52"
    );
    assert_eq!(f.metadata.creation_timestamp, None);

    let AnyResource::Function(p) = find(ResourceKind::Function, "pyhello") else {
        unreachable!()
    };
    assert_eq!(
        (
            p.spec.package.function_name.as_str(),
            p.spec.function_timeout
        ),
        ("main.main", 30)
    );

    let AnyResource::Package(pkg) = find(
        ResourceKind::Package,
        "hello-2f0e6b1c-7c61-4a7e-9a3e-3d1b6f1f7e52",
    ) else {
        unreachable!()
    };
    assert_eq!(
        (
            pkg.spec.deployment.archive_type.as_str(),
            pkg.spec.deployment.url.as_str()
        ),
        ("url", "archive://hello-js-k3v9")
    );
    assert!(pkg.spec.source.is_empty());
    assert_eq!(pkg.status.buildstatus, "none");

    let AnyResource::Package(src) = find(
        ResourceKind::Package,
        "pysrc-4b1e2d7a-5f6c-4e8d-9a0b-1c2d3e4f5a6b",
    ) else {
        unreachable!()
    };
    assert_eq!(src.spec.source.url, "archive://src-m2x1");
    assert!(src.spec.deployment.is_empty() && src.spec.buildcmd.is_empty());
    assert_eq!(
        src.status.buildstatus, "pending",
        "a source package waits for its build"
    );

    let AnyResource::Package(lit) = find(ResourceKind::Package, "hello-pkg") else {
        unreachable!()
    };
    assert!(String::from_utf8_lossy(&lit.spec.deployment.literal).starts_with("module.exports"));

    let AnyResource::HttpTrigger(r) = find(ResourceKind::HttpTrigger, "hello") else {
        unreachable!()
    };
    assert_eq!(r.spec.effective_prefix(), None, "prefix: \"\" is no prefix");
    assert_eq!(
        (r.spec.relativeurl.as_str(), r.spec.all_methods()),
        ("/corpus/hello", vec!["GET".to_owned()])
    );
    assert_eq!(r.spec.functionref.function_names(), ["hello"]);

    let AnyResource::HttpTrigger(r) = find(ResourceKind::HttpTrigger, "pyhello") else {
        unreachable!()
    };
    assert_eq!(r.spec.effective_prefix(), Some("/corpus/py"));
    assert_eq!(r.spec.all_methods(), ["GET", "POST"]);

    let AnyResource::TimeTrigger(t) = find(ResourceKind::TimeTrigger, "hello-every-minute") else {
        unreachable!()
    };
    assert_eq!(
        (
            t.spec.cron.as_str(),
            t.spec.method.as_str(),
            t.spec.subpath.as_str()
        ),
        ("@every 1m", "POST", "/")
    );

    let AnyResource::MessageQueueTrigger(m) = find(ResourceKind::MessageQueueTrigger, "orders")
    else {
        unreachable!()
    };
    assert_eq!(
        (
            m.spec.topic.as_str(),
            m.spec.mqtkind.as_str(),
            m.spec.max_replica_count
        ),
        ("orders", "keda", Some(100))
    );
    assert_eq!(m.spec.podspec, None);

    let AnyResource::KubernetesWatchTrigger(w) = find(ResourceKind::KubernetesWatchTrigger, "pods")
    else {
        unreachable!()
    };
    assert_eq!(
        (w.spec.object_type.as_str(), w.spec.labelselector.as_ref()),
        ("pod", None)
    );

    let AnyResource::CanaryConfig(c) = find(ResourceKind::CanaryConfig, "hello-canary") else {
        unreachable!()
    };
    assert_eq!(
        (
            c.spec.weightincrement,
            c.spec.duration.as_str(),
            c.status.status.as_str()
        ),
        (20, "1m", "pending")
    );
}

#[test]
fn lower_camel_spellings_of_fissions_capitalised_keys_are_accepted() {
    // Go's decoder matches keys case-insensitively, so hand-written specs often use these.
    let v: Value = serde_norway::from_str(
        "metadata: {name: f}\nspec:\n  environment: {name: e}\n  package: {packageref: {name: p}}\n  \
         invokeStrategy: {strategyType: execution, executionStrategy: {executorType: poolmgr, specializationTimeout: 300}}\n",
    )
    .expect("yaml");
    let d = decode_object(ResourceKind::Function, v).expect("decodes");
    assert!(d.ignored.is_empty(), "{:?}", d.ignored);
    let AnyResource::Function(f) = d.object else {
        unreachable!()
    };
    assert_eq!(
        f.spec
            .invoke_strategy
            .execution_strategy
            .specialization_timeout,
        300
    );
}
