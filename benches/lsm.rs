//! History store engine (`storage::lsm`) on this machine: memtable insert and get (also with
//! history-shaped keys, in one skiplist and in one per series), SSTable
//! point reads (bloom filter hit = key present, miss = key absent) and range reads, and
//! compaction throughput. Throughput is wall clock over a whole pass; p50/p99 come from a
//! separate pass timing every op with its own pair of `Instant`s (which adds ~20-40 ns).
//!
//! Run: `cargo bench --bench lsm`. Knobs: `LSM_BENCH_KEYS` (default 1,000,000; 16-byte keys,
//! 32-byte values), `LSM_BENCH_DIR` (default: a temp dir under ./target).

use qaexchange::storage::lsm::compaction;
use qaexchange::storage::lsm::format::{self, BuildOptions};
use qaexchange::storage::lsm::memtable::Memtable;
use qaexchange::storage::lsm::sstable;
use qaexchange::storage::lsm::store::remove_obsolete;
use qaexchange::storage::lsm::{Entry, Store, StoreOptions};
use std::hint::black_box;
use std::ops::Bound;
use std::time::Instant;

#[path = "support/knobs.rs"]
mod knobs;
use knobs::splitmix64 as mix;

fn key(i: u64) -> Vec<u8> {
    format!("k{:015}", i).into_bytes()
}

fn report(name: &str, ops: usize, secs: f64, mut lat_ns: Vec<u64>) {
    lat_ns.sort_unstable();
    let pct = |q: f64| lat_ns[((lat_ns.len() as f64 * q) as usize).min(lat_ns.len() - 1)];
    println!(
        "{name:<34} {:>12.0} ops/s   p50 {:>7} ns   p99 {:>7} ns   ({ops} ops in {secs:.3} s)",
        ops as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
}

fn timed(n: usize, mut f: impl FnMut(usize)) -> (f64, Vec<u64>) {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    let secs = start.elapsed().as_secs_f64();
    let sample = n.min(200_000);
    let mut lat = Vec::with_capacity(sample);
    for i in 0..sample {
        let t = Instant::now();
        f(i);
        lat.push(t.elapsed().as_nanos() as u64);
    }
    (secs, lat)
}

fn main() {
    let n: u64 = std::env::var("LSM_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let base = std::env::var("LSM_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| "target".into());
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let value = [7u8; 32];
    println!("lsm bench: {n} keys (16 B) x values (32 B), dir {}", dir.path().display());

    // Memtable.
    let keys: Vec<Vec<u8>> = (0..n).map(|i| key(mix(i) % (n * 4))).collect();
    let mut mem = Memtable::new();
    let start = Instant::now();
    for (i, k) in keys.iter().enumerate() {
        mem.put(k, i as u64 + 1, Some(value.to_vec()));
    }
    let insert_secs = start.elapsed().as_secs_f64();
    let mut fresh = Memtable::new();
    let mut lat = Vec::with_capacity(200_000);
    for (i, k) in keys.iter().take(200_000).enumerate() {
        let k = k.clone();
        let v = Some(value.to_vec());
        let t = Instant::now();
        fresh.put(&k, i as u64 + 1, v);
        lat.push(t.elapsed().as_nanos() as u64);
    }
    report("memtable insert", keys.len(), insert_secs, lat);
    println!("  memtable: {} entries, ~{} MiB", mem.len(), mem.approximate_bytes() >> 20);
    let (secs, lat) = timed(keys.len(), |i| {
        black_box(mem.get(&keys[(mix(i as u64 + 7) % n) as usize]));
    });
    report("memtable get (present)", keys.len(), secs, lat);

    // History-shaped keys (a series, a 0, then a time and an id; 150 series interleaved), as
    // the server writes them: one skiplist for all, against one per series (the server's).
    let series_keys: Vec<Vec<u8>> = (0..n)
        .map(|t| {
            let mut k = format!("oacct{:06}", mix(t) % 150).into_bytes();
            k.push(0);
            k.extend_from_slice(&(1_700_000_000_000_000_000u64 + t * 1000).to_be_bytes());
            k.extend_from_slice(&t.to_be_bytes());
            k
        })
        .collect();
    for (name, separator) in
        [("memtable insert, series, one list", None), ("memtable insert, series, per series", Some(0))]
    {
        let mut m = Memtable::partitioned(separator);
        let start = Instant::now();
        for (i, k) in series_keys.iter().enumerate() {
            m.put(k, i as u64 + 1, Some(value.to_vec()));
        }
        let secs = start.elapsed().as_secs_f64();
        let mut timed_m = Memtable::partitioned(separator);
        let mut lat = Vec::with_capacity(200_000);
        for (i, k) in series_keys.iter().take(200_000).enumerate() {
            let (k, v) = (k.clone(), Some(value.to_vec()));
            let t = Instant::now();
            timed_m.put(&k, i as u64 + 1, v);
            lat.push(t.elapsed().as_nanos() as u64);
        }
        report(name, series_keys.len(), secs, lat);
    }

    // One SSTable holding the memtable.
    let entries: Vec<Entry> = mem.freeze().iter().collect();
    let t = Instant::now();
    let (table, mode) = sstable::write_table(dir.path(), 1, &entries, BuildOptions::default()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "sstable write ({mode:?})             {:>12.1} MB/s   ({} entries, {} bytes in {secs:.3} s)",
        table.file_bytes() as f64 / secs / 1e6,
        table.entry_count(),
        table.file_bytes()
    );
    // The same table built in memory only (CPU: encoding, CRCs, bloom filter), then written
    // and opened from that image (I/O: O_DIRECT write, fdatasync, rename, open). The timing
    // above also holds glibc consolidating the ~1M chunks the memtable just freed (the first
    // large allocation after a large free pays for it): these two do not.
    let t = Instant::now();
    let image = format::build_table(&entries, BuildOptions::default()).unwrap();
    let build_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    drop(sstable::write_image(dir.path(), 2, &image, BuildOptions::default()).unwrap());
    let write_secs = t.elapsed().as_secs_f64();
    println!(
        "  same image, build alone {:>8.1} MB/s ({build_secs:.3} s), write+open alone {:>8.1} MB/s ({write_secs:.3} s)",
        image.len() as f64 / build_secs / 1e6,
        image.len() as f64 / write_secs / 1e6,
    );
    drop(image);
    let m = entries.len() as u64;
    let (secs, lat) = timed(entries.len(), |i| {
        let e = &entries[(mix(i as u64 + 11) % m) as usize];
        assert!(table.get(&e.key).unwrap().is_some());
    });
    report("sstable get (bloom hit, present)", entries.len(), secs, lat);
    let mut false_positives = 0usize;
    let absent: Vec<Vec<u8>> = (0..n).map(|i| format!("a{:015}", mix(i + 99)).into_bytes()).collect();
    for k in &absent {
        false_positives += usize::from(table.may_contain(k));
    }
    let (secs, lat) = timed(absent.len(), |i| {
        assert!(table.get(&absent[i]).unwrap().is_none());
    });
    report("sstable get (bloom miss, absent)", absent.len(), secs, lat);
    println!(
        "  bloom false positives: {false_positives} of {} ({:.2} %)",
        absent.len(),
        false_positives as f64 * 100.0 / absent.len() as f64
    );
    let scans = (entries.len() / 100).max(1);
    // Bounded 100-key range: scan to the key 100 entries on.
    let (secs, lat) = timed(scans, |i| {
        let j = (mix(i as u64 + 5) % m.saturating_sub(100).max(1)) as usize;
        let (lo, hi) = (&entries[j].key, &entries[(j + 99).min(entries.len() - 1)].key);
        let mut seen = 0;
        table
            .scan(Bound::Included(lo), Bound::Included(hi), |_, _, _| {
                seen += 1;
                true
            })
            .unwrap();
        black_box(seen);
    });
    report("sstable range (100 keys)", scans, secs, lat);
    drop(table);

    // Compaction: four overlapping level-0 tables of n/4 keys each into level 1.
    let store_dir = dir.path().join("store");
    let (mut store, _) = Store::open(&store_dir, StoreOptions::default()).unwrap();
    for round in 0..4u64 {
        for i in 0..n / 4 {
            store.put(&key(mix(i + round * 1_000_003) % (n / 2)), &value);
        }
        store.flush().unwrap();
    }
    // What `Store::compact` does, step by step, to show the job apart from freeing the four
    // flushed memtables (`remove_obsolete`, which the server does off its executor).
    let t = Instant::now();
    let job = store.begin_compaction(1).unwrap();
    let done = job.run();
    let job_secs = t.elapsed().as_secs_f64();
    let r = store.finish_compaction(done).unwrap().unwrap();
    let t_free = Instant::now();
    remove_obsolete(store.take_obsolete());
    let free_secs = t_free.elapsed().as_secs_f64();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "compaction (4 L0 -> L1)            {:>12.1} MB/s in  {:>7.1} MB/s out   ({} -> {} entries, {} -> {} tables, {secs:.3} s, {} direct writes)",
        r.bytes_in as f64 / secs / 1e6,
        r.bytes_out as f64 / secs / 1e6,
        r.entries_in,
        r.entries_out,
        r.input_tables,
        r.output_tables,
        r.direct_writes
    );
    println!(
        "  of which the job {:>8.1} MB/s in ({job_secs:.3} s), freeing the flushed memtables {free_secs:.3} s",
        r.bytes_in as f64 / job_secs / 1e6
    );

    // The compaction's CPU part alone: the same four overlapping tables merged into images in
    // memory (nothing written).
    let merge_dir = dir.path().join("merge");
    std::fs::create_dir_all(&merge_dir).unwrap();
    let inputs: Vec<sstable::Table> = (0..4u64)
        .map(|round| {
            let mut run = Memtable::new();
            for i in 0..n / 4 {
                run.put(&key(mix(i + round * 1_000_003) % (n / 2)), round * n + i + 1, Some(value.to_vec()));
            }
            let entries: Vec<Entry> = run.freeze().iter().collect();
            sstable::write_table(&merge_dir, round + 1, &entries, BuildOptions::default()).unwrap().0
        })
        .collect();
    let refs: Vec<&sstable::Table> = inputs.iter().collect();
    let bytes_in: u64 = inputs.iter().map(|t| t.file_bytes()).sum();
    let (mut tables, mut bytes_out) = (0, 0);
    let t = Instant::now();
    compaction::merge_into_tables(
        &refs,
        true,
        StoreOptions::default().table_bytes,
        &mut compaction::GrandparentCut::none(),
        BuildOptions::default(),
        |b| {
            bytes_out += b.finish().unwrap().len();
            tables += 1;
            Ok(())
        },
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  compaction merge+build in memory {:>8.1} MB/s in  {:>7.1} MB/s out   ({tables} tables, {secs:.3} s)",
        bytes_in as f64 / secs / 1e6,
        bytes_out as f64 / secs / 1e6,
    );
}
