//! `sluice-client` with its default settings rides through broker restarts
//! (one SIGKILL, one graceful): the producer resends what was in flight
//! idempotently, so every message is stored exactly once and every `send`
//! succeeds; the consumer reconnects and re-joins its group, so every message
//! is handled at least once and the group drains.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_client::proto as pb;
use sluice_client::{Admin, Consumer, ConsumerConfig, Producer, ProducerConfig};
use sluice_tests::payload::{id_of, payload};
use sluice_tests::{create_group, eventually, group_config, read_all, TestBroker};
use tokio_util::sync::CancellationToken;

const MESSAGES: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_ride_through_restarts_without_loss_or_duplicate_writes() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("jobs", 3, pb::TopicConfig::default()).await?;
    create_group(broker.channel(), "handlers", group_config("jobs", 2000)).await?;

    let handled: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let stop = CancellationToken::new();
    let consumer = Consumer::new(broker.channel(), "handlers", ConsumerConfig::default());
    let consuming = {
        let (handled, stop) = (handled.clone(), stop.clone());
        tokio::spawn(async move {
            consumer
                .run(
                    move |m| {
                        let handled = handled.clone();
                        async move {
                            let id = id_of(&m.record.value).ok_or("value without an id")?;
                            *handled.lock().expect("lock").entry(id).or_default() += 1;
                            Ok(())
                        }
                    },
                    stop,
                )
                .await
        })
    };
    let producer = Producer::new(broker.channel(), ProducerConfig::default());
    let producing = tokio::spawn(async move {
        let mut acks = Vec::new();
        for id in 0..MESSAGES {
            let message = pb::Message { key: None, value: payload(id, 200), headers: vec![] };
            acks.push(producer.enqueue("jobs", None, message).await?);
            if id % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut failed = 0;
        for a in acks {
            failed += u64::from(a.await.is_err());
        }
        anyhow::Ok(failed)
    });

    let stored = |n: u64| {
        let admin = admin.clone();
        async move {
            let t = admin.describe_topic("jobs").await?;
            Ok((t.partitions.iter().map(|p| p.latest_offset).sum::<u64>() >= n).then_some(()))
        }
    };
    eventually(Duration::from_secs(60), "a third of the messages stored", || stored(MESSAGES / 3)).await?;
    broker.kill9().await?;
    broker.start_again().await?;
    eventually(Duration::from_secs(60), "two thirds of the messages stored", || stored(2 * MESSAGES / 3)).await?;
    broker.terminate(Duration::from_secs(30)).await?;
    broker.start_again().await?;

    let failed = producing.await??;
    assert_eq!(failed, 0, "every send succeeds across the restarts");
    let mut ids = Vec::new();
    for p in 0..3 {
        ids.extend(read_all(broker.channel(), "jobs", p).await?.iter().filter_map(|r| id_of(&r.value)));
    }
    ids.sort_unstable();
    let expected: Vec<u64> = (0..MESSAGES).collect();
    assert_eq!(ids.len() as u64, MESSAGES, "each message stored once: resends were deduplicated");
    assert_eq!(ids, expected, "every message stored");

    eventually(Duration::from_secs(120), "every message handled", || async {
        Ok((handled.lock().expect("lock").len() as u64 == MESSAGES).then_some(()))
    })
    .await?;
    eventually(Duration::from_secs(30), "the group to drain", || async {
        Ok((admin.describe_group("handlers").await?.backlog_messages == 0).then_some(()))
    })
    .await?;
    stop.cancel();
    consuming.await??;
    let again = handled.lock().expect("lock").values().filter(|&&n| n > 1).count();
    eprintln!("{MESSAGES} messages: stored once each, handled at least once, {again} handled again after a restart");
    Ok(())
}
