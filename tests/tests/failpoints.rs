//! A failed write or fsync stops the broker from serving writes, exactly once
//! and loudly: the store is poisoned, every later write is refused with
//! UNAVAILABLE (`storage_poisoned`), health turns NOT_SERVING, the log and
//! `sluice_storage_poisoned` say why, and what was acknowledged before stays
//! readable. Faults are injected by the `fail` crate in storage's write and
//! sync paths, so this needs a broker built with `--features failpoints`:
//! `make failpoint-test` builds one and copies it to `target/failpoints/`
//! (`SLUICE_BIN_DIR`), then links the shipped binaries again.

use std::time::Duration;

use sluice_client::proto as pb;
use sluice_client::Admin;
use sluice_tests::{eventually, message, read_all, TestBroker};
use tonic::Code;

const TOPIC: &str = "fp";

async fn create_topic(broker: &TestBroker, durability: pb::Durability) -> anyhow::Result<()> {
    let config = pb::TopicConfig { durability: durability as i32, ..Default::default() };
    Admin::new(broker.channel()).create_topic(TOPIC, 1, config).await?;
    Ok(())
}

async fn produce(broker: &TestBroker, value: &str) -> Result<u64, tonic::Status> {
    let mut client = pb::producer_client::ProducerClient::new(broker.channel());
    let request = pb::ProduceRequest {
        topic: TOPIC.into(),
        partition: Some(0),
        messages: vec![message(value.to_owned())],
        ..Default::default()
    };
    let response = client.produce(request).await?.into_inner();
    Ok(response.offsets.first().copied().unwrap_or(u64::MAX))
}

fn reason(status: &tonic::Status) -> String {
    status.metadata().get("sluice-reason").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

async fn health(broker: &TestBroker) -> anyhow::Result<i32> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(broker.channel());
    let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
    Ok(client.check(req).await?.into_inner().status)
}

const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

/// Checks what every poisoning must leave behind: refusal, health, metric, log, and the acked data.
async fn assert_poisoned(broker: &TestBroker, acked: &[&str], what: &str) -> anyhow::Result<()> {
    eventually(Duration::from_secs(10), "health NOT_SERVING", || async {
        Ok((health(broker).await? == NOT_SERVING).then_some(()))
    })
    .await?;
    let refused = produce(broker, "after").await.expect_err("a poisoned store refuses writes");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused), "storage_poisoned");
    assert_eq!(broker.metric("sluice_storage_poisoned", &[]).await?, 1.0);
    let log = broker.log_tail();
    assert!(log.contains("storage poisoned") && log.contains(what), "the log says why:\n{log}");
    let stored = read_all(broker.channel(), TOPIC, 0).await?;
    let values: Vec<String> = stored.iter().map(|r| String::from_utf8_lossy(&r.value).into_owned()).collect();
    assert_eq!(values, acked, "what was acknowledged before the fault is still served");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_group_commit_write_poisons_the_store() -> anyhow::Result<()> {
    // The first write (topic creation) and the first produce succeed; the next write fails.
    let envs = [("FAILPOINTS", "sluice-store-write=2*off->return")];
    let broker = TestBroker::start_with_env(&["--metrics-listen", "127.0.0.1:0"], &envs).await?;
    create_topic(&broker, pb::Durability::Always).await?;
    assert_eq!(produce(&broker, "kept").await?, 0);
    let failed = produce(&broker, "lost").await.expect_err("the failed write is not acknowledged");
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    assert_poisoned(&broker, &["kept"], "synced write failed").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_periodic_wal_sync_poisons_the_store() -> anyhow::Result<()> {
    let envs = [("FAILPOINTS", "sluice-wal-sync=return")];
    let flags = ["--metrics-listen", "127.0.0.1:0", "--sync-interval-ms", "20"];
    let broker = TestBroker::start_with_env(&flags, &envs).await?;
    create_topic(&broker, pb::Durability::Interval).await?;
    // Acknowledged once written to the OS; the periodic sync that follows fails.
    assert_eq!(produce(&broker, "written").await?, 0);
    assert_poisoned(&broker, &["written"], "WAL sync failed").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_final_wal_sync_at_shutdown_is_an_error_exit() -> anyhow::Result<()> {
    let envs = [("FAILPOINTS", "sluice-wal-sync=return")];
    // A periodic sync far away: the final one at shutdown is the first to run.
    let flags = ["--sync-interval-ms", "60000"];
    let mut broker = TestBroker::start_with_env(&flags, &envs).await?;
    create_topic(&broker, pb::Durability::Interval).await?;
    assert_eq!(produce(&broker, "written").await?, 0);
    let code = broker.terminate(Duration::from_secs(30)).await?;
    assert_ne!(code, Some(0), "a failed final sync must not look like a clean stop");
    let log = broker.log_tail();
    assert!(log.contains("final WAL sync failed") && log.contains("poisoned"), "the log says why:\n{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_dead_letter_append_and_source_ack_writes_each_dead_letter_once() -> anyhow::Result<()> {
    // The broker aborts right after its dead letters are durable, before the source acks.
    let envs = [("FAILPOINTS", "sluice-dead-letter-written=return")];
    let mut broker = TestBroker::start_with_env(&[], &envs).await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic(TOPIC, 1, pb::TopicConfig::default()).await?;
    admin.create_topic("fp-dlq", 1, pb::TopicConfig::default()).await?;
    let mut config = sluice_tests::group_config(TOPIC, 30_000);
    config.max_delivery_attempts = Some(1);
    config.dead_letter_topic = "fp-dlq".into();
    sluice_tests::create_group(broker.channel(), "g", config).await?;
    for i in 0..5 {
        produce(&broker, &format!("poison-{i}")).await?;
    }
    let mut consumer = pb::consumer_client::ConsumerClient::new(broker.channel());
    let pull = pb::PullRequest { group: "g".into(), consumer_id: "c".into(), max_messages: 5, max_wait_ms: 1000 };
    let ids: Vec<String> = consumer.pull(pull).await?.into_inner().messages.into_iter().map(|m| m.ack_id).collect();
    assert_eq!(ids.len(), 5);
    let nack = pb::NackRequest { group: "g".into(), ack_ids: ids, reason: "poison".into(), ..Default::default() };
    // The nack itself is answered; the dead-lettering that follows kills the broker.
    let _ = consumer.nack(nack).await;
    let code = broker.wait_exit(Duration::from_secs(20)).await?;
    assert_ne!(code, Some(0), "the broker aborted at the failpoint");
    broker.set_envs(&[]);
    broker.start_again().await?;
    let admin = Admin::new(broker.channel());
    eventually(Duration::from_secs(20), "the group to settle its dead letters", || async {
        let info = admin.describe_group("g").await?;
        let dead: u64 = info.partitions.iter().map(|p| p.dead_lettered).sum();
        Ok((dead == 5).then_some(()))
    })
    .await?;
    let dead_letters = read_all(broker.channel(), "fp-dlq", 0).await?;
    let mut values: Vec<String> = dead_letters.iter().map(|r| String::from_utf8_lossy(&r.value).into_owned()).collect();
    values.sort();
    let expected: Vec<String> = (0..5).map(|i| format!("poison-{i}")).collect();
    assert_eq!(values, expected, "each message dead-lettered exactly once across the crash");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_recording_a_tick_and_producing_it_still_stores_the_tick_once() -> anyhow::Result<()> {
    // The broker aborts right after the first tick is recorded, before its event is produced.
    let envs = [("FAILPOINTS", "sluice-schedule-recorded=return")];
    let mut broker = TestBroker::start_with_env(&[], &envs).await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("fp-ticks", 1, pb::TopicConfig::default()).await?;
    let config = pb::ScheduleConfig { topic: "fp-ticks".into(), interval_ms: 200, ..Default::default() };
    let created = admin.create_schedule("fp-tick", config).await?;
    let code = broker.wait_exit(Duration::from_secs(20)).await?;
    assert_ne!(code, Some(0), "the broker aborted at the failpoint");
    broker.set_envs(&[]);
    broker.start_again().await?;
    let got = eventually(Duration::from_secs(20), "three ticks after the restart", || async {
        let got = sluice_tests::ticks::ticks(&read_all(broker.channel(), "fp-ticks", 0).await?, created.id)?;
        Ok((got.len() >= 3).then_some(got))
    })
    .await?;
    assert_eq!(got[0].n, 1, "the tick recorded before the crash was produced after it: {got:?}");
    sluice_tests::ticks::check_exactly_once(&got, created.created_ms, 200)?;
    Ok(())
}
