//! The group registry: which groups exist, their actors, and durable
//! create/update/delete. Admin changes are serialized by one async lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use sluice_storage::group::{delete_group, put_group};
use sluice_storage::{now_ms, RecoveredGroupState, TopicConfig, WriterHandle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::actor::{GroupActor, GroupHandle};
use super::config::GroupConfig;
use super::persistence::Persistence;
use super::replicated::ReplicatedGroup;
use super::state::GroupState;
use crate::error::{Error, Result};
use crate::name::{GroupName, TopicName};
use crate::topic::{Topic, TopicRegistry};

/// What every group actor shares.
#[derive(Debug, Clone)]
pub struct GroupContext {
    /// The writer (group state).
    pub writer: WriterHandle,
    /// Topics (source and dead-letter).
    pub topics: Arc<TopicRegistry>,
    /// Tracks actors for shutdown.
    pub tracker: TaskTracker,
    /// Requests queued per group.
    pub queue_depth: usize,
    /// In a cluster: the shards that carry group state (and name leaders).
    pub replicated: Option<Arc<crate::partition::ReplicatedPartitions>>,
}

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartAt {
    /// The first stored offset of each partition.
    Earliest,
    /// Only what is produced from now on.
    Latest,
    /// The first message at or after this time.
    Timestamp(i64),
}

/// Every group of the broker. In a cluster, admin changes are proposed to
/// the metadata group and this registry follows the catalog (`cluster`).
pub struct GroupRegistry {
    groups: RwLock<HashMap<String, Arc<GroupHandle>>>,
    pub(super) admin: tokio::sync::Mutex<()>,
    pub(super) ctx: GroupContext,
    stop: CancellationToken,
    /// Set once when the broker joins a cluster.
    pub(super) cluster: std::sync::OnceLock<Arc<sluice_replication::MetaNode>>,
    /// Bumped whenever a group appears, changes or goes here.
    pub(super) changed: watch::Sender<u64>,
}

impl std::fmt::Debug for GroupRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupRegistry").field("groups", &self.read_map().len()).finish_non_exhaustive()
    }
}

impl GroupRegistry {
    /// Starts the actors of every recovered group.
    pub fn new(
        recovered: Vec<(String, Vec<u8>)>,
        mut states: HashMap<u64, RecoveredGroupState>,
        ctx: GroupContext,
        stop: CancellationToken,
    ) -> Self {
        let registry = GroupRegistry {
            groups: RwLock::default(),
            admin: tokio::sync::Mutex::new(()),
            ctx,
            stop,
            cluster: std::sync::OnceLock::new(),
            changed: watch::Sender::new(0),
        };
        let now = now_ms();
        for (name, bytes) in recovered {
            let settings: GroupConfig = match serde_json::from_slice(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(group = %name, error = %e, "unreadable group configuration; group not started");
                    continue;
                }
            };
            let Ok(topic) = registry.ctx.topics.get(&settings.topic) else {
                tracing::error!(group = %name, topic = %settings.topic, "group's topic is missing; group not started");
                continue;
            };
            // In a cluster the group's state is loaded where its shard is led (`replicated`).
            let state = registry.ctx.replicated.is_none().then(|| {
                GroupState::recover(
                    settings.id,
                    topic.partitions.len() as u32,
                    states.remove(&settings.id).unwrap_or_default(),
                    now,
                )
            });
            let handle = registry.start(name.clone(), topic, settings, state, None);
            registry.write_map().insert(name, handle);
        }
        registry
    }

    pub(super) fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<GroupHandle>>> {
        self.groups.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn read_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<GroupHandle>>> {
        self.groups.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts serving a group: its actor over `state` on a single broker; in
    /// a cluster (where `state` is `None`: it is loaded where the group is
    /// led) the task that runs the actor wherever
    /// this broker leads the group's shard, starting it at `start` if it never
    /// ran (`None`: as the catalog says).
    fn start(
        &self,
        name: String,
        topic: Arc<Topic>,
        settings: GroupConfig,
        state: Option<GroupState>,
        start: Option<StartAt>,
    ) -> Arc<GroupHandle> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(self.ctx.queue_depth);
        let ready = Arc::new(watch::Sender::new(0u64));
        let partitions = topic.partitions.len();
        let settings = Arc::new(RwLock::new(settings));
        let stop = self.stop.child_token();
        let join = match &self.ctx.replicated {
            None => {
                // A single broker always passes the state; an empty one is the safe default.
                let id = settings.read().unwrap_or_else(|e| e.into_inner()).id;
                let mut state =
                    state.unwrap_or_else(|| GroupState::recover(id, partitions as u32, Default::default(), now_ms()));
                let recovered_dead_letters = state.take_recovered_dead_letters();
                let actor = GroupActor {
                    state,
                    settings: settings.clone(),
                    topic: topic.clone(),
                    ctx: self.ctx.clone(),
                    ready: ready.clone(),
                    members: BTreeMap::new(),
                    owners: vec![None; partitions],
                    rotation: 0,
                    dead_letters: super::actor::DeadLetterQueue::new(
                        tx.downgrade(),
                        recovered_dead_letters,
                        0,
                        Arc::default(),
                    ),
                    persistence: Persistence::Local(self.ctx.writer.clone()),
                    read_ahead: Default::default(),
                };
                let stop = stop.clone();
                self.ctx.tracker.spawn(async move { actor.run(&mut rx, stop).await })
            }
            Some(replicated) => {
                let replicated = replicated.clone();
                let group = ReplicatedGroup {
                    name: name.clone(),
                    settings: settings.clone(),
                    topic: topic.clone(),
                    ctx: self.ctx.clone(),
                    ready: ready.clone(),
                    start,
                    replicated,
                    queue: tx.downgrade(),
                    dead_lettering: Arc::default(),
                };
                self.ctx.tracker.spawn(group.serve(rx, stop.clone()))
            }
        };
        Arc::new(GroupHandle {
            name,
            topic,
            settings,
            tx,
            ready,
            stop,
            join: std::sync::Mutex::new(Some(join)),
            deleted: Default::default(),
        })
    }

    /// A receiver that sees a change whenever a group appears, changes or goes here.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The group named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<GroupHandle>> {
        self.read_map().get(name).cloned().ok_or_else(|| Error::GroupNotFound(name.to_owned()))
    }

    /// Every group, sorted by name.
    pub fn list(&self) -> Vec<Arc<GroupHandle>> {
        let mut v: Vec<_> = self.read_map().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Groups that read `topic` or dead-letter into it.
    pub fn referencing(&self, topic: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .read_map()
            .values()
            .filter(|g| {
                let s = g.settings();
                s.topic == topic || s.dead_letter_topic == topic
            })
            .map(|g| g.name.clone())
            .collect();
        v.sort();
        v
    }

    /// Creates a group durably (and its dead-letter topic if absent), then starts it.
    pub async fn create(
        &self,
        name: &GroupName,
        mut settings: GroupConfig,
        start: StartAt,
        dlq_defaults: TopicConfig,
    ) -> Result<Arc<GroupHandle>> {
        let name = name.as_str();
        settings.validate()?;
        // In a cluster the topic may have been created through another broker
        // a moment ago and not be applied here yet: it is waited for before the
        // admin lock is taken, since the catalog follower needs that lock to
        // apply anything.
        let topic = self.ctx.topics.get_or_await(&settings.topic).await;
        let guard = self.admin.lock().await;
        if self.read_map().contains_key(name) {
            return Err(Error::GroupExists(name.to_owned()));
        }
        let topic = topic?;
        settings.name = name.to_owned();
        if self.cluster.get().is_some() {
            // Not under the lock: the catalog follower takes it to apply what is proposed.
            drop(guard);
            self.ensure_dead_letter_topic(&settings, &topic, dlq_defaults).await?;
            return self.create_in_cluster(settings, start).await;
        }
        self.ensure_dead_letter_topic(&settings, &topic, dlq_defaults).await?;
        settings.id = self.ctx.topics.allocate_id().await?;
        settings.created_ms = now_ms();
        self.create_local(settings, start, topic).await
    }

    /// Creates the group's dead-letter topic if it names one that is absent
    /// (with the source topic's partition count).
    pub(super) async fn ensure_dead_letter_topic(
        &self,
        settings: &GroupConfig,
        topic: &Topic,
        dlq_defaults: TopicConfig,
    ) -> Result<()> {
        if settings.dead_letter_topic.is_empty() || self.ctx.topics.get(&settings.dead_letter_topic).is_ok() {
            return Ok(());
        }
        let dead_letter_topic = TopicName::parse("dead_letter_topic", settings.dead_letter_topic.clone())?;
        let beside = crate::topic::Replicas::Beside(topic.name.clone());
        match self.ctx.topics.create(&dead_letter_topic, topic.partitions.len() as u32, beside, dlq_defaults).await {
            // Created meanwhile (in a cluster, through another broker): as good.
            Ok(_) | Err(Error::TopicExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stores and starts a group whose id, name and creation time are set,
    /// reading from `start` of each partition here (under the admin lock).
    pub(super) async fn create_local(
        &self,
        settings: GroupConfig,
        start: StartAt,
        topic: Arc<Topic>,
    ) -> Result<Arc<GroupHandle>> {
        let name = settings.name.clone();
        if self.ctx.replicated.is_some() {
            // Where it starts is decided (and replicated) by the shard's leader.
            self.ctx.writer.write(put_group(&name, encode(&settings))).await?;
            tracing::info!(group = name, topic = %settings.topic, mode = ?settings.mode, "group created");
            let handle = self.start(name.clone(), topic, settings, None, Some(start));
            self.write_map().insert(name, handle.clone());
            self.changed.send_modify(|v| *v += 1);
            return Ok(handle);
        }
        let mut starts = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            starts.push(match start {
                StartAt::Earliest => p.earliest(),
                StartAt::Latest => p.latest(),
                StartAt::Timestamp(ts) => p.offset_for_timestamp(ts).await?,
            });
        }
        let mut state = GroupState::new(settings.id, &starts);
        let mut write = put_group(&name, encode(&settings));
        state.flush_cursors(&mut write);
        self.ctx.writer.write(write).await?;
        tracing::info!(group = name, topic = %settings.topic, mode = ?settings.mode, "group created");
        let handle = self.start(name.clone(), topic, settings, Some(state), None);
        self.write_map().insert(name, handle.clone());
        self.changed.send_modify(|v| *v += 1);
        Ok(handle)
    }

    /// Deletes topic `name` unless a group reads it or dead-letters into it.
    /// Holds the group admin lock, so no group can be created on the topic
    /// between the check and the delete.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        if self.cluster.get().is_some() {
            // The catalog refuses deleting a topic its groups use, cluster-wide.
            return self.ctx.topics.delete(name).await;
        }
        let _guard = self.admin.lock().await;
        let users = self.referencing(name);
        if !users.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "topic `{name}` is used by groups {users:?}; delete them first"
            )));
        }
        self.ctx.topics.delete(name).await
    }

    /// Changes settings durably; the actor sees them at once.
    pub async fn update(&self, name: &str, change: impl FnOnce(&mut GroupConfig)) -> Result<Arc<GroupHandle>> {
        if self.cluster.get().is_some() {
            // The metadata group orders changes; what was made through another
            // broker a moment ago is waited for, not refused.
            let mut settings = self.get_or_await(name).await?.settings();
            change(&mut settings);
            settings.validate()?;
            if !settings.dead_letter_topic.is_empty() {
                self.ctx.topics.get_or_await(&settings.dead_letter_topic).await?;
            }
            return self.update_in_cluster(name, settings).await;
        }
        let _guard = self.admin.lock().await;
        let group = self.get(name)?;
        let mut settings = group.settings();
        change(&mut settings);
        settings.validate()?;
        if !settings.dead_letter_topic.is_empty() {
            self.ctx.topics.get(&settings.dead_letter_topic)?;
        }
        self.update_local(&group, settings).await?;
        Ok(group)
    }

    /// Stores and applies new settings of a group (under the admin lock).
    pub(super) async fn update_local(&self, group: &GroupHandle, settings: GroupConfig) -> Result<()> {
        self.ctx.writer.write(put_group(&group.name, encode(&settings))).await?;
        *group.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
        self.changed.send_modify(|v| *v += 1);
        tracing::info!(group = %group.name, "group updated");
        Ok(())
    }

    /// Deletes a group and all its state (not its dead-letter topic).
    pub async fn delete(&self, name: &str) -> Result<()> {
        if self.cluster.get().is_some() {
            return self.delete_in_cluster(name).await;
        }
        let _guard = self.admin.lock().await;
        self.delete_local(name).await
    }

    /// Stops a group here and deletes its state (under the admin lock).
    pub(super) async fn delete_local(&self, name: &str) -> Result<()> {
        let group = self.get(name)?;
        self.write_map().remove(name);
        self.changed.send_modify(|v| *v += 1);
        group.deleted.store(true, std::sync::atomic::Ordering::Release);
        group.stop.cancel();
        let join = group.join.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(join) = join {
            let _ = join.await;
        }
        self.ctx.writer.write(delete_group(name, group.settings().id)).await?;
        tracing::info!(group = name, "group deleted");
        Ok(())
    }
}

fn encode(settings: &GroupConfig) -> Vec<u8> {
    serde_json::to_vec(settings).expect("group settings are plain data with string keys: encoding cannot fail")
}
