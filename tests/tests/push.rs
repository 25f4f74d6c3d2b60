//! Push subscriptions against a real HTTP endpoint (`Sink`, axum on
//! 127.0.0.1): events go out in CloudEvents binary or batch mode, each
//! answer settles them as documented (2xx, partial failure, Retry-After,
//! errors, timeouts, refused connections), concurrency stays under its cap,
//! and endpoints outside the broker's allowlist are refused.

use std::time::Duration;

use sluice_client::proto as pb;
use sluice_client::Admin;
use sluice_tests::http::post;
use sluice_tests::sink::{Received, Reply, Sink};
use sluice_tests::{eventually, group_config, produce_values, read_all, TestBroker};

const WAIT: Duration = Duration::from_secs(20);

/// A broker that may push to 127.0.0.1 (gateway on), with topic `events` of one partition.
async fn push_broker() -> anyhow::Result<TestBroker> {
    let broker =
        TestBroker::start_with(&["--gateway-listen", "127.0.0.1:0", "--push-allowed-endpoints", "127.0.0.1"]).await?;
    Admin::new(broker.channel()).create_topic("events", 1, pb::TopicConfig::default()).await?;
    Ok(broker)
}

fn push(endpoint: String, batch_size: u32) -> pb::PushConfig {
    pb::PushConfig { endpoint, batch_size, ..Default::default() }
}

/// Creates group `name` on `events` pushing with `push` (ack deadline 2 s, fast backoff).
async fn push_group(broker: &TestBroker, name: &str, push: pb::PushConfig) -> anyhow::Result<()> {
    let config = pb::GroupConfig { push: Some(push), ..group_config("events", 2000) };
    Admin::new(broker.channel()).create_group(name, config).await?;
    Ok(())
}

/// Waits until group `name` has nothing left to deliver or in flight.
async fn drained(broker: &TestBroker, name: &str) -> anyhow::Result<()> {
    let admin = Admin::new(broker.channel());
    eventually(WAIT, &format!("group {name} drained"), || {
        let admin = admin.clone();
        async move {
            let g = admin.describe_group(name).await?;
            Ok((g.backlog_messages == 0 && g.in_flight == 0).then_some(()))
        }
    })
    .await
}

/// The `sluice-dlq-reason` header of a dead letter (empty without one).
fn dead_letter_reason(record: &pb::Record) -> String {
    let reason = record.headers.iter().find(|h| h.key == "sluice-dlq-reason");
    reason.map(|h| String::from_utf8_lossy(&h.value).into_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_pushed_in_binary_mode_and_acked() -> anyhow::Result<()> {
    let broker = push_broker().await?;
    let sink = Sink::start(|_| Reply::ok()).await?;
    let mut config = push(sink.url("/hook"), 1);
    config.headers.insert("authorization".into(), "Bearer secret".into());
    push_group(&broker, "hook", config).await?;

    let gateway = broker.gateway_addr.clone().expect("gateway on");
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", "order-1"),
        ("ce-source", "/shop"),
        ("ce-type", "order.created"),
        ("content-type", "text/plain"),
    ];
    let answer = post(&gateway, "/v1/topics/events/events", &headers, b"hello").await?;
    assert_eq!(answer.status, 202);
    produce_values(broker.channel(), "events", ["plain".to_owned()]).await?;

    let got = sink.wait_until(WAIT, "two pushes", |r| r.len() >= 2).await?;
    let first = &got[0];
    assert_eq!(first.header("ce-id"), "order-1");
    assert_eq!(first.header("ce-type"), "order.created");
    assert_eq!(first.header("ce-source"), "/shop");
    assert_eq!(first.header("ce-deliveryattempt"), "1");
    assert_eq!(first.header("sluice-delivery-attempt"), "1");
    assert_eq!(first.header("content-type"), "text/plain");
    assert_eq!(first.header("authorization"), "Bearer secret", "the push config's headers are sent");
    assert_eq!(first.body.as_ref(), b"hello");
    let second = &got[1];
    assert_eq!(second.header("ce-id"), "events/0/1", "a plain message gets a stable id");
    assert_eq!(second.header("ce-type"), "dev.sluice.message");
    assert_eq!(second.body.as_ref(), b"plain");
    drained(&broker, "hook").await?;

    let info = Admin::new(broker.channel()).describe_group("hook").await?;
    let shown = info.config.and_then(|c| c.push).expect("the push config is shown");
    assert_eq!(shown.headers.get("authorization").map(String::as_str), Some("(set)"), "header values are not shown");
    // Acked: nothing comes again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(sink.received().len(), 2, "acked events are not pushed again");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_failure_redelivers_only_the_named_events() -> anyhow::Result<()> {
    let broker = push_broker().await?;
    let mut first = true;
    let sink = Sink::start(move |_| {
        if std::mem::take(&mut first) {
            Reply::PartialFailure(vec!["events/0/3".into(), "events/0/7".into()])
        } else {
            Reply::ok()
        }
    })
    .await?;
    produce_values(broker.channel(), "events", (0..10).map(|i| format!("{{\"n\":{i}}}"))).await?;
    let mut config = push(sink.url("/batch"), 10);
    config.max_batching_window_ms = 300;
    push_group(&broker, "batch", config).await?;

    sink.wait_until(WAIT, "the failed events again", |r| r.iter().map(|x| x.events().len()).sum::<usize>() >= 12)
        .await?;
    drained(&broker, "batch").await?;
    let got = sink.received();
    assert_eq!(got[0].header("content-type"), "application/cloudevents-batch+json");
    let batch = got[0].events();
    assert_eq!(batch.len(), 10, "one request of ten");
    assert!(batch.iter().all(|e| e.attempt == 1));
    let again: Vec<(String, u32)> = got[1..].iter().flat_map(Received::events).map(|e| (e.id, e.attempt)).collect();
    let mut again_sorted = again.clone();
    again_sorted.sort();
    assert_eq!(again_sorted, vec![("events/0/3".into(), 2), ("events/0/7".into(), 2)], "only the failed ones, again");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() -> anyhow::Result<()> {
    let broker = push_broker().await?;
    let mut first = true;
    let sink =
        Sink::start(move |_| if std::mem::take(&mut first) { Reply::RetryAfter(429, 2) } else { Reply::ok() }).await?;
    push_group(&broker, "slow", push(sink.url("/"), 1)).await?;
    produce_values(broker.channel(), "events", ["x".to_owned()]).await?;

    let got = sink.wait_until(WAIT, "the retry", |r| r.len() >= 2).await?;
    let waited = got[1].at.duration_since(got[0].at);
    // The group's own backoff is 50 ms: only Retry-After explains the wait.
    assert!(waited >= Duration::from_millis(1900), "retried after {waited:?}, Retry-After said 2 s");
    assert_eq!(got[1].events()[0].attempt, 2);
    drained(&broker, "slow").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pushes_end_in_the_dead_letter_topic_with_the_answer_as_reason() -> anyhow::Result<()> {
    let broker = push_broker().await?;
    let sink = Sink::start(|_| Reply::Status(500, "kaboom: database down".into())).await?;
    let refused_port = sluice_tests::ports::reserve_addr()?;
    for (name, endpoint) in [("fails", sink.url("/")), ("refused", format!("http://{refused_port}/"))] {
        let config = pb::GroupConfig {
            push: Some(push(endpoint, 1)),
            max_delivery_attempts: Some(2),
            dead_letter_topic: format!("{name}-dlq"),
            ..group_config("events", 2000)
        };
        Admin::new(broker.channel()).create_group(name, config).await?;
    }
    produce_values(broker.channel(), "events", ["doomed".to_owned()]).await?;

    for (name, expected) in [("fails", "HTTP 500: kaboom: database down"), ("refused", "could not connect")] {
        let dlq = format!("{name}-dlq");
        let records = eventually(WAIT, &format!("a dead letter in {dlq}"), || {
            let ch = broker.channel();
            let dlq = dlq.clone();
            async move { Ok(read_all(ch, &dlq, 0).await.ok().filter(|r| !r.is_empty())) }
        })
        .await?;
        let reason = dead_letter_reason(&records[0]);
        assert!(reason.contains(expected), "{name}: dead-letter reason {reason:?} should contain {expected:?}");
        assert_eq!(records[0].value.as_ref(), b"doomed");
    }
    let attempts: Vec<u32> = sink.events().iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, vec![1, 2], "two attempts, then the dead-letter topic");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_past_its_timeout_is_retried() -> anyhow::Result<()> {
    let broker = push_broker().await?;
    let mut first = true;
    let sink = Sink::start(move |_| {
        if std::mem::take(&mut first) {
            Reply::Slow(Duration::from_secs(5), Box::new(Reply::ok()))
        } else {
            Reply::ok()
        }
    })
    .await?;
    let mut config = push(sink.url("/"), 1);
    config.timeout_ms = 300;
    push_group(&broker, "timeout", config).await?;
    produce_values(broker.channel(), "events", ["late".to_owned()]).await?;

    let got = sink.wait_until(WAIT, "the retry after the timeout", |r| r.len() >= 2).await?;
    assert_eq!(got[1].events()[0].attempt, 2);
    let waited = got[1].at.duration_since(got[0].at);
    assert!(waited < Duration::from_secs(4), "retried after {waited:?}: the timeout (300 ms) should have cut it");
    drained(&broker, "timeout").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_stays_under_its_cap() -> anyhow::Result<()> {
    let broker = push_broker().await?;
    let sink = Sink::start(|_| Reply::Slow(Duration::from_millis(100), Box::new(Reply::ok()))).await?;
    let mut config = push(sink.url("/"), 1);
    config.max_concurrency = 3;
    push_group(&broker, "capped", config).await?;
    produce_values(broker.channel(), "events", (0..40).map(|i| format!("m{i}"))).await?;

    sink.wait_until(WAIT, "40 events", |r| r.len() >= 40).await?;
    drained(&broker, "capped").await?;
    let most = sink.max_in_flight();
    assert!(most <= 3, "{most} requests at once; the cap is 3");
    assert!(most >= 2, "requests should overlap up to the cap, saw at most {most}");
    let mut ids: Vec<String> = sink.events().into_iter().map(|e| e.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "every event pushed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_group_pushes_one_request_at_a_time_in_offset_order_across_a_retry() -> anyhow::Result<()> {
    let broker = push_broker().await?;
    Admin::new(broker.channel()).create_topic("ordered", 2, pb::TopicConfig::default()).await?;
    // The fifth request fails once; its event must come again before anything behind it.
    let mut answered = 0;
    let sink = Sink::start(move |_| {
        answered += 1;
        if answered == 5 {
            Reply::Status(500, "once".into())
        } else {
            Reply::Slow(Duration::from_millis(2), Box::new(Reply::ok()))
        }
    })
    .await?;
    let config = pb::GroupConfig {
        push: Some(pb::PushConfig { max_concurrency: 8, ..push(sink.url("/"), 1) }),
        mode: pb::GroupMode::Ordered as i32,
        ..group_config("ordered", 2000)
    };
    Admin::new(broker.channel()).create_group("in-order", config).await?;
    produce_values(broker.channel(), "ordered", (0..40).map(|i| format!("m{i}"))).await?;

    sink.wait_until(WAIT, "41 requests", |r| r.len() >= 41).await?;
    drained(&broker, "in-order").await?;
    assert_eq!(sink.max_in_flight(), 1, "an ordered group has one request at a time, whatever max_concurrency says");
    let got = sink.events();
    assert_eq!(got.len(), 41, "40 events, one of them twice: {got:?}");
    // Per partition, the offsets received never go back, and only the failed one repeats.
    let mut last: std::collections::HashMap<String, (u64, u32)> = Default::default();
    for event in &got {
        let (partition, offset) =
            event.id.trim_start_matches("ordered/").split_once('/').expect("a plain message's id");
        let offset: u64 = offset.parse()?;
        if let Some(&(before, attempt)) = last.get(partition) {
            let again = offset == before && event.attempt == attempt + 1;
            assert!(offset > before || again, "partition {partition}: offset {offset} after {before}: {got:?}");
        }
        last.insert(partition.to_owned(), (offset, event.attempt));
    }
    assert_eq!(got.iter().filter(|e| e.attempt == 2).count(), 1, "the failed event came again, once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_outside_the_allowlist_are_refused() -> anyhow::Result<()> {
    let open = TestBroker::start().await?;
    let admin = Admin::new(open.channel());
    admin.create_topic("events", 1, pb::TopicConfig::default()).await?;
    let create = |endpoint: &str| {
        let config = pb::GroupConfig { push: Some(push(endpoint.into(), 1)), ..group_config("events", 2000) };
        let admin = admin.clone();
        async move { admin.create_group("g", config).await }
    };
    let refused = create("http://127.0.0.1:9/").await.expect_err("no allowlist: pushes nowhere");
    let sluice_client::Error::Status(status) = refused else { panic!("a gRPC status: {refused}") };
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("push-allowed-endpoints"), "{}", status.message());

    let broker = push_broker().await?;
    let admin = Admin::new(broker.channel());
    for (endpoint, why) in [
        ("http://127.0.0.2:9/", "an address not listed"),
        ("https://127.0.0.2:9/", "https to an address not listed"),
        ("ftp://127.0.0.1/", "not http"),
    ] {
        let config = pb::GroupConfig { push: Some(push(endpoint.into(), 1)), ..group_config("events", 2000) };
        let refused = admin.create_group("g", config).await.expect_err(why);
        assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument), "{why}: {refused}");
    }
    let mut too_slow = push("http://127.0.0.1:9/".into(), 1);
    too_slow.timeout_ms = 5000;
    let config = pb::GroupConfig { push: Some(too_slow), ..group_config("events", 2000) };
    let refused = admin.create_group("g", config).await.expect_err("timeout past the lease");
    assert!(refused.to_string().contains("ack deadline"), "{refused}");

    // Listed: accepted; and a push group can become a pull group again.
    let config = pb::GroupConfig { push: Some(push("http://127.0.0.1:9/".into(), 1)), ..group_config("events", 2000) };
    admin.create_group("g", config).await?;
    let info = admin.stop_pushing("g").await?;
    assert!(info.config.and_then(|c| c.push).is_none(), "push removed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_while_pushing_loses_nothing_and_repeats_only_what_was_in_flight() -> anyhow::Result<()> {
    // `make soak` runs more kills.
    let kills: usize = std::env::var("SLUICE_PUSH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let events = 200 + 200 * kills;
    const CONCURRENCY: u32 = 4;
    const BATCH: u32 = 5;
    let mut broker = push_broker().await?;
    let sink = Sink::start(|_| Reply::Slow(Duration::from_millis(10), Box::new(Reply::ok()))).await?;
    produce_values(broker.channel(), "events", (0..events).map(|i| format!("m{i}"))).await?;
    let mut config = push(sink.url("/"), BATCH);
    config.max_concurrency = CONCURRENCY;
    push_group(&broker, "crash", config).await?;

    for kill in 1..=kills {
        let target = events * kill / (kills + 1);
        sink.wait_until(WAIT, &format!("{target} events pushed"), |r| {
            r.iter().map(|x| x.events().len()).sum::<usize>() >= target
        })
        .await?;
        broker.kill9().await?;
        broker.restart().await?;
    }
    drained(&broker, "crash").await?;

    let pushed = sink.events();
    let mut ids: Vec<&str> = pushed.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events, "every event pushed at least once");
    let duplicates = pushed.len() - events;
    // In flight at a kill: the requests at the endpoint and the answered ones whose acks were
    // being written (at most as many again).
    let bound = kills * 2 * (CONCURRENCY * BATCH) as usize;
    println!("{kills} SIGKILLs while pushing {events} events: {duplicates} pushed again (bound {bound})");
    assert!(duplicates <= bound, "{duplicates} events pushed twice; at most {bound} were in flight at the kills");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_was_down_gets_the_backlog_within_its_concurrency() -> anyhow::Result<()> {
    // `make soak` runs this with the handler down for a minute.
    let down =
        Duration::from_secs(std::env::var("SLUICE_PUSH_DOWN_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5));
    const EVENTS: usize = 100;
    let broker = push_broker().await?;
    let back_at = std::time::Instant::now() + down;
    let sink = Sink::start(move |_| {
        if std::time::Instant::now() < back_at {
            Reply::Status(503, "down for maintenance".into())
        } else {
            Reply::Slow(Duration::from_millis(20), Box::new(Reply::ok()))
        }
    })
    .await?;
    let config = pb::GroupConfig {
        push: Some(pb::PushConfig { max_concurrency: 4, ..push(sink.url("/"), 1) }),
        max_delivery_attempts: Some(100),
        dead_letter_topic: "down-dlq".into(),
        ..group_config("events", 2000)
    };
    Admin::new(broker.channel()).create_group("down", config).await?;
    produce_values(broker.channel(), "events", (0..EVENTS).map(|i| format!("m{i}"))).await?;

    let within = down + WAIT;
    let admin = Admin::new(broker.channel());
    eventually(within, "the backlog drained once the handler is back", || {
        let admin = admin.clone();
        async move {
            let g = admin.describe_group("down").await?;
            Ok((g.backlog_messages == 0 && g.in_flight == 0).then_some(()))
        }
    })
    .await?;
    let failed = sink.received().iter().filter(|r| r.at < back_at).count();
    let info = admin.describe_group("down").await?;
    println!("handler down {down:?}: {failed} requests failed meanwhile, at most {} at once", sink.max_in_flight());
    assert_eq!(info.dead_lettered, 0, "nothing with attempts left is dead-lettered");
    assert!(sink.max_in_flight() <= 4, "{} requests at once; the cap is 4", sink.max_in_flight());
    assert!(
        failed < EVENTS,
        "{failed} requests while the handler was down: failing pushes should slow down, not try every event"
    );
    let mut ids: Vec<String> = sink.events().into_iter().map(|e| e.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), EVENTS);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_carry_a_token_signed_for_their_endpoint_unless_the_config_sets_its_own() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let key_file = dir.path().join("push.key");
    std::fs::write(&key_file, key.serialize_pem())?;
    let args = [
        "--push-allowed-endpoints",
        "127.0.0.1",
        "--push-jwt-key",
        key_file.to_str().unwrap_or_default(),
        "--push-jwt-issuer",
        "sluice-test",
    ];
    let broker = TestBroker::start_with(&args).await?;
    Admin::new(broker.channel()).create_topic("events", 1, pb::TopicConfig::default()).await?;
    let sink = Sink::start(|_| Reply::ok()).await?;
    push_group(&broker, "signed", push(sink.url("/signed"), 1)).await?;
    let mut own = push(sink.url("/own"), 1);
    own.headers.insert("authorization".into(), "Bearer theirs".into());
    push_group(&broker, "own", own).await?;
    produce_values(broker.channel(), "events", ["one".to_owned()]).await?;
    let got = sink.wait_until(WAIT, "a push to each endpoint", |r| r.len() >= 2).await?;

    let signed = got.iter().find(|r| r.header("authorization") != "Bearer theirs").expect("the signed push");
    let token = signed.header("authorization");
    let token = token.strip_prefix("Bearer ").expect("a bearer token");
    let public = jsonwebtoken::DecodingKey::from_ec_pem(key.public_key_pem().as_bytes())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[sink.url("/signed")]);
    validation.set_issuer(&["sluice-test"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, &public, &validation)?.claims;
    let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    assert_eq!(lifetime, 300, "short-lived: {claims}");
    assert_eq!(jsonwebtoken::decode_header(token)?.kid.as_deref(), Some("sluice-push"));
    // A token made for one endpoint is refused by another.
    validation.set_audience(&[sink.url("/own")]);
    assert!(jsonwebtoken::decode::<serde_json::Value>(token, &public, &validation).is_err());
    let own = got.iter().filter(|r| r.header("authorization") == "Bearer theirs").count();
    assert_eq!(own, 1, "a configured header is sent instead of a token");

    // The key rotated in place (written by rename): later pushes are signed with the new one.
    let rotated = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    sluice_tests::pki::write(dir.path(), "push.key", &rotated.serialize_pem())?;
    let public = jsonwebtoken::DecodingKey::from_ec_pem(rotated.public_key_pem().as_bytes())?;
    validation.set_audience(&[sink.url("/signed")]);
    eventually(WAIT, "a push signed with the rotated key", || async {
        let seen = sink.received().len();
        produce_values(broker.channel(), "events", ["again".to_owned()]).await?;
        let got = sink.wait_until(WAIT, "the next pushes", |r| r.len() >= seen + 2).await?;
        let verified = got[seen..].iter().any(|r| {
            let token = r.header("authorization");
            let token = token.strip_prefix("Bearer ").unwrap_or_default();
            jsonwebtoken::decode::<serde_json::Value>(token, &public, &validation).is_ok()
        });
        Ok(verified.then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_pushed_to_over_tls_trusting_the_configured_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = sluice_tests::pki::TestCa::new("handlers' CA")?;
    let handler = ca.issue("handler", &["127.0.0.1"])?;
    let ca_file = sluice_tests::pki::write(dir.path(), "push-ca.pem", &ca.pem)?;
    let args = ["--push-allowed-endpoints", "127.0.0.1", "--push-tls-ca", ca_file.to_str().unwrap_or_default()];
    let broker = TestBroker::start_with(&args).await?;
    Admin::new(broker.channel()).create_topic("events", 1, pb::TopicConfig::default()).await?;
    let sink = Sink::start_tls(&handler.cert, &handler.key, |_| Reply::ok()).await?;
    assert!(sink.url("/hook").starts_with("https://"));
    push_group(&broker, "secure", push(sink.url("/hook"), 1)).await?;
    produce_values(broker.channel(), "events", ["over-tls".to_owned()]).await?;
    sink.wait_until(WAIT, "the push over TLS", |r| !r.is_empty()).await?;
    drained(&broker, "secure").await?;
    assert_eq!(sink.events().iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["over-tls"]);

    // A handler whose certificate no trusted CA signed gets nothing: the push fails, and with one
    // attempt allowed the event goes to the dead-letter topic with the certificate as the reason.
    let stranger = sluice_tests::pki::TestCa::new("someone else's CA")?.issue("impostor", &["127.0.0.1"])?;
    let impostor = Sink::start_tls(&stranger.cert, &stranger.key, |_| Reply::ok()).await?;
    let config = pb::GroupConfig {
        push: Some(push(impostor.url("/hook"), 1)),
        max_delivery_attempts: Some(1),
        dead_letter_topic: "untrusted-dlq".into(),
        ..group_config("events", 2000)
    };
    Admin::new(broker.channel()).create_group("untrusted", config).await?;
    produce_values(broker.channel(), "events", ["doomed".to_owned()]).await?;
    let records = eventually(WAIT, "a dead letter in untrusted-dlq", || async {
        Ok(read_all(broker.channel(), "untrusted-dlq", 0).await.ok().filter(|r| !r.is_empty()))
    })
    .await?;
    let reason = dead_letter_reason(&records[0]);
    assert!(
        reason.contains("certificate") || reason.contains("UnknownIssuer"),
        "the reason names the certificate: {reason}"
    );
    assert!(impostor.received().is_empty(), "nothing reached a handler with an untrusted certificate");
    Ok(())
}
