//! Replacing a broker whose disk is lost (`sluice cluster replace`, see
//! docs/REPLICATION.md), with three real broker processes on loopback whose
//! shards snapshot every few entries, so the new replica is sent snapshots
//! and copies records:
//! - the same id restarted on an empty data dir sets nothing up (the
//!   cluster exists); the replacement removes its old replica from every
//!   group, adds it back as a learner and promotes it once it holds the
//!   log; then, with another broker SIGKILLed, it is part of the quorum:
//!   every acknowledged record and the group's progress survive, and nothing
//!   acknowledged is delivered again;
//! - until then it votes in no group: with another broker down, the third
//!   is not elected;
//! - asked to replace a broker that still holds its data by itself, nothing
//!   is removed;
//! - a new id takes a lost broker's place the same way, and the lost one
//!   leaves the catalog.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice_client::proto as pb;
use sluice_client::{Admin, ClusterInfo, Consumer, ConsumerConfig};
use sluice_tests::cluster::{produce_to_leader, METADATA_LEADER};
use sluice_tests::{eventually, group_config, read_all, TestCluster};

const PARTITIONS: u32 = 4;
const MESSAGES: usize = 160;
const ACKED: usize = 60;
/// Groups a broker that lost its data does not vote in yet.
const FENCED_GROUPS: &str = "sluice_cluster_fenced_groups";
const SNAPSHOT_EVERY: &[&str] = &["--shard-snapshot-entries", "20"];

fn value(r: &pb::Record) -> String {
    String::from_utf8_lossy(&r.value).into_owned()
}

async fn records_at(cluster: &TestCluster, id: u64) -> anyhow::Result<Vec<Vec<String>>> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        out.push(read_all(cluster.broker(id).channel(), "kept", p).await?.iter().map(value).collect());
    }
    Ok(out)
}

/// Creates the topic and group, produces `MESSAGES` (one entry each) through
/// broker `via`, and acknowledges `ACKED` of them; returns the acknowledged.
async fn fill(cluster: &TestCluster, via: u64) -> anyhow::Result<BTreeSet<String>> {
    let admin = Admin::new(cluster.broker(via).channel());
    admin.create_topic("kept", PARTITIONS, pb::TopicConfig::default()).await?;
    admin.create_group("readers", group_config("kept", 60_000)).await?;
    let addr = cluster.broker(via).addr.clone();
    for i in 0..MESSAGES {
        produce_to_leader(&addr, "kept", (i % PARTITIONS as usize) as u32, &[format!("m-{i:04}")]).await?;
    }
    let consumer = Consumer::new(cluster.broker(via).channel(), "readers", ConsumerConfig::default());
    let mut acked = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.len() < ACKED && Instant::now() < deadline {
        let got = consumer.pull(10.min((ACKED - acked.len()) as u32), Duration::from_millis(500)).await?;
        let failures = consumer.ack(got.iter().map(|m| m.ack_id.clone()).collect()).await?;
        assert!(failures.is_empty(), "acks refused: {failures:?}");
        acked.extend(got.iter().map(|m| value(&m.record)));
    }
    assert_eq!(acked.len(), ACKED, "acknowledged before the disk was lost");
    Ok(acked)
}

/// Runs the replacement at broker `at`; returns every (group, stage) step.
async fn replace(cluster: &TestCluster, at: u64, old: u64, new: u64, addr: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let info = ClusterInfo::new(cluster.broker(at).channel());
    let mut steps = Vec::new();
    let run = info.replace_broker(old, new, addr, |step| {
        println!("group {}: {} ({})", step.group, step.stage, step.detail);
        steps.push((step.group, step.stage.clone()));
    });
    tokio::time::timeout(Duration::from_secs(120), run).await??;
    Ok(steps)
}

/// The steps each group (the metadata group and six shards) went through,
/// without the catching-up reports.
fn stages_of(steps: &[(u64, String)]) -> Vec<Vec<&str>> {
    (0..=6u64)
        .map(|group| steps.iter().filter(|(g, s)| *g == group && s != "catching_up").map(|(_, s)| s.as_str()).collect())
        .collect()
}

/// Broker `id` loses its disk: SIGKILLed, its data dir wiped, started
/// again; returns once it has found the cluster exists (and waits to be
/// added back).
async fn lose_disk(cluster: &mut TestCluster, id: u64) -> anyhow::Result<()> {
    cluster.broker_mut(id).kill9().await?;
    cluster.broker_mut(id).wipe_data()?;
    cluster.broker_mut(id).start_again().await?;
    eventually(Duration::from_secs(20), "the broker sees the cluster exists", || async {
        Ok(cluster.broker(id).log()?.contains("the cluster exists and this broker's data dir is empty").then_some(()))
    })
    .await
}

/// Waits until broker `at` no longer sees broker `waiting` lead any shard
/// (it led some before it lost its disk), then watches for `window` that it
/// leads none again.
async fn never_leads(cluster: &TestCluster, at: u64, waiting: u64, window: Duration) -> anyhow::Result<()> {
    let info = ClusterInfo::new(cluster.broker(at).channel());
    let led = || async {
        let shards = info.metadata().await?.shards;
        anyhow::Ok(
            shards
                .iter()
                .filter(|s| s.status.as_ref().is_some_and(|st| st.leader == waiting))
                .map(|s| s.id)
                .collect::<Vec<_>>(),
        )
    };
    eventually(Duration::from_secs(20), "the shards broker 3 led are elected elsewhere", || async {
        Ok(led().await?.is_empty().then_some(()))
    })
    .await?;
    let until = Instant::now() + window;
    while Instant::now() < until {
        let led = led().await?;
        anyhow::ensure!(led.is_empty(), "broker {waiting}, waiting to be replaced, leads shards {led:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

const REPLACED: &[&str] = &["removed", "learner_added", "done"];

/// Reads what is left for `group` through broker `via` and checks
/// nothing acknowledged comes back and every other message does.
async fn drain(
    cluster: &TestCluster,
    via: u64,
    group: &str,
    acked: &BTreeSet<String>,
    expected: usize,
) -> anyhow::Result<()> {
    let consumer = Consumer::new(cluster.broker(via).channel(), group, ConsumerConfig::default());
    let mut rest = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while rest.len() < expected && Instant::now() < deadline {
        match consumer.pull(100, Duration::from_millis(500)).await {
            Ok(got) => {
                for m in &got {
                    let v = value(&m.record);
                    assert!(!acked.contains(&v), "{v} was acknowledged and delivered again");
                    rest.insert(v);
                }
                consumer.ack(got.iter().map(|m| m.ack_id.clone()).collect()).await?;
            }
            Err(e) => {
                println!("pull while leaders move: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(rest.len(), expected, "every unacknowledged message is delivered");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_an_empty_disk_is_replaced_under_its_own_id() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(3, SNAPSHOT_EVERY).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    cluster.leaders_spread(1).await?;
    let acked = fill(&cluster, 1).await?;

    // A replacement of a broker that holds its data, by itself, changes nothing.
    let steps = replace(&cluster, 1, 2, 2, "").await?;
    assert!(stages_of(&steps).iter().all(|s| s == &["done"]), "nothing replaced: {steps:?}");

    // Broker 3's disk is lost; it comes back empty and waits to be added.
    lose_disk(&mut cluster, 3).await?;

    // It votes in no group until it is added back: the metadata group and its six shards.
    eventually(Duration::from_secs(5), "broker 3 reports its groups fenced", || async {
        Ok((cluster.broker(3).metric(FENCED_GROUPS, &[]).await? == 7.0).then_some(()))
    })
    .await?;
    // With the metadata leader killed too, the other broker must not win an election: an empty voter would grant it, though it may lack
    // entries the lost disk helped commit. Watched for about ten election timeouts.
    let lost = cluster.agreed_leader(&[1, 2], Some(3)).await?;
    let survivor = 3 - lost;
    cluster.broker_mut(lost).kill9().await?;
    let watch_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < watch_until {
        let leader = cluster.broker(survivor).metric(METADATA_LEADER, &[]).await? as u64;
        assert_ne!(leader, survivor, "broker {survivor} was elected with the vote of a broker that lost its data");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.broker_mut(lost).start_again().await?;
    cluster.agreed_leader(&[1, 2], Some(3)).await?;
    let steps = replace(&cluster, 1, 3, 3, "").await?;
    // A group that elected a leader since broker 3 came back (its leader was broker 3 or the
    // killed one, or leadership spread back) starts with no progress for broker 3 and sent it
    // everything: done at once (safe: broker 3 voted in no election meanwhile). The others
    // remove and add it back (every group does so in the new-id test below).
    let stages = stages_of(&steps);
    assert!(stages.iter().all(|s| s == REPLACED || s == &["done"]), "steps: {steps:?}");
    eventually(Duration::from_secs(5), "broker 3 votes in every group again", || async {
        Ok((cluster.broker(3).metric(FENCED_GROUPS, &[]).await? == 0.0).then_some(()))
    })
    .await?;

    // Broker 3 holds every record again (copied: the others' logs are purged).
    let expected = records_at(&cluster, 1).await?;
    assert_eq!(expected.iter().map(Vec::len).sum::<usize>(), MESSAGES);
    eventually(Duration::from_secs(30), "broker 3 serves every record as broker 1 does", || async {
        Ok((records_at(&cluster, 3).await.ok().as_ref() == Some(&expected)).then_some(()))
    })
    .await
    .map_err(|e| e.context(cluster.broker(3).log_tail()))?;

    // Broker 3 is a voter: with broker 1 gone, brokers 2 and 3 take writes and serve the group.
    cluster.broker_mut(1).kill9().await?;
    cluster.agreed_leader(&[2, 3], Some(1)).await?;
    let stored = produce_to_leader(&cluster.broker(2).addr, "kept", 0, &["after".into()]).await?;
    assert_eq!(stored.offset, expected[0].len() as u64, "appended after every replicated record");
    drain(&cluster, 2, "readers", &acked, MESSAGES - ACKED + 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_broker_id_takes_a_lost_brokers_place() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(3, SNAPSHOT_EVERY).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    cluster.leaders_spread(1).await?;
    let acked = fill(&cluster, 1).await?;
    // Topics of two replicas: the first goes to brokers 1 and 2, the second to 2 and 3.
    let admin = Admin::new(cluster.broker(1).channel());
    for topic in ["pair-a", "pair-b"] {
        admin.create_replicated_topic(topic, 1, 2, pb::TopicConfig::default()).await?;
    }

    // Broker 3 is lost for good; broker 4 starts with brokers 1 and 2 as peers.
    cluster.broker_mut(3).kill9().await?;
    let addr = cluster.start_replacement(4, 3, SNAPSHOT_EVERY).await?;
    let refused = ClusterInfo::new(cluster.broker(2).channel()).replace_broker(3, 4, "", |_| {}).await;
    let refused = refused.expect_err("a new id without an address is refused");
    println!("without an address: {refused}");
    let steps = replace(&cluster, 2, 3, 4, &addr).await?;
    assert!(stages_of(&steps).iter().all(|s| s == REPLACED), "every group replaced broker 3: {steps:?}");
    let kept: Vec<u64> = steps.iter().filter(|(_, s)| s == "not_replaced").map(|(g, _)| *g).collect();
    assert_eq!(kept.len(), 1, "the placed shard of pair-b keeps broker 3, and is reported: {steps:?}");
    assert!(kept[0] >= 1 << 20, "a placed shard's id: {kept:?}");

    // The broker that ran the replacement has applied the removal when it answers; the others
    // apply it within a second (the catalog's promise).
    let ids = |m: pb::MetadataResponse| m.brokers.iter().map(|b| b.id).collect::<Vec<u64>>();
    let brokers = ids(ClusterInfo::new(cluster.broker(2).channel()).metadata().await?);
    assert!(!brokers.contains(&3), "broker 3 left broker 2's catalog: {brokers:?}");
    eventually(Duration::from_secs(1), "broker 3 leaves broker 4's catalog", || async {
        let brokers = ids(ClusterInfo::new(cluster.broker(4).channel()).metadata().await?);
        Ok((!brokers.contains(&3)).then_some(()))
    })
    .await?;
    let expected = records_at(&cluster, 1).await?;
    eventually(Duration::from_secs(30), "broker 4 serves every record as broker 1 does", || async {
        Ok((records_at(&cluster, 4).await.ok().as_ref() == Some(&expected)).then_some(()))
    })
    .await
    .map_err(|e| e.context(cluster.broker(4).log_tail()))?;

    // Brokers 2 and 4 are a quorum without broker 1.
    cluster.broker_mut(1).kill9().await?;
    cluster.agreed_leader(&[2, 4], Some(1)).await?;
    produce_to_leader(&cluster.broker(4).addr, "kept", 1, &["after".into()]).await?;
    drain(&cluster, 4, "readers", &acked, MESSAGES - ACKED + 1).await
}

/// Four brokers: a topic of replication factor 3 is a placed shard on
/// brokers 1, 2 and 3. Broker 3's disk is lost; replaced under its own id,
/// its replica of the placed shard is replaced too (a majority of three
/// remains without it), fenced until then, and afterwards it forms the
/// placed shard's quorum with broker 2 while broker 1 is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_replica_on_an_empty_disk_is_replaced_under_its_own_id() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(4, SNAPSHOT_EVERY).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    // Until a shard has a leader, its first membership may be on the broker that set the
    // cluster up alone: were that broker's disk lost now, the shard would have no replica
    // to elect from (the brokers that never heard of it hold nothing to replace it with).
    cluster.leaders_spread(1).await?;
    let admin = Admin::new(cluster.broker(4).channel());
    admin.create_replicated_topic("triple", 2, 3, pb::TopicConfig::default()).await?;
    let addr4 = cluster.broker(4).addr.clone();
    let mut acked = [0u64; 2];
    for i in 0..60u64 {
        let p = (i % 2) as u32;
        let stored = produce_to_leader(&addr4, "triple", p, &[format!("t-{i:03}")]).await?;
        assert_eq!(stored.offset, acked[p as usize], "dense offsets on {p}");
        acked[p as usize] += 1;
    }
    let leaders = ClusterInfo::new(cluster.broker(4).channel()).partition_leaders(&["triple"]).await?;
    let shard = leaders.first().map(|p| p.shard).ok_or_else(|| anyhow::anyhow!("no partition of triple reported"))?;
    assert!(shard >= 1 << 20, "a placed shard: {shard}");

    lose_disk(&mut cluster, 3).await?;
    // While it waits, its replicas catch up from the leaders that still list it, yet no
    // shard's leadership may be handed to it (it may not vote, so it may not lead): watched
    // for longer than the leadership spreading takes to hand a shard to its preferred broker.
    never_leads(&cluster, 1, 3, Duration::from_secs(10)).await?;
    let steps = replace(&cluster, 1, 3, 3, "").await.map_err(|e| {
        let logs: Vec<String> =
            cluster.ids().iter().map(|id| format!("broker {id}:\n{}", cluster.broker(*id).log_tail())).collect();
        e.context(logs.join("\n"))
    })?;
    let placed: Vec<&str> =
        steps.iter().filter(|(g, s)| *g == shard && s != "catching_up").map(|(_, s)| s.as_str()).collect();
    assert!(placed == REPLACED || placed == ["done"], "the placed shard's replica is replaced: {steps:?}");
    assert!(steps.iter().all(|(_, s)| s != "not_replaced"), "nothing is left out: {steps:?}");
    eventually(Duration::from_secs(5), "broker 3 votes in every group again", || async {
        Ok((cluster.broker(3).metric(FENCED_GROUPS, &[]).await? == 0.0).then_some(()))
    })
    .await?;

    // Broker 3 holds the placed topic's records again, and with broker 1 down it is
    // half of the placed shard's quorum.
    let expected: Vec<Vec<String>> = {
        let mut out = Vec::new();
        for p in 0..2 {
            out.push(read_all(cluster.broker(1).channel(), "triple", p).await?.iter().map(value).collect());
        }
        out
    };
    eventually(Duration::from_secs(30), "broker 3 serves the placed topic as broker 1 does", || async {
        let mut got = Vec::new();
        for p in 0..2 {
            match read_all(cluster.broker(3).channel(), "triple", p).await {
                Ok(records) => got.push(records.iter().map(value).collect::<Vec<String>>()),
                Err(_) => return Ok(None),
            }
        }
        Ok((got == expected).then_some(()))
    })
    .await?;
    cluster.broker_mut(1).kill9().await?;
    let stored =
        tokio::time::timeout(Duration::from_secs(30), produce_to_leader(&addr4, "triple", 0, &["after".into()]))
            .await??;
    assert_eq!(stored.offset, acked[0], "appended after every acknowledged record, by brokers 2 and 3");
    Ok(())
}

/// Brokers 1 and 2 start (broker 3 not yet); one (the founder) finds the
/// other empty and sets the cluster up, then the other (the finder) finds it
/// set up and sets its own replicas of every group up too, with the same
/// membership: each is a voter at once, before any leader could have sent it
/// anything (the shards' election timeout is a minute here, so the founder's
/// first campaign, refused while the finder had not decided, is not followed
/// by another in time). Were the groups' first membership on the founder
/// alone, and its disk lost now, no broker could elect a shard leader and
/// its replacement would wait forever. Then the founder stops and loses its
/// disk before broker 3 ever ran, and is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_that_set_the_cluster_up_is_replaced_before_the_third_ever_ran() -> anyhow::Result<()> {
    const SLOW_SHARDS: &str = "--shard-election-timeout-ms";
    let mut cluster = TestCluster::start_without(3, &[SLOW_SHARDS, "60000"], &[3]).await?;
    // Broker 1 waits for a majority; broker 2, started next, finds it empty and sets the
    // cluster up, and broker 1 then finds it set up and sets its own replicas up. (Had their
    // first asks crossed, each would have found the other empty and set up by itself.)
    let (finder, founder) = eventually(Duration::from_secs(10), "both brokers set their groups up", || async {
        let logs = [cluster.broker(1).log()?, cluster.broker(2).log()?];
        if !logs.iter().all(|log| log.contains("this broker's groups are set up")) {
            return Ok(None);
        }
        Ok(Some(if logs[1].contains("the cluster exists") { (2u64, 1u64) } else { (1, 2) }))
    })
    .await
    .map_err(|e| {
        e.context(format!("broker 1:\n{}\nbroker 2:\n{}", cluster.broker(1).log_tail(), cluster.broker(2).log_tail()))
    })?;
    println!("broker {founder} set the cluster up, broker {finder} found it set up");
    // A replica of a group never set up is a learner (no membership): the finder's are voters
    // at once, before any leader could have sent them anything.
    let roles = || async {
        let shards = ClusterInfo::new(cluster.broker(finder).channel()).metadata().await?.shards;
        anyhow::Ok(shards.into_iter().map(|s| s.status.map(|st| st.role).unwrap_or_default()).collect::<Vec<_>>())
    };
    let last = std::sync::Mutex::new(Vec::new());
    eventually(Duration::from_secs(3), "the finder's replicas of every shard are voters", || async {
        let roles = roles().await?;
        let voters = roles.len() == 6 && roles.iter().all(|r| r != "learner");
        *last.lock().expect("roles") = roles;
        Ok(voters.then_some(()))
    })
    .await
    .map_err(|e| e.context(format!("broker {finder}'s shard roles: {:?}", last.lock().expect("roles"))))?;
    let info = ClusterInfo::new(cluster.broker(finder).channel());
    eventually(Duration::from_secs(10), "both brokers register", || async {
        Ok((info.metadata().await?.brokers.len() == 2).then_some(()))
    })
    .await?;

    // The founder stops and loses its disk; the finder restarts with the usual election
    // timeout (as every broker from now on), broker 3 starts for the first time, and the
    // founder comes back empty, waiting to be replaced.
    cluster.broker_mut(founder).terminate(Duration::from_secs(20)).await?;
    cluster.broker_mut(founder).wipe_data()?;
    for id in cluster.ids() {
        cluster.broker_mut(id).drop_flag(SLOW_SHARDS);
    }
    cluster.broker_mut(finder).restart().await?;
    cluster.broker_mut(3).start_again().await?;
    cluster.broker_mut(founder).start_again().await?;
    eventually(Duration::from_secs(20), "the founder sees the cluster exists", || async {
        let log = cluster.broker(founder).log()?;
        Ok(log.contains("the cluster exists and this broker's data dir is empty").then_some(()))
    })
    .await?;
    cluster.agreed_leader(&[finder, 3], Some(founder)).await?;
    let steps = replace(&cluster, finder, founder, founder, "").await.map_err(|e| {
        let logs: Vec<String> =
            cluster.ids().iter().map(|id| format!("broker {id}:\n{}", cluster.broker(*id).log_tail())).collect();
        e.context(logs.join("\n"))
    })?;
    let stages = stages_of(&steps);
    assert!(stages.iter().all(|s| s == REPLACED || s == &["done"]), "steps: {steps:?}");
    eventually(Duration::from_secs(5), "the founder votes in every group again", || async {
        Ok((cluster.broker(founder).metric(FENCED_GROUPS, &[]).await? == 0.0).then_some(()))
    })
    .await?;

    // With the finder down, the founder and broker 3 elect and take writes in every shard.
    let admin = Admin::new(cluster.broker(finder).channel());
    admin.create_topic("kept", PARTITIONS, pb::TopicConfig::default()).await?;
    cluster.broker_mut(finder).kill9().await?;
    cluster.agreed_leader(&[founder, 3], Some(finder)).await?;
    for p in 0..PARTITIONS {
        let stored = produce_to_leader(&cluster.broker(founder).addr, "kept", p, &[format!("after-{p}")]).await?;
        assert_eq!(stored.offset, 0, "the first record of partition {p}");
    }
    let expected: Vec<Vec<String>> = (0..PARTITIONS).map(|p| vec![format!("after-{p}")]).collect();
    eventually(Duration::from_secs(10), "broker 3 serves every record", || async {
        Ok((records_at(&cluster, 3).await.ok().as_ref() == Some(&expected)).then_some(()))
    })
    .await
}

/// Four brokers: a topic of replication factor 3 is a placed shard on
/// brokers 1, 2 and 3, with a consumer group. Broker 3 is lost for good and
/// broker 5 takes its place: the placed shard's replica set moves from 3 to
/// 5 in the catalog, broker 5 starts its replica without setting it up, the
/// shard's leader adds it, and with broker 1 down brokers 2 and 5 carry the
/// topic and its group on (nothing acknowledged is delivered again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_replica_moves_to_a_new_broker_id() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(4, SNAPSHOT_EVERY).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    cluster.leaders_spread(1).await?;
    let admin = Admin::new(cluster.broker(4).channel());
    admin.create_replicated_topic("triple", 2, 3, pb::TopicConfig::default()).await?;
    admin.create_group("trio", group_config("triple", 60_000)).await?;
    let addr4 = cluster.broker(4).addr.clone();
    const TOTAL: u64 = 60;
    for i in 0..TOTAL {
        produce_to_leader(&addr4, "triple", (i % 2) as u32, &[format!("t-{i:03}")]).await?;
    }
    let shard = ClusterInfo::new(cluster.broker(4).channel()).partition_leaders(&["triple"]).await?[0].shard;
    assert!(shard >= 1 << 20, "a placed shard: {shard}");
    let consumer = Consumer::new(cluster.broker(1).channel(), "trio", ConsumerConfig::default());
    let mut acked = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.len() < 20 && Instant::now() < deadline {
        let got = consumer.pull((20 - acked.len()) as u32, Duration::from_millis(500)).await?;
        assert!(consumer.ack(got.iter().map(|m| m.ack_id.clone()).collect()).await?.is_empty(), "acks refused");
        acked.extend(got.iter().map(|m| value(&m.record)));
    }
    assert_eq!(acked.len(), 20, "acknowledged before broker 3 was lost");

    cluster.broker_mut(3).kill9().await?;
    let addr = cluster.start_replacement(5, 3, SNAPSHOT_EVERY).await?;
    let steps = replace(&cluster, 4, 3, 5, &addr).await.map_err(|e| {
        let logs: Vec<String> =
            [1, 2, 4, 5].iter().map(|id| format!("broker {id}:\n{}", cluster.broker(*id).log_tail())).collect();
        e.context(logs.join("\n"))
    })?;
    let placed: Vec<&str> =
        steps.iter().filter(|(g, s)| *g == shard && s != "catching_up").map(|(_, s)| s.as_str()).collect();
    assert_eq!(placed, REPLACED, "the placed shard's replica moved to broker 5: {steps:?}");
    assert!(steps.iter().all(|(_, s)| s != "not_replaced"), "nothing is left out: {steps:?}");

    // Broker 5 serves the placed topic as broker 1 does.
    let read = |id: u64| {
        let channel = cluster.broker(id).channel();
        async move {
            let mut out = Vec::new();
            for p in 0..2 {
                out.push(read_all(channel.clone(), "triple", p).await?.iter().map(value).collect::<Vec<String>>());
            }
            anyhow::Ok(out)
        }
    };
    let expected = read(1).await?;
    assert_eq!(expected.iter().map(Vec::len).sum::<usize>(), TOTAL as usize);
    eventually(Duration::from_secs(30), "broker 5 serves the placed topic as broker 1 does", || async {
        Ok((read(5).await.ok().as_ref() == Some(&expected)).then_some(()))
    })
    .await
    .map_err(|e| e.context(cluster.broker(5).log_tail()))?;

    // With broker 1 down, brokers 2 and 5 are the placed shard's quorum.
    cluster.broker_mut(1).kill9().await?;
    let stored =
        tokio::time::timeout(Duration::from_secs(30), produce_to_leader(&addr4, "triple", 0, &["after".into()]))
            .await??;
    assert_eq!(stored.offset, expected[0].len() as u64, "appended after every record, by brokers 2 and 5");
    drain(&cluster, 5, "trio", &acked, TOTAL as usize - acked.len() + 1).await
}
