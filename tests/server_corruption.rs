//! WAL damage against the real server (docs/ARCHITECTURE.md "WAL format"): a data dir is built
//! by a server that opened accounts and traded, stopped with SIGTERM; then each case damages a
//! copy of it and restarts on the copy:
//! - untouched: the same state, every record replayed;
//! - a torn last record: cut with a warning (`torn_tail` in the ready line), state as before
//!   the last command, and the log keeps working;
//! - a flipped bit in an early record with later batches after it: start-up stops, naming the
//!   segment file and the offset;
//! - an empty or missing WAL dir: a fresh venue;
//! - an empty or all-zero extra segment after the last one: fine;
//! - several segments: they replay in order; a missing middle segment, or a damaged end of a
//!   segment followed by segments holding records, stops start-up.
//!
//! Segments are 1 MiB (a config file per test) so start-ups stay fast in debug builds. The
//! server runs one shard, so every record lands in the one WAL these cases damage (the
//! recovery of several shards' logs together is `server_crash.rs`'s and `shard_model.rs`'s).

mod server_support;

use serde_json::{json, Value};
use server_support::{copy_dir, run_to_exit, start, try_start, Client, Options, ServerProcess};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const HEADER_LEN: usize = 24;

/// One record frame found in a segment (no CRC check: only used on files the server wrote).
#[derive(Clone, Copy, Debug)]
struct Frame {
    offset: usize,
    payload_len: usize,
    sequence: u64,
    batch_start: u64,
}

impl Frame {
    fn end(&self) -> usize {
        self.offset + (HEADER_LEN + self.payload_len).div_ceil(8) * 8
    }

    fn payload(&self) -> std::ops::Range<usize> {
        self.offset + HEADER_LEN..self.offset + HEADER_LEN + self.payload_len
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// The consecutive records at the start of a segment whose first sequence is `first`.
fn frames(bytes: &[u8], first: u64) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut expected = first;
    while offset + HEADER_LEN <= bytes.len() {
        let payload_len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        let frame =
            Frame { offset, payload_len, sequence: u64_at(bytes, offset + 8), batch_start: u64_at(bytes, offset + 16) };
        if payload_len == 0 || frame.sequence != expected || frame.end() > bytes.len() {
            break;
        }
        out.push(frame);
        offset = frame.end();
        expected += 1;
    }
    out
}

fn wal_dir(data: &Path) -> PathBuf {
    data.join("shard-0").join("wal")
}

fn segment_name(first: u64) -> String {
    format!("wal-{first:020}.log")
}

/// The WAL segments of a data dir, by first sequence.
fn segments(data: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(wal_dir(data))
        .expect("wal dir")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            let first = name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()?;
            Some((first, path))
        })
        .collect();
    out.sort();
    out
}

/// Every record of the log, segment by segment: (segment path, frame).
fn all_frames(data: &Path) -> Vec<(PathBuf, Frame)> {
    let mut out = Vec::new();
    for (first, path) in segments(data) {
        let bytes = std::fs::read(&path).unwrap();
        out.extend(frames(&bytes, first).into_iter().map(|f| (path.clone(), f)));
    }
    out
}

fn patch(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// `/admin/state`: asserts the invariants hold and returns the `state` part.
fn engine_state(c: &mut Client) -> Value {
    let data = c.ok("GET", "/admin/state", None);
    assert_eq!(data["invariants"], "ok", "{data}");
    data["state"].clone()
}

fn account_ids(state: &Value) -> Vec<String> {
    let mut ids: Vec<String> = state["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| a["account"]["account_id"].as_str().expect("account_id").to_string())
        .collect();
    ids.sort();
    ids
}

fn recovered_records(server: &ServerProcess) -> u64 {
    server.ready_field("recovered_records").and_then(|v| v.parse().ok()).expect("recovered_records")
}

fn order(account: &str, id: &str, instrument: &str, direction: &str, price: f64, volume: i64) -> Value {
    json!({"account_id": account, "client_order_id": id, "instrument_id": instrument, "direction": direction,
           "offset": "OPEN", "limit_price": price, "volume": volume})
}

/// Stops the server with SIGTERM; it must exit 0.
fn stop(server: &mut ServerProcess) {
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", server.stderr());
}

/// A start-up that must fail: `try_start` errs, the process exits non-zero on its own, and
/// both name every needle. Returns the error text.
fn must_fail(opts: &Options, needles: &[&str]) -> String {
    let err = match try_start(opts) {
        Ok(server) => panic!("start-up should have failed, got {}", server.ready_line),
        Err(e) => e,
    };
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} missing from the start-up error:\n{err}");
    }
    let (status, stderr) = run_to_exit(opts, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "exit status {status:?}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} missing from stderr:\n{stderr}");
    }
    err
}

/// A data dir built by a real server, with the state before and after its last command.
struct Base {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// 1 MiB segments, the shipped instruments.
    config: PathBuf,
    /// State before the last command (a lone deposit of 1 to `a1`).
    penultimate: Value,
    /// State at shutdown.
    last: Value,
    records: usize,
}

/// Options for a server on `dir` with `config`.
fn options(dir: &Path, config: &Path) -> Options {
    let mut opts = Options::new(Some(dir));
    opts.config = Some(config.to_path_buf());
    // One shard: every record lands in one WAL, which these cases damage.
    opts.shards = 1;
    opts
}

fn build_base() -> Base {
    let tmp = tempfile::tempdir().unwrap();
    // 1 MiB segments instead of the shipped 64 MiB: start-up reads and scans the whole
    // preallocated segment, about 3 s for 64 MiB in a debug build, and this test restarts often.
    let config = tmp.path().join("exchange.toml");
    let instruments = server_support::manifest_dir().join("config/instruments.toml");
    let text = format!("[server]\ninstruments = {:?}\n[storage]\nsegment_mib = 1\n", instruments.to_str().unwrap());
    std::fs::write(&config, text).unwrap();
    let dir = tmp.path().join("data");
    let mut server = start(&options(&dir, &config));
    assert_eq!(recovered_records(&server), 0);
    let mut c = server.client();
    for (id, cash) in [("a1", 2_000_000), ("a2", 2_000_000), ("a3", 1_000_000)] {
        c.ok("POST", "/api/account/open", Some(json!({"account_id": id, "init_cash": cash})));
    }
    c.ok("POST", "/api/account/open", Some(json!({"account_id": "a4"})));
    c.ok("POST", "/api/account/deposit", Some(json!({"account_id": "a4", "amount": 750_000})));
    c.ok("POST", "/api/account/withdraw", Some(json!({"account_id": "a3", "amount": 1234.5})));
    c.ok("POST", "/api/order/submit", Some(order("a1", "b1", "cu2501", "BUY", 74000.0, 3)));
    let crossed = c.ok("POST", "/api/order/submit", Some(order("a2", "s1", "cu2501", "SELL", 73990.0, 2)));
    assert_eq!(crossed["trades"].as_array().map(Vec::len), Some(1), "{crossed}");
    c.ok("POST", "/api/order/submit", Some(order("a3", "s2", "cu2501", "SELL", 74100.0, 4)));
    let b2 = c.ok("POST", "/api/order/submit", Some(order("a4", "b2", "rb2501", "BUY", 3350.0, 10)));
    c.ok("POST", "/api/order/submit", Some(order("a2", "s3", "rb2501", "SELL", 3349.0, 4)));
    c.ok(
        "POST",
        "/api/order/modify",
        Some(json!({"account_id": "a4", "order_id": b2["order"]["order_id"], "new_price": 3351})),
    );
    c.ok("POST", "/api/order/cancel", Some(json!({"account_id": "a1", "client_order_id": "b1"})));
    c.ok("POST", "/api/order/submit", Some(order("a1", "b3", "cu2501", "BUY", 74100.0, 2)));
    // A refused command changes nothing and writes nothing.
    c.refused("POST", "/api/account/withdraw", Some(json!({"account_id": "a1", "amount": 0})), 400);
    let penultimate = engine_state(&mut c);
    let traded = penultimate["instruments"].as_array().unwrap().iter().any(|i| i["open_interest"].as_i64() > Some(0));
    assert!(traded, "no trades: {penultimate}");
    assert!(!penultimate["live_orders"].as_array().unwrap().is_empty(), "{penultimate}");
    c.ok("POST", "/api/account/deposit", Some(json!({"account_id": "a1", "amount": 1})));
    let last = engine_state(&mut c);
    assert_ne!(last, penultimate);
    drop(c);
    stop(&mut server);
    let records = all_frames(&dir).len();
    assert_eq!(segments(&dir).len(), 1);
    Base { _tmp: tmp, dir, config, penultimate, last, records }
}

/// A fresh copy of the base data dir, and the options that start a server on it.
fn copy_of(base: &Base) -> (tempfile::TempDir, PathBuf, Options) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    copy_dir(&base.dir, &dir);
    let opts = options(&dir, &base.config);
    (tmp, dir, opts)
}

/// Deposits 7 to `a2`, stops, restarts: the deposit must be there (the log still works).
fn log_keeps_working(mut server: ServerProcess, opts: &Options) {
    let mut c = server.client();
    let before = c.ok("GET", "/api/account/a2", None)["deposit"].as_f64().unwrap();
    c.ok("POST", "/api/account/deposit", Some(json!({"account_id": "a2", "amount": 7})));
    let expected = engine_state(&mut c);
    drop(c);
    stop(&mut server);
    let again = start(opts);
    assert_eq!(again.ready_field("torn_tail").as_deref(), Some("none"), "{}", again.ready_line);
    let mut c = again.client();
    assert_eq!(c.ok("GET", "/api/account/a2", None)["deposit"].as_f64().unwrap(), before + 7.0);
    assert_eq!(engine_state(&mut c), expected, "state after the second restart");
}

fn case_untouched(base: &Base) {
    let (_tmp, _, opts) = copy_of(base);
    let server = start(&opts);
    assert_eq!(recovered_records(&server), base.records as u64, "{}", server.ready_line);
    assert!(base.records > 10);
    assert_eq!(server.ready_field("torn_tail").as_deref(), Some("none"), "{}", server.ready_line);
    assert_eq!(engine_state(&mut server.client()), base.last);
    log_keeps_working(server, &opts);
}

fn case_torn_tail(base: &Base) {
    let (_tmp, dir, opts) = copy_of(base);
    let (path, last) = all_frames(&dir).pop().expect("records");
    assert_eq!(last.sequence as usize, base.records);
    patch(&path, |bytes| {
        // The written data ends with the last record (zeros after it, preallocated).
        let end = bytes.iter().rposition(|&b| b != 0).expect("data") + 1;
        let payload = last.payload();
        assert!(payload.contains(&(end - 1)), "the data ends at {end}, outside the last record {last:?}");
        // Tear the last 40 written bytes (the payload may end in zeros: those stay as they are).
        bytes[(end - 40).max(payload.start)..end].fill(0);
    });
    let server = start(&opts);
    let torn = server.ready_field("torn_tail").expect("torn_tail field");
    assert_ne!(torn, "none", "{}", server.ready_line);
    assert!(server.ready_line.contains(&segment_name(1)), "{}", server.ready_line);
    assert_eq!(recovered_records(&server), base.records as u64 - 1, "{}", server.ready_line);
    assert!(server.stderr().contains("torn tail"), "no warning on stderr:\n{}", server.stderr());
    // Exactly the last command (a lone deposit) is gone.
    let state = engine_state(&mut server.client());
    assert_eq!(account_ids(&state), account_ids(&base.last));
    assert_eq!(state, base.penultimate);
    log_keeps_working(server, &opts);
}

fn case_flipped_bit(base: &Base, record: usize) {
    let (_tmp, dir, opts) = copy_of(base);
    let frames = all_frames(&dir);
    let (path, frame) = frames[record].clone();
    assert!(frames.iter().any(|(_, f)| f.batch_start > frame.sequence), "no later batch");
    let at = frame.payload().start + frame.payload_len / 2;
    patch(&path, |bytes| bytes[at] ^= 0x10);
    let name = segment_name(1);
    let offset = format!("byte offset {} (expected sequence {})", frame.offset, frame.sequence);
    let err = must_fail(&opts, &[&name, &offset, "corrupt"]);
    assert!(err.contains("WAL recovery stopped"), "{err}");
}

fn case_empty_wal_dir(base: &Base) {
    let (_tmp, dir, opts) = copy_of(base);
    for (_, path) in segments(&dir) {
        std::fs::remove_file(path).unwrap();
    }
    assert!(wal_dir(&dir).is_dir());
    fresh_start(&opts);
}

fn case_missing_wal_dir(base: &Base) {
    let (_tmp, dir, opts) = copy_of(base);
    std::fs::remove_dir_all(wal_dir(&dir)).unwrap();
    fresh_start(&opts);
    let (_tmp2, dir, opts) = copy_of(base);
    std::fs::remove_dir_all(&dir).unwrap();
    fresh_start(&opts);
}

fn fresh_start(opts: &Options) {
    let dir = opts.storage.as_deref().unwrap();
    let server = start(opts);
    assert_eq!(recovered_records(&server), 0, "{}", server.ready_line);
    let state = engine_state(&mut server.client());
    assert!(account_ids(&state).is_empty(), "{state}");
    assert_eq!(segments(dir).len(), 1, "a new log starts with one segment");
}

/// An extra segment after the last one: zero-length, or all zeros (named after the next
/// sequence as the writer would, or further on).
fn case_extra_segment(base: &Base, name_after: u64, len: u64) {
    let (_tmp, dir, opts) = copy_of(base);
    let next = base.records as u64 + 1;
    let extra = wal_dir(&dir).join(segment_name(next + name_after));
    std::fs::File::create(&extra).unwrap().set_len(len).unwrap();
    let server = start(&opts);
    assert_eq!(recovered_records(&server), base.records as u64, "{}", server.ready_line);
    assert_eq!(server.ready_field("torn_tail").as_deref(), Some("none"), "{}", server.ready_line);
    assert_eq!(engine_state(&mut server.client()), base.last);
    log_keeps_working(server, &opts);
}

type Case = Box<dyn Fn(&Base)>;

#[test]
fn damaged_wal_copies_restart_as_documented() {
    let base = build_base();
    let cases: Vec<(&str, Case)> = vec![
        ("untouched copy", Box::new(case_untouched)),
        ("torn tail", Box::new(case_torn_tail)),
        ("flipped bit in the genesis record", Box::new(|b| case_flipped_bit(b, 0))),
        ("flipped bit in record 5", Box::new(|b| case_flipped_bit(b, 4))),
        ("empty wal dir", Box::new(case_empty_wal_dir)),
        ("missing wal dir", Box::new(case_missing_wal_dir)),
        ("zero-length next segment", Box::new(|b| case_extra_segment(b, 0, 0))),
        ("all-zero next segment", Box::new(|b| case_extra_segment(b, 0, 1 << 20))),
        ("all-zero segment further on", Box::new(|b| case_extra_segment(b, 1000, 4 << 20))),
    ];
    let mut failed = Vec::new();
    for (name, case) in &cases {
        let began = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&base)));
        eprintln!("case {name}: {} in {:?}", if result.is_ok() { "ok" } else { "FAILED" }, began.elapsed());
        if result.is_err() {
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}

/// Writes deposits over pipelined keep-alive connections until the WAL has at least
/// `min_segments` segments holding records (at most `max_requests` deposits, 60 s); returns how
/// many were sent.
fn fill_segments(server: &ServerProcess, dir: &Path, min_segments: usize, max_requests: usize) -> usize {
    const THREADS: usize = 4;
    const BATCH: usize = 200;
    let sent = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    let enough = || {
        let segs = segments(dir);
        segs.len() > min_segments
            || (segs.len() == min_segments && {
                let (first, path) = segs.last().unwrap();
                !frames(&std::fs::read(path).unwrap(), *first).is_empty()
            })
    };
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (sent, done, enough) = (&sent, &done, &enough);
            s.spawn(move || {
                let mut c = server.client();
                let body = format!(r#"{{"account_id":"f{t}","amount":1}}"#);
                let one = format!(
                    "POST /api/account/deposit HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let bytes = one.repeat(BATCH).into_bytes();
                while !done.load(Ordering::Relaxed) {
                    if sent.load(Ordering::Relaxed) >= max_requests || Instant::now() > deadline || enough() {
                        done.store(true, Ordering::Relaxed);
                        break;
                    }
                    c.send_raw(&bytes).unwrap();
                    for _ in 0..BATCH {
                        assert_eq!(c.read_response().expect("deposit").status, 200);
                    }
                    sent.fetch_add(BATCH, Ordering::Relaxed);
                }
            });
        }
    });
    let sent = sent.load(Ordering::Relaxed);
    assert!(enough(), "fewer than {min_segments} segments after {sent} deposits");
    sent
}

const ONE_INSTRUMENT: &str = r#"
[[instrument]]
instrument_id = "cu2501"
exchange_id = "SHFE"
product_id = "cu"
volume_multiple = 5
price_tick = 10.0
margin_rate_long = 0.09
margin_rate_short = 0.09
limit_rate = 0.01
pre_settlement = 74360.0
pre_close = 74290.0
pre_open_interest = 0
max_order_volume = 500
delivery_year = 2025
delivery_month = 1
[instrument.commission]
open_rate = 0.00005
close_rate = 0.00005
close_today_rate = 0.0001
"#;

/// A data dir written with 1 MiB segments until at least three hold records, stopped with
/// SIGTERM, with its final state.
struct Segmented {
    tmp: tempfile::TempDir,
    opts: Options,
    dir: PathBuf,
    state: Value,
    records: usize,
}

impl Segmented {
    fn build() -> Segmented {
        let tmp = tempfile::tempdir().unwrap();
        // One instrument with a narrow band: debug builds check the engine's invariants after
        // every command, walking every price level of every book, and that check dominates the
        // cost of the ~10,000 commands needed here (about 2 ms each with the 13 shipped ones).
        let instruments = tmp.path().join("instruments.toml");
        std::fs::write(&instruments, ONE_INSTRUMENT).unwrap();
        let config = tmp.path().join("exchange.toml");
        let text = format!("[server]\ninstruments = {:?}\n[storage]\nsegment_mib = 1\n", instruments.to_str().unwrap());
        std::fs::write(&config, text).unwrap();
        let dir = tmp.path().join("data");
        let mut opts = Options::new(Some(&dir));
        opts.config = Some(config);
        opts.shards = 1;
        // No fdatasync while filling: the test needs volume, not durability (SIGTERM syncs).
        opts.sync = "none";
        let began = Instant::now();
        let mut server = start(&opts);
        let mut c = server.client();
        for t in 0..4 {
            c.ok("POST", "/api/account/open", Some(json!({"account_id": format!("f{t}")})));
        }
        let sent = fill_segments(&server, &dir, 3, 100_000);
        let state = engine_state(&mut c);
        drop(c);
        stop(&mut server);
        let segs = segments(&dir);
        let records = all_frames(&dir).len();
        eprintln!("{sent} deposits, {records} records in {} segments, in {:?}", segs.len(), began.elapsed());
        // Segments are consecutive: each starts where the one before ended; only trailing ones
        // may be empty.
        let mut next = 1;
        let mut holding = 0;
        for (first, path) in &segs {
            let found = frames(&std::fs::read(path).unwrap(), *first);
            if found.is_empty() {
                continue;
            }
            assert_eq!(holding, segs.iter().position(|(f, _)| f == first).unwrap(), "an empty segment before {path:?}");
            assert_eq!(*first, next, "{path:?}");
            next = first + found.len() as u64;
            holding += 1;
        }
        assert!(holding >= 3, "{segs:?}");
        assert_eq!(next as usize, records + 1);
        Segmented { tmp, opts, dir, state, records }
    }

    /// A copy of the data dir and the options that start a server on it.
    fn copy(&self, name: &str) -> (PathBuf, Options) {
        let copy = self.tmp.path().join(name);
        copy_dir(&self.dir, &copy);
        let mut opts = self.opts.clone();
        opts.storage = Some(copy.clone());
        (copy, opts)
    }

    /// Tears the last record of the first segment (later segments hold records); returns it.
    fn damage_end_of_first_segment(dir: &Path) -> Frame {
        let (first, path) = segments(dir)[0].clone();
        let last = *frames(&std::fs::read(&path).unwrap(), first).last().unwrap();
        patch(&path, |bytes| bytes[last.payload().start] ^= 0x01);
        last
    }
}

#[test]
fn several_segments_replay_and_a_missing_one_stops_start_up() {
    let base = Segmented::build();

    // Intact: every segment replays, in order.
    let (_, opts) = base.copy("intact");
    let server = start(&opts);
    assert_eq!(recovered_records(&server), base.records as u64, "{}", server.ready_line);
    assert_eq!(server.ready_field("torn_tail").as_deref(), Some("none"), "{}", server.ready_line);
    assert_eq!(engine_state(&mut server.client()), base.state);
    drop(server);

    // A missing middle segment: a gap; start-up stops naming the segment after it.
    let (dir, opts) = base.copy("gap");
    let segs = segments(&dir);
    std::fs::remove_file(&segs[1].1).unwrap();
    let expected = format!("segment starts at sequence {} but the log before it ends at {}", segs[2].0, segs[1].0 - 1);
    must_fail(&opts, &[&segment_name(segs[2].0), &expected]);

    // The end of the first segment damaged while later segments hold records: acknowledged
    // data was lost; start-up stops naming the damaged segment.
    let (dir, opts) = base.copy("damaged-end");
    let last = Segmented::damage_end_of_first_segment(&dir);
    let sequence = format!("expected sequence {}", last.sequence);
    must_fail(&opts, &[&segment_name(1), "offset", &sequence, "holds later records"]);
}

/// A segment whose end is damaged, followed by a segment holding records, is corruption: the
/// error names the file, the offset where the damage starts and the sequence expected there.
/// (Found by this test: the offset used to be reported as 0.)
#[test]
fn damaged_segment_end_is_reported_at_its_offset() {
    let base = Segmented::build();
    let (dir, opts) = base.copy("damaged-end");
    let last = Segmented::damage_end_of_first_segment(&dir);
    let offset = format!("offset {} ", last.offset);
    // Fails today: the message says "WAL corrupt at byte offset 0 (expected sequence N)".
    must_fail(&opts, &[&segment_name(1), &offset]);
}
