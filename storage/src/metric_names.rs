//! Names of the metrics the storage layer records. The broker's `metrics`
//! module re-exports them with every other name and gives each its HELP text.

/// Group-commit write time, seconds, labelled `sync`.
pub const WRITE_SECONDS: &str = "sluice_storage_write_seconds";
/// Requests folded into one group commit.
pub const GROUP_COMMIT_REQUESTS: &str = "sluice_storage_group_commit_requests";
/// Bytes handed to the engine by group commits.
pub const WRITTEN_BYTES: &str = "sluice_storage_written_bytes_total";
/// Damaged batches found on read.
pub const CORRUPTION: &str = "sluice_storage_corruption_total";
/// Times the store was poisoned (0 or 1 per process).
pub const POISONINGS: &str = "sluice_storage_poisonings_total";
