//! The README's tour: the `sluice` CLI creates a topic, produces and consumes.

use std::io::Write;
use std::process::{Command, Stdio};

use sluice_tests::{binary, TestBroker};

fn sluice(broker: &TestBroker, args: &[&str], stdin: Option<&str>) -> anyhow::Result<(bool, String, String)> {
    let mut child = Command::new(binary("sluice"))
        .args(["--addr", &broker.url()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin {
        child.stdin.take().map(|mut s| s.write_all(input.as_bytes())).transpose()?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    Ok((out.status.success(), String::from_utf8(out.stdout)?, String::from_utf8(out.stderr)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_tour_creates_produces_and_consumes() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let (ok, out, err) = sluice(&broker, &["topic", "create", "orders", "--partitions", "3"], None)?;
    assert!(ok, "{err}");
    assert!(out.contains("orders") && out.contains("partitions=3"), "{out}");
    let (ok, _, err) = sluice(&broker, &["produce", "orders", "--key", "customer-1"], Some("first\nsecond\nthird\n"))?;
    assert!(ok, "{err}");
    let (ok, _, err) = sluice(&broker, &["produce", "orders", "--count", "1000", "--size", "64"], None)?;
    assert!(ok, "{err}");
    let (ok, out, err) = sluice(&broker, &["consume", "orders"], None)?;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1003);
    let keyed: Vec<&str> = out.lines().filter(|l| !l.starts_with('x')).collect();
    assert_eq!(keyed, vec!["first", "second", "third"], "one key keeps its order");
    let (ok, out, _) = sluice(&broker, &["topic", "describe", "orders"], None)?;
    assert!(ok && out.contains("partition\tearliest"), "{out}");
    let (ok, _, err) = sluice(&broker, &["group", "create", "billing", "--topic", "orders"], None)?;
    assert!(ok, "{err}");
    let (ok, out, err) = sluice(&broker, &["consume", "orders", "--group", "billing"], None)?;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1003, "a group member gets every message once");
    let (ok, out, _) = sluice(&broker, &["group", "describe", "billing"], None)?;
    assert!(ok && out.contains("backlog=0"), "what was printed was acked: {out}");
    let (ok, out, err) = sluice(&broker, &["status"], None)?;
    assert!(ok && out.contains("sluice-broker") && out.contains("billing\torders\t0"), "status: {out}{err}");
    let (ok, out, _) = sluice(&broker, &["--output", "json", "group", "describe", "billing"], None)?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert!(
        ok && v["backlog"] == 0 && v["topic"] == "orders" && v["partitions"].as_array().map(Vec::len) == Some(3),
        "{out}"
    );
    let (ok, out, _) = sluice(&broker, &["topic", "list", "--output", "json"], None)?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert!(ok && v[0]["name"] == "orders" && v[0]["partitions"] == 3, "{out}");
    let (ok, out, _) =
        sluice(&broker, &["consume", "orders", "--partition", "0", "--max", "2", "--output", "json"], None)?;
    let lines: Vec<serde_json::Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert!(ok && lines.len() == 2 && lines[0]["offset"] == 0 && lines[1]["offset"] == 1, "JSON lines: {out}");
    let (ok, _, err) = sluice(&broker, &["consume", "missing"], None)?;
    assert!(!ok && err.contains("does not exist"), "a clear error: {err}");
    Ok(())
}

/// Runs `sluice ARGS | head -n 1` in bash with pipefail, so the exit status is
/// sluice's own; returns (status ok, what head printed, sluice's stderr).
async fn sluice_into_head(broker: &TestBroker, args: &str) -> anyhow::Result<(bool, String, String)> {
    let script = format!("set -o pipefail; \"$0\" --addr {} {args} | head -n 1", broker.url());
    let out =
        tokio::process::Command::new("bash").arg("-c").arg(script).arg(binary("sluice")).kill_on_drop(true).output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), out).await??;
    Ok((out.status.success(), String::from_utf8(out.stdout)?, String::from_utf8(out.stderr)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_into_head_ends_quietly_when_the_pipe_closes() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = sluice_client::Admin::new(broker.channel());
    admin.create_topic("lines", 1, Default::default()).await?;
    // 5000 lines of 101 bytes: far more than a pipe holds (64 KiB), so sluice is
    // still writing when head exits and its next write fails with EPIPE.
    sluice_tests::produce_values(broker.channel(), "lines", (0..5000).map(|i| format!("{i:0100}"))).await?;
    sluice_tests::create_group(broker.channel(), "g", sluice_tests::group_config("lines", 30_000)).await?;
    for args in
        ["consume lines", "consume lines --print-offsets", "--output json consume lines", "consume lines --group g"]
    {
        let (ok, out, err) = sluice_into_head(&broker, args).await?;
        assert!(ok, "`sluice {args} | head` exits 0; stderr: {err}");
        assert!(!err.contains("Broken pipe") && err.is_empty(), "`sluice {args} | head` is quiet: {err}");
        assert_eq!(out.lines().count(), 1, "head printed its one line: {out}");
    }
    Ok(())
}

/// Runs sluice with stdout on a pipe whose reader has already exited, so the
/// very first write fails with EPIPE whatever its size.
fn sluice_into_closed_pipe(broker: &TestBroker, args: &[&str]) -> anyhow::Result<(std::process::ExitStatus, String)> {
    let mut gone = Command::new("true").stdin(Stdio::piped()).spawn()?;
    let write_end = gone.stdin.take().ok_or_else(|| anyhow::anyhow!("pipe to `true`"))?;
    gone.wait()?;
    let out = Command::new(binary("sluice"))
        .args(["--addr", &broker.url()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()?;
    Ok((out.status, String::from_utf8(out.stderr)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_printing_command_ends_quietly_on_a_closed_pipe() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = sluice_client::Admin::new(broker.channel());
    admin.create_topic("t", 2, Default::default()).await?;
    sluice_tests::produce_values(broker.channel(), "t", (0..3).map(|i| format!("m{i}"))).await?;
    let group = sluice_client::proto::GroupConfig {
        max_delivery_attempts: Some(3),
        dead_letter_topic: "t.dlq".into(),
        ..sluice_tests::group_config("t", 30_000)
    };
    sluice_tests::create_group(broker.channel(), "g", group).await?;
    let commands: &[&[&str]] = &[
        &["status"],
        &["--output", "json", "status"],
        &["topic", "list"],
        &["--output", "json", "topic", "list"],
        &["topic", "describe", "t"],
        &["--output", "json", "topic", "describe", "t"],
        &["topic", "create", "u"],
        &["group", "list"],
        &["group", "describe", "g"],
        &["--output", "json", "group", "describe", "g"],
        &["group", "dlq", "peek", "g"],
        &["group", "dlq", "purge", "g"],
        &["consume", "t"],
        &["smoke", "--count", "2"],
        &["bench", "produce", "--messages", "10"],
    ];
    for args in commands {
        let (status, err) = sluice_into_closed_pipe(&broker, args)?;
        assert!(
            status.success() && err.is_empty(),
            "`sluice {}` into a closed pipe: {status}, stderr: {err}",
            args.join(" ")
        );
    }
    Ok(())
}

/// The events tour: a push group with a filter made by the CLI gets exactly
/// the matching events `sluice event publish` sends; `--output json` shows
/// the push and filter settings; `--no-filter` and `--no-push` undo them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tour_publishes_filters_and_pushes() -> anyhow::Result<()> {
    use sluice_tests::sink::{Reply, Sink};
    let broker = TestBroker::start_with(&["--push-allowed-endpoints", "127.0.0.1"]).await?;
    let sink = Sink::start(|_| Reply::ok()).await?;
    let (ok, _, err) = sluice(&broker, &["topic", "create", "orders", "--partitions", "2"], None)?;
    assert!(ok, "{err}");
    let endpoint = sink.url("/orders");
    let args = [
        "group",
        "create",
        "shipping",
        "--topic",
        "orders",
        "--push-endpoint",
        &endpoint,
        "--push-batch-size",
        "5",
        "--push-header",
        "X-Team: shipping",
        "--filter",
        "type=order.created",
        "--filter",
        r#"{"not":{"prefix":{"source":"/test"}}}"#,
    ];
    let (ok, out, err) = sluice(&broker, &args, None)?;
    assert!(ok, "{err}");
    assert!(out.contains("push=") && out.contains("filter="), "{out}");
    for (kind, source) in [("order.created", "/shop"), ("order.created", "/test"), ("order.paid", "/shop")] {
        let args = ["event", "publish", "orders", "--type", kind, "--source", source, "--data", r#"{"total":12}"#];
        let (ok, out, err) = sluice(&broker, &args, None)?;
        assert!(ok && out.starts_with("published "), "{out}{err}");
    }
    let got = sink.wait_until(std::time::Duration::from_secs(20), "the matching event", |r| !r.is_empty()).await?;
    assert_eq!(got[0].header("ce-type"), "order.created");
    assert_eq!(got[0].header("ce-source"), "/shop");
    assert_eq!(got[0].header("content-type"), "application/json");
    assert_eq!(got[0].header("x-team"), "shipping");
    assert_eq!(got[0].body.as_ref(), br#"{"total":12}"#);

    let (ok, out, _) = sluice(&broker, &["--output", "json", "group", "describe", "shipping"], None)?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert!(ok && v["push"]["endpoint"] == endpoint.as_str() && v["push"]["batch_size"] == 5, "{out}");
    assert_eq!(v["filter"][0]["exact"]["type"], "order.created", "{out}");
    assert_eq!(v["filter"][1]["not"]["prefix"]["source"], "/test", "{out}");
    let (ok, out, err) = sluice(&broker, &["--output", "json", "group", "update", "shipping", "--no-filter"], None)?;
    assert!(ok && !out.contains("filter="), "{out}{err}");
    let (ok, out, err) = sluice(&broker, &["group", "update", "shipping", "--no-push"], None)?;
    assert!(ok && !out.contains("push="), "{out}{err}");
    let (ok, _, err) =
        sluice(&broker, &["event", "publish", "orders", "--type", "t", "--source", "/s", "--attr", "Bad=x"], None)?;
    assert!(!ok && err.contains("attribute"), "a clear error: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_tour_creates_lists_as_json_and_deletes() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let (ok, _, err) = sluice(&broker, &["topic", "create", "jobs"], None)?;
    assert!(ok, "{err}");
    let args = [
        "schedule",
        "create",
        "nightly",
        "--topic",
        "jobs",
        "--cron",
        "0 2 * * *",
        "--time-zone",
        "Europe/Paris",
        "--type",
        "report.due",
        "--data",
        r#"{"report":"sales"}"#,
        "--attr",
        "team=ops",
    ];
    let (ok, out, err) = sluice(&broker, &args, None)?;
    assert!(ok && out.starts_with("created schedule nightly"), "{out}{err}");
    let args = ["schedule", "create", "beat", "--topic", "jobs", "--every", "200ms", "--missed", "skip"];
    let (ok, _, err) = sluice(&broker, &args, None)?;
    assert!(ok, "{err}");
    let (ok, out, err) =
        sluice(&broker, &["schedule", "create", "bad", "--topic", "jobs", "--every", "5 parsecs"], None)?;
    assert!(!ok && err.contains("5 parsecs"), "{out}{err}");
    let fired = sluice_tests::eventually(std::time::Duration::from_secs(20), "two ticks of beat", || async {
        let (ok, out, err) = sluice(&broker, &["--output", "json", "schedule", "list"], None)?;
        anyhow::ensure!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let beat = v.as_array().and_then(|a| a.iter().find(|s| s["name"] == "beat")).cloned().unwrap_or_default();
        Ok((beat["ticks_fired"].as_u64().unwrap_or(0) >= 2).then_some(v))
    })
    .await?;
    let nightly = fired.as_array().and_then(|a| a.iter().find(|s| s["name"] == "nightly")).cloned().unwrap_or_default();
    assert_eq!(nightly["cron"], "0 2 * * *");
    assert_eq!(nightly["time_zone"], "Europe/Paris");
    assert_eq!(nightly["missed_ticks"], "fire-once");
    assert_eq!(nightly["event"]["type"], "report.due");
    assert_eq!(nightly["event"]["datacontenttype"], "application/json");
    assert_eq!(nightly["event"]["attributes"]["team"], "ops");
    assert!(nightly["next_tick_ms"].as_i64().unwrap_or(0) > 0, "{nightly}");
    let (ok, out, _) = sluice(&broker, &["schedule", "list"], None)?;
    assert!(ok && out.contains("nightly") && out.contains("Europe/Paris"), "{out}");
    let (ok, out, err) = sluice(&broker, &["schedule", "delete", "beat"], None)?;
    assert!(ok && out.contains("deleted schedule beat"), "{out}{err}");
    let (ok, _, err) = sluice(&broker, &["schedule", "describe", "beat"], None)?;
    assert!(!ok && err.contains("does not exist"), "{err}");
    Ok(())
}
