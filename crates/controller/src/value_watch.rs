//! Secrets and config maps can change without passing through this controller — on a cluster,
//! `kubectl` writes them directly. Following the change feed re-pins the functions that use
//! them, exactly as the controller's own update handler does.

use std::sync::Arc;
use std::time::Duration;

use fission_core::{ResourceKind, ResourceStore, WatchEventType};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

/// Wait before listing again after the feed failed.
const RETRY: Duration = Duration::from_secs(1);

/// Until `shutdown`: for every change to a Secret or ConfigMap on the feed, touch the functions
/// using it so their instances retire and new calls read the new values. A change already made
/// through the controller produces the same stamp, so the second touch changes nothing.
pub async fn follow_value_changes(store: Arc<dyn ResourceStore>, shutdown: CancellationToken) {
    loop {
        let feed = tokio::select! {
            () = shutdown.cancelled() => return,
            f = store.list_and_watch() => f,
        };
        let mut feed = match feed {
            Ok((_, _, feed)) => feed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow secret and config map changes; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        loop {
            let ev = tokio::select! {
                () = shutdown.cancelled() => return,
                ev = feed.next() => ev,
            };
            let ev = match ev {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "value change feed ended; listing again");
                    break;
                }
                Some(Ok(ev)) => ev,
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
}
