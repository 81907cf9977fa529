//! K-line (OHLC bar) series built from trades.
//!
//! Bars are aligned to multiples of their period in China time (UTC+8). The intraday periods
//! all divide eight hours, so their boundaries are the same as epoch-aligned ones; the daily bar
//! starts at China midnight (calendar day, not the exchange trading day that begins with the
//! night session). Periods without trades get no bar.

use super::ring::Ring;
use crate::domain::types::{Price, TimestampNs, Volume};
use serde::{Deserialize, Serialize};

const SECOND_NS: i64 = 1_000_000_000;

/// The bar periods kept for every instrument, in ns: 3 s, 1 min, 5 min, 15 min, 30 min, 1 h,
/// 1 day. DIFF `set_chart` durations are these numbers.
pub const KLINE_PERIODS_NS: [i64; 7] = [
    3 * SECOND_NS,
    60 * SECOND_NS,
    300 * SECOND_NS,
    900 * SECOND_NS,
    1800 * SECOND_NS,
    3600 * SECOND_NS,
    86_400 * SECOND_NS,
];

/// China Standard Time is UTC+8 all year (no daylight saving).
pub const CHINA_UTC_OFFSET_NS: i64 = 8 * 3600 * SECOND_NS;

/// Index into `KLINE_PERIODS_NS` of a DIFF duration, if it is one we keep.
pub fn kline_period_index(duration_ns: i64) -> Option<usize> {
    KLINE_PERIODS_NS.iter().position(|&p| p == duration_ns)
}

/// Start of the bar of `period_ns` that contains `ts`: the latest multiple of the period in
/// China time at or before `ts`. Saturates at the ends of the i64 range instead of overflowing.
pub fn bar_start(ts: TimestampNs, period_ns: i64) -> TimestampNs {
    debug_assert!(period_ns > 0);
    let period = period_ns.max(1) as i128;
    let offset = CHINA_UTC_OFFSET_NS as i128;
    let start = (ts as i128 + offset).div_euclid(period) * period - offset;
    start.clamp(i64::MIN as i128, i64::MAX as i128) as TimestampNs
}

/// One bar, as DIFF's `klines/<sym>/<dur>/data/<id>`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Kline {
    /// Bar start, ns since the epoch.
    pub datetime_ns: TimestampNs,
    #[serde(with = "crate::domain::types::fixed4")]
    pub open: Price,
    #[serde(with = "crate::domain::types::fixed4")]
    pub high: Price,
    #[serde(with = "crate::domain::types::fixed4")]
    pub low: Price,
    #[serde(with = "crate::domain::types::fixed4")]
    pub close: Price,
    pub volume: Volume,
    /// Open interest before the bar's first trade.
    pub open_oi: Volume,
    /// Open interest after the bar's last trade.
    pub close_oi: Volume,
}

/// The bars of one period, newest last, in a bounded ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KlineSeries {
    period_ns: i64,
    /// Exclusive end of the newest bar; i64::MIN while there is none.
    bar_end_ns: TimestampNs,
    bars: Ring<Kline>,
}

impl KlineSeries {
    /// An empty series of `period_ns` bars keeping the newest `capacity` (at least one).
    pub fn new(period_ns: i64, capacity: usize) -> Self {
        assert!(period_ns > 0, "k-line period must be positive");
        // At least two: the history writes a bar when the next one opens, so the ring must
        // still hold the closed bar then (server::history).
        Self { period_ns, bar_end_ns: TimestampNs::MIN, bars: Ring::with_capacity(capacity.max(2)) }
    }

    pub fn period_ns(&self) -> i64 {
        self.period_ns
    }

    /// The bars with their ids (`bars().iter()`, `last_id()`, `get(id)`, ...).
    pub fn bars(&self) -> &Ring<Kline> {
        &self.bars
    }

    /// Folds a trade into the current bar, or starts the next bar when `ts` has reached its
    /// end. A trade stamped before the current bar (clock skew, replayed input) joins the
    /// current bar: bars never reorder and the call never fails.
    #[inline]
    pub fn on_trade(
        &mut self,
        price: Price,
        volume: Volume,
        open_interest_before: Volume,
        open_interest_after: Volume,
        ts: TimestampNs,
    ) {
        if ts < self.bar_end_ns {
            if let Some(bar) = self.bars.last_mut() {
                bar.high = bar.high.max(price);
                bar.low = bar.low.min(price);
                bar.close = price;
                bar.volume = bar.volume.saturating_add(volume);
                bar.close_oi = open_interest_after;
                return;
            }
        }
        let start = bar_start(ts, self.period_ns);
        self.bar_end_ns = start.saturating_add(self.period_ns);
        self.bars.push(Kline {
            datetime_ns: start,
            open: price,
            high: price,
            low: price,
            close: price,
            volume,
            open_oi: open_interest_before,
            close_oi: open_interest_after,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-12-02 00:00:00 China time = 2024-12-01 16:00:00 UTC.
    const CHINA_MIDNIGHT_NS: i64 = 1_733_068_800 * SECOND_NS;

    #[test]
    fn periods_and_lookup() {
        assert_eq!(KLINE_PERIODS_NS[1], 60_000_000_000);
        assert_eq!(kline_period_index(86_400_000_000_000), Some(6));
        assert_eq!(kline_period_index(3_000_000_000), Some(0));
        assert_eq!(kline_period_index(0), None);
        assert_eq!(kline_period_index(120_000_000_000), None);
    }

    #[test]
    fn alignment_in_china_time() {
        let t = CHINA_MIDNIGHT_NS + (9 * 3600 + 31 * 60 + 7) * SECOND_NS + 123; // 09:31:07
        assert_eq!(bar_start(t, 60 * SECOND_NS), CHINA_MIDNIGHT_NS + (9 * 3600 + 31 * 60) * SECOND_NS);
        assert_eq!(bar_start(t, 3 * SECOND_NS), CHINA_MIDNIGHT_NS + (9 * 3600 + 31 * 60 + 6) * SECOND_NS);
        assert_eq!(bar_start(t, 3600 * SECOND_NS), CHINA_MIDNIGHT_NS + 9 * 3600 * SECOND_NS);
        assert_eq!(bar_start(t, 86_400 * SECOND_NS), CHINA_MIDNIGHT_NS);
        // Intraday periods: China alignment equals epoch alignment.
        for &p in &KLINE_PERIODS_NS[..6] {
            assert_eq!(bar_start(t, p), t - t.rem_euclid(p));
        }
        // 23:59:59.999999999 is still the same China day; one ns later is the next.
        let day = 86_400 * SECOND_NS;
        assert_eq!(bar_start(CHINA_MIDNIGHT_NS + day - 1, day), CHINA_MIDNIGHT_NS);
        assert_eq!(bar_start(CHINA_MIDNIGHT_NS + day, day), CHINA_MIDNIGHT_NS + day);
        // Extremes saturate instead of overflowing.
        assert_eq!(bar_start(i64::MIN, day), i64::MIN);
        let top = bar_start(i64::MAX, day);
        assert!(i64::MAX - top < day);
        assert_eq!((top as i128 + CHINA_UTC_OFFSET_NS as i128) % day as i128, 0);
    }
}
