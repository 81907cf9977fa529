//! A whole trading day through the real server with auth on (2 shards, storage in a temp dir),
//! the way a venue runs one: the operator logs in as admin; two traders register, log in and
//! open accounts; they deposit and trade, one over REST and one over the DIFF WebSocket (as
//! tqsdk does); the operator suspends and resumes an instrument; settles the day; and on the
//! next day the traders close yesterday's positions at yesterday's settlement price.
//! Invariants are checked before and after the settlement.

mod server_support;

use serde_json::{json, Value};
use server_support::diff::{connect, login as diff_login, notifies, peek_until, recv, send};
use server_support::{fixed4, login_client, start, yuan, zero_sum_state, Options};

const ADMIN: &str = "admin-pw-Day";

fn rest_order(account: &str, id: &str, direction: &str, offset: &str, price: f64, volume: i64) -> Value {
    json!({"account_id": account, "client_order_id": id, "instrument_id": "SR501", "direction": direction,
           "offset": offset, "limit_price": price, "volume": volume})
}

fn diff_order(account: &str, id: &str, direction: &str, offset: &str, price: f64, volume: i64) -> Value {
    json!({"aid": "insert_order", "user_id": account, "order_id": id, "exchange_id": "CZCE",
           "instrument_id": "SR501", "direction": direction, "offset": offset, "volume": volume,
           "price_type": "LIMIT", "limit_price": price, "time_condition": "GFD", "volume_condition": "ANY"})
}

#[test]
fn a_trading_day_from_registration_to_the_next_day() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exchange.toml");
    std::fs::write(&config, format!("[auth]\nadmin_password = \"{ADMIN}\"\n")).unwrap();
    let mut opts = Options::new(Some(&dir.path().join("data")));
    opts.auth = true;
    opts.config = Some(config);
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    let server = start(&opts);
    let mut admin = login_client(&server, "admin", ADMIN);

    // Two traders register, log in, open an account each (with a DIFF password) and deposit.
    let mut anon = server.client();
    for user in ["wang", "li"] {
        anon.ok("POST", "/api/auth/register", Some(json!({"username": user, "password": format!("{user}-pw")})));
    }
    let mut wang = login_client(&server, "wang", "wang-pw");
    let mut li = login_client(&server, "li", "li-pw");
    wang.ok("POST", "/api/user/wang/account/create", Some(json!({"account_id": "wang-1", "password": "wang-diff"})));
    li.ok("POST", "/api/user/li/account/create", Some(json!({"account_id": "li-1", "password": "li-diff"})));
    wang.ok("POST", "/api/account/deposit", Some(json!({"account_id": "wang-1", "amount": 500_000.0})));
    li.ok("POST", "/api/account/deposit", Some(json!({"account_id": "li-1", "amount": 500_000.0})));

    // li trades over DIFF, as tqsdk does: login with the account and its password.
    let mut ws = connect(&server);
    assert_eq!(recv(&mut ws)["aid"], "rtn_brokers");
    let mut tree = diff_login(&mut ws, "li-1", "li-diff");
    assert!(tree["trade"]["li-1"]["accounts"]["CNY"]["balance"].as_f64() == Some(500_000.0), "{tree}");
    // wang rests a sell over REST; li buys it over DIFF: 4 lots at 5010.
    wang.ok("POST", "/api/order/submit", Some(rest_order("wang-1", "w1", "SELL", "OPEN", 5010.0, 4)));
    send(&mut ws, diff_order("li-1", "l1", "BUY", "OPEN", 5010.0, 4));
    peek_until(&mut ws, &mut tree, |t| t["trade"]["li-1"]["orders"]["l1"]["status"] == "FINISHED");
    let position = &tree["trade"]["li-1"]["positions"]["CZCE.SR501"];
    assert_eq!(position["volume_long_today"], 4, "{tree}");
    // What li sees over DIFF is what REST says.
    let rest = li.ok("GET", "/api/account/li-1", None);
    let diff = &tree["trade"]["li-1"]["accounts"]["CNY"];
    assert_eq!(rest["balance"].as_f64(), diff["balance"].as_f64());
    zero_sum_state(&mut admin);

    // The operator suspends SR501: orders over REST and DIFF are refused; then resumes it.
    admin.ok("POST", "/api/admin/instrument/SR501/suspend", None);
    assert_eq!(
        wang.refused("POST", "/api/order/submit", Some(rest_order("wang-1", "w2", "SELL", "OPEN", 5010.0, 1)), 400),
        2002
    );
    send(&mut ws, diff_order("li-1", "l2", "BUY", "OPEN", 5010.0, 1));
    peek_until(&mut ws, &mut tree, |t| notifies(t).iter().any(|(_, _, text)| text.contains("2002")));
    admin.ok("POST", "/api/admin/instrument/SR501/resume", None);

    // End of day: settlement price 5020, settle. li is long 4 from 5010: +400; wang short: -400.
    admin.ok("POST", "/api/admin/settlement/set-price", Some(json!({"instrument_id": "SR501", "price": 5020.0})));
    let done = admin.ok("POST", "/api/admin/settlement/execute", None);
    assert_eq!(done["trading_day"], 20250103);
    let li_statement = li.ok("GET", "/api/settlement/li-1", None)[0].clone();
    assert_eq!(fixed4(&li_statement["account"]["position_profit"]), yuan(400));
    assert_eq!(fixed4(&li_statement["account"]["commission"]), yuan(12));
    let wang_statement = wang.ok("GET", "/api/settlement/wang-1", None)[0].clone();
    assert_eq!(fixed4(&wang_statement["account"]["position_profit"]), yuan(-400));
    // li's DIFF session gets the statement as a SETTLEMENT notify.
    peek_until(&mut ws, &mut tree, |t| {
        notifies(t).iter().any(|(_, _, text)| text.contains("Settlement statement, trading day 20250102, account li-1"))
    });
    let kinds: Vec<&Value> = tree["notify"].as_object().unwrap().values().map(|n| &n["type"]).collect();
    assert!(kinds.contains(&&json!("SETTLEMENT")), "{tree}");
    // Neither sees the other's statement.
    assert_eq!(wang.refused("GET", "/api/settlement/li-1", None, 404), 1001);
    zero_sum_state(&mut admin);

    // The next day: li sells 4 CLOSE over DIFF (CZCE: yesterday's first), wang buys them back
    // over REST at 5030. Realised at yesterday's settlement: li +400, wang -400.
    wang.ok("POST", "/api/order/submit", Some(rest_order("wang-1", "w3", "BUY", "CLOSE", 5030.0, 4)));
    send(&mut ws, diff_order("li-1", "l3", "SELL", "CLOSE", 5030.0, 4));
    peek_until(&mut ws, &mut tree, |t| t["trade"]["li-1"]["orders"]["l3"]["status"] == "FINISHED");
    let li_account = li.ok("GET", "/api/account/li-1", None);
    assert_eq!(fixed4(&li_account["close_profit"]), yuan((5030 - 5020) * 10 * 4));
    assert_eq!(fixed4(&li_account["pre_balance"]), yuan(500_000 + 400 - 12));
    let wang_account = wang.ok("GET", "/api/account/wang-1", None);
    assert_eq!(fixed4(&wang_account["close_profit"]), yuan(-(5030 - 5020) * 10 * 4));
    let positions = li.ok("GET", "/api/position/li-1", None);
    assert!(positions.as_array().unwrap().iter().all(|p| p["volume_long"] == 0), "{positions}");
    let state = zero_sum_state(&mut admin);
    assert_eq!(state["trading_day"], 20250103);
}
