//! A table's data blocks read in order for a compaction: with O_DIRECT, a window of the file
//! at a time, into a buffer the reader keeps, rather than through the table's mapping.
//!
//! Why: the merge reads each input once, and nothing reads an input again after the job
//! replaces it. Read through the mapping, the input went through the page cache (each page
//! allocated, charged to the cgroup, put on the LRU, mapped), and the input's deletion
//! afterwards took each page out again: 15–23 % of a history job's CPU was those faults, and
//! two thirds of deleting a replaced table was evicting its pages
//! (docs/PERFORMANCE.md "Compaction inputs read with O_DIRECT"). A direct read of a megabyte is
//! one request into memory the reader already has. Where the filesystem refuses O_DIRECT
//! (tmpfs), the same reads go through the page cache.
//!
//! Every block is CRC-checked and rkyv-validated in the buffer, as reads through the mapping
//! are (`Table::validate_block`); a file that ends inside a block is corrupt.

use crate::storage::lsm::error::{LsmError, Result};
use crate::storage::lsm::fsio::{UncachedFile, DIRECT_ALIGN};
use crate::storage::lsm::sstable::{EntryRef, Table};
use rkyv::util::AlignedVec;
use std::sync::{Mutex, PoisonError};

/// The file is read this many bytes at a time (more when one block is longer): large enough
/// that the reads cost little per byte, small enough that a compaction of many inputs holds
/// little (one window per input it reads at a time: `compaction::chains`).
pub const WINDOW_BYTES: usize = 1 << 20;

/// Where one entry of the block last read lies in the reader's buffer (`BlockReader::entry`).
#[derive(Clone, Copy, Debug, Default)]
pub struct EntryPlace {
    key_at: usize,
    key_len: usize,
    seq: u64,
    /// `None`: a tombstone.
    value: Option<(usize, usize)>,
}

/// Reads one table's blocks in order (`next_block`).
pub struct BlockReader<'a> {
    table: &'a Table,
    file: UncachedFile,
    /// File bytes `window_start..window_start + window_len` (the buffer may be longer).
    window: AlignedVec<DIRECT_ALIGN>,
    window_start: u64,
    window_len: usize,
    next_block: usize,
}

impl<'a> BlockReader<'a> {
    /// Opens `table`'s file for reading, with O_DIRECT where the filesystem allows it.
    pub fn open(table: &'a Table) -> Result<Self> {
        Self::open_as(table, true)
    }

    /// `open`, or through the page cache alone when `try_direct` is false.
    fn open_as(table: &'a Table, try_direct: bool) -> Result<Self> {
        let path = table.path();
        let file =
            UncachedFile::open(path, try_direct).map_err(|e| LsmError::io(format!("opening {}", path.display()), e))?;
        Ok(BlockReader { table, file, window: spare_window(), window_start: 0, window_len: 0, next_block: 0 })
    }

    pub fn table(&self) -> &'a Table {
        self.table
    }

    /// Whether the reads so far bypassed the page cache.
    pub fn is_direct(&self) -> bool {
        self.file.is_direct()
    }

    /// Reads the next block, validates it, and puts where its entries lie in `places`
    /// (emptied first). False after the last block.
    pub fn next_block(&mut self, places: &mut Vec<EntryPlace>) -> Result<bool> {
        places.clear();
        let i = self.next_block;
        if i >= self.table.block_count() {
            return Ok(false);
        }
        self.next_block += 1;
        let (offset, len) = self.table.block_span(i);
        let inside = offset >= self.window_start && offset + len as u64 <= self.window_start + self.window_len as u64;
        if !inside {
            self.fill(i, offset, len)?;
        }
        let at = (offset - self.window_start) as usize;
        let bytes = &self.window.as_slice()[at..at + len];
        let base = self.window.as_ptr() as usize;
        let block = self.table.validate_block(i, bytes)?;
        places.extend(block.iter().map(|e| {
            let key = e.key.as_slice();
            EntryPlace {
                key_at: key.as_ptr() as usize - base,
                key_len: key.len(),
                seq: e.seq.to_native(),
                value: e.value.as_ref().map(|v| (v.as_slice().as_ptr() as usize - base, v.len())),
            }
        }));
        Ok(true)
    }

    /// The entry at `place` of the block last read.
    pub fn entry(&self, place: &EntryPlace) -> EntryRef<'_> {
        let bytes = self.window.as_slice();
        EntryRef {
            key: &bytes[place.key_at..place.key_at + place.key_len],
            seq: place.seq,
            value: place.value.map(|(at, len)| &bytes[at..at + len]),
        }
    }

    /// Reads the window holding block `i` (`len` bytes at `offset`): from the `DIRECT_ALIGN`
    /// boundary at or before it, `WINDOW_BYTES` or the block if longer, but not past the last
    /// block.
    fn fill(&mut self, i: usize, offset: u64, len: usize) -> Result<()> {
        let start = offset - offset % DIRECT_ALIGN as u64;
        let last = self.table.block_span(self.table.block_count() - 1);
        let data_end = (last.0 + last.1 as u64).next_multiple_of(DIRECT_ALIGN as u64);
        let needed = (offset - start) as usize + len;
        let want = needed.max(WINDOW_BYTES.min((data_end - start) as usize));
        // Until the window is read, it holds nothing: an error leaves no stale bytes counted.
        self.window_len = 0;
        let got = self
            .file
            .read_window(&mut self.window, start, want)
            .map_err(|e| LsmError::io(format!("reading {}", self.table.path().display()), e))?;
        self.window_start = start;
        self.window_len = got;
        if got < needed {
            return Err(LsmError::corrupt(self.table.path(), format!("file ends inside block {i}")));
        }
        Ok(())
    }
}

/// Windows kept for the next readers: a fresh one is a megabyte of zeroes, and of page
/// faults when the allocator hands back memory it had returned to the kernel (6 % of a job's
/// CPU when every reader took a new one). A compaction reads from one window per chain.
static SPARE_WINDOWS: Mutex<Vec<AlignedVec<DIRECT_ALIGN>>> = Mutex::new(Vec::new());

/// At most this many windows are kept (a compaction of level 0 reads one per level-0 table,
/// and one for level 1).
const MAX_SPARE_WINDOWS: usize = 8;

fn spare_window() -> AlignedVec<DIRECT_ALIGN> {
    SPARE_WINDOWS.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default()
}

impl Drop for BlockReader<'_> {
    fn drop(&mut self) {
        let window = std::mem::take(&mut self.window);
        if window.capacity() == 0 {
            return;
        }
        let mut spare = SPARE_WINDOWS.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < MAX_SPARE_WINDOWS {
            spare.push(window);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::lsm::format::{BuildOptions, Footer, FOOTER_LEN};
    use crate::storage::lsm::fsio::Pacing;
    use crate::storage::lsm::{sstable, Entry};
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;

    fn entries(n: usize, value_len: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                key: format!("key{i:08}").into_bytes(),
                seq: i as u64 + 1,
                value: (i % 7 != 3).then(|| vec![(i % 251) as u8; value_len + i % 13]),
            })
            .collect()
    }

    fn read_all(table: &Table) -> Result<(Vec<Entry>, bool)> {
        read_all_as(table, true)
    }

    fn read_all_as(table: &Table, try_direct: bool) -> Result<(Vec<Entry>, bool)> {
        let mut reader = BlockReader::open_as(table, try_direct)?;
        let mut places = Vec::new();
        let mut out = Vec::new();
        while reader.next_block(&mut places)? {
            out.extend(places.iter().map(|p| reader.entry(p).to_entry()));
        }
        Ok((out, reader.is_direct()))
    }

    /// Whether files in `dir` can be opened with O_DIRECT.
    fn takes_direct(dir: &std::path::Path) -> bool {
        let probe = dir.join("probe");
        std::fs::write(&probe, [0u8; DIRECT_ALIGN]).unwrap();
        let direct = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&probe).is_ok();
        std::fs::remove_file(probe).unwrap();
        direct
    }

    #[test]
    fn reads_every_entry_across_windows_and_long_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let direct_here = takes_direct(dir.path());
        // Small blocks over several windows, and blocks longer than a window.
        for (id, n, value_len, block_bytes) in [(1, 30_000, 60, 4096), (2, 40, 70_000, 300_000), (3, 1, 5, 4096)] {
            let want = entries(n, value_len);
            let opts = BuildOptions { block_bytes, bloom_bits_per_key: 10, pacing: Pacing::NONE };
            let (table, _) = sstable::write_table(dir.path(), id, &want, opts).unwrap();
            assert!(table.file_bytes() > 2 * WINDOW_BYTES as u64 || n < 100, "table {id} spans windows");
            // Table 1's index and filter are longer than the first read at open takes
            // (`sstable::read_tail` reads again from the index).
            let bytes = std::fs::read(table.path()).unwrap();
            let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..], bytes.len() as u64).unwrap();
            assert_eq!(bytes.len() as u64 - footer.index_offset > sstable::TAIL_GUESS_BYTES, id == 1, "table {id}");
            let (got, direct) = read_all(&table).unwrap();
            assert_eq!(got, want, "table {id}");
            assert_eq!(got, table.entries().unwrap(), "the same as read through the mapping");
            assert_eq!(direct, direct_here, "table {id}: direct reads wherever the filesystem takes them");
        }
    }

    /// Where the filesystem refuses O_DIRECT (tmpfs before Linux 6.6, some overlay
    /// filesystems), the same entries come through the page cache: that path, forced.
    #[test]
    fn the_page_cache_path_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let want = entries(30_000, 60);
        let (table, _) = sstable::write_table(dir.path(), 1, &want, BuildOptions::default()).unwrap();
        let (got, direct) = read_all_as(&table, false).unwrap();
        assert!(!direct);
        assert_eq!(got, want);
    }

    #[test]
    fn a_flipped_byte_or_a_cut_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let want = entries(40_000, 40);
        let opts = BuildOptions::default();
        let (table, _) = sstable::write_table(dir.path(), 1, &want, opts).unwrap();
        let path = table.path().to_path_buf();
        let original = std::fs::read(&path).unwrap();
        let (far_offset, _) = table.block_span(table.block_count() / 2);
        drop(table);
        // A bit flipped in a block past the first window: the reader fails there.
        let mut flipped = original.clone();
        flipped[far_offset as usize + 9] ^= 0x10;
        std::fs::write(&path, &flipped).unwrap();
        let table = Table::open(&path, 1).unwrap();
        assert!(read_all(&table).unwrap_err().is_corrupt());
        drop(table);
        // The data cut short after the table opened (its footer read): the file ends inside a
        // block.
        std::fs::write(&path, &original).unwrap();
        let table = Table::open(&path, 1).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(far_offset + 1).unwrap();
        let err = read_all(&table).unwrap_err();
        assert!(err.is_corrupt(), "{err}");
        assert!(err.to_string().contains("ends inside block"), "{err}");
    }
}
