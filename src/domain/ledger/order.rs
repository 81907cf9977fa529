//! A live order as its account sees it: what it has frozen.

use crate::domain::name::ClientOrderId;
use crate::domain::types::*;
use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct LiveOrder {
    pub order_id: u64,
    pub client_order_id: ClientOrderId,
    /// Slot of the owning account in the ledger.
    pub account: u32,
    /// Index of the instrument in the engine's table.
    pub instrument: u32,
    pub direction: Direction,
    pub offset: Offset,
    pub price_type: PriceType,
    pub time_condition: TimeCondition,
    pub volume_condition: VolumeCondition,
    #[serde(with = "fixed4_opt")]
    pub limit_price: Option<Price>,
    pub volume_orign: Volume,
    pub volume_left: Volume,
    /// Open orders: margin and commission frozen per remaining lot (at the limit price, or the
    /// upper limit for orders without one, buy or sell).
    #[serde(with = "fixed4")]
    pub frozen_margin_per_lot: Money,
    #[serde(with = "fixed4")]
    pub frozen_commission_per_lot: Money,
    /// Close orders: lots reserved in the his and today buckets (his is consumed first), and
    /// the commission frozen per lot of each.
    pub frozen_his: Volume,
    pub frozen_today: Volume,
    #[serde(with = "fixed4")]
    pub frozen_commission_his_per_lot: Money,
    #[serde(with = "fixed4")]
    pub frozen_commission_today_per_lot: Money,
    pub insert_time_ns: TimestampNs,
}

impl LiveOrder {
    pub fn is_open(&self) -> bool {
        self.offset == Offset::Open
    }

    /// Margin this order holds right now.
    pub fn frozen_margin(&self) -> Money {
        self.frozen_margin_per_lot * self.volume_left
    }

    /// Commission this order holds right now.
    pub fn frozen_commission(&self) -> Money {
        if self.is_open() {
            self.frozen_commission_per_lot * self.volume_left
        } else {
            self.frozen_commission_his_per_lot * self.frozen_his
                + self.frozen_commission_today_per_lot * self.frozen_today
        }
    }
}
