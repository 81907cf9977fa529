//! The DIFF WebSocket against the real server (2 shards), with a plain WebSocket client:
//! the greeting, peek flow control (one rtn_data per peek, nothing without one), subscribe_quote
//! with quotes from both shards' instruments, notifies for bad and not-yet-served messages
//! (the connection stays usable), and a clean shutdown with sessions open.

mod server_support;

use serde_json::json;
use server_support::diff::{connect, notifies, peek, recv, send, send_text, Ws};
use server_support::{start, start_with_config, Options};
use std::time::Duration;
use tungstenite::Message;

fn options(dir: &std::path::Path) -> Options {
    let mut opts = Options::new(Some(dir));
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    opts
}

#[test]
fn greeting_peek_flow_and_quotes_from_both_shards() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&options(dir.path()));
    // A trade on each instrument, so the quotes have a last price.
    let mut c = server.client();
    for a in ["A", "B"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": a, "init_cash": 10_000_000})));
    }
    for (inst, price) in [("SR501", 5010.0), ("cu2501", 70100.0)] {
        let order = |a: &str, d: &str| {
            json!({"account_id": a, "instrument_id": inst, "direction": d, "offset": "OPEN",
                   "limit_price": price, "volume": 2})
        };
        c.ok("POST", "/api/order/submit", Some(order("A", "BUY")));
        c.ok("POST", "/api/order/submit", Some(order("B", "SELL")));
    }

    let mut ws = connect(&server);
    let hello = recv(&mut ws);
    assert_eq!(hello, json!({"aid": "rtn_brokers", "brokers": ["local"]}));

    send(&mut ws, json!({"aid": "subscribe_quote", "ins_list": "CZCE.SR501,SHFE.cu2501,DCE.nope"}));
    let tree = peek(&mut ws);
    assert_eq!(tree["ins_list"], "CZCE.SR501,SHFE.cu2501,DCE.nope");
    assert_eq!(tree["mdhis_more_data"], false);
    for (symbol, last) in [("CZCE.SR501", 5010.0), ("SHFE.cu2501", 70100.0)] {
        let q = &tree["quotes"][symbol];
        assert_eq!(q["instrument_id"], symbol, "{tree}");
        assert_eq!(q["last_price"], last, "{q}");
        assert_eq!(q["volume"], 2, "{q}");
        assert!(q["datetime"].as_str().is_some_and(|d| d.len() == 26), "{q}");
        assert!(q.get("upper_limit").is_some() && q.get("pre_settlement").is_some(), "{q}");
    }
    assert!(tree["quotes"].get("DCE.nope").is_none());
    let warned = notifies(&tree);
    assert_eq!(warned.len(), 1, "{tree}");
    assert_eq!((warned[0].0.as_str(), warned[0].1), ("WARNING", 9103));
    assert!(warned[0].2.contains("DCE.nope"));

    // Nothing pending: a peek is not answered until something changes.
    send(&mut ws, json!({"aid": "peek_message"}));
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(ws.read().is_err(), "no rtn_data without changes");
    ws.get_ref().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The outstanding peek is answered by the next change: a notify for malformed JSON.
    send_text(&mut ws, "{not json");
    let m = recv(&mut ws);
    assert_eq!(m["aid"], "rtn_data");
    let patch = &m["data"][0];
    let bad = notifies(patch);
    assert_eq!((bad[0].0.as_str(), bad[0].1), ("ERROR", 9101), "{m}");

    // Several changes between peeks come as one rtn_data; each notify has its own key.
    send(&mut ws, json!({"aid": "no_such_thing"}));
    send(
        &mut ws,
        json!({"aid": "set_chart", "chart_id": "c1", "ins_list": "CZCE.SR501", "duration": 60_000_000_000i64, "view_width": 10}),
    );
    send(&mut ws, json!({"aid": "req_login", "bid": "local", "user_name": "A", "password": "x"}));
    send(&mut ws, json!({"aid": "subscribe_quote"}));
    let tree = peek(&mut ws);
    let mut codes: Vec<i64> = notifies(&tree).iter().map(|n| n.1).collect();
    codes.sort();
    assert_eq!(codes, vec![9101, 9102, 9106], "{tree}");
    // The chart: the one 1-minute bar of SR501's trade, ready as tqsdk requires.
    let chart = &tree["charts"]["c1"];
    assert_eq!((chart["left_id"].as_i64(), chart["right_id"].as_i64()), (Some(0), Some(0)), "{tree}");
    assert_eq!(chart["more_data"], false);
    assert_eq!(chart["state"]["aid"], "set_chart");
    assert_eq!(chart["state"]["duration"], 60_000_000_000i64);
    let series = &tree["klines"]["CZCE.SR501"]["60000000000"];
    assert_eq!(series["last_id"], 0, "{tree}");
    let bar = &series["data"]["0"];
    assert_eq!(
        (bar["open"].as_f64(), bar["close"].as_f64(), bar["volume"].as_i64()),
        (Some(5010.0), Some(5010.0), Some(2))
    );
    assert!(bar["datetime"].as_i64().is_some_and(|t| t > 0), "{bar}");

    // Charts the server cannot serve are refused with a reason; an empty ins_list deletes.
    let chart = |id: &str, ins: &str, duration: i64| json!({"aid": "set_chart", "chart_id": id, "ins_list": ins, "duration": duration, "view_width": 100});
    send(&mut ws, chart("c2", "CZCE.SR501", 7_000_000_000));
    send(&mut ws, chart("c3", "CZCE.SR501", 0));
    send(&mut ws, chart("c4", "CZCE.SR501,SHFE.cu2501", 60_000_000_000));
    send(&mut ws, chart("c5", "DCE.nope", 60_000_000_000));
    let tree = peek(&mut ws);
    let mut codes: Vec<i64> = notifies(&tree).iter().map(|n| n.1).collect();
    codes.sort();
    assert_eq!(codes, vec![9103, 9104, 9105], "{tree}");
    // Ticks (duration 0): the one trade's tick, ready as tqsdk requires.
    let ticks = &tree["ticks"]["CZCE.SR501"];
    assert_eq!(ticks["last_id"], 0, "{tree}");
    assert_eq!(ticks["data"]["0"]["last_price"], 5010.0, "{tree}");
    assert_eq!(
        (tree["charts"]["c3"]["left_id"].as_i64(), tree["charts"]["c3"]["right_id"].as_i64()),
        (Some(0), Some(0))
    );
    send(&mut ws, chart("c1", "", 60_000_000_000));
    send(&mut ws, json!({"aid": "peek_message"}));
    let raw = recv(&mut ws);
    assert_eq!(raw["data"][0]["charts"], json!({"c1": null}), "an empty ins_list deletes the chart: {raw}");

    // The session is still usable, and the server shuts down cleanly with it open.
    send(&mut ws, json!({"aid": "subscribe_quote", "ins_list": "SR501"}));
    let tree = peek(&mut ws);
    assert_eq!(tree["quotes"]["CZCE.SR501"]["last_price"], 5010.0, "{tree}");
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", server.stderr());
}

#[test]
fn oversized_and_binary_garbage_frames() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&options(dir.path()));
    let mut ws = connect(&server);
    recv(&mut ws);
    // Binary frames that are not UTF-8: an ERROR notify, the session stays.
    ws.send(Message::binary(vec![0xff, 0xfe, 0x00])).unwrap();
    let tree = peek(&mut ws);
    assert_eq!(notifies(&tree)[0].1, 9101, "{tree}");
    // A message over 64 KiB closes this connection; the server keeps serving others.
    let huge = format!(r#"{{"aid":"subscribe_quote","ins_list":"{}"}}"#, "x".repeat(100_000));
    let _ = ws.send(Message::text(huge));
    let closed = loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(_) => break true,
            Ok(_) => continue,
        }
    };
    assert!(closed);
    let mut other = connect(&server);
    assert_eq!(recv(&mut other)["aid"], "rtn_brokers");
    send(&mut other, json!({"aid": "subscribe_quote", "ins_list": "SHFE.cu2501"}));
    assert_eq!(peek(&mut other)["quotes"]["SHFE.cu2501"]["instrument_id"], "SHFE.cu2501");
}

/// Charts follow trades: after the history, each trade's tick and the bar it changed reach
/// the chart's session (its instrument on the other shard or the same one); a replaced chart
/// stops following its old series.
#[test]
fn charts_follow_trades() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&options(dir.path()));
    let mut c = server.client();
    for a in ["A", "B"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": a, "init_cash": 10_000_000})));
    }
    let trade = |c: &mut server_support::Client, price: f64| {
        for (a, d) in [("A", "BUY"), ("B", "SELL")] {
            let order = json!({"account_id": a, "instrument_id": "cu2501", "direction": d, "offset": "OPEN",
                               "limit_price": price, "volume": 1});
            c.ok("POST", "/api/order/submit", Some(order));
        }
    };
    trade(&mut c, 70100.0);
    let mut ws = connect(&server);
    recv(&mut ws);
    let minute = 60_000_000_000i64;
    send(
        &mut ws,
        json!({"aid": "set_chart", "chart_id": "k", "ins_list": "SHFE.cu2501", "duration": minute, "view_width": 50}),
    );
    send(
        &mut ws,
        json!({"aid": "set_chart", "chart_id": "t", "ins_list": "SHFE.cu2501", "duration": 0, "view_width": 50}),
    );
    let mut tree = peek(&mut ws);
    assert_eq!(tree["ticks"]["SHFE.cu2501"]["last_id"], 0, "{tree}");
    assert_eq!(tree["klines"]["SHFE.cu2501"][minute.to_string()]["last_id"], 0, "{tree}");
    for (i, price) in [70110.0, 70090.0, 70120.0].into_iter().enumerate() {
        trade(&mut c, price);
        let want = i as i64 + 1;
        server_support::diff::peek_until(&mut ws, &mut tree, |t| t["ticks"]["SHFE.cu2501"]["last_id"] == want);
        assert_eq!(tree["ticks"]["SHFE.cu2501"]["data"][want.to_string()]["last_price"], price, "{tree}");
    }
    let series = &tree["klines"]["SHFE.cu2501"][minute.to_string()];
    let last = series["last_id"].as_i64().unwrap();
    let bar = &series["data"][last.to_string()];
    assert_eq!(bar["close"], 70120.0, "{tree}");
    assert_eq!(bar["high"].as_f64().unwrap(), 70120.0f64.max(bar["open"].as_f64().unwrap()), "{bar}");
    // The k-line volume over the bars equals the trades.
    let volume: i64 = series["data"].as_object().unwrap().values().map(|b| b["volume"].as_i64().unwrap()).sum();
    assert_eq!(volume, 4, "{tree}");
    // Replacing chart t with one of SR501 stops the cu2501 ticks.
    send(
        &mut ws,
        json!({"aid": "set_chart", "chart_id": "t", "ins_list": "CZCE.SR501", "duration": 0, "view_width": 5}),
    );
    peek(&mut ws);
    trade(&mut c, 70130.0);
    std::thread::sleep(Duration::from_millis(300));
    let after = peek(&mut ws);
    assert!(after.get("ticks").is_none(), "no ticks of an unfollowed series: {after}");
    assert!(after["klines"]["SHFE.cu2501"].is_object(), "the k-line chart still follows: {after}");
}

/// Slow consumers: a client that never peeks while its pending data grows past the bound is
/// closed with a reason; a client that peeks but stops reading is cut off once a write waits
/// past the send timeout. Others are served meanwhile, and the server counts both.
#[test]
fn slow_readers_are_cut_off_without_harming_others() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[websocket]\nmax_pending_kib = 256\nsend_timeout_ms = 500\n";
    let server = start_with_config(options(&dir.path().join("data")), dir.path(), toml);
    let mut c = server.client();
    for a in ["A", "B"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": a, "init_cash": 10_000_000})));
    }
    let mut healthy = connect(&server);
    recv(&mut healthy);
    send(&mut healthy, json!({"aid": "subscribe_quote", "ins_list": "CZCE.SR501"}));
    peek(&mut healthy);

    // Each unknown symbol is a WARNING notify with its own key: pending data grows until the
    // client peeks. This one never does.
    let unknown: Vec<String> = (0..3000).map(|i| format!("DCE.x{i:05}")).collect();
    let flood = json!({"aid": "subscribe_quote", "ins_list": unknown.join(",")}).to_string();
    let mut hoarder = connect(&server);
    recv(&mut hoarder);
    hoarder.get_ref().set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut closed = None;
    for _ in 0..20 {
        let _ = hoarder.send(Message::text(flood.clone()));
        match hoarder.read() {
            Ok(Message::Close(frame)) => {
                closed = frame;
                break;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
    let frame = closed.expect("closed with a close frame");
    assert_eq!(frame.code, tungstenite::protocol::frame::coding::CloseCode::Policy);
    assert!(frame.reason.contains("pending"), "{frame:?}");

    // This one peeks (each answer ~160 KB of notifies, under the pending bound) but never reads
    // what comes back.
    let half = json!({"aid": "subscribe_quote", "ins_list": unknown[..1500].join(",")}).to_string();
    let addr = server.ready_field("ws").unwrap();
    let stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let (mut deaf, _) = tungstenite::client(format!("ws://{addr}/"), stream).unwrap();
    let mut sent = 0;
    for _ in 0..200 {
        let ok = deaf.send(Message::text(half.clone())).is_ok()
            && deaf.send(Message::text(r#"{"aid":"peek_message"}"#.to_owned())).is_ok();
        if !ok {
            break;
        }
        sent += 1;
    }
    assert!(sent > 0);
    // The healthy session is served while the deaf one's writes wait.
    send(&mut healthy, json!({"aid": "peek_message"}));
    let order = |a: &str, d: &str| json!({"account_id": a, "instrument_id": "SR501", "direction": d, "offset": "OPEN", "limit_price": 5010.0, "volume": 1});
    c.ok("POST", "/api/order/submit", Some(order("A", "BUY")));
    c.ok("POST", "/api/order/submit", Some(order("B", "SELL")));
    let mut seen = json!({});
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen["quotes"]["CZCE.SR501"]["volume"] != 1 {
        assert!(std::time::Instant::now() < deadline, "the healthy session got no quote: {seen}");
        let m = recv(&mut healthy);
        for patch in m["data"].as_array().unwrap() {
            qaexchange::diff::merge_patch::apply(&mut seen, patch);
        }
        send(&mut healthy, json!({"aid": "peek_message"}));
    }
    // The deaf one is cut off after the send timeout; /metrics counts it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (dropped, text) = server_support::metric_sum(&mut c, "qaexchange_ws_slow_disconnects_total");
        if dropped >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no slow disconnect counted:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Quote fan-out: sessions on every shard that follow an instrument get its changes, each
/// composed into their pending patch until they peek; all end with the same final quote.
#[test]
fn quote_changes_reach_every_subscribed_session() {
    // A thousand sockets on each side (the server inherits the limit).
    let fds = server_support::raise_fd_limit();
    assert!(fds >= 1100, "this test needs 1,100 open files per process; the limit is {fds}");
    let dir = tempfile::tempdir().unwrap();
    let server = start(&options(dir.path()));
    let mut c = server.client();
    for a in ["A", "B"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": a, "init_cash": 10_000_000})));
    }
    // 1,000 sessions (the kernel spreads them over both shards), each following SR501 (shard 0).
    let mut sessions: Vec<Ws> = (0..1000).map(|_| connect(&server)).collect();
    for ws in &mut sessions {
        recv(ws);
        send(ws, json!({"aid": "subscribe_quote", "ins_list": "CZCE.SR501"}));
        let tree = peek(ws);
        assert_eq!(tree["quotes"]["CZCE.SR501"]["volume"], 0, "{tree}");
    }
    // One session peeks now and gets the first trade as soon as it happens.
    send(&mut sessions[0], json!({"aid": "peek_message"}));
    let order = |a: &str, d: &str, price: f64| json!({"account_id": a, "instrument_id": "SR501", "direction": d, "offset": "OPEN", "limit_price": price, "volume": 1});
    c.ok("POST", "/api/order/submit", Some(order("A", "BUY", 5010.0)));
    c.ok("POST", "/api/order/submit", Some(order("B", "SELL", 5010.0)));
    let first = recv(&mut sessions[0]);
    assert_eq!(first["aid"], "rtn_data");
    let mut seen = json!({});
    for patch in first["data"].as_array().unwrap() {
        qaexchange::diff::merge_patch::apply(&mut seen, patch);
    }
    // Depth changes come first; the trade's quote may be in this or the next rtn_data.
    if seen["quotes"]["CZCE.SR501"]["volume"] != 1 {
        let tree = peek(&mut sessions[0]);
        qaexchange::diff::merge_patch::apply(&mut seen, &tree);
    }
    assert_eq!(seen["quotes"]["CZCE.SR501"]["last_price"], 5010.0, "{seen}");
    // More trades while the others do not peek: their pending data is one composed patch.
    for i in 0..20 {
        let price = 5011.0 + i as f64;
        c.ok("POST", "/api/order/submit", Some(order("A", "BUY", price)));
        c.ok("POST", "/api/order/submit", Some(order("B", "SELL", price)));
    }
    let want = c.ok("GET", "/api/market/tick/SR501", None);
    assert_eq!(want["volume"], 21);
    // Quotes are published after the commit that made them; give the last one a moment.
    std::thread::sleep(Duration::from_millis(200));
    for (i, ws) in sessions.iter_mut().enumerate().skip(1) {
        let tree = peek(ws);
        let q = &tree["quotes"]["CZCE.SR501"];
        assert_eq!(q["volume"], 21, "session {i}: {tree}");
        assert_eq!(q["last_price"], want["last_price"], "session {i}");
        assert_eq!(q["bid_price1"], "-", "session {i}: the book is empty again");
    }
}

/// `set_chart` wider than what the engine keeps in memory: the older ticks and bars come from
/// the history store, with the ids they had, before and after a restart.
#[test]
fn charts_reach_past_the_engine_into_the_history_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small_rings.toml");
    std::fs::write(&config, "[engine]\ntick_capacity = 8\nkline_capacity = 2\n").unwrap();
    let mut opts = options(&dir.path().join("data"));
    opts.config = Some(config);
    let mut server = start(&opts);
    let mut c = server.client();
    for a in ["A", "B"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": a, "init_cash": 100_000_000})));
    }
    let trade = |c: &mut server_support::Client, price: f64| {
        for (a, d) in [("A", "BUY"), ("B", "SELL")] {
            let order = json!({"account_id": a, "instrument_id": "SR501", "direction": d, "offset": "OPEN",
                               "limit_price": price, "volume": 1});
            c.ok("POST", "/api/order/submit", Some(order));
        }
    };
    // Three 3-second bars (the ring keeps 2) and 20 ticks (the ring keeps 8).
    let mut prices = Vec::new();
    for bar in 0..3 {
        if bar > 0 {
            std::thread::sleep(Duration::from_millis(3100));
        }
        for k in 0..7 {
            let price = 5000.0 + f64::from(bar * 10 + k);
            trade(&mut c, price);
            prices.push(price);
        }
    }
    let three_s = 3_000_000_000i64;
    let check = |server: &server_support::ServerProcess| {
        let mut ws = connect(server);
        recv(&mut ws);
        send(
            &mut ws,
            json!({"aid": "set_chart", "chart_id": "t", "ins_list": "CZCE.SR501", "duration": 0, "view_width": 15}),
        );
        send(
            &mut ws,
            json!({"aid": "set_chart", "chart_id": "k", "ins_list": "CZCE.SR501", "duration": three_s, "view_width": 10}),
        );
        let tree = peek(&mut ws);
        let ticks = &tree["ticks"]["CZCE.SR501"];
        assert_eq!(ticks["last_id"], 20, "{tree}");
        let data = ticks["data"].as_object().unwrap();
        assert_eq!(data.len(), 15, "{ticks}");
        // Tick n is the n-th trading step's (counted from 0); ticks 6..=12 come from the store.
        for id in 6..=20usize {
            assert_eq!(data[&id.to_string()]["last_price"], prices[id], "tick {id}: {ticks}");
        }
        assert_eq!(tree["charts"]["t"]["left_id"], 6, "{tree}");
        // At least three bars (a group of trades may straddle a 3 s boundary); the ring keeps
        // two, so the first ones come from the store. Every bar since the first is there.
        let bars = &tree["klines"]["CZCE.SR501"][three_s.to_string()];
        let last = bars["last_id"].as_i64().unwrap();
        assert!(last >= 2, "{tree}");
        let data = bars["data"].as_object().unwrap();
        assert_eq!(data.len() as i64, last + 1, "{bars}");
        let volume: i64 = data.values().map(|b| b["volume"].as_i64().unwrap()).sum();
        assert_eq!(volume, 21, "{bars}");
        assert_eq!(data["0"]["open"], json!(prices[0]), "{bars}");
        assert_eq!(data[&last.to_string()]["close"], json!(prices[20]), "{bars}");
        assert_eq!(tree["charts"]["k"]["left_id"], 0, "{tree}");
    };
    check(&server);
    server.kill9();
    let server = start(&opts);
    check(&server);
}

/// `[websocket] max_deliveries_per_sec`: with many changes and sessions that peek again at
/// once, each shard pushes no more market data than its budget (plus its burst of a tenth of a
/// second), the waits are counted, and every session ends with the final quote; a trading
/// session's order answers do not wait for the budget.
#[test]
fn the_delivery_budget_bounds_pushes_and_every_session_still_gets_the_last_quote() {
    const BUDGET: f64 = 5.0;
    let dir = tempfile::tempdir().unwrap();
    let toml = "[websocket]\nmax_deliveries_per_sec = 5\n";
    let server = start_with_config(options(&dir.path().join("data")), dir.path(), toml);
    let mut c = server.client();
    for a in ["A", "B"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": a, "init_cash": 100_000_000})));
    }
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "T", "init_cash": 100_000_000, "password": "pt"})));
    let shards: f64 = server.ready_field("shards").unwrap().parse().unwrap();
    let mut sessions: Vec<Ws> = (0..6).map(|_| connect(&server)).collect();
    let mut trees = Vec::new();
    for ws in &mut sessions {
        recv(ws);
        send(ws, json!({"aid": "subscribe_quote", "ins_list": "CZCE.SR501"}));
        trees.push(peek(ws));
        ws.get_ref().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    }
    // Let the burst refill after the subscriptions' answers, then peek and count.
    std::thread::sleep(Duration::from_millis(300));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = sessions
        .into_iter()
        .zip(trees)
        .map(|(mut ws, mut tree)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut delivered = 0u64;
                send(&mut ws, json!({"aid": "peek_message"}));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match ws.read() {
                        Ok(Message::Text(text)) => {
                            let m: serde_json::Value = serde_json::from_str(&text).unwrap();
                            assert_eq!(m["aid"], "rtn_data", "{m}");
                            for patch in m["data"].as_array().unwrap() {
                                qaexchange::diff::merge_patch::apply(&mut tree, patch);
                            }
                            delivered += 1;
                            send(&mut ws, json!({"aid": "peek_message"}));
                        }
                        Ok(_) => {}
                        Err(tungstenite::Error::Io(e))
                            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                        Err(e) => panic!("session broke: {e}"),
                    }
                }
                (delivered, tree)
            })
        })
        .collect();
    // Resting orders at new prices: each changes the book, so each is a quote change that every
    // session wants (far more than the budget lets through).
    let started = std::time::Instant::now();
    for i in 0..60 {
        let order = json!({"account_id": "A", "instrument_id": "SR501", "direction": "BUY", "offset": "OPEN",
                           "limit_price": 4950.0 + i as f64, "volume": 1});
        c.ok("POST", "/api/order/submit", Some(order));
        std::thread::sleep(Duration::from_millis(10));
    }
    // Meanwhile the budget is spent: a trader's answers still come at once (at 5 tokens a
    // second, ten answers that waited for tokens would take 2 s at the very least).
    let mut trader = connect(&server);
    recv(&mut trader);
    send(&mut trader, json!({"aid": "subscribe_quote", "ins_list": "CZCE.SR501"}));
    let mut tree = server_support::diff::login(&mut trader, "T", "pt");
    let trading = std::time::Instant::now();
    for i in 0..10 {
        let id = format!("t{i}");
        send(
            &mut trader,
            json!({"aid": "insert_order", "user_id": "T", "order_id": id, "exchange_id": "CZCE",
            "instrument_id": "SR501", "direction": "BUY", "offset": "OPEN", "volume": 1, "price_type": "LIMIT",
            "limit_price": 4900.0, "time_condition": "GFD", "volume_condition": "ANY"}),
        );
        server_support::diff::peek_until(&mut trader, &mut tree, |t| {
            t["trade"]["T"]["orders"][&id]["status"] == "ALIVE"
        });
    }
    let trading = trading.elapsed();
    assert!(trading < Duration::from_millis(1500), "10 order answers took {trading:?}");
    c.ok(
        "POST",
        "/api/order/submit",
        Some(json!({"account_id": "B", "instrument_id": "SR501", "direction": "SELL",
        "offset": "OPEN", "limit_price": 5009.0, "volume": 1})),
    );
    let want = c.ok("GET", "/api/market/tick/SR501", None);
    // Long enough for every session to get its turn after the last change.
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut total = 0;
    for (i, reader) in readers.into_iter().enumerate() {
        let (delivered, tree) = reader.join().unwrap();
        total += delivered;
        let q = &tree["quotes"]["CZCE.SR501"];
        assert_eq!(q["volume"], 1, "session {i}: {tree}");
        assert_eq!(q["bid_price1"], want["bid_price"][0], "session {i}: {q}");
    }
    // Each shard's bucket holds at most 1 token and earns 5 a second (refilled every 5 ms).
    let most = (shards * (BUDGET * (elapsed + 0.005) + 1.0)).floor() as u64;
    assert!(total <= most, "{total} deliveries in {elapsed:.2} s, the budgets allow {most}");
    assert!(total >= 6, "every session got something: {total}");
    let (waits, text) = server_support::metric_sum(&mut c, "qaexchange_ws_budget_waits_total");
    assert!(waits >= 1, "sessions waited for the budget:\n{text}");
}
