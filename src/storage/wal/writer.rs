//! The WAL writer of one shard, on glommio's io_uring direct I/O.
//!
//! Records are appended to an in-memory batch; `commit` writes the batch with one aligned
//! `write_at` into the preallocated segment. In durable mode the segments are opened with
//! `O_DSYNC`, so a write completes only once its bytes (and any metadata needed to read them)
//! are on disk: the write is the group's sync, with no `fdatasync` of its own. The kernel then
//! flushes the device from the write's completion (a kernel worker on the CPU that took the
//! disk's interrupt), where an `fdatasync` through io_uring always went to an io-wq thread on
//! the shard's core: two context switches there per group, and a second request
//! (docs/PERFORMANCE.md "Durable writes with O_DSYNC"). Only after `commit` returns may the
//! records be acknowledged. A batch is written only after the previous
//! `commit` finished (the contract `scan.rs` relies on), and never spans segments: when it does
//! not fit, the writer moves to a new segment named after the batch's first sequence.
//!
//! With `sync = none`, small batches go through the page cache instead (`page_cache.rs`) and
//! `commit` returns once they are copied there, where an O_DIRECT write waits for the device.
//! Large batches (`BULK_BATCH_BYTES`) still go O_DIRECT: copying and writing back a MiB costs
//! more than the direct write. Either kind of write may follow the other in a segment: the
//! kernel writes back cached pages before a direct write over them and drops them after. In
//! durable mode every batch goes O_DIRECT: a copy into the page cache with the fdatasync
//! writing it back was faster alone (the WAL bench) and slower in the server, whose io-wq
//! thread then does the write-back on the shard's core (docs/PERFORMANCE.md).
//!
//! O_DIRECT writes whole blocks, so the block holding the end of the previous batch is written
//! again with the new records after it. Its old bytes are written unchanged, so a sector-atomic
//! device cannot lose synced data by a crash during that write.
//!
//! Segment recycling. Once a checkpoint covers every record through some sequence, the
//! segments holding only such records are never read again (recovery starts at the segment
//! holding the checkpoint's next sequence). `retire_through` takes them out of the log by
//! renaming them into a small free pool (`wal-free-<last>.tmp`, not a segment name), and the
//! next segment the writer needs is a pool file renamed into place rather than a new file.
//! The point is the sync cost: every block of a used segment has been written, so writing it
//! again and fdatasyncing is a data-only flush, where a fresh file needs either a zero-write of
//! the whole segment (a second write of every byte) or an extent conversion, and a journal
//! commit, on every sync (a segment that was only preallocated and not filled, or whose torn
//! tail was deallocated, still has unwritten extents there, which convert on first write as in
//! a fresh unzeroed segment). A recycled segment is not zeroed: its old records carry sequences
//! below any the new use writes (the pool name bounds them, and a pool file is used only for a
//! segment starting after that bound), and `scan.rs` reads valid records with an older sequence
//! as "nothing written". Three details keep the ends of such a segment readable as clean (see
//! `recover.rs` for why that matters): the block holding the end of each batch is zero-padded
//! as before, a batch that ends exactly on a block boundary also writes the next block as
//! zeros, and a pool file's first block is zeroed before use, so the slot where the next record
//! would start always reads as zeros (no record length), never as a stale fragment.
//!
//! Ordering: `retire_through` only touches segments before the current one whose successor
//! starts at or below `sequence + 1` (so every record in them is covered), and its renames are
//! made durable by one directory fsync before it returns. A crash before that fsync may leave
//! some of them under their old names: recovery from the checkpoint never reads them, and the
//! next `retire_through` retires them again. The caller must make the checkpoint durable
//! before calling it, since retired records are gone for good.

use super::frame::{encode_record, frame_len, MAX_PAYLOAD};
use super::page_cache::PageCacheWriter;
use super::recover::ResumePoint;
use super::segment::{list_pool, list_segments, pool_name, segment_path};
use glommio::io::{DmaFile, OpenOptions};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Whether `commit` waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// fdatasync after every batch: acknowledged means on disk.
    Durable,
    /// No sync: the operator chose speed; a crash loses what the OS had not written.
    None,
}

#[derive(Clone, Debug)]
pub struct WalConfig {
    pub dir: PathBuf,
    /// Bytes per segment file, preallocated (a multiple of 4 KiB).
    pub segment_bytes: u64,
    pub sync: SyncMode,
}

/// Counters for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub records: u64,
    pub batches: u64,
    pub bytes: u64,
    pub syncs: u64,
    pub segments_created: u64,
    /// Of those, segments only preallocated, not zero-written (`BULK_BATCH_BYTES`).
    pub segments_unzeroed: u64,
    /// Segments made from free-pool files (retired segments) instead of new files.
    pub segments_recycled: u64,
    /// Segments taken out of the log by `retire_through` (into the pool, or deleted).
    pub segments_retired: u64,
    /// Batches written through the page cache (the rest went O_DIRECT).
    pub batches_buffered: u64,
}

pub struct WalWriter {
    config: WalConfig,
    /// Shared with fdatasyncs in flight (`start_sync`), which run while the next batch writes.
    file: Rc<DmaFile>,
    /// The next segment, being created and zero-written in the background under a temporary
    /// name (`SPARE_NAME`), so a rotation only renames it.
    /// With the file: how it was prepared.
    spare: Option<glommio::Task<io::Result<(DmaFile, SpareKind)>>>,
    /// Free-pool files, retired segments waiting for reuse: (the highest sequence the file may
    /// hold, path). At most `POOL_FILES`.
    pool: Vec<(u64, PathBuf)>,
    segment_first: u64,
    /// Where the next record goes in the current segment.
    offset: u64,
    /// Bytes of the current segment from the start of the block holding `offset` up to
    /// `offset` (already durable; rewritten with the next batch).
    tail_block: Vec<u8>,
    /// Encoded records of the batch being built.
    pending: Vec<u8>,
    pending_first: u64,
    /// The first sequence not known to be durable: every record is framed with it as its
    /// `batch_start`, so a record says "written while everything from here on may be lost".
    /// Recovery then tells a torn tail (damage before records written while the damaged ones
    /// were unsynced) from corruption (damage before records written after they were synced),
    /// however many batches were in flight.
    sync_point: u64,
    next_sequence: u64,
    stats: WalStats,
    /// Bytes per written batch, smoothed over the last few (picks how the spare is prepared).
    recent_batch_bytes: u64,
    /// The batch `write_behind` is writing: its writes (none when it went through the page
    /// cache, already written), and the first and last sequence it holds.
    behind: Option<(Option<WriteTask>, u64, u64)>,
    /// The current segment's buffered handle, which small batches are written through with
    /// `sync = none`.
    page_cache: PageCacheWriter,
}

/// Writes in flight (`run_writes`).
type WriteTask = glommio::Task<io::Result<()>>;

/// How the spare segment was prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SpareKind {
    Zeroed,
    /// Only preallocated (`BULK_BATCH_BYTES`).
    Unzeroed,
    /// A free-pool file whose records are all at or below this sequence.
    Recycled(u64),
}

/// An fdatasync in flight, covering every record through `through`.
pub struct SyncTicket {
    task: Option<glommio::Task<io::Result<()>>>,
    /// The sync's result once `done` saw it end.
    outcome: Option<io::Result<()>>,
    through: u64,
}

impl SyncTicket {
    /// Resolves when the sync has ended (at once with `sync = none`), keeping its result for
    /// `finish_sync`. Dropping this future before then leaves the sync running, so it can be
    /// raced against other events.
    pub async fn done(&mut self) {
        if let Some(task) = self.task.as_mut() {
            let result = task.await;
            self.task = None;
            self.outcome = Some(result);
        }
    }

    /// The last sequence this sync makes durable.
    pub fn through(&self) -> u64 {
        self.through
    }
}

/// Bytes per write of a batch; a larger batch keeps several writes in flight. 1 MiB, as fio's
/// bandwidth baseline uses: 256 KiB writes reached 45 % of its bandwidth, 1 MiB ~60 %
/// (docs/PERFORMANCE.md).
const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// The segment prepared ahead; not a segment name, so recovery never reads it.
const SPARE_NAME: &str = "wal-spare.tmp";

/// Free-pool files kept for reuse. Rotation takes one per segment and the spare is prepared
/// ahead, so two cover a checkpoint retiring segments in bursts; more would only hold disk.
const POOL_FILES: usize = 2;

/// From this many bytes per batch (smoothed) on, the next segment is only preallocated, not
/// zero-written. Zero-writing makes later syncs data-only (see `zero_fill`), but costs the
/// disk a second write of every byte: under a busy log that halves the bandwidth left for
/// records, while the journal commit an unwritten extent adds to each sync (~250 us here) is
/// small beside a batch this large. Under a quiet log a sync is mostly that commit, so small
/// batches keep zeroed segments. Either kind reads as zeros where nothing was written, which
/// is all recovery needs.
const BULK_BATCH_BYTES: u64 = 256 * 1024;

/// `BULK_BATCH_BYTES`, or an eighth of a segment when less: small test segments cannot hold
/// 256 KiB batches.
fn bulk_batch_bytes(segment_bytes: u64) -> u64 {
    BULK_BATCH_BYTES.min(segment_bytes / 8)
}

/// Writes the buffers of one batch, all in flight at once (one write at a time left the device
/// idle between them); all belong to the same batch, and the scan's recovery rule already
/// allows any subset of a batch's blocks to be torn.
async fn run_writes(file: Rc<DmaFile>, buffers: Vec<(glommio::io::DmaBuffer, u64)>, aligned: usize) -> io::Result<()> {
    let mut writes: Vec<_> = buffers.into_iter().map(|(buffer, at)| Box::pin(file.write_at(buffer, at))).collect();
    let mut results: Vec<Option<io::Result<usize>>> = (0..writes.len()).map(|_| None).collect();
    futures_lite::future::poll_fn(|cx| {
        let mut pending = false;
        for (write, result) in writes.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match write.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => *result = Some(r.map_err(io::Error::from)),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    let mut written = 0;
    for result in results.into_iter().flatten() {
        written += result?;
    }
    if written != aligned {
        return Err(io::Error::new(io::ErrorKind::WriteZero, format!("short WAL write: {written} of {aligned}")));
    }
    Ok(())
}

/// Copies the bytes `[from, from + dst.len())` of `tail ++ batch ++ zeros` into `dst`.
fn fill_chunk(dst: &mut [u8], from: usize, tail: &[u8], batch: &[u8]) {
    let mut at = 0;
    let mut pos = from;
    for source in [tail, batch] {
        if pos < source.len() && at < dst.len() {
            let n = (source.len() - pos).min(dst.len() - at);
            dst[at..at + n].copy_from_slice(&source[pos..pos + n]);
            at += n;
            pos += n;
        }
        pos -= pos.min(source.len());
    }
    dst[at..].fill(0);
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// A pool file for a segment starting at `first`. One that may hold records at or after
/// `first` (a leftover of another log) is deleted, never reused: its records could pass for
/// the new segment's.
fn take_pool_file(pool: &mut Vec<(u64, PathBuf)>, first: u64) -> Option<(u64, PathBuf)> {
    while let Some((last, path)) = pool.pop() {
        if last < first {
            return Some((last, path));
        }
        let _ = std::fs::remove_file(&path);
    }
    None
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    // glommio opens a directory only by an absolute path: a relative one (the default storage
    // `./data`) failed with "Bad file descriptor".
    glommio::io::Directory::open(std::path::absolute(dir)?).await?.sync().await?;
    Ok(())
}

impl WalWriter {
    /// Opens the log where recovery left it (`resume`), or starts a new segment. `torn`: recovery
    /// cut a torn tail, so the bytes from the cut on are zeroed first, and reused sequence
    /// numbers can never meet stale records of the torn batch.
    pub async fn open(config: WalConfig, resume: &ResumePoint, torn: bool) -> io::Result<Self> {
        if config.segment_bytes == 0 || config.segment_bytes % 4096 != 0 {
            return Err(invalid(format!("segment_bytes {} is not a positive multiple of 4096", config.segment_bytes)));
        }
        std::fs::create_dir_all(&config.dir)?;
        // A spare left by an earlier run may be half written: start it again.
        match std::fs::remove_file(config.dir.join(SPARE_NAME)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // Pool files left by an earlier run are adopted; ones that may hold records at or after
        // the resume point (another log's) and those beyond `POOL_FILES` are deleted.
        let mut pool = Vec::new();
        for (last, path) in list_pool(&config.dir)?.into_iter().rev() {
            if last < resume.next_sequence && pool.len() < POOL_FILES {
                pool.push((last, path));
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        let mut recycled = false;
        let (file, segment_first, offset, path) = match &resume.segment {
            Some((first, path)) => {
                let file = open_segment(path, config.sync, false).await?;
                if torn {
                    // Whole blocks after the cut become a hole (reads as zeros); the block
                    // holding the cut is rewritten below: durable prefix, zeros after it.
                    let size = file.file_size().await?;
                    let from = file.align_up(resume.offset);
                    if size > from {
                        file.deallocate(from, size - from).await?;
                    }
                }
                (file, *first, resume.offset, path.clone())
            }
            None => {
                let pooled = take_pool_file(&mut pool, resume.next_sequence);
                let (file, reused) = Self::create_segment(&config, resume.next_sequence, pooled).await?;
                recycled = reused;
                (file, resume.next_sequence, 0, segment_path(&config.dir, resume.next_sequence))
            }
        };
        let block = file.align_down(offset);
        let mut tail_block = vec![0u8; (offset - block) as usize];
        if !tail_block.is_empty() {
            let read = file.read_at_aligned(block, file.alignment() as usize).await?;
            let keep = tail_block.len();
            tail_block.copy_from_slice(&read[..keep]);
        }
        let page_cache = PageCacheWriter::open(&path, offset)?;
        let mut writer = WalWriter {
            config,
            file: Rc::new(file),
            spare: None,
            pool,
            segment_first,
            offset,
            tail_block,
            pending: Vec::with_capacity(1 << 20),
            pending_first: resume.next_sequence,
            sync_point: resume.next_sequence,
            next_sequence: resume.next_sequence,
            stats: WalStats { segments_recycled: u64::from(recycled), ..WalStats::default() },
            recent_batch_bytes: 0,
            behind: None,
            page_cache,
        };
        if torn && !writer.tail_block.is_empty() {
            // Rewrite the cut block: durable prefix, zeros after it.
            writer.write_blocks(&[]).await?;
            writer.file.fdatasync().await?;
        }
        writer.maybe_prepare_spare();
        Ok(writer)
    }

    /// Starts the next segment once the current one is half full: late enough that a quiet
    /// log never pays for it, early enough that a busy one finds it ready at the rotation.
    fn maybe_prepare_spare(&mut self) {
        if self.spare.is_none() && self.offset >= self.config.segment_bytes / 2 {
            self.prepare_spare();
        }
    }

    /// Starts preparing the next segment in the background: a free-pool file when there is
    /// one, else a new file, zero-written or under a busy log only preallocated
    /// (`BULK_BATCH_BYTES`).
    fn prepare_spare(&mut self) {
        let config = self.config.clone();
        let bulk = self.recent_batch_bytes >= bulk_batch_bytes(self.config.segment_bytes);
        // The spare becomes the segment of a batch starting at `pending_first` or later.
        let pooled = take_pool_file(&mut self.pool, self.pending_first);
        self.spare = Some(glommio::spawn_local(async move {
            let path = config.dir.join(SPARE_NAME);
            if let Some((last, from)) = pooled {
                if let Some(file) = Self::reuse_pool_file(&from, &path, &config).await? {
                    return Ok((file, SpareKind::Recycled(last)));
                }
            }
            let file = open_segment(&path, config.sync, true).await?;
            if bulk {
                file.pre_allocate(config.segment_bytes, false).await?;
                file.fdatasync().await?;
                Ok((file, SpareKind::Unzeroed))
            } else {
                Self::zero_fill(&file, config.segment_bytes).await?;
                Ok((file, SpareKind::Zeroed))
            }
        }));
    }

    /// Creates segment `first` now, from pool file `pooled` when given and usable (then
    /// `true`), else a new zero-written file.
    async fn create_segment(
        config: &WalConfig,
        first: u64,
        pooled: Option<(u64, PathBuf)>,
    ) -> io::Result<(DmaFile, bool)> {
        let path = segment_path(&config.dir, first);
        if let Some((_, from)) = pooled {
            // Prepared under the spare's name (free here: no spare is in flight when a segment
            // is created directly), so a crash midway leaves no segment with stale contents.
            let spare = config.dir.join(SPARE_NAME);
            if let Some(file) = Self::reuse_pool_file(&from, &spare, config).await? {
                std::fs::rename(&spare, &path)?;
                sync_dir(&config.dir).await?;
                return Ok((file, true));
            }
        }
        let file = open_segment(&path, config.sync, true).await?;
        Self::zero_fill(&file, config.segment_bytes).await?;
        // The new name must survive a crash before the records in it are acknowledged.
        sync_dir(&config.dir).await?;
        Ok((file, false))
    }

    /// Turns pool file `from` into a segment file ready at `to`: renamed, `segment_bytes` long
    /// and allocated, its first block zeroed and synced (an unused recycled segment then reads
    /// as empty, not as stale data). Its other blocks keep their stale records. `None` when the
    /// file is gone or has another size (the setting changed): the caller makes a new one.
    async fn reuse_pool_file(from: &Path, to: &Path, config: &WalConfig) -> io::Result<Option<DmaFile>> {
        let segment_bytes = config.segment_bytes;
        if std::fs::rename(from, to).is_err() {
            // The pool only saves work: a file that cannot be taken is dropped.
            let _ = std::fs::remove_file(from);
            return Ok(None);
        }
        let file = open_segment(to, config.sync, false).await?;
        if file.file_size().await? != segment_bytes {
            file.close().await?;
            std::fs::remove_file(to)?;
            return Ok(None);
        }
        // A torn tail's cut deallocated blocks: allocate them again (as unwritten extents), so
        // no write into this segment can find the disk full.
        file.pre_allocate(segment_bytes, false).await?;
        let mut zeros = file.alloc_dma_buffer(file.alignment() as usize);
        zeros.as_bytes_mut().fill(0);
        let written = file.write_at(zeros, 0).await?;
        if written as u64 != file.alignment() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write zeroing a recycled WAL segment"));
        }
        file.fdatasync().await?;
        Ok(Some(file))
    }

    /// Preallocates `len` bytes and writes zeros over them: fallocate leaves "unwritten"
    /// extents, and converting them on the first write makes every fdatasync a journal commit
    /// (measured: p50 ~340 us instead of ~90 us here). Written-once blocks make later syncs
    /// data-only.
    async fn zero_fill(file: &DmaFile, len: u64) -> io::Result<()> {
        file.pre_allocate(len, false).await?;
        const ZERO_CHUNK: u64 = 1 << 20;
        let mut position = 0;
        while position < len {
            let size = ZERO_CHUNK.min(len - position) as usize;
            let mut zeros = file.alloc_dma_buffer(size);
            zeros.as_bytes_mut().fill(0);
            file.write_at(zeros, position).await?;
            position += size as u64;
        }
        file.fdatasync().await?;
        Ok(())
    }

    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Whether `commit` waits for the disk (`sync = durable`).
    pub fn syncs(&self) -> bool {
        self.config.sync == SyncMode::Durable
    }

    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// Bytes waiting in the current batch.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Adds a record to the current batch and returns its sequence number. It is durable only
    /// after the next `commit`.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<u64> {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            return Err(invalid(format!("WAL payload of {} bytes", payload.len())));
        }
        if frame_len(payload.len()) as u64 > self.config.segment_bytes {
            return Err(invalid("WAL record larger than a segment".into()));
        }
        let sequence = self.next_sequence;
        encode_record(sequence, self.sync_point, payload, &mut self.pending);
        self.next_sequence += 1;
        self.stats.records += 1;
        Ok(sequence)
    }

    /// Writes the batch (and syncs it in durable mode). Returns the last sequence now durable.
    pub async fn commit(&mut self) -> io::Result<u64> {
        self.write_pending().await?;
        let ticket = self.start_sync();
        self.finish_sync(ticket).await
    }

    /// Writes the pending batch without syncing it; returns the last sequence written. The
    /// next batch may be written while this one's sync (`start_sync`) is in flight.
    pub async fn write_pending(&mut self) -> io::Result<u64> {
        // A batch still being written behind goes first; the next sync covers it.
        if let Some((Some(write), _, _)) = self.behind.take() {
            write.await?;
        }
        if self.pending.is_empty() {
            return Ok(self.next_sequence - 1);
        }
        if self.offset + self.pending.len() as u64 > self.config.segment_bytes {
            self.rotate().await?;
        }
        let batch = std::mem::take(&mut self.pending);
        let result = self.write_blocks(&batch).await;
        self.pending = batch;
        result?;
        Ok(self.written())
    }

    /// Write-behind, for a producer that builds the next batch while this one is on its way:
    /// waits for the batch the previous call started writing (if any) and starts its fdatasync
    /// (returned: finish it with `finish_sync`; with `sync = none` it is ready at once), then
    /// starts writing the pending batch and returns without waiting for that write. Three
    /// batches are then in flight together: one being built, one written, one synced. A
    /// failed write shows at the next call (or the next `write_pending`, `commit`,
    /// `sync_now`, `close`, which all wait for it first).
    pub async fn write_behind(&mut self) -> io::Result<Option<SyncTicket>> {
        let ticket = match self.behind.take() {
            Some((write, _, through)) => {
                if let Some(write) = write {
                    write.await?;
                }
                Some(self.sync_ticket(through))
            }
            None => None,
        };
        if self.pending.is_empty() {
            return Ok(ticket);
        }
        if self.offset + self.pending.len() as u64 > self.config.segment_bytes {
            // The rotation syncs the old segment first (the ticket's sync then finds nothing).
            self.rotate().await?;
        }
        let first = self.pending_first;
        let write = if self.through_page_cache(self.pending.len()) {
            // Done when the copy is: nothing to overlap.
            let batch = std::mem::take(&mut self.pending);
            let result = self.write_blocks(&batch).await;
            self.pending = batch;
            result?;
            None
        } else {
            let (writes, aligned) = self.prepare_writes(&self.pending);
            Some(glommio::spawn_local(run_writes(self.file.clone(), writes, aligned)))
        };
        let through = self.written();
        self.behind = Some((write, first, through));
        Ok(ticket)
    }

    /// Bookkeeping once the pending batch's bytes are written (or handed to writes in flight):
    /// returns the last sequence written.
    fn written(&mut self) -> u64 {
        self.advance_tail();
        self.stats.batches += 1;
        self.stats.bytes += self.pending.len() as u64;
        self.recent_batch_bytes = (self.recent_batch_bytes * 7 + self.pending.len() as u64) / 8;
        self.offset += self.pending.len() as u64;
        self.pending.clear();
        self.pending_first = self.next_sequence;
        self.maybe_prepare_spare();
        self.next_sequence - 1
    }

    /// Starts an fdatasync of everything written so far (durable mode; with `sync = none` the
    /// ticket is ready at once). It runs while the caller writes the next batch.
    pub fn start_sync(&mut self) -> SyncTicket {
        // Not the batch still being written behind: this sync may finish before its write.
        let through = match &self.behind {
            Some((_, first, _)) => first - 1,
            None => self.next_sequence - 1 - self.pending_records(),
        };
        self.sync_ticket(through)
    }

    /// The sync covering every record through `through`, whose writes have completed: with
    /// `sync = none` nothing; in durable mode already done, since those writes were `O_DSYNC`
    /// (counted as a sync all the same).
    fn sync_ticket(&mut self, through: u64) -> SyncTicket {
        let outcome = (self.config.sync == SyncMode::Durable).then_some(Ok(()));
        SyncTicket { task: None, outcome, through }
    }

    /// Writes what is pending and fdatasyncs, whatever the sync mode; returns the last
    /// sequence now durable. For a checkpoint: with `sync = none` its records may not be on
    /// disk yet, and a checkpoint must never cover records the WAL could still lose (recovery
    /// refuses a log that ends before its checkpoint).
    pub async fn sync_now(&mut self) -> io::Result<u64> {
        let through = self.write_pending().await?;
        self.file.fdatasync().await?;
        self.stats.syncs += 1;
        self.sync_point = self.sync_point.max(through + 1);
        Ok(through)
    }

    /// Waits for a sync; returns the last sequence it made durable.
    pub async fn finish_sync(&mut self, mut ticket: SyncTicket) -> io::Result<u64> {
        ticket.done().await;
        if let Some(outcome) = ticket.outcome {
            outcome?;
            self.stats.syncs += 1;
        }
        self.sync_point = self.sync_point.max(ticket.through + 1);
        Ok(ticket.through)
    }

    /// Records appended but not yet written.
    fn pending_records(&self) -> u64 {
        self.next_sequence - self.pending_first
    }

    /// Keeps the bytes of the block that will hold the next record.
    fn advance_tail(&mut self) {
        let alignment = self.file.alignment() as usize;
        let keep = (self.tail_block.len() + self.pending.len()) % alignment;
        if keep <= self.pending.len() {
            // The usual case: the new tail lies within the batch. (Joining the old tail and
            // the whole batch first copied every byte of a batch once more, into fresh memory.)
            self.tail_block.clear();
            self.tail_block.extend_from_slice(&self.pending[self.pending.len() - keep..]);
        } else {
            // A batch smaller than what was left of the block: the block only grows.
            self.tail_block.extend_from_slice(&self.pending);
        }
    }

    /// Writes tail_block + `batch`, zero-padded to whole blocks, at the block holding `offset`.
    /// A large batch goes out as several `WRITE_CHUNK_BYTES` writes in flight at once (one write
    /// at a time left the device idle between them); all belong to the same batch, and the
    /// scan's recovery rule already allows any subset of a batch's blocks to be torn.
    async fn write_blocks(&mut self, batch: &[u8]) -> io::Result<()> {
        if self.through_page_cache(batch.len()) {
            // The tail block's earlier bytes are in the file: only the batch and its zero
            // padding go.
            self.stats.batches_buffered += 1;
            return self.page_cache.write(self.offset, batch, self.config.segment_bytes);
        }
        let (writes, aligned) = self.prepare_writes(batch);
        run_writes(self.file.clone(), writes, aligned).await
    }

    /// Whether a batch of `len` bytes goes through the page cache (see the module docs).
    fn through_page_cache(&self, len: usize) -> bool {
        self.config.sync == SyncMode::None && (len as u64) < bulk_batch_bytes(self.config.segment_bytes)
    }

    /// The DMA buffers (and their file offsets) that write tail_block + `batch`, zero-padded
    /// to whole blocks, and the bytes they cover. The bytes are copied here, so the batch's
    /// buffer is free again as soon as this returns.
    fn prepare_writes(&self, batch: &[u8]) -> (Vec<(glommio::io::DmaBuffer, u64)>, usize) {
        let start = self.file.align_down(self.offset);
        let len = self.tail_block.len() + batch.len();
        let mut aligned = self.file.align_up(len as u64) as usize;
        // A batch ending on a block boundary writes the next block as zeros too: the slot
        // after the last record must read as "no record here" even in a recycled segment,
        // whose unwritten blocks hold stale data (see the module docs and `recover.rs`).
        let alignment = self.file.alignment() as usize;
        if len > 0 && aligned == len && start + (aligned + alignment) as u64 <= self.config.segment_bytes {
            aligned += alignment;
        }
        let mut writes = Vec::with_capacity(aligned.div_ceil(WRITE_CHUNK_BYTES));
        let mut chunk_start = 0;
        while chunk_start < aligned {
            let size = WRITE_CHUNK_BYTES.min(aligned - chunk_start);
            let mut buffer = self.file.alloc_dma_buffer(size);
            fill_chunk(buffer.as_bytes_mut(), chunk_start, &self.tail_block, batch);
            writes.push((buffer, start + chunk_start as u64));
            chunk_start += size;
        }
        (writes, aligned)
    }

    /// Starts a new segment for the pending batch, named by the batch's first sequence.
    async fn rotate(&mut self) -> io::Result<()> {
        // Everything before the rotation must be on disk before the log continues elsewhere
        // (recovery allows a torn end only in the last segment), syncs in flight included.
        self.file.fdatasync().await?;
        self.sync_point = self.pending_first;
        let file = match self.spare.take() {
            Some(spare) => {
                // Name the prepared spare after the batch's first sequence; the rename must
                // survive a crash before the records in it are acknowledged.
                let (file, kind) = spare.await?;
                match kind {
                    SpareKind::Zeroed => {}
                    SpareKind::Unzeroed => self.stats.segments_unzeroed += 1,
                    SpareKind::Recycled(last) => {
                        // `prepare_spare` checked this against an earlier `pending_first`.
                        debug_assert!(last < self.pending_first);
                        self.stats.segments_recycled += 1;
                    }
                }
                let path = segment_path(&self.config.dir, self.pending_first);
                std::fs::rename(self.config.dir.join(SPARE_NAME), &path)?;
                sync_dir(&self.config.dir).await?;
                file
            }
            None => {
                let pooled = take_pool_file(&mut self.pool, self.pending_first);
                let (file, recycled) = Self::create_segment(&self.config, self.pending_first, pooled).await?;
                self.stats.segments_recycled += u64::from(recycled);
                file
            }
        };
        self.page_cache.reopen(&segment_path(&self.config.dir, self.pending_first))?;
        let old = std::mem::replace(&mut self.file, Rc::new(file));
        // A sync still in flight holds the old file; the last holder closes it.
        if let Ok(old) = Rc::try_unwrap(old) {
            old.close().await?;
        }
        self.segment_first = self.pending_first;
        self.offset = 0;
        self.tail_block.clear();
        self.stats.segments_created += 1;
        Ok(())
    }

    pub fn segment_first(&self) -> u64 {
        self.segment_first
    }

    /// Takes out of the log every segment whose records are all at or below `sequence`
    /// (its successor starts at or below `sequence + 1`), except the current one: a checkpoint
    /// covers them, so recovery never reads them again. Up to `POOL_FILES` go to the free pool
    /// for reuse as later segments; the rest are deleted. The directory is fsynced once before
    /// this returns. Returns how many segments were retired.
    ///
    /// Call it only once the checkpoint covering `sequence` is durable.
    pub async fn retire_through(&mut self, sequence: u64) -> io::Result<usize> {
        let dir = self.config.dir.clone();
        let segments = list_segments(&dir)?;
        let mut retired = 0;
        let mut result = Ok(());
        for pair in segments.windows(2) {
            let ((first, path), (next_first, _)) = (&pair[0], &pair[1]);
            // Sorted: once one segment stays, every later one does too.
            if *first >= self.segment_first || *next_first > sequence.saturating_add(1) {
                break;
            }
            let last = next_first - 1;
            let reusable = std::fs::metadata(path).is_ok_and(|m| m.len() == self.config.segment_bytes);
            let step = if reusable && self.pool.len() < POOL_FILES {
                let to = dir.join(pool_name(last));
                std::fs::rename(path, &to).map(|()| {
                    self.pool.retain(|(l, _)| *l != last);
                    self.pool.push((last, to));
                })
            } else {
                std::fs::remove_file(path)
            };
            if let Err(e) = step {
                result = Err(e);
                break;
            }
            retired += 1;
        }
        if retired > 0 {
            self.stats.segments_retired += retired as u64;
            // Even after a failure: what was renamed stays renamed.
            sync_dir(&dir).await?;
        }
        result.map(|()| retired)
    }

    /// Commits what is pending and closes the file (a spare being prepared is dropped).
    pub async fn close(mut self) -> io::Result<()> {
        self.commit().await?;
        if self.config.sync == SyncMode::None {
            self.file.fdatasync().await?;
        }
        if let Some(spare) = self.spare.take() {
            let path = self.config.dir.join(SPARE_NAME);
            let mut pooled = false;
            if let Ok((file, kind)) = spare.await {
                file.close().await?;
                // A recycled spare goes back to the pool for the next run (only its first block
                // changed, to zeros); a crash before this rename just loses it.
                if let SpareKind::Recycled(last) = kind {
                    pooled = std::fs::rename(&path, self.config.dir.join(pool_name(last))).is_ok();
                }
            }
            if !pooled {
                let _ = std::fs::remove_file(&path);
            }
        }
        match Rc::try_unwrap(self.file) {
            Ok(file) => Ok(file.close().await?),
            Err(_) => Ok(()),
        }
    }
}

/// Opens (or, with `create`, creates) a segment file for direct I/O, with `O_DSYNC` in durable
/// mode (see the module docs).
async fn open_segment(path: &Path, sync: SyncMode, create: bool) -> io::Result<DmaFile> {
    let flags = match sync {
        SyncMode::Durable => libc::O_DSYNC,
        SyncMode::None => 0,
    };
    Ok(OpenOptions::new().create(create).read(true).write(true).custom_flags(flags).dma_open(path).await?)
}

#[cfg(test)]
mod tests {
    use super::fill_chunk;

    #[test]
    fn chunks_tile_tail_batch_and_padding() {
        let tail: Vec<u8> = (1..=5).collect();
        let batch: Vec<u8> = (10..=22).collect();
        let whole: Vec<u8> = tail.iter().chain(&batch).copied().chain(std::iter::repeat(0).take(14)).collect();
        for size in 1..=whole.len() {
            let mut tiled = Vec::new();
            let mut from = 0;
            while from < whole.len() {
                let mut chunk = vec![0xAA; size.min(whole.len() - from)];
                fill_chunk(&mut chunk, from, &tail, &batch);
                tiled.extend_from_slice(&chunk);
                from += chunk.len();
            }
            assert_eq!(tiled, whole, "chunk size {size}");
        }
    }
}
