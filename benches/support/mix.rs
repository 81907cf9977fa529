//! The exchange-core benchmark order mix on one book, generated up front.
//!
//! `generate` runs a small reference order book (`Model`: price-time priority, BTreeMap levels)
//! and emits a fixed `Vec<Op>`:
//!
//! * `prefill`: `prefill_orders` passive GTC limit orders (bids below the mid, asks above),
//!   spread over about 750 price levels;
//! * `ops`: the measured stream, each op drawn with these odds: 9 % GTC limit placement,
//!   3 % IOC placement, 6 % cancel, 82 % move (new price for a resting order; it may cross
//!   and trade, the remainder rests at the new price with new time priority).
//!
//! Prices are integer ticks around a mid that random-walks one tick every ~64 ops (reflected
//! to stay within `MID_EXCURSION` ticks of the start), so orders really trade. The population
//! of resting orders is held near `prefill_orders`: the chance that a GTC placement or a move
//! is aggressive rises with the population, so fills replace what placements add.
//!
//! Because the model executes the stream, cancels and moves always name an order that is
//! resting at that moment (in a correct book), a move never keeps its old price, and
//! `Expect` gives the trade count, traded volume and resting count a correct book must
//! reproduce exactly. An op on an order a book no longer holds should be a no-op.
//!
//! Owners: every order gets one of `owners` owners (1-based). The generator guarantees that
//! no op would trade against a resting order of its own owner: a new order that would is
//! given another owner, and a move that would is repriced one tick short of the level where
//! it would meet its own order. So a book with self-trade prevention (ours rejects the whole
//! order) behaves exactly like one without it, and the owners can serve as accounts.
//!
//! Self-contained (std only) so several bench binaries can `#[path]`-include it.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Random-walk excursion limit of the mid, in ticks from `MixConfig::mid`.
pub const MID_EXCURSION: i64 = 2_000;

/// One operation on the book. Prices are in ticks; quantities in lots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A new order. `ioc`: trade what crosses now, drop the rest; otherwise GTC (rest the rest).
    Place { id: u64, owner: u32, buy: bool, ioc: bool, price: i64, qty: u32 },
    /// Remove a resting order.
    Cancel { id: u64 },
    /// Re-price a resting order keeping its id, owner, side and remaining quantity: it loses
    /// time priority, may trade at the new price, and rests the remainder there.
    Move { id: u64, price: i64 },
}

#[derive(Clone, Copy, Debug)]
pub struct MixConfig {
    pub seed: u64,
    /// Resting orders placed before the stream, and the population the stream keeps.
    pub prefill_orders: usize,
    /// Length of the measured stream.
    pub ops: usize,
    /// Starting mid price, in ticks.
    pub mid: i64,
    /// Passive orders rest 1..=`spread_ticks` ticks from the mid on their own side.
    pub spread_ticks: i64,
    /// Number of distinct owners.
    pub owners: u32,
}

impl Default for MixConfig {
    fn default() -> Self {
        Self {
            seed: 0x5EED_0B00_C0DE,
            prefill_orders: 1_000,
            ops: 3_000_000,
            mid: 100_000,
            spread_ticks: 800,
            owners: 100,
        }
    }
}

/// What a correct price-time book must report after running prefill then ops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// Maker fills (one per resting order touched by a taker) during `ops` only.
    pub trades: u64,
    /// Lots traded during `ops` only.
    pub volume: u64,
    /// Resting orders after the prefill.
    pub resting_after_prefill: usize,
    /// Resting orders after the stream.
    pub resting_end: usize,
}

/// Facts about the generated stream (for the report).
#[derive(Clone, Copy, Debug, Default)]
pub struct MixStats {
    pub places: u64,
    pub iocs: u64,
    pub cancels: u64,
    pub moves: u64,
    /// Ops that traded at least once.
    pub trading_ops: u64,
    /// Most maker fills caused by one op.
    pub max_fills_per_op: u64,
    pub min_resting: usize,
    pub max_resting: usize,
    /// Mean resting orders over the stream.
    pub mean_resting: f64,
    /// Occupied price levels (both sides) after the prefill and at the end.
    pub levels_after_prefill: usize,
    pub levels_end: usize,
    /// Lowest and highest price in any op.
    pub min_price: i64,
    pub max_price: i64,
    /// Orders that needed another owner, or a move price pulled back, to avoid a self-trade.
    pub self_trade_avoided: u64,
    /// Highest order id used.
    pub max_id: u64,
}

pub struct Mix {
    pub config: MixConfig,
    pub prefill: Vec<Op>,
    pub ops: Vec<Op>,
    pub expect: Expect,
    pub stats: MixStats,
}

/// SplitMix64: tiny, seeded, good enough for a benchmark.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1_000) < per_mille
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}

#[derive(Clone, Copy, Debug)]
struct ModelOrder {
    owner: u32,
    buy: bool,
    price: i64,
    qty: u32,
    /// Position in `Model::live`.
    slot: usize,
}

/// A plain price-time priority book: the reference the benches' books are checked against.
#[derive(Default)]
struct Model {
    bids: BTreeMap<i64, VecDeque<u64>>,
    asks: BTreeMap<i64, VecDeque<u64>>,
    orders: HashMap<u64, ModelOrder>,
    /// Resting ids, for uniform random picks.
    live: Vec<u64>,
    trades: u64,
    volume: u64,
}

impl Model {
    fn best_bid(&self) -> Option<i64> {
        self.bids.keys().next_back().copied()
    }

    fn best_ask(&self) -> Option<i64> {
        self.asks.keys().next().copied()
    }

    /// The price of the first resting order (in match order) of `owner` that an order of
    /// `owner` on side `buy` at `price` for `qty` would meet, if any.
    fn self_trade_price(&self, owner: u32, buy: bool, price: i64, qty: u32) -> Option<i64> {
        let mut left = qty as i64;
        let mut scan = |level_price: i64, queue: &VecDeque<u64>| -> Option<Option<i64>> {
            for id in queue {
                if left <= 0 {
                    return Some(None);
                }
                let maker = &self.orders[id];
                if maker.owner == owner {
                    return Some(Some(level_price));
                }
                left -= maker.qty as i64;
            }
            None
        };
        if buy {
            for (&p, q) in self.asks.range(..=price) {
                if let Some(found) = scan(p, q) {
                    return found;
                }
            }
        } else {
            for (&p, q) in self.bids.range(price..).rev() {
                if let Some(found) = scan(p, q) {
                    return found;
                }
            }
        }
        None
    }

    /// Matches then (unless `ioc`) rests the remainder. Returns maker fills.
    fn submit(&mut self, id: u64, owner: u32, buy: bool, price: i64, qty: u32, ioc: bool) -> u64 {
        let mut left = qty;
        let mut fills = 0;
        while left > 0 {
            let best =
                if buy { self.best_ask().filter(|&a| a <= price) } else { self.best_bid().filter(|&b| b >= price) };
            let Some(level_price) = best else { break };
            let book = if buy { &mut self.asks } else { &mut self.bids };
            let queue = book.get_mut(&level_price).expect("level exists");
            while left > 0 {
                let Some(&maker_id) = queue.front() else {
                    break;
                };
                let maker = self.orders.get_mut(&maker_id).expect("maker is indexed");
                let traded = left.min(maker.qty);
                maker.qty -= traded;
                left -= traded;
                fills += 1;
                self.volume += traded as u64;
                if maker.qty == 0 {
                    queue.pop_front();
                    let slot = maker.slot;
                    self.orders.remove(&maker_id);
                    self.live.swap_remove(slot);
                    if let Some(&moved) = self.live.get(slot) {
                        self.orders.get_mut(&moved).expect("live order is indexed").slot = slot;
                    }
                }
            }
            if queue.is_empty() {
                book.remove(&level_price);
            }
        }
        self.trades += fills;
        if left > 0 && !ioc {
            let book = if buy { &mut self.bids } else { &mut self.asks };
            book.entry(price).or_default().push_back(id);
            self.orders.insert(id, ModelOrder { owner, buy, price, qty: left, slot: self.live.len() });
            self.live.push(id);
        }
        fills
    }

    fn cancel(&mut self, id: u64) -> Option<ModelOrder> {
        let order = self.orders.remove(&id)?;
        let book = if order.buy { &mut self.bids } else { &mut self.asks };
        let queue = book.get_mut(&order.price).expect("level exists");
        let at = queue.iter().position(|&x| x == id).expect("order is queued");
        queue.remove(at);
        if queue.is_empty() {
            book.remove(&order.price);
        }
        self.live.swap_remove(order.slot);
        if let Some(&moved) = self.live.get(order.slot) {
            self.orders.get_mut(&moved).expect("live order is indexed").slot = order.slot;
        }
        Some(order)
    }

    fn levels(&self) -> usize {
        self.bids.len() + self.asks.len()
    }
}

struct Generator {
    cfg: MixConfig,
    rng: Rng,
    model: Model,
    mid: i64,
    next_id: u64,
    stats: MixStats,
}

impl Generator {
    /// A resting price 1..=spread ticks from the mid on the order's own side.
    fn passive_price(&mut self, buy: bool) -> i64 {
        let offset = self.rng.range(1, self.cfg.spread_ticks);
        if buy {
            self.mid - offset
        } else {
            self.mid + offset
        }
    }

    /// A price 0..=reach ticks through the mid towards the other side.
    fn aggressive_price(&mut self, buy: bool, reach: i64) -> i64 {
        let offset = self.rng.range(0, reach);
        if buy {
            self.mid + offset
        } else {
            self.mid - offset
        }
    }

    /// Per-mille chance that a GTC placement or a move is aggressive: grows with the
    /// population so that fills take out what placements add.
    fn aggression(&self) -> u64 {
        let target = self.cfg.prefill_orders as i64;
        let excess = self.model.live.len() as i64 - target;
        (40 + excess / 2).clamp(5, 200) as u64
    }

    fn owner(&mut self) -> u32 {
        1 + self.rng.below(self.cfg.owners as u64) as u32
    }

    /// An owner for a new order that will not meet its own resting orders.
    fn safe_owner(&mut self, buy: bool, price: i64, qty: u32) -> u32 {
        let mut owner = self.owner();
        for _ in 0..64 {
            if self.model.self_trade_price(owner, buy, price, qty).is_none() {
                return owner;
            }
            self.stats.self_trade_avoided += 1;
            owner = self.owner();
        }
        panic!("no owner avoids a self-trade; use more owners");
    }

    fn note_price(&mut self, price: i64) {
        self.stats.min_price = self.stats.min_price.min(price);
        self.stats.max_price = self.stats.max_price.max(price);
    }

    fn place(&mut self, buy: bool, ioc: bool, price: i64, qty: u32) -> Op {
        let id = self.next_id;
        self.next_id += 1;
        let owner = self.safe_owner(buy, price, qty);
        let fills = self.model.submit(id, owner, buy, price, qty, ioc);
        self.after_trade(fills);
        self.note_price(price);
        Op::Place { id, owner, buy, ioc, price, qty }
    }

    fn after_trade(&mut self, fills: u64) {
        if fills > 0 {
            self.stats.trading_ops += 1;
            self.stats.max_fills_per_op = self.stats.max_fills_per_op.max(fills);
        }
    }

    fn random_live(&mut self) -> Option<u64> {
        let n = self.model.live.len() as u64;
        (n > 0).then(|| self.model.live[self.rng.below(n) as usize])
    }

    fn step_mid(&mut self) {
        if self.rng.below(64) == 0 {
            let step = if self.rng.coin() { 1 } else { -1 };
            let next = self.mid + step;
            self.mid = if (next - self.cfg.mid).abs() > MID_EXCURSION { self.mid - step } else { next };
        }
    }

    fn next_op(&mut self) -> Op {
        self.step_mid();
        let roll = self.rng.below(100);
        if roll < 9 {
            self.stats.places += 1;
            let buy = self.rng.coin();
            let aggressive = self.rng.chance(self.aggression());
            let price = if aggressive { self.aggressive_price(buy, 3) } else { self.passive_price(buy) };
            let qty = self.rng.range(1, 10) as u32;
            return self.place(buy, false, price, qty);
        }
        if roll < 12 {
            self.stats.iocs += 1;
            let buy = self.rng.coin();
            let price = self.aggressive_price(buy, 10);
            let qty = self.rng.range(1, 20) as u32;
            return self.place(buy, true, price, qty);
        }
        let Some(id) = self.random_live() else {
            // Empty book (never with the default config): place instead.
            self.stats.places += 1;
            let buy = self.rng.coin();
            let price = self.passive_price(buy);
            return self.place(buy, false, price, 1);
        };
        if roll < 18 {
            self.stats.cancels += 1;
            self.model.cancel(id).expect("picked a live order");
            return Op::Cancel { id };
        }
        self.stats.moves += 1;
        let order = self.model.orders[&id];
        let mut price = match self.rng.below(1_000) {
            r if r < self.aggression() => self.aggressive_price(order.buy, 3),
            r if r < 500 => {
                // A small step either way.
                let step = self.rng.range(1, 5);
                if self.rng.coin() {
                    order.price + step
                } else {
                    order.price - step
                }
            }
            _ => self.passive_price(order.buy),
        };
        if price == order.price {
            price += if order.buy { -1 } else { 1 };
        }
        self.model.cancel(id).expect("picked a live order");
        if let Some(clash) = self.model.self_trade_price(order.owner, order.buy, price, order.qty) {
            // Stop one tick short of our own order: everything before it may still trade.
            self.stats.self_trade_avoided += 1;
            price = if order.buy { clash - 1 } else { clash + 1 };
            if price == order.price {
                price += if order.buy { -1 } else { 1 };
            }
            debug_assert!(self.model.self_trade_price(order.owner, order.buy, price, order.qty).is_none());
        }
        let fills = self.model.submit(id, order.owner, order.buy, price, order.qty, false);
        self.after_trade(fills);
        self.note_price(price);
        Op::Move { id, price }
    }
}

/// Generates prefill and stream for `cfg`. Deterministic in `cfg`.
pub fn generate(cfg: MixConfig) -> Mix {
    let mut g = Generator {
        cfg,
        rng: Rng::new(cfg.seed),
        model: Model::default(),
        mid: cfg.mid,
        next_id: 1,
        stats: MixStats { min_price: i64::MAX, max_price: i64::MIN, ..MixStats::default() },
    };
    let mut prefill = Vec::with_capacity(cfg.prefill_orders);
    for _ in 0..cfg.prefill_orders {
        let buy = g.rng.coin();
        let price = g.passive_price(buy);
        let qty = g.rng.range(1, 10) as u32;
        prefill.push(g.place(buy, false, price, qty));
    }
    assert_eq!(g.model.trades, 0, "prefill must not trade");
    let resting_after_prefill = g.model.live.len();
    g.stats.levels_after_prefill = g.model.levels();
    g.stats.min_resting = usize::MAX;
    g.stats.trading_ops = 0;
    g.stats.max_fills_per_op = 0;

    let mut ops = Vec::with_capacity(cfg.ops);
    let mut resting_sum = 0u64;
    for _ in 0..cfg.ops {
        ops.push(g.next_op());
        let live = g.model.live.len();
        resting_sum += live as u64;
        g.stats.min_resting = g.stats.min_resting.min(live);
        g.stats.max_resting = g.stats.max_resting.max(live);
    }
    g.stats.mean_resting = resting_sum as f64 / cfg.ops.max(1) as f64;
    g.stats.levels_end = g.model.levels();
    g.stats.max_id = g.next_id - 1;
    let expect = Expect {
        trades: g.model.trades,
        volume: g.model.volume,
        resting_after_prefill,
        resting_end: g.model.live.len(),
    };
    Mix { config: cfg, prefill, ops, expect, stats: g.stats }
}
