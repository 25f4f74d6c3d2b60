//! Produces ten orders with the `Message` builder: a value, a key (one
//! customer's orders land on one partition, so they stay in order) and an
//! `amount` header that the `consume` example reads. The last order's amount
//! is not a number, so the consumer rejects it and it ends up dead-lettered.
//!
//! ```sh
//! cargo run --release --example produce -- [ADDR]   # or SLUICE_ADDR; default http://127.0.0.1:50051
//! ```

use sluice_client::{channel, proto, Admin, Message, Producer, ProducerConfig};

const TOPIC: &str = "orders";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SLUICE_ADDR").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let ch = channel(&addr)?;

    // First run creates the topic; later runs reuse it.
    let admin = Admin::new(ch.clone());
    if admin.describe_topic(TOPIC).await.is_err() {
        admin.create_topic(TOPIC, 3, proto::TopicConfig::default()).await?;
    }

    let producer = Producer::new(ch, ProducerConfig::default());
    // `enqueue` keeps many messages in flight; each returned future resolves
    // once that message is durably stored.
    let mut pending = Vec::new();
    for i in 1..=9u32 {
        let order = Message::new(format!("order {i}"))
            .key(format!("customer-{}", i % 3))
            .header("amount", (i * 10).to_string())
            .header("source", "produce-example");
        pending.push((i, producer.enqueue(TOPIC, None, order).await?));
    }
    for (i, stored) in pending {
        let d = stored.await?;
        println!("stored order {i} at partition {} offset {}", d.partition, d.offset);
    }

    // `send` is the one-at-a-time form: it returns when the message is stored.
    let bad = Message::new("order 10").key("customer-1").header("amount", "ten");
    let d = producer.send(TOPIC, bad).await?;
    println!("stored order 10 at partition {} offset {}", d.partition, d.offset);
    Ok(())
}
