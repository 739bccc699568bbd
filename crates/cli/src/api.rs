//! The controller REST client: typed CRUD over `/v2/<collection>`, the archive store proxy, the
//! log proxy and the router address lookup.

use std::fmt;
use std::time::Duration;

use fission_core::{ErrorBody, Object, ObjectMeta, Spec};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;

/// The archive store proxy path on the controller.
const STORAGE_ARCHIVE_PATH: &str = "/proxy/storage/v1/archive";
/// The URL prefix under which archives uploaded through the controller are recorded in
/// packages; the server resolves it locally.
pub(crate) const STORAGESVC_ARCHIVE_URL: &str = "http://storagesvc.fission/v1/archive";

/// A failed call to the controller (or to the router, for `fn test`).
#[derive(Debug)]
pub(crate) enum ApiError {
    /// Nothing answered at the address.
    Unreachable {
        what: &'static str,
        url: String,
        reason: String,
    },
    /// The server answered with an error status.
    Status { status: u16, message: String },
    /// The server wants a token (`sent: false`) or refused the one sent.
    Unauthorized { url: String, sent: bool },
    /// The server's TLS certificate could not be verified.
    Certificate { url: String, reason: String },
    /// The transport failed after connecting, or the answer was not what we expected.
    Other(String),
}

impl ApiError {
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }

    /// Whether the message is complete on its own (no `error creating …:` context): the
    /// call never got to the operation.
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::Unauthorized { .. } | Self::Certificate { .. }
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable { what, url, reason } if *what == "fission server" => write!(
                f,
                "cannot reach the fission server at {url} ({reason}); start it with 'fission server' \
                 or set FISSION_URL / --server"
            ),
            Self::Unreachable { what, url, reason } => {
                write!(f, "cannot reach the {what} at {url} ({reason})")
            }
            Self::Unauthorized { url, sent: false } => write!(
                f,
                "the fission server at {url} requires an API token and none was given: set \
                 FISSION_AUTH_TOKEN or pass --auth-token (a server that generated its token keeps \
                 it in <data-dir>/auth-token and prints that path at start)"
            ),
            Self::Unauthorized { url, sent: true } => write!(
                f,
                "the fission server at {url} refused the API token (from FISSION_AUTH_TOKEN or \
                 --auth-token): it is not the server's token; use the server's --auth-token or \
                 the contents of its <data-dir>/auth-token"
            ),
            Self::Certificate { url, reason } => write!(
                f,
                "cannot verify the TLS certificate of the fission server at {url} ({reason}); if \
                 it is signed by a private CA, pass that CA's PEM file with --ca-cert or \
                 FISSION_CA_CERT"
            ),
            Self::Status { status, message } if message.is_empty() => {
                write!(f, "the server answered HTTP {status} without a message")
            }
            Self::Status { message, .. } => f.write_str(message),
            Self::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ApiError {}

/// Add Fission-style context (`error creating function: …`) to a failed call, except when the
/// server could not be reached at all: that message is already complete on its own line.
pub(crate) trait Wrap<T> {
    fn wrap(self, context: &str) -> anyhow::Result<T>;
}

impl<T> Wrap<T> for Result<T, ApiError> {
    fn wrap(self, context: &str) -> anyhow::Result<T> {
        self.map_err(|e| {
            if e.is_unreachable() {
                anyhow::Error::new(e)
            } else {
                anyhow::Error::new(e).context(context.to_owned())
            }
        })
    }
}

impl<T> Wrap<T> for anyhow::Result<T> {
    fn wrap(self, context: &str) -> anyhow::Result<T> {
        self.map_err(|e| {
            if e.downcast_ref::<ApiError>()
                .is_some_and(ApiError::is_unreachable)
            {
                e
            } else {
                e.context(context.to_owned())
            }
        })
    }
}

/// Describe a reqwest failure in one short phrase, recognising connection refused.
fn transport_reason(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::TimedOut => "connection timed out".to_owned(),
                _ => io.to_string(),
            };
        }
        source = s.source();
    }
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    // The innermost message is usually the informative one (DNS failure, reset, …).
    let mut last = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// Turn a transport error into an [`ApiError`] naming `what` was being called.
pub(crate) fn transport_error(what: &'static str, base: &str, e: &reqwest::Error) -> ApiError {
    let reason = transport_reason(e);
    // rustls names every verification failure as a certificate problem.
    if base.starts_with("https://") && reason.to_ascii_lowercase().contains("certificate") {
        return ApiError::Certificate {
            url: base.to_owned(),
            reason,
        };
    }
    if e.is_connect() {
        ApiError::Unreachable {
            what,
            url: base.to_owned(),
            reason: transport_reason(e),
        }
    } else if e.is_timeout() {
        ApiError::Other(format!("request to the {what} at {base} timed out"))
    } else {
        ApiError::Other(format!(
            "request to the {what} at {base} failed: {}",
            transport_reason(e)
        ))
    }
}

/// Read an error response into [`ApiError::Status`]: the JSON `message` if the body is Fission's
/// error JSON, else the trimmed body text.
async fn status_error(resp: Response) -> ApiError {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let message = match serde_json::from_str::<ErrorBody>(&body) {
        Ok(b) => b.message,
        Err(_) => body.trim().to_owned(),
    };
    ApiError::Status { status, message }
}

/// Client for the controller at `--server`.
#[derive(Clone)]
pub(crate) struct Api {
    base: Url,
    base_str: String,
    http: reqwest::Client,
    trace: bool,
    /// `Authorization` value sent to the controller (and to nothing else).
    bearer: Option<reqwest::header::HeaderValue>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base_str)
            .field("bearer", &self.bearer.as_ref().map(|_| ".."))
            .finish_non_exhaustive()
    }
}

impl Api {
    pub(crate) fn new(server: &str, trace: bool) -> anyhow::Result<Self> {
        let trimmed = server.trim().trim_end_matches('/');
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            format!("http://{trimmed}")
        };
        let base = Url::parse(&with_scheme)
            .map_err(|e| anyhow::anyhow!("invalid server address '{server}': {e}"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
        Ok(Self {
            base,
            base_str: with_scheme,
            http,
            trace,
            bearer: None,
        })
    }

    /// Send `token` to the controller, and trust the CA certificates in `ca_cert` (PEM) for
    /// an https server besides the built-in roots.
    pub(crate) fn with_access(
        mut self,
        token: Option<&str>,
        ca_cert: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the API token (FISSION_AUTH_TOKEN / --auth-token) holds characters a header cannot carry"
                    )
                })?;
            value.set_sensitive(true);
            self.bearer = Some(value);
        }
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the CA file {} (--ca-cert / FISSION_CA_CERT): {e}",
                    path.display()
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "{} (--ca-cert / FISSION_CA_CERT) holds no usable PEM certificate: {e}",
                    path.display()
                )
            })?;
            if certs.is_empty() {
                anyhow::bail!(
                    "{} (--ca-cert / FISSION_CA_CERT) holds no PEM certificate",
                    path.display()
                );
            }
            let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
            self.http = builder
                .build()
                .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
        }
        Ok(self)
    }

    /// `base` + path segments (each percent-encoded) + query.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        if self.trace {
            eprintln!("> {method} {url}");
        }
        // The token is the controller's: never sent to an archive URL elsewhere.
        let to_controller = url.origin() == self.base.origin();
        let req = self.http.request(method, url);
        match &self.bearer {
            Some(bearer) if to_controller => {
                req.header(reqwest::header::AUTHORIZATION, bearer.clone())
            }
            _ => req,
        }
    }

    /// Send and map transport errors and error statuses.
    async fn send(&self, req: RequestBuilder) -> Result<Response, ApiError> {
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error("fission server", &self.base_str, &e))?;
        if self.trace {
            eprintln!("< {}", resp.status());
        }
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED
            && resp.url().origin() == self.base.origin()
        {
            return Err(ApiError::Unauthorized {
                url: self.base_str.clone(),
                sent: self.bearer.is_some(),
            });
        }
        if resp.status().is_client_error() || resp.status().is_server_error() {
            return Err(status_error(resp).await);
        }
        for w in resp.headers().get_all(reqwest::header::WARNING) {
            if let Some(text) = w.to_str().ok().and_then(warning_text) {
                eprintln!("Warning: {text}");
            }
        }
        Ok(resp)
    }

    async fn json<T: DeserializeOwned>(&self, resp: Response, what: &str) -> Result<T, ApiError> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::Other(format!("error reading {what} from the server: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::Other(format!("the server sent {what} that cannot be read: {e}"))
        })
    }

    fn collection<S: Spec>() -> Vec<&'static str> {
        let mut v = vec!["v2"];
        v.extend(S::KIND.api_path().split('/'));
        v
    }

    fn item_url<S: Spec>(&self, ns: &str, name: &str, extra: &[(&str, &str)]) -> Url {
        let mut segs = Self::collection::<S>();
        segs.push(name);
        let mut q = vec![("namespace", ns)];
        q.extend_from_slice(extra);
        self.url(&segs, &q)
    }

    /// All objects of a kind in `ns`, or in every namespace when `ns` is `None`.
    pub(crate) async fn list<S: Spec>(&self, ns: Option<&str>) -> Result<Vec<Object<S>>, ApiError> {
        let q: Vec<(&str, &str)> = ns.map(|n| ("namespace", n)).into_iter().collect();
        let url = self.url(&Self::collection::<S>(), &q);
        let resp = self.send(self.request(Method::GET, url)).await?;
        let items: Option<Vec<Object<S>>> = self.json(resp, "a list").await?;
        Ok(items.unwrap_or_default())
    }

    pub(crate) async fn get<S: Spec>(&self, ns: &str, name: &str) -> Result<Object<S>, ApiError> {
        let url = self.item_url::<S>(ns, name, &[]);
        let resp = self.send(self.request(Method::GET, url)).await?;
        self.json(resp, "an object").await
    }

    /// Like [`Api::get`], but `None` when the object does not exist.
    pub(crate) async fn get_opt<S: Spec>(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<Object<S>>, ApiError> {
        match self.get::<S>(ns, name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create; returns the stored metadata (with resourceVersion).
    pub(crate) async fn create<S: Spec>(&self, obj: &Object<S>) -> Result<ObjectMeta, ApiError> {
        let url = self.url(&Self::collection::<S>(), &[]);
        let resp = self.send(self.request(Method::POST, url).json(obj)).await?;
        self.meta_or(resp, &obj.metadata).await
    }

    /// Replace; `obj.metadata.resourceVersion` must be the version read.
    pub(crate) async fn update<S: Spec>(&self, obj: &Object<S>) -> Result<ObjectMeta, ApiError> {
        let url = self.item_url::<S>(&obj.metadata.namespace, &obj.metadata.name, &[]);
        let resp = self.send(self.request(Method::PUT, url).json(obj)).await?;
        self.meta_or(resp, &obj.metadata).await
    }

    async fn meta_or(&self, resp: Response, fallback: &ObjectMeta) -> Result<ObjectMeta, ApiError> {
        let bytes = resp.bytes().await.unwrap_or_default();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(fallback.clone());
        }
        serde_json::from_slice::<ObjectMeta>(&bytes).map_err(|e| {
            ApiError::Other(format!("the server sent metadata that cannot be read: {e}"))
        })
    }

    pub(crate) async fn delete<S: Spec>(
        &self,
        ns: &str,
        name: &str,
        force: bool,
    ) -> Result<(), ApiError> {
        let extra: &[(&str, &str)] = if force { &[("force", "true")] } else { &[] };
        let url = self.item_url::<S>(ns, name, extra);
        self.send(self.request(Method::DELETE, url)).await?;
        Ok(())
    }

    /// Store an archive; returns its id (the sha256 hex of the bytes).
    pub(crate) async fn upload_archive(&self, bytes: Vec<u8>) -> Result<String, ApiError> {
        #[derive(serde::Deserialize)]
        struct Uploaded {
            id: String,
        }
        let segs: Vec<&str> = STORAGE_ARCHIVE_PATH
            .trim_start_matches('/')
            .split('/')
            .collect();
        let url = self.url(&segs, &[]);
        let len = bytes.len().to_string();
        let req = self
            .request(Method::POST, url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header("X-File-Size", len)
            .body(bytes);
        let resp = self.send(req).await?;
        let up: Uploaded = self.json(resp, "an upload answer").await?;
        Ok(up.id)
    }

    /// Every archive id in the store.
    pub(crate) async fn list_archives(&self) -> Result<Vec<String>, ApiError> {
        let segs: Vec<&str> = STORAGE_ARCHIVE_PATH
            .trim_start_matches('/')
            .split('/')
            .collect();
        let resp = self
            .send(self.request(Method::GET, self.url(&segs, &[])))
            .await?;
        let ids: Option<Vec<String>> = self.json(resp, "an archive list").await?;
        Ok(ids.unwrap_or_default())
    }

    /// The bytes of archive `id`.
    pub(crate) async fn get_archive(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        let segs: Vec<&str> = STORAGE_ARCHIVE_PATH
            .trim_start_matches('/')
            .split('/')
            .collect();
        let resp = self
            .send(self.request(Method::GET, self.url(&segs, &[("id", id)])))
            .await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::Other(format!("error downloading archive: {e}")))?;
        Ok(bytes.to_vec())
    }

    /// Delete archive `id`.
    pub(crate) async fn delete_archive(&self, id: &str) -> Result<(), ApiError> {
        let segs: Vec<&str> = STORAGE_ARCHIVE_PATH
            .trim_start_matches('/')
            .split('/')
            .collect();
        self.send(self.request(Method::DELETE, self.url(&segs, &[("id", id)])))
            .await?;
        Ok(())
    }

    /// Fetch an archive by URL: archives recorded with the storagesvc URL go through the
    /// controller's storage proxy; any other URL is fetched directly.
    pub(crate) async fn download_archive(&self, url: &str) -> Result<Vec<u8>, ApiError> {
        let req = match storage_archive_id(url) {
            Some(id) => {
                let segs: Vec<&str> = STORAGE_ARCHIVE_PATH
                    .trim_start_matches('/')
                    .split('/')
                    .collect();
                self.request(Method::GET, self.url(&segs, &[("id", &id)]))
            }
            None => {
                let u = Url::parse(url)
                    .map_err(|e| ApiError::Other(format!("invalid archive URL '{url}': {e}")))?;
                self.request(Method::GET, u)
            }
        };
        let resp = self.send(req).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::Other(format!("error downloading archive: {e}")))?;
        Ok(bytes.to_vec())
    }

    /// The router's base URL: `$FISSION_ROUTER_URL`, else asked from the controller.
    pub(crate) async fn router_url(&self) -> Result<String, ApiError> {
        if let Some(u) = std::env::var("FISSION_ROUTER_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            return Ok(with_http_scheme(u.trim()));
        }
        let url = self.url(&["proxy", "svcname"], &[("application", "fission-router")]);
        let resp = self.send(self.request(Method::GET, url)).await?;
        let text = resp
            .text()
            .await
            .map_err(|e| ApiError::Other(format!("error reading router address: {e}")))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(ApiError::Other(
                "the server did not name a router address".to_owned(),
            ));
        }
        Ok(with_http_scheme(text))
    }

    /// Open the function log stream.
    pub(crate) async fn logs(
        &self,
        function: &str,
        ns: &str,
        recordcount: u32,
        follow: bool,
    ) -> Result<Response, ApiError> {
        let count = recordcount.to_string();
        let url = self.url(
            &["proxy", "logs", function],
            &[
                ("namespace", ns),
                ("recordcount", &count),
                ("follow", if follow { "true" } else { "false" }),
            ],
        );
        self.send(self.request(Method::GET, url)).await
    }

    /// Instances per `(namespace, name)` of every function (in `ns`); `None` when the server
    /// does not say.
    pub(crate) async fn instance_counts(
        &self,
        ns: Option<&str>,
    ) -> Option<std::collections::HashMap<(String, String), u64>> {
        let query: Vec<(&str, &str)> = ns.map(|n| ("namespace", n)).into_iter().collect();
        let url = self.url(&["v2", "instances"], &query);
        let resp = self.send(self.request(Method::GET, url)).await.ok()?;
        let list: Vec<serde_json::Value> = self.json(resp, "instances").await.ok()?;
        Some(
            list.iter()
                .filter_map(|v| {
                    let ns = v.get("namespace")?.as_str()?.to_owned();
                    let name = v.get("name")?.as_str()?.to_owned();
                    Some(((ns, name), v.get("instances")?.as_u64()?))
                })
                .collect(),
        )
    }

    /// What the server's trigger component knows about a trigger's deliveries (`kind` is
    /// `time`, `messagequeue` or `watch`); `None` when the server does not run it (or predates the API).
    pub(crate) async fn trigger_status(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Result<Option<serde_json::Value>, ApiError> {
        let url = self.url(&["v2", "triggerstatus", kind, name], &[("namespace", ns)]);
        match self.send(self.request(Method::GET, url)).await {
            Ok(resp) => self.json(resp, "trigger status").await.map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Any JSON document of the controller API.
    pub(crate) async fn get_json(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<serde_json::Value, ApiError> {
        let url = self.url(segments, query);
        let resp = self.send(self.request(Method::GET, url)).await?;
        self.json(resp, "a document").await
    }

    /// The server's version document (`GET /`).
    pub(crate) async fn server_version(&self) -> Result<serde_json::Value, ApiError> {
        let url = self.url(&[], &[]);
        let resp = self.send(self.request(Method::GET, url)).await?;
        let text = resp
            .text()
            .await
            .map_err(|e| ApiError::Other(format!("error reading version: {e}")))?;
        Ok(
            serde_json::from_str(&text)
                .unwrap_or(serde_json::Value::String(text.trim().to_owned())),
        )
    }
}

/// The text of a `Warning: 299 - "<text>"` header (RFC 7234 quoted string), unescaped.
fn warning_text(header: &str) -> Option<String> {
    let mut parts = header.splitn(3, ' ');
    let (_code, _agent, quoted) = (parts.next()?, parts.next()?, parts.next()?);
    let inner = quoted.trim().strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

/// `http://` prepended when an address has no scheme; trailing `/` removed.
fn with_http_scheme(s: &str) -> String {
    let s = s.trim_end_matches('/');
    if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    }
}

/// The archive id in a storagesvc download URL (`http://storagesvc.<ns>/v1/archive?id=<id>`).
pub(crate) fn storage_archive_id(url: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    let host = u.host_str()?;
    if !(host == "storagesvc" || host.starts_with("storagesvc.")) || u.path() != "/v1/archive" {
        return None;
    }
    u.query_pairs()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.into_owned())
}

/// The URL recorded in a package for an archive stored under `id`, the id URL-escaped as
/// Fission's storagesvc client writes it (`?id=%2Ffission%2Ffission-functions%2F…`).
pub(crate) fn storage_archive_url(id: &str) -> String {
    let mut url =
        Url::parse(STORAGESVC_ARCHIVE_URL).unwrap_or_else(|_| unreachable!("constant URL"));
    url.query_pairs_mut().append_pair("id", id);
    // `query_pairs_mut` uses form encoding, which leaves nothing to tell apart from Go's here.
    url.to_string()
}

/// Objects that are not `fission.io/v1` kinds (Secret, ConfigMap), addressed by kind.
impl Api {
    fn kind_segments(kind: fission_core::ResourceKind) -> Vec<&'static str> {
        let mut v = vec!["v2"];
        v.extend(kind.api_path().split('/'));
        v
    }

    pub(crate) async fn list_kind<T: DeserializeOwned>(
        &self,
        kind: fission_core::ResourceKind,
        ns: Option<&str>,
    ) -> Result<Vec<T>, ApiError> {
        let q: Vec<(&str, &str)> = ns.map(|n| ("namespace", n)).into_iter().collect();
        let resp = self
            .send(self.request(Method::GET, self.url(&Self::kind_segments(kind), &q)))
            .await?;
        let items: Option<Vec<T>> = self.json(resp, "a list").await?;
        Ok(items.unwrap_or_default())
    }

    pub(crate) async fn get_kind<T: DeserializeOwned>(
        &self,
        kind: fission_core::ResourceKind,
        ns: &str,
        name: &str,
    ) -> Result<T, ApiError> {
        let mut segs = Self::kind_segments(kind);
        segs.push(name);
        let resp = self
            .send(self.request(Method::GET, self.url(&segs, &[("namespace", ns)])))
            .await?;
        self.json(resp, "an object").await
    }

    pub(crate) async fn create_kind<T: serde::Serialize>(
        &self,
        kind: fission_core::ResourceKind,
        obj: &T,
    ) -> Result<(), ApiError> {
        self.send(
            self.request(Method::POST, self.url(&Self::kind_segments(kind), &[]))
                .json(obj),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn update_kind<T: serde::Serialize>(
        &self,
        kind: fission_core::ResourceKind,
        ns: &str,
        name: &str,
        obj: &T,
    ) -> Result<(), ApiError> {
        let mut segs = Self::kind_segments(kind);
        segs.push(name);
        self.send(
            self.request(Method::PUT, self.url(&segs, &[("namespace", ns)]))
                .json(obj),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn delete_kind(
        &self,
        kind: fission_core::ResourceKind,
        ns: &str,
        name: &str,
        force: bool,
    ) -> Result<(), ApiError> {
        let mut segs = Self::kind_segments(kind);
        segs.push(name);
        let mut q = vec![("namespace", ns)];
        if force {
            q.push(("force", "true"));
        }
        self.send(self.request(Method::DELETE, self.url(&segs, &q)))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fission_core::resources::{FunctionSpec, HttpTriggerSpec};

    #[test]
    fn item_urls_encode_names_and_carry_the_namespace() {
        let api = Api::new("http://127.0.0.1:31313/", false).expect("api");
        let u = api.item_url::<FunctionSpec>("ns1", "hello", &[]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:31313/v2/functions/hello?namespace=ns1"
        );
        let u = api.item_url::<HttpTriggerSpec>("default", "../x", &[("force", "true")]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:31313/v2/triggers/http/..%2Fx?namespace=default&force=true"
        );
    }

    #[test]
    fn warning_headers_are_unquoted_and_unescaped() {
        assert_eq!(
            warning_text(r#"299 - "unknown field \"spec.x\" ignored""#).as_deref(),
            Some(r#"unknown field "spec.x" ignored"#)
        );
        assert_eq!(warning_text("299 - unquoted"), None);
    }

    #[test]
    fn server_without_scheme_defaults_to_http() {
        let api = Api::new("localhost:31313", false).expect("api");
        assert_eq!(api.base_str, "http://localhost:31313");
        assert_eq!(
            api.url(&["v2", "functions"], &[]).as_str(),
            "http://localhost:31313/v2/functions"
        );
    }

    #[test]
    fn storagesvc_urls_map_to_archive_ids_and_back() {
        let url = storage_archive_url("abc123");
        assert_eq!(url, "http://storagesvc.fission/v1/archive?id=abc123");
        assert_eq!(storage_archive_id(&url).as_deref(), Some("abc123"));
        let url = storage_archive_url("/fission/fission-functions/abc123");
        assert_eq!(
            url,
            "http://storagesvc.fission/v1/archive?id=%2Ffission%2Ffission-functions%2Fabc123"
        );
        assert_eq!(
            storage_archive_id(&url).as_deref(),
            Some("/fission/fission-functions/abc123")
        );
        assert_eq!(
            storage_archive_id("http://storagesvc/v1/archive?id=z").as_deref(),
            Some("z")
        );
        assert_eq!(
            storage_archive_id("http://example.com/v1/archive?id=z"),
            None
        );
    }

    #[test]
    fn unreachable_server_message_is_one_line_without_context() {
        let e: Result<(), ApiError> = Err(ApiError::Unreachable {
            what: "fission server",
            url: "http://127.0.0.1:31313".into(),
            reason: "connection refused".into(),
        });
        let msg = format!(
            "{:#}",
            e.wrap("error creating function").expect_err("must fail")
        );
        assert_eq!(
            msg,
            "cannot reach the fission server at http://127.0.0.1:31313 (connection refused); \
             start it with 'fission server' or set FISSION_URL / --server"
        );
    }

    #[test]
    fn a_refused_token_says_whether_it_was_missing_or_wrong_without_context() {
        let missing: Result<(), ApiError> = Err(ApiError::Unauthorized {
            url: "http://h:1".into(),
            sent: false,
        });
        let msg = format!(
            "{:#}",
            missing.wrap("error listing functions").expect_err("fails")
        );
        assert!(
            msg.starts_with(
                "the fission server at http://h:1 requires an API token and none was given"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("FISSION_AUTH_TOKEN") && msg.contains("--auth-token"),
            "{msg}"
        );
        let wrong: Result<(), ApiError> = Err(ApiError::Unauthorized {
            url: "http://h:1".into(),
            sent: true,
        });
        let msg = format!(
            "{:#}",
            wrong.wrap("error listing functions").expect_err("fails")
        );
        assert!(
            msg.starts_with("the fission server at http://h:1 refused the API token"),
            "{msg}"
        );
    }

    #[test]
    fn the_token_goes_to_the_controller_only() {
        let api = Api::new("http://127.0.0.1:31313", false)
            .expect("api")
            .with_access(Some("0123456789abcdef"), None)
            .expect("token");
        let to_controller = api
            .request(Method::GET, api.url(&["v2", "functions"], &[]))
            .build()
            .expect("request");
        assert_eq!(
            to_controller
                .headers()
                .get(reqwest::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
            Some(&b"Bearer 0123456789abcdef"[..])
        );
        let elsewhere = api
            .request(
                Method::GET,
                Url::parse("https://example.com/archive.zip").expect("url"),
            )
            .build()
            .expect("request");
        assert!(
            elsewhere
                .headers()
                .get(reqwest::header::AUTHORIZATION)
                .is_none()
        );
    }

    #[test]
    fn server_errors_are_prefixed_with_what_was_being_done() {
        let e: Result<(), ApiError> = Err(ApiError::Status {
            status: 409,
            message: "environment 'x' already exists".into(),
        });
        let msg = format!(
            "{:#}",
            e.wrap("error creating environment").expect_err("must fail")
        );
        assert_eq!(
            msg,
            "error creating environment: environment 'x' already exists"
        );
    }
}
