//! SIGKILL the broker during a consume-and-ack run: afterwards every message
//! was acked at least once, no message whose ack returned OK before the crash
//! is delivered again, and the dead-letter topic holds exactly the poison ones.
//! SLUICE_GROUP_CRASH_MESSAGES sets the size (default 100000).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_client::proto as pb;
use sluice_client::{Admin, Consumer, ConsumerConfig, RetryConfig};
use sluice_tests::{create_group, eventually, group_config, produce_values, TestBroker};

fn id_of(r: &pb::Record) -> u64 {
    std::str::from_utf8(&r.value).ok().and_then(|s| s.parse().ok()).expect("values are ids")
}

fn is_poison(id: u64) -> bool {
    id % 25_000 == 7
}

#[derive(Default)]
struct Ledger {
    acked_before_crash: HashSet<u64>,
    acked: HashSet<u64>,
    delivered_after_restart: Vec<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_survive_sigkill_and_only_poison_is_dead_lettered() -> anyhow::Result<()> {
    let total: u64 = std::env::var("SLUICE_GROUP_CRASH_MESSAGES").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let mut broker = TestBroker::start().await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("stream", 4, pb::TopicConfig::default()).await?;
    let config = pb::GroupConfig {
        max_delivery_attempts: Some(2),
        dead_letter_topic: "stream.dlq".into(),
        ..group_config("stream", 10_000)
    };
    create_group(broker.channel(), "proc", config).await?;
    produce_values(broker.channel(), "stream", (0..total).map(|id| id.to_string())).await?;

    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let (crashed, restarted, done) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let retry = RetryConfig { initial: Duration::from_millis(20), max: Duration::from_millis(300), max_retries: 1000 };
    let mut workers = Vec::new();
    for w in 0..2 {
        let consumer = Consumer::new(
            broker.channel(),
            "proc",
            ConsumerConfig { consumer_id: format!("w{w}"), retry, ..Default::default() },
        );
        let (ledger, crashed, restarted, done) = (ledger.clone(), crashed.clone(), restarted.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let after_restart = restarted.load(Ordering::SeqCst);
                let Ok(batch) = consumer.pull(1000, Duration::from_millis(500)).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (mut good, mut bad, mut ids) = (Vec::new(), Vec::new(), Vec::new());
                for m in batch {
                    let id = id_of(&m.record);
                    if after_restart {
                        ledger.lock().expect("lock").delivered_after_restart.push(id);
                    }
                    if is_poison(id) {
                        bad.push(m.ack_id);
                    } else {
                        good.push(m.ack_id);
                        ids.push(id);
                    }
                }
                if !bad.is_empty() {
                    let _ = consumer.nack(bad, None, "poison").await;
                }
                if good.is_empty() {
                    continue;
                }
                // An ack retried across the restart can be refused for some ids (redelivered
                // meanwhile, so the old ack id is stale) and accepted for the others: count
                // exactly the accepted ones.
                if let Ok(failures) = consumer.ack(good.clone()).await {
                    let before = !crashed.load(Ordering::SeqCst);
                    let failed: HashSet<String> = failures.into_iter().map(|f| f.ack_id).collect();
                    let mut l = ledger.lock().expect("lock");
                    for (ack_id, id) in good.iter().zip(ids) {
                        if failed.contains(ack_id) {
                            continue;
                        }
                        l.acked.insert(id);
                        if before {
                            l.acked_before_crash.insert(id);
                        }
                    }
                }
            }
        }));
    }
    eventually(Duration::from_secs(120), "a third of the messages acked", || async {
        Ok((ledger.lock().expect("lock").acked.len() as u64 >= total / 3).then_some(()))
    })
    .await?;
    crashed.store(true, Ordering::SeqCst);
    broker.kill9().await?;
    let before_crash = ledger.lock().expect("lock").acked_before_crash.len();
    broker.start_again().await?;
    restarted.store(true, Ordering::SeqCst);
    let admin = Admin::new(broker.channel());
    let poison: HashSet<u64> = (0..total).filter(|&id| is_poison(id)).collect();
    eventually(Duration::from_secs(180), "backlog drained with every poison message dead-lettered", || async {
        let g = admin.describe_group("proc").await?;
        Ok((g.backlog_messages == 0 && g.dead_lettered >= poison.len() as u64).then_some(()))
    })
    .await?;
    done.store(true, Ordering::SeqCst);
    for w in workers {
        w.await?;
    }
    let letters = admin.peek_dead_letters("proc", 10_000).await?;
    let l = ledger.lock().expect("lock");
    eprintln!(
        "{total} messages, {before_crash} acked before SIGKILL, {} delivered after restart",
        l.delivered_after_restart.len()
    );
    for id in (0..total).filter(|id| !is_poison(*id)) {
        assert!(l.acked.contains(&id), "message {id} was never acked");
    }
    let redelivered: Vec<u64> =
        l.delivered_after_restart.iter().copied().filter(|id| l.acked_before_crash.contains(id)).collect();
    assert!(
        redelivered.is_empty(),
        "{} messages acked before the crash came back, e.g. {:?}",
        redelivered.len(),
        &redelivered[..redelivered.len().min(5)]
    );
    let dead: HashSet<u64> = letters.iter().map(id_of).collect();
    assert_eq!(dead, poison, "the dead-letter topic holds exactly the poison messages");
    Ok(())
}
