//! Keeping the route table in step with the store.
//!
//! The loop lists everything once (`list_and_watch` gives a consistent snapshot plus the
//! changes after it), builds a table, then applies changes as they arrive. A burst of changes
//! that is already queued is applied in one go and costs one rebuild. If the feed reports that
//! this consumer fell behind (`Lagged`), or the feed fails or ends, the loop lists again: a
//! fresh snapshot is always correct, whatever was missed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fission_core::resources::{Function, HttpTrigger};
use fission_core::{
    AnyResource, DEFAULT_NAMESPACE, ResourceStore, StoreError, WatchEvent, WatchEventType,
};
use futures::{FutureExt as _, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::table::{RouteTable, SkippedTrigger};
use crate::{Error, Inner};

/// Most changes applied before a rebuild, so a never-ending burst still publishes tables.
const MAX_BATCH: usize = 1024;
/// Wait before listing again after a failure; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Key = (String, String);

fn key(meta: &fission_core::ObjectMeta) -> Key {
    let ns = if meta.namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        meta.namespace.as_str()
    };
    (ns.to_owned(), meta.name.clone())
}

/// The objects routes are made of.
#[derive(Default)]
struct Sources {
    functions: BTreeMap<Key, Function>,
    triggers: BTreeMap<Key, HttpTrigger>,
}

impl Sources {
    fn from_snapshot(objects: Vec<AnyResource>) -> Self {
        let mut s = Self::default();
        for obj in objects {
            s.upsert(obj);
        }
        s
    }

    /// Returns whether the object is one routes depend on.
    fn upsert(&mut self, obj: AnyResource) -> bool {
        match obj {
            AnyResource::Function(f) => {
                self.functions.insert(key(&f.metadata), f);
                true
            }
            AnyResource::HttpTrigger(t) => {
                self.triggers.insert(key(&t.metadata), t);
                true
            }
            _ => false,
        }
    }

    fn remove(&mut self, obj: &AnyResource) -> bool {
        match obj {
            AnyResource::Function(f) => self.functions.remove(&key(&f.metadata)).is_some(),
            AnyResource::HttpTrigger(t) => self.triggers.remove(&key(&t.metadata)).is_some(),
            _ => false,
        }
    }

    fn apply(&mut self, ev: WatchEvent) -> bool {
        match ev.event_type {
            WatchEventType::Added | WatchEventType::Modified => self.upsert(ev.object),
            WatchEventType::Deleted => self.remove(&ev.object),
        }
    }

    fn build(&self) -> RouteTable {
        RouteTable::build(self.functions.values(), self.triggers.values())
    }
}

/// Why following the feed stopped.
enum Relist {
    Shutdown,
    Lagged(u64),
    Failed(StoreError),
    Ended,
}

pub(crate) async fn run(
    inner: &Inner,
    store: Arc<dyn ResourceStore>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut backoff = MIN_BACKOFF;
    let mut synced_once = false;
    let mut reported = HashSet::new();
    loop {
        let listed = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = store.list_and_watch() => r,
        };
        let (objects, revision, mut feed) = match listed {
            Ok(listed) => listed,
            // At startup a failing store is a configuration problem the caller should see.
            Err(e) if !synced_once => return Err(Error::InitialSync(e)),
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis(), "listing routes failed; keeping the current table");
                if sleep_or_shutdown(backoff, &shutdown).await {
                    return Ok(());
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let mut sources = Sources::from_snapshot(objects);
        publish(inner, sources.build(), &mut reported);
        if !synced_once {
            info!(revision, "initial route table built");
        }
        synced_once = true;
        backoff = MIN_BACKOFF;
        let mut last_revision = revision;

        let why = loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => break Relist::Shutdown,
                n = feed.next() => n,
            };
            let mut changed = false;
            let mut stop = None;
            let mut item = next;
            let mut batch = 0;
            loop {
                match item {
                    None => {
                        stop = Some(Relist::Ended);
                        break;
                    }
                    Some(Err(StoreError::Lagged(n))) => {
                        stop = Some(Relist::Lagged(n));
                        break;
                    }
                    Some(Err(e)) => {
                        stop = Some(Relist::Failed(e));
                        break;
                    }
                    Some(Ok(ev)) => {
                        // The feed is strictly ordered; anything at or before what we have is
                        // a duplicate of the snapshot.
                        if ev.revision > last_revision {
                            last_revision = ev.revision;
                            changed |= sources.apply(ev);
                        }
                    }
                }
                batch += 1;
                if batch >= MAX_BATCH {
                    break;
                }
                // Take whatever is already queued without waiting.
                match feed.next().now_or_never() {
                    Some(n) => item = n,
                    None => break,
                }
            }
            if changed {
                publish(inner, sources.build(), &mut reported);
            }
            if let Some(why) = stop {
                break why;
            }
        };
        match why {
            Relist::Shutdown => return Ok(()),
            Relist::Lagged(n) => info!(
                missed = n,
                "route sync fell behind the change feed; listing again"
            ),
            Relist::Failed(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis(), "change feed failed; listing again");
                if sleep_or_shutdown(backoff, &shutdown).await {
                    return Ok(());
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Relist::Ended => {
                debug!("change feed ended; listing again");
                if sleep_or_shutdown(backoff, &shutdown).await {
                    return Ok(());
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Swap the table in and report triggers that are newly left out (each once, not on every
/// rebuild).
fn publish(inner: &Inner, table: RouteTable, reported: &mut HashSet<SkippedTrigger>) {
    let now: HashSet<SkippedTrigger> = table.skipped().iter().cloned().collect();
    for s in now.difference(reported) {
        if s.transient {
            debug!(trigger = %s.trigger, reason = %s.reason, "trigger not routed yet");
        } else {
            warn!(trigger = %s.trigger, reason = %s.reason, "trigger cannot be routed");
        }
    }
    *reported = now;
    debug!(
        routes = table.trigger_route_count(),
        skipped = table.skipped().len(),
        "route table updated"
    );
    inner.publish(table);
}

/// Returns true if shutdown came first.
async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}
