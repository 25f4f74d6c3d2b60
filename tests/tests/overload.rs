//! Overload: the broker pushes back instead of growing memory, and a
//! well-behaved client is still served. Each case runs its own broker and
//! prints its peak RSS (VmHWM) as `overload <case>: peak RSS <n> MiB`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use sluice_client::proto as pb;
use sluice_client::proto::consumer_client::ConsumerClient;
use sluice_client::proto::producer_client::ProducerClient;
use sluice_client::{Admin, Consumer, ConsumerConfig, Producer, ProducerConfig};
use sluice_tests::{create_group, eventually, group_config, message, TestBroker};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

const MIB: u64 = 1 << 20;

fn report(case: &str, broker: &TestBroker) -> anyhow::Result<u64> {
    let peak = broker.peak_rss_bytes()?;
    eprintln!("overload {case}: peak RSS {} MiB", peak / MIB);
    Ok(peak)
}

async fn connect(broker: &TestBroker) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(broker.url())?.connect().await?)
}

/// A well-behaved client's round trip: produce one message durably and read it back through a group.
async fn served_within(broker: &TestBroker, group: &str, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let ch = connect(broker).await?;
    let work = async {
        Producer::new(ch.clone(), ProducerConfig::default()).send("probe", message("ping")).await?;
        let consumer = Consumer::new(ch, group, ConsumerConfig::default());
        let got = consumer.pull(10, Duration::from_secs(5)).await?;
        anyhow::ensure!(!got.is_empty(), "the probe message was not delivered");
        consumer.ack(got.into_iter().map(|m| m.ack_id).collect()).await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(within, work).await.map_err(|_| anyhow::anyhow!("not served within {within:?}"))??;
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_outrunning_the_broker_get_resource_exhausted_and_lose_nothing() -> anyhow::Result<()> {
    let budget = 8 * MIB;
    let broker = TestBroker::start_with(&["--max-inflight-produce-bytes", &budget.to_string()]).await?;
    Admin::new(broker.channel()).create_topic("flood", 1, pb::TopicConfig::default()).await?;
    // 48 clients each keep one 1 MiB batch in flight, six times the budget, for a bounded time.
    let value = Bytes::from(vec![b'x'; 64 << 10]);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut clients = Vec::new();
    for _ in 0..48 {
        let (ch, value) = (connect(&broker).await?, value.clone());
        clients.push(tokio::spawn(async move {
            let mut client = ProducerClient::new(ch).max_decoding_message_size(usize::MAX);
            let (mut stored, mut refused, mut requests) = (0u64, 0u64, 0);
            while Instant::now() < deadline && requests < 1000 {
                requests += 1;
                let messages = (0..16).map(|_| message(value.clone())).collect();
                let req =
                    pb::ProduceRequest { topic: "flood".into(), partition: Some(0), messages, ..Default::default() };
                match client.produce(req).await {
                    Ok(r) => stored += r.into_inner().offsets.len() as u64,
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        anyhow::ensure!(s.message().contains("max-inflight-produce-bytes"), "actionable: {s:?}");
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(s) => anyhow::bail!("unexpected status under overload: {s:?}"),
                }
            }
            anyhow::Ok((stored, refused))
        }));
    }
    let (mut stored, mut refused) = (0, 0);
    for c in clients {
        let (s, r) = c.await??;
        stored += s;
        refused += r;
    }
    assert!(refused > 0, "six times the budget in flight must be pushed back");
    let latest = Admin::new(broker.channel()).describe_topic("flood").await?.partitions[0].latest_offset;
    assert_eq!(latest, stored, "every acknowledged message is stored, nothing else");
    let peak = report("produce flood (48 x 1 MiB in flight, 8 MiB budget)", &broker)?;
    eprintln!("{stored} messages ({} MiB) stored, {refused} requests refused", stored * 64 / 1024);
    assert!(peak < 768 * MIB, "peak RSS {} MiB", peak / MIB);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_streams_and_slow_consumers_stay_cheap() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("probe", 1, pb::TopicConfig::default()).await?;
    admin.create_topic("busy", 4, pb::TopicConfig::default()).await?;
    create_group(broker.channel(), "probe-readers", group_config("probe", 30_000)).await?;
    create_group(broker.channel(), "slow", group_config("busy", 30_000)).await?;
    let baseline = broker.peak_rss_bytes()?;

    // 100 connections x 100 streams: half idle produce streams, half subscribers granting one credit and never acking.
    let mut held = Vec::new();
    for c in 0..100 {
        let ch = connect(&broker).await?;
        let opened = join_all((0..100).map(|s| {
            let ch = ch.clone();
            async move {
                let (tx, rx) = mpsc::channel(4);
                if s % 2 == 0 {
                    let inbound = ProducerClient::new(ch).produce_stream(ReceiverStream::new(rx)).await?.into_inner();
                    anyhow::Ok((tx.clone(), None, Some(inbound)))
                } else {
                    let start = pb::SubscribeStart {
                        group: "slow".into(),
                        consumer_id: format!("slow-{c}-{s}"),
                        initial_credits: 1,
                    };
                    let (tx2, rx2) = mpsc::channel(4);
                    tx2.send(pb::SubscribeRequest { kind: Some(pb::subscribe_request::Kind::Start(start)) }).await?;
                    let inbound = ConsumerClient::new(ch).subscribe(ReceiverStream::new(rx2)).await?.into_inner();
                    drop(rx);
                    anyhow::Ok((tx, Some((tx2, inbound)), None))
                }
            }
        }))
        .await;
        for o in opened {
            held.push(o?);
        }
    }
    assert_eq!(held.len(), 10_000);
    let with_streams = report("10,000 idle streams over 100 connections", &broker)?;

    // Slow consumers hold leases, a producer pushes 100 MiB past them, and a probe is still served.
    let producer = Producer::new(broker.channel(), ProducerConfig::default());
    let value = Bytes::from(vec![b'y'; 1024]);
    let mut acks = Vec::new();
    for _ in 0..100_000 {
        acks.push(producer.enqueue("busy", None, message(value.clone())).await?);
    }
    for a in acks {
        a.await?;
    }
    let took = served_within(&broker, "probe-readers", Duration::from_secs(10)).await?;
    eprintln!("probe served in {took:?} beside 10,000 streams");
    let g = admin.describe_group("slow").await?;
    assert!(g.in_flight >= 1000, "the slow subscribers hold leases: {}", g.in_flight);
    let peak = report("10,000 streams + 5,000 slow subscribers + 100 MiB produced", &broker)?;
    eprintln!("baseline {} MiB, with streams {} MiB", baseline / MIB, with_streams / MIB);
    assert!(peak < baseline + 768 * MIB, "peak RSS {} MiB", peak / MIB);
    drop(held);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_partitions_are_served_and_recovered() -> anyhow::Result<()> {
    let mut broker = TestBroker::start_with(&["--max-partitions", "10000"]).await?;
    let admin = Admin::new(broker.channel());
    let started = Instant::now();
    admin.create_topic("wide", 10_000, pb::TopicConfig::default()).await?;
    eprintln!("created 10,000 partitions in {:?}", started.elapsed());
    create_group(broker.channel(), "all", group_config("wide", 60_000)).await?;
    let producer = Producer::new(broker.channel(), ProducerConfig::default());
    let mut acks = Vec::new();
    for p in 0..10_000u32 {
        acks.push(producer.enqueue("wide", Some(p), message(format!("p{p}"))).await?);
    }
    for a in acks {
        a.await.map_err(|e| anyhow::anyhow!("{e}; broker log:\n{}", broker.log_tail()))?;
    }
    let consumer = Consumer::new(broker.channel(), "all", ConsumerConfig::default());
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < 10_000 && Instant::now() < deadline {
        let got = consumer.pull(1000, Duration::from_secs(1)).await?;
        seen += got.len();
        consumer.ack(got.into_iter().map(|m| m.ack_id).collect()).await?;
    }
    assert_eq!(seen, 10_000, "one message from every partition");
    report("10,000 partitions, one message each, consumed", &broker)?;
    let restart = Instant::now();
    broker.restart().await?;
    eprintln!("restart with 10,000 partitions: healthy in {:?}", restart.elapsed());
    let g = eventually(Duration::from_secs(30), "the group to be described", || async {
        Ok(admin.describe_group("all").await.ok())
    })
    .await?;
    assert_eq!(g.backlog_messages, 0, "acks of all 10,000 partitions survived the restart");
    let peak = report("10,000 partitions after restart", &broker)?;
    assert!(peak < 1024 * MIB, "peak RSS {} MiB", peak / MIB);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_does_not_starve_a_good_client() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("probe", 1, pb::TopicConfig::default()).await?;
    create_group(broker.channel(), "probe-readers", group_config("probe", 30_000)).await?;
    let addr = broker.url().trim_start_matches("http://").to_owned();
    // 5,000 sockets that connect and say nothing, plus 200 that send garbage instead of HTTP/2.
    let mut sockets = Vec::new();
    for i in 0..5_200 {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        if i >= 5_000 {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\nnot http2 at all").await;
        }
        sockets.push(s);
    }
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        worst = worst.max(served_within(&broker, "probe-readers", Duration::from_secs(5)).await?);
    }
    eprintln!("good client beside 5,200 junk connections: slowest of 20 round trips {worst:?}");
    let peak = report("5,200 junk connections", &broker)?;
    assert!(peak < 512 * MIB, "peak RSS {} MiB", peak / MIB);
    drop(sockets);
    Ok(())
}
