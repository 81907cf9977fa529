//! One shard of the partitioned exchange: the accounts and the instruments it owns, as a
//! deterministic state machine over its inputs (client commands for its accounts, and messages
//! from other shards). The steps of an order follow exchange-core: the account's shard holds
//! funds or lots (R1) and sends the order to the instrument's shard, which matches it and
//! reports fills back to the account shards of both sides (R2), which apply them.
//!
//! The same code runs whether the account and the instrument live on one shard or on two: a
//! message to this shard is handled at once, in the same step. Replaying a shard's inputs in
//! their logged order rebuilds its state and regenerates its outgoing messages exactly.

mod account_side;
mod instrument_side;
pub mod msg;
pub mod settlement;
mod state;

pub use msg::{Completion, Delivery, Outcome, Outgoing, PeerMsg, StepOutput};
pub use state::{check_cluster, ShardState};

use crate::domain::book::{Fill, OrderBook};
use crate::domain::command::Command;
use crate::domain::engine::EngineConfig;
use crate::domain::event::{Event, Reason};
use crate::domain::fast_hash::FastMap;
use crate::domain::instrument::Instrument;
use crate::domain::ledger::account::PositionSnapshot;
use crate::domain::ledger::position::Position;
use crate::domain::ledger::Ledger;
use crate::domain::market_data::InstrumentMarket;
use crate::domain::name::{AccountId, InlineStr, InstrumentId};
use crate::domain::touched::Touched;
use crate::domain::types::*;
use std::collections::VecDeque;

/// The most instruments a venue lists, created ones included (bounds the tables shared by every
/// shard, such as the DIFF fan-out directory).
pub const MAX_INSTRUMENTS: usize = 4096;

/// FNV-1a over the id's bytes: stable across runs, builds and platforms.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The shard that owns an account: a stable hash of its id.
pub fn account_shard(account_id: &AccountId, shards: u16) -> u16 {
    (stable_hash(account_id.as_str().as_bytes()) % u64::from(shards.max(1))) as u16
}

/// The shard that owns an instrument: its config `shard` (modulo the shard count), else a
/// stable hash of its id.
pub fn instrument_shard(inst: &Instrument, shards: u16) -> u16 {
    let shards = u64::from(shards.max(1));
    match inst.shard {
        Some(s) => (u64::from(s) % shards) as u16,
        None => (stable_hash(inst.instrument_id.as_str().as_bytes()) % shards) as u16,
    }
}

/// The shard that accepted an order (its account's shard): order ids are `n * shards + shard`.
pub fn order_shard(order_id: u64, shards: u16) -> u16 {
    (order_id % u64::from(shards.max(1))) as u16
}

/// Finds an instrument slot by `cu2501` or `SHFE.cu2501`.
pub fn find_instrument(
    instruments: &[Instrument],
    index: &FastMap<InstrumentId, u32>,
    id: &InstrumentId,
) -> Option<u32> {
    if let Some(&slot) = index.get(id) {
        return Some(slot);
    }
    let (exchange, bare) = id.as_str().split_once('.')?;
    let slot = *index.get(&InstrumentId::new(bare)?)?;
    (instruments[slot as usize].exchange_id.as_str() == exchange).then_some(slot)
}

/// What the instrument side keeps about a resting order besides the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct RestInfo {
    offset: Offset,
}

/// Serde (the shard checkpoints) covers the state; the per-step scratch (`local`, `touched`,
/// `fills`: empty or dead between steps) is skipped and starts empty, and `report_snapshots`
/// starts on, as `new` makes them.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ShardEngine {
    shard: u16,
    shards: u16,
    config: EngineConfig,
    trading_day: u32,
    instruments: Vec<Instrument>,
    instrument_index: FastMap<InstrumentId, u32>,
    /// The owning shard of each instrument.
    instrument_owner: Vec<u16>,
    // ---- account side ----
    ledger: Ledger,
    /// The price positions are marked at, for every instrument: own instruments' last trade,
    /// other shards' instruments as their last `Mark` said.
    marks: Vec<Price>,
    /// Counter n of order ids `n * shards + shard`.
    next_order_n: u64,
    /// Orders with a match or modify sent and not yet answered: one request at a time changes
    /// an order's hold (a cancel may always follow).
    modifying: FastMap<u64, ()>,
    // ---- instrument side (Some only for owned instruments) ----
    books: Vec<Option<OrderBook>>,
    markets: Vec<Option<InstrumentMarket>>,
    open_interest: Vec<Volume>,
    /// The last mark of each owned instrument sent to the other shards: a trade at the same
    /// price sends none.
    broadcast_marks: Vec<Price>,
    resting: FastMap<u64, RestInfo>,
    next_trade_n: u64,
    /// The operator's settlement price of each owned instrument for today (`None`: the mark).
    settlement_prices: Vec<Option<Price>>,
    // ---- settlement ----
    /// Orders this shard's settlement cancelled, with why, until their cancel is answered.
    settle_cancels: FastMap<u64, crate::domain::risk::RejectCode>,
    /// The last cut this shard settled at (recovery finishes a cut other shards did not run).
    last_settlement: Option<settlement::SettleCut>,
    // ---- messaging ----
    /// Last sequence sent to each shard.
    sent: Vec<u64>,
    /// Last sequence received from each shard.
    received: Vec<u64>,
    /// Messages to this shard, handled within the current step (empty between steps).
    #[serde(skip)]
    local: VecDeque<PeerMsg>,
    /// What the current step touched (empty between steps: `finish_step` clears it).
    #[serde(skip)]
    touched: Touched,
    /// The fills of the current match (cleared before each use).
    #[serde(skip)]
    fills: Vec<Fill>,
    /// Whether steps report account, position and quote snapshots (off while replaying a log:
    /// nobody reads them then, and building them was a large part of replay time). A setting
    /// of the process, not state: a decoded engine reports them, as a new one does.
    #[serde(skip, default = "reports_snapshots")]
    report_snapshots: bool,
}

fn reports_snapshots() -> bool {
    true
}

impl ShardEngine {
    /// Shard `shard` of `shards`, for `instruments` (the whole venue's list, in config order).
    pub fn new(
        shard: u16,
        shards: u16,
        mut instruments: Vec<Instrument>,
        trading_day: u32,
        config: EngineConfig,
    ) -> Self {
        assert!(shard < shards, "shard {shard} of {shards}");
        // Open interest is what this venue's accounts hold: a new venue starts at zero.
        for inst in &mut instruments {
            inst.pre_open_interest = 0;
        }
        let mut instrument_index = FastMap::default();
        for (i, inst) in instruments.iter().enumerate() {
            instrument_index.insert(inst.instrument_id, i as u32);
        }
        let instrument_owner: Vec<u16> = instruments.iter().map(|i| instrument_shard(i, shards)).collect();
        let owned = |i: usize| instrument_owner[i] == shard;
        let books = instruments
            .iter()
            .enumerate()
            .map(|(n, i)| {
                owned(n).then(|| {
                    let mut book = OrderBook::new(i.price_tick, i.lower_limit, i.upper_limit, config.book_capacity);
                    // An instrument listed pre-open starts in its auction.
                    book.set_auction(i.status == crate::domain::instrument::InstrumentStatus::PreOpen);
                    book
                })
            })
            .collect();
        let markets = instruments
            .iter()
            .enumerate()
            .map(|(n, i)| owned(n).then(|| InstrumentMarket::new(i, config.kline_capacity, config.tick_capacity)))
            .collect();
        let marks: Vec<Price> = instruments.iter().map(|i| i.pre_settlement).collect();
        let broadcast_marks = marks.clone();
        let n = instruments.len();
        Self {
            shard,
            shards,
            config,
            trading_day,
            instruments,
            instrument_index,
            instrument_owner,
            ledger: Ledger::with_capacity(config.live_order_capacity),
            marks,
            next_order_n: 1,
            modifying: FastMap::default(),
            books,
            markets,
            open_interest: vec![0; n],
            broadcast_marks,
            resting: FastMap::default(),
            next_trade_n: 1,
            settlement_prices: vec![None; n],
            settle_cancels: FastMap::default(),
            last_settlement: None,
            sent: vec![0; shards as usize],
            received: vec![0; shards as usize],
            local: VecDeque::new(),
            touched: Touched::default(),
            fills: Vec::with_capacity(256),
            report_snapshots: true,
        }
    }

    /// Turns the account, position and quote snapshot events of each step on or off. The
    /// state is the same either way; quotes and ticks are still recorded.
    pub fn set_report_snapshots(&mut self, on: bool) {
        self.report_snapshots = on;
    }

    /// Readies an engine decoded from a checkpoint: refuses one whose tables disagree in size
    /// (a step would index out of bounds), and reserves what `new` reserves, so the steps after
    /// a restart allocate no more than before it.
    pub fn finish_decode(&mut self) -> Result<(), String> {
        let n = self.instruments.len();
        if self.shard >= self.shards {
            return Err(format!("shard {} of {}", self.shard, self.shards));
        }
        if self.instrument_index.values().any(|&slot| slot as usize >= n) {
            return Err(format!("an instrument index beyond the {n} instruments"));
        }
        let per_instrument = [
            self.instrument_owner.len(),
            self.marks.len(),
            self.books.len(),
            self.markets.len(),
            self.open_interest.len(),
            self.broadcast_marks.len(),
            self.settlement_prices.len(),
        ];
        if per_instrument.iter().any(|&len| len != n) {
            return Err(format!("tables of {per_instrument:?} entries for {n} instruments"));
        }
        if self.sent.len() != self.shards as usize || self.received.len() != self.shards as usize {
            return Err(format!(
                "message counts for {} and {} of {} shards",
                self.sent.len(),
                self.received.len(),
                self.shards
            ));
        }
        if let Some(inst) = self.instruments.iter().find(|i| i.price_tick <= 0 || i.volume_multiple < 1) {
            return Err(format!("instrument {}: a price tick or volume multiple below 1", inst.instrument_id));
        }
        self.ledger.check_indexes(n)?;
        self.ledger.reserve_live_orders(self.config.live_order_capacity);
        for book in self.books.iter_mut().flatten() {
            book.reserve(self.config.book_capacity);
        }
        self.fills.reserve(256);
        Ok(())
    }

    pub fn shard(&self) -> u16 {
        self.shard
    }

    pub fn shards(&self) -> u16 {
        self.shards
    }

    pub fn config(&self) -> EngineConfig {
        self.config
    }

    pub fn trading_day(&self) -> u32 {
        self.trading_day
    }

    pub fn instruments(&self) -> &[Instrument] {
        &self.instruments
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn marks(&self) -> &[Price] {
        &self.marks
    }

    pub fn instrument_slot(&self, id: &InstrumentId) -> Option<u32> {
        find_instrument(&self.instruments, &self.instrument_index, id)
    }

    pub fn instrument_owner(&self, slot: u32) -> u16 {
        self.instrument_owner[slot as usize]
    }

    pub fn account_slot(&self, id: &AccountId) -> Option<u32> {
        self.ledger.slot_of(id)
    }

    /// The book of an instrument this shard owns.
    pub fn book(&self, instrument: u32) -> Option<&OrderBook> {
        self.books[instrument as usize].as_ref()
    }

    pub fn market(&self, instrument: u32) -> Option<&InstrumentMarket> {
        self.markets[instrument as usize].as_ref()
    }

    pub fn open_interest(&self, instrument: u32) -> Volume {
        self.open_interest[instrument as usize]
    }

    /// Last sequence received from each shard (what this shard has consumed).
    pub fn received(&self) -> &[u64] {
        &self.received
    }

    /// Last sequence sent to each shard.
    pub fn sent(&self) -> &[u64] {
        &self.sent
    }

    /// Executes a client command for an account of this shard.
    pub fn execute(&mut self, command: &Command, out: &mut StepOutput) -> Outcome {
        let ts = command.ts();
        let outcome = self.client_command(ts, command, out);
        if let Outcome::Done(Err(code)) = outcome {
            if !matches!(command, Command::InsertOrder { .. }) {
                let name = InlineStr::new(command.name()).expect("command names are short");
                out.events.push(Event::CommandRejected { ts, command: name, reason: Reason::from(code) });
            }
        }
        self.drain_local(ts, out);
        self.finish_step(ts, out);
        outcome
    }

    /// Handles message `seq` from shard `from`, received at `ts`. A message already handled
    /// (redelivered after a restart) changes nothing; one that cannot come from a shard of
    /// this venue (unknown shard or instrument, a gap in the sequence) is refused, changing
    /// nothing: a WAL that holds one is not this venue's.
    pub fn deliver(&mut self, ts: TimestampNs, from: u16, seq: u64, msg: &PeerMsg, out: &mut StepOutput) -> Delivery {
        if from >= self.shards || from == self.shard {
            return Delivery::Refused(format!(
                "a message from shard {from} to shard {} of {}",
                self.shard, self.shards
            ));
        }
        if let Err(why) = self.check_message(msg) {
            return Delivery::Refused(why);
        }
        let last = &mut self.received[from as usize];
        if seq <= *last {
            return Delivery::Duplicate;
        }
        if seq != *last + 1 {
            return Delivery::Refused(format!("message {seq} from shard {from} follows {}: a gap", *last));
        }
        *last = seq;
        self.handle(ts, msg, out);
        self.drain_local(ts, out);
        self.finish_step(ts, out);
        Delivery::Applied
    }

    /// A message names instruments by index: they must exist, and requests for a book must be
    /// for one this shard owns (marks for one it does not).
    fn check_message(&self, msg: &PeerMsg) -> Result<(), String> {
        match *msg {
            PeerMsg::Match(ref req) if req.volume < 1 || req.min_fill < 0 || req.min_fill > req.volume => {
                return Err(format!("a match of {} lots (at least {})", req.volume, req.min_fill));
            }
            PeerMsg::Modify { volume, .. } if volume < 1 => return Err(format!("a modify to {volume} lots")),
            PeerMsg::MakerFill(ref f) if f.volume < 1 => return Err(format!("a fill of {} lots", f.volume)),
            _ => {}
        }
        let (instrument, owned) = match msg {
            PeerMsg::Match(req) => (req.instrument, true),
            PeerMsg::Cancel { instrument, .. } | PeerMsg::Modify { instrument, .. } => (*instrument, true),
            PeerMsg::Mark { instrument, .. } => (*instrument, false),
            _ => return Ok(()),
        };
        match self.instrument_owner.get(instrument as usize) {
            Some(&owner) if (owner == self.shard) == owned => Ok(()),
            Some(_) => Err(format!("a {} message for instrument #{instrument}, owned by another shard", msg.name())),
            None => Err(format!("a {} message for instrument #{instrument}, which does not exist", msg.name())),
        }
    }

    /// Queues `msg` for shard `to`: handled in this step if `to` is this shard.
    fn send(&mut self, to: u16, msg: PeerMsg, out: &mut StepOutput) {
        if to == self.shard {
            self.local.push_back(msg);
        } else {
            let seq = &mut self.sent[to as usize];
            *seq += 1;
            out.sends.push(Outgoing { to, seq: *seq, msg });
        }
    }

    fn drain_local(&mut self, ts: TimestampNs, out: &mut StepOutput) {
        while let Some(msg) = self.local.pop_front() {
            self.handle(ts, &msg, out);
        }
    }

    fn handle(&mut self, ts: TimestampNs, msg: &PeerMsg, out: &mut StepOutput) {
        match *msg {
            PeerMsg::Match(ref req) => self.on_match(ts, req, out),
            PeerMsg::Cancel { order_id, instrument } => self.on_cancel(order_id, instrument, out),
            PeerMsg::Modify { order_id, instrument, price, volume } => {
                self.on_modify(ts, order_id, instrument, price, volume, out)
            }
            PeerMsg::Matched(ref report) => self.on_matched(ts, report, out),
            PeerMsg::MakerFill(ref fill) => self.apply_fill(fill, out),
            PeerMsg::CancelDone { order_id, volume } => self.on_cancel_done(ts, order_id, volume, out),
            PeerMsg::CancelMissed { order_id } => {
                if self.settle_cancels.remove(&order_id).is_some() {
                    return;
                }
                let result = Err(crate::domain::risk::RejectCode::OrderNotFound);
                out.completions.push(Completion::Cancel { order_id, result });
            }
            PeerMsg::ModifyDone(ref report) => self.on_modify_done(ts, report, out),
            PeerMsg::ModifyFailed { order_id, code, live } => self.on_modify_failed(order_id, code, live, out),
            PeerMsg::Mark { instrument, price } => self.marks[instrument as usize] = price,
        }
    }

    /// Marks to the other shards, then the snapshots of what changed, once each.
    fn finish_step(&mut self, ts: TimestampNs, out: &mut StepOutput) {
        let marked = std::mem::take(&mut self.touched.marked);
        for &instrument in &marked {
            let price = self.marks[instrument as usize];
            if self.broadcast_marks[instrument as usize] == price {
                continue;
            }
            self.broadcast_marks[instrument as usize] = price;
            for to in 0..self.shards {
                if to != self.shard {
                    self.send(to, PeerMsg::Mark { instrument, price }, out);
                }
            }
        }
        self.touched.marked = marked;
        self.touched.marked.clear();
        if !self.report_snapshots {
            self.touched.accounts.clear();
            self.touched.positions.clear();
        }
        for &slot in &self.touched.accounts {
            let account = self.ledger.snapshot(slot, &self.instruments, &self.marks);
            out.events.push(Event::AccountUpdated { ts, account });
        }
        for &(slot, instrument) in &self.touched.positions {
            let account = self.ledger.account(slot);
            let inst = &self.instruments[instrument as usize];
            let mark = self.marks[instrument as usize];
            let position = match account.position(instrument) {
                Some(p) => PositionSnapshot::new(account.account_id, p, inst, mark),
                None => PositionSnapshot::new(account.account_id, &Position::new(instrument), inst, mark),
            };
            out.events.push(Event::PositionUpdated { ts, position });
        }
        for &(instrument, traded) in &self.touched.quotes {
            let (Some(market), Some(book)) =
                (self.markets[instrument as usize].as_mut(), self.books[instrument as usize].as_mut())
            else {
                continue;
            };
            let depth_changed = book.take_depth_changed() && market.on_book(book, ts);
            if traded {
                market.record_tick(ts);
            }
            if (depth_changed || traded) && self.report_snapshots {
                out.events.push(Event::QuoteUpdated { ts, quote: *market.quote() });
            }
        }
        self.touched.accounts.clear();
        self.touched.positions.clear();
        self.touched.quotes.clear();
        #[cfg(debug_assertions)]
        if let Err(broken) = self.check_local() {
            panic!("shard {} invariant broken: {broken}", self.shard);
        }
    }
}
