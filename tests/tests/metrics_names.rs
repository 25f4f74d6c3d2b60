//! Every exported metric has a HELP text, a `sluice_` name, and counters end
//! in `_total` — what `promtool check metrics` asks of an exposition — after
//! traffic that touches every part of the broker (produce, fetch, a group
//! pulling, acking and dead-lettering, a refused request). If `promtool` is on
//! the PATH, it checks the exposition too.

use std::collections::HashSet;
use std::time::Duration;

use sluice_client::proto as pb;
use sluice_client::Admin;
use sluice_tests::{create_group, eventually, group_config, message, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_has_help_and_a_conventional_name() -> anyhow::Result<()> {
    let broker = TestBroker::start_with(&["--metrics-listen", "127.0.0.1:0", "--metrics-refresh-ms", "100"]).await?;
    let ch = broker.channel();
    let admin = Admin::new(ch.clone());
    admin.create_topic("m", 1, pb::TopicConfig::default()).await?;
    admin.create_topic("m-dlq", 1, pb::TopicConfig::default()).await?;
    let mut config = group_config("m", 30_000);
    config.max_delivery_attempts = Some(1);
    config.dead_letter_topic = "m-dlq".into();
    create_group(ch.clone(), "g", config).await?;
    let mut producer = pb::producer_client::ProducerClient::new(ch.clone());
    let request = pb::ProduceRequest {
        topic: "m".into(),
        messages: (0..4).map(|i| message(format!("v{i}"))).collect(),
        ..Default::default()
    };
    producer.produce(request).await?;
    let _ = producer.produce(pb::ProduceRequest { topic: "absent".into(), ..Default::default() }).await;
    sluice_tests::read_all(ch.clone(), "m", 0).await?;
    let mut consumer = pb::consumer_client::ConsumerClient::new(ch.clone());
    let pull = pb::PullRequest { group: "g".into(), consumer_id: "c".into(), max_messages: 4, max_wait_ms: 1000 };
    let got = consumer.pull(pull).await?.into_inner().messages;
    let (first, rest) = got.split_first().expect("four messages");
    consumer.ack(pb::AckRequest { group: "g".into(), ack_ids: vec![first.ack_id.clone()] }).await?;
    let ids = rest.iter().map(|m| m.ack_id.clone()).collect();
    consumer.nack(pb::NackRequest { group: "g".into(), ack_ids: ids, ..Default::default() }).await?;
    eventually(Duration::from_secs(10), "dead letters to be counted", || async {
        Ok((broker.metric("sluice_group_dead_lettered_total", &[]).await? >= 3.0).then_some(()))
    })
    .await?;

    let text = broker.scrape().await?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or(&text);
    let mut helped = HashSet::new();
    let mut typed = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap_or("").to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            typed.push((it.next().unwrap_or("").to_owned(), it.next().unwrap_or("").to_owned()));
        }
    }
    assert!(typed.len() >= 15, "traffic exported most metrics: {typed:?}");
    for (name, kind) in &typed {
        assert!(helped.contains(name), "metric {name} ({kind}) has no HELP text: describe it in broker/src/metrics.rs");
        assert!(name.starts_with("sluice_"), "metric {name} is not named sluice_<area>_<what>_<unit>");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} must end in _total");
        }
    }
    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(body.as_bytes())?;
            }
            child.wait_with_output()
        })
    {
        let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
    }
    Ok(())
}
