//! The dashboard's numbers: the router's per-function series over the last hour
//! ([`fission_core::CallStats`]) and a server-sent event stream that pushes calls and resource
//! changes as they happen, so the page never polls.
//!
//! * `GET /v2/stats/functions?namespace=&step=` — every function with calls in the last hour
//!   (`namespace` absent: all namespaces), in `step`-second points (default 60).
//! * `GET /v2/stats/functions/{namespace}/{name}?step=` — one function (default step 10).
//! * `GET /v2/stats/stream?namespace=` — `text/event-stream`: `stats` events (at most one a
//!   second) with the current 10-second and 60-second points of every function of the namespace
//!   called since the last event, and `change` events (`{kind, type, namespace, name, object}`)
//!   for every write to the store.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use fission_core::stats::{BUCKET_SECS, FunctionSeries, Point, Range, WINDOW_SECS, unix_now};
use fission_core::{CallStats, WatchEventType};
use fission_watcher::{Change, Watcher};
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::Controller;
use crate::error::ApiError;

/// How often the stream looks for new calls.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
pub(crate) struct StatsQuery {
    namespace: Option<String>,
    step: Option<u64>,
}

/// What the list and item endpoints answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatsResponse {
    /// Width of each point, seconds.
    step: u64,
    /// Unix seconds the series were read at.
    now: u64,
    /// How far back the series reach, seconds.
    window: u64,
    functions: Vec<FunctionSeries>,
}

pub(crate) fn routes() -> Router<Controller> {
    Router::new()
        .route("/v2/stats/functions", get(list))
        .route("/v2/stats/functions/{namespace}/{name}", get(one))
        .route("/v2/stats/stream", get(stream))
}

fn stats(c: &Controller) -> Result<Arc<CallStats>, ApiError> {
    c.stats
        .clone()
        .ok_or_else(|| ApiError::not_found("this server keeps no call statistics"))
}

/// A step of `BUCKET_SECS` multiples within the window.
fn step(q: &StatsQuery, default: u64) -> Result<u64, ApiError> {
    let step = q.step.unwrap_or(default);
    if step == 0 || !step.is_multiple_of(BUCKET_SECS) || step > WINDOW_SECS {
        return Err(ApiError::invalid(format!(
            "step must be a multiple of {BUCKET_SECS} seconds up to {WINDOW_SECS}, not {step}"
        )));
    }
    Ok(step)
}

async fn list(
    State(c): State<Controller>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<StatsResponse>, ApiError> {
    let stats = stats(&c)?;
    let step = step(&q, 60)?;
    let now = unix_now();
    let functions = stats.functions(q.namespace.as_deref(), Range::window(step, now));
    Ok(Json(StatsResponse {
        step,
        now,
        window: WINDOW_SECS,
        functions,
    }))
}

async fn one(
    State(c): State<Controller>,
    Path((namespace, name)): Path<(String, String)>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<StatsResponse>, ApiError> {
    let stats = stats(&c)?;
    let step = step(&q, BUCKET_SECS)?;
    let now = unix_now();
    // A function not called yet has an empty series, not a 404: the page plots nothing.
    let functions = stats
        .function(&namespace, &name, Range::window(step, now))
        .into_iter()
        .collect();
    Ok(Json(StatsResponse {
        step,
        now,
        window: WINDOW_SECS,
        functions,
    }))
}

/// One function's latest points in a `stats` event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Latest {
    namespace: String,
    name: String,
    total_calls: u64,
    total_errors: u64,
    /// The current 10-second bucket.
    bucket: Point,
    /// The current minute.
    minute: Point,
}

/// A store write in a `change` event.
#[derive(Debug, Serialize)]
struct ChangeEvent {
    kind: String,
    #[serde(rename = "type")]
    event_type: &'static str,
    namespace: String,
    name: String,
    /// The object as `GET` returns it, so the page updates one row instead of relisting
    /// (absent for secrets and config maps, and literal archives are left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<serde_json::Value>,
}

/// What the page may see of `object`.
fn shown(object: &fission_core::AnyResource) -> Option<serde_json::Value> {
    use fission_core::ResourceKind;
    if matches!(
        object.kind(),
        ResourceKind::Secret | ResourceKind::ConfigMap
    ) {
        return None;
    }
    let mut v = object.to_value();
    if let Some(spec) = v.get_mut("spec") {
        for part in ["deployment", "source"] {
            if let Some(archive) = spec.get_mut(part).and_then(|a| a.as_object_mut()) {
                archive.remove("literal");
            }
        }
    }
    Some(v)
}

enum Next {
    Tick,
    Change(Option<ChangeEvent>),
    Closed,
}

struct StreamState {
    stats: Arc<CallStats>,
    namespace: Option<String>,
    watcher: Watcher,
    shutdown: tokio_util::sync::CancellationToken,
    ticker: tokio::time::Interval,
    /// Total calls per function at the last event, to send only what changed.
    sent: HashMap<(String, String), u64>,
    listed_once: bool,
}

impl StreamState {
    fn latest(&mut self) -> Vec<Latest> {
        let now = unix_now();
        let ns = self.namespace.as_deref();
        let minutes = self.stats.functions(
            ns,
            Range {
                step: 60,
                since: now - now % 60,
                now,
            },
        );
        let mut out = Vec::new();
        for m in minutes {
            let key = (m.namespace.clone(), m.name.clone());
            if self.sent.get(&key) == Some(&m.total_calls) {
                continue;
            }
            self.sent.insert(key, m.total_calls);
            let bucket = self
                .stats
                .function(
                    &m.namespace,
                    &m.name,
                    Range {
                        step: BUCKET_SECS,
                        since: now - now % BUCKET_SECS,
                        now,
                    },
                )
                .map(|b| b.summary)
                .filter(|p| p.calls > 0)
                .unwrap_or(Point {
                    start: now - now % BUCKET_SECS,
                    calls: 0,
                    errors: 0,
                    cold_starts: 0,
                    p50_ms: None,
                    p99_ms: None,
                });
            out.push(Latest {
                namespace: m.namespace,
                name: m.name,
                total_calls: m.total_calls,
                total_errors: m.total_errors,
                bucket,
                minute: m.summary,
            });
        }
        out
    }

    async fn next(&mut self) -> Next {
        tokio::select! {
            _ = self.ticker.tick() => Next::Tick,
            change = self.watcher.next(&self.shutdown) => match change {
                None => Next::Closed,
                Some(Ok(Change::Applied(ev))) => {
                    let m = ev.object.meta();
                    if self.namespace.as_deref().is_some_and(|ns| ns != m.namespace) {
                        return Next::Change(None);
                    }
                    Next::Change(Some(ChangeEvent {
                        kind: ev.object.kind().to_string(),
                        event_type: match ev.event_type {
                            WatchEventType::Added => "ADDED",
                            WatchEventType::Modified => "MODIFIED",
                            WatchEventType::Deleted => "DELETED",
                        },
                        namespace: m.namespace.clone(),
                        name: m.name.clone(),
                        object: shown(&ev.object),
                    }))
                }
                // The first listing is what the page fetched itself; a relisting (after the
                // feed was lost) tells it to refetch, as something changed meanwhile.
                Some(Ok(Change::Listed { .. })) => {
                    if !std::mem::replace(&mut self.listed_once, true) {
                        Next::Change(None)
                    } else {
                        Next::Change(Some(ChangeEvent {
                            kind: "*".to_owned(),
                            event_type: "LISTED",
                            namespace: self.namespace.clone().unwrap_or_default(),
                            name: String::new(),
                            object: None,
                        }))
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "dashboard stream: store feed failed; the watcher retries");
                    Next::Change(None)
                }
            },
        }
    }
}

fn json_event(name: &str, data: &impl Serialize) -> Option<Event> {
    match Event::default().event(name).json_data(data) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a dashboard event");
            None
        }
    }
}

/// A `stats` event.
#[derive(Debug, Serialize)]
struct StatsEvent {
    now: u64,
    functions: Vec<Latest>,
}

async fn stream(
    State(c): State<Controller>,
    Query(q): Query<StatsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let stats = stats(&c)?;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let state = StreamState {
        stats,
        namespace: q.namespace.filter(|ns| !ns.is_empty()),
        watcher: Watcher::new(c.store.clone(), "dashboard stream"),
        shutdown: c.shutdown.clone(),
        ticker,
        sent: HashMap::new(),
        listed_once: false,
    };
    let events = futures::stream::unfold(state, |mut state| async move {
        loop {
            let event = match state.next().await {
                Next::Closed => return None,
                Next::Change(None) => continue,
                Next::Change(Some(change)) => json_event("change", &change),
                Next::Tick => {
                    let functions = state.latest();
                    if functions.is_empty() {
                        continue;
                    }
                    json_event(
                        "stats",
                        &StatsEvent {
                            now: unix_now(),
                            functions,
                        },
                    )
                }
            };
            if let Some(event) = event {
                return Some((Ok(event), state));
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
