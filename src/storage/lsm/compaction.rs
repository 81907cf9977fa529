//! Pure merge logic of compaction: combine sorted runs into one, keeping the newest version
//! (highest sequence number) of each key, optionally dropping tombstones (allowed only when
//! the output is the bottom level for its key range), and cut the result into table-sized runs.

use crate::storage::lsm::Entry;
use std::collections::BTreeMap;

/// Merges `runs` (any order) keeping the highest-`seq` version per key, sorted by key.
pub fn merge_newest(runs: Vec<Vec<Entry>>, drop_tombstones: bool) -> Vec<Entry> {
    let mut merged: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
    for e in runs.into_iter().flatten() {
        match merged.get(&e.key) {
            Some(cur) if cur.seq >= e.seq => {}
            _ => {
                merged.insert(e.key.clone(), e);
            }
        }
    }
    merged.into_values().filter(|e| !(drop_tombstones && e.value.is_none())).collect()
}

/// Cuts sorted `entries` into consecutive runs of about `target_bytes` of keys and values each.
pub fn split_runs(entries: Vec<Entry>, target_bytes: usize) -> Vec<Vec<Entry>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn e(k: &str, seq: u64, v: Option<&str>) -> Entry {
        Entry { key: k.as_bytes().to_vec(), seq, value: v.map(|v| v.as_bytes().to_vec()) }
    }

    #[test]
    fn newest_wins_and_tombstones_drop() {
        let runs =
            vec![vec![e("a", 1, Some("old")), e("b", 2, Some("b"))], vec![e("a", 5, None), e("c", 3, Some("c"))]];
        assert_eq!(
            merge_newest(runs.clone(), false),
            vec![e("a", 5, None), e("b", 2, Some("b")), e("c", 3, Some("c"))]
        );
        assert_eq!(merge_newest(runs, true), vec![e("b", 2, Some("b")), e("c", 3, Some("c"))]);
    }

    #[test]
    fn split_keeps_order() {
        let entries: Vec<Entry> = (0..100).map(|i| e(&format!("{i:03}"), i, Some("xxxxxxxx"))).collect();
        let runs = split_runs(entries.clone(), 350);
        assert!(runs.len() > 5);
        assert_eq!(runs.concat(), entries);
    }
}
