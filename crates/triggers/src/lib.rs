//! Event triggers of the all-in-one server: TimeTriggers fire on their cron schedule,
//! MessageQueueTriggers consume their broker (Kafka, RabbitMQ, Redis Streams, NATS
//! JetStream), KubernetesWatchTriggers watch their namespace of the cluster; each calls its
//! function through the router's internal route, as Fission's components do.
//!
//! * [`delivery`]: the one delivery path (Fission's publisher retries, per-trigger metrics,
//!   status, failures in the function's log).
//! * [`schedule`]: cron parsing as Fission's timer parses it (also used by
//!   `fission tt showschedule`).
//! * [`kubewatch`]: watch triggers (where the cluster is: [`KubeSource`]).
//! * [`Triggers`]: follows the store and runs one task per trigger.
#![deny(missing_docs)]

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fission_core::{AnyResource, FunctionLogs, ResourceStore, StoreError, WatchEventType};
use fission_watcher::{Change, Watcher};
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

pub mod async_jobs;
pub mod delivery;
pub mod kubewatch;
pub mod mq;
mod mq_kafka;
mod mq_nats;
mod mq_rabbitmq;
mod mq_redis;
mod registry;
pub mod schedule;
mod timer;
mod trace;

pub use async_jobs::{AsyncConfig, AsyncJobs, Job, JobState};
pub use delivery::{
    Answer, Call, Delivery, DeliveryError, RetryPolicy, StatusTable, TriggerKey, TriggerKind,
    TriggerStatus,
};
pub use kubewatch::KubeSource;
pub use schedule::{Schedule, ScheduleError};
pub use timer::TIMER_NAME_HEADER;

/// Path of the status API on the controller: `GET /v2/triggerstatus/{kind}/{name}?namespace=`
/// with kind `time`, `messagequeue` or `watch`.
pub const STATUS_PATH: &str = "/v2/triggerstatus/{kind}/{name}";

/// Why the trigger component stopped.
#[derive(Debug, thiserror::Error)]
pub enum TriggersError {
    /// The store could not be listed at startup.
    #[error("cannot list triggers: {0}")]
    Store(#[from] StoreError),
}

/// The trigger component. Cheap to clone.
#[derive(Clone)]
pub struct Triggers {
    store: Arc<dyn ResourceStore>,
    delivery: Delivery,
    async_jobs: Option<AsyncJobs>,
    kube: KubeSource,
}

impl Triggers {
    /// Triggers over `store`, calling functions through the router at `router_url`.
    pub fn new(
        router_url: &str,
        store: Arc<dyn ResourceStore>,
        logs: Option<Arc<dyn FunctionLogs>>,
        registry: &mut MetricsRegistry,
    ) -> Self {
        Self {
            store,
            delivery: Delivery::new(router_url, registry, logs),
            async_jobs: None,
            kube: KubeSource::default(),
        }
    }

    /// Where KubernetesWatchTriggers find their cluster (default: kube's inference, the
    /// pod's service account or `$KUBECONFIG`).
    pub fn with_kube(mut self, source: KubeSource) -> Self {
        self.kube = source;
        self
    }

    /// Also run async calls, kept in the database at `path` (see [`async_jobs`]).
    pub fn with_async_jobs(
        mut self,
        path: &std::path::Path,
        config: AsyncConfig,
    ) -> Result<Self, async_jobs::JobStoreError> {
        self.async_jobs = Some(AsyncJobs::open(path, self.delivery.clone(), config)?);
        Ok(self)
    }

    /// The queue the router hands `X-Fission-Async: true` calls to.
    pub fn async_calls(&self) -> Option<Arc<dyn fission_core::AsyncCalls>> {
        self.async_jobs
            .clone()
            .map(|j| Arc::new(j) as Arc<dyn fission_core::AsyncCalls>)
    }

    /// The status of every trigger this component runs.
    pub fn status(&self) -> StatusTable {
        self.delivery.status().clone()
    }

    /// The status API, to merge into the controller's routes.
    pub fn api_routes(&self) -> axum::Router {
        let status = axum::Router::new()
            .route(STATUS_PATH, axum::routing::get(get_status))
            .with_state(self.status());
        match &self.async_jobs {
            Some(jobs) => status.merge(jobs.api_routes()),
            None => status,
        }
    }

    /// Follow the store and run every trigger until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), TriggersError> {
        let mut watcher = Watcher::new(self.store.clone(), "triggers");
        let mut timers = Registry::new(
            timer::TimerTasks {
                delivery: self.delivery.clone(),
            },
            self.delivery.clone(),
            shutdown.clone(),
        );
        let mut mqts = Registry::new(
            mq::MqTasks {
                store: self.store.clone(),
                delivery: self.delivery.clone(),
                defaults: mq::MqDefaults::from_env(),
            },
            self.delivery.clone(),
            shutdown.clone(),
        );
        let mut watches = Registry::new(
            kubewatch::WatchTasks {
                delivery: self.delivery.clone(),
                source: self.kube.clone(),
            },
            self.delivery.clone(),
            shutdown.clone(),
        );
        let stop_jobs = shutdown.child_token();
        let jobs = self
            .async_jobs
            .clone()
            .map(|j| tokio::spawn(j.run(stop_jobs.clone())));
        let result = loop {
            let Some(change) = watcher.next(&shutdown).await else {
                break Ok(());
            };
            match change {
                Err(e) => break Err(TriggersError::Store(e)),
                Ok(Change::Listed { objects, .. }) => {
                    let (mut tts, mut mq, mut ws) = (Vec::new(), Vec::new(), Vec::new());
                    for o in objects {
                        match o {
                            AnyResource::TimeTrigger(t) => tts.push(t),
                            AnyResource::MessageQueueTrigger(t) => mq.push(t),
                            AnyResource::KubernetesWatchTrigger(t) => ws.push(t),
                            _ => {}
                        }
                    }
                    timers.replace_all(tts);
                    mqts.replace_all(mq);
                    watches.replace_all(ws);
                }
                Ok(Change::Applied(event)) => match (event.event_type, event.object) {
                    (WatchEventType::Deleted, AnyResource::TimeTrigger(t)) => {
                        timers.remove(&t.metadata.namespace, &t.metadata.name)
                    }
                    (_, AnyResource::TimeTrigger(t)) => timers.apply(t),
                    (WatchEventType::Deleted, AnyResource::MessageQueueTrigger(t)) => {
                        mqts.remove(&t.metadata.namespace, &t.metadata.name)
                    }
                    (_, AnyResource::MessageQueueTrigger(t)) => mqts.apply(t),
                    (WatchEventType::Deleted, AnyResource::KubernetesWatchTrigger(t)) => {
                        watches.remove(&t.metadata.namespace, &t.metadata.name)
                    }
                    (_, AnyResource::KubernetesWatchTrigger(t)) => watches.apply(t),
                    _ => {}
                },
            }
        };
        timers.stop_all().await;
        mqts.stop_all().await;
        watches.stop_all().await;
        if let Some(jobs) = jobs {
            stop_jobs.cancel();
            let _ = jobs.await;
        }
        result
    }
}

#[derive(serde::Deserialize)]
struct NsQuery {
    namespace: Option<String>,
}

async fn get_status(
    State(table): State<StatusTable>,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Query<NsQuery>,
) -> Response {
    let Some(kind) = TriggerKind::from_api_name(&kind) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("unknown trigger kind '{kind}': use time, messagequeue or watch"),
        )
            .into_response();
    };
    let key = TriggerKey {
        kind,
        namespace: q
            .namespace
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned()),
        name,
    };
    match table.get(&key) {
        Some(s) => axum::Json(s).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no status for {key}: the server does not run this trigger"),
        )
            .into_response(),
    }
}
