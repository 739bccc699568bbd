//! Message-queue triggers on NATS JetStream, against a real `nats-server -js` and a stand-in
//! router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::{FakeFunction, Harness, fake_router};
use fission_core::AnyResource;
use fission_core::resources::{FunctionReference, MessageQueueTrigger, MessageQueueTriggerSpec};

struct NatsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// A JetStream-enabled nats-server on a free port; `None` (a skip) only outside CI.
    fn start() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Self::spawn(dir.path(), port)?;
        let s = Self { child, port, dir };
        s.wait_ready();
        Some(s)
    }

    fn spawn(dir: &Path, port: u16) -> Option<Child> {
        let spawned = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(c) => Some(c),
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "nats-server is needed (apt-get install nats-server): {e}"
                );
                eprintln!("nats-server not installed; skipping");
                None
            }
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.dir.path(), self.port).unwrap();
        self.wait_ready();
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn js(&self) -> jetstream::Context {
        jetstream::new(async_nats::connect(self.url()).await.unwrap())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mqt(name: &str, max_retries: i32, server: &str) -> AnyResource {
    let mut t = MessageQueueTrigger::new(
        "default",
        name,
        MessageQueueTriggerSpec {
            functionref: FunctionReference::by_name("hello"),
            message_queue_type: "nats-jetstream".to_owned(),
            topic: format!("{name}.in"),
            resp_topic: format!("{name}.out"),
            error_topic: format!("{name}.err"),
            max_retries,
            content_type: "text/plain".to_owned(),
            metadata: Some(BTreeMap::from([
                ("natsServer".to_owned(), server.to_owned()),
                ("stream".to_owned(), format!("{}_IN", name.to_uppercase())),
            ])),
            mqtkind: "fission".to_owned(),
            ..Default::default()
        },
    );
    t.normalize();
    AnyResource::MessageQueueTrigger(t)
}

/// The input stream (as the trigger would create it) and a stream keeping what the trigger
/// publishes, so the test can read it all back.
async fn streams(js: &jetstream::Context, name: &str) -> jetstream::stream::Stream {
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("{}_IN", name.to_uppercase()),
        subjects: vec![format!("{name}.in")],
        ..Default::default()
    })
    .await
    .unwrap();
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("{}_OUT", name.to_uppercase()),
        subjects: vec![format!("{name}.out"), format!("{name}.err")],
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn publish(js: &jetstream::Context, subject: &str, body: &str) {
    let mut attempts = 0;
    loop {
        let sent = match js.publish(subject.to_owned(), body.to_owned().into()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if sent {
            return;
        }
        attempts += 1;
        assert!(attempts < 100, "cannot publish {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every message kept in `stream` as (subject, body, headers).
async fn read_all(
    stream: &mut jetstream::stream::Stream,
) -> Vec<(String, String, async_nats::HeaderMap)> {
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push((
                m.subject.to_string(),
                String::from_utf8_lossy(&m.payload).into_owned(),
                m.headers,
            ));
        }
    }
    out
}

async fn wait_for(
    stream: &mut jetstream::stream::Stream,
    n: usize,
    secs: u64,
) -> Vec<(String, String, async_nats::HeaderMap)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let all = read_all(stream).await;
        if all.len() >= n || Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn messages_go_to_the_function_and_answers_to_the_response_subject() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    let js = nats.js().await;
    let mut out = streams(&js, "orders").await;
    for i in 0..20 {
        publish(&js, "orders.in", &format!("m{i}")).await;
    }
    h.store.create(mqt("orders", 0, &nats.url())).await.unwrap();
    let got = wait_for(&mut out, 20, 20).await;
    let bodies: HashSet<_> = got.iter().map(|m| m.1.clone()).collect();
    let want: HashSet<_> = (0..20).map(|i| format!("echo:m{i}")).collect();
    assert_eq!(bodies, want);
    assert!(got.iter().all(|m| m.0 == "orders.out"));
    let calls = f.calls();
    assert_eq!(calls.len(), 20);
    assert_eq!(calls[0].headers["x-fission-mqtrigger-topic"], "orders.in");
    assert_eq!(
        calls[0].headers["x-fission-mqtrigger-resptopic"],
        "orders.out"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_failing_function_sends_the_message_to_the_error_subject_after_its_retries() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let f = Arc::new(FakeFunction::default());
    f.status.store(500, Ordering::SeqCst);
    let h = Harness::start(fake_router(f.clone()).await).await;
    let js = nats.js().await;
    let mut out = streams(&js, "bad").await;
    h.store.create(mqt("bad", 2, &nats.url())).await.unwrap();
    publish(&js, "bad.in", "x").await;
    let got = wait_for(&mut out, 1, 20).await;
    assert_eq!(got.len(), 1);
    let (subject, body, headers) = &got[0];
    assert_eq!(subject, "bad.err");
    assert!(body.contains("500"), "{body}");
    assert_eq!(headers.get("MessageSource").unwrap().as_str(), "bad.in");
    assert_eq!(headers.get("RecycleCounter").unwrap().as_str(), "1");
    assert_eq!(f.calls().len(), 3, "1 call + maxRetries 2");
    h.stop().await;
}

#[tokio::test]
async fn no_message_is_lost_when_the_broker_restarts_mid_stream() {
    let Some(mut nats) = NatsServer::start() else {
        return;
    };
    let f = Arc::new(FakeFunction::default());
    f.delay_ms.store(20, Ordering::SeqCst);
    let h = Harness::start(fake_router(f.clone()).await).await;
    let js = nats.js().await;
    streams(&js, "flow").await;
    h.store.create(mqt("flow", 0, &nats.url())).await.unwrap();
    for i in 0..40 {
        publish(&js, "flow.in", &format!("m{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.restart();
    let js = nats.js().await;
    for i in 40..80 {
        publish(&js, "flow.in", &format!("m{i}")).await;
    }
    let mut out = js.get_stream("FLOW_OUT").await.unwrap();
    let got = wait_for(&mut out, 80, 60).await;
    let bodies: HashSet<_> = got.iter().map(|m| m.1.clone()).collect();
    let want: HashSet<_> = (0..80).map(|i| format!("echo:m{i}")).collect();
    let missing: Vec<_> = want.difference(&bodies).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    h.stop().await;
}
