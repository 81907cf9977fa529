//! Tick snapshots: the quote's prices and depth at a moment, as DIFF's `ticks/<sym>` records.

use super::quote::{Quote, DEPTH};
use crate::domain::types::{Money, Price, TimestampNs, Volume};
use serde::{Deserialize, Serialize};

/// One tick. Depth arrays are indexed from the best level (`bid_price[0]` is `bid_price1`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Tick {
    pub datetime_ns: TimestampNs,
    #[serde(with = "crate::domain::types::fixed4")]
    pub last_price: Price,
    #[serde(with = "crate::domain::types::fixed4_opt")]
    pub average: Option<Price>,
    #[serde(with = "crate::domain::types::fixed4_opt")]
    pub highest: Option<Price>,
    #[serde(with = "crate::domain::types::fixed4_opt")]
    pub lowest: Option<Price>,
    #[serde(with = "crate::domain::types::fixed4_opt_array")]
    pub bid_price: [Option<Price>; DEPTH],
    pub bid_volume: [Volume; DEPTH],
    #[serde(with = "crate::domain::types::fixed4_opt_array")]
    pub ask_price: [Option<Price>; DEPTH],
    pub ask_volume: [Volume; DEPTH],
    /// The day's volume and turnover so far.
    pub volume: Volume,
    #[serde(with = "crate::domain::types::fixed4")]
    pub amount: Money,
    pub open_interest: Volume,
}

impl Tick {
    /// A snapshot of `quote` stamped `ts`.
    #[inline]
    pub fn from_quote(quote: &Quote, ts: TimestampNs) -> Self {
        Tick {
            datetime_ns: ts,
            last_price: quote.last_price,
            average: quote.average,
            highest: quote.highest,
            lowest: quote.lowest,
            bid_price: quote.bid_price,
            bid_volume: quote.bid_volume,
            ask_price: quote.ask_price,
            ask_volume: quote.ask_volume,
            volume: quote.volume,
            amount: quote.amount,
            open_interest: quote.open_interest,
        }
    }
}
