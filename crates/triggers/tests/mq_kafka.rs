//! Message-queue triggers on Kafka, against a real broker (KRaft, one combined broker and
//! controller from the Apache Kafka jars that scripts/brokers/kafka.sh fetches) and a
//! stand-in router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::brokers::Kafka;
use common::{FakeFunction, Harness, fake_router};
use fission_core::AnyResource;
use fission_core::resources::{FunctionReference, MessageQueueTrigger, MessageQueueTriggerSpec};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn mqt(name: &str, max_retries: i32, servers: &str) -> AnyResource {
    let mut t = MessageQueueTrigger::new(
        "default",
        name,
        MessageQueueTriggerSpec {
            functionref: FunctionReference::by_name("hello"),
            message_queue_type: "kafka".to_owned(),
            topic: format!("{name}-in"),
            resp_topic: format!("{name}-out"),
            error_topic: format!("{name}-err"),
            max_retries,
            content_type: "text/plain".to_owned(),
            metadata: Some(BTreeMap::from([
                ("bootstrapServers".to_owned(), servers.to_owned()),
                ("consumerGroup".to_owned(), format!("{name}-group")),
            ])),
            mqtkind: "fission".to_owned(),
            ..Default::default()
        },
    );
    t.normalize();
    AnyResource::MessageQueueTrigger(t)
}

fn producer(servers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap()
}

async fn publish(p: &FutureProducer, topic: &str, body: &str, headers: &[(&str, &str)]) {
    let mut hs = OwnedHeaders::new();
    for &(k, v) in headers {
        hs = hs.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    p.send(
        FutureRecord::<(), _>::to(topic).payload(body).headers(hs),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
}

/// A record read back from a topic.
struct Record {
    body: String,
    headers: BTreeMap<String, String>,
}

/// Read `topic` from the start until `n` records arrived or `secs` passed.
async fn read(servers: &str, topic: &str, n: usize, secs: u64) -> Vec<Record> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "true")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(m) = tokio::time::timeout(left, c.recv()).await else {
            break;
        };
        let Ok(m) = m else { continue };
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            body: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            headers,
        });
    }
    out
}

#[tokio::test]
async fn records_go_to_the_function_and_answers_to_the_response_topic() {
    let Some(kafka) = Kafka::start() else {
        return;
    };
    let servers = kafka.servers();
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    let p = producer(&servers);
    // Published before the trigger exists: still consumed.
    publish(&p, "orders-in", "m0", &[("X-Order", "0")]).await;
    h.store.create(mqt("orders", 0, &servers)).await.unwrap();
    for i in 1..20 {
        publish(
            &p,
            "orders-in",
            &format!("m{i}"),
            &[("X-Order", &i.to_string())],
        )
        .await;
    }
    let out = read(&servers, "orders-out", 20, 60).await;
    let bodies: HashSet<_> = out.iter().map(|r| r.body.clone()).collect();
    let want: HashSet<_> = (0..20).map(|i| format!("echo:m{i}")).collect();
    assert_eq!(bodies, want);
    let calls = f.calls();
    assert_eq!(calls.len(), 20);
    let first = &calls[0];
    assert_eq!(first.path, "/fission-function/hello");
    assert_eq!(&first.body[..], b"m0");
    assert_eq!(first.headers["x-fission-mqtrigger-topic"], "orders-in");
    assert_eq!(first.headers["x-fission-mqtrigger-resptopic"], "orders-out");
    assert_eq!(
        first.headers["x-fission-mqtrigger-errortopic"],
        "orders-err"
    );
    assert_eq!(first.headers["content-type"], "text/plain");
    // The record's headers reach the function, as with Fission's consumer.
    assert_eq!(first.headers["x-order"], "0");
    // In order, one at a time (the default concurrency of 1).
    let order: Vec<_> = calls
        .iter()
        .map(|c| String::from_utf8_lossy(&c.body).into_owned())
        .collect();
    let want: Vec<_> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(order, want);
    // Every offset is committed for the trigger's consumer group.
    let deadline = Instant::now() + Duration::from_secs(10);
    while kafka.committed("orders-group", "orders-in").await != Some(20) {
        assert!(Instant::now() < deadline, "offsets not committed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await;
}

#[tokio::test]
async fn a_failing_function_sends_the_record_to_the_error_topic_after_its_retries() {
    let Some(kafka) = Kafka::start() else {
        return;
    };
    let servers = kafka.servers();
    let f = Arc::new(FakeFunction::default());
    f.status.store(500, Ordering::SeqCst);
    let h = Harness::start(fake_router(f.clone()).await).await;
    h.store.create(mqt("bad", 2, &servers)).await.unwrap();
    publish(&producer(&servers), "bad-in", "x", &[]).await;
    let err = read(&servers, "bad-err", 1, 60).await;
    assert_eq!(err.len(), 1);
    assert_eq!(f.calls().len(), 3, "1 call + maxRetries 2");
    assert!(err[0].body.contains("500"), "{}", err[0].body);
    assert_eq!(err[0].headers["MessageSource"], "bad-in");
    assert_eq!(err[0].headers["RecycleCounter"], "1");
    assert!(read(&servers, "bad-out", 1, 3).await.is_empty());
    let status = h
        .triggers
        .status()
        .get(&fission_triggers::TriggerKey {
            kind: fission_triggers::TriggerKind::MessageQueueTrigger,
            namespace: "default".into(),
            name: "bad".into(),
        })
        .unwrap();
    assert_eq!((status.fired, status.failed, status.retried), (1, 1, 2));
    h.stop().await;
}

#[tokio::test]
async fn no_record_is_lost_when_the_broker_restarts_mid_stream() {
    let Some(mut kafka) = Kafka::start() else {
        return;
    };
    let servers = kafka.servers();
    let f = Arc::new(FakeFunction::default());
    f.delay_ms.store(20, Ordering::SeqCst);
    let h = Harness::start(fake_router(f.clone()).await).await;
    h.store.create(mqt("flow", 0, &servers)).await.unwrap();
    let p = producer(&servers);
    for i in 0..40 {
        publish(&p, "flow-in", &format!("m{i}"), &[]).await;
    }
    // Restart while the consumer is in the middle of the first records.
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.calls().len() < 5 {
        assert!(Instant::now() < deadline, "the consumer never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kafka.restart();
    let p = producer(&servers);
    for i in 40..80 {
        publish(&p, "flow-in", &format!("m{i}"), &[]).await;
    }
    // Records consumed again after the restart may answer twice: read until every answer is
    // there (each read starts from the beginning of the topic).
    let want: HashSet<_> = (0..80).map(|i| format!("echo:m{i}")).collect();
    let mut bodies = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !want.is_subset(&bodies) && Instant::now() < deadline {
        let n = bodies.len().max(80) + 1;
        bodies = read(&servers, "flow-out", n, 10)
            .await
            .into_iter()
            .map(|r| r.body)
            .collect();
    }
    let missing: Vec<_> = want.difference(&bodies).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    h.stop().await;
}
