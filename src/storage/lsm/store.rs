//! The store: a memtable over level-0 tables (newest first, key ranges may overlap) over
//! level-1 tables (sorted, disjoint key ranges). Flush and compaction are explicit calls; each
//! writes its new tables durably, then the manifest, and only then changes what reads see, so a
//! crash at any step leaves the old or the new set of tables. Unflushed writes live only in the
//! memtable and are lost in a crash.

use crate::storage::lsm::compaction;
use crate::storage::lsm::error::{LsmError, Result};
use crate::storage::lsm::format::BuildOptions;
use crate::storage::lsm::fsio::{self, WriteMode};
use crate::storage::lsm::manifest::{Manifest, TableRef};
use crate::storage::lsm::memtable::Memtable;
use crate::storage::lsm::sstable::{self, Table};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    pub build: BuildOptions,
    /// `needs_flush` turns true once the memtable holds about this many bytes.
    pub memtable_bytes: usize,
    /// Compaction cuts level 1 into tables of about this many bytes of keys and values.
    pub table_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { build: BuildOptions::default(), memtable_bytes: 64 << 20, table_bytes: 8 << 20 }
    }
}

/// What `open` found and cleaned up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub tables: usize,
    /// `*.tmp` files of interrupted writes.
    pub removed_temporaries: usize,
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
    pub input_tables: usize,
    pub output_tables: usize,
    pub entries_in: u64,
    pub entries_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Output tables written with O_DIRECT (the rest fell back to buffered writes).
    pub direct_writes: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub memtable_bytes: usize,
    pub memtable_entries: usize,
    pub tables: [usize; 2],
    pub table_bytes: [u64; 2],
    pub flushes: u64,
    pub compactions: u64,
    pub max_seq: u64,
}

pub struct Store {
    dir: PathBuf,
    opts: StoreOptions,
    mem: Memtable,
    /// Newest first.
    l0: Vec<Table>,
    /// Sorted by key, disjoint.
    l1: Vec<Table>,
    manifest: Manifest,
    next_seq: u64,
    flushes: u64,
    compactions: u64,
}

fn table_ref(level: u8, t: &Table) -> TableRef {
    TableRef { level, id: t.id() }
}

impl Store {
    /// Opens (or creates) the store in `dir`: removes temporary files, loads the manifest,
    /// opens and validates every table it lists (a missing or corrupt one is an error), and
    /// removes table files it does not list.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<(Store, OpenReport)> {
        std::fs::create_dir_all(dir).map_err(|e| LsmError::io(format!("creating {}", dir.display()), e))?;
        let mut report = OpenReport { removed_temporaries: fsio::remove_temporaries(dir)?, ..Default::default() };
        let manifest = Manifest::load(dir)?.unwrap_or(Manifest { max_seq: 0, next_id: 1, tables: Vec::new() });
        let (mut l0, mut l1) = (Vec::new(), Vec::new());
        for t in &manifest.tables {
            let path = dir.join(sstable::file_name(t.id));
            if !path.exists() {
                return Err(LsmError::corrupt(&path, "listed in the manifest but missing"));
            }
            let table = Table::open(&path, t.id)?;
            match t.level {
                0 => l0.push(table),
                1 => l1.push(table),
                n => {
                    return Err(LsmError::corrupt(
                        &dir.join("MANIFEST"),
                        format!("table {} at unsupported level {n}", t.id),
                    ))
                }
            }
        }
        l0.sort_by_key(|t| std::cmp::Reverse(t.id()));
        l1.sort_by(|a, b| a.key_range().cmp(&b.key_range()));
        if let Some(w) = l1.windows(2).find(|w| w[0].key_range().map(|r| r.1) >= w[1].key_range().map(|r| r.0)) {
            return Err(LsmError::corrupt(w[1].path(), "level-1 key ranges overlap"));
        }
        report.tables = l0.len() + l1.len();
        let listed: Vec<u64> = manifest.tables.iter().map(|t| t.id).collect();
        let entries = std::fs::read_dir(dir).map_err(|e| LsmError::io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LsmError::io(format!("listing {}", dir.display()), e))?;
            let orphan =
                sstable::parse_file_name(&entry.file_name().to_string_lossy()).is_some_and(|id| !listed.contains(&id));
            if orphan {
                std::fs::remove_file(entry.path())
                    .map_err(|e| LsmError::io(format!("removing {}", entry.path().display()), e))?;
                report.removed_orphans += 1;
            }
        }
        if report.removed_orphans > 0 {
            fsio::sync_dir(dir)?;
        }
        let next_seq = manifest.max_seq + 1;
        let store = Store {
            dir: dir.to_path_buf(),
            opts,
            mem: Memtable::new(),
            l0,
            l1,
            manifest,
            next_seq,
            flushes: 0,
            compactions: 0,
        };
        Ok((store, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `key = value`; returns its sequence number.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> u64 {
        self.write(key, Some(value.to_vec()))
    }

    /// Deletes `key` (a tombstone until compaction drops it).
    pub fn delete(&mut self, key: &[u8]) -> u64 {
        self.write(key, None)
    }

    fn write(&mut self, key: &[u8], value: Option<Vec<u8>>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.mem.put(key.to_vec(), seq, value);
        seq
    }

    /// True once the memtable has reached `StoreOptions::memtable_bytes`.
    pub fn needs_flush(&self) -> bool {
        self.mem.approximate_bytes() >= self.opts.memtable_bytes
    }

    /// The newest value of `key`: memtable, then level 0 newest first, then level 1.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some((_, v)) = self.mem.get(key) {
            return Ok(v);
        }
        for t in &self.l0 {
            if let Some((_, v)) = t.get(key)? {
                return Ok(v);
            }
        }
        let i = self.l1.partition_point(|t| t.key_range().is_some_and(|r| r.1 < key));
        if let Some(t) = self.l1.get(i) {
            if let Some((_, v)) = t.get(key)? {
                return Ok(v);
            }
        }
        Ok(None)
    }

    /// Live keys and values in `(lo, hi)`, in key order.
    pub fn range(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)> = BTreeMap::new();
        let mut visit = |k: &[u8], seq: u64, v: Option<&[u8]>| match merged.get(k) {
            Some((cur, _)) if *cur >= seq => {}
            _ => {
                merged.insert(k.to_vec(), (seq, v.map(<[u8]>::to_vec)));
            }
        };
        self.mem.scan(lo, hi, &mut visit);
        for t in self.l0.iter().chain(&self.l1) {
            let overlaps =
                t.key_range().is_some_and(|(first, last)| sstable::above_lo(last, lo) && sstable::below_hi(first, hi));
            if overlaps {
                t.scan(lo, hi, &mut visit)?;
            }
        }
        Ok(merged.into_iter().filter_map(|(k, (_, v))| v.map(|v| (k, v))).collect())
    }

    /// Writes the memtable as a new level-0 table and lists it in the manifest. `None` when
    /// the memtable is empty. On error the memtable is kept.
    pub fn flush(&mut self) -> Result<Option<FlushReport>> {
        if self.mem.is_empty() {
            return Ok(None);
        }
        let frozen = std::mem::take(&mut self.mem).freeze();
        let id = self.manifest.next_id;
        // Ids are never reused, even when this flush fails after writing the file.
        self.manifest.next_id += 1;
        let entries: Vec<_> = frozen.iter().collect();
        let mut next = self.manifest.clone();
        next.max_seq = next.max_seq.max(frozen.max_seq());
        next.tables.push(TableRef { level: 0, id });
        let written = sstable::write_table(&self.dir, id, &entries, self.opts.build)
            .and_then(|(table, mode)| next.store(&self.dir).map(|()| (table, mode)));
        let (table, mode) = match written {
            Ok(w) => w,
            Err(e) => {
                self.mem = frozen.thaw();
                return Err(e);
            }
        };
        let report = FlushReport { table_id: id, entries: table.entry_count(), file_bytes: table.file_bytes(), mode };
        self.manifest = next;
        self.l0.insert(0, table);
        self.flushes += 1;
        Ok(Some(report))
    }

    /// Merges every level-0 table and the level-1 tables overlapping them into new level-1
    /// tables (newest version per key; tombstones dropped, level 1 being the bottom), lists
    /// them in the manifest in place of the inputs, then deletes the inputs. `None` when level
    /// 0 is empty.
    pub fn compact(&mut self) -> Result<Option<CompactionReport>> {
        let Some(lo) = self.l0.iter().filter_map(|t| t.key_range().map(|r| r.0.to_vec())).min() else {
            return Ok(None);
        };
        let hi = self.l0.iter().filter_map(|t| t.key_range().map(|r| r.1.to_vec())).max().unwrap_or_default();
        let overlapping: Vec<usize> = (0..self.l1.len())
            .filter(|&i| self.l1[i].key_range().is_some_and(|(f, l)| l >= lo.as_slice() && f <= hi.as_slice()))
            .collect();
        let inputs: Vec<&Table> = self.l0.iter().chain(overlapping.iter().map(|&i| &self.l1[i])).collect();
        let mut report = CompactionReport { input_tables: inputs.len(), ..Default::default() };
        let mut runs = Vec::with_capacity(inputs.len());
        for t in &inputs {
            report.entries_in += t.entry_count();
            report.bytes_in += t.file_bytes();
            runs.push(t.entries()?);
        }
        let merged = compaction::merge_newest(runs, true);
        let mut outputs = Vec::new();
        for run in compaction::split_runs(merged, self.opts.table_bytes) {
            let id = self.manifest.next_id;
            self.manifest.next_id += 1;
            let (table, mode) = sstable::write_table(&self.dir, id, &run, self.opts.build)?;
            report.entries_out += table.entry_count();
            report.bytes_out += table.file_bytes();
            report.direct_writes += usize::from(mode == WriteMode::Direct);
            outputs.push(table);
        }
        report.output_tables = outputs.len();
        let removed: Vec<TableRef> = self
            .l0
            .iter()
            .map(|t| table_ref(0, t))
            .chain(overlapping.iter().map(|&i| table_ref(1, &self.l1[i])))
            .collect();
        let mut next = self.manifest.clone();
        next.tables.retain(|t| !removed.contains(t));
        next.tables.extend(outputs.iter().map(|t| table_ref(1, t)));
        next.store(&self.dir)?;
        self.manifest = next;
        let mut old: Vec<Table> = std::mem::take(&mut self.l0);
        for &i in overlapping.iter().rev() {
            old.push(self.l1.remove(i));
        }
        self.l1.extend(outputs);
        self.l1.sort_by(|a, b| a.key_range().cmp(&b.key_range()));
        // The manifest no longer lists the inputs; a file that fails to go now is an orphan
        // the next open removes.
        for t in old {
            let _ = std::fs::remove_file(t.path());
        }
        let _ = fsio::sync_dir(&self.dir);
        self.compactions += 1;
        Ok(Some(report))
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            memtable_bytes: self.mem.approximate_bytes(),
            memtable_entries: self.mem.len(),
            tables: [self.l0.len(), self.l1.len()],
            table_bytes: [self.l0.iter().map(Table::file_bytes).sum(), self.l1.iter().map(Table::file_bytes).sum()],
            flushes: self.flushes,
            compactions: self.compactions,
            max_seq: self.next_seq - 1,
        }
    }
}
