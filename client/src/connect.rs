//! Channels to a broker. Connections are lazy and re-established by tonic
//! after a broker restart, so clients ride through restarts with retries.
//!
//! A [`Channel`] carries how it connects ([`ConnectOptions`]: TLS, a bearer
//! token), and every channel made from it (to a partition's leader, after a
//! `not_leader` hint) connects the same way.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::codegen::http;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result};

/// How a client connects: TLS (a CA to trust, optionally a client
/// certificate for mTLS) and a bearer token sent with every request.
#[derive(Clone, Default, Debug)]
pub struct ConnectOptions {
    tls: Option<ClientTlsConfig>,
    token: Option<AsciiMetadataValue>,
}

impl ConnectOptions {
    /// Plaintext, no credentials.
    pub fn new() -> Self {
        ConnectOptions::default()
    }

    /// TLS, trusting the CA certificates in `ca_pem` (PEM); addresses
    /// without a scheme then mean `https://`.
    pub fn tls_ca(mut self, ca_pem: impl AsRef<[u8]>) -> Self {
        let tls = self.tls.take().unwrap_or_default();
        self.tls = Some(tls.ca_certificate(Certificate::from_pem(ca_pem)));
        self
    }

    /// A client certificate and key (PEM) for mutual TLS; needs [`Self::tls_ca`].
    pub fn tls_identity(mut self, cert_pem: impl AsRef<[u8]>, key_pem: impl AsRef<[u8]>) -> Self {
        let tls = self.tls.take().unwrap_or_default();
        self.tls = Some(tls.identity(Identity::from_pem(cert_pem, key_pem)));
        self
    }

    /// The name the broker's certificate must carry, when it is not the
    /// address's host (e.g. connecting to an IP with a certificate for a name).
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        let tls = self.tls.take().unwrap_or_default();
        self.tls = Some(tls.domain_name(name));
        self
    }

    /// Sends `authorization: Bearer <token>` with every request.
    pub fn token(mut self, token: &str) -> Result<Self> {
        let value = AsciiMetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Error::InvalidToken("a token must be visible ASCII without spaces".into()))?;
        self.token = Some(value);
        Ok(self)
    }

    /// A channel to the broker at `addr` (`host:port`, or a URL) connecting this way.
    pub fn connect(&self, addr: &str) -> Result<Channel> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let addr = if addr.contains("://") { addr.to_owned() } else { format!("{scheme}://{addr}") };
        let mut endpoint =
            Endpoint::from_shared(addr.clone()).map_err(|source| Error::Address { addr: addr.clone(), source })?;
        if let Some(tls) = &self.tls {
            endpoint =
                endpoint.tls_config(tls.clone()).map_err(|source| Error::Address { addr: addr.clone(), source })?;
        }
        let inner = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Channel { inner, options: Arc::new(self.clone()) })
    }
}

/// A channel to the broker at `addr` (e.g. `http://127.0.0.1:50051`),
/// plaintext and without credentials.
pub fn channel(addr: &str) -> Result<Channel> {
    ConnectOptions::new().connect(addr)
}

/// A connection to one broker, with the options it was made with; what
/// every client in this crate is built on. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Channel {
    inner: tonic::transport::Channel,
    options: Arc<ConnectOptions>,
}

impl Channel {
    /// A channel to another broker (`host:port`), connecting the same way.
    pub fn to(&self, addr: &str) -> Result<Channel> {
        self.options.connect(addr)
    }
}

impl From<tonic::transport::Channel> for Channel {
    /// A channel made with tonic directly: requests go as they are (no token).
    fn from(inner: tonic::transport::Channel) -> Self {
        Channel { inner, options: Arc::default() }
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = tonic::transport::channel::ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        tower_service::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(token) = &self.options.token {
            if !request.headers().contains_key(http::header::AUTHORIZATION) {
                if let Ok(value) = http::HeaderValue::from_bytes(token.as_encoded_bytes()) {
                    request.headers_mut().insert(http::header::AUTHORIZATION, value);
                }
            }
        }
        tower_service::Service::call(&mut self.inner, request)
    }
}
