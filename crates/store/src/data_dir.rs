use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Why the data directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the lock.
    #[error(
        "data directory {path} is in use by another fission server (pid {holder}); stop it, or \
         start this one with another --data-dir"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
        /// The pid written by the holder, if readable.
        holder: String,
    },
    /// Filesystem failure.
    #[error("cannot use data directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The server's data directory, exclusively locked for the lifetime of this value.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Create (if needed) and lock `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DataDirError> {
        let root = root.into();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DataDirError::Io { path, source }
        };
        fs::create_dir_all(&root).map_err(io(&root))?;
        let lock_path = root.join("LOCK");
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // An OS file lock dies with its process, so a crashed server never leaves a stale lock.
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&lock_path)
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                return Err(DataDirError::Locked { path: root, holder });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(DataDirError::Io {
                    path: lock_path,
                    source: e,
                });
            }
        }
        lock.set_len(0).map_err(io(&lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(io(&lock_path))?;
        Ok(Self { root, _lock: lock })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The object database file.
    pub fn database(&self) -> PathBuf {
        self.root.join("fission.redb")
    }

    /// The archive store directory.
    pub fn archives(&self) -> PathBuf {
        self.root.join("archives")
    }

    /// The function log directory.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The key that encrypts Secret values at rest.
    pub fn secret_key(&self) -> PathBuf {
        self.root.join("secret.key")
    }

    /// The unpacked package cache directory.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDir::open(dir.path()).expect("first open");
        let err = DataDir::open(dir.path()).expect_err("second open must fail");
        assert!(
            err.to_string().contains("in use by another fission server"),
            "{err}"
        );
        drop(first);
        DataDir::open(dir.path()).expect("open after release");
    }
}
