//! Which schedules exist and how far each has fired: on a single broker in
//! its own metadata (written through the writer), in a cluster in the
//! metadata catalog (proposed to the metadata group, read from this broker's
//! copy). The runner and the Admin API see one interface.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_replication::meta::{MetaCommand, MetaResponse};
use sluice_replication::MetaNode;
use sluice_storage::schedule::{delete_schedule, put_schedule, ScheduleProgress, StoredSchedule};
use sluice_storage::{now_ms, WriterHandle};
use tokio::sync::watch;

use super::config::ScheduleConfig;
use crate::error::{Error, Result};
use crate::topic::cluster::{await_change, unexpected};
use crate::topic::TopicRegistry;

/// A schedule and how far it has fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Its definition.
    pub config: ScheduleConfig,
    /// Its progress.
    pub progress: ScheduleProgress,
}

/// What recording a tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advanced {
    /// Recorded as proposed.
    Done,
    /// Another runner recorded this far or further first; this is the stored progress.
    Stale(ScheduleProgress),
    /// The schedule is gone (or was made again under its name).
    Gone,
}

enum Backend {
    Local { writer: WriterHandle, schedules: Mutex<BTreeMap<String, Schedule>>, changed: watch::Sender<u64> },
    Cluster(Arc<MetaNode>),
}

/// Every schedule of the broker or the cluster.
pub struct ScheduleRegistry {
    backend: Backend,
    topics: Arc<TopicRegistry>,
    /// Serializes admin changes on a single broker.
    admin: tokio::sync::Mutex<()>,
    /// Why the last attempt to fire each schedule failed, as the runner here saw it.
    failures: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for ScheduleRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleRegistry").field("cluster", &matches!(self.backend, Backend::Cluster(_))).finish()
    }
}

fn decode(name: &str, value: &serde_json::Value) -> Option<ScheduleConfig> {
    match serde_json::from_value::<ScheduleConfig>(value.clone()) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(schedule = name, error = %e, "unreadable schedule definition; skipped");
            None
        }
    }
}

fn encode(config: &ScheduleConfig) -> Result<serde_json::Value> {
    serde_json::to_value(config).map_err(|e| Error::invalid("schedule", format!("cannot encode it: {e}")))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is made whole; a panic elsewhere leaves them consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ScheduleRegistry {
    /// A single broker's schedules, as recovered from its metadata.
    pub fn local(recovered: Vec<(String, StoredSchedule)>, writer: WriterHandle, topics: Arc<TopicRegistry>) -> Self {
        let schedules = recovered
            .into_iter()
            .filter_map(|(name, stored)| {
                let mut config = decode(&name, &stored.definition)?;
                config.name = name.clone();
                Some((name, Schedule { config, progress: stored.progress }))
            })
            .collect();
        ScheduleRegistry {
            backend: Backend::Local { writer, schedules: Mutex::new(schedules), changed: watch::Sender::new(0) },
            topics,
            admin: tokio::sync::Mutex::new(()),
            failures: Mutex::default(),
        }
    }

    /// A cluster's schedules: those of the metadata catalog.
    pub fn cluster(node: Arc<MetaNode>, topics: Arc<TopicRegistry>) -> Self {
        ScheduleRegistry {
            backend: Backend::Cluster(node),
            topics,
            admin: tokio::sync::Mutex::new(()),
            failures: Mutex::default(),
        }
    }

    /// Every schedule, by name.
    pub fn list(&self) -> Vec<Schedule> {
        match &self.backend {
            Backend::Local { schedules, .. } => lock(schedules).values().cloned().collect(),
            Backend::Cluster(node) => node.with_catalog(|catalog| {
                catalog
                    .schedules
                    .iter()
                    .filter_map(|(name, entry)| {
                        let mut config = decode(name, &entry.settings)?;
                        config.name = name.clone();
                        config.id = entry.id;
                        config.created_ms = entry.created_ms;
                        Some(Schedule { config, progress: entry.progress })
                    })
                    .collect()
            }),
        }
    }

    /// The schedule named `name`.
    pub fn get(&self, name: &str) -> Result<Schedule> {
        self.list().into_iter().find(|s| s.config.name == name).ok_or_else(|| Error::ScheduleNotFound(name.into()))
    }

    /// Changes whenever a schedule appears, goes or fires (in a cluster:
    /// whenever the catalog changes).
    pub fn watch(&self) -> watch::Receiver<u64> {
        match &self.backend {
            Backend::Local { changed, .. } => changed.subscribe(),
            Backend::Cluster(node) => node.subscribe(),
        }
    }

    /// Whether the schedules run here: always on a single broker; in a
    /// cluster, where the metadata group is led.
    pub fn runs_here(&self) -> bool {
        match &self.backend {
            Backend::Local { .. } => true,
            Backend::Cluster(node) => node.leader() == Some(node.id()),
        }
    }

    /// Creates a schedule from a named definition (its topic must exist).
    pub async fn create(&self, mut config: ScheduleConfig) -> Result<Schedule> {
        crate::name::check("name", &config.name)?;
        crate::name::check("topic", &config.topic)?;
        self.topics.get_or_await(&config.topic).await?;
        config.created_ms = now_ms();
        config.check()?;
        let name = config.name.clone();
        match &self.backend {
            Backend::Local { writer, schedules, changed } => {
                let _guard = self.admin.lock().await;
                if lock(schedules).contains_key(&name) {
                    return Err(Error::ScheduleExists(name));
                }
                config.id = self.topics.allocate_id().await?;
                let schedule = Schedule { config, progress: ScheduleProgress::default() };
                let stored = StoredSchedule { definition: encode(&schedule.config)?, progress: schedule.progress };
                writer.write(put_schedule(&name, &stored)?).await?;
                lock(schedules).insert(name, schedule.clone());
                changed.send_modify(|n| *n += 1);
                Ok(schedule)
            }
            Backend::Cluster(node) => {
                let command = MetaCommand::CreateSchedule {
                    name: name.clone(),
                    settings: encode(&config)?,
                    created_ms: config.created_ms,
                };
                match node.propose(command).await? {
                    MetaResponse::ScheduleCreated { id } => {
                        await_change(node.subscribe(), &format!("schedule `{name}`"), || {
                            self.get(&name).ok().filter(|s| s.config.id == id)
                        })
                        .await
                    }
                    MetaResponse::ScheduleExists => Err(Error::ScheduleExists(name)),
                    other => Err(unexpected("create schedule", &other)),
                }
            }
        }
    }

    /// Deletes schedule `name`: it fires no more.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match &self.backend {
            Backend::Local { writer, schedules, changed } => {
                let _guard = self.admin.lock().await;
                if !lock(schedules).contains_key(name) {
                    return Err(Error::ScheduleNotFound(name.into()));
                }
                writer.write(delete_schedule(name)).await?;
                lock(schedules).remove(name);
                changed.send_modify(|n| *n += 1);
            }
            Backend::Cluster(node) => {
                match node.propose(MetaCommand::DeleteSchedule { name: name.to_owned() }).await? {
                    MetaResponse::ScheduleDeleted => {
                        await_change(node.subscribe(), &format!("schedule `{name}`"), || {
                            self.get(name).is_err().then_some(())
                        })
                        .await?;
                    }
                    MetaResponse::ScheduleNotFound => return Err(Error::ScheduleNotFound(name.into())),
                    other => return Err(unexpected("delete schedule", &other)),
                }
            }
        }
        lock(&self.failures).remove(name);
        Ok(())
    }

    /// Records durably that schedule `name` (id `id`) fires the tick `progress` names.
    pub async fn advance(&self, name: &str, id: u64, progress: ScheduleProgress) -> Result<Advanced> {
        match &self.backend {
            Backend::Local { writer, schedules, changed } => {
                let _guard = self.admin.lock().await;
                let Some(mut schedule) = lock(schedules).get(name).filter(|s| s.config.id == id).cloned() else {
                    return Ok(Advanced::Gone);
                };
                if progress.fired <= schedule.progress.fired {
                    return Ok(Advanced::Stale(schedule.progress));
                }
                schedule.progress = progress;
                let stored = StoredSchedule { definition: encode(&schedule.config)?, progress };
                writer.write(put_schedule(name, &stored)?).await?;
                lock(schedules).insert(name.to_owned(), schedule);
                changed.send_modify(|n| *n += 1);
                Ok(Advanced::Done)
            }
            Backend::Cluster(node) => {
                // Here only: a broker that lost the leadership must not fire through the new leader.
                let command = MetaCommand::AdvanceSchedule { name: name.to_owned(), id, progress };
                match node.propose_local(command).await? {
                    MetaResponse::ScheduleAdvanced => Ok(Advanced::Done),
                    MetaResponse::ScheduleStale { progress } => Ok(Advanced::Stale(progress)),
                    MetaResponse::ScheduleNotFound => Ok(Advanced::Gone),
                    other => Err(unexpected("advance schedule", &other)),
                }
            }
        }
    }

    /// Notes why firing schedule `name` failed (`None`: it fired).
    pub fn set_failure(&self, name: &str, why: Option<String>) {
        let mut failures = lock(&self.failures);
        match why {
            Some(why) => failures.insert(name.to_owned(), why),
            None => failures.remove(name),
        };
    }

    /// Why firing schedule `name` last failed here, if it did.
    pub fn failure(&self, name: &str) -> Option<String> {
        lock(&self.failures).get(name).cloned()
    }
}
