//! Start-up recovery of every shard from its own WAL, and of the messages between shards that
//! a crash left undelivered. Synchronous and free of glommio, so the recovery benchmark
//! measures exactly what start-up runs.
//!
//! The rule (docs/ARCHITECTURE.md "Recovery across shards"): each shard logs its inputs in the
//! order it ran them, and sends a message only once the input that made it is durable. So:
//! 1. a first pass reads, from every shard's log, the last message sequence it consumed from
//!    each other shard;
//! 2. each shard replays its log into a fresh service, which regenerates every message it
//!    sent, with the same sequence numbers;
//! 3. the regenerated messages past what their receiver consumed are delivered again once the
//!    shards run (receivers skip anything they already have).
//!
//! An order held by its account shard whose `Match` the instrument shard never logged is
//! matched after the restart; fills an instrument shard logged but an account shard did not
//! are applied once.
//!
//! With checkpoints (`checkpoint.rs`) each shard starts from its newest valid checkpoint at
//! WAL sequence S and replays only the records after S: "consumed" starts from the
//! checkpoint's received counts, and the messages the records before S sent, which the
//! replay cannot regenerate, come from the checkpoint's outbox (every message its receiver
//! had not yet made durable when the checkpoint was taken).

use super::checkpoint::{self, checkpoint_dir, CheckpointMeta};
use super::history::HistoryWriter;
use super::journal::{Journal, JournalLimits};
use super::service::Service;
use super::wal_record::{instruments_fingerprint, Decoder, WalRecord, WAL_FORMAT};
use crate::domain::engine::EngineConfig;
use crate::domain::event::Event;
use crate::domain::instrument::Instrument;
use crate::domain::shard::Outgoing;
use crate::storage::lsm::Store;
use crate::storage::wal::{recover, RecoveryReport, ResumePoint};
use std::path::{Path, PathBuf};

/// What start-up found in the WALs (summed over shards).
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub records: u64,
    pub bytes: u64,
    pub segments: usize,
    /// "file at offset N: cut a torn tail of M bytes", for each shard that had one.
    pub torn_tail: Option<String>,
    pub trading_day: u32,
    pub replay_ms: u128,
    /// Messages between shards delivered again after the restart.
    pub redelivered: usize,
    /// Per shard, the WAL sequence of the checkpoint it started from (0: none, whole log).
    pub checkpoints: Vec<u64>,
    /// Time spent reading and decoding checkpoints (summed over shards).
    pub checkpoint_load_ms: u128,
    /// Checkpoints that failed a check and were passed over, one line each.
    pub checkpoint_warnings: Vec<String>,
}

/// A shard's state as its newest valid checkpoint holds it.
pub struct Restored {
    /// The WAL sequence the checkpoint was taken at: replay starts after it.
    pub sequence: u64,
    pub service: Service,
    /// Messages sent before the checkpoint that their receivers had not made durable.
    pub outbox: Vec<Outgoing>,
}

/// Renames a damaged checkpoint to `<name>.damaged`, out of the files kept and loaded (kept for
/// inspection); returns the warning to log.
fn set_aside(path: &Path, why: &str) -> String {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".damaged");
    match std::fs::rename(path, &aside) {
        Ok(()) => format!("{}: not used: {why} (renamed to *.damaged)", path.display()),
        Err(e) => format!("{}: not used: {why} (could not rename it: {e})", path.display()),
    }
}

/// What pass 1 learns of a shard: what it consumed from each shard, its checkpoint (if any),
/// and the checkpoints passed over.
type ShardStart = (Vec<u64>, Option<Restored>, Vec<String>);

/// The newest checkpoint of shard `shard` that passes every check, decoded; the ones passed
/// over are described in `warnings`.
pub fn load_checkpoint(
    storage: &Path,
    meta: CheckpointMeta,
    journal: JournalLimits,
    warnings: &mut Vec<String>,
) -> Result<Option<Restored>, String> {
    let dir = checkpoint_dir(storage, meta.shard);
    checkpoint::remove_temporary(&dir).map_err(|e| format!("cleaning {}: {e}", dir.display()))?;
    let files = checkpoint::list(&dir).map_err(|e| format!("listing checkpoints in {}: {e}", dir.display()))?;
    for (_, path) in files.into_iter().rev() {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                warnings.push(format!("{}: not used: {e}", path.display()));
                continue;
            }
        };
        let file = match checkpoint::check(bytes) {
            Ok(file) => file,
            Err(e) => {
                warnings.push(set_aside(&path, &e));
                continue;
            }
        };
        if let Some(why) = checkpoint::mismatch(&file.meta, &meta) {
            return Err(format!("checkpoint {}: {why}", path.display()));
        }
        let loaded = Service::decode_checkpoint(file.service_bytes(), journal)
            .and_then(|service| Ok(Restored { sequence: file.meta.wal_sequence, service, outbox: file.outbox()? }));
        match loaded {
            Ok(restored) => return Ok(Some(restored)),
            Err(e) => warnings.push(set_aside(&path, &e)),
        }
    }
    Ok(None)
}

/// One shard rebuilt from its WAL, and where its writer resumes.
pub struct RebuiltShard {
    /// None when its log holds no records yet (the caller writes the genesis).
    pub service: Option<Service>,
    pub resume: ResumePoint,
    pub torn_tail: bool,
    /// Messages this shard sent that their receivers had not logged: send them first.
    pub redeliver: Vec<Outgoing>,
    /// The shard's history store, holding (in tables or its memtable) the history of every
    /// replayed record: what it lacked past its watermark was re-derived during the replay.
    pub history: Option<Store>,
}

pub struct RebuiltCluster {
    pub shards: Vec<RebuiltShard>,
    pub recovered: Recovered,
}

/// The WAL directory of shard `shard` under the WAL root (the storage directory unless
/// `[storage] wal_dir` says otherwise).
pub fn shard_wal_dir(wal_root: &Path, shard: u16) -> PathBuf {
    wal_root.join(format!("shard-{shard}")).join("wal")
}

fn torn_line(report: &RecoveryReport) -> Option<String> {
    report.torn_tail.as_ref().map(|(path, offset, dropped)| {
        format!("{} at offset {offset}: cut a torn tail of {dropped} bytes", path.display())
    })
}

/// Rebuilds all `shards` shards from their checkpoints under `storage` and their WALs under
/// `wal_root` (`StorageConfig::wal_root`), and brings each shard's history store (`stores`,
/// one per shard, or none) up to its WAL. Errors mention `<instruments>` where the caller's
/// instruments file belongs.
pub fn rebuild_cluster(
    storage: &Path,
    wal_root: &Path,
    shards: u16,
    instruments: &[Instrument],
    engine: EngineConfig,
    journal: JournalLimits,
    stores: Vec<Option<Store>>,
) -> Result<RebuiltCluster, String> {
    let mut stores = stores;
    stores.resize_with(shards as usize, || None);
    let began = std::time::Instant::now();
    let n = shards as usize;
    // Pass 1, a thread per shard: its newest valid checkpoint, and what it consumed from each
    // other shard (the checkpoint's counts, then the log after it).
    let fingerprint = instruments_fingerprint(instruments);
    let loaded: Vec<Result<ShardStart, String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..shards)
            .map(|shard| {
                scope.spawn(move || {
                    let meta = CheckpointMeta {
                        shard,
                        shards,
                        instruments_fingerprint: fingerprint,
                        wal_format: WAL_FORMAT,
                        wal_sequence: 0,
                    };
                    let mut warnings = Vec::new();
                    let restored = load_checkpoint(storage, meta, journal, &mut warnings)?;
                    let row = consumed_by(wal_root, shard, n, restored.as_ref())?;
                    Ok((row, restored, warnings))
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|_| Err("a recovery thread panicked".into()))).collect()
    });
    let mut consumed: Vec<Vec<u64>> = Vec::with_capacity(n);
    let mut restored: Vec<Option<Restored>> = Vec::with_capacity(n);
    let mut checkpoint_warnings = Vec::new();
    for one in loaded {
        let (row, state, warnings) = one?;
        consumed.push(row);
        restored.push(state);
        checkpoint_warnings.extend(warnings);
    }
    let checkpoint_load_ms = began.elapsed().as_millis();
    // Pass 2, a thread per shard: replay each, keeping what its peers have not consumed.
    let consumed = &consumed;
    let replayed: Vec<Result<(RebuiltShard, RecoveryReport, u64), String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..shards)
            .zip(stores)
            .zip(restored)
            .map(|((shard, store), start)| {
                scope.spawn(move || {
                    let dir = shard_wal_dir(wal_root, shard);
                    let layout = (shard, shards, fingerprint, instruments, engine, journal);
                    replay_shard(&dir, layout, store, start, |to, seq| seq > consumed[to as usize][shard as usize])
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|_| Err("a recovery thread panicked".into()))).collect()
    });
    let mut rebuilt = Vec::with_capacity(n);
    let mut recovered = Recovered { checkpoint_warnings, checkpoint_load_ms, ..Default::default() };
    let mut torn = Vec::new();
    for (shard, result) in (0..shards).zip(replayed) {
        let dir = shard_wal_dir(wal_root, shard);
        let (one, report, checkpoint_sequence) = result?;
        recovered.checkpoints.push(checkpoint_sequence);
        if let Some(service) = &one.service {
            for to in 0..shards {
                let sent = service.engine().sent()[to as usize];
                let taken = consumed[to as usize][shard as usize];
                if taken > sent {
                    return Err(format!(
                        "WAL recovery stopped: shard {to} consumed {taken} messages from shard {shard}, whose log \
                         sends only {sent}; the logs disagree (was a shard's WAL restored from elsewhere, or lost \
                         with sync = \"none\"?)"
                    ));
                }
            }
            recovered.trading_day = service.engine().trading_day();
        } else if (0..n).any(|to| consumed[to][shard as usize] > 0) {
            return Err(format!(
                "WAL recovery stopped: {} holds no records, but other shards consumed its messages",
                dir.display()
            ));
        }
        recovered.records += report.records;
        recovered.bytes += report.bytes;
        recovered.segments += report.segments;
        recovered.redelivered += one.redeliver.len();
        if let Some(line) = torn_line(&report) {
            torn.push(line);
        }
        rebuilt.push(one);
    }
    recovered.torn_tail = (!torn.is_empty()).then(|| torn.join("; "));
    recovered.replay_ms = began.elapsed().as_millis();
    Ok(RebuiltCluster { shards: rebuilt, recovered })
}

/// The last message sequence shard `shard` logged from each of the `n` shards: the counts of
/// its checkpoint (if it starts from one), then those of the records after it.
fn consumed_by(wal_root: &Path, shard: u16, n: usize, start: Option<&Restored>) -> Result<Vec<u64>, String> {
    let mut row = vec![0u64; n];
    let mut first_sequence = 1;
    if let Some(start) = start {
        for (from, &seq) in start.service.engine().received().iter().enumerate().take(n) {
            row[from] = seq;
        }
        first_sequence = start.sequence.saturating_add(1);
    }
    if n == 1 {
        // Nothing to learn with one shard.
        return Ok(row);
    }
    let dir = shard_wal_dir(wal_root, shard);
    let mut failure: Option<String> = None;
    let mut decoder = Decoder::default();
    recover(&dir, first_sequence, |sequence, payload| {
        if failure.is_some() {
            return;
        }
        match decoder.peer_header(payload) {
            Ok(Some((from, seq))) if (from as usize) < n => row[from as usize] = row[from as usize].max(seq),
            Ok(Some((from, _))) => failure = Some(format!("record {sequence}: message from shard {from}")),
            Ok(None) => {}
            Err(e) => failure = Some(format!("record {sequence}: {e}")),
        }
    })
    .map_err(|e| format!("WAL recovery stopped: {e}"))?;
    match failure {
        Some(failure) => Err(format!("WAL recovery stopped in {}: {failure}", dir.display())),
        None => Ok(row),
    }
}

/// Replays one shard's WAL in `dir`: from a checkpoint (`start`), the records after it;
/// without one, the whole log, which must begin with a genesis record written with these
/// instruments and shard layout. `keep(to, seq)` says which messages (of the checkpoint's
/// outbox, and regenerated ones) to keep for redelivery. With a history store, the history of
/// the records past its watermark is derived again and put into it (flushing as its memtable
/// fills). Returns the checkpoint's sequence too (0: none).
pub fn replay_shard(
    dir: &Path,
    layout: ShardLayout<'_>,
    mut store: Option<Store>,
    start: Option<Restored>,
    mut keep: impl FnMut(u16, u64) -> bool,
) -> Result<(RebuiltShard, RecoveryReport, u64), String> {
    let (shard, _, _, _, _, journal) = layout;
    // Records up to the store's watermark already have their history in its tables.
    let history_from = store.as_ref().map(Store::watermark);
    let store_present = store.is_some();
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut service: Option<Service> = None;
    let mut failure: Option<String> = None;
    let mut redeliver = Vec::new();
    let mut first_sequence = 1;
    let mut checkpoint_sequence = 0;
    // The journal thread folds into the checkpoint's journal, or a new one.
    let mut start_journal = Journal::new(journal);
    if let Some(mut start) = start {
        first_sequence = start.sequence.saturating_add(1);
        checkpoint_sequence = start.sequence;
        start_journal = start.service.take_journal();
        start.service.set_report_snapshots(false);
        redeliver.extend(start.outbox.into_iter().filter(|o| keep(o.to, o.seq)));
        service = Some(start.service);
    }
    // A reader thread reads, checks and decodes the log while this one runs the records, in
    // batches over a bounded channel (the log is read once, and I/O overlaps execution).
    const BATCH: usize = 1024;
    // The reader reads and checks a whole 64 MiB segment before it decodes the first record of
    // it, tens of milliseconds in which it sends nothing. With only a few batches queued this
    // thread then stalled at every segment (a fifth of replay time); about 128 K records
    // queued (some 24 MB) carry it over that gap, since it runs slower than the reader.
    const QUEUED_BATCHES: usize = 128;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(u64, Result<WalRecord, String>)>>(QUEUED_BATCHES);
    // A journal thread folds the events of each batch, in order, into the journal while this
    // one runs the next batches: the same journal as folding them here, off the critical path.
    // Emptied event batches come back for reuse (a batch is about a megabyte).
    const QUEUED_EVENT_BATCHES: usize = 16;
    let (events_tx, events_rx) = std::sync::mpsc::sync_channel::<EventBatch>(QUEUED_EVENT_BATCHES);
    let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<Event>>();
    let (recovered, folded) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            super::thread_priority::lower_thread_priority(HELPER_NICE);
            let mut batch = Vec::with_capacity(BATCH);
            let mut decoder = Decoder::default();
            let result = recover(dir, first_sequence, |sequence, payload| {
                batch.push((sequence, decoder.decode(payload)));
                if batch.len() == BATCH {
                    let _ = tx.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
                }
            });
            if !batch.is_empty() {
                let _ = tx.send(batch);
            }
            result
        });
        let store = &mut store;
        let folder = scope.spawn(move || {
            super::thread_priority::lower_thread_priority(HELPER_NICE);
            let mut folded = start_journal;
            let mut writer = HistoryWriter::default();
            writer.set_on(store.is_some());
            let mut failed: Option<String> = None;
            for mut batch in events_rx {
                for (i, event) in batch.events.iter().enumerate() {
                    folded.apply(event);
                    if i >= batch.history_from {
                        writer.observe(event, &folded);
                    }
                }
                if let (Some(store), Some(last)) = (store.as_mut(), batch.last_sequence) {
                    if failed.is_none() {
                        if let Err(e) = put_history(store, writer.take(), batch.market_writes, last) {
                            failed = Some(e);
                        }
                    }
                }
                batch.events.clear();
                let _ = spare_tx.send(batch.events);
            }
            (folded, failed)
        });
        let mut events: Vec<Event> = Vec::new();
        // Where this batch's records past the store's watermark begin (their events get
        // history), the tick and bar writes of those records, and the last such record.
        let mut history_start = usize::MAX;
        let mut market = HistoryWriter::default();
        market.set_on(store_present);
        // The open bars as the replay's first history step finds them (the checkpoint's).
        let mut market_tracks_bars = false;
        let mut last_history_sequence: Option<u64> = None;
        for batch in rx {
            // By reference: a record is some 200 bytes, and moving each out of the batch
            // (written by the reader on another core) was a fifth of this thread's time.
            for (sequence, record) in &batch {
                let sequence = *sequence;
                if failure.is_some() {
                    continue;
                }
                let record = match record {
                    Ok(record) => record,
                    Err(e) => {
                        failure = Some(format!("record {sequence}: {e}"));
                        continue;
                    }
                };
                let derive = history_from.is_some_and(|from| sequence > from);
                if derive && !market_tracks_bars {
                    if let Some(service) = service.as_ref() {
                        market.track_open_bars(service.engine());
                    }
                    market_tracks_bars = true;
                }
                let before = events.len();
                if derive && history_start == usize::MAX {
                    history_start = before;
                }
                apply_record(
                    record,
                    sequence,
                    &mut service,
                    &mut events,
                    &mut failure,
                    &mut redeliver,
                    &mut keep,
                    layout,
                );
                if derive {
                    if let Some(service) = service.as_ref() {
                        market.end_step(&events[before..], service.engine());
                    }
                    last_history_sequence = Some(sequence);
                }
            }
            if !events.is_empty() || last_history_sequence.is_some() {
                let spare = spare_rx.try_recv().unwrap_or_default();
                let _ = events_tx.send(EventBatch {
                    events: std::mem::replace(&mut events, spare),
                    history_from: history_start,
                    market_writes: market.take(),
                    last_sequence: last_history_sequence.take(),
                });
                history_start = usize::MAX;
            }
        }
        drop(events_tx);
        let folded = folder.join();
        let recovered = reader.join().unwrap_or_else(|_| {
            Err(crate::storage::wal::RecoveryError::Io(
                dir.to_path_buf(),
                std::io::Error::other("the WAL reader thread panicked"),
            ))
        });
        (recovered, folded)
    });
    let (folded, history_failed) =
        folded.map_err(|_| "WAL recovery stopped: the journal thread panicked".to_string())?;
    if let Some(e) = history_failed {
        return Err(format!("history store of shard {shard}: {e}"));
    }
    let (resume, report) = recovered.map_err(|e| format!("WAL recovery stopped: {e}"))?;
    if let Some(failure) = failure {
        return Err(format!("WAL recovery stopped in {}: {failure}", dir.display()));
    }
    let torn_tail = report.torn_tail.is_some();
    if let Some(service) = service.as_mut() {
        service.replace_journal(folded);
        service.set_report_snapshots(true);
        service.reset_counters();
    }
    Ok((RebuiltShard { service, resume, torn_tail, redeliver, history: store }, report, checkpoint_sequence))
}

/// The nice value of a replay's reader and journal threads. Three threads per shard share
/// this machine's cores during a replay; the shard's own thread (running the records) is the
/// critical path, and the helpers only have to keep ahead of it. At equal priority the
/// scheduler gave them its core often enough to cost 5-10 % of replay speed (10 M records:
/// 470-477 MB/s at 0, 494-523 MB/s at 5; 10 was no better).
const HELPER_NICE: libc::c_int = 5;

/// A batch of replayed events for the journal thread, with what it needs for the history.
struct EventBatch {
    events: Vec<Event>,
    /// Events from this index on belong to records past the store's watermark.
    history_from: usize,
    /// Ticks and bars of those records (derived where the engine is).
    market_writes: Vec<(Vec<u8>, Vec<u8>)>,
    /// The last such record, if the batch has any.
    last_sequence: Option<u64>,
}

/// Puts re-derived history into the store, flushing (here, synchronously: nothing else runs
/// during recovery) whenever its memtable is full, so recovery's memory stays bounded.
fn put_history(
    store: &mut Store,
    writes: Vec<(Vec<u8>, Vec<u8>)>,
    market: Vec<(Vec<u8>, Vec<u8>)>,
    last_sequence: u64,
) -> Result<(), String> {
    for (key, value) in writes.into_iter().chain(market) {
        store.put_owned(&key, value);
    }
    store.set_watermark(last_sequence);
    if store.needs_flush() {
        store.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// What a shard's replay needs to know about the venue: shard, shard count, instruments
/// fingerprint, instruments, engine and journal settings.
pub type ShardLayout<'a> = (u16, u16, u64, &'a [Instrument], EngineConfig, JournalLimits);

/// Runs one decoded record: the genesis creates the service, every other record replays,
/// appending its events to `events` for the journal thread.
#[allow(clippy::too_many_arguments)]
fn apply_record(
    record: &WalRecord,
    sequence: u64,
    service: &mut Option<Service>,
    events: &mut Vec<Event>,
    failure: &mut Option<String>,
    redeliver: &mut Vec<Outgoing>,
    keep: &mut impl FnMut(u16, u64) -> bool,
    layout: ShardLayout<'_>,
) {
    let (shard, shards, fingerprint, instruments, engine, journal) = layout;
    match (record, service.as_mut()) {
        (&WalRecord::Genesis { format, trading_day, instruments_fingerprint, shards: s, shard: k }, None) => {
            if format != WAL_FORMAT {
                *failure = Some(format!("WAL format {format}, this server writes {WAL_FORMAT}"));
            } else if instruments_fingerprint != fingerprint {
                *failure = Some(
                    "<instruments>: the instruments differ from the ones this WAL was written with; \
                     restore the original instruments file"
                        .to_string(),
                );
            } else if s != shards || k != shard {
                *failure =
                    Some(format!("this WAL was written as shard {k} of {s}; start the server with --shards {s}"));
            } else {
                let mut fresh = Service::new(shard, shards, instruments.to_vec(), trading_day, engine, journal);
                fresh.set_report_snapshots(false);
                *service = Some(fresh);
            }
        }
        (WalRecord::Genesis { .. }, Some(_)) | (_, None) => {
            *failure = Some(format!("record {sequence}: out of place (genesis must come first, once)"))
        }
        (record, Some(service)) => match service.replay_engine(record, events) {
            Ok(sends) => redeliver.extend(sends.into_iter().filter(|o| keep(o.to, o.seq))),
            Err(e) => *failure = Some(format!("record {sequence}: {e}")),
        },
    }
}
