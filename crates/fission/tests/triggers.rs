//! End-to-end: time triggers and async calls against the real server, calling real Node
//! functions through the real router.

mod support;

use std::time::Duration;

use support::*;

/// The runtimes and the sandbox are needed; under CI their absence is a failure, not a skip.
fn runtimes_or_skip() -> bool {
    require_functions().is_some()
}

fn node_env(server: &Server) {
    server
        .fission(&[
            "env",
            "create",
            "--name",
            "nodejs",
            "--image",
            "fission/node-env",
            "--poolsize",
            "1",
        ])
        .ok();
}

fn function(server: &Server, dir: &std::path::Path, name: &str, code: &str) {
    let path = write(dir, &format!("{name}.js"), code);
    server
        .fission(&[
            "fn",
            "create",
            "--name",
            name,
            "--env",
            "nodejs",
            "--code",
            path.to_str().expect("path"),
        ])
        .ok();
}

/// `FIRED: n (succeeded s, failed f, retried r, skipped k)` from `tt get`.
fn counts(server: &Server, tt: &str) -> [u64; 5] {
    let out = server.fission(&["tt", "get", "--name", tt]).ok().stdout;
    let line = out
        .lines()
        .find(|l| l.starts_with("FIRED: "))
        .unwrap_or_else(|| panic!("no FIRED line in {out}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("number"))
        .collect();
    [nums[0], nums[1], nums[2], nums[3], nums[4]]
}

#[test]
fn every_second_timer_calls_the_function_three_times_in_four_seconds_with_its_name() {
    if !runtimes_or_skip() {
        return;
    }
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    node_env(&server);
    function(
        &server,
        dir.path(),
        "tick",
        "module.exports = async (context) => {\n  console.log('timer=' + context.request.headers['x-fission-timer-name'] + ' method=' + context.request.method);\n  return { status: 200, body: 'ok' };\n};\n",
    );
    server
        .fission(&[
            "tt",
            "create",
            "--name",
            "every",
            "--function",
            "tick",
            "--cron",
            "@every 1s",
        ])
        .ok();
    // The first call includes a cold start; count from the first success.
    let start = eventually_blocking(Duration::from_secs(30), "first timer call", || {
        let c = counts(&server, "every");
        (c[1] >= 1).then_some(c[1])
    });
    std::thread::sleep(Duration::from_secs(4));
    let c = counts(&server, "every");
    assert!(
        c[1] - start >= 3,
        "succeeded {} in 4 s: {c:?}",
        c[1] - start
    );
    assert_eq!(c[2], 0, "{c:?}");
    let logs = server
        .fission(&["fn", "logs", "--name", "tick"])
        .ok()
        .stdout;
    assert!(logs.contains("timer=every method=POST"), "{logs}");
    let out = server
        .fission(&["tt", "showschedule", "--cron", "@every 1s", "--round", "2"])
        .ok()
        .stdout;
    assert!(out.starts_with("Current Server Time: \t"), "{out}");
    assert!(out.contains("Next 2 invocation: \t"), "{out}");
}

#[test]
fn a_timer_on_a_function_slower_than_its_period_skips_instead_of_stacking() {
    if !runtimes_or_skip() {
        return;
    }
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    node_env(&server);
    function(
        &server,
        dir.path(),
        "slow",
        "module.exports = async (context) => {\n  console.log('start');\n  await new Promise(r => setTimeout(r, 2500));\n  console.log('end');\n  return { status: 200, body: 'ok' };\n};\n",
    );
    server
        .fission(&[
            "tt",
            "create",
            "--name",
            "slowtick",
            "--function",
            "slow",
            "--cron",
            "@every 1s",
        ])
        .ok();
    eventually_blocking(Duration::from_secs(30), "first slow call", || {
        (counts(&server, "slowtick")[1] >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    let c = counts(&server, "slowtick");
    assert!(c[4] >= 2, "skipped {c:?}");
    // Never two calls at once: starts and ends alternate in the function's log.
    let logs = server
        .fission(&["fn", "logs", "--name", "slow"])
        .ok()
        .stdout;
    let mut open = 0;
    for l in logs.lines() {
        if l.ends_with("start") {
            open += 1;
            assert!(open <= 1, "stacked calls:\n{logs}");
        } else if l.ends_with("end") {
            open -= 1;
        }
    }
}

#[test]
fn a_failing_timer_call_shows_in_tt_get_and_in_the_function_logs() {
    if !runtimes_or_skip() {
        return;
    }
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    node_env(&server);
    function(
        &server,
        dir.path(),
        "broken",
        "module.exports = async () => ({ status: 500, body: 'kaput' });\n",
    );
    server
        .fission(&[
            "tt",
            "create",
            "--name",
            "bad",
            "--function",
            "broken",
            "--cron",
            "@every 1s",
        ])
        .ok();
    eventually_blocking(Duration::from_secs(30), "a failed call", || {
        (counts(&server, "bad")[2] >= 1).then_some(())
    });
    let out = server.fission(&["tt", "get", "--name", "bad"]).ok().stdout;
    assert!(out.contains("LAST ERROR: "), "{out}");
    assert!(out.contains("function answered 500: kaput"), "{out}");
    let logs = server
        .fission(&["fn", "logs", "--name", "broken"])
        .ok()
        .stdout;
    assert!(
        logs.contains("[time default/bad] function answered 500: kaput"),
        "{logs}"
    );
}

fn job(server: &Server, id: &str) -> serde_json::Value {
    http()
        .get(format!("{}/v2/async/{id}", server.controller))
        .send()
        .expect("get job")
        .json()
        .expect("job json")
}

#[test]
fn an_async_call_is_accepted_at_once_and_its_result_fetched_by_id() {
    if !runtimes_or_skip() {
        return;
    }
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    node_env(&server);
    function(
        &server,
        dir.path(),
        "echo",
        "module.exports = async (context) => ({ status: 200, body: 'got ' + JSON.stringify(context.request.body) });\n",
    );
    server
        .fission(&[
            "route",
            "create",
            "--name",
            "echo",
            "--method",
            "POST",
            "--url",
            "/echo",
            "--function",
            "echo",
        ])
        .ok();
    let resp = eventually_blocking(Duration::from_secs(10), "async accepted", || {
        let r = http()
            .post(server.url("/echo"))
            .header("X-Fission-Async", "true")
            .header("Content-Type", "application/json")
            .body(r#"{"n":1}"#)
            .send()
            .ok()?;
        (r.status() != 404).then_some(r)
    });
    assert_eq!(resp.status(), 202);
    let id = resp
        .headers()
        .get("x-fission-async-id")
        .and_then(|v| v.to_str().ok())
        .expect("id header")
        .to_owned();
    let done = eventually_blocking(Duration::from_secs(30), "job done", || {
        let j = job(&server, &id);
        (j["state"] == "succeeded").then_some(j)
    });
    assert_eq!(done["result"]["status"], 200, "{done}");
    assert_eq!(done["result"]["body"], r#"got {"n":1}"#, "{done}");
    let cli = server
        .fission(&["fn", "invocation", "--id", &id])
        .ok()
        .stdout;
    assert!(cli.contains("\"succeeded\""), "{cli}");
    let queued = server
        .fission(&[
            "fn", "test", "--name", "echo", "--method", "POST", "--async", "-b", "{}",
        ])
        .ok()
        .stdout;
    assert!(queued.starts_with("invocation '"), "{queued}");
}

#[test]
fn async_calls_queued_when_the_server_is_killed_run_after_it_restarts() {
    if !runtimes_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let mut server = Server::start_on(&data, "127.0.0.1:0", "127.0.0.1:0");
    node_env(&server);
    function(
        &server,
        tmp.path(),
        "slowecho",
        "module.exports = async (context) => { await new Promise(r => setTimeout(r, 1500)); return { status: 200, body: 'done ' + context.request.query.n }; };\n",
    );
    server
        .fission(&[
            "route",
            "create",
            "--name",
            "slowecho",
            "--url",
            "/slowecho",
            "--function",
            "slowecho",
        ])
        .ok();
    let mut ids = Vec::new();
    for n in 0..5 {
        let r = eventually_blocking(Duration::from_secs(10), "async accepted", || {
            let r = http()
                .get(server.url(&format!("/slowecho?n={n}")))
                .header("X-Fission-Async", "true")
                .send()
                .ok()?;
            (r.status() == 202).then_some(r)
        });
        let v: serde_json::Value = r.json().expect("json");
        ids.push(v["id"].as_str().expect("id").to_owned());
    }
    server.kill9();
    // A process the killed server was forking at that instant can hold the data directory's
    // lock for a moment after it died: try again until it is free.
    let server = eventually_blocking(
        Duration::from_secs(20),
        "a restart on the same data directory",
        || Server::try_start_on(&data, "127.0.0.1:0", "127.0.0.1:0").ok(),
    );
    for (n, id) in ids.iter().enumerate() {
        let j = eventually_blocking(Duration::from_secs(60), "job after restart", || {
            let j = job(&server, id);
            (j["state"] == "succeeded").then_some(j)
        });
        assert_eq!(j["result"]["body"], format!("done {n}"), "{j}");
    }
}

/// A redis-server on a free port in `dir` (the test fails under CI when it is missing).
fn redis_server(dir: &std::path::Path) -> Option<(std::process::Child, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = match std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is needed (apt-get install redis-server): {e}"
            );
            return None;
        }
    };
    eventually_blocking(Duration::from_secs(10), "redis-server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    Some((child, port))
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_redis_message_queue_trigger_calls_the_function_and_publishes_its_answers() {
    if !runtimes_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some((mut redis, port)) = redis_server(tmp.path()) else {
        return;
    };
    let server = Server::start();
    node_env(&server);
    function(
        &server,
        tmp.path(),
        "upper",
        "module.exports = async (context) => ({ status: 200, body: String(context.request.body).toUpperCase() + ' via ' + context.request.headers['x-fission-mqtrigger-topic'] });\n",
    );
    let address = format!("address=127.0.0.1:{port}");
    server
        .fission(&[
            "mqt",
            "create",
            "--name",
            "orders",
            "--function",
            "upper",
            "--mqtype",
            "redis",
            "--mqtkind",
            "fission",
            "--topic",
            "orders",
            "--resptopic",
            "orders-out",
            "--errortopic",
            "orders-err",
            "--contenttype",
            "text/plain",
            "--metadata",
            &address,
        ])
        .ok();
    for i in 0..10 {
        redis_cli(port, &["XADD", "orders", "*", "body", &format!("m{i}")]);
    }
    eventually_blocking(Duration::from_secs(60), "10 answers", || {
        let n: usize = redis_cli(port, &["XLEN", "orders-out"])
            .trim()
            .parse()
            .ok()?;
        (n >= 10).then_some(())
    });
    let out = redis_cli(port, &["XRANGE", "orders-out", "-", "+"]);
    for i in 0..10 {
        assert!(out.contains(&format!("M{i} via orders")), "{out}");
    }
    let get = server
        .fission(&["mqt", "get", "--name", "orders"])
        .ok()
        .stdout;
    assert!(get.contains("FIRED: 10 (succeeded 10"), "{get}");
    let _ = redis.kill();
    let _ = redis.wait();
}
