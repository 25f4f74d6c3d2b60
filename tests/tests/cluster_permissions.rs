//! Permissions in a cluster (issue 14): rules live in the replicated
//! catalog, so a rule added at one broker holds at every broker, and one
//! removed at another stops requests everywhere; brokers present the
//! cluster secret to each other's client ports, so a produce a follower
//! forwards to the partition's leader is stored with authentication on.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_client::proto as pb;
use sluice_client::{Admin, Channel, ConnectOptions};
use sluice_tests::cluster::{produce_unredirected, TestCluster};
use sluice_tests::eventually;
use tonic::Code;

const ADMIN: &str = "admin-1f6c0b8e9d2a4735";
const BOB: &str = "bob-7a2e5d1c0f9b4e68";

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn channel(addr: &str, token: &str) -> anyhow::Result<Channel> {
    Ok(ConnectOptions::new().token(token)?.connect(addr)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_hold_at_every_broker_and_forwarded_produces_carry_the_cluster_secret() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nprincipal = \"admin\"\nsha256 = \"{}\"\n\n[[token]]\nprincipal = \"bob\"\nsha256 = \"{}\"\n",
            digest(ADMIN),
            digest(BOB)
        ),
    )?;
    let flags = ["--auth-tokens", tokens.to_str().unwrap_or_default(), "--superusers", "admin"];
    let mut cluster = TestCluster::start_with(3, &flags).await?;
    for id in cluster.ids() {
        cluster.broker_mut(id).token = Some(ADMIN.to_owned());
    }
    cluster.agreed_leader(&cluster.ids(), None).await?;
    let addr = |id: u64| cluster.broker(id).addr.clone();

    let admin = Admin::new(channel(&addr(1), ADMIN)?);
    eventually(Duration::from_secs(20), "the topic is created", || async {
        Ok(admin.create_topic("orders", 3, pb::TopicConfig::default()).await.ok())
    })
    .await?;
    // Every shard led by its preferred broker, so each broker leads some partition and forwards the others.
    let info = sluice_client::ClusterInfo::new(channel(&addr(1), ADMIN)?);
    eventually(Duration::from_secs(20), "every shard is led by its preferred broker", || async {
        let shards = info.metadata().await?.shards;
        let spread = !shards.is_empty()
            && shards.iter().all(|s| s.status.as_ref().is_some_and(|st| st.leader == (s.id - 1) % 3 + 1));
        Ok(spread.then_some(()))
    })
    .await?;

    // Every partition produced at every broker: those a broker does not lead it forwards.
    eventually(Duration::from_secs(20), "every broker stores every partition's produce", || async {
        for id in cluster.ids() {
            for partition in 0..3 {
                if let Err(e) = produce_unredirected(channel(&addr(id), ADMIN)?, "orders", partition, "x").await {
                    anyhow::ensure!(e.code() != Code::Unauthenticated, "a forward was refused: {e:?}");
                    return Ok(None);
                }
            }
        }
        Ok(Some(()))
    })
    .await?;
    let mut forwarded = 0.0;
    for id in cluster.ids() {
        forwarded += cluster.broker(id).metric("sluice_produce_forwarded_total", &[]).await?;
    }
    assert!(forwarded >= 1.0, "some produce was forwarded to its leader ({forwarded})");

    // A rule added at broker 1 holds at broker 3; removed at broker 2, it stops broker 1's next request.
    let refused = produce_unredirected(channel(&addr(3), BOB)?, "orders", 0, "x").await.expect_err("no rule yet");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let rule = pb::AclRule {
        subject: "principal:bob".into(),
        operation: pb::AclOperation::Produce as i32,
        resource: pb::AclResource::Topic as i32,
        pattern: "orders".into(),
        ..Default::default()
    };
    let added = admin.add_acl(rule).await?.rule.unwrap_or_default();
    let bob_topics = |id: u64| {
        let ch = channel(&addr(id), BOB);
        async move { anyhow::Ok(Admin::new(ch?).list_topics().await?.into_iter().map(|t| t.name).collect::<Vec<_>>()) }
    };
    eventually(Duration::from_secs(5), "broker 3 applies the rule", || async {
        Ok(produce_unredirected(channel(&addr(3), BOB)?, "orders", 0, "x").await.ok())
    })
    .await?;
    assert_eq!(bob_topics(3).await?, ["orders"]);
    Admin::new(channel(&addr(2), ADMIN)?).remove_acl(added.id).await?;
    eventually(Duration::from_secs(5), "broker 1 applies the removal", || async {
        let refused = produce_unredirected(channel(&addr(1), BOB)?, "orders", 0, "x").await.err();
        Ok(refused.filter(|e| e.code() == Code::PermissionDenied))
    })
    .await?;
    assert!(bob_topics(1).await?.is_empty(), "bob sees nothing once the rule is gone");
    Ok(())
}
