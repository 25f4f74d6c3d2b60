//! Throwaway certificates for the TLS tests, made in the test (rcgen): a
//! CA, server certificates for 127.0.0.1, client certificates, written to
//! PEM files the broker reads; and a TLS client for raw connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// A certificate authority that issues certificates for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A certificate and its key, PEM.
pub struct Issued {
    /// The certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<TestCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key)?;
        let pem = cert.pem();
        Ok(TestCa { cert, key, pem })
    }

    /// A certificate for `names` (host names or IP addresses) with common name `cn`.
    pub fn issue(&self, cn: &str, names: &[&str]) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued { cert: cert.pem(), key: key.serialize_pem() })
    }
}

/// Writes `text` to `dir/name` (atomically: a reloading broker never reads half a file).
pub fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

fn roots(ca_pem: &str) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    Ok(roots)
}

/// A TLS connection to `addr` trusting `ca_pem`, offering `alpn`, with a
/// client certificate if given.
pub async fn connect(
    addr: &str,
    ca_pem: &str,
    alpn: &[u8],
    client: Option<&Issued>,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain = CertificateDer::pem_slice_iter(c.cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(c.key.as_bytes())?)?
        }
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    let host = addr.rsplit_once(':').map(|(h, _)| h).context("host:port")?;
    let name = ServerName::try_from(host.to_owned())?;
    let tcp = TcpStream::connect(addr).await?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?)
}

/// The leaf certificate the broker at `addr` serves to a new connection (DER).
pub async fn served_certificate(addr: &str, ca_pem: &str) -> anyhow::Result<Vec<u8>> {
    let stream = connect(addr, ca_pem, b"h2", None).await?;
    let (_, session) = stream.get_ref();
    let leaf = session.peer_certificates().and_then(|c| c.first()).context("no certificate served")?;
    Ok(leaf.as_ref().to_vec())
}

/// The DER of the first certificate in `pem`.
pub fn der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let cert = CertificateDer::pem_slice_iter(pem.as_bytes()).next().context("no certificate")??;
    Ok(cert.as_ref().to_vec())
}
