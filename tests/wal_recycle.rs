//! WAL segment recycling end to end: segments a checkpoint covers are retired into the free
//! pool and reused as later segments without being zeroed; recovery from the checkpoint reads
//! exactly the records after it, rotations out of recycled segments read as clean ends, and a
//! torn batch in a recycled segment is cut as a torn tail, not taken for corruption.
//! Files live under cargo's target tmp dir: O_DIRECT needs a real disk, and /tmp may be tmpfs.

use qaexchange::storage::wal::segment::{list_pool, list_segments, pool_name, segment_path};
use qaexchange::storage::wal::{
    recover, scan_segment, stress_payload, RecoveryError, RecoveryReport, ResumePoint, SyncMode, WalConfig, WalStats,
    WalWriter,
};
use std::future::Future;
use std::path::{Path, PathBuf};

const SEGMENT_BYTES: u64 = 64 * 1024;

fn on_executor<T: Send + 'static, F: Future<Output = T> + 'static>(job: impl FnOnce() -> F + Send + 'static) -> T {
    glommio::LocalExecutorBuilder::default()
        // Small io_memory keeps the executor inside a non-root locked-memory limit.
        .io_memory(1 << 20)
        .spawn(job)
        .expect("glommio executor starts")
        .join()
        .expect("executor thread")
}

fn config(dir: &Path) -> WalConfig {
    WalConfig { dir: dir.to_path_buf(), segment_bytes: SEGMENT_BYTES, sync: SyncMode::Durable }
}

/// Recovers from `first_sequence`: the records applied, the resume point, the report.
type Recovered = (Vec<(u64, Vec<u8>)>, ResumePoint, RecoveryReport);

fn read_from(dir: &Path, first_sequence: u64) -> Result<Recovered, RecoveryError> {
    let mut records = Vec::new();
    let (resume, report) = recover(dir, first_sequence, |s, b| records.push((s, b.to_vec())))?;
    Ok((records, resume, report))
}

/// `records` are exactly `from..=to`, each with its stress payload.
fn expect_range(records: &[(u64, Vec<u8>)], from: u64, to: u64) {
    assert_eq!(records.len() as u64, (to + 1).saturating_sub(from), "records {from}..={to}");
    for (i, (sequence, bytes)) in records.iter().enumerate() {
        assert_eq!(*sequence, from + i as u64);
        assert_eq!(bytes, &stress_payload(*sequence), "payload of {sequence}");
    }
}

/// What a writer session does: batches of records, and checkpoints that retire segments.
#[derive(Clone, Copy)]
enum Step {
    /// Write through this sequence (exclusive), in batches of 1..=23 records.
    WriteTo(u64),
    /// Write through this sequence (exclusive) in batches of `n` records of a fixed size.
    WriteFixed(u64, u64, usize),
    /// `retire_through(sequence)`.
    Retire(u64),
}

/// Recovers `dir` from `first_sequence`, opens a writer there and runs `steps`; closes and
/// returns the writer's counters and what each `Retire` returned.
fn session(dir: &Path, first_sequence: u64, steps: Vec<Step>) -> (WalStats, Vec<usize>) {
    let dir = dir.to_path_buf();
    on_executor(move || async move {
        let (resume, report) = recover(&dir, first_sequence, |_, _| {}).expect("recovers");
        let mut wal = WalWriter::open(config(&dir), &resume, report.torn_tail.is_some()).await.expect("opens");
        let mut retired = Vec::new();
        let mut batch = 1;
        for step in steps {
            match step {
                Step::WriteTo(to) => {
                    while wal.next_sequence() < to {
                        for _ in 0..batch {
                            let sequence = wal.next_sequence();
                            if sequence < to {
                                assert_eq!(wal.append(&stress_payload(sequence)).unwrap(), sequence);
                            }
                        }
                        wal.commit().await.unwrap();
                        batch = batch % 23 + 1;
                    }
                }
                Step::WriteFixed(to, n, len) => {
                    while wal.next_sequence() < to {
                        for _ in 0..n {
                            if wal.next_sequence() < to {
                                wal.append(&fixed_payload(wal.next_sequence(), len)).unwrap();
                            }
                        }
                        wal.commit().await.unwrap();
                    }
                }
                Step::Retire(through) => {
                    retired.push(wal.retire_through(through).await.unwrap());
                    // The pool never exceeds two files, however many segments went.
                    assert!(pool_files(&dir).len() <= 2, "{:?}", pool_files(&dir));
                }
            }
        }
        let stats = wal.stats();
        wal.close().await.unwrap();
        (stats, retired)
    })
}

/// A payload of `len` bytes that still depends on the sequence.
fn fixed_payload(sequence: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (sequence as usize).wrapping_mul(131).wrapping_add(i) as u8).collect()
}

fn pool_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    list_pool(dir).unwrap()
}

fn segment_firsts(dir: &Path) -> Vec<u64> {
    list_segments(dir).unwrap().into_iter().map(|(first, _)| first).collect()
}

/// The last segment has bytes other than zeros after the end of its log: stale data of an
/// older use, so it was recycled.
fn last_segment_is_recycled(dir: &Path) -> bool {
    let (first, path) = list_segments(dir).unwrap().pop().unwrap();
    let bytes = std::fs::read(path).unwrap();
    let scan = scan_segment(&bytes, first).unwrap();
    bytes[scan.next_offset..].iter().any(|&b| b != 0)
}

#[test]
fn retired_segments_are_reused_and_the_log_reads_back_from_the_checkpoint() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    // 1500 records of ~210 bytes: five or so segments; then a checkpoint at 1200.
    let (stats, retired) = session(&dir, 1, vec![Step::WriteTo(1_501), Step::Retire(1_200)]);
    assert_eq!(stats.segments_recycled, 0);
    let firsts = segment_firsts(&dir);
    assert!(retired[0] >= 3, "{retired:?}, segments now {firsts:?}");
    assert_eq!(stats.segments_retired, retired[0] as u64);
    // Every segment left holds a record after 1200, and the one holding 1201 is kept.
    assert!(firsts[0] <= 1_201, "{firsts:?}");
    assert!(!matches!(firsts.get(1), Some(&next) if next <= 1_201), "{firsts:?}");
    assert_eq!(pool_files(&dir).len(), 2);
    // The retired records are gone: a full replay now finds a gap, the checkpoint's doesn't.
    assert!(matches!(read_from(&dir, 1), Err(RecoveryError::Gap { expected: 1, .. })));
    assert!(matches!(read_from(&dir, 2), Err(RecoveryError::CheckpointGap { first_sequence: 2, .. })));
    let (records, resume, _) = read_from(&dir, 1_201).unwrap();
    expect_range(&records, 1_201, 1_500);
    assert_eq!(resume.next_sequence, 1_501);

    // Later runs: write through several rotations with a checkpoint every 600 records; the
    // pool files come back as segments (some of them twice), and reopening adopts the pool.
    let mut checkpoint = 1_200;
    let mut recycled = 0;
    for run in 0..3u64 {
        let start = 1_501 + run * 2_400;
        let mut steps = Vec::new();
        for i in 1..=4 {
            steps.push(Step::WriteTo(start + i * 600));
            steps.push(Step::Retire(start + i * 600 - 300));
        }
        let (stats, retired) = session(&dir, checkpoint + 1, steps);
        assert!(stats.segments_recycled > 0, "run {run}: {stats:?}");
        assert!(retired.iter().sum::<usize>() > 0, "run {run}: {retired:?}");
        recycled += stats.segments_recycled;
        checkpoint = start + 4 * 600 - 300;
        let end = start + 4 * 600 - 1;
        // Exactly the records after the checkpoint, with their contents.
        let (records, resume, report) = read_from(&dir, checkpoint + 1).unwrap();
        expect_range(&records, checkpoint + 1, end);
        assert_eq!(resume.next_sequence, end + 1);
        // A clean shutdown in a recycled segment is a clean end, not a torn tail.
        assert_eq!(report.torn_tail, None, "run {run}");
        assert!(pool_files(&dir).len() <= 3, "{:?}", pool_files(&dir));
        for (last, path) in pool_files(&dir) {
            assert!(last <= checkpoint, "{} holds records after the checkpoint", path.display());
        }
    }
    assert!(recycled >= 4, "{recycled} segments recycled");
    // The log is the current segment plus what the last checkpoint still needs.
    assert!(segment_firsts(&dir).len() <= 3, "{:?}", segment_firsts(&dir));

    // Retiring through the end of the log keeps the current segment; the log then resumes at
    // its end with nothing to replay.
    let end = 1_501 + 3 * 2_400 - 1;
    let (_, retired) = session(&dir, checkpoint + 1, vec![Step::Retire(end)]);
    assert_eq!(segment_firsts(&dir).len(), 1, "{retired:?}");
    let (records, resume, report) = read_from(&dir, end + 1).unwrap();
    assert!(records.is_empty());
    assert_eq!((resume.next_sequence, report.segments, report.torn_tail), (end + 1, 1, None));
    session(&dir, end + 1, vec![Step::WriteTo(end + 1_001)]);
    let (records, _, _) = read_from(&dir, end + 1).unwrap();
    expect_range(&records, end + 1, end + 1_000);
}

/// Overwrites a file with garbage of `len` bytes: no record in it at all, the worst stale
/// content a recycled segment can have.
fn garbage(path: &Path, len: u64) {
    std::fs::write(path, vec![0xA5u8; len as usize]).unwrap();
}

/// A recycled segment full of garbage: every place the writer stops must read as a clean end.
/// A batch ending exactly on a block boundary (16 frames of 256 bytes) has garbage right after
/// it unless the writer zeroes the next block; an unused recycled segment must read as empty;
/// a rotation out of a segment with a garbage tail must not look like a damaged end.
#[test]
fn stale_garbage_after_the_end_of_a_recycled_segment_reads_as_clean() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().join("a");
    std::fs::create_dir_all(&dir).unwrap();
    garbage(&dir.join(pool_name(0)), SEGMENT_BYTES);
    // Opened and closed without a record: the recycled first segment is an empty log.
    let (stats, _) = session(&dir, 1, vec![]);
    assert_eq!(stats.segments_recycled, 1, "{stats:?}");
    assert!(pool_files(&dir).is_empty());
    let (records, resume, report) = read_from(&dir, 1).unwrap();
    assert!(records.is_empty());
    assert_eq!((resume.next_sequence, resume.offset, report.torn_tail), (1, 0, None));
    assert!(last_segment_is_recycled(&dir));
    // One batch of exactly 4096 bytes, then a clean shutdown.
    session(&dir, 1, vec![Step::WriteFixed(17, 16, 232)]);
    let (records, resume, report) = read_from(&dir, 1).unwrap();
    assert_eq!((records.len(), resume.offset, report.torn_tail), (16, 4096, None));
    // A short batch, then block-sized ones up to the rotation: the segment is left with its
    // log ending mid-block and garbage after it.
    session(&dir, 1, vec![Step::WriteFixed(20, 3, 100), Step::WriteFixed(20 + 16 * 20, 16, 232)]);
    assert!(segment_firsts(&dir).len() >= 2, "{:?}", segment_firsts(&dir));
    let (records, resume, report) = read_from(&dir, 1).unwrap();
    assert_eq!((records.len() as u64, resume.next_sequence, report.torn_tail), (19 + 16 * 20, 20 + 16 * 20, None));
    for (sequence, bytes) in &records {
        let len = if (17..20).contains(sequence) { 100 } else { 232 };
        assert_eq!(bytes, &fixed_payload(*sequence, len), "payload of {sequence}");
    }

    // A real log whose pool files are then filled with garbage, reused across several
    // rotations and restarts, batches of every size.
    let dir = tmp.path().join("b");
    session(&dir, 1, vec![Step::WriteTo(1_501), Step::Retire(1_500)]);
    let pool = pool_files(&dir);
    assert_eq!(pool.len(), 2);
    for (_, path) in &pool {
        garbage(path, SEGMENT_BYTES);
    }
    let (stats, _) = session(&dir, 1_501, vec![Step::WriteTo(2_001), Step::WriteFixed(2_161, 16, 232)]);
    assert_eq!(stats.segments_recycled, 2, "{stats:?}");
    let (records, _, report) = read_from(&dir, 1_501).unwrap();
    assert_eq!(report.torn_tail, None);
    expect_range(&records[..500], 1_501, 2_000);
    assert_eq!(records.len(), 660);
    session(&dir, 1_501, vec![Step::WriteTo(3_001)]);
    let (records, _, report) = read_from(&dir, 1_501).unwrap();
    assert_eq!((records.len(), report.torn_tail), (1_500, None));

    // A pool file of another size (the setting changed) is not reused.
    let dir = tmp.path().join("c");
    std::fs::create_dir_all(&dir).unwrap();
    garbage(&dir.join(pool_name(0)), 4096);
    let (stats, _) = session(&dir, 1, vec![Step::WriteTo(11)]);
    assert_eq!(stats.segments_recycled, 0);
    assert!(pool_files(&dir).is_empty());
    assert_eq!(std::fs::metadata(segment_path(&dir, 1)).unwrap().len(), SEGMENT_BYTES);
    expect_range(&read_from(&dir, 1).unwrap().0, 1, 10);
}

/// A crash in a recycled segment: the last batch written there partly reached the disk. It is
/// cut as a torn tail (its intact records dropped), never taken for corruption, and the log
/// continues cleanly from the cut.
#[test]
fn a_torn_batch_in_a_recycled_segment_is_a_torn_tail() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    // Retire early and often, so the current segment is a recycled one.
    let mut steps = Vec::new();
    for i in 1..=10u64 {
        steps.push(Step::WriteTo(1 + i * 400));
        steps.push(Step::Retire(i * 400 - 200));
    }
    let (stats, _) = session(&dir, 1, steps);
    assert!(stats.segments_recycled >= 2, "{stats:?}");
    let checkpoint = 3_800;
    if !last_segment_is_recycled(&dir) {
        // Make the last segment a recycled one for sure: write on until it is.
        let mut to = 4_001;
        while !last_segment_is_recycled(&dir) {
            session(&dir, checkpoint + 1, vec![Step::WriteTo(to + 200), Step::Retire(to - 1)]);
            to += 200;
            assert!(to < 20_000, "no recycled last segment");
        }
    }
    let (clean, resume, report) = read_from(&dir, checkpoint + 1).unwrap();
    assert_eq!(report.torn_tail, None);
    let end = resume.next_sequence - 1;
    expect_range(&clean, checkpoint + 1, end);

    // Damage the first record of the last batch, leaving the batch's later records intact (the
    // disk persisted those blocks but not the first): a torn tail that drops them.
    let (first, path) = list_segments(&dir).unwrap().pop().unwrap();
    let original = std::fs::read(&path).unwrap();
    let scan = scan_segment(&original, first).unwrap();
    let last_batch = scan.records.last().unwrap().batch_start;
    let batch: Vec<_> = scan.records.iter().filter(|r| r.batch_start == last_batch).cloned().collect();
    let mut bytes = original.clone();
    let (cut, tear_at) = if batch.len() >= 2 {
        bytes[batch[0].payload.start] ^= 0x40;
        (batch[0].sequence, batch[0].offset)
    } else {
        // A one-record batch: lose the second half of its payload (zeros, as never written).
        let record = &batch[0];
        let half = (record.payload.start + record.payload.end) / 2;
        bytes[half..record.payload.end].fill(0);
        (record.sequence, record.offset)
    };
    std::fs::write(&path, &bytes).unwrap();
    let (records, resume, report) = read_from(&dir, checkpoint + 1).unwrap();
    let (torn_path, offset, dropped) = report.torn_tail.clone().expect("a torn tail");
    assert_eq!((torn_path, offset, dropped), (path.clone(), tear_at, batch.len() - 1));
    expect_range(&records, checkpoint + 1, cut - 1);
    assert_eq!(resume.next_sequence, cut);

    // The writer resumes at the cut (clearing what is left of the torn batch); what it writes
    // reads back whole and clean.
    session(&dir, checkpoint + 1, vec![Step::WriteTo(end + 700)]);
    let (records, _, report) = read_from(&dir, checkpoint + 1).unwrap();
    expect_range(&records, checkpoint + 1, end + 699);
    assert_eq!(report.torn_tail, None);

    // The same crash, but only part of the batch's last record reached the disk: the torn
    // record is cut, the records before it stay.
    let (first, path) = list_segments(&dir).unwrap().pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let scan = scan_segment(&bytes, first).unwrap();
    let record = scan.records.last().unwrap().clone();
    for b in &mut bytes[record.payload.end - 4..record.payload.end] {
        *b ^= 0xFF;
    }
    std::fs::write(&path, &bytes).unwrap();
    let (records, resume, report) = read_from(&dir, checkpoint + 1).unwrap();
    assert!(report.torn_tail.is_some(), "{report:?}");
    expect_range(&records, checkpoint + 1, record.sequence - 1);
    assert_eq!(resume.next_sequence, record.sequence);
    session(&dir, checkpoint + 1, vec![Step::WriteTo(end + 900)]);
    let (records, _, report) = read_from(&dir, checkpoint + 1).unwrap();
    expect_range(&records, checkpoint + 1, end + 899);
    assert_eq!(report.torn_tail, None);
}

/// A pool file that may hold records at or after the log's resume point (another log's
/// leftover) is deleted at open, never reused; a recycled segment never holds a record its own
/// sequences could collide with.
#[test]
fn pool_files_from_another_log_are_not_reused() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    // An old log of 1..=1500, all retired into the pool but the current segment.
    session(&dir, 1, vec![Step::WriteTo(1_501), Step::Retire(1_500)]);
    let pool = pool_files(&dir);
    assert_eq!(pool.len(), 2, "{pool:?}");
    // The log is lost (the operator starts over) but the pool stays: sequences restart at 1,
    // below what the pool files hold.
    for first in segment_firsts(&dir) {
        std::fs::remove_file(segment_path(&dir, first)).unwrap();
    }
    let (stats, _) = session(&dir, 1, vec![Step::WriteTo(1_001)]);
    assert_eq!(stats.segments_recycled, 0, "{stats:?}");
    assert!(pool_files(&dir).is_empty(), "{:?}", pool_files(&dir));
    let (records, _, report) = read_from(&dir, 1).unwrap();
    expect_range(&records, 1, 1_000);
    assert_eq!(report.torn_tail, None);
}
