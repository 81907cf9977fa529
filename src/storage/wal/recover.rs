//! Reading a shard's WAL back at start-up: the segments from the one holding the first
//! sequence the caller needs, in order, with the rules of `scan.rs` inside a segment and these
//! across segments:
//! - each segment must start where the previous one ended (its name is the next sequence);
//! - a segment may end early and clean (the writer rotates when a batch does not fit), but a
//!   torn end is allowed only in the last segment that holds records: a torn segment followed
//!   by records means acknowledged data was damaged;
//! - segments after the last one that holds records may be empty (created, then a crash).
//!
//! Checkpoints: `first_sequence` is the first record the caller's state lacks (1 without a
//! checkpoint, else the checkpoint's sequence + 1). Only records from there on are applied. The
//! segments wholly before it are not even opened: once a checkpoint covers them the writer
//! retires them (`WalWriter::retire_through`), and until it has, they are leftovers nobody
//! needs; reading them would only cost start-up time, and demanding them would make a crash
//! between the checkpoint and the retirement fatal. The segment holding `first_sequence` is the
//! last one named at or below it; its records before `first_sequence` are still scanned (the
//! scan needs them to find the records after them, and their CRCs are checked) but not applied.
//! Two ways the log can fail the checkpoint, both refused because state would silently be
//! missing: the first kept segment starts after `first_sequence` (records were deleted), or the
//! log ends before the checkpoint's last record (the checkpoint claims records the log does not
//! hold). A log that ends exactly at the checkpoint is fine: the writer continues there.
//!
//! Recycled segments (reused pool files, see `writer.rs`) hold stale records of an older use
//! after the end of the log. `scan.rs` skips intact stale records, but the bytes right after
//! the log's end are usually the middle of a stale record, which it cannot tell from a record
//! that was being written: it reports a torn tail with nothing dropped. A torn tail in a
//! segment followed by another that holds records is corruption, so a clean rotation out of a
//! recycled segment would stop start-up. The writer therefore always leaves zeros at the end of
//! what it wrote (the block holding the end is zero-padded, a batch ending on a block boundary
//! writes one more zero block, and a recycled segment's first block is zeroed before use), and
//! recovery reads "a zero slot where the next record would start (no record length there), and
//! no intact record of this log after it" as a clean end. A damaged last record keeps its
//! non-zero length field, so it is still cut as a torn tail with a warning; a batch that lost its first sector but left only
//! unreadable fragments after it is called clean, which loses nothing: it was never
//! acknowledged and its fragments can never pass as records. (This also applies to segments
//! that were never recycled: non-zero bytes after a zero slot past the end of a log, with no
//! intact record among them, used to be a torn tail and are now a clean end.)
//!
//! `first_sequence` = 1 reads the whole log exactly as before checkpoints existed, including
//! the `Gap` error for a log whose first segment does not start at 1.

use super::frame::FRAME_ALIGN;
use super::scan::{scan_segment, ScanEnd, ScanError, SegmentScan};
use super::segment::list_segments;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the writer resumes after recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    /// The segment to keep appending to (None: start a new one at `next_sequence`).
    pub segment: Option<(u64, PathBuf)>,
    pub offset: u64,
    pub next_sequence: u64,
}

/// What recovery found, for the start-up log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read (those wholly before `first_sequence` are skipped, not counted).
    pub segments: usize,
    /// Records applied (those from `first_sequence` on).
    pub records: u64,
    /// Bytes of the applied records: from the first applied record to the end of the durable
    /// data, summed over segments.
    pub bytes: u64,
    /// A torn tail that was cut: the file and offset, and the intact records dropped after it.
    pub torn_tail: Option<(PathBuf, usize, usize)>,
}

#[derive(Debug)]
pub enum RecoveryError {
    Io(PathBuf, std::io::Error),
    Corrupt(PathBuf, ScanError),
    Gap {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// The first segment kept in `dir` starts after the checkpoint's `first_sequence`: records
    /// `first_sequence..found` are missing.
    CheckpointGap {
        dir: PathBuf,
        path: PathBuf,
        first_sequence: u64,
        found: u64,
    },
    /// The durable log in `dir` ends at `last` (0: it holds no records), before the
    /// checkpoint's last record `first_sequence - 1`.
    EndsBeforeCheckpoint {
        dir: PathBuf,
        last: u64,
        first_sequence: u64,
    },
}

impl fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            RecoveryError::Corrupt(path, e) => write!(f, "{}: {e}", path.display()),
            RecoveryError::Gap { path, expected, found } => write!(
                f,
                "{}: segment starts at sequence {found} but the log before it ends at {}",
                path.display(),
                expected - 1
            ),
            RecoveryError::CheckpointGap { dir, path, first_sequence, found } => write!(
                f,
                "{}: the checkpoint resumes the WAL in {} at sequence {first_sequence}, but its first segment \
                 (this file) starts at sequence {found}: records {first_sequence}..={} are missing",
                path.display(),
                dir.display(),
                found.saturating_sub(1)
            ),
            RecoveryError::EndsBeforeCheckpoint { dir, last, first_sequence } => write!(
                f,
                "the WAL in {} ends at sequence {last}, before the checkpoint's sequence {}: records {}..={} \
                 are missing",
                dir.display(),
                first_sequence.saturating_sub(1),
                last.saturating_add(1),
                first_sequence.saturating_sub(1)
            ),
        }
    }
}

impl std::error::Error for RecoveryError {}

/// Replays every durable record in `dir` from `first_sequence` on through
/// `apply(sequence, payload)`, in order, and says where the writer resumes. `first_sequence` is
/// 1 to replay the whole log (0 is taken as 1); see the module docs for a checkpoint's.
pub fn recover(
    dir: &Path,
    first_sequence: u64,
    mut apply: impl FnMut(u64, &[u8]),
) -> Result<(ResumePoint, RecoveryReport), RecoveryError> {
    let first_sequence = first_sequence.max(1);
    let mut segments = list_segments(dir).map_err(|e| RecoveryError::Io(dir.to_path_buf(), e))?;
    // The segment holding `first_sequence`: the last one named at or below it. The ones before
    // it are not read. Without one (and without a checkpoint) the loop below starts from the
    // first segment, as a log that must begin at 1.
    let mut next_sequence = first_sequence;
    match segments.iter().rposition(|(first, _)| *first <= first_sequence) {
        Some(holding) => {
            segments.drain(..holding);
            next_sequence = segments[0].0;
        }
        None if first_sequence > 1 => {
            if let Some((found, path)) = segments.into_iter().next() {
                return Err(RecoveryError::CheckpointGap { dir: dir.to_path_buf(), path, first_sequence, found });
            }
            return Err(RecoveryError::EndsBeforeCheckpoint { dir: dir.to_path_buf(), last: 0, first_sequence });
        }
        None => {}
    }
    let mut report = RecoveryReport::default();
    let mut resume = ResumePoint { segment: None, offset: 0, next_sequence };
    // A segment whose end was cut: (file, offset of the damage, sequence expected there).
    let mut torn: Option<(PathBuf, usize, u64)> = None;
    for (first, path) in segments {
        let mapped = map_segment(&path).map_err(|e| RecoveryError::Io(path.clone(), e))?;
        let bytes = mapped.as_deref().unwrap_or(&[]);
        let mut scan = scan_segment(bytes, first).map_err(|e| RecoveryError::Corrupt(path.clone(), e))?;
        settle_recycled_end(bytes, &mut scan);
        if scan.records.is_empty() {
            // Created but never written (or only torn): nothing to replay; later ones must be empty too.
            let torn_here = match scan.end {
                ScanEnd::TornTail { offset, dropped, .. } => {
                    torn.get_or_insert((path.clone(), offset, next_sequence));
                    Some((offset, dropped))
                }
                _ => None,
            };
            if first == next_sequence {
                // The writer resumes here: if the first batch was torn, it must clear what is
                // left of it (intact records of that batch would otherwise outlive the reuse
                // of their sequence numbers, and a recycled segment must hold none).
                if let Some((offset, dropped)) = torn_here {
                    report.torn_tail = Some((path.clone(), offset, dropped));
                }
                resume = ResumePoint { segment: Some((first, path.clone())), offset: 0, next_sequence };
            }
            report.segments += 1;
            continue;
        }
        if let Some((torn_path, offset, expected_sequence)) = &torn {
            return Err(RecoveryError::Corrupt(
                torn_path.clone(),
                ScanError {
                    offset: *offset,
                    expected_sequence: *expected_sequence,
                    reason: format!("its end is damaged but {} holds later records", path.display()),
                },
            ));
        }
        if first != next_sequence {
            return Err(RecoveryError::Gap { path, expected: next_sequence, found: first });
        }
        // Records before `first_sequence` (only in the first segment read) are checked, not applied.
        let applied = scan.records.partition_point(|record| record.sequence < first_sequence);
        if let Some(from) = scan.records.get(applied) {
            report.bytes += (scan.next_offset - from.offset) as u64;
        }
        for record in &scan.records[applied..] {
            apply(record.sequence, &bytes[record.payload.clone()]);
        }
        report.segments += 1;
        report.records += (scan.records.len() - applied) as u64;
        next_sequence = scan.next_sequence;
        if let ScanEnd::TornTail { offset, dropped, .. } = scan.end {
            report.torn_tail = Some((path.clone(), offset, dropped));
            torn = Some((path.clone(), offset, next_sequence));
        }
        resume = ResumePoint { segment: Some((first, path)), offset: scan.next_offset as u64, next_sequence };
    }
    if next_sequence < first_sequence {
        return Err(RecoveryError::EndsBeforeCheckpoint {
            dir: dir.to_path_buf(),
            last: next_sequence - 1,
            first_sequence,
        });
    }
    Ok((resume, report))
}

/// A segment's bytes, mapped read-only (`None` for an empty file, which cannot be mapped).
/// Mapping instead of reading saves copying every byte of the log out of the page cache, a
/// fifth of the reader thread's time in a replay.
#[allow(unsafe_code)]
fn map_segment(path: &Path) -> std::io::Result<Option<memmap2::Mmap>> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: recovery runs before the shard's writer opens the log, and nothing else writes
    // or truncates a segment then (another process truncating it would raise SIGBUS, as for
    // any mmap-based reader; the history store's tables are read the same way). The mapping is
    // dropped before the next segment is mapped, and long before the writer starts.
    unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map(Some)
}

/// A torn tail with nothing of this log after the damage point and no record header at it is
/// the clean end of a recycled segment: the writer leaves zeros where the next record goes,
/// and what follows is stale data of the segment's older use (see the module docs).
fn settle_recycled_end(bytes: &[u8], scan: &mut SegmentScan) {
    if let ScanEnd::TornTail { offset, dropped: 0, .. } = scan.end {
        // A record's length field is never zero, so a zero first slot starts no record. Only
        // the slot is checked (length and CRC fields): the writer's zero padding may end right
        // after it, at a block boundary.
        let slot = bytes.get(offset..(offset + FRAME_ALIGN).min(bytes.len())).unwrap_or(&[]);
        if slot.iter().all(|&b| b == 0) {
            scan.end = ScanEnd::Clean { offset };
        }
    }
}
