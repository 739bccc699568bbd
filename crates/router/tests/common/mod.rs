//! Test doubles and a harness for driving a real router over real sockets; the store is
//! test-support's `MemoryStore`.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fission_core::resources::{
    Function, FunctionReference, FunctionSpec, HttpTrigger, HttpTriggerSpec,
};
use fission_core::{
    AnyResource, ExecutorError, FunctionInstances, InstanceLease, LeaseRelease, ResourceStore,
};
use fission_router::{Config, Router};
pub use fission_test_support::{MemoryStore, eventually};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// === Fake executor ===

/// What the fake executor does for one `acquire`.
#[derive(Clone)]
pub enum Step {
    Lease(SocketAddr),
    Fail(ExecutorError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub function: String,
    pub addr: SocketAddr,
    pub broken: bool,
}

/// Hands out leases to test upstreams and records how they were released.
pub struct FakeInstances {
    default_addr: SocketAddr,
    plans: Mutex<HashMap<String, VecDeque<Step>>>,
    pub cold: AtomicBool,
    next_id: AtomicU64,
    pub released: Arc<Mutex<Vec<Released>>>,
    pub acquired: Mutex<Vec<String>>,
}

struct Release {
    function: String,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Released>>>,
}

impl LeaseRelease for Release {
    fn release(&self, broken: bool) {
        self.log.lock().unwrap().push(Released {
            function: self.function.clone(),
            addr: self.addr,
            broken,
        });
    }
}

impl FakeInstances {
    pub fn new(default_addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            default_addr,
            plans: Mutex::new(HashMap::new()),
            cold: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            released: Arc::new(Mutex::new(Vec::new())),
            acquired: Mutex::new(Vec::new()),
        })
    }

    /// Queue steps for a function (`namespace/name`); when they run out, lease the default.
    pub fn plan(&self, function: &str, steps: impl IntoIterator<Item = Step>) {
        self.plans
            .lock()
            .unwrap()
            .entry(function.to_owned())
            .or_default()
            .extend(steps);
    }

    pub fn releases(&self) -> Vec<Released> {
        self.released.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl FunctionInstances for FakeInstances {
    async fn acquire(&self, function: &Function) -> Result<InstanceLease, ExecutorError> {
        let label = format!("{}/{}", function.metadata.namespace, function.metadata.name);
        self.acquired.lock().unwrap().push(label.clone());
        let step = self
            .plans
            .lock()
            .unwrap()
            .get_mut(&label)
            .and_then(VecDeque::pop_front);
        let addr = match step {
            Some(Step::Fail(e)) => return Err(e),
            Some(Step::Lease(addr)) => addr,
            None => self.default_addr,
        };
        let release = Arc::new(Release {
            function: label,
            addr,
            log: self.released.clone(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Ok(InstanceLease::new(
            addr,
            id,
            self.cold.load(Ordering::Relaxed),
            release,
        ))
    }
}

// === Echo upstream ===

/// A function stand-in. By default answers 200 with a JSON description of the request it saw:
/// `{"method", "uri", "headers": {name: value}, "body_len"}`. Request headers steer it:
/// `x-test-delay-ms` (sleep first), `x-test-status` (answer with that status),
/// `x-test-mode: raw` (echo the body bytes back), and `Connection: upgrade` + `Upgrade` (switch
/// protocols and echo bytes on the upgraded connection).
pub async fn spawn_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(echo);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

async fn echo(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(ms) = header("x-test-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(proto) = header("upgrade") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", proto)
            .body(Full::new(Bytes::new()))
            .unwrap();
        return Ok(resp);
    }
    let status = header("x-test-status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let raw = header("x-test-mode").as_deref() == Some("raw");
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let out = if raw {
        body
    } else {
        Bytes::from(
            serde_json::json!({ "method": method, "uri": uri, "headers": headers, "body_len": body.len() }).to_string(),
        )
    };
    Ok(Response::builder()
        .status(status)
        .header("x-from-function", "yes")
        .body(Full::new(out))
        .unwrap())
}

/// An address nothing listens on (connection refused).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// === Objects ===

pub fn function(name: &str) -> AnyResource {
    function_with_timeout(name, 60)
}

pub fn function_with_timeout(name: &str, secs: i32) -> AnyResource {
    let spec = FunctionSpec {
        function_timeout: secs,
        ..FunctionSpec::default()
    };
    AnyResource::Function(Function::new("default", name, spec))
}

pub fn url_trigger(name: &str, url: &str, methods: &[&str], func: &str) -> AnyResource {
    AnyResource::HttpTrigger(HttpTrigger::new(
        "default",
        name,
        HttpTriggerSpec {
            relativeurl: url.to_owned(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            functionref: FunctionReference::by_name(func),
            ..HttpTriggerSpec::default()
        },
    ))
}

pub fn prefix_trigger(name: &str, prefix: &str, keep_prefix: bool, func: &str) -> AnyResource {
    AnyResource::HttpTrigger(HttpTrigger::new(
        "default",
        name,
        HttpTriggerSpec {
            prefix: Some(prefix.to_owned()),
            keep_prefix,
            methods: vec!["GET".into(), "POST".into()],
            functionref: FunctionReference::by_name(func),
            ..HttpTriggerSpec::default()
        },
    ))
}

// === Harness ===

pub const TEST_BODY_LIMIT: usize = 1024 * 1024;

/// A router serving on 127.0.0.1, synced from a `MemoryStore`, leasing from `FakeInstances`.
pub struct Harness {
    pub router: Router,
    pub addr: SocketAddr,
    pub store: Arc<MemoryStore>,
    pub instances: Arc<FakeInstances>,
    pub echo: SocketAddr,
    pub shutdown: CancellationToken,
    pub serve: JoinHandle<std::io::Result<()>>,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

impl Harness {
    /// Start with these objects already in the store.
    pub async fn start(objects: Vec<AnyResource>) -> Self {
        Self::start_with(objects, Duration::from_secs(5)).await
    }

    pub async fn start_with(objects: Vec<AnyResource>, grace: Duration) -> Self {
        let echo = spawn_echo().await;
        let store = MemoryStore::new();
        for o in objects {
            store.create(o).await.unwrap();
        }
        let instances = FakeInstances::new(echo);
        let mut registry = Registry::default();
        let config = Config {
            max_body_bytes: TEST_BODY_LIMIT,
            router_version: "test-1.2.3".into(),
            ..Config::default()
        };
        let router = Router::new(config, instances.clone(), &mut registry);
        let registry = Arc::new(Mutex::new(registry));
        let router = router.with_metrics_endpoint(move || {
            let mut s = String::new();
            prometheus_client::encoding::text::encode(&mut s, &registry.lock().unwrap()).unwrap();
            s
        });
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let (router, store, shutdown) = (router.clone(), store.clone(), shutdown.clone());
            async move { router.sync_routes(store, shutdown).await }
        });
        tokio::time::timeout(Duration::from_secs(5), router.ready())
            .await
            .expect("router became ready");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = tokio::spawn({
            let (router, shutdown) = (router.clone(), shutdown.clone());
            async move { router.serve(listener, shutdown, grace).await }
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            router,
            addr,
            store,
            instances,
            echo,
            shutdown,
            serve,
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> (StatusCode, http::HeaderMap, Bytes) {
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .expect("router answered in time")
            .expect("request reached the router");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body read").to_bytes();
        (parts.status, parts.headers, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
        self.send(
            Request::get(self.url(path))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
    }

    /// GET and parse the echo's JSON description of what the function saw.
    pub async fn seen(&self, req: Request<Full<Bytes>>) -> serde_json::Value {
        let (status, _, body) = self.send(req).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "body: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).expect("echo JSON")
    }

    pub async fn metrics(&self) -> String {
        let (status, _, body) = self.get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        String::from_utf8(body.to_vec()).unwrap()
    }
}
