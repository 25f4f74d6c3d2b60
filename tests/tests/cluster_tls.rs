//! Mutual TLS between brokers (issue 14): three brokers whose cluster links
//! are TLS with certificates made in the test, client ports TLS with
//! tokens. The cluster forms, replicates, and forwards a produce at a
//! follower to its leader over the cluster link; the cluster listener
//! completes no handshake with a peer that has no certificate or one from
//! another CA, and answers no plaintext; a rotated cluster certificate is
//! served to new connections and a broker restarted after the rotation
//! rejoins with it.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_client::proto as pb;
use sluice_client::{Admin, Channel, ConnectOptions};
use sluice_tests::cluster::{produce_unredirected, TestCluster};
use sluice_tests::pki::{self, TestCa};
use sluice_tests::{eventually, read_all};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN: &str = "admin-5c2e8f0a1b7d4963";

/// The first bytes of an HTTP/2 connection: the preface and an empty SETTINGS frame.
const H2_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn channel(addr: &str, ca: &str) -> anyhow::Result<Channel> {
    Ok(ConnectOptions::new().token(ADMIN)?.tls_ca(ca).connect(addr)?)
}

/// What the cluster listener at `addr` sends back to an HTTP/2 hello over
/// TLS trusting `ca`, presenting `client` (empty: it closed the connection
/// or failed it).
async fn hello(addr: &str, ca: &str, client: Option<&pki::Issued>) -> Vec<u8> {
    let Ok(mut stream) = pki::connect(addr, ca, b"h2", client).await else { return Vec::new() };
    if stream.write_all(H2_HELLO).await.is_err() {
        return Vec::new();
    }
    let mut answer = vec![0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await {
        Ok(Ok(n)) => answer[..n].to_vec(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_talk_mutual_tls_forward_over_it_and_refuse_strangers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new("sluice test CA")?;
    let cluster_ca = TestCa::new("sluice cluster CA")?;
    let rogue_ca = TestCa::new("someone else's CA")?;
    let server = ca.issue("broker", &["127.0.0.1"])?;
    let peer = cluster_ca.issue("broker", &["127.0.0.1"])?;
    let files = [
        pki::write(dir.path(), "server.pem", &server.cert)?,
        pki::write(dir.path(), "server.key", &server.key)?,
        pki::write(dir.path(), "cluster.pem", &peer.cert)?,
        pki::write(dir.path(), "cluster.key", &peer.key)?,
        pki::write(dir.path(), "cluster-ca.pem", &cluster_ca.pem)?,
    ];
    let digest: String = Sha256::digest(ADMIN.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let tokens =
        pki::write(dir.path(), "tokens.toml", &format!("[[token]]\nprincipal = \"admin\"\nsha256 = \"{digest}\"\n"))?;
    let path = |p: &std::path::PathBuf| p.to_str().unwrap_or_default().to_owned();
    let [cert, key, cluster_cert, cluster_key, cluster_ca_file] = files.each_ref().map(path);
    let tokens = path(&tokens);
    let flags = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--auth-tokens",
        &tokens,
        "--superusers",
        "admin",
        "--cluster-tls-cert",
        &cluster_cert,
        "--cluster-tls-key",
        &cluster_key,
        "--cluster-tls-ca",
        &cluster_ca_file,
    ];
    let mut cluster = TestCluster::start_tls(3, &flags, &ca.pem).await?;
    for id in cluster.ids() {
        cluster.broker_mut(id).token = Some(ADMIN.to_owned());
    }
    cluster.agreed_leader(&cluster.ids(), None).await?;
    let addrs: Vec<String> = cluster.brokers.iter().map(|b| b.addr.clone()).collect();
    let addr = |id: u64| addrs[(id - 1) as usize].clone();

    let admin = Admin::new(channel(&addr(1), &ca.pem)?);
    eventually(Duration::from_secs(20), "the topic is created", || async {
        Ok(admin.create_topic("payments", 3, pb::TopicConfig::default()).await.ok())
    })
    .await?;
    // Every partition produced at every broker: each forwards those it does not lead, over the cluster link.
    let mut sent = 0;
    eventually(Duration::from_secs(30), "every broker stores every partition's produce", || async {
        for id in cluster.ids() {
            for partition in 0..3 {
                let value = format!("from-{id}-to-{partition}");
                if produce_unredirected(channel(&addr(id), &ca.pem)?, "payments", partition, &value).await.is_err() {
                    return Ok(None);
                }
            }
        }
        Ok(Some(()))
    })
    .await?;
    sent += 9;
    let mut forwarded = 0.0;
    for id in cluster.ids() {
        forwarded += cluster.broker(id).metric("sluice_produce_forwarded_total", &[]).await?;
    }
    assert!(forwarded >= 1.0, "a follower forwarded a produce to its leader ({forwarded})");

    // Strangers: the cluster listener shakes hands only with certificates of the cluster CA.
    let listener = cluster.cluster_addrs[0].clone();
    assert!(!hello(&listener, &cluster_ca.pem, Some(&peer)).await.is_empty(), "a peer's certificate is answered");
    let rogue = rogue_ca.issue("broker", &["127.0.0.1"])?;
    assert!(hello(&listener, &cluster_ca.pem, Some(&rogue)).await.is_empty(), "another CA's certificate is refused");
    assert!(hello(&listener, &cluster_ca.pem, None).await.is_empty(), "no certificate is refused");
    let mut plain = tokio::net::TcpStream::connect(&listener).await?;
    plain.write_all(H2_HELLO).await?;
    let mut answer = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut answer)).await;
    assert!(!matches!(read, Ok(Ok(n)) if n >= 9 && answer[3] == 4), "plaintext HTTP/2 gets no SETTINGS: {read:?}");

    // Rotation: a new cluster certificate is served to new connections, and a broker killed and
    // restarted afterwards (every connection to and from it new) rejoins and catches up.
    let rotated = cluster_ca.issue("broker-rotated", &["127.0.0.1"])?;
    pki::write(dir.path(), "cluster.key", &rotated.key)?;
    pki::write(dir.path(), "cluster.pem", &rotated.cert)?;
    let rotated_der = pki::der(&rotated.cert)?;
    for listener in cluster.cluster_addrs.clone() {
        eventually(Duration::from_secs(10), "the rotated cluster certificate is served", || async {
            let served = pki::served_certificate(&listener, &cluster_ca.pem).await.ok();
            Ok(served.filter(|s| *s == rotated_der).map(drop))
        })
        .await?;
    }
    cluster.broker_mut(3).kill9().await?;
    for partition in 0..3 {
        let value = format!("while-3-was-down-{partition}");
        eventually(Duration::from_secs(20), "a produce while broker 3 is down", || async {
            Ok(produce_unredirected(channel(&addr(1), &ca.pem)?, "payments", partition, &value).await.ok())
        })
        .await?;
        sent += 1;
    }
    cluster.broker_mut(3).restart().await?;
    let three = channel(&addr(3), &ca.pem)?;
    eventually(Duration::from_secs(30), "broker 3 serves every record after rejoining", || async {
        let mut total = 0;
        for partition in 0..3 {
            total += read_all(three.clone(), "payments", partition).await.map(|r| r.len()).unwrap_or(0);
        }
        Ok((total == sent).then_some(()))
    })
    .await?;
    Ok(())
}
