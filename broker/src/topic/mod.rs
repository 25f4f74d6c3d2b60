//! The topic registry: which topics exist, their settings and partition
//! handles. Admin changes are serialized by one async lock and are durable
//! before they are visible. `produce` is the produce path every front door uses.

pub(crate) mod cluster;
pub mod produce;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use sluice_storage::{now_ms, PartitionId, PartitionLog, Recovered, Store, TopicConfig, TopicId, TopicMeta};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::name::TopicName;
use crate::partition::{spawn_partition, PartitionContext, PartitionHandle};

/// A live topic.
#[derive(Debug)]
pub struct Topic {
    /// Internal id (never reused).
    pub id: TopicId,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created_ms: i64,
    /// Settings; shared with the partition actors, which read them per append.
    pub settings: Arc<RwLock<TopicConfig>>,
    /// Partitions in order.
    pub partitions: Vec<PartitionHandle>,
    /// Bumped after every committed append to any partition, so long-polls across partitions wake.
    pub appended: Arc<tokio::sync::watch::Sender<u64>>,
    round_robin: AtomicU32,
    stop: CancellationToken,
    actors: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Topic {
    /// The current settings.
    pub fn settings(&self) -> TopicConfig {
        *self.settings.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The partition, or `PartitionNotFound`.
    pub fn partition(&self, partition: u32) -> Result<&PartitionHandle> {
        self.partitions.get(partition as usize).ok_or_else(|| Error::PartitionNotFound {
            topic: self.name.clone(),
            partition,
            count: self.partitions.len() as u32,
        })
    }

    /// The partition a keyless request goes to: round-robin per request.
    pub fn next_round_robin(&self) -> u32 {
        self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partitions.len().max(1) as u32
    }

    fn meta(&self) -> TopicMeta {
        TopicMeta {
            id: self.id,
            name: self.name.clone(),
            partitions: self.partitions.len() as u32,
            settings: self.settings(),
            created_ms: self.created_ms,
        }
    }
}

/// Every topic of the broker. In a cluster, admin changes are proposed to the
/// metadata group and this registry follows the catalog (`crate::cluster`);
/// alone, it is the source of truth.
pub struct TopicRegistry {
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    next_id: tokio::sync::Mutex<u64>,
    ctx: PartitionContext,
    root: CancellationToken,
    /// Set once when the broker joins a cluster.
    cluster: std::sync::OnceLock<cluster::Attached>,
    /// Bumped whenever a topic appears, changes or goes, so a proposer can
    /// wait for the catalog follower to apply its change here.
    changed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for TopicRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicRegistry").field("topics", &self.counts()).finish_non_exhaustive()
    }
}

/// How many brokers hold a new topic's partitions, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replicas {
    /// The broker's default: min(3, brokers) in a cluster, 1 alone.
    Default,
    /// This many brokers (1 to the number of brokers).
    Factor(u32),
    /// On the brokers that hold this topic, as many (a dead-letter topic
    /// beside its group's topic, so the group's actor finds both on its
    /// broker); the default if that topic is gone.
    Beside(String),
}

impl TopicRegistry {
    /// Starts the actors of every recovered topic.
    pub fn new(recovered: Recovered, ctx: PartitionContext, root: CancellationToken) -> Self {
        let registry = TopicRegistry {
            topics: RwLock::new(HashMap::new()),
            next_id: tokio::sync::Mutex::new(recovered.next_topic_id),
            ctx,
            root,
            cluster: std::sync::OnceLock::new(),
            changed: tokio::sync::watch::Sender::new(0),
        };
        for (meta, logs) in recovered.topics {
            let name = meta.name.clone();
            match registry.start(meta, logs) {
                Ok(topic) => {
                    registry.write_map().insert(topic.name.clone(), topic);
                }
                Err(e) => tracing::error!(topic = name, error = %e, "a recovered topic cannot be served"),
            }
        }
        registry
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a topic's partitions: an actor per partition log, or (in a
    /// cluster, where the shards own the logs) a handle bound to its shard.
    fn start(&self, meta: TopicMeta, logs: Vec<PartitionLog>) -> Result<Arc<Topic>> {
        let settings = Arc::new(RwLock::new(meta.settings));
        let stop = self.root.child_token();
        let appended = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        let mut actors = Vec::with_capacity(logs.len());
        if let Some(shards) = &self.ctx.replicated {
            for index in 0..meta.partitions {
                let id = PartitionId::new(meta.id, index);
                partitions.push(PartitionHandle::replicated(id, shards, &settings, appended.clone())?);
            }
        } else {
            for log in logs {
                let (handle, join) = spawn_partition(log, settings.clone(), appended.clone(), &self.ctx, stop.clone());
                partitions.push(handle);
                actors.push(join);
            }
        }
        Ok(Arc::new(Topic {
            id: meta.id,
            name: meta.name,
            created_ms: meta.created_ms,
            settings,
            partitions,
            appended,
            round_robin: AtomicU32::new(0),
            stop,
            actors: std::sync::Mutex::new(actors),
        }))
    }

    /// The topic named `name`, or `TopicNotFound`.
    pub fn get(&self, name: &str) -> Result<Arc<Topic>> {
        self.read_map().get(name).cloned().ok_or_else(|| Error::TopicNotFound(name.to_owned()))
    }

    /// Every topic, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self.read_map().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Number of topics and partitions, for the start-up summary.
    pub fn counts(&self) -> (usize, usize) {
        let map = self.read_map();
        (map.len(), map.values().map(|t| t.partitions.len()).sum())
    }

    /// Reserves a fresh id (for a group) and persists the counter.
    pub async fn allocate_id(&self) -> Result<u64> {
        let mut next_id = self.next_id.lock().await;
        let id = *next_id;
        self.ctx.writer.write(Store::next_id(id + 1)).await?;
        *next_id += 1;
        Ok(id)
    }

    /// Creates a topic durably, then makes it visible. The name is typed:
    /// whoever creates a topic has checked its name. In a cluster the
    /// metadata group allocates its id, and this returns once this broker
    /// serves it.
    pub async fn create(
        &self,
        name: &TopicName,
        partitions: u32,
        replicas: Replicas,
        settings: TopicConfig,
    ) -> Result<Arc<Topic>> {
        if let Some(cluster) = self.cluster.get() {
            return self.create_in_cluster(cluster, name, partitions, replicas, settings).await;
        }
        if let Replicas::Factor(n) = replicas {
            if n > 1 {
                return Err(Error::invalid(
                    "replication_factor",
                    format!("a single broker holds one copy of each partition: give 0 or 1, not {n}"),
                ));
            }
        }
        let mut next_id = self.next_id.lock().await;
        if self.read_map().contains_key(name.as_str()) {
            return Err(Error::TopicExists(name.as_str().to_owned()));
        }
        let meta = TopicMeta {
            id: TopicId(*next_id),
            name: name.as_str().to_owned(),
            partitions,
            settings,
            created_ms: now_ms(),
        };
        self.create_local(&mut next_id, meta).await
    }

    /// Stores and starts a topic whose id is decided (by the counter, or by
    /// the cluster catalog), under the admin lock.
    async fn create_local(&self, next_id: &mut u64, meta: TopicMeta) -> Result<Arc<Topic>> {
        let next = (*next_id).max(meta.id.0 + 1);
        self.ctx.writer.write(Store::create_topic(&meta, next)?).await?;
        *next_id = next;
        let (name, partitions, settings, now) = (meta.name.clone(), meta.partitions, meta.settings, meta.created_ms);
        let logs = match self.ctx.replicated {
            Some(_) => Vec::new(),
            None => {
                (0..partitions).map(|p| PartitionLog::new(&self.ctx.store, PartitionId::new(meta.id, p), now)).collect()
            }
        };
        let topic = self.start(meta, logs)?;
        self.write_map().insert(name.clone(), topic.clone());
        self.changed.send_modify(|v| *v += 1);
        tracing::info!(topic = name, partitions, ?settings, "topic created");
        Ok(topic)
    }

    /// Changes a topic's settings durably; partition actors see them on
    /// their next append. In a cluster the change goes through the catalog.
    pub async fn update(&self, name: &str, change: impl FnOnce(&mut TopicConfig)) -> Result<Arc<Topic>> {
        if let Some(cluster) = self.cluster.get() {
            let mut settings = self.get(name)?.settings();
            change(&mut settings);
            return self.update_in_cluster(cluster, name, settings).await;
        }
        let _guard = self.next_id.lock().await;
        let mut settings = self.get(name)?.settings();
        change(&mut settings);
        self.update_local(name, settings).await
    }

    /// Stores and applies new settings of a topic, under the admin lock.
    async fn update_local(&self, name: &str, settings: TopicConfig) -> Result<Arc<Topic>> {
        let topic = self.get(name)?;
        let mut meta = topic.meta();
        meta.settings = settings;
        self.ctx.writer.write(Store::update_topic(&meta)?).await?;
        *topic.settings.write().unwrap_or_else(|e| e.into_inner()) = meta.settings;
        self.changed.send_modify(|v| *v += 1);
        tracing::info!(topic = name, settings = ?meta.settings, "topic updated");
        Ok(topic)
    }

    /// Deletes a topic and all its data (in a cluster: on every broker,
    /// through the catalog).
    pub async fn delete(&self, name: &str) -> Result<()> {
        if let Some(cluster) = self.cluster.get() {
            return self.delete_in_cluster(cluster, name).await;
        }
        let _guard = self.next_id.lock().await;
        self.delete_local(name).await
    }

    /// Deletes a topic here, under the admin lock. Its actors stop first, so
    /// nothing they queued can land after the delete.
    async fn delete_local(&self, name: &str) -> Result<()> {
        let topic = self.get(name)?;
        self.write_map().remove(name);
        self.changed.send_modify(|v| *v += 1);
        for p in &topic.partitions {
            p.mark_deleted();
        }
        topic.stop.cancel();
        let actors = std::mem::take(&mut *topic.actors.lock().unwrap_or_else(|e| e.into_inner()));
        for a in actors {
            let _ = a.await;
        }
        let (write, reclaim) = Store::delete_topic(&topic.meta());
        self.ctx.writer.write(write).await?;
        let store = self.ctx.store.clone();
        self.ctx.tracker.spawn_blocking(move || {
            if let Err(e) = store.reclaim(&reclaim) {
                tracing::warn!(error = %e, "reclaiming a deleted topic's space failed; compaction will retry");
            }
        });
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }
}
