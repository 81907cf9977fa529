//! The order and trade journal: finished orders and past trades for the REST API.
//!
//! The engine keeps only live orders. The journal folds the engine's event stream into records
//! the server can answer queries from (`GET /api/order/{id}`, `GET /api/order/user/{account}`,
//! `GET /api/trades/user/{account}`, `GET /api/market/trades/{instrument}`).
//!
//! It is pure (no I/O, no clock), deterministic (the same events give the same journal, and
//! every listing comes from ordered per-account or per-instrument structures, never from hash
//! map iteration) and bounded:
//!
//! - per account at most `orders_per_account` orders; when over, the oldest FINISHED order of
//!   that account is dropped. Live orders are never dropped (the engine bounds them), so an
//!   account holds at most `max(orders_per_account, live orders)`.
//! - per account at most `trades_per_account` trades (oldest dropped);
//! - per instrument at most `trades_per_instrument` market trades (a ring).
//!
//! Cost per event is O(1) or O(log n) in the orders kept by one account: each account keeps its
//! orders in a deque of (journal sequence number, order id) in acceptance order (a new order is
//! appended: sequence numbers only grow) and the finished ones in a second, increasing deque of
//! the same numbers, so "the oldest finished order" is its front rather than a scan past live
//! orders.
//! Removing it from the deque is a galloping search from the front and a shift of the entries
//! before it, which are the live orders older than it: few, since the engine bounds live
//! orders, and at the deque's head, which stays in cache.
//!
//! The kept orders are split by status into two maps: the live ones (the few the engine works
//! on, which nearly every event names) and the finished ones (the bulk, up to
//! `orders_per_account` per account). Each event then looks up a small map that stays in
//! cache instead of a large one where every probe misses; an order moves across once, when it
//! finishes.
//!
//! The bulk is shared by reference count (the finished orders' slab in `ChunkedVec` chunks,
//! each account's orders and trades behind an `Arc`), so a checkpoint's snapshot
//! (`Journal::snapshot`) copies pointers, and the journal's next write to a shared piece
//! copies that piece (`Arc::make_mut`).

use crate::domain::chunked_vec::ChunkedVec;
use crate::domain::event::{Event, OrderInfo, Reason, TradeSide};
use crate::domain::fast_hash::FastMap;
use crate::domain::instrument::ExchangeId;
use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use crate::domain::types::{
    Direction, Money, Offset, Price, PriceType, TimeCondition, TimestampNs, Volume, VolumeCondition,
};
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// How much the journal keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalLimits {
    /// Orders kept per account (live ones are kept beyond this).
    pub orders_per_account: usize,
    /// Trades kept per account.
    pub trades_per_account: usize,
    /// Market trades kept per instrument.
    pub trades_per_instrument: usize,
}

impl Default for JournalLimits {
    fn default() -> Self {
        JournalLimits { orders_per_account: 10_000, trades_per_account: 10_000, trades_per_instrument: 1_000 }
    }
}

/// Whether an order can still trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Alive,
    Finished,
}

impl OrderStatus {
    /// The name serde writes.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Alive => "ALIVE",
            OrderStatus::Finished => "FINISHED",
        }
    }
}

/// An order as the journal knows it (DIFF-like field names). Prices are exact integers in
/// binary serde (the checkpoints), decimals in JSON (`fixed4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub order_id: u64,
    pub client_order_id: ClientOrderId,
    pub account_id: AccountId,
    pub exchange_id: ExchangeId,
    pub instrument_id: InstrumentId,
    pub direction: Direction,
    pub offset: Offset,
    pub price_type: PriceType,
    /// The price it rests or matched at (the current one after a modify); None for ANY.
    #[serde(with = "crate::domain::types::fixed4_opt")]
    pub limit_price: Option<Price>,
    /// The volume as accepted (DIFF spelling); a modify does not change it.
    pub volume_orign: Volume,
    pub volume_left: Volume,
    pub time_condition: TimeCondition,
    pub volume_condition: VolumeCondition,
    pub status: OrderStatus,
    /// Lots filled so far.
    pub filled_volume: Volume,
    /// Sum of price x volume over the fills, in price units (without the contract multiple).
    #[serde(with = "crate::domain::types::fixed4")]
    pub trade_amount: Money,
    /// The reason the order ended unfilled (code of `RejectCode`); None while alive or when it
    /// ended fully filled.
    pub last_code: Option<u32>,
    /// A `RejectCode` message (decoding finds the code's own text again).
    #[serde(with = "reject_message")]
    pub last_msg: Option<RejectMessage>,
    pub insert_time_ns: TimestampNs,
    pub update_time_ns: TimestampNs,
}

impl OrderRecord {
    fn accepted(ts: TimestampNs, order: &OrderInfo) -> Self {
        OrderRecord {
            order_id: order.order_id,
            client_order_id: order.client_order_id,
            account_id: order.account_id,
            exchange_id: order.exchange_id,
            instrument_id: order.instrument_id,
            direction: order.direction,
            offset: order.offset,
            price_type: order.price_type,
            limit_price: order.limit_price,
            volume_orign: order.volume,
            volume_left: order.volume,
            time_condition: order.time_condition,
            volume_condition: order.volume_condition,
            status: OrderStatus::Alive,
            filled_volume: 0,
            trade_amount: 0,
            last_code: None,
            last_msg: None,
            insert_time_ns: ts,
            update_time_ns: ts,
        }
    }

    /// The volume-weighted average fill price, rounded half away from zero to a price unit;
    /// None before the first fill.
    pub fn avg_trade_price(&self) -> Option<Price> {
        if self.filled_volume <= 0 {
            return None;
        }
        let amount = self.trade_amount as i128;
        let volume = self.filled_volume as i128;
        let half = volume / 2;
        let rounded = if amount >= 0 { (amount + half) / volume } else { (amount - half) / volume };
        Some(rounded as Price)
    }

    pub fn is_alive(&self) -> bool {
        self.status == OrderStatus::Alive
    }
}

/// One side of a trade, as the account that traded sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTrade {
    pub trade_id: u64,
    pub order_id: u64,
    pub client_order_id: ClientOrderId,
    pub account_id: AccountId,
    pub exchange_id: ExchangeId,
    pub instrument_id: InstrumentId,
    /// This side's direction.
    pub direction: Direction,
    pub offset: Offset,
    #[serde(with = "crate::domain::types::fixed4")]
    pub price: Price,
    pub volume: Volume,
    #[serde(with = "crate::domain::types::fixed4")]
    pub commission: Money,
    #[serde(with = "crate::domain::types::fixed4")]
    pub close_profit: Money,
    pub ts: TimestampNs,
}

/// A trade as the market sees it (no accounts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketTrade {
    pub trade_id: u64,
    #[serde(with = "crate::domain::types::fixed4")]
    pub price: Price,
    pub volume: Volume,
    /// The side of the incoming (taker) order.
    pub aggressor: Direction,
    pub ts: TimestampNs,
}

/// `&'static str` under another name: serde's derive would take a field spelled `&str` as
/// borrowed from the input, and a journal could then be decoded only from `'static` bytes.
type RejectMessage = &'static str;

/// Serde for `OrderRecord::last_msg`: the message as a string (what JSON always showed); read
/// back as the `RejectCode` message with that text, so it stays `&'static`.
mod reject_message {
    use crate::domain::risk::RejectCode;
    use serde::de::{Deserializer, Error, Visitor};
    use serde::{Serialize, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(message: &Option<&'static str>, serializer: S) -> Result<S::Ok, S::Error> {
        message.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'static str>, D::Error> {
        deserializer.deserialize_option(MaybeMessage)
    }

    struct MaybeMessage;

    impl<'de> Visitor<'de> for MaybeMessage {
        type Value = Option<&'static str>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a reject message or none")
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_str(Message).map(Some)
        }
    }

    struct Message;

    impl Visitor<'_> for Message {
        type Value = &'static str;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a reject message")
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
            RejectCode::ALL
                .iter()
                .map(|code| code.message())
                .find(|message| *message == text)
                .ok_or_else(|| E::custom(format!("{text:?} is no reject message")))
        }
    }
}

/// A kept order with its place in its account's acceptance order.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Slot {
    record: OrderRecord,
    seq: u64,
}

/// The finished orders, by order id: records in a slab whose freed slots are reused, found
/// through an index of small entries. The bulk of the journal lives here; a map of records
/// would move every record each time it grows and spread them over more memory. The slab is
/// in shared chunks, so a checkpoint's snapshot of it is cheap (`FinishedSnapshot`).
#[derive(Default, Debug, Deserialize)]
pub struct FinishedOrders {
    #[serde(deserialize_with = "crate::domain::fast_hash::presized_map::deserialize")]
    index: FastMap<u64, u32>,
    slots: ChunkedVec<Slot>,
    /// Slots of evicted orders, to reuse.
    free: Vec<u32>,
}

/// The finished orders as they were when a checkpoint was taken: the slab's chunks, shared
/// with the journal until it writes them, and the free slots. It encodes as `FinishedOrders`
/// decodes, the index rebuilt from the slots (so it is not copied in the shard's pause).
#[derive(Clone, Debug)]
pub struct FinishedSnapshot {
    slots: ChunkedVec<Slot>,
    free: Vec<u32>,
}

impl Serialize for FinishedSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut used = vec![true; self.slots.len()];
        for &at in &self.free {
            if let Some(slot) = used.get_mut(at as usize) {
                *slot = false;
            }
        }
        let index = IndexOfSlots { slots: &self.slots, used: &used };
        let mut finished = serializer.serialize_struct("FinishedOrders", 3)?;
        finished.serialize_field("index", &index)?;
        finished.serialize_field("slots", &self.slots)?;
        finished.serialize_field("free", &self.free)?;
        finished.end()
    }
}

/// The index of `FinishedOrders`, as its pairs (order id, slot) in slot order.
struct IndexOfSlots<'a> {
    slots: &'a ChunkedVec<Slot>,
    used: &'a [bool],
}

impl Serialize for IndexOfSlots<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = self.used.iter().filter(|&&used| used).count();
        let mut pairs = serializer.serialize_seq(Some(len))?;
        for (at, slot) in self.slots.iter().enumerate() {
            if self.used[at] {
                pairs.serialize_element(&(slot.record.order_id, at as u32))?;
            }
        }
        pairs.end()
    }
}

impl FinishedOrders {
    /// Shares the slab's chunks; copies only the free list.
    pub fn snapshot(&self) -> FinishedSnapshot {
        FinishedSnapshot { slots: self.slots.clone(), free: self.free.clone() }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn get(&self, order_id: u64) -> Option<&Slot> {
        self.index.get(&order_id).and_then(|&at| self.slots.get(at as usize))
    }

    fn get_mut(&mut self, order_id: u64) -> Option<&mut Slot> {
        let at = *self.index.get(&order_id)?;
        self.slots.get_mut(at as usize)
    }

    /// Keeps `slot` for `order_id` (which it does not hold yet).
    fn insert(&mut self, order_id: u64, slot: Slot) {
        // A free slot is always in the slab (`check_decoded` refuses a checkpoint where it is
        // not); one that were not would be skipped, never indexed.
        let reused = self.free.pop().and_then(|at| self.slots.get_mut(at as usize).map(|free| (at, free)));
        let at = match reused {
            Some((at, free)) => {
                *free = slot;
                at
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let replaced = self.index.insert(order_id, at);
        debug_assert!(replaced.is_none(), "finished order {order_id} kept twice");
    }

    fn remove(&mut self, order_id: u64) -> Option<Slot> {
        let at = self.index.remove(&order_id)?;
        self.free.push(at);
        self.slots.get(at as usize).copied()
    }
}

/// What the journal keeps for one account. Shared (`Arc`) with a checkpoint's snapshot until
/// the account's next event copies it.
#[derive(Clone, Default, Debug, Serialize, Deserialize)]
struct AccountJournal {
    /// Kept orders as (acceptance sequence, order id), sequence strictly increasing. Encoded as
    /// the sequence of pairs a `BTreeMap` of the same gives, so checkpoints read either way.
    #[serde(serialize_with = "crate::domain::fast_hash::bulk_ordered::serialize")]
    #[serde(deserialize_with = "crate::domain::fast_hash::bulk_ordered::deserialize")]
    orders: VecDeque<(u64, u64)>,
    /// The sequence numbers of the kept orders that are FINISHED (eviction candidates),
    /// strictly increasing. A deque, not a `BTreeSet`: an order mostly finishes soon after it
    /// was accepted, so its number goes at or near the back (found by galloping from there,
    /// with the few entries after it shifted), and eviction takes the front; the set's insert
    /// descended its whole tree, 2 % of a busy shard. Encoded as the set was (a sequence).
    #[serde(serialize_with = "crate::domain::fast_hash::bulk_ordered::serialize")]
    #[serde(deserialize_with = "crate::domain::fast_hash::bulk_ordered::deserialize")]
    finished: VecDeque<u64>,
    /// Kept trades, oldest first.
    trades: VecDeque<UserTrade>,
}

/// Finished orders and past trades folded from the engine's events. See the module docs.
/// Serde (the shard checkpoints) covers all of it, limits included.
#[derive(Debug, Serialize, Deserialize)]
pub struct Journal {
    limits: JournalLimits,
    /// The kept orders that are ALIVE, by order id.
    #[serde(with = "crate::domain::fast_hash::presized_map")]
    live: FastMap<u64, Slot>,
    /// The kept orders that are FINISHED, by order id. Not in the journal's own serde: a
    /// checkpoint carries it as a part of its own, so it encodes and decodes in parallel
    /// with the rest (it is most of the bytes).
    #[serde(skip)]
    finished: FinishedOrders,
    accounts: FastMap<AccountId, Arc<AccountJournal>>,
    /// Market trades per (bare) instrument id, oldest first.
    market: FastMap<InstrumentId, VecDeque<MarketTrade>>,
    /// The next acceptance sequence number (journal-wide, so it never repeats).
    next_seq: u64,
    /// The highest order id accepted so far. Engines assign ids increasing, so a new order is
    /// above it and cannot be kept already: its acceptance skips a look-up that misses the
    /// cache in the large map of finished orders.
    max_accepted_id: Option<u64>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal::new(JournalLimits::default())
    }
}

impl Journal {
    pub fn new(limits: JournalLimits) -> Self {
        Journal {
            limits,
            live: FastMap::default(),
            finished: FinishedOrders::default(),
            accounts: FastMap::default(),
            market: FastMap::default(),
            next_seq: 0,
            max_accepted_id: None,
        }
    }

    pub fn limits(&self) -> JournalLimits {
        self.limits
    }

    /// The journal as it is now, for a checkpoint to encode while this one goes on: the
    /// journal without its finished orders (the checkpoint's first part: its own serde), and
    /// those apart (`Service::checkpoint_snapshot`). Costs a copy of the live orders and of a
    /// pointer per account and per chunk of the finished orders; what the journal writes next
    /// is copied then, a chunk or an account at a time.
    pub fn snapshot(&self) -> (Journal, FinishedSnapshot) {
        let main = Journal {
            limits: self.limits,
            live: self.live.clone(),
            finished: FinishedOrders::default(),
            accounts: self.accounts.clone(),
            market: self.market.clone(),
            next_seq: self.next_seq,
            max_accepted_id: self.max_accepted_id,
        };
        (main, self.finished.snapshot())
    }

    /// Puts back the finished orders a checkpoint carried apart.
    pub fn set_finished_part(&mut self, finished: FinishedOrders) {
        self.finished = finished;
    }

    /// Keeps to `limits` from now on. Records over a smaller limit are dropped (oldest first)
    /// as events of their account or instrument come, not at once.
    pub fn set_limits(&mut self, limits: JournalLimits) {
        self.limits = limits;
    }

    /// Checks what a decoded journal (a checkpoint) must hold for lookups not to index out of
    /// bounds or go astray: every finished order's slot exists, no slot is both used and free,
    /// and each account's orders are in increasing sequence order.
    pub fn check_decoded(&self) -> Result<(), String> {
        let finished = &self.finished;
        let slots = finished.slots.len();
        if finished.index.values().chain(&finished.free).any(|&at| at as usize >= slots)
            || finished.index.len() + finished.free.len() != slots
        {
            return Err(format!(
                "{} finished orders and {} free slots in {slots} slots",
                finished.index.len(),
                finished.free.len()
            ));
        }
        // Each account's orders and finished sequence numbers are found by searches that
        // need them in increasing order.
        for (account, acc) in &self.accounts {
            if let Some(w) = acc.orders.iter().zip(acc.orders.iter().skip(1)).find(|(a, b)| a.0 >= b.0) {
                return Err(format!("account {account}: order sequence {} before {}", (w.0).0, (w.1).0));
            }
            if let Some(w) = acc.finished.iter().zip(acc.finished.iter().skip(1)).find(|(a, b)| a >= b) {
                return Err(format!("account {account}: finished sequence {} before {}", w.0, w.1));
            }
        }
        Ok(())
    }

    /// Folds one engine event in. Events other than order acceptance, trades, cancels and
    /// modifies are ignored, as are events for orders the journal does not hold (evicted, or
    /// accepted before the journal started).
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::OrderAccepted { ts, order } => self.on_accepted(*ts, order),
            Event::Trade { ts, trade_id, exchange_id, instrument_id, price, volume, aggressor, buy, sell } => {
                let trade = TradeFacts {
                    ts: *ts,
                    trade_id: *trade_id,
                    exchange_id: *exchange_id,
                    instrument_id: *instrument_id,
                    price: *price,
                    volume: *volume,
                };
                self.on_trade_side(&trade, Direction::Buy, buy);
                self.on_trade_side(&trade, Direction::Sell, sell);
                self.push_market_trade(
                    *instrument_id,
                    MarketTrade { trade_id: *trade_id, price: *price, volume: *volume, aggressor: *aggressor, ts: *ts },
                );
            }
            Event::Fill { ts, trade_id, exchange_id, instrument_id, price, volume, direction, side } => {
                let trade = TradeFacts {
                    ts: *ts,
                    trade_id: *trade_id,
                    exchange_id: *exchange_id,
                    instrument_id: *instrument_id,
                    price: *price,
                    volume: *volume,
                };
                self.on_trade_side(&trade, *direction, side);
            }
            Event::MarketTrade { ts, trade_id, instrument_id, price, volume, aggressor, .. } => self.push_market_trade(
                *instrument_id,
                MarketTrade { trade_id: *trade_id, price: *price, volume: *volume, aggressor: *aggressor, ts: *ts },
            ),
            Event::OrderCancelled { ts, order_id, volume_cancelled, reason, .. } => {
                self.on_cancelled(*ts, *order_id, *volume_cancelled, reason)
            }
            Event::OrderModified { ts, order_id, limit_price, volume_left, .. } => {
                if let Some(slot) = self.slot_mut(*order_id) {
                    let record = &mut slot.record;
                    debug_assert!(record.is_alive(), "modify of finished order {order_id}");
                    // The engine always reports the price; None would mean "unchanged".
                    if limit_price.is_some() {
                        record.limit_price = *limit_price;
                    }
                    record.volume_left = *volume_left;
                    record.update_time_ns = *ts;
                }
            }
            _ => {}
        }
    }

    /// The kept order with this exchange order id.
    pub fn order(&self, order_id: u64) -> Option<&OrderRecord> {
        self.live.get(&order_id).or_else(|| self.finished.get(order_id)).map(|slot| &slot.record)
    }

    /// The kept order with this id, live ones looked up first (events nearly always name one).
    fn slot_mut(&mut self, order_id: u64) -> Option<&mut Slot> {
        match self.live.get_mut(&order_id) {
            Some(slot) => Some(slot),
            None => self.finished.get_mut(order_id),
        }
    }

    /// The newest kept order of this account with that client order id.
    ///
    /// A walk over the account's kept orders, newest first: no index is kept for it, because
    /// keeping one cost every accepted order a random insert into a large map (a tenth of WAL
    /// replay time), and only this rare lookup would read it. Client ids are reused only after
    /// the older order finished, and eviction drops the oldest finished first, so the newest
    /// match is the one an index would hold.
    pub fn order_by_client(&self, account: &AccountId, client_order_id: &ClientOrderId) -> Option<&OrderRecord> {
        let acc = self.accounts.get(account)?;
        acc.orders.iter().rev().filter_map(|&(_, id)| self.order(id)).find(|r| r.client_order_id == *client_order_id)
    }

    /// The live orders of every account, in no particular order.
    pub fn live_orders(&self) -> impl Iterator<Item = &OrderRecord> {
        self.live.values().map(|slot| &slot.record)
    }

    /// The account's orders kept, oldest first (in acceptance order).
    pub fn account_orders(&self, account: &AccountId) -> impl Iterator<Item = &OrderRecord> {
        self.accounts
            .get(account)
            .into_iter()
            .flat_map(|acc| acc.orders.iter())
            .filter_map(move |&(_, id)| self.order(id))
    }

    /// The account's trades kept, oldest first.
    pub fn account_trades(&self, account: &AccountId) -> impl Iterator<Item = &UserTrade> {
        self.accounts.get(account).into_iter().flat_map(|acc| acc.trades.iter())
    }

    /// The account's last `n` trades, oldest first (what one command just made), without
    /// walking the rest.
    pub fn recent_account_trades(&self, account: &AccountId, n: usize) -> impl Iterator<Item = &UserTrade> {
        self.accounts
            .get(account)
            .into_iter()
            .flat_map(move |acc| acc.trades.iter().skip(acc.trades.len().saturating_sub(n)))
    }

    /// The instrument's most recent trades, newest first, at most `limit`. Keyed by the bare
    /// instrument id (as in `Event::Trade::instrument_id`, e.g. `cu2501`).
    pub fn market_trades(&self, instrument: &InstrumentId, limit: usize) -> impl Iterator<Item = &MarketTrade> {
        self.market.get(instrument).into_iter().flat_map(|ring| ring.iter().rev()).take(limit)
    }

    /// The number of orders kept (all accounts).
    pub fn order_count(&self) -> usize {
        self.live.len() + self.finished.len()
    }

    fn on_accepted(&mut self, ts: TimestampNs, order: &OrderInfo) {
        // An id is never accepted twice; if it were, the newer acceptance wins and the older
        // record goes, so the indexes stay consistent.
        debug_assert!(self.order(order.order_id).is_none(), "order {} accepted twice", order.order_id);
        if self.max_accepted_id.is_some_and(|max| order.order_id <= max) {
            self.remove_order(order.order_id);
        }
        self.max_accepted_id = self.max_accepted_id.max(Some(order.order_id));
        let seq = self.next_seq;
        self.next_seq += 1;
        self.live.insert(order.order_id, Slot { record: OrderRecord::accepted(ts, order), seq });
        let acc = Arc::make_mut(self.accounts.entry(order.account_id).or_default());
        debug_assert!(acc.orders.back().map_or(true, |&(last, _)| last < seq), "journal sequence went back");
        acc.orders.push_back((seq, order.order_id));
        evict(acc, &mut self.finished, self.limits.orders_per_account);
    }

    fn on_trade_side(&mut self, trade: &TradeFacts, direction: Direction, side: &TradeSide) {
        let mut finished = false;
        if let Some(slot) = self.slot_mut(side.order_id) {
            let record = &mut slot.record;
            debug_assert!(record.is_alive(), "trade on finished order {}", side.order_id);
            record.volume_left = side.volume_left;
            record.filled_volume = record.filled_volume.saturating_add(trade.volume);
            record.trade_amount = record.trade_amount.saturating_add(trade.price.saturating_mul(trade.volume));
            record.update_time_ns = trade.ts;
            if side.volume_left <= 0 && record.is_alive() {
                record.status = OrderStatus::Finished;
                finished = true;
            }
        }
        if finished {
            self.mark_finished(side.order_id);
        }
        // The trade is listed even when its order is not kept: the event carries all of it.
        let user_trade = UserTrade {
            trade_id: trade.trade_id,
            order_id: side.order_id,
            client_order_id: side.client_order_id,
            account_id: side.account_id,
            exchange_id: trade.exchange_id,
            instrument_id: trade.instrument_id,
            direction,
            offset: side.offset,
            price: trade.price,
            volume: trade.volume,
            commission: side.commission,
            close_profit: side.close_profit,
            ts: trade.ts,
        };
        let cap = self.limits.trades_per_account;
        let acc = Arc::make_mut(self.accounts.entry(side.account_id).or_default());
        push_bounded(&mut acc.trades, user_trade, cap);
    }

    fn push_market_trade(&mut self, instrument: InstrumentId, trade: MarketTrade) {
        let cap = self.limits.trades_per_instrument;
        if cap == 0 {
            return;
        }
        push_bounded(self.market.entry(instrument).or_default(), trade, cap);
    }

    fn on_cancelled(&mut self, ts: TimestampNs, order_id: u64, volume_cancelled: Volume, reason: &Reason) {
        let Some(slot) = self.slot_mut(order_id) else { return };
        let record = &mut slot.record;
        debug_assert!(record.is_alive(), "cancel of finished order {order_id}");
        debug_assert!(volume_cancelled <= record.volume_left, "order {order_id} cancelled more than it had left");
        record.volume_left = record.volume_left.saturating_sub(volume_cancelled).max(0);
        record.update_time_ns = ts;
        record.last_code = Some(reason.reason.code());
        record.last_msg = Some(reason.reason.message());
        if record.is_alive() {
            record.status = OrderStatus::Finished;
            self.mark_finished(order_id);
        }
    }

    /// Records that a kept order just became FINISHED (moving it to the finished map), then
    /// evicts if its account is over.
    fn mark_finished(&mut self, order_id: u64) {
        let Some(slot) = self.live.remove(&order_id) else { return };
        let seq = slot.seq;
        let account = slot.record.account_id;
        self.finished.insert(order_id, slot);
        if let Some(acc) = self.accounts.get_mut(&account).map(Arc::make_mut) {
            insert_seq(&mut acc.finished, seq);
            evict(acc, &mut self.finished, self.limits.orders_per_account);
        }
    }

    /// Forgets one order entirely (used only if an id is accepted twice).
    fn remove_order(&mut self, order_id: u64) {
        let Some(slot) = self.live.remove(&order_id).or_else(|| self.finished.remove(order_id)) else { return };
        if let Some(acc) = self.accounts.get_mut(&slot.record.account_id).map(Arc::make_mut) {
            remove_seq(&mut acc.orders, slot.seq);
            if let Ok(at) = acc.finished.binary_search(&slot.seq) {
                acc.finished.remove(at);
            }
        }
    }
}

/// The parts of a trade event shared by both sides.
struct TradeFacts {
    ts: TimestampNs,
    trade_id: u64,
    exchange_id: ExchangeId,
    instrument_id: InstrumentId,
    price: Price,
    volume: Volume,
}

/// Drops the account's oldest finished orders while it keeps more than `limit`.
/// Amortised O(log n) per order: each order is evicted at most once.
fn evict(acc: &mut AccountJournal, finished: &mut FinishedOrders, limit: usize) {
    while acc.orders.len() > limit {
        let Some(seq) = acc.finished.pop_front() else { break };
        let at = position_from_front(&acc.orders, seq);
        if let Some((_, order_id)) = at.and_then(|at| acc.orders.remove(at)) {
            finished.remove(order_id);
        }
    }
}

/// Where the entry with sequence `seq` is in an account's orders (sorted by sequence), found
/// by galloping from the front: for the oldest finished order, only the live orders older
/// than it come before it, so the search reads a few entries at the deque's head, where a
/// binary search over the whole deque (10,000 entries by default) misses the cache at most
/// of its probes. O(log i) for an entry at index i.
fn position_from_front(orders: &VecDeque<(u64, u64)>, seq: u64) -> Option<usize> {
    let len = orders.len();
    // Every entry before `lo` is below `seq`; the window [lo, hi) doubles until its last
    // entry is not.
    let (mut lo, mut width) = (0, 1);
    let mut hi = len.min(1);
    while hi < len && orders[hi - 1].0 < seq {
        lo = hi;
        width *= 2;
        hi = (lo + width).min(len);
    }
    let at = first_not_below(lo, hi, seq, |i| orders[i].0);
    (at < len && orders[at].0 == seq).then_some(at)
}

/// The first index in `lo..hi` whose key is not below `seq` (`hi` if none), by bisection;
/// the keys there are increasing. The end of both galloping searches.
fn first_not_below(mut lo: usize, mut hi: usize, seq: u64, key: impl Fn(usize) -> u64) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if key(mid) < seq {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Removes the entry with sequence `seq` from an account's orders (sorted by sequence); its
/// order id, or None when it is not there.
fn remove_seq(orders: &mut VecDeque<(u64, u64)>, seq: u64) -> Option<u64> {
    let at = orders.binary_search_by_key(&seq, |&(s, _)| s).ok()?;
    orders.remove(at).map(|(_, order_id)| order_id)
}

/// Inserts `seq` into a strictly increasing deque, keeping it so (a number already there is
/// not added twice). The place is found by galloping from the back, where a just-finished
/// order's number goes, and `VecDeque::insert` shifts the entries after it.
fn insert_seq(seqs: &mut VecDeque<u64>, seq: u64) {
    let len = seqs.len();
    if seqs.back().map_or(true, |&last| last < seq) {
        seqs.push_back(seq);
        return;
    }
    // Every entry from `hi` on is above `seq`; the window [lo, hi) doubles toward the front
    // until its first entry is not.
    let (mut hi, mut width) = (len, 1);
    let mut lo = len - 1;
    while lo > 0 && seqs[lo] > seq {
        hi = lo;
        width *= 2;
        lo = hi.saturating_sub(width);
    }
    let at = first_not_below(lo, hi, seq, |i| seqs[i]);
    if seqs.get(at) != Some(&seq) {
        seqs.insert(at, seq);
    }
}

/// Appends to a deque kept at most `cap` long, dropping the oldest.
fn push_bounded<T>(deque: &mut VecDeque<T>, item: T, cap: usize) {
    if cap == 0 {
        return;
    }
    while deque.len() >= cap {
        deque.pop_front();
    }
    deque.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn inserting_from_the_back_keeps_what_a_btreeset_keeps() {
        let mut next = crate::storage::lsm::test_rand(0x9e37_79b9_7f4a_7c15u64);
        for round in 0..300 {
            let mut seqs = VecDeque::new();
            let mut model = BTreeSet::new();
            let mut top = 0u64;
            for _ in 0..next(200) {
                // Mostly new numbers at the back, some older ones, some repeats, some pops.
                let seq = match next(10) {
                    0..=5 => {
                        top += 1 + next(3);
                        top
                    }
                    6..=8 => next(top + 1),
                    _ => {
                        assert_eq!(seqs.pop_front(), model.pop_first(), "round {round}");
                        continue;
                    }
                };
                insert_seq(&mut seqs, seq);
                model.insert(seq);
                assert!(seqs.iter().eq(model.iter()), "round {round}, after {seq}");
            }
        }
    }

    #[test]
    fn galloping_from_the_front_finds_what_a_binary_search_finds() {
        let mut next = crate::storage::lsm::test_rand(0x2545_f491_4f6c_dd1du64);
        for len in 0..70u64 {
            for _ in 0..20 {
                // Strictly increasing sequences with gaps, as an account's orders are.
                let mut orders = VecDeque::new();
                let mut seq = next(3);
                for id in 0..len {
                    seq += 1 + next(3);
                    orders.push_back((seq, id));
                }
                for probe in 0..seq + 3 {
                    let expected = orders.binary_search_by_key(&probe, |&(s, _)| s).ok();
                    assert_eq!(position_from_front(&orders, probe), expected, "len {len}, seq {probe}");
                }
            }
        }
    }
    use crate::domain::risk::RejectCode;
    use crate::domain::types::price_from_f64;

    fn acc(name: &str) -> AccountId {
        AccountId::new(name).unwrap()
    }

    fn cid(name: &str) -> ClientOrderId {
        ClientOrderId::new(name).unwrap()
    }

    fn inst(name: &str) -> InstrumentId {
        InstrumentId::new(name).unwrap()
    }

    fn accepted(
        ts: TimestampNs,
        order_id: u64,
        account: &str,
        client: &str,
        direction: Direction,
        price: f64,
        volume: Volume,
    ) -> Event {
        Event::OrderAccepted {
            ts,
            order: OrderInfo {
                order_id,
                client_order_id: cid(client),
                account_id: acc(account),
                exchange_id: ExchangeId::SHFE,
                instrument_id: inst("cu2501"),
                direction,
                offset: Offset::Open,
                price_type: PriceType::Limit,
                limit_price: Some(price_from_f64(price)),
                volume,
                time_condition: TimeCondition::Gfd,
                volume_condition: VolumeCondition::Any,
            },
        }
    }

    fn side(order_id: u64, account: &str, client: &str, volume_left: Volume) -> TradeSide {
        TradeSide {
            order_id,
            client_order_id: cid(client),
            account_id: acc(account),
            offset: Offset::Open,
            commission: 30_000,
            close_profit: 0,
            volume_left,
        }
    }

    fn trade(ts: TimestampNs, trade_id: u64, price: f64, volume: Volume, buy: TradeSide, sell: TradeSide) -> Event {
        Event::Trade {
            ts,
            trade_id,
            exchange_id: ExchangeId::SHFE,
            instrument_id: inst("cu2501"),
            price: price_from_f64(price),
            volume,
            aggressor: Direction::Sell,
            buy,
            sell,
        }
    }

    fn cancelled(
        ts: TimestampNs,
        order_id: u64,
        account: &str,
        client: &str,
        volume: Volume,
        why: RejectCode,
    ) -> Event {
        Event::OrderCancelled {
            ts,
            order_id,
            client_order_id: cid(client),
            account_id: acc(account),
            instrument_id: inst("cu2501"),
            volume_cancelled: volume,
            reason: Reason::from(why),
        }
    }

    fn journal() -> Journal {
        Journal::new(JournalLimits::default())
    }

    #[test]
    fn accept_partial_trade_then_cancel() {
        let mut j = journal();
        j.apply(&accepted(1, 10, "alice", "a1", Direction::Buy, 70_000.0, 5));
        let r = j.order(10).unwrap();
        assert_eq!((r.status, r.volume_orign, r.volume_left, r.filled_volume), (OrderStatus::Alive, 5, 5, 0));
        assert_eq!(r.avg_trade_price(), None);

        j.apply(&accepted(2, 11, "bob", "b1", Direction::Sell, 70_000.0, 2));
        j.apply(&trade(2, 1, 70_000.0, 2, side(10, "alice", "a1", 3), side(11, "bob", "b1", 0)));
        let r = *j.order(10).unwrap();
        assert_eq!((r.status, r.volume_left, r.filled_volume), (OrderStatus::Alive, 3, 2));
        assert_eq!(r.trade_amount, price_from_f64(70_000.0) * 2);
        assert_eq!(r.avg_trade_price(), Some(price_from_f64(70_000.0)));
        assert_eq!(r.update_time_ns, 2);

        j.apply(&cancelled(3, 10, "alice", "a1", 3, RejectCode::CancelledByUser));
        let r = *j.order(10).unwrap();
        assert_eq!((r.status, r.volume_left, r.filled_volume), (OrderStatus::Finished, 0, 2));
        assert_eq!(r.last_code, Some(RejectCode::CancelledByUser.code()));
        assert_eq!(r.last_msg, Some(RejectCode::CancelledByUser.message()));
        assert_eq!((r.insert_time_ns, r.update_time_ns), (1, 3));
        assert_eq!(j.order_by_client(&acc("alice"), &cid("a1")).map(|r| r.order_id), Some(10));
    }

    #[test]
    fn full_fill_finishes_without_a_reason() {
        let mut j = journal();
        j.apply(&accepted(1, 10, "alice", "a1", Direction::Buy, 70_000.0, 3));
        j.apply(&accepted(2, 11, "bob", "b1", Direction::Sell, 69_990.0, 1));
        j.apply(&accepted(2, 12, "bob", "b2", Direction::Sell, 70_000.0, 2));
        j.apply(&trade(3, 1, 69_990.0, 1, side(10, "alice", "a1", 2), side(11, "bob", "b1", 0)));
        j.apply(&trade(3, 2, 70_000.0, 2, side(10, "alice", "a1", 0), side(12, "bob", "b2", 0)));
        let r = *j.order(10).unwrap();
        assert_eq!((r.status, r.volume_left, r.filled_volume), (OrderStatus::Finished, 0, 3));
        assert_eq!((r.last_code, r.last_msg), (None, None));
        // (69990 + 2 x 70000) / 3 = 69996.666.. -> 69996.6667
        assert_eq!(r.avg_trade_price(), Some(699_966_667));
        assert_eq!(j.order(11).unwrap().status, OrderStatus::Finished);
        assert_eq!(j.order(12).unwrap().status, OrderStatus::Finished);
    }

    #[test]
    fn modify_updates_price_and_volume() {
        let mut j = journal();
        j.apply(&accepted(1, 10, "alice", "a1", Direction::Buy, 70_000.0, 3));
        j.apply(&Event::OrderModified {
            ts: 5,
            order_id: 10,
            client_order_id: cid("a1"),
            account_id: acc("alice"),
            limit_price: Some(price_from_f64(70_010.0)),
            volume_left: 7,
            kept_priority: false,
        });
        let r = *j.order(10).unwrap();
        assert_eq!(r.limit_price, Some(price_from_f64(70_010.0)));
        assert_eq!((r.volume_orign, r.volume_left, r.update_time_ns), (3, 7, 5));
        assert_eq!(r.status, OrderStatus::Alive);
    }

    #[test]
    fn trades_are_listed_for_both_sides_and_the_market() {
        let mut j = journal();
        j.apply(&accepted(1, 10, "alice", "a1", Direction::Buy, 70_000.0, 5));
        j.apply(&accepted(2, 11, "bob", "b1", Direction::Sell, 70_000.0, 5));
        for t in 1..=3 {
            j.apply(&trade(
                t as i64 + 2,
                t,
                70_000.0,
                1,
                side(10, "alice", "a1", 5 - t as i64),
                side(11, "bob", "b1", 5 - t as i64),
            ));
        }
        let alice: Vec<_> = j.account_trades(&acc("alice")).collect();
        let bob: Vec<_> = j.account_trades(&acc("bob")).collect();
        assert_eq!(alice.iter().map(|t| t.trade_id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(bob.iter().map(|t| t.trade_id).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(alice.iter().all(|t| t.direction == Direction::Buy && t.order_id == 10));
        assert!(bob.iter().all(|t| t.direction == Direction::Sell && t.order_id == 11));
        assert_eq!(alice[0].commission, 30_000);
        assert_eq!(j.account_trades(&acc("carol")).count(), 0);

        let newest: Vec<_> = j.market_trades(&inst("cu2501"), 2).map(|t| t.trade_id).collect();
        assert_eq!(newest, [3, 2]);
        assert_eq!(j.market_trades(&inst("cu2501"), 100).count(), 3);
        assert_eq!(j.market_trades(&inst("cu2501"), 0).count(), 0);
        assert_eq!(j.market_trades(&inst("al2501"), 10).count(), 0);
        assert_eq!(j.market_trades(&inst("cu2501"), 1).next().unwrap().aggressor, Direction::Sell);
    }

    #[test]
    fn trade_rings_are_bounded() {
        let limits = JournalLimits { orders_per_account: 10, trades_per_account: 3, trades_per_instrument: 2 };
        let mut j = Journal::new(limits);
        j.apply(&accepted(1, 10, "alice", "a1", Direction::Buy, 70_000.0, 100));
        j.apply(&accepted(2, 11, "bob", "b1", Direction::Sell, 70_000.0, 100));
        for t in 1..=10u64 {
            let left = 100 - t as i64;
            j.apply(&trade(t as i64, t, 70_000.0, 1, side(10, "alice", "a1", left), side(11, "bob", "b1", left)));
        }
        assert_eq!(j.account_trades(&acc("alice")).map(|t| t.trade_id).collect::<Vec<_>>(), [8, 9, 10]);
        assert_eq!(j.market_trades(&inst("cu2501"), 10).map(|t| t.trade_id).collect::<Vec<_>>(), [10, 9]);
        assert_eq!(j.order(10).unwrap().filled_volume, 10);
    }

    #[test]
    fn eviction_keeps_live_orders_and_drops_the_oldest_finished() {
        let limits = JournalLimits { orders_per_account: 3, trades_per_account: 10, trades_per_instrument: 10 };
        let mut j = Journal::new(limits);
        // 1 stays live throughout; 2, 3 finish; 4 live.
        j.apply(&accepted(1, 1, "alice", "o1", Direction::Buy, 70_000.0, 1));
        j.apply(&accepted(2, 2, "alice", "o2", Direction::Buy, 70_000.0, 1));
        j.apply(&cancelled(3, 2, "alice", "o2", 1, RejectCode::CancelledByUser));
        j.apply(&accepted(4, 3, "alice", "o3", Direction::Buy, 70_000.0, 1));
        j.apply(&cancelled(5, 3, "alice", "o3", 1, RejectCode::CancelledByUser));
        let ids = |j: &Journal| j.account_orders(&acc("alice")).map(|r| r.order_id).collect::<Vec<_>>();
        assert_eq!(ids(&j), [1, 2, 3]);

        // A fourth order: the oldest finished (2) goes, never the live 1.
        j.apply(&accepted(6, 4, "alice", "o4", Direction::Buy, 70_000.0, 1));
        assert_eq!(ids(&j), [1, 3, 4]);
        assert!(j.order(2).is_none());
        assert!(j.order_by_client(&acc("alice"), &cid("o2")).is_none());

        // Two more live orders: 3 goes, then nothing finished is left, so the account grows
        // beyond the limit with live orders only.
        j.apply(&accepted(7, 5, "alice", "o5", Direction::Buy, 70_000.0, 1));
        j.apply(&accepted(8, 6, "alice", "o6", Direction::Buy, 70_000.0, 1));
        assert_eq!(ids(&j), [1, 4, 5, 6]);
        assert!(j.order(3).is_none());
        assert!(j.account_orders(&acc("alice")).all(|r| r.is_alive()));

        // When one of them finishes it is evicted at once (the account is over its limit).
        j.apply(&cancelled(9, 5, "alice", "o5", 1, RejectCode::CancelledByUser));
        assert_eq!(ids(&j), [1, 4, 6]);
        assert!(j.order(5).is_none());
        assert_eq!(j.order_count(), 3);

        // Events for evicted orders are ignored.
        j.apply(&cancelled(10, 2, "alice", "o2", 1, RejectCode::CancelledByUser));
        assert!(j.order(2).is_none());
        assert_eq!(ids(&j), [1, 4, 6]);

        // Other accounts are unaffected.
        j.apply(&accepted(11, 7, "bob", "o1", Direction::Sell, 70_000.0, 1));
        assert_eq!(j.account_orders(&acc("bob")).count(), 1);
        assert_eq!(j.order_by_client(&acc("bob"), &cid("o1")).map(|r| r.order_id), Some(7));
        assert_eq!(j.order_by_client(&acc("alice"), &cid("o1")).map(|r| r.order_id), Some(1));
    }

    /// An account's orders were a `BTreeMap` of sequence to order id, and its finished numbers a
    /// `BTreeSet`, before they were deques: the encodings are the same sequences, so checkpoints
    /// written before still decode, and a decoded journal whose orders or finished numbers are
    /// out of sequence order is refused.
    #[test]
    fn account_orders_encode_as_the_map_did_and_must_be_in_order() {
        #[derive(Serialize)]
        struct MapAccountJournal {
            #[serde(serialize_with = "crate::domain::fast_hash::bulk_ordered::serialize")]
            orders: std::collections::BTreeMap<u64, u64>,
            #[serde(serialize_with = "crate::domain::fast_hash::bulk_ordered::serialize")]
            finished: BTreeSet<u64>,
            trades: VecDeque<UserTrade>,
        }
        let old = MapAccountJournal {
            orders: [(3, 30), (7, 70), (9, 90)].into_iter().collect(),
            finished: [9, 3].into_iter().collect(),
            trades: VecDeque::new(),
        };
        let bytes = bincode::serialize(&old).unwrap();
        let decoded: AccountJournal = bincode::deserialize(&bytes).unwrap();
        assert_eq!(decoded.orders, [(3, 30), (7, 70), (9, 90)]);
        assert_eq!(decoded.finished, [3, 9]);
        assert_eq!(bincode::serialize(&decoded).unwrap(), bytes);

        let mut j = journal();
        j.apply(&accepted(1, 1, "alice", "o1", Direction::Buy, 70_000.0, 1));
        j.apply(&accepted(2, 2, "alice", "o2", Direction::Buy, 70_000.0, 1));
        assert_eq!(j.check_decoded(), Ok(()));
        Arc::make_mut(j.accounts.get_mut(&acc("alice")).unwrap()).orders.swap(0, 1);
        let refused = j.check_decoded().unwrap_err();
        assert!(refused.contains("order sequence 1 before 0"), "{refused}");

        let mut j = journal();
        for id in 1..=3 {
            let client = format!("o{id}");
            j.apply(&accepted(id as i64, id, "alice", &client, Direction::Buy, 70_000.0, 1));
            j.apply(&cancelled(id as i64 + 10, id, "alice", &client, 1, RejectCode::OrderNotFound));
        }
        assert_eq!(j.check_decoded(), Ok(()));
        Arc::make_mut(j.accounts.get_mut(&acc("alice")).unwrap()).finished.swap(0, 2);
        let refused = j.check_decoded().unwrap_err();
        assert!(refused.contains("finished sequence 2 before 1"), "{refused}");
    }

    #[test]
    fn reused_client_order_id_finds_the_newest() {
        let limits = JournalLimits { orders_per_account: 2, trades_per_account: 10, trades_per_instrument: 10 };
        let mut j = Journal::new(limits);
        j.apply(&accepted(1, 1, "alice", "same", Direction::Buy, 70_000.0, 1));
        j.apply(&cancelled(2, 1, "alice", "same", 1, RejectCode::CancelledByUser));
        j.apply(&accepted(3, 2, "alice", "same", Direction::Buy, 70_000.0, 1));
        assert_eq!(j.order_by_client(&acc("alice"), &cid("same")).map(|r| r.order_id), Some(2));
        // Evicting the older one keeps the lookup pointing at the newer one.
        j.apply(&accepted(4, 3, "alice", "other", Direction::Buy, 70_000.0, 1));
        assert!(j.order(1).is_none());
        assert_eq!(j.order_by_client(&acc("alice"), &cid("same")).map(|r| r.order_id), Some(2));
    }

    #[test]
    fn unknown_ids_and_other_events_are_ignored() {
        let mut j = journal();
        j.apply(&cancelled(1, 99, "alice", "x", 1, RejectCode::CancelledByUser));
        j.apply(&Event::OrderModified {
            ts: 2,
            order_id: 99,
            client_order_id: cid("x"),
            account_id: acc("alice"),
            limit_price: Some(1),
            volume_left: 1,
            kept_priority: true,
        });
        j.apply(&Event::OrderRejected {
            ts: 3,
            account_id: acc("alice"),
            client_order_id: cid("x"),
            instrument_id: inst("cu2501"),
            reason: Reason::from(RejectCode::InsufficientFunds),
        });
        j.apply(&Event::AccountOpened { ts: 4, account_id: acc("alice") });
        assert_eq!(j.order_count(), 0);
        assert!(j.order(99).is_none());
        assert_eq!(j.account_orders(&acc("alice")).count(), 0);
        assert!(j.order_by_client(&acc("alice"), &cid("x")).is_none());

        // A trade whose orders are unknown is still listed for the accounts and the market.
        j.apply(&trade(5, 1, 70_000.0, 1, side(98, "alice", "x", 0), side(99, "bob", "y", 0)));
        assert_eq!(j.order_count(), 0);
        assert_eq!(j.account_trades(&acc("alice")).count(), 1);
        assert_eq!(j.account_trades(&acc("bob")).count(), 1);
        assert_eq!(j.market_trades(&inst("cu2501"), 5).count(), 1);
    }

    #[test]
    fn same_events_give_the_same_journal() {
        let events: Vec<Event> = (0..50u64)
            .flat_map(|i| {
                let who = ["alice", "bob", "carol"][i as usize % 3];
                let client = format!("c{i}");
                let mut out = vec![accepted(i as i64, i, who, &client, Direction::Buy, 70_000.0, 2)];
                if i % 2 == 0 {
                    out.push(cancelled(i as i64, i, who, &client, 2, RejectCode::CancelledByUser));
                }
                out
            })
            .collect();
        let limits = JournalLimits { orders_per_account: 5, trades_per_account: 5, trades_per_instrument: 5 };
        let run = || {
            let mut j = Journal::new(limits);
            events.iter().for_each(|e| j.apply(e));
            ["alice", "bob", "carol"]
                .iter()
                .map(|a| j.account_orders(&acc(a)).copied().collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        for orders in &first {
            assert!(orders.windows(2).all(|w| w[0].insert_time_ns < w[1].insert_time_ns));
        }
    }

    #[test]
    fn order_record_serialises_with_decimals_and_status() {
        let mut j = journal();
        j.apply(&accepted(1, 10, "alice", "a1", Direction::Buy, 3800.2, 2));
        let json = serde_json::to_value(j.order(10).unwrap()).unwrap();
        assert_eq!(json["limit_price"], serde_json::json!(3800.2));
        assert_eq!(json["status"], "ALIVE");
        assert_eq!(json["direction"], "BUY");
        assert_eq!(json["volume_orign"], 2);
        assert_eq!(json["account_id"], "alice");
        assert_eq!(json["exchange_id"], "SHFE");
        assert_eq!(json["last_msg"], serde_json::Value::Null);

        j.apply(&accepted(1, 11, "bob", "b1", Direction::Sell, 3800.2, 1));
        j.apply(&trade(2, 1, 3800.2, 1, side(10, "alice", "a1", 1), side(11, "bob", "b1", 0)));
        j.apply(&cancelled(3, 10, "alice", "a1", 1, RejectCode::CancelledByUser));
        let json = serde_json::to_value(j.order(10).unwrap()).unwrap();
        assert_eq!(json["status"], "FINISHED");
        assert_eq!(json["trade_amount"], serde_json::json!(3800.2));
        assert_eq!(json["last_code"], 3103);
        assert_eq!(json["last_msg"], "cancelled by the user");

        let trade_json = serde_json::to_value(j.account_trades(&acc("alice")).next().unwrap()).unwrap();
        assert_eq!(trade_json["price"], serde_json::json!(3800.2));
        assert_eq!(trade_json["commission"], serde_json::json!(3.0));
        let market_json = serde_json::to_value(j.market_trades(&inst("cu2501"), 1).next().unwrap()).unwrap();
        assert_eq!(market_json["price"], serde_json::json!(3800.2));
        assert_eq!(market_json["aggressor"], "SELL");
    }
}
