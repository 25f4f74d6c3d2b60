//! Produce and read end to end against the real broker.

use std::time::Duration;

use bytes::Bytes;
use sluice_client::proto as pb;
use sluice_client::proto::consumer_client::ConsumerClient;
use sluice_client::proto::producer_client::ProducerClient;
use sluice_client::{Admin, PartitionReader, Producer, ProducerConfig, StartAt};
use sluice_tests::{read_all, TestBroker};

fn msg(v: &str) -> pb::Message {
    pb::Message { key: None, value: Bytes::from(v.to_owned()), headers: vec![] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_messages_read_back_in_order_with_keys_and_headers() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("events", 4, pb::TopicConfig::default()).await?;
    let producer = Producer::new(broker.channel(), ProducerConfig::default());
    let mut acks = Vec::new();
    for i in 0..200 {
        let m = pb::Message {
            key: Some(Bytes::from(format!("user-{}", i % 7))),
            value: Bytes::from(format!("v{i}")),
            headers: vec![pb::Header { key: "n".into(), value: Bytes::from(i.to_string()) }],
        };
        acks.push(producer.enqueue("events", None, m).await?);
    }
    let mut deliveries = Vec::new();
    for a in acks {
        deliveries.push(a.await?);
    }
    for (i, d) in deliveries.iter().enumerate() {
        assert_eq!(
            d.partition,
            sluice_proto::partition_for_key(format!("user-{}", i % 7).as_bytes(), 4),
            "keyed routing"
        );
    }
    let mut total = 0;
    for p in 0..4 {
        let records = read_all(broker.channel(), "events", p).await?;
        for (expected_offset, r) in records.iter().enumerate() {
            assert_eq!(r.offset, expected_offset as u64, "offsets are dense");
            let i: usize = std::str::from_utf8(&r.value)?[1..].parse()?;
            assert_eq!(deliveries[i].offset, r.offset);
            assert_eq!(deliveries[i].partition, p);
            assert_eq!(r.headers[0].value, Bytes::from(i.to_string()));
            assert_eq!(r.key.as_deref(), Some(format!("user-{}", i % 7).as_bytes()));
        }
        let values: Vec<usize> =
            records.iter().map(|r| std::str::from_utf8(&r.value).expect("utf8")[1..].parse().expect("n")).collect();
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(values, sorted, "per-partition order is production order");
        total += records.len();
    }
    assert_eq!(total, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_idempotent_batch_gets_original_offsets_also_after_restart() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("idem", 1, pb::TopicConfig::default()).await?;
    let mut client = ProducerClient::new(broker.channel());
    let req = |seq: u64, v: &str| pb::ProduceRequest {
        topic: "idem".into(),
        partition: Some(0),
        messages: vec![msg(v), msg(v)],
        producer_id: 77,
        sequence: seq,
        request_id: 0,
    };
    let first = client.produce(req(0, "a")).await?.into_inner();
    let second = client.produce(req(1, "b")).await?.into_inner();
    let retry = client.produce(req(0, "a")).await?.into_inner();
    assert_eq!(retry.offsets, first.offsets);
    assert!(retry.duplicate && !first.duplicate);
    broker.restart().await?;
    let mut client = ProducerClient::new(broker.channel());
    let retry = client.produce(req(1, "b")).await?.into_inner();
    assert_eq!(retry.offsets, second.offsets, "dedup survives SIGKILL and restart");
    let gap = client.produce(req(5, "c")).await.expect_err("a sequence gap is refused");
    assert_eq!(gap.code(), tonic::Code::FailedPrecondition);
    let next = client.produce(req(2, "c")).await?.into_inner();
    assert_eq!(next.offsets, vec![4, 5]);
    assert_eq!(read_all(broker.channel(), "idem", 0).await?.len(), 6, "nothing stored twice");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_produce_pipelines_requests() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("stream", 2, pb::TopicConfig::default()).await?;
    let mut client = ProducerClient::new(broker.channel());
    let requests = (0..100u64).map(|i| pb::ProduceRequest {
        topic: "stream".into(),
        partition: Some((i % 2) as u32),
        messages: vec![msg(&format!("s{i}"))],
        producer_id: 0,
        sequence: 0,
        request_id: i,
    });
    let mut responses = client.produce_stream(tokio_stream::iter(requests)).await?.into_inner();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(r) = responses.message().await? {
        assert_eq!(r.error_code, 0, "{}", r.error_message);
        assert!(r.result.is_some());
        seen.insert(r.request_id);
    }
    assert_eq!(seen.len(), 100);
    assert_eq!(
        read_all(broker.channel(), "stream", 0).await?.len() + read_all(broker.channel(), "stream", 1).await?.len(),
        100
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_wakes_on_produce_and_timestamps_find_offsets() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("poll", 1, pb::TopicConfig::default()).await?;
    let mut reader = PartitionReader::new(broker.channel(), "poll", 0, StartAt::Latest).await?;
    let waiting = tokio::spawn(async move { reader.next_batch(Duration::from_secs(20)).await });
    let producer = Producer::new(broker.channel(), ProducerConfig::default());
    let before = unix_now_ms();
    // Keep producing until the waiting fetch returns: it must wake well before its 20 s deadline.
    let started = std::time::Instant::now();
    producer.send("poll", msg("first")).await?;
    let got = tokio::time::timeout(Duration::from_secs(10), waiting).await??;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(got?.first().map(|r| r.value.clone()), Some(Bytes::from("first")));

    producer.send("poll", msg("second")).await?;
    let mut consumer = ConsumerClient::new(broker.channel());
    let o = consumer
        .get_offsets(pb::GetOffsetsRequest { topic: "poll".into(), partition: 0, timestamp_ms: Some(before) })
        .await?
        .into_inner();
    assert_eq!((o.earliest_offset, o.latest_offset, o.timestamp_offset), (0, 2, Some(0)));
    let far = consumer
        .get_offsets(pb::GetOffsetsRequest {
            topic: "poll".into(),
            partition: 0,
            timestamp_ms: Some(before + 3_600_000),
        })
        .await?
        .into_inner();
    assert_eq!(far.timestamp_offset, Some(2), "a future timestamp maps to latest");
    let empty = consumer
        .fetch(pb::FetchRequest {
            topic: "poll".into(),
            partition: 0,
            offset: 2,
            max_wait_ms: 50,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(empty.records.is_empty());
    assert_eq!(empty.next_offset, 2);
    Ok(())
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_describes_updates_and_deletes_topics() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("a", 2, pb::TopicConfig { segment_bytes: 4096, ..Default::default() }).await?;
    admin.create_topic("b", 1, pb::TopicConfig::default()).await?;
    let producer = Producer::new(broker.channel(), ProducerConfig { max_batch_messages: 1, ..Default::default() });
    for i in 0..50 {
        producer.send_to("a", 0, msg(&format!("{i:0>500}"))).await?;
    }
    let d = admin.describe_topic("a").await?;
    assert_eq!(d.partitions.len(), 2);
    assert_eq!(d.partitions[0].latest_offset, 50);
    assert!(d.partitions[0].segments.len() > 3, "4 KiB segments roll: {:?}", d.partitions[0].segments.len());
    assert!(d.partitions[0].bytes > 25_000);
    let updated = admin.update_topic("a", pb::TopicConfig { retention_bytes: 1 << 30, ..Default::default() }).await?;
    assert_eq!(updated.config.map(|c| (c.retention_bytes, c.segment_bytes)), Some((1 << 30, 4096)));
    admin.delete_topic("b").await?;
    broker.restart().await?;
    let admin = Admin::new(broker.channel());
    let names: Vec<String> = admin.list_topics().await?.into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["a".to_owned()], "create, update and delete are durable");
    let d = admin.describe_topic("a").await?;
    assert_eq!(d.topic.and_then(|t| t.config).map(|c| c.retention_bytes), Some(1 << 30));
    assert_eq!(d.partitions[0].latest_offset, 50, "next offset recovered from metadata");
    admin.create_topic("b", 1, pb::TopicConfig::default()).await?;
    assert!(read_all(broker.channel(), "b", 0).await?.is_empty(), "a re-created topic starts empty");
    Ok(())
}
