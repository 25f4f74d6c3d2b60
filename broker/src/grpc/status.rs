//! The one map from broker errors to gRPC statuses. Each status carries a
//! stable machine-readable reason in the `sluice-reason` metadata key.

use tonic::{Code, Status};

use crate::error::Error;

/// Metadata key holding the stable reason code.
pub const REASON_KEY: &str = "sluice-reason";

fn code_and_reason(e: &Error) -> (Code, &'static str) {
    use sluice_storage::Error as S;
    match e {
        Error::InvalidArgument { .. } => (Code::InvalidArgument, "invalid_argument"),
        Error::TopicNotFound(_) => (Code::NotFound, "topic_not_found"),
        Error::PartitionNotFound { .. } => (Code::NotFound, "partition_not_found"),
        Error::TopicExists(_) => (Code::AlreadyExists, "topic_exists"),
        Error::GroupNotFound(_) => (Code::NotFound, "group_not_found"),
        Error::GroupExists(_) => (Code::AlreadyExists, "group_exists"),
        Error::FailedPrecondition(_) => (Code::FailedPrecondition, "failed_precondition"),
        Error::OffsetOutOfRange { .. } => (Code::OutOfRange, "offset_out_of_range"),
        Error::Overloaded(_) | Error::ProduceBudgetExhausted { .. } => (Code::ResourceExhausted, "overloaded"),
        Error::ShuttingDown => (Code::Unavailable, "shutting_down"),
        Error::Deleted(_) => (Code::NotFound, "deleted"),
        Error::Storage(s) => match s {
            _ if s.is_corruption() => (Code::DataLoss, "corruption"),
            S::NoSpace => (Code::ResourceExhausted, "disk_full"),
            S::LowDiskSpace { .. } => (Code::ResourceExhausted, "disk_full"),
            S::Poisoned => (Code::Unavailable, "storage_poisoned"),
            S::WriterStopped => (Code::Unavailable, "shutting_down"),
            S::OutOfOrderSequence { .. } => (Code::FailedPrecondition, "out_of_order_sequence"),
            _ => (Code::Internal, "storage_error"),
        },
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let (code, reason) = code_and_reason(&e);
        metrics::counter!(crate::metrics::REJECTED, "reason" => reason).increment(1);
        let mut status = Status::new(code, e.to_string());
        if let Ok(v) = reason.parse() {
            status.metadata_mut().insert(REASON_KEY, v);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_is_data_loss_and_full_queues_are_resource_exhausted() {
        let corrupt = Error::Storage(sluice_storage::Error::Corruption {
            topic_id: 1,
            partition: 0,
            offset: 5,
            reason: "crc".into(),
        });
        assert_eq!(Status::from(corrupt).code(), Code::DataLoss);
        assert_eq!(Status::from(Error::Overloaded("queue")).code(), Code::ResourceExhausted);
        let s = Status::from(Error::TopicNotFound("t".into()));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.metadata().get(REASON_KEY).and_then(|v| v.to_str().ok()), Some("topic_not_found"));
    }
}
