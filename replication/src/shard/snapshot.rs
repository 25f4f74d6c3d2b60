//! Shard snapshots: what lets a shard drop its log, and a replica that fell
//! behind (or starts empty) catch up from a peer instead of from the log.
//!
//! A snapshot is small: per partition the end of its committed records, per
//! consumer group its whole state (in storage's portable form,
//! `group::encode_changes`), the applied entry and membership,
//! and which broker built it. Records are not in it: a replica that installs
//! it copies the committed batches it lacks, raw and at the same offsets, from
//! the broker that built it (or any other peer that has them), over the
//! internal `READ_BATCHES` call.
//!
//! # Correctness
//! - **A snapshot states one point of the log.** It is taken on the state
//!   machine's task (`ShardMachine::image`), between applies: the partitions'
//!   ends are their committed watermarks at the applied entry, and group
//!   states are read once that entry's apply write is in the store.
//! - **Only committed records are copied, and only onto committed ones.**
//!   Unless this replica already holds the snapshot's last entry (then every
//!   entry up to it matches the leader's), everything it appended above its
//!   own applied entry is rewound first: those records may come from a
//!   deposed leader's term. Below the applied entry the replica's records
//!   are committed, so they equal the source's, and copying continues at its
//!   own end. A peer serves a copy only below its own committed watermark.
//! - **Records are never deleted while a log entry points at them**
//!   (retention removes only segments below the first batch of an entry
//!   not purged yet). A snapshot's ends are above every purged entry's
//!   batches, so a copy always finds records from some offset on; a replica
//!   whose missing records retention removed everywhere starts its
//!   partition over where its peers' records begin.
//! - **Purged records stay purged.** The image is followed by the shard's
//!   purge floors (`purge.rs`); an install raises them before readers see the
//!   partitions, and copies nothing below them (the partition starts over at
//!   its floor where it ends below it).
//! - A copy that cannot be made within [`COPY_PATIENCE`] (no peer holding the
//!   records answers) fails the install, which stops this replica's shard:
//!   it is logged and the broker must be restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::alias::{LogIdOf, SnapshotMetaOf, StoredMembershipOf};
use serde::{Deserialize, Serialize};
use sluice_proto::internal::v1 as pb;
use sluice_proto::internal::v1::raft_client::RaftClient;
use sluice_storage::raft::GroupId;
use sluice_storage::{OffsetRange, PartitionId, PartitionReader, Store, TopicId};

use super::log::Floor;
use super::ShardTypes;
use crate::codec::{io_error, Format, Postcard};
use crate::network::Peers;

/// How long a replica installing a snapshot keeps trying to copy records
/// before it gives up (and its shard stops).
pub(crate) const COPY_PATIENCE: Duration = Duration::from_secs(60);

/// Most bytes of record batches in one copy answer.
const COPY_CHUNK_BYTES: u32 = 4 << 20;

/// The snapshot's data, encoded with postcard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Image {
    /// The broker that built it: it holds every record below the ends.
    pub(crate) source: u64,
    /// Every partition of the shard.
    pub(crate) partitions: Vec<PartitionMark>,
    /// Every consumer group of the shard with its state.
    pub(crate) groups: Vec<GroupImage>,
}

/// A snapshot's data: the image, then the purge floors if there are any,
/// each postcard. A build from before purges reads the image and ignores the
/// rest (postcard leaves trailing bytes alone), and a snapshot it made reads
/// here as one without floors.
pub(crate) fn encode_image(image: &Image, floors: &[Floor]) -> io::Result<Vec<u8>> {
    let mut data = Postcard::encode(image)?;
    if !floors.is_empty() {
        data.extend(Postcard::encode(&floors)?);
    }
    Ok(data)
}

/// The image and purge floors of a snapshot's data (see [`encode_image`]).
pub(crate) fn decode_image(data: &[u8]) -> io::Result<(Image, Vec<Floor>)> {
    let (image, rest) = postcard::take_from_bytes::<Image>(data)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("undecodable shard snapshot image: {e}")))?;
    let floors = if rest.is_empty() { Vec::new() } else { Postcard::decode(rest, "shard snapshot purge floors")? };
    Ok((image, floors))
}

/// Where one partition stood.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct PartitionMark {
    pub(crate) topic: u64,
    pub(crate) partition: u32,
    /// End of the committed records.
    pub(crate) end: u64,
}

impl PartitionMark {
    pub(crate) fn id(&self) -> PartitionId {
        PartitionId::new(TopicId(self.topic), self.partition)
    }
}

/// One consumer group's whole state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GroupImage {
    pub(crate) group: u64,
    /// `group::encode_changes` of `Store::group_state_image`.
    #[serde(with = "serde_bytes")]
    pub(crate) state: Vec<u8>,
}

/// A snapshot as kept on disk (`HardState::Snapshot`) and in memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: SnapshotMetaOf<ShardTypes>,
    #[serde(with = "serde_bytes")]
    pub(crate) data: Vec<u8>,
}

impl StoredSnapshot {
    pub(crate) fn last_index(&self) -> u64 {
        self.meta.last_log_id.map_or(0, |id| id.index)
    }
}

/// A snapshot's metadata for what was applied.
pub(crate) fn meta_of(
    applied: &(Option<LogIdOf<ShardTypes>>, StoredMembershipOf<ShardTypes>),
) -> SnapshotMetaOf<ShardTypes> {
    SnapshotMetaOf::<ShardTypes> { last_log_id: applied.0, last_membership: applied.1.clone() }
}

/// Reads the state of `groups` from `store`, encoded for an image.
pub(crate) fn group_images(store: &Store, groups: &BTreeSet<u64>) -> io::Result<Vec<GroupImage>> {
    groups
        .iter()
        .map(|group| {
            let image = store.group_state_image(*group).map_err(io_error)?;
            let state = sluice_storage::group::encode_changes(&image).map_err(io::Error::other)?;
            Ok(GroupImage { group: *group, state })
        })
        .collect()
}

/// A request for the raw batches of one partition in `[from, end)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReadBatches {
    pub(crate) topic: u64,
    pub(crate) partition: u32,
    pub(crate) from: u64,
    pub(crate) end: u64,
    pub(crate) max_bytes: u32,
}

/// Its answer: stored batches, oldest first, starting at `from`; none if
/// the peer stores nothing at `from` any more (retention), with `start`, the
/// first offset it stores.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Batches {
    pub(crate) start: u64,
    pub(crate) batches: Vec<serde_bytes::ByteBuf>,
}

/// Serves a copy at a peer: the batches of `request` if this broker has
/// them committed. `committed` is the partition's committed watermark here.
pub(crate) async fn serve_read(
    store: Arc<Store>,
    request: ReadBatches,
    (start, committed): (u64, u64),
) -> Result<Batches, String> {
    let id = PartitionId::new(TopicId(request.topic), request.partition);
    if committed < request.end {
        return Err(format!("{id:?}: committed here only up to {committed}, asked up to {}", request.end));
    }
    if request.from < start {
        return Ok(Batches { start, batches: Vec::new() });
    }
    let reader = PartitionReader::new(store, id);
    let range = OffsetRange::new(request.from, request.end);
    let max = request.max_bytes.min(COPY_CHUNK_BYTES) as usize;
    let batches = tokio::task::spawn_blocking(move || reader.raw_batches(range, max))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    match batches.first().map(|b| sluice_storage::record::split_batch(b).map(|(h, _)| h.base_offset)) {
        Some(Ok(base)) if base == request.from => {}
        Some(Ok(base)) => return Err(format!("{id:?}: no batch starts at {}; the first is at {base}", request.from)),
        Some(Err(e)) => return Err(format!("{id:?}: damaged batch at {}: {e}", request.from)),
        None => return Err(format!("{id:?}: nothing stored in [{}, {})", request.from, request.end)),
    }
    Ok(Batches { start, batches: batches.into_iter().map(serde_bytes::ByteBuf::from).collect() })
}

/// The copying side: asks peers for batches.
#[derive(Clone)]
pub(crate) struct Copier {
    pub(crate) group: GroupId,
    pub(crate) node: u64,
    pub(crate) peers: Peers,
    pub(crate) addresses: Arc<BTreeMap<u64, String>>,
}

impl Copier {
    /// Batches of `partition` from `from` (below `end`) from `source`, or
    /// else from any other peer; retried with backoff for [`COPY_PATIENCE`].
    pub(crate) async fn read(&self, source: u64, partition: PartitionId, from: u64, end: u64) -> io::Result<Batches> {
        let request = ReadBatches {
            topic: partition.topic.0,
            partition: partition.index,
            from,
            end,
            max_bytes: COPY_CHUNK_BYTES,
        };
        let mut order: Vec<u64> = vec![source];
        order.extend(self.addresses.keys().copied().filter(|id| *id != source && *id != self.node));
        let deadline = Instant::now() + COPY_PATIENCE;
        let mut pause = Duration::from_millis(100);
        loop {
            let mut errors = Vec::new();
            for peer in &order {
                match self.read_at(*peer, &request).await {
                    Ok(b) if !b.batches.is_empty() || b.start > from => return Ok(b),
                    Ok(_) => errors.push(format!("broker {peer}: no batches")),
                    Err(e) => errors.push(format!("broker {peer}: {e}")),
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "shard {}: could not copy {partition:?} from {from} to {end} for a snapshot within {} s: {}",
                    self.group.0,
                    COPY_PATIENCE.as_secs(),
                    errors.join("; ")
                )));
            }
            tracing::warn!(shard = self.group.0, ?partition, from, end, errors = %errors.join("; "), "copying records for a snapshot; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    async fn read_at(&self, peer: u64, request: &ReadBatches) -> Result<Batches, String> {
        let addr = self.addresses.get(&peer).ok_or_else(|| format!("no address for broker {peer}"))?;
        let channel = self.peers.channel(addr)?;
        let payload = Postcard::encode(request).map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(pb::RaftRequest {
            group: self.group.0,
            rpc: pb::RaftRpc::ReadBatches as i32,
            payload: payload.into(),
        });
        req.set_timeout(Duration::from_secs(30));
        let reply = RaftClient::new(channel)
            .max_decoding_message_size(crate::network::MAX_MESSAGE_BYTES)
            .call(req)
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?
            .into_inner();
        if !reply.error.is_empty() {
            return Err(reply.error);
        }
        Postcard::decode(&reply.payload, "copied batches").map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Image {
        Image {
            source: 2,
            partitions: vec![PartitionMark { topic: 7, partition: 1, end: 40 }],
            groups: vec![GroupImage { group: 3, state: vec![1, 2, 3] }],
        }
    }

    #[test]
    fn floors_follow_the_image_and_an_image_without_them_still_reads() {
        let floors: Vec<Floor> = vec![(7, 1, 25), (9, 0, 3)];
        let data = encode_image(&image(), &floors).expect("encode");
        let (read, read_floors) = decode_image(&data).expect("decode");
        assert_eq!((read.source, read.partitions.len(), read.groups.len()), (2, 1, 1));
        assert_eq!(read_floors, floors);
        // What an older build reads: the image alone, the floors ignored.
        let old: Image = Postcard::decode(&data, "image").expect("an older build reads the image");
        assert_eq!(old.partitions[0].end, 40);
        // What an older build wrote: no floors.
        let (_, none) = decode_image(&Postcard::encode(&image()).expect("encode")).expect("decode");
        assert!(none.is_empty());
        assert!(decode_image(&data[..data.len() - 1]).is_err(), "cut floors are an error, not none");
    }
}
