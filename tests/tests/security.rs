//! TLS and authentication (issue 14, first step): a broker serving TLS
//! with certificates made in the test and bearer tokens from a file. Every
//! request without a listed token is refused `UNAUTHENTICATED` (`401` at the
//! gateway) and changes nothing; health checks stay anonymous; a client
//! certificate from another CA fails the handshake; the certificate is
//! rotated under continuous produce without one failed request; 10,000
//! bad credentials cost bounded memory while a producer is served; a public
//! address without authentication is refused at start.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use sluice_client::proto as pb;
use sluice_client::{Admin, ConnectOptions, Producer, ProducerConfig};
use sluice_tests::pki::{self, TestCa};
use sluice_tests::{eventually, TestBroker};

const TOKEN: &str = "alice-7d1f0c2b9a4e4f0e8c3b";
/// The HMAC key of the JWKS the secured broker trusts.
const JWT_SECRET: &[u8] = b"the secured broker's JWT secret!";

fn token_file(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let digest: String = Sha256::digest(TOKEN.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let rules = "[[certificate]]\nsubject = \"*.clients.test\"\nprincipal = \"service\"\n";
    let tokens = format!("[[token]]\nprincipal = \"alice\"\nroles = [\"ops\"]\nsha256 = \"{digest}\"\n\n{rules}");
    pki::write(dir, "tokens.toml", &tokens)
}

/// A broker with TLS (server certificate for 127.0.0.1 from `ca`, client
/// certificates from `ca` accepted), tokens and the gateway on.
async fn secured(ca: &TestCa, dir: &Path) -> anyhow::Result<TestBroker> {
    let server = ca.issue("broker", &["127.0.0.1", "localhost"])?;
    let cert = pki::write(dir, "server.pem", &server.cert)?;
    let key = pki::write(dir, "server.key", &server.key)?;
    let client_ca = pki::write(dir, "ca.pem", &ca.pem)?;
    let tokens = token_file(dir)?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(JWT_SECRET);
    let jwks = format!(r#"{{"keys":[{{"kty":"oct","kid":"k1","alg":"HS256","k":"{secret}"}}]}}"#);
    let jwks = pki::write(dir, "jwks.json", &jwks)?;
    let args = [
        "--tls-cert",
        cert.to_str().unwrap_or_default(),
        "--tls-key",
        key.to_str().unwrap_or_default(),
        "--tls-client-ca",
        client_ca.to_str().unwrap_or_default(),
        "--auth-tokens",
        tokens.to_str().unwrap_or_default(),
        // Permission rules are permissions.rs's; here both principals may do everything.
        "--superusers",
        "principal:alice,principal:service",
        "--auth-jwks",
        jwks.to_str().unwrap_or_default(),
        "--jwt-issuer",
        "https://id.test",
        "--jwt-audience",
        "sluice",
        "--gateway-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    TestBroker::start_tls(&args, &ca.pem).await
}

fn options(ca: &TestCa) -> ConnectOptions {
    ConnectOptions::new().tls_ca(&ca.pem)
}

/// Produces to partition 0 of `topic`, one message at a time, until told
/// to stop (at most 100,000 messages or 120 s); yields how many it sent,
/// or the first failed send.
fn keep_producing(
    channel: sluice_client::Channel,
    topic: &'static str,
) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<anyhow::Result<u64>>) {
    let producer = Producer::new(channel, ProducerConfig::default());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let (mut sent, deadline) = (0u64, Instant::now() + Duration::from_secs(120));
        while !*stop_rx.borrow_and_update() && sent < 100_000 && Instant::now() < deadline {
            producer.send_to(topic, 0, sluice_client::Message::new(format!("m-{sent}"))).await?;
            sent += 1;
        }
        anyhow::Ok(sent)
    });
    (stop_tx, task)
}

#[tokio::test]
async fn only_a_listed_token_over_tls_gets_in_and_a_refusal_changes_nothing() -> anyhow::Result<()> {
    let ca = TestCa::new("sluice test CA")?;
    let dir = tempfile::tempdir()?;
    let broker = secured(&ca, dir.path()).await?;

    // Health stays anonymous (probes carry no token): TestBroker waited on it already.
    let alice = Admin::new(options(&ca).token(TOKEN)?.connect(&broker.addr)?);
    alice.create_topic("orders", 1, pb::TopicConfig::default()).await?;

    for (who, admin) in [
        ("no token", Admin::new(options(&ca).connect(&broker.addr)?)),
        ("a wrong token", Admin::new(options(&ca).token("alice-guess")?.connect(&broker.addr)?)),
    ] {
        let refused = admin.create_topic("intruder", 1, pb::TopicConfig::default()).await.expect_err(who);
        assert_eq!(refused.code(), Some(tonic::Code::Unauthenticated), "{who}: {refused}");
        let refused = admin.delete_topic("orders").await.expect_err(who);
        assert_eq!(refused.code(), Some(tonic::Code::Unauthenticated), "{who}: {refused}");
        // Neither answer says whether the topic exists.
        let missing = admin.describe_topic("no-such-topic").await.expect_err(who);
        assert_eq!(missing.code(), Some(tonic::Code::Unauthenticated), "{who}: {missing}");
    }
    let names: Vec<String> = alice.list_topics().await?.into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["orders"], "the refused calls changed nothing");

    // Plaintext to the TLS port gets no answer.
    let plain = Admin::new(sluice_client::channel(&format!("http://{}", broker.addr))?);
    assert!(plain.list_topics().await.is_err(), "plaintext against TLS is refused");

    // The gateway: 401 with a challenge without the token, 202 with it.
    let gateway = broker.gateway_addr.clone().ok_or_else(|| anyhow::anyhow!("no gateway"))?;
    let event = [
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/t"),
        ("ce-type", "t"),
    ];
    let refused =
        sluice_tests::http::post_tls((&gateway, &ca.pem, None), "/v1/topics/orders/events", &event, b"{}").await?;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.header("www-authenticate"), Some("Bearer realm=\"sluice\""));
    assert_eq!(refused.json()?["error"]["reason"], "unauthenticated");
    let bearer = format!("Bearer {TOKEN}");
    let mut with_token = event.to_vec();
    with_token.push(("authorization", &bearer));
    let accepted =
        sluice_tests::http::post_tls((&gateway, &ca.pem, None), "/v1/topics/orders/events", &with_token, b"{}").await?;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let stored = alice.describe_topic("orders").await?;
    let latest: u64 = stored.partitions.iter().map(|p| p.latest_offset).sum();
    assert_eq!(latest, 1, "only the authenticated event was stored");
    Ok(())
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_fails_the_handshake() -> anyhow::Result<()> {
    let ca = TestCa::new("sluice test CA")?;
    let dir = tempfile::tempdir()?;
    let broker = secured(&ca, dir.path()).await?;
    let ours = ca.issue("client", &["client.local"])?;
    pki::connect(&broker.addr, &ca.pem, b"h2", Some(&ours)).await?;
    let other = TestCa::new("another CA")?.issue("client", &["client.local"])?;
    // TLS 1.3 reports a refused client certificate on the first read.
    let refused = async {
        use tokio::io::AsyncReadExt;
        let mut stream = pki::connect(&broker.addr, &ca.pem, b"h2", Some(&other)).await?;
        let mut byte = [0u8; 1];
        let read = stream.read(&mut byte).await?;
        anyhow::ensure!(read > 0, "the broker closed the connection");
        anyhow::Ok(())
    };
    let refused = refused.await.expect_err("a foreign client certificate is refused");
    println!("foreign client certificate: {refused}");
    // A client trusting another CA refuses the broker's certificate too.
    assert!(pki::connect(&broker.addr, &TestCa::new("x")?.pem, b"h2", None).await.is_err());
    Ok(())
}

#[tokio::test]
async fn the_certificate_is_rotated_under_continuous_produce_without_a_failed_request() -> anyhow::Result<()> {
    let ca = TestCa::new("sluice test CA")?;
    let dir = tempfile::tempdir()?;
    let broker = secured(&ca, dir.path()).await?;
    let connect = options(&ca).token(TOKEN)?;
    Admin::new(connect.connect(&broker.addr)?).create_topic("rotating", 1, pb::TopicConfig::default()).await?;
    let before = pki::served_certificate(&broker.addr, &ca.pem).await?;

    let (stop_tx, produce) = keep_producing(connect.connect(&broker.addr)?, "rotating");
    let admin = Admin::new(connect.connect(&broker.addr)?);
    eventually(Duration::from_secs(10), "the producer is storing messages", || async {
        Ok((admin.describe_topic("rotating").await?.partitions[0].latest_offset > 0).then_some(()))
    })
    .await?;

    // New certificate and key, written over the old files (as a renewal does).
    let renewed = ca.issue("broker renewed", &["127.0.0.1", "localhost"])?;
    pki::write(dir.path(), "server.key", &renewed.key)?;
    pki::write(dir.path(), "server.pem", &renewed.cert)?;
    let expected = pki::der(&renewed.cert)?;
    eventually(Duration::from_secs(10), "new connections get the renewed certificate", || async {
        Ok((pki::served_certificate(&broker.addr, &ca.pem).await? == expected).then_some(()))
    })
    .await?;
    assert_ne!(before, expected);
    // New connections with the renewed certificate work too.
    let fresh = Admin::new(connect.connect(&broker.addr)?);
    assert_eq!(fresh.list_topics().await?.len(), 1);
    stop_tx.send(true)?;
    let sent = produce.await??;
    assert!(sent > 0, "the producer produced across the rotation");
    let described = fresh.describe_topic("rotating").await?;
    assert_eq!(described.partitions[0].latest_offset, sent, "every send succeeded and was stored once");
    println!("{sent} messages produced across the rotation, none failed");
    Ok(())
}

#[tokio::test]
async fn a_public_address_without_authentication_is_refused_at_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let output = tokio::process::Command::new(sluice_tests::binary("sluice-broker"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--metrics-listen", "", "--gateway-listen", ""])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output).await??;
    assert!(!output.status.success(), "refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--insecure-allow-anonymous") && stderr.contains("auth-tokens"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "refused before touching the data dir");
    Ok(())
}

/// Resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_failed_authentications_cost_bounded_memory_and_others_are_served() -> anyhow::Result<()> {
    let ca = TestCa::new("sluice test CA")?;
    let dir = tempfile::tempdir()?;
    let mut broker = secured(&ca, dir.path()).await?;
    // /metrics needs credentials too: nothing without them, the counters with them.
    assert!(broker.scrape().await?.starts_with("HTTP/1.1 401"), "an anonymous scrape is refused");
    broker.token = Some(TOKEN.into());
    assert!(broker.scrape().await?.starts_with("HTTP/1.1 200"));
    let pid = broker.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let alice = options(&ca).token(TOKEN)?;
    Admin::new(alice.connect(&broker.addr)?).create_topic("served", 1, pb::TopicConfig::default()).await?;

    // A legitimate producer keeps producing throughout.
    let (stop_tx, served) = keep_producing(alice.connect(&broker.addr)?, "served");

    let seed: u64 = std::env::var("SLUICE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed}");
    let before = rss_kib(pid)?;
    let oversized = "x".repeat(9 << 10);
    let mut attempts = Vec::new();
    for i in 0..10_000u64 {
        // Missing, guessed, oversized, near-miss and malformed credentials (authorization values),
        // and JWTs: garbage in a JWT's shape, unsigned, signed with another key, expired.
        let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let claims = |exp: i64| serde_json::json!({"iss": "https://id.test", "aud": "sluice", "sub": "x", "exp": exp});
        let signed = |claims: serde_json::Value, secret: &[u8]| {
            let header = jsonwebtoken::Header { kid: Some("k1".into()), ..Default::default() };
            jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret))
        };
        let n = seed.wrapping_mul(i + 1);
        let header = match (seed.wrapping_add(i)) % 9 {
            0 => None,
            1 => Some(format!("Bearer guess-{n}")),
            2 => Some(format!("Bearer {oversized}")),
            3 => Some(format!("Bearer {TOKEN}-almost-{i}")),
            4 => Some(format!("Basic {i:x}")),
            5 => Some(format!("Bearer eyJ{n:x}.eyJ{}.{n:x}", b64(&format!("{{\"sub\":{i}")))),
            6 => {
                Some(format!("Bearer {}.{}.", b64(r#"{"alg":"none","kid":"k1"}"#), b64(&claims(i64::MAX).to_string())))
            }
            7 => Some(format!("Bearer {}", signed(claims(i64::MAX), format!("forged-{n}").as_bytes())?)),
            _ => Some(format!("Bearer {}", signed(claims(1), JWT_SECRET)?)),
        };
        attempts.push(header);
    }
    // Eight connections, each making 1,250 refused calls in turn.
    let mut tasks = Vec::new();
    for chunk in attempts.chunks(1250) {
        let (chunk, ca_pem, addr) = (chunk.to_vec(), ca.pem.clone(), broker.addr.clone());
        tasks.push(tokio::spawn(async move {
            let channel = ConnectOptions::new().tls_ca(&ca_pem).connect(&addr)?;
            let mut refused = 0u64;
            for token in chunk {
                let mut request = tonic::Request::new(pb::ListTopicsRequest {});
                if let Some(value) = token {
                    request.metadata_mut().insert("authorization", value.parse()?);
                }
                let mut client = pb::admin_client::AdminClient::new(channel.clone());
                let answer = client.list_topics(request).await;
                let status = answer.expect_err("a bad credential is refused");
                anyhow::ensure!(status.code() == tonic::Code::Unauthenticated, "refused as unauthenticated: {status}");
                refused += 1;
            }
            anyhow::Ok(refused)
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await??;
    }
    assert_eq!(refused, 10_000);
    let after = rss_kib(pid)?;
    println!("broker RSS {before} KiB before, {after} KiB after 10,000 refusals");
    assert!(after < before + 64 * 1024, "memory stays bounded: {before} -> {after} KiB");
    assert!(broker.metric("sluice_auth_failures_total", &[]).await? >= 10_000.0);

    stop_tx.send(true)?;
    let sent = served.await??;
    assert!(sent > 0, "the legitimate producer was served meanwhile");
    let stored = Admin::new(alice.connect(&broker.addr)?).describe_topic("served").await?;
    assert_eq!(stored.partitions[0].latest_offset, sent, "every legitimate send was stored");
    Ok(())
}

#[tokio::test]
async fn a_client_certificate_a_rule_names_authenticates_without_a_token() -> anyhow::Result<()> {
    let ca = TestCa::new("sluice test CA")?;
    let dir = tempfile::tempdir()?;
    let broker = secured(&ca, dir.path()).await?;
    let named = ca.issue("orders.clients.test", &["orders.clients.test"])?;
    let stranger = ca.issue("stranger", &["stranger.example"])?;

    let service = Admin::new(options(&ca).tls_identity(&named.cert, &named.key).connect(&broker.addr)?);
    service.create_topic("by-certificate", 1, pb::TopicConfig::default()).await?;

    let nobody = Admin::new(options(&ca).tls_identity(&stranger.cert, &stranger.key).connect(&broker.addr)?);
    let refused = nobody.list_topics().await.expect_err("a certificate no rule names");
    assert_eq!(refused.code(), Some(tonic::Code::Unauthenticated), "{refused}");
    assert!(refused.to_string().contains("maps to no principal"), "{refused}");

    // A token, when sent, decides: a wrong one is refused even over a named certificate.
    let wrong = options(&ca).tls_identity(&named.cert, &named.key).token("not-a-token")?;
    let refused = Admin::new(wrong.connect(&broker.addr)?).list_topics().await.expect_err("a wrong token");
    assert_eq!(refused.code(), Some(tonic::Code::Unauthenticated), "{refused}");

    // The gateway maps the same certificate.
    let gateway = broker.gateway_addr.clone().ok_or_else(|| anyhow::anyhow!("no gateway"))?;
    let event = [
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/t"),
        ("ce-type", "t"),
    ];
    let path = "/v1/topics/by-certificate/events";
    let accepted = sluice_tests::http::post_tls((&gateway, &ca.pem, Some(&named)), path, &event, b"{}").await?;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let refused = sluice_tests::http::post_tls((&gateway, &ca.pem, Some(&stranger)), path, &event, b"{}").await?;
    assert_eq!(refused.status, 401, "{refused:?}");
    let stored = service.describe_topic("by-certificate").await?;
    assert_eq!(stored.partitions[0].latest_offset, 1, "only the named certificate's event was stored");
    Ok(())
}

#[tokio::test]
async fn metrics_over_tls_when_asked() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = TestCa::new("sluice test CA")?;
    let dir = tempfile::tempdir()?;
    let server = ca.issue("broker", &["127.0.0.1"])?;
    let cert = pki::write(dir.path(), "server.pem", &server.cert)?;
    let key = pki::write(dir.path(), "server.key", &server.key)?;
    let (cert, key) = (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
    let args = ["--tls-cert", &cert, "--tls-key", &key, "--metrics-listen", "127.0.0.1:0", "--metrics-tls"];
    let broker = TestBroker::start_tls(&args, &ca.pem).await?;
    let addr = broker.metrics_addr.clone().ok_or_else(|| anyhow::anyhow!("no metrics address"))?;
    let mut stream = pki::connect(&addr, &ca.pem, b"http/1.1", None).await?;
    stream.write_all(format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes()).await?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("sluice_"), "{answer}");
    let plaintext = broker.scrape().await.map(|t| t.starts_with("HTTP/1.1 200")).unwrap_or(false);
    assert!(!plaintext, "no plaintext scrape");
    Ok(())
}
