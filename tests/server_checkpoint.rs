//! Checkpoints through the real server: `POST /admin/checkpoint` writes one per shard; a
//! restart starts from them and replays only the WAL after them, giving exactly the state a
//! full replay gives (books, accounts, orders, history); WAL segments before the older kept
//! checkpoint are retired; a SIGKILL while a checkpoint is being written, and a damaged
//! checkpoint, cost nothing.

mod server_support;

use serde_json::{json, Value};
use server_support::{copy_dir, settled_state, start, Client, Options, ServerProcess};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// No checkpoints unless asked for; small WAL segments (so some are retired) and a small
/// memtable (so the history store flushes on its own too).
fn options(dir: &Path, shards: usize) -> Options {
    options_with(dir, shards, "")
}

/// `options`, with more `[storage]` settings.
fn options_with(dir: &Path, shards: usize, storage: &str) -> Options {
    let config = dir.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nsegment_mib = 1\nmemtable_kib = 64\ncheckpoint_wal_mib = 0\ncheckpoint_interval_secs = 0\n\
             {storage}"
        ),
    )
    .unwrap();
    let mut opts = Options::new(Some(dir));
    opts.shards = shards;
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    opts.config = Some(config);
    opts
}

fn order(account: &str, id: &str, instrument: &str, direction: &str, price: f64, volume: i64) -> Value {
    json!({"account_id": account, "client_order_id": id, "instrument_id": instrument, "direction": direction,
        "offset": "OPEN", "price_type": "LIMIT", "limit_price": price, "volume": volume})
}

/// `rounds` rounds of crossing and resting orders on both instruments (both shards), with
/// partial fills and cancels; `tag` keeps client order ids unique.
fn trade(c: &mut Client, tag: &str, rounds: u32) {
    for round in 0..rounds {
        for (instrument, mid, tick) in [("SR501", 5000.0, 1.0), ("cu2501", 70000.0, 10.0)] {
            let price = mid + f64::from(round % 5) * tick;
            let id = |who: &str| format!("{tag}-{who}-{instrument}-{round}");
            c.ok("POST", "/api/order/submit", Some(order("A", &id("a"), instrument, "BUY", price, 2)));
            c.ok("POST", "/api/order/submit", Some(order("B", &id("b"), instrument, "SELL", price, 1)));
            let resting = c.ok(
                "POST",
                "/api/order/submit",
                Some(order("C", &id("c"), instrument, "SELL", price + 50.0 * tick, 1)),
            );
            if round % 3 == 0 {
                let id = resting["order"]["order_id"].as_u64().unwrap();
                c.ok("POST", "/api/order/cancel", Some(json!({"account_id": "C", "order_id": id})));
            }
        }
    }
}

/// `n` crossing orders of A and B on both instruments, pipelined 32 at a time (fast: many per
/// commit group), to fill the WAL.
fn fill_wal(c: &mut Client, tag: &str, n: usize) {
    let orders: Vec<Value> = (0..n)
        .map(|i| {
            let (instrument, price) = if i % 4 < 2 { ("SR501", 5000.0) } else { ("cu2501", 70000.0) };
            let (account, direction) = if i % 2 == 0 { ("A", "BUY") } else { ("B", "SELL") };
            order(account, &format!("{tag}-{i}"), instrument, direction, price, 1)
        })
        .collect();
    for chunk in orders.chunks(32) {
        for o in chunk {
            c.send("POST", "/api/order/submit", Some(o)).unwrap();
        }
        for _ in chunk {
            let r = c.read_response().unwrap();
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        }
    }
}

/// What a user sees: the state, and each account's orders, trades and their history.
fn view(c: &mut Client) -> Value {
    let mut accounts = serde_json::Map::new();
    for a in ["A", "B", "C"] {
        accounts.insert(
            a.into(),
            json!({
                "orders": c.ok("GET", &format!("/api/order/user/{a}"), None),
                "trades": c.ok("GET", &format!("/api/trades/user/{a}"), None),
                "history_orders": c.ok("GET", &format!("/api/history/orders/{a}?limit=1000"), None),
                "history_trades": c.ok("GET", &format!("/api/history/trades/{a}?limit=1000"), None),
            }),
        );
    }
    json!({"state": settled_state(c), "accounts": accounts,
        "kline": c.ok("GET", "/api/market/kline/cu2501?period=60&count=50", None)})
}

fn open_accounts(c: &mut Client) {
    for a in ["A", "B", "C"] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": a, "init_cash": 1_000_000_000})));
    }
}

fn checkpoint(c: &mut Client) -> Vec<Value> {
    let taken = c.ok("POST", "/admin/checkpoint", None);
    let taken = taken.as_array().unwrap().clone();
    for info in &taken {
        assert!(info["wal_sequence"].as_u64().unwrap() > 0, "{info}");
        assert!(info["bytes"].as_u64().unwrap() > 64, "{info}");
        // The shard's pause (the snapshot) and the work done off it, as docs/API.md lists them.
        for field in ["pause_us", "encode_us", "history_flush_us", "write_us"] {
            assert!(info[field].is_u64(), "{field} in {info}");
        }
    }
    taken
}

/// The ready line's `checkpoints=` for a restart from these (one answer per shard).
fn sequences(taken: &[Value]) -> String {
    taken.iter().map(|i| i["wal_sequence"].to_string()).collect::<Vec<_>>().join(",")
}

fn checkpoint_files(data: &Path, shard: usize) -> Vec<PathBuf> {
    let dir = data.join(format!("shard-{shard}")).join("checkpoints");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    files.sort();
    files
}

fn restart(server: &mut ServerProcess, opts: &Options) -> ServerProcess {
    server.kill9();
    start(opts)
}

#[test]
fn a_restart_from_checkpoints_equals_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let opts = options(&data, 2);
    let mut server = start(&opts);
    let mut c = server.client();
    open_accounts(&mut c);
    trade(&mut c, "one", 40);
    let taken = checkpoint(&mut c);
    assert_eq!(taken.len(), 2, "one per shard: {taken:?}");
    let stats = c.ok("GET", "/admin/storage/stats", None);
    for (s, info) in stats.as_array().unwrap().iter().zip(&taken) {
        assert_eq!(s["checkpoint_wal_sequence"], info["wal_sequence"], "{s}");
        // The history store was flushed through the checkpoint before it was written.
        assert!(s["watermark_wal_sequence"].as_u64() >= info["wal_sequence"].as_u64(), "{s}");
    }
    // The tail after the checkpoint: orders that trade against ones resting in it.
    trade(&mut c, "two", 15);
    let before = view(&mut c);
    drop(c);

    let mut server = restart(&mut server, &opts);
    assert_eq!(server.ready_field("checkpoints").unwrap(), sequences(&taken), "{}", server.ready_line);
    let tail: u64 = server.ready_field("recovered_records").unwrap().parse().unwrap();
    let mut c = server.client();
    assert_eq!(view(&mut c), before, "a restart from checkpoints");
    drop(c);

    // The same log replayed whole (a copy without its checkpoints) gives the same state.
    server.kill9();
    let full = dir.path().join("full");
    copy_dir(&data, &full);
    for shard in 0..2 {
        std::fs::remove_dir_all(full.join(format!("shard-{shard}")).join("checkpoints")).unwrap();
    }
    let full_opts = options(&full, 2);
    let mut replayed = start(&full_opts);
    assert_eq!(replayed.ready_field("checkpoints").unwrap(), "0,0");
    let whole: u64 = replayed.ready_field("recovered_records").unwrap().parse().unwrap();
    assert!(tail < whole / 2, "from checkpoints {tail} records replayed, whole log {whole}");
    assert_eq!(view(&mut replayed.client()), before, "a full replay");
    replayed.kill9();

    // Trading goes on from the checkpointed state: new ids, trades against resting orders.
    let mut server = start(&opts);
    let mut c = server.client();
    trade(&mut c, "three", 5);
    let after = view(&mut c);
    assert_ne!(after["state"], before["state"]);
    drop(c);
    let server2 = restart(&mut server, &opts);
    assert_eq!(view(&mut server2.client()), after, "restart after trading on from a checkpoint");
}

#[test]
fn wal_segments_before_the_older_checkpoint_are_retired() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let opts = options(&data, 1);
    let mut server = start(&opts);
    let mut c = server.client();
    open_accounts(&mut c);
    let wal = data.join("shard-0").join("wal");
    let segments = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&wal)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".log"))
            .collect();
        names.sort();
        names
    };
    // Fill the log until it spans a few 1 MiB segments.
    let mut rounds = 0;
    while segments().len() < 3 {
        fill_wal(&mut c, &format!("r{rounds}"), 2000);
        rounds += 1;
        assert!(rounds < 100, "the WAL never rotated: {:?}", segments());
    }
    trade(&mut c, "resting", 5);
    let first = checkpoint(&mut c)[0]["wal_sequence"].as_u64().unwrap();
    // One checkpoint kept: segments wholly before it go at once.
    let s = c.ok("GET", "/admin/storage/stats", None)[0].clone();
    assert!(s["wal_segments_retired"].as_u64().unwrap() >= 2, "{s}");
    assert!(!segments().contains(&"wal-00000000000000000001.log".to_string()), "{:?}", segments());
    // More than a segment more, so the rotation reuses a retired file.
    for k in 0..rounds + 1 {
        fill_wal(&mut c, &format!("more{k}"), 2000);
    }
    let s = c.ok("GET", "/admin/storage/stats", None)[0].clone();
    assert!(s["wal_segments_recycled"].as_u64().unwrap() >= 1, "a rotation reused a retired file: {s}");
    let second = checkpoint(&mut c)[0]["wal_sequence"].as_u64().unwrap();
    assert!(second > first);
    assert_eq!(checkpoint_files(&data, 0).len(), 2, "the newest two are kept");
    // The log still reaches back to the older one (the fallback), not further.
    let oldest: u64 = segments()[0].trim_start_matches("wal-").trim_end_matches(".log").parse().unwrap();
    assert!(oldest <= first + 1, "segment {oldest} starts after the older checkpoint at {first}");
    trade(&mut c, "tail", 10);
    let before = view(&mut c);
    drop(c);
    let mut server = restart(&mut server, &opts);
    assert_eq!(server.ready_field("checkpoints").unwrap(), second.to_string());
    assert_eq!(view(&mut server.client()), before);

    // The newest checkpoint damaged: the older one and the WAL after it give the same state.
    server.kill9();
    let newest = checkpoint_files(&data, 0).pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&newest, bytes).unwrap();
    let server = start(&opts);
    assert_eq!(server.ready_field("checkpoints").unwrap(), first.to_string(), "fell back to the older one");
    assert!(server.stderr().contains("not used: body checksum mismatch"), "{}", server.stderr());
    assert_eq!(view(&mut server.client()), before);
    // Set aside, so it no longer counts as one of the two kept.
    let mut aside = newest.clone().into_os_string();
    aside.push(".damaged");
    assert!(!newest.exists() && Path::new(&aside).exists());
    let mut c = server.client();
    trade(&mut c, "after", 2);
    let third = checkpoint(&mut c)[0]["wal_sequence"].as_u64().unwrap();
    let kept: Vec<PathBuf> =
        checkpoint_files(&data, 0).into_iter().filter(|p| p.extension().unwrap() == "ckpt").collect();
    assert_eq!(kept.len(), 2, "the older good one and the new one: {kept:?}");
    assert!(kept[1].to_str().unwrap().ends_with(&format!("{third:020}.ckpt")), "{kept:?}");
}

#[test]
fn sigkill_while_a_checkpoint_is_written_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut opts = options(&data, 2);
    opts.env = vec![("QAEXCHANGE_CHECKPOINT_PAUSE_MS".into(), "800".into())];
    let mut server = start(&opts);
    let mut c = server.client();
    open_accounts(&mut c);
    trade(&mut c, "one", 20);
    let first = checkpoint(&mut c);
    trade(&mut c, "two", 20);
    let before = view(&mut c);
    // The next checkpoint's temporary file is complete when the kill comes (the pause holds
    // it before the rename).
    let addr = server.addr;
    let asking = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let _ = c.send("POST", "/admin/checkpoint", None);
        let _ = c.read_response();
    });
    let tmp = data.join("shard-0").join("checkpoints").join("checkpoint.tmp");
    let began = Instant::now();
    while !tmp.exists() {
        assert!(began.elapsed() < Duration::from_secs(20), "no checkpoint being written");
        std::thread::sleep(Duration::from_millis(5));
    }
    let server = restart(&mut server, &opts);
    asking.join().unwrap();
    assert_eq!(server.ready_field("checkpoints").unwrap(), sequences(&first), "the half-written one is not used");
    assert!(!tmp.exists(), "the temporary file is removed at start-up");
    assert_eq!(view(&mut server.client()), before);
    assert_eq!(checkpoint_files(&data, 0).len(), 1);
}

#[test]
fn checkpoint_requests_without_storage_or_with_a_wrong_method_are_refused() {
    let server = start(&Options::new(None));
    let mut c = server.client();
    assert_eq!(c.refused("POST", "/admin/checkpoint", None, 404), 9006);
    let r = c.request("GET", "/admin/checkpoint", None);
    assert_eq!(r.status, 405);
}

#[test]
fn a_checkpoint_of_another_shard_layout_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let opts = options(&data, 2);
    let mut server = start(&opts);
    let mut c = server.client();
    open_accounts(&mut c);
    checkpoint(&mut c);
    drop(c);
    assert!(server.terminate().success());
    // Intact, but another configuration's: refused, not passed over.
    let one_shard = options(&data, 1);
    let err = match server_support::try_start(&one_shard) {
        Ok(s) => panic!("started: {}", s.ready_line),
        Err(e) => e,
    };
    assert!(err.contains("checkpoint") && err.contains("start the server with --shards 2"), "{err}");
    // The right layout still starts, from the checkpoint.
    let server = start(&opts);
    assert_ne!(server.ready_field("checkpoints").unwrap(), "0,0");
}

/// `[storage] wal_dir`: the WALs in a directory of their own (a device of their own in
/// production), the checkpoints and the history store in the storage directory. A restart
/// from checkpoints replays the tail from there; a start with the setting pointed away from
/// the log is refused, and the right setting still starts with nothing lost.
#[test]
fn the_wal_in_a_directory_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (data, wal) = (dir.path().join("data"), dir.path().join("wal-disk"));
    let opts = options_with(&data, 2, &format!("wal_dir = {:?}\n", wal.display().to_string()));
    let mut server = start(&opts);
    let mut c = server.client();
    open_accounts(&mut c);
    trade(&mut c, "one", 20);
    let taken = checkpoint(&mut c);
    trade(&mut c, "two", 10);
    let before = view(&mut c);
    drop(c);
    for shard in 0..2 {
        let segments = std::fs::read_dir(wal.join(format!("shard-{shard}")).join("wal")).unwrap().count();
        assert!(segments > 0, "shard {shard}'s WAL under wal_dir");
        assert!(!data.join(format!("shard-{shard}")).join("wal").exists(), "no WAL in the storage directory");
        assert!(!checkpoint_files(&data, shard).is_empty(), "checkpoints stay in the storage directory");
    }

    let mut server = restart(&mut server, &opts);
    assert_eq!(server.ready_field("checkpoints").unwrap(), sequences(&taken), "{}", server.ready_line);
    assert!(server.ready_field("recovered_records").unwrap().parse::<u64>().unwrap() > 0, "the tail replayed");
    assert_eq!(view(&mut server.client()), before, "a restart with the WAL elsewhere");
    server.kill9();

    // The setting left out (the log would be looked for in the storage directory): refused.
    let (status, stderr) = server_support::run_to_exit(&options(&data, 2), Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("wal_dir") && stderr.contains("holds none"), "{stderr}");
    assert!(!data.join("shard-0").join("wal").exists(), "a refused start writes no log");
    let opts = options_with(&data, 2, &format!("wal_dir = {:?}\n", wal.display().to_string()));
    let server = start(&opts);
    assert_eq!(view(&mut server.client()), before, "after the refused start");
}
