//! `sluice.v1.Admin`: topic administration.

use std::sync::Arc;

use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_server::Admin;
use sluice_storage::{Durability, TopicConfig};
use tonic::{Request, Response, Status};

use super::validate;
use crate::config::BrokerConfig;
use crate::error::{Error, Result};
use crate::group::GroupRegistry;
use crate::name::TopicName;
use crate::topic::{Replicas, Topic, TopicRegistry};

use super::{acls, groups, schedules};
use crate::auth::access::{Guard, Permissions};
use crate::auth::methods::{Operation, ResourceKind};
use crate::schedule::ScheduleRegistry;

/// The Admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    started_ms: i64,
    registry: Arc<TopicRegistry>,
    groups: Arc<GroupRegistry>,
    schedules: Arc<ScheduleRegistry>,
    config: Arc<BrokerConfig>,
    perms: Arc<Permissions>,
}

impl AdminService {
    /// A service over `registry`, `groups` and `schedules`, with defaults and
    /// limits from `config`, its callers checked by `perms`.
    pub fn new(
        registry: Arc<TopicRegistry>,
        groups: Arc<GroupRegistry>,
        schedules: Arc<ScheduleRegistry>,
        config: Arc<BrokerConfig>,
        perms: Arc<Permissions>,
    ) -> Self {
        AdminService { started_ms: sluice_storage::now_ms(), registry, groups, schedules, config, perms }
    }

    fn guard<T>(&self, req: &Request<T>) -> Guard {
        self.perms.guard(req.extensions())
    }
}

fn durability_to_pb(d: Durability) -> pb::Durability {
    match d {
        Durability::Always => pb::Durability::Always,
        Durability::Interval => pb::Durability::Interval,
    }
}

/// Applies the non-zero fields of `c` to `s`, checking each.
fn apply_config(c: &pb::TopicConfig, s: &mut TopicConfig) -> Result<()> {
    if c.retention_ms != 0 {
        s.retention_ms = c.retention_ms;
    }
    if c.retention_bytes != 0 {
        s.retention_bytes = c.retention_bytes;
    }
    if c.segment_bytes != 0 {
        s.segment_bytes = c.segment_bytes;
    }
    if c.segment_ms != 0 {
        s.segment_ms = c.segment_ms;
    }
    if c.max_message_bytes != 0 {
        s.max_message_bytes = c.max_message_bytes;
    }
    match pb::Durability::try_from(c.durability) {
        Ok(pb::Durability::Unspecified) => {}
        Ok(pb::Durability::Always) => s.durability = Durability::Always,
        Ok(pb::Durability::Interval) => s.durability = Durability::Interval,
        Err(_) => {
            return Err(Error::invalid(
                "config.durability",
                format!("unknown durability {}; use ALWAYS or INTERVAL", c.durability),
            ))
        }
    }
    s.check().map_err(|e| {
        let field = match e.field {
            "segment_bytes" => "config.segment_bytes",
            "segment_ms" => "config.segment_ms",
            "max_message_bytes" => "config.max_message_bytes",
            _ => "config",
        };
        Error::invalid(field, e.rule)
    })
}

/// The proto view of a topic.
pub fn topic_info(t: &Topic, replication_factor: u32) -> pb::TopicInfo {
    let s = t.settings();
    pb::TopicInfo {
        name: t.name.clone(),
        partitions: t.partitions.len() as u32,
        config: Some(pb::TopicConfig {
            retention_ms: s.retention_ms,
            retention_bytes: s.retention_bytes,
            segment_bytes: s.segment_bytes,
            segment_ms: s.segment_ms,
            max_message_bytes: s.max_message_bytes,
            durability: durability_to_pb(s.durability) as i32,
        }),
        created_ms: t.created_ms,
        replication_factor,
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        req: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        self.guard(&req).require(&req.get_ref().name)?;
        let req = req.into_inner();
        let name = TopicName::parse("name", req.name.clone())?;
        if req.partitions == 0 || req.partitions > self.config.max_partitions {
            return Err(Error::invalid(
                "partitions",
                format!("must be 1..={} (max-partitions), got {}", self.config.max_partitions, req.partitions),
            )
            .into());
        }
        let mut settings = self.config.topic_defaults();
        if let Some(c) = &req.config {
            apply_config(c, &mut settings)?;
        }
        let replicas = match req.replication_factor {
            0 => Replicas::Default,
            n => Replicas::Factor(n),
        };
        let topic = self.registry.create(&name, req.partitions, replicas, settings).await?;
        let info = topic_info(&topic, self.registry.replication_factor(&topic.name));
        Ok(Response::new(pb::CreateTopicResponse { topic: Some(info) }))
    }

    async fn list_topics(
        &self,
        req: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let guard = self.guard(&req);
        let topics = self
            .registry
            .list()
            .iter()
            .filter(|t| guard.allows(ResourceKind::Topic, &t.name, Operation::Describe))
            .map(|t| topic_info(t, self.registry.replication_factor(&t.name)))
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        req: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.guard(&req).require(&req.get_ref().name)?;
        let topic = validate::topic(&self.registry, "name", &req.get_ref().name).await?;
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (i, p) in topic.partitions.iter().enumerate() {
            let snap = p.snapshot().await?;
            partitions.push(pb::PartitionInfo {
                partition: i as u32,
                earliest_offset: p.earliest(),
                latest_offset: p.latest(),
                bytes: snap.segments.iter().map(|s| s.bytes).sum(),
                segments: snap
                    .segments
                    .iter()
                    .map(|s| pb::SegmentInfo {
                        base_offset: s.base_offset,
                        end_offset: s.end_offset,
                        bytes: s.bytes,
                        first_timestamp_ms: s.first_timestamp_ms,
                        last_timestamp_ms: s.last_timestamp_ms,
                        sealed: s.sealed,
                    })
                    .collect(),
            });
        }
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(topic_info(&topic, self.registry.replication_factor(&topic.name))),
            partitions,
        }))
    }

    async fn update_topic(
        &self,
        req: Request<pb::UpdateTopicRequest>,
    ) -> Result<Response<pb::UpdateTopicResponse>, Status> {
        self.guard(&req).require(&req.get_ref().name)?;
        let req = req.into_inner();
        let config = req.config.ok_or_else(|| Error::invalid("config", "nothing to update; set at least one field"))?;
        let mut check = validate::topic(&self.registry, "name", &req.name).await?.settings();
        apply_config(&config, &mut check)?;
        let topic = self.registry.update(&req.name, |s| *s = check).await?;
        Ok(Response::new(pb::UpdateTopicResponse {
            topic: Some(topic_info(&topic, self.registry.replication_factor(&topic.name))),
        }))
    }

    async fn delete_topic(
        &self,
        req: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        self.guard(&req).require(&req.get_ref().name)?;
        validate::name("name", &req.get_ref().name)?;
        self.groups.delete_topic(&req.get_ref().name).await?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn get_broker(&self, req: Request<pb::GetBrokerRequest>) -> Result<Response<pb::BrokerInfo>, Status> {
        self.guard(&req).require("")?;
        Ok(Response::new(pb::BrokerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_ms: self.started_ms,
            uptime_ms: sluice_storage::now_ms() - self.started_ms,
            topics: self.registry.list().len() as u32,
            groups: self.groups.list().len() as u32,
        }))
    }

    async fn create_group(&self, req: Request<pb::CreateGroupRequest>) -> Result<Response<pb::GroupInfo>, Status> {
        let guard = self.guard(&req);
        guard.require(&req.get_ref().name)?;
        if let Some(c) = &req.get_ref().config {
            // A group reads its topic, and the broker writes its dead letters for it.
            guard.check(ResourceKind::Topic, &c.topic, Operation::Describe)?;
            if !c.dead_letter_topic.is_empty() {
                guard.check(ResourceKind::Topic, &c.dead_letter_topic, Operation::Produce)?;
            }
        }
        Ok(Response::new(groups::create(&self.registry, &self.groups, &self.config, req.into_inner()).await?))
    }

    async fn update_group(&self, req: Request<pb::UpdateGroupRequest>) -> Result<Response<pb::GroupInfo>, Status> {
        let guard = self.guard(&req);
        guard.require(&req.get_ref().name)?;
        if let Some(dead) = req.get_ref().config.as_ref().map(|c| &c.dead_letter_topic).filter(|d| !d.is_empty()) {
            guard.check(ResourceKind::Topic, dead, Operation::Produce)?;
        }
        Ok(Response::new(groups::update(&self.registry, &self.groups, &self.config, req.into_inner()).await?))
    }

    async fn delete_group(
        &self,
        req: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        self.guard(&req).require(&req.get_ref().name)?;
        validate::name("name", &req.get_ref().name)?;
        self.groups.delete(&req.get_ref().name).await?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let guard = self.guard(&req);
        let topic = &req.get_ref().topic;
        validate::optional_name("topic", topic)?;
        let mut out = Vec::new();
        for g in self.groups.list() {
            let visible = guard.allows(ResourceKind::Group, &g.name, Operation::Describe);
            if visible && (topic.is_empty() || &g.settings().topic == topic) {
                out.push(groups::describe(&self.registry, &g).await?);
            }
        }
        Ok(Response::new(pb::ListGroupsResponse { groups: out }))
    }

    async fn describe_group(&self, req: Request<pb::DescribeGroupRequest>) -> Result<Response<pb::GroupInfo>, Status> {
        self.guard(&req).require(&req.get_ref().name)?;
        let g = validate::group(&self.groups, "name", &req.get_ref().name).await?;
        Ok(Response::new(groups::describe(&self.registry, &g).await?))
    }

    async fn seek_group(&self, req: Request<pb::SeekGroupRequest>) -> Result<Response<pb::GroupInfo>, Status> {
        self.guard(&req).require(&req.get_ref().name)?;
        Ok(Response::new(groups::seek(&self.registry, &self.groups, req.into_inner()).await?))
    }

    async fn peek_dead_letters(
        &self,
        req: Request<pb::PeekDeadLettersRequest>,
    ) -> Result<Response<pb::PeekDeadLettersResponse>, Status> {
        let guard = self.guard(&req);
        guard.require(&req.get_ref().group)?;
        let group = validate::group(&self.groups, "group", &req.get_ref().group).await?;
        let dead = group.settings().dead_letter_topic;
        if !dead.is_empty() {
            guard.check(ResourceKind::Topic, &dead, Operation::Consume)?;
        }
        Ok(Response::new(groups::peek(&self.registry, &self.groups, req.into_inner()).await?))
    }

    async fn redrive_dead_letters(
        &self,
        req: Request<pb::RedriveDeadLettersRequest>,
    ) -> Result<Response<pb::RedriveDeadLettersResponse>, Status> {
        let guard = self.guard(&req);
        guard.require(&req.get_ref().group)?;
        let settings = validate::group(&self.groups, "group", &req.get_ref().group).await?.settings();
        if !settings.dead_letter_topic.is_empty() {
            guard.check(ResourceKind::Topic, &settings.dead_letter_topic, Operation::Consume)?;
        }
        let target = Some(&req.get_ref().target_topic).filter(|t| !t.is_empty()).unwrap_or(&settings.topic);
        guard.check(ResourceKind::Topic, target, Operation::Produce)?;
        Ok(Response::new(groups::redrive(&self.registry, &self.groups, req.into_inner()).await?))
    }

    async fn purge_dead_letters(
        &self,
        req: Request<pb::PurgeDeadLettersRequest>,
    ) -> Result<Response<pb::PurgeDeadLettersResponse>, Status> {
        self.guard(&req).require(&req.get_ref().group)?;
        Ok(Response::new(groups::purge(&self.registry, &self.groups, req.into_inner()).await?))
    }

    async fn create_schedule(
        &self,
        req: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::ScheduleInfo>, Status> {
        let guard = self.guard(&req);
        guard.require(&req.get_ref().name)?;
        // Its ticks are produced in the creator's name.
        let topic = req.get_ref().config.as_ref().map_or("", |c| c.topic.as_str());
        guard.check(ResourceKind::Topic, topic, Operation::Produce)?;
        validate::name("name", &req.get_ref().name)?;
        Ok(Response::new(schedules::create(&self.schedules, req.into_inner()).await?))
    }

    async fn list_schedules(
        &self,
        req: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let guard = self.guard(&req);
        let visible = |name: &str| guard.allows(ResourceKind::Schedule, name, Operation::Describe);
        Ok(Response::new(schedules::list(&self.schedules, visible)))
    }

    async fn describe_schedule(
        &self,
        req: Request<pb::DescribeScheduleRequest>,
    ) -> Result<Response<pb::ScheduleInfo>, Status> {
        self.guard(&req).require(&req.get_ref().name)?;
        validate::name("name", &req.get_ref().name)?;
        Ok(Response::new(schedules::describe(&self.schedules, &req.get_ref().name)?))
    }

    async fn delete_schedule(
        &self,
        req: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        self.guard(&req).require(&req.get_ref().name)?;
        validate::name("name", &req.get_ref().name)?;
        self.schedules.delete(&req.get_ref().name).await?;
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }

    async fn add_acl(&self, req: Request<pb::AddAclRequest>) -> Result<Response<pb::AddAclResponse>, Status> {
        let guard = self.guard(&req);
        guard.require("")?;
        let rule = acls::rule_of(req.get_ref().rule.as_ref())?;
        let (entry, created) = self.perms.rules().add(rule).await?;
        let principal = &guard.caller().principal.name;
        tracing::info!(target: "sluice::audit", %principal, rule = entry.id, what = %entry.rule, created, "permission rule added");
        Ok(Response::new(pb::AddAclResponse { rule: Some(acls::entry_to_pb(&entry)), created }))
    }

    async fn list_acls(&self, req: Request<pb::ListAclsRequest>) -> Result<Response<pb::ListAclsResponse>, Status> {
        self.guard(&req).require("")?;
        let subject = acls::subject_filter(&req.get_ref().subject)?;
        let rules = self
            .perms
            .rules()
            .list()
            .await
            .iter()
            .filter(|e| subject.as_ref().is_none_or(|s| e.rule.subject == *s))
            .map(acls::entry_to_pb)
            .collect();
        Ok(Response::new(pb::ListAclsResponse { rules }))
    }

    async fn remove_acl(&self, req: Request<pb::RemoveAclRequest>) -> Result<Response<pb::RemoveAclResponse>, Status> {
        let guard = self.guard(&req);
        guard.require("")?;
        self.perms.rules().remove(req.get_ref().id).await?;
        let principal = &guard.caller().principal.name;
        tracing::info!(target: "sluice::audit", %principal, rule = req.get_ref().id, "permission rule removed");
        Ok(Response::new(pb::RemoveAclResponse {}))
    }
}
