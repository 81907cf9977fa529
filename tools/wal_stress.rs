//! qaexchange-wal-stress: appends records to a WAL directory until stopped, printing the last
//! durable sequence after every commit. The crash test kills it with SIGKILL at random moments
//! and checks that recovery returns every sequence it printed.
//!
//! Usage: qaexchange-wal-stress DIR [--segment-kib N] [--max-batch N] [--seed N] [--sync durable|none]
//! With `--sync none` a commit is printed once written (into the page cache), not synced: what
//! the server answers with `sync = "none"`, which a kill of the process must not lose either.
//! Record `s` has a payload derived from `s` alone (`wal::stress_payload`), so any reader can check it.

use qaexchange::storage::wal::{recover, stress_payload as payload_for, SyncMode, WalConfig, WalWriter};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!(
            "usage: qaexchange-wal-stress DIR [--segment-kib N] [--max-batch N] [--seed N] [--sync durable|none]"
        );
        return ExitCode::from(2);
    };
    let (mut segment_kib, mut max_batch, mut seed, mut sync) = (256u64, 64u64, 1u64, SyncMode::Durable);
    while let Some(flag) = args.next() {
        let text = args.next();
        if flag == "--sync" {
            sync = match text.as_deref() {
                Some("durable") => SyncMode::Durable,
                Some("none") => SyncMode::None,
                _ => {
                    eprintln!("--sync takes durable or none");
                    return ExitCode::from(2);
                }
            };
            continue;
        }
        let value = text.and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--segment-kib", Some(v)) if v >= 4 && v % 4 == 0 => segment_kib = v,
            ("--max-batch", Some(v)) if v >= 1 => max_batch = v,
            ("--seed", Some(v)) => seed = v,
            _ => {
                eprintln!("bad argument {flag}");
                return ExitCode::from(2);
            }
        }
    }
    let result = glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move {
            let dir = std::path::PathBuf::from(dir);
            let mut checked = 0u64;
            let (resume, report) = recover(&dir, 1, |sequence, bytes| {
                assert_eq!(bytes, &payload_for(sequence)[..], "record {sequence} differs");
                checked += 1;
            })
            .map_err(|e| e.to_string())?;
            eprintln!("recovered {checked} records, torn tail: {:?}", report.torn_tail);
            let config = WalConfig { dir, segment_bytes: segment_kib * 1024, sync };
            let mut wal =
                WalWriter::open(config, &resume, report.torn_tail.is_some()).await.map_err(|e| e.to_string())?;
            let mut state = seed | 1;
            let stdout = std::io::stdout();
            loop {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                for _ in 0..1 + state % max_batch {
                    let sequence = wal.next_sequence();
                    wal.append(&payload_for(sequence)).map_err(|e| e.to_string())?;
                }
                let durable = wal.commit().await.map_err(|e| e.to_string())?;
                // Printed only after the commit returned: this is the acknowledgement.
                let mut out = stdout.lock();
                writeln!(out, "{durable}").map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
            }
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        })
        .map_err(|e| e.to_string())
        .and_then(|handle| handle.join().map_err(|e| format!("{e:?}")));
    match result {
        Ok(Err(message)) | Err(message) => {
            eprintln!("qaexchange-wal-stress: {message}");
            ExitCode::from(1)
        }
        Ok(Ok(())) => ExitCode::SUCCESS,
    }
}
