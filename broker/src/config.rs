//! Broker configuration: a TOML file, then `SLUICE_*` environment variables,
//! then flags, each overriding the one before. Validated once at start-up;
//! it does not change while the broker runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_replication::ClusterConfig;
use sluice_storage::{Durability, TopicConfig};

/// Every broker setting. Sizes are bytes, durations milliseconds (as written
/// in TOML, env and flags; code reads them as `Duration`s through the methods).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// gRPC listen address. Default `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// Where RocksDB keeps its files. Default `./data`.
    pub data_dir: PathBuf,
    /// Prometheus `/metrics` listen address; empty disables it. Default `127.0.0.1:9464`.
    pub metrics_listen: String,
    /// The HTTP gateway's listen address (`POST /v1/topics/{topic}/events`,
    /// CloudEvents in); empty disables it. Default `127.0.0.1:8080`.
    pub gateway_listen: String,
    /// Most open gateway connections (one over is closed at once). Default 10,000.
    pub gateway_max_connections: usize,
    /// How long a gateway request head or body may take to arrive, and a
    /// keep-alive connection stay idle. Default 10 s.
    pub gateway_read_timeout_ms: u64,
    /// Request body bytes the gateway holds at once, across all connections
    /// (past it: `429`). At least `max-request-bytes`. Default 256 MiB.
    pub gateway_max_inflight_body_bytes: usize,
    /// Where push subscriptions may send (comma-separated host names,
    /// `*.domain` or `*` for public addresses, IPs and CIDR blocks); empty,
    /// the default, pushes nowhere. See `push::allowlist`.
    pub push_allowed_endpoints: String,
    /// `text` or `json` logs. Default `text`.
    pub log_format: String,
    /// Default retention by age for new topics; 0 keeps forever. Default 7 days.
    pub retention_ms: u64,
    /// Default retention by size per partition; 0 is unlimited. Default 0.
    pub retention_bytes: u64,
    /// Default segment size for new topics. Default 128 MiB.
    pub segment_bytes: u64,
    /// Default segment age for new topics. Default 1 day.
    pub segment_ms: u64,
    /// Default largest message (key + value + headers). Default 1 MiB; at most 16 MiB.
    pub max_message_bytes: u32,
    /// Default durability of new topics: `always` or `interval`. Default `always`.
    pub durability: Durability,
    /// WAL fsync period for `interval` topics. Default 100.
    pub sync_interval_ms: u64,
    /// Most partitions a topic may have. Default 4096.
    pub max_partitions: u32,
    /// Most messages in one produce request. Default 10000.
    pub max_batch_messages: u32,
    /// Largest gRPC request accepted. Default 64 MiB.
    pub max_request_bytes: usize,
    /// Appends queued per partition before producers get RESOURCE_EXHAUSTED. Default 1024.
    pub partition_queue_depth: usize,
    /// Writes queued for the writer before partitions wait. Default 4096.
    pub writer_queue_depth: usize,
    /// Message bytes of produce requests being appended at once, across all
    /// producers: past it producers get RESOURCE_EXHAUSTED instead of the
    /// broker growing memory. Default 256 MiB.
    pub max_inflight_produce_bytes: usize,
    /// RocksDB memtable size for records. Default 64 MiB.
    pub write_buffer_bytes: usize,
    /// Free space the data volume keeps: below it produce is refused (reads,
    /// acks and memtable flushes keep the room they need). 0 disables. Default 256 MiB.
    pub min_free_disk_bytes: u64,
    /// How often retention and segment age are checked. Default 5000.
    pub retention_check_ms: u64,
    /// How long shutdown waits for in-flight requests. Default 10000.
    pub shutdown_grace_ms: u64,
    /// How often state gauges (backlog, sizes) are recomputed. Default 5000.
    pub metrics_refresh_ms: u64,
    /// This broker's id in a cluster (unique, never reused). Ignored without `peers`. Default 0.
    pub node_id: u64,
    /// Every cluster member's broker-to-broker address, `id=host:port,...`, this broker
    /// included; empty runs a single broker (no Raft anywhere). Default empty.
    pub peers: String,
    /// Where this broker serves the other brokers (Raft traffic); required with `peers`.
    pub cluster_listen: String,
    /// The `host:port` clients should use to reach this broker, registered in the
    /// cluster catalog (and shown by `sluice cluster status`); empty: the bound
    /// client address. Set it when that is `0.0.0.0` or behind NAT. Default empty.
    pub advertise: String,
    /// A shard snapshots its state after this many log entries, then drops its
    /// log up to there (less a fifth kept for followers a little behind); a
    /// replica further behind installs the snapshot. Default 5000.
    pub shard_snapshot_entries: u64,
    /// A shard follower that hears no leader for a random time between this
    /// and twice this (ms) stands for election; a killed leader's partitions
    /// are unwritable for about one to two of these. Default 400.
    pub shard_election_timeout_ms: u64,
    /// PEM certificate chain served on the gRPC port and the HTTP gateway;
    /// empty serves plaintext. Reloaded on SIGHUP and when the file changes.
    /// Default empty.
    pub tls_cert: String,
    /// PEM private key of `tls-cert`. Default empty.
    pub tls_key: String,
    /// PEM CA certificates that sign client certificates (mTLS); a client
    /// certificate from any other CA fails the handshake. Default empty.
    pub tls_client_ca: String,
    /// PEM certificate chain this broker presents to the other brokers, on its
    /// cluster listener and when it calls them (mutual TLS; the same file
    /// for both, so give it both serverAuth and clientAuth usages, and a
    /// name for each address peers reach it by). Empty: the cluster link is
    /// plaintext. Reloaded on SIGHUP and when the file changes. Default empty.
    pub cluster_tls_cert: String,
    /// PEM private key of `cluster-tls-cert`. Default empty.
    pub cluster_tls_key: String,
    /// PEM CA certificates that sign every broker's cluster certificate: the
    /// only peers this broker talks to or answers. Default empty.
    pub cluster_tls_ca: String,
    /// TOML file of bearer tokens (stored as SHA-256 digests, see
    /// `auth::tokens`); set, every request needs a listed token. Empty: no
    /// authentication. Reloaded on SIGHUP and when the file changes. Default empty.
    pub auth_tokens: String,
    /// JWKS file of the keys JWT bearer tokens are signed with (HMAC
    /// `oct`, RSA, EC); set, JWTs authenticate (with `jwt-issuer` and
    /// `jwt-audience`). Reloaded on SIGHUP and when the file changes.
    /// Default empty.
    pub auth_jwks: String,
    /// The `iss` every JWT must carry (required with `auth-jwks`). Default empty.
    pub jwt_issuer: String,
    /// The `aud` every JWT must carry (required with `auth-jwks`). Default empty.
    pub jwt_audience: String,
    /// The JWT claim naming the principal. Default `sub`.
    pub jwt_principal_claim: String,
    /// The JWT claim holding the roles (a list, or a space-separated
    /// string). Default `roles`.
    pub jwt_roles_claim: String,
    /// PEM (PKCS#8) P-256 private key push requests are signed with: each
    /// carries a JWT (ES256, audience = the endpoint, five minutes) unless
    /// its push config sets `authorization`. Default empty: unsigned.
    pub push_jwt_key: String,
    /// The `iss` of push tokens. Default `sluice`.
    pub push_jwt_issuer: String,
    /// The `kid` of push tokens. Default `sluice-push`.
    pub push_jwt_key_id: String,
    /// PEM CA certificates trusted for `https://` push endpoints besides the
    /// public web roots built into the broker (the image has no system CA
    /// store): a private CA that signs handlers' certificates. Default empty.
    pub push_tls_ca: String,
    /// Who may do everything with authentication on, whatever the
    /// permission rules say: comma-separated `principal:<name>`,
    /// `role:<name>` (a bare name is a principal). Everyone else may do only
    /// what rules allow, and the first rules are added by a superuser.
    /// Default empty.
    pub superusers: String,
    /// Serve `/metrics` over TLS too (with `tls-cert`); off, it stays
    /// plaintext for scrapers without TLS. Default false.
    pub metrics_tls: bool,
    /// Serve a non-loopback address without authentication (anyone who
    /// reaches the port may read, write and delete everything). Default false.
    pub insecure_allow_anonymous: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("./data"),
            metrics_listen: "127.0.0.1:9464".into(),
            gateway_listen: "127.0.0.1:8080".into(),
            gateway_max_connections: 10_000,
            gateway_read_timeout_ms: 10_000,
            gateway_max_inflight_body_bytes: 256 << 20,
            push_allowed_endpoints: String::new(),
            log_format: "text".into(),
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: 0,
            segment_bytes: 128 << 20,
            segment_ms: 24 * 3600 * 1000,
            max_message_bytes: 1 << 20,
            durability: Durability::Always,
            sync_interval_ms: 100,
            max_partitions: 4096,
            max_batch_messages: 10_000,
            max_request_bytes: 64 << 20,
            partition_queue_depth: 1024,
            writer_queue_depth: 4096,
            max_inflight_produce_bytes: 256 << 20,
            write_buffer_bytes: 64 << 20,
            min_free_disk_bytes: 256 << 20,
            retention_check_ms: 5000,
            shutdown_grace_ms: 10_000,
            metrics_refresh_ms: 5000,
            node_id: 0,
            peers: String::new(),
            cluster_listen: String::new(),
            advertise: String::new(),
            shard_snapshot_entries: sluice_replication::node::DEFAULT_SHARD_SNAPSHOT_ENTRIES,
            shard_election_timeout_ms: sluice_replication::node::DEFAULT_SHARD_ELECTION_TIMEOUT.as_millis() as u64,
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_client_ca: String::new(),
            cluster_tls_cert: String::new(),
            cluster_tls_key: String::new(),
            cluster_tls_ca: String::new(),
            auth_tokens: String::new(),
            superusers: String::new(),
            push_jwt_key: String::new(),
            push_jwt_issuer: "sluice".into(),
            push_jwt_key_id: "sluice-push".into(),
            push_tls_ca: String::new(),
            auth_jwks: String::new(),
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
            jwt_principal_claim: "sub".into(),
            jwt_roles_claim: "roles".into(),
            insecure_allow_anonymous: false,
            metrics_tls: false,
        }
    }
}

/// A setting outside its allowed range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid setting `{field}`: {reason}")]
pub struct ConfigError {
    /// The setting's name as in the TOML file.
    pub field: &'static str,
    /// The allowed range.
    pub reason: String,
}

fn check(ok: bool, field: &'static str, reason: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError { field, reason: reason.to_owned() })
    }
}

impl BrokerConfig {
    /// Rejects settings outside their ranges, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // The defaults for new topics follow the same rules as a CreateTopic's settings.
        self.topic_defaults().check().map_err(|e| ConfigError {
            field: match e.field {
                "segment_bytes" => "segment-bytes",
                "segment_ms" => "segment-ms",
                "max_message_bytes" => "max-message-bytes",
                _ => "topic defaults",
            },
            reason: e.rule.to_owned(),
        })?;
        check((1..=60_000).contains(&self.sync_interval_ms), "sync-interval-ms", "must be 1..=60000")?;
        self.validate_security()?;
        let port = self.advertise.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
        check(
            self.advertise.is_empty() || port.is_some_and(|p| p.parse::<u16>().is_ok()),
            "advertise",
            "must be host:port (a name or address clients can reach), or empty",
        )?;
        check((1..=100_000).contains(&self.max_partitions), "max-partitions", "must be 1..=100000")?;
        check((1..=1_000_000).contains(&self.max_batch_messages), "max-batch-messages", "must be 1..=1000000")?;
        check((1024..=1 << 30).contains(&self.max_request_bytes), "max-request-bytes", "must be 1024..=1073741824")?;
        check(
            self.max_request_bytes >= self.max_message_bytes as usize,
            "max-request-bytes",
            "must be at least max-message-bytes",
        )?;
        check((1..=1 << 20).contains(&self.partition_queue_depth), "partition-queue-depth", "must be 1..=1048576")?;
        check((1..=1 << 20).contains(&self.writer_queue_depth), "writer-queue-depth", "must be 1..=1048576")?;
        check(
            (1 << 20..=u32::MAX as usize).contains(&self.max_inflight_produce_bytes),
            "max-inflight-produce-bytes",
            "must be 1 MiB..=4 GiB",
        )?;
        check((1 << 20..=4 << 30).contains(&self.write_buffer_bytes), "write-buffer-bytes", "must be 1 MiB..=4 GiB")?;
        check(
            self.min_free_disk_bytes == 0 || self.min_free_disk_bytes >= self.write_buffer_bytes as u64,
            "min-free-disk-bytes",
            "must be 0 (off) or at least write-buffer-bytes, so a memtable flush always has room",
        )?;
        check((10..=3_600_000).contains(&self.retention_check_ms), "retention-check-ms", "must be 10..=3600000")?;
        check(self.shutdown_grace_ms <= 600_000, "shutdown-grace-ms", "must be at most 600000")?;
        check((100..=600_000).contains(&self.metrics_refresh_ms), "metrics-refresh-ms", "must be 100..=600000")?;
        check(matches!(self.log_format.as_str(), "text" | "json"), "log-format", "must be `text` or `json`")?;
        self.cluster()?;
        if !self.metrics_listen.is_empty() {
            check(self.metrics_listen.parse::<SocketAddr>().is_ok(), "metrics-listen", "must be host:port or empty")?;
        }
        if !self.gateway_listen.is_empty() {
            check(self.gateway_listen.parse::<SocketAddr>().is_ok(), "gateway-listen", "must be host:port or empty")?;
        }
        check(
            (1..=1_000_000).contains(&self.gateway_max_connections),
            "gateway-max-connections",
            "must be 1..=1000000",
        )?;
        check(
            (100..=600_000).contains(&self.gateway_read_timeout_ms),
            "gateway-read-timeout-ms",
            "must be 100..=600000",
        )?;
        check(
            self.gateway_max_inflight_body_bytes >= self.max_request_bytes
                && self.gateway_max_inflight_body_bytes <= u32::MAX as usize,
            "gateway-max-inflight-body-bytes",
            "must be at least max-request-bytes (one largest body must fit) and below 4 GiB",
        )?;
        if let Err(reason) = crate::push::Allowlist::parse(&self.push_allowed_endpoints) {
            return Err(ConfigError { field: "push-allowed-endpoints", reason });
        }
        Ok(())
    }

    /// This broker's place in a cluster: `None` for a single broker (no `peers`).
    pub fn cluster(&self) -> Result<Option<(ClusterConfig, SocketAddr)>, ConfigError> {
        if self.peers.trim().is_empty() {
            return Ok(None);
        }
        let mut peers = BTreeMap::new();
        for part in self.peers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addr) = part.split_once('=').ok_or_else(|| ConfigError {
                field: "peers",
                reason: format!("`{part}` is not `id=host:port`; write e.g. `1=broker-1:50061,2=broker-2:50061`"),
            })?;
            let id: u64 = id.trim().parse().map_err(|_| ConfigError {
                field: "peers",
                reason: format!("`{id}` in `{part}` is not a broker id (a positive integer)"),
            })?;
            check(id > 0, "peers", "broker ids start at 1")?;
            check(!addr.trim().is_empty(), "peers", "every broker needs an address")?;
            if peers.insert(id, addr.trim().to_owned()).is_some() {
                return Err(ConfigError { field: "peers", reason: format!("broker {id} is listed twice") });
            }
        }
        check(
            peers.contains_key(&self.node_id),
            "node-id",
            "must be one of the ids in `peers` (this broker's own entry)",
        )?;
        let listen = self.cluster_listen.parse::<SocketAddr>().map_err(|_| ConfigError {
            field: "cluster-listen",
            reason: "must be host:port (where this broker serves the others) when `peers` is set".into(),
        })?;
        check(self.shard_snapshot_entries >= 10, "shard-snapshot-entries", "must be at least 10")?;
        let mut config = ClusterConfig::new(self.node_id, peers);
        config.shard_snapshot_entries = self.shard_snapshot_entries;
        check(
            (200..=60_000).contains(&self.shard_election_timeout_ms),
            "shard-election-timeout-ms",
            "must be between 200 and 60000",
        )?;
        config.shard_election_timeout = Duration::from_millis(self.shard_election_timeout_ms);
        Ok(Some((config, listen)))
    }

    /// The subjects `superusers` names.
    pub fn superuser_subjects(&self) -> Result<Vec<crate::auth::acl::Subject>, String> {
        let names = self.superusers.split(',').map(str::trim).filter(|s| !s.is_empty());
        names
            .map(|s| match s.contains(':') {
                true => crate::auth::acl::Subject::parse(s),
                false => crate::auth::acl::Subject::parse(&format!("principal:{s}")),
            })
            .collect()
    }

    fn validate_security(&self) -> Result<(), ConfigError> {
        check(self.tls_cert.is_empty() == self.tls_key.is_empty(), "tls-key", "tls-cert and tls-key go together")?;
        check(
            !self.metrics_tls || !self.tls_cert.is_empty(),
            "metrics-tls",
            "TLS on /metrics needs tls-cert and tls-key",
        )?;
        check(
            self.tls_client_ca.is_empty() || !self.tls_cert.is_empty(),
            "tls-client-ca",
            "client certificates need TLS: set tls-cert and tls-key too",
        )?;
        let cluster_tls = [&self.cluster_tls_cert, &self.cluster_tls_key, &self.cluster_tls_ca];
        check(
            cluster_tls.iter().all(|f| f.is_empty()) || cluster_tls.iter().all(|f| !f.is_empty()),
            "cluster-tls-cert",
            "cluster TLS is mutual: set cluster-tls-cert, cluster-tls-key and cluster-tls-ca together",
        )?;
        check(
            self.cluster_tls_cert.is_empty() || !self.peers.trim().is_empty(),
            "cluster-tls-cert",
            "cluster TLS secures the links between brokers: it needs `peers`",
        )?;
        self.superuser_subjects().map_err(|reason| ConfigError { field: "superusers", reason })?;
        if !self.auth_jwks.is_empty() {
            check(!self.jwt_issuer.is_empty(), "jwt-issuer", "JWTs are checked for their issuer: set jwt-issuer")?;
            check(
                !self.jwt_audience.is_empty(),
                "jwt-audience",
                "JWTs are checked for their audience: set jwt-audience",
            )?;
            check(!self.jwt_principal_claim.is_empty(), "jwt-principal-claim", "name the claim of the principal")?;
        }
        if self.auth_tokens.is_empty() && self.auth_jwks.is_empty() && !self.insecure_allow_anonymous {
            let gateway = self.gateway_listen.parse::<SocketAddr>().ok();
            for (field, addr) in [("listen", Some(self.listen)), ("gateway-listen", gateway)] {
                let Some(addr) = addr else { continue };
                check(
                    addr.ip().is_loopback(),
                    field,
                    &format!(
                        "{addr} is reachable from other machines, and without authentication anyone there may \
                         read, write and delete every topic: set auth-tokens (with TLS: tls-cert, tls-key), bind \
                         127.0.0.1, or accept the risk with --insecure-allow-anonymous"
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// The TLS files of the client-facing doors, if TLS is on.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        (!self.tls_cert.is_empty()).then(|| crate::tls::TlsFiles {
            cert: PathBuf::from(&self.tls_cert),
            key: PathBuf::from(&self.tls_key),
            client_ca: (!self.tls_client_ca.is_empty()).then(|| PathBuf::from(&self.tls_client_ca)),
            require_client_cert: false,
        })
    }

    /// The TLS files of the cluster link, if cluster TLS is on: every peer
    /// must present a certificate the cluster CA signed.
    pub fn cluster_tls_files(&self) -> Option<crate::tls::TlsFiles> {
        (!self.cluster_tls_cert.is_empty()).then(|| crate::tls::TlsFiles {
            cert: PathBuf::from(&self.cluster_tls_cert),
            key: PathBuf::from(&self.cluster_tls_key),
            client_ca: Some(PathBuf::from(&self.cluster_tls_ca)),
            require_client_cert: true,
        })
    }

    /// WAL fsync period for `interval` topics.
    pub fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.sync_interval_ms)
    }

    /// How often retention and segment age are checked.
    pub fn retention_check(&self) -> Duration {
        Duration::from_millis(self.retention_check_ms)
    }

    /// How long shutdown waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// How often state gauges are recomputed.
    pub fn metrics_refresh(&self) -> Duration {
        Duration::from_millis(self.metrics_refresh_ms)
    }

    /// The settings a new topic gets for fields its creator left at zero.
    /// The TOML keys stay flat (`retention-ms`, not `[topic-defaults]`): they
    /// are what operators write, and serde cannot flatten a struct into one
    /// that denies unknown keys.
    pub fn topic_defaults(&self) -> TopicConfig {
        TopicConfig {
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            max_message_bytes: self.max_message_bytes,
            durability: self.durability,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_file_parses_and_validates() {
        let text = include_str!("../../deploy/sluice.toml");
        let cfg: BrokerConfig = toml::from_str(text).expect("deploy/sluice.toml parses");
        cfg.validate().expect("deploy/sluice.toml is valid");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cfg = BrokerConfig { max_message_bytes: 0, ..BrokerConfig::default() };
        assert_eq!(cfg.validate().map_err(|e| e.field), Err("max-message-bytes"));
        assert!(toml::from_str::<BrokerConfig>("no-such-setting = 1").is_err());
    }

    #[test]
    fn a_public_address_needs_authentication_or_an_explicit_risk() {
        let public = BrokerConfig { listen: "0.0.0.0:50051".parse().expect("addr"), ..BrokerConfig::default() };
        let refused = public.validate().expect_err("anonymous on 0.0.0.0");
        assert_eq!(refused.field, "listen");
        assert!(refused.reason.contains("--insecure-allow-anonymous"), "{refused}");
        let gateway = BrokerConfig { gateway_listen: "0.0.0.0:8080".into(), ..BrokerConfig::default() };
        assert_eq!(gateway.validate().map_err(|e| e.field), Err("gateway-listen"));
        let risk = BrokerConfig { insecure_allow_anonymous: true, ..public.clone() };
        assert_eq!(risk.validate(), Ok(()));
        let tokens = BrokerConfig { auth_tokens: "tokens.toml".into(), ..public };
        assert_eq!(tokens.validate(), Ok(()));
        assert_eq!(BrokerConfig::default().validate(), Ok(()), "loopback stays open");
        let half = BrokerConfig { tls_cert: "c.pem".into(), ..BrokerConfig::default() };
        assert_eq!(half.validate().map_err(|e| e.field), Err("tls-key"));
    }

    #[test]
    fn advertise_is_host_and_port_or_empty() {
        for ok in ["", "broker1:50051", "10.0.0.7:50051", "[::1]:50051"] {
            let cfg = BrokerConfig { advertise: ok.into(), ..BrokerConfig::default() };
            assert_eq!(cfg.validate(), Ok(()), "{ok}");
        }
        for bad in ["broker1", ":50051", "broker1:port", "broker1:70000"] {
            let cfg = BrokerConfig { advertise: bad.into(), ..BrokerConfig::default() };
            assert_eq!(cfg.validate().map_err(|e| e.field), Err("advertise"), "{bad}");
        }
    }
}
