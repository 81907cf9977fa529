//! Scalar units and enums shared by the whole domain.
//!
//! Prices and money are fixed-point integers so that sums are exact and replay is byte-identical:
//! futures are zero-sum and we want the books to balance to the last unit, not to within an
//! epsilon. Display values (DIFF, JSON) are derived from these integers.

use serde::{Deserialize, Serialize};

/// A price in units of 1/PRICE_SCALE of the quote currency (e.g. 3800.2 -> 38_002_000).
pub type Price = i64;
/// Money in units of 1/MONEY_SCALE yuan (1e-4 yuan).
pub type Money = i64;
/// A number of lots.
pub type Volume = i64;
/// A rate (margin rate, commission by money) in units of 1/RATE_SCALE (0.12 -> 12_000_000).
pub type Rate = i64;
/// Nanoseconds since the Unix epoch, supplied with each command (there is no clock inside).
pub type TimestampNs = i64;

pub const PRICE_SCALE: i64 = 10_000;
pub const MONEY_SCALE: i64 = 10_000;
pub const RATE_SCALE: i64 = 100_000_000;

/// Because PRICE_SCALE == MONEY_SCALE, price x multiple x volume is directly Money.
const _: () = assert!(PRICE_SCALE == MONEY_SCALE);

/// Converts a decimal price to fixed point, rounding to the nearest unit.
pub fn price_from_f64(value: f64) -> Price {
    (value * PRICE_SCALE as f64).round() as Price
}

pub fn price_to_f64(price: Price) -> f64 {
    price as f64 / PRICE_SCALE as f64
}

pub fn money_from_f64(value: f64) -> Money {
    (value * MONEY_SCALE as f64).round() as Money
}

pub fn money_to_f64(money: Money) -> f64 {
    money as f64 / MONEY_SCALE as f64
}

pub fn rate_from_f64(value: f64) -> Rate {
    (value * RATE_SCALE as f64).round() as Rate
}

pub fn rate_to_f64(rate: Rate) -> f64 {
    rate as f64 / RATE_SCALE as f64
}

/// `amount x rate`, rounded half away from zero to a whole money unit. i128 inside: a 1e12 yuan
/// turnover at rate 1.0 is 1e16 units x 1e8 which overflows i64. Never panics: a result beyond
/// i64 (no validated instrument comes near) saturates.
#[inline]
pub fn apply_rate(amount: Money, rate: Rate) -> Money {
    const HALF: i64 = RATE_SCALE / 2;
    // Fast path in i64 (division by a constant compiles to a multiply); i128 only on overflow.
    if let Some(product) = amount.checked_mul(rate) {
        let rounded = if product >= 0 { product.checked_add(HALF) } else { product.checked_sub(HALF) };
        if let Some(rounded) = rounded {
            return rounded / RATE_SCALE;
        }
    }
    // Split the amount at the scale so every product fits in i64:
    // a x r / S = (a / S) x r + (a % S) x r / S, exact; only the second term is rounded.
    if rate >= 0 && amount != i64::MIN {
        let magnitude = amount.abs();
        let (whole, part) = (magnitude / RATE_SCALE, magnitude % RATE_SCALE);
        let head = whole.checked_mul(rate);
        let tail = part.checked_mul(rate).and_then(|t| t.checked_add(HALF)).map(|t| t / RATE_SCALE);
        if let Some(rounded) = head.zip(tail).and_then(|(head, tail)| head.checked_add(tail)) {
            return if amount >= 0 { rounded } else { -rounded };
        }
    }
    // |amount x rate| < 2^126: fits i128.
    let product = amount as i128 * rate as i128;
    let half = HALF as i128;
    let rounded =
        if product >= 0 { (product + half) / RATE_SCALE as i128 } else { (product - half) / RATE_SCALE as i128 };
    rounded.clamp(Money::MIN as i128, Money::MAX as i128) as Money
}

/// Notional value of `volume` lots at `price`: price x multiple x volume, in Money units.
pub fn notional(price: Price, volume_multiple: i64, volume: Volume) -> Money {
    price * volume_multiple * volume
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        #[rkyv(derive(Debug, PartialEq, Eq))]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

wire_enum!(
    /// Order side.
    Direction { Buy = "BUY", Sell = "SELL" }
);
wire_enum!(
    /// Open a position, close his (or his-then-today), or close today's.
    Offset { Open = "OPEN", Close = "CLOSE", CloseToday = "CLOSETODAY" }
);
wire_enum!(
    /// LIMIT rests at its price; ANY is a market order; BEST takes the best opposite level;
    /// FIVELEVEL takes up to five opposite levels.
    PriceType { Limit = "LIMIT", Any = "ANY", Best = "BEST", FiveLevel = "FIVELEVEL" }
);
wire_enum!(
    /// How long an order lives. GFS, GTD and GFA exist in DIFF but are rejected by this venue.
    TimeCondition { Ioc = "IOC", Gfs = "GFS", Gfd = "GFD", Gtd = "GTD", Gtc = "GTC", Gfa = "GFA" }
);
wire_enum!(
    /// How much must fill at once: ANY (partial ok), MIN (at least min_volume), ALL (fill or kill).
    VolumeCondition { Any = "ANY", Min = "MIN", All = "ALL" }
);

impl Direction {
    pub fn opposite(self) -> Self {
        match self {
            Direction::Buy => Direction::Sell,
            Direction::Sell => Direction::Buy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_round_trips() {
        assert_eq!(price_from_f64(3800.2), 38_002_000);
        assert_eq!(price_from_f64(600.02), 6_000_200);
        assert_eq!(money_to_f64(money_from_f64(12.3456)), 12.3456);
        assert_eq!(rate_from_f64(0.000023), 2_300);
    }

    #[test]
    fn apply_rate_rounds_half_away_from_zero() {
        // 0.000023 x 1,140,060 yuan = 26.22138 yuan
        assert_eq!(apply_rate(money_from_f64(1_140_060.0), rate_from_f64(0.000023)), 262_214);
        assert_eq!(apply_rate(-15, RATE_SCALE / 10), -2);
        // Beyond i64 products the split path must agree with exact 128-bit arithmetic.
        let exact = |a: i64, r: i64| {
            let p = a as i128 * r as i128;
            let h = RATE_SCALE as i128 / 2;
            (if p >= 0 { (p + h) / RATE_SCALE as i128 } else { (p - h) / RATE_SCALE as i128 }) as i64
        };
        for (a, r) in [
            (250_000_000_000_000_000, 10_000_000),
            (-987_654_321_987_654_321, 99_999_999),
            (123_456_789_012_345, 12_345_678),
        ] {
            assert_eq!(apply_rate(a, r), exact(a, r), "{a} x {r}");
        }
        assert_eq!(apply_rate(15, RATE_SCALE / 10), 2);
    }

    #[test]
    fn apply_rate_never_overflows() {
        // A product that fits i64 but not with the half added: exact, not a panic.
        let (a, r) = (92_233_720_368_547, 100_000);
        assert!(a * r > i64::MAX - RATE_SCALE / 2);
        assert_eq!(apply_rate(a, r), 92_233_720_369);
        assert_eq!(apply_rate(-a, r), -92_233_720_369);
        // Rates beyond any schedule's: the split path would overflow; i128 is exact, and a
        // result beyond i64 saturates.
        assert_eq!(apply_rate(RATE_SCALE - 1, i64::MAX), 9_223_371_944_621_055_438);
        assert_eq!(apply_rate(i64::MAX, i64::MAX), i64::MAX);
        assert_eq!(apply_rate(i64::MIN, i64::MAX), i64::MIN);
        assert_eq!(apply_rate(i64::MIN, 1), -92_233_720_369);
    }

    #[test]
    fn enums_parse_their_wire_names() {
        assert_eq!(Offset::parse("CLOSETODAY"), Some(Offset::CloseToday));
        assert_eq!(PriceType::FiveLevel.as_str(), "FIVELEVEL");
        assert_eq!(TimeCondition::parse("XYZ"), None);
    }
}

/// Serde for fixed-point prices and money (scale 1e4) as plain decimal JSON numbers, so logs and
/// dumps read like an exchange's (3800.2, not 38002000). Decoding rounds to the nearest unit.
///
/// Only human-readable formats (JSON, TOML) get decimals. Binary formats (`is_human_readable()`
/// false: bincode, for the shard checkpoints) get the exact integer: decimals through an `f64`
/// are not exact beyond 2^53 units, and decoding refuses values beyond 1e14.
pub mod fixed4 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return serializer.serialize_i64(*value);
        }
        serializer.serialize_f64(*value as f64 / super::PRICE_SCALE as f64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        if !deserializer.is_human_readable() {
            return i64::deserialize(deserializer);
        }
        let value = f64::deserialize(deserializer)?;
        from_decimal(value).ok_or_else(|| serde::de::Error::custom("number out of range for a price or amount"))
    }

    /// None for NaN, infinities and values beyond +/- 1e14 (1e18 units, inside i64).
    pub fn from_decimal(value: f64) -> Option<i64> {
        (value.is_finite() && value.abs() <= 1.0e14).then(|| (value * super::PRICE_SCALE as f64).round() as i64)
    }
}

/// `fixed4` for optional values (null when absent); exact integers in binary formats.
pub mod fixed4_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return match value {
                Some(v) => serializer.serialize_some(v),
                None => serializer.serialize_none(),
            };
        }
        match value {
            Some(v) => serializer.serialize_f64(*v as f64 / super::PRICE_SCALE as f64),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        if !deserializer.is_human_readable() {
            return Option::<i64>::deserialize(deserializer);
        }
        match Option::<f64>::deserialize(deserializer)? {
            None => Ok(None),
            Some(value) => super::fixed4::from_decimal(value)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("number out of range for a price or amount")),
        }
    }
}

/// `fixed4_opt` for a fixed-size array of optional prices (depth levels); in binary formats a
/// tuple of `N` exact optional integers.
pub mod fixed4_opt_array {
    use serde::de::{SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(
        values: &[Option<i64>; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let binary = !serializer.is_human_readable();
        let mut tuple = serializer.serialize_tuple(N)?;
        for value in values {
            if binary {
                tuple.serialize_element(value)?;
            } else {
                tuple.serialize_element(&value.map(|v| v as f64 / super::PRICE_SCALE as f64))?;
            }
        }
        tuple.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[Option<i64>; N], D::Error> {
        if !deserializer.is_human_readable() {
            return deserializer.deserialize_tuple(N, ExactLevels::<N>);
        }
        let decimals = Vec::<Option<f64>>::deserialize(deserializer)?;
        if decimals.len() != N {
            return Err(serde::de::Error::custom(format!("expected {N} levels, got {}", decimals.len())));
        }
        let mut out = [None; N];
        for (slot, value) in out.iter_mut().zip(decimals) {
            *slot = match value {
                None => None,
                Some(v) => {
                    Some(super::fixed4::from_decimal(v).ok_or_else(|| serde::de::Error::custom("price out of range"))?)
                }
            };
        }
        Ok(out)
    }

    /// The binary form: `N` optional integers.
    struct ExactLevels<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for ExactLevels<N> {
        type Value = [Option<i64>; N];

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "{N} optional prices")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = [None; N];
            for (n, slot) in out.iter_mut().enumerate() {
                *slot = seq.next_element()?.ok_or_else(|| serde::de::Error::invalid_length(n, &self))?;
            }
            Ok(out)
        }
    }
}
