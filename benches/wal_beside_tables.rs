//! What a history job's table writes do to the shard's durable WAL on the same disk, for each
//! way of pacing them (`fsio::Pacing`). One glommio executor pinned to core 0 commits a small
//! WAL group (durable, so an `O_DSYNC` write) at a steady rate, as a shard at part load does,
//! and times each group's write; beside it a thread writes tables the way a flush or compaction
//! does (`fsio::write_unlisted_paced`, then the directory's fsync, and removes old ones).
//! The same-run baseline is the WAL alone (no table writes), in the same rounds, interleaved,
//! because this machine's disk and neighbours drift.
//!
//! Run: `cargo bench --bench wal_beside_tables`. Knobs: `BESIDE_SECONDS` per phase (default 3),
//! `BESIDE_ROUNDS` (default 3), `BESIDE_GROUP_US` between groups (default 1000),
//! `BESIDE_GROUP_RECORDS` of 128 bytes (default 32), `BESIDE_TABLE_MIB` per table (default 8),
//! `BESIDE_AVERAGE_MIB_S` (tables written at most this fast on average, whatever the pacing
//! within a table; default 0, back to back), `BESIDE_POLICIES` (see `policies`), `BESIDE_TABLE_CLASS=normal` (the
//! table thread at nice 0 instead of the server's idle class), `BESIDE_DIR`
//! (default a directory under ./target), `BESIDE_TABLE_DIR` (the tables elsewhere, e.g. on
//! another device; default `BESIDE_DIR`).

use qaexchange::server::thread_priority;
use qaexchange::storage::lsm::fsio::{self, Pacing};
use qaexchange::storage::wal::{recover, SyncMode, WalConfig, WalWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECORD_BYTES: usize = 128 - 24;
const WARMUP: Duration = Duration::from_millis(300);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Policy {
    name: String,
    /// None: the WAL alone.
    pacing: Option<Pacing>,
}

/// `BESIDE_POLICIES`, e.g. `128:0:16:0,64:0:32:1024` (piece KiB : pause us : MiB/s : sync
/// KiB), each beside the WAL alone; else the built-in list.
fn policies() -> Vec<Policy> {
    let p = |piece_kib: usize, pause_us: u64, mib_per_s: u64, sync_kib: usize| Pacing {
        piece_bytes: piece_kib << 10,
        pause_us,
        bytes_per_s: mib_per_s << 20,
        sync_every_bytes: sync_kib << 10,
    };
    if let Ok(list) = std::env::var("BESIDE_POLICIES") {
        let mut out = vec![Policy { name: "WAL alone".into(), pacing: None }];
        for spec in list.split(',') {
            let f: Vec<u64> = spec.split(':').map(|n| n.trim().parse().expect("BESIDE_POLICIES: numbers")).collect();
            assert_eq!(f.len(), 4, "BESIDE_POLICIES: piece KiB : pause us : MiB/s : sync KiB");
            let name = format!("{} KiB pieces, {} us pauses, {} MiB/s, sync per {} KiB", f[0], f[1], f[2], f[3]);
            out.push(Policy { name, pacing: Some(p(f[0] as usize, f[1], f[2], f[3] as usize)) });
        }
        return out;
    }
    vec![
        Policy { name: "WAL alone".into(), pacing: None },
        Policy { name: "one write".into(), pacing: Some(Pacing::NONE) },
        Policy { name: "512 KiB pieces, 500 us pauses".into(), pacing: Some(p(512, 500, 0, 0)) },
        Policy { name: "128 KiB pieces, 64 MiB/s".into(), pacing: Some(p(128, 0, 64, 0)) },
        Policy { name: "128 KiB pieces, 64 MiB/s, sync per 1 MiB".into(), pacing: Some(p(128, 0, 64, 1024)) },
        Policy { name: "512 KiB pieces, 500 us pauses, sync per 1 MiB".into(), pacing: Some(p(512, 500, 0, 1024)) },
        Policy { name: "128 KiB pieces, 16 MiB/s".into(), pacing: Some(p(128, 0, 16, 0)) },
    ]
}

/// A 4 KiB-aligned slice of `bytes` bytes inside `buf` (O_DIRECT needs the address aligned).
fn aligned(buf: &mut Vec<u8>, bytes: usize) -> &[u8] {
    buf.resize(bytes + 4096, 0);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 7919 % 251) as u8;
    }
    let offset = (4096 - buf.as_ptr() as usize % 4096) % 4096;
    &buf[offset..offset + bytes]
}

/// Writes tables into `dir` until `stop`, at most `average_bytes_per_s` over the phase (0: back
/// to back, as a store that is behind); returns the bytes written.
fn write_tables(dir: &Path, table_bytes: usize, pacing: Pacing, average_bytes_per_s: u64, stop: &AtomicBool) -> u64 {
    let began = Instant::now();
    let mut buf = Vec::new();
    let image = aligned(&mut buf, table_bytes);
    let mut written = 0u64;
    let mut id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("{id:06}.sst");
        fsio::write_unlisted_paced(dir, &name, image, true, pacing).expect("table write");
        fsio::sync_dir(dir).expect("directory sync");
        written += table_bytes as u64;
        // A compaction removes what it replaced: keep the directory small.
        if id >= 2 {
            let _ = std::fs::remove_file(dir.join(format!("{:06}.sst", id - 2)));
        }
        id += 1;
        if average_bytes_per_s > 0 {
            let due = Duration::from_secs_f64(written as f64 / average_bytes_per_s as f64);
            while !stop.load(Ordering::Relaxed) && began.elapsed() < due {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    written
}

struct Phase {
    /// Each group's write (durable: the write is its sync), ns, sorted.
    group_ns: Vec<u64>,
    table_mb_per_s: f64,
}

struct Setup {
    seconds: f64,
    group_every: Duration,
    records: usize,
    table_bytes: usize,
    average_bytes_per_s: u64,
}

fn run_phase(base: &Path, pacing: Option<Pacing>, setup: &Setup) -> Phase {
    let Setup { seconds, group_every, records, table_bytes, average_bytes_per_s } = *setup;
    let wal_dir = base.join("wal");
    let table_dir =
        std::env::var("BESIDE_TABLE_DIR").map_or_else(|_| base.join("tables"), |d| PathBuf::from(d).join("tables"));
    let _ = std::fs::remove_dir_all(&wal_dir);
    let _ = std::fs::remove_dir_all(&table_dir);
    std::fs::create_dir_all(&table_dir).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = stop.clone();
    let writer_dir = table_dir.clone();
    let (group_ns, writer) = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0))
        .io_memory(4 << 20)
        .spin_before_park(Duration::from_micros(200))
        .spawn(move || async move {
            // Started here to inherit core 0 and move off it, as a server's history job thread
            // for a shard on core 0 does (`niced_thread::Cores::Others`), in the kernel's idle
            // class unless told otherwise.
            let writer = pacing.map(|pacing| {
                std::thread::spawn(move || {
                    thread_priority::move_off_own_cores();
                    if std::env::var("BESIDE_TABLE_CLASS").as_deref() != Ok("normal") {
                        thread_priority::enter_idle_class();
                    }
                    let began = Instant::now();
                    let bytes = write_tables(&writer_dir, table_bytes, pacing, average_bytes_per_s, &writer_stop);
                    bytes as f64 / began.elapsed().as_secs_f64() / 1e6
                })
            });
            let (resume, _) = recover(&wal_dir, 1, |_, _| {}).unwrap();
            let config = WalConfig { dir: wal_dir.clone(), segment_bytes: 64 << 20, sync: SyncMode::Durable };
            let mut wal = WalWriter::open(config, &resume, false).await.unwrap();
            let payload = [0x5au8; RECORD_BYTES];
            let mut group_ns = Vec::new();
            let start = Instant::now();
            let mut next = start;
            while start.elapsed() < WARMUP + Duration::from_secs_f64(seconds) {
                for _ in 0..records {
                    wal.append(&payload).unwrap();
                }
                let t = Instant::now();
                wal.write_pending().await.unwrap();
                let ticket = wal.start_sync();
                wal.finish_sync(ticket).await.unwrap();
                if start.elapsed() > WARMUP {
                    group_ns.push(t.elapsed().as_nanos() as u64);
                }
                next += group_every;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    glommio::timer::sleep(wait).await;
                } else {
                    next = Instant::now();
                }
            }
            wal.close().await.unwrap();
            let _ = std::fs::remove_dir_all(&wal_dir);
            group_ns.sort_unstable();
            (group_ns, writer)
        })
        .unwrap()
        .join()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let table_mb_per_s = writer.map_or(0.0, |w| w.join().unwrap());
    let _ = std::fs::remove_dir_all(&table_dir);
    Phase { group_ns, table_mb_per_s }
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)] as f64 / 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let seconds: f64 = env_or("BESIDE_SECONDS", 3.0);
    let rounds: usize = env_or("BESIDE_ROUNDS", 3);
    let group_every = Duration::from_micros(env_or("BESIDE_GROUP_US", 1000));
    let records: usize = env_or("BESIDE_GROUP_RECORDS", 32);
    let table_bytes: usize = env_or::<usize>("BESIDE_TABLE_MIB", 8) << 20;
    let average_bytes_per_s: u64 = env_or::<u64>("BESIDE_AVERAGE_MIB_S", 0) << 20;
    let setup = Setup { seconds, group_every, records, table_bytes, average_bytes_per_s };
    let base = std::env::var("BESIDE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("wal-beside-tables"));
    std::fs::create_dir_all(&base).unwrap();
    let policies = policies();
    println!(
        "WAL groups of {records} x 128 B every {} us (durable), beside {} MiB tables (at most {} MiB/s on average, 0: \
         no limit); {seconds} s per phase, {rounds} rounds, dir {}",
        group_every.as_micros(),
        table_bytes >> 20,
        average_bytes_per_s >> 20,
        base.display()
    );
    println!("| round | table writes | groups | group write p50 us | p99 us | p99.9 us | max us | tables MB/s |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut p99s = vec![Vec::new(); policies.len()];
    let mut p999s = vec![Vec::new(); policies.len()];
    for round in 1..=rounds {
        for (i, policy) in policies.iter().enumerate() {
            let phase = run_phase(&base, policy.pacing, &setup);
            let g = &phase.group_ns;
            println!(
                "| {round} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                policy.name,
                g.len(),
                pct(g, 0.5),
                pct(g, 0.99),
                pct(g, 0.999),
                pct(g, 1.0),
                phase.table_mb_per_s
            );
            p99s[i].push(pct(g, 0.99));
            p999s[i].push(pct(g, 0.999));
        }
    }
    let alone99 = median(p99s[0].clone());
    let alone999 = median(p999s[0].clone());
    println!("\nMedians over rounds, against the WAL alone in the same rounds:");
    println!("| table writes | p99 us | p99 / alone | p99.9 us | p99.9 / alone |");
    println!("|---|---:|---:|---:|---:|");
    for (i, policy) in policies.iter().enumerate() {
        let (m99, m999) = (median(p99s[i].clone()), median(p999s[i].clone()));
        println!("| {} | {m99:.0} | {:.2} | {m999:.0} | {:.2} |", policy.name, m99 / alone99, m999 / alone999);
    }
}
