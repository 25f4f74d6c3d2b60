//! Permissions (issue 14): a broker over TLS with tokens, one superuser
//! and permission rules. Every method called by a principal without the
//! right is refused `PERMISSION_DENIED` — for resources that exist and for
//! ones that do not, with the same answer — and changes nothing; rules
//! grant by literal name, prefix and role, a deny wins, consuming needs the
//! group and its topic, lists show only what the caller may describe, a
//! removed rule stops the next request, and rules survive a SIGKILL.

use std::collections::BTreeSet;
use std::path::Path;

use sha2::{Digest, Sha256};
use sluice_client::proto as pb;
use sluice_client::{Admin, Channel, ConnectOptions, Message, Producer, ProducerConfig};
use sluice_proto::externalscaler as ks;
use sluice_proto::externalscaler::external_scaler_client::ExternalScalerClient;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::cluster_client::ClusterClient;
use sluice_proto::v1::consumer_client::ConsumerClient;
use sluice_proto::v1::events_client::EventsClient;
use sluice_proto::v1::producer_client::ProducerClient;
use sluice_tests::pki::{self, TestCa};
use sluice_tests::TestBroker;
use tonic::Code;

const ADMIN: &str = "admin-5b0e2f7c41d94e2a";
const MALLORY: &str = "mallory-93c1d0a6e7f24b58";
const BOB: &str = "bob-0d4f6a9e2c7b4183";

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// TLS, tokens for admin (a superuser), mallory and bob (role `readers`),
/// the gateway and metrics on.
async fn guarded(ca: &TestCa, dir: &Path) -> anyhow::Result<TestBroker> {
    let server = ca.issue("broker", &["127.0.0.1", "localhost"])?;
    let cert = pki::write(dir, "server.pem", &server.cert)?;
    let key = pki::write(dir, "server.key", &server.key)?;
    let tokens = format!(
        "[[token]]\nprincipal = \"admin\"\nsha256 = \"{}\"\n\n\
         [[token]]\nprincipal = \"mallory\"\nsha256 = \"{}\"\n\n\
         [[token]]\nprincipal = \"bob\"\nroles = [\"readers\"]\nsha256 = \"{}\"\n",
        digest(ADMIN),
        digest(MALLORY),
        digest(BOB)
    );
    let tokens = pki::write(dir, "tokens.toml", &tokens)?;
    let args = [
        "--tls-cert",
        cert.to_str().unwrap_or_default(),
        "--tls-key",
        key.to_str().unwrap_or_default(),
        "--auth-tokens",
        tokens.to_str().unwrap_or_default(),
        "--superusers",
        "principal:admin",
        "--gateway-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let mut broker = TestBroker::start_tls(&args, &ca.pem).await?;
    broker.token = Some(ADMIN.to_owned());
    Ok(broker)
}

fn channel(ca: &TestCa, broker: &TestBroker, token: &str) -> anyhow::Result<Channel> {
    Ok(ConnectOptions::new().tls_ca(&ca.pem).token(token)?.connect(&broker.addr)?)
}

fn rule(subject: &str, operation: pb::AclOperation, resource: pb::AclResource, pattern: &str) -> pb::AclRule {
    pb::AclRule {
        subject: subject.into(),
        operation: operation as i32,
        resource: resource as i32,
        pattern: pattern.into(),
        ..Default::default()
    }
}

fn deny(mut r: pb::AclRule) -> pb::AclRule {
    r.effect = pb::AclEffect::Deny as i32;
    r
}

/// What the broker holds, as the superuser sees it: topics with their
/// latest offsets, groups with committed offsets, schedules, rules.
async fn state(admin: &Admin) -> anyhow::Result<String> {
    let mut out = Vec::new();
    for t in admin.list_topics().await? {
        let d = admin.describe_topic(&t.name).await?;
        let ends: Vec<u64> = d.partitions.iter().map(|p| p.latest_offset).collect();
        out.push(format!("topic {} {:?} {:?}", t.name, t.config, ends));
    }
    for g in admin.list_groups("").await? {
        let committed: Vec<u64> = g.partitions.iter().map(|p| p.committed_offset).collect();
        out.push(format!("group {} {:?} {committed:?} in-flight {}", g.name, g.config, g.in_flight));
    }
    for s in admin.list_schedules().await? {
        out.push(format!("schedule {} {:?}", s.name, s.config));
    }
    for r in admin.list_acls("").await? {
        out.push(format!("rule {r:?}"));
    }
    Ok(out.join("\n"))
}

/// Every method of the sluice API and the KEDA scaler, by path.
fn api_methods() -> anyhow::Result<BTreeSet<String>> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(sluice_proto::FILE_DESCRIPTOR_SET)?;
    let mut out = BTreeSet::new();
    for file in set.file {
        for service in &file.service {
            for method in &service.method {
                out.insert(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
            }
        }
    }
    Ok(out)
}

/// Calls method `path` on resource `name` (every name the request has)
/// over `ch`; the refusal, if any.
async fn call(ch: &Channel, path: &str, name: &str) -> Result<(), tonic::Status> {
    let n = || name.to_owned();
    let mut admin = AdminClient::new(ch.clone());
    let mut consumer = ConsumerClient::new(ch.clone());
    let mut producer = ProducerClient::new(ch.clone());
    let mut scaler = ExternalScalerClient::new(ch.clone());
    let scaled = || {
        let metadata = [("group".to_owned(), name.to_owned())].into_iter().collect();
        ks::ScaledObjectRef { name: "s".into(), namespace: "d".into(), scaler_metadata: metadata }
    };
    let group_config = || Some(pb::GroupConfig { topic: n(), ..Default::default() });
    let method = path.rsplit('/').next().unwrap_or_default();
    match path.split('/').nth(1).unwrap_or_default() {
        "sluice.v1.Admin" => match method {
            "CreateTopic" => admin
                .create_topic(pb::CreateTopicRequest { name: n(), partitions: 1, ..Default::default() })
                .await
                .map(drop),
            "ListTopics" => unreachable!("lists are filtered, not refused"),
            "DescribeTopic" => admin.describe_topic(pb::DescribeTopicRequest { name: n() }).await.map(drop),
            "UpdateTopic" => {
                let config = Some(pb::TopicConfig { retention_ms: 1000, ..Default::default() });
                admin.update_topic(pb::UpdateTopicRequest { name: n(), config }).await.map(drop)
            }
            "DeleteTopic" => admin.delete_topic(pb::DeleteTopicRequest { name: n() }).await.map(drop),
            "GetBroker" => admin.get_broker(pb::GetBrokerRequest {}).await.map(drop),
            "CreateGroup" => {
                admin.create_group(pb::CreateGroupRequest { name: n(), config: group_config() }).await.map(drop)
            }
            "UpdateGroup" => {
                let config = Some(pb::GroupConfig { ack_deadline_ms: 5000, ..Default::default() });
                admin.update_group(pb::UpdateGroupRequest { name: n(), config, ..Default::default() }).await.map(drop)
            }
            "DeleteGroup" => admin.delete_group(pb::DeleteGroupRequest { name: n() }).await.map(drop),
            "ListGroups" => unreachable!("lists are filtered, not refused"),
            "DescribeGroup" => admin.describe_group(pb::DescribeGroupRequest { name: n() }).await.map(drop),
            "SeekGroup" => {
                let target = Some(pb::seek_group_request::Target::Latest(true));
                admin.seek_group(pb::SeekGroupRequest { name: n(), target, ..Default::default() }).await.map(drop)
            }
            "PeekDeadLetters" => {
                admin.peek_dead_letters(pb::PeekDeadLettersRequest { group: n(), ..Default::default() }).await.map(drop)
            }
            "RedriveDeadLetters" => admin
                .redrive_dead_letters(pb::RedriveDeadLettersRequest { group: n(), ..Default::default() })
                .await
                .map(drop),
            "PurgeDeadLetters" => admin.purge_dead_letters(pb::PurgeDeadLettersRequest { group: n() }).await.map(drop),
            "CreateSchedule" => {
                let config = Some(pb::ScheduleConfig { topic: n(), interval_ms: 86_400_000, ..Default::default() });
                admin.create_schedule(pb::CreateScheduleRequest { name: n(), config }).await.map(drop)
            }
            "ListSchedules" => unreachable!("lists are filtered, not refused"),
            "DescribeSchedule" => admin.describe_schedule(pb::DescribeScheduleRequest { name: n() }).await.map(drop),
            "DeleteSchedule" => admin.delete_schedule(pb::DeleteScheduleRequest { name: n() }).await.map(drop),
            "AddAcl" => {
                let r = rule("principal:mallory", pb::AclOperation::All, pb::AclResource::Topic, "*");
                admin.add_acl(pb::AddAclRequest { rule: Some(r) }).await.map(drop)
            }
            "ListAcls" => admin.list_acls(pb::ListAclsRequest::default()).await.map(drop),
            "RemoveAcl" => admin.remove_acl(pb::RemoveAclRequest { id: 1 }).await.map(drop),
            other => panic!("no call for Admin/{other}: add it here"),
        },
        "sluice.v1.Consumer" => match method {
            "Fetch" => consumer.fetch(pb::FetchRequest { topic: n(), ..Default::default() }).await.map(drop),
            "GetOffsets" => {
                consumer.get_offsets(pb::GetOffsetsRequest { topic: n(), ..Default::default() }).await.map(drop)
            }
            "Pull" => consumer
                .pull(pb::PullRequest { group: n(), consumer_id: "m".into(), ..Default::default() })
                .await
                .map(drop),
            "Ack" => consumer.ack(pb::AckRequest { group: n(), ack_ids: vec!["0:0:1".into()] }).await.map(drop),
            "Nack" => consumer
                .nack(pb::NackRequest { group: n(), ack_ids: vec!["0:0:1".into()], ..Default::default() })
                .await
                .map(drop),
            "ModifyAckDeadline" => {
                let req =
                    pb::ModifyAckDeadlineRequest { group: n(), ack_ids: vec!["0:0:1".into()], ack_deadline_ms: 0 };
                consumer.modify_ack_deadline(req).await.map(drop)
            }
            "Subscribe" => {
                let start = pb::SubscribeStart { group: n(), consumer_id: "m".into(), initial_credits: 10 };
                let first = pb::SubscribeRequest { kind: Some(pb::subscribe_request::Kind::Start(start)) };
                let mut stream = consumer.subscribe(futures::stream::iter(vec![first])).await?.into_inner();
                match stream.message().await {
                    Err(status) => Err(status),
                    Ok(got) => panic!("Subscribe answered {got:?}"),
                }
            }
            other => panic!("no call for Consumer/{other}: add it here"),
        },
        "sluice.v1.Producer" => {
            let req = pb::ProduceRequest {
                topic: n(),
                messages: vec![pb::Message { value: b"x".to_vec().into(), ..Default::default() }],
                ..Default::default()
            };
            match method {
                "Produce" => producer.produce(req).await.map(drop),
                "ProduceStream" => {
                    let mut answers = producer.produce_stream(futures::stream::iter(vec![req])).await?.into_inner();
                    let answer = answers.message().await?.expect("an answer");
                    match answer.result {
                        Some(_) => Ok(()),
                        None => Err(tonic::Status::new(Code::from(answer.error_code), answer.error_message)),
                    }
                }
                other => panic!("no call for Producer/{other}: add it here"),
            }
        }
        "sluice.v1.Events" => {
            EventsClient::new(ch.clone()).publish(pb::PublishRequest { topic: n(), batch: None }).await.map(drop)
        }
        "sluice.v1.Cluster" => match method {
            "Metadata" => unreachable!("metadata is filtered, not refused"),
            "ReplaceBroker" => {
                let req = pb::ReplaceBrokerRequest { broker_id: 1, ..Default::default() };
                ClusterClient::new(ch.clone()).replace_broker(req).await.map(drop)
            }
            other => panic!("no call for Cluster/{other}: add it here"),
        },
        "externalscaler.ExternalScaler" => match method {
            "IsActive" => scaler.is_active(scaled()).await.map(drop),
            "StreamIsActive" => scaler.stream_is_active(scaled()).await.map(drop),
            "GetMetricSpec" => scaler.get_metric_spec(scaled()).await.map(drop),
            "GetMetrics" => {
                let req = ks::GetMetricsRequest { scaled_object_ref: Some(scaled()), metric_name: "m".into() };
                scaler.get_metrics(req).await.map(drop)
            }
            other => panic!("no call for ExternalScaler/{other}: add it here"),
        },
        other => panic!("no calls for service {other}: add them here"),
    }
}

/// Methods that answer any authenticated principal, each only about what
/// the caller may describe: checked by `lists_show_only_what_the_caller_may_describe`.
const FILTERED: [&str; 4] = [
    "/sluice.v1.Admin/ListTopics",
    "/sluice.v1.Admin/ListGroups",
    "/sluice.v1.Admin/ListSchedules",
    "/sluice.v1.Cluster/Metadata",
];

/// The resource name each method's call names, existing or not.
fn target(path: &str, exists: bool) -> &'static str {
    let kind = if path.contains("Group")
        || path.contains("DeadLetters")
        || path.contains("Consumer/") && !path.ends_with("Fetch") && !path.ends_with("GetOffsets")
        || path.contains("Scaler")
    {
        "group"
    } else if path.contains("Schedule") {
        "schedule"
    } else {
        "topic"
    };
    match (kind, exists) {
        ("group", true) => "workers",
        ("schedule", true) => "tick",
        ("topic", true) => "orders",
        (_, false) => "ghost",
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn every_method_without_the_right_is_denied_the_same_for_any_name_and_changes_nothing() -> anyhow::Result<()> {
    let ca = TestCa::new("sluice test CA")?;
    let dir = tempfile::tempdir()?;
    let mut broker = guarded(&ca, dir.path()).await?;
    let admin = Admin::new(channel(&ca, &broker, ADMIN)?);
    admin.create_topic("orders", 2, pb::TopicConfig::default()).await?;
    admin.create_topic("orders-dlq", 1, pb::TopicConfig::default()).await?;
    let config =
        pb::GroupConfig { topic: "orders".into(), dead_letter_topic: "orders-dlq".into(), ..Default::default() };
    admin.create_group("workers", config).await?;
    let tick = pb::ScheduleConfig { topic: "orders".into(), interval_ms: 86_400_000, ..Default::default() };
    admin.create_schedule("tick", tick).await?;
    let producer = Producer::new(channel(&ca, &broker, ADMIN)?, ProducerConfig::default());
    for i in 0..3 {
        producer.send("orders", Message::new(format!("m-{i}"))).await?;
    }
    // Mallory may do everything to what starts with `other.`: nothing of it reaches `orders`.
    for kind in [pb::AclResource::Topic, pb::AclResource::Group, pb::AclResource::Schedule] {
        admin.add_acl(rule("principal:mallory", pb::AclOperation::All, kind, "other.*")).await?;
    }
    let before = state(&admin).await?;

    let mallory = channel(&ca, &broker, MALLORY)?;
    let mut called = BTreeSet::new();
    for path in api_methods()? {
        if FILTERED.contains(&path.as_str()) {
            continue;
        }
        for exists in [true, false] {
            let name = target(&path, exists);
            let refused = call(&mallory, &path, name).await.expect_err(&path);
            assert_eq!(refused.code(), Code::PermissionDenied, "{path} on {name}: {refused:?}");
            let message = refused.message();
            assert!(message.contains("`mallory`"), "{path}: names the principal: {message}");
            assert!(!message.contains("not found") && !message.contains("exist"), "{path}: {message}");
            if name == "ghost" && !message.contains("the cluster") {
                assert!(message.contains("`ghost`"), "{path}: the same answer for a name that does not exist");
            }
        }
        called.insert(path);
    }
    assert_eq!(called.len() + FILTERED.len(), api_methods()?.len(), "every method was called");
    assert_eq!(state(&admin).await?, before, "the refused calls changed nothing");

    // The refusals are audited: logged with principal and method, and counted.
    let log = broker.log()?;
    assert!(
        log.contains("sluice::audit")
            && log.contains("denied")
            && log.contains("mallory")
            && log.contains("/sluice.v1.Admin/DeleteTopic"),
        "{}",
        broker.log_tail()
    );
    let denials =
        broker.metric("sluice_permission_denials_total", &[("resource", "topic"), ("operation", "alter")]).await?;
    assert!(denials >= 6.0, "create, update, delete topic on two names each: {denials}");

    // The gateway and the metrics endpoint: 403 for mallory, as for any door.
    let gateway = broker.gateway_addr.clone().ok_or_else(|| anyhow::anyhow!("no gateway"))?;
    let bearer = format!("Bearer {MALLORY}");
    let headers = [("content-type", "text/plain"), ("authorization", bearer.as_str())];
    let refused =
        sluice_tests::http::post_tls((&gateway, &ca.pem, None), "/v1/topics/orders/events", &headers, b"x").await?;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.json()?["error"]["reason"], "permission_denied");
    broker.token = Some(MALLORY.to_owned());
    let scrape = broker.scrape().await?;
    assert!(scrape.starts_with("HTTP/1.1 403"), "{scrape}");
    broker.token = Some(ADMIN.to_owned());
    assert_eq!(state(&admin).await?, before, "nothing stored through the gateway");
    Ok(())
}

#[tokio::test]
async fn rules_grant_by_name_prefix_and_role_a_deny_wins_and_consuming_needs_group_and_topic() -> anyhow::Result<()> {
    use pb::AclOperation::{All, Consume, Produce};
    use pb::AclResource::{Group, Topic};
    let ca = TestCa::new("sluice test CA")?;
    let dir = tempfile::tempdir()?;
    let mut broker = guarded(&ca, dir.path()).await?;
    let admin = Admin::new(channel(&ca, &broker, ADMIN)?);
    for topic in ["orders", "orders-dlq", "logs.app", "logs.db"] {
        admin.create_topic(topic, 1, pb::TopicConfig::default()).await?;
    }
    let config =
        pb::GroupConfig { topic: "orders".into(), dead_letter_topic: "orders-dlq".into(), ..Default::default() };
    admin.create_group("workers", config).await?;

    let bob = channel(&ca, &broker, BOB)?;
    let produce = |topic: &'static str| {
        let bob = bob.clone();
        async move { call(&bob, "/sluice.v1.Producer/Produce", topic).await }
    };
    assert_eq!(produce("orders").await.map_err(|s| s.code()), Err(Code::PermissionDenied), "no rule: nothing");
    let literal = admin.add_acl(rule("principal:bob", Produce, Topic, "orders")).await?;
    assert!(literal.created);
    produce("orders").await?;
    let again = admin.add_acl(rule("principal:bob", Produce, Topic, "orders")).await?;
    assert!(!again.created, "an equal rule is one rule");
    assert_eq!(again.rule.as_ref().map(|r| r.id), literal.rule.as_ref().map(|r| r.id));

    // By prefix through the role; a deny on one of them wins.
    admin.add_acl(rule("role:readers", All, Topic, "logs.*")).await?;
    produce("logs.app").await?;
    admin.add_acl(deny(rule("principal:bob", Produce, Topic, "logs.db"))).await?;
    assert_eq!(produce("logs.db").await.map_err(|s| s.code()), Err(Code::PermissionDenied), "deny wins");
    produce("logs.app").await?;

    // Consuming needs the group and its topic.
    let pull = || call(&bob, "/sluice.v1.Consumer/Pull", "workers");
    assert_eq!(pull().await.map_err(|s| s.code()), Err(Code::PermissionDenied));
    admin.add_acl(rule("principal:bob", Consume, Group, "workers")).await?;
    let without_topic = pull().await.expect_err("the group alone is not enough");
    assert_eq!(without_topic.code(), Code::PermissionDenied);
    assert!(without_topic.message().contains("topic `orders`"), "{without_topic:?}");
    admin.add_acl(rule("principal:bob", Consume, Topic, "orders")).await?;
    pull().await?;

    // A redrive reads the dead-letter topic and writes the target.
    let redrive = || call(&bob, "/sluice.v1.Admin/RedriveDeadLetters", "workers");
    let refused = redrive().await.expect_err("no consume on the dead-letter topic");
    assert!(refused.message().contains("consume topic `orders-dlq`"), "{refused:?}");
    admin.add_acl(rule("principal:bob", Consume, Topic, "orders-dlq")).await?;
    redrive().await?;

    // Rules survive a SIGKILL; a removed rule stops the next request.
    broker.kill9().await?;
    broker.start_again().await?;
    let bob = channel(&ca, &broker, BOB)?;
    let admin = Admin::new(channel(&ca, &broker, ADMIN)?);
    call(&bob, "/sluice.v1.Producer/Produce", "orders").await?;
    assert_eq!(
        call(&bob, "/sluice.v1.Producer/Produce", "logs.db").await.map_err(|s| s.code()),
        Err(Code::PermissionDenied),
        "the deny survived too"
    );
    let id = literal.rule.map(|r| r.id).unwrap_or_default();
    admin.remove_acl(id).await?;
    let removed = call(&bob, "/sluice.v1.Producer/Produce", "orders").await.expect_err("rule removed");
    assert_eq!(removed.code(), Code::PermissionDenied);
    let missing = admin.remove_acl(id).await.expect_err("removed twice");
    assert_eq!(missing.code(), Some(Code::NotFound), "{missing}");
    let listed = admin.list_acls("principal:bob").await?;
    assert!(listed.iter().all(|r| r.subject == "principal:bob" && r.id != id), "{listed:?}");

    // Bob may not manage rules.
    let bob_admin = Admin::new(bob.clone());
    let refused = bob_admin.list_acls("").await.expect_err("not an administrator");
    assert_eq!(refused.code(), Some(Code::PermissionDenied));
    Ok(())
}

#[tokio::test]
async fn lists_show_only_what_the_caller_may_describe() -> anyhow::Result<()> {
    use pb::AclOperation::{Describe, Produce};
    use pb::AclResource::{Group, Schedule, Topic};
    let ca = TestCa::new("sluice test CA")?;
    let dir = tempfile::tempdir()?;
    let broker = guarded(&ca, dir.path()).await?;
    let admin = Admin::new(channel(&ca, &broker, ADMIN)?);
    for topic in ["orders", "payments", "logs.app"] {
        admin.create_topic(topic, 1, pb::TopicConfig::default()).await?;
    }
    for (group, topic) in [("workers", "orders"), ("billing", "payments")] {
        admin.create_group(group, pb::GroupConfig { topic: topic.into(), ..Default::default() }).await?;
    }
    for name in ["tick", "tock"] {
        let config = pb::ScheduleConfig { topic: "orders".into(), interval_ms: 86_400_000, ..Default::default() };
        admin.create_schedule(name, config).await?;
    }
    admin.add_acl(rule("principal:bob", Produce, Topic, "orders")).await?;
    admin.add_acl(rule("role:readers", Describe, Topic, "logs.*")).await?;
    admin.add_acl(rule("principal:bob", Describe, Group, "billing")).await?;
    admin.add_acl(rule("principal:bob", Describe, Schedule, "tock")).await?;

    let bob = Admin::new(channel(&ca, &broker, BOB)?);
    let topics: Vec<String> = bob.list_topics().await?.into_iter().map(|t| t.name).collect();
    assert_eq!(topics, ["logs.app", "orders"], "a producer sees its topic; a describer by prefix");
    let groups: Vec<String> = bob.list_groups("").await?.into_iter().map(|g| g.name).collect();
    assert_eq!(groups, ["billing"]);
    let schedules: Vec<String> = bob.list_schedules().await?.into_iter().map(|s| s.name).collect();
    assert_eq!(schedules, ["tock"]);
    let mallory = Admin::new(channel(&ca, &broker, MALLORY)?);
    assert!(mallory.list_topics().await?.is_empty(), "no rules: an empty list, not a refusal");
    let everything: Vec<String> = admin.list_topics().await?.into_iter().map(|t| t.name).collect();
    assert_eq!(everything.len(), 3, "the superuser sees everything");

    // Reflection answers any authenticated principal (the API's schema names no resource).
    use tonic_reflection::pb::v1 as reflect;
    let mut reflection =
        reflect::server_reflection_client::ServerReflectionClient::new(channel(&ca, &broker, MALLORY)?);
    let list = reflect::server_reflection_request::MessageRequest::ListServices(String::new());
    let request = reflect::ServerReflectionRequest { message_request: Some(list), ..Default::default() };
    let mut answers = reflection.server_reflection_info(futures::stream::iter(vec![request])).await?.into_inner();
    assert!(answers.message().await?.is_some(), "reflection answers mallory");
    Ok(())
}
