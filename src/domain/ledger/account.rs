//! A futures account: money sums, positions, and the DIFF account snapshot derived from them.

use super::position::{Position, Side};
use crate::domain::instrument::ExchangeId;
use crate::domain::instrument::Instrument;
use crate::domain::name::{AccountId, InstrumentId};
use crate::domain::types::*;
use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum AccountStatus {
    Active,
    /// No new orders, no withdrawals; cancels still work.
    Frozen,
    /// No new orders (nor modifies that re-queue); withdrawals and cancels work.
    TradingFrozen,
    /// No withdrawals; trading works.
    WithdrawFrozen,
}

impl AccountStatus {
    /// The name serde writes.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Frozen => "frozen",
            AccountStatus::TradingFrozen => "trading_frozen",
            AccountStatus::WithdrawFrozen => "withdraw_frozen",
        }
    }

    /// Whether the account may place orders (and re-queue them by a modify).
    pub fn can_trade(self) -> bool {
        matches!(self, AccountStatus::Active | AccountStatus::WithdrawFrozen)
    }

    /// Whether the account may withdraw.
    pub fn can_withdraw(self) -> bool {
        matches!(self, AccountStatus::Active | AccountStatus::TradingFrozen)
    }

    /// The status a freeze of `mode` (or an unfreeze) sets.
    pub fn of(frozen: bool, mode: FreezeMode) -> Self {
        match (frozen, mode) {
            (false, _) => AccountStatus::Active,
            (true, FreezeMode::Full) => AccountStatus::Frozen,
            (true, FreezeMode::Trading) => AccountStatus::TradingFrozen,
            (true, FreezeMode::Withdraw) => AccountStatus::WithdrawFrozen,
        }
    }
}

/// What a freeze stops: everything (`full`, the default), only trading, or only withdrawals.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum FreezeMode {
    #[default]
    Full,
    Trading,
    Withdraw,
}

/// Stored state of one account. Everything else (balance, available, profits, margin) is derived
/// on demand by `snapshot`, so it can never drift from its definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Account {
    pub account_id: AccountId,
    pub status: AccountStatus,
    #[serde(with = "fixed4")]
    pub pre_balance: Money,
    #[serde(with = "fixed4")]
    pub deposit: Money,
    #[serde(with = "fixed4")]
    pub withdraw: Money,
    #[serde(with = "fixed4")]
    pub close_profit: Money,
    #[serde(with = "fixed4")]
    pub commission: Money,
    /// Option premium: always zero on this futures venue, kept because DIFF has the field.
    #[serde(with = "fixed4")]
    pub premium: Money,
    #[serde(with = "fixed4")]
    pub frozen_margin: Money,
    #[serde(with = "fixed4")]
    pub frozen_commission: Money,
    #[serde(with = "fixed4")]
    pub frozen_premium: Money,
    /// Sum of the positions' cached margins.
    #[serde(with = "fixed4")]
    pub margin: Money,
    pub positions: Vec<Position>,
}

impl Account {
    pub fn new(account_id: AccountId) -> Self {
        Self {
            account_id,
            status: AccountStatus::Active,
            pre_balance: 0,
            deposit: 0,
            withdraw: 0,
            close_profit: 0,
            commission: 0,
            premium: 0,
            frozen_margin: 0,
            frozen_commission: 0,
            frozen_premium: 0,
            margin: 0,
            positions: Vec::new(),
        }
    }

    pub fn position(&self, instrument: u32) -> Option<&Position> {
        self.positions.iter().find(|p| p.instrument == instrument)
    }

    /// The position in `instrument`, created empty if the account has none.
    pub fn position_mut(&mut self, instrument: u32) -> &mut Position {
        match self.positions.iter().position(|p| p.instrument == instrument) {
            Some(i) => &mut self.positions[i],
            None => {
                self.positions.push(Position::new(instrument));
                self.positions.last_mut().expect("just pushed")
            }
        }
    }

    /// Recomputes the cached margin of the position in `instrument` after its costs changed.
    pub fn refresh_margin(&mut self, instrument: u32, inst: &Instrument) {
        if let Some(p) = self.positions.iter_mut().find(|p| p.instrument == instrument) {
            let margin = p.margin(Side::Long, inst.margin_rate_long) + p.margin(Side::Short, inst.margin_rate_short);
            self.margin += margin - p.margin;
            p.margin = margin;
        }
    }

    /// `available` alone (what the pre-trade check needs), without building a snapshot.
    pub fn available(&self, instruments: &[Instrument], marks: &[Price]) -> Money {
        self.available_and_lots_value(instruments, marks).0
    }

    /// `available`, and what the lots held and waiting to open are worth at `marks` (wide: no
    /// volume can overflow it), in one pass over the positions: an opening order checks both.
    pub fn available_and_lots_value(&self, instruments: &[Instrument], marks: &[Price]) -> (Money, i128) {
        let mut position_profit = 0;
        let mut lots_value: i128 = 0;
        for p in &self.positions {
            let multiple = instruments[p.instrument as usize].volume_multiple;
            let last = marks[p.instrument as usize];
            position_profit +=
                p.position_profit(Side::Long, last, multiple) + p.position_profit(Side::Short, last, multiple);
            let lots = p.volume(Side::Long) + p.volume(Side::Short) + p.pending_open;
            lots_value += lots as i128 * last as i128 * multiple as i128;
        }
        let balance =
            self.pre_balance + self.deposit - self.withdraw + self.close_profit - self.commission - self.premium
                + position_profit;
        let available = balance - self.margin - self.frozen_margin - self.frozen_commission - self.frozen_premium;
        (available, lots_value)
    }

    /// The DIFF account fields, with positions marked at `marks[instrument]`.
    pub fn snapshot(&self, instruments: &[Instrument], marks: &[Price]) -> AccountSnapshot {
        let mut position_profit = 0;
        let mut float_profit = 0;
        let margin = self.margin;
        for p in &self.positions {
            let inst = &instruments[p.instrument as usize];
            let last = marks[p.instrument as usize];
            for side in [Side::Long, Side::Short] {
                position_profit += p.position_profit(side, last, inst.volume_multiple);
                float_profit += p.float_profit(side, last, inst.volume_multiple);
            }
        }
        let static_balance = self.pre_balance + self.deposit - self.withdraw;
        let balance = static_balance + self.close_profit - self.commission - self.premium + position_profit;
        let available = balance - margin - self.frozen_margin - self.frozen_commission - self.frozen_premium;
        let risk_ratio = if balance > 0 {
            1.0 - available as f64 / balance as f64
        } else if margin > 0 {
            1.0
        } else {
            0.0
        };
        AccountSnapshot {
            account_id: self.account_id,
            status: self.status,
            pre_balance: self.pre_balance,
            deposit: self.deposit,
            withdraw: self.withdraw,
            static_balance,
            close_profit: self.close_profit,
            commission: self.commission,
            premium: self.premium,
            position_profit,
            float_profit,
            balance,
            margin,
            frozen_margin: self.frozen_margin,
            frozen_commission: self.frozen_commission,
            frozen_premium: self.frozen_premium,
            available,
            risk_ratio,
        }
    }
}

/// The DIFF account (`trade/<user>/accounts/CNY`) fields, with the identities of SPEC.md §2:
/// static_balance = pre_balance + deposit - withdraw;
/// balance = static_balance + close_profit - commission - premium + position_profit;
/// available = balance - margin - frozen_margin - frozen_commission - frozen_premium;
/// risk_ratio = 1 - available / balance.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AccountSnapshot {
    pub account_id: AccountId,
    pub status: AccountStatus,
    #[serde(with = "fixed4")]
    pub pre_balance: Money,
    #[serde(with = "fixed4")]
    pub deposit: Money,
    #[serde(with = "fixed4")]
    pub withdraw: Money,
    #[serde(with = "fixed4")]
    pub static_balance: Money,
    #[serde(with = "fixed4")]
    pub close_profit: Money,
    #[serde(with = "fixed4")]
    pub commission: Money,
    #[serde(with = "fixed4")]
    pub premium: Money,
    #[serde(with = "fixed4")]
    pub position_profit: Money,
    #[serde(with = "fixed4")]
    pub float_profit: Money,
    #[serde(with = "fixed4")]
    pub balance: Money,
    #[serde(with = "fixed4")]
    pub margin: Money,
    #[serde(with = "fixed4")]
    pub frozen_margin: Money,
    #[serde(with = "fixed4")]
    pub frozen_commission: Money,
    #[serde(with = "fixed4")]
    pub frozen_premium: Money,
    #[serde(with = "fixed4")]
    pub available: Money,
    /// 1 - available / balance (0 for an empty account; 1 when balance <= 0 with margin).
    pub risk_ratio: f64,
}

/// The DIFF position (`trade/<user>/positions/<EXCH.sym>`) fields for one instrument.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PositionSnapshot {
    pub account_id: AccountId,
    pub exchange_id: ExchangeId,
    pub instrument_id: InstrumentId,
    /// tqsdk computes `pos` from these four (equal to the volume_* fields here).
    pub pos_long_his: Volume,
    pub pos_long_today: Volume,
    pub pos_short_his: Volume,
    pub pos_short_today: Volume,
    pub volume_long_today: Volume,
    pub volume_long_his: Volume,
    pub volume_long: Volume,
    pub volume_long_frozen_today: Volume,
    pub volume_long_frozen_his: Volume,
    pub volume_long_frozen: Volume,
    pub volume_short_today: Volume,
    pub volume_short_his: Volume,
    pub volume_short: Volume,
    pub volume_short_frozen_today: Volume,
    pub volume_short_frozen_his: Volume,
    pub volume_short_frozen: Volume,
    #[serde(with = "fixed4")]
    pub open_cost_long: Money,
    #[serde(with = "fixed4")]
    pub open_cost_short: Money,
    #[serde(with = "fixed4")]
    pub position_cost_long: Money,
    #[serde(with = "fixed4")]
    pub position_cost_short: Money,
    /// Average prices (cost / (volume x multiple)); 0 without volume. Display values only.
    pub open_price_long: f64,
    pub open_price_short: f64,
    pub position_price_long: f64,
    pub position_price_short: f64,
    #[serde(with = "fixed4")]
    pub float_profit_long: Money,
    #[serde(with = "fixed4")]
    pub float_profit_short: Money,
    #[serde(with = "fixed4")]
    pub float_profit: Money,
    #[serde(with = "fixed4")]
    pub position_profit_long: Money,
    #[serde(with = "fixed4")]
    pub position_profit_short: Money,
    #[serde(with = "fixed4")]
    pub position_profit: Money,
    #[serde(with = "fixed4")]
    pub margin_long: Money,
    #[serde(with = "fixed4")]
    pub margin_short: Money,
    #[serde(with = "fixed4")]
    pub margin: Money,
    #[serde(with = "fixed4")]
    pub last_price: Price,
}

impl PositionSnapshot {
    pub fn new(account_id: AccountId, p: &Position, inst: &Instrument, last: Price) -> Self {
        let mult = inst.volume_multiple;
        let avg = |cost: Money, volume: Volume| {
            if volume == 0 {
                0.0
            } else {
                cost as f64 / (volume * mult) as f64 / PRICE_SCALE as f64
            }
        };
        let (long, short) = (Side::Long, Side::Short);
        let (vl, vs) = (p.volume(long), p.volume(short));
        let (fpl, fps) = (p.float_profit(long, last, mult), p.float_profit(short, last, mult));
        let (ppl, pps) = (p.position_profit(long, last, mult), p.position_profit(short, last, mult));
        let (ml, ms) = (p.margin(long, inst.margin_rate_long), p.margin(short, inst.margin_rate_short));
        PositionSnapshot {
            account_id,
            exchange_id: inst.exchange_id,
            instrument_id: inst.instrument_id,
            pos_long_his: p.long_his.volume,
            pos_long_today: p.long_today.volume,
            pos_short_his: p.short_his.volume,
            pos_short_today: p.short_today.volume,
            volume_long_today: p.long_today.volume,
            volume_long_his: p.long_his.volume,
            volume_long: vl,
            volume_long_frozen_today: p.long_today.frozen,
            volume_long_frozen_his: p.long_his.frozen,
            volume_long_frozen: p.long_today.frozen + p.long_his.frozen,
            volume_short_today: p.short_today.volume,
            volume_short_his: p.short_his.volume,
            volume_short: vs,
            volume_short_frozen_today: p.short_today.frozen,
            volume_short_frozen_his: p.short_his.frozen,
            volume_short_frozen: p.short_today.frozen + p.short_his.frozen,
            open_cost_long: p.open_cost(long),
            open_cost_short: p.open_cost(short),
            position_cost_long: p.position_cost(long),
            position_cost_short: p.position_cost(short),
            open_price_long: avg(p.open_cost(long), vl),
            open_price_short: avg(p.open_cost(short), vs),
            position_price_long: avg(p.position_cost(long), vl),
            position_price_short: avg(p.position_cost(short), vs),
            float_profit_long: fpl,
            float_profit_short: fps,
            float_profit: fpl + fps,
            position_profit_long: ppl,
            position_profit_short: pps,
            position_profit: ppl + pps,
            margin_long: ml,
            margin_short: ms,
            margin: ml + ms,
            last_price: last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_modes_stop_what_they_name() {
        use AccountStatus::*;
        let cases = [
            (false, FreezeMode::Trading, Active, true, true),
            (true, FreezeMode::Full, Frozen, false, false),
            (true, FreezeMode::Trading, TradingFrozen, false, true),
            (true, FreezeMode::Withdraw, WithdrawFrozen, true, false),
        ];
        for (frozen, mode, status, trade, withdraw) in cases {
            let s = AccountStatus::of(frozen, mode);
            assert_eq!((s, s.can_trade(), s.can_withdraw()), (status, trade, withdraw), "{frozen} {mode:?}");
        }
        assert_eq!(serde_json::to_string(&TradingFrozen).unwrap(), "\"trading_frozen\"");
        assert_eq!(serde_json::from_str::<FreezeMode>("\"withdraw\"").unwrap(), FreezeMode::Withdraw);
    }
}
