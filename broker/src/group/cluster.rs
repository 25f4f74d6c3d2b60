//! The group registry in a cluster: group configurations live in the
//! metadata catalog (ids allocated there; a topic a group uses cannot be
//! deleted anywhere), and every broker's registry follows it. A group's
//! state (cursors, attempts, schedules) goes through its shard's log
//! (`replicated.rs`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_replication::meta::{Catalog, CatalogGroup, MetaCommand, MetaResponse};
use sluice_replication::MetaNode;
use sluice_storage::now_ms;

use super::actor::GroupHandle;
use super::config::GroupConfig;
use super::registry::{GroupRegistry, StartAt};
use crate::error::{Error, Result};
use crate::topic::cluster::{await_applied, await_known, unexpected};

/// What the catalog holds of a group: the broker's settings and where it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct CatalogSettings {
    settings: GroupConfig,
    start: StartAt,
}

fn encode(settings: &GroupConfig, start: StartAt) -> Result<serde_json::Value> {
    serde_json::to_value(CatalogSettings { settings: settings.clone(), start })
        .map_err(|e| Error::ClusterUnavailable(format!("encoding group settings: {e}")))
}

/// The settings a catalog entry gives the group `name` here.
fn decode(name: &str, entry: &CatalogGroup) -> Option<(GroupConfig, StartAt)> {
    match serde_json::from_value::<CatalogSettings>(entry.settings.clone()) {
        Ok(mut c) => {
            c.settings.id = entry.id;
            c.settings.name = name.to_owned();
            c.settings.created_ms = entry.created_ms;
            Some((c.settings, c.start))
        }
        Err(e) => {
            tracing::error!(group = name, error = %e, "unreadable group settings in the cluster catalog; skipped");
            None
        }
    }
}

/// Where the catalog says group `name` starts reading.
pub(super) fn catalog_start(node: &MetaNode, name: &str) -> Option<StartAt> {
    node.catalog().groups.get(name).and_then(|entry| decode(name, entry)).map(|(_, start)| start)
}

impl GroupRegistry {
    /// Hands admin changes to the metadata group from now on. Called once, at
    /// start, before clients are served.
    pub fn attach_cluster(&self, node: Arc<MetaNode>) {
        if self.cluster.set(node).is_err() {
            tracing::warn!("the group registry was attached to a cluster twice; keeping the first");
        }
    }

    /// Deletes the groups here that `catalog` no longer holds (or holds under
    /// another id). Runs before the topic registry follows, so no group
    /// outlives its topic.
    pub async fn follow_removals(&self, catalog: &Catalog) -> Result<()> {
        let _guard = self.admin.lock().await;
        let stale: Vec<String> = self
            .read_map()
            .values()
            .filter(|g| catalog.groups.get(&g.name).map(|c| c.id) != Some(g.settings().id))
            .map(|g| g.name.clone())
            .collect();
        for name in stale {
            self.delete_local(&name).await?;
        }
        Ok(())
    }

    /// Creates the groups of `catalog` missing here and applies changed
    /// settings. Runs after the topic registry follows, so their topics exist.
    pub async fn follow_additions(&self, catalog: &Catalog) -> Result<()> {
        let _guard = self.admin.lock().await;
        for (name, entry) in &catalog.groups {
            let Some((settings, start)) = decode(name, entry) else { continue };
            let local = self.read_map().get(name).cloned();
            match local {
                None => {
                    let topic = self.ctx.topics.get(&settings.topic)?;
                    self.create_local(settings, start, topic).await?;
                }
                Some(group) if group.settings() != settings => self.update_local(&group, settings).await?,
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Proposes a checked, named group (its dead-letter topic made) and
    /// returns once this broker serves it.
    pub(super) async fn create_in_cluster(&self, settings: GroupConfig, start: StartAt) -> Result<Arc<GroupHandle>> {
        let node = self.node()?;
        let name = settings.name.as_str();
        let command = MetaCommand::CreateGroup {
            name: name.to_owned(),
            topic: settings.topic.clone(),
            dead_letter_topic: settings.dead_letter_topic.clone(),
            settings: encode(&settings, start)?,
            created_ms: now_ms(),
        };
        match node.propose(command).await? {
            MetaResponse::GroupCreated { id } => {
                self.await_local(name, |r| r.get(name).ok().filter(|g| g.settings().id == id)).await
            }
            MetaResponse::GroupExists => Err(Error::GroupExists(name.to_owned())),
            MetaResponse::GroupTopicNotFound { topic } => Err(Error::TopicNotFound(topic)),
            MetaResponse::GroupDeadLettersApart { topic, dead_letter_topic } => {
                Err(dead_letters_apart(&topic, &dead_letter_topic))
            }
            other => Err(unexpected("create group", &other)),
        }
    }

    pub(super) async fn update_in_cluster(&self, name: &str, settings: GroupConfig) -> Result<Arc<GroupHandle>> {
        let node = self.node()?;
        // Where it starts matters only at creation; the catalog keeps what it was.
        let start = node
            .catalog()
            .groups
            .get(name)
            .and_then(|entry| decode(name, entry))
            .map_or(StartAt::Earliest, |(_, start)| start);
        let command = MetaCommand::UpdateGroup {
            name: name.to_owned(),
            dead_letter_topic: settings.dead_letter_topic.clone(),
            settings: encode(&settings, start)?,
        };
        match node.propose(command).await? {
            MetaResponse::GroupUpdated => {
                self.await_local(name, |r| r.get(name).ok().filter(|g| g.settings() == settings)).await
            }
            MetaResponse::GroupNotFound => Err(Error::GroupNotFound(name.to_owned())),
            MetaResponse::GroupTopicNotFound { topic } => Err(Error::TopicNotFound(topic)),
            MetaResponse::GroupDeadLettersApart { topic, dead_letter_topic } => {
                Err(dead_letters_apart(&topic, &dead_letter_topic))
            }
            other => Err(unexpected("update group", &other)),
        }
    }

    pub(super) async fn delete_in_cluster(&self, name: &str) -> Result<()> {
        let node = self.node()?;
        let before = self.get(name).ok().map(|g| g.settings().id);
        match node.propose(MetaCommand::DeleteGroup { name: name.to_owned() }).await? {
            MetaResponse::GroupDeleted => {
                self.await_local(name, |r| {
                    (before.is_none() || r.get(name).ok().map(|g| g.settings().id) != before).then_some(())
                })
                .await
            }
            MetaResponse::GroupNotFound => Err(Error::GroupNotFound(name.to_owned())),
            other => Err(unexpected("delete group", &other)),
        }
    }

    /// The group named `name`; in a cluster, one this broker has not
    /// applied yet is waited for (`topic::cluster::await_known`: the catalog
    /// reaches a follower a commit round after the broker that made it
    /// answered). Unknown once this broker caught up: `NOT_FOUND`.
    pub async fn get_or_await(&self, name: &str) -> Result<Arc<GroupHandle>> {
        let Some(node) = self.cluster.get() else {
            return self.get(name);
        };
        await_known(
            node,
            &self.changed,
            |node| node.holds_group(name),
            |e| matches!(e, Error::GroupNotFound(_)),
            || self.get(name),
        )
        .await
    }

    fn node(&self) -> Result<Arc<MetaNode>> {
        self.cluster.get().cloned().ok_or_else(|| Error::ClusterUnavailable("this broker is not in a cluster".into()))
    }

    /// Waits until `check` finds what a committed change made of this
    /// broker's registry (the catalog follower applies it).
    async fn await_local<T>(&self, group: &str, mut check: impl FnMut(&Self) -> Option<T>) -> Result<T> {
        await_applied(&self.changed, &format!("group `{group}`"), || check(self)).await
    }
}

/// The refusal of a dead-letter topic placed on other brokers than the group's topic.
fn dead_letters_apart(topic: &str, dead_letter_topic: &str) -> Error {
    Error::invalid(
        "dead_letter_topic",
        format!(
            "`{dead_letter_topic}` is held by other brokers than `{topic}` (their replication factors are below the \
             cluster's and they were placed apart); use a dead-letter topic of the cluster's replication factor, or \
             let the group create one beside `{topic}` (name a topic that does not exist yet)"
        ),
    )
}
