//! Three real broker processes on loopback form the metadata group (step 1 of
//! docs/REPLICATION.md): they agree on a leader, every broker registers its
//! endpoint in the replicated catalog, and after the leader is killed with
//! SIGKILL the other two elect a new one and the killed broker rejoins from its
//! own disk (once in `make test`, SLUICE_CLUSTER_ROUNDS times in `make soak`). Topics are not replicated yet; this checks the group inside real
//! brokers, with the flags an operator uses.

use std::time::Duration;

use sluice_tests::{eventually, TestBroker};

const LEADER: &str = "sluice_cluster_metadata_leader";
const BROKERS: &str = "sluice_cluster_brokers";

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The leader every running broker reports, once they all agree on one
/// that is not `not` (a killed broker stays "leader" until followers time out).
async fn agreed_leader(brokers: &[&TestBroker], not: Option<u64>) -> anyhow::Result<u64> {
    eventually(Duration::from_secs(20), "the brokers agree on a metadata leader", || async {
        let mut seen = Vec::new();
        for b in brokers {
            seen.push(b.metric(LEADER, &[]).await? as u64);
        }
        let agreed = seen[0] != 0 && Some(seen[0]) != not && seen.iter().all(|l| *l == seen[0]);
        Ok(agreed.then_some(seen[0]))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_form_the_metadata_group_and_survive_a_leader_kill() -> anyhow::Result<()> {
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
    let peers = cluster_ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect::<Vec<_>>();
    let peers = peers.join(",");
    let mut brokers = Vec::new();
    for (i, port) in cluster_ports.iter().enumerate() {
        let (id, listen) = ((i + 1).to_string(), format!("127.0.0.1:{port}"));
        let args =
            ["--node-id", &id, "--peers", &peers, "--cluster-listen", &listen, "--metrics-listen", "127.0.0.1:0"];
        brokers.push(TestBroker::start_with(&args).await?);
    }
    let all: Vec<&TestBroker> = brokers.iter().collect();
    let leader = agreed_leader(&all, None).await?;
    assert!((1..=3).contains(&leader), "leader {leader}");
    eventually(Duration::from_secs(10), "every broker has applied three registrations", || async {
        for b in &brokers {
            if b.metric(BROKERS, &[]).await? as u64 != 3 {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await?;

    // SIGKILL the leader: the two others elect one of themselves; the killed broker
    // restarts on its data and rejoins. SLUICE_CLUSTER_ROUNDS repeats it (make soak: 20).
    let rounds: u64 = std::env::var("SLUICE_CLUSTER_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut leader = leader;
    for round in 1..=rounds {
        let killed = (leader - 1) as usize;
        brokers[killed].kill9().await?;
        let survivors: Vec<&TestBroker> =
            brokers.iter().enumerate().filter(|(i, _)| *i != killed).map(|(_, b)| b).collect();
        let second = agreed_leader(&survivors, Some(leader)).await?;
        assert_ne!(second, leader, "round {round}: a killed broker cannot stay leader");
        brokers[killed].start_again().await?;
        let all: Vec<&TestBroker> = brokers.iter().collect();
        leader = agreed_leader(&all, None).await?;
        let kept = brokers[killed].metric(BROKERS, &[]).await? as u64;
        assert_eq!(kept, 3, "round {round}: the rejoined broker kept the catalog");
    }
    println!("cluster: {rounds} leader SIGKILLs, a new leader elected and the killed broker rejoined each time");
    Ok(())
}
