//! Model-based test of `OrderBook`: random command sequences run against the book and against a
//! deliberately naive reference model (a flat list of resting orders, sorted on demand), and the
//! two must agree after every step on outcomes, fills and the full book contents.

use proptest::prelude::*;
use qaexchange::domain::book::{Fill, Incoming, MatchOutcome, OrderBook, RestingOrder, DEPTH_TRACKED};
use qaexchange::domain::types::{Direction, Price, Volume};

// ---------------------------------------------------------------------------------------------
// Reference model
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ModelOrder {
    order_id: u64,
    owner: u64,
    direction: Direction,
    price: Price,
    volume_left: Volume,
    /// Arrival sequence number: lower arrived earlier.
    seq: u64,
}

impl ModelOrder {
    fn resting(&self) -> RestingOrder {
        RestingOrder {
            order_id: self.order_id,
            owner: self.owner,
            direction: self.direction,
            price: self.price,
            volume_left: self.volume_left,
        }
    }
}

#[derive(Clone, Debug)]
struct Model {
    tick: Price,
    lower: Price,
    upper: Price,
    orders: Vec<ModelOrder>,
    next_seq: u64,
}

impl Model {
    fn new(tick: Price, lower: Price, upper: Price) -> Self {
        Self { tick, lower, upper, orders: Vec::new(), next_seq: 0 }
    }

    fn valid_price(&self, price: Price) -> bool {
        price >= self.lower && price <= self.upper && (price - self.lower) % self.tick == 0
    }

    /// Resting orders of one side in priority order: best price first, then earliest arrival.
    fn side(&self, direction: Direction) -> Vec<ModelOrder> {
        let mut side: Vec<ModelOrder> = self.orders.iter().filter(|o| o.direction == direction).cloned().collect();
        side.sort_by_key(|o| {
            let price_key = match direction {
                Direction::Buy => -o.price,
                Direction::Sell => o.price,
            };
            (price_key, o.seq)
        });
        side
    }

    /// (price, total volume, order count) per level, best first.
    fn levels(&self, direction: Direction) -> Vec<(Price, Volume, u32)> {
        let mut levels: Vec<(Price, Volume, u32)> = Vec::new();
        for o in self.side(direction) {
            match levels.last_mut() {
                Some(last) if last.0 == o.price => {
                    last.1 += o.volume_left;
                    last.2 += 1;
                }
                _ => levels.push((o.price, o.volume_left, 1)),
            }
        }
        levels
    }

    fn find(&self, order_id: u64) -> Option<&ModelOrder> {
        self.orders.iter().find(|o| o.order_id == order_id)
    }

    /// The resting orders `incoming` could trade with, in matching order.
    fn crossing_makers(&self, incoming: &Incoming) -> Vec<ModelOrder> {
        let crosses = |maker_price: Price| match (incoming.direction, incoming.limit) {
            (_, None) => true,
            (Direction::Buy, Some(limit)) => maker_price <= limit,
            (Direction::Sell, Some(limit)) => maker_price >= limit,
        };
        self.side(incoming.direction.opposite()).into_iter().filter(|o| crosses(o.price)).collect()
    }

    /// None if `incoming` would reach an order of its own owner before its volume is used up,
    /// otherwise how much of it could trade at once.
    fn dry_run(makers: &[ModelOrder], incoming: &Incoming) -> Option<Volume> {
        let mut available = 0;
        for maker in makers {
            if available >= incoming.volume {
                break;
            }
            if maker.owner == incoming.owner {
                return None;
            }
            available += maker.volume_left;
        }
        Some(available.min(incoming.volume))
    }

    /// What `OrderBook::would_self_trade` must say: only for a valid (or no) limit price,
    /// whatever the order id.
    fn would_self_trade(&self, incoming: &Incoming) -> bool {
        incoming.limit.map_or(true, |limit| self.valid_price(limit))
            && Self::dry_run(&self.crossing_makers(incoming), incoming).is_none()
    }

    fn submit(&mut self, incoming: &Incoming, fills: &mut Vec<Fill>) -> MatchOutcome {
        if let Some(limit) = incoming.limit {
            if !self.valid_price(limit) {
                return MatchOutcome::BadPrice;
            }
        }
        if self.find(incoming.order_id).is_some() {
            return MatchOutcome::BadPrice;
        }
        let makers = self.crossing_makers(incoming);
        let Some(available) = Self::dry_run(&makers, incoming) else {
            return MatchOutcome::SelfTrade;
        };
        if available < incoming.min_fill {
            return MatchOutcome::MinFillNotMet { available };
        }

        // Real run: take from the makers in priority order at their prices.
        let mut remaining = incoming.volume;
        for maker in &makers {
            if remaining == 0 {
                break;
            }
            let volume = remaining.min(maker.volume_left);
            remaining -= volume;
            let resting = self.orders.iter_mut().find(|o| o.order_id == maker.order_id).unwrap();
            resting.volume_left -= volume;
            fills.push(Fill {
                maker_order_id: maker.order_id,
                maker_owner: maker.owner,
                price: maker.price,
                volume,
                maker_volume_left: resting.volume_left,
            });
        }
        self.orders.retain(|o| o.volume_left > 0);
        let filled = incoming.volume - remaining;

        match incoming.limit {
            Some(price) if remaining > 0 && incoming.rest_remainder => {
                self.orders.push(ModelOrder {
                    order_id: incoming.order_id,
                    owner: incoming.owner,
                    direction: incoming.direction,
                    price,
                    volume_left: remaining,
                    seq: self.next_seq,
                });
                self.next_seq += 1;
                MatchOutcome::Done { filled, rested: remaining, cancelled: 0 }
            }
            _ => MatchOutcome::Done { filled, rested: 0, cancelled: remaining },
        }
    }

    fn cancel(&mut self, order_id: u64) -> Option<RestingOrder> {
        let position = self.orders.iter().position(|o| o.order_id == order_id)?;
        Some(self.orders.remove(position).resting())
    }

    fn reduce(&mut self, order_id: u64, new_volume_left: Volume) -> bool {
        match self.orders.iter_mut().find(|o| o.order_id == order_id) {
            Some(o) if new_volume_left >= 1 && new_volume_left < o.volume_left => {
                o.volume_left = new_volume_left;
                true
            }
            _ => false,
        }
    }

    /// Moving a resting order: take it out, then submit it afresh (new arrival seq, so it queues
    /// behind everything already at the new price) as a limit order that rests its remainder.
    /// Checking the resubmission for self-trade with the order already taken out is the rule;
    /// the order sits on the incoming order's own side, which matching never looks at, so taking
    /// it out cannot change that answer. A refused move puts everything back as it was.
    fn reprice(
        &mut self,
        order_id: u64,
        new_price: Price,
        new_volume: Volume,
        fills: &mut Vec<Fill>,
    ) -> Option<MatchOutcome> {
        let old = self.find(order_id)?.clone();
        if new_volume <= 0 || !self.valid_price(new_price) {
            return Some(MatchOutcome::BadPrice);
        }
        let saved = self.orders.clone();
        self.cancel(order_id);
        let incoming = Incoming {
            order_id,
            owner: old.owner,
            direction: old.direction,
            limit: Some(new_price),
            volume: new_volume,
            min_fill: 0,
            rest_remainder: true,
        };
        let outcome = self.submit(&incoming, fills);
        if outcome == MatchOutcome::SelfTrade {
            self.orders = saved;
        }
        Some(outcome)
    }

    /// Returns the removed orders sorted by id.
    fn rebase(&mut self, lower: Price, upper: Price) -> Vec<RestingOrder> {
        self.lower = lower;
        self.upper = upper;
        let (kept, removed): (Vec<ModelOrder>, Vec<ModelOrder>) =
            std::mem::take(&mut self.orders).into_iter().partition(|o| self.valid_price(o.price));
        self.orders = kept;
        let mut removed: Vec<RestingOrder> = removed.iter().map(ModelOrder::resting).collect();
        removed.sort_by_key(|o| o.order_id);
        removed
    }

    fn total_volume(&self) -> Volume {
        self.orders.iter().map(|o| o.volume_left).sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// A price chosen relative to the book's band at the time the command runs, plus a sub-tick
/// `off_grid` offset (0 most of the time, otherwise the price is off the grid).
#[derive(Clone, Copy, Debug)]
enum PriceSpec {
    /// `depth` levels on the passive side of the band's middle (buys below, sells above);
    /// negative depths cross into the other side, so books get deep and sweeps happen.
    Near { depth: i64, off_grid: i64 },
    /// Anywhere in the band, or up to two levels outside it.
    Anywhere { permille: i64, off_grid: i64 },
}

/// How a reduce picks its new volume.
#[derive(Clone, Copy, Debug)]
enum NewVolume {
    /// This exact volume (often invalid: 0, or not below the current volume).
    Absolute(Volume),
    /// The current volume minus this much (valid whenever it leaves at least 1).
    Minus(Volume),
}

/// How a reprice picks its new price.
#[derive(Clone, Copy, Debug)]
enum RepricePrice {
    /// The order's current price (it only loses priority, and maybe changes volume).
    Keep,
    /// This many ticks from the current price, toward the other side (negative: away from it).
    /// Often crosses; near the band's edges sometimes leaves it.
    Toward(i64),
    /// This many ticks beyond the other side's best price (0: at it), so it trades at once;
    /// the current price if the other side is empty.
    Cross(i64),
    /// A fresh price as for a new order (sometimes off the grid or out of the band).
    Spec(PriceSpec),
}

/// How a reprice picks its new volume.
#[derive(Clone, Copy, Debug)]
enum RepriceVolume {
    /// This exact volume (0 and -1 are invalid).
    Absolute(Volume),
    /// The current volume plus this much (smaller, equal or larger; invalid when it leaves < 1).
    Plus(Volume),
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// GFD-style limit: remainder rests.
    Limit,
    /// Immediate or cancel.
    Ioc,
    /// Fill or kill: min_fill = volume.
    Fok,
    /// At least `min` (clamped to the volume) must fill at once.
    Min { min: Volume, rest: bool },
    /// No limit price; must never rest even if `rest` is set.
    Market { min: Volume, rest: bool },
}

#[derive(Clone, Copy, Debug)]
enum IdPick {
    /// A never used id.
    Fresh,
    /// Any id used before (most are dead by now), by index.
    Used(usize),
    /// The id of a currently resting order, by index (falls back to `Used`).
    Live(usize),
    /// An id that is never given to any order.
    Unknown,
}

#[derive(Clone, Debug)]
enum Cmd {
    Submit {
        id: IdPick,
        owner: u64,
        direction: Direction,
        kind: Kind,
        price: PriceSpec,
        volume: Volume,
    },
    Cancel {
        id: IdPick,
    },
    Reduce {
        id: IdPick,
        new_volume: NewVolume,
    },
    /// Cancel a live order and resubmit the same id at a new price (losing priority).
    Move {
        id: IdPick,
        price: PriceSpec,
    },
    /// `OrderBook::reprice`: move a resting order to a new price and volume in one step.
    Reprice {
        id: IdPick,
        price: RepricePrice,
        volume: RepriceVolume,
    },
    /// New band: shift the lower limit and resize by a few levels, sometimes off the old grid.
    Rebase {
        shift: i64,
        resize: i64,
        misalign: bool,
    },
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Buy), Just(Direction::Sell)]
}

fn price_spec() -> impl Strategy<Value = PriceSpec> {
    let off_grid = || prop_oneof![15 => Just(0i64), 1 => 1i64..1000];
    prop_oneof![
        5 => (prop_oneof![3 => 1i64..=8, 1 => -4i64..=0], off_grid()).prop_map(|(depth, off_grid)| PriceSpec::Near { depth, off_grid }),
        1 => (0i64..1000, off_grid())
            .prop_map(|(permille, off_grid)| PriceSpec::Anywhere { permille, off_grid }),
    ]
}

/// Lots of an incoming order: mostly 1-5, sometimes large enough to sweep several levels.
fn volume() -> impl Strategy<Value = Volume> {
    prop_oneof![9 => 1i64..=5, 1 => 6i64..=15]
}

fn new_volume() -> impl Strategy<Value = NewVolume> {
    prop_oneof![(-1i64..=6).prop_map(NewVolume::Absolute), (1i64..=4).prop_map(NewVolume::Minus),]
}

fn reprice_price() -> impl Strategy<Value = RepricePrice> {
    prop_oneof![
        2 => Just(RepricePrice::Keep),
        4 => (-3i64..=6).prop_map(RepricePrice::Toward),
        3 => (0i64..=3).prop_map(RepricePrice::Cross),
        3 => price_spec().prop_map(RepricePrice::Spec),
    ]
}

fn reprice_volume() -> impl Strategy<Value = RepriceVolume> {
    prop_oneof![
        2 => (-1i64..=8).prop_map(RepriceVolume::Absolute),
        1 => (9i64..=15).prop_map(RepriceVolume::Absolute),
        4 => (-3i64..=3).prop_map(RepriceVolume::Plus),
    ]
}

fn id_pick() -> impl Strategy<Value = IdPick> {
    prop_oneof![
        6 => Just(IdPick::Fresh),
        1 => any::<usize>().prop_map(IdPick::Used),
        1 => any::<usize>().prop_map(IdPick::Live),
    ]
}

fn existing_id_pick() -> impl Strategy<Value = IdPick> {
    prop_oneof![
        6 => any::<usize>().prop_map(IdPick::Live),
        2 => any::<usize>().prop_map(IdPick::Used),
        1 => Just(IdPick::Unknown),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        8 => Just(Kind::Limit),
        2 => Just(Kind::Ioc),
        2 => Just(Kind::Fok),
        2 => (0i64..=6, any::<bool>()).prop_map(|(min, rest)| Kind::Min { min, rest }),
        2 => (0i64..=6, any::<bool>()).prop_map(|(min, rest)| Kind::Market { min, rest }),
    ]
}

fn cmd() -> impl Strategy<Value = Cmd> {
    let submit = (id_pick(), 0u64..5, direction(), kind(), price_spec(), volume()).prop_map(
        |(id, owner, direction, kind, price, volume)| Cmd::Submit { id, owner, direction, kind, price, volume },
    );
    prop_oneof![
        20 => submit,
        2 => existing_id_pick().prop_map(|id| Cmd::Cancel { id }),
        3 => (existing_id_pick(), new_volume()).prop_map(|(id, new_volume)| Cmd::Reduce { id, new_volume }),
        3 => (existing_id_pick(), price_spec()).prop_map(|(id, price)| Cmd::Move { id, price }),
        5 => (existing_id_pick(), reprice_price(), reprice_volume())
            .prop_map(|(id, price, volume)| Cmd::Reprice { id, price, volume }),
        // Weight 1 of 34: a rebase every ~34 commands, rare but present in most cases.
        1 => (-4i64..=4, -4i64..=4, prop::bool::weighted(0.1))
            .prop_map(|(shift, resize, misalign)| Cmd::Rebase { shift, resize, misalign }),
    ]
}

#[derive(Clone, Debug)]
struct Scenario {
    tick: Price,
    levels: i64,
    owners: u64,
    cmds: Vec<Cmd>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop_oneof![Just(2i64), Just(5), Just(10)],
        // Mostly 20-40 levels; sometimes more than 64 so the level bitmap spans several words.
        prop_oneof![4 => 20i64..=40, 1 => 60i64..=140],
        3u64..=5,
        prop::collection::vec(cmd(), 1..200),
    )
        .prop_map(|(tick, levels, owners, cmds)| Scenario { tick, levels, owners, cmds })
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

const BASE_LOWER: Price = 10_000;

struct Harness {
    book: OrderBook,
    model: Model,
    owners: u64,
    next_id: u64,
    used_ids: Vec<u64>,
    /// The top `DEPTH_TRACKED` levels of both sides when depth was last taken: when the book
    /// says its depth did not change, they must be the same now.
    last_depth: Vec<(Price, Volume, u32)>,
}

/// Everything observable about one side of the book.
fn book_side(book: &OrderBook, direction: Direction) -> Vec<RestingOrder> {
    let mut orders = Vec::new();
    book.for_each_order(direction, |o| orders.push(*o));
    orders
}

fn book_levels(book: &OrderBook, direction: Direction) -> Vec<(Price, Volume, u32)> {
    let mut levels = Vec::new();
    book.for_each_level(direction, usize::MAX, |price, volume, count| levels.push((price, volume, count)));
    levels
}

fn book_total(book: &OrderBook) -> Volume {
    [Direction::Buy, Direction::Sell].iter().flat_map(|&d| book_side(book, d)).map(|o| o.volume_left).sum()
}

impl Harness {
    fn new(tick: Price, levels: i64, owners: u64) -> Self {
        let upper = BASE_LOWER + (levels - 1) * tick;
        Self {
            book: OrderBook::new(tick, BASE_LOWER, upper, 4),
            model: Model::new(tick, BASE_LOWER, upper),
            owners,
            next_id: 1,
            used_ids: Vec::new(),
            last_depth: Vec::new(),
        }
    }

    fn price(&self, spec: PriceSpec, direction: Direction) -> Price {
        let tick = self.model.tick;
        let levels = (self.model.upper - self.model.lower) / tick + 1;
        let (level, off_grid) = match spec {
            PriceSpec::Near { depth, off_grid } => {
                let middle = levels / 2;
                match direction {
                    Direction::Buy => (middle - depth, off_grid),
                    Direction::Sell => (middle + depth, off_grid),
                }
            }
            // Spread over [-2, levels + 1]: a few out-of-band levels on each side.
            PriceSpec::Anywhere { permille, off_grid } => (permille * (levels + 4) / 1000 - 2, off_grid),
        };
        self.model.lower + level * tick + off_grid % tick
    }

    fn resolve(&mut self, pick: IdPick) -> u64 {
        match pick {
            IdPick::Fresh => {
                let id = self.next_id;
                self.next_id += 1;
                self.used_ids.push(id);
                id
            }
            IdPick::Live(i) if !self.model.orders.is_empty() => {
                let mut ids: Vec<u64> = self.model.orders.iter().map(|o| o.order_id).collect();
                ids.sort_unstable();
                ids[i % ids.len()]
            }
            IdPick::Live(i) | IdPick::Used(i) if !self.used_ids.is_empty() => self.used_ids[i % self.used_ids.len()],
            _ => u64::MAX - 7,
        }
    }

    fn submit(&mut self, incoming: Incoming) -> Result<(), TestCaseError> {
        let before = book_total(&self.book);
        let snapshot = self.snapshot();
        let mut fills = Vec::new();
        let mut model_fills = Vec::new();
        prop_assert_eq!(
            self.book.would_self_trade(&incoming),
            self.model.would_self_trade(&incoming),
            "would_self_trade of {:?}",
            incoming
        );
        let outcome = self.book.submit(&incoming, &mut fills);
        let expected = self.model.submit(&incoming, &mut model_fills);
        prop_assert_eq!(outcome, expected, "outcome of {:?}", incoming);
        prop_assert_eq!(&fills, &model_fills, "fills of {:?}", incoming);
        match outcome {
            MatchOutcome::Done { filled, rested, cancelled } => {
                prop_assert!(filled >= 0 && rested >= 0 && cancelled >= 0);
                prop_assert_eq!(filled + rested + cancelled, incoming.volume);
                prop_assert_eq!(fills.iter().map(|f| f.volume).sum::<Volume>(), filled);
                prop_assert!(fills.iter().all(|f| f.volume > 0 && f.maker_volume_left >= 0));
                prop_assert!(filled >= incoming.min_fill);
                prop_assert_eq!(book_total(&self.book), before - filled + rested);
                if incoming.limit.is_none() || !incoming.rest_remainder {
                    prop_assert_eq!(rested, 0);
                }
            }
            _ => {
                prop_assert!(fills.is_empty());
                prop_assert_eq!(self.snapshot(), snapshot, "rejected order changed the book");
            }
        }
        Ok(())
    }

    fn reprice(&mut self, order_id: u64, new_price: Price, new_volume: Volume) -> Result<(), TestCaseError> {
        let before = book_total(&self.book);
        let snapshot = self.snapshot();
        let old = self.book.order(order_id).copied();
        let mut fills = Vec::new();
        let mut model_fills = Vec::new();
        let outcome = self.book.reprice(order_id, new_price, new_volume, &mut fills);
        let expected = self.model.reprice(order_id, new_price, new_volume, &mut model_fills);
        let what = format!("reprice {order_id} ({old:?}) to {new_volume} @ {new_price}");
        prop_assert_eq!(outcome, expected, "outcome of {}", what);
        prop_assert_eq!(&fills, &model_fills, "fills of {}", what);
        prop_assert_eq!(outcome.is_none(), old.is_none(), "{}", what);
        match (outcome, old) {
            (Some(MatchOutcome::Done { filled, rested, cancelled }), Some(old)) => {
                prop_assert!(filled >= 0 && rested >= 0 && cancelled == 0, "{}", what);
                prop_assert_eq!(filled + rested, new_volume, "{}", what);
                prop_assert_eq!(fills.iter().map(|f| f.volume).sum::<Volume>(), filled);
                prop_assert!(fills
                    .iter()
                    .all(|f| f.volume > 0 && f.maker_volume_left >= 0 && f.maker_owner != old.owner));
                prop_assert_eq!(book_total(&self.book), before - old.volume_left - filled + rested, "{}", what);
                let now = self.book.order(order_id).copied();
                if rested > 0 {
                    let want = RestingOrder { price: new_price, volume_left: rested, ..old };
                    prop_assert_eq!(now, Some(want), "{}", what);
                    // Last in its queue at the new price.
                    let side = book_side(&self.book, old.direction);
                    let last_there = side.iter().rfind(|o| o.price == new_price).map(|o| o.order_id);
                    prop_assert_eq!(last_there, Some(order_id), "{}", what);
                } else {
                    prop_assert_eq!(now, None, "{}", what);
                }
            }
            (Some(MatchOutcome::Done { .. }), None) => prop_assert!(false, "{} done without an order", what),
            (Some(MatchOutcome::BadPrice | MatchOutcome::SelfTrade) | None, _) => {
                prop_assert!(fills.is_empty(), "{}", what);
                prop_assert_eq!(self.snapshot(), snapshot, "refused {} changed the book", what);
            }
            (Some(other), _) => prop_assert!(false, "{} gave {:?}", what, other),
        }
        Ok(())
    }

    fn snapshot(&self) -> (Vec<RestingOrder>, Vec<RestingOrder>) {
        (book_side(&self.book, Direction::Buy), book_side(&self.book, Direction::Sell))
    }

    fn step(&mut self, cmd: &Cmd) -> Result<(), TestCaseError> {
        match *cmd {
            Cmd::Submit { id, owner, direction, kind, price, volume } => {
                let order_id = self.resolve(id);
                let owner = owner % self.owners;
                let limit = Some(self.price(price, direction));
                let base = Incoming { order_id, owner, direction, limit, volume, min_fill: 0, rest_remainder: true };
                let incoming = match kind {
                    Kind::Limit => base,
                    Kind::Ioc => Incoming { rest_remainder: false, ..base },
                    Kind::Fok => Incoming { min_fill: volume, rest_remainder: false, ..base },
                    Kind::Min { min, rest } => Incoming { min_fill: min.min(volume), rest_remainder: rest, ..base },
                    Kind::Market { min, rest } => {
                        Incoming { limit: None, min_fill: min.min(volume), rest_remainder: rest, ..base }
                    }
                };
                self.submit(incoming)?;
            }
            Cmd::Cancel { id } => {
                let order_id = self.resolve(id);
                let before = book_total(&self.book);
                let got = self.book.cancel(order_id);
                let expected = self.model.cancel(order_id);
                prop_assert_eq!(got, expected, "cancel {}", order_id);
                let removed = got.map_or(0, |o| o.volume_left);
                prop_assert_eq!(book_total(&self.book), before - removed);
            }
            Cmd::Reduce { id, new_volume } => {
                let order_id = self.resolve(id);
                let before = book_total(&self.book);
                let old = self.book.order(order_id).map(|o| o.volume_left);
                let new_volume = match new_volume {
                    NewVolume::Absolute(volume) => volume,
                    NewVolume::Minus(delta) => old.unwrap_or(5) - delta,
                };
                let got = self.book.reduce(order_id, new_volume);
                let expected = self.model.reduce(order_id, new_volume);
                prop_assert_eq!(got, expected, "reduce {} to {}", order_id, new_volume);
                let delta = if got { old.unwrap() - new_volume } else { 0 };
                prop_assert_eq!(book_total(&self.book), before - delta);
            }
            Cmd::Move { id, price } => {
                let order_id = self.resolve(id);
                let got = self.book.cancel(order_id);
                let expected = self.model.cancel(order_id);
                prop_assert_eq!(got, expected, "cancel for move {}", order_id);
                if let Some(old) = got {
                    let incoming = Incoming {
                        order_id,
                        owner: old.owner,
                        direction: old.direction,
                        limit: Some(self.price(price, old.direction)),
                        volume: old.volume_left,
                        min_fill: 0,
                        rest_remainder: true,
                    };
                    self.submit(incoming)?;
                }
            }
            Cmd::Reprice { id, price, volume } => {
                let order_id = self.resolve(id);
                // A dead or unknown id still gets a plausible price and volume to pass along.
                let (direction, current_price, current_volume) = match self.model.find(order_id) {
                    Some(o) => (o.direction, o.price, o.volume_left),
                    None => (Direction::Buy, self.price(PriceSpec::Near { depth: 1, off_grid: 0 }, Direction::Buy), 3),
                };
                let new_price = match price {
                    RepricePrice::Keep => current_price,
                    RepricePrice::Toward(ticks) => match direction {
                        Direction::Buy => current_price + ticks * self.model.tick,
                        Direction::Sell => current_price - ticks * self.model.tick,
                    },
                    RepricePrice::Cross(ticks) => match (direction, self.model.levels(direction.opposite()).first()) {
                        (Direction::Buy, Some(best)) => best.0 + ticks * self.model.tick,
                        (Direction::Sell, Some(best)) => best.0 - ticks * self.model.tick,
                        (_, None) => current_price,
                    },
                    RepricePrice::Spec(spec) => self.price(spec, direction),
                };
                let new_volume = match volume {
                    RepriceVolume::Absolute(volume) => volume,
                    RepriceVolume::Plus(delta) => current_volume + delta,
                };
                self.reprice(order_id, new_price, new_volume)?;
            }
            Cmd::Rebase { shift, resize, misalign } => {
                let tick = self.model.tick;
                let levels = ((self.model.upper - self.model.lower) / tick + 1 + resize).max(8);
                let mut lower = self.model.lower + shift * tick;
                if misalign && tick > 1 {
                    lower += 1;
                }
                let upper = lower + (levels - 1) * tick;
                let mut got = self.book.rebase(lower, upper);
                got.sort_by_key(|o| o.order_id);
                let expected = self.model.rebase(lower, upper);
                prop_assert_eq!(got, expected, "orders removed by rebase");
                prop_assert_eq!(self.book.lower_limit(), lower);
                prop_assert_eq!(self.book.upper_limit(), upper);
            }
        }
        self.check()
    }

    /// The book must look exactly like the model, and be internally sound.
    fn check(&mut self) -> Result<(), TestCaseError> {
        let mut depth = Vec::new();
        for direction in [Direction::Buy, Direction::Sell] {
            self.book.for_each_level(direction, DEPTH_TRACKED, |p, v, c| depth.push((p, v, c)));
            depth.push((0, 0, 0)); // side separator
        }
        if !self.book.take_depth_changed() {
            prop_assert_eq!(&depth, &self.last_depth, "depth changed but the book said it did not");
        }
        self.last_depth = depth;
        if let Err(e) = self.book.check_invariants() {
            return Err(TestCaseError::fail(format!("invariant broken: {e}")));
        }
        for direction in [Direction::Buy, Direction::Sell] {
            let expected: Vec<RestingOrder> = self.model.side(direction).iter().map(ModelOrder::resting).collect();
            let got = book_side(&self.book, direction);
            prop_assert!(got.iter().all(|o| o.volume_left > 0 && o.direction == direction));
            prop_assert_eq!(&got, &expected, "{:?} orders", direction);

            let levels = book_levels(&self.book, direction);
            prop_assert_eq!(&levels, &self.model.levels(direction), "{:?} levels", direction);
            let best = levels.first().map(|l| l.0);
            prop_assert_eq!(self.book.best(direction), best);
            for n in 1..=levels.len() + 1 {
                let want = levels.get(n - 1).or(levels.last()).map(|l| l.0);
                prop_assert_eq!(self.book.nth_level_price(direction, n), want);
            }
            let mut limited = Vec::new();
            self.book.for_each_level(direction, 2, |p, v, c| limited.push((p, v, c)));
            prop_assert_eq!(&limited[..], &levels[..levels.len().min(2)]);
        }
        prop_assert_eq!(self.book.best_bid(), self.book.best(Direction::Buy));
        prop_assert_eq!(self.book.best_ask(), self.book.best(Direction::Sell));
        if let (Some(bid), Some(ask)) = (self.book.best_bid(), self.book.best_ask()) {
            prop_assert!(bid < ask, "crossed book: bid {} ask {}", bid, ask);
        }
        prop_assert_eq!(self.book.resting_count(), self.model.orders.len());
        prop_assert_eq!(book_total(&self.book), self.model.total_volume());
        for &id in &self.used_ids {
            let expected = self.model.find(id).map(ModelOrder::resting);
            prop_assert_eq!(self.book.order(id).copied(), expected, "order({})", id);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    })]

    #[test]
    fn book_matches_reference_model(scenario in scenario()) {
        let mut harness = Harness::new(scenario.tick, scenario.levels, scenario.owners);
        harness.check()?;
        for cmd in &scenario.cmds {
            harness.step(cmd)?;
        }
    }
}
