//! The pre-open call auction: while an instrument is pre-open its book only collects limit
//! orders (they may cross); at the open one price is found and every crossing order trades at
//! it, in price-time priority, leaving the book uncrossed.
//!
//! The price maximises the volume traded; ties go to the smallest imbalance left at that
//! price, then to the price closest to the reference (the instrument's pre-settlement), then
//! to the lower price.

use super::{Incoming, OrderBook, RestingOrder};
use crate::domain::types::*;

/// One trade of the auction: the bid and the ask order, the lots, at the auction price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuctionFill {
    pub bid: RestingOrder,
    pub ask: RestingOrder,
    pub volume: Volume,
    /// Lots of each left on the book after this trade.
    pub bid_left: Volume,
    pub ask_left: Volume,
}

impl OrderBook {
    /// Rests a pre-open limit order without matching (the book may cross until the auction).
    /// False when the price is off the grid or band, or the id is already in the book.
    pub fn rest_unmatched(&mut self, incoming: &Incoming) -> bool {
        let Some(level) = incoming.limit.and_then(|p| self.level_of(p)) else { return false };
        if self.index.contains_key(&incoming.order_id) || incoming.volume < 1 {
            return false;
        }
        self.rest(incoming, level, incoming.volume);
        true
    }

    /// Whether a crossed book is allowed (pre-open).
    pub fn set_auction(&mut self, on: bool) {
        self.auction = on;
    }

    pub fn in_auction(&self) -> bool {
        self.auction
    }

    /// The auction price and volume for `reference`, if anything crosses.
    pub fn auction_price(&self, reference: Price) -> Option<(Price, Volume)> {
        let mut bids: Vec<(Price, Volume)> = Vec::new();
        let mut asks: Vec<(Price, Volume)> = Vec::new();
        self.for_each_level(Direction::Buy, usize::MAX, |p, v, _| bids.push((p, v)));
        self.for_each_level(Direction::Sell, usize::MAX, |p, v, _| asks.push((p, v)));
        let mut best: Option<(Volume, Volume, Price, Price)> = None; // (volume, imbalance, distance, price)
        for &(p, _) in bids.iter().chain(asks.iter()) {
            let buy: Volume = bids.iter().filter(|&&(b, _)| b >= p).map(|&(_, v)| v).sum();
            let sell: Volume = asks.iter().filter(|&&(a, _)| a <= p).map(|&(_, v)| v).sum();
            let volume = buy.min(sell);
            if volume == 0 {
                continue;
            }
            let key = (volume, (buy - sell).abs(), (p - reference).abs(), p);
            let better = match best {
                None => true,
                Some((bv, bi, bd, bp)) => volume > bv || (volume == bv && (key.1, key.2, key.3) < (bi, bd, bp)),
            };
            if better {
                best = Some(key);
            }
        }
        best.map(|(volume, _, _, price)| (price, volume))
    }

    /// Runs the auction for `reference`: trades every crossing order at one price, best
    /// prices first and in time order within a price, and ends the auction state. Returns the
    /// price and the trades (none when nothing crosses).
    pub fn uncross(&mut self, reference: Price) -> (Option<Price>, Vec<AuctionFill>) {
        self.auction = false;
        let Some((price, mut volume)) = self.auction_price(reference) else { return (None, Vec::new()) };
        let mut bids: Vec<RestingOrder> = Vec::new();
        let mut asks: Vec<RestingOrder> = Vec::new();
        self.for_each_order(Direction::Buy, |o| {
            if o.price >= price {
                bids.push(*o)
            }
        });
        self.for_each_order(Direction::Sell, |o| {
            if o.price <= price {
                asks.push(*o)
            }
        });
        let mut fills = Vec::new();
        let (mut b, mut a) = (0, 0);
        while volume > 0 && b < bids.len() && a < asks.len() {
            let lots = volume.min(bids[b].volume_left).min(asks[a].volume_left);
            bids[b].volume_left -= lots;
            asks[a].volume_left -= lots;
            volume -= lots;
            fills.push(AuctionFill {
                bid: bids[b],
                ask: asks[a],
                volume: lots,
                bid_left: bids[b].volume_left,
                ask_left: asks[a].volume_left,
            });
            if bids[b].volume_left == 0 {
                b += 1;
            }
            if asks[a].volume_left == 0 {
                a += 1;
            }
        }
        for order in bids.iter().chain(asks.iter()) {
            if order.volume_left == 0 {
                self.cancel(order.order_id);
            } else {
                self.reduce(order.order_id, order.volume_left);
            }
        }
        (Some(price), fills)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: u64, owner: u64, direction: Direction, price: Price, volume: Volume) -> Incoming {
        Incoming { order_id: id, owner, direction, limit: Some(price), volume, min_fill: 0, rest_remainder: true }
    }

    #[test]
    fn one_price_maximises_volume_and_leaves_the_book_uncrossed() {
        let mut book = OrderBook::new(1, 80, 120, 16);
        book.set_auction(true);
        // Bids 10@100 (first), 5@100, 5@98; asks 5@90, 10@99, 5@101.
        for o in [
            order(1, 1, Direction::Buy, 100, 10),
            order(2, 2, Direction::Buy, 100, 5),
            order(3, 3, Direction::Buy, 98, 5),
            order(4, 4, Direction::Sell, 90, 5),
            order(5, 5, Direction::Sell, 99, 10),
            order(6, 6, Direction::Sell, 101, 5),
        ] {
            assert!(book.rest_unmatched(&o));
        }
        assert!(book.check_invariants().is_ok(), "crossed is fine in the auction");
        // At 99 and 100: 15 lots (bids >= p: 15; asks <= p: 15); 99 is closer to 95.
        assert_eq!(book.auction_price(95), Some((99, 15)));
        assert_eq!(book.auction_price(105), Some((100, 15)));
        let (price, fills) = book.uncross(95);
        assert_eq!(price, Some(99));
        let traded: Vec<(u64, u64, Volume)> =
            fills.iter().map(|f| (f.bid.order_id, f.ask.order_id, f.volume)).collect();
        // Time priority at 100: order 1 before 2; asks best first: 90 then 99.
        assert_eq!(traded, vec![(1, 4, 5), (1, 5, 5), (2, 5, 5)]);
        assert_eq!((book.best_bid(), book.best_ask()), (Some(98), Some(101)));
        book.check_invariants().unwrap();
        assert!(!book.in_auction());
    }

    proptest::proptest! {
        /// Any set of pre-open orders: every trade at the one auction price, within both
        /// limits, bought == sold == the volume the price promised, time priority kept, and the
        /// book uncrossed and consistent afterwards.
        #[test]
        fn the_auction_is_fair_and_uncrosses(
            orders in proptest::collection::vec((proptest::bool::ANY, 90..111i64, 1..6i64), 0..40),
            reference in 90..111i64,
        ) {
            let mut book = OrderBook::new(1, 80, 120, 64);
            book.set_auction(true);
            for (n, &(buy, price, volume)) in orders.iter().enumerate() {
                let direction = if buy { Direction::Buy } else { Direction::Sell };
                proptest::prop_assert!(book.rest_unmatched(&order(n as u64 + 1, n as u64, direction, price, volume)));
            }
            let promised = book.auction_price(reference);
            let (price, fills) = book.uncross(reference);
            proptest::prop_assert_eq!(price, promised.map(|(p, _)| p));
            let traded: Volume = fills.iter().map(|f| f.volume).sum();
            proptest::prop_assert_eq!(traded, promised.map_or(0, |(_, v)| v));
            for f in &fills {
                let p = price.unwrap();
                proptest::prop_assert!(f.bid.price >= p && f.ask.price <= p, "{f:?} at {p}");
            }
            // Time priority within a price: ids of each side's fills never go back at a level.
            for side in [true, false] {
                let ids: Vec<(Price, u64)> = fills.iter()
                    .map(|f| if side { (-f.bid.price, f.bid.order_id) } else { (f.ask.price, f.ask.order_id) })
                    .collect();
                proptest::prop_assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
            }
            proptest::prop_assert!(book.check_invariants().is_ok(), "{:?}", book.check_invariants());
            if let (Some(bid), Some(ask)) = (book.best_bid(), book.best_ask()) {
                proptest::prop_assert!(bid < ask);
            }
        }
    }

    #[test]
    fn nothing_crosses_nothing_trades() {
        let mut book = OrderBook::new(1, 80, 120, 16);
        book.set_auction(true);
        assert!(book.rest_unmatched(&order(1, 1, Direction::Buy, 95, 3)));
        assert!(book.rest_unmatched(&order(2, 2, Direction::Sell, 96, 3)));
        assert!(!book.rest_unmatched(&order(2, 2, Direction::Sell, 97, 3)), "a duplicate id");
        assert!(!book.rest_unmatched(&order(3, 2, Direction::Sell, 200, 3)), "outside the band");
        assert_eq!(book.uncross(100), (None, Vec::new()));
        assert_eq!(book.resting_count(), 2);
    }
}
