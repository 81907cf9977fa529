//! Merge logic of compaction: combine tables into one sorted stream, keeping the newest
//! version (highest sequence number) of each key, optionally dropping tombstones (allowed only
//! when the output is the bottom level for its key range), and cut the stream into table-sized
//! images. Entries are read in place from each input's buffer (`block_reader`: O_DIRECT, not
//! the mapping) and copied once, into the output image (`format::TableBuilder`).
//!
//! An output table is also cut early where it would overlap too much of the level below its
//! own (the grandparents, `GrandparentCut`), as LevelDB does: a later compaction of that table
//! reads it with every table of the next level it overlaps, so this bounds that job.

use crate::storage::lsm::block_reader::{BlockReader, EntryPlace};
use crate::storage::lsm::error::{LsmError, Result};
use crate::storage::lsm::format::{BuildOptions, TableBuilder, FILE_ALIGN};
use crate::storage::lsm::sstable::{EntryRef, Table};

/// Tables with disjoint key ranges read one after the other, in key order: one merge input.
/// Each is read with its own `BlockReader` (O_DIRECT, one window of the file at a time), so a
/// chain holds one window however many tables it has. Keys must come out strictly increasing
/// (checked, so that a table whose blocks disagree with its index is an error rather than a
/// bad output table).
struct Chain<'a> {
    tables: Vec<&'a Table>,
    /// The table being read (`tables.len()` once all are).
    at: usize,
    reader: Option<BlockReader<'a>>,
    /// The entries of the block being read, and the head's among them.
    places: Vec<EntryPlace>,
    pos: usize,
    /// The key before the head, for the order check (`had_key`: there was one).
    last_key: Vec<u8>,
    had_key: bool,
}

impl<'a> Chain<'a> {
    /// The chain, its head at the first entry.
    fn new(tables: Vec<&'a Table>) -> Result<Self> {
        let mut chain =
            Chain { tables, at: 0, reader: None, places: Vec::new(), pos: 0, last_key: Vec::new(), had_key: false };
        chain.settle()?;
        Ok(chain)
    }

    /// The next entry in key order, valid until the chain moves (`None`: the chain is done).
    fn head(&self) -> Option<EntryRef<'_>> {
        let place = self.places.get(self.pos)?;
        self.reader.as_ref().map(|r| r.entry(place))
    }

    /// The table the head was read from.
    fn table(&self) -> Option<&'a Table> {
        self.reader.as_ref().map(BlockReader::table)
    }

    /// Moves the head to the next entry.
    fn advance(&mut self) -> Result<()> {
        let (Some(place), Some(reader)) = (self.places.get(self.pos), self.reader.as_ref()) else { return Ok(()) };
        let key = reader.entry(place).key;
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.had_key = true;
        self.pos += 1;
        self.settle()
    }

    /// Reads blocks (and opens tables) until the head is on an entry or every table is read,
    /// then checks the head's key against the one before it.
    fn settle(&mut self) -> Result<()> {
        while self.pos >= self.places.len() {
            self.pos = 0;
            if let Some(reader) = self.reader.as_mut() {
                if reader.next_block(&mut self.places)? {
                    continue;
                }
                self.reader = None;
                self.at += 1;
            }
            let Some(&table) = self.tables.get(self.at) else {
                self.places.clear();
                return Ok(());
            };
            self.reader = Some(BlockReader::open(table)?);
        }
        if let (Some(head), Some(table)) = (self.head(), self.table()) {
            if self.had_key && self.last_key.as_slice() >= head.key {
                return Err(LsmError::corrupt(table.path(), format!("keys out of order at {:?}", head.key)));
            }
        }
        Ok(())
    }
}

/// Groups `tables` into as few chains of disjoint, ascending key ranges as their overlaps
/// allow (first fit over the tables sorted by first key), skipping empty tables. Level-1
/// inputs (disjoint) then cost one merge input in all, not one each.
fn chains<'a>(tables: &[&'a Table]) -> Vec<Vec<&'a Table>> {
    let mut sorted: Vec<(&[u8], &'a Table)> =
        tables.iter().filter_map(|&t| t.key_range().map(|(first, _)| (first, t))).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut chains: Vec<Vec<&'a Table>> = Vec::new();
    for (first, t) in sorted {
        let ends_before =
            |c: &&mut Vec<&'a Table>| c.last().and_then(|l| l.key_range()).is_some_and(|(_, last)| last < first);
        match chains.iter_mut().find(ends_before) {
            Some(chain) => chain.push(t),
            None => chains.push(vec![t]),
        }
    }
    chains
}

/// The newest version of every key over some tables, in key order, zero-copy from the
/// chains' buffers (`next_entry`: each entry is valid until the next call). A version
/// shadows every lower sequence number of its key (two inputs never hold the same key at the
/// same sequence number: each is written once).
pub struct MergeNewest<'a> {
    chains: Vec<Chain<'a>>,
    drop_tombstones: bool,
    /// The chains whose heads held the entry last returned: they move on at the next call
    /// (not before, since the entry borrows from one of them).
    returned_from: Vec<usize>,
    /// An error ended the merge.
    failed: bool,
}

impl<'a> MergeNewest<'a> {
    pub fn new(tables: &[&'a Table], drop_tombstones: bool) -> Result<Self> {
        let chains = chains(tables).into_iter().map(Chain::new).collect::<Result<_>>()?;
        Ok(MergeNewest { chains, drop_tombstones, returned_from: Vec::new(), failed: false })
    }

    /// The next entry and the table it was read from; `None` once the inputs are merged, and
    /// after an error.
    pub fn next_entry(&mut self) -> Result<Option<(EntryRef<'_>, &'a Table)>> {
        if self.failed {
            return Ok(None);
        }
        let stepped = self.step();
        self.failed = stepped.is_err();
        let Some(best) = stepped? else { return Ok(None) };
        let chain = &self.chains[best];
        Ok(chain.head().zip(chain.table()))
    }

    /// Moves past the entry last returned, then finds the next one to return: the index of
    /// the chain whose head it is.
    fn step(&mut self) -> Result<Option<usize>> {
        loop {
            for i in self.returned_from.drain(..) {
                self.chains[i].advance()?;
            }
            let mut best: Option<(usize, EntryRef<'_>)> = None;
            for (i, head) in self.chains.iter().enumerate().filter_map(|(i, c)| c.head().map(|h| (i, h))) {
                let better = best.map_or(true, |(_, b)| match head.key.cmp(b.key) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Equal => head.seq > b.seq,
                    std::cmp::Ordering::Greater => false,
                });
                if better {
                    best = Some((i, head));
                }
            }
            let Some((best, entry)) = best else { return Ok(None) };
            let tombstone = entry.value.is_none();
            for (i, chain) in self.chains.iter().enumerate() {
                if chain.head().is_some_and(|h| h.key == entry.key) {
                    self.returned_from.push(i);
                }
            }
            if !(self.drop_tombstones && tombstone) {
                return Ok(Some(best));
            }
        }
    }
}

/// Where output tables end because of the level two below the inputs' upper level (the
/// grandparents): before a key once the output table so far spans more than `limit_bytes` of
/// grandparent tables. An output table then overlaps at most `limit_bytes` plus the one
/// grandparent its last key falls in or before, so compacting it one level down later reads a
/// bounded amount.
pub struct GrandparentCut<'a> {
    /// One level's tables, sorted by key range and disjoint.
    tables: Vec<&'a Table>,
    limit_bytes: u64,
    /// The first table whose last key is not yet behind the merge.
    next: usize,
    /// Bytes of the grandparents passed since the current output table began.
    overlapped_bytes: u64,
    /// A key was seen: the table the first key falls in is not counted as passed.
    seen_key: bool,
    /// Tables cut here so far.
    pub cuts: usize,
}

impl<'a> GrandparentCut<'a> {
    /// Cuts by `tables` (one level, sorted by key range) over `limit_bytes`.
    pub fn new(tables: Vec<&'a Table>, limit_bytes: u64) -> Self {
        debug_assert!(tables.windows(2).all(|w| w[0].key_range() < w[1].key_range()), "grandparents unsorted");
        GrandparentCut { tables, limit_bytes, next: 0, overlapped_bytes: 0, seen_key: false, cuts: 0 }
    }

    /// No grandparents: tables are cut by size alone.
    pub fn none() -> Self {
        GrandparentCut::new(Vec::new(), u64::MAX)
    }

    /// Whether the output table should end before `key` (keys come in increasing order).
    fn cut_before(&mut self, key: &[u8]) -> bool {
        while let Some(table) = self.tables.get(self.next) {
            if table.key_range().is_some_and(|(_, last)| key <= last) {
                break;
            }
            if self.seen_key {
                self.overlapped_bytes += table.file_bytes();
            }
            self.next += 1;
        }
        self.seen_key = true;
        if self.overlapped_bytes > self.limit_bytes {
            self.overlapped_bytes = 0;
            return true;
        }
        false
    }
}

/// Merges `tables` (`MergeNewest`) into builders of about `table_bytes` each, handing each
/// builder with entries to `emit` in key order. A table is cut after the entry that brings the
/// sum of its `format::entry_bytes` to `table_bytes`, or before an entry where `grandparents`
/// says so.
pub fn merge_into_tables(
    tables: &[&Table],
    drop_tombstones: bool,
    table_bytes: usize,
    grandparents: &mut GrandparentCut<'_>,
    build: BuildOptions,
    mut emit: impl FnMut(TableBuilder) -> Result<()>,
) -> Result<()> {
    // Room for a full output table (entries grow by about a third in the image), or for all
    // the input when that is smaller; a builder that needs more grows.
    let input_bytes: u64 = tables.iter().map(|t| t.file_bytes()).sum();
    let capacity = (table_bytes.saturating_add(table_bytes / 2).saturating_add(16 * FILE_ALIGN))
        .min(usize::try_from(input_bytes).unwrap_or(usize::MAX).saturating_add(FILE_ALIGN));
    let mut builder = TableBuilder::with_capacity(build, capacity);
    let mut merge = MergeNewest::new(tables, drop_tombstones)?;
    while let Some((entry, table)) = merge.next_entry()? {
        if grandparents.cut_before(entry.key) && !builder.is_empty() {
            grandparents.cuts += 1;
            emit(std::mem::replace(&mut builder, TableBuilder::with_capacity(build, capacity)))?;
        }
        builder.add(entry.key, entry.seq, entry.value).map_err(|reason| LsmError::corrupt(table.path(), reason))?;
        if builder.approx_bytes() >= table_bytes {
            emit(std::mem::replace(&mut builder, TableBuilder::with_capacity(build, capacity)))?;
        }
    }
    if !builder.is_empty() {
        emit(builder)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::lsm::fsio::Pacing;
    use crate::storage::lsm::sstable;
    use crate::storage::lsm::Entry;
    use std::collections::BTreeMap;

    fn e(k: &str, seq: u64, v: Option<&str>) -> Entry {
        Entry { key: k.as_bytes().to_vec(), seq, value: v.map(|v| v.as_bytes().to_vec()) }
    }

    /// The reference: every version in a map, the newest kept.
    fn merge_newest(runs: &[Vec<Entry>], drop_tombstones: bool) -> Vec<Entry> {
        let mut merged: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        for e in runs.iter().flatten() {
            if merged.get(&e.key).map_or(true, |cur| cur.seq < e.seq) {
                merged.insert(e.key.clone(), e.clone());
            }
        }
        merged.into_values().filter(|e| !(drop_tombstones && e.value.is_none())).collect()
    }

    /// The reference cut: consecutive runs of about `target_bytes` of keys and values each.
    fn split_runs(entries: Vec<Entry>, target_bytes: usize) -> Vec<Vec<Entry>> {
        let mut runs = Vec::new();
        let mut cur = Vec::new();
        let mut bytes = 0;
        for e in entries {
            bytes += e.key.len() + e.value.as_ref().map_or(0, Vec::len) + 24;
            cur.push(e);
            if bytes >= target_bytes {
                runs.push(std::mem::take(&mut cur));
                bytes = 0;
            }
        }
        if !cur.is_empty() {
            runs.push(cur);
        }
        runs
    }

    fn tables(dir: &std::path::Path, runs: &[Vec<Entry>], opts: BuildOptions) -> Vec<Table> {
        runs.iter().enumerate().map(|(i, run)| sstable::write_table(dir, i as u64 + 1, run, opts).unwrap().0).collect()
    }

    fn merged(tables: &[&Table], drop_tombstones: bool) -> Vec<Entry> {
        let mut merge = MergeNewest::new(tables, drop_tombstones).unwrap();
        let mut out = Vec::new();
        while let Some((entry, _)) = merge.next_entry().unwrap() {
            out.push(entry.to_entry());
        }
        out
    }

    #[test]
    fn newest_wins_and_tombstones_drop() {
        let dir = tempfile::tempdir().unwrap();
        let runs =
            vec![vec![e("a", 1, Some("old")), e("b", 2, Some("b"))], vec![e("a", 5, None), e("c", 3, Some("c"))]];
        let t = tables(dir.path(), &runs, BuildOptions::default());
        let refs: Vec<&Table> = t.iter().collect();
        assert_eq!(merged(&refs, false), vec![e("a", 5, None), e("b", 2, Some("b")), e("c", 3, Some("c"))]);
        assert_eq!(merged(&refs, true), vec![e("b", 2, Some("b")), e("c", 3, Some("c"))]);
        assert_eq!(merged(&[], true), Vec::<Entry>::new());
    }

    #[test]
    fn disjoint_tables_share_a_chain() {
        let dir = tempfile::tempdir().unwrap();
        let runs = vec![
            vec![e("m", 1, Some("x")), e("p", 1, Some("x"))],
            vec![e("a", 1, Some("x")), e("c", 1, Some("x"))],
            vec![e("b", 2, Some("y")), e("z", 2, Some("y"))],
            vec![e("d", 1, Some("x")), e("e", 1, Some("x"))],
            Vec::new(),
        ];
        let t = tables(dir.path(), &runs, BuildOptions::default());
        let refs: Vec<&Table> = t.iter().collect();
        let c = chains(&refs);
        let ids: Vec<Vec<u64>> = c.iter().map(|c| c.iter().map(|t| t.id()).collect()).collect();
        assert_eq!(ids, vec![vec![2, 4, 1], vec![3]]);
        assert_eq!(merged(&refs, false), merge_newest(&runs, false));
    }

    /// Random overlapping tables (tiny blocks, so many per table): the merge and the cut match
    /// the reference, and the output tables hold exactly the reference runs.
    #[test]
    fn matches_the_reference_merge_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut rand = crate::storage::lsm::test_rand(0x2545_f491_4f6c_dd1du64);
        let opts = BuildOptions { block_bytes: 64, bloom_bits_per_key: 10, pacing: Pacing::NONE };
        let mut seq = 0;
        for round in 0..30u64 {
            let sources = 1 + rand(6) as usize;
            let runs: Vec<Vec<Entry>> = (0..sources)
                .map(|_| {
                    let mut run: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
                    let spread = 1 + rand(300);
                    let offset = rand(200);
                    for _ in 0..rand(120) {
                        seq += 1;
                        let key = format!("k{:04}", offset + rand(spread)).into_bytes();
                        let value = (rand(4) != 0).then(|| vec![b'v'; rand(40) as usize]);
                        run.insert(key.clone(), Entry { key, seq, value });
                    }
                    run.into_values().collect()
                })
                .collect();
            let sub = dir.path().join(round.to_string());
            std::fs::create_dir(&sub).unwrap();
            let t = tables(&sub, &runs, opts);
            let refs: Vec<&Table> = t.iter().collect();
            for drop_tombstones in [false, true] {
                let want = merge_newest(&runs, drop_tombstones);
                assert_eq!(merged(&refs, drop_tombstones), want);
                for table_bytes in [0, 1, 100, 700, usize::MAX] {
                    let mut images = Vec::new();
                    merge_into_tables(&refs, drop_tombstones, table_bytes, &mut GrandparentCut::none(), opts, |b| {
                        images.push(b.finish().unwrap());
                        Ok(())
                    })
                    .unwrap();
                    let cut = split_runs(want.clone(), table_bytes);
                    assert_eq!(images.len(), cut.len());
                    for (image, run) in images.iter().zip(&cut) {
                        assert!(
                            image.as_slice() == crate::storage::lsm::format::build_table(run, opts).unwrap().as_slice()
                        );
                    }
                }
            }
        }
    }

    /// Random inputs over a random grandparent level: the outputs still hold the reference
    /// merge in order, and each output table overlaps at most the limit plus one grandparent
    /// (the one its last key falls in or before).
    #[test]
    fn grandparents_bound_each_output_tables_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let mut rand = crate::storage::lsm::test_rand(0x9e37_79b9_7f4a_7c15u64);
        let opts = BuildOptions { block_bytes: 64, bloom_bits_per_key: 10, pacing: Pacing::NONE };
        let (mut seq, mut cuts) = (0, 0);
        for round in 0..20u64 {
            let sub = dir.path().join(round.to_string());
            std::fs::create_dir(&sub).unwrap();
            // The grandparent level: disjoint tables of 1 to 20 keys each over k0000..k2000.
            let mut grand_runs = Vec::new();
            let mut at = rand(20);
            while at < 2000 {
                let run: Vec<Entry> = (0..1 + rand(20))
                    .map(|i| e(&format!("k{:04}", at + 3 * i), 1, Some("grandparent value")))
                    .collect();
                at += 3 * run.len() as u64 + 1 + rand(40);
                grand_runs.push(run);
            }
            let grand_dir = sub.join("grand");
            std::fs::create_dir(&grand_dir).unwrap();
            let grand = tables(&grand_dir, &grand_runs, opts);
            let largest = grand.iter().map(Table::file_bytes).max().unwrap();
            let runs: Vec<Vec<Entry>> = (0..1 + rand(4))
                .map(|_| {
                    let mut run: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
                    for _ in 0..rand(600) {
                        seq += 1;
                        let key = format!("k{:04}", rand(2000)).into_bytes();
                        run.insert(key.clone(), Entry { key, seq, value: Some(vec![b'v'; rand(30) as usize]) });
                    }
                    run.into_values().collect()
                })
                .collect();
            let t = tables(&sub, &runs, opts);
            let refs: Vec<&Table> = t.iter().collect();
            let limit = largest * (1 + rand(4));
            let table_bytes = [usize::MAX, 2000][rand(2) as usize];
            let mut cut = GrandparentCut::new(grand.iter().collect(), limit);
            let mut outputs: Vec<Vec<Entry>> = Vec::new();
            merge_into_tables(&refs, false, table_bytes, &mut cut, opts, |b| {
                let image = b.finish().unwrap();
                let id = 10_000 + outputs.len() as u64;
                std::fs::write(sub.join(sstable::file_name(id)), image.as_slice()).unwrap();
                outputs.push(Table::open(&sub.join(sstable::file_name(id)), id).unwrap().entries().unwrap());
                Ok(())
            })
            .unwrap();
            assert_eq!(outputs.concat(), merge_newest(&runs, false), "round {round}");
            for out in &outputs {
                let (first, last) = (&out[0].key, &out[out.len() - 1].key);
                let spanned: u64 = grand
                    .iter()
                    .filter(|g| g.key_range().is_some_and(|(lo, hi)| hi >= first.as_slice() && lo <= last.as_slice()))
                    .map(Table::file_bytes)
                    .sum();
                assert!(spanned <= limit + largest, "round {round}: {spanned} > {limit} + {largest}");
            }
            cuts += cut.cuts;
        }
        assert!(cuts > 20, "the grandparents cut only {cuts} tables");
    }

    #[test]
    fn out_of_order_input_is_corrupt() {
        // Two tables whose ranges overlap only in the index's view: the chain check catches a
        // table whose keys go backwards (simulated by chaining overlapping tables by hand).
        let dir = tempfile::tempdir().unwrap();
        let runs = vec![vec![e("a", 1, Some("x")), e("c", 1, Some("x"))], vec![e("b", 2, Some("y"))]];
        let t = tables(dir.path(), &runs, BuildOptions::default());
        let mut chain = Chain::new(vec![&t[0], &t[1]]).unwrap();
        assert_eq!(chain.head().map(|h| h.key), Some(&b"a"[..]));
        chain.advance().unwrap();
        assert_eq!(chain.head().map(|h| h.key), Some(&b"c"[..]));
        assert!(chain.advance().unwrap_err().is_corrupt());
        // The same through the merge: the error ends it.
        let refs = [&t[0], &t[1]];
        let mut merge = MergeNewest {
            chains: vec![Chain::new(refs.to_vec()).unwrap()],
            drop_tombstones: false,
            returned_from: Vec::new(),
            failed: false,
        };
        assert!(merge.next_entry().unwrap().is_some());
        assert!(merge.next_entry().unwrap().is_some());
        assert!(merge.next_entry().unwrap_err().is_corrupt());
        assert!(merge.next_entry().unwrap().is_none(), "nothing after an error");
    }
}
