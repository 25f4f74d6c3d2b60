//! Consumer groups in a cluster (step 4 of docs/REPLICATION.md), with three
//! real broker processes on loopback:
//! - a group is served by the broker that leads its shard; a pull at any
//!   other broker gets `UNAVAILABLE`, reason `not_leader`, naming that
//!   broker, and the Rust consumer given another broker follows it;
//! - an ack that returned OK is on a majority: after the group's leader is
//!   SIGKILLed, the new leader never delivers an acknowledged message again,
//!   and delivers every unacknowledged one (leases of the old leader count as
//!   expired: attempt 2);
//! - the killed broker restarts and its replica of the group's state catches
//!   up (its stored figures show everything acknowledged).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sluice_client::proto as pb;
use sluice_client::{Admin, Consumer, ConsumerConfig};
use sluice_tests::{eventually, group_config, TestCluster};

const MESSAGES: usize = 60;
const ACKED: usize = 20;
const LEASED: usize = 30;

/// A raw pull at the broker at `addr`: exactly what that broker answers.
async fn raw_pull(addr: &str, group: &str, max: u32) -> Result<pb::PullResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect_lazy();
    let request =
        pb::PullRequest { group: group.into(), consumer_id: "probe".into(), max_messages: max, max_wait_ms: 0 };
    pb::consumer_client::ConsumerClient::new(channel).pull(request).await.map(|r| r.into_inner())
}

fn value(m: &pb::Record) -> String {
    String::from_utf8_lossy(&m.value).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_state_is_replicated_and_survives_killing_the_groups_leader() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    // Leaders settle where they belong first, so the broker killed below still leads the group.
    cluster.leaders_spread(1).await?;
    let admin = Admin::new(cluster.broker(1).channel());
    admin.create_topic("jobs", 3, pb::TopicConfig::default()).await?;
    let producer = sluice_client::Producer::new(cluster.broker(1).channel(), Default::default());
    let mut acks = Vec::new();
    for i in 0..MESSAGES {
        acks.push(producer.enqueue("jobs", None, sluice_tests::message(format!("job-{i:03}"))).await?);
    }
    for a in acks {
        a.await?;
    }
    // A long lease: what is redelivered after the failover is redelivered
    // because the leader died, not because a lease ran out.
    admin.create_group("workers", group_config("jobs", 60_000)).await?;
    let addrs: Vec<String> = cluster.brokers.iter().map(|b| b.addr.clone()).collect();

    // One broker serves the group; the other two name it. A probe that got
    // messages leased them: they are delivered again later.
    let mut probed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader_addr = loop {
        let mut serving = Vec::new();
        let mut named = BTreeSet::new();
        for addr in &addrs {
            match raw_pull(addr, "workers", 1).await {
                Ok(r) => {
                    probed.extend(r.messages.iter().filter_map(|m| m.record.as_ref().map(value)));
                    serving.push(addr.clone());
                }
                Err(s) => {
                    let get = |k: &str| s.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    if get("sluice-reason").as_deref() == Some("not_leader") {
                        named.extend(get("sluice-leader"));
                    }
                }
            }
        }
        match serving.as_slice() {
            [addr] if named.len() == 1 && named.contains(addr) => break addr.clone(),
            _ if Instant::now() > deadline => {
                anyhow::bail!("no single broker serves the group: serving {serving:?}, named {named:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    // Cluster.Metadata at any broker names the same broker.
    for id in 1..=3u64 {
        let named = sluice_client::ClusterInfo::new(cluster.broker(id).channel()).group_leaders(&["workers"]).await?;
        let endpoints: Vec<&str> = named.iter().map(|g| g.leader_endpoint.as_str()).collect();
        assert_eq!(endpoints, [leader_addr.as_str()], "broker {id}: {named:?}");
    }
    let leader_id = (1..=3u64).find(|id| addrs[(*id - 1) as usize] == leader_addr).unwrap_or(1);
    let seed = if leader_id == 1 { 2 } else { 1 };
    println!("group leader: broker {leader_id}; the consumer is given broker {seed}");

    // A consumer given another broker follows the redirect, leases 30, acks 20.
    let consumer = Consumer::new(cluster.broker(seed).channel(), "workers", ConsumerConfig::default());
    let mut leased: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while leased.len() < LEASED && Instant::now() < deadline {
        for m in consumer.pull((LEASED - leased.len()) as u32, Duration::from_millis(500)).await? {
            assert_eq!(m.attempt, 1, "first deliveries");
            leased.push((value(&m.record), m.ack_id));
        }
    }
    assert_eq!(leased.len(), LEASED, "leased through the redirect");
    let (acked, unacked) = leased.split_at(ACKED);
    let failures = consumer.ack(acked.iter().map(|(_, id)| id.clone()).collect()).await?;
    assert!(failures.is_empty(), "acks refused: {failures:?}");
    let acked: BTreeSet<String> = acked.iter().map(|(v, _)| v.clone()).collect();
    let outstanding: BTreeSet<String> = unacked.iter().map(|(v, _)| v.clone()).chain(probed.iter().cloned()).collect();

    // The group's leader dies: another broker serves it from the replicated state.
    cluster.broker_mut(leader_id).kill9().await?;
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut ack_ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < MESSAGES - ACKED && Instant::now() < deadline {
        match consumer.pull(100, Duration::from_millis(500)).await {
            Ok(got) => {
                for m in got {
                    let v = value(&m.record);
                    assert!(!acked.contains(&v), "{v} was acknowledged before the failover and delivered again");
                    seen.entry(v).and_modify(|a| *a = (*a).max(m.attempt)).or_insert(m.attempt);
                    ack_ids.push(m.ack_id);
                }
            }
            // An election: the consumer follows the new leader on the next pull.
            Err(e) => {
                println!("pull during the failover: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(seen.len(), MESSAGES - ACKED, "every unacknowledged message is delivered by the new leader");
    for v in &outstanding {
        assert!(seen.get(v).is_some_and(|a| *a >= 2), "{v} was leased by the old leader: attempt 2 now ({seen:?})");
    }
    let failures = consumer.ack(ack_ids).await?;
    assert!(failures.is_empty(), "acks at the new leader refused: {failures:?}");

    // Every broker's replica of the group's state shows it done, the restarted one too.
    cluster.broker_mut(leader_id).restart().await?;
    for id in 1..=3u64 {
        eventually(Duration::from_secs(20), "the group's state shows everything acknowledged", || async {
            let info = Admin::new(cluster.broker(id).channel()).describe_group("workers").await?;
            let committed: u64 = info.partitions.iter().map(|p| p.committed_offset).sum();
            Ok((committed == MESSAGES as u64 && info.backlog_messages == 0).then_some(()))
        })
        .await
        .map_err(|e| e.context(format!("broker {id}:\n{}", cluster.broker(id).log_tail())))?;
    }
    Ok(())
}

/// Dead letters in a cluster: a group whose messages all fail writes each to
/// its dead-letter topic exactly once, whichever broker leads each
/// dead-letter partition (the group's leader appends there itself, or at
/// that partition's leader over its client API), and every broker serves them.
/// Shard leaders spread over the brokers (each shard has a preferred broker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_messages_reach_dead_letter_partitions_led_anywhere() -> anyhow::Result<()> {
    const FAILING: usize = 30;
    const PARTITIONS: u32 = 6;
    let cluster = TestCluster::start(3).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    let admin = Admin::new(cluster.broker(1).channel());
    admin.create_topic("payments", PARTITIONS, pb::TopicConfig::default()).await?;
    let producer = sluice_client::Producer::new(cluster.broker(1).channel(), Default::default());
    let mut acks = Vec::new();
    for i in 0..FAILING {
        acks.push(producer.enqueue("payments", None, sluice_tests::message(format!("pay-{i:03}"))).await?);
    }
    for a in acks {
        a.await?;
    }
    let config = pb::GroupConfig {
        max_delivery_attempts: Some(2),
        dead_letter_topic: "payments-dlq".into(),
        ..group_config("payments", 10_000)
    };
    admin.create_group("billing", config).await?;
    cluster.leaders_spread(1).await?;

    // Six dead-letter partitions over six shards: some are led by brokers that do not serve the group.
    let consumer = Consumer::new(cluster.broker(1).channel(), "billing", ConsumerConfig::default());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut nacked = 0;
    let mut dead: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        let got = consumer.pull(100, Duration::from_millis(200)).await?;
        nacked += got.len();
        let ids: Vec<String> = got.into_iter().map(|m| m.ack_id).collect();
        if !ids.is_empty() {
            consumer.nack(ids, Some(Duration::ZERO), "declined").await?;
        }
        dead = all_values(&cluster, 1, "payments-dlq", PARTITIONS).await?;
        if dead.len() >= FAILING {
            break;
        }
    }
    let expected: Vec<String> = (0..FAILING).map(|i| format!("pay-{i:03}")).collect();
    assert_eq!(dead, expected, "each exhausted message dead-lettered exactly once ({nacked} deliveries nacked)");
    for id in 2..=3u64 {
        eventually(Duration::from_secs(10), "every broker serves the dead letters", || async {
            Ok((all_values(&cluster, id, "payments-dlq", PARTITIONS).await? == expected).then_some(()))
        })
        .await?;
    }
    // Where the dead-letter partitions are led elsewhere, the group's broker appended there.
    let mut serving = None;
    for b in &cluster.brokers {
        if raw_pull(&b.addr, "billing", 1).await.is_ok() {
            serving = Some(b);
        }
    }
    let serving = serving.ok_or_else(|| anyhow::anyhow!("no broker serves the group"))?;
    let leaders = sluice_client::ClusterInfo::new(serving.channel()).partition_leaders(&["payments-dlq"]).await?;
    let elsewhere = leaders.iter().filter(|p| p.leader_endpoint != serving.addr).count();
    println!("{elsewhere} of {PARTITIONS} dead-letter partitions are led by a broker that does not serve the group");
    assert!(elsewhere > 0, "leaders spread: some dead-letter partition is led elsewhere");
    assert!(serving.log()?.contains("appended at the partition's leader elsewhere"), "forwarded dead letters");
    eventually(Duration::from_secs(10), "the group has nothing left and counts its dead letters", || async {
        let info = admin.describe_group("billing").await?;
        Ok((info.backlog_messages == 0 && info.dead_lettered == FAILING as u64).then_some(()))
    })
    .await?;
    Ok(())
}

/// The values of every partition of `topic` as broker `id` serves them, sorted.
async fn all_values(cluster: &TestCluster, id: u64, topic: &str, partitions: u32) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for p in 0..partitions {
        let records = sluice_tests::read_all(cluster.broker(id).channel(), topic, p).await?;
        out.extend(records.into_iter().map(|r| value(&r)));
    }
    out.sort();
    Ok(out)
}

/// Rounds of: consume and ack part of the backlog through a `Consumer`, then
/// SIGKILL the broker that serves the group and start it again. Invariants:
/// a message whose ack returned OK (no per-id failure) is never delivered
/// again, and in the end every message was delivered and every replica's
/// group state shows all acknowledged. Two rounds in `make test`;
/// SLUICE_CLUSTER_GROUP_ROUNDS rounds in `make soak` (seeded: replay with
/// SLUICE_CLUSTER_SEED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_stay_acknowledged_across_group_leader_kills() -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    const TOTAL: usize = 600;
    let rounds: u64 = std::env::var("SLUICE_CLUSTER_GROUP_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let seed: u64 = std::env::var("SLUICE_CLUSTER_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    println!("group leader kills: {rounds} rounds, seed {seed} (replay with SLUICE_CLUSTER_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = TestCluster::start(3).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    cluster.leaders_spread(1).await?;
    let admin = Admin::new(cluster.broker(1).channel());
    admin.create_topic("stream", 4, pb::TopicConfig::default()).await?;
    let producer = sluice_client::Producer::new(cluster.broker(1).channel(), Default::default());
    let mut acks = Vec::new();
    for i in 0..TOTAL {
        acks.push(producer.enqueue("stream", None, sluice_tests::message(format!("m-{i:04}"))).await?);
    }
    for a in acks {
        a.await?;
    }
    admin.create_group("chaos", group_config("stream", 2_000)).await?;

    let mut acked: BTreeSet<String> = BTreeSet::new();
    // Acks whose answer was lost (a broker died): committed or not, unknown until seen again.
    let mut uncertain: BTreeSet<String> = BTreeSet::new();
    let mut delivered: BTreeSet<String> = BTreeSet::new();
    let per_round = TOTAL / (rounds as usize + 1);
    for round in 1..=rounds + 1 {
        // Whoever serves the group now, found from a broker that is up.
        let addrs: Vec<String> = cluster.brokers.iter().map(|b| b.addr.clone()).collect();
        let seed_broker = rng.random_range(1..=3u64);
        let consumer = Consumer::new(cluster.broker(seed_broker).channel(), "chaos", ConsumerConfig::default());
        let goal = if round == rounds + 1 { TOTAL } else { (per_round * round as usize).min(TOTAL) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.len() + uncertain.len() < goal && Instant::now() < deadline {
            let got = match consumer.pull(rng.random_range(1..=64), Duration::from_millis(300)).await {
                Ok(got) => got,
                Err(e) => {
                    println!("round {round}: pull: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let mut ids = Vec::new();
            for m in got {
                let v = value(&m.record);
                assert!(!acked.contains(&v), "round {round}: {v} was acknowledged and delivered again");
                uncertain.remove(&v);
                delivered.insert(v.clone());
                ids.push((v, m.ack_id));
            }
            if ids.is_empty() {
                continue;
            }
            match consumer.ack(ids.iter().map(|(_, id)| id.clone()).collect()).await {
                Ok(failures) => {
                    let refused: BTreeSet<&str> = failures.iter().map(|f| f.ack_id.as_str()).collect();
                    acked.extend(ids.into_iter().filter(|(_, id)| !refused.contains(id.as_str())).map(|(v, _)| v));
                }
                Err(e) => {
                    println!("round {round}: ack: {e}");
                    uncertain.extend(ids.into_iter().map(|(v, _)| v));
                }
            }
        }
        if round == rounds + 1 {
            break;
        }
        // Kill the broker serving the group (it answers a pull; the others name it).
        let mut serving = None;
        for (i, addr) in addrs.iter().enumerate() {
            if raw_pull(addr, "chaos", 1).await.is_ok() {
                serving = Some(i as u64 + 1);
            }
        }
        let victim = serving.unwrap_or_else(|| rng.random_range(1..=3u64));
        println!("round {round}: {} acked; SIGKILL broker {victim}", acked.len());
        cluster.broker_mut(victim).kill9().await?;
        cluster.broker_mut(victim).restart().await?;
    }
    assert_eq!(acked.len() + uncertain.len(), TOTAL, "every message acknowledged in the end");
    assert_eq!(delivered.len(), TOTAL, "every message delivered");
    for id in 1..=3u64 {
        eventually(Duration::from_secs(20), "every replica's group state shows all acknowledged", || async {
            let info = Admin::new(cluster.broker(id).channel()).describe_group("chaos").await?;
            let committed: u64 = info.partitions.iter().map(|p| p.committed_offset).sum();
            Ok((committed == TOTAL as u64 && info.backlog_messages == 0).then_some(()))
        })
        .await
        .map_err(|e| e.context(format!("broker {id}:\n{}", cluster.broker(id).log_tail())))?;
    }
    println!(
        "{} acks answered OK, {} answers lost (committed: the group shows none left)",
        acked.len(),
        uncertain.len()
    );
    Ok(())
}

/// CPU time a process has used so far, in clock ticks (user + system).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Ok(field(11) + field(12))
}

/// An idle cluster with consumer groups stays idle: every broker runs a task
/// per group, which must sleep until the group's shard changes leader, not
/// wake on every heartbeat (it did: half a core per broker with three groups).
/// CPU time consumed, not wall time: a busy loop shows whatever else runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_cost_no_cpu() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    cluster.leaders_spread(1).await?;
    let admin = Admin::new(cluster.broker(1).channel());
    admin.create_topic("quiet", 3, pb::TopicConfig::default()).await?;
    for i in 0..5 {
        admin.create_group(&format!("quiet-{i}"), group_config("quiet", 10_000)).await?;
    }
    // Every broker knows every group (each runs its task for it) before measuring.
    for id in 1..=3u64 {
        eventually(Duration::from_secs(10), "every broker knows the groups", || async {
            Ok(Admin::new(cluster.broker(id).channel()).describe_group("quiet-4").await.ok().map(|_| ()))
        })
        .await?;
    }
    let hz = 100.0; // Linux's USER_HZ
    let pids: Vec<u32> = cluster.brokers.iter().map(|b| b.pid().unwrap_or(0)).collect();
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<anyhow::Result<_>>()?;
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    for (i, pid) in pids.iter().enumerate() {
        let used = (cpu_ticks(*pid)? - before[i]) as f64 / hz / window.as_secs_f64();
        println!("broker {}: {:.1}% of a core while idle with 5 groups", i + 1, used * 100.0);
        assert!(used < 0.2, "broker {} used {:.0}% of a core while idle", i + 1, used * 100.0);
    }
    Ok(())
}
