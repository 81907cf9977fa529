//! A shard's history store at run time: the LSM store (`crate::storage::lsm`) the committer feeds
//! once each WAL group is durable, the queries over it, and the background task that flushes and
//! compacts it.
//!
//! The background task runs in a task queue of its own with few shares, so when the shard is busy,
//! order flow gets the executor. It runs two loops, one flushing and one compacting, each with at
//! most one job in flight. They take turns (`flush_held`, `next_compaction`) unless the memtable
//! reaches half its backlog bound: then a flush goes beside a running compaction, so the committer
//! does not stall behind it (the store's `SharedManifest` writes their manifest changes one at a
//! time). The heavy part of each job (building tables,
//! merging, writing and syncing files) runs on a thread of its own in the kernel's idle class
//! (`run_job`, `niced_thread::IdleThreads`; lifted to nice 19 while the committer waits for it):
//! a 64 MiB table build is a second of CPU that a cooperative task could not give up in between,
//! and file syscalls would block the executor. The executor
//! thread only freezes the memtable and swaps the new tables in, each a few microseconds.

use super::history::{self, HistoryQuery, QueryError};
use super::http::HttpErrorCode;
use super::niced_thread::{Cores, IdleThreads};
use super::service::Reply;
use crate::domain::market_data::kline::Kline;
use crate::domain::market_data::tick::Tick;
use crate::storage::lsm::fsio::Pacing;
use crate::storage::lsm::store::{remove_obsolete, CompactionJob, FlushJob, KeyValue};
use crate::storage::lsm::{Store, StoreOptions};
use glommio::channels::local_channel::{LocalReceiver, LocalSender};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

/// Tables go out in 512 KiB pieces with a pause between: the shard's WAL syncs (same disk,
/// and usually no I/O scheduler to order them) wait behind one piece, not a whole table.
const TABLE_PACING: Pacing = Pacing { piece_bytes: 512 << 10, pause_us: 500, bytes_per_s: 0, sync_every_bytes: 0 };

/// CPU shares of the history task queue, against the default queue's 1,000.
const BACKGROUND_SHARES: usize = 50;

/// How far the memtable may outgrow `memtable_kib` while a flush or compaction runs (writes
/// go on into the memtable meanwhile), unless `[storage] memtable_backlog_kib` says otherwise:
/// past this many times its size, the committer waits for the job before it puts the next
/// group's history in (`ShardHistory::backlogged`). Memory stays bounded however slow the
/// disk or the job's thread is.
pub const MEMTABLE_BACKLOG_FACTOR: usize = 4;

/// Level 0 may hold this many times `compaction_trigger_tables` while a compaction runs;
/// past that, the next flush waits for the compaction (LevelDB's 4 / 12), so reads, which
/// look at every level-0 table, stay bounded however slow compaction is. The memtable
/// backlog bound then holds memory.
pub const LEVEL0_STOP_FACTOR: usize = 3;

/// The committer's longest pause before a group's history (`ShardHistory::slowdown`), at
/// the backlog bound; none below half of it.
pub const SLOWDOWN_MAX: std::time::Duration = std::time::Duration::from_millis(1);

/// The history store directory of shard `shard` under the storage directory.
pub fn shard_history_dir(storage: &Path, shard: u16) -> PathBuf {
    storage.join(format!("shard-{shard}")).join("history")
}

/// Opens shard `shard`'s store (removing debris of interrupted writes); errors name the file.
/// Compaction cuts tables of an eighth of a memtable (8 MiB with the default 64 MiB), at
/// least 1 MiB and at most 8 MiB: level 1, a few memtables, then holds a few dozen tables, so
/// a deeper compaction (one table and what it overlaps below) stays a small part of a level,
/// and a job's fixed costs (its syncs and the manifest's) stay small beside its bytes.
pub fn open_store(storage: &Path, shard: u16, memtable_bytes: usize, level1_bytes: u64) -> Result<Store, String> {
    let dir = shard_history_dir(storage, shard);
    let table_bytes = (memtable_bytes / 8).clamp(1 << 20, 8 << 20);
    // Every history key is a series, a 0, then numbers (`history::series_prefix`): one memtable
    // partition per series.
    let mut opts = StoreOptions {
        memtable_bytes,
        table_bytes,
        level1_bytes,
        memtable_separator: Some(0),
        ..StoreOptions::default()
    };
    opts.build.pacing = TABLE_PACING;
    let (store, report) = Store::open(&dir, opts).map_err(|e| format!("history store of shard {shard}: {e}"))?;
    if report.removed_temporaries + report.removed_orphans > 0 {
        tracing::info!(
            "history store of shard {shard}: removed {} unfinished and {} unlisted files of an interrupted flush or \
             compaction",
            report.removed_temporaries,
            report.removed_orphans
        );
    }
    Ok(store)
}

#[derive(Clone, Copy, Debug, Default)]
struct JobTimes {
    flush_us: u64,
    compaction_us: u64,
    /// The CPU the job threads used (`thread_cpu_us`), apart from their waits, pauses and
    /// the time they yield to their shard: what the store's work takes from a core, which on
    /// a shard's own core is headroom the order flow no longer has.
    flush_cpu_us: u64,
    compaction_cpu_us: u64,
    release_cpu_us: u64,
    failures: u64,
}

pub struct ShardHistory {
    shard: usize,
    store: Store,
    compaction_trigger_tables: usize,
    /// The memtable size past which the committer waits for a running (or held) flush.
    backlog_bytes: usize,
    wake_flush: LocalSender<()>,
    wake_compaction: LocalSender<()>,
    /// `POST /admin/compaction/trigger`: flush even below the threshold...
    force_flush: bool,
    /// ...then compact level 0 whatever its size, and every level over its target.
    force_compaction: bool,
    /// A checkpoint waits for the tables to cover the WAL through this sequence.
    flush_wanted: u64,
    closing: bool,
    times: JobTimes,
    last_error: Option<String>,
    writes: u64,
    /// Crash tests only (`JobPause`).
    pause: JobPause,
    /// The job and release threads: in the kernel's idle class, lifted while the committer
    /// waits for them (`wait_for_backlog`).
    idle: IdleThreads,
}

/// Crash tests only: `QAEXCHANGE_HISTORY_JOB_PAUSE_MS` makes every flush and compaction job
/// wait that long before it writes anything and again after it wrote its tables and manifest
/// (before the shard takes the result), so a test can kill the server at either point. Unset
/// (always, in production): no pause. Unit tests set the two kinds apart.
#[derive(Clone, Copy, Debug, Default)]
struct JobPause {
    flush: Option<std::time::Duration>,
    compaction: Option<std::time::Duration>,
}

impl JobPause {
    fn from_env() -> JobPause {
        let pause = std::env::var("QAEXCHANGE_HISTORY_JOB_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis);
        JobPause { flush: pause, compaction: pause }
    }
}

pub type SharedHistory = Rc<RefCell<ShardHistory>>;

/// What the background task's two loops wait on (`spawn_background`).
pub struct JobSignals {
    flush: LocalReceiver<()>,
    compaction: LocalReceiver<()>,
}

impl ShardHistory {
    /// The store and the signals its background task waits on.
    pub fn new(
        shard: usize,
        store: Store,
        compaction_trigger_tables: usize,
        backlog_bytes: usize,
    ) -> (SharedHistory, JobSignals) {
        let (wake_flush, flush) = glommio::channels::local_channel::new_bounded(1);
        let (wake_compaction, compaction) = glommio::channels::local_channel::new_bounded(1);
        let history = ShardHistory {
            shard,
            store,
            compaction_trigger_tables: compaction_trigger_tables.max(1),
            backlog_bytes,
            wake_flush,
            wake_compaction,
            force_flush: false,
            force_compaction: false,
            flush_wanted: 0,
            closing: false,
            times: JobTimes::default(),
            last_error: None,
            writes: 0,
            pause: JobPause::from_env(),
            idle: IdleThreads::new(JOB_NICE),
        };
        (Rc::new(RefCell::new(history)), JobSignals { flush, compaction })
    }

    /// What the tables cover: recovery re-derives the history of WAL records after it.
    pub fn watermark(&self) -> u64 {
        self.store.watermark()
    }

    /// Puts a durable WAL group's history writes; `wal_sequence` is its last record's.
    /// Returns the key buffers (the store copies keys), for the writer to build keys in again.
    pub fn apply(&mut self, writes: Vec<(Vec<u8>, Vec<u8>)>, wal_sequence: u64) -> Vec<Vec<u8>> {
        self.writes += writes.len() as u64;
        let mut keys = Vec::with_capacity(writes.len());
        for (key, value) in writes {
            self.store.put_owned(&key, value);
            keys.push(key);
        }
        self.store.set_watermark(wal_sequence);
        self.wake_due();
        keys
    }

    /// Wakes the loop whose work is due (not a held flush: the compaction's end, or the
    /// memtable reaching half its bound, wakes it then).
    /// (Per commit group: asks once whether a compaction is due.)
    fn wake_due(&self) {
        let compaction_due = self.store.needs_compaction(self.level0_trigger());
        if self.flush_due() && !self.flush_held_when(compaction_due) {
            let _ = self.wake_flush.try_send(());
        }
        if compaction_due && !self.store.flush_running() {
            let _ = self.wake_compaction.try_send(());
        }
    }

    /// Whether the memtable holds `backlog_bytes` (`[storage] memtable_backlog_kib`, by
    /// default `MEMTABLE_BACKLOG_FACTOR` times its size) while a flush runs or waits for a
    /// compaction (`flush_held`): the committer then waits (`wait_for_backlog`). Not while no
    /// flush runs (the next `apply` starts one) or after a failed job (that would stop order
    /// flow on a failing disk; the WAL holds everything, and the job is tried again).
    pub fn backlogged(&self) -> bool {
        self.store.memtable_bytes() >= self.backlog_bytes && self.flush_behind()
    }

    /// A flush runs or waits for a compaction, and no job has failed since: what both the
    /// backlog's stop and its slowdown need besides the memtable's size. Asked after the size,
    /// which is a field: per commit group, `flush_held` asks the levels whether a compaction
    /// is due.
    fn flush_behind(&self) -> bool {
        (self.store.flush_running() || self.flush_held()) && self.last_error.is_none()
    }

    /// How long the committer pauses before it puts the next group's history in, while the
    /// memtable holds more than half its backlog bound and a flush runs or waits (RocksDB's
    /// "slowdown" before its "stop"): from nothing at half the bound to `SLOWDOWN_MAX` at it.
    /// A job in the idle class gets only the CPU the order flow leaves, so on a busy core it
    /// falls behind until the bound stops the order flow for a whole flush (seconds, with a
    /// bound of hundreds of MiB: docs/PERFORMANCE.md "jemalloc for the server, the jobs' CPU,
    /// and what a short run hides"). Pausing a little per group earlier leaves the job the
    /// core in pieces, and larger groups meanwhile cost the shard less per order. Not after a
    /// failed job, as `backlogged`.
    pub fn slowdown(&self) -> Option<std::time::Duration> {
        slowdown_for(self.store.memtable_bytes(), self.backlog_bytes).filter(|_| self.flush_behind())
    }

    fn flush_due(&self) -> bool {
        self.store.needs_flush() || self.force_flush || self.closing || self.flush_owed()
    }

    /// Whether the next flush waits for a compaction that is running or due (a compaction
    /// that is due goes first, as it would not begin beside a flush: `next_compaction`):
    /// - while the memtable holds less than half its backlog bound: one job at a time shares
    ///   the disk less with the WAL's syncs, and a flush after the compaction writes one larger
    ///   table instead of several small ones (measured: docs/PERFORMANCE.md "A flush beside a
    ///   compaction");
    /// - while level 0 holds `LEVEL0_STOP_FACTOR` times its trigger, whatever the memtable.
    ///
    /// Never when closing, forced, or a checkpoint waits; not for a compaction that is due but
    /// failing (`last_error`).
    fn flush_held(&self) -> bool {
        self.flush_held_when(self.store.needs_compaction(self.level0_trigger()))
    }

    /// `flush_held`, given whether a compaction is due.
    fn flush_held_when(&self, compaction_due: bool) -> bool {
        if self.closing || self.force_flush || self.flush_owed() {
            return false;
        }
        let compaction_first = self.store.compaction_running() || (self.last_error.is_none() && compaction_due);
        let memory_presses = self.store.memtable_bytes() >= self.backlog_bytes / 2;
        let level0_full = self.store.level0_tables() >= LEVEL0_STOP_FACTOR * self.compaction_trigger_tables;
        compaction_first && (!memory_presses || level0_full)
    }

    /// Level-0 tables that make a compaction due: 1 in a forced round.
    fn level0_trigger(&self) -> usize {
        if self.force_compaction {
            1
        } else {
            self.compaction_trigger_tables
        }
    }

    /// Whether a checkpoint waits for a flush.
    fn flush_owed(&self) -> bool {
        self.store.watermark() < self.flush_wanted
    }

    /// Flushes the memtable so the tables cover the WAL through `wal_sequence` (every record
    /// through it is durable and its history already applied, which the caller guarantees).
    pub fn flush_through(&mut self, wal_sequence: u64) {
        self.store.set_watermark(wal_sequence);
        self.flush_wanted = self.flush_wanted.max(wal_sequence);
        let _ = self.wake_flush.try_send(());
    }

    /// Flush and compaction failures so far.
    pub fn failures(&self) -> u64 {
        self.times.failures
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.clone()
    }

    /// Runs `q`; `live` is what the store does not hold yet, in key order: the open bar of a
    /// k-line series (`history::live_bar`), the live orders of an account
    /// (`history::live_orders`).
    pub fn query(&self, q: &HistoryQuery, live: Vec<KeyValue>) -> Reply {
        match history::query(&self.store, q, live) {
            Ok(page) => Reply { status: 200, body: history::page_body(&page) },
            Err(QueryError::BadCursor) => Reply::http_message(
                HttpErrorCode::InvalidQueryParameter,
                "query parameter cursor does not belong to this query (pass the `next` of the previous page)",
            ),
            Err(QueryError::Store(e)) => {
                tracing::error!("shard {}: history read failed: {e}", self.shard);
                Reply::http_message(HttpErrorCode::InternalError, "internal server error: the history store failed")
            }
        }
    }

    /// The `missing` bars of `duration_ns` (ticks: 0) of instrument `bare` before the
    /// engine's first one (`first_id`, starting at `first_ts`), as DIFF chart entries with
    /// their ids, oldest first.
    pub fn chart_before(
        &self,
        bare: &str,
        duration_ns: i64,
        first_ts: i64,
        first_id: i64,
        missing: i64,
        step_ns: i64,
    ) -> Result<Vec<(i64, serde_json::Value)>, String> {
        let n = missing.max(0) as usize;
        if duration_ns == 0 {
            // Ticks carry their ids in their keys; one may share the first one's time.
            let rows = history::newest_before(
                &self.store,
                history::TICKS,
                bare,
                0,
                first_ts.saturating_add(1),
                n + 1,
                step_ns,
            )
            .map_err(|e| format!("{e:?}"))?;
            let mut out = Vec::with_capacity(n);
            for (key, value) in rows {
                let Some(id) = history::tick_id_of(&key) else { continue };
                if id >= first_id {
                    continue;
                }
                let tick: Tick = history::decode(&value)?;
                out.push((id, super::diff_chart::diff_tick(&tick)));
            }
            let skip = out.len().saturating_sub(n);
            Ok(out.into_iter().skip(skip).collect())
        } else {
            let rows = history::newest_before(&self.store, history::KLINES, bare, duration_ns, first_ts, n, step_ns)
                .map_err(|e| format!("{e:?}"))?;
            let first = first_id - rows.len() as i64;
            rows.into_iter()
                .enumerate()
                .map(|(i, (_, value))| {
                    let bar: Kline = history::decode(&value)?;
                    Ok((first + i as i64, super::diff_chart::diff_bar(&bar)))
                })
                .collect()
        }
    }

    /// Flush and compact now, whatever the thresholds: the flush loop flushes, then hands
    /// the compaction loop a forced round.
    pub fn trigger(&mut self) {
        self.force_flush = true;
        let _ = self.wake_flush.try_send(());
    }

    /// Asks the background task to flush what is left and stop (a running compaction ends
    /// first; no new one begins).
    pub fn close(&mut self) {
        self.closing = true;
        let _ = self.wake_flush.try_send(());
        let _ = self.wake_compaction.try_send(());
    }

    pub fn stats(&self) -> serde_json::Value {
        let s = self.store.stats();
        serde_json::json!({
            "shard": self.shard,
            "memtable_bytes": s.memtable_bytes,
            "memtable_entries": s.memtable_entries,
            "flushing_bytes": s.frozen_bytes,
            "tables_per_level": s.tables,
            "table_bytes_per_level": s.table_bytes,
            "flushes": s.flushes,
            "compactions": s.compactions,
            "bytes_flushed": s.bytes_flushed,
            "compaction_bytes_in": s.bytes_compacted_in,
            "compaction_bytes_out": s.bytes_compacted_out,
            "flush_time_us": self.times.flush_us,
            "compaction_time_us": self.times.compaction_us,
            "flush_cpu_us": self.times.flush_cpu_us,
            "compaction_cpu_us": self.times.compaction_cpu_us,
            "release_cpu_us": self.times.release_cpu_us,
            "job_running": s.flush_running || s.compaction_running,
            "flush_running": s.flush_running,
            "compaction_running": s.compaction_running,
            "job_failures": self.times.failures,
            "last_error": self.last_error,
            "writes": self.writes,
            "watermark_wal_sequence": s.watermark,
        })
    }
}

/// The flush loop's next job: when the memtable is full, a flush or checkpoint asked for
/// one, or the task is closing; unless it waits for a compaction (`flush_held`: the
/// compaction's end, or the memtable reaching half its backlog bound, wakes this loop again).
/// A forced round with nothing to flush goes straight to its compaction.
fn next_flush(h: &mut ShardHistory) -> Option<FlushJob> {
    if !h.flush_due() || h.flush_held() {
        return None;
    }
    let job = h.store.begin_flush();
    if job.is_none() {
        forced_flush_done(h);
    }
    job
}

/// A forced round's flush is done (or had nothing to flush): its compaction comes next.
fn forced_flush_done(h: &mut ShardHistory) {
    if std::mem::take(&mut h.force_flush) {
        h.force_compaction = true;
        let _ = h.wake_compaction.try_send(());
    }
}

/// The compaction loop's next job: the level most in need (`Store::begin_compaction`); none
/// once closing, nor while a flush runs (one job at a time unless memory presses: then a
/// flush goes beside a running compaction, `flush_held`, never the other way round). A forced
/// round ends when nothing is left to compact.
fn next_compaction(h: &mut ShardHistory) -> Option<CompactionJob> {
    if h.closing || h.store.flush_running() {
        return None;
    }
    let job = h.store.begin_compaction(h.level0_trigger());
    if job.is_none() {
        h.force_compaction = false;
    }
    job
}

/// Runs the flush loop and the compaction loop until the store is closed (the flush loop
/// flushes what is left first).
pub async fn run_background(history: SharedHistory, signals: JobSignals) {
    futures_lite::future::zip(
        job_loop::<Flushes>(history.clone(), signals.flush),
        job_loop::<Compactions>(history, signals.compaction),
    )
    .await;
}

/// One of the two loops of the background task: what its jobs are and how it takes them.
trait JobKind {
    /// For logs and `last_error`.
    const NAME: &'static str;
    type Job: Send + 'static;
    type Done: Send + 'static;
    /// The next job (`next_flush`, `next_compaction`).
    fn next(h: &mut ShardHistory) -> Option<Self::Job>;
    fn pause(h: &ShardHistory) -> Option<std::time::Duration>;
    /// Where this kind's job CPU is counted.
    fn cpu_us(times: &mut JobTimes) -> &mut u64;
    /// CPU a finished job used on threads of its own (beside the job thread's), µs.
    fn helpers_cpu_us(_done: &crate::storage::lsm::Result<Self::Done>) -> u64 {
        0
    }
    /// The heavy part, on the job's own thread.
    fn run(job: Self::Job) -> crate::storage::lsm::Result<Self::Done>;
    /// Makes reads see the result and counts `elapsed_us`; Err: the job failed.
    fn finish(
        h: &mut ShardHistory,
        done: crate::storage::lsm::Result<Self::Done>,
        elapsed_us: u64,
    ) -> Result<(), String>;
}

struct Flushes;

impl JobKind for Flushes {
    const NAME: &'static str = "flush";
    type Job = FlushJob;
    type Done = crate::storage::lsm::store::FlushDone;

    fn next(h: &mut ShardHistory) -> Option<FlushJob> {
        next_flush(h)
    }

    fn pause(h: &ShardHistory) -> Option<std::time::Duration> {
        h.pause.flush
    }

    fn cpu_us(times: &mut JobTimes) -> &mut u64 {
        &mut times.flush_cpu_us
    }

    fn run(job: FlushJob) -> crate::storage::lsm::Result<Self::Done> {
        job.run()
    }

    fn finish(
        h: &mut ShardHistory,
        done: crate::storage::lsm::Result<Self::Done>,
        elapsed_us: u64,
    ) -> Result<(), String> {
        let report = h.store.finish_flush(done).map_err(|e| e.to_string())?;
        h.times.flush_us += elapsed_us;
        if let Some(r) = report {
            tracing::debug!("shard {}: history flush {r:?}", h.shard);
        }
        forced_flush_done(h);
        Ok(())
    }
}

struct Compactions;

impl JobKind for Compactions {
    const NAME: &'static str = "compaction";
    type Job = CompactionJob;
    type Done = crate::storage::lsm::store::CompactionDone;

    fn next(h: &mut ShardHistory) -> Option<CompactionJob> {
        next_compaction(h)
    }

    fn pause(h: &ShardHistory) -> Option<std::time::Duration> {
        h.pause.compaction
    }

    fn cpu_us(times: &mut JobTimes) -> &mut u64 {
        &mut times.compaction_cpu_us
    }

    fn helpers_cpu_us(done: &crate::storage::lsm::Result<Self::Done>) -> u64 {
        done.as_ref().map_or(0, |d| d.writer_cpu_us())
    }

    fn run(job: CompactionJob) -> crate::storage::lsm::Result<Self::Done> {
        job.run()
    }

    fn finish(
        h: &mut ShardHistory,
        done: crate::storage::lsm::Result<Self::Done>,
        elapsed_us: u64,
    ) -> Result<(), String> {
        let report = h.store.finish_compaction(done).map_err(|e| e.to_string())?;
        h.times.compaction_us += elapsed_us;
        tracing::debug!("shard {}: history compaction {report:?}", h.shard);
        Ok(())
    }
}

/// Takes `K`'s jobs one after another while there are any, then waits to be woken; returns
/// once the store is closing and nothing is left.
async fn job_loop<K: JobKind>(history: SharedHistory, woken: LocalReceiver<()>) {
    loop {
        loop {
            let Some(job) = K::next(&mut history.borrow_mut()) else { break };
            let began = Instant::now();
            let (pause, idle) = (K::pause(&history.borrow()), history.borrow().idle.clone());
            let (done, cpu_us) = run_job(&idle, pause, move || K::run(job)).await;
            let (obsolete, ok) = {
                let mut h = history.borrow_mut();
                *K::cpu_us(&mut h.times) += cpu_us + K::helpers_cpu_us(&done);
                let finished = K::finish(&mut h, done, began.elapsed().as_micros() as u64);
                let ok = finished.is_ok();
                if let Err(e) = finished {
                    failed(&mut h, K::NAME, e);
                }
                // The other loop may have work now: a new level-0 table may make a compaction
                // due, and a flush held for level 0 (`flush_held`) may go.
                h.wake_due();
                (h.store.take_obsolete(), ok)
            };
            let release_cpu_us = release(&idle, obsolete).await;
            history.borrow_mut().times.release_cpu_us += release_cpu_us;
            if !ok {
                // Do not spin on a failing disk: wait for the next wake-up.
                break;
            }
        }
        if history.borrow().closing {
            return;
        }
        if woken.recv().await.is_none() {
            return;
        }
        history.borrow_mut().last_error = None;
    }
}

/// Runs a job's heavy part on a thread of its own in the idle class (`IdleThreads`) without
/// blocking the shard (`niced_thread`). A flush and a compaction each have one, so neither
/// waits for the other. Returns the job's result and the CPU its thread used, in µs.
async fn run_job<T: Send + 'static>(
    idle: &IdleThreads,
    pause: Option<std::time::Duration>,
    job: impl FnOnce() -> crate::storage::lsm::Result<T> + Send + 'static,
) -> (crate::storage::lsm::Result<T>, u64) {
    idle.spawn("history-job", Cores::Spare, move || with_cpu_us(|| paused(pause, job)))
        .await
        .unwrap_or_else(|e| (Err(crate::storage::lsm::LsmError::io("history job", std::io::Error::other(e))), 0))
}

/// Frees and deletes what a job replaced, on a thread of its own; returns that thread's CPU,
/// in µs.
async fn release(idle: &IdleThreads, obsolete: crate::storage::lsm::store::Obsolete) -> u64 {
    idle.spawn("history-release", Cores::Spare, move || with_cpu_us(|| remove_obsolete(obsolete)).1).await.unwrap_or(0)
}

/// `work()`'s result and the CPU the calling thread used for it, in µs.
fn with_cpu_us<T>(work: impl FnOnce() -> T) -> (T, u64) {
    let began = crate::metrics::thread_cpu_us();
    let result = work();
    (result, crate::metrics::thread_cpu_us().saturating_sub(began))
}

/// Runs `job` after `pause` and waits `pause` again before returning (`JobPause`).
fn paused<T>(pause: Option<std::time::Duration>, job: impl FnOnce() -> T) -> T {
    if let Some(p) = pause {
        std::thread::sleep(p);
    }
    let result = job();
    if let Some(p) = pause {
        std::thread::sleep(p);
    }
    result
}

/// Nice value of the checkpoint threads, and of the job threads while lifted out of the idle
/// class: the kernel gives them little of what the shard (nice 0) wants.
const JOB_NICE: libc::c_int = 19;

/// Runs `job` on a thread of its own at `JOB_NICE`, on any core
/// (`Cores::Others`: see there), and waits for it without blocking the shard: for checkpoint
/// encoding and writing.
pub fn on_background_thread<T: Send + 'static>(
    what: &'static str,
    job: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> impl std::future::Future<Output = Result<T, String>> {
    // The thread starts here, not when the future is first polled.
    let result = super::niced_thread::spawn(what, JOB_NICE, Cores::Others, job);
    async move { result.await.and_then(|result| result) }
}

fn failed(h: &mut ShardHistory, what: &str, error: String) {
    // The WAL still holds everything: a failed flush keeps its memtable readable and is tried
    // again; nothing acknowledged is lost.
    tracing::error!("shard {}: history {what} failed (will retry): {error}", h.shard);
    h.times.failures += 1;
    h.force_flush = false;
    h.force_compaction = false;
    h.last_error = Some(format!("{what}: {error}"));
}

/// Waits while `history` is backlogged (`ShardHistory::backlogged`), polling every
/// millisecond. The shard now waits for its jobs, so they leave the idle class: on a
/// saturated core an idle-class job would otherwise never finish.
pub async fn wait_for_backlog(history: &SharedHistory) {
    while history.borrow().backlogged() {
        history.borrow().idle.lift();
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// `ShardHistory::slowdown` for a memtable of `bytes` against a backlog bound of
/// `backlog_bytes`.
fn slowdown_for(bytes: usize, backlog_bytes: usize) -> Option<std::time::Duration> {
    let half = backlog_bytes / 2;
    if half == 0 || bytes <= half {
        return None;
    }
    let over = (bytes - half).min(half) as f64 / half as f64;
    Some(SLOWDOWN_MAX.mul_f64(over))
}

/// Spawns the background task in its low-priority task queue.
pub fn spawn_background(history: SharedHistory, signals: JobSignals) -> Option<glommio::task::JoinHandle<()>> {
    let queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(BACKGROUND_SHARES),
        glommio::Latency::NotImportant,
        "history-store",
    );
    match glommio::spawn_local_into(run_background(history, signals), queue) {
        Ok(task) => Some(task.detach()),
        Err(e) => {
            tracing::error!("cannot start the history store's background task: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowdown_grows_from_half_the_bound_to_the_bound() {
        let bound = 1 << 20;
        assert_eq!(slowdown_for(0, bound), None);
        assert_eq!(slowdown_for(bound / 2, bound), None, "nothing up to half the bound");
        let a_little = slowdown_for(bound / 2 + bound / 8, bound).expect("past half");
        let more = slowdown_for(bound - bound / 8, bound).expect("near the bound");
        assert!(a_little < more && more < SLOWDOWN_MAX, "{a_little:?} {more:?}");
        assert_eq!(a_little, SLOWDOWN_MAX / 4);
        assert_eq!(slowdown_for(bound, bound), Some(SLOWDOWN_MAX));
        assert_eq!(slowdown_for(3 * bound, bound), Some(SLOWDOWN_MAX), "never more");
        assert_eq!(slowdown_for(5, 1), None, "a bound too small to halve");
    }

    fn key(n: u64) -> String {
        format!("s{:02}/{n:08}", n % 37)
    }

    /// Writes until the memtable is full; returns the last key number.
    fn fill(h: &mut ShardHistory, written: &mut u64) {
        while !h.store.needs_flush() {
            *written += 1;
            h.store.put(key(*written).as_bytes(), &[7; 100]);
        }
    }

    /// Writes until the memtable holds `bytes`.
    fn fill_to(h: &mut ShardHistory, written: &mut u64, bytes: usize) {
        while h.store.memtable_bytes() < bytes {
            *written += 1;
            h.store.put(key(*written).as_bytes(), &[7; 100]);
        }
    }

    /// A shard's history in a fresh directory: 64 KiB memtables, a 256 KiB level 1, level 0
    /// compacted at `trigger` tables, a backlog bound of `backlog_memtables` memtables.
    fn small_history(trigger: usize, backlog_memtables: usize) -> (tempfile::TempDir, SharedHistory, JobSignals) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_store(dir.path(), 0, 64 << 10, 256 << 10).expect("store");
        let (history, signals) = ShardHistory::new(0, store, trigger, backlog_memtables * (64 << 10));
        (dir, history, signals)
    }

    fn flush_now(h: &mut ShardHistory) {
        let job = next_flush(h).expect("a flush is due");
        let done = job.run();
        h.store.finish_flush(done).expect("flush");
        forced_flush_done(h);
    }

    fn all_readable(h: &ShardHistory, written: u64) {
        for i in (1..=written).step_by(53) {
            assert_eq!(h.store.get(key(i).as_bytes()).expect("read"), Some(vec![7; 100]), "{}", key(i));
        }
    }

    /// While a compaction runs, a full memtable waits for it until it holds half its backlog
    /// bound; from there flushes go on beside the compaction, until level 0 holds
    /// `LEVEL0_STOP_FACTOR` times its trigger; then the flush waits for the compaction (and the
    /// committer, once the memtable reaches its backlog bound), unless the store is closing.
    /// Nothing is lost.
    #[test]
    fn flushes_go_on_during_a_compaction_until_level0_is_full() {
        let (dir, history, _signals) = small_history(2, 4);
        let mut h = history.borrow_mut();
        let mut written = 0;
        for _ in 0..2 {
            fill(&mut h, &mut written);
            flush_now(&mut h);
        }
        let compaction = next_compaction(&mut h).expect("level 0 is at its trigger");
        assert!(next_compaction(&mut h).is_none(), "one compaction at a time");
        // A full memtable waits for the compaction while it holds less than half the backlog
        // bound (unless forced)...
        fill(&mut h, &mut written);
        assert!(h.flush_held() && next_flush(&mut h).is_none(), "one job at a time while memory allows");
        h.force_flush = true;
        assert!(!h.flush_held(), "a forced flush goes");
        h.force_flush = false;
        // ...from there on, flushes go beside it, until level 0 holds 6 tables (3 x 2): the
        // compaction's 2 and 4 flushed beside it.
        let half = h.backlog_bytes / 2;
        for flushed in 3..=6 {
            fill_to(&mut h, &mut written, half);
            assert!(!h.flush_held(), "held at {flushed} tables");
            flush_now(&mut h);
            assert_eq!(h.store.level0_tables(), flushed);
            all_readable(&h, written);
        }
        fill_to(&mut h, &mut written, half);
        assert!(h.flush_held() && next_flush(&mut h).is_none(), "level 0 is full: the flush waits");
        assert!(!h.backlogged(), "below the backlog bound the committer goes on");
        assert!(h.slowdown().unwrap_or_default() < SLOWDOWN_MAX / 4, "hardly slowed at half the bound");
        let bound = h.backlog_bytes;
        fill_to(&mut h, &mut written, half + bound / 4);
        let pause = h.slowdown().expect("slowed past half the bound while the flush waits");
        assert!(pause >= SLOWDOWN_MAX / 2 && pause < SLOWDOWN_MAX, "{pause:?}");
        fill_to(&mut h, &mut written, bound);
        assert!(h.backlogged(), "at the backlog bound the committer waits for the compaction");
        assert_eq!(h.slowdown(), Some(SLOWDOWN_MAX));
        h.closing = true;
        assert!(!h.flush_held(), "a closing store flushes whatever level 0 holds");
        h.closing = false;

        let done = compaction.run();
        let report = h.store.finish_compaction(done).expect("compaction").expect("a report");
        assert_eq!((report.level, report.input_tables), (0, 2), "{report:?}");
        assert_eq!(h.store.level0_tables(), 4, "the flushes made during it stay in level 0");
        assert!(!h.flush_held());
        assert_eq!(h.slowdown(), None, "no pause while no flush runs or waits: the next one starts");
        flush_now(&mut h);
        all_readable(&h, written);
        remove_obsolete(h.store.take_obsolete());
        drop(h);
        drop(history);
        // What is on disk holds both jobs' changes: reopened, every flushed key is there.
        let store = open_store(dir.path(), 0, 64 << 10, 256 << 10).expect("reopen");
        let (history, _signals) = ShardHistory::new(0, store, 2, 2 * (64 << 10));
        all_readable(&history.borrow(), written);
    }

    /// Writes keep coming during every job (the memtable is full again when each ends), below
    /// half the backlog bound: a compaction that is due goes before the next flush (which waits
    /// for it) and no compaction begins beside a flush, so the jobs alternate, level 0 stays
    /// at its trigger, and nothing is lost.
    #[test]
    fn compactions_keep_their_turn_while_flushes_are_always_due() {
        let (_dir, history, _signals) = small_history(2, 4);
        let mut h = history.borrow_mut();
        let mut written = 0u64;
        let (mut flushes, mut compactions, mut most_level0) = (0, 0, 0);
        for _ in 0..60 {
            fill(&mut h, &mut written);
            if h.store.needs_compaction(2) {
                assert!(next_flush(&mut h).is_none(), "a flush began before a due compaction");
                let job = next_compaction(&mut h).expect("a compaction is due");
                let flush = next_flush(&mut h).is_some();
                assert!(!flush, "a flush began beside a compaction below half the backlog bound");
                h.store.finish_compaction(job.run()).expect("compaction");
                remove_obsolete(h.store.take_obsolete());
                compactions += 1;
            } else {
                let job = next_flush(&mut h).expect("a flush is due");
                assert!(next_compaction(&mut h).is_none(), "a compaction began beside a flush");
                h.store.finish_flush(job.run()).expect("flush");
                flushes += 1;
            }
            most_level0 = most_level0.max(h.store.level0_tables());
        }
        assert!(compactions >= 10 && flushes >= 20, "{flushes} flushes, {compactions} compactions");
        assert!(most_level0 <= 2, "level 0 reached {most_level0} tables");
        all_readable(&h, written);
    }

    /// A flush does not wait for a compaction that is due but failing (the last job failed):
    /// memory would only grow while it retried.
    #[test]
    fn a_flush_does_not_wait_for_a_failing_compaction() {
        let (_dir, history, _signals) = small_history(2, 4);
        let mut h = history.borrow_mut();
        let mut written = 0;
        for _ in 0..2 {
            fill(&mut h, &mut written);
            flush_now(&mut h);
        }
        fill(&mut h, &mut written);
        assert!(h.store.needs_compaction(2) && h.flush_held(), "a due compaction goes first");
        failed(&mut h, "compaction", "disk full".into());
        assert!(!h.flush_held(), "held behind a failing compaction");
        flush_now(&mut h);
        assert_eq!(h.store.level0_tables(), 3);
        h.last_error = None;
        fill(&mut h, &mut written);
        assert!(h.flush_held(), "once the error clears (the next wake-up), the compaction goes first again");
    }

    /// Polls `done` every 5 ms, for at most 10 s.
    async fn until(history: &SharedHistory, what: &str, done: impl Fn(&ShardHistory) -> bool) {
        let began = Instant::now();
        while !done(&history.borrow()) {
            assert!(began.elapsed() < std::time::Duration::from_secs(10), "{what}");
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// In the real background task, a flush (of a memtable at half its backlog bound) begins
    /// and ends while a compaction (paused 1.5 s before and after its work) still runs: it
    /// waits neither for the compaction nor for a thread pool they share.
    #[test]
    fn a_flush_completes_while_a_compaction_is_still_running() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let (_dir, history, signals) = small_history(2, 4);
                let pause = Some(std::time::Duration::from_millis(1500));
                history.borrow_mut().pause = JobPause { flush: None, compaction: pause };
                let mut written = 0;
                for _ in 0..2 {
                    let mut h = history.borrow_mut();
                    fill(&mut h, &mut written);
                    flush_now(&mut h);
                }
                let task = glommio::spawn_local(run_background(history.clone(), signals));
                history.borrow().wake_due();
                until(&history, "the compaction began", |h| h.store.compaction_running()).await;
                {
                    let mut h = history.borrow_mut();
                    let half = h.backlog_bytes / 2;
                    fill_to(&mut h, &mut written, half);
                    h.wake_due();
                }
                until(&history, "the flush ended", |h| h.store.stats().flushes == 3).await;
                assert!(history.borrow().store.compaction_running(), "the flush waited for the compaction");
                assert_eq!(history.borrow().store.stats().compactions, 0);
                until(&history, "the compaction ended", |h| !h.store.compaction_running()).await;
                history.borrow_mut().close();
                task.await;
                let h = history.borrow();
                assert!(h.last_error().is_none(), "{:?}", h.last_error());
                all_readable(&h, written);
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    /// A forced round flushes first and compacts after, whatever the thresholds; with nothing
    /// to flush it goes straight to the compaction.
    #[test]
    fn a_forced_round_flushes_then_compacts_everything() {
        let (_dir, history, _signals) = small_history(4, 4);
        let mut h = history.borrow_mut();
        let mut written = 0;
        fill(&mut h, &mut written);
        flush_now(&mut h);
        h.store.put(b"s00/last", &[1]);
        assert!(next_compaction(&mut h).is_none(), "one level-0 table is below the trigger");
        h.trigger();
        assert!(next_compaction(&mut h).is_none(), "the forced compaction waits for the forced flush");
        flush_now(&mut h);
        assert!(!h.force_flush && h.force_compaction);
        while let Some(job) = next_compaction(&mut h) {
            let done = job.run();
            h.store.finish_compaction(done).expect("compaction");
        }
        assert!(!h.force_compaction, "the round ends when nothing is left");
        assert_eq!((h.store.level0_tables(), h.store.memtable_bytes()), (0, 0));
        assert!(next_flush(&mut h).is_none());
        all_readable(&h, written);

        // Nothing to flush: the round goes straight to its compaction.
        fill(&mut h, &mut written);
        flush_now(&mut h);
        h.trigger();
        assert!(next_flush(&mut h).is_none(), "nothing to flush");
        assert!(h.force_compaction && next_compaction(&mut h).is_some());
    }
}
