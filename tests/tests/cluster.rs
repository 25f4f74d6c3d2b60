//! Three real broker processes on loopback form a cluster (steps 1–2 of
//! docs/REPLICATION.md), with the flags an operator uses:
//! - the metadata group: they agree on a leader, every broker registers its
//!   endpoint in the replicated catalog, and after the leader is killed with
//!   SIGKILL the other two elect a new one and the killed broker rejoins from
//!   its own disk (once in `make test`, SLUICE_CLUSTER_ROUNDS times in `make soak`);
//! - topics and groups: created, changed and deleted through any broker,
//!   served by all, also by a broker that was down while it happened; a topic
//!   a group uses cannot be deleted through any broker;
//! - a leader cut off by a black hole cannot change the catalog, and follows
//!   the majority once healed.
//!
//! Records and their replication have their own file: `cluster_records.rs`.

use std::time::{Duration, Instant};

use sluice_client::proto as pb;
use sluice_client::{Admin, ClusterInfo};
use sluice_tests::cluster::produce_to_leader;
use sluice_tests::{binary, create_group, eventually, group_config, produce_values, Fault, TestBroker, TestCluster};

const BROKERS: &str = "sluice_cluster_brokers";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_form_the_metadata_group_and_survive_a_leader_kill() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let leader = cluster.agreed_leader(&cluster.ids(), None).await?;
    assert!((1..=3).contains(&leader), "leader {leader}");
    eventually(Duration::from_secs(10), "every broker has applied three registrations", || async {
        for b in &cluster.brokers {
            if b.metric(BROKERS, &[]).await? as u64 != 3 {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await?;

    // Cluster.Metadata at a follower: every broker with its client endpoint, the
    // leader, and (asked of the leader) each replica caught up.
    let follower = if leader == 1 { 2 } else { 1 };
    let info = ClusterInfo::new(cluster.broker(follower).channel());
    let m = eventually(Duration::from_secs(10), "every replica reported caught up", || async {
        let m = info.metadata_with_progress().await?;
        let replicas = m.metadata.as_ref().map_or(&[][..], |s| &s.replicas[..]);
        let caught_up = replicas.len() == 3 && replicas.iter().all(|r| r.lag == 0 && r.matched_index.is_some());
        Ok(caught_up.then_some(m))
    })
    .await?;
    assert!(m.clustered);
    assert_eq!(m.broker_id, follower);
    assert_eq!(m.metadata.as_ref().map(|s| (s.leader, s.role.as_str())), Some((leader, "follower")));
    let endpoints: Vec<(u64, String)> = m.brokers.iter().map(|b| (b.id, b.endpoint.clone())).collect();
    let expected: Vec<(u64, String)> = cluster.brokers.iter().zip(1..).map(|(b, id)| (id, b.addr.clone())).collect();
    assert_eq!(endpoints, expected, "each broker registered where it serves clients");
    let cli = tokio::process::Command::new(binary("sluice"))
        .args(["--addr", &cluster.broker(follower).url(), "cluster", "status"])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success() && text.contains(&format!("metadata leader {leader},")), "{text}");
    // Only the broker table counts (its rows end with the lag, then the disk's state):
    // the shard table below it ends its rows with a commit index, which is 0 for a
    // shard that has not elected yet.
    let brokers = text.lines().take_while(|l| !l.starts_with("shard\t"));
    assert_eq!(brokers.filter(|l| l.ends_with("\t0\tok")).count(), 3, "three replicas with lag 0:\n{text}");

    // SIGKILL the leader: the two others elect one of themselves; the killed broker
    // restarts on its data and rejoins. SLUICE_CLUSTER_ROUNDS repeats it (make soak: 20).
    let rounds: u64 = std::env::var("SLUICE_CLUSTER_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut leader = leader;
    for round in 1..=rounds {
        let killed = leader;
        cluster.broker_mut(killed).kill9().await?;
        let survivors: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != killed).collect();
        let second = cluster.agreed_leader(&survivors, Some(leader)).await?;
        assert_ne!(second, leader, "round {round}: a killed broker cannot stay leader");
        cluster.broker_mut(killed).start_again().await?;
        leader = cluster.agreed_leader(&cluster.ids(), None).await?;
        let kept = cluster.broker(killed).metric(BROKERS, &[]).await? as u64;
        assert_eq!(kept, 3, "round {round}: the rejoined broker kept the catalog");
    }
    println!("cluster: {rounds} leader SIGKILLs, a new leader elected and the killed broker rejoined each time");
    Ok(())
}

/// The topics broker `id` serves: name → (partitions, retention_ms).
async fn topics_at(cluster: &TestCluster, id: u64) -> anyhow::Result<Vec<(String, u32, u64)>> {
    let admin = Admin::new(cluster.broker(id).channel());
    Ok(admin
        .list_topics()
        .await?
        .into_iter()
        .map(|t| (t.name, t.partitions, t.config.map_or(0, |c| c.retention_ms)))
        .collect())
}

/// The groups broker `id` serves, by name.
async fn groups_at(cluster: &TestCluster, id: u64) -> anyhow::Result<Vec<String>> {
    let groups = Admin::new(cluster.broker(id).channel()).list_groups("").await?;
    Ok(groups.into_iter().map(|g| g.name).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_groups_changed_through_any_broker_are_served_by_all() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    // Channels reconnect by address, which a broker keeps across restarts.
    let channels: Vec<_> = cluster.brokers.iter().map(TestBroker::channel).collect();
    let admin = |id: u64| Admin::new(channels[(id - 1) as usize].clone());

    // Created through broker 1: broker 1 serves it when the call returns, the others within a second.
    let created = Instant::now();
    admin(1).create_topic("orders", 3, pb::TopicConfig::default()).await?;
    let served = admin(1).describe_topic("orders").await?.partitions.len();
    assert_eq!(served, 3, "the creating broker serves the topic when CreateTopic returns");
    for id in [2, 3] {
        eventually(Duration::from_secs(5), "the topic reaches every broker", || async {
            Ok(topics_at(&cluster, id).await?.iter().any(|t| t.0 == "orders" && t.1 == 3).then_some(()))
        })
        .await?;
    }
    println!("cluster: a created topic was served by all three brokers after {:?}", created.elapsed());
    let again = admin(3).create_topic("orders", 1, pb::TopicConfig::default()).await;
    assert_eq!(again.err().and_then(|e| e.code()), Some(tonic::Code::AlreadyExists), "one name, one topic");

    // Records go to each partition's leader (found from any broker), and every broker serves them.
    for p in 0..3 {
        produce_to_leader(&cluster.broker(1).addr, "orders", p, &["a".to_owned(), "b".to_owned()]).await?;
    }
    for id in 1..=3u64 {
        eventually(Duration::from_secs(5), "every broker serves the topic's records", || async {
            let stored: u64 =
                admin(id).describe_topic("orders").await?.partitions.iter().map(|p| p.latest_offset).sum();
            Ok((stored == 6).then_some(()))
        })
        .await?;
    }

    // Settings changed through broker 2 reach broker 1.
    admin(2).update_topic("orders", pb::TopicConfig { retention_ms: 3_600_000, ..Default::default() }).await?;
    eventually(Duration::from_secs(5), "the new retention reaches broker 1", || async {
        Ok(topics_at(&cluster, 1).await?.iter().any(|t| t.0 == "orders" && t.2 == 3_600_000).then_some(()))
    })
    .await?;

    // Groups live in the catalog too: created through broker 3, served by all, and the
    // topic a group reads cannot be deleted through any broker.
    create_group(channels[2].clone(), "audit", group_config("orders", 10_000)).await?;
    for id in [1, 2] {
        eventually(Duration::from_secs(5), "the group reaches every broker", || async {
            Ok(groups_at(&cluster, id).await?.contains(&"audit".to_owned()).then_some(()))
        })
        .await?;
    }
    admin(2).update_group("audit", pb::GroupConfig { ack_deadline_ms: 20_000, ..Default::default() }).await?;
    eventually(Duration::from_secs(5), "the group's new settings reach broker 3", || async {
        let deadline = admin(3).describe_group("audit").await?.config.map_or(0, |c| c.ack_deadline_ms);
        Ok((deadline == 20_000).then_some(()))
    })
    .await?;
    let in_use = admin(2).delete_topic("orders").await;
    assert_eq!(in_use.err().and_then(|e| e.code()), Some(tonic::Code::FailedPrecondition), "checked cluster-wide");
    admin(1).delete_group("audit").await?;

    // Broker 3 is down while a topic and a group are created and another topic deleted;
    // back, it follows.
    cluster.broker_mut(3).kill9().await?;
    // If broker 3 led the metadata group, a change in flight to it is answered UNAVAILABLE
    // ("retry with backoff"): the test, like a client, goes on once the others have a leader.
    cluster.agreed_leader(&[1, 2], Some(3)).await?;
    admin(1).create_topic("late", 2, pb::TopicConfig::default()).await?;
    create_group(channels[1].clone(), "late-readers", group_config("late", 10_000)).await?;
    admin(2).delete_topic("orders").await?;
    assert!(topics_at(&cluster, 2).await?.iter().all(|t| t.0 != "orders"), "deleted where the delete returned");
    cluster.broker_mut(3).start_again().await?;
    eventually(Duration::from_secs(10), "the restarted broker follows the catalog", || async {
        let names: Vec<String> = topics_at(&cluster, 3).await?.into_iter().map(|t| t.0).collect();
        Ok((names == ["late"] && groups_at(&cluster, 3).await? == ["late-readers"]).then_some(()))
    })
    .await?;
    let gone = admin(3).delete_topic("orders").await;
    assert_eq!(gone.err().and_then(|e| e.code()), Some(tonic::Code::NotFound));

    // A name deleted and created again is a new topic: no records of the old one.
    admin(3).create_topic("orders", 1, pb::TopicConfig::default()).await?;
    for id in 1..=3u64 {
        eventually(Duration::from_secs(5), "the new `orders` reaches every broker", || async {
            Ok(topics_at(&cluster, id).await?.iter().any(|t| t.0 == "orders" && t.1 == 1).then_some(()))
        })
        .await?;
        let d = admin(id).describe_topic("orders").await?;
        assert_eq!(d.partitions[0].latest_offset, 0, "broker {id}: the re-created topic starts empty");
    }
    Ok(())
}

/// A broker whose catalog lags (the leader's appends stop reaching it for a
/// moment) asks the metadata leader for its read index before it answers
/// that a name does not exist: what was made through another broker a moment
/// ago is served, a group can be made on it at once, and a name nobody made
/// is still `NOT_FOUND`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_catalog_lags_serves_what_another_broker_just_made() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    let leader = cluster.agreed_leader(&cluster.ids(), None).await?;
    let lagging = if leader == 1 { 2 } else { 1 };
    let at_leader = Admin::new(cluster.broker(leader).channel());
    let at_lagging = Admin::new(cluster.broker(lagging).channel());
    // Longer than the fixed wait (500 ms) a lookup once made before NOT_FOUND.
    let cut_for = Duration::from_millis(700);

    for (round, topic) in ["fresh", "fresher"].into_iter().enumerate() {
        // The leader's link to the lagging broker loses everything; its own link
        // to the leader works (it asks for the read index there).
        cluster.link(leader, lagging).set(Fault::Blackhole);
        at_leader.create_topic(topic, 2, pb::TopicConfig::default()).await?;
        let healed = async {
            tokio::time::sleep(cut_for).await;
            cluster.link(leader, lagging).set(Fault::HEALTHY);
        };
        let asked = Instant::now();
        let used = async {
            if round == 0 {
                at_lagging.describe_topic(topic).await.map(|d| d.partitions.len()).map_err(anyhow::Error::from)
            } else {
                let group = group_config(topic, 10_000);
                create_group(cluster.broker(lagging).channel(), "fresh-readers", group).await.map(|_| 2)
            }
        };
        let ((), served) = tokio::join!(healed, used);
        let log = || {
            let log = cluster.broker(lagging).log().unwrap_or_default();
            log.lines().filter(|l| l.contains(" sluice_")).collect::<Vec<_>>().join("\n")
        };
        let served = served.map_err(|e| e.context(log()))?;
        println!("cluster: a lagging broker served topic {topic}, made elsewhere, after {:?}", asked.elapsed());
        assert_eq!(served, 2, "the lagging broker serves the new topic");
    }
    assert_eq!(at_leader.describe_group("fresh-readers").await?.name, "fresh-readers");

    let missing = at_lagging.describe_topic("never-made").await;
    assert_eq!(missing.err().and_then(|e| e.code()), Some(tonic::Code::NotFound), "a name nobody made");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_brokers_data_dir_does_not_join_a_cluster() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await?;
    let alone = ClusterInfo::new(broker.channel()).metadata().await?;
    assert!(!alone.clustered && alone.metadata.is_none(), "a single broker says so: {alone:?}");
    assert_eq!(alone.brokers.iter().map(|b| b.endpoint.clone()).collect::<Vec<_>>(), [broker.addr.clone()]);
    Admin::new(broker.channel()).create_topic("mine", 1, pb::TopicConfig::default()).await?;
    produce_values(broker.channel(), "mine", ["kept".to_owned()]).await?;
    broker.terminate(Duration::from_secs(10)).await?;
    let listen = sluice_tests::ports::reserve_addr()?;
    let peers = format!("1={listen},2=127.0.0.1:1,3=127.0.0.1:2");
    broker.set_args(&["--node-id", "1", "--peers", &peers, "--cluster-listen", &listen]);
    let refused = broker.start_again().await;
    let why = format!("{:#}", refused.err().ok_or_else(|| anyhow::anyhow!("a single broker's data dir joined"))?);
    assert!(why.contains("holds 1 topic(s) made by a single broker"), "{why}");
    broker.set_args(&[]);
    broker.start_again().await?;
    let records = sluice_tests::read_all(broker.channel(), "mine", 0).await?;
    assert_eq!(records.len(), 1, "the refused start changed nothing");
    Ok(())
}

/// How a round cuts a broker off.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Every byte to and from it lost; connections stay open.
    BlackholeBothWays,
    /// Every connection to and from it closed, new ones refused.
    RefuseBothWays,
    /// What it sends is lost; what others send it arrives.
    BlackholeOutbound,
}

/// Rounds of: cut a broker off (in `make test`: the leader, both ways, then the leader's
/// outbound links only; in `make soak`: SLUICE_CLUSTER_ROUNDS rounds of a seeded choice of
/// broker and cut), change the catalog through the majority and through the cut-off
/// broker, heal, and check every broker holds exactly the majority's changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_brokers_cannot_change_the_catalog_and_follow_after_healing() -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let soak_rounds: Option<u64> = std::env::var("SLUICE_CLUSTER_ROUNDS").ok().and_then(|v| v.parse().ok());
    let seed: u64 = std::env::var("SLUICE_CLUSTER_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    println!("cluster partition rounds: seed {seed} (replay with SLUICE_CLUSTER_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cluster = TestCluster::start(3).await?;
    let mut leader = cluster.agreed_leader(&cluster.ids(), None).await?;
    let mut expected: Vec<String> = Vec::new();
    let rounds = soak_rounds.unwrap_or(2);
    for round in 1..=rounds {
        let (target, cut) = match soak_rounds {
            None if round == 1 => (leader, Cut::BlackholeBothWays),
            None => (leader, Cut::BlackholeOutbound),
            Some(_) => {
                let cut = [Cut::BlackholeBothWays, Cut::RefuseBothWays, Cut::BlackholeOutbound][rng.random_range(0..3)];
                (rng.random_range(1..=3u64), cut)
            }
        };
        let majority: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != target).collect();
        match cut {
            Cut::BlackholeBothWays => cluster.isolate(target, Fault::Blackhole),
            Cut::RefuseBothWays => cluster.isolate(target, Fault::Refuse),
            Cut::BlackholeOutbound => majority.iter().for_each(|to| cluster.link(target, *to).set(Fault::Blackhole)),
        }
        let new = cluster.agreed_leader(&majority, Some(target)).await?;

        // The majority changes the catalog.
        let kept = format!("kept-{round}");
        Admin::new(cluster.broker(majority[0]).channel()).create_topic(&kept, 1, pb::TopicConfig::default()).await?;
        expected.push(kept.clone());
        expected.sort(); // ListTopics answers by name

        // The cut-off broker cannot: its change fails in bounded time and is never applied.
        let asked = Instant::now();
        let cut_off = Admin::new(cluster.broker(target).channel());
        let refused = cut_off.create_topic(&format!("lost-{round}"), 1, pb::TopicConfig::default()).await;
        let waited = asked.elapsed();
        assert_eq!(refused.as_ref().err().and_then(|e| e.code()), Some(tonic::Code::Unavailable), "{refused:?}");
        assert_eq!(refused.as_ref().err().and_then(|e| e.reason()), Some("cluster_unavailable"));
        assert!(waited < Duration::from_secs(15), "round {round}: the cut-off broker answered after {waited:?}");
        match cut {
            // It still hears the majority, so it follows the catalog while cut off.
            Cut::BlackholeOutbound => {
                eventually(Duration::from_secs(10), "a broker that only receives follows the catalog", || async {
                    Ok(topics_at(&cluster, target).await?.iter().any(|t| t.0 == kept).then_some(()))
                })
                .await?;
            }
            _ => assert!(
                topics_at(&cluster, target).await?.iter().all(|t| t.0 != kept),
                "round {round}: a broker cut off both ways learns nothing"
            ),
        }

        // Healed: one leader for all, and every broker holds exactly the majority's topics.
        cluster.heal();
        leader = cluster.agreed_leader(&cluster.ids(), None).await?;
        for id in cluster.ids() {
            let held = eventually(Duration::from_secs(10), "every broker holds the majority's catalog", || async {
                let names: Vec<String> = topics_at(&cluster, id).await?.into_iter().map(|t| t.0).collect();
                Ok((names == expected).then_some(()))
            })
            .await;
            if let Err(e) = held {
                let names: Vec<String> = topics_at(&cluster, id).await?.into_iter().map(|t| t.0).collect();
                anyhow::bail!(
                    "round {round}: broker {id} holds {names:?}, the majority made {expected:?}: {e}\nits log:\n{}",
                    cluster.broker(id).log_tail()
                );
            }
        }
        println!(
            "cluster round {round}: broker {target} cut off ({cut:?}), {new} led the majority; the cut-off create \
             failed after {waited:?}; healed under leader {leader}"
        );
    }
    Ok(())
}
