//! The order book of one instrument: price-time priority matching.
//!
//! Layout for speed: price levels live in a flat array indexed by tick offset from the lower
//! price limit (Chinese futures always have a daily price band, so the array is bounded), each
//! level is an intrusive FIFO of slab nodes, and a two-level bitmap finds the next non-empty
//! level. Nothing allocates per operation once the slab and the id index have grown to the peak.
//!
//! The book knows nothing of accounts or money: `owner` is an opaque key used only for
//! self-trade prevention.

mod arena;
mod auction;
mod bitset;
pub use auction::AuctionFill;

use crate::domain::types::{Direction, Price, Volume};
use arena::{Arena, OrderIndex, NIL};
pub use bitset::LevelBitset;
use serde::{Deserialize, Serialize};

/// An order resting in the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestingOrder {
    pub order_id: u64,
    pub owner: u64,
    pub direction: Direction,
    pub price: Price,
    pub volume_left: Volume,
}

/// An order arriving at the book. The caller has already checked tick and band for `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub order_id: u64,
    pub owner: u64,
    pub direction: Direction,
    /// Worst acceptable price; None matches at any price (market order).
    pub limit: Option<Price>,
    pub volume: Volume,
    /// What must fill immediately or nothing happens: 0 for ANY, `volume` for ALL (FOK).
    pub min_fill: Volume,
    /// Whether an unfilled remainder rests (GFD/GTC limit) or is cancelled (IOC, market).
    pub rest_remainder: bool,
}

/// One match between the incoming order and a resting (maker) order, at the maker's price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Fill {
    pub maker_order_id: u64,
    pub maker_owner: u64,
    pub price: Price,
    pub volume: Volume,
    pub maker_volume_left: Volume,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOutcome {
    /// The order would have traded with a resting order of the same owner; nothing happened.
    SelfTrade,
    /// Less than `min_fill` could trade at once; nothing happened.
    MinFillNotMet { available: Volume },
    /// The limit price is off the book's tick grid or band; nothing happened.
    BadPrice,
    /// Trades happened (possibly none); `rested` lots now rest, `cancelled` lots were dropped.
    Done { filled: Volume, rested: Volume, cancelled: Volume },
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Level {
    head: u32,
    tail: u32,
    volume: Volume,
    count: u32,
}

const EMPTY_LEVEL: Level = Level { head: NIL, tail: NIL, volume: 0, count: 0 };

#[derive(Clone, Debug, Serialize, Deserialize)]
struct BookSide {
    levels: Vec<Level>,
    occupied: LevelBitset,
    /// Index of the best level (highest bid / lowest ask), if any.
    best: Option<usize>,
    direction: Direction,
    /// The `DEPTH_TRACKED`-th best occupied level, when known and the side has that many: a
    /// change strictly worse than it cannot alter the published depth.
    depth_edge: Option<usize>,
}

/// Levels per side that market data publishes (DIFF quotes carry five).
pub const DEPTH_TRACKED: usize = 5;

impl BookSide {
    fn new(level_count: usize, direction: Direction) -> Self {
        Self {
            levels: vec![EMPTY_LEVEL; level_count],
            occupied: LevelBitset::new(level_count),
            best: None,
            direction,
            depth_edge: None,
        }
    }

    fn is_better(&self, a: usize, b: usize) -> bool {
        match self.direction {
            Direction::Buy => a > b,
            Direction::Sell => a < b,
        }
    }

    /// The next occupied level strictly worse than `index`.
    fn next_worse(&self, index: usize) -> Option<usize> {
        match self.direction {
            Direction::Buy => index.checked_sub(1).and_then(|i| self.occupied.last_at_or_below(i)),
            Direction::Sell => self.occupied.first_at_or_above(index + 1),
        }
    }

    /// Whether a change at `level` may alter the top `DEPTH_TRACKED` levels.
    fn touches_depth(&self, level: usize) -> bool {
        !matches!(self.depth_edge, Some(edge) if self.is_better(edge, level))
    }

    fn nth_level(&self, n: usize) -> Option<usize> {
        let mut level = self.best?;
        for _ in 1..n {
            level = self.next_worse(level)?;
        }
        Some(level)
    }

    fn mark_empty(&mut self, index: usize) {
        self.occupied.clear(index);
        if self.best == Some(index) {
            self.best = self.next_worse(index);
        }
    }

    fn mark_occupied(&mut self, index: usize) {
        self.occupied.set(index);
        match self.best {
            Some(best) if !self.is_better(index, best) => {}
            _ => self.best = Some(index),
        }
    }
}

/// Price-time priority order book for one instrument.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderBook {
    price_tick: Price,
    lower_limit: Price,
    upper_limit: Price,
    bids: BookSide,
    asks: BookSide,
    arena: Arena,
    index: OrderIndex,
    /// Set when a change may have altered the top levels of either side; cleared by
    /// `take_depth_changed`. Lets market data skip re-reading depth after changes deep in the book.
    depth_dirty: bool,
    /// Pre-open: orders rest without matching and the book may cross (`auction.rs`).
    #[serde(default)]
    auction: bool,
}

impl OrderBook {
    /// A book for prices in `[lower_limit, upper_limit]` on a grid of `price_tick`.
    /// `capacity` pre-sizes the slab and index for that many resting orders.
    pub fn new(price_tick: Price, lower_limit: Price, upper_limit: Price, capacity: usize) -> Self {
        assert!(price_tick > 0, "price tick must be positive");
        assert!(upper_limit >= lower_limit, "upper limit below lower limit");
        let level_count = ((upper_limit - lower_limit) / price_tick + 1) as usize;
        let mut index = OrderIndex::default();
        index.reserve(capacity);
        Self {
            price_tick,
            lower_limit,
            upper_limit,
            bids: BookSide::new(level_count, Direction::Buy),
            asks: BookSide::new(level_count, Direction::Sell),
            arena: Arena::with_capacity(capacity),
            index,
            depth_dirty: true,
            auction: false,
        }
    }

    /// Reserves the slab and the index for `capacity` resting orders in all (as `new`).
    pub fn reserve(&mut self, capacity: usize) {
        self.arena.reserve(capacity);
        self.index.reserve(capacity.saturating_sub(self.index.len()));
    }

    pub fn price_tick(&self) -> Price {
        self.price_tick
    }

    pub fn lower_limit(&self) -> Price {
        self.lower_limit
    }

    pub fn upper_limit(&self) -> Price {
        self.upper_limit
    }

    /// The level index of `price`, if it is on the grid and inside the band.
    pub fn level_of(&self, price: Price) -> Option<usize> {
        if price < self.lower_limit || price > self.upper_limit {
            return None;
        }
        let offset = price - self.lower_limit;
        (offset % self.price_tick == 0).then_some((offset / self.price_tick) as usize)
    }

    fn price_of(&self, level: usize) -> Price {
        self.lower_limit + level as Price * self.price_tick
    }

    fn side(&self, direction: Direction) -> &BookSide {
        match direction {
            Direction::Buy => &self.bids,
            Direction::Sell => &self.asks,
        }
    }

    fn side_mut(&mut self, direction: Direction) -> &mut BookSide {
        match direction {
            Direction::Buy => &mut self.bids,
            Direction::Sell => &mut self.asks,
        }
    }

    pub fn best_bid(&self) -> Option<Price> {
        self.bids.best.map(|l| self.price_of(l))
    }

    pub fn best_ask(&self) -> Option<Price> {
        self.asks.best.map(|l| self.price_of(l))
    }

    /// Best price on `direction`'s side.
    pub fn best(&self, direction: Direction) -> Option<Price> {
        self.side(direction).best.map(|l| self.price_of(l))
    }

    /// The price of the `n`-th occupied level (1 = best) on `direction`'s side, or the worst
    /// occupied one if there are fewer than `n`.
    pub fn nth_level_price(&self, direction: Direction, n: usize) -> Option<Price> {
        let side = self.side(direction);
        let mut level = side.best?;
        for _ in 1..n {
            match side.next_worse(level) {
                Some(next) => level = next,
                None => break,
            }
        }
        Some(self.price_of(level))
    }

    /// Calls `visit(price, volume, order_count)` for up to `max_levels` levels from the best.
    pub fn for_each_level(&self, direction: Direction, max_levels: usize, mut visit: impl FnMut(Price, Volume, u32)) {
        let side = self.side(direction);
        let mut cursor = side.best;
        for _ in 0..max_levels {
            let Some(level) = cursor else { break };
            let l = &side.levels[level];
            visit(self.price_of(level), l.volume, l.count);
            cursor = side.next_worse(level);
        }
    }

    /// All resting orders of one side, best price first, in time priority within a level.
    pub fn for_each_order(&self, direction: Direction, mut visit: impl FnMut(&RestingOrder)) {
        let side = self.side(direction);
        let mut cursor = side.best;
        while let Some(level) = cursor {
            let mut slot = side.levels[level].head;
            while slot != NIL {
                let node = self.arena.get(slot);
                visit(&node.order);
                slot = node.next;
            }
            cursor = side.next_worse(level);
        }
    }

    pub fn order(&self, order_id: u64) -> Option<&RestingOrder> {
        self.index.get(&order_id).map(|&slot| &self.arena.get(slot).order)
    }

    pub fn resting_count(&self) -> usize {
        self.arena.live()
    }

    /// Records a change at `level` of `direction`'s side for depth tracking.
    #[inline]
    fn note_change(&mut self, direction: Direction, level: usize) {
        let side = self.side_mut(direction);
        if side.touches_depth(level) {
            side.depth_edge = None;
            self.depth_dirty = true;
        }
    }

    /// Whether the top `DEPTH_TRACKED` levels of either side may have changed since the last
    /// call (conservative: may say yes when they did not, never no when they did).
    pub fn take_depth_changed(&mut self) -> bool {
        for side in [&mut self.bids, &mut self.asks] {
            if side.depth_edge.is_none() {
                side.depth_edge = side.nth_level(DEPTH_TRACKED);
            }
        }
        std::mem::take(&mut self.depth_dirty)
    }

    /// Match `incoming` against the book, pushing one `Fill` per maker into `fills` (which is
    /// not cleared). Nothing changes unless the outcome is `Done`.
    pub fn submit(&mut self, incoming: &Incoming, fills: &mut Vec<Fill>) -> MatchOutcome {
        debug_assert!(incoming.volume > 0 && incoming.min_fill <= incoming.volume);
        let limit_level = match incoming.limit {
            Some(price) => match self.level_of(price) {
                Some(level) => Some(level),
                None => return MatchOutcome::BadPrice,
            },
            None => None,
        };
        if self.index.contains_key(&incoming.order_id) {
            return MatchOutcome::BadPrice;
        }
        // Dry run first: self-trade prevention and fill-or-kill must leave the book untouched.
        let (available, self_trade) = self.scan_crossing(incoming, limit_level);
        if self_trade {
            return MatchOutcome::SelfTrade;
        }
        if available < incoming.min_fill {
            return MatchOutcome::MinFillNotMet { available };
        }
        let filled = self.take(incoming, limit_level, fills);
        let remainder = incoming.volume - filled;
        if remainder > 0 && incoming.rest_remainder {
            if let Some(level) = limit_level {
                self.rest(incoming, level, remainder);
                return MatchOutcome::Done { filled, rested: remainder, cancelled: 0 };
            }
        }
        MatchOutcome::Done { filled, rested: 0, cancelled: remainder }
    }

    /// Whether `incoming` would be refused for self-trade right now (nothing changes).
    pub fn would_self_trade(&self, incoming: &Incoming) -> bool {
        let Some(limit_level) = incoming.limit.map(|p| self.level_of(p)) else {
            return self.scan_crossing(incoming, None).1;
        };
        limit_level.is_some_and(|level| self.scan_crossing(incoming, Some(level)).1)
    }

    fn crosses(direction: Direction, maker_level: usize, limit_level: Option<usize>) -> bool {
        match (direction, limit_level) {
            (_, None) => true,
            (Direction::Buy, Some(limit)) => maker_level <= limit,
            (Direction::Sell, Some(limit)) => maker_level >= limit,
        }
    }

    /// How much of `incoming` could trade now, and whether it would meet its own owner first.
    fn scan_crossing(&self, incoming: &Incoming, limit_level: Option<usize>) -> (Volume, bool) {
        let makers = self.side(incoming.direction.opposite());
        let mut available: Volume = 0;
        let mut cursor = makers.best;
        while let Some(level) = cursor {
            if available >= incoming.volume || !Self::crosses(incoming.direction, level, limit_level) {
                break;
            }
            let mut slot = makers.levels[level].head;
            while slot != NIL && available < incoming.volume {
                let node = self.arena.get(slot);
                if node.order.owner == incoming.owner {
                    return (available, true);
                }
                available += node.order.volume_left;
                slot = node.next;
            }
            cursor = makers.next_worse(level);
        }
        (available.min(incoming.volume), false)
    }

    fn take(&mut self, incoming: &Incoming, limit_level: Option<usize>, fills: &mut Vec<Fill>) -> Volume {
        let maker_direction = incoming.direction.opposite();
        let mut remaining = incoming.volume;
        while remaining > 0 {
            let Some(level) = self.side(maker_direction).best else {
                break;
            };
            if !Self::crosses(incoming.direction, level, limit_level) {
                break;
            }
            let price = self.price_of(level);
            let mut slot = self.side(maker_direction).levels[level].head;
            while slot != NIL && remaining > 0 {
                let node = self.arena.get_mut(slot);
                let volume = remaining.min(node.order.volume_left);
                node.order.volume_left -= volume;
                remaining -= volume;
                let maker = node.order;
                let next = node.next;
                fills.push(Fill {
                    maker_order_id: maker.order_id,
                    maker_owner: maker.owner,
                    price,
                    volume,
                    maker_volume_left: maker.volume_left,
                });
                let side = self.side_mut(maker_direction);
                side.levels[level].volume -= volume;
                self.note_change(maker_direction, level);
                if maker.volume_left == 0 {
                    self.unlink(maker_direction, level, slot);
                    self.index.remove(&maker.order_id);
                    self.arena.remove(slot);
                }
                slot = next;
            }
        }
        incoming.volume - remaining
    }

    fn rest(&mut self, incoming: &Incoming, level: usize, volume: Volume) {
        let order = RestingOrder {
            order_id: incoming.order_id,
            owner: incoming.owner,
            direction: incoming.direction,
            price: self.price_of(level),
            volume_left: volume,
        };
        let slot = self.arena.insert(order);
        self.index.insert(order.order_id, slot);
        self.link_tail(incoming.direction, level, slot, volume);
    }

    fn link_tail(&mut self, direction: Direction, level: usize, slot: u32, volume: Volume) {
        self.note_change(direction, level);
        let tail = self.side(direction).levels[level].tail;
        {
            let node = self.arena.get_mut(slot);
            node.prev = tail;
            node.next = NIL;
        }
        if tail != NIL {
            self.arena.get_mut(tail).next = slot;
        }
        let side = self.side_mut(direction);
        let l = &mut side.levels[level];
        if l.head == NIL {
            l.head = slot;
        }
        l.tail = slot;
        l.volume += volume;
        l.count += 1;
        if l.count == 1 {
            side.mark_occupied(level);
        }
    }

    /// Detach `slot` from its level's FIFO (volume bookkeeping is the caller's).
    fn unlink(&mut self, direction: Direction, level: usize, slot: u32) {
        self.note_change(direction, level);
        let (prev, next) = {
            let node = self.arena.get(slot);
            (node.prev, node.next)
        };
        if prev != NIL {
            self.arena.get_mut(prev).next = next;
        }
        if next != NIL {
            self.arena.get_mut(next).prev = prev;
        }
        let side = self.side_mut(direction);
        let l = &mut side.levels[level];
        if l.head == slot {
            l.head = next;
        }
        if l.tail == slot {
            l.tail = prev;
        }
        l.count -= 1;
        if l.count == 0 {
            debug_assert_eq!(l.volume, 0);
            side.mark_empty(level);
        }
    }

    /// Removes a resting order; returns it as it was (with its remaining volume).
    pub fn cancel(&mut self, order_id: u64) -> Option<RestingOrder> {
        let slot = self.index.remove(&order_id)?;
        let order = self.arena.get(slot).order;
        let level = self.level_of(order.price).expect("resting order price is on the grid");
        self.side_mut(order.direction).levels[level].volume -= order.volume_left;
        self.unlink(order.direction, level, slot);
        self.arena.remove(slot);
        Some(order)
    }

    /// Moves a resting order to `new_price` with `new_volume` lots, at the back of the queue there
    /// (it loses time priority), trading first with whatever crosses. Keeps the order's slab slot
    /// and index entry, so a move costs one hash lookup. None if the order is not resting;
    /// `SelfTrade` or `BadPrice` leave everything as it was.
    pub fn reprice(
        &mut self,
        order_id: u64,
        new_price: Price,
        new_volume: Volume,
        fills: &mut Vec<Fill>,
    ) -> Option<MatchOutcome> {
        let slot = *self.index.get(&order_id)?;
        if new_volume <= 0 {
            return Some(MatchOutcome::BadPrice);
        }
        let Some(new_level) = self.level_of(new_price) else { return Some(MatchOutcome::BadPrice) };
        let order = self.arena.get(slot).order;
        let incoming = Incoming {
            order_id,
            owner: order.owner,
            direction: order.direction,
            limit: Some(new_price),
            volume: new_volume,
            min_fill: 0,
            rest_remainder: true,
        };
        if self.scan_crossing(&incoming, Some(new_level)).1 {
            return Some(MatchOutcome::SelfTrade);
        }
        let old_level = self.level_of(order.price).expect("resting order price is on the grid");
        self.side_mut(order.direction).levels[old_level].volume -= order.volume_left;
        self.unlink(order.direction, old_level, slot);
        // The order is out of its side's queues; `take` only walks the opposite side.
        let filled = self.take(&incoming, Some(new_level), fills);
        let remainder = new_volume - filled;
        if remainder > 0 {
            let node = self.arena.get_mut(slot);
            node.order.price = new_price;
            node.order.volume_left = remainder;
            self.link_tail(order.direction, new_level, slot, remainder);
        } else {
            self.index.remove(&order_id);
            self.arena.remove(slot);
        }
        Some(MatchOutcome::Done { filled, rested: remainder, cancelled: 0 })
    }

    /// Lowers a resting order's volume in place, keeping its time priority.
    /// Returns false if the order is not resting or `new_volume_left` is not in 1..current.
    pub fn reduce(&mut self, order_id: u64, new_volume_left: Volume) -> bool {
        let Some(&slot) = self.index.get(&order_id) else {
            return false;
        };
        let node = self.arena.get_mut(slot);
        if new_volume_left <= 0 || new_volume_left >= node.order.volume_left {
            return false;
        }
        let delta = node.order.volume_left - new_volume_left;
        node.order.volume_left = new_volume_left;
        let (direction, price) = (node.order.direction, node.order.price);
        let level = self.level_of(price).expect("resting order price is on the grid");
        self.side_mut(direction).levels[level].volume -= delta;
        self.note_change(direction, level);
        true
    }

    /// Moves the book to a new price band (after settlement). Orders outside the new band are
    /// removed and returned; the rest keep their time priority.
    pub fn rebase(&mut self, lower_limit: Price, upper_limit: Price) -> Vec<RestingOrder> {
        let mut kept = Vec::with_capacity(self.resting_count());
        let mut removed = Vec::new();
        // Collect in global time order per level: walking each side best-first keeps FIFO order
        // within every level, which is all priority means.
        for direction in [Direction::Buy, Direction::Sell] {
            self.for_each_order(direction, |o| kept.push(*o));
        }
        let mut fresh = OrderBook::new(self.price_tick, lower_limit, upper_limit, self.resting_count());
        fresh.auction = self.auction;
        for order in kept {
            match fresh.level_of(order.price) {
                Some(level) => {
                    let incoming = Incoming {
                        order_id: order.order_id,
                        owner: order.owner,
                        direction: order.direction,
                        limit: Some(order.price),
                        volume: order.volume_left,
                        min_fill: 0,
                        rest_remainder: true,
                    };
                    fresh.rest(&incoming, level, order.volume_left);
                }
                None => removed.push(order),
            }
        }
        *self = fresh;
        removed
    }

    /// Checks the book's internal consistency (used by tests and debug assertions).
    pub fn check_invariants(&self) -> Result<(), String> {
        if let (Some(bid), Some(ask), false) = (self.best_bid(), self.best_ask(), self.auction) {
            if bid >= ask {
                return Err(format!("book crossed: bid {bid} >= ask {ask}"));
            }
        }
        let mut counted = 0usize;
        for direction in [Direction::Buy, Direction::Sell] {
            let side = self.side(direction);
            let mut first = true;
            for (level, l) in side.levels.iter().enumerate() {
                let mut volume = 0;
                let mut count = 0;
                let mut slot = l.head;
                let mut prev = NIL;
                while slot != NIL {
                    let node = self.arena.get(slot);
                    if node.prev != prev {
                        return Err(format!("broken back link at level {level}"));
                    }
                    if node.order.volume_left <= 0 {
                        return Err(format!("order {} has volume {}", node.order.order_id, node.order.volume_left));
                    }
                    if node.order.direction != direction || self.level_of(node.order.price) != Some(level) {
                        return Err(format!("order {} on the wrong level", node.order.order_id));
                    }
                    if self.index.get(&node.order.order_id) != Some(&slot) {
                        return Err(format!("order {} missing from the index", node.order.order_id));
                    }
                    volume += node.order.volume_left;
                    count += 1;
                    prev = slot;
                    slot = node.next;
                }
                if l.tail != prev || l.volume != volume || l.count != count {
                    return Err(format!("level {level} totals wrong"));
                }
                if side.occupied.contains(level) != (count > 0) {
                    return Err(format!("level {level} occupancy bit wrong"));
                }
                if count > 0 && first {
                    let best_expected = match direction {
                        Direction::Sell => Some(level),
                        Direction::Buy => side.occupied.last_at_or_below(side.levels.len() - 1),
                    };
                    if side.best != best_expected {
                        return Err(format!("best level of {direction:?} wrong"));
                    }
                    first = false;
                }
                counted += count as usize;
            }
            if first && side.best.is_some() {
                return Err(format!("empty {direction:?} side has a best level"));
            }
        }
        if counted != self.arena.live() || counted != self.index.len() {
            return Err("order count mismatch between levels, slab and index".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
