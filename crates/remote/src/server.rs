//! The executor's HTTP API: Fission's `/v2/getServiceForFunction` and friends over any
//! [`FunctionInstances`]. A lease taken for a router is held here until the router releases
//! it (`/v2/unTapService`) or stops renewing it ([`LEASE_TTL`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fission_core::resources::Function;
use fission_core::{ExecutorError, FunctionInstances, InstanceLease};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::wire::{
    COLD_HEADER, GET_SERVICE, INSTANCE_HEADER, LEASE_HEADER, LEASE_TTL, TAP_SERVICE, TAP_SERVICES,
    TapRequest, UNTAP,
};

/// How often expired leases are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

struct Held {
    lease: InstanceLease,
    /// `namespace/name`.
    function: String,
    expires: Instant,
}

struct Inner {
    instances: Arc<dyn FunctionInstances>,
    /// How long a lease lives without a release or a renewal.
    ttl: Duration,
    next_lease: AtomicU64,
    held: Mutex<HashMap<u64, Held>>,
}

impl Inner {
    fn held(&self) -> MutexGuard<'_, HashMap<u64, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The executor API over `instances`: serve [`ExecutorApi::router`] and run
/// [`ExecutorApi::expire_leases`].
#[derive(Clone)]
pub struct ExecutorApi {
    inner: Arc<Inner>,
}

impl ExecutorApi {
    /// The API of `instances`; leases unrenewed for [`LEASE_TTL`] are dropped.
    pub fn new(instances: Arc<dyn FunctionInstances>) -> Self {
        Self::with_lease_ttl(instances, LEASE_TTL)
    }

    /// The API of `instances`, dropping leases unrenewed for `ttl`.
    pub fn with_lease_ttl(instances: Arc<dyn FunctionInstances>, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                instances,
                ttl,
                next_lease: AtomicU64::new(1),
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The routes: `POST /v2/getServiceForFunction`, `/v2/unTapService`, `/v2/tapServices`,
    /// `/v2/tapService` and `GET /healthz`.
    pub fn router(&self) -> Router {
        Router::new()
            .route(GET_SERVICE, post(get_service))
            .route(UNTAP, post(untap))
            .route(TAP_SERVICES, post(tap_services))
            .route(TAP_SERVICE, post(|| async { StatusCode::OK }))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self.inner.clone())
    }

    /// Leases held for routers now.
    pub fn held_leases(&self) -> usize {
        self.inner.held().len()
    }

    /// Drop leases whose router stopped renewing them, until `shutdown`; then drop them all
    /// (the instances are about to stop).
    pub async fn expire_leases(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL.min(self.inner.ttl / 2));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let expired: Vec<Held> = {
                let mut held = self.inner.held();
                let ids: Vec<u64> = held
                    .iter()
                    .filter(|(_, h)| h.expires <= now)
                    .map(|(id, _)| *id)
                    .collect();
                ids.iter().filter_map(|id| held.remove(id)).collect()
            };
            for h in expired {
                tracing::warn!(function = %h.function, addr = %h.lease.addr, "lease expired: its router neither released nor renewed it");
            }
        }
        let all: Vec<Held> = self.inner.held().drain().map(|(_, h)| h).collect();
        drop(all);
    }
}

/// The status Fission's executor gives each failure (`http.Error` with the mapped code).
fn status_of(e: &ExecutorError) -> StatusCode {
    match e {
        ExecutorError::NotFound(_) => StatusCode::NOT_FOUND,
        ExecutorError::Overloaded {
            queue_full: true, ..
        } => StatusCode::TOO_MANY_REQUESTS,
        ExecutorError::Overloaded { .. } | ExecutorError::ShuttingDown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ExecutorError::SpecializationFailed { .. }
        | ExecutorError::Timeout { .. }
        | ExecutorError::Unsupported(_)
        | ExecutorError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// Plain text as Fission's executor answers; the error itself as JSON for a client that asks
/// (fission-rs' router), so it gets the variant the executor produced.
fn error_response(e: &ExecutorError, json: bool) -> Response {
    let status = status_of(e);
    let mut resp = if json {
        match serde_json::to_vec(e) {
            Ok(body) => {
                (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
            Err(_) => (status, e.to_string()).into_response(),
        }
    } else {
        (status, e.to_string()).into_response()
    };
    if let ExecutorError::Overloaded {
        retry_after_secs, ..
    } = e
        && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

async fn get_service(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let json = wants_json(&headers);
    let function: Function = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the body is not a Function object: {e}"),
            )
                .into_response();
        }
    };
    if function.metadata.name.is_empty() {
        return (StatusCode::BAD_REQUEST, "the Function has no metadata.name").into_response();
    }
    let lease = match inner.instances.acquire(&function).await {
        Ok(l) => l,
        Err(e) => return error_response(&e, json),
    };
    let (addr, instance, cold) = (lease.addr, lease.instance_id, lease.cold);
    let id = inner.next_lease.fetch_add(1, Ordering::Relaxed);
    inner.held().insert(
        id,
        Held {
            lease,
            function: format!("{}/{}", function.metadata.namespace, function.metadata.name),
            expires: Instant::now() + inner.ttl,
        },
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE.as_str(), "text/plain".to_owned()),
            (LEASE_HEADER, id.to_string()),
            (INSTANCE_HEADER, instance.to_string()),
            (COLD_HEADER, cold.to_string()),
        ],
        format_addr(addr),
    )
        .into_response()
}

/// `ip:port`, IPv6 bracketed (what Fission's executor returns).
fn format_addr(addr: SocketAddr) -> String {
    addr.to_string()
}

async fn untap(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let req: TapRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the body is not a tap request: {e}"),
            )
                .into_response();
        }
    };
    let function = format!("{}/{}", req.fn_metadata.namespace, req.fn_metadata.name);
    let removed = {
        let mut held = inner.held();
        let id = match req.lease_id {
            Some(id) => Some(id).filter(|id| held.contains_key(id)),
            // Fission's router names only the address: end one lease of that function there.
            None => held
                .iter()
                .find(|(_, h)| {
                    h.function == function && format_addr(h.lease.addr) == req.service_url
                })
                .map(|(id, _)| *id),
        };
        id.and_then(|id| held.remove(&id))
    };
    match removed {
        Some(mut h) => {
            if req.broken {
                h.lease.mark_broken();
            }
            drop(h);
            StatusCode::OK.into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "no lease of function '{function}' at '{}' is held",
                req.service_url
            ),
        )
            .into_response(),
    }
}

async fn tap_services(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let reqs: Vec<TapRequest> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the body is not a list of tap requests: {e}"),
            )
                .into_response();
        }
    };
    let expires = Instant::now() + inner.ttl;
    let mut held = inner.held();
    for id in reqs.iter().filter_map(|r| r.lease_id) {
        if let Some(h) = held.get_mut(&id) {
            h.expires = expires;
        }
    }
    StatusCode::OK.into_response()
}
