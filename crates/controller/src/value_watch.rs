//! Secrets and config maps can change without passing through this controller — on a cluster,
//! `kubectl` writes them directly. Following the store re-pins the functions that use them,
//! exactly as the controller's own update handler does.

use std::sync::Arc;

use fission_core::{ResourceKind, ResourceStore, WatchEventType};
use fission_watcher::{Change, Watcher};
use tokio_util::sync::CancellationToken;

/// Until `shutdown`: for every change to a Secret or ConfigMap, touch the functions using it so
/// their instances retire and new calls read the new values. A change already made through the
/// controller produces the same stamp, so the second touch changes nothing.
pub async fn follow_value_changes(store: Arc<dyn ResourceStore>, shutdown: CancellationToken) {
    let mut watcher = Watcher::new(store.clone(), "secret and config map re-pin");
    while let Some(next) = watcher.next(&shutdown).await {
        let ev = match next {
            Ok(Change::Applied(ev)) => ev,
            Ok(Change::Listed { .. }) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow secret and config map changes; retrying");
                continue;
            }
        };
        let kind = ev.object.kind();
        // A new secret has no stale copies anywhere; only changes and deletions matter.
        if ev.event_type == WatchEventType::Added
            || !matches!(kind, ResourceKind::Secret | ResourceKind::ConfigMap)
        {
            continue;
        }
        let m = ev.object.meta();
        if let Err(e) = crate::references::touch_users(
            store.as_ref(),
            kind,
            &m.namespace,
            &m.name,
            &m.resource_version,
        )
        .await
        {
            tracing::warn!(kind = %kind, namespace = %m.namespace, name = %m.name, error = %e, "cannot re-pin the functions using it");
        }
    }
}
