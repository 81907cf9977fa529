//! Daily settlement on the partitioned exchange, as one cut across all shards.
//!
//! The server's coordinator stops trading on every shard, waits until no message is in flight,
//! and reads each instrument's settlement inputs from its owner (`settlement_inputs`): the
//! operator's settlement price (else the day's last trade, the mark), the day's close and the
//! open interest. That is a [`SettleCut`], the same on every shard. Then two steps, each run by
//! every shard with nothing in flight between them:
//!
//! 1. `prepare_settlement`: each account shard cancels, through the normal cancel messages,
//!    its live orders that cannot survive the day: GFD, CLOSETODAY (their today lots become
//!    his), and those outside the new day's price band. So the books hold only what carries
//!    over, and every hold matches its book.
//! 2. `settle_cut`: each shard settles its accounts at the cut's prices (a statement each),
//!    rolls every instrument to the new day (every shard keeps every instrument's spec, so all
//!    roll alike), rolls its own books and markets, marks every position at the settlement
//!    price, flags accounts that cannot carry their positions, and advances the trading day.
//!    It sends no message: each shard's part depends only on its own state and the cut.
//!
//! A shard that has run `settle_cut` keeps the cut (`last_settlement`), so after a crash
//! between two shards' settlements, recovery runs the same cut on the shards still behind.

use super::{ShardEngine, StepOutput};
use crate::domain::event::Event;
use crate::domain::risk::RejectCode;
use crate::domain::types::*;
use serde::{Deserialize, Serialize};

/// What every shard settles at: per instrument (config order) the settlement price, the day's
/// close and the open interest, all read from the instrument's owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SettleCut {
    pub settled_day: u32,
    pub next_day: u32,
    pub prices: Vec<Price>,
    pub closes: Vec<Price>,
    pub open_interest: Vec<Volume>,
}

/// One owned instrument's part of a cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementInput {
    pub instrument: u32,
    pub price: Price,
    pub close: Price,
    pub open_interest: Volume,
}

impl ShardEngine {
    /// The operator's settlement price of an instrument this shard owns (checked like an order
    /// price: on the tick, inside the day's band).
    pub fn set_settlement_price(&mut self, instrument: u32, price: Price) -> Result<(), RejectCode> {
        let i = instrument as usize;
        if i >= self.instruments.len() || self.books[i].is_none() {
            return Err(RejectCode::InstrumentNotFound);
        }
        let inst = &self.instruments[i];
        if price % inst.price_tick != 0 || price < inst.lower_limit || price > inst.upper_limit {
            return Err(RejectCode::InvalidSettlementPrice);
        }
        self.settlement_prices[i] = Some(price);
        Ok(())
    }

    /// An operator's change of an instrument's status, run on every shard (the owner first: its
    /// matcher refuses orders for an instrument that is not trading, whatever the account
    /// shard saw). Delisting is final.
    /// On the owner: entering pre-open starts the auction (orders rest without matching);
    /// trading from then on (the open) runs it.
    pub fn set_instrument_status(
        &mut self,
        ts: TimestampNs,
        instrument: u32,
        status: crate::domain::instrument::InstrumentStatus,
        out: &mut StepOutput,
    ) -> Result<(), RejectCode> {
        use crate::domain::instrument::InstrumentStatus;
        let inst = self.instruments.get_mut(instrument as usize).ok_or(RejectCode::InstrumentNotFound)?;
        if inst.status == InstrumentStatus::Delisted && status != InstrumentStatus::Delisted {
            return Err(RejectCode::InstrumentNotTrading);
        }
        inst.status = status;
        if let Some(book) = self.books[instrument as usize].as_mut() {
            match status {
                InstrumentStatus::PreOpen => book.set_auction(true),
                InstrumentStatus::Trading if book.in_auction() => self.run_auction(ts, instrument, out),
                _ => {}
            }
        }
        // Fills of this shard's own accounts are handled in the same step.
        self.drain_local(ts, out);
        self.finish_step(ts, out);
        Ok(())
    }

    /// An instrument listed at run time, at the next slot, on every shard (the owner gets its
    /// book and market). Refused when its id is taken or the table is full.
    pub fn add_instrument(&mut self, inst: crate::domain::instrument::Instrument) -> Result<u32, RejectCode> {
        if self.instrument_index.contains_key(&inst.instrument_id) {
            return Err(RejectCode::InstrumentExists);
        }
        if self.instruments.len() >= super::MAX_INSTRUMENTS {
            return Err(RejectCode::InstrumentExists);
        }
        // What `OrderBook::new` needs, a band it can allocate included (the API checks much more;
        // a logged record is checked too).
        let levels = inst.upper_limit.checked_sub(inst.lower_limit).map(|span| span / inst.price_tick.max(1) + 1);
        if inst.price_tick <= 0
            || inst.volume_multiple <= 0
            || !levels.is_some_and(|n| (1..=crate::domain::instrument::MAX_BAND_LEVELS).contains(&n))
        {
            return Err(RejectCode::InstrumentNotFound);
        }
        let slot = self.instruments.len() as u32;
        let owner = super::instrument_shard(&inst, self.shards);
        let owned = owner == self.shard;
        self.books.push(owned.then(|| {
            let mut book = crate::domain::book::OrderBook::new(
                inst.price_tick,
                inst.lower_limit,
                inst.upper_limit,
                self.config.book_capacity,
            );
            book.set_auction(inst.status == crate::domain::instrument::InstrumentStatus::PreOpen);
            book
        }));
        self.markets.push(owned.then(|| {
            crate::domain::market_data::InstrumentMarket::new(
                &inst,
                self.config.kline_capacity,
                self.config.tick_capacity,
            )
        }));
        self.instrument_index.insert(inst.instrument_id, slot);
        self.instrument_owner.push(owner);
        self.marks.push(inst.pre_settlement);
        self.broadcast_marks.push(inst.pre_settlement);
        self.open_interest.push(0);
        self.settlement_prices.push(None);
        self.instruments.push(inst);
        Ok(slot)
    }

    /// An operator's update of an instrument's risk parameters, run on every shard.
    pub fn update_instrument(
        &mut self,
        ts: TimestampNs,
        instrument: u32,
        update: &crate::domain::instrument::InstrumentUpdate,
        out: &mut StepOutput,
    ) -> Result<(), RejectCode> {
        let inst = self.instruments.get_mut(instrument as usize).ok_or(RejectCode::InstrumentNotFound)?;
        inst.apply(update);
        if update.margin_rate_long.is_some() || update.margin_rate_short.is_some() {
            // Positions are margined at the new rates at once (holds of live orders keep what
            // they froze).
            let inst = self.instruments[instrument as usize].clone();
            for slot in self.ledger.refresh_margins(instrument, &inst) {
                self.touched.account(slot);
                self.touched.position(slot, instrument);
            }
        }
        self.finish_step(ts, out);
        Ok(())
    }

    /// This shard's part of a cut: its own instruments' settlement price (the operator's, else
    /// the mark), close (the last trade, else the previous close) and open interest.
    pub fn settlement_inputs(&self) -> Vec<SettlementInput> {
        (0..self.instruments.len())
            .filter(|&i| self.books[i].is_some())
            .map(|i| SettlementInput {
                instrument: i as u32,
                price: self.settlement_prices[i].unwrap_or(self.marks[i]),
                close: self.markets[i].as_ref().map_or(self.instruments[i].pre_close, |m| m.quote().last_price),
                open_interest: self.open_interest[i],
            })
            .collect()
    }

    /// The last cut this shard settled.
    pub fn last_settlement(&self) -> Option<&SettleCut> {
        self.last_settlement.as_ref()
    }

    /// Whether `cut` fits this shard now: the day it settles is this shard's, and it covers
    /// every instrument.
    pub fn check_cut(&self, cut: &SettleCut) -> Result<(), String> {
        let n = self.instruments.len();
        if cut.settled_day != self.trading_day {
            return Err(format!(
                "a settlement of day {} on shard {} at day {}",
                cut.settled_day, self.shard, self.trading_day
            ));
        }
        if cut.next_day <= cut.settled_day || !crate::domain::engine::is_valid_day(cut.next_day) {
            return Err(format!("a settlement from day {} to day {}", cut.settled_day, cut.next_day));
        }
        if cut.prices.len() != n || cut.closes.len() != n || cut.open_interest.len() != n {
            return Err(format!("a settlement cut for {} instruments of {n}", cut.prices.len()));
        }
        Ok(())
    }

    /// Step 1: cancels (through the normal messages) this shard's live orders that do not
    /// carry over into `cut.next_day`. Deterministic in the state and the cut.
    pub fn prepare_settlement(&mut self, ts: TimestampNs, cut: &SettleCut, out: &mut StepOutput) -> Result<(), String> {
        self.check_cut(cut)?;
        for order in self.ledger.live_orders_sorted() {
            let i = order.instrument as usize;
            let mut next = self.instruments[i].clone();
            next.roll_day(cut.prices[i], cut.closes[i], cut.open_interest[i]);
            let why = if order.time_condition == TimeCondition::Gfd || order.offset == Offset::CloseToday {
                RejectCode::CancelledAtSettlement
            } else if order.limit_price.is_some_and(|p| p < next.lower_limit || p > next.upper_limit) {
                RejectCode::OutsideNewPriceBand
            } else {
                continue;
            };
            // A modify in flight is answered before the cut (nothing is in flight at a cut).
            self.settle_cancels.insert(order.order_id, why);
            let msg = super::msg::PeerMsg::Cancel { order_id: order.order_id, instrument: order.instrument };
            self.send(self.instrument_owner[i], msg, out);
        }
        self.drain_local(ts, out);
        self.finish_step(ts, out);
        Ok(())
    }

    /// Why a cancel this shard sent at settlement ended its order (None: a client's cancel).
    pub(super) fn take_settle_cancel(&mut self, order_id: u64) -> Option<RejectCode> {
        self.settle_cancels.remove(&order_id)
    }

    /// Step 2: settles this shard at `cut` (see the module doc). Sends nothing.
    // The loops walk several per-instrument tables in step, by instrument index.
    #[allow(clippy::needless_range_loop)]
    pub fn settle_cut(&mut self, ts: TimestampNs, cut: &SettleCut, out: &mut StepOutput) -> Result<(), String> {
        self.check_cut(cut)?;
        let prices = &cut.prices;
        // Step 1 cancelled every order outside the new bands; one left on a book means the cut
        // was not prepared here. Checked before anything changes.
        for i in 0..self.instruments.len() {
            let Some(book) = self.books[i].as_ref() else { continue };
            let mut next = self.instruments[i].clone();
            next.roll_day(prices[i], cut.closes[i], cut.open_interest[i]);
            let mut outside = 0;
            for direction in [Direction::Buy, Direction::Sell] {
                book.for_each_level(direction, usize::MAX, |price, _, _| {
                    if price < next.lower_limit || price > next.upper_limit {
                        outside += 1;
                    }
                });
            }
            if outside > 0 {
                return Err(format!("price levels outside the new band of instrument #{i}: the cut was not prepared"));
            }
        }
        // Statements at the settlement prices, then realise and roll every account.
        for slot in 0..self.ledger.accounts().len() as u32 {
            let statement = self.ledger.settle_with_statement(slot, &self.instruments, prices, cut.settled_day);
            out.events.push(Event::Settlement { ts, statement });
            self.touched.account(slot);
            let held: Vec<u32> = self.ledger.account(slot).positions.iter().map(|p| p.instrument).collect();
            for instrument in held {
                self.touched.position(slot, instrument);
            }
        }
        self.ledger.roll_close_holds();
        // Every shard rolls every instrument's spec the same way; owners roll books and quotes.
        for i in 0..self.instruments.len() {
            self.instruments[i].roll_day(prices[i], cut.closes[i], cut.open_interest[i]);
            self.marks[i] = prices[i];
            self.broadcast_marks[i] = prices[i];
            self.settlement_prices[i] = None;
            let (lower, upper) = (self.instruments[i].lower_limit, self.instruments[i].upper_limit);
            let (Some(book), Some(market)) = (self.books[i].as_mut(), self.markets[i].as_mut()) else { continue };
            market.set_settlement(prices[i]);
            out.events.push(Event::QuoteUpdated { ts, quote: *market.quote() });
            let removed = book.rebase(lower, upper);
            debug_assert!(removed.is_empty(), "checked above");
            market.roll_day(&self.instruments[i]);
            if book.take_depth_changed() {
                market.on_book(book, ts);
            }
            out.events.push(Event::QuoteUpdated { ts, quote: *market.quote() });
        }
        // Accounts that cannot carry their positions into the next day.
        for slot in 0..self.ledger.accounts().len() as u32 {
            let snap = self.ledger.snapshot(slot, &self.instruments, &self.marks);
            if snap.risk_ratio >= 1.0 {
                out.events.push(Event::ForcedLiquidationRequired {
                    ts,
                    trading_day: cut.next_day,
                    account_id: snap.account_id,
                    risk_ratio: snap.risk_ratio,
                });
            }
        }
        self.trading_day = cut.next_day;
        self.last_settlement = Some(cut.clone());
        out.events.push(Event::TradingDayAdvanced { ts, settled_day: cut.settled_day, trading_day: cut.next_day });
        self.finish_step(ts, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::engine::EngineConfig;
    use crate::domain::instrument::{Instrument, InstrumentConfig, MAX_BAND_LEVELS};

    #[test]
    fn a_logged_instrument_with_a_band_too_wide_for_a_book_is_refused() {
        let config: InstrumentConfig = toml::from_str(
            "instrument_id = \"T1\"\nexchange_id = \"SHFE\"\nproduct_id = \"t\"\nvolume_multiple = 1\n\
             price_tick = 1.0\nmargin_rate_long = 0.1\nmargin_rate_short = 0.1\ncommission = {}\n\
             limit_rate = 0.1\npre_settlement = 5000.0\nmax_order_volume = 1\n",
        )
        .unwrap();
        let listed = Instrument::from_config(&config).unwrap();
        let mut shard = ShardEngine::new(0, 1, Vec::new(), 20250102, EngineConfig::default());
        // A record (not from the API) whose band holds one price more than a book may.
        let mut wide = listed.clone();
        wide.upper_limit = wide.lower_limit + MAX_BAND_LEVELS * wide.price_tick;
        assert_eq!(shard.add_instrument(wide), Err(RejectCode::InstrumentNotFound));
        let mut inverted = listed.clone();
        inverted.upper_limit = inverted.lower_limit - inverted.price_tick;
        assert_eq!(shard.add_instrument(inverted), Err(RejectCode::InstrumentNotFound));
        assert!(shard.instruments().is_empty());
        assert_eq!(shard.add_instrument(listed), Ok(0));
    }
}
