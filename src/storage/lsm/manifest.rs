//! The manifest: which tables make up the store, at which level, plus the highest sequence
//! number they hold and the next table id. It is the single source of truth at open: a table
//! file it does not list is garbage, a table it lists must exist and validate.
//!
//! Format (little endian): magic u64, version u32, max_seq u64, watermark u64, next_id u64,
//! count u32, then
//! `count` times (level u8, table id u64), then CRC32 of everything before it. Written with
//! `fsio::write_atomic` (new file, fsync, rename, fsync dir), so a crash leaves the old or the
//! new manifest, never a mix.

use crate::storage::lsm::error::{LsmError, Result};
use crate::storage::lsm::fsio;
use std::path::Path;

pub const FILE_NAME: &str = "MANIFEST";
const MAGIC: u64 = u64::from_le_bytes(*b"QXMANIF\x01");
const VERSION: u32 = 2;
const HEADER: usize = 8 + 4 + 8 + 8 + 8 + 4;
const RECORD: usize = 9;

/// One table of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableRef {
    pub level: u8,
    pub id: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Highest sequence number in any listed table.
    pub max_seq: u64,
    /// The owner's position (for the server: a WAL sequence) up to which everything written
    /// is in the listed tables; recovery re-derives only what came after it.
    pub watermark: u64,
    /// The id the next table will get (ids are never reused).
    pub next_id: u64,
    pub tables: Vec<TableRef>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER + RECORD * self.tables.len() + 4);
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&self.max_seq.to_le_bytes());
        b.extend_from_slice(&self.watermark.to_le_bytes());
        b.extend_from_slice(&self.next_id.to_le_bytes());
        b.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        for t in &self.tables {
            b.push(t.level);
            b.extend_from_slice(&t.id.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> std::result::Result<Manifest, String> {
        if b.len() < HEADER + 4 {
            return Err(format!("{} bytes, shorter than a manifest header", b.len()));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err("manifest checksum mismatch".into());
        }
        let u64_at = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().expect("8 bytes"));
        if u64_at(0) != MAGIC {
            return Err("bad manifest magic".into());
        }
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!("unsupported manifest version {version}"));
        }
        let count = u32::from_le_bytes(body[36..40].try_into().expect("4 bytes")) as usize;
        if body.len() != HEADER + count * RECORD {
            return Err(format!("manifest lists {count} tables in {} bytes", body.len()));
        }
        let tables: Vec<TableRef> = body[HEADER..]
            .chunks_exact(RECORD)
            .map(|r| TableRef { level: r[0], id: u64::from_le_bytes(r[1..9].try_into().expect("8 bytes")) })
            .collect();
        let next_id = u64_at(28);
        if let Some(t) = tables.iter().find(|t| t.id >= next_id) {
            return Err(format!("table {} not below next id {next_id}", t.id));
        }
        Ok(Manifest { max_seq: u64_at(12), watermark: u64_at(20), next_id, tables })
    }

    /// Reads `dir/MANIFEST`; `Ok(None)` when there is none (a new store).
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => Manifest::decode(&bytes).map(Some).map_err(|reason| LsmError::corrupt(&path, reason)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LsmError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Replaces `dir/MANIFEST` atomically and durably.
    pub fn store(&self, dir: &Path) -> Result<()> {
        fsio::write_atomic(dir, FILE_NAME, &self.encode(), false).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flip_detected() {
        let m = Manifest {
            max_seq: 42,
            watermark: 7,
            next_id: 9,
            tables: vec![TableRef { level: 0, id: 8 }, TableRef { level: 1, id: 3 }],
        };
        let b = m.encode();
        assert_eq!(Manifest::decode(&b), Ok(m));
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i}");
        }
        for cut in 0..b.len() {
            assert!(Manifest::decode(&b[..cut]).is_err(), "truncated at {cut}");
        }
    }

    #[test]
    fn store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), None);
        let m = Manifest { max_seq: 1, watermark: 0, next_id: 2, tables: vec![TableRef { level: 0, id: 1 }] };
        m.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(m));
        std::fs::write(dir.path().join(FILE_NAME), b"garbage").unwrap();
        assert!(Manifest::load(dir.path()).unwrap_err().is_corrupt());
    }
}
