//! The real tqsdk npm client 1.3.1 ("tqsdk-js"), unmodified, against the real server (2 shards,
//! the instruments of tests/data/server_instruments.toml, a temporary data dir):
//! tools/tqsdk-js/scenario.mjs loads the instruments file, subscribes a quote, logs in with bid
//! "local", buys against a resting order placed over REST, compares the position and account with
//! the REST views, reads k-lines, rests and cancels an order, sends one the server refuses, and
//! checks that a wrong password gets an ERROR notify and no trade tree; once for each instrument
//! (cu2501 lives on shard 1, SR501 on shard 0). Needs `node` (20+) and the packages pinned in
//! tools/tqsdk-js/package-lock.json: `npm ci` runs first when tools/tqsdk-js/node_modules is
//! missing or does not match the lock file; a machine where that cannot be done fails this test,
//! with npm's log in the message.

mod server_support;

use serde_json::Value;
use server_support::{manifest_dir, run_limited, start, Options};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What `npm ci` may take (it downloads a few small packages).
const NPM_LIMIT: Duration = Duration::from_secs(600);
/// What one scenario run may take (it bounds every wait itself, at 10 s; this is the backstop).
const SCENARIO_LIMIT: Duration = Duration::from_secs(120);

fn js_dir() -> PathBuf {
    manifest_dir().join("tools/tqsdk-js")
}

/// Why node_modules does not match package-lock.json (None when it does): every package of the
/// lock file must be installed at its locked version (an optional one may be absent).
fn stale_reason(dir: &Path) -> Option<String> {
    let lock_text = match std::fs::read_to_string(dir.join("package-lock.json")) {
        Ok(text) => text,
        Err(e) => panic!("tools/tqsdk-js/package-lock.json: {e}"),
    };
    let lock: Value = serde_json::from_str(&lock_text).expect("package-lock.json is JSON");
    let packages = lock["packages"].as_object().expect("package-lock.json has `packages` (lockfileVersion 2+)");
    if !dir.join("node_modules").is_dir() {
        return Some("node_modules is missing".into());
    }
    for (path, entry) in packages {
        if path.is_empty() {
            continue;
        }
        let want = entry["version"].as_str().unwrap_or_default();
        let manifest = dir.join(path).join("package.json");
        match std::fs::read_to_string(&manifest).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
            Some(have) if have["version"].as_str() == Some(want) => {}
            Some(have) => return Some(format!("{path} is {}, the lock file says {want}", have["version"])),
            None if entry["optional"].as_bool() == Some(true) => {}
            None => return Some(format!("{path} is not installed")),
        }
    }
    None
}

/// `npm ci` in tools/tqsdk-js unless node_modules already matches the lock file; panics with
/// npm's output when it fails.
fn ensure_node_modules() {
    let dir = js_dir();
    let Some(reason) = stale_reason(&dir) else { return };
    eprintln!("tools/tqsdk-js: {reason}; running npm ci");
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir);
    let started = Instant::now();
    let (status, stdout, stderr) = run_limited(cmd, NPM_LIMIT, logs.path(), "npm-ci");
    let log = format!("--- npm ci stderr ---\n{stderr}--- npm ci stdout ---\n{stdout}");
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("npm ci in tools/tqsdk-js failed ({s}); the tqsdk-js client cannot be installed:\n{log}"),
        None => panic!("npm ci in tools/tqsdk-js still running after {NPM_LIMIT:?}:\n{log}"),
    }
    if let Some(reason) = stale_reason(&dir) {
        panic!("after npm ci, tools/tqsdk-js/node_modules still does not match the lock file: {reason}\n{log}");
    }
    eprintln!("npm ci done in {:.1}s", started.elapsed().as_secs_f64());
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn tqsdk_js_trading_flow() {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            eprintln!("node {}", String::from_utf8_lossy(&out.stdout).trim())
        }
        Ok(out) => panic!("`node --version` failed: {out:?}"),
        Err(e) => panic!("no `node` on PATH (Node 20+ is needed for the tqsdk-js client): {e}"),
    }
    ensure_node_modules();

    let data = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(Some(data.path()));
    opts.shards = 2;
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    let server = start(&opts);
    let ws = server.ready_field("ws").expect("ready line names ws=");
    let work = tempfile::tempdir().expect("tempdir");

    for symbol in ["SHFE.cu2501", "CZCE.SR501"] {
        let mut cmd = Command::new("node");
        cmd.current_dir(manifest_dir())
            .arg("tools/tqsdk-js/scenario.mjs")
            .arg("--http")
            .arg(format!("http://{}", server.addr))
            .arg("--ws")
            .arg(format!("ws://{ws}"))
            .arg("--symbol")
            .arg(symbol)
            .arg("--timeout")
            .arg("10");
        let started = Instant::now();
        let (status, stdout, stderr) = run_limited(cmd, SCENARIO_LIMIT, work.path(), symbol);
        let took = started.elapsed().as_secs_f64();
        match status {
            Some(s) if s.success() => {
                println!("--- scenario.mjs --symbol {symbol} ({took:.1}s) stdout ---\n{stdout}--- stderr ---\n{stderr}")
            }
            other => panic!(
                "scenario.mjs --symbol {symbol}: {} after {took:.1}s\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}\
                 --- server stderr (tail) ---\n{}",
                other.map_or_else(|| format!("killed after {SCENARIO_LIMIT:?}"), |s| s.to_string()),
                tail(&server.stderr(), 40)
            ),
        }
        assert!(stdout.contains("scenario: all "), "no closing line:\n{stdout}");
    }
}
