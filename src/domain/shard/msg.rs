//! Messages between shards. Account shards send held orders, cancels and modifies to the shard
//! that owns the instrument; instrument shards answer with match reports, fills, cancel and
//! modify results, and broadcast marks. Every message is logged by its receiver (with the
//! sender and the per-pair sequence), so recovery can tell what each shard consumed.

use crate::domain::risk::RejectCode;
use crate::domain::types::*;
use serde::{Deserialize, Serialize};

/// One message from one shard to another (or to itself: then it is handled at once, in the
/// same step, and never logged separately).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PeerMsg {
    /// Account -> instrument shard: an order whose funds or lots are held; match it.
    Match(MatchRequest),
    /// Account -> instrument shard: take this order off the book.
    Cancel { order_id: u64, instrument: u32 },
    /// Account -> instrument shard: move or resize this resting order. The account shard has
    /// already reserved what the new price and volume need.
    Modify { order_id: u64, instrument: u32, price: Price, volume: Volume },
    /// Instrument -> the taker's account shard: how a `Match` ended.
    Matched(MatchReport),
    /// Instrument -> a maker's account shard: its resting order traded.
    MakerFill(FillReport),
    /// Instrument -> account shard: the order was taken off the book with `volume` lots left.
    CancelDone { order_id: u64, volume: Volume },
    /// Instrument -> account shard: the order was no longer on the book (filled or ended).
    CancelMissed { order_id: u64 },
    /// Instrument -> account shard: the modify took effect.
    ModifyDone(ModifyReport),
    /// Instrument -> account shard: the modify was refused; `live` is the order's price and
    /// volume on the book now (None: it is no longer on the book).
    ModifyFailed { order_id: u64, code: RejectCode, live: Option<(Price, Volume)> },
    /// Instrument -> every other shard: positions in `instrument` are now marked at `price`.
    Mark { instrument: u32, price: Price },
}

impl PeerMsg {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            PeerMsg::Match(_) => "match",
            PeerMsg::Cancel { .. } => "cancel",
            PeerMsg::Modify { .. } => "modify",
            PeerMsg::Matched(_) => "matched",
            PeerMsg::MakerFill(_) => "maker_fill",
            PeerMsg::CancelDone { .. } => "cancel_done",
            PeerMsg::CancelMissed { .. } => "cancel_missed",
            PeerMsg::ModifyDone(_) => "modify_done",
            PeerMsg::ModifyFailed { .. } => "modify_failed",
            PeerMsg::Mark { .. } => "mark",
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct MatchRequest {
    pub order_id: u64,
    /// Self-trade key of the account: (account shard << 32) | ledger slot.
    pub owner: u64,
    pub instrument: u32,
    pub direction: Direction,
    pub offset: Offset,
    pub price_type: PriceType,
    pub limit_price: Option<Price>,
    pub volume: Volume,
    /// Least that must trade at once (MIN / ALL), else 0.
    pub min_fill: Volume,
    /// Whether an unfilled remainder rests (GFD / GTC limit orders).
    pub rests: bool,
}

/// One trade as one side's account shard needs it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct FillReport {
    pub order_id: u64,
    pub trade_id: u64,
    pub price: Price,
    pub volume: Volume,
    /// The order's volume left on the book after this trade (authoritative).
    pub volume_left: Volume,
    /// When the instrument shard matched it.
    pub ts: TimestampNs,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum MatchResult {
    /// Nothing happened on the book (self-trade, bad price): the order is refused.
    Rejected(RejectCode),
    /// The order was accepted; `fills`, `rested` and `cancelled` say what became of it.
    Accepted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MatchReport {
    pub order_id: u64,
    pub result: MatchResult,
    /// The price the order matched up to (BEST / FIVELEVEL: read from the book).
    pub match_limit: Option<Price>,
    pub fills: Vec<FillReport>,
    pub rested: Volume,
    pub cancelled: Volume,
    /// Why the unfilled `cancelled` lots ended.
    pub end_reason: RejectCode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ModifyReport {
    pub order_id: u64,
    pub price: Price,
    /// The order's volume right after the modify, before any trades it made.
    pub volume: Volume,
    pub kept_priority: bool,
    pub fills: Vec<FillReport>,
}

/// How a client command ended, or will end once other shards answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Finished in this step.
    Done(Result<(), RejectCode>),
    /// Waiting for the instrument shard; a [`Completion`] for this order id comes later.
    Pending(u64),
}

/// What became of a delivered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Applied,
    /// Already handled (a redelivery after a restart): nothing changed.
    Duplicate,
    /// Not a message of this venue (unknown shard or instrument, a sequence gap): nothing
    /// changed.
    Refused(String),
}

/// A client command on an order that finished in a later step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    Submit { order_id: u64, result: Result<(), RejectCode> },
    Cancel { order_id: u64, result: Result<(), RejectCode> },
    Modify { order_id: u64, result: Result<(), RejectCode> },
}

impl Completion {
    pub fn order_id(&self) -> u64 {
        match *self {
            Completion::Submit { order_id, .. }
            | Completion::Cancel { order_id, .. }
            | Completion::Modify { order_id, .. } => order_id,
        }
    }
}

/// A message to send once the step that made it is durable (serde: a checkpoint's outbox).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    pub to: u16,
    /// Per (sender, receiver) pair, from 1 with no gaps.
    pub seq: u64,
    pub msg: PeerMsg,
}

/// Everything one step produced.
#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    pub events: Vec<crate::domain::event::Event>,
    pub sends: Vec<Outgoing>,
    pub completions: Vec<Completion>,
}

impl StepOutput {
    pub fn clear(&mut self) {
        self.events.clear();
        self.sends.clear();
        self.completions.clear();
    }
}
