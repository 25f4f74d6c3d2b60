//! `run`: opens storage, starts the writer, the partition actors and the gRPC
//! server, and shuts them down in order when `shutdown` fires:
//! health NOT_SERVING → stop accepting and drain RPCs (bounded by the grace
//! period) → actors answer what they queued → the writer commits its last
//! group and syncs the WAL → memtables are flushed → RocksDB closes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::v1::admin_server::AdminServer;
use sluice_proto::v1::consumer_server::ConsumerServer;
use sluice_proto::v1::producer_server::ProducerServer;
use sluice_storage::{spawn_writer, Store, StoreConfig, WriterConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::access::Permissions;
use crate::auth::rules::AclRegistry;
use crate::config::BrokerConfig;
use crate::group::GroupContext;
use crate::group::GroupRegistry;
use crate::grpc::{admin::AdminService, consume::ConsumeService, produce::ProduceService};
use crate::partition::PartitionContext;
use crate::schedule::ScheduleRegistry;
use crate::topic::TopicRegistry;

/// HTTP/2 flow-control window per connection.
const CONNECTION_WINDOW_BYTES: u32 = 8 << 20;
/// HTTP/2 flow-control window per stream: a 1 MiB batch arrives without waiting for window updates.
const STREAM_WINDOW_BYTES: u32 = 1 << 20;

/// What an operator can do about a storage error at start.
fn storage_hint(e: &sluice_storage::Error) -> &'static str {
    if e.is_corruption() {
        ". The data directory is damaged (a file was truncated or overwritten outside Sluice); the broker will not \
         serve from it. Restore the directory from a backup or a replica; do not delete files by hand."
    } else {
        ""
    }
}

/// Why the broker could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Storage could not be opened.
    #[error("opening storage: {0}{hint}", hint = storage_hint(.0))]
    Storage(#[from] sluice_storage::Error),
    /// The task opening storage panicked.
    #[error("opening storage: the task panicked: {0}")]
    OpenTask(#[from] tokio::task::JoinError),
    /// A socket or thread could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files or the token file do not load.
    #[error("{0}")]
    Security(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A write or WAL sync failed while serving: what was acknowledged under
    /// `always` is durable, but the process must restart to recover the rest.
    #[error("storage was poisoned while serving ({0}); restart to recover from what is on disk")]
    Poisoned(String),
    /// The metrics endpoint could not start.
    #[error("metrics endpoint: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    /// A setting is invalid (checked at start; reached only by callers that skipped `validate`).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data dir cannot serve in the configured cluster.
    #[error("cluster: {0}")]
    Cluster(String),
}

/// How long a stopping cluster member waits for its shard leaderships to move.
const LEADERSHIP_MOVE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs a broker until `shutdown` fires, then stops it cleanly.
pub async fn run(config: BrokerConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    static FAILPOINTS: std::sync::Once = std::sync::Once::new();
    FAILPOINTS.call_once(|| {
        if sluice_storage::failpoints::setup_from_env() {
            tracing::warn!("built with failpoints: faults named in FAILPOINTS are injected (a test build)");
        }
    });
    let config = Arc::new(config);
    tracing::info!(?config, version = env!("CARGO_PKG_VERSION"), "starting sluice-broker");
    let started = Instant::now();
    // Installed before anything records (recovery, the cluster's first gauges), or what is
    // recorded earlier is lost: a gauge set once at start would never appear.
    let metrics_handle = match config.metrics_listen.parse::<std::net::SocketAddr>() {
        Ok(_) => Some(crate::metrics::install()?),
        Err(_) => None,
    };
    let options = StoreConfig {
        write_buffer_bytes: config.write_buffer_bytes,
        min_free_bytes: config.min_free_disk_bytes,
        ..StoreConfig::default()
    };
    let data_dir = config.data_dir.clone();
    let (store, mut recovered) = tokio::task::spawn_blocking(move || Store::open(&data_dir, &options)).await??;
    let recovery = recovered.elapsed;
    let entries = recovered.entries;
    let writer_config = WriterConfig { queue_depth: config.writer_queue_depth, ..WriterConfig::default() };
    let (writer, writer_thread) = spawn_writer(store.clone(), writer_config)
        .map_err(|source| ServeError::Io { what: "starting the writer thread".into(), source })?;
    let cluster_writer = writer.clone();
    let tracker = TaskTracker::new();
    let actors_stop = CancellationToken::new();
    let cluster_config = config.cluster()?;
    let peer_tls = match config.cluster_tls_files() {
        Some(files) => Some(crate::tls::peer::PeerTls::load(files).map_err(ServeError::Security)?),
        None => None,
    };
    let core = match &cluster_config {
        Some((cluster_config, _)) => Some(
            crate::cluster::Cluster::open(
                cluster_config,
                (store.clone(), cluster_writer.clone()),
                &mut recovered,
                (config.topic_defaults(), peer_tls.clone()),
            )
            .await?,
        ),
        None => None,
    };
    let ctx = PartitionContext {
        store: store.clone(),
        writer,
        queue_depth: config.partition_queue_depth,
        retention_check: config.retention_check(),
        tracker: tracker.clone(),
        replicated: core.as_ref().map(|c| c.replicated()),
    };
    let (recovered_groups, group_states) =
        (std::mem::take(&mut recovered.groups), std::mem::take(&mut recovered.group_states));
    let recovered_schedules = std::mem::take(&mut recovered.schedules);
    let recovered_acls = std::mem::take(&mut recovered.acls);
    let registry = Arc::new(TopicRegistry::new(recovered, ctx.clone(), actors_stop.clone()));
    let group_ctx = GroupContext {
        writer: ctx.writer.clone(),
        topics: registry.clone(),
        tracker: tracker.clone(),
        queue_depth: config.partition_queue_depth,
        replicated: ctx.replicated.clone(),
    };
    let group_writer = ctx.writer.clone();
    drop(ctx);
    let groups = Arc::new(GroupRegistry::new(recovered_groups, group_states, group_ctx, actors_stop.clone()));
    let (topics, partitions) = registry.counts();
    tracing::info!(
        topics,
        partitions,
        groups = groups.list().len(),
        metadata_entries = entries,
        recovery_ms = recovery.as_millis() as u64,
        "recovered"
    );

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Io { what: format!("binding {}", config.listen), source })?;
    let local =
        listener.local_addr().map_err(|source| ServeError::Io { what: "reading the bound address".into(), source })?;
    drop(cluster_writer);
    let cluster = match (core, cluster_config) {
        (Some(core), Some((cluster_config, cluster_listen))) => Some(
            crate::cluster::Cluster::start(
                core,
                &cluster_config,
                cluster_listen,
                if config.advertise.is_empty() { local.to_string() } else { config.advertise.clone() },
                (registry.clone(), groups.clone()),
                config.retention_check(),
            )
            .await?,
        ),
        _ => None,
    };

    let rpc_stop = CancellationToken::new();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AdminServer<AdminService>>().await;
    health.set_serving::<ProducerServer<ProduceService>>().await;
    health.set_serving::<ConsumerServer<ConsumeService>>().await;
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    tokio::spawn(not_serving_when_poisoned(store.poisoned(), health.clone(), rpc_stop.clone()));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let reflection = reflection.build_v1()?;

    let mut auth = crate::auth::Authenticator::open();
    if !config.auth_tokens.is_empty() {
        auth = auth.and_tokens(config.auth_tokens.clone().into()).map_err(ServeError::Security)?;
    }
    if !config.auth_jwks.is_empty() {
        let rules = crate::auth::jwt::JwtRules {
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            principal_claim: config.jwt_principal_claim.clone(),
            roles_claim: config.jwt_roles_claim.clone(),
        };
        auth = auth.and_jwt(config.auth_jwks.clone().into(), rules).map_err(ServeError::Security)?;
    }
    if let Some(cluster) = &cluster {
        let node = cluster.meta_node();
        auth = auth.with_cluster_secret(move || node.cluster_secret());
    }
    let auth = Arc::new(auth);
    if !auth.enabled() {
        tracing::warn!(
            listen = %config.listen,
            "no authentication: every client that reaches the broker may read, write and delete everything \
             (set auth-tokens, and TLS, on any address other machines can reach)"
        );
    }
    let grpc_tls = match config.tls_files() {
        Some(files) => Some(crate::tls::ServerTls::load(files, &[b"h2"]).map_err(ServeError::Security)?),
        None => None,
    };
    let gateway_tls = match config.tls_files() {
        Some(files) => Some(crate::tls::ServerTls::load(files, &[b"http/1.1"]).map_err(ServeError::Security)?),
        None => None,
    };
    let metrics_tls = match config.tls_files().filter(|_| config.metrics_tls) {
        Some(files) => Some(crate::tls::ServerTls::load(files, &[b"http/1.1"]).map_err(ServeError::Security)?),
        None => None,
    };
    let mut reloadable: Vec<Arc<dyn crate::reload::Reload>> = vec![auth.clone()];
    let listeners = grpc_tls.iter().chain(gateway_tls.iter()).chain(metrics_tls.iter());
    reloadable.extend(listeners.map(|t| t.clone() as Arc<dyn crate::reload::Reload>));
    reloadable.extend(peer_tls.map(|t| t as Arc<dyn crate::reload::Reload>));
    let push_signer = match config.push_jwt_key.as_str() {
        "" => None,
        key => Some(Arc::new(
            crate::push::signer::PushSigner::load(key.as_ref(), &config.push_jwt_issuer, &config.push_jwt_key_id)
                .map_err(ServeError::Security)?,
        )),
    };
    reloadable.extend(push_signer.clone().map(|s| s as Arc<dyn crate::reload::Reload>));
    tokio::spawn(crate::reload::watch(reloadable, rpc_stop.clone()));

    let max = config.max_request_bytes;
    let acls = match &cluster {
        Some(cluster) => AclRegistry::cluster(cluster.meta_node()),
        None => AclRegistry::local(recovered_acls, group_writer.clone(), registry.clone()),
    };
    let superusers = config.superuser_subjects().map_err(ServeError::Security)?;
    let perms = Arc::new(Permissions::new(auth.enabled(), superusers, acls));
    let schedules = Arc::new(match &cluster {
        Some(cluster) => {
            drop(group_writer);
            ScheduleRegistry::cluster(cluster.meta_node(), registry.clone())
        }
        // Held by the registry until the runner and Admin stop, before the writer must.
        None => ScheduleRegistry::local(recovered_schedules, group_writer, registry.clone()),
    });
    let admin = AdminServer::new(AdminService::new(
        registry.clone(),
        groups.clone(),
        schedules.clone(),
        config.clone(),
        perms.clone(),
    ))
    .max_decoding_message_size(max);
    let produce_path = crate::topic::produce::Producer::new(
        registry.clone(),
        config.max_inflight_produce_bytes,
        config.max_batch_messages,
    );
    tokio::spawn(crate::schedule::runner::run(schedules, registry.clone(), produce_path.clone(), rpc_stop.clone()));
    if let Ok(addr) = config.gateway_listen.parse::<std::net::SocketAddr>() {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Io { what: format!("binding the HTTP gateway on {addr}"), source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServeError::Io { what: "reading the gateway address".into(), source })?;
        println!("sluice-broker gateway on {bound}");
        let limits = crate::http::Limits {
            max_body: max,
            max_connections: config.gateway_max_connections,
            read_timeout: Duration::from_millis(config.gateway_read_timeout_ms),
            inflight_body_bytes: config.gateway_max_inflight_body_bytes,
        };
        let door = crate::http::Door { listener, tls: gateway_tls, auth: auth.clone(), perms: perms.clone() };
        tokio::spawn(crate::http::serve(door, produce_path.clone(), limits, rpc_stop.clone()));
    }
    let allowlist = crate::push::Allowlist::parse(&config.push_allowed_endpoints).unwrap_or_default();
    if !allowlist.is_empty() {
        tracing::info!(allowed = %config.push_allowed_endpoints, "push subscriptions may send to these endpoints");
    }
    let push_ca = (!config.push_tls_ca.is_empty()).then(|| std::path::Path::new(&config.push_tls_ca));
    let mut push_client = crate::push::PushClient::new(allowlist, push_ca).map_err(ServeError::Security)?;
    if let Some(signer) = push_signer {
        tracing::info!(key = %config.push_jwt_key, "push requests are signed (JWT, ES256)");
        push_client = push_client.with_signer(signer);
    }
    tokio::spawn(crate::push::supervise(groups.clone(), push_client, rpc_stop.clone()));
    let events = sluice_proto::v1::events_server::EventsServer::new(crate::grpc::events::EventsService::new(
        produce_path.clone(),
        perms.clone(),
    ))
    .max_decoding_message_size(max);
    let producer = ProducerServer::new(ProduceService::new(produce_path, rpc_stop.clone(), perms.clone()))
        .max_decoding_message_size(max);
    let consumer =
        ConsumerServer::new(ConsumeService::new(registry.clone(), groups.clone(), rpc_stop.clone(), perms.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX);
    let scaler = sluice_proto::externalscaler::external_scaler_server::ExternalScalerServer::new(
        crate::grpc::scaler::ScalerService::new(groups.clone(), rpc_stop.clone(), perms.clone()),
    );
    let cluster_service = sluice_proto::v1::cluster_server::ClusterServer::new(
        crate::grpc::cluster::ClusterService::new(cluster.as_ref().map(|c| c.view()), local.to_string(), perms.clone()),
    );
    if let Some(cluster) = &cluster {
        cluster.serve_peers(tonic::service::Routes::new(producer.clone()).add_service(consumer.clone()), auth.clone());
    }
    let interval_sync = tokio::spawn(sync_wal_periodically(store.clone(), config.sync_interval(), rpc_stop.clone()));

    if let (Ok(addr), Some(handle)) = (config.metrics_listen.parse::<std::net::SocketAddr>(), metrics_handle) {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Io { what: format!("binding metrics on {addr}"), source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServeError::Io { what: "reading the metrics address".into(), source })?;
        println!("sluice-broker metrics on {bound}");
        let doorkeepers = (auth.clone(), perms.clone());
        tokio::spawn(crate::metrics::serve((listener, metrics_tls), handle.clone(), doorkeepers, rpc_stop.clone()));
        let period = config.metrics_refresh();
        tokio::spawn(crate::metrics::refresh(
            registry.clone(),
            groups.clone(),
            store.clone(),
            handle,
            period,
            rpc_stop.clone(),
        ));
    }
    drop(registry);
    drop(groups);
    // Its rules hold the writer on a single broker.
    drop(perms);
    // Printed on stdout so scripts and tests can find an OS-chosen port.
    println!("sluice-broker listening on {local}");
    tracing::info!(%local, startup_ms = started.elapsed().as_millis() as u64, "serving");

    let draining = {
        let (shutdown, rpc_stop, health) = (shutdown.clone(), rpc_stop.clone(), health.clone());
        let leadership = cluster.as_ref().map(|c| c.leadership());
        async move {
            shutdown.cancelled().await;
            if let Some(leadership) = leadership {
                // Still serving meanwhile: requests here are redirected to the new leaders.
                leadership.move_off(LEADERSHIP_MOVE_WAIT).await;
            }
            tracing::info!("shutdown requested: refusing new work, draining in-flight requests");
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            health.set_not_serving::<AdminServer<AdminService>>().await;
            health.set_not_serving::<ProducerServer<ProduceService>>().await;
            health.set_not_serving::<ConsumerServer<ConsumeService>>().await;
            rpc_stop.cancel();
        }
    };
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Room for many small requests in flight per connection: h2 sends GOAWAY
        // (ENHANCE_YOUR_CALM) when unread small DATA frames outgrow half the connection
        // window, which a producer with thousands of partitions reaches at the default 64 KiB.
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .layer(crate::auth::grpc::AuthLayer::new(auth))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(admin)
        .add_service(producer)
        .add_service(events)
        .add_service(consumer)
        .add_service(scaler)
        .add_service(cluster_service);
    let server: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match grpc_tls {
            None => {
                // Our own listener, so the server's tcp_nodelay setting does not apply: set it per
                // connection, or Nagle and delayed ACKs add ~40 ms to every pipelined response.
                let incoming =
                    futures::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
                        metrics::counter!(crate::metrics::CONNECTIONS).increment(1);
                        conn.inspect(|s| {
                            if let Err(e) = s.set_nodelay(true) {
                                tracing::warn!(error = %e, "cannot disable Nagle on a connection");
                            }
                        })
                    });
                Box::pin(router.serve_with_incoming_shutdown(incoming, draining))
            }
            Some(tls) => {
                let incoming = crate::tls::incoming(listener, tls, rpc_stop.clone());
                Box::pin(router.serve_with_incoming_shutdown(incoming, draining))
            }
        };
    let grace = config.shutdown_grace();
    // Boxed so it can be dropped early: its services hold the registry and, through it, the writer.
    let mut server = server;
    tokio::select! {
        r = &mut server => r?,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "in-flight requests did not finish within the grace period; closing them");
        }
    }
    drop(server);
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    rpc_stop.cancel();
    let _ = interval_sync.await;
    actors_stop.cancel();
    tracker.close();
    tracker.wait().await;
    let joined = tokio::task::spawn_blocking(move || writer_thread.join().is_ok()).await;
    if !matches!(joined, Ok(true)) {
        tracing::error!("writer thread ended abnormally");
    }
    if let Some(reason) = store.poison_reason() {
        return Err(ServeError::Poisoned(reason));
    }
    let flush = tokio::task::spawn_blocking(move || store.flush()).await;
    match flush {
        Ok(Ok(())) => tracing::info!("storage flushed and closed"),
        Ok(Err(e)) => tracing::error!(error = %e, "final flush failed; the WAL will be replayed at next start"),
        Err(e) => tracing::error!(error = %e, "final flush task failed"),
    }
    Ok(())
}

/// Reports every service NOT_SERVING once the store is poisoned (a failed
/// write or fsync): load balancers and clients move elsewhere, and the
/// operator sees why in the log and in `sluice_storage_poisoned`.
async fn not_serving_when_poisoned(
    mut poisoned: tokio::sync::watch::Receiver<Option<String>>,
    health: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    let reason = tokio::select! {
        biased;
        _ = stop.cancelled() => return,
        r = poisoned.wait_for(Option::is_some) => match r {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => return,
        },
    };
    metrics::gauge!(crate::metrics::STORAGE_POISONED).set(1.0);
    tracing::error!(%reason, "storage is poisoned: health is NOT_SERVING; restart the broker to recover from disk");
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    health.set_not_serving::<AdminServer<AdminService>>().await;
    health.set_not_serving::<ProducerServer<ProduceService>>().await;
    health.set_not_serving::<ConsumerServer<ConsumeService>>().await;
}

/// Fsyncs the WAL every `period` while writes for `interval` topics are pending.
async fn sync_wal_periodically(store: Arc<Store>, period: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !store.has_unsynced_writes() {
            continue;
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.sync_wal()).await {
            Ok(Ok(())) => {}
            // The store poisons itself and the health task reports it; never retried.
            Ok(Err(e)) => {
                tracing::error!(error = %e, "periodic WAL sync failed");
                return;
            }
            Err(e) => tracing::error!(error = %e, "periodic WAL sync task failed"),
        }
    }
}
