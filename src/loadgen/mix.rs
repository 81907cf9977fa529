//! The order flow one connection sends: by default exchange-core's kind of mix around a
//! moving mid price, so orders really rest, trade, move and get cancelled. Each connection
//! trades for its own account and remembers its resting orders, to cancel and move them.

/// Shares of each request kind, in percent (they need not sum to 100: they are weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixWeights {
    /// GTC limit orders a few ticks around the mid (most rest, some cross).
    pub gtc: u32,
    /// IOC limit orders through the mid (they trade or end at once).
    pub ioc: u32,
    /// Cancels of one of the connection's resting orders.
    pub cancel: u32,
    /// Price moves of one of the connection's resting orders.
    pub modify: u32,
}

impl Default for MixWeights {
    fn default() -> Self {
        Self { gtc: 45, ioc: 15, cancel: 20, modify: 20 }
    }
}

impl MixWeights {
    /// Only order inserts (GTC and IOC), no cancels or moves: `--mix submit`.
    pub fn submit_only() -> Self {
        Self { gtc: 75, ioc: 25, cancel: 0, modify: 0 }
    }

    /// The same mix with every move sent as a cancel instead (DIFF has no modify): the flow a
    /// DIFF session sends, and `--mix no-modify` for HTTP to compare with it.
    pub fn without_modify(self) -> Self {
        Self { cancel: self.cancel + self.modify, modify: 0, ..self }
    }
}

/// What the generator knows of an instrument: its id and price grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Market {
    pub instrument_id: String,
    /// Its exchange (DIFF's `insert_order` names it apart); empty where not known.
    pub exchange_id: String,
    pub tick: f64,
    pub lower: f64,
    pub upper: f64,
    /// The moving mid, in ticks from `lower`.
    mid_ticks: i64,
    band_ticks: i64,
}

impl Market {
    pub fn new(instrument_id: &str, tick: f64, lower: f64, upper: f64, reference: f64) -> Self {
        let band_ticks = ((upper - lower) / tick).round() as i64;
        let mid_ticks = (((reference - lower) / tick).round() as i64).clamp(0, band_ticks);
        Self {
            instrument_id: instrument_id.to_string(),
            exchange_id: String::new(),
            tick,
            lower,
            upper,
            mid_ticks,
            band_ticks,
        }
    }

    /// The same market, on exchange `exchange_id`.
    pub fn with_exchange(mut self, exchange_id: &str) -> Self {
        self.exchange_id = exchange_id.to_string();
        self
    }

    fn price(&self, ticks: i64) -> f64 {
        self.lower + ticks.clamp(0, self.band_ticks) as f64 * self.tick
    }
}

/// The kind of a request, for per-path histograms: the HTTP endpoints, and DIFF's
/// `insert_order` and `cancel_order` (`diff_orders.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Path {
    Submit,
    Cancel,
    Modify,
    DiffInsert,
    DiffCancel,
}

impl Path {
    pub const ALL: [Path; 5] = [Path::Submit, Path::Cancel, Path::Modify, Path::DiffInsert, Path::DiffCancel];

    pub fn name(self) -> &'static str {
        match self {
            Path::Submit => "submit",
            Path::Cancel => "cancel",
            Path::Modify => "modify",
            Path::DiffInsert => "diff_insert",
            Path::DiffCancel => "diff_cancel",
        }
    }

    /// The HTTP endpoint; for the DIFF paths, the message's `aid`.
    pub fn url(self) -> &'static str {
        match self {
            Path::Submit => "/api/order/submit",
            Path::Cancel => "/api/order/cancel",
            Path::Modify => "/api/order/modify",
            Path::DiffInsert => "insert_order",
            Path::DiffCancel => "cancel_order",
        }
    }
}

/// One request to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub path: Path,
    pub body: String,
    /// For cancels and moves: the resting order (by index in the flow's list) it names.
    target: Option<u64>,
    /// For inserts and moves: the instrument and price it (re)rests at.
    rest: Option<(usize, i64)>,
}

/// One DIFF message to send (`insert_order` or `cancel_order`).
#[derive(Clone, Debug, PartialEq)]
pub struct DiffRequest {
    pub path: Path,
    pub text: String,
    /// The number of the order it inserts or cancels: its client order id is
    /// `<prefix>-<seq>` (see [`Flow::seq_of`]).
    pub seq: u64,
    /// For inserts that may rest: the instrument and price.
    pub rest: Option<(usize, i64)>,
}

/// What the flow picked, before it is written for HTTP or DIFF.
enum Choice {
    Cancel(Resting),
    Modify(Resting, i64),
    Insert { market: usize, buy: bool, ticks: i64, volume: u64, ioc: bool, seq: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resting {
    order_id: u64,
    market: usize,
    price_ticks: i64,
}

/// xorshift64*: fast, seedable, good enough to pick orders.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The flow of one connection.
pub struct Flow {
    account: String,
    markets: Vec<Market>,
    weights: MixWeights,
    rng: Rng,
    resting: Vec<Resting>,
    next_client_id: u64,
    prefix: String,
}

/// Resting orders a connection keeps track of; older ones are forgotten (they may be filled).
const MAX_TRACKED: usize = 64;

impl Flow {
    pub fn new(account: &str, markets: Vec<Market>, weights: MixWeights, seed: u64, prefix: &str) -> Self {
        Self {
            account: account.to_string(),
            markets,
            weights,
            rng: Rng::new(seed),
            resting: Vec::with_capacity(MAX_TRACKED),
            next_client_id: 0,
            prefix: prefix.to_string(),
        }
    }

    fn pick_kind(&mut self) -> u32 {
        let w = self.weights;
        let total = w.gtc + w.ioc + w.cancel + w.modify;
        let r = self.rng.below(u64::from(total)) as u32;
        if r < w.gtc {
            0
        } else if r < w.gtc + w.ioc {
            1
        } else if r < w.gtc + w.ioc + w.cancel {
            2
        } else {
            3
        }
    }

    /// The next request, for HTTP (orders named by the exchange's id).
    pub fn next_request(&mut self) -> Request {
        match self.choose() {
            Choice::Cancel(order) => {
                let body = format!(r#"{{"account_id":"{}","order_id":{}}}"#, self.account, order.order_id);
                Request { path: Path::Cancel, body, target: Some(order.order_id), rest: None }
            }
            Choice::Modify(order, ticks) => {
                let body = format!(
                    r#"{{"account_id":"{}","order_id":{},"new_price":{}}}"#,
                    self.account,
                    order.order_id,
                    self.markets[order.market].price(ticks)
                );
                Request { path: Path::Modify, body, target: Some(order.order_id), rest: Some((order.market, ticks)) }
            }
            Choice::Insert { market: m, buy, ticks, volume, ioc, seq } => {
                let market = &self.markets[m];
                let body = format!(
                    r#"{{"account_id":"{}","client_order_id":"{}-{}","instrument_id":"{}","direction":"{}","offset":"OPEN","limit_price":{},"volume":{},"time_condition":"{}"}}"#,
                    self.account,
                    self.prefix,
                    seq,
                    market.instrument_id,
                    if buy { "BUY" } else { "SELL" },
                    market.price(ticks),
                    volume,
                    if ioc { "IOC" } else { "GTC" }
                );
                Request { path: Path::Submit, body, target: None, rest: (!ioc).then_some((m, ticks)) }
            }
        }
    }

    /// The next DIFF message: `insert_order` (limit price, GFD or IOC) or `cancel_order` by
    /// the client's order id. DIFF has no modify: a move is sent as a cancel of that order.
    /// A DIFF flow tracks its resting orders by number (`seq`): [`Flow::rests`] when one shows
    /// ALIVE, [`Flow::forget`] when one ends; an order is forgotten when its cancel is sent,
    /// so it is never cancelled twice.
    pub fn next_diff(&mut self) -> DiffRequest {
        let order = match self.choose() {
            Choice::Cancel(order) | Choice::Modify(order, _) => order,
            Choice::Insert { market: m, buy, ticks, volume, ioc, seq } => {
                let market = &self.markets[m];
                let text = format!(
                    r#"{{"aid":"insert_order","user_id":"{}","order_id":"{}-{}","exchange_id":"{}","instrument_id":"{}","direction":"{}","offset":"OPEN","volume":{},"price_type":"LIMIT","limit_price":{},"time_condition":"{}","volume_condition":"ANY"}}"#,
                    self.account,
                    self.prefix,
                    seq,
                    market.exchange_id,
                    market.instrument_id,
                    if buy { "BUY" } else { "SELL" },
                    volume,
                    market.price(ticks),
                    if ioc { "IOC" } else { "GFD" }
                );
                return DiffRequest { path: Path::DiffInsert, text, seq, rest: (!ioc).then_some((m, ticks)) };
            }
        };
        self.forget(order.order_id);
        let text = format!(
            r#"{{"aid":"cancel_order","user_id":"{}","order_id":"{}-{}"}}"#,
            self.account, self.prefix, order.order_id
        );
        DiffRequest { path: Path::DiffCancel, text, seq: order.order_id, rest: None }
    }

    /// The number of one of this flow's client order ids (`<prefix>-<seq>`); None for others.
    pub fn seq_of(&self, client_order_id: &str) -> Option<u64> {
        client_order_id.strip_prefix(self.prefix.as_str())?.strip_prefix('-')?.parse().ok()
    }

    /// DIFF: order `seq` rests at `rest` (instrument, price in ticks): it showed ALIVE.
    pub fn rests(&mut self, seq: u64, rest: (usize, i64)) {
        if self.resting.len() == MAX_TRACKED {
            self.resting.remove(0);
        }
        self.resting.push(Resting { order_id: seq, market: rest.0, price_ticks: rest.1 });
    }

    /// DIFF: order `seq` ended (or is being cancelled): no longer one to cancel.
    pub fn forget(&mut self, seq: u64) {
        self.resting.retain(|r| r.order_id != seq);
    }

    /// Picks the next request: a cancel or move of a resting order, or an insert.
    fn choose(&mut self) -> Choice {
        let kind = self.pick_kind();
        if kind >= 2 && !self.resting.is_empty() {
            let index = self.rng.below(self.resting.len() as u64) as usize;
            let order = self.resting[index];
            if kind == 2 {
                return Choice::Cancel(order);
            }
            let market = &self.markets[order.market];
            let step = if self.rng.below(2) == 0 { -1 } else { 1 } * (1 + self.rng.below(3) as i64);
            let ticks = (order.price_ticks + step).clamp(0, market.band_ticks);
            return Choice::Modify(order, ticks);
        }
        // An insert: the mid walks a tick now and then.
        let m = self.rng.below(self.markets.len() as u64) as usize;
        let walk = self.rng.below(16);
        let market = &mut self.markets[m];
        if walk == 0 {
            market.mid_ticks = (market.mid_ticks - 1).max(1);
        } else if walk == 1 {
            market.mid_ticks = (market.mid_ticks + 1).min(market.band_ticks - 1);
        }
        let buy = self.rng.next_u64() & 1 == 0;
        let ioc = kind == 1;
        let offset = if ioc { 2 } else { self.rng.below(6) as i64 - 1 };
        // GTC: a few ticks on its own side (some one tick through); IOC: two ticks through.
        let ticks = if buy { market.mid_ticks - offset } else { market.mid_ticks + offset };
        let ticks = if ioc {
            if buy {
                market.mid_ticks + 2
            } else {
                market.mid_ticks - 2
            }
        } else {
            ticks
        };
        let ticks = ticks.clamp(0, market.band_ticks);
        let volume = 1 + self.rng.below(5);
        self.next_client_id += 1;
        Choice::Insert { market: m, buy, ticks, volume, ioc, seq: self.next_client_id }
    }

    /// Learns from an answer: an order that rests is remembered, one that ended is forgotten.
    pub fn on_answer(&mut self, request: &Request, ok: bool, order_id: Option<u64>, alive: bool) {
        if let Some(target) = request.target {
            let still = request.path == Path::Modify && ok && alive;
            if !still {
                self.resting.retain(|r| r.order_id != target);
            } else if let (Some(r), Some((_, ticks))) =
                (self.resting.iter_mut().find(|r| r.order_id == target), request.rest)
            {
                r.price_ticks = ticks;
            }
            return;
        }
        if let (true, true, Some(order_id), Some((market, price_ticks))) = (ok, alive, order_id, request.rest) {
            if self.resting.len() == MAX_TRACKED {
                self.resting.remove(0);
            }
            self.resting.push(Resting { order_id, market, price_ticks });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(weights: MixWeights) -> Flow {
        let markets = vec![
            Market::new("SR501", 1.0, 4500.0, 5500.0, 5000.0),
            Market::new("cu2501", 10.0, 63000.0, 77000.0, 70000.0),
        ];
        Flow::new("lg-1", markets, weights, 42, "run1")
    }

    #[test]
    fn the_mix_inserts_then_cancels_and_moves_what_rests() {
        let mut f = flow(MixWeights::default());
        let mut paths = std::collections::BTreeMap::new();
        let mut next_id = 1;
        for _ in 0..2000 {
            let r = f.next_request();
            *paths.entry(r.path).or_insert(0) += 1;
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(v["account_id"], "lg-1");
            if r.path == Path::Submit {
                let price = v["limit_price"].as_f64().unwrap();
                assert!((4500.0..=77000.0).contains(&price));
                next_id += 1;
                f.on_answer(&r, true, Some(next_id), v["time_condition"] == "GTC");
            } else {
                f.on_answer(&r, true, v["order_id"].as_u64(), r.path == Path::Modify);
            }
        }
        assert!(paths[&Path::Submit] > 1000 && paths[&Path::Cancel] > 100 && paths[&Path::Modify] > 100, "{paths:?}");
        assert!(f.resting.len() <= MAX_TRACKED);
        let mut only = flow(MixWeights::submit_only());
        assert!((0..200).all(|_| only.next_request().path == Path::Submit));
    }

    #[test]
    fn the_diff_flow_inserts_then_cancels_by_client_order_id() {
        use crate::diff::messages::ClientMessage;
        let markets = vec![
            Market::new("SR501", 1.0, 4500.0, 5500.0, 5000.0).with_exchange("CZCE"),
            Market::new("cu2501", 10.0, 63000.0, 77000.0, 70000.0).with_exchange("SHFE"),
        ];
        let mut f = Flow::new("lg-1", markets, MixWeights::default().without_modify(), 42, "run1c0");
        let (mut inserts, mut cancels) = (0, 0);
        let mut cancelled = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let r = f.next_diff();
            match ClientMessage::parse(&r.text).unwrap_or_else(|e| panic!("{e}: {}", r.text)) {
                ClientMessage::InsertOrder(o) => {
                    assert_eq!(r.path, Path::DiffInsert);
                    inserts += 1;
                    assert_eq!(o.user_id, "lg-1");
                    assert_eq!(f.seq_of(&o.order_id), Some(r.seq));
                    let exchange = if o.instrument_id == "SR501" { "CZCE" } else { "SHFE" };
                    assert_eq!(o.exchange_id, exchange);
                    let tc = serde_json::to_value(o.time_condition).unwrap();
                    assert!(tc == "GFD" || tc == "IOC", "{}", r.text);
                    assert_eq!(r.rest.is_some(), tc == "GFD");
                    if let Some(rest) = r.rest {
                        f.rests(r.seq, rest);
                    }
                }
                ClientMessage::CancelOrder(c) => {
                    assert_eq!(r.path, Path::DiffCancel);
                    cancels += 1;
                    assert_eq!(f.seq_of(&c.order_id), Some(r.seq));
                    assert!(cancelled.insert(r.seq), "order {} cancelled twice", r.seq);
                }
                other => panic!("{other:?}"),
            }
        }
        // Moves are sent as cancels: 45 : 15 : 40 of the picks, cancels only of what rests.
        assert!(inserts > 1000 && cancels > 500, "{inserts} inserts, {cancels} cancels");
        assert_eq!(f.seq_of("run1c0-17"), Some(17));
        assert_eq!(f.seq_of("run1c01-17"), None);
        assert_eq!(f.seq_of("other-17"), None);
    }
}
