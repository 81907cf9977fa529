//! A plain blocking WebSocket client of the server's DIFF endpoint, for tests.

use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::{Message, WebSocket};

pub type Ws = WebSocket<TcpStream>;

pub fn connect(server: &super::ServerProcess) -> Ws {
    let addr = server.ready_field("ws").expect("ready line names ws=");
    let stream = TcpStream::connect(&addr).expect("connect");
    // A request sent right after another (subscribe, then peek) would otherwise wait for the
    // server's delayed ACK of the first (Nagle): ~40 ms per session.
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}/any/path?access_token=x"), stream).expect("handshake");
    ws
}

pub fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).expect("send");
}

pub fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).expect("send");
}

/// The next text message as JSON.
pub fn recv(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Peeks and returns the one rtn_data's patches merged in order (a transaction).
pub fn peek(ws: &mut Ws) -> Value {
    send(ws, json!({"aid": "peek_message"}));
    let m = recv(ws);
    assert_eq!(m["aid"], "rtn_data", "{m}");
    let mut tree = json!({});
    for patch in m["data"].as_array().expect("data is an array") {
        qaexchange::diff::merge_patch::apply(&mut tree, patch);
    }
    tree
}

/// The notifies in a patch, as (level, code, content).
pub fn notifies(tree: &Value) -> Vec<(String, i64, String)> {
    tree["notify"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|n| {
                    (
                        n["level"].as_str().unwrap_or("").to_owned(),
                        n["code"].as_i64().unwrap_or(0),
                        n["content"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `req_login` and returns the tree of the rtn_data that answers it.
pub fn login(ws: &mut Ws, user: &str, password: &str) -> Value {
    send(ws, json!({"aid": "req_login", "bid": "local", "user_name": user, "password": password}));
    peek(ws)
}

/// Peeks until `done(tree)` holds (at most 10 s), merging every rtn_data into `tree`; returns
/// each rtn_data's patches merged on their own, in the order they came.
pub fn peek_until(ws: &mut Ws, tree: &mut Value, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut messages = Vec::new();
    while !done(tree) {
        assert!(std::time::Instant::now() < deadline, "condition not reached in 10 s; tree: {tree}");
        let patch = peek(ws);
        qaexchange::diff::merge_patch::apply(tree, &patch);
        messages.push(patch);
    }
    messages
}
