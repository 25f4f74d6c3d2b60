//! `Sink`: a real HTTP endpoint (axum on 127.0.0.1) for push tests. It
//! records every request it gets and answers each as a script says: any
//! status, a partial-failure body, `Retry-After`, or slowly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

/// A request the sink got.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// One event of a request: its id, its delivery attempt and its data (as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedEvent {
    /// `id`.
    pub id: String,
    /// `deliveryattempt`.
    pub attempt: u32,
    /// The data (JSON data as JSON text).
    pub data: String,
}

impl Received {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
    }

    /// The events this request carried, in binary or batch mode.
    pub fn events(&self) -> Vec<PushedEvent> {
        if self.header("content-type").starts_with("application/cloudevents-batch+json") {
            let batch: Vec<serde_json::Value> = serde_json::from_slice(&self.body).expect("a batch is a JSON array");
            return batch
                .iter()
                .map(|e| PushedEvent {
                    id: e["id"].as_str().expect("every event has an id").to_owned(),
                    attempt: e["deliveryattempt"].as_u64().expect("every event names its attempt") as u32,
                    data: match &e["data"] {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    },
                })
                .collect();
        }
        vec![PushedEvent {
            id: self.header("ce-id"),
            attempt: self.header("ce-deliveryattempt").parse().expect("binary mode names the attempt"),
            data: String::from_utf8_lossy(&self.body).into_owned(),
        }]
    }
}

/// How the sink answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status with this body.
    Status(u16, String),
    /// `200` naming these event ids in `batchItemFailures`.
    PartialFailure(Vec<String>),
    /// This status (429 or 503) with `Retry-After: <seconds>`.
    RetryAfter(u16, u32),
    /// The reply, after a wait.
    Slow(Duration, Box<Reply>),
}

impl Reply {
    /// `200 OK`, empty.
    pub fn ok() -> Reply {
        Reply::Status(200, String::new())
    }
}

type Script = Box<dyn FnMut(&Received) -> Reply + Send>;

struct Shared {
    received: Mutex<Vec<Received>>,
    script: Mutex<Script>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    arrived: Notify,
}

/// A running sink; stops when dropped.
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http` or `https`.
    scheme: &'static str,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Starts a sink on a free loopback port that answers as `script` says.
    pub async fn start(script: impl FnMut(&Received) -> Reply + Send + 'static) -> anyhow::Result<Sink> {
        let (shared, app) = Self::app(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Sink { addr, scheme: "http", shared, server })
    }

    /// `start`, serving HTTPS with the PEM certificate `cert` and key `key`.
    pub async fn start_tls(
        cert: &str,
        key: &str,
        script: impl FnMut(&Received) -> Reply + Send + 'static,
    ) -> anyhow::Result<Sink> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        #[allow(deprecated)]
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes())?)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (shared, app) = Self::app(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Sink { addr, scheme: "https", shared, server })
    }

    fn app(script: impl FnMut(&Received) -> Reply + Send + 'static) -> (Arc<Shared>, axum::Router) {
        let shared = Arc::new(Shared {
            received: Mutex::default(),
            script: Mutex::new(Box::new(script)),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            arrived: Notify::new(),
        });
        let app = axum::Router::new().fallback(answer).with_state(shared.clone());
        (shared, app)
    }

    /// The URL of `path` on the sink.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Changes how the sink answers from now on.
    pub fn script(&self, script: impl FnMut(&Received) -> Reply + Send + 'static) {
        *self.shared.script.lock().expect("sink lock") = Box::new(script);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("sink lock").clone()
    }

    /// Every event of every request so far, in arrival order.
    pub fn events(&self) -> Vec<PushedEvent> {
        self.received().iter().flat_map(Received::events).collect()
    }

    /// The most requests that were being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until `check` holds for the requests so far, or fails after `within`.
    pub async fn wait_until(
        &self,
        within: Duration,
        what: &str,
        mut check: impl FnMut(&[Received]) -> bool,
    ) -> anyhow::Result<Vec<Received>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.shared.arrived.notified();
            let now = self.received();
            if check(&now) {
                return Ok(now);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                anyhow::bail!("sink: not within {within:?}: {what}; got {} requests", now.len());
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Counts a request as answered when its handler ends, also when the
/// client gave up and the handler was dropped mid-way.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _in_flight = InFlight(shared.clone());
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let received = Received { at: Instant::now(), headers, body };
    let reply = (shared.script.lock().expect("sink lock"))(&received);
    shared.received.lock().expect("sink lock").push(received);
    shared.arrived.notify_waiters();
    respond(reply).await
}

async fn respond(mut reply: Reply) -> Response {
    loop {
        return match reply {
            Reply::Slow(wait, then) => {
                tokio::time::sleep(wait).await;
                reply = *then;
                continue;
            }
            Reply::Status(code, body) => (StatusCode::from_u16(code).expect("a valid status"), body).into_response(),
            Reply::PartialFailure(ids) => {
                let items: Vec<serde_json::Value> =
                    ids.iter().map(|id| serde_json::json!({ "itemIdentifier": id })).collect();
                axum::Json(serde_json::json!({ "batchItemFailures": items })).into_response()
            }
            Reply::RetryAfter(code, seconds) => {
                let status = StatusCode::from_u16(code).expect("a valid status");
                (status, [("retry-after", seconds.to_string())], "slow down").into_response()
            }
        };
    }
}
