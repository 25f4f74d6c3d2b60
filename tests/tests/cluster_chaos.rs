//! The cluster kill loop: seeded random SIGKILLs of any broker (leaders
//! more often than not, and now and then all three at once), and network
//! faults between them (a broker cut off both ways or one way, a flapping
//! link, slow links), while three
//! idempotent producers write and a consumer group pulls, acks and nacks
//! (some messages always nacked, so they exhaust their attempts and are
//! dead-lettered). Afterwards, checked against what the clients were told:
//! - every replica holds the same records, byte for byte;
//! - every acknowledged produce is stored exactly once, at the partition and
//!   offset its acknowledgement named; a produce whose answer was lost is
//!   stored at most once;
//! - no message whose ack returned OK is delivered again, and none of them
//!   is dead-lettered;
//! - every message is settled: acked, or dead-lettered (every always-nacked
//!   message that was stored is); a dead letter written twice is counted (a
//!   known gap in a cluster, docs/SEMANTICS.md), never three times;
//! - every replica's group state shows nothing left;
//! - a topic of replication factor 2 (a placed shard on brokers 1 and 2),
//!   produced to from broker 3 (outside it), holds every acknowledged
//!   produce once at its offset on both replicas (a kill of either replica
//!   makes it unavailable, never lossy);
//! - the history the clients recorded (every acknowledged produce with when
//!   it was sent and answered; every record served by a `Fetch` at each
//!   broker, followers included, and by the group) fits the model of a log
//!   (`sluice_tests::history`): appends in real-time order, no dirty read.
//!
//! A few rounds in `make test`; `make soak` runs SLUICE_CLUSTER_KILLS rounds
//! (290: about 200 broker kills, the rest network faults). Seeded: replay with SLUICE_CLUSTER_SEED.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_client::proto as pb;
use sluice_client::{
    Admin, CancellationToken, ClusterInfo, Consumer, ConsumerConfig, Producer, ProducerConfig, RetryConfig,
};
use sluice_tests::history::History;
use sluice_tests::proxy::Fault;
use sluice_tests::{eventually, group_config, message, read_all, TestCluster};
use tonic::transport::Channel;

const PARTITIONS: u32 = 4;
const DEAD_LETTER_PARTITIONS: u32 = 2;
/// A topic of replication factor 2 beside the others: one placed shard, on
/// brokers 1 and 2 (the first run of two brokers, all holding nothing placed).
const PLACED: &str = "pairs";
const PLACED_PARTITIONS: u32 = 2;
const PLACED_ON: [u64; 2] = [1, 2];
const MAX_ATTEMPTS: u32 = 3;
/// Messages per producer and round, at most: a producer writes about 1,000 a
/// round, so the cap bounds the run without ending the load before the last
/// round (a fixed 200,000 left the soak's last 90 rounds without produce).
const MAX_PER_ROUND: usize = 2_000;

/// Messages the consumer always nacks: they must end dead-lettered.
fn is_poison(value: &str) -> bool {
    value.ends_with('7')
}

/// What the clients were told.
#[derive(Default)]
struct Ledger {
    /// Acknowledged produces: where they were stored.
    produced: BTreeMap<String, (u32, u64)>,
    /// Produces whose answer was an error: stored at most once.
    produce_unknown: BTreeSet<String>,
    /// Messages whose ack returned OK.
    acked: BTreeSet<String>,
    /// Messages whose ack call failed: committed or not.
    ack_unknown: BTreeSet<String>,
    /// Deliveries per message.
    delivered: BTreeMap<String, u32>,
    /// Broken promises seen while running.
    violations: Vec<String>,
    /// The produces' and reads' history, checked against the final log.
    history: History,
}

type Shared = Arc<Mutex<Ledger>>;

fn lock(ledger: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

fn value(r: &pb::Record) -> String {
    String::from_utf8_lossy(&r.value).into_owned()
}

/// One producer seeded with one broker, writing `p{id}-n` to `topic` in batches until stopped.
async fn produce(channel: Channel, (id, topic, limit): (u64, &str, usize), ledger: Shared, stop: CancellationToken) {
    let config = ProducerConfig {
        request_timeout: Duration::from_secs(3),
        retry: RetryConfig { initial: Duration::from_millis(50), max: Duration::from_millis(500), max_retries: 12 },
        ..Default::default()
    };
    let producer = Producer::new(channel, config);
    let mut n = 0;
    while !stop.is_cancelled() && n < limit {
        let mut pending = Vec::new();
        for _ in 0..20 {
            let v = format!("p{id}-{n:06}");
            n += 1;
            let invoked = Instant::now();
            match producer.enqueue(topic, None, message(v.clone())).await {
                Ok(p) => pending.push((v, invoked, p)),
                Err(_) => {
                    lock(&ledger).produce_unknown.insert(v);
                }
            }
        }
        for (v, invoked, p) in pending {
            let result = p.await;
            let answered = Instant::now();
            let mut l = lock(&ledger);
            match result {
                Ok(d) => {
                    l.history.appended(&v, (d.partition, d.offset), invoked, answered);
                    l.produced.insert(v, (d.partition, d.offset));
                }
                Err(_) => {
                    l.produce_unknown.insert(v);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The group's consumer: follows the group's leader from whichever broker
/// answers, acks most messages, nacks a few and every poison one.
async fn consume(channels: Vec<Channel>, seed: u64, ledger: Shared, stop: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut at = 0;
    let mut consumer = Consumer::new(channels[at].clone(), "chaos", ConsumerConfig::default());
    while !stop.is_cancelled() {
        let got = match consumer.pull(rng.random_range(1..=32), Duration::from_millis(300)).await {
            Ok(got) => got,
            Err(_) => {
                // Its broker may be down: start again from the next one.
                at = (at + 1) % channels.len();
                consumer = Consumer::new(channels[at].clone(), "chaos", ConsumerConfig::default());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (mut acks, mut nacks) = (Vec::new(), Vec::new());
        {
            let mut l = lock(&ledger);
            for m in got {
                l.history.read(&m.record, "the group");
                let v = value(&m.record);
                if l.acked.contains(&v) {
                    l.violations.push(format!("{v} was acknowledged and delivered again"));
                }
                l.ack_unknown.remove(&v);
                *l.delivered.entry(v.clone()).or_default() += 1;
                if is_poison(&v) || rng.random_bool(0.05) {
                    nacks.push(m.ack_id);
                } else {
                    acks.push((v, m.ack_id));
                }
            }
        }
        if !nacks.is_empty() {
            // A lost nack only delays the redelivery until the lease ends.
            let _ = consumer.nack(nacks, None, "chaos").await;
        }
        if acks.is_empty() {
            continue;
        }
        let ids: Vec<String> = acks.iter().map(|(_, id)| id.clone()).collect();
        let answer = consumer.ack(ids).await;
        let mut l = lock(&ledger);
        match answer {
            Ok(failures) => {
                let refused: BTreeSet<&str> = failures.iter().map(|f| f.ack_id.as_str()).collect();
                l.acked.extend(acks.iter().filter(|(_, id)| !refused.contains(id.as_str())).map(|(v, _)| v.clone()));
            }
            Err(_) => l.ack_unknown.extend(acks.into_iter().map(|(v, _)| v)),
        }
    }
}

/// A reader at every broker, followers included: tails each partition of
/// `topic` with `Fetch` (which any replica serves up to what it knows is
/// committed), recording every record it is served.
async fn tail(channels: Vec<Channel>, (topic, partitions): (&str, u32), ledger: Shared, stop: CancellationToken) {
    let mut next = vec![vec![0u64; partitions as usize]; channels.len()];
    let mut turn = 0usize;
    while !stop.is_cancelled() {
        let (broker, partition) = (turn % channels.len(), (turn / channels.len()) % partitions as usize);
        turn += 1;
        let request = pb::FetchRequest {
            topic: topic.into(),
            partition: partition as u32,
            offset: next[broker][partition],
            max_messages: 500,
            ..Default::default()
        };
        let mut client = pb::consumer_client::ConsumerClient::new(channels[broker].clone());
        let fetched = tokio::time::timeout(Duration::from_secs(2), client.fetch(request)).await;
        if let Ok(Ok(answer)) = fetched {
            let answer = answer.into_inner();
            let mut l = lock(&ledger);
            for r in &answer.records {
                l.history.read(r, &format!("a fetch at broker {}", broker + 1));
            }
            next[broker][partition] = answer.next_offset.max(next[broker][partition]);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The brokers leading something (the metadata group or a shard), as a
/// running broker sees it.
async fn leaders(cluster: &TestCluster) -> Vec<u64> {
    for id in cluster.ids() {
        if let Ok(m) = ClusterInfo::new(cluster.broker(id).channel()).metadata().await {
            let mut out: Vec<u64> = m.shards.iter().filter_map(|s| s.status.as_ref().map(|st| st.leader)).collect();
            out.extend(m.metadata.map(|st| st.leader));
            out.retain(|l| *l != 0);
            return out;
        }
    }
    Vec::new()
}

/// One network fault around broker `victim`, for a second or three, then
/// healed: `kind` in 70..80 cuts it off both ways, 80..88 one way (it cannot
/// reach the others; they reach it), 88..95 flaps its link to another broker,
/// and 95.. slows all its links.
async fn network_fault(cluster: &TestCluster, rng: &mut StdRng, victim: u64, kind: u32, round: u64) {
    let others: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != victim).collect();
    let lasting = Duration::from_millis(rng.random_range(1000..3000));
    match kind {
        70..80 => {
            println!("round {round}: broker {victim} cut off both ways for {lasting:?}");
            cluster.isolate(victim, Fault::Blackhole);
            tokio::time::sleep(lasting).await;
        }
        80..88 => {
            println!("round {round}: broker {victim} cannot reach the others for {lasting:?}");
            for to in &others {
                cluster.link(victim, *to).set(Fault::Blackhole);
            }
            tokio::time::sleep(lasting).await;
        }
        88..95 => {
            let peer = others[rng.random_range(0..others.len())];
            println!("round {round}: the link between brokers {victim} and {peer} flaps for {lasting:?}");
            let until = Instant::now() + lasting;
            let mut down = false;
            while Instant::now() < until {
                down = !down;
                let fault = if down { Fault::Blackhole } else { Fault::HEALTHY };
                cluster.link(victim, peer).set(fault);
                cluster.link(peer, victim).set(fault);
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
            }
        }
        _ => {
            println!("round {round}: every link of broker {victim} 40 ms slow for {lasting:?}");
            cluster.isolate(victim, Fault::Pass { delay: Duration::from_millis(40) });
            tokio::time::sleep(lasting).await;
        }
    }
    cluster.heal();
}

/// What each broker reports of the group and its shards, and what the
/// clients saw: printed when the group does not settle.
async fn diagnose(cluster: &TestCluster, ledger: &Shared) -> String {
    let mut out = Vec::new();
    {
        let l = lock(ledger);
        out.push(format!(
            "clients: {} produced, {} produce answers lost, {} acked, {} ack answers lost, {} delivered",
            l.produced.len(),
            l.produce_unknown.len(),
            l.acked.len(),
            l.ack_unknown.len(),
            l.delivered.len()
        ));
    }
    for id in cluster.ids() {
        match Admin::new(cluster.broker(id).channel()).describe_group("chaos").await {
            Ok(g) => out.push(format!(
                "broker {id}: backlog {} in flight {} dead-lettered {} committed {:?}",
                g.backlog_messages,
                g.in_flight,
                g.dead_lettered,
                g.partitions.iter().map(|p| p.committed_offset).collect::<Vec<_>>()
            )),
            Err(e) => out.push(format!("broker {id}: describe failed: {e}")),
        }
        match ClusterInfo::new(cluster.broker(id).channel()).metadata().await {
            Ok(m) => {
                for s in m.shards {
                    let st = s.status.unwrap_or_default();
                    out.push(format!(
                        "  shard {} leader {} term {} role {} last {} committed {} applied {} snapshot {} purged {}",
                        s.id,
                        st.leader,
                        st.term,
                        st.role,
                        st.last_log_index,
                        st.committed_index,
                        st.applied_index,
                        st.snapshot_index,
                        st.purged_index
                    ));
                }
            }
            Err(e) => out.push(format!("  metadata failed: {e}")),
        }
    }
    out.join("\n")
}

/// Checks that every produce `l` says was acknowledged is stored in `records`
/// once, at the partition and offset it was told, and that every produce
/// whose answer was lost is stored at most once; says what it counted.
fn stored_as_told(l: &Ledger, records: &[Vec<pb::Record>]) -> String {
    let mut stored: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
    for (p, records) in records.iter().enumerate() {
        for r in records {
            stored.entry(value(r)).or_default().push((p as u32, r.offset));
        }
    }
    for (v, at) in &l.produced {
        assert_eq!(stored.get(v), Some(&vec![*at]), "acknowledged produce {v}: stored once at {at:?}");
    }
    for v in &l.produce_unknown {
        let copies = stored.get(v).map_or(0, Vec::len);
        assert!(copies <= 1, "{v} (answer lost) stored {copies} times");
    }
    format!(
        "placed topic: {} stored, {} acknowledged produces, {} answers lost; replicas identical, \
         every acknowledged produce once at its offset",
        stored.len(),
        l.produced.len(),
        l.produce_unknown.len()
    )
}

/// Every partition of `topic` as broker `id` serves it.
async fn records_at(
    cluster: &TestCluster,
    id: u64,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<Vec<Vec<pb::Record>>> {
    let mut out = Vec::new();
    for p in 0..partitions {
        out.push(read_all(cluster.broker(id).channel(), topic, p).await?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_or_repeated_across_random_kills() -> anyhow::Result<()> {
    let kills: u64 = std::env::var("SLUICE_CLUSTER_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let seed: u64 = std::env::var("SLUICE_CLUSTER_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    println!("cluster kill loop: {kills} kills, seed {seed} (replay with SLUICE_CLUSTER_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    // Snapshots every 200 entries: brokers that were down catch up from snapshots too.
    let mut cluster = TestCluster::start_with(3, &["--shard-snapshot-entries", "200"]).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    let admin = Admin::new(cluster.broker(1).channel());
    admin.create_topic("chaos", PARTITIONS, pb::TopicConfig::default()).await?;
    admin.create_topic("chaos-dlq", DEAD_LETTER_PARTITIONS, pb::TopicConfig::default()).await?;
    let config = pb::GroupConfig {
        max_delivery_attempts: Some(MAX_ATTEMPTS),
        dead_letter_topic: "chaos-dlq".into(),
        ..group_config("chaos", 2_000)
    };
    admin.create_group("chaos", config).await?;
    admin.create_replicated_topic(PLACED, PLACED_PARTITIONS, 2, pb::TopicConfig::default()).await?;

    let ledger: Shared = Arc::default();
    let stop_producing = CancellationToken::new();
    let stop_consuming = CancellationToken::new();
    let channels: Vec<Channel> = cluster.ids().iter().map(|id| cluster.broker(*id).channel()).collect();
    let mut producers = Vec::new();
    let limit = (kills as usize).max(10) * MAX_PER_ROUND;
    for (i, channel) in channels.iter().enumerate() {
        let (id, stop) = (i as u64 + 1, stop_producing.clone());
        producers.push(tokio::spawn(produce(channel.clone(), (id, "chaos", limit), ledger.clone(), stop)));
    }
    // The placed topic's producer starts at the broker outside its shard, and finds the replicas.
    let placed: Shared = Arc::default();
    let stop = stop_producing.clone();
    producers.push(tokio::spawn(produce(cluster.broker(3).channel(), (9, PLACED, limit), placed.clone(), stop)));
    let consumer = tokio::spawn(consume(channels.clone(), rng.random(), ledger.clone(), stop_consuming.clone()));
    let reader = tokio::spawn(tail(channels.clone(), ("chaos", PARTITIONS), ledger.clone(), stop_consuming.clone()));

    let started = Instant::now();
    let (mut full_restarts, mut faults) = (0, 0);
    for round in 1..=kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        if round % 25 == 3 {
            println!("round {round}: SIGKILL all three brokers");
            for id in cluster.ids() {
                cluster.broker_mut(id).kill9().await?;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
            for id in cluster.ids() {
                cluster.broker_mut(id).start_again().await?;
            }
            full_restarts += 1;
            continue;
        }
        let leading = leaders(&cluster).await;
        let victim = if !leading.is_empty() && rng.random_bool(0.7) {
            leading[rng.random_range(0..leading.len())]
        } else {
            rng.random_range(1..=3u64)
        };
        let (produced, acked) = {
            let l = lock(&ledger);
            (l.produced.len(), l.acked.len())
        };
        let fault = rng.random_range(0..100);
        if fault < 70 {
            println!("round {round}: {produced} produced, {acked} acked; SIGKILL broker {victim}");
            cluster.broker_mut(victim).kill9().await?;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
            cluster.broker_mut(victim).start_again().await?;
            continue;
        }
        network_fault(&cluster, &mut rng, victim, fault, round).await;
        faults += 1;
    }
    println!(
        "{kills} rounds ({full_restarts} kills of all three, {faults} network faults) in {:.0?}",
        started.elapsed()
    );

    // Producers stop; the group settles everything they stored.
    stop_producing.cancel();
    for p in producers {
        p.await?;
    }
    let info = Admin::new(cluster.broker(1).channel());
    let settled = eventually(Duration::from_secs(90), "the group settled every message", || async {
        let Ok(g) = info.describe_group("chaos").await else { return Ok(None) };
        Ok((g.backlog_messages == 0 && g.in_flight == 0).then_some(()))
    })
    .await;
    if let Err(e) = settled {
        return Err(e.context(diagnose(&cluster, &ledger).await));
    }
    stop_consuming.cancel();
    consumer.await?;
    reader.await?;

    // Every replica holds the same records.
    let expected = records_at(&cluster, 1, "chaos", PARTITIONS).await?;
    let dead = records_at(&cluster, 1, "chaos-dlq", DEAD_LETTER_PARTITIONS).await?;
    for id in [2, 3] {
        eventually(Duration::from_secs(30), "every replica holds the same records", || async {
            let same = records_at(&cluster, id, "chaos", PARTITIONS).await.ok().as_ref() == Some(&expected)
                && records_at(&cluster, id, "chaos-dlq", DEAD_LETTER_PARTITIONS).await.ok().as_ref() == Some(&dead);
            Ok(same.then_some(()))
        })
        .await
        .map_err(|e| e.context(format!("broker {id} differs from broker 1")))?;
    }

    // The placed topic: both replicas the same, every acknowledged produce once at its offset.
    let pairs = records_at(&cluster, PLACED_ON[0], PLACED, PLACED_PARTITIONS).await?;
    eventually(Duration::from_secs(30), "both replicas of the placed topic hold the same records", || async {
        let other = records_at(&cluster, PLACED_ON[1], PLACED, PLACED_PARTITIONS).await.ok();
        Ok((other.as_ref() == Some(&pairs)).then_some(()))
    })
    .await?;
    let placed_summary = stored_as_told(&lock(&placed), &pairs);
    let placed_violations = lock(&placed).history.check(&pairs);
    assert!(placed_violations.is_empty(), "the placed topic's history: {placed_violations:?}");

    {
        let l = lock(&ledger);
        assert!(l.violations.is_empty(), "broken promises: {:?}", &l.violations[..l.violations.len().min(10)]);
        stored_as_told(&l, &expected);
        let violations = l.history.check(&expected);
        assert!(violations.is_empty(), "the history does not fit a log: {:?}", &violations[..violations.len().min(10)]);
        let (reads, offsets_read) = l.history.reads();
        let stored: BTreeSet<String> = expected.iter().flatten().map(value).collect();
        let mut dead_letters: BTreeMap<String, usize> = BTreeMap::new();
        for r in dead.iter().flatten() {
            *dead_letters.entry(value(r)).or_default() += 1;
        }
        // Known gap (docs/REPLICATION.md, consumer groups): an old group leader's append
        // that lands on the dead-letter partition after the new leader searched for it
        // is written twice. Counted and reported; never more than two copies (successive
        // actors on one broker used to write one batch up to five times).
        // What each extra copy says of itself (which attempt, when), to tell how it came about.
        for (dlq_partition, records) in dead.iter().enumerate() {
            for r in records.iter().filter(|r| dead_letters.get(&value(r)).is_some_and(|c| *c > 1)) {
                let headers: Vec<String> = r
                    .headers
                    .iter()
                    .filter(|h| h.key.starts_with("sluice-"))
                    .map(|h| format!("{}={}", h.key, String::from_utf8_lossy(&h.value)))
                    .collect();
                println!("dead letter {} at {dlq_partition}/{}: {}", value(r), r.offset, headers.join(" "));
            }
        }
        let mut twice = 0;
        for (v, copies) in &dead_letters {
            assert!(*copies <= 2, "{v} dead-lettered {copies} times");
            if *copies > 1 {
                twice += 1;
            }
            assert!(!l.acked.contains(v), "{v} was acknowledged and also dead-lettered");
        }
        for v in &stored {
            let settled = dead_letters.contains_key(v) || l.acked.contains(v) || l.ack_unknown.contains(v);
            assert!(settled, "{v} was stored but neither acked nor dead-lettered");
            if is_poison(v) {
                assert!(dead_letters.contains_key(v), "{v} is always nacked and was not dead-lettered");
            }
        }
        let early = dead_letters.keys().filter(|v| !is_poison(v)).count();
        println!(
            "cluster kill loop summary ({placed_summary}): {kills} rounds ({} SIGKILLs: one broker {} times, all three at once \
             {full_restarts} times; {faults} network faults), seed {seed}: \
             {} stored ({} acknowledged produces, {} answers lost), {} acked OK, {} ack answers lost, {} dead \
             letters ({early} not poison: attempts used up by leases lost in kills; {twice} written twice), {} \
         deliveries; {reads} records served to readers ({offsets_read} offsets); replicas identical, \
             every acknowledged produce once at its offset, appends in real-time order, no dirty read, \
             nothing acked delivered again or dead-lettered",
            kills - faults + 2 * full_restarts,
            kills - full_restarts - faults,
            stored.len(),
            l.produced.len(),
            l.produce_unknown.len(),
            l.acked.len(),
            l.ack_unknown.len(),
            dead_letters.len(),
            l.delivered.values().sum::<u32>(),
        );
    }
    for id in cluster.ids() {
        eventually(Duration::from_secs(20), "every replica's group state shows nothing left", || async {
            let g = Admin::new(cluster.broker(id).channel()).describe_group("chaos").await?;
            Ok((g.backlog_messages == 0).then_some(()))
        })
        .await
        .map_err(|e| e.context(format!("broker {id}")))?;
    }
    Ok(())
}
