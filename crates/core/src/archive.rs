//! The archive port: where package archives too large to keep inline live (Fission's
//! storagesvc). The all-in-one server keeps them on local disk; a cluster keeps them where
//! every replica can read them. Ids are the sha256 of the content.

use std::path::PathBuf;
use std::time::SystemTime;

/// The URL form Fission's storagesvc gives archives; the host part is ignored and the id is
/// resolved against this server's archive storage.
pub const STORAGE_URL_PREFIX: &str = "http://storagesvc.fission/v1/archive?id=";

/// The prefix of the archive ids Fission's storagesvc hands out (`/fission/fission-functions/<id>`);
/// ids given to clients carry it, so scripts written for Fission parse them.
pub const FISSION_ID_PREFIX: &str = "/fission/fission-functions/";

/// [`FISSION_ID_PREFIX`] as it appears URL-escaped in a query string.
const ESCAPED_ID_PREFIX: &str = "%2Ffission%2Ffission-functions%2F";

/// The id a client is given for content id `id`.
pub fn client_id(id: &str) -> String {
    format!("{FISSION_ID_PREFIX}{id}")
}

/// The content id (sha256 hex) inside a client id; ids without the prefix are returned as is.
pub fn content_id(id: &str) -> &str {
    id.strip_prefix(FISSION_ID_PREFIX).unwrap_or(id)
}

/// The archive URL recorded in packages for content id `id`: Fission's storagesvc URL with the
/// client id URL-escaped.
pub fn storage_url(id: &str) -> String {
    format!("{STORAGE_URL_PREFIX}{ESCAPED_ID_PREFIX}{id}")
}

/// The content id in a storage URL (`…/v1/archive?id=<id>`), whatever the host, with or without
/// Fission's id prefix (plain or URL-escaped).
pub fn archive_id_from_url(url: &str) -> Option<&str> {
    let (_, query) = url.split_once("/v1/archive?")?;
    let id = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("id="))
        .filter(|id| !id.is_empty())?;
    let escaped = id
        .get(..ESCAPED_ID_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(ESCAPED_ID_PREFIX))
        .map(|p| &id[p.len()..]);
    Some(escaped.unwrap_or_else(|| content_id(id))).filter(|id| !id.is_empty())
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

/// One stored archive, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// The content id (sha256 hex, without Fission's prefix).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored (the pruner keeps young uploads whose package may not exist yet).
    pub modified: SystemTime,
}

/// Content-addressed archive storage. Every id argument may be a content id or a client id
/// ([`client_id`]).
#[async_trait::async_trait]
pub trait ArchiveStorage: Send + Sync + 'static {
    /// Store `bytes`; returns their id (sha256 hex). Storing the same content twice is one
    /// archive.
    async fn put(&self, bytes: Vec<u8>) -> Result<String, ArchiveError>;
    /// Read an archive, verified against its id.
    async fn get(&self, id: &str) -> Result<Vec<u8>, ArchiveError>;
    /// Every stored archive, ordered by id.
    async fn list(&self) -> Result<Vec<ArchiveInfo>, ArchiveError>;
    /// Remove an archive ([`ArchiveError::NotFound`] if there is none).
    async fn delete(&self, id: &str) -> Result<(), ArchiveError>;
}
