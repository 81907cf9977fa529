//! SSTable files: written once (built in memory by `format::TableBuilder`, stored with
//! `fsio::write_unlisted_paced`, O_DIRECT where allowed; a table counts only once the manifest
//! lists it), then read through a read-only mmap. Opening
//! validates the footer (magic, version, CRC), the index and filter CRCs and the index's
//! structure; every block read checks the block's CRC and validates the rkyv archive before
//! touching it. A truncated, half-written or bit-flipped table gives `LsmError::Corrupt`.

use crate::storage::lsm::bloom::Bloom;
use crate::storage::lsm::error::{LsmError, Result};
use crate::storage::lsm::format::{self, BuildOptions, Footer, IndexEntry, FOOTER_LEN, SECTION_ALIGN};
use crate::storage::lsm::fsio::{self, UncachedFile, WriteMode, DIRECT_ALIGN};
use crate::storage::lsm::{ArchivedEntry, Entry};
use memmap2::Mmap;
use rkyv::rancor::Error as RkyvError;
use rkyv::util::AlignedVec;
use rkyv::vec::ArchivedVec;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// File name of table `id`.
pub fn file_name(id: u64) -> String {
    format!("{id:016x}.sst")
}

/// The table id of a file name written by `file_name`, if it is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".sst")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[allow(unsafe_code)]
fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: a table is immutable once renamed into place: the store never writes to or
    // truncates it, and removal only unlinks it (the mapping stays valid). Another process
    // truncating the file would break this (SIGBUS), as for any mmap-based reader.
    unsafe { Mmap::map(file) }
}

pub(crate) fn above_lo(key: &[u8], lo: Bound<&[u8]>) -> bool {
    match lo {
        Bound::Included(b) => key >= b,
        Bound::Excluded(b) => key > b,
        Bound::Unbounded => true,
    }
}

pub(crate) fn below_hi(key: &[u8], hi: Bound<&[u8]>) -> bool {
    match hi {
        Bound::Included(b) => key <= b,
        Bound::Excluded(b) => key < b,
        Bound::Unbounded => true,
    }
}

/// An open, validated table.
pub struct Table {
    id: u64,
    path: PathBuf,
    map: Mmap,
    footer: Footer,
    index: Vec<IndexEntry>,
    bloom: Bloom,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("id", &self.id)
            .field("path", &self.path)
            .field("entries", &self.footer.entry_count)
            .finish()
    }
}

/// Writes `entries` (sorted, one version per key) as table `id` in `dir`, syncs the directory,
/// and opens it.
pub fn write_table(dir: &Path, id: u64, entries: &[Entry], opts: BuildOptions) -> Result<(Table, WriteMode)> {
    let image =
        format::build_table(entries, opts).map_err(|reason| LsmError::corrupt(&dir.join(file_name(id)), reason))?;
    let written = write_image(dir, id, &image, opts)?;
    fsio::sync_dir(dir)?;
    Ok(written)
}

/// Writes a built table image (`format::TableBuilder::finish`) as table `id` in `dir`, its
/// bytes durably (O_DIRECT where allowed, paced by `opts.pacing`), and opens it. The
/// file's name is not synced: a job syncs the directory once for all its tables, before its
/// manifest commit lists them (`fsio::write_unlisted_paced`).
pub fn write_image(dir: &Path, id: u64, image: &[u8], opts: BuildOptions) -> Result<(Table, WriteMode)> {
    write_image_over(dir, id, image, opts, None)
}

/// `write_image`, written over `spare` when given (`spare_files::SpareFiles::take`).
pub fn write_image_over(
    dir: &Path,
    id: u64,
    image: &[u8],
    opts: BuildOptions,
    spare: Option<&Path>,
) -> Result<(Table, WriteMode)> {
    let mode = fsio::write_unlisted_over(dir, &file_name(id), image, true, opts.pacing, spare)?;
    Ok((Table::open(&dir.join(file_name(id)), id)?, mode))
}

/// One entry of a table, borrowed from its mapping: `value: None` is a tombstone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub key: &'a [u8],
    pub seq: u64,
    pub value: Option<&'a [u8]>,
}

impl EntryRef<'_> {
    pub fn to_entry(&self) -> Entry {
        Entry { key: self.key.to_vec(), seq: self.seq, value: self.value.map(<[u8]>::to_vec) }
    }
}

fn check_index(path: &Path, index: &[IndexEntry], footer: &Footer) -> Result<()> {
    let bad = |reason: String| Err(LsmError::corrupt(path, reason));
    let mut data_end = 0u64;
    let mut count = 0u64;
    for (i, b) in index.iter().enumerate() {
        let end = b.offset.checked_add(u64::from(b.len));
        if b.offset % SECTION_ALIGN as u64 != 0 || b.offset < data_end || !end.is_some_and(|e| e <= footer.index_offset)
        {
            return bad(format!("block {i} at {}+{} out of place", b.offset, b.len));
        }
        if b.first_key > b.last_key || (i > 0 && index[i - 1].last_key >= b.first_key) {
            return bad(format!("block {i} keys out of order"));
        }
        data_end = end.unwrap_or(0);
        count += u64::from(b.count);
    }
    if count != footer.entry_count {
        return bad(format!("index counts {count} entries, footer {}", footer.entry_count));
    }
    Ok(())
}

/// A first guess at how far from its end a table's index starts: one read at open for tables
/// of a few megabytes.
pub(crate) const TAIL_GUESS_BYTES: u64 = 64 << 10;

/// A table's index, filter and footer, read at open past the page cache (`UncachedFile`:
/// through the mapping, the footer's page fault read ahead a hundred kilobytes or more into
/// the cache, which the table's deletion then evicted; about 10 % of a history job's CPU,
/// docs/PERFORMANCE.md "Compaction inputs read with O_DIRECT"). Returns the file's bytes from
/// a `DIRECT_ALIGN` boundary at or before the index to its end (`len` bytes long), that
/// boundary, and the decoded footer.
fn read_tail(path: &Path, len: u64) -> Result<(AlignedVec<DIRECT_ALIGN>, u64, Footer)> {
    let io = |e| LsmError::io(format!("reading {}", path.display()), e);
    let mut file = UncachedFile::open(path, true).map_err(io)?;
    let mut buf = AlignedVec::new();
    let align = DIRECT_ALIGN as u64;
    let mut start = len.saturating_sub(TAIL_GUESS_BYTES) / align * align;
    loop {
        let want = (len - start) as usize;
        let got = file.read_window(&mut buf, start, want).map_err(io)?;
        if got < want {
            return Err(LsmError::corrupt(path, format!("{got} bytes read of the last {want}: the file shrank")));
        }
        let footer =
            Footer::decode(&buf[want - FOOTER_LEN..want], len).map_err(|reason| LsmError::corrupt(path, reason))?;
        let index_start = footer.index_offset / align * align;
        if index_start >= start {
            return Ok((buf, start, footer));
        }
        start = index_start;
    }
}

impl Table {
    /// Opens and validates `path`. Block contents are checked when read.
    pub fn open(path: &Path, id: u64) -> Result<Table> {
        let file = File::open(path).map_err(|e| LsmError::io(format!("opening {}", path.display()), e))?;
        let len = file.metadata().map_err(|e| LsmError::io(format!("stat of {}", path.display()), e))?.len();
        if len < FOOTER_LEN as u64 {
            return Err(LsmError::corrupt(path, format!("{len} bytes, shorter than a footer")));
        }
        let map = map_file(&file).map_err(|e| LsmError::io(format!("mapping {}", path.display()), e))?;
        let (tail, tail_start, footer) = read_tail(path, len)?;
        // The footer checked that both sections end before it, and they start after
        // `tail_start` (`read_tail`).
        let section = |off: u64, len: u64| &tail[(off - tail_start) as usize..(off + len - tail_start) as usize];
        let index_bytes = section(footer.index_offset, footer.index_len);
        if crc32fast::hash(index_bytes) != footer.index_crc {
            return Err(LsmError::corrupt(path, "index checksum mismatch"));
        }
        let filter_bytes = section(footer.filter_offset, footer.filter_len);
        if crc32fast::hash(filter_bytes) != footer.filter_crc {
            return Err(LsmError::corrupt(path, "bloom filter checksum mismatch"));
        }
        let archived = rkyv::access::<ArchivedVec<format::ArchivedIndexEntry>, RkyvError>(index_bytes)
            .map_err(|e| LsmError::corrupt(path, format!("index does not validate: {e}")))?;
        let index = rkyv::deserialize::<Vec<IndexEntry>, RkyvError>(archived)
            .map_err(|e| LsmError::corrupt(path, format!("index does not decode: {e}")))?;
        check_index(path, &index, &footer)?;
        let bloom = Bloom::from_bytes(filter_bytes).map_err(|reason| LsmError::corrupt(path, reason))?;
        Ok(Table { id, path: path.to_path_buf(), map, footer, index, bloom })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entry_count(&self) -> u64 {
        self.footer.entry_count
    }

    pub fn max_seq(&self) -> u64 {
        self.footer.max_seq
    }

    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// Smallest and largest key (None for an empty table).
    pub fn key_range(&self) -> Option<(&[u8], &[u8])> {
        Some((self.index.first()?.first_key.as_slice(), self.index.last()?.last_key.as_slice()))
    }

    /// The bloom filter's answer: false means `key` is certainly absent.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.bloom.may_contain(key)
    }

    /// Block `i`, CRC-checked and rkyv-validated, accessed in place.
    fn block(&self, i: usize) -> Result<&ArchivedVec<ArchivedEntry>> {
        let b = &self.index[i];
        self.validate_block(i, &self.map[b.offset as usize..(b.offset + u64::from(b.len)) as usize])
    }

    /// How many data blocks the table has.
    pub(crate) fn block_count(&self) -> usize {
        self.index.len()
    }

    /// Where block `i` lies in the file: its offset and length in bytes.
    pub(crate) fn block_span(&self, i: usize) -> (u64, usize) {
        let b = &self.index[i];
        (b.offset, b.len as usize)
    }

    /// `bytes`, block `i` of this table read from anywhere (the mapping, or a compaction's
    /// own read of the file: `block_reader`), CRC-checked and rkyv-validated, accessed in
    /// place. `bytes` must start at an address as aligned as `SECTION_ALIGN`.
    pub(crate) fn validate_block<'b>(&self, i: usize, bytes: &'b [u8]) -> Result<&'b ArchivedVec<ArchivedEntry>> {
        let b = &self.index[i];
        if bytes.len() != b.len as usize || crc32fast::hash(bytes) != b.crc {
            return Err(LsmError::corrupt(&self.path, format!("block {i} checksum mismatch")));
        }
        let block = rkyv::access::<ArchivedVec<ArchivedEntry>, RkyvError>(bytes)
            .map_err(|e| LsmError::corrupt(&self.path, format!("block {i} does not validate: {e}")))?;
        if block.len() != b.count as usize {
            return Err(LsmError::corrupt(
                &self.path,
                format!("block {i} holds {} entries, index says {}", block.len(), b.count),
            ));
        }
        Ok(block)
    }

    /// The version of `key` in this table: `Some((seq, None))` is a tombstone. The bloom
    /// filter is asked first.
    pub fn get(&self, key: &[u8]) -> Result<Option<(u64, Option<Vec<u8>>)>> {
        if !self.bloom.may_contain(key) {
            return Ok(None);
        }
        let i = self.index.partition_point(|b| b.last_key.as_slice() < key);
        if i == self.index.len() || self.index[i].first_key.as_slice() > key {
            return Ok(None);
        }
        let block = self.block(i)?;
        let found = block.binary_search_by(|e| e.key.as_slice().cmp(key));
        Ok(found.ok().map(|j| {
            let e = &block[j];
            (e.seq.to_native(), e.value.as_ref().map(|v| v.as_slice().to_vec()))
        }))
    }

    /// Visits entries with keys in `(lo, hi)` in key order, tombstones included, zero-copy,
    /// while `f` returns true.
    pub fn scan(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        mut f: impl FnMut(&[u8], u64, Option<&[u8]>) -> bool,
    ) -> Result<()> {
        let start = match lo {
            Bound::Included(k) | Bound::Excluded(k) => self.index.partition_point(|b| b.last_key.as_slice() < k),
            Bound::Unbounded => 0,
        };
        for i in start..self.index.len() {
            if !below_hi(&self.index[i].first_key, hi) {
                break;
            }
            for e in self.block(i)?.iter() {
                let key = e.key.as_slice();
                if above_lo(key, lo)
                    && below_hi(key, hi)
                    && !f(key, e.seq.to_native(), e.value.as_ref().map(|v| v.as_slice()))
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Every entry, owned.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity(self.footer.entry_count as usize);
        self.scan(Bound::Unbounded, Bound::Unbounded, |key, seq, value| {
            out.push(Entry { key: key.to_vec(), seq, value: value.map(<[u8]>::to_vec) });
            true
        })?;
        Ok(out)
    }

    /// Reads every block (CRC and rkyv validation): a full integrity check.
    pub fn verify(&self) -> Result<()> {
        (0..self.index.len()).try_for_each(|i| self.block(i).map(|_| ()))
    }
}
