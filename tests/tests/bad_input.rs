//! Every bad request gets a precise status and changes nothing.

use bytes::Bytes;
use sluice_client::proto as pb;
use sluice_client::proto::admin_client::AdminClient;
use sluice_client::proto::consumer_client::ConsumerClient;
use sluice_client::proto::producer_client::ProducerClient;
use sluice_tests::{read_all, send_raw, TestBroker};
use tonic::Code;

fn produce(topic: &str, partition: Option<u32>, messages: Vec<pb::Message>) -> pb::ProduceRequest {
    pb::ProduceRequest { topic: topic.into(), partition, messages, ..Default::default() }
}

fn msg(n: usize) -> pb::Message {
    pb::Message { key: None, value: Bytes::from(vec![1u8; n]), headers: vec![] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_statuses_and_touch_nothing() -> anyhow::Result<()> {
    let broker = TestBroker::start_with(&["--max-partitions", "64"]).await?;
    let mut admin = AdminClient::new(broker.channel());
    let mut producer = ProducerClient::new(broker.channel());
    let mut consumer = ConsumerClient::new(broker.channel());
    let create =
        |name: &str, partitions: u32| pb::CreateTopicRequest { name: name.into(), partitions, ..Default::default() };

    admin.create_topic(create("t", 2)).await?;
    producer.produce(produce("t", Some(0), vec![msg(10)])).await?;

    let cases: Vec<(&str, tonic::Status, Code)> = vec![
        ("bad name", admin.create_topic(create("no/slash", 1)).await.expect_err("rejected"), Code::InvalidArgument),
        ("empty name", admin.create_topic(create("", 1)).await.expect_err("rejected"), Code::InvalidArgument),
        ("zero partitions", admin.create_topic(create("z", 0)).await.expect_err("rejected"), Code::InvalidArgument),
        (
            "absurd partitions",
            admin.create_topic(create("z", 1_000_000)).await.expect_err("rejected"),
            Code::InvalidArgument,
        ),
        ("duplicate topic", admin.create_topic(create("t", 1)).await.expect_err("rejected"), Code::AlreadyExists),
        (
            "unknown topic",
            producer.produce(produce("nope", None, vec![msg(1)])).await.expect_err("rejected"),
            Code::NotFound,
        ),
        (
            "unknown partition",
            producer.produce(produce("t", Some(9), vec![msg(1)])).await.expect_err("rejected"),
            Code::NotFound,
        ),
        (
            "empty batch",
            producer.produce(produce("t", Some(0), vec![])).await.expect_err("rejected"),
            Code::InvalidArgument,
        ),
        (
            "oversized message",
            producer.produce(produce("t", Some(0), vec![msg(2 << 20)])).await.expect_err("rejected"),
            Code::InvalidArgument,
        ),
        (
            "idempotent without partition",
            producer
                .produce(pb::ProduceRequest { producer_id: 5, ..produce("t", None, vec![msg(1)]) })
                .await
                .expect_err("rejected"),
            Code::InvalidArgument,
        ),
        (
            "offset past the end",
            consumer
                .fetch(pb::FetchRequest { topic: "t".into(), partition: 0, offset: 99, ..Default::default() })
                .await
                .expect_err("rejected"),
            Code::OutOfRange,
        ),
        (
            "enormous wait",
            consumer
                .fetch(pb::FetchRequest {
                    topic: "t".into(),
                    partition: 0,
                    max_wait_ms: u32::MAX,
                    ..Default::default()
                })
                .await
                .expect_err("rejected"),
            Code::InvalidArgument,
        ),
        (
            "fetch unknown partition",
            consumer
                .fetch(pb::FetchRequest { topic: "t".into(), partition: 2, ..Default::default() })
                .await
                .expect_err("rejected"),
            Code::NotFound,
        ),
        (
            "unknown durability",
            admin
                .create_topic(pb::CreateTopicRequest {
                    name: "d".into(),
                    partitions: 1,
                    config: Some(pb::TopicConfig { durability: 42, ..Default::default() }),
                    ..Default::default()
                })
                .await
                .expect_err("rejected"),
            Code::InvalidArgument,
        ),
        (
            "replicas a single broker cannot hold",
            admin
                .create_topic(pb::CreateTopicRequest { replication_factor: 2, ..create("r", 1) })
                .await
                .expect_err("rejected"),
            Code::InvalidArgument,
        ),
        (
            "delete unknown",
            admin.delete_topic(pb::DeleteTopicRequest { name: "ghost".into() }).await.expect_err("rejected"),
            Code::NotFound,
        ),
    ];
    for (what, status, code) in cases {
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(status.message().len() > 15, "{what}: the message should say what to do: {:?}", status.message());
        assert!(status.metadata().get("sluice-reason").is_some(), "{what}: stable reason code present");
    }

    // Malformed protobuf bytes on the wire: a decode error status, and the broker stays up.
    let raw = tonic::client::Grpc::new(broker.channel());
    let bad = send_raw(raw, "/sluice.v1.Producer/Produce", vec![0xff, 0xff, 0xff, 0xff, 0x0f]).await;
    assert_eq!(bad.expect_err("garbage rejected").code(), Code::Internal);

    let records = read_all(broker.channel(), "t", 0).await?;
    assert_eq!(records.len(), 1, "the acknowledged message is untouched");
    let topics = admin.list_topics(pb::ListTopicsRequest {}).await?.into_inner().topics;
    assert_eq!(topics.len(), 1, "no topic created by a rejected request");
    Ok(())
}
