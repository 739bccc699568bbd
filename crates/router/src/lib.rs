//! The router: turns HTTPTriggers and Functions into a route table and proxies requests to
//! function instances leased from the executor.
//!
//! What this crate owns: path matching with Fission's semantics ([`table`]), the reverse proxy
//! (timeouts, body limits, one retry, upgrades), the router's own endpoints, its metrics, and
//! keeping the table in step with the store. What it deliberately does not: start or pick
//! instances (that is the executor behind [`FunctionInstances`]), parse flags or install
//! signal handlers (the server binary does), or serve TLS.
//!
//! # Wiring
//!
//! ```no_run
//! # async fn wire(
//! #     store: std::sync::Arc<dyn fission_core::ResourceStore>,
//! #     instances: std::sync::Arc<dyn fission_core::FunctionInstances>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use prometheus_client::registry::Registry;
//! use tokio_util::sync::CancellationToken;
//!
//! let mut registry = Registry::default();
//! let router = fission_router::Router::new(fission_router::Config::default(), instances, &mut registry);
//! let registry = Arc::new(Mutex::new(registry));
//! let router = router.with_metrics_endpoint(move || {
//!     let mut text = String::new();
//!     let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
//!     let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
//!     text
//! });
//! let shutdown = CancellationToken::new();
//! let sync = tokio::spawn({
//!     let (router, shutdown) = (router.clone(), shutdown.clone());
//!     async move { router.sync_routes(store, shutdown).await }
//! });
//! router.ready().await;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8888").await?;
//! router.serve(listener, shutdown, Duration::from_secs(30)).await?;
//! sync.await??;
//! # Ok(()) }
//! ```
//!
//! # Matching (Fission v1.22 semantics)
//!
//! * `relativeurl` is a gorilla/mux template: `{name}` matches one segment (`[^/]+`),
//!   `{name:regex}` matches the regex (which may span segments), and the template is anchored
//!   to the whole path. No trailing-slash redirect: `/hello/` does not match `/hello`.
//! * `prefix`, when non-empty, wins over `relativeurl`. A prefix ending in `/` matches every
//!   path starting with it; otherwise the path must equal the prefix or continue with `/`
//!   (`/foo` matches `/foo` and `/foo/x`, not `/foobar`).
//! * Methods are `methods` ∪ `method`; a trigger with neither matches no method (405).
//! * `host`, when set (and not `*`), must equal the request's Host without port, ignoring case.
//! * Every Function is reachable at `/fission-function/<ns>/<name>[/…]`, and functions of
//!   namespace `default` also at `/fission-function/<name>[/…]`, with every method. When both
//!   readings of a path name an existing function, the namespaced one wins.
//! * `GET /router-healthz` → 200, `GET /_version` → `{"version": …}`, `GET /metrics` →
//!   Prometheus text, and `GET /` → 200 empty unless a trigger claims it.
//! * A trigger whose function (or any of whose weighted functions) does not exist is left out
//!   (404) until the function appears. `function-weights` picks per request at random, with
//!   probability weight / Σ weights.
//! * Paths are matched as received (percent-encoded, like Fission's `USE_ENCODED_PATH=true`),
//!   so `%2F` stays inside a segment; variable values are decoded before they are forwarded.
//!
//! # Precedence
//!
//! Fission's order between overlapping routes depends on informer order, i.e. it is random.
//! Ours is total and deterministic; the first route that matches path, host and method wins:
//!
//! 1. the router's endpoints (`/router-healthz`, `/_version`, `/metrics`; GET only);
//! 2. internal `/fission-function/…` routes;
//! 3. exact `relativeurl`s (no variables);
//! 4. templated `relativeurl`s: more literal segments first, then more literal characters;
//! 5. prefixes: longer (more literal characters) first;
//! 6. the default `GET /`.
//!
//! Within one rank a host-specific trigger beats a host-less one, and remaining ties go to the
//! trigger whose `namespace/name` sorts first. If some route matches the path but none also
//! matches the method, the answer is 405 (empty body, `Allow` listing the methods that would match); if none
//! matches the path, 404.
//!
//! # What the function receives
//!
//! * Path: `/` for `relativeurl` triggers (query kept; the original is in
//!   `X-Fission-Full-Url`), the rest after the prefix for prefix triggers (with a leading `/`;
//!   the whole path with `keepPrefix`), the rest after `/fission-function/[ns/]name` for
//!   internal routes (`/` if nothing follows).
//! * Headers: `X-Fission-Params-<Name>` per variable (Go canonical spelling:
//!   `{user_id}` → `X-Fission-Params-User_id`), `X-Fission-Full-Url`,
//!   `X-Fission-Function-{Uid,Name,Namespace,ResourceVersion}`, `Forwarded: host=<host>` (quoted unless a token) and
//!   `X-Forwarded-Host` unless the client sent either, `X-Forwarded-For`; `Host` is the
//!   instance address; hop-by-hop headers are dropped.
//!
//! # Failures
//!
//! Every response the router makes up is built in [`respond`] and carries
//! `x-fission-error: router` plus `x-fission-error-reason`; function responses, whatever
//! their status, are relayed verbatim. See that module for the statuses and texts.
#![deny(missing_docs)]

pub mod access;
mod async_call;
mod body;
mod error;
mod metrics;
mod proxy;
pub mod respond;
mod server;
mod sync;
pub mod table;
mod trace;
mod upstream;

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use fission_core::{FunctionInstances, ResourceStore, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use error::ProxyError;
pub use server::Routes;
pub use table::RouteTable;

/// Default request body limit: 64 MiB. Fission sets none; an unbounded body is a way to make
/// an instance (and this process, for buffered bodies) run out of memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Router settings, built by the server binary.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the server binary binds the router listener. Informational: [`Router::serve`]
    /// takes an already bound listener.
    pub listen: SocketAddr,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// Reported by `GET /_version`.
    pub router_version: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8888)),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            router_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// Why the router stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The first snapshot could not be read, so there is no route table to serve.
    #[error("could not read the initial routes from the store")]
    InitialSync(#[source] StoreError),
}

/// Renders the Prometheus exposition served at `GET /metrics`.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// The router. Cheap to clone: clones share the route table, the upstream connection pool
/// and the metrics.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: Config,
    /// The current table. Written once per store change; readers only clone the `Arc`, so the
    /// lock is held for a pointer copy.
    table: RwLock<Arc<RouteTable>>,
    /// Flips to true when the first snapshot has been published.
    ready: watch::Sender<bool>,
    proxy: proxy::Proxy,
    metrics: Arc<metrics::Metrics>,
    metrics_render: RwLock<Option<MetricsRender>>,
    /// Where `X-Fission-Async: true` calls are queued; without it the header is ignored.
    async_calls: RwLock<Option<Arc<dyn fission_core::AsyncCalls>>>,
}

impl Inner {
    pub(crate) fn current_table(&self) -> Arc<RouteTable> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn publish(&self, table: RouteTable) {
        let table = Arc::new(table);
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
        self.ready.send_replace(true);
    }

    pub(crate) fn async_calls(&self) -> Option<Arc<dyn fission_core::AsyncCalls>> {
        self.async_calls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn metrics_render(&self) -> Option<MetricsRender> {
        self.metrics_render
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl fission_core::CallCounter for Router {
    fn calls(&self, namespace: &str, function: &str) -> fission_core::CallCounts {
        self.inner.metrics.totals(namespace, function)
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router with an empty route table (only its own endpoints and internal routes of no
    /// function) that leases instances from `instances` and registers its metrics in
    /// `metrics`.
    pub fn new(
        config: Config,
        instances: Arc<dyn FunctionInstances>,
        metrics: &mut prometheus_client::registry::Registry,
    ) -> Self {
        let metrics = Arc::new(metrics::Metrics::register(metrics));
        let proxy = proxy::Proxy::new(instances, metrics.clone(), config.max_body_bytes);
        let (ready, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                config,
                table: RwLock::new(Arc::new(RouteTable::default())),
                ready,
                proxy,
                metrics,
                metrics_render: RwLock::new(None),
                async_calls: RwLock::new(None),
            }),
        }
    }

    /// Serve `GET /metrics` with what `render` returns (typically the encoded registry the
    /// router's metrics were registered in). Without it `/metrics` answers 404. Applies to
    /// every clone of this router.
    #[must_use]
    pub fn with_metrics_endpoint(
        self,
        render: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        *self
            .inner
            .metrics_render
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(render));
        self
    }

    /// Queue calls to function routes that carry `X-Fission-Async: true` in `queue` and answer
    /// them with 202 and the job id. Applies to every clone of this router.
    #[must_use]
    pub fn with_async_calls(self, queue: Arc<dyn fission_core::AsyncCalls>) -> Self {
        *self
            .inner
            .async_calls
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(queue);
        self
    }

    /// Keep the route table in sync with the store's change feed until `shutdown`.
    ///
    /// Lists again when the feed reports the consumer fell behind (`StoreError::Lagged`) or
    /// fails; later failures are retried with backoff while the current table keeps serving.
    /// Returns an error only if the very first snapshot cannot be read.
    pub async fn sync_routes(
        &self,
        store: Arc<dyn ResourceStore>,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        sync::run(&self.inner, store, shutdown).await
    }

    /// Resolves once the first snapshot has been turned into a route table.
    pub async fn ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        // The sender lives in `inner`, which `self` keeps alive, so this cannot fail.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// The route table requests are currently matched against.
    pub fn route_table(&self) -> Arc<RouteTable> {
        self.inner.current_table()
    }

    /// Accept connections on `listener` until `shutdown`, then stop accepting and let
    /// in-flight requests finish for up to `grace` before aborting them. HTTP/1.1, with
    /// keep-alive and protocol upgrades.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> std::io::Result<()> {
        server::serve(self.inner.clone(), listener, shutdown, grace, Routes::All).await
    }

    /// Like [`Router::serve`], but serving only `routes` on this listener: with
    /// [`Routes::Public`] the internal `/fission-function/…` routes answer 404 there (serve them
    /// on another listener with [`Router::serve`]).
    pub async fn serve_routes(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
        grace: Duration,
        routes: Routes,
    ) -> std::io::Result<()> {
        server::serve(self.inner.clone(), listener, shutdown, grace, routes).await
    }

    /// Every function's calls over the last hour, as this router answered them (what the
    /// dashboard plots; shared, so readers see calls as they are recorded).
    pub fn call_stats(&self) -> Arc<fission_core::CallStats> {
        self.inner.metrics.stats.clone()
    }

    /// Replace the route table directly (tests and embedders that do not use a store).
    pub fn set_route_table(&self, table: RouteTable) {
        self.inner.publish(table);
    }
}
