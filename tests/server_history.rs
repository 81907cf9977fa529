//! History store through the real server: orders, trades, market trades, ticks and k-lines of a
//! trading session come back from `/api/history/*` by time range and page, agree with the
//! journal's REST view, survive a restart and a SIGKILL, and flushes and compactions (forced
//! and by size) keep them; `/admin/storage/stats` shows the store; bad requests get clear errors.

mod server_support;

use serde_json::{json, Value};
use server_support::{start, Client, Options};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A small memtable and an eager compaction, so the session flushes and compacts by itself.
fn options(dir: &Path, config: &Path) -> Options {
    let mut opts = Options::new(Some(dir));
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    opts.config = Some(config.to_path_buf());
    opts
}

fn small_store_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("exchange.toml");
    std::fs::write(&path, "[storage]\nmemtable_kib = 64\ncompaction_trigger_tables = 2\n").unwrap();
    path
}

fn order(account: &str, id: &str, instrument: &str, direction: &str, price: f64, volume: i64) -> Value {
    json!({"account_id": account, "client_order_id": id, "instrument_id": instrument, "direction": direction,
        "offset": "OPEN", "price_type": "LIMIT", "limit_price": price, "volume": volume})
}

/// Every item of a history series, following the pages of `limit`.
fn all_pages(c: &mut Client, path: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let url = match &cursor {
            Some(next) => format!("{path}{sep}limit={limit}&cursor={next}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let page = c.ok("GET", &url, None);
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit, "{url}: {} items", got.len());
        items.extend(got.iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return items,
        }
        assert!(items.len() < 1_000_000, "paging does not end");
    }
}

fn by_order_id(items: &[Value]) -> BTreeMap<u64, Value> {
    items.iter().map(|o| (o["order_id"].as_u64().unwrap(), o.clone())).collect()
}

fn trade_key(t: &Value) -> (u64, String) {
    (t["trade_id"].as_u64().unwrap(), t["direction"].as_str().unwrap().to_string())
}

/// The history of each account and instrument agrees with the journal's REST view.
fn check_against_journal(c: &mut Client, accounts: &[&str]) -> (usize, usize) {
    let (mut orders, mut trades) = (0, 0);
    for account in accounts {
        let journal = c.ok("GET", &format!("/api/order/user/{account}"), None);
        let history = all_pages(c, &format!("/api/history/orders/{account}"), 7);
        assert_eq!(by_order_id(history.as_slice()), by_order_id(journal.as_array().unwrap()), "{account} orders");
        // Ordered by insert time.
        let times: Vec<i64> = history.iter().map(|o| o["insert_time_ns"].as_i64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{account}: {times:?}");
        orders += history.len();
        let journal = c.ok("GET", &format!("/api/trades/user/{account}"), None);
        let history = all_pages(c, &format!("/api/history/trades/{account}"), 5);
        let mut a: Vec<_> = history.iter().map(|t| (trade_key(t), t.clone())).collect();
        let mut b: Vec<_> = journal.as_array().unwrap().iter().map(|t| (trade_key(t), t.clone())).collect();
        a.sort_by(|x, y| x.0.cmp(&y.0));
        b.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(a, b, "{account} trades");
        trades += history.len();
    }
    for instrument in ["SR501", "cu2501"] {
        let journal = c.ok("GET", &format!("/api/market/trades/{instrument}?limit=1000"), None);
        let mut journal: Vec<Value> = journal.as_array().unwrap().clone();
        journal.reverse();
        let history = all_pages(c, &format!("/api/history/market_trades/{instrument}"), 3);
        assert_eq!(history, journal, "{instrument} market trades");
        // One tick per trading step, each at or after the trade it follows.
        let ticks = all_pages(c, &format!("/api/history/ticks/{instrument}"), 50);
        assert!(ticks.len() <= history.len(), "{instrument}: {} ticks", ticks.len());
        assert_eq!(ticks.is_empty(), history.is_empty(), "{instrument}: {} ticks", ticks.len());
        if let Some(last_tick) = ticks.last() {
            let quote = c.ok("GET", &format!("/api/market/tick/{instrument}"), None);
            assert_eq!(last_tick["last_price"], quote["last_price"], "{instrument}");
            assert_eq!(last_tick["volume"], quote["volume"], "{instrument}");
        }
        // The newest 1-minute bars equal the engine's, and so do the 3-second bars (which open
        // and close during the test: a bar is written when the next one opens, in its final
        // state, and the open one at the end of each commit group).
        for (engine_period, history_period) in [("60", "1m"), ("3", "3s")] {
            let engine =
                c.ok("GET", &format!("/api/market/kline/{instrument}?period={engine_period}&count=2000"), None);
            let engine_bars: Vec<Value> = engine["bars"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let mut b = b.clone();
                    b.as_object_mut().unwrap().remove("id");
                    b
                })
                .collect();
            let bars = all_pages(c, &format!("/api/history/klines/{instrument}?period={history_period}"), 1000);
            // The engine's ring keeps the newest bars; the history keeps them all.
            let kept = &bars[bars.len().saturating_sub(engine_bars.len())..];
            assert_eq!(kept, &engine_bars[..], "{instrument} {history_period} bars");
        }
    }
    (orders, trades)
}

/// Waits for the next 3 s bar, then trades in SR501 (A buys what rests on the ask side).
fn trade_in_a_new_3s_bar(c: &mut Client, tag: &str) {
    std::thread::sleep(Duration::from_millis(3_100));
    c.ok("POST", "/api/order/submit", Some(order("B", &format!("{tag}-s"), "SR501", "SELL", 5000.0, 1)));
    let buy = c.ok("POST", "/api/order/submit", Some(order("A", &format!("{tag}-b"), "SR501", "BUY", 5200.0, 1)));
    assert_eq!(buy["order"]["status"], "FINISHED", "{tag}: {buy}");
}

fn stats(c: &mut Client) -> Vec<Value> {
    c.ok("GET", "/admin/storage/stats", None).as_array().unwrap().clone()
}

fn wait_for(c: &mut Client, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let began = Instant::now();
    loop {
        let s = stats(c);
        if done(&s) {
            return s;
        }
        assert!(began.elapsed() < Duration::from_secs(20), "{what}: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn history_of_a_session_by_range_and_page_across_flush_compaction_restart_and_kill() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_store_config(dir.path());
    let data = dir.path().join("data");
    let mut server = start(&options(&data, &config));
    let mut c = server.client();
    let accounts = ["A", "B", "C"];
    for a in accounts {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": a, "init_cash": 1_000_000_000})));
    }
    // Enough orders that 64 KiB memtables flush several times and compactions run.
    let mut n = 0;
    let mut first_half_end = 0i64;
    for round in 0..150 {
        for (instrument, mid, tick) in [("SR501", 5000.0, 1.0), ("cu2501", 70000.0, 10.0)] {
            n += 1;
            let price = mid + f64::from(round % 5) * tick;
            c.ok("POST", "/api/order/submit", Some(order("A", &format!("a{n}"), instrument, "BUY", price, 2)));
            c.ok("POST", "/api/order/submit", Some(order("B", &format!("b{n}"), instrument, "SELL", price, 1)));
            let resting = c.ok(
                "POST",
                "/api/order/submit",
                Some(order("C", &format!("c{n}"), instrument, "SELL", price + 50.0 * tick, 1)),
            );
            if round % 3 == 0 {
                let id = resting["order"]["order_id"].as_u64().unwrap();
                c.ok("POST", "/api/order/cancel", Some(json!({"account_id": "C", "order_id": id})));
            }
        }
        if round == 74 {
            first_half_end = c.ok("GET", "/api/order/user/A", None).as_array().unwrap().last().unwrap()
                ["insert_time_ns"]
                .as_i64()
                .unwrap();
        }
    }
    let s = wait_for(&mut c, "flushes by size", |s| s.iter().map(|x| x["flushes"].as_u64().unwrap()).sum::<u64>() >= 2);
    eprintln!("after the session: {s:?}");
    let (orders, trades) = check_against_journal(&mut c, &accounts);
    assert!(orders >= 900 && trades >= 600, "{orders} orders, {trades} trades");

    // A time range: A's orders of the first half only.
    let first = all_pages(&mut c, &format!("/api/history/orders/A?end={}", first_half_end + 1), 100);
    assert_eq!(first.len(), 150, "A placed 150 orders in the first 75 rounds");
    let second = all_pages(&mut c, &format!("/api/history/orders/A?start={}", first_half_end + 1), 100);
    assert_eq!(first.len() + second.len(), 300);

    // Forced flush and compaction: everything in level 1, nothing in memory, same answers.
    let triggered = c.ok("POST", "/admin/compaction/trigger", None);
    assert_eq!(triggered.as_array().unwrap().len(), 2, "{triggered}");
    let s = wait_for(&mut c, "a forced compaction", |s| {
        s.iter().all(|x| {
            x["job_running"] == false
                && x["memtable_entries"] == 0
                && x["tables_per_level"][0] == 0
                && x["tables_per_level"][1].as_u64().unwrap() >= 1
        })
    });
    eprintln!("after the forced compaction: {s:?}");
    assert!(s.iter().all(|x| x["compactions"].as_u64().unwrap() >= 1 && x["job_failures"] == 0), "{s:?}");
    // The jobs' CPU: some for every kind that wrote, never more than its wall time.
    let n = |x: &Value, k: &str| x[k].as_u64().unwrap_or_else(|| panic!("{k} in {x}"));
    for x in &s {
        assert!(n(x, "flush_cpu_us") > 0 && n(x, "flush_cpu_us") <= n(x, "flush_time_us"), "{x}");
        if n(x, "compaction_bytes_out") > 0 {
            assert!(n(x, "compaction_cpu_us") > 0, "{x}");
        }
        assert!(n(x, "compaction_cpu_us") <= n(x, "compaction_time_us"), "{x}");
        n(x, "release_cpu_us");
    }
    check_against_journal(&mut c, &accounts);

    // Graceful restart: the memtable is flushed at shutdown, nothing to derive again.
    let more = c.ok("POST", "/api/order/submit", Some(order("A", "after-compaction", "SR501", "BUY", 4990.0, 1)));
    drop(c);
    assert!(server.terminate().success());
    server = start(&options(&data, &config));
    let mut c = server.client();
    let s = stats(&mut c);
    assert!(s.iter().all(|x| x["memtable_entries"] == 0), "a clean stop flushed: {s:?}");
    check_against_journal(&mut c, &accounts);
    let a = all_pages(&mut c, "/api/history/orders/A", 1000);
    assert_eq!(a.last().unwrap()["order_id"], more["order"]["order_id"]);
    // The bars open at the stop are the engine's (live) until they close: a trade in a later
    // 3 s bar closes one, which must reach the history as the next bars open.
    trade_in_a_new_3s_bar(&mut c, "after-restart");
    check_against_journal(&mut c, &accounts);

    // SIGKILL right after acknowledged orders: their history is derived again from the WAL,
    // the bar closed by this trade included.
    trade_in_a_new_3s_bar(&mut c, "before-kill");
    let mut ids = Vec::new();
    for k in 0..20 {
        let o = c.ok("POST", "/api/order/submit", Some(order("B", &format!("kill{k}"), "cu2501", "SELL", 70100.0, 1)));
        ids.push(o["order"]["order_id"].as_u64().unwrap());
    }
    drop(c);
    server.kill9();
    server = start(&options(&data, &config));
    let mut c = server.client();
    let s = stats(&mut c);
    assert!(s.iter().any(|x| x["memtable_entries"].as_u64().unwrap() > 0), "re-derived into memory: {s:?}");
    let b = by_order_id(&all_pages(&mut c, "/api/history/orders/B", 1000));
    for id in ids {
        assert_eq!(b[&id]["status"], "ALIVE", "order {id}");
    }
    check_against_journal(&mut c, &accounts);
}

#[test]
fn bad_history_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(Some(dir.path()));
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    let server = start(&opts);
    let mut c = server.client();
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 1000})));
    let empty = c.ok("GET", "/api/history/orders/A", None);
    assert_eq!(empty, json!({"items": [], "next": null}));
    // Account changes: the opening, its initial cash, then each deposit and withdrawal.
    c.ok("POST", "/api/account/deposit", Some(json!({"account_id": "A", "amount": 5})));
    c.ok("POST", "/api/account/withdraw", Some(json!({"account_id": "A", "amount": 2})));
    let changes = c.ok("GET", "/api/history/account_changes/A", None)["items"].clone();
    let kinds: Vec<(String, f64)> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event"].as_str().unwrap().to_string(), e["amount"].as_f64().unwrap_or(0.0)))
        .collect();
    let want = [
        ("account_opened", 0.0),
        ("funds_transferred", 1000.0),
        ("funds_transferred", 5.0),
        ("funds_transferred", -2.0),
    ];
    assert_eq!(kinds, want.map(|(k, a)| (k.to_string(), a)).to_vec(), "{changes}");
    assert_eq!(c.refused("GET", "/api/history/orders/nobody", None, 404), 1001);
    // The same refusals as the other endpoints naming an account or an instrument.
    assert_eq!(c.refused("GET", "/api/account/nobody", None, 404), 1001);
    let unknown_instrument = c.refused("GET", "/api/market/tick/XX999", None, 404);
    assert_eq!(c.refused("GET", "/api/history/ticks/XX999", None, 404), unknown_instrument);
    for bad in [
        "/api/history/orders/A?start=abc",
        "/api/history/orders/A?start=5&end=4",
        "/api/history/orders/A?limit=0",
        "/api/history/orders/A?limit=1001",
        "/api/history/orders/A?cursor=zz",
        "/api/history/orders/A?cursor=00",
        "/api/history/orders/A?start=1&start=2",
        "/api/history/klines/SR501?period=7m",
    ] {
        assert_eq!(c.refused("GET", bad, None, 400), 9004, "{bad}");
    }
    // A cursor of another series does not read it.
    let other = "4b53523530310080000000000000000000000000000001";
    assert_eq!(c.refused("GET", &format!("/api/history/orders/A?cursor={other}"), None, 400), 9004);
    assert_eq!(c.refused("POST", "/api/history/orders/A", None, 405), 9007);
    assert_eq!(c.refused("GET", "/admin/compaction/trigger", None, 405), 9007);
    // Still serving.
    c.ok("GET", "/health", None);

    let nostore = start(&Options::new(None));
    let mut c = nostore.client();
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 1000})));
    assert_eq!(c.refused("GET", "/api/history/orders/A", None, 404), 9006);
    assert_eq!(c.refused("GET", "/admin/storage/stats", None, 404), 9006);
}

/// `count` times: A buys and B sells SR501 at the same price (a trade), C sells cu2501 far
/// from the market (a resting order); `n` numbers the orders.
fn submit_triples(c: &mut Client, n: &mut i32, count: usize) {
    for _ in 0..count {
        *n += 1;
        let (k, p) = (*n, 5000.0 + f64::from(*n % 7));
        c.ok("POST", "/api/order/submit", Some(order("A", &format!("a{k}"), "SR501", "BUY", p, 1)));
        c.ok("POST", "/api/order/submit", Some(order("B", &format!("b{k}"), "SR501", "SELL", p, 1)));
        c.ok("POST", "/api/order/submit", Some(order("C", &format!("c{k}"), "cu2501", "SELL", 71000.0, 1)));
    }
}

/// SIGKILL while a flush and while a compaction is in its job, before it wrote anything and
/// after it wrote its tables and manifest (the server is started with a pause at both points),
/// and while a flush and a compaction run at the same time: every restart serves the whole
/// history, equal to the journal's.
#[test]
fn sigkill_during_flush_and_compaction_jobs_keeps_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_store_config(dir.path());
    let data = dir.path().join("data");
    let mut opts = options(&data, &config);
    opts.env = vec![("QAEXCHANGE_HISTORY_JOB_PAUSE_MS".into(), "400".into())];
    let accounts = ["A", "B", "C"];
    let mut server = start(&opts);
    {
        let mut c = server.client();
        for a in accounts {
            c.ok("POST", "/api/account/open", Some(json!({"account_id": a, "init_cash": 1_000_000_000})));
        }
    }
    let mut n: i32 = 0;
    // When to kill: ms after the job began (the pause is 400 ms before and 400 ms after its
    // work), or, for rounds 1 and 3, once the job's manifest is on disk. A fixed delay there
    // fell before the write on a loaded machine, where the idle-class job gets no CPU.
    for (round, kill_after_ms) in [(0, 100u64), (1, 0), (2, 100), (3, 0), (4, 500)] {
        let mut c = server.client();
        let written = manifests(&data);
        let level = if round == 1 { 0 } else { 1 };
        let tables_before = tables_at(&mut c, level);
        submit_triples(&mut c, &mut n, 20);
        // Rounds 0 and 1 kill a flush; 2 and 3 a compaction (the forced trigger flushes first,
        // then compacts: wait for the compaction's job).
        c.ok("POST", "/admin/compaction/trigger", None);
        let compaction = round >= 2;
        wait_for(&mut c, "a job in progress", |s| {
            s.iter().any(|x| {
                x["job_running"] == true
                    && (!compaction
                        || x["flushes"].as_u64().unwrap() >= 1 && x["tables_per_level"][0].as_u64().unwrap() >= 1)
            })
        });
        if round == 4 {
            // Round 4: while the compaction runs, more history and a checkpoint, which flushes
            // it: both jobs in flight when the kill lands (answered or not, the checkpoint's
            // request is never read).
            wait_for(&mut c, "a compaction in progress", |s| s.iter().any(|x| x["compaction_running"] == true));
            submit_triples(&mut c, &mut n, 10);
            let mut checkpoint = server.client();
            checkpoint.send("POST", "/admin/checkpoint", None).unwrap();
            wait_for(&mut c, "a flush and a compaction at once", |s| {
                s.iter().any(|x| x["flush_running"] == true && x["compaction_running"] == true)
            });
        }
        match round {
            // The flush's manifest, or the compaction's (after the flush's, already taken).
            1 | 3 => {
                let written = if round == 1 { written } else { manifests(&data) };
                wait_until_written(&mut c, &data, &written, level, tables_before);
            }
            _ => std::thread::sleep(Duration::from_millis(kill_after_ms)),
        }
        drop(c);
        server.kill9();
        server = start(&opts);
        let mut c = server.client();
        let (orders, _) = check_against_journal(&mut c, &accounts);
        assert_eq!(orders, n as usize * 3, "round {round}");
        // Where the kill landed shows on disk: before the job wrote, or after its manifest.
        let s = stats(&mut c);
        let level = |l: usize| s.iter().map(|x| x["tables_per_level"][l].as_u64().unwrap()).sum::<u64>();
        match round {
            0 => assert_eq!(level(0) + level(1), 0, "the killed flush wrote nothing: {s:?}"),
            1 => assert!(level(0) >= 1, "the flush wrote its table and manifest before the kill: {s:?}"),
            2 => assert_eq!(level(1), 0, "the killed compaction wrote nothing: {s:?}"),
            3 => assert!(level(1) >= 1, "the compaction wrote its tables and manifest before the kill: {s:?}"),
            // Either job may have committed, or both, or neither: the history above is whole.
            _ => {}
        }
    }
}

/// Every shard's history manifest as it is on disk (None: none yet).
fn manifests(data: &Path) -> Vec<Option<Vec<u8>>> {
    (0..2).map(|k| std::fs::read(data.join(format!("shard-{k}")).join("history").join("MANIFEST")).ok()).collect()
}

fn tables_at(c: &mut Client, level: usize) -> u64 {
    stats(c).iter().map(|x| x["tables_per_level"][level].as_u64().unwrap()).sum()
}

/// Waits (at most 30 s) until a manifest differs from `before` (a job wrote its result) or the
/// shards hold more tables at `level` than `tables_before` (they took the result already: the
/// job's pause after its write ended before this looked).
fn wait_until_written(c: &mut Client, data: &Path, before: &[Option<Vec<u8>>], level: usize, tables_before: u64) {
    let began = Instant::now();
    loop {
        if manifests(data) != before || tables_at(c, level) > tables_before {
            return;
        }
        assert!(began.elapsed() < Duration::from_secs(30), "no job wrote its manifest in 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A history job in progress (paused 4 s before and 4 s after its work) holds nothing a login
/// waits for: password hashing runs on the shard's blocking pool, which the jobs no longer
/// occupy (they did: a login waited behind a whole compaction).
#[test]
fn a_login_does_not_wait_for_a_history_job() {
    use server_support::login_client;
    const PASSWORD: &str = "admin-Pa55-history";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exchange.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nmemtable_kib = 64\ncompaction_trigger_tables = 2\n[auth]\nadmin_password = \"{PASSWORD}\"\n"
        ),
    )
    .unwrap();
    let mut opts = options(&dir.path().join("data"), &config);
    opts.auth = true;
    opts.shards = 1;
    opts.env = vec![("QAEXCHANGE_HISTORY_JOB_PAUSE_MS".into(), "4000".into())];
    let server = start(&opts);
    let mut admin = login_client(&server, "admin", PASSWORD);
    admin.ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 1_000_000})));
    let began = Instant::now();
    login_client(&server, "admin", PASSWORD);
    let quiet = began.elapsed();
    // A checkpoint flushes the store through its WAL position: a job. Its answer comes after
    // the job, so the request is sent, not awaited.
    let mut checkpoint = server.client();
    checkpoint.token = admin.token.clone();
    checkpoint.send("POST", "/admin/checkpoint", None).unwrap();
    wait_for(&mut admin, "a flush in progress", |s| s.iter().any(|x| x["flush_running"] == true));
    let began = Instant::now();
    login_client(&server, "admin", PASSWORD);
    let during = began.elapsed();
    assert!(during < quiet + Duration::from_secs(2), "a login took {during:?} during a job, {quiet:?} without");
    assert_eq!(stats(&mut admin)[0]["flush_running"], true, "the job was still running");
}

/// A flush that falls behind (its job paused 4 s before and after it writes) makes the
/// committer wait once the memtable holds `MEMTABLE_BACKLOG_FACTOR` times its size: memory
/// stays bounded, every order is acknowledged, and the history is whole.
#[test]
fn a_flush_that_falls_behind_holds_the_memtable_to_its_bound() {
    use qaexchange::server::history_store::MEMTABLE_BACKLOG_FACTOR;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exchange.toml");
    std::fs::write(&config, "[storage]\nmemtable_kib = 64\ncompaction_trigger_tables = 100\n").unwrap();
    let mut opts = options(&dir.path().join("data"), &config);
    opts.env = vec![("QAEXCHANGE_HISTORY_JOB_PAUSE_MS".into(), "4000".into())];
    let server = start(&opts);
    let mut c = server.client();
    for a in ["A", "B"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": a, "init_cash": 1_000_000_000})));
    }
    let bound = MEMTABLE_BACKLOG_FACTOR * 64 * 1024;
    let waits = |c: &mut Client| -> String {
        let latency = String::from_utf8(c.get("/admin/latency").body).unwrap();
        latency.lines().find(|l| l.starts_with("# stage history_backlog_wait:")).expect("the stage").to_string()
    };
    // Crossing pairs until the committer has waited (how many that takes depends on this
    // machine's speed against the jobs' 8 s), then 50 more; fewer than the journal's 1,000
    // market trades, which the history is compared with.
    let (mut most, mut pairs, mut waited_at) = (0u64, 0, None);
    while waited_at.is_none_or(|at| pairs < at + 50) {
        assert!(pairs < 950, "the committer never waited: {}", waits(&mut c));
        let p = 5000.0 + f64::from(pairs % 7);
        c.ok("POST", "/api/order/submit", Some(order("A", &format!("a{pairs}"), "SR501", "BUY", p, 1)));
        c.ok("POST", "/api/order/submit", Some(order("B", &format!("b{pairs}"), "SR501", "SELL", p, 1)));
        pairs += 1;
        if pairs % 10 == 0 {
            most = most.max(stats(&mut c).iter().map(|s| s["memtable_bytes"].as_u64().unwrap()).max().unwrap());
            // One group's history (here one order's: about a kilobyte) may land past the bound
            // before the next group waits.
            assert!(most as usize <= bound + 4 * 1024, "memtable {most} bytes, bound {bound}");
            if waited_at.is_none() && !waits(&mut c).ends_with("(n = 0)") {
                waited_at = Some(pairs);
            }
        }
    }
    // On its way to the bound, past half of it, the committer paused before groups first.
    let latency = String::from_utf8(c.get("/admin/latency").body).unwrap();
    let slowed = latency.lines().find(|l| l.starts_with("# stage history_slowdown:")).expect("the stage");
    assert!(!slowed.ends_with("(n = 0)"), "{slowed}");
    let (orders, trades) = check_against_journal(&mut c, &["A", "B"]);
    assert_eq!((orders, trades), (2 * pairs as usize, 2 * pairs as usize));
}
