//! The one list-then-watch loop every component follows the store with (router, executor,
//! builder, triggers), in the spirit of kube-runtime's `watcher`.
//!
//! A [`Watcher`] yields [`Change::Listed`] with the complete current state first, then
//! [`Change::Applied`] for every change after it, in revision order and never twice. When the
//! feed is lost — the consumer fell behind (`Lagged`), the feed failed or ended — it lists
//! again and yields a fresh `Listed`: a consumer that rebuilds its view from each `Listed` is
//! always correct, whatever it missed. Failures after the first listing are retried with a
//! doubling backoff (100 ms to 5 s); only the first listing's failure is handed back, because
//! at startup a failing store is a configuration problem the caller should report.
#![deny(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use fission_core::{AnyResource, ResourceStore, StoreError, WatchEvent, WatchStream};
use futures::{FutureExt as _, StreamExt as _};
use tokio_util::sync::CancellationToken;

/// First pause before listing again after a failure.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between listing attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the store told the watcher.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a change lives briefly on the stack; boxing it would allocate once per event"
)]
pub enum Change {
    /// Every object of every kind at `revision`: the first listing, or a new one after the
    /// feed was lost. Replaces whatever the consumer knew.
    Listed {
        /// The objects.
        objects: Vec<AnyResource>,
        /// The store revision of the listing.
        revision: u64,
    },
    /// One change after the last listing or change.
    Applied(WatchEvent),
}

enum State {
    /// List next, after pausing this long.
    List { pause: Duration },
    /// Following the feed of a listing.
    Watching(WatchStream),
}

/// Follows a store: see the crate docs.
pub struct Watcher {
    store: Arc<dyn ResourceStore>,
    state: State,
    /// Revision of the newest listing or change handed out (feed items at or below it are
    /// duplicates of what the consumer has).
    revision: u64,
    listed_once: bool,
    /// The pause after the next failure.
    backoff: Duration,
    /// What the logs call the consumer.
    name: &'static str,
}

impl Watcher {
    /// A watcher of `store`; `name` names the consumer in log lines ("route sync").
    pub fn new(store: Arc<dyn ResourceStore>, name: &'static str) -> Self {
        Self {
            store,
            state: State::List {
                pause: Duration::ZERO,
            },
            revision: 0,
            listed_once: false,
            backoff: MIN_BACKOFF,
            name,
        }
    }

    /// The next change; `None` once `shutdown` is cancelled. `Some(Err(_))` only when the very
    /// first listing fails (later failures are retried here).
    pub async fn next(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Option<Result<Change, StoreError>> {
        loop {
            match &mut self.state {
                State::List { pause } => {
                    let pause = *pause;
                    if !pause.is_zero() {
                        tokio::select! {
                            () = shutdown.cancelled() => return None,
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                    let listed = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        r = self.store.list_and_watch() => r,
                    };
                    match listed {
                        Ok((objects, revision, feed)) => {
                            self.state = State::Watching(feed);
                            self.revision = revision;
                            self.listed_once = true;
                            self.backoff = MIN_BACKOFF;
                            return Some(Ok(Change::Listed { objects, revision }));
                        }
                        Err(e) if !self.listed_once => {
                            self.state = State::List {
                                pause: self.next_pause(),
                            };
                            return Some(Err(e));
                        }
                        Err(e) => {
                            let pause = self.next_pause();
                            tracing::warn!(consumer = self.name, error = %e, retry_in_ms = pause.as_millis() as u64, "cannot list the store; retrying");
                            self.state = State::List { pause };
                        }
                    }
                }
                State::Watching(feed) => {
                    let item = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        item = feed.next() => item,
                    };
                    if let Some(change) = self.take(item) {
                        return Some(Ok(change));
                    }
                }
            }
        }
    }

    /// A change that is already queued, without waiting (to apply a burst in one go).
    pub fn next_ready(&mut self) -> Option<Change> {
        loop {
            let State::Watching(feed) = &mut self.state else {
                return None;
            };
            let item = feed.next().now_or_never()?;
            if let Some(change) = self.take(item) {
                return Some(change);
            }
            if !matches!(self.state, State::Watching(_)) {
                return None;
            }
        }
    }

    /// Turn one feed item into a change to hand out, or into the next state.
    fn take(&mut self, item: Option<Result<WatchEvent, StoreError>>) -> Option<Change> {
        match item {
            Some(Ok(event)) if event.revision <= self.revision => None,
            Some(Ok(event)) => {
                self.revision = event.revision;
                Some(Change::Applied(event))
            }
            Some(Err(StoreError::Lagged(missed))) => {
                tracing::info!(
                    consumer = self.name,
                    missed,
                    "fell behind the change feed; listing again"
                );
                self.state = State::List {
                    pause: Duration::ZERO,
                };
                None
            }
            Some(Err(e)) => {
                let pause = self.next_pause();
                tracing::warn!(consumer = self.name, error = %e, retry_in_ms = pause.as_millis() as u64, "change feed failed; listing again");
                self.state = State::List { pause };
                None
            }
            None => {
                let pause = self.next_pause();
                tracing::debug!(consumer = self.name, "change feed ended; listing again");
                self.state = State::List { pause };
                None
            }
        }
    }

    fn next_pause(&mut self) -> Duration {
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        pause
    }
}
