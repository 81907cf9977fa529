use super::super::frame::encode_record;
use super::*;
use proptest::prelude::*;

/// Writes `batches` (each a list of payloads) from sequence `first`, like the writer does.
fn log_of(first: u64, batches: &[Vec<Vec<u8>>]) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut out = Vec::new();
    let mut batch_ranges = Vec::new();
    let mut sequence = first;
    for batch in batches {
        let start = out.len();
        let batch_start = sequence;
        for payload in batch {
            encode_record(sequence, batch_start, payload, &mut out);
            sequence += 1;
        }
        batch_ranges.push(start..out.len());
    }
    (out, batch_ranges)
}

fn segment(log: &[u8], size: usize) -> Vec<u8> {
    let mut bytes = log.to_vec();
    bytes.resize(size, 0);
    bytes
}

fn batches(sizes: &[usize]) -> Vec<Vec<Vec<u8>>> {
    let mut n = 0u8;
    sizes
        .iter()
        .map(|&count| {
            (0..count)
                .map(|_| {
                    n = n.wrapping_add(1);
                    vec![n; 20 + n as usize % 50]
                })
                .collect()
        })
        .collect()
}

#[test]
fn clean_and_full_segments() {
    let (log, _) = log_of(10, &batches(&[3, 2]));
    let scan = scan_segment(&segment(&log, 4096), 10).unwrap();
    assert_eq!(scan.records.len(), 5);
    assert_eq!(scan.records.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![10, 11, 12, 13, 14]);
    assert_eq!(scan.next_sequence, 15);
    assert_eq!(scan.next_offset, log.len());
    assert_eq!(scan.end, ScanEnd::Clean { offset: log.len() });
    let full = scan_segment(&log, 10).unwrap();
    assert_eq!(full.end, ScanEnd::Full);
    assert_eq!(full.records.len(), 5);
    // An empty (all-zero) segment is a clean, empty log.
    let empty = scan_segment(&[0u8; 1024], 1).unwrap();
    assert_eq!((empty.records.len(), empty.end.clone()), (0, ScanEnd::Clean { offset: 0 }));
    // A segment that starts with another sequence is not this log's continuation.
    let wrong = scan_segment(&segment(&log, 4096), 11);
    assert!(wrong.is_err(), "records of a later batch beyond the start: {wrong:?}");
}

#[test]
fn torn_last_batch_is_cut_at_the_damage() {
    let (log, ranges) = log_of(1, &batches(&[2, 4]));
    let last = ranges[1].clone();
    // Every truncation point inside the last batch: the log ends at the first record of it
    // that is not whole.
    for cut in last.start..last.end {
        let mut bytes = segment(&log[..cut], 4096);
        bytes.truncate(4096);
        let scan = scan_segment(&bytes, 1).unwrap();
        assert!(scan.records.len() >= 2 && scan.records.len() <= 6);
        // A cut inside a record's zero padding leaves the record whole.
        assert!(scan.next_offset <= cut.div_ceil(FRAME_ALIGN) * FRAME_ALIGN);
        assert!(matches!(scan.end, ScanEnd::TornTail { .. } | ScanEnd::Clean { .. }), "{:?}", scan.end);
    }
    // Out-of-order persistence: the batch's second record never reached the disk but its third
    // and fourth did. They were never acknowledged; the log ends before the hole.
    let second_of_last = scan_segment(&log, 1).unwrap().records[3].clone();
    let mut bytes = segment(&log, 4096);
    for b in &mut bytes[second_of_last.offset..second_of_last.payload.end] {
        *b = 0;
    }
    let scan = scan_segment(&bytes, 1).unwrap();
    assert_eq!(scan.records.len(), 3);
    assert_eq!(scan.next_offset, second_of_last.offset);
    assert!(matches!(scan.end, ScanEnd::TornTail { dropped: 2, .. }), "{:?}", scan.end);
}

#[test]
fn damage_before_a_later_batch_stops_start_up() {
    let (log, _) = log_of(1, &batches(&[3, 3]));
    let records = scan_segment(&log, 1).unwrap().records;
    for (i, record) in records.iter().enumerate().take(3) {
        let mut bytes = segment(&log, 4096);
        bytes[record.payload.start + 1] ^= 0x10;
        let error = scan_segment(&bytes, 1).unwrap_err();
        assert_eq!(error.offset, record.offset, "record {i}");
        assert_eq!(error.expected_sequence, i as u64 + 1);
        assert!(error.to_string().contains(&format!("offset {}", record.offset)));
    }
}

#[test]
fn stale_records_of_a_recycled_segment_are_not_the_log() {
    // An old log with sequences 1..8 fills the segment; the new log (from 20) overwrote the
    // start. What follows the new records is stale, not damage.
    let (old, _) = log_of(1, &batches(&[8]));
    let (new, _) = log_of(20, &batches(&[2]));
    let mut bytes = segment(&old, 4096);
    bytes[..new.len()].copy_from_slice(&new);
    // The new records are shorter than the old: the old bytes right after them are the middle
    // of an old record, which is garbage, then whole old records.
    let scan = scan_segment(&bytes, 20).unwrap();
    assert_eq!(scan.records.len(), 2);
    assert!(matches!(scan.end, ScanEnd::Clean { .. } | ScanEnd::TornTail { dropped: 0, .. }), "{:?}", scan.end);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Crash model: every batch but the last was synced; the last reached the disk as any subset
    /// of its 64-byte blocks. Recovery never fails, keeps every synced record, and keeps only
    /// a prefix of the unsynced batch.
    #[test]
    fn any_torn_last_batch_recovers_the_synced_prefix(
        sizes in prop::collection::vec(1usize..6, 1..6),
        persisted in prop::collection::vec(any::<bool>(), 64),
    ) {
        let (log, ranges) = log_of(1, &batches(&sizes));
        let synced: usize = sizes[..sizes.len() - 1].iter().sum();
        let last = ranges.last().unwrap().clone();
        let mut bytes = segment(&log, log.len() + 512);
        for (block, start) in (last.start..last.end).step_by(64).enumerate() {
            if !persisted[block % persisted.len()] {
                for b in &mut bytes[start..(start + 64).min(last.end)] {
                    *b = 0;
                }
            }
        }
        let scan = scan_segment(&bytes, 1).unwrap();
        prop_assert!(scan.records.len() >= synced);
        prop_assert!(scan.records.len() <= sizes.iter().sum::<usize>());
        for (i, r) in scan.records.iter().enumerate() {
            prop_assert_eq!(r.sequence, i as u64 + 1);
        }
    }

    /// Any single flipped bit in a synced batch that has a later batch after it is reported.
    #[test]
    fn any_flipped_bit_before_the_last_batch_is_an_error(
        sizes in prop::collection::vec(1usize..5, 2..6),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (log, ranges) = log_of(1, &batches(&sizes));
        let synced_end = ranges[ranges.len() - 2].end;
        let at = position.index(synced_end);
        let mut bytes = segment(&log, log.len() + 256);
        bytes[at] ^= 1 << bit;
        // Padding bytes are outside every CRC; a flip there changes no record.
        let records = scan_segment(&log, 1).unwrap().records;
        let in_padding = records.iter().all(|r| !(r.offset..r.payload.end).contains(&at));
        match scan_segment(&bytes, 1) {
            Err(e) => prop_assert!(e.offset <= at),
            Ok(scan) => prop_assert!(in_padding, "flip at {} not detected: {:?}", at, scan.end),
        }
    }
}

#[test]
fn a_record_at_the_last_sequence_number_is_refused_not_an_overflow() {
    let mut log = Vec::new();
    encode_record(u64::MAX, u64::MAX, &[7; 24], &mut log);
    let Err(error) = scan_segment(&segment(&log, 4096), u64::MAX) else { panic!("a record at u64::MAX was taken") };
    assert_eq!((error.expected_sequence, error.reason.as_str()), (u64::MAX, "sequence numbers run out"));
}
