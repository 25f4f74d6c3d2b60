//! Consumes `orders` as the group `billing` with a handler: returning `Ok`
//! acks a message, returning `Err` nacks it (it comes back after the group's
//! backoff). After three failed deliveries a message moves to the dead-letter
//! topic `orders.dlq` (see the `dead_letters` example). Stops once every
//! message is acked or dead-lettered, or after a minute.
//!
//! ```sh
//! cargo run --release --example consume -- [ADDR]   # or SLUICE_ADDR; default http://127.0.0.1:50051
//! ```

use std::time::{Duration, Instant};

use sluice_client::{channel, proto, Admin, CancellationToken, Consumer, ConsumerConfig, HandlerError, Received};

const TOPIC: &str = "orders";
const GROUP: &str = "billing";

/// The handler: bills an order by its `amount` header. Its error becomes the
/// nack reason, which the dead letter carries in `sluice-dlq-reason`.
async fn bill(m: Received) -> Result<(), HandlerError> {
    let order = String::from_utf8_lossy(&m.record.value).into_owned();
    let amount = m.header("amount").ok_or("no amount header")?;
    match std::str::from_utf8(amount)?.parse::<u64>() {
        Ok(amount) => {
            let (p, offset) = (m.record.partition, m.record.offset);
            println!("billed {order}: amount {amount} (partition {p}, offset {offset}, attempt {})", m.attempt);
            Ok(())
        }
        Err(e) => {
            println!("failed {order} (attempt {}): {e}", m.attempt);
            Err(format!("amount is not a number: {e}").into())
        }
    }
}

/// Cancels `stop` once the group has nothing left (no backlog, nothing
/// leased) or the deadline passes, so the example always ends.
async fn stop_when_drained(admin: Admin, stop: CancellationToken, within: Duration) -> sluice_client::Result<()> {
    let deadline = Instant::now() + within;
    let result = async {
        while Instant::now() < deadline {
            let g = admin.describe_group(GROUP).await?;
            if g.backlog_messages == 0 && g.in_flight == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("gave up waiting for the group to drain after {within:?}");
        Ok(())
    }
    .await;
    stop.cancel();
    result
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SLUICE_ADDR").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let ch = channel(&addr)?;

    // First run creates the group (reading `orders` from the start); later runs reuse it.
    let admin = Admin::new(ch.clone());
    if admin.describe_group(GROUP).await.is_err() {
        let config = proto::GroupConfig {
            topic: TOPIC.into(),
            max_delivery_attempts: Some(3),
            dead_letter_topic: "orders.dlq".into(),
            // Retry failures quickly so the demo is short: 100 ms, doubling, at most 1 s.
            backoff: Some(proto::Backoff {
                initial_ms: Some(100),
                max_ms: Some(1000),
                multiplier: Some(2.0),
                jitter: Some(0.1),
            }),
            ..Default::default()
        };
        admin.create_group(GROUP, config).await?;
    }

    let consumer = Consumer::new(ch, GROUP, ConsumerConfig::default());
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(stop_when_drained(admin.clone(), stop.clone(), Duration::from_secs(60)));
    // `run` returns after `stop` fires, once running handlers finished and their acks were sent.
    consumer.run(bill, stop).await?;
    watcher.await??;

    let g = admin.describe_group(GROUP).await?;
    println!("group {GROUP}: backlog {}, dead-lettered {}", g.backlog_messages, g.dead_lettered);
    Ok(())
}
