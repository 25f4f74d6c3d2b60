//! `sluice bench produce|consume|e2e`: load a live broker and report msgs/s,
//! MB/s, latency percentiles (HDR histogram), errors and the client's own CPU
//! time. Every run is bounded by a message count and a time limit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::channel;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use sluice_client::proto as pb;
use sluice_client::proto::consumer_client::ConsumerClient;
use sluice_client::proto::producer_client::ProducerClient;
use sluice_client::{Admin, Producer, ProducerConfig};
use tokio::sync::mpsc;

use super::output::{print, Format};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Produce as fast as allowed and measure publish-to-ack latency.
    Produce(ProduceArgs),
    /// Consume and ack through a shared group (Subscribe streams).
    Consume(ConsumeArgs),
    /// Produce at a fixed rate and measure publish-to-delivery latency.
    E2e(E2eArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The client's batching `Producer` (batch size and linger).
    Batched,
    /// One message per unary `Produce` call (the ghz-style workload).
    Unary,
    /// `ProduceStream` with `--batch` messages per request.
    Stream,
}

#[derive(Args, Clone)]
pub struct Common {
    /// Topic (created with --partitions if absent).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions of a created topic.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// `always` (fsync before ack) or `interval`, for a created topic.
    #[arg(long, default_value = "always")]
    durability: String,
    /// Stop after this long even if not done.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
}

#[derive(Args, Clone)]
pub struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    /// Messages in total.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Concurrent producers, one connection each.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    #[arg(long, value_enum, default_value = "batched")]
    mode: Mode,
    /// Messages per request (batched: most per batch; stream: per request).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// How long a batch waits to fill, ms (batched).
    #[arg(long, default_value_t = 2)]
    linger_ms: u64,
    /// Requests (unary, stream) or messages (batched) in flight per producer.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
}

#[derive(Args, Clone)]
pub struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    /// Messages to consume (produced first if the topic holds fewer).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Concurrent consumers (Subscribe streams).
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Credits per stream (messages in flight).
    #[arg(long, default_value_t = 2000)]
    credits: u32,
}

#[derive(Args, Clone)]
pub struct E2eArgs {
    #[command(flatten)]
    common: Common,
    /// Messages per second.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// How long to produce.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Producer linger, ms; 0 sends what has accumulated as soon as the previous batch is acked.
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid")
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// What one workload achieved.
struct Outcome {
    count: u64,
    bytes: u64,
    errors: u64,
    elapsed: Duration,
    cpu: f64,
}

fn report(format: Format, name: &str, o: Outcome, lat: &[(&str, &Histogram<u64>)]) -> std::io::Result<()> {
    let Outcome { count, bytes, errors, elapsed, cpu } = o;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let pct = |h: &Histogram<u64>| {
        json!({
            "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0, "p90_ms": h.value_at_quantile(0.9) as f64 / 1000.0,
            "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0, "p999_ms": h.value_at_quantile(0.999) as f64 / 1000.0,
            "max_ms": h.max() as f64 / 1000.0,
        })
    };
    let latencies: serde_json::Map<String, serde_json::Value> =
        lat.iter().map(|(n, h)| (n.to_string(), pct(h))).collect();
    let v = json!({
        "workload": name, "messages": count, "errors": errors, "seconds": secs,
        "msgs_per_sec": count as f64 / secs, "mb_per_sec": bytes as f64 / secs / 1e6,
        "client_cpu_seconds": cpu, "latency": latencies,
    });
    if format == Format::Json {
        return print(v);
    }
    outln!(
        "{name}: {count} msgs in {secs:.2}s = {:.0} msg/s, {:.1} MB/s, errors {errors}, client CPU {cpu:.2}s",
        count as f64 / secs,
        bytes as f64 / secs / 1e6
    )?;
    for (n, h) in lat {
        outln!(
            "  {n}: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.9) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.value_at_quantile(0.999) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        )?;
    }
    Ok(())
}

async fn ensure_topic(addr: &str, c: &Common) -> anyhow::Result<u32> {
    let admin = Admin::new(channel(addr)?);
    if let Ok(d) = admin.describe_topic(&c.topic).await {
        return Ok(d.topic.map_or(1, |t| t.partitions));
    }
    let durability = if c.durability == "interval" { pb::Durability::Interval } else { pb::Durability::Always };
    let config = pb::TopicConfig { durability: durability as i32, ..Default::default() };
    Ok(admin.create_topic(&c.topic, c.partitions, config).await?.partitions)
}

pub async fn run(addr: &str, cmd: BenchCommand, format: Format) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Produce(a) => {
            let partitions = ensure_topic(addr, &a.common).await?;
            let cpu = cpu_seconds();
            let started = Instant::now();
            let (count, errors, h) = produce(addr, &a, partitions, None).await?;
            let bytes = count * a.common.size as u64;
            let name = match a.mode {
                Mode::Batched => "produce",
                Mode::Unary => "produce-unary",
                Mode::Stream => "produce-stream",
            };
            let outcome = Outcome { count, bytes, errors, elapsed: started.elapsed(), cpu: cpu_seconds() - cpu };
            report(format, name, outcome, &[("publish_to_ack", &h)])?;
        }
        BenchCommand::Consume(a) => consume_bench(addr, a, format).await?,
        BenchCommand::E2e(a) => e2e(addr, a, format).await?,
    }
    Ok(())
}

/// Produces `a.messages` split over `a.producers`; `rate` paces each producer (msgs/s).
async fn produce(
    addr: &str,
    a: &ProduceArgs,
    partitions: u32,
    rate: Option<u64>,
) -> anyhow::Result<(u64, u64, Histogram<u64>)> {
    let deadline = Instant::now() + Duration::from_secs(a.common.max_seconds);
    let mut tasks = Vec::new();
    for w in 0..a.producers {
        let (a, addr) = (a.clone(), addr.to_owned());
        let share = a.messages / a.producers as u64 + u64::from((w as u64) < a.messages % a.producers as u64);
        tasks.push(tokio::spawn(async move { producer_task(&addr, &a, w, share, partitions, rate, deadline).await }));
    }
    let (mut count, mut errors, mut h) = (0, 0, histogram());
    for t in tasks {
        let (c, e, th) = t.await??;
        count += c;
        errors += e;
        h.add(th).context("merging histograms")?;
    }
    Ok((count, errors, h))
}

fn payload(size: usize) -> bytes::Bytes {
    bytes::Bytes::from(vec![b'x'; size])
}

/// Stamps a payload with its send time so a consumer can measure delivery latency.
fn stamped(size: usize) -> bytes::Bytes {
    let mut v = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
        .to_be_bytes()
        .to_vec();
    v.resize(size.max(8), b'x');
    bytes::Bytes::from(v)
}

async fn producer_task(
    addr: &str,
    a: &ProduceArgs,
    worker: usize,
    share: u64,
    partitions: u32,
    rate: Option<u64>,
    deadline: Instant,
) -> anyhow::Result<(u64, u64, Histogram<u64>)> {
    let ch = channel(addr)?;
    let mut h = histogram();
    let (mut ok, mut errors) = (0u64, 0u64);
    let pace = rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1) as f64));
    let started = Instant::now();
    let make = || if rate.is_some() { stamped(a.common.size) } else { payload(a.common.size) };
    let wait_pace = |i: u64| async move {
        if let Some(p) = pace {
            let due = started + p.mul_f64(i as f64);
            tokio::time::sleep_until(due.into()).await;
        }
    };
    match a.mode {
        Mode::Batched => {
            let config = ProducerConfig {
                max_batch_messages: a.batch,
                linger: Duration::from_millis(a.linger_ms),
                ..ProducerConfig::default()
            };
            let producer = Producer::new(ch, config);
            // Ack futures polled in place (no task per message keeps the load generator's CPU
            // for the broker) and whenever the loop waits, so each latency is taken as it lands.
            let mut window = futures::stream::FuturesUnordered::new();
            let fixed = payload(a.common.size);
            for i in 0..share {
                if Instant::now() > deadline {
                    break;
                }
                if let Some(p) = pace {
                    let due = tokio::time::Instant::from_std(started + p.mul_f64(i as f64));
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(due) => break,
                            Some(r) = window.next(), if !window.is_empty() => tally(Some(r), &mut h, &mut ok, &mut errors),
                        }
                    }
                }
                let sent = Instant::now();
                let value = if rate.is_some() { stamped(a.common.size) } else { fixed.clone() };
                let ack =
                    producer.enqueue(&a.common.topic, None, pb::Message { key: None, value, headers: vec![] }).await?;
                window.push(async move { ack.await.map(|_| sent.elapsed()) });
                while window.len() > a.in_flight.max(1) {
                    tally(window.next().await, &mut h, &mut ok, &mut errors);
                }
            }
            while let Some(r) = window.next().await {
                tally(Some(r), &mut h, &mut ok, &mut errors);
            }
        }
        Mode::Unary => {
            let client = ProducerClient::new(ch);
            let mut window = std::collections::VecDeque::new();
            for i in 0..share {
                if Instant::now() > deadline {
                    break;
                }
                wait_pace(i).await;
                let req = pb::ProduceRequest {
                    topic: a.common.topic.clone(),
                    partition: Some(((worker as u64 + i) % u64::from(partitions)) as u32),
                    messages: vec![pb::Message { key: None, value: make(), headers: vec![] }],
                    ..Default::default()
                };
                let mut c = client.clone();
                let sent = Instant::now();
                window.push_back(tokio::spawn(async move {
                    c.produce(req).await.map(|_| sent.elapsed()).map_err(sluice_client::Error::from)
                }));
                while window.len() >= a.in_flight.max(1) {
                    record(window.pop_front(), &mut h, &mut ok, &mut errors).await;
                }
            }
            while let Some(w) = window.pop_front() {
                record(Some(w), &mut h, &mut ok, &mut errors).await;
            }
        }
        Mode::Stream => {
            let (tx, rx) = mpsc::channel::<pb::ProduceRequest>(a.in_flight.max(1));
            let mut responses = ProducerClient::new(ch)
                .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            let sent_at: Arc<Mutex<std::collections::HashMap<u64, (Instant, u64)>>> = Arc::default();
            let batch = a.batch.max(1) as u64;
            let requests = share.div_ceil(batch);
            let sender = {
                let (sent_at, a) = (sent_at.clone(), a.clone());
                tokio::spawn(async move {
                    for r in 0..requests {
                        let n = batch.min(share - r * batch);
                        let messages = (0..n)
                            .map(|_| pb::Message { key: None, value: payload(a.common.size), headers: vec![] })
                            .collect::<Vec<_>>();
                        sent_at.lock().expect("lock").insert(r, (Instant::now(), n));
                        let req = pb::ProduceRequest {
                            topic: a.common.topic.clone(),
                            partition: Some(((worker as u64 + r) % u64::from(partitions)) as u32),
                            messages,
                            request_id: r,
                            ..Default::default()
                        };
                        if tx.send(req).await.is_err() || Instant::now() > deadline {
                            break;
                        }
                    }
                })
            };
            let mut done = 0;
            while done < requests {
                let Ok(Some(r)) =
                    tokio::time::timeout_at(deadline.into(), responses.message()).await.unwrap_or(Ok(None))
                else {
                    break;
                };
                done += 1;
                let Some((t, n)) = sent_at.lock().expect("lock").remove(&r.request_id) else { continue };
                if r.error_code == 0 {
                    ok += n;
                    let us = t.elapsed().as_micros() as u64;
                    let _ = h.record_n(us.max(1), n);
                } else {
                    errors += n;
                }
            }
            sender.abort();
        }
    }
    Ok((ok, errors, h))
}

async fn record(
    w: Option<tokio::task::JoinHandle<Result<Duration, sluice_client::Error>>>,
    h: &mut Histogram<u64>,
    ok: &mut u64,
    errors: &mut u64,
) {
    if let Some(j) = w {
        let r = j.await.unwrap_or(Err(sluice_client::Error::Closed));
        tally(Some(r), h, ok, errors);
    }
}

/// Counts one acknowledgement (or failure) and records its latency.
fn tally(r: Option<Result<Duration, sluice_client::Error>>, h: &mut Histogram<u64>, ok: &mut u64, errors: &mut u64) {
    match r {
        Some(Ok(d)) => {
            *ok += 1;
            let _ = h.record((d.as_micros() as u64).max(1));
        }
        Some(Err(_)) => *errors += 1,
        None => {}
    }
}

/// Most `not_leader` redirects a benchmark stream follows before it starts counting.
const MAX_REDIRECTS: usize = 3;

/// Runs `consumers` Subscribe streams on a fresh group until `total` messages are
/// acked; with `stamped`, records publish-to-delivery latency.
async fn subscribe_all(
    addr: &str,
    group: &str,
    consumers: usize,
    credits: u32,
    total: u64,
    stamped: bool,
    deadline: Instant,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..consumers {
        let (addr, group, counted) = (addr.to_owned(), group.to_owned(), counted.clone());
        tasks.push(tokio::spawn(async move {
            use pb::subscribe_request::Kind;
            let mut h = histogram();
            let (tx, rx) = mpsc::channel(64);
            let start = pb::SubscribeStart {
                group: group.clone(),
                consumer_id: format!("bench-{c}"),
                initial_credits: credits,
            };
            tx.send(pb::SubscribeRequest { kind: Some(Kind::Start(start.clone())) }).await?;
            let mut inbound = ConsumerClient::new(channel(&addr)?)
                .max_decoding_message_size(usize::MAX)
                .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            // In a cluster the group is served where its shard is led: follow `not_leader`.
            let mut tx = tx;
            let mut first = None;
            for _ in 0..MAX_REDIRECTS {
                let hint = match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
                    Ok(Err(status)) => sluice_client::Error::from(status).leader_hint(),
                    Ok(Ok(r)) => {
                        first = r;
                        None
                    }
                    Err(_) => None,
                };
                let Some(hint) = hint else { break };
                let (next_tx, next_rx) = mpsc::channel(64);
                next_tx.send(pb::SubscribeRequest { kind: Some(Kind::Start(start.clone())) }).await?;
                inbound = ConsumerClient::new(channel(&hint.endpoint)?)
                    .max_decoding_message_size(usize::MAX)
                    .subscribe(tokio_stream::wrappers::ReceiverStream::new(next_rx))
                    .await?
                    .into_inner();
                tx = next_tx;
            }
            while counted.load(std::sync::atomic::Ordering::Relaxed) < total && Instant::now() < deadline {
                let r = match first.take() {
                    Some(r) => r,
                    None => {
                        let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_millis(500), inbound.message()).await
                        else {
                            continue;
                        };
                        r
                    }
                };
                if r.messages.is_empty() {
                    continue;
                }
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                if stamped {
                    for m in &r.messages {
                        let v = m.record.as_ref().map(|r| &r.value[..]).unwrap_or(&[]);
                        if v.len() >= 8 {
                            let sent = u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]));
                            let _ = h.record(now_us.saturating_sub(sent).max(1));
                        }
                    }
                }
                let n = r.messages.len() as u32;
                counted.fetch_add(u64::from(n), std::sync::atomic::Ordering::Relaxed);
                let ids = r.messages.into_iter().map(|m| m.ack_id).collect();
                tx.send(pb::SubscribeRequest {
                    kind: Some(Kind::Ack(pb::AckRequest { group: String::new(), ack_ids: ids })),
                })
                .await?;
                tx.send(pb::SubscribeRequest { kind: Some(Kind::Credits(n)) }).await?;
            }
            anyhow::Ok(h)
        }));
    }
    let mut h = histogram();
    for t in tasks {
        h.add(t.await??).context("merging histograms")?;
    }
    Ok((counted.load(std::sync::atomic::Ordering::Relaxed).min(total), h))
}

async fn consume_bench(addr: &str, a: ConsumeArgs, format: Format) -> anyhow::Result<()> {
    let partitions = ensure_topic(addr, &a.common).await?;
    let admin = Admin::new(channel(addr)?);
    let stored: u64 = admin
        .describe_topic(&a.common.topic)
        .await?
        .partitions
        .iter()
        .map(|p| p.latest_offset - p.earliest_offset)
        .sum();
    if stored < a.messages {
        let fill = ProduceArgs {
            common: a.common.clone(),
            messages: a.messages - stored,
            producers: 4,
            mode: Mode::Batched,
            batch: 1000,
            linger_ms: 2,
            in_flight: 10_000,
        };
        produce(addr, &fill, partitions, None).await?;
    }
    let group = format!("bench-{:08x}", rand::random::<u32>());
    admin
        .create_group(
            &group,
            pb::GroupConfig { topic: a.common.topic.clone(), ack_deadline_ms: 60_000, ..Default::default() },
        )
        .await?;
    let cpu = cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.common.max_seconds);
    let (count, _) = subscribe_all(addr, &group, a.consumers, a.credits, a.messages, false, deadline).await?;
    let elapsed = started.elapsed();
    admin.delete_group(&group).await?;
    let outcome = Outcome {
        count,
        bytes: count * a.common.size as u64,
        errors: a.messages.saturating_sub(count),
        elapsed,
        cpu: cpu_seconds() - cpu,
    };
    report(format, "consume-ack", outcome, &[])?;
    Ok(())
}

async fn e2e(addr: &str, a: E2eArgs, format: Format) -> anyhow::Result<()> {
    let partitions = ensure_topic(addr, &a.common).await?;
    let admin = Admin::new(channel(addr)?);
    let group = format!("bench-e2e-{:08x}", rand::random::<u32>());
    let start = pb::StartPosition::Latest as i32;
    admin
        .create_group(
            &group,
            pb::GroupConfig { topic: a.common.topic.clone(), ack_deadline_ms: 60_000, start, ..Default::default() },
        )
        .await?;
    let total = a.rate * a.seconds;
    let deadline = Instant::now() + Duration::from_secs(a.seconds + 30);
    let (addr2, group2) = (addr.to_owned(), group.clone());
    let consumer = tokio::spawn(async move { subscribe_all(&addr2, &group2, 2, 5000, total, true, deadline).await });
    let cpu = cpu_seconds();
    let started = Instant::now();
    let args = ProduceArgs {
        common: a.common.clone(),
        messages: total,
        producers: 1,
        mode: Mode::Batched,
        batch: 1000,
        linger_ms: a.linger_ms,
        in_flight: 100_000,
    };
    let (count, errors, publish) = produce(addr, &args, partitions, Some(a.rate)).await?;
    let (delivered, delivery) = consumer.await??;
    let elapsed = started.elapsed();
    admin.delete_group(&group).await?;
    let outcome = Outcome { count, bytes: count * a.common.size as u64, errors, elapsed, cpu: cpu_seconds() - cpu };
    let name = format!("e2e at {} msg/s (delivered {delivered})", a.rate);
    report(format, &name, outcome, &[("publish_to_ack", &publish), ("publish_to_delivery", &delivery)])?;
    Ok(())
}
