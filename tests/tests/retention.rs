//! Retention removes whole old segments: offsets vanish, earliest moves, disk shrinks.

use std::time::Duration;

use bytes::Bytes;
use sluice_client::proto as pb;
use sluice_client::proto::consumer_client::ConsumerClient;
use sluice_client::{Admin, Consumer, ConsumerConfig, Producer, ProducerConfig};
use sluice_tests::{create_group, dir_size, eventually, group_config, produce_values, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_bytes_drops_old_segments_and_returns_disk_space() -> anyhow::Result<()> {
    let broker = TestBroker::start_with(&["--retention-check-ms", "100", "--write-buffer-bytes", "1048576"]).await?;
    let admin = Admin::new(broker.channel());
    // Unlimited at first, so the peak is measured before retention runs.
    let config = pb::TopicConfig { segment_bytes: 256 << 10, ..Default::default() };
    admin.create_topic("logs", 1, config).await?;
    let producer = Producer::new(broker.channel(), ProducerConfig::default());
    let value = Bytes::from(vec![7u8; 4000]);
    let mut acks = Vec::new();
    for _ in 0..6000 {
        acks.push(
            producer.enqueue("logs", Some(0), pb::Message { key: None, value: value.clone(), headers: vec![] }).await?,
        );
    }
    for a in acks {
        a.await?;
    }
    let peak = dir_size(&broker.data_dir());
    assert!(peak > 15 << 20, "24 MB produced, {peak} bytes on disk");
    admin.update_topic("logs", pb::TopicConfig { retention_bytes: 1 << 20, ..Default::default() }).await?;

    let earliest = eventually(Duration::from_secs(30), "earliest offset to move", || async {
        let d = admin.describe_topic("logs").await?;
        let p = &d.partitions[0];
        Ok((p.earliest_offset > 0 && p.bytes <= (1 << 20) + (256 << 10)).then_some(p.earliest_offset))
    })
    .await?;
    assert!(earliest > 5000, "only about 1 MiB kept: earliest {earliest}");
    let mut consumer = ConsumerClient::new(broker.channel());
    let gone =
        consumer.fetch(pb::FetchRequest { topic: "logs".into(), partition: 0, offset: 0, ..Default::default() }).await;
    assert_eq!(gone.expect_err("deleted offsets are out of range").code(), tonic::Code::OutOfRange);
    let kept = consumer
        .fetch(pb::FetchRequest { topic: "logs".into(), partition: 0, offset: earliest, ..Default::default() })
        .await?;
    assert_eq!(kept.into_inner().records.first().map(|r| r.offset), Some(earliest));

    let shrunk = eventually(Duration::from_secs(30), "the data directory to shrink", || async {
        let now = dir_size(&broker.data_dir());
        Ok((now < peak / 3).then_some(now))
    })
    .await?;
    eprintln!("data dir: peak {peak} bytes, after retention {shrunk} bytes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_time_expires_everything_old() -> anyhow::Result<()> {
    let broker = TestBroker::start_with(&["--retention-check-ms", "100"]).await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("ephemeral", 1, pb::TopicConfig { retention_ms: 1500, ..Default::default() }).await?;
    let producer = Producer::new(broker.channel(), ProducerConfig::default());
    for i in 0..10 {
        producer
            .send("ephemeral", pb::Message { key: None, value: Bytes::from(format!("m{i}")), headers: vec![] })
            .await?;
    }
    eventually(Duration::from_secs(20), "every message to expire", || async {
        let p = admin.describe_topic("ephemeral").await?.partitions.remove(0);
        Ok((p.earliest_offset == 10 && p.latest_offset == 10).then_some(()))
    })
    .await?;
    let d = producer
        .send("ephemeral", pb::Message { key: None, value: Bytes::from_static(b"new"), headers: vec![] })
        .await?;
    assert_eq!(d.offset, 10, "offsets continue after everything expired");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_message_removed_by_retention_is_settled_not_retried_forever() -> anyhow::Result<()> {
    let broker = TestBroker::start_with(&["--retention-check-ms", "100"]).await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("short", 1, pb::TopicConfig { retention_ms: 1500, ..Default::default() }).await?;
    let config = pb::GroupConfig {
        max_delivery_attempts: Some(1),
        dead_letter_topic: "short.dlq".into(),
        ..group_config("short", 60_000)
    };
    create_group(broker.channel(), "late", config).await?;
    produce_values(broker.channel(), "short", (0..3).map(|i| format!("m{i}"))).await?;
    let consumer = Consumer::new(broker.channel(), "late", ConsumerConfig::default());
    let leased = consumer.pull(10, Duration::from_secs(2)).await?;
    assert_eq!(leased.len(), 3);
    eventually(Duration::from_secs(20), "the leased messages to expire", || async {
        let p = admin.describe_topic("short").await?.partitions.remove(0);
        Ok((p.earliest_offset == 3).then_some(()))
    })
    .await?;
    consumer.nack(leased.into_iter().map(|m| m.ack_id).collect(), None, "too late").await?;
    let g = eventually(Duration::from_secs(10), "the group to settle the expired messages", || async {
        let g = admin.describe_group("late").await?;
        Ok((g.backlog_messages == 0 && g.in_flight == 0).then_some(g))
    })
    .await?;
    assert_eq!(g.dead_lettered, 0, "nothing was left to dead-letter");
    let dlq = admin.describe_topic("short.dlq").await?;
    assert!(dlq.partitions.iter().all(|p| p.latest_offset == 0), "the dead-letter topic stays empty");
    Ok(())
}
