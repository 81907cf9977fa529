//! Daily settlement across shards through the real server (2 shards, storage in a temp dir):
//! settlement prices, the cut, statements checked against hand-computed values, day orders
//! and orders outside the new band cancelled, the next day's trading on yesterday's
//! positions; invariants before and after; and a SIGKILL between two shards' settlement steps,
//! after which the restart finishes the cut on the shard that had not run it.
//!
//! Instruments (tests/data/server_instruments.toml): SR501 on shard 0 (CZCE, 10 per point, tick
//! 1, margin 10 %, 3 per lot each way, band ±10 % of 5000), cu2501 on shard 1 (SHFE, 5 per point,
//! tick 10, 2 per lot to open). Accounts A and C live on shard 0, B on shard 1.

mod server_support;

use serde_json::{json, Value};
use server_support::{fixed4, settled_state, start, yuan, zero_sum_state, Client, Options};
use std::time::{Duration, Instant};

fn options(dir: &std::path::Path) -> Options {
    let mut opts = Options::new(Some(dir));
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    opts
}

#[allow(clippy::too_many_arguments)]
fn order(
    account: &str,
    id: &str,
    instrument: &str,
    direction: &str,
    offset: &str,
    price: f64,
    volume: i64,
    tc: &str,
) -> Value {
    json!({"account_id": account, "client_order_id": id, "instrument_id": instrument, "direction": direction,
           "offset": offset, "limit_price": price, "volume": volume, "time_condition": tc})
}

/// The day's trading: a cross-shard trade on each instrument, and three resting orders of C.
fn trade_day_one(c: &mut Client) {
    for account in ["A", "B", "C"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": account, "init_cash": 1_000_000.0})));
    }
    c.ok("POST", "/api/order/submit", Some(order("A", "a1", "SR501", "SELL", "OPEN", 5010.0, 2, "GFD")));
    c.ok("POST", "/api/order/submit", Some(order("B", "b1", "SR501", "BUY", "OPEN", 5010.0, 2, "GFD")));
    c.ok("POST", "/api/order/submit", Some(order("B", "b2", "cu2501", "SELL", "OPEN", 70000.0, 1, "GFD")));
    c.ok("POST", "/api/order/submit", Some(order("A", "a2", "cu2501", "BUY", "OPEN", 70000.0, 1, "GFD")));
    // C rests: a day order, a GTC order inside the next day's band, one outside it.
    c.ok("POST", "/api/order/submit", Some(order("C", "c-day", "SR501", "BUY", "OPEN", 4990.0, 1, "GFD")));
    c.ok("POST", "/api/order/submit", Some(order("C", "c-keep", "SR501", "BUY", "OPEN", 4600.0, 1, "GTC")));
    c.ok("POST", "/api/order/submit", Some(order("C", "c-band", "SR501", "BUY", "OPEN", 4510.0, 1, "GTC")));
}

fn statement_of(c: &mut Client, account: &str) -> Value {
    let all = c.ok("GET", &format!("/api/settlement/{account}"), None);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 1, "{account}: {all:?}");
    all[0].clone()
}

fn order_by_client(c: &mut Client, account: &str, client: &str) -> Value {
    let orders = c.ok("GET", &format!("/api/order/user/{account}"), None);
    orders
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["client_order_id"] == client)
        .cloned()
        .unwrap_or_else(|| panic!("{client}"))
}

#[test]
fn settlement_statements_and_the_next_day() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&options(dir.path()));
    let mut c = server.client();
    trade_day_one(&mut c);
    zero_sum_state(&mut c);

    // Settlement prices: checked like order prices; cu2501 keeps none (its mark is used).
    assert_eq!(
        c.refused(
            "POST",
            "/api/admin/settlement/set-price",
            Some(json!({"instrument_id": "SR501", "price": 5020.5})),
            400
        ),
        4001
    );
    assert_eq!(
        c.refused("POST", "/api/admin/settlement/set-price", Some(json!({"instrument_id": "XX", "price": 1.0})), 404),
        2001
    );
    c.ok(
        "POST",
        "/api/admin/settlement/batch-set-prices",
        Some(json!({"prices": [{"instrument_id": "SR501", "price": 5010.0}]})),
    );
    let set =
        c.ok("POST", "/api/admin/settlement/set-price", Some(json!({"instrument_id": "CZCE.SR501", "price": 5020.0})));
    assert_eq!(set["settlement_price"], 5020.0);
    assert_eq!(
        c.refused("POST", "/api/admin/settlement/execute", Some(json!({"next_trading_day": 20250101})), 400),
        4002
    );

    let done = c.ok("POST", "/api/admin/settlement/execute", None);
    assert_eq!((done["settled_day"].as_u64(), done["trading_day"].as_u64()), (Some(20250102), Some(20250103)));
    assert_eq!(done["statements"], 3);
    let prices: Vec<(String, f64)> = done["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["instrument_id"].as_str().unwrap().to_string(), i["settlement_price"].as_f64().unwrap()))
        .collect();
    assert_eq!(prices, vec![("SR501".to_string(), 5020.0), ("cu2501".to_string(), 70000.0)]);

    // Statements at the settlement prices, by hand:
    // A: short 2 SR501 @5010 -> (5010-5020)*10*2 = -200; long 1 cu2501 @70000 -> 0; commission 3*2 + 2.
    // B: the other sides: +200, commission 8. C: no positions.
    let a = statement_of(&mut c, "A");
    assert_eq!(a["trading_day"], 20250102);
    assert_eq!(fixed4(&a["account"]["position_profit"]), yuan(-200));
    assert_eq!(fixed4(&a["account"]["commission"]), yuan(8));
    assert_eq!(fixed4(&a["account"]["balance"]), yuan(1_000_000 - 8 - 200));
    assert_eq!(a["positions"].as_array().unwrap().len(), 2);
    let b = statement_of(&mut c, "B");
    assert_eq!(fixed4(&b["account"]["position_profit"]), yuan(200));
    assert_eq!(fixed4(&b["account"]["balance"]), yuan(1_000_000 - 8 + 200));
    let sc = statement_of(&mut c, "C");
    assert_eq!(fixed4(&sc["account"]["balance"]), yuan(1_000_000));

    // The new day: balances rolled, today became his, the band moved with the settlement price.
    let acc = c.ok("GET", "/api/account/A", None);
    assert_eq!(fixed4(&acc["pre_balance"]), yuan(999_792));
    assert_eq!((fixed4(&acc["commission"]), fixed4(&acc["close_profit"])), (0, 0));
    let pos = c.ok("GET", "/api/position/A", None);
    let sr = pos.as_array().unwrap().iter().find(|p| p["instrument_id"] == "SR501").unwrap().clone();
    assert_eq!((sr["volume_short_his"].as_i64(), sr["volume_short_today"].as_i64()), (Some(2), Some(0)));
    assert_eq!(sr["position_price_short"], 5020.0);
    let tick = c.ok("GET", "/api/market/tick/SR501", None);
    assert_eq!(
        (tick["pre_settlement"].as_f64(), tick["lower_limit"].as_f64(), tick["upper_limit"].as_f64()),
        (Some(5020.0), Some(4518.0), Some(5522.0))
    );
    assert_eq!(c.ok("GET", "/api/market/tick/cu2501", None)["pre_settlement"], 70000.0);
    // C's day order and the order outside the new band ended; the GTC order inside it rests.
    assert_eq!(order_by_client(&mut c, "C", "c-day")["last_code"], 3104);
    assert_eq!(order_by_client(&mut c, "C", "c-band")["last_code"], 3106);
    assert_eq!(order_by_client(&mut c, "C", "c-keep")["status"], "ALIVE");
    let state = zero_sum_state(&mut c);
    assert_eq!(state["trading_day"], 20250103);

    // History: the day with its prices; the detail has every account's statement.
    let history = c.ok("GET", "/api/admin/settlement/history", None);
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["settlement_prices"]["SR501"], 5020.0);
    assert_eq!(history[0]["statements"], 3);
    let detail = c.ok("GET", "/api/admin/settlement/detail/20250102", None);
    let ids: Vec<&str> =
        detail.as_array().unwrap().iter().map(|s| s["account"]["account_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["A", "B", "C"]);
    assert_eq!(c.ok("GET", "/api/admin/settlement/detail/20250103", None), json!([]));
    assert_eq!(c.refused("GET", "/api/admin/settlement/detail/2025", None, 400), 9003);

    // The next day trades on yesterday's positions: A buys back his short at 5030 (CZCE CLOSE
    // takes his first): (5020 - 5030) * 10 * 2 = -200 realised, at yesterday's settlement.
    c.ok("POST", "/api/order/submit", Some(order("B", "b3", "SR501", "SELL", "CLOSE", 5030.0, 2, "GFD")));
    c.ok("POST", "/api/order/submit", Some(order("A", "a3", "SR501", "BUY", "CLOSE", 5030.0, 2, "GFD")));
    let acc = c.ok("GET", "/api/account/A", None);
    assert_eq!(fixed4(&acc["close_profit"]), yuan(-200));
    assert_eq!(fixed4(&acc["balance"]), yuan(999_792 - 200 - 6));
    let bcc = c.ok("GET", "/api/account/B", None);
    assert_eq!(fixed4(&bcc["balance"]), yuan(1_000_192 + 200 - 6));
    zero_sum_state(&mut c);

    // A restart replays both settlement steps to the same state and history.
    let before = settled_state(&mut c);
    server.terminate();
    let server = start(&options(dir.path()));
    let mut c = server.client();
    assert_eq!(settled_state(&mut c), before);
    assert_eq!(c.ok("GET", "/api/admin/settlement/history", None), history);
    // A second day settles too.
    let done = c.ok("POST", "/api/admin/settlement/execute", Some(json!({"next_trading_day": 20250106})));
    assert_eq!(done["trading_day"], 20250106);
    assert_eq!(c.ok("GET", "/api/settlement/A", None).as_array().unwrap().len(), 2);
    zero_sum_state(&mut c);
}

#[test]
fn a_crash_between_two_shards_settlements_is_finished_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    // Three seconds between shard 0's and shard 1's settlement step.
    opts.env = vec![("QAEXCHANGE_SETTLE_PAUSE_MS".into(), "3000".into())];
    let mut server = start(&opts);
    let mut c = server.client();
    trade_day_one(&mut c);
    let addr = server.addr;
    let settling = std::thread::spawn(move || {
        let mut admin = Client::connect(addr);
        admin.set_read_timeout(Duration::from_secs(30));
        admin.send("POST", "/api/admin/settlement/execute", None).unwrap();
        admin.read_response().map(|r| r.status)
    });
    // Trading is held while it runs.
    std::thread::sleep(Duration::from_millis(300));
    let held = order("A", "late", "SR501", "BUY", "OPEN", 5000.0, 1, "GFD");
    assert_eq!(c.refused("POST", "/api/order/submit", Some(held), 409), 9016);
    // Shard 0 (A's) has settled once A has a statement; kill before shard 1 settles.
    let began = Instant::now();
    while c.ok("GET", "/api/settlement/A", None).as_array().unwrap().is_empty() {
        assert!(began.elapsed() < Duration::from_secs(10), "shard 0 never settled");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(c.ok("GET", "/api/settlement/B", None).as_array().unwrap().is_empty(), "shard 1 settled too early");
    server.kill9();
    assert!(settling.join().unwrap().is_err(), "the execute call saw the crash");

    opts.env.clear();
    let server = start(&opts);
    assert!(server.stderr().contains("finishing the settlement of trading day 20250102"), "{}", server.stderr());
    let mut c = server.client();
    let state = zero_sum_state(&mut c);
    assert_eq!(state["trading_day"], 20250103);
    // Both shards settled the same cut: statements on both, both instruments rolled. No
    // settlement price was set, so SR501 settled at its last trade (5010): no position profit.
    assert_eq!(fixed4(&statement_of(&mut c, "B")["account"]["balance"]), yuan(1_000_000 - 8));
    assert_eq!(fixed4(&statement_of(&mut c, "A")["account"]["balance"]), yuan(1_000_000 - 8));
    assert_eq!(c.ok("GET", "/api/market/tick/cu2501", None)["pre_settlement"], 70000.0);
    assert_eq!(c.ok("GET", "/api/market/tick/SR501", None)["pre_settlement"], 5010.0);
    // Trading goes on, on the new day.
    c.ok("POST", "/api/order/submit", Some(order("A", "next", "SR501", "BUY", "OPEN", 5000.0, 1, "GFD")));
}

#[test]
fn forced_liquidation_after_settlement_and_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&options(dir.path()));
    let mut c = server.client();
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 20_000.0})));
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "B", "init_cash": 1_000_000.0})));
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "C", "init_cash": 1_000_000.0})));
    // A buys 3 SR501 from B at 5000: margin 15,000 of A's 20,000.
    c.ok("POST", "/api/order/submit", Some(order("B", "b1", "SR501", "SELL", "OPEN", 5000.0, 3, "GFD")));
    c.ok("POST", "/api/order/submit", Some(order("A", "a1", "SR501", "BUY", "OPEN", 5000.0, 3, "GFD")));
    // C quotes both sides inside the next day's band; B has a resting order of its own.
    c.ok("POST", "/api/order/submit", Some(order("C", "c-bid", "SR501", "BUY", "OPEN", 4600.0, 5, "GTC")));
    c.ok("POST", "/api/order/submit", Some(order("C", "c-ask", "SR501", "SELL", "OPEN", 4700.0, 3, "GTC")));
    c.ok("POST", "/api/order/submit", Some(order("B", "b-rest", "SR501", "BUY", "OPEN", 4510.0, 1, "GTC")));
    // Settled at 4550, A loses (4550 - 5000) * 10 * 3 = 13,500 of 19,991: risk ratio above 100 %.
    c.ok("POST", "/api/admin/settlement/set-price", Some(json!({"instrument_id": "SR501", "price": 4550.0})));
    let done = c.ok("POST", "/api/admin/settlement/execute", None);
    let liquidated = done["force_liquidated"].as_array().unwrap();
    assert_eq!(liquidated.len(), 1, "{done}");
    assert_eq!(liquidated[0]["account_id"], "A");
    // A's long went at market into C's bid at 4600: (4600 - 4550) * 10 * 3 = 1,500 realised.
    let positions = c.ok("GET", "/api/position/A", None);
    assert!(positions.as_array().unwrap().iter().all(|p| p["volume_long"] == 0), "{positions}");
    let a = c.ok("GET", "/api/account/A", None);
    assert_eq!(fixed4(&a["close_profit"]), yuan(1_500));

    // By hand: B's resting order is cancelled and its short bought back from C's ask at 4700.
    let result = c.ok("POST", "/api/admin/account/B/force-liquidate", None);
    assert_eq!(result["cancelled"].as_array().unwrap().len(), 1, "{result}");
    assert_eq!(order_by_client(&mut c, "B", "b-rest")["status"], "FINISHED");
    let positions = c.ok("GET", "/api/position/B", None);
    assert!(positions.as_array().unwrap().iter().all(|p| p["volume_short"] == 0), "{positions}");
    assert_eq!(fixed4(&c.ok("GET", "/api/account/B", None)["close_profit"]), yuan(-4_500));
    // Nothing left to liquidate; unknown accounts.
    assert_eq!(c.refused("POST", "/api/admin/account/B/force-liquidate", None, 400), 4003);
    assert_eq!(c.refused("POST", "/api/admin/account/nobody/force-liquidate", None, 404), 1001);
    zero_sum_state(&mut c);
}
