//! Scheduled events in a three-broker cluster: a schedule created at any
//! broker is in the catalog of all, the metadata leader fires it, and when
//! that broker is SIGKILLed the new metadata leader goes on from the last
//! recorded tick: every tick stored exactly once (no repeat, no gap).

use std::time::Duration;

use sluice_client::proto as pb;
use sluice_client::Admin;
use sluice_tests::ticks::{check_exactly_once, ticks, Tick};
use sluice_tests::{eventually, read_all, TestCluster};

const WAIT: Duration = Duration::from_secs(60);
const EVERY_MS: u64 = 300;

async fn stored(cluster: &TestCluster, at: u64, schedule: u64, n: usize) -> anyhow::Result<Vec<Tick>> {
    eventually(WAIT, &format!("{n} ticks stored"), || async {
        let got = ticks(&read_all(cluster.broker(at).channel(), "ticks", 0).await?, schedule)?;
        Ok((got.len() >= n).then_some(got))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_leader_fires_and_a_new_leader_goes_on_exactly_once() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let leader = cluster.agreed_leader(&cluster.ids(), None).await?;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap_or(1);
    let admin = Admin::new(cluster.broker(follower).channel());
    admin.create_topic("ticks", 1, pb::TopicConfig::default()).await?;
    let config = pb::ScheduleConfig { topic: "ticks".into(), interval_ms: EVERY_MS, ..Default::default() };
    let created = admin.create_schedule("heartbeat", config).await?;
    // The catalog reaches the other brokers a commit round after the one that answered.
    for id in cluster.ids() {
        let admin = Admin::new(cluster.broker(id).channel());
        eventually(WAIT, &format!("the schedule in broker {id}'s catalog"), || async {
            let listed = admin.list_schedules().await?;
            Ok((listed.iter().map(|s| s.id).collect::<Vec<_>>() == vec![created.id]).then_some(()))
        })
        .await?;
    }
    let before = stored(&cluster, follower, created.id, 3).await?;
    println!("{} ticks fired by the metadata leader, broker {leader}; killing it", before.len());
    cluster.broker_mut(leader).kill9().await?;
    let survivors: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    let new_leader = cluster.agreed_leader(&survivors, Some(leader)).await?;
    let now = ticks(&read_all(cluster.broker(new_leader).channel(), "ticks", 0).await?, created.id)?.len();
    let got = stored(&cluster, new_leader, created.id, now + 3).await?;
    println!("{} ticks in all; broker {new_leader} went on", got.len());
    check_exactly_once(&got, created.created_ms, EVERY_MS as i64)?;
    let info = Admin::new(cluster.broker(new_leader).channel()).describe_schedule("heartbeat").await?;
    assert!(info.ticks_fired >= got.len() as u64, "the catalog records every fired tick: {info:?}");
    cluster.broker_mut(leader).restart().await?;
    Ok(())
}
