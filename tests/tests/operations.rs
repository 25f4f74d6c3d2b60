//! Operability: metrics that follow the backlog (also with no consumer), the
//! KEDA external scaler, SIGTERM during a produce run, and configuration
//! precedence (flag > environment > file) with clear errors.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_client::proto as pb;
use sluice_client::{Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, RetryConfig};
use sluice_proto::externalscaler as ks;
use sluice_proto::externalscaler::external_scaler_client::ExternalScalerClient;
use sluice_tests::{binary, create_group, eventually, group_config, message, produce_values, read_all, TestBroker};

async fn produce(broker: &TestBroker, topic: &str, values: &[&str]) -> anyhow::Result<()> {
    produce_values(broker.channel(), topic, values.iter().map(|v| v.to_string())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_backlog_acks_and_dead_letters() -> anyhow::Result<()> {
    let broker = TestBroker::start_with(&["--metrics-listen", "127.0.0.1:0", "--metrics-refresh-ms", "100"]).await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("m", 2, pb::TopicConfig::default()).await?;
    let config = pb::GroupConfig {
        max_delivery_attempts: Some(1),
        dead_letter_topic: "m.dlq".into(),
        ..group_config("m", 10_000)
    };
    create_group(broker.channel(), "g", config).await?;
    let values: Vec<String> = (0..19).map(|i| format!("v{i}")).chain(["poison".to_owned()]).collect();
    produce(&broker, "m", &values.iter().map(String::as_str).collect::<Vec<_>>()).await?;

    eventually(Duration::from_secs(10), "backlog gauge = 20 with no consumer connected", || async {
        Ok((broker.metric("sluice_group_backlog_messages", &[("group", "g")]).await? == 20.0).then_some(()))
    })
    .await?;
    assert_eq!(broker.metric("sluice_produce_messages_total", &[("topic", "m")]).await?, 20.0);
    assert!(broker.metric("sluice_group_oldest_unacked_age_seconds", &[("group", "g")]).await? >= 0.0);
    assert!(broker.metric("sluice_topic_stored_bytes", &[("topic", "m")]).await? > 0.0);

    let c = Consumer::new(broker.channel(), "g", ConsumerConfig::default());
    let got = c.pull(100, Duration::from_secs(2)).await?;
    let (bad, good): (Vec<_>, Vec<_>) = got.into_iter().partition(|m| m.record.value == "poison");
    c.ack(good.into_iter().map(|m| m.ack_id).collect()).await?;
    c.nack(bad.into_iter().map(|m| m.ack_id).collect(), None, "bad").await?;
    eventually(Duration::from_secs(10), "backlog 0 and one dead letter in the gauges", || async {
        let backlog = broker.metric("sluice_group_backlog_messages", &[("group", "g")]).await?;
        let dead = broker.metric("sluice_group_dead_lettered_messages", &[("group", "g")]).await?;
        Ok((backlog == 0.0 && dead == 1.0).then_some(()))
    })
    .await?;
    let _ = admin.describe_topic("missing").await;
    eventually(Duration::from_secs(5), "rejected requests counted by reason", || async {
        Ok((broker.metric("sluice_rejected_requests_total", &[("reason", "topic_not_found")]).await? >= 1.0)
            .then_some(()))
    })
    .await?;
    let text = broker.scrape().await?;
    for name in [
        "sluice_storage_write_seconds",
        "sluice_produce_latency_seconds",
        "sluice_storage_wal_bytes",
        "sluice_connections_accepted_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    Ok(())
}

fn scaled(group: &str, extra: &[(&str, &str)]) -> ks::ScaledObjectRef {
    let mut scaler_metadata: std::collections::HashMap<String, String> =
        extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    scaler_metadata.insert("group".into(), group.into());
    ks::ScaledObjectRef { name: "consumers".into(), namespace: "default".into(), scaler_metadata }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_external_scaler_reports_the_group_backlog() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("jobs", 1, pb::TopicConfig::default()).await?;
    create_group(broker.channel(), "workers", group_config("jobs", 10_000)).await?;
    let mut scaler = ExternalScalerClient::new(broker.channel());
    assert!(!scaler.is_active(scaled("workers", &[])).await?.into_inner().result, "idle with no backlog");
    let values: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    produce(&broker, "jobs", &values.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    assert!(scaler.is_active(scaled("workers", &[])).await?.into_inner().result);
    assert!(
        !scaler.is_active(scaled("workers", &[("activation", "50")])).await?.into_inner().result,
        "below activation"
    );
    let spec = scaler.get_metric_spec(scaled("workers", &[("target", "10")])).await?.into_inner();
    assert_eq!(spec.metric_specs[0].target_size, 10);
    let req = ks::GetMetricsRequest {
        scaled_object_ref: Some(scaled("workers", &[])),
        metric_name: spec.metric_specs[0].metric_name.clone(),
    };
    let value = scaler.get_metrics(req.clone()).await?.into_inner().metric_values[0].metric_value;
    assert_eq!(value, 30, "the metric is the group's backlog");
    let mut pushes = scaler.stream_is_active(scaled("workers", &[])).await?.into_inner();
    assert_eq!(pushes.message().await?.map(|r| r.result), Some(true));
    let c = Consumer::new(broker.channel(), "workers", ConsumerConfig::default());
    let got = c.pull(100, Duration::from_secs(2)).await?;
    c.ack(got.into_iter().map(|m| m.ack_id).collect()).await?;
    assert_eq!(scaler.get_metrics(req).await?.into_inner().metric_values[0].metric_value, 0);
    let went_idle = tokio::time::timeout(Duration::from_secs(10), pushes.message()).await??;
    assert_eq!(went_idle.map(|r| r.result), Some(false), "the push stream reports the change");
    let missing = scaler.is_active(scaled("nope", &[])).await.expect_err("unknown group");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let bad = scaler.is_active(scaled("workers", &[("metric", "vibes")])).await.expect_err("bad metric");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_produce_keeps_every_acked_message_and_exits_zero() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("t", 2, pb::TopicConfig::default()).await?;
    let config =
        ProducerConfig { retry: RetryConfig { max_retries: 0, ..RetryConfig::default() }, ..ProducerConfig::default() };
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..3 {
        let (producer, acked) = (Producer::new(broker.channel(), config.clone()), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000 {
                let v = format!("{w}-{i}");
                let Ok(ack) = producer.enqueue("t", None, message(v.clone())).await else { break };
                match tokio::time::timeout(Duration::from_secs(20), ack).await {
                    Ok(Ok(_)) => {
                        acked.lock().expect("lock").insert(v);
                    }
                    _ => break,
                }
            }
        }));
    }
    eventually(Duration::from_secs(20), "produce under way", || async {
        Ok((acked.lock().expect("lock").len() > 500).then_some(()))
    })
    .await?;
    let code = broker.terminate(Duration::from_secs(15)).await?;
    assert_eq!(code, Some(0), "clean exit on SIGTERM; log:\n{}", broker.log_tail());
    for t in tasks {
        t.await?;
    }
    broker.start_again().await?;
    let mut stored = HashSet::new();
    for p in 0..2 {
        stored.extend(
            read_all(broker.channel(), "t", p)
                .await?
                .into_iter()
                .map(|r| String::from_utf8_lossy(&r.value).into_owned()),
        );
    }
    let acked = acked.lock().expect("lock");
    let missing: Vec<&String> = acked.iter().filter(|v| !stored.contains(*v)).collect();
    assert!(missing.is_empty(), "{} acked messages lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(3)]);
    Ok(())
}

async fn default_retention(envs: &[(&str, &str)], flags: &[&str]) -> anyhow::Result<u64> {
    let broker = TestBroker::start_with_env(flags, envs).await?;
    let admin = Admin::new(broker.channel());
    let t = admin.create_topic("c", 1, pb::TopicConfig::default()).await?;
    Ok(t.config.map_or(0, |c| c.retention_ms))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_precedence_is_flag_then_env_then_file_and_bad_values_stop_startup() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "retention-ms = 1000000\n")?;
    let file = file.to_str().expect("utf-8 path");
    assert_eq!(default_retention(&[], &["--config", file]).await?, 1_000_000);
    assert_eq!(default_retention(&[("SLUICE_RETENTION_MS", "2000000")], &["--config", file]).await?, 2_000_000);
    assert_eq!(
        default_retention(&[("SLUICE_RETENTION_MS", "2000000")], &["--config", file, "--retention-ms", "3000000"])
            .await?,
        3_000_000
    );

    let out = std::process::Command::new(binary("sluice-broker"))
        .args(["--max-message-bytes", "0", "--data-dir"])
        .arg(dir.path())
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("max-message-bytes") && err.contains("1..=16777216"),
        "names the setting and its range: {err}"
    );
    std::fs::write(dir.path().join("bad.toml"), "no-such-setting = 1\n")?;
    let out = std::process::Command::new(binary("sluice-broker"))
        .arg("--config")
        .arg(dir.path().join("bad.toml"))
        .output()?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-setting"), "unknown keys are named");
    let help = std::process::Command::new(binary("sluice-broker")).arg("--help").output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("SLUICE_RETENTION_MS") && help.contains("[default: 604800000]"),
        "help lists env vars and defaults"
    );
    Ok(())
}
