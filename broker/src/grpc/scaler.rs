//! KEDA's `externalscaler.ExternalScaler` on the broker's gRPC port: a
//! serverless platform scales a group's consumers (from zero) on its backlog
//! without a separate collector.
//!
//! Scaler metadata: `group` (required); `metric`: `backlog` (default, messages not
//! yet acked) or `oldestUnackedAgeSeconds`; `target` (per replica, default 100);
//! `activation` (active above this, default 0).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use sluice_proto::externalscaler as pb;
use sluice_proto::externalscaler::external_scaler_server::ExternalScaler;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::auth::access::Permissions;
use crate::error::Error;
use crate::group::GroupRegistry;

/// The External Scaler service.
#[derive(Debug, Clone)]
pub struct ScalerService {
    groups: Arc<GroupRegistry>,
    stop: CancellationToken,
    perms: Arc<Permissions>,
}

impl ScalerService {
    /// A scaler over `groups`, its callers checked by `perms`; push streams
    /// end when `stop` fires.
    pub fn new(groups: Arc<GroupRegistry>, stop: CancellationToken, perms: Arc<Permissions>) -> Self {
        ScalerService { groups, stop, perms }
    }

    /// The query `r` of request `req`, if its caller may describe the group.
    fn query<T>(&self, req: &Request<T>, r: &pb::ScaledObjectRef) -> Result<Query, Status> {
        let q = Query::parse(r)?;
        self.perms.guard(req.extensions()).require(&q.group)?;
        Ok(q)
    }
}

struct Query {
    group: String,
    age: bool,
    target: i64,
    activation: i64,
}

impl Query {
    fn parse(r: &pb::ScaledObjectRef) -> Result<Query, Status> {
        let m = &r.scaler_metadata;
        let group = m
            .get("group")
            .cloned()
            .ok_or_else(|| Error::invalid("scalerMetadata.group", "name the consumer group to scale on"))?;
        super::validate::name("scalerMetadata.group", &group)?;
        let number = |key: &'static str, default: i64| -> Result<i64, Status> {
            match m.get(key) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| Error::invalid(key, format!("`{v}` is not a whole number")).into()),
            }
        };
        let age = match m.get("metric").map(String::as_str) {
            None | Some("backlog") => false,
            Some("oldestUnackedAgeSeconds") => true,
            Some(other) => {
                return Err(Error::invalid(
                    "scalerMetadata.metric",
                    format!("`{other}`: use backlog or oldestUnackedAgeSeconds"),
                )
                .into())
            }
        };
        Ok(Query { group, age, target: number("target", 100)?.max(1), activation: number("activation", 0)? })
    }

    fn metric_name(&self) -> String {
        format!("sluice-{}-{}", self.group, if self.age { "oldest-unacked-age-seconds" } else { "backlog" })
    }

    async fn value(&self, groups: &GroupRegistry) -> Result<i64, Status> {
        let info = crate::group::report(&*groups.get_or_await(&self.group).await?).await?;
        Ok(if self.age { info.oldest_unacked_age_ms / 1000 } else { info.backlog_messages as i64 })
    }
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<pb::IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for ScalerService {
    async fn is_active(&self, req: Request<pb::ScaledObjectRef>) -> Result<Response<pb::IsActiveResponse>, Status> {
        let q = self.query(&req, req.get_ref())?;
        Ok(Response::new(pb::IsActiveResponse { result: q.value(&self.groups).await? > q.activation }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        req: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let q = self.query(&req, req.get_ref())?;
        let (groups, stop) = (self.groups.clone(), self.stop.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let active = match q.value(&groups).await {
                    Ok(v) => v > q.activation,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if last != Some(active) && tx.send(Ok(pb::IsActiveResponse { result: active })).await.is_err() {
                    return;
                }
                last = Some(active);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn get_metric_spec(
        &self,
        req: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        let q = self.query(&req, req.get_ref())?;
        self.groups.get_or_await(&q.group).await?;
        let spec =
            pb::MetricSpec { metric_name: q.metric_name(), target_size: q.target, target_size_float: q.target as f64 };
        Ok(Response::new(pb::GetMetricSpecResponse { metric_specs: vec![spec] }))
    }

    async fn get_metrics(
        &self,
        req: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let q = self.query(&req, &req.get_ref().scaled_object_ref.clone().unwrap_or_default())?;
        let v = q.value(&self.groups).await?;
        let value = pb::MetricValue { metric_name: q.metric_name(), metric_value: v, metric_value_float: v as f64 };
        Ok(Response::new(pb::GetMetricsResponse { metric_values: vec![value] }))
    }
}
