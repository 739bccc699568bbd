//! Keep-alive connections to function instances: idle HTTP/1 connections kept per instance
//! address, on hyper's connection API.
//!
//! This replaces hyper-util's pooled client on the warm path, which per request formats and
//! re-parses an absolute URI, derives the `Host` header from it, hashes a (scheme, authority)
//! pool key, and for every response with a body spawns a task that waits for the connection to
//! become idle again. Here a request goes out in origin form with a `Host` value made once per
//! connection, and the connection is handed back by the response body the moment it has been
//! read to its end (see [`crate::body::RouterBody`]).
//!
//! A connection is reused only if it was idle for less than [`IDLE_TIMEOUT`] — well below the
//! runtimes' own keep-alive timeout (120 s), so an instance never closes a connection just as
//! the router picks it. If one was closed anyway (the instance died), the request has not been
//! written and goes out on the next idle connection or a new one.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::header::{HOST, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::debug;

use crate::body::UpstreamBody;

/// How long to wait for a TCP connection to an instance. Instances are local processes that
/// either accept at once or are gone; a long wait would only delay the retry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections older than this are closed instead of reused (Fission's keep-alive time).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request could not be sent, or got no response.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// No connection to the instance could be made.
    Connect(io::Error),
    /// The exchange on an established connection failed.
    Request(hyper::Error),
}

/// A connection with a request slot: checked out of the pool or new.
pub(crate) struct UpstreamConn {
    sender: SendRequest<UpstreamBody>,
    host: HeaderValue,
    addr: SocketAddr,
    pool: Weak<Upstreams>,
}

impl UpstreamConn {
    /// Back to the pool, for the next request to this instance. Only call once the response
    /// has been read to its end (hyper closes connections whose response was abandoned).
    pub(crate) fn release(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put(self);
        }
    }
}

impl std::fmt::Debug for UpstreamConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConn")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

struct Idle {
    conn: UpstreamConn,
    since: Instant,
}

#[derive(Default)]
struct State {
    idle: HashMap<SocketAddr, Vec<Idle>>,
    /// When every address's list was last pruned (connections of instances that are gone).
    swept: Option<Instant>,
}

/// Idle connections by instance address.
pub(crate) struct Upstreams {
    me: Weak<Upstreams>,
    state: Mutex<State>,
}

impl Upstreams {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain bookkeeping: a panic elsewhere leaves nothing half-done worth refusing over.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send `req` (origin-form URI, no `Host`) to the instance at `addr`: on the most recently
    /// used idle connection that still works, else on a new one. Returns the response head and
    /// the connection, to be released when the response body has been read.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        mut req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, UpstreamConn), UpstreamError> {
        while let Some(mut conn) = self.checkout(addr) {
            if conn.sender.ready().await.is_err() {
                continue; // closed while idle
            }
            req.headers_mut().insert(HOST, conn.host.clone());
            match conn.sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, conn)),
                Err(mut e) => match e.take_message() {
                    // Closed before the request was written: nothing reached the instance.
                    Some(r) => req = r,
                    None => return Err(UpstreamError::Request(e.into_error())),
                },
            }
        }
        let mut conn = self.connect(addr).await?;
        req.headers_mut().insert(HOST, conn.host.clone());
        match conn.sender.send_request(req).await {
            Ok(resp) => Ok((resp, conn)),
            Err(e) => Err(UpstreamError::Request(e)),
        }
    }

    fn checkout(&self, addr: SocketAddr) -> Option<UpstreamConn> {
        let now = Instant::now();
        let mut st = self.lock();
        let list = st.idle.get_mut(&addr)?;
        let found = loop {
            match list.pop() {
                Some(i)
                    if now.duration_since(i.since) < IDLE_TIMEOUT && !i.conn.sender.is_closed() =>
                {
                    break Some(i.conn);
                }
                Some(_) => {} // dropped: its connection closes
                None => break None,
            }
        };
        if list.is_empty() {
            st.idle.remove(&addr);
        }
        found
    }

    async fn connect(&self, addr: SocketAddr) -> Result<UpstreamConn, UpstreamError> {
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
                Err(_) => {
                    return Err(UpstreamError::Connect(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no connection within {CONNECT_TIMEOUT:?}"),
                    )));
                }
            };
        // Small request/response exchanges should not wait for Nagle.
        stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
        let (sender, connection) = http1::Builder::new()
            // Go writes canonical header names (`X-Fission-Params-User_id`); title case gives
            // the same spelling for the headers we add, and for the client's own.
            .title_case_headers(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                debug!(instance = %addr, error = %e, "connection to instance ended with an error");
            }
        });
        let host = HeaderValue::from_str(&addr.to_string())
            .map_err(|e| UpstreamError::Connect(io::Error::other(e)))?;
        Ok(UpstreamConn {
            sender,
            host,
            addr,
            pool: self.me.clone(),
        })
    }

    fn put(&self, conn: UpstreamConn) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut st = self.lock();
        st.idle
            .entry(conn.addr)
            .or_default()
            .push(Idle { conn, since: now });
        // Now and then, drop what instances that are gone (or idle for long) left behind.
        if st
            .swept
            .is_none_or(|t| now.duration_since(t) >= IDLE_TIMEOUT)
        {
            st.swept = Some(now);
            st.idle.retain(|_, list| {
                list.retain(|i| {
                    now.duration_since(i.since) < IDLE_TIMEOUT && !i.conn.sender.is_closed()
                });
                !list.is_empty()
            });
        }
    }

    /// Idle connections kept for `addr`.
    #[cfg(test)]
    pub(crate) fn idle_count(&self, addr: SocketAddr) -> usize {
        self.lock().idle.get(&addr).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use fission_core::{InstanceLease, LeaseRelease};
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::body::RouterBody;

    /// An instance that answers every request with `ok` and counts its connections; with
    /// `close_after_answer` it closes each connection right after answering (keep-alive
    /// headers notwithstanding, as a dying instance would).
    async fn instance(close_after_answer: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if s.write_all(answer).await.is_err() || close_after_answer {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    struct NoRelease;
    impl LeaseRelease for NoRelease {
        fn release(&self, _broken: bool) {}
    }

    fn get() -> Request<UpstreamBody> {
        let mut req = Request::new(UpstreamBody::Full(None));
        *req.uri_mut() = http::Uri::from_static("/x");
        req
    }

    /// Send, then read the answer through the router's response body, as the proxy does.
    async fn call(pool: &Upstreams, addr: SocketAddr) -> Bytes {
        let (resp, conn) = pool.send(addr, get()).await.expect("send");
        let lease = InstanceLease::new(addr, 1, false, Arc::new(NoRelease));
        let body = RouterBody::upstream(resp.into_body(), lease, conn);
        body.collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn a_connection_goes_back_to_the_pool_when_its_answer_was_read_and_is_reused() {
        let (addr, accepted) = instance(false).await;
        let pool = Upstreams::new();
        for _ in 0..3 {
            assert_eq!(call(&pool, addr).await, "ok");
            assert_eq!(pool.idle_count(addr), 1);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for all calls"
        );
    }

    #[tokio::test]
    async fn an_abandoned_answer_does_not_return_its_connection() {
        let (addr, accepted) = instance(false).await;
        let pool = Upstreams::new();
        let (resp, conn) = pool.send(addr, get()).await.expect("send");
        let lease = InstanceLease::new(addr, 1, false, Arc::new(NoRelease));
        drop(RouterBody::upstream(resp.into_body(), lease, conn));
        assert_eq!(pool.idle_count(addr), 0);
        assert_eq!(call(&pool, addr).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_instance_closed_is_replaced_without_an_error() {
        let (addr, accepted) = instance(true).await;
        let pool = Upstreams::new();
        for round in 1..=3 {
            assert_eq!(call(&pool, addr).await, "ok");
            // Whether or not the close was noticed before the next call, that call succeeds.
            if round == 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let err = Upstreams::new()
            .send(addr, get())
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    }
}
