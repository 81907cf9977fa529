//! The instruments file in Shinny's JSON format, which tqsdk fetches from its `_ins_url`
//! before it trusts any symbol: one object keyed by `EXCHANGE.symbol`. tqsdk needs
//! `price_tick`, `price_decs`, `volume_multiple` and `expired`; the rest is what its quote
//! objects show (margin and commission per lot, delivery date, trading hours).

use crate::domain::engine::days_from_civil;
use crate::domain::instrument::{Instrument, InstrumentStatus};
use crate::domain::types::{MONEY_SCALE, PRICE_SCALE, RATE_SCALE};
use serde_json::{json, Map, Value};

/// Decimal places needed to write `price_tick` (fixed point, 1/PRICE_SCALE) exactly.
fn price_decimals(price_tick: i64) -> u32 {
    let mut decimals = 0;
    let mut scale = PRICE_SCALE;
    while scale > 1 && price_tick % scale != 0 {
        scale /= 10;
        decimals += 1;
    }
    decimals
}

/// Expiry as epoch seconds: the 15th of the delivery month at 15:00 Beijing time (07:00 UTC),
/// the usual last trading day of Chinese futures; 0 when the config gives no delivery month.
fn expire_seconds(year: Option<i32>, month: Option<u32>) -> f64 {
    let (Some(year), Some(month)) = (year, month) else { return 0.0 };
    if !(1..=12).contains(&month) || !(1970..=9999).contains(&year) {
        return 0.0;
    }
    let days = days_from_civil(year as u32 * 10_000 + month * 100 + 15);
    (days * 86_400 + 7 * 3_600) as f64
}

/// One instrument's entry.
fn entry(i: &Instrument) -> Value {
    let symbol = format!("{}.{}", i.exchange_id.as_str(), i.instrument_id.as_str());
    let price = |p: i64| p as f64 / PRICE_SCALE as f64;
    let money = |m: i64| m as f64 / MONEY_SCALE as f64;
    let rate = |r: i64| r as f64 / RATE_SCALE as f64;
    // Per lot at the previous settlement price, as Shinny's file quotes them.
    let lot_value = price(i.pre_settlement) * i.volume_multiple as f64;
    let margin = lot_value * rate(i.margin_rate_long.max(i.margin_rate_short));
    let commission = money(i.commission.open_per_lot) + lot_value * rate(i.commission.open_rate);
    json!({
        "class": "FUTURE",
        "instrument_id": symbol,
        "exchange_id": i.exchange_id.as_str(),
        "ins_id": i.instrument_id.as_str(),
        "product_id": i.product_id,
        "volume_multiple": i.volume_multiple,
        "price_tick": price(i.price_tick),
        "price_decs": price_decimals(i.price_tick),
        "expired": i.status == InstrumentStatus::Delisted,
        // tqsdk reads these as numbers: 0 when the config names no delivery month.
        "delivery_year": i.delivery_year.unwrap_or(0),
        "delivery_month": i.delivery_month.unwrap_or(0),
        "expire_datetime": expire_seconds(i.delivery_year, i.delivery_month),
        "max_limit_order_volume": i.max_order_volume,
        "max_market_order_volume": i.max_order_volume,
        "min_limit_order_volume": 1,
        "min_market_order_volume": 1,
        "margin": margin,
        "commission": commission,
        "pre_settlement": price(i.pre_settlement),
        "pre_close": price(i.pre_close),
        "pre_open_interest": i.pre_open_interest,
        "upper_limit": price(i.upper_limit),
        "lower_limit": price(i.lower_limit),
        "trading_time": {"day": [["09:00:00", "10:15:00"], ["10:30:00", "11:30:00"], ["13:30:00", "15:00:00"]], "night": []},
    })
}

/// The whole file, serialized once at start-up (instruments are fixed for a server's life).
pub fn instruments_file(instruments: &[Instrument]) -> Vec<u8> {
    let map: Map<String, Value> = instruments
        .iter()
        .map(|i| (format!("{}.{}", i.exchange_id.as_str(), i.instrument_id.as_str()), entry(i)))
        .collect();
    serde_json::to_vec(&Value::Object(map)).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_of_ticks() {
        assert_eq!(price_decimals(10 * PRICE_SCALE), 0);
        assert_eq!(price_decimals(PRICE_SCALE), 0);
        assert_eq!(price_decimals(PRICE_SCALE / 5), 1); // 0.2
        assert_eq!(price_decimals(PRICE_SCALE / 50), 2); // 0.02
        assert_eq!(price_decimals(1), 4);
    }

    #[test]
    fn expiry_dates() {
        // 2025-01-15 07:00:00 UTC
        assert_eq!(expire_seconds(Some(2025), Some(1)), 1_736_924_400.0);
        // 2024-03-15 07:00:00 UTC (after a leap day)
        assert_eq!(expire_seconds(Some(2024), Some(3)), 1_710_486_000.0);
        assert_eq!(expire_seconds(None, Some(3)), 0.0);
        assert_eq!(expire_seconds(Some(2024), Some(13)), 0.0);
    }
}
