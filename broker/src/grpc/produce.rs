//! `sluice.v1.Producer`: unary and streaming produce.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use sluice_proto::v1 as pb;
use sluice_proto::v1::producer_server::Producer;
use sluice_storage::ProducerSeq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::validate;
use crate::config::BrokerConfig;
use crate::error::{Error, Result};
use crate::topic::TopicRegistry;

/// How long a produce request waits for room in the in-flight byte budget
/// before it is refused: long enough to ride out a burst, short enough that
/// the producer's own backoff takes over under sustained overload.
const BUDGET_WAIT: Duration = Duration::from_millis(100);

/// The Producer service.
#[derive(Debug, Clone)]
pub struct ProduceService {
    registry: Arc<TopicRegistry>,
    config: Arc<BrokerConfig>,
    stop: CancellationToken,
    /// One permit per message byte being appended, shared by every producer.
    budget: Arc<Semaphore>,
}

impl ProduceService {
    /// A service over `registry`; streams end when `stop` fires.
    pub fn new(registry: Arc<TopicRegistry>, config: Arc<BrokerConfig>, stop: CancellationToken) -> Self {
        let budget = Arc::new(Semaphore::new(config.max_inflight_produce_bytes));
        ProduceService { registry, config, stop, budget }
    }

    /// Holds `bytes` of the in-flight budget (all of it for a request larger
    /// than the budget), or refuses when none frees up within `BUDGET_WAIT`.
    async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit> {
        let limit = self.config.max_inflight_produce_bytes;
        let permits = u32::try_from(bytes.clamp(1, limit)).unwrap_or(u32::MAX);
        // The common case, room at once, sets no timer.
        if let Ok(permit) = self.budget.clone().try_acquire_many_owned(permits) {
            return Ok(permit);
        }
        match tokio::time::timeout(BUDGET_WAIT, self.budget.clone().acquire_many_owned(permits)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => {
                metrics::counter!(crate::metrics::PRODUCE_THROTTLED).increment(1);
                Err(Error::ProduceBudgetExhausted { limit })
            }
        }
    }

    /// Validates, routes to partitions, appends, answers per message, and counts it.
    async fn produce(&self, req: pb::ProduceRequest) -> Result<pb::ProduceResponse> {
        let started = std::time::Instant::now();
        validate::name("topic", &req.topic)?;
        let bytes: usize = req.messages.iter().map(validate::message_size).sum();
        let (topic, n) = (req.topic.clone(), req.messages.len());
        let _held = self.reserve(bytes).await?;
        let resp = self.append(req).await?;
        if !resp.duplicate {
            metrics::counter!(crate::metrics::PRODUCE_MESSAGES, "topic" => topic.clone()).increment(n as u64);
            metrics::counter!(crate::metrics::PRODUCE_BYTES, "topic" => topic).increment(bytes as u64);
        }
        metrics::histogram!(crate::metrics::PRODUCE_LATENCY).record(started.elapsed().as_secs_f64());
        Ok(resp)
    }

    async fn append(&self, req: pb::ProduceRequest) -> Result<pb::ProduceResponse> {
        let topic = self.registry.get(&req.topic)?;
        validate::batch(&req.messages, self.config.max_batch_messages, topic.settings().max_message_bytes)?;
        let n = req.messages.len();
        let producer = match req.producer_id {
            0 => None,
            producer_id => {
                if req.partition.is_none() {
                    return Err(Error::invalid(
                        "partition",
                        "idempotent produce (producer_id set) must name the partition",
                    ));
                }
                Some(ProducerSeq { producer_id, sequence: req.sequence })
            }
        };
        if let Some(p) = req.partition {
            let handle = topic.partition(p)?;
            let r = handle.append(req.messages, producer).await?;
            return Ok(pb::ProduceResponse {
                partitions: vec![p; n],
                offsets: (r.base_offset..r.base_offset + n as u64).collect(),
                duplicate: r.duplicate,
            });
        }
        // Route each message: by key hash, or all keyless ones to one round-robin partition.
        let count = topic.partitions.len() as u32;
        let keyless = topic.next_round_robin();
        let targets: Vec<u32> = req
            .messages
            .iter()
            .map(|m| m.key.as_deref().map_or(keyless, |k| sluice_proto::partition_for_key(k, count)))
            .collect();
        if targets.iter().all(|&t| t == targets[0]) {
            let handle = topic.partition(targets[0])?;
            let r = handle.append(req.messages, None).await?;
            return Ok(pb::ProduceResponse {
                partitions: targets,
                offsets: (r.base_offset..r.base_offset + n as u64).collect(),
                duplicate: false,
            });
        }
        let mut groups: std::collections::BTreeMap<u32, (Vec<usize>, Vec<pb::Message>)> = Default::default();
        for (i, (m, t)) in req.messages.into_iter().zip(&targets).enumerate() {
            let g = groups.entry(*t).or_default();
            g.0.push(i);
            g.1.push(m);
        }
        let appends: FuturesUnordered<_> = groups
            .into_iter()
            .map(|(p, (indexes, msgs))| {
                let handle = topic.partition(p).cloned();
                async move { Ok::<_, Error>((indexes, handle?.append(msgs, None).await?)) }
            })
            .collect();
        let results: Vec<_> = appends.collect().await;
        let mut offsets = vec![0; n];
        for r in results {
            let (indexes, appended) = r?;
            for (k, i) in indexes.into_iter().enumerate() {
                offsets[i] = appended.base_offset + k as u64;
            }
        }
        Ok(pb::ProduceResponse { partitions: targets, offsets, duplicate: false })
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::ProduceStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Producer for ProduceService {
    async fn produce(&self, req: Request<pb::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        Ok(Response::new(ProduceService::produce(self, req.into_inner()).await?))
    }

    type ProduceStreamStream = ResponseStream;

    async fn produce_stream(
        &self,
        req: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
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
                            let service = service.clone();
                            pending.push(async move {
                                let request_id = r.request_id;
                                match service.produce(r).await {
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
