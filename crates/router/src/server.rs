//! The accept loop, per-connection tasks with graceful shutdown, and request dispatch.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::{HOST, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, Span, debug, field, info, warn};

use crate::Inner;
use crate::access;
use crate::async_call;
use crate::body::RouterBody;
use crate::proxy::Forward;
use crate::respond;
use crate::table::{Builtin, Lookup};

/// Pause after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// Everything, the internal `/fission-function/…` routes included (Fission before v1.23).
    All,
    /// Trigger routes and the router's own endpoints; `/fission-function/…` answers 404, as
    /// Fission main's public router does (its internal routes have a listener of their own).
    Public,
}

pub(crate) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    shutdown: CancellationToken,
    grace: Duration,
    routes: Routes,
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new());
    let mut connections = JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "router listening");
    }

    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    connections.spawn(serve_connection(inner.clone(), builder.clone(), stream, remote, shutdown.clone(), routes));
                }
                Err(e) if is_per_connection_error(&e) => debug!(error = %e, "accept failed for one connection"),
                Err(e) => {
                    warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }

    drop(listener);
    let open = connections.len();
    info!(
        connections = open,
        grace_s = grace.as_secs_f64(),
        "router stopped accepting; draining in-flight requests"
    );
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => info!("router drained cleanly"),
        Err(_) => {
            warn!(
                connections = connections.len(),
                "grace period over; aborting the remaining requests"
            );
            connections.shutdown().await;
        }
    }
    Ok(())
}

fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Serve one client connection until it closes; on shutdown, let the request in flight finish
/// and then close (idle keep-alive connections close at once).
async fn serve_connection(
    inner: Arc<Inner>,
    builder: http1::Builder,
    stream: TcpStream,
    remote: SocketAddr,
    shutdown: CancellationToken,
    routes: Routes,
) {
    // Small request/response exchanges should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let svc_shutdown = shutdown.clone();
    // The client's address as X-Forwarded-For wants it, formatted once per connection.
    let client = Client::new(remote);
    let svc = service_fn(move |req| {
        let inner = inner.clone();
        let shutdown = svc_shutdown.clone();
        let client = client.clone();
        async move { Ok::<_, Infallible>(handle(inner, req, client, shutdown, routes).await) }
    });
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(client = %remote, error = %e, "connection ended with an error");
    }
}

/// One request: route it, answer builtins, or proxy it. Runs inside the request span.
/// Who sent a request: what the forwarding headers say about the client, worked out once per
/// connection rather than per request.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) addr: SocketAddr,
    /// `addr`'s IP as a header value (`None` cannot happen for an IP, but is handled).
    pub(crate) ip: Option<HeaderValue>,
    /// The last `Host` seen on this connection and its `Forwarded` value (a client sends the
    /// same one every time).
    pub(crate) forwarded: Arc<Mutex<Option<(HeaderValue, HeaderValue)>>>,
}

impl Client {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            ip: HeaderValue::from_str(&addr.ip().to_string()).ok(),
            forwarded: Arc::default(),
        }
    }

    /// `Forwarded: host=<host>` for `host`.
    pub(crate) fn forwarded_value(&self, host: &HeaderValue) -> Option<HeaderValue> {
        let mut last = self
            .forwarded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*last {
            Some((h, v)) if h == host => Some(v.clone()),
            _ => {
                let v = crate::proxy::forwarded_value(host)?;
                *last = Some((host.clone(), v.clone()));
                Some(v)
            }
        }
    }
}

pub(crate) async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    client: Client,
    shutdown: CancellationToken,
    routes: Routes,
) -> Response<RouterBody> {
    let span = tracing::debug_span!(
        "router.request",
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
        fission.function = field::Empty,
        fission.trigger = field::Empty,
        fission.cold = field::Empty,
        http.response.status_code = field::Empty,
    );
    let access = access::Pending::start(req.method(), req.uri());
    crate::trace::continue_from(&span, req.headers());
    async move {
        let resp = dispatch(&inner, req, client, &shutdown, routes).await;
        let span = Span::current();
        span.record("http.response.status_code", resp.status().as_u16());
        if let Some(line) = access {
            line.finish(resp.status().as_u16(), resp.extensions().get());
        }
        debug!("request complete");
        resp
    }
    .instrument(span)
    .await
}

async fn dispatch(
    inner: &Inner,
    req: Request<Incoming>,
    client: Client,
    shutdown: &CancellationToken,
    routes: Routes,
) -> Response<RouterBody> {
    let table = inner.current_table();
    let host = request_host(&req);
    let found = {
        let _lookup = tracing::debug_span!("route lookup").entered();
        table.lookup(req.method(), host, req.uri().path())
    };
    let forward = match found {
        Lookup::Builtin(Builtin::Healthz | Builtin::Root) => return respond::ok_empty(),
        Lookup::Builtin(Builtin::Version) => return respond::version(&inner.config.router_version),
        Lookup::Builtin(Builtin::Metrics) => {
            return match inner.metrics_render() {
                Some(render) => respond::metrics(render()),
                None => respond::metrics_not_configured(),
            };
        }
        Lookup::NotFound => return respond::not_found(),
        Lookup::MethodNotAllowed { allow } => return respond::method_not_allowed(&allow),
        // Internal routes are the matches without a trigger.
        Lookup::Function(m) if routes == Routes::Public && m.trigger.is_none() => {
            return respond::not_found();
        }
        Lookup::Function(m) => {
            if let Some(queue) = inner
                .async_calls()
                .filter(|_| async_call::wants_async(&req))
            {
                return async_call::enqueue(queue, req, inner.config.max_body_bytes).await;
            }
            // The thread-local RNG is not Send: use it and let it go before any await.
            let target = m.backend.pick(&mut rand::rng()).clone();
            let span = Span::current();
            span.record("fission.function", &*target.label);
            if let Some(trigger) = m.trigger {
                span.record("fission.trigger", trigger);
            }
            Forward::new(&m, target, req.uri(), client)
        }
    };
    inner.proxy.forward(req, forward, shutdown).await
}

/// The host the client addressed, without port: the `Host` header (HTTP/1.1), or the
/// authority of an absolute-form request target.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let raw = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    Some(strip_port(raw))
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_port_from_host_names_and_ipv6_literals() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
