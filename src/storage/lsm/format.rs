//! The SSTable file format, as pure functions over bytes.
//!
//! ```text
//! [data block 0][pad to 16]...[data block n-1][pad to 16]
//! [index: rkyv Vec<IndexEntry>][pad to 16]
//! [bloom filter bytes]
//! [zero padding so the file ends on a 4 KiB boundary]
//! [footer, FOOTER_LEN bytes, the last bytes of the file]
//! ```
//!
//! A data block is an rkyv archive of `Vec<Entry>` (keys ascending, one version per key),
//! closed once its entries reach the target block size (4 KiB by default). Each index entry
//! holds a block's first and last key, offset, length, entry count and CRC32. The footer (all
//! little endian): index offset u64, index length u64, filter offset u64, filter length u64,
//! entry count u64, highest sequence number u64, index CRC32 u32, filter CRC32 u32, format
//! version u32, CRC32 of the 60 bytes before it u32, magic u64. Sections start on 16-byte
//! offsets so rkyv archives in a (page-aligned) mmap are aligned for zero-copy access, and the
//! whole image is a multiple of 4 KiB so it can be written with O_DIRECT.

use crate::storage::lsm::bloom::{self, Bloom};
use crate::storage::lsm::fsio::Pacing;
use crate::storage::lsm::{ArchivedEntry, Entry};
use rkyv::rancor::Error as RkyvError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::{Positional, Writer};
use rkyv::util::AlignedVec;
use rkyv::vec::{ArchivedVec, VecResolver};

pub const MAGIC: u64 = u64::from_le_bytes(*b"QXSST\0\x01\x00");
pub const VERSION: u32 = 1;
pub const FOOTER_LEN: usize = 72;
/// Alignment of every section inside the file.
pub const SECTION_ALIGN: usize = 16;
/// The file image is a multiple of this (O_DIRECT granularity).
pub const FILE_ALIGN: usize = 4096;

/// One block's entry in the index.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct IndexEntry {
    pub first_key: Vec<u8>,
    pub last_key: Vec<u8>,
    pub offset: u64,
    pub len: u32,
    pub count: u32,
    pub crc: u32,
}

/// The fixed-size trailer of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub index_offset: u64,
    pub index_len: u64,
    pub filter_offset: u64,
    pub filter_len: u64,
    pub entry_count: u64,
    pub max_seq: u64,
    pub index_crc: u32,
    pub filter_crc: u32,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(&self.index_offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.index_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.filter_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.filter_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.entry_count.to_le_bytes());
        b[40..48].copy_from_slice(&self.max_seq.to_le_bytes());
        b[48..52].copy_from_slice(&self.index_crc.to_le_bytes());
        b[52..56].copy_from_slice(&self.filter_crc.to_le_bytes());
        b[56..60].copy_from_slice(&VERSION.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b[64..72].copy_from_slice(&MAGIC.to_le_bytes());
        b
    }

    /// Parses and checks the footer at the end of a `file_len`-byte file: magic, version, its
    /// own CRC, and that the sections it points to lie inside the file, in order.
    pub fn decode(b: &[u8], file_len: u64) -> Result<Footer, String> {
        if b.len() != FOOTER_LEN {
            return Err(format!("footer of {} bytes", b.len()));
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        if u64_at(64) != MAGIC {
            return Err("bad magic (not an SSTable, or truncated)".into());
        }
        if u32_at(60) != crc32fast::hash(&b[0..60]) {
            return Err("footer checksum mismatch".into());
        }
        if u32_at(56) != VERSION {
            return Err(format!("unsupported format version {}", u32_at(56)));
        }
        let f = Footer {
            index_offset: u64_at(0),
            index_len: u64_at(8),
            filter_offset: u64_at(16),
            filter_len: u64_at(24),
            entry_count: u64_at(32),
            max_seq: u64_at(40),
            index_crc: u32_at(48),
            filter_crc: u32_at(52),
        };
        let footer_start = file_len.checked_sub(FOOTER_LEN as u64).ok_or("file shorter than a footer")?;
        let index_end = f.index_offset.checked_add(f.index_len).ok_or("index range overflows")?;
        let filter_end = f.filter_offset.checked_add(f.filter_len).ok_or("filter range overflows")?;
        if f.index_offset % SECTION_ALIGN as u64 != 0 || index_end > f.filter_offset || filter_end > footer_start {
            return Err(format!(
                "sections out of bounds: index {}+{}, filter {}+{}, footer at {footer_start}",
                f.index_offset, f.index_len, f.filter_offset, f.filter_len
            ));
        }
        Ok(f)
    }
}

fn pad_to(buf: &mut AlignedVec<FILE_ALIGN>, align: usize) {
    let padded = buf.len().next_multiple_of(align);
    buf.resize(padded, 0);
}

/// Target sizes of a table being built.
#[derive(Clone, Copy, Debug)]
pub struct BuildOptions {
    /// A block is closed once its keys and values reach this many bytes.
    pub block_bytes: usize,
    pub bloom_bits_per_key: u32,
    /// How the table's bytes go to disk (`fsio::Pacing::NONE`: one write).
    pub pacing: Pacing,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { block_bytes: 4096, bloom_bits_per_key: 10, pacing: Pacing::NONE }
    }
}

/// Builds a whole table image in a 4 KiB-aligned buffer. `entries` must be sorted by key with
/// one version per key (checked: an error otherwise, so a bad caller never writes a table that
/// reads wrong). The same bytes as feeding `entries` to a `TableBuilder`.
pub fn build_table(entries: &[Entry], opts: BuildOptions) -> Result<AlignedVec<FILE_ALIGN>, String> {
    let capacity =
        entries.iter().map(|e| e.key.len() * 2 + e.value.as_ref().map_or(0, Vec::len) + 48).sum::<usize>() + FILE_ALIGN;
    let mut builder = TableBuilder::with_capacity(opts, capacity);
    for e in entries {
        builder.add(&e.key, e.seq, e.value.as_deref())?;
    }
    builder.finish()
}

/// Bytes an entry counts for when blocks (and, in compaction, tables) are cut.
pub fn entry_bytes(key: &[u8], value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + 24
}

/// A run of bytes (key or value) already written into the open block, at `pos` from its start.
struct Placed {
    pos: usize,
    len: usize,
}

impl rkyv::Archive for Placed {
    type Archived = ArchivedVec<u8>;
    type Resolver = ();

    fn resolve(&self, _: (), out: rkyv::Place<ArchivedVec<u8>>) {
        ArchivedVec::resolve_from_len(self.len, VecResolver::from_pos(self.pos), out);
    }
}

impl<S: rkyv::rancor::Fallible + ?Sized> rkyv::Serialize<S> for Placed {
    /// The bytes are in place already: nothing to write.
    fn serialize(&self, _: &mut S) -> Result<(), S::Error> {
        Ok(())
    }
}

/// An entry of the open block whose key and value bytes are written already. Archives as an
/// `Entry`: serialising a `Vec<PendingEntry>` after those bytes gives what serialising the
/// `Vec<Entry>` gives (rkyv writes each element's bytes in order, then the element array, then
/// the vector), without copying the entries.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedEntry)]
struct PendingEntry {
    key: Placed,
    seq: u64,
    value: Option<Placed>,
}

/// An rkyv writer appending to the image, with positions counted from `start` (where the
/// archive begins, as if it were serialised on its own).
struct SectionWriter<'a> {
    buf: &'a mut AlignedVec<FILE_ALIGN>,
    start: usize,
}

impl Positional for SectionWriter<'_> {
    fn pos(&self) -> usize {
        self.buf.len() - self.start
    }
}

impl<E> Writer<E> for SectionWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}

/// Appends the rkyv archive of `value` to `buf` (which must be at a `SECTION_ALIGN` offset);
/// positions in the archive count from `start`.
fn append_archive<'w, T>(buf: &'w mut AlignedVec<FILE_ALIGN>, start: usize, value: &T) -> Result<(), RkyvError>
where
    T: for<'a> rkyv::Serialize<rkyv::api::high::HighSerializer<SectionWriter<'w>, ArenaHandle<'a>, RkyvError>>,
{
    rkyv::api::high::to_bytes_in::<_, RkyvError>(value, SectionWriter { buf, start }).map(|_| ())
}

/// Builds a table image from entries given one at a time, in strictly increasing key order.
/// Each key and value is copied once, into the image; the bloom filter keeps an 8-byte hash
/// per key. `finish` gives the same bytes `build_table` gives for the same entries.
pub struct TableBuilder {
    opts: BuildOptions,
    buf: AlignedVec<FILE_ALIGN>,
    index: Vec<IndexEntry>,
    hashes: Vec<u64>,
    /// Where the open block starts (a `SECTION_ALIGN` offset).
    block_start: usize,
    block: Vec<PendingEntry>,
    /// `entry_bytes` of the open block.
    block_bytes: usize,
    /// Where the previous key lies in `buf`.
    last_key: Option<(usize, usize)>,
    max_seq: u64,
    approx_bytes: usize,
}

impl TableBuilder {
    pub fn new(opts: BuildOptions) -> Self {
        Self::with_capacity(opts, FILE_ALIGN)
    }

    /// A builder whose image buffer starts with room for `capacity` bytes (growing it copies
    /// the image).
    pub fn with_capacity(opts: BuildOptions, capacity: usize) -> Self {
        TableBuilder {
            opts,
            buf: AlignedVec::with_capacity(capacity.max(FILE_ALIGN)),
            index: Vec::new(),
            hashes: Vec::new(),
            block_start: 0,
            block: Vec::new(),
            block_bytes: 0,
            last_key: None,
            max_seq: 0,
            approx_bytes: 0,
        }
    }

    /// Appends an entry (`value: None` is a tombstone). Its key must be greater than the
    /// previous one: an error otherwise, and nothing is added.
    pub fn add(&mut self, key: &[u8], seq: u64, value: Option<&[u8]>) -> Result<(), String> {
        if let Some((at, len)) = self.last_key {
            if &self.buf[at..at + len] >= key {
                return Err(format!("entries not strictly sorted at key {key:?}"));
            }
        }
        let key_at = self.buf.len();
        self.buf.extend_from_slice(key);
        let value = value.map(|v| {
            let pos = self.buf.len() - self.block_start;
            self.buf.extend_from_slice(v);
            Placed { pos, len: v.len() }
        });
        self.block.push(PendingEntry { key: Placed { pos: key_at - self.block_start, len: key.len() }, seq, value });
        self.last_key = Some((key_at, key.len()));
        self.hashes.push(bloom::hash64(key));
        self.max_seq = self.max_seq.max(seq);
        let bytes = key.len() + self.block.last().and_then(|e| e.value.as_ref()).map_or(0, |v| v.len) + 24;
        self.block_bytes += bytes;
        self.approx_bytes += bytes;
        if self.block_bytes >= self.opts.block_bytes {
            self.close_block()?;
        }
        Ok(())
    }

    /// Entries added so far.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The sum of `entry_bytes` over the entries added so far.
    pub fn approx_bytes(&self) -> usize {
        self.approx_bytes
    }

    /// Encodes the open block after its entries' bytes, indexes it and starts the next one.
    fn close_block(&mut self) -> Result<(), String> {
        let (Some(first), Some(last)) = (self.block.first(), self.block.last()) else { return Ok(()) };
        crate::storage::lsm::courtesy::point();
        let start = self.block_start;
        let first_key = self.buf[start + first.key.pos..start + first.key.pos + first.key.len].to_vec();
        let last_key = self.buf[start + last.key.pos..start + last.key.pos + last.key.len].to_vec();
        append_archive(&mut self.buf, start, &self.block).map_err(|e| format!("block encoding: {e}"))?;
        let encoded = &self.buf[start..];
        self.index.push(IndexEntry {
            first_key,
            last_key,
            offset: start as u64,
            len: encoded.len() as u32,
            count: self.block.len() as u32,
            crc: crc32fast::hash(encoded),
        });
        pad_to(&mut self.buf, SECTION_ALIGN);
        self.block_start = self.buf.len();
        self.block.clear();
        self.block_bytes = 0;
        Ok(())
    }

    /// Closes the last block and appends the index, the bloom filter and the footer.
    pub fn finish(mut self) -> Result<AlignedVec<FILE_ALIGN>, String> {
        self.close_block()?;
        let index_offset = self.buf.len();
        append_archive(&mut self.buf, index_offset, &self.index).map_err(|e| format!("index encoding: {e}"))?;
        let index_len = self.buf.len() - index_offset;
        let index_crc = crc32fast::hash(&self.buf[index_offset..]);
        pad_to(&mut self.buf, SECTION_ALIGN);
        let filter = Bloom::from_hashes(&self.hashes, self.opts.bloom_bits_per_key).to_bytes();
        let filter_offset = self.buf.len() as u64;
        self.buf.extend_from_slice(&filter);
        let footer = Footer {
            index_offset: index_offset as u64,
            index_len: index_len as u64,
            filter_offset,
            filter_len: filter.len() as u64,
            entry_count: self.hashes.len() as u64,
            max_seq: self.max_seq,
            index_crc,
            filter_crc: crc32fast::hash(&filter),
        };
        let total = (self.buf.len() + FOOTER_LEN).next_multiple_of(FILE_ALIGN);
        self.buf.resize(total - FOOTER_LEN, 0);
        self.buf.extend_from_slice(&footer.encode());
        Ok(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trip_and_rejections() {
        let f = Footer {
            index_offset: 4096,
            index_len: 100,
            filter_offset: 4208,
            filter_len: 20,
            entry_count: 7,
            max_seq: 9,
            index_crc: 1,
            filter_crc: 2,
        };
        let b = f.encode();
        assert_eq!(Footer::decode(&b, 8192), Ok(f));
        assert!(Footer::decode(&b, 4200).is_err(), "filter past the footer");
        for byte in 0..FOOTER_LEN {
            let mut bad = b;
            bad[byte] ^= 0x10;
            assert!(Footer::decode(&bad, 8192).is_err(), "flip in byte {byte} accepted");
        }
    }

    /// `build_table` as it was before `TableBuilder`: the format's reference.
    fn reference_build(entries: &[Entry], opts: BuildOptions) -> AlignedVec<FILE_ALIGN> {
        let mut buf = AlignedVec::<FILE_ALIGN>::new();
        let mut index = Vec::new();
        let mut start = 0;
        while start < entries.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < entries.len() && (end == start || bytes < opts.block_bytes) {
                bytes += entries[end].key.len() + entries[end].value.as_ref().map_or(0, Vec::len) + 24;
                end += 1;
            }
            let block: Vec<Entry> = entries[start..end].to_vec();
            let encoded = rkyv::to_bytes::<RkyvError>(&block).unwrap();
            let offset = buf.len() as u64;
            buf.extend_from_slice(&encoded);
            index.push(IndexEntry {
                first_key: entries[start].key.clone(),
                last_key: entries[end - 1].key.clone(),
                offset,
                len: encoded.len() as u32,
                count: (end - start) as u32,
                crc: crc32fast::hash(&encoded),
            });
            pad_to(&mut buf, SECTION_ALIGN);
            start = end;
        }
        let index_bytes = rkyv::to_bytes::<RkyvError>(&index).unwrap();
        let index_offset = buf.len() as u64;
        buf.extend_from_slice(&index_bytes);
        pad_to(&mut buf, SECTION_ALIGN);
        let filter = Bloom::build(entries.iter().map(|e| e.key.as_slice()), opts.bloom_bits_per_key).to_bytes();
        let filter_offset = buf.len() as u64;
        buf.extend_from_slice(&filter);
        let footer = Footer {
            index_offset,
            index_len: index_bytes.len() as u64,
            filter_offset,
            filter_len: filter.len() as u64,
            entry_count: entries.len() as u64,
            max_seq: entries.iter().map(|e| e.seq).max().unwrap_or(0),
            index_crc: crc32fast::hash(&index_bytes),
            filter_crc: crc32fast::hash(&filter),
        };
        let total = (buf.len() + FOOTER_LEN).next_multiple_of(FILE_ALIGN);
        buf.resize(total - FOOTER_LEN, 0);
        buf.extend_from_slice(&footer.encode());
        buf
    }

    #[test]
    fn builder_writes_the_reference_bytes() {
        let mut rand = crate::storage::lsm::test_rand(0x9e37_79b9_7f4a_7c15u64);
        let mut cases: Vec<Vec<Entry>> = vec![
            Vec::new(),
            vec![Entry { key: Vec::new(), seq: 0, value: None }],
            vec![
                Entry { key: Vec::new(), seq: 3, value: Some(Vec::new()) },
                Entry { key: b"a".to_vec(), seq: 1, value: Some(vec![1; 10_000]) },
            ],
        ];
        for n in [1usize, 5, 100, 3000] {
            let mut keys: Vec<Vec<u8>> =
                (0..n).map(|_| (0..rand(40)).map(|_| rand(4) as u8 + b'a').collect::<Vec<u8>>()).collect();
            keys.sort();
            keys.dedup();
            cases.push(
                keys.into_iter()
                    .map(|key| {
                        let value = match rand(5) {
                            0 => None,
                            1 => Some(vec![rand(256) as u8; rand(5000) as usize]),
                            _ => Some(vec![rand(256) as u8; rand(70) as usize]),
                        };
                        Entry { key, seq: rand(1 << 40), value }
                    })
                    .collect(),
            );
        }
        for entries in &cases {
            for (block_bytes, bits) in [(0, 10), (1, 1), (64, 10), (4096, 10), (4096, 16), (1 << 20, 3)] {
                let opts = BuildOptions { block_bytes, bloom_bits_per_key: bits, pacing: Pacing::NONE };
                let want = reference_build(entries, opts);
                assert_eq!(
                    build_table(entries, opts).unwrap().as_slice(),
                    want.as_slice(),
                    "{} entries",
                    entries.len()
                );
                let mut b = TableBuilder::new(opts);
                for e in entries {
                    b.add(&e.key, e.seq, e.value.as_deref()).unwrap();
                }
                assert_eq!(b.len(), entries.len());
                let sum: usize = entries.iter().map(|e| entry_bytes(&e.key, e.value.as_deref())).sum();
                assert_eq!(b.approx_bytes(), sum);
                assert!(b.finish().unwrap().as_slice() == want.as_slice(), "{} entries, {opts:?}", entries.len());
            }
        }
    }

    #[test]
    fn unsorted_entries_are_refused() {
        let e = |k: &[u8]| Entry { key: k.to_vec(), seq: 1, value: None };
        assert!(build_table(&[e(b"b"), e(b"a")], BuildOptions::default()).is_err());
        assert!(build_table(&[e(b"a"), e(b"a")], BuildOptions::default()).is_err());
        let img = build_table(&[e(b"a"), e(b"b")], BuildOptions::default()).unwrap();
        assert_eq!(img.len() % FILE_ALIGN, 0);
        let mut b = TableBuilder::new(BuildOptions::default());
        b.add(b"b", 1, Some(b"x")).unwrap();
        assert!(b.add(b"a", 2, None).is_err());
        assert!(b.add(b"b", 2, None).is_err());
        b.add(b"c", 3, None).unwrap();
        assert_eq!(b.len(), 2, "refused entries are not added");
        let want = [Entry { key: b"b".to_vec(), seq: 1, value: Some(b"x".to_vec()) }, Entry { seq: 3, ..e(b"c") }];
        assert!(b.finish().unwrap().as_slice() == build_table(&want, BuildOptions::default()).unwrap().as_slice());
    }
}
