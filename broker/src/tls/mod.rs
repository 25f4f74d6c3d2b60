//! TLS for the broker's listeners (the gRPC port and the HTTP gateway):
//! rustls with ring, certificates and keys from PEM files, reloaded without
//! a restart.
//!
//! # Rotation
//! Each listener takes the configuration current when a connection arrives
//! ([`ServerTls::acceptor`]); established connections keep the one they
//! were accepted with, so replacing the files drops nobody. The files are
//! read again on SIGHUP and whenever their modification time changes
//! (`crate::reload`); a set that does not load (a key that
//! does not match the certificate, a half-written file) is logged and
//! counted, and the previous one stays in use.
//!
//! # Client certificates
//! With a client CA, clients may present a certificate signed by it (mTLS);
//! one from another CA fails the handshake. Clients without a certificate
//! are still accepted: they authenticate with a token instead (`auth`).
//! The cluster listener requires one ([`peer`]).

pub mod peer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes in progress on one listener: past it new connections
/// wait in the kernel's accept queue, so a flood of slow handshakes costs
/// bounded memory.
const MAX_HANDSHAKES: usize = 1024;

/// Where a listener's certificate chain, private key and (for mTLS) the CA
/// that signs client certificates live, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates that sign client certificates; none: clients present none.
    pub client_ca: Option<PathBuf>,
    /// Whether a client must present a certificate the client CA signed
    /// (brokers on the cluster listener), not merely may.
    pub require_client_cert: bool,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        paths
    }
}

/// A listener's TLS configuration, swapped whole when its files change.
pub struct ServerTls {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
    /// The files' modification times when last loaded.
    loaded: Mutex<Vec<Option<SystemTime>>>,
}

impl ServerTls {
    /// Loads `files`, offering `alpn` protocols (`h2` for gRPC, `http/1.1`
    /// for the gateway); the message names the file that failed.
    pub fn load(files: TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerTls>, String> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let stamps = modified(&files);
        let config = build(&files, &alpn)?;
        Ok(Arc::new(ServerTls { files, alpn, current: RwLock::new(Arc::new(config)), loaded: Mutex::new(stamps) }))
    }

    /// The acceptor for the next connection: the configuration now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Loads the files again if `force` or their modification times
    /// changed; keeps the current configuration when they do not load.
    fn reload_files(&self, force: bool) {
        let stamps = modified(&self.files);
        {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *loaded == stamps {
                return;
            }
            *loaded = stamps;
        }
        match build(&self.files, &self.alpn) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                metrics::counter!(crate::metrics::TLS_RELOADS, "result" => "ok").increment(1);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                metrics::counter!(crate::metrics::TLS_RELOADS, "result" => "failed").increment(1);
                tracing::error!(error = %e, "TLS files changed but do not load; still serving the previous certificate");
            }
        }
    }
}

impl crate::reload::Reload for ServerTls {
    fn reload(&self, force: bool) {
        self.reload_files(force)
    }
}

fn modified(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    files.paths().iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

pub(crate) fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading the {what} {}: {e}", path.display()))
}

/// PEM certificates from `path`; at least one.
pub fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the {what} {} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("the {what} {} holds no certificate", path.display()));
    }
    Ok(certs)
}

fn build(files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<ServerConfig, String> {
    let chain = certificates(&files.cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key, "private key")?)
        .map_err(|e| format!("the private key {} is not a PEM private key: {e}", files.key.display()))?;
    // ring: no C crypto library to build (the rule); rustls marks it
    // deprecated only for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "client CA")? {
                roots.add(cert).map_err(|e| format!("the client CA {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier.build().map_err(|e| format!("the client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!("the key {} does not serve the certificate {}: {e}", files.key.display(), files.cert.display())
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// Accepts connections on `listener` and completes their TLS handshakes
/// concurrently (each bounded by a timeout), yielding the established
/// streams: the `incoming` of a TLS gRPC server.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    stop: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            metrics::counter!(crate::metrics::CONNECTIONS).increment(1);
            let _ = stream.set_nodelay(true);
            let (acceptor, tx) = (tls.acceptor(), tx.clone());
            tokio::spawn(async move {
                match accept(acceptor, stream).await {
                    Ok(stream) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Err(e) => handshake_failed(peer, &e.to_string()),
                }
                drop(permit);
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Counts and logs (at debug: clients can cause it at will) a failed handshake.
pub fn handshake_failed(peer: std::net::SocketAddr, why: &str) {
    metrics::counter!(crate::metrics::TLS_HANDSHAKE_FAILURES).increment(1);
    tracing::debug!(%peer, error = why, "TLS handshake failed");
}

/// Completes a TLS handshake on `stream` within the handshake timeout.
pub async fn accept(acceptor: TlsAcceptor, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}
