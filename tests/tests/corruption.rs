//! A flipped byte in stored data is reported as DATA_LOSS, never returned as data.

use std::time::Duration;

use bytes::Bytes;
use sluice_client::proto as pb;
use sluice_client::proto::consumer_client::ConsumerClient;
use sluice_client::{Admin, Producer, ProducerConfig};
use sluice_tests::TestBroker;

const MARKER: &[u8] = b"SLUICE-CORRUPTION-MARKER-";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_on_disk_is_data_loss_not_data() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("fragile", 3, pb::TopicConfig::default()).await?;
    let producer = Producer::new(broker.channel(), ProducerConfig::default());
    let mut value = MARKER.repeat(40);
    value.extend_from_slice(b"end");
    for _ in 0..20 {
        producer
            .send_to("fragile", 0, pb::Message { key: None, value: Bytes::from(value.clone()), headers: vec![] })
            .await?;
    }
    producer
        .send_to("fragile", 1, pb::Message { key: None, value: Bytes::from_static(b"healthy"), headers: vec![] })
        .await?;
    let big = Bytes::from(MARKER.repeat(400));
    producer.send_to("fragile", 2, pb::Message { key: None, value: big, headers: vec![] }).await?;
    // A clean stop flushes memtables, so every batch is in a blob file (the table holds
    // only keys and blob references; RocksDB's block checksums guard those).
    assert_eq!(broker.terminate(Duration::from_secs(20)).await?, Some(0));

    let mut flipped = Vec::new();
    for entry in std::fs::read_dir(broker.data_dir())? {
        let path = entry?.path();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()).filter(|e| *e == "sst" || *e == "blob") {
            let mut bytes = std::fs::read(&path)?;
            // A flipped byte in every marker: partitions 0 and 2 may share a blob file.
            let mut at = 0;
            while let Some(found) = bytes[at..].windows(MARKER.len()).position(|w| w == MARKER) {
                bytes[at + found + 3] ^= 0x20;
                flipped.push(ext.to_owned());
                at += found + MARKER.len();
                if at >= bytes.len() {
                    break;
                }
            }
            std::fs::write(&path, &bytes)?;
        }
    }
    assert!(flipped.iter().any(|e| e == "blob"), "no marked batch found in a blob file: {flipped:?}");

    broker.start_again().await?;
    let mut consumer = ConsumerClient::new(broker.channel());
    let fetch = |partition| pb::FetchRequest { topic: "fragile".into(), partition, offset: 0, ..Default::default() };
    for p in [0, 2] {
        let err = consumer.fetch(fetch(p)).await.expect_err("damaged data must not be served");
        assert_eq!(err.code(), tonic::Code::DataLoss, "partition {p}: {err:?}");
    }
    let healthy = consumer.fetch(fetch(1)).await?.into_inner();
    assert_eq!(healthy.records[0].value, Bytes::from_static(b"healthy"), "other partitions still serve");
    broker.wait_healthy(Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_data_file_is_refused_at_start_or_reported_on_read() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await?;
    Admin::new(broker.channel()).create_topic("cut", 1, pb::TopicConfig::default()).await?;
    let producer = Producer::new(broker.channel(), ProducerConfig::default());
    for _ in 0..50 {
        producer
            .send_to("cut", 0, pb::Message { key: None, value: Bytes::from(MARKER.repeat(40)), headers: vec![] })
            .await?;
    }
    assert_eq!(broker.terminate(Duration::from_secs(20)).await?, Some(0));
    let mut truncated = Vec::new();
    for entry in std::fs::read_dir(broker.data_dir())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sst" || e == "blob") {
            let bytes = std::fs::read(&path)?;
            if bytes.windows(MARKER.len()).any(|w| w == MARKER) {
                std::fs::write(&path, &bytes[..bytes.len() / 2])?;
                truncated.push(path);
            }
        }
    }
    assert!(!truncated.is_empty(), "the records were found in a data file");
    match broker.start_again().await {
        Err(refused) => {
            // Table files are checked at open: the broker names the file and says what to do.
            let log = broker.log_tail();
            eprintln!("start refused: {refused}");
            assert!(log.contains("Corruption"), "the log names the corruption:\n{log}");
            assert!(log.contains("Restore the directory from a backup"), "the log says what to do:\n{log}");
        }
        Ok(()) => {
            // Blob files are checked when read: the damaged range is DATA_LOSS, never data.
            let mut consumer = ConsumerClient::new(broker.channel());
            let fetch = pb::FetchRequest { topic: "cut".into(), partition: 0, offset: 0, ..Default::default() };
            let err = consumer.fetch(fetch).await.expect_err("truncated data must not be served");
            assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
            eprintln!("truncated {truncated:?}: served as DATA_LOSS: {}", err.message());
            broker.wait_healthy(Duration::from_secs(5)).await?;
        }
    }
    Ok(())
}
