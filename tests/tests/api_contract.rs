//! The API contract an outside client relies on: Ack, Nack and
//! ModifyAckDeadline answer OK with a reason for every id not applied (a
//! malformed id among them included) and say when a message holds no lease; an
//! invalid topic or group name is INVALID_ARGUMENT on every RPC that takes one;
//! every error status carries a `sluice-reason`; zero-valued group settings
//! (backoff, no delivery limit) can be set; `dead_lettered` is a running total
//! and `dead_letters_stored` what a purge empties.

use std::time::Duration;

use sluice_client::proto as pb;
use sluice_client::proto::admin_client::AdminClient;
use sluice_client::proto::consumer_client::ConsumerClient;
use sluice_client::proto::producer_client::ProducerClient;
use sluice_tests::{create_group, eventually, group_config, message, produce_values, TestBroker};
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
    admin.create_topic(pb::CreateTopicRequest { name: "t".into(), partitions: 1, ..Default::default() }).await?;
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
                        clear_push: false,
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
                        clear_push: false,
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
    assert_eq!(answer.error_reason, "invalid_argument", "{answer:?}");

    // A valid name that does not exist is still NOT_FOUND, and says how to create it.
    let missing = pb::ProduceRequest { topic: "nope".into(), messages: vec![message("x")], ..Default::default() };
    let s = refused("produce to a missing topic", producer.produce(missing).await);
    assert_eq!((s.code(), reason(&s)), (Code::NotFound, "topic_not_found"), "{s:?}");
    assert!(s.message().contains("sluice topic create nope"), "{s:?}");
    Ok(())
}

/// `(ack id, code, reason)` of each failure, after checking every failure says why.
fn summary(failures: &[pb::AckFailure]) -> Vec<(String, Code, String)> {
    for f in failures {
        assert!(!f.reason.is_empty() && f.message.len() > 15, "a failure without a reason or message: {f:?}");
    }
    failures.iter().map(|f| (f.ack_id.clone(), Code::from(f.code), f.reason.clone())).collect()
}

fn expected(list: &[(&str, Code, &str)]) -> Vec<(String, Code, String)> {
    list.iter().map(|(id, code, reason)| (id.to_string(), *code, reason.to_string())).collect()
}

async fn pull(consumer: &mut ConsumerClient<tonic::transport::Channel>, n: u32) -> anyhow::Result<Vec<String>> {
    let req = pb::PullRequest { group: "g".into(), consumer_id: "c".into(), max_messages: n, max_wait_ms: 5000 };
    let got = consumer.pull(req).await?.into_inner().messages;
    anyhow::ensure!(got.len() == n as usize, "pulled {} of {n}", got.len());
    Ok(got.into_iter().map(|m| m.ack_id).collect())
}

/// The next answer on a Subscribe stream, within 10 s.
async fn next(stream: &mut tonic::Streaming<pb::SubscribeResponse>) -> anyhow::Result<pb::SubscribeResponse> {
    let m = tokio::time::timeout(Duration::from_secs(10), stream.message()).await??;
    m.ok_or_else(|| anyhow::anyhow!("the Subscribe stream ended"))
}

/// The ack id of another attempt of the same message.
fn attempt(ack_id: &str, n: u32) -> String {
    let (message, _) = ack_id.rsplit_once(':').expect("ack ids are partition:offset:attempt");
    format!("{message}:{n}")
}

fn ack(ids: &[&str]) -> pb::AckRequest {
    pb::AckRequest { group: "g".into(), ack_ids: ids.iter().map(|s| s.to_string()).collect() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_nack_and_modify_answer_ok_with_a_reason_for_every_id_not_applied() -> anyhow::Result<()> {
    let broker = TestBroker::start_with(&["--metrics-listen", "127.0.0.1:0"]).await?;
    let mut admin = AdminClient::new(broker.channel());
    let mut consumer = ConsumerClient::new(broker.channel());
    admin.create_topic(pb::CreateTopicRequest { name: "t".into(), partitions: 1, ..Default::default() }).await?;
    create_group(broker.channel(), "g", group_config("t", 30_000)).await?;
    produce_values(broker.channel(), "t", (0..4).map(|i| format!("m{i}"))).await?;
    let ids = pull(&mut consumer, 4).await?;
    let (a, b, c, d) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str(), ids[3].as_str());

    // Valid, malformed, never delivered and unknown-partition ids in one request:
    // OK, the valid ones applied, each other one reported with its reason.
    let r = consumer.ack(ack(&[a, "garbage", "0:999:1", "7:0:1", b])).await?.into_inner();
    assert_eq!(
        summary(&r.failures),
        expected(&[
            ("garbage", Code::InvalidArgument, "malformed_ack_id"),
            ("0:999:1", Code::NotFound, "ack_id_not_found"),
            ("7:0:1", Code::NotFound, "partition_not_found"),
        ])
    );
    let g = admin.describe_group(pb::DescribeGroupRequest { name: "g".into() }).await?.into_inner();
    assert_eq!(g.partitions[0].committed_offset, 2, "the two valid ids were acked despite the bad ones");
    // When every id fails the shape is the same: OK with failures.
    let r = consumer.ack(ack(&["x"])).await?.into_inner();
    assert_eq!(summary(&r.failures), expected(&[("x", Code::InvalidArgument, "malformed_ack_id")]));
    assert!(consumer.ack(ack(&[a])).await?.into_inner().failures.is_empty(), "acking twice is fine");

    // Nack: the valid id is given back (and comes again as attempt 2), the malformed one reported.
    let nack = pb::NackRequest {
        group: "g".into(),
        ack_ids: vec![c.into(), "nope".into()],
        delay_ms: Some(0),
        ..Default::default()
    };
    let r = consumer.nack(nack).await?.into_inner();
    assert_eq!(summary(&r.failures), expected(&[("nope", Code::InvalidArgument, "malformed_ack_id")]));
    let again = pull(&mut consumer, 1).await?;
    assert_eq!(again[0], attempt(c, 2), "the nacked message, attempt 2");
    let r = consumer.ack(ack(&[c])).await?.into_inner();
    assert_eq!(summary(&r.failures), expected(&[(c, Code::FailedPrecondition, "stale_ack")]));

    // ModifyAckDeadline: the leased id is extended; the acked and the malformed ones are reported.
    let modify = |ids: &[&str], ms: u32| pb::ModifyAckDeadlineRequest {
        group: "g".into(),
        ack_ids: ids.iter().map(|s| s.to_string()).collect(),
        ack_deadline_ms: ms,
    };
    let r = consumer.modify_ack_deadline(modify(&[d, b, "bad"], 10_000)).await?.into_inner();
    assert_eq!(
        summary(&r.failures),
        expected(&[(b, Code::FailedPrecondition, "not_leased"), ("bad", Code::InvalidArgument, "malformed_ack_id")])
    );

    // Requests that are themselves invalid fail as a whole, with a reason.
    let statuses = [
        ("no ids", consumer.ack(ack(&[])).await.map(drop), Code::InvalidArgument, "invalid_argument"),
        (
            "unknown group",
            consumer.ack(pb::AckRequest { group: "nope".into(), ack_ids: vec![d.into()] }).await.map(drop),
            Code::NotFound,
            "group_not_found",
        ),
        (
            "nack delay past an hour",
            consumer
                .nack(pb::NackRequest {
                    group: "g".into(),
                    ack_ids: vec![d.into()],
                    delay_ms: Some(u32::MAX),
                    ..Default::default()
                })
                .await
                .map(drop),
            Code::InvalidArgument,
            "invalid_argument",
        ),
        (
            "deadline out of range",
            consumer.modify_ack_deadline(modify(&[d], 5)).await.map(drop),
            Code::InvalidArgument,
            "invalid_argument",
        ),
    ];
    for (what, r, code, why) in statuses {
        let s = refused(what, r);
        assert_eq!((s.code(), reason(&s)), (code, why), "{what}: {s:?}");
    }

    // The Subscribe stream reports the same failures, and counts them as rejected.
    let before = broker.metric("sluice_rejected_requests_total", &[("reason", "malformed_ack_id")]).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let start = pb::SubscribeStart { group: "g".into(), consumer_id: "s".into(), initial_credits: 0 };
    tx.send(pb::SubscribeRequest { kind: Some(pb::subscribe_request::Kind::Start(start)) }).await?;
    let mut stream = consumer.subscribe(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    tx.send(pb::SubscribeRequest { kind: Some(pb::subscribe_request::Kind::Ack(ack(&[d, "garbage"]))) }).await?;
    let r = next(&mut stream).await?;
    assert_eq!(r.confirmed, vec![d.to_string()]);
    assert_eq!(summary(&r.failures), expected(&[("garbage", Code::InvalidArgument, "malformed_ack_id")]));
    let refused_nack =
        pb::NackRequest { ack_ids: vec!["0:0:1".into()], delay_ms: Some(u32::MAX), ..Default::default() };
    tx.send(pb::SubscribeRequest { kind: Some(pb::subscribe_request::Kind::Nack(refused_nack)) }).await?;
    let r = next(&mut stream).await?;
    assert!(r.confirmed.is_empty());
    assert_eq!(summary(&r.failures), expected(&[("0:0:1", Code::InvalidArgument, "invalid_argument")]));
    drop(tx);
    let after = broker.metric("sluice_rejected_requests_total", &[("reason", "malformed_ack_id")]).await?;
    assert!(after > before, "stream ack failures are counted: {before} -> {after}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modify_ack_deadline_reports_messages_that_hold_no_lease() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let mut admin = AdminClient::new(broker.channel());
    let mut consumer = ConsumerClient::new(broker.channel());
    admin.create_topic(pb::CreateTopicRequest { name: "t".into(), partitions: 1, ..Default::default() }).await?;
    create_group(broker.channel(), "g", group_config("t", 30_000)).await?;
    produce_values(broker.channel(), "t", (0..3).map(|i| format!("m{i}"))).await?;
    let ids = pull(&mut consumer, 3).await?;
    let (acked, nacked, leased) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());
    assert!(consumer.ack(ack(&[acked])).await?.into_inner().failures.is_empty());
    let nack = pb::NackRequest {
        group: "g".into(),
        ack_ids: vec![nacked.into()],
        delay_ms: Some(60_000),
        ..Default::default()
    };
    assert!(consumer.nack(nack).await?.into_inner().failures.is_empty());
    for ms in [10_000, 0] {
        let modify = pb::ModifyAckDeadlineRequest {
            group: "g".into(),
            ack_ids: vec![acked.into(), nacked.into(), leased.into()],
            ack_deadline_ms: ms,
        };
        let r = consumer.modify_ack_deadline(modify).await?.into_inner();
        assert_eq!(
            summary(&r.failures),
            expected(&[
                (acked, Code::FailedPrecondition, "not_leased"),
                (nacked, Code::FailedPrecondition, "not_leased")
            ]),
            "deadline {ms}: only the leased message is changed"
        );
    }
    // The release (deadline 0) of the leased message took effect: it comes again at once.
    let again = pull(&mut consumer, 1).await?;
    assert_eq!(again[0], attempt(leased, 2), "the released message, attempt 2");
    Ok(())
}

/// A group's backoff `(initial_ms, max_ms, multiplier, jitter)`.
type Backoff = (Option<u32>, Option<u32>, Option<f64>, Option<f64>);

/// A group's backoff and `max_delivery_attempts`.
fn settings(g: &pb::GroupInfo) -> (Backoff, Option<u32>) {
    let c = g.config.clone().unwrap_or_default();
    let b = c.backoff.unwrap_or_default();
    ((b.initial_ms, b.max_ms, b.multiplier, b.jitter), c.max_delivery_attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_backoff_can_be_set_and_update_group_can_remove_a_delivery_limit() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await?;
    let admin = sluice_client::Admin::new(broker.channel());
    let mut consumer = ConsumerClient::new(broker.channel());
    admin.create_topic("t", 1, pb::TopicConfig::default()).await?;
    // Unset fields take the defaults.
    let g = admin.create_group("defaults", pb::GroupConfig { topic: "t".into(), ..Default::default() }).await?;
    assert_eq!(settings(&g), ((Some(1000), Some(60_000), Some(2.0), Some(0.2)), Some(0)));
    // Explicit zeros are kept, not taken for "default".
    let config = pb::GroupConfig {
        topic: "t".into(),
        ack_deadline_ms: 30_000,
        max_delivery_attempts: Some(2),
        dead_letter_topic: "t.dlq".into(),
        backoff: Some(pb::Backoff { initial_ms: Some(0), jitter: Some(0.0), ..Default::default() }),
        ..Default::default()
    };
    let g = admin.create_group("g", config).await?;
    assert_eq!(settings(&g), ((Some(0), Some(60_000), Some(2.0), Some(0.0)), Some(2)));

    // And redelivery uses them: a nacked message comes back at once (the default
    // backoff would hold it at least 800 ms).
    produce_values(broker.channel(), "t", ["m".to_owned()]).await?;
    let first = pull(&mut consumer, 1).await?;
    let nacked_at = std::time::Instant::now();
    let nack = |id: &str| pb::NackRequest { group: "g".into(), ack_ids: vec![id.into()], ..Default::default() };
    assert!(consumer.nack(nack(&first[0])).await?.into_inner().failures.is_empty());
    let second = pull(&mut consumer, 1).await?;
    assert_eq!(second[0], attempt(&first[0], 2));
    let waited = nacked_at.elapsed();
    assert!(waited < Duration::from_millis(800), "redelivered after {waited:?} with initial_ms = 0");

    // UpdateGroup: max_delivery_attempts = 0 removes the limit, so the second failure
    // is redelivered instead of dead-lettered; the dead-letter topic stays.
    let update = |config: pb::GroupConfig| admin.update_group("g", config);
    let g = update(pb::GroupConfig { max_delivery_attempts: Some(0), ..Default::default() }).await?;
    assert_eq!(settings(&g).1, Some(0));
    assert_eq!(g.config.as_ref().map(|c| c.dead_letter_topic.as_str()), Some("t.dlq"));
    assert!(consumer.nack(nack(&second[0])).await?.into_inner().failures.is_empty());
    let third = pull(&mut consumer, 1).await?;
    assert_eq!(third[0], attempt(&first[0], 3), "no limit: redelivered, not dead-lettered");
    assert_eq!(admin.describe_group("g").await?.dead_lettered, 0);

    // Unset fields stay as they are.
    let g = update(pb::GroupConfig {
        backoff: Some(pb::Backoff { jitter: Some(0.5), ..Default::default() }),
        max_delivery_attempts: Some(5),
        ..Default::default()
    })
    .await?;
    assert_eq!(settings(&g), ((Some(0), Some(60_000), Some(2.0), Some(0.5)), Some(5)));
    let g = update(pb::GroupConfig { ack_deadline_ms: 20_000, ..Default::default() }).await?;
    assert_eq!(settings(&g), ((Some(0), Some(60_000), Some(2.0), Some(0.5)), Some(5)));
    // A zero that is not allowed is refused rather than read as "default".
    let zero_multiplier = pb::GroupConfig {
        backoff: Some(pb::Backoff { multiplier: Some(0.0), ..Default::default() }),
        ..Default::default()
    };
    let err = update(zero_multiplier).await.expect_err("multiplier 0 is out of range");
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err:?}");

    broker.restart().await?;
    let g = admin.describe_group("g").await?;
    assert_eq!(settings(&g), ((Some(0), Some(60_000), Some(2.0), Some(0.5)), Some(5)), "kept across a restart");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_is_a_running_total_and_dead_letters_stored_empties_on_purge() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await?;
    let admin = sluice_client::Admin::new(broker.channel());
    let mut consumer = ConsumerClient::new(broker.channel());
    admin.create_topic("t", 2, pb::TopicConfig::default()).await?;
    let config = pb::GroupConfig {
        max_delivery_attempts: Some(1),
        dead_letter_topic: "t.dlq".into(),
        ..group_config("t", 30_000)
    };
    create_group(broker.channel(), "g", config).await?;
    produce_values(broker.channel(), "t", (0..3).map(|i| format!("m{i}"))).await?;
    let ids = pull(&mut consumer, 3).await?;
    let nack = pb::NackRequest { group: "g".into(), ack_ids: ids, ..Default::default() };
    assert!(consumer.nack(nack).await?.into_inner().failures.is_empty());
    let counts = |g: &pb::GroupInfo| (g.dead_lettered, g.dead_letters_stored);
    eventually(Duration::from_secs(10), "three dead letters", || async {
        Ok((counts(&admin.describe_group("g").await?) == (3, 3)).then_some(()))
    })
    .await?;
    assert_eq!(admin.list_groups("t").await?.iter().map(counts).collect::<Vec<_>>(), vec![(3, 3)]);

    assert_eq!(admin.purge_dead_letters("g").await?, 3);
    let g = admin.describe_group("g").await?;
    assert_eq!(counts(&g), (3, 0), "after a purge: the running total stays, nothing is stored");
    assert_eq!(g.partitions.iter().map(|p| p.dead_lettered).sum::<u64>(), 3, "per-partition totals stay too");
    broker.restart().await?;
    assert_eq!(counts(&admin.describe_group("g").await?), (3, 0), "the same after a restart");
    let plain = admin.create_group("plain", group_config("t", 30_000)).await?;
    assert_eq!(counts(&plain), (0, 0), "no dead-letter topic, nothing stored");
    Ok(())
}
