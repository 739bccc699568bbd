//! End-to-end: the router's access log — one line per request on `fission_router::access`
//! with method, path, function, status, duration, cold/warm and instance; off with `RUST_LOG`.

mod support;

use std::time::Duration;

use support::*;

const HELLO_JS: &str = "module.exports = async () => ({ status: 200, body: 'hi' });\n";

/// The server's access lines.
fn access_lines(server: &Server) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|l| l.contains("fission_router::access"))
        .map(str::to_owned)
        .collect()
}

/// The value of `key=` in an access line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()
}

fn hello(server: &Server, dir: &std::path::Path) {
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
    let code = write(dir, "hello.js", HELLO_JS);
    server
        .fission(&[
            "fn",
            "create",
            "--name",
            "hello",
            "--env",
            "nodejs",
            "--code",
            code.to_str().expect("path"),
        ])
        .ok();
    server
        .fission(&["route", "create", "--url", "/hello", "--function", "hello"])
        .ok();
}

fn get(server: &Server, path: &str) -> u16 {
    http()
        .get(server.url(path))
        .send()
        .expect("call")
        .status()
        .as_u16()
}

#[test]
fn each_request_gets_one_access_line_with_function_status_duration_start_and_instance() {
    let Some(()) = require_functions() else {
        return;
    };
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    hello(&server, dir.path());
    eventually_blocking(Duration::from_secs(30), "/hello routed", || {
        get(&server, "/hello") == 200
    });
    let before = access_lines(&server).len();
    assert_eq!(get(&server, "/hello?x=1"), 200);
    assert_eq!(get(&server, "/nope"), 404);

    let lines = eventually_blocking(Duration::from_secs(10), "two more access lines", || {
        let lines = access_lines(&server);
        (lines.len() >= before + 2).then_some(lines)
    });
    assert_eq!(lines.len(), before + 2, "one line per request: {lines:#?}");
    // Calls before the route was in the table got 404s; the first one served cold-started.
    let first = lines
        .iter()
        .find(|l| field(l, "function").is_some())
        .expect("a served call");
    assert_eq!(field(first, "start"), Some("cold"), "{first}");

    let warm = &lines[before];
    assert_eq!(field(warm, "method"), Some("GET"), "{warm}");
    assert_eq!(field(warm, "path"), Some("/hello"), "{warm}");
    assert_eq!(field(warm, "function"), Some("default/hello"), "{warm}");
    assert_eq!(field(warm, "status"), Some("200"), "{warm}");
    assert_eq!(field(warm, "start"), Some("warm"), "{warm}");
    assert_eq!(
        field(warm, "instance"),
        field(first, "instance"),
        "the warm call ran on the instance the cold one started: {lines:#?}"
    );
    let ms: f64 = field(warm, "duration_ms")
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("duration_ms: {warm}"));
    assert!(ms >= 0.0, "{warm}");

    let missing = &lines[before + 1];
    assert_eq!(field(missing, "path"), Some("/nope"), "{missing}");
    assert_eq!(field(missing, "status"), Some("404"), "{missing}");
    assert_eq!(field(missing, "function"), None, "{missing}");
}

#[test]
fn rust_log_turns_the_access_log_off() {
    let Some(()) = require_functions() else {
        return;
    };
    let server = Server::start_logging("info,fission_router::access=off");
    let dir = tempfile::tempdir().expect("tempdir");
    hello(&server, dir.path());
    eventually_blocking(Duration::from_secs(30), "/hello routed", || {
        get(&server, "/hello") == 200
    });
    assert_eq!(get(&server, "/nope"), 404);
    let log = server.log();
    assert!(
        log.contains(" INFO "),
        "the rest of the info log stays on: {log}"
    );
    assert!(access_lines(&server).is_empty(), "{log}");
}

#[test]
fn the_access_log_is_off_by_default_and_display_access_log_turns_it_on() {
    let Some(()) = require_functions() else {
        return;
    };
    for (env, wanted) in [
        (&[("RUST_LOG", "")][..], false),
        (
            &[("RUST_LOG", ""), ("DISPLAY_ACCESS_LOG", "true")][..],
            true,
        ),
    ] {
        let server = Server::start_with_env(env);
        let dir = tempfile::tempdir().expect("tempdir");
        hello(&server, dir.path());
        eventually_blocking(Duration::from_secs(30), "/hello routed", || {
            get(&server, "/hello") == 200
        });
        if wanted {
            eventually_blocking(Duration::from_secs(10), "an access line", || {
                !access_lines(&server).is_empty()
            });
        } else {
            // Lines are written by the server's log thread: give a late one time to appear.
            std::thread::sleep(Duration::from_millis(500));
            let log = server.log();
            assert!(log.contains(" INFO "), "the info log stays on: {log}");
            assert!(access_lines(&server).is_empty(), "{env:?}: {log}");
        }
    }
}
