//! End-to-end: websocket functions through the real router and a real Node instance.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::*;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Sends its instance's token on connect and broadcasts every message to all open sockets.
const CHAT_JS: &str = "const token = require('crypto').randomUUID();\n\
module.exports = function (ws, clients) {\n\
  ws.send('instance ' + token);\n\
  ws.on('message', (m) => { for (const c of clients) c.send('broadcast: ' + m); });\n\
};\n";

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

fn connect(url: &str) -> Socket {
    let (ws, resp) = wait_for(10, "websocket route", || tungstenite::connect(url).ok());
    assert_eq!(resp.status().as_u16(), 101, "switching protocols");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
    }
    ws
}

fn next_text(ws: &mut Socket) -> String {
    loop {
        match ws.read().expect("read a websocket message") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected websocket message {other:?}"),
        }
    }
}

#[track_caller]
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn chat_server() -> Option<(Server, tempfile::TempDir)> {
    require_functions()?;
    let server = Server::start();
    server
        .fission(&[
            "env",
            "create",
            "--name",
            "nodejs",
            "--image",
            "fission/node-env",
        ])
        .ok();
    let dir = tempfile::tempdir().expect("tempdir");
    let code = write(dir.path(), "chat.js", CHAT_JS);
    // Two sockets per instance so both clients share one; a 1 s idle timeout that the
    // open sockets must outlive.
    server
        .fission(&[
            "fn",
            "create",
            "--name",
            "chat",
            "--env",
            "nodejs",
            "--code",
            code.to_str().expect("path"),
            "--idletimeout",
            "1",
            "--rpp",
            "2",
        ])
        .ok();
    server
        .fission(&["route", "create", "--url", "/chat", "--function", "chat"])
        .ok();
    Some((server, dir))
}

// idletimeout 1 s plus the executor's 5 s reaper period, with margin.
const PAST_IDLE: Duration = Duration::from_secs(8);

#[test]
fn websocket_broadcast_reaches_both_clients_and_the_instance_outlives_idletimeout_while_connected()
{
    let Some((server, _dir)) = chat_server() else {
        return;
    };
    let url = server.url("/chat").replacen("http://", "ws://", 1);

    let mut a = connect(&url);
    let token = next_text(&mut a);
    assert!(token.starts_with("instance "), "{token}");
    let mut b = connect(&url);
    assert_eq!(next_text(&mut b), token, "both clients on one instance");

    a.send(Message::text("hello from a")).expect("send");
    assert_eq!(next_text(&mut a), "broadcast: hello from a");
    assert_eq!(next_text(&mut b), "broadcast: hello from a");

    // Connected, the instance is busy: it is not reaped past its idle timeout.
    std::thread::sleep(PAST_IDLE);
    b.send(Message::text("still here")).expect("send");
    assert_eq!(next_text(&mut a), "broadcast: still here");
    assert_eq!(next_text(&mut b), "broadcast: still here");

    a.close(None).expect("close a");
    b.close(None).expect("close b");
    // Drain until the closes complete, so the router sees both connections end.
    for ws in [&mut a, &mut b] {
        while ws.read().is_ok() {}
    }

    // With the last socket closed the instance goes idle and is reaped: a new
    // connection is served by a new instance.
    std::thread::sleep(PAST_IDLE);
    let mut c = connect(&url);
    let again = next_text(&mut c);
    assert!(again.starts_with("instance "), "{again}");
    assert_ne!(
        again,
        token,
        "the idle instance was reaped after its sockets closed\n{}",
        server.log()
    );
}
