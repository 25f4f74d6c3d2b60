//! The API contract an outside client relies on: an invalid topic or group name
//! is INVALID_ARGUMENT on every RPC that takes one, and every error status
//! carries a `sluice-reason`.

use sluice_client::proto as pb;
use sluice_client::proto::admin_client::AdminClient;
use sluice_client::proto::consumer_client::ConsumerClient;
use sluice_client::proto::producer_client::ProducerClient;
use sluice_tests::{create_group, group_config, message, TestBroker};
use tonic::{Code, Status};

fn reason(s: &Status) -> &str {
    s.metadata().get("sluice-reason").and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn refused<T>(what: &str, r: Result<T, Status>) -> Status {
    match r {
        Ok(_) => panic!("{what}: accepted"),
        Err(s) => s,
    }
}

/// The first item of a server stream opened with `open`: its status when the call fails.
async fn stream_error<T>(
    what: &str,
    open: Result<tonic::Response<tonic::Streaming<T>>, Status>,
) -> anyhow::Result<Status> {
    match open {
        Err(s) => Ok(s),
        Ok(r) => match r.into_inner().message().await {
            Err(s) => Ok(s),
            Ok(_) => anyhow::bail!("{what}: the stream did not fail"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_are_invalid_argument_on_every_rpc() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let mut admin = AdminClient::new(broker.channel());
    let mut producer = ProducerClient::new(broker.channel());
    let mut consumer = ConsumerClient::new(broker.channel());
    admin.create_topic(pb::CreateTopicRequest { name: "t".into(), partitions: 1, config: None }).await?;
    create_group(broker.channel(), "g", group_config("t", 1000)).await?;
    let bad = "a/b";
    let produce = pb::ProduceRequest { topic: bad.into(), messages: vec![message("x")], ..Default::default() };
    let mut cases: Vec<(&str, Status)> = vec![
        ("produce", refused("produce", producer.produce(produce.clone()).await)),
        ("fetch", refused("fetch", consumer.fetch(pb::FetchRequest { topic: bad.into(), ..Default::default() }).await)),
        (
            "get offsets",
            refused(
                "get offsets",
                consumer.get_offsets(pb::GetOffsetsRequest { topic: bad.into(), ..Default::default() }).await,
            ),
        ),
        ("pull", refused("pull", consumer.pull(pb::PullRequest { group: bad.into(), ..Default::default() }).await)),
        (
            "ack",
            refused("ack", consumer.ack(pb::AckRequest { group: bad.into(), ack_ids: vec!["0:0:1".into()] }).await),
        ),
        (
            "nack",
            refused(
                "nack",
                consumer
                    .nack(pb::NackRequest { group: bad.into(), ack_ids: vec!["0:0:1".into()], ..Default::default() })
                    .await,
            ),
        ),
        (
            "modify ack deadline",
            refused(
                "modify ack deadline",
                consumer
                    .modify_ack_deadline(pb::ModifyAckDeadlineRequest {
                        group: bad.into(),
                        ack_ids: vec!["0:0:1".into()],
                        ack_deadline_ms: 1000,
                    })
                    .await,
            ),
        ),
        (
            "describe topic",
            refused("describe topic", admin.describe_topic(pb::DescribeTopicRequest { name: bad.into() }).await),
        ),
        (
            "update topic",
            refused(
                "update topic",
                admin
                    .update_topic(pb::UpdateTopicRequest {
                        name: bad.into(),
                        config: Some(pb::TopicConfig { retention_ms: 1000, ..Default::default() }),
                    })
                    .await,
            ),
        ),
        (
            "delete topic",
            refused("delete topic", admin.delete_topic(pb::DeleteTopicRequest { name: bad.into() }).await),
        ),
        (
            "create group with an invalid topic",
            refused(
                "create group with an invalid topic",
                admin
                    .create_group(pb::CreateGroupRequest { name: "g2".into(), config: Some(group_config(bad, 1000)) })
                    .await,
            ),
        ),
        (
            "create group with an invalid dead-letter topic",
            refused(
                "create group with an invalid dead-letter topic",
                admin
                    .create_group(pb::CreateGroupRequest {
                        name: "g2".into(),
                        config: Some(pb::GroupConfig { dead_letter_topic: bad.into(), ..group_config("t", 1000) }),
                    })
                    .await,
            ),
        ),
        (
            "update group",
            refused(
                "update group",
                admin
                    .update_group(pb::UpdateGroupRequest {
                        name: bad.into(),
                        config: Some(pb::GroupConfig { ack_deadline_ms: 2000, ..Default::default() }),
                    })
                    .await,
            ),
        ),
        (
            "update group to an invalid dead-letter topic",
            refused(
                "update group to an invalid dead-letter topic",
                admin
                    .update_group(pb::UpdateGroupRequest {
                        name: "g".into(),
                        config: Some(pb::GroupConfig { dead_letter_topic: bad.into(), ..Default::default() }),
                    })
                    .await,
            ),
        ),
        (
            "describe group",
            refused("describe group", admin.describe_group(pb::DescribeGroupRequest { name: bad.into() }).await),
        ),
        (
            "delete group",
            refused("delete group", admin.delete_group(pb::DeleteGroupRequest { name: bad.into() }).await),
        ),
        (
            "list groups of an invalid topic",
            refused("list groups", admin.list_groups(pb::ListGroupsRequest { topic: bad.into() }).await),
        ),
        (
            "seek group",
            refused(
                "seek group",
                admin
                    .seek_group(pb::SeekGroupRequest {
                        name: bad.into(),
                        partition: None,
                        target: Some(pb::seek_group_request::Target::Earliest(true)),
                    })
                    .await,
            ),
        ),
        (
            "peek dead letters",
            refused(
                "peek dead letters",
                admin.peek_dead_letters(pb::PeekDeadLettersRequest { group: bad.into(), max_messages: 1 }).await,
            ),
        ),
        (
            "redrive dead letters",
            refused(
                "redrive dead letters",
                admin
                    .redrive_dead_letters(pb::RedriveDeadLettersRequest { group: bad.into(), ..Default::default() })
                    .await,
            ),
        ),
        (
            "redrive dead letters to an invalid topic",
            refused(
                "redrive dead letters to an invalid topic",
                admin
                    .redrive_dead_letters(pb::RedriveDeadLettersRequest {
                        group: "g".into(),
                        target_topic: bad.into(),
                        ..Default::default()
                    })
                    .await,
            ),
        ),
        (
            "purge dead letters",
            refused(
                "purge dead letters",
                admin.purge_dead_letters(pb::PurgeDeadLettersRequest { group: bad.into() }).await,
            ),
        ),
    ];
    let start = pb::SubscribeRequest {
        kind: Some(pb::subscribe_request::Kind::Start(pb::SubscribeStart {
            group: bad.into(),
            consumer_id: "c".into(),
            initial_credits: 1,
        })),
    };
    let opened = consumer.subscribe(tokio_stream::iter(vec![start])).await;
    cases.push(("subscribe", stream_error("subscribe", opened).await?));
    for (what, s) in cases {
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
        assert_eq!(reason(&s), "invalid_argument", "{what}: {s:?}");
        assert!(!s.message().contains("create it first"), "{what}: suggests a command that would be refused: {s:?}");
    }

    // A pipelined produce answers the same, in its per-request error.
    let mut answers = producer.produce_stream(tokio_stream::iter(vec![produce])).await?.into_inner();
    let answer = answers.message().await?.ok_or_else(|| anyhow::anyhow!("no answer on the produce stream"))?;
    assert_eq!(answer.error_code, Code::InvalidArgument as i32, "{answer:?}");

    // A valid name that does not exist is still NOT_FOUND, and says how to create it.
    let missing = pb::ProduceRequest { topic: "nope".into(), messages: vec![message("x")], ..Default::default() };
    let s = refused("produce to a missing topic", producer.produce(missing).await);
    assert_eq!((s.code(), reason(&s)), (Code::NotFound, "topic_not_found"), "{s:?}");
    assert!(s.message().contains("sluice topic create nope"), "{s:?}");
    Ok(())
}
