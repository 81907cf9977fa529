//! How the WAL writes small batches with `sync = "none"`: through the page cache, not O_DIRECT
//! (a batch of `BULK_BATCH_BYTES` or more still goes direct; see `writer.rs`).
//!
//! With `sync = "none"` a request is answered once its records are written, without waiting for
//! the disk: a crash of the process must not lose them, a crash of the machine may. A buffered
//! `pwrite` gives exactly that at the cost of a copy into the page cache (a few microseconds
//! for a group of tens of KiB), where an O_DIRECT write waits for the device (p50 ~140 us,
//! p99.99 ~10 ms on our VMs, docs/PERFORMANCE.md "sync = none through the page cache"), and
//! that wait was most of a `none` answer's latency. The writes are synchronous on the shard's
//! thread: they only copy, and the dirty bytes stay bounded (below).
//!
//! Dirty bytes are bounded by starting the write-back of whole pages behind the batch each time
//! `WRITEBACK_EVERY_BYTES` more were written (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: it starts
//! the disk writes and returns). Without it a rotation's fdatasync (the old segment must be on
//! disk before the log continues in the next) would write back up to a whole segment while the
//! committer waits. The page holding the end of the log is left out: the next batch writes into
//! it, and a write into a page under write-back waits for that write to finish (stable pages),
//! which an fdatasync here instead cost every tenth answer 100-200 us.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes written between write-backs started: bounds the dirty bytes a rotation's fdatasync
/// meets to about this much.
pub const WRITEBACK_EVERY_BYTES: u64 = 1024 * 1024;

/// Write-back goes in whole pages.
const PAGE_BYTES: u64 = 4096;

/// Zeros for the padding after a batch: at most a page (`padded_end`).
static ZEROS: [u8; PAGE_BYTES as usize] = [0; PAGE_BYTES as usize];

/// The buffered handle of the current segment.
pub struct PageCacheWriter {
    file: File,
    /// Write-back was started for the segment's bytes before this offset.
    written_back_to: u64,
}

impl PageCacheWriter {
    /// Opens segment `path` for buffered writes, its bytes before `offset` already written
    /// (beside the writer's O_DIRECT handle, which still zero-fills new segments and runs the
    /// fdatasyncs).
    pub fn open(path: &Path, offset: u64) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        Ok(PageCacheWriter { file, written_back_to: offset - offset % PAGE_BYTES })
    }

    /// Moves to the next segment, empty; the caller has just fdatasynced the old one.
    pub fn reopen(&mut self, path: &Path) -> io::Result<()> {
        self.file = std::fs::OpenOptions::new().write(true).open(path)?;
        self.written_back_to = 0;
        Ok(())
    }

    /// Writes `batch` at `at` into the page cache, then zeros to the end of its last page (and
    /// the whole next page when the batch ends on a page boundary, within `segment_bytes`),
    /// which covers the zero padding a direct write of the batch writes (`prepare_writes`).
    /// Starts the write-back of the whole pages before the end of `batch` once
    /// `WRITEBACK_EVERY_BYTES` of them wait for it.
    ///
    /// Whole pages, because a write that covers a page in part makes the kernel read the rest
    /// of it from disk first, unless it is cached: padded to the page's end, the next batch
    /// starts in a page this one left in the cache. (Padded to the 512-byte blocks a direct
    /// write needs, most batches waited for a disk read.)
    pub fn write(&mut self, at: u64, batch: &[u8], segment_bytes: u64) -> io::Result<()> {
        let end = at + batch.len() as u64;
        let zeros = &ZEROS[..(padded_end(end, segment_bytes) - end) as usize];
        let written = write_padded_at(&self.file, at, batch, zeros)?;
        if written < batch.len() + zeros.len() {
            // A short write (rare): the rest in plain calls.
            if written < batch.len() {
                self.file.write_all_at(&batch[written..], at + written as u64)?;
            }
            let zeros_written = written.saturating_sub(batch.len());
            self.file.write_all_at(&zeros[zeros_written..], end + zeros_written as u64)?;
        }
        let whole_pages_end = end - end % PAGE_BYTES;
        if whole_pages_end >= self.written_back_to + WRITEBACK_EVERY_BYTES {
            start_writeback(&self.file, self.written_back_to, whole_pages_end)?;
            self.written_back_to = whole_pages_end;
        }
        Ok(())
    }
}

/// Where the zero padding after a batch ending at `end` ends: the end of its page, or of the
/// next page when `end` is on a page boundary (the slot after the last record must read as
/// zeros, even in a recycled segment; see `writer.rs`), never past the segment.
fn padded_end(end: u64, segment_bytes: u64) -> u64 {
    let mut padded = end.next_multiple_of(PAGE_BYTES);
    if padded == end {
        padded += PAGE_BYTES;
    }
    padded.min(segment_bytes.max(end))
}

/// `pwritev` of `batch` then `zeros` at `at`; returns the bytes written.
#[allow(unsafe_code)]
fn write_padded_at(file: &File, at: u64, batch: &[u8], zeros: &[u8]) -> io::Result<usize> {
    let parts = [
        libc::iovec { iov_base: batch.as_ptr() as *mut libc::c_void, iov_len: batch.len() },
        libc::iovec { iov_base: zeros.as_ptr() as *mut libc::c_void, iov_len: zeros.len() },
    ];
    loop {
        // SAFETY: both iovecs point into live slices for the whole call, and the kernel only
        // reads them (a write).
        let rc = unsafe { libc::pwritev(file.as_raw_fd(), parts.as_ptr(), 2, at as libc::off_t) };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Starts writing `file`'s dirty pages in `[from, to)` to disk, without waiting for them.
#[allow(unsafe_code)]
fn start_writeback(file: &File, from: u64, to: u64) -> io::Result<()> {
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches with their padding land where they belong across several write-backs, and a
    /// writer opened in the middle of a page starts its write-backs at that page.
    #[test]
    fn batches_and_padding_land_in_place_across_write_backs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let segment_bytes = 4 * WRITEBACK_EVERY_BYTES as usize;
        std::fs::write(&path, vec![0xEEu8; segment_bytes]).unwrap();
        let mut expected = vec![0xEEu8; segment_bytes];
        let mut offset = 1000usize;
        expected[..offset].fill(7);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&expected[..offset], 0).unwrap();
        let mut writer = PageCacheWriter::open(&path, offset as u64).unwrap();
        assert_eq!(writer.written_back_to, 0);
        let mut round = 0u8;
        while offset < 5 * WRITEBACK_EVERY_BYTES as usize / 2 {
            round = round.wrapping_add(1);
            let batch = vec![round; 1 + (round as usize * 37) % 9000];
            let end = offset + batch.len();
            writer.write(offset as u64, &batch, segment_bytes as u64).unwrap();
            expected[offset..end].copy_from_slice(&batch);
            let padded = padded_end(end as u64, segment_bytes as u64) as usize;
            assert!(padded > end && padded % 4096 == 0 && padded - end <= 4096 + (end % 4096 == 0) as usize * 4096);
            expected[end..padded].fill(0);
            offset = end;
        }
        assert!(writer.written_back_to >= WRITEBACK_EVERY_BYTES, "write-back started: {}", writer.written_back_to);
        assert_eq!(writer.written_back_to % PAGE_BYTES, 0);
        // Never the page the next batch writes into.
        assert!(writer.written_back_to <= offset as u64 / PAGE_BYTES * PAGE_BYTES);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn padding_ends_on_a_page_and_clears_the_next_slot_within_the_segment() {
        assert_eq!(padded_end(1, 65536), 4096);
        assert_eq!(padded_end(4095, 65536), 4096);
        // On a boundary: the next page too, so the slot after the last record reads as zeros.
        assert_eq!(padded_end(4096, 65536), 8192);
        assert_eq!(padded_end(0, 65536), 4096);
        // Never past the segment.
        assert_eq!(padded_end(61440, 65536), 65536);
        assert_eq!(padded_end(65536, 65536), 65536);
        assert_eq!(padded_end(65000, 65536), 65536);
    }
}
