//! The HTTP gateway: events in over HTTP (`POST /v1/topics/{topic}/events`)
//! in every CloudEvents 1.0 mode, or as plain bodies ([`cloudevents`]),
//! produced through the same path as gRPC (`topic::produce`), so budget,
//! limits, routing, durability and, in a cluster, forwarding to the
//! partition's leader are the same. Answers `202` with each event's
//! partition and offset once durable; errors come from the one table
//! ([`status`]).
//!
//! # Hostile clients
//! Connections are capped (`gateway-max-connections`; one over the cap is
//! closed at once); a connection that sends no complete request head within
//! `gateway-read-timeout-ms` (also an idle keep-alive one) is closed, and a
//! body not received in full within it is answered `408`; a body above
//! `max-request-bytes` is refused (`413`) from its `content-length`, or as
//! soon as it grows past it. A head above 64 KiB is answered `431`. The
//! bodies being read or stored at once share one budget
//! (`gateway-max-inflight-body-bytes`): a request that finds it spent waits
//! at most 100 ms, then gets `429` with `Retry-After`. Memory is thus bounded
//! by the connection cap times the head buffer, plus the body budget.

pub mod cloudevents;
pub mod status;
mod structured;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::auth::access::{Caller, Permissions};
use crate::auth::{Authenticator, Credentials, Principal};
use crate::error::Error;
use crate::name::TopicName;
use crate::tls::ServerTls;
use crate::topic::produce::{ProduceBatch, Producer};

/// The route events are published on.
const EVENTS_ROUTE: &str = "/v1/topics/{topic}/events";

/// The caller of a request to `route` (its row in `auth::methods::HTTP`).
pub fn caller(principal: Principal, method: &str, route: &str) -> Caller {
    let (method, access) = crate::auth::methods::http(method, route);
    Caller { principal: Arc::new(principal), method, access }
}

/// Most bytes of a request head (request line and headers).
const MAX_HEAD_BYTES: usize = 64 << 10;

/// The gateway's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body, bytes.
    pub max_body: usize,
    /// Most open connections.
    pub max_connections: usize,
    /// How long a request head, or a whole body, may take to arrive (and
    /// how long a keep-alive connection may stay idle).
    pub read_timeout: Duration,
    /// Body bytes all requests may hold at once, from the first byte read to the answer.
    pub inflight_body_bytes: usize,
}

/// How long a request waits for room in the body budget before `429`.
const BUDGET_WAIT: Duration = Duration::from_millis(100);

#[derive(Clone)]
struct Gateway {
    producer: Producer,
    auth: Arc<Authenticator>,
    perms: Arc<Permissions>,
    limits: Limits,
    /// Permits are body bytes (`Limits::inflight_body_bytes`).
    bodies: Arc<Semaphore>,
}

/// How the gateway is reached: its listener, TLS (if on) and who may call.
pub struct Door {
    /// The bound listener.
    pub listener: TcpListener,
    /// TLS for every connection, if on.
    pub tls: Option<Arc<ServerTls>>,
    /// Turns each request's credentials into a principal.
    pub auth: Arc<Authenticator>,
    /// Decides what each principal may do.
    pub perms: Arc<Permissions>,
}

/// Serves the gateway at `door` until `stop`, within `limits`.
pub async fn serve(door: Door, producer: Producer, limits: Limits, stop: CancellationToken) {
    let Door { listener, tls, auth, perms } = door;
    let bodies = Arc::new(Semaphore::new(limits.inflight_body_bytes));
    let app = axum::Router::new().route(EVENTS_ROUTE, axum::routing::post(publish)).with_state(Gateway {
        producer,
        auth,
        perms,
        limits,
        bodies,
    });
    serve_app((listener, tls), app, limits, stop).await
}

/// Serves `app` on `listener` (over TLS if given) until `stop`: connections
/// capped at `limits.max_connections`, heads bounded in size and time, each
/// TLS client's verified certificate in its requests' extensions
/// ([`ClientCertificate`]). The gateway's and the metrics endpoint's loop.
pub async fn serve_app(
    (listener, tls): (TcpListener, Option<Arc<ServerTls>>),
    app: axum::Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "an HTTP listener could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::REJECTED, "reason" => "too_many_connections").increment(1);
            tracing::debug!(%peer, "HTTP connection refused: at its connection cap");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (stop, acceptor, app) = (stop.clone(), tls.as_ref().map(|t| t.acceptor()), app.clone());
        tokio::spawn(async move {
            match acceptor {
                None => {
                    // The router serves hyper's request bodies as they are.
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    serve_connection(stream, service, limits, peer, stop).await
                }
                Some(acceptor) => match crate::tls::accept(acceptor, stream).await {
                    Ok(stream) => {
                        // The verified client certificate (mTLS), for every request on this connection.
                        let leaf = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
                        let app = app.layer(axum::Extension(ClientCertificate(leaf.map(Arc::from))));
                        let service = hyper_util::service::TowerToHyperService::new(app);
                        serve_connection(stream, service, limits, peer, stop).await
                    }
                    Err(e) => crate::tls::handshake_failed(peer, &e.to_string()),
                },
            }
            drop(permit);
        });
    }
}

/// Serves HTTP/1.1 requests on one connection until it ends or `stop`.
async fn serve_connection<IO, S>(
    stream: IO,
    service: S,
    limits: Limits,
    peer: std::net::SocketAddr,
    stop: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<hyper::body::Incoming>, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "gateway connection ended");
            }
        }
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The leaf certificate (DER) a TLS client presented and the listener
/// verified, if any.
#[derive(Clone)]
pub struct ClientCertificate(pub Option<Arc<[u8]>>);

/// `POST /v1/topics/{topic}/events`.
async fn publish(
    State(gateway): State<Gateway>,
    Path(topic): Path<String>,
    certificate: Option<axum::Extension<ClientCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let certificate = certificate.and_then(|axum::Extension(ClientCertificate(c))| c);
    match publish_events(&gateway, topic, (&headers, certificate.as_deref()), body).await {
        Ok(answer) => (StatusCode::ACCEPTED, axum::Json(answer)).into_response(),
        Err(failure) => failure.into_response(),
    }
}

async fn publish_events(
    gateway: &Gateway,
    topic: String,
    (headers, certificate): (&HeaderMap, Option<&[u8]>),
    body: Body,
) -> Result<serde_json::Value, status::Failure> {
    // Before the body is read: an unauthenticated caller costs no body budget.
    let authorization = headers.get(axum::http::header::AUTHORIZATION).map(|v| v.as_bytes());
    let principal = gateway.auth.authenticate(Credentials { authorization, certificate }, "http")?;
    gateway.perms.guard_for(Some(caller(principal, "POST", EVENTS_ROUTE))).require(&topic)?;
    // Held until the answer: the body lives on in the messages being stored.
    let (body, _held) = read_body(headers, body, gateway).await?;
    let topic = TopicName::parse("topic", topic)?;
    let content_type = match headers.get(axum::http::header::CONTENT_TYPE).map(|v| v.to_str()) {
        None => None,
        Some(Ok(c)) => Some(c.to_owned()),
        Some(Err(_)) => return Err(Error::invalid("content-type", "not visible ASCII").into()),
    };
    let mut pairs = Vec::new();
    for (name, value) in headers.iter().filter(|(n, _)| n.as_str().starts_with("ce-")) {
        let value = value
            .to_str()
            .map_err(|_| Error::invalid("event", format!("header {name} is not visible ASCII (percent-encode it)")))?;
        pairs.push((name.as_str().to_owned(), value.to_owned()));
    }
    let messages = cloudevents::messages(&pairs, content_type.as_deref(), body)?;
    let batch = ProduceBatch { topic, partition: None, messages, producer: None, forward: true };
    let produced = gateway.producer.produce(batch).await?;
    let events: Vec<serde_json::Value> = produced
        .partitions
        .iter()
        .zip(&produced.offsets)
        .map(|(p, o)| serde_json::json!({ "partition": p, "offset": o }))
        .collect();
    Ok(serde_json::json!({ "events": events }))
}

/// `n` more bytes of the body budget, waiting at most `BUDGET_WAIT`.
async fn reserve(
    bodies: &Arc<Semaphore>,
    held: &mut Option<OwnedSemaphorePermit>,
    n: usize,
) -> Result<(), status::Failure> {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    if n == 0 {
        return Ok(());
    }
    let permit = match bodies.clone().try_acquire_many_owned(n) {
        Ok(permit) => permit,
        Err(_) => match tokio::time::timeout(BUDGET_WAIT, bodies.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(Error::Overloaded("gateway-max-inflight-body-bytes").into()),
        },
    };
    match held {
        Some(h) => h.merge(permit),
        None => *held = Some(permit),
    }
    Ok(())
}

/// The whole body, within the size cap, the body budget (the permit held
/// for it is returned) and the read timeout.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    gateway: &Gateway,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), status::Failure> {
    let limits = gateway.limits;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Err(status::Failure::too_large());
    }
    let mut held = None;
    let declared = declared.map_or(0, |n| n as usize);
    reserve(&gateway.bodies, &mut held, declared).await?;
    let mut chunks = body.into_data_stream();
    let mut buffer = BytesMut::with_capacity(declared);
    let read = async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| status::Failure::bad_body(&e.to_string()))?;
            if buffer.len() + chunk.len() > limits.max_body {
                return Err(status::Failure::too_large());
            }
            // A body longer than declared (or with none declared) reserves as it grows.
            let beyond = (buffer.len() + chunk.len()).saturating_sub(declared.max(buffer.len()));
            reserve(&gateway.bodies, &mut held, beyond).await?;
            buffer.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(limits.read_timeout, read).await {
        Ok(result) => result.map(|()| (buffer.freeze(), held)),
        Err(_) => Err(status::Failure::body_timeout(limits.read_timeout)),
    }
}
