//! `make bench-push`: push subscriptions against a running broker (issue 13).
//! Starts no broker: it takes the broker's gRPC and gateway addresses, runs
//! its own HTTP sink on 127.0.0.1 (axum; answers `200` at once and counts
//! events) and measures one of:
//!
//! - `throughput`: preloads a backlog of `--events` CloudEvents with the
//!   gRPC producer, then creates a push group on it pointing at the sink and
//!   times the drain (group created → last event at the sink): events/s and
//!   requests/s, with the broker's and this process's CPU seconds.
//! - `latency`: creates a push group on an empty topic, then publishes one
//!   event per request over HTTP (the gateway, binary mode) at `--rate`
//!   events/s for `--seconds`, each carrying its send time (the extension
//!   attribute `benchsent`, microseconds since the epoch), and reports
//!   publish → handler receipt (and publish → `202`) p50/p90/p99/p99.9/max.
//!
//! Every loop is bounded in count and in time (`--max-seconds`). A benchmark,
//! not a test: it asserts nothing beyond "every event arrived".
//!
//! ```text
//! bench-push --addr http://127.0.0.1:50051 --gateway 127.0.0.1:8080 throughput \
//!   --events 300000 --batch-size 100 --concurrency 8 [--window-ms 0] [--size 1024] [--broker-pid PID]
//! bench-push --addr ... --gateway ... latency --rate 2000 --seconds 20 [--batch-size 1] [--concurrency 8]
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::value::RawValue;
use sluice_client::proto as pb;
use sluice_client::{channel, Admin, Producer, ProducerConfig};

/// The extension attribute carrying an event's send time (µs since the epoch).
const SENT_ATTRIBUTE: &str = "benchsent";
/// The batch media type of a push with more than one event.
const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// Microseconds since the Unix epoch (0 if the clock is before it).
fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A histogram of microseconds from 1 µs to 10 minutes, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

/// User + system CPU seconds of process `pid` ("self" for this one); 0 if unreadable.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// What the sink has counted, shared with its handler.
struct Counters {
    /// Requests answered.
    requests: AtomicU64,
    /// Events in them.
    events: AtomicU64,
    /// Events whose delivery attempt was above 1 (redeliveries).
    redelivered: AtomicU64,
    /// Requests the sink could not read (answered 400).
    malformed: AtomicU64,
    /// When the first request arrived, µs after `base` (0: none yet).
    first_us: AtomicU64,
    /// When the latest request arrived (as `first_us`).
    last_us: AtomicU64,
    /// Requests being answered now.
    in_flight: AtomicU64,
    /// The most requests being answered at once.
    max_in_flight: AtomicU64,
    /// The sink's start, the origin of `first_us` and `last_us`.
    base: Instant,
    /// Publish → receipt of events carrying `benchsent`, when latency is recorded.
    latency: Option<Mutex<Histogram<u64>>>,
}

/// The bench's HTTP endpoint: answers `200` at once and counts.
struct Sink {
    /// Where it listens.
    addr: SocketAddr,
    /// What it has counted.
    counters: Arc<Counters>,
    /// The server task (aborted on drop).
    server: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Starts a sink on a free loopback port; with `latency`, it records publish → receipt.
    async fn start(latency: bool) -> anyhow::Result<Sink> {
        let counters = Arc::new(Counters {
            requests: AtomicU64::new(0),
            events: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            first_us: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            base: Instant::now(),
            latency: latency.then(|| Mutex::new(histogram())),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the sink")?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(receive).with_state(counters.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("sink stopped: {e}");
            }
        });
        Ok(Sink { addr, counters, server })
    }

    /// Events received so far.
    fn events(&self) -> u64 {
        self.counters.events.load(Ordering::Relaxed)
    }

    /// Waits until `want` events have arrived or `deadline` passes; the count then.
    async fn wait_for(&self, want: u64, deadline: Instant) -> u64 {
        while self.events() < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.events()
    }

    /// Takes the latency histogram recorded so far, leaving an empty one.
    fn take_latency(&self) -> Histogram<u64> {
        match &self.counters.latency {
            Some(h) => std::mem::replace(&mut *h.lock().unwrap_or_else(|e| e.into_inner()), histogram()),
            None => histogram(),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Lowers the in-flight gauge when a request's handler ends (or is dropped).
struct InFlight(Arc<Counters>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A header as text, if present and visible ASCII.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// One event the sink got: its delivery attempt and, if it carries one, its send time.
struct Seen {
    /// `deliveryattempt` (0 if absent).
    attempt: u64,
    /// `benchsent`, µs since the epoch.
    sent: Option<u64>,
}

/// The digits of a top-level numeric (or numeric-string) attribute in one
/// structured event's JSON text, found by name without parsing the rest: the
/// bench's own events carry no JSON object data that could hold the same key.
fn number_attribute(event: &str, name: &str) -> Option<u64> {
    let key = format!("\"{name}\":");
    let at = event.find(&key)? + key.len();
    let rest = event[at..].trim_start().trim_start_matches('"');
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Reads `deliveryattempt` and `benchsent` of one structured event.
fn seen_in(raw: &RawValue) -> Seen {
    Seen {
        attempt: number_attribute(raw.get(), "deliveryattempt").unwrap_or(0),
        sent: number_attribute(raw.get(), SENT_ATTRIBUTE),
    }
}

/// The sink's handler: counts the request's events (binary mode: one; batch: the array).
async fn receive(State(counters): State<Arc<Counters>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now = now_us();
    let at = counters.base.elapsed().as_micros() as u64 + 1;
    let current = counters.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    let _in_flight = InFlight(counters.clone());
    counters.max_in_flight.fetch_max(current, Ordering::Relaxed);
    let _ = counters.first_us.compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
    counters.last_us.fetch_max(at, Ordering::Relaxed);
    let seen: Vec<Seen> = if header(&headers, "content-type").is_some_and(|c| c.starts_with(BATCH_CONTENT_TYPE)) {
        let Ok(batch) = serde_json::from_slice::<Vec<&RawValue>>(&body) else {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            return StatusCode::BAD_REQUEST;
        };
        batch.into_iter().map(seen_in).collect()
    } else {
        vec![Seen {
            attempt: header(&headers, "ce-deliveryattempt").and_then(|v| v.parse().ok()).unwrap_or(0),
            sent: header(&headers, &format!("ce-{SENT_ATTRIBUTE}")).and_then(|v| v.parse().ok()),
        }]
    };
    if let Some(latency) = &counters.latency {
        let mut h = latency.lock().unwrap_or_else(|e| e.into_inner());
        for sent in seen.iter().filter_map(|s| s.sent) {
            let _ = h.record(now.saturating_sub(sent).max(1));
        }
    }
    let redelivered = seen.iter().filter(|s| s.attempt > 1).count() as u64;
    counters.redelivered.fetch_add(redelivered, Ordering::Relaxed);
    counters.requests.fetch_add(1, Ordering::Relaxed);
    counters.events.fetch_add(seen.len() as u64, Ordering::Relaxed);
    StatusCode::OK
}

/// Command-line options (`--name value`), with defaults.
struct Options {
    /// The arguments after the program name.
    args: Vec<String>,
}

impl Options {
    /// The value after `name`, if given.
    fn text(&self, name: &str) -> Option<String> {
        self.args.iter().position(|a| a == name).and_then(|i| self.args.get(i + 1).cloned())
    }

    /// The value after `name` as a number, or `default` when not given.
    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T> {
        match self.text(name) {
            Some(v) => v.parse().map_err(|_| anyhow::anyhow!("{name}: not a number: {v}")),
            None => Ok(default),
        }
    }
}

/// What every mode needs.
struct Setup {
    /// Admin client of the broker.
    admin: Admin,
    /// The broker's gRPC address.
    addr: String,
    /// The topic to create (must not exist).
    topic: String,
    /// Its partitions.
    partitions: u32,
    /// Event data size in bytes.
    size: usize,
    /// Push: events per request.
    batch_size: u32,
    /// Push: batching window, ms.
    window_ms: u32,
    /// Push: most requests in flight.
    concurrency: u32,
    /// Bound of every phase, seconds.
    max_seconds: u64,
    /// The broker's process id, to report its CPU time.
    broker_pid: Option<String>,
}

impl Setup {
    /// Creates the topic, durability `always`.
    async fn create_topic(&self) -> anyhow::Result<()> {
        let config = pb::TopicConfig { durability: pb::Durability::Always as i32, ..Default::default() };
        self.admin
            .create_topic(&self.topic, self.partitions, config)
            .await
            .with_context(|| format!("creating topic {} (use a fresh topic name per run)", self.topic))?;
        Ok(())
    }

    /// Creates the push group `group` on the topic, pointing at `sink`.
    async fn create_push_group(&self, group: &str, sink: &Sink) -> anyhow::Result<()> {
        let push = pb::PushConfig {
            endpoint: format!("http://{}/push", sink.addr),
            batch_size: self.batch_size,
            max_batching_window_ms: self.window_ms,
            max_concurrency: self.concurrency,
            ..Default::default()
        };
        let config = pb::GroupConfig { topic: self.topic.clone(), push: Some(push), ..Default::default() };
        self.admin.create_group(group, config).await.with_context(|| {
            format!("creating push group {group} (the broker needs --push-allowed-endpoints 127.0.0.1)")
        })?;
        Ok(())
    }

    /// The broker's CPU seconds so far (0 without `--broker-pid`).
    fn broker_cpu(&self) -> f64 {
        self.broker_pid.as_deref().map_or(0.0, cpu_seconds)
    }

    /// The push settings, for the report.
    fn push_settings(&self) -> String {
        format!(
            "batch size {}, window {} ms, concurrency {}, {} B events, {} partitions",
            self.batch_size, self.window_ms, self.concurrency, self.size, self.partitions
        )
    }
}

/// A CloudEvent as the gateway stores it (Kafka binding headers), `size` bytes of text data.
fn event_message(i: u64, value: Bytes) -> pb::Message {
    let header = |k: &str, v: String| pb::Header { key: k.to_owned(), value: v.into_bytes().into() };
    pb::Message {
        key: None,
        value,
        headers: vec![
            header("ce_specversion", "1.0".into()),
            header("ce_id", i.to_string()),
            header("ce_source", "/bench-push".into()),
            header("ce_type", "bench".into()),
            header("content-type", "text/plain".into()),
        ],
    }
}

/// Preloads `events`, drains them through a new push group and reports.
async fn throughput(setup: &Setup, events: u64) -> anyhow::Result<()> {
    let sink = Sink::start(false).await?;
    setup.create_topic().await?;
    let deadline = Instant::now() + Duration::from_secs(setup.max_seconds);
    let producer = Producer::new(channel(&setup.addr)?, ProducerConfig::default());
    let value = Bytes::from(vec![b'x'; setup.size]);
    let started = Instant::now();
    let mut window = futures::stream::FuturesUnordered::new();
    let mut stored = 0u64;
    for i in 0..events {
        if Instant::now() > deadline {
            anyhow::bail!("preload: only {stored} of {events} events stored within --max-seconds");
        }
        window.push(producer.enqueue(&setup.topic, None, event_message(i, value.clone())).await?);
        while window.len() >= 10_000 {
            if let Some(ack) = window.next().await {
                ack.context("preload: a produce failed")?;
                stored += 1;
            }
        }
    }
    while let Some(ack) = window.next().await {
        ack.context("preload: a produce failed")?;
        stored += 1;
    }
    let preload = started.elapsed();
    println!(
        "preloaded {stored} events of {} B into {} ({} partitions) in {:.2}s = {:.0} events/s (gRPC producer)",
        setup.size,
        setup.topic,
        setup.partitions,
        preload.as_secs_f64(),
        stored as f64 / preload.as_secs_f64().max(1e-9)
    );

    let group = format!("{}-push", setup.topic);
    let (broker_cpu, own_cpu) = (setup.broker_cpu(), cpu_seconds("self"));
    let started = Instant::now();
    setup.create_push_group(&group, &sink).await?;
    let deadline = started + Duration::from_secs(setup.max_seconds);
    let got = sink.wait_for(events, deadline).await;
    let c = &sink.counters;
    let last = c.base + Duration::from_micros(c.last_us.load(Ordering::Relaxed));
    let first = c.base + Duration::from_micros(c.first_us.load(Ordering::Relaxed));
    let (broker_cpu, own_cpu) = (setup.broker_cpu() - broker_cpu, cpu_seconds("self") - own_cpu);
    // Let the last acks land, then check the group is drained and stop it pushing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = setup.admin.describe_group(&group).await?;
    setup.admin.delete_group(&group).await?;
    if got < events {
        anyhow::bail!("only {got} of {events} events reached the sink within {} s", setup.max_seconds);
    }
    let requests = c.requests.load(Ordering::Relaxed);
    let total = last.saturating_duration_since(started).as_secs_f64().max(1e-9);
    let steady = last.saturating_duration_since(first).as_secs_f64().max(1e-9);
    println!(
        "push drain ({}): {got} events in {requests} requests, {:.2}s from group created to last event \
         = {:.0} events/s, {:.0} requests/s (first event after {:.0} ms; first to last {:.0} events/s); \
         redelivered {}, malformed {}, most requests at once at the sink {}; group after: backlog {}, in flight {}",
        setup.push_settings(),
        total,
        got as f64 / total,
        requests as f64 / total,
        first.saturating_duration_since(started).as_secs_f64() * 1000.0,
        got as f64 / steady,
        c.redelivered.load(Ordering::Relaxed),
        c.malformed.load(Ordering::Relaxed),
        c.max_in_flight.load(Ordering::Relaxed),
        info.backlog_messages,
        info.in_flight,
    );
    if setup.broker_pid.is_some() {
        println!(
            "  CPU during the drain: broker {broker_cpu:.2}s ({:.0} µs per event), bench (sink) {own_cpu:.2}s",
            broker_cpu * 1e6 / got.max(1) as f64
        );
    }
    Ok(())
}

/// Publishes over HTTP at `rate` for `seconds` and reports publish → receipt.
async fn latency(setup: &Setup, gateway: &str, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let sink = Sink::start(true).await?;
    setup.create_topic().await?;
    let group = format!("{}-push", setup.topic);
    setup.create_push_group(&group, &sink).await?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let url = format!("http://{gateway}/v1/topics/{}/events", setup.topic);
    let data = Bytes::from(vec![b'x'; setup.size]);
    let publish = {
        let (client, url, data) = (client.clone(), url.clone(), data.clone());
        move |id: u64| {
            let request = hyper::Request::post(url.as_str())
                .header("ce-specversion", "1.0")
                .header("ce-id", id)
                .header("ce-source", "/bench-push")
                .header("ce-type", "bench")
                .header(format!("ce-{SENT_ATTRIBUTE}"), now_us())
                .header("content-type", "text/plain")
                .body(Full::new(data.clone()));
            let client = client.clone();
            async move {
                let sent = Instant::now();
                let request = request.context("building a publish request")?;
                let response = client.request(request).await.context("publishing over HTTP")?;
                let status = response.status();
                let _ = response.into_body().collect().await;
                anyhow::ensure!(status == StatusCode::ACCEPTED, "the gateway answered {status}");
                anyhow::Ok(sent.elapsed())
            }
        }
    };

    // Warm-up: the dispatcher starts when the group appears; wait until pushes arrive.
    let warm = 20u64.min(rate);
    for i in 0..warm {
        publish(u64::MAX - i).await?;
    }
    if sink.wait_for(warm, Instant::now() + Duration::from_secs(30)).await < warm {
        anyhow::bail!("warm-up: the push group delivered nothing within 30 s");
    }
    let _ = sink.take_latency();
    let base = sink.events();

    let total = rate * seconds;
    let pace = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let deadline = Instant::now() + Duration::from_secs(seconds.max(1) * 2).min(Duration::from_secs(setup.max_seconds));
    let (broker_cpu, own_cpu) = (setup.broker_cpu(), cpu_seconds("self"));
    let started = Instant::now();
    let mut acks = histogram();
    let (mut published, mut errors, mut behind) = (0u64, 0u64, Duration::ZERO);
    let mut first_error = None;
    let mut window = futures::stream::FuturesUnordered::new();
    for i in 0..total {
        let due = started + pace.mul_f64(i as f64);
        if Instant::now() > deadline {
            break;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => break,
                Some(r) = window.next(), if !window.is_empty() => tally(r, &mut acks, &mut published, &mut errors, &mut first_error),
            }
        }
        behind = behind.max(Instant::now().saturating_duration_since(due));
        window.push(tokio::spawn(publish(i)));
        // Bounded in flight: a stalled gateway slows the publisher instead of piling up requests.
        while window.len() >= 1000 {
            if let Some(r) = window.next().await {
                tally(r, &mut acks, &mut published, &mut errors, &mut first_error);
            }
        }
    }
    let offered = started.elapsed();
    while let Some(r) = window.next().await {
        tally(r, &mut acks, &mut published, &mut errors, &mut first_error);
    }
    let got = sink.wait_for(base + published, deadline + Duration::from_secs(30)).await - base;
    let (broker_cpu, own_cpu) = (setup.broker_cpu() - broker_cpu, cpu_seconds("self") - own_cpu);
    let receipt = sink.take_latency();
    setup.admin.delete_group(&group).await?;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let line = |h: &Histogram<u64>| {
        format!(
            "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            ms(h, 0.5),
            ms(h, 0.9),
            ms(h, 0.99),
            ms(h, 0.999),
            h.max() as f64 / 1000.0
        )
    };
    println!(
        "push latency at {rate} events/s ({}): published {published} over HTTP in {:.2}s ({:.0}/s offered, \
         most behind schedule {:.1} ms), errors {errors}, received {got} (redelivered {})",
        setup.push_settings(),
        offered.as_secs_f64(),
        published as f64 / offered.as_secs_f64().max(1e-9),
        behind.as_secs_f64() * 1000.0,
        sink.counters.redelivered.load(Ordering::Relaxed),
    );
    println!("  publish_to_receipt: {}", line(&receipt));
    println!("  publish_to_202:     {}", line(&acks));
    if setup.broker_pid.is_some() {
        println!("  CPU during the run: broker {broker_cpu:.2}s, bench (publisher and sink) {own_cpu:.2}s");
    }
    if let Some(e) = first_error {
        println!("  first error: {e}");
    }
    if got < published || errors > 0 {
        anyhow::bail!("{} of {published} published events reached the sink; {errors} publish errors", got);
    }
    Ok(())
}

/// Counts one publish outcome.
fn tally(
    r: Result<anyhow::Result<Duration>, tokio::task::JoinError>,
    acks: &mut Histogram<u64>,
    published: &mut u64,
    errors: &mut u64,
    first_error: &mut Option<String>,
) {
    match r {
        Ok(Ok(took)) => {
            *published += 1;
            let _ = acks.record((took.as_micros() as u64).max(1));
        }
        Ok(Err(e)) => {
            *errors += 1;
            first_error.get_or_insert_with(|| format!("{e:#}"));
        }
        Err(e) => {
            *errors += 1;
            first_error.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Parses the arguments and runs the mode asked for.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "bench-push --addr GRPC_URL --gateway HOST:PORT (throughput --events N | latency --rate R --seconds S) \
                 [--topic T] [--partitions P] [--size B] [--batch-size N] [--window-ms W] [--concurrency C] \
                 [--max-seconds S] [--broker-pid PID]";
    let o = Options { args };
    let addr = o.text("--addr").context(usage)?;
    let mode = o.args.iter().find(|a| *a == "throughput" || *a == "latency").cloned().context(usage)?;
    let setup = Setup {
        admin: Admin::new(channel(&addr)?),
        topic: o.text("--topic").unwrap_or_else(|| format!("push-{mode}-{:08x}", rand::random::<u32>())),
        addr,
        partitions: o.number("--partitions", 8)?,
        size: o.number("--size", 1024)?,
        batch_size: o.number("--batch-size", 1)?,
        window_ms: o.number("--window-ms", 0)?,
        concurrency: o.number("--concurrency", 8)?,
        max_seconds: o.number("--max-seconds", 300)?,
        broker_pid: o.text("--broker-pid"),
    };
    if mode == "throughput" {
        throughput(&setup, o.number("--events", 100_000)?).await
    } else {
        let gateway = o.text("--gateway").context(usage)?;
        let gateway = gateway.trim_start_matches("http://").trim_end_matches('/').to_owned();
        latency(&setup, &gateway, o.number("--rate", 2000)?, o.number("--seconds", 20)?).await
    }
}
