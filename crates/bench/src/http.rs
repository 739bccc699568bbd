//! A minimal HTTP/1.1 keep-alive client on hyper's connection API: one TCP connection, requests
//! sent one after another. Used for every timed call (no pooling, no per-call client setup).

use std::net::SocketAddr;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A response read to the end.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The body as (lossy) text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// An error answer built by the router itself (not by a function).
    pub fn is_router_error(&self) -> bool {
        self.headers.contains_key("x-fission-error")
    }
}

/// One keep-alive connection.
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let sender = handshake(addr).await?;
        let host = HeaderValue::from_str(&addr.to_string()).context("host header")?;
        Ok(Self { addr, host, sender })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Send one request and read the whole answer. A connection the peer closed while idle is
    /// reopened first (that never happens inside a timed loop: the runtimes keep connections
    /// for 120 s).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Resp> {
        if self.sender.is_closed() {
            self.sender = handshake(self.addr).await?;
        }
        self.sender
            .ready()
            .await
            .with_context(|| format!("connection to {} is not usable", self.addr))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        let body = match body {
            Some((ctype, bytes)) => {
                req = req.header(CONTENT_TYPE, ctype);
                Full::new(bytes)
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).context("building a request")?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .with_context(|| format!("request {path} to {}", self.addr))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .with_context(|| format!("reading the answer of {path}"))?
            .to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&mut self, path: &str) -> Result<Resp> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post_json(&mut self, path: &str, v: &serde_json::Value) -> Result<Resp> {
        let bytes = Bytes::from(serde_json::to_vec(v)?);
        self.send(Method::POST, path, Some(("application/json", bytes)))
            .await
    }

    /// GET that must answer 200; returns the body.
    pub async fn get_ok(&mut self, path: &str) -> Result<Bytes> {
        let r = self.get(path).await?;
        if r.status != StatusCode::OK {
            bail!(
                "GET {path} on {} answered {}: {}",
                self.addr,
                r.status,
                r.text().trim()
            );
        }
        Ok(r.body)
    }
}

async fn handshake(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {addr}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
