//! Message-queue triggers on Redis Streams, against a real `redis-server` and a stand-in
//! router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{FakeFunction, Harness, fake_router};
use fission_core::AnyResource;
use fission_core::resources::{FunctionReference, MessageQueueTrigger, MessageQueueTriggerSpec};
use redis::streams::StreamRangeReply;

struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// A redis-server on a free port; `None` (a skip) only outside CI.
    fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Self::spawn(dir.path(), port, extra)?;
        let s = Self {
            child,
            port,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        s.wait_ready();
        Some(s)
    }

    fn spawn(dir: &Path, port: u16, extra: &[&str]) -> Option<Child> {
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(extra)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(c) => Some(c),
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "redis-server is needed (apt-get install redis-server): {e}"
                );
                eprintln!("redis-server not installed; skipping");
                None
            }
        }
    }

    /// Until PING answers PONG (a restarted server answers LOADING while it reads its log).
    fn wait_ready(&self) {
        use std::io::{Read as _, Write as _};
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = std::net::TcpStream::connect(("127.0.0.1", self.port))
                .and_then(|mut s| {
                    s.write_all(b"PING\r\n")?;
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf)?;
                    // A password-protected server answers NOAUTH: it is up.
                    Ok(buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
                })
                .unwrap_or(false);
            if pong {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = Self::spawn(self.dir.path(), self.port, &extra).unwrap();
        self.wait_ready();
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn con(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://{}", self.address()))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mqt(name: &str, kind: &str, mqtype: &str, max_retries: i32, address: &str) -> AnyResource {
    let mut t = MessageQueueTrigger::new(
        "default",
        name,
        MessageQueueTriggerSpec {
            functionref: FunctionReference::by_name("hello"),
            message_queue_type: mqtype.to_owned(),
            topic: format!("{name}-in"),
            resp_topic: format!("{name}-out"),
            error_topic: format!("{name}-err"),
            max_retries,
            content_type: "text/plain".to_owned(),
            metadata: Some(BTreeMap::from([("address".to_owned(), address.to_owned())])),
            mqtkind: kind.to_owned(),
            ..Default::default()
        },
    );
    t.normalize();
    AnyResource::MessageQueueTrigger(t)
}

async fn publish(con: &mut redis::aio::MultiplexedConnection, stream: &str, body: &str) {
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("body")
        .arg(body)
        .query_async(con)
        .await
        .unwrap();
}

async fn entries(
    con: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> Vec<BTreeMap<String, String>> {
    let r: StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .unwrap();
    r.ids
        .into_iter()
        .map(|e| {
            e.map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value_ref::<String>(v).unwrap()))
                .collect()
        })
        .collect()
}

async fn wait_for_len(
    con: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    n: usize,
    secs: u64,
) -> Vec<BTreeMap<String, String>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let e = entries(con, stream).await;
        if e.len() >= n || Instant::now() > deadline {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn messages_go_to_the_function_and_answers_to_the_response_stream() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    let mut con = redis.con().await;
    // Published before the trigger exists: still consumed.
    publish(&mut con, "orders-in", "m0").await;
    // A keda-kind object is served by the same consumers.
    h.store
        .create(mqt("orders", "keda", "redis", 0, &redis.address()))
        .await
        .unwrap();
    for i in 1..20 {
        publish(&mut con, "orders-in", &format!("m{i}")).await;
    }
    let out = wait_for_len(&mut con, "orders-out", 20, 15).await;
    let bodies: HashSet<_> = out.iter().map(|e| e["body"].clone()).collect();
    let want: HashSet<_> = (0..20).map(|i| format!("echo:m{i}")).collect();
    assert_eq!(bodies, want);
    let calls = f.calls();
    assert_eq!(calls.len(), 20);
    assert_eq!(calls[0].path, "/fission-function/hello");
    assert_eq!(calls[0].headers["x-fission-mqtrigger-topic"], "orders-in");
    assert_eq!(
        calls[0].headers["x-fission-mqtrigger-resptopic"],
        "orders-out"
    );
    assert_eq!(
        calls[0].headers["x-fission-mqtrigger-errortopic"],
        "orders-err"
    );
    assert_eq!(calls[0].headers["content-type"], "text/plain");
    // Everything acknowledged.
    let pending: (i64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg("orders-in")
        .arg("fission-default-orders")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(pending.0, 0);
    h.stop().await;
}

#[tokio::test]
async fn a_failing_function_sends_the_message_to_the_error_stream_after_its_retries() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let f = Arc::new(FakeFunction::default());
    f.status.store(500, Ordering::SeqCst);
    let h = Harness::start(fake_router(f.clone()).await).await;
    let mut con = redis.con().await;
    h.store
        .create(mqt("bad", "fission", "redis", 2, &redis.address()))
        .await
        .unwrap();
    publish(&mut con, "bad-in", "x").await;
    let err = wait_for_len(&mut con, "bad-err", 1, 15).await;
    assert_eq!(err.len(), 1);
    assert_eq!(f.calls().len(), 3, "1 call + maxRetries 2");
    assert!(err[0]["body"].contains("500"), "{:?}", err[0]);
    assert_eq!(err[0]["MessageSource"], "bad-in");
    assert_eq!(err[0]["RecycleCounter"], "1");
    assert!(entries(&mut con, "bad-out").await.is_empty());
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
async fn no_message_is_lost_when_the_broker_restarts_mid_stream() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let f = Arc::new(FakeFunction::default());
    f.delay_ms.store(20, Ordering::SeqCst);
    let h = Harness::start(fake_router(f.clone()).await).await;
    let mut con = redis.con().await;
    h.store
        .create(mqt("flow", "fission", "redis", 0, &redis.address()))
        .await
        .unwrap();
    for i in 0..40 {
        publish(&mut con, "flow-in", &format!("m{i}")).await;
    }
    // Restart while the consumer is in the middle of the first batch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    let mut con = redis.con().await;
    for i in 40..80 {
        publish(&mut con, "flow-in", &format!("m{i}")).await;
    }
    let out = wait_for_len(&mut con, "flow-out", 80, 30).await;
    let bodies: HashSet<_> = out.iter().map(|e| e["body"].clone()).collect();
    let want: HashSet<_> = (0..80).map(|i| format!("echo:m{i}")).collect();
    let missing: Vec<_> = want.difference(&bodies).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_broker_type_without_a_consumer_is_refused_in_the_status() {
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    h.store
        .create(mqt("k", "fission", "aws-sqs-queue", 0, "x"))
        .await
        .unwrap();
    let key = fission_triggers::TriggerKey {
        kind: fission_triggers::TriggerKind::MessageQueueTrigger,
        namespace: "default".into(),
        name: "k".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(s) = h.triggers.status().get(&key)
            && let Some(e) = s.last_error
        {
            assert!(e.contains("'aws-sqs-queue' is not supported"), "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "no status");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.stop().await;
}

#[tokio::test]
async fn the_password_comes_from_the_triggers_secret() {
    let Some(redis) = RedisServer::start_with(&["--requirepass", "s3cr#t"]) else {
        return;
    };
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    let mut secret = fission_core::resources::Secret {
        metadata: fission_core::ObjectMeta::named("default", "redis-auth"),
        data: BTreeMap::from([("password".to_owned(), b"s3cr#t".to_vec())]),
        ..Default::default()
    };
    secret.normalize();
    h.store.create(AnyResource::Secret(secret)).await.unwrap();
    let mut t = mqt("auth", "fission", "redis", 0, &redis.address());
    if let AnyResource::MessageQueueTrigger(t) = &mut t {
        t.spec.secret = "redis-auth".into();
    }
    h.store.create(t).await.unwrap();
    let mut con = redis::Client::open(format!("redis://:s3cr%23t@{}", redis.address()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    publish(&mut con, "auth-in", "hi").await;
    let out = wait_for_len(&mut con, "auth-out", 1, 15).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["body"], "echo:hi");
    h.stop().await;
}

#[tokio::test]
async fn a_missing_secret_is_reported_in_the_status() {
    let f = Arc::new(FakeFunction::default());
    let h = Harness::start(fake_router(f.clone()).await).await;
    let mut t = mqt("nosecret", "fission", "redis", 0, "127.0.0.1:1");
    if let AnyResource::MessageQueueTrigger(t) = &mut t {
        t.spec.secret = "absent".into();
    }
    h.store.create(t).await.unwrap();
    let key = fission_triggers::TriggerKey {
        kind: fission_triggers::TriggerKind::MessageQueueTrigger,
        namespace: "default".into(),
        name: "nosecret".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(e) = h.triggers.status().get(&key).and_then(|s| s.last_error) {
            assert_eq!(e, "secret 'absent' not found in namespace 'default'");
            break;
        }
        assert!(Instant::now() < deadline, "no status");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.stop().await;
}
