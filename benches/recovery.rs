//! Recovery: how fast start-up rebuilds the engine from its WAL. Writes a real server WAL
//! (genesis + the exchange-core mix as commands, see `support/engine_commands.rs`), then times,
//! on the same files in the same run:
//!
//! 1. `read`: reading the segment files (the page cache is warm: they were just written),
//! 2. `scan`: framing + CRC32 of every record (`storage::wal::recover` with an empty apply),
//! 3. `decode`: scan + rkyv validation and decoding of every payload,
//! 4. `rebuild`: what start-up runs (`server::recovery::rebuild_cluster`, one shard): a first
//!    pass reading which messages each shard consumed, then scan + decode + shard engine
//!    execution + journal.
//!
//! 5. `rebuild+history (empty store)`: the same with a new history store, so the history of
//!    every record is derived and flushed (first start of a venue whose WAL predates its store),
//! 6. `rebuild+history (store current)`: the same once the store holds it all (its watermark at
//!    the WAL's end): a normal restart, where only history past the watermark is derived.
//! 7. `checkpoint at 80% + tail`: a restart from a checkpoint taken after the first 80 % of the
//!    records (written as the server writes them), replaying the last 20 % of the log;
//! 8. `fresh checkpoint`: a restart from a checkpoint at the WAL's end (nothing to replay):
//!    reading, checking and decoding the state of every record, which is what a restart costs
//!    however long the history is (issue 6's target: under a second).
//!
//! The checkpoints' encode and write times are printed too.
//!
//! Run: `cargo bench --bench recovery`. Knobs: `RECOVERY_BENCH_RECORDS` (default 2,000,000;
//! the figure uses 10,000,000), `RECOVERY_BENCH_DIR` (default: the system temp dir),
//! `RECOVERY_BENCH_REBUILD_ONLY` (stop after the plain rebuild: for profiling the replay).

#[path = "support/engine_commands.rs"]
mod engine_commands;
#[path = "support/mix.rs"]
mod mix;

use engine_commands::{instrument, prepare};
use mix::{Mix, MixConfig};
use qaexchange::domain::engine::EngineConfig;
use qaexchange::server::checkpoint::{self, checkpoint_dir, CheckpointMeta};
use qaexchange::server::history_store::open_store;
use qaexchange::server::journal::JournalLimits;
use qaexchange::server::recovery::{rebuild_cluster, shard_wal_dir};
use qaexchange::server::service::Service;
use qaexchange::server::wal_record::{decode, encode, instruments_fingerprint, WalRecord, WAL_FORMAT};
use qaexchange::storage::wal::segment::list_segments;
use qaexchange::storage::wal::{recover, ResumePoint, SyncMode, WalConfig, WalWriter};
use std::time::Instant;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let records = env_or("RECOVERY_BENCH_RECORDS", 2_000_000).max(10_000);
    let base =
        std::env::var("RECOVERY_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    let storage = base.join(format!("qaexchange-recovery-bench-{}", std::process::id()));
    let dir = shard_wal_dir(&storage, 0);
    std::fs::create_dir_all(&dir).expect("bench dir");

    let began = Instant::now();
    let owners = 100u32;
    let prefill = 1_000usize;
    let ops = records as usize - 2 * owners as usize - prefill - 1;
    let mix: Mix = mix::generate(MixConfig { ops, prefill_orders: prefill, owners, ..MixConfig::default() });
    let prepared = prepare(&mix);
    let commands: Vec<_> = prepared.setup.iter().chain(&prepared.prefill).chain(&prepared.ops).copied().collect();
    let instruments = vec![instrument()];
    eprintln!("generated {} commands in {:.1?}", commands.len(), began.elapsed());

    // Write the WAL as the server does (records framed, 64 MiB segments), without syncs: the
    // write side is the WAL bench's subject, not this one's. First 80 % of the commands; the
    // state after them is checkpointed (as the server would), then the rest is written.
    let fingerprint = instruments_fingerprint(&instruments);
    let split = commands.len() * 4 / 5;
    let written_first = write_wal(&dir, &commands[..split], true, fingerprint);
    let t = Instant::now();
    let mut early = start_shard(&storage, &instruments, None).expect("rebuild the first 80 %");
    eprintln!("replayed the first {} records in {:.1?}", early.recovered.records, t.elapsed());
    let early_service = early.shards.remove(0).service.expect("a service");
    let early_sequence = written_first.records;
    let early_file = checkpoint_file(&early_service, early_sequence, fingerprint).0;
    drop(early_service);
    let written_rest = write_wal(&dir, &commands[split..], false, fingerprint);
    eprintln!(
        "wrote {} records, {} bytes",
        written_first.records + written_rest.records,
        written_first.bytes + written_rest.bytes
    );

    if let Some(loops) = std::env::var("RECOVERY_BENCH_TAIL_ONLY").ok().and_then(|v| v.parse::<u32>().ok()) {
        // For profiling the tail alone (`perf record -p`): restart from the 80 % checkpoint,
        // without a store (as with a current one, the tail derives no history), `loops` times.
        checkpoint::write(&checkpoint_dir(&storage, 0), early_sequence, &early_file, || {}).expect("checkpoint");
        eprintln!("tail only: starting {loops} restarts in 1 s (pid {})", std::process::id());
        std::thread::sleep(std::time::Duration::from_secs(1));
        for _ in 0..loops {
            let t = Instant::now();
            let restart = start_shard(&storage, &instruments, None).expect("restart from the 80 % checkpoint");
            let total_s = t.elapsed().as_secs_f64();
            let load_s = restart.recovered.checkpoint_load_ms as f64 / 1e3;
            println!(
                "tail only: {:.3} s, loading the checkpoint {:.3} s, then {} records ({:.1} MB) at {:.0} MB/s",
                total_s,
                load_s,
                restart.recovered.records,
                restart.recovered.bytes as f64 / 1e6,
                restart.recovered.bytes as f64 / 1e6 / (total_s - load_s).max(1e-9)
            );
        }
        let _ = std::fs::remove_dir_all(&storage);
        return;
    }

    let segments = list_segments(&dir).expect("segments");
    let file_bytes: u64 = segments.iter().map(|(_, p)| std::fs::metadata(p).unwrap().len()).sum();
    let t = Instant::now();
    let mut read = 0u64;
    for (_, path) in &segments {
        read += std::hint::black_box(std::fs::read(path).unwrap()).len() as u64;
    }
    let read_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut scanned = 0u64;
    let (_, report) = recover(&dir, 1, |_, payload| scanned += payload.len() as u64).expect("scan");
    let scan_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut decoded = 0u64;
    recover(&dir, 1, |_, payload| {
        std::hint::black_box(decode(payload).expect("decodes"));
        decoded += 1;
    })
    .expect("decode");
    let decode_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut rebuilt = start_shard(&storage, &instruments, None).expect("rebuild");
    let rebuild_s = t.elapsed().as_secs_f64();
    let service = rebuilt.shards.remove(0).service.expect("a service");
    qaexchange::domain::shard::check_cluster(&[service.engine().state()]).expect("invariants after rebuild");
    assert_eq!(rebuilt.recovered.records, report.records);
    assert_eq!(report.records, records);
    assert_eq!(read, file_bytes);
    if std::env::var_os("RECOVERY_BENCH_REBUILD_ONLY").is_some() {
        // For profiling the replay alone (`perf record`): stop after the plain rebuild.
        println!(
            "rebuild only: {:.3} s, {:.0} MB/s of records; {} live orders",
            rebuild_s,
            report.bytes as f64 / 1e6 / rebuild_s,
            service.engine().ledger().live_order_count()
        );
        return;
    }

    // History: derived for every record into an empty store, then a restart with it current.
    let memtable_bytes = 64 << 20;
    let store = open_store(&storage, 0, memtable_bytes, 256 << 20).expect("history store");
    let t = Instant::now();
    let mut with_history = start_shard(&storage, &instruments, Some(store)).expect("rebuild with history");
    let derive_s = t.elapsed().as_secs_f64();
    let mut store = with_history.shards.remove(0).history.expect("the store comes back");
    let t = Instant::now();
    store.flush().expect("flush");
    let last_flush_s = t.elapsed().as_secs_f64();
    let stats = store.stats();
    drop(store);
    let store = open_store(&storage, 0, memtable_bytes, 256 << 20).expect("history store");
    let t = Instant::now();
    start_shard(&storage, &instruments, Some(store)).expect("rebuild with a current store");
    let current_s = t.elapsed().as_secs_f64();

    // Checkpoints: one at 80 % (the tail is the last 20 % of the log), then a fresh one.
    let ckpt_dir = checkpoint_dir(&storage, 0);
    let t = Instant::now();
    checkpoint::write(&ckpt_dir, early_sequence, &early_file, || {}).expect("write the 80 % checkpoint");
    let early_write_s = t.elapsed().as_secs_f64();
    let store = open_store(&storage, 0, memtable_bytes, 256 << 20).expect("history store");
    let t = Instant::now();
    let from_early = start_shard(&storage, &instruments, Some(store)).expect("restart from the 80 % checkpoint");
    let early_restart_s = t.elapsed().as_secs_f64();
    assert_eq!(from_early.recovered.checkpoints, vec![early_sequence]);
    let early_load_s = from_early.recovered.checkpoint_load_ms as f64 / 1e3;
    let tail_records = from_early.recovered.records;
    let tail_bytes = from_early.recovered.bytes;
    let restored = from_early.shards.into_iter().next().and_then(|s| s.service).expect("a service");
    let full_state = serde_json::to_value(service.engine().state()).expect("state");
    assert_eq!(serde_json::to_value(restored.engine().state()).expect("state"), full_state, "checkpoint + tail");
    drop(restored);
    let (fresh_file, pause_s, encode_s) = checkpoint_file(&service, report.records, fingerprint);
    let t = Instant::now();
    checkpoint::write(&ckpt_dir, report.records, &fresh_file, || {}).expect("write the fresh checkpoint");
    let fresh_write_s = t.elapsed().as_secs_f64();
    let store = open_store(&storage, 0, memtable_bytes, 256 << 20).expect("history store");
    let t = Instant::now();
    let from_fresh = start_shard(&storage, &instruments, Some(store)).expect("restart from the fresh checkpoint");
    let fresh_restart_s = t.elapsed().as_secs_f64();
    let fresh_load_s = from_fresh.recovered.checkpoint_load_ms as f64 / 1e3;
    assert_eq!(from_fresh.recovered.records, 0);
    let restored = from_fresh.shards.into_iter().next().and_then(|s| s.service).expect("a service");
    assert_eq!(serde_json::to_value(restored.engine().state()).expect("state"), full_state, "fresh checkpoint");
    drop(restored);

    let wal_mb = report.bytes as f64 / 1e6;
    println!(
        "recovery bench: {} records, {:.1} MB of records in {} segment files ({:.1} MB on disk)",
        report.records,
        wal_mb,
        segments.len(),
        file_bytes as f64 / 1e6
    );
    println!(
        "  read files   {:>8.3} s  {:>8.0} MB/s of files (baseline: warm page cache)",
        read_s,
        file_bytes as f64 / 1e6 / read_s
    );
    for (name, seconds) in [
        ("scan+crc", scan_s),
        ("decode", decode_s),
        ("rebuild", rebuild_s),
        ("rebuild+history (empty store)", derive_s),
        ("rebuild+history (store current)", current_s),
    ] {
        println!(
            "  {name:<32} {seconds:>8.3} s  {:>8.0} MB/s of records  {:>6.2} M records/s",
            wal_mb / seconds,
            report.records as f64 / seconds / 1e6
        );
    }
    println!(
        "  rebuild / scan: {:.2}x the time; engine live orders after: {}",
        rebuild_s / scan_s,
        service.engine().ledger().live_order_count()
    );
    println!(
        "  history: {} tables, {:.1} MB ({} flushes during the replay, the last {:.3} s after it); derived history \
         costs {:.2}x the plain rebuild, a current store {:.2}x",
        stats.tables[0] + stats.tables[1],
        (stats.table_bytes[0] + stats.table_bytes[1]) as f64 / 1e6,
        stats.flushes,
        last_flush_s,
        derive_s / rebuild_s,
        current_s / rebuild_s
    );
    println!(
        "  checkpoint: {:.1} MB (state after {} records); the shard's pause (snapshot) {:.4} s; encode off the shard \
         {:.3} s ({:.0} MB/s), write+fsync {:.3} s ({:.0} MB/s)",
        fresh_file.len() as f64 / 1e6,
        report.records,
        pause_s,
        encode_s,
        fresh_file.len() as f64 / 1e6 / encode_s,
        fresh_write_s,
        fresh_file.len() as f64 / 1e6 / fresh_write_s
    );
    println!(
        "  restart from a fresh checkpoint (store current)      {:>8.3} s  (of which reading + checking + decoding \
         the checkpoint {:.3} s; full replay: {:.3} s, {:.1}x faster)",
        fresh_restart_s,
        fresh_load_s,
        current_s,
        current_s / fresh_restart_s
    );
    println!(
        "  restart from the checkpoint at 80% + {} records of tail ({:.1} MB)  {:>8.3} s: loading the checkpoint {:.3} s, \
         then the tail at {:.0} MB/s (80% checkpoint written in {:.3} s)",
        tail_records,
        tail_bytes as f64 / 1e6,
        early_restart_s,
        early_load_s,
        tail_bytes as f64 / 1e6 / (early_restart_s - early_load_s).max(1e-9),
        early_write_s
    );
    let _ = std::fs::remove_dir_all(&storage);
}

/// What start-up runs for the bench's one shard (default engine and journal settings), with
/// its history store or without.
fn start_shard(
    storage: &std::path::Path,
    instruments: &[qaexchange::domain::instrument::Instrument],
    store: Option<qaexchange::storage::lsm::store::Store>,
) -> Result<qaexchange::server::recovery::RebuiltCluster, String> {
    rebuild_cluster(storage, storage, 1, instruments, EngineConfig::default(), JournalLimits::default(), vec![store])
}

/// Appends `commands` as Command records to the WAL in `dir` (starting it with a genesis when
/// `genesis`), as the server frames them, in groups of 8192 without syncs.
fn write_wal(
    dir: &std::path::Path,
    commands: &[qaexchange::domain::command::Command],
    genesis: bool,
    fingerprint: u64,
) -> qaexchange::storage::wal::WalStats {
    let (resume, _) = recover(dir, 1, |_, _| {}).expect("find the WAL's end");
    let commands = commands.to_vec();
    let dir = dir.to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move {
            let config = WalConfig { dir, segment_bytes: 64 << 20, sync: SyncMode::None };
            let start = if genesis { ResumePoint { segment: None, offset: 0, next_sequence: 1 } } else { resume };
            let mut wal = WalWriter::open(config, &start, false).await.expect("open WAL");
            if genesis {
                let record = WalRecord::Genesis {
                    format: WAL_FORMAT,
                    trading_day: 20250102,
                    instruments_fingerprint: fingerprint,
                    shards: 1,
                    shard: 0,
                };
                wal.append(&encode(&record).unwrap()).unwrap();
            }
            for (i, command) in commands.iter().enumerate() {
                wal.append(&encode(&WalRecord::Command(*command)).unwrap()).unwrap();
                if i % 8192 == 8191 {
                    wal.commit().await.expect("commit");
                }
            }
            wal.commit().await.expect("commit");
            let stats = wal.stats();
            wal.close().await.expect("close");
            stats
        })
        .expect("executor")
        .join()
        .expect("writer")
}

/// A checkpoint file of `service` at `wal_sequence` (no outbox: one shard), the seconds its
/// snapshot took (the shard's pause) and the seconds encoding that took (off the shard).
fn checkpoint_file(service: &Service, wal_sequence: u64, fingerprint: u64) -> (Vec<u8>, f64, f64) {
    let t = Instant::now();
    let snapshot = service.checkpoint_snapshot();
    let pause_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let state = snapshot.encode().expect("encode");
    let meta = CheckpointMeta {
        shard: 0,
        shards: 1,
        instruments_fingerprint: fingerprint,
        wal_format: WAL_FORMAT,
        wal_sequence,
    };
    let file = checkpoint::encode_file(&meta, &state, &checkpoint::encode_outbox(&[]).expect("outbox"));
    (file, pause_s, t.elapsed().as_secs_f64())
}
