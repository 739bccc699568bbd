//! The one way every trigger calls a function: an HTTP request to the router's internal route
//! `/fission-function/[<ns>/]<name><subpath>`, as Fission's webhook publisher sends it, with
//! retries, per-trigger metrics and status, and failures written to the function's log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fission_core::{FunctionLogs, OutputStream};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Which kind of trigger a status or metric belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum TriggerKind {
    /// A `TimeTrigger`.
    TimeTrigger,
    /// A `MessageQueueTrigger`.
    MessageQueueTrigger,
    /// A `KubernetesWatchTrigger`.
    KubernetesWatchTrigger,
}

impl TriggerKind {
    /// The name used in logs and in the status API path (`time`, `messagequeue`), as the
    /// controller names the kinds' routes (`/v2/triggers/time`).
    pub fn api_name(self) -> &'static str {
        match self {
            Self::TimeTrigger => "time",
            Self::MessageQueueTrigger => "messagequeue",
            Self::KubernetesWatchTrigger => "watch",
        }
    }

    /// From the status API path segment.
    pub fn from_api_name(s: &str) -> Option<Self> {
        match s {
            "time" => Some(Self::TimeTrigger),
            "messagequeue" => Some(Self::MessageQueueTrigger),
            "watch" => Some(Self::KubernetesWatchTrigger),
            _ => None,
        }
    }
}

/// One trigger object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TriggerKey {
    /// Its kind.
    pub kind: TriggerKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for TriggerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.kind.api_name(),
            self.namespace,
            self.name
        )
    }
}

/// What `fission <kind> get` shows about a trigger's deliveries since the server started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerStatus {
    /// Fires (timer ticks, messages received).
    pub fired: u64,
    /// Fires whose call ended with a 2xx response.
    pub succeeded: u64,
    /// Fires whose call failed (transport error after all retries, or a non-2xx answer).
    pub failed: u64,
    /// Extra attempts made.
    pub retried: u64,
    /// Timer fires skipped because the previous call was still running.
    pub skipped: u64,
    /// RFC 3339 time of the last fire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fire: Option<String>,
    /// HTTP status of the last answered call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// The last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339 time of the last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_time: Option<String>,
}

/// Statuses of every trigger the server runs.
#[derive(Debug, Clone, Default)]
pub struct StatusTable {
    inner: Arc<Mutex<HashMap<TriggerKey, TriggerStatus>>>,
}

impl StatusTable {
    /// A trigger's status; `None` when the server does not run it.
    pub fn get(&self, key: &TriggerKey) -> Option<TriggerStatus> {
        self.lock().get(key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TriggerKey, TriggerStatus>> {
        // A panic while holding this lock leaves counters, never broken invariants.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn update(&self, key: &TriggerKey, f: impl FnOnce(&mut TriggerStatus)) {
        f(self.lock().entry(key.clone()).or_default());
    }

    pub(crate) fn register(&self, key: &TriggerKey) {
        self.lock().entry(key.clone()).or_default();
    }

    pub(crate) fn remove(&self, key: &TriggerKey) {
        self.lock().remove(key);
    }

    pub(crate) fn set_error(&self, key: &TriggerKey, error: String) {
        self.update(key, |s| {
            s.last_error = Some(error);
            s.last_error_time = Some(now_rfc3339());
        });
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Per-trigger Prometheus metrics.
#[derive(Clone)]
struct Metrics {
    fired: Family<TriggerKey, Counter>,
    succeeded: Family<TriggerKey, Counter>,
    failed: Family<TriggerKey, Counter>,
    retried: Family<TriggerKey, Counter>,
    skipped: Family<TriggerKey, Counter>,
    latency: Family<TriggerKey, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

impl Metrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self {
            fired: Family::default(),
            succeeded: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            skipped: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        };
        let r = registry.sub_registry_with_prefix("fission_trigger");
        r.register(
            "fired",
            "Trigger fires (timer ticks, messages)",
            m.fired.clone(),
        );
        r.register(
            "succeeded",
            "Fires whose call got a 2xx answer",
            m.succeeded.clone(),
        );
        r.register("failed", "Fires whose call failed", m.failed.clone());
        r.register("retried", "Extra attempts made", m.retried.clone());
        r.register(
            "skipped",
            "Timer fires skipped because the previous call was still running",
            m.skipped.clone(),
        );
        r.register(
            "latency_seconds",
            "From the fire to the function's answer, retries included",
            m.latency.clone(),
        );
        m
    }
}

/// How a trigger retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Pause after the first failed attempt; doubles after each further one.
    pub first_backoff: Duration,
    /// Whether an answer other than 2xx is retried too (message queues), or ends the
    /// delivery (Fission's webhook publisher: only transport errors are retried).
    pub retry_on_status: bool,
}

impl RetryPolicy {
    /// Fission's webhook publisher (timer, kubewatcher): 10 attempts, waits 1 s, 2 s, 4 s …,
    /// only transport errors retried.
    pub const PUBLISHER: Self = Self {
        max_attempts: 10,
        first_backoff: Duration::from_secs(1),
        retry_on_status: false,
    };
}

/// A call to a function through the router.
#[derive(Debug, Clone)]
pub struct Call {
    /// HTTP method.
    pub method: reqwest::Method,
    /// The function's namespace.
    pub namespace: String,
    /// The function's name.
    pub function: String,
    /// Appended to the function's internal route (`/` or `/a/b`).
    pub subpath: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Bytes,
}

/// A function's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Bytes,
}

impl Answer {
    /// Whether the function succeeded (2xx).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a delivery did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Every attempt failed to reach the router (or timed out).
    #[error("{url}: no answer after {attempts} attempts: {last}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last transport error.
        last: String,
    },
    /// The server is shutting down.
    #[error("{url}: cancelled by shutdown")]
    Cancelled {
        /// The URL called.
        url: String,
    },
}

/// Fission's publisher request timeout (60 min).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Calls functions for triggers. Cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    client: reqwest::Client,
    router_url: String,
    metrics: Metrics,
    status: StatusTable,
    logs: Option<Arc<dyn FunctionLogs>>,
}

impl Delivery {
    /// Deliveries through the router at `router_url` (`http://127.0.0.1:31314`); metrics are
    /// registered in `registry`, failures written to `logs`.
    pub fn new(
        router_url: &str,
        registry: &mut Registry,
        logs: Option<Arc<dyn FunctionLogs>>,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            client,
            router_url: router_url.trim_end_matches('/').to_owned(),
            metrics: Metrics::new(registry),
            status: StatusTable::default(),
            logs,
        }
    }

    /// The router's base URL (`http://127.0.0.1:31314`).
    pub fn router_url(&self) -> &str {
        &self.router_url
    }

    /// One request, no retries; a transport failure as text with its causes.
    pub(crate) async fn send_once(
        &self,
        method: &reqwest::Method,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Answer, String> {
        self.send(method, url, headers, body)
            .await
            .map_err(|e| error_chain(&e))
    }

    /// The status of every trigger.
    pub fn status(&self) -> &StatusTable {
        &self.status
    }

    /// The URL Fission's triggers call: `/fission-function/<name>` for namespace `default`,
    /// `/fission-function/<ns>/<name>` otherwise, then the sub-path.
    pub fn url_for(&self, namespace: &str, function: &str, subpath: &str) -> String {
        let base = if namespace.is_empty() || namespace == "default" {
            format!("{}/fission-function/{function}", self.router_url)
        } else {
            format!(
                "{}/fission-function/{namespace}/{function}",
                self.router_url
            )
        };
        if subpath.is_empty() {
            base
        } else if subpath.starts_with('/') {
            format!("{base}{subpath}")
        } else {
            format!("{base}/{subpath}")
        }
    }

    /// Count a fire.
    pub fn fired(&self, key: &TriggerKey) {
        self.metrics.fired.get_or_create(key).inc();
        self.status.update(key, |s| {
            s.fired += 1;
            s.last_fire = Some(now_rfc3339());
        });
    }

    /// Count a fire skipped because the previous call is still running.
    pub fn skipped(&self, key: &TriggerKey) {
        self.metrics.skipped.get_or_create(key).inc();
        self.status.update(key, |s| s.skipped += 1);
        tracing::info!(trigger = %key, "previous call still running; this fire is skipped");
    }

    /// Deliver `call` for trigger `key` under `policy`: the answer (the last one, when answers
    /// are retried) or why there is none. Records metrics and status; failures go to the
    /// function's log too.
    #[tracing::instrument(name = "trigger fire", level = "debug", skip_all, fields(
        otel.kind = "producer",
        fission.trigger = %key,
        fission.function = %call.function,
    ))]
    pub async fn deliver(
        &self,
        key: &TriggerKey,
        call: &Call,
        policy: RetryPolicy,
        shutdown: &CancellationToken,
    ) -> Result<Answer, DeliveryError> {
        let started = std::time::Instant::now();
        let url = self.url_for(&call.namespace, &call.function, &call.subpath);
        let mut backoff = policy.first_backoff;
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let outcome = tokio::select! {
                () = shutdown.cancelled() => break Err(DeliveryError::Cancelled { url: url.clone() }),
                r = self.attempt(&url, call) => r,
            };
            let retry = match &outcome {
                Ok(a) => policy.retry_on_status && !a.is_success(),
                Err(_) => true,
            };
            if !retry || attempt >= policy.max_attempts.max(1) {
                break outcome.map_err(|e| DeliveryError::Unreachable {
                    url: url.clone(),
                    attempts: attempt,
                    last: error_chain(&e),
                });
            }
            match &outcome {
                Ok(a) => {
                    tracing::debug!(trigger = %key, status = a.status, attempt, "function failed; retrying")
                }
                Err(e) => {
                    tracing::debug!(trigger = %key, error = %error_chain(e), attempt, "call failed; retrying")
                }
            }
            self.metrics.retried.get_or_create(key).inc();
            self.status.update(key, |s| s.retried += 1);
            tokio::select! {
                () = shutdown.cancelled() => break Err(DeliveryError::Cancelled { url: url.clone() }),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = backoff.saturating_mul(2);
        };
        self.metrics
            .latency
            .get_or_create(key)
            .observe(started.elapsed().as_secs_f64());
        self.record(key, call, &result);
        result
    }

    fn record(&self, key: &TriggerKey, call: &Call, result: &Result<Answer, DeliveryError>) {
        let failure = match result {
            Ok(a) if a.is_success() => None,
            Ok(a) => Some(format!(
                "function answered {}: {}",
                a.status,
                snippet(&a.body)
            )),
            Err(DeliveryError::Cancelled { .. }) => return,
            Err(e) => Some(e.to_string()),
        };
        let status = match result {
            Ok(a) => Some(a.status),
            Err(_) => None,
        };
        match failure {
            None => {
                self.metrics.succeeded.get_or_create(key).inc();
                self.status.update(key, |s| {
                    s.succeeded += 1;
                    s.last_status = status;
                });
            }
            Some(why) => {
                self.metrics.failed.get_or_create(key).inc();
                tracing::warn!(trigger = %key, function = %call.function, error = %why, "trigger call failed");
                self.status.update(key, |s| {
                    s.failed += 1;
                    s.last_status = status;
                    s.last_error = Some(why.clone());
                    s.last_error_time = Some(now_rfc3339());
                });
                if let Some(logs) = &self.logs {
                    // Instance id 0: the line is the trigger's, not an instance's.
                    logs.writer(&call.namespace, &call.function, 0)
                        .line(OutputStream::Stderr, &format!("[{key}] {why}"));
                }
            }
        }
    }

    async fn attempt(&self, url: &str, call: &Call) -> Result<Answer, reqwest::Error> {
        self.send(&call.method, url, &call.headers, call.body.clone())
            .await
    }

    async fn send(
        &self,
        method: &reqwest::Method,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Answer, reqwest::Error> {
        let mut req = self.client.request(method.clone(), url).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        // The router's span of this call continues the fire's trace.
        let mut trace = reqwest::header::HeaderMap::new();
        crate::trace::inject(&tracing::Span::current(), &mut trace);
        req = req.headers(trace);
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = resp.bytes().await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// The start of a body, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// reqwest's errors put the cause (connection refused, …) in `source()`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}
