//! The store: a memtable (and, while a flush runs, the frozen one it writes) over level-0 tables
//! (newest first, key ranges may overlap) over levels 1 to `MAX_LEVELS - 1`, each of sorted tables
//! with disjoint key ranges, each `level_ratio` times the size of the one above (leveled
//! compaction: a key's versions are newer the higher their level, so a read stops at the first
//! level that has the key). Flush and compaction are jobs: `begin_*` takes what the job needs
//! (cheap, on the owner's thread), the job's `run` builds and writes the new tables and the
//! manifest (CPU and blocking I/O: the server runs it off its executor), and `finish_*` makes reads
//! see the result. A flush and a compaction may run at the same time (at most one of each; the
//! owner decides when). Each job writes its tables durably, then hands its change
//! to the store's `SharedManifest`, which writes the manifest last written with that change
//! (`manifest` module docs), so a crash at any step leaves the old or the new set of tables, and a
//! manifest written by one job keeps what the other committed. Unflushed writes live only in memory
//! and are lost in a crash: the owner records a `watermark` (its own log position) with each flush
//! and re-derives what came after it.

use crate::storage::lsm::compaction::{self, GrandparentCut};
use crate::storage::lsm::error::{LsmError, Result};
use crate::storage::lsm::format::{BuildOptions, FILE_ALIGN};
use crate::storage::lsm::fsio::{self, WriteMode};
use crate::storage::lsm::manifest::{Manifest, ManifestEdit, SharedManifest, TableRef};
use crate::storage::lsm::memtable::{FrozenMemtable, Memtable};
use crate::storage::lsm::spare_files::{SpareFiles, SPARE_SUFFIX};
use crate::storage::lsm::sstable::{self, Table};
use rkyv::util::AlignedVec;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    pub build: BuildOptions,
    /// `needs_flush` turns true once the memtable holds about this many bytes.
    pub memtable_bytes: usize,
    /// Compaction cuts its output into tables of about this many bytes of keys and values.
    pub table_bytes: usize,
    /// Level 1 is compacted into level 2 once its files hold more than this many bytes.
    pub level1_bytes: u64,
    /// Each level below 1 may hold this many times the bytes of the one above it.
    pub level_ratio: u64,
    /// The memtable keeps one partition (a sorted run and a skiplist) per key prefix through
    /// this byte (`Memtable::partitioned`); `None`: one for all keys.
    pub memtable_separator: Option<u8>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            build: BuildOptions::default(),
            memtable_bytes: 64 << 20,
            table_bytes: 8 << 20,
            level1_bytes: 256 << 20,
            level_ratio: 10,
            memtable_separator: None,
        }
    }
}

/// Levels 0 to `MAX_LEVELS - 1`. With level 1 at 256 MiB and a ratio of 10, the last level's
/// target is 256 TiB: the last level has no target, it only receives.
pub const MAX_LEVELS: usize = 7;

/// What `open` found and cleaned up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub tables: usize,
    /// `*.tmp` files of interrupted writes.
    pub removed_temporaries: usize,
    /// Spare files (`spare_files`) the last run left.
    pub removed_spares: usize,
    /// Table files the manifest does not list (written before a crash, or left by compaction).
    pub removed_orphans: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushReport {
    pub table_id: u64,
    pub entries: u64,
    pub file_bytes: u64,
    pub mode: WriteMode,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// The level compacted: its tables (all of them for level 0, one for the others) and the
    /// tables of the next level they overlap went into the next level.
    pub level: u8,
    /// Tables moved down a level as they were, without a rewrite (nothing below overlapped).
    pub moved_tables: usize,
    /// Tombstones were dropped (no deeper level holds keys in the inputs' range).
    pub dropped_tombstones: bool,
    pub input_tables: usize,
    pub output_tables: usize,
    pub entries_in: u64,
    pub entries_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Output tables written with O_DIRECT (the rest fell back to buffered writes).
    pub direct_writes: usize,
    /// Output tables ended early because they spanned more than `GRANDPARENT_OVERLAP_TABLES`
    /// tables' worth of the level below the output level.
    pub grandparent_cuts: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub memtable_bytes: usize,
    pub memtable_entries: usize,
    /// Per level, 0 to `MAX_LEVELS - 1`.
    pub tables: Vec<usize>,
    pub table_bytes: Vec<u64>,
    pub flushes: u64,
    pub compactions: u64,
    pub max_seq: u64,
    /// What the tables cover (see `Store::watermark`).
    pub watermark: u64,
    /// Frozen memtable being flushed (or left by a failed flush).
    pub frozen_bytes: usize,
    pub flush_running: bool,
    pub compaction_running: bool,
    pub bytes_flushed: u64,
    pub bytes_compacted_in: u64,
    pub bytes_compacted_out: u64,
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Bytes of each level's table files.
fn level_sizes(levels: &[Vec<Arc<Table>>]) -> Vec<u64> {
    levels.iter().map(|l| l.iter().map(|t| t.file_bytes()).sum()).collect()
}

pub struct Store {
    dir: PathBuf,
    opts: StoreOptions,
    mem: Memtable,
    /// What the memtable covers, set by the owner after each batch of writes.
    mem_watermark: u64,
    /// A memtable waiting for (or in) its flush, with its watermark: read after `mem`.
    frozen: Option<(Arc<FrozenMemtable>, u64)>,
    /// `MAX_LEVELS` levels: level 0 newest first, the others sorted by key and disjoint.
    levels: Vec<Vec<Arc<Table>>>,
    /// Bytes of each level's files, kept with `levels` (`recount_levels`): the committer asks
    /// whether a compaction is due after every group.
    level_bytes: Vec<u64>,
    /// Per level, the last key of the table last compacted from it: the next compaction of
    /// that level takes the table after it, so every part of a level is pushed down in turn.
    compact_pointer: Vec<Option<Vec<u8>>>,
    /// What is on disk; jobs commit their changes to it.
    manifest: Arc<SharedManifest>,
    /// The watermark of the last finished flush (or of the manifest at open): `watermark`.
    watermark: u64,
    next_seq: u64,
    flush_running: bool,
    compaction_running: bool,
    /// What flushes and compactions replaced, not freed yet (`take_obsolete`).
    obsolete: Obsolete,
    /// Replaced table files that new tables are written over (`spare_files`).
    spares: SpareFiles,
    flushes: u64,
    compactions: u64,
    bytes_flushed: u64,
    bytes_compacted_in: u64,
    bytes_compacted_out: u64,
}

fn table_ref(level: u8, t: &Table) -> TableRef {
    TableRef { level, id: t.id() }
}

/// Flushed memtables and replaced tables, to free and delete away from readers' threads.
#[derive(Default)]
pub struct Obsolete {
    /// Tables the manifest no longer lists: their files go (or become spares).
    tables: Vec<Arc<Table>>,
    memtables: Vec<Arc<FrozenMemtable>>,
    /// The store's spares, which the replaced files may join.
    spares: SpareFiles,
}

/// Frees what `Store::take_obsolete` handed over; the replaced files become spares for new
/// tables to be written over, or are deleted (`SpareFiles::keep_or_remove`). Best effort, and
/// without a directory sync: a file a crash brings back is one the manifest no longer lists,
/// an orphan the next open removes. (A sync here was one more journal commit and device flush
/// per job for the shard's WAL syncs to queue behind.)
pub fn remove_obsolete(obsolete: Obsolete) {
    let Obsolete { tables, memtables, spares } = obsolete;
    drop(memtables);
    for table in tables {
        spares.keep_or_remove(table);
    }
}

/// A flush to run off the owner's thread: writes the frozen memtable as table `id`, then
/// commits `edit` (the table, its sequence numbers and watermark) to the manifest.
pub struct FlushJob {
    dir: PathBuf,
    build: crate::storage::lsm::format::BuildOptions,
    frozen: Arc<FrozenMemtable>,
    id: u64,
    manifest: Arc<SharedManifest>,
    edit: ManifestEdit,
    spares: SpareFiles,
}

/// What a flush job made, for `Store::finish_flush`.
pub struct FlushDone {
    /// None when the frozen memtable was empty (only the watermark moved).
    table: Option<Table>,
    mode: WriteMode,
    watermark: u64,
}

impl FlushJob {
    pub fn run(self) -> Result<FlushDone> {
        let (table, mode) = if self.frozen.is_empty() {
            (None, WriteMode::Buffered)
        } else {
            // The memtable's entries go straight into the image (its byte count, with 64 bytes
            // per entry, covers the image's 32 per entry plus bloom and index).
            let path = self.dir.join(sstable::file_name(self.id));
            let capacity = self.frozen.approximate_bytes() + 16 * FILE_ALIGN;
            let mut builder = crate::storage::lsm::format::TableBuilder::with_capacity(self.build, capacity);
            let mut failed = None;
            self.frozen.scan(Bound::Unbounded, Bound::Unbounded, |key, seq, value| {
                failed = builder.add(key, seq, value).err();
                failed.is_none()
            });
            if let Some(reason) = failed {
                return Err(LsmError::corrupt(&path, reason));
            }
            let image = builder.finish().map_err(|reason| LsmError::corrupt(&path, reason))?;
            let spare = self.spares.take();
            let (table, mode) = sstable::write_image_over(&self.dir, self.id, &image, self.build, spare.as_deref())?;
            // The table's name is durable before the manifest can list it.
            fsio::sync_dir(&self.dir)?;
            (Some(table), mode)
        };
        self.manifest.commit(&self.edit)?;
        Ok(FlushDone { table, mode, watermark: self.edit.watermark })
    }
}

/// A compaction to run off the owner's thread: merges `inputs` into new tables of level
/// `level + 1`, then commits them to the manifest in place of the inputs. Or, when nothing
/// in the next level overlaps the inputs (`move_only`), commits them one level down, as they
/// are. A flush may commit meanwhile: it only adds a level-0 table, which no compaction takes
/// once it has begun.
pub struct CompactionJob {
    dir: PathBuf,
    opts: StoreOptions,
    inputs: Vec<Arc<Table>>,
    manifest: Arc<SharedManifest>,
    removed: Vec<TableRef>,
    level: u8,
    move_only: bool,
    drop_tombstones: bool,
    /// The tables two levels below `level` that the inputs' key range meets, sorted.
    grandparents: Vec<Arc<Table>>,
    spares: SpareFiles,
}

pub struct CompactionDone {
    outputs: Vec<Table>,
    removed: Vec<TableRef>,
    /// The inputs go one level down unchanged (`outputs` is empty).
    move_only: bool,
    report: CompactionReport,
    /// CPU time of the thread that wrote and opened the output tables, µs (the job's own
    /// thread counts its own).
    writer_cpu_us: u64,
}

impl CompactionDone {
    /// CPU time of the job's writer thread, µs: with the job thread's own, all the job used.
    pub fn writer_cpu_us(&self) -> u64 {
        self.writer_cpu_us
    }
}

impl CompactionJob {
    pub fn run(self) -> Result<CompactionDone> {
        let out_level = self.level + 1;
        let mut report = CompactionReport {
            level: self.level,
            input_tables: self.inputs.len(),
            dropped_tombstones: self.drop_tombstones && !self.move_only,
            ..Default::default()
        };
        for t in &self.inputs {
            report.entries_in += t.entry_count();
            report.bytes_in += t.file_bytes();
        }
        if self.move_only {
            let added = self.removed.iter().map(|t| TableRef { level: out_level, id: t.id }).collect();
            self.manifest.commit(&ManifestEdit { removed: self.removed.clone(), added, ..Default::default() })?;
            report.moved_tables = self.inputs.len();
            report.output_tables = self.inputs.len();
            report.entries_out = report.entries_in;
            report.bytes_out = report.bytes_in;
            return Ok(CompactionDone {
                outputs: Vec::new(),
                removed: self.removed,
                move_only: true,
                report,
                writer_cpu_us: 0,
            });
        }
        let inputs: Vec<&Table> = self.inputs.iter().map(|t| &**t).collect();
        let mut grandparents =
            GrandparentCut::new(self.grandparents.iter().map(|t| &**t).collect(), grandparent_limit_bytes(&self.opts));
        let manifest = &self.manifest;
        let mut outputs = Vec::new();
        let mut writer_cpu_us = 0;
        // The merge reads the inputs in place and builds each output table while the previous
        // one is written (a scoped thread: building is CPU, writing is mostly waiting).
        std::thread::scope(|scope| -> Result<()> {
            let (send, recv) = std::sync::mpsc::sync_channel::<(u64, AlignedVec<FILE_ALIGN>)>(1);
            let (dir, build, spares) = (&self.dir, self.opts.build, &self.spares);
            let writer = scope.spawn(move || -> (Result<Vec<(Table, WriteMode)>>, u64) {
                let began = crate::metrics::thread_cpu_us();
                let written = recv
                    .iter()
                    .map(|(id, image)| sstable::write_image_over(dir, id, &image, build, spares.take().as_deref()))
                    .collect();
                (written, crate::metrics::thread_cpu_us().saturating_sub(began))
            });
            let table_bytes = self.opts.table_bytes;
            let merged = compaction::merge_into_tables(
                &inputs,
                self.drop_tombstones,
                table_bytes,
                &mut grandparents,
                build,
                |builder| {
                    // Ids are never reused, even when this job fails after writing the file.
                    let id = manifest.allocate_id();
                    let image = builder
                        .finish()
                        .map_err(|reason| LsmError::corrupt(&dir.join(sstable::file_name(id)), reason))?;
                    // A closed channel means the writer stopped on an error: stop too, and report
                    // the writer's error.
                    send.send((id, image)).map_err(|_| LsmError::corrupt(dir, "table writer stopped"))
                },
            );
            drop(send);
            let (written, cpu_us) = writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            writer_cpu_us = cpu_us;
            let written = written?;
            merged?;
            for (table, mode) in written {
                report.entries_out += table.entry_count();
                report.bytes_out += table.file_bytes();
                report.direct_writes += usize::from(mode == WriteMode::Direct);
                outputs.push(table);
            }
            Ok(())
        })?;
        report.output_tables = outputs.len();
        report.grandparent_cuts = grandparents.cuts;
        // One directory sync for every output table: their names are durable before the
        // manifest can list them.
        if !outputs.is_empty() {
            fsio::sync_dir(&self.dir)?;
        }
        let added = outputs.iter().map(|t| table_ref(out_level, t)).collect();
        self.manifest.commit(&ManifestEdit { removed: self.removed.clone(), added, ..Default::default() })?;
        Ok(CompactionDone { outputs, removed: self.removed, move_only: false, report, writer_cpu_us })
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`: removes temporary files, loads the manifest,
    /// opens and validates every table it lists (a missing or corrupt one is an error), and
    /// removes table files it does not list.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<(Store, OpenReport)> {
        std::fs::create_dir_all(dir).map_err(|e| LsmError::io(format!("creating {}", dir.display()), e))?;
        let mut report = OpenReport { removed_temporaries: fsio::remove_temporaries(dir)?, ..Default::default() };
        let manifest =
            Manifest::load(dir)?.unwrap_or(Manifest { max_seq: 0, watermark: 0, next_id: 1, tables: Vec::new() });
        let mut levels: Vec<Vec<Arc<Table>>> = vec![Vec::new(); MAX_LEVELS];
        for t in &manifest.tables {
            let path = dir.join(sstable::file_name(t.id));
            if !path.exists() {
                return Err(LsmError::corrupt(&path, "listed in the manifest but missing"));
            }
            let Some(level) = levels.get_mut(usize::from(t.level)) else {
                return Err(LsmError::corrupt(
                    &dir.join("MANIFEST"),
                    format!("table {} at unsupported level {} (levels are 0 to {})", t.id, t.level, MAX_LEVELS - 1),
                ));
            };
            level.push(Arc::new(Table::open(&path, t.id)?));
        }
        levels[0].sort_by_key(|t| std::cmp::Reverse(t.id()));
        for (n, level) in levels.iter_mut().enumerate().skip(1) {
            level.sort_by(|a, b| a.key_range().cmp(&b.key_range()));
            if let Some(w) = first_overlap(level) {
                return Err(LsmError::corrupt(w.path(), format!("level-{n} key ranges overlap")));
            }
        }
        report.tables = levels.iter().map(Vec::len).sum();
        let listed: Vec<u64> = manifest.tables.iter().map(|t| t.id).collect();
        let entries = std::fs::read_dir(dir).map_err(|e| LsmError::io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LsmError::io(format!("listing {}", dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let orphan = sstable::parse_file_name(&name).is_some_and(|id| !listed.contains(&id));
            // A spare (`spare_files`) of the last run: its list died with that run.
            let spare = name.ends_with(SPARE_SUFFIX);
            if orphan || spare {
                std::fs::remove_file(entry.path())
                    .map_err(|e| LsmError::io(format!("removing {}", entry.path().display()), e))?;
                report.removed_orphans += usize::from(orphan);
                report.removed_spares += usize::from(spare);
            }
        }
        if report.removed_orphans > 0 {
            fsio::sync_dir(dir)?;
        }
        let next_seq =
            manifest.max_seq.checked_add(1).ok_or_else(|| LsmError::corrupt(dir, "manifest: max_seq at its end"))?;
        let store = Store {
            dir: dir.to_path_buf(),
            opts,
            mem: Memtable::partitioned(opts.memtable_separator),
            mem_watermark: manifest.watermark,
            frozen: None,
            level_bytes: level_sizes(&levels),
            levels,
            compact_pointer: vec![None; MAX_LEVELS],
            watermark: manifest.watermark,
            manifest: Arc::new(SharedManifest::new(dir, manifest)),
            next_seq,
            flush_running: false,
            compaction_running: false,
            obsolete: Obsolete::default(),
            spares: SpareFiles::new(
                MAX_SPARE_TABLES.saturating_mul(opts.table_bytes as u64).max(MIN_SPARE_LIMIT_BYTES),
            ),
            flushes: 0,
            compactions: 0,
            bytes_flushed: 0,
            bytes_compacted_in: 0,
            bytes_compacted_out: 0,
        };
        Ok((store, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The owner's position up to which everything it wrote is in tables (durable).
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Records that the memtable now holds everything the owner wrote up to `watermark`; the
    /// next flush makes that durable.
    pub fn set_watermark(&mut self, watermark: u64) {
        self.mem_watermark = self.mem_watermark.max(watermark);
    }

    /// Writes `key = value`; returns its sequence number.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> u64 {
        self.write(key, Some(value.to_vec()))
    }

    /// Writes `key = value`, taking the value's buffer.
    pub fn put_owned(&mut self, key: &[u8], value: Vec<u8>) -> u64 {
        self.write(key, Some(value))
    }

    /// Deletes `key` (a tombstone until compaction drops it).
    pub fn delete(&mut self, key: &[u8]) -> u64 {
        self.write(key, None)
    }

    fn write(&mut self, key: &[u8], value: Option<Vec<u8>>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.mem.put(key, seq, value);
        seq
    }

    /// True once the memtable has reached `StoreOptions::memtable_bytes`.
    pub fn needs_flush(&self) -> bool {
        self.mem.approximate_bytes() >= self.opts.memtable_bytes
    }

    /// About how many bytes the memtable (not a frozen one) holds.
    pub fn memtable_bytes(&self) -> usize {
        self.mem.approximate_bytes()
    }

    /// Whether a flush or compaction job has begun and not finished.
    pub fn job_running(&self) -> bool {
        self.flush_running || self.compaction_running
    }

    /// Whether a flush job has begun and not finished.
    pub fn flush_running(&self) -> bool {
        self.flush_running
    }

    /// Whether a compaction job has begun and not finished.
    pub fn compaction_running(&self) -> bool {
        self.compaction_running
    }

    /// Level-0 tables waiting for compaction.
    pub fn level0_tables(&self) -> usize {
        self.levels[0].len()
    }

    /// The size level `level` (1 and below) may reach before it is compacted into the next;
    /// the last level has no limit.
    pub fn level_target_bytes(&self, level: usize) -> u64 {
        if level + 1 >= MAX_LEVELS {
            return u64::MAX;
        }
        let exponent = u32::try_from(level.saturating_sub(1)).unwrap_or(u32::MAX);
        self.opts.level1_bytes.saturating_mul(self.opts.level_ratio.max(1).saturating_pow(exponent))
    }

    fn level_bytes(&self, level: usize) -> u64 {
        self.level_bytes[level]
    }

    fn recount_levels(&mut self) {
        self.level_bytes = level_sizes(&self.levels);
    }

    /// The level most in need of compaction: level 0 at `level0_trigger` tables or more, a
    /// deeper level over its target; the highest ratio of the two wins (as in LevelDB).
    fn level_to_compact(&self, level0_trigger: usize) -> Option<usize> {
        let mut best: Option<(f64, usize)> = None;
        let level0 = self.levels[0].len();
        if level0 > 0 && level0 >= level0_trigger {
            best = Some((level0 as f64 / level0_trigger.max(1) as f64, 0));
        }
        for level in 1..MAX_LEVELS - 1 {
            let score = self.level_bytes(level) as f64 / self.level_target_bytes(level) as f64;
            if score > 1.0 && best.map_or(true, |(b, _)| score > b) {
                best = Some((score, level));
            }
        }
        best.map(|(_, level)| level)
    }

    /// Whether `begin_compaction(level0_trigger)` would begin a job (none running).
    pub fn needs_compaction(&self, level0_trigger: usize) -> bool {
        self.level_to_compact(level0_trigger).is_some()
    }

    /// The newest value of `key`: memtable, frozen memtable, level 0 newest first, then each
    /// level down (a level's versions are newer than any below it).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some((_, v)) = self.mem.get(key) {
            return Ok(v);
        }
        if let Some((_, v)) = self.frozen.as_ref().and_then(|(f, _)| f.get(key)) {
            return Ok(v);
        }
        for t in &self.levels[0] {
            if let Some((_, v)) = t.get(key)? {
                return Ok(v);
            }
        }
        for level in &self.levels[1..] {
            let i = level.partition_point(|t| t.key_range().is_some_and(|r| r.1 < key));
            if let Some(t) = level.get(i) {
                if let Some((_, v)) = t.get(key)? {
                    return Ok(v);
                }
            }
        }
        Ok(None)
    }

    /// Live keys and values in `(lo, hi)`, in key order.
    pub fn range(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.merge_sources(lo, hi, usize::MAX)?.0.into_iter().filter_map(|(k, (_, v))| v.map(|v| (k, v))).collect())
    }

    /// The first `limit` live keys and values in `(lo, hi)`, in key order, and whether more
    /// follow. Each source is read only as far as needed (no tombstones: `limit` keys from
    /// each; tombstones may need another, longer pass).
    pub fn range_limited(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>, limit: usize) -> Result<(Vec<KeyValue>, bool)> {
        let mut per_source = limit.saturating_add(1);
        loop {
            let (merged, certain_to) = self.merge_sources(lo, hi, per_source)?;
            // Past `certain_to` (the smallest last key of the sources cut short) a source may
            // hold keys not read yet: only keys up to it are known.
            let truncated = certain_to.is_some();
            let mut live: Vec<(Vec<u8>, Vec<u8>)> = merged
                .into_iter()
                .filter(|(k, _)| certain_to.as_ref().map_or(true, |c| k <= c))
                .filter_map(|(k, (_, v))| v.map(|v| (k, v)))
                .collect();
            if live.len() > limit || !truncated {
                let more = live.len() > limit || truncated;
                live.truncate(limit);
                return Ok((live, more));
            }
            per_source = per_source.saturating_mul(4);
        }
    }

    /// Newest version per key in `(lo, hi)` over every source, each read for at most
    /// `per_source` keys; and, when any source had more, the smallest last key read from
    /// such a source.
    #[allow(clippy::type_complexity)]
    fn merge_sources(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        per_source: usize,
    ) -> Result<(BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)>, Option<Vec<u8>>)> {
        let mut merged: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)> = BTreeMap::new();
        let mut certain_to: Option<Vec<u8>> = None;
        let mut source = |scan: &mut dyn FnMut(&mut dyn FnMut(&[u8], u64, Option<&[u8]>) -> bool) -> Result<()>| {
            let mut seen = 0usize;
            let mut last: Option<Vec<u8>> = None;
            let mut cut = false;
            scan(&mut |k, seq, v| {
                if seen == per_source {
                    cut = true;
                    return false;
                }
                seen += 1;
                match merged.get(k) {
                    Some((cur, _)) if *cur >= seq => {}
                    _ => {
                        merged.insert(k.to_vec(), (seq, v.map(<[u8]>::to_vec)));
                    }
                }
                if per_source != usize::MAX {
                    last = Some(k.to_vec());
                }
                true
            })?;
            if cut {
                if let Some(last) = last {
                    if certain_to.as_ref().map_or(true, |c| &last < c) {
                        certain_to = Some(last);
                    }
                }
            }
            Ok::<(), LsmError>(())
        };
        source(&mut |f| {
            self.mem.scan(lo, hi, f);
            Ok(())
        })?;
        if let Some((frozen, _)) = &self.frozen {
            source(&mut |f| {
                frozen.scan(lo, hi, f);
                Ok(())
            })?;
        }
        for t in self.levels.iter().flatten() {
            let overlaps =
                t.key_range().is_some_and(|(first, last)| sstable::above_lo(last, lo) && sstable::below_hi(first, hi));
            if overlaps {
                source(&mut |f| t.scan(lo, hi, f))?;
            }
        }
        Ok((merged, certain_to))
    }

    /// Starts a flush of the memtable (or retries the one a failed flush left): freezes it
    /// (reads still see it) and reserves its table id. `None` when a flush is running or there
    /// is nothing to flush; a running compaction does not stop it.
    pub fn begin_flush(&mut self) -> Option<FlushJob> {
        if self.flush_running {
            return None;
        }
        if self.frozen.is_none() {
            if self.mem.is_empty() && self.mem_watermark == self.watermark {
                return None;
            }
            let fresh = Memtable::partitioned(self.opts.memtable_separator);
            let frozen = std::mem::replace(&mut self.mem, fresh).freeze();
            self.frozen = Some((Arc::new(frozen), self.mem_watermark));
        }
        let (frozen, watermark) = self.frozen.clone()?;
        // Ids are never reused, even when this flush fails after writing the file.
        let id = self.manifest.allocate_id();
        let edit = ManifestEdit {
            removed: Vec::new(),
            added: if frozen.is_empty() { Vec::new() } else { vec![TableRef { level: 0, id }] },
            max_seq: frozen.max_seq(),
            watermark,
        };
        self.flush_running = true;
        Some(FlushJob {
            dir: self.dir.clone(),
            build: self.opts.build,
            frozen,
            id,
            manifest: self.manifest.clone(),
            edit,
            spares: self.spares.clone(),
        })
    }

    /// Ends a flush: on success the new table replaces the frozen memtable in reads. On error
    /// the frozen memtable stays readable and the next `begin_flush` retries it.
    pub fn finish_flush(&mut self, result: Result<FlushDone>) -> Result<Option<FlushReport>> {
        self.flush_running = false;
        let done = result?;
        // Freeing a large skiplist takes milliseconds: the owner does it off its thread.
        if let Some((frozen, _)) = self.frozen.take() {
            self.obsolete.memtables.push(frozen);
        }
        self.watermark = self.watermark.max(done.watermark);
        let Some(table) = done.table else { return Ok(None) };
        let report = FlushReport {
            table_id: table.id(),
            entries: table.entry_count(),
            file_bytes: table.file_bytes(),
            mode: done.mode,
        };
        self.bytes_flushed += table.file_bytes();
        self.levels[0].insert(0, Arc::new(table));
        self.recount_levels();
        self.flushes += 1;
        Ok(Some(report))
    }

    /// Starts the compaction most needed (`level_to_compact`; a `level0_trigger` of 1
    /// compacts level 0 whenever it has a table):
    /// - level 0: all its tables (their ranges overlap) and the level-1 tables they overlap;
    /// - a deeper level: its next table after the level's compaction pointer, and the tables of
    ///   the next level it overlaps.
    ///
    /// Merged into the next level; moved there unchanged when nothing there overlaps (and, for
    /// level 0, it is a single table). Tombstones are dropped only when no deeper level holds
    /// a table in the inputs' key range: otherwise they still hide older versions there.
    /// `None` when a compaction is running or no level needs it; a running flush does not stop
    /// it (the flush only adds a level-0 table, newer than anything the compaction takes).
    pub fn begin_compaction(&mut self, level0_trigger: usize) -> Option<CompactionJob> {
        if self.compaction_running {
            return None;
        }
        let level = self.level_to_compact(level0_trigger)?;
        let upper: Vec<Arc<Table>> = if level == 0 {
            self.levels[0].clone()
        } else {
            let tables = &self.levels[level];
            let after_pointer = self.compact_pointer[level].as_ref().map_or(0, |p| {
                tables.partition_point(|t| t.key_range().map_or(true, |(_, last)| last <= p.as_slice()))
            });
            let picked = tables.get(after_pointer).or(tables.first())?.clone();
            self.compact_pointer[level] = picked.key_range().map(|(_, last)| last.to_vec());
            vec![picked]
        };
        let (lo, hi) = key_span(&upper)?;
        let lower: Vec<Arc<Table>> = self.levels[level + 1].iter().filter(|t| overlaps(t, &lo, &hi)).cloned().collect();
        let inputs: Vec<Arc<Table>> = upper.iter().chain(&lower).cloned().collect();
        let (lo, hi) = key_span(&inputs)?;
        let grandparents: Vec<Arc<Table>> =
            self.levels.get(level + 2).into_iter().flatten().filter(|t| overlaps(t, &lo, &hi)).cloned().collect();
        // A table moved down as it is must not span more grandparents than a rewritten one may
        // (LevelDB's trivial move has the same condition).
        let grandparent_bytes: u64 = grandparents.iter().map(|t| t.file_bytes()).sum();
        let move_only = lower.is_empty()
            && (level > 0 || upper.len() == 1)
            && grandparent_bytes <= grandparent_limit_bytes(&self.opts);
        let drop_tombstones = self.levels[level + 2..].iter().flatten().all(|t| !overlaps(t, &lo, &hi));
        let out_level = level as u8 + 1;
        let removed: Vec<TableRef> = upper
            .iter()
            .map(|t| table_ref(level as u8, t))
            .chain(lower.iter().map(|t| table_ref(out_level, t)))
            .collect();
        self.compaction_running = true;
        Some(CompactionJob {
            dir: self.dir.clone(),
            opts: self.opts,
            inputs,
            manifest: self.manifest.clone(),
            removed,
            level: level as u8,
            move_only,
            drop_tombstones,
            grandparents,
            spares: self.spares.clone(),
        })
    }

    /// Ends a compaction: the outputs replace the inputs in reads and the input files go (or,
    /// for a move, the inputs now read as one level down).
    pub fn finish_compaction(&mut self, result: Result<CompactionDone>) -> Result<Option<CompactionReport>> {
        self.compaction_running = false;
        // A failed job's files are not listed: the next open removes them.
        let done = result?;
        let out_level = usize::from(done.report.level) + 1;
        let mut taken = Vec::new();
        for (n, level) in self.levels.iter_mut().enumerate() {
            level.retain(|t| {
                let gone = done.removed.contains(&table_ref(n as u8, t));
                if gone {
                    taken.push(t.clone());
                }
                !gone
            });
        }
        if done.move_only {
            self.levels[out_level].extend(taken);
        } else {
            self.levels[out_level].extend(done.outputs.into_iter().map(Arc::new));
            // The manifest no longer lists the inputs: their files go with `remove_obsolete` (a
            // file that never goes is an orphan the next open removes). A reader holding an
            // input keeps its mapping.
            self.obsolete.tables.extend(taken);
        }
        self.levels[out_level].sort_by(|a, b| a.key_range().cmp(&b.key_range()));
        self.recount_levels();
        debug_assert!(first_overlap(&self.levels[out_level]).is_none(), "level {out_level} overlaps");
        self.compactions += 1;
        if !done.move_only {
            self.bytes_compacted_in += done.report.bytes_in;
            self.bytes_compacted_out += done.report.bytes_out;
        }
        Ok(Some(done.report))
    }

    /// Flushes now, on this thread. `None` when there was nothing to flush.
    pub fn flush(&mut self) -> Result<Option<FlushReport>> {
        match self.begin_flush() {
            Some(job) => {
                let done = job.run();
                self.finish_flush(done)
            }
            None => Ok(None),
        }
    }

    /// Compacts now, on this thread, until level 0 is empty and every level is within its
    /// target, and deletes the replaced files. Returns the last compaction's report; `None`
    /// when there was nothing to do.
    pub fn compact(&mut self) -> Result<Option<CompactionReport>> {
        let mut last = None;
        while let Some(job) = self.begin_compaction(1) {
            let done = job.run();
            let report = self.finish_compaction(done);
            remove_obsolete(self.take_obsolete());
            last = report?;
        }
        Ok(last)
    }

    /// What flushes and compactions replaced since the last call, for `remove_obsolete`
    /// (blocking file system calls and large frees: the server makes them off its executor).
    pub fn take_obsolete(&mut self) -> Obsolete {
        Obsolete { spares: self.spares.clone(), ..std::mem::take(&mut self.obsolete) }
    }

    /// How many replaced table files wait to be written over (`spare_files`).
    pub fn spare_files(&self) -> usize {
        self.spares.len()
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            memtable_bytes: self.mem.approximate_bytes(),
            memtable_entries: self.mem.len(),
            tables: self.levels.iter().map(Vec::len).collect(),
            table_bytes: (0..MAX_LEVELS).map(|level| self.level_bytes(level)).collect(),
            flushes: self.flushes,
            compactions: self.compactions,
            max_seq: self.next_seq - 1,
            watermark: self.watermark,
            frozen_bytes: self.frozen.as_ref().map_or(0, |(f, _)| f.approximate_bytes()),
            flush_running: self.flush_running,
            compaction_running: self.compaction_running,
            bytes_flushed: self.bytes_flushed,
            bytes_compacted_in: self.bytes_compacted_in,
            bytes_compacted_out: self.bytes_compacted_out,
        }
    }
}

/// A replaced file is kept as a spare (`spare_files`) only up to this many compaction tables'
/// size (`StoreOptions::table_bytes`), or `MIN_SPARE_LIMIT_BYTES` if larger; a larger
/// level-0 table is deleted.
const MAX_SPARE_TABLES: u64 = 2;
const MIN_SPARE_LIMIT_BYTES: u64 = 1 << 20;

/// How many tables' worth (`StoreOptions::table_bytes` each) of the level below its own an
/// output table of a compaction may span before it is cut (LevelDB's ten).
pub const GRANDPARENT_OVERLAP_TABLES: u64 = 10;

/// `GRANDPARENT_OVERLAP_TABLES` tables of `opts.table_bytes`.
fn grandparent_limit_bytes(opts: &StoreOptions) -> u64 {
    GRANDPARENT_OVERLAP_TABLES.saturating_mul(opts.table_bytes as u64)
}

/// The first and last key over `tables` (`None` when all are empty).
fn key_span(tables: &[Arc<Table>]) -> Option<(Vec<u8>, Vec<u8>)> {
    let lo = tables.iter().filter_map(|t| t.key_range().map(|r| r.0)).min()?.to_vec();
    let hi = tables.iter().filter_map(|t| t.key_range().map(|r| r.1)).max()?.to_vec();
    Some((lo, hi))
}

fn overlaps(t: &Table, lo: &[u8], hi: &[u8]) -> bool {
    t.key_range().is_some_and(|(first, last)| last >= lo && first <= hi)
}

/// In a level sorted by key range, the first table whose range meets the one before it.
fn first_overlap(level: &[Arc<Table>]) -> Option<&Arc<Table>> {
    level.windows(2).find(|w| w[0].key_range().map(|r| r.1) >= w[1].key_range().map(|r| r.0)).map(|w| &w[1])
}
