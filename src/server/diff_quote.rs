//! A quote as DIFF clients read it (`quotes/<EXCHANGE.symbol>`), made from the server's quote
//! JSON (`GET /api/market/tick/{id}`): numbered depth fields instead of arrays, the full symbol
//! as `instrument_id`, and `datetime` as Beijing wall-clock text, which tqsdk needs non-empty
//! before `get_quote` returns. A price the quote does not have (an empty depth level, no trade
//! yet) is `"-"`, never null: under `quotes` tqsdk ignores nulls (it would keep showing the old
//! price) and reads `"-"` as NaN; a null would also delete the key for a merge-patch client.

use crate::domain::engine::civil_from_days;
use serde_json::{Map, Value};

/// Beijing time is UTC+8 all year (no daylight saving).
const BEIJING_OFFSET_NS: i64 = 8 * 3_600 * 1_000_000_000;

/// `ns` since the epoch as `"YYYY-MM-DD HH:MM:SS.ffffff"` in Beijing time.
pub fn beijing_datetime(ns: i64) -> String {
    let local = ns + BEIJING_OFFSET_NS;
    let secs = local.div_euclid(1_000_000_000);
    let micros = local.rem_euclid(1_000_000_000) / 1_000;
    let day = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = (day / 10_000, day / 100 % 100, day % 100);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{micros:06}",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The DIFF quote for `symbol` from the server's quote JSON. `now_ns` stands in for the time of
/// a quote that has not changed yet today (its time is 0).
pub fn diff_quote(symbol: &str, quote: &Value, now_ns: i64) -> Value {
    let mut out = Map::new();
    out.insert("instrument_id".into(), Value::from(symbol));
    let ns = quote.get("datetime_ns").and_then(Value::as_i64).filter(|&t| t > 0).unwrap_or(now_ns);
    out.insert("datetime".into(), Value::from(beijing_datetime(ns)));
    for side in ["ask", "bid"] {
        for field in ["price", "volume"] {
            let levels = quote.get(format!("{side}_{field}")).and_then(Value::as_array);
            for (i, level) in levels.into_iter().flatten().enumerate() {
                out.insert(format!("{side}_{field}{}", i + 1), or_dash(level.clone()));
            }
        }
    }
    for field in [
        "last_price",
        "highest",
        "lowest",
        "open",
        "close",
        "average",
        "volume",
        "amount",
        "open_interest",
        "pre_open_interest",
        "pre_close",
        "pre_settlement",
        "settlement",
        "upper_limit",
        "lower_limit",
    ] {
        out.insert(field.into(), or_dash(quote.get(field).cloned().unwrap_or(Value::Null)));
    }
    Value::Object(out)
}

/// `"-"` for a missing value (see the module docs).
fn or_dash(value: Value) -> Value {
    if value.is_null() {
        Value::from("-")
    } else {
        value
    }
}

/// Wall-clock nanoseconds since the epoch (0 if the clock is before 1970).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn beijing_time_text() {
        // 2024-12-02 06:59:59.9995 UTC is 14:59:59.999500 in Beijing.
        assert_eq!(beijing_datetime(1_733_122_799_999_500_000), "2024-12-02 14:59:59.999500");
        assert_eq!(beijing_datetime(0), "1970-01-01 08:00:00.000000");
        // A leap day.
        assert_eq!(beijing_datetime(1_709_164_800_000_000_000), "2024-02-29 08:00:00.000000");
    }

    #[test]
    fn numbered_levels_and_symbol() {
        let quote = json!({"datetime_ns": 0, "ask_price": [5001.0, null], "ask_volume": [3, 0],
            "bid_price": [4999.0, null], "bid_volume": [2, 0], "last_price": 5000.0, "volume": 7});
        let q = diff_quote("CZCE.SR501", &quote, 1_733_122_799_999_500_000);
        assert_eq!(q["instrument_id"], "CZCE.SR501");
        assert_eq!(q["datetime"], "2024-12-02 14:59:59.999500");
        assert_eq!(q["ask_price1"], 5001.0);
        assert_eq!(q["ask_price2"], "-");
        assert_eq!(q["bid_volume1"], 2);
        assert_eq!(q["last_price"], 5000.0);
        assert_eq!(q["volume"], 7);
        assert_eq!(q["settlement"], "-");
    }
}
