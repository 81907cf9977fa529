//! The shard's history: what its events leave behind, as keys and values of its LSM store
//! (`crate::storage::lsm`), and the time-range queries over them.
//!
//! Keys sort by series, then name, then time, so one series of one account or instrument over a
//! time range is one contiguous key range:
//!
//! | series                 | key                                          | value (JSON)        |
//! |------------------------|----------------------------------------------|---------------------|
//! | orders of an account   | `O` account `\0` insert time, order id       | the order as now    |
//! | trades of an account   | `T` account `\0` time, trade id, direction   | the account's side  |
//! | trades of an instrument| `M` instrument `\0` time, trade id           | the market trade    |
//! | ticks of an instrument | `K` instrument `\0` time, tick id            | the tick            |
//! | k-lines                | `B` instrument `\0` period ns, bar start     | the closed bar      |
//! | account changes        | `A` account `\0` time, kind                  | the event           |
//!
//! Numbers are 8 bytes big-endian; times have their sign bit flipped so negative ones sort
//! first. An order is written once, when it finishes, in its final state; a live order is the
//! journal's, and order queries take the live ones from there (`live_orders`). Likewise a bar
//! is written once it closes (when the next bar of its series opens); the open bar is the
//! engine's, and k-line queries take it from there (`live_bar`). A stored copy of either (an
//! older version of the server wrote every change) is replaced by the live one: the newest
//! version of a key wins.
//!
//! [`HistoryWriter`] is pure: it turns a step's events (with the journal and the engine as
//! that step left them) into writes. The shard's core puts them into the store once the step's
//! WAL group is durable, so the store never holds what the WAL could lose.

use super::journal::{Journal, MarketTrade, OrderRecord, UserTrade};
use crate::domain::event::Event;
use crate::domain::market_data::{Kline, Tick, KLINE_PERIODS_NS};
use crate::domain::name::{AccountId, InstrumentId};
use crate::domain::shard::ShardEngine;
use crate::domain::types::{Direction, TimestampNs};
use crate::storage::lsm::store::KeyValue;
use crate::storage::lsm::Store;
use std::ops::Bound;

pub const ORDERS: u8 = b'O';
pub const USER_TRADES: u8 = b'T';
pub const MARKET_TRADES: u8 = b'M';
pub const TICKS: u8 = b'K';
pub const KLINES: u8 = b'B';
pub const ACCOUNT_CHANGES: u8 = b'A';

/// Most items one history query returns; `limit` defaults to `DEFAULT_LIMIT`.
pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 100;

/// A time as 8 bytes that sort like the signed number.
pub fn time_bytes(ts: TimestampNs) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

/// `series`, `name` and the separator: the prefix of one series (with room for the three
/// numbers the longest keys add, so building a key allocates once).
pub fn series_prefix(series: u8, name: &str) -> Vec<u8> {
    key_into(Vec::with_capacity(2 + name.len() + 24), series, name, &[])
}

fn key(series: u8, name: &str, parts: &[[u8; 8]]) -> Vec<u8> {
    key_into(Vec::new(), series, name, parts)
}

/// `key` built in `buffer` (emptied first), which keeps its allocation.
fn key_into(mut buffer: Vec<u8>, series: u8, name: &str, parts: &[[u8; 8]]) -> Vec<u8> {
    buffer.clear();
    buffer.reserve(2 + name.len() + 8 * parts.len());
    buffer.push(series);
    buffer.extend_from_slice(name.as_bytes());
    buffer.push(0);
    for p in parts {
        buffer.extend_from_slice(p);
    }
    buffer
}

/// Key buffers kept for reuse (`HistoryWriter::recycle_keys`): more than a commit group's
/// writes, so a busy shard allocates none; about 64 bytes each.
const SPARE_KEYS: usize = 4096;

/// Turns events into store writes. Off (no storage, or recovery before the store's
/// watermark) it only keeps track of what traded.
#[derive(Debug, Default)]
pub struct HistoryWriter {
    on: bool,
    writes: Vec<(Vec<u8>, Vec<u8>)>,
    /// Instruments with a trade in the current step (scratch of `end_step`).
    traded: Vec<u32>,
    /// The open bar of each k-line series, by `slot * KLINE_PERIODS_NS.len() + period`: the
    /// bar's id in its ring. A bar is written once, in its final state, when the next bar of
    /// its series opens; the open bar is live state, which history queries take from the
    /// engine (`live_bar`). Writing the open bars at every commit group made bars 36 % of the
    /// history store's writes (docs/PERFORMANCE.md).
    open_bars: Vec<Option<i64>>,
    /// Buffers of keys the store has taken (it copies each key): a key is built in one of
    /// these instead of a new allocation (allocating them was ~2 % of a busy shard's CPU).
    spare_keys: Vec<Vec<u8>>,
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // The records are plain structs of numbers and short strings: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// First byte of a value stored in binary: the bincode of its series' record after it. A
/// JSON value (account changes, and every value written before binary ones) starts with `{`.
/// Binary values have no field names, escaping or decimal formatting to write, and a memtable
/// entry shrank from ~400 to ~230 bytes; a query turns them into the REST API's JSON
/// (`value_json`), and queries are rare next to writes (docs/PERFORMANCE.md "Orders written
/// once, when they finish; history values in binary").
const BINARY: u8 = 0xB1;

fn binary<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.push(BINARY);
    // The records are plain structs of numbers and short strings, and a Vec takes every
    // byte: encoding cannot fail.
    let _ = bincode::serialize_into(&mut out, value);
    out
}

fn binary_json<T: serde::de::DeserializeOwned + serde::Serialize>(body: &[u8]) -> Result<Vec<u8>, String> {
    let record: T = bincode::deserialize(body).map_err(|e| format!("undecodable history value: {e}"))?;
    serde_json::to_vec(&record).map_err(|e| e.to_string())
}

/// A stored value of `series` as the REST API's JSON.
pub fn value_json(series: u8, value: &[u8]) -> Result<Vec<u8>, String> {
    match value.split_first() {
        Some((&BINARY, body)) => match series {
            ORDERS => binary_json::<OrderRecord>(body),
            USER_TRADES => binary_json::<UserTrade>(body),
            MARKET_TRADES => binary_json::<MarketTrade>(body),
            TICKS => binary_json::<Tick>(body),
            KLINES => binary_json::<Kline>(body),
            _ => Err(format!("series {:?} has no binary values", series as char)),
        },
        _ => Ok(value.to_vec()),
    }
}

/// A stored value as its record (binary or JSON).
pub fn decode<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, String> {
    match value.split_first() {
        Some((&BINARY, body)) => bincode::deserialize(body).map_err(|e| format!("undecodable history value: {e}")),
        _ => serde_json::from_slice(value).map_err(|e| format!("undecodable history value: {e}")),
    }
}

impl HistoryWriter {
    pub fn set_on(&mut self, on: bool) {
        self.on = on;
        if !on {
            self.writes.clear();
            self.open_bars.clear();
        }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// The writes made since the last call, in order.
    pub fn take(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        std::mem::take(&mut self.writes)
    }

    /// Takes back the key buffers of writes the store has applied, for the next keys.
    pub fn recycle_keys(&mut self, keys: Vec<Vec<u8>>) {
        let room = SPARE_KEYS.saturating_sub(self.spare_keys.len());
        self.spare_keys.extend(keys.into_iter().take(room));
    }

    /// A key built in a spare buffer.
    fn new_key(&mut self, series: u8, name: &str, parts: &[[u8; 8]]) -> Vec<u8> {
        key_into(self.spare_keys.pop().unwrap_or_default(), series, name, parts)
    }

    pub fn pending(&self) -> usize {
        self.writes.len()
    }

    /// Records what `event` leaves behind; `journal` has already applied it. Needs no
    /// engine, so recovery can run it where it folds the journal.
    pub fn observe(&mut self, event: &Event, journal: &Journal) {
        if !self.on {
            return;
        }
        match event {
            Event::OrderAccepted { order, .. } => self.order(journal, order.order_id),
            Event::OrderCancelled { order_id, .. } | Event::OrderModified { order_id, .. } => {
                self.order(journal, *order_id)
            }
            Event::Fill { side, direction, .. } => {
                self.order(journal, side.order_id);
                self.user_trade(journal, &side.account_id, *direction);
            }
            Event::Trade { buy, sell, instrument_id, .. } => {
                self.order(journal, buy.order_id);
                self.user_trade(journal, &buy.account_id, Direction::Buy);
                self.order(journal, sell.order_id);
                self.user_trade(journal, &sell.account_id, Direction::Sell);
                self.market_trade(journal, instrument_id);
            }
            Event::MarketTrade { instrument_id, .. } => self.market_trade(journal, instrument_id),
            // Cash and status changes (one of each kind per client action, whose time is its
            // own: `Service::stamp`).
            Event::AccountOpened { ts, account_id } => self.account_change(account_id, *ts, 0, event),
            Event::FundsTransferred { ts, account_id, .. } => self.account_change(account_id, *ts, 1, event),
            Event::AccountFrozenChanged { ts, account_id, .. } => self.account_change(account_id, *ts, 2, event),
            _ => {}
        }
    }

    fn account_change(&mut self, account: &AccountId, ts: TimestampNs, kind: u64, event: &Event) {
        let k = self.new_key(ACCOUNT_CHANGES, account.as_str(), &[time_bytes(ts), kind.to_be_bytes()]);
        self.writes.push((k, json(event)));
    }

    /// After a step: the tick and the bars of each instrument its `events` traded, from the
    /// market data the step left in `engine`.
    pub fn end_step(&mut self, events: &[Event], engine: &ShardEngine) {
        if !self.on {
            return;
        }
        for event in events {
            if let Event::MarketTrade { instrument_id, .. } | Event::Trade { instrument_id, .. } = event {
                if let Some(slot) = engine.instrument_slot(instrument_id) {
                    if !self.traded.contains(&slot) {
                        self.traded.push(slot);
                    }
                }
            }
        }
        for slot in std::mem::take(&mut self.traded) {
            self.tick_and_bars(slot, engine);
        }
    }

    /// Writes the order if this event finished it. An order finishes once, so it is written
    /// once, whatever it went through while it lived (fills, modifies). Writing every change
    /// made orders the largest series of writes, and their JSON a tenth of a shard's time
    /// (docs/PERFORMANCE.md "Orders written once, when they finish").
    fn order(&mut self, journal: &Journal, order_id: u64) {
        let Some(o) = journal.order(order_id) else { return };
        if o.is_alive() {
            return;
        }
        let k = self.new_key(ORDERS, o.account_id.as_str(), &order_key_parts(o));
        self.writes.push((k, binary(o)));
    }

    fn user_trade(&mut self, journal: &Journal, account: &AccountId, direction: Direction) {
        if let Some(t) = journal.recent_account_trades(account, 1).next() {
            let dir = [u8::from(direction == Direction::Sell); 8];
            let k = self.new_key(USER_TRADES, account.as_str(), &[time_bytes(t.ts), t.trade_id.to_be_bytes(), dir]);
            self.writes.push((k, binary(t)));
        }
    }

    fn market_trade(&mut self, journal: &Journal, instrument: &InstrumentId) {
        if let Some(t) = journal.market_trades(instrument, 1).next() {
            let k = self.new_key(MARKET_TRADES, instrument.as_str(), &[time_bytes(t.ts), t.trade_id.to_be_bytes()]);
            self.writes.push((k, binary(t)));
        }
    }

    fn tick_and_bars(&mut self, slot: u32, engine: &ShardEngine) {
        let Some(market) = engine.market(slot) else { return };
        let name = engine.instruments()[slot as usize].instrument_id;
        let ticks = market.ticks();
        if let Some(tick) = ticks.last() {
            let k = self.new_key(TICKS, name.as_str(), &[time_bytes(tick.datetime_ns), ticks.last_id().to_be_bytes()]);
            self.writes.push((k, binary(tick)));
        }
        for period in 0..KLINE_PERIODS_NS.len() {
            let Some(bars) = market.klines(period).map(|s| s.bars()) else { continue };
            if bars.is_empty() {
                continue;
            }
            let id = bars.last_id();
            let open = self.open_bar_mut(slot, period);
            match *open {
                Some(open) if open == id => {}
                Some(closed) => {
                    // The bar traded before is closed: written now, in its final state.
                    *open = Some(id);
                    self.bar(slot, period, closed, engine);
                }
                None => *open = Some(id),
            }
        }
    }

    fn open_bar_mut(&mut self, slot: u32, period: usize) -> &mut Option<i64> {
        let i = slot as usize * KLINE_PERIODS_NS.len() + period;
        if self.open_bars.len() <= i {
            self.open_bars.resize(i + 1, None);
        }
        &mut self.open_bars[i]
    }

    /// Follows the open bar of every series `engine` holds, so that each is written when it
    /// closes. Call when the writer turns on over an engine that may already hold bars (a
    /// restart, a checkpoint), before its next step.
    pub fn track_open_bars(&mut self, engine: &ShardEngine) {
        self.open_bars.clear();
        if !self.on {
            return;
        }
        for slot in 0..engine.instruments().len() as u32 {
            let Some(market) = engine.market(slot) else { continue };
            for period in 0..KLINE_PERIODS_NS.len() {
                if let Some(bars) = market.klines(period).map(|s| s.bars()).filter(|b| !b.is_empty()) {
                    *self.open_bar_mut(slot, period) = Some(bars.last_id());
                }
            }
        }
    }

    /// Writes bar `id` of `slot`'s series `period` as the engine holds it (nothing if its ring
    /// no longer does: more bars opened since than the ring keeps).
    fn bar(&mut self, slot: u32, period: usize, id: i64, engine: &ShardEngine) {
        if let Some(entry) = bar_entry(engine, slot, period, id) {
            self.writes.push(entry);
        }
    }
}

/// Bar `id` of `slot`'s series `period` as the engine holds it, as a store key and value.
fn bar_entry(engine: &ShardEngine, slot: u32, period: usize, id: i64) -> Option<KeyValue> {
    let bar = engine.market(slot)?.klines(period)?.bars().get(id)?;
    let name = engine.instruments()[slot as usize].instrument_id;
    let k = key(KLINES, name.as_str(), &[KLINE_PERIODS_NS[period].to_be_bytes(), time_bytes(bar.datetime_ns)]);
    Some((k, binary(bar)))
}

/// The open (newest) bar of `instrument`'s `period_ns` series, which the store does not hold
/// yet: history queries of k-lines add it (`query`).
pub fn live_bar(engine: &ShardEngine, instrument: &InstrumentId, period_ns: i64) -> Option<KeyValue> {
    let slot = engine.instrument_slot(instrument)?;
    let period = KLINE_PERIODS_NS.iter().position(|&p| p == period_ns)?;
    let id = engine.market(slot)?.klines(period)?.bars().last_id();
    bar_entry(engine, slot, period, id)
}

/// An order's store key and value.
fn order_entry(o: &OrderRecord) -> KeyValue {
    (key(ORDERS, o.account_id.as_str(), &order_key_parts(o)), binary(o))
}

/// What follows the account in an order's key.
fn order_key_parts(o: &OrderRecord) -> [[u8; 8]; 2] {
    [time_bytes(o.insert_time_ns), o.order_id.to_be_bytes()]
}

/// The live orders of `account` inserted in `[start_ns, end_ns)`, which the store does not
/// hold yet (it holds finished orders), as store entries in key order: order history queries
/// add them (`query`). A scan of the shard's live orders (the engine bounds them), once per
/// query; queries are rare next to order flow, which this keeps from writing every change.
pub fn live_orders(
    journal: &Journal,
    account: &AccountId,
    start_ns: TimestampNs,
    end_ns: TimestampNs,
) -> Vec<KeyValue> {
    let mut live: Vec<KeyValue> = journal
        .live_orders()
        .filter(|o| o.account_id == *account && (start_ns..end_ns).contains(&o.insert_time_ns))
        .map(order_entry)
        .collect();
    live.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    live
}

/// Longest key of any series (series byte, a 31-byte name, separator, three numbers).
pub const MAX_KEY_BYTES: usize = 1 + 31 + 1 + 24;

/// Where a page ends: the last key it returned, for the next request (`cursor=<hex>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    len: u8,
    bytes: [u8; MAX_KEY_BYTES],
}

impl Cursor {
    /// From the hex text of the `next` field; None when it is not one.
    pub fn parse(text: &str) -> Option<Cursor> {
        let raw = from_hex(text)?;
        if raw.is_empty() || raw.len() > MAX_KEY_BYTES {
            return None;
        }
        let mut bytes = [0; MAX_KEY_BYTES];
        bytes[..raw.len()].copy_from_slice(&raw);
        Some(Cursor { len: raw.len() as u8, bytes })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Which series a history request reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistorySeries {
    Orders(AccountId),
    AccountChanges(AccountId),
    Trades(AccountId),
    MarketTrades(InstrumentId),
    Ticks(InstrumentId),
    Klines(InstrumentId, i64),
}

/// The time range `[start_ns, end_ns)` and page of a history request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryRange {
    pub start_ns: TimestampNs,
    pub end_ns: TimestampNs,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

/// One history query: a series, a time range `[start_ns, end_ns)` and a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    pub series: u8,
    /// The account or the bare instrument id.
    pub name: String,
    /// K-lines only: the bar period.
    pub period_ns: i64,
    pub start_ns: TimestampNs,
    pub end_ns: TimestampNs,
    pub limit: usize,
    /// Resume after this key (the `next` of the previous page, hex).
    pub after: Option<Vec<u8>>,
}

/// The lower and upper key bounds of a query.
fn bounds(q: &HistoryQuery) -> (Vec<u8>, Vec<u8>) {
    let mut prefix = series_prefix(q.series, &q.name);
    if q.series == KLINES {
        prefix.extend_from_slice(&q.period_ns.to_be_bytes());
    }
    let mut lo = prefix.clone();
    lo.extend_from_slice(&time_bytes(q.start_ns));
    let mut hi = prefix;
    hi.extend_from_slice(&time_bytes(q.end_ns));
    (lo, hi)
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() > 256 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A page of a query: the values as JSON, in time order, and the cursor of the next page.
pub struct Page {
    pub items: Vec<Vec<u8>>,
    pub next: Option<String>,
}

/// Why a query cannot run.
#[derive(Debug, PartialEq, Eq)]
pub enum QueryError {
    /// The cursor does not belong to this query.
    BadCursor,
    /// The store could not be read (a corrupt table: named in the message).
    Store(String),
}

/// Runs `q` over `store`, with each of `live` (in key order: the open bar of a k-line series,
/// the live orders of an account; newer than any version the store may hold) in its place by
/// key.
pub fn query(store: &Store, q: &HistoryQuery, live: Vec<KeyValue>) -> Result<Page, QueryError> {
    let (lo, hi) = bounds(q);
    let lo_bound = match &q.after {
        Some(after) => {
            if after.as_slice() < lo.as_slice() || after.as_slice() >= hi.as_slice() {
                return Err(QueryError::BadCursor);
            }
            Bound::Excluded(after.as_slice())
        }
        None => Bound::Included(lo.as_slice()),
    };
    let (mut rows, mut more) = store
        .range_limited(lo_bound, Bound::Excluded(hi.as_slice()), q.limit)
        .map_err(|e| QueryError::Store(e.to_string()))?;
    for (key, value) in live {
        let after_start = match lo_bound {
            Bound::Excluded(after) => key.as_slice() > after,
            _ => key.as_slice() >= lo.as_slice(),
        };
        if after_start && key.as_slice() < hi.as_slice() {
            match rows.binary_search_by(|(k, _)| k.as_slice().cmp(&key)) {
                Ok(i) => rows[i].1 = value,
                // Past this page's last row while the store has more: a later page has it.
                Err(i) if i == rows.len() && more => {}
                Err(i) => {
                    rows.insert(i, (key, value));
                    if rows.len() > q.limit {
                        rows.truncate(q.limit);
                        more = true;
                    }
                }
            }
        }
    }
    let next = if more { rows.last().map(|(k, _)| to_hex(k)) } else { None };
    let items =
        rows.iter().map(|(_, v)| value_json(q.series, v)).collect::<Result<_, _>>().map_err(QueryError::Store)?;
    Ok(Page { items, next })
}

/// The newest `n` values of a series strictly before `end_ns` (k-lines: of `period_ns`), oldest
/// first: looks back over windows that grow fourfold from `n` x `step_ns` (series have gaps),
/// at most `MAX_LOOKBACK_ROUNDS` times, then from the beginning.
pub fn newest_before(
    store: &Store,
    series: u8,
    name: &str,
    period_ns: i64,
    end_ns: TimestampNs,
    n: usize,
    step_ns: i64,
) -> Result<Vec<KeyValue>, QueryError> {
    const MAX_LOOKBACK_ROUNDS: u32 = 12;
    let mut window = (n as i64).saturating_mul(step_ns.max(1));
    for round in 0..=MAX_LOOKBACK_ROUNDS {
        let start_ns = if round == MAX_LOOKBACK_ROUNDS { i64::MIN } else { end_ns.saturating_sub(window) };
        let q = HistoryQuery {
            series,
            name: name.to_string(),
            period_ns,
            start_ns,
            end_ns,
            limit: usize::MAX,
            after: None,
        };
        let (lo, hi) = bounds(&q);
        let rows = store
            .range(Bound::Included(lo.as_slice()), Bound::Excluded(hi.as_slice()))
            .map_err(|e| QueryError::Store(e.to_string()))?;
        if rows.len() >= n || start_ns == i64::MIN {
            let skip = rows.len().saturating_sub(n);
            return Ok(rows.into_iter().skip(skip).collect());
        }
        window = window.saturating_mul(4);
    }
    Ok(Vec::new())
}

/// The tick id in a tick key (its last 8 bytes).
pub fn tick_id_of(key: &[u8]) -> Option<i64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(i64::from_be_bytes(tail))
}

/// The reply body: `{"success":true,"data":{"items":[..],"next":".."|null},"error":null}`.
pub fn page_body(page: &Page) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + page.items.iter().map(|i| i.len() + 1).sum::<usize>());
    out.extend_from_slice(br#"{"success":true,"data":{"items":["#);
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(br#"],"next":"#);
    match &page.next {
        Some(next) => {
            out.push(b'"');
            out.extend_from_slice(next.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#"},"error":null}"#);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_key_buffers_build_the_same_keys() {
        let mut w = HistoryWriter::default();
        let long = key(ORDERS, "a-much-longer-account-name", &[time_bytes(9), 7u64.to_be_bytes(), [1; 8]]);
        w.recycle_keys(vec![long.clone(); SPARE_KEYS + 10]);
        assert_eq!(w.spare_keys.len(), SPARE_KEYS, "the pool is bounded");
        let k = w.new_key(TICKS, "cu", &[time_bytes(-5)]);
        assert_eq!(k, key(TICKS, "cu", &[time_bytes(-5)]), "no byte of the longer key is left");
        assert!(k.capacity() >= long.len(), "built in the spare's allocation");
        assert_eq!(w.spare_keys.len(), SPARE_KEYS - 1);
    }

    #[test]
    fn times_sort_like_numbers_and_hex_round_trips() {
        let mut ts = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let mut keys: Vec<[u8; 8]> = ts.iter().map(|&t| time_bytes(t)).collect();
        keys.sort();
        ts.sort();
        assert_eq!(keys, ts.iter().map(|&t| time_bytes(t)).collect::<Vec<_>>());
        let k = key(ORDERS, "acc", &[time_bytes(3), 9u64.to_be_bytes()]);
        assert_eq!(from_hex(&to_hex(&k)), Some(k));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn one_name_never_reads_into_another() {
        // "ab" then "\0" sorts before "ab" followed by any other byte: "abc"'s keys are after
        // every key of "ab".
        let ab = key(ORDERS, "ab", &[time_bytes(i64::MAX)]);
        let abc = key(ORDERS, "abc", &[time_bytes(i64::MIN)]);
        assert!(ab < abc);
        let q = HistoryQuery {
            series: ORDERS,
            name: "ab".into(),
            period_ns: 0,
            start_ns: i64::MIN,
            end_ns: i64::MAX,
            limit: 10,
            after: None,
        };
        let (lo, hi) = bounds(&q);
        assert!(lo <= ab && ab < abc && hi < abc);
    }

    #[test]
    fn the_live_bar_takes_its_place_in_every_page() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path(), crate::storage::lsm::StoreOptions::default()).unwrap();
        let bar = |t: i64| key(KLINES, "SR501", &[3i64.to_be_bytes(), time_bytes(t)]);
        // Closed bars at 1..=5 in the store, and an old copy of the open bar at 6.
        for t in 1..=6 {
            store.put(&bar(t), format!("{t}").as_bytes());
        }
        let q = |after: Option<Vec<u8>>, limit: usize, end_ns: i64| HistoryQuery {
            series: KLINES,
            name: "SR501".into(),
            period_ns: 3,
            start_ns: 0,
            end_ns,
            limit,
            after,
        };
        let pages = |live: Option<(i64, &str)>, limit: usize, end_ns: i64| -> Vec<Vec<String>> {
            let mut out = Vec::new();
            let mut after = None;
            loop {
                let live = live.map(|(t, v)| (bar(t), v.as_bytes().to_vec())).into_iter().collect();
                let page = query(&store, &q(after, limit, end_ns), live).unwrap();
                out.push(page.items.iter().map(|i| String::from_utf8(i.clone()).unwrap()).collect());
                match page.next {
                    Some(next) => after = Some(from_hex(&next).unwrap()),
                    None => return out,
                }
            }
        };
        // The live version replaces the store's old copy, in pages of every size.
        assert_eq!(pages(Some((6, "6live")), 10, 100), vec![vec!["1", "2", "3", "4", "5", "6live"]]);
        assert_eq!(pages(Some((6, "6live")), 4, 100), vec![vec!["1", "2", "3", "4"], vec!["5", "6live"]]);
        assert_eq!(pages(Some((6, "6live")), 3, 100), vec![vec!["1", "2", "3"], vec!["4", "5", "6live"]]);
        // A live bar the store has no copy of comes after the stored ones, on the page with room.
        assert_eq!(pages(Some((7, "7")), 6, 100), vec![vec!["1", "2", "3", "4", "5", "6"], vec!["7"]]);
        assert_eq!(pages(Some((7, "7")), 2, 100).concat(), vec!["1", "2", "3", "4", "5", "6", "7"]);
        // Outside the range it is left out.
        assert_eq!(pages(Some((7, "7")), 10, 7).concat(), vec!["1", "2", "3", "4", "5", "6"]);
        assert_eq!(pages(None, 10, 100).concat(), vec!["1", "2", "3", "4", "5", "6"]);
    }

    #[test]
    fn live_orders_take_their_places_in_every_page() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path(), crate::storage::lsm::StoreOptions::default()).unwrap();
        let order = |t: i64| key(ORDERS, "A", &[time_bytes(t), (t as u64).to_be_bytes()]);
        // Finished orders at 2, 4, 5, 8 in the store, and an old (live) copy of 6.
        for t in [2, 4, 5, 6, 8] {
            store.put(&order(t), format!("{t}").as_bytes());
        }
        // Live: before, between and after the stored ones, and 6 again.
        let live: Vec<KeyValue> =
            [1, 3, 6, 7, 9, 10].iter().map(|&t| (order(t), format!("{t}live").into_bytes())).collect();
        let want = ["1live", "2", "3live", "4", "5", "6live", "7live", "8", "9live", "10live"];
        let in_range = |lo: i64, hi: i64| -> Vec<&str> {
            want.iter().zip(1..).filter(|(_, t)| (lo..hi).contains(t)).map(|(w, _)| *w).collect()
        };
        for (start_ns, end_ns) in [(0, 100), (3, 9), (6, 7), (11, 20)] {
            for limit in 1..=11 {
                let mut got = Vec::new();
                let mut after = None;
                for _ in 0..20 {
                    let q =
                        HistoryQuery { series: ORDERS, name: "A".into(), period_ns: 0, start_ns, end_ns, limit, after };
                    let page = query(&store, &q, live.clone()).unwrap();
                    assert!(page.items.len() <= limit);
                    got.extend(page.items.iter().map(|i| String::from_utf8(i.clone()).unwrap()));
                    match page.next {
                        Some(next) => after = Some(from_hex(&next).unwrap()),
                        None => break,
                    }
                }
                assert_eq!(got, in_range(start_ns, end_ns), "range {start_ns}..{end_ns}, pages of {limit}");
            }
        }
    }

    #[test]
    fn binary_values_read_as_the_json_they_replace_and_json_values_as_written() {
        let bar = Kline {
            datetime_ns: -3_000_000_000,
            open: 50_000_000,
            high: 50_100_000,
            low: 49_900_000,
            close: 50_050_000,
            volume: 7,
            open_oi: 1,
            close_oi: 2,
        };
        let stored = binary(&bar);
        assert_eq!(stored[0], BINARY);
        assert!(stored.len() < json(&bar).len(), "{} bytes binary, {} JSON", stored.len(), json(&bar).len());
        assert_eq!(value_json(KLINES, &stored).unwrap(), json(&bar));
        assert_eq!(decode::<Kline>(&stored).unwrap(), bar);
        // A value an older server wrote as JSON reads as written.
        assert_eq!(value_json(KLINES, &json(&bar)).unwrap(), json(&bar));
        assert_eq!(decode::<Kline>(&json(&bar)).unwrap(), bar);
        // A cut binary value, or one in a series that has none, is an error, not a guess.
        assert!(value_json(KLINES, &stored[..stored.len() - 1]).is_err());
        assert!(value_json(ACCOUNT_CHANGES, &stored).is_err());
        assert!(decode::<Kline>(&stored[..5]).is_err());
        // A query meets it as a store error.
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path(), crate::storage::lsm::StoreOptions::default()).unwrap();
        let k = key(KLINES, "SR501", &[3i64.to_be_bytes(), time_bytes(1)]);
        store.put(&k, &stored[..4]);
        let q = HistoryQuery {
            series: KLINES,
            name: "SR501".into(),
            period_ns: 3,
            start_ns: 0,
            end_ns: 10,
            limit: 10,
            after: None,
        };
        assert!(matches!(query(&store, &q, Vec::new()), Err(QueryError::Store(_))));
    }
}
