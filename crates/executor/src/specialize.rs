//! Telling a generic instance which function to load: Fission's specialize call, made directly
//! to the runtime (there is no fetcher sidecar — the executor has already put the code on disk).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fission_core::ObjectMeta;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;

/// Most of a runtime's error body kept for the caller.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Fission's `FunctionLoadRequest` (the key casing is the wire format).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadRequest<'a> {
    /// Where the code is, as the runtime sees it.
    pub filepath: String,
    /// The entrypoint (`spec.package.functionName`).
    #[serde(rename = "functionName")]
    pub function_name: &'a str,
    /// Always empty.
    pub url: &'static str,
    /// The function's metadata.
    #[serde(rename = "FunctionMetadata")]
    pub function_metadata: &'a ObjectMeta,
    /// The environment's interface version.
    #[serde(rename = "envVersion")]
    pub env_version: i32,
}

/// Why specialization failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpecializeError {
    /// The runtime answered with an error; `body` is what it said.
    #[error("{body}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Its response body (trimmed).
        body: String,
    },
    /// No answer in time.
    #[error("the runtime did not answer the specialize request within {0:?}")]
    Timeout(Duration),
    /// Connection-level failure (the runtime died, reset the connection, …).
    #[error("cannot reach the runtime: {0}")]
    Transport(String),
}

/// A connection to a runtime, made ahead of the load request (see [`connect`]).
pub(crate) struct Connection {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Connect to the runtime at `addr`. Done while the executor is still putting the code in
/// place: an idle runtime needs a while to wake up and accept (Python also starts a handler
/// thread), and that time then overlaps with the file work instead of adding to it.
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Connection, SpecializeError> {
    let transport = |e: &dyn std::fmt::Display| SpecializeError::Transport(e.to_string());
    let connected = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| transport(&e))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport(&e))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection {
            addr,
            sender,
            driver,
        })
    };
    match tokio::time::timeout(timeout, connected).await {
        Ok(r) => r,
        Err(_) => Err(SpecializeError::Timeout(timeout)),
    }
}

/// POST the load request: `/v2/specialize` with JSON for env version ≥ 2, `/specialize` with
/// an empty body for version 1. Any 2xx is success (node answers 202, python 200).
pub(crate) async fn specialize(
    conn: Connection,
    load: &LoadRequest<'_>,
    timeout: Duration,
) -> Result<(), SpecializeError> {
    match tokio::time::timeout(timeout, post(conn, load)).await {
        Ok(r) => r,
        Err(_) => Err(SpecializeError::Timeout(timeout)),
    }
}

async fn post(mut conn: Connection, load: &LoadRequest<'_>) -> Result<(), SpecializeError> {
    let transport = |e: &dyn std::fmt::Display| SpecializeError::Transport(e.to_string());
    let (path, content_type, body) = if load.env_version >= 2 {
        let json = serde_json::to_vec(load).map_err(|e| transport(&e))?;
        ("/v2/specialize", "application/json", Bytes::from(json))
    } else {
        ("/specialize", "text/plain", Bytes::new())
    };
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, conn.addr.to_string())
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header(hyper::header::CONNECTION, "close")
        .body(Full::new(body))
        .map_err(|e| transport(&e))?;
    let response = conn
        .sender
        .send_request(request)
        .await
        .map_err(|e| transport(&e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = match Limited::new(response.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
    {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_owned(),
        Err(e) => format!("(error body unreadable: {e})"),
    };
    let body = if body.is_empty() {
        format!("the runtime answered {status} with an empty body")
    } else {
        body
    };
    Err(SpecializeError::Rejected {
        status: status.as_u16(),
        body,
    })
}
