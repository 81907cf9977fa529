//! What each shard writes to its WAL: a genesis record first (the venue's starting trading day,
//! a fingerprint of its instruments, the shard count and this shard's number), then its inputs
//! in the order it ran them: client commands that changed state, with the timestamp the shard
//! ran them at, and every message from another shard, with its sender and per-pair sequence.
//! Replaying the records through a fresh shard rebuilds its state and regenerates its outgoing
//! messages exactly, because the shard is deterministic.

use crate::domain::command::Command;
use crate::domain::instrument::Instrument;
use crate::domain::shard::PeerMsg;
use crate::domain::types::TimestampNs;
use rkyv::rancor::Error as RkyvError;

/// Bumped when the record layout changes, so an old log is refused instead of misread.
pub const WAL_FORMAT: u32 = 4;

#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum WalRecord {
    Genesis {
        format: u32,
        trading_day: u32,
        instruments_fingerprint: u64,
        shards: u16,
        shard: u16,
    },
    Command(Command),
    /// The DIFF login password hash of an account opened with a password (right after its
    /// `OpenAccount` command). Not the engine's state: the server keeps it beside the engine.
    Credential {
        account_id: crate::domain::name::AccountId,
        password_hash: String,
    },
    /// A user registered on this shard (the shard of the user id's hash): the Argon2id hash
    /// of the password, never the password.
    User {
        ts: TimestampNs,
        user_id: crate::domain::name::AccountId,
        password_hash: String,
        admin: bool,
    },
    /// The owner of an account of this shard (right after its `OpenAccount` command).
    Owner {
        account_id: crate::domain::name::AccountId,
        user_id: crate::domain::name::AccountId,
    },
    /// A step of daily settlement at `cut`: `apply` false cancels the orders that do not carry
    /// over, true settles (`domain::shard::settlement`).
    Settlement {
        ts: TimestampNs,
        apply: bool,
        cut: crate::domain::shard::settlement::SettleCut,
    },
    /// An operator's change of an instrument's status (on every shard, the owner first).
    InstrumentStatus {
        ts: TimestampNs,
        instrument: u32,
        status: crate::domain::instrument::InstrumentStatus,
    },
    /// An operator's update of an instrument's risk parameters (on every shard, owner first).
    InstrumentUpdate {
        ts: TimestampNs,
        instrument: u32,
        update: crate::domain::instrument::InstrumentUpdate,
    },
    /// An instrument listed at run time (on every shard, owner first), at the next slot.
    InstrumentCreate {
        ts: TimestampNs,
        instrument: Instrument,
    },
    /// Message `seq` from shard `from`, run at `ts`.
    Peer {
        ts: TimestampNs,
        from: u16,
        seq: u64,
        msg: PeerMsg,
    },
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

/// The sender and sequence of a `Peer` record, read in place without decoding the message
/// (recovery's first pass only needs these).
pub fn peer_header(payload: &[u8]) -> Result<Option<(u16, u64)>, String> {
    Decoder::default().peer_header(payload)
}

/// Validates and decodes a payload (copied to an aligned buffer first: rkyv reads in place).
pub fn decode(payload: &[u8]) -> Result<WalRecord, String> {
    Decoder::default().decode(payload)
}

/// The alignment at which [`Decoder::decode`] first tries a payload in place.
const IN_PLACE_ALIGN: usize = 8;

/// [`decode`] with one aligned buffer reused for every payload (recovery decodes millions: an
/// allocation per record was a measurable part of the reader's time).
#[derive(Default)]
pub struct Decoder {
    aligned: rkyv::util::AlignedVec<16>,
}

impl Decoder {
    pub fn decode(&mut self, payload: &[u8]) -> Result<WalRecord, String> {
        // Records sit at 8-byte offsets in a segment, so a payload read into a buffer with an
        // aligned start is usually aligned enough to decode where it is, without the copy.
        // rkyv's validation checks every object's alignment, so a refusal there only means
        // "copy first", never a false error.
        if payload.as_ptr() as usize % IN_PLACE_ALIGN == 0 {
            if let Ok(record) = rkyv::from_bytes::<WalRecord, RkyvError>(payload) {
                return Ok(record);
            }
        }
        self.aligned.clear();
        self.aligned.extend_from_slice(payload);
        rkyv::from_bytes::<WalRecord, RkyvError>(&self.aligned).map_err(|e| format!("WAL payload does not decode: {e}"))
    }

    /// [`peer_header`] with the reused buffer.
    pub fn peer_header(&mut self, payload: &[u8]) -> Result<Option<(u16, u64)>, String> {
        self.aligned.clear();
        self.aligned.extend_from_slice(payload);
        let archived = rkyv::access::<ArchivedWalRecord, RkyvError>(&self.aligned)
            .map_err(|e| format!("WAL payload does not decode: {e}"))?;
        Ok(match archived {
            ArchivedWalRecord::Peer { from, seq, .. } => Some((from.to_native(), seq.to_native())),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::name::AccountId;

    #[test]
    fn payloads_at_eight_byte_offsets_decode_in_place() {
        let records = [
            WalRecord::Peer { ts: 9, from: 1, seq: 42, msg: PeerMsg::CancelMissed { order_id: 5 } },
            WalRecord::Command(Command::OpenAccount { ts: 5, account_id: AccountId::new("a1").unwrap() }),
            WalRecord::Credential { account_id: AccountId::new("a1").unwrap(), password_hash: "$argon2id$x".into() },
        ];
        for record in records {
            in_place_round_trip(record);
        }
    }

    fn in_place_round_trip(record: WalRecord) {
        let bytes = encode(&record).unwrap();
        let mut buffer = rkyv::util::AlignedVec::<16>::new();
        buffer.extend_from_slice(&[0; IN_PLACE_ALIGN]);
        buffer.extend_from_slice(&bytes);
        let payload = &buffer[IN_PLACE_ALIGN..];
        assert_eq!(payload.as_ptr() as usize % 16, IN_PLACE_ALIGN);
        // In place, as the decoder tries first (no copy): the archived layout needs no more.
        assert_eq!(rkyv::from_bytes::<WalRecord, RkyvError>(payload).unwrap(), record);
        assert_eq!(Decoder::default().decode(payload).unwrap(), record);
        // Misaligned: refused in place, decoded after the copy.
        let mut shifted = rkyv::util::AlignedVec::<16>::new();
        shifted.extend_from_slice(&[0; IN_PLACE_ALIGN + 1]);
        shifted.extend_from_slice(&bytes);
        let payload = &shifted[IN_PLACE_ALIGN + 1..];
        assert!(rkyv::from_bytes::<WalRecord, RkyvError>(payload).is_err());
        assert_eq!(Decoder::default().decode(payload).unwrap(), record);
    }

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let records = [
            WalRecord::Genesis {
                format: WAL_FORMAT,
                trading_day: 20250102,
                instruments_fingerprint: 7,
                shards: 2,
                shard: 1,
            },
            WalRecord::Command(Command::OpenAccount { ts: 5, account_id: AccountId::new("a1").unwrap() }),
            WalRecord::Credential { account_id: AccountId::new("a1").unwrap(), password_hash: "$argon2id$x".into() },
        ];
        let peer = WalRecord::Peer { ts: 9, from: 1, seq: 42, msg: PeerMsg::CancelMissed { order_id: 5 } };
        assert_eq!(peer_header(&encode(&peer).unwrap()).unwrap(), Some((1, 42)));
        assert_eq!(peer_header(&encode(&records[1]).unwrap()).unwrap(), None);
        for record in records.iter().chain([&peer]) {
            let bytes = encode(record).unwrap();
            assert_eq!(&decode(&bytes).unwrap(), record);
            assert!(decode(&bytes[..bytes.len() / 2]).is_err());
        }
        assert!(decode(&[0xff; 3]).is_err());
    }
}
