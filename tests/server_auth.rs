//! Users, tokens and who may do what, against the real server with auth on (2 shards, storage
//! in a temp dir): register, login, accounts bound to users, every refusal with its status and
//! code, another user's accounts and orders indistinguishable from missing ones, admin routes,
//! a restart that keeps users, bindings and tokens, and passwords nowhere in the clear.

mod server_support;

use serde_json::{json, Value};
use server_support::{login_client as login, start, Client, Options};
use std::path::Path;

const ADMIN_PASSWORD: &str = "admin-Pa55-in-config";
const ALICE_PASSWORD: &str = "alice-Pa55-secret";
const BOB_PASSWORD: &str = "bob-Pa55-secret";

fn options(dir: &Path, config: &Path) -> Options {
    let mut opts = Options::new(Some(dir));
    opts.auth = true;
    opts.config = Some(config.to_path_buf());
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    opts
}

fn write_config(dir: &Path, auth: &str) -> std::path::PathBuf {
    let path = dir.join("exchange.toml");
    std::fs::write(&path, format!("[auth]\n{auth}")).unwrap();
    path
}

fn order(account: &str, id: &str, direction: &str, price: f64) -> Value {
    json!({"account_id": account, "client_order_id": id, "instrument_id": "SR501", "direction": direction,
           "offset": "OPEN", "limit_price": price, "volume": 1})
}

/// Status, code and message of a refusal.
fn refusal(c: &mut Client, method: &str, path: &str, body: Option<Value>) -> (u16, u64, String) {
    let r = c.request(method, path, body.as_ref());
    let v = r.json();
    assert_eq!(v["success"], false, "{method} {path}: {v}");
    (r.status, v["error"]["code"].as_u64().unwrap(), v["error"]["message"].as_str().unwrap().to_string())
}

fn status_code(c: &mut Client, method: &str, path: &str, body: Option<Value>) -> (u16, u64) {
    let (status, code, _) = refusal(c, method, path, body);
    (status, code)
}

/// Every file under `dir`, read whole, must not hold `needle`.
fn assert_nowhere(dir: &Path, needle: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_nowhere(&path, needle);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle:?} in {}", path.display());
        }
    }
}

#[test]
fn users_tokens_and_who_sees_what() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &format!("admin_password = \"{ADMIN_PASSWORD}\"\n"));
    let mut server = start(&options(&data, &config));
    let mut anon = server.client();

    // Public routes need no token; everything else does.
    anon.ok("GET", "/health", None);
    anon.ok("GET", "/api/market/instruments", None);
    anon.ok("GET", "/api/market/tick/SR501", None);
    assert_eq!(status_code(&mut anon, "GET", "/api/account/x", None), (401, 9201));
    assert_eq!(status_code(&mut anon, "GET", "/admin/state", None), (401, 9201));
    let mut junk = server.client();
    junk.token = Some("not-a-token".into());
    assert_eq!(status_code(&mut junk, "GET", "/api/account/x", None), (401, 9202));

    // Register: once per name; bad bodies are 400 and register nobody.
    for (user, password) in [("alice", ALICE_PASSWORD), ("bob", BOB_PASSWORD)] {
        let made = anon.ok("POST", "/api/auth/register", Some(json!({"username": user, "password": password})));
        assert_eq!((made["user_id"].as_str(), made["admin"].as_bool()), (Some(user), Some(false)));
        assert!(!made.to_string().contains(password), "{made}");
    }
    let again = json!({"username": "alice", "password": "other"});
    assert_eq!(refusal(&mut anon, "POST", "/api/auth/register", Some(again)).0, 409);
    let again = json!({"username": "alice", "password": "other"});
    assert_eq!(refusal(&mut anon, "POST", "/api/auth/register", Some(again)).1, 9205);
    for bad in [json!({"username": "carol", "password": ""}), json!({"username": "carol"}), json!({"password": "x"})] {
        assert_eq!(refusal(&mut anon, "POST", "/api/auth/register", Some(bad)).1, 9005);
    }
    // A wrong password and an unknown user get the same answer.
    let wrong = refusal(&mut anon, "POST", "/api/auth/login", Some(json!({"username": "alice", "password": "nope"})));
    let nobody = refusal(&mut anon, "POST", "/api/auth/login", Some(json!({"username": "carol", "password": "nope"})));
    assert_eq!(wrong, nobody);
    assert_eq!((wrong.0, wrong.1), (401, 9206));

    let mut alice = login(&server, "alice", ALICE_PASSWORD);
    let mut bob = login(&server, "bob", BOB_PASSWORD);
    // A token changed in one character is refused.
    let mut forged = server.client();
    let mut token = alice.token.clone().unwrap().into_bytes();
    let last = token.len() - 1;
    token[last] = if token[last] == b'0' { b'1' } else { b'0' };
    forged.token = Some(String::from_utf8(token).unwrap());
    assert_eq!(refusal(&mut forged, "GET", "/api/user/alice/accounts", None).1, 9202);

    // Accounts belong to the user who opens them, by either path.
    let made =
        alice.ok("POST", "/api/user/alice/account/create", Some(json!({"account_id": "al-1", "init_cash": 1e6})));
    assert_eq!(made["account_id"], "al-1");
    let generated = alice.ok("POST", "/api/user/alice/account/create", None);
    let generated_id = generated["account_id"].as_str().unwrap().to_string();
    assert!(generated_id.starts_with("alice-"), "{generated_id}");
    bob.ok("POST", "/api/account/open", Some(json!({"account_id": "bo-1", "init_cash": 1e6})));
    // A user cannot open an account for someone else, nor reach another user's list.
    let theirs = json!({"account_id": "al-x", "owner": "bob"});
    assert_eq!(refusal(&mut alice, "POST", "/api/account/open", Some(theirs)).1, 9204);
    assert_eq!(status_code(&mut alice, "GET", "/api/user/bob/accounts", None), (404, 9207));
    assert_eq!(refusal(&mut alice, "POST", "/api/user/bob/account/create", Some(json!({}))).1, 9207);
    let mine: Vec<String> = alice
        .ok("GET", "/api/user/alice/accounts", None)
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap().to_string())
        .collect();
    let mut expected = vec!["al-1".to_string(), generated_id.clone()];
    expected.sort();
    assert_eq!(mine, expected);

    // Trade: bob rests a sell, alice buys it.
    let resting = bob.ok("POST", "/api/order/submit", Some(order("bo-1", "b1", "SELL", 5000.0)));
    let bob_order = resting["order"]["order_id"].as_u64().unwrap_or_else(|| resting["order_id"].as_u64().unwrap());
    let resting2 = bob.ok("POST", "/api/order/submit", Some(order("bo-1", "b2", "SELL", 5100.0)));
    let bob_live = resting2["order"]["order_id"].as_u64().unwrap_or_else(|| resting2["order_id"].as_u64().unwrap());
    alice.ok("POST", "/api/order/submit", Some(order("al-1", "a1", "BUY", 5000.0)));
    assert_eq!(alice.ok("GET", "/api/trades/user/al-1", None).as_array().unwrap().len(), 1);

    // Another user's account or order looks exactly like one that does not exist.
    let missing_account = refusal(&mut alice, "GET", "/api/account/no-such", None);
    assert_eq!(missing_account.0, 404);
    for (method, path, body) in [
        ("GET", "/api/account/bo-1".to_string(), None),
        ("GET", "/api/position/bo-1".to_string(), None),
        ("GET", "/api/order/user/bo-1".to_string(), None),
        ("GET", "/api/trades/user/bo-1".to_string(), None),
        ("GET", "/api/history/orders/bo-1".to_string(), None),
        ("GET", "/api/history/trades/bo-1".to_string(), None),
        ("POST", "/api/account/deposit".to_string(), Some(json!({"account_id": "bo-1", "amount": 1.0}))),
        ("POST", "/api/account/withdraw".to_string(), Some(json!({"account_id": "bo-1", "amount": 1.0}))),
        ("POST", "/api/order/submit".to_string(), Some(order("bo-1", "x1", "BUY", 5000.0))),
        ("POST", "/api/order/cancel".to_string(), Some(json!({"account_id": "bo-1", "order_id": bob_live}))),
    ] {
        assert_eq!(refusal(&mut alice, method, &path, body), missing_account, "{method} {path}");
    }
    let missing_order = refusal(&mut alice, "GET", "/api/order/999999998", None);
    assert_eq!(missing_order.0, 404);
    assert_eq!(refusal(&mut alice, "GET", &format!("/api/order/{bob_order}"), None), missing_order);
    // ...and nothing changed for bob: his resting order is still live, his cash untouched.
    assert_eq!(bob.ok("GET", &format!("/api/order/{bob_live}"), None)["status"], "ALIVE");
    let bob_account = bob.ok("GET", "/api/account/bo-1", None);
    assert_eq!(server_support::fixed4(&bob_account["deposit"]), 1_000_000 * 10_000);

    // Admin routes: users get 403; the admin reaches everything and opens accounts for users.
    assert_eq!(status_code(&mut alice, "GET", "/admin/state", None), (403, 9204));
    assert_eq!(refusal(&mut alice, "POST", "/admin/checkpoint", None).1, 9204);
    let mut admin = login(&server, "admin", ADMIN_PASSWORD);
    assert_eq!(admin.ok("GET", "/admin/state", None)["invariants"], "ok");
    admin.ok("GET", "/api/account/bo-1", None);
    admin.ok("GET", &format!("/api/order/{bob_order}"), None);
    admin.ok("POST", "/api/user/alice/account/create", Some(json!({"account_id": "al-2"})));
    assert_eq!(refusal(&mut admin, "POST", "/api/user/nobody/account/create", Some(json!({}))).1, 9207);
    let owned = json!({"account_id": "al-3", "owner": "alice"});
    admin.ok("POST", "/api/account/open", Some(owned));
    assert_eq!(alice.ok("GET", "/api/user/alice/accounts", None).as_array().unwrap().len(), 4);
    alice.ok("GET", "/api/account/al-3", None);

    // Freezing: only an admin; a frozen account can cancel but neither trade nor withdraw.
    assert_eq!(status_code(&mut bob, "POST", "/api/admin/account/bo-1/freeze", None), (403, 9204));
    assert_eq!(admin.ok("POST", "/api/admin/account/bo-1/freeze", None)["status"], "frozen");
    assert_eq!(status_code(&mut admin, "GET", "/api/admin/account/bo-1/freeze", None), (405, 9007));
    assert_eq!(status_code(&mut admin, "POST", "/api/admin/account/nobody/freeze", None).0, 404);
    assert_eq!(
        status_code(&mut bob, "POST", "/api/order/submit", Some(order("bo-1", "b3", "SELL", 5200.0))),
        (400, 1003)
    );
    let withdraw = json!({"account_id": "bo-1", "amount": 1.0});
    assert_eq!(status_code(&mut bob, "POST", "/api/account/withdraw", Some(withdraw.clone())), (400, 1003));
    let cancelled = bob.ok("POST", "/api/order/cancel", Some(json!({"account_id": "bo-1", "order_id": bob_live})));
    assert_eq!(cancelled["order"]["status"], "FINISHED", "{cancelled}");
    assert_eq!(admin.ok("POST", "/api/admin/account/bo-1/unfreeze", None)["status"], "active");
    bob.ok("POST", "/api/account/withdraw", Some(withdraw.clone()));
    bob.ok("POST", "/api/order/submit", Some(order("bo-1", "b4", "SELL", 5200.0)));
    // Partial freezes stop only what they name.
    let trading = admin.ok("POST", "/api/admin/account/bo-1/freeze", Some(json!({"mode": "trading"})));
    assert_eq!(trading["status"], "trading_frozen");
    assert_eq!(
        status_code(&mut bob, "POST", "/api/order/submit", Some(order("bo-1", "b5", "SELL", 5200.0))),
        (400, 1003)
    );
    bob.ok("POST", "/api/account/withdraw", Some(withdraw.clone()));
    let only_withdraw = admin.ok("POST", "/api/admin/account/bo-1/freeze", Some(json!({"mode": "withdraw"})));
    assert_eq!(only_withdraw["status"], "withdraw_frozen");
    assert_eq!(status_code(&mut bob, "POST", "/api/account/withdraw", Some(withdraw.clone())), (400, 1003));
    bob.ok("POST", "/api/order/submit", Some(order("bo-1", "b6", "SELL", 5200.0)));
    let bad_mode = Some(json!({"mode": "half"}));
    assert_eq!(status_code(&mut admin, "POST", "/api/admin/account/bo-1/freeze", bad_mode), (400, 9005));
    admin.ok("POST", "/api/admin/account/bo-1/unfreeze", None);

    // Settlement is an admin's; statements are the account owner's.
    assert_eq!(status_code(&mut alice, "POST", "/api/admin/settlement/execute", None), (403, 9204));
    assert_eq!(status_code(&mut alice, "GET", "/api/admin/settlement/history", None), (403, 9204));
    admin.ok("POST", "/api/admin/settlement/execute", None);
    assert_eq!(alice.ok("GET", "/api/settlement/al-1", None).as_array().unwrap().len(), 1);
    assert_eq!(refusal(&mut alice, "GET", "/api/settlement/bo-1", None), missing_account);

    // A restart keeps users, bindings and the signing key: the old tokens still work.
    let alice_token = alice.token.clone();
    server.terminate();
    let server = start(&options(&data, &config));
    let mut alice = server.client();
    alice.token = alice_token;
    assert_eq!(alice.ok("GET", "/api/user/alice/accounts", None).as_array().unwrap().len(), 4);
    assert_eq!(refusal(&mut alice, "GET", "/api/account/bo-1", None), missing_account);
    let mut bob = login(&server, "bob", BOB_PASSWORD);
    bob.ok("GET", "/api/account/bo-1", None);

    // No password in the clear: not in the WAL, checkpoints, tables or logs.
    let mut admin = login(&server, "admin", ADMIN_PASSWORD);
    admin.ok("POST", "/admin/checkpoint", None);
    for password in [ADMIN_PASSWORD, ALICE_PASSWORD, BOB_PASSWORD] {
        assert_nowhere(&data, password);
        assert!(!server.stderr().contains(password));
    }
}

#[test]
fn generated_admin_password_and_token_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "token_ttl_secs = 1\n");
    let server = start(&options(&data, &config));
    // No password in the config: a random one, in a file only its owner reads.
    let file = data.join("admin-password");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(password.len() >= 20);
    assert!(!server.stderr().contains(&password));
    let mut admin = login(&server, "admin", &password);
    admin.ok("GET", "/admin/storage/stats", None);
    // One second later the token has expired.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(status_code(&mut admin, "GET", "/admin/storage/stats", None), (401, 9203));
    // The next start keeps the admin (and its password file) as they are.
    drop(server);
    let server = start(&options(&data, &config));
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), password);
    login(&server, "admin", &password);
}

#[test]
fn users_from_the_config_are_registered_once_with_their_roles() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let users = |ops_password: &str| {
        format!(
            "admin_password = \"{ADMIN_PASSWORD}\"\n\
             [[auth.users]]\nname = \"desk-1\"\npassword = \"desk-Pa55-one\"\n\
             [[auth.users]]\nname = \"ops\"\npassword = \"{ops_password}\"\nadmin = true\n"
        )
    };
    let config = write_config(dir.path(), &users("ops-Pa55-first"));
    let server = start(&options(&data, &config));
    // A user, and an admin: each logs in with the configured password and has its role.
    let mut desk = login(&server, "desk-1", "desk-Pa55-one");
    assert_eq!(status_code(&mut desk, "GET", "/admin/state", None), (403, 9204));
    desk.ok("POST", "/api/user/desk-1/account/create", Some(json!({"account_id": "d1", "init_cash": 1000})));
    let mut ops = login(&server, "ops", "ops-Pa55-first");
    ops.ok("GET", "/admin/state", None);
    assert!(!server.stderr().contains("ops-Pa55-first"), "a configured password reached the log");
    // Registered once: the names are taken for everyone else.
    let mut anon = server.client();
    let again = json!({"username": "desk-1", "password": "another-Pa55"});
    assert_eq!(status_code(&mut anon, "POST", "/api/auth/register", Some(again)), (409, 9205));
    // A restart with another password in the config keeps the registered user as it is.
    drop(server);
    let config = write_config(dir.path(), &users("ops-Pa55-second"));
    let server = start(&options(&data, &config));
    login(&server, "ops", "ops-Pa55-first").ok("GET", "/admin/state", None);
    let mut anon = server.client();
    let wrong = json!({"username": "ops", "password": "ops-Pa55-second"});
    assert_eq!(status_code(&mut anon, "POST", "/api/auth/login", Some(wrong)), (401, 9206));
    let mut desk = login(&server, "desk-1", "desk-Pa55-one");
    assert_eq!(desk.ok("GET", "/api/user/desk-1/accounts", None).as_array().unwrap().len(), 1);
}

#[test]
fn auth_off_leaves_every_route_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(Some(&dir.path().join("data")));
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    let server = start(&opts);
    let mut c = server.client();
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "free", "init_cash": 10.0})));
    c.ok("GET", "/api/account/free", None);
    c.ok("GET", "/admin/state", None);
    // Users still exist; an account can be bound to one, who must exist.
    c.ok("POST", "/api/auth/register", Some(json!({"username": "dora", "password": "pw"})));
    c.ok("POST", "/api/user/dora/account/create", Some(json!({"account_id": "dora-1"})));
    assert_eq!(c.ok("GET", "/api/user/dora/accounts", None).as_array().unwrap().len(), 1);
    assert_eq!(refusal(&mut c, "POST", "/api/user/ghost/account/create", Some(json!({}))).1, 9207);
    assert!(!data_has_admin(&dir.path().join("data")));
}

fn data_has_admin(dir: &Path) -> bool {
    dir.join("admin-password").exists() || dir.join("auth.key").exists()
}

#[test]
fn a_connection_over_its_request_rate_is_slowed_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exchange.toml");
    std::fs::write(&config, "[http]\nmax_requests_per_sec = 5\n").unwrap();
    let mut opts = Options::new(None);
    opts.config = Some(config);
    let server = start(&opts);
    let mut c = server.client();
    // Twenty pipelined requests at once: a burst of five runs, the rest are refused.
    for _ in 0..20 {
        c.send("POST", "/api/account/open", Some(&json!({"account_id": "r", "init_cash": 1.0}))).unwrap();
    }
    let answers: Vec<(u16, u64)> = (0..20)
        .map(|_| {
            let r = c.read_response().unwrap();
            (r.status, r.json()["error"]["code"].as_u64().unwrap_or(0))
        })
        .collect();
    // The first opens the account; the next four are duplicates the engine refuses (so they ran).
    assert_eq!(answers[0], (200, 0));
    assert!(answers[1..5].iter().all(|&a| a == (400, 1002)), "{answers:?}");
    assert!(answers[5..].iter().all(|&a| a == (429, 9015)), "{answers:?}");
    // Other connections have budgets of their own, and this one recovers after a pause.
    server.client().ok("GET", "/health", None);
    std::thread::sleep(std::time::Duration::from_millis(500));
    c.ok("GET", "/api/account/r", None);
}

#[test]
fn a_user_holds_a_bounded_number_of_connections() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exchange.toml");
    std::fs::write(
        &config,
        format!("[auth]\nadmin_password = \"{ADMIN_PASSWORD}\"\n[http]\nmax_connections_per_user = 2\n"),
    )
    .unwrap();
    let mut opts = Options::new(None);
    opts.auth = true;
    opts.config = Some(config);
    let server = start(&opts);
    let mut anon = server.client();
    anon.ok("POST", "/api/auth/register", Some(json!({"username": "carol", "password": "pw"})));
    // Two connections speak for carol (on whichever shards they land); a third is refused.
    let mut first = login(&server, "carol", "pw");
    first.ok("GET", "/api/user/carol/accounts", None);
    let mut second = login(&server, "carol", "pw");
    second.ok("GET", "/api/user/carol/accounts", None);
    let mut third = login(&server, "carol", "pw");
    assert_eq!(status_code(&mut third, "GET", "/api/user/carol/accounts", None), (429, 9017));
    // Admins are not limited.
    let mut admins: Vec<Client> = (0..3).map(|_| login(&server, "admin", ADMIN_PASSWORD)).collect();
    for admin in &mut admins {
        assert_eq!(admin.ok("GET", "/admin/state", None)["invariants"], "ok");
    }
    // Once one of carol's connections closes, the third one is let in.
    drop(first);
    let began = std::time::Instant::now();
    loop {
        let r = third.request("GET", "/api/user/carol/accounts", None);
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 429);
        assert!(began.elapsed() < std::time::Duration::from_secs(5), "the closed connection was never uncounted");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    second.ok("GET", "/api/user/carol/accounts", None);
}
