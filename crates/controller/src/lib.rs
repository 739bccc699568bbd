//! The controller: Fission's REST API (`/v2/...`) over the resource store.
//!
//! Requests are parsed into typed objects, normalized (Fission's defaults), validated, checked
//! against what they refer to, and written through [`ResourceStore`]; the store's change feed
//! carries every accepted write to the router and executor. Errors leave this crate in one
//! place ([`error::ApiError`]) as `{"code", "message"}` JSON with Fission's status table.
//!
//! Besides the resource collections it serves the archive store (`/proxy/storage/v1/archive`;
//! downloads also at storagesvc's `/v1/archive`),
//! function logs (`/proxy/logs/{fn}`), service discovery for the CLI (`/proxy/svcname`), health
//! and version, and an OpenAPI document generated from the same route table it serves.

mod apidocs;
pub mod auth;
pub mod canary;
mod error;
mod handlers;
mod references;
mod stats;
pub mod tls;
mod ui;
mod value_watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fission_core::{ArchiveStorage, FunctionLogs, ResourceStore};
use tokio_util::sync::CancellationToken;

pub use auth::ApiToken;
pub use error::ApiError;
pub use tls::TlsConfig;
pub use value_watch::follow_value_changes;

/// Controller settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of the router, given to clients that ask (`fission fn test`).
    pub router_url: String,
    /// Largest accepted object body (create/update).
    pub max_object_bytes: usize,
    /// Largest accepted archive upload.
    pub max_archive_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            router_url: "http://127.0.0.1:31314".to_owned(),
            // Objects carry literal archives below 256 KiB, base64-encoded; 8 MiB is generous.
            max_object_bytes: 8 * 1024 * 1024,
            // Fission caps archives at 256 MiB (v1.27).
            max_archive_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Renders the process's metrics in the Prometheus/OpenMetrics text format.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct Controller {
    pub(crate) store: Arc<dyn ResourceStore>,
    pub(crate) archives: Arc<dyn ArchiveStorage>,
    pub(crate) logs: Arc<dyn FunctionLogs>,
    pub(crate) config: Arc<Config>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) metrics: Option<MetricsRender>,
    pub(crate) instances: Option<Arc<dyn fission_core::InstanceReport>>,
    /// Routes other components serve through the controller (trigger status).
    pub(crate) extra_routes: Option<axum::Router>,
    /// When set, every request but `/healthz` must carry this token.
    pub(crate) token: Option<ApiToken>,
    /// When set, the listener speaks TLS only.
    pub(crate) tls: Option<TlsConfig>,
    /// The router's per-function series (the dashboard's plots), when the router is in-process.
    pub(crate) stats: Option<Arc<fission_core::CallStats>>,
}

impl Controller {
    /// A controller over `store`, serving archives from `archives` and function logs from
    /// `logs`.
    pub fn new(
        config: Config,
        store: Arc<dyn ResourceStore>,
        archives: impl ArchiveStorage,
        logs: impl FunctionLogs,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            archives: Arc::new(archives),
            logs: Arc::new(logs),
            config: Arc::new(config),
            shutdown,
            metrics: None,
            instances: None,
            extra_routes: None,
            token: None,
            tls: None,
            stats: None,
        }
    }

    /// Require `token` on every request except `/healthz` (401 without it).
    pub fn with_auth_token(mut self, token: ApiToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Serve HTTPS only, with `tls`'s certificate.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Serve `GET /metrics` with what `render` returns (404 until this is called).
    pub fn with_metrics_endpoint(
        mut self,
        render: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        self.metrics = Some(Arc::new(render));
        self
    }

    /// Answer `GET /v2/functions/{name}/instances` from `report` (404 until this is called).
    pub fn with_instance_report(mut self, report: Arc<dyn fission_core::InstanceReport>) -> Self {
        self.instances = Some(report);
        self
    }

    /// Serve `/v2/stats/...` (the dashboard's plots and live stream) from `stats` (404 until
    /// this is called).
    pub fn with_call_stats(mut self, stats: Arc<fission_core::CallStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Also serve `routes` (paths the controller's own API does not use).
    pub fn with_routes(mut self, routes: axum::Router) -> Self {
        self.extra_routes = Some(routes);
        self
    }

    /// The HTTP application.
    pub fn app(&self) -> axum::Router {
        let app = handlers::routes(self.clone());
        let app = match &self.extra_routes {
            Some(extra) => app.merge(extra.clone()),
            None => app,
        };
        match &self.token {
            // Layered last, so it guards every route, the extra ones included.
            Some(token) => app
                .merge(
                    axum::Router::new()
                        .route(
                            "/ui/login",
                            axum::routing::get(auth::login).post(auth::login),
                        )
                        .with_state(token.clone()),
                )
                .layer(axum::middleware::from_fn_with_state(
                    token.clone(),
                    auth::require_token,
                )),
            None => app,
        }
    }

    /// Serve on `listener` until `shutdown`, then let in-flight requests finish for up to `grace`.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        grace: Duration,
    ) -> std::io::Result<()> {
        let shutdown = self.shutdown.clone();
        let server = match &self.tls {
            Some(tls) => {
                let listener = tls::TlsListener::new(listener, tls)?;
                let app = self.app().into_make_service();
                let server = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
                tokio::spawn(async move { server.await })
            }
            None => {
                let app = self
                    .app()
                    .into_make_service_with_connect_info::<SocketAddr>();
                let server = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
                tokio::spawn(async move { server.await })
            }
        };
        shutdown.cancelled().await;
        match tokio::time::timeout(grace, server).await {
            Ok(joined) => joined.map_err(std::io::Error::other)?,
            Err(_) => {
                tracing::warn!(?grace, "controller did not drain within the grace period");
                Ok(())
            }
        }
    }
}
