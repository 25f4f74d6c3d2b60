//! Benchmark: a burst of 10,000 simultaneous lease expiries on their last
//! attempt, and what it does to the other consumers of the same group.
//!
//! One consumer pulls 10,000 messages and never acks them; their leases end
//! together, every one has used its last attempt, so all 10,000 go to the
//! dead-letter topic at once. Meanwhile a second consumer keeps pulling and
//! acking other messages of the group; its Pull and Ack latencies, split by
//! whether a request overlapped the burst (ended after the leases did, began
//! before the last dead letter landed), are the figures. Also reported: how long until all
//! 10,000 are in the dead-letter topic.
//!
//! `cargo run --release -p sluice-tests --example dead_letter_burst`
//! (SLUICE_BIN_DIR picks another broker build, to compare two versions).

use std::time::{Duration, Instant};

use sluice_client::proto as pb;
use sluice_client::Admin;
use sluice_tests::{message, TestBroker};

const BURST: usize = 10_000;
const WORK: usize = 40_000;
const LEASE_MS: u32 = 3_000;

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn summary(name: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        percentile(&v, 1.0)
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let ch = broker.channel();
    let admin = Admin::new(ch.clone());
    admin.create_topic("burst", 4, pb::TopicConfig::default()).await?;
    admin.create_topic("burst-dlq", 4, pb::TopicConfig::default()).await?;
    let config = pb::GroupConfig {
        topic: "burst".into(),
        ack_deadline_ms: LEASE_MS,
        max_delivery_attempts: Some(1),
        dead_letter_topic: "burst-dlq".into(),
        ..Default::default()
    };
    admin.create_group("g", config).await?;
    let mut producer = pb::producer_client::ProducerClient::new(ch.clone());
    for chunk in 0..(BURST + WORK) / 500 {
        let messages = (0..500).map(|i| message(format!("m-{}", chunk * 500 + i))).collect();
        let request = pb::ProduceRequest { topic: "burst".into(), messages, ..Default::default() };
        producer.produce(request).await?;
    }
    let mut consumer = pb::consumer_client::ConsumerClient::new(ch.clone());
    let mut victims = 0;
    while victims < BURST {
        let pull = pb::PullRequest {
            group: "g".into(),
            consumer_id: "victim".into(),
            max_messages: (BURST - victims).min(10_000) as u32,
            max_wait_ms: 1000,
        };
        victims += consumer.pull(pull).await?.into_inner().messages.len();
    }
    let expiry = Instant::now() + Duration::from_millis(u64::from(LEASE_MS));
    println!("{BURST} messages leased to a consumer that will not ack; leases end in {LEASE_MS} ms");

    // Every worker request as (start, end, which): bucketed afterwards by whether it overlapped
    // the burst, i.e. ended after the leases did and started before the last dead letter landed.
    let mut requests: Vec<(Instant, Instant, &str)> = Vec::new();
    let mut acked = 0usize;
    let mut dead_lettered_at = None;
    let end = expiry + Duration::from_secs(30);
    while Instant::now() < end && acked < WORK {
        let t = Instant::now();
        let pull =
            pb::PullRequest { group: "g".into(), consumer_id: "worker".into(), max_messages: 10, max_wait_ms: 100 };
        let got = consumer.pull(pull).await?.into_inner().messages;
        requests.push((t, Instant::now(), "pull"));
        let ids: Vec<String> = got.iter().map(|m| m.ack_id.clone()).collect();
        if !ids.is_empty() {
            let t = Instant::now();
            consumer.ack(pb::AckRequest { group: "g".into(), ack_ids: ids.clone() }).await?;
            requests.push((t, Instant::now(), "ack"));
        }
        acked += ids.len();
        if Instant::now() >= expiry && dead_lettered_at.is_none() {
            let info = admin.describe_group("g").await?;
            if info.partitions.iter().map(|p| p.dead_lettered).sum::<u64>() >= BURST as u64 {
                dead_lettered_at = Some(Instant::now());
            }
        }
        if dead_lettered_at.is_some_and(|d| d.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    let burst_end = dead_lettered_at.unwrap_or_else(Instant::now);
    let bucket = |which: &str, during: bool| -> Vec<Duration> {
        requests
            .iter()
            .filter(|(start, end, w)| *w == which && ((*end > expiry && *start < burst_end) == during))
            .map(|(start, end, _)| *end - *start)
            .collect()
    };
    println!("{}", summary("pull outside the burst", bucket("pull", false)));
    println!("{}", summary("ack outside the burst", bucket("ack", false)));
    println!("{}", summary("pull overlapping the burst", bucket("pull", true)));
    println!("{}", summary("ack overlapping the burst", bucket("ack", true)));
    match dead_lettered_at {
        Some(d) => {
            println!("all {BURST} dead-lettered {:.0} ms after the leases ended", (d - expiry).as_secs_f64() * 1000.0)
        }
        None => println!("not all {BURST} dead-lettered within 30 s of the leases ending"),
    }
    drop(broker);
    Ok(())
}
