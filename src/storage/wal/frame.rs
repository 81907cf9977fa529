//! One WAL record on disk:
//!
//! ```text
//! offset 0  u32 LE  payload length (1..=MAX_PAYLOAD)
//! offset 4  u32 LE  CRC32 of header bytes 8..24 and the payload
//! offset 8  u64 LE  sequence number (1, 2, 3 ... per shard; never 0)
//! offset 16 u64 LE  sequence of the first record of this record's write batch (group commit)
//! offset 24         payload (an rkyv archive), then zero padding to FRAME_ALIGN
//! ```
//!
//! Frames start on 8-byte boundaries so an rkyv payload (alignment 8 at most for our types)
//! can be read in place from an aligned buffer. A header of zero bytes is never a record:
//! preallocated segments are zero, so zeros mean "nothing written here". The batch field lets
//! recovery tell a torn, never-synced batch from damage to a synced one (see `scan.rs`).

/// Header size in bytes.
pub const HEADER_LEN: usize = 24;
/// Every frame starts and ends on this boundary.
pub const FRAME_ALIGN: usize = 8;
/// Largest payload accepted (a command or event is a few hundred bytes; 1 MiB bounds a
/// corrupted length field's reach).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// The fixed fields of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub sequence: u64,
    pub batch_start: u64,
}

impl RecordHeader {
    pub fn read(bytes: &[u8; HEADER_LEN]) -> Self {
        let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let long = |i: usize| {
            let mut value = [0u8; 8];
            value.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(value)
        };
        RecordHeader { payload_len: word(0), crc: word(4), sequence: long(8), batch_start: long(16) }
    }

    pub fn is_zero(bytes: &[u8; HEADER_LEN]) -> bool {
        bytes.iter().all(|&b| b == 0)
    }
}

/// Bytes a record with `payload_len` payload bytes occupies, padding included.
pub fn frame_len(payload_len: usize) -> usize {
    (HEADER_LEN + payload_len).div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// CRC32 over the sequence numbers and the payload (the length is implied: a wrong length reads
/// the wrong bytes and fails the check).
pub fn record_crc(sequence: u64, batch_start: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&sequence.to_le_bytes());
    hasher.update(&batch_start.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Where a frame's CRC starts: the sequence, batch start and payload follow the length and
/// CRC fields contiguously, so [`record_crc`] of a framed record is one CRC call over
/// `frame[CRC_FROM..HEADER_LEN + payload_len]` (three calls cost a fifth more per record, for
/// the two 8-byte pieces).
pub const CRC_FROM: usize = 8;

/// Appends one framed record to `out`. Panics only on caller bugs (empty or oversized payload,
/// sequence 0, a batch that starts after the record), never on data.
pub fn encode_record(sequence: u64, batch_start: u64, payload: &[u8], out: &mut Vec<u8>) {
    assert!(sequence != 0 && batch_start != 0 && batch_start <= sequence, "WAL sequence {batch_start}..{sequence}");
    assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD, "WAL payload of {} bytes", payload.len());
    let start = out.len();
    out.resize(start + frame_len(payload.len()), 0);
    let frame = &mut out[start..];
    frame[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    frame[8..16].copy_from_slice(&sequence.to_le_bytes());
    frame[16..24].copy_from_slice(&batch_start.to_le_bytes());
    frame[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
    let crc = crc32fast::hash(&frame[CRC_FROM..HEADER_LEN + payload.len()]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_aligned_and_round_trip() {
        let mut out = Vec::new();
        encode_record(7, 6, b"hello", &mut out);
        assert_eq!(out.len(), 32);
        let header = RecordHeader::read(out[..HEADER_LEN].try_into().unwrap());
        assert_eq!(
            header,
            RecordHeader { payload_len: 5, crc: record_crc(7, 6, b"hello"), sequence: 7, batch_start: 6 }
        );
        assert_eq!(&out[24..29], b"hello");
        assert!(out[29..].iter().all(|&b| b == 0));
        encode_record(8, 8, &[1u8; 8], &mut out);
        assert_eq!(out.len(), 32 + 32);
        assert_eq!(frame_len(1), 32);
        assert_eq!(frame_len(8), 32);
        assert_eq!(frame_len(9), 40);
    }
}
