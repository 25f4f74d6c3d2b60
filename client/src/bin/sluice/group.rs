//! `sluice group …` and `sluice consume --group`.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use sluice_client::proto as pb;
use sluice_client::{Admin, Consumer, ConsumerConfig};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create a consumer group on a topic.
    Create {
        name: String,
        #[command(flatten)]
        config: GroupConfigArgs,
        /// The topic to read.
        #[arg(long)]
        topic: String,
        /// `shared` (work queue) or `ordered` (one member per partition, in order).
        #[arg(long, default_value = "shared")]
        mode: String,
        /// `earliest`, `latest`, or a timestamp in ms.
        #[arg(long, default_value = "earliest")]
        start: String,
    },
    /// Change a group's settings.
    Update {
        name: String,
        #[command(flatten)]
        config: GroupConfigArgs,
        /// Stop pushing: the group becomes a pull group.
        #[arg(long, conflicts_with = "push_endpoint")]
        no_push: bool,
        /// Remove the group's filters: every event is delivered.
        #[arg(long, conflicts_with = "filters")]
        no_filter: bool,
    },
    /// List groups.
    List {
        /// Only groups of this topic.
        #[arg(long, default_value = "")]
        topic: String,
    },
    /// Show a group's progress per partition.
    Describe { name: String },
    /// Delete a group.
    Delete { name: String },
    /// Move a group to `earliest`, `latest`, an offset, or `ts:MILLIS`.
    Seek {
        name: String,
        to: String,
        #[arg(long)]
        partition: Option<u32>,
    },
    /// Dead letters: peek, redrive, purge.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Print dead letters with their headers.
    Peek {
        group: String,
        #[arg(long, default_value_t = 20)]
        max: u32,
    },
    /// Copy dead letters back to the group's topic (or --to).
    Redrive {
        group: String,
        #[arg(long, default_value = "")]
        to: String,
        /// Messages per second; 0 = unlimited.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        #[arg(long, default_value_t = 0)]
        max: u32,
        /// Only those whose reason contains this.
        #[arg(long, default_value = "")]
        reason_contains: String,
    },
    /// Remove every dead letter of the group.
    Purge { group: String },
}

#[derive(Args)]
pub struct GroupConfigArgs {
    /// Lease length in ms (100-600000).
    #[arg(long)]
    ack_deadline_ms: Option<u32>,
    /// Deliveries before dead-lettering (needs --dead-letter-topic); 0 = unlimited (removes a limit on update).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Dead-letter topic (created if absent).
    #[arg(long)]
    dead_letter_topic: Option<String>,
    /// First redelivery delay, ms.
    #[arg(long)]
    backoff_initial_ms: Option<u32>,
    /// Largest redelivery delay, ms.
    #[arg(long)]
    backoff_max_ms: Option<u32>,
    /// Push the group's messages to this URL (http://host[:port]/path; the broker's
    /// push-allowed-endpoints must list its host). On update, replaces the push settings.
    #[arg(long)]
    push_endpoint: Option<String>,
    /// Events per push request (1-1000; default 1: binary mode).
    #[arg(long, requires = "push_endpoint")]
    push_batch_size: Option<u32>,
    /// How long a push batch may wait to fill, ms (default 0).
    #[arg(long, requires = "push_endpoint")]
    push_window_ms: Option<u32>,
    /// Most push requests in flight (default 8).
    #[arg(long, requires = "push_endpoint")]
    push_concurrency: Option<u32>,
    /// Push request timeout, ms (default min(10000, ack deadline)).
    #[arg(long, requires = "push_endpoint")]
    push_timeout_ms: Option<u32>,
    /// A header sent with every push, `Name: value` (repeatable).
    #[arg(long = "push-header", requires = "push_endpoint")]
    push_headers: Vec<String>,
    /// Deliver only events passing this filter (repeatable; all must pass): `attr=value`,
    /// `attr^=prefix`, `attr$=suffix`, `attr!=value`, or Knative JSON such as
    /// '{"any":[{"exact":{"type":"a"}},{"prefix":{"source":"/b"}}]}'. On update, replaces the filters.
    #[arg(long = "filter")]
    filters: Vec<String>,
}

impl GroupConfigArgs {
    fn push(&self) -> anyhow::Result<Option<pb::PushConfig>> {
        let Some(endpoint) = &self.push_endpoint else { return Ok(None) };
        let mut headers = std::collections::HashMap::new();
        for h in &self.push_headers {
            let (name, value) =
                h.split_once(':').with_context(|| format!("--push-header {h:?}: write `Name: value`"))?;
            headers.insert(name.trim().to_owned(), value.trim().to_owned());
        }
        Ok(Some(pb::PushConfig {
            endpoint: endpoint.clone(),
            batch_size: self.push_batch_size.unwrap_or(0),
            max_batching_window_ms: self.push_window_ms.unwrap_or(0),
            max_concurrency: self.push_concurrency.unwrap_or(0),
            timeout_ms: self.push_timeout_ms.unwrap_or(0),
            headers,
        }))
    }

    fn to_pb(&self) -> anyhow::Result<pb::GroupConfig> {
        Ok(pb::GroupConfig {
            ack_deadline_ms: self.ack_deadline_ms.unwrap_or(0),
            max_delivery_attempts: self.max_attempts,
            dead_letter_topic: self.dead_letter_topic.clone().unwrap_or_default(),
            backoff: Some(pb::Backoff {
                initial_ms: self.backoff_initial_ms,
                max_ms: self.backoff_max_ms,
                multiplier: None,
                jitter: None,
            }),
            push: self.push()?,
            filter: if self.filters.is_empty() {
                None
            } else {
                Some(pb::EventFilters {
                    filters: self.filters.iter().map(|f| super::filter::parse(f)).collect::<anyhow::Result<_>>()?,
                })
            },
            ..Default::default()
        })
    }
}

fn print_group(g: &pb::GroupInfo) -> std::io::Result<()> {
    let c = g.config.clone().unwrap_or_default();
    let mode = pb::GroupMode::try_from(c.mode).map_or("?", |m| m.as_str_name());
    let push = c.push.as_ref().map_or(String::new(), |p| format!("\tpush={}", p.endpoint));
    let push = match &c.filter {
        Some(f) if !f.filters.is_empty() => format!("{push}\tfilter={}", super::filter::to_json(&f.filters)),
        _ => push,
    };
    outln!(
        "{}\ttopic={}\tmode={}{push}\tbacklog={}\tin_flight={}\toldest_unacked_ms={}\tdead_lettered={}\tmembers={}",
        g.name,
        c.topic,
        mode,
        g.backlog_messages,
        g.in_flight,
        g.oldest_unacked_age_ms,
        g.dead_lettered,
        g.members.len()
    )
}

pub async fn run(admin: Admin, cmd: GroupCommand, format: super::Format) -> anyhow::Result<()> {
    let json = format == super::Format::Json;
    match cmd {
        GroupCommand::List { topic } if json => {
            super::output::print(admin.list_groups(&topic).await?.iter().map(super::output::group).collect())?
        }
        GroupCommand::Describe { name } if json => {
            super::output::print(super::output::group(&admin.describe_group(&name).await?))?
        }
        GroupCommand::Dlq(DlqCommand::Peek { group, max }) if json => super::output::print(
            admin.peek_dead_letters(&group, max).await?.iter().map(super::output::record).collect(),
        )?,
        GroupCommand::Create { name, config, topic, mode, start } => {
            let mut c = config.to_pb()?;
            c.topic = topic;
            c.mode = match mode.as_str() {
                "shared" => pb::GroupMode::Shared,
                "ordered" => pb::GroupMode::Ordered,
                other => bail!("unknown mode `{other}`; use `shared` or `ordered`"),
            } as i32;
            match start.as_str() {
                "earliest" => c.start = pb::StartPosition::Earliest as i32,
                "latest" => c.start = pb::StartPosition::Latest as i32,
                ts => {
                    c.start = pb::StartPosition::Timestamp as i32;
                    c.start_timestamp_ms =
                        ts.parse().with_context(|| format!("--start {ts}: use earliest, latest or ms"))?;
                }
            }
            print_group(&admin.create_group(&name, c).await?)?;
        }
        GroupCommand::Update { name, no_push: true, .. } => print_group(&admin.stop_pushing(&name).await?)?,
        GroupCommand::Update { name, config, no_filter, .. } => {
            let mut c = config.to_pb()?;
            if no_filter {
                c.filter = Some(pb::EventFilters::default());
            }
            print_group(&admin.update_group(&name, c).await?)?
        }
        GroupCommand::List { topic } => {
            for g in admin.list_groups(&topic).await? {
                print_group(&g)?;
            }
        }
        GroupCommand::Describe { name } => {
            let g = admin.describe_group(&name).await?;
            print_group(&g)?;
            outln!("partition\tcommitted\tlatest\tbacklog\tin_flight\toldest_unacked_ms\tdead_lettered\towner")?;
            for p in &g.partitions {
                outln!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    p.partition,
                    p.committed_offset,
                    p.latest_offset,
                    p.backlog_messages,
                    p.in_flight,
                    p.oldest_unacked_age_ms,
                    p.dead_lettered,
                    p.owner
                )?;
            }
        }
        GroupCommand::Delete { name } => {
            admin.delete_group(&name).await?;
            outln!("deleted group {name}")?;
        }
        GroupCommand::Seek { name, to, partition } => {
            use pb::seek_group_request::Target;
            let target = match to.as_str() {
                "earliest" => Target::Earliest(true),
                "latest" => Target::Latest(true),
                t if t.starts_with("ts:") => Target::TimestampMs(t[3..].parse().context("ts:MILLIS")?),
                n => Target::Offset(n.parse().context("use earliest, latest, an offset or ts:MILLIS")?),
            };
            print_group(&admin.seek_group(&name, partition, target).await?)?;
        }
        GroupCommand::Dlq(DlqCommand::Peek { group, max }) => {
            for r in admin.peek_dead_letters(&group, max).await? {
                let headers: Vec<String> =
                    r.headers.iter().map(|h| format!("{}={}", h.key, String::from_utf8_lossy(&h.value))).collect();
                outln!("{}\t{}\t{}\t{}", r.partition, r.offset, String::from_utf8_lossy(&r.value), headers.join(" "))?;
            }
        }
        GroupCommand::Dlq(DlqCommand::Redrive { group, to, rate, max, reason_contains }) => {
            let n = admin
                .redrive_dead_letters(pb::RedriveDeadLettersRequest {
                    group,
                    target_topic: to,
                    rate_per_second: rate,
                    max_messages: max,
                    reason_contains,
                })
                .await?;
            outln!("redrove {n} dead letters")?;
        }
        GroupCommand::Dlq(DlqCommand::Purge { group }) => {
            outln!("purged {} dead letters", admin.purge_dead_letters(&group).await?)?
        }
    }
    Ok(())
}

/// `consume --group G`: prints and acks; stops when a pull comes back empty unless following.
/// A batch is acked only once all of it was written, so a reader that goes
/// away mid-batch (`| head`) leaves it to be redelivered when its lease ends.
pub async fn consume(
    channel: sluice_client::Channel,
    group: &str,
    follow: bool,
    max: Option<u64>,
    print_offsets: bool,
    format: super::Format,
) -> anyhow::Result<()> {
    let consumer = Consumer::new(channel, group, ConsumerConfig::default());
    let mut printed = 0u64;
    loop {
        let want = max.map_or(500, |m| (m - printed).min(500)) as u32;
        let wait = if follow { Duration::from_secs(5) } else { Duration::from_secs(1) };
        let batch = consumer.pull(want, wait).await?;
        if batch.is_empty() {
            if follow {
                continue;
            }
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let mut ids = Vec::with_capacity(batch.len());
        for m in batch {
            if format == super::Format::Json {
                let mut v = super::output::record(&m.record);
                v["attempt"] = m.attempt.into();
                writeln!(out, "{v}")?;
                ids.push(m.ack_id);
                printed += 1;
                continue;
            }
            if print_offsets {
                write!(out, "{}\t{}\t", m.record.partition, m.record.offset)?;
            }
            out.write_all(&m.record.value)?;
            out.write_all(b"\n")?;
            ids.push(m.ack_id);
            printed += 1;
        }
        out.flush()?;
        drop(out);
        consumer.ack(ids).await?;
        if max.is_some_and(|m| printed >= m) {
            return Ok(());
        }
    }
}
