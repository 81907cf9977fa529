//! WAL append + group commit on this machine's disk: durable records per second, bytes per
//! second and commit (write + fdatasync) latency, for ~128-byte records at several batch sizes.
//! The same-run baseline is fio (`tools/fio_baseline.sh`), run by this bench when `fio` is on
//! PATH: sequential O_DIRECT write bandwidth and 4 KiB write + fdatasync latency.
//!
//! Run: `cargo bench --bench wal`. Knobs: `WAL_BENCH_DIR` (default: a temp dir under ./target),
//! `WAL_BENCH_SECONDS` per batch size (default 3), `WAL_BENCH_BATCHES` (records per batch,
//! comma-separated; default 1,32,512,8192,65536).

use qaexchange::storage::wal::{recover, SyncMode, WalConfig, WalWriter};
use std::time::{Duration, Instant};

const RECORD_BYTES: usize = 128 - 24; // payload; 128 bytes with the frame header

fn percentile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

struct Figures {
    records_per_s: f64,
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    commits: usize,
    /// The fdatasync alone (one batch at a time only): p50, p99.
    sync_us: Option<(f64, f64)>,
}

/// How batches overlap.
#[derive(Clone, Copy, PartialEq)]
enum Overlap {
    /// Build, write, sync, one batch after the other (the server's committer).
    None,
    /// Batch k+1 is built and written while batch k's fdatasync runs.
    Pipelined,
    /// `WalWriter::write_behind`: batch k+1 is built while batch k is written and batch k-1
    /// synced.
    WriteBehind,
}

/// A commit's latency runs from its batch's write to its own sync's return.
fn run(dir: std::path::PathBuf, batch_records: usize, seconds: f64, sync: SyncMode, overlap: Overlap) -> Figures {
    glommio::LocalExecutorBuilder::default()
        .io_memory(4 << 20)
        // Spin briefly before parking: an idle executor otherwise sleeps between a write's
        // submission and its completion, which dominates small-commit latency.
        .spin_before_park(Duration::from_micros(200))
        .spawn(move || async move {
            let _ = std::fs::remove_dir_all(&dir);
            let (resume, _) = recover(&dir, 1, |_, _| {}).unwrap();
            let config = WalConfig { dir: dir.clone(), segment_bytes: 64 << 20, sync };
            let mut wal = WalWriter::open(config, &resume, false).await.unwrap();
            let payload = [0x5au8; RECORD_BYTES];
            let mut latencies_ns = Vec::new();
            let start = Instant::now();
            let deadline = Duration::from_secs_f64(seconds);
            let mut in_flight = None;
            let mut writing = None;
            let mut sync_ns = Vec::new();
            while start.elapsed() < deadline {
                for _ in 0..batch_records {
                    wal.append(&payload).unwrap();
                }
                let t = Instant::now();
                if overlap == Overlap::WriteBehind {
                    let ticket = wal.write_behind().await.unwrap();
                    if let Some((previous, began)) = in_flight.take() {
                        wal.finish_sync(previous).await.unwrap();
                        latencies_ns.push(Instant::elapsed(&began).as_nanos() as u64);
                    }
                    if let (Some(ticket), Some(began)) = (ticket, writing.replace(t)) {
                        in_flight = Some((ticket, began));
                    }
                } else if overlap == Overlap::Pipelined {
                    wal.write_pending().await.unwrap();
                    let ticket = wal.start_sync();
                    if let Some((previous, began)) = in_flight.replace((ticket, t)) {
                        wal.finish_sync(previous).await.unwrap();
                        latencies_ns.push(began.elapsed().as_nanos() as u64);
                    }
                } else {
                    // `commit`, in its steps, to time the sync alone as well (fio's figure).
                    wal.write_pending().await.unwrap();
                    let synced = Instant::now();
                    let ticket = wal.start_sync();
                    wal.finish_sync(ticket).await.unwrap();
                    latencies_ns.push(t.elapsed().as_nanos() as u64);
                    sync_ns.push(synced.elapsed().as_nanos() as u64);
                }
            }
            if let Some((previous, began)) = in_flight.take() {
                wal.finish_sync(previous).await.unwrap();
                latencies_ns.push(Instant::elapsed(&began).as_nanos() as u64);
            }
            if let Some(began) = writing.take() {
                // The last batch written behind: `commit` waits for its write, then syncs it.
                wal.commit().await.unwrap();
                latencies_ns.push(Instant::elapsed(&began).as_nanos() as u64);
            }
            let elapsed = start.elapsed().as_secs_f64();
            let stats = wal.stats();
            wal.close().await.unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            latencies_ns.sort_unstable();
            sync_ns.sort_unstable();
            let sync_us = (sync == SyncMode::Durable && !sync_ns.is_empty())
                .then(|| (percentile(&sync_ns, 0.5) as f64 / 1e3, percentile(&sync_ns, 0.99) as f64 / 1e3));
            Figures {
                records_per_s: stats.records as f64 / elapsed,
                mb_per_s: stats.bytes as f64 / elapsed / 1e6,
                p50_us: percentile(&latencies_ns, 0.5) as f64 / 1e3,
                p99_us: percentile(&latencies_ns, 0.99) as f64 / 1e3,
                p999_us: percentile(&latencies_ns, 0.999) as f64 / 1e3,
                commits: latencies_ns.len(),
                sync_us,
            }
        })
        .unwrap()
        .join()
        .unwrap()
}

fn main() {
    let seconds: f64 = std::env::var("WAL_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3.0);
    let batches: Vec<usize> = std::env::var("WAL_BENCH_BATCHES")
        .ok()
        .map(|v| v.split(',').filter_map(|b| b.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 32, 512, 8192, 65536]);
    let base = std::env::var("WAL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("wal-bench"));
    std::fs::create_dir_all(&base).unwrap();
    if std::process::Command::new("fio").arg("--version").output().is_ok() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/fio_baseline.sh");
        let status = std::process::Command::new("bash").arg(script).arg(&base).status();
        println!("(fio baseline: {status:?})\n");
    } else {
        println!("fio not on PATH: no same-run baseline (apt-get install fio)\n");
    }
    println!("WAL, {}-byte records (frame included), {seconds} s per row, dir {}", RECORD_BYTES + 24, base.display());
    println!(
        "| sync | records/batch | durable records/s | MB/s | commits | commit p50 us | p99 us | p99.9 us | fdatasync \
         alone p50 / p99 us |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (sync, overlap, name) in [
        (SyncMode::Durable, Overlap::None, "fdatasync"),
        (SyncMode::Durable, Overlap::Pipelined, "fdatasync, pipelined"),
        (SyncMode::Durable, Overlap::WriteBehind, "fdatasync, write-behind"),
        (SyncMode::None, Overlap::None, "none"),
    ] {
        for &batch in &batches {
            let f = run(base.join("wal"), batch, seconds, sync, overlap);
            println!(
                "| {name} | {batch} | {:.0} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {} |",
                f.records_per_s,
                f.mb_per_s,
                f.commits,
                f.p50_us,
                f.p99_us,
                f.p999_us,
                f.sync_us.map_or("-".to_string(), |(p50, p99)| format!("{p50:.1} / {p99:.1}"))
            );
        }
    }
}
