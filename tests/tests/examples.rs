//! The Rust client's examples (`client/examples/`), run as the README tells
//! users to, in order, against a real broker: produce with the `Message`
//! builder, consume with a handler that acks and nacks until one message is
//! dead-lettered, then peek, redrive and purge the dead letters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context};
use sluice_tests::{example, read_all, TestBroker};

/// Runs an example to its end (they are bounded; this deadline only guards the
/// test) and returns its stdout. `addr_arg` passes the broker as an argument
/// instead of `SLUICE_ADDR`, so both ways the examples take it are used.
async fn run(broker: &TestBroker, name: &str, args: &[&str], addr_arg: bool) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(example(name));
    cmd.args(args).kill_on_drop(true);
    if addr_arg {
        cmd.arg(broker.url());
    } else {
        cmd.env("SLUICE_ADDR", broker.url());
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .with_context(|| format!("example {name} did not end within 120 s"))??;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "example {name} {args:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_produce_consume_and_handle_dead_letters() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;

    let out = run(&broker, "produce", &[], true).await?;
    let stored: Vec<&str> = out.lines().filter(|l| l.starts_with("stored order ")).collect();
    assert_eq!(stored.len(), 10, "every order is acknowledged:\n{out}");

    // What the builder put on the wire: value, key and headers, and one key per partition.
    let mut orders = BTreeMap::new();
    for p in 0..3 {
        for r in read_all(broker.channel(), "orders", p).await? {
            orders.insert(String::from_utf8(r.value.to_vec())?, r);
        }
    }
    assert_eq!(orders.len(), 10, "ten distinct orders stored: {:?}", orders.keys());
    let bad = orders.get("order 10").context("order 10 stored")?;
    assert_eq!(bad.key.as_deref(), Some(&b"customer-1"[..]));
    let headers: Vec<(&str, &[u8])> = bad.headers.iter().map(|h| (h.key.as_str(), &h.value[..])).collect();
    assert_eq!(headers, vec![("amount", &b"ten"[..])]);
    let third = orders.get("order 3").context("order 3 stored")?;
    let headers: Vec<(&str, &[u8])> = third.headers.iter().map(|h| (h.key.as_str(), &h.value[..])).collect();
    assert_eq!(headers, vec![("amount", &b"30"[..]), ("source", &b"produce-example"[..])]);
    for customer in ["customer-0", "customer-1", "customer-2"] {
        let key = Some(customer.as_bytes());
        let partitions: BTreeSet<u32> =
            orders.values().filter(|r| r.key.as_deref() == key).map(|r| r.partition).collect();
        assert_eq!(partitions.len(), 1, "{customer}'s orders share a partition");
    }

    let out = run(&broker, "consume", &[], false).await?;
    for i in 1..=9 {
        let billed = format!("billed order {i}: amount {}", i * 10);
        assert!(out.lines().any(|l| l.starts_with(&billed)), "`{billed}` in:\n{out}");
    }
    assert!(out.contains("failed order 10 (attempt 3)"), "nacked until its last attempt:\n{out}");
    assert!(!out.contains("(attempt 4)"), "three attempts, then dead-lettered:\n{out}");
    assert!(out.ends_with("group billing: backlog 0, dead-lettered 1\n"), "drained before it stopped:\n{out}");

    let out = run(&broker, "dead_letters", &[], false).await?;
    assert!(out.starts_with("1 dead letters in group billing\n"), "{out}");
    assert!(
        out.contains("order 10 from orders/") && out.contains("3 attempts, reason: amount is not a number"),
        "the dead letter says where it came from and why:\n{out}"
    );

    let out = run(&broker, "dead_letters", &["redrive"], true).await?;
    assert!(out.starts_with("redrove 1 dead letters"), "{out}");
    let group = sluice_client::Admin::new(broker.channel()).describe_group("billing").await?;
    assert_eq!(group.backlog_messages, 1, "the redriven copy is back in the group's topic");

    let out = run(&broker, "dead_letters", &["purge"], false).await?;
    assert_eq!(out, "purged 1 dead letters\n");
    let out = run(&broker, "dead_letters", &["peek"], false).await?;
    assert_eq!(out, "0 dead letters in group billing\n");
    Ok(())
}
