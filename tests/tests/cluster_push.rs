//! Push subscriptions in a three-broker cluster: the group's messages are
//! pushed once, by the broker that leads the group's shard; when that broker
//! is SIGKILLed, the new leader pushes the rest, repeating only what was in
//! flight, and nothing is lost.

use std::collections::HashMap;
use std::time::Duration;

use sluice_client::proto as pb;
use sluice_client::Admin;
use sluice_tests::sink::{Reply, Sink};
use sluice_tests::{eventually, group_config, produce_values, TestCluster};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_groups_leader_pushes_and_a_new_leader_takes_over() -> anyhow::Result<()> {
    const EVENTS: usize = 300;
    const CONCURRENCY: u32 = 4;
    const BATCH: u32 = 5;
    let mut cluster = TestCluster::start_with(3, &["--push-allowed-endpoints", "127.0.0.1"]).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    cluster.leaders_spread(1).await?;
    let admin = Admin::new(cluster.broker(1).channel());
    admin.create_topic("jobs", 2, pb::TopicConfig::default()).await?;
    let sink = Sink::start(|_| Reply::Slow(Duration::from_millis(5), Box::new(Reply::ok()))).await?;
    produce_values(cluster.broker(1).channel(), "jobs", (0..EVENTS).map(|i| format!("job-{i}"))).await?;
    let push = pb::PushConfig {
        endpoint: sink.url("/jobs"),
        batch_size: BATCH,
        max_concurrency: CONCURRENCY,
        ..Default::default()
    };
    admin.create_group("hook", pb::GroupConfig { push: Some(push), ..group_config("jobs", 5000) }).await?;

    sink.wait_until(WAIT, "a third pushed", |r| r.iter().map(|x| x.events().len()).sum::<usize>() >= EVENTS / 3)
        .await?;
    let named = sluice_client::ClusterInfo::new(cluster.broker(1).channel()).group_leaders(&["hook"]).await?;
    let leader_addr = named.first().map(|g| g.leader_endpoint.clone()).unwrap_or_default();
    let leader = cluster.ids().into_iter().find(|id| cluster.broker(*id).addr == leader_addr);
    let leader = leader.ok_or_else(|| anyhow::anyhow!("no broker leads the group: {named:?}"))?;
    let before: HashMap<String, usize> = counts(&sink);
    assert!(before.values().all(|n| *n == 1), "before any failure every event is pushed once (one dispatcher)");
    println!("the group's leader, broker {leader}, pushed {} events; killing it", before.len());
    cluster.broker_mut(leader).kill9().await?;

    let survivor = cluster.ids().into_iter().find(|id| *id != leader).unwrap_or(1);
    sink.wait_until(WAIT, "every event pushed", |_| counts(&sink).len() >= EVENTS).await?;
    let admin = Admin::new(cluster.broker(survivor).channel());
    eventually(WAIT, "the group drained at the new leader", || {
        let admin = admin.clone();
        async move {
            let g = admin.describe_group("hook").await?;
            Ok((g.backlog_messages == 0 && g.in_flight == 0).then_some(()))
        }
    })
    .await?;
    let after = counts(&sink);
    let again: usize = after.values().map(|n| n - 1).sum();
    let bound = (CONCURRENCY * BATCH) as usize;
    println!("{} events, {again} pushed again after the failover", after.len());
    assert_eq!(after.len(), EVENTS, "nothing lost");
    assert!(again <= bound, "{again} events pushed twice; at most {bound} were in flight at the kill");
    cluster.broker_mut(leader).restart().await?;
    Ok(())
}

/// How often each event id was pushed.
fn counts(sink: &Sink) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for event in sink.events() {
        *counts.entry(event.id).or_insert(0) += 1;
    }
    counts
}
