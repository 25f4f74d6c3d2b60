//! The one map from broker errors to gRPC statuses. Each status carries a
//! stable machine-readable reason in the `sluice-reason` metadata key; answers
//! that embed an error instead of failing the call (per-id ack failures, a
//! pipelined produce's error) carry the same code and reason from the same table.

use sluice_proto::v1 as pb;
use tonic::{Code, Status};

use crate::error::Error;

/// Metadata key holding the stable reason code.
pub const REASON_KEY: &str = "sluice-reason";
/// With `not_leader`: the leader's client endpoint (`host:port`).
pub const LEADER_KEY: &str = "sluice-leader";
/// With `not_leader`: the leader's epoch (its shard's Raft term).
pub const LEADER_EPOCH_KEY: &str = "sluice-leader-epoch";

/// The gRPC code and stable reason of `e`: the one table every front door
/// maps from (the HTTP gateway maps the code to a status).
pub(crate) fn code_and_reason(e: &Error) -> (Code, &'static str) {
    use sluice_storage::Error as S;
    match e {
        Error::InvalidArgument { .. } => (Code::InvalidArgument, "invalid_argument"),
        Error::TopicNotFound(_) => (Code::NotFound, "topic_not_found"),
        Error::PartitionNotFound { .. } => (Code::NotFound, "partition_not_found"),
        Error::TopicExists(_) => (Code::AlreadyExists, "topic_exists"),
        Error::GroupNotFound(_) => (Code::NotFound, "group_not_found"),
        Error::GroupExists(_) => (Code::AlreadyExists, "group_exists"),
        Error::ScheduleNotFound(_) => (Code::NotFound, "schedule_not_found"),
        Error::ScheduleExists(_) => (Code::AlreadyExists, "schedule_exists"),
        Error::Unauthenticated(_) => (Code::Unauthenticated, "unauthenticated"),
        Error::PermissionDenied(_) => (Code::PermissionDenied, "permission_denied"),
        Error::AclNotFound(_) => (Code::NotFound, "acl_not_found"),
        Error::FailedPrecondition(_) => (Code::FailedPrecondition, "failed_precondition"),
        Error::OffsetOutOfRange { .. } => (Code::OutOfRange, "offset_out_of_range"),
        Error::Overloaded(_) | Error::ProduceBudgetExhausted { .. } => (Code::ResourceExhausted, "overloaded"),
        Error::ShuttingDown => (Code::Unavailable, "shutting_down"),
        Error::ClusterUnavailable(_) => (Code::Unavailable, "cluster_unavailable"),
        Error::NotLeader { .. } => (Code::Unavailable, "not_leader"),
        Error::Deleted(_) => (Code::NotFound, "deleted"),
        Error::MalformedAckId(_) => (Code::InvalidArgument, "malformed_ack_id"),
        Error::AckIdNotFound { .. } => (Code::NotFound, "ack_id_not_found"),
        Error::StaleAck { .. } => (Code::FailedPrecondition, "stale_ack"),
        Error::NotLeased { .. } => (Code::FailedPrecondition, "not_leased"),
        Error::DeadLettering { .. } => (Code::FailedPrecondition, "dead_lettering"),
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

/// The stable reason code of `e`, for answers that embed an error.
pub fn reason(e: &Error) -> &'static str {
    code_and_reason(e).1
}

/// Why one ack id of an Ack, Nack or ModifyAckDeadline was not applied: the
/// code and reason its own request would have failed with, counted like a
/// rejected request.
pub fn ack_failure(ack_id: String, e: &Error) -> pb::AckFailure {
    let (code, reason) = code_and_reason(e);
    metrics::counter!(crate::metrics::REJECTED, "reason" => reason).increment(1);
    pb::AckFailure { ack_id, code: code as i32, message: e.to_string(), reason: reason.to_owned() }
}

/// Every id of a request refused as a whole, each with the request's code and
/// reason: on a Subscribe stream there is no status to carry them. Counted once.
pub fn ack_failures(ack_ids: Vec<String>, e: &Error) -> Vec<pb::AckFailure> {
    let (code, reason) = code_and_reason(e);
    metrics::counter!(crate::metrics::REJECTED, "reason" => reason).increment(1);
    let message = e.to_string();
    ack_ids
        .into_iter()
        .map(|ack_id| pb::AckFailure { ack_id, code: code as i32, message: message.clone(), reason: reason.to_owned() })
        .collect()
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let (code, reason) = code_and_reason(&e);
        metrics::counter!(crate::metrics::REJECTED, "reason" => reason).increment(1);
        let mut status = Status::new(code, e.to_string());
        if let Ok(v) = reason.parse() {
            status.metadata_mut().insert(REASON_KEY, v);
        }
        if let Error::NotLeader { leader, epoch, .. } = &e {
            if let Some(Ok(v)) = leader.as_deref().map(str::parse) {
                status.metadata_mut().insert(LEADER_KEY, v);
            }
            if let Ok(v) = epoch.to_string().parse() {
                status.metadata_mut().insert(LEADER_EPOCH_KEY, v);
            }
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
            partition: sluice_storage::PartitionId::new(sluice_storage::TopicId(1), 0),
            offset: 5,
            reason: "crc".into(),
        });
        assert_eq!(Status::from(corrupt).code(), Code::DataLoss);
        assert_eq!(Status::from(Error::Overloaded("queue")).code(), Code::ResourceExhausted);
        let s = Status::from(Error::TopicNotFound("t".into()));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.metadata().get(REASON_KEY).and_then(|v| v.to_str().ok()), Some("topic_not_found"));
    }

    #[test]
    fn not_leader_names_the_leader_and_its_epoch() {
        let s = Status::from(Error::NotLeader {
            of: "partition 2".into(),
            leader: Some("10.0.0.2:50051".into()),
            epoch: 7,
        });
        assert_eq!(s.code(), Code::Unavailable);
        let get = |k| s.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(get(REASON_KEY).as_deref(), Some("not_leader"));
        assert_eq!(get(LEADER_KEY).as_deref(), Some("10.0.0.2:50051"));
        assert_eq!(get(LEADER_EPOCH_KEY).as_deref(), Some("7"));
        let unknown = Status::from(Error::NotLeader { of: "partition 2".into(), leader: None, epoch: 3 });
        assert!(unknown.metadata().get(LEADER_KEY).is_none());
    }

    #[test]
    fn ack_failures_carry_the_code_and_reason_a_status_would() {
        let e = Error::NotLeased { ack_id: "0:1:1".into() };
        let f = ack_failure("0:1:1".into(), &e);
        let s = Status::from(Error::NotLeased { ack_id: "0:1:1".into() });
        assert_eq!((f.code, f.message.as_str()), (s.code() as i32, s.message()));
        assert_eq!(Some(f.reason.as_str()), s.metadata().get(REASON_KEY).and_then(|v| v.to_str().ok()));
        let all = ack_failures(vec!["a".into(), "b".into()], &Error::ShuttingDown);
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|f| f.reason == "shutting_down" && f.code == Code::Unavailable as i32));
    }
}
