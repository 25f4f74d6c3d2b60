//! `sluice events-demo`: the events floor end to end, for the Compose demo
//! (`docker compose run --rm events-demo`), each step printed: CloudEvents in
//! over HTTP, a filtered push trigger delivering them to a handler, a
//! failing handler whose events end in the dead-letter topic, and a schedule
//! whose ticks a trigger pushes to the handler. Exits non-zero
//! if a step does not happen within a minute.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sluice_client::proto as pb;
use sluice_client::Admin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOPIC: &str = "demo-orders";
const STEP: Duration = Duration::from_secs(60);

/// A minimal HTTP/1.1 exchange with `base` (`http://host:port`): status and body.
async fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let authority = base.strip_prefix("http://").context("URLs here start with http://")?.trim_end_matches('/');
    let mut stream =
        tokio::net::TcpStream::connect(authority).await.with_context(|| format!("connecting to {base}"))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.context("no answer")??;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("not an HTTP answer")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Waits until `check` gives `Some`, or fails naming `what`.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {STEP:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn exact(name: &str, value: &str) -> pb::EventFilter {
    let values = [(name.to_owned(), value.to_owned())].into_iter().collect();
    pb::EventFilter { filter: Some(pb::event_filter::Filter::Exact(pb::AttributeValues { values })) }
}

/// Runs the demo against the broker (`admin`), its gateway and the example handler.
pub async fn run(admin: Admin, gateway: &str, handler: &str) -> anyhow::Result<()> {
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    if admin.describe_topic(TOPIC).await.is_err() {
        admin.create_topic(TOPIC, 1, pb::TopicConfig::default()).await?;
    }
    let (shipping, payments) = (format!("demo-shipping-{run}"), format!("demo-payments-{run}"));
    let dead_letters = format!("{payments}-dlq");
    let latest = pb::StartPosition::Latest as i32;
    let push = |path: &str| pb::PushConfig { endpoint: format!("{handler}{path}"), ..Default::default() };
    let config = pb::GroupConfig {
        topic: TOPIC.into(),
        start: latest,
        push: Some(push("/ok")),
        filter: Some(pb::EventFilters { filters: vec![exact("type", "order.created")] }),
        ..Default::default()
    };
    admin.create_group(&shipping, config).await?;
    println!("1. trigger {shipping}: events of type order.created on {TOPIC} are pushed to {handler}/ok");
    let backoff = pb::Backoff { initial_ms: Some(200), max_ms: Some(1000), ..Default::default() };
    let config = pb::GroupConfig {
        topic: TOPIC.into(),
        start: latest,
        push: Some(push("/fail")),
        max_delivery_attempts: Some(3),
        dead_letter_topic: dead_letters.clone(),
        backoff: Some(backoff),
        ..Default::default()
    };
    admin.create_group(&payments, config).await?;
    println!(
        "2. trigger {payments}: every event is pushed to {handler}/fail (always 500), 3 attempts, then {dead_letters}"
    );

    // The handler may still be starting.
    let before = wait_for("the example handler answering", || async { Ok(received(handler).await.ok()) }).await?;
    for (i, kind) in ["order.created", "order.cancelled", "order.created"].iter().enumerate() {
        let event = format!(
            r#"{{"specversion":"1.0","id":"{run}-{i}","source":"/shop","type":"{kind}","data":{{"order":{i},"total":{}}}}}"#,
            10 + i
        );
        let headers = [("content-type", "application/cloudevents+json")];
        let (status, body) =
            http(gateway, "POST", &format!("/v1/topics/{TOPIC}/events"), &headers, event.as_bytes()).await?;
        if status != 202 {
            bail!("the gateway answered {status}: {body}");
        }
        println!("3. POST {gateway}/v1/topics/{TOPIC}/events ({kind}, id {run}-{i}) -> {status} {}", body.trim());
    }
    let handled = wait_for("the handler receiving both order.created events", || async {
        let now = received(handler).await?;
        Ok((now >= before + 2).then_some(now - before))
    })
    .await?;
    println!("4. the handler took {handled} events: the order.created ones; the order.cancelled one was filtered out");
    let stored = wait_for(&format!("three dead letters in {dead_letters}"), || async {
        let letters = admin.peek_dead_letters(&payments, 10).await?;
        Ok((letters.len() >= 3).then_some(letters))
    })
    .await?;
    for letter in &stored {
        let header = |k: &str| {
            letter
                .headers
                .iter()
                .find(|h| h.key == k)
                .map(|h| String::from_utf8_lossy(&h.value).into_owned())
                .unwrap_or_default()
        };
        println!(
            "5. dead letter {}: after {} attempts, reason: {}",
            header("ce_id"),
            header("sluice-dlq-attempts"),
            header("sluice-dlq-reason")
        );
    }
    admin.delete_group(&payments).await?;

    let (reports, schedule) = (format!("demo-reports-{run}"), format!("demo-report-{run}"));
    let config = pb::GroupConfig {
        topic: TOPIC.into(),
        start: latest,
        push: Some(push("/ok")),
        filter: Some(pb::EventFilters { filters: vec![exact("type", "report.due")] }),
        ..Default::default()
    };
    admin.create_group(&reports, config).await?;
    let before = received(handler).await?;
    let timer = pb::ScheduleConfig {
        topic: TOPIC.into(),
        interval_ms: 1000,
        event: Some(pb::ScheduleEvent {
            r#type: "report.due".into(),
            data: br#"{"report":"sales"}"#.to_vec().into(),
            data_content_type: "application/json".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    admin.create_schedule(&schedule, timer).await?;
    println!("6. schedule {schedule}: a report.due event on {TOPIC} every second; trigger {reports} pushes them to {handler}/ok");
    let ticks = wait_for("the handler receiving two scheduled events", || async {
        let now = received(handler).await?;
        Ok((now >= before + 2).then_some(now - before))
    })
    .await?;
    let fired = admin.describe_schedule(&schedule).await?.ticks_fired;
    println!("7. the schedule fired {fired} ticks; the handler took {ticks} report.due events");
    admin.delete_schedule(&schedule).await?;
    admin.delete_group(&reports).await?;
    admin.delete_group(&shipping).await?;
    println!("events demo passed");
    Ok(())
}

/// How many events the example handler has taken.
async fn received(handler: &str) -> anyhow::Result<u64> {
    let (status, body) = http(handler, "GET", "/received", &[], b"").await?;
    if status != 200 {
        bail!("the handler answered {status}: {body}");
    }
    let json: serde_json::Value = serde_json::from_str(body.trim()).with_context(|| format!("handler said {body}"))?;
    json["received"].as_u64().with_context(|| format!("handler said {body}"))
}
