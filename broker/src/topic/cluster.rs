//! The topic registry in a cluster: admin changes are proposed to the
//! metadata group (which allocates ids and orders changes), and every broker's
//! registry follows the committed catalog. A proposer answers once its own
//! registry shows the change, so a client can use the topic on the broker it
//! created it on at once.

use std::sync::Arc;
use std::time::Duration;

use sluice_replication::meta::{Catalog, MetaCommand, MetaResponse};
use sluice_replication::{MetaNode, ProposeError};
use sluice_storage::{now_ms, TopicConfig, TopicMeta};

use super::{Replicas, Topic, TopicRegistry};
use crate::error::{Error, Result};
use crate::name::TopicName;

/// How long a proposer waits for its own broker to apply a committed change
/// (normally one heartbeat, 100 ms).
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// What the registry needs of the cluster.
pub(super) struct Attached {
    node: Arc<MetaNode>,
    /// Replicas per partition of a new topic by default: min(3, brokers).
    replication_factor: u32,
    /// The brokers of the cluster (the most replicas a topic can have).
    brokers: u32,
}

impl From<ProposeError> for Error {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::Unsupported(why) => Error::FailedPrecondition(why),
            e => Error::ClusterUnavailable(e.to_string()),
        }
    }
}

/// A metadata answer that does not fit the command (a bug, or brokers of different versions).
pub(crate) fn unexpected(command: &str, answer: &MetaResponse) -> Error {
    Error::ClusterUnavailable(format!("the metadata group answered {command} with {answer:?}"))
}

impl TopicRegistry {
    /// Hands admin changes to the metadata group from now on. Called once, at
    /// start, before clients are served.
    pub fn attach_cluster(&self, node: Arc<MetaNode>, brokers: usize) {
        let replication_factor = brokers.clamp(1, 3) as u32;
        let brokers = brokers.max(1) as u32;
        if self.cluster.set(Attached { node, replication_factor, brokers }).is_err() {
            tracing::warn!("the topic registry was attached to a cluster twice; keeping the first");
        }
    }

    /// How many brokers hold topic `name`'s partitions: 1 on a single broker.
    pub fn replication_factor(&self, name: &str) -> u32 {
        self.cluster.get().and_then(|c| c.node.replication_factor(name)).unwrap_or(1)
    }

    /// Makes this broker's topics what `catalog` says: topics it no longer
    /// has (or has under another id: deleted and created again) are deleted
    /// here, missing ones created with the catalog's id, and settings applied.
    /// The caller has removed the groups the catalog no longer holds, so no
    /// group here reads a topic about to go.
    pub async fn follow(&self, catalog: &Catalog) -> Result<()> {
        let mut next_id = self.next_id.lock().await;
        for name in self.stale(catalog) {
            self.delete_local(&name).await?;
        }
        for (name, entry) in &catalog.topics {
            let local = self.read_map().get(name).cloned();
            match local {
                None => {
                    let meta = TopicMeta {
                        id: entry.id,
                        name: name.clone(),
                        partitions: entry.partitions,
                        settings: entry.config,
                        created_ms: entry.created_ms,
                    };
                    self.create_local(&mut next_id, meta).await?;
                }
                Some(topic) if topic.settings() != entry.config => {
                    self.update_local(name, entry.config).await?;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Topics here that `catalog` does not hold under the same id.
    pub fn stale(&self, catalog: &Catalog) -> Vec<String> {
        self.read_map()
            .values()
            .filter(|t| catalog.topics.get(&t.name).map(|c| c.id) != Some(t.id))
            .map(|t| t.name.clone())
            .collect()
    }

    pub(super) async fn create_in_cluster(
        &self,
        cluster: &Attached,
        name: &TopicName,
        partitions: u32,
        replicas: Replicas,
        settings: TopicConfig,
    ) -> Result<Arc<Topic>> {
        let (replication_factor, beside) = match replicas {
            Replicas::Default | Replicas::Factor(0) => (cluster.replication_factor, None),
            Replicas::Factor(n) if n <= cluster.brokers => (n, None),
            Replicas::Factor(n) => {
                return Err(Error::invalid(
                    "replication_factor",
                    format!(
                        "must be 1..={} (the brokers of this cluster) or 0 for the default, got {n}",
                        cluster.brokers
                    ),
                ))
            }
            Replicas::Beside(topic) => (cluster.replication_factor, Some(topic)),
        };
        let command = MetaCommand::CreateTopic {
            name: name.as_str().to_owned(),
            partitions,
            replication_factor,
            config: settings,
            created_ms: now_ms(),
            beside,
            brokers: cluster.node.addresses().into_keys().collect(),
        };
        match cluster.node.propose(command).await? {
            MetaResponse::TopicCreated { id } => {
                self.await_local(name.as_str(), |r| r.get(name.as_str()).ok().filter(|t| t.id == id)).await
            }
            MetaResponse::TopicExists { .. } => Err(Error::TopicExists(name.as_str().to_owned())),
            other => Err(unexpected("create topic", &other)),
        }
    }

    pub(super) async fn update_in_cluster(
        &self,
        cluster: &Attached,
        name: &str,
        settings: TopicConfig,
    ) -> Result<Arc<Topic>> {
        let command = MetaCommand::UpdateTopic { name: name.to_owned(), config: settings };
        match cluster.node.propose(command).await? {
            MetaResponse::TopicUpdated => {
                self.await_local(name, |r| r.get(name).ok().filter(|t| t.settings() == settings)).await
            }
            MetaResponse::TopicNotFound => Err(Error::TopicNotFound(name.to_owned())),
            other => Err(unexpected("update topic", &other)),
        }
    }

    pub(super) async fn delete_in_cluster(&self, cluster: &Attached, name: &str) -> Result<()> {
        let before = self.get(name).ok().map(|t| t.id);
        match cluster.node.propose(MetaCommand::DeleteTopic { name: name.to_owned() }).await? {
            MetaResponse::TopicDeleted => {
                self.await_local(name, |r| (r.get(name).ok().map(|t| t.id) != before || before.is_none()).then_some(()))
                    .await
            }
            MetaResponse::TopicNotFound => Err(Error::TopicNotFound(name.to_owned())),
            MetaResponse::TopicInUse { groups } => Err(Error::FailedPrecondition(format!(
                "topic `{name}` is used by groups {groups:?}; delete them first"
            ))),
            other => Err(unexpected("delete topic", &other)),
        }
    }
    /// Waits until `check` finds what a committed change made of this
    /// broker's registry (the catalog follower applies it).
    async fn await_local<T>(&self, topic: &str, mut check: impl FnMut(&Self) -> Option<T>) -> Result<T> {
        await_applied(&self.changed, &format!("topic `{topic}`"), || check(self)).await
    }
}

/// How long a call for a topic or group this broker does not know waits for
/// the catalog when the metadata leader cannot be asked (no quorum, or a
/// leader of an older build) before `NOT_FOUND`.
pub const CATALOG_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// The longest a lookup of an unknown name waits for the read barrier (a
/// broker cut off from the metadata leader answers from its own catalog).
const READ_BARRIER_WAIT: Duration = Duration::from_secs(5);

/// `lookup`, or, when it finds nothing (`missing`), the answer once this
/// broker has caught up with the metadata leader: the catalog reaches a
/// broker a commit round after the broker that made a change answered, and a
/// client may be redirected here (to a partition's or group's leader) in
/// between. After the read barrier ([`MetaNode::read_barrier`], then [`MetaNode::applied_through`]) the catalog is
/// authoritative: a name it lacks is `NOT_FOUND`; one it holds is waited for
/// until the registry follows (`changed`), or `UNAVAILABLE` ("retry") after
/// [`APPLY_WAIT`]. A broker that learns the leader's read index but does not
/// apply up to it in time answers `UNAVAILABLE` too: the name may exist.
/// Without a leader to ask, it waits up to [`CATALOG_GRACE`].
pub(crate) async fn await_known<T>(
    node: &MetaNode,
    changed: &tokio::sync::watch::Sender<u64>,
    in_catalog: impl Fn(&MetaNode) -> bool,
    missing: impl Fn(&Error) -> bool,
    lookup: impl Fn() -> Result<T>,
) -> Result<T> {
    // Subscribed before the first lookup, so no change between the two is missed.
    let mut changes = changed.subscribe();
    let found = lookup();
    if !matches!(&found, Err(e) if missing(e)) {
        return found;
    }
    let barrier = match tokio::time::timeout(READ_BARRIER_WAIT, node.read_barrier()).await {
        Ok(index) => index.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", READ_BARRIER_WAIT.as_millis())),
    };
    if let Ok(index) = barrier {
        node.applied_through(index).await.map_err(|e| Error::ClusterUnavailable(format!("{e}; retry")))?;
    }
    match barrier {
        Ok(_) if !in_catalog(node) => lookup(),
        Ok(_) => await_change(changes, "the catalog", || lookup().ok()).await,
        Err(e) => {
            tracing::debug!(error = %e, "no read barrier; waiting for the catalog instead");
            let deadline = tokio::time::Instant::now() + CATALOG_GRACE;
            loop {
                let found = lookup();
                match &found {
                    Err(e) if missing(e) => {
                        if !matches!(tokio::time::timeout_at(deadline, changes.changed()).await, Ok(Ok(()))) {
                            return lookup();
                        }
                    }
                    _ => return found,
                }
            }
        }
    }
}

impl TopicRegistry {
    /// The topic named `name`; in a cluster, one this broker has not applied
    /// yet is waited for (see [`await_known`]).
    pub async fn get_or_await(&self, name: &str) -> Result<Arc<Topic>> {
        let Some(cluster) = self.cluster.get() else {
            return self.get(name);
        };
        await_known(
            &cluster.node,
            &self.changed,
            |node| node.holds_topic(name),
            |e| matches!(e, Error::TopicNotFound(_)),
            || self.get(name),
        )
        .await
    }
}

/// Waits until `check` finds a committed change applied on this broker: it
/// is checked now and after every change `changed` announces, for at most
/// [`APPLY_WAIT`]. `what` names the changed thing in the error.
pub(crate) async fn await_applied<T>(
    changed: &tokio::sync::watch::Sender<u64>,
    what: &str,
    check: impl FnMut() -> Option<T>,
) -> Result<T> {
    // Subscribed before the first check, so no change between the two is missed.
    await_change(changed.subscribe(), what, check).await
}

/// [`await_applied`] over a subscription taken before the change was
/// proposed (a metadata node's catalog changes).
pub(crate) async fn await_change<T>(
    mut changes: tokio::sync::watch::Receiver<u64>,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + APPLY_WAIT;
    loop {
        if let Some(found) = check() {
            return Ok(found);
        }
        if !matches!(tokio::time::timeout_at(deadline, changes.changed()).await, Ok(Ok(()))) {
            return Err(Error::ClusterUnavailable(format!(
                "the change to {what} is committed, but this broker has not applied it within {} s; it will: \
                 retry the read",
                APPLY_WAIT.as_secs()
            )));
        }
    }
}
