//! The load generator against the real server (2 shards, durable WAL in a temp dir) and
//! against the raw responder: short bounded runs on 127.0.0.1, open and closed loop. Every
//! request is answered, the refusals are only the ones an exchange-core mix makes (self-trade
//! prevention, cancels and moves of orders already filled), the `.hgrm` files are written, and
//! the server's invariants hold afterwards with the trades the load made.

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
    // Only the refusals of the mix itself: self-trade (2008) and orders already gone (3001).
    for line in stdout.lines().filter(|l| l.trim_start().starts_with("refused: ") && !l.contains("none")) {
        let code = line.split_whitespace().nth(2).unwrap();
        assert!(code == "2008" || code == "3001", "unexpected refusal: {line}\n{stdout}");
    }
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
    assert!(num(&closed, "throughput") > 50.0, "{stdout}");
    // The load traded, and the venue is consistent.
    let mut c = server.client();
    let state = loop {
        let s = c.ok("GET", "/admin/state", None);
        if s["invariants"] == "ok" {
            break s;
        }
        assert!(s["invariants"].as_str().unwrap().starts_with("messages in flight"), "{s}");
    };
    let traded =
        state["state"]["instruments"].as_array().unwrap().iter().any(|i| i["open_interest"].as_i64() > Some(0));
    assert!(traded, "the load made no trade");
}

#[test]
fn loadgen_measures_the_raw_responder() {
    let mut raw = Command::new(RAW)
        .args(["--http", "127.0.0.1:0", "--shards", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn raw responder");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(raw.stdout.take().unwrap()), &mut line).unwrap();
    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("http=")).expect(&line).to_string();
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
