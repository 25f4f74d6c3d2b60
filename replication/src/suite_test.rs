//! openraft's own storage test suite (`openraft::testing::log::Suite`: about
//! fifty checks of log reads, appends, truncation, purging, vote, applied
//! state, membership and snapshots) over the metadata group's log store and
//! state machine, on RocksDB and on the in-memory engine.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use sluice_storage::{spawn_writer, MemoryDisk, Store, StoreConfig, WriterConfig, WriterHandle};

use crate::log_store::LogStore;
use crate::meta::{MetaStateMachine, MetaTypes, META_GROUP};

/// Keeps a store's writer alive for one suite case.
struct Guard {
    _writer: WriterHandle,
}

/// What every case leaves behind: its writer thread (which owns the store
/// until the case's handles are dropped) and its temp dir, kept until the
/// writer has closed the store, so RocksDB is never closing while its files
/// are deleted or while the process exits.
#[derive(Default, Clone)]
struct Leftovers(Arc<Mutex<Vec<Leftover>>>);

/// A writer thread and the temp dir of its store.
type Leftover = (std::thread::JoinHandle<()>, Option<tempfile::TempDir>);

impl Leftovers {
    fn keep(&self, join: std::thread::JoinHandle<()>, dir: Option<tempfile::TempDir>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push((join, dir));
    }

    /// Waits (bounded) for every writer to finish, then deletes the dirs.
    fn close(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let all = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for (join, dir) in all {
            while !join.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "a store's writer thread did not stop: a log store or state machine outlived its case"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            join.join().expect("writer thread");
            drop(dir);
        }
    }
}

enum Engine {
    Rocks,
    Memory,
}

struct Builder(Engine, Leftovers);

impl StoreBuilder<MetaTypes, LogStore<MetaTypes>, MetaStateMachine, Guard> for Builder {
    async fn build(&self) -> Result<(Guard, LogStore<MetaTypes>, MetaStateMachine), StorageError<MetaTypes>> {
        let io = |e: std::io::Error| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e);
        let storage = |e: sluice_storage::Error| io(std::io::Error::other(e));
        let (store, dir): (Arc<Store>, _) = match self.0 {
            Engine::Rocks => {
                let dir = tempfile::tempdir().map_err(io)?;
                let (store, _) = Store::open(dir.path(), &StoreConfig::default()).map_err(storage)?;
                (store, Some(dir))
            }
            Engine::Memory => (Store::open_in_memory(&MemoryDisk::new()).map_err(storage)?.0, None),
        };
        let (writer, join) = spawn_writer(store.clone(), WriterConfig::default()).map_err(io)?;
        self.1.keep(join, dir);
        let log = LogStore::open(store.clone(), writer.clone(), META_GROUP).map_err(io)?;
        let machine = MetaStateMachine::open(store, writer.clone()).map_err(io)?;
        Ok((Guard { _writer: writer }, log, machine))
    }
}

fn run(engine: Engine) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let leftovers = Leftovers::default();
    rt.block_on(async { Suite::test_all(Builder(engine, leftovers.clone())).await }).expect("openraft storage suite");
    drop(rt);
    leftovers.close();
}

#[test]
fn openraft_storage_suite_over_rocksdb() {
    run(Engine::Rocks);
}

#[test]
fn openraft_storage_suite_in_memory() {
    run(Engine::Memory);
}
