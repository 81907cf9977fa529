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
    /// The engine's fixed-point schedule; refused when a value is negative or not finite.
    pub fn schedule(&self) -> Result<CommissionSchedule, &'static str> {
        let c = self;
        let values =
            [c.open_per_lot, c.close_per_lot, c.close_today_per_lot, c.open_rate, c.close_rate, c.close_today_rate];
        if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err("commission values must be non-negative");
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
    pub fn compute(&self, kind: CommissionKind, price: Price, volume_multiple: i64, volume: Volume) -> Money {
        let (per_lot, rate) = match kind {
            CommissionKind::Open => (self.open_per_lot, self.open_rate),
            CommissionKind::Close => (self.close_per_lot, self.close_rate),
            CommissionKind::CloseToday => (self.close_today_per_lot, self.close_today_rate),
        };
        per_lot * volume + apply_rate(notional(price, volume_multiple, volume), rate)
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
    /// An update from config-style values, checked as the config is (rates in [0, 1], a
    /// positive largest order, non-negative finite commissions).
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
        if max_order_volume.is_some_and(|v| v < 1) {
            return Err("max_order_volume must be positive".into());
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

/// Upper and lower limit for a settlement price: settlement x (1 +/- rate), the upper rounded
/// down and the lower rounded up to the tick, so both are inside the band.
pub fn price_band(pre_settlement: Price, limit_rate: Rate, price_tick: Price) -> (Price, Price) {
    let width = apply_rate(pre_settlement, limit_rate);
    let upper = (pre_settlement + width).div_euclid(price_tick) * price_tick;
    let lower_raw = (pre_settlement - width).max(price_tick);
    let lower = (lower_raw + price_tick - 1).div_euclid(price_tick) * price_tick;
    (upper, lower.min(upper))
}

impl Instrument {
    pub fn from_config(config: &InstrumentConfig) -> Result<Self, InstrumentConfigError> {
        let fail = |what: &str| InstrumentConfigError(format!("instrument {}: {what}", config.instrument_id));
        let instrument_id = InstrumentId::new(&config.instrument_id).ok_or_else(|| fail("id must be 1..=31 bytes"))?;
        if config.volume_multiple <= 0 {
            return Err(fail("volume_multiple must be positive"));
        }
        let price_tick = price_from_f64(config.price_tick);
        if price_tick <= 0 {
            return Err(fail("price_tick must be positive"));
        }
        let pre_settlement = price_from_f64(config.pre_settlement);
        if pre_settlement <= 0 || pre_settlement % price_tick != 0 {
            return Err(fail("pre_settlement must be a positive multiple of price_tick"));
        }
        let rates = [config.margin_rate_long, config.margin_rate_short, config.limit_rate];
        if rates.iter().any(|r| !(0.0..=1.0).contains(r)) || config.limit_rate <= 0.0 {
            return Err(fail("margin rates must be in [0, 1] and limit_rate in (0, 1]"));
        }
        if config.max_order_volume <= 0 {
            return Err(fail("max_order_volume must be positive"));
        }
        let commission = config.commission.schedule().map_err(fail)?;
        let limit_rate = rate_from_f64(config.limit_rate);
        let (upper_limit, lower_limit) = price_band(pre_settlement, limit_rate, price_tick);
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

    /// Starts a new trading day with `settlement` as the reference price.
    pub fn roll_day(&mut self, settlement: Price, close: Price, open_interest: Volume) {
        self.pre_settlement = settlement;
        self.pre_close = close;
        self.pre_open_interest = open_interest;
        let (upper, lower) = price_band(settlement, self.limit_rate, self.price_tick);
        self.upper_limit = upper;
        self.lower_limit = lower;
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
        let (up, low) = price_band(price_from_f64(3800.0), rate_from_f64(0.10), price_from_f64(0.2));
        assert_eq!((up, low), (price_from_f64(4180.0), price_from_f64(3420.0)));
        // cu 74010 +/- 7% on a 10 tick: 79190.7 -> 79190, 68829.3 -> 68830
        let (up, low) = price_band(price_from_f64(74010.0), rate_from_f64(0.07), price_from_f64(10.0));
        assert_eq!((up, low), (price_from_f64(79190.0), price_from_f64(68830.0)));
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
