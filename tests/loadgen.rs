//! The load generator against the real server (2 shards, durable WAL in a temp dir) and
//! against the raw responder: short bounded runs on 127.0.0.1, open and closed loop. Every
//! request is answered, the refusals are only the ones an exchange-core mix makes (self-trade
//! prevention, cancels and moves of orders already filled), the `.hgrm` files are written, and
//! the server's invariants hold afterwards with the trades the load made. The same with
//! HTTP/1.1 pipelining (`--pipeline 8`): every request sent is answered, in order. And with
//! DIFF quote subscribers beside the order flow: every session gets the quote, and its changes.
//! And the order flow over DIFF trading sessions (`--diff-orders`): every session logs in, every
//! insert and cancel sent is seen through in an `rtn_data`, open and closed loop.

mod server_support;

use server_support::{start, Options};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};

const LOADGEN: &str = env!("CARGO_BIN_EXE_qaexchange-loadgen");
const RAW: &str = env!("CARGO_BIN_EXE_qaexchange-raw-responder");

/// Runs the load generator; returns its RESULT fields and its whole stdout.
fn loadgen(args: &[&str]) -> (BTreeMap<String, String>, String) {
    let output = Command::new(LOADGEN).args(args).stdin(Stdio::null()).output().expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "loadgen failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().find(|l| l.starts_with("RESULT ")).unwrap_or_else(|| panic!("no RESULT: {stdout}"));
    let fields = line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    (fields, stdout)
}

fn num(fields: &BTreeMap<String, String>, key: &str) -> f64 {
    fields[key].parse().unwrap_or_else(|_| panic!("{key} in {fields:?}"))
}

/// No broken connection, every request sent in the measured window answered, and the
/// throughput is what was answered over the measured time.
fn all_answered(fields: &BTreeMap<String, String>, measured_s: f64, stdout: &str) {
    assert_eq!(num(fields, "broken"), 0.0, "{stdout}");
    let completed = num(fields, "completed");
    assert!(completed > 0.0, "{stdout}");
    assert_eq!(completed, num(fields, "sent"), "a request sent was not answered: {stdout}");
    assert!((num(fields, "throughput") * measured_s - completed).abs() <= 1.0, "{stdout}");
}

/// Only the refusals of the mix itself: self-trade (2008) and orders already gone (3001); when
/// pipelined also those of a modify sent while an earlier modify of the same order is still in
/// flight: refused as such (3003), or, once the earlier one is done, to the price it already
/// moved to (3002, the flow learns the new price only from the answer).
fn only_mix_refusals(stdout: &str, pipelined: bool) {
    for line in stdout.lines().filter(|l| l.trim_start().starts_with("refused: ") && !l.contains("none")) {
        let code = line.split_whitespace().nth(2).unwrap();
        let expected = code == "2008" || code == "3001" || (pipelined && (code == "3002" || code == "3003"));
        assert!(expected, "unexpected refusal: {line}\n{stdout}");
    }
}

/// Waits for the server's invariants (after the load's messages between shards settle);
/// whether the load traded.
fn consistent_and_traded(server: &server_support::ServerProcess) -> bool {
    let mut c = server.client();
    let state = loop {
        let s = c.ok("GET", "/admin/state", None);
        if s["invariants"] == "ok" {
            break s;
        }
        assert!(s["invariants"].as_str().unwrap().starts_with("messages in flight"), "{s}");
    };
    state["state"]["instruments"].as_array().unwrap().iter().any(|i| i["open_interest"].as_i64() > Some(0))
}

/// A raw responder on a free port, and its address.
fn raw_responder() -> (std::process::Child, String) {
    let (raw, line) = raw_responder_with(&[]);
    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("http=")).expect(&line).to_string();
    (raw, addr)
}

/// A raw responder started with `extra` arguments, and its ready line.
fn raw_responder_with(extra: &[&str]) -> (std::process::Child, String) {
    let mut raw = Command::new(RAW)
        .args(["--http", "127.0.0.1:0", "--shards", "1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn raw responder");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(raw.stdout.take().unwrap()), &mut line).unwrap();
    (raw, line)
}

#[test]
fn loadgen_drives_the_server_open_and_closed_loop() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&Options::new(Some(dir.path())));
    let target = server.addr.to_string();
    let out = dir.path().join("hgrm");
    let out = out.to_str().unwrap();
    // Open loop, 300 requests/s for 1 s over 8 connections: every request is sent and answered.
    let (open, stdout) = loadgen(&[
        "--target",
        &target,
        "--connections",
        "8",
        "--rate",
        "300",
        "--warmup",
        "0.3",
        "--duration",
        "1",
        "--out",
        out,
        "--label",
        "open",
    ]);
    assert_eq!(num(&open, "broken"), 0.0, "{stdout}");
    let answered = num(&open, "throughput");
    assert!((240.0..=360.0).contains(&answered), "open loop answered {answered}/s: {stdout}");
    assert!(num(&open, "p50_us") > 0.0 && num(&open, "p99_us") >= num(&open, "p50_us"), "{stdout}");
    // A request's wait for a slot and its send lag are parts of its latency (which counts from
    // its intended time), so no percentile of either can be above the latency's.
    assert!(num(&open, "send_lag_p50_us") > 0.0, "{stdout}");
    for part in ["send_lag", "slot_wait"] {
        assert!(num(&open, &format!("{part}_p99_us")) <= num(&open, "p99_us"), "{stdout}");
        assert!(num(&open, &format!("{part}_max_us")) <= num(&open, "max_us"), "{stdout}");
    }
    assert!(stdout.contains("send lag (the generator's own lateness): p50"), "{stdout}");
    assert!(stdout.contains("slot wait (for an earlier answer):       p50"), "{stdout}");
    all_answered(&open, 1.0, &stdout);
    assert_eq!(num(&open, "pipeline"), 1.0, "{stdout}");
    only_mix_refusals(&stdout, false);
    for name in ["open-all.hgrm", "open-submit.hgrm"] {
        let text = std::fs::read_to_string(dir.path().join("hgrm").join(name)).unwrap();
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"), "{text}");
        assert!(text.contains("#[Max     ="), "{text}");
    }
    // Closed loop: as fast as answers come, on one instrument only.
    let (closed, stdout) = loadgen(&[
        "--target",
        &target,
        "--connections",
        "4",
        "--rate",
        "0",
        "--warmup",
        "0.2",
        "--duration",
        "0.5",
        "--out",
        out,
        "--label",
        "closed",
        "--instruments",
        "SR501",
        "--mix",
        "submit",
    ]);
    assert_eq!(num(&closed, "broken"), 0.0, "{stdout}");
    all_answered(&closed, 0.5, &stdout);
    assert!(num(&closed, "throughput") > 50.0, "{stdout}");
    // Closed loop sends each request when its slot frees: there is no intended time to lag.
    assert!(!closed.contains_key("send_lag_p99_us") && !stdout.contains("send lag"), "{stdout}");
    // The load traded, and the venue is consistent.
    assert!(consistent_and_traded(&server), "the load made no trade");
}

/// Pipelined: whether the server answers a connection's requests one after the other or
/// several at once, each comes back in order, so every request sent is answered, and the only
/// refusals are the mix's (more of them: a cancel may name an order whose cancel is in flight,
/// a modify one whose modify is).
#[test]
fn loadgen_pipelines_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&Options::new(Some(dir.path())));
    let target = server.addr.to_string();
    let out = dir.path().join("hgrm");
    let out = out.to_str().unwrap();
    let common = ["--target", &target, "--connections", "4", "--pipeline", "8", "--warmup", "0.2", "--out", out];
    // Closed loop: eight outstanding per connection, as fast as answers come.
    let (closed, stdout) =
        loadgen(&[&common[..], &["--rate", "0", "--duration", "0.5", "--label", "closed8"]].concat());
    assert_eq!(num(&closed, "pipeline"), 8.0, "{stdout}");
    all_answered(&closed, 0.5, &stdout);
    assert!(num(&closed, "throughput") > 50.0, "{stdout}");
    only_mix_refusals(&stdout, true);
    // Open loop at 300/s: the rate holds with slots to spare.
    let (open, stdout) = loadgen(&[&common[..], &["--rate", "300", "--duration", "1", "--label", "open8"]].concat());
    all_answered(&open, 1.0, &stdout);
    let answered = num(&open, "throughput");
    assert!((240.0..=360.0).contains(&answered), "open loop answered {answered}/s: {stdout}");
    only_mix_refusals(&stdout, true);
    assert!(consistent_and_traded(&server), "the load made no trade");
}

/// DIFF sessions beside the HTTP order flow: 20 sessions follow SHFE.cu2501 while the flow
/// trades it; each gets the quote, the changes are delivered and timed, nothing breaks.
#[test]
fn loadgen_fans_quotes_out_to_diff_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&Options::new(None));
    let target = server.addr.to_string();
    let ws = server.ready_field("ws").expect("ready line names ws=");
    let out = dir.path().join("hgrm");
    let out = out.to_str().unwrap();
    let (fields, stdout) = loadgen(&[
        "--target",
        &target,
        "--connections",
        "4",
        "--rate",
        "400",
        "--warmup",
        "0.5",
        "--duration",
        "2",
        "--instruments",
        "cu2501",
        "--diff-sessions",
        "20",
        "--diff-target",
        &ws,
        "--diff-instrument",
        "SHFE.cu2501",
        "--cpu-pid",
        &server.child.id().to_string(),
        "--out",
        out,
        "--label",
        "fanout",
    ]);
    all_answered(&fields, 2.0, &stdout);
    assert_eq!(num(&fields, "diff_sessions"), 20.0, "{stdout}");
    assert_eq!(num(&fields, "diff_connected"), 20.0, "{stdout}");
    assert_eq!(num(&fields, "diff_with_quote"), 20.0, "a session never got the quote: {stdout}");
    assert_eq!(num(&fields, "diff_broken"), 0.0, "{stdout}");
    let deliveries = num(&fields, "diff_deliveries");
    assert!(deliveries > 0.0, "{stdout}");
    assert!((num(&fields, "diff_deliveries_per_s") * 2.0 - deliveries).abs() <= 1.0, "{stdout}");
    // Latency from the quote's datetime (the change's time) to the read: positive, ordered,
    // and far below the run's length on an idle quote flow.
    let (p50, p99, max) = (num(&fields, "diff_p50_us"), num(&fields, "diff_p99_us"), num(&fields, "diff_max_us"));
    assert!(p50 > 0.0 && p99 >= p50 && max >= p99 && max < 2_500_000.0, "{stdout}");
    assert!(num(&fields, "server_cores") > 0.0, "{stdout}");
    assert!(num(&fields, "diff_bytes_per_delivery") > 100.0, "{stdout}");
    let text = std::fs::read_to_string(dir.path().join("hgrm").join("fanout-diff.hgrm")).unwrap();
    assert!(text.contains(&format!("Total count    = {:>12}", deliveries as u64)), "{text}");
}

/// The order flow over DIFF (`--diff-orders`): four sessions, each logged in to its own
/// account, insert and cancel; every order sent shows up in an `rtn_data` (inserts) or ends
/// (cancels), both paths get round trips and `.hgrm` files, and the only refusals are the
/// mix's: self-trade (2008) for inserts, an order that filled before its cancel came (3001).
#[test]
fn loadgen_sends_orders_over_diff_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&Options::new(Some(dir.path())));
    let target = server.addr.to_string();
    let ws = server.ready_field("ws").expect("ready line names ws=");
    let out = dir.path().join("hgrm");
    let out = out.to_str().unwrap();
    let common = ["--target", &target, "--diff-orders", "--diff-target", &ws, "--connections", "4", "--out", out];
    let check = |fields: &BTreeMap<String, String>, measured_s: f64, stdout: &str| {
        all_answered(fields, measured_s, stdout);
        assert_eq!(fields["mode"], "diff-orders", "{stdout}");
        assert_eq!(num(fields, "diff_logged_in"), 4.0, "{stdout}");
        assert_eq!(num(fields, "other_notifies"), 0.0, "{stdout}");
        let (inserts, cancels) = (num(fields, "diff_insert_n"), num(fields, "diff_cancel_n"));
        assert!(inserts > 0.0 && cancels > 0.0, "{stdout}");
        assert_eq!(inserts + cancels, num(fields, "completed"), "{stdout}");
        for path in ["diff_insert", "diff_cancel"] {
            let (p50, p99) = (num(fields, &format!("{path}_p50_us")), num(fields, &format!("{path}_p99_us")));
            assert!(p50 > 0.0 && p99 >= p50, "{path}: {stdout}");
        }
        assert!(num(fields, "rtn_data") >= inserts, "{stdout}");
        for line in stdout.lines().filter(|l| l.trim_start().starts_with("refused: ") && !l.contains("none")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let expected = matches!((words[1], words[2]), ("diff_insert", "2008") | ("diff_cancel", "3001"));
            assert!(expected, "unexpected refusal: {line}\n{stdout}");
        }
        assert!(!stdout.contains("broken connections"), "{stdout}");
    };
    // Open loop, 200 orders/s over 4 sessions for 1.5 s.
    let (open, stdout) = loadgen(
        &[&common[..], &["--rate", "200", "--warmup", "0.3", "--duration", "1.5", "--label", "diffopen"]].concat(),
    );
    check(&open, 1.5, &stdout);
    let answered = num(&open, "throughput");
    assert!((160.0..=240.0).contains(&answered), "open loop completed {answered}/s: {stdout}");
    for (name, key) in [("diffopen-diff_insert.hgrm", "diff_insert_n"), ("diffopen-diff_cancel.hgrm", "diff_cancel_n")]
    {
        let text = std::fs::read_to_string(dir.path().join("hgrm").join(name)).unwrap();
        assert!(text.contains(&format!("Total count    = {:>12}", num(&open, key) as u64)), "{name}: {text}");
    }
    // Closed loop: one order outstanding per session, the next as soon as it is seen through.
    let (closed, stdout) = loadgen(
        &[&common[..], &["--rate", "0", "--warmup", "0.2", "--duration", "0.5", "--label", "diffclosed"]].concat(),
    );
    check(&closed, 0.5, &stdout);
    assert!(num(&closed, "throughput") > 20.0, "{stdout}");
    assert!(consistent_and_traded(&server), "the load made no trade");
}

#[test]
fn loadgen_measures_the_raw_responder() {
    let (mut raw, addr) = raw_responder();
    let dir = tempfile::tempdir().unwrap();
    let (fields, stdout) = loadgen(&[
        "--raw",
        "--target",
        &addr,
        "--connections",
        "4",
        "--rate",
        "0",
        "--warmup",
        "0.2",
        "--duration",
        "0.5",
        "--out",
        dir.path().to_str().unwrap(),
        "--label",
        "raw",
    ]);
    let _ = raw.kill();
    let _ = raw.wait();
    assert_eq!(num(&fields, "broken"), 0.0, "{stdout}");
    assert_eq!(num(&fields, "refused"), 0.0, "{stdout}");
    assert!(num(&fields, "throughput") > 100.0, "{stdout}");
}

/// The fan-out's baseline (`--ws`): the raw responder answers every peek at once with the
/// subscribed quote, a whole one, stamped with the time of the answer; the generator counts
/// those deliveries and times them as it does the server's.
#[test]
fn loadgen_fans_out_from_the_raw_responder() {
    let (mut raw, line) = raw_responder_with(&["--ws", "127.0.0.1:0"]);
    let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).expect(&line).to_string();
    let (http, ws) = (field("http="), field("ws="));
    let dir = tempfile::tempdir().unwrap();
    let (fields, stdout) = loadgen(&[
        "--raw",
        "--target",
        &http,
        "--connections",
        "2",
        "--rate",
        "100",
        "--warmup",
        "0.2",
        "--duration",
        "0.5",
        "--diff-sessions",
        "10",
        "--diff-target",
        &ws,
        "--diff-instrument",
        "SHFE.cu2501",
        "--out",
        dir.path().to_str().unwrap(),
        "--label",
        "rawfan",
    ]);
    let _ = raw.kill();
    let _ = raw.wait();
    all_answered(&fields, 0.5, &stdout);
    assert_eq!(num(&fields, "diff_connected"), 10.0, "{stdout}");
    assert_eq!(num(&fields, "diff_with_quote"), 10.0, "{stdout}");
    assert_eq!(num(&fields, "diff_broken"), 0.0, "{stdout}");
    // Every peek is answered: far more deliveries than a quote moved by 100 orders/s gets.
    assert!(num(&fields, "diff_deliveries") > 1000.0, "{stdout}");
    let bytes = num(&fields, "diff_bytes_per_delivery");
    assert!((600.0..1000.0).contains(&bytes), "not a whole quote: {bytes} bytes\n{stdout}");
    let (p50, max) = (num(&fields, "diff_p50_us"), num(&fields, "diff_max_us"));
    assert!(p50 > 0.0 && max >= p50 && max < 500_000.0, "{stdout}");
}

/// Pipelined against the raw responder (which answers every complete request in its buffer
/// with one write): eight outstanding per connection, all answered in order, none refused.
#[test]
fn loadgen_pipelines_to_the_raw_responder() {
    let (mut raw, addr) = raw_responder();
    let dir = tempfile::tempdir().unwrap();
    let (fields, stdout) = loadgen(&[
        "--raw",
        "--target",
        &addr,
        "--connections",
        "4",
        "--pipeline",
        "8",
        "--rate",
        "0",
        "--warmup",
        "0.2",
        "--duration",
        "0.5",
        "--out",
        dir.path().to_str().unwrap(),
        "--label",
        "raw8",
    ]);
    let _ = raw.kill();
    let _ = raw.wait();
    assert_eq!(num(&fields, "pipeline"), 8.0, "{stdout}");
    all_answered(&fields, 0.5, &stdout);
    assert_eq!(num(&fields, "refused"), 0.0, "{stdout}");
    assert!(num(&fields, "throughput") > 100.0, "{stdout}");
}

/// With auth on, `--auth USER:PASSWORD` registers the run's user, logs in, and every request
/// carries the token: the accounts are the user's, and nothing is refused for want of a token
/// or for ownership.
#[test]
fn loadgen_logs_in_on_a_server_with_auth() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(Some(dir.path()));
    opts.auth = true;
    let server = start(&opts);
    let target = server.addr.to_string();
    let out = dir.path().join("hgrm");
    let args = ["--target", &target, "--connections", "4", "--duration", "0.5", "--warmup", "0.2", "--pipeline", "4"];
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["--out", out.to_str().unwrap(), "--auth", "loadgen:load-pw"]);
    let (fields, stdout) = loadgen(&args);
    all_answered(&fields, 0.5, &stdout);
    only_mix_refusals(&stdout, true);
    // The accounts belong to the run's user.
    let mut c = server_support::login_client(&server, "loadgen", "load-pw");
    assert_eq!(c.ok("GET", "/api/user/loadgen/accounts", None).as_array().unwrap().len(), 4);
    // Without the token the same run is refused at once.
    let output = Command::new(LOADGEN).args(["--target", &target, "--duration", "0.2"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("9201"), "{}", String::from_utf8_lossy(&output.stderr));
}

/// `--stall-probe`: sends nothing, spins on each core asked for and reports its stalls; bad
/// lengths are refused with a message.
#[test]
fn loadgen_probes_the_machines_stalls() {
    let output = Command::new(LOADGEN).args(["--stall-probe", "0.2", "--stall-cores", "0"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("STALL ")).unwrap_or_else(|| panic!("no STALL: {stdout}"));
    let fields: BTreeMap<String, String> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    assert_eq!(fields["core"], "0", "{stdout}");
    assert!(num(&fields, "seconds") >= 0.2, "{stdout}");
    assert!((0.0..=100.0).contains(&num(&fields, "stalled_pct")), "{stdout}");
    assert!(stdout.contains("stall probe core 0: stalled"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("STALL ")).count(), 1, "{stdout}");
    for bad in ["0", "-1", "601", "nan"] {
        let output = Command::new(LOADGEN).args(["--stall-probe", bad]).output().unwrap();
        assert!(!output.status.success(), "--stall-probe {bad} was accepted");
    }
}
