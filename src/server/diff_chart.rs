//! DIFF chart series of one instrument, built on the instrument's shard: k-lines
//! (`klines/<symbol>/<duration ns>`) and ticks (`ticks/<symbol>`), each
//! `{"last_id": N, "data": {"<id>": {...}}}`. History for `set_chart` (the newest bars or ticks
//! the shard keeps) and, after each commit group that traded, the bars and ticks it changed,
//! published on the series' topic to the sessions whose charts show it.

use crate::domain::market_data::kline::{Kline, KLINE_PERIODS_NS};
use crate::domain::market_data::tick::Tick;
use crate::domain::market_data::InstrumentMarket;
use crate::domain::types::{money_to_f64, price_to_f64};
use serde_json::{json, Map, Value};

/// Most ticks one live patch carries (a group that made more sends the newest).
const MAX_TICKS_PER_PATCH: i64 = 64;

/// The fan-out topic of a k-line series.
pub fn kline_topic(symbol: &str, duration_ns: i64) -> String {
    format!("klines/{symbol}/{duration_ns}")
}

/// The fan-out topic of a tick series.
pub fn tick_topic(symbol: &str) -> String {
    format!("ticks/{symbol}")
}

pub fn diff_bar(bar: &Kline) -> Value {
    json!({
        "datetime": bar.datetime_ns,
        "open": price_to_f64(bar.open),
        "high": price_to_f64(bar.high),
        "low": price_to_f64(bar.low),
        "close": price_to_f64(bar.close),
        "volume": bar.volume,
        "open_oi": bar.open_oi,
        "close_oi": bar.close_oi,
    })
}

/// A tick; prices it does not have (an empty level) are left out, which DIFF clients read as
/// "no value".
pub fn diff_tick(tick: &Tick) -> Value {
    let mut v = Map::new();
    v.insert("datetime".into(), json!(tick.datetime_ns));
    v.insert("last_price".into(), json!(price_to_f64(tick.last_price)));
    for (name, price) in [("average", tick.average), ("highest", tick.highest), ("lowest", tick.lowest)] {
        if let Some(price) = price {
            v.insert(name.into(), json!(price_to_f64(price)));
        }
    }
    for (side, prices, volumes) in
        [("bid", &tick.bid_price, &tick.bid_volume), ("ask", &tick.ask_price, &tick.ask_volume)]
    {
        for (i, (price, volume)) in prices.iter().zip(volumes.iter()).enumerate() {
            if let Some(price) = price {
                v.insert(format!("{side}_price{}", i + 1), json!(price_to_f64(*price)));
                v.insert(format!("{side}_volume{}", i + 1), json!(volume));
            }
        }
    }
    v.insert("volume".into(), json!(tick.volume));
    v.insert("amount".into(), json!(money_to_f64(tick.amount)));
    v.insert("open_interest".into(), json!(tick.open_interest));
    Value::Object(v)
}

/// The newest `count` bars of a series kept for `duration_ns` (None: not a kept duration), as
/// `{"last_id", "data"}` with the first id shown (`-1` and empty data when there is none).
pub fn kline_history(market: &InstrumentMarket, duration_ns: i64, count: i64) -> Option<(i64, Value)> {
    let series = market.klines_for_duration(duration_ns)?;
    let bars = series.bars();
    Some(history(bars.first_id(), bars.last_id(), count, |from| {
        bars.iter_from(from).map(|(id, bar)| (id, diff_bar(bar))).collect()
    }))
}

/// The newest `count` ticks, like [`kline_history`].
pub fn tick_history(market: &InstrumentMarket, count: i64) -> (i64, Value) {
    let ticks = market.ticks();
    history(ticks.first_id(), ticks.last_id(), count, |from| {
        ticks.iter_from(from).map(|(id, tick)| (id, diff_tick(tick))).collect()
    })
}

/// Puts `older` (oldest first, each with its id) into a history `series` built by
/// [`kline_history`] or [`tick_history`] and returns the new first id.
pub fn prepend(series: &mut Value, from_id: i64, older: Vec<(i64, Value)>) -> i64 {
    let Some(data) = series.get_mut("data").and_then(Value::as_object_mut) else { return from_id };
    let first = older.first().map_or(from_id, |(id, _)| *id);
    for (id, v) in older {
        data.insert(id.to_string(), v);
    }
    first.min(from_id)
}

fn history(first_id: i64, last_id: i64, count: i64, items: impl Fn(i64) -> Vec<(i64, Value)>) -> (i64, Value) {
    if last_id < first_id || last_id < 0 {
        return (-1, json!({"last_id": -1, "data": {}}));
    }
    let from = (last_id + 1 - count.max(1)).max(first_id);
    let data: Map<String, Value> = items(from).into_iter().map(|(id, v)| (id.to_string(), v)).collect();
    (from, json!({"last_id": last_id, "data": data}))
}

/// What of an instrument's series was last published, so each group sends only what changed.
#[derive(Clone, Debug)]
pub struct ChartCursor {
    /// Last tick id sent.
    tick: i64,
    /// Per kept period: the newest bar id sent (it may still change, so it is sent again).
    bars: [i64; KLINE_PERIODS_NS.len()],
}

impl ChartCursor {
    /// A cursor just before the series' newest tick and bars: the first call sends those (what
    /// the group that made it published changed), nothing older.
    pub fn before_last(market: &InstrumentMarket) -> Self {
        let mut bars = [-1; KLINE_PERIODS_NS.len()];
        for (i, bars) in bars.iter_mut().enumerate() {
            *bars = market.klines(i).map_or(-1, |s| s.bars().last_id());
        }
        Self { tick: market.ticks().last_id() - 1, bars }
    }

    /// The live patches of `symbol` since the last call, by topic: the new ticks, and per
    /// period the bar last sent (it may have changed) and any newer ones.
    pub fn patches(&mut self, symbol: &str, market: &InstrumentMarket) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let ticks = market.ticks();
        // Every traded step records a tick: no new tick, no trade, no bar changed.
        if ticks.last_id() > self.tick {
            let from = (self.tick + 1).max(ticks.last_id() + 1 - MAX_TICKS_PER_PATCH).max(ticks.first_id());
            let data: Map<String, Value> =
                ticks.iter_from(from).map(|(id, tick)| (id.to_string(), diff_tick(tick))).collect();
            self.tick = ticks.last_id();
            let patch = json!({"ticks": {symbol: {"last_id": self.tick, "data": data}}});
            out.push((tick_topic(symbol), patch));
        } else {
            return out;
        }
        for (i, sent) in self.bars.iter_mut().enumerate() {
            let Some(series) = market.klines(i) else { continue };
            let bars = series.bars();
            if bars.last_id() < 0 {
                continue;
            }
            let from = (*sent).max(bars.last_id() - 1).max(bars.first_id());
            let data: Map<String, Value> =
                bars.iter_from(from).map(|(id, bar)| (id.to_string(), diff_bar(bar))).collect();
            *sent = bars.last_id();
            let duration = KLINE_PERIODS_NS[i];
            let patch = json!({"klines": {symbol: {duration.to_string(): {"last_id": *sent, "data": data}}}});
            out.push((kline_topic(symbol, duration), patch));
        }
        out
    }
}
