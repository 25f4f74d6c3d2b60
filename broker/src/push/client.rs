//! The broker's outbound HTTP client for pushes: hyper's pooled HTTP/1.1
//! client, with a resolver that keeps only addresses the allowlist allows
//! (checked at every connection, so DNS cannot lead a push somewhere
//! private), a connect timeout, and answers read only up to a cap.
//! `https://` endpoints are reached over TLS (rustls, hyper-rustls),
//! trusting the public web roots built into the binary (the container has no
//! system CA store) and any CA of `push-tls-ca`; the certificate must name
//! the endpoint's host.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, Request, StatusCode};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use tokio_rustls::rustls;

use super::allowlist::Allowlist;
use super::outcome::MAX_ANSWER_BYTES;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// An endpoint's answer: status, headers, the first bytes of the body.
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// At most `MAX_ANSWER_BYTES` of the body.
    pub body: Bytes,
}

/// Resolves host names to the addresses the allowlist allows for them.
#[derive(Clone)]
struct GuardedResolver {
    allowlist: Arc<Allowlist>,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allowlist = self.allowlist.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let how = allowlist.host_match(&host);
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.iter().copied().filter(|a| allowlist.allows(a.ip(), how)).collect();
            if allowed.is_empty() {
                let found: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves to [{}], none of which push-allowed-endpoints allows", found.join(", ")),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// The shared push client (cheap to clone).
#[derive(Clone)]
pub struct PushClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>,
    allowlist: Arc<Allowlist>,
    signer: Option<Arc<super::signer::PushSigner>>,
}

impl PushClient {
    /// A client that connects only where `allowlist` allows, trusting the
    /// CA certificates of the PEM file `extra_ca` too for https endpoints;
    /// the message says what is wrong with the file.
    pub fn new(allowlist: Allowlist, extra_ca: Option<&std::path::Path>) -> Result<Self, String> {
        let allowlist = Arc::new(allowlist);
        let mut connector = HttpConnector::new_with_resolver(GuardedResolver { allowlist: allowlist.clone() });
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(extra_ca)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).build(https);
        Ok(PushClient { client, allowlist, signer: None })
    }

    /// Also signs every request without an `authorization` header of its
    /// own with a token for its endpoint.
    pub fn with_signer(mut self, signer: Arc<super::signer::PushSigner>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Sends `request`, waiting at most `timeout` for the whole answer; the
    /// error says why no answer came (the reason a push is nacked with).
    pub async fn send(&self, mut request: Request<Full<Bytes>>, timeout: Duration) -> Result<Answer, String> {
        let endpoint = request.uri().clone();
        if let Some(signer) = self.signer.as_ref().filter(|_| !request.headers().contains_key("authorization")) {
            let token = signer.token(&endpoint.to_string(), sluice_storage::now_ms() / 1000)?;
            let value = format!("Bearer {token}").parse().map_err(|_| "push: the signed token is no header value")?;
            request.headers_mut().insert("authorization", value);
        }
        // Addresses written in the URL do not pass the resolver.
        if let Some(ip) =
            endpoint.host().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok())
        {
            if !self.allowlist.allows_literal(ip) {
                return Err(format!("push: {ip} is not in push-allowed-endpoints"));
            }
        }
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| transport_error(&endpoint, &e))?;
            let (parts, mut body) = response.into_parts();
            let mut read = BytesMut::new();
            while read.len() < MAX_ANSWER_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            read.extend_from_slice(&data[..data.len().min(MAX_ANSWER_BYTES - read.len())]);
                        }
                    }
                    Some(Err(e)) => return Err(format!("push: reading the answer of {endpoint}: {e}")),
                    None => break,
                }
            }
            Ok(Answer { status: parts.status, headers: parts.headers, body: read.freeze() })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("push: no answer from {endpoint} within {} ms", timeout.as_millis())),
        }
    }
}

/// The TLS client of https pushes: the public web roots and `extra_ca`'s certificates.
fn tls_config(extra_ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca {
        for cert in crate::tls::certificates(path, "push CA")? {
            roots.add(cert).map_err(|e| format!("the push CA {}: {e}", path.display()))?;
        }
    }
    // ring, as everywhere in the broker (no C crypto library to build).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A transport error with its causes, on one line.
fn transport_error(endpoint: &axum::http::Uri, e: &hyper_util::client::legacy::Error) -> String {
    let mut text = if e.is_connect() {
        format!("push: could not connect to {endpoint}")
    } else {
        format!("push: request to {endpoint} failed")
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
