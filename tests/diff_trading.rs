//! Login and trading over DIFF against the real server (2 shards; account A and SR501 live on
//! shard 0, account B and cu2501 on shard 1, sessions land on either), with a plain WebSocket
//! client: wrong passwords refused with no data, the login sequence, an order that crosses
//! another account's and fills (order, trade, position and account in one rtn_data, equal to
//! the REST view), a resting order cancelled, refusals with the risk code, orders for other
//! users refused, transfers, a second session's snapshot equal to the first one's tree, and
//! passwords surviving a restart.

mod server_support;

use serde_json::{json, Value};
use server_support::diff::{connect, login, notifies, peek, peek_until, recv, send, Ws};
use server_support::{start, Options};

fn options(dir: &std::path::Path) -> Options {
    let mut opts = Options::new(Some(dir));
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    opts
}

fn insert(order_id: &str, user: &str, direction: &str, price: f64, volume: i64) -> Value {
    json!({"aid": "insert_order", "user_id": user, "order_id": order_id, "exchange_id": "SHFE",
           "instrument_id": "cu2501", "direction": direction, "offset": "OPEN", "volume": volume,
           "price_type": "LIMIT", "limit_price": price, "time_condition": "GFD", "volume_condition": "ANY"})
}

/// A fresh session, greeted.
fn session(server: &server_support::ServerProcess) -> Ws {
    let mut ws = connect(server);
    assert_eq!(recv(&mut ws)["aid"], "rtn_brokers");
    ws
}

fn codes(tree: &Value) -> Vec<(String, i64)> {
    let mut codes: Vec<(String, i64)> = notifies(tree).into_iter().map(|(level, code, _)| (level, code)).collect();
    codes.sort();
    codes
}

/// The fields both the REST account and the DIFF account have, which must agree.
const ACCOUNT_FIELDS: [&str; 9] = [
    "balance",
    "available",
    "margin",
    "frozen_margin",
    "commission",
    "static_balance",
    "deposit",
    "position_profit",
    "close_profit",
];

#[test]
fn login_orders_fills_cancels_and_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&options(dir.path()));
    let mut c = server.client();
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 1_000_000, "password": "pa"})));
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "B", "init_cash": 1_000_000, "password": "pb"})));
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "C", "init_cash": 1_000})));
    // An empty or oversized password is refused, and nothing is opened.
    c.refused("POST", "/api/account/open", Some(json!({"account_id": "D", "password": ""})), 400);
    c.refused("POST", "/api/account/open", Some(json!({"account_id": "D", "password": "x".repeat(129)})), 400);
    c.refused("GET", "/api/account/D", None, 404);

    // Wrong password, an account without one, an unknown user: the same ERROR, no trade tree.
    let mut ws = session(&server);
    for (user, password) in [("A", "wrong"), ("C", "x"), ("nobody", "pa"), ("A", "")] {
        let tree = login(&mut ws, user, password);
        assert_eq!(codes(&tree), vec![("ERROR".into(), 9106)], "{user}: {tree}");
        assert!(tree.get("trade").is_none(), "{tree}");
    }
    // Trading before a login is refused.
    send(&mut ws, insert("o0", "A", "BUY", 70100.0, 1));
    assert_eq!(codes(&peek(&mut ws)), vec![("ERROR".into(), 9107)]);

    // The login sequence: INFO notify, session, the snapshot with trade_more_data false.
    let mut tree = login(&mut ws, "A", "pa");
    assert_eq!(codes(&tree), vec![("INFO".into(), 0)], "{tree}");
    let me = &tree["trade"]["A"];
    assert_eq!(me["session"]["user_id"], "A", "{tree}");
    assert!(me["session"]["trading_day"].as_str().is_some_and(|d| d.len() == 8), "{tree}");
    assert_eq!(me["trade_more_data"], false);
    assert_eq!(me["accounts"]["CNY"]["balance"], 1_000_000.0, "{tree}");
    assert_eq!(me["accounts"]["CNY"]["currency"], "CNY");
    assert_eq!(me["orders"], json!({}));
    let again = login(&mut ws, "A", "pa");
    assert_eq!(codes(&again), vec![("ERROR".into(), 9107)], "a second login is refused: {again}");

    // B rests a SELL on cu2501 (shard 1); A buys 1 over DIFF and fills.
    let sell = json!({"account_id": "B", "instrument_id": "cu2501", "direction": "SELL", "offset": "OPEN",
                      "limit_price": 70100.0, "volume": 2});
    c.ok("POST", "/api/order/submit", Some(sell));
    send(&mut ws, insert("o1", "A", "BUY", 70100.0, 1));
    let messages = peek_until(&mut ws, &mut tree, |t| t["trade"]["A"]["orders"]["o1"]["status"] == "FINISHED");
    // One fill is one rtn_data: the order, the trade, the position and the account together.
    let fill = messages.iter().find(|m| m["trade"]["A"].get("trades").is_some()).expect("a trade was pushed");
    let fill = &fill["trade"]["A"];
    assert_eq!(fill["orders"]["o1"]["status"], "FINISHED", "{fill}");
    assert!(fill["positions"].get("SHFE.cu2501").is_some(), "{fill}");
    assert!(fill["accounts"].get("CNY").is_some(), "{fill}");
    let me = &tree["trade"]["A"];
    let order = &me["orders"]["o1"];
    assert_eq!((order["volume_orign"].as_i64(), order["volume_left"].as_i64()), (Some(1), Some(0)), "{order}");
    assert!(order["exchange_order_id"].as_str().is_some_and(|id| !id.is_empty()), "{order}");
    assert_eq!((order["exchange_id"].as_str(), order["instrument_id"].as_str()), (Some("SHFE"), Some("cu2501")));
    let trades: Vec<&Value> = me["trades"].as_object().unwrap().values().collect();
    assert_eq!(trades.len(), 1, "{me}");
    assert_eq!(trades[0]["order_id"], "o1", "tqsdk matches fills by the client's order id");
    assert_eq!((trades[0]["price"].as_f64(), trades[0]["volume"].as_i64()), (Some(70100.0), Some(1)));
    assert_eq!(trades[0]["direction"], "BUY");
    let position = &me["positions"]["SHFE.cu2501"];
    assert_eq!(position["pos_long_today"], 1, "{position}");
    assert_eq!(position["volume_long"], 1);
    // The DIFF view equals the REST view.
    let rest_account = c.ok("GET", "/api/account/A", None);
    for field in ACCOUNT_FIELDS {
        assert_eq!(me["accounts"]["CNY"][field], rest_account[field], "{field}: {me} vs {rest_account}");
    }
    assert_eq!(rest_account["commission"], 2.0);
    let rest_positions = c.ok("GET", "/api/position/A", None);
    assert_eq!(position["volume_long_today"], rest_positions[0]["volume_long_today"]);
    assert_eq!(position["open_cost_long"], rest_positions[0]["open_cost_long"]);

    // A resting order, then its cancel.
    send(&mut ws, insert("o2", "A", "BUY", 69000.0, 1));
    peek_until(&mut ws, &mut tree, |t| t["trade"]["A"]["orders"]["o2"]["status"] == "ALIVE");
    let frozen = tree["trade"]["A"]["accounts"]["CNY"]["frozen_margin"].as_f64().unwrap();
    assert!(frozen > 0.0, "the resting order holds margin: {tree}");
    send(&mut ws, json!({"aid": "cancel_order", "user_id": "A", "order_id": "o2"}));
    peek_until(&mut ws, &mut tree, |t| t["trade"]["A"]["orders"]["o2"]["status"] == "FINISHED");
    let o2 = &tree["trade"]["A"]["orders"]["o2"];
    assert_eq!(o2["volume_left"], 1, "{o2}");
    assert!(o2["last_msg"].as_str().is_some_and(|m| m.contains("cancel")), "{o2}");
    assert_eq!(tree["trade"]["A"]["accounts"]["CNY"]["frozen_margin"], 0.0);

    // A refused order: FINISHED, no exchange id, the risk code in the notify and last_msg.
    let rest_refusal = c.refused(
        "POST",
        "/api/order/submit",
        Some(json!({"account_id": "A", "instrument_id": "cu2501", "direction": "BUY", "offset": "OPEN",
                    "limit_price": 70100.0, "volume": 1000})),
        400,
    );
    send(&mut ws, insert("o3", "A", "BUY", 70100.0, 1000));
    let got = peek_until(&mut ws, &mut tree, |t| t["trade"]["A"]["orders"]["o3"]["status"] == "FINISHED");
    let refused = &tree["trade"]["A"]["orders"]["o3"];
    assert_eq!(refused["exchange_order_id"], "", "{refused}");
    assert!(refused["last_msg"].as_str().unwrap().contains(&rest_refusal.to_string()), "{refused}");
    let notified: Vec<i64> = got.iter().flat_map(notifies).map(|n| n.1).collect();
    assert!(notified.contains(&(rest_refusal as i64)), "{notified:?}");

    // Requests for another user are refused and change nothing; so is cancelling an unknown order.
    send(&mut ws, insert("x1", "B", "BUY", 70100.0, 1));
    send(&mut ws, json!({"aid": "cancel_order", "user_id": "B", "order_id": "anything"}));
    let tree_b = peek(&mut ws);
    assert_eq!(codes(&tree_b), vec![("ERROR".into(), 9108), ("ERROR".into(), 9108)], "{tree_b}");
    assert_eq!(c.ok("GET", "/api/order/user/B", None).as_array().unwrap().len(), 1);
    send(&mut ws, json!({"aid": "cancel_order", "user_id": "A", "order_id": "no-such-order"}));
    let unknown = peek(&mut ws);
    assert_eq!(notifies(&unknown)[0].0, "ERROR", "{unknown}");

    // Transfers: with the account's password, and refused without it.
    let transfer = |password: &str, amount: f64| {
        json!({"aid": "req_transfer", "future_account": "A", "future_password": password, "bank_id": "1",
               "bank_password": "", "currency": "CNY", "amount": amount})
    };
    let before = c.ok("GET", "/api/account/A", None)["balance"].as_f64().unwrap();
    send(&mut ws, transfer("pa", 1000.0));
    peek_until(&mut ws, &mut tree, |t| t["trade"]["A"]["accounts"]["CNY"]["balance"].as_f64() == Some(before + 1000.0));
    send(&mut ws, transfer("wrong", 5.0));
    send(&mut ws, transfer("pa", -500.0));
    peek_until(&mut ws, &mut tree, |t| t["trade"]["A"]["accounts"]["CNY"]["balance"].as_f64() == Some(before + 500.0));
    let transfers = tree["trade"]["A"]["transfers"].as_object().unwrap();
    let errors: Vec<i64> = transfers.values().map(|t| t["error_id"].as_i64().unwrap()).collect();
    assert_eq!(errors.iter().filter(|&&e| e == 0).count(), 2, "{transfers:?}");
    assert!(errors.contains(&9106), "{transfers:?}");
    assert_eq!(c.ok("GET", "/api/account/A", None)["balance"].as_f64(), Some(before + 500.0));

    // A second session's login snapshot is the tree the first one built from patches (refused
    // orders never reached the exchange: only the session that saw them keeps them).
    let mut other = session(&server);
    let snapshot = login(&mut other, "A", "pa");
    for part in ["accounts", "positions", "trades"] {
        assert_eq!(snapshot["trade"]["A"][part], tree["trade"]["A"][part], "{part}");
    }
    let accepted = |orders: &Value| -> Value {
        let kept = orders.as_object().unwrap().iter().filter(|(_, o)| o["exchange_order_id"] != "");
        Value::Object(kept.map(|(k, v)| (k.clone(), v.clone())).collect())
    };
    assert_eq!(accepted(&snapshot["trade"]["A"]["orders"]), accepted(&tree["trade"]["A"]["orders"]));
    assert_eq!(accepted(&snapshot["trade"]["A"]["orders"]).as_object().unwrap().len(), 2);

    // Both sessions see B's next fill against A on their own trees.
    send(&mut other, json!({"aid": "peek_message"}));
    send(&mut ws, insert("o4", "A", "BUY", 70100.0, 1));
    peek_until(&mut ws, &mut tree, |t| t["trade"]["A"]["orders"]["o4"]["status"] == "FINISHED");
    let mut other_tree = snapshot;
    let first = recv(&mut other);
    for patch in first["data"].as_array().unwrap() {
        qaexchange::diff::merge_patch::apply(&mut other_tree, patch);
    }
    peek_until(&mut other, &mut other_tree, |t| t["trade"]["A"]["orders"]["o4"]["status"] == "FINISHED");
    peek_until(&mut other, &mut other_tree, |t| t["trade"]["A"]["positions"] == tree["trade"]["A"]["positions"]);
    assert_eq!(other_tree["trade"]["A"]["accounts"], tree["trade"]["A"]["accounts"]);

    // Closing the whole position shows it at zero (not left at its last volume).
    let close = json!({"account_id": "B", "instrument_id": "cu2501", "direction": "BUY", "offset": "CLOSETODAY",
                       "limit_price": 70100.0, "volume": 2});
    c.ok("POST", "/api/order/submit", Some(close));
    let mut sell = insert("o5", "A", "SELL", 70100.0, 2);
    sell["offset"] = json!("CLOSETODAY");
    send(&mut ws, sell);
    peek_until(&mut ws, &mut tree, |t| t["trade"]["A"]["orders"]["o5"]["status"] == "FINISHED");
    peek_until(&mut ws, &mut tree, |t| t["trade"]["A"]["positions"]["SHFE.cu2501"]["volume_long"] == 0);
    assert_eq!(tree["trade"]["A"]["positions"]["SHFE.cu2501"]["pos_long_today"], 0, "{tree}");
    assert_eq!(c.ok("GET", "/api/position/A", None), json!([]), "REST: no open position");

    // Passwords survive a restart.
    drop((ws, other));
    let status = server.terminate();
    assert!(status.success(), "{}", server.stderr());
    let server = start(&options(dir.path()));
    let mut ws = session(&server);
    assert_eq!(codes(&login(&mut ws, "B", "pa")), vec![("ERROR".into(), 9106)]);
    let tree = login(&mut ws, "B", "pb");
    assert_eq!(codes(&tree), vec![("INFO".into(), 0)], "{tree}");
    let orders = tree["trade"]["B"]["orders"].as_object().unwrap();
    assert_eq!(orders.len(), 2, "{tree}");
    assert!(tree["trade"]["B"]["positions"].get("SHFE.cu2501").is_none(), "closed: {tree}");
}
