//! `TestCluster`: three (or n) real broker processes on loopback that form a
//! cluster with the flags an operator uses (`--node-id`, `--peers`,
//! `--cluster-listen`), each one killable with SIGKILL and restartable on its
//! own data directory. Every broker reaches every other through its own
//! `FaultProxy` (one per direction of each link), so a test can delay,
//! black-hole or cut any link, one way or both.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::proxy::{Fault, FaultProxy};
use crate::{eventually, TestBroker};

/// The gauge each broker exports with the metadata leader's id (0: none).
pub const METADATA_LEADER: &str = "sluice_cluster_metadata_leader";

/// Brokers with ids 1..=n; `brokers[i]` has id `i + 1`.
pub struct TestCluster {
    /// The brokers, by id - 1.
    pub brokers: Vec<TestBroker>,
    /// The proxy broker `from` dials broker `to` through, by `(from, to)`.
    links: BTreeMap<(u64, u64), FaultProxy>,
    /// Each broker's own cluster listener (`--cluster-listen`), by id - 1.
    pub cluster_addrs: Vec<String>,
}

fn free_port() -> anyhow::Result<u16> {
    crate::ports::reserve()
}

impl TestCluster {
    /// Starts `n` brokers that know each other as peers and waits until each
    /// is healthy (a leader is elected by then or soon after).
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        Self::start_with(n, &[]).await
    }

    /// `start`, with `extra` flags for every broker.
    pub async fn start_with(n: usize, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_prepared(n, extra, |_, root| Ok(root.join("data"))).await
    }

    /// `start_with`, where `prepare` chooses broker `id`'s data directory
    /// under its temporary directory (e.g. on a small filesystem it mounts).
    pub async fn start_prepared(
        n: usize,
        extra: &[&str],
        prepare: impl FnMut(u64, &std::path::Path) -> anyhow::Result<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        Self::start_inner(n, extra, None, prepare, &[]).await
    }

    /// `start_with`, leaving the brokers `later` unlaunched (their peers
    /// already list them): a test starts each with [`TestBroker::start_again`].
    pub async fn start_without(n: usize, extra: &[&str], later: &[u64]) -> anyhow::Result<Self> {
        Self::start_inner(n, extra, None, |_, root| Ok(root.join("data")), later).await
    }

    /// `start_with` for brokers whose client ports serve TLS (their
    /// `--tls-*` flags in `extra`) with certificates `ca_pem` signed: each
    /// broker's [`TestBroker::channel`] trusts that CA.
    pub async fn start_tls(n: usize, extra: &[&str], ca_pem: &str) -> anyhow::Result<Self> {
        Self::start_inner(n, extra, Some(ca_pem), |_, root| Ok(root.join("data")), &[]).await
    }

    async fn start_inner(
        n: usize,
        extra: &[&str],
        tls_ca: Option<&str>,
        mut prepare: impl FnMut(u64, &std::path::Path) -> anyhow::Result<std::path::PathBuf>,
        later: &[u64],
    ) -> anyhow::Result<Self> {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
        let mut links = BTreeMap::new();
        for from in 1..=n as u64 {
            for to in (1..=n as u64).filter(|to| *to != from) {
                let target = format!("127.0.0.1:{}", ports[(to - 1) as usize]);
                links.insert((from, to), FaultProxy::start(target).await?);
            }
        }
        let mut brokers = Vec::with_capacity(n);
        for (i, port) in ports.iter().enumerate() {
            let me = i as u64 + 1;
            let listen = format!("127.0.0.1:{port}");
            // Broker `me` knows itself by its listener and every other broker by its proxy.
            let peers: Vec<String> = (1..=n as u64)
                .map(|to| match links.get(&(me, to)) {
                    Some(proxy) => format!("{to}={}", proxy.addr),
                    None => format!("{to}={listen}"),
                })
                .collect();
            let (id, peers) = (me.to_string(), peers.join(","));
            let mut args = vec![
                "--node-id",
                &id,
                "--peers",
                &peers,
                "--cluster-listen",
                &listen,
                "--metrics-listen",
                "127.0.0.1:0",
            ];
            args.extend_from_slice(extra);
            let mut broker = TestBroker::unlaunched(&args, &[], |root| prepare(me, root))?;
            broker.tls_ca = tls_ca.map(str::to_owned);
            if !later.contains(&me) {
                broker.launch().await?;
            }
            brokers.push(broker);
        }
        let cluster_addrs = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        Ok(TestCluster { brokers, links, cluster_addrs })
    }

    /// Starts broker `id` (the next id) on an empty data dir, with every
    /// broker but `replacing` as its peers (reached directly, without a
    /// proxy): the new broker of a replacement under a new id. Returns its
    /// cluster address.
    pub async fn start_replacement(&mut self, id: u64, replacing: u64, extra: &[&str]) -> anyhow::Result<String> {
        anyhow::ensure!(id == self.brokers.len() as u64 + 1, "broker ids are consecutive");
        let listen = format!("127.0.0.1:{}", free_port()?);
        let mut peers: Vec<String> = (1..id)
            .filter(|other| *other != replacing)
            .map(|other| format!("{other}={}", self.cluster_addrs[(other - 1) as usize]))
            .collect();
        peers.push(format!("{id}={listen}"));
        let (id_arg, peers) = (id.to_string(), peers.join(","));
        let mut args = vec![
            "--node-id",
            &id_arg,
            "--peers",
            &peers,
            "--cluster-listen",
            &listen,
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        self.brokers.push(TestBroker::start_with(&args).await?);
        self.cluster_addrs.push(listen.clone());
        Ok(listen)
    }

    /// Broker `id` (1-based).
    pub fn broker(&self, id: u64) -> &TestBroker {
        &self.brokers[(id - 1) as usize]
    }

    /// Broker `id` (1-based), to kill or restart.
    pub fn broker_mut(&mut self, id: u64) -> &mut TestBroker {
        &mut self.brokers[(id - 1) as usize]
    }

    /// The metadata leader every running broker of `ids` reports, once they
    /// all agree on one that is not `not` (a killed broker stays "leader" in
    /// the others' view until they time out).
    pub async fn agreed_leader(&self, ids: &[u64], not: Option<u64>) -> anyhow::Result<u64> {
        let agreed = eventually(Duration::from_secs(20), "the brokers agree on a metadata leader", || async {
            let mut seen = Vec::new();
            for id in ids {
                seen.push(self.broker(*id).metric(METADATA_LEADER, &[]).await? as u64);
            }
            let agreed = seen[0] != 0 && Some(seen[0]) != not && seen.iter().all(|l| *l == seen[0]);
            Ok(agreed.then_some(seen[0]))
        })
        .await;
        agreed.map_err(|e| {
            let logs: Vec<String> =
                ids.iter().map(|id| format!("broker {id}:\n{}", self.broker(*id).log_tail())).collect();
            e.context(logs.join("\n"))
        })
    }

    /// Waits until every shard is led by its preferred broker (shard `s` by
    /// broker `(s - 1) mod n + 1`), as broker `at` reports: leaders stop
    /// moving once they have spread.
    pub async fn leaders_spread(&self, at: u64) -> anyhow::Result<()> {
        let info = sluice_client::ClusterInfo::new(self.broker(at).channel());
        let n = self.brokers.len() as u64;
        eventually(Duration::from_secs(20), "every shard is led by its preferred broker", || async {
            let shards = info.metadata().await?.shards;
            let spread = !shards.is_empty()
                && shards.iter().all(|s| s.status.as_ref().is_some_and(|st| st.leader == (s.id - 1) % n + 1));
            Ok(spread.then_some(()))
        })
        .await
    }

    /// The proxy of the link on which broker `from` reaches broker `to`.
    pub fn link(&self, from: u64, to: u64) -> &FaultProxy {
        &self.links[&(from, to)]
    }

    /// Sets `fault` on both directions of every link of broker `id`.
    pub fn isolate(&self, id: u64, fault: Fault) {
        for ((from, to), proxy) in &self.links {
            if *from == id || *to == id {
                proxy.set(fault);
            }
        }
    }

    /// Every link healthy again.
    pub fn heal(&self) {
        for proxy in self.links.values() {
            proxy.set(Fault::HEALTHY);
        }
    }

    /// Ids of every broker.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.brokers.len() as u64).collect()
    }
}

/// Where a produce to one partition was stored: the offset of its first
/// message and the endpoint of the broker that took it (the partition's leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Offset of the first message.
    pub offset: u64,
    /// `host:port` of the broker that answered OK.
    pub leader: String,
}

/// Produces `values` as one batch to `partition` of `topic`, starting at the
/// broker at `first` and following `not_leader` answers (the `sluice-leader`
/// trailer) to the leader; retries `UNAVAILABLE` without a hint (an election)
/// for up to 20 s. Raw gRPC, so a test sees exactly what the broker answered.
pub async fn produce_to_leader(first: &str, topic: &str, partition: u32, values: &[String]) -> anyhow::Result<Stored> {
    use sluice_proto::v1 as pb;
    let request = pb::ProduceRequest {
        topic: topic.to_owned(),
        partition: Some(partition),
        messages: values.iter().map(|v| crate::message(v.clone())).collect(),
        ..Default::default()
    };
    let mut at = first.to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{at}"))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        let mut call = tonic::Request::new(request.clone());
        // It follows not_leader itself, so the broker answers it instead of forwarding.
        call.metadata_mut().insert("sluice-redirect", tonic::metadata::MetadataValue::from_static("1"));
        let answer = pb::producer_client::ProducerClient::new(channel).produce(call).await;
        let status = match answer {
            Ok(r) => {
                let offset = r.into_inner().offsets.first().copied().ok_or_else(|| anyhow::anyhow!("no offset"))?;
                return Ok(Stored { offset, leader: at });
            }
            Err(status) => status,
        };
        let get = |k: &str| status.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        anyhow::ensure!(
            status.code() == tonic::Code::Unavailable && std::time::Instant::now() < deadline,
            "producing to {topic}/{partition} at {at}: {status:?}"
        );
        match (get("sluice-reason").as_deref(), get("sluice-leader")) {
            (Some("not_leader"), Some(leader)) if leader != at => at = leader,
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                at = first.to_owned();
            }
        }
    }
}

/// Produces one message of `value` to `partition` of `topic` over `ch` as a
/// tool that does not follow `not_leader` sends it (no `sluice-redirect`): a
/// broker that does not lead the partition forwards it to the one that does.
pub async fn produce_unredirected(
    ch: impl Into<sluice_client::Channel>,
    topic: &str,
    partition: u32,
    value: &str,
) -> Result<(), tonic::Status> {
    let message = sluice_proto::v1::Message { value: value.as_bytes().to_vec().into(), ..Default::default() };
    let request = sluice_proto::v1::ProduceRequest {
        topic: topic.into(),
        partition: Some(partition),
        messages: vec![message],
        ..Default::default()
    };
    sluice_proto::v1::producer_client::ProducerClient::new(ch.into()).produce(request).await.map(drop)
}
