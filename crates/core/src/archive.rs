//! The archive port: where package archives too large to keep inline live (Fission's
//! storagesvc). The all-in-one server keeps them on local disk; a cluster keeps them where
//! every replica can read them. Ids are the sha256 of the content.

use std::path::PathBuf;

/// The URL form Fission's storagesvc gives archives; the host part is ignored and the id is
/// resolved against this server's archive storage.
pub const STORAGE_URL_PREFIX: &str = "http://storagesvc.fission/v1/archive?id=";

/// The archive id in a storage URL (`…/v1/archive?id=<id>`), whatever the host.
pub fn archive_id_from_url(url: &str) -> Option<&str> {
    let (_, query) = url.split_once("/v1/archive?")?;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("id="))
        .filter(|id| !id.is_empty())
}

/// Why an archive operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// No archive with this id.
    #[error("archive '{0}' not found")]
    NotFound(String),
    /// Stored bytes no longer match their checksum.
    #[error("archive '{id}' is corrupt: its sha256 is {actual}")]
    Corrupt {
        /// The id (expected sha256).
        id: String,
        /// What the bytes hash to now.
        actual: String,
    },
    /// Not a sha256 hex id.
    #[error("'{0}' is not an archive id (64 hexadecimal digits)")]
    InvalidId(String),
    /// Storage failure.
    #[error("archive store I/O on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Content-addressed archive storage.
#[async_trait::async_trait]
pub trait ArchiveStorage: Send + Sync + 'static {
    /// Store `bytes`; returns their id (sha256 hex). Storing the same content twice is one
    /// archive.
    async fn put(&self, bytes: Vec<u8>) -> Result<String, ArchiveError>;
    /// Read an archive, verified against its id.
    async fn get(&self, id: &str) -> Result<Vec<u8>, ArchiveError>;
}
