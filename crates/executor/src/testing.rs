//! Test doubles: an in-memory [`ResourceStore`] with a broadcast change feed, and a launcher
//! whose "instances" are in-process HTTP servers that count specializations.

use std::collections::{BTreeMap, HashMap};
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
use fission_core::{
    AnyResource, ObjectReference, ResourceKind, ResourceStore, StoreError, WatchEvent,
    WatchEventType, WatchStream,
};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::{broadcast, watch};

use crate::launcher::{
    CodeSlot, ExitReport, InstanceLauncher, LaunchError, LaunchSpec, RuntimeInstance,
};

// === In-memory store ===

type Key = (ResourceKind, String, String);

#[derive(Default)]
struct MemState {
    objects: BTreeMap<Key, AnyResource>,
    revision: u64,
}

/// A `ResourceStore` in memory: one revision counter, uids `uid-<n>`, broadcast change feed.
pub(crate) struct MemoryStore {
    state: Mutex<MemState>,
    feed: broadcast::Sender<WatchEvent>,
}

impl MemoryStore {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(MemState::default()),
            feed: broadcast::channel(1024).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(obj: &AnyResource) -> Key {
        (
            obj.kind(),
            obj.meta().namespace.clone(),
            obj.meta().name.clone(),
        )
    }

    fn not_found(kind: ResourceKind, namespace: &str, name: &str) -> StoreError {
        StoreError::NotFound {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl ResourceStore for MemoryStore {
    async fn create(&self, mut obj: AnyResource) -> Result<AnyResource, StoreError> {
        obj.normalize();
        let mut st = self.lock();
        let key = Self::key(&obj);
        if st.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists {
                kind: key.0,
                namespace: key.1,
                name: key.2,
            });
        }
        st.revision += 1;
        let rev = st.revision;
        let meta = obj.meta_mut();
        meta.uid = format!("uid-{rev}");
        meta.resource_version = rev.to_string();
        meta.generation = 1;
        st.objects.insert(key, obj.clone());
        let _ = self.feed.send(WatchEvent {
            event_type: WatchEventType::Added,
            object: obj.clone(),
            revision: rev,
        });
        Ok(obj)
    }

    async fn update(&self, mut obj: AnyResource) -> Result<AnyResource, StoreError> {
        obj.normalize();
        let mut st = self.lock();
        let key = Self::key(&obj);
        let Some(current) = st.objects.get(&key) else {
            return Err(Self::not_found(key.0, &key.1, &key.2));
        };
        let sent = obj.meta().resource_version.clone();
        if !sent.is_empty() && sent != current.meta().resource_version {
            return Err(StoreError::Conflict {
                kind: key.0,
                namespace: key.1,
                name: key.2,
                sent,
                current: current.meta().resource_version.clone(),
            });
        }
        let uid = current.meta().uid.clone();
        st.revision += 1;
        let rev = st.revision;
        let meta = obj.meta_mut();
        meta.uid = uid;
        meta.resource_version = rev.to_string();
        st.objects.insert(key, obj.clone());
        let _ = self.feed.send(WatchEvent {
            event_type: WatchEventType::Modified,
            object: obj.clone(),
            revision: rev,
        });
        Ok(obj)
    }

    async fn delete(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<AnyResource, StoreError> {
        let mut st = self.lock();
        let Some(obj) = st
            .objects
            .remove(&(kind, namespace.to_owned(), name.to_owned()))
        else {
            return Err(Self::not_found(kind, namespace, name));
        };
        st.revision += 1;
        let rev = st.revision;
        let _ = self.feed.send(WatchEvent {
            event_type: WatchEventType::Deleted,
            object: obj.clone(),
            revision: rev,
        });
        Ok(obj)
    }

    async fn get(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<AnyResource, StoreError> {
        self.lock()
            .objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| Self::not_found(kind, namespace, name))
    }

    async fn list(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
    ) -> Result<Vec<AnyResource>, StoreError> {
        Ok(self
            .lock()
            .objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
            .map(|(_, o)| o.clone())
            .collect())
    }

    async fn list_and_watch(&self) -> Result<(Vec<AnyResource>, u64, WatchStream), StoreError> {
        let st = self.lock();
        // Subscribing under the lock makes snapshot + feed consistent.
        let rx = self.feed.subscribe();
        let snapshot = st.objects.values().cloned().collect();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(ev) => Some((Ok(ev), rx)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Some((Err(StoreError::Lagged(n)), rx))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Ok((snapshot, st.revision, Box::pin(stream)))
    }
}

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
        });
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, inst.clone());
        Ok(inst)
    }
}
