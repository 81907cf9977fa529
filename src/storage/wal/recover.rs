//! Reading a shard's whole WAL back at start-up: every segment in order, with the rules of
//! `scan.rs` inside a segment and these across segments:
//! - each segment must start where the previous one ended (its name is the next sequence);
//! - a segment may end early and clean (the writer rotates when a batch does not fit), but a
//!   torn end is allowed only in the last segment that holds records: a torn segment followed
//!   by records means acknowledged data was damaged;
//! - segments after the last one that holds records may be empty (created, then a crash).

use super::scan::{scan_segment, ScanEnd, ScanError};
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
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    /// A torn tail that was cut: the file and offset, and the intact records dropped after it.
    pub torn_tail: Option<(PathBuf, usize, usize)>,
}

#[derive(Debug)]
pub enum RecoveryError {
    Io(PathBuf, std::io::Error),
    Corrupt(PathBuf, ScanError),
    Gap { path: PathBuf, expected: u64, found: u64 },
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
        }
    }
}

impl std::error::Error for RecoveryError {}

/// Replays every durable record in `dir` through `apply(sequence, payload)`, in order.
pub fn recover(
    dir: &Path,
    first_sequence: u64,
    mut apply: impl FnMut(u64, &[u8]),
) -> Result<(ResumePoint, RecoveryReport), RecoveryError> {
    let segments = list_segments(dir).map_err(|e| RecoveryError::Io(dir.to_path_buf(), e))?;
    let mut report = RecoveryReport::default();
    let mut next_sequence = first_sequence;
    let mut resume = ResumePoint { segment: None, offset: 0, next_sequence };
    // A segment whose end was cut: (file, offset of the damage, sequence expected there).
    let mut torn: Option<(PathBuf, usize, u64)> = None;
    // One buffer for every segment: a fresh 64 MiB allocation per segment cost a page fault
    // and a kernel zeroing per page, as much as the read itself.
    let mut buffer = Vec::new();
    for (first, path) in segments {
        buffer.clear();
        std::fs::File::open(&path)
            .and_then(|mut file| std::io::Read::read_to_end(&mut file, &mut buffer))
            .map_err(|e| RecoveryError::Io(path.clone(), e))?;
        let bytes = &buffer[..];
        let scan = scan_segment(bytes, first).map_err(|e| RecoveryError::Corrupt(path.clone(), e))?;
        if scan.records.is_empty() {
            // Created but never written (or only torn): nothing to replay; later ones must be empty too.
            if let ScanEnd::TornTail { offset, .. } = scan.end {
                torn.get_or_insert((path.clone(), offset, next_sequence));
            }
            if first == next_sequence {
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
        for record in &scan.records {
            apply(record.sequence, &bytes[record.payload.clone()]);
        }
        report.segments += 1;
        report.records += scan.records.len() as u64;
        report.bytes += scan.next_offset as u64;
        next_sequence = scan.next_sequence;
        if let ScanEnd::TornTail { offset, dropped, .. } = scan.end {
            report.torn_tail = Some((path.clone(), offset, dropped));
            torn = Some((path.clone(), offset, next_sequence));
        }
        resume = ResumePoint { segment: Some((first, path)), offset: scan.next_offset as u64, next_sequence };
    }
    Ok((resume, report))
}
