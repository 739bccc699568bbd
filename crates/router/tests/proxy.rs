//! The router driven over real sockets: a hyper client → `Router::serve` → a hyper echo
//! "function" leased through a fake executor, with routes synced from an in-memory store.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use fission_core::resources::ResourceKind;
use fission_core::{ExecutorError, ResourceStore as _};
use fission_router::respond::{ERROR_HEADER, ERROR_REASON_HEADER};
use http::{Request, StatusCode};
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn get(h: &Harness, path: &str) -> Request<Full<Bytes>> {
    Request::get(h.url(path))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn header<'a>(seen: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    seen["headers"][name].as_str()
}

// === What the function receives ===

#[tokio::test]
async fn forwards_root_path_and_query_for_relativeurl_trigger() {
    let h = Harness::start(vec![
        function("hello"),
        url_trigger("hello", "/hello", &["GET"], "hello"),
    ])
    .await;
    let seen = h.seen(get(&h, "/hello?name=world&x=1")).await;
    assert_eq!(seen["uri"], "/?name=world&x=1");
    assert_eq!(seen["method"], "GET");
    assert_eq!(
        header(&seen, "x-fission-full-url"),
        Some("/hello?name=world&x=1")
    );
}

#[tokio::test]
async fn adds_fission_function_and_forwarding_headers() {
    let h = Harness::start(vec![
        function("hello"),
        url_trigger("hello", "/hello", &["GET"], "hello"),
    ])
    .await;
    let seen = h.seen(get(&h, "/hello")).await;
    let router_host = h.addr.to_string();
    assert_eq!(header(&seen, "x-fission-function-name"), Some("hello"));
    assert_eq!(
        header(&seen, "x-fission-function-namespace"),
        Some("default")
    );
    let stored = h
        .store
        .get(ResourceKind::Function, "default", "hello")
        .await
        .unwrap();
    assert_eq!(
        header(&seen, "x-fission-function-uid"),
        Some(stored.meta().uid.as_str())
    );
    assert_eq!(
        header(&seen, "x-fission-function-resourceversion"),
        Some(stored.meta().resource_version.as_str())
    );
    assert_eq!(
        header(&seen, "x-forwarded-host"),
        Some(router_host.as_str())
    );
    assert_eq!(
        header(&seen, "forwarded"),
        Some(format!("host={router_host};").as_str())
    );
    assert_eq!(header(&seen, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        header(&seen, "host"),
        Some(h.echo.to_string().as_str()),
        "Host is the instance address"
    );
}

#[tokio::test]
async fn keeps_client_forwarded_headers_instead_of_adding_its_own() {
    let h = Harness::start(vec![
        function("hello"),
        url_trigger("hello", "/hello", &["GET"], "hello"),
    ])
    .await;
    let req = Request::get(h.url("/hello"))
        .header("x-forwarded-host", "public.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let seen = h.seen(req).await;
    assert_eq!(header(&seen, "x-forwarded-host"), Some("public.example"));
    assert_eq!(header(&seen, "forwarded"), None);
}

#[tokio::test]
async fn forwards_template_variables_as_decoded_params_headers() {
    let h = Harness::start(vec![
        function("users"),
        url_trigger("users", "/users/{user_id}/{name}", &["GET"], "users"),
    ])
    .await;
    let seen = h.seen(get(&h, "/users/42/John%20Doe")).await;
    assert_eq!(header(&seen, "x-fission-params-user_id"), Some("42"));
    assert_eq!(header(&seen, "x-fission-params-name"), Some("John Doe"));
    assert_eq!(seen["uri"], "/");
}

#[tokio::test]
async fn sends_params_headers_in_go_canonical_case_on_the_wire() {
    // A raw TCP "function" that records the request head byte for byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw_addr = listener.local_addr().unwrap();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the head ended");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let _ = head_tx.send(String::from_utf8(head).unwrap());
    });
    let h = Harness::start(vec![
        function("users"),
        url_trigger("users", "/u/{user_id}", &["GET"], "users"),
    ])
    .await;
    h.instances.plan("default/users", [Step::Lease(raw_addr)]);
    let (status, _, _) = h.get("/u/7").await;
    assert_eq!(status, StatusCode::OK);
    let head = head_rx.await.unwrap();
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains("\r\nX-Fission-Params-User_id: 7\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nX-Fission-Full-Url: /u/7\r\n"), "{head}");
}

#[tokio::test]
async fn forwards_remainder_after_prefix_and_whole_path_with_keep_prefix() {
    let h = Harness::start(vec![
        function("f"),
        prefix_trigger("strip", "/api", false, "f"),
        prefix_trigger("keep", "/keep/", true, "f"),
    ])
    .await;
    assert_eq!(
        h.seen(get(&h, "/api/v1/items?q=2")).await["uri"],
        "/v1/items?q=2"
    );
    assert_eq!(h.seen(get(&h, "/api")).await["uri"], "/");
    assert_eq!(h.seen(get(&h, "/keep/a/b")).await["uri"], "/keep/a/b");
    let (status, _, _) = h.get("/apix").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn internal_routes_forward_sub_paths_for_any_method() {
    let h = Harness::start(vec![function("hello")]).await;
    let seen = h
        .seen(
            Request::delete(h.url("/fission-function/hello/a/b?c=d"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(seen["uri"], "/a/b?c=d");
    assert_eq!(seen["method"], "DELETE");
    assert_eq!(
        h.seen(get(&h, "/fission-function/default/hello")).await["uri"],
        "/"
    );
}

// === Bodies ===

fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[tokio::test]
async fn round_trips_binary_post_bodies_small_and_streamed() {
    let h = Harness::start(vec![
        function("echo"),
        url_trigger("echo", "/echo", &["POST"], "echo"),
    ])
    .await;
    // 1 KiB is buffered (replayable); 300 KiB is streamed.
    for len in [1024, 300 * 1024] {
        let payload = binary(len);
        let req = Request::post(h.url("/echo"))
            .header("x-test-mode", "raw")
            .body(Full::new(Bytes::from(payload.clone())))
            .unwrap();
        let (status, _, body) = h.send(req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), len);
        assert!(
            body[..] == payload[..],
            "body of {len} bytes changed in transit"
        );
    }
}

#[tokio::test]
async fn refuses_body_over_limit_by_content_length_with_413_without_leasing() {
    let h = Harness::start(vec![
        function("echo"),
        url_trigger("echo", "/echo", &["POST"], "echo"),
    ])
    .await;
    let req = Request::post(h.url("/echo"))
        .body(Full::new(Bytes::from(vec![0u8; TEST_BODY_LIMIT + 1])))
        .unwrap();
    let (status, headers, body) = h.send(req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(headers[ERROR_HEADER], "router");
    assert!(
        String::from_utf8_lossy(&body).contains("request body too large"),
        "{body:?}"
    );
    assert!(
        h.instances.acquired.lock().unwrap().is_empty(),
        "no instance should be leased"
    );
}

#[tokio::test]
async fn refuses_chunked_body_over_limit_with_413() {
    let h = Harness::start(vec![
        function("echo"),
        url_trigger("echo", "/echo", &["POST"], "echo"),
    ])
    .await;
    let chunk = Bytes::from(vec![1u8; 64 * 1024]);
    let chunks = (TEST_BODY_LIMIT / chunk.len()) + 2;
    let frames = futures::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = Request::post(h.url("/echo"))
        .body(StreamBody::new(frames))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

// === Failures ===

#[tokio::test]
async fn answers_504_and_retires_the_instance_when_the_function_exceeds_its_timeout() {
    let h = Harness::start(vec![
        function_with_timeout("slow", 1),
        url_trigger("slow", "/slow", &["GET"], "slow"),
    ])
    .await;
    let started = Instant::now();
    let req = Request::get(h.url("/slow"))
        .header("x-test-delay-ms", "3000")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = h.send(req).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body, "no response from function before timeout\n");
    assert_eq!(headers[ERROR_REASON_HEADER], "function_timeout");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    eventually(
        Duration::from_secs(2),
        "lease released as broken",
        || async {
            h.instances
                .releases()
                .iter()
                .any(|r| r.function == "default/slow" && r.broken)
        },
    )
    .await;
}

#[tokio::test]
async fn shows_the_specialization_error_text_with_500() {
    let h = Harness::start(vec![
        function("bad"),
        url_trigger("bad", "/bad", &["GET"], "bad"),
    ])
    .await;
    h.instances.plan(
        "default/bad",
        [Step::Fail(ExecutorError::SpecializationFailed {
            function: "default/bad".into(),
            message: "user code load error: SyntaxError: Unexpected token".into(),
        })],
    );
    let (status, headers, body) = h.get("/bad").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body,
        "error sending request to function: [default/bad] error specializing function: user code load error: SyntaxError: Unexpected token\n"
    );
    assert_eq!(headers[ERROR_HEADER], "router");
}

#[tokio::test]
async fn executor_not_found_becomes_404_with_its_message() {
    let h = Harness::start(vec![
        function("gone"),
        url_trigger("gone", "/gone", &["GET"], "gone"),
    ])
    .await;
    h.instances.plan(
        "default/gone",
        [Step::Fail(ExecutorError::NotFound(
            "environment 'default/nodejs' not found".into(),
        ))],
    );
    let (status, _, body) = h.get("/gone").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        String::from_utf8_lossy(&body).contains("environment 'default/nodejs' not found"),
        "{body:?}"
    );
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405_both_marked_as_router_errors() {
    let h = Harness::start(vec![
        function("hello"),
        url_trigger("hello", "/hello", &["GET"], "hello"),
    ])
    .await;
    let (status, headers, body) = h.get("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "404 page not found\n");
    assert_eq!(headers[ERROR_HEADER], "router");

    let (status, headers, body) = h
        .send(
            Request::post(h.url("/hello"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body.is_empty());
    assert_eq!(headers[ERROR_REASON_HEADER], "method_not_allowed");
}

#[tokio::test]
async fn relays_function_error_statuses_verbatim() {
    let h = Harness::start(vec![
        function("hello"),
        url_trigger("hello", "/hello", &["GET"], "hello"),
    ])
    .await;
    let req = Request::get(h.url("/hello"))
        .header("x-test-status", "503")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, _) = h.send(req).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["x-from-function"], "yes");
    assert!(
        headers.get(ERROR_HEADER).is_none(),
        "function responses are not router errors"
    );
}

#[tokio::test]
async fn retries_once_on_a_fresh_instance_when_the_first_refuses_connections() {
    let h = Harness::start(vec![
        function("hello"),
        url_trigger("hello", "/hello", &["GET"], "hello"),
    ])
    .await;
    let dead = dead_addr().await;
    h.instances.plan("default/hello", [Step::Lease(dead)]);
    let (status, _, _) = h.get("/hello").await;
    assert_eq!(status, StatusCode::OK);
    let releases = h.instances.releases();
    assert!(
        releases.contains(&Released {
            function: "default/hello".into(),
            addr: dead,
            broken: true
        }),
        "{releases:?}"
    );
    assert_eq!(h.instances.acquired.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn gives_up_with_502_when_the_retry_fails_too() {
    let h = Harness::start(vec![
        function("hello"),
        url_trigger("hello", "/hello", &["GET"], "hello"),
    ])
    .await;
    let dead = dead_addr().await;
    h.instances
        .plan("default/hello", [Step::Lease(dead), Step::Lease(dead)]);
    let (status, headers, body) = h.get("/hello").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers[ERROR_REASON_HEADER], "upstream_failed");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.starts_with("error sending request to function: [default/hello] instance"),
        "{text}"
    );
    assert!(text.contains("could not connect"), "{text}");
}

/// An instance that reads the request and dies without answering (a crash mid-request).
async fn crashing_instance() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if matches!(tokio::io::AsyncReadExt::read(&mut s, &mut buf).await, Ok(n) if n > 0) {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                drop(s);
            });
        }
    });
    (addr, received)
}

#[tokio::test]
async fn a_post_whose_instance_dies_mid_request_is_not_sent_again() {
    let h = Harness::start(vec![
        function("hello"),
        url_trigger("hello", "/hello", &["POST"], "hello"),
    ])
    .await;
    let (crashing, received) = crashing_instance().await;
    h.instances.plan("default/hello", [Step::Lease(crashing)]);
    let req = Request::post(h.url("/hello"))
        .body(Full::new(Bytes::from_static(b"charge=1")))
        .unwrap();
    let (status, headers, _) = h.send(req).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers[ERROR_REASON_HEADER], "upstream_failed");
    assert_eq!(
        received.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the function got the request once"
    );
    assert_eq!(
        h.instances.acquired.lock().unwrap().len(),
        1,
        "no second instance was asked for"
    );
}

#[tokio::test]
async fn releases_the_lease_when_the_client_disconnects_mid_request() {
    let h = Harness::start(vec![
        function("slow"),
        url_trigger("slow", "/slow", &["GET"], "slow"),
    ])
    .await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nx-test-delay-ms: 10000\r\n\r\n")
        .await
        .unwrap();
    eventually(Duration::from_secs(2), "instance leased", || async {
        !h.instances.acquired.lock().unwrap().is_empty()
    })
    .await;
    drop(s);
    eventually(
        Duration::from_secs(3),
        "lease released after client went away",
        || async { !h.instances.releases().is_empty() },
    )
    .await;
    let metrics = h.metrics().await;
    assert!(metrics.contains(r#"code="499"} 1"#), "{metrics}");
}

// === Route sync ===

#[tokio::test]
async fn serves_a_route_added_after_start_without_restart() {
    let h = Harness::start(vec![]).await;
    let (status, _, _) = h.get("/late").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Trigger first: it waits for its function.
    h.store
        .create(url_trigger("late", "/late", &["GET"], "late"))
        .await
        .unwrap();
    h.store.create(function("late")).await.unwrap();
    eventually(Duration::from_secs(3), "new route served", || async {
        h.get("/late").await.0 == StatusCode::OK
    })
    .await;

    h.store
        .delete(ResourceKind::HttpTrigger, "default", "late")
        .await
        .unwrap();
    eventually(Duration::from_secs(3), "deleted route gone", || async {
        h.get("/late").await.0 == StatusCode::NOT_FOUND
    })
    .await;
}

#[tokio::test]
async fn relists_after_falling_behind_the_change_feed() {
    // A tiny feed buffer and a burst of writes force `Lagged`.
    let echo = spawn_echo().await;
    let store = MemoryStore::with_feed_capacity(2);
    let instances = FakeInstances::new(echo);
    let mut registry = prometheus_client::registry::Registry::default();
    let router =
        fission_router::Router::new(fission_router::Config::default(), instances, &mut registry);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sync = tokio::spawn({
        let (router, store, shutdown) = (router.clone(), store.clone(), shutdown.clone());
        async move { router.sync_routes(store, shutdown).await }
    });
    tokio::time::timeout(Duration::from_secs(5), router.ready())
        .await
        .unwrap();
    for i in 0..50 {
        use fission_core::ResourceStore as _;
        store.create(function(&format!("f{i}"))).await.unwrap();
        store
            .create(url_trigger(
                &format!("t{i}"),
                &format!("/r{i}"),
                &["GET"],
                &format!("f{i}"),
            ))
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(3), "all 50 routes present", || async {
        router.route_table().trigger_route_count() == 50
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), sync)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

// === Router endpoints, metrics, upgrades, shutdown ===

#[tokio::test]
async fn serves_healthz_version_and_default_root() {
    let h = Harness::start(vec![]).await;
    assert_eq!(h.get("/router-healthz").await.0, StatusCode::OK);
    let (status, _, body) = h.get("/_version").await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["version"], "test-1.2.3");
    let (status, _, body) = h.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
}

#[tokio::test]
async fn counts_calls_errors_and_cold_starts_in_metrics() {
    let h = Harness::start(vec![
        function("hello"),
        url_trigger("hello", "/hello", &["GET"], "hello"),
    ])
    .await;
    h.instances.cold.store(true, Ordering::Relaxed);
    assert_eq!(h.get("/hello").await.0, StatusCode::OK);
    let req = Request::get(h.url("/hello"))
        .header("x-test-status", "500")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h.send(req).await.0, StatusCode::INTERNAL_SERVER_ERROR);

    let text = h.metrics().await;
    let labels = r#"namespace="default",name="hello",path="/hello",method="GET""#;
    assert!(
        text.contains(&format!(
            "fission_function_calls_total{{{labels},code=\"200\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "fission_function_calls_total{{{labels},code=\"500\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "fission_function_errors_total{{{labels},code=\"500\"}} 1"
        )),
        "{text}"
    );
    assert!(
        !text.contains(&format!(
            "fission_function_errors_total{{{labels},code=\"200\"}}"
        )),
        "{text}"
    );
    assert!(
        text.contains(r#"fission_function_cold_starts_total{namespace="default",name="hello"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "fission_function_overhead_seconds_count{{{labels},code=\"200\"}} 1"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn relays_protocol_upgrades_both_ways() {
    let h = Harness::start(vec![function("ws")]).await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"GET /fission-function/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).await.unwrap(),
            1,
            "closed during the 101 head"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping over the tunnel").await.unwrap();
    let mut buf = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping over the tunnel");
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight_and_stops_accepting() {
    let h = Harness::start(vec![
        function("slow"),
        url_trigger("slow", "/slow", &["GET"], "slow"),
    ])
    .await;
    let req = Request::get(h.url("/slow"))
        .header("x-test-delay-ms", "500")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let in_flight = tokio::spawn({
        let client = h.client.clone();
        async move { client.request(req).await }
    });
    eventually(
        Duration::from_secs(2),
        "request reached the function",
        || async { !h.instances.acquired.lock().unwrap().is_empty() },
    )
    .await;
    h.shutdown.cancel();
    let resp = tokio::time::timeout(Duration::from_secs(3), in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(3), h.serve)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(h.addr).await.is_err(),
        "listener should be closed"
    );
}

#[tokio::test]
async fn grace_period_bounds_the_drain() {
    let h = Harness::start_with(
        vec![
            function("slow"),
            url_trigger("slow", "/slow", &["GET"], "slow"),
        ],
        Duration::from_millis(200),
    )
    .await;
    let req = Request::get(h.url("/slow"))
        .header("x-test-delay-ms", "5000")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let client = h.client.clone();
    let _in_flight = tokio::spawn(async move { client.request(req).await });
    eventually(
        Duration::from_secs(2),
        "request reached the function",
        || async { !h.instances.acquired.lock().unwrap().is_empty() },
    )
    .await;
    let started = Instant::now();
    h.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), h.serve)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "drain took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_overloaded_server_answers_503_or_429_with_retry_after() {
    let h = Harness::start(vec![
        function("hello"),
        url_trigger("hello", "/hello", &["GET"], "hello"),
    ])
    .await;
    let overloaded = |queue_full| {
        Step::Fail(ExecutorError::Overloaded {
            message: "busy".into(),
            retry_after_secs: 2,
            queue_full,
        })
    };
    h.instances
        .plan("default/hello", [overloaded(false), overloaded(true)]);
    let (status, headers, body) = h.get("/hello").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[http::header::RETRY_AFTER], "2");
    assert_eq!(headers[ERROR_REASON_HEADER], "overloaded");
    assert!(String::from_utf8_lossy(&body).contains("server overloaded: busy"));
    let (status, headers, _) = h.get("/hello").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[http::header::RETRY_AFTER], "2");
}
