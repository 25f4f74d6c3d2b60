//! The metadata group: every broker is a voter, and its state machine is the
//! cluster catalog (brokers' endpoints, topics with their ids and settings).
//! Ids are allocated by applying entries, never locally, so every broker
//! agrees on them. Its log is small between snapshots and its snapshot is the
//! whole catalog.
//!
//! # Correctness
//! `apply` is deterministic: everything an entry needs (names, settings,
//! creation time) is in the command, decided by the proposer. The records an
//! apply changes and the last-applied log id (with the membership) are written
//! in one atomic write, so after a crash the catalog on disk is exactly the
//! state after the last-applied entry, and openraft re-applies what follows.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use sluice_storage::raft::{self as keys, GroupId, HardState};
use sluice_storage::{AtomicWrite, Store, TopicConfig, TopicId, WriterHandle};

use crate::codec::{decode, encode, io_error};

openraft::declare_raft_types!(
    /// The metadata group's types: Sluice's commands and responses, broker ids as node ids.
    pub(crate) MetaTypes:
        D = MetaCommand,
        R = MetaResponse,
        NodeId = u64,
        Node = openraft::impls::BasicNode,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

/// The metadata group is group 0 of a broker's store.
pub const META_GROUP: GroupId = GroupId(0);

/// A change to the catalog, proposed by a broker and applied by all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum MetaCommand {
    /// Create topic `name` unless it exists; it gets the next topic id.
    CreateTopic {
        /// The topic's name (already checked by the proposer).
        name: String,
        /// Its partitions.
        partitions: u32,
        /// How many brokers hold each partition.
        replication_factor: u32,
        /// Its settings (already checked by the proposer).
        config: TopicConfig,
        /// When it was created, by the proposer's clock.
        created_ms: i64,
    },
    /// Replace the settings of topic `name` if it exists.
    UpdateTopic {
        /// The topic's name.
        name: String,
        /// Its new settings (already checked by the proposer).
        config: TopicConfig,
    },
    /// Delete topic `name` if it exists.
    DeleteTopic {
        /// The topic's name.
        name: String,
    },
    /// Create group `name` unless it exists; it gets the next id. Refused
    /// while its topic or dead-letter topic is not in the catalog.
    CreateGroup {
        /// The group's name (already checked by the proposer).
        name: String,
        /// The topic it reads.
        topic: String,
        /// Where it dead-letters; empty: nowhere.
        dead_letter_topic: String,
        /// Its settings, as the broker encodes them (this crate does not read them).
        settings: serde_json::Value,
        /// When it was created, by the proposer's clock.
        created_ms: i64,
    },
    /// Replace the settings of group `name` if it exists.
    UpdateGroup {
        /// The group's name.
        name: String,
        /// Where it dead-letters now; empty: nowhere.
        dead_letter_topic: String,
        /// Its new settings, as the broker encodes them.
        settings: serde_json::Value,
    },
    /// Delete group `name` if it exists.
    DeleteGroup {
        /// The group's name.
        name: String,
    },
    /// Forget broker `broker` (replaced by another id): it no longer serves clients.
    RemoveBroker {
        /// The broker's id.
        broker: u64,
    },
    /// Record where broker `broker` serves clients.
    SetBrokerEndpoint {
        /// The broker's id.
        broker: u64,
        /// Its client endpoint, `host:port`.
        endpoint: String,
    },
}

impl fmt::Display for MetaCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaCommand::CreateTopic { name, partitions, .. } => {
                write!(f, "create topic {name} ({partitions} partitions)")
            }
            MetaCommand::UpdateTopic { name, .. } => write!(f, "update topic {name}"),
            MetaCommand::DeleteTopic { name } => write!(f, "delete topic {name}"),
            MetaCommand::CreateGroup { name, topic, .. } => write!(f, "create group {name} on {topic}"),
            MetaCommand::UpdateGroup { name, .. } => write!(f, "update group {name}"),
            MetaCommand::DeleteGroup { name } => write!(f, "delete group {name}"),
            MetaCommand::SetBrokerEndpoint { broker, endpoint } => write!(f, "broker {broker} at {endpoint}"),
            MetaCommand::RemoveBroker { broker } => write!(f, "remove broker {broker}"),
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum MetaResponse {
    /// The topic was created with this id.
    TopicCreated {
        /// Its id.
        id: TopicId,
    },
    /// A topic of that name already existed (with this id); nothing changed.
    TopicExists {
        /// The existing topic's id.
        id: TopicId,
    },
    /// The topic's settings were replaced.
    TopicUpdated,
    /// The topic was deleted.
    TopicDeleted,
    /// No topic of that name; nothing changed.
    TopicNotFound,
    /// Groups read the topic or dead-letter into it; nothing changed.
    TopicInUse {
        /// Those groups, by name.
        groups: Vec<String>,
    },
    /// The group was created with this id.
    GroupCreated {
        /// Its id.
        id: u64,
    },
    /// A group of that name already existed; nothing changed.
    GroupExists,
    /// The group's settings were replaced.
    GroupUpdated,
    /// The group was deleted.
    GroupDeleted,
    /// No group of that name; nothing changed.
    GroupNotFound,
    /// A topic the group needs is not in the catalog; nothing changed.
    GroupTopicNotFound {
        /// That topic.
        topic: String,
    },
    /// Done (for commands that cannot fail).
    Done,
}

/// A topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CatalogTopic {
    /// Its id, allocated by the metadata group.
    pub id: TopicId,
    /// Its partitions.
    pub partitions: u32,
    /// How many brokers hold each partition.
    pub replication_factor: u32,
    /// Its settings.
    pub config: TopicConfig,
    /// When it was created.
    pub created_ms: i64,
}

/// A consumer group as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CatalogGroup {
    /// Its id, allocated by the metadata group (from the topics' counter).
    pub id: u64,
    /// The topic it reads.
    pub topic: String,
    /// Where it dead-letters; empty: nowhere.
    pub dead_letter_topic: String,
    /// Its settings, as the broker encodes them.
    pub settings: serde_json::Value,
    /// When it was created.
    pub created_ms: i64,
}

/// What the metadata group agrees on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Catalog {
    /// The id the next topic or group gets; ids are never reused.
    pub next_topic_id: u64,
    /// Topics by name.
    pub topics: BTreeMap<String, CatalogTopic>,
    /// Consumer groups by name.
    #[serde(default)]
    pub groups: BTreeMap<String, CatalogGroup>,
    /// Client endpoints by broker id.
    pub brokers: BTreeMap<u64, String>,
}

const NEXT_TOPIC_ID: &[u8] = b"next-topic-id";
const TOPIC: &str = "topic/";
const BROKER: &str = "broker/";
const GROUP: &str = "group/";

impl Catalog {
    /// Applies `command`, adding the records it changes to `write`.
    fn apply(&mut self, command: &MetaCommand, group_id: GroupId, write: &mut AtomicWrite) -> io::Result<MetaResponse> {
        Ok(match command {
            MetaCommand::CreateTopic { name, partitions, replication_factor, config, created_ms } => {
                if let Some(t) = self.topics.get(name) {
                    return Ok(MetaResponse::TopicExists { id: t.id });
                }
                let topic = CatalogTopic {
                    id: TopicId(self.next_topic_id),
                    partitions: *partitions,
                    replication_factor: *replication_factor,
                    config: *config,
                    created_ms: *created_ms,
                };
                self.next_topic_id += 1;
                keys::put_record(write, group_id, NEXT_TOPIC_ID, encode(&self.next_topic_id)?);
                keys::put_record(write, group_id, format!("{TOPIC}{name}").as_bytes(), encode(&topic)?);
                let id = topic.id;
                self.topics.insert(name.clone(), topic);
                MetaResponse::TopicCreated { id }
            }
            MetaCommand::UpdateTopic { name, config } => {
                let Some(topic) = self.topics.get_mut(name) else { return Ok(MetaResponse::TopicNotFound) };
                topic.config = *config;
                keys::put_record(write, group_id, format!("{TOPIC}{name}").as_bytes(), encode(&*topic)?);
                MetaResponse::TopicUpdated
            }
            MetaCommand::DeleteTopic { name } => {
                if !self.topics.contains_key(name) {
                    return Ok(MetaResponse::TopicNotFound);
                }
                let users: Vec<String> = self
                    .groups
                    .iter()
                    .filter(|(_, g)| g.topic == *name || g.dead_letter_topic == *name)
                    .map(|(n, _)| n.clone())
                    .collect();
                if !users.is_empty() {
                    return Ok(MetaResponse::TopicInUse { groups: users });
                }
                self.topics.remove(name);
                keys::delete_record(write, group_id, format!("{TOPIC}{name}").as_bytes());
                MetaResponse::TopicDeleted
            }
            MetaCommand::CreateGroup { name, topic, dead_letter_topic, settings, created_ms } => {
                if self.groups.contains_key(name) {
                    return Ok(MetaResponse::GroupExists);
                }
                if let Some(missing) = self.missing_topic(topic, dead_letter_topic) {
                    return Ok(MetaResponse::GroupTopicNotFound { topic: missing });
                }
                let group = CatalogGroup {
                    id: self.next_topic_id,
                    topic: topic.clone(),
                    dead_letter_topic: dead_letter_topic.clone(),
                    settings: settings.clone(),
                    created_ms: *created_ms,
                };
                self.next_topic_id += 1;
                keys::put_record(write, group_id, NEXT_TOPIC_ID, encode(&self.next_topic_id)?);
                keys::put_record(write, group_id, format!("{GROUP}{name}").as_bytes(), encode(&group)?);
                let id = group.id;
                self.groups.insert(name.clone(), group);
                MetaResponse::GroupCreated { id }
            }
            MetaCommand::UpdateGroup { name, dead_letter_topic, settings } => {
                let Some(topic) = self.groups.get(name).map(|g| g.topic.clone()) else {
                    return Ok(MetaResponse::GroupNotFound);
                };
                if let Some(missing) = self.missing_topic(&topic, dead_letter_topic) {
                    return Ok(MetaResponse::GroupTopicNotFound { topic: missing });
                }
                let Some(group) = self.groups.get_mut(name) else { return Ok(MetaResponse::GroupNotFound) };
                group.dead_letter_topic = dead_letter_topic.clone();
                group.settings = settings.clone();
                keys::put_record(write, group_id, format!("{GROUP}{name}").as_bytes(), encode(&*group)?);
                MetaResponse::GroupUpdated
            }
            MetaCommand::DeleteGroup { name } => {
                if self.groups.remove(name).is_none() {
                    return Ok(MetaResponse::GroupNotFound);
                }
                keys::delete_record(write, group_id, format!("{GROUP}{name}").as_bytes());
                MetaResponse::GroupDeleted
            }
            MetaCommand::SetBrokerEndpoint { broker, endpoint } => {
                self.brokers.insert(*broker, endpoint.clone());
                keys::put_record(write, group_id, format!("{BROKER}{broker}").as_bytes(), encode(endpoint)?);
                MetaResponse::Done
            }
            MetaCommand::RemoveBroker { broker } => {
                self.brokers.remove(broker);
                keys::delete_record(write, group_id, format!("{BROKER}{broker}").as_bytes());
                MetaResponse::Done
            }
        })
    }

    /// The first of `topic` and `dead_letter_topic` (if set) not in the catalog.
    fn missing_topic(&self, topic: &str, dead_letter_topic: &str) -> Option<String> {
        if !self.topics.contains_key(topic) {
            return Some(topic.to_owned());
        }
        (!dead_letter_topic.is_empty() && !self.topics.contains_key(dead_letter_topic))
            .then(|| dead_letter_topic.to_owned())
    }

    /// Every record of the catalog, for a snapshot install.
    fn put_all(&self, group_id: GroupId, write: &mut AtomicWrite) -> io::Result<()> {
        keys::put_record(write, group_id, NEXT_TOPIC_ID, encode(&self.next_topic_id)?);
        for (name, topic) in &self.topics {
            keys::put_record(write, group_id, format!("{TOPIC}{name}").as_bytes(), encode(topic)?);
        }
        for (broker, endpoint) in &self.brokers {
            keys::put_record(write, group_id, format!("{BROKER}{broker}").as_bytes(), encode(endpoint)?);
        }
        for (name, group) in &self.groups {
            keys::put_record(write, group_id, format!("{GROUP}{name}").as_bytes(), encode(group)?);
        }
        Ok(())
    }

    /// The catalog from its stored records.
    fn load(records: Vec<(Vec<u8>, Vec<u8>)>) -> io::Result<Self> {
        let mut catalog = Catalog::default();
        for (key, value) in records {
            let key = String::from_utf8_lossy(&key);
            if key.as_bytes() == NEXT_TOPIC_ID {
                catalog.next_topic_id = decode(&value, "topic id counter")?;
            } else if let Some(name) = key.strip_prefix(TOPIC) {
                catalog.topics.insert(name.to_owned(), decode(&value, "catalog topic")?);
            } else if let Some(name) = key.strip_prefix(GROUP) {
                catalog.groups.insert(name.to_owned(), decode(&value, "catalog group")?);
            } else if let Some(id) = key.strip_prefix(BROKER) {
                let id = id.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad broker key"))?;
                catalog.brokers.insert(id, decode(&value, "broker endpoint")?);
            } else {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown catalog record {key}")));
            }
        }
        Ok(catalog)
    }
}

/// The last-applied entry and the membership it left, stored with the catalog.
type Applied = (Option<LogIdOf<MetaTypes>>, StoredMembershipOf<MetaTypes>);

/// A built snapshot: its metadata and the encoded catalog.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<MetaTypes>,
    data: Vec<u8>,
}

struct State {
    catalog: Catalog,
    applied: Applied,
    snapshot: Option<(SnapshotMetaOf<MetaTypes>, Vec<u8>)>,
}

/// The metadata group's state machine over the broker's store; cheap to clone.
#[derive(Clone)]
pub struct MetaStateMachine {
    writer: WriterHandle,
    state: Arc<Mutex<State>>,
    /// Bumped after every apply or snapshot install that may change the catalog.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl MetaStateMachine {
    /// Opens the catalog as stored (empty on a new broker).
    pub fn open(store: Arc<Store>, writer: WriterHandle) -> io::Result<Self> {
        let catalog = Catalog::load(store.raft_records(META_GROUP).map_err(io_error)?)?;
        let applied = match store.raft_hard_state(META_GROUP, HardState::Applied).map_err(io_error)? {
            Some(b) => decode(&b, "applied state")?,
            None => (None, StoredMembershipOf::<MetaTypes>::default()),
        };
        let snapshot = match store.raft_hard_state(META_GROUP, HardState::Snapshot).map_err(io_error)? {
            Some(b) => {
                let s: StoredSnapshot = decode(&b, "snapshot")?;
                Some((s.meta, s.data))
            }
            None => None,
        };
        let state = State { catalog, applied, snapshot };
        Ok(MetaStateMachine {
            writer,
            state: Arc::new(Mutex::new(state)),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    /// Changes (to a counter) after every apply or snapshot install, so a
    /// broker can follow the catalog without polling.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The catalog as of the last applied entry.
    pub fn catalog(&self) -> Catalog {
        self.state().catalog.clone()
    }

    /// Broker `id`'s registered client endpoint, without copying the catalog.
    pub fn broker_endpoint(&self, id: u64) -> Option<String> {
        self.state().catalog.brokers.get(&id).cloned()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change to the state is made whole under the lock; a panic elsewhere leaves it consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Builds a snapshot from the catalog as it was when the builder was made.
pub struct MetaSnapshotBuilder {
    catalog: Catalog,
    applied: Applied,
    machine: MetaStateMachine,
}

impl RaftSnapshotBuilder<MetaTypes> for MetaSnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<MetaTypes, Vec<u8>>, io::Error> {
        let meta = SnapshotMetaOf::<MetaTypes> { last_log_id: self.applied.0, last_membership: self.applied.1.clone() };
        let data = encode(&self.catalog)?;
        let mut write = AtomicWrite::new();
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        keys::put_hard_state(&mut write, META_GROUP, HardState::Snapshot, encode(&stored)?);
        self.machine.writer.write(write).await.map_err(io_error)?;
        self.machine.state().snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<MetaTypes, Vec<u8>> { meta, snapshot: data })
    }
}

impl RaftStateMachine<MetaTypes> for MetaStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = MetaSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<Applied, io::Error> {
        Ok(self.state().applied.clone())
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<MetaTypes>, io::Error>> + Unpin + OptionalSend,
    {
        // The catalog in memory moves ahead of the disk until the write below
        // commits; a failed write poisons the store and the broker restarts
        // from what is on disk, so nothing acts on the difference.
        let mut write = AtomicWrite::new();
        let mut replies = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            let mut s = self.state();
            let response = match &entry.payload {
                EntryPayload::Normal(command) => s.catalog.apply(command, META_GROUP, &mut write)?,
                EntryPayload::Blank | EntryPayload::Membership(_) => MetaResponse::Done,
            };
            if let Some(membership) = entry.get_membership() {
                s.applied.1 = StoredMembershipOf::<MetaTypes>::new(Some(log_id), membership);
            }
            s.applied.0 = Some(log_id);
            drop(s);
            if let Some(r) = responder {
                replies.push((r, response));
            }
        }
        let applied = self.state().applied.clone();
        keys::put_hard_state(&mut write, META_GROUP, HardState::Applied, encode(&applied)?);
        self.writer.write(write).await.map_err(io_error)?;
        self.changed();
        for (responder, response) in replies {
            responder.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let s = self.state();
        MetaSnapshotBuilder { catalog: s.catalog.clone(), applied: s.applied.clone(), machine: self.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<MetaTypes>, snapshot: Vec<u8>) -> Result<(), io::Error> {
        let catalog: Catalog = decode(&snapshot, "snapshot catalog")?;
        let applied: Applied = (meta.last_log_id, meta.last_membership.clone());
        let mut write = AtomicWrite::new();
        keys::delete_all_records(&mut write, META_GROUP);
        catalog.put_all(META_GROUP, &mut write)?;
        keys::put_hard_state(&mut write, META_GROUP, HardState::Applied, encode(&applied)?);
        let stored = StoredSnapshot { meta: meta.clone(), data: snapshot.clone() };
        keys::put_hard_state(&mut write, META_GROUP, HardState::Snapshot, encode(&stored)?);
        self.writer.write(write).await.map_err(io_error)?;
        {
            let mut s = self.state();
            s.catalog = catalog;
            s.applied = applied;
            s.snapshot = Some((meta.clone(), snapshot));
        }
        self.changed();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<MetaTypes, Vec<u8>>>, io::Error> {
        Ok(self.state().snapshot.clone().map(|(meta, snapshot)| SnapshotOf::<MetaTypes, Vec<u8>> { meta, snapshot }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(catalog: &mut Catalog, command: MetaCommand) -> MetaResponse {
        catalog.apply(&command, META_GROUP, &mut AtomicWrite::new()).expect("apply")
    }

    fn create_topic(name: &str) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.into(),
            partitions: 1,
            replication_factor: 3,
            config: TopicConfig {
                retention_ms: 0,
                retention_bytes: 0,
                segment_bytes: 1 << 20,
                segment_ms: 60_000,
                max_message_bytes: 1 << 20,
                durability: sluice_storage::Durability::Always,
            },
            created_ms: 1,
        }
    }

    fn create_group(name: &str, topic: &str, dead_letter_topic: &str) -> MetaCommand {
        MetaCommand::CreateGroup {
            name: name.into(),
            topic: topic.into(),
            dead_letter_topic: dead_letter_topic.into(),
            settings: serde_json::json!({ "opaque": true }),
            created_ms: 2,
        }
    }

    #[test]
    fn groups_need_their_topics_and_keep_them_from_being_deleted() {
        let mut c = Catalog::default();
        assert_eq!(apply(&mut c, create_group("g", "t", "")), MetaResponse::GroupTopicNotFound { topic: "t".into() });
        assert_eq!(apply(&mut c, create_topic("t")), MetaResponse::TopicCreated { id: TopicId(0) });
        assert_eq!(
            apply(&mut c, create_group("g", "t", "dlq")),
            MetaResponse::GroupTopicNotFound { topic: "dlq".into() }
        );
        assert_eq!(apply(&mut c, create_topic("dlq")), MetaResponse::TopicCreated { id: TopicId(1) });
        assert_eq!(apply(&mut c, create_group("g", "t", "dlq")), MetaResponse::GroupCreated { id: 2 }, "one counter");
        assert_eq!(apply(&mut c, create_group("g", "t", "")), MetaResponse::GroupExists);
        for topic in ["t", "dlq"] {
            assert_eq!(
                apply(&mut c, MetaCommand::DeleteTopic { name: topic.into() }),
                MetaResponse::TopicInUse { groups: vec!["g".into()] }
            );
        }
        let update = MetaCommand::UpdateGroup {
            name: "g".into(),
            dead_letter_topic: String::new(),
            settings: serde_json::json!({ "changed": true }),
        };
        assert_eq!(apply(&mut c, update), MetaResponse::GroupUpdated);
        assert_eq!(apply(&mut c, MetaCommand::DeleteTopic { name: "dlq".into() }), MetaResponse::TopicDeleted);
        assert_eq!(apply(&mut c, MetaCommand::DeleteGroup { name: "g".into() }), MetaResponse::GroupDeleted);
        assert_eq!(apply(&mut c, MetaCommand::DeleteGroup { name: "g".into() }), MetaResponse::GroupNotFound);
        assert_eq!(apply(&mut c, MetaCommand::DeleteTopic { name: "t".into() }), MetaResponse::TopicDeleted);
        assert_eq!(apply(&mut c, create_topic("t")), MetaResponse::TopicCreated { id: TopicId(3) }, "ids never reused");
    }
}
