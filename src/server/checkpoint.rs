//! Checkpoint files: a shard's in-memory state at a WAL sequence, so a restart replays only
//! the WAL written after it (docs/ARCHITECTURE.md "Checkpoints").
//!
//! A file holds a fixed header, the encoded service state (`Service::encode_checkpoint`) and
//! the shard's outbox: the messages to other shards it had sent, or was about to send, that
//! their receivers had not yet made durable. A later replay cannot regenerate those (the
//! records that made them come before the checkpoint), so the checkpoint carries them.
//!
//! Header (64 bytes, little-endian):
//! `magic[8] format:u32 shard:u16 shards:u16 fingerprint:u64 wal_sequence:u64
//!  service_len:u64 outbox_len:u64 body_crc:u32 wal_format:u32 reserved:u32 header_crc:u32`.
//!
//! Files are written to a temporary name, synced, renamed to `checkpoint-<sequence>.ckpt` and
//! the directory synced, so a crash leaves either the complete file or none (a leftover
//! `.tmp` is removed). A damaged file (magic, lengths, either CRC, or its state does not
//! decode) is never used; an older valid one is, if the WAL still reaches back to it. An
//! intact file of another configuration (shard layout, instruments) stops start-up: replaying
//! this log with another configuration would be wrong whichever file it started from.

use crate::domain::shard::Outgoing;
use bincode::Options;
use std::io;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"QAXCKPT\x01";
const FORMAT: u32 = 1;
pub const HEADER_LEN: usize = 64;
const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".ckpt";
const TMP_NAME: &str = "checkpoint.tmp";

/// How many checkpoint files a shard keeps: the newest, and one to fall back on should the
/// newest be damaged (the WAL is kept back to the oldest one kept).
pub const KEEP: usize = 2;

/// What a checkpoint belongs to: checked on load against the server starting up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointMeta {
    pub shard: u16,
    pub shards: u16,
    pub instruments_fingerprint: u64,
    pub wal_format: u32,
    /// Every WAL record through this one is in the state; replay starts after it.
    pub wal_sequence: u64,
}

/// The checkpoint directory of shard `shard` under the storage directory.
pub fn checkpoint_dir(storage: &Path, shard: u16) -> PathBuf {
    storage.join(format!("shard-{shard}")).join("checkpoints")
}

pub fn file_name(wal_sequence: u64) -> String {
    format!("{PREFIX}{wal_sequence:020}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// The outbox, encoded.
pub fn encode_outbox(outbox: &[Outgoing]) -> Result<Vec<u8>, String> {
    options().serialize(outbox).map_err(|e| format!("encoding the outbox: {e}"))
}

fn decode_outbox(bytes: &[u8]) -> Result<Vec<Outgoing>, String> {
    options().with_limit(bytes.len() as u64).deserialize(bytes).map_err(|e| format!("the outbox does not decode: {e}"))
}

/// A whole checkpoint file's bytes.
pub fn encode_file(meta: &CheckpointMeta, service: &[u8], outbox: &[u8]) -> Vec<u8> {
    let mut body_crc = crc32fast::Hasher::new();
    body_crc.update(service);
    body_crc.update(outbox);
    let mut bytes = Vec::with_capacity(HEADER_LEN + service.len() + outbox.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT.to_le_bytes());
    bytes.extend_from_slice(&meta.shard.to_le_bytes());
    bytes.extend_from_slice(&meta.shards.to_le_bytes());
    bytes.extend_from_slice(&meta.instruments_fingerprint.to_le_bytes());
    bytes.extend_from_slice(&meta.wal_sequence.to_le_bytes());
    bytes.extend_from_slice(&(service.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&(outbox.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&body_crc.finalize().to_le_bytes());
    bytes.extend_from_slice(&meta.wal_format.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    let header_crc = crc32fast::hash(&bytes[..HEADER_LEN - 4]);
    bytes.extend_from_slice(&header_crc.to_le_bytes());
    debug_assert_eq!(bytes.len(), HEADER_LEN);
    bytes.extend_from_slice(service);
    bytes.extend_from_slice(outbox);
    bytes
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A checkpoint file that passed every check: its header, and where its two parts lie.
#[derive(Debug)]
pub struct CheckedFile {
    pub meta: CheckpointMeta,
    pub bytes: Vec<u8>,
    service_len: usize,
}

impl CheckedFile {
    pub fn service_bytes(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..HEADER_LEN + self.service_len]
    }

    pub fn outbox(&self) -> Result<Vec<Outgoing>, String> {
        decode_outbox(&self.bytes[HEADER_LEN + self.service_len..])
    }
}

/// Checks a checkpoint file's bytes: magic, format, header CRC, lengths, body CRC. Whose it
/// is (`CheckedFile::meta`) is for the caller to compare (`mismatch`): a file that is intact
/// but another configuration's must stop start-up, not be passed over.
pub fn check(bytes: Vec<u8>) -> Result<CheckedFile, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than a header", bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a checkpoint (bad magic)".into());
    }
    if crc32fast::hash(&bytes[..HEADER_LEN - 4]) != u32_at(&bytes, HEADER_LEN - 4) {
        return Err("header checksum mismatch".into());
    }
    let format = u32_at(&bytes, 8);
    if format != FORMAT {
        return Err(format!("checkpoint format {format}, this server reads {FORMAT}"));
    }
    let meta = CheckpointMeta {
        shard: u16::from_le_bytes([bytes[12], bytes[13]]),
        shards: u16::from_le_bytes([bytes[14], bytes[15]]),
        instruments_fingerprint: u64_at(&bytes, 16),
        wal_sequence: u64_at(&bytes, 24),
        wal_format: u32_at(&bytes, 52),
    };
    let service_len = u64_at(&bytes, 32);
    let outbox_len = u64_at(&bytes, 40);
    let body = (bytes.len() - HEADER_LEN) as u64;
    if service_len.checked_add(outbox_len) != Some(body) {
        return Err(format!("body is {body} bytes, the header says {service_len} + {outbox_len}"));
    }
    if crc32fast::hash(&bytes[HEADER_LEN..]) != u32_at(&bytes, 48) {
        return Err("body checksum mismatch".into());
    }
    Ok(CheckedFile { meta, bytes, service_len: service_len as usize })
}

/// Why an intact checkpoint `found` is not this server's (`expect`: shard layout,
/// instruments, WAL format; the sequence is not compared), if it is not.
pub fn mismatch(found: &CheckpointMeta, expect: &CheckpointMeta) -> Option<String> {
    if (found.shard, found.shards) != (expect.shard, expect.shards) {
        return Some(format!(
            "written as shard {} of {}; start the server with --shards {}",
            found.shard, found.shards, found.shards
        ));
    }
    if found.instruments_fingerprint != expect.instruments_fingerprint {
        return Some("written with other instruments than <instruments>; restore the original instruments file".into());
    }
    if found.wal_format != expect.wal_format {
        return Some(format!("written with WAL format {}, this server writes {}", found.wal_format, expect.wal_format));
    }
    None
}

/// Checkpoint files in `dir`, oldest first. A missing directory has none.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(sequence) = entry.file_name().to_str().and_then(parse_name) {
            files.push((sequence, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// What writing a checkpoint did.
#[derive(Clone, Debug)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
    /// The sequence of the oldest checkpoint still kept: the WAL must reach back to it.
    pub oldest_kept: u64,
}

/// Writes `file` (from `encode_file`) as the checkpoint at `wal_sequence`, atomically and
/// durably, then removes all but the newest `KEEP` checkpoints. `before_rename` runs once the
/// temporary file is complete (crash tests pause there).
pub fn write(dir: &Path, wal_sequence: u64, file: &[u8], before_rename: impl FnOnce()) -> io::Result<Written> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(TMP_NAME);
    let path = dir.join(file_name(wal_sequence));
    {
        let mut out = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        // In pieces, so the page cache writes back while the rest is copied, and the sync at
        // the end has less left to wait for.
        for piece in file.chunks(4 << 20) {
            out.write_all(piece)?;
        }
        out.sync_all()?;
    }
    before_rename();
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    let oldest_kept = prune(dir, KEEP)?;
    Ok(Written { path, bytes: file.len() as u64, oldest_kept })
}

/// Removes a temporary file a crash left behind (at start-up).
pub fn remove_temporary(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(TMP_NAME)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes all but the newest `keep` checkpoint files (and a leftover temporary); returns the
/// sequence of the oldest one kept (0 if none is).
pub fn prune(dir: &Path, keep: usize) -> io::Result<u64> {
    let files = list(dir)?;
    let cut = files.len().saturating_sub(keep.max(1));
    for (_, path) in &files[..cut] {
        std::fs::remove_file(path)?;
    }
    remove_temporary(dir)?;
    if cut > 0 {
        sync_dir(dir)?;
    }
    Ok(files.get(cut).map(|(s, _)| *s).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(sequence: u64) -> CheckpointMeta {
        CheckpointMeta { shard: 1, shards: 2, instruments_fingerprint: 77, wal_format: 3, wal_sequence: sequence }
    }

    #[test]
    fn a_file_round_trips_and_every_damage_is_caught() {
        let outbox = encode_outbox(&[]).unwrap();
        let bytes = encode_file(&meta(42), b"service state", &outbox);
        let checked = check(bytes.clone()).unwrap();
        assert_eq!(checked.meta, meta(42));
        assert_eq!(mismatch(&checked.meta, &meta(0)), None);
        assert_eq!(checked.service_bytes(), b"service state");
        assert!(checked.outbox().unwrap().is_empty());
        for len in 0..bytes.len() {
            assert!(check(bytes[..len].to_vec()).is_err(), "truncated to {len}");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert!(check(flipped).is_err(), "bit flipped at {at}");
        }
        let other = CheckpointMeta { shard: 0, ..meta(0) };
        assert!(mismatch(&checked.meta, &other).unwrap().contains("shard 1 of 2"));
        let other = CheckpointMeta { instruments_fingerprint: 1, ..meta(0) };
        assert!(mismatch(&checked.meta, &other).unwrap().contains("instruments"));
    }

    #[test]
    fn writing_keeps_the_newest_two() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = encode_outbox(&[]).unwrap();
        for sequence in [10, 20, 30] {
            let w = write(dir.path(), sequence, &encode_file(&meta(sequence), b"x", &outbox), || {}).unwrap();
            assert_eq!(w.oldest_kept, if sequence == 10 { 10 } else { sequence - 10 });
        }
        let kept: Vec<u64> = list(dir.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(kept, vec![20, 30]);
        assert_eq!(parse_name(&file_name(30)), Some(30));
        assert_eq!(parse_name("checkpoint-1.ckpt"), None);
    }
}
