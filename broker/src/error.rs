//! The broker's error type: what a request can fail with, independent of gRPC.
//! `grpc::status` maps each variant to one status code and reason.

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The offending field.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// No topic has that name.
    #[error("topic `{0}` does not exist; create it first (sluice topic create {0})")]
    TopicNotFound(String),
    /// A topic with that name exists already.
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    /// No group has that name.
    #[error("group `{0}` does not exist; create it first (sluice group create {0} --topic TOPIC)")]
    GroupNotFound(String),
    /// A group with that name exists already.
    #[error("group `{0}` already exists")]
    GroupExists(String),
    /// No schedule has that name.
    #[error("schedule `{0}` does not exist (sluice schedule list shows those that do)")]
    ScheduleNotFound(String),
    /// A schedule with that name exists already.
    #[error("schedule `{0}` already exists; delete it first to change it")]
    ScheduleExists(String),
    /// The operation conflicts with current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The partition number is past the topic's partition count.
    #[error("topic `{topic}` has partitions 0..{count}; partition {partition} does not exist")]
    PartitionNotFound {
        /// The topic.
        topic: String,
        /// The requested partition.
        partition: u32,
        /// The topic's partition count.
        count: u32,
    },
    /// The offset is not stored (anymore, or not yet).
    #[error("offset {offset} is outside the stored range [{earliest}, {latest}]; fetch from earliest or latest")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: u64,
        /// First stored offset.
        earliest: u64,
        /// Next offset to be written.
        latest: u64,
    },
    /// The metadata group cannot take or has not yet applied a change (no
    /// quorum, an election in progress): retry with backoff.
    #[error("the cluster cannot complete this now: {0}; retry with backoff")]
    ClusterUnavailable(String),
    /// The request carries no credentials, or ones the broker does not
    /// accept; the message says which, never whether the resource exists.
    #[error("{0}")]
    Unauthenticated(String),
    /// The principal lacks the permission the request needs; the message
    /// names principal, operation and resource as asked, never whether
    /// the resource exists.
    #[error("{0}")]
    PermissionDenied(String),
    /// No permission rule has this id.
    #[error("no permission rule has id {0} (sluice acl list shows them)")]
    AclNotFound(u64),
    /// A queue is full: back off and retry.
    #[error("{0} is full; retry with backoff")]
    Overloaded(&'static str),
    /// Produce requests already hold the broker's whole in-flight byte budget.
    #[error(
        "the broker is appending {limit} bytes of produce requests already (max-inflight-produce-bytes); retry with backoff"
    )]
    ProduceBudgetExhausted {
        /// The configured budget.
        limit: usize,
    },
    /// An ack id that is not `partition:offset:attempt`.
    #[error("`{0}` is not an ack id issued by Pull (partition:offset:attempt)")]
    MalformedAckId(String),
    /// An ack id naming a delivery this group never made.
    #[error("ack id `{ack_id}`: offset {offset} was never delivered to this group")]
    AckIdNotFound {
        /// The id as given.
        ack_id: String,
        /// Its offset.
        offset: u64,
    },
    /// The lease of this delivery expired and the message was delivered again.
    #[error(
        "ack id `{ack_id}`: its lease expired and the message was delivered again (attempt {current}); only that delivery can be acked now"
    )]
    StaleAck {
        /// The id as given.
        ack_id: String,
        /// The attempt now outstanding.
        current: u32,
    },
    /// The delivery holds no lease, so there is nothing to extend or release.
    #[error(
        "ack id `{ack_id}` holds no lease (its message was acked, nacked or released, or the lease expired); nothing was changed"
    )]
    NotLeased {
        /// The id as given.
        ack_id: String,
    },
    /// The delivery used its last attempt and its message is being written to
    /// the dead-letter topic: acking it now would make it both.
    #[error(
        "ack id `{ack_id}` was the message's last attempt and it is being moved to the dead-letter topic; \
         it can no longer be acked or nacked (see DescribeGroup or peek the dead letters)"
    )]
    DeadLettering {
        /// The id as given.
        ack_id: String,
    },
    /// The topic or group was deleted while the request was in flight.
    #[error("{0} was deleted while this request was in flight; recreate it before using it again")]
    Deleted(String),
    /// In a cluster: another broker leads this partition's shard. The client
    /// sends the request there (the endpoint is in the `sluice-leader`
    /// trailer, the epoch in `sluice-leader-epoch`).
    #[error("{}", not_leader_message(of, leader.as_deref(), *epoch))]
    NotLeader {
        /// What was asked for: "partition 3", "group `g`".
        of: String,
        /// The leader's client endpoint, when this broker knows it.
        leader: Option<String>,
        /// The leader's term as this broker knows it: a client holding a
        /// newer one keeps its own.
        epoch: u64,
    },
    /// The broker is stopping.
    #[error("broker is shutting down; retry against another broker or after restart")]
    ShuttingDown,
    /// The storage layer failed.
    #[error(transparent)]
    Storage(#[from] sluice_storage::Error),
}

/// Result alias for broker operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for an invalid field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { field, reason: reason.into() }
    }
}

fn not_leader_message(of: &str, leader: Option<&str>, epoch: u64) -> String {
    match leader {
        Some(endpoint) => format!(
            "{of} is led by the broker at {endpoint} (epoch {epoch}); send it there \
             (trailers sluice-leader and sluice-leader-epoch)"
        ),
        None => format!(
            "this broker does not lead {of} and knows no leader yet (epoch {epoch}); \
             retry shortly, or ask Cluster.Metadata"
        ),
    }
}
