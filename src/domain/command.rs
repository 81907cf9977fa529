//! Commands: everything that can change the exchange's state. Each carries its own timestamp;
//! the engine never reads a clock. JSON form: one object per line, tagged by `cmd`
//! (docs/API.md "Command log"); rkyv form: the WAL payload.

use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use crate::domain::types::*;
use serde::{Deserialize, Serialize};

fn default_time_condition() -> TimeCondition {
    TimeCondition::Gfd
}

fn default_volume_condition() -> VolumeCondition {
    VolumeCondition::Any
}

fn default_price_type() -> PriceType {
    PriceType::Limit
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct InsertOrder {
    pub account_id: AccountId,
    pub client_order_id: ClientOrderId,
    /// `cu2501` or `SHFE.cu2501`.
    pub instrument_id: InstrumentId,
    pub direction: Direction,
    pub offset: Offset,
    #[serde(default = "default_price_type")]
    pub price_type: PriceType,
    #[serde(default, with = "fixed4_opt")]
    pub limit_price: Option<Price>,
    pub volume: Volume,
    #[serde(default = "default_time_condition")]
    pub time_condition: TimeCondition,
    #[serde(default = "default_volume_condition")]
    pub volume_condition: VolumeCondition,
    /// For volume_condition MIN: the least that must fill at once.
    #[serde(default)]
    pub min_volume: Volume,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    OpenAccount {
        ts: TimestampNs,
        account_id: AccountId,
    },
    Deposit {
        ts: TimestampNs,
        account_id: AccountId,
        #[serde(with = "fixed4")]
        amount: Money,
    },
    Withdraw {
        ts: TimestampNs,
        account_id: AccountId,
        #[serde(with = "fixed4")]
        amount: Money,
    },
    /// Frozen accounts may cancel but not trade or withdraw (`mode` full, the default), not
    /// trade (`trading`), or not withdraw (`withdraw`). Unfreezing ignores the mode.
    SetAccountFrozen {
        ts: TimestampNs,
        account_id: AccountId,
        frozen: bool,
        #[serde(default)]
        mode: crate::domain::ledger::account::FreezeMode,
    },
    InsertOrder {
        ts: TimestampNs,
        order: InsertOrder,
    },
    /// Names the order by the exchange's `order_id` or the client's `client_order_id`.
    CancelOrder {
        ts: TimestampNs,
        account_id: AccountId,
        #[serde(default)]
        order_id: Option<u64>,
        #[serde(default)]
        client_order_id: Option<ClientOrderId>,
    },
    /// New price and/or new remaining volume. A pure volume decrease keeps time priority;
    /// anything else re-queues the order (and it may trade at once).
    ModifyOrder {
        ts: TimestampNs,
        account_id: AccountId,
        #[serde(default)]
        order_id: Option<u64>,
        #[serde(default)]
        client_order_id: Option<ClientOrderId>,
        #[serde(default, with = "fixed4_opt")]
        new_price: Option<Price>,
        #[serde(default)]
        new_volume: Option<Volume>,
    },
    /// Marks an instrument's positions at `price` (operator mark, no trade).
    MarkPrice {
        ts: TimestampNs,
        instrument_id: InstrumentId,
        #[serde(with = "fixed4")]
        price: Price,
    },
    SetSettlementPrice {
        ts: TimestampNs,
        instrument_id: InstrumentId,
        #[serde(with = "fixed4")]
        price: Price,
    },
    /// Daily settlement; the next trading day defaults to the next weekday.
    Settle {
        ts: TimestampNs,
        #[serde(default)]
        next_trading_day: Option<u32>,
    },
    /// Cancels the account's orders and closes its positions with market orders.
    ForceLiquidate {
        ts: TimestampNs,
        account_id: AccountId,
    },
}

impl Command {
    pub fn ts(&self) -> TimestampNs {
        match *self {
            Command::OpenAccount { ts, .. }
            | Command::Deposit { ts, .. }
            | Command::Withdraw { ts, .. }
            | Command::SetAccountFrozen { ts, .. }
            | Command::InsertOrder { ts, .. }
            | Command::CancelOrder { ts, .. }
            | Command::ModifyOrder { ts, .. }
            | Command::MarkPrice { ts, .. }
            | Command::SetSettlementPrice { ts, .. }
            | Command::Settle { ts, .. }
            | Command::ForceLiquidate { ts, .. } => ts,
        }
    }

    /// The command's tag, as in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Command::OpenAccount { .. } => "open_account",
            Command::Deposit { .. } => "deposit",
            Command::Withdraw { .. } => "withdraw",
            Command::SetAccountFrozen { .. } => "set_account_frozen",
            Command::InsertOrder { .. } => "insert_order",
            Command::CancelOrder { .. } => "cancel_order",
            Command::ModifyOrder { .. } => "modify_order",
            Command::MarkPrice { .. } => "mark_price",
            Command::SetSettlementPrice { .. } => "set_settlement_price",
            Command::Settle { .. } => "settle",
            Command::ForceLiquidate { .. } => "force_liquidate",
        }
    }
}
