//! The call-count port: what the router has seen of a function's calls, for components that
//! judge a function by its traffic (the canary manager).

/// Calls to one function since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Every call answered (or given up on).
    pub total: u64,
    /// Calls answered with a status ≥ 400 (Fission's `fission_function_errors_total`).
    pub failed: u64,
}

impl CallCounts {
    /// The calls between `earlier` and `self`.
    pub fn since(self, earlier: CallCounts) -> CallCounts {
        CallCounts {
            total: self.total.saturating_sub(earlier.total),
            failed: self.failed.saturating_sub(earlier.failed),
        }
    }

    /// Failed calls as a percentage of all, `None` without calls.
    pub fn failure_percent(self) -> Option<f64> {
        (self.total > 0).then(|| self.failed as f64 * 100.0 / self.total as f64)
    }
}

/// Reads call counts (the router implements it from its own counters).
pub trait CallCounter: Send + Sync + 'static {
    /// Calls to `namespace/function` so far.
    fn calls(&self, namespace: &str, function: &str) -> CallCounts;
}
