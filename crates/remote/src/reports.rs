//! What routers and executors tell the controller when the server is split into roles: the
//! controller judges canaries by call counts that live in the routers, and shows (`fission fn
//! list`, the dashboard) instance counts that live in the executors. Each router and executor
//! pushes its whole current report every [`REPORT_INTERVAL`] under an id of its own; the
//! controller sums the reports of every sender, so any number of routers and executors (behind
//! Services, scaled, restarted) add up without the controller discovering them.
//!
//! * `PUT /v2/cluster/routers/{id}/calls` — `{"functions": [{"namespace", "name", "total",
//!   "failed"}]}`: the router's call counts since it started (cumulative, so a lost report
//!   loses nothing; a restarted router reports under a new id and its predecessor's last
//!   counts stay in the sum, which therefore never goes back).
//! * `PUT /v2/cluster/executors/{id}/instances` — `{"functions": [{"namespace", "name",
//!   "instances"}]}`: the executor's instances now. A report older than [`REPORT_TTL`] no
//!   longer counts (its executor is gone, and its instances with it or adopted by another).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use fission_core::{CallCounter, CallCounts, CallStats, InstanceReport};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often routers and executors send their report.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long an executor's instance report counts without a newer one.
pub const REPORT_TTL: Duration = Duration::from_secs(10);
/// How long a router's counts are kept without a newer report (past the canary manager's
/// longest sensible interval; a router gone longer than this no longer matters to a rollout).
const CALLS_TTL: Duration = Duration::from_secs(6 * 3600);
/// Longest sender id accepted.
const MAX_ID: usize = 128;

#[derive(Debug, Serialize, Deserialize)]
struct FunctionCalls {
    namespace: String,
    name: String,
    total: u64,
    failed: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CallsReport {
    functions: Vec<FunctionCalls>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FunctionInstanceCount {
    namespace: String,
    name: String,
    instances: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct InstancesReport {
    functions: Vec<FunctionInstanceCount>,
}

type Key = (String, String);

struct Received<T> {
    at: Instant,
    counts: HashMap<Key, T>,
}

#[derive(Default)]
struct Reports {
    routers: HashMap<String, Received<CallCounts>>,
    executors: HashMap<String, Received<usize>>,
}

/// The controller's side: receives the reports ([`ClusterReports::routes`]) and reads as the
/// [`CallCounter`] of the canary manager and the [`InstanceReport`] of the API.
#[derive(Clone, Default)]
pub struct ClusterReports {
    inner: Arc<Mutex<Reports>>,
}

impl ClusterReports {
    /// No reports yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Reports> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoints routers and executors send to (serve them behind the controller's auth).
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/v2/cluster/routers/{id}/calls", put(put_calls))
            .route("/v2/cluster/executors/{id}/instances", put(put_instances))
            .with_state(self.clone())
    }
}

fn check_id(id: &str) -> Result<(), (StatusCode, String)> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("a reporter id has 1 to {MAX_ID} characters"),
        ));
    }
    Ok(())
}

async fn put_calls(
    State(r): State<ClusterReports>,
    Path(id): Path<String>,
    Json(report): Json<CallsReport>,
) -> Result<StatusCode, (StatusCode, String)> {
    check_id(&id)?;
    let counts = report
        .functions
        .into_iter()
        .map(|f| {
            let counts = CallCounts {
                total: f.total,
                failed: f.failed,
            };
            ((f.namespace, f.name), counts)
        })
        .collect();
    let now = Instant::now();
    let mut reports = r.lock();
    reports.routers.retain(|_, r| now - r.at < CALLS_TTL);
    reports.routers.insert(id, Received { at: now, counts });
    Ok(StatusCode::NO_CONTENT)
}

async fn put_instances(
    State(r): State<ClusterReports>,
    Path(id): Path<String>,
    Json(report): Json<InstancesReport>,
) -> Result<StatusCode, (StatusCode, String)> {
    check_id(&id)?;
    let counts = report
        .functions
        .into_iter()
        .map(|f| ((f.namespace, f.name), f.instances))
        .collect();
    let now = Instant::now();
    let mut reports = r.lock();
    reports.executors.retain(|_, r| now - r.at < REPORT_TTL);
    reports.executors.insert(id, Received { at: now, counts });
    Ok(StatusCode::NO_CONTENT)
}

impl CallCounter for ClusterReports {
    fn calls(&self, namespace: &str, function: &str) -> CallCounts {
        let key = (namespace.to_owned(), function.to_owned());
        self.lock()
            .routers
            .values()
            .filter_map(|r| r.counts.get(&key))
            .fold(CallCounts::default(), |sum, c| CallCounts {
                total: sum.total + c.total,
                failed: sum.failed + c.failed,
            })
    }
}

impl InstanceReport for ClusterReports {
    fn instance_count(&self, namespace: &str, name: &str) -> usize {
        let key = (namespace.to_owned(), name.to_owned());
        let now = Instant::now();
        self.lock()
            .executors
            .values()
            .filter(|r| now - r.at < REPORT_TTL)
            .filter_map(|r| r.counts.get(&key))
            .sum()
    }

    fn instance_counts(&self) -> Vec<(String, String, usize)> {
        let now = Instant::now();
        let mut sum: HashMap<&Key, usize> = HashMap::new();
        let reports = self.lock();
        for r in reports
            .executors
            .values()
            .filter(|r| now - r.at < REPORT_TTL)
        {
            for (key, n) in &r.counts {
                *sum.entry(key).or_default() += n;
            }
        }
        sum.into_iter()
            .map(|((ns, name), n)| (ns.clone(), name.clone(), n))
            .collect()
    }
}

/// Why a reporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReporterError {
    /// The URL is not `http(s)://host[:port]`.
    #[error("controller URL '{0}' is not an http(s) URL")]
    BadUrl(String),
    /// The token is not a valid header value.
    #[error("the API token cannot be sent in a header")]
    BadToken,
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client for the controller: {0}")]
    Client(#[source] reqwest::Error),
}

/// The sending side: a router's or executor's reports to the controller at `--controller-url`.
#[derive(Clone)]
pub struct Reporter {
    url: String,
    http: reqwest::Client,
}

impl Reporter {
    /// Reports to `path` of the controller at `controller_url`, with `api_token` when the
    /// controller requires one.
    fn new(
        controller_url: &str,
        api_token: Option<&str>,
        path: &str,
    ) -> Result<Self, ReporterError> {
        let base = controller_url.trim_end_matches('/');
        if !fission_fetch::is_remote_url(base) {
            return Err(ReporterError::BadUrl(controller_url.to_owned()));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = api_token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ReporterError::BadToken)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(ReporterError::Client)?;
        Ok(Self {
            url: format!("{base}{path}"),
            http,
        })
    }

    /// A router's reporter, as the sender `id` (unique per process: a restart is a new
    /// sender).
    pub fn router(
        controller_url: &str,
        api_token: Option<&str>,
        id: &str,
    ) -> Result<Self, ReporterError> {
        Self::new(
            controller_url,
            api_token,
            &format!("/v2/cluster/routers/{id}/calls"),
        )
    }

    /// An executor's reporter, as the sender `id` (unique per process).
    pub fn executor(
        controller_url: &str,
        api_token: Option<&str>,
        id: &str,
    ) -> Result<Self, ReporterError> {
        Self::new(
            controller_url,
            api_token,
            &format!("/v2/cluster/executors/{id}/instances"),
        )
    }

    /// Send `stats`' call counts every [`REPORT_INTERVAL`] until `shutdown`.
    pub async fn send_calls(self, stats: Arc<CallStats>, shutdown: CancellationToken) {
        self.every_interval(shutdown, move || {
            let functions = stats
                .all_totals()
                .into_iter()
                .map(|(namespace, name, c)| FunctionCalls {
                    namespace,
                    name,
                    total: c.total,
                    failed: c.failed,
                })
                .collect();
            serde_json::to_vec(&CallsReport { functions })
        })
        .await;
    }

    /// Send `report`'s instance counts every [`REPORT_INTERVAL`] until `shutdown`.
    pub async fn send_instances(
        self,
        report: Arc<dyn InstanceReport>,
        shutdown: CancellationToken,
    ) {
        self.every_interval(shutdown, move || {
            let functions = report
                .instance_counts()
                .into_iter()
                .map(|(namespace, name, instances)| FunctionInstanceCount {
                    namespace,
                    name,
                    instances,
                })
                .collect();
            serde_json::to_vec(&InstancesReport { functions })
        })
        .await;
    }

    async fn every_interval(
        &self,
        shutdown: CancellationToken,
        body: impl Fn() -> serde_json::Result<Vec<u8>>,
    ) {
        let mut ticker = tokio::time::interval(REPORT_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Warn once per outage, not every second.
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let body = match body() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode the report to the controller");
                    continue;
                }
            };
            let sent = self
                .http
                .put(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            match sent {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!(url = %self.url, "reports reach the controller again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(url = %self.url, error = %e, "cannot report to the controller; retrying");
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_controller_sums_every_routers_calls_and_every_fresh_executors_instances() {
        let reports = ClusterReports::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = reports.routes();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let shutdown = CancellationToken::new();

        let stats_a = Arc::new(CallStats::new());
        let stats_b = Arc::new(CallStats::new());
        let (ns, f): (Arc<str>, Arc<str>) = (Arc::from("default"), Arc::from("f"));
        let sample = |code| fission_core::stats::CallSample {
            code,
            latency: Duration::from_millis(1),
            cold: false,
        };
        let now = fission_core::stats::unix_now();
        stats_a.record(&ns, &f, sample(200), now);
        stats_a.record(&ns, &f, sample(500), now);
        stats_b.record(&ns, &f, sample(200), now);
        for (id, stats) in [("a", stats_a), ("b", stats_b)] {
            let r = Reporter::router(&url, None, id).expect("reporter");
            tokio::spawn(r.send_calls(stats, shutdown.clone()));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while reports.calls("default", "f").total < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            reports.calls("default", "f"),
            CallCounts {
                total: 3,
                failed: 1
            }
        );
        assert_eq!(reports.calls("default", "other"), CallCounts::default());

        // Two executors, one of them with instances of f.
        for (id, n) in [("x", 2), ("y", 1)] {
            let r = Reporter::executor(&url, None, id).expect("reporter");
            tokio::spawn(r.send_instances(Arc::new(Fixed(n)), shutdown.clone()));
        }
        while reports.instance_count("default", "f") < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(reports.instance_count("default", "f"), 3);
        assert_eq!(
            reports.instance_counts(),
            vec![("default".to_owned(), "f".to_owned(), 3)]
        );
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn an_executor_silent_for_the_ttl_no_longer_counts_but_a_routers_calls_stay() {
        let reports = ClusterReports::new();
        let instances = |n| {
            Json(InstancesReport {
                functions: vec![FunctionInstanceCount {
                    namespace: "default".to_owned(),
                    name: "f".to_owned(),
                    instances: n,
                }],
            })
        };
        let calls = Json(CallsReport {
            functions: vec![FunctionCalls {
                namespace: "default".to_owned(),
                name: "f".to_owned(),
                total: 4,
                failed: 1,
            }],
        });
        let ok =
            |r: Result<StatusCode, (StatusCode, String)>| assert_eq!(r, Ok(StatusCode::NO_CONTENT));
        ok(put_instances(
            State(reports.clone()),
            Path("gone".to_owned()),
            instances(2),
        )
        .await);
        ok(put_calls(State(reports.clone()), Path("r".to_owned()), calls).await);
        tokio::time::advance(REPORT_TTL / 2).await;
        ok(put_instances(
            State(reports.clone()),
            Path("live".to_owned()),
            instances(1),
        )
        .await);
        assert_eq!(reports.instance_count("default", "f"), 3);
        tokio::time::advance(REPORT_TTL / 2).await;
        assert_eq!(
            reports.instance_count("default", "f"),
            1,
            "only the live executor"
        );
        assert_eq!(reports.calls("default", "f").total, 4);
        let rejected =
            put_instances(State(reports.clone()), Path(String::new()), instances(1)).await;
        assert_eq!(rejected.map_err(|(s, _)| s), Err(StatusCode::BAD_REQUEST));
    }

    /// An executor with `n` instances of `default/f`.
    struct Fixed(usize);

    impl InstanceReport for Fixed {
        fn instance_count(&self, namespace: &str, name: &str) -> usize {
            if (namespace, name) == ("default", "f") {
                self.0
            } else {
                0
            }
        }
        fn instance_counts(&self) -> Vec<(String, String, usize)> {
            vec![("default".to_owned(), "f".to_owned(), self.0)]
        }
    }
}
