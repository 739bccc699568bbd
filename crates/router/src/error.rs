//! Why the router could not relay a call, by source. Every failure of the proxy path is one of
//! these; `respond::proxy_error` is the one place that turns them into responses.

use std::time::Duration;

use fission_core::ExecutorError;

/// A failure on the proxy path.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request body is larger than the router accepts.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
        /// What the client declared, if it did.
        content_length: Option<u64>,
    },
    /// Reading the client's body failed before anything reached the function.
    #[error("failed to read the request body: {0}")]
    ClientBody(String),
    /// The executor could not hand out an instance.
    #[error(transparent)]
    Acquire(#[from] ExecutorError),
    /// No instance became available within the function's timeout.
    #[error("no instance became available within the function timeout of {}s", .0.as_secs())]
    AcquireTimeout(Duration),
    /// The instance could not be connected to: the request never reached the function.
    #[error("instance {addr}: {detail}")]
    Connect {
        /// The instance's address.
        addr: std::net::SocketAddr,
        /// What failed.
        detail: String,
    },
    /// The request was sent (or may have been) and no valid response came back.
    #[error("{}", match .cause { Some(c) => format!("instance {addr} exited: {c}"), None => format!("instance {addr}: {detail}") })]
    Upstream {
        /// The instance's address.
        addr: std::net::SocketAddr,
        /// What failed on the connection.
        detail: String,
        /// Why the instance died, when it did (out of memory, …).
        cause: Option<String>,
    },
    /// The function did not answer within its `functionTimeout`.
    #[error("no response from function before timeout")]
    FunctionTimeout,
    /// A state the router should never be in.
    #[error("{0}")]
    Internal(String),
}

impl ProxyError {
    /// Whether the call may be sent again to another instance: only when the function cannot
    /// have received it. A request that reached an instance is never repeated — the function
    /// may have acted on it (a POST charging a card twice is worse than a 502).
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_before_the_request_reached_an_instance_are_retryable() {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert!(
            ProxyError::Connect {
                addr,
                detail: "refused".into()
            }
            .retryable()
        );
        assert!(
            !ProxyError::Upstream {
                addr,
                detail: "reset".into(),
                cause: None
            }
            .retryable()
        );
        assert!(!ProxyError::FunctionTimeout.retryable());
        assert!(!ProxyError::Acquire(ExecutorError::ShuttingDown).retryable());
    }

    #[test]
    fn an_instance_that_died_is_named_with_its_cause() {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let e = ProxyError::Upstream {
            addr,
            detail: "reset".into(),
            cause: Some("out of memory".into()),
        };
        assert_eq!(e.to_string(), "instance 127.0.0.1:1 exited: out of memory");
    }
}
