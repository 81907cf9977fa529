//! Durable file creation: write to a temporary name, flush to disk, rename into place, flush
//! the directory. A crash at any point leaves either no file (or a `.tmp` file that open
//! removes) or the complete file under its final name.

use crate::storage::lsm::error::{LsmError, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

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
const DIRECT_ALIGN: usize = 4096;

/// Paced writes go out in pieces of this size (a multiple of `DIRECT_ALIGN`).
pub const PACED_CHUNK_BYTES: usize = 512 << 10;

fn try_direct(tmp: &Path, bytes: &[u8], pause: Duration) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT).open(tmp)?;
    if pause.is_zero() {
        file.write_all(bytes)?;
    } else {
        for (i, chunk) in bytes.chunks(PACED_CHUNK_BYTES).enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            file.write_all(chunk)?;
        }
    }
    file.sync_data()
}

fn write_buffered(tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(tmp)?;
    file.write_all(bytes)?;
    file.sync_data()
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
    write_atomic_paced(dir, name, bytes, direct, Duration::ZERO)
}

/// `write_atomic`, with the O_DIRECT write cut into `PACED_CHUNK_BYTES` pieces and `pause`
/// between them.
pub fn write_atomic_paced(dir: &Path, name: &str, bytes: &[u8], direct: bool, pause: Duration) -> Result<WriteMode> {
    let tmp_name = format!("{name}{TMP_SUFFIX}");
    let mode = write_unlisted_paced(dir, &tmp_name, bytes, direct, pause)?;
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
pub fn write_unlisted_paced(dir: &Path, name: &str, bytes: &[u8], direct: bool, pause: Duration) -> Result<WriteMode> {
    let path = dir.join(name);
    let aligned = bytes.as_ptr() as usize % DIRECT_ALIGN == 0 && bytes.len() % DIRECT_ALIGN == 0;
    if direct && aligned && try_direct(&path, bytes, pause).is_ok() {
        return Ok(WriteMode::Direct);
    }
    write_buffered(&path, bytes).map_err(|e| LsmError::io(format!("writing {}", path.display()), e))?;
    Ok(WriteMode::Buffered)
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
