//! Trigger throughput and publish→call latency per broker, with a stand-in router that answers
//! at once (so the figures are the triggers' own cost). A measurement, not a check: run with
//! `cargo test -p fission-triggers --release --test measure -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FakeFunction, Harness, fake_router};
use fission_core::AnyResource;
use fission_core::resources::{FunctionReference, MessageQueueTrigger, MessageQueueTriggerSpec};

const N: usize = 2000;
const LATENCY_SAMPLES: usize = 50;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mqt(mqtype: &str, meta: &[(&str, String)]) -> AnyResource {
    let mut t = MessageQueueTrigger::new(
        "default",
        "bench",
        MessageQueueTriggerSpec {
            functionref: FunctionReference::by_name("hello"),
            message_queue_type: mqtype.to_owned(),
            topic: "bench.in".to_owned(),
            resp_topic: "bench.out".to_owned(),
            content_type: "text/plain".to_owned(),
            metadata: Some(
                meta.iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .chain([("concurrency".to_owned(), "8".to_owned())])
                    .collect::<BTreeMap<_, _>>(),
            ),
            mqtkind: "fission".to_owned(),
            ..Default::default()
        },
    );
    t.normalize();
    AnyResource::MessageQueueTrigger(t)
}

async fn wait_calls(f: &FakeFunction, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while f.calls.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "only {} calls", f.calls().len());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn report(broker: &str, elapsed: Duration, latencies: &mut [Duration]) {
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "| {broker} | {:.0} msg/s | {:.1} ms | {:.1} ms |",
        N as f64 / elapsed.as_secs_f64(),
        p(0.5).as_secs_f64() * 1000.0,
        p(0.99).as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn measure_redis_streams() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    h.store
        .create(mqt("redis", &[("address", format!("127.0.0.1:{port}"))]))
        .await
        .unwrap();
    let mut lat = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        let _: String = redis::cmd("XADD")
            .arg("bench.in")
            .arg("*")
            .arg("body")
            .arg(i)
            .query_async(&mut con)
            .await
            .unwrap();
        wait_calls(&f, i + 1).await;
        lat.push(t.elapsed());
    }
    let start = Instant::now();
    for i in 0..N {
        let _: String = redis::cmd("XADD")
            .arg("bench.in")
            .arg("*")
            .arg("body")
            .arg(i)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    wait_calls(&f, LATENCY_SAMPLES + N).await;
    report("redis streams", start.elapsed(), &mut lat);
    h.stop().await;
    let _ = redis.kill();
    let _ = redis.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn measure_nats_jetstream() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut nats = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    let url = format!("nats://127.0.0.1:{port}");
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.in".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    h.store
        .create(mqt(
            "nats-jetstream",
            &[("natsServer", url.clone()), ("stream", "BENCH".into())],
        ))
        .await
        .unwrap();
    let mut lat = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        js.publish("bench.in", i.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
        wait_calls(&f, i + 1).await;
        lat.push(t.elapsed());
    }
    let start = Instant::now();
    for i in 0..N {
        js.publish("bench.in", i.to_string().into()).await.unwrap();
    }
    wait_calls(&f, LATENCY_SAMPLES + N).await;
    report("nats jetstream", start.elapsed(), &mut lat);
    h.stop().await;
    let _ = nats.kill();
    let _ = nats.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn measure_kafka() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let kafka = common::brokers::Kafka::start().expect("kafka");
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka.servers())
        .set("linger.ms", "0")
        .create()
        .unwrap();
    // The topic exists (and has a leader) before the consumer joins.
    producer
        .send(
            FutureRecord::<(), _>::to("bench.warm").payload("x"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    h.store
        .create(mqt("kafka", &[("bootstrapServers", kafka.servers())]))
        .await
        .unwrap();
    let mut lat = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let body = i.to_string();
        let t = Instant::now();
        producer
            .send(
                FutureRecord::<(), _>::to("bench.in").payload(&body),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        // The first wait includes the consumer joining its group.
        wait_calls(&f, i + 1).await;
        if i > 0 {
            lat.push(t.elapsed());
        }
    }
    let start = Instant::now();
    let bodies: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    let sends = bodies.iter().map(|b| {
        producer.send(
            FutureRecord::<(), _>::to("bench.in").payload(b),
            Duration::from_secs(30),
        )
    });
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    wait_calls(&f, LATENCY_SAMPLES + N).await;
    report("kafka", start.elapsed(), &mut lat);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn measure_rabbitmq() {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    let rabbit = common::brokers::RabbitMq::start().expect("rabbitmq");
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    let conn = lapin::Connection::connect(&rabbit.url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        "bench.in".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    h.store
        .create(mqt("rabbitmq", &[("host", rabbit.url())]))
        .await
        .unwrap();
    let publish = |body: String| {
        let ch = ch.clone();
        async move {
            ch.basic_publish(
                "".into(),
                "bench.in".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    let mut lat = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        publish(i.to_string()).await;
        wait_calls(&f, i + 1).await;
        lat.push(t.elapsed());
    }
    let start = Instant::now();
    futures::future::join_all((0..N).map(|i| publish(i.to_string()))).await;
    wait_calls(&f, LATENCY_SAMPLES + N).await;
    report("rabbitmq", start.elapsed(), &mut lat);
    h.stop().await;
}
