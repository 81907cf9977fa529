//! WebSocket logins with a user's bearer token, against the real server with auth on: a DIFF
//! `req_login` and a legacy `auth` take the token of `POST /api/auth/login` in place of the
//! account's password when the token's user owns the account (or is an admin); another
//! user's token, a forged one and a wrong password log in nobody, and the account's password
//! still works. A `req_transfer` after a token login still needs the account's password.

mod server_support;

use serde_json::{json, Value};
use server_support::diff::{self, Ws};
use server_support::{login_client, start, Options, ServerProcess};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::Message;

const ADMIN_PASSWORD: &str = "admin-Pa55-token-ws";

fn start_server(dir: &std::path::Path) -> ServerProcess {
    let config = dir.join("exchange.toml");
    std::fs::write(&config, format!("[auth]\nadmin_password = \"{ADMIN_PASSWORD}\"\n")).unwrap();
    let mut opts = Options::new(Some(&dir.join("data")));
    opts.auth = true;
    opts.config = Some(config);
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    start(&opts)
}

/// The DIFF login's notifies: (level, code).
fn diff_login(server: &ServerProcess, account: &str, secret: &str) -> (Ws, Vec<(String, i64)>, Value) {
    let mut ws = diff::connect(server);
    assert_eq!(diff::recv(&mut ws)["aid"], "rtn_brokers");
    let tree = diff::login(&mut ws, account, secret);
    let notes = diff::notifies(&tree).into_iter().map(|(level, code, _)| (level, code)).collect();
    (ws, notes, tree)
}

fn legacy_auth(server: &ServerProcess, account: &str, token: &str) -> Value {
    let addr = server.ready_field("ws").expect("ready line names ws=");
    let stream = TcpStream::connect(&addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/ws/legacy"), stream).expect("handshake");
    ws.send(Message::text(json!({"type": "auth", "user_id": account, "token": token}).to_string())).unwrap();
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "auth_response" {
                    return v;
                }
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn websocket_logins_take_the_owners_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let mut anon = server.client();
    for user in ["alice", "bob"] {
        anon.ok("POST", "/api/auth/register", Some(json!({"username": user, "password": format!("{user}-pw-123")})));
    }
    let mut alice = login_client(&server, "alice", "alice-pw-123");
    let bob = login_client(&server, "bob", "bob-pw-123");
    let admin = login_client(&server, "admin", ADMIN_PASSWORD);
    let account = alice.ok(
        "POST",
        "/api/user/alice/account/create",
        Some(json!({"account_id": "al-ws", "init_cash": 1e6, "password": "acct-pw-1"})),
    );
    assert_eq!(account["account_id"], "al-ws", "{account}");
    let (alice_token, bob_token, admin_token) =
        (alice.token.clone().unwrap(), bob.token.clone().unwrap(), admin.token.clone().unwrap());

    // DIFF: the owner's token and an admin's log in; the account's tree comes with it.
    for token in [&alice_token, &admin_token] {
        let (_ws, notes, tree) = diff_login(&server, "al-ws", token);
        assert!(notes.contains(&("INFO".to_string(), 0)), "{notes:?}");
        assert!(tree["trade"]["al-ws"]["accounts"]["CNY"].is_object(), "{tree}");
    }
    // Another user's token, a forged one and a wrong password: the same refusal, no tree.
    let forged = format!("{}x", &alice_token[..alice_token.len() - 1]);
    for secret in [bob_token.as_str(), forged.as_str(), "qax1.junk", "wrong-pw"] {
        let (_ws, notes, tree) = diff_login(&server, "al-ws", secret);
        assert_eq!(notes, [("ERROR".to_string(), 9106)], "{secret}");
        assert!(tree.get("trade").is_none(), "{tree}");
    }
    // The account's password works as before.
    let (_ws, notes, _) = diff_login(&server, "al-ws", "acct-pw-1");
    assert!(notes.contains(&("INFO".to_string(), 0)), "{notes:?}");

    // A token login may trade, but a transfer still needs the account's password.
    let (mut ws, _, _) = diff_login(&server, "al-ws", &alice_token);
    let transfer = |ws: &mut Ws, password: &str| {
        diff::send(
            ws,
            json!({"aid": "req_transfer", "future_account": "al-ws", "future_password": password,
                   "bank_id": "b", "bank_password": "", "currency": "CNY", "amount": 10.0}),
        );
        let mut tree = json!({});
        let notes = diff::peek_until(ws, &mut tree, |t| !diff::notifies(t).is_empty());
        notes.iter().flat_map(diff::notifies).map(|(_, code, _)| code).collect::<Vec<_>>()
    };
    assert_eq!(transfer(&mut ws, &alice_token), [9106]);
    assert_eq!(transfer(&mut ws, "acct-pw-1"), [0]);

    // Legacy: the same rule.
    for (token, ok) in [(&alice_token, true), (&admin_token, true), (&bob_token, false), (&forged, false)] {
        let answer = legacy_auth(&server, "al-ws", token);
        assert_eq!(answer["success"], ok, "{answer}");
    }
    assert_eq!(legacy_auth(&server, "al-ws", "acct-pw-1")["success"], true);
}
