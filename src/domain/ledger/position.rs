//! One account's position in one instrument: four buckets (long/short x today/his).
//!
//! Costs are kept as money totals, never as average prices, so they are exact: closing part of a
//! bucket removes its proportional share (the whole remainder on the last lot), and whatever
//! rounding that share has stays in the bucket, which keeps profits zero-sum to the unit.

use crate::domain::types::*;
use serde::{Deserialize, Serialize};

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
pub struct Bucket {
    /// Lots held.
    pub volume: Volume,
    /// Lots reserved by live close orders.
    pub frozen: Volume,
    /// Sum of open price x multiple x lots (for open price and float profit).
    pub open_cost: Money,
    /// Sum of position price x multiple x lots: open price today, settlement price for his.
    pub position_cost: Money,
}

impl Bucket {
    pub fn closable(&self) -> Volume {
        self.volume - self.frozen
    }

    pub fn add(&mut self, price: Price, volume_multiple: i64, volume: Volume) {
        let value = notional(price, volume_multiple, volume);
        self.volume += volume;
        self.open_cost += value;
        self.position_cost += value;
    }

    /// Takes `volume` lots out; returns (open cost, position cost) of what was taken.
    pub fn remove(&mut self, volume: Volume) -> (Money, Money) {
        debug_assert!(volume > 0 && volume <= self.volume);
        let share = |total: Money| -> Money {
            if volume == self.volume {
                total
            } else if let Some(product) = total.checked_mul(volume) {
                product / self.volume
            } else {
                (total as i128 * volume as i128 / self.volume as i128) as Money
            }
        };
        let (open, position) = (share(self.open_cost), share(self.position_cost));
        self.volume -= volume;
        self.open_cost -= open;
        self.position_cost -= position;
        (open, position)
    }
}

/// Which side of a position: long positions are opened by buying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Long,
    Short,
}

impl Side {
    /// The side an order opens (BUY opens long) ...
    pub fn opened_by(direction: Direction) -> Side {
        match direction {
            Direction::Buy => Side::Long,
            Direction::Sell => Side::Short,
        }
    }

    /// ... and the side it closes (SELL closes long).
    pub fn closed_by(direction: Direction) -> Side {
        match direction {
            Direction::Buy => Side::Short,
            Direction::Sell => Side::Long,
        }
    }
}

#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Position {
    /// Index of the instrument in the engine's instrument table.
    pub instrument: u32,
    pub long_today: Bucket,
    pub long_his: Bucket,
    pub short_today: Bucket,
    pub short_his: Bucket,
    /// Lots of live open orders not yet filled (for the position limit check).
    pub pending_open: Volume,
    /// Margin of both sides, cached: it changes only with fills and settlement, and the
    /// pre-trade check reads it on every order (`Account::refresh_margin` keeps it true).
    #[serde(with = "fixed4")]
    pub margin: Money,
}

impl Position {
    pub fn new(instrument: u32) -> Self {
        Self { instrument, ..Default::default() }
    }

    pub fn bucket(&self, side: Side, today: bool) -> &Bucket {
        match (side, today) {
            (Side::Long, true) => &self.long_today,
            (Side::Long, false) => &self.long_his,
            (Side::Short, true) => &self.short_today,
            (Side::Short, false) => &self.short_his,
        }
    }

    pub fn bucket_mut(&mut self, side: Side, today: bool) -> &mut Bucket {
        match (side, today) {
            (Side::Long, true) => &mut self.long_today,
            (Side::Long, false) => &mut self.long_his,
            (Side::Short, true) => &mut self.short_today,
            (Side::Short, false) => &mut self.short_his,
        }
    }

    pub fn volume(&self, side: Side) -> Volume {
        self.bucket(side, true).volume + self.bucket(side, false).volume
    }

    pub fn position_cost(&self, side: Side) -> Money {
        self.bucket(side, true).position_cost + self.bucket(side, false).position_cost
    }

    pub fn open_cost(&self, side: Side) -> Money {
        self.bucket(side, true).open_cost + self.bucket(side, false).open_cost
    }

    /// Profit of one side against the position price, marked at `last`.
    pub fn position_profit(&self, side: Side, last: Price, volume_multiple: i64) -> Money {
        let value = notional(last, volume_multiple, self.volume(side));
        match side {
            Side::Long => value - self.position_cost(side),
            Side::Short => self.position_cost(side) - value,
        }
    }

    /// Profit of one side against the open price, marked at `last`.
    pub fn float_profit(&self, side: Side, last: Price, volume_multiple: i64) -> Money {
        let value = notional(last, volume_multiple, self.volume(side));
        match side {
            Side::Long => value - self.open_cost(side),
            Side::Short => self.open_cost(side) - value,
        }
    }

    /// Margin of one side: position price x multiple x volume x margin rate.
    pub fn margin(&self, side: Side, rate: Rate) -> Money {
        apply_rate(self.position_cost(side), rate)
    }

    pub fn is_empty(&self) -> bool {
        [&self.long_today, &self.long_his, &self.short_today, &self.short_his]
            .iter()
            .all(|b| b.volume == 0 && b.frozen == 0)
    }

    /// Settlement: his and today merge into his, repriced at `settlement`.
    pub fn roll_to_his(&mut self, settlement: Price, volume_multiple: i64) {
        for side in [Side::Long, Side::Short] {
            let today = *self.bucket(side, true);
            let his = self.bucket_mut(side, false);
            his.volume += today.volume;
            his.frozen += today.frozen;
            his.open_cost += today.open_cost;
            his.position_cost = notional(settlement, volume_multiple, his.volume);
            *self.bucket_mut(side, true) = Bucket::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportional_removal_keeps_totals_exact() {
        let mut b = Bucket::default();
        b.add(100, 1, 1);
        b.add(101, 1, 1);
        b.add(101, 1, 1); // cost 302 over 3 lots
        assert_eq!(b.remove(1), (100, 100)); // 302/3 = 100 (floor); 202 stays
        assert_eq!(b.remove(2), (202, 202)); // last lots take the exact remainder
        assert_eq!(b, Bucket::default());
    }

    #[test]
    fn profits_and_margin() {
        let mut p = Position::new(0);
        p.bucket_mut(Side::Long, true).add(price_from_f64(3800.0), 300, 2);
        p.bucket_mut(Side::Short, false).add(price_from_f64(3810.0), 300, 1);
        let last = price_from_f64(3805.0);
        assert_eq!(p.position_profit(Side::Long, last, 300), money_from_f64(3_000.0));
        assert_eq!(p.position_profit(Side::Short, last, 300), money_from_f64(1_500.0));
        // 3800 x 300 x 2 x 12% = 273,600
        assert_eq!(p.margin(Side::Long, rate_from_f64(0.12)), money_from_f64(273_600.0));
        p.roll_to_his(price_from_f64(3790.0), 300);
        assert_eq!(p.long_his.volume, 2);
        assert_eq!(p.long_his.position_cost, money_from_f64(3790.0 * 300.0 * 2.0));
        assert_eq!(p.long_his.open_cost, money_from_f64(3800.0 * 300.0 * 2.0));
        assert_eq!(p.long_today, Bucket::default());
    }
}
