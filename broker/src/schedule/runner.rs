//! Fires schedules: on a single broker always, in a cluster on the broker
//! that leads the metadata group (the catalog holds every schedule's
//! progress, so the leadership can move between any two ticks).
//!
//! # Correctness (exactly one event per fired tick)
//! For each tick the runner first records durably that the schedule fires
//! it (`ScheduleRegistry::advance`: sequence = ticks fired so far + 1, the
//! tick's time, the ticks it stands for), then produces its event with the
//! schedule's own idempotent producer id and that sequence. The event is
//! built from the record alone, so it is the same whoever builds it. A
//! runner that starts (a restart, a new metadata leader) first sends the last
//! recorded tick again: stored already, it is answered as a duplicate;
//! lost in a crash between record and produce, it is stored now. The next
//! tick is recorded only once the last one is confirmed stored, so the
//! partition's producer state never sees a gap. Two runners racing (a
//! deposed leader that has not noticed yet) cannot both record one
//! sequence: the later record is refused as stale.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sluice_storage::schedule::ScheduleProgress;
use sluice_storage::{now_ms, ProducerSeq};
use tokio_util::sync::CancellationToken;

use super::config::MissedTicks;
use super::registry::{Advanced, Schedule, ScheduleRegistry};
use super::ticks::Ticks;
use crate::error::{Error, Result};
use crate::name::TopicName;
use crate::topic::produce::{ProduceBatch, Producer};
use crate::topic::TopicRegistry;

/// Longest sleep between looks at the schedules (and, in a cluster, at who
/// leads the metadata group).
const IDLE: Duration = Duration::from_millis(500);
/// First wait before firing a failed tick again; doubles up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// Longest wait before firing a failed tick again.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The idempotent producer id of schedule `id`: its own, never a client's
/// (clients draw ids at random; the top bit set and a schedule id is a
/// collision nobody will meet).
pub fn producer_id(schedule_id: u64) -> u64 {
    (1 << 63) | schedule_id
}

/// What the runner keeps about one schedule while it runs it.
#[derive(Default)]
struct Running {
    /// The schedule's ticks, compiled.
    ticks: Option<Ticks>,
    /// Under `skip`: ticks due at or before this were missed while not running.
    floor_ms: i64,
    /// The recorded last tick is known to be stored.
    confirmed: bool,
    /// Failed attempts in a row, and when to try again.
    failures: u32,
    retry_at_ms: i64,
}

/// Fires the schedules of `registry` into `topics` through `producer` until `stop`.
pub async fn run(
    registry: Arc<ScheduleRegistry>,
    topics: Arc<TopicRegistry>,
    producer: Producer,
    stop: CancellationToken,
) {
    let mut changes = registry.watch();
    let mut running: HashMap<u64, Running> = HashMap::new();
    let mut was_runner = false;
    loop {
        let now = now_ms();
        let mut wake_ms = now + IDLE.as_millis() as i64;
        let runner = registry.runs_here();
        if runner && !was_runner {
            tracing::info!("running schedules here");
        }
        if !runner {
            // Whatever was known is re-learnt (and the last tick sent again) when it runs here next.
            running.clear();
        } else {
            let schedules = registry.list();
            let live: HashSet<u64> = schedules.iter().map(|s| s.config.id).collect();
            running.retain(|id, _| live.contains(id));
            for schedule in schedules {
                let state = running
                    .entry(schedule.config.id)
                    .or_insert_with(|| Running { floor_ms: now, ..Running::default() });
                if state.retry_at_ms > now {
                    wake_ms = wake_ms.min(state.retry_at_ms);
                    continue;
                }
                match step(&registry, &topics, &producer, &schedule, state, now).await {
                    Ok(Some(next)) => wake_ms = wake_ms.min(next),
                    Ok(None) => {}
                    Err(e) => {
                        state.failures += 1;
                        let wait = FIRST_RETRY.saturating_mul(1 << state.failures.min(8)).min(MAX_RETRY);
                        state.retry_at_ms = now + wait.as_millis() as i64;
                        wake_ms = wake_ms.min(state.retry_at_ms);
                        let name = &schedule.config.name;
                        metrics::counter!(crate::metrics::SCHEDULE_FAILURES, "schedule" => name.clone()).increment(1);
                        tracing::warn!(schedule = %name, error = %e, retry_ms = wait.as_millis() as u64, "firing a tick failed");
                        registry.set_failure(name, Some(e.to_string()));
                    }
                }
            }
        }
        was_runner = runner;
        let sleep = Duration::from_millis(wake_ms.saturating_sub(now_ms()).max(0) as u64);
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Confirms the last recorded tick of `schedule`, then fires the tick due
/// now if there is one. Returns when the next tick is due.
async fn step(
    registry: &ScheduleRegistry,
    topics: &TopicRegistry,
    producer: &Producer,
    schedule: &Schedule,
    state: &mut Running,
    now: i64,
) -> Result<Option<i64>> {
    let config = &schedule.config;
    if !state.confirmed {
        if schedule.progress.fired > 0 {
            produce(topics, producer, schedule, &schedule.progress).await?;
        }
        state.confirmed = true;
    }
    if state.failures > 0 {
        state.failures = 0;
        registry.set_failure(&config.name, None);
    }
    let ticks = match &state.ticks {
        Some(t) => t,
        None => state.ticks.insert(Ticks::compile(&config.timing, config.created_ms)?),
    };
    let mut after = if schedule.progress.fired > 0 { schedule.progress.tick_ms } else { config.created_ms };
    if config.missed == MissedTicks::Skip {
        after = after.max(ticks.due(after, state.floor_ms).map_or(after, |d| d.tick_ms));
    }
    let Some(due) = ticks.due(after, now) else {
        return Ok(ticks.next_after(after));
    };
    let next = ScheduleProgress { fired: schedule.progress.fired + 1, tick_ms: due.tick_ms, missed: due.earlier };
    match registry.advance(&config.name, config.id, next).await? {
        Advanced::Done => {}
        Advanced::Stale(_) => {
            // Another runner recorded it: confirm what the catalog holds on the next pass.
            state.confirmed = false;
            return Ok(Some(now));
        }
        Advanced::Gone => return Ok(None),
    }
    state.confirmed = false;
    // Fault injection: die with the tick recorded and its event not yet produced.
    #[cfg(feature = "failpoints")]
    fail::fail_point!("sluice-schedule-recorded", |_| std::process::abort());
    let fired = Schedule { config: config.clone(), progress: next };
    produce(topics, producer, &fired, &next).await?;
    state.confirmed = true;
    metrics::counter!(crate::metrics::SCHEDULE_FIRED, "schedule" => config.name.clone()).increment(1);
    if due.earlier > 0 {
        metrics::counter!(crate::metrics::SCHEDULE_MISSED, "schedule" => config.name.clone()).increment(due.earlier);
        tracing::info!(schedule = %config.name, missed = due.earlier, "fired once for ticks missed while not running");
    }
    Ok(ticks.next_after(due.tick_ms))
}

/// Produces the event of `progress`'s tick, idempotently.
async fn produce(
    topics: &TopicRegistry,
    producer: &Producer,
    schedule: &Schedule,
    progress: &ScheduleProgress,
) -> Result<()> {
    let config = &schedule.config;
    let topic = topics.get_or_await(&config.topic).await?;
    let partition = sluice_proto::partition_for_key(config.partition_key().as_bytes(), topic.partitions.len() as u32);
    let batch = ProduceBatch {
        topic: TopicName::parse("topic", config.topic.clone())?,
        partition: Some(partition),
        messages: vec![super::tick_event::tick_message(config, progress)?],
        producer: Some(ProducerSeq { producer_id: producer_id(config.id), sequence: progress.fired }),
        forward: true,
    };
    match producer.produce(batch).await {
        Ok(_) => Ok(()),
        // Stored before, and so long ago it left the duplicate window: nothing to add.
        Err(Error::Storage(sluice_storage::Error::OutOfOrderSequence { expected, .. }))
            if expected > progress.fired =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
