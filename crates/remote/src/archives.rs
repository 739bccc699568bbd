//! Package archives read from the controller's archive store over HTTP (Fission's storagesvc
//! download path, `GET /v1/archive?id=<id>`), for executors in other processes.

use std::path::PathBuf;

use fission_core::{ArchiveError, ArchiveStorage};
use fission_fetch::{FetchConfig, FetchError, Fetcher};

/// [`ArchiveStorage`] of a controller at a base URL. Reads only: archives are written by the
/// controller (uploads, builds).
pub struct RemoteArchives {
    base: String,
    fetcher: Fetcher,
}

impl RemoteArchives {
    /// Archives of the controller at `base_url` (`http://controller.fission`), downloaded with
    /// `config`'s limits, sending `api_token` when the controller requires one.
    pub fn new(
        base_url: &str,
        config: &FetchConfig,
        api_token: Option<&str>,
    ) -> Result<Self, FetchError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !fission_fetch::is_remote_url(&base) {
            return Err(FetchError::UnsupportedUrl(base));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = api_token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| FetchError::InvalidToken)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(Self {
            base,
            fetcher: Fetcher::with_headers(config, None, headers)?,
        })
    }

    fn url(&self, id: &str) -> String {
        format!("{}/v1/archive?id={id}", self.base)
    }
}

fn failure(url: String, e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Io {
        path: PathBuf::from(url),
        source: std::io::Error::other(e.to_string()),
    }
}

#[async_trait::async_trait]
impl ArchiveStorage for RemoteArchives {
    async fn put(&self, _bytes: Vec<u8>) -> Result<String, ArchiveError> {
        Err(ArchiveError::Io {
            path: PathBuf::from(format!("{}/v1/archive", self.base)),
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "archives are written by the controller (fission archive upload)",
            ),
        })
    }

    async fn get(&self, id: &str) -> Result<Vec<u8>, ArchiveError> {
        let id = fission_core::archive::content_id(id);
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ArchiveError::InvalidId(id.to_owned()));
        }
        let url = self.url(id);
        // The id is the content's sha256: the fetcher verifies the bytes against it.
        match self.fetcher.fetch(&url, id).await {
            Ok(bytes) => Ok(bytes),
            Err(FetchError::Status { status, .. }) if status == reqwest::StatusCode::NOT_FOUND => {
                Err(ArchiveError::NotFound(id.to_owned()))
            }
            Err(FetchError::ChecksumMismatch { actual, .. }) => Err(ArchiveError::Corrupt {
                id: id.to_owned(),
                actual,
            }),
            Err(e) => Err(failure(url, e)),
        }
    }
}
