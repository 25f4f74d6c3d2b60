//! Fault injection in the write and sync paths, compiled in only with the
//! `failpoints` feature (the `fail` crate); without it these are no-ops that
//! the optimizer removes. Activated in a broker process by the `FAILPOINTS`
//! environment variable (e.g. `FAILPOINTS=sluice-wal-sync=return`).
//!
//! | point | effect |
//! |---|---|
//! | `sluice-store-write` | a group-commit write (with its fsync, under `always`) fails |
//! | `sluice-wal-sync` | a WAL fsync of `interval` writes fails (the periodic one, or the final one at shutdown) |
//!
//! The broker has its own points (behind its `failpoints` feature):
//! `sluice-dead-letter-written` (abort with dead letters written, the source
//! not yet acked) and `sluice-schedule-recorded` (abort with a schedule's
//! tick recorded, its event not yet produced).

#[cfg(feature = "failpoints")]
use crate::Error;
use crate::Result;

#[cfg(feature = "failpoints")]
fn injected(point: &'static str) -> Error {
    Error::Io { what: point, source: std::io::Error::other("fault injected by a failpoint") }
}

/// Fails when `sluice-store-write` is active.
pub(crate) fn write_fault() -> Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("sluice-store-write", |_| Err(injected("sluice-store-write")));
    Ok(())
}

/// Fails when `sluice-wal-sync` is active.
pub(crate) fn sync_fault() -> Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("sluice-wal-sync", |_| Err(injected("sluice-wal-sync")));
    Ok(())
}

/// Reads `FAILPOINTS` and arms what it names; returns whether failpoints are compiled in.
pub fn setup_from_env() -> bool {
    #[cfg(feature = "failpoints")]
    {
        std::mem::forget(fail::FailScenario::setup());
        true
    }
    #[cfg(not(feature = "failpoints"))]
    false
}
