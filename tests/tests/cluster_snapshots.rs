//! Shard snapshots and log purge (step 5 of docs/REPLICATION.md), with three
//! real broker processes on loopback that snapshot every few entries:
//! - while one broker is SIGKILLed, the other two snapshot their shards and
//!   drop their logs past the entries it lacks (`Cluster.Metadata` shows
//!   each shard's snapshot and purged index);
//! - restarted, it installs the snapshots, copies the records it lacks from
//!   a peer and serves every record, byte for byte as the others do; its
//!   replica of a consumer group's state matches theirs;
//! - given back its shards, it appends at the offsets that follow the
//!   copied records, and the group carries on without redelivering anything
//!   acknowledged.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice_client::proto as pb;
use sluice_client::{Admin, ClusterInfo, Consumer, ConsumerConfig};
use sluice_tests::cluster::produce_to_leader;
use sluice_tests::{eventually, group_config, read_all, TestCluster};

const PARTITIONS: u32 = 6;
const MESSAGES: usize = 480;
const ACKED: usize = 200;

fn value(r: &pb::Record) -> String {
    String::from_utf8_lossy(&r.value).into_owned()
}

async fn partitions_at(cluster: &TestCluster, id: u64) -> anyhow::Result<Vec<Vec<pb::Record>>> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        out.push(read_all(cluster.broker(id).channel(), "history", p).await?);
    }
    Ok(out)
}

/// Committed offset and backlog of the group, as broker `id`'s replica has it.
async fn group_figures(cluster: &TestCluster, id: u64) -> anyhow::Result<(Vec<u64>, u64)> {
    let info = Admin::new(cluster.broker(id).channel()).describe_group("readers").await?;
    Ok((info.partitions.iter().map(|p| p.committed_offset).collect(), info.backlog_messages))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_behind_the_purged_log_catches_up_from_snapshots() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(3, &["--shard-snapshot-entries", "20"]).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    cluster.leaders_spread(1).await?;
    let admin = Admin::new(cluster.broker(1).channel());
    admin.create_topic("history", PARTITIONS, pb::TopicConfig::default()).await?;
    admin.create_group("readers", group_config("history", 60_000)).await?;

    // Broker 3 dies; one produce per message, so every message is a log entry of its shard.
    cluster.broker_mut(3).kill9().await?;
    let first = cluster.broker(1).addr.clone();
    for i in 0..MESSAGES {
        let partition = (i % PARTITIONS as usize) as u32;
        produce_to_leader(&first, "history", partition, &[format!("h-{i:04}")]).await?;
    }
    let consumer = Consumer::new(cluster.broker(1).channel(), "readers", ConsumerConfig::default());
    let mut acked = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.len() < ACKED && Instant::now() < deadline {
        // Small pulls and acks: many group-state entries too.
        let got = consumer.pull(10.min((ACKED - acked.len()) as u32), Duration::from_millis(500)).await?;
        let failures = consumer.ack(got.iter().map(|m| m.ack_id.clone()).collect()).await?;
        assert!(failures.is_empty(), "acks refused: {failures:?}");
        acked.extend(got.iter().map(|m| value(&m.record)));
    }
    assert_eq!(acked.len(), ACKED, "acknowledged before the restart");

    // The live brokers dropped their logs past what broker 3 holds.
    let info = ClusterInfo::new(cluster.broker(1).channel());
    eventually(Duration::from_secs(20), "every shard snapshotted and dropped its log", || async {
        let shards = info.metadata().await?.shards;
        let purged: Vec<u64> = shards.iter().map(|s| s.status.as_ref().map_or(0, |st| st.purged_index)).collect();
        println!("purged indexes at broker 1: {purged:?}");
        Ok((purged.len() == 6 && purged.iter().all(|p| *p > 0)).then_some(()))
    })
    .await?;

    // Broker 3 restarts: it installs snapshots and copies records.
    cluster.broker_mut(3).restart().await?;
    let expected = partitions_at(&cluster, 1).await?;
    assert_eq!(expected.iter().map(Vec::len).sum::<usize>(), MESSAGES);
    eventually(Duration::from_secs(30), "broker 3 serves every record as broker 1 does", || async {
        Ok((partitions_at(&cluster, 3).await.ok().as_ref() == Some(&expected)).then_some(()))
    })
    .await
    .map_err(|e| e.context(cluster.broker(3).log_tail()))?;
    let log = cluster.broker(3).log()?;
    let installed = log.matches("shard snapshot installed").count();
    println!("broker 3 installed {installed} shard snapshots");
    assert!(installed > 0, "broker 3 caught up from snapshots:\n{}", cluster.broker(3).log_tail());
    let on_one = group_figures(&cluster, 1).await?;
    eventually(Duration::from_secs(20), "broker 3's replica of the group matches broker 1's", || async {
        Ok((group_figures(&cluster, 3).await? == on_one).then_some(()))
    })
    .await?;

    // Broker 3 leads its shards again: appends follow the copied records.
    cluster.leaders_spread(1).await?;
    let leaders = info.partition_leaders(&["history"]).await?;
    let at_three: Vec<u32> =
        leaders.iter().filter(|p| p.leader_endpoint == cluster.broker(3).addr).map(|p| p.partition).collect();
    assert!(!at_three.is_empty(), "broker 3 leads some partition again: {leaders:?}");
    for p in at_three {
        let stored = produce_to_leader(&cluster.broker(3).addr, "history", p, &["after".into()]).await?;
        assert_eq!(stored.leader, cluster.broker(3).addr);
        assert_eq!(stored.offset, expected[p as usize].len() as u64, "partition {p}: the offset after the copied ones");
    }

    // The group goes on from the replicated state: nothing acknowledged comes back.
    let mut rest = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rest.len() < MESSAGES - ACKED && Instant::now() < deadline {
        match consumer.pull(100, Duration::from_millis(500)).await {
            Ok(got) => {
                for m in &got {
                    let v = value(&m.record);
                    assert!(!acked.contains(&v), "{v} was acknowledged and delivered again");
                    if v != "after" {
                        rest.insert(v);
                    }
                }
                consumer.ack(got.iter().map(|m| m.ack_id.clone()).collect()).await?;
            }
            Err(e) => {
                println!("pull while leaders move: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(rest.len(), MESSAGES - ACKED, "every unacknowledged message is delivered");
    Ok(())
}

/// Earliest and latest offset of `topic`'s partition 0 as broker `id` serves it.
async fn offsets_at(cluster: &TestCluster, id: u64, topic: &str) -> anyhow::Result<(u64, u64)> {
    let p = Admin::new(cluster.broker(id).channel()).describe_topic(topic).await?.partitions.remove(0);
    Ok((p.earliest_offset, p.latest_offset))
}

/// Retention in a cluster: every replica removes expired records (a quiet
/// shard snapshots and drops its log so the records can go), a broker that
/// was down starts the partition where its peers' records begin, and offsets
/// continue from there everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_expired_records_on_every_replica() -> anyhow::Result<()> {
    const SENT: u64 = 30;
    let mut cluster =
        TestCluster::start_with(3, &["--shard-snapshot-entries", "1000", "--retention-check-ms", "100"]).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    let admin = Admin::new(cluster.broker(1).channel());
    admin.create_topic("ephemeral", 1, pb::TopicConfig { retention_ms: 1500, ..Default::default() }).await?;
    cluster.broker_mut(3).kill9().await?;
    let first = cluster.broker(1).addr.clone();
    for i in 0..SENT {
        produce_to_leader(&first, "ephemeral", 0, &[format!("e-{i}")]).await?;
    }
    for id in 1..=2u64 {
        eventually(Duration::from_secs(20), "every record expires on the running brokers", || async {
            Ok((offsets_at(&cluster, id, "ephemeral").await? == (SENT, SENT)).then_some(()))
        })
        .await
        .map_err(|e| e.context(cluster.broker(id).log_tail()))?;
    }
    assert!(cluster.broker(1).log()?.contains("segment deleted by retention"), "broker 1 logged the removal");

    // Broker 3 comes back: its peers hold nothing it lacks, so it starts where they begin.
    cluster.broker_mut(3).restart().await?;
    eventually(Duration::from_secs(30), "broker 3 starts the partition where its peers' records begin", || async {
        Ok((offsets_at(&cluster, 3, "ephemeral").await.ok() == Some((SENT, SENT))).then_some(()))
    })
    .await
    .map_err(|e| e.context(cluster.broker(3).log_tail()))?;
    assert!(
        cluster.broker(3).log()?.contains("it starts where its peers' records begin"),
        "broker 3 installed a snapshot and skipped the expired records:\n{}",
        cluster.broker(3).log_tail()
    );
    let stored = produce_to_leader(&first, "ephemeral", 0, &["new".into()]).await?;
    assert_eq!(stored.offset, SENT, "offsets continue after everything expired");
    for id in 1..=3u64 {
        eventually(Duration::from_secs(10), "every broker serves the new record", || async {
            let records = read_all(cluster.broker(id).channel(), "ephemeral", 0).await?;
            let values: Vec<String> = records.iter().map(value).collect();
            Ok((values == ["new"] && records[0].offset == SENT).then_some(()))
        })
        .await?;
    }
    Ok(())
}

/// Every value of `topic`'s partitions as broker `id` serves them, by partition.
async fn values_at(cluster: &TestCluster, id: u64, topic: &str, partitions: u32) -> anyhow::Result<Vec<Vec<String>>> {
    let mut out = Vec::new();
    for p in 0..partitions {
        out.push(read_all(cluster.broker(id).channel(), topic, p).await?.iter().map(value).collect());
    }
    Ok(out)
}

/// A dead-letter purge in a cluster (a replicated purge entry per
/// dead-letter partition, proposed at each partition's leader): made through
/// one broker while another is down (so some leaders are being elected), the
/// purged records are served by no broker again, also by one SIGKILLed and
/// restarted right after the purge, and the broker that was down (which
/// catches up from snapshots, as the purge made the others drop their logs)
/// neither shows nor copies them. Retention removes their segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_dead_letters_are_gone_on_every_replica_across_restarts_and_snapshots() -> anyhow::Result<()> {
    const DEAD: usize = 12;
    const PARTS: u32 = 3;
    let mut cluster =
        TestCluster::start_with(3, &["--shard-snapshot-entries", "1000", "--retention-check-ms", "100"]).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    let admin = Admin::new(cluster.broker(1).channel());
    admin.create_topic("orders", PARTS, pb::TopicConfig::default()).await?;
    let first = cluster.broker(1).addr.clone();
    for i in 0..DEAD {
        produce_to_leader(&first, "orders", (i % PARTS as usize) as u32, &[format!("o-{i:02}")]).await?;
    }
    let config = pb::GroupConfig {
        max_delivery_attempts: Some(1),
        dead_letter_topic: "orders-dlq".into(),
        ..group_config("orders", 10_000)
    };
    admin.create_group("billing", config).await?;
    cluster.leaders_spread(1).await?;
    let consumer = Consumer::new(cluster.broker(1).channel(), "billing", ConsumerConfig::default());
    let mut dead = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead < DEAD && Instant::now() < deadline {
        let got = consumer.pull(100, Duration::from_millis(200)).await?;
        let ids: Vec<String> = got.into_iter().map(|m| m.ack_id).collect();
        if !ids.is_empty() {
            consumer.nack(ids, Some(Duration::ZERO), "declined").await?;
        }
        dead = values_at(&cluster, 1, "orders-dlq", PARTS).await?.iter().map(Vec::len).sum();
    }
    assert_eq!(dead, DEAD, "every message dead-lettered");
    for id in 2..=3u64 {
        eventually(Duration::from_secs(10), "every broker holds the dead letters", || async {
            let n: usize = values_at(&cluster, id, "orders-dlq", PARTS).await?.iter().map(Vec::len).sum();
            Ok((n == DEAD).then_some(()))
        })
        .await?;
    }

    // Broker 3 goes down; the purge is made through broker 2.
    cluster.broker_mut(3).kill9().await?;
    let purged = Admin::new(cluster.broker(2).channel()).purge_dead_letters("billing").await?;
    assert_eq!(purged, DEAD as u64, "the purge counts every dead letter");
    // Broker 1 restarts at once, before retention can remove the records: its floors hide them.
    cluster.broker_mut(1).kill9().await?;
    cluster.broker_mut(1).restart().await?;
    let empty: Vec<Vec<String>> = vec![Vec::new(); PARTS as usize];
    let mut ends = Vec::new();
    for id in 1..=2u64 {
        // Read as soon as the broker serves the topic (broker 1 is starting).
        let served = eventually(Duration::from_secs(20), "the dead-letter topic is served", || async {
            Ok(values_at(&cluster, id, "orders-dlq", PARTS).await.ok())
        })
        .await?;
        assert_eq!(served, empty, "broker {id} serves no dead letter");
        let peeked = Admin::new(cluster.broker(id).channel()).peek_dead_letters("billing", 100).await?;
        assert!(peeked.is_empty(), "broker {id} peeks none: {peeked:?}");
        let topic = Admin::new(cluster.broker(id).channel()).describe_topic("orders-dlq").await?;
        ends = topic.partitions.iter().map(|p| p.latest_offset).collect();
        assert!(topic.partitions.iter().all(|p| p.earliest_offset == p.latest_offset), "{topic:?}");
        assert_eq!(ends.iter().sum::<u64>(), DEAD as u64, "offsets are kept, nothing is readable");
    }
    // The purged segments go on the live brokers (their logs are dropped past the purge first).
    for id in 1..=2u64 {
        eventually(Duration::from_secs(20), "retention removes the purged segments", || async {
            Ok(cluster.broker(id).log()?.contains("segment deleted by retention").then_some(()))
        })
        .await
        .map_err(|e| e.context(cluster.broker(id).log_tail()))?;
    }

    // Records after the purge: offsets continue.
    let mut expected = empty.clone();
    for p in 0..PARTS {
        let stored = produce_to_leader(&first, "orders-dlq", p, &[format!("after-{p}")]).await?;
        expected[p as usize].push(format!("after-{p}"));
        assert_eq!(stored.offset, ends[p as usize], "partition {p}: the offset after the purged ones");
    }

    // Broker 3 comes back behind the dropped logs: it installs snapshots and shows only what is left.
    cluster.broker_mut(3).restart().await?;
    eventually(Duration::from_secs(30), "broker 3 serves only what the purge left", || async {
        Ok((values_at(&cluster, 3, "orders-dlq", PARTS).await.ok().as_ref() == Some(&expected)).then_some(()))
    })
    .await
    .map_err(|e| e.context(cluster.broker(3).log_tail()))?;
    assert!(cluster.broker(3).log()?.contains("shard snapshot installed"), "broker 3 caught up from a snapshot");
    let peeked = Admin::new(cluster.broker(3).channel()).peek_dead_letters("billing", 100).await?;
    assert_eq!(peeked.len(), PARTS as usize, "broker 3 peeks only the records after the purge: {peeked:?}");
    Ok(())
}
