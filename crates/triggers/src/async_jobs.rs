//! Async invocation (beyond Fission): calls the router accepted with `X-Fission-Async: true`
//! are kept in their own redb database (committed before the 202 is sent), run in the
//! background through the router with retries, and kept with their outcome so the caller can
//! fetch it by id. A job whose retry budget runs out goes to the dead-letter list. Jobs that
//! were queued or running when the server stopped (or was killed) run again after a restart:
//! delivery is at least once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use fission_core::{AsyncCallError, AsyncCalls, AsyncRequest};
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::delivery::Delivery;

const JOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("async_jobs");

/// Why the job database failed.
#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    /// redb failed.
    #[error("async job database {path}: {message}")]
    Db {
        /// The database file.
        path: String,
        /// What failed.
        message: String,
    },
    /// A stored job cannot be read back.
    #[error("async job {id} is corrupt: {source}")]
    Corrupt {
        /// The job id.
        id: String,
        /// The decoding error.
        source: serde_json::Error,
    },
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Being called (or interrupted by a restart, and queued again at startup).
    Running,
    /// The function answered 2xx.
    Succeeded,
    /// The function answered with a status that is not retried (4xx other than 408/429).
    Failed,
    /// Every attempt failed (transport errors, 5xx, 408, 429): the dead-letter list.
    Dead,
}

/// The function's answer to a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: BTreeMap<String, String>,
    /// The body, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body, base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

/// One background call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Its id.
    pub id: String,
    /// Queue order.
    pub seq: u64,
    /// Where it is.
    pub state: JobState,
    /// HTTP method.
    pub method: String,
    /// Path and query on the router.
    pub uri: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Request body, base64.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    /// Where the outcome is POSTed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The function's last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the callback could not be delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_error: Option<String>,
}

/// Retry and concurrency settings.
#[derive(Debug, Clone, Copy)]
pub struct AsyncConfig {
    /// Attempts per job, the first included.
    pub max_attempts: u32,
    /// Pause after the first failed attempt; doubles after each further one.
    pub first_backoff: Duration,
    /// Jobs run at the same time.
    pub concurrency: usize,
}

impl Default for AsyncConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            first_backoff: Duration::from_secs(1),
            concurrency: 16,
        }
    }
}

struct Db {
    db: Database,
    path: String,
}

impl Db {
    fn err(&self, e: impl std::fmt::Display) -> JobStoreError {
        JobStoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn put(&self, job: &Job) -> Result<(), JobStoreError> {
        let bytes = serde_json::to_vec(job).map_err(|e| self.err(e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(JOBS).map_err(|e| self.err(e))?;
            t.insert(job.id.as_str(), bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    fn get(&self, id: &str) -> Result<Option<Job>, JobStoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(JOBS).map_err(|e| self.err(e))?;
        match t.get(id).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|source| JobStoreError::Corrupt {
                    id: id.to_owned(),
                    source,
                }),
        }
    }

    fn all(&self) -> Result<Vec<Job>, JobStoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(JOBS).map_err(|e| self.err(e))?;
        let mut jobs = Vec::new();
        for entry in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let job: Job =
                serde_json::from_slice(v.value()).map_err(|source| JobStoreError::Corrupt {
                    id: k.value().to_owned(),
                    source,
                })?;
            jobs.push(job);
        }
        jobs.sort_by_key(|j| j.seq);
        Ok(jobs)
    }
}

/// The durable queue of async calls and its worker. Cheap to clone.
#[derive(Clone)]
pub struct AsyncJobs {
    db: Arc<Db>,
    delivery: Delivery,
    config: AsyncConfig,
    queue_tx: mpsc::UnboundedSender<String>,
    queue_rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>>,
    next_seq: Arc<std::sync::atomic::AtomicU64>,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl AsyncJobs {
    /// Open (creating) the job database at `path`. Jobs left queued or running by a previous
    /// run are queued again, in their original order.
    pub fn open(
        path: &Path,
        delivery: Delivery,
        config: AsyncConfig,
    ) -> Result<Self, JobStoreError> {
        let shown = path.display().to_string();
        let db = Database::create(path).map_err(|e| JobStoreError::Db {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let db = Db { db, path: shown };
        {
            let txn = db.db.begin_write().map_err(|e| db.err(e))?;
            txn.open_table(JOBS).map_err(|e| db.err(e))?;
            txn.commit().map_err(|e| db.err(e))?;
        }
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        let jobs = db.all()?;
        let next_seq = jobs.last().map_or(1, |j| j.seq + 1);
        let mut requeued = 0;
        for j in &jobs {
            if matches!(j.state, JobState::Queued | JobState::Running) {
                // The receiver is held right here, so this cannot fail.
                let _ = queue_tx.send(j.id.clone());
                requeued += 1;
            }
        }
        if requeued > 0 {
            tracing::info!(
                jobs = requeued,
                "async calls left by the previous run queued again"
            );
        }
        Ok(Self {
            db: Arc::new(db),
            delivery,
            config,
            queue_tx,
            queue_rx: Arc::new(tokio::sync::Mutex::new(queue_rx)),
            next_seq: Arc::new(std::sync::atomic::AtomicU64::new(next_seq)),
        })
    }

    /// One job, by id.
    pub async fn get(&self, id: &str) -> Result<Option<Job>, JobStoreError> {
        let (db, id) = (self.db.clone(), id.to_owned());
        blocking(move || db.get(&id)).await
    }

    /// Every job in `state` (all with `None`), oldest first.
    pub async fn list(&self, state: Option<JobState>) -> Result<Vec<Job>, JobStoreError> {
        let db = self.db.clone();
        let all = blocking(move || db.all()).await?;
        Ok(all
            .into_iter()
            .filter(|j| state.is_none_or(|s| j.state == s))
            .collect())
    }

    async fn put(&self, job: Job) -> Result<(), JobStoreError> {
        let db = self.db.clone();
        blocking(move || db.put(&job)).await
    }

    /// Run queued jobs until `shutdown`. A job interrupted by shutdown stays `running` in the
    /// database and runs again after the restart.
    pub async fn run(self, shutdown: CancellationToken) {
        let limit = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut rx = self.queue_rx.lock().await;
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let id = tokio::select! {
                () = shutdown.cancelled() => break,
                id = rx.recv() => match id { Some(id) => id, None => break },
            };
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let (me, stop) = (self.clone(), shutdown.clone());
            tasks.spawn(async move {
                if let Err(e) = me.run_job(&id, &stop).await {
                    tracing::warn!(job = %id, error = %e, "async call could not be recorded");
                }
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn run_job(&self, id: &str, stop: &CancellationToken) -> Result<(), JobStoreError> {
        let Some(mut job) = self.get(id).await? else {
            return Ok(());
        };
        let body = base64::engine::general_purpose::STANDARD
            .decode(&job.body)
            .unwrap_or_default();
        let method =
            reqwest::Method::from_bytes(job.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let url = format!("{}{}", self.delivery.router_url(), job.uri);
        // Attempts already made (before a restart) count against the budget.
        let mut backoff = self
            .config
            .first_backoff
            .saturating_mul(2u32.saturating_pow(job.attempts.saturating_sub(1)));
        loop {
            job.state = JobState::Running;
            job.attempts += 1;
            job.updated_at = now_rfc3339();
            self.put(job.clone()).await?;
            let outcome = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                r = self.delivery.send_once(&method, &url, &job.headers, body.clone().into()) => r,
            };
            let retryable = match &outcome {
                Ok(a) => {
                    job.result = Some(to_result(a));
                    job.error = None;
                    a.status >= 500 || a.status == 408 || a.status == 429
                }
                Err(e) => {
                    job.error = Some(e.clone());
                    true
                }
            };
            job.updated_at = now_rfc3339();
            let done = match &outcome {
                Ok(a) if a.is_success() => Some(JobState::Succeeded),
                _ if !retryable => Some(JobState::Failed),
                _ if job.attempts >= self.config.max_attempts.max(1) => Some(JobState::Dead),
                _ => None,
            };
            if let Some(state) = done {
                job.state = state;
                if state == JobState::Dead {
                    tracing::warn!(job = %job.id, uri = %job.uri, attempts = job.attempts, "async call failed every attempt; moved to the dead-letter list");
                }
                self.put(job.clone()).await?;
                break;
            }
            job.state = JobState::Queued;
            self.put(job.clone()).await?;
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = backoff.saturating_mul(2);
        }
        if let Some(cb) = job.callback.clone()
            && let Err(e) = self.post_callback(&cb, &job, stop).await
        {
            job.callback_error = Some(e);
            self.put(job).await?;
        }
        Ok(())
    }

    /// POST the job (without its request body) to its callback URL: 3 attempts.
    async fn post_callback(
        &self,
        url: &str,
        job: &Job,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let mut shown = job.clone();
        shown.body.clear();
        let body = serde_json::to_vec(&shown).map_err(|e| e.to_string())?;
        let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::select! {
                    () = stop.cancelled() => return Err("cancelled by shutdown".to_owned()),
                    () = tokio::time::sleep(self.config.first_backoff * attempt) => {}
                }
            }
            match self
                .delivery
                .send_once(&reqwest::Method::POST, url, &headers, body.clone().into())
                .await
            {
                Ok(a) if a.is_success() => return Ok(()),
                Ok(a) => last = format!("callback {url} answered {}", a.status),
                Err(e) => last = format!("callback {url}: {e}"),
            }
        }
        Err(last)
    }

    /// The status API routes: `GET /v2/async/{id}`, `GET /v2/async?state=dead`.
    pub fn api_routes(&self) -> axum::Router {
        axum::Router::new()
            .route("/v2/async", axum::routing::get(list_jobs))
            .route("/v2/async/{id}", axum::routing::get(get_job))
            .with_state(self.clone())
    }
}

fn to_result(a: &crate::delivery::Answer) -> JobResult {
    let (body, body_base64) = match std::str::from_utf8(&a.body) {
        Ok(s) => (Some(s.to_owned()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&a.body)),
        ),
    };
    JobResult {
        status: a.status,
        headers: a.headers.iter().cloned().collect(),
        body,
        body_base64,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, JobStoreError> + Send + 'static,
) -> Result<T, JobStoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JobStoreError::Db {
            path: String::new(),
            message: format!("database task failed: {e}"),
        })?
}

#[async_trait::async_trait]
impl AsyncCalls for AsyncJobs {
    async fn enqueue(&self, req: AsyncRequest) -> Result<String, AsyncCallError> {
        let now = now_rfc3339();
        let job = Job {
            id: uuid::Uuid::new_v4().to_string(),
            seq: self
                .next_seq
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            state: JobState::Queued,
            method: req.method,
            uri: req.uri,
            headers: req.headers,
            body: base64::engine::general_purpose::STANDARD.encode(&req.body),
            callback: req.callback,
            attempts: 0,
            created_at: now.clone(),
            updated_at: now,
            result: None,
            error: None,
            callback_error: None,
        };
        let id = job.id.clone();
        self.put(job)
            .await
            .map_err(|e| AsyncCallError::Queue(e.to_string()))?;
        // The worker may have stopped (shutdown): the job is durable and runs after restart.
        let _ = self.queue_tx.send(id.clone());
        Ok(id)
    }
}

#[derive(Deserialize)]
struct StateQuery {
    state: Option<String>,
}

async fn get_job(
    axum::extract::State(jobs): axum::extract::State<AsyncJobs>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match jobs.get(&id).await {
        Ok(Some(mut j)) => {
            j.body.clear();
            axum::Json(j).into_response()
        }
        Ok(None) => (
            axum::http::StatusCode::NOT_FOUND,
            format!("no async call with id '{id}'"),
        )
            .into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn list_jobs(
    axum::extract::State(jobs): axum::extract::State<AsyncJobs>,
    axum::extract::Query(q): axum::extract::Query<StateQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => match serde_json::from_value::<JobState>(serde_json::Value::String(s.into())) {
            Ok(st) => Some(st),
            Err(_) => {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    format!("unknown state '{s}': use queued, running, succeeded, failed or dead"),
                )
                    .into_response();
            }
        },
    };
    match jobs.list(state).await {
        Ok(mut list) => {
            for j in &mut list {
                j.body.clear();
            }
            axum::Json(list).into_response()
        }
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
