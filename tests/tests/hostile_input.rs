//! Hostile input against the real broker: every unary method that reaches
//! storage gets random bytes and mutated valid requests (seeded; the seed is
//! printed, SLUICE_FUZZ_SEED replays it, SLUICE_FUZZ_INPUTS sets the count),
//! plus crafted attacks: a million headers, a million-message batch, deeply
//! nested groups, invalid UTF-8, unknown enum values, enormous waits and
//! deadlines. Each gets a status, the broker stays healthy, what was
//! acknowledged before is intact, and peak memory stays bounded.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_client::proto as pb;
use sluice_client::proto::admin_client::AdminClient;
use sluice_client::proto::consumer_client::ConsumerClient;
use sluice_client::proto::producer_client::ProducerClient;
use sluice_tests::{create_group, group_config, message, read_all, send_raw, TestBroker};
use tonic::Code;

/// Valid requests for every unary method that touches topics, groups or storage.
fn templates() -> Vec<(&'static str, Vec<u8>)> {
    let msg = pb::Message {
        key: Some(Bytes::from_static(b"k")),
        value: Bytes::from_static(b"value-value-value"),
        headers: vec![pb::Header { key: "h".into(), value: Bytes::from_static(b"x") }],
    };
    let group_cfg = pb::GroupConfig { max_delivery_attempts: Some(2), ..group_config("fz", 1000) };
    vec![
        (
            "/sluice.v1.Producer/Produce",
            pb::ProduceRequest { topic: "fz".into(), partition: Some(0), messages: vec![msg], ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "/sluice.v1.Consumer/Fetch",
            pb::FetchRequest {
                topic: "fz".into(),
                partition: 0,
                offset: 0,
                max_messages: 10,
                max_bytes: 4096,
                max_wait_ms: 0,
            }
            .encode_to_vec(),
        ),
        (
            "/sluice.v1.Consumer/GetOffsets",
            pb::GetOffsetsRequest { topic: "fz".into(), partition: 0, timestamp_ms: Some(5) }.encode_to_vec(),
        ),
        (
            "/sluice.v1.Consumer/Pull",
            pb::PullRequest { group: "fzg".into(), consumer_id: "c".into(), max_messages: 5, max_wait_ms: 0 }
                .encode_to_vec(),
        ),
        (
            "/sluice.v1.Consumer/Ack",
            pb::AckRequest { group: "fzg".into(), ack_ids: vec!["0.0.1".into(), "garbage".into()] }.encode_to_vec(),
        ),
        (
            "/sluice.v1.Consumer/Nack",
            pb::NackRequest {
                group: "fzg".into(),
                ack_ids: vec!["0.0.1".into()],
                delay_ms: Some(10),
                reason: "r".into(),
                consumer_id: "c".into(),
            }
            .encode_to_vec(),
        ),
        (
            "/sluice.v1.Consumer/ModifyAckDeadline",
            pb::ModifyAckDeadlineRequest { group: "fzg".into(), ack_ids: vec!["0.0.1".into()], ack_deadline_ms: 500 }
                .encode_to_vec(),
        ),
        (
            "/sluice.v1.Admin/CreateTopic",
            pb::CreateTopicRequest {
                name: "fz2".into(),
                partitions: 2,
                config: Some(pb::TopicConfig { retention_ms: 60_000, durability: 1, ..Default::default() }),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/sluice.v1.Admin/UpdateTopic",
            pb::UpdateTopicRequest {
                name: "fz".into(),
                config: Some(pb::TopicConfig { retention_ms: 3_600_000, ..Default::default() }),
            }
            .encode_to_vec(),
        ),
        ("/sluice.v1.Admin/DescribeTopic", pb::DescribeTopicRequest { name: "fz".into() }.encode_to_vec()),
        ("/sluice.v1.Admin/DeleteTopic", pb::DeleteTopicRequest { name: "fz2".into() }.encode_to_vec()),
        (
            "/sluice.v1.Admin/CreateGroup",
            pb::CreateGroupRequest { name: "fzg2".into(), config: Some(group_cfg.clone()) }.encode_to_vec(),
        ),
        (
            "/sluice.v1.Admin/UpdateGroup",
            pb::UpdateGroupRequest {
                name: "fzg".into(),
                config: Some(pb::GroupConfig { ack_deadline_ms: 900, ..Default::default() }),
                clear_push: false,
            }
            .encode_to_vec(),
        ),
        ("/sluice.v1.Admin/DescribeGroup", pb::DescribeGroupRequest { name: "fzg".into() }.encode_to_vec()),
        (
            "/sluice.v1.Admin/SeekGroup",
            pb::SeekGroupRequest {
                name: "fzg".into(),
                partition: Some(0),
                target: Some(pb::seek_group_request::Target::Offset(1)),
            }
            .encode_to_vec(),
        ),
        (
            "/sluice.v1.Admin/PeekDeadLetters",
            pb::PeekDeadLettersRequest { group: "fzg".into(), max_messages: 5 }.encode_to_vec(),
        ),
        ("/sluice.v1.Admin/DeleteGroup", pb::DeleteGroupRequest { name: "fzg2".into() }.encode_to_vec()),
    ]
}

/// One hostile variant of a valid request: random bytes, flipped, cut, spliced or doubled.
fn mutate(rng: &mut StdRng, valid: &[u8]) -> Vec<u8> {
    let mut v = valid.to_vec();
    match rng.random_range(0..6) {
        0 => (0..rng.random_range(0..200)).map(|_| rng.random()).collect(),
        1 => {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..v.len().max(1));
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.random_range(0..8);
                }
            }
            v
        }
        2 => {
            v.truncate(rng.random_range(0..v.len().max(1)));
            v
        }
        3 => {
            let at = rng.random_range(0..=v.len());
            let junk: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
            v.splice(at..at, junk);
            v
        }
        4 => {
            let i = rng.random_range(0..v.len().max(1));
            if let Some(b) = v.get_mut(i) {
                *b = rng.random();
            }
            v
        }
        _ => [valid, valid].concat(),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_statuses_and_the_broker_stays_healthy() -> anyhow::Result<()> {
    let broker = TestBroker::start_with(&["--max-partitions", "64"]).await?;
    let mut admin = AdminClient::new(broker.channel());
    let mut producer = ProducerClient::new(broker.channel());
    admin.create_topic(pb::CreateTopicRequest { name: "keep".into(), partitions: 1, ..Default::default() }).await?;
    admin.create_topic(pb::CreateTopicRequest { name: "fz".into(), partitions: 1, ..Default::default() }).await?;
    create_group(broker.channel(), "fzg", group_config("fz", 1000)).await?;
    let kept = Bytes::from_static(b"acknowledged before the attack");
    let produce_keep =
        |m| pb::ProduceRequest { topic: "keep".into(), partition: Some(0), messages: vec![m], ..Default::default() };
    producer.produce(produce_keep(message(kept.clone()))).await?;

    // Crafted attacks, each with the status a client can act on.
    let huge_headers = pb::Message {
        key: None,
        value: Bytes::new(),
        headers: (0..1_000_000).map(|_| pb::Header { key: "h".into(), value: Bytes::new() }).collect(),
    };
    let status = producer.produce(produce_keep(huge_headers)).await.expect_err("a million headers");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let huge_batch = pb::ProduceRequest {
        topic: "keep".into(),
        partition: Some(0),
        messages: vec![pb::Message::default(); 1_000_001],
        ..Default::default()
    };
    let status = producer.produce(huge_batch).await.expect_err("a million-message batch");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("split the batch"), "{status:?}");

    let grpc = tonic::client::Grpc::new(broker.channel());
    // Deeply nested unknown groups (wire type 3): prost's recursion limit, not a stack overflow.
    let nested = vec![0x5b; 200_000];
    let status = send_raw(grpc.clone(), "/sluice.v1.Producer/Produce", nested).await.expect_err("nested groups");
    assert_eq!(status.code(), Code::Internal, "the gRPC code for an undecodable request: {status:?}");
    assert!(status.message().contains("decode"), "{status:?}");
    // A topic name that is not UTF-8.
    let mut bad_name = vec![0x0a, 0x02, 0xff, 0xfe];
    bad_name.extend(pb::ProduceRequest { partition: Some(0), ..Default::default() }.encode_to_vec());
    let status = send_raw(grpc.clone(), "/sluice.v1.Producer/Produce", bad_name).await.expect_err("invalid UTF-8");
    assert!(status.message().contains("UTF-8"), "{status:?}");
    // A request past max-request-bytes.
    let oversized = vec![0u8; 70 << 20];
    let status = send_raw(grpc.clone(), "/sluice.v1.Producer/Produce", oversized).await.expect_err("70 MiB");
    assert!(matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted), "{status:?}");

    let unknown_mode = pb::CreateGroupRequest {
        name: "m".into(),
        config: Some(pb::GroupConfig { mode: 99, ..group_config("fz", 1000) }),
    };
    let status = admin.create_group(unknown_mode).await.expect_err("unknown enum");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let mut consumer = ConsumerClient::new(broker.channel());
    let forever =
        pb::PullRequest { group: "fzg".into(), consumer_id: "c".into(), max_messages: 1, max_wait_ms: u32::MAX };
    let status = consumer.pull(forever).await.expect_err("enormous wait");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let no_limit =
        pb::ModifyAckDeadlineRequest { group: "fzg".into(), ack_ids: vec!["0.0.1".into()], ack_deadline_ms: u32::MAX };
    match consumer.modify_ack_deadline(no_limit).await {
        Ok(r) => assert!(!r.into_inner().failures.is_empty(), "an unknown ack id cannot be extended"),
        Err(status) => assert_eq!(status.code(), Code::InvalidArgument, "{status:?}"),
    }
    let never = pb::NackRequest {
        group: "fzg".into(),
        ack_ids: vec!["x".into()],
        delay_ms: Some(u32::MAX),
        ..Default::default()
    };
    match consumer.nack(never).await {
        Ok(r) => assert!(!r.into_inner().failures.is_empty(), "a malformed ack id is reported"),
        Err(status) => assert_eq!(status.code(), Code::InvalidArgument, "{status:?}"),
    }

    // Random and mutated requests on every method.
    let seed = env_u64("SLUICE_FUZZ_SEED").unwrap_or_else(|| rand::rng().random());
    let inputs = env_u64("SLUICE_FUZZ_INPUTS").unwrap_or(20_000);
    eprintln!("hostile_input: seed {seed} (replay with SLUICE_FUZZ_SEED={seed}), {inputs} inputs");
    let mut rng = StdRng::seed_from_u64(seed);
    let templates = templates();
    let started = Instant::now();
    let (mut sent, mut by_code) = (0u64, std::collections::BTreeMap::<String, u64>::new());
    while sent < inputs && started.elapsed() < Duration::from_secs(120) {
        let batch: Vec<(&str, Vec<u8>)> = (0..64)
            .map(|_| {
                let (path, valid) = &templates[rng.random_range(0..templates.len())];
                (*path, mutate(&mut rng, valid))
            })
            .collect();
        let calls = batch.iter().map(|(path, body)| send_raw(grpc.clone(), path, body.clone()));
        for ((path, body), r) in batch.iter().zip(join_all(calls).await) {
            let code = r.as_ref().err().map_or(Code::Ok, |s| s.code());
            let what = || {
                let head: Vec<u8> = body.iter().copied().take(64).collect();
                format!(
                    "{path} with {} bytes starting {head:02x?}: {r:?} (seed {seed})\n{}",
                    body.len(),
                    broker.log_tail()
                )
            };
            assert!(code != Code::Unavailable, "the broker must stay up: {}", what());
            assert!(code != Code::Unknown, "every failure is a deliberate status: {}", what());
            if let Err(s) = &r {
                // INTERNAL is the gRPC code for an undecodable request; any other INTERNAL is a broker bug.
                assert!(
                    s.code() != Code::Internal || s.message().contains("decode"),
                    "unexpected internal error (seed {seed}): {s:?}"
                );
            }
            *by_code.entry(format!("{code:?}")).or_default() += 1;
        }
        sent += 64;
    }
    eprintln!("hostile_input: {sent} inputs in {:?}, statuses {by_code:?}", started.elapsed());

    broker.wait_healthy(Duration::from_secs(5)).await?;
    let records = read_all(broker.channel(), "keep", 0).await?;
    assert_eq!(records.len(), 1, "nothing added to or removed from the untouched topic");
    assert_eq!(records[0].value, kept, "the acknowledged message is intact");
    producer.produce(produce_keep(message("still serving"))).await?;
    let peak = broker.peak_rss_bytes()?;
    eprintln!("hostile_input: broker peak RSS {} MiB", peak >> 20);
    assert!(peak < 1 << 30, "peak RSS {} MiB under hostile input", peak >> 20);
    Ok(())
}

/// Requests racing a delete of their topic or group are told it was deleted
/// (NOT_FOUND), never that the broker is going away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_a_delete_get_not_found_not_unavailable() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = sluice_client::Admin::new(broker.channel());
    let mut codes = std::collections::BTreeMap::<String, u64>::new();
    for round in 0..150 {
        let topic = format!("doomed-{round}");
        admin.create_topic(&topic, 2, pb::TopicConfig::default()).await?;
        let group = format!("{topic}-g");
        let mut producer = ProducerClient::new(broker.channel());
        let mut consumer = ConsumerClient::new(broker.channel());
        let produce = pb::ProduceRequest {
            topic: topic.clone(),
            partition: Some(0),
            messages: vec![message("m")],
            ..Default::default()
        };
        let pull = pb::PullRequest { group: group.clone(), consumer_id: "c".into(), max_messages: 10, max_wait_ms: 50 };
        let (created, pulled, produced, deleted_group, deleted_topic) = tokio::join!(
            admin.create_group(&group, group_config(&topic, 1000)),
            consumer.pull(pull),
            producer.produce(produce),
            admin.delete_group(&group),
            async {
                tokio::task::yield_now().await;
                admin.delete_topic(&topic).await
            },
        );
        let outcomes = [
            created.err().and_then(|e| e.code()),
            pulled.err().map(|s| s.code()),
            produced.err().map(|s| s.code()),
            deleted_group.err().and_then(|e| e.code()),
            deleted_topic.err().and_then(|e| e.code()),
        ];
        for code in outcomes {
            let code = code.unwrap_or(Code::Ok);
            assert!(
                matches!(code, Code::Ok | Code::NotFound | Code::AlreadyExists | Code::FailedPrecondition),
                "round {round}: {code:?} ({outcomes:?})"
            );
            *codes.entry(format!("{code:?}")).or_default() += 1;
        }
        let _ = admin.delete_group(&group).await;
        let _ = admin.delete_topic(&topic).await;
    }
    eprintln!("racing deletes: {codes:?}");
    broker.wait_healthy(Duration::from_secs(5)).await?;
    Ok(())
}
