//! Instrument status through the real server (2 shards, storage in a temp dir): suspend,
//! resume, close and delist reach every shard (orders from accounts on either shard are refused
//! while the instrument is not trading, cancels still run), are durable across a restart, and
//! delisting is final. Listings and updates out of range (a band no book can hold, values that
//! overflow money) are refused with nothing changed; a listing during a settlement is refused
//! before any shard lists it.

mod server_support;

use serde_json::{json, Value};
use server_support::{settled_state, start, Client, Options};
use std::time::{Duration, Instant};

fn options(dir: &std::path::Path) -> Options {
    let mut opts = Options::new(Some(dir));
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    opts
}

fn order(account: &str, id: &str, direction: &str, price: f64) -> Value {
    json!({"account_id": account, "client_order_id": id, "instrument_id": "cu2501", "direction": direction,
           "offset": "OPEN", "limit_price": price, "volume": 1, "time_condition": "GTC"})
}

fn status_of(c: &mut Client, id: &str) -> String {
    let all = c.ok("GET", "/api/market/instruments", None);
    all.as_array().unwrap().iter().find(|i| i["instrument_id"] == id).unwrap()["status"].as_str().unwrap().to_string()
}

#[test]
fn suspend_resume_close_and_delist_reach_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&options(dir.path()));
    let mut c = server.client();
    // A lives on shard 0, B on shard 1 with cu2501.
    for account in ["A", "B"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": account, "init_cash": 1_000_000.0})));
    }
    c.ok("POST", "/api/order/submit", Some(order("B", "b-rest", "SELL", 70000.0)));
    c.ok("POST", "/api/order/submit", Some(order("B", "b-other", "SELL", 70100.0)));

    let suspended = c.ok("POST", "/api/admin/instrument/SHFE.cu2501/suspend", None);
    assert_eq!(suspended["status"], "suspended");
    // Every shard answers instrument lists the same way; both accounts' orders are refused.
    for _ in 0..6 {
        assert_eq!(status_of(&mut server.client(), "cu2501"), "suspended");
    }
    assert_eq!(c.refused("POST", "/api/order/submit", Some(order("A", "a1", "BUY", 70000.0)), 400), 2002);
    assert_eq!(c.refused("POST", "/api/order/submit", Some(order("B", "b1", "BUY", 69000.0)), 400), 2002);
    // Cancels still run while suspended.
    let cancelled = c.ok("POST", "/api/order/cancel", Some(json!({"account_id": "B", "client_order_id": "b-other"})));
    assert_eq!(cancelled["order"]["status"], "FINISHED");
    // SR501 is untouched.
    assert_eq!(status_of(&mut c, "SR501"), "trading");

    assert_eq!(c.ok("POST", "/api/admin/instrument/cu2501/resume", None)["status"], "trading");
    let taken = c.ok("POST", "/api/order/submit", Some(order("A", "a2", "BUY", 70000.0)));
    assert_eq!(taken["trades"].as_array().unwrap().len(), 1, "{taken}");

    assert_eq!(c.ok("POST", "/api/admin/instrument/cu2501/close", None)["status"], "closed");
    assert_eq!(c.refused("POST", "/api/order/submit", Some(order("A", "a3", "BUY", 70000.0)), 400), 2002);
    c.ok("POST", "/api/admin/instrument/cu2501/delist", None);
    // Delisting is final; unknown instruments and wrong methods are refused.
    assert_eq!(c.refused("POST", "/api/admin/instrument/cu2501/resume", None, 400), 2002);
    assert_eq!(c.refused("POST", "/api/admin/instrument/XX9999/suspend", None, 404), 2001);
    assert_eq!(c.refused("GET", "/api/admin/instrument/cu2501/suspend", None, 405), 9007);
    assert_eq!(settled_state(&mut c)["trading_day"], 20250102);

    // Durable: a restart keeps every shard's view.
    server.terminate();
    let server = start(&options(dir.path()));
    let mut c = server.client();
    for _ in 0..6 {
        assert_eq!(status_of(&mut server.client(), "cu2501"), "delisted");
    }
    assert_eq!(c.refused("POST", "/api/order/submit", Some(order("A", "a4", "BUY", 70000.0)), 400), 2002);
    settled_state(&mut c);
}

#[test]
fn risk_parameters_change_on_every_shard_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&options(dir.path()));
    let mut c = server.client();
    for account in ["A", "B"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": account, "init_cash": 1_000_000.0})));
    }
    // B (shard 1) is long 1 cu2501 at 70000 from A: margin 10 % of 350,000 = 35,000.
    c.ok("POST", "/api/order/submit", Some(order("A", "a1", "SELL", 70000.0)));
    c.ok("POST", "/api/order/submit", Some(order("B", "b1", "BUY", 70000.0)));
    let margin = |c: &mut Client, account: &str| {
        server_support::fixed4(&c.ok("GET", &format!("/api/account/{account}"), None)["margin"])
    };
    assert_eq!(margin(&mut c, "B"), 35_000 * 10_000);

    let body = json!({"margin_rate_long": 0.2, "max_order_volume": 2,
                      "commission": {"open_per_lot": 5.0, "close_per_lot": 5.0, "close_today_per_lot": 8.0}});
    let updated = c.ok("POST", "/api/admin/instrument/cu2501/update", Some(body));
    assert_eq!((updated["margin_rate_long"].as_f64(), updated["max_order_volume"].as_i64()), (Some(0.2), Some(2)));
    // Positions are margined at the new rate at once; every shard refuses orders above 2 lots.
    assert_eq!(margin(&mut c, "B"), 70_000 * 10_000);
    let big = |account: &str| {
        json!({"account_id": account, "client_order_id": "big", "instrument_id": "cu2501",
                                     "direction": "BUY", "offset": "OPEN", "limit_price": 69000.0, "volume": 3})
    };
    assert_eq!(c.refused("POST", "/api/order/submit", Some(big("A")), 400), 2003);
    assert_eq!(c.refused("POST", "/api/order/submit", Some(big("B")), 400), 2003);
    // Bad updates change nothing.
    for bad in [json!({}), json!({"margin_rate_long": 1.5}), json!({"max_order_volume": 0}), json!({"tick": 1})] {
        assert_eq!(c.refused("POST", "/api/admin/instrument/cu2501/update", Some(bad), 400), 9005);
    }
    let before = settled_state(&mut c);
    server.terminate();
    let server = start(&options(dir.path()));
    let mut c = server.client();
    assert_eq!(settled_state(&mut c), before);
    assert_eq!(margin(&mut c, "B"), 70_000 * 10_000);
    assert_eq!(c.refused("POST", "/api/order/submit", Some(big("A")), 400), 2003);
}

#[test]
fn pre_open_auction_trades_what_crosses_at_one_price_at_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&options(dir.path()));
    let mut c = server.client();
    for account in ["A", "B", "C"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": account, "init_cash": 1_000_000.0})));
    }
    let sr = |account: &str, id: &str, direction: &str, price: f64, volume: i64, tc: &str| {
        json!({"account_id": account, "client_order_id": id, "instrument_id": "SR501", "direction": direction,
               "offset": "OPEN", "limit_price": price, "volume": volume, "time_condition": tc})
    };
    assert_eq!(c.ok("POST", "/api/admin/instrument/SR501/pre-open", None)["status"], "pre_open");
    // Orders cross and rest: nothing trades before the open.
    let a1 = c.ok("POST", "/api/order/submit", Some(sr("A", "a1", "BUY", 5010.0, 2, "GFD")));
    assert_eq!(a1["order"]["status"], "ALIVE");
    c.ok("POST", "/api/order/submit", Some(sr("B", "b1", "SELL", 5000.0, 3, "GTC")));
    c.ok("POST", "/api/order/submit", Some(sr("C", "c1", "BUY", 4990.0, 1, "GFD")));
    let book = c.ok("GET", "/api/market/orderbook/SR501", None);
    assert_eq!((book["bids"][0]["price"].as_f64(), book["asks"][0]["price"].as_f64()), (Some(5010.0), Some(5000.0)));
    assert_eq!(settled_state(&mut c)["instruments"][0]["open_interest"], 0);
    // Only limit GFD/GTC orders; no IOC, no market; no crossing one's own order; no re-pricing.
    assert_eq!(c.refused("POST", "/api/order/submit", Some(sr("C", "c2", "BUY", 5010.0, 1, "IOC")), 400), 2016);
    let market = json!({"account_id": "C", "client_order_id": "c3", "instrument_id": "SR501", "direction": "BUY",
                        "offset": "OPEN", "price_type": "ANY", "volume": 1, "time_condition": "IOC"});
    assert_eq!(c.refused("POST", "/api/order/submit", Some(market), 400), 2016);
    assert_eq!(c.refused("POST", "/api/order/submit", Some(sr("A", "a2", "SELL", 5000.0, 1, "GFD")), 400), 2008);
    let reprice = json!({"account_id": "C", "client_order_id": "c1", "new_price": 5020.0});
    assert_eq!(c.refused("POST", "/api/order/modify", Some(reprice), 400), 2016);

    // The open: 2 lots can trade at 5000 or 5010 (1 lot left over either way); 5000 is the
    // reference (pre-settlement), so 5000. A's bid and B's ask both fill as resting orders.
    c.ok("POST", "/api/admin/instrument/SR501/open", None);
    let state = settled_state(&mut c);
    assert_eq!(state["instruments"][0]["open_interest"], 2, "{state}");
    let trades = c.ok("GET", "/api/trades/user/A", None);
    let prices: Vec<f64> = trades.as_array().unwrap().iter().map(|t| t["price"].as_f64().unwrap()).collect();
    assert_eq!(prices, vec![5000.0], "{trades}");
    let b1 = c.ok("GET", "/api/order/user/B", None)[0].clone();
    assert_eq!((b1["status"].as_str(), b1["volume_left"].as_i64()), (Some("ALIVE"), Some(1)));
    let book = c.ok("GET", "/api/market/orderbook/SR501", None);
    assert_eq!((book["bids"][0]["price"].as_f64(), book["asks"][0]["price"].as_f64()), (Some(4990.0), Some(5000.0)));
    // Continuous trading from here: C takes B's last lot.
    let taken = c.ok("POST", "/api/order/submit", Some(sr("C", "c4", "BUY", 5000.0, 1, "GFD")));
    assert_eq!(taken["trades"].as_array().unwrap().len(), 1);
    // Replay gives the same state.
    let before = settled_state(&mut c);
    server.terminate();
    let server = start(&options(dir.path()));
    assert_eq!(settled_state(&mut server.client()), before);
}

#[test]
fn instruments_listed_at_run_time_trade_on_every_shard_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&options(dir.path()));
    let mut c = server.client();
    for account in ["A", "B"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": account, "init_cash": 1_000_000.0})));
    }
    let spec = sr509();
    let listed = c.ok("POST", "/api/admin/instrument/create", Some(spec.clone()));
    assert_eq!((listed["instrument_id"].as_str(), listed["upper_limit"].as_f64()), (Some("SR509"), Some(5610.0)));
    assert_eq!(c.refused("POST", "/api/admin/instrument/create", Some(spec.clone()), 400), 2017);
    let mut bad = spec.clone();
    bad["instrument_id"] = json!("SR510");
    bad["price_tick"] = json!(0.0);
    assert_eq!(c.refused("POST", "/api/admin/instrument/create", Some(bad), 400), 9005);
    // Every shard lists it (and tqsdk's instruments file has it); accounts on both shards trade it.
    for _ in 0..6 {
        let mut any = server.client();
        let all = any.ok("GET", "/api/market/instruments", None);
        assert!(all.as_array().unwrap().iter().any(|i| i["instrument_id"] == "SR509"));
        let shinny = any.get("/api/market/instruments/shinny");
        assert!(String::from_utf8_lossy(&shinny.body).contains("CZCE.SR509"));
    }
    let sr = |account: &str, id: &str, direction: &str| {
        json!({"account_id": account, "client_order_id": id, "instrument_id": "CZCE.SR509", "direction": direction,
               "offset": "OPEN", "limit_price": 5100.0, "volume": 2})
    };
    c.ok("POST", "/api/order/submit", Some(sr("A", "a1", "SELL")));
    let taken = c.ok("POST", "/api/order/submit", Some(sr("B", "b1", "BUY")));
    assert_eq!(taken["trades"].as_array().unwrap().len(), 1, "{taken}");
    assert_eq!(c.ok("GET", "/api/market/tick/SR509", None)["last_price"], 5100.0);
    let before = settled_state(&mut c);
    // A checkpoint carries it; SIGKILL; the restart starts from the checkpoint.
    c.ok("POST", "/admin/checkpoint", None);
    server.kill9();
    // After a restart (the instruments file does not have it: the checkpoint and WAL do).
    let server = start(&options(dir.path()));
    assert!(server.ready_field("checkpoints").is_some_and(|c| c.split(',').any(|s| s != "0")), "{}", server.ready_line);
    let mut c = server.client();
    assert_eq!(settled_state(&mut c), before);
    c.ok("POST", "/api/order/submit", Some(sr("A", "a2", "SELL")));
    assert_eq!(c.ok("POST", "/api/order/submit", Some(sr("B", "b2", "BUY")))["trades"].as_array().unwrap().len(), 1);
}

#[test]
fn position_limit_of_a_listed_instrument_refuses_opens_beyond_it_on_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&options(dir.path()));
    let mut c = server.client();
    // A lives on shard 0, B on shard 1.
    for account in ["A", "B"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": account, "init_cash": 1_000_000.0})));
    }
    let mut spec = sr509();
    spec["instrument_id"] = json!("SR511");
    spec["pre_settlement"] = json!(5000.0);
    spec["commission"] = json!({"open_per_lot": 1.0});
    spec["position_limit"] = json!(2);
    c.ok("POST", "/api/admin/instrument/create", Some(spec));
    let sr = |account: &str, id: &str, direction: &str, price: f64, volume: i64| {
        json!({"account_id": account, "client_order_id": id, "instrument_id": "SR511", "direction": direction,
               "offset": "OPEN", "limit_price": price, "volume": volume})
    };
    // A long 1 from B (short 1), and a resting bid of 1: A is at its limit of 2.
    c.ok("POST", "/api/order/submit", Some(sr("B", "b1", "SELL", 5000.0, 1)));
    c.ok("POST", "/api/order/submit", Some(sr("A", "a1", "BUY", 5000.0, 1)));
    let rested = c.ok("POST", "/api/order/submit", Some(sr("A", "a2", "BUY", 4990.0, 1)));
    assert_eq!(rested["order"]["status"], "ALIVE");
    let before = c.ok("GET", "/api/account/A", None);
    // One more lot, either side, is refused and holds nothing.
    assert_eq!(c.refused("POST", "/api/order/submit", Some(sr("A", "a3", "BUY", 4980.0, 1)), 400), 2009);
    assert_eq!(c.refused("POST", "/api/order/submit", Some(sr("A", "a3", "SELL", 5100.0, 1)), 400), 2009);
    let after = c.ok("GET", "/api/account/A", None);
    assert_eq!(after, before);
    assert_eq!(c.ok("GET", "/api/order/user/A", None).as_array().unwrap().len(), 2);
    // B, on the other shard, has 1 lot left of its own limit.
    c.ok("POST", "/api/order/submit", Some(sr("B", "b2", "SELL", 5100.0, 1)));
    assert_eq!(c.refused("POST", "/api/order/submit", Some(sr("B", "b3", "SELL", 5100.0, 1)), 400), 2009);

    // The limit is part of the listing: a restart keeps it.
    server.terminate();
    let server = start(&options(dir.path()));
    let mut c = server.client();
    assert_eq!(c.refused("POST", "/api/order/submit", Some(sr("A", "a3", "BUY", 4980.0, 1)), 400), 2009);
    c.ok("POST", "/api/order/cancel", Some(json!({"account_id": "A", "client_order_id": "a2"})));
    let within = c.ok("POST", "/api/order/submit", Some(sr("A", "a3", "BUY", 4980.0, 1)));
    assert_eq!(within["order"]["status"], "ALIVE");
}

/// A refusal's status, code and message.
fn refusal(c: &mut Client, path: &str, body: &Value) -> (u16, u64, String) {
    let r = c.request("POST", path, Some(body));
    let v = r.json();
    (r.status, v["error"]["code"].as_u64().unwrap_or(0), v["error"]["message"].as_str().unwrap_or("").to_string())
}

/// A sugar contract to list at run time: SR509, 10 per point, tick 1, band 4590..=5610.
fn sr509() -> Value {
    json!({"instrument_id": "SR509", "exchange_id": "CZCE", "product_id": "SR", "volume_multiple": 10,
           "price_tick": 1.0, "margin_rate_long": 0.1, "margin_rate_short": 0.1, "limit_rate": 0.1,
           "pre_settlement": 5100.0, "max_order_volume": 10, "commission": {"open_per_lot": 2.0}})
}

fn listed_on_every_shard(server: &server_support::ServerProcess, id: &str) -> Vec<bool> {
    (0..6)
        .map(|_| {
            let all = server.client().ok("GET", "/api/market/instruments", None);
            all.as_array().unwrap().iter().any(|i| i["instrument_id"] == id)
        })
        .collect()
}

#[test]
fn listings_and_updates_out_of_range_are_refused_and_the_server_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&options(dir.path()));
    let mut c = server.client();
    let before = settled_state(&mut c);
    // 1e8 +/- 100 % on a 0.0001 tick: a book of 2e12 price levels (the process used to abort).
    let big = json!({"instrument_id": "BIG", "exchange_id": "SHFE", "product_id": "x", "volume_multiple": 1,
                     "price_tick": 0.0001, "margin_rate_long": 0.1, "margin_rate_short": 0.1, "commission": {},
                     "limit_rate": 1.0, "pre_settlement": 100000000.0, "max_order_volume": 1});
    let (status, code, message) = refusal(&mut c, "/api/admin/instrument/create", &big);
    assert_eq!((status, code), (400, 9005), "{message}");
    assert!(message.contains("instrument BIG: the price band") && message.contains("at most 1000000"), "{message}");
    // 5e14 +/- 90 % overflowed the band's arithmetic; a 1e12-lot order or 1e15 a lot overflowed money.
    let mut bad = Vec::new();
    for (field, value) in [
        ("pre_settlement", json!(5e14)),
        ("max_order_volume", json!(1_000_000_000_000i64)),
        ("volume_multiple", json!(10_000_000)),
        ("commission", json!({"open_per_lot": 1e15})),
        ("commission", json!({"close_today_rate": 0.5})),
    ] {
        let mut spec = sr509();
        spec[field] = value;
        if field == "pre_settlement" {
            spec["limit_rate"] = json!(0.9);
        }
        bad.push((format!("create {field}"), "/api/admin/instrument/create", spec));
    }
    for body in [
        json!({"max_order_volume": 1_000_000_000_000i64}),
        json!({"commission": {"open_per_lot": 1e15}}),
        json!({"commission": {"open_rate": 0.02}}),
    ] {
        bad.push((format!("update {body}"), "/api/admin/instrument/cu2501/update", body));
    }
    for (what, path, body) in &bad {
        let (status, code, message) = refusal(&mut c, path, body);
        assert_eq!((status, code), (400, 9005), "{what}: {message}");
        assert!(message.starts_with("request body is not valid for this endpoint: "), "{what}: {message}");
    }
    // Nothing changed, on any shard; the server serves on and lists a sane instrument.
    assert_eq!(settled_state(&mut c), before);
    assert_eq!(listed_on_every_shard(&server, "BIG"), vec![false; 6]);
    assert_eq!(c.ok("GET", "/health", None)["status"], "ok");
    c.ok("POST", "/api/admin/instrument/create", Some(sr509()));
    assert_eq!(listed_on_every_shard(&server, "SR509"), vec![true; 6]);
    let cu = c.ok("GET", "/api/market/instruments", None);
    let cu = cu.as_array().unwrap().iter().find(|i| i["instrument_id"] == "cu2501").unwrap().clone();
    assert_eq!(cu["max_order_volume"], 100);
}

#[test]
fn a_listing_during_a_settlement_is_refused_before_any_shard_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    // Three seconds between halting shard 0 and halting shard 1.
    opts.env = vec![("QAEXCHANGE_SETTLE_HALT_PAUSE_MS".into(), "3000".into())];
    let server = start(&opts);
    let mut c = server.client();
    // A lives on shard 0.
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 1_000_000.0})));
    // The settlement runs on shard 0 and the listing asks shard 1: only a gate the shards share
    // keeps them apart.
    let settle = |mut admin: Client| {
        std::thread::spawn(move || {
            admin.set_read_timeout(Duration::from_secs(30));
            let r = admin.request("POST", "/api/admin/settlement/execute", None);
            (r.status, r.json())
        })
    };
    let settling = settle(server.client_on_shard(0));
    // Wait until shard 0 is halted (a cancel for A is answered 409 instead of "no such order").
    let began = Instant::now();
    let probe = json!({"account_id": "A", "client_order_id": "none"});
    while c.request("POST", "/api/order/cancel", Some(&probe)).status != 409 {
        assert!(began.elapsed() < Duration::from_secs(10), "shard 0 never halted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Shard 1 still trades; an instrument it owns is refused all the same, before it lists it.
    let mut on_shard_1 = sr509();
    on_shard_1["shard"] = json!(1);
    let (status, code, message) = refusal(&mut server.client_on_shard(1), "/api/admin/instrument/create", &on_shard_1);
    assert_eq!((status, code), (409, 9016), "{message}");
    let (status, settled) = settling.join().unwrap();
    assert_eq!(status, 200, "{settled}");
    assert_eq!(listed_on_every_shard(&server, "SR509"), vec![false; 6]);
    // Afterwards it is listed on every shard, and the next settlement covers it.
    c.ok("POST", "/api/admin/instrument/create", Some(on_shard_1));
    assert_eq!(listed_on_every_shard(&server, "SR509"), vec![true; 6]);
    let (status, settled) = settle(server.client_on_shard(0)).join().unwrap();
    assert_eq!(status, 200, "{settled}");
    let ids: Vec<&str> =
        settled["data"]["instruments"].as_array().unwrap().iter().filter_map(|i| i["instrument_id"].as_str()).collect();
    assert_eq!(ids, ["SR501", "cu2501", "SR509"]);
}
