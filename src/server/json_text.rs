//! JSON records written as text field by field: the same bytes `serde_json` writes for the
//! `Serialize` derives they stand in for, without a visitor call per field or a float
//! formatter per price. Used where a record is written on every order: the order answer
//! (`order_json`) and the DIFF trade patch (`diff_trade`); each of those modules compares its
//! writer with serde's byte for byte over random records.

use super::http::push_decimal;
use crate::domain::types::PRICE_SCALE;

/// One field's value, as the derives write it.
#[derive(Clone, Copy)]
pub enum Field<'a> {
    Str(&'a str),
    Int(i64),
    Id(u64),
    /// A number as a JSON string (DIFF's ids): `"123"`.
    IdText(u64),
    /// `"<id>|<text>"` (DIFF's trade keys).
    IdPair(u64, &'a str),
    /// A `fixed4` amount (price or money units) as the decimal it stands for.
    Fixed4(i64),
    /// A computed float, through serde's own writer (`null` when not finite).
    F64(f64),
    Null,
}

impl Field<'_> {
    pub fn push(self, out: &mut Vec<u8>) {
        match self {
            Field::Str(s) => push_str(out, s),
            Field::Int(n) => push_i64(out, n),
            Field::Id(n) => push_decimal(out, n),
            Field::IdText(n) => {
                out.push(b'"');
                push_decimal(out, n);
                out.push(b'"');
            }
            Field::IdPair(n, text) => push_id_pair(out, n, text),
            Field::Fixed4(units) => push_fixed4(out, units),
            // Writing a number into a Vec cannot fail.
            Field::F64(x) => {
                let _ = serde_json::to_writer(&mut *out, &x);
            }
            Field::Null => out.extend_from_slice(b"null"),
        }
    }
}

/// `{"name":value,...}`; each name is given with its leading quote and trailing `":`.
pub fn push_object(out: &mut Vec<u8>, fields: &[(&str, Field)]) {
    for (i, &(name, value)) in fields.iter().enumerate() {
        out.push(if i == 0 { b'{' } else { b',' });
        out.extend_from_slice(name.as_bytes());
        value.push(out);
    }
    out.push(b'}');
}

/// Whether a string is written as it is: printable ASCII without a quote or a backslash.
fn is_plain(s: &str) -> bool {
    s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
}

/// A JSON string. Names are nearly always plain ASCII, which needs no escaping; anything else
/// goes through `serde_json`'s escaper.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    if is_plain(s) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// The concatenation of `parts` as one JSON string (a key such as `SHFE.cu2501`).
pub fn push_str_parts(out: &mut Vec<u8>, parts: &[&str]) {
    if parts.iter().all(|p| is_plain(p)) {
        out.push(b'"');
        for part in parts {
            out.extend_from_slice(part.as_bytes());
        }
        out.push(b'"');
    } else {
        push_str(out, &parts.concat());
    }
}

/// `"<id>|<text>"`, as serde writes the string `format!("{id}|{text}")`.
fn push_id_pair(out: &mut Vec<u8>, id: u64, text: &str) {
    if is_plain(text) {
        out.push(b'"');
        push_decimal(out, id);
        out.push(b'|');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        push_str(out, &format!("{id}|{text}"));
    }
}

fn push_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_decimal(out, n.unsigned_abs());
}

/// Below this many units (1e11 in price terms) a fixed-point amount has at most 15
/// significant digits, so the double nearest to it prints back as exactly its decimal digits
/// (the shortest form that round-trips, which is what serde's float writer prints). Larger
/// amounts go through that writer itself.
pub const EXACT_FIXED4_UNITS: u64 = 1_000_000_000_000_000;

/// A `fixed4` amount as `serde_json` writes `units / 10^4` as a float: "3800.2", "3800.0",
/// "-0.5", "0.0001".
pub fn push_fixed4(out: &mut Vec<u8>, units: i64) {
    let abs = units.unsigned_abs();
    if abs >= EXACT_FIXED4_UNITS {
        let _ = serde_json::to_writer(&mut *out, &(units as f64 / PRICE_SCALE as f64));
        return;
    }
    if units < 0 {
        out.push(b'-');
    }
    let scale = PRICE_SCALE as u64;
    push_decimal(out, abs / scale);
    out.push(b'.');
    let mut fraction = abs % scale;
    if fraction == 0 {
        out.push(b'0');
        return;
    }
    let mut digits = [0u8; 4];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (fraction % 10) as u8;
        fraction /= 10;
    }
    let used = 4 - digits.iter().rev().take_while(|&&d| d == b'0').count();
    out.extend_from_slice(&digits[..used]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_print_as_their_decimals() {
        for (units, text) in [
            (0, "0.0"),
            (38_002_000, "3800.2"),
            (38_000_000, "3800.0"),
            (-5_000, "-0.5"),
            (1, "0.0001"),
            (-12_345, "-1.2345"),
            (999_999_999_999_999, "99999999999.9999"),
        ] {
            let mut out = Vec::new();
            push_fixed4(&mut out, units);
            assert_eq!(String::from_utf8(out).expect("utf8"), text);
        }
    }

    #[test]
    fn every_field_is_what_serde_writes_for_its_value() {
        let cases: Vec<(Field, String)> = vec![
            (Field::Str("a\"b\\c\u{1}é"), serde_json::to_string("a\"b\\c\u{1}é").unwrap()),
            (Field::Int(-42), "-42".into()),
            (Field::Int(i64::MIN), i64::MIN.to_string()),
            (Field::Id(u64::MAX), u64::MAX.to_string()),
            (Field::IdText(17), "\"17\"".into()),
            (Field::IdPair(9, "BUY"), "\"9|BUY\"".into()),
            (Field::IdPair(9, "a\"b"), serde_json::to_string("9|a\"b").unwrap()),
            (Field::F64(0.1 + 0.2), serde_json::to_string(&(0.1f64 + 0.2)).unwrap()),
            (Field::F64(f64::NAN), "null".into()),
            (Field::F64(-0.0), serde_json::to_string(&-0.0f64).unwrap()),
            (Field::Null, "null".into()),
        ];
        let mut parts = Vec::new();
        push_str_parts(&mut parts, &["SHFE", ".", "cu2501"]);
        push_str_parts(&mut parts, &["SHFE", ".", "c\"u"]);
        assert_eq!(String::from_utf8(parts).expect("utf8"), r#""SHFE.cu2501""SHFE.c\"u""#);
        for (field, expected) in cases {
            let mut out = Vec::new();
            field.push(&mut out);
            assert_eq!(String::from_utf8(out).expect("utf8"), expected);
        }
    }
}

/// Random records for the writers' tests: names that need escaping, amounts at every
/// magnitude up to i64's ends.
#[cfg(test)]
pub(crate) mod random {
    use super::EXACT_FIXED4_UNITS;
    use crate::domain::instrument::ExchangeId;
    use crate::domain::ledger::account::{AccountSnapshot, AccountStatus, PositionSnapshot};
    use crate::domain::name::InlineStr;
    use crate::domain::types::{Direction, Offset, PriceType, TimeCondition, VolumeCondition};
    use crate::server::journal::{OrderRecord, OrderStatus, UserTrade};

    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 11
        }

        pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[self.next() as usize % from.len()]
        }

        /// Amounts at every magnitude: small, round, fractional, near the exact limit and
        /// beyond it, up to i64's ends.
        pub fn amount(&mut self) -> i64 {
            let magnitude = match self.next() % 8 {
                0 => 0,
                1 => 10_000 * (self.next() % 10_000) as i64,
                2 => (self.next() % 100) as i64,
                3 => (EXACT_FIXED4_UNITS as i64) - 1 - (self.next() % 3) as i64,
                4 => (EXACT_FIXED4_UNITS as i64) + (self.next() % 3) as i64,
                5 => i64::MAX - (self.next() % 5) as i64,
                _ => (self.next() % (1 << (1 + self.next() % 62))) as i64,
            };
            if self.next() % 3 == 0 {
                -magnitude
            } else {
                magnitude
            }
        }

        pub fn name<const N: usize>(&mut self) -> InlineStr<N> {
            let text = self.pick(&["cu2501", "a\"b", "back\\slash", "tab\tnl\n", "\u{1}ctl", "é中", "\u{7f}del", "x"]);
            InlineStr::new(text).expect("short name")
        }
    }

    pub fn order(r: &mut Rng) -> OrderRecord {
        OrderRecord {
            order_id: r.next(),
            client_order_id: r.name(),
            account_id: r.name(),
            exchange_id: r.pick(&[ExchangeId::SHFE, ExchangeId::CFFEX, ExchangeId::GFEX]),
            instrument_id: r.name(),
            direction: r.pick(&[Direction::Buy, Direction::Sell]),
            offset: r.pick(&[Offset::Open, Offset::Close, Offset::CloseToday]),
            price_type: r.pick(&[PriceType::Limit, PriceType::Any, PriceType::Best, PriceType::FiveLevel]),
            limit_price: if r.next() % 4 == 0 { None } else { Some(r.amount()) },
            volume_orign: r.amount(),
            volume_left: r.amount(),
            time_condition: r.pick(&[TimeCondition::Gfd, TimeCondition::Ioc, TimeCondition::Gtc]),
            volume_condition: r.pick(&[VolumeCondition::Any, VolumeCondition::Min, VolumeCondition::All]),
            status: r.pick(&[OrderStatus::Alive, OrderStatus::Finished]),
            filled_volume: r.amount(),
            trade_amount: r.amount(),
            last_code: if r.next() % 2 == 0 { None } else { Some(r.next() as u32) },
            last_msg: r.pick(&[None, Some("insufficient funds"), Some("say \"no\"")]),
            insert_time_ns: r.amount(),
            update_time_ns: r.amount(),
        }
    }

    pub fn trade(r: &mut Rng) -> UserTrade {
        UserTrade {
            trade_id: r.next(),
            order_id: r.next(),
            client_order_id: r.name(),
            account_id: r.name(),
            exchange_id: r.pick(&[ExchangeId::DCE, ExchangeId::INE]),
            instrument_id: r.name(),
            direction: r.pick(&[Direction::Buy, Direction::Sell]),
            offset: r.pick(&[Offset::Open, Offset::Close]),
            price: r.amount(),
            volume: r.amount(),
            commission: r.amount(),
            close_profit: r.amount(),
            ts: r.amount(),
        }
    }

    /// Computed floats: ordinary ones, ones with long shortest forms, signed zero, and the
    /// non-finite ones serde writes as null.
    pub fn float(r: &mut Rng) -> f64 {
        match r.next() % 6 {
            0 => r.pick(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, 0.1 + 0.2]),
            1 => f64::from_bits((r.next() << 11) | (r.next() % 2048)),
            2 => r.amount() as f64 / 3.0,
            _ => (r.next() % 1_000_000) as f64 / 7.0,
        }
    }

    pub fn account(r: &mut Rng) -> AccountSnapshot {
        AccountSnapshot {
            account_id: r.name(),
            status: r.pick(&[
                AccountStatus::Active,
                AccountStatus::Frozen,
                AccountStatus::TradingFrozen,
                AccountStatus::WithdrawFrozen,
            ]),
            pre_balance: r.amount(),
            deposit: r.amount(),
            withdraw: r.amount(),
            static_balance: r.amount(),
            close_profit: r.amount(),
            commission: r.amount(),
            premium: r.amount(),
            position_profit: r.amount(),
            float_profit: r.amount(),
            balance: r.amount(),
            margin: r.amount(),
            frozen_margin: r.amount(),
            frozen_commission: r.amount(),
            frozen_premium: r.amount(),
            available: r.amount(),
            risk_ratio: float(r),
        }
    }

    pub fn position(r: &mut Rng) -> PositionSnapshot {
        PositionSnapshot {
            account_id: r.name(),
            exchange_id: r.pick(&[ExchangeId::SHFE, ExchangeId::DCE, ExchangeId::CZCE]),
            instrument_id: r.name(),
            pos_long_his: r.amount(),
            pos_long_today: r.amount(),
            pos_short_his: r.amount(),
            pos_short_today: r.amount(),
            volume_long_today: r.amount(),
            volume_long_his: r.amount(),
            volume_long: r.amount(),
            volume_long_frozen_today: r.amount(),
            volume_long_frozen_his: r.amount(),
            volume_long_frozen: r.amount(),
            volume_short_today: r.amount(),
            volume_short_his: r.amount(),
            volume_short: r.amount(),
            volume_short_frozen_today: r.amount(),
            volume_short_frozen_his: r.amount(),
            volume_short_frozen: r.amount(),
            open_cost_long: r.amount(),
            open_cost_short: r.amount(),
            position_cost_long: r.amount(),
            position_cost_short: r.amount(),
            open_price_long: float(r),
            open_price_short: float(r),
            position_price_long: float(r),
            position_price_short: float(r),
            float_profit_long: r.amount(),
            float_profit_short: r.amount(),
            float_profit: r.amount(),
            position_profit_long: r.amount(),
            position_profit_short: r.amount(),
            position_profit: r.amount(),
            margin_long: r.amount(),
            margin_short: r.amount(),
            margin: r.amount(),
            last_price: r.amount(),
        }
    }
}
