//! The one table of what each entry point does: every gRPC method and HTTP
//! route maps to the kind of resource it acts on and the operation it
//! performs (or to anonymous access). Authentication consults it now;
//! per-resource permission rules will check the same rows. A unit test
//! fails when a method exists in the API without a row here.

/// The kinds of resource a permission rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    /// The broker or cluster as a whole (metadata, membership, metrics, reflection).
    Cluster,
    /// A topic, by name.
    Topic,
    /// A consumer group, by name.
    Group,
    /// A schedule, by name.
    Schedule,
}

/// What a request does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// Appends records.
    Produce,
    /// Reads records or moves a group's position.
    Consume,
    /// Reads settings and state.
    Describe,
    /// Creates, changes or deletes the resource.
    Alter,
    /// Changes the cluster itself (membership).
    Admin,
}

/// Who may call an entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials: liveness and readiness probes.
    Anonymous,
    /// Any authenticated principal: the method names no resource, or
    /// answers only about those the caller may describe.
    Authenticated,
    /// An authenticated principal allowed `Operation` on the resource.
    Checked(ResourceKind, Operation),
}

impl ResourceKind {
    /// Its name in rules, logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ResourceKind::Cluster => "cluster",
            ResourceKind::Topic => "topic",
            ResourceKind::Group => "group",
            ResourceKind::Schedule => "schedule",
        }
    }
}

impl Operation {
    /// Its name in rules, logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Operation::Produce => "produce",
            Operation::Consume => "consume",
            Operation::Describe => "describe",
            Operation::Alter => "alter",
            Operation::Admin => "admin",
        }
    }
}

use Access::{Anonymous, Authenticated, Checked};
use Operation::{Admin, Alter, Consume, Describe, Produce};
use ResourceKind::{Cluster, Group, Schedule, Topic};

/// Every gRPC method by path (`/package.Service/Method`).
pub const GRPC: &[(&str, Access)] = &[
    ("/grpc.health.v1.Health/Check", Anonymous),
    ("/grpc.health.v1.Health/Watch", Anonymous),
    // The API's schema, the same for everyone.
    ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Authenticated),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Authenticated),
    ("/sluice.v1.Admin/CreateTopic", Checked(Topic, Alter)),
    ("/sluice.v1.Admin/ListTopics", Checked(Topic, Describe)),
    ("/sluice.v1.Admin/DescribeTopic", Checked(Topic, Describe)),
    ("/sluice.v1.Admin/UpdateTopic", Checked(Topic, Alter)),
    ("/sluice.v1.Admin/DeleteTopic", Checked(Topic, Alter)),
    ("/sluice.v1.Admin/GetBroker", Checked(Cluster, Describe)),
    ("/sluice.v1.Admin/CreateGroup", Checked(Group, Alter)),
    ("/sluice.v1.Admin/UpdateGroup", Checked(Group, Alter)),
    ("/sluice.v1.Admin/DeleteGroup", Checked(Group, Alter)),
    ("/sluice.v1.Admin/ListGroups", Checked(Group, Describe)),
    ("/sluice.v1.Admin/DescribeGroup", Checked(Group, Describe)),
    ("/sluice.v1.Admin/SeekGroup", Checked(Group, Alter)),
    ("/sluice.v1.Admin/PeekDeadLetters", Checked(Group, Consume)),
    ("/sluice.v1.Admin/RedriveDeadLetters", Checked(Group, Consume)),
    ("/sluice.v1.Admin/PurgeDeadLetters", Checked(Group, Alter)),
    ("/sluice.v1.Admin/CreateSchedule", Checked(Schedule, Alter)),
    ("/sluice.v1.Admin/ListSchedules", Checked(Schedule, Describe)),
    ("/sluice.v1.Admin/DescribeSchedule", Checked(Schedule, Describe)),
    ("/sluice.v1.Admin/DeleteSchedule", Checked(Schedule, Alter)),
    ("/sluice.v1.Admin/AddAcl", Checked(Cluster, Admin)),
    ("/sluice.v1.Admin/ListAcls", Checked(Cluster, Admin)),
    ("/sluice.v1.Admin/RemoveAcl", Checked(Cluster, Admin)),
    // Where partitions are led: every client needs it; topics it may not describe are left out.
    ("/sluice.v1.Cluster/Metadata", Authenticated),
    ("/sluice.v1.Cluster/ReplaceBroker", Checked(Cluster, Admin)),
    ("/sluice.v1.Consumer/Fetch", Checked(Topic, Consume)),
    ("/sluice.v1.Consumer/GetOffsets", Checked(Topic, Describe)),
    ("/sluice.v1.Consumer/Pull", Checked(Group, Consume)),
    ("/sluice.v1.Consumer/Ack", Checked(Group, Consume)),
    ("/sluice.v1.Consumer/Nack", Checked(Group, Consume)),
    ("/sluice.v1.Consumer/ModifyAckDeadline", Checked(Group, Consume)),
    ("/sluice.v1.Consumer/Subscribe", Checked(Group, Consume)),
    ("/sluice.v1.Events/Publish", Checked(Topic, Produce)),
    ("/sluice.v1.Producer/Produce", Checked(Topic, Produce)),
    ("/sluice.v1.Producer/ProduceStream", Checked(Topic, Produce)),
    ("/externalscaler.ExternalScaler/IsActive", Checked(Group, Describe)),
    ("/externalscaler.ExternalScaler/StreamIsActive", Checked(Group, Describe)),
    ("/externalscaler.ExternalScaler/GetMetricSpec", Checked(Group, Describe)),
    ("/externalscaler.ExternalScaler/GetMetrics", Checked(Group, Describe)),
];

/// Every HTTP route by method and path pattern.
pub const HTTP: &[(&str, &str, Access)] =
    &[("POST", "/v1/topics/{topic}/events", Checked(Topic, Produce)), ("GET", "/metrics", Checked(Cluster, Describe))];

/// The row of gRPC method `path`; a path without a row (no such method)
/// needs credentials like any other, and is then answered `UNIMPLEMENTED`.
pub fn grpc(path: &str) -> (&'static str, Access) {
    GRPC.iter().find(|(p, _)| *p == path).copied().unwrap_or(("(unknown method)", Checked(Cluster, Describe)))
}

/// The row of HTTP route `route` (`METHOD /pattern`).
pub fn http(method: &str, route: &str) -> (&'static str, Access) {
    HTTP.iter()
        .find(|(m, r, _)| *m == method && *r == route)
        .map(|(_, r, a)| (*r, *a))
        .unwrap_or(("(unknown route)", Checked(Cluster, Describe)))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn methods(set: &[u8]) -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(set).expect("a descriptor set");
        let mut out = Vec::new();
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    out.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        out
    }

    #[test]
    fn every_method_has_exactly_one_row() {
        let mut served = methods(sluice_proto::FILE_DESCRIPTOR_SET);
        served.extend(methods(tonic_health::pb::FILE_DESCRIPTOR_SET));
        served.extend(methods(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET));
        served.extend(methods(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET));
        assert!(served.iter().any(|m| m == "/sluice.v1.Producer/Produce"), "{served:?}");
        for method in &served {
            let rows = GRPC.iter().filter(|(p, _)| p == method).count();
            assert_eq!(rows, 1, "{method} must have exactly one row in auth::methods::GRPC");
        }
        for (path, _) in GRPC {
            assert!(served.iter().any(|m| m == path), "{path} has a row but is not served");
        }
    }

    #[test]
    fn only_health_is_anonymous() {
        let anonymous: Vec<&str> = GRPC.iter().filter(|(_, a)| *a == Anonymous).map(|(p, _)| *p).collect();
        assert_eq!(anonymous, ["/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"]);
        assert_eq!(grpc("/sluice.v1.Nothing/Here").1, Checked(Cluster, Describe));
        assert_eq!(http("GET", "/metrics"), ("/metrics", Checked(Cluster, Describe)));
    }
}
