//! What the server writes to its WAL: a genesis record first (the venue's starting trading day
//! and a fingerprint of its instruments), then every command that changed state, with the
//! timestamp the engine ran it at. Replaying the records through a fresh engine rebuilds the
//! state exactly, because the engine is deterministic.

use crate::domain::command::Command;
use crate::domain::instrument::Instrument;
use rkyv::rancor::Error as RkyvError;

/// Bumped when the record layout changes, so an old log is refused instead of misread.
pub const WAL_FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum WalRecord {
    Genesis { format: u32, trading_day: u32, instruments_fingerprint: u64 },
    Command(Command),
}

/// A stable fingerprint of the instrument set the log was written with (CRC32 of its JSON form
/// and its length): replaying a log against other instruments would build another state.
pub fn instruments_fingerprint(instruments: &[Instrument]) -> u64 {
    let json = serde_json::to_vec(instruments).unwrap_or_default();
    (u64::from(crc32fast::hash(&json)) << 32) | (json.len() as u64 & 0xffff_ffff)
}

pub fn encode(record: &WalRecord) -> Result<rkyv::util::AlignedVec, String> {
    rkyv::to_bytes::<RkyvError>(record).map_err(|e| format!("WAL record encoding failed: {e}"))
}

/// Validates and decodes a payload (copied to an aligned buffer first: rkyv reads in place).
pub fn decode(payload: &[u8]) -> Result<WalRecord, String> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<WalRecord, RkyvError>(&aligned).map_err(|e| format!("WAL payload does not decode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::name::AccountId;

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let records = [
            WalRecord::Genesis { format: WAL_FORMAT, trading_day: 20250102, instruments_fingerprint: 7 },
            WalRecord::Command(Command::OpenAccount { ts: 5, account_id: AccountId::new("a1").unwrap() }),
        ];
        for record in &records {
            let bytes = encode(record).unwrap();
            assert_eq!(&decode(&bytes).unwrap(), record);
            assert!(decode(&bytes[..bytes.len() / 2]).is_err());
        }
        assert!(decode(&[0xff; 3]).is_err());
    }
}
