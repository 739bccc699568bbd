//! Content-addressed archive store: package archives too large to keep inline (≥ 256 KiB),
//! stored once under their sha256 and verified on every read.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use fission_core::archive::{
    ArchiveError, ArchiveInfo, FISSION_ID_PREFIX, STORAGE_URL_PREFIX, archive_id_from_url,
    client_id, content_id, storage_url,
};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Files on disk, one per distinct content, named by sha256.
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    root: PathBuf,
}

impl ArchiveStore {
    /// Open (creating) the store rooted at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ArchiveError> {
        let root = dir.into();
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        Ok(Self { root })
    }

    fn path_of(&self, id: &str) -> Result<PathBuf, ArchiveError> {
        let id = content_id(id);
        if id.len() != 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(ArchiveError::InvalidId(id.to_owned()));
        }
        Ok(self.root.join(&id[..2]).join(id))
    }

    /// Store `bytes` (durably) and return their id. Storing the same bytes twice is a no-op.
    pub fn put(&self, bytes: &[u8]) -> Result<String, ArchiveError> {
        let id = sha256_hex(bytes);
        let path = self.path_of(&id)?;
        if path.exists() {
            return Ok(id);
        }
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let tmp = dir.join(format!(".{id}.{}.tmp", std::process::id()));
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(id)
    }

    /// Read and verify an archive.
    pub fn get(&self, id: &str) -> Result<Vec<u8>, ArchiveError> {
        let path = self.path_of(id)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ArchiveError::NotFound(id.to_owned()));
            }
            Err(e) => return Err(ArchiveError::Io { path, source: e }),
        };
        let actual = sha256_hex(&bytes);
        if actual != content_id(id) {
            return Err(ArchiveError::Corrupt {
                id: id.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// When an archive was stored.
    pub fn modified(&self, id: &str) -> Result<std::time::SystemTime, ArchiveError> {
        let path = self.path_of(id)?;
        std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(|source| ArchiveError::Io { path, source })
    }

    /// Whether an archive exists.
    pub fn contains(&self, id: &str) -> bool {
        self.path_of(id).map(|p| p.exists()).unwrap_or(false)
    }

    /// Remove an archive.
    pub fn delete(&self, id: &str) -> Result<(), ArchiveError> {
        let path = self.path_of(id)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ArchiveError::NotFound(id.to_owned()))
            }
            Err(e) => Err(ArchiveError::Io { path, source: e }),
        }
    }

    /// Every stored id.
    pub fn list(&self) -> Result<Vec<String>, ArchiveError> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let shard = shard.map_err(io_err(&self.root))?.path();
            if !shard.is_dir() {
                continue;
            }
            for f in fs::read_dir(&shard).map_err(io_err(&shard))? {
                let name = f
                    .map_err(io_err(&shard))?
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                if name.len() == 64 {
                    out.push(name);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

impl ArchiveStore {
    /// Every stored archive with its size and time of storing.
    pub fn list_info(&self) -> Result<Vec<ArchiveInfo>, ArchiveError> {
        let mut out = Vec::new();
        for id in self.list()? {
            let path = self.path_of(&id)?;
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                // Deleted between listing and looking: not stored any more.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ArchiveError::Io { path, source }),
            };
            let modified = meta
                .modified()
                .map_err(|source| ArchiveError::Io { path, source })?;
            out.push(ArchiveInfo {
                id,
                size: meta.len(),
                modified,
            });
        }
        Ok(out)
    }

    /// Run blocking file work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Self) -> Result<T, ArchiveError> + Send + 'static,
    ) -> Result<T, ArchiveError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| ArchiveError::Io {
                path: self.root.clone(),
                source: std::io::Error::other(e),
            })?
    }
}

#[async_trait::async_trait]
impl fission_core::ArchiveStorage for ArchiveStore {
    async fn put(&self, bytes: Vec<u8>) -> Result<String, ArchiveError> {
        self.blocking(move |s| s.put(&bytes)).await
    }

    async fn get(&self, id: &str) -> Result<Vec<u8>, ArchiveError> {
        let id = id.to_owned();
        self.blocking(move |s| s.get(&id)).await
    }

    async fn list(&self) -> Result<Vec<ArchiveInfo>, ArchiveError> {
        self.blocking(Self::list_info).await
    }

    async fn delete(&self, id: &str) -> Result<(), ArchiveError> {
        let id = id.to_owned();
        self.blocking(move |s| s.delete(&id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_content_under_its_sha256_and_reads_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ArchiveStore::open(dir.path()).expect("open");
        let id = store.put(b"hello").expect("put");
        assert_eq!(id, sha256_hex(b"hello"));
        assert_eq!(store.get(&id).expect("get"), b"hello");
        assert_eq!(store.put(b"hello").expect("put again"), id);
        assert_eq!(store.list().expect("list"), vec![id.clone()]);
        store.delete(&id).expect("delete");
        assert!(matches!(store.get(&id), Err(ArchiveError::NotFound(_))));
    }

    #[tokio::test]
    async fn the_port_lists_sizes_and_times_and_deletes_by_client_id() {
        use fission_core::ArchiveStorage;
        let dir = tempfile::tempdir().expect("tempdir");
        let store: std::sync::Arc<dyn ArchiveStorage> =
            std::sync::Arc::new(ArchiveStore::open(dir.path()).expect("open"));
        let before = std::time::SystemTime::now() - std::time::Duration::from_secs(5);
        let id = store.put(b"twelve bytes".to_vec()).await.expect("put");
        let listed = store.list().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
        assert_eq!(listed[0].size, 12);
        assert!(listed[0].modified >= before);
        assert_eq!(
            store.get(&client_id(&id)).await.expect("get"),
            b"twelve bytes"
        );
        store.delete(&client_id(&id)).await.expect("delete");
        assert!(store.list().await.expect("list").is_empty());
        assert!(matches!(
            store.delete(&id).await,
            Err(ArchiveError::NotFound(_))
        ));
    }

    #[test]
    fn refuses_to_return_tampered_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ArchiveStore::open(dir.path()).expect("open");
        let id = store.put(b"original").expect("put");
        fs::write(dir.path().join(&id[..2]).join(&id), b"tampered").expect("tamper");
        assert!(matches!(store.get(&id), Err(ArchiveError::Corrupt { .. })));
    }

    #[test]
    fn rejects_ids_that_could_escape_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ArchiveStore::open(dir.path()).expect("open");
        assert!(matches!(
            store.get("../../etc/passwd"),
            Err(ArchiveError::InvalidId(_))
        ));
    }

    #[test]
    fn finds_id_in_storage_urls() {
        let url = format!("{STORAGE_URL_PREFIX}abc");
        assert_eq!(archive_id_from_url(&url), Some("abc"));
        assert_eq!(
            archive_id_from_url("http://x/v1/archive?foo=1&id=z"),
            Some("z")
        );
        assert_eq!(archive_id_from_url("http://x/other"), None);
    }

    #[test]
    fn fission_shaped_ids_and_urls_resolve_to_the_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ArchiveStore::open(dir.path()).expect("open");
        let id = store.put(b"zip").expect("put");
        let client = client_id(&id);
        assert_eq!(client, format!("/fission/fission-functions/{id}"));
        assert_eq!(store.get(&client).expect("get by client id"), b"zip");
        assert!(store.contains(&client));
        let url = storage_url(&id);
        assert_eq!(
            url,
            format!(
                "http://storagesvc.fission/v1/archive?id=%2Ffission%2Ffission-functions%2F{id}"
            )
        );
        assert_eq!(archive_id_from_url(&url), Some(id.as_str()));
        let lower = url.replace("%2F", "%2f");
        assert_eq!(archive_id_from_url(&lower), Some(id.as_str()));
        let plain = format!("{STORAGE_URL_PREFIX}{client}");
        assert_eq!(archive_id_from_url(&plain), Some(id.as_str()));
        assert!(matches!(
            store.get("/fission/fission-functions/../x"),
            Err(ArchiveError::InvalidId(_))
        ));
    }
}
