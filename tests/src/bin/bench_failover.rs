//! `make bench-failover`: how long a partition is unwritable when its leader
//! dies. Three real brokers on loopback (the `TestCluster` of the tests, with
//! its proxies healthy); each round SIGKILLs the broker leading one
//! partition and measures from the kill to the first produce to that
//! partition acknowledged by its new leader (a client that follows
//! `not_leader` hints and tries the surviving brokers in turn every 10 ms),
//! then restarts the broker and lets leaders spread back. Prints every
//! sample and the distribution. A benchmark, not a test: it asserts nothing.
//!
//! `bench-failover [--kills N] [--shard-election-timeout-ms MS]` (default 20
//! kills, the broker's default 400 ms); `--smoke`: 2 kills.

use std::time::{Duration, Instant};

use sluice_client::proto as pb;
use sluice_client::{Admin, ClusterInfo};
use sluice_tests::cluster::produce_to_leader;
use sluice_tests::TestCluster;

const TOPIC: &str = "failover";
const PARTITIONS: u32 = 3;

/// One produce to `partition` at `addr`, asking for a redirect instead of
/// forwarding: `Ok(None)` when `addr` stored it, `Ok(Some(leader))` when it
/// named the leader, `Err` otherwise (no leader yet, or no answer).
async fn produce_at(addr: &str, partition: u32) -> Result<Option<String>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .connect_timeout(Duration::from_millis(200))
        .timeout(Duration::from_millis(500))
        .connect_lazy();
    let request = pb::ProduceRequest {
        topic: TOPIC.into(),
        partition: Some(partition),
        messages: vec![sluice_tests::message("after the kill")],
        ..Default::default()
    };
    let mut call = tonic::Request::new(request);
    call.metadata_mut().insert("sluice-redirect", tonic::metadata::MetadataValue::from_static("1"));
    match pb::producer_client::ProducerClient::new(channel).produce(call).await {
        Ok(_) => Ok(None),
        Err(status) => {
            let hint = status.metadata().get("sluice-leader").and_then(|v| v.to_str().ok()).map(str::to_owned);
            match hint {
                Some(leader) if status.code() == tonic::Code::Unavailable => Ok(Some(leader)),
                _ => Err(status),
            }
        }
    }
}

/// Produces to `partition` through the brokers at `alive` (following a hint
/// first) until one stores it; returns the time it took and who stored it.
async fn first_write(alive: &[String], partition: u32, started: Instant) -> anyhow::Result<(Duration, String)> {
    let deadline = started + Duration::from_secs(60);
    let mut next = 0;
    let mut hinted: Option<String> = None;
    while Instant::now() < deadline {
        let at = hinted.take().filter(|h| alive.contains(h)).unwrap_or_else(|| {
            next = (next + 1) % alive.len();
            alive[next].clone()
        });
        match produce_at(&at, partition).await {
            Ok(None) => return Ok((started.elapsed(), at)),
            Ok(Some(leader)) if leader != at => hinted = Some(leader),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    anyhow::bail!("partition {partition} took no write for 60 s after its leader was killed")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut kills = 20;
    if args.iter().any(|a| a == "--smoke") {
        kills = 2;
    }
    if let Some(i) = args.iter().position(|a| a == "--kills") {
        kills = args.get(i + 1).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow::anyhow!("--kills N"))?;
    }
    let timeout = args
        .iter()
        .position(|a| a == "--shard-election-timeout-ms")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "400".into());
    println!("brokers run with --shard-election-timeout-ms {timeout}");
    let mut cluster = TestCluster::start_with(3, &["--shard-election-timeout-ms", &timeout]).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    cluster.leaders_spread(1).await?;
    Admin::new(cluster.broker(1).channel()).create_topic(TOPIC, PARTITIONS, pb::TopicConfig::default()).await?;
    for p in 0..PARTITIONS {
        produce_to_leader(&cluster.broker(1).addr, TOPIC, p, &["warm-up".into()]).await?;
    }
    let mut samples = Vec::new();
    let mut unsettled = 0;
    for round in 1..=kills {
        let partition = round % PARTITIONS;
        // Leaders back where they spread to (the restarted broker caught up).
        if let Err(e) = cluster.leaders_spread(1 + round as u64 % 3).await {
            println!("kill {round}: leaders did not spread back first ({e:#}); the kill goes ahead");
            unsettled += 1;
        }
        let mut leader = None;
        for id in cluster.ids() {
            if let Ok(leaders) = ClusterInfo::new(cluster.broker(id).channel()).partition_leaders(&[TOPIC]).await {
                let endpoint = leaders.iter().find(|l| l.partition == partition).map(|l| l.leader_endpoint.clone());
                leader = cluster.ids().into_iter().find(|b| Some(&cluster.broker(*b).addr) == endpoint.as_ref());
                break;
            }
        }
        let Some(victim) = leader else { anyhow::bail!("no leader known for partition {partition}") };
        let alive: Vec<String> =
            cluster.ids().into_iter().filter(|b| *b != victim).map(|b| cluster.broker(b).addr.clone()).collect();
        let started = Instant::now();
        cluster.broker_mut(victim).kill9().await?;
        let (took, by) = first_write(&alive, partition, started).await?;
        println!(
            "kill {round}: partition {partition} led by broker {victim}: writable again after {} ms (at {by})",
            took.as_millis()
        );
        samples.push(took);
        cluster.broker_mut(victim).start_again().await?;
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "failover over {} kills of a partition leader (kill -9 to the first acknowledged produce at the new \
         leader): min {:.0} ms, p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        samples.len(),
        ms(samples[0]),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 90.0)),
        ms(percentile(&samples, 99.0)),
        ms(samples[samples.len() - 1]),
    );
    if unsettled > 0 {
        println!("{unsettled} of the kills came before the shard leaders had spread back");
    }
    Ok(())
}
