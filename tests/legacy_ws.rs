//! The original QAExchange's legacy JSON WebSocket API on `/ws/legacy`, against the real server
//! (2 shards; account A and SR501 live on shard 0, account B and cu2501 on shard 1, sessions
//! land on either), with a plain blocking WebSocket client: ping, bad input answered with an
//! `error` and the connection still usable, trading refused before `auth`, wrong tokens
//! refused, the state sent on `auth`, quotes, an order that crosses another account's resting
//! order (answer, order status, trade and account equal to the REST view, on both sides), a
//! cancel, a refusal with the risk code, `query_account`, a slow reader cut off, and the DIFF
//! protocol still served on every other path of the same port.

mod server_support;

use serde_json::{json, Value};
use server_support::diff::{send, send_text, Ws};
use server_support::{start, Options, ServerProcess};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::Message;

fn options(dir: &std::path::Path) -> Options {
    let mut opts = Options::new(Some(dir));
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    opts
}

/// A WebSocket connection to `path` (with its query) on the server's WebSocket port.
fn connect_path(server: &ServerProcess, path: &str) -> Ws {
    let addr = server.ready_field("ws").expect("ready line names ws=");
    let stream = TcpStream::connect(&addr).expect("connect");
    stream.set_nodelay(true).unwrap(); // see server_support::diff::connect
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}{path}"), stream).expect("handshake");
    ws
}

fn legacy(server: &ServerProcess) -> Ws {
    connect_path(server, "/ws/legacy")
}

/// The next message, or None if none comes within `wait`.
fn try_recv(ws: &mut Ws, wait: Duration) -> Option<Value> {
    ws.get_ref().set_read_timeout(Some(wait)).unwrap();
    let got = loop {
        match ws.read() {
            Ok(Message::Text(t)) => break Some(serde_json::from_str(t.as_str()).expect("JSON")),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                break None
            }
            Err(e) => panic!("read: {e}"),
        }
    };
    ws.get_ref().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    got
}

fn recv(ws: &mut Ws) -> Value {
    try_recv(ws, Duration::from_secs(10)).expect("a message within 10 s")
}

/// Messages until one satisfies `done` (at most 10 s): all of them, that one last.
fn until(ws: &mut Ws, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = try_recv(ws, left.max(Duration::from_millis(1)))
            .unwrap_or_else(|| panic!("condition not reached in 10 s; got {got:#?}"));
        let stop = done(&m);
        got.push(m);
        if stop {
            return got;
        }
    }
}

/// Every message that comes until none has for `quiet`.
fn drain(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    std::iter::from_fn(|| try_recv(ws, quiet)).collect()
}

/// Messages until one of type `then` came after one of type `first`.
fn until_after(ws: &mut Ws, first: &str, then: &str) -> Vec<Value> {
    let mut seen = false;
    until(ws, |m| {
        let done = seen && m["type"] == then;
        seen |= m["type"] == first;
        done
    })
}

/// The last `account_update` among `messages`.
fn last_account(messages: &[Value]) -> Value {
    body(of_type(messages, "account_update").last().expect("an account_update"))
}

/// The next answer to a request, skipping what is pushed (quotes, orders, trades and the
/// account come whenever they change).
fn next_reply(ws: &mut Ws) -> Value {
    let pushed = ["quote", "order_status", "trade", "account_update"];
    until(ws, |m| !pushed.iter().any(|p| m["type"] == *p)).pop().unwrap()
}

fn of_type<'a>(messages: &'a [Value], kind: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["type"] == kind).collect()
}

/// A message without its `type`: what it shares with the REST object it mirrors.
fn body(message: &Value) -> Value {
    let mut m = message.clone();
    m.as_object_mut().unwrap().remove("type");
    m
}

fn error_code(ws: &mut Ws) -> i64 {
    let m = next_reply(ws);
    assert_eq!(m["type"], "error", "{m}");
    assert!(m["message"].as_str().is_some_and(|t| !t.is_empty()), "{m}");
    m["code"].as_i64().expect("numeric code")
}

fn ping(ws: &mut Ws) {
    send(ws, json!({"type": "ping"}));
    assert_eq!(next_reply(ws), json!({"type": "pong"}));
}

fn buy(client_order_id: &str, price: f64, volume: i64) -> Value {
    json!({"type": "submit_order", "instrument_id": "SHFE.cu2501", "direction": "BUY", "offset": "OPEN",
           "volume": volume, "price": price, "order_type": "LIMIT", "client_order_id": client_order_id})
}

/// The order fields `order_status` shares with the REST order, which must agree.
const ORDER_FIELDS: [&str; 15] = [
    "order_id",
    "client_order_id",
    "account_id",
    "exchange_id",
    "instrument_id",
    "direction",
    "offset",
    "price_type",
    "limit_price",
    "volume_orign",
    "volume_left",
    "time_condition",
    "volume_condition",
    "status",
    "insert_time_ns",
];

fn assert_order_matches_rest(status: &Value, rest: &Value) {
    for field in ORDER_FIELDS {
        assert_eq!(status[field], rest[field], "{field}: {status} vs REST {rest}");
    }
}

#[test]
fn auth_quotes_orders_fills_cancels_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&options(dir.path()));
    let mut c = server.client();
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 1_000_000, "password": "pa"})));
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "B", "init_cash": 1_000_000, "password": "pb"})));
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "C", "init_cash": 1_000})));

    // Nothing is sent unprompted; ping answers pong.
    let mut ws = legacy(&server);
    assert_eq!(try_recv(&mut ws, Duration::from_millis(300)), None);
    ping(&mut ws);

    // Bad input: an `error` with a stable code, and the connection stays usable.
    send_text(&mut ws, "not json");
    assert_eq!(error_code(&mut ws), 9101);
    send_text(&mut ws, "[1,2]");
    assert_eq!(error_code(&mut ws), 9101);
    send(&mut ws, json!({"user_id": "A"}));
    assert_eq!(error_code(&mut ws), 9101);
    send(&mut ws, json!({"type": "fly"}));
    assert_eq!(error_code(&mut ws), 9102);
    send(&mut ws, json!({"type": "auth", "user_id": "A"}));
    assert_eq!(error_code(&mut ws), 9101, "a missing field");
    send(&mut ws, json!({"type": "auth", "user_id": "A", "token": "pa", "extra": 1}));
    assert_eq!(error_code(&mut ws), 9101, "an unknown field");
    ws.send(Message::binary(vec![0xff, 0xfe])).unwrap();
    assert_eq!(error_code(&mut ws), 9101, "a binary frame that is not UTF-8");
    ping(&mut ws);

    // Trading and queries before auth are refused.
    send(&mut ws, buy("o0", 70100.0, 1));
    assert_eq!(error_code(&mut ws), 9107);
    send(&mut ws, json!({"type": "cancel_order", "order_id": 1}));
    assert_eq!(error_code(&mut ws), 9107);
    send(&mut ws, json!({"type": "query_account"}));
    assert_eq!(error_code(&mut ws), 9107);

    // A wrong token, an account without a password, an unknown user, an empty token: refused.
    for (user, token) in [("A", "wrong"), ("C", "x"), ("nobody", "pa"), ("A", ""), (&*"x".repeat(40), "pa")] {
        send(&mut ws, json!({"type": "auth", "user_id": user, "token": token}));
        let m = next_reply(&mut ws);
        assert_eq!((m["type"].as_str(), m["success"].as_bool()), (Some("auth_response"), Some(false)), "{m}");
        assert_eq!(m["user_id"], user);
        assert!(m["message"].as_str().is_some_and(|t| t.contains("failed")), "{m}");
    }
    assert_eq!(try_recv(&mut ws, Duration::from_millis(200)), None, "no account data after a failed auth");

    // Auth: the answer, then the account as REST has it.
    send(&mut ws, json!({"type": "auth", "user_id": "A", "token": "pa"}));
    let m = recv(&mut ws);
    assert_eq!(m, json!({"type": "auth_response", "success": true, "user_id": "A", "message": "authenticated as A"}));
    let account = recv(&mut ws);
    assert_eq!(account["type"], "account_update", "{account}");
    assert_eq!(body(&account), c.ok("GET", "/api/account/A", None), "the account fields are the REST account's");
    send(&mut ws, json!({"type": "auth", "user_id": "A", "token": "pa"}));
    let again = next_reply(&mut ws);
    assert_eq!(again["success"], false, "a second auth is refused: {again}");

    // B rests a SELL on cu2501 (shard 1), and follows it over its own legacy session.
    let sell = json!({"account_id": "B", "client_order_id": "b1", "instrument_id": "cu2501", "direction": "SELL",
                      "offset": "OPEN", "limit_price": 70100.0, "volume": 2});
    let resting = c.ok("POST", "/api/order/submit", Some(sell))["order"].clone();
    let mut wb = legacy(&server);
    send(&mut wb, json!({"type": "auth", "user_id": "B", "token": "pb"}));
    assert_eq!(recv(&mut wb)["success"], true);
    assert_eq!(recv(&mut wb)["type"], "account_update");
    // ...with its live orders.
    let live = recv(&mut wb);
    assert_eq!(live["type"], "order_status", "{live}");
    assert_order_matches_rest(&live, &resting);

    // Quotes: a subscribe answers which instruments are followed, then each one's quote.
    send(&mut ws, json!({"type": "subscribe", "channels": ["ticker"], "instruments": ["SHFE.cu2501", "DCE.nope"]}));
    let answer = recv(&mut ws);
    assert_eq!(answer["type"], "subscribe_response", "{answer}");
    assert_eq!(answer["success"], false, "one instrument is unknown: {answer}");
    assert_eq!(answer["channels"], json!(["ticker"]));
    assert_eq!(answer["instruments"], json!(["SHFE.cu2501"]));
    assert!(answer["message"].as_str().unwrap().contains("DCE.nope"), "{answer}");
    let quote = recv(&mut ws);
    assert_eq!(quote["type"], "quote", "{quote}");
    assert_eq!(quote["instrument_id"], "SHFE.cu2501");
    assert!(quote["datetime"].as_str().is_some_and(|d| d.len() == 26), "{quote}");
    assert_eq!(quote["ask_price1"], 70100.0, "B's resting SELL: {quote}");
    assert_eq!(quote["ask_volume1"], 2);
    assert_eq!(quote["bid_price1"], Value::Null, "no value is null: {quote}");
    assert_eq!(quote["settlement"], Value::Null);
    let tick = c.ok("GET", "/api/market/tick/cu2501", None);
    for field in ["last_price", "volume", "pre_settlement", "upper_limit", "lower_limit", "open_interest"] {
        assert_eq!(quote[field], tick[field], "{field}: {quote} vs {tick}");
    }
    send(&mut ws, json!({"type": "subscribe", "instruments": ["cu2501"]}));
    let answer = recv(&mut ws);
    assert_eq!((answer["success"].as_bool(), answer["channels"].clone()), (Some(true), json!([])), "{answer}");
    assert_eq!(answer["instruments"], json!(["SHFE.cu2501"]), "bare ids name the same instrument");
    assert_eq!(recv(&mut ws)["type"], "quote");

    // A buys 1 and fills against B: the answer first, then the order, the trade and the account.
    send(&mut ws, buy("o1", 70100.0, 1));
    let mut all = until_after(&mut ws, "trade", "account_update");
    let mut got: Vec<Value> = all.iter().filter(|m| m["type"] != "quote").cloned().collect();
    let kinds: Vec<&str> = got.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"order_response"), "{got:#?}");
    assert_eq!(kinds[kinds.len() - 3..], ["order_status", "trade", "account_update"], "one fill: {got:#?}");
    let response = got[0].clone();
    assert_eq!(response["success"], true, "{response}");
    assert_eq!(response["client_order_id"], "o1");
    let order_id = response["order_id"].as_u64().expect("the exchange's order id");
    let status = (*of_type(&got, "order_status").last().unwrap()).clone();
    assert_eq!(status["status"], "FINISHED", "{got:#?}");
    let trades: Vec<Value> = of_type(&got, "trade").into_iter().cloned().collect();
    assert_eq!(trades.len(), 1, "{got:#?}");
    // Quotes moved by the fill (and the account, as the mark moves) may still come; then
    // everything equals the REST view.
    let late = drain(&mut ws, Duration::from_millis(300));
    assert!(late.iter().all(|m| m["type"] == "quote" || m["type"] == "account_update"), "{late:#?}");
    got.extend(late.iter().cloned());
    all.extend(late);
    let quotes = of_type(&all, "quote");
    assert!(quotes.iter().any(|m| m["last_price"] == 70100.0), "the trade shows in the quote: {quotes:#?}");
    assert_order_matches_rest(&status, &c.ok("GET", &format!("/api/order/{order_id}"), None));
    assert_eq!(status["volume_left"], 0);
    assert_eq!(status["status_msg"], "filled");
    let rest_trades = c.ok("GET", "/api/trades/user/A", None);
    assert_eq!(body(&trades[0]), rest_trades[0], "the trade fields are the REST trade's");
    let rest_account = c.ok("GET", "/api/account/A", None);
    assert_eq!(last_account(&got), rest_account);
    assert_eq!(rest_account["commission"], 2.0);

    // B's session saw its side: the order partly filled, its trade, its account.
    let mut seen = until_after(&mut wb, "trade", "account_update");
    let b_status = (*of_type(&seen, "order_status").last().expect("B's order status")).clone();
    assert_eq!((b_status["status"].as_str(), b_status["volume_left"].as_i64()), (Some("ALIVE"), Some(1)));
    assert_eq!(b_status["status_msg"], "partly filled");
    assert_order_matches_rest(&b_status, &c.ok("GET", &format!("/api/order/{}", resting["order_id"]), None));
    let b_trade = (*of_type(&seen, "trade")[0]).clone();
    assert_eq!(body(&b_trade), c.ok("GET", "/api/trades/user/B", None)[0]);
    assert_eq!(b_trade["direction"], "SELL");
    seen.extend(drain(&mut wb, Duration::from_millis(300)));
    assert_eq!(last_account(&seen), c.ok("GET", "/api/account/B", None));

    // A resting order, then its cancel by the exchange's id (as a string, like the original).
    send(&mut ws, buy("o2", 69000.0, 1));
    let got = until_after(&mut ws, "order_status", "account_update");
    let response = &of_type(&got, "order_response")[0];
    assert_eq!(response["success"], true, "{response}");
    assert_eq!(response["status"], "ALIVE");
    let o2 = response["order_id"].as_u64().unwrap();
    let alive = of_type(&got, "order_status");
    assert_eq!(alive.last().unwrap()["status"], "ALIVE", "{got:#?}");
    assert!(got.last().unwrap()["frozen_margin"].as_f64().unwrap() > 0.0, "the order holds margin");
    send(&mut ws, json!({"type": "cancel_order", "order_id": o2.to_string()}));
    let got = until_after(&mut ws, "order_status", "account_update");
    let response = &of_type(&got, "order_response")[0];
    assert_eq!((response["success"].as_bool(), response["order_id"].as_u64()), (Some(true), Some(o2)), "{response}");
    let cancelled = *of_type(&got, "order_status").last().unwrap();
    assert_eq!(cancelled["status"], "FINISHED");
    assert!(cancelled["status_msg"].as_str().unwrap().contains("cancel"), "{cancelled}");
    assert_order_matches_rest(cancelled, &c.ok("GET", &format!("/api/order/{o2}"), None));
    assert_eq!(got.last().unwrap()["frozen_margin"], 0.0);
    // Cancelling it again, or an order that is not a number: refused.
    send(&mut ws, json!({"type": "cancel_order", "order_id": o2}));
    let again = next_reply(&mut ws);
    assert_eq!((again["type"].as_str(), again["success"].as_bool()), (Some("order_response"), Some(false)));
    assert!(again["error_code"].as_u64().is_some_and(|c| (3000..4000).contains(&c)), "{again}");
    assert!(again["error_message"].as_str().is_some_and(|t| !t.is_empty()), "{again}");
    send(&mut ws, json!({"type": "cancel_order", "order_id": "abc"}));
    assert_eq!(error_code(&mut ws), 9101);
    send(&mut ws, json!({"type": "cancel_order"}));
    assert_eq!(error_code(&mut ws), 9101);

    // A refused order: order_response with the risk code REST gives, and no order_status.
    let too_big = json!({"account_id": "A", "instrument_id": "cu2501", "direction": "BUY", "offset": "OPEN",
                         "limit_price": 70100.0, "volume": 1000});
    let rest_code = c.refused("POST", "/api/order/submit", Some(too_big), 400);
    send(&mut ws, buy("o3", 70100.0, 1000));
    let refused = next_reply(&mut ws);
    assert_eq!(refused["type"], "order_response");
    assert_eq!(refused["success"], false, "{refused}");
    assert_eq!(refused["error_code"], rest_code);
    assert_eq!(refused["client_order_id"], "o3");
    assert_eq!(refused["order_id"], Value::Null);
    let after = drain(&mut ws, Duration::from_millis(300));
    assert!(of_type(&after, "order_status").is_empty(), "{after:#?}");
    // Orders for another account, and bad order fields.
    let mut other = buy("o4", 70100.0, 1);
    other["account_id"] = json!("B");
    send(&mut ws, other);
    assert_eq!(error_code(&mut ws), 9108);
    let mut lower = buy("o5", 70100.0, 1);
    lower["direction"] = json!("buy");
    send(&mut ws, lower);
    assert_eq!(error_code(&mut ws), 9101);

    // An order without a client id gets one; a market order without a price is IOC.
    send(
        &mut ws,
        json!({"type": "submit_order", "instrument_id": "cu2501", "direction": "BUY", "offset": "OPEN",
                         "volume": 1, "order_type": "MARKET"}),
    );
    let response = next_reply(&mut ws);
    assert_eq!(response["success"], true, "{response}");
    assert!(response["client_order_id"].as_str().is_some_and(|id| id.starts_with("auto-")), "{response}");
    let market = c.ok("GET", &format!("/api/order/{}", response["order_id"]), None);
    assert_eq!((market["price_type"].as_str(), market["time_condition"].as_str()), (Some("ANY"), Some("IOC")));
    drain(&mut ws, Duration::from_millis(300));

    // query_account: the REST account.
    drain(&mut ws, Duration::from_millis(200));
    send(&mut ws, json!({"type": "query_account"}));
    let account = recv(&mut ws);
    assert_eq!(account["type"], "account_update");
    assert_eq!(body(&account), c.ok("GET", "/api/account/A", None));

    // Unsubscribing stops the quotes.
    send(&mut ws, json!({"type": "unsubscribe", "instruments": ["SHFE.cu2501"]}));
    let answer = next_reply(&mut ws);
    assert_eq!((answer["type"].as_str(), answer["instruments"].clone()), (Some("subscribe_response"), json!([])));
    drain(&mut ws, Duration::from_millis(200));
    let sell = json!({"account_id": "B", "instrument_id": "cu2501", "direction": "SELL", "offset": "OPEN",
                      "limit_price": 71000.0, "volume": 1});
    c.ok("POST", "/api/order/submit", Some(sell));
    assert!(of_type(&drain(&mut ws, Duration::from_millis(300)), "quote").is_empty());
    ping(&mut ws);
}

/// The path decides the protocol: `/ws/legacy` with any query string is legacy, every other
/// path (including ones that start like it) is DIFF, on the same port.
#[test]
fn the_path_chooses_legacy_or_diff() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&options(dir.path()));
    for path in ["/ws/legacy?token=x&v=1", "/ws/legacy"] {
        let mut ws = connect_path(&server, path);
        ping(&mut ws);
    }
    for path in ["/", "/any/path?access_token=x", "/ws/legacy/", "/ws/legacyx", "/ws"] {
        let mut ws = connect_path(&server, path);
        assert_eq!(recv(&mut ws)["aid"], "rtn_brokers", "{path} is DIFF");
        send(&mut ws, json!({"type": "ping"}));
        send(&mut ws, json!({"aid": "peek_message"}));
        let m = recv(&mut ws);
        assert_eq!(m["aid"], "rtn_data", "{path}: {m}");
        let patches = m["data"].as_array().expect("data");
        let notify =
            patches.iter().find_map(|p| p["notify"].as_object()).expect("a notify").values().next().unwrap().clone();
        assert_eq!(notify["code"], 9101, "DIFF reads a legacy message as malformed: {notify}");
    }
}

/// A legacy client that stops reading is cut off once a write waits past the send timeout;
/// another session is served meanwhile.
#[test]
fn a_slow_reader_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[websocket]\nmax_pending_kib = 256\nsend_timeout_ms = 500\n";
    let server = server_support::start_with_config(options(&dir.path().join("data")), dir.path(), toml);
    let mut c = server.client();

    // Each subscribe to 1,500 unknown instruments is answered with a message naming them all.
    let unknown: Vec<String> = (0..1500).map(|i| format!("DCE.x{i:05}")).collect();
    let flood = json!({"type": "subscribe", "instruments": unknown}).to_string();
    let addr = server.ready_field("ws").unwrap();
    let stream = TcpStream::connect(&addr).unwrap();
    stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let (mut deaf, _) = tungstenite::client(format!("ws://{addr}/ws/legacy"), stream).unwrap();
    let mut sent = 0;
    for _ in 0..2000 {
        if deaf.send(Message::text(flood.clone())).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent > 0);
    let mut healthy = legacy(&server);
    ping(&mut healthy);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (dropped, text) = server_support::metric_sum(&mut c, "qaexchange_ws_slow_disconnects_total");
        if dropped >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no slow disconnect counted:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    ping(&mut healthy);
}
