//! Replaced table files kept for new tables to be written over, instead of deleted and created
//! again (the WAL recycles its segments for the same reasons).
//!
//! Why: a compaction replaces its input tables with as many new ones. Deleting a file frees
//! its blocks (on a `discard` mount, trimming them as it goes) and its inode; creating the next
//! one allocates both again. On ext4 without a journal, as on this machine, allocating an inode
//! also skips every inode freed in the last minute, reading each one's inode-table block
//! (`recently_deleted`): with tables replaced every few tens of milliseconds that scan was up
//! to 19 % of a busy store's history jobs, and half of `lsm_levels`' compaction CPU
//! (docs/PERFORMANCE.md "Table files written over").
//! A spare keeps its inode and its blocks; a new table renames it into place and writes over
//! it (`fsio::write_unlisted_over`).
//!
//! Safety: a file becomes a spare only once the manifest no longer lists its table (it is an
//! obsolete input) and nobody holds the table any more (a reader's mapping would see the
//! file change under it; a table still held is deleted as before, its mapping kept). A new
//! table written over a spare counts only once the manifest lists it, like any new table: a
//! crash half-way leaves a file the manifest does not list, which the next open removes, and
//! the next open removes the spares themselves (`Store::open`).

use crate::storage::lsm::sstable::Table;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// Suffix of spare files: not tables, never read.
pub const SPARE_SUFFIX: &str = ".spare";

/// At most this many spares per store, each at most `SpareFiles::new`'s size: the disk they
/// hold stays within a few of a compaction's output tables.
pub const MAX_SPARES: usize = 8;

/// A store's spare files, shared with its jobs and with whoever releases its obsolete tables.
#[derive(Clone, Debug)]
pub struct SpareFiles {
    list: Arc<Mutex<SpareList>>,
    /// Larger files are deleted, not kept (a level-0 table holds a whole memtable).
    max_file_bytes: u64,
}

impl Default for SpareFiles {
    fn default() -> Self {
        SpareFiles::new(u64::MAX)
    }
}

#[derive(Debug, Default)]
struct SpareList {
    paths: Vec<PathBuf>,
    /// The number in the next spare's name.
    next: u64,
}

impl SpareFiles {
    /// No spares yet; files over `max_file_bytes` will not be kept.
    pub fn new(max_file_bytes: u64) -> Self {
        SpareFiles { list: Arc::default(), max_file_bytes }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SpareList> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the file of `table` (an obsolete table, one the manifest no longer lists) as a
    /// spare when nobody else holds the table, it is not too large, and there is room;
    /// deletes it otherwise. Best effort, like the deletion it replaces: a file left behind
    /// is an orphan the next open removes.
    pub fn keep_or_remove(&self, table: Arc<Table>) {
        let path = table.path().to_path_buf();
        let small = table.file_bytes() <= self.max_file_bytes;
        // Unmapped first (dropping the last holder), so nothing in this process can see the
        // file change.
        if let Some(table) = Arc::try_unwrap(table).ok().filter(|_| small) {
            drop(table);
            let mut list = self.lock();
            if list.paths.len() < MAX_SPARES {
                let spare = path.with_file_name(format!("{:016x}{SPARE_SUFFIX}", list.next));
                list.next += 1;
                if std::fs::rename(&path, &spare).is_ok() {
                    list.paths.push(spare);
                    return;
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    /// A spare to write a new table over (it is the caller's from now on), if there is one.
    pub fn take(&self) -> Option<PathBuf> {
        self.lock().paths.pop()
    }

    /// How many spares there are now.
    pub fn len(&self) -> usize {
        self.lock().paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::lsm::format::BuildOptions;
    use crate::storage::lsm::{sstable, Entry};
    use std::path::Path;

    fn table(dir: &Path, id: u64, n: usize) -> Table {
        let entries: Vec<Entry> = (0..n)
            .map(|i| Entry { key: format!("k{id}-{i:06}").into_bytes(), seq: i as u64 + 1, value: Some(vec![7; 50]) })
            .collect();
        sstable::write_table(dir, id, &entries, BuildOptions::default()).unwrap().0
    }

    fn files(dir: &Path, suffix: &str) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(suffix))
            .count()
    }

    #[test]
    fn a_table_nobody_holds_becomes_a_spare_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let spares = SpareFiles::default();
        for id in 1..=MAX_SPARES as u64 + 3 {
            spares.keep_or_remove(Arc::new(table(dir.path(), id, 100)));
        }
        assert_eq!(spares.len(), MAX_SPARES);
        assert_eq!(files(dir.path(), SPARE_SUFFIX), MAX_SPARES);
        assert_eq!(files(dir.path(), ".sst"), 0, "the rest deleted");
        let taken = spares.take().unwrap();
        assert!(taken.exists());
        assert_eq!(spares.len(), MAX_SPARES - 1);
    }

    #[test]
    fn a_table_over_the_size_limit_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let small = table(dir.path(), 1, 10);
        let spares = SpareFiles::new(small.file_bytes());
        spares.keep_or_remove(Arc::new(small));
        spares.keep_or_remove(Arc::new(table(dir.path(), 2, 5000)));
        assert_eq!(spares.len(), 1);
        assert_eq!((files(dir.path(), SPARE_SUFFIX), files(dir.path(), ".sst")), (1, 0));
    }

    #[test]
    fn a_table_someone_still_reads_is_deleted_and_keeps_its_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let spares = SpareFiles::default();
        let held = Arc::new(table(dir.path(), 1, 2000));
        let reader = held.clone();
        spares.keep_or_remove(held);
        assert!(spares.is_empty(), "not a spare while read");
        assert!(!reader.path().exists(), "deleted");
        // Its mapping still reads the old bytes, whatever is written next.
        let (next, _) = {
            let entries = vec![Entry { key: b"other".to_vec(), seq: 1, value: None }];
            sstable::write_table(dir.path(), 2, &entries, BuildOptions::default()).unwrap()
        };
        assert_eq!(next.entry_count(), 1);
        assert_eq!(reader.entries().unwrap().len(), 2000);
        reader.verify().unwrap();
    }
}
