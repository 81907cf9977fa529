//! Market data of one instrument, aggregated from its trades and book changes: the DIFF quote,
//! k-line series of every kept period, and a ring of tick snapshots.
//!
//! Pure and deterministic: timestamps arrive with each call, there is no clock. Fixed point
//! throughout. `on_trade` is on the matching hot path: it touches the quote and the newest bar
//! of each series in place and allocates nothing (rings are reserved at construction).

pub mod kline;
pub mod quote;
pub mod ring;
pub mod tick;

pub use kline::{bar_start, kline_period_index, Kline, KlineSeries, CHINA_UTC_OFFSET_NS, KLINE_PERIODS_NS};
pub use quote::{average_price, Quote, DEPTH};
pub use ring::{Ring, RingIter};
pub use tick::Tick;

use crate::domain::book::OrderBook;
use crate::domain::instrument::Instrument;
use crate::domain::types::{Direction, Price, TimestampNs, Volume};

/// Quote, k-lines and ticks of one instrument.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstrumentMarket {
    quote: Quote,
    volume_multiple: i64,
    klines: [KlineSeries; KLINE_PERIODS_NS.len()],
    ticks: Ring<Tick>,
}

impl InstrumentMarket {
    /// Market data for `instrument` at the start of its trading day. Every k-line series keeps
    /// the newest `kline_capacity` bars and the tick ring the newest `tick_capacity` ticks (each
    /// at least one); all of it is reserved here.
    pub fn new(instrument: &Instrument, kline_capacity: usize, tick_capacity: usize) -> Self {
        Self {
            quote: Quote::new(instrument),
            volume_multiple: instrument.volume_multiple,
            klines: std::array::from_fn(|i| KlineSeries::new(KLINE_PERIODS_NS[i], kline_capacity)),
            ticks: Ring::with_capacity(tick_capacity),
        }
    }

    /// Index into `KLINE_PERIODS_NS` of a DIFF chart duration, if it is one we keep.
    pub fn kline_period_index(duration_ns: i64) -> Option<usize> {
        kline_period_index(duration_ns)
    }

    /// One trade of `volume` lots at `price`, after which the open interest is
    /// `open_interest_after`. Updates the quote's day statistics and every k-line series.
    /// A non-positive volume is ignored.
    #[inline]
    pub fn on_trade(&mut self, price: Price, volume: Volume, open_interest_after: Volume, ts: TimestampNs) {
        if volume <= 0 {
            return;
        }
        let open_interest_before = self.quote.open_interest;
        self.quote.apply_trade(price, volume, self.volume_multiple, open_interest_after, ts);
        for series in &mut self.klines {
            series.on_trade(price, volume, open_interest_before, open_interest_after, ts);
        }
    }

    /// Refreshes the quote's five levels of depth from `book`; returns whether any changed
    /// (and then stamps the quote with `ts`).
    pub fn on_book(&mut self, book: &OrderBook, ts: TimestampNs) -> bool {
        let mut bid_price = [None; DEPTH];
        let mut bid_volume = [0; DEPTH];
        let mut ask_price = [None; DEPTH];
        let mut ask_volume = [0; DEPTH];
        let mut n = 0;
        book.for_each_level(Direction::Buy, DEPTH, |price, volume, _| {
            bid_price[n] = Some(price);
            bid_volume[n] = volume;
            n += 1;
        });
        let mut n = 0;
        book.for_each_level(Direction::Sell, DEPTH, |price, volume, _| {
            ask_price[n] = Some(price);
            ask_volume[n] = volume;
            n += 1;
        });
        let changed = self.quote.set_depth(&bid_price, &bid_volume, &ask_price, &ask_volume);
        if changed {
            self.quote.datetime_ns = self.quote.datetime_ns.max(ts);
        }
        changed
    }

    /// Appends a tick snapshot of the current quote stamped `ts`; returns its id.
    pub fn record_tick(&mut self, ts: TimestampNs) -> i64 {
        self.ticks.push(Tick::from_quote(&self.quote, ts))
    }

    /// The day's settlement price (and with it the close, the last price).
    pub fn set_settlement(&mut self, price: Price) {
        self.quote.set_settlement(price);
    }

    /// A new trading day: reference prices, open interest and band from `instrument` (already
    /// rolled with this day's settlement), day statistics reset. K-line and tick history stay.
    pub fn roll_day(&mut self, instrument: &Instrument) {
        self.volume_multiple = instrument.volume_multiple;
        self.quote.roll_day(instrument);
    }

    pub fn quote(&self) -> &Quote {
        &self.quote
    }

    pub fn volume_multiple(&self) -> i64 {
        self.volume_multiple
    }

    /// The series of `KLINE_PERIODS_NS[period_index]`, None for an index out of range.
    pub fn klines(&self, period_index: usize) -> Option<&KlineSeries> {
        self.klines.get(period_index)
    }

    /// The series of a DIFF chart duration in ns, None if that period is not kept.
    pub fn klines_for_duration(&self, duration_ns: i64) -> Option<&KlineSeries> {
        kline_period_index(duration_ns).map(|i| &self.klines[i])
    }

    pub fn ticks(&self) -> &Ring<Tick> {
        &self.ticks
    }
}

#[cfg(test)]
mod tests;
