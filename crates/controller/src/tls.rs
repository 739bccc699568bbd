//! TLS for the controller's listener (`--tls-cert/--tls-key`): rustls, with handshakes done off
//! the accept loop so a slow or silent client cannot hold up everyone else's connections.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read or holds no PEM certificate.
    #[error("cannot read a PEM certificate chain from {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    /// The key file cannot be read or holds no PEM private key.
    #[error("cannot read a PEM private key from {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    /// rustls refused the pair (e.g. the key does not belong to the certificate).
    #[error("cannot use the certificate {cert} with the key {key}: {reason}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The server side of TLS, from a PEM certificate chain and its private key.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig(..)")
    }
}

impl TlsConfig {
    /// Load `cert` (PEM chain, leaf first) and `key` (PEM, PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_err = |reason: String| TlsError::Cert {
            path: cert.to_owned(),
            reason,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| cert_err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(e.to_string()))?;
        if chain.is_empty() {
            return Err(cert_err("no CERTIFICATE block in it".to_owned()));
        }
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
        // ring: the provider the rest of the binary (reqwest's rustls) already links.
        #[allow(
            deprecated,
            reason = "aws-lc-rs would add a C toolchain build for PQ key exchange"
        )]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
            .map_err(|e| TlsError::Config {
                cert: cert.to_owned(),
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// Accepts TCP connections and hands over those that completed a TLS handshake.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Closing the listener (shutdown) stops accepting at once, as for plain TCP.
        self.accept_task.abort();
    }
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, tls: &TlsConfig) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tls.acceptor.clone();
        let accept_task = tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (stream, remote) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "controller accept failed");
                        // Out of descriptors and the like: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = stream.set_nodelay(true);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, remote)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %remote, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(client = %remote, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local,
            accept_task,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
