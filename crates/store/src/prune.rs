//! Pruning of archives that no package references any more (Fission's storagesvc pruner).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use fission_core::{AnyResource, ArchiveStorage, ResourceKind, ResourceStore, StoreError};

use crate::archive::{ArchiveError, archive_id_from_url};

/// What one pruning pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Archives removed.
    pub removed: Vec<String>,
    /// Archives still referenced by a package.
    pub kept: usize,
}

/// Why pruning stopped.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// Packages could not be listed: nothing was removed.
    #[error("cannot list packages: {0}")]
    Store(#[from] StoreError),
    /// The archive store failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// Remove every archive no package's source or deployment points at. Archives younger than
/// `min_age` are kept: an upload is referenced only once the package that uses it is created.
pub async fn prune_unreferenced(
    store: &dyn ResourceStore,
    archives: &dyn ArchiveStorage,
    min_age: Duration,
) -> Result<PruneReport, PruneError> {
    let mut referenced = HashSet::new();
    for obj in store.list(ResourceKind::Package, None).await? {
        if let AnyResource::Package(p) = obj {
            for a in [&p.spec.source, &p.spec.deployment] {
                if let Some(id) = archive_id_from_url(&a.url) {
                    referenced.insert(id.to_owned());
                }
            }
        }
    }
    let mut report = PruneReport::default();
    for archive in archives.list().await? {
        if referenced.contains(&archive.id) {
            report.kept += 1;
            continue;
        }
        let age = SystemTime::now()
            .duration_since(archive.modified)
            .unwrap_or_default();
        if age < min_age {
            continue;
        }
        match archives.delete(&archive.id).await {
            Ok(()) | Err(ArchiveError::NotFound(_)) => report.removed.push(archive.id),
            Err(e) => return Err(PruneError::Archive(e)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedbStore;
    use crate::archive::{ArchiveStore, STORAGE_URL_PREFIX};
    use fission_core::resources::{Archive, EnvironmentSpec, PackageSpec, Runtime};
    use fission_core::{Object, ObjectReference};

    #[tokio::test]
    async fn removes_only_archives_no_package_uses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("db")).expect("store");
        let archives = ArchiveStore::open(dir.path().join("archives")).expect("archives");
        let used = archives.put(b"used").expect("put");
        let orphan = archives.put(b"orphan").expect("put");
        let mut env = Object::new(
            "default",
            "e",
            EnvironmentSpec {
                runtime: Runtime {
                    image: "fission/node-env".into(),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        env.normalize();
        store
            .create(AnyResource::Environment(env))
            .await
            .expect("env");
        let deployment = Archive {
            archive_type: "url".into(),
            url: format!("{STORAGE_URL_PREFIX}{used}"),
            ..Default::default()
        };
        let mut p = Object::new(
            "default",
            "p",
            PackageSpec {
                environment: ObjectReference {
                    namespace: "default".into(),
                    name: "e".into(),
                },
                deployment,
                ..Default::default()
            },
        );
        p.normalize();
        store.create(AnyResource::Package(p)).await.expect("pkg");

        let young = prune_unreferenced(&store, &archives, Duration::from_secs(3600))
            .await
            .expect("prune");
        assert!(young.removed.is_empty(), "fresh uploads are kept");
        let report = prune_unreferenced(&store, &archives, Duration::ZERO)
            .await
            .expect("prune");
        assert_eq!(report.removed, vec![orphan.clone()]);
        assert_eq!(report.kept, 1);
        assert!(archives.contains(&used));
        assert!(!archives.contains(&orphan));
    }
}
