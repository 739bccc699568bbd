//! A small HTTPS server for tests: a certificate for `127.0.0.1` and `localhost` signed by a CA
//! made for this server alone, whose PEM is written to a file to trust (`FISSION_ARCHIVE_CA_CERT`,
//! `--archive-ca-cert`). Replies are set per path and can be changed while it runs; it counts the
//! requests per path.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server answers on one path.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sent with `Transfer-Encoding: chunked` (no Content-Length).
    pub chunked: bool,
    /// Waited before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: Vec<u8>) -> Self {
        Self {
            status: 200,
            headers: vec![],
            body,
            chunked: false,
            delay: Duration::ZERO,
        }
    }

    pub fn redirect(location: &str) -> Self {
        Self {
            status: 302,
            headers: vec![("Location".to_owned(), location.to_owned())],
            ..Self::ok(vec![])
        }
    }
}

type Routes = Arc<Mutex<HashMap<String, Reply>>>;
type Hits = Arc<Mutex<HashMap<String, usize>>>;

pub struct HttpsServer {
    addr: SocketAddr,
    routes: Routes,
    hits: Hits,
    ca_file: PathBuf,
    stop: Arc<AtomicBool>,
}

static SERVERS: AtomicU64 = AtomicU64::new(0);

impl HttpsServer {
    pub fn start() -> Self {
        let (ca_pem, config) = tls_config();
        let ca_file = std::env::temp_dir().join(format!(
            "fission-test-ca-{}-{}.pem",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&ca_file, ca_pem).expect("write the CA file");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let routes: Routes = Arc::default();
        let hits: Hits = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (routes, hits, stop) = (routes.clone(), hits.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (routes, hits, config) = (routes.clone(), hits.clone(), config.clone());
                    std::thread::spawn(move || serve(conn, config, &routes, &hits));
                }
            });
        }
        Self {
            addr,
            routes,
            hits,
            ca_file,
            stop,
        }
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn ca_cert_file(&self) -> &Path {
        &self.ca_file
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_owned(), reply);
    }

    /// Requests received for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

/// A fresh CA (PEM) and a server configuration with a certificate it signed.
fn tls_config() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fission-rs test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    // ring, like the client side (reqwest's rustls-tls); post-quantum key exchange is of no
    // concern to a test server.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    (ca_cert.pem(), Arc::new(config))
}

fn serve(conn: TcpStream, config: Arc<rustls::ServerConfig>, routes: &Routes, hits: &Hits) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(tls) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut stream = rustls::StreamOwned::new(tls, conn);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let reply = routes.lock().unwrap().get(&path).cloned().unwrap_or(Reply {
        status: 404,
        ..Reply::ok(b"not found".to_vec())
    });
    std::thread::sleep(reply.delay);
    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if reply.chunked {
        out.push_str("Transfer-Encoding: chunked\r\n\r\n");
        let mut body = out.into_bytes();
        for chunk in reply.body.chunks(256) {
            body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            body.extend_from_slice(chunk);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let _ = stream.write_all(&body);
    } else {
        out.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
        let mut body = out.into_bytes();
        body.extend_from_slice(&reply.body);
        let _ = stream.write_all(&body);
    }
    let _ = stream.flush();
    stream.conn.send_close_notify();
    let _ = stream.flush();
}
