//! The example objects of the Fission contract (§2.9a), as Fission's CLI writes them, must
//! parse, validate and round-trip without losing a key.

use fission_core::resources::*;
use fission_core::{AnyResource, ResourceKind};
use serde_json::Value;

const EXAMPLES: &str = r#"
apiVersion: fission.io/v1
kind: Environment
metadata: {name: nodejs, namespace: default}
spec:
  version: 3
  poolsize: 3
  runtime:
    image: ghcr.io/fission/node-env-22
    container: {name: nodejs}
    podspec: {containers: [{name: nodejs}]}
  builder:
    image: ghcr.io/fission/node-builder-22
    command: build
    container: {name: builder}
    podspec: {containers: [{name: builder}]}
  resources: {}
  terminationGracePeriod: 360
  keeparchive: false
  imagepullsecret: ""
---
apiVersion: fission.io/v1
kind: Package
metadata: {name: hello-3c1e, namespace: default}
spec:
  environment: {name: nodejs, namespace: default}
  deployment: {type: literal, literal: bW9kdWxlLmV4cG9ydHMgPSBhc3luYyAoKSA9PiAoe3N0YXR1czogMjAwfSk7, checksum: {}}
  source: {checksum: {}}
status: {buildstatus: succeeded, lastUpdateTimestamp: "2025-01-01T00:00:00Z"}
---
apiVersion: fission.io/v1
kind: Function
metadata: {name: hello, namespace: default}
spec:
  environment: {name: nodejs, namespace: default}
  package:
    functionName: ""
    packageref: {name: hello-3c1e, namespace: default, resourceversion: "123456"}
  InvokeStrategy:
    StrategyType: execution
    ExecutionStrategy: {ExecutorType: poolmgr, MinScale: 0, MaxScale: 0, TargetCPUPercent: 0, SpecializationTimeout: 120}
  resources: {}
  functionTimeout: 60
  idletimeout: 120
  concurrency: 500
  requestsPerPod: 1
---
apiVersion: fission.io/v1
kind: HTTPTrigger
metadata: {name: hello-route, namespace: default}
spec:
  host: ""
  relativeurl: /hello/{name}
  prefix: ""
  methods: [GET]
  method: ""
  functionref: {type: name, name: hello, functionweights: null}
  createingress: false
  ingressconfig: {annotations: null, path: "/hello/{name}", host: "*", tls: ""}
---
apiVersion: fission.io/v1
kind: TimeTrigger
metadata: {name: every-minute, namespace: default}
spec: {cron: "@every 1m", functionref: {type: name, name: hello}, method: POST, subpath: /}
---
apiVersion: fission.io/v1
kind: KubernetesWatchTrigger
metadata: {name: pods, namespace: default}
spec: {namespace: default, type: pod, labelselector: null, functionref: {type: name, name: hello}}
---
apiVersion: fission.io/v1
kind: MessageQueueTrigger
metadata: {name: orders, namespace: default}
spec:
  functionref: {type: name, name: hello}
  messageQueueType: kafka
  mqtkind: keda
  topic: orders
  respTopic: orders-out
  errorTopic: orders-err
  maxRetries: 3
  contentType: application/json
  pollingInterval: 30
  cooldownPeriod: 300
  minReplicaCount: 0
  maxReplicaCount: 100
  metadata: {bootstrapServers: "kafka:9092", consumerGroup: g1, topic: orders}
"#;

fn documents() -> Vec<Value> {
    EXAMPLES
        .split("\n---\n")
        .map(|doc| serde_norway::from_str::<Value>(doc).expect("example is YAML"))
        .collect()
}

/// Every key of `a` is in `b` with an equal value, treating empty/null/false/0 as absent.
fn assert_keys_kept(path: &str, a: &Value, b: &Value) {
    let empty = |v: &Value| {
        matches!(v, Value::Null)
            || v.as_str() == Some("")
            || v.as_bool() == Some(false)
            || v.as_object().is_some_and(|o| o.is_empty())
            || v.as_i64() == Some(0)
    };
    match (a, b) {
        (Value::Object(ao), _) => {
            for (k, av) in ao {
                let bv = b.get(k).unwrap_or(&Value::Null);
                if empty(av) && empty(bv) {
                    continue;
                }
                assert_keys_kept(&format!("{path}.{k}"), av, bv);
            }
        }
        _ => assert_eq!(a, b, "value at {path} changed"),
    }
}

#[test]
fn fission_example_objects_parse_validate_and_round_trip() {
    let docs = documents();
    assert_eq!(docs.len(), 7);
    for doc in docs {
        let kind_name = doc["kind"].as_str().expect("kind");
        let kind = ResourceKind::from_kind_name(kind_name).expect("known kind");
        let obj = AnyResource::from_value(kind, doc.clone())
            .unwrap_or_else(|e| panic!("{kind_name}: {e}"));
        obj.validate()
            .unwrap_or_else(|e| panic!("{kind_name}: {e}"));
        let back = obj.to_value();
        assert_keys_kept(kind_name, &doc, &back);
        let again = AnyResource::from_value(kind, back).expect("re-parse");
        assert_eq!(again, obj, "{kind_name} changed on a second round trip");
    }
}

#[test]
fn defaults_match_fission() {
    let mut f = Function::new("default", "f", FunctionSpec::default());
    f.normalize();
    assert_eq!(f.spec.function_timeout, 60);
    assert_eq!(f.spec.idletimeout, Some(120));
    assert_eq!(f.spec.concurrency, 500);
    assert_eq!(f.spec.requests_per_pod, 1);
    assert_eq!(f.spec.executor_type(), "poolmgr");
    assert_eq!(
        f.spec
            .invoke_strategy
            .execution_strategy
            .specialization_timeout,
        120
    );
    let mut e = Environment::new(
        "",
        "e",
        EnvironmentSpec {
            poolsize: 3,
            ..Default::default()
        },
    );
    e.normalize();
    assert_eq!(e.metadata.namespace, "default");
    assert_eq!(e.spec.version, 3);
    assert_eq!(e.spec.termination_grace_period, 360);
    assert_eq!(e.spec.effective_poolsize(), 3);
    let v2 = EnvironmentSpec {
        version: 2,
        poolsize: 9,
        ..Default::default()
    };
    assert_eq!(
        v2.effective_poolsize(),
        3,
        "poolsize only honoured from version 3"
    );
}

#[test]
fn wire_keys_keep_fissions_casing() {
    let mut f = Function::new("default", "f", FunctionSpec::default());
    f.normalize();
    let v = serde_json::to_value(&f).expect("json");
    assert!(v["spec"]["InvokeStrategy"]["ExecutionStrategy"]["ExecutorType"].is_string());
    assert!(v["spec"]["functionTimeout"].is_number());
    assert!(v["spec"]["requestsPerPod"].is_number());
    let t = HttpTrigger::new(
        "default",
        "r",
        HttpTriggerSpec {
            relativeurl: "/x".into(),
            ..Default::default()
        },
    );
    let v = serde_json::to_value(&t).expect("json");
    assert!(v["spec"]["relativeurl"].is_string());
    assert!(v["spec"].get("functionref").is_some());
    assert_eq!(v["apiVersion"], "fission.io/v1");
    assert_eq!(v["kind"], "HTTPTrigger");
}

#[test]
fn validation_reports_every_problem_with_field_names() {
    let mut f = Function::new(
        "default",
        "Bad_Name",
        FunctionSpec {
            function_timeout: -5,
            concurrency: -1,
            ..Default::default()
        },
    );
    f.spec.secrets.push(fission_core::ObjectReference {
        namespace: "other".into(),
        name: "s".into(),
    });
    let err = AnyResource::Function(f).validate().expect_err("invalid");
    let msg = err.to_string();
    for needle in [
        "metadata.name",
        "spec.functionTimeout",
        "spec.concurrency",
        "spec.environment.name",
        "spec.package.packageref.name",
        "must be in same namespace",
    ] {
        assert!(msg.contains(needle), "{msg} lacks {needle}");
    }
}

#[test]
fn weighted_routes_must_add_up_to_100() {
    let mut t = HttpTrigger::new(
        "default",
        "r",
        HttpTriggerSpec {
            relativeurl: "/x".into(),
            methods: vec!["GET".into()],
            ..Default::default()
        },
    );
    t.spec.functionref = FunctionReference {
        ref_type: "function-weights".into(),
        name: String::new(),
        functionweights: Some([("a".to_owned(), 90), ("b".to_owned(), 20)].into()),
    };
    let err = AnyResource::HttpTrigger(t.clone())
        .validate()
        .expect_err("110 is not 100");
    assert!(err.to_string().contains("add up to 100"), "{err}");
    t.spec.functionref.functionweights = Some([("a".to_owned(), 90), ("b".to_owned(), 10)].into());
    AnyResource::HttpTrigger(t).validate().expect("valid");
}

#[test]
fn go_durations_parse() {
    use fission_core::validation::parse_go_duration;
    assert_eq!(parse_go_duration("2m"), Some(120_000));
    assert_eq!(parse_go_duration("1h30m"), Some(5_400_000));
    assert_eq!(parse_go_duration("500ms"), Some(500));
    assert_eq!(parse_go_duration("soon"), None);
}
