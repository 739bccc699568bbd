//! Deployment archives on local disk: fetched from the package (inline literal, the archive
//! store, or a remote http(s) URL, see [`fission_fetch`]), unpacked once per package version into
//! `<cache_dir>/<namespace>/<package>/<resourceVersion>/deployarchive`, then shared read-only by
//! every instance that loads it.
//!
//! Like Fission's fetcher, a zip becomes a directory and anything else stays a single file named
//! `deployarchive` — or, when the package records the user's file name
//! ([`CODE_FILENAME_ANNOTATION`]), named as the user named it, so stack traces show `hello.js`
//! rather than `deployarchive`. Unlike it, unpacking refuses entries that would land outside the target
//! (zip-slip, absolute paths), symbolic links, and archives beyond a size and entry budget
//! ([`fission_unpack`], shared with the builder).
//!
//! When a package's new deployment cannot be had (a checksum mismatch, a failed download, a
//! broken archive), the error is logged and the package's previous good deployment keeps
//! serving, so a bad update never takes a working function down. The same holds while a
//! package is being rebuilt without a deployment of its own (`spec apply` of changed source).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fission_core::ArchiveStorage;
use fission_core::archive::{ArchiveError, archive_id_from_url};
use fission_core::resources::{
    ARCHIVE_LITERAL, ARCHIVE_URL, CODE_FILENAME_ANNOTATION, Package, build_status,
    initial_build_status,
};
pub use fission_unpack::{UnpackError, UnpackLimits};
use fission_unpack::{is_zip, unzip};

/// File (or directory) name of an unpacked deployment, as in Fission (`/userfunc/deployarchive`).
pub(crate) const DEPLOY_NAME: &str = "deployarchive";

/// Why a package's deployment could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// Build not finished or failed.
    #[error(
        "cannot fetch deployment: package build status was \"{status}\" (it must be \"succeeded\" or \"none\"); \
         see `fission pkg info --name {name}`"
    )]
    NotBuilt {
        /// Package name.
        name: String,
        /// Its build status.
        status: String,
    },
    /// Nothing to deploy.
    #[error("package '{0}' has no deployment archive")]
    NoDeployment(String),
    /// A URL this server cannot fetch from.
    #[error(
        "package '{name}': deployment URL '{url}' is not supported (only http(s) URLs and archives \
         of this server's storage, '…/v1/archive?id=<id>', can be fetched)"
    )]
    UnsupportedUrl {
        /// Package name.
        name: String,
        /// The URL.
        url: String,
    },
    /// Reading the archive store failed.
    #[error("package '{name}': {source}")]
    Archive {
        /// Package name.
        name: String,
        /// Cause.
        #[source]
        source: ArchiveError,
    },
    /// Downloading a remote archive failed, or it does not match the package's checksum.
    #[error("package '{name}': {source}")]
    Remote {
        /// Package name.
        name: String,
        /// Cause.
        #[source]
        source: fission_fetch::FetchError,
    },
    /// Remote archives cannot be fetched by this server (its download client could not be set
    /// up, e.g. an unreadable CA bundle).
    #[error("package '{name}': cannot fetch remote archive '{url}': {reason}")]
    RemoteUnavailable {
        /// Package name.
        name: String,
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The archive does not match the package's checksum.
    #[error(
        "package '{name}': deployment archive checksum mismatch (expected sha256 {expected}, got {actual})"
    )]
    Checksum {
        /// Package name.
        name: String,
        /// Recorded.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// A name that cannot be a path component.
    #[error("package '{namespace}/{name}' has a name that cannot be used as a cache path")]
    InvalidName {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Unpacking failed.
    #[error("package '{name}': {source}")]
    Unpack {
        /// Package name.
        name: String,
        /// Cause.
        #[source]
        source: UnpackError,
    },
}

impl PackageError {
    /// Whether the package's archive could not be had (downloaded, verified, unpacked): the
    /// errors for which an earlier deployment of the same package keeps serving. A package with
    /// no deployment at all, or an unusable name, is no archive failure.
    fn is_archive_failure(&self) -> bool {
        matches!(
            self,
            Self::Remote { .. }
                | Self::RemoteUnavailable { .. }
                | Self::Archive { .. }
                | Self::Checksum { .. }
                | Self::Unpack { .. }
        )
    }
}

/// The unpacked-deployment cache.
pub(crate) struct PackageCache {
    root: PathBuf,
    archives: Arc<dyn ArchiveStorage>,
    limits: UnpackLimits,
    /// One lock per target path, so concurrent first calls unpack once.
    inflight: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// Remote archive downloads, or why this server cannot make them.
    remote: Result<fission_fetch::Fetcher, String>,
    /// The last deployment served per package (by uid) and mode: what keeps serving when a
    /// newer version's deployment cannot be had.
    last_good: Mutex<HashMap<LastGoodKey, PathBuf>>,
    /// Package versions refused while an earlier deployment serves: resourceVersion, when.
    refused: Mutex<HashMap<LastGoodKey, (String, Instant)>>,
}

/// How long a refused package version is not tried again while its previous deployment
/// serves, so that cold starts do not each download (and wait for) an archive known to be bad.
const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// Namespace, name, uid of a package; whether the archive is kept unopened.
type LastGoodKey = (String, String, String, bool);

/// Where verified remote archives are kept, by sha256, under the cache root. Namespaces never
/// start with a dot (see `is_safe_component`), so it cannot collide with a package directory.
const REMOTE_CACHE_DIR: &str = ".remote-archives";

impl PackageCache {
    pub(crate) fn new(
        root: PathBuf,
        archives: Arc<dyn ArchiveStorage>,
        limits: UnpackLimits,
        fetch: &fission_fetch::FetchConfig,
    ) -> Self {
        // A download larger than the unpack budget could never be installed.
        let fetch = fission_fetch::FetchConfig {
            max_bytes: fetch.max_bytes.min(limits.max_bytes),
            ..fetch.clone()
        };
        let remote = fission_fetch::Fetcher::new(&fetch, Some(root.join(REMOTE_CACHE_DIR)))
            .map_err(|e| {
                tracing::error!(error = %e, "remote (http/https) deployment archives cannot be fetched");
                e.to_string()
            });
        Self {
            root,
            archives,
            limits,
            inflight: Mutex::new(HashMap::new()),
            remote,
            last_good: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// The local path of `pkg`'s deployment (a directory for zips, else a file), unpacking it
    /// on first use. `keep_archive` (the environment's `keeparchive`) delivers zips unopened.
    /// If it cannot be had but an earlier version of the same package was served, that one is
    /// returned and the error logged.
    pub(crate) async fn deployment(
        &self,
        pkg: &Package,
        keep_archive: bool,
    ) -> Result<PathBuf, PackageError> {
        let key = (
            pkg.metadata.namespace.clone(),
            pkg.metadata.name.clone(),
            pkg.metadata.uid.clone(),
            keep_archive,
        );
        let rv = &pkg.metadata.resource_version;
        let recently_refused = {
            let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            refused
                .get(&key)
                .is_some_and(|(v, at)| v == rv && !rv.is_empty() && at.elapsed() < REFUSED_RETRY)
        };
        if recently_refused && let Some(prev) = self.previous(&key) {
            return Ok(prev);
        }
        match self.current_deployment(pkg, keep_archive).await {
            Ok(path) => {
                self.refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                self.last_good
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, path.clone());
                Ok(path)
            }
            // Rebuilding (`spec apply` of changed source writes the package without a
            // deployment until its build is in): the last deployment served keeps serving.
            Err(e @ PackageError::NotBuilt { .. }) => match self.previous(&key) {
                Some(prev) => {
                    tracing::debug!(
                        namespace = %pkg.metadata.namespace,
                        package = %pkg.metadata.name,
                        status = %pkg.status.buildstatus,
                        previous = %prev.display(),
                        "package not built yet; its previous deployment serves"
                    );
                    Ok(prev)
                }
                None => Err(e),
            },
            Err(e) if !e.is_archive_failure() => Err(e),
            Err(e) => match self.previous(&key) {
                Some(prev) => {
                    self.refused
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, (rv.clone(), Instant::now()));
                    tracing::error!(
                        namespace = %pkg.metadata.namespace,
                        package = %pkg.metadata.name,
                        resource_version = %pkg.metadata.resource_version,
                        error = %e,
                        previous = %prev.display(),
                        "refusing the package's new deployment; its previous deployment keeps serving"
                    );
                    Ok(prev)
                }
                None => Err(e),
            },
        }
    }

    /// The last deployment served of the package, if it is still installed.
    fn previous(&self, key: &LastGoodKey) -> Option<PathBuf> {
        let last_good = self.last_good.lock().unwrap_or_else(|e| e.into_inner());
        last_good
            .get(key)
            .filter(|p| p.symlink_metadata().is_ok())
            .cloned()
    }

    /// The deployment of `pkg`'s current version.
    async fn current_deployment(
        &self,
        pkg: &Package,
        keep_archive: bool,
    ) -> Result<PathBuf, PackageError> {
        let ns = &pkg.metadata.namespace;
        let name = &pkg.metadata.name;
        let status = if pkg.status.buildstatus.is_empty() {
            initial_build_status(&pkg.spec).0
        } else {
            pkg.status.buildstatus.as_str()
        };
        // A package that is being rebuilt, or whose rebuild failed, still holds the deployment
        // of its last successful build (builds replace it only on success): keep serving that,
        // so a broken rebuild never takes a working function down. Only a package that never
        // built has nothing to deploy.
        let built = status == build_status::SUCCEEDED || status == build_status::NONE;
        if !built && pkg.spec.deployment.is_empty() {
            return Err(PackageError::NotBuilt {
                name: name.clone(),
                status: status.to_owned(),
            });
        }
        let archive = &pkg.spec.deployment;
        if archive.is_empty() {
            return Err(PackageError::NoDeployment(name.clone()));
        }
        if !is_safe_component(ns) || !is_safe_component(name) {
            return Err(PackageError::InvalidName {
                namespace: ns.clone(),
                name: name.clone(),
            });
        }

        // The version directory: the package's resourceVersion (a decimal string), or, for
        // objects without one, a content hash.
        let rv = &pkg.metadata.resource_version;
        let version = if !rv.is_empty() && rv.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Some(rv.clone())
        } else {
            None
        };
        let mode = if keep_archive { "-keep" } else { "" };
        let file_name = code_file_name(pkg);
        if let Some(v) = &version {
            let dir = self.root.join(ns).join(name).join(format!("{v}{mode}"));
            if let Some(done) = installed(&dir, file_name) {
                return Ok(done);
            }
        }

        let bytes = self.archive_bytes(pkg).await?;
        let version = version.unwrap_or_else(|| format!("sha256-{}", &sha256_hex(&bytes)[..32]));
        // A zip unpacks to `deployarchive/`; a single file keeps the user's name if known.
        let leaf = match file_name {
            Some(f) if keep_archive || !is_zip(&bytes) => f,
            _ => DEPLOY_NAME,
        };
        let target = self
            .root
            .join(ns)
            .join(name)
            .join(format!("{version}{mode}"))
            .join(leaf);

        let lock = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            inflight.entry(target.clone()).or_default().clone()
        };
        let result = {
            let _guard = lock.lock().await;
            if target.symlink_metadata().is_ok() {
                Ok(())
            } else {
                let limits = self.limits;
                let t = target.clone();
                tokio::task::spawn_blocking(move || install(&bytes, &t, keep_archive, limits))
                    .await
                    .unwrap_or_else(|e| {
                        Err(UnpackError::Io {
                            path: target.clone(),
                            source: io::Error::other(e),
                        })
                    })
            }
        };
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&target);
        result.map_err(|source| PackageError::Unpack {
            name: name.clone(),
            source,
        })?;
        Ok(target)
    }

    async fn archive_bytes(&self, pkg: &Package) -> Result<Vec<u8>, PackageError> {
        let name = &pkg.metadata.name;
        let archive = &pkg.spec.deployment;
        let use_literal = archive.archive_type == ARCHIVE_LITERAL
            || (archive.archive_type != ARCHIVE_URL && !archive.literal.is_empty());
        if use_literal {
            return Ok(archive.literal.clone());
        }
        let Some(id) = archive_id_from_url(&archive.url) else {
            if fission_fetch::is_remote_url(&archive.url) {
                let fetcher =
                    self.remote
                        .as_ref()
                        .map_err(|reason| PackageError::RemoteUnavailable {
                            name: name.clone(),
                            url: archive.url.clone(),
                            reason: reason.clone(),
                        })?;
                // An empty sum is `--insecure`: taken unverified, as Fission's fetcher does.
                return fetcher
                    .fetch(&archive.url, &archive.checksum.sum)
                    .await
                    .map_err(|source| PackageError::Remote {
                        name: name.clone(),
                        source,
                    });
            }
            return Err(PackageError::UnsupportedUrl {
                name: name.clone(),
                url: archive.url.clone(),
            });
        };
        let bytes = self
            .archives
            .get(id)
            .await
            .map_err(|source| PackageError::Archive {
                name: name.clone(),
                source,
            })?;
        let sum = &archive.checksum.sum;
        if !sum.is_empty() {
            let actual = sha256_hex(&bytes);
            if !actual.eq_ignore_ascii_case(sum) {
                return Err(PackageError::Checksum {
                    name: name.clone(),
                    expected: sum.clone(),
                    actual,
                });
            }
        }
        Ok(bytes)
    }
}

/// Hex sha256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A namespace or package name usable as one path component.
fn is_safe_component(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains(['/', '\\', '\0'])
}

/// The user's name for a single-file deployment, when the package records a usable one.
fn code_file_name(pkg: &Package) -> Option<&str> {
    let name = pkg
        .metadata
        .annotations
        .as_ref()?
        .get(CODE_FILENAME_ANNOTATION)?;
    (is_safe_component(name) && name.len() <= 255).then_some(name.as_str())
}

/// The deployment already installed in a version directory, under either name it can have.
fn installed(dir: &Path, file_name: Option<&str>) -> Option<PathBuf> {
    file_name
        .into_iter()
        .chain([DEPLOY_NAME])
        .map(|leaf| dir.join(leaf))
        .find(|p| p.symlink_metadata().is_ok())
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `target` (unzipped into a directory if it is a zip and `keep_archive` is
/// false): built under a temporary sibling and renamed into place, so readers never see a
/// partial deployment and a concurrent writer (another server on the same cache) is harmless.
pub(crate) fn install(
    bytes: &[u8],
    target: &Path,
    keep_archive: bool,
    limits: UnpackLimits,
) -> Result<(), UnpackError> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| UnpackError::Io { path, source }
    };
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = parent.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let staged = tmp.join(
        target
            .file_name()
            .unwrap_or(std::ffi::OsStr::new(DEPLOY_NAME)),
    );
    let result = (|| {
        if is_zip(bytes) && !keep_archive {
            unzip(bytes, &staged, limits)?;
        } else {
            if bytes.len() as u64 > limits.max_bytes {
                return Err(UnpackError::TooLarge {
                    limit: limits.max_bytes,
                });
            }
            fs::write(&staged, bytes).map_err(io_err(&staged))?;
        }
        match fs::rename(&staged, target) {
            Ok(()) => Ok(()),
            // Someone else installed it first; theirs is as good as ours.
            Err(_) if target.symlink_metadata().is_ok() => Ok(()),
            Err(e) => Err(UnpackError::Io {
                path: target.to_owned(),
                source: e,
            }),
        }
    })();
    let _ = fs::remove_dir_all(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use fission_fetch::test_https::{HttpsServer, Reply};
    use fission_store::archive::ArchiveStore;

    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buf = io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            let opts = zip::write::SimpleFileOptions::default();
            for (name, data) in entries {
                if name.ends_with('/') {
                    w.add_directory(*name, opts).expect("dir");
                } else {
                    w.start_file(*name, opts).expect("start");
                    w.write_all(data).expect("write");
                }
            }
            w.finish().expect("finish");
        }
        buf.into_inner()
    }

    fn limits() -> UnpackLimits {
        UnpackLimits::default()
    }

    #[test]
    fn a_single_file_stays_a_file_named_deployarchive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("ns/pkg/7").join(DEPLOY_NAME);
        install(b"module.exports = () => 1;\n", &target, false, limits()).expect("install");
        assert!(target.is_file());
        assert_eq!(
            fs::read(&target).expect("read"),
            b"module.exports = () => 1;\n"
        );
        // No temporary directories left behind.
        let names: Vec<_> = fs::read_dir(target.parent().expect("parent"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(DEPLOY_NAME)]);
    }

    #[test]
    fn a_zip_becomes_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join(DEPLOY_NAME);
        let z = zip_of(&[
            ("hello.py", b"def main(): return 'hi'\n"),
            ("lib/", b""),
            ("lib/util.py", b"X = 1\n"),
        ]);
        install(&z, &target, false, limits()).expect("install");
        assert!(target.is_dir());
        assert_eq!(
            fs::read_to_string(target.join("hello.py")).expect("read"),
            "def main(): return 'hi'\n"
        );
        assert_eq!(
            fs::read_to_string(target.join("lib/util.py")).expect("read"),
            "X = 1\n"
        );
    }

    #[test]
    fn keeparchive_delivers_the_zip_unopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join(DEPLOY_NAME);
        let z = zip_of(&[("a.txt", b"a")]);
        install(&z, &target, true, limits()).expect("install");
        assert!(target.is_file());
        assert_eq!(fs::read(&target).expect("read"), z);
    }

    #[test]
    fn zip_slip_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("v").join(DEPLOY_NAME);
        let z = zip_of(&[("ok.js", b"1"), ("../../evil.js", b"pwned")]);
        let err = install(&z, &target, false, limits()).expect_err("must refuse");
        let msg = err.to_string();
        assert!(
            msg.contains("../../evil.js") && msg.contains("leaves the archive root"),
            "{msg}"
        );
        assert!(!dir.path().join("evil.js").exists());
        assert!(target.symlink_metadata().is_err(), "no partial deployment");
    }

    #[test]
    fn absolute_entry_paths_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join(DEPLOY_NAME);
        let z = zip_of(&[("/etc/evil", b"x")]);
        let err = install(&z, &target, false, limits()).expect_err("must refuse");
        assert!(
            err.to_string().contains("absolute paths are not allowed"),
            "{err}"
        );
        let err = fission_unpack::safe_relative_path("C:\\Windows\\evil").expect_err("drive path");
        assert!(err.to_string().contains("absolute"), "{err}");
    }

    #[test]
    fn symlink_entries_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut buf = io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            w.add_symlink(
                "link",
                "/etc/passwd",
                zip::write::SimpleFileOptions::default(),
            )
            .expect("symlink");
            w.finish().expect("finish");
        }
        let err = install(
            &buf.into_inner(),
            &dir.path().join(DEPLOY_NAME),
            false,
            limits(),
        )
        .expect_err("refuse");
        assert!(
            err.to_string().contains("symbolic links are not allowed"),
            "{err}"
        );
    }

    #[test]
    fn oversize_archives_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = vec![b'a'; 64 * 1024];
        let z = zip_of(&[("a.bin", &big), ("b.bin", &big)]);
        let small = UnpackLimits {
            max_bytes: 100 * 1024,
            max_entries: 10,
        };
        let err =
            install(&z, &dir.path().join("x").join(DEPLOY_NAME), false, small).expect_err("refuse");
        assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("more than 102400 bytes"), "{err}");

        let many: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("f{i}"), vec![])).collect();
        let refs: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let err = install(
            &zip_of(&refs),
            &dir.path().join("y").join(DEPLOY_NAME),
            false,
            small,
        )
        .expect_err("refuse");
        assert!(
            matches!(
                err,
                UnpackError::TooManyEntries {
                    count: 20,
                    limit: 10
                }
            ),
            "{err}"
        );

        let err = install(
            &big,
            &dir.path().join("z").join(DEPLOY_NAME),
            false,
            UnpackLimits {
                max_bytes: 10,
                max_entries: 1,
            },
        )
        .expect_err("refuse single file");
        assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn lying_declared_sizes_do_not_bypass_the_budget() {
        // Declared sizes pass the pre-check only if they are honest; the copy loop enforces the
        // budget on real output too. Simulate with a budget just under the real size.
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![b'z'; 10_000];
        let z = zip_of(&[("z", &data)]);
        let err = unzip(
            &z,
            &dir.path().join("d"),
            UnpackLimits {
                max_bytes: 9_999,
                max_entries: 5,
            },
        )
        .expect_err("refuse");
        assert!(matches!(err, UnpackError::TooLarge { .. }));
    }

    fn package(deployment: fission_core::resources::Archive, status: &str) -> Package {
        let mut p = Package::new(
            "default",
            "pkg",
            fission_core::resources::PackageSpec {
                deployment,
                ..Default::default()
            },
        );
        p.metadata.resource_version = "42".to_owned();
        p.status.buildstatus = status.to_owned();
        p
    }

    #[tokio::test]
    async fn url_archives_come_from_the_archive_store_and_are_checksummed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archives = ArchiveStore::open(dir.path().join("archives")).expect("archives");
        let z = zip_of(&[("main.py", b"def main(): return 1\n")]);
        let id = archives.put(&z).expect("put");
        let cache = PackageCache::new(
            dir.path().join("cache"),
            Arc::new(archives.clone()),
            limits(),
            &fission_fetch::FetchConfig::default(),
        );
        let url = format!("http://storagesvc.fission/v1/archive?id={id}");
        let mut archive = fission_core::resources::Archive {
            archive_type: ARCHIVE_URL.to_owned(),
            url,
            ..Default::default()
        };
        archive.checksum.checksum_type = "sha256".to_owned();
        archive.checksum.sum = id.clone();

        let path = cache
            .deployment(&package(archive.clone(), "succeeded"), false)
            .await
            .expect("deployment");
        assert_eq!(path, dir.path().join("cache/default/pkg/42/deployarchive"));
        assert!(path.join("main.py").is_file());

        // A different package with a wrong checksum: refused.
        let mut wrong = archive.clone();
        wrong.checksum.sum = "0".repeat(64);
        let mut pkg = package(wrong, "succeeded");
        pkg.metadata.name = "other".to_owned();
        let err = cache.deployment(&pkg, false).await.expect_err("checksum");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");

        let other = fission_core::resources::Archive {
            archive_type: ARCHIVE_URL.to_owned(),
            url: "ftp://example.com/code.zip".to_owned(),
            ..Default::default()
        };
        let mut pkg = package(other, "none");
        pkg.metadata.name = "ftp".to_owned();
        let err = cache
            .deployment(&pkg, false)
            .await
            .expect_err("foreign url");
        assert!(matches!(err, PackageError::UnsupportedUrl { .. }), "{err}");
    }

    fn remote_archive(url: String, sum: &str) -> fission_core::resources::Archive {
        let mut a = fission_core::resources::Archive {
            archive_type: ARCHIVE_URL.to_owned(),
            url,
            ..Default::default()
        };
        if !sum.is_empty() {
            a.checksum.checksum_type = "sha256".to_owned();
            a.checksum.sum = sum.to_owned();
        }
        a
    }

    fn remote_cache(dir: &Path, server: &HttpsServer) -> PackageCache {
        let archives = ArchiveStore::open(dir.join("archives")).expect("archives");
        PackageCache::new(
            dir.join("cache"),
            Arc::new(archives),
            limits(),
            &fission_fetch::FetchConfig {
                extra_ca_cert: Some(server.ca_cert_file().to_owned()),
                ..Default::default()
            },
        )
    }

    #[tokio::test]
    async fn https_archives_are_downloaded_verified_and_fetched_once_per_checksum() {
        let server = HttpsServer::start();
        let z = zip_of(&[("index.js", b"module.exports = 1")]);
        server.set("/code.zip", Reply::ok(z.clone()));
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = remote_cache(dir.path(), &server);
        let url = server.url("/code.zip");
        let sum = fission_fetch::sha256_hex(&z);

        let path = cache
            .deployment(&package(remote_archive(url.clone(), &sum), "none"), false)
            .await
            .expect("deployment");
        assert_eq!(
            fs::read_to_string(path.join("index.js")).expect("read"),
            "module.exports = 1"
        );
        // Another package version with the same archive: served from the checksum cache.
        let mut next = package(remote_archive(url.clone(), &sum), "none");
        next.metadata.resource_version = "43".to_owned();
        let path = cache.deployment(&next, false).await.expect("deployment");
        assert!(path.ends_with("43/deployarchive"), "{}", path.display());
        assert_eq!(server.hits("/code.zip"), 1, "downloaded once");

        // `--insecure` (no checksum): taken as it comes.
        server.set("/single.js", Reply::ok(b"module.exports = 2".to_vec()));
        let mut insecure = package(remote_archive(server.url("/single.js"), ""), "none");
        insecure.metadata.name = "insecure".to_owned();
        let path = cache.deployment(&insecure, false).await.expect("insecure");
        assert_eq!(fs::read(&path).expect("read"), b"module.exports = 2");
    }

    #[tokio::test]
    async fn a_checksum_mismatch_is_refused_and_the_previous_deployment_keeps_serving() {
        let server = HttpsServer::start();
        server.set("/v1.js", Reply::ok(b"v1".to_vec()));
        server.set("/v2.js", Reply::ok(b"v2 tampered".to_vec()));
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = remote_cache(dir.path(), &server);

        // Never served before: the mismatch is the answer.
        let bad = remote_archive(server.url("/v2.js"), &fission_fetch::sha256_hex(b"v2"));
        let mut fresh = package(bad.clone(), "none");
        fresh.metadata.name = "fresh".to_owned();
        let err = cache.deployment(&fresh, false).await.expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            format!(
                "package 'fresh': checksum mismatch for {}: expected sha256 {}, got {}",
                server.url("/v2.js"),
                fission_fetch::sha256_hex(b"v2"),
                fission_fetch::sha256_hex(b"v2 tampered")
            )
        );

        let mut v1 = package(
            remote_archive(server.url("/v1.js"), &fission_fetch::sha256_hex(b"v1")),
            "none",
        );
        v1.metadata.uid = "uid-1".to_owned();
        let good = cache.deployment(&v1, false).await.expect("v1");
        let mut v2 = package(bad, "none");
        v2.metadata.uid = "uid-1".to_owned();
        v2.metadata.resource_version = "50".to_owned();
        let path = cache.deployment(&v2, false).await.expect("previous");
        assert_eq!(path, good);
        assert_eq!(fs::read(&path).expect("read"), b"v1");
        let hits = server.hits("/v2.js");
        // Asked again soon after (the next cold start): not downloaded again.
        assert_eq!(cache.deployment(&v2, false).await.expect("previous"), good);
        assert_eq!(
            server.hits("/v2.js"),
            hits,
            "a refused version is not refetched at once"
        );
        assert!(
            dir.path()
                .join("cache/default/pkg/50")
                .symlink_metadata()
                .is_err(),
            "nothing of the refused version is installed"
        );
    }

    #[tokio::test]
    async fn only_built_packages_are_deployed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archives = ArchiveStore::open(dir.path().join("a")).expect("archives");
        let cache = PackageCache::new(
            dir.path().join("cache"),
            Arc::new(archives.clone()),
            limits(),
            &fission_fetch::FetchConfig::default(),
        );
        for status in ["pending", "running", "failed"] {
            let mut never = package(fission_core::resources::Archive::default(), status);
            never.metadata.name = format!("never-{status}");
            let err = cache
                .deployment(&never, false)
                .await
                .expect_err("never built");
            assert!(
                err.to_string()
                    .contains(&format!("build status was \"{status}\"")),
                "{err}"
            );
            // A rebuild in progress or failed keeps serving the last good deployment.
            cache
                .deployment(
                    &package(
                        fission_core::resources::Archive::literal(b"x".to_vec()),
                        status,
                    ),
                    false,
                )
                .await
                .expect("last good build is served");
        }
        // No status yet: deployable when it has a deployment archive (Fission's "none").
        cache
            .deployment(
                &package(fission_core::resources::Archive::literal(b"x".to_vec()), ""),
                false,
            )
            .await
            .expect("deployable");
        let err = cache
            .deployment(&package(Default::default(), "none"), false)
            .await
            .expect_err("empty");
        assert!(matches!(err, PackageError::NoDeployment(_)), "{err}");
    }

    #[tokio::test]
    async fn a_package_rebuilding_without_a_deployment_serves_its_previous_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archives = ArchiveStore::open(dir.path().join("a")).expect("archives");
        let cache = PackageCache::new(
            dir.path().join("cache"),
            Arc::new(archives),
            limits(),
            &fission_fetch::FetchConfig::default(),
        );
        let mut v1 = package(
            fission_core::resources::Archive::literal(b"v1".to_vec()),
            "succeeded",
        );
        v1.metadata.uid = "uid-1".to_owned();
        let good = cache.deployment(&v1, false).await.expect("v1");
        // `spec apply` of changed source: new version, no deployment until the build is in.
        for status in ["pending", "running", "failed"] {
            let mut rebuilding = package(fission_core::resources::Archive::default(), status);
            rebuilding.metadata.uid = "uid-1".to_owned();
            rebuilding.metadata.resource_version = "43".to_owned();
            let path = cache
                .deployment(&rebuilding, false)
                .await
                .expect("the previous deployment");
            assert_eq!(path, good, "{status}");
        }
        // Another package (another uid) never built: nothing to serve.
        let mut other = package(fission_core::resources::Archive::default(), "running");
        other.metadata.uid = "uid-2".to_owned();
        let err = cache
            .deployment(&other, false)
            .await
            .expect_err("not built");
        assert!(matches!(err, PackageError::NotBuilt { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_single_file_keeps_the_users_name_and_a_zip_is_still_deployarchive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archives = ArchiveStore::open(dir.path().join("a")).expect("archives");
        let cache = PackageCache::new(
            dir.path().join("cache"),
            Arc::new(archives),
            limits(),
            &fission_fetch::FetchConfig::default(),
        );
        let named = |archive, rv: &str, file: &str| {
            let mut p = package(archive, "succeeded");
            p.metadata.resource_version = rv.to_owned();
            p.metadata.annotations = Some(
                [(CODE_FILENAME_ANNOTATION.to_owned(), file.to_owned())]
                    .into_iter()
                    .collect(),
            );
            p
        };
        let file = named(
            fission_core::resources::Archive::literal(b"module.exports = 1".to_vec()),
            "1",
            "hello.js",
        );
        let path = cache.deployment(&file, false).await.expect("file");
        assert_eq!(path, dir.path().join("cache/default/pkg/1/hello.js"));
        assert_eq!(fs::read(&path).expect("read"), b"module.exports = 1");
        // Installed once: asked again, the same path without reinstalling.
        assert_eq!(cache.deployment(&file, false).await.expect("again"), path);

        let zip = named(
            fission_core::resources::Archive::literal(zip_of(&[("a.js", b"1")])),
            "2",
            "app.zip",
        );
        let path = cache.deployment(&zip, false).await.expect("zip");
        assert_eq!(path, dir.path().join("cache/default/pkg/2/deployarchive"));
        assert!(path.join("a.js").is_file());

        // A name that is not one path component is ignored.
        let sneaky = named(
            fission_core::resources::Archive::literal(b"x".to_vec()),
            "3",
            "../../escape.js",
        );
        let path = cache.deployment(&sneaky, false).await.expect("sneaky");
        assert_eq!(path, dir.path().join("cache/default/pkg/3/deployarchive"));
    }

    #[tokio::test]
    async fn concurrent_first_calls_unpack_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archives = ArchiveStore::open(dir.path().join("a")).expect("archives");
        let cache = Arc::new(PackageCache::new(
            dir.path().join("cache"),
            Arc::new(archives),
            limits(),
            &fission_fetch::FetchConfig::default(),
        ));
        let pkg = package(
            fission_core::resources::Archive::literal(zip_of(&[("a.js", b"1")])),
            "succeeded",
        );
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                let pkg = pkg.clone();
                tokio::spawn(async move { cache.deployment(&pkg, false).await })
            })
            .collect();
        for c in calls {
            let path = c.await.expect("join").expect("deployment");
            assert!(path.join("a.js").is_file());
        }
        // Exactly the deployment: no leftover temporaries.
        let entries: Vec<_> = fs::read_dir(dir.path().join("cache/default/pkg/42"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from(DEPLOY_NAME)]);
    }

    #[test]
    fn concurrent_installs_of_the_same_target_both_succeed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("p").join(DEPLOY_NAME);
        let z = zip_of(&[("index.js", b"module.exports = 1")]);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| install(&z, &target, false, limits())))
                .collect();
            for h in handles {
                h.join().expect("thread").expect("install");
            }
        });
        assert_eq!(
            fs::read_to_string(target.join("index.js")).expect("read"),
            "module.exports = 1"
        );
    }
}
