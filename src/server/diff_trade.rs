//! The DIFF trade tree of one account (`trade/<user>`: `accounts/CNY`, `positions`, `orders`,
//! `trades`), built on the account's shard: the whole tree when a session logs in, and one
//! patch per commit group with what the group changed, for the shards whose sessions follow
//! the account. Field names are the ones tqsdk reads (reference/diff-protocol.md).
//!
//! Orders are keyed by the client's order id (tqsdk matches fills to orders by it), with the
//! exchange's number as `exchange_order_id`; trades by `<trade id>|<direction>` (both sides of
//! a self-trade stay apart).

use super::journal::{Journal, OrderRecord, OrderStatus, UserTrade};
use super::json_text::{push_object, push_str, push_str_parts, Field};
use crate::diff::feed::SharedPatch;
use crate::domain::event::{Event, Reason};
use crate::domain::fast_hash::FastMap;
use crate::domain::ledger::account::{AccountSnapshot, PositionSnapshot};
use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use crate::domain::types::{
    money_to_f64, price_to_f64, Direction, Offset, PriceType, TimeCondition, TimestampNs, Volume, VolumeCondition,
    MONEY_SCALE, PRICE_SCALE,
};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// Least time between two refreshes of followed accounts for marks alone (a price moved, the
/// account did not change): every trade moves a mark, and refreshing every logged-in account
/// holding the instrument on each commit group costs the shard more than the orders do. An
/// account that changes is sent at once, at the marks of then; the rest catch up within this.
pub const MARK_REFRESH_NS: i64 = 100_000_000;

/// Most finished orders and most trades a login snapshot carries (the newest; live orders
/// always come): the tree stays far below a session's pending bound however long the day.
pub const SNAPSHOT_MAX_FINISHED_ORDERS: usize = 2_000;
pub const SNAPSHOT_MAX_TRADES: usize = 2_000;

/// A kept order as DIFF `trade/<user>/orders/<order_id>`.
#[derive(Serialize)]
struct DiffOrder<'a> {
    seqno: u64,
    user_id: &'a str,
    order_id: &'a str,
    exchange_id: &'a str,
    instrument_id: &'a str,
    direction: Direction,
    offset: Offset,
    volume_orign: Volume,
    volume_left: Volume,
    price_type: PriceType,
    time_condition: TimeCondition,
    volume_condition: VolumeCondition,
    insert_date_time: TimestampNs,
    #[serde(serialize_with = "as_text")]
    exchange_order_id: u64,
    status: OrderStatus,
    last_msg: Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_price: Option<f64>,
}

impl<'a> DiffOrder<'a> {
    fn of(order: &'a OrderRecord) -> Self {
        DiffOrder {
            seqno: order.order_id,
            user_id: order.account_id.as_str(),
            order_id: order.client_order_id.as_str(),
            exchange_id: order.exchange_id.as_str(),
            instrument_id: order.instrument_id.as_str(),
            direction: order.direction,
            offset: order.offset,
            volume_orign: order.volume_orign,
            volume_left: diff_volume_left(order),
            price_type: order.price_type,
            time_condition: order.time_condition,
            volume_condition: order.volume_condition,
            insert_date_time: order.insert_time_ns,
            exchange_order_id: order.order_id,
            status: order.status,
            last_msg: last_msg(order),
            limit_price: order.limit_price.map(price_to_f64),
        }
    }

    /// The bytes serde writes for this (tests: `the_patch_writers_are_serdes_byte_for_byte`).
    fn push_text(order: &OrderRecord, out: &mut Vec<u8>) {
        let last_msg = last_msg(order);
        let fields = [
            (r#""seqno":"#, Field::Id(order.order_id)),
            (r#""user_id":"#, Field::Str(order.account_id.as_str())),
            (r#""order_id":"#, Field::Str(order.client_order_id.as_str())),
            (r#""exchange_id":"#, Field::Str(order.exchange_id.as_str())),
            (r#""instrument_id":"#, Field::Str(order.instrument_id.as_str())),
            (r#""direction":"#, Field::Str(order.direction.as_str())),
            (r#""offset":"#, Field::Str(order.offset.as_str())),
            (r#""volume_orign":"#, Field::Int(order.volume_orign)),
            (r#""volume_left":"#, Field::Int(diff_volume_left(order))),
            (r#""price_type":"#, Field::Str(order.price_type.as_str())),
            (r#""time_condition":"#, Field::Str(order.time_condition.as_str())),
            (r#""volume_condition":"#, Field::Str(order.volume_condition.as_str())),
            (r#""insert_date_time":"#, Field::Int(order.insert_time_ns)),
            (r#""exchange_order_id":"#, Field::IdText(order.order_id)),
            (r#""status":"#, Field::Str(order.status.as_str())),
            (r#""last_msg":"#, Field::Str(&last_msg)),
            (r#""limit_price":"#, Field::Fixed4(order.limit_price.unwrap_or(0))),
        ];
        let present = if order.limit_price.is_some() { fields.len() } else { fields.len() - 1 };
        push_object(out, &fields[..present]);
    }
}

// Prices and money are both written as `fixed4` decimals (`Field::Fixed4`), which is what
// `price_to_f64` and `money_to_f64` print as long as the two scales agree.
const _: () = assert!(PRICE_SCALE == MONEY_SCALE);

/// A number as a JSON string (DIFF's ids), written without an allocation.
fn as_text<S: serde::Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn to_value<T: Serialize>(record: &T) -> Value {
    // Plain structs of numbers and strings: turning them into a tree cannot fail.
    serde_json::to_value(record).unwrap_or_else(|_| json!({}))
}

/// A kept order as DIFF `trade/<user>/orders/<order_id>`.
pub fn diff_order(order: &OrderRecord) -> Value {
    to_value(&DiffOrder::of(order))
}

/// DIFF keeps the unfilled lots in `volume_left` after an order ends (tqsdk counts the filled
/// ones as `volume_orign - volume_left`); the journal counts what may still trade (0 once ended).
fn diff_volume_left(order: &OrderRecord) -> i64 {
    match order.status {
        OrderStatus::Alive => order.volume_left,
        OrderStatus::Finished => order.volume_orign.saturating_sub(order.filled_volume).max(0),
    }
}

fn last_msg(order: &OrderRecord) -> Cow<'static, str> {
    match (order.status, order.last_msg, order.last_code) {
        (OrderStatus::Alive, _, _) if order.filled_volume > 0 => "partly filled".into(),
        (OrderStatus::Alive, _, _) => "accepted".into(),
        (OrderStatus::Finished, Some(msg), Some(code)) => format!("{msg} (code {code})").into(),
        (OrderStatus::Finished, Some(msg), None) => msg.into(),
        (OrderStatus::Finished, None, _) => "filled".into(),
    }
}

/// The key of a trade in `trade/<user>/trades`.
pub fn trade_key(trade: &UserTrade) -> String {
    TradeKey(trade).to_string()
}

/// `<trade id>|<direction>`, written where it goes.
struct TradeKey<'a>(&'a UserTrade);

impl std::fmt::Display for TradeKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}|{}", self.0.trade_id, self.0.direction.as_str())
    }
}

impl Serialize for TradeKey<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One side of a trade as DIFF `trade/<user>/trades/<key>`.
#[derive(Serialize)]
struct DiffTrade<'a> {
    seqno: u64,
    user_id: &'a str,
    trade_id: TradeKey<'a>,
    order_id: &'a str,
    #[serde(serialize_with = "as_text")]
    exchange_order_id: u64,
    exchange_id: &'a str,
    instrument_id: &'a str,
    #[serde(serialize_with = "as_text")]
    exchange_trade_id: u64,
    direction: Direction,
    offset: Offset,
    volume: Volume,
    price: f64,
    trade_date_time: TimestampNs,
    commission: f64,
    close_profit: f64,
}

impl<'a> DiffTrade<'a> {
    fn of(trade: &'a UserTrade) -> Self {
        DiffTrade {
            seqno: trade.trade_id,
            user_id: trade.account_id.as_str(),
            trade_id: TradeKey(trade),
            order_id: trade.client_order_id.as_str(),
            exchange_order_id: trade.order_id,
            exchange_id: trade.exchange_id.as_str(),
            instrument_id: trade.instrument_id.as_str(),
            exchange_trade_id: trade.trade_id,
            direction: trade.direction,
            offset: trade.offset,
            volume: trade.volume,
            price: price_to_f64(trade.price),
            trade_date_time: trade.ts,
            commission: money_to_f64(trade.commission),
            close_profit: money_to_f64(trade.close_profit),
        }
    }

    /// The bytes serde writes for this.
    fn push_text(trade: &UserTrade, out: &mut Vec<u8>) {
        push_object(
            out,
            &[
                (r#""seqno":"#, Field::Id(trade.trade_id)),
                (r#""user_id":"#, Field::Str(trade.account_id.as_str())),
                (r#""trade_id":"#, Field::IdPair(trade.trade_id, trade.direction.as_str())),
                (r#""order_id":"#, Field::Str(trade.client_order_id.as_str())),
                (r#""exchange_order_id":"#, Field::IdText(trade.order_id)),
                (r#""exchange_id":"#, Field::Str(trade.exchange_id.as_str())),
                (r#""instrument_id":"#, Field::Str(trade.instrument_id.as_str())),
                (r#""exchange_trade_id":"#, Field::IdText(trade.trade_id)),
                (r#""direction":"#, Field::Str(trade.direction.as_str())),
                (r#""offset":"#, Field::Str(trade.offset.as_str())),
                (r#""volume":"#, Field::Int(trade.volume)),
                (r#""price":"#, Field::Fixed4(trade.price)),
                (r#""trade_date_time":"#, Field::Int(trade.ts)),
                (r#""commission":"#, Field::Fixed4(trade.commission)),
                (r#""close_profit":"#, Field::Fixed4(trade.close_profit)),
            ],
        );
    }
}

/// One side of a trade as DIFF `trade/<user>/trades/<key>`.
pub fn diff_trade(trade: &UserTrade) -> Value {
    to_value(&DiffTrade::of(trade))
}

/// The account as DIFF `trade/<user>/accounts/CNY`.
#[derive(Serialize)]
struct DiffAccount<'a> {
    #[serde(flatten)]
    account: &'a AccountSnapshot,
    user_id: &'a str,
    currency: &'static str,
}

impl<'a> DiffAccount<'a> {
    fn of(account: &'a AccountSnapshot) -> Self {
        DiffAccount { account, user_id: account.account_id.as_str(), currency: "CNY" }
    }

    /// The bytes serde writes for this (the account's own fields, then the two of DIFF).
    fn push_text(a: &AccountSnapshot, out: &mut Vec<u8>) {
        push_object(
            out,
            &[
                (r#""account_id":"#, Field::Str(a.account_id.as_str())),
                (r#""status":"#, Field::Str(a.status.as_str())),
                (r#""pre_balance":"#, Field::Fixed4(a.pre_balance)),
                (r#""deposit":"#, Field::Fixed4(a.deposit)),
                (r#""withdraw":"#, Field::Fixed4(a.withdraw)),
                (r#""static_balance":"#, Field::Fixed4(a.static_balance)),
                (r#""close_profit":"#, Field::Fixed4(a.close_profit)),
                (r#""commission":"#, Field::Fixed4(a.commission)),
                (r#""premium":"#, Field::Fixed4(a.premium)),
                (r#""position_profit":"#, Field::Fixed4(a.position_profit)),
                (r#""float_profit":"#, Field::Fixed4(a.float_profit)),
                (r#""balance":"#, Field::Fixed4(a.balance)),
                (r#""margin":"#, Field::Fixed4(a.margin)),
                (r#""frozen_margin":"#, Field::Fixed4(a.frozen_margin)),
                (r#""frozen_commission":"#, Field::Fixed4(a.frozen_commission)),
                (r#""frozen_premium":"#, Field::Fixed4(a.frozen_premium)),
                (r#""available":"#, Field::Fixed4(a.available)),
                (r#""risk_ratio":"#, Field::F64(a.risk_ratio)),
                (r#""user_id":"#, Field::Str(a.account_id.as_str())),
                (r#""currency":"#, Field::Str("CNY")),
            ],
        );
    }
}

/// The account as DIFF `trade/<user>/accounts/CNY`.
pub fn diff_account(account: &AccountSnapshot) -> Value {
    to_value(&DiffAccount::of(account))
}

/// A position as DIFF `trade/<user>/positions/<EXCH.sym>`.
#[derive(Serialize)]
struct DiffPosition<'a> {
    #[serde(flatten)]
    position: &'a PositionSnapshot,
    user_id: &'a str,
}

/// `<exchange>.<instrument>`, the key of a position, written where it goes.
struct PositionKey<'a>(&'a PositionSnapshot);

impl std::fmt::Display for PositionKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0.exchange_id.as_str(), self.0.instrument_id.as_str())
    }
}

impl<'a> DiffPosition<'a> {
    fn of(position: &'a PositionSnapshot) -> Self {
        DiffPosition { position, user_id: position.account_id.as_str() }
    }

    /// The bytes serde writes for this (the position's own fields, then `user_id`).
    fn push_text(p: &PositionSnapshot, out: &mut Vec<u8>) {
        push_object(
            out,
            &[
                (r#""account_id":"#, Field::Str(p.account_id.as_str())),
                (r#""exchange_id":"#, Field::Str(p.exchange_id.as_str())),
                (r#""instrument_id":"#, Field::Str(p.instrument_id.as_str())),
                (r#""pos_long_his":"#, Field::Int(p.pos_long_his)),
                (r#""pos_long_today":"#, Field::Int(p.pos_long_today)),
                (r#""pos_short_his":"#, Field::Int(p.pos_short_his)),
                (r#""pos_short_today":"#, Field::Int(p.pos_short_today)),
                (r#""volume_long_today":"#, Field::Int(p.volume_long_today)),
                (r#""volume_long_his":"#, Field::Int(p.volume_long_his)),
                (r#""volume_long":"#, Field::Int(p.volume_long)),
                (r#""volume_long_frozen_today":"#, Field::Int(p.volume_long_frozen_today)),
                (r#""volume_long_frozen_his":"#, Field::Int(p.volume_long_frozen_his)),
                (r#""volume_long_frozen":"#, Field::Int(p.volume_long_frozen)),
                (r#""volume_short_today":"#, Field::Int(p.volume_short_today)),
                (r#""volume_short_his":"#, Field::Int(p.volume_short_his)),
                (r#""volume_short":"#, Field::Int(p.volume_short)),
                (r#""volume_short_frozen_today":"#, Field::Int(p.volume_short_frozen_today)),
                (r#""volume_short_frozen_his":"#, Field::Int(p.volume_short_frozen_his)),
                (r#""volume_short_frozen":"#, Field::Int(p.volume_short_frozen)),
                (r#""open_cost_long":"#, Field::Fixed4(p.open_cost_long)),
                (r#""open_cost_short":"#, Field::Fixed4(p.open_cost_short)),
                (r#""position_cost_long":"#, Field::Fixed4(p.position_cost_long)),
                (r#""position_cost_short":"#, Field::Fixed4(p.position_cost_short)),
                (r#""open_price_long":"#, Field::F64(p.open_price_long)),
                (r#""open_price_short":"#, Field::F64(p.open_price_short)),
                (r#""position_price_long":"#, Field::F64(p.position_price_long)),
                (r#""position_price_short":"#, Field::F64(p.position_price_short)),
                (r#""float_profit_long":"#, Field::Fixed4(p.float_profit_long)),
                (r#""float_profit_short":"#, Field::Fixed4(p.float_profit_short)),
                (r#""float_profit":"#, Field::Fixed4(p.float_profit)),
                (r#""position_profit_long":"#, Field::Fixed4(p.position_profit_long)),
                (r#""position_profit_short":"#, Field::Fixed4(p.position_profit_short)),
                (r#""position_profit":"#, Field::Fixed4(p.position_profit)),
                (r#""margin_long":"#, Field::Fixed4(p.margin_long)),
                (r#""margin_short":"#, Field::Fixed4(p.margin_short)),
                (r#""margin":"#, Field::Fixed4(p.margin)),
                (r#""last_price":"#, Field::Fixed4(p.last_price)),
                (r#""user_id":"#, Field::Str(p.account_id.as_str())),
            ],
        );
    }
}

/// A position as DIFF `trade/<user>/positions/<EXCH.sym>` (with its key).
pub fn diff_position(position: &PositionSnapshot) -> (String, Value) {
    (PositionKey(position).to_string(), to_value(&DiffPosition::of(position)))
}

/// An order insert that was refused, as DIFF shows it: FINISHED with an empty
/// `exchange_order_id` (tqsdk's sign of an error) and the reason in `last_msg`.
#[derive(Serialize)]
struct DiffRejectedOrder<'a> {
    user_id: &'a str,
    order_id: &'a str,
    instrument_id: &'a str,
    exchange_order_id: &'static str,
    status: &'static str,
    last_msg: String,
    insert_date_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange_id: Option<&'a str>,
}

impl<'a> DiffRejectedOrder<'a> {
    fn of(
        account_id: &'a str,
        client_order_id: &'a str,
        instrument_id: &'a str,
        code: u32,
        message: &str,
        ts: i64,
    ) -> Self {
        // The event may name the instrument with its exchange; DIFF orders name it bare.
        let (exchange_id, bare) = instrument_id.split_once('.').unwrap_or(("", instrument_id));
        DiffRejectedOrder {
            user_id: account_id,
            order_id: client_order_id,
            instrument_id: bare,
            exchange_order_id: "",
            status: "FINISHED",
            last_msg: format!("{message} (code {code})"),
            insert_date_time: ts,
            exchange_id: (!exchange_id.is_empty()).then_some(exchange_id),
        }
    }

    /// The bytes serde writes for this.
    fn push_text(&self, out: &mut Vec<u8>) {
        let fields = [
            (r#""user_id":"#, Field::Str(self.user_id)),
            (r#""order_id":"#, Field::Str(self.order_id)),
            (r#""instrument_id":"#, Field::Str(self.instrument_id)),
            (r#""exchange_order_id":"#, Field::Str(self.exchange_order_id)),
            (r#""status":"#, Field::Str(self.status)),
            (r#""last_msg":"#, Field::Str(&self.last_msg)),
            (r#""insert_date_time":"#, Field::Int(self.insert_date_time)),
            (r#""exchange_id":"#, Field::Str(self.exchange_id.unwrap_or(""))),
        ];
        let present = if self.exchange_id.is_some() { fields.len() } else { fields.len() - 1 };
        push_object(out, &fields[..present]);
    }
}

/// An order insert that was refused, as DIFF shows it: FINISHED with an empty
/// `exchange_order_id` (tqsdk's sign of an error) and the reason in `last_msg`.
pub fn diff_rejected_order(
    account_id: &str,
    client_order_id: &str,
    instrument_id: &str,
    code: u32,
    message: &str,
    ts: i64,
) -> Value {
    to_value(&DiffRejectedOrder::of(account_id, client_order_id, instrument_id, code, message, ts))
}

/// What the steps since the last patch changed for one followed account.
#[derive(Debug, Default)]
pub struct AccountChanges {
    pub orders: Vec<u64>,
    /// Fills since the last patch: the account's newest trades in the journal.
    pub new_trades: usize,
    /// Instruments (bare ids) whose position changed.
    pub positions: Vec<InstrumentId>,
    /// Whether the account's stored state changed.
    pub account: bool,
    pub rejected: Vec<(ClientOrderId, InstrumentId, Reason, i64)>,
    /// Settlement statements (settled day, text): a SETTLEMENT notify each.
    pub settlements: Vec<(u32, String)>,
}

impl AccountChanges {
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.new_trades == 0
            && self.positions.is_empty()
            && !self.account
            && self.rejected.is_empty()
            && self.settlements.is_empty()
    }
}

/// The accounts that sessions follow, and what changed for them since the committer last took
/// the patches.
#[derive(Debug, Default)]
pub struct TradeWatch {
    /// Account -> shards with sessions following it (a count per shard).
    followers: FastMap<AccountId, Vec<(usize, u32)>>,
    changes: FastMap<AccountId, AccountChanges>,
    /// Instruments (config slots) whose mark price moved since the last mark refresh: followed
    /// accounts holding them see their positions' and account's profit change without an event
    /// of their own.
    marked: Vec<u32>,
    /// When followed accounts were last refreshed for marks alone (ns).
    last_mark_refresh_ns: i64,
}

impl TradeWatch {
    pub fn follow(&mut self, account: AccountId, shard: usize) {
        let list = self.followers.entry(account).or_default();
        match list.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, n)) => *n += 1,
            None => list.push((shard, 1)),
        }
    }

    pub fn unfollow(&mut self, account: &AccountId, shard: usize) {
        let Some(list) = self.followers.get_mut(account) else { return };
        if let Some(at) = list.iter().position(|(s, _)| *s == shard) {
            list[at].1 -= 1;
            if list[at].1 == 0 {
                list.swap_remove(at);
            }
        }
        if list.is_empty() {
            self.followers.remove(account);
            self.changes.remove(account);
        }
    }

    /// Whether marks moved since the last refresh (see [`Self::take`]).
    pub fn marks_waiting(&self) -> bool {
        !self.marked.is_empty()
    }

    /// The mark price of instrument `slot` moved (a trade here, or a `Mark` from its shard).
    pub fn marked(&mut self, slot: u32) {
        if !self.followers.is_empty() && !self.marked.contains(&slot) {
            self.marked.push(slot);
        }
    }

    /// Notes what `event` changed, if its account is followed (cheap when nobody follows).
    pub fn observe(&mut self, event: &Event) {
        if self.followers.is_empty() {
            return;
        }
        let account = match event {
            Event::OrderAccepted { order, .. } => order.account_id,
            Event::Fill { side, .. } => side.account_id,
            Event::OrderCancelled { account_id, .. }
            | Event::OrderModified { account_id, .. }
            | Event::OrderRejected { account_id, .. }
            | Event::FundsTransferred { account_id, .. } => *account_id,
            Event::AccountUpdated { account, .. } => account.account_id,
            Event::PositionUpdated { position, .. } => position.account_id,
            Event::Settlement { statement, .. } => statement.account.account_id,
            _ => return,
        };
        if !self.followers.contains_key(&account) {
            return;
        }
        let changes = self.changes.entry(account).or_default();
        let mut order = |id: u64| {
            if !changes.orders.contains(&id) {
                changes.orders.push(id);
            }
        };
        match event {
            Event::OrderAccepted { order: info, .. } => order(info.order_id),
            Event::Fill { side, .. } => {
                order(side.order_id);
                changes.new_trades += 1;
            }
            Event::OrderCancelled { order_id, .. } | Event::OrderModified { order_id, .. } => order(*order_id),
            // A duplicate id names a live order, which must not show as refused.
            Event::OrderRejected { reason, .. }
                if reason.reason == crate::domain::risk::RejectCode::DuplicateOrderId => {}
            Event::OrderRejected { ts, client_order_id, instrument_id, reason, .. } => {
                changes.rejected.push((*client_order_id, *instrument_id, *reason, *ts))
            }
            Event::AccountUpdated { .. } | Event::FundsTransferred { .. } => changes.account = true,
            Event::Settlement { statement, .. } => {
                changes.account = true;
                changes.settlements.push((statement.trading_day, statement_text(statement)));
            }
            Event::PositionUpdated { position, .. } if !changes.positions.contains(&position.instrument_id) => {
                changes.positions.push(position.instrument_id);
            }
            _ => {}
        }
    }

    /// What changed since the last call for each followed account, with the shards following
    /// it, and, at most once per [`MARK_REFRESH_NS`] (at `now_ns`), the instruments whose mark
    /// moved meanwhile (the caller adds the positions the account holds in them; then every
    /// followed account is listed, changed or not).
    #[allow(clippy::type_complexity)]
    pub fn take(&mut self, now_ns: i64) -> (Vec<(AccountId, Vec<usize>, AccountChanges)>, Vec<u32>) {
        let refresh = !self.marked.is_empty() && now_ns - self.last_mark_refresh_ns >= MARK_REFRESH_NS;
        let marked = if refresh {
            self.last_mark_refresh_ns = now_ns;
            std::mem::take(&mut self.marked)
        } else {
            Vec::new()
        };
        if self.changes.is_empty() && marked.is_empty() {
            return (Vec::new(), marked);
        }
        let mut out = Vec::new();
        if marked.is_empty() {
            for (account, changes) in self.changes.drain() {
                if let Some(followers) = self.followers.get(&account) {
                    out.push((account, followers.iter().map(|(s, _)| *s).collect(), changes));
                }
            }
        } else {
            for (account, followers) in &self.followers {
                let changes = self.changes.remove(account).unwrap_or_default();
                out.push((*account, followers.iter().map(|(s, _)| *s).collect(), changes));
            }
            self.changes.clear();
        }
        (out, marked)
    }
}

/// An order of a patch: the journal's, or an insert refused before it became one.
enum PatchOrder<'a> {
    Kept(&'a OrderRecord),
    Rejected(DiffRejectedOrder<'a>),
}

/// Writes `"name":{"key":value,...}` (after a comma unless it is the first member): each entry
/// writes its key (a JSON string) and then its value.
fn write_object<T>(
    out: &mut Vec<u8>,
    first: &mut bool,
    name: &str,
    entries: impl IntoIterator<Item = T>,
    mut key: impl FnMut(&mut Vec<u8>, &T),
    mut value: impl FnMut(&mut Vec<u8>, &T),
) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    push_str(out, name);
    out.extend_from_slice(b":{");
    for (i, entry) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        key(out, &entry);
        out.push(b':');
        value(out, &entry);
    }
    out.push(b'}');
}

/// The patch of one account's changes: `orders` and `trades` from the journal (as the steps
/// left them), `positions` and `accounts/CNY` as given (computed now, at the current marks).
/// Written as JSON text directly, field by field, with no tree in between: the account's
/// session usually sends it as it is (docs/PERFORMANCE.md "DIFF trade patches written as
/// text"). A settlement adds a SETTLEMENT notify, which sessions send apart: that rare patch
/// is a tree too.
pub fn patch(
    account: &AccountId,
    changes: &AccountChanges,
    journal: &Journal,
    snapshot: Option<&AccountSnapshot>,
    positions: &[PositionSnapshot],
) -> SharedPatch {
    // A fill's patch (order, trade, position, account) is 1.6 KiB on average.
    let mut out = Vec::with_capacity(2048);
    out.extend_from_slice(br#"{"trade":{"#);
    push_str(&mut out, account.as_str());
    out.extend_from_slice(b":{");
    let mut first = true;
    // By client order id, each once: a refused insert, then the journal's order of the same
    // id (a duplicate id is a reason to refuse) in its place, as a merge would leave it.
    let mut orders: std::collections::BTreeMap<&str, PatchOrder> = std::collections::BTreeMap::new();
    for (client_order_id, instrument_id, reason, ts) in &changes.rejected {
        let order = DiffRejectedOrder::of(
            account.as_str(),
            client_order_id.as_str(),
            instrument_id.as_str(),
            reason.code,
            reason.reason.message(),
            *ts,
        );
        orders.insert(client_order_id.as_str(), PatchOrder::Rejected(order));
    }
    for id in &changes.orders {
        if let Some(order) = journal.order(*id) {
            orders.insert(order.client_order_id.as_str(), PatchOrder::Kept(order));
        }
    }
    if !orders.is_empty() {
        let key = |out: &mut Vec<u8>, (id, _): &(&str, PatchOrder)| push_str(out, id);
        let value = |out: &mut Vec<u8>, (_, order): &(&str, PatchOrder)| match order {
            PatchOrder::Kept(order) => DiffOrder::push_text(order, out),
            PatchOrder::Rejected(order) => order.push_text(out),
        };
        write_object(&mut out, &mut first, "orders", orders, key, value);
    }
    if changes.new_trades > 0 {
        let trades = journal.recent_account_trades(account, changes.new_trades);
        let key = |out: &mut Vec<u8>, t: &&UserTrade| Field::IdPair(t.trade_id, t.direction.as_str()).push(out);
        let value = |out: &mut Vec<u8>, t: &&UserTrade| DiffTrade::push_text(t, out);
        write_object(&mut out, &mut first, "trades", trades, key, value);
    }
    if !positions.is_empty() {
        let key = |out: &mut Vec<u8>, p: &&PositionSnapshot| {
            push_str_parts(out, &[p.exchange_id.as_str(), ".", p.instrument_id.as_str()])
        };
        let value = |out: &mut Vec<u8>, p: &&PositionSnapshot| DiffPosition::push_text(p, out);
        write_object(&mut out, &mut first, "positions", positions, key, value);
    }
    if let Some(a) = snapshot {
        let key = |out: &mut Vec<u8>, _: &&AccountSnapshot| push_str(out, "CNY");
        let value = |out: &mut Vec<u8>, a: &&AccountSnapshot| DiffAccount::push_text(a, out);
        write_object(&mut out, &mut first, "accounts", [a], key, value);
    }
    out.extend_from_slice(b"}}}");
    // Only our own writers above made these bytes: valid UTF-8.
    let text = String::from_utf8(out).unwrap_or_default();
    if changes.settlements.is_empty() {
        return SharedPatch::from_text(text);
    }
    // A settled day: its statement as a SETTLEMENT notify (the session sends notifies in a
    // patch of their own).
    let mut value: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({}));
    for (day, text) in &changes.settlements {
        let key = format!("settlement-{day}");
        let notify = crate::diff::messages::notify(
            &key,
            crate::diff::messages::NotifyType::Settlement,
            crate::diff::messages::NotifyLevel::Info,
            0,
            text,
        );
        value["notify"] = notify["notify"].clone();
    }
    SharedPatch::new(value)
}

/// A settlement statement as text, for the DIFF SETTLEMENT notify.
pub fn statement_text(statement: &crate::domain::event::SettlementStatement) -> String {
    use crate::domain::types::money_to_f64;
    let a = &statement.account;
    let mut text = format!(
        "Settlement statement, trading day {}, account {}\n\
         Pre-balance {:.2}  Deposit {:.2}  Withdraw {:.2}\n\
         Close profit {:.2}  Position profit {:.2}  Commission {:.2}\n\
         Balance {:.2}  Margin {:.2}  Available {:.2}  Risk ratio {:.2}%\n",
        statement.trading_day,
        a.account_id,
        money_to_f64(a.pre_balance),
        money_to_f64(a.deposit),
        money_to_f64(a.withdraw),
        money_to_f64(a.close_profit),
        money_to_f64(a.position_profit),
        money_to_f64(a.commission),
        money_to_f64(a.balance),
        money_to_f64(a.margin),
        money_to_f64(a.available),
        a.risk_ratio * 100.0,
    );
    for p in &statement.positions {
        text.push_str(&format!(
            "{}.{}  long {} short {}  position profit {:.2}  margin {:.2}\n",
            p.exchange_id.as_str(),
            p.instrument_id,
            p.volume_long,
            p.volume_short,
            money_to_f64(p.position_profit),
            money_to_f64(p.margin),
        ));
    }
    text
}

/// The whole trade tree of an account for a login: the account, its positions, its live orders
/// and newest finished ones, its newest trades, and `trade_more_data: false`.
pub fn snapshot(
    account: &AccountSnapshot,
    positions: &[PositionSnapshot],
    journal: &Journal,
    trading_day: u32,
) -> Value {
    let id = &account.account_id;
    let kept: Vec<&OrderRecord> = journal.account_orders(id).collect();
    let finished = kept.iter().filter(|o| !o.is_alive()).count();
    let skip_finished = finished.saturating_sub(SNAPSHOT_MAX_FINISHED_ORDERS);
    let mut skipped = 0;
    let mut orders = Map::new();
    for order in kept {
        if !order.is_alive() && skipped < skip_finished {
            skipped += 1;
            continue;
        }
        orders.insert(order.client_order_id.as_str().to_owned(), diff_order(order));
    }
    let all_trades = journal.account_trades(id).count();
    let trades: Map<String, Value> = journal
        .account_trades(id)
        .skip(all_trades.saturating_sub(SNAPSHOT_MAX_TRADES))
        .map(|t| (trade_key(t), diff_trade(t)))
        .collect();
    let positions: Map<String, Value> = positions.iter().map(diff_position).collect();
    json!({"trade": {id.as_str(): {
        "user_id": id.as_str(),
        "session": {"user_id": id.as_str(), "trading_day": trading_day.to_string()},
        "accounts": {"CNY": diff_account(account)},
        "positions": positions,
        "orders": orders,
        "trades": trades,
        "banks": {},
        "transfers": {},
        "trade_more_data": false,
    }}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::json_text::random::{account, order, position, trade, Rng};

    fn text(push: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        push(&mut out);
        String::from_utf8(out).expect("utf8")
    }

    /// The patch's writers give the bytes serde gives for the structs that the login tree is
    /// built from, so a session sees the same record either way.
    #[test]
    fn the_patch_writers_are_serdes_byte_for_byte() {
        let mut r = Rng(11);
        for case in 0..20_000 {
            let o = order(&mut r);
            let expected = serde_json::to_string(&DiffOrder::of(&o)).expect("serializes");
            assert_eq!(text(|out| DiffOrder::push_text(&o, out)), expected, "case {case}: {o:?}");

            let t = trade(&mut r);
            let expected = serde_json::to_string(&DiffTrade::of(&t)).expect("serializes");
            assert_eq!(text(|out| DiffTrade::push_text(&t, out)), expected, "case {case}: {t:?}");
            let key = serde_json::to_string(&trade_key(&t)).expect("serializes");
            assert_eq!(text(|out| Field::IdPair(t.trade_id, t.direction.as_str()).push(out)), key);

            let a = account(&mut r);
            let expected = serde_json::to_string(&DiffAccount::of(&a)).expect("serializes");
            assert_eq!(text(|out| DiffAccount::push_text(&a, out)), expected, "case {case}: {a:?}");

            let p = position(&mut r);
            let expected = serde_json::to_string(&DiffPosition::of(&p)).expect("serializes");
            assert_eq!(text(|out| DiffPosition::push_text(&p, out)), expected, "case {case}: {p:?}");
            let key = serde_json::to_string(&PositionKey(&p).to_string()).expect("serializes");
            let ours = text(|out| push_str_parts(out, &[p.exchange_id.as_str(), ".", p.instrument_id.as_str()]));
            assert_eq!(ours, key);

            let instrument = r.pick(&["cu2501", "SHFE.cu2501", "a\"b.c", ".x"]);
            let message = r.pick(&["insufficient funds", "say \"no\""]);
            let rejected = DiffRejectedOrder::of(
                o.account_id.as_str(),
                o.client_order_id.as_str(),
                instrument,
                r.next() as u32,
                message,
                r.amount(),
            );
            let expected = serde_json::to_string(&rejected).expect("serializes");
            assert_eq!(text(|out| rejected.push_text(out)), expected, "case {case}");
        }
    }
}
