//! Metrics: every name in one place, the Prometheus endpoint, and the task that
//! turns broker state into gauges (so a group's backlog is reported also while
//! no consumer is connected).
//!
//! Labels, all bounded: `topic` and `group` (by configuration), `partition`
//! (by `max-partitions`), `reason` (the fixed set of status reasons), `sync`.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sluice_storage::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use axum::response::IntoResponse;

use crate::auth::access::Permissions;
use crate::auth::{Authenticator, Credentials};
use crate::group::GroupRegistry;
use crate::http::ClientCertificate;
use crate::tls::ServerTls;
use crate::topic::TopicRegistry;

/// Messages appended, by topic.
pub const PRODUCE_MESSAGES: &str = "sluice_produce_messages_total";
/// Key and value bytes appended, by topic.
pub const PRODUCE_BYTES: &str = "sluice_produce_bytes_total";
/// Produce request to durable acknowledgement, seconds.
pub const PRODUCE_LATENCY: &str = "sluice_produce_latency_seconds";
/// Produce requests refused because the in-flight byte budget was full.
pub const PRODUCE_THROTTLED: &str = "sluice_produce_throttled_total";
/// In a cluster: produce appends this broker forwarded to a partition's leader elsewhere.
pub const PRODUCE_FORWARDED: &str = "sluice_produce_forwarded_total";
/// Messages returned by Fetch, by topic.
pub const FETCH_MESSAGES: &str = "sluice_fetch_messages_total";
/// Bytes returned by Fetch, by topic.
pub const FETCH_BYTES: &str = "sluice_fetch_bytes_total";
/// Requests answered with an error, and ack ids not applied (per-id failures), by reason.
pub const REJECTED: &str = "sluice_rejected_requests_total";
/// TCP connections accepted.
pub const CONNECTIONS: &str = "sluice_connections_accepted_total";
/// TLS handshakes that failed (bad or foreign certificates, plaintext, timeouts).
pub const TLS_HANDSHAKE_FAILURES: &str = "sluice_tls_handshake_failures_total";
/// TLS certificate reloads, by result (`ok`, `failed`).
pub const TLS_RELOADS: &str = "sluice_tls_reloads_total";
/// Requests refused for missing or bad credentials, by door (`grpc`, `http`) and reason.
pub const AUTH_FAILURES: &str = "sluice_auth_failures_total";
/// Requests refused for lack of a permission, by resource kind and operation.
pub const PERMISSION_DENIALS: &str = "sluice_permission_denials_total";
/// Alter and admin operations let through (each also in the audit log), by operation.
pub const AUDITED_OPERATIONS: &str = "sluice_audited_operations_total";
/// Streams open now (ProduceStream, Subscribe).
pub const OPEN_STREAMS: &str = "sluice_open_streams";
/// Per group and partition: messages not yet acked.
pub const GROUP_BACKLOG: &str = "sluice_group_backlog_messages";
/// Per group and partition: messages leased now.
pub const GROUP_IN_FLIGHT: &str = "sluice_group_in_flight_messages";
/// Per group and partition: age of the oldest unacked message.
pub const GROUP_OLDEST_AGE: &str = "sluice_group_oldest_unacked_age_seconds";
/// Per group and partition: messages moved to the dead-letter topic, a running total (purge does not lower it).
pub const GROUP_DEAD_LETTERED: &str = "sluice_group_dead_lettered_messages";
/// Messages leased to consumers by Pull and Subscribe.
pub const GROUP_DELIVERED_TOTAL: &str = "sluice_group_delivered_total";
/// Per group: messages written to the dead-letter topic.
pub const GROUP_DEAD_LETTERED_TOTAL: &str = "sluice_group_dead_lettered_total";
/// Per group: redeliveries scheduled (nacks and expired leases).
pub const GROUP_REDELIVERIES: &str = "sluice_group_redeliveries_total";
/// Per topic: stored bytes.
pub const TOPIC_BYTES: &str = "sluice_topic_stored_bytes";
/// Per topic: segments.
pub const TOPIC_SEGMENTS: &str = "sluice_topic_segments";
/// Per topic: stored messages.
pub const TOPIC_MESSAGES: &str = "sluice_topic_stored_messages";
/// Bytes RocksDB wrote (WAL, flush, compaction) per byte written to it.
pub const WRITE_AMPLIFICATION: &str = "sluice_storage_write_amplification_ratio";
/// Compaction debt.
pub const PENDING_COMPACTION: &str = "sluice_storage_pending_compaction_bytes";
/// Live WAL size.
pub const WAL_BYTES: &str = "sluice_storage_wal_bytes";
/// Free bytes on the data volume, to alert before the free-space alarm refuses produce.
pub const DISK_FREE: &str = "sluice_storage_disk_free_bytes";
/// 1 while produce is refused for lack of disk space.
pub const DISK_ALARM: &str = "sluice_storage_disk_alarm";
/// 1 once a failed write or fsync poisoned the store (restart needed).
pub const STORAGE_POISONED: &str = "sluice_storage_poisoned";
/// The metadata group's leader as this broker knows it (0: none known; absent on a single broker).
pub const CLUSTER_METADATA_LEADER: &str = "sluice_cluster_metadata_leader";
/// Brokers that have registered their endpoint in the cluster catalog, as this broker has applied it.
pub const CLUSTER_BROKERS: &str = "sluice_cluster_brokers";
/// Raft groups this broker may not vote in: it lost its data and waits for
/// `sluice cluster replace` (0 on a healthy broker).
pub const CLUSTER_FENCED_GROUPS: &str = "sluice_cluster_fenced_groups";
/// Messages a group's filters settled without delivery.
pub const GROUP_FILTERED: &str = "sluice_group_filtered_total";
/// Push requests by group and outcome.
pub const PUSH_REQUESTS: &str = "sluice_push_requests_total";
/// Push request to answer (or failure), by group.
pub const PUSH_LATENCY: &str = "sluice_push_request_seconds";
/// Push requests a group's dispatcher may have in flight now.
pub const PUSH_CONCURRENCY: &str = "sluice_push_concurrency_limit";
/// Schedule ticks fired (events produced), by schedule.
pub const SCHEDULE_FIRED: &str = "sluice_schedule_fired_total";
/// Ticks that came due and were not fired (missed while down, or collapsed), by schedule.
pub const SCHEDULE_MISSED: &str = "sluice_schedule_missed_ticks_total";
/// Failed attempts to fire a tick (retried), by schedule.
pub const SCHEDULE_FAILURES: &str = "sluice_schedule_failures_total";
pub use sluice_storage::metric_names::{CORRUPTION, GROUP_COMMIT_REQUESTS, POISONINGS, WRITE_SECONDS, WRITTEN_BYTES};

/// Installs the global recorder and returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])?
        .build_recorder();
    let handle = recorder.handle();
    // Only the first broker in a process records (tests may start several).
    let _ = metrics::set_global_recorder(recorder);
    describe();
    metrics::gauge!(STORAGE_POISONED).set(0.0);
    Ok(handle)
}

/// The HELP text of every metric (a test checks that nothing is exported without one).
fn describe() {
    use metrics::{describe_counter as counter, describe_gauge as gauge, describe_histogram as histogram, Unit};
    counter!(PRODUCE_MESSAGES, "Messages appended, by topic");
    counter!(PRODUCE_BYTES, Unit::Bytes, "Key and value bytes appended, by topic");
    histogram!(PRODUCE_LATENCY, Unit::Seconds, "Produce request to durable acknowledgement");
    counter!(
        PRODUCE_THROTTLED,
        "Produce requests refused with RESOURCE_EXHAUSTED because max-inflight-produce-bytes was in use"
    );
    counter!(
        PRODUCE_FORWARDED,
        "Produce appends forwarded to a partition's leader on another broker (clients that do not follow not_leader)"
    );
    counter!(FETCH_MESSAGES, "Messages returned by Fetch, by topic");
    counter!(FETCH_BYTES, Unit::Bytes, "Key and value bytes returned by Fetch, by topic");
    counter!(REJECTED, "Requests (or ack ids) answered with an error, by sluice-reason");
    gauge!(CLUSTER_METADATA_LEADER, "Id of the metadata group's leader as this broker knows it; 0 when none is known");
    gauge!(CLUSTER_BROKERS, "Brokers registered in the cluster catalog, as applied on this broker");
    gauge!(
        CLUSTER_FENCED_GROUPS,
        "Raft groups this broker does not vote in: it lost its data and waits to be added back (sluice cluster replace)"
    );
    counter!(GROUP_FILTERED, "Messages settled without delivery because the group's filters did not match, by group");
    counter!(PUSH_REQUESTS, "Push requests by group and outcome (delivered, partially_failed, retry_after, failed)");
    histogram!(PUSH_LATENCY, Unit::Seconds, "Push request to its answer or failure, by group");
    gauge!(
        PUSH_CONCURRENCY,
        "Push requests a group's dispatcher may have in flight now (halved while the endpoint fails)"
    );
    counter!(SCHEDULE_FIRED, "Schedule ticks fired (one event produced each), by schedule");
    counter!(
        SCHEDULE_MISSED,
        "Schedule ticks that came due while the schedule was not running (or behind) and were not fired on their own, by schedule"
    );
    counter!(SCHEDULE_FAILURES, "Failed attempts to fire a schedule's tick (retried with backoff), by schedule");
    counter!(CONNECTIONS, "TCP connections accepted on the gRPC port");
    counter!(TLS_HANDSHAKE_FAILURES, "TLS handshakes that failed (foreign or bad certificates, plaintext, timeouts)");
    counter!(TLS_RELOADS, "TLS certificate reloads by result (ok, failed: the previous certificate stays)");
    counter!(AUTH_FAILURES, "Requests refused for missing or bad credentials, by door and reason");
    counter!(PERMISSION_DENIALS, "Requests refused for lack of a permission, by resource kind and operation");
    counter!(AUDITED_OPERATIONS, "Alter and admin operations let through and audited, by operation");
    gauge!(OPEN_STREAMS, "ProduceStream and Subscribe streams open now");
    gauge!(GROUP_BACKLOG, "Messages of the group's topic not yet acked by the group, by group and partition");
    gauge!(GROUP_IN_FLIGHT, "Messages leased to consumers now, by group and partition");
    gauge!(GROUP_OLDEST_AGE, Unit::Seconds, "Age of the group's oldest unacked message, by group and partition");
    gauge!(
        GROUP_DEAD_LETTERED,
        "Messages moved to the dead-letter topic since the group was created, by group and partition"
    );
    counter!(GROUP_DEAD_LETTERED_TOTAL, "Messages written to the dead-letter topic, by group");
    counter!(GROUP_REDELIVERIES, "Redeliveries scheduled (nacks and expired leases), by group");
    counter!(GROUP_DELIVERED_TOTAL, "Messages leased to consumers by Pull and Subscribe");
    gauge!(TOPIC_BYTES, Unit::Bytes, "Stored record-batch bytes, by topic");
    gauge!(TOPIC_SEGMENTS, "Segments, by topic");
    gauge!(TOPIC_MESSAGES, "Stored messages (next offset minus first offset, summed over partitions), by topic");
    gauge!(WRITE_AMPLIFICATION, "Bytes RocksDB wrote (WAL, flush, compaction) per byte written to it");
    gauge!(PENDING_COMPACTION, Unit::Bytes, "RocksDB compaction debt of the records family");
    gauge!(WAL_BYTES, Unit::Bytes, "Size of the live WAL files");
    gauge!(DISK_FREE, Unit::Bytes, "Free bytes on the data volume");
    gauge!(DISK_ALARM, "1 while produce is refused because free space is below min-free-disk-bytes");
    gauge!(
        STORAGE_POISONED,
        "1 once a failed write or fsync poisoned the store: writes are refused and health is NOT_SERVING until restart"
    );
    histogram!(WRITE_SECONDS, Unit::Seconds, "Group-commit write, with fsync when sync=true");
    histogram!(GROUP_COMMIT_REQUESTS, "Requests folded into one group-commit write");
    counter!(WRITTEN_BYTES, Unit::Bytes, "Bytes handed to the storage engine by group commits");
    counter!(CORRUPTION, "Damaged record batches detected on read (answered with DATA_LOSS)");
    counter!(POISONINGS, "Times a failed write or fsync poisoned the store");
}

/// Serves `GET /metrics` on `listener` (over TLS if given) until `stop`;
/// with authentication on, scrapers need credentials like any client
/// (`auth::methods::HTTP`: describe on the cluster).
pub async fn serve(
    (listener, tls): (TcpListener, Option<Arc<ServerTls>>),
    handle: PrometheusHandle,
    (auth, perms): (Arc<Authenticator>, Arc<Permissions>),
    stop: CancellationToken,
) {
    let scrape = move |certificate: Option<axum::Extension<ClientCertificate>>, headers: axum::http::HeaderMap| {
        let (handle, auth, perms) = (handle.clone(), auth.clone(), perms.clone());
        async move {
            let certificate = certificate.and_then(|axum::Extension(ClientCertificate(c))| c);
            let authorization = headers.get(axum::http::header::AUTHORIZATION).map(|v| v.as_bytes());
            let allowed = auth
                .authenticate(Credentials { authorization, certificate: certificate.as_deref() }, "metrics")
                .and_then(|principal| {
                    perms.guard_for(Some(crate::http::caller(principal, "GET", "/metrics"))).require("")
                });
            match allowed {
                Ok(()) => handle.render().into_response(),
                Err(e) => crate::http::status::Failure::from(e).into_response(),
            }
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(scrape));
    let limits = crate::http::Limits {
        max_body: 0,
        max_connections: METRICS_MAX_CONNECTIONS,
        read_timeout: Duration::from_secs(10),
        inflight_body_bytes: 0,
    };
    crate::http::serve_app((listener, tls), app, limits, stop).await
}

/// Most open connections to the metrics endpoint (scrapers are few).
const METRICS_MAX_CONNECTIONS: usize = 256;

/// Refreshes the state gauges every `period` until `stop` fires.
pub async fn refresh(
    topics: Arc<TopicRegistry>,
    groups: Arc<GroupRegistry>,
    store: Arc<Store>,
    handle: PrometheusHandle,
    period: Duration,
    stop: CancellationToken,
) {
    loop {
        handle.run_upkeep();
        for g in groups.list() {
            let Ok(info) = crate::group::report(&g).await else { continue };
            for p in &info.partitions {
                let labels = [("group", g.name.clone()), ("partition", p.partition.to_string())];
                metrics::gauge!(GROUP_BACKLOG, &labels).set(p.backlog_messages as f64);
                metrics::gauge!(GROUP_IN_FLIGHT, &labels).set(p.in_flight as f64);
                metrics::gauge!(GROUP_OLDEST_AGE, &labels).set(p.oldest_unacked_age_ms as f64 / 1000.0);
                metrics::gauge!(GROUP_DEAD_LETTERED, &labels).set(p.dead_lettered as f64);
            }
        }
        for t in topics.list() {
            let (mut bytes, mut segments, mut messages) = (0u64, 0usize, 0u64);
            for p in &t.partitions {
                if let Ok(s) = p.snapshot().await {
                    bytes += s.segments.iter().map(|s| s.bytes).sum::<u64>();
                    segments += s.segments.len();
                }
                messages += p.latest().saturating_sub(p.earliest());
            }
            let labels = [("topic", t.name.clone())];
            metrics::gauge!(TOPIC_BYTES, &labels).set(bytes as f64);
            metrics::gauge!(TOPIC_SEGMENTS, &labels).set(segments as f64);
            metrics::gauge!(TOPIC_MESSAGES, &labels).set(messages as f64);
        }
        let s = store.clone();
        if let Ok(stats) = tokio::task::spawn_blocking(move || s.stats()).await {
            if stats.user_bytes_written > 0 {
                metrics::gauge!(WRITE_AMPLIFICATION)
                    .set(stats.disk_bytes_written as f64 / stats.user_bytes_written as f64);
            }
            metrics::gauge!(PENDING_COMPACTION).set(stats.pending_compaction_bytes as f64);
            metrics::gauge!(WAL_BYTES).set(stats.wal_bytes as f64);
        }
        metrics::gauge!(DISK_FREE).set(store.disk().free_bytes() as f64);
        metrics::gauge!(DISK_ALARM).set(if store.disk().alarm() { 1.0 } else { 0.0 });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Counts an open stream for as long as it lives.
#[derive(Debug)]
pub struct StreamGauge(());

impl StreamGauge {
    /// Marks a stream open until the value is dropped.
    pub fn open() -> Self {
        metrics::gauge!(OPEN_STREAMS).increment(1.0);
        StreamGauge(())
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_STREAMS).decrement(1.0);
    }
}
