//! `sluice`: the command-line client — topics, produce, consume.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use sluice_client::proto as pb;
use sluice_client::{Admin, PartitionReader, Producer, ProducerConfig, StartAt};
use tokio::io::AsyncBufReadExt;

/// `println!` that returns the write error instead of panicking, so every
/// command can end quietly on a closed pipe (`sluice … | head`), as Unix tools
/// do: `main` treats a broken pipe as success.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

#[path = "sluice/acl.rs"]
mod acl;
#[path = "sluice/bench.rs"]
mod bench;
#[path = "sluice/cluster.rs"]
mod cluster;
#[path = "sluice/event.rs"]
mod event;
#[path = "sluice/events_demo.rs"]
mod events_demo;
#[path = "sluice/filter.rs"]
mod filter;
#[path = "sluice/group.rs"]
mod group;
#[path = "sluice/output.rs"]
mod output;
#[path = "sluice/schedule.rs"]
mod schedule;
#[path = "sluice/smoke.rs"]
mod smoke;

use output::Format;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Command-line client for the Sluice broker")]
struct Cli {
    /// Broker address.
    #[arg(long, global = true, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// `text` or `json` (read commands).
    #[arg(long, global = true, value_enum, default_value = "text")]
    output: Format,
    /// Connect over TLS, trusting the CA certificates in this PEM file.
    #[arg(long, global = true, env = "SLUICE_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS; with --tls-key and --tls-ca.
    #[arg(long, global = true, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The name the broker's certificate must carry, when not the address's host.
    #[arg(long, global = true, env = "SLUICE_TLS_DOMAIN")]
    tls_domain: Option<String>,
    /// Bearer token sent with every request.
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Produce lines from stdin (one message each), or generated messages.
    Produce(ProduceArgs),
    /// Print messages of a topic (with --group: as a group member, acking what is printed).
    Consume(ConsumeArgs),
    /// Manage consumer groups and their dead letters.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Publish CloudEvents.
    #[command(subcommand)]
    Event(event::EventCommand),
    /// Schedules: an event produced to a topic at each tick (cron with a time zone, or an interval).
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Permission rules: who may produce, consume, describe, alter or administer what.
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Load a broker and report msgs/s, MB/s and latency percentiles.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Broker version and uptime, topics, and groups with backlog and oldest unacked age.
    Status,
    /// The cluster: brokers, leaders, replica lag.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// The events floor end to end (HTTP in, a filtered push trigger, a handler, dead letters), each step printed.
    EventsDemo {
        /// The broker's HTTP gateway.
        #[arg(long, default_value = "http://broker:8080")]
        gateway: String,
        /// The example handler (`sluice-example-handler`), as the broker reaches it.
        #[arg(long, default_value = "http://handler:8080")]
        handler: String,
    },
    /// Round trip: create the topic if absent, produce, read back. Exits non-zero on any failure.
    Smoke {
        #[arg(long, default_value = "smoke")]
        topic: String,
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, short, default_value_t = 1)]
        partitions: u32,
        /// How many brokers hold each partition; the broker's default (three in a cluster of three or more) when unset.
        #[arg(long, default_value_t = 0)]
        replication_factor: u32,
        #[command(flatten)]
        config: TopicConfigArgs,
    },
    /// List topics.
    List,
    /// Show a topic's partitions, offsets, sizes and segments.
    Describe { name: String },
    /// Change a topic's settings.
    Update {
        name: String,
        #[command(flatten)]
        config: TopicConfigArgs,
    },
    /// Delete a topic and all its messages.
    Delete { name: String },
}

#[derive(Args)]
struct TopicConfigArgs {
    /// Keep messages this long (ms); broker default when unset.
    #[arg(long)]
    retention_ms: Option<u64>,
    /// Keep at most this many bytes per partition.
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// Roll segments at this size.
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Roll segments at this age (ms).
    #[arg(long)]
    segment_ms: Option<u64>,
    /// Largest message accepted.
    #[arg(long)]
    max_message_bytes: Option<u32>,
    /// `always` (fsync before ack) or `interval`.
    #[arg(long)]
    durability: Option<String>,
}

impl TopicConfigArgs {
    fn to_pb(&self) -> anyhow::Result<pb::TopicConfig> {
        let durability = match self.durability.as_deref() {
            None => pb::Durability::Unspecified,
            Some("always") => pb::Durability::Always,
            Some("interval") => pb::Durability::Interval,
            Some(other) => bail!("unknown durability `{other}`; use `always` or `interval`"),
        };
        Ok(pb::TopicConfig {
            retention_ms: self.retention_ms.unwrap_or(0),
            retention_bytes: self.retention_bytes.unwrap_or(0),
            segment_bytes: self.segment_bytes.unwrap_or(0),
            segment_ms: self.segment_ms.unwrap_or(0),
            max_message_bytes: self.max_message_bytes.unwrap_or(0),
            durability: durability as i32,
        })
    }
}

#[derive(Args)]
struct ProduceArgs {
    topic: String,
    /// Key for every message (routes them to one partition).
    #[arg(long)]
    key: Option<String>,
    /// Explicit partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Generate this many messages instead of reading stdin.
    #[arg(long)]
    count: Option<u64>,
    /// Size of generated messages in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
}

#[derive(Args)]
struct ConsumeArgs {
    topic: String,
    /// One partition; all when unset.
    #[arg(long)]
    partition: Option<u32>,
    /// `earliest`, `latest`, or an offset.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Keep waiting for new messages.
    #[arg(long, short)]
    follow: bool,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Prefix each line with partition and offset.
    #[arg(long)]
    print_offsets: bool,
    /// Consume as a member of this group, acking each printed message.
    #[arg(long)]
    group: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let addr = cli.addr.clone();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader stopped reading (`| head`): what it wanted was printed.
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<sluice_client::Error>() {
                Some(c) if c.code() == Some(tonic::Code::Unavailable) => eprintln!(
                    "error: cannot reach the broker at {addr}: is it running? Start one with `make run`, \
                     or point --addr / SLUICE_ADDR at it."
                ),
                // The client error already says what failed; its source chain only repeats it.
                Some(c) => eprintln!("error: {c}"),
                None => eprintln!("error: {e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `e` comes from writing to a pipe whose reader has gone. Rust ignores
/// SIGPIPE, so such writes fail with `EPIPE` instead of ending the process.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// How every channel of this run connects (`--tls-*`, `--token`).
static CONNECT: std::sync::OnceLock<sluice_client::ConnectOptions> = std::sync::OnceLock::new();

/// A channel to `addr`, connecting as the flags say.
pub fn channel(addr: &str) -> sluice_client::Result<sluice_client::Channel> {
    CONNECT.get_or_init(sluice_client::ConnectOptions::new).connect(addr)
}

fn connect_options(cli: &Cli) -> anyhow::Result<sluice_client::ConnectOptions> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading the {what} {}: {e}", path.display()))
    };
    let mut options = sluice_client::ConnectOptions::new();
    if let Some(ca) = &cli.tls_ca {
        options = options.tls_ca(read(ca, "CA certificate")?);
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        anyhow::ensure!(
            cli.tls_ca.is_some(),
            "--tls-cert needs --tls-ca (the CA that signed the broker's certificate)"
        );
        options = options.tls_identity(read(cert, "client certificate")?, read(key, "client key")?);
    }
    if let Some(domain) = &cli.tls_domain {
        options = options.tls_domain(domain);
    }
    if let Some(token) = &cli.token {
        options = options.token(token)?;
    }
    Ok(options)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _ = CONNECT.set(connect_options(&cli)?);
    if cli.tls_ca.is_some() && cli.addr.starts_with("http://") {
        anyhow::bail!("--tls-ca given but --addr is http://: use https:// or host:port");
    }
    let ch = channel(&cli.addr)?;
    match cli.command {
        Command::Topic(t) => topic(Admin::new(ch), t, cli.output).await,
        Command::Status => status(Admin::new(ch), cli.output).await,
        Command::Cluster(c) => cluster::run(sluice_client::ClusterInfo::new(ch), c, cli.output).await,
        Command::Bench(b) => bench::run(&cli.addr, b, cli.output).await,
        Command::Produce(p) => produce(ch, p).await,
        Command::Consume(c) => match &c.group {
            Some(g) => group::consume(ch, g, c.follow, c.max, c.print_offsets, cli.output).await,
            None => consume(ch, c, cli.output).await,
        },
        Command::Group(g) => group::run(Admin::new(ch), g, cli.output).await,
        Command::Event(e) => event::run(ch, e, cli.output).await,
        Command::Schedule(s) => schedule::run(Admin::new(ch), s, cli.output).await,
        Command::Acl(a) => acl::run(Admin::new(ch), a, cli.output).await,
        Command::Smoke { topic, count } => smoke::run(ch, &topic, count).await,
        Command::EventsDemo { gateway, handler } => events_demo::run(Admin::new(ch), &gateway, &handler).await,
    }
}

fn print_topic(t: &pb::TopicInfo) -> std::io::Result<()> {
    let c = t.config.unwrap_or_default();
    let durability = pb::Durability::try_from(c.durability).map_or("?", |d| d.as_str_name());
    outln!(
        "{}\tpartitions={}\tretention_ms={}\tretention_bytes={}\tsegment_bytes={}\tdurability={}\treplicas={}",
        t.name,
        t.partitions,
        c.retention_ms,
        c.retention_bytes,
        c.segment_bytes,
        durability,
        t.replication_factor
    )
}

async fn status(admin: Admin, format: Format) -> anyhow::Result<()> {
    let broker = admin.broker().await?;
    let topics = admin.list_topics().await?;
    let groups = admin.list_groups("").await?;
    if format == Format::Json {
        output::print(serde_json::json!({
            "version": broker.version, "uptime_ms": broker.uptime_ms, "started_ms": broker.started_ms,
            "topics": topics.iter().map(output::topic).collect::<Vec<_>>(),
            "groups": groups.iter().map(output::group).collect::<Vec<_>>(),
        }))?;
        return Ok(());
    }
    outln!(
        "sluice-broker {}  up {}s  {} topics  {} groups",
        broker.version,
        broker.uptime_ms / 1000,
        topics.len(),
        groups.len()
    )?;
    outln!("\nTOPIC\tPARTITIONS\tDURABILITY")?;
    for t in &topics {
        let d = pb::Durability::try_from(t.config.unwrap_or_default().durability).map_or("?", |d| d.as_str_name());
        outln!("{}\t{}\t{}", t.name, t.partitions, d.trim_start_matches("DURABILITY_").to_lowercase())?;
    }
    outln!("\nGROUP\tTOPIC\tBACKLOG\tIN FLIGHT\tOLDEST UNACKED\tDEAD-LETTERED\tMEMBERS")?;
    for g in &groups {
        let topic = g.config.as_ref().map_or("", |c| c.topic.as_str());
        outln!(
            "{}\t{}\t{}\t{}\t{:.1}s\t{}\t{}",
            g.name,
            topic,
            g.backlog_messages,
            g.in_flight,
            g.oldest_unacked_age_ms as f64 / 1000.0,
            g.dead_lettered,
            g.members.len()
        )?;
    }
    Ok(())
}

async fn topic(admin: Admin, cmd: TopicCommand, format: Format) -> anyhow::Result<()> {
    let json = format == Format::Json;
    match cmd {
        TopicCommand::Create { name, partitions, replication_factor, config } => {
            let created = admin.create_replicated_topic(&name, partitions, replication_factor, config.to_pb()?).await?;
            print_topic(&created)?
        }
        TopicCommand::List if json => output::print(admin.list_topics().await?.iter().map(output::topic).collect())?,
        TopicCommand::List => {
            for t in admin.list_topics().await? {
                print_topic(&t)?;
            }
        }
        TopicCommand::Describe { name } if json => {
            output::print(output::topic_detail(&admin.describe_topic(&name).await?))?
        }
        TopicCommand::Describe { name } => {
            let d = admin.describe_topic(&name).await?;
            print_topic(&d.topic.unwrap_or_default())?;
            outln!("partition\tearliest\tlatest\tbytes\tsegments")?;
            for p in d.partitions {
                outln!(
                    "{}\t{}\t{}\t{}\t{}",
                    p.partition,
                    p.earliest_offset,
                    p.latest_offset,
                    p.bytes,
                    p.segments.len()
                )?;
            }
        }
        TopicCommand::Update { name, config } => print_topic(&admin.update_topic(&name, config.to_pb()?).await?)?,
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            outln!("deleted {name}")?;
        }
    }
    Ok(())
}

async fn produce(ch: sluice_client::Channel, args: ProduceArgs) -> anyhow::Result<()> {
    let producer = Producer::new(ch, ProducerConfig::default());
    let key = args.key.map(|k| bytes::Bytes::from(k.into_bytes()));
    let mut acks = futures::stream::FuturesOrdered::new();
    let mut sent = 0u64;
    let message = |value: bytes::Bytes| pb::Message { key: key.clone(), value, headers: vec![] };
    let started = std::time::Instant::now();
    if let Some(count) = args.count {
        let payload = bytes::Bytes::from(vec![b'x'; args.size]);
        for _ in 0..count {
            acks.push_back(producer.enqueue(&args.topic, args.partition, message(payload.clone())).await?);
            sent += 1;
            if acks.len() >= 50_000 {
                drain_some(&mut acks, 10_000).await?;
            }
        }
    } else {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            acks.push_back(producer.enqueue(&args.topic, args.partition, message(line.into_bytes().into())).await?);
            sent += 1;
        }
    }
    let n = acks.len();
    drain_some(&mut acks, n).await?;
    eprintln!("produced {sent} messages to {} in {:.2?}", args.topic, started.elapsed());
    Ok(())
}

async fn drain_some<F: std::future::Future<Output = sluice_client::Result<sluice_client::Delivery>>>(
    acks: &mut futures::stream::FuturesOrdered<F>,
    n: usize,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    for _ in 0..n {
        match acks.next().await {
            Some(r) => {
                r.context("produce failed")?;
            }
            None => break,
        }
    }
    Ok(())
}

async fn consume(ch: sluice_client::Channel, args: ConsumeArgs, format: Format) -> anyhow::Result<()> {
    let start = match args.from.as_str() {
        "earliest" => StartAt::Earliest,
        "latest" => StartAt::Latest,
        n => StartAt::Offset(n.parse().with_context(|| format!("--from {n}: use earliest, latest or an offset"))?),
    };
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![p],
        None => {
            let d = Admin::new(ch.clone()).describe_topic(&args.topic).await?;
            (0..d.topic.map_or(0, |t| t.partitions)).collect()
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<pb::Record>>(1024);
    for p in partitions {
        let (tx, ch, topic, follow) = (tx.clone(), ch.clone(), args.topic.clone(), args.follow);
        tokio::spawn(async move {
            let run = async {
                let mut reader = PartitionReader::new(ch, &topic, p, start).await?;
                let (_, end) = reader.offsets().await?;
                loop {
                    if !follow && reader.position() >= end {
                        return Ok(());
                    }
                    let wait = if follow { Duration::from_secs(5) } else { Duration::ZERO };
                    for r in reader.next_batch(wait).await? {
                        if tx.send(Ok(r)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            };
            if let Err(e) = run.await {
                let _ = tx.send(Err(e)).await;
            }
        });
    }
    drop(tx);
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while let Some(r) = rx.recv().await {
        let r = r?;
        if format == Format::Json {
            writeln!(out, "{}", output::record(&r))?;
            printed += 1;
            if args.max.is_some_and(|m| printed >= m) {
                break;
            }
            continue;
        }
        if args.print_offsets {
            write!(out, "{}\t{}\t", r.partition, r.offset)?;
        }
        out.write_all(&r.value)?;
        out.write_all(b"\n")?;
        printed += 1;
        if args.max.is_some_and(|m| printed >= m) {
            break;
        }
    }
    out.flush()?;
    Ok(())
}
