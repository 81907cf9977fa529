//! Durable file creation: write to a temporary name, flush to disk, rename into place, flush
//! the directory. A crash at any point leaves either no file (or a `.tmp` file that open
//! removes) or the complete file under its final name.

use crate::storage::lsm::error::{LsmError, Result};
use rkyv::util::AlignedVec;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// Suffix of files being written; anything with it is garbage after a crash.
pub const TMP_SUFFIX: &str = ".tmp";

/// How a file's bytes reached the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// O_DIRECT (page cache bypassed), then fdatasync for the file size.
    Direct,
    /// Ordinary buffered write, then fdatasync: the filesystem refused O_DIRECT (tmpfs, some
    /// overlay filesystems) or the buffer was not block-aligned.
    Buffered,
}

/// O_DIRECT needs the buffer address, length and file offset aligned to the logical block
/// size; 4 KiB covers every common device.
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// How a table's O_DIRECT write is spread out, so that another writer's small synced writes
/// on the same disk (the shard's WAL) do not queue behind one large write, nor wait for a
/// device flush that carries megabytes of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// The write goes out in pieces of this many bytes (a multiple of `DIRECT_ALIGN`; 0: one
    /// write).
    pub piece_bytes: usize,
    /// A pause after every piece, in microseconds.
    pub pause_us: u64,
    /// At most this many bytes per second over the file (0: no limit): after each piece the
    /// writer sleeps until the bytes so far fit the rate.
    pub bytes_per_s: u64,
    /// An fdatasync after every this many bytes (0: only at the end), so that a device flush
    /// from another writer carries at most this much of the file.
    pub sync_every_bytes: usize,
}

impl Pacing {
    /// One write, one fdatasync.
    pub const NONE: Pacing = Pacing { piece_bytes: 0, pause_us: 0, bytes_per_s: 0, sync_every_bytes: 0 };
}

/// Opens `path` to be written from its start: emptied (`truncate`), or kept as it is to be
/// written over (a spare file: its blocks are reused, and `finish` sets its length).
fn open_for_write(path: &Path, truncate: bool, direct: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(truncate);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(path)
}

/// Ends a write of `len` bytes from the start of `file`: cuts off what a longer file held
/// past them (a spare written over), then syncs the data (and the length with it).
fn finish(file: &File, len: usize, truncated: bool) -> std::io::Result<()> {
    if !truncated {
        file.set_len(len as u64)?;
    }
    file.sync_data()
}

fn try_direct(tmp: &Path, bytes: &[u8], pacing: Pacing, truncate: bool) -> std::io::Result<()> {
    let mut file = open_for_write(tmp, truncate, true)?;
    if pacing.piece_bytes == 0 {
        file.write_all(bytes)?;
        return finish(&file, bytes.len(), truncate);
    }
    let started = Instant::now();
    let (mut written, mut unsynced) = (0usize, 0usize);
    for chunk in bytes.chunks(pacing.piece_bytes) {
        file.write_all(chunk)?;
        written += chunk.len();
        unsynced += chunk.len();
        if pacing.sync_every_bytes > 0 && unsynced >= pacing.sync_every_bytes && written < bytes.len() {
            file.sync_data()?;
            unsynced = 0;
        }
        if written == bytes.len() {
            break;
        }
        if pacing.pause_us > 0 {
            std::thread::sleep(Duration::from_micros(pacing.pause_us));
        }
        if pacing.bytes_per_s > 0 {
            let due = Duration::from_secs_f64(written as f64 / pacing.bytes_per_s as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    }
    finish(&file, bytes.len(), truncate)
}

fn write_buffered(tmp: &Path, bytes: &[u8], truncate: bool) -> std::io::Result<()> {
    let mut file = open_for_write(tmp, truncate, false)?;
    file.write_all(bytes)?;
    finish(&file, bytes.len(), truncate)
}

/// Flushes a directory's entries (a rename or unlink in it) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LsmError::io(format!("fsync of directory {}", dir.display()), e))
}

/// Writes `bytes` as `dir/name` atomically and durably. With `direct`, O_DIRECT is tried first
/// when the buffer allows it, falling back to a buffered write; the mode used is returned.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], direct: bool) -> Result<WriteMode> {
    write_atomic_paced(dir, name, bytes, direct, Pacing::NONE)
}

/// `write_atomic`, with the O_DIRECT write spread out as `pacing` says.
pub fn write_atomic_paced(dir: &Path, name: &str, bytes: &[u8], direct: bool, pacing: Pacing) -> Result<WriteMode> {
    let tmp_name = format!("{name}{TMP_SUFFIX}");
    let mode = write_unlisted_paced(dir, &tmp_name, bytes, direct, pacing)?;
    let (tmp, target) = (dir.join(tmp_name), dir.join(name));
    fs::rename(&tmp, &target)
        .map_err(|e| LsmError::io(format!("renaming {} to {}", tmp.display(), target.display()), e))?;
    sync_dir(dir)?;
    Ok(mode)
}

/// Writes `bytes` as `dir/name` durably but not atomically: straight under its final name, then
/// fdatasync; no rename and no directory sync. For a file that nothing reads until a later
/// commit lists it (a table, until the manifest names it): a crash leaves either nothing or a
/// file no manifest lists, which the store's open removes. The caller syncs the directory
/// once, after all of a job's files are written and before the commit that lists them
/// (`sync_dir`), rather than once per file. Paced as `write_atomic_paced`.
pub fn write_unlisted_paced(dir: &Path, name: &str, bytes: &[u8], direct: bool, pacing: Pacing) -> Result<WriteMode> {
    write_unlisted_over(dir, name, bytes, direct, pacing, None)
}

/// `write_unlisted_paced`, written over `spare` when given (a file nothing reads, of any
/// length: `spare_files`): renamed to `name` first, its blocks reused, its length set to
/// `bytes`' at the end. A spare that cannot be renamed is left, and the file created anew.
pub fn write_unlisted_over(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    direct: bool,
    pacing: Pacing,
    spare: Option<&Path>,
) -> Result<WriteMode> {
    let path = dir.join(name);
    let over = spare.is_some_and(|spare| fs::rename(spare, &path).is_ok());
    let aligned = bytes.as_ptr() as usize % DIRECT_ALIGN == 0 && bytes.len() % DIRECT_ALIGN == 0;
    if direct && aligned && try_direct(&path, bytes, pacing, !over).is_ok() {
        return Ok(WriteMode::Direct);
    }
    write_buffered(&path, bytes, true).map_err(|e| LsmError::io(format!("writing {}", path.display()), e))?;
    Ok(WriteMode::Buffered)
}

/// A file read with O_DIRECT where the filesystem allows it, else through the page cache: for
/// bytes read once and not again soon (a table's index and filter at open, a compaction's
/// inputs), whose pages in the cache would only be evicted again when the file goes
/// (docs/PERFORMANCE.md "Compaction inputs read with O_DIRECT").
pub struct UncachedFile {
    file: File,
    /// Opened with O_DIRECT, and no read refused since.
    direct: bool,
    path: std::path::PathBuf,
}

impl UncachedFile {
    /// Opens `path` for reading: with O_DIRECT when `try_direct` and the filesystem takes it.
    pub fn open(path: &Path, try_direct: bool) -> std::io::Result<Self> {
        let direct = try_direct.then(|| OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path));
        let (file, direct) = match direct {
            Some(Ok(file)) => (file, true),
            _ => (File::open(path)?, false),
        };
        Ok(UncachedFile { file, direct, path: path.to_path_buf() })
    }

    /// Whether the reads so far bypassed the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Reads the file from `start` (a multiple of `DIRECT_ALIGN`) into `buf[..want]` (`buf`
    /// grows to `want`, rounded up to `DIRECT_ALIGN`, and never shrinks, so a reused buffer
    /// is not zeroed again); returns how many bytes it read, fewer at the end of the file.
    pub fn read_window(
        &mut self,
        buf: &mut AlignedVec<DIRECT_ALIGN>,
        start: u64,
        want: usize,
    ) -> std::io::Result<usize> {
        debug_assert_eq!(start % DIRECT_ALIGN as u64, 0);
        let room = want.next_multiple_of(DIRECT_ALIGN);
        if buf.len() < room {
            buf.resize(room, 0);
        }
        let mut got = 0;
        while got < want {
            // A direct read asks for whole blocks (the tail past `want` is read, not counted).
            let end = if self.direct { room } else { want };
            match self.file.read_at(&mut buf.as_mut_slice()[got..end], start + got as u64) {
                Ok(0) => break,
                Ok(n) => got = (got + n).min(want),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // A direct read refused (an unaligned remainder after a short read, or a
                // filesystem that took the flag at open but not the read): buffered from here.
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.file = File::open(&self.path)?;
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }
}

/// Removes every `*.tmp` file in `dir` (leftovers of writes a crash interrupted); returns how
/// many.
pub fn remove_temporaries(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let entries = fs::read_dir(dir).map_err(|e| LsmError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LsmError::io(format!("listing {}", dir.display()), e))?;
        if entry.file_name().to_string_lossy().ends_with(TMP_SUFFIX) {
            fs::remove_file(entry.path())
                .map_err(|e| LsmError::io(format!("removing {}", entry.path().display()), e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> AlignedVec<DIRECT_ALIGN> {
        let mut buf = AlignedVec::<DIRECT_ALIGN>::with_capacity(len);
        buf.extend_from_slice(&(0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>());
        buf
    }

    #[test]
    fn every_pacing_writes_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = pattern(9 * DIRECT_ALIGN + 64 * 1024);
        let policies = [
            Pacing::NONE,
            Pacing { piece_bytes: DIRECT_ALIGN, pause_us: 0, bytes_per_s: 0, sync_every_bytes: 0 },
            Pacing { piece_bytes: 4 * DIRECT_ALIGN, pause_us: 50, bytes_per_s: 0, sync_every_bytes: 0 },
            Pacing { piece_bytes: 2 * DIRECT_ALIGN, pause_us: 0, bytes_per_s: 0, sync_every_bytes: 3 * DIRECT_ALIGN },
            Pacing { piece_bytes: 8 * DIRECT_ALIGN, pause_us: 10, bytes_per_s: 64 << 20, sync_every_bytes: 1 },
        ];
        for (i, pacing) in policies.into_iter().enumerate() {
            let name = format!("t{i}");
            write_atomic_paced(dir.path(), &name, &bytes, true, pacing).unwrap();
            assert_eq!(fs::read(dir.path().join(&name)).unwrap(), bytes.as_slice(), "{pacing:?}");
            assert!(!dir.path().join(format!("{name}{TMP_SUFFIX}")).exists());
        }
    }

    /// A spare longer or shorter than the new bytes, written over directly or buffered
    /// (unaligned bytes), paced or not: the file holds exactly the new bytes, under the new
    /// name, and the spare's name is gone.
    #[test]
    fn writing_over_a_spare_leaves_exactly_the_new_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let paced = Pacing { piece_bytes: 2 * DIRECT_ALIGN, pause_us: 0, bytes_per_s: 0, sync_every_bytes: 0 };
        for (i, (spare_len, new_len, pacing)) in [
            (64 * DIRECT_ALIGN, 9 * DIRECT_ALIGN, Pacing::NONE),
            (3 * DIRECT_ALIGN, 40 * DIRECT_ALIGN, Pacing::NONE),
            (64 * DIRECT_ALIGN, 9 * DIRECT_ALIGN, paced),
            (20 * DIRECT_ALIGN, 5 * DIRECT_ALIGN + 17, Pacing::NONE),
        ]
        .into_iter()
        .enumerate()
        {
            let spare = dir.path().join(format!("{i}.spare"));
            fs::write(&spare, vec![0xEE; spare_len]).unwrap();
            let bytes = pattern(new_len);
            let name = format!("t{i}");
            let mode = write_unlisted_over(dir.path(), &name, &bytes, true, pacing, Some(&spare)).unwrap();
            assert_eq!(mode == WriteMode::Direct, new_len % DIRECT_ALIGN == 0, "case {i}");
            assert_eq!(fs::read(dir.path().join(&name)).unwrap(), bytes.as_slice(), "case {i}");
            assert!(!spare.exists(), "case {i}");
        }
        // A spare that is not there: the file is created as without one.
        let bytes = pattern(4 * DIRECT_ALIGN);
        write_unlisted_over(dir.path(), "fresh", &bytes, true, Pacing::NONE, Some(&dir.path().join("gone.spare")))
            .unwrap();
        assert_eq!(fs::read(dir.path().join("fresh")).unwrap(), bytes.as_slice());
    }

    #[test]
    fn a_rate_limit_spreads_the_write_over_time() {
        // 256 KiB in 64 KiB pieces at 1 MiB/s: the last piece may start only after the first
        // three (192 KiB) fit the rate, 187.5 ms in. Sleeps never end early: a lower bound.
        let dir = tempfile::tempdir().unwrap();
        let bytes = pattern(256 << 10);
        let pacing = Pacing { piece_bytes: 64 << 10, pause_us: 0, bytes_per_s: 1 << 20, sync_every_bytes: 0 };
        let started = Instant::now();
        let mode = write_unlisted_paced(dir.path(), "rated", &bytes, true, pacing).unwrap();
        assert_eq!(mode, WriteMode::Direct, "pacing applies to direct writes");
        assert!(started.elapsed() >= Duration::from_millis(187), "took {:?}", started.elapsed());
        assert_eq!(fs::read(dir.path().join("rated")).unwrap(), bytes.as_slice());
    }
}
