//! Instrument definitions: the config form (decimal numbers, as operators write them) and the
//! engine form (fixed point, with the day's price band computed).

use crate::domain::name::InstrumentId;
use crate::domain::types::*;
use serde::{Deserialize, Serialize};

/// Exchange of listing. SHFE and INE distinguish CLOSE (his only) from CLOSETODAY (today only).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum ExchangeId {
    CFFEX,
    SHFE,
    DCE,
    CZCE,
    INE,
    GFEX,
}

impl ExchangeId {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeId::CFFEX => "CFFEX",
            ExchangeId::SHFE => "SHFE",
            ExchangeId::DCE => "DCE",
            ExchangeId::CZCE => "CZCE",
            ExchangeId::INE => "INE",
            ExchangeId::GFEX => "GFEX",
        }
    }

    /// SHFE and INE: CLOSE closes his only and CLOSETODAY today only; elsewhere CLOSE takes his
    /// first, then today.
    pub fn has_strict_close_today(self) -> bool {
        matches!(self, ExchangeId::SHFE | ExchangeId::INE)
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum InstrumentStatus {
    Trading,
    Suspended,
    Closed,
    Delisted,
    /// The pre-open call auction: limit GFD/GTC orders rest without matching; the open
    /// (`Trading`) trades what crosses at one price.
    #[serde(rename = "pre_open")]
    PreOpen,
}

/// Most prices one day's band may hold (levels from the lower to the upper limit, both in). Each
/// side of an order book keeps one 24-byte level per price of the band, allocated up front, so a
/// book at the cap takes 48 MB; the widest band in config/instruments.toml (IM2501, 6162.8 +/-
/// 10 % on a 0.2 tick) has 6,164.
pub const MAX_BAND_LEVELS: i64 = 1_000_000;
/// Most one lot may be worth at the band's upper limit (upper_limit x volume_multiple), in money
/// units: 1e8 yuan. Real contracts are worth about 1e6 yuan a lot.
pub const MAX_LOT_VALUE: Money = 100_000_000 * MONEY_SCALE;
/// Largest `max_order_volume`. With [`MAX_LOT_VALUE`] one order is worth at most 1e14 yuan
/// (1e18 money units), so an order's value, margin and commission all fit in i64.
pub const MAX_ORDER_VOLUME: Volume = 1_000_000;
/// Largest `volume_multiple` (real contracts: up to 10,000).
pub const MAX_VOLUME_MULTIPLE: i64 = 1_000_000;
/// Largest commission per lot, in yuan (real schedules: tens of yuan).
pub const MAX_COMMISSION_PER_LOT: f64 = 10_000.0;
/// Largest commission rate on turnover (real schedules: up to 0.00023, CFFEX close-today).
pub const MAX_COMMISSION_RATE: f64 = 0.01;

/// Commission schedule as written in config: yuan per lot plus a rate on turnover, separately
/// for open, close (his) and close-today. Either part may be zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommissionConfig {
    pub open_per_lot: f64,
    pub close_per_lot: f64,
    pub close_today_per_lot: f64,
    pub open_rate: f64,
    pub close_rate: f64,
    pub close_today_rate: f64,
}

impl CommissionConfig {
    /// The engine's fixed-point schedule; refused when a value is not finite, negative, above
    /// [`MAX_COMMISSION_PER_LOT`] (per lot) or above [`MAX_COMMISSION_RATE`] (rates).
    pub fn schedule(&self) -> Result<CommissionSchedule, String> {
        let c = self;
        let per_lot = [
            ("open_per_lot", c.open_per_lot),
            ("close_per_lot", c.close_per_lot),
            ("close_today_per_lot", c.close_today_per_lot),
        ];
        for (name, value) in per_lot {
            if !(0.0..=MAX_COMMISSION_PER_LOT).contains(&value) {
                return Err(format!("commission {name} must be in [0, {MAX_COMMISSION_PER_LOT}] yuan per lot"));
            }
        }
        let rates =
            [("open_rate", c.open_rate), ("close_rate", c.close_rate), ("close_today_rate", c.close_today_rate)];
        for (name, value) in rates {
            if !(0.0..=MAX_COMMISSION_RATE).contains(&value) {
                return Err(format!(
                    "commission {name} must be in [0, {MAX_COMMISSION_RATE}] (a fraction of turnover)"
                ));
            }
        }
        Ok(CommissionSchedule {
            open_per_lot: money_from_f64(c.open_per_lot),
            close_per_lot: money_from_f64(c.close_per_lot),
            close_today_per_lot: money_from_f64(c.close_today_per_lot),
            open_rate: rate_from_f64(c.open_rate),
            close_rate: rate_from_f64(c.close_rate),
            close_today_rate: rate_from_f64(c.close_today_rate),
        })
    }
}

/// One instrument as written in config/instruments.toml.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentConfig {
    pub instrument_id: String,
    pub exchange_id: ExchangeId,
    pub product_id: String,
    pub volume_multiple: i64,
    pub price_tick: f64,
    pub margin_rate_long: f64,
    pub margin_rate_short: f64,
    pub commission: CommissionConfig,
    /// Daily price band: upper/lower limit = pre_settlement x (1 +/- limit_rate), to the tick.
    pub limit_rate: f64,
    pub pre_settlement: f64,
    #[serde(default)]
    pub pre_close: Option<f64>,
    #[serde(default)]
    pub pre_open_interest: i64,
    pub max_order_volume: i64,
    #[serde(default = "default_status")]
    pub status: InstrumentStatus,
    /// Optional per-account limit on open volume (long + short) in this instrument.
    #[serde(default)]
    pub position_limit: Option<i64>,
    /// Shard that owns this instrument in the server; None = stable hash of the id.
    #[serde(default)]
    pub shard: Option<u32>,
    #[serde(default)]
    pub delivery_year: Option<i32>,
    #[serde(default)]
    pub delivery_month: Option<u32>,
}

fn default_status() -> InstrumentStatus {
    InstrumentStatus::Trading
}

/// The engine's fixed-point view of the commission schedule.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct CommissionSchedule {
    pub open_per_lot: Money,
    pub close_per_lot: Money,
    pub close_today_per_lot: Money,
    pub open_rate: Rate,
    pub close_rate: Rate,
    pub close_today_rate: Rate,
}

/// Which commission line a traded volume pays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommissionKind {
    Open,
    Close,
    CloseToday,
}

impl CommissionSchedule {
    /// Commission for `volume` lots at `price`: per lot plus rate x turnover, each rounded once.
    /// Exact for every order a validated instrument takes (see [`MAX_ORDER_VOLUME`]); beyond
    /// i64 it saturates instead of overflowing.
    pub fn compute(&self, kind: CommissionKind, price: Price, volume_multiple: i64, volume: Volume) -> Money {
        let (per_lot, rate) = match kind {
            CommissionKind::Open => (self.open_per_lot, self.open_rate),
            CommissionKind::Close => (self.close_per_lot, self.close_rate),
            CommissionKind::CloseToday => (self.close_today_per_lot, self.close_today_rate),
        };
        let turnover = price.saturating_mul(volume_multiple).saturating_mul(volume);
        per_lot.saturating_mul(volume).saturating_add(apply_rate(turnover, rate))
    }
}

/// An instrument as the engine uses it: fixed point, with the day's band.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Instrument {
    pub instrument_id: InstrumentId,
    pub exchange_id: ExchangeId,
    pub product_id: String,
    pub volume_multiple: i64,
    pub price_tick: Price,
    pub margin_rate_long: Rate,
    pub margin_rate_short: Rate,
    pub commission: CommissionSchedule,
    pub limit_rate: Rate,
    pub pre_settlement: Price,
    pub pre_close: Price,
    pub pre_open_interest: Volume,
    pub upper_limit: Price,
    pub lower_limit: Price,
    pub max_order_volume: Volume,
    pub status: InstrumentStatus,
    pub position_limit: Option<Volume>,
    pub shard: Option<u32>,
    pub delivery_year: Option<i32>,
    pub delivery_month: Option<u32>,
}

/// An operator's change of an instrument's risk parameters (what is absent stays). Applied on
/// every shard at once: margins of open positions follow the new rates immediately; holds of
/// live orders keep what they froze; fills after it pay the new commission.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct InstrumentUpdate {
    pub margin_rate_long: Option<Rate>,
    pub margin_rate_short: Option<Rate>,
    pub max_order_volume: Option<Volume>,
    pub commission: Option<CommissionSchedule>,
}

impl InstrumentUpdate {
    /// An update from config-style values, checked as the config is (margin rates in [0, 1], a
    /// largest order in 1..=[`MAX_ORDER_VOLUME`], commissions within
    /// [`CommissionConfig::schedule`]'s bounds).
    pub fn from_values(
        margin_rate_long: Option<f64>,
        margin_rate_short: Option<f64>,
        max_order_volume: Option<Volume>,
        commission: Option<&CommissionConfig>,
    ) -> Result<Self, String> {
        let rate = |r: Option<f64>, name: &str| match r {
            Some(r) if !(0.0..=1.0).contains(&r) => Err(format!("{name} must be in [0, 1]")),
            r => Ok(r.map(rate_from_f64)),
        };
        if max_order_volume.is_some_and(|v| !(1..=MAX_ORDER_VOLUME).contains(&v)) {
            return Err(format!("max_order_volume must be in 1..={MAX_ORDER_VOLUME}"));
        }
        let commission = match commission {
            None => None,
            Some(c) => Some(c.schedule()?),
        };
        let update = InstrumentUpdate {
            margin_rate_long: rate(margin_rate_long, "margin_rate_long")?,
            margin_rate_short: rate(margin_rate_short, "margin_rate_short")?,
            max_order_volume,
            commission,
        };
        if update == InstrumentUpdate::default() {
            return Err(
                "nothing to update: give margin_rate_long, margin_rate_short, max_order_volume or commission".into()
            );
        }
        Ok(update)
    }
}

/// Why an instrument config was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstrumentConfigError(pub String);

impl std::fmt::Display for InstrumentConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InstrumentConfigError {}

/// One day's price band (see [`price_band`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Band {
    pub upper: Price,
    pub lower: Price,
    /// The rate's width was cut so the band holds at most [`MAX_BAND_LEVELS`] prices.
    pub capped_levels: bool,
    /// The upper limit was lowered so one lot is worth at most [`MAX_LOT_VALUE`] there.
    pub capped_value: bool,
}

impl Band {
    pub fn capped(&self) -> bool {
        self.capped_levels || self.capped_value
    }
}

/// The band for a settlement price: settlement x (1 +/- rate), the upper rounded down and the
/// lower rounded up to the tick, so both are inside it, and the lower at least one tick.
///
/// Capped, so that an order book of it is always bounded and order values fit in i64: the
/// width each side is at most (MAX_BAND_LEVELS - 1) / 2 ticks, and the upper limit at most
/// MAX_LOT_VALUE / volume_multiple. An instrument is listed only with an uncapped band
/// ([`Instrument::from_config`]); a later settlement price may ask for a wider or higher one,
/// which is capped, on every shard alike (`roll_day`). Never panics.
pub fn price_band(pre_settlement: Price, limit_rate: Rate, price_tick: Price, volume_multiple: i64) -> Band {
    let tick = price_tick.max(1);
    let wanted = apply_rate(pre_settlement, limit_rate).max(0);
    let max_width = ((MAX_BAND_LEVELS - 1) / 2).saturating_mul(tick);
    let width = wanted.min(max_width);
    let value_cap = MAX_LOT_VALUE / volume_multiple.max(1);
    let upper_raw = pre_settlement.saturating_add(width);
    let upper = upper_raw.min(value_cap).div_euclid(tick).saturating_mul(tick);
    let lower_raw = pre_settlement.saturating_sub(width).max(tick);
    let lower =
        lower_raw.div_euclid(tick).saturating_add(i64::from(lower_raw.rem_euclid(tick) != 0)).saturating_mul(tick);
    Band { upper, lower: lower.min(upper), capped_levels: wanted > width, capped_value: upper_raw > value_cap }
}

impl Instrument {
    /// The engine form of a config entry, checked: every number in its range, and the first
    /// day's band within [`price_band`]'s caps (at most [`MAX_BAND_LEVELS`] prices, one lot
    /// worth at most [`MAX_LOT_VALUE`] at the upper limit).
    pub fn from_config(config: &InstrumentConfig) -> Result<Self, InstrumentConfigError> {
        let fail = |what: &str| InstrumentConfigError(format!("instrument {}: {what}", config.instrument_id));
        let instrument_id = InstrumentId::new(&config.instrument_id).ok_or_else(|| fail("id must be 1..=31 bytes"))?;
        let multiple = config.volume_multiple;
        if !(1..=MAX_VOLUME_MULTIPLE).contains(&multiple) {
            return Err(fail(&format!("volume_multiple must be in 1..={MAX_VOLUME_MULTIPLE}")));
        }
        // The highest price at which one lot is worth at most MAX_LOT_VALUE.
        let max_price = MAX_LOT_VALUE / multiple;
        let max_yuan = MAX_LOT_VALUE / MONEY_SCALE;
        let in_range = |value: f64| value.is_finite() && value > 0.0 && price_from_f64(value) <= max_price;
        if !in_range(config.price_tick) || price_from_f64(config.price_tick) <= 0 {
            return Err(fail("price_tick must be at least 0.0001 and price_tick x volume_multiple at most 1e8"));
        }
        let price_tick = price_from_f64(config.price_tick);
        if !in_range(config.pre_settlement) {
            return Err(fail(&format!(
                "pre_settlement must be positive and pre_settlement x volume_multiple at most {max_yuan} (one lot's value)"
            )));
        }
        let pre_settlement = price_from_f64(config.pre_settlement);
        if pre_settlement <= 0 || pre_settlement % price_tick != 0 {
            return Err(fail("pre_settlement must be a positive multiple of price_tick"));
        }
        if config.pre_close.is_some_and(|p| !in_range(p)) {
            return Err(fail(&format!(
                "pre_close must be positive and pre_close x volume_multiple at most {max_yuan} (one lot's value)"
            )));
        }
        let rates = [config.margin_rate_long, config.margin_rate_short, config.limit_rate];
        if rates.iter().any(|r| !(0.0..=1.0).contains(r)) || config.limit_rate <= 0.0 {
            return Err(fail("margin rates must be in [0, 1] and limit_rate in (0, 1]"));
        }
        if !(1..=MAX_ORDER_VOLUME).contains(&config.max_order_volume) {
            return Err(fail(&format!("max_order_volume must be in 1..={MAX_ORDER_VOLUME}")));
        }
        if config.position_limit.is_some_and(|limit| limit < 0) {
            return Err(fail("position_limit must be 0 (no opening) or more"));
        }
        let commission = config.commission.schedule().map_err(|e| fail(&e))?;
        let limit_rate = rate_from_f64(config.limit_rate);
        let band = price_band(pre_settlement, limit_rate, price_tick, multiple);
        if band.capped_levels {
            let ticks_each_side = apply_rate(pre_settlement, limit_rate) / price_tick;
            return Err(fail(&format!(
                "the price band pre_settlement x (1 +/- limit_rate) would hold about {} prices of price_tick; at \
                 most {MAX_BAND_LEVELS} are allowed: raise price_tick or lower limit_rate",
                ticks_each_side.saturating_mul(2).saturating_add(1)
            )));
        }
        if band.capped_value {
            return Err(fail(&format!(
                "one lot at the upper limit pre_settlement x (1 + limit_rate) would be worth more than {max_yuan} \
                 (upper limit x volume_multiple): lower pre_settlement, limit_rate or volume_multiple"
            )));
        }
        let (upper_limit, lower_limit) = (band.upper, band.lower);
        Ok(Instrument {
            instrument_id,
            exchange_id: config.exchange_id,
            product_id: config.product_id.clone(),
            volume_multiple: config.volume_multiple,
            price_tick,
            margin_rate_long: rate_from_f64(config.margin_rate_long),
            margin_rate_short: rate_from_f64(config.margin_rate_short),
            commission,
            limit_rate,
            pre_settlement,
            pre_close: config.pre_close.map(price_from_f64).unwrap_or(pre_settlement),
            pre_open_interest: config.pre_open_interest,
            upper_limit,
            lower_limit,
            max_order_volume: config.max_order_volume,
            status: config.status,
            position_limit: config.position_limit,
            shard: config.shard,
            delivery_year: config.delivery_year,
            delivery_month: config.delivery_month,
        })
    }

    /// Applies an operator's update (see [`InstrumentUpdate`]).
    pub fn apply(&mut self, update: &InstrumentUpdate) {
        if let Some(rate) = update.margin_rate_long {
            self.margin_rate_long = rate;
        }
        if let Some(rate) = update.margin_rate_short {
            self.margin_rate_short = rate;
        }
        if let Some(volume) = update.max_order_volume {
            self.max_order_volume = volume;
        }
        if let Some(commission) = update.commission {
            self.commission = commission;
        }
    }

    /// `EXCHANGE.instrument`, the DIFF symbol.
    pub fn symbol(&self) -> String {
        format!("{}.{}", self.exchange_id.as_str(), self.instrument_id)
    }

    pub fn margin_rate(&self, direction: Direction) -> Rate {
        match direction {
            Direction::Buy => self.margin_rate_long,
            Direction::Sell => self.margin_rate_short,
        }
    }

    /// The band a day with `settlement` as the reference price gets (capped: [`price_band`]).
    pub fn band_for(&self, settlement: Price) -> Band {
        price_band(settlement, self.limit_rate, self.price_tick, self.volume_multiple)
    }

    /// Starts a new trading day with `settlement` as the reference price. The band is capped
    /// when the settlement price asks for more than [`price_band`] allows (every shard rolls
    /// alike; the settlement's coordinator logs it).
    pub fn roll_day(&mut self, settlement: Price, close: Price, open_interest: Volume) {
        self.pre_settlement = settlement;
        self.pre_close = close;
        self.pre_open_interest = open_interest;
        let band = self.band_for(settlement);
        self.upper_limit = band.upper;
        self.lower_limit = band.lower;
    }
}

/// The file config/instruments.toml: `[[instrument]]` tables.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentsFile {
    #[serde(default)]
    pub instrument: Vec<InstrumentConfig>,
}

/// Parses and validates an instruments TOML document.
pub fn parse_instruments(toml_text: &str) -> Result<Vec<Instrument>, InstrumentConfigError> {
    let file: InstrumentsFile =
        toml::from_str(toml_text).map_err(|e| InstrumentConfigError(format!("instruments config: {e}")))?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(file.instrument.len());
    for config in &file.instrument {
        if !seen.insert(config.instrument_id.clone()) {
            return Err(InstrumentConfigError(format!("instrument {} listed twice", config.instrument_id)));
        }
        out.push(Instrument::from_config(config)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_rounds_inside_to_the_tick() {
        // IF: 3800.0 +/- 10% on a 0.2 tick
        let band = price_band(price_from_f64(3800.0), rate_from_f64(0.10), price_from_f64(0.2), 300);
        assert_eq!((band.upper, band.lower), (price_from_f64(4180.0), price_from_f64(3420.0)));
        assert!(!band.capped());
        // cu 74010 +/- 7% on a 10 tick: 79190.7 -> 79190, 68829.3 -> 68830
        let band = price_band(price_from_f64(74010.0), rate_from_f64(0.07), price_from_f64(10.0), 5);
        assert_eq!((band.upper, band.lower), (price_from_f64(79190.0), price_from_f64(68830.0)));
    }

    fn config(tick: f64, pre_settlement: f64, limit_rate: f64, multiple: i64) -> InstrumentConfig {
        InstrumentConfig {
            instrument_id: "T1".into(),
            exchange_id: ExchangeId::SHFE,
            product_id: "t".into(),
            volume_multiple: multiple,
            price_tick: tick,
            margin_rate_long: 0.1,
            margin_rate_short: 0.1,
            commission: CommissionConfig::default(),
            limit_rate,
            pre_settlement,
            pre_close: None,
            pre_open_interest: 0,
            max_order_volume: 1,
            status: InstrumentStatus::Trading,
            position_limit: None,
            shard: None,
            delivery_year: None,
            delivery_month: None,
        }
    }

    fn refusal(config: &InstrumentConfig) -> String {
        Instrument::from_config(config).expect_err("refused").0
    }

    fn levels(upper: Price, lower: Price, tick: Price) -> i64 {
        (upper - lower) / tick + 1
    }

    #[test]
    fn listing_refuses_a_band_of_too_many_prices() {
        // The audit's admin create: 1e8 +/- 100 % on a 0.0001 tick is 2e12 prices.
        let why = refusal(&config(0.0001, 100_000_000.0, 1.0, 1));
        assert!(why.contains("price band") && why.contains("at most 1000000"), "{why}");
        // 5e14 +/- 90 % overflowed i64 in the band; out of range now.
        let why = refusal(&config(1.0, 5e14, 0.9, 1));
        assert!(why.contains("pre_settlement"), "{why}");
        // The widest band allowed: 499,999 ticks each side (the lower limit stops at one tick).
        let widest = Instrument::from_config(&config(0.0001, 49.9999, 1.0, 1)).unwrap();
        assert_eq!(levels(widest.upper_limit, widest.lower_limit, widest.price_tick), 999_998);
        let why = refusal(&config(0.0001, 50.0, 1.0, 1));
        assert!(why.contains("price band"), "{why}");
        // Every configured instrument is far inside.
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/instruments.toml")).unwrap();
        for i in parse_instruments(&text).unwrap() {
            assert!(levels(i.upper_limit, i.lower_limit, i.price_tick) < 10_000, "{}", i.instrument_id);
        }
    }

    #[test]
    fn a_negative_position_limit_is_refused() {
        let mut c = config(1.0, 50_000.0, 0.1, 10);
        c.position_limit = Some(-1);
        let e = Instrument::from_config(&c).expect_err("negative").to_string();
        assert!(e.contains("position_limit"), "{e}");
        c.position_limit = Some(0);
        assert_eq!(Instrument::from_config(&c).unwrap().position_limit, Some(0));
    }

    #[test]
    fn listing_refuses_lots_worth_more_than_the_cap() {
        // 9500 x 10,000 a lot is 9.5e7 yuan, but at the upper limit 10450 x 10,000 = 1.045e8.
        let why = refusal(&config(1.0, 9_500.0, 0.1, 10_000));
        assert!(why.contains("worth more than 100000000"), "{why}");
        // The upper limit exactly at the cap is fine: 50000 x 2 x 1000 = 1e8.
        let at_cap = Instrument::from_config(&config(1.0, 50_000.0, 1.0, 1_000)).unwrap();
        assert_eq!(at_cap.upper_limit * at_cap.volume_multiple, MAX_LOT_VALUE);
        // pre_settlement alone beyond the cap, or not a number.
        for pre in [200_000.0, f64::INFINITY, f64::NAN, -1.0, 0.0, 0.00001, 1.5] {
            let why = refusal(&config(1.0, pre, 0.1, 1_000));
            assert!(why.contains("pre_settlement"), "{pre}: {why}");
        }
    }

    #[test]
    fn listing_refuses_numbers_out_of_range() {
        let ok = config(1.0, 5000.0, 0.1, 10);
        Instrument::from_config(&ok).unwrap();
        let refused = |change: &dyn Fn(&mut InstrumentConfig), field: &str| {
            let mut bad = ok.clone();
            change(&mut bad);
            let why = refusal(&bad);
            assert!(why.contains(field), "{field}: {why}");
        };
        refused(&|c| c.volume_multiple = 0, "volume_multiple");
        refused(&|c| c.volume_multiple = MAX_VOLUME_MULTIPLE + 1, "volume_multiple");
        for tick in [0.0, 0.00004, f64::NAN, f64::INFINITY, 1e300] {
            refused(&|c| c.price_tick = tick, "price_tick");
        }
        refused(&|c| c.pre_close = Some(f64::INFINITY), "pre_close");
        refused(&|c| c.pre_close = Some(1e9), "pre_close");
        refused(&|c| c.limit_rate = f64::NAN, "limit_rate");
        refused(&|c| c.margin_rate_long = 1.5, "margin rates");
        refused(&|c| c.max_order_volume = 0, "max_order_volume");
        refused(&|c| c.max_order_volume = MAX_ORDER_VOLUME + 1, "max_order_volume");
        refused(&|c| c.commission.open_per_lot = 1e15, "open_per_lot");
        refused(&|c| c.commission.close_today_per_lot = -1.0, "close_today_per_lot");
        refused(&|c| c.commission.close_rate = 0.5, "close_rate");
        refused(&|c| c.commission.open_rate = f64::NAN, "open_rate");
        // The largest of each is fine.
        let mut top = ok.clone();
        top.max_order_volume = MAX_ORDER_VOLUME;
        top.commission = CommissionConfig {
            open_per_lot: MAX_COMMISSION_PER_LOT,
            open_rate: MAX_COMMISSION_RATE,
            ..Default::default()
        };
        Instrument::from_config(&top).unwrap();
    }

    #[test]
    fn updates_are_bounded_like_the_config() {
        let update = |volume: Option<i64>, commission: Option<CommissionConfig>| {
            InstrumentUpdate::from_values(None, None, volume, commission.as_ref())
        };
        let why = update(Some(1_000_000_000_000), None).unwrap_err();
        assert!(why.contains("max_order_volume must be in 1..=1000000"), "{why}");
        assert!(update(Some(0), None).is_err());
        assert_eq!(update(Some(MAX_ORDER_VOLUME), None).unwrap().max_order_volume, Some(MAX_ORDER_VOLUME));
        let huge = CommissionConfig { open_per_lot: 1e15, ..Default::default() };
        assert!(update(None, Some(huge)).unwrap_err().contains("open_per_lot"));
        let rate = CommissionConfig { close_today_rate: 0.02, ..Default::default() };
        assert!(update(None, Some(rate)).unwrap_err().contains("close_today_rate"));
        assert!(InstrumentUpdate::from_values(Some(f64::NAN), None, None, None).is_err());
        assert!(InstrumentUpdate::from_values(None, Some(1.01), None, None).is_err());
    }

    #[test]
    fn commission_at_the_caps_is_exact_and_beyond_them_saturates() {
        let top = CommissionConfig {
            open_per_lot: MAX_COMMISSION_PER_LOT,
            open_rate: MAX_COMMISSION_RATE,
            ..Default::default()
        }
        .schedule()
        .unwrap();
        // The largest order of the most valuable lot: 1e6 lots worth 1e8 yuan each.
        let (price, multiple) = (MAX_LOT_VALUE, 1);
        let expected = 10_000 * MONEY_SCALE * MAX_ORDER_VOLUME + MAX_LOT_VALUE * MAX_ORDER_VOLUME / 100;
        assert_eq!(top.compute(CommissionKind::Open, price, multiple, MAX_ORDER_VOLUME), expected);
        // The audit's 1e15 yuan a lot (saturated to i64::MAX by the conversion) at 2 lots.
        let absurd = CommissionSchedule { open_per_lot: i64::MAX, open_rate: RATE_SCALE, ..Default::default() };
        assert_eq!(absurd.compute(CommissionKind::Open, 1, 1, 2), i64::MAX);
        assert_eq!(top.compute(CommissionKind::Open, i64::MAX, 1_000, i64::MAX), i64::MAX);
        let by_rate = CommissionSchedule { open_rate: RATE_SCALE, ..Default::default() };
        assert_eq!(by_rate.compute(CommissionKind::Open, i64::MIN, i64::MAX, i64::MAX), i64::MIN);
    }

    #[test]
    fn settlement_caps_the_band_it_cannot_hold() {
        // 400000 +/- 100 % on a 1 tick: 799,999 prices, listed.
        let mut i = Instrument::from_config(&config(1.0, 400_000.0, 1.0, 1)).unwrap();
        assert_eq!(levels(i.upper_limit, i.lower_limit, i.price_tick), 800_000);
        // Settled at the upper limit the band would double: capped to 499,999 ticks each side.
        let settlement = i.upper_limit;
        assert!(i.band_for(settlement).capped_levels);
        i.roll_day(settlement, settlement, 0);
        let tick = i.price_tick;
        assert_eq!((i.upper_limit, i.lower_limit), (settlement + 499_999 * tick, settlement - 499_999 * tick));
        assert!(levels(i.upper_limit, i.lower_limit, tick) <= MAX_BAND_LEVELS);
        // A lot worth 1e8 yuan at the upper limit: the next day's upper limit stays there.
        let mut i = Instrument::from_config(&config(1.0, 50_000.0, 1.0, 1_000)).unwrap();
        let settlement = i.upper_limit;
        i.roll_day(settlement, settlement, 0);
        assert_eq!(i.upper_limit * i.volume_multiple, MAX_LOT_VALUE);
        assert!(i.band_for(settlement).capped_value && !i.band_for(settlement).capped_levels);
        assert!(i.lower_limit <= i.upper_limit);
        // Nothing overflows whatever the inputs.
        for (pre, rate, tick, multiple) in [
            (i64::MAX, RATE_SCALE, 1, 1),
            (i64::MAX, i64::MAX, i64::MAX, i64::MAX),
            (i64::MIN, RATE_SCALE, 7, 1),
            (1, RATE_SCALE, 0, 0),
        ] {
            let band = price_band(pre, rate, tick, multiple);
            assert!(band.lower <= band.upper && band.upper <= MAX_LOT_VALUE, "{band:?}");
            let span = (band.upper as i128 - band.lower as i128) / i128::from(tick.max(1));
            assert!(span < i128::from(MAX_BAND_LEVELS), "{band:?}");
        }
    }

    #[test]
    fn commission_per_lot_and_by_money() {
        let c = CommissionSchedule {
            open_per_lot: money_from_f64(2.0),
            open_rate: rate_from_f64(0.00005),
            ..Default::default()
        };
        // 2 lots cu at 74010 x 5: 2 x 2 + 740100 x 0.00005 = 4 + 37.005
        assert_eq!(c.compute(CommissionKind::Open, price_from_f64(74010.0), 5, 2), money_from_f64(41.005));
    }
}
