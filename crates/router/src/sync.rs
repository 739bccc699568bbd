//! Keeping the route table in step with the store.
//!
//! The [`Watcher`] hands over a full listing (the first, and a new one whenever the feed was
//! lost) and then every change after it; a listing rebuilds the table from scratch, changes
//! are applied as they arrive. A burst of changes that is already queued is applied in one go
//! and costs one rebuild.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use fission_core::resources::{Function, HttpTrigger};
use fission_core::{AnyResource, DEFAULT_NAMESPACE, ResourceStore, WatchEvent, WatchEventType};
use fission_watcher::{Change, Watcher};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::table::{RouteTable, SkippedTrigger};
use crate::{Error, Inner};

/// Most changes applied before a rebuild, so a never-ending burst still publishes tables.
const MAX_BATCH: usize = 1024;

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

pub(crate) async fn run(
    inner: &Inner,
    store: Arc<dyn ResourceStore>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut watcher = Watcher::new(store, "route sync");
    let mut sources = Sources::default();
    let mut reported = HashSet::new();
    let mut synced_once = false;
    while let Some(next) = watcher.next(&shutdown).await {
        let mut changed = match next {
            // At startup a failing store is a configuration problem the caller should see.
            Err(e) => return Err(Error::InitialSync(e)),
            Ok(Change::Listed { objects, revision }) => {
                if !synced_once {
                    info!(revision, "initial route table built");
                }
                synced_once = true;
                sources = Sources::from_snapshot(objects);
                true
            }
            Ok(Change::Applied(ev)) => sources.apply(ev),
        };
        // Apply whatever is already queued in one go: a burst costs one rebuild.
        for _ in 1..MAX_BATCH {
            match watcher.next_ready() {
                Some(Change::Applied(ev)) => changed |= sources.apply(ev),
                Some(Change::Listed { objects, .. }) => {
                    sources = Sources::from_snapshot(objects);
                    changed = true;
                }
                None => break,
            }
        }
        if changed {
            publish(inner, sources.build(), &mut reported);
        }
    }
    Ok(())
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
