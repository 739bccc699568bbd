//! Message-queue triggers on RabbitMQ, against a real `rabbitmq-server` node of the test's
//! own and a stand-in router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::brokers::RabbitMq;
use common::{FakeFunction, Harness, fake_router};
use fission_core::AnyResource;
use fission_core::resources::{FunctionReference, MessageQueueTrigger, MessageQueueTriggerSpec};
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

fn mqt(name: &str, max_retries: i32, url: &str) -> AnyResource {
    let mut t = MessageQueueTrigger::new(
        "default",
        name,
        MessageQueueTriggerSpec {
            functionref: FunctionReference::by_name("hello"),
            message_queue_type: "rabbitmq".to_owned(),
            topic: format!("{name}-in"),
            resp_topic: format!("{name}-out"),
            error_topic: format!("{name}-err"),
            max_retries,
            content_type: "text/plain".to_owned(),
            metadata: Some(BTreeMap::from([
                ("host".to_owned(), url.to_owned()),
                ("queueName".to_owned(), format!("{name}-in")),
            ])),
            mqtkind: "keda".to_owned(),
            ..Default::default()
        },
    );
    t.normalize();
    AnyResource::MessageQueueTrigger(t)
}

async fn channel(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

async fn declare(ch: &Channel, q: &str) {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
}

/// Publish persistently and wait for the broker's confirmation.
async fn publish(ch: &Channel, q: &str, body: &str, headers: &[(&str, &str)]) {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert((*k).into(), AMQPValue::LongString(LongString::from(*v)));
    }
    ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(table),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

struct Msg {
    body: String,
    headers: BTreeMap<String, String>,
}

/// Take up to `n` messages from queue `q` within `secs`.
async fn take(ch: &Channel, q: &str, n: usize, secs: u64) -> Vec<Msg> {
    declare(ch, q).await;
    let mut consumer = ch
        .basic_consume(
            q.into(),
            format!("reader-{}", uuid::Uuid::new_v4()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(d)) = tokio::time::timeout(left, consumer.next()).await else {
            break;
        };
        let d = d.unwrap();
        let headers = d
            .properties
            .headers()
            .as_ref()
            .map(|t| {
                t.inner()
                    .iter()
                    .filter_map(|(k, v)| match v {
                        AMQPValue::LongString(s) => Some((
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        )),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Msg {
            body: String::from_utf8_lossy(&d.data).into_owned(),
            headers,
        });
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_to_the_function_and_answers_to_the_response_queue() {
    let Some(rabbit) = RabbitMq::start() else {
        return;
    };
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    let (_conn, ch) = channel(&rabbit.url()).await;
    declare(&ch, "orders-in").await;
    // Published before the trigger exists: still consumed.
    publish(&ch, "orders-in", "m0", &[("X-Order", "0")]).await;
    h.store
        .create(mqt("orders", 0, &rabbit.url()))
        .await
        .unwrap();
    for i in 1..20 {
        publish(&ch, "orders-in", &format!("m{i}"), &[]).await;
    }
    let out = take(&ch, "orders-out", 20, 30).await;
    let bodies: HashSet<_> = out.iter().map(|m| m.body.clone()).collect();
    let want: HashSet<_> = (0..20).map(|i| format!("echo:m{i}")).collect();
    assert_eq!(bodies, want);
    let calls = f.calls();
    assert_eq!(calls.len(), 20);
    let first = &calls[0];
    assert_eq!(first.path, "/fission-function/hello");
    assert_eq!(&first.body[..], b"m0");
    assert_eq!(first.headers["x-fission-mqtrigger-topic"], "orders-in");
    assert_eq!(first.headers["x-fission-mqtrigger-resptopic"], "orders-out");
    assert_eq!(first.headers["content-type"], "text/plain");
    assert_eq!(first.headers["x-order"], "0");
    // Everything acknowledged: the input queue is empty.
    let q = ch
        .queue_declare(
            "orders-in".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_function_sends_the_message_to_the_error_queue_after_its_retries() {
    let Some(rabbit) = RabbitMq::start() else {
        return;
    };
    let f = Arc::new(FakeFunction::default());
    f.status.store(500, Ordering::SeqCst);
    let h = Harness::start(fake_router(f.clone()).await).await;
    h.store.create(mqt("bad", 2, &rabbit.url())).await.unwrap();
    let (_conn, ch) = channel(&rabbit.url()).await;
    declare(&ch, "bad-in").await;
    publish(&ch, "bad-in", "x", &[]).await;
    let err = take(&ch, "bad-err", 1, 30).await;
    assert_eq!(err.len(), 1);
    assert_eq!(f.calls().len(), 3, "1 call + maxRetries 2");
    assert!(err[0].body.contains("500"), "{}", err[0].body);
    assert_eq!(err[0].headers["MessageSource"], "bad-in");
    assert_eq!(err[0].headers["RecycleCounter"], "1");
    assert!(take(&ch, "bad-out", 1, 2).await.is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_lost_when_the_broker_restarts_mid_stream() {
    let Some(mut rabbit) = RabbitMq::start() else {
        return;
    };
    let f = Arc::new(FakeFunction::default());
    f.delay_ms.store(20, Ordering::SeqCst);
    let h = Harness::start(fake_router(f.clone()).await).await;
    let (conn, ch) = channel(&rabbit.url()).await;
    declare(&ch, "flow-in").await;
    h.store.create(mqt("flow", 0, &rabbit.url())).await.unwrap();
    for i in 0..40 {
        publish(&ch, "flow-in", &format!("m{i}"), &[]).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.calls().len() < 5 {
        assert!(Instant::now() < deadline, "the consumer never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((ch, conn));
    rabbit.restart();
    let (_conn, ch) = channel(&rabbit.url()).await;
    for i in 40..80 {
        publish(&ch, "flow-in", &format!("m{i}"), &[]).await;
    }
    // Redelivered messages may answer twice: read until every answer is there.
    let want: HashSet<_> = (0..80).map(|i| format!("echo:m{i}")).collect();
    let mut bodies = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !want.is_subset(&bodies) && Instant::now() < deadline {
        for m in take(&ch, "flow-out", 80, 2).await {
            bodies.insert(m.body);
        }
    }
    let missing: Vec<_> = want.difference(&bodies).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    h.stop().await;
}
