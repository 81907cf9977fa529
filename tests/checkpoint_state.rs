//! Shard checkpoints (`Service::encode_checkpoint` / `decode_checkpoint`): a decoded service
//! must be the same shard as the one encoded, not just in its state dump but in everything it
//! does next. Two (and one) shard services trade on four instruments (partial fills, resting
//! orders on both sides, cancels, modifies, closes, rings of ticks and bars that wrap, journals
//! that evict); each is then checkpointed and decoded, and the decoded cluster must show the
//! same state and REST views, and answer the same further commands with the same replies, WAL
//! records, messages, quotes and history writes as the original, ending in the same state.
//! Damaged checkpoints are refused, never a panic.

use qaexchange::domain::command::InsertOrder;
use qaexchange::domain::engine::EngineConfig;
use qaexchange::domain::instrument::{parse_instruments, Instrument};
use qaexchange::domain::market_data::KLINE_PERIODS_NS;
use qaexchange::domain::name::{AccountId, ClientOrderId, InstrumentId};
use qaexchange::domain::shard::settlement::SettleCut;
use qaexchange::domain::shard::{account_shard, check_cluster, order_shard, Outgoing};
use qaexchange::domain::types::{
    price_from_f64, Direction, Offset, PriceType, TimeCondition, TimestampNs, Volume, VolumeCondition,
};
use qaexchange::server::credentials::Password;
use qaexchange::server::journal::JournalLimits;
use qaexchange::server::service::{Action, Origin, Query, Service, ServiceCounters, SettleStep, Staged};
use std::collections::VecDeque;

const INSTRUMENTS: &str = r#"
[[instrument]]
instrument_id = "SR501"
exchange_id = "CZCE"
product_id = "SR"
volume_multiple = 10
price_tick = 1.0
margin_rate_long = 0.1
margin_rate_short = 0.1
limit_rate = 0.05
pre_settlement = 5000.0
max_order_volume = 100
shard = 0
[instrument.commission]
open_per_lot = 3.0
close_per_lot = 3.0

[[instrument]]
instrument_id = "cu2501"
exchange_id = "SHFE"
product_id = "cu"
volume_multiple = 5
price_tick = 10.0
margin_rate_long = 0.1
margin_rate_short = 0.12
limit_rate = 0.05
pre_settlement = 70000.0
max_order_volume = 100
shard = 1
[instrument.commission]
open_per_lot = 2.0
close_per_lot = 2.0
close_today_per_lot = 4.0

[[instrument]]
instrument_id = "cu2502"
exchange_id = "SHFE"
product_id = "cu"
volume_multiple = 5
price_tick = 10.0
margin_rate_long = 0.1
margin_rate_short = 0.1
limit_rate = 0.05
pre_settlement = 70500.0
max_order_volume = 100
shard = 0
[instrument.commission]
open_rate = 0.0001
close_rate = 0.0001
close_today_rate = 0.0002

[[instrument]]
instrument_id = "SR503"
exchange_id = "CZCE"
product_id = "SR"
volume_multiple = 10
price_tick = 1.0
margin_rate_long = 0.08
margin_rate_short = 0.08
limit_rate = 0.05
pre_settlement = 5100.0
max_order_volume = 100
shard = 1
[instrument.commission]
open_per_lot = 1.5
close_per_lot = 1.5
"#;

fn instruments() -> Vec<Instrument> {
    parse_instruments(INSTRUMENTS).unwrap()
}

/// Small rings and journal limits, so the scenario wraps the tick and bar rings and evicts.
fn engine_config() -> EngineConfig {
    EngineConfig { book_capacity: 8, live_order_capacity: 32, kline_capacity: 3, tick_capacity: 5 }
}

fn limits() -> JournalLimits {
    JournalLimits { orders_per_account: 6, trades_per_account: 5, trades_per_instrument: 4 }
}

const ACCOUNTS: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];
const SYMBOLS: [&str; 4] = ["SR501", "cu2501", "cu2502", "SR503"];

fn acc(name: &str) -> AccountId {
    AccountId::new(name).unwrap()
}

fn inst(name: &str) -> InstrumentId {
    InstrumentId::new(name).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn order_with(
    account: &str,
    client: &str,
    instrument: &str,
    direction: Direction,
    offset: Offset,
    price: Option<f64>,
    volume: Volume,
    time_condition: TimeCondition,
    volume_condition: VolumeCondition,
) -> Action {
    Action::Submit(InsertOrder {
        account_id: acc(account),
        client_order_id: ClientOrderId::new(client).unwrap(),
        instrument_id: inst(instrument),
        direction,
        offset,
        price_type: if price.is_some() { PriceType::Limit } else { PriceType::Any },
        limit_price: price.map(price_from_f64),
        volume,
        time_condition,
        volume_condition,
        min_volume: 0,
    })
}

/// A GFD limit order.
fn limit(account: &str, client: &str, instrument: &str, direction: Direction, price: f64, volume: Volume) -> Action {
    order_with(
        account,
        client,
        instrument,
        direction,
        Offset::Open,
        Some(price),
        volume,
        TimeCondition::Gfd,
        VolumeCondition::Any,
    )
}

fn close(account: &str, client: &str, instrument: &str, direction: Direction, price: f64, volume: Volume) -> Action {
    order_with(
        account,
        client,
        instrument,
        direction,
        Offset::Close,
        Some(price),
        volume,
        TimeCondition::Gfd,
        VolumeCondition::Any,
    )
}

fn cancel(account: &str, client: &str) -> Action {
    Action::Cancel {
        account_id: acc(account),
        order_id: None,
        client_order_id: Some(ClientOrderId::new(client).unwrap()),
    }
}

fn modify(account: &str, client: &str, price: Option<f64>, volume: Option<Volume>) -> Action {
    Action::Modify {
        account_id: acc(account),
        order_id: None,
        client_order_id: Some(ClientOrderId::new(client).unwrap()),
        new_price: price.map(price_from_f64),
        new_volume: volume,
    }
}

fn open(account: &str, cash: f64, password: bool) -> Action {
    Action::OpenAccount {
        account_id: acc(account),
        init_cash: Some(price_from_f64(cash)),
        password: password.then(|| Password::Hashed(format!("$argon2id$v=19$m=19456,t=2,p=1$salt-{account}$hash"))),
        // Accounts with a password belong to user "u1" (users and owners are in checkpoints).
        owner: password.then(|| acc("u1")),
    }
}

fn register(user: &str) -> Action {
    Action::Register {
        user_id: acc(user),
        password: Password::Hashed(format!("$argon2id$v=19$m=19456,t=2,p=1$salt-{user}$hash")),
        admin: false,
    }
}

/// `action` as user `user` (not an admin) sends it.
fn as_user(user: &str, action: Action) -> Action {
    Action::AsUser { user: acc(user), action: Box::new(action) }
}

fn transfer(account: &str, amount: f64, deposit: bool) -> Action {
    Action::Transfer { account_id: acc(account), amount: price_from_f64(amount), deposit }
}

/// Shard services joined by FIFO queues, recording everything each step produced.
struct Cluster {
    services: Vec<Service>,
    /// Per receiving shard: (sender, message), in order.
    queues: Vec<VecDeque<(u16, Outgoing)>>,
    clock: TimestampNs,
    tag: u32,
    /// What every step produced: WAL records, messages, replies, quotes, history writes.
    log: Vec<String>,
    /// The DIFF patches every step produced (charts, followed accounts).
    patches: Vec<String>,
    /// Replies are logged for requests from this tag on: the connections of requests made
    /// before a checkpoint are gone after a restart, and their answers with them.
    replies_from: u32,
    /// Whether the steps publish chart patches. Which bars and ticks were published is the
    /// process's (a restart publishes from the newest again), so both clusters start doing so
    /// after the checkpoint.
    charts: bool,
}

impl Cluster {
    fn new(shards: u16) -> Self {
        let services: Vec<Service> = (0..shards)
            .map(|shard| {
                let mut service = Service::new(shard, shards, instruments(), 20250102, engine_config(), limits());
                service.set_history(true);
                service
            })
            .collect();
        Self {
            services,
            queues: vec![VecDeque::new(); shards as usize],
            clock: 0,
            tag: 0,
            log: Vec::new(),
            patches: Vec::new(),
            replies_from: 0,
            charts: false,
        }
    }

    fn shards(&self) -> u16 {
        self.services.len() as u16
    }

    /// 0.7 s a step, from 2025-01-02 09:30 China time: 3 s bars and 1 min bars roll over.
    fn now(&mut self) -> TimestampNs {
        self.clock += 700_000_000;
        1_735_781_400_000_000_000 + self.clock
    }

    fn instrument_shard(&self, instrument: &InstrumentId) -> usize {
        let engine = self.services[0].engine();
        engine.instrument_owner(engine.instrument_slot(instrument).unwrap()) as usize
    }

    fn shard_of(&self, action: &Action) -> usize {
        let n = self.shards();
        let by_account = |id: &AccountId| account_shard(id, n) as usize;
        match action {
            Action::OpenAccount { account_id, .. }
            | Action::Follow { account_id, .. }
            | Action::Transfer { account_id, .. }
            | Action::SetFrozen { account_id, .. }
            | Action::Cancel { account_id, .. }
            | Action::Modify { account_id, .. } => by_account(account_id),
            Action::Submit(order) => by_account(&order.account_id),
            Action::Register { user_id, .. } => by_account(user_id),
            Action::SetSettlementPrice { instrument_id, .. }
            | Action::SetInstrumentStatus { instrument_id, .. }
            | Action::UpdateInstrument { instrument_id, .. } => self.instrument_shard(instrument_id),
            Action::CreateInstrument(inst) => qaexchange::domain::shard::instrument_shard(inst, n) as usize,
            // Sent to each shard by `settle`.
            Action::Settle(_) => 0,
            Action::AsUser { action, .. } => self.shard_of(action),
            Action::Query(query) => match query {
                Query::User(id) => by_account(id),
                Query::Account(id) | Query::UserOrders(id) | Query::Positions(id) | Query::UserTrades(id) => {
                    by_account(id)
                }
                Query::Order(id) => order_shard(*id, n) as usize,
                Query::OrderBook { instrument_id, .. }
                | Query::Tick(instrument_id)
                | Query::MarketTrades { instrument_id, .. }
                | Query::Kline { instrument_id, .. }
                | Query::Chart { instrument_id, .. } => self.instrument_shard(instrument_id),
                _ => 0,
            },
        }
    }

    /// Records what the step left, as the committer would take it.
    fn absorb(&mut self, shard: usize, staged: Staged, now: TimestampNs) {
        let service = &mut self.services[shard];
        let quotes = service.take_changed_quotes();
        let charts = if self.charts { service.take_chart_patches(&quotes) } else { Vec::new() };
        let trades = service.take_trade_patches(now);
        let history = service.take_history();
        let replies: Vec<_> = staged.replies.iter().filter(|(origin, _)| origin.tag >= self.replies_from).collect();
        self.log.push(format!(
            "shard {shard}: records {:?}\nsends {:?}\nreplies {replies:?}\nquotes {quotes:?}\nhistory {history:?}",
            staged.records, staged.sends
        ));
        self.patches.push(format!("shard {shard}: charts {charts:?}\ntrades {trades:?}"));
        for out in staged.sends {
            self.queues[out.to as usize].push_back((shard as u16, out));
        }
    }

    fn act_at(&mut self, action: Action, now: TimestampNs) {
        let shard = self.shard_of(&action);
        self.act_on(shard, action, now);
    }

    fn act_on(&mut self, shard: usize, action: Action, now: TimestampNs) {
        self.tag += 1;
        let origin = Origin { shard, conn: 7, tag: self.tag };
        let mut staged = Staged::default();
        self.services[shard].handle(action, now, origin, &mut staged);
        self.absorb(shard, staged, now);
    }

    fn act(&mut self, action: Action) {
        let now = self.now();
        self.act_at(action, now);
    }

    /// Delivers one queued message (to the lowest shard with any); false when none is queued.
    fn deliver_one(&mut self) -> bool {
        let Some(to) = (0..self.queues.len()).find(|&s| !self.queues[s].is_empty()) else { return false };
        let (from, out) = self.queues[to].pop_front().unwrap();
        let now = self.now();
        let mut staged = Staged::default();
        self.services[to].deliver(from, out.seq, out.msg, now, &mut staged);
        self.absorb(to, staged, now);
        true
    }

    fn drain(&mut self) {
        while self.deliver_one() {}
    }

    /// An instrument's status on every shard, its owner first (as the server sends it).
    fn set_status(&mut self, symbol: &str, status: qaexchange::domain::instrument::InstrumentStatus) {
        self.on_every_shard(Action::SetInstrumentStatus { instrument_id: inst(symbol), status });
    }

    /// `action` on the owner of the instrument it names, then on every other shard.
    fn on_every_shard(&mut self, action: Action) {
        let owner = self.shard_of(&action);
        let others = (0..self.services.len()).filter(|&s| s != owner);
        for shard in std::iter::once(owner).chain(others).collect::<Vec<_>>() {
            let now = self.now();
            self.act_on(shard, action.clone(), now);
        }
    }

    /// Daily settlement as the server's coordinator runs it: prices set on the owners, every
    /// shard halted, nothing in flight, the cut from the owners' inputs, step 1 everywhere,
    /// nothing in flight, step 2 everywhere, trading resumed.
    fn settle(&mut self, prices: &[(&str, f64)]) {
        for &(symbol, price) in prices {
            self.act(Action::SetSettlementPrice { instrument_id: inst(symbol), price: price_from_f64(price) });
        }
        let n = self.services.len();
        for shard in 0..n {
            let now = self.now();
            self.act_on(shard, Action::Settle(SettleStep::Halt), now);
        }
        self.drain();
        let day = self.services[0].engine().trading_day();
        let count = self.services[0].engine().instruments().len();
        let mut cut = SettleCut {
            settled_day: day,
            next_day: qaexchange::domain::engine::next_weekday(day).unwrap(),
            prices: vec![0; count],
            closes: vec![0; count],
            open_interest: vec![0; count],
        };
        for service in &self.services {
            for input in service.engine().settlement_inputs() {
                let i = input.instrument as usize;
                (cut.prices[i], cut.closes[i], cut.open_interest[i]) = (input.price, input.close, input.open_interest);
            }
        }
        for step in [SettleStep::Prepare(cut.clone()), SettleStep::Apply(cut.clone()), SettleStep::Resume] {
            for shard in 0..n {
                let now = self.now();
                self.act_on(shard, Action::Settle(step.clone()), now);
            }
            self.drain();
        }
        for service in &self.services {
            assert_eq!(service.engine().trading_day(), cut.next_day);
        }
    }

    fn in_flight(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Every shard checkpointed and decoded, with the messages in flight as they are (the
    /// checkpoint file's outbox carries those). The original's per-process state is reset as a
    /// restart resets it, so the two can be compared: counters from zero.
    fn checkpoint(&mut self) -> Cluster {
        let services = self
            .services
            .iter_mut()
            .map(|service| {
                let bytes = service.encode_checkpoint().unwrap();
                let mut decoded = Service::decode_checkpoint(&bytes, limits()).unwrap();
                decoded.set_history(true);
                service.reset_counters();
                decoded
            })
            .collect();
        Cluster {
            services,
            queues: self.queues.clone(),
            clock: self.clock,
            tag: self.tag,
            log: Vec::new(),
            patches: Vec::new(),
            replies_from: self.tag + 1,
            charts: self.charts,
        }
    }

    /// Everything observable without a step: the state dump, the engine's tables, market data,
    /// the journal's listings.
    fn dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        for service in &self.services {
            let engine = service.engine();
            out.push(format!("{:?}", engine.state()));
            out.push(format!(
                "{} {} {} {:?} {:?} {:?} {:?}",
                engine.shard(),
                engine.shards(),
                engine.trading_day(),
                engine.config(),
                engine.marks(),
                engine.sent(),
                engine.received()
            ));
            out.push(format!("{:?}", engine.instruments()));
            out.push(format!("{:?}", engine.ledger().accounts()));
            out.push(format!("{:?}", engine.ledger().live_orders_sorted()));
            for slot in 0..engine.instruments().len() as u32 {
                out.push(format!("{:?} {:?}", engine.open_interest(slot), engine.market(slot)));
                if let Some(book) = engine.book(slot) {
                    let mut orders = Vec::new();
                    for direction in [Direction::Buy, Direction::Sell] {
                        book.for_each_order(direction, |o| orders.push(*o));
                    }
                    out.push(format!("{orders:?}"));
                }
            }
            let journal = service.journal();
            out.push(format!("{:?} {}", journal.limits(), journal.order_count()));
            for name in ACCOUNTS {
                let id = acc(name);
                out.push(format!("{:?}", journal.account_orders(&id).collect::<Vec<_>>()));
                out.push(format!("{:?}", journal.account_trades(&id).collect::<Vec<_>>()));
            }
            for symbol in SYMBOLS {
                out.push(format!("{:?}", journal.market_trades(&inst(symbol), 100).collect::<Vec<_>>()));
            }
            for id in 0..200 {
                out.push(format!("{:?}", journal.order(id)));
            }
            out.push(format!("{:?}", service.counters()));
        }
        out
    }

    /// The REST answers about every account, instrument and order (steps: they stamp times).
    fn query_everything(&mut self) {
        let mut queries = Vec::new();
        for name in ACCOUNTS {
            let id = acc(name);
            queries.extend([Query::Account(id), Query::UserOrders(id), Query::UserTrades(id), Query::Positions(id)]);
        }
        for symbol in SYMBOLS {
            let id = inst(symbol);
            queries.extend([
                Query::OrderBook { instrument_id: id, depth: 10 },
                Query::Tick(id),
                Query::MarketTrades { instrument_id: id, limit: 100 },
                Query::Chart { instrument_id: id, duration_ns: 0, count: 100 },
            ]);
            for (period_index, &duration_ns) in KLINE_PERIODS_NS.iter().enumerate() {
                queries.push(Query::Kline { instrument_id: id, period_index, count: 100 });
                queries.push(Query::Chart { instrument_id: id, duration_ns, count: 100 });
            }
        }
        queries.extend((0..120).map(Query::Order));
        queries.push(Query::Instruments);
        for query in queries {
            self.act(Action::Query(query));
        }
        for shard in 0..self.services.len() {
            self.tag += 1;
            let mut staged = Staged::default();
            let origin = Origin { shard, conn: 7, tag: self.tag };
            let now = self.now();
            self.services[shard].handle(Action::Query(Query::ShardState), now, origin, &mut staged);
            self.absorb(shard, staged, now);
        }
    }

    fn check_invariants(&self) {
        for service in &self.services {
            service.engine().check_local().unwrap();
        }
        if self.in_flight() == 0 {
            let states: Vec<_> = self.services.iter().map(|s| s.engine().state()).collect();
            check_cluster(&states).unwrap();
        }
    }
}

use Direction::{Buy, Sell};

/// The owner of resting bid `b{i}{level}` and of resting ask `s{i}{level}` on `SYMBOLS[i]`.
fn buyer(i: usize, level: usize) -> &'static str {
    ACCOUNTS[(i + level) % 8]
}

fn seller(i: usize, level: usize) -> &'static str {
    ACCOUNTS[(i + level + 3) % 8]
}

/// Mid price and tick of `SYMBOLS[i]`.
fn mid(i: usize) -> (f64, f64) {
    match SYMBOLS[i] {
        "SR501" => (5000.0, 1.0),
        "SR503" => (5100.0, 1.0),
        "cu2502" => (70500.0, 10.0),
        _ => (70000.0, 10.0),
    }
}

impl Cluster {
    /// An account whose shard does not own `symbol` (any account with one shard): its orders
    /// on `symbol` cross shards.
    fn remote_account(&self, symbol: &str) -> &'static str {
        let owner = self.instrument_shard(&inst(symbol));
        let n = self.shards();
        ACCOUNTS.into_iter().find(|name| n == 1 || account_shard(&acc(name), n) as usize != owner).unwrap()
    }

    /// The lots offered at `price` or lower.
    fn ask_volume_through(&self, symbol: &str, price: i64) -> Volume {
        let engine = self.services[self.instrument_shard(&inst(symbol))].engine();
        let book = engine.book(engine.instrument_slot(&inst(symbol)).unwrap()).unwrap();
        let mut volume = 0;
        book.for_each_level(Sell, usize::MAX, |level, lots, _| {
            if level <= price {
                volume += lots;
            }
        });
        volume
    }

    /// An account holding at least one closable long lot of `symbol`.
    fn long_holder(&self, symbol: &str) -> &'static str {
        let n = self.shards();
        ACCOUNTS
            .into_iter()
            .find(|name| {
                let engine = self.services[account_shard(&acc(name), n) as usize].engine();
                let slot = engine.instrument_slot(&inst(symbol)).unwrap();
                let account = engine.ledger().account(engine.account_slot(&acc(name)).unwrap());
                account.position(slot).is_some_and(|p| p.long_today.closable() + p.long_his.closable() > 0)
            })
            .expect("someone holds a long position")
    }
}

/// The trading before the checkpoint: accounts with and without passwords, transfers, books
/// with resting orders on both sides of every instrument (several at one price: time
/// priority), partial fills, IOC and FOK orders, a market order, cancels, modifies that keep
/// and lose priority, k-line and tick rings that wrap, journals that evict; and left resting at
/// the checkpoint: a close order, and a modify waiting for another shard.
fn trade_before(c: &mut Cluster) {
    c.act(register("u1"));
    c.act(register("u2"));
    for (n, name) in ACCOUNTS.iter().enumerate() {
        c.act(open(name, 2_000_000.0 + n as f64 * 1000.0, n % 2 == 0));
    }
    c.act(transfer("A", 50_000.0, true));
    c.act(transfer("B", 12_345.678_9, false));
    c.drain();
    for (i, symbol) in SYMBOLS.iter().enumerate() {
        let (mid, tick) = mid(i);
        for level in 1..=3 {
            c.act(limit(
                buyer(i, level),
                &format!("b{i}{level}"),
                symbol,
                Buy,
                mid - tick * level as f64,
                level as i64 + 1,
            ));
            c.act(limit(
                seller(i, level),
                &format!("s{i}{level}"),
                symbol,
                Sell,
                mid + tick * level as f64,
                level as i64 + 2,
            ));
        }
        c.drain();
        // Same prices, later: behind in time priority.
        c.act(limit(buyer(i, 6), &format!("q{i}"), symbol, Buy, mid - tick, 1));
        c.act(limit(seller(i, 6), &format!("t{i}"), symbol, Sell, mid + tick, 1));
        c.drain();
    }
    // Crossing orders: partial fills through several levels, some resting the remainder.
    for (i, symbol) in SYMBOLS.iter().enumerate() {
        let (mid, tick) = mid(i);
        c.act(limit(buyer(i, 4), &format!("x{i}"), symbol, Buy, mid + 2.0 * tick, 5));
        c.drain();
        c.act(limit(seller(i, 4), &format!("y{i}"), symbol, Sell, mid - 2.0 * tick, 9));
        c.drain();
        let ioc = order_with(
            buyer(i, 5),
            &format!("ioc{i}"),
            symbol,
            Buy,
            Offset::Open,
            Some(mid + 3.0 * tick),
            4,
            TimeCondition::Ioc,
            VolumeCondition::Any,
        );
        c.act(ioc);
        c.drain();
        let fok = order_with(
            seller(i, 5),
            &format!("fok{i}"),
            symbol,
            Sell,
            Offset::Open,
            Some(mid - 3.0 * tick),
            50,
            TimeCondition::Ioc,
            VolumeCondition::All,
        );
        c.act(fok);
        c.drain();
    }
    c.act(order_with("C", "mkt", "cu2501", Sell, Offset::Open, None, 1, TimeCondition::Ioc, VolumeCondition::Any));
    c.drain();
    // Cancels and modifies of resting orders: the volume down (keeps its place), the price
    // (goes to the back), both; and ones that find nothing.
    c.act(cancel(buyer(0, 3), "b03"));
    c.act(cancel(seller(2, 3), "s23"));
    c.act(cancel("H", "nonexistent"));
    c.drain();
    c.act(modify(buyer(1, 3), "b13", None, Some(1)));
    c.act(modify(buyer(3, 2), "b32", Some(5098.0), None));
    c.act(modify(seller(1, 3), "s13", Some(70020.0), Some(2)));
    c.act(modify("A", "nonexistent", Some(70020.0), None));
    c.drain();
    // More trades at every instrument, 20 s apart, so the tick and bar rings wrap.
    for round in 0..6 {
        for (i, symbol) in SYMBOLS.iter().enumerate() {
            let (price, _) = mid(i);
            let (a, b) = (ACCOUNTS[(round + i) % 8], ACCOUNTS[(round + i + 1) % 8]);
            c.act(limit(a, &format!("r{round}{i}a"), symbol, Buy, price, 1 + (round % 2) as i64));
            c.act(limit(b, &format!("r{round}{i}b"), symbol, Sell, price, 1));
            c.drain();
        }
        c.clock += 20_000_000_000;
    }
    // A settled day: day orders and orders outside the new bands end, positions roll to his,
    // the checkpoint carries the cut and the statements.
    c.settle(&[("SR501", 5002.0)]);
    c.check_invariants();
    // Suspended at the checkpoint (every shard's copy of the spec must say so after it), and
    // SR501's margin and largest order changed.
    c.set_status("cu2502", qaexchange::domain::instrument::InstrumentStatus::Suspended);
    let update =
        qaexchange::domain::instrument::InstrumentUpdate::from_values(Some(0.12), None, Some(50), None).unwrap();
    c.on_every_shard(Action::UpdateInstrument { instrument_id: inst("SR501"), update });
    // Listed at run time: the checkpoint carries its book and quote, and it trades after.
    let listed = parse_instruments(
        "[[instrument]]\ninstrument_id = \"SR509\"\nexchange_id = \"CZCE\"\nproduct_id = \"SR\"\n\
         volume_multiple = 10\nprice_tick = 1.0\nmargin_rate_long = 0.1\nmargin_rate_short = 0.1\n\
         limit_rate = 0.1\npre_settlement = 5100.0\nmax_order_volume = 10\ncommission = { open_per_lot = 2.0 }\n",
    )
    .unwrap();
    c.on_every_shard(Action::CreateInstrument(Box::new(listed[0].clone())));
    c.act(limit("A", "n1", "SR509", Sell, 5100.0, 2));
    c.drain();
    // Resting at the checkpoint: a close order (the book must remember its offset) ...
    let holder = c.long_holder("SR501");
    c.act(close(holder, "cl1", "SR501", Sell, 5009.0, 1));
    c.drain();
    // ... and an order whose modify waits for another shard's answer.
    let remote = c.remote_account("cu2501");
    c.act(limit(remote, "mv", "cu2501", Buy, 69910.0, 3));
    c.drain();
    c.act(modify(remote, "mv", Some(69920.0), None));
    c.act(cancel(buyer(2, 1), "b21"));
}

/// The trading after the checkpoint, the same on the original and the decoded cluster: orders
/// that trade with what rests (time priority decides which), cancels and modifies of orders from
/// before the checkpoint, followers, a new account, steps stamped before the last one.
fn trade_after(c: &mut Cluster) {
    // The instrument listed before the checkpoint trades against its resting order.
    c.act(limit("B", "n2", "SR509", Buy, 5100.0, 1));
    c.drain();
    // Suspended at the checkpoint: refused, then trading again.
    c.act(limit("B", "sus", "cu2502", Buy, 70000.0, 1));
    c.set_status("cu2502", qaexchange::domain::instrument::InstrumentStatus::Trading);
    c.drain();
    // While the modify is in flight, another is refused (or, once answered, runs).
    let remote = c.remote_account("cu2501");
    c.act(modify(remote, "mv", Some(69930.0), None));
    c.act(Action::Follow { account_id: acc("A"), on: true });
    c.act(Action::Follow { account_id: acc("F"), on: true });
    c.act(open("NEW", 1_000_000.0, true));
    c.act(open("A", 1.0, false));
    c.drain();
    // An open order takes every ask up to the resting close's price, the close last: that
    // trade leaves the open interest as it was (the book must know the close's offset).
    let volume = c.ask_volume_through("SR501", price_from_f64(5009.0));
    if volume > 0 {
        c.act(limit("NEW", "vs-close", "SR501", Buy, 5009.0, volume));
        c.drain();
    }
    for (i, symbol) in SYMBOLS.iter().enumerate() {
        let (mid, tick) = mid(i);
        c.act(limit(seller(i, 7), &format!("z{i}"), symbol, Sell, mid - 4.0 * tick, 6));
        c.act(limit("NEW", &format!("n{i}"), symbol, Buy, mid + 4.0 * tick, 7));
        c.drain();
    }
    c.act(cancel(buyer(1, 2), "b12"));
    c.act(modify(seller(3, 2), "s32", Some(5101.0), None));
    c.act(limit("A", "x0", "SR501", Buy, 5000.0, 1));
    c.drain();
    // The wall clock goes back: the service still stamps after its last timestamp.
    let past = 1_735_781_400_000_000_000;
    c.act_at(limit("C", "late", "cu2502", Sell, 70400.0, 2), past);
    c.act_at(transfer("E", 10.0, true), past);
    c.drain();
    c.act(Action::Follow { account_id: acc("A"), on: false });
    c.drain();
    // Users and owners came through the checkpoint: u1 owns A (opened with a password), u2
    // owns nothing; a second registration of u1 is refused.
    c.act(as_user("u1", Action::Query(Query::Account(acc("A")))));
    c.act(as_user("u2", Action::Query(Query::Account(acc("A")))));
    c.act(as_user("u2", transfer("A", 5.0, true)));
    c.act(as_user("u1", transfer("A", 5.0, true)));
    c.act(register("u1"));
    c.act(Action::Query(Query::User(acc("u2"))));
    c.drain();
    // Another settlement, from the state the checkpoint restored.
    c.settle(&[("cu2501", 69950.0)]);
    c.act(Action::Query(Query::SettledDays));
    c.act(Action::Query(Query::Statements(acc("A"))));
}

fn checkpoint_then_continue(shards: u16, drain_first: bool) {
    let mut original = Cluster::new(shards);
    trade_before(&mut original);
    if drain_first {
        original.drain();
        assert_eq!(original.in_flight(), 0);
    } else if shards > 1 {
        assert!(original.in_flight() > 0, "messages in flight at the checkpoint");
    }
    original.check_invariants();
    if shards > 1 {
        // Orders crossed shards both ways.
        for service in &original.services {
            assert!(service.engine().sent().iter().sum::<u64>() > 0);
            assert!(service.engine().ledger().accounts().len() > 1);
        }
    }
    let trades: usize = original.services.iter().map(|s| s.counters().trades as usize).sum();
    assert!(trades > 20, "the scenario trades ({trades} trades)");
    for service in &original.services {
        for slot in 0..4 {
            if let Some(market) = service.engine().market(slot) {
                assert!(market.ticks().pushed() > market.ticks().capacity() as i64, "tick rings wrap");
                assert!(market.klines(0).unwrap().bars().pushed() > 3, "3 s bar rings wrap");
            }
        }
    }
    original.log.clear();
    original.patches.clear();
    let mut restored = original.checkpoint();
    original.replies_from = restored.replies_from;
    original.charts = true;
    restored.charts = true;

    // (a) The same state, as dumped and as the REST API shows it. First a step stamped before
    // the last one: it takes the time after the last timestamp the service handed out.
    assert_eq!(original.dump(), restored.dump());
    for cluster in [&mut original, &mut restored] {
        cluster.act_at(transfer("D", 1.0, true), 1);
    }
    original.query_everything();
    restored.query_everything();
    assert_eq!(original.log, restored.log);

    // (b) The same further steps.
    trade_after(&mut original);
    trade_after(&mut restored);
    original.drain();
    restored.drain();
    assert!(original.log.len() > 50);
    for (n, (a, b)) in original.log.iter().zip(&restored.log).enumerate() {
        assert_eq!(a, b, "step {n} after the checkpoint differs");
    }
    assert_eq!(original.log.len(), restored.log.len());
    assert_eq!(original.patches, restored.patches);
    assert!(
        restored.patches.iter().any(|p| p.contains("klines/"))
            // A trade patch, as its text's Debug (quotes escaped).
            && restored.patches.iter().any(|p| p.contains(r#"{\"trade\":"#))
    );
    original.check_invariants();
    restored.check_invariants();
    assert_eq!(original.dump(), restored.dump());

    // A checkpoint of the restored cluster is as good (its followers and chart cursors, the
    // process's, are not in it: the patches differ).
    let mut again = restored.checkpoint();
    restored.replies_from = again.replies_from;
    assert_eq!(restored.dump(), again.dump());
    restored.log.clear();
    trade_after(&mut restored);
    trade_after(&mut again);
    assert_eq!(restored.log, again.log);
}

#[test]
fn two_shards_continue_identically_after_a_checkpoint() {
    checkpoint_then_continue(2, true);
}

#[test]
fn two_shards_continue_identically_after_a_checkpoint_with_messages_in_flight() {
    checkpoint_then_continue(2, false);
}

#[test]
fn one_shard_continues_identically_after_a_checkpoint() {
    checkpoint_then_continue(1, true);
}

/// A checkpoint is encoded off the shard from a snapshot taken in its pause: the service goes
/// on (orders, fills, evictions, market trades) and the snapshot must still encode exactly the
/// state it was taken in, whether it is encoded at once, on another thread meanwhile, or after.
#[test]
fn a_snapshot_encodes_the_state_it_was_taken_in_while_the_service_goes_on() {
    let mut c = Cluster::new(2);
    trade_before(&mut c);
    c.drain();
    let before: Vec<Vec<u8>> = c.services.iter().map(|s| s.encode_checkpoint().unwrap()).collect();
    let later: Vec<_> = c.services.iter().map(|s| s.checkpoint_snapshot()).collect();
    let meanwhile: Vec<_> = c
        .services
        .iter()
        .map(|s| {
            let snapshot = s.checkpoint_snapshot();
            std::thread::spawn(move || snapshot.encode().unwrap())
        })
        .collect();
    let orders_before: Vec<usize> = c.services.iter().map(|s| s.journal().order_count()).collect();
    trade_after(&mut c);
    c.drain();
    for (n, service) in c.services.iter().enumerate() {
        assert!(service.encode_checkpoint().unwrap() != before[n], "shard {n}: the state moved on");
    }
    for (n, (thread, snapshot)) in meanwhile.into_iter().zip(later).enumerate() {
        assert!(thread.join().unwrap() == before[n], "shard {n}: encoded on a thread meanwhile");
        assert!(snapshot.encode().unwrap() == before[n], "shard {n}: encoded after the service went on");
        // And the bytes restore the journal as it was then.
        let decoded = Service::decode_checkpoint(&before[n], limits()).unwrap();
        assert_eq!(decoded.journal().order_count(), orders_before[n]);
    }
}

#[test]
fn decoded_service_takes_the_given_journal_limits_and_fresh_settings() {
    let mut c = Cluster::new(1);
    trade_before(&mut c);
    // As recovery leaves it while it replays: no snapshot events.
    c.services[0].set_report_snapshots(false);
    let bytes = c.services[0].encode_checkpoint().unwrap();
    let wider = JournalLimits { orders_per_account: 100, trades_per_account: 100, trades_per_instrument: 100 };
    let mut decoded = Service::decode_checkpoint(&bytes, wider).unwrap();
    assert_eq!(decoded.journal().limits(), wider);
    assert_eq!(decoded.counters(), &ServiceCounters::default());
    assert!(!decoded.marks_waiting());
    let mut staged = Staged::default();
    let now = 1_800_000_000_000_000_000;
    decoded.handle(
        limit("A", "fresh", "SR501", Buy, 4800.0, 1),
        now,
        Origin { shard: 0, conn: 1, tag: 1 },
        &mut staged,
    );
    assert_eq!(staged.records.len(), 1);
    // Snapshot events are on, as in `Service::new`: the book's new level makes a quote.
    assert_eq!(decoded.take_changed_quotes().len(), 1);
    // History writes are off until the runtime turns them on, as in `Service::new`.
    assert!(decoded.take_history().is_empty());

    // take_journal leaves an empty journal of the same limits; replace_journal puts it back.
    let journal = decoded.take_journal();
    let count = journal.order_count();
    assert!(count > 0);
    assert_eq!(journal.limits(), wider);
    assert_eq!(decoded.journal().order_count(), 0);
    assert_eq!(decoded.journal().limits(), wider);
    decoded.replace_journal(journal);
    assert_eq!(decoded.journal().order_count(), count);
}

/// Puts a checkpoint's payload (between the 12-byte header and the CRC) back together with a
/// checksum that matches, so the decoder itself meets the damage.
fn reseal(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(payload);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn damaged_checkpoints_are_refused_without_a_panic() {
    // A small shard: narrow bands (few price levels), a few accounts, orders and trades.
    let mut small: Vec<Instrument> = instruments().into_iter().take(2).collect();
    for inst in &mut small {
        inst.upper_limit = inst.pre_settlement + 20 * inst.price_tick;
        inst.lower_limit = inst.pre_settlement - 20 * inst.price_tick;
        inst.shard = Some(0);
    }
    let config = EngineConfig { book_capacity: 4, live_order_capacity: 4, kline_capacity: 2, tick_capacity: 2 };
    let mut service = Service::new(0, 1, small, 20250102, config, limits());
    let mut tag = 0;
    let mut act = |service: &mut Service, action: Action| {
        tag += 1;
        let mut staged = Staged::default();
        service.handle(
            action,
            1_735_781_400_000_000_000 + i64::from(tag) * 1_000_000_000,
            Origin { shard: 0, conn: 1, tag },
            &mut staged,
        );
        assert!(staged.sends.is_empty());
    };
    act(&mut service, open("A", 1_000_000.0, true));
    act(&mut service, open("B", 1_000_000.0, false));
    act(&mut service, limit("A", "a1", "SR501", Buy, 5000.0, 3));
    act(&mut service, limit("B", "b1", "SR501", Sell, 5000.0, 2));
    act(&mut service, limit("B", "b2", "cu2501", Sell, 70010.0, 2));
    act(&mut service, cancel("A", "a1"));
    let bytes = service.encode_checkpoint().unwrap();
    assert!(Service::decode_checkpoint(&bytes, limits()).is_ok());
    eprintln!("small checkpoint: {} bytes", bytes.len());

    // Every truncation, and every single-bit flip, of the whole file.
    for len in 0..bytes.len() {
        assert!(Service::decode_checkpoint(&bytes[..len], limits()).is_err(), "cut to {len} bytes");
    }
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(Service::decode_checkpoint(&damaged, limits()).is_err(), "bit {bit} flipped");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Service::decode_checkpoint(&longer, limits()).is_err());
    assert!(Service::decode_checkpoint(b"", limits()).is_err());
    assert!(Service::decode_checkpoint(&[0xff; 4096], limits()).is_err());

    // Past the checksum: the decoder refuses truncated payloads, trailing bytes and garbage,
    // and a flipped bit decodes to an error or to some service, never a panic.
    let (header, rest) = bytes.split_at(12);
    let payload = &rest[..rest.len() - 4];
    assert!(Service::decode_checkpoint(&reseal(header, payload), limits()).is_ok());
    for len in 0..payload.len() {
        assert!(
            Service::decode_checkpoint(&reseal(header, &payload[..len]), limits()).is_err(),
            "payload cut to {len}"
        );
    }
    let mut trailing = payload.to_vec();
    trailing.push(0);
    assert!(Service::decode_checkpoint(&reseal(header, &trailing), limits()).is_err());
    let mut decoded = 0;
    for bit in 0..payload.len() * 8 {
        let mut damaged = payload.to_vec();
        damaged[bit / 8] ^= 1 << (bit % 8);
        if Service::decode_checkpoint(&reseal(header, &damaged), limits()).is_ok() {
            decoded += 1;
        }
    }
    eprintln!("{} of {} payload bit flips still decode", decoded, payload.len() * 8);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 600) as usize;
        let garbage: Vec<u8> = (0..len).map(|i| (seed >> (i % 57)) as u8 ^ i as u8).collect();
        let _ = Service::decode_checkpoint(&reseal(header, &garbage), limits());
    }
    // Another format number is refused.
    let mut other = header.to_vec();
    other[8] ^= 1;
    let refused = Service::decode_checkpoint(&reseal(&other, payload), limits()).err();
    assert!(refused.is_some_and(|why| why.contains("format")));
}

/// Prices and amounts stay decimals in JSON, and are exact integers in the checkpoint.
#[test]
fn fixed_point_is_decimal_in_json_and_exact_in_checkpoints() {
    use bincode::Options;
    use qaexchange::domain::market_data::Kline;
    let bar = Kline {
        datetime_ns: 1,
        open: 38_002_000,
        high: i64::MAX,
        low: i64::MIN,
        close: 1_000_000_000_000_000_001,
        volume: 3,
        open_oi: 4,
        close_oi: 5,
    };
    let json = serde_json::to_value(bar).unwrap();
    assert_eq!(json["open"], serde_json::json!(3800.2));
    assert_eq!(json["close"], serde_json::json!(1.0e14));
    let options = bincode::DefaultOptions::new();
    let back: Kline = options.deserialize(&options.serialize(&bar).unwrap()).unwrap();
    assert_eq!(back, bar);
}

/// A history store value of `series` as the JSON the REST API serves.
fn json_of(series: u8, value: &[u8]) -> serde_json::Value {
    serde_json::from_slice(&qaexchange::server::history::value_json(series, value).unwrap()).unwrap()
}

/// A service writing history, with accounts A and B open (their history taken), and the time
/// 2025-01-02 09:30:00 China time (a 3 s and a 1 min boundary) to trade from.
struct HistoryRun {
    service: Service,
    t0: TimestampNs,
    tag: u32,
}

impl HistoryRun {
    fn new() -> Self {
        let service = Service::new(0, 1, instruments(), 20250102, EngineConfig::default(), limits());
        let mut run = HistoryRun { service, t0: 1_735_781_400_000_000_000, tag: 0 };
        run.service.set_history(true);
        run.accepted(open("A", 1_000_000.0, false), run.t0);
        run.accepted(open("B", 1_000_000.0, false), run.t0);
        run.service.take_history();
        run
    }

    /// Handles `action` as the connection's next request; it must be accepted (logged).
    fn accepted(&mut self, action: Action, now: TimestampNs) {
        self.tag += 1;
        let mut staged = Staged::default();
        self.service.handle(action, now, Origin { shard: 0, conn: 7, tag: self.tag }, &mut staged);
        assert!(!staged.records.is_empty(), "refused at {now}: {:?}", staged.replies);
    }
}

/// The DIFF trade patches of an account, written as text, merged into its login tree give
/// its next login tree: every order, trade, position and account field a patch carries is the
/// snapshot's, under the same key, and the writer's JSON framing is sound.
#[test]
fn trade_patches_merged_into_the_login_tree_give_the_next_login_tree() {
    use qaexchange::diff::merge_patch;
    use qaexchange::server::service::Answer;
    let mut h = HistoryRun::new();
    let t0 = h.t0;
    let login = |h: &mut HistoryRun, now: i64| -> serde_json::Value {
        h.tag += 1;
        let mut staged = Staged::default();
        h.service.handle(
            Action::Follow { account_id: acc("A"), on: true },
            now,
            Origin { shard: 0, conn: 7, tag: h.tag },
            &mut staged,
        );
        match &staged.replies[0].1 {
            // As the client reads it: through its text (a float parsed back from its shortest
            // text may differ in the last bit from the number it was written from).
            Answer::Follow(answer) => serde_json::from_str(&answer.snapshot.to_string()).unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let mut tree = login(&mut h, t0);
    let mut patches = 0;
    let mut merge = |h: &mut HistoryRun, tree: &mut serde_json::Value, now: i64| {
        for (account, _, patch) in h.service.take_trade_patches(now) {
            if account == acc("A") {
                let value: serde_json::Value = serde_json::from_str(&patch.text).expect("the patch is JSON");
                assert_eq!(&value, patch.value());
                merge_patch::apply(tree, &value);
                patches += 1;
            }
        }
    };
    merge(&mut h, &mut tree, t0);
    // A's bid rests, B fills part of it, A modifies the rest and places another; one group
    // (two fills and an order) and then one change per group.
    h.accepted(limit("A", "a1", "SR501", Direction::Buy, 5000.0, 3), t0 + 1_000);
    h.accepted(limit("B", "b1", "SR501", Direction::Sell, 5000.0, 1), t0 + 2_000);
    h.accepted(limit("B", "b2", "SR501", Direction::Sell, 5000.0, 1), t0 + 3_000);
    merge(&mut h, &mut tree, t0 + 3_000);
    h.accepted(modify("A", "a1", Some(4990.0), None), t0 + 4_000);
    merge(&mut h, &mut tree, t0 + 4_000);
    h.accepted(limit("A", "a2", "cu2501", Direction::Sell, 70000.0, 2), t0 + 5_000);
    h.accepted(limit("B", "b3", "cu2501", Direction::Buy, 70000.0, 2), t0 + 6_000);
    merge(&mut h, &mut tree, t0 + 6_000);
    h.accepted(cancel("A", "a1"), t0 + 7_000);
    // An insert refused for A (more margin than it has): FINISHED, with no exchange order id,
    // in the patch only, since the journal never kept it.
    h.tag += 1;
    let mut staged = Staged::default();
    let origin = Origin { shard: 0, conn: 7, tag: h.tag };
    h.service.handle(limit("A", "a3", "SR501", Direction::Buy, 5000.0, 100_000), t0 + 8_000, origin, &mut staged);
    merge(&mut h, &mut tree, t0 + 8_000);
    assert!(patches >= 4, "{patches} patches");
    let next = login(&mut h, t0 + 8_000);
    let orders = tree["trade"]["A"]["orders"].as_object_mut().unwrap();
    let refused = orders.remove("a3").expect("the refused insert");
    assert_eq!((refused["status"].as_str(), refused["exchange_order_id"].as_str()), (Some("FINISHED"), Some("")));
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert_eq!(tree["trade"]["A"]["trades"].as_object().unwrap().len(), 3, "{tree}");
    assert_eq!(tree, next);
}

/// An order is written once, when it finishes, in its final state; while it lives it is the
/// journal's, and an order history query takes it from there (`live_orders`).
#[test]
fn an_order_is_written_once_when_it_finishes_and_a_live_order_is_the_journals() {
    use qaexchange::server::history::{live_orders, series_prefix, ORDERS};
    let mut h = HistoryRun::new();
    let t0 = h.t0;
    let orders = |writes: &[(Vec<u8>, Vec<u8>)], account: &str| -> Vec<serde_json::Value> {
        let prefix = series_prefix(ORDERS, account);
        writes.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, v)| json_of(ORDERS, v)).collect()
    };
    // One group: B's 3-lot bid rests, A sells into it twice (1 lot, then 2).
    h.accepted(limit("B", "b", "SR501", Direction::Buy, 5000.0, 3), t0 + 1_000);
    h.accepted(limit("A", "s1", "SR501", Direction::Sell, 5000.0, 1), t0 + 2_000);
    // B's bid is live after the first fill: not written, but a live order of B's.
    let writes = h.service.take_history();
    assert_eq!(orders(&writes, "B"), Vec::<serde_json::Value>::new());
    let a = orders(&writes, "A");
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!((a[0]["volume_left"].as_i64(), a[0]["status"].as_str()), (Some(0), Some("FINISHED")));
    let live = live_orders(h.service.journal(), &acc("B"), i64::MIN, i64::MAX);
    assert_eq!(live.len(), 1);
    let b_live = json_of(ORDERS, &live[0].1);
    assert_eq!((b_live["volume_left"].as_i64(), b_live["status"].as_str()), (Some(2), Some("ALIVE")));
    // Outside the time range it is left out.
    assert!(live_orders(h.service.journal(), &acc("B"), t0 + 1_001, i64::MAX).is_empty());
    // The next fill finishes it: written once, in its final state, with the key it had live.
    h.accepted(limit("A", "s2", "SR501", Direction::Sell, 5000.0, 2), t0 + 3_000);
    let writes = h.service.take_history();
    let b = orders(&writes, "B");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!((b[0]["volume_left"].as_i64(), b[0]["status"].as_str()), (Some(0), Some("FINISHED")), "{b:?}");
    let prefix = series_prefix(ORDERS, "B");
    assert_eq!(writes.iter().find(|(k, _)| k.starts_with(&prefix)).map(|(k, _)| k.clone()), Some(live[0].0.clone()));
    assert!(live_orders(h.service.journal(), &acc("B"), i64::MIN, i64::MAX).is_empty());
    // A resting order that is modified is still not written; cancelled, it is.
    h.accepted(limit("B", "b2", "SR501", Direction::Buy, 4990.0, 1), t0 + 4_000);
    h.accepted(modify("B", "b2", Some(4980.0), None), t0 + 4_500);
    assert_eq!(orders(&h.service.take_history(), "B"), Vec::<serde_json::Value>::new());
    h.accepted(cancel("B", "b2"), t0 + 5_000);
    let b = orders(&h.service.take_history(), "B");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["status"], "FINISHED", "{b:?}");
}

/// A commit group takes each bar it traded once, as it stands at the group's end, and a bar
/// that closed during the group in its final state (the history store then holds what the
/// engine's rings hold).
#[test]
fn a_bar_is_written_once_when_it_closes_and_the_open_bar_is_live() {
    use qaexchange::server::history::{live_bar, series_prefix, KLINES};
    let mut h = HistoryRun::new();
    let t0 = h.t0;
    // One group, four trades: 1 and 2 lots in the first 3 s bar, 3 and 4 in the next.
    for (i, at_ms) in [500i64, 1500, 3500, 4000].into_iter().enumerate() {
        let now = t0 + at_ms * 1_000_000;
        let lots = i as Volume + 1;
        h.accepted(limit("A", &format!("s{i}"), "SR501", Direction::Sell, 5000.0, lots), now);
        h.accepted(limit("B", &format!("b{i}"), "SR501", Direction::Buy, 5000.0, lots), now + 1000);
    }
    // The SR501 bars a step wrote, as (period, bar).
    let prefix = series_prefix(KLINES, "SR501");
    let bars_written = |h: &mut HistoryRun| -> Vec<(i64, serde_json::Value)> {
        h.service
            .take_history()
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| {
                let period = i64::from_be_bytes(k[prefix.len()..prefix.len() + 8].try_into().unwrap());
                (period, json_of(KLINES, &v))
            })
            .collect()
    };
    let bars = bars_written(&mut h);
    let volumes = |period: i64| -> Vec<i64> {
        bars.iter().filter(|(p, _)| *p == period).map(|(_, b)| b["volume"].as_i64().unwrap()).collect()
    };
    // The 3 s bars: the first once, when the second opened; the second is still open.
    assert_eq!(volumes(KLINE_PERIODS_NS[0]), vec![3], "{bars:?}");
    // Every longer period: its one bar is open, so not written yet.
    for &period in &KLINE_PERIODS_NS[1..] {
        assert_eq!(volumes(period), Vec::<i64>::new(), "period {period}: {bars:?}");
    }
    // Written as the engine holds them; the open bar of each series is the engine's newest.
    let engine = h.service.engine();
    let market = engine.market(engine.instrument_slot(&inst("SR501")).unwrap()).unwrap();
    for (i, &period) in KLINE_PERIODS_NS.iter().enumerate() {
        let held: Vec<serde_json::Value> =
            market.klines(i).unwrap().bars().iter().map(|(_, b)| serde_json::to_value(b).unwrap()).collect();
        let written: Vec<serde_json::Value> =
            bars.iter().filter(|(p, _)| *p == period).map(|(_, b)| b.clone()).collect();
        assert_eq!(written[..], held[..held.len() - 1], "period {period}");
        let (_, live) = live_bar(engine, &inst("SR501"), period).expect("an open bar");
        assert_eq!(json_of(KLINES, &live), held[held.len() - 1]);
    }
    // The open bars close with the next trade in a later bar: each is written then, once.
    let later = t0 + 10 * 60 * 1_000_000_000 + 500_000_000;
    h.accepted(limit("A", "s9", "SR501", Direction::Sell, 5000.0, 1), later);
    h.accepted(limit("B", "b9", "SR501", Direction::Buy, 5000.0, 1), later + 1000);
    let closed: Vec<(i64, i64)> =
        bars_written(&mut h).into_iter().map(|(p, b)| (p, b["volume"].as_i64().unwrap())).collect();
    // 3 s, 1 min and 5 min bars closed (10 min later); the longer ones are still open.
    let expected: Vec<(i64, i64)> = KLINE_PERIODS_NS
        .iter()
        .filter(|&&p| p <= 5 * 60 * 1_000_000_000)
        .map(|&p| (p, if p == KLINE_PERIODS_NS[0] { 7 } else { 10 }))
        .collect();
    assert_eq!(closed, expected);
}
