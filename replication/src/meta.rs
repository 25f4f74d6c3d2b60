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

use std::collections::{BTreeMap, BTreeSet};
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
use sluice_storage::schedule::ScheduleProgress;
use sluice_storage::{AtomicWrite, Store, TopicConfig, TopicId, WriterHandle};

use crate::codec::{decode, encode, io_error};
use crate::secret::Secret;

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

/// The catalog feature level this build knows: every command it can apply.
/// A broker registers it with its endpoint, and a command of a higher level
/// than some registered broker's is refused at the proposer (that broker
/// could not decode it and would stop its metadata group): a rolling upgrade
/// uses new commands only once every broker runs the new build.
/// - 0: topics, groups, broker endpoints;
/// - 1: `RemoveBroker`, `SetBrokerDiskFull`, `SetShardLeader`, and topics
///   placed on a replica set smaller than the cluster (`CreateTopic` with a
///   replication factor below the number of `brokers` it lists);
/// - 2: schedules (`CreateSchedule`, `DeleteSchedule`, `AdvanceSchedule`);
/// - 3: permission rules (`AddAcl`, `RemoveAcl`) and the cluster secret
///   (`SetClusterSecret`);
/// - 4: a placed shard's replica moved to another broker (`MoveShardReplica`);
/// - 5: not a catalog command: shard entries that purge a partition
///   (`ShardCommand::Purge`, a dead-letter purge in a cluster), checked
///   with [`crate::MetaNode::require_level`].
pub const FEATURE_LEVEL: u32 = 5;

/// The feature level of a replicated partition purge (`ShardCommand::Purge`).
pub const PURGE_LEVEL: u32 = 5;

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
        /// Place it where this topic is, with its replication factor (a
        /// dead-letter topic beside its group's topic); if that topic exists.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        beside: Option<String>,
        /// The cluster's brokers as the proposer knew them (the metadata
        /// group's members), among which a replica set is chosen; empty: the
        /// brokers registered in the catalog.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        brokers: Vec<u64>,
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
    /// Record whether broker `broker`'s data volume is below its free-space
    /// reserve: such a broker refuses produce, so shard leadership is not
    /// handed to it (it hands its own away) until it has space again.
    SetBrokerDiskFull {
        /// The broker's id.
        broker: u64,
        /// Below the reserve now.
        full: bool,
    },
    /// Record that broker `broker` leads shard `shard` in `term` (ignored
    /// if a later term is recorded): brokers outside the shard's replica set
    /// learn where to send its clients from this.
    SetShardLeader {
        /// The shard's id.
        shard: u64,
        /// The leader's broker id.
        broker: u64,
        /// The term it was elected in.
        term: u64,
    },
    /// Move placed shard `shard`'s replica from broker `from` (lost) to
    /// broker `to` (a new id replacing it), if `from` holds one and `to`
    /// none: `to` then starts the replica without setting the group up, and
    /// the shard's leader adds it as `sluice cluster replace` walks the shard.
    MoveShardReplica {
        /// The placed shard's id.
        shard: u64,
        /// The broker whose replica is moved away.
        from: u64,
        /// The broker taking it.
        to: u64,
    },
    /// Create schedule `name` unless it exists; it gets the next id.
    CreateSchedule {
        /// The schedule's name (already checked by the proposer).
        name: String,
        /// Its definition, as the broker encodes it (this crate does not read it).
        settings: serde_json::Value,
        /// When it was created, by the proposer's clock.
        created_ms: i64,
    },
    /// Delete schedule `name` if it exists.
    DeleteSchedule {
        /// The schedule's name.
        name: String,
    },
    /// Record that schedule `name` (if it still has id `id`) committed to
    /// fire the tick `progress` names; ignored unless it is past the stored
    /// progress, so two runners racing (a deposed leader's and the new
    /// one's) agree on one tick per sequence.
    AdvanceSchedule {
        /// The schedule's name.
        name: String,
        /// Its id (a schedule deleted and made again under the name is another).
        id: u64,
        /// The tick committed to fire.
        progress: ScheduleProgress,
    },
    /// Add permission rule `rule` unless an equal one exists; it gets the next id.
    AddAcl {
        /// The rule, as the broker encodes it (this crate does not read it).
        rule: serde_json::Value,
        /// When it was added, by the proposer's clock.
        created_ms: i64,
    },
    /// Remove permission rule `id` if it exists.
    RemoveAcl {
        /// The rule's id.
        id: u64,
    },
    /// Set the secret brokers present to each other's client ports
    /// (forwarded appends, leader queries) unless one is set: the first wins.
    SetClusterSecret {
        /// Random, made by the proposing broker.
        secret: Secret,
    },
    /// Record where broker `broker` serves clients, and the catalog feature
    /// level its build knows ([`FEATURE_LEVEL`]).
    SetBrokerEndpoint {
        /// The broker's id.
        broker: u64,
        /// Its client endpoint, `host:port`.
        endpoint: String,
        /// Its build's [`FEATURE_LEVEL`] (0: a build from before levels).
        #[serde(default)]
        features: u32,
    },
}

impl MetaCommand {
    /// The catalog feature level a broker needs to apply this command.
    pub fn feature_level(&self) -> u32 {
        match self {
            MetaCommand::RemoveBroker { .. }
            | MetaCommand::SetBrokerDiskFull { .. }
            | MetaCommand::SetShardLeader { .. } => 1,
            MetaCommand::CreateSchedule { .. }
            | MetaCommand::DeleteSchedule { .. }
            | MetaCommand::AdvanceSchedule { .. } => 2,
            MetaCommand::AddAcl { .. } | MetaCommand::RemoveAcl { .. } | MetaCommand::SetClusterSecret { .. } => 3,
            MetaCommand::MoveShardReplica { .. } => 4,
            // Placed: an older build would spread it over every broker instead.
            MetaCommand::CreateTopic { replication_factor, brokers, .. }
                if (*replication_factor as usize) < brokers.len() =>
            {
                1
            }
            _ => 0,
        }
    }
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
            MetaCommand::CreateSchedule { name, .. } => write!(f, "create schedule {name}"),
            MetaCommand::DeleteSchedule { name } => write!(f, "delete schedule {name}"),
            MetaCommand::AdvanceSchedule { name, progress, .. } => {
                write!(f, "schedule {name} fires tick {} ({} ms)", progress.fired, progress.tick_ms)
            }
            MetaCommand::AddAcl { rule, .. } => write!(f, "add permission rule {rule}"),
            MetaCommand::RemoveAcl { id } => write!(f, "remove permission rule {id}"),
            MetaCommand::SetClusterSecret { .. } => f.write_str("set the cluster secret"),
            MetaCommand::SetBrokerEndpoint { broker, endpoint, .. } => write!(f, "broker {broker} at {endpoint}"),
            MetaCommand::RemoveBroker { broker } => write!(f, "remove broker {broker}"),
            MetaCommand::SetBrokerDiskFull { broker, full } => write!(f, "broker {broker} disk full: {full}"),
            MetaCommand::SetShardLeader { shard, broker, term } => {
                write!(f, "shard {shard} led by broker {broker} in term {term}")
            }
            MetaCommand::MoveShardReplica { shard, from, to } => {
                write!(f, "move shard {shard}'s replica from broker {from} to broker {to}")
            }
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
    /// The dead-letter topic is placed on other brokers than the group's
    /// topic (a replication factor below the cluster's); nothing changed.
    GroupDeadLettersApart {
        /// The group's topic.
        topic: String,
        /// The dead-letter topic.
        dead_letter_topic: String,
    },
    /// The schedule was created with this id.
    ScheduleCreated {
        /// Its id.
        id: u64,
    },
    /// A schedule of that name already existed; nothing changed.
    ScheduleExists,
    /// The schedule was deleted.
    ScheduleDeleted,
    /// No schedule of that name (or it has another id now); nothing changed.
    ScheduleNotFound,
    /// The schedule's progress was advanced as proposed.
    ScheduleAdvanced,
    /// The schedule had already fired that far; its progress is unchanged.
    ScheduleStale {
        /// The stored progress.
        progress: ScheduleProgress,
    },
    /// The permission rule was added with this id.
    AclAdded {
        /// Its id.
        id: u64,
    },
    /// An equal rule existed already (with this id); nothing changed.
    AclExists {
        /// The existing rule's id.
        id: u64,
    },
    /// The permission rule was removed.
    AclRemoved,
    /// No permission rule of that id; nothing changed.
    AclNotFound,
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
    /// The placed shard holding all its partitions (a replication factor
    /// below the cluster's); `None`: its partitions are spread over the
    /// shards every broker holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u64>,
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
    /// Its topic's placed shard (the group actor reads its topic's records
    /// on its own broker, so it runs where they are); `None`: a shard every
    /// broker holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u64>,
}

/// A schedule as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CatalogSchedule {
    /// Its id, allocated by the metadata group (from the topics' counter).
    pub id: u64,
    /// Its definition, as the broker encodes it.
    pub settings: serde_json::Value,
    /// When it was created.
    pub created_ms: i64,
    /// How far it has fired.
    #[serde(default)]
    pub progress: ScheduleProgress,
}

/// A permission rule as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CatalogAcl {
    /// The rule, as the broker encodes it.
    pub rule: serde_json::Value,
    /// When it was added.
    pub created_ms: i64,
}

/// The first id of a placed shard: one whose replicas are a chosen subset of
/// the brokers, made for topics whose replication factor is below the
/// cluster's. Shards below it are the ones every broker holds, numbered from 1.
pub const FIRST_PLACED_SHARD: u64 = 1 << 20;

/// A placed shard: the brokers that hold a replica of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CatalogShard {
    /// Its replicas' broker ids, in ascending order.
    pub replicas: Vec<u64>,
    /// Those of `replicas` that took their replica over from a lost broker
    /// (`MoveShardReplica`): the group was set up before them, so they start
    /// their replica without setting it up (a first membership unlike the
    /// others' would break Raft's log matching) and wait to be added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<u64>,
}

/// Who leads a shard, as last recorded by its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ShardLeader {
    /// The leader's broker id.
    pub broker: u64,
    /// The term it was elected in.
    pub term: u64,
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
    /// Brokers whose data volume is below its free-space reserve.
    #[serde(default)]
    pub disk_full: BTreeSet<u64>,
    /// Placed shards by id (see [`FIRST_PLACED_SHARD`]).
    #[serde(default)]
    pub shards: BTreeMap<u64, CatalogShard>,
    /// Shard leaders as their leaders recorded them, by shard id.
    #[serde(default)]
    pub shard_leaders: BTreeMap<u64, ShardLeader>,
    /// Each registered broker's catalog feature level (absent: 0).
    #[serde(default)]
    pub broker_features: BTreeMap<u64, u32>,
    /// Schedules by name.
    #[serde(default)]
    pub schedules: BTreeMap<String, CatalogSchedule>,
    /// Permission rules by id (ids from the topics' counter).
    #[serde(default)]
    pub acls: BTreeMap<u64, CatalogAcl>,
    /// What brokers present to each other's client ports; empty until set.
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub cluster_secret: Secret,
}

const NEXT_TOPIC_ID: &[u8] = b"next-topic-id";
const TOPIC: &str = "topic/";
const BROKER: &str = "broker/";
const GROUP: &str = "group/";
const DISK_FULL: &str = "disk-full/";
const BROKER_FEATURES: &str = "broker-features/";
const SHARD: &str = "shard/";
const SHARD_LEADER: &str = "shard-leader/";
const SCHEDULE: &str = "schedule/";
const ACL: &str = "acl/";
const CLUSTER_SECRET: &[u8] = b"cluster-secret";

impl Catalog {
    /// Applies `command`, adding the records it changes to `write`.
    fn apply(&mut self, command: &MetaCommand, group_id: GroupId, write: &mut AtomicWrite) -> io::Result<MetaResponse> {
        Ok(match command {
            MetaCommand::CreateTopic { name, partitions, replication_factor, config, created_ms, beside, brokers } => {
                if let Some(t) = self.topics.get(name) {
                    return Ok(MetaResponse::TopicExists { id: t.id });
                }
                let (shard, replication_factor) = match beside.as_ref().and_then(|b| self.topics.get(b)) {
                    Some(other) => (other.shard, other.replication_factor),
                    None => (self.place(*replication_factor, brokers, group_id, write)?, *replication_factor),
                };
                let topic = CatalogTopic {
                    id: TopicId(self.next_topic_id),
                    partitions: *partitions,
                    replication_factor,
                    config: *config,
                    created_ms: *created_ms,
                    shard,
                };
                self.take_id(group_id, write)?;
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
                if let Some(refused) = self.dead_letters_apart(topic, dead_letter_topic) {
                    return Ok(refused);
                }
                let group = CatalogGroup {
                    id: self.next_topic_id,
                    topic: topic.clone(),
                    dead_letter_topic: dead_letter_topic.clone(),
                    settings: settings.clone(),
                    created_ms: *created_ms,
                    shard: self.topics.get(topic).and_then(|t| t.shard),
                };
                self.take_id(group_id, write)?;
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
                if let Some(refused) = self.dead_letters_apart(&topic, dead_letter_topic) {
                    return Ok(refused);
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
            MetaCommand::CreateSchedule { name, settings, created_ms } => {
                if self.schedules.contains_key(name) {
                    return Ok(MetaResponse::ScheduleExists);
                }
                let schedule = CatalogSchedule {
                    id: self.next_topic_id,
                    settings: settings.clone(),
                    created_ms: *created_ms,
                    progress: ScheduleProgress::default(),
                };
                self.take_id(group_id, write)?;
                keys::put_record(write, group_id, format!("{SCHEDULE}{name}").as_bytes(), encode(&schedule)?);
                let id = schedule.id;
                self.schedules.insert(name.clone(), schedule);
                MetaResponse::ScheduleCreated { id }
            }
            MetaCommand::DeleteSchedule { name } => {
                if self.schedules.remove(name).is_none() {
                    return Ok(MetaResponse::ScheduleNotFound);
                }
                keys::delete_record(write, group_id, format!("{SCHEDULE}{name}").as_bytes());
                MetaResponse::ScheduleDeleted
            }
            MetaCommand::AdvanceSchedule { name, id, progress } => {
                let Some(schedule) = self.schedules.get_mut(name).filter(|s| s.id == *id) else {
                    return Ok(MetaResponse::ScheduleNotFound);
                };
                if progress.fired <= schedule.progress.fired {
                    return Ok(MetaResponse::ScheduleStale { progress: schedule.progress });
                }
                schedule.progress = *progress;
                keys::put_record(write, group_id, format!("{SCHEDULE}{name}").as_bytes(), encode(&*schedule)?);
                MetaResponse::ScheduleAdvanced
            }
            MetaCommand::AddAcl { rule, created_ms } => {
                if let Some((id, _)) = self.acls.iter().find(|(_, a)| a.rule == *rule) {
                    return Ok(MetaResponse::AclExists { id: *id });
                }
                let id = self.next_topic_id;
                let acl = CatalogAcl { rule: rule.clone(), created_ms: *created_ms };
                self.take_id(group_id, write)?;
                keys::put_record(write, group_id, format!("{ACL}{id}").as_bytes(), encode(&acl)?);
                self.acls.insert(id, acl);
                MetaResponse::AclAdded { id }
            }
            MetaCommand::RemoveAcl { id } => {
                if self.acls.remove(id).is_none() {
                    return Ok(MetaResponse::AclNotFound);
                }
                keys::delete_record(write, group_id, format!("{ACL}{id}").as_bytes());
                MetaResponse::AclRemoved
            }
            MetaCommand::SetClusterSecret { secret } => {
                if self.cluster_secret.is_empty() && !secret.is_empty() {
                    self.cluster_secret = secret.clone();
                    keys::put_record(write, group_id, CLUSTER_SECRET, encode(secret)?);
                }
                MetaResponse::Done
            }
            MetaCommand::SetBrokerEndpoint { broker, endpoint, features } => {
                self.brokers.insert(*broker, endpoint.clone());
                self.broker_features.insert(*broker, *features);
                keys::put_record(write, group_id, format!("{BROKER}{broker}").as_bytes(), encode(endpoint)?);
                keys::put_record(write, group_id, format!("{BROKER_FEATURES}{broker}").as_bytes(), encode(features)?);
                MetaResponse::Done
            }
            MetaCommand::RemoveBroker { broker } => {
                self.brokers.remove(broker);
                self.disk_full.remove(broker);
                self.broker_features.remove(broker);
                keys::delete_record(write, group_id, format!("{BROKER}{broker}").as_bytes());
                keys::delete_record(write, group_id, format!("{BROKER_FEATURES}{broker}").as_bytes());
                keys::delete_record(write, group_id, format!("{DISK_FULL}{broker}").as_bytes());
                MetaResponse::Done
            }
            MetaCommand::MoveShardReplica { shard, from, to } => {
                let Some(placed) = self.shards.get_mut(shard) else { return Ok(MetaResponse::Done) };
                if placed.replicas.contains(from) && !placed.replicas.contains(to) {
                    placed.replicas.retain(|r| r != from);
                    placed.replicas.push(*to);
                    placed.replicas.sort_unstable();
                    placed.joined.retain(|r| r != from);
                    placed.joined.push(*to);
                    let key = format!("{SHARD}{shard}");
                    keys::put_record(write, group_id, key.as_bytes(), encode(&*placed)?);
                }
                MetaResponse::Done
            }
            MetaCommand::SetShardLeader { shard, broker, term } => {
                let known = self.shard_leaders.get(shard).map_or(0, |l| l.term);
                if *term >= known {
                    let leader = ShardLeader { broker: *broker, term: *term };
                    self.shard_leaders.insert(*shard, leader);
                    keys::put_record(write, group_id, format!("{SHARD_LEADER}{shard}").as_bytes(), encode(&leader)?);
                }
                MetaResponse::Done
            }
            MetaCommand::SetBrokerDiskFull { broker, full } => {
                let key = format!("{DISK_FULL}{broker}");
                if *full {
                    self.disk_full.insert(*broker);
                    keys::put_record(write, group_id, key.as_bytes(), encode(&true)?);
                } else {
                    self.disk_full.remove(broker);
                    keys::delete_record(write, group_id, key.as_bytes());
                }
                MetaResponse::Done
            }
        })
    }

    /// Moves the id counter past the id just given out (`next_topic_id`,
    /// shared by topics, groups and schedules), recording it in `write`.
    fn take_id(&mut self, group_id: GroupId, write: &mut AtomicWrite) -> io::Result<()> {
        self.next_topic_id += 1;
        keys::put_record(write, group_id, NEXT_TOPIC_ID, encode(&self.next_topic_id)?);
        Ok(())
    }

    /// Where a new topic of `replication_factor` goes: `None` (the shards
    /// every broker holds) unless it is below the number of `brokers` (if
    /// empty: those registered in the catalog); else the
    /// placed shard of those replica sets of that size that hold the fewest
    /// partitions, made (and recorded in `write`) if it does not exist yet.
    /// The candidate sets are runs of consecutive brokers in id order, each
    /// broker starting one, so placed shards spread over the brokers evenly.
    fn place(
        &mut self,
        replication_factor: u32,
        brokers: &[u64],
        group_id: GroupId,
        write: &mut AtomicWrite,
    ) -> io::Result<Option<u64>> {
        let mut brokers: Vec<u64> =
            if brokers.is_empty() { self.brokers.keys().copied().collect() } else { brokers.to_vec() };
        brokers.sort_unstable();
        brokers.dedup();
        let size = replication_factor as usize;
        if size == 0 || size >= brokers.len() {
            return Ok(None);
        }
        let mut best: Option<(u64, Vec<u64>)> = None;
        for first in 0..brokers.len() {
            let mut replicas: Vec<u64> = (0..size).map(|i| brokers[(first + i) % brokers.len()]).collect();
            replicas.sort_unstable();
            let existing = self.shards.iter().find(|(_, s)| s.replicas == replicas).map(|(id, _)| *id);
            let load = existing.map_or(0, |id| {
                self.topics.values().filter(|t| t.shard == Some(id)).map(|t| u64::from(t.partitions)).sum()
            });
            if best.as_ref().is_none_or(|(l, _)| load < *l) {
                best = Some((load, replicas));
            }
        }
        let Some((_, replicas)) = best else { return Ok(None) };
        if let Some((id, _)) = self.shards.iter().find(|(_, s)| s.replicas == replicas) {
            return Ok(Some(*id));
        }
        let id = self.shards.keys().next_back().map_or(FIRST_PLACED_SHARD, |last| last + 1);
        let shard = CatalogShard { replicas, joined: Vec::new() };
        keys::put_record(write, group_id, format!("{SHARD}{id}").as_bytes(), encode(&shard)?);
        self.shards.insert(id, shard);
        Ok(Some(id))
    }

    /// The placed shards that `broker` holds a replica of.
    pub fn shards_of(&self, broker: u64) -> impl Iterator<Item = (u64, &CatalogShard)> + '_ {
        self.shards.iter().filter(move |(_, s)| s.replicas.contains(&broker)).map(|(id, s)| (*id, s))
    }

    /// A refusal if a group of `topic` could not dead-letter into
    /// `dead_letter_topic` (both in the catalog): its actor searches and
    /// appends the dead-letter topic's partitions on its own broker, so they
    /// must be held wherever the group's shard is: on every broker, or on the
    /// topic's own placed shard.
    fn dead_letters_apart(&self, topic: &str, dead_letter_topic: &str) -> Option<MetaResponse> {
        let dead = self.topics.get(dead_letter_topic)?;
        let shard = self.topics.get(topic)?.shard;
        (dead.shard.is_some() && dead.shard != shard).then(|| MetaResponse::GroupDeadLettersApart {
            topic: topic.to_owned(),
            dead_letter_topic: dead_letter_topic.to_owned(),
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

    /// The registered brokers whose build knows less than feature `level`,
    /// with the level each knows.
    pub fn brokers_below(&self, level: u32) -> Vec<(u64, u32)> {
        let known = |b: &u64| self.broker_features.get(b).copied().unwrap_or(0);
        self.brokers.keys().map(|b| (*b, known(b))).filter(|(_, l)| *l < level).collect()
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
        for (broker, features) in &self.broker_features {
            keys::put_record(write, group_id, format!("{BROKER_FEATURES}{broker}").as_bytes(), encode(features)?);
        }
        for (name, group) in &self.groups {
            keys::put_record(write, group_id, format!("{GROUP}{name}").as_bytes(), encode(group)?);
        }
        for broker in &self.disk_full {
            keys::put_record(write, group_id, format!("{DISK_FULL}{broker}").as_bytes(), encode(&true)?);
        }
        for (id, shard) in &self.shards {
            keys::put_record(write, group_id, format!("{SHARD}{id}").as_bytes(), encode(shard)?);
        }
        for (id, leader) in &self.shard_leaders {
            keys::put_record(write, group_id, format!("{SHARD_LEADER}{id}").as_bytes(), encode(leader)?);
        }
        for (name, schedule) in &self.schedules {
            keys::put_record(write, group_id, format!("{SCHEDULE}{name}").as_bytes(), encode(schedule)?);
        }
        for (id, acl) in &self.acls {
            keys::put_record(write, group_id, format!("{ACL}{id}").as_bytes(), encode(acl)?);
        }
        if !self.cluster_secret.is_empty() {
            keys::put_record(write, group_id, CLUSTER_SECRET, encode(&self.cluster_secret)?);
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
            } else if key.as_bytes() == CLUSTER_SECRET {
                catalog.cluster_secret = decode(&value, "cluster secret")?;
            } else if let Some(name) = key.strip_prefix(TOPIC) {
                catalog.topics.insert(name.to_owned(), decode(&value, "catalog topic")?);
            } else if let Some(name) = key.strip_prefix(SCHEDULE) {
                catalog.schedules.insert(name.to_owned(), decode(&value, "catalog schedule")?);
            } else if let Some(id) = key.strip_prefix(ACL) {
                let id =
                    id.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad permission rule key"))?;
                catalog.acls.insert(id, decode(&value, "permission rule")?);
            } else if let Some(name) = key.strip_prefix(GROUP) {
                catalog.groups.insert(name.to_owned(), decode(&value, "catalog group")?);
            } else if let Some(id) = key.strip_prefix(BROKER) {
                let id = id.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad broker key"))?;
                catalog.brokers.insert(id, decode(&value, "broker endpoint")?);
            } else if let Some(id) = key.strip_prefix(BROKER_FEATURES) {
                let id = id.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad features key"))?;
                catalog.broker_features.insert(id, decode(&value, "broker features")?);
            } else if let Some(id) = key.strip_prefix(SHARD_LEADER) {
                let id = id.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad shard-leader key"))?;
                catalog.shard_leaders.insert(id, decode(&value, "shard leader")?);
            } else if let Some(id) = key.strip_prefix(SHARD) {
                let id = id.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad shard key"))?;
                catalog.shards.insert(id, decode(&value, "placed shard")?);
            } else if let Some(id) = key.strip_prefix(DISK_FULL) {
                let id = id.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad disk-full key"))?;
                catalog.disk_full.insert(id);
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

    /// `f` over the catalog as of the last applied entry, without copying it
    /// (applies wait meanwhile: keep `f` short).
    pub fn with_catalog<T>(&self, f: impl FnOnce(&Catalog) -> T) -> T {
        f(&self.state().catalog)
    }

    /// The cluster secret (empty until set), without copying the catalog.
    pub fn cluster_secret(&self) -> String {
        self.state().catalog.cluster_secret.expose().to_owned()
    }

    /// Broker `id`'s registered client endpoint, without copying the catalog.
    pub fn broker_endpoint(&self, id: u64) -> Option<String> {
        self.state().catalog.brokers.get(&id).cloned()
    }

    /// The broker whose registered client endpoint is `endpoint`, without
    /// copying the catalog.
    pub fn broker_at(&self, endpoint: &str) -> Option<u64> {
        self.state().catalog.brokers.iter().find(|(_, e)| e.as_str() == endpoint).map(|(id, _)| *id)
    }

    /// The leader placed shard `shard` last recorded, without copying the catalog.
    pub fn shard_leader(&self, shard: u64) -> Option<u64> {
        self.state().catalog.shard_leaders.get(&shard).map(|l| l.broker)
    }

    /// The registered brokers whose build knows less than feature `level`.
    pub fn brokers_below(&self, level: u32) -> Vec<(u64, u32)> {
        self.state().catalog.brokers_below(level)
    }

    /// Whether the catalog holds topic `name`, without copying it.
    pub fn holds_topic(&self, name: &str) -> bool {
        self.state().catalog.topics.contains_key(name)
    }

    /// Whether the catalog holds group `name`, without copying it.
    pub fn holds_group(&self, name: &str) -> bool {
        self.state().catalog.groups.contains_key(name)
    }

    /// Topic `name`'s replication factor, without copying the catalog.
    pub fn replication_factor(&self, name: &str) -> Option<u32> {
        self.state().catalog.topics.get(name).map(|t| t.replication_factor)
    }

    /// The brokers whose data volume is below its reserve, without copying the catalog.
    pub fn disk_full(&self) -> BTreeSet<u64> {
        self.state().catalog.disk_full.clone()
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
        create_placed(name, 1, 3, None)
    }

    fn create_placed(name: &str, partitions: u32, replication_factor: u32, beside: Option<&str>) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor,
            config: TopicConfig {
                retention_ms: 0,
                retention_bytes: 0,
                segment_bytes: 1 << 20,
                segment_ms: 60_000,
                max_message_bytes: 1 << 20,
                durability: sluice_storage::Durability::Always,
            },
            created_ms: 1,
            beside: beside.map(str::to_owned),
            brokers: Vec::new(),
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

    /// A catalog of brokers 1, 2 and 3.
    fn three_brokers() -> Catalog {
        let mut c = Catalog::default();
        for broker in 1..=3 {
            apply(
                &mut c,
                MetaCommand::SetBrokerEndpoint { broker, endpoint: format!("b{broker}:9092"), features: FEATURE_LEVEL },
            );
        }
        c
    }

    #[test]
    fn topics_below_the_cluster_replication_factor_are_placed_on_the_least_loaded_replica_set() {
        let mut c = three_brokers();
        apply(&mut c, create_placed("full", 4, 3, None));
        assert_eq!(c.topics["full"].shard, None, "as many replicas as brokers: the shards every broker holds");
        apply(&mut c, create_placed("one-a", 4, 1, None));
        apply(&mut c, create_placed("one-b", 2, 1, None));
        apply(&mut c, create_placed("one-c", 1, 1, None));
        apply(&mut c, create_placed("one-d", 1, 1, None));
        let replicas = |c: &Catalog, t: &str| c.shards[&c.topics[t].shard.expect("placed")].replicas.clone();
        assert_eq!(replicas(&c, "one-a"), vec![1]);
        assert_eq!(replicas(&c, "one-b"), vec![2], "the emptiest replica set");
        assert_eq!(replicas(&c, "one-c"), vec![3]);
        assert_eq!(replicas(&c, "one-d"), vec![3], "broker 3 holds 1 partition, broker 2 holds 2");
        assert_eq!(c.topics["one-c"].shard, c.topics["one-d"].shard, "one shard per replica set");
        apply(&mut c, create_placed("two", 3, 2, None));
        assert_eq!(replicas(&c, "two"), vec![1, 2]);
        assert!(c.shards.keys().all(|id| *id >= FIRST_PLACED_SHARD));
        assert_eq!(c.shards_of(2).count(), 2, "broker 2: its own shard and the pair");

        // A dead-letter topic made beside its group's topic shares its shard and factor.
        apply(&mut c, create_placed("one-a-dlq", 4, 3, Some("one-a")));
        assert_eq!(
            (c.topics["one-a-dlq"].shard, c.topics["one-a-dlq"].replication_factor),
            (c.topics["one-a"].shard, 1)
        );
        assert!(matches!(apply(&mut c, create_group("g", "one-a", "one-a-dlq")), MetaResponse::GroupCreated { .. }));
        assert_eq!(c.groups["g"].shard, c.topics["one-a"].shard, "a group runs where its topic is");
        assert!(matches!(
            apply(&mut c, create_group("g-full-dlq", "one-a", "full")),
            MetaResponse::GroupCreated { .. }
        ));
        assert_eq!(
            apply(&mut c, create_group("g-apart", "one-a", "one-b")),
            MetaResponse::GroupDeadLettersApart { topic: "one-a".into(), dead_letter_topic: "one-b".into() }
        );
        assert_eq!(
            apply(&mut c, create_group("g-full", "full", "two")),
            MetaResponse::GroupDeadLettersApart { topic: "full".into(), dead_letter_topic: "two".into() }
        );
    }

    #[tokio::test]
    async fn placed_shards_and_their_leaders_survive_a_reload() {
        let mut c = three_brokers();
        apply(&mut c, create_placed("one", 1, 1, None));
        let shard = c.topics["one"].shard.expect("placed");
        apply(&mut c, MetaCommand::SetShardLeader { shard, broker: 1, term: 5 });
        apply(&mut c, MetaCommand::SetShardLeader { shard, broker: 2, term: 4 });
        assert_eq!(c.shard_leaders[&shard], ShardLeader { broker: 1, term: 5 }, "an older term is ignored");
        let holder = c.shards[&shard].replicas[0];
        let moved = MetaCommand::MoveShardReplica { shard, from: holder, to: 9 };
        assert_eq!(moved.feature_level(), 4, "an older build cannot apply a move");
        apply(&mut c, moved.clone());
        assert_eq!((c.shards[&shard].replicas.clone(), c.shards[&shard].joined.clone()), (vec![9], vec![9]));
        apply(&mut c, moved);
        assert_eq!(c.shards[&shard].replicas, vec![9], "a move applied again changes nothing");
        apply(&mut c, MetaCommand::MoveShardReplica { shard, from: 7, to: 8 });
        assert_eq!(c.shards[&shard].replicas, vec![9], "a broker holding no replica moves none");
        let (store, _) = Store::open_in_memory(&sluice_storage::MemoryDisk::new()).expect("store");
        let (writer, _join) =
            sluice_storage::spawn_writer(store.clone(), sluice_storage::WriterConfig::default()).expect("writer");
        let mut all = AtomicWrite::new();
        c.put_all(META_GROUP, &mut all).expect("put all");
        writer.write(all).await.expect("write");
        assert_eq!(Catalog::load(store.raft_records(META_GROUP).expect("records")).expect("load"), c);
    }

    #[tokio::test]
    async fn schedules_advance_only_forward_and_survive_a_reload() {
        let mut c = three_brokers();
        let create = MetaCommand::CreateSchedule {
            name: "tick".into(),
            settings: serde_json::json!({"every": 1000}),
            created_ms: 5,
        };
        let MetaResponse::ScheduleCreated { id } = apply(&mut c, create.clone()) else { panic!("not created") };
        assert_eq!(apply(&mut c, create.clone()), MetaResponse::ScheduleExists);
        assert_eq!(create.feature_level(), 2, "an older build cannot apply schedules");
        let at = |fired, tick_ms| ScheduleProgress { fired, tick_ms, missed: 0 };
        let advance = |id, progress| MetaCommand::AdvanceSchedule { name: "tick".into(), id, progress };
        assert_eq!(apply(&mut c, advance(id, at(1, 1005))), MetaResponse::ScheduleAdvanced);
        assert_eq!(
            apply(&mut c, advance(id, at(1, 2005))),
            MetaResponse::ScheduleStale { progress: at(1, 1005) },
            "a racing runner's tick for the same sequence loses"
        );
        assert_eq!(apply(&mut c, advance(id + 1, at(2, 2005))), MetaResponse::ScheduleNotFound, "another id");
        assert_eq!(apply(&mut c, advance(id, at(2, 2005))), MetaResponse::ScheduleAdvanced);
        let (store, _) = Store::open_in_memory(&sluice_storage::MemoryDisk::new()).expect("store");
        let (writer, _join) =
            sluice_storage::spawn_writer(store.clone(), sluice_storage::WriterConfig::default()).expect("writer");
        let mut all = AtomicWrite::new();
        c.put_all(META_GROUP, &mut all).expect("put all");
        writer.write(all).await.expect("write");
        let loaded = Catalog::load(store.raft_records(META_GROUP).expect("records")).expect("load");
        assert_eq!(loaded.schedules["tick"].progress, at(2, 2005));
        assert_eq!(loaded, c);
        assert_eq!(apply(&mut c, MetaCommand::DeleteSchedule { name: "tick".into() }), MetaResponse::ScheduleDeleted);
        assert_eq!(apply(&mut c, MetaCommand::DeleteSchedule { name: "tick".into() }), MetaResponse::ScheduleNotFound);
    }

    #[tokio::test]
    async fn equal_permission_rules_are_one_and_rules_survive_a_reload() {
        let mut c = three_brokers();
        let rule = serde_json::json!({"subject": "principal:alice", "operation": "produce"});
        let add = MetaCommand::AddAcl { rule: rule.clone(), created_ms: 7 };
        assert_eq!(add.feature_level(), 3, "an older build cannot apply permission rules");
        let MetaResponse::AclAdded { id } = apply(&mut c, add.clone()) else { panic!("not added") };
        assert_eq!(apply(&mut c, add), MetaResponse::AclExists { id }, "the same rule twice is one rule");
        let other = MetaCommand::AddAcl { rule: serde_json::json!({"subject": "role:ops"}), created_ms: 8 };
        let MetaResponse::AclAdded { id: second } = apply(&mut c, other) else { panic!("not added") };
        assert!(second > id, "ids come from the one counter");
        let (store, _) = Store::open_in_memory(&sluice_storage::MemoryDisk::new()).expect("store");
        let (writer, _join) =
            sluice_storage::spawn_writer(store.clone(), sluice_storage::WriterConfig::default()).expect("writer");
        let mut all = AtomicWrite::new();
        c.put_all(META_GROUP, &mut all).expect("put all");
        writer.write(all).await.expect("write");
        let loaded = Catalog::load(store.raft_records(META_GROUP).expect("records")).expect("load");
        assert_eq!(loaded.acls[&id].rule, rule);
        assert_eq!(loaded, c);
        assert_eq!(apply(&mut c, MetaCommand::RemoveAcl { id }), MetaResponse::AclRemoved);
        assert_eq!(apply(&mut c, MetaCommand::RemoveAcl { id }), MetaResponse::AclNotFound);
        assert_eq!(c.acls.keys().copied().collect::<Vec<_>>(), vec![second]);
        apply(&mut c, MetaCommand::SetClusterSecret { secret: "first".into() });
        apply(&mut c, MetaCommand::SetClusterSecret { secret: "second".into() });
        assert_eq!(c.cluster_secret.expose(), "first", "the first secret stays");
        assert!(!format!("{c:?}").contains("first"), "a catalog's debug output hides the secret");
        let mut all = AtomicWrite::new();
        c.put_all(META_GROUP, &mut all).expect("put all");
        writer.write(all).await.expect("write");
        let loaded = Catalog::load(store.raft_records(META_GROUP).expect("records")).expect("load");
        assert_eq!(loaded.cluster_secret.expose(), "first");
    }

    #[test]
    fn commands_name_the_feature_level_they_need_and_old_registrations_count_as_zero() {
        let among = |command: MetaCommand, members: Vec<u64>| match command {
            MetaCommand::CreateTopic { name, partitions, replication_factor, config, created_ms, beside, .. } => {
                MetaCommand::CreateTopic {
                    name,
                    partitions,
                    replication_factor,
                    config,
                    created_ms,
                    beside,
                    brokers: members,
                }
            }
            other => other,
        };
        assert_eq!(among(create_placed("full", 1, 3, None), vec![1, 2, 3]).feature_level(), 0);
        assert_eq!(among(create_placed("dlq", 1, 3, Some("full")), vec![1, 2, 3]).feature_level(), 0);
        assert_eq!(among(create_placed("pair", 1, 2, None), vec![1, 2, 3]).feature_level(), 1);
        assert_eq!(MetaCommand::RemoveBroker { broker: 3 }.feature_level(), 1);
        // A registration written by a build from before levels has no `features`.
        let old: MetaCommand =
            serde_json::from_str(r#"{"op":"set-broker-endpoint","broker":3,"endpoint":"b3:9092"}"#).expect("decode");
        assert_eq!(old, MetaCommand::SetBrokerEndpoint { broker: 3, endpoint: "b3:9092".into(), features: 0 });
        let mut c = three_brokers();
        assert!(c.brokers_below(FEATURE_LEVEL).is_empty());
        apply(&mut c, old);
        assert_eq!(c.brokers_below(FEATURE_LEVEL), vec![(3, 0)]);
        assert!(c.brokers_below(0).is_empty(), "level-0 commands are never held up");
        apply(&mut c, MetaCommand::RemoveBroker { broker: 3 });
        assert!(c.brokers_below(FEATURE_LEVEL).is_empty(), "a removed broker holds nothing back");
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
