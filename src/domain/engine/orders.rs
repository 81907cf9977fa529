//! Order commands: insert, cancel, modify, and applying fills to both sides.

use super::Engine;
use crate::domain::book::{Incoming, MatchOutcome};
use crate::domain::command::InsertOrder;
use crate::domain::event::{Event, OrderInfo, Reason, TradeSide};
use crate::domain::ledger::order::LiveOrder;
use crate::domain::ledger::HoldRequest;
use crate::domain::name::{AccountId, ClientOrderId};
use crate::domain::order_checks::{check_order, check_price};
use crate::domain::risk::RejectCode;
use crate::domain::types::*;

/// How many opposite levels FIVELEVEL orders may take.
const FIVE_LEVELS: usize = 5;

impl Engine {
    /// Validates and places a new order; every outcome is reported as events.
    pub(super) fn insert_order(&mut self, ts: TimestampNs, order: &InsertOrder, out: &mut Vec<Event>) {
        let order_id = self.next_order_id;
        match self.place(ts, order_id, order, out) {
            Ok(()) => self.next_order_id += 1,
            Err(code) => out.push(Event::OrderRejected {
                ts,
                account_id: order.account_id,
                client_order_id: order.client_order_id,
                instrument_id: order.instrument_id,
                reason: Reason::from(code),
            }),
        }
    }

    /// The static checks of SPEC §2 in a fixed order (the first failing one is reported).
    fn validate(&self, order: &InsertOrder) -> Result<(u32, u32), RejectCode> {
        let account = self.ledger.slot_of(&order.account_id).ok_or(RejectCode::AccountNotFound)?;
        let instrument = self.instrument_slot(&order.instrument_id).ok_or(RejectCode::InstrumentNotFound)?;
        check_order(&self.instruments[instrument as usize], order)?;
        Ok((account, instrument))
    }

    pub(super) fn check_price(&self, instrument: u32, price: Price) -> Result<(), RejectCode> {
        check_price(&self.instruments[instrument as usize], price)
    }

    fn place(
        &mut self,
        ts: TimestampNs,
        order_id: u64,
        order: &InsertOrder,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectCode> {
        let (account, instrument) = self.validate(order)?;
        // Market-like orders hold at the upper limit (the worst case for either side); LIMIT at
        // its price.
        let hold_price = if order.price_type == PriceType::Limit { order.limit_price } else { None };
        let req = HoldRequest {
            order_id,
            client_order_id: order.client_order_id,
            account,
            instrument,
            direction: order.direction,
            offset: order.offset,
            price_type: order.price_type,
            time_condition: order.time_condition,
            volume_condition: order.volume_condition,
            limit_price: hold_price,
            volume: order.volume,
            insert_time_ns: ts,
        };
        self.ledger.hold(&req, &self.instruments, &self.marks)?;

        let book = &self.books[instrument as usize];
        let opposite = order.direction.opposite();
        let match_limit = match order.price_type {
            PriceType::Limit => order.limit_price,
            PriceType::Any => None,
            PriceType::Best => book.best(opposite),
            PriceType::FiveLevel => book.nth_level_price(opposite, FIVE_LEVELS),
        };
        let rests = order.time_condition != TimeCondition::Ioc && order.price_type != PriceType::Any;
        let info = OrderInfo {
            order_id,
            client_order_id: order.client_order_id,
            account_id: order.account_id,
            exchange_id: self.instruments[instrument as usize].exchange_id,
            instrument_id: self.instruments[instrument as usize].instrument_id,
            direction: order.direction,
            offset: order.offset,
            price_type: order.price_type,
            limit_price: match_limit,
            volume: order.volume,
            time_condition: order.time_condition,
            volume_condition: order.volume_condition,
        };
        if match_limit.is_none() && order.price_type != PriceType::Any {
            // BEST / FIVELEVEL against an empty side: accepted, then ends at once.
            out.push(Event::OrderAccepted { ts, order: info });
            self.end_order(ts, order_id, order.volume, RejectCode::NoCounterparty, out);
            return Ok(());
        }
        let min_fill = match order.volume_condition {
            VolumeCondition::Any => 0,
            VolumeCondition::Min => order.min_volume,
            VolumeCondition::All => order.volume,
        };
        let incoming = Incoming {
            order_id,
            owner: account as u64,
            direction: order.direction,
            limit: match_limit,
            volume: order.volume,
            min_fill,
            rest_remainder: rests,
        };
        self.scratch.fills.clear();
        let outcome = self.books[instrument as usize].submit(&incoming, &mut self.scratch.fills);
        match outcome {
            MatchOutcome::SelfTrade | MatchOutcome::BadPrice => {
                self.ledger.release(order_id, order.volume);
                return Err(if outcome == MatchOutcome::SelfTrade {
                    RejectCode::SelfTrade
                } else {
                    RejectCode::PriceOutOfBand
                });
            }
            MatchOutcome::MinFillNotMet { .. } => {
                out.push(Event::OrderAccepted { ts, order: info });
                self.end_order(ts, order_id, order.volume, RejectCode::NotFilledImmediately, out);
            }
            MatchOutcome::Done { filled, rested, cancelled } => {
                out.push(Event::OrderAccepted { ts, order: info });
                self.apply_fills(ts, instrument, order_id, order.direction, out);
                if rested > 0 && order.price_type != PriceType::Limit {
                    // BEST / FIVELEVEL held at the band edge until the price was known; the
                    // resting remainder now holds at the price it rests at (never more).
                    let reheld = self.ledger.rehold(order_id, match_limit, rested, &self.instruments, &self.marks);
                    debug_assert!(reheld.is_ok(), "re-hold at a better price failed: {reheld:?}");
                }
                if cancelled > 0 {
                    let why = if filled == 0 && order.price_type == PriceType::Any && self.scratch.fills.is_empty() {
                        RejectCode::NoCounterparty
                    } else {
                        RejectCode::NotFilledImmediately
                    };
                    self.end_order(ts, order_id, cancelled, why, out);
                } else {
                    self.scratch.touched.hold(account, instrument, order.offset);
                }
                self.scratch.touched.quote(instrument, filled > 0);
            }
        }
        Ok(())
    }

    /// Releases `volume` unfilled lots of a live order and reports it ended with `why`.
    pub(super) fn end_order(
        &mut self,
        ts: TimestampNs,
        order_id: u64,
        volume: Volume,
        why: RejectCode,
        out: &mut Vec<Event>,
    ) {
        let order = *self.ledger.order(order_id).expect("ending an order the ledger holds");
        self.ledger.release(order_id, volume);
        let account_id = self.ledger.account(order.account).account_id;
        out.push(Event::OrderCancelled {
            ts,
            order_id,
            client_order_id: order.client_order_id,
            account_id,
            instrument_id: self.instruments[order.instrument as usize].instrument_id,
            volume_cancelled: volume,
            reason: Reason::from(why),
        });
        self.scratch.touched.hold(order.account, order.instrument, order.offset);
    }

    /// Applies the fills in scratch (taker `taker_id` against each maker) to both accounts,
    /// open interest, marks and market data, and reports each trade.
    fn apply_fills(
        &mut self,
        ts: TimestampNs,
        instrument: u32,
        taker_id: u64,
        taker_direction: Direction,
        out: &mut Vec<Event>,
    ) {
        let inst_index = instrument as usize;
        for i in 0..self.scratch.fills.len() {
            let fill = self.scratch.fills[i];
            let inst = &self.instruments[inst_index];
            let taker_order = *self.ledger.order(taker_id).expect("taker is live");
            let maker_order = *self.ledger.order(fill.maker_order_id).expect("maker is live");
            let taker = self.ledger.fill(taker_id, fill.price, fill.volume, inst);
            let maker = self.ledger.fill(fill.maker_order_id, fill.price, fill.volume, inst);
            debug_assert_eq!(maker.volume_left, fill.maker_volume_left);
            let oi_change = match (taker.offset == Offset::Open, maker.offset == Offset::Open) {
                (true, true) => fill.volume,
                (false, false) => -fill.volume,
                _ => 0,
            };
            self.open_interest[inst_index] += oi_change;
            self.marks[inst_index] = fill.price;
            self.markets[inst_index].on_trade(fill.price, fill.volume, self.open_interest[inst_index], ts);
            let side = |ledger: &crate::domain::ledger::Ledger,
                        o: &LiveOrder,
                        a: crate::domain::ledger::FillApplied| TradeSide {
                order_id: o.order_id,
                client_order_id: o.client_order_id,
                account_id: ledger.account(o.account).account_id,
                offset: o.offset,
                commission: a.commission,
                close_profit: a.close_profit,
                volume_left: a.volume_left,
            };
            let taker_side = side(&self.ledger, &taker_order, taker);
            let maker_side = side(&self.ledger, &maker_order, maker);
            let (buy, sell) = match taker_direction {
                Direction::Buy => (taker_side, maker_side),
                Direction::Sell => (maker_side, taker_side),
            };
            out.push(Event::Trade {
                ts,
                trade_id: self.next_trade_id,
                exchange_id: inst.exchange_id,
                instrument_id: inst.instrument_id,
                price: fill.price,
                volume: fill.volume,
                aggressor: taker_direction,
                buy,
                sell,
            });
            self.next_trade_id += 1;
            self.scratch.touched.position(taker.account, instrument);
            self.scratch.touched.position(maker.account, instrument);
        }
    }

    /// Finds a live order of `account_id` by exchange or client id.
    fn find_order(
        &self,
        account_id: &AccountId,
        order_id: Option<u64>,
        client_order_id: Option<ClientOrderId>,
    ) -> Result<LiveOrder, RejectCode> {
        let account = self.ledger.slot_of(account_id).ok_or(RejectCode::AccountNotFound)?;
        let id = match (order_id, client_order_id) {
            (Some(id), _) => id,
            (None, Some(client)) => self.ledger.order_by_client(account, &client).ok_or(RejectCode::OrderNotFound)?,
            (None, None) => return Err(RejectCode::OrderNotFound),
        };
        match self.ledger.order(id) {
            Some(o) if o.account == account => Ok(*o),
            // Another account's order is "not found", never "not yours".
            _ => Err(RejectCode::OrderNotFound),
        }
    }

    pub(super) fn cancel_order(
        &mut self,
        ts: TimestampNs,
        account_id: AccountId,
        order_id: Option<u64>,
        client_order_id: Option<ClientOrderId>,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectCode> {
        let order = self.find_order(&account_id, order_id, client_order_id)?;
        self.cancel_live(ts, &order, RejectCode::CancelledByUser, out);
        Ok(())
    }

    /// Takes a live order off its book and ends it with `why`.
    pub(super) fn cancel_live(&mut self, ts: TimestampNs, order: &LiveOrder, why: RejectCode, out: &mut Vec<Event>) {
        let removed = self.books[order.instrument as usize].cancel(order.order_id);
        debug_assert_eq!(removed.map(|r| r.volume_left), Some(order.volume_left));
        self.end_order(ts, order.order_id, order.volume_left, why, out);
        self.scratch.touched.quote(order.instrument, false);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn modify_order(
        &mut self,
        ts: TimestampNs,
        account_id: AccountId,
        order_id: Option<u64>,
        client_order_id: Option<ClientOrderId>,
        new_price: Option<Price>,
        new_volume: Option<Volume>,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectCode> {
        let order = self.find_order(&account_id, order_id, client_order_id)?;
        let instrument = order.instrument;
        // Every live order rests at its limit price (BEST / FIVELEVEL ones are re-held at the
        // price they rested at), so the ledger knows it without a book lookup.
        let resting_price = order.limit_price.ok_or(RejectCode::OrderNotFound)?;
        debug_assert_eq!(self.books[instrument as usize].order(order.order_id).map(|o| o.price), Some(resting_price));
        let price = new_price.unwrap_or(resting_price);
        let volume = new_volume.unwrap_or(order.volume_left);
        if price == resting_price && volume == order.volume_left {
            return Err(RejectCode::InvalidModify);
        }
        if volume < 1 || volume > self.instruments[instrument as usize].max_order_volume {
            return Err(RejectCode::InvalidVolume);
        }
        self.check_price(instrument, price)?;
        let account = order.account;
        if price == resting_price && volume < order.volume_left {
            // A pure decrease keeps its place in the queue.
            let reduced = self.books[instrument as usize].reduce(order.order_id, volume);
            debug_assert!(reduced);
            self.ledger.reduce(order.order_id, volume);
            out.push(modified(ts, &order, account_id, price, volume, true));
            self.scratch.touched.hold(account, instrument, order.offset);
            self.scratch.touched.quote(instrument, false);
            return Ok(());
        }
        // Funds and lots first, then the book; a self-trade refusal puts the old hold back, so a
        // refused modify changes nothing.
        self.ledger.rehold(order.order_id, Some(price), volume, &self.instruments, &self.marks)?;
        self.scratch.fills.clear();
        let outcome = self.books[instrument as usize].reprice(order.order_id, price, volume, &mut self.scratch.fills);
        match outcome {
            Some(MatchOutcome::Done { .. }) => {}
            _ => {
                self.ledger.restore(order);
                return Err(if outcome == Some(MatchOutcome::SelfTrade) {
                    RejectCode::SelfTrade
                } else {
                    RejectCode::OrderNotFound
                });
            }
        }
        out.push(modified(ts, &order, account_id, price, volume, false));
        let traded = !self.scratch.fills.is_empty();
        self.apply_fills(ts, instrument, order.order_id, order.direction, out);
        self.scratch.touched.hold(account, instrument, order.offset);
        self.scratch.touched.quote(instrument, traded);
        Ok(())
    }
}

/// The event of a successful modify.
fn modified(
    ts: TimestampNs,
    order: &LiveOrder,
    account_id: AccountId,
    price: Price,
    volume_left: Volume,
    kept_priority: bool,
) -> Event {
    Event::OrderModified {
        ts,
        order_id: order.order_id,
        client_order_id: order.client_order_id,
        account_id,
        limit_price: Some(price),
        volume_left,
        kept_priority,
    }
}
