//! Where the permission rules live: on a single broker in its own metadata
//! (written through the writer), in a cluster in the metadata catalog
//! (proposed to the metadata group, read from this broker's copy, so a rule
//! added at any broker holds at every broker once applied there). Checks
//! read a decoded set that is rebuilt only when the rules change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use sluice_replication::meta::{MetaCommand, MetaResponse};
use sluice_replication::MetaNode;
use sluice_storage::acl::{delete_acl, put_acl};
use sluice_storage::{now_ms, WriterHandle};
use tokio::sync::watch;

use super::acl::{Rule, Rules};
use crate::error::{Error, Result};
use crate::topic::cluster::{await_change, unexpected};
use crate::topic::TopicRegistry;

/// A stored rule: its id, the rule, and when it was added.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AclEntry {
    /// Its id (from the id counter topics and groups draw from).
    #[serde(skip)]
    pub id: u64,
    /// The rule.
    pub rule: Rule,
    /// When it was added, ms since the epoch.
    pub created_ms: i64,
}

enum Backend {
    Local { writer: WriterHandle, topics: Arc<TopicRegistry>, entries: tokio::sync::Mutex<BTreeMap<u64, AclEntry>> },
    Cluster { node: Arc<MetaNode>, changes: watch::Receiver<u64> },
}

/// Every permission rule of the broker or the cluster.
pub struct AclRegistry {
    backend: Backend,
    /// The decoded rules, and the catalog version they were read at (cluster).
    current: RwLock<(u64, Arc<Rules>)>,
    /// Serializes rebuilds in a cluster.
    rebuild: Mutex<()>,
}

fn decode(id: u64, value: &serde_json::Value, created_ms: i64) -> Option<AclEntry> {
    match serde_json::from_value::<Rule>(value.clone()) {
        Ok(rule) => Some(AclEntry { id, rule, created_ms }),
        Err(e) => {
            // A rule this build cannot read grants nothing; a deny it cannot read is logged loudly.
            tracing::error!(rule = id, error = %e, "unreadable permission rule; ignored");
            None
        }
    }
}

fn encode(entry: &AclEntry) -> Result<serde_json::Value> {
    serde_json::to_value(entry).map_err(|e| Error::invalid("rule", format!("cannot encode it: {e}")))
}

fn rules_of<'a>(entries: impl Iterator<Item = &'a AclEntry>) -> Arc<Rules> {
    Arc::new(Rules::new(entries.map(|e| (e.id, e.rule.clone())).collect()))
}

impl AclRegistry {
    /// A single broker's rules, as recovered from its metadata.
    pub fn local(recovered: Vec<(u64, serde_json::Value)>, writer: WriterHandle, topics: Arc<TopicRegistry>) -> Self {
        let entries: BTreeMap<u64, AclEntry> = recovered
            .into_iter()
            .filter_map(|(id, value)| match serde_json::from_value::<AclEntry>(value) {
                Ok(entry) => Some((id, AclEntry { id, ..entry })),
                Err(e) => {
                    tracing::error!(rule = id, error = %e, "unreadable permission rule; ignored");
                    None
                }
            })
            .collect();
        let current = RwLock::new((0, rules_of(entries.values())));
        AclRegistry {
            backend: Backend::Local { writer, topics, entries: tokio::sync::Mutex::new(entries) },
            current,
            rebuild: Mutex::new(()),
        }
    }

    /// A cluster's rules: those of the metadata catalog.
    pub fn cluster(node: Arc<MetaNode>) -> Self {
        let changes = node.subscribe();
        let registry = AclRegistry {
            backend: Backend::Cluster { node, changes },
            current: RwLock::new((u64::MAX, Arc::new(Rules::default()))),
            rebuild: Mutex::new(()),
        };
        registry.rules();
        registry
    }

    /// The rules as they are now.
    pub fn rules(&self) -> Arc<Rules> {
        let Backend::Cluster { node, changes } = &self.backend else {
            return self.current.read().unwrap_or_else(|e| e.into_inner()).1.clone();
        };
        let version = *changes.borrow();
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == version {
                return current.1.clone();
            }
        }
        let _one = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let entries = cluster_entries(node);
        let rules = rules_of(entries.iter());
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (version, rules.clone());
        rules
    }

    /// Every rule, by id.
    pub async fn list(&self) -> Vec<AclEntry> {
        match &self.backend {
            Backend::Local { entries, .. } => entries.lock().await.values().cloned().collect(),
            Backend::Cluster { node, .. } => cluster_entries(node),
        }
    }

    /// Adds `rule` unless an equal one exists; the entry, and whether it is new.
    pub async fn add(&self, rule: Rule) -> Result<(AclEntry, bool)> {
        rule.check()?;
        match &self.backend {
            Backend::Local { writer, topics, entries } => {
                let mut entries = entries.lock().await;
                if let Some(existing) = entries.values().find(|e| e.rule == rule) {
                    return Ok((existing.clone(), false));
                }
                let entry = AclEntry { id: topics.allocate_id().await?, rule, created_ms: now_ms() };
                writer.write(put_acl(entry.id, &encode(&entry)?)).await?;
                entries.insert(entry.id, entry.clone());
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (0, rules_of(entries.values()));
                Ok((entry, true))
            }
            Backend::Cluster { node, .. } => {
                let value = serde_json::to_value(&rule).map_err(|e| Error::invalid("rule", e.to_string()))?;
                let changes = node.subscribe();
                let (id, created) =
                    match node.propose(MetaCommand::AddAcl { rule: value, created_ms: now_ms() }).await? {
                        MetaResponse::AclAdded { id } => (id, true),
                        MetaResponse::AclExists { id } => (id, false),
                        other => return Err(unexpected("add permission rule", &other)),
                    };
                let what = format!("permission rule {id}");
                let entry =
                    await_change(changes, &what, || cluster_entries(node).into_iter().find(|e| e.id == id)).await?;
                Ok((entry, created))
            }
        }
    }

    /// Removes rule `id`.
    pub async fn remove(&self, id: u64) -> Result<()> {
        match &self.backend {
            Backend::Local { writer, entries, .. } => {
                let mut entries = entries.lock().await;
                if !entries.contains_key(&id) {
                    return Err(Error::AclNotFound(id));
                }
                writer.write(delete_acl(id)).await?;
                entries.remove(&id);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (0, rules_of(entries.values()));
                Ok(())
            }
            Backend::Cluster { node, .. } => match node.propose(MetaCommand::RemoveAcl { id }).await? {
                MetaResponse::AclRemoved => {
                    let what = format!("permission rule {id}");
                    await_change(node.subscribe(), &what, || (!node.catalog().acls.contains_key(&id)).then_some(()))
                        .await
                }
                MetaResponse::AclNotFound => Err(Error::AclNotFound(id)),
                other => Err(unexpected("remove permission rule", &other)),
            },
        }
    }
}

fn cluster_entries(node: &MetaNode) -> Vec<AclEntry> {
    node.catalog().acls.iter().filter_map(|(id, acl)| decode(*id, &acl.rule, acl.created_ms)).collect()
}
