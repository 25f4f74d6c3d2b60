//! Delayed delivery against the real broker: a message that names its
//! earliest delivery time (`sluice-delay-ms`, `sluice-deliver-at`, or the
//! CloudEvents extension `deliverat` over HTTP) is not delivered before it,
//! is delivered soon after as attempt 1, keeps its time across SIGKILL, holds
//! back later messages of its partition in an ordered group, and an
//! unreadable time is refused when produced.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_client::proto as pb;
use sluice_client::Admin;
use sluice_tests::http::post;
use sluice_tests::{group_config, TestBroker};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn message(value: &str, headers: &[(&str, String)]) -> pb::Message {
    pb::Message {
        key: None,
        value: value.as_bytes().to_vec().into(),
        headers: headers
            .iter()
            .map(|(k, v)| pb::Header { key: (*k).into(), value: v.as_bytes().to_vec().into() })
            .collect(),
    }
}

async fn produce(broker: &TestBroker, messages: Vec<pb::Message>) -> Result<(), tonic::Status> {
    let request = pb::ProduceRequest { topic: "jobs".into(), partition: Some(0), messages, ..Default::default() };
    pb::producer_client::ProducerClient::new(broker.channel()).produce(request).await.map(|_| ())
}

/// Pulls and acks for `wait`, returning (value, attempt, when) of each delivery.
async fn pull_for(broker: &TestBroker, group: &str, wait: Duration) -> anyhow::Result<Vec<(String, u32, i64)>> {
    let mut client = pb::consumer_client::ConsumerClient::new(broker.channel());
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        let request =
            pb::PullRequest { group: group.into(), consumer_id: "c".into(), max_messages: 100, max_wait_ms: 100 };
        let pulled = client.pull(request).await?.into_inner().messages;
        let at = now_ms();
        for m in &pulled {
            let value = m.record.as_ref().map(|r| String::from_utf8_lossy(&r.value).into_owned()).unwrap_or_default();
            got.push((value, m.attempt, at));
        }
        if !pulled.is_empty() {
            let ack_ids = pulled.into_iter().map(|m| m.ack_id).collect();
            client.ack(pb::AckRequest { group: group.into(), ack_ids }).await?;
        }
    }
    Ok(got)
}

async fn broker_with_topic(extra: &[&str]) -> anyhow::Result<TestBroker> {
    let broker = TestBroker::start_with(extra).await?;
    Admin::new(broker.channel()).create_topic("jobs", 1, pb::TopicConfig::default()).await?;
    Ok(broker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_wait_for_their_time_and_keep_it_across_sigkill() -> anyhow::Result<()> {
    let mut broker = broker_with_topic(&["--gateway-listen", "127.0.0.1:0"]).await?;
    Admin::new(broker.channel()).create_group("workers", group_config("jobs", 5000)).await?;
    let start = now_ms();
    let at = start + 2500;
    produce(
        &broker,
        vec![
            message("later-relative", &[("sluice-delay-ms", "1500".into())]),
            message("now", &[]),
            message("later-absolute", &[("sluice-deliver-at", at.to_string())]),
        ],
    )
    .await?;
    let deliver_at = rfc3339(start + 3500);
    let gateway = broker.gateway_addr.clone().expect("gateway on");
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", "e1"),
        ("ce-source", "/t"),
        ("ce-type", "t"),
        ("ce-deliverat", deliver_at.as_str()),
    ];
    let answer = post(&gateway, "/v1/topics/jobs/events", &headers, b"later-event").await?;
    assert_eq!(answer.status, 202);

    let got = pull_for(&broker, "workers", Duration::from_millis(800)).await?;
    let values: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(values, ["now"], "only the undelayed message at first");

    // Held durably: a SIGKILL and restart neither forget nor shorten the wait.
    broker.kill9().await?;
    broker.restart().await?;
    let got = pull_for(&broker, "workers", Duration::from_millis(5000)).await?;
    let expected = [("later-relative", start + 1500), ("later-absolute", at), ("later-event", start + 3500)];
    for (value, due) in expected {
        let (_, attempt, when) =
            got.iter().find(|g| g.0 == value).ok_or_else(|| anyhow::anyhow!("{value} never delivered: {got:?}"))?;
        assert!(*when >= due, "{value} delivered {} ms early", due - when);
        assert!(*when < due + 2000, "{value} delivered {} ms late", when - due);
        assert_eq!(*attempt, 1, "{value}: the wait is not an attempt");
    }
    assert_eq!(got.len(), 3, "each once: {got:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_holds_back_its_partition_in_an_ordered_group() -> anyhow::Result<()> {
    let broker = broker_with_topic(&[]).await?;
    let config = pb::GroupConfig { mode: pb::GroupMode::Ordered as i32, ..group_config("jobs", 5000) };
    Admin::new(broker.channel()).create_group("ordered", config).await?;
    let start = now_ms();
    produce(&broker, vec![message("first", &[("sluice-delay-ms", "1000".into())]), message("second", &[])]).await?;
    let got = pull_for(&broker, "ordered", Duration::from_millis(3000)).await?;
    let values: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(values, ["first", "second"], "order kept: the later message waits for the delayed one");
    assert!(got[1].2 >= start + 1000, "the later message was held back {} ms, not the whole delay", got[1].2 - start);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_delivery_times_are_refused() -> anyhow::Result<()> {
    let broker = broker_with_topic(&["--gateway-listen", "127.0.0.1:0"]).await?;
    for (header, value) in [("sluice-deliver-at", "tomorrow"), ("sluice-delay-ms", "-1")] {
        let refused = produce(&broker, vec![message("x", &[(header, value.into())])]).await.expect_err(header);
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{header}: {}", refused.message());
        assert!(refused.message().contains(header), "{}", refused.message());
    }
    let gateway = broker.gateway_addr.clone().expect("gateway on");
    let headers =
        [("ce-specversion", "1.0"), ("ce-id", "e"), ("ce-source", "/t"), ("ce-type", "t"), ("ce-deliverat", "soon")];
    let answer = post(&gateway, "/v1/topics/jobs/events", &headers, b"x").await?;
    assert_eq!(answer.status, 400, "{}", String::from_utf8_lossy(&answer.body));
    let offsets = Admin::new(broker.channel()).describe_topic("jobs").await?;
    let stored: u64 = offsets.partitions.iter().map(|p| p.latest_offset).sum();
    assert_eq!(stored, 0, "nothing refused is stored");
    Ok(())
}

/// `ms` as RFC 3339 UTC with milliseconds.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("a time in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
