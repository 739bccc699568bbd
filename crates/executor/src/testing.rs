//! Test doubles: a launcher whose "instances" are in-process HTTP servers that count
//! specializations (the in-memory store is test-support's, which passes the store contract).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fission_core::resources::{
    Archive, Environment, EnvironmentSpec, Function, FunctionSpec, Package, PackageSpec, Runtime,
};
use fission_core::{AnyResource, ObjectReference, ResourceStore};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::launcher::{
    CodeSlot, ExitReport, InstanceLauncher, LaunchError, LaunchSpec, RuntimeInstance,
};

pub(crate) use fission_test_support::MemoryStore;

// === Fixtures ===

pub(crate) fn environment(name: &str, image: &str, poolsize: i32) -> Environment {
    Environment::new(
        "default",
        name,
        EnvironmentSpec {
            version: 3,
            runtime: Runtime {
                image: image.to_owned(),
                ..Runtime::default()
            },
            poolsize,
            ..EnvironmentSpec::default()
        },
    )
}

pub(crate) fn literal_package(name: &str, env: &str, code: &[u8]) -> Package {
    let mut p = Package::new(
        "default",
        name,
        PackageSpec {
            environment: ObjectReference {
                namespace: "default".to_owned(),
                name: env.to_owned(),
            },
            deployment: Archive::literal(code.to_vec()),
            ..PackageSpec::default()
        },
    );
    p.status.buildstatus = "succeeded".to_owned();
    p
}

pub(crate) fn function(name: &str, env: &str, pkg: &str, entrypoint: &str) -> Function {
    let mut spec = FunctionSpec {
        environment: ObjectReference {
            namespace: "default".to_owned(),
            name: env.to_owned(),
        },
        ..FunctionSpec::default()
    };
    spec.package.packageref.namespace = "default".to_owned();
    spec.package.packageref.name = pkg.to_owned();
    spec.package.function_name = entrypoint.to_owned();
    Function::new("default", name, spec)
}

pub(crate) async fn create<T: Into<AnyResource>, R: TryFrom<AnyResource>>(
    store: &MemoryStore,
    obj: T,
) -> R {
    match store.create(obj.into()).await.map(R::try_from) {
        Ok(Ok(r)) => r,
        _ => panic!("create failed"),
    }
}

pub(crate) async fn update<T: Into<AnyResource>, R: TryFrom<AnyResource>>(
    store: &MemoryStore,
    obj: T,
) -> R {
    match store.update(obj.into()).await.map(R::try_from) {
        Ok(Ok(r)) => r,
        _ => panic!("update failed"),
    }
}

/// A directory that looks like an `environments/` checkout plus a fake interpreter, so the
/// executor's installation checks pass for fake instances.
pub(crate) fn fake_environments(root: &Path) -> (PathBuf, PathBuf) {
    let envs = root.join("environments");
    for (dir, file) in [("nodejs", "server.js"), ("python", "server.py")] {
        std::fs::create_dir_all(envs.join(dir)).expect("mkdir");
        std::fs::write(envs.join(dir).join(file), "").expect("write");
    }
    let bin = root.join("fake-interpreter");
    std::fs::write(&bin, "").expect("write");
    (envs, bin)
}

// === Fake launcher ===

/// What fake instances do when asked to specialize.
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeBehaviour {
    /// Answer 500 with this body.
    pub fail_with: Option<String>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Never answer.
    pub hang: bool,
    /// Instances report this share of one CPU used since they started.
    pub cpu_percent: u32,
}

#[derive(Default)]
pub(crate) struct FakeLauncher {
    pub launched: AtomicUsize,
    pub specializations: Arc<AtomicUsize>,
    pub behaviour: Arc<Mutex<FakeBehaviour>>,
    pub instances: Mutex<HashMap<u64, Arc<FakeInstance>>>,
    /// Load requests received, as JSON.
    pub load_requests: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl FakeLauncher {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn set(&self, b: FakeBehaviour) {
        *self.behaviour.lock().unwrap_or_else(|e| e.into_inner()) = b;
    }

    pub(crate) fn specializations(&self) -> usize {
        self.specializations.load(Ordering::SeqCst)
    }

    pub(crate) fn instance(&self, id: u64) -> Option<Arc<FakeInstance>> {
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Instances that have not exited.
    pub(crate) fn alive(&self) -> usize {
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|i| i.exit.borrow().is_none())
            .count()
    }
}

pub(crate) struct FakeInstance {
    id: u64,
    addr: SocketAddr,
    exit_tx: watch::Sender<Option<ExitReport>>,
    exit: watch::Receiver<Option<ExitReport>>,
    server: tokio::task::JoinHandle<()>,
    pub kills: AtomicUsize,
    started: std::time::Instant,
    behaviour: Arc<Mutex<FakeBehaviour>>,
}

impl FakeInstance {
    /// Simulate the process dying on its own.
    pub(crate) fn crash(&self) {
        self.server.abort();
        let _ = self.exit_tx.send(Some(ExitReport {
            status: "exit status 1".to_owned(),
            killed: false,
        }));
    }
}

#[async_trait::async_trait]
impl RuntimeInstance for FakeInstance {
    fn id(&self) -> u64 {
        self.id
    }

    fn cpu_time(&self) -> Option<Duration> {
        let percent = self
            .behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cpu_percent;
        Some(self.started.elapsed().mul_f64(f64::from(percent) / 100.0))
    }
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn pid(&self) -> Option<u32> {
        None
    }
    fn exit_watch(&self) -> watch::Receiver<Option<ExitReport>> {
        self.exit.clone()
    }
    fn kill(&self) {
        self.kills.fetch_add(1, Ordering::SeqCst);
        self.server.abort();
        if self.exit.borrow().is_none() {
            let _ = self.exit_tx.send(Some(ExitReport {
                status: "killed by signal 9".to_owned(),
                killed: true,
            }));
        }
    }
    async fn install_code(&self, host_path: &Path, _slot: CodeSlot) -> std::io::Result<PathBuf> {
        Ok(host_path.to_owned())
    }
}

#[async_trait::async_trait]
impl InstanceLauncher for FakeLauncher {
    async fn launch(&self, spec: LaunchSpec) -> Result<Arc<dyn RuntimeInstance>, LaunchError> {
        self.launched.fetch_add(1, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(LaunchError::Setup)?;
        let addr = listener.local_addr().map_err(LaunchError::Setup)?;
        let counter = self.specializations.clone();
        let behaviour = self.behaviour.clone();
        let loads = self.load_requests.clone();
        let id = spec.instance_id;
        let served = Arc::new(AtomicU64::new(0));
        let server = tokio::spawn(async move {
            // Connections live in this set, so aborting the server drops them too (a crash).
            let mut connections = tokio::task::JoinSet::new();
            loop {
                while connections.try_join_next().is_some() {}
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                let behaviour = behaviour.clone();
                let loads = loads.clone();
                let served = served.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let counter = counter.clone();
                            let behaviour = behaviour.clone();
                            let loads = loads.clone();
                            let served = served.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let (status, text) = if path.ends_with("specialize") {
                                    counter.fetch_add(1, Ordering::SeqCst);
                                    if let Ok(v) = serde_json::from_slice(&body) {
                                        loads.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                                    }
                                    let b =
                                        behaviour.lock().unwrap_or_else(|e| e.into_inner()).clone();
                                    if b.hang {
                                        std::future::pending::<()>().await;
                                    }
                                    if !b.delay.is_zero() {
                                        tokio::time::sleep(b.delay).await;
                                    }
                                    match b.fail_with {
                                        Some(msg) => (500, msg),
                                        None => (200, String::new()),
                                    }
                                } else {
                                    let n = served.fetch_add(1, Ordering::SeqCst);
                                    (200, format!("instance {id} request {n}"))
                                };
                                let resp = hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(text)))
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let (exit_tx, exit) = watch::channel(None);
        let inst = Arc::new(FakeInstance {
            id,
            addr,
            exit_tx,
            exit,
            server,
            kills: AtomicUsize::new(0),
            started: std::time::Instant::now(),
            behaviour: self.behaviour.clone(),
        });
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, inst.clone());
        Ok(inst)
    }
}
