//! The access log: one `info` line per request on the target [`TARGET`], with method, path,
//! function, status, duration (until the response starts), whether the call was a cold start,
//! and the instance that served it. `RUST_LOG=info,fission_router::access=off` turns it off.
//!
//! Nothing is captured unless the target is enabled ([`enabled`] is a cached callsite check),
//! so the request path allocates nothing for it when the log is off.

use std::sync::Arc;

use http::{Method, Uri};
use tokio::time::Instant;

/// The tracing target of access lines.
pub const TARGET: &str = "fission_router::access";

/// Whether access lines are wanted.
#[inline]
pub(crate) fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// What the proxy learnt about a function call, handed to the line through the response's
/// extensions (only when the log is on).
#[derive(Debug, Clone)]
pub(crate) struct Served {
    /// `namespace/name`.
    pub(crate) function: Arc<str>,
    /// The call specialized an instance.
    pub(crate) cold: bool,
    /// The instance that answered; `None` when none was had (overload, timeout).
    pub(crate) instance: Option<u64>,
}

/// A request seen while the log is on.
pub(crate) struct Pending {
    method: Method,
    uri: Uri,
    started: Instant,
}

impl Pending {
    /// Capture what the line needs before the request is consumed; `None` when off.
    pub(crate) fn start(method: &Method, uri: &Uri) -> Option<Self> {
        enabled().then(|| Self {
            method: method.clone(),
            // `Uri` shares its bytes: the clone copies no path.
            uri: uri.clone(),
            started: Instant::now(),
        })
    }

    /// Write the line for the response's `status`.
    pub(crate) fn finish(self, status: u16, served: Option<&Served>) {
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let path = self.uri.path();
        match served {
            Some(s) => tracing::info!(
                target: TARGET,
                method = %self.method,
                path = %path,
                function = %s.function,
                status,
                duration_ms = format_args!("{duration_ms:.1}"),
                start = s
                    .instance
                    .map(|_| tracing::field::display(if s.cold { "cold" } else { "warm" })),
                instance = s.instance,
                "request"
            ),
            None => tracing::info!(
                target: TARGET,
                method = %self.method,
                path = %path,
                status,
                duration_ms = format_args!("{duration_ms:.1}"),
                "request"
            ),
        }
    }
}
