//! Records in a cluster (step 3 of docs/REPLICATION.md), with three real
//! broker processes on loopback:
//! - a produce at a broker that does not lead the partition's shard gets
//!   `UNAVAILABLE`, reason `not_leader`, with the leader's endpoint and epoch;
//!   at the leader it is answered once a majority has it;
//! - every broker serves the same records at the same offsets (`Fetch` from a
//!   follower reads its own replica, up to what is committed);
//! - the leader of a partition is killed with SIGKILL: another broker takes
//!   over, offsets continue where the acknowledged ones ended, and the killed
//!   broker restarts on its disk and catches up: nothing acknowledged is lost
//!   or duplicated on any replica.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_client::proto as pb;
use sluice_client::Admin;
use sluice_tests::cluster::produce_to_leader;
use sluice_tests::{eventually, read_all, TestCluster};

const PARTITIONS: u32 = 3;
const BATCHES: usize = 20;
const PER_BATCH: usize = 10;

fn values(partition: u32, batch: usize) -> Vec<String> {
    (0..PER_BATCH).map(|i| format!("p{partition}-b{batch}-m{i}")).collect()
}

/// Every record value of every partition, as broker `id` serves them.
async fn replica(cluster: &TestCluster, id: u64) -> anyhow::Result<BTreeMap<u32, Vec<String>>> {
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let records = read_all(cluster.broker(id).channel(), "events", p).await?;
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        anyhow::ensure!(offsets.iter().copied().eq(0..records.len() as u64), "dense offsets at broker {id}");
        out.insert(p, records.into_iter().map(|r| String::from_utf8_lossy(&r.value).into_owned()).collect());
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_replicated_and_survive_killing_a_partitions_leader() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    // Shard leaders move once, to their preferred brokers, soon after start: wait for that,
    // so the leaders this test finds stay where they are.
    cluster.leaders_spread(1).await?;
    Admin::new(cluster.broker(1).channel()).create_topic("events", PARTITIONS, pb::TopicConfig::default()).await?;
    let addrs: Vec<String> = cluster.brokers.iter().map(|b| b.addr.clone()).collect();

    // The topic reaches every broker, then each partition's leader takes its batches.
    for id in 1..=3u64 {
        eventually(Duration::from_secs(5), "the topic reaches every broker", || async {
            Ok(Admin::new(cluster.broker(id).channel()).describe_topic("events").await.ok().map(|_| ()))
        })
        .await?;
    }
    let mut acked: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut leaders = BTreeMap::new();
    for p in 0..PARTITIONS {
        for b in 0..BATCHES {
            let batch = values(p, b);
            let stored = produce_to_leader(&addrs[0], "events", p, &batch).await?;
            assert_eq!(stored.offset, (b * PER_BATCH) as u64, "dense offsets on partition {p}");
            leaders.insert(p, stored.leader);
            acked.entry(p).or_default().extend(batch);
        }
    }

    // A broker that does not lead partition 0 says who does.
    let leader0 = leaders[&0].clone();
    let follower = addrs.iter().find(|a| **a != leader0).cloned().ok_or_else(|| anyhow::anyhow!("no follower"))?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{follower}"))?.connect_lazy();
    let request = pb::ProduceRequest {
        topic: "events".into(),
        partition: Some(0),
        messages: vec![sluice_tests::message("refused")],
        ..Default::default()
    };
    // A client that follows not_leader itself says so (`sluice-redirect`) and is told the leader.
    let mut redirect = tonic::Request::new(request);
    redirect.metadata_mut().insert("sluice-redirect", tonic::metadata::MetadataValue::from_static("1"));
    let refused = pb::producer_client::ProducerClient::new(channel.clone())
        .produce(redirect)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a broker that does not lead partition 0 took a produce for it"))?;
    let get = |k: &str| refused.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(get("sluice-reason").as_deref(), Some("not_leader"));
    assert_eq!(get("sluice-leader"), Some(leader0.clone()), "names the leader's client endpoint");
    assert!(get("sluice-leader-epoch").and_then(|e| e.parse::<u64>().ok()).is_some_and(|e| e > 0), "{refused:?}");

    // Any other client (ghz, grpcurl) is served by the follower: it forwards the produce to
    // the leader, idempotent producer id and all.
    let mut client = pb::producer_client::ProducerClient::new(channel);
    let forwarded = pb::ProduceRequest {
        topic: "events".into(),
        partition: Some(0),
        messages: vec![sluice_tests::message("forwarded")],
        producer_id: 77,
        sequence: 0,
        ..Default::default()
    };
    let first = client.produce(forwarded.clone()).await?.into_inner();
    assert_eq!(first.offsets, [(BATCHES * PER_BATCH) as u64], "stored at the leader, after the others");
    let again = client.produce(forwarded).await?.into_inner();
    assert!(
        again.duplicate && again.offsets == first.offsets,
        "a retry through the follower is a duplicate: {again:?}"
    );
    acked.entry(0).or_default().push("forwarded".into());
    let forwarder = cluster.brokers.iter().find(|b| b.addr == follower).ok_or_else(|| anyhow::anyhow!("follower"))?;
    assert_eq!(forwarder.metric("sluice_produce_forwarded_total", &[]).await?, 2.0, "counted where forwarded");

    // Cluster.Metadata at a follower names the same leaders, and lists every shard.
    let info = sluice_client::ClusterInfo::new(cluster.broker(2).channel());
    let named: BTreeMap<u32, String> =
        info.partition_leaders(&["events"]).await?.into_iter().map(|p| (p.partition, p.leader_endpoint)).collect();
    assert_eq!(named, leaders, "Metadata names the brokers that took the produces");
    let shards = info.metadata().await?.shards;
    assert_eq!(shards.len(), 6, "two shards per broker: {shards:?}");
    eventually(Duration::from_secs(10), "every shard, idle ones too, has elected a leader", || async {
        let shards = info.metadata().await?.shards;
        Ok(shards.iter().all(|s| s.status.as_ref().is_some_and(|st| st.leader != 0)).then_some(()))
    })
    .await?;

    // Every broker serves the same records, read from its own replica.
    for id in 1..=3u64 {
        let seen = eventually(Duration::from_secs(10), "every replica serves what was acknowledged", || async {
            let seen = replica(&cluster, id).await?;
            Ok((seen == acked).then_some(seen))
        })
        .await?;
        assert_eq!(seen.values().map(Vec::len).sum::<usize>(), PARTITIONS as usize * BATCHES * PER_BATCH + 1);
    }

    // Partition 0's leader dies; another broker leads it and offsets continue.
    let killed = (1..=3u64).find(|id| addrs[(*id - 1) as usize] == leader0).ok_or_else(|| anyhow::anyhow!("leader"))?;
    cluster.broker_mut(killed).kill9().await?;
    let alive = addrs.iter().find(|a| **a != leader0).cloned().ok_or_else(|| anyhow::anyhow!("a survivor"))?;
    for b in BATCHES..BATCHES + 5 {
        let batch = values(0, b);
        let stored = produce_to_leader(&alive, "events", 0, &batch).await?;
        assert_ne!(stored.leader, leader0, "the killed broker cannot lead");
        assert_eq!(stored.offset, (b * PER_BATCH + 1) as u64, "offsets continue after the failover");
        acked.entry(0).or_default().extend(batch);
    }

    // The killed broker comes back on its own disk and catches up.
    cluster.broker_mut(killed).restart().await?;
    for id in 1..=3u64 {
        eventually(Duration::from_secs(15), "every replica, the restarted one too, has everything", || async {
            Ok((replica(&cluster, id).await.ok().as_ref() == Some(&acked)).then_some(()))
        })
        .await
        .map_err(|e| e.context(format!("broker {id}:\n{}", cluster.broker(id).log_tail())))?;
    }
    Ok(())
}

/// The values of every partition of `topic` as broker `id` serves them, sorted.
async fn all_values(cluster: &TestCluster, id: u64, topic: &str, partitions: u32) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for p in 0..partitions {
        let records = read_all(cluster.broker(id).channel(), topic, p).await?;
        out.extend(records.into_iter().map(|r| String::from_utf8_lossy(&r.value).into_owned()));
    }
    out.sort();
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_producer_and_the_cli_follow_leaders_across_a_failover() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    // Shard leaders move once, to their preferred brokers, soon after start: wait for that,
    // so the leaders this test finds stay where they are.
    cluster.leaders_spread(1).await?;
    let seed = 1u64;
    Admin::new(cluster.broker(seed).channel()).create_topic("orders", PARTITIONS, pb::TopicConfig::default()).await?;

    // One producer given broker 1 only: the partitions other brokers lead are followed there.
    let producer = sluice_client::Producer::new(cluster.broker(seed).channel(), Default::default());
    let mut expected = Vec::new();
    let mut acks = Vec::new();
    for i in 0..300 {
        let v = format!("first-{i:03}");
        acks.push(producer.enqueue("orders", None, sluice_tests::message(v.clone())).await?);
        expected.push(v);
    }
    for a in acks {
        a.await?;
    }

    // The CLI, also given broker 1, writes through the same redirects.
    let cli = tokio::process::Command::new(sluice_tests::binary("sluice"))
        .args(["--addr", &cluster.broker(seed).url(), "produce", "orders", "--count", "30", "--size", "8"])
        .output()
        .await?;
    assert!(cli.status.success(), "sluice produce: {}", String::from_utf8_lossy(&cli.stderr));
    expected.extend((0..30).map(|_| "x".repeat(8)));

    // A broker other than the seed that leads some partition is killed mid-stream: the
    // producer finds the new leaders through the seed, and its retries stay exactly-once.
    let addrs: Vec<String> = cluster.brokers.iter().map(|b| b.addr.clone()).collect();
    let mut victim = None;
    for p in 0..PARTITIONS {
        let leader = produce_to_leader(&addrs[0], "orders", p, &[format!("probe-{p}")]).await?.leader;
        expected.push(format!("probe-{p}"));
        if leader != addrs[0] {
            victim = Some((1..=3u64).find(|id| addrs[(*id - 1) as usize] == leader).unwrap_or(2));
        }
    }
    let leads = victim.is_some();
    let victim = victim.unwrap_or(2);
    println!("killing broker {victim} (leads a partition of orders: {leads})");
    let mut acks = Vec::new();
    for i in 0..300 {
        if i == 100 {
            cluster.broker_mut(victim).kill9().await?;
        }
        let v = format!("second-{i:03}");
        acks.push(producer.enqueue("orders", None, sluice_tests::message(v.clone())).await?);
        expected.push(v);
    }
    for a in acks {
        a.await?;
    }
    expected.sort();
    let survivor = if victim == seed { 2 } else { seed };
    eventually(Duration::from_secs(10), "every acknowledged message exactly once", || async {
        Ok((all_values(&cluster, survivor, "orders", PARTITIONS).await? == expected).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_partition_leader_acknowledges_nothing_and_is_rewound_on_healing() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    // Shard leaders move once, to their preferred brokers, soon after start: wait for that,
    // so the leaders this test finds stay where they are.
    cluster.leaders_spread(1).await?;
    Admin::new(cluster.broker(1).channel()).create_topic("cut", 1, pb::TopicConfig::default()).await?;
    let addrs: Vec<String> = cluster.brokers.iter().map(|b| b.addr.clone()).collect();
    let before = produce_to_leader(&addrs[0], "cut", 0, &["before".to_owned()]).await?;
    let isolated = (1..=3u64).find(|id| addrs[(*id - 1) as usize] == before.leader).unwrap_or(1);
    cluster.isolate(isolated, sluice_tests::Fault::Blackhole);

    // Produced at the cut-off leader: appended there, never acknowledged.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", before.leader))?.connect_lazy();
    let lost = pb::ProduceRequest {
        topic: "cut".into(),
        partition: Some(0),
        messages: vec![sluice_tests::message("never-acknowledged")],
        ..Default::default()
    };
    let cut_off = tokio::spawn(async move { pb::producer_client::ProducerClient::new(channel).produce(lost).await });

    // The other two elect a leader among themselves and take writes.
    let majority = addrs.iter().find(|a| **a != before.leader).cloned().ok_or_else(|| anyhow::anyhow!("majority"))?;
    let mut acked = vec!["before".to_owned()];
    for i in 0..5 {
        let v = format!("after-{i}");
        let stored = produce_to_leader(&majority, "cut", 0, std::slice::from_ref(&v)).await?;
        assert_ne!(stored.leader, before.leader, "the majority side leads");
        assert_eq!(stored.offset, 1 + i as u64, "offsets continue from what was acknowledged");
        acked.push(v);
    }
    let answer = cut_off.await?;
    let status = answer.err().ok_or_else(|| anyhow::anyhow!("a leader without a quorum acknowledged a produce"))?;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // Healed: the old leader's uncommitted record is rewound away, on every replica.
    cluster.heal();
    for id in 1..=3u64 {
        eventually(Duration::from_secs(15), "every replica holds exactly what was acknowledged", || async {
            let records = read_all(cluster.broker(id).channel(), "cut", 0).await?;
            let values: Vec<String> = records.iter().map(|r| String::from_utf8_lossy(&r.value).into_owned()).collect();
            Ok((values == acked).then_some(()))
        })
        .await
        .map_err(|e| e.context(format!("broker {id}:\n{}", cluster.broker(id).log_tail())))?;
    }
    let log = cluster.broker(isolated).log()?;
    assert!(log.contains("uncommitted records rewound"), "the cut-off leader had appended, then rewound");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_leaders_spread_and_move_off_a_stopping_broker() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    // Each shard ends up at its preferred broker, so every broker leads two of the six.
    cluster.leaders_spread(1).await?;
    Admin::new(cluster.broker(1).channel()).create_topic("busy", 6, pb::TopicConfig::default()).await?;

    // Broker 3 is stopped (SIGTERM): it hands its two shards to caught-up replicas before
    // it stops serving, instead of leaving them leaderless for an election timeout.
    let exit = cluster.broker_mut(3).terminate(Duration::from_secs(30)).await?;
    assert_eq!(exit, Some(0), "clean exit");
    let log = cluster.broker(3).log()?;
    // It led two (or more, if an election under load put another one there meanwhile).
    let line = log.lines().find(|l| l.contains("shard leaderships moved off this stopping broker"));
    let line = line.ok_or_else(|| anyhow::anyhow!("no hand-over logged:\n{log}"))?;
    let field = |name: &str| -> Option<u64> {
        let rest = &line[line.find(&format!("{name}="))? + name.len() + 1..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    assert_eq!(field("kept"), Some(0), "{line}");
    assert!(field("moved").is_some_and(|m| m >= 2), "{line}");
    let info = sluice_client::ClusterInfo::new(cluster.broker(1).channel());
    eventually(Duration::from_secs(5), "every shard led by a broker still up", || async {
        let shards = info.metadata().await?.shards;
        Ok(shards.iter().all(|s| s.status.as_ref().is_some_and(|st| st.leader == 1 || st.leader == 2)).then_some(()))
    })
    .await?;

    // Back, it gets its shards again once it has caught up, though every shard takes writes
    // all along (entries always in flight: the spreading must not wait for a moment with none).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..2).map(|_| tokio::spawn(write_until(cluster.broker(1).channel(), stop.clone()))).collect();
    cluster.broker_mut(3).start_again().await?;
    let spread = cluster.leaders_spread(1).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = 0;
    for task in load {
        acked += task.await??;
    }
    println!("{acked} messages acknowledged while broker 3 came back and took its shards again");
    spread?;
    assert!(acked > 0, "the shards took writes meanwhile");
    Ok(())
}

/// Produces rounds of 200 messages to topic `busy` through a pipelining
/// Rust producer until `stop` (at most 60 s); returns how many were acknowledged.
async fn write_until(
    channel: tonic::transport::Channel,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<u64> {
    let producer = sluice_client::Producer::new(channel, Default::default());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut acked = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && std::time::Instant::now() < deadline {
        let mut acks = Vec::new();
        for i in 0..200 {
            acks.push(producer.enqueue("busy", None, sluice_tests::message(format!("m-{i}"))).await?);
        }
        for a in acks {
            if a.await.is_ok() {
                acked += 1;
            }
        }
    }
    Ok(acked)
}
