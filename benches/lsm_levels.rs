//! Write amplification of the history store's compaction as the history grows. The same
//! stream of history-like writes goes into two stores side by side:
//! - **two levels**: level 1 never counts as full (`level1_bytes = u64::MAX`), which is what
//!   the store did before leveled compaction: every compaction merged level 0 into all of
//!   level 1 that it overlapped;
//! - **leveled**: the server's shape scaled to the memtable (level 1 four memtables, each
//!   level below ten times the one above, tables an eighth of a memtable).
//!
//! Writes are keyed as the server keys history: a series (an account's orders, an
//! instrument's trades...) then a time, so each flush spans the whole key space and overlaps
//! every table of level 1. For each store: bytes flushed, bytes compactions wrote, write
//! amplification ((flushed + compacted out) / flushed) over the whole run and over its last
//! quarter (how it grows), compaction wall time and CPU time (per MB written), and the largest single job's input (what
//! one compaction costs the machine at the end).
//!
//! Run: `cargo bench --bench lsm_levels`. Knobs: `LSM_LEVELS_FLUSHES` (default 48),
//! `LSM_LEVELS_MEMTABLE_KIB` (4096), `LSM_LEVELS_SERIES` (2000), `LSM_BENCH_DIR` (default: a
//! temp dir under ./target).

use qaexchange::storage::lsm::store::remove_obsolete;
use qaexchange::storage::lsm::{Store, StoreOptions};
use std::time::Instant;

#[path = "support/knobs.rs"]
mod knobs;
use knobs::{env_or as env, splitmix64 as mix};

#[derive(Default)]
struct Totals {
    flushed: u64,
    compacted_in: u64,
    compacted_out: u64,
    compaction_secs: f64,
    /// CPU time of the whole process (the job and its writer thread, and deleting what it
    /// replaced) over the compactions.
    compaction_cpu_secs: f64,
    compactions: u64,
    largest_job_in: u64,
    grandparent_cuts: usize,
}

/// User and system CPU time of the whole process so far (every thread, finished ones too).
#[allow(unsafe_code)]
fn process_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the zeroed struct on this stack frame, passed by pointer.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn run(name: &str, dir: &std::path::Path, opts: StoreOptions, flushes: u64, series: u64) {
    let (mut store, _) = Store::open(dir, opts).expect("store");
    let value = vec![0x5au8; 120];
    let (mut total, mut last_quarter) = (Totals::default(), Totals::default());
    let began = Instant::now();
    let mut time = 0u64;
    for flush in 0..flushes {
        while !store.needs_flush() {
            time += 1;
            let mut key = format!("s{:06}/", mix(time) % series).into_bytes();
            key.extend_from_slice(&time.to_be_bytes());
            store.put(&key, &value);
        }
        let flushed = store.flush().expect("flush").map_or(0, |r| r.file_bytes);
        let quarter = flush >= flushes - flushes / 4;
        total.flushed += flushed;
        if quarter {
            last_quarter.flushed += flushed;
        }
        while let Some(job) = store.begin_compaction(4) {
            let t = Instant::now();
            let cpu = process_cpu_secs();
            let done = job.run();
            let report = store.finish_compaction(done).expect("compaction").expect("a report");
            remove_obsolete(store.take_obsolete());
            let secs = t.elapsed().as_secs_f64();
            let cpu_secs = process_cpu_secs() - cpu;
            // A table moved down a level is not rewritten: only the manifest is.
            let written = if report.moved_tables > 0 { 0 } else { report.bytes_out };
            let read = if report.moved_tables > 0 { 0 } else { report.bytes_in };
            for t in std::iter::once(&mut total).chain(quarter.then_some(&mut last_quarter)) {
                t.compacted_in += read;
                t.compacted_out += written;
                t.compaction_secs += secs;
                t.compaction_cpu_secs += cpu_secs;
                t.compactions += 1;
                t.largest_job_in = t.largest_job_in.max(read);
                t.grandparent_cuts += report.grandparent_cuts;
            }
        }
    }
    let secs = began.elapsed().as_secs_f64();
    let amp = |t: &Totals| (t.flushed + t.compacted_out) as f64 / t.flushed.max(1) as f64;
    let stats = store.stats();
    println!(
        "{name:<11} write amplification {:>5.2} (last quarter {:>5.2}); flushed {:>6.0} MB, compactions wrote {:>7.0} MB \
         in {} jobs, {:.1} s ({:.0} MB/s in), CPU {:.2} s ({:.3} ms per MB written); largest job {:.0} MB in, in the last quarter {:.0} MB; {} tables cut by the grandparent limit; \
         run {secs:.1} s; tables per level {:?}",
        amp(&total),
        amp(&last_quarter),
        total.flushed as f64 / 1e6,
        total.compacted_out as f64 / 1e6,
        total.compactions,
        total.compaction_secs,
        total.compacted_in as f64 / total.compaction_secs.max(1e-9) / 1e6,
        total.compaction_cpu_secs,
        total.compaction_cpu_secs * 1e3 / (total.compacted_out as f64 / 1e6).max(1e-9),
        total.largest_job_in as f64 / 1e6,
        last_quarter.largest_job_in as f64 / 1e6,
        total.grandparent_cuts,
        stats.tables,
    );
}

fn main() {
    let flushes: u64 = env("LSM_LEVELS_FLUSHES", 48);
    let memtable_bytes = env::<usize>("LSM_LEVELS_MEMTABLE_KIB", 4096) << 10;
    let series: u64 = env("LSM_LEVELS_SERIES", 2000);
    let base = std::env::var("LSM_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| "target".into());
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    println!(
        "{flushes} flushes of a {} KiB memtable, {series} series, 8-byte time keys, 120-byte values",
        memtable_bytes >> 10
    );
    let leveled = StoreOptions {
        memtable_bytes,
        table_bytes: memtable_bytes / 8,
        level1_bytes: 4 * memtable_bytes as u64,
        ..StoreOptions::default()
    };
    let two_levels = StoreOptions { level1_bytes: u64::MAX, ..leveled };
    run("two levels", &dir.path().join("two"), two_levels, flushes, series);
    run("leveled", &dir.path().join("leveled"), leveled, flushes, series);
}
