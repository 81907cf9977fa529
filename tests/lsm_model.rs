//! The history store's storage engine (`storage::lsm`) against a model.
//!
//! Model-based property test: random puts, deletes, gets, range scans, flushes, compactions
//! and simulated crashes drive a `Store` and a `BTreeMap`; every read must match the model.
//! Crash semantics tested: the store has no log of its own, so a crash (dropping the store and
//! reopening the directory) loses exactly the writes since the last successful flush; the model
//! keeps the state as of the last flush (`durable`) and falls back to it. Crashes may also
//! leave debris an interrupted flush or compaction would leave (a `.tmp` table, a `.tmp`
//! manifest, a complete table the manifest never listed): reopening must remove it and never
//! serve it.
//!
//! Corruption tests: truncated and half-written tables, bit flips in a data block, the index,
//! the filter and the footer, and a table named in the manifest that is missing.

use proptest::prelude::*;
use qaexchange::storage::lsm::format::{BuildOptions, Footer, FOOTER_LEN};
use qaexchange::storage::lsm::fsio::WriteMode;
use qaexchange::storage::lsm::sstable::{self, Table};
use qaexchange::storage::lsm::{Entry, Store, StoreOptions};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

fn small_options() -> StoreOptions {
    // Tiny blocks and tables so a few dozen keys span many blocks and several level-1 tables.
    StoreOptions {
        build: BuildOptions { block_bytes: 64, bloom_bits_per_key: 10 },
        memtable_bytes: 1 << 20,
        table_bytes: 200,
    }
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
    Flush,
    Compact,
    Crash,
    CrashWithDebris,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0u8..40, proptest::collection::vec(any::<u8>(), 0..24)).prop_map(|(k, v)| Op::Put(k, v)),
        3 => (0u8..40).prop_map(Op::Delete),
        6 => (0u8..45).prop_map(Op::Get),
        3 => (proptest::option::of(0u8..45), proptest::option::of(0u8..45), any::<bool>()).prop_map(|(a, b, i)| Op::Range(a, b, i)),
        3 => Just(Op::Flush),
        2 => Just(Op::Compact),
        1 => Just(Op::Crash),
        1 => Just(Op::CrashWithDebris),
    ]
}

fn model_range(m: &BTreeMap<Vec<u8>, Vec<u8>>, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
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

fn leave_debris(dir: &Path) {
    std::fs::write(dir.join("00000000000f0000.sst.tmp"), b"half a table").unwrap();
    std::fs::write(dir.join("MANIFEST.tmp"), b"half a manifest").unwrap();
    // A complete, valid table no manifest lists (a flush that crashed before the manifest
    // rename), holding versions that would break the model if served.
    let ghosts: Vec<Entry> =
        (0u8..40).map(|i| Entry { key: key(i), seq: u64::MAX - 1, value: Some(b"ghost".to_vec()) }).collect();
    let mut sorted = ghosts;
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    sstable::write_table(dir, 0xf0001, &sorted, BuildOptions::default()).unwrap();
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), small_options()).unwrap();
    let mut live: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut durable = live.clone();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                store.put(&key(k), &v);
                live.insert(key(k), v);
            }
            Op::Delete(k) => {
                store.delete(&key(k));
                live.remove(&key(k));
            }
            Op::Get(k) => {
                prop_assert_eq!(store.get(&key(k)).unwrap(), live.get(&key(k)).cloned(), "get {:?}", key(k));
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
                prop_assert_eq!(store.range(lo, hi).unwrap(), model_range(&live, lo, hi));
            }
            Op::Flush => {
                store.flush().unwrap();
                durable = live.clone();
            }
            Op::Compact => {
                let before = store.stats();
                store.compact().unwrap();
                let after = store.stats();
                prop_assert_eq!(after.tables[0], 0);
                prop_assert_eq!(after.memtable_entries, before.memtable_entries);
            }
            Op::Crash | Op::CrashWithDebris => {
                drop(store);
                if matches!(op, Op::CrashWithDebris) {
                    leave_debris(dir.path());
                }
                let (reopened, report) = Store::open(dir.path(), small_options()).unwrap();
                if matches!(op, Op::CrashWithDebris) {
                    prop_assert_eq!(report.removed_temporaries, 2);
                    prop_assert_eq!(report.removed_orphans, 1);
                }
                store = reopened;
                live = durable.clone();
                prop_assert_eq!(
                    store.range(Bound::Unbounded, Bound::Unbounded).unwrap(),
                    model_range(&live, Bound::Unbounded, Bound::Unbounded)
                );
            }
        }
    }
    // Whatever happened, a flush, a compaction and a reopen agree with the model.
    store.flush().unwrap();
    store.compact().unwrap();
    drop(store);
    let (store, _) = Store::open(dir.path(), small_options()).unwrap();
    let all = store.range(Bound::Unbounded, Bound::Unbounded).unwrap();
    prop_assert_eq!(all, model_range(&live, Bound::Unbounded, Bound::Unbounded));
    for i in 0u8..45 {
        prop_assert_eq!(store.get(&key(i)).unwrap(), live.get(&key(i)).cloned());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_btreemap(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
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
    assert!(table.scan(Bound::Unbounded, Bound::Unbounded, |_, _, _| {}).unwrap_err().is_corrupt());
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
