//! Reject and cancel reasons: each a stable numeric code and an English message.
//! The table is part of the public API (docs/API.md lists it); never renumber.

use serde::{Deserialize, Serialize};

macro_rules! reject_codes {
    ($($variant:ident = $code:literal, $message:literal;)+) => {
        /// Why a command was refused or an order ended without filling.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize,
            rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        #[rkyv(derive(Debug, PartialEq, Eq))]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum RejectCode { $($variant),+ }

        impl RejectCode {
            pub const ALL: &'static [RejectCode] = &[$(RejectCode::$variant),+];
            /// The stable number of this reason.
            pub fn code(self) -> u32 {
                match self { $(RejectCode::$variant => $code),+ }
            }
            pub fn message(self) -> &'static str {
                match self { $(RejectCode::$variant => $message),+ }
            }
            pub fn from_code(code: u32) -> Option<Self> {
                match code { $($code => Some(RejectCode::$variant),)+ _ => None }
            }
        }
    };
}

reject_codes! {
    // Accounts and funds: 1xxx
    AccountNotFound = 1001, "account does not exist";
    AccountExists = 1002, "account already exists";
    AccountFrozen = 1003, "account is frozen";
    InvalidAmount = 1004, "amount must be positive, at most 1e12 per transfer and 1e14 held";
    InsufficientFundsToWithdraw = 1005, "withdrawal exceeds available funds";
    InvalidAccountId = 1006, "account id must be 1..=31 bytes";
    // Orders: 2xxx
    InstrumentNotFound = 2001, "instrument does not exist";
    InstrumentNotTrading = 2002, "instrument is not trading";
    InvalidVolume = 2003, "volume must be between 1 and the instrument's max_order_volume";
    PriceNotOnTick = 2004, "price is not a multiple of the price tick";
    PriceOutOfBand = 2005, "price is outside the daily limit band";
    InsufficientPosition = 2006, "not enough closable position";
    InsufficientFunds = 2007, "not enough available funds for margin and commission";
    SelfTrade = 2008, "order would trade with the same account's resting order";
    PositionLimitExceeded = 2009, "order would exceed the account's position limit";
    UnsupportedTimeCondition = 2010, "time condition not supported (use GFD, GTC or IOC)";
    InvalidVolumeCondition = 2011, "MIN and ALL need IOC, and MIN needs 1 <= min_volume <= volume";
    DuplicateOrderId = 2012, "order id is already used by a live order of this account";
    MarketOrderMustBeImmediate = 2013, "market orders (ANY) are immediate: use IOC";
    LimitPriceRequired = 2014, "LIMIT orders need a limit_price";
    InvalidOrderId = 2015, "client order id must be 1..=63 bytes";
    InstrumentExists = 2017, "an instrument of that id is already listed";
    AuctionOrdersOnly = 2016, "pre-open auction: only LIMIT GFD or GTC orders of volume condition ANY, cancels and volume decreases";
    // Cancel and modify: 3xxx
    OrderNotFound = 3001, "no such live order for this account";
    InvalidModify = 3002, "modify needs a new price or a new volume, different from the current";
    ModifyInFlight = 3003, "an earlier modify of this order is still in flight; retry once it is answered";
    // Order endings that are not errors of the command
    NotFilledImmediately = 3101, "not enough volume at acceptable prices to fill immediately";
    NoCounterparty = 3102, "no opposite orders to trade with";
    CancelledByUser = 3103, "cancelled by the user";
    CancelledAtSettlement = 3104, "cancelled at daily settlement";
    ForcedLiquidation = 3105, "cancelled for forced liquidation";
    OutsideNewPriceBand = 3106, "cancelled: outside the new day's price band";
    // Settlement and admin: 4xxx
    InvalidSettlementPrice = 4001, "settlement price must be on the price tick and inside the day's band";
    InvalidTradingDay = 4002, "trading day must be a valid date after the current one";
    NothingToLiquidate = 4003, "account has no position to liquidate";
    NotShardedYet = 4004, "operator command not available as a command on the sharded server (settlement and forced liquidation have admin routes)";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for &code in RejectCode::ALL {
            assert!(seen.insert(code.code()), "duplicate code {}", code.code());
            assert_eq!(RejectCode::from_code(code.code()), Some(code));
            assert!(!code.message().is_empty());
        }
    }
}
