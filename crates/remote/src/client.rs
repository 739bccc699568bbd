//! The router's side of the executor API: [`FunctionInstances`] over HTTP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fission_core::resources::Function;
use fission_core::{ExecutorError, FunctionInstances, InstanceLease, LeaseRelease};
use tokio_util::sync::CancellationToken;

use crate::wire::{
    COLD_HEADER, FnMeta, GET_SERVICE, INSTANCE_HEADER, LEASE_HEADER, TAP_INTERVAL, TAP_SERVICES,
    TapRequest, UNTAP,
};

/// Attempts at reaching the executor when the connection itself fails (it may be restarting).
const CONNECT_ATTEMPTS: u32 = 3;
/// `Retry-After` for a call refused because the executor is unreachable and the router knows
/// no instance of the function: a restarted executor is usually serving within seconds.
const UNREACHABLE_RETRY_AFTER_SECS: u64 = 2;
/// Added to the function's timeout for the executor call (the executor's own wait for an
/// instance is bounded by that timeout; this covers the hops).
const CALL_MARGIN: Duration = Duration::from_secs(10);

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RemoteInstancesError {
    /// The URL is not `http(s)://host[:port]`.
    #[error("executor URL '{0}' is not an http(s) URL")]
    BadUrl(String),
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client for the executor: {0}")]
    Client(#[source] reqwest::Error),
}

struct Inner {
    base: String,
    http: reqwest::Client,
    /// Leases this router holds, renewed every [`TAP_INTERVAL`].
    held: Mutex<HashMap<u64, TapRequest>>,
    /// The last instance the executor handed out per function (`namespace/name`), served
    /// while the executor cannot be reached — as Fission's router keeps serving the function
    /// addresses it has cached while the executor restarts.
    known: Mutex<HashMap<String, Known>>,
}

/// An instance address learnt from the executor, valid for one version of the function.
#[derive(Clone)]
struct Known {
    uid: String,
    resource_version: String,
    addr: SocketAddr,
    instance_id: u64,
}

impl Known {
    fn of(function: &Function, addr: SocketAddr, instance_id: u64) -> Self {
        Self {
            uid: function.metadata.uid.clone(),
            resource_version: function.metadata.resource_version.clone(),
            addr,
            instance_id,
        }
    }

    fn serves(&self, function: &Function) -> bool {
        self.uid == function.metadata.uid
            && self.resource_version == function.metadata.resource_version
    }
}

impl Inner {
    fn held(&self) -> MutexGuard<'_, HashMap<u64, TapRequest>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn known(&self) -> MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The instance to use for `function` while the executor is unreachable, if one is known.
    fn known_for(&self, function: &Function) -> Option<Known> {
        self.known()
            .get(&key(function))
            .filter(|k| k.serves(function))
            .cloned()
    }

    /// Forget `addr` for `function` (it failed): the next call asks the executor again.
    fn forget(&self, function_key: &str, addr: SocketAddr) {
        let mut known = self.known();
        if known.get(function_key).is_some_and(|k| k.addr == addr) {
            known.remove(function_key);
        }
    }
}

/// Why asking the executor failed.
enum AskError {
    /// No answer from the executor (down, restarting, connection dropped): the router may
    /// serve a known instance instead.
    Unreachable(String),
    /// Any other failure, reported as is.
    Executor(ExecutorError),
}

/// [`FunctionInstances`] served by an executor in another process (`--executor-url`).
#[derive(Clone)]
pub struct RemoteInstances {
    inner: Arc<Inner>,
}

impl RemoteInstances {
    /// A client of the executor API at `base_url` (`http://executor.fission`).
    pub fn new(base_url: &str) -> Result<Self, RemoteInstancesError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !fission_fetch::is_remote_url(&base) {
            return Err(RemoteInstancesError::BadUrl(base_url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(RemoteInstancesError::Client)?;
        Ok(Self {
            inner: Arc::new(Inner {
                base,
                http,
                held: Mutex::new(HashMap::new()),
                known: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Leases held now (released ones are not).
    pub fn held_leases(&self) -> usize {
        self.inner.held().len()
    }

    /// Renew the leases held (long requests, websockets) every [`TAP_INTERVAL`] until
    /// `shutdown`, so the executor does not take them for a dead router's.
    pub async fn renew_leases(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TAP_INTERVAL);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let taps: Vec<TapRequest> = self.inner.held().values().cloned().collect();
            if taps.is_empty() {
                continue;
            }
            let url = format!("{}{TAP_SERVICES}", self.inner.base);
            match self.inner.http.post(&url).json(&taps).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "the executor refused to renew leases")
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew leases at the executor"),
            }
        }
    }

    /// Ask the executor for an instance of `function`, trying a refused connection up to
    /// `attempts` times.
    async fn post_function(
        &self,
        function: &Function,
        attempts: u32,
    ) -> Result<reqwest::Response, AskError> {
        let url = format!("{}{GET_SERVICE}", self.inner.base);
        let secs = u64::try_from(function.spec.function_timeout)
            .ok()
            .filter(|s| *s > 0)
            .unwrap_or(60);
        let body = serde_json::to_vec(function).map_err(|e| {
            AskError::Executor(ExecutorError::Internal(format!(
                "cannot encode the function: {e}"
            )))
        })?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .inner
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(Duration::from_secs(secs) + CALL_MARGIN)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) => return Ok(r),
                // Only a connection that never opened is retried: a request the executor
                // received may have started a specialization, which a retry would repeat.
                Err(e) if e.is_connect() && attempt < attempts => {
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                Err(e) if e.is_timeout() && !e.is_connect() => {
                    return Err(AskError::Executor(ExecutorError::Timeout {
                        function: key(function),
                        secs,
                    }));
                }
                Err(e) => {
                    return Err(AskError::Unreachable(format!(
                        "cannot reach the executor at {}: {}",
                        self.inner.base,
                        error_chain(&e)
                    )));
                }
            }
        }
    }
}

fn key(f: &Function) -> String {
    format!("{}/{}", f.metadata.namespace, f.metadata.name)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

fn header<T: std::str::FromStr>(r: &reqwest::Response, name: &str) -> Option<T> {
    r.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[async_trait::async_trait]
impl FunctionInstances for RemoteInstances {
    async fn acquire(&self, function: &Function) -> Result<InstanceLease, ExecutorError> {
        let fallback = self.inner.known_for(function);
        // With an instance to fall back on, a refused connection is not worth the retries'
        // delay: the call is served from that instance at once.
        let attempts = if fallback.is_some() {
            1
        } else {
            CONNECT_ATTEMPTS
        };
        let resp = match self.post_function(function, attempts).await {
            Ok(resp) => resp,
            Err(AskError::Executor(e)) => return Err(e),
            Err(AskError::Unreachable(why)) => {
                let Some(known) = fallback else {
                    // Only a call the router has no instance for truly needs the executor;
                    // it is refused as retryable rather than failed.
                    return Err(ExecutorError::Overloaded {
                        message: why,
                        retry_after_secs: UNREACHABLE_RETRY_AFTER_SECS,
                        queue_full: false,
                    });
                };
                tracing::debug!(function = %key(function), instance = %known.addr, reason = %why,
                    "executor unreachable; serving the function's known instance");
                let release = Arc::new(KnownRelease {
                    inner: self.inner.clone(),
                    function_key: key(function),
                    addr: known.addr,
                });
                return Ok(InstanceLease::new(
                    known.addr,
                    known.instance_id,
                    false,
                    release,
                ));
            }
        };
        let status = resp.status();
        let lease_id: Option<u64> = header(&resp, LEASE_HEADER);
        let instance_id: u64 = header(&resp, INSTANCE_HEADER).unwrap_or(0);
        let cold = header(&resp, COLD_HEADER).unwrap_or(false);
        let body = resp.bytes().await.map_err(|e| {
            ExecutorError::Internal(format!("the executor's answer broke off: {e}"))
        })?;
        if !status.is_success() {
            return Err(serde_json::from_slice(&body).unwrap_or_else(|_| {
                ExecutorError::Internal(format!(
                    "the executor answered {status}: {}",
                    String::from_utf8_lossy(&body).trim()
                ))
            }));
        }
        let text = String::from_utf8_lossy(&body);
        let addr: SocketAddr = text.trim().parse().map_err(|_| {
            ExecutorError::Internal(format!(
                "the executor answered an address that is not ip:port: '{}'",
                text.trim()
            ))
        })?;
        let tap = TapRequest {
            fn_metadata: FnMeta {
                name: function.metadata.name.clone(),
                namespace: function.metadata.namespace.clone(),
            },
            fn_executor_type: "poolmgr".to_owned(),
            service_url: addr.to_string(),
            lease_id,
            broken: false,
        };
        if let Some(id) = lease_id {
            self.inner.held().insert(id, tap.clone());
        }
        self.inner
            .known()
            .insert(key(function), Known::of(function, addr, instance_id));
        let release = Arc::new(RemoteRelease {
            inner: self.inner.clone(),
            tap,
        });
        Ok(InstanceLease::new(addr, instance_id, cold, release))
    }
}

/// Ends a lease at the executor when the router drops it.
struct RemoteRelease {
    inner: Arc<Inner>,
    tap: TapRequest,
}

impl LeaseRelease for RemoteRelease {
    fn release(&self, broken: bool) {
        if let Some(id) = self.tap.lease_id {
            self.inner.held().remove(&id);
        }
        if broken && let Ok(addr) = self.tap.service_url.parse() {
            let function_key = format!(
                "{}/{}",
                self.tap.fn_metadata.namespace, self.tap.fn_metadata.name
            );
            self.inner.forget(&function_key, addr);
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime (the process is ending): the executor expires the lease.
            return;
        };
        let mut tap = self.tap.clone();
        tap.broken = broken;
        let inner = self.inner.clone();
        // Off the response path, as Fission's router untaps asynchronously.
        rt.spawn(async move {
            let url = format!("{}{UNTAP}", inner.base);
            match inner.http.post(&url).json(&tap).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(status = %r.status(), lease = ?tap.lease_id, "the executor did not release a lease"),
                Err(e) => tracing::warn!(error = %e, lease = ?tap.lease_id, "cannot release a lease at the executor; it expires there"),
            }
        });
    }
}

/// A call served from a known instance while the executor was unreachable: there is no lease
/// at the executor to end, but a failed instance is forgotten.
struct KnownRelease {
    inner: Arc<Inner>,
    function_key: String,
    addr: SocketAddr,
}

impl LeaseRelease for KnownRelease {
    fn release(&self, broken: bool) {
        if broken {
            self.inner.forget(&self.function_key, self.addr);
        }
    }
}
