//! The HTTP gateway against the real broker: CloudEvents in every HTTP mode
//! and plain bodies go in over HTTP and come out of gRPC reads as records
//! with the Kafka binding's headers; every refusal has its status, reason
//! and message, and stores nothing.

use sluice_client::proto as pb;
use sluice_client::Admin;
use sluice_tests::http::{post, Answer};
use sluice_tests::{read_all, TestBroker};

const PATH: &str = "/v1/topics/events/events";

fn header<'a>(r: &'a pb::Record, key: &str) -> Option<&'a str> {
    r.headers.iter().find(|h| h.key == key).and_then(|h| std::str::from_utf8(&h.value).ok())
}

/// A broker with its gateway on a free port (and `extra` flags), and a
/// topic `events` of one partition; with the gateway's address.
async fn gateway_broker(extra: &[&str]) -> anyhow::Result<(TestBroker, String)> {
    let mut args = vec!["--gateway-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let broker = TestBroker::start_with(&args).await?;
    let gateway = broker.gateway_addr.clone().ok_or_else(|| anyhow::anyhow!("the broker reported no gateway"))?;
    Admin::new(broker.channel()).create_topic("events", 1, pb::TopicConfig::default()).await?;
    Ok((broker, gateway))
}

/// The (partition, offset) of each event a `202` reports.
fn stored(answer: &Answer) -> anyhow::Result<Vec<(u32, u64)>> {
    anyhow::ensure!(
        answer.status == 202,
        "expected 202, got {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    let json = answer.json()?;
    let events = json["events"].as_array().ok_or_else(|| anyhow::anyhow!("no events in {json}"))?;
    events
        .iter()
        .map(|e| {
            let p = e["partition"].as_u64().ok_or_else(|| anyhow::anyhow!("no partition in {e}"))?;
            let o = e["offset"].as_u64().ok_or_else(|| anyhow::anyhow!("no offset in {e}"))?;
            Ok((p as u32, o))
        })
        .collect()
}

/// The status, reason and (non-empty) message of a refusal.
fn refusal(answer: &Answer) -> anyhow::Result<(u16, String)> {
    let json = answer.json()?;
    let reason = json["error"]["reason"].as_str().unwrap_or_default().to_owned();
    let message = json["error"]["message"].as_str().unwrap_or_default();
    anyhow::ensure!(!message.is_empty(), "a refusal says why: {json}");
    Ok((answer.status, reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_in_every_mode_are_stored_per_the_kafka_binding() -> anyhow::Result<()> {
    let (broker, gateway) = gateway_broker(&[]).await?;

    // Binary mode: attributes in ce-* headers (percent-encoded), the body is the data.
    let binary = post(
        &gateway,
        PATH,
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "b-1"),
            ("ce-source", "/orders"),
            ("ce-type", "order.created"),
            ("ce-note", "caf%C3%A9"),
            ("ce-partitionkey", "customer-9"),
            ("content-type", "application/json"),
        ],
        br#"{"order":1}"#,
    )
    .await?;
    assert_eq!(stored(&binary)?, vec![(0, 0)]);

    // Structured mode: one JSON event.
    let structured = post(
        &gateway,
        PATH,
        &[("content-type", "application/cloudevents+json; charset=utf-8")],
        br#"{"specversion":"1.0","id":"s-1","source":"/orders","type":"order.paid","amount":12,"data":{"paid":true}}"#,
    )
    .await?;
    assert_eq!(stored(&structured)?, vec![(0, 1)]);

    // Batch mode: three events, one request, consecutive offsets.
    let batch = post(
        &gateway,
        PATH,
        &[("content-type", "application/cloudevents-batch+json")],
        br#"[{"specversion":"1.0","id":"x-1","source":"/s","type":"t","data":"one"},
            {"specversion":"1.0","id":"x-2","source":"/s","type":"t","datacontenttype":"text/plain","data":"two"},
            {"specversion":"1.0","id":"x-3","source":"/s","type":"t","data_base64":"AAH/"}]"#,
    )
    .await?;
    assert_eq!(stored(&batch)?, vec![(0, 2), (0, 3), (0, 4)]);

    // A body that is not a CloudEvent is stored as it is.
    let plain = post(&gateway, PATH, &[("content-type", "text/csv")], b"a,b\n1,2\n").await?;
    assert_eq!(stored(&plain)?, vec![(0, 5)]);

    let records = read_all(broker.channel(), "events", 0).await?;
    assert_eq!(records.len(), 6, "one record per event");
    let b = &records[0];
    assert_eq!(&b.value[..], br#"{"order":1}"#);
    assert_eq!(header(b, "ce_id"), Some("b-1"));
    assert_eq!(header(b, "ce_type"), Some("order.created"));
    assert_eq!(header(b, "ce_note"), Some("café"));
    assert_eq!(header(b, "content-type"), Some("application/json"));
    assert_eq!(b.key.as_deref(), Some(&b"customer-9"[..]), "partitionkey is the key");
    let s = &records[1];
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&s.value)?, serde_json::json!({"paid": true}));
    assert_eq!(header(s, "ce_amount"), Some("12"));
    assert_eq!(header(s, "content-type"), Some("application/json"));
    assert_eq!(&records[2].value[..], b"\"one\"", "JSON data stays JSON");
    assert_eq!(&records[3].value[..], b"two", "text data is the text");
    assert_eq!(&records[4].value[..], &[0u8, 1, 255], "base64 data is the bytes");
    assert_eq!(header(&records[4], "ce_id"), Some("x-3"));
    assert_eq!(&records[5].value[..], b"a,b\n1,2\n");
    assert_eq!(header(&records[5], "content-type"), Some("text/csv"));
    assert!(records[5].headers.iter().all(|h| !h.key.starts_with("ce_")), "a plain body has no event attributes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_events_get_their_status_and_store_nothing() -> anyhow::Result<()> {
    let (broker, gateway) = gateway_broker(&["--max-request-bytes", "65536", "--max-message-bytes", "65536"]).await?;
    let structured = [("content-type", "application/cloudevents+json")];

    let unknown = post(&gateway, "/v1/topics/nope/events", &[("content-type", "text/plain")], b"x").await?;
    assert_eq!(refusal(&unknown)?, (404, "topic_not_found".into()));
    let bad_name = post(&gateway, "/v1/topics/no%20spaces/events", &[], b"x").await?;
    assert_eq!(refusal(&bad_name)?.0, 400);
    let cases: &[&[u8]] = &[
        br#"{"specversion":"1.0","source":"/s","type":"t"}"#,
        br#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#,
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","Upper":"x"}"#,
        b"{not json",
    ];
    for body in cases {
        let answer = post(&gateway, PATH, &structured, body).await?;
        assert_eq!(refusal(&answer)?, (400, "invalid_argument".into()), "{}", String::from_utf8_lossy(body));
    }
    // One bad event refuses its whole batch.
    let batch = post(
        &gateway,
        PATH,
        &[("content-type", "application/cloudevents-batch+json")],
        br#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"specversion":"1.0","id":"2","source":"/s"}]"#,
    )
    .await?;
    assert_eq!(refusal(&batch)?, (400, "invalid_argument".into()));
    // A binary event without a type.
    let binary = post(&gateway, PATH, &[("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/s")], b"").await?;
    assert_eq!(refusal(&binary)?, (400, "invalid_argument".into()));
    // Larger than --max-request-bytes: refused before it is stored.
    let big = vec![b'x'; 70_000];
    let too_large = post(&gateway, PATH, &[("content-type", "application/octet-stream")], &big).await?;
    assert_eq!(refusal(&too_large)?, (413, "too_large".into()));

    let records = read_all(broker.channel(), "events", 0).await?;
    assert!(records.is_empty(), "nothing refused was stored: {records:?}");
    // The gateway still takes a good event.
    let ok = post(&gateway, PATH, &[("content-type", "text/plain")], b"fine").await?;
    assert_eq!(stored(&ok)?, vec![(0, 0)]);
    Ok(())
}

/// POSTs a structured event as a client should: a `503` with `Retry-After`
/// (a partition whose leader is not elected yet, right after its topic was
/// created) is retried, for at most 20 s.
async fn post_as_a_client(gateway: &str, event: &[u8]) -> anyhow::Result<Answer> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let answer = post(gateway, PATH, &[("content-type", "application/cloudevents+json")], event).await?;
        let retry = answer.status == 503 && answer.header("retry-after").is_some();
        if !retry || std::time::Instant::now() >= deadline {
            return Ok(answer);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// In a cluster every broker's gateway takes events for any partition: the
/// produce path forwards them to the partition's leader, and `202` means a
/// majority of its replicas hold them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_of_a_cluster_takes_events() -> anyhow::Result<()> {
    let cluster = sluice_tests::cluster::TestCluster::start_with(3, &["--gateway-listen", "127.0.0.1:0"]).await?;
    cluster.agreed_leader(&cluster.ids(), None).await?;
    Admin::new(cluster.broker(1).channel()).create_topic("events", 3, pb::TopicConfig::default()).await?;
    let mut stored_at = Vec::new();
    for id in cluster.ids() {
        let gateway = cluster.broker(id).gateway_addr.clone().ok_or_else(|| anyhow::anyhow!("no gateway"))?;
        for p in 0..3u32 {
            // The partition key picks the partition: each broker is the leader of some, a follower of others.
            let key = (0..).map(|k| format!("k{k}")).find(|k| sluice_proto::partition_for_key(k.as_bytes(), 3) == p);
            let key = key.ok_or_else(|| anyhow::anyhow!("no key for partition {p}"))?;
            let event = format!(
                r#"{{"specversion":"1.0","id":"{id}-{p}","source":"/b{id}","type":"t","partitionkey":"{key}"}}"#
            );
            let answer = post_as_a_client(&gateway, event.as_bytes()).await?;
            let stored = stored(&answer)?;
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0].0, p, "routed by partitionkey");
            stored_at.push((format!("{id}-{p}"), stored[0]));
        }
    }
    // Broker 1 may be the replica outside the majority that acknowledged an
    // event: it serves it once it has caught up (a follower reads only what it
    // knows is committed), not necessarily at once.
    for (id, (p, offset)) in stored_at {
        let ch = cluster.broker(1).channel();
        let record =
            sluice_tests::eventually(std::time::Duration::from_secs(10), &format!("event {id} at broker 1"), || {
                let ch = ch.clone();
                async move { Ok(read_all(ch, "events", p).await?.into_iter().find(|r| r.offset == offset)) }
            })
            .await?;
        assert_eq!(header(&record, "ce_id"), Some(id.as_str()), "event {id} at {p}/{offset}");
    }
    Ok(())
}

/// `sluice.v1.Events/Publish` takes the CloudEvents protobuf format and
/// stores each event exactly as the HTTP gateway does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_publish_stores_events_as_the_gateway_does() -> anyhow::Result<()> {
    use sluice_proto::io::cloudevents::v1::cloud_event::cloud_event_attribute_value::Attr;
    use sluice_proto::io::cloudevents::v1::cloud_event::{CloudEventAttributeValue, Data};
    use sluice_proto::io::cloudevents::v1::{CloudEvent, CloudEventBatch};
    use sluice_proto::v1::events_client::EventsClient;

    let (broker, gateway) = gateway_broker(&[]).await?;
    let attr = |a: Attr| CloudEventAttributeValue { attr: Some(a) };
    let event = CloudEvent {
        id: "g-1".into(),
        source: "/orders".into(),
        spec_version: "1.0".into(),
        r#type: "order.created".into(),
        attributes: [
            ("datacontenttype".to_owned(), attr(Attr::CeString("application/json".into()))),
            ("partitionkey".to_owned(), attr(Attr::CeString("customer-9".into()))),
            ("amount".to_owned(), attr(Attr::CeInteger(12))),
            ("paid".to_owned(), attr(Attr::CeBoolean(true))),
            ("time".to_owned(), attr(Attr::CeTimestamp(prost_types::Timestamp { seconds: 1_522_900_584, nanos: 0 }))),
        ]
        .into_iter()
        .collect(),
        data: Some(Data::TextData(r#"{"order":1}"#.into())),
    };
    let mut client = EventsClient::new(broker.channel());
    let request = pb::PublishRequest { topic: "events".into(), batch: Some(CloudEventBatch { events: vec![event] }) };
    let answer = client.publish(request).await?.into_inner();
    assert_eq!((answer.partitions, answer.offsets), (vec![0], vec![0]));

    // The same event over HTTP, in binary mode.
    let http = post(
        &gateway,
        PATH,
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "g-1"),
            ("ce-source", "/orders"),
            ("ce-type", "order.created"),
            ("ce-partitionkey", "customer-9"),
            ("ce-amount", "12"),
            ("ce-paid", "true"),
            ("ce-time", "2018-04-05T03:56:24Z"),
            ("content-type", "application/json"),
        ],
        br#"{"order":1}"#,
    )
    .await?;
    assert_eq!(stored(&http)?, vec![(0, 1)]);
    let records = read_all(broker.channel(), "events", 0).await?;
    let sorted = |r: &pb::Record| {
        let mut h: Vec<(String, Vec<u8>)> = r.headers.iter().map(|h| (h.key.clone(), h.value.to_vec())).collect();
        h.sort();
        (r.key.clone(), r.value.clone(), h)
    };
    assert_eq!(sorted(&records[0]), sorted(&records[1]), "stored alike by either door");

    // One invalid event refuses the batch, with the reason, and stores nothing.
    let bad = CloudEvent {
        id: "".into(),
        source: "/s".into(),
        spec_version: "1.0".into(),
        r#type: "t".into(),
        ..Default::default()
    };
    let request = pb::PublishRequest { topic: "events".into(), batch: Some(CloudEventBatch { events: vec![bad] }) };
    let status = client.publish(request).await.expect_err("an event without an id is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("no id"), "{}", status.message());
    assert_eq!(status.metadata().get("sluice-reason").and_then(|v| v.to_str().ok()), Some("invalid_argument"));
    assert_eq!(read_all(broker.channel(), "events", 0).await?.len(), 2, "nothing more stored");
    Ok(())
}

/// Reads from `stream` until the peer closes it; fails if it is still open
/// after `within`. Returns what was read.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> anyhow::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| anyhow::anyhow!("the gateway kept the connection open for {within:?}"))?;
    Ok(got)
}

/// A slow or idle client holds a connection only for the read timeout:
/// a head that never completes and an idle keep-alive connection are
/// closed, a body that stalls is answered `408`, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_after_the_read_timeout() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let (broker, gateway) = gateway_broker(&["--gateway-read-timeout-ms", "500"]).await?;
    let limit = std::time::Duration::from_secs(5);

    // A head that never completes (slowloris).
    let mut slow = TcpStream::connect(&gateway).await?;
    slow.write_all(b"POST /v1/topics/events/events HTTP/1.1\r\nhost: x\r\nce-id: 1\r\n").await?;
    closed_within(&mut slow, limit).await?;

    // A body that stops after 10 of its 100 bytes.
    let mut stalled = TcpStream::connect(&gateway).await?;
    stalled
        .write_all(b"POST /v1/topics/events/events HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\nonly ten b")
        .await?;
    let answer = closed_within(&mut stalled, limit).await?;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "a stalled body is answered 408: {answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // A keep-alive connection, once answered and idle.
    let mut idle = TcpStream::connect(&gateway).await?;
    idle.write_all(
        b"POST /v1/topics/events/events HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok",
    )
    .await?;
    let answer = closed_within(&mut idle, limit).await?;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 202"), "answered, then closed when idle");

    let records = read_all(broker.channel(), "events", 0).await?;
    assert_eq!(records.len(), 1, "only the complete request was stored");
    assert_eq!(&records[0].value[..], b"ok");
    Ok(())
}

/// At `gateway-max-connections` open connections another one is closed at
/// once; when one closes, a new one is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once() -> anyhow::Result<()> {
    use tokio::net::TcpStream;
    let (_broker, gateway) =
        gateway_broker(&["--gateway-max-connections", "4", "--gateway-read-timeout-ms", "20000"]).await?;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&gateway).await?);
    }
    // Well inside the 20 s idle timeout: only the cap can close it.
    let mut surplus = TcpStream::connect(&gateway).await?;
    closed_within(&mut surplus, std::time::Duration::from_secs(5)).await?;
    drop(held.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match post(&gateway, PATH, &[("content-type", "text/plain")], b"in").await {
            Ok(answer) if answer.status == 202 => break,
            other => {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "no connection served after one closed: {other:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    Ok(())
}

/// Bodies share one budget: while a slow request holds all of
/// `gateway-max-inflight-body-bytes`, another is refused `429` with
/// `Retry-After` (not buffered); once the slow one ends, requests pass
/// again. A head above 64 KiB is answered `431`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_share_one_budget_and_oversized_heads_get_431() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let (broker, gateway) = gateway_broker(&[
        "--max-request-bytes",
        "1048576",
        "--gateway-max-inflight-body-bytes",
        "1048576",
        "--gateway-read-timeout-ms",
        "20000",
    ])
    .await?;
    // Declares the whole budget and sends it slowly.
    let mut hog = TcpStream::connect(&gateway).await?;
    hog.write_all(b"POST /v1/topics/events/events HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 1000000\r\n\r\nstart")
        .await?;
    // Probes before the broker has read the slow request's head are stored.
    let stored_probes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let refused = sluice_tests::eventually(std::time::Duration::from_secs(5), "a 429 while the budget is held", || {
        let (gateway, stored_probes) = (gateway.clone(), stored_probes.clone());
        async move {
            // 100 KB: more than the 48 KiB the slow request leaves.
            let answer = post(&gateway, PATH, &[("content-type", "text/plain")], &[b'y'; 100_000]).await?;
            if answer.status == 202 {
                stored_probes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok((answer.status == 429).then_some(answer))
        }
    })
    .await?;
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.json()?["error"]["reason"], "overloaded");
    hog.write_all(&vec![b'x'; 1_000_000 - 5]).await?;
    let answer = closed_or_answered(&mut hog).await?;
    assert!(answer.starts_with("HTTP/1.1 202"), "the slow request completes: {answer}");
    let answer = post(&gateway, PATH, &[("content-type", "text/plain")], &[b'y'; 100_000]).await?;
    assert_eq!(answer.status, 202, "the budget is back");

    let huge = "x".repeat(100 << 10);
    let answer = post(&gateway, PATH, &[("content-type", "text/plain"), ("x-padding", &huge)], b"x").await?;
    assert_eq!(answer.status, 431, "an oversized head");
    let records = read_all(broker.channel(), "events", 0).await?;
    let probes = stored_probes.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(records.len(), 2 + probes, "the refused requests stored nothing");
    Ok(())
}

/// Reads the start of the answer on `stream` (up to its first 64 bytes).
async fn closed_or_answered(stream: &mut tokio::net::TcpStream) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
