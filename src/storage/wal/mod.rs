//! Write-ahead log format.
//!
//! A WAL segment is a preallocated, zero-filled file of framed records (`frame.rs`). Records
//! are appended in batches (group commit); a batch is durable once fdatasync returns. After a
//! crash, `scan.rs` reads a segment back and decides where the durable log ends: a damaged
//! record with nothing valid after it is the torn tail of an unsynced batch (cut it), a damaged
//! record with valid records after it is corruption (refuse to start).

pub mod frame;
pub mod scan;

pub use frame::{encode_record, frame_len, RecordHeader, FRAME_ALIGN, HEADER_LEN, MAX_PAYLOAD};
pub use scan::{scan_segment, ScanEnd, ScanError, ScannedRecord, SegmentScan};
