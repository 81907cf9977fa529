//! Daily settlement, settlement prices and forced liquidation.

use super::Engine;
use crate::domain::command::InsertOrder;
use crate::domain::event::Event;
use crate::domain::ledger::position::Side;
use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use crate::domain::risk::RejectCode;
use crate::domain::types::*;

impl Engine {
    pub(super) fn set_settlement_price(
        &mut self,
        ts: TimestampNs,
        instrument_id: InstrumentId,
        price: Price,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectCode> {
        let slot = self.instrument_slot(&instrument_id).ok_or(RejectCode::InstrumentNotFound)?;
        // The same tick and band rule as order and mark prices, under its own code.
        self.check_price(slot, price).map_err(|_| RejectCode::InvalidSettlementPrice)?;
        self.settlement_prices[slot as usize] = Some(price);
        out.push(Event::SettlementPriceSet { ts, instrument_id: self.instruments[slot as usize].instrument_id, price });
        Ok(())
    }

    /// Settles the trading day: see SPEC §2 and docs/API.md "Settlement".
    pub(super) fn settle(
        &mut self,
        ts: TimestampNs,
        next_trading_day: Option<u32>,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectCode> {
        let next_day = match next_trading_day {
            Some(day) if is_valid_day(day) && day > self.trading_day => day,
            Some(_) => return Err(RejectCode::InvalidTradingDay),
            None => next_weekday(self.trading_day).ok_or(RejectCode::InvalidTradingDay)?,
        };
        let settled_day = self.trading_day;
        // 1. Settlement price per instrument: the operator's, else the day's last (mark) price.
        let prices: Vec<Price> =
            (0..self.instruments.len()).map(|i| self.settlement_prices[i].unwrap_or(self.marks[i])).collect();
        // 2. Day orders end; so do CLOSETODAY orders, whose today lots are about to become his.
        for order in self.ledger.live_orders_sorted() {
            if order.time_condition == TimeCondition::Gfd || order.offset == Offset::CloseToday {
                self.cancel_live(ts, &order, RejectCode::CancelledAtSettlement, out);
            }
        }
        // 3. Statements at the settlement prices, then realise and roll every account.
        // The day's close: the last trade price (the quote carries pre_close until a trade).
        let last_prices: Vec<Price> = self.markets.iter().map(|m| m.quote().last_price).collect();
        self.marks.copy_from_slice(&prices);
        for slot in 0..self.ledger.accounts().len() as u32 {
            let statement = self.ledger.settle_with_statement(slot, &self.instruments, &prices, settled_day);
            self.statements.push(statement.clone());
            out.push(Event::Settlement { ts, statement });
            self.scratch.touched.account(slot);
            for instrument in self.ledger.account(slot).positions.iter().map(|p| p.instrument).collect::<Vec<_>>() {
                self.scratch.touched.position(slot, instrument);
            }
        }
        self.ledger.roll_close_holds();
        // 4. New day per instrument: band from the settlement price; orders outside it end.
        for (i, &price) in prices.iter().enumerate() {
            let oi = self.open_interest[i];
            self.instruments[i].roll_day(price, last_prices[i], oi);
            self.refresh_depth(i, ts);
            self.markets[i].set_settlement(price);
            // Publish the settled day's close and settlement before the quote rolls over.
            out.push(Event::QuoteUpdated { ts, quote: *self.markets[i].quote() });
            let (lower, upper) = (self.instruments[i].lower_limit, self.instruments[i].upper_limit);
            let removed = self.books[i].rebase(lower, upper);
            for resting in removed {
                let order = *self.ledger.order(resting.order_id).expect("resting order is live");
                self.end_order(ts, order.order_id, order.volume_left, RejectCode::OutsideNewPriceBand, out);
            }
            self.markets[i].roll_day(&self.instruments[i]);
            self.refresh_depth(i, ts);
            self.settlement_prices[i] = None;
            // The new day's quote (new limits and reference prices); no trade, so no tick.
            out.push(Event::QuoteUpdated { ts, quote: *self.markets[i].quote() });
            // Orders outside the new band left the book: depth is re-read at the flush.
            self.scratch.touched.quote(i as u32, false);
        }
        // 5. Accounts that cannot carry their positions into the next day.
        for slot in 0..self.ledger.accounts().len() as u32 {
            let snap = self.ledger.snapshot(slot, &self.instruments, &self.marks);
            if snap.risk_ratio >= 1.0 {
                out.push(Event::ForcedLiquidationRequired {
                    ts,
                    trading_day: next_day,
                    account_id: snap.account_id,
                    risk_ratio: snap.risk_ratio,
                });
            }
        }
        self.trading_day = next_day;
        out.push(Event::TradingDayAdvanced { ts, settled_day, trading_day: next_day });
        Ok(())
    }

    /// Re-reads an instrument's depth into its quote if its book changed (quotes sent in the
    /// middle of a command must show the book as it is then).
    fn refresh_depth(&mut self, i: usize, ts: TimestampNs) {
        if self.books[i].take_depth_changed() {
            self.markets[i].on_book(&self.books[i], ts);
        }
    }

    /// Cancels the account's live orders and sends market (ANY + IOC) close orders for every
    /// position it holds; what finds no counterparty stays open and is reported as cancelled.
    pub(super) fn force_liquidate(
        &mut self,
        ts: TimestampNs,
        account_id: AccountId,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectCode> {
        let slot = self.ledger.slot_of(&account_id).ok_or(RejectCode::AccountNotFound)?;
        let mut closes = Vec::new();
        for p in &self.ledger.account(slot).positions {
            let inst = &self.instruments[p.instrument as usize];
            let lots = |side| (p.bucket(side, false).volume, p.bucket(side, true).volume);
            let orders = closing_orders(inst, lots(Side::Long), lots(Side::Short));
            closes.extend(
                orders.into_iter().map(|(direction, offset, volume)| (p.instrument, direction, offset, volume)),
            );
        }
        if closes.is_empty() {
            return Err(RejectCode::NothingToLiquidate);
        }
        // Refusal is decided before anything changes; from here on the account's orders go.
        for order in self.ledger.live_orders_sorted().into_iter().filter(|o| o.account == slot) {
            self.cancel_live(ts, &order, RejectCode::ForcedLiquidation, out);
        }
        // The account is frozen for new orders only by its owner's status; liquidation orders go
        // through the normal path as closes, which are never refused for funds.
        let status = self.ledger.account(slot).status;
        self.ledger.set_status(slot, crate::domain::ledger::account::AccountStatus::Active);
        for (instrument, direction, offset, lots) in closes {
            let instrument_id = self.instruments[instrument as usize].instrument_id;
            let client = ClientOrderId::new(&format!("FORCE_{}", self.next_order_id))
                .expect("\"FORCE_\" and a u64 fit in 63 bytes");
            let order = market_close(account_id, client, instrument_id, direction, offset, lots);
            self.insert_order(ts, &order, out);
        }
        self.ledger.set_status(slot, status);
        Ok(())
    }
}

/// The market orders that close a position of `long` and `short` lots (his, today each):
/// CLOSE and CLOSETODAY apart where the exchange keeps them apart (SHFE, INE), else CLOSE for
/// all; each at most the instrument's largest order. As (direction, offset, lots).
pub fn closing_orders(
    inst: &crate::domain::instrument::Instrument,
    long: (Volume, Volume),
    short: (Volume, Volume),
) -> Vec<(Direction, Offset, Volume)> {
    let strict = inst.exchange_id.has_strict_close_today();
    let mut orders = Vec::new();
    for (direction, (his, today)) in [(Direction::Sell, long), (Direction::Buy, short)] {
        let parts = if strict {
            vec![(Offset::Close, his), (Offset::CloseToday, today)]
        } else {
            vec![(Offset::Close, his + today)]
        };
        for (offset, mut volume) in parts {
            while volume > 0 {
                let lots = volume.min(inst.max_order_volume.max(1));
                orders.push((direction, offset, lots));
                volume -= lots;
            }
        }
    }
    orders
}

/// A market (ANY + IOC) order: what forced liquidation sends.
pub fn market_close(
    account_id: AccountId,
    client_order_id: ClientOrderId,
    instrument_id: InstrumentId,
    direction: Direction,
    offset: Offset,
    volume: Volume,
) -> InsertOrder {
    InsertOrder {
        account_id,
        client_order_id,
        instrument_id,
        direction,
        offset,
        price_type: PriceType::Any,
        limit_price: None,
        volume,
        time_condition: TimeCondition::Ioc,
        volume_condition: VolumeCondition::Any,
        min_volume: 0,
    }
}

/// Whether `yyyymmdd` is a real calendar date.
pub fn is_valid_day(day: u32) -> bool {
    let (y, m, d) = (day / 10_000, day / 100 % 100, day % 100);
    (1970..=9999).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 for a valid yyyymmdd (Howard Hinnant's civil calendar arithmetic).
pub(crate) fn days_from_civil(day: u32) -> i64 {
    let (y, m, d) = ((day / 10_000) as i64, (day / 100 % 100) as i64, (day % 100) as i64);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn civil_from_days(days: i64) -> u32 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y * 10_000 + m * 100 + d) as u32
}

/// The next Monday-to-Friday date after `day` (exchange holidays are the operator's to give).
pub fn next_weekday(day: u32) -> Option<u32> {
    if !is_valid_day(day) {
        return None;
    }
    let mut days = days_from_civil(day) + 1;
    // 1970-01-01 was a Thursday: weekday index 0 = Thursday ... 2 = Saturday, 3 = Sunday.
    while matches!(days.rem_euclid(7), 2 | 3) {
        days += 1;
    }
    Some(civil_from_days(days))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(next_weekday(20241202), Some(20241203)); // Mon -> Tue
        assert_eq!(next_weekday(20241206), Some(20241209)); // Fri -> Mon
        assert_eq!(next_weekday(20241231), Some(20250101));
        assert_eq!(next_weekday(20240228), Some(20240229));
        assert_eq!(next_weekday(20241332), None);
        assert!(!is_valid_day(20230229));
        assert!(is_valid_day(20240229));
    }
}
