//! `Admin`: create, list, describe, update and delete topics.

use crate::connect::Channel;
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;

use crate::error::{Error, Result};

/// Topic administration.
#[derive(Debug, Clone)]
pub struct Admin {
    client: AdminClient<Channel>,
    channel: Channel,
}

impl Admin {
    /// An admin client on `channel`.
    pub fn new(channel: impl Into<Channel>) -> Self {
        let channel: Channel = channel.into();
        Admin { client: AdminClient::new(channel.clone()), channel }
    }

    /// Creates a topic; `config` fields left at zero take the broker's defaults.
    pub async fn create_topic(&self, name: &str, partitions: u32, config: pb::TopicConfig) -> Result<pb::TopicInfo> {
        self.create_replicated_topic(name, partitions, 0, config).await
    }

    /// Creates a topic held by `replication_factor` brokers (0: the
    /// broker's default, three in a cluster of three or more); in a cluster
    /// of more brokers, a smaller set trades durability for less traffic
    /// and disk.
    pub async fn create_replicated_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        config: pb::TopicConfig,
    ) -> Result<pb::TopicInfo> {
        let request =
            pb::CreateTopicRequest { name: name.into(), partitions, config: Some(config), replication_factor };
        let r = self.client.clone().create_topic(request).await?;
        Ok(r.into_inner().topic.unwrap_or_default())
    }

    /// Every topic.
    pub async fn list_topics(&self) -> Result<Vec<pb::TopicInfo>> {
        Ok(self.client.clone().list_topics(pb::ListTopicsRequest {}).await?.into_inner().topics)
    }

    /// A topic with its partitions' offsets, sizes and segments. In a
    /// cluster, a broker that holds no replica of the topic (a smaller
    /// replication factor) answers `not_leader` naming one that does: asked there.
    pub async fn describe_topic(&self, name: &str) -> Result<pb::DescribeTopicResponse> {
        let request = pb::DescribeTopicRequest { name: name.into() };
        self.where_held(|mut c| {
            let request = request.clone();
            async move { c.describe_topic(request).await }
        })
        .await
    }

    /// `call`, made again at the broker a `not_leader` answer names (at most
    /// three times): a broker outside a placed topic's replicas (a smaller
    /// replication factor) sends describes of it and its groups there.
    async fn where_held<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(AdminClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut client = self.client.clone();
        for _ in 0..3 {
            match call(client.clone()).await.map_err(Error::from) {
                Ok(r) => return Ok(r.into_inner()),
                Err(e) => match e.leader_hint() {
                    Some(hint) => client = AdminClient::new(self.channel.to(&hint.endpoint)?),
                    None => return Err(e),
                },
            }
        }
        Ok(call(client).await?.into_inner())
    }

    /// Changes the non-zero fields of `config`.
    pub async fn update_topic(&self, name: &str, config: pb::TopicConfig) -> Result<pb::TopicInfo> {
        let r = self
            .client
            .clone()
            .update_topic(pb::UpdateTopicRequest { name: name.into(), config: Some(config) })
            .await?;
        Ok(r.into_inner().topic.unwrap_or_default())
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.client.clone().delete_topic(pb::DeleteTopicRequest { name: name.into() }).await?;
        Ok(())
    }

    /// Creates a consumer group on `config.topic`.
    pub async fn create_group(&self, name: &str, config: pb::GroupConfig) -> Result<pb::GroupInfo> {
        Ok(self
            .client
            .clone()
            .create_group(pb::CreateGroupRequest { name: name.into(), config: Some(config) })
            .await?
            .into_inner())
    }

    /// Changes the fields of a group's settings that are set in `config` (a zero
    /// `max_delivery_attempts` removes the limit); unset ones stay.
    pub async fn update_group(&self, name: &str, config: pb::GroupConfig) -> Result<pb::GroupInfo> {
        Ok(self
            .client
            .clone()
            .update_group(pb::UpdateGroupRequest { name: name.into(), config: Some(config), clear_push: false })
            .await?
            .into_inner())
    }

    /// Makes a push group a pull group again (its dispatcher stops).
    pub async fn stop_pushing(&self, name: &str) -> Result<pb::GroupInfo> {
        let request = pb::UpdateGroupRequest { name: name.into(), config: Some(Default::default()), clear_push: true };
        Ok(self.client.clone().update_group(request).await?.into_inner())
    }

    /// Deletes a group and its state.
    pub async fn delete_group(&self, name: &str) -> Result<()> {
        self.client.clone().delete_group(pb::DeleteGroupRequest { name: name.into() }).await?;
        Ok(())
    }

    /// Creates a schedule: an event produced to `config.topic` at each tick.
    pub async fn create_schedule(&self, name: &str, config: pb::ScheduleConfig) -> Result<pb::ScheduleInfo> {
        let request = pb::CreateScheduleRequest { name: name.into(), config: Some(config) };
        Ok(self.client.clone().create_schedule(request).await?.into_inner())
    }

    /// Every schedule, with how far each has fired.
    pub async fn list_schedules(&self) -> Result<Vec<pb::ScheduleInfo>> {
        Ok(self.client.clone().list_schedules(pb::ListSchedulesRequest {}).await?.into_inner().schedules)
    }

    /// One schedule, with how far it has fired.
    pub async fn describe_schedule(&self, name: &str) -> Result<pb::ScheduleInfo> {
        let request = pb::DescribeScheduleRequest { name: name.into() };
        Ok(self.client.clone().describe_schedule(request).await?.into_inner())
    }

    /// Deletes a schedule: it fires no more.
    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        self.client.clone().delete_schedule(pb::DeleteScheduleRequest { name: name.into() }).await?;
        Ok(())
    }

    /// Adds permission rule `rule` (an equal rule is not added twice: the
    /// answer's `created` is false and it carries the existing rule).
    pub async fn add_acl(&self, rule: pb::AclRule) -> Result<pb::AddAclResponse> {
        Ok(self.client.clone().add_acl(pb::AddAclRequest { rule: Some(rule) }).await?.into_inner())
    }

    /// Every permission rule (of `subject`, if not empty).
    pub async fn list_acls(&self, subject: &str) -> Result<Vec<pb::AclRule>> {
        let request = pb::ListAclsRequest { subject: subject.into() };
        Ok(self.client.clone().list_acls(request).await?.into_inner().rules)
    }

    /// Removes permission rule `id`.
    pub async fn remove_acl(&self, id: u64) -> Result<()> {
        self.client.clone().remove_acl(pb::RemoveAclRequest { id }).await?;
        Ok(())
    }

    /// Every group (of `topic`, if not empty).
    pub async fn list_groups(&self, topic: &str) -> Result<Vec<pb::GroupInfo>> {
        Ok(self.client.clone().list_groups(pb::ListGroupsRequest { topic: topic.into() }).await?.into_inner().groups)
    }

    /// A group's settings, progress per partition and members.
    pub async fn describe_group(&self, name: &str) -> Result<pb::GroupInfo> {
        let request = pb::DescribeGroupRequest { name: name.into() };
        self.where_held(|mut c| {
            let request = request.clone();
            async move { c.describe_group(request).await }
        })
        .await
    }

    /// Moves a group (all partitions, or one) to a target.
    pub async fn seek_group(
        &self,
        name: &str,
        partition: Option<u32>,
        target: pb::seek_group_request::Target,
    ) -> Result<pb::GroupInfo> {
        let req = pb::SeekGroupRequest { name: name.into(), partition, target: Some(target) };
        Ok(self.client.clone().seek_group(req).await?.into_inner())
    }

    /// Reads a group's dead letters.
    pub async fn peek_dead_letters(&self, group: &str, max: u32) -> Result<Vec<pb::Record>> {
        let req = pb::PeekDeadLettersRequest { group: group.into(), max_messages: max };
        Ok(self.client.clone().peek_dead_letters(req).await?.into_inner().records)
    }

    /// Copies dead letters back to the group's topic (or `req.target_topic`).
    pub async fn redrive_dead_letters(&self, req: pb::RedriveDeadLettersRequest) -> Result<u64> {
        Ok(self.client.clone().redrive_dead_letters(req).await?.into_inner().redriven)
    }

    /// Removes every dead letter of a group.
    pub async fn purge_dead_letters(&self, group: &str) -> Result<u64> {
        Ok(self
            .client
            .clone()
            .purge_dead_letters(pb::PurgeDeadLettersRequest { group: group.into() })
            .await?
            .into_inner()
            .purged)
    }

    /// The broker's version and uptime.
    pub async fn broker(&self) -> Result<pb::BrokerInfo> {
        Ok(self.client.clone().get_broker(pb::GetBrokerRequest {}).await?.into_inner())
    }
}
