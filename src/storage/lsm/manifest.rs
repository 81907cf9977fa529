//! The manifest: which tables make up the store, at which level, plus the highest sequence
//! number they hold and the next table id. It is the single source of truth at open: a table
//! file it does not list is garbage, a table it lists must exist and validate.
//!
//! Format (little endian): magic u64, version u32, max_seq u64, watermark u64, next_id u64,
//! count u32, then
//! `count` times (level u8, table id u64), then CRC32 of everything before it. Written with
//! `fsio::write_atomic` (new file, fsync, rename, fsync dir), so a crash leaves the old or the
//! new manifest, never a mix.
//!
//! A flush and a compaction may run at the same time, each on its own thread. Neither writes
//! a manifest of its own making: each hands its change (`ManifestEdit`) to the store's one
//! `SharedManifest`, which applies it to the manifest last written and writes the result, one
//! change at a time (LevelDB's `LogAndApply`, with the whole manifest for a log of one). So
//! whichever job ends last writes a manifest that holds both changes.

use crate::storage::lsm::error::{LsmError, Result};
use crate::storage::lsm::fsio;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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

/// One job's change to the manifest: tables it removes and adds (a table moved down a level
/// is removed at its old level and added at the new one), and, for a flush, the highest
/// sequence number and the watermark its table covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestEdit {
    pub removed: Vec<TableRef>,
    pub added: Vec<TableRef>,
    pub max_seq: u64,
    pub watermark: u64,
}

impl ManifestEdit {
    /// `base` with this change; Err when it removes a table `base` does not list (applied
    /// twice, or made from another store's manifest: a bug, never written).
    pub fn apply_to(&self, base: &Manifest) -> std::result::Result<Manifest, String> {
        if let Some(t) = self.removed.iter().find(|t| !base.tables.contains(t)) {
            return Err(format!(
                "the edit removes table {} at level {}, which the manifest does not list",
                t.id, t.level
            ));
        }
        let mut next = base.clone();
        next.tables.retain(|t| !self.removed.contains(t));
        next.tables.extend_from_slice(&self.added);
        next.max_seq = next.max_seq.max(self.max_seq);
        next.watermark = next.watermark.max(self.watermark);
        Ok(next)
    }
}

/// The manifest of one store as last written, shared by the owner and its jobs: hands out
/// table ids and writes edits one at a time (see the module docs).
pub struct SharedManifest {
    dir: PathBuf,
    /// The next table id to hand out; the manifest records it as `next_id` when written.
    next_id: AtomicU64,
    /// What `dir/MANIFEST` holds. The lock is held while a manifest is written (a few
    /// milliseconds of fsync), only ever by a job's thread, never by the owner's.
    written: Mutex<Manifest>,
}

impl SharedManifest {
    /// `written` is what `dir/MANIFEST` holds now (or the empty manifest of a new store).
    pub fn new(dir: &Path, written: Manifest) -> SharedManifest {
        SharedManifest {
            dir: dir.to_path_buf(),
            next_id: AtomicU64::new(written.next_id),
            written: Mutex::new(written),
        }
    }

    /// A table id never handed out before (nor after a restart: the manifest written after
    /// a table it lists records a higher `next_id`).
    pub fn allocate_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Applies `edit` to the manifest last written and writes the result durably; returns it.
    /// On error nothing changed, on disk or here.
    pub fn commit(&self, edit: &ManifestEdit) -> Result<Manifest> {
        // A job that panicked while writing left the manifest as it was (write_atomic is all
        // or nothing): the poisoned value is still the one on disk.
        let mut written = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next =
            edit.apply_to(&written).map_err(|reason| LsmError::corrupt(&self.dir.join(FILE_NAME), reason))?;
        // Every id in `next` was handed out before this load.
        next.next_id = next.next_id.max(self.next_id.load(Ordering::Relaxed));
        next.store(&self.dir)?;
        *written = next.clone();
        Ok(next)
    }

    /// A copy of the manifest last written.
    pub fn written(&self) -> Manifest {
        self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
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

    /// Two jobs' edits, committed in either order, both end up in the manifest on disk; an
    /// edit that removes what is not listed is refused and changes nothing.
    #[test]
    fn edits_compose_in_either_order_and_a_bad_one_changes_nothing() {
        let base = Manifest {
            max_seq: 10,
            watermark: 5,
            next_id: 4,
            tables: vec![TableRef { level: 0, id: 1 }, TableRef { level: 0, id: 2 }, TableRef { level: 1, id: 3 }],
        };
        let flush = |id| ManifestEdit {
            added: vec![TableRef { level: 0, id }],
            max_seq: 20,
            watermark: 9,
            ..Default::default()
        };
        let compaction = |id| ManifestEdit {
            removed: vec![TableRef { level: 0, id: 1 }, TableRef { level: 0, id: 2 }, TableRef { level: 1, id: 3 }],
            added: vec![TableRef { level: 1, id }],
            ..Default::default()
        };
        for flush_first in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            base.store(dir.path()).unwrap();
            let shared = SharedManifest::new(dir.path(), base.clone());
            let (f, c) = (shared.allocate_id(), shared.allocate_id());
            assert_eq!((f, c), (4, 5));
            if flush_first {
                shared.commit(&flush(f)).unwrap();
                shared.commit(&compaction(c)).unwrap();
            } else {
                shared.commit(&compaction(c)).unwrap();
                shared.commit(&flush(f)).unwrap();
            }
            let mut on_disk = Manifest::load(dir.path()).unwrap().unwrap();
            on_disk.tables.sort();
            let want = vec![TableRef { level: 0, id: 4 }, TableRef { level: 1, id: 5 }];
            assert_eq!((on_disk.tables.clone(), on_disk.max_seq, on_disk.watermark, on_disk.next_id), (want, 20, 9, 6));
            // Applied twice: refused, nothing written.
            assert!(shared.commit(&compaction(c)).unwrap_err().is_corrupt());
            assert_eq!(Manifest::load(dir.path()).unwrap().unwrap().tables.len(), 2);
            assert_eq!(shared.written().tables.len(), 2);
        }
    }
}
