//! Segment files: naming and listing. A segment is named after the sequence of its first
//! record, zero-padded so names sort in log order: `wal-00000000000000000001.log`.
//!
//! Retired segments wait for reuse in a free pool under another name,
//! `wal-free-00000000000000000123.tmp`: not a segment name, so recovery never reads them. The
//! number is the highest sequence the file may hold (the first sequence of the segment that
//! followed it, less one): the writer reuses a pool file only for a segment starting after it,
//! so the stale records in a recycled segment always have lower sequences than its own, which
//! is what lets the scan treat them as "nothing written" (`scan.rs`).

use std::io;
use std::path::{Path, PathBuf};

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".log";
const POOL_PREFIX: &str = "wal-free-";
const POOL_SUFFIX: &str = ".tmp";

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

/// The name of a free-pool file holding no record above `last_sequence`.
pub fn pool_name(last_sequence: u64) -> String {
    format!("{POOL_PREFIX}{last_sequence:020}{POOL_SUFFIX}")
}

/// The highest sequence a free-pool file name allows, if it is one of ours.
pub fn parse_pool_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(POOL_PREFIX)?.strip_suffix(POOL_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segments in `dir`, sorted by first sequence. A missing directory is an empty log.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    list_named(dir, parse_segment_name)
}

/// Free-pool files in `dir`, sorted by the highest sequence they may hold.
pub fn list_pool(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    list_named(dir, parse_pool_name)
}

fn list_named(dir: &Path, parse: fn(&str) -> Option<u64>) -> io::Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(number) = entry.file_name().to_str().and_then(parse) {
            found.push((number, entry.path()));
        }
    }
    found.sort();
    Ok(found)
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

    #[test]
    fn pool_names_are_not_segment_names() {
        assert_eq!(pool_name(123), "wal-free-00000000000000000123.tmp");
        assert_eq!(parse_pool_name(&pool_name(123)), Some(123));
        assert_eq!(parse_segment_name(&pool_name(123)), None);
        assert_eq!(parse_pool_name(&segment_name(123)), None);
        assert_eq!(parse_pool_name("wal-spare.tmp"), None);
    }
}
