//! The async-invocation port: the router hands a call marked `X-Fission-Async: true` to a
//! durable queue and answers 202 with the job id; a worker runs it later.

/// Request header asking for a background call (`true`).
pub const ASYNC_HEADER: &str = "x-fission-async";
/// Response header carrying the id of the queued job.
pub const ASYNC_ID_HEADER: &str = "x-fission-async-id";
/// Request header naming a URL the job's outcome is POSTed to.
pub const CALLBACK_HEADER: &str = "x-fission-callback-url";

/// A call to run in the background, as the router received it.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query, as sent to the router (`/fission-function/hello?x=1`, `/my/route`).
    pub uri: String,
    /// Request headers, the async ones removed.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Where to POST the outcome, if anywhere.
    pub callback: Option<String>,
}

/// Why a call could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum AsyncCallError {
    /// The queue could not record it durably.
    #[error("cannot queue the call: {0}")]
    Queue(String),
}

/// A durable queue of background calls.
#[async_trait::async_trait]
pub trait AsyncCalls: Send + Sync + 'static {
    /// Record `req` durably and return its job id.
    async fn enqueue(&self, req: AsyncRequest) -> Result<String, AsyncCallError>;
}
