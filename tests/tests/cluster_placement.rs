//! Per-topic replication factor in a cluster of three real brokers on
//! loopback (docs/REPLICATION.md, "Raft groups"):
//! - `CreateTopicRequest.replication_factor` 0 takes the default (3), 1 to 3
//!   are accepted, 4 is `INVALID_ARGUMENT`;
//! - a topic of one or two replicas is held by exactly that many brokers:
//!   they serve its records, every other broker answers reads with
//!   `not_leader` naming one that holds it, and a produce at any broker is
//!   forwarded there;
//! - a consumer group of such a topic is served where its records are; a
//!   consumer connected to any broker is sent there and gets every message;
//! - dead letters in a placed topic are purged through a broker that holds
//!   no replica of it (it asks the replicas);
//! - a replica killed with SIGKILL and restarted serves the same records
//!   (its placed shard finds its partitions again).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice_client::proto as pb;
use sluice_client::{Admin, Consumer, ConsumerConfig};
use sluice_tests::{eventually, group_config, read_all, TestCluster};

const PARTITIONS: u32 = 2;
const PER_PARTITION: usize = 30;

/// Produces `PER_PARTITION` messages to each partition of `topic`, one unary
/// call each, round-robin over the brokers (those that hold no replica
/// forward). Idempotent, so a call retried while a leader moves (UNAVAILABLE)
/// is stored once.
async fn fill(cluster: &TestCluster, topic: &str) -> anyhow::Result<Vec<String>> {
    let mut sent = Vec::new();
    for i in 0..PER_PARTITION {
        for p in 0..PARTITIONS {
            let value = format!("{topic}-p{p}-m{i}");
            let request = pb::ProduceRequest {
                topic: topic.into(),
                partition: Some(p),
                messages: vec![sluice_tests::message(value.clone())],
                producer_id: 1 + u64::from(p),
                sequence: i as u64,
                ..Default::default()
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            let offsets = loop {
                let via = cluster.broker(1 + (i as u64 + u64::from(p)) % 3).channel();
                match pb::producer_client::ProducerClient::new(via).produce(request.clone()).await {
                    Ok(r) => break r.into_inner().offsets,
                    Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                        println!("produce to {topic}/{p} while a leader moves: {}", s.message());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(s) => anyhow::bail!("producing to {topic}/{p}: {s:?}"),
                }
            };
            assert_eq!(offsets, [i as u64], "dense offsets on {topic}/{p}");
            sent.push(value);
        }
    }
    Ok(sent)
}

/// The brokers that serve `topic`'s records (a `Fetch` there returns them);
/// every other broker must answer `not_leader` naming a broker that serves
/// them, and a `PartitionReader` given such a broker follows it there.
async fn holders(cluster: &TestCluster, topic: &str) -> anyhow::Result<BTreeSet<u64>> {
    let mut holding = BTreeSet::new();
    let addrs: Vec<(u64, String)> = cluster.ids().into_iter().map(|id| (id, cluster.broker(id).addr.clone())).collect();
    let mut redirects = Vec::new();
    for (id, _) in &addrs {
        let fetch =
            pb::FetchRequest { topic: topic.into(), partition: 0, offset: 0, max_messages: 1000, ..Default::default() };
        match pb::consumer_client::ConsumerClient::new(cluster.broker(*id).channel()).fetch(fetch).await {
            Ok(r) => {
                let offsets: Vec<u64> = r.into_inner().records.iter().map(|r| r.offset).collect();
                assert_eq!(offsets, (0..PER_PARTITION as u64).collect::<Vec<_>>(), "broker {id} serves {topic}/0");
                holding.insert(*id);
            }
            Err(status) => {
                let get = |k: &str| status.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
                assert_eq!(status.code(), tonic::Code::Unavailable, "broker {id}: {status:?}");
                assert_eq!(get("sluice-reason").as_deref(), Some("not_leader"), "broker {id}: {status:?}");
                redirects.push((*id, get("sluice-leader")));
            }
        }
    }
    for (id, to) in redirects {
        let named = addrs.iter().find(|(_, a)| Some(a) == to.as_ref()).map(|(b, _)| *b);
        assert!(named.is_some_and(|b| holding.contains(&b)), "broker {id} sends readers of {topic} to {to:?}");
        let records = read_all(cluster.broker(id).channel(), topic, 0).await?;
        assert_eq!(records.len(), PER_PARTITION, "a reader given broker {id} reads {topic}/0 where it is held");
    }
    Ok(holding)
}

/// Pulls and acks through broker `via` until every one of `expected` is delivered.
async fn consume_all(cluster: &TestCluster, via: u64, group: &str, expected: &[String]) -> anyhow::Result<()> {
    let consumer = Consumer::new(cluster.broker(via).channel(), group, ConsumerConfig::default());
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < expected.len() && Instant::now() < deadline {
        match consumer.pull(100, Duration::from_millis(500)).await {
            Ok(batch) => {
                got.extend(batch.iter().map(|m| String::from_utf8_lossy(&m.record.value).into_owned()));
                consumer.ack(batch.iter().map(|m| m.ack_id.clone()).collect()).await?;
            }
            Err(e) => {
                println!("pull through broker {via}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(got, expected.iter().cloned().collect::<BTreeSet<_>>(), "group {group} through broker {via}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_held_by_as_many_brokers_as_their_replication_factor() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    let admin = Admin::new(cluster.broker(1).channel());
    let config = pb::TopicConfig::default;

    let refused = admin.create_replicated_topic("four", 1, 4, config()).await.expect_err("4 replicas of 3 brokers");
    let sluice_client::Error::Status(status) = &refused else { anyhow::bail!("no status: {refused}") };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("replication_factor"), "names the field: {status:?}");
    assert_eq!(admin.create_topic("full", PARTITIONS, config()).await?.replication_factor, 3, "the default");
    assert_eq!(admin.create_replicated_topic("solo", PARTITIONS, 1, config()).await?.replication_factor, 1);
    assert_eq!(admin.create_replicated_topic("pair", PARTITIONS, 2, config()).await?.replication_factor, 2);
    for id in 1..=3u64 {
        eventually(Duration::from_secs(5), "the topics reach every broker", || async {
            let listed = Admin::new(cluster.broker(id).channel()).list_topics().await?;
            Ok((listed.len() == 3).then_some(()))
        })
        .await?;
    }

    let mut sent = Vec::new();
    for topic in ["full", "solo", "pair"] {
        sent.push(fill(&cluster, topic).await?);
    }
    let solo = holders(&cluster, "solo").await?;
    let pair = holders(&cluster, "pair").await?;
    assert_eq!(holders(&cluster, "full").await?.len(), 3);
    assert_eq!(solo.len(), 1, "one broker holds solo: {solo:?}");
    for id in 1..=3u64 {
        let described = Admin::new(cluster.broker(id).channel()).describe_topic("solo").await?;
        let latest: Vec<u64> = described.partitions.iter().map(|p| p.latest_offset).collect();
        assert_eq!(latest, [PER_PARTITION as u64; PARTITIONS as usize], "solo described through broker {id}");
    }
    assert_eq!(pair.len(), 2, "two brokers hold pair: {pair:?}");
    println!("solo on {solo:?}, pair on {pair:?}");

    // Groups of placed topics run where the records are; any broker sends consumers there.
    for topic in ["solo", "pair"] {
        Admin::new(cluster.broker(1).channel())
            .create_group(&format!("{topic}-readers"), group_config(topic, 5_000))
            .await?;
    }
    let outside = |held: &BTreeSet<u64>| (1..=3u64).find(|b| !held.contains(b)).unwrap_or(1);
    consume_all(&cluster, outside(&solo), "solo-readers", &sent[1]).await?;
    consume_all(&cluster, outside(&pair), "pair-readers", &sent[2]).await?;
    // Described through any broker: the Admin client follows not_leader to where the group runs.
    for id in 1..=3u64 {
        eventually(Duration::from_secs(5), "solo-readers described with nothing left", || async {
            let described = Admin::new(cluster.broker(id).channel()).describe_group("solo-readers").await?;
            assert_eq!(described.config.as_ref().map(|c| c.topic.as_str()), Some("solo"), "{described:?}");
            Ok((described.backlog_messages == 0).then_some(()))
        })
        .await?;
    }

    // Dead letters in a placed topic are purged through a broker that holds none of them,
    // by a raw call that follows nothing (as grpcurl makes it): that broker asks the replicas.
    // The group makes its dead-letter topic beside `solo` (the same placed shard).
    let with_dlq = pb::GroupConfig { dead_letter_topic: "solo-dlq".into(), ..group_config("solo", 5_000) };
    admin.create_group("solo-dead", with_dlq).await?;
    for id in 1..=3u64 {
        eventually(Duration::from_secs(5), "solo-dlq reaches every broker", || async {
            Ok(Admin::new(cluster.broker(id).channel()).describe_topic("solo-dlq").await.ok())
        })
        .await?;
    }
    let dead = fill(&cluster, "solo-dlq").await?;
    let dlq = holders(&cluster, "solo-dlq").await?;
    let mut raw = pb::admin_client::AdminClient::new(cluster.broker(outside(&dlq)).channel());
    let purged = raw.purge_dead_letters(pb::PurgeDeadLettersRequest { group: "solo-dead".into() }).await?;
    assert_eq!(purged.into_inner().purged, dead.len() as u64, "purged through broker {}", outside(&dlq));
    for id in 1..=3u64 {
        let described = Admin::new(cluster.broker(id).channel()).describe_topic("solo-dlq").await?;
        let ends: Vec<(u64, u64)> = described.partitions.iter().map(|p| (p.earliest_offset, p.latest_offset)).collect();
        let expected = (PER_PARTITION as u64, PER_PARTITION as u64);
        assert_eq!(ends, [expected; PARTITIONS as usize], "nothing readable, described through broker {id}");
    }

    // The broker holding solo is killed and restarts: its placed shard finds its partitions again.
    let holder = *solo.iter().next().ok_or_else(|| anyhow::anyhow!("no holder"))?;
    cluster.broker_mut(holder).kill9().await?;
    cluster.broker_mut(holder).start_again().await?;
    eventually(Duration::from_secs(20), "the restarted broker serves solo again", || async {
        Ok(read_all(cluster.broker(holder).channel(), "solo", 1).await.ok().filter(|r| r.len() == PER_PARTITION))
    })
    .await?;
    assert_eq!(holders(&cluster, "solo").await?, solo, "the same broker, the same records");
    Ok(())
}
