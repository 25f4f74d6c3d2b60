//! The data directory on a small tmpfs the test mounts: filling it makes
//! produce fail with RESOURCE_EXHAUSTED (reason `disk_full`) while reads and
//! acks keep working; freeing space lets produce resume with no restart, and
//! everything acknowledged is there, intact, also after a SIGKILL.
//! Needs root (mount); without it the test says so and skips, except under CI=true.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::proto as pb;
use sluice_client::{Admin, Consumer, ConsumerConfig};
use sluice_tests::tmpfs::{self, Tmpfs};
use sluice_tests::{create_group, eventually, group_config, message, read_all, TestBroker};
use tonic::Code;

const VOLUME_BYTES: u64 = 192 << 20;
const RESERVE_BYTES: u64 = 32 << 20;
const HEADROOM_BYTES: u64 = 12 << 20;

fn value(i: u64) -> Bytes {
    let mut v = format!("{i:012}").into_bytes();
    v.resize(1024, b'a' + (i % 26) as u8);
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_produce_keeps_serving_and_recovers_without_restart() -> anyhow::Result<()> {
    if !Tmpfs::available("disk_full")? {
        return Ok(());
    }

    let mut mount = None;
    let reserve = RESERVE_BYTES.to_string();
    let mut broker = TestBroker::start_prepared(
        &["--write-buffer-bytes", "4194304", "--min-free-disk-bytes", &reserve],
        &[],
        |root| {
            let vol = Tmpfs::mount(&root.join("vol"), VOLUME_BYTES)?;
            let data = vol.path().join("data");
            mount = Some(vol);
            Ok(data)
        },
    )
    .await?;
    let volume = broker.data_dir().parent().map(Path::to_path_buf).expect("data dir is inside the volume");
    let admin = Admin::new(broker.channel());
    admin.create_topic("t", 1, pb::TopicConfig::default()).await?;
    create_group(broker.channel(), "g", group_config("t", 30_000)).await?;

    // Leave only a little above the reserve.
    let filler = tmpfs::fill(&volume, RESERVE_BYTES + HEADROOM_BYTES)?;

    let mut producer = pb::producer_client::ProducerClient::new(broker.channel());
    let mut acked = 0u64;
    let refused = loop {
        anyhow::ensure!(acked < 200_000, "produce never hit the disk reserve");
        let messages = (acked..acked + 64).map(|i| message(value(i))).collect();
        let req = pb::ProduceRequest { topic: "t".into(), partition: Some(0), messages, ..Default::default() };
        match producer.produce(req).await {
            Ok(r) => {
                let offsets = r.into_inner().offsets;
                assert_eq!(offsets.first().copied(), Some(acked), "offsets stay dense");
                acked += 64;
            }
            Err(status) => break status,
        }
    };
    eprintln!("acked {acked} messages before the disk reserve; refusal: {}", refused.message());
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("free"), "the message says what to do: {}", refused.message());
    assert_eq!(
        refused.metadata().get("sluice-reason").and_then(|v| v.to_str().ok()),
        Some("disk_full"),
        "machine-readable reason"
    );

    // Reads and acks keep working while produce is refused.
    let consumer = Consumer::new(broker.channel(), "g", ConsumerConfig::default());
    let batch = consumer.pull(100, Duration::from_secs(2)).await?;
    assert_eq!(batch.len(), 100);
    let failures = consumer.ack(batch.iter().map(|m| m.ack_id.clone()).collect()).await?;
    assert!(failures.is_empty(), "acks work on a full disk: {failures:?}");
    assert_eq!(admin.describe_group("g").await?.backlog_messages, acked - 100);
    assert_eq!(read_all(broker.channel(), "t", 0).await?.len() as u64, acked);

    // Free the space: produce resumes, no restart.
    std::fs::remove_file(&filler)?;
    let started = Instant::now();
    let resumed = eventually(Duration::from_secs(10), "produce accepted after freeing space", || {
        let mut producer = producer.clone();
        let messages = (acked..acked + 64).map(|i| message(value(i))).collect();
        async move {
            let req = pb::ProduceRequest { topic: "t".into(), partition: Some(0), messages, ..Default::default() };
            Ok(producer.produce(req).await.ok())
        }
    })
    .await?;
    assert_eq!(resumed.into_inner().offsets.first().copied(), Some(acked), "no offset was lost to the refusals");
    acked += 64;
    eprintln!("produce resumed {:?} after freeing space", started.elapsed());

    // Everything acknowledged is there and intact, also after SIGKILL.
    for round in ["before", "after"] {
        let records = read_all(broker.channel(), "t", 0).await?;
        assert_eq!(records.len() as u64, acked, "{round} SIGKILL: every acked message is stored");
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64);
            assert_eq!(r.value, value(i as u64), "{round} SIGKILL: message {i} intact");
        }
        if round == "before" {
            broker.kill9().await?;
            broker.start_again().await?;
        }
    }
    drop(broker);
    drop(mount);
    Ok(())
}
