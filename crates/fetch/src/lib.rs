//! Remote archives: `http://` and `https://` package archive URLs, fetched by the executor
//! (deployments), the builder (sources) and the CLI (to compute a URL archive's checksum).
//!
//! Like Fission's fetcher, an archive whose package records a sha256 is verified and refused on
//! a mismatch; an archive without one (`--insecure`, which leaves `checksum` empty) is taken as
//! it comes. Unlike it, a download has a time limit, a size limit and a redirect limit, and
//! verified archives are cached on disk by their checksum, so each is downloaded once.

#![deny(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(any(test, feature = "test-https"))]
pub mod test_https;

/// Environment variable naming a PEM file of extra CA certificates trusted for archive URLs
/// (in addition to the built-in web roots).
pub const CA_CERT_ENV: &str = "FISSION_ARCHIVE_CA_CERT";

/// Redirects followed before a download is refused.
pub const DEFAULT_MAX_REDIRECTS: usize = 5;

/// Download settings.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// The whole download, from connecting to the last byte.
    pub timeout: Duration,
    /// Establishing the connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Largest archive accepted.
    pub max_bytes: u64,
    /// Redirects followed.
    pub max_redirects: usize,
    /// A PEM bundle of extra trusted CA certificates.
    pub extra_ca_cert: Option<PathBuf>,
}

impl Default for FetchConfig {
    /// 5 minutes, 10 s to connect, 1 GiB (the unpack budget's default), 5 redirects, and the
    /// CA bundle named by [`CA_CERT_ENV`] if set.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_bytes: 1 << 30,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            extra_ca_cert: std::env::var_os(CA_CERT_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// Why a remote archive could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not an http(s) URL.
    #[error("archive URL '{0}' is not an http:// or https:// URL")]
    UnsupportedUrl(String),
    /// The recorded checksum is no sha256 hex digest.
    #[error("archive '{url}': recorded checksum '{sum}' is not a sha256 hex digest")]
    InvalidChecksum {
        /// The URL.
        url: String,
        /// The recorded value.
        sum: String,
    },
    /// The extra CA bundle could not be read.
    #[error("cannot read the archive CA certificates {}: {source}", path.display())]
    CaCertRead {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The extra CA bundle holds no usable certificate.
    #[error("archive CA certificates {}: {reason}", path.display())]
    CaCertInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The controller's API token is not a valid header value.
    #[error("the API token cannot be sent in an HTTP header: it must be visible ASCII")]
    InvalidToken,
    /// The HTTP client could not be set up.
    #[error("cannot set up the archive download client: {0}")]
    Client(#[source] reqwest::Error),
    /// Connecting, TLS, a redirect loop, a timeout or a broken transfer.
    #[error("downloading archive {url} failed: {}", error_chain(.source))]
    Request {
        /// The URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("downloading archive {url} failed: the server answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// Its status.
        status: reqwest::StatusCode,
    },
    /// The archive is larger than allowed.
    #[error("archive {url} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The archive is not the one the package records.
    #[error("checksum mismatch for {url}: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// Recorded.
        expected: String,
        /// Downloaded.
        actual: String,
    },
    /// The checksum cache could not be written.
    #[error("cannot write the archive cache {}: {source}", path.display())]
    Cache {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The error and its causes on one line: reqwest's own message ("error sending request")
/// says little without them.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// Whether `url` is a remote archive URL this crate fetches.
pub fn is_remote_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Downloads remote archives.
pub struct Fetcher {
    client: reqwest::Client,
    max_bytes: u64,
    /// Verified archives by sha256; none: no caching.
    cache_dir: Option<PathBuf>,
    /// One lock per checksum, so concurrent first uses download once.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    downloads: AtomicU64,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("max_bytes", &self.max_bytes)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Fetcher {
    /// A fetcher with `config`, caching verified archives in `cache_dir` if given.
    pub fn new(config: &FetchConfig, cache_dir: Option<PathBuf>) -> Result<Self, FetchError> {
        Self::with_headers(config, cache_dir, reqwest::header::HeaderMap::new())
    }

    /// Like [`Fetcher::new`], sending `headers` with every request (e.g. the controller's API
    /// token: only for a fetcher that talks to the controller; reqwest drops `Authorization`
    /// on a redirect to another host).
    pub fn with_headers(
        config: &FetchConfig,
        cache_dir: Option<PathBuf>,
        headers: reqwest::header::HeaderMap,
    ) -> Result<Self, FetchError> {
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .use_rustls_tls()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::limited(config.max_redirects))
            .user_agent(concat!("fission-rs/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.extra_ca_cert {
            let pem = std::fs::read(path).map_err(|source| FetchError::CaCertRead {
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                FetchError::CaCertInvalid {
                    path: path.clone(),
                    reason: e.to_string(),
                }
            })?;
            if certs.is_empty() {
                return Err(FetchError::CaCertInvalid {
                    path: path.clone(),
                    reason: "no PEM certificate in the file".to_owned(),
                });
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        Ok(Self {
            client: builder.build().map_err(FetchError::Client)?,
            max_bytes: config.max_bytes,
            cache_dir,
            inflight: Mutex::new(HashMap::new()),
            downloads: AtomicU64::new(0),
        })
    }

    /// How many downloads were made (cache hits are none).
    pub fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::Relaxed)
    }

    /// The archive at `url`, verified against `sha256` when one is recorded (empty: `--insecure`,
    /// taken unverified and never cached).
    pub async fn fetch(&self, url: &str, sha256: &str) -> Result<Vec<u8>, FetchError> {
        if !is_remote_url(url) {
            return Err(FetchError::UnsupportedUrl(url.to_owned()));
        }
        let sum = sha256.trim().to_ascii_lowercase();
        if sum.is_empty() {
            return self.download(url).await;
        }
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FetchError::InvalidChecksum {
                url: url.to_owned(),
                sum: sha256.to_owned(),
            });
        }
        let Some(dir) = &self.cache_dir else {
            let bytes = self.download(url).await?;
            verify(url, &sum, &bytes)?;
            return Ok(bytes);
        };
        let lock = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            inflight.entry(sum.clone()).or_default().clone()
        };
        let result = {
            let _guard = lock.lock().await;
            self.fetch_cached(url, &sum, dir).await
        };
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sum);
        result
    }

    async fn fetch_cached(&self, url: &str, sum: &str, dir: &Path) -> Result<Vec<u8>, FetchError> {
        let path = dir.join(sum);
        // Checked again on the way out: a damaged cache file is downloaded anew.
        if let Ok(bytes) = tokio::fs::read(&path).await {
            if sha256_hex(&bytes) == sum {
                return Ok(bytes);
            }
            tracing::warn!(path = %path.display(), "cached archive is damaged; downloading it again");
        }
        let bytes = self.download(url).await?;
        verify(url, sum, &bytes)?;
        let io = |source| FetchError::Cache {
            path: path.clone(),
            source,
        };
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::write(&tmp, &bytes).await.map_err(io)?;
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io(e));
        }
        Ok(bytes)
    }

    async fn download(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let request_err = |source| FetchError::Request {
            url: url.to_owned(),
            source,
        };
        let too_large = || FetchError::TooLarge {
            url: url.to_owned(),
            limit: self.max_bytes,
        };
        self.downloads.fetch_add(1, Ordering::Relaxed);
        let mut resp = self.client.get(url).send().await.map_err(request_err)?;
        if !resp.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: resp.status(),
            });
        }
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        // Counted as it arrives: a missing or false Content-Length does not lift the limit.
        while let Some(chunk) = resp.chunk().await.map_err(request_err)? {
            if (bytes.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        tracing::debug!(url, bytes = bytes.len(), "downloaded remote archive");
        Ok(bytes)
    }
}

fn verify(url: &str, sum: &str, bytes: &[u8]) -> Result<(), FetchError> {
    let actual = sha256_hex(bytes);
    if actual != sum {
        return Err(FetchError::ChecksumMismatch {
            url: url.to_owned(),
            expected: sum.to_owned(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::test_https::{HttpsServer, Reply};
    use super::*;

    fn config(server: &HttpsServer) -> FetchConfig {
        FetchConfig {
            timeout: Duration::from_secs(10),
            extra_ca_cert: Some(server.ca_cert_file().to_owned()),
            ..FetchConfig::default()
        }
    }

    #[tokio::test]
    async fn an_https_archive_with_its_checksum_is_downloaded_once_and_then_served_from_the_cache()
    {
        let server = HttpsServer::start();
        server.set("/code.zip", Reply::ok(b"archive bytes".to_vec()));
        let cache = tempfile::tempdir().expect("tempdir");
        let f = Fetcher::new(&config(&server), Some(cache.path().to_owned())).expect("fetcher");
        let sum = sha256_hex(b"archive bytes");
        let url = server.url("/code.zip");
        assert_eq!(f.fetch(&url, &sum).await.expect("fetch"), b"archive bytes");
        // Uppercase hex is the same checksum.
        assert_eq!(
            f.fetch(&url, &sum.to_uppercase()).await.expect("cached"),
            b"archive bytes"
        );
        assert_eq!(server.hits("/code.zip"), 1);
        assert_eq!(f.downloads(), 1);
    }

    #[tokio::test]
    async fn a_checksum_mismatch_is_refused_with_both_sums_and_nothing_is_cached() {
        let server = HttpsServer::start();
        server.set("/code.zip", Reply::ok(b"tampered".to_vec()));
        let cache = tempfile::tempdir().expect("tempdir");
        let f = Fetcher::new(&config(&server), Some(cache.path().to_owned())).expect("fetcher");
        let expected = sha256_hex(b"original");
        let url = server.url("/code.zip");
        let err = f.fetch(&url, &expected).await.expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            format!(
                "checksum mismatch for {url}: expected sha256 {expected}, got {}",
                sha256_hex(b"tampered")
            )
        );
        assert_eq!(
            std::fs::read_dir(cache.path()).expect("ls").count(),
            0,
            "nothing cached"
        );
    }

    #[tokio::test]
    async fn without_a_checksum_the_archive_is_taken_unverified() {
        let server = HttpsServer::start();
        server.set("/a", Reply::ok(b"anything".to_vec()));
        let f = Fetcher::new(&config(&server), None).expect("fetcher");
        assert_eq!(
            f.fetch(&server.url("/a"), "").await.expect("insecure"),
            b"anything"
        );
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_refused() {
        let server = HttpsServer::start();
        server.set("/a", Reply::ok(b"x".to_vec()));
        let cfg = FetchConfig {
            extra_ca_cert: None,
            ..config(&server)
        };
        let f = Fetcher::new(&cfg, None).expect("fetcher");
        let err = f.fetch(&server.url("/a"), "").await.expect_err("untrusted");
        assert!(matches!(err, FetchError::Request { .. }), "{err}");
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn redirects_are_followed_up_to_five() {
        let server = HttpsServer::start();
        server.set("/final", Reply::ok(b"here".to_vec()));
        for i in 1..=6 {
            let next = if i == 1 {
                "/final".to_owned()
            } else {
                format!("/r{}", i - 1)
            };
            server.set(&format!("/r{i}"), Reply::redirect(&next));
        }
        let f = Fetcher::new(&config(&server), None).expect("fetcher");
        // r5 -> r4 -> r3 -> r2 -> r1 -> final: five redirects.
        assert_eq!(f.fetch(&server.url("/r5"), "").await.expect("5"), b"here");
        let err = f.fetch(&server.url("/r6"), "").await.expect_err("6");
        assert!(err.to_string().contains("redirect"), "{err}");
    }

    #[tokio::test]
    async fn archives_over_the_size_limit_are_refused_with_or_without_content_length() {
        let server = HttpsServer::start();
        server.set("/big", Reply::ok(vec![b'x'; 2000]));
        server.set(
            "/chunked",
            Reply {
                chunked: true,
                ..Reply::ok(vec![b'x'; 2000])
            },
        );
        let cfg = FetchConfig {
            max_bytes: 1000,
            ..config(&server)
        };
        let f = Fetcher::new(&cfg, None).expect("fetcher");
        for path in ["/big", "/chunked"] {
            let err = f.fetch(&server.url(path), "").await.expect_err("too big");
            assert!(
                matches!(err, FetchError::TooLarge { limit: 1000, .. }),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn error_statuses_and_slow_servers_fail_clearly() {
        let server = HttpsServer::start();
        let f = Fetcher::new(&config(&server), None).expect("fetcher");
        let err = f.fetch(&server.url("/missing"), "").await.expect_err("404");
        assert!(err.to_string().contains("404"), "{err}");

        server.set(
            "/slow",
            Reply {
                delay: Duration::from_secs(3),
                ..Reply::ok(b"late".to_vec())
            },
        );
        let cfg = FetchConfig {
            timeout: Duration::from_millis(500),
            ..config(&server)
        };
        let f = Fetcher::new(&cfg, None).expect("fetcher");
        let err = f
            .fetch(&server.url("/slow"), "")
            .await
            .expect_err("timeout");
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn bad_urls_checksums_and_ca_files_are_refused() {
        let f = Fetcher::new(&FetchConfig::default(), None).expect("fetcher");
        assert!(matches!(
            f.fetch("ftp://x/a.zip", "").await,
            Err(FetchError::UnsupportedUrl(_))
        ));
        assert!(matches!(
            f.fetch("https://127.0.0.1:1/a.zip", "abc").await,
            Err(FetchError::InvalidChecksum { .. })
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let cfg = FetchConfig {
            extra_ca_cert: Some(junk),
            ..FetchConfig::default()
        };
        let err = Fetcher::new(&cfg, None).expect_err("junk CA");
        assert!(matches!(err, FetchError::CaCertInvalid { .. }), "{err}");
        assert!(is_remote_url("HTTPS://example.com/a.zip"));
        assert!(!is_remote_url("http:/x"));
    }
}
