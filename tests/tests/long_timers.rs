//! A delayed message and a schedule with the same long period, across
//! SIGKILLs spread over that period: the message is not delivered early,
//! arrives once as attempt 1 soon after its time, and the schedule's ticks
//! are each stored once on their grid. `make test` runs it with a period of
//! 3 s; `make soak` with SLUICE_LONG_TIMER_SECS=3600 (an hour, three kills).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_client::proto as pb;
use sluice_client::Admin;
use sluice_tests::ticks::{check_exactly_once, ticks};
use sluice_tests::{group_config, read_all, TestBroker};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_delay_and_a_schedule_survive_sigkills_over_their_period() -> anyhow::Result<()> {
    let period_s: u64 = std::env::var("SLUICE_LONG_TIMER_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let period_ms = period_s * 1000;
    let mut broker = TestBroker::start().await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("later", 1, pb::TopicConfig::default()).await?;
    admin.create_topic("timer", 1, pb::TopicConfig::default()).await?;
    admin.create_group("workers", group_config("later", 5000)).await?;
    let schedule = pb::ScheduleConfig { topic: "timer".into(), interval_ms: period_ms, ..Default::default() };
    let created = admin.create_schedule("long", schedule).await?;
    let due = now_ms() + period_ms as i64;
    let delayed = pb::Message {
        key: None,
        value: b"an hour later".to_vec().into(),
        headers: vec![pb::Header { key: "sluice-deliver-at".into(), value: due.to_string().into_bytes().into() }],
    };
    let request =
        pb::ProduceRequest { topic: "later".into(), partition: Some(0), messages: vec![delayed], ..Default::default() };
    pb::producer_client::ProducerClient::new(broker.channel()).produce(request).await?;
    println!(
        "a message delayed {period_s} s and a schedule ticking every {period_s} s; three SIGKILLs before they are due"
    );

    let mut consumer = pb::consumer_client::ConsumerClient::new(broker.channel());
    for kill in 1..=3u64 {
        // Pulls until a quarter-period mark: nothing may come before the message is due.
        let until = due - period_ms as i64 + (kill * period_ms / 4) as i64;
        while now_ms() < until {
            let pull = pb::PullRequest {
                group: "workers".into(),
                consumer_id: "c".into(),
                max_messages: 10,
                max_wait_ms: 200,
            };
            let early = consumer.pull(pull).await?.into_inner().messages;
            assert!(early.is_empty() || now_ms() >= due, "delivered {} ms early", due - now_ms());
        }
        broker.kill9().await?;
        broker.restart().await?;
        consumer = pb::consumer_client::ConsumerClient::new(broker.channel());
        println!("kill {kill} done");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(period_ms) + Duration::from_secs(30);
    let (message, when) = loop {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the delayed message never came");
        let pull =
            pb::PullRequest { group: "workers".into(), consumer_id: "c".into(), max_messages: 10, max_wait_ms: 500 };
        let mut got = consumer.pull(pull).await?.into_inner().messages;
        if let Some(m) = got.pop() {
            break (m, now_ms());
        }
    };
    assert!(when >= due, "delivered {} ms early", due - when);
    assert!(when < due + 2000, "delivered {} ms late", when - due);
    assert_eq!(message.attempt, 1, "the wait is not an attempt");
    let ack = pb::AckRequest { group: "workers".into(), ack_ids: vec![message.ack_id] };
    consumer.ack(ack).await?;

    // The schedule's first tick was due with the message; wait for it and one more.
    let got = sluice_tests::eventually(
        Duration::from_millis(2 * period_ms) + Duration::from_secs(30),
        "two ticks",
        || async {
            let got = ticks(&read_all(broker.channel(), "timer", 0).await?, created.id)?;
            Ok((got.len() >= 2).then_some(got))
        },
    )
    .await?;
    check_exactly_once(&got, created.created_ms, period_ms as i64)?;
    Ok(())
}
