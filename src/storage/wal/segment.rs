//! Segment files: naming and listing. A segment is named after the sequence of its first
//! record, zero-padded so names sort in log order: `wal-00000000000000000001.log`.

use std::io;
use std::path::{Path, PathBuf};

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".log";

pub fn segment_name(first_sequence: u64) -> String {
    format!("{PREFIX}{first_sequence:020}{SUFFIX}")
}

pub fn segment_path(dir: &Path, first_sequence: u64) -> PathBuf {
    dir.join(segment_name(first_sequence))
}

/// The first sequence a segment file name stands for, if it is one of ours.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&s| s > 0)
}

/// Segments in `dir`, sorted by first sequence. A missing directory is an empty log.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
            segments.push((first, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(segment_name(1), "wal-00000000000000000001.log");
        assert_eq!(parse_segment_name(&segment_name(123_456)), Some(123_456));
        assert_eq!(parse_segment_name("wal-1.log"), None);
        assert_eq!(parse_segment_name("wal-00000000000000000000.log"), None);
        assert_eq!(parse_segment_name("other.log"), None);
        assert!(segment_name(9) < segment_name(10));
    }
}
