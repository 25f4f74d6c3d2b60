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
