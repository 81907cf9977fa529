//! Crash test of the WAL: a real writer process (qaexchange-wal-stress) appends and acknowledges
//! records; it is killed with SIGKILL at varied moments, over several rounds on the same
//! directory (each round recovers, possibly cutting a torn tail, and writes on). After every
//! kill, recovery must return every acknowledged record, each exactly once, with its content.

use qaexchange::storage::wal::{recover, stress_payload};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn run_and_kill(dir: &std::path::Path, seed: u64, run_for: Duration, sync: &str) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qaexchange-wal-stress"))
        .arg(dir)
        .args(["--segment-kib", "64", "--max-batch", "48", "--seed", &seed.to_string(), "--sync", sync])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the stress writer starts");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acknowledged = 0u64;
        for line in BufReader::new(stdout).lines() {
            match line.ok().and_then(|l| l.trim().parse::<u64>().ok()) {
                Some(sequence) => acknowledged = acknowledged.max(sequence),
                None => break,
            }
        }
        acknowledged
    });
    std::thread::sleep(run_for);
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn every_acknowledged_record_survives_sigkill() {
    kill_rounds("durable");
}

/// With `sync = "none"` a record is acknowledged once written into the page cache: a kill of
/// the process (not of the machine) must not lose it either.
#[test]
fn with_sync_none_every_acknowledged_record_survives_sigkill_of_the_process() {
    kill_rounds("none");
}

fn kill_rounds(sync: &str) {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().join("wal");
    let mut acknowledged_total = 0;
    let mut recovered_before = 0;
    let mut torn_tails = 0;
    for round in 0..6u64 {
        let run_for = Duration::from_millis(250 + round * 97 % 400);
        // A round killed before its first commit acknowledges nothing new (0 here).
        let acknowledged = run_and_kill(&dir, round + 1, run_for, sync);
        let mut next = 1u64;
        let (resume, report) = recover(&dir, 1, |sequence, bytes| {
            assert_eq!(sequence, next, "round {round}: records out of order or twice");
            assert_eq!(bytes, &stress_payload(sequence)[..], "round {round}: record {sequence} content");
            next += 1;
        })
        .unwrap_or_else(|e| panic!("round {round}: recovery failed: {e}"));
        let recovered = next - 1;
        assert!(recovered >= acknowledged, "round {round}: acknowledged {acknowledged} but recovered {recovered}");
        assert!(recovered >= recovered_before, "round {round}: the log lost records it had before");
        recovered_before = recovered;
        assert_eq!(resume.next_sequence, next);
        torn_tails += report.torn_tail.is_some() as u32;
        acknowledged_total = acknowledged_total.max(acknowledged);
    }
    assert!(acknowledged_total > 100, "the writer barely ran: {acknowledged_total} records");
    eprintln!("sync {sync}: 6 kills, {acknowledged_total} records acknowledged, {torn_tails} torn tails cut");
}
