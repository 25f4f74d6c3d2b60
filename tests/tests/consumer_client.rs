//! The Rust `Consumer` and the `Subscribe` stream against the real broker:
//! lease extension for slow handlers, riding through a broker restart, and
//! streaming delivery with credits and acks on the stream.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_client::proto as pb;
use sluice_client::proto::consumer_client::ConsumerClient;
use sluice_client::{Admin, Consumer, ConsumerConfig, RetryConfig};
use sluice_tests::{create_group, eventually, group_config, produce_values, TestBroker};
use tokio_util::sync::CancellationToken;

async fn produce(broker: &TestBroker, topic: &str, n: u32) -> anyhow::Result<()> {
    produce_values(broker.channel(), topic, (0..n).map(|i| i.to_string())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_keeps_its_lease_by_extension() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("slow", 1, pb::TopicConfig::default()).await?;
    create_group(broker.channel(), "g", group_config("slow", 400)).await?;
    produce(&broker, "slow", 3).await?;
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let consumer = Consumer::new(broker.channel(), "g", ConsumerConfig { concurrency: 3, ..Default::default() });
    let stop = CancellationToken::new();
    let run = {
        let (attempts, stop) = (attempts.clone(), stop.clone());
        tokio::spawn(async move {
            consumer
                .run(
                    move |m| {
                        let attempts = attempts.clone();
                        async move {
                            attempts.lock().expect("lock").push(m.attempt);
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                            Ok(())
                        }
                    },
                    stop,
                )
                .await
        })
    };
    let admin = Admin::new(broker.channel());
    eventually(Duration::from_secs(20), "all three acked", || async {
        Ok((admin.describe_group("g").await?.backlog_messages == 0).then_some(()))
    })
    .await?;
    stop.cancel();
    run.await??;
    assert_eq!(
        *attempts.lock().expect("lock"),
        vec![1, 1, 1],
        "handlers ran 4x longer than the lease and were never redelivered"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_rides_through_a_broker_restart() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("steady", 2, pb::TopicConfig::default()).await?;
    create_group(broker.channel(), "g", group_config("steady", 2000)).await?;
    produce(&broker, "steady", 3000).await?;
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let retry =
        RetryConfig { initial: Duration::from_millis(20), max: Duration::from_millis(200), max_retries: usize::MAX };
    let consumer = Consumer::new(
        broker.channel(),
        "g",
        ConsumerConfig { retry, max_wait: Duration::from_millis(500), ..Default::default() },
    );
    let stop = CancellationToken::new();
    let run = {
        let (seen, stop) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            consumer
                .run(
                    move |m| {
                        let seen = seen.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            seen.lock().expect("lock").insert(String::from_utf8_lossy(&m.record.value).into_owned());
                            Ok(())
                        }
                    },
                    stop,
                )
                .await
        })
    };
    eventually(Duration::from_secs(30), "some progress", || async {
        Ok((seen.lock().expect("lock").len() > 300).then_some(()))
    })
    .await?;
    broker.restart().await?;
    let admin = Admin::new(broker.channel());
    let drained = eventually(Duration::from_secs(60), "everything acked after the restart", || async {
        anyhow::ensure!(!run.is_finished(), "the consumer stopped by itself");
        Ok((admin.describe_group("g").await?.backlog_messages == 0).then_some(()))
    })
    .await;
    if drained.is_err() {
        eprintln!("group: {:?}\nbroker log:\n{}", admin.describe_group("g").await, broker.log_tail());
        if run.is_finished() {
            eprintln!("consumer ended with {:?}", run.await);
            anyhow::bail!("the consumer stopped by itself");
        }
    }
    drained?;
    stop.cancel();
    run.await??;
    assert_eq!(seen.lock().expect("lock").len(), 3000, "every message handled at least once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_stream_delivers_within_credits_and_confirms_acks() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("s", 2, pb::TopicConfig::default()).await?;
    create_group(broker.channel(), "g", group_config("s", 10_000)).await?;
    produce(&broker, "s", 50).await?;
    use pb::subscribe_request::Kind;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let start = pb::SubscribeStart { group: "g".into(), consumer_id: "streamer".into(), initial_credits: 20 };
    tx.send(pb::SubscribeRequest { kind: Some(Kind::Start(start)) }).await?;
    let mut inbound = ConsumerClient::new(broker.channel())
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (mut received, mut confirmed) = (Vec::new(), 0usize);
    while received.len() < 20 {
        let r = tokio::time::timeout(Duration::from_secs(10), inbound.message()).await??.expect("stream open");
        received.extend(r.messages);
    }
    assert_eq!(received.len(), 20, "never more than the credits granted");
    let nothing = tokio::time::timeout(Duration::from_millis(300), inbound.message()).await;
    assert!(nothing.is_err(), "no messages without credits");
    let ids: Vec<String> = received.iter().map(|m| m.ack_id.clone()).collect();
    tx.send(pb::SubscribeRequest { kind: Some(Kind::Ack(pb::AckRequest { group: String::new(), ack_ids: ids })) })
        .await?;
    tx.send(pb::SubscribeRequest { kind: Some(Kind::Credits(100)) }).await?;
    while received.len() < 50 || confirmed < 20 {
        let r = tokio::time::timeout(Duration::from_secs(10), inbound.message()).await??.expect("stream open");
        confirmed += r.confirmed.len();
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        received.extend(r.messages);
    }
    let distinct: HashSet<_> = received.iter().map(|m| m.ack_id.clone()).collect();
    assert_eq!(distinct.len(), 50);
    let g = Admin::new(broker.channel()).describe_group("g").await?;
    assert_eq!((g.backlog_messages, g.in_flight), (30, 30), "the 20 acks are committed, 30 leased");
    assert_eq!(g.members, vec!["streamer".to_owned()]);
    Ok(())
}
