//! Events: everything the engine reports. The same commands always produce the same events,
//! byte for byte. JSON form tagged by `event` (docs/API.md "Event log"); rkyv for storage.

use crate::domain::instrument::ExchangeId;
use crate::domain::ledger::account::{AccountSnapshot, PositionSnapshot};
use crate::domain::market_data::Quote;
use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use crate::domain::risk::RejectCode;
use crate::domain::types::*;
use serde::{Deserialize, Serialize};

/// A reason with its stable number, as it appears in events.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Reason {
    pub code: u32,
    pub reason: RejectCode,
}

impl From<RejectCode> for Reason {
    fn from(code: RejectCode) -> Self {
        Reason { code: code.code(), reason: code }
    }
}

/// An accepted order as the venue recorded it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct OrderInfo {
    pub order_id: u64,
    pub client_order_id: ClientOrderId,
    pub account_id: AccountId,
    pub exchange_id: ExchangeId,
    pub instrument_id: InstrumentId,
    pub direction: Direction,
    pub offset: Offset,
    pub price_type: PriceType,
    #[serde(with = "fixed4_opt")]
    pub limit_price: Option<Price>,
    pub volume: Volume,
    pub time_condition: TimeCondition,
    pub volume_condition: VolumeCondition,
}

/// One side of a trade.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct TradeSide {
    pub order_id: u64,
    pub client_order_id: ClientOrderId,
    pub account_id: AccountId,
    pub offset: Offset,
    #[serde(with = "fixed4")]
    pub commission: Money,
    #[serde(with = "fixed4")]
    pub close_profit: Money,
    pub volume_left: Volume,
}

/// A settlement statement for one account and trading day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SettlementStatement {
    pub trading_day: u32,
    /// The account at the settlement prices, before the day's sums were reset.
    pub account: AccountSnapshot,
    /// Positions at the settlement prices, before today rolled into his.
    pub positions: Vec<PositionSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    AccountOpened {
        ts: TimestampNs,
        account_id: AccountId,
    },
    /// A deposit (positive amount) or a withdrawal (negative).
    FundsTransferred {
        ts: TimestampNs,
        account_id: AccountId,
        #[serde(with = "fixed4")]
        amount: Money,
    },
    AccountFrozenChanged {
        ts: TimestampNs,
        account_id: AccountId,
        frozen: bool,
        /// What the freeze stops (`full` when unfrozen).
        #[serde(default)]
        mode: crate::domain::ledger::account::FreezeMode,
    },
    /// A command other than an order insert was refused; nothing changed.
    CommandRejected {
        ts: TimestampNs,
        command: crate::domain::name::InlineStr<31>,
        #[serde(flatten)]
        reason: Reason,
    },
    OrderAccepted {
        ts: TimestampNs,
        order: OrderInfo,
    },
    /// An order insert was refused; nothing changed.
    OrderRejected {
        ts: TimestampNs,
        account_id: AccountId,
        client_order_id: ClientOrderId,
        instrument_id: InstrumentId,
        #[serde(flatten)]
        reason: Reason,
    },
    Trade {
        ts: TimestampNs,
        trade_id: u64,
        exchange_id: ExchangeId,
        instrument_id: InstrumentId,
        #[serde(with = "fixed4")]
        price: Price,
        volume: Volume,
        /// The side of the incoming (taker) order.
        aggressor: Direction,
        buy: TradeSide,
        sell: TradeSide,
    },
    /// One account's side of a trade (sharded server: each account shard reports its own
    /// side; `direction` is this side's).
    Fill {
        ts: TimestampNs,
        trade_id: u64,
        exchange_id: ExchangeId,
        instrument_id: InstrumentId,
        #[serde(with = "fixed4")]
        price: Price,
        volume: Volume,
        direction: Direction,
        side: TradeSide,
    },
    /// A trade as the market sees it (sharded server: the instrument's shard reports it).
    MarketTrade {
        ts: TimestampNs,
        trade_id: u64,
        exchange_id: ExchangeId,
        instrument_id: InstrumentId,
        #[serde(with = "fixed4")]
        price: Price,
        volume: Volume,
        aggressor: Direction,
    },
    /// The order ended with `volume_cancelled` lots unfilled.
    OrderCancelled {
        ts: TimestampNs,
        order_id: u64,
        client_order_id: ClientOrderId,
        account_id: AccountId,
        instrument_id: InstrumentId,
        volume_cancelled: Volume,
        #[serde(flatten)]
        reason: Reason,
    },
    OrderModified {
        ts: TimestampNs,
        order_id: u64,
        client_order_id: ClientOrderId,
        account_id: AccountId,
        #[serde(with = "fixed4_opt")]
        limit_price: Option<Price>,
        volume_left: Volume,
        /// False when the order was re-queued (price change or volume increase).
        kept_priority: bool,
    },
    /// The account's stored state changed (mark-to-market alone is carried by quotes).
    AccountUpdated {
        ts: TimestampNs,
        account: AccountSnapshot,
    },
    PositionUpdated {
        ts: TimestampNs,
        position: PositionSnapshot,
    },
    QuoteUpdated {
        ts: TimestampNs,
        quote: Quote,
    },
    MarkPriceSet {
        ts: TimestampNs,
        instrument_id: InstrumentId,
        #[serde(with = "fixed4")]
        price: Price,
    },
    SettlementPriceSet {
        ts: TimestampNs,
        instrument_id: InstrumentId,
        #[serde(with = "fixed4")]
        price: Price,
    },
    Settlement {
        ts: TimestampNs,
        statement: SettlementStatement,
    },
    /// After settlement: risk_ratio >= 100%; the account must be liquidated at the next session.
    ForcedLiquidationRequired {
        ts: TimestampNs,
        trading_day: u32,
        account_id: AccountId,
        risk_ratio: f64,
    },
    TradingDayAdvanced {
        ts: TimestampNs,
        settled_day: u32,
        trading_day: u32,
    },
}
