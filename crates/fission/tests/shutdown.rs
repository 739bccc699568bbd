//! The shutdown order, seen from outside: SIGTERM stops new connections at once, lets a request
//! in flight finish on its instance, and the server then exits 0.

mod support;

use std::time::{Duration, Instant};

use support::*;

const SLOW_JS: &str = "module.exports = async function(context) {\n  await new Promise(r => setTimeout(r, 1500));\n  return { status: 200, body: \"finished\\n\" };\n}\n";

#[test]
fn a_request_in_flight_at_sigterm_completes_and_the_server_exits_0() {
    let Some(()) = require_functions() else {
        return;
    };
    let mut server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let code = write(dir.path(), "slow.js", SLOW_JS);
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
    server
        .fission(&[
            "fn",
            "create",
            "--name",
            "slow",
            "--env",
            "nodejs",
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
            "/slow",
            "--function",
            "slow",
        ])
        .ok();
    // Warm it up so the call under test is the slow function, not a cold start.
    let client = http();
    let warm = eventually_blocking(Duration::from_secs(20), "the route", || {
        client
            .get(server.url("/slow"))
            .send()
            .ok()
            .filter(|r| r.status() == 200)
    });
    assert_eq!(warm.text().expect("body"), "finished\n");

    let url = server.url("/slow");
    let in_flight = std::thread::spawn(move || {
        let resp = http()
            .get(url)
            .send()
            .expect("the in-flight request gets an answer");
        (resp.status().as_u16(), resp.text().expect("body"))
    });
    std::thread::sleep(Duration::from_millis(400));
    let sent = Instant::now();
    let pid = server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );

    // New connections are refused while the request drains.
    let router_addr = server.router.trim_start_matches("http://").to_owned();
    let refused = eventually_blocking(
        Duration::from_secs(1),
        "the router to stop accepting",
        || {
            std::net::TcpStream::connect(&router_addr)
                .err()
                .map(|e| e.kind())
        },
    );
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
    assert!(
        sent.elapsed() < Duration::from_millis(900),
        "refused before the request finished"
    );

    let (status, body) = in_flight.join().expect("client thread");
    assert_eq!(
        (status, body.as_str()),
        (200, "finished\n"),
        "the request in flight completed on its instance"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        exit.code(),
        Some(0),
        "clean stop exits 0:\n{}",
        server.log()
    );
    let log = server.log();
    let drained = log.find("router drained cleanly").expect("router drained");
    let stopped = log.find("executor stopped").expect("executor stopped");
    assert!(
        drained < stopped,
        "instances are stopped only after the router drained:\n{log}"
    );
}

#[test]
fn a_server_that_cannot_start_as_configured_exits_2() {
    let first = Server::start();
    // The same data directory is locked by the running server.
    let out = std::process::Command::new(BIN)
        .args([
            "server",
            "--sandbox",
            "none",
            "--controller-listen",
            "127.0.0.1:0",
            "--router-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&first.data_dir)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Error: "));
}
