//! Forwarding one request to a function instance and relaying its answer.
//!
//! The sequence per request:
//!
//! 1. Refuse an oversized body by its `Content-Length` before anything else happens.
//! 2. Buffer small bodies (known length ≤ [`BUFFER_LIMIT`]) so the request can be retried;
//!    stream everything else with the size limit enforced as bytes flow.
//! 3. Lease an instance from the executor, bounded by the function's timeout.
//! 4. Send the request on a pooled keep-alive connection to the instance ([`crate::upstream`]),
//!    bounded by the function's timeout until the response head arrives (a function may
//!    stream its body for longer).
//! 5. If the instance could not be reached or dropped the connection without answering, mark
//!    it broken and, when the body is replayable, try once more on a fresh lease.
//! 6. Relay the response verbatim, holding the lease until its body ends; relay protocol
//!    upgrades (websockets) by splicing the two upgraded connections.
//!
//! Everything runs inside the request future, so when the client disconnects and hyper drops
//! that future, the lease wait or the upstream call is dropped (cancelled) with it.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fission_core::FunctionInstances;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, Span, debug, warn};

use crate::access;
use crate::body::{BodyState, CollectError, RouterBody, UpstreamBody, collect_limited};
use crate::error::ProxyError;
use crate::metrics::{CallRecord, Metrics};
use crate::respond;
use crate::server::Client;
use crate::table::{FunctionTarget, RouteMatch, percent_decode};
use crate::upstream::{UpstreamConn, UpstreamError, Upstreams};

/// Bodies with a known length up to this size are read before the function is called, which
/// makes the request replayable on a fresh instance and keeps a slow uploader from holding an
/// instance slot.
pub(crate) const BUFFER_LIMIT: u64 = 64 * 1024;

// === Forward ===

/// Everything about a request bound for a function that depends on the route, computed while
/// the route table is borrowed.
#[derive(Debug)]
pub(crate) struct Forward {
    pub(crate) target: Arc<FunctionTarget>,
    /// Path for the function plus the original query.
    pub(crate) path_and_query: String,
    /// `X-Fission-Params-*` headers.
    pub(crate) params: Vec<(HeaderName, HeaderValue)>,
    /// `path` metric label.
    pub(crate) metric_path: Arc<str>,
    pub(crate) client: Client,
}

impl Forward {
    pub(crate) fn new(
        m: &RouteMatch<'_, '_>,
        target: Arc<FunctionTarget>,
        uri: &Uri,
        client: Client,
    ) -> Self {
        let mut path_and_query =
            String::with_capacity(m.forward_path.len() + uri.query().map_or(0, |q| q.len() + 1));
        path_and_query.push_str(&m.forward_path);
        if let Some(q) = uri.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        let params = m
            .params
            .iter()
            .filter_map(|p| {
                // Fission's mux matches the decoded path, so functions expect decoded values;
                // fall back to the raw text when the decoded one cannot be a header value.
                let value = percent_decode(p.value)
                    .and_then(|v| HeaderValue::from_str(&v).ok())
                    .or_else(|| HeaderValue::from_str(p.value).ok())?;
                Some((p.header.clone(), value))
            })
            .collect();
        Self {
            target,
            path_and_query,
            params,
            metric_path: m.metric_path.clone(),
            client,
        }
    }
}

// === Proxy ===

/// The shared upstream connections and what the proxy needs around them.
pub(crate) struct Proxy {
    upstreams: Arc<Upstreams>,
    instances: Arc<dyn FunctionInstances>,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
}

/// The request body before an attempt.
enum PendingBody {
    /// Empty or buffered: every attempt gets a cheap copy.
    Replayable(Option<Bytes>),
    /// Streamed: only one attempt can have it.
    Stream(Option<UpstreamBody>),
}

impl Proxy {
    pub(crate) fn new(
        instances: Arc<dyn FunctionInstances>,
        metrics: Arc<Metrics>,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            upstreams: Upstreams::new(),
            instances,
            metrics,
            max_body_bytes,
        }
    }

    /// Forward `req` as `fwd` says and produce the client's response. Never fails: every
    /// failure becomes a synthetic response from [`respond`].
    pub(crate) async fn forward(
        &self,
        req: Request<Incoming>,
        fwd: Forward,
        shutdown: &CancellationToken,
    ) -> Response<RouterBody> {
        let mut record = CallRecord::start(
            self.metrics.clone(),
            &fwd.target,
            &fwd.metric_path,
            req.method(),
        );
        let mut leased = None;
        let mut resp = match self
            .forward_inner(req, &fwd, &mut record, &mut leased, shutdown)
            .await
        {
            Ok(resp) => resp,
            Err(err) => respond::proxy_error(&fwd.target.label, &err),
        };
        record.finish(resp.status().as_u16());
        if access::enabled() {
            resp.extensions_mut().insert(access::Served {
                function: fwd.target.label.clone(),
                cold: leased.is_some_and(|(cold, _)| cold),
                instance: leased.map(|(_, id)| id),
            });
        }
        resp
    }

    async fn forward_inner(
        &self,
        mut req: Request<Incoming>,
        fwd: &Forward,
        record: &mut CallRecord,
        leased: &mut Option<(bool, u64)>,
        shutdown: &CancellationToken,
    ) -> Result<Response<RouterBody>, ProxyError> {
        let target = &fwd.target;
        let upgrade =
            requested_upgrade(req.headers()).map(|proto| (proto, hyper::upgrade::on(&mut req)));

        let content_length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(n) = content_length.filter(|n| *n > self.max_body_bytes as u64) {
            return Err(ProxyError::PayloadTooLarge {
                limit: self.max_body_bytes,
                content_length: Some(n),
            });
        }

        let (mut parts, body) = req.into_parts();
        let body_state = Arc::new(BodyState::default());
        let mut pending = if body.is_end_stream() {
            PendingBody::Replayable(None)
        } else if content_length.is_some_and(|n| n <= BUFFER_LIMIT) {
            match collect_limited(body, self.max_body_bytes).await {
                Ok(bytes) => PendingBody::Replayable(Some(bytes)),
                Err(CollectError::TooLarge) => {
                    return Err(ProxyError::PayloadTooLarge {
                        limit: self.max_body_bytes,
                        content_length,
                    });
                }
                Err(CollectError::Client(e)) => return Err(ProxyError::ClientBody(e)),
            }
        } else {
            PendingBody::Stream(Some(UpstreamBody::streaming(
                body,
                self.max_body_bytes,
                body_state.clone(),
            )))
        };

        prepare_request_headers(
            &mut parts.headers,
            &parts.uri,
            fwd,
            upgrade.as_ref().map(|(p, _)| p),
        );

        let mut client_upgrade = upgrade.map(|(_, on)| on);
        let mut attempt = 1;
        loop {
            let acquire_span = tracing::debug_span!(
                "acquire instance",
                fission.function = %target.label,
                fission.cold = tracing::field::Empty,
            );
            let mut lease = match tokio::time::timeout(
                target.timeout,
                self.instances
                    .acquire(&target.function)
                    .instrument(acquire_span.clone()),
            )
            .await
            {
                Err(_) => return Err(ProxyError::AcquireTimeout(target.timeout)),
                Ok(Err(e)) => {
                    debug!(function = %target.label, error = %e, "executor could not provide an instance");
                    return Err(ProxyError::Acquire(e));
                }
                Ok(Ok(lease)) => lease,
            };
            // For the access log: whether this call cold-started, and on which instance.
            *leased = Some((lease.cold, lease.instance_id));
            acquire_span.record("fission.cold", lease.cold);
            if lease.cold {
                record.cold_start();
                Span::current().record("fission.cold", true);
            }

            let (body, headers, replayable) = match &mut pending {
                PendingBody::Replayable(b) => {
                    (UpstreamBody::Full(b.clone()), parts.headers.clone(), true)
                }
                PendingBody::Stream(s) => match s.take() {
                    Some(b) => (b, std::mem::take(&mut parts.headers), false),
                    None => {
                        return Err(ProxyError::Internal(
                            "request body was already sent to an instance".to_owned(),
                        ));
                    }
                },
            };
            let uri = match Uri::try_from(fwd.path_and_query.as_str()) {
                Ok(uri) => uri,
                Err(e) => {
                    return Err(ProxyError::Internal(format!(
                        "cannot build the instance URL: {e}"
                    )));
                }
            };
            let mut up = Request::new(body);
            *up.method_mut() = parts.method.clone();
            *up.uri_mut() = uri;
            *up.version_mut() = Version::HTTP_11;
            *up.headers_mut() = headers;

            let call_span = tracing::debug_span!(
                "upstream call",
                otel.kind = "client",
                server.address = %lease.addr,
                http.response.status_code = tracing::field::Empty,
            );
            crate::trace::inject(&call_span, up.headers_mut());
            let sent = Instant::now();
            let result = tokio::time::timeout(
                target.timeout,
                self.upstreams
                    .send(lease.addr, up)
                    .instrument(call_span.clone()),
            )
            .await;
            if let Ok(Ok((resp, _))) = &result {
                call_span.record("http.response.status_code", resp.status().as_u16());
            }
            record.add_upstream(sent.elapsed());
            match result {
                Err(_) => {
                    warn!(function = %target.label, instance = %lease.addr, timeout_s = target.timeout.as_secs(),
                        "function did not answer before its timeout; retiring the instance");
                    lease.mark_broken();
                    return Err(ProxyError::FunctionTimeout);
                }
                Ok(Ok((resp, conn))) => {
                    return Ok(relay(resp, conn, lease, client_upgrade.take(), shutdown));
                }
                Ok(Err(err)) => {
                    if body_state.exceeded() {
                        return Err(ProxyError::PayloadTooLarge {
                            limit: self.max_body_bytes,
                            content_length: None,
                        });
                    }
                    if body_state.client_failed() {
                        return Err(ProxyError::ClientBody(
                            "the client stopped sending it".to_owned(),
                        ));
                    }
                    let addr = lease.addr;
                    lease.mark_broken();
                    let detail = describe_error(&err);
                    let error = if request_not_sent(&err) {
                        ProxyError::Connect { addr, detail }
                    } else {
                        // A dropped connection usually means the instance died (out of memory,
                        // a crash): give the executor a moment to learn why, so the caller is told.
                        ProxyError::Upstream {
                            addr,
                            detail,
                            cause: exit_cause(&lease).await,
                        }
                    };
                    drop(lease);
                    if attempt == 1 && replayable && error.retryable() {
                        warn!(function = %target.label, %error, "instance not reachable; retrying once on a fresh instance");
                        attempt += 1;
                        continue;
                    }
                    warn!(function = %target.label, %error, "request to instance failed");
                    return Err(error);
                }
            }
        }
    }
}

/// How long to wait for an instance's exit to be known after its connection failed.
const EXIT_CAUSE_WAIT: Duration = Duration::from_secs(1);

async fn exit_cause(lease: &fission_core::InstanceLease) -> Option<String> {
    let deadline = Instant::now() + EXIT_CAUSE_WAIT;
    loop {
        if let Some(c) = lease.exit_cause() {
            return Some(c);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Relay the function's response; splice upgraded connections when it switched protocols.
fn relay(
    mut resp: Response<Incoming>,
    conn: UpstreamConn,
    lease: fission_core::InstanceLease,
    client_upgrade: Option<OnUpgrade>,
    shutdown: &CancellationToken,
) -> Response<RouterBody> {
    // An unsolicited 101 is relayed like any other response.
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if let Some(client_side) = client_upgrade.filter(|_| switching) {
        // The connection becomes the tunnel's; it never goes back to the pool.
        drop(conn);
        let upstream_side = hyper::upgrade::on(&mut resp);
        let shutdown = shutdown.clone();
        tokio::spawn(tunnel(client_side, upstream_side, lease, shutdown).in_current_span());
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, RouterBody::empty());
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, RouterBody::upstream(body, lease, conn))
}

/// Copy bytes both ways between an upgraded client connection and an upgraded instance
/// connection until either side closes or the server shuts down. The lease lives as long.
async fn tunnel(
    client_side: OnUpgrade,
    upstream_side: OnUpgrade,
    lease: fission_core::InstanceLease,
    shutdown: CancellationToken,
) {
    let _lease = lease;
    let (client, upstream) = match tokio::try_join!(client_side, upstream_side) {
        Ok(both) => both,
        Err(e) => {
            debug!(error = %e, "protocol upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match r {
            Ok((up, down)) => debug!(bytes_to_function = up, bytes_to_client = down, "upgraded connection closed"),
            Err(e) => debug!(error = %e, "upgraded connection failed"),
        },
        () = shutdown.cancelled() => debug!("closing upgraded connection for shutdown"),
    }
}

// === Headers ===

const FULL_URL: HeaderName = HeaderName::from_static("x-fission-full-url");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Hop-by-hop headers (RFC 9110 §7.6.1, and the ones Go's reverse proxy drops).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove hop-by-hop headers, including any the `Connection` header names.
///
/// Runs twice per proxied request, so it looks before it removes: one pass over the names
/// finds which hop-by-hop headers are there (usually none in requests; `Connection` and
/// `Keep-Alive` in the runtimes' responses), and only those are removed.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut present = 0u16;
    for name in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // Options naming a header removed anyway (`keep-alive`, `upgrade`) or none (`close`)
        // need no parsing, which leaves nothing to collect in the usual case.
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|hop| t.eq_ignore_ascii_case(hop.as_str()))
            })
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for (i, hop) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(hop);
        }
    }
}

/// The `Upgrade` value if the client asks to switch protocols (`Connection: upgrade`).
fn requested_upgrade(h: &HeaderMap) -> Option<HeaderValue> {
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        h.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Turn the client's headers into the function's: drop hop-by-hop headers, add Fission's
/// `X-Fission-*` and forwarding headers, and leave `Host` to the client (it writes the
/// instance address).
fn prepare_request_headers(
    h: &mut HeaderMap,
    uri: &Uri,
    fwd: &Forward,
    upgrade: Option<&HeaderValue>,
) {
    let host = h.remove(header::HOST).or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    strip_hop_by_hop(h);
    // Room for what is added below, at once rather than by repeated growth.
    h.reserve(fwd.params.len() + fwd.target.identity_headers().len() + 4);
    // The client does not implement `Expect: 100-continue`; the body is sent right away.
    h.remove(header::EXPECT);
    if let Some(proto) = upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, proto.clone());
    }
    for (name, value) in &fwd.params {
        h.insert(name.clone(), value.clone());
    }
    let full_url = uri.path_and_query().map_or("/", |pq| pq.as_str());
    if let Ok(v) = HeaderValue::from_str(full_url) {
        h.insert(FULL_URL, v);
    }
    for (name, value) in fwd.target.identity_headers() {
        h.insert(name.clone(), value.clone());
    }
    let client_forwarded = h.contains_key(header::FORWARDED) || h.contains_key(&X_FORWARDED_HOST);
    if let Some(host) = host.filter(|_| !client_forwarded) {
        if let Some(v) = fwd.client.forwarded_value(&host) {
            h.insert(header::FORWARDED, v);
        }
        h.insert(X_FORWARDED_HOST, host);
    }
    append_forwarded_for(h, &fwd.client);
}

/// `host=<host>` as RFC 7239 §4 spells it: a token as is, anything else (`host:port`, IPv6
/// literals) as a quoted string, and no trailing `;`.
pub(crate) fn forwarded_value(host: &HeaderValue) -> Option<HeaderValue> {
    let host = host.to_str().ok()?;
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let v = if !host.is_empty() && host.chars().all(is_tchar) {
        format!("host={host}")
    } else {
        format!(
            "host=\"{}\"",
            host.replace('\\', "\\\\").replace('"', "\\\"")
        )
    };
    HeaderValue::from_str(&v).ok()
}

/// Append the client's IP to `X-Forwarded-For`, as Go's reverse proxy does.
fn append_forwarded_for(h: &mut HeaderMap, client: &Client) {
    let Some(ip) = &client.ip else { return };
    let joined = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.is_empty() => {
            HeaderValue::from_str(&format!("{prior}, {}", client.addr.ip())).ok()
        }
        _ => Some(ip.clone()),
    };
    if let Some(v) = joined {
        h.insert(X_FORWARDED_FOR, v);
    }
}

// === Error classification ===

/// Whether the request certainly never reached the instance: no connection could be made, or
/// hyper gave the request back unsent (a pooled connection that closed before it was used).
/// Anything else — a reset, an incomplete response — may come after the function got it.
fn request_not_sent(err: &UpstreamError) -> bool {
    match err {
        UpstreamError::Connect(_) => true,
        UpstreamError::Request(e) => e.is_canceled(),
    }
}

/// A readable description of an upstream error with its cause chain.
fn describe_error(err: &UpstreamError) -> String {
    let (mut out, first): (String, &(dyn StdError + 'static)) = match err {
        UpstreamError::Connect(e) => ("could not connect to the instance".to_owned(), e),
        UpstreamError::Request(e) => (
            "the instance closed the connection or sent an invalid response".to_owned(),
            e,
        ),
    };
    let mut source = Some(first);
    while let Some(e) = source {
        let _ = write!(out, ": {e}");
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn strips_hop_by_hop_headers_and_those_named_by_connection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h.get("x-kept").map(|v| v.as_bytes()), Some(&b"yes"[..]));
    }

    #[test]
    fn detects_upgrade_requests_only_with_connection_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(requested_upgrade(&h), None);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            requested_upgrade(&h),
            Some(HeaderValue::from_static("websocket"))
        );
    }

    #[test]
    fn quotes_ipv6_hosts_in_forwarded() {
        let v = forwarded_value(&HeaderValue::from_static("[::1]:8888")).expect("valid");
        assert_eq!(v, "host=\"[::1]:8888\"");
        let v = forwarded_value(&HeaderValue::from_static("example.com:8888")).expect("valid");
        assert_eq!(v, "host=\"example.com:8888\"");
        let v = forwarded_value(&HeaderValue::from_static("example.com")).expect("valid");
        assert_eq!(v, "host=example.com");
    }

    #[test]
    fn appends_client_ip_to_existing_forwarded_for() {
        let mut h = HeaderMap::new();
        let addr: SocketAddr = "10.0.0.7:5000".parse().expect("valid addr");
        let client = Client::new(addr);
        append_forwarded_for(&mut h, &client);
        assert_eq!(h.get(&X_FORWARDED_FOR).expect("set"), "10.0.0.7");
        append_forwarded_for(&mut h, &client);
        assert_eq!(h.get(&X_FORWARDED_FOR).expect("set"), "10.0.0.7, 10.0.0.7");
    }
}
