//! The static pre-trade checks of SPEC §2, shared by the single engine and the shard engine so
//! both refuse the same orders with the same codes, in the same order.

use crate::domain::command::InsertOrder;
use crate::domain::instrument::{Instrument, InstrumentStatus};
use crate::domain::risk::RejectCode;
use crate::domain::types::*;

/// A price on the instrument's tick grid and inside its daily band.
pub fn check_price(inst: &Instrument, price: Price) -> Result<(), RejectCode> {
    if price <= 0 || price % inst.price_tick != 0 {
        return Err(RejectCode::PriceNotOnTick);
    }
    if price < inst.lower_limit || price > inst.upper_limit {
        return Err(RejectCode::PriceOutOfBand);
    }
    Ok(())
}

/// The order's own checks against its (found) instrument, first failing one reported:
/// trading status, time condition, volume, volume condition, price type and price.
pub fn check_order(inst: &Instrument, order: &InsertOrder) -> Result<(), RejectCode> {
    if inst.status == InstrumentStatus::PreOpen {
        let auction_order = order.price_type == PriceType::Limit
            && matches!(order.time_condition, TimeCondition::Gfd | TimeCondition::Gtc)
            && order.volume_condition == VolumeCondition::Any;
        if !auction_order {
            return Err(RejectCode::AuctionOrdersOnly);
        }
    } else if inst.status != InstrumentStatus::Trading {
        return Err(RejectCode::InstrumentNotTrading);
    }
    if !matches!(order.time_condition, TimeCondition::Gfd | TimeCondition::Gtc | TimeCondition::Ioc) {
        return Err(RejectCode::UnsupportedTimeCondition);
    }
    if order.volume < 1 || order.volume > inst.max_order_volume {
        return Err(RejectCode::InvalidVolume);
    }
    let immediate = order.time_condition == TimeCondition::Ioc;
    match order.volume_condition {
        VolumeCondition::Any => {}
        VolumeCondition::All if immediate => {}
        VolumeCondition::Min if immediate && (1..=order.volume).contains(&order.min_volume) => {}
        _ => return Err(RejectCode::InvalidVolumeCondition),
    }
    match order.price_type {
        PriceType::Limit => check_price(inst, order.limit_price.ok_or(RejectCode::LimitPriceRequired)?)?,
        PriceType::Any if !immediate => return Err(RejectCode::MarketOrderMustBeImmediate),
        _ => {}
    }
    Ok(())
}
