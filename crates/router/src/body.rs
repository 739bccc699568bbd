//! Body types on both sides of the proxy.
//!
//! Both are small enums rather than boxed trait objects: the proxy never needs more than
//! "nothing", "these bytes" or "stream that other body", and an enum keeps the hot path free of
//! allocations and dynamic dispatch.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use fission_core::InstanceLease;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::upstream::UpstreamConn;

/// Errors carried by bodies.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

// === RouterBody ===

/// The body of every response the router sends to a client.
#[derive(Debug)]
pub struct RouterBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A synthetic response: at most one chunk.
    Full(Option<Bytes>),
    /// A function's response, streamed; holds the instance lease until the body ends, and the
    /// connection it arrives on, which goes back to the pool once the body has been read.
    Upstream {
        inner: Incoming,
        lease: Option<InstanceLease>,
        conn: Option<UpstreamConn>,
    },
}

impl RouterBody {
    /// No body.
    pub(crate) fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    /// These bytes.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// A function's response body. The lease is released as soon as the body has been read
    /// to its end (not when the client connection goes away later), and marked broken if the
    /// instance fails mid-body.
    pub(crate) fn upstream(inner: Incoming, lease: InstanceLease, conn: UpstreamConn) -> Self {
        // Nothing to read (no body, HEAD, 204, 304): the connection is free already.
        let conn = if inner.is_end_stream() {
            conn.release();
            None
        } else {
            Some(conn)
        };
        Self {
            kind: Kind::Upstream {
                inner,
                lease: Some(lease),
                conn,
            },
        }
    }
}

impl Body for RouterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { inner, lease, conn } => {
                match ready!(Pin::new(&mut *inner).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        // hyper may not poll again after the last frame.
                        if inner.is_end_stream()
                            && let Some(c) = conn.take()
                        {
                            c.release();
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => {
                        if let Some(mut l) = lease.take() {
                            l.mark_broken();
                        }
                        conn.take(); // unusable: closed with it
                        Poll::Ready(Some(Err(e.into())))
                    }
                    None => {
                        lease.take();
                        if let Some(c) = conn.take() {
                            c.release();
                        }
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

// === UpstreamBody ===

/// What went wrong with a streamed request body, seen from the proxy after the upstream call
/// failed (the body error itself is swallowed by the client).
#[derive(Debug, Default)]
pub(crate) struct BodyState {
    exceeded: AtomicBool,
    client_failed: AtomicBool,
}

impl BodyState {
    /// The client sent more than the limit.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Reading from the client failed (it went away mid-body).
    pub(crate) fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Relaxed)
    }
}

/// The body of a request sent to a function.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// Nothing, or a buffered copy (cheap to clone for a retry).
    Full(Option<Bytes>),
    /// The client's body streamed through, with the size limit enforced as it flows.
    Streaming {
        inner: Incoming,
        seen: usize,
        limit: usize,
        state: Arc<BodyState>,
    },
}

impl UpstreamBody {
    pub(crate) fn streaming(inner: Incoming, limit: usize, state: Arc<BodyState>) -> Self {
        Self::Streaming {
            inner,
            seen: 0,
            limit,
            state,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
struct TooLarge(usize);

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Streaming {
                inner,
                seen,
                limit,
                state,
            } => match ready!(Pin::new(inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        *seen = seen.saturating_add(data.len());
                        if *seen > *limit {
                            state.exceeded.store(true, Ordering::Relaxed);
                            return Poll::Ready(Some(Err(Box::new(TooLarge(*limit)))));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Some(Err(e)) => {
                    state.client_failed.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(e.into())))
                }
                None => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_none(),
            Self::Streaming { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Streaming { inner, .. } => inner.size_hint(),
        }
    }
}

/// Read a whole (small) body, refusing more than `limit` bytes.
pub(crate) async fn collect_limited(body: Incoming, limit: usize) -> Result<Bytes, CollectError> {
    let collected = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                CollectError::TooLarge
            } else {
                CollectError::Client(e.to_string())
            }
        })?;
    Ok(collected.to_bytes())
}

/// Why a body could not be buffered.
#[derive(Debug)]
pub(crate) enum CollectError {
    TooLarge,
    Client(String),
}
