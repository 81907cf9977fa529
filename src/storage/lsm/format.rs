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

use crate::storage::lsm::bloom::Bloom;
use crate::storage::lsm::Entry;
use rkyv::rancor::Error as RkyvError;
use rkyv::util::AlignedVec;

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
    /// When writing the table: a pause of this many microseconds after every
    /// `fsio::PACED_CHUNK_BYTES`, so that a server's WAL syncs are not queued behind one large
    /// write (0: one write).
    pub write_pause_us: u64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { block_bytes: 4096, bloom_bits_per_key: 10, write_pause_us: 0 }
    }
}

/// Builds a whole table image in a 4 KiB-aligned buffer. `entries` must be sorted by key with
/// one version per key (checked: an error otherwise, so a bad caller never writes a table that
/// reads wrong).
pub fn build_table(entries: &[Entry], opts: BuildOptions) -> Result<AlignedVec<FILE_ALIGN>, String> {
    if let Some(w) = entries.windows(2).find(|w| w[0].key >= w[1].key) {
        return Err(format!("entries not strictly sorted at key {:?}", w[1].key));
    }
    let mut buf = AlignedVec::<FILE_ALIGN>::with_capacity(
        entries.iter().map(|e| e.key.len() * 2 + e.value.as_ref().map_or(0, Vec::len) + 48).sum::<usize>() + FILE_ALIGN,
    );
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
        let encoded = rkyv::to_bytes::<RkyvError>(&block).map_err(|e| format!("block encoding: {e}"))?;
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
    let index_bytes = rkyv::to_bytes::<RkyvError>(&index).map_err(|e| format!("index encoding: {e}"))?;
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
    Ok(buf)
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

    #[test]
    fn unsorted_entries_are_refused() {
        let e = |k: &[u8]| Entry { key: k.to_vec(), seq: 1, value: None };
        assert!(build_table(&[e(b"b"), e(b"a")], BuildOptions::default()).is_err());
        assert!(build_table(&[e(b"a"), e(b"a")], BuildOptions::default()).is_err());
        let img = build_table(&[e(b"a"), e(b"b")], BuildOptions::default()).unwrap();
        assert_eq!(img.len() % FILE_ALIGN, 0);
    }
}
