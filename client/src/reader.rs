//! `PartitionReader`: reads one partition in order from a starting position,
//! long-polling at the end. No group, no acks: the caller tracks its offset.

use std::time::Duration;

use crate::connect::Channel;
use sluice_proto::v1 as pb;
use sluice_proto::v1::consumer_client::ConsumerClient;

use crate::error::{Error, Result};

/// Where a reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first stored offset.
    Earliest,
    /// Only messages produced from now on.
    Latest,
    /// A given offset.
    Offset(u64),
    /// The first message at or after a time (ms since the Unix epoch).
    Timestamp(i64),
}

/// Reads a partition sequentially.
#[derive(Debug, Clone)]
pub struct PartitionReader {
    client: ConsumerClient<Channel>,
    topic: String,
    partition: u32,
    offset: u64,
    /// Most messages per fetch.
    pub max_messages: u32,
}

/// Most `not_leader` answers a reader follows to find a replica.
const MAX_REDIRECTS: u32 = 3;

impl PartitionReader {
    /// A reader positioned at `start`. In a cluster, a broker that holds no
    /// replica of the partition (its topic has a smaller replication factor)
    /// answers `not_leader` naming one that does: the reader goes there.
    pub async fn new(channel: impl Into<Channel>, topic: &str, partition: u32, start: StartAt) -> Result<Self> {
        let channel: Channel = channel.into();
        let mut client = ConsumerClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
        let timestamp_ms = match start {
            StartAt::Timestamp(t) => Some(t),
            _ => None,
        };
        let request = pb::GetOffsetsRequest { topic: topic.into(), partition, timestamp_ms };
        let mut redirects = 0;
        let o = loop {
            match client.get_offsets(request.clone()).await.map_err(Error::from) {
                Ok(o) => break o.into_inner(),
                Err(e) => match e.leader_hint() {
                    Some(hint) if redirects < MAX_REDIRECTS => {
                        redirects += 1;
                        let channel = channel.to(&hint.endpoint)?;
                        client = ConsumerClient::new(channel).max_decoding_message_size(usize::MAX);
                    }
                    _ => return Err(e),
                },
            }
        };
        let offset = match start {
            StartAt::Earliest => o.earliest_offset,
            StartAt::Latest => o.latest_offset,
            StartAt::Offset(n) => n,
            StartAt::Timestamp(_) => o.timestamp_offset.unwrap_or(o.latest_offset),
        };
        Ok(PartitionReader { client, topic: topic.into(), partition, offset, max_messages: 1000 })
    }

    /// The offset the next fetch starts at.
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// Earliest and latest offsets of the partition now.
    pub async fn offsets(&self) -> Result<(u64, u64)> {
        let o = self
            .client
            .clone()
            .get_offsets(pb::GetOffsetsRequest {
                topic: self.topic.clone(),
                partition: self.partition,
                timestamp_ms: None,
            })
            .await?
            .into_inner();
        Ok((o.earliest_offset, o.latest_offset))
    }

    /// The next records, waiting up to `max_wait` if there are none yet.
    pub async fn next_batch(&mut self, max_wait: Duration) -> Result<Vec<pb::Record>> {
        let req = pb::FetchRequest {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            max_messages: self.max_messages,
            max_bytes: 0,
            max_wait_ms: max_wait.as_millis().min(30_000) as u32,
        };
        let resp = self.client.fetch(req).await?.into_inner();
        self.offset = resp.next_offset;
        Ok(resp.records)
    }
}
