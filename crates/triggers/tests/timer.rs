//! Time triggers against a stand-in router: what the function receives and when.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{FakeFunction, Harness, fake_router};
use fission_core::AnyResource;
use fission_core::resources::{FunctionReference, TimeTrigger, TimeTriggerSpec};
use fission_triggers::{TriggerKey, TriggerKind};

fn tt(ns: &str, name: &str, cron: &str, method: &str, subpath: &str) -> AnyResource {
    let mut t = TimeTrigger::new(
        ns,
        name,
        TimeTriggerSpec {
            cron: cron.to_owned(),
            functionref: FunctionReference::by_name("hello"),
            method: method.to_owned(),
            subpath: subpath.to_owned(),
        },
    );
    t.normalize();
    AnyResource::TimeTrigger(t)
}

fn key(ns: &str, name: &str) -> TriggerKey {
    TriggerKey {
        kind: TriggerKind::TimeTrigger,
        namespace: ns.to_owned(),
        name: name.to_owned(),
    }
}

#[tokio::test]
async fn every_second_timer_calls_the_function_at_least_three_times_in_four_seconds() {
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    h.store
        .create(tt("default", "tick", "@every 1s", "POST", "/"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let calls = f.calls();
    assert!(calls.len() >= 3, "{} calls in 4 s", calls.len());
    assert!(calls.len() <= 5, "{} calls in 4 s", calls.len());
    for c in &calls {
        assert_eq!(c.method, "POST");
        assert_eq!(c.path, "/fission-function/hello/");
        assert_eq!(c.headers["x-fission-timer-name"], "tick");
        assert!(c.body.is_empty());
    }
    let status = h.triggers.status().get(&key("default", "tick")).unwrap();
    assert_eq!(status.fired, calls.len() as u64);
    assert_eq!(status.succeeded, calls.len() as u64);
    assert!(status.last_fire.is_some());
    assert!(
        h.metrics().contains(
            "fission_trigger_fired_total{kind=\"TimeTrigger\",namespace=\"default\",name=\"tick\"}"
        ),
        "{}",
        h.metrics()
    );
    h.stop().await;
}

#[tokio::test]
async fn method_subpath_and_namespace_shape_the_internal_url() {
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    h.store
        .create(tt("team-a", "t2", "* * * * * *", "GET", "/a/b"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let calls = f.calls();
    assert!(!calls.is_empty());
    assert_eq!(calls[0].method, "GET");
    assert_eq!(calls[0].path, "/fission-function/team-a/hello/a/b");
    h.stop().await;
}

#[tokio::test]
async fn a_slow_function_never_gets_stacked_calls_and_skips_are_counted() {
    let f = Arc::new(FakeFunction::default());
    f.delay_ms.store(2500, Ordering::SeqCst);
    let h = Harness::start(fake_router(f.clone()).await).await;
    h.store
        .create(tt("default", "slow", "@every 1s", "POST", "/"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(f.max_in_flight.load(Ordering::SeqCst), 1);
    let status = h.triggers.status().get(&key("default", "slow")).unwrap();
    assert!(status.skipped >= 2, "{status:?}");
    assert!(f.calls().len() >= 2, "{} calls", f.calls().len());
    h.stop().await;
}

#[tokio::test]
async fn a_failing_function_shows_its_last_error_in_the_status_api() {
    let f = Arc::new(FakeFunction::default());
    f.status.store(500, Ordering::SeqCst);
    let h = Harness::start(fake_router(f.clone()).await).await;
    h.store
        .create(tt("default", "bad", "@every 1s", "POST", "/"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Fission's publisher does not retry an answered call, even a 500: one call per fire.
    let calls = f.calls().len() as u64;
    assert!(calls >= 1);
    let app = h.triggers.api_routes();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body: serde_json::Value = reqwest::get(format!(
        "http://{addr}/v2/triggerstatus/time/bad?namespace=default"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(body["failed"], calls, "{body}");
    assert_eq!(body["fired"], calls, "{body}");
    assert_eq!(body["retried"], 0, "{body}");
    assert_eq!(body["lastStatus"], 500, "{body}");
    assert!(
        body["lastError"]
            .as_str()
            .unwrap()
            .starts_with("function answered 500: echo:"),
        "{body}"
    );
    let missing = reqwest::get(format!("http://{addr}/v2/triggerstatus/time/nope"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    h.stop().await;
}

#[tokio::test]
async fn an_unreachable_router_is_retried_with_doubling_backoff() {
    // A port nobody listens on: bind, learn the port, close.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let h = Harness::start(addr).await;
    h.store
        .create(tt("default", "lost", "@every 1h", "POST", "/"))
        .await
        .unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let d = fission_triggers::Delivery::new(&format!("http://{addr}"), &mut registry, None);
    let call = fission_triggers::Call {
        method: reqwest::Method::POST,
        namespace: "default".into(),
        function: "hello".into(),
        subpath: "/".into(),
        headers: vec![],
        body: Default::default(),
    };
    let policy = fission_triggers::RetryPolicy {
        max_attempts: 3,
        first_backoff: Duration::from_millis(200),
        retry_on_status: false,
    };
    let started = std::time::Instant::now();
    let k = key("default", "lost");
    let e = d
        .deliver(
            &k,
            &call,
            policy,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect_err("nobody listens");
    // Waits of 200 ms then 400 ms between the three attempts.
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(e.to_string().contains("no answer after 3 attempts"), "{e}");
    let s = d.status().get(&k).unwrap();
    assert_eq!((s.retried, s.failed), (2, 1));
    h.stop().await;
}

#[tokio::test]
async fn deleting_a_trigger_stops_its_calls_and_updating_it_reschedules() {
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    h.store
        .create(tt("default", "t", "@every 1s", "POST", "/"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!f.calls().is_empty());
    // Now a schedule that will not fire during the test.
    let mut updated = h
        .store
        .get(fission_core::ResourceKind::TimeTrigger, "default", "t")
        .await
        .unwrap();
    if let AnyResource::TimeTrigger(t) = &mut updated {
        t.spec.cron = "@every 1h".into();
    }
    h.store.update(updated).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_update = f.calls().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(f.calls().len(), after_update);
    h.store
        .delete(fission_core::ResourceKind::TimeTrigger, "default", "t")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.triggers.status().get(&key("default", "t")).is_none());
    h.stop().await;
}
