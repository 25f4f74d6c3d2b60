//! Randomized crash consistency: producers, consumers that ack and nack, and
//! admin changes run while the broker is SIGKILLed at random moments and
//! restarted. Afterwards:
//! - every acknowledged produce is stored exactly once, intact, at its offset, offsets dense;
//! - no pull started after an ack returned OK hands that message out again;
//! - every stored message was acked by a consumer or dead-lettered, never both;
//! - the dead-letter topic holds every poison message, only messages that used
//!   all their attempts, each once, intact and naming its true source;
//! - admin changes acknowledged before a crash are still in force.
//!
//! The seed is printed: SLUICE_CHAOS_SEED replays it, SLUICE_CHAOS_KILLS sets the
//! number of crashes (default 4), SLUICE_CHAOS_MESSAGES the cap per producer (default 2,000,000).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sluice_client::proto as pb;
use sluice_client::{Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, RetryConfig};
use sluice_tests::payload::{id_of, is_intact, payload};
use sluice_tests::{create_group, eventually, group_config, read_all, TestBroker};

const TOPIC: &str = "chaos";
const DLQ: &str = "chaos.dlq";
const PARTITIONS: u32 = 4;
const MAX_ATTEMPTS: u32 = 4;

fn is_poison(id: u64) -> bool {
    id % 101 == 3
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// What the clients saw, stamped with a logical clock so "after" is exact.
#[derive(Default)]
struct Ledger {
    /// Acknowledged produces: id → (partition, offset).
    produced: HashMap<u64, (u32, u64)>,
    /// Consumer acks that returned OK: id → clock when the ack returned.
    acked: HashMap<u64, u64>,
    /// Deliveries: (id, clock when the pull started).
    deliveries: Vec<(u64, u64)>,
    /// Delivered values that were not intact.
    corrupt: Vec<u64>,
}

/// Topics the admin task created or deleted; `None` when the outcome is unknown (crash mid-call).
type AdminLedger = BTreeMap<String, Option<bool>>;

struct Shared {
    ledger: Mutex<Ledger>,
    clock: AtomicU64,
    stop_producing: AtomicBool,
    stop_all: AtomicBool,
}

impl Shared {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkills_under_mixed_load_lose_nothing_acknowledged() -> anyhow::Result<()> {
    let seed: u64 = env_or("SLUICE_CHAOS_SEED", rand::random());
    let kills: usize = env_or("SLUICE_CHAOS_KILLS", 4);
    let cap: u64 = env_or("SLUICE_CHAOS_MESSAGES", 2_000_000);
    eprintln!("chaos seed {seed} ({kills} kills); replay with SLUICE_CHAOS_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut broker = TestBroker::start().await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic(TOPIC, PARTITIONS, pb::TopicConfig::default()).await?;
    let config = pb::GroupConfig {
        max_delivery_attempts: Some(MAX_ATTEMPTS),
        dead_letter_topic: DLQ.into(),
        ..group_config(TOPIC, 3000)
    };
    create_group(broker.channel(), "work", config).await?;

    let shared = Arc::new(Shared {
        ledger: Mutex::default(),
        clock: AtomicU64::new(1),
        stop_producing: AtomicBool::new(false),
        stop_all: AtomicBool::new(false),
    });
    let retry = RetryConfig { initial: Duration::from_millis(20), max: Duration::from_millis(300), max_retries: 1000 };
    let mut tasks = Vec::new();
    for w in 0..2u64 {
        let producer = Producer::new(
            broker.channel(),
            ProducerConfig { retry, request_timeout: Duration::from_secs(5), ..ProducerConfig::default() },
        );
        let lens: Vec<usize> = (0..64).map(|_| rng.random_range(8..1024)).collect();
        tasks.push(tokio::spawn(produce(producer, w, lens, cap, shared.clone())));
    }
    for w in 0..2u64 {
        let consumer = Consumer::new(
            broker.channel(),
            "work",
            ConsumerConfig { consumer_id: format!("c{w}"), retry, ..ConsumerConfig::default() },
        );
        tasks.push(tokio::spawn(consume(consumer, seed ^ (w + 1), shared.clone())));
    }
    let admin_ledger: Arc<Mutex<AdminLedger>> = Arc::default();
    let admin_task =
        tokio::spawn(churn_admin(Admin::new(broker.channel()), seed, admin_ledger.clone(), shared.clone()));

    let mut peak_rss = 0;
    for round in 0..kills {
        let wait = Duration::from_millis(rng.random_range(300..1500));
        tokio::time::sleep(wait).await;
        peak_rss = peak_rss.max(broker.peak_rss_bytes()?);
        broker.kill9().await?;
        let (produced, acked) = {
            let l = shared.ledger.lock().expect("lock");
            (l.produced.len(), l.acked.len())
        };
        eprintln!("kill {round}: after {wait:?}; {produced} produces and {acked} consumer acks so far");
        broker.start_again().await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.stop_producing.store(true, Ordering::SeqCst);
    let drained = Instant::now();
    let admin = Admin::new(broker.channel());
    eventually(Duration::from_secs(180), "the group to settle every message", || async {
        let g = admin.describe_group("work").await?;
        let t = admin.describe_topic(TOPIC).await?;
        let producing = t.partitions.iter().map(|p| p.latest_offset).sum::<u64>();
        let done = tasks.iter().take(2).all(|t| t.is_finished());
        Ok((done && g.backlog_messages == 0 && producing > 0).then_some(()))
    })
    .await?;
    shared.stop_all.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await??;
    }
    admin_task.await??;
    eprintln!("drained in {:?}", drained.elapsed());

    let ledger = std::mem::take(&mut *shared.ledger.lock().expect("lock"));
    assert!(
        ledger.corrupt.is_empty(),
        "delivered values not intact: {:?}",
        &ledger.corrupt[..ledger.corrupt.len().min(5)]
    );
    let stored = check_log(&broker, &ledger, seed).await?;
    let dead = check_dead_letters(&broker, &stored, seed).await?;
    for id in stored.keys() {
        let outcomes = (ledger.acked.contains_key(id), dead.contains(id));
        assert!(outcomes != (false, false), "message {id} was neither acked nor dead-lettered (seed {seed})");
        assert!(outcomes != (true, true), "message {id} was acked and dead-lettered (seed {seed})");
    }
    let redelivered: Vec<u64> = ledger
        .deliveries
        .iter()
        .filter(|(id, pulled_at)| ledger.acked.get(id).is_some_and(|acked_at| acked_at < pulled_at))
        .map(|(id, _)| *id)
        .collect();
    assert!(
        redelivered.is_empty(),
        "acked messages delivered again: {:?} (seed {seed})",
        &redelivered[..5.min(redelivered.len())]
    );
    let admin_ledger = std::mem::take(&mut *admin_ledger.lock().expect("lock"));
    check_admin(&admin, &admin_ledger, seed).await?;
    peak_rss = peak_rss.max(broker.peak_rss_bytes()?);
    eprintln!(
        "chaos summary: seed {seed}, {kills} SIGKILLs survived, {} produces acked, {} messages checked, {} deliveries, {} consumer acks, {} dead-lettered, broker peak RSS {} MiB, 0 lost",
        ledger.produced.len(),
        stored.len(),
        ledger.deliveries.len(),
        ledger.acked.len(),
        dead.len(),
        peak_rss >> 20
    );
    Ok(())
}

/// Produces self-verifying payloads until told to stop (or `cap`), recording acked positions.
async fn produce(producer: Producer, w: u64, lens: Vec<usize>, cap: u64, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut inflight = tokio::task::JoinSet::new();
    let mut n = 0u64;
    // Paced (about 5,000 messages/s each) so the load spans every kill, however many there are.
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    while !shared.stop_producing.load(Ordering::SeqCst) && n < cap {
        if n.is_multiple_of(50) {
            pace.tick().await;
        }
        let id = w * 1_000_000_000 + n;
        let value = payload(id, lens[(n % 64) as usize]);
        let ack = producer.enqueue(TOPIC, None, pb::Message { key: None, value, headers: vec![] }).await?;
        let shared = shared.clone();
        inflight.spawn(async move {
            if let Ok(d) = ack.await {
                shared.ledger.lock().expect("lock").produced.insert(id, (d.partition, d.offset));
            }
        });
        while inflight.len() > 128 {
            inflight.join_next().await;
        }
        n += 1;
    }
    while inflight.join_next().await.is_some() {}
    Ok(())
}

/// Pulls and acks, nacking poison always and other messages now and then on their first attempt.
async fn consume(consumer: Consumer, seed: u64, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !shared.stop_all.load(Ordering::SeqCst) {
        let pulled_at = shared.tick();
        let Ok(batch) = consumer.pull(200, Duration::from_millis(300)).await else {
            tokio::time::sleep(Duration::from_millis(30)).await;
            continue;
        };
        let (mut ack, mut nack, mut ack_ids) = (Vec::new(), Vec::new(), Vec::new());
        {
            let mut l = shared.ledger.lock().expect("lock");
            for m in batch {
                let Some(id) = id_of(&m.record.value) else {
                    l.corrupt.push(u64::MAX);
                    continue;
                };
                if !is_intact(&m.record.value) {
                    l.corrupt.push(id);
                }
                l.deliveries.push((id, pulled_at));
                if is_poison(id) || (m.attempt == 1 && rng.random_bool(0.05)) {
                    nack.push(m.ack_id);
                } else {
                    ack.push(m.ack_id);
                    ack_ids.push(id);
                }
            }
        }
        if !nack.is_empty() {
            let _ = consumer.nack(nack, None, "chaos says no").await;
        }
        if ack.is_empty() {
            continue;
        }
        if let Ok(failures) = consumer.ack(ack.clone()).await {
            let acked_at = shared.tick();
            let failed: HashSet<String> = failures.into_iter().map(|f| f.ack_id).collect();
            let mut l = shared.ledger.lock().expect("lock");
            for (ack_id, id) in ack.iter().zip(ack_ids) {
                if !failed.contains(ack_id) {
                    let at = l.acked.entry(id).or_insert(acked_at);
                    *at = (*at).min(acked_at);
                }
            }
        }
    }
    Ok(())
}

/// Creates and deletes side topics (with groups on some) while the broker is being killed.
async fn churn_admin(
    admin: Admin,
    seed: u64,
    ledger: Arc<Mutex<AdminLedger>>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.rotate_left(17));
    let mut made = 0u32;
    while !shared.stop_producing.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
        let existing: Vec<String> =
            ledger.lock().expect("lock").iter().filter(|(_, v)| **v == Some(true)).map(|(k, _)| k.clone()).collect();
        if existing.is_empty() || rng.random_bool(0.6) {
            let name = format!("side-{made}");
            made += 1;
            let outcome = match admin.create_topic(&name, rng.random_range(1..4), pb::TopicConfig::default()).await {
                Ok(_) => Some(true),
                Err(_) => None,
            };
            if outcome == Some(true) && rng.random_bool(0.5) {
                let _ = admin.create_group(&format!("{name}-readers"), group_config(&name, 5000)).await;
            }
            ledger.lock().expect("lock").insert(name, outcome);
        } else {
            let name = &existing[rng.random_range(0..existing.len())];
            let outcome = match admin.delete_topic(name).await {
                Ok(()) => Some(false),
                Err(_) => None,
            };
            ledger.lock().expect("lock").insert(name.clone(), outcome);
        }
    }
    Ok(())
}

/// The log: dense offsets, intact values, each id once, every acked produce where its ack said.
async fn check_log(broker: &TestBroker, ledger: &Ledger, seed: u64) -> anyhow::Result<HashMap<u64, (u32, u64)>> {
    let mut stored = HashMap::new();
    for p in 0..PARTITIONS {
        for (i, r) in read_all(broker.channel(), TOPIC, p).await?.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "partition {p}: offsets are dense (seed {seed})");
            assert!(is_intact(&r.value), "partition {p} offset {}: bytes intact (seed {seed})", r.offset);
            let id = id_of(&r.value).expect("intact values carry an id");
            assert!(stored.insert(id, (p, r.offset)).is_none(), "id {id} stored twice (seed {seed})");
        }
    }
    assert!(ledger.produced.len() > 100, "too few produces acked ({}) to prove anything", ledger.produced.len());
    for (id, at) in &ledger.produced {
        assert_eq!(stored.get(id), Some(at), "acked produce {id} missing or moved (seed {seed})");
    }
    Ok(stored)
}

fn header<'a>(r: &'a pb::Record, key: &str) -> Option<&'a str> {
    r.headers.iter().find(|h| h.key == key).and_then(|h| std::str::from_utf8(&h.value).ok())
}

/// The dead-letter topic: every poison message, only exhausted ones, each naming its true source.
async fn check_dead_letters(
    broker: &TestBroker,
    stored: &HashMap<u64, (u32, u64)>,
    seed: u64,
) -> anyhow::Result<HashSet<u64>> {
    let mut dead = HashSet::new();
    let mut duplicates = 0;
    for p in 0..PARTITIONS {
        for r in read_all(broker.channel(), DLQ, p).await? {
            assert!(is_intact(&r.value), "dead letter at {p}/{} is intact (seed {seed})", r.offset);
            let id = id_of(&r.value).expect("intact values carry an id");
            let source = stored.get(&id).copied();
            let named = header(&r, "sluice-dlq-source-partition")
                .and_then(|p| p.parse().ok())
                .zip(header(&r, "sluice-dlq-source-offset").and_then(|o| o.parse().ok()));
            assert_eq!(named, source, "dead letter {id} names its source (seed {seed})");
            assert_eq!(header(&r, "sluice-dlq-source-topic"), Some(TOPIC));
            let attempts: u32 = header(&r, "sluice-dlq-attempts").and_then(|a| a.parse().ok()).unwrap_or(0);
            assert!(attempts >= MAX_ATTEMPTS, "dead letter {id} used only {attempts} attempts (seed {seed})");
            if !dead.insert(id) {
                duplicates += 1;
            }
        }
    }
    let poison: HashSet<u64> = stored.keys().copied().filter(|id| is_poison(*id)).collect();
    let missing: Vec<&u64> = poison.difference(&dead).collect();
    assert!(missing.is_empty(), "poison messages not dead-lettered: {missing:?} (seed {seed})");
    assert_eq!(
        duplicates, 0,
        "{duplicates} messages were dead-lettered twice: a crash between the dead-letter append and the source ack \
         must find the copy, not write another (seed {seed})"
    );
    let healthy = dead.len() - poison.len();
    eprintln!(
        "{} dead letters: {} poison, {healthy} healthy ones that lost all attempts to crashes or nacks, {duplicates} duplicates",
        dead.len(),
        poison.len()
    );
    Ok(dead)
}

/// Admin changes that returned OK are in force; ones cut off by a crash may have gone either way.
async fn check_admin(admin: &Admin, ledger: &AdminLedger, seed: u64) -> anyhow::Result<()> {
    let topics: HashSet<String> = admin.list_topics().await?.into_iter().map(|t| t.name).collect();
    for (name, outcome) in ledger {
        if let Some(exists) = outcome {
            assert_eq!(topics.contains(name), *exists, "topic {name} should exist: {exists} (seed {seed})");
        }
    }
    eprintln!("{} admin changes checked", ledger.values().filter(|o| o.is_some()).count());
    Ok(())
}
