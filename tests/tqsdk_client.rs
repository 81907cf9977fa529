//! The real tqsdk 1.8.3 Python client, unmodified, against the real server (2 shards, the
//! instruments of tests/data/server_instruments.toml on both shards, a temporary data dir):
//! tools/tqsdk/scenario.py logs in with TqAccount("local", ..), trades on both instruments
//! against a resting order placed over REST, cancels, reads k-lines and compares what tqsdk
//! holds with the REST views; a second test checks a wrong password (tqsdk in a child process
//! and a raw DIFF client). tools/tqsdk/setup.sh makes the Python 3.8 venv first (once per test
//! binary); a machine where it cannot fails these tests, with the setup log in the message.

mod server_support;

use server_support::{manifest_dir, run_limited, start, Options};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What `setup.sh` may take on a fresh machine (it downloads wheels; a pyenv build of Python
/// takes longer, but CI has 3.8 installed).
const SETUP_LIMIT: Duration = Duration::from_secs(900);
/// What one scenario run may take (it bounds every wait itself; this is the backstop).
const SCENARIO_LIMIT: Duration = Duration::from_secs(240);

/// The venv's python, made by `tools/tqsdk/setup.sh` once per test binary.
fn venv_python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cmd = Command::new("bash");
            cmd.arg("tools/tqsdk/setup.sh").current_dir(manifest_dir());
            let started = Instant::now();
            let (status, stdout, stderr) = run_limited(cmd, SETUP_LIMIT, dir.path(), "setup");
            let log = format!("--- setup.sh stderr ---\n{stderr}--- setup.sh stdout ---\n{stdout}");
            match status {
                Some(s) if s.success() => {}
                Some(s) => return Err(format!("tools/tqsdk/setup.sh failed ({s}):\n{log}")),
                None => return Err(format!("tools/tqsdk/setup.sh still running after {SETUP_LIMIT:?}:\n{log}")),
            }
            let python = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
            if !python.is_file() {
                return Err(format!("setup.sh's last line is not a python: {python:?}\n{log}"));
            }
            eprintln!("tqsdk venv ready in {:.1}s: {}", started.elapsed().as_secs_f64(), python.display());
            Ok(python)
        })
        .clone()
        .unwrap_or_else(|e| panic!("no tqsdk client environment (Python 3.8 venv with tqsdk 1.8.3):\n{e}"))
}

/// Starts the server and runs scenario.py `--only part`; panics with its output unless it
/// exits 0.
fn run_scenario(part: &str) {
    let python = venv_python();
    let data = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(Some(data.path()));
    opts.shards = 2;
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    let server = start(&opts);
    let ws = server.ready_field("ws").expect("ready line names ws=");
    let work = tempfile::tempdir().expect("tempdir");
    let frames = work.path().join("frames.jsonl");

    let mut cmd = Command::new(&python);
    cmd.current_dir(manifest_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        // tqsdk may write under ~/.tqsdk; keep it in the temp dir.
        .env("HOME", work.path())
        .arg("tools/tqsdk/scenario.py")
        .arg("--http")
        .arg(format!("http://{}", server.addr))
        .arg("--ws")
        .arg(format!("ws://{ws}"))
        .arg("--symbols")
        .arg("CZCE.SR501,SHFE.cu2501")
        .arg("--only")
        .arg(part)
        .arg("--frames")
        .arg(&frames);
    let started = Instant::now();
    let (status, stdout, stderr) = run_limited(cmd, SCENARIO_LIMIT, work.path(), part);
    let took = started.elapsed().as_secs_f64();
    match status {
        Some(s) if s.success() => {
            println!("--- scenario.py --only {part} ({took:.1}s) stdout ---\n{stdout}--- stderr ---\n{stderr}")
        }
        other => panic!(
            "scenario.py --only {part}: {} after {took:.1}s\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}\
             --- server stderr (tail) ---\n{}",
            other.map_or_else(|| format!("killed after {SCENARIO_LIMIT:?}"), |s| s.to_string()),
            tail(&server.stderr(), 40)
        ),
    }
    assert!(stdout.contains("scenario: all "), "no closing line:\n{stdout}");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Login, quotes, an order that trades against a REST order, a cancel, k-lines, a deposit; what
/// tqsdk holds equals the REST views.
#[test]
fn tqsdk_trading_flow() {
    run_scenario("trading");
}

/// A wrong password: tqsdk logs the server's ERROR notify and gets no trade tree; a raw DIFF
/// client sees the same (and the right password as the control).
#[test]
fn tqsdk_wrong_password() {
    run_scenario("login");
}
