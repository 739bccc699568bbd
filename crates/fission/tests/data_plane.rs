//! End-to-end: functions called through the real router, served by real Node and Python
//! instances started by the real executor.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::*;

/// A server with Node and Python environments (pool size 2 each).
fn setup() -> Option<Setup> {
    let s = Setup::start()?;
    s.env("nodejs", "fission/node-env", &["--poolsize", "2"]);
    s.env("python", "fission/python-env", &["--poolsize", "2"]);
    Some(s)
}

const HELLO_JS: &str = "module.exports = async function(context) {\n  return { status: 200, body: \"Hello, world!\\n\" };\n}\n";

#[test]
fn seed_walkthrough_answers_hello_world_from_node_and_python() {
    let Some(s) = setup() else { return };
    s.function("hello", "nodejs", "hello.js", HELLO_JS, &[]);
    s.route(&["--method", "GET", "--url", "/hello", "--function", "hello"]);
    assert_eq!(s.get("/hello"), (200, "Hello, world!\n".to_owned()));

    s.function("cb", "nodejs", "cb.js", "module.exports = function(context, callback) { callback(201, 'from callback', {'x-cb': '1'}); };\n", &[]);
    s.route(&["--url", "/cb", "--function", "cb"]);
    let resp = eventually_blocking(Duration::from_secs(10), "cb route", || {
        let r = http().get(s.server.url("/cb")).send().ok()?;
        (r.status() != 404).then_some(r)
    });
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.headers().get("x-cb").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(resp.text().expect("body"), "from callback");

    s.function(
        "pyhello",
        "python",
        "hello.py",
        "def main():\n    return 'Hello, world!\\n'\n",
        &[],
    );
    s.route(&["--url", "/pyhello", "--function", "pyhello"]);
    assert_eq!(s.get("/pyhello"), (200, "Hello, world!\n".to_owned()));
}

#[test]
fn path_params_query_strings_and_bodies_reach_the_function() {
    let Some(s) = setup() else { return };
    s.function(
        "echo",
        "nodejs",
        "echo.js",
        r#"module.exports = async (ctx) => {
  const r = ctx.request;
  return { status: 200, headers: {'content-type': 'application/json'}, body: JSON.stringify({
    name: r.get('x-fission-params-name') || null, id: r.get('x-fission-params-id') || null,
    query: r.query, url: r.url, full: r.get('x-fission-full-url'), method: r.method,
    body: Buffer.isBuffer(r.body) ? r.body.toString('base64') : r.body }) };
};
"#,
        &[],
    );
    s.route(&[
        "--url",
        "/hello/{name}",
        "--function",
        "echo",
        "--method",
        "GET",
        "--method",
        "POST",
    ]);
    s.route(&["--url", "/items/{id:[0-9]+}", "--function", "echo"]);
    let (status, body) = s.get("/hello/world?x=1&y=two");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["name"], "world");
    assert_eq!(v["query"]["y"], "two");
    assert_eq!(v["full"], "/hello/world?x=1&y=two");
    assert_eq!(
        v["url"], "/?x=1&y=two",
        "relativeurl triggers forward '/' with the query"
    );

    let (_, body) = s.get("/items/42");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("json")["id"],
        "42"
    );
    let r = http().get(s.server.url("/items/abc")).send().expect("send");
    assert_eq!(r.status(), 404, "regex constraint rejects non-digits");

    let client = http();
    let r = client
        .post(s.server.url("/hello/json"))
        .json(&serde_json::json!({"a": [1, 2]}))
        .send()
        .expect("post");
    let v: serde_json::Value = r.json().expect("json");
    assert_eq!(v["body"]["a"][1], 2);
    assert_eq!(v["method"], "POST");
    let r = client
        .post(s.server.url("/hello/text"))
        .header("content-type", "text/plain")
        .body("plain text")
        .send()
        .expect("post");
    assert_eq!(
        r.json::<serde_json::Value>().expect("json")["body"],
        "plain text"
    );
    let bin: Vec<u8> = (0..=255u8).collect();
    let r = client
        .post(s.server.url("/hello/bin"))
        .header("content-type", "application/octet-stream")
        .body(bin.clone())
        .send()
        .expect("post");
    let b64 = r.json::<serde_json::Value>().expect("json")["body"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("b64"),
        bin
    );

    let r = client
        .delete(s.server.url("/hello/x"))
        .send()
        .expect("delete");
    assert_eq!(r.status(), 405, "path matches, method does not");
    let r = client
        .get(s.server.url("/nothing-here"))
        .send()
        .expect("get");
    assert_eq!(r.status(), 404);
}

#[test]
fn prefix_routes_strip_or_keep_the_prefix() {
    let Some(s) = setup() else { return };
    let code = "module.exports = async (ctx) => ({status: 200, body: ctx.request.url});\n";
    s.function("strip", "nodejs", "p.js", code, &[]);
    s.function("keep", "nodejs", "p.js", code, &[]);
    s.route(&["--prefix", "/api", "--function", "strip"]);
    s.route(&["--prefix", "/keep", "--keepprefix", "--function", "keep"]);
    assert_eq!(s.get("/api/users/7?q=1"), (200, "/users/7?q=1".to_owned()));
    assert_eq!(s.get("/api"), (200, "/".to_owned()));
    assert_eq!(s.get("/keep/a/b"), (200, "/keep/a/b".to_owned()));
    let r = http().get(s.server.url("/apix")).send().expect("get");
    assert_eq!(r.status(), 404, "/api does not match /apix");
}

#[test]
fn internal_routes_and_fn_test_reach_every_function() {
    let Some(s) = setup() else { return };
    s.function("hello", "nodejs", "hello.js", HELLO_JS, &[]);
    assert_eq!(
        s.get("/fission-function/hello"),
        (200, "Hello, world!\n".to_owned())
    );
    assert_eq!(
        s.get("/fission-function/default/hello"),
        (200, "Hello, world!\n".to_owned())
    );
    let out = s.server.fission(&["fn", "test", "--name", "hello"]).ok();
    assert_eq!(out.stdout, "Hello, world!\n");

    s.function(
        "broken",
        "nodejs",
        "broken.js",
        "module.exports = async (ctx) => { return {status: 200, body: 'x' ;\n",
        &[],
    );
    let out = s.server.fission(&["fn", "test", "--name", "broken"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("Error:"), "{}", out.stderr);
    assert!(
        out.stderr.contains("SyntaxError"),
        "the loader's error is shown: {}",
        out.stderr
    );
    let logs = s.server.fission(&["fn", "logs", "--name", "broken"]).ok();
    assert!(
        logs.stdout.contains("SyntaxError"),
        "fn logs shows it: {}",
        logs.stdout
    );
}

#[test]
fn failing_specialization_answers_500_quickly_with_the_loader_message() {
    let Some(s) = setup() else { return };
    s.function(
        "nomain",
        "python",
        "nomain.py",
        "def other():\n    return 'x'\n",
        &[],
    );
    s.route(&["--url", "/nomain", "--function", "nomain"]);
    // Wait for the route, then time one call.
    let _ = s.get("/nomain");
    let t = Instant::now();
    let r = http().get(s.server.url("/nomain")).send().expect("get");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(r.status(), 500);
    assert!(
        r.text().expect("body").contains("main"),
        "names the missing function"
    );
}

#[test]
fn function_update_serves_new_code_immediately() {
    let Some(s) = setup() else { return };
    s.function(
        "ver",
        "nodejs",
        "v.js",
        "module.exports = async () => ({status: 200, body: 'v1'});\n",
        &[],
    );
    s.route(&["--url", "/ver", "--function", "ver"]);
    assert_eq!(s.get("/ver").1, "v1");
    let v2 = write(
        s.dir.path(),
        "ver/v2.js",
        "module.exports = async () => ({status: 200, body: 'v2'});\n",
    );
    s.server
        .fission(&[
            "fn",
            "update",
            "--name",
            "ver",
            "--code",
            v2.to_str().expect("p"),
        ])
        .ok();
    // Immediately after the CLI returns, no call may run the old code.
    for _ in 0..5 {
        let r = http().get(s.server.url("/ver")).send().expect("get");
        assert_eq!(r.text().expect("body"), "v2");
    }
}

#[test]
fn slow_function_gets_504_after_its_timeout() {
    let Some(s) = setup() else { return };
    s.function("slow", "nodejs", "slow.js", "module.exports = async () => { await new Promise(r => setTimeout(r, 5000)); return {status: 200, body: 'late'}; };\n", &["--fntimeout", "1"]);
    s.route(&["--url", "/slow", "--function", "slow"]);
    eventually_blocking(Duration::from_secs(10), "route", || {
        let r = http().get(s.server.url("/slow")).send().ok()?;
        (r.status() != 404).then_some(())
    });
    // Each timed-out call retires its instance, so every call here is a cold start; on a loaded
    // machine a cold start can take longer than the 1 s timeout itself (a 500: no instance in
    // time, as Fission answers). The behaviour under test is the 504 once the function runs.
    let (elapsed, body) = eventually_blocking(
        Duration::from_secs(30),
        "a 504 from the slow function",
        || {
            let t = Instant::now();
            let r = http().get(s.server.url("/slow")).send().ok()?;
            (r.status() == 504).then(|| (t.elapsed(), r.text().unwrap_or_default()))
        },
    );
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(body.trim_end(), "no response from function before timeout");
}

/// Answers with a token unique to the instance (pids repeat across sandboxes); `?crash=1` makes
/// the instance exit.
const PID_JS: &str = "const token = require('crypto').randomUUID();\nmodule.exports = async (ctx) => { if (ctx.request.query.crash) { setTimeout(() => process.exit(3), 10); return {status: 200, body: 'bye'}; } await new Promise(r => setTimeout(r, Number(ctx.request.query.ms || 0))); return {status: 200, body: token}; };\n";

#[test]
fn burst_respects_concurrency_and_requests_per_pod() {
    let Some(s) = setup() else { return };
    s.function(
        "limited",
        "nodejs",
        "pid.js",
        PID_JS,
        &["--concurrency", "2", "--rpp", "1"],
    );
    s.route(&["--url", "/limited", "--function", "limited"]);
    let _ = s.get("/limited");
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let url = s.server.url("/limited?ms=300");
            std::thread::spawn(move || http().get(url).send().and_then(|r| r.text()).expect("call"))
        })
        .collect();
    let pids: HashSet<String> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert!(
        pids.len() <= 2,
        "at most `concurrency` instances served the burst: {pids:?}"
    );
}

#[test]
fn killed_instance_is_replaced_and_calls_keep_working() {
    let Some(s) = setup() else { return };
    s.function("pid", "nodejs", "pid.js", PID_JS, &[]);
    s.route(&["--url", "/pid", "--function", "pid"]);
    let (_, first) = s.get("/pid");
    let (_, bye) = s.get("/pid?crash=1");
    assert_eq!(bye, "bye");
    let second = eventually_blocking(Duration::from_secs(10), "a new instance", || {
        let r = http().get(s.server.url("/pid")).send().ok()?;
        if r.status() != 200 {
            return None;
        }
        let b = r.text().ok()?;
        (b != first).then_some(b)
    });
    assert_ne!(second, first);
}

#[test]
fn idle_instances_are_reaped_after_idletimeout() {
    let Some(s) = setup() else { return };
    s.function("idle", "nodejs", "pid.js", PID_JS, &["--idletimeout", "1"]);
    s.route(&["--url", "/idle", "--function", "idle"]);
    let (_, first) = s.get("/idle");
    // idletimeout 1 s plus the 5 s reaper period; a call after that needs a new instance.
    std::thread::sleep(Duration::from_secs(8));
    let (_, again) = s.get("/idle");
    assert_ne!(
        again, first,
        "the idle instance was reaped and a new one specialized"
    );
    let metrics = http()
        .get(s.server.url("/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("fission_function_cold_starts_total"),
        "cold starts are counted"
    );
}

#[test]
fn oversized_request_body_is_refused_with_413() {
    let Some(s) = setup() else { return };
    s.function("hello", "nodejs", "hello.js", HELLO_JS, &[]);
    s.route(&["--url", "/big", "--function", "hello", "--method", "POST"]);
    eventually_blocking(Duration::from_secs(10), "route", || {
        let r = http().post(s.server.url("/big")).body("x").send().ok()?;
        (r.status() != 404).then_some(())
    });
    // Announce a body over the limit and read the answer before sending it.
    use std::io::{Read as _, Write as _};
    let addr = s.server.router.trim_start_matches("http://").to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        conn,
        "POST /big HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        200u64 * 1024 * 1024
    )
    .expect("write");
    conn.write_all(&[b'x'; 4096]).expect("write some body");
    let mut head = [0u8; 512];
    let n = conn.read(&mut head).expect("read");
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[test]
fn python_functions_use_flask_request_and_return_values() {
    let Some(s) = setup() else { return };
    s.function(
        "pyecho",
        "python",
        "echo.py",
        "from flask import request\n\ndef main():\n    name = request.args.get('name', 'nobody')\n    return 'hi ' + name + ' ' + request.get_data(as_text=True), 202, {'X-Py': 'yes'}\n",
        &[],
    );
    s.route(&[
        "--url",
        "/pyecho",
        "--function",
        "pyecho",
        "--method",
        "POST",
    ]);
    let r = eventually_blocking(Duration::from_secs(10), "route", || {
        let r = http()
            .post(s.server.url("/pyecho?name=ann"))
            .body("body!")
            .send()
            .ok()?;
        (r.status() != 404).then_some(r)
    });
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.headers().get("x-py").and_then(|v| v.to_str().ok()),
        Some("yes")
    );
    assert_eq!(r.text().expect("body"), "hi ann body!");
}

#[test]
fn metrics_count_calls_per_function() {
    let Some(s) = setup() else { return };
    s.function("counted", "nodejs", "hello.js", HELLO_JS, &[]);
    s.route(&["--url", "/counted", "--function", "counted"]);
    let _ = s.get("/counted");
    let _ = s.get("/counted");
    let text = http()
        .get(s.server.url("/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    let line = text
        .lines()
        .find(|l| l.starts_with("fission_function_calls_total{") && l.contains("name=\"counted\""))
        .unwrap_or_else(|| panic!("no call counter for 'counted' in:\n{text}"));
    let n: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(n >= 2.0, "{line}");
    assert!(
        text.contains("fission_function_overhead_seconds"),
        "overhead histogram exported"
    );
}

#[test]
fn fn_logs_follow_streams_new_output() {
    use std::io::{BufRead as _, BufReader};
    let Some(s) = setup() else { return };
    s.function("chatty", "nodejs", "chatty.js", "module.exports = async (ctx) => { console.log('marker-' + ctx.request.query.n); return {status: 200, body: 'ok'}; };\n", &[]);
    s.route(&["--url", "/chatty", "--function", "chatty"]);
    let _ = s.get("/chatty?n=first");
    let mut child = std::process::Command::new(BIN)
        .args(["fn", "logs", "--name", "chatty", "-f"])
        .env("FISSION_URL", &s.server.controller)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn logs -f");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The existing line comes first, then a new call's line arrives while following.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let mut called = false;
    while Instant::now() < deadline && !seen.iter().any(|l: &String| l.contains("marker-second")) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
        if !called && seen.iter().any(|l| l.contains("marker-first")) {
            let _ = s.get("/chatty?n=second");
            called = true;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|l| l.contains("marker-first")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("marker-second")), "{seen:?}");
}
