//! Command-line flags. Each setting is a flag and a `SLUICE_*` variable
//! (clap gives the flag precedence); both override the TOML file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sluice_storage::Durability;

use crate::config::BrokerConfig;

/// The Sluice broker.
#[derive(Debug, Parser)]
#[command(name = "sluice-broker", version, about = "Sluice: a durable message queue broker")]
pub struct Cli {
    /// What to run; the broker itself when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings.
    #[command(flatten)]
    pub settings: SettingArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 if the broker at --addr reports SERVING (for container health checks).
    Health {
        /// Broker address.
        #[arg(long, env = "SLUICE_HEALTH_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// PEM CA to trust for an https:// address (the broker's --tls-cert must name the address's host)
        #[arg(long, env = "SLUICE_HEALTH_CA")]
        ca: Option<PathBuf>,
    },
}

/// Settings given as flags or environment variables. Unset ones keep the file's (or the default) value.
#[derive(Debug, Args, Default)]
pub struct SettingArgs {
    /// Optional TOML file with any of the settings below (kebab-case keys).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051]
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: ./data]
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Prometheus listen address, empty to disable [default: 127.0.0.1:9464]
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// HTTP gateway (CloudEvents in) listen address, empty to disable [default: 127.0.0.1:8080]
    #[arg(long, env = "SLUICE_GATEWAY_LISTEN")]
    pub gateway_listen: Option<String>,
    /// Most open HTTP gateway connections; one over is closed at once [default: 10000]
    #[arg(long, env = "SLUICE_GATEWAY_MAX_CONNECTIONS")]
    pub gateway_max_connections: Option<usize>,
    /// How long a gateway request head or body may take to arrive, and a keep-alive connection stay idle, ms [default: 10000]
    #[arg(long, env = "SLUICE_GATEWAY_READ_TIMEOUT_MS")]
    pub gateway_read_timeout_ms: Option<u64>,
    /// Request body bytes the HTTP gateway holds at once across connections (past it: 429); at least max-request-bytes [default: 268435456]
    #[arg(long, env = "SLUICE_GATEWAY_MAX_INFLIGHT_BODY_BYTES")]
    pub gateway_max_inflight_body_bytes: Option<usize>,
    /// Where push subscriptions may send: host names, `*.domain` or `*` (public addresses only), IPs, CIDR blocks; comma-separated [default: none]
    #[arg(long, env = "SLUICE_PUSH_ALLOWED_ENDPOINTS")]
    pub push_allowed_endpoints: Option<String>,
    /// Log format, `text` or `json` [default: text]; levels via RUST_LOG
    #[arg(long, env = "SLUICE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Default topic retention by age, ms; 0 keeps forever [default: 604800000]
    #[arg(long, env = "SLUICE_RETENTION_MS")]
    pub retention_ms: Option<u64>,
    /// Default topic retention by size per partition, bytes; 0 unlimited [default: 0]
    #[arg(long, env = "SLUICE_RETENTION_BYTES")]
    pub retention_bytes: Option<u64>,
    /// Default segment size, bytes [default: 134217728]
    #[arg(long, env = "SLUICE_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// Default segment age, ms [default: 86400000]
    #[arg(long, env = "SLUICE_SEGMENT_MS")]
    pub segment_ms: Option<u64>,
    /// Default largest message, bytes, at most 16 MiB [default: 1048576]
    #[arg(long, env = "SLUICE_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<u32>,
    /// Default durability: `always` (fsync before ack) or `interval` [default: always]
    #[arg(long, env = "SLUICE_DURABILITY", value_parser = parse_durability)]
    pub durability: Option<Durability>,
    /// WAL fsync period for `interval` topics, ms [default: 100]
    #[arg(long, env = "SLUICE_SYNC_INTERVAL_MS")]
    pub sync_interval_ms: Option<u64>,
    /// Most partitions per topic [default: 4096]
    #[arg(long, env = "SLUICE_MAX_PARTITIONS")]
    pub max_partitions: Option<u32>,
    /// Most messages per produce request [default: 10000]
    #[arg(long, env = "SLUICE_MAX_BATCH_MESSAGES")]
    pub max_batch_messages: Option<u32>,
    /// Largest gRPC request, bytes [default: 67108864]
    #[arg(long, env = "SLUICE_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Appends queued per partition before RESOURCE_EXHAUSTED [default: 1024]
    #[arg(long, env = "SLUICE_PARTITION_QUEUE_DEPTH")]
    pub partition_queue_depth: Option<usize>,
    /// Writes queued for the storage writer [default: 4096]
    #[arg(long, env = "SLUICE_WRITER_QUEUE_DEPTH")]
    pub writer_queue_depth: Option<usize>,
    /// Message bytes of produce requests in flight across all producers before RESOURCE_EXHAUSTED [default: 268435456]
    #[arg(long, env = "SLUICE_MAX_INFLIGHT_PRODUCE_BYTES")]
    pub max_inflight_produce_bytes: Option<usize>,
    /// RocksDB memtable size for records, bytes [default: 67108864]
    #[arg(long, env = "SLUICE_WRITE_BUFFER_BYTES")]
    pub write_buffer_bytes: Option<usize>,
    /// Free space the data volume keeps; produce gets RESOURCE_EXHAUSTED below it, 0 turns the check off [default: 268435456]
    #[arg(long, env = "SLUICE_MIN_FREE_DISK_BYTES")]
    pub min_free_disk_bytes: Option<u64>,
    /// Retention check period, ms [default: 5000]
    #[arg(long, env = "SLUICE_RETENTION_CHECK_MS")]
    pub retention_check_ms: Option<u64>,
    /// Shutdown grace period for in-flight requests, ms [default: 10000]
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// How often backlog and size gauges are recomputed, ms [default: 5000]
    #[arg(long, env = "SLUICE_METRICS_REFRESH_MS")]
    pub metrics_refresh_ms: Option<u64>,
    /// This broker's id in a cluster (ignored without --peers)
    #[arg(long, env = "SLUICE_NODE_ID")]
    pub node_id: Option<u64>,
    /// Cluster members' broker-to-broker addresses, `id=host:port,...` (this broker included); unset runs one broker
    #[arg(long, env = "SLUICE_PEERS")]
    pub peers: Option<String>,
    /// Where this broker serves the other brokers (required with --peers)
    #[arg(long, env = "SLUICE_CLUSTER_LISTEN")]
    pub cluster_listen: Option<String>,
    /// host:port clients use to reach this broker, registered in the cluster catalog [default: the bound listen address]
    #[arg(long, env = "SLUICE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Log entries between a shard's snapshots; its log is dropped up to each [default: 5000]
    #[arg(long, env = "SLUICE_SHARD_SNAPSHOT_ENTRIES")]
    pub shard_snapshot_entries: Option<u64>,
    /// A shard follower that hears no leader for this long to twice this (ms) stands for election [default: 400]
    #[arg(long, env = "SLUICE_SHARD_ELECTION_TIMEOUT_MS")]
    pub shard_election_timeout_ms: Option<u64>,
    /// PEM certificate chain for TLS on the gRPC port and the HTTP gateway; reloaded on SIGHUP and change [default: plaintext]
    #[arg(long, env = "SLUICE_TLS_CERT")]
    pub tls_cert: Option<String>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "SLUICE_TLS_KEY")]
    pub tls_key: Option<String>,
    /// PEM CA certificates that sign client certificates (mTLS)
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<String>,
    /// PEM certificate chain presented to and by the other brokers (mutual TLS on the cluster link) [default: plaintext]
    #[arg(long, env = "SLUICE_CLUSTER_TLS_CERT")]
    pub cluster_tls_cert: Option<String>,
    /// PEM private key of --cluster-tls-cert
    #[arg(long, env = "SLUICE_CLUSTER_TLS_KEY")]
    pub cluster_tls_key: Option<String>,
    /// PEM CA certificates that sign every broker's cluster certificate
    #[arg(long, env = "SLUICE_CLUSTER_TLS_CA")]
    pub cluster_tls_ca: Option<String>,
    /// TOML file of bearer tokens (SHA-256 digests); set, every request needs one [default: no authentication]
    #[arg(long, env = "SLUICE_AUTH_TOKENS")]
    pub auth_tokens: Option<String>,
    /// JWKS file of the keys JWT bearer tokens are signed with (needs --jwt-issuer, --jwt-audience)
    #[arg(long, env = "SLUICE_AUTH_JWKS")]
    pub auth_jwks: Option<String>,
    /// The iss every JWT must carry
    #[arg(long, env = "SLUICE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The aud every JWT must carry
    #[arg(long, env = "SLUICE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The JWT claim naming the principal [default: sub]
    #[arg(long, env = "SLUICE_JWT_PRINCIPAL_CLAIM")]
    pub jwt_principal_claim: Option<String>,
    /// The JWT claim holding the roles (a list or a space-separated string) [default: roles]
    #[arg(long, env = "SLUICE_JWT_ROLES_CLAIM")]
    pub jwt_roles_claim: Option<String>,
    /// PEM P-256 private key that signs push requests (a JWT per request, audience = the endpoint)
    #[arg(long, env = "SLUICE_PUSH_JWT_KEY")]
    pub push_jwt_key: Option<String>,
    /// The iss of push tokens [default: sluice]
    #[arg(long, env = "SLUICE_PUSH_JWT_ISSUER")]
    pub push_jwt_issuer: Option<String>,
    /// The kid of push tokens [default: sluice-push]
    #[arg(long, env = "SLUICE_PUSH_JWT_KEY_ID")]
    pub push_jwt_key_id: Option<String>,
    /// PEM CA certificates trusted for https push endpoints, besides the built-in public roots
    #[arg(long, env = "SLUICE_PUSH_TLS_CA")]
    pub push_tls_ca: Option<String>,
    /// Principals (principal:<name>, role:<name>; comma-separated) that may do everything with auth on
    #[arg(long, env = "SLUICE_SUPERUSERS")]
    pub superusers: Option<String>,
    /// Serve /metrics over TLS too (needs --tls-cert) [default: false]
    #[arg(long, env = "SLUICE_METRICS_TLS", num_args = 0..=1, default_missing_value = "true")]
    pub metrics_tls: Option<bool>,
    /// Serve a non-loopback address without authentication (anyone reaching it may do anything)
    #[arg(long, env = "SLUICE_INSECURE_ALLOW_ANONYMOUS", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_allow_anonymous: Option<bool>,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "always" => Ok(Durability::Always),
        "interval" => Ok(Durability::Interval),
        _ => Err(format!("`{s}` is not a durability mode; use `always` or `interval`")),
    }
}

macro_rules! overlay {
    ($cfg:ident, $args:ident, $($field:ident),+ $(,)?) => {
        $( if let Some(v) = $args.$field.clone() { $cfg.$field = v; } )+
    };
}

impl SettingArgs {
    /// The effective configuration: defaults, then the file, then env and flags.
    pub fn resolve(&self) -> anyhow::Result<BrokerConfig> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading config file {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
            }
            None => BrokerConfig::default(),
        };
        let args = self;
        overlay!(
            cfg,
            args,
            listen,
            data_dir,
            metrics_listen,
            gateway_listen,
            gateway_max_connections,
            gateway_read_timeout_ms,
            gateway_max_inflight_body_bytes,
            push_allowed_endpoints,
            log_format,
            retention_ms,
            retention_bytes,
            segment_bytes,
            segment_ms,
            max_message_bytes,
            durability,
            sync_interval_ms,
            max_partitions,
            max_batch_messages,
            max_request_bytes,
            partition_queue_depth,
            writer_queue_depth,
            max_inflight_produce_bytes,
            write_buffer_bytes,
            min_free_disk_bytes,
            retention_check_ms,
            shutdown_grace_ms,
            metrics_refresh_ms,
            node_id,
            peers,
            cluster_listen,
            advertise,
            shard_snapshot_entries,
            shard_election_timeout_ms,
            tls_cert,
            tls_key,
            tls_client_ca,
            cluster_tls_cert,
            cluster_tls_key,
            cluster_tls_ca,
            auth_tokens,
            superusers,
            push_jwt_key,
            push_jwt_issuer,
            push_jwt_key_id,
            push_tls_ca,
            auth_jwks,
            jwt_issuer,
            jwt_audience,
            jwt_principal_claim,
            jwt_roles_claim,
            insecure_allow_anonymous,
            metrics_tls,
        );
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "segment-bytes = 8192\nretention-ms = 5\n").expect("write");
        let cli = Cli::parse_from(["sluice-broker", "--config", path.to_str().expect("utf8"), "--retention-ms", "9"]);
        let cfg = cli.settings.resolve().expect("valid");
        assert_eq!(cfg.segment_bytes, 8192);
        assert_eq!(cfg.retention_ms, 9);
    }

    #[test]
    fn invalid_value_names_the_setting() {
        let cli = Cli::parse_from(["sluice-broker", "--segment-bytes", "1"]);
        let err = cli.settings.resolve().expect_err("too small").to_string();
        assert!(err.contains("segment-bytes"), "{err}");
    }
}
