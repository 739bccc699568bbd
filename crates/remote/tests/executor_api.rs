//! The executor API between processes: a router's [`RemoteInstances`] against an
//! [`ExecutorApi`] served on loopback over a stand-in executor. Leases are held at the executor
//! until the router drops them; the executor's errors reach the router as the same variant,
//! and Fission's plain-text form is kept for other clients.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fission_core::resources::{Function, FunctionSpec};
use fission_core::{ExecutorError, FunctionInstances, InstanceLease, LeaseRelease, Object};
use fission_remote::{ExecutorApi, RemoteInstances};
use fission_test_support::eventually;

const INSTANCE: &str = "127.0.0.1:40123";

/// Leases `INSTANCE` for any function but "missing" (not found) and "busy" (overloaded).
#[derive(Default)]
struct StandIn {
    acquired: AtomicUsize,
    released: Mutex<Vec<bool>>,
}

struct Release(Arc<StandIn>);

impl LeaseRelease for Release {
    fn release(&self, broken: bool) {
        self.0
            .released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(broken);
    }
}

struct Instances(Arc<StandIn>);

#[async_trait::async_trait]
impl FunctionInstances for Instances {
    async fn acquire(&self, function: &Function) -> Result<InstanceLease, ExecutorError> {
        match function.metadata.name.as_str() {
            "missing" => Err(ExecutorError::NotFound(
                "function 'default/missing' not found".into(),
            )),
            "busy" => Err(ExecutorError::Overloaded {
                message: "42 specializations in progress".into(),
                retry_after_secs: 7,
                queue_full: true,
            }),
            _ => {
                let n = self.0.acquired.fetch_add(1, Ordering::SeqCst) as u64;
                Ok(InstanceLease::new(
                    INSTANCE.parse().expect("addr"),
                    100 + n,
                    n == 0,
                    Arc::new(Release(self.0.clone())),
                ))
            }
        }
    }
}

fn function(name: &str) -> Function {
    Object::new("default", name, FunctionSpec::default())
}

async fn serve() -> (ExecutorApi, Arc<StandIn>, SocketAddr) {
    serve_with_ttl(fission_remote::LEASE_TTL).await
}

async fn serve_with_ttl(ttl: Duration) -> (ExecutorApi, Arc<StandIn>, SocketAddr) {
    let stand_in = Arc::new(StandIn::default());
    let api = ExecutorApi::with_lease_ttl(Arc::new(Instances(stand_in.clone())), ttl);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = api.router();
    tokio::spawn(async move { axum_serve(listener, app).await });
    (api, stand_in, addr)
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    let _ = axum::serve(listener, app).await;
}

fn released(s: &StandIn) -> Vec<bool> {
    s.released.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[tokio::test]
async fn a_lease_is_held_at_the_executor_until_the_router_drops_it() {
    let (api, stand_in, addr) = serve().await;
    let client = RemoteInstances::new(&format!("http://{addr}")).expect("client");

    let lease = client.acquire(&function("hello")).await.expect("lease");
    assert_eq!(lease.addr.to_string(), INSTANCE);
    assert_eq!((lease.instance_id, lease.cold), (100, true));
    assert_eq!((api.held_leases(), client.held_leases()), (1, 1));
    let second = client.acquire(&function("hello")).await.expect("lease");
    assert_eq!((second.instance_id, second.cold), (101, false));
    assert_eq!(api.held_leases(), 2);

    drop(lease);
    eventually(
        Duration::from_secs(5),
        "the executor to end the first lease",
        || async { api.held_leases() == 1 },
    )
    .await;
    assert_eq!(released(&stand_in), [false]);
    assert_eq!(client.held_leases(), 1);

    // A lease the router saw fail is released as broken, so the executor retires it.
    let mut second = second;
    second.mark_broken();
    drop(second);
    eventually(
        Duration::from_secs(5),
        "the broken lease to end",
        || async { api.held_leases() == 0 },
    )
    .await;
    assert_eq!(released(&stand_in), [false, true]);
    assert_eq!(client.held_leases(), 0);
}

#[tokio::test]
async fn executor_errors_reach_the_router_as_the_same_variant() {
    let (api, _, addr) = serve().await;
    let client = RemoteInstances::new(&format!("http://{addr}")).expect("client");
    let err = client
        .acquire(&function("missing"))
        .await
        .expect_err("missing");
    assert!(
        matches!(&err, ExecutorError::NotFound(m) if m == "function 'default/missing' not found"),
        "{err:?}"
    );
    let err = client.acquire(&function("busy")).await.expect_err("busy");
    assert!(
        matches!(
            &err,
            ExecutorError::Overloaded { retry_after_secs: 7, queue_full: true, message }
                if message == "42 specializations in progress"
        ),
        "{err:?}"
    );
    assert_eq!(api.held_leases(), 0);
}

#[tokio::test]
async fn fissions_plain_text_form_answers_other_clients() {
    let (api, _, addr) = serve().await;
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/v2/getServiceForFunction");
    let ok = http
        .post(&url)
        .json(&function("hello"))
        .send()
        .await
        .expect("post");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("body"), INSTANCE);
    assert_eq!(api.held_leases(), 1);

    // Fission's router releases by function and address, without a lease id.
    let untap = http
        .post(format!("http://{addr}/v2/unTapService"))
        .json(&serde_json::json!({
            "FnMetadata": {"name": "hello", "namespace": "default"},
            "FnExecutorType": "poolmgr",
            "ServiceURL": INSTANCE,
        }))
        .send()
        .await
        .expect("untap");
    assert_eq!(untap.status(), 200);
    assert_eq!(api.held_leases(), 0);
    let again = http
        .post(format!("http://{addr}/v2/unTapService"))
        .json(&serde_json::json!({
            "FnMetadata": {"name": "hello", "namespace": "default"},
            "ServiceURL": INSTANCE,
        }))
        .send()
        .await
        .expect("untap");
    assert_eq!(again.status(), 404);

    let busy = http
        .post(&url)
        .json(&function("busy"))
        .send()
        .await
        .expect("post");
    assert_eq!(busy.status(), 429);
    assert_eq!(
        busy.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    assert_eq!(
        busy.text().await.expect("body"),
        "server overloaded: 42 specializations in progress"
    );
    let missing = http
        .post(&url)
        .json(&function("missing"))
        .send()
        .await
        .expect("post");
    assert_eq!(missing.status(), 404);

    let bad = http
        .post(&url)
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
    assert!(
        bad.text()
            .await
            .expect("body")
            .starts_with("the body is not a Function object")
    );
}

#[tokio::test]
async fn an_unreachable_executor_refuses_calls_it_is_needed_for_as_retryable_naming_it() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let client = RemoteInstances::new(&format!("http://127.0.0.1:{port}")).expect("client");
    let err = client.acquire(&function("hello")).await.expect_err("down");
    assert!(
        matches!(&err, ExecutorError::Overloaded { message, retry_after_secs, queue_full: false }
            if message.contains(&format!("cannot reach the executor at http://127.0.0.1:{port}"))
                && *retry_after_secs > 0),
        "{err:?}"
    );
    assert!(RemoteInstances::new("executor:8888").is_err());
}

#[tokio::test]
async fn while_the_executor_is_down_warm_functions_are_served_from_their_known_instance() {
    let stand_in = Arc::new(StandIn::default());
    let api = ExecutorApi::new(Arc::new(Instances(stand_in.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, api.router())
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await;
    });
    let client = RemoteInstances::new(&format!("http://{addr}")).expect("client");
    let mut v1 = function("hello");
    v1.metadata.uid = "u1".into();
    v1.metadata.resource_version = "7".into();
    drop(client.acquire(&v1).await.expect("lease"));

    // The executor goes away (its pod was deleted).
    stop.cancel();
    server.await.expect("server task");

    let lease = client
        .acquire(&v1)
        .await
        .expect("served from the known instance");
    assert_eq!(
        (lease.addr.to_string(), lease.instance_id, lease.cold),
        (INSTANCE.to_owned(), 100, false)
    );
    drop(lease);

    // A function the router never had an instance of, or a newer version of this one, truly
    // needs the executor: refused as retryable.
    let mut v2 = v1.clone();
    v2.metadata.resource_version = "8".into();
    for f in [&function("other"), &v2] {
        let err = client.acquire(f).await.expect_err("needs the executor");
        assert!(
            matches!(
                err,
                ExecutorError::Overloaded {
                    queue_full: false,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    // An instance that failed is forgotten: the next call needs the executor.
    let mut lease = client.acquire(&v1).await.expect("still known");
    lease.mark_broken();
    drop(lease);
    let err = client.acquire(&v1).await.expect_err("forgotten");
    assert!(matches!(err, ExecutorError::Overloaded { .. }), "{err:?}");
}

#[tokio::test]
async fn a_lease_its_router_stops_renewing_is_dropped_and_renewed_ones_are_kept() {
    let (api, stand_in, addr) = serve_with_ttl(Duration::from_millis(600)).await;
    tokio::spawn(
        api.clone()
            .expire_leases(tokio_util::sync::CancellationToken::new()),
    );
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/v2/getServiceForFunction");
    let take = || async {
        let r = http
            .post(&url)
            .json(&function("hello"))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200);
        r.headers()
            .get("x-fission-lease-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .expect("lease id")
    };
    // Two leases taken by a router that then goes quiet; it renews only the second.
    let _abandoned = take().await;
    let renewed = take().await;
    assert_eq!(api.held_leases(), 2);
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let tap = http
            .post(format!("http://{addr}/v2/tapServices"))
            .json(&serde_json::json!([{
                "FnMetadata": {"name": "hello", "namespace": "default"},
                "FnExecutorType": "poolmgr",
                "ServiceURL": INSTANCE,
                "LeaseId": renewed,
            }]))
            .send()
            .await
            .expect("tap");
        assert_eq!(tap.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api.held_leases(), 1, "only the renewed lease is left");
    assert_eq!(released(&stand_in), [false]);
    eventually(
        Duration::from_secs(5),
        "the renewed lease to expire once taps stop",
        || async { api.held_leases() == 0 },
    )
    .await;
    assert_eq!(released(&stand_in), [false, false]);
}
