//! SIGKILL the broker at random moments while producers write with the
//! durable default; afterwards every acknowledged message is stored exactly
//! once, at its acknowledged offset, intact, with dense offsets.
//! The seed is printed; set SLUICE_CRASH_SEED to replay, SLUICE_CRASH_ROUNDS for more kills.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use sluice_client::proto as pb;
use sluice_client::{Admin, Producer, ProducerConfig, RetryConfig};
use sluice_tests::payload::{id_of, payload};
use sluice_tests::{read_all, TestBroker};

const PARTITIONS: u32 = 4;

/// (partition, offset) of an acknowledged message.
type Position = (u32, u64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_repeated_sigkill_exactly_once() -> anyhow::Result<()> {
    let seed: u64 = std::env::var("SLUICE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let rounds: usize = std::env::var("SLUICE_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    eprintln!("crash test seed {seed} ({rounds} kills); replay with SLUICE_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("crash", PARTITIONS, pb::TopicConfig::default()).await?;
    let config = ProducerConfig {
        retry: RetryConfig { initial: Duration::from_millis(20), max: Duration::from_millis(300), max_retries: 200 },
        request_timeout: Duration::from_secs(5),
        ..ProducerConfig::default()
    };
    let acked: Arc<Mutex<HashMap<u64, Position>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for w in 0..4u64 {
        let producer = Producer::new(broker.channel(), config.clone());
        let (acked, stop) = (acked.clone(), stop.clone());
        let lens: Vec<usize> = (0..64).map(|_| rng.random_range(8..2048)).collect();
        producers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut inflight = Window::default();
            while !stop.load(Ordering::Relaxed) && n < 200_000 {
                let id = w * 1_000_000 + n;
                let len = lens[(n % 64) as usize];
                let ack = producer
                    .enqueue("crash", None, pb::Message { key: None, value: payload(id, len), headers: vec![] })
                    .await?;
                let acked = acked.clone();
                inflight.push(tokio::spawn(async move {
                    if let Ok(d) = ack.await {
                        acked.lock().expect("lock").insert(id, (d.partition, d.offset));
                    }
                }));
                inflight.trim(256).await;
                n += 1;
            }
            inflight.trim(0).await;
            anyhow::Ok(n)
        }));
    }
    for round in 0..rounds {
        let before = acked.lock().expect("lock").len();
        let wait = Duration::from_millis(rng.random_range(200..1200));
        tokio::time::sleep(wait).await;
        broker.kill9().await?;
        eprintln!("round {round}: killed after {wait:?}, {before} acked before this round");
        broker.start_again().await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for p in producers {
        sent += p.await??;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 100, "too few acks ({}) to prove anything", acked.len());

    let mut seen: HashMap<u64, (u32, u64)> = HashMap::new();
    for p in 0..PARTITIONS {
        let records = read_all(broker.channel(), "crash", p).await?;
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "partition {p}: offsets are dense");
            let id = id_of(&r.value).expect("payload starts with its id");
            assert_eq!(r.value, payload(id, r.value.len()), "bytes intact for id {id}");
            assert!(seen.insert(id, (p, r.offset)).is_none(), "id {id} stored twice (seed {seed})");
        }
    }
    for (id, position) in &acked {
        assert_eq!(seen.get(id), Some(position), "acked id {id} missing or moved (seed {seed})");
    }
    eprintln!("sent {sent}, acked {}, stored {}", acked.len(), seen.len());
    Ok(())
}

/// A bounded set of in-flight ack waiters.
#[derive(Default)]
struct Window(VecDeque<tokio::task::JoinHandle<()>>);

impl Window {
    fn push(&mut self, h: tokio::task::JoinHandle<()>) {
        self.0.push_back(h);
    }

    /// Waits for the oldest until at most `keep` remain.
    async fn trim(&mut self, keep: usize) {
        while self.0.len() > keep {
            if let Some(h) = self.0.pop_front() {
                let _ = h.await;
            }
        }
    }
}
