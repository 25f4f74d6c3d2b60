//! The HTTP gateway: events in over HTTP (`POST /v1/topics/{topic}/events`)
//! in every CloudEvents 1.0 mode, or as plain bodies ([`cloudevents`]),
//! produced through the same path as gRPC (`topic::produce`), so budget,
//! limits, routing, durability and, in a cluster, forwarding to the
//! partition's leader are the same. Answers `202` with each event's
//! partition and offset once durable; errors come from the one table
//! ([`status`]).

pub mod cloudevents;
pub mod status;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::name::TopicName;
use crate::topic::produce::{ProduceBatch, Producer};

/// Serves the gateway on `listener` until `stop`; bodies above `max_body`
/// bytes are refused (`413`) before they are read in full.
pub async fn serve(listener: TcpListener, producer: Producer, max_body: usize, stop: CancellationToken) {
    let app = axum::Router::new()
        .route("/v1/topics/{topic}/events", axum::routing::post(publish))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(producer);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::warn!(error = %e, "the HTTP gateway stopped");
    }
}

/// `POST /v1/topics/{topic}/events`.
async fn publish(
    State(producer): State<Producer>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match publish_events(&producer, topic, &headers, body).await {
        Ok(answer) => (StatusCode::ACCEPTED, axum::Json(answer)).into_response(),
        Err(failure) => failure.into_response(),
    }
}

async fn publish_events(
    producer: &Producer,
    topic: String,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, status::Failure> {
    let body = body.map_err(status::Failure::from_rejection)?;
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
    let produced = producer.produce(batch).await?;
    let events: Vec<serde_json::Value> = produced
        .partitions
        .iter()
        .zip(&produced.offsets)
        .map(|(p, o)| serde_json::json!({ "partition": p, "offset": o }))
        .collect();
    Ok(serde_json::json!({ "events": events }))
}
