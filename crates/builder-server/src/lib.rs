//! The builder: the HTTP server in a builder pod (`fission builder /packages`, Fission's
//! `/builder`, port 8001).
//!
//! The fetcher sidecar unpacks a package's source into the shared volume; the build manager then
//! asks this server to build it:
//!
//! * `POST` to any path but `/clean`, `/version` and `/healthz`, body
//!   `{"srcPkgFilename": "<dir>", "command": "<build command>"}`: the command is split on spaces
//!   and run without a shell (default `/build`), in `<shared>/<dir>`, with the server's
//!   environment plus `SRC_PKG=<shared>/<dir>` and `DEPLOY_PKG=<shared>/<dir>-<6 random
//!   letters>`. The answer is `{"artifactFilename": "<deploy dir name>", "buildLogs": "…"}` with
//!   200, or with 500 and the logs ending in `error building source package: …`.
//! * `DELETE /clean?name=<dir>` removes `<shared>/<dir>`.
//!
//! One build runs at a time (a builder pod's CPU and memory are sized for one): a second request
//! meanwhile is refused with 429 and `Retry-After` instead of queueing behind the first.
#![deny(missing_docs)]

mod sys;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Fission's default build command (the builder image's own build script).
pub const DEFAULT_BUILD_COMMAND: &str = "/build";
/// The builder's port in a builder pod.
pub const BUILDER_PORT: u16 = 8001;
/// Seconds a refused build is told to wait before trying again.
const RETRY_AFTER_SECS: u64 = 5;

/// `PackageBuildRequest` (Fission's `pkg/builder/builder.go`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildRequest {
    /// The source directory's name under the shared directory.
    #[serde(rename = "srcPkgFilename", default)]
    pub src_pkg_filename: String,
    /// The build command (empty: [`DEFAULT_BUILD_COMMAND`]).
    #[serde(default)]
    pub command: String,
}

/// `PackageBuildResponse`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildResponse {
    /// The deployment's name under the shared directory (empty when the build failed).
    #[serde(rename = "artifactFilename", default)]
    pub artifact_filename: String,
    /// Everything the build printed (stdout and stderr interleaved as they came).
    #[serde(rename = "buildLogs", default)]
    pub build_logs: String,
}

/// Builder settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The volume shared with the fetcher (`/packages`).
    pub shared_dir: PathBuf,
    /// Build output kept for the answer (its end, when there is more).
    pub max_log_bytes: usize,
}

impl Config {
    /// Builds in `shared_dir`, keeping up to 4 MiB of log.
    pub fn new(shared_dir: impl Into<PathBuf>) -> Self {
        Self {
            shared_dir: shared_dir.into(),
            max_log_bytes: 4 << 20,
        }
    }
}

/// Why the builder could not serve.
#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The server failed.
    #[error("builder server failed: {0}")]
    Serve(#[source] std::io::Error),
}

struct Builder {
    config: Config,
    /// One permit: one build at a time.
    building: Semaphore,
}

/// The builder's HTTP API.
pub fn router(config: Config) -> Router {
    let state = Arc::new(Builder {
        config,
        building: Semaphore::new(1),
    });
    Router::new()
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route(
            "/version",
            get(|| async {
                axum::Json(serde_json::json!({
                    "name": "fission-rs builder",
                    "version": env!("CARGO_PKG_VERSION"),
                }))
            }),
        )
        .route("/clean", delete(clean))
        .fallback(build)
        .with_state(state)
}

/// Serve on `listener` until `shutdown`.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), BuilderError> {
    axum::serve(listener, router(config))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(BuilderError::Serve)
}

/// Bind `addr` and serve until `shutdown` (the `fission builder` command).
pub async fn run(
    config: Config,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), BuilderError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BuilderError::Listen { addr, source })?;
    tracing::info!(%addr, shared = %config.shared_dir.display(), "builder listening");
    serve(config, listener, shutdown).await
}

/// A single path component: the shared directory must not be escaped.
fn safe_name(name: &str) -> Option<&str> {
    let bad =
        name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0');
    (!bad).then_some(name)
}

fn text(status: StatusCode, body: String) -> Response {
    (status, body).into_response()
}

async fn clean(
    State(b): State<Arc<Builder>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(name) = q.get("name").map(String::as_str) else {
        return text(
            StatusCode::BAD_REQUEST,
            "query parameter 'name' is required".into(),
        );
    };
    let Some(name) = safe_name(name) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("invalid name '{name}': must be one path component"),
        );
    };
    let path = b.config.shared_dir.join(name);
    let removed = match tokio::fs::symlink_metadata(&path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(&path).await,
        Ok(_) => tokio::fs::remove_file(&path).await,
    };
    match removed {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot remove {}: {e}", path.display()),
        ),
    }
}

async fn build(State(b): State<Arc<Builder>>, method: Method, body: Bytes) -> Response {
    if method != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: builds are POSTed".into(),
        );
    }
    let req: BuildRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("cannot decode the build request: {e}"),
            );
        }
    };
    let Some(src_name) = safe_name(&req.src_pkg_filename) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid srcPkgFilename '{}': must be one path component",
                req.src_pkg_filename
            ),
        );
    };
    let Ok(_permit) = b.building.try_acquire() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
            "a build is already running in this builder",
        )
            .into_response();
    };
    let deploy_name = format!("{src_name}-{}", random_suffix());
    let src = b.config.shared_dir.join(src_name);
    let deploy = b.config.shared_dir.join(&deploy_name);
    let command = if req.command.trim().is_empty() {
        DEFAULT_BUILD_COMMAND
    } else {
        req.command.as_str()
    };
    tracing::info!(source = %src.display(), %command, "build started");
    let log = Log::new(b.config.max_log_bytes);
    let result = run_command(command, &src, &deploy, &log).await;
    let mut logs = log.text();
    let (status, artifact) = match result {
        Ok(()) => {
            tracing::info!(artifact = %deploy_name, "build succeeded");
            (StatusCode::OK, deploy_name)
        }
        Err(e) => {
            let e = format!("error building source package: {e}");
            tracing::warn!(error = %e, "build failed");
            if !logs.is_empty() && !logs.ends_with('\n') {
                logs.push('\n');
            }
            logs.push_str(&e);
            logs.push('\n');
            (StatusCode::INTERNAL_SERVER_ERROR, String::new())
        }
    };
    (
        status,
        axum::Json(BuildResponse {
            artifact_filename: artifact,
            build_logs: logs,
        }),
    )
        .into_response()
}

/// Six random lowercase letters, as Fission names deployments.
fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..6)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

/// Why a build command failed.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("source directory {0} does not exist")]
    NoSource(PathBuf),
    #[error("cannot start '{program}': {source}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for the build: {0}")]
    Wait(#[source] std::io::Error),
    #[error("{0}")]
    Exit(std::process::ExitStatus),
}

async fn run_command(command: &str, src: &Path, deploy: &Path, log: &Log) -> Result<(), RunError> {
    if !tokio::fs::metadata(src).await.is_ok_and(|m| m.is_dir()) {
        return Err(RunError::NoSource(src.to_owned()));
    }
    // Split on spaces, no shell, as Fission's builder does.
    let mut words = command.split(' ').filter(|w| !w.is_empty());
    let program = words.next().unwrap_or(DEFAULT_BUILD_COMMAND);
    let mut child = tokio::process::Command::new(program)
        .args(words)
        .current_dir(src)
        .env("SRC_PKG", src)
        .env("DEPLOY_PKG", deploy)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, killed as a whole when the build ends or is abandoned.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RunError::Start {
            program: program.to_owned(),
            source,
        })?;
    let group = sys::GroupGuard(child.id());
    let out = child.stdout.take().map(|s| pump(s, log.clone()));
    let err = child.stderr.take().map(|s| pump(s, log.clone()));
    let status = child.wait().await.map_err(RunError::Wait)?;
    // Whatever it left running goes now, also releasing the output pipes it may hold.
    drop(group);
    for task in [out, err].into_iter().flatten() {
        let _ = task.await;
    }
    if status.success() {
        Ok(())
    } else {
        Err(RunError::Exit(status))
    }
}

fn pump(stream: impl AsyncRead + Unpin + Send + 'static, log: Log) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    // Also the pod's log, as Fission's builder prints it.
                    println!("{line}");
                    log.push(&line);
                }
                Ok(None) => return,
                Err(e) => {
                    // Not UTF-8, or the pipe broke: keep what came, say why the rest is missing.
                    log.push(&format!("(build output unreadable: {e})"));
                    return;
                }
            }
        }
    })
}

/// A build's output: its end, at most `max` bytes.
#[derive(Clone)]
struct Log {
    inner: Arc<Mutex<(String, bool)>>,
    max: usize,
}

impl Log {
    fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new((String::new(), false))),
            max: max.max(1024),
        }
    }

    fn push(&self, line: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.push_str(line);
        g.0.push('\n');
        if g.0.len() > self.max {
            let mut cut = g.0.len() - self.max;
            while !g.0.is_char_boundary(cut) {
                cut += 1;
            }
            g.0.drain(..cut);
            g.1 = true;
        }
    }

    fn text(&self) -> String {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.1 {
            format!("(earlier build output dropped)\n{}", g.0)
        } else {
            g.0.clone()
        }
    }
}
