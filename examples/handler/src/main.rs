//! An example push handler for Sluice: an HTTP service a push subscription
//! delivers CloudEvents to (binary mode for one event, batch mode for
//! several). It prints each event it gets and answers:
//!
//! - `POST /ok`: `200`, the events are acked;
//! - `POST /fail`: `500` with a reason, so the broker retries them and, once
//!   their attempts run out, moves them to the group's dead-letter topic;
//! - `GET /received`: how many events `/ok` took, as JSON (for the demo to check).
//!
//! Listens on `HANDLER_LISTEN` (default `0.0.0.0:8080`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

/// What one request carried: (id, type, attempt) per event.
fn events(headers: &HeaderMap, body: &Bytes) -> Vec<(String, String, String)> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if header("content-type").starts_with("application/cloudevents-batch+json") {
        let batch: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap_or_default();
        return batch
            .iter()
            .map(|e| {
                let text = |k: &str| e[k].as_str().map(str::to_owned).unwrap_or_else(|| e[k].to_string());
                (text("id"), text("type"), text("deliveryattempt"))
            })
            .collect();
    }
    vec![(header("ce-id"), header("ce-type"), header("ce-deliveryattempt"))]
}

async fn ok(State(received): State<Arc<AtomicU64>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    for (id, kind, attempt) in events(&headers, &body) {
        println!("handled event {id} ({kind}), attempt {attempt}: {}", String::from_utf8_lossy(&body));
        received.fetch_add(1, Ordering::SeqCst);
    }
    StatusCode::OK
}

async fn fail(headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    for (id, kind, attempt) in events(&headers, &body) {
        println!("failing event {id} ({kind}), attempt {attempt}");
    }
    (StatusCode::INTERNAL_SERVER_ERROR, "payment service unreachable")
}

async fn count(State(received): State<Arc<AtomicU64>>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "received": received.load(Ordering::SeqCst) }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("HANDLER_LISTEN").unwrap_or_else(|_| "0.0.0.0:8080".into());
    let app = axum::Router::new()
        .route("/ok", post(ok))
        .route("/fail", post(fail))
        .route("/received", get(count))
        .with_state(Arc::new(AtomicU64::new(0)));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("example handler on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
