//! The WAL end to end on real files through glommio: write, rotate, recover, resume; torn tails
//! cut; corruption before the tail refused with the file and offset; empty and missing files.
//! Files live under cargo's target tmp dir: O_DIRECT needs a real disk, and /tmp may be tmpfs.

use qaexchange::storage::wal::{
    recover, RecoveryError, RecoveryReport, ResumePoint, SyncMode, WalConfig, WalStats, WalWriter,
};
use std::path::{Path, PathBuf};

const SEGMENT_BYTES: u64 = 64 * 1024;

fn payload(sequence: u64) -> Vec<u8> {
    let len = 20 + (sequence * 7919 % 300) as usize;
    (0..len).map(|i| (sequence as usize * 31 + i) as u8).collect()
}

/// On a glommio executor: recovers `dir`, checks it resumes at `from`, writes `from..to` in
/// batches of 1..=37 records, closes. Returns the segments the writer created.
fn write(dir: &Path, sync: SyncMode, from: u64, to: u64) -> u64 {
    write_batches(dir, sync, from, to, None).segments_created
}

/// `write`, with every batch `fixed` records long when given; returns the writer's counters.
fn write_batches(dir: &Path, sync: SyncMode, from: u64, to: u64, fixed: Option<u64>) -> WalStats {
    write_sized(dir, sync, from, to, move |previous| fixed.unwrap_or(previous % 37 + 1))
}

/// `write`, each batch as long as `next(previous batch's length)` (the first: `next(0)`).
fn write_sized(dir: &Path, sync: SyncMode, from: u64, to: u64, next: impl Fn(u64) -> u64 + Send + 'static) -> WalStats {
    let dir: PathBuf = dir.to_path_buf();
    glommio::LocalExecutorBuilder::default()
        // Small io_memory keeps the executor inside a non-root locked-memory limit.
        .io_memory(1 << 20)
        .spawn(move || async move {
            let (resume, report) = recover(&dir, 1, |_, _| {}).expect("recovers");
            assert_eq!(resume.next_sequence, from);
            let config = WalConfig { dir: dir.clone(), segment_bytes: SEGMENT_BYTES, sync };
            let mut wal = WalWriter::open(config, &resume, report.torn_tail.is_some()).await.expect("opens");
            let mut sequence = from;
            let mut batch = next(0);
            while sequence < to {
                for _ in 0..batch {
                    if sequence == to {
                        break;
                    }
                    assert_eq!(wal.append(&payload(sequence)).unwrap(), sequence);
                    sequence += 1;
                }
                assert_eq!(wal.commit().await.unwrap(), sequence - 1);
                batch = next(batch);
            }
            let stats = wal.stats();
            wal.close().await.unwrap();
            stats
        })
        .expect("glommio executor starts")
        .join()
        .expect("executor thread")
}

fn read_all(dir: &Path) -> Result<Vec<(u64, Vec<u8>)>, RecoveryError> {
    let mut records = Vec::new();
    recover(dir, 1, |sequence, bytes| records.push((sequence, bytes.to_vec())))?;
    Ok(records)
}

fn expect_records(records: &[(u64, Vec<u8>)], count: u64) {
    assert_eq!(records.len() as u64, count);
    for (i, (sequence, bytes)) in records.iter().enumerate() {
        assert_eq!(*sequence, i as u64 + 1);
        assert_eq!(bytes, &payload(*sequence), "payload of {sequence}");
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    qaexchange::storage::wal::segment::list_segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
}

#[test]
fn write_rotate_recover_resume() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().join("wal");
    // A missing directory is an empty log.
    expect_records(&read_all(&dir).unwrap(), 0);
    let created = write(&dir, SyncMode::Durable, 1, 1_001);
    assert!(created >= 2, "64 KiB segments must rotate, created {created}");
    expect_records(&read_all(&dir).unwrap(), 1_000);
    // Resume in the middle of the last segment, in no-sync mode this time.
    write(&dir, SyncMode::None, 1_001, 1_501);
    expect_records(&read_all(&dir).unwrap(), 1_500);
    for path in segments(&dir) {
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SEGMENT_BYTES, "{} preallocated", path.display());
    }
}

/// A log under a relative directory (the server's default storage is `./data`): segments are
/// created, rotated and synced, and read back.
#[test]
fn a_relative_directory_works() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    let dir = tmp.path().join("wal").strip_prefix(&cwd).expect("the target dir is under the crate").to_path_buf();
    assert!(dir.is_relative());
    let created = write(&dir, SyncMode::Durable, 1, 1_001);
    assert!(created >= 2, "64 KiB segments must rotate, created {created}");
    expect_records(&read_all(&dir).unwrap(), 1_000);
}

/// With `sync = none` small batches go through the page cache and large ones O_DIRECT,
/// alternating inside one segment (each kind writes over the block the other left); the log
/// reads back whole, and resumes after either kind, in durable mode too (all direct).
#[test]
fn page_cache_and_direct_batches_alternate_in_a_segment() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().join("wal");
    // ~200-byte records: 3 records go through the page cache, 50 (10 KiB, above an eighth of
    // a 64 KiB segment) go direct.
    let alternate = |previous: u64| if previous == 3 { 50 } else { 3 };
    let none = write_sized(&dir, SyncMode::None, 1, 2_001, alternate);
    let durable = write_sized(&dir, SyncMode::Durable, 2_001, 4_001, alternate);
    assert_eq!(durable.batches_buffered, 0, "{durable:?}");
    assert!(none.batches_buffered > 0 && none.batches_buffered < none.batches, "both kinds: {none:?}");
    expect_records(&read_all(&dir).unwrap(), 4_000);
    tear_last_record(&dir, 4_000);
    write_sized(&dir, SyncMode::None, 4_000, 4_101, alternate);
    expect_records(&read_all(&dir).unwrap(), 4_100);
}

/// Large batches make the writer prepare segments without zero-writing them (unwritten
/// extents read as zeros); such a log reads back whole, and a torn tail in one is cut.
#[test]
fn bulk_batches_use_unzeroed_segments_that_recover_the_same() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    // About 50 records of ~200 bytes: an eighth of a 64 KiB segment or more.
    let stats = write_batches(&dir, SyncMode::Durable, 1, 3_001, Some(50));
    assert!(stats.segments_unzeroed >= 2, "{stats:?}");
    expect_records(&read_all(&dir).unwrap(), 3_000);
    // A torn tail in an unzeroed segment is cut like any other.
    tear_last_record(&dir, 3_000);
    write_batches(&dir, SyncMode::Durable, 3_000, 4_001, Some(50));
    expect_records(&read_all(&dir).unwrap(), 4_000);
    // Small batches prepare zeroed segments again.
    let stats = write_batches(&dir, SyncMode::Durable, 4_001, 6_001, Some(1));
    assert!(stats.segments_created >= 2 && stats.segments_unzeroed == 0, "{stats:?}");
    expect_records(&read_all(&dir).unwrap(), 6_000);
    let (_, report) = recover(&dir, 1, |_, _| {}).unwrap();
    assert_eq!(report.torn_tail, None);
}

/// Zeroes the second half of the last record (`last`), as a crash mid-write would leave it;
/// recovery cuts it with a warning and keeps everything before it.
fn tear_last_record(dir: &Path, last: u64) {
    let segment = segments(dir).pop().unwrap();
    let records = read_all(dir).unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let first_in_segment =
        qaexchange::storage::wal::segment::parse_segment_name(segment.file_name().unwrap().to_str().unwrap()).unwrap();
    let scan = qaexchange::storage::wal::scan_segment(&bytes, first_in_segment).unwrap();
    let record = scan.records.last().unwrap().clone();
    assert_eq!(record.sequence, last);
    let half = (record.payload.start + record.payload.end) / 2;
    for b in &mut bytes[half..record.payload.end] {
        *b = 0;
    }
    std::fs::write(&segment, &bytes).unwrap();
    let mut kept = Vec::new();
    let (resume, report) = recover(dir, 1, |s, b| kept.push((s, b.to_vec()))).unwrap();
    assert!(report.torn_tail.is_some(), "{report:?}");
    assert_eq!(kept.len() as u64, last - 1);
    assert_eq!(resume.next_sequence, last);
    assert_eq!(kept[..], records[..last as usize - 1]);
}

#[test]
fn torn_tail_is_cut_and_the_log_continues_cleanly() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    write(&dir, SyncMode::Durable, 1, 301);
    tear_last_record(&dir, 300);
    // The writer resumes at the cut, reusing 300: the log reads back whole and clean.
    write(&dir, SyncMode::Durable, 300, 401);
    expect_records(&read_all(&dir).unwrap(), 400);
    let (_, report) = recover(&dir, 1, |_, _| {}).unwrap();
    assert_eq!(report.torn_tail, None);
}

#[test]
fn corruption_before_the_tail_stops_recovery_with_file_and_offset() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    write(&dir, SyncMode::Durable, 1, 1_001);
    let first = segments(&dir).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[5_000] ^= 0x04;
    std::fs::write(&first, &bytes).unwrap();
    let error = read_all(&dir).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(first.file_name().unwrap().to_str().unwrap()), "{message}");
    assert!(message.contains("offset"), "{message}");
    // Damage in the middle of the last segment, with later batches after it, is refused too.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    write(&dir, SyncMode::Durable, 1, 200);
    let only = segments(&dir).remove(0);
    let mut bytes = std::fs::read(&only).unwrap();
    bytes[1_000] ^= 0x80;
    std::fs::write(&only, &bytes).unwrap();
    assert!(matches!(read_all(&dir), Err(RecoveryError::Corrupt(..))));
}

#[test]
fn empty_and_missing_segment_files() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    // A zero-length segment (crash between create and preallocate) is an empty log.
    std::fs::write(dir.join(qaexchange::storage::wal::segment::segment_name(1)), b"").unwrap();
    expect_records(&read_all(&dir).unwrap(), 0);
    write(&dir, SyncMode::Durable, 1, 51);
    expect_records(&read_all(&dir).unwrap(), 50);
    // A missing middle segment is a gap, never silently skipped.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    write(&dir, SyncMode::Durable, 1, 1_001);
    let all = segments(&dir);
    assert!(all.len() >= 3);
    std::fs::remove_file(&all[1]).unwrap();
    assert!(matches!(read_all(&dir), Err(RecoveryError::Gap { .. })), "{:?}", read_all(&dir).err());
}

/// Batches written while earlier ones still sync (`write_pending` + `start_sync`, as the
/// server's committer does) carry the older sync point: damage to a batch that was still
/// unsynced is a torn tail even with a later, intact batch after it, while damage to a batch
/// that was synced before the next one was written stays corruption.
#[test]
fn batches_written_during_a_sync_are_torn_together() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    let write_dir = dir.clone();
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move {
            let (resume, _) = recover(&write_dir, 1, |_, _| {}).unwrap();
            let config = WalConfig { dir: write_dir, segment_bytes: SEGMENT_BYTES, sync: SyncMode::Durable };
            let mut wal = WalWriter::open(config, &resume, false).await.unwrap();
            // 1..=10 synced on its own; then 11..=20 written and its sync started; 21..=30
            // written while that sync runs.
            for s in 1..=10 {
                wal.append(&payload(s)).unwrap();
            }
            wal.commit().await.unwrap();
            for s in 11..=20 {
                wal.append(&payload(s)).unwrap();
            }
            wal.write_pending().await.unwrap();
            let first = wal.start_sync();
            for s in 21..=30 {
                wal.append(&payload(s)).unwrap();
            }
            assert_eq!(wal.write_pending().await.unwrap(), 30);
            let second = wal.start_sync();
            assert_eq!(wal.finish_sync(first).await.unwrap(), 20);
            assert_eq!(wal.finish_sync(second).await.unwrap(), 30);
            wal.close().await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
    let records = read_all(&dir).unwrap();
    expect_records(&records, 30);
    let only = segments(&dir).remove(0);
    let clean = std::fs::read(&only).unwrap();
    let scan = qaexchange::storage::wal::scan_segment(&clean, 1).unwrap();
    let at = |sequence: u64| scan.records.iter().find(|r| r.sequence == sequence).unwrap().clone();
    // Record 15 damaged (its batch was unsynced when 21..=30 were written): cut there.
    let mut bytes = clean.clone();
    bytes[at(15).payload.start] ^= 0x01;
    std::fs::write(&only, &bytes).unwrap();
    let mut kept = Vec::new();
    let (resume, report) = recover(&dir, 1, |s, b| kept.push((s, b.to_vec()))).unwrap();
    assert!(report.torn_tail.is_some(), "{report:?}");
    assert_eq!(resume.next_sequence, 15);
    assert_eq!(kept[..], records[..14]);
    // Record 5 damaged (synced before 11.. were written): corruption, start-up must stop.
    let mut bytes = clean;
    bytes[at(5).payload.start] ^= 0x01;
    std::fs::write(&only, &bytes).unwrap();
    assert!(matches!(read_all(&dir), Err(RecoveryError::Corrupt(..))));
}

/// `recover` from a checkpoint: (records applied, resume point, report).
type FromCheckpoint = (Vec<(u64, Vec<u8>)>, ResumePoint, RecoveryReport);

fn read_from(dir: &Path, first_sequence: u64) -> Result<FromCheckpoint, RecoveryError> {
    let mut records = Vec::new();
    let (resume, report) = recover(dir, first_sequence, |sequence, bytes| records.push((sequence, bytes.to_vec())))?;
    Ok((records, resume, report))
}

/// Checks `records` are exactly `from..=to` with their payloads.
fn expect_range(records: &[(u64, Vec<u8>)], from: u64, to: u64) {
    let sequences: Vec<u64> = records.iter().map(|(s, _)| *s).collect();
    assert_eq!(sequences, (from..=to).collect::<Vec<_>>());
    for (sequence, bytes) in records {
        assert_eq!(bytes, &payload(*sequence), "payload of {sequence}");
    }
}

/// On a glommio executor: recovers `dir` from `first_sequence`, opens the writer where that
/// resumes (which must be `from`), writes `from..to` in batches of 1..=37, closes.
fn write_after_checkpoint(dir: &Path, first_sequence: u64, from: u64, to: u64) {
    let dir = dir.to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move {
            let (resume, report) = recover(&dir, first_sequence, |_, _| {}).expect("recovers");
            assert_eq!(resume.next_sequence, from);
            let config = WalConfig { dir: dir.clone(), segment_bytes: SEGMENT_BYTES, sync: SyncMode::Durable };
            let mut wal = WalWriter::open(config, &resume, report.torn_tail.is_some()).await.expect("opens");
            let mut sequence = from;
            let mut batch = 1;
            while sequence < to {
                for _ in 0..batch {
                    if sequence < to {
                        assert_eq!(wal.append(&payload(sequence)).unwrap(), sequence);
                        sequence += 1;
                    }
                }
                wal.commit().await.unwrap();
                batch = batch % 37 + 1;
            }
            wal.close().await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}

/// Segment first sequences of `dir`, with the durable bytes of each (`next_offset`) and the
/// offset of each record.
/// (first sequence, end of the durable data, (sequence, offset) of each record) of a segment.
type SegmentLayout = (u64, usize, Vec<(u64, usize)>);

fn layout(dir: &Path) -> Vec<SegmentLayout> {
    qaexchange::storage::wal::segment::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(first, path)| {
            let scan = qaexchange::storage::wal::scan_segment(&std::fs::read(&path).unwrap(), first).unwrap();
            (first, scan.next_offset, scan.records.iter().map(|r| (r.sequence, r.offset)).collect())
        })
        .collect()
}

#[test]
fn recovery_from_a_checkpoint_in_the_middle_of_a_segment() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    write(&dir, SyncMode::Durable, 1, 2_001);
    let laid = layout(&dir);
    assert!(laid.len() >= 5, "{} segments", laid.len());
    let (k, (first_k, end_k, records_k)) = (2, laid[2].clone());
    let next_first = laid[3].0;
    let first_sequence = first_k + (next_first - first_k) / 2;
    assert!(first_sequence > first_k);
    let (records, resume, report) = read_from(&dir, first_sequence).unwrap();
    expect_range(&records, first_sequence, 2_000);
    assert_eq!(resume.next_sequence, 2_001);
    let (last_first, last_end, _) = laid.last().unwrap().clone();
    assert_eq!(resume.segment.as_ref().map(|(first, _)| *first), Some(last_first));
    assert_eq!(resume.offset, last_end as u64);
    assert_eq!(report.segments, laid.len() - k);
    assert_eq!(report.records, 2_001 - first_sequence);
    let from = records_k.iter().find(|(s, _)| *s == first_sequence).unwrap().1;
    let bytes = (end_k - from) + laid[k + 1..].iter().map(|(_, end, _)| end).sum::<usize>();
    assert_eq!(report.bytes, bytes as u64);
    assert_eq!(report.torn_tail, None);

    // Segments before the one holding the checkpoint's sequence are never read: damage (or
    // deletion) there stops a full replay, not this one.
    let all = segments(&dir);
    std::fs::write(&all[0], vec![0x5Au8; 4096]).unwrap();
    std::fs::remove_file(&all[1]).unwrap();
    assert!(read_all(&dir).is_err());
    let (again, resume_again, _) = read_from(&dir, first_sequence).unwrap();
    assert_eq!((again, resume_again), (records, resume));

    // A checkpoint at a segment's first record applies that segment whole.
    let (records, _, report) = read_from(&dir, first_k).unwrap();
    expect_range(&records, first_k, 2_000);
    assert_eq!(report.segments, laid.len() - k);

    // The writer resumes where the checkpoint's recovery leaves it; the log reads back from
    // the checkpoint with everything written after it.
    write_after_checkpoint(&dir, first_sequence, 2_001, 2_600);
    let (records, resume, _) = read_from(&dir, first_sequence).unwrap();
    expect_range(&records, first_sequence, 2_599);
    assert_eq!(resume.next_sequence, 2_600);

    // A checkpoint covering the whole log: nothing to apply, resume at the end.
    let (records, resume, report) = read_from(&dir, 2_600).unwrap();
    assert!(records.is_empty());
    assert_eq!((report.records, report.bytes, report.segments), (0, 0, 1));
    let (last_first, last_end, _) = layout(&dir).last().unwrap().clone();
    assert_eq!(resume.segment.as_ref().map(|(first, _)| *first), Some(last_first));
    assert_eq!((resume.offset, resume.next_sequence), (last_end as u64, 2_600));
    write_after_checkpoint(&dir, 2_600, 2_600, 2_700);
    let (records, _, _) = read_from(&dir, 2_600).unwrap();
    expect_range(&records, 2_600, 2_699);
}

#[test]
fn a_log_that_misses_checkpointed_records_is_refused() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    // Missing or empty: a fresh log only without a checkpoint.
    let (records, resume, _) = read_from(&dir.join("none"), 1).unwrap();
    assert!(records.is_empty() && resume.segment.is_none() && resume.next_sequence == 1);
    match read_from(&dir.join("none"), 10) {
        Err(RecoveryError::EndsBeforeCheckpoint { last: 0, first_sequence: 10, .. }) => {}
        other => panic!("{:?}", other.map(|(r, p, _)| (r.len(), p))),
    }
    write(&dir, SyncMode::Durable, 1, 1_501);
    let all = layout(&dir);
    assert!(all.len() >= 4, "{} segments", all.len());

    // The log ends before the checkpoint's sequence.
    let error = read_from(&dir, 1_502).expect_err("a log ending at 1500 cannot serve a checkpoint at 1501");
    assert!(matches!(error, RecoveryError::EndsBeforeCheckpoint { last: 1_500, first_sequence: 1_502, .. }));
    let message = error.to_string();
    assert!(message.contains(&format!("the WAL in {} ends at sequence 1500", dir.display())), "{message}");
    assert!(message.contains("before the checkpoint's sequence 1501"), "{message}");
    // Ending exactly at the checkpoint is fine.
    assert_eq!(read_from(&dir, 1_501).unwrap().1.next_sequence, 1_501);
    // A torn last record moves the end before the checkpoint that covered it.
    tear_last_record(&dir, 1_500);
    assert!(matches!(read_from(&dir, 1_501), Err(RecoveryError::EndsBeforeCheckpoint { last: 1_499, .. })));

    // The first kept segment starts after the checkpoint's sequence: a gap.
    let (second, third) = (all[1].0, all[2].0);
    std::fs::remove_file(segments(&dir)[0].clone()).unwrap();
    let error = read_from(&dir, second - 5).expect_err("records before the second segment are gone");
    match &error {
        RecoveryError::CheckpointGap { first_sequence, found, .. } => {
            assert_eq!((*first_sequence, *found), (second - 5, second));
        }
        other => panic!("{other}"),
    }
    let message = error.to_string();
    let name = qaexchange::storage::wal::segment::segment_name(second);
    assert!(message.contains(&name) && message.contains(&dir.display().to_string()), "{message}");
    assert!(message.contains(&format!("records {}..={} are missing", second - 5, second - 1)), "{message}");
    // From the second segment on, the log is whole.
    let (records, _, _) = read_from(&dir, second + 1).unwrap();
    expect_range(&records, second + 1, 1_499);
    // A checkpoint still starts within the log when later segments are gone, but the gap
    // after its segment is refused as before.
    std::fs::remove_file(qaexchange::storage::wal::segment::segment_path(&dir, third)).unwrap();
    assert!(matches!(read_from(&dir, second + 1), Err(RecoveryError::Gap { .. })));
}

/// A segment whose only batch is torn at its first record holds no record, but the batch's
/// intact later records are still on disk: recovery reports the torn tail so the writer clears
/// them, else the log rewritten from the cut could run into them and replay records that were
/// never acknowledged.
#[test]
fn a_torn_first_batch_is_cleared_before_its_sequences_are_reused() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    write_batches(&dir, SyncMode::Durable, 1, 11, Some(10));
    let only = segments(&dir).remove(0);
    let mut bytes = std::fs::read(&only).unwrap();
    let scan = qaexchange::storage::wal::scan_segment(&bytes, 1).unwrap();
    bytes[scan.records[0].payload.start] ^= 0x01;
    std::fs::write(&only, &bytes).unwrap();
    let (records, resume, report) = read_from(&dir, 1).unwrap();
    assert!(records.is_empty());
    assert_eq!((resume.next_sequence, resume.offset), (1, 0));
    assert_eq!(report.torn_tail, Some((only.clone(), 0, 9)));
    // The same payloads again, fewer of them: records 6..=10 of the torn batch would line up
    // right after them.
    write_batches(&dir, SyncMode::Durable, 1, 6, Some(5));
    let (records, resume, report) = read_from(&dir, 1).unwrap();
    expect_records(&records, 5);
    assert_eq!((resume.next_sequence, report.torn_tail), (6, None));
}

/// `write_behind`: batches written while the next is built, each synced by the ticket the next
/// call returns. Tickets come in order and cover exactly the batch before; `start_sync` with a
/// write in flight claims only what was written before it; rotations, a `commit` between, and
/// a resume after a torn tail all keep the log whole.
#[test]
fn write_behind_keeps_the_log_whole_and_tickets_in_order() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().to_path_buf();
    let run = |from: u64, to: u64, sync: SyncMode| {
        let dir = dir.clone();
        glommio::LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(move || async move {
                let (resume, report) = recover(&dir, 1, |_, _| {}).expect("recovers");
                assert_eq!(resume.next_sequence, from);
                let config = WalConfig { dir: dir.clone(), segment_bytes: SEGMENT_BYTES, sync };
                let mut wal = WalWriter::open(config, &resume, report.torn_tail.is_some()).await.unwrap();
                let mut sequence = from;
                let mut durable = from - 1;
                let mut batch_ends = Vec::new();
                let mut size = 1;
                let mut in_flight_first = None;
                while sequence < to {
                    let batch_first = sequence;
                    for _ in 0..size.min(to - sequence) {
                        wal.append(&payload(sequence)).unwrap();
                        sequence += 1;
                    }
                    if size % 5 == 0 {
                        // A batch in flight is not claimed by a sync started now.
                        if let Some(first) = in_flight_first {
                            let ticket = wal.start_sync();
                            assert_eq!(wal.finish_sync(ticket).await.unwrap(), first - 1);
                        }
                    }
                    if size % 7 == 0 {
                        // A plain commit between waits for the batch behind and syncs both.
                        assert_eq!(wal.commit().await.unwrap(), sequence - 1);
                        durable = sequence - 1;
                        batch_ends.clear();
                        in_flight_first = None;
                    } else {
                        let ticket = wal.write_behind().await.unwrap();
                        if let Some(ticket) = ticket {
                            let through = wal.finish_sync(ticket).await.unwrap();
                            // The batch before this one, exactly.
                            assert_eq!(Some(through), batch_ends.last().copied());
                            assert!(through > durable);
                            durable = through;
                        }
                        batch_ends.push(sequence - 1);
                        in_flight_first = Some(batch_first);
                    }
                    size = size % 40 + 1;
                }
                let stats = wal.stats();
                wal.close().await.unwrap();
                stats
            })
            .unwrap()
            .join()
            .unwrap()
    };
    let stats = run(1, 3_001, SyncMode::Durable);
    assert!(stats.segments_created >= 2, "64 KiB segments must rotate: {stats:?}");
    expect_records(&read_all(&dir).unwrap(), 3_000);
    tear_last_record(&dir, 3_000);
    run(3_000, 4_001, SyncMode::None);
    expect_records(&read_all(&dir).unwrap(), 4_000);
}

/// The open flags (`/proc/self/fdinfo`) of this process's descriptors for files in `dir`.
fn open_flags_in(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        if !target.starts_with(dir) {
            continue;
        }
        let fd = entry.file_name().into_string().unwrap();
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else { continue };
        let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).expect("a flags line");
        found.push((target, u32::from_str_radix(flags.trim(), 8).unwrap()));
    }
    found
}

/// In durable mode a commit's write is its sync: the segments' direct-I/O descriptors are open
/// with O_DSYNC (a write completes once on disk) and each batch counts as a sync. Without the flag nothing would
/// make a durable group reach the disk before its answers. With `sync = none`, neither.
#[test]
fn durable_segments_are_written_with_o_dsync() {
    for sync in [SyncMode::Durable, SyncMode::None] {
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let dir = tmp.path().join("wal");
        std::fs::create_dir_all(&dir).unwrap();
        let canonical = dir.canonicalize().unwrap();
        let (flags, stats) = glommio::LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(move || async move {
                let (resume, report) = recover(&dir, 1, |_, _| {}).expect("recovers");
                let config = WalConfig { dir: dir.clone(), segment_bytes: SEGMENT_BYTES, sync };
                let mut wal = WalWriter::open(config, &resume, report.torn_tail.is_some()).await.expect("opens");
                for sequence in 1..=3u64 {
                    wal.append(&payload(sequence)).unwrap();
                    wal.commit().await.unwrap();
                }
                let flags = open_flags_in(&canonical);
                let stats = wal.stats();
                wal.close().await.unwrap();
                (flags, stats)
            })
            .expect("glommio executor starts")
            .join()
            .expect("executor thread");
        // The direct-I/O descriptors write the batches here (the page-cache one only with
        // `sync = none`).
        let direct: Vec<_> = flags.iter().filter(|(_, f)| f & libc::O_DIRECT as u32 != 0).collect();
        assert!(!direct.is_empty(), "{sync:?}: the segment is open for direct I/O: {flags:?}");
        for (path, flags) in direct {
            let dsync = flags & libc::O_DSYNC as u32 != 0;
            assert_eq!(dsync, sync == SyncMode::Durable, "{sync:?}: {} open with flags {flags:o}", path.display());
        }
        let syncs = if sync == SyncMode::Durable { 3 } else { 0 };
        assert_eq!((stats.batches, stats.syncs), (3, syncs), "{sync:?}");
    }
}
