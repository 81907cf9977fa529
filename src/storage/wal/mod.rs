//! Write-ahead log: format (`frame`), per-segment scan and recovery rules (`scan`, `recover`),
//! segment files (`segment`) and the glommio writer with group commit (`writer`), which writes
//! through the page cache with `sync = none` (`page_cache`).
//!
//! A WAL segment is a preallocated file of framed records, zero-filled when new. Records are
//! appended in batches (group commit); a batch is durable once fdatasync returns. After a crash
//! the scan decides where the durable log ends: a damaged record with nothing of a later batch
//! after it is the torn tail of an unsynced batch (cut it), damage with a later batch after it
//! is corruption (refuse to start).
//!
//! With checkpoints, recovery replays from the checkpoint's next sequence and never reads the
//! segments before it; the writer retires those into a small free pool and reuses them as new
//! segments without zeroing them (their stale records have lower sequences, which the scan
//! reads as "nothing written"), so syncs into a reused segment stay data-only.

pub mod frame;
pub mod page_cache;
pub mod recover;
pub mod scan;
pub mod segment;
pub mod writer;

pub use frame::{encode_record, frame_len, RecordHeader, FRAME_ALIGN, HEADER_LEN, MAX_PAYLOAD};
pub use recover::{recover, RecoveryError, RecoveryReport, ResumePoint};
pub use scan::{scan_segment, ScanEnd, ScanError, ScannedRecord, SegmentScan};
pub use writer::{SyncMode, SyncTicket, WalConfig, WalStats, WalWriter};

/// The payload the WAL stress tool writes as record `sequence`: 16..=400 bytes, a function of
/// the sequence alone, so a crash test can check every recovered record's content.
pub fn stress_payload(sequence: u64) -> Vec<u8> {
    let len = 16 + (sequence.wrapping_mul(2_654_435_761) % 385) as usize;
    (0..len).map(|i| (sequence.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8).collect()
}
