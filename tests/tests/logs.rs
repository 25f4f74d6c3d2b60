//! The broker's log output: plain text in files and pipes, ANSI colours only
//! on a terminal, and none there either with `NO_COLOR`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sluice_client::{Message, Producer, ProducerConfig};
use sluice_tests::{binary, TestBroker};
use tokio::io::AsyncReadExt;

const ESC: &str = "\x1b[";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_written_to_a_file_has_no_colour_codes() -> anyhow::Result<()> {
    // The harness sends the broker's stderr to a file, as a service manager or `2>log` would.
    let mut broker = TestBroker::start().await?;
    sluice_client::Admin::new(broker.channel()).create_topic("t", 1, Default::default()).await?;
    Producer::new(broker.channel(), ProducerConfig::default()).send("t", Message::new("v")).await?;
    broker.terminate(Duration::from_secs(30)).await?;
    let log = broker.log()?;
    assert!(log.contains("INFO") && log.contains("serving"), "the log has the startup lines: {log}");
    assert!(!log.contains(ESC), "no ANSI escape codes in a log file:\n{log:?}");
    Ok(())
}

/// Runs the broker under `script`, which gives it a terminal as stdout and
/// stderr, and returns what it printed up to its `serving` log line.
async fn output_on_a_terminal(no_color: Option<&str>) -> anyhow::Result<String> {
    let data = tempfile::tempdir()?;
    let broker = format!(
        "exec {} --listen 127.0.0.1:0 --metrics-listen '' --gateway-listen '' --data-dir {}",
        binary("sluice-broker").display(),
        data.path().join("data").display()
    );
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["--quiet", "--flush", "--return", "--command", &broker, "/dev/null"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Killing `script` closes the terminal, which hangs up (SIGHUP) the broker on it.
        .kill_on_drop(true);
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let mut child = cmd.spawn().context("running the broker under `script` (util-linux) for a terminal")?;
    let mut stdout = child.stdout.take().context("script's stdout")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains("serving") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stdout.read(&mut buf)).await {
            Ok(Ok(0)) => bail!("the broker ended before logging `serving`: {}", String::from_utf8_lossy(&out)),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("no `serving` log line within 30 s: {}", String::from_utf8_lossy(&out)),
        }
    }
    child.kill().await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_on_a_terminal_is_coloured_unless_no_color_is_set() -> anyhow::Result<()> {
    let coloured = output_on_a_terminal(None).await?;
    assert!(coloured.contains(ESC), "a terminal gets colours (so the checks below can see them): {coloured:?}");
    let plain = output_on_a_terminal(Some("1")).await?;
    assert!(!plain.contains(ESC), "NO_COLOR turns colours off on a terminal too: {plain:?}");
    Ok(())
}
