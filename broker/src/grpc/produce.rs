//! `sluice.v1.Producer`: unary and streaming produce. Translation only: the
//! budget, limits, routing and appends are `topic::produce::Producer`'s.

use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use sluice_proto::v1 as pb;
use sluice_proto::v1::producer_server::Producer;
use sluice_storage::ProducerSeq;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::access::{Guard, Permissions};
use crate::error::Result;
use crate::name::TopicName;
use crate::partition::forward::{FORWARDED, REDIRECT};
use crate::topic::produce::{ProduceBatch, Producer as ProducePath};

/// The Producer service.
#[derive(Debug, Clone)]
pub struct ProduceService {
    producer: ProducePath,
    stop: CancellationToken,
    perms: Arc<Permissions>,
}

impl ProduceService {
    /// A service over the shared produce path, its callers checked by
    /// `perms`; streams end when `stop` fires.
    pub fn new(producer: ProducePath, stop: CancellationToken, perms: Arc<Permissions>) -> Self {
        ProduceService { producer, stop, perms }
    }

    /// Translates a request into a batch for the produce path, and its
    /// answer back. `forward`: whether a cluster may forward it to a
    /// partition's leader elsewhere (see [`may_forward`]).
    async fn produce(&self, guard: &Guard, req: pb::ProduceRequest, forward: bool) -> Result<pb::ProduceResponse> {
        guard.require(&req.topic)?;
        let topic = TopicName::parse("topic", req.topic)?;
        let producer =
            (req.producer_id != 0).then_some(ProducerSeq { producer_id: req.producer_id, sequence: req.sequence });
        let batch = ProduceBatch { topic, partition: req.partition, messages: req.messages, producer, forward };
        let produced = self.producer.produce(batch).await?;
        Ok(pb::ProduceResponse {
            partitions: produced.partitions,
            offsets: produced.offsets,
            duplicate: produced.duplicate,
        })
    }
}

/// Whether a produce with this request metadata may be forwarded to a
/// partition's leader: not when the client follows `not_leader` itself
/// (`sluice-redirect`), nor when a broker forwarded it already.
fn may_forward(metadata: &tonic::metadata::MetadataMap) -> bool {
    !metadata.contains_key(REDIRECT) && !metadata.contains_key(FORWARDED)
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::ProduceStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Producer for ProduceService {
    async fn produce(&self, req: Request<pb::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        let forward = may_forward(req.metadata());
        let guard = self.perms.guard(req.extensions());
        Ok(Response::new(ProduceService::produce(self, &guard, req.into_inner(), forward).await?))
    }

    type ProduceStreamStream = ResponseStream;

    async fn produce_stream(
        &self,
        req: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let forward = may_forward(req.metadata());
        let guard = self.perms.guard(req.extensions());
        let mut inbound = req.into_inner();
        let service = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            let _open = crate::metrics::StreamGauge::open();
            let mut pending = FuturesUnordered::new();
            loop {
                tokio::select! {
                    biased;
                    _ = service.stop.cancelled() => break,
                    Some(done) = pending.next(), if !pending.is_empty() => {
                        if tx.send(Ok(done)).await.is_err() {
                            return;
                        }
                    }
                    msg = inbound.next(), if pending.len() < 1024 => match msg {
                        Some(Ok(r)) => {
                            let (service, guard) = (service.clone(), guard.clone());
                            pending.push(async move {
                                let request_id = r.request_id;
                                match service.produce(&guard, r, forward).await {
                                    Ok(result) => pb::ProduceStreamResponse { request_id, result: Some(result), ..Default::default() },
                                    Err(e) => {
                                        let error_reason = super::status::reason(&e).to_owned();
                                        let s = Status::from(e);
                                        pb::ProduceStreamResponse { request_id, result: None, error_code: s.code() as i32, error_message: s.message().to_owned(), error_reason }
                                    }
                                }
                            });
                        }
                        Some(Err(_)) | None => break,
                    },
                }
            }
            // Answer what was accepted before the stream ended.
            while let Some(done) = pending.next().await {
                if tx.send(Ok(done)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
