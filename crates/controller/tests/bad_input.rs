//! Bad input on every REST endpoint: malformed JSON, wrong types, oversized bodies, unknown
//! references, invalid names and mismatched paths all get a 4xx with a message that says what
//! to fix, and nothing is stored or changed.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use fission_controller::{Config, Controller};
use fission_core::ResourceKind;
use fission_store::RedbStore;
use fission_store::archive::ArchiveStore;
use fission_store::logs::LogStore;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const MAX_OBJECT_BYTES: usize = 64 * 1024;

struct Api {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

impl Api {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(RedbStore::open(&dir.path().join("db.redb")).expect("store"));
        let archives = ArchiveStore::open(dir.path().join("archives")).expect("archives");
        let logs = LogStore::open(dir.path().join("logs")).expect("logs");
        let config = Config {
            max_object_bytes: MAX_OBJECT_BYTES,
            ..Config::default()
        };
        let c = Controller::new(config, store, archives, logs, CancellationToken::new());
        Self {
            app: c.app(),
            _dir: dir,
        }
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Vec<u8>>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Every object of every kind, as listed: the whole visible state.
    async fn everything(&self) -> Vec<Value> {
        let mut all = Vec::new();
        for kind in ResourceKind::ALL {
            let (status, list) = self
                .call(Method::GET, &format!("/v2/{}", kind.api_path()), None)
                .await;
            assert_eq!(status, StatusCode::OK, "list {kind}");
            all.push(list);
        }
        all
    }
}

/// A valid object of each kind, all of them referring to what the others create.
fn valid(kind: ResourceKind, name: &str) -> Value {
    let fref = json!({ "type": "name", "name": "hello" });
    let (metadata, rest) = (
        json!({ "name": name, "namespace": "default" }),
        match kind {
            ResourceKind::Environment => {
                json!({ "spec": { "version": 3, "runtime": { "image": "fission/node-env" }, "poolsize": 3 } })
            }
            ResourceKind::Package => json!({ "spec": {
            "environment": { "name": "nodejs", "namespace": "default" },
            "deployment": { "type": "literal", "literal": "bW9kdWxlLmV4cG9ydHMgPSAoKSA9PiAxOw==" },
        } }),
            ResourceKind::Function => json!({ "spec": {
            "environment": { "name": "nodejs", "namespace": "default" },
            "package": { "packageref": { "name": "hello-pkg", "namespace": "default" } },
        } }),
            ResourceKind::HttpTrigger => json!({ "spec": {
            "relativeurl": format!("/{name}"), "methods": ["GET"], "functionref": fref,
        } }),
            ResourceKind::TimeTrigger => {
                json!({ "spec": { "cron": "@every 1h", "functionref": fref } })
            }
            ResourceKind::KubernetesWatchTrigger => {
                json!({ "spec": { "type": "pod", "functionref": fref } })
            }
            ResourceKind::MessageQueueTrigger => json!({ "spec": {
            "messageQueueType": "kafka", "topic": "in", "functionref": fref,
        } }),
            ResourceKind::CanaryConfig => json!({ "spec": {
            "trigger": "hello-route", "newfunction": "hello", "oldfunction": "hello",
            "weightincrement": 20, "duration": "1m", "failurethreshold": 10,
        } }),
            ResourceKind::Secret => json!({ "data": { "k": "dg==" } }),
            ResourceKind::ConfigMap => json!({ "data": { "k": "v" } }),
        },
    );
    let mut v = rest;
    v["metadata"] = metadata;
    v
}

/// Seed one valid object per kind (the ones others refer to first).
async fn seed(api: &Api) {
    let order = [
        (ResourceKind::Environment, "nodejs"),
        (ResourceKind::Package, "hello-pkg"),
        (ResourceKind::Function, "hello"),
        (ResourceKind::HttpTrigger, "hello-route"),
        (ResourceKind::TimeTrigger, "tick"),
        (ResourceKind::KubernetesWatchTrigger, "watch"),
        (ResourceKind::MessageQueueTrigger, "mq"),
        (ResourceKind::CanaryConfig, "canary"),
        (ResourceKind::Secret, "secret"),
        (ResourceKind::ConfigMap, "config"),
    ];
    for (kind, name) in order {
        let body = serde_json::to_vec(&valid(kind, name)).expect("json");
        let (status, resp) = api
            .call(
                Method::POST,
                &format!("/v2/{}", kind.api_path()),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "seed {kind}: {resp}");
    }
}

fn seeded_name(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Environment => "nodejs",
        ResourceKind::Package => "hello-pkg",
        ResourceKind::Function => "hello",
        ResourceKind::HttpTrigger => "hello-route",
        ResourceKind::TimeTrigger => "tick",
        ResourceKind::KubernetesWatchTrigger => "watch",
        ResourceKind::MessageQueueTrigger => "mq",
        ResourceKind::CanaryConfig => "canary",
        ResourceKind::Secret => "secret",
        ResourceKind::ConfigMap => "config",
    }
}

/// Bodies every create and update must refuse, with a word the message must contain.
fn bad_bodies(kind: ResourceKind, name: &str) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let json = |v: Value| serde_json::to_vec(&v).expect("json");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = valid(kind, name);
        f(&mut v);
        json(v)
    };
    let mut oversized = valid(kind, name);
    oversized["metadata"]["annotations"] = json!({ "pad": "x".repeat(MAX_OBJECT_BYTES) });
    vec![
        (
            "truncated JSON",
            b"{\"metadata\": {".to_vec(),
            "not valid JSON",
        ),
        (
            "not JSON at all",
            b"name: yaml\n".to_vec(),
            "not valid JSON",
        ),
        ("empty body", Vec::new(), "not valid JSON"),
        ("an array", json(json!([valid(kind, name)])), "object"),
        ("a string", json(json!("hello")), "object"),
        (
            "metadata is a string",
            with(&|v| v["metadata"] = json!("x")),
            "invalid",
        ),
        (
            "name is a number",
            with(&|v| v["metadata"]["name"] = json!(5)),
            "invalid",
        ),
        (
            "labels is a list",
            with(&|v| v["metadata"]["labels"] = json!(["a"])),
            "invalid",
        ),
        (
            "wrong kind",
            with(&|v| v["kind"] = json!("NoSuchKind")),
            "this endpoint takes",
        ),
        (
            "wrong apiVersion",
            with(&|v| v["apiVersion"] = json!("v9")),
            "apiVersion",
        ),
        ("oversized", json(oversized), "larger than the limit"),
    ]
}

#[tokio::test]
async fn every_create_endpoint_refuses_bad_bodies_and_stores_nothing() {
    let api = Api::new();
    seed(&api).await;
    let before = api.everything().await;
    for kind in ResourceKind::ALL {
        let uri = format!("/v2/{}", kind.api_path());
        let mut cases = bad_bodies(kind, "fresh");
        for bad_name in [
            "Upper",
            "under_score",
            "-dash",
            "a.b",
            "../x",
            &"a".repeat(64),
            "",
        ] {
            let mut v = valid(kind, "fresh");
            v["metadata"]["name"] = json!(bad_name);
            cases.push((
                "invalid name",
                serde_json::to_vec(&v).expect("json"),
                "metadata.name",
            ));
        }
        let mut v = valid(kind, "fresh");
        v["metadata"]["namespace"] = json!("Bad_NS");
        cases.push((
            "invalid namespace",
            serde_json::to_vec(&v).expect("json"),
            "metadata.namespace",
        ));
        for (what, body, needle) in cases {
            let (status, err) = api.call(Method::POST, &uri, Some(body)).await;
            assert!(
                status.is_client_error(),
                "POST {uri} ({what}): {status} {err}"
            );
            let msg = err["message"].as_str().unwrap_or_default();
            assert!(
                msg.contains(needle),
                "POST {uri} ({what}): message {msg:?} lacks {needle:?}"
            );
        }
    }
    assert_eq!(
        api.everything().await,
        before,
        "a refused create changed the store"
    );
}

#[tokio::test]
async fn every_update_endpoint_refuses_bad_bodies_and_changes_nothing() {
    let api = Api::new();
    seed(&api).await;
    let before = api.everything().await;
    for kind in ResourceKind::ALL {
        let name = seeded_name(kind);
        let uri = format!("/v2/{}/{name}", kind.api_path());
        let mut cases = bad_bodies(kind, name);
        cases.push((
            "name differs from the URL",
            serde_json::to_vec(&valid(kind, "other")).expect("json"),
            "doesn't match URL",
        ));
        let mut stale = valid(kind, name);
        stale["metadata"]["resourceVersion"] = json!("999999");
        cases.push((
            "stale resourceVersion",
            serde_json::to_vec(&stale).expect("json"),
            "",
        ));
        for (what, body, needle) in cases {
            let (status, err) = api.call(Method::PUT, &uri, Some(body)).await;
            assert!(
                status.is_client_error(),
                "PUT {uri} ({what}): {status} {err}"
            );
            let msg = err["message"].as_str().unwrap_or_default();
            assert!(
                !msg.is_empty() && msg.contains(needle),
                "PUT {uri} ({what}): message {msg:?} lacks {needle:?}"
            );
        }
        // Updating what does not exist is a 404, not an upsert.
        let missing = format!("/v2/{}/missing", kind.api_path());
        let body = serde_json::to_vec(&valid(kind, "missing")).expect("json");
        let (status, err) = api.call(Method::PUT, &missing, Some(body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "PUT {missing}: {err}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{err}"
        );
    }
    assert_eq!(
        api.everything().await,
        before,
        "a refused update changed the store"
    );
}

#[tokio::test]
async fn unknown_references_are_refused_naming_what_is_missing() {
    let api = Api::new();
    seed(&api).await;
    let before = api.everything().await;
    let cases = [
        (
            ResourceKind::Function,
            "/spec/environment/name",
            "environment 'ghost'",
        ),
        (
            ResourceKind::Function,
            "/spec/package/packageref/name",
            "package 'ghost'",
        ),
        (
            ResourceKind::Package,
            "/spec/environment/name",
            "environment 'ghost'",
        ),
    ];
    for (kind, pointer, needle) in cases {
        let mut v = valid(kind, "fresh");
        *v.pointer_mut(pointer).expect("field") = json!("ghost");
        let uri = format!("/v2/{}", kind.api_path());
        let (status, err) = api
            .call(
                Method::POST,
                &uri,
                Some(serde_json::to_vec(&v).expect("json")),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "POST {uri} {pointer}: {err}");
        let msg = err["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
        // The same reference on an update of the existing object.
        let name = seeded_name(kind);
        let mut v = valid(kind, name);
        *v.pointer_mut(pointer).expect("field") = json!("ghost");
        let uri = format!("/v2/{}/{name}", kind.api_path());
        let (status, err) = api
            .call(
                Method::PUT,
                &uri,
                Some(serde_json::to_vec(&v).expect("json")),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "PUT {uri} {pointer}: {err}");
    }
    assert_eq!(api.everything().await, before);
}

#[tokio::test]
async fn get_and_delete_of_missing_objects_and_bad_paths_are_404_with_a_message() {
    let api = Api::new();
    seed(&api).await;
    let before = api.everything().await;
    for kind in ResourceKind::ALL {
        for method in [Method::GET, Method::DELETE] {
            for name in ["missing", "Not_A_Name", "..%2F..%2Fetc"] {
                let uri = format!("/v2/{}/{name}", kind.api_path());
                let (status, err) = api.call(method.clone(), &uri, None).await;
                assert!(status.is_client_error(), "{method} {uri}: {status} {err}");
                assert!(
                    err["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{method} {uri}: {err}"
                );
            }
        }
    }
    for (method, uri) in [
        (Method::GET, "/v2/nosuchkind"),
        (Method::POST, "/v2/nosuchkind"),
        (Method::GET, "/v1/functions"),
        (
            Method::GET,
            "/proxy/storage/v1/archive?id=..%2F..%2Fetc%2Fpasswd",
        ),
        (Method::GET, "/proxy/storage/v1/archive?id=0000"),
    ] {
        let (status, err) = api.call(method.clone(), uri, None).await;
        assert!(status.is_client_error(), "{method} {uri}: {status} {err}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {uri}: {err}"
        );
    }
    let (status, err) = api
        .call(Method::POST, "/proxy/storage/v1/archive", Some(Vec::new()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(api.everything().await, before);
}
