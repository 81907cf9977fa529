//! An order's answer (`{"order":..,"trades":[..]}`, the `data` of every submit, cancel and
//! modify reply) written as JSON text field by field, the same bytes `serde_json` writes for
//! the `Serialize` derives of `OrderRecord` and `UserTrade`. Through serde it was ~6 % of a
//! busy shard's CPU (docs/PERFORMANCE.md "Order answers written as text"): a visitor call per
//! field, prices through a float formatter. The tests below compare both writers byte for byte
//! over random records, odd names and extreme amounts included.

use super::http::push_decimal;
use super::journal::{OrderRecord, OrderStatus, UserTrade};
use crate::domain::types::PRICE_SCALE;

/// Appends `{"order":<order>,"trades":[<trade>,..]}`.
pub fn push_order_reply(out: &mut Vec<u8>, order: &OrderRecord, trades: &[&UserTrade]) {
    out.extend_from_slice(br#"{"order":"#);
    push_order(out, order);
    out.extend_from_slice(br#","trades":["#);
    for (i, trade) in trades.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_user_trade(out, trade);
    }
    out.extend_from_slice(b"]}");
}

/// One field's value, as the derives write it.
#[derive(Clone, Copy)]
enum Field<'a> {
    Str(&'a str),
    Int(i64),
    Id(u64),
    Fixed4(i64),
    Null,
}

impl Field<'_> {
    fn push(self, out: &mut Vec<u8>) {
        match self {
            Field::Str(s) => push_str(out, s),
            Field::Int(n) => push_i64(out, n),
            Field::Id(n) => push_decimal(out, n),
            Field::Fixed4(units) => push_fixed4(out, units),
            Field::Null => out.extend_from_slice(b"null"),
        }
    }
}

/// `{"name":value,...}`; each name is given with its leading quote and trailing `":`.
fn push_object(out: &mut Vec<u8>, fields: &[(&str, Field)]) {
    for (i, &(name, value)) in fields.iter().enumerate() {
        out.push(if i == 0 { b'{' } else { b',' });
        out.extend_from_slice(name.as_bytes());
        value.push(out);
    }
    out.push(b'}');
}

fn push_order(out: &mut Vec<u8>, o: &OrderRecord) {
    let status = match o.status {
        OrderStatus::Alive => "ALIVE",
        OrderStatus::Finished => "FINISHED",
    };
    push_object(
        out,
        &[
            (r#""order_id":"#, Field::Id(o.order_id)),
            (r#""client_order_id":"#, Field::Str(o.client_order_id.as_str())),
            (r#""account_id":"#, Field::Str(o.account_id.as_str())),
            (r#""exchange_id":"#, Field::Str(o.exchange_id.as_str())),
            (r#""instrument_id":"#, Field::Str(o.instrument_id.as_str())),
            (r#""direction":"#, Field::Str(o.direction.as_str())),
            (r#""offset":"#, Field::Str(o.offset.as_str())),
            (r#""price_type":"#, Field::Str(o.price_type.as_str())),
            (r#""limit_price":"#, o.limit_price.map_or(Field::Null, Field::Fixed4)),
            (r#""volume_orign":"#, Field::Int(o.volume_orign)),
            (r#""volume_left":"#, Field::Int(o.volume_left)),
            (r#""time_condition":"#, Field::Str(o.time_condition.as_str())),
            (r#""volume_condition":"#, Field::Str(o.volume_condition.as_str())),
            (r#""status":"#, Field::Str(status)),
            (r#""filled_volume":"#, Field::Int(o.filled_volume)),
            (r#""trade_amount":"#, Field::Fixed4(o.trade_amount)),
            (r#""last_code":"#, o.last_code.map_or(Field::Null, |c| Field::Id(u64::from(c)))),
            (r#""last_msg":"#, o.last_msg.map_or(Field::Null, Field::Str)),
            (r#""insert_time_ns":"#, Field::Int(o.insert_time_ns)),
            (r#""update_time_ns":"#, Field::Int(o.update_time_ns)),
        ],
    );
}

fn push_user_trade(out: &mut Vec<u8>, t: &UserTrade) {
    push_object(
        out,
        &[
            (r#""trade_id":"#, Field::Id(t.trade_id)),
            (r#""order_id":"#, Field::Id(t.order_id)),
            (r#""client_order_id":"#, Field::Str(t.client_order_id.as_str())),
            (r#""account_id":"#, Field::Str(t.account_id.as_str())),
            (r#""exchange_id":"#, Field::Str(t.exchange_id.as_str())),
            (r#""instrument_id":"#, Field::Str(t.instrument_id.as_str())),
            (r#""direction":"#, Field::Str(t.direction.as_str())),
            (r#""offset":"#, Field::Str(t.offset.as_str())),
            (r#""price":"#, Field::Fixed4(t.price)),
            (r#""volume":"#, Field::Int(t.volume)),
            (r#""commission":"#, Field::Fixed4(t.commission)),
            (r#""close_profit":"#, Field::Fixed4(t.close_profit)),
            (r#""ts":"#, Field::Int(t.ts)),
        ],
    );
}

/// A JSON string. Names are nearly always plain ASCII, which needs no escaping; anything else
/// goes through `serde_json`'s escaper.
fn push_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
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
const EXACT_FIXED4_UNITS: u64 = 1_000_000_000_000_000;

/// A `fixed4` amount as `serde_json` writes `units / 10^4` as a float: "3800.2", "3800.0",
/// "-0.5", "0.0001".
fn push_fixed4(out: &mut Vec<u8>, units: i64) {
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
    use crate::domain::instrument::ExchangeId;
    use crate::domain::name::InlineStr;
    use crate::domain::types::{Direction, Offset, PriceType, TimeCondition, VolumeCondition};
    use serde::Serialize;

    #[derive(Serialize)]
    struct SerdeReply<'a> {
        order: &'a OrderRecord,
        trades: &'a [&'a UserTrade],
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 11
        }

        fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[self.next() as usize % from.len()]
        }

        /// Amounts at every magnitude: small, round, fractional, near the exact limit and
        /// beyond it, up to i64's ends.
        fn amount(&mut self) -> i64 {
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

        fn name<const N: usize>(&mut self) -> InlineStr<N> {
            let text = self.pick(&["cu2501", "a\"b", "back\\slash", "tab\tnl\n", "\u{1}ctl", "é中", "\u{7f}del", "x"]);
            InlineStr::new(text).expect("short name")
        }
    }

    fn order(r: &mut Rng) -> OrderRecord {
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

    fn trade(r: &mut Rng) -> UserTrade {
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

    #[test]
    fn the_text_is_serdes_byte_for_byte() {
        let mut r = Rng(7);
        for case in 0..20_000 {
            let o = order(&mut r);
            let trades: Vec<UserTrade> = (0..r.next() % 4).map(|_| trade(&mut r)).collect();
            let refs: Vec<&UserTrade> = trades.iter().collect();
            let mut ours = Vec::new();
            push_order_reply(&mut ours, &o, &refs);
            let theirs = serde_json::to_vec(&SerdeReply { order: &o, trades: &refs }).expect("serializes");
            assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs), "case {case}: {o:?}");
        }
    }

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
}
