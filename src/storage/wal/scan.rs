//! Reading a segment back after a restart, and deciding where the durable log ends.
//!
//! The writer's contract (the server's WAL task keeps it): records get consecutive sequence
//! numbers; a batch is written only after the previous batch's fdatasync returned; a record is
//! acknowledged only after the sync that covers it. So at most one batch is ever unsynced, and
//! a crash can leave only that batch damaged — in any pattern, since the disk may persist its
//! blocks out of order.
//!
//! The scan reads records while each is the next sequence with a valid CRC. At the first spot
//! that is not (call it the damage point, where sequence `expected` should be):
//! - zeros to the end of the segment: the clean end of the log;
//! - otherwise it looks further for valid records with sequence >= `expected`. One whose batch
//!   started after `expected` proves a later batch was written, which happens only after the
//!   damaged one was synced: that is corruption of acknowledged data, and start-up must stop
//!   (`ScanError`, naming the offset). If every such record belongs to the damaged batch (its
//!   batch start <= `expected`), or there is none, the damage is the torn tail of the unsynced
//!   batch: the log ends at the damage point (`ScanEnd::TornTail`) and the caller logs a warning.
//!
//! Records with a valid CRC but a sequence below `expected` are leftovers of a recycled segment
//! and count as "nothing written".
//!
//! What no format can tell apart: damage to the *last* batch of the log after it was synced
//! (bit rot, a lying disk) looks exactly like a torn write of an unsynced batch, because no
//! later batch exists to prove it was synced. That case is cut as a torn tail, with a warning.

use super::frame::{frame_len, RecordHeader, CRC_FROM, FRAME_ALIGN, HEADER_LEN, MAX_PAYLOAD};
use std::ops::Range;

/// A record found in a segment: where it is and where its payload is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedRecord {
    pub offset: usize,
    pub sequence: u64,
    pub batch_start: u64,
    pub payload: Range<usize>,
}

/// How the durable part of a segment ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Records fill the segment to its last byte.
    Full,
    /// Nothing written from `offset` on (zeros, or stale records of a recycled segment).
    Clean { offset: usize },
    /// A torn, never-acknowledged batch starts at `offset`; it is cut there. `dropped` counts
    /// the intact records of that batch found after the damage (they were never acknowledged).
    TornTail { offset: usize, reason: &'static str, dropped: usize },
}

/// The outcome of scanning one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    pub records: Vec<ScannedRecord>,
    /// Where the next record goes (the end of the durable log in this segment).
    pub next_offset: usize,
    /// The sequence the next record gets.
    pub next_sequence: u64,
    pub end: ScanEnd,
}

/// Damage before the tail: acknowledged data is unreadable. Start-up must stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanError {
    pub offset: usize,
    pub expected_sequence: u64,
    pub reason: String,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WAL corrupt at byte offset {} (expected sequence {}): {}",
            self.offset, self.expected_sequence, self.reason
        )
    }
}

impl std::error::Error for ScanError {}

/// A record that passes every check on its own (length, bounds, CRC), whatever its sequence.
fn intact_at(bytes: &[u8], offset: usize) -> Option<(RecordHeader, Range<usize>)> {
    let header_bytes: &[u8; HEADER_LEN] = bytes.get(offset..offset + HEADER_LEN)?.try_into().ok()?;
    if RecordHeader::is_zero(header_bytes) {
        return None;
    }
    let header = RecordHeader::read(header_bytes);
    let len = header.payload_len as usize;
    if len == 0 || len > MAX_PAYLOAD || header.sequence == 0 || header.batch_start == 0 {
        return None;
    }
    if header.batch_start > header.sequence || offset + frame_len(len) > bytes.len() {
        return None;
    }
    let payload = offset + HEADER_LEN..offset + HEADER_LEN + len;
    (crc32fast::hash(&bytes[offset + CRC_FROM..payload.end]) == header.crc).then_some((header, payload))
}

/// Scans one segment whose first record must carry `first_sequence`.
pub fn scan_segment(bytes: &[u8], first_sequence: u64) -> Result<SegmentScan, ScanError> {
    let mut records = Vec::new();
    let mut offset = 0;
    let mut expected = first_sequence;
    while offset + HEADER_LEN <= bytes.len() {
        match intact_at(bytes, offset) {
            Some((header, payload)) if header.sequence == expected => {
                records.push(ScannedRecord {
                    offset,
                    sequence: header.sequence,
                    batch_start: header.batch_start,
                    payload,
                });
                offset += frame_len(header.payload_len as usize);
                // u64 sequences never run out in use; a damaged file that says so is refused.
                expected = expected.checked_add(1).ok_or_else(|| ScanError {
                    offset,
                    expected_sequence: expected,
                    reason: "sequence numbers run out".to_owned(),
                })?;
            }
            _ => break,
        }
    }
    let end = if offset == bytes.len() { ScanEnd::Full } else { classify_damage(bytes, offset, expected)? };
    Ok(SegmentScan { records, next_offset: offset, next_sequence: expected, end })
}

/// The position of the first non-zero byte. Compares 4 KiB blocks with a zero block (a
/// `memcmp`), since start-up runs this over the zeroed rest of every segment and a byte loop
/// dominated restarts of unoptimised builds.
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut at = 0;
    for block in bytes.chunks(ZEROS.len()) {
        if block != &ZEROS[..block.len()] {
            return block.iter().position(|&b| b != 0).map(|p| at + p);
        }
        at += block.len();
    }
    None
}

/// Decides what the first non-record spot at `offset` means (see the module docs).
fn classify_damage(bytes: &[u8], offset: usize, expected: u64) -> Result<ScanEnd, ScanError> {
    let mut dropped = 0;
    let mut any_data = false;
    let mut cursor = offset;
    while cursor < bytes.len() {
        // A record's length field is never 0, so a run of zeros holds no record start: jump to
        // the slot holding the next non-zero byte (the preallocated rest of a segment is zeros,
        // and checking it slot by slot cost a full-segment walk on every start-up).
        match first_nonzero(&bytes[cursor..]) {
            None => break,
            Some(skip) => cursor += skip - skip % FRAME_ALIGN,
        }
        if let Some((header, _)) = intact_at(bytes, cursor) {
            if header.sequence >= expected {
                if header.batch_start > expected {
                    return Err(ScanError {
                        offset,
                        expected_sequence: expected,
                        reason: format!(
                            "record {} of a later write batch (from {}) lies at offset {} beyond unreadable data",
                            header.sequence, header.batch_start, cursor
                        ),
                    });
                }
                dropped += 1;
                any_data = true;
                cursor += frame_len(header.payload_len as usize);
                continue;
            }
            // A stale record of a recycled segment: not part of this log.
            cursor += frame_len(header.payload_len as usize);
            continue;
        }
        let end = (cursor + FRAME_ALIGN).min(bytes.len());
        any_data |= bytes[cursor..end].iter().any(|&b| b != 0);
        cursor = end;
    }
    if !any_data {
        return Ok(ScanEnd::Clean { offset });
    }
    let reason = if dropped > 0 { "unsynced batch partly on disk" } else { "partial record at the end of the log" };
    Ok(ScanEnd::TornTail { offset, reason, dropped })
}

#[cfg(test)]
mod tests;
