//! Bad input against the real server (2 shards, storage on in a temp dir): malformed and
//! oversized HTTP, bodies that do not decode, commands the engine refuses, unknown paths and
//! methods, bad parameters. Every refusal has the documented status and code (docs/API.md), a
//! `success:false` envelope and a message; framing errors close the connection, every other
//! error keeps it open; and none of it changes the engine state, live or after a restart.

mod server_support;

use serde_json::{json, Value};
use server_support::{start, Client, Options, Response};
use std::io::ErrorKind;
use std::time::Duration;

/// One request as raw bytes, with `body` sent exactly as given (it may be invalid JSON).
fn raw_request(method: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Checks the error envelope of `r`; returns the message.
fn check_error(r: &Response, status: u16, code: u64, what: &str) -> String {
    let v = r.json();
    assert_eq!(r.status, status, "{what}: {v}");
    assert_eq!(v["success"], false, "{what}: {v}");
    assert_eq!(v["data"], Value::Null, "{what}: {v}");
    assert_eq!(v["error"]["code"].as_u64(), Some(code), "{what}: {v}");
    let message = v["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(!message.is_empty(), "{what}: empty message in {v}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}: {:?}", r.headers);
    message
}

/// The connection must be closed by the server: EOF (or a reset), never another response and
/// never a silent wait.
fn expect_closed(c: &mut Client, what: &str) {
    c.set_read_timeout(Duration::from_secs(5));
    match c.read_response() {
        Ok(r) => panic!("{what}: expected the connection closed, got another response {r:?}"),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted),
            "{what}: expected the connection closed, got {e} ({:?}): the server kept it open",
            e.kind()
        ),
    }
}

/// The connection is still usable: a valid request on it gets its answer.
fn expect_open(c: &mut Client, what: &str) {
    c.send("GET", "/health", None).unwrap_or_else(|e| panic!("{what}: connection unusable: {e}"));
    let r = c.read_response().unwrap_or_else(|e| panic!("{what}: connection closed after the error: {e}"));
    assert_eq!(r.status, 200, "{what}: {:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"]["status"], "ok", "{what}");
}

/// `/admin/state`: asserts the invariants hold and returns the `state` part.
fn engine_state(c: &mut Client) -> Value {
    let data = c.ok("GET", "/admin/state", None);
    assert_eq!(data["invariants"], "ok", "{data}");
    data["state"].clone()
}

fn order(fields: Value) -> String {
    let mut body = json!({"account_id": "alice", "instrument_id": "cu2501", "direction": "BUY", "offset": "OPEN",
                          "limit_price": 74000, "volume": 1});
    for (k, v) in fields.as_object().expect("object") {
        if v.is_null() {
            body.as_object_mut().unwrap().remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    body.to_string()
}

/// (method, path, body, status, code) of requests the server must refuse without closing.
fn refusals(resting_order_id: u64) -> Vec<(&'static str, String, String, u16, u64)> {
    let long_account = "a".repeat(32);
    let long_order = "7".repeat(64);
    let post = |path: &str, body: String, status: u16, code: u64| ("POST", path.to_string(), body, status, code);
    let get = |path: &str, status: u16, code: u64| ("GET", path.to_string(), String::new(), status, code);
    let deposit = |body: &str| post("/api/account/deposit", body.to_string(), 400, 9005);
    vec![
        // Bodies that do not decode: 400 / 9005, decided on the connection's shard.
        deposit("{"),
        deposit(""),
        deposit("[1,2]"),
        deposit("null"),
        deposit(r#"{"account_id":"alice","amount":"x"}"#),
        deposit(r#"{"account_id":"alice","amount":1,"extra":1}"#),
        deposit(r#"{"account_id":"alice"}"#),
        deposit(r#"{"amount":5}"#),
        deposit(r#"{"account_id":"alice","amount":1e300}"#),
        deposit(&format!(r#"{{"account_id":"{}","amount":1}}"#, "b".repeat(40))),
        post("/api/account/open", "{}".into(), 400, 9005),
        post("/api/account/open", r#"{"account_id":""}"#.into(), 400, 9005),
        post("/api/account/withdraw", "{".into(), 400, 9005),
        post("/api/order/submit", order(json!({"volume": "x"})), 400, 9005),
        post("/api/order/submit", order(json!({"volume": 1.5})), 400, 9005),
        post("/api/order/submit", order(json!({"direction": "UP"})), 400, 9005),
        post("/api/order/submit", order(json!({"offset": null})), 400, 9005),
        post("/api/order/submit", order(json!({"volume": null})), 400, 9005),
        post("/api/order/submit", order(json!({"colour": "red"})), 400, 9005),
        post("/api/order/submit", order(json!({"client_order_id": "c".repeat(64)})), 400, 9005),
        post("/api/order/cancel", r#"{"account_id":"alice"}"#.into(), 400, 9005),
        post("/api/order/cancel", r#"{"account_id":"alice","order_id":"x1"}"#.into(), 400, 9005),
        post("/api/order/cancel", r#"{"account_id":"alice","order_id":-1}"#.into(), 400, 9005),
        post("/api/order/modify", r#"{"account_id":"alice","new_price":74010}"#.into(), 400, 9005),
        // Transfers the engine refuses.
        post("/api/account/deposit", r#"{"account_id":"alice","amount":0}"#.into(), 400, 1004),
        post("/api/account/deposit", r#"{"account_id":"alice","amount":-5}"#.into(), 400, 1004),
        post("/api/account/deposit", r#"{"account_id":"alice","amount":2000000000000}"#.into(), 400, 1004),
        post("/api/account/withdraw", r#"{"account_id":"alice","amount":0}"#.into(), 400, 1004),
        post("/api/account/withdraw", r#"{"account_id":"alice","amount":-1}"#.into(), 400, 1004),
        post("/api/account/withdraw", r#"{"account_id":"alice","amount":50000000}"#.into(), 400, 1005),
        post("/api/account/open", r#"{"account_id":"alice","init_cash":5}"#.into(), 400, 1002),
        post("/api/account/deposit", r#"{"account_id":"nobody","amount":5}"#.into(), 404, 1001),
        post("/api/account/withdraw", r#"{"account_id":"nobody","amount":5}"#.into(), 404, 1001),
        // Orders the engine refuses.
        post("/api/order/submit", order(json!({"account_id": "nobody"})), 404, 1001),
        post("/api/order/submit", order(json!({"instrument_id": "xx9999"})), 404, 2001),
        post("/api/order/submit", order(json!({"instrument_id": "CFFEX.cu2501"})), 404, 2001),
        post("/api/order/submit", order(json!({"limit_price": 74005})), 400, 2004),
        post("/api/order/submit", order(json!({"limit_price": 0})), 400, 2004),
        post("/api/order/submit", order(json!({"limit_price": -10})), 400, 2004),
        post("/api/order/submit", order(json!({"limit_price": 80000})), 400, 2005),
        post("/api/order/submit", order(json!({"limit_price": 69150})), 400, 2005),
        post("/api/order/submit", order(json!({"volume": 0})), 400, 2003),
        post("/api/order/submit", order(json!({"volume": -1})), 400, 2003),
        post("/api/order/submit", order(json!({"volume": 501})), 400, 2003),
        post("/api/order/submit", order(json!({"volume": 400})), 400, 2007),
        post("/api/order/submit", order(json!({"direction": "SELL", "offset": "CLOSE"})), 400, 2006),
        post("/api/order/submit", order(json!({"direction": "SELL"})), 400, 2008),
        post("/api/order/submit", order(json!({"time_condition": "GTD"})), 400, 2010),
        post("/api/order/submit", order(json!({"volume_condition": "MIN", "min_volume": 1})), 400, 2011),
        post("/api/order/submit", order(json!({"client_order_id": "rest1"})), 400, 2012),
        post(
            "/api/order/submit",
            order(json!({"price_type": "ANY", "limit_price": null, "time_condition": "GFD"})),
            400,
            2013,
        ),
        post("/api/order/submit", order(json!({"price_type": "LIMIT", "limit_price": null})), 400, 2014),
        // Cancels and modifies of orders that are not live (or not this account's).
        post("/api/order/cancel", r#"{"account_id":"alice","order_id":999999}"#.into(), 404, 3001),
        post("/api/order/cancel", r#"{"account_id":"alice","order_id":"999999"}"#.into(), 404, 3001),
        post("/api/order/cancel", r#"{"account_id":"alice","client_order_id":"nope"}"#.into(), 404, 3001),
        post("/api/order/cancel", format!(r#"{{"account_id":"bob","order_id":{resting_order_id}}}"#), 404, 3001),
        post("/api/order/cancel", r#"{"account_id":"nobody","order_id":1}"#.into(), 404, 1001),
        post("/api/order/modify", r#"{"account_id":"alice","order_id":999999,"new_price":74010}"#.into(), 404, 3001),
        post("/api/order/modify", format!(r#"{{"account_id":"alice","order_id":{resting_order_id}}}"#), 400, 3002),
        post(
            "/api/order/modify",
            format!(r#"{{"account_id":"alice","order_id":{resting_order_id},"new_price":74000}}"#),
            400,
            3002,
        ),
        post(
            "/api/order/modify",
            format!(r#"{{"account_id":"alice","order_id":{resting_order_id},"new_price":74003}}"#),
            400,
            2004,
        ),
        // Queries of things that do not exist.
        get("/api/account/nobody", 404, 1001),
        get("/api/position/nobody", 404, 1001),
        get("/api/order/user/nobody", 404, 1001),
        get("/api/trades/user/nobody", 404, 1001),
        get("/api/order/999999", 404, 3001),
        get("/api/order/abc", 404, 3001),
        get("/api/order/-1", 404, 3001),
        get("/api/market/tick/xx9999", 404, 2001),
        get("/api/market/orderbook/xx9999", 404, 2001),
        // Router: unknown paths, methods, parameters.
        get("/api/nothing", 404, 9006),
        get("/", 404, 9006),
        get("/health/", 404, 9006),
        get("/api/account", 404, 9006),
        get("/api/market/orderbook/cu2501/extra", 404, 9006),
        ("DELETE", "/health".into(), String::new(), 405, 9007),
        ("PUT", "/api/order/submit".into(), order(json!({})), 405, 9007),
        ("POST", "/admin/state".into(), String::new(), 405, 9007),
        get("/api/market/orderbook/cu2501?depth=0", 400, 9004),
        get("/api/market/orderbook/cu2501?depth=51", 400, 9004),
        get("/api/market/orderbook/cu2501?depth=abc", 400, 9004),
        get("/api/market/orderbook/cu2501?depth=", 400, 9004),
        get("/api/market/orderbook/cu2501?depth=1&depth=2", 400, 9004),
        get("/api/market/trades/cu2501?limit=1001", 400, 9004),
        get("/api/market/kline/cu2501?period=7", 400, 9004),
        get("/api/market/kline/cu2501?count=0", 400, 9004),
        get(&format!("/api/account/{long_account}"), 400, 1006),
        get(&format!("/api/order/{long_order}"), 400, 2015),
        get("/api/account/%zz", 400, 9003),
        get("/api/market/tick/%ff", 400, 9003),
    ]
}

#[test]
fn bad_input_is_refused_and_leaves_state_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::new(Some(dir.path()));
    let mut server = start(&opts);
    let mut c = server.client();
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "alice", "init_cash": 1_000_000})));
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "bob", "init_cash": 1_000_000})));
    let placed = c.ok(
        "POST",
        "/api/order/submit",
        Some(json!({"account_id": "alice", "client_order_id": "rest1", "instrument_id": "cu2501",
                    "direction": "BUY", "offset": "OPEN", "limit_price": 74000, "volume": 1})),
    );
    let resting_order_id = placed["order"]["order_id"].as_u64().expect("order id");
    let before = engine_state(&mut c);
    assert_eq!(before["live_orders"].as_array().map(Vec::len), Some(1), "{before}");

    // Errors that keep the connection: each on the same connection, followed by a valid request.
    let cases = refusals(resting_order_id);
    let mut conns = [server.client(), server.client(), server.client()];
    for (i, (method, path, body, status, code)) in cases.iter().enumerate() {
        let what = format!("{method} {path} {body}");
        let conn = &mut conns[i % 3];
        conn.send_raw(&raw_request(method, path, body)).unwrap();
        let r = conn.read_response().unwrap_or_else(|e| panic!("{what}: no response: {e}"));
        check_error(&r, *status, *code, &what);
        if *status == 405 {
            let allow = r.header("allow").unwrap_or_else(|| panic!("{what}: 405 without Allow: {:?}", r.headers));
            let expected = if path.starts_with("/api/order/") { "GET, POST" } else { "GET" };
            assert_eq!(allow, expected, "{what}");
        }
        expect_open(conn, &what);
    }

    // Framing errors: answered, then the connection is closed. Each one on a new connection
    // that first proves itself with a valid request.
    let big_header = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n", "a".repeat(17 * 1024));
    let many_headers =
        format!("GET /health HTTP/1.1\r\n{}\r\n", (0..70).map(|i| format!("X-H{i}: v\r\n")).collect::<String>());
    let framing: Vec<(&str, Vec<u8>, u16, u64)> = vec![
        ("garbage", b"\x00\x01\x02\xff garbage \x7f\r\n\r\n".to_vec(), 400, 9001),
        ("method only", b"GET\r\n\r\n".to_vec(), 400, 9001),
        ("no version", b"GET /health\r\n\r\n".to_vec(), 400, 9001),
        ("bad version token", b"GET /health HTTQ/1.1\r\n\r\n".to_vec(), 400, 9001),
        ("target not a path", b"GET health HTTP/1.1\r\n\r\n".to_vec(), 400, 9001),
        ("HTTP/2.0", b"GET /health HTTP/2.0\r\n\r\n".to_vec(), 505, 9012),
        ("header block over 16 KiB", big_header.into_bytes(), 431, 9009),
        ("70 headers", many_headers.into_bytes(), 431, 9009),
        (
            "body over 1 MiB",
            b"POST /api/account/deposit HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n".to_vec(),
            413,
            9008,
        ),
        (
            "chunked",
            b"POST /api/account/deposit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            501,
            9011,
        ),
        (
            "gzip transfer coding",
            b"GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            501,
            9011,
        ),
        (
            "content-length abc",
            b"POST /api/account/deposit HTTP/1.1\r\nContent-Length: abc\r\n\r\n".to_vec(),
            400,
            9002,
        ),
        ("content-length -1", b"POST /api/account/deposit HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(), 400, 9002),
        (
            "two content-lengths",
            b"POST /api/account/deposit HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            400,
            9002,
        ),
    ];
    for (what, bytes, status, code) in &framing {
        let mut conn = server.client();
        expect_open(&mut conn, what);
        conn.send_raw(bytes).unwrap();
        let r = conn.read_response().unwrap_or_else(|e| panic!("{what}: no response: {e}"));
        check_error(&r, *status, *code, what);
        assert_eq!(r.header("connection"), Some("close"), "{what}: {:?}", r.headers);
        expect_closed(&mut conn, what);
    }

    // A framing error in a pipeline: the request before it is answered, nothing after it.
    let mut conn = server.client();
    let mut bytes = raw_request("GET", "/health", "");
    bytes.extend_from_slice(b"BROKEN\x01 request\r\n\r\n");
    bytes.extend_from_slice(&raw_request("POST", "/api/account/deposit", r#"{"account_id":"alice","amount":1}"#));
    conn.send_raw(&bytes).unwrap();
    assert_eq!(conn.read_response().expect("first").status, 200);
    check_error(&conn.read_response().expect("second"), 400, 9001, "pipelined garbage");
    expect_closed(&mut conn, "pipelined garbage");

    // Half a request, then the client goes away: the server just drops it.
    let mut conn = server.client();
    conn.send_raw(b"POST /api/account/deposit HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"account_id\":\"alice\"")
        .unwrap();
    drop(conn);

    // An error in the middle of a keep-alive pipeline does not disturb the others.
    let mut conn = server.client();
    let mut bytes = raw_request("GET", "/api/account/alice", "");
    bytes.extend(raw_request("POST", "/api/account/deposit", "{"));
    bytes.extend(raw_request("GET", "/api/market/orderbook/cu2501?depth=3", ""));
    conn.send_raw(&bytes).unwrap();
    let first = conn.read_response().expect("first");
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["data"]["account_id"], "alice");
    check_error(&conn.read_response().expect("second"), 400, 9005, "pipelined bad JSON");
    let third = conn.read_response().expect("third");
    assert_eq!(third.status, 200);
    assert_eq!(third.json()["data"]["bids"][0]["volume"], 1, "{:?}", third.json());
    expect_open(&mut conn, "after the pipeline");

    // The server is fine and nothing changed.
    let mut fresh = server.client();
    let health = fresh.ok("GET", "/health", None);
    assert_eq!(health["status"], "ok");
    let after = engine_state(&mut fresh);
    assert_eq!(after, before, "bad requests changed the engine state");
    for conn in &mut conns {
        expect_open(conn, "at the end");
    }

    // Nothing refused reached the WAL: a restart rebuilds the same state.
    drop(conns);
    drop(fresh);
    drop(c);
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", server.stderr());
    let restarted = start(&opts);
    assert_eq!(restarted.ready_field("torn_tail").as_deref(), Some("none"), "{}", restarted.ready_line);
    let mut c = restarted.client();
    assert_eq!(engine_state(&mut c), before, "state after restart");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&Options::new(Some(dir.path())));
    let mut c = server.client();
    let mut bytes = raw_request("POST", "/api/account/open", r#"{"account_id":"carol","init_cash":1000}"#);
    bytes.extend(raw_request("POST", "/api/account/deposit", r#"{"account_id":"carol","amount":234.5}"#));
    bytes.extend(raw_request("GET", "/api/account/carol", ""));
    c.send_raw(&bytes).unwrap();
    let opened = c.read_response().expect("open");
    assert_eq!(opened.status, 200, "{:?}", opened.json());
    assert_eq!(opened.json()["data"]["balance"], 1000.0);
    let deposited = c.read_response().expect("deposit");
    assert_eq!(deposited.status, 200, "{:?}", deposited.json());
    assert_eq!(deposited.json()["data"]["balance"], 1234.5);
    let account = c.read_response().expect("get");
    assert_eq!(account.status, 200);
    assert_eq!(account.json()["data"]["deposit"], 1234.5);
    assert_eq!(account.json()["data"]["balance"], 1234.5);

    // Many small requests in one write, answered in order on one connection.
    let mut bytes = Vec::new();
    for i in 1..=50 {
        bytes.extend(raw_request("POST", "/api/account/deposit", &format!(r#"{{"account_id":"carol","amount":{i}}}"#)));
    }
    c.send_raw(&bytes).unwrap();
    let mut expected = 1234.5;
    for i in 1..=50 {
        expected += f64::from(i);
        let r = c.read_response().unwrap_or_else(|e| panic!("response {i}: {e}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["data"]["balance"], expected, "response {i} out of order");
    }
    // And a request split across writes is put back together.
    let whole = raw_request("POST", "/api/account/deposit", r#"{"account_id":"carol","amount":0.5}"#);
    let (head, tail) = whole.split_at(whole.len() - 7);
    c.send_raw(head).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.send_raw(tail).unwrap();
    let r = c.read_response().expect("split request");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["balance"], expected + 0.5);
}
