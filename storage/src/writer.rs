//! The writer: one thread per RocksDB instance that folds everything waiting —
//! across producers, partitions and topics — into one atomic write, fsyncs it
//! once, then completes every request in the order received (group commit).
//!
//! # Correctness
//! A request's `on_commit` runs only after its mutations are durable under its
//! `sync` flag; requests commit in submission order, so per-partition commit
//! points only move forward. After a failed write every request fails.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::engine::AtomicWrite;
use crate::store::Store;
use crate::{Error, Result};

/// Called once the request's write is durable (or has failed).
pub type OnCommit = Box<dyn FnOnce(Result<()>) + Send>;

/// A unit of atomic work for the writer.
pub struct WriteRequest {
    /// Applied together with everything else in the same group.
    pub write: AtomicWrite,
    /// Whether the WAL must be fsynced before `on_commit` runs.
    pub sync: bool,
    /// Completion.
    pub on_commit: OnCommit,
}

/// Limits of one group commit.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Requests queued before submitters wait (back-pressure).
    pub queue_depth: usize,
    /// Stop gathering a group past this many bytes.
    pub max_group_bytes: usize,
    /// Stop gathering a group past this many requests.
    pub max_group_requests: usize,
    /// Warn when a synced write takes longer than this.
    pub slow_sync_warn: std::time::Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue_depth: 4096,
            max_group_bytes: 32 << 20,
            max_group_requests: 4096,
            slow_sync_warn: std::time::Duration::from_millis(500),
        }
    }
}

/// Cloneable way to submit writes.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    tx: mpsc::Sender<WriteRequest>,
}

impl WriterHandle {
    /// Queues `request`, waiting while the queue is full (back-pressure).
    pub async fn submit(&self, request: WriteRequest) -> Result<()> {
        self.tx.send(request).await.map_err(|_| Error::WriterStopped)
    }

    /// Commits `write` durably and waits for the commit.
    pub async fn write(&self, write: AtomicWrite) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(WriteRequest {
            write,
            sync: true,
            on_commit: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })
        .await?;
        rx.await.map_err(|_| Error::WriterStopped)?
    }
}

/// Starts the writer thread. It ends when every handle is dropped, after
/// committing what was queued.
pub fn spawn_writer(
    store: Arc<Store>,
    config: WriterConfig,
) -> std::io::Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
    let join = std::thread::Builder::new().name("sluice-writer".into()).spawn(move || run(store, config, rx))?;
    Ok((WriterHandle { tx }, join))
}

fn run(store: Arc<Store>, config: WriterConfig, mut rx: mpsc::Receiver<WriteRequest>) {
    let mut group: Vec<WriteRequest> = Vec::with_capacity(config.max_group_requests);
    while let Some(first) = rx.blocking_recv() {
        let mut bytes = first.write.size();
        group.push(first);
        while bytes < config.max_group_bytes && group.len() < config.max_group_requests {
            match rx.try_recv() {
                Ok(req) => {
                    bytes += req.write.size();
                    group.push(req);
                }
                Err(_) => break,
            }
        }
        let sync = group.iter().any(|r| r.sync);
        let started = Instant::now();
        let result = store.apply(group.iter().map(|r| &r.write), sync);
        let elapsed = started.elapsed();
        metrics::histogram!(crate::metric_names::WRITE_SECONDS, "sync" => if sync { "true" } else { "false" })
            .record(elapsed.as_secs_f64());
        metrics::histogram!(crate::metric_names::GROUP_COMMIT_REQUESTS).record(group.len() as f64);
        metrics::counter!(crate::metric_names::WRITTEN_BYTES).increment(bytes as u64);
        if sync && elapsed > config.slow_sync_warn {
            tracing::warn!(elapsed_ms = elapsed.as_millis() as u64, requests = group.len(), bytes, "slow fsync");
        }
        for req in group.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(Error::NoSpace) => Err(Error::NoSpace),
                Err(_) => Err(Error::Poisoned),
            };
            (req.on_commit)(r);
        }
    }
    // A failure poisons the store (and says so); the shutdown reports it.
    if let Err(e) = store.sync_wal() {
        tracing::error!(error = %e, "final WAL sync failed: writes acknowledged under `interval` durability since the last sync may be lost on a machine crash");
    }
}
