//! `sluice smoke`: a round trip through a broker (create the topic if absent,
//! produce, read back), for container demos and deployment checks.

use std::time::Duration;

use anyhow::ensure;
use sluice_client::proto as pb;
use sluice_client::{Admin, PartitionReader, Producer, ProducerConfig, StartAt};

pub async fn run(channel: sluice_client::Channel, topic: &str, count: u32) -> anyhow::Result<()> {
    let admin = Admin::new(channel.clone());
    if admin.describe_topic(topic).await.is_err() {
        admin.create_topic(topic, 1, pb::TopicConfig::default()).await?;
    }
    let run_id = format!("{:08x}", rand::random::<u32>());
    let producer = Producer::new(channel.clone(), ProducerConfig::default());
    let mut first = None;
    for i in 0..count {
        let m = pb::Message { key: None, value: format!("smoke {run_id} {i}").into_bytes().into(), headers: vec![] };
        let d = producer.send_to(topic, 0, m).await?;
        first.get_or_insert(d.offset);
    }
    let start = first.unwrap_or(0);
    let mut reader = PartitionReader::new(channel, topic, 0, StartAt::Offset(start)).await?;
    let mut read = 0;
    while read < count {
        let batch = reader.next_batch(Duration::from_secs(2)).await?;
        ensure!(!batch.is_empty(), "read back only {read} of {count}");
        for r in batch {
            ensure!(
                r.value.starts_with(format!("smoke {run_id} ").as_bytes()),
                "unexpected record at offset {}",
                r.offset
            );
            read += 1;
        }
    }
    outln!("smoke ok: produced {count} and read back {read} on topic {topic} from offset {start}")?;
    Ok(())
}
