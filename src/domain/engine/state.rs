//! The engine's state as a serialisable dump (replay tool, tests) and the invariant checks.

use super::Engine;
use crate::domain::book::RestingOrder;
use crate::domain::instrument::{ExchangeId, Instrument, InstrumentStatus};
use crate::domain::ledger::account::{AccountSnapshot, PositionSnapshot};
use crate::domain::ledger::order::LiveOrder;
use crate::domain::ledger::position::Side;
use crate::domain::ledger::Ledger;
use crate::domain::market_data::Quote;
use crate::domain::name::InstrumentId;
use crate::domain::types::*;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct AccountState {
    pub account: AccountSnapshot,
    pub positions: Vec<PositionSnapshot>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InstrumentState {
    pub exchange_id: ExchangeId,
    pub instrument_id: InstrumentId,
    pub status: InstrumentStatus,
    #[serde(with = "fixed4")]
    pub pre_settlement: Price,
    #[serde(with = "fixed4")]
    pub upper_limit: Price,
    #[serde(with = "fixed4")]
    pub lower_limit: Price,
    #[serde(with = "fixed4")]
    pub mark_price: Price,
    pub open_interest: Volume,
}

#[derive(Clone, Debug, Serialize)]
pub struct BookDump {
    pub instrument_id: InstrumentId,
    /// Best first, time priority within a price.
    pub bids: Vec<RestingOrderView>,
    pub asks: Vec<RestingOrderView>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct RestingOrderView {
    pub order_id: u64,
    #[serde(with = "fixed4")]
    pub price: Price,
    pub volume_left: Volume,
}

impl From<&RestingOrder> for RestingOrderView {
    fn from(o: &RestingOrder) -> Self {
        Self { order_id: o.order_id, price: o.price, volume_left: o.volume_left }
    }
}

/// Everything a user can see, in a deterministic order.
#[derive(Clone, Debug, Serialize)]
pub struct EngineState {
    pub trading_day: u32,
    pub next_order_id: u64,
    pub next_trade_id: u64,
    pub instruments: Vec<InstrumentState>,
    pub accounts: Vec<AccountState>,
    pub live_orders: Vec<LiveOrder>,
    pub books: Vec<BookDump>,
    pub quotes: Vec<Quote>,
}

/// Every account of `ledger` with its positions (by instrument id), in ledger order, priced
/// at `marks`.
pub fn account_states(ledger: &Ledger, instruments: &[Instrument], marks: &[Price]) -> Vec<AccountState> {
    (0..ledger.accounts().len() as u32)
        .map(|slot| {
            let account = ledger.account(slot);
            let mut positions: Vec<PositionSnapshot> = account
                .positions
                .iter()
                .map(|p| {
                    let inst = &instruments[p.instrument as usize];
                    PositionSnapshot::new(account.account_id, p, inst, marks[p.instrument as usize])
                })
                .collect();
            positions.sort_by(|a, b| a.instrument_id.as_str().cmp(b.instrument_id.as_str()));
            AccountState { account: ledger.snapshot(slot, instruments, marks), positions }
        })
        .collect()
}

impl Engine {
    pub fn state(&self) -> EngineState {
        let instruments = self
            .instruments
            .iter()
            .enumerate()
            .map(|(i, inst)| InstrumentState {
                exchange_id: inst.exchange_id,
                instrument_id: inst.instrument_id,
                status: inst.status,
                pre_settlement: inst.pre_settlement,
                upper_limit: inst.upper_limit,
                lower_limit: inst.lower_limit,
                mark_price: self.marks[i],
                open_interest: self.open_interest[i],
            })
            .collect();
        let accounts = account_states(&self.ledger, &self.instruments, &self.marks);
        let books = self
            .books
            .iter()
            .zip(&self.instruments)
            .map(|(book, inst)| {
                let mut bids = Vec::new();
                let mut asks = Vec::new();
                book.for_each_order(Direction::Buy, |o| bids.push(o.into()));
                book.for_each_order(Direction::Sell, |o| asks.push(o.into()));
                BookDump { instrument_id: inst.instrument_id, bids, asks }
            })
            .collect();
        EngineState {
            trading_day: self.trading_day,
            next_order_id: self.next_order_id,
            next_trade_id: self.next_trade_id,
            instruments,
            accounts,
            live_orders: self.ledger.live_orders_sorted(),
            books,
            quotes: self.markets.iter().map(|m| *m.quote()).collect(),
        }
    }

    /// SPEC §2 invariants: zero-sum profits, long == short == open interest, frozen == what
    /// live orders need, books consistent and uncrossed, every resting order live in the ledger
    /// with the same volume (and every live order resting), account identities.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.ledger.check_holds()?;
        let n = self.instruments.len();
        let mut long = vec![0; n];
        let mut short = vec![0; n];
        let mut profit_sum: i128 = 0;
        let (mut balance_sum, mut commission_sum, mut static_sum): (i128, i128, i128) = (0, 0, 0);
        for slot in 0..self.ledger.accounts().len() as u32 {
            let account = self.ledger.account(slot);
            for p in &account.positions {
                long[p.instrument as usize] += p.volume(Side::Long);
                short[p.instrument as usize] += p.volume(Side::Short);
                let inst = &self.instruments[p.instrument as usize];
                let margin =
                    p.margin(Side::Long, inst.margin_rate_long) + p.margin(Side::Short, inst.margin_rate_short);
                if margin != p.margin {
                    return Err(format!(
                        "{}: cached margin {} but positions need {margin}",
                        account.account_id, p.margin
                    ));
                }
            }
            let s = self.ledger.snapshot(slot, &self.instruments, &self.marks);
            if s.static_balance != s.pre_balance + s.deposit - s.withdraw
                || s.balance != s.static_balance + s.close_profit - s.commission - s.premium + s.position_profit
                || s.available != s.balance - s.margin - s.frozen_margin - s.frozen_commission - s.frozen_premium
            {
                return Err(format!("account {} breaks the balance identities", s.account_id));
            }
            profit_sum += (s.close_profit + s.position_profit) as i128;
            balance_sum += s.balance as i128;
            commission_sum += s.commission as i128;
            static_sum += s.static_balance as i128;
        }
        if profit_sum != 0 {
            return Err(format!("not zero-sum: close + position profit over accounts = {profit_sum}"));
        }
        if balance_sum + commission_sum != static_sum {
            return Err("sum(balance) + sum(commission) != sum(static_balance)".into());
        }
        for i in 0..n {
            if long[i] != short[i] || long[i] != self.open_interest[i] {
                return Err(format!(
                    "{}: long {} short {} open interest {}",
                    self.instruments[i].instrument_id, long[i], short[i], self.open_interest[i]
                ));
            }
            self.books[i].check_invariants().map_err(|e| format!("{}: {e}", self.instruments[i].instrument_id))?;
            // The published depth is the book's (depth tracking may skip re-reads, never changes).
            let quote = self.markets[i].quote();
            for (direction, prices, volumes) in [
                (Direction::Buy, &quote.bid_price, &quote.bid_volume),
                (Direction::Sell, &quote.ask_price, &quote.ask_volume),
            ] {
                let mut n = 0;
                let mut same = true;
                self.books[i].for_each_level(direction, prices.len(), |price, volume, _| {
                    same &= prices[n] == Some(price) && volumes[n] == volume;
                    n += 1;
                });
                same &= prices[n..].iter().all(Option::is_none) && volumes[n..].iter().all(|&v| v == 0);
                if !same {
                    return Err(format!("{}: quote depth differs from the book", self.instruments[i].instrument_id));
                }
            }
        }
        let mut resting = 0;
        for (i, book) in self.books.iter().enumerate() {
            let mut problem = None;
            for direction in [Direction::Buy, Direction::Sell] {
                book.for_each_order(direction, |o| {
                    resting += 1;
                    match self.ledger.order(o.order_id) {
                        Some(live)
                            if live.volume_left == o.volume_left
                                && live.instrument as usize == i
                                && live.account as u64 == o.owner => {}
                        _ => problem = Some(format!("resting order {} does not match the ledger", o.order_id)),
                    }
                });
            }
            if let Some(p) = problem {
                return Err(p);
            }
        }
        if resting != self.ledger.live_order_count() {
            return Err(format!("{resting} resting orders but {} live in the ledger", self.ledger.live_order_count()));
        }
        Ok(())
    }
}
