//! The DIFF quote of one instrument: five levels of depth plus the day's trade statistics.

use crate::domain::instrument::{ExchangeId, Instrument};
use crate::domain::name::InstrumentId;
use crate::domain::types::{notional, Money, Price, TimestampNs, Volume};
use serde::{Deserialize, Serialize};

/// Levels of depth shown on each side.
pub const DEPTH: usize = 5;

/// Every field of a DIFF `quotes/<EXCHANGE.sym>` object, in fixed point.
///
/// Depth arrays are indexed from the best level: `ask_price[0]` is DIFF's `ask_price1`. A
/// missing level has price None and volume 0. Before the day's first trade `last_price` is
/// `pre_close` (so marking positions always has a price) while `open`, `highest`, `lowest` and
/// `average` are None; `close` and `settlement` stay None until the day's settlement.
/// `volume` counts each matched lot once (one-sided, as Chinese exchanges report it).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Quote {
    pub instrument_id: InstrumentId,
    pub exchange_id: ExchangeId,
    /// Time of the last trade or depth change (ns since the epoch); 0 before any.
    pub datetime_ns: TimestampNs,
    #[serde(with = "crate::domain::types::fixed4_opt_array")]
    pub ask_price: [Option<Price>; DEPTH],
    pub ask_volume: [Volume; DEPTH],
    #[serde(with = "crate::domain::types::fixed4_opt_array")]
    pub bid_price: [Option<Price>; DEPTH],
    pub bid_volume: [Volume; DEPTH],
    #[serde(with = "crate::domain::types::fixed4")]
    pub last_price: Price,
    #[serde(with = "crate::domain::types::fixed4_opt")]
    pub highest: Option<Price>,
    #[serde(with = "crate::domain::types::fixed4_opt")]
    pub lowest: Option<Price>,
    #[serde(with = "crate::domain::types::fixed4_opt")]
    pub open: Option<Price>,
    /// The day's close, set with the settlement price.
    #[serde(with = "crate::domain::types::fixed4_opt")]
    pub close: Option<Price>,
    /// Volume-weighted average trade price of the day: amount / volume / multiple, rounded to
    /// the nearest price unit (not to the tick).
    #[serde(with = "crate::domain::types::fixed4_opt")]
    pub average: Option<Price>,
    /// Lots traded today.
    pub volume: Volume,
    /// Turnover today: sum of price x multiple x lots.
    #[serde(with = "crate::domain::types::fixed4")]
    pub amount: Money,
    pub open_interest: Volume,
    pub pre_open_interest: Volume,
    #[serde(with = "crate::domain::types::fixed4")]
    pub pre_close: Price,
    #[serde(with = "crate::domain::types::fixed4")]
    pub pre_settlement: Price,
    #[serde(with = "crate::domain::types::fixed4_opt")]
    pub settlement: Option<Price>,
    #[serde(with = "crate::domain::types::fixed4")]
    pub upper_limit: Price,
    #[serde(with = "crate::domain::types::fixed4")]
    pub lower_limit: Price,
}

/// `amount / (volume x multiple)` rounded half away from zero; None when nothing traded.
pub fn average_price(amount: Money, volume: Volume, volume_multiple: i64) -> Option<Price> {
    let units = volume.checked_mul(volume_multiple).filter(|&u| u > 0)?;
    let half = units / 2;
    let rounded = if amount >= 0 { amount.saturating_add(half) / units } else { amount.saturating_sub(half) / units };
    Some(rounded)
}

impl Quote {
    /// The quote at the start of a trading day: no trades, no depth.
    pub fn new(instrument: &Instrument) -> Self {
        let mut quote = Quote {
            instrument_id: instrument.instrument_id,
            exchange_id: instrument.exchange_id,
            datetime_ns: 0,
            ask_price: [None; DEPTH],
            ask_volume: [0; DEPTH],
            bid_price: [None; DEPTH],
            bid_volume: [0; DEPTH],
            last_price: instrument.pre_close,
            highest: None,
            lowest: None,
            open: None,
            close: None,
            average: None,
            volume: 0,
            amount: 0,
            open_interest: instrument.pre_open_interest,
            pre_open_interest: instrument.pre_open_interest,
            pre_close: instrument.pre_close,
            pre_settlement: instrument.pre_settlement,
            settlement: None,
            upper_limit: instrument.upper_limit,
            lower_limit: instrument.lower_limit,
        };
        quote.roll_day(instrument);
        quote
    }

    /// Folds one trade into the day's statistics. `volume` must be positive.
    #[inline]
    pub fn apply_trade(
        &mut self,
        price: Price,
        volume: Volume,
        volume_multiple: i64,
        open_interest_after: Volume,
        ts: TimestampNs,
    ) {
        self.last_price = price;
        self.highest = Some(self.highest.map_or(price, |h| h.max(price)));
        self.lowest = Some(self.lowest.map_or(price, |l| l.min(price)));
        if self.open.is_none() {
            self.open = Some(price);
        }
        self.volume = self.volume.saturating_add(volume);
        self.amount = self.amount.saturating_add(notional(price, volume_multiple, volume));
        self.average = average_price(self.amount, self.volume, volume_multiple);
        self.open_interest = open_interest_after;
        self.datetime_ns = self.datetime_ns.max(ts);
    }

    /// Replaces the depth; returns whether any level differed.
    pub fn set_depth(
        &mut self,
        bid_price: &[Option<Price>; DEPTH],
        bid_volume: &[Volume; DEPTH],
        ask_price: &[Option<Price>; DEPTH],
        ask_volume: &[Volume; DEPTH],
    ) -> bool {
        let changed = self.bid_price != *bid_price
            || self.bid_volume != *bid_volume
            || self.ask_price != *ask_price
            || self.ask_volume != *ask_volume;
        if changed {
            self.bid_price = *bid_price;
            self.bid_volume = *bid_volume;
            self.ask_price = *ask_price;
            self.ask_volume = *ask_volume;
        }
        changed
    }

    /// Records the day's settlement price; the close becomes the last price.
    pub fn set_settlement(&mut self, price: Price) {
        self.settlement = Some(price);
        self.close = Some(self.last_price);
    }

    /// Starts a new trading day from the (already rolled) instrument: reference prices and band
    /// from it, day statistics cleared, last price back to the new pre_close. Depth is left as
    /// it is; the caller refreshes it from the rebased book.
    pub fn roll_day(&mut self, instrument: &Instrument) {
        self.pre_settlement = instrument.pre_settlement;
        self.pre_close = instrument.pre_close;
        self.pre_open_interest = instrument.pre_open_interest;
        self.open_interest = instrument.pre_open_interest;
        self.upper_limit = instrument.upper_limit;
        self.lower_limit = instrument.lower_limit;
        self.last_price = instrument.pre_close;
        self.highest = None;
        self.lowest = None;
        self.open = None;
        self.close = None;
        self.average = None;
        self.settlement = None;
        self.volume = 0;
        self.amount = 0;
    }
}
