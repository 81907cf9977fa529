//! REST scenarios against the real server (2 shards, storage in a temp dir): accounts,
//! crossing orders on two instruments, partial fills, modify, cancel, closes, with balances and
//! positions checked against hand-computed values and the SPEC invariants; then a graceful
//! restart gives the same state.

mod server_support;

use serde_json::{json, Value};
use server_support::{fixed4, start, yuan, Client, Options};

fn options(dir: &std::path::Path) -> Options {
    let mut opts = Options::new(Some(dir));
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    opts
}

fn order(account: &str, id: &str, instrument: &str, direction: &str, offset: &str, price: f64, volume: i64) -> Value {
    json!({"account_id": account, "client_order_id": id, "instrument_id": instrument, "direction": direction,
           "offset": offset, "limit_price": price, "volume": volume})
}

/// Account fields as fixed point.
fn money(account: &Value, field: &str) -> i64 {
    fixed4(&account[field])
}

/// SPEC §2 identities of one account.
fn check_identities(a: &Value) {
    let m = |f| money(a, f);
    assert_eq!(m("static_balance"), m("pre_balance") + m("deposit") - m("withdraw"), "{a}");
    assert_eq!(
        m("balance"),
        m("static_balance") + m("close_profit") - m("commission") - m("premium") + m("position_profit"),
        "{a}"
    );
    assert_eq!(
        m("available"),
        m("balance") - m("margin") - m("frozen_margin") - m("frozen_commission") - m("frozen_premium"),
        "{a}"
    );
}

/// Invariants across the venue, from the state dump.
fn check_venue(c: &mut Client) -> Value {
    let state = c.ok("GET", "/admin/state", None);
    assert_eq!(state["invariants"], "ok");
    let accounts = state["state"]["accounts"].as_array().expect("accounts").clone();
    let mut profit = 0;
    let (mut balance, mut commission, mut statics) = (0, 0, 0);
    for a in &accounts {
        let acc = &a["account"];
        check_identities(acc);
        profit += money(acc, "close_profit") + money(acc, "position_profit");
        balance += money(acc, "balance");
        commission += money(acc, "commission");
        statics += money(acc, "static_balance");
    }
    // Marked at one price per instrument, futures are zero-sum.
    assert_eq!(profit, 0, "{state}");
    assert_eq!(balance + commission, statics);
    state
}

#[test]
fn trading_scenario_end_to_end_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&options(dir.path()));
    let mut c = server.client();

    // Both shards accept connections on the one port (SO_REUSEPORT spreads them).
    let mut shards = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let mut probe = server.client();
        shards.insert(probe.ok("GET", "/health", None)["shard"].as_u64().unwrap());
    }
    assert_eq!(shards.len(), 2, "connections reached shards {shards:?}");

    // Accounts: two with initial cash, one funded by a deposit.
    let a = c.ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 1_000_000})));
    assert_eq!(money(&a, "balance"), yuan(1_000_000));
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "B", "init_cash": 1_000_000})));
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "C"})));
    let cc = c.ok("POST", "/api/account/deposit", Some(json!({"account_id": "C", "amount": 500_000})));
    assert_eq!(money(&cc, "available"), yuan(500_000));
    assert_eq!(c.refused("POST", "/api/account/open", Some(json!({"account_id": "C"})), 400), 1002);

    // SR501: A sells 5 @ 5010 (rests), B buys 3 @ 5010 from another connection: 3 trade.
    let mut c2 = server.client();
    let placed = c.ok("POST", "/api/order/submit", Some(order("A", "a-sr-1", "SR501", "SELL", "OPEN", 5010.0, 5)));
    assert_eq!(placed["order"]["status"], "ALIVE");
    let a_order = placed["order"]["order_id"].as_u64().unwrap();
    let taken = c2.ok("POST", "/api/order/submit", Some(order("B", "b-sr-1", "CZCE.SR501", "BUY", "OPEN", 5010.0, 3)));
    assert_eq!(taken["order"]["status"], "FINISHED");
    assert_eq!(taken["trades"].as_array().unwrap().len(), 1);
    assert_eq!(fixed4(&taken["trades"][0]["price"]), 50_100_000);
    let a_view = c.ok("GET", &format!("/api/order/{a_order}"), None);
    assert_eq!((a_view["volume_left"].as_i64(), a_view["status"].as_str()), (Some(2), Some("ALIVE")));

    // Commission 3 lots x 3 = 9 each; margin 5010 x 10 x 3 x 0.1 = 15,030 each; A also freezes
    // 2 x 5010 x 10 x 0.1 = 10,020 margin and 2 x 3 = 6 commission for its resting 2 lots.
    let b = c.ok("GET", "/api/account/B", None);
    assert_eq!(money(&b, "commission"), yuan(9));
    assert_eq!(money(&b, "margin"), yuan(15_030));
    assert_eq!(money(&b, "available"), yuan(1_000_000 - 9 - 15_030));
    let a = c.ok("GET", "/api/account/A", None);
    assert_eq!(money(&a, "frozen_margin"), yuan(10_020));
    assert_eq!(money(&a, "frozen_commission"), yuan(6));
    assert_eq!(money(&a, "available"), yuan(1_000_000 - 9 - 15_030 - 10_020 - 6));
    check_venue(&mut c);

    // A cancels its remainder by client order id: the hold is released.
    let cancelled = c.ok("POST", "/api/order/cancel", Some(json!({"account_id": "A", "client_order_id": "a-sr-1"})));
    assert_eq!(cancelled["order"]["status"], "FINISHED");
    assert_eq!(cancelled["order"]["last_code"], 3103);
    let a = c.ok("GET", "/api/account/A", None);
    assert_eq!(money(&a, "available"), yuan(1_000_000 - 9 - 15_030));
    assert_eq!(
        c.refused("POST", "/api/order/cancel", Some(json!({"account_id": "A", "order_id": a_order})), 404),
        3001
    );

    // cu2501: C bids 2 @ 70,000; A sells 2 @ 69,990 and trades at the resting 70,000.
    c2.ok("POST", "/api/order/submit", Some(order("C", "c-cu-1", "cu2501", "BUY", "OPEN", 70_000.0, 2)));
    let sold =
        c.ok("POST", "/api/order/submit", Some(order("A", "a-cu-1", "SHFE.cu2501", "SELL", "OPEN", 69_990.0, 2)));
    assert_eq!(fixed4(&sold["trades"][0]["price"]), yuan(70_000));
    assert_eq!(fixed4(&sold["trades"][0]["commission"]), yuan(4));

    // C rests a bid, moves it (re-queued), then cancels it.
    let bid = c2.ok("POST", "/api/order/submit", Some(order("C", "c-cu-2", "cu2501", "BUY", "OPEN", 69_000.0, 1)));
    let bid_id = bid["order"]["order_id"].as_u64().unwrap();
    let moved = c2.ok(
        "POST",
        "/api/order/modify",
        Some(json!({"account_id": "C", "order_id": bid_id.to_string(), "new_price": 69_500.0})),
    );
    assert_eq!(fixed4(&moved["order"]["limit_price"]), yuan(69_500));
    let book = c2.ok("GET", "/api/market/orderbook/cu2501?depth=5", None);
    assert_eq!(fixed4(&book["bids"][0]["price"]), yuan(69_500));
    assert_eq!(book["bids"][0]["volume"], 1);
    c2.ok("POST", "/api/order/cancel", Some(json!({"account_id": "C", "order_id": bid_id})));
    let book = c2.ok("GET", "/api/market/orderbook/cu2501", None);
    assert!(book["bids"].as_array().unwrap().is_empty() && book["asks"].as_array().unwrap().is_empty());

    // B closes its 3 SR501 (today's: no his position on a CZCE contract) by resting a sell at
    // 5020; A closes its short 3 by buying: both close today's lots at 5020.
    c2.ok("POST", "/api/order/submit", Some(order("B", "b-sr-2", "SR501", "SELL", "CLOSE", 5020.0, 3)));
    let closed = c.ok("POST", "/api/order/submit", Some(order("A", "a-sr-2", "SR501", "BUY", "CLOSE", 5020.0, 3)));
    assert_eq!(closed["order"]["status"], "FINISHED");
    // Closing more than is held is refused.
    assert_eq!(
        c.refused("POST", "/api/order/submit", Some(order("A", "a-sr-3", "SR501", "BUY", "CLOSE", 5020.0, 1)), 400),
        2006
    );

    // Hand-computed: B +300 close profit ((5020 - 5010) x 10 x 3), commission 9 to open and 0 to
    // close (today's lots pay close_today_per_lot, 0 for SR501 here); A -300, commission 9 + 4,
    // cu margin 70,000 x 5 x 2 x 0.1 = 70,000 at mark 70,000.
    let b = c.ok("GET", "/api/account/B", None);
    assert_eq!(money(&b, "close_profit"), yuan(300));
    assert_eq!(money(&b, "commission"), yuan(9));
    assert_eq!(money(&b, "balance"), yuan(1_000_000 + 300 - 9));
    assert_eq!(money(&b, "margin"), 0);
    assert_eq!(money(&b, "available"), yuan(1_000_000 + 300 - 9));
    let a = c.ok("GET", "/api/account/A", None);
    assert_eq!(money(&a, "close_profit"), yuan(-300));
    assert_eq!(money(&a, "commission"), yuan(13));
    assert_eq!(money(&a, "margin"), yuan(70_000));
    assert_eq!(money(&a, "balance"), yuan(1_000_000 - 300 - 13));
    assert_eq!(money(&a, "available"), yuan(1_000_000 - 300 - 13 - 70_000));
    let cc = c.ok("GET", "/api/account/C", None);
    assert_eq!(money(&cc, "balance"), yuan(500_000 - 4));
    assert_eq!(money(&cc, "available"), yuan(500_000 - 4 - 70_000));

    // Positions: A short 2 cu (today), C long 2; SR flat for A and B.
    let positions = c.ok("GET", "/api/position/A", None);
    let cu = positions.as_array().unwrap().iter().find(|p| p["instrument_id"] == "cu2501").expect("cu position");
    assert_eq!((cu["volume_short_today"].as_i64(), cu["volume_long"].as_i64()), (Some(2), Some(0)));
    let positions = c.ok("GET", "/api/position/C", None);
    let cu = positions.as_array().unwrap().iter().find(|p| p["instrument_id"] == "cu2501").expect("cu position");
    assert_eq!(cu["volume_long_today"], 2);

    // Withdraw more than is available: refused; a valid withdrawal goes through.
    assert_eq!(
        c.refused("POST", "/api/account/withdraw", Some(json!({"account_id": "C", "amount": 430_000})), 400),
        1005
    );
    let cc = c.ok("POST", "/api/account/withdraw", Some(json!({"account_id": "C", "amount": 1_000})));
    assert_eq!(money(&cc, "withdraw"), yuan(1_000));

    // History: A's orders and trades, market trades and k-lines, the instrument list.
    let orders = c.ok("GET", "/api/order/user/A", None);
    assert_eq!(orders.as_array().unwrap().len(), 3);
    let trades = c.ok("GET", "/api/trades/user/A", None);
    assert_eq!(trades.as_array().unwrap().len(), 3);
    let market = c.ok("GET", "/api/market/trades/SR501?limit=10", None);
    assert_eq!(market.as_array().unwrap().len(), 2);
    assert_eq!(fixed4(&market[0]["price"]), yuan(5020), "newest first");
    let tick = c.ok("GET", "/api/market/tick/SR501", None);
    assert_eq!(fixed4(&tick["last_price"]), yuan(5020));
    let kline = c.ok("GET", "/api/market/kline/SR501?period=1m&count=10", None);
    let bars = kline["bars"].as_array().unwrap();
    assert!(!bars.is_empty());
    assert_eq!(bars.iter().map(|b| b["volume"].as_i64().unwrap()).sum::<i64>(), 6);
    let instruments = c.ok("GET", "/api/market/instruments", None);
    assert_eq!(instruments.as_array().unwrap().len(), 2);

    let before = check_venue(&mut c);
    let state = before["state"]["instruments"].as_array().unwrap().clone();
    let open_interest: Vec<i64> = state.iter().map(|i| i["open_interest"].as_i64().unwrap()).collect();
    assert_eq!(open_interest, vec![0, 2], "SR all closed, cu 2 open");
    // The orders crossed shards both ways: SR501 is shard 0's, cu2501 shard 1's, A and C are
    // shard 0's accounts and B shard 1's (tests/data/server_instruments.toml).
    use qaexchange::domain::name::AccountId;
    use qaexchange::domain::shard::account_shard;
    let shard_of = |id: &str| account_shard(&AccountId::new(id).unwrap(), 2);
    assert_eq!((shard_of("A"), shard_of("B"), shard_of("C")), (0, 1, 0));
    let messages = &before["state"]["messages"];
    assert!(messages[0]["sent"][1].as_u64() > Some(5) && messages[1]["sent"][0].as_u64() > Some(5), "{messages}");

    // Graceful stop: exit 0; restart on the same data: the same state, nothing twice.
    drop((c, c2));
    assert!(server.terminate().success(), "stderr:\n{}", server.stderr());
    let server = start(&options(dir.path()));
    assert!(server.ready_field("recovered_records").unwrap().parse::<u64>().unwrap() > 10);
    let mut c = server.client();
    let after = check_venue(&mut c);
    assert_eq!(before["state"], after["state"]);
    assert_eq!(c.ok("GET", "/api/order/user/A", None), orders);
    assert_eq!(c.ok("GET", "/api/trades/user/A", None), trades);
}

/// A relative storage directory, as the default `./data` is (resolved from the server's working
/// directory): the server starts, checkpoints, and after a kill finds what it answered.
#[test]
fn a_relative_storage_directory_works() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // The test servers run in the crate's directory, which holds the target directory.
    let relative = tmp.path().strip_prefix(env!("CARGO_MANIFEST_DIR")).expect("the target dir is under the crate");
    let opts = options(relative);
    let mut server = start(&opts);
    assert!(server.ready_line.contains(&format!("storage={} ", relative.display())), "{}", server.ready_line);
    let mut c = server.client();
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 100})));
    c.ok("POST", "/admin/checkpoint", None);
    server.kill9();
    let server = start(&opts);
    assert_eq!(fixed4(&server.client().ok("GET", "/api/account/A", None)["deposit"]), yuan(100));
}

#[test]
fn without_storage_the_server_runs_and_forgets() {
    let mut opts = options(std::path::Path::new("/nonexistent"));
    opts.storage = None;
    opts.shards = 1;
    let mut server = start(&opts);
    let mut c = server.client();
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 100})));
    assert!(server.terminate().success());
    let server = start(&opts);
    let mut c = server.client();
    assert_eq!(c.refused("GET", "/api/account/A", None, 404), 1001);
}

/// Groups larger than `group_commit_max_records` are written as several synced writes before
/// their replies leave: a pipelined burst is answered in order and survives a SIGKILL.
#[test]
fn small_group_commit_limit_splits_writes_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exchange.toml");
    let instruments = server_support::manifest_dir().join("tests/data/server_instruments.toml");
    let text = format!(
        "[server]\ninstruments = {:?}\n[storage]\ngroup_commit_max_records = 1\ngroup_commit_max_bytes = 4096\n",
        instruments.to_str().unwrap()
    );
    std::fs::write(&config, text).unwrap();
    let mut opts = Options::new(Some(&dir.path().join("data")));
    opts.config = Some(config);
    let mut server = start(&opts);
    let mut c = server.client();
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "A"})));
    let mut burst = Vec::new();
    for _ in 0..200 {
        let body = json!({"account_id": "A", "amount": 1}).to_string();
        burst.extend_from_slice(
            format!("POST /api/account/deposit HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
        );
    }
    c.send_raw(&burst).unwrap();
    for n in 1..=200 {
        let r = c.read_response().unwrap();
        assert_eq!(fixed4(&r.json()["data"]["deposit"]), yuan(n), "answers in order");
    }
    server.kill9();
    let server = start(&opts);
    assert_eq!(fixed4(&server.client().ok("GET", "/api/account/A", None)["deposit"]), yuan(200));
}

/// The shard layout is part of the data: a restart with another shard count is refused with
/// the count to use, and the data dir still starts with the right one.
#[test]
fn a_data_dir_keeps_its_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&options(dir.path()));
    server.client().ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 100})));
    assert!(server.terminate().success());
    let mut three = options(dir.path());
    three.shards = 3;
    let (status, stderr) = server_support::run_to_exit(&three, std::time::Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("start the server with --shards 2"), "{stderr}");
    let server = start(&options(dir.path()));
    assert_eq!(fixed4(&server.client().ok("GET", "/api/account/A", None)["deposit"]), yuan(100));
}

/// A series of `/metrics` for one shard.
fn shard_metric(c: &mut Client, name: &str, shard: u32) -> f64 {
    let text = String::from_utf8(c.get("/metrics").body).expect("metrics are text");
    let prefix = format!("{name}{{shard=\"{shard}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
    line[prefix.len()..].parse().expect("a number")
}

fn raw(method: &str, path: &str, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!("{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// Pipelined requests for one shard are sent to it together and share its group commit;
/// answers still come in order, a query sees everything sent before it, and orders of accounts
/// on two shards interleaved in one pipeline all trade.
#[test]
fn pipelined_requests_share_group_commits_and_stay_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&options(dir.path()));
    let mut c = server.client();
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 1_000_000})));
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "B", "init_cash": 1_000_000})));

    // 100 deposits to A (shard 0) in one write, then a query of A.
    let groups_before = shard_metric(&mut c, "qaexchange_wal_groups_total", 0);
    let mut burst = Vec::new();
    for _ in 0..100 {
        burst.extend(raw("POST", "/api/account/deposit", &json!({"account_id": "A", "amount": 1})));
    }
    burst.extend(b"GET /api/account/A HTTP/1.1\r\n\r\n".to_vec());
    c.send_raw(&burst).unwrap();
    for n in 1..=100 {
        let r = c.read_response().unwrap().json();
        assert!(r["data"]["deposit"].is_number(), "answer {n}: {r}");
        assert_eq!(fixed4(&r["data"]["deposit"]), yuan(1_000_000 + n), "answer {n} in order");
    }
    let account = c.read_response().unwrap().json();
    assert!(account["data"]["deposit"].is_number(), "{account}");
    assert_eq!(fixed4(&account["data"]["deposit"]), yuan(1_000_100));
    let groups = shard_metric(&mut c, "qaexchange_wal_groups_total", 0) - groups_before;
    // One request at a time would take 100 groups; 64 at a time takes about 2.
    assert!(groups <= 10.0, "100 pipelined deposits took {groups} WAL groups");

    // A (shard 0) buys and B (shard 1) sells SR501 (shard 0), alternating in one pipeline.
    let mut burst = Vec::new();
    for i in 0..30 {
        burst.extend(raw(
            "POST",
            "/api/order/submit",
            &order("A", &format!("pa{i}"), "SR501", "BUY", "OPEN", 5000.0, 1),
        ));
        burst.extend(raw(
            "POST",
            "/api/order/submit",
            &order("B", &format!("pb{i}"), "SR501", "SELL", "OPEN", 5000.0, 1),
        ));
    }
    burst.extend(b"GET /api/position/A HTTP/1.1\r\n\r\n".to_vec());
    c.send_raw(&burst).unwrap();
    for i in 0..60 {
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 200, "order {i}: {:?}", r.json());
        let who = if i % 2 == 0 { "A" } else { "B" };
        assert_eq!(r.json()["data"]["order"]["account_id"], who, "answer {i} in order");
        // Every sell meets the buy just before it.
        if i % 2 == 1 {
            assert_eq!(r.json()["data"]["order"]["status"], "FINISHED", "{:?}", r.json());
        }
    }
    let positions = c.read_response().unwrap().json();
    let long: i64 =
        positions["data"].as_array().expect("positions").iter().map(|p| p["volume_long"].as_i64().unwrap_or(0)).sum();
    assert_eq!(long, 30, "{positions}");
    check_venue(&mut c);
    // The groups' stages were timed, the history writes among them.
    let latency = String::from_utf8(c.get("/admin/latency").body).expect("latency is text");
    for stage in ["wal_write_sync", "history_apply", "commit_wait"] {
        let line = latency
            .lines()
            .find(|l| l.starts_with(&format!("# stage {stage}:")))
            .unwrap_or_else(|| panic!("{latency}"));
        assert!(!line.ends_with("(n = 0)"), "{line}");
    }
}

/// tqsdk's `_ins_url`: the instruments in Shinny's format, a bare map keyed `EXCHANGE.symbol`.
#[test]
fn shinny_instruments_file_for_tqsdk() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&options(dir.path()));
    let mut c = server.client();
    let r = c.get("/api/market/instruments/shinny");
    assert_eq!(r.status, 200);
    let file = r.json();
    let listed = c.ok("GET", "/api/market/instruments", None);
    assert_eq!(file.as_object().expect("a map").len(), listed.as_array().expect("a list").len());
    for inst in listed.as_array().unwrap() {
        let symbol = format!("{}.{}", inst["exchange_id"].as_str().unwrap(), inst["instrument_id"].as_str().unwrap());
        let entry = &file[&symbol];
        assert_eq!(entry["instrument_id"], symbol.as_str(), "{file}");
        assert_eq!(entry["ins_id"], inst["instrument_id"]);
        assert_eq!(entry["class"], "FUTURE");
        assert_eq!(entry["volume_multiple"], inst["volume_multiple"]);
        assert!(entry["price_tick"].as_f64().unwrap() > 0.0, "{entry}");
        assert!(entry["price_decs"].is_u64(), "{entry}");
        assert_eq!(entry["expired"], false);
    }
    assert_eq!(c.get("/api/market/instruments/other").status, 404);
}
