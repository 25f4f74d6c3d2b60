//! Mutual TLS on the cluster link: every broker presents its cluster
//! certificate both when it answers on its cluster listener and when it
//! calls a peer, and accepts only peers whose certificate the cluster CA
//! signed. A process without such a certificate cannot complete a
//! handshake with any broker, so it can neither join a Raft group nor
//! forward an append.
//!
//! # Names
//! A broker checks a peer's certificate against the host it dialled (its
//! `--peers` address: a DNS name or an IP address), as any TLS client does.
//!
//! # Rotation
//! The files are read again on SIGHUP and when they change, like the client
//! doors' (`super::ServerTls`): new handshakes, both ways, use the new
//! certificate; established connections keep theirs.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use sluice_replication::Connect;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tonic::codegen::http::Uri;

use super::{certificates, read, ServerTls, TlsFiles};

/// How long connecting to a peer, handshake included, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The cluster link's TLS: the listener's configuration and the one this
/// broker dials its peers with, both from the same files.
pub struct PeerTls {
    files: TlsFiles,
    server: Arc<ServerTls>,
    client: RwLock<Arc<ClientConfig>>,
    loaded: Mutex<Vec<Option<SystemTime>>>,
}

impl PeerTls {
    /// Loads `files` (certificate, key and the cluster CA); the message
    /// names the file that failed.
    pub fn load(files: TlsFiles) -> Result<Arc<PeerTls>, String> {
        let server = ServerTls::load(files.clone(), &[b"h2"])?;
        let client = client_config(&files)?;
        let loaded = Mutex::new(super::modified(&files));
        Ok(Arc::new(PeerTls { files, server, client: RwLock::new(Arc::new(client)), loaded }))
    }

    /// The cluster listener's side.
    pub fn server(&self) -> Arc<ServerTls> {
        self.server.clone()
    }

    /// How the broker's peer connections are made: TCP, then a TLS
    /// handshake presenting this broker's certificate.
    pub fn connect(self: &Arc<Self>) -> Connect {
        let tls = self.clone();
        Arc::new(move |endpoint| endpoint.connect_with_connector_lazy(PeerConnector { tls: tls.clone() }))
    }

    fn current(&self) -> Arc<ClientConfig> {
        self.client.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl crate::reload::Reload for PeerTls {
    fn reload(&self, force: bool) {
        crate::reload::Reload::reload(&*self.server, force);
        let stamps = super::modified(&self.files);
        {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *loaded == stamps {
                return;
            }
            *loaded = stamps;
        }
        match client_config(&self.files) {
            Ok(config) => *self.client.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config),
            // The server side has logged and counted the same files' failure.
            Err(e) => tracing::debug!(error = %e, "the cluster TLS files do not load; peers are dialled as before"),
        }
    }
}

/// The client side: this broker's certificate, and the cluster CA as the
/// only roots.
fn client_config(files: &TlsFiles) -> Result<ClientConfig, String> {
    let ca = files.client_ca.as_deref().ok_or("cluster TLS needs the cluster CA")?;
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca, "cluster CA")? {
        roots.add(cert).map_err(|e| format!("the cluster CA {}: {e}", ca.display()))?;
    }
    let chain = certificates(&files.cert, "cluster certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key, "cluster private key")?)
        .map_err(|e| format!("the cluster key {} is not a PEM private key: {e}", files.key.display()))?;
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            format!("the key {} does not serve the certificate {}: {e}", files.key.display(), files.cert.display())
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Connects to a peer over TLS: what tonic calls to open a channel's connection.
#[derive(Clone)]
struct PeerConnector {
    tls: Arc<PeerTls>,
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, std::io::Error>> + Send>>;

impl tower_service::Service<Uri> for PeerConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.tls.current();
        Box::pin(async move {
            let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
            let host = uri.host().ok_or_else(|| invalid(format!("peer address {uri} has no host")))?;
            let port = uri.port_u16().ok_or_else(|| invalid(format!("peer address {uri} has no port")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("peer host `{host}` is no DNS name or IP address: {e}")))?;
            let connect = async {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                TlsConnector::from(config).connect(name, tcp).await
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(Ok(stream)) => Ok(TokioIo::new(stream)),
                Ok(Err(e)) => Err(std::io::Error::new(e.kind(), format!("TLS to peer {host}:{port}: {e}"))),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to peer {host}:{port} timed out"),
                )),
            }
        })
    }
}
