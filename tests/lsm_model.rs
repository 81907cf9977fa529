//! The history store's storage engine (`storage::lsm`) against a model.
//!
//! Model-based property test (seeded, so every run replays the same cases): random puts,
//! deletes, gets, range scans (full and `range_limited`), watermarks, flushes, compactions,
//! background flush and compaction jobs (a flush and a compaction may be in flight together,
//! run and finished in either order) and simulated crashes drive a `Store` and a `BTreeMap`;
//! every read must match the model.
//!
//! Crash semantics tested: the store has no log of its own, so a crash (dropping the store and
//! reopening the directory) loses exactly the writes the on-disk manifest does not cover. A
//! job makes its result durable when it *runs* (it writes its tables, then the manifest), not
//! when it is finished: a crash after `FlushJob::run` keeps the frozen memtable's writes (but
//! not those made after `begin_flush`, which went to a fresh memtable), a crash before it
//! keeps the previous durable state; a compaction never changes what the store holds. The
//! model keeps the durable state (`disk`) and its watermark and falls back to them. Crashes
//! may also leave debris an interrupted flush or compaction would leave (a `.tmp` table of an
//! older server, a `.tmp` manifest, a half-written and a complete table the manifest never
//! listed): reopening must remove it and never serve it.
//!
//! Corruption tests: truncated and half-written tables, bit flips in a data block, the index,
//! the filter and the footer, and a table named in the manifest that is missing.

use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestRunner};
use qaexchange::storage::lsm::format::{BuildOptions, Footer, FOOTER_LEN};
use qaexchange::storage::lsm::fsio::{Pacing, WriteMode};
use qaexchange::storage::lsm::sstable::{self, Table};
use qaexchange::storage::lsm::store::{
    remove_obsolete, CompactionDone, CompactionJob, CompactionReport, FlushDone, FlushJob, MAX_LEVELS,
};
use qaexchange::storage::lsm::{Entry, Store, StoreOptions};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

fn small_options() -> StoreOptions {
    // Tiny blocks and tables so a few dozen keys span many blocks and several tables per
    // level, and tiny levels (a table file is at least 4 KiB: level 1 holds one, level 2
    // two, level 3 four...) so the data spreads over several levels and compactions go on
    // down.
    StoreOptions {
        build: BuildOptions { block_bytes: 64, bloom_bits_per_key: 10, pacing: Pacing::NONE },
        memtable_bytes: 1 << 20,
        table_bytes: 120,
        level1_bytes: LEVEL1_BYTES,
        level_ratio: 2,
        // Keys with a '/' share a memtable skiplist per prefix, the others have one each.
        memtable_separator: Some(b'/'),
    }
}

const LEVEL1_BYTES: u64 = 4096;

/// Whether a level below 0 (and above the last) holds more than its target, from the model's
/// own arithmetic (level n may hold `LEVEL1_BYTES * 2^(n-1)`).
fn over_target(table_bytes: &[u64]) -> bool {
    (1..MAX_LEVELS - 1).any(|level| table_bytes[level] > LEVEL1_BYTES << (level - 1))
}

fn key(i: u8) -> Vec<u8> {
    // Mixed lengths, shared prefixes.
    if i % 5 == 0 {
        format!("k{i:02}").into_bytes()
    } else {
        format!("k{i:02}/{}", "x".repeat(usize::from(i % 4))).into_bytes()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, Vec<u8>),
    Delete(u8),
    Get(u8),
    Range(Option<u8>, Option<u8>, bool),
    /// `range_limited` with bounds `(key, inclusive)` and a limit.
    RangeLimited(Option<(u8, bool)>, Option<(u8, bool)>, usize),
    /// The owner records its log position (one step per write) as what the memtable covers.
    SetWatermark,
    /// Synchronous flush and compaction: no-ops while a job of their kind is pending.
    Flush,
    Compact,
    /// Begin a background job (refused while one of its kind is pending).
    BeginFlush,
    BeginCompaction,
    /// Run a pending job (on another thread) without finishing it: the flush if `true` and
    /// one is pending, else the compaction (else the flush).
    RunJob(bool),
    /// Finish a pending job (picked as for `RunJob`), running it first if it has not run.
    FinishJob(bool),
    Crash,
    CrashWithDebris,
}

fn bound() -> impl Strategy<Value = Option<(u8, bool)>> {
    proptest::option::of((0u8..45, any::<bool>()))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0u8..40, proptest::collection::vec(any::<u8>(), 0..24)).prop_map(|(k, v)| Op::Put(k, v)),
        3 => (0u8..40).prop_map(Op::Delete),
        6 => (0u8..45).prop_map(Op::Get),
        3 => (proptest::option::of(0u8..45), proptest::option::of(0u8..45), any::<bool>()).prop_map(|(a, b, i)| Op::Range(a, b, i)),
        4 => (bound(), bound(), prop_oneof![6 => 0usize..12, 1 => Just(usize::MAX)]).prop_map(|(a, b, n)| Op::RangeLimited(a, b, n)),
        2 => Just(Op::SetWatermark),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        3 => Just(Op::BeginFlush),
        2 => Just(Op::BeginCompaction),
        2 => any::<bool>().prop_map(Op::RunJob),
        2 => any::<bool>().prop_map(Op::FinishJob),
        1 => Just(Op::Crash),
        1 => Just(Op::CrashWithDebris),
    ]
}

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

fn model_range(m: &Map, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter()
        .filter(|(k, _)| {
            let k = k.as_slice();
            (match lo {
                Bound::Included(b) => k >= b,
                Bound::Excluded(b) => k > b,
                Bound::Unbounded => true,
            }) && (match hi {
                Bound::Included(b) => k <= b,
                Bound::Excluded(b) => k < b,
                Bound::Unbounded => true,
            })
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn as_bound(b: &Option<(Vec<u8>, bool)>) -> Bound<&[u8]> {
    match b {
        None => Bound::Unbounded,
        Some((k, true)) => Bound::Included(k),
        Some((k, false)) => Bound::Excluded(k),
    }
}

fn leave_debris(dir: &Path) {
    std::fs::write(dir.join("00000000000f0000.sst.tmp"), b"half a table").unwrap();
    // A half-written table under its final name (tables are written there; the manifest
    // lists one only after it is whole).
    std::fs::write(dir.join(sstable::file_name(0xf0002)), b"half a table, unlisted").unwrap();
    std::fs::write(dir.join("MANIFEST.tmp"), b"half a manifest").unwrap();
    // A complete, valid table no manifest lists (a flush that crashed before the manifest
    // rename), holding versions that would break the model if served.
    let ghosts: Vec<Entry> =
        (0u8..40).map(|i| Entry { key: key(i), seq: u64::MAX - 1, value: Some(b"ghost".to_vec()) }).collect();
    let mut sorted = ghosts;
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    sstable::write_table(dir, 0xf0001, &sorted, BuildOptions::default()).unwrap();
}

fn table_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| sstable::parse_file_name(&e.as_ref().unwrap().file_name().to_string_lossy()).is_some())
        .count()
}

/// Replaced table files kept to be written over (`spare_files`).
fn spare_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(qaexchange::storage::lsm::spare_files::SPARE_SUFFIX)
        })
        .count()
}

/// What the store must hold, now and after a crash.
#[derive(Default)]
struct Model {
    /// What reads see.
    live: Map,
    /// What the manifest on disk (and the tables it lists) holds: what a crash falls back to.
    disk: Map,
    /// The watermark in the manifest on disk.
    disk_wm: u64,
    /// `Store::watermark`: that of the last finished flush (or of the manifest at open).
    store_wm: u64,
    /// The highest `set_watermark` (reset to the durable one by a reopen).
    mem_wm: u64,
    /// The owner's log position: one step per write.
    pos: u64,
    /// The (unfrozen) memtable holds writes.
    dirty: bool,
}

/// A background job begun and not finished. `job` is `None` once it has run (then `done` holds
/// its result).
enum Pending {
    Flush {
        job: Option<FlushJob>,
        done: Option<FlushDone>,
        /// What the flush makes durable: the state when it began, and the watermark.
        state: Map,
        watermark: u64,
        /// The frozen memtable holds writes (else only the watermark moves).
        wrote: bool,
    },
    Compaction {
        job: Option<CompactionJob>,
        done: Option<CompactionDone>,
        /// Flushes that added a level-0 table since it began (it does not take those).
        flushed_since: usize,
    },
}

impl Pending {
    fn ran(&self) -> bool {
        match self {
            Pending::Flush { job, .. } => job.is_none(),
            Pending::Compaction { job, .. } => job.is_none(),
        }
    }

    /// Runs the job on another thread (it must not need the store); once it has run, its
    /// manifest is on disk.
    fn run(&mut self, m: &mut Model) {
        match self {
            Pending::Flush { job, done, state, watermark, .. } => {
                if let Some(job) = job.take() {
                    *done = Some(std::thread::spawn(move || job.run()).join().unwrap().unwrap());
                    m.disk = state.clone();
                    m.disk_wm = *watermark;
                }
            }
            Pending::Compaction { job, done, .. } => {
                if let Some(job) = job.take() {
                    *done = Some(std::thread::spawn(move || job.run()).join().unwrap().unwrap());
                }
            }
        }
    }

    fn finish(mut self, store: &mut Store, m: &mut Model, cov: &mut Coverage) -> Result<(), TestCaseError> {
        self.run(m);
        match self {
            Pending::Flush { done, watermark, wrote, .. } => {
                let report = store.finish_flush(Ok(done.unwrap())).unwrap();
                prop_assert_eq!(report.is_some(), wrote, "a table exactly when the frozen memtable held writes");
                m.store_wm = watermark;
            }
            Pending::Compaction { done, flushed_since, .. } => {
                let report = store.finish_compaction(Ok(done.unwrap())).unwrap();
                prop_assert!(report.is_some());
                let report = report.unwrap();
                cov.count(&report);
                cov.compactions_after_flushes += usize::from(flushed_since > 0);
                if report.level == 0 {
                    prop_assert_eq!(
                        store.stats().tables[0],
                        flushed_since,
                        "level 0 keeps exactly the tables flushed during its compaction"
                    );
                }
            }
        }
        Ok(())
    }
}

/// How often the interesting situations came up (checked over all cases).
#[derive(Clone, Copy, Debug, Default)]
struct Coverage {
    writes_during_flush: usize,
    reads_during_flush: usize,
    reads_during_compaction: usize,
    range_limited_more: usize,
    range_limited_all: usize,
    watermark_only_flushes: usize,
    crash_flush_ran: usize,
    crash_flush_not_run: usize,
    crash_compaction_ran: usize,
    crash_compaction_not_run: usize,
    /// Compactions finished after flushes that began and ended while they were in flight.
    compactions_after_flushes: usize,
    /// Crashes with a flush and a compaction both pending, both run.
    crash_both_ran: usize,
    /// Compactions of level 1 or deeper, and the deepest level any reached.
    deep_compactions: usize,
    deepest_output_level: usize,
    /// Compactions that moved a table down without rewriting it.
    moves: usize,
    /// Output tables ended early by the grandparent limit.
    grandparent_cuts: usize,
    /// Rewrites that kept tombstones (a deeper level overlapped) and that dropped them.
    tombstones_kept: usize,
    tombstones_dropped: usize,
    /// Flushes and compactions begun with replaced files waiting to be written over (the new
    /// tables take them: `spare_files`).
    jobs_with_spares: usize,
}

impl Coverage {
    fn add(&mut self, o: &Coverage) {
        self.writes_during_flush += o.writes_during_flush;
        self.reads_during_flush += o.reads_during_flush;
        self.reads_during_compaction += o.reads_during_compaction;
        self.range_limited_more += o.range_limited_more;
        self.range_limited_all += o.range_limited_all;
        self.watermark_only_flushes += o.watermark_only_flushes;
        self.crash_flush_ran += o.crash_flush_ran;
        self.crash_flush_not_run += o.crash_flush_not_run;
        self.crash_compaction_ran += o.crash_compaction_ran;
        self.crash_compaction_not_run += o.crash_compaction_not_run;
        self.compactions_after_flushes += o.compactions_after_flushes;
        self.crash_both_ran += o.crash_both_ran;
        self.deep_compactions += o.deep_compactions;
        self.deepest_output_level = self.deepest_output_level.max(o.deepest_output_level);
        self.moves += o.moves;
        self.grandparent_cuts += o.grandparent_cuts;
        self.jobs_with_spares += o.jobs_with_spares;
        self.tombstones_kept += o.tombstones_kept;
        self.tombstones_dropped += o.tombstones_dropped;
    }

    fn count(&mut self, r: &CompactionReport) {
        self.deep_compactions += usize::from(r.level >= 1);
        self.deepest_output_level = self.deepest_output_level.max(usize::from(r.level) + 1);
        self.moves += usize::from(r.moved_tables > 0);
        self.grandparent_cuts += r.grandparent_cuts;
        let rewrite = r.moved_tables == 0;
        self.tombstones_kept += usize::from(rewrite && !r.dropped_tombstones);
        self.tombstones_dropped += usize::from(rewrite && r.dropped_tombstones);
    }
}

fn run(ops: Vec<Op>) -> Result<Coverage, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), small_options()).unwrap();
    let mut m = Model::default();
    // At most one flush and one compaction in flight.
    let mut flush: Option<Pending> = None;
    let mut compaction: Option<Pending> = None;
    let mut cov = Coverage::default();
    for op in ops {
        let what = format!("{op:?}");
        let flushing = usize::from(flush.is_some());
        let compacting = usize::from(compaction.is_some());
        match op {
            Op::Put(k, v) => {
                store.put(&key(k), &v);
                m.live.insert(key(k), v);
                m.pos += 1;
                m.dirty = true;
                cov.writes_during_flush += flushing;
            }
            Op::Delete(k) => {
                store.delete(&key(k));
                m.live.remove(&key(k));
                m.pos += 1;
                m.dirty = true;
                cov.writes_during_flush += flushing;
            }
            Op::Get(k) => {
                prop_assert_eq!(store.get(&key(k)).unwrap(), m.live.get(&key(k)).cloned(), "get {:?}", key(k));
                cov.reads_during_flush += flushing;
                cov.reads_during_compaction += compacting;
            }
            Op::Range(a, b, inclusive) => {
                let (ka, kb) = (a.map(key), b.map(key));
                let lo = ka.as_deref().map_or(Bound::Unbounded, Bound::Included);
                let hi = kb.as_deref().map_or(Bound::Unbounded, |k| {
                    if inclusive {
                        Bound::Included(k)
                    } else {
                        Bound::Excluded(k)
                    }
                });
                prop_assert_eq!(store.range(lo, hi).unwrap(), model_range(&m.live, lo, hi));
                cov.reads_during_flush += flushing;
                cov.reads_during_compaction += compacting;
            }
            Op::RangeLimited(a, b, limit) => {
                let (ka, kb) = (a.map(|(k, i)| (key(k), i)), b.map(|(k, i)| (key(k), i)));
                let (lo, hi) = (as_bound(&ka), as_bound(&kb));
                let (got, more) = store.range_limited(lo, hi, limit).unwrap();
                let want = model_range(&m.live, lo, hi);
                let n = want.len();
                prop_assert_eq!(&got[..], &want[..n.min(limit)], "range_limited({:?}, {:?}, {})", lo, hi, limit);
                // `more` may be conservative, never wrong the other way.
                prop_assert!(
                    more || n <= limit,
                    "range_limited({:?}, {:?}, {}): {} live keys, more = false",
                    lo,
                    hi,
                    limit,
                    n
                );
                cov.range_limited_more += usize::from(more);
                cov.range_limited_all += usize::from(!more && n > 0);
                cov.reads_during_flush += flushing;
                cov.reads_during_compaction += compacting;
            }
            Op::SetWatermark => {
                store.set_watermark(m.pos);
                m.mem_wm = m.mem_wm.max(m.pos);
            }
            Op::Flush => {
                cov.jobs_with_spares += usize::from(store.spare_files() > 0);
                let watermark_only = !m.dirty && m.mem_wm > m.store_wm;
                let report = store.flush().unwrap();
                if flush.is_some() {
                    prop_assert!(report.is_none(), "flush while a flush job is pending");
                } else {
                    prop_assert_eq!(report.is_some(), m.dirty);
                    if let (Some(Pending::Compaction { flushed_since, .. }), Some(_)) = (&mut compaction, &report) {
                        *flushed_since += 1;
                    }
                    cov.watermark_only_flushes += usize::from(watermark_only);
                    m.disk = m.live.clone();
                    m.disk_wm = m.mem_wm;
                    m.store_wm = m.mem_wm;
                    m.dirty = false;
                }
            }
            Op::Compact => {
                cov.jobs_with_spares += usize::from(store.spare_files() > 0);
                let before = store.stats();
                let report = store.compact().unwrap();
                let after = store.stats();
                if compaction.is_some() {
                    prop_assert!(report.is_none(), "compaction while a compaction job is pending");
                    prop_assert_eq!(after.tables, before.tables);
                } else {
                    prop_assert_eq!(report.is_some(), before.tables[0] > 0 || over_target(&before.table_bytes));
                    prop_assert_eq!(after.tables[0], 0);
                    prop_assert!(!over_target(&after.table_bytes), "a level over its target: {:?}", after.table_bytes);
                    if let Some(r) = &report {
                        cov.count(r);
                    }
                }
                prop_assert_eq!(after.memtable_entries, before.memtable_entries);
            }
            Op::BeginFlush => {
                if flush.is_some() {
                    prop_assert!(store.begin_flush().is_none(), "a second flush began");
                } else {
                    let job = store.begin_flush();
                    prop_assert_eq!(job.is_some(), m.dirty || m.mem_wm > m.store_wm);
                    if let Some(job) = job {
                        flush = Some(Pending::Flush {
                            job: Some(job),
                            done: None,
                            state: m.live.clone(),
                            watermark: m.mem_wm,
                            wrote: m.dirty,
                        });
                        m.dirty = false;
                    }
                }
            }
            Op::BeginCompaction => {
                if compaction.is_some() {
                    prop_assert!(store.begin_compaction(1).is_none(), "a second compaction began");
                } else {
                    let before = store.stats();
                    let job = store.begin_compaction(1);
                    prop_assert_eq!(job.is_some(), before.tables[0] > 0 || over_target(&before.table_bytes));
                    compaction = job.map(|job| Pending::Compaction { job: Some(job), done: None, flushed_since: 0 });
                }
            }
            Op::RunJob(prefer_flush) => {
                if let Some(p) = pick(&mut flush, &mut compaction, prefer_flush).as_mut() {
                    p.run(&mut m);
                }
            }
            Op::FinishJob(prefer_flush) => {
                if let Some(p) = pick(&mut flush, &mut compaction, prefer_flush).take() {
                    finish_pending(p, &mut compaction, &mut store, &mut m, &mut cov)?;
                }
            }
            Op::Crash | Op::CrashWithDebris => {
                match &flush {
                    Some(p) if p.ran() => cov.crash_flush_ran += 1,
                    Some(_) => cov.crash_flush_not_run += 1,
                    None => {}
                }
                match &compaction {
                    Some(p) if p.ran() => cov.crash_compaction_ran += 1,
                    Some(_) => cov.crash_compaction_not_run += 1,
                    None => {}
                }
                let both_ran =
                    flush.as_ref().is_some_and(Pending::ran) && compaction.as_ref().is_some_and(Pending::ran);
                cov.crash_both_ran += usize::from(both_ran);
                // The jobs (and what they made) die with the process, unfinished.
                drop(flush.take());
                drop(compaction.take());
                drop(store);
                let debris = matches!(op, Op::CrashWithDebris);
                // A compaction that ran and was not finished leaves its inputs as orphans.
                let files = table_files(dir.path());
                let spares = spare_files(dir.path());
                if debris {
                    leave_debris(dir.path());
                }
                let (reopened, report) = Store::open(dir.path(), small_options()).unwrap();
                prop_assert_eq!(report.removed_temporaries, if debris { 2 } else { 0 });
                prop_assert_eq!(report.removed_spares, spares);
                prop_assert_eq!(spare_files(dir.path()), 0);
                // Debris adds two unlisted tables: a half-written one and a whole one.
                prop_assert_eq!(report.removed_orphans + report.tables, files + 2 * usize::from(debris));
                store = reopened;
                m.live = m.disk.clone();
                m.store_wm = m.disk_wm;
                m.mem_wm = m.disk_wm;
                m.dirty = false;
                prop_assert_eq!(
                    store.range(Bound::Unbounded, Bound::Unbounded).unwrap(),
                    model_range(&m.live, Bound::Unbounded, Bound::Unbounded)
                );
            }
        }
        prop_assert_eq!(store.watermark(), m.store_wm, "watermark after {}", what);
        prop_assert_eq!(store.flush_running(), flush.is_some());
        prop_assert_eq!(store.compaction_running(), compaction.is_some());
        prop_assert_eq!(store.job_running(), flush.is_some() || compaction.is_some());
    }
    // Whatever happened, finishing the jobs, a flush, a compaction and a reopen agree with the
    // model, and the watermark last set is the durable one.
    // (The compaction first: its count of flushes made meanwhile is complete.)
    for p in [compaction.take(), flush.take()].into_iter().flatten() {
        finish_pending(p, &mut compaction, &mut store, &mut m, &mut cov)?;
    }
    store.flush().unwrap();
    store.compact().unwrap();
    drop(store);
    let (store, _) = Store::open(dir.path(), small_options()).unwrap();
    prop_assert_eq!(store.watermark(), m.mem_wm);
    let all = store.range(Bound::Unbounded, Bound::Unbounded).unwrap();
    prop_assert_eq!(all, model_range(&m.live, Bound::Unbounded, Bound::Unbounded));
    for i in 0u8..45 {
        prop_assert_eq!(store.get(&key(i)).unwrap(), m.live.get(&key(i)).cloned());
    }
    Ok(cov)
}

/// Finishes `p`; a flush that wrote a table counts for the compaction still pending, if any.
fn finish_pending(
    p: Pending,
    compaction: &mut Option<Pending>,
    store: &mut Store,
    m: &mut Model,
    cov: &mut Coverage,
) -> Result<(), TestCaseError> {
    let wrote_a_table = matches!(p, Pending::Flush { wrote: true, .. });
    p.finish(store, m, cov)?;
    if let (true, Some(Pending::Compaction { flushed_since, .. })) = (wrote_a_table, compaction) {
        *flushed_since += 1;
    }
    Ok(())
}

/// The pending flush if `prefer_flush` and there is one, else the pending compaction if there
/// is one, else the flush slot.
fn pick<'a>(
    flush: &'a mut Option<Pending>,
    compaction: &'a mut Option<Pending>,
    prefer_flush: bool,
) -> &'a mut Option<Pending> {
    if (prefer_flush && flush.is_some()) || compaction.is_none() {
        flush
    } else {
        compaction
    }
}

/// Runs `run` on `cases` cases of `ops` drawn from a fixed `seed` (so every run replays the
/// same ones; a panic names the failing case) and sums the coverage.
fn run_cases(cases: u32, seed: u64, ops: impl Strategy<Value = Vec<Op>>) -> Coverage {
    let config = ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let total = RefCell::new(Coverage::default());
    let result = runner.run(&ops, |ops| {
        let cov = run(ops)?;
        total.borrow_mut().add(&cov);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let c = total.into_inner();
    eprintln!("coverage: {c:?}");
    c
}

#[test]
fn store_matches_btreemap() {
    let c = run_cases(96, 0x6c73_6d5f_6d6f_6465, proptest::collection::vec(op(), 1..80));
    for (what, n) in [
        ("writes during a flush job", c.writes_during_flush),
        ("reads during a flush job", c.reads_during_flush),
        ("reads during a compaction job", c.reads_during_compaction),
        ("range_limited with more", c.range_limited_more),
        ("range_limited with all", c.range_limited_all),
        ("watermark-only flushes", c.watermark_only_flushes),
        ("crashes after a flush job ran", c.crash_flush_ran),
        ("crashes before a flush job ran", c.crash_flush_not_run),
        ("crashes after a compaction job ran", c.crash_compaction_ran),
        ("crashes before a compaction job ran", c.crash_compaction_not_run),
        ("compactions finished after flushes made during them", c.compactions_after_flushes),
        ("crashes after a flush and a compaction both ran", c.crash_both_ran),
        ("flushes and compactions over spare files", c.jobs_with_spares),
    ] {
        assert!(n > 0, "the seeded cases never reached: {what}");
    }
}

/// Writes, flushes and compactions weighted up (reads and crashes still in), in longer runs:
/// the data goes down through several levels, so compactions of deeper levels, tables moved
/// down unchanged and tombstones kept above older versions (or dropped at the bottom) all
/// happen, and every read still matches the model.
#[test]
fn store_matches_btreemap_through_many_levels() {
    let deep_op = prop_oneof![
        12 => (0u8..40, proptest::collection::vec(any::<u8>(), 0..24)).prop_map(|(k, v)| Op::Put(k, v)),
        5 => (0u8..40).prop_map(Op::Delete),
        3 => (0u8..45).prop_map(Op::Get),
        1 => (bound(), bound(), 0usize..12).prop_map(|(a, b, n)| Op::RangeLimited(a, b, n)),
        1 => Just(Op::SetWatermark),
        3 => Just(Op::Flush),
        1 => Just(Op::Compact),
        2 => Just(Op::BeginFlush),
        3 => Just(Op::BeginCompaction),
        1 => any::<bool>().prop_map(Op::RunJob),
        3 => any::<bool>().prop_map(Op::FinishJob),
        1 => Just(Op::Crash),
    ];
    let c = run_cases(24, 0x6c65_7665_6c65_6421, proptest::collection::vec(deep_op, 150..400));
    for (what, n) in [
        ("compactions of level 1 or deeper", c.deep_compactions),
        ("tables moved down unchanged", c.moves),
        ("output tables cut by the grandparent limit", c.grandparent_cuts),
        ("rewrites that kept tombstones", c.tombstones_kept),
        ("rewrites that dropped tombstones", c.tombstones_dropped),
        ("outputs to level 4 or deeper", usize::from(c.deepest_output_level >= 4)),
        ("crashes after a compaction job ran", c.crash_compaction_ran),
        ("flushes and compactions over spare files", c.jobs_with_spares),
    ] {
        assert!(n > 0, "the seeded cases never reached: {what}");
    }
}

#[test]
fn range_limited_reads_past_tombstones() {
    // Live keys hidden behind long runs of tombstones in newer sources: the first pass (limit
    // + 1 keys per source) sees only tombstones and must read on.
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), small_options()).unwrap();
    let k = |i: u32| format!("t{i:04}").into_bytes();
    for i in 0..300 {
        store.put(&k(i), &[1]);
    }
    store.flush().unwrap();
    for i in (0..300).filter(|i| i % 50 != 49) {
        store.delete(&k(i));
    }
    let live: Vec<(Vec<u8>, Vec<u8>)> = (0..300).filter(|i| i % 50 == 49).map(|i| (k(i), vec![1])).collect();
    let check = |store: &Store| {
        for limit in [0, 1, 2, 5, 6, 7, 100, usize::MAX] {
            let (got, more) = store.range_limited(Bound::Unbounded, Bound::Unbounded, limit).unwrap();
            assert_eq!(got, live[..limit.min(live.len())], "limit {limit}");
            assert!(more || live.len() <= limit, "limit {limit}: more = false");
        }
        let lo = k(100);
        let (got, more) = store.range_limited(Bound::Excluded(&lo), Bound::Unbounded, 1).unwrap();
        assert_eq!(got, vec![(k(149), vec![1])]);
        assert!(more);
    };
    check(&store); // tombstones in the memtable over a table
    let job = store.begin_flush().unwrap();
    store.put(&k(1000), &[2]);
    store.delete(&k(1000));
    check(&store); // in the frozen memtable while its flush is pending
    let done = job.run();
    store.finish_flush(done).unwrap();
    check(&store); // in a newer level-0 table
    store.compact().unwrap();
    check(&store); // dropped by compaction
}

#[test]
fn watermark_is_that_of_the_last_flush_that_ran() {
    let dir = tempfile::tempdir().unwrap();
    let reopen = |store: Store| {
        drop(store);
        Store::open(dir.path(), small_options()).unwrap().0
    };
    let (mut store, _) = Store::open(dir.path(), small_options()).unwrap();
    assert_eq!(store.watermark(), 0);
    store.put(b"a", b"1");
    store.set_watermark(1);
    store.flush().unwrap();
    assert_eq!(store.watermark(), 1);

    // Nothing written, but the owner moved on: the flush persists the watermark alone.
    store.set_watermark(2);
    assert_eq!(store.flush().unwrap(), None);
    assert_eq!(store.watermark(), 2);
    let mut store = reopen(store);
    assert_eq!(store.watermark(), 2);
    assert!(store.begin_flush().is_none(), "nothing to flush after a reopen");
    // A lower watermark never moves it back.
    store.set_watermark(1);
    assert!(store.begin_flush().is_none());

    // Crash before the job ran: the previous watermark and state.
    store.put(b"b", b"3");
    store.set_watermark(3);
    let job = store.begin_flush().unwrap();
    store.put(b"c", b"4");
    store.set_watermark(4);
    drop(job);
    let mut store = reopen(store);
    assert_eq!(store.watermark(), 2);
    assert_eq!(store.get(b"b").unwrap(), None);

    // Crash after the job ran, before it was finished: its watermark and state, not the
    // writes and watermark that came after it began.
    store.put(b"b", b"3");
    store.set_watermark(3);
    let job = store.begin_flush().unwrap();
    store.put(b"c", b"4");
    store.set_watermark(4);
    let done = job.run().unwrap();
    assert_eq!(store.watermark(), 2, "durable, but not finished");
    drop(done);
    let mut store = reopen(store);
    assert_eq!(store.watermark(), 3);
    assert_eq!(store.get(b"b").unwrap(), Some(b"3".to_vec()));
    assert_eq!(store.get(b"c").unwrap(), None);

    // Finished: the newer watermark waits for the next flush.
    store.put(b"c", b"4");
    store.set_watermark(4);
    let job = store.begin_flush().unwrap();
    store.set_watermark(5);
    let done = job.run();
    store.finish_flush(done).unwrap();
    assert_eq!(store.watermark(), 4);
    assert_eq!(store.flush().unwrap(), None);
    assert_eq!(store.watermark(), 5);
    let store = reopen(store);
    assert_eq!(store.watermark(), 5);
    assert_eq!(store.get(b"c").unwrap(), Some(b"4".to_vec()));
}

// ---- corruption ----

fn sample_entries(n: u32) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            key: format!("key{i:06}").into_bytes(),
            seq: u64::from(i) + 1,
            value: Some(vec![i as u8; 40]),
        })
        .collect()
}

/// A table of 2,000 entries (many 4 KiB blocks); returns its path and footer.
fn sample_table(dir: &Path) -> (std::path::PathBuf, Footer) {
    let (table, mode) = sstable::write_table(dir, 1, &sample_entries(2000), BuildOptions::default()).unwrap();
    eprintln!("sample table written with {mode:?} ({} bytes)", table.file_bytes());
    assert!(matches!(mode, WriteMode::Direct | WriteMode::Buffered));
    assert_eq!(table.get(b"key000123").unwrap().map(|v| v.0), Some(124));
    assert_eq!(table.get(b"nope").unwrap(), None);
    let path = table.path().to_path_buf();
    drop(table);
    let bytes = std::fs::read(&path).unwrap();
    let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..], bytes.len() as u64).unwrap();
    (path, footer)
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x04;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn truncated_table_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_table(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    for cut in [len - 1, len - FOOTER_LEN as u64, len / 2, 4096, 71, 1, 0] {
        let (p, _) = sample_table(dir.path());
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(cut).unwrap();
        let err = Table::open(&p, 1).unwrap_err();
        assert!(err.is_corrupt(), "cut at {cut}: {err}");
    }
}

#[test]
fn half_written_table_is_refused() {
    // The tail never reached the disk: zeros where the footer should be.
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_table(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 4096..].fill(0);
    std::fs::write(&path, bytes).unwrap();
    assert!(Table::open(&path, 1).unwrap_err().is_corrupt());
}

#[test]
fn flipped_bit_in_a_block_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_table(dir.path());
    flip(&path, 100); // inside the first data block
    let table = Table::open(&path, 1).unwrap();
    assert!(table.get(b"key000000").unwrap_err().is_corrupt());
    assert!(table.scan(Bound::Unbounded, Bound::Unbounded, |_, _, _| true).unwrap_err().is_corrupt());
    assert!(table.verify().unwrap_err().is_corrupt());
    // Other blocks still read (the damage is reported where it is, not guessed around).
    assert!(table.get(b"key001999").unwrap().is_some());
}

#[test]
fn flipped_bit_in_index_filter_or_footer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, footer) = sample_table(dir.path());
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let spots = [
        ("index", footer.index_offset as usize + 5),
        ("index end", (footer.index_offset + footer.index_len) as usize - 1),
        ("filter", footer.filter_offset as usize + 20),
        ("footer offsets", len - FOOTER_LEN + 3),
        ("footer count", len - FOOTER_LEN + 33),
        ("footer crc", len - 10),
        ("magic", len - 1),
    ];
    for (what, at) in spots {
        let (p, _) = sample_table(dir.path());
        flip(&p, at);
        let err = Table::open(&p, 1).unwrap_err();
        assert!(err.is_corrupt(), "flip in {what} at {at}: {err}");
    }
}

#[test]
fn missing_or_corrupt_table_named_in_manifest_stops_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    for e in sample_entries(500) {
        store.put(&e.key, e.value.as_deref().unwrap());
    }
    let id = store.flush().unwrap().unwrap().table_id;
    drop(store);
    let path = dir.path().join(sstable::file_name(id));
    let good = std::fs::read(&path).unwrap();

    let n = good.len();
    let mut bad = good.clone();
    bad[n - 5] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(Store::open(dir.path(), StoreOptions::default()).err().unwrap().is_corrupt());

    std::fs::remove_file(&path).unwrap();
    let err = Store::open(dir.path(), StoreOptions::default()).err().unwrap();
    assert!(err.is_corrupt() && err.to_string().contains("missing"), "{err}");

    std::fs::write(&path, &good).unwrap();
    let (store, report) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(report.tables, 1);
    assert_eq!(store.get(b"key000042").unwrap(), Some(vec![42; 40]));
}

#[test]
fn flush_compact_reopen_keeps_newest_versions() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions { table_bytes: 16 << 10, ..StoreOptions::default() };
    let (mut store, _) = Store::open(dir.path(), opts).unwrap();
    for round in 0u8..4 {
        for i in 0u32..3000 {
            if i % 7 == u32::from(round) {
                store.delete(format!("k{i:05}").as_bytes());
            } else {
                store.put(format!("k{i:05}").as_bytes(), &[round; 16]);
            }
        }
        let report = store.flush().unwrap().unwrap();
        eprintln!("flush {round}: {report:?}");
    }
    assert_eq!(store.stats().tables[0], 4);
    let report = store.compact().unwrap().unwrap();
    eprintln!("compaction: {report:?}");
    assert_eq!(report.input_tables, 4);
    assert!(report.output_tables > 1);
    let stats = store.stats();
    assert_eq!(stats.tables[0], 0);
    drop(store);
    let (store, _) = Store::open(dir.path(), opts).unwrap();
    for i in 0u32..3000 {
        let want = if i % 7 == 3 { None } else { Some(vec![3u8; 16]) };
        assert_eq!(store.get(format!("k{i:05}").as_bytes()).unwrap(), want, "k{i:05}");
    }
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, report.output_tables + 1, "inputs deleted, only outputs and MANIFEST left");
}

/// History keyed as the server keys it (a series, then a time), so every flush spans the whole
/// key space: however long the history grows, a single compaction reads about level 0 plus
/// level 1, never the whole history (as compaction with two levels did), data goes down
/// through the levels, and every version written is read back.
#[test]
fn a_compaction_reads_about_level0_and_level1_however_long_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        build: BuildOptions::default(),
        memtable_bytes: 16 << 10,
        table_bytes: 8 << 10,
        level1_bytes: 64 << 10,
        level_ratio: 4,
        memtable_separator: Some(b'/'),
    };
    let (mut store, _) = Store::open(dir.path(), opts).unwrap();
    let key = |series: u64, time: u64| {
        let mut k = format!("s{series:03}/").into_bytes();
        k.extend_from_slice(&time.to_be_bytes());
        k
    };
    let (mut time, mut largest_flush, mut largest_job, mut deepest) = (0u64, 0u64, 0u64, 0usize);
    let (mut rewrites, mut rewrites_with_writer_cpu) = (0, 0);
    let mut written = Vec::new();
    for _ in 0..200 {
        while !store.needs_flush() {
            time += 1;
            let k = key(time.wrapping_mul(0x9e37_79b9) % 50, time);
            store.put(&k, &time.to_le_bytes());
            written.push((k, time));
        }
        largest_flush = largest_flush.max(store.flush().unwrap().unwrap().file_bytes);
        while let Some(job) = store.begin_compaction(4) {
            let done = job.run();
            let writer_cpu_us = done.as_ref().map_or(0, |d| d.writer_cpu_us());
            let report = store.finish_compaction(done).unwrap().unwrap();
            remove_obsolete(store.take_obsolete());
            if report.moved_tables == 0 {
                largest_job = largest_job.max(report.bytes_in);
                // Writing and opening the outputs is the writer thread's CPU, counted apart.
                rewrites += 1;
                rewrites_with_writer_cpu += usize::from(writer_cpu_us > 0);
            } else {
                assert_eq!(writer_cpu_us, 0, "a move writes no table");
            }
            deepest = deepest.max(usize::from(report.level) + 1);
        }
    }
    let history: u64 = store.stats().table_bytes.iter().sum();
    // A level-0 job: four flushes and level 1 (within its target, plus the tables a job
    // overshoots it by). A deeper one: a table and the few times its size it overlaps below.
    // Neither depends on how long the history is.
    let bound = 4 * largest_flush + 4 * opts.level1_bytes;
    eprintln!(
        "history {history} bytes, largest compaction {largest_job} bytes in, bound {bound}, deepest level {deepest}"
    );
    assert!(history > 4 * bound, "the history did not outgrow the bound ({history} bytes): the test proves nothing");
    assert!(largest_job <= bound, "a compaction read {largest_job} bytes, more than {bound}");
    assert!(deepest >= 3, "the data never reached level 3");
    assert!(rewrites > 0 && rewrites_with_writer_cpu == rewrites, "{rewrites_with_writer_cpu} of {rewrites} rewrites");
    for (k, t) in written.iter().step_by(7) {
        assert_eq!(store.get(k).unwrap(), Some(t.to_le_bytes().to_vec()));
    }
}
