//! A stand-in router that records the calls triggers make, and a real store to drive them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use fission_core::ResourceStore;
use fission_store::RedbStore;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub mod brokers;

/// One call the fake router received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

/// How the fake function behaves, and what it saw.
#[derive(Default)]
pub struct FakeFunction {
    pub calls: Mutex<Vec<Seen>>,
    /// How long each call takes.
    pub delay_ms: AtomicU64,
    /// Status answered (0 = 200).
    pub status: AtomicU16,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

impl FakeFunction {
    pub fn calls(&self) -> Vec<Seen> {
        self.calls.lock().unwrap().clone()
    }
}

async fn handle(
    State(f): State<Arc<FakeFunction>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let now = f.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    f.max_in_flight.fetch_max(now, Ordering::SeqCst);
    f.calls.lock().unwrap().push(Seen {
        method,
        path: uri.path().to_owned(),
        headers,
        body: body.clone(),
        at: Instant::now(),
    });
    let delay = f.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    f.in_flight.fetch_sub(1, Ordering::SeqCst);
    let status = match f.status.load(Ordering::SeqCst) {
        0 => StatusCode::OK,
        s => StatusCode::from_u16(s).unwrap(),
    };
    let reply = format!("echo:{}", String::from_utf8_lossy(&body));
    (status, reply)
}

/// A fake router on a random loopback port answering every path with `f`.
pub async fn fake_router(f: Arc<FakeFunction>) -> SocketAddr {
    let app = axum::Router::new().fallback(handle).with_state(f);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A running trigger component over a fresh store.
pub struct Harness {
    pub store: Arc<dyn ResourceStore>,
    pub triggers: fission_triggers::Triggers,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), fission_triggers::TriggersError>>,
    pub registry: Registry,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(router: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ResourceStore> =
            Arc::new(RedbStore::open(&dir.path().join("db.redb")).unwrap());
        Self::start_with(router, store, dir).await
    }

    /// With watch triggers watching the cluster of `kube`.
    pub async fn start_kube(router: SocketAddr, kube: fission_triggers::KubeSource) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ResourceStore> =
            Arc::new(RedbStore::open(&dir.path().join("db.redb")).unwrap());
        Self::start_full(router, store, dir, kube).await
    }

    pub async fn start_with(
        router: SocketAddr,
        store: Arc<dyn ResourceStore>,
        dir: tempfile::TempDir,
    ) -> Self {
        Self::start_full(router, store, dir, Default::default()).await
    }

    async fn start_full(
        router: SocketAddr,
        store: Arc<dyn ResourceStore>,
        dir: tempfile::TempDir,
        kube: fission_triggers::KubeSource,
    ) -> Self {
        let mut registry = Registry::default();
        let triggers = fission_triggers::Triggers::new(
            &format!("http://{router}"),
            store.clone(),
            None,
            &mut registry,
        )
        .with_kube(kube);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(triggers.clone().run(shutdown.clone()));
        Self {
            store,
            triggers,
            shutdown,
            task,
            registry,
            _dir: dir,
        }
    }

    pub fn metrics(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}
