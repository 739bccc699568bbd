//! Bursts with the default settings: every call is served or refused cleanly (429/503 with
//! Retry-After), never a pile-up that fails everyone.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

/// `calls` GETs of `url` from `parallel` threads; returns (ok, cleanly refused, other answers).
fn burst(url: &str, calls: usize, parallel: usize) -> (usize, usize, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..parallel)
        .map(|_| {
            let (url, next) = (url.to_owned(), next.clone());
            std::thread::spawn(move || {
                let client = http();
                let (mut ok, mut refused, mut other) = (0, 0, Vec::new());
                while next.fetch_add(1, Ordering::SeqCst) < calls {
                    match client.get(&url).send() {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r)
                            if matches!(r.status().as_u16(), 429 | 503)
                                && r.headers().contains_key("retry-after") =>
                        {
                            refused += 1
                        }
                        Ok(r) => {
                            other.push(format!("{} {}", r.status(), r.text().unwrap_or_default()))
                        }
                        Err(e) => other.push(e.to_string()),
                    }
                }
                (ok, refused, other)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .fold((0, 0, Vec::new()), |mut acc, (o, r, x)| {
            acc.0 += o;
            acc.1 += r;
            acc.2.extend(x);
            acc
        })
}

#[test]
fn bursts_of_first_and_warm_calls_with_default_settings_are_served_or_refused_cleanly() {
    let Some(()) = require_functions() else {
        return;
    };
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let code = write(
        dir.path(),
        "hello.py",
        "def main():\n    return 'Hello, world!\\n'\n",
    );
    server
        .fission(&[
            "env",
            "create",
            "--name",
            "python",
            "--image",
            "fission/python-env",
        ])
        .ok();
    server
        .fission(&[
            "fn",
            "create",
            "--name",
            "hello",
            "--env",
            "python",
            "--code",
            code.to_str().expect("path"),
        ])
        .ok();
    server
        .fission(&[
            "route",
            "create",
            "--method",
            "GET",
            "--url",
            "/hello",
            "--function",
            "hello",
        ])
        .ok();
    eventually_blocking(Duration::from_secs(10), "the route", || {
        let r = reqwest::blocking::get(server.url("/nope-route-probe")).ok()?;
        Some(r.status())
    });

    // 200 simultaneous first calls of a function nobody has called yet.
    let (ok, refused, other) = burst(&server.url("/hello"), 200, 200);
    assert!(
        other.is_empty(),
        "every call is 200 or a clean 429/503: {other:?}"
    );
    assert_eq!(ok + refused, 200);
    // How many are served depends on how fast this machine boots runtimes; that some are, and
    // that the rest are refused cleanly, does not.
    assert!(
        ok > 0,
        "first calls are served ({ok} ok, {refused} refused)"
    );
    eprintln!("200 simultaneous first calls: {ok} served, {refused} refused with Retry-After");

    // 2,000 calls, 200 at a time.
    let (ok, refused, other) = burst(&server.url("/hello"), 2_000, 200);
    assert!(
        other.is_empty(),
        "every call is 200 or a clean 429/503: {other:?}"
    );
    assert_eq!(ok + refused, 2_000);
    assert!(
        ok > refused,
        "most warm calls are served ({ok} ok, {refused} refused)"
    );
    eprintln!("2,000 calls, 200 at a time: {ok} served, {refused} refused with Retry-After");

    // Memory stays bounded: far fewer runtimes than calls.
    let log = server.log();
    let started = log.matches("instance started").count();
    assert!(started < 200, "{started} instances started for 2,200 calls");
}
