//! Consumer groups end to end: dead letters, lease expiry, nack delays, shared
//! and ordered delivery, seek, and the admin views.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::proto as pb;
use sluice_client::{Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, Received};
use sluice_tests::{create_group, eventually, group_config, message, produce_values, TestBroker};
use tokio_util::sync::CancellationToken;

fn value(r: &Received) -> String {
    String::from_utf8_lossy(&r.record.value).into_owned()
}

fn header<'a>(r: &'a pb::Record, key: &str) -> &'a str {
    r.headers.iter().find(|h| h.key == key).and_then(|h| std::str::from_utf8(&h.value).ok()).unwrap_or("")
}

async fn produce_all(broker: &TestBroker, topic: &str, values: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    produce_values(broker.channel(), topic, values).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_after_exactly_n_attempts_while_others_flow() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("orders", 2, pb::TopicConfig::default()).await?;
    let config = pb::GroupConfig {
        max_delivery_attempts: Some(3),
        dead_letter_topic: "orders.dlq".into(),
        ..group_config("orders", 5000)
    };
    create_group(broker.channel(), "billing", config).await?;
    produce_all(&broker, "orders", (0..60).map(|i| if i == 17 { "poison".to_owned() } else { format!("ok-{i}") }))
        .await?;

    let handled: Arc<Mutex<HashSet<String>>> = Arc::default();
    let poison_attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let consumer = Consumer::new(
        broker.channel(),
        "billing",
        ConsumerConfig { consumer_id: "worker-1".into(), ..Default::default() },
    );
    let stop = CancellationToken::new();
    let run = {
        let (handled, poison_attempts, stop) = (handled.clone(), poison_attempts.clone(), stop.clone());
        tokio::spawn(async move {
            consumer
                .run(
                    move |m| {
                        let (handled, poison_attempts) = (handled.clone(), poison_attempts.clone());
                        async move {
                            if value(&m) == "poison" {
                                poison_attempts.lock().expect("lock").push(m.attempt);
                                return Err("cannot parse order".into());
                            }
                            handled.lock().expect("lock").insert(value(&m));
                            Ok(())
                        }
                    },
                    stop,
                )
                .await
        })
    };
    eventually(Duration::from_secs(30), "backlog drained and one dead letter", || async {
        let g = admin.describe_group("billing").await?;
        Ok((g.backlog_messages == 0 && g.dead_lettered == 1).then_some(()))
    })
    .await?;
    stop.cancel();
    run.await??;
    assert_eq!(handled.lock().expect("lock").len(), 59, "every other message was handled");
    assert_eq!(*poison_attempts.lock().expect("lock"), vec![1, 2, 3], "exactly 3 attempts");
    let letters = admin.peek_dead_letters("billing", 10).await?;
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert_eq!(l.value, bytes::Bytes::from("poison"));
    assert_eq!(header(l, "sluice-dlq-source-topic"), "orders");
    assert_eq!(header(l, "sluice-dlq-group"), "billing");
    assert_eq!(header(l, "sluice-dlq-attempts"), "3");
    assert_eq!(header(l, "sluice-dlq-reason"), "cannot parse order");
    assert_eq!(header(l, "sluice-dlq-consumer"), "worker-1");
    let partition: u32 = header(l, "sluice-dlq-source-partition").parse()?;
    let offset: u64 = header(l, "sluice-dlq-source-offset").parse()?;
    let first: i64 = header(l, "sluice-dlq-first-delivery-ms").parse()?;
    let last: i64 = header(l, "sluice-dlq-last-delivery-ms").parse()?;
    assert!(first > 0 && last >= first + 50, "first {first}, last {last}: backoff between attempts");
    let original = sluice_tests::read_all(broker.channel(), "orders", partition).await?;
    assert_eq!(original[offset as usize].value, bytes::Bytes::from("poison"), "headers point at the source");

    // Redrive puts it back on the source topic (a fresh group sees it), purge empties the DLQ.
    let n = admin
        .redrive_dead_letters(pb::RedriveDeadLettersRequest {
            group: "billing".into(),
            rate_per_second: 50,
            ..Default::default()
        })
        .await?;
    assert_eq!(n, 1);
    let latest = admin.describe_topic("orders").await?.partitions[partition as usize].latest_offset;
    assert_eq!(latest, original.len() as u64 + 1, "redriven to its source partition");
    assert_eq!(admin.purge_dead_letters("billing").await?, 1);
    assert!(admin.peek_dead_letters("billing", 10).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_is_redelivered_to_another_consumer() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("tasks", 1, pb::TopicConfig::default()).await?;
    create_group(broker.channel(), "g", group_config("tasks", 500)).await?;
    produce_all(&broker, "tasks", ["job".to_owned()]).await?;
    let a = Consumer::new(broker.channel(), "g", ConsumerConfig { consumer_id: "a".into(), ..Default::default() });
    let b = Consumer::new(broker.channel(), "g", ConsumerConfig { consumer_id: "b".into(), ..Default::default() });
    let first = a.pull(10, Duration::from_secs(2)).await?;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    assert!(b.pull(10, Duration::from_millis(200)).await?.is_empty(), "leased to a, not visible to b");
    let started = Instant::now();
    let second = b.pull(10, Duration::from_secs(10)).await?;
    assert_eq!(second.len(), 1, "redelivered after the lease expired");
    assert_eq!(second[0].attempt, 2);
    assert_eq!(second[0].record.offset, first[0].record.offset);
    assert!(started.elapsed() >= Duration::from_millis(250));
    let stale = a.ack(vec![first[0].ack_id.clone()]).await?;
    assert_eq!(stale.len(), 1, "a's lease is gone");
    assert_eq!((stale[0].code, stale[0].reason.as_str()), (tonic::Code::FailedPrecondition as i32, "stale_ack"));
    assert!(b.ack(vec![second[0].ack_id.clone()]).await?.is_empty());
    let g = Admin::new(broker.channel()).describe_group("g").await?;
    assert_eq!((g.backlog_messages, g.in_flight), (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_delay_is_respected_and_survives_a_restart() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("retry", 1, pb::TopicConfig::default()).await?;
    create_group(broker.channel(), "g", group_config("retry", 30_000)).await?;
    produce_all(&broker, "retry", ["later".to_owned()]).await?;
    let c = Consumer::new(broker.channel(), "g", ConsumerConfig::default());
    let got = c.pull(1, Duration::from_secs(2)).await?;
    c.nack(vec![got[0].ack_id.clone()], Some(Duration::from_millis(3000)), "downstream busy").await?;
    let nacked_at = Instant::now();
    broker.restart().await?;
    let again = c.pull(1, Duration::from_secs(10)).await?;
    let waited = nacked_at.elapsed();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2, "the attempt count survived the restart");
    assert!(waited >= Duration::from_millis(2900), "redelivered after {waited:?}, before its 3 s delay");
    c.ack(vec![again[0].ack_id.clone()]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_splits_load_and_two_groups_each_get_everything() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("work", 4, pb::TopicConfig::default()).await?;
    create_group(broker.channel(), "pool", group_config("work", 10_000)).await?;
    create_group(broker.channel(), "audit", group_config("work", 10_000)).await?;
    produce_all(&broker, "work", (0..400).map(|i| format!("w{i}"))).await?;
    let seen: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let stop = CancellationToken::new();
    let mut runs = Vec::new();
    for (group, id) in [("pool", "c0"), ("pool", "c1"), ("pool", "c2"), ("pool", "c3"), ("audit", "auditor")] {
        let config = ConsumerConfig { consumer_id: id.into(), concurrency: 4, ..Default::default() };
        let consumer = Consumer::new(broker.channel(), group, config);
        let (seen, stop, id) = (seen.clone(), stop.clone(), id.to_owned());
        runs.push(tokio::spawn(async move {
            consumer
                .run(
                    move |m| {
                        let (seen, id) = (seen.clone(), id.clone());
                        async move {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            seen.lock().expect("lock").entry(id).or_default().push(value(&m));
                            Ok(())
                        }
                    },
                    stop,
                )
                .await
        }));
    }
    let admin = Admin::new(broker.channel());
    eventually(Duration::from_secs(60), "both groups drained", || async {
        let (p, a) = (admin.describe_group("pool").await?, admin.describe_group("audit").await?);
        Ok((p.backlog_messages == 0 && a.backlog_messages == 0).then_some(()))
    })
    .await?;
    stop.cancel();
    for r in runs {
        r.await??;
    }
    let seen = seen.lock().expect("lock");
    let pool: HashSet<&String> = ["c0", "c1", "c2", "c3"].iter().flat_map(|c| seen[*c].iter()).collect();
    assert_eq!(pool.len(), 400, "the pool handled every message");
    for c in ["c0", "c1", "c2", "c3"] {
        assert!(seen[c].len() >= 40, "{c} handled only {} of 400", seen[c].len());
    }
    assert_eq!(seen["auditor"].iter().collect::<HashSet<_>>().len(), 400, "a second group gets every message too");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_group_keeps_partition_order_through_retries_and_a_member_leaving() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("ledger", 2, pb::TopicConfig::default()).await?;
    let config = pb::GroupConfig { mode: pb::GroupMode::Ordered as i32, ..group_config("ledger", 1000) };
    create_group(broker.channel(), "books", config).await?;
    let producer = Producer::new(broker.channel(), ProducerConfig::default());
    for i in 0..120u32 {
        producer.send_to("ledger", i % 2, message(format!("{i}"))).await?;
    }
    // Per partition, the sequence of successfully handled values, in handling order.
    let done: Arc<Mutex<BTreeMap<u32, Vec<u32>>>> = Arc::default();
    let handler = {
        let done = done.clone();
        move |m: Received| {
            let done = done.clone();
            async move {
                let n: u32 = value(&m).parse()?;
                if n % 9 == 4 && m.attempt == 1 {
                    return Err(format!("transient failure on {n}").into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                done.lock().expect("lock").entry(m.record.partition).or_default().push(n);
                Ok(())
            }
        }
    };
    let start = |id: &str| {
        let c = Consumer::new(
            broker.channel(),
            "books",
            ConsumerConfig { consumer_id: id.into(), ordered: true, ..Default::default() },
        );
        let (stop, h) = (CancellationToken::new(), handler.clone());
        let s = stop.clone();
        (stop, tokio::spawn(async move { c.run(h, s).await }))
    };
    let (stop_a, run_a) = start("member-a");
    let (stop_b, run_b) = start("member-b");
    eventually(Duration::from_secs(30), "some progress", || async {
        Ok((done.lock().expect("lock").values().map(Vec::len).sum::<usize>() >= 30).then_some(()))
    })
    .await?;
    stop_a.cancel();
    run_a.await??;
    eventually(Duration::from_secs(60), "the remaining member finishes everything", || async {
        Ok((admin.describe_group("books").await?.backlog_messages == 0).then_some(()))
    })
    .await?;
    stop_b.cancel();
    run_b.await??;
    for (p, seq) in done.lock().expect("lock").iter() {
        let mut firsts = Vec::new();
        for n in seq {
            if !firsts.contains(n) {
                firsts.push(*n);
            }
        }
        let expected: Vec<u32> = (0..120).filter(|i| i % 2 == *p).collect();
        assert_eq!(firsts, expected, "partition {p} handled out of order or incompletely");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_moves_the_group_and_describe_shows_backlog_without_consumers() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("s", 1, pb::TopicConfig::default()).await?;
    produce_all(&broker, "s", (0..10).map(|i| format!("{i}"))).await?;
    // Timestamps have millisecond resolution: keep `mid` strictly between the two batches.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mid = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(20)).await;
    produce_all(&broker, "s", (10..15).map(|i| format!("{i}"))).await?;
    let latest = pb::GroupConfig { start: pb::StartPosition::Latest as i32, ..group_config("s", 10_000) };
    create_group(broker.channel(), "from-now", latest).await?;
    create_group(broker.channel(), "from-start", group_config("s", 10_000)).await?;
    let g = admin.describe_group("from-start").await?;
    assert_eq!(g.backlog_messages, 15, "backlog visible with no consumer connected");
    assert!(g.oldest_unacked_age_ms >= 20);
    assert_eq!(admin.describe_group("from-now").await?.backlog_messages, 0);
    use pb::seek_group_request::Target;
    assert_eq!(admin.seek_group("from-now", None, Target::TimestampMs(mid)).await?.backlog_messages, 5);
    assert_eq!(admin.seek_group("from-now", None, Target::Offset(3)).await?.backlog_messages, 12);
    let c = Consumer::new(broker.channel(), "from-now", ConsumerConfig::default());
    let got = c.pull(1, Duration::from_secs(2)).await?;
    assert_eq!(got[0].record.offset, 3);
    assert_eq!(admin.seek_group("from-now", None, Target::Latest(true)).await?.backlog_messages, 0);
    let err = admin.seek_group("from-now", None, Target::Offset(99)).await.expect_err("past the end");
    assert_eq!(err.code(), Some(tonic::Code::OutOfRange));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_get_clear_statuses() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("t", 1, pb::TopicConfig::default()).await?;
    let code = |r: Result<pb::GroupInfo, sluice_client::Error>| r.expect_err("refused").code();
    let no_dlq = pb::GroupConfig { max_delivery_attempts: Some(3), ..group_config("t", 1000) };
    assert_eq!(code(admin.create_group("g", no_dlq).await), Some(tonic::Code::InvalidArgument), "limit without DLQ");
    let self_dlq =
        pb::GroupConfig { max_delivery_attempts: Some(3), dead_letter_topic: "t".into(), ..group_config("t", 1000) };
    assert_eq!(
        code(admin.create_group("g", self_dlq).await),
        Some(tonic::Code::InvalidArgument),
        "DLQ equal to source"
    );
    assert_eq!(
        code(admin.create_group("g", group_config("t", 5)).await),
        Some(tonic::Code::InvalidArgument),
        "deadline too short"
    );
    assert_eq!(code(admin.create_group("g", group_config("missing", 1000)).await), Some(tonic::Code::NotFound));
    assert_eq!(code(admin.describe_group("nope").await), Some(tonic::Code::NotFound));
    create_group(broker.channel(), "g", group_config("t", 1000)).await?;
    assert_eq!(code(admin.create_group("g", group_config("t", 1000)).await), Some(tonic::Code::AlreadyExists));
    let c = Consumer::new(broker.channel(), "g", ConsumerConfig::default());
    let bad = c.ack(vec!["garbage".into()]).await?;
    assert_eq!((bad[0].code, bad[0].reason.as_str()), (tonic::Code::InvalidArgument as i32, "malformed_ack_id"));
    let never = c.ack(vec!["0:5:1".into()]).await?;
    assert_eq!((never[0].code, never[0].reason.as_str()), (tonic::Code::NotFound as i32, "ack_id_not_found"));
    let missing = Consumer::new(broker.channel(), "nope", ConsumerConfig::default());
    assert_eq!(missing.pull(1, Duration::ZERO).await.expect_err("no group").code(), Some(tonic::Code::NotFound));
    let err = admin.delete_topic("t").await.expect_err("topic in use");
    assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition));
    admin.delete_group("g").await?;
    admin.delete_topic("t").await?;
    Ok(())
}
