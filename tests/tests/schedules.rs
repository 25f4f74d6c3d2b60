//! Scheduled events against the real broker: a schedule (an interval, or
//! cron with seconds in a time zone) produces one CloudEvent per tick to its
//! topic; ticks are fired exactly once across SIGKILL (numbered without a
//! repeat or a gap, each on the schedule's grid); ticks missed while the
//! broker was down fire once (`fire-once`, with `missedticks`) or not at all
//! (`skip`); deleting a schedule stops it; bad definitions are refused with
//! the field at fault.
//!
//! SIGKILLs are at seeded random moments: the seed is printed and
//! SLUICE_SCHEDULE_SEED replays it; SLUICE_SCHEDULE_KILLS sets how many.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use sluice_client::proto as pb;
use sluice_client::Admin;
use sluice_tests::ticks::{check_exactly_once, ticks, Tick};
use sluice_tests::{eventually, read_all, TestBroker};
use tonic::Code;

const EVERY_MS: u64 = 200;

fn interval(topic: &str, every_ms: u64, missed: pb::MissedTicks) -> pb::ScheduleConfig {
    pb::ScheduleConfig {
        topic: topic.into(),
        interval_ms: every_ms,
        missed_ticks: missed as i32,
        event: Some(pb::ScheduleEvent {
            r#type: "report.due".into(),
            data: br#"{"report":"daily"}"#.to_vec().into(),
            data_content_type: "application/json".into(),
            attributes: [("team".to_owned(), "ops".to_owned())].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn broker_with_topic() -> anyhow::Result<TestBroker> {
    let broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("ticks", 1, pb::TopicConfig::default()).await?;
    Ok(broker)
}

/// The schedule's ticks stored so far.
async fn stored(broker: &TestBroker, schedule: &pb::ScheduleInfo) -> anyhow::Result<Vec<Tick>> {
    ticks(&read_all(broker.channel(), "ticks", 0).await?, schedule.id)
}

/// Waits until the schedule has stored at least `n` ticks.
async fn at_least(broker: &TestBroker, schedule: &pb::ScheduleInfo, n: usize) -> anyhow::Result<Vec<Tick>> {
    eventually(Duration::from_secs(30), &format!("{n} ticks of {}", schedule.name), || async {
        let got = stored(broker, schedule).await?;
        Ok((got.len() >= n).then_some(got))
    })
    .await
}

fn status_reason(e: &sluice_client::Error) -> (Code, String) {
    match e {
        sluice_client::Error::Status(s) => {
            (s.code(), s.metadata().get("sluice-reason").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned())
        }
        other => (Code::Unknown, other.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_schedule_fires_each_tick_once_as_an_event_and_stops_when_deleted() -> anyhow::Result<()> {
    let broker = broker_with_topic().await?;
    let admin = Admin::new(broker.channel());
    let created = admin.create_schedule("report", interval("ticks", EVERY_MS, pb::MissedTicks::FireOnce)).await?;
    assert!(created.next_tick_ms > created.created_ms, "{created:?}");
    let got = at_least(&broker, &created, 5).await?;
    check_exactly_once(&got, created.created_ms, EVERY_MS as i64)?;
    let records = read_all(broker.channel(), "ticks", 0).await?;
    let header = |k: &str| {
        records[0].headers.iter().find(|h| h.key == k).map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    assert_eq!(header("ce_type").as_deref(), Some("report.due"));
    assert_eq!(header("ce_source").as_deref(), Some("/sluice/schedules/report"));
    assert_eq!(header("ce_team").as_deref(), Some("ops"));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(&records[0].value[..], br#"{"report":"daily"}"#);
    let info = admin.describe_schedule("report").await?;
    assert!(info.ticks_fired >= 5 && info.last_tick_ms > 0, "{info:?}");
    assert!(info.last_error.is_empty(), "{info:?}");

    admin.delete_schedule("report").await?;
    let after_delete = stored(&broker, &created).await?.len();
    // Nothing fires for three intervals and more.
    tokio::time::sleep(Duration::from_millis(4 * EVERY_MS)).await;
    assert_eq!(stored(&broker, &created).await?.len(), after_delete, "a deleted schedule fired");
    let e = admin.describe_schedule("report").await.expect_err("deleted");
    assert_eq!(status_reason(&e), (Code::NotFound, "schedule_not_found".into()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_reads_its_time_zone_and_fires_on_its_seconds() -> anyhow::Result<()> {
    let broker = broker_with_topic().await?;
    let admin = Admin::new(broker.channel());
    let config = pb::ScheduleConfig {
        topic: "ticks".into(),
        cron: "*/2 * * * * *".into(),
        time_zone: "Asia/Kathmandu".into(),
        ..Default::default()
    };
    let created = admin.create_schedule("even-seconds", config).await?;
    assert_eq!(created.next_tick_ms % 2000, 0, "{created:?}");
    let got = at_least(&broker, &created, 2).await?;
    for t in &got {
        assert_eq!(t.due_ms % 2000, 0, "{t:?} is not on an even second");
    }
    assert_eq!(got[1].due_ms - got[0].due_ms, 2000 * (got[1].missed as i64 + 1));
    let listed = admin.list_schedules().await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].config.as_ref().map(|c| c.time_zone.as_str()), Some("Asia/Kathmandu"));
    let records = read_all(broker.channel(), "ticks", 0).await?;
    let kind = records[0].headers.iter().find(|h| h.key == "ce_type").map(|h| h.value.to_vec());
    assert_eq!(kind.as_deref(), Some(&b"dev.sluice.schedule.tick"[..]), "the default type");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_are_fired_exactly_once_across_sigkill() -> anyhow::Result<()> {
    let kills: usize = std::env::var("SLUICE_SCHEDULE_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let seed: u64 =
        std::env::var("SLUICE_SCHEDULE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("schedule kill seed {seed} ({kills} kills); replay with SLUICE_SCHEDULE_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut broker = broker_with_topic().await?;
    let created = Admin::new(broker.channel())
        .create_schedule("heartbeat", interval("ticks", EVERY_MS, pb::MissedTicks::FireOnce))
        .await?;
    for kill in 0..kills {
        let before = stored(&broker, &created).await?.len();
        // Let at least one tick fire, then kill at a random moment within the next interval or two.
        at_least(&broker, &created, before + 1).await?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..2 * EVERY_MS))).await;
        broker.kill9().await?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..3 * EVERY_MS))).await;
        broker.start_again().await?;
        eprintln!("kill {}: {} ticks stored before", kill + 1, before);
    }
    let fired = stored(&broker, &created).await?.len();
    let got = at_least(&broker, &created, fired + 3).await?;
    check_exactly_once(&got, created.created_ms, EVERY_MS as i64)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_missed_while_down_fire_once_or_are_skipped() -> anyhow::Result<()> {
    let mut broker = broker_with_topic().await?;
    let admin = Admin::new(broker.channel());
    let once = admin.create_schedule("once", interval("ticks", EVERY_MS, pb::MissedTicks::FireOnce)).await?;
    let skip = admin.create_schedule("skip", interval("ticks", EVERY_MS, pb::MissedTicks::Skip)).await?;
    at_least(&broker, &once, 2).await?;
    at_least(&broker, &skip, 2).await?;
    broker.terminate(Duration::from_secs(10)).await?;
    // Down for about eight intervals.
    let down = Duration::from_millis(8 * EVERY_MS);
    tokio::time::sleep(down).await;
    broker.start_again().await?;
    let restarted = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let before_once = stored(&broker, &once).await?.len();
    let got_once = at_least(&broker, &once, before_once + 2).await?;
    check_exactly_once(&got_once, once.created_ms, EVERY_MS as i64)?;
    assert!(got_once.iter().any(|t| t.missed >= 5), "one event stands for the ticks missed while down: {got_once:?}");

    let got_skip = at_least(&broker, &skip, stored(&broker, &skip).await?.len() + 2).await?;
    for (i, t) in got_skip.iter().enumerate() {
        assert_eq!(t.n, i as u64 + 1, "numbered without a repeat or a gap: {got_skip:?}");
    }
    let gap = got_skip.windows(2).map(|w| w[1].due_ms - w[0].due_ms).max().unwrap_or(0);
    assert!(gap >= down.as_millis() as i64, "the ticks due while down were skipped: {got_skip:?}");
    let resumed = got_skip.windows(2).find(|w| w[1].due_ms - w[0].due_ms == gap).map(|w| w[1]);
    let resumed = resumed.expect("a gap");
    assert!(
        resumed.due_ms >= restarted - EVERY_MS as i64 * 5,
        "the first tick after the restart is one due after it ran again: {resumed:?}, restarted {restarted}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_with_the_field_at_fault() -> anyhow::Result<()> {
    let broker = broker_with_topic().await?;
    let admin = Admin::new(broker.channel());
    let cases: Vec<(&str, pb::ScheduleConfig, Code, &str)> = vec![
        ("no-topic", interval("missing", 1000, pb::MissedTicks::FireOnce), Code::NotFound, "topic"),
        (
            "bad-cron",
            pb::ScheduleConfig { topic: "ticks".into(), cron: "61 * * * *".into(), ..Default::default() },
            Code::InvalidArgument,
            "cron",
        ),
        (
            "bad-zone",
            pb::ScheduleConfig {
                topic: "ticks".into(),
                cron: "0 9 * * *".into(),
                time_zone: "Mars/Olympus".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "time_zone",
        ),
        (
            "both",
            pb::ScheduleConfig { cron: "* * * * *".into(), ..interval("ticks", 1000, pb::MissedTicks::FireOnce) },
            Code::InvalidArgument,
            "cron",
        ),
        ("neither", pb::ScheduleConfig { topic: "ticks".into(), ..Default::default() }, Code::InvalidArgument, "cron"),
        ("too-fast", interval("ticks", 10, pb::MissedTicks::FireOnce), Code::InvalidArgument, "interval_ms"),
        ("bad/name", interval("ticks", 1000, pb::MissedTicks::FireOnce), Code::InvalidArgument, "name"),
    ];
    for (name, config, code, field) in cases {
        let e = admin.create_schedule(name, config).await.expect_err(name);
        let sluice_client::Error::Status(s) = &e else { panic!("{name}: {e}") };
        assert_eq!(s.code(), code, "{name}: {s:?}");
        assert!(s.message().contains(field), "{name}: the message names {field}: {}", s.message());
    }
    assert!(admin.list_schedules().await?.is_empty(), "nothing refused was stored");
    admin.create_schedule("dup", interval("ticks", 1000, pb::MissedTicks::FireOnce)).await?;
    let e = admin.create_schedule("dup", interval("ticks", 2000, pb::MissedTicks::FireOnce)).await.expect_err("dup");
    assert_eq!(status_reason(&e), (Code::AlreadyExists, "schedule_exists".into()));
    let e = admin.delete_schedule("nope").await.expect_err("unknown");
    assert_eq!(status_reason(&e), (Code::NotFound, "schedule_not_found".into()));
    Ok(())
}
