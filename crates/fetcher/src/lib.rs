//! The fetcher: the sidecar of every pool pod (`fission fetcher`, Fission's `/fetcher`).
//!
//! On `POST /specialize` it puts the function's package into the directory it shares with the
//! runtime container (`/userfunc/<filename>`: the file itself, or the unpacked zip), writes the
//! function's Secrets and ConfigMaps as files (`/secrets/<ns>/<name>/<key>`,
//! `/configs/<ns>/<name>/<key>`), and tells the runtime to load it (`/v2/specialize`). Fission's
//! fetcher reads Packages and Secrets from the Kubernetes API; this one reads them from the
//! controller's REST API (the same objects), so a pod needs no service-account rights, and
//! downloads archives sha256-verified (`fission-fetch`) and unpacks them safely
//! (`fission-unpack`).
//!
//! In a builder pod it also fetches a package's *source* into `/packages` (`POST /fetch` with
//! `fetchType: 0`) and, after the build, zips the deployment and stores it in the controller's
//! archive store (`POST /upload`).
#![deny(missing_docs)]

pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fission_core::ObjectMeta;
use fission_core::resources::{Archive, ConfigMap, Package, Secret, build_status};
use tokio_util::sync::CancellationToken;

use crate::wire::{FETCH_DEPLOYMENT, FETCH_SOURCE, FETCH_URL, FetchRequest, SpecializeRequest};

/// How long the runtime may take to start accepting connections before a specialize fails.
const RUNTIME_CONNECT_BUDGET: Duration = Duration::from_secs(60);
/// Attempts at reading a Package the executor just saw (the controller may lag a write).
const PACKAGE_TRIES: u32 = 5;

/// Fetcher settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory shared with the runtime (`/userfunc`).
    pub shared_dir: PathBuf,
    /// Where Secrets go (`/secrets`).
    pub secret_dir: PathBuf,
    /// Where ConfigMaps go (`/configs`).
    pub configmap_dir: PathBuf,
    /// The controller's base URL (`http://host:port`), for Packages, Secrets, ConfigMaps and
    /// archives.
    pub controller_url: String,
    /// The runtime's base URL (`http://127.0.0.1:8888`).
    pub runtime_url: String,
    /// The controller's API token (sent as `Authorization: Bearer` to the controller only).
    pub auth_token: Option<String>,
    /// Archive downloads.
    pub fetch: fission_fetch::FetchConfig,
}

/// Why a fetch or specialization failed; the status is what the caller gets.
#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    /// The request itself is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// A Secret or ConfigMap the function names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The archive did not match its recorded sha256.
    #[error("{0}")]
    Checksum(String),
    /// Anything else (controller unreachable, disk, the runtime refused the code).
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for FetcherError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) | Self::Checksum(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::warn!(%status, error = %self, "request failed");
        (status, self.to_string()).into_response()
    }
}

struct Fetcher {
    config: Config,
    http: reqwest::Client,
    /// Downloads from anywhere but the controller (never given the token).
    downloads: fission_fetch::Fetcher,
    /// Downloads from the controller's archive endpoint (with the token).
    controller_downloads: fission_fetch::Fetcher,
    /// What `/readiness-healthz` answers: false until the startup specialization (newdeploy)
    /// loaded the function, so the pod takes no calls before.
    ready: AtomicBool,
}

/// Serve the fetcher API on `listener` until `shutdown`.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), FetcherError> {
    let app = router(config)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| FetcherError::Internal(format!("fetcher server failed: {e}")))
}

/// The fetcher's HTTP API.
pub fn router(config: Config) -> Result<Router, FetcherError> {
    Ok(build(config, true)?.0)
}

/// The API and its state; `ready` is the readiness answer until a startup specialization.
fn build(config: Config, ready: bool) -> Result<(Router, Arc<Fetcher>), FetcherError> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| FetcherError::Internal(format!("cannot build the HTTP client: {e}")))?;
    let setup = |e: fission_fetch::FetchError| {
        FetcherError::Internal(format!("cannot set up downloads: {e}"))
    };
    let downloads = fission_fetch::Fetcher::new(&config.fetch, None).map_err(setup)?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &config.auth_token {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| setup(fission_fetch::FetchError::InvalidToken))?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let controller_downloads =
        fission_fetch::Fetcher::with_headers(&config.fetch, None, headers).map_err(setup)?;
    let state = Arc::new(Fetcher {
        config,
        http,
        downloads,
        controller_downloads,
        ready: AtomicBool::new(ready),
    });
    let router = Router::new()
        .route("/specialize", post(specialize))
        .route("/fetch", post(fetch))
        .route("/upload", post(upload))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readiness-healthz", get(readiness))
        .route(
            "/version",
            get(|| async {
                axum::Json(serde_json::json!({
                    "name": "fission-rs fetcher",
                    "version": env!("CARGO_PKG_VERSION"),
                }))
            }),
        )
        .with_state(state.clone());
    Ok((router, state))
}

async fn readiness(State(f): State<Arc<Fetcher>>) -> StatusCode {
    if f.ready.load(Ordering::Acquire) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, FetcherError> {
    serde_json::from_slice(body)
        .map_err(|e| FetcherError::BadRequest(format!("cannot decode the request: {e}")))
}

async fn specialize(
    State(f): State<Arc<Fetcher>>,
    body: Bytes,
) -> Result<StatusCode, FetcherError> {
    let req: SpecializeRequest = parse(&body)?;
    f.specialize(&req).await?;
    Ok(StatusCode::OK)
}

async fn fetch(State(f): State<Arc<Fetcher>>, body: Bytes) -> Result<StatusCode, FetcherError> {
    let req: FetchRequest = parse(&body)?;
    f.fetch(&req).await?;
    Ok(StatusCode::OK)
}

/// Largest deployment archive a build may upload (Fission's storagesvc caps uploads at 256 MiB).
const MAX_UPLOAD_BYTES: u64 = 256 << 20;

/// `POST /upload` (builder pods): zip `<shared>/<filename>` (when `archivepackage`), store it in
/// the controller's archive store (the controller is this project's storagesvc, so
/// `storagesvcurl` is not used), remove the local copy, and answer where the archive is and its
/// sha256.
async fn upload(
    State(f): State<Arc<Fetcher>>,
    body: Bytes,
) -> Result<axum::Json<wire::UploadResponse>, FetcherError> {
    let req: wire::UploadRequest = parse(&body)?;
    let path = f.config.shared_dir.join(safe_name(&req.filename)?);
    let local = path.clone();
    let zip = req.archivepackage;
    let bytes = tokio::task::spawn_blocking(move || read_for_upload(&local, zip))
        .await
        .map_err(|e| FetcherError::Internal(e.to_string()))??;
    let result = f.store_archive(bytes).await;
    // The deployment is in the archive store now (or the build failed): either way the
    // builder pod's volume should not fill up with it.
    let _ = tokio::task::spawn_blocking(move || remove_path(&path)).await;
    let (id, sum) = result?;
    tracing::info!(archive = %id, file = %req.filename, "deployment uploaded");
    Ok(axum::Json(wire::UploadResponse {
        archive_download_url: fission_core::archive::storage_url(&id),
        checksum: fission_core::resources::Checksum {
            checksum_type: "sha256".to_owned(),
            sum,
        },
    }))
}

fn read_for_upload(path: &Path, zip: bool) -> Result<Vec<u8>, FetcherError> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| FetcherError::BadRequest(format!("cannot upload {}: {e}", path.display())))?;
    if zip && meta.is_dir() {
        let z = fission_builder::zip_dir(
            path,
            fission_unpack::UnpackLimits::default(),
            MAX_UPLOAD_BYTES,
        )
        .map_err(|e| FetcherError::Internal(format!("cannot zip {}: {e}", path.display())))?;
        for skipped in &z.skipped_links {
            tracing::warn!(link = %skipped, "left out of the deployment archive");
        }
        return Ok(z.bytes);
    }
    if !meta.is_file() {
        return Err(FetcherError::BadRequest(format!(
            "cannot upload {}: not a file (set archivepackage to zip a directory)",
            path.display()
        )));
    }
    if meta.len() > MAX_UPLOAD_BYTES {
        return Err(FetcherError::BadRequest(format!(
            "cannot upload {}: {} bytes is over the {MAX_UPLOAD_BYTES}-byte limit",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read(path)
        .map_err(|e| FetcherError::Internal(format!("cannot read {}: {e}", path.display())))
}

fn remove_path(path: &Path) {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
    if let Err(e) = removed {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove an uploaded file");
    }
}

/// A single path component: the shared directory must not be escaped.
fn safe_name(name: &str) -> Result<&str, FetcherError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(FetcherError::BadRequest(format!(
            "invalid file name '{name}': must be one path component"
        )));
    }
    Ok(name)
}

impl Fetcher {
    async fn specialize(&self, req: &SpecializeRequest) -> Result<(), FetcherError> {
        let t0 = std::time::Instant::now();
        self.fetch(&req.fetch_req).await?;
        let fetched = t0.elapsed();
        self.load(&req.load_req).await?;
        tracing::info!(
            package = %req.fetch_req.package.name,
            fetch_ms = fetched.as_millis() as u64,
            total_ms = t0.elapsed().as_millis() as u64,
            "specialized"
        );
        Ok(())
    }

    async fn fetch(&self, req: &FetchRequest) -> Result<(), FetcherError> {
        let filename = safe_name(&req.filename)?;
        let target = self.config.shared_dir.join(filename);
        // Idempotent, as Fission's: a retried specialize finds the code already there.
        if tokio::fs::symlink_metadata(&target).await.is_err() {
            let bytes = match req.fetch_type {
                FETCH_URL => self
                    .downloads
                    .fetch(&req.url, "")
                    .await
                    .map_err(|e| FetcherError::Internal(e.to_string()))?,
                FETCH_SOURCE | FETCH_DEPLOYMENT => self.package_bytes(req).await?,
                other => {
                    return Err(FetcherError::BadRequest(format!(
                        "unknown fetch type {other}"
                    )));
                }
            };
            let keep = req.keeparchive;
            tokio::task::spawn_blocking(move || install(&bytes, &target, keep))
                .await
                .map_err(|e| FetcherError::Internal(e.to_string()))??;
        }
        self.write_values(req).await
    }

    async fn package_bytes(&self, req: &FetchRequest) -> Result<Vec<u8>, FetcherError> {
        let meta = &req.package;
        let pkg: Package = self.get_package(meta).await?;
        let archive: &Archive = if req.fetch_type == FETCH_DEPLOYMENT {
            let status = pkg.status.buildstatus.as_str();
            if !(status.is_empty()
                || status == build_status::SUCCEEDED
                || status == build_status::NONE)
            {
                return Err(FetcherError::Internal(format!(
                    "cannot fetch deployment: package build status was not \"succeeded\" (it is \"{status}\")"
                )));
            }
            &pkg.spec.deployment
        } else {
            &pkg.spec.source
        };
        let literal = archive.archive_type == fission_core::resources::ARCHIVE_LITERAL
            || (archive.archive_type != fission_core::resources::ARCHIVE_URL
                && !archive.literal.is_empty());
        if literal {
            return Ok(archive.literal.clone());
        }
        // An archive the controller stores is downloaded from the controller; others from
        // where they are. Both are checked against the package's sha256.
        let (url, downloads) = match fission_core::archive::archive_id_from_url(&archive.url) {
            Some(id) => (
                format!(
                    "{}/proxy/storage/v1/archive?id={}",
                    self.config.controller_url.trim_end_matches('/'),
                    id
                ),
                &self.controller_downloads,
            ),
            None => (archive.url.clone(), &self.downloads),
        };
        downloads
            .fetch(&url, &archive.checksum.sum)
            .await
            .map_err(|e| match e {
                fission_fetch::FetchError::ChecksumMismatch { .. } => {
                    FetcherError::Checksum(format!("package '{}': {e}", meta.name))
                }
                e => FetcherError::Internal(format!("package '{}': {e}", meta.name)),
            })
    }

    /// Store `bytes` in the controller's archive store; returns the content id and the sha256.
    async fn store_archive(&self, bytes: Vec<u8>) -> Result<(String, String), FetcherError> {
        use sha2::Digest as _;
        #[derive(serde::Deserialize)]
        struct Stored {
            id: String,
        }
        let sum = hex::encode(sha2::Sha256::digest(&bytes));
        let url = format!(
            "{}/proxy/storage/v1/archive",
            self.config.controller_url.trim_end_matches('/')
        );
        let mut request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header("X-File-Size", bytes.len().to_string())
            .body(bytes);
        if let Some(token) = &self.config.auth_token {
            request = request.bearer_auth(token);
        }
        let resp = request
            .send()
            .await
            .map_err(|e| FetcherError::Internal(format!("cannot reach the controller: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(FetcherError::Internal(format!(
                "controller answered {status} to the upload: {}",
                text.trim()
            )));
        }
        let stored: Stored = resp
            .json()
            .await
            .map_err(|e| FetcherError::Internal(format!("cannot decode the upload answer: {e}")))?;
        let id = fission_core::archive::content_id(&stored.id).to_owned();
        Ok((id, sum))
    }

    async fn get_package(&self, meta: &ObjectMeta) -> Result<Package, FetcherError> {
        let mut last = String::new();
        for attempt in 0..PACKAGE_TRIES {
            match self
                .get_json::<Package>("packages", &meta.namespace, &meta.name)
                .await
            {
                Ok(p) => return Ok(p),
                Err(FetcherError::NotFound(e)) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1))).await;
                }
                Err(FetcherError::Internal(e)) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt + 1))).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(FetcherError::Internal(format!(
            "cannot get package '{}' (namespace '{}'): {last}",
            meta.name, meta.namespace
        )))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        collection: &str,
        namespace: &str,
        name: &str,
    ) -> Result<T, FetcherError> {
        let url = format!(
            "{}/v2/{collection}/{name}",
            self.config.controller_url.trim_end_matches('/')
        );
        let mut request = self.http.get(&url).query(&[("namespace", namespace)]);
        if let Some(token) = &self.config.auth_token {
            request = request.bearer_auth(token);
        }
        let resp = request
            .send()
            .await
            .map_err(|e| FetcherError::Internal(format!("cannot reach the controller: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            let kind = collection.trim_end_matches('s');
            return Err(FetcherError::NotFound(format!(
                "{kind} '{name}' (namespace '{namespace}') not found"
            )));
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(FetcherError::Internal(format!(
                "controller answered {status} for {url}: {}",
                text.trim()
            )));
        }
        resp.json::<T>()
            .await
            .map_err(|e| FetcherError::Internal(format!("cannot decode {url}: {e}")))
    }

    async fn write_values(&self, req: &FetchRequest) -> Result<(), FetcherError> {
        let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for r in &req.secret_list {
            let s: Secret = self.get_json("secrets", &r.namespace, &r.name).await?;
            let dir = self
                .config
                .secret_dir
                .join(safe_name(&r.namespace)?)
                .join(safe_name(&r.name)?);
            for (k, v) in s.data {
                files.push((dir.join(safe_name(&k)?), v));
            }
        }
        for r in &req.config_map_list {
            let c: ConfigMap = self.get_json("configmaps", &r.namespace, &r.name).await?;
            let dir = self
                .config
                .configmap_dir
                .join(safe_name(&r.namespace)?)
                .join(safe_name(&r.name)?);
            for (k, v) in c.data {
                files.push((dir.join(safe_name(&k)?), v.into_bytes()));
            }
        }
        for (path, bytes) in files {
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| {
                    FetcherError::Internal(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            tokio::fs::write(&path, bytes).await.map_err(|e| {
                FetcherError::Internal(format!("cannot write {}: {e}", path.display()))
            })?;
        }
        Ok(())
    }

    /// Tell the runtime to load the code: `/v2/specialize` with the load request for
    /// environment version ≥ 2, `/specialize` for version 1. Retried only while the runtime
    /// is not accepting connections yet; any answer ≥ 300 is a failure carrying its body.
    async fn load(&self, load: &serde_json::Value) -> Result<(), FetcherError> {
        let version = load.get("envVersion").and_then(|v| v.as_i64()).unwrap_or(3);
        let base = self.config.runtime_url.trim_end_matches('/');
        let deadline = tokio::time::Instant::now() + RUNTIME_CONNECT_BUDGET;
        let mut pause = Duration::from_millis(25);
        loop {
            let request = if version >= 2 {
                self.http.post(format!("{base}/v2/specialize")).json(load)
            } else {
                self.http
                    .post(format!("{base}/specialize"))
                    .header("content-type", "text/plain")
            };
            match request.send().await {
                Ok(resp) if resp.status().as_u16() < 300 => return Ok(()),
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    return Err(FetcherError::Internal(format!(
                        "error specializing function: the runtime answered {status}: {}",
                        body.trim()
                    )));
                }
                Err(e) if e.is_connect() && tokio::time::Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => {
                    return Err(FetcherError::Internal(format!(
                        "error specializing function: cannot reach the runtime at {base}: {e}"
                    )));
                }
            }
        }
    }
}

/// Put `bytes` at `target`: unpacked into a directory when it is a zip (unless `keep`), else
/// as the file itself. Written beside the target and renamed, so a crash leaves no half result.
fn install(bytes: &[u8], target: &Path, keep: bool) -> Result<(), FetcherError> {
    let io = |what: &str, e: std::io::Error| {
        FetcherError::Internal(format!("cannot {what} {}: {e}", target.display()))
    };
    let tmp = target.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_file(&tmp);
    if fission_unpack::is_zip(bytes) && !keep {
        // unzip creates the directory itself and may leave part of it on failure.
        if let Err(e) = fission_unpack::unzip(bytes, &tmp, fission_unpack::UnpackLimits::default())
        {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(FetcherError::BadRequest(format!(
                "cannot unpack the archive: {e}"
            )));
        }
    } else {
        std::fs::write(&tmp, bytes).map_err(|e| io("write", e))?;
    }
    std::fs::rename(&tmp, target).map_err(|e| io("rename into", e))
}

/// Bind `addr` and serve until `shutdown` (the `fission fetcher` command).
pub async fn run(
    config: Config,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), FetcherError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| FetcherError::Internal(format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(%addr, shared = %config.shared_dir.display(), "fetcher listening");
    serve(config, listener, shutdown).await
}

/// Bind `addr` and [`serve_specialized`] (`fission fetcher --specialize-on-startup`).
pub async fn run_specialized(
    config: Config,
    addr: SocketAddr,
    request: SpecializeRequest,
    shutdown: CancellationToken,
) -> Result<(), FetcherError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| FetcherError::Internal(format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(%addr, shared = %config.shared_dir.display(), "fetcher listening, specializing on startup");
    serve_specialized(config, listener, request, shutdown).await
}

/// Serve on `listener` and load `request` at once (Fission's `-specialize-on-startup`, what a
/// newdeploy pod's fetcher does): `/readiness-healthz` answers 503 until the function is
/// loaded. A failed load ends the fetcher with the error — the container restarts and tries
/// again, and the pod never becomes ready with a runtime that did not load the function.
pub async fn serve_specialized(
    config: Config,
    listener: tokio::net::TcpListener,
    request: SpecializeRequest,
    shutdown: CancellationToken,
) -> Result<(), FetcherError> {
    let (app, state) = build(config, false)?;
    let stop = shutdown.child_token();
    let stopped = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
    });
    let loaded = tokio::select! {
        r = state.specialize(&request) => r,
        () = shutdown.cancelled() => Ok(()),
    };
    if let Err(e) = loaded {
        stop.cancel();
        let _ = server.await;
        return Err(FetcherError::Internal(format!(
            "specialization on startup failed: {e}"
        )));
    }
    state.ready.store(true, Ordering::Release);
    match server.await {
        Ok(r) => r.map_err(|e| FetcherError::Internal(format!("fetcher server failed: {e}"))),
        Err(e) => Err(FetcherError::Internal(format!(
            "fetcher server failed: {e}"
        ))),
    }
}

/// `--specialize-request` as given on the command line.
impl std::str::FromStr for SpecializeRequest {
    type Err = FetcherError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_str(s)
            .map_err(|e| FetcherError::BadRequest(format!("not a FunctionSpecializeRequest: {e}")))
    }
}
