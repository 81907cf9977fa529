//! The mutable head of the store: an ordered map from byte keys to the newest versioned value,
//! on crossbeam-skiplist. A value of `None` is a tombstone (a delete that must shadow older
//! versions in SSTables until compaction drops it). Writes carry a sequence number; a write
//! never replaces a newer one already present.
//!
//! Partitions: with a separator byte, the keys are split by their prefix through its first
//! occurrence (the whole key where it has none), one partition per prefix. The server's
//! history keys are a series (a kind and a name, then a 0) followed by times, so each series
//! gets its own partition and nearly every write goes to the end of one. A partition appends
//! such a write to a sorted run without any search; a write that lands before the run's end
//! goes to the partition's skiplist (`Partition`). Before, every write descended a skiplist,
//! and that search was the largest single cost of a busy shard (docs/PERFORMANCE.md
//! "Appends without a search"). Ordering the partitions by prefix orders all keys, so a scan or a
//! flush reads them one after the other: two prefixes that end at a separator are never a
//! proper prefix of one another (each ends at its first one), so they differ at a byte inside
//! both, which orders their keys too; a key without a separator is alone in its partition,
//! and it either differs from another prefix inside both or is a proper prefix of it (then it
//! sorts before every key of that partition).

use crate::domain::fast_hash::FastMap;
use crate::storage::lsm::Entry;
use crossbeam_skiplist::SkipMap;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Bytes charged per entry on top of key and value: skiplist node, tower, sequence number.
const ENTRY_OVERHEAD: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Versioned {
    seq: u64,
    value: Option<Vec<u8>>,
}

fn charge(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
}

/// A memtable key. Short keys (every key the server writes: series, a name, one or two 8-byte
/// numbers) live in the skiplist node itself, so each comparison on an insert's search path
/// reads the node it is at, not a second cache line behind a pointer; longer keys go to the
/// heap. The search was ~15 % of a busy shard's CPU (docs/PERFORMANCE.md).
#[derive(Clone)]
enum MemKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY_BYTES] },
    Heap(Box<[u8]>),
}

/// Longest key kept in the node: the enum is then 48 bytes.
const INLINE_KEY_BYTES: usize = 46;

impl MemKey {
    fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_KEY_BYTES {
            let mut bytes = [0; INLINE_KEY_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            MemKey::Inline { len: key.len() as u8, bytes }
        } else {
            MemKey::Heap(key.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            MemKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            MemKey::Heap(bytes) => bytes,
        }
    }
}

// Ordered, compared and borrowed as the bytes, so `SkipMap` lookups by `&[u8]` agree with the
// order of inserts.
impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for MemKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for MemKey {}

impl std::borrow::Borrow<[u8]> for MemKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Entries of a run chunk: appends never move more than one chunk, so a long run never
/// copies itself to grow (a `Vec` doubling would copy megabytes in one write).
const RUN_CHUNK: usize = 256;

/// One partition's keys, each in exactly one of two sorted places:
/// - `run`: keys that arrived in order (each after the partition's last one), appended
///   without a search. History series are written in time order, so nearly every write of
///   a series goes here; the skiplist search it replaces was the largest single cost of a
///   busy shard (docs/PERFORMANCE.md "Appends without a search").
/// - `list`: the crossbeam skiplist, for a key that arrives before the run's last and is not
///   in the run (an order written when it finishes, after newer ones did).
///
/// A key goes to the list only when it is below the run's last key, and the run's last key
/// only grows, so every list key stays below it: a key above it is in neither place yet.
#[derive(Default)]
struct Partition {
    run: Vec<Vec<(MemKey, Versioned)>>,
    list: SkipMap<MemKey, Versioned>,
}

impl Partition {
    fn run_last(&self) -> Option<&(MemKey, Versioned)> {
        self.run.last().and_then(|chunk| chunk.last())
    }

    /// Where `key` is in the run: `Ok` its (chunk, index), `Err` the (chunk, index) the first
    /// greater key has (one past the end when none).
    fn run_search(&self, key: &[u8]) -> Result<(usize, usize), (usize, usize)> {
        let chunk = self.run.partition_point(|c| c.last().is_some_and(|(k, _)| k.as_slice() < key));
        let Some(entries) = self.run.get(chunk) else { return Err((chunk, 0)) };
        entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)).map(|i| (chunk, i)).map_err(|i| (chunk, i))
    }

    /// The run's entries from (chunk, index) on, in key order.
    fn run_from(&self, (chunk, index): (usize, usize)) -> impl Iterator<Item = &(MemKey, Versioned)> + '_ {
        let mut chunks = self.run.iter().skip(chunk);
        let first = chunks.next().map_or(&[][..], |c| &c[index.min(c.len())..]);
        first.iter().chain(chunks.flatten())
    }

    fn len(&self) -> usize {
        self.run.iter().map(Vec::len).sum::<usize>() + self.list.len()
    }

    fn is_empty(&self) -> bool {
        self.run.is_empty() && self.list.is_empty()
    }

    /// The entry for `key`.
    fn get(&self, key: &[u8]) -> Option<(u64, Option<Vec<u8>>)> {
        if let Ok((c, i)) = self.run_search(key) {
            let v = &self.run[c][i].1;
            return Some((v.seq, v.value.clone()));
        }
        let e = self.list.get(key)?;
        Some((e.value().seq, e.value().value.clone()))
    }

    /// The run's entries with keys in `(lo, hi)`, in key order.
    fn run_range<'a>(
        &'a self,
        lo: Bound<&[u8]>,
        hi: Bound<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a [u8], &'a Versioned)> + 'a {
        let start = match lo {
            Bound::Unbounded => (0, 0),
            Bound::Included(a) => self.run_search(a).unwrap_or_else(|at| at),
            Bound::Excluded(a) => match self.run_search(a) {
                Ok((c, i)) => (c, i + 1),
                Err(at) => at,
            },
        };
        self.run_from(start).map(|(k, v)| (k.as_slice(), v)).take_while(move |(k, _)| match hi {
            Bound::Unbounded => true,
            Bound::Included(b) => *k <= b,
            Bound::Excluded(b) => *k < b,
        })
    }

    /// The entries with keys in `(lo, hi)`, in key order: the run and the list merged (they
    /// never hold the same key).
    fn range<'a>(&'a self, lo: Bound<&'a [u8]>, hi: Bound<&'a [u8]>) -> Merged<'a, impl Iterator<Item = RunItem<'a>>> {
        Merged { run: self.run_range(lo, hi).peekable(), list: self.list.range::<[u8], _>((lo, hi)).peekable() }
    }

    /// Every entry, owned, in key order.
    fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.range(Bound::Unbounded, Bound::Unbounded).map(|e| Entry {
            key: e.key().to_vec(),
            seq: e.value().seq,
            value: e.value().value.clone(),
        })
    }

    /// Inserts unless the key holds a newer sequence number. Returns (took effect, bytes
    /// added, bytes removed).
    fn put(&mut self, key: &[u8], seq: u64, value: Option<Vec<u8>>) -> (bool, usize, usize) {
        let added = charge(key, &value);
        let appends = self.run_last().map_or(true, |(last, _)| last.as_slice() < key);
        if appends {
            if self.run.last().map_or(true, |c| c.len() == RUN_CHUNK) {
                self.run.push(Vec::with_capacity(RUN_CHUNK));
            }
            if let Some(chunk) = self.run.last_mut() {
                chunk.push((MemKey::new(key), Versioned { seq, value }));
            }
            return (true, added, 0);
        }
        if let Ok((c, i)) = self.run_search(key) {
            let cur = &mut self.run[c][i].1;
            if cur.seq > seq {
                return (false, 0, 0);
            }
            let removed = charge(key, &cur.value);
            *cur = Versioned { seq, value };
            return (true, added, removed);
        }
        // One search of the skiplist: the comparison sees the entry it would replace, so its
        // charge is known without a lookup first.
        let replaced: Cell<Option<usize>> = Cell::new(None);
        let entry = self.list.compare_insert(MemKey::new(key), Versioned { seq, value }, |cur| {
            let newer_or_same = cur.seq <= seq;
            replaced.set(newer_or_same.then(|| charge(key, &cur.value)));
            newer_or_same
        });
        if entry.value().seq != seq {
            return (false, 0, 0);
        }
        (true, added, replaced.get().unwrap_or(0))
    }
}

/// An entry of a partition's run.
type RunItem<'a> = (&'a [u8], &'a Versioned);

/// An entry of a partition, from its run or its skiplist.
enum Item<'a> {
    Run(RunItem<'a>),
    List(crossbeam_skiplist::map::Entry<'a, MemKey, Versioned>),
}

impl Item<'_> {
    fn key(&self) -> &[u8] {
        match self {
            Item::Run((k, _)) => k,
            Item::List(e) => e.key().as_slice(),
        }
    }

    fn value(&self) -> &Versioned {
        match self {
            Item::Run((_, v)) => v,
            Item::List(e) => e.value(),
        }
    }
}

/// A range of a partition's skiplist.
type ListRange<'a> = crossbeam_skiplist::map::Range<'a, [u8], (Bound<&'a [u8]>, Bound<&'a [u8]>), MemKey, Versioned>;

/// A partition's run and skiplist ranges merged by key.
struct Merged<'a, R: Iterator<Item = RunItem<'a>>> {
    run: std::iter::Peekable<R>,
    list: std::iter::Peekable<ListRange<'a>>,
}

impl<'a, R: Iterator<Item = RunItem<'a>>> Iterator for Merged<'a, R> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let list_first = match (self.run.peek(), self.list.peek()) {
            (Some((run_key, _)), Some(e)) => e.key().as_slice() < *run_key,
            (None, list) => list.is_some(),
            (Some(_), None) => false,
        };
        if list_first {
            self.list.next().map(Item::List)
        } else {
            self.run.next().map(Item::Run)
        }
    }
}

/// The memtable: one partition (a sorted run and a skiplist) per key prefix (one, with the
/// empty prefix, when not partitioned).
pub struct Memtable {
    parts: Vec<Partition>,
    /// A write finds its partition by hash (cheaper than a tree's comparisons)...
    by_prefix: FastMap<Box<[u8]>, usize>,
    /// ...and a scan or a flush visits the partitions in prefix order.
    in_order: BTreeMap<Box<[u8]>, usize>,
    separator: Option<u8>,
    bytes: usize,
    max_seq: u64,
}

impl Default for Memtable {
    fn default() -> Self {
        Self::new()
    }
}

impl Memtable {
    /// One partition for all keys.
    pub fn new() -> Self {
        Self::partitioned(None)
    }

    /// One partition per key prefix through the first `separator` (see the module's doc);
    /// `None`: one for all keys.
    pub fn partitioned(separator: Option<u8>) -> Self {
        Memtable {
            parts: Vec::new(),
            by_prefix: FastMap::default(),
            in_order: BTreeMap::new(),
            separator,
            bytes: 0,
            max_seq: 0,
        }
    }

    fn prefix<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        match self.separator {
            None => &[],
            Some(sep) => key.iter().position(|&b| b == sep).map_or(key, |at| &key[..=at]),
        }
    }

    /// Inserts `value` (`None`: tombstone) at `seq` unless the key already holds a newer
    /// sequence number. Returns whether the write took effect.
    pub fn put(&mut self, key: &[u8], seq: u64, value: Option<Vec<u8>>) -> bool {
        let prefix = self.prefix(key);
        let at = match self.by_prefix.get(prefix) {
            Some(&at) => at,
            None => {
                let at = self.parts.len();
                self.parts.push(Partition::default());
                self.by_prefix.insert(prefix.into(), at);
                self.in_order.insert(prefix.into(), at);
                at
            }
        };
        let (took, added, removed) = self.parts[at].put(key, seq, value);
        if took {
            self.bytes = self.bytes + added - removed;
            self.max_seq = self.max_seq.max(seq);
        }
        took
    }

    /// The newest version of `key`: `Some((seq, None))` is a tombstone, `None` means unknown
    /// here (look further down).
    pub fn get(&self, key: &[u8]) -> Option<(u64, Option<Vec<u8>>)> {
        self.parts[*self.by_prefix.get(self.prefix(key))?].get(key)
    }

    /// Visits the entries with keys in `(lo, hi)`, in key order, tombstones included, while
    /// `f` returns true.
    pub fn scan(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>, mut f: impl FnMut(&[u8], u64, Option<&[u8]>) -> bool) {
        if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) = (lo, hi) {
            // SkipMap::range panics on an inverted range; an inverted range is simply empty.
            if a > b || (a == b && !(matches!(lo, Bound::Included(_)) && matches!(hi, Bound::Included(_)))) {
                return;
            }
        }
        // A partition's keys all start with its prefix: past `hi` once the prefix is, and
        // before `lo` when the prefix is and `lo` does not start with it.
        let beyond_hi = |p: &[u8]| match hi {
            Bound::Included(b) | Bound::Excluded(b) => p > b,
            Bound::Unbounded => false,
        };
        let before_lo = |p: &[u8]| match lo {
            Bound::Included(a) | Bound::Excluded(a) => p < a && !a.starts_with(p),
            Bound::Unbounded => false,
        };
        for (prefix, &at) in &self.in_order {
            if beyond_hi(prefix) {
                return;
            }
            if before_lo(prefix) {
                continue;
            }
            for e in self.parts[at].range(lo, hi) {
                let v = e.value();
                if !f(e.key(), v.seq, v.value.as_deref()) {
                    return;
                }
            }
        }
    }

    /// Every entry in key order (one version per key, tombstones included).
    fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.in_order.values().flat_map(|&at| self.parts[at].entries())
    }

    /// Approximate memory held, in bytes (keys, values and a fixed per-entry overhead).
    pub fn approximate_bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(Partition::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(Partition::is_empty)
    }

    /// Highest sequence number written (0 when empty).
    pub fn max_seq(&self) -> u64 {
        self.max_seq
    }

    /// Ends the memtable's mutable life: what is left can only be read, in key order, to be
    /// flushed into an SSTable.
    pub fn freeze(self) -> FrozenMemtable {
        FrozenMemtable { inner: self }
    }
}

/// A memtable that takes no more writes, waiting to be flushed.
pub struct FrozenMemtable {
    inner: Memtable,
}

impl FrozenMemtable {
    /// All entries in key order (one version per key, tombstones included).
    pub fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        self.inner.entries()
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub fn max_seq(&self) -> u64 {
        self.inner.max_seq()
    }

    pub fn approximate_bytes(&self) -> usize {
        self.inner.approximate_bytes()
    }

    /// Makes it writable again (a flush that failed keeps its data in memory).
    pub fn thaw(self) -> Memtable {
        self.inner
    }

    /// Point read while the flush is in progress.
    pub fn get(&self, key: &[u8]) -> Option<(u64, Option<Vec<u8>>)> {
        self.inner.get(key)
    }

    /// Range read while the flush is in progress.
    pub fn scan(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>, f: impl FnMut(&[u8], u64, Option<&[u8]>) -> bool) {
        self.inner.scan(lo, hi, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_sequence_wins_and_size_tracks() {
        let mut m = Memtable::new();
        assert!(m.put(b"a", 2, Some(b"two".to_vec())));
        assert!(!m.put(b"a", 1, Some(b"one".to_vec())));
        assert_eq!(m.get(b"a"), Some((2, Some(b"two".to_vec()))));
        let size = m.approximate_bytes();
        assert_eq!(size, 1 + 3 + ENTRY_OVERHEAD);
        assert!(m.put(b"a", 3, None));
        assert_eq!(m.get(b"a"), Some((3, None)));
        assert_eq!(m.approximate_bytes(), 1 + ENTRY_OVERHEAD);
        assert!(m.put(b"b", 4, Some(vec![0; 10])));
        assert_eq!(m.max_seq(), 4);
        let frozen = m.freeze();
        let all: Vec<Entry> = frozen.iter().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], Entry { key: b"a".to_vec(), seq: 3, value: None });
        assert_eq!(all[1].key, b"b".to_vec());
    }

    #[test]
    fn scan_bounds_and_inverted_ranges() {
        let mut m = Memtable::new();
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            m.put(*k, i as u64 + 1, Some(vec![i as u8]));
        }
        let mut seen = Vec::new();
        m.scan(Bound::Included(b"b"), Bound::Excluded(b"d"), |k, _, _| {
            seen.push(k.to_vec());
            true
        });
        assert_eq!(seen, vec![b"b".to_vec(), b"c".to_vec()]);
        seen.clear();
        m.scan(Bound::Included(b"d"), Bound::Included(b"a"), |k, _, _| {
            seen.push(k.to_vec());
            true
        });
        m.scan(Bound::Excluded(b"b"), Bound::Excluded(b"b"), |k, _, _| {
            seen.push(k.to_vec());
            true
        });
        m.scan(Bound::Included(b"b"), Bound::Excluded(b"b"), |k, _, _| {
            seen.push(k.to_vec());
            true
        });
        assert!(seen.is_empty());
        m.scan(Bound::Included(b"b"), Bound::Included(b"b"), |k, _, _| {
            seen.push(k.to_vec());
            true
        });
        assert_eq!(seen, vec![b"b".to_vec()]);
    }

    #[test]
    fn short_and_long_keys_keep_byte_order() {
        short_and_long_keys_keep_byte_order_in(Memtable::new());
    }

    /// Mostly appends (series written in time order), some keys before the run's end (to the
    /// skiplist), rewrites of keys in either place with newer and older sequence numbers, and
    /// tombstones: reads, scans, the flush order and the byte count are the model's.
    #[test]
    fn runs_and_skiplists_agree_with_a_btreemap() {
        for separator in [Some(0), None] {
            let mut m = Memtable::partitioned(separator);
            let mut model: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)> = BTreeMap::new();
            let mut x = 99u64;
            let mut next = || {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                x >> 33
            };
            let mut clocks = [0u64; 5];
            for seq in 1..=20_000u64 {
                let series = next() as usize % clocks.len();
                let roll = next() % 100;
                let time = if roll < 80 {
                    clocks[series] += 1 + next() % 3;
                    clocks[series]
                } else {
                    // Back in time: a new key before the series' end, or (often) an old one.
                    clocks[series].saturating_sub(next() % 50)
                };
                let mut key = vec![b'S', b'0' + series as u8, 0];
                key.extend_from_slice(&time.to_be_bytes());
                // Sequence numbers mostly rise; some writes come with an older one and lose
                // to a newer version already there.
                let seq = if roll % 10 == 7 { seq.saturating_sub(next() % 100).max(1) } else { seq };
                let value = if roll % 13 == 0 { None } else { Some(vec![roll as u8; (next() % 40) as usize]) };
                let wins = model.get(&key).map_or(true, |(old, _)| *old <= seq);
                assert_eq!(m.put(&key, seq, value.clone()), wins, "seq {seq}");
                if wins {
                    model.insert(key, (seq, value));
                }
            }
            let run: usize = m.parts.iter().flat_map(|p| &p.run).map(Vec::len).sum();
            let listed: usize = m.parts.iter().map(|p| p.list.len()).sum();
            assert!(run > 1_000 && listed > 1_000, "{run} in runs, {listed} in skiplists");
            for (key, (seq, value)) in &model {
                assert_eq!(m.get(key), Some((*seq, value.clone())));
            }
            let mut absent = vec![b'S', b'0', 0];
            absent.extend_from_slice(&u64::MAX.to_be_bytes());
            assert_eq!(m.get(&absent), None);
            let bytes: usize = model.iter().map(|(k, (_, v))| charge(k, v)).sum();
            assert_eq!(m.approximate_bytes(), bytes);
            assert_eq!(m.len(), model.len());
            let keys: Vec<&Vec<u8>> = model.keys().collect();
            for i in 0..500usize {
                let (a, b) = (keys[next() as usize % keys.len()], keys[next() as usize % keys.len()]);
                let (a, b) = (a.min(b).as_slice(), a.max(b).as_slice());
                let lo = if i % 2 == 0 { Bound::Included(a) } else { Bound::Excluded(a) };
                let hi = match i % 5 {
                    0 => Bound::Unbounded,
                    1 | 2 => Bound::Included(b),
                    _ => Bound::Excluded(b),
                };
                if a == b && matches!((lo, hi), (Bound::Excluded(_), Bound::Excluded(_))) {
                    continue;
                }
                let limit = 1 + next() as usize % 200;
                let mut got = Vec::new();
                m.scan(lo, hi, |k, seq, v| {
                    got.push((k.to_vec(), seq, v.map(<[u8]>::to_vec)));
                    got.len() < limit
                });
                let want: Vec<_> = model
                    .range::<[u8], _>((lo, hi))
                    .take(limit)
                    .map(|(k, (s, v))| (k.clone(), *s, v.clone()))
                    .collect();
                assert_eq!(got, want, "scan {lo:?} {hi:?} limit {limit}");
            }
            let flushed: Vec<Entry> = m.freeze().iter().collect();
            let want: Vec<Entry> = model.into_iter().map(|(key, (seq, value))| Entry { key, seq, value }).collect();
            assert_eq!(flushed, want);
        }
    }

    /// The same with one partition per prefix through the first 1 byte (the keys are made of
    /// 'k', 0, 1 and 2: some have no separator, many share a prefix), and scans between random
    /// bounds, which must skip and visit partitions as the bytes order them.
    #[test]
    fn partitions_keep_byte_order() {
        let m = short_and_long_keys_keep_byte_order_in(Memtable::partitioned(Some(1)));
        assert!(m.parts.len() > 100, "{} partitions", m.parts.len());
    }

    fn short_and_long_keys_keep_byte_order_in(mut m: Memtable) -> Memtable {
        // Keys on both sides of the inline limit, many sharing prefixes (a short key that is a
        // prefix of a long one included): the memtable's order, lookups and scans must be
        // those of the bytes.
        let mut model = std::collections::BTreeMap::new();
        let mut x = 12345u64;
        for seq in 1..=2_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (x >> 33) as usize % (2 * INLINE_KEY_BYTES + 2);
            let key: Vec<u8> = (0..len).map(|i| if i < len / 2 { b'k' } else { (x >> (i % 50)) as u8 % 3 }).collect();
            m.put(&key, seq, Some(seq.to_be_bytes().to_vec()));
            model.insert(key, seq);
        }
        let mut scanned = Vec::new();
        m.scan(Bound::Unbounded, Bound::Unbounded, |k, seq, _| {
            scanned.push((k.to_vec(), seq));
            true
        });
        let expected: Vec<(Vec<u8>, u64)> = model.iter().map(|(k, &s)| (k.clone(), s)).collect();
        assert_eq!(scanned, expected);
        for (key, &seq) in &model {
            assert_eq!(m.get(key), Some((seq, Some(seq.to_be_bytes().to_vec()))));
        }
        // A key just past the inline limit, absent or present, answers as the model does.
        let probe = [b'k'; INLINE_KEY_BYTES + 1];
        assert_eq!(m.get(&probe).map(|(seq, _)| seq), model.get(&probe[..]).copied());
        let keys: Vec<&Vec<u8>> = model.keys().collect();
        for i in 0..300usize {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let (a, b) = (keys[(x >> 20) as usize % keys.len()], keys[(x >> 40) as usize % keys.len()]);
            let (a, b) = (a.min(b).as_slice(), a.max(b).as_slice());
            // Bounds that are keys, and (every third) a key cut short, which may be no key.
            let a = if i % 3 == 0 { &a[..a.len() / 2] } else { a };
            let lo = if i % 2 == 0 { Bound::Included(a) } else { Bound::Excluded(a) };
            let hi = if i % 4 < 2 { Bound::Included(b) } else { Bound::Excluded(b) };
            let hi = if i % 7 == 0 { Bound::Unbounded } else { hi };
            if a == b && matches!((lo, hi), (Bound::Excluded(_), Bound::Excluded(_))) {
                continue; // BTreeMap::range refuses it (the memtable answers nothing)
            }
            let mut got = Vec::new();
            m.scan(lo, hi, |k, _, _| {
                got.push(k.to_vec());
                true
            });
            let want: Vec<Vec<u8>> = model.range::<[u8], _>((lo, hi)).map(|(k, _)| k.clone()).collect();
            assert_eq!(got, want, "scan {lo:?} {hi:?}");
        }
        let frozen = m.freeze();
        let keys: Vec<Vec<u8>> = frozen.iter().map(|e| e.key).collect();
        assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>());
        frozen.thaw()
    }
}
