//! Raft traffic between brokers: one internal gRPC service
//! (`sluice.internal.v1.Raft`, on the cluster listener) that carries every
//! group's RPCs as encoded openraft messages tagged with the group id, and the
//! client side openraft calls through. One tonic channel per peer address is
//! shared by every group that talks to that peer.
//!
//! A peer that cannot be reached (connection refused, timeout, a broker that
//! does not run the group) is reported to openraft as `Unreachable`, which
//! makes it back off before retrying; nothing here retries on its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, OptionalSend, Raft, RaftNetworkFactory, RaftNetworkV2, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_proto::internal::v1 as pb;
use sluice_proto::internal::v1::raft_client::RaftClient;
use sluice_storage::raft::GroupId;
use sluice_storage::{PartitionId, TopicId};
use tonic::transport::{Channel, Endpoint};

use crate::codec::{decode, encode, Format, GroupWire, Postcard};
use crate::fence::Fence;
use crate::meta::{MetaStateMachine, MetaTypes};
use crate::shard::purge::{purge_here, PurgeAnswer, PurgeRequest};
use crate::shard::snapshot::{serve_read, ReadBatches};
use crate::shard::{ShardMachine, ShardTypes};

/// What every group type of this crate has in common on the network: broker
/// ids as node ids, plain addresses as nodes, and its own wire format.
pub(crate) trait NetTypes: GroupWire + RaftTypeConfig<NodeId = u64, Node = BasicNode> {}

impl<C: GroupWire + RaftTypeConfig<NodeId = u64, Node = BasicNode>> NetTypes for C {}

/// How long an append-entries call may take, at least.
const APPEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest Raft message a broker accepts: a shard's append carries up to
/// `max_payload_entries` record batches, each as large as a produce request.
pub(crate) const MAX_MESSAGE_BYTES: usize = 512 << 20;

/// Makes the channel of an endpoint: plain TCP by default; the broker
/// supplies one that speaks mutual TLS ([`Peers::with_connect`]), so this
/// crate knows nothing of certificates.
pub type Connect = Arc<dyn Fn(&Endpoint) -> Channel + Send + Sync>;

/// Connections to peers, by address; cloning shares them. Every
/// broker-to-broker call goes through one of these channels: Raft RPCs of
/// every group, and appends a broker forwards to a partition's leader.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    connect: Option<Connect>,
}

impl Peers {
    /// Peers reached through channels `connect` makes (mutual TLS).
    pub fn with_connect(connect: Connect) -> Peers {
        Peers { channels: Arc::default(), connect: Some(connect) }
    }

    /// The channel to `addr` (`host:port`), made lazily: connecting happens on
    /// first use, and a failed connection is retried by the next call.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("peer address {addr}: {e}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10));
        let channel = match &self.connect {
            Some(connect) => connect(&endpoint),
            None => endpoint.connect_lazy(),
        };
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// What openraft uses to make a client per peer, for one group.
pub(crate) struct GroupNetwork<C> {
    peers: Peers,
    group: GroupId,
    /// Where this broker reaches each peer (its `--peers`). Addresses are
    /// configuration, not replicated state: each broker may reach a peer
    /// differently (a test's fault proxy per link, a NAT), so the address in
    /// the membership is only the fallback for an id not configured here.
    addresses: Arc<BTreeMap<u64, String>>,
    types: std::marker::PhantomData<fn() -> C>,
}

impl<C> Clone for GroupNetwork<C> {
    fn clone(&self) -> Self {
        GroupNetwork {
            peers: self.peers.clone(),
            group: self.group,
            addresses: self.addresses.clone(),
            types: std::marker::PhantomData,
        }
    }
}

impl<C> GroupNetwork<C> {
    /// Clients for `group` over `peers`' connections, to the peers at `addresses`.
    pub(crate) fn new(peers: Peers, group: GroupId, addresses: BTreeMap<u64, String>) -> Self {
        GroupNetwork { peers, group, addresses: Arc::new(addresses), types: std::marker::PhantomData }
    }
}

/// One peer of one group.
pub(crate) struct PeerClient<C> {
    addr: String,
    channel: Result<Channel, String>,
    group: GroupId,
    types: std::marker::PhantomData<fn() -> C>,
}

impl<C: NetTypes> RaftNetworkFactory<C> for GroupNetwork<C> {
    type Network = PeerClient<C>;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient<C> {
        let addr = self.addresses.get(&target).cloned().unwrap_or_else(|| node.addr.clone());
        PeerClient { channel: self.peers.channel(&addr), addr, group: self.group, types: std::marker::PhantomData }
    }
}

impl<C: NetTypes> PeerClient<C> {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        rpc: pb::RaftRpc,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, String> {
        let channel = self.channel.clone()?;
        let payload = C::Format::encode(request).map_err(|e| e.to_string())?;
        let mut req =
            tonic::Request::new(pb::RaftRequest { group: self.group.0, rpc: rpc as i32, payload: payload.into() });
        req.set_timeout(timeout);
        let reply = RaftClient::new(channel)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .call(req)
            .await
            .map_err(|s| format!("{} from {}: {}", s.code(), self.addr, s.message()))?
            .into_inner();
        if !reply.error.is_empty() {
            tracing::debug!(?rpc, peer = %self.addr, error = %reply.error, "raft rpc refused");
            return Err(format!("{} answered: {}", self.addr, reply.error));
        }
        C::Format::decode(&reply.payload, "raft reply").map_err(|e| e.to_string())
    }
}

fn unreachable<C: RaftTypeConfig>(e: String) -> RPCError<C> {
    RPCError::Unreachable(Unreachable::from_string(e))
}

/// A snapshot on the wire: the vote it is sent under, its metadata and data.
#[derive(Serialize, serde::Deserialize)]
#[serde(bound = "")]
struct SnapshotMessage<C: RaftTypeConfig> {
    vote: VoteOf<C>,
    meta: openraft::alias::SnapshotMetaOf<C>,
    data: Vec<u8>,
}

impl<C: NetTypes> RaftNetworkV2<C> for PeerClient<C> {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        // openraft's deadline is one heartbeat interval, which an append carrying megabytes
        // of record batches to a busy follower can exceed; retrying it from scratch would
        // never finish. A dead peer still costs only this long per attempt.
        let timeout = option.hard_ttl().max(APPEND_TIMEOUT);
        self.call(pb::RaftRpc::AppendEntries, &rpc, timeout).await.map_err(unreachable)
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call(pb::RaftRpc::Vote, &rpc, option.hard_ttl()).await.map_err(unreachable)
    }

    async fn pre_vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call(pb::RaftRpc::PreVote, &rpc, option.hard_ttl()).await.map_err(unreachable)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Vec<u8>>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let message = SnapshotMessage::<C> { vote, meta: snapshot.meta, data: snapshot.snapshot };
        self.call(pb::RaftRpc::FullSnapshot, &message, option.hard_ttl())
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::from_string(e)))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        self.call(pb::RaftRpc::TransferLeader, &req, option.hard_ttl()).await.map_err(unreachable)
    }
}

/// The receiving side: hands each RPC to the local Raft of its group (the
/// metadata group, or a shard this broker holds a replica of). Clones share
/// the set of shards.
#[derive(Clone)]
pub struct RaftService {
    meta: Raft<MetaTypes, MetaStateMachine>,
    /// The metadata replica held nothing on disk at start.
    meta_started_empty: bool,
    catalog: MetaStateMachine,
    fence: Fence,
    shards: Arc<std::sync::RwLock<HashMap<u64, ServedShard>>>,
}

/// A shard this broker holds a replica of: its Raft peer, its state machine
/// (which serves record copies for snapshot installs), and whether it held
/// nothing on disk at start.
type ServedShard = (Raft<ShardTypes, ShardMachine>, ShardMachine, bool);

impl RaftService {
    /// Serves the metadata group's peer `meta` (with whether it started
    /// empty on disk; its state machine is `catalog`); the groups `fence`
    /// holds neither vote nor campaign.
    pub(crate) fn new(
        (meta, meta_started_empty): (Raft<MetaTypes, MetaStateMachine>, bool),
        catalog: MetaStateMachine,
        fence: Fence,
    ) -> Self {
        let elections = meta.clone();
        fence.govern(crate::meta::META_GROUP, move |on| elections.runtime_config().elect(on));
        RaftService { meta, meta_started_empty, catalog, fence, shards: Default::default() }
    }

    /// Serves `served` (this broker's peer of shard `group`) from now on;
    /// its elections follow the fence.
    pub(crate) fn add_shard(&self, group: GroupId, served: ServedShard) {
        let elections = served.0.clone();
        self.fence.govern(group, move |on| elections.runtime_config().elect(on));
        self.shards.write().unwrap_or_else(|e| e.into_inner()).insert(group.0, served);
    }

    /// Stops serving shard `group`.
    pub(crate) fn remove_shard(&self, group: GroupId) {
        self.fence.release(group);
        self.shards.write().unwrap_or_else(|e| e.into_inner()).remove(&group.0);
    }

    /// The tonic service to add to the cluster listener.
    pub fn into_server(self) -> pb::raft_server::RaftServer<Self> {
        pb::raft_server::RaftServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    async fn dispatch(&self, request: pb::RaftRequest) -> Result<Vec<u8>, String> {
        let group = GroupId(request.group);
        // A fenced replica may neither vote nor lead: a leadership handed to it would start
        // an election on a vote it may have granted to another before it lost its data.
        let refused = [pb::RaftRpc::Vote, pb::RaftRpc::PreVote, pb::RaftRpc::TransferLeader];
        if refused.iter().any(|r| *r as i32 == request.rpc) && self.fence.is_fenced(group) {
            return Err(format!(
                "group {}: this broker lost its data and neither votes nor leads until it is added \
                 back (sluice cluster replace)",
                group.0
            ));
        }
        if request.rpc == pb::RaftRpc::Admit as i32 {
            self.fence.lift(group).await.map_err(|e| e.to_string())?;
            return Postcard::encode(&()).map_err(|e| e.to_string());
        }
        if request.group == crate::meta::META_GROUP.0 {
            return serve(&self.meta, request.rpc, &request.payload).await;
        }
        let shard = self.shards.read().unwrap_or_else(|e| e.into_inner()).get(&request.group).cloned();
        match shard {
            Some((_, machine, _)) if request.rpc == pb::RaftRpc::ReadBatches as i32 => {
                let read: ReadBatches =
                    Postcard::decode(&request.payload, "read-batches request").map_err(|e| e.to_string())?;
                let partition = PartitionId::new(TopicId(read.topic), read.partition);
                let offsets = machine.offsets_of(partition);
                let batches = serve_read(machine.store().clone(), read, offsets).await?;
                Postcard::encode(&batches).map_err(|e| e.to_string())
            }
            Some((raft, machine, _)) if request.rpc == pb::RaftRpc::PurgePartition as i32 => {
                let purge: PurgeRequest =
                    Postcard::decode(&request.payload, "purge request").map_err(|e| e.to_string())?;
                let answer = PurgeAnswer::from(purge_here(&raft, &machine, purge.id()).await);
                Postcard::encode(&answer).map_err(|e| e.to_string())
            }
            Some((raft, _, _)) => serve(&raft, request.rpc, &request.payload).await,
            None => Err(format!("this broker runs no replication group {}", request.group)),
        }
    }
}

/// Decodes one RPC for `raft`, runs it, and encodes the answer.
async fn serve<C, SM>(raft: &Raft<C, SM>, rpc: i32, payload: &[u8]) -> Result<Vec<u8>, String>
where
    C: NetTypes,
    SM: RaftStateMachine<C, SnapshotData = Vec<u8>>,
{
    let reply = match pb::RaftRpc::try_from(rpc) {
        Ok(pb::RaftRpc::AppendEntries) => {
            let rpc = C::Format::decode(payload, "append-entries request").map_err(|e| e.to_string())?;
            C::Format::encode(&raft.append_entries(rpc).await.map_err(|e| e.to_string())?)
        }
        Ok(pb::RaftRpc::Vote) => {
            let rpc = C::Format::decode(payload, "vote request").map_err(|e| e.to_string())?;
            C::Format::encode(&raft.vote(rpc).await.map_err(|e| e.to_string())?)
        }
        Ok(pb::RaftRpc::PreVote) => {
            let rpc = C::Format::decode(payload, "pre-vote request").map_err(|e| e.to_string())?;
            C::Format::encode(&raft.pre_vote(rpc).await.map_err(|e| e.to_string())?)
        }
        Ok(pb::RaftRpc::FullSnapshot) => {
            let m: SnapshotMessage<C> = C::Format::decode(payload, "snapshot").map_err(|e| e.to_string())?;
            let snapshot = SnapshotOf::<C, Vec<u8>> { meta: m.meta, snapshot: m.data };
            C::Format::encode(&raft.install_full_snapshot(m.vote, snapshot).await.map_err(|e| e.to_string())?)
        }
        Ok(pb::RaftRpc::TransferLeader) => {
            let req = C::Format::decode(payload, "transfer-leader request").map_err(|e| e.to_string())?;
            C::Format::encode(&raft.handle_transfer_leader(req).await.map_err(|e| e.to_string())?)
        }
        Ok(pb::RaftRpc::ReplaceReplica) => {
            let step = Postcard::decode(payload, "replace step").map_err(|e| e.to_string())?;
            Postcard::encode(&crate::membership::replace_step(raft, step).await)
        }
        Ok(pb::RaftRpc::Unspecified | pb::RaftRpc::ReadBatches | pb::RaftRpc::Admit | pb::RaftRpc::PurgePartition)
        | Err(_) => return Err(format!("unknown raft rpc {rpc} for this group")),
    };
    reply.map_err(|e| e.to_string())
}

impl RaftService {
    /// Which of this broker's replicas are empty, and which fenced, by group.
    fn standing(&self) -> Vec<pb::GroupStanding> {
        let meta = crate::meta::META_GROUP;
        let mut groups = vec![pb::GroupStanding {
            group: meta.0,
            empty: crate::membership::is_empty(&self.meta, self.meta_started_empty),
            fenced: self.fence.is_fenced(meta),
        }];
        let shards = self.shards.read().unwrap_or_else(|e| e.into_inner());
        for (group, (raft, _, started_empty)) in shards.iter() {
            groups.push(pb::GroupStanding {
                group: *group,
                empty: crate::membership::is_empty(raft, *started_empty),
                fenced: self.fence.is_fenced(GroupId(*group)),
            });
        }
        groups.sort_by_key(|g| g.group);
        groups
    }

    async fn propose(&self, request: pb::ProposeRequest) -> pb::ProposeReply {
        let refused = |error: String, leader: u64| pb::ProposeReply { response: Default::default(), error, leader };
        let command = match decode(&request.command, "proposed command") {
            Ok(c) => c,
            Err(e) => return refused(e.to_string(), 0),
        };
        match crate::node::propose_at(&self.meta, command).await {
            Ok(response) => match encode(&response) {
                Ok(bytes) => pb::ProposeReply { response: bytes.into(), error: String::new(), leader: 0 },
                Err(e) => refused(e.to_string(), 0),
            },
            Err(e @ crate::ProposeError::NotLeader { leader, .. }) => refused(e.to_string(), leader.unwrap_or(0)),
            Err(e) => refused(e.to_string(), 0),
        }
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn propose(
        &self,
        request: tonic::Request<pb::ProposeRequest>,
    ) -> Result<tonic::Response<pb::ProposeReply>, tonic::Status> {
        Ok(tonic::Response::new(RaftService::propose(self, request.into_inner()).await))
    }

    async fn read_index(
        &self,
        _request: tonic::Request<pb::ReadIndexRequest>,
    ) -> Result<tonic::Response<pb::ReadIndexReply>, tonic::Status> {
        let reply = match crate::node::read_index_at(&self.meta).await {
            Ok(index) => pb::ReadIndexReply { index, error: String::new(), leader: 0 },
            Err(e @ crate::ProposeError::NotLeader { leader, .. }) => {
                pb::ReadIndexReply { index: 0, error: e.to_string(), leader: leader.unwrap_or(0) }
            }
            Err(e) => pb::ReadIndexReply { index: 0, error: e.to_string(), leader: 0 },
        };
        Ok(tonic::Response::new(reply))
    }

    async fn standing(
        &self,
        request: tonic::Request<pb::StandingRequest>,
    ) -> Result<tonic::Response<pb::StandingReply>, tonic::Status> {
        let metrics = self.meta.metrics().borrow_watched().clone();
        let pb::StandingRequest { asking, configured } = request.into_inner();
        let asking_registered = asking != 0 && self.catalog.broker_endpoint(asking).is_some();
        let voters: std::collections::BTreeSet<u64> = metrics.membership_config.membership().voter_ids().collect();
        let configured_as_voters =
            !configured.is_empty() && configured.into_iter().collect::<std::collections::BTreeSet<_>>() == voters;
        Ok(tonic::Response::new(pb::StandingReply {
            broker: metrics.id,
            groups: self.standing(),
            asking_registered,
            configured_as_voters,
        }))
    }

    async fn call(
        &self,
        request: tonic::Request<pb::RaftRequest>,
    ) -> Result<tonic::Response<pb::RaftReply>, tonic::Status> {
        let reply = match self.dispatch(request.into_inner()).await {
            Ok(payload) => pb::RaftReply { payload: payload.into(), error: String::new() },
            Err(error) => pb::RaftReply { payload: Default::default(), error },
        };
        Ok(tonic::Response::new(reply))
    }
}
