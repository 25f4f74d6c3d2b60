//! Group filters (Knative's dialects) against the real broker: events come in
//! over the HTTP gateway, a filtered pull group gets only those that match and
//! the rest are settled without delivery (backlog drains, counted in
//! `sluice_group_filtered_total`); a filtered push group pushes only matches;
//! changing the filter applies to what is not yet delivered.

use std::time::Duration;

use sluice_client::proto as pb;
use sluice_client::Admin;
use sluice_tests::http::post;
use sluice_tests::sink::{Reply, Sink};
use sluice_tests::{eventually, group_config, TestBroker};

const WAIT: Duration = Duration::from_secs(20);

/// Posts a binary-mode event with `id`, `type` and `source`.
async fn publish(gateway: &str, id: &str, kind: &str, source: &str) -> anyhow::Result<()> {
    let headers = [("ce-specversion", "1.0"), ("ce-id", id), ("ce-type", kind), ("ce-source", source)];
    let answer = post(gateway, "/v1/topics/events/events", &headers, id.as_bytes()).await?;
    anyhow::ensure!(answer.status == 202, "publish {id}: {}", answer.status);
    Ok(())
}

fn exact(name: &str, value: &str) -> pb::EventFilter {
    let values = [(name.to_owned(), value.to_owned())].into_iter().collect();
    pb::EventFilter { filter: Some(pb::event_filter::Filter::Exact(pb::AttributeValues { values })) }
}

fn prefix(name: &str, value: &str) -> pb::EventFilter {
    let values = [(name.to_owned(), value.to_owned())].into_iter().collect();
    pb::EventFilter { filter: Some(pb::event_filter::Filter::Prefix(pb::AttributeValues { values })) }
}

fn not(f: pb::EventFilter) -> pb::EventFilter {
    pb::EventFilter { filter: Some(pb::event_filter::Filter::Not(Box::new(f))) }
}

/// Pulls (and acks) everything group `name` delivers within `wait`, returning the values.
async fn pull_all(broker: &TestBroker, name: &str, wait: Duration) -> anyhow::Result<Vec<String>> {
    let mut client = pb::consumer_client::ConsumerClient::new(broker.channel());
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        let request =
            pb::PullRequest { group: name.into(), consumer_id: "t".into(), max_messages: 100, max_wait_ms: 200 };
        let pulled = client.pull(request).await?.into_inner();
        if pulled.messages.is_empty() {
            continue;
        }
        let ids = pulled.messages.iter().map(|m| m.ack_id.clone()).collect();
        for m in &pulled.messages {
            got.push(
                String::from_utf8_lossy(&m.record.as_ref().map(|r| r.value.clone()).unwrap_or_default()).into_owned(),
            );
        }
        client.ack(pb::AckRequest { group: name.into(), ack_ids: ids }).await?;
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_groups_get_only_matching_events_and_settle_the_rest() -> anyhow::Result<()> {
    let broker = TestBroker::start_with(&[
        "--gateway-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--push-allowed-endpoints",
        "127.0.0.1",
        "--metrics-refresh-ms",
        "100",
    ])
    .await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("events", 2, pb::TopicConfig::default()).await?;
    let filter = pb::EventFilters { filters: vec![exact("type", "order.created"), not(prefix("source", "/test"))] };
    admin
        .create_group("orders", pb::GroupConfig { filter: Some(filter.clone()), ..group_config("events", 5000) })
        .await?;
    let sink = Sink::start(|_| Reply::ok()).await?;
    let push = pb::PushConfig { endpoint: sink.url("/"), ..Default::default() };
    admin
        .create_group(
            "hook",
            pb::GroupConfig { filter: Some(filter), push: Some(push), ..group_config("events", 5000) },
        )
        .await?;

    let gateway = broker.gateway_addr.clone().expect("gateway on");
    let events = [
        ("a", "order.created", "/shop"),
        ("b", "order.cancelled", "/shop"),
        ("c", "order.created", "/test/load"),
        ("d", "order.created", "/shop/eu"),
        ("e", "user.created", "/shop"),
    ];
    for (id, kind, source) in events {
        publish(&gateway, id, kind, source).await?;
    }
    let mut pulled = pull_all(&broker, "orders", Duration::from_secs(2)).await?;
    pulled.sort();
    assert_eq!(pulled, ["a", "d"], "only order.created not from /test");
    sink.wait_until(WAIT, "the matching events pushed", |r| r.len() >= 2).await?;
    let mut pushed: Vec<String> = sink.events().into_iter().map(|e| e.id).collect();
    pushed.sort();
    assert_eq!(pushed, ["a", "d"]);

    for group in ["orders", "hook"] {
        eventually(WAIT, &format!("{group} drained, the filtered events settled"), || {
            let admin = admin.clone();
            async move {
                let g = admin.describe_group(group).await?;
                Ok((g.backlog_messages == 0 && g.in_flight == 0).then_some(()))
            }
        })
        .await?;
        let filtered = broker.metric("sluice_group_filtered_total", &[("group", group)]).await?;
        assert_eq!(filtered, 3.0, "{group}: three events filtered out");
    }

    // A new filter applies to what is not delivered yet; an empty one removes filtering.
    let only_users = pb::EventFilters { filters: vec![prefix("type", "user.")] };
    admin.update_group("orders", pb::GroupConfig { filter: Some(only_users), ..Default::default() }).await?;
    publish(&gateway, "f", "order.created", "/shop").await?;
    publish(&gateway, "g", "user.deleted", "/shop").await?;
    assert_eq!(pull_all(&broker, "orders", Duration::from_secs(1)).await?, ["g"]);
    admin.update_group("orders", pb::GroupConfig { filter: Some(Default::default()), ..Default::default() }).await?;
    let info = admin.describe_group("orders").await?;
    assert!(info.config.and_then(|c| c.filter).is_none(), "filtering removed");
    publish(&gateway, "h", "anything", "/test").await?;
    assert_eq!(pull_all(&broker, "orders", Duration::from_secs(1)).await?, ["h"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_filters_are_refused_with_the_reason() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = Admin::new(broker.channel());
    admin.create_topic("events", 1, pb::TopicConfig::default()).await?;
    for (filter, why) in [
        (prefix("type", ""), "empty prefix"),
        (exact("Type", "x"), "upper-case attribute"),
        (pb::EventFilter { filter: None }, "no dialect"),
        (pb::EventFilter { filter: Some(pb::event_filter::Filter::Any(Default::default())) }, "empty any"),
    ] {
        let config = pb::GroupConfig {
            filter: Some(pb::EventFilters { filters: vec![filter] }),
            ..group_config("events", 5000)
        };
        let refused = admin.create_group("g", config).await.expect_err(why);
        assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument), "{why}: {refused}");
    }
    Ok(())
}
