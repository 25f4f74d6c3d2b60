//! One broker of three whose data volume fills up (a small tmpfs the test
//! mounts): it refuses produce below its free-space reserve, so it must not
//! lead any shard meanwhile. It hands its leaderships to its peers, the
//! catalog marks it (`sluice cluster status` shows it), no peer hands a
//! shard back while it is full, and clients carry on at the other two.
//! Once space is freed it takes its shards back, holding every record.
//! Needs root (mount); without it the test says so and skips, except under CI=true.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_client::ClusterInfo;
use sluice_tests::cluster::produce_to_leader;
use sluice_tests::tmpfs::{self, Tmpfs};
use sluice_tests::{eventually, read_all, TestCluster};

const VOLUME_BYTES: u64 = 192 << 20;
const RESERVE_BYTES: u64 = 32 << 20;
const PARTITIONS: u32 = 6;

/// Three brokers with the free-space reserve, broker 3's data on a small tmpfs (returned: keep
/// it mounted while the cluster runs).
async fn start_with_small_volume() -> anyhow::Result<(TestCluster, Tmpfs)> {
    let mut volume = None;
    let reserve = RESERVE_BYTES.to_string();
    let flags = ["--write-buffer-bytes", "4194304", "--min-free-disk-bytes", &reserve];
    let cluster = TestCluster::start_prepared(3, &flags, |id, root| {
        if id != 3 {
            return Ok(root.join("data"));
        }
        let vol = Tmpfs::mount(&root.join("vol"), VOLUME_BYTES)?;
        let data = vol.path().join("data");
        volume = Some(vol);
        Ok(data)
    })
    .await?;
    let volume = volume.ok_or_else(|| anyhow::anyhow!("broker 3's volume was not mounted"))?;
    Ok((cluster, volume))
}

/// Whether broker `id` is marked disk-full, and the shards it leads, as broker 1 sees them.
async fn standing(info: &ClusterInfo, id: u64) -> anyhow::Result<(bool, Vec<u64>)> {
    let m = info.metadata().await?;
    let full = m.brokers.iter().any(|b| b.id == id && b.disk_full);
    let led = m.shards.iter().filter(|s| s.status.as_ref().is_some_and(|st| st.leader == id)).map(|s| s.id).collect();
    Ok((full, led))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_a_full_disk_leads_nothing_until_it_has_space_again() -> anyhow::Result<()> {
    if !Tmpfs::available("cluster_disk_full")? {
        return Ok(());
    }
    let (cluster, volume) = start_with_small_volume().await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    cluster.leaders_spread(1).await?;
    let info = ClusterInfo::new(cluster.broker(1).channel());
    let (full, led) = standing(&info, 3).await?;
    assert!(!full && !led.is_empty(), "broker 3 starts with space and leads its shards: {led:?}");

    let addrs: Vec<String> = cluster.brokers.iter().map(|b| b.url().trim_start_matches("http://").to_owned()).collect();
    sluice_client::Admin::new(cluster.broker(1).channel())
        .create_topic("t", PARTITIONS, sluice_client::proto::TopicConfig::default())
        .await?;
    let mut acked: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let produce = |round: &'static str| {
        let addrs = addrs.clone();
        let values: Vec<(u32, String)> = (0..PARTITIONS).map(|p| (p, format!("{round}-{p}"))).collect();
        async move {
            let mut stored = Vec::new();
            for (p, v) in values {
                produce_to_leader(&addrs[0], "t", p, std::slice::from_ref(&v)).await?;
                stored.push((p, v));
            }
            anyhow::Ok(stored)
        }
    };
    for (p, v) in produce("before").await? {
        acked.entry(p).or_default().push(v);
    }

    // Broker 3's volume drops below its reserve: it hands every shard away
    // and is marked in the catalog.
    let filler = tmpfs::fill(volume.path(), RESERVE_BYTES / 2)?;
    let moved_at = Instant::now();
    eventually(Duration::from_secs(10), "broker 3 marked disk-full and leading nothing", || async {
        let (full, led) = standing(&info, 3).await?;
        Ok((full && led.is_empty()).then_some(()))
    })
    .await
    .map_err(|e| e.context(cluster.broker(3).log_tail()))?;
    eprintln!("broker 3 led nothing {:?} after its volume filled", moved_at.elapsed());
    // The operator sees it: `sluice cluster status` at broker 2 says which disk is full.
    let status = std::process::Command::new(sluice_tests::binary("sluice"))
        .args(["--addr", &cluster.broker(2).url(), "--output", "json", "cluster", "status"])
        .output()?;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    let full: Vec<u64> = status["brokers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["disk_full"] == serde_json::Value::Bool(true))
        .filter_map(|b| b["id"].as_u64())
        .collect();
    assert_eq!(full, vec![3], "cluster status names broker 3's disk as full: {status}");

    // Clients carry on: every partition takes writes at brokers 1 and 2.
    for (p, v) in produce("while-full").await? {
        acked.entry(p).or_default().push(v);
    }
    // And no shard goes back to it while it is full, though it is each one's
    // preferred broker (spreading would hand one back within about 6 s).
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        let (full, led) = standing(&info, 3).await?;
        assert!(full && led.is_empty(), "broker 3 led {led:?} (marked full: {full}) while its volume was full");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Space again: the mark is cleared and its shards come back.
    std::fs::remove_file(&filler)?;
    eventually(Duration::from_secs(10), "broker 3's disk-full mark cleared", || async {
        Ok((!standing(&info, 3).await?.0).then_some(()))
    })
    .await?;
    cluster.leaders_spread(1).await?;
    for (p, v) in produce("after").await? {
        acked.entry(p).or_default().push(v);
    }

    // Every replica holds every acknowledged record, in order.
    for id in cluster.ids() {
        for (p, want) in &acked {
            eventually(Duration::from_secs(10), "the replica holds every acknowledged record", || async {
                let records = read_all(cluster.broker(id).channel(), "t", *p).await?;
                let got: Vec<String> = records.iter().map(|r| String::from_utf8_lossy(&r.value).into_owned()).collect();
                Ok((&got == want).then_some(()))
            })
            .await
            .map_err(|e| e.context(format!("broker {id}, partition {p}")))?;
        }
    }
    drop(cluster);
    drop(volume);
    Ok(())
}

const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

/// A follower's volume fills up completely while its peers go on taking
/// writes (the reserve only keeps leadership away; a follower stores what
/// its leader sends): its store is poisoned at the first write that fails
/// (health NOT_SERVING, nothing half written), the other two keep
/// acknowledging, and once space is freed and it restarts it catches up
/// with every acknowledged record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_fills_stops_and_catches_up_after_a_restart() -> anyhow::Result<()> {
    if !Tmpfs::available("cluster_disk_full")? {
        return Ok(());
    }
    let (mut cluster, volume) = start_with_small_volume().await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    let addr1 = cluster.broker(1).addr.clone();
    sluice_client::Admin::new(cluster.broker(1).channel())
        .create_topic("t", PARTITIONS, sluice_client::proto::TopicConfig::default())
        .await?;

    // Leave broker 3 a few MiB: below its reserve (it hands its leaderships
    // away), and less than what the others are about to store.
    let filler = tmpfs::fill(volume.path(), 4 << 20)?;
    let info = ClusterInfo::new(cluster.broker(1).channel());
    eventually(Duration::from_secs(10), "broker 3 leads nothing", || async {
        let (full, led) = standing(&info, 3).await?;
        Ok((full && led.is_empty()).then_some(()))
    })
    .await?;

    let value = "x".repeat(64 << 10);
    let mut acked: BTreeMap<u32, usize> = BTreeMap::new();
    let mut produce = |i: u32| {
        let (addr, value) = (addr1.clone(), &value);
        let p = i % PARTITIONS;
        let expected = acked.get(&p).copied().unwrap_or(0) as u64;
        *acked.entry(p).or_default() += 1;
        async move {
            let stored = produce_to_leader(&addr, "t", p, &[format!("{i}:{value}")]).await?;
            anyhow::ensure!(stored.offset == expected, "dense offsets on {p}: {} after {expected}", stored.offset);
            Ok(())
        }
    };
    // RocksDB gives back space it had preallocated, so the volume is not full
    // yet; the produces go on (at most the volume's size) until broker 3 stops.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut sent = 0;
    let mut stopped = None;
    while stopped.is_none() && sent < (VOLUME_BYTES / (64 << 10)) as u32 {
        anyhow::ensure!(Instant::now() < deadline, "{sent} produces took over 90 s");
        produce(sent).await?;
        sent += 1;
        stopped = stopped_taking_writes(cluster.broker_mut(3)).await;
    }
    if stopped.is_none() {
        // A volume's worth is acknowledged by brokers 1 and 2; broker 3, a follower, may
        // still be storing the last of it: it stops once what it is sent fills its volume.
        let lag = lag_of(&info, 3).await;
        let own = ClusterInfo::new(cluster.broker(3).channel()).metadata().await.map(|m| {
            let shard = |s: &sluice_client::proto::ShardStatus| {
                let st = s.status.clone().unwrap_or_default();
                format!("{}: leader {} term {} role {} last {}", s.id, st.leader, st.term, st.role, st.last_log_index)
            };
            m.shards.iter().map(shard).collect::<Vec<_>>()
        });
        eprintln!("broker 3 still serves after {sent} produces; its lag: {lag:?}; waiting for it to fill");
        let waiting = Instant::now() + Duration::from_secs(60);
        while stopped.is_none() && Instant::now() < waiting {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stopped = stopped_taking_writes(cluster.broker_mut(3)).await;
        }
        stopped.ok_or_else(|| anyhow::anyhow!("broker 3 did not stop within 60 s")).map_err(|e| {
            // Its warnings and errors say where its writes went.
            let log = cluster.broker(3).log().unwrap_or_default();
            let notable: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
            // RocksDB's own log: a flush failing for space stalls writes rather than failing them.
            let rocks = std::fs::read_to_string(cluster.broker(3).data_dir().join("LOG")).unwrap_or_default();
            let rocks: Vec<&str> = rocks
                .lines()
                .filter(|l| ["error", "Error", "stall", "Stall", "space", "stop"].iter().any(|w| l.contains(w)))
                .collect();
            let rocks = rocks[rocks.len().saturating_sub(20)..].join("\n");
            e.context(format!(
                "RocksDB on broker 3:\n{rocks}\nbroker 3 never stopped serving; its lag after {sent} produces: {lag:?}; its own view: {own:?}; its warnings and errors:\n{}\n\
                 broker 3's log:\n{}\nbroker 1's log:\n{}",
                notable.join("\n"),
                cluster.broker(3).log_tail(),
                cluster.broker(1).log_tail()
            ))
        })?;
    }
    let at = sent;
    for i in at..at + 40 {
        produce(i).await?;
    }
    let how = stopped.unwrap_or_default();
    eprintln!("broker 3 stopped ({how}) after {at} produces of 64 KiB; brokers 1 and 2 took 40 more");
    if how == POISONED {
        assert_eq!(cluster.broker(3).metric("sluice_storage_poisoned", &[]).await?, 1.0, "broker 3 says why");
    }

    // Space again, and a restart: broker 3 catches up with everything acknowledged.
    std::fs::remove_file(&filler)?;
    cluster.broker_mut(3).kill9().await?;
    cluster.broker_mut(3).start_again().await?;
    for (p, count) in &acked {
        eventually(Duration::from_secs(30), "broker 3 holds every acknowledged record", || async {
            let records = read_all(cluster.broker(3).channel(), "t", *p).await?;
            Ok((records.len() == *count).then_some(()))
        })
        .await
        .map_err(|e| e.context(format!("partition {p}: {}", cluster.broker(3).log_tail())))?;
    }
    drop(cluster);
    drop(volume);
    Ok(())
}

/// Broker `id`'s lag (entries) in each shard broker 1 leads.
async fn lag_of(info: &ClusterInfo, id: u64) -> anyhow::Result<Vec<(u64, u64)>> {
    let m = info.metadata().await?;
    let lag = |s: &sluice_client::proto::ShardStatus| {
        let st = s.status.as_ref()?;
        Some((s.id, st.replicas.iter().find(|r| r.broker_id == id)?.lag))
    };
    Ok(m.shards.iter().filter_map(lag).collect())
}

const POISONED: &str = "poisoned: NOT_SERVING";

/// How broker 3 stopped taking writes, once it has: its store poisoned by the
/// first write that failed for space (health `NOT_SERVING`), or its process
/// gone. Debian 12's RocksDB 7.8 is built with assertions, and a write that
/// fails for space may abort in one (`sync_without_flush_called_`, in
/// `WritableFileWriter`) instead of returning the error: a crash, which loses
/// nothing acknowledged either.
async fn stopped_taking_writes(broker: &mut sluice_tests::TestBroker) -> Option<&'static str> {
    if broker.has_exited() {
        return Some("its process aborted");
    }
    (health(broker).await.ok() == Some(NOT_SERVING)).then_some(POISONED)
}

async fn health(broker: &sluice_tests::TestBroker) -> anyhow::Result<i32> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(broker.channel());
    let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
    Ok(client.check(req).await?.into_inner().status)
}
