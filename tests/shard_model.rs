//! The partitioned engine against the single engine. Random command sequences run on a cluster
//! of 1-3 `ShardEngine`s with a FIFO queue per shard pair, delivered in random interleavings:
//! - one command at a time, run to quiescence: every answer, account, position, book and open
//!   interest equals the single `Engine`'s;
//! - many commands in flight at once: every command is answered exactly once, and once the
//!   queues drain the cluster invariants hold (zero-sum, long == short == open interest, books
//!   match ledgers, marks agree);
//! - each shard's logged inputs replayed into a fresh shard rebuild its state and regenerate its
//!   messages exactly (what server recovery relies on).

use proptest::prelude::*;
use qaexchange::domain::command::{Command, InsertOrder};
use qaexchange::domain::engine::{Engine, EngineConfig};
use qaexchange::domain::event::Event;
use qaexchange::domain::instrument::{parse_instruments, Instrument};
use qaexchange::domain::name::{AccountId, ClientOrderId};
use qaexchange::domain::risk::RejectCode;
use qaexchange::domain::shard::settlement::SettleCut;
use qaexchange::domain::shard::{
    account_shard, check_cluster, Completion, Delivery, Outcome, PeerMsg, ShardEngine, StepOutput,
};
use qaexchange::domain::types::*;
use std::collections::{BTreeMap, VecDeque};

const INSTRUMENTS: &str = r#"
[[instrument]]
instrument_id = "IF2501"
exchange_id = "CFFEX"
product_id = "IF"
volume_multiple = 300
price_tick = 0.2
margin_rate_long = 0.12
margin_rate_short = 0.12
limit_rate = 0.002
pre_settlement = 4000.0
max_order_volume = 5
shard = 0
commission = { open_rate = 0.000023, close_rate = 0.000023, close_today_rate = 0.00023 }

[[instrument]]
instrument_id = "cu2501"
exchange_id = "SHFE"
product_id = "cu"
volume_multiple = 5
price_tick = 10.0
margin_rate_long = 0.10
margin_rate_short = 0.11
limit_rate = 0.002
pre_settlement = 75000.0
max_order_volume = 5
shard = 1
commission = { open_per_lot = 1.5, close_per_lot = 1.5, close_today_per_lot = 3.0, open_rate = 0.00001 }
"#;

const ACCOUNTS: [&str; 5] = ["a0", "a1", "a2", "a3", "a4"];

fn instruments() -> Vec<Instrument> {
    parse_instruments(INSTRUMENTS).expect("test instruments parse")
}

#[derive(Clone, Debug)]
enum Op {
    Insert {
        account: usize,
        inst: usize,
        buy: bool,
        offset: u8,
        price_type: u8,
        tif: u8,
        vc: u8,
        volume: i64,
        ticks: i64,
    },
    Cancel {
        account: usize,
        client: u32,
    },
    Modify {
        account: usize,
        inst: usize,
        client: u32,
        ticks: Option<i64>,
        volume: Option<i64>,
    },
    Transfer {
        account: usize,
        amount: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        40 => (0..5usize, 0..2usize, any::<bool>(), 0..7u8, 0..12u8, 0..9u8, 0..12u8, prop_oneof![9 => 1..4i64, 1 => 0..7i64], -45..45i64).prop_map(
            |(account, inst, buy, offset, price_type, tif, vc, volume, ticks)|
                Op::Insert { account, inst, buy, offset, price_type, tif, vc, volume, ticks }),
        6 => (0..5usize, 0..12u32).prop_map(|(account, client)| Op::Cancel { account, client }),
        8 => (0..5usize, 0..2usize, 0..12u32, prop::option::of(-45..45i64), prop::option::of(0..7i64))
            .prop_map(|(account, inst, client, ticks, volume)| Op::Modify { account, inst, client, ticks, volume }),
        2 => (0..5usize, -300_000..400_000i64).prop_map(|(account, amount)| Op::Transfer { account, amount }),
    ]
}

fn account_id(a: usize) -> AccountId {
    AccountId::new(ACCOUNTS[a]).unwrap()
}

fn to_command(op: &Op, seq: usize, instruments: &[Instrument]) -> Command {
    let ts = 1_735_781_400_000_000_000 + seq as i64 * 1_000_000;
    let client = |c: u32| ClientOrderId::new(&format!("c{c}")).unwrap();
    let price_at = |inst: usize, ticks: i64| {
        let i = &instruments[inst];
        let ticks = if inst == 1 { ticks / 3 } else { ticks };
        i.pre_settlement + ticks * i.price_tick
    };
    match *op {
        Op::Insert { account, inst, buy, offset, price_type, tif, vc, volume, ticks } => {
            use PriceType::*;
            let price_type = [Limit, Limit, Limit, Limit, Limit, Limit, Limit, Limit, Any, Best, FiveLevel, Best]
                [price_type as usize];
            use TimeCondition::*;
            let time_condition = [Gfd, Gfd, Gfd, Gfd, Gtc, Gtc, Ioc, Ioc, Ioc][tif as usize];
            let time_condition = if price_type == PriceType::Any { Ioc } else { time_condition };
            let volume_condition = match vc {
                9 => VolumeCondition::All,
                10 | 11 => VolumeCondition::Min,
                _ => VolumeCondition::Any,
            };
            let time_condition = if volume_condition != VolumeCondition::Any { Ioc } else { time_condition };
            let mut limit_price = price_at(inst, ticks);
            if ticks % 12 == 5 {
                limit_price += 1;
            }
            Command::InsertOrder {
                ts,
                order: InsertOrder {
                    account_id: account_id(account),
                    client_order_id: client(seq as u32 % 12),
                    instrument_id: instruments[inst].instrument_id,
                    direction: if buy { Direction::Buy } else { Direction::Sell },
                    offset: [
                        Offset::Open,
                        Offset::Open,
                        Offset::Open,
                        Offset::Open,
                        Offset::Close,
                        Offset::CloseToday,
                        Offset::Close,
                    ][offset as usize],
                    price_type,
                    limit_price: (price_type == PriceType::Limit).then_some(limit_price),
                    volume,
                    time_condition,
                    volume_condition,
                    min_volume: if vc == 11 { volume + 1 } else { 1 },
                },
            }
        }
        Op::Cancel { account, client: c } => Command::CancelOrder {
            ts,
            account_id: account_id(account),
            order_id: None,
            client_order_id: Some(client(c)),
        },
        Op::Modify { account, inst, client: c, ticks, volume } => Command::ModifyOrder {
            ts,
            account_id: account_id(account),
            order_id: None,
            client_order_id: Some(client(c)),
            new_price: ticks.map(|t| price_at(inst, t)),
            new_volume: volume,
        },
        Op::Transfer { account, amount } => {
            let amount = money_from_f64(amount as f64);
            if amount >= 0 {
                Command::Deposit { ts, account_id: account_id(account), amount }
            } else {
                Command::Withdraw { ts, account_id: account_id(account), amount: -amount }
            }
        }
    }
}

/// What a shard consumed, in order: what server recovery replays from its WAL.
#[derive(Clone, Debug)]
enum Input {
    Command(Command),
    Peer { ts: TimestampNs, from: u16, seq: u64, msg: PeerMsg },
    Settle { ts: TimestampNs, apply: bool, cut: SettleCut },
}

/// Shards joined by FIFO queues, one per ordered pair.
struct Cluster {
    shards: Vec<ShardEngine>,
    queues: BTreeMap<(u16, u16), VecDeque<(u64, PeerMsg)>>,
    logs: Vec<Vec<Input>>,
    /// Every message each shard sent, in order (to compare with a replay).
    sent: Vec<Vec<(u16, u64, PeerMsg)>>,
    /// Answers of client commands: command index -> result.
    answers: BTreeMap<usize, Result<(), RejectCode>>,
    /// Pending commands per (shard, order id), in the order they were sent.
    pending: BTreeMap<(u16, u64), VecDeque<usize>>,
    clock: TimestampNs,
    out: StepOutput,
}

impl Cluster {
    fn new(n: u16) -> Self {
        let shards = (0..n).map(|s| ShardEngine::new(s, n, instruments(), 20250102, EngineConfig::default())).collect();
        Self {
            shards,
            queues: BTreeMap::new(),
            logs: vec![Vec::new(); n as usize],
            sent: vec![Vec::new(); n as usize],
            answers: BTreeMap::new(),
            pending: BTreeMap::new(),
            clock: 1_735_781_400_000_000_000,
            out: StepOutput::default(),
        }
    }

    fn n(&self) -> u16 {
        self.shards.len() as u16
    }

    fn command_account(command: &Command) -> AccountId {
        match *command {
            Command::OpenAccount { account_id, .. }
            | Command::Deposit { account_id, .. }
            | Command::Withdraw { account_id, .. }
            | Command::CancelOrder { account_id, .. }
            | Command::ModifyOrder { account_id, .. } => account_id,
            Command::InsertOrder { ref order, .. } => order.account_id,
            _ => unreachable!("not generated"),
        }
    }

    /// Sends the step's messages and records its completions.
    fn absorb(&mut self, shard: u16) {
        for send in self.out.sends.drain(..) {
            self.sent[shard as usize].push((send.to, send.seq, send.msg.clone()));
            self.queues.entry((shard, send.to)).or_default().push_back((send.seq, send.msg));
        }
        for c in self.out.completions.drain(..) {
            let key = (shard, c.order_id());
            let index = self.pending.get_mut(&key).and_then(VecDeque::pop_front).expect("completion without a request");
            let result = match c {
                Completion::Submit { result, .. }
                | Completion::Cancel { result, .. }
                | Completion::Modify { result, .. } => result,
            };
            assert!(self.answers.insert(index, result).is_none(), "command {index} answered twice");
        }
        self.out.events.clear();
    }

    fn submit(&mut self, index: usize, command: Command) {
        let shard = account_shard(&Self::command_account(&command), self.n());
        self.clock = self.clock.max(command.ts());
        self.out.clear();
        let outcome = self.shards[shard as usize].execute(&command, &mut self.out);
        // Logged like the server does: only commands that changed state (or sent something).
        let changed = !matches!(outcome, Outcome::Done(Err(_)));
        if changed {
            self.logs[shard as usize].push(Input::Command(command));
        }
        match outcome {
            Outcome::Done(result) => {
                self.answers.insert(index, result);
            }
            Outcome::Pending(order_id) => self.pending.entry((shard, order_id)).or_default().push_back(index),
        }
        self.absorb(shard);
    }

    /// Delivers the head of one non-empty queue, chosen by `pick`; false when all are empty.
    fn deliver_one(&mut self, pick: usize) -> bool {
        let busy: Vec<(u16, u16)> = self.queues.iter().filter(|(_, q)| !q.is_empty()).map(|(k, _)| *k).collect();
        if busy.is_empty() {
            return false;
        }
        let (from, to) = busy[pick % busy.len()];
        let (seq, msg) = self.queues.get_mut(&(from, to)).unwrap().pop_front().unwrap();
        self.clock += 1;
        let ts = self.clock;
        self.out.clear();
        assert_eq!(self.shards[to as usize].deliver(ts, from, seq, &msg, &mut self.out), Delivery::Applied);
        self.logs[to as usize].push(Input::Peer { ts, from, seq, msg });
        self.absorb(to);
        true
    }

    fn drain(&mut self, picks: &mut impl Iterator<Item = usize>) {
        while self.deliver_one(picks.next().unwrap_or(0)) {}
    }

    /// The operator's settlement price, on the instrument's owner (logged like the server).
    fn set_settlement_price(&mut self, command: Command) -> Result<(), RejectCode> {
        let Command::SetSettlementPrice { instrument_id, .. } = command else { unreachable!() };
        let slot = self.shards[0].instrument_slot(&instrument_id).unwrap();
        let owner = self.shards[0].instrument_owner(slot) as usize;
        self.out.clear();
        let Outcome::Done(result) = self.shards[owner].execute(&command, &mut self.out) else { unreachable!() };
        if result.is_ok() {
            self.logs[owner].push(Input::Command(command));
        }
        self.absorb(owner as u16);
        result
    }

    /// Daily settlement as the server runs it, from quiescence: the cut from the owners'
    /// inputs, step 1 on every shard, drain, step 2 on every shard. Returns every shard's
    /// settlement events.
    fn settle(&mut self, picks: &mut impl Iterator<Item = usize>) -> Vec<Event> {
        let day = self.shards[0].trading_day();
        let n = self.shards[0].instruments().len();
        let mut cut = SettleCut {
            settled_day: day,
            next_day: qaexchange::domain::engine::next_weekday(day).unwrap(),
            prices: vec![0; n],
            closes: vec![0; n],
            open_interest: vec![0; n],
        };
        for shard in &self.shards {
            for input in shard.settlement_inputs() {
                let i = input.instrument as usize;
                (cut.prices[i], cut.closes[i], cut.open_interest[i]) = (input.price, input.close, input.open_interest);
            }
        }
        let mut events = Vec::new();
        for apply in [false, true] {
            for s in 0..self.shards.len() {
                self.clock += 1;
                let ts = self.clock;
                self.out.clear();
                if apply {
                    self.shards[s].settle_cut(ts, &cut, &mut self.out).unwrap();
                    events.append(&mut self.out.events);
                } else {
                    self.shards[s].prepare_settlement(ts, &cut, &mut self.out).unwrap();
                }
                self.logs[s].push(Input::Settle { ts, apply, cut: cut.clone() });
                self.absorb(s as u16);
            }
            self.drain(picks);
        }
        events
    }

    fn states(&self) -> Vec<qaexchange::domain::shard::ShardState> {
        self.shards.iter().map(ShardEngine::state).collect()
    }

    /// Replays every shard's log into fresh shards; states and sent messages must be equal.
    fn check_replay(&self) -> Result<(), TestCaseError> {
        for (s, log) in self.logs.iter().enumerate() {
            let mut fresh = ShardEngine::new(s as u16, self.n(), instruments(), 20250102, EngineConfig::default());
            let mut out = StepOutput::default();
            let mut sent = Vec::new();
            for input in log {
                out.clear();
                match input {
                    Input::Command(c) => {
                        fresh.execute(c, &mut out);
                    }
                    Input::Peer { ts, from, seq, msg } => {
                        prop_assert_eq!(fresh.deliver(*ts, *from, *seq, msg, &mut out), Delivery::Applied);
                    }
                    Input::Settle { ts, apply: false, cut } => fresh.prepare_settlement(*ts, cut, &mut out).unwrap(),
                    Input::Settle { ts, apply: true, cut } => fresh.settle_cut(*ts, cut, &mut out).unwrap(),
                }
                sent.extend(out.sends.drain(..).map(|o| (o.to, o.seq, o.msg)));
            }
            let a = serde_json::to_string(&fresh.state()).unwrap();
            let b = serde_json::to_string(&self.shards[s].state()).unwrap();
            prop_assert_eq!(a, b, "shard {} replayed differently", s);
            prop_assert!(sent == self.sent[s], "shard {} regenerated other messages", s);
        }
        Ok(())
    }
}

fn setup_commands() -> Vec<Command> {
    let mut commands = Vec::new();
    for (i, a) in ACCOUNTS.iter().enumerate() {
        let account_id = AccountId::new(a).unwrap();
        commands.push(Command::OpenAccount { ts: 1, account_id });
        let amount = money_from_f64(2_000_000.0 + 1_000_000.0 * i as f64);
        commands.push(Command::Deposit { ts: 1, account_id, amount });
    }
    commands
}

fn refusal(events: &[Event]) -> Result<(), RejectCode> {
    match events.iter().find_map(|e| match e {
        Event::OrderRejected { reason, .. } | Event::CommandRejected { reason, .. } => Some(reason.reason),
        _ => None,
    }) {
        Some(code) => Err(code),
        None => Ok(()),
    }
}

/// Accounts (with positions), book depth per instrument and open interest, in one string per
/// part, for comparing the cluster with the single engine. Order ids differ by design.
fn single_view(engine: &Engine) -> (String, String, String) {
    let state = engine.state();
    let mut accounts = state.accounts.clone();
    accounts.sort_by(|a, b| a.account.account_id.as_str().cmp(b.account.account_id.as_str()));
    let books: Vec<_> = state
        .books
        .iter()
        .map(|b| {
            let side = |v: &Vec<qaexchange::domain::engine::RestingOrderView>| {
                v.iter().map(|o| (o.price, o.volume_left)).collect::<Vec<_>>()
            };
            (b.instrument_id.as_str().to_string(), side(&b.bids), side(&b.asks))
        })
        .collect();
    let oi: Vec<_> =
        state.instruments.iter().map(|i| (i.instrument_id.as_str().to_string(), i.open_interest)).collect();
    (serde_json::to_string(&accounts).unwrap(), format!("{books:?}"), format!("{oi:?}"))
}

fn cluster_view(
    states: &[qaexchange::domain::shard::ShardState],
    instruments: &[Instrument],
) -> (String, String, String) {
    let mut accounts: Vec<_> = states.iter().flat_map(|s| s.accounts.clone()).collect();
    accounts.sort_by(|a, b| a.account.account_id.as_str().cmp(b.account.account_id.as_str()));
    let mut books = Vec::new();
    let mut oi = Vec::new();
    for inst in instruments {
        let id = inst.instrument_id.as_str();
        for s in states {
            if let Some(b) = s.books.iter().find(|b| b.instrument_id.as_str() == id) {
                let side = |v: &Vec<qaexchange::domain::engine::RestingOrderView>| {
                    v.iter().map(|o| (o.price, o.volume_left)).collect::<Vec<_>>()
                };
                books.push((id.to_string(), side(&b.bids), side(&b.asks)));
            }
            if let Some(i) = s.instruments.iter().find(|i| i.instrument_id.as_str() == id) {
                oi.push((id.to_string(), i.open_interest));
            }
        }
    }
    (serde_json::to_string(&accounts).unwrap(), format!("{books:?}"), format!("{oi:?}"))
}

/// Runs `command` on the single engine and, to quiescence, on the cluster: the cluster must
/// give the single engine's answer.
fn run_both(
    single: &mut Engine,
    cluster: &mut Cluster,
    index: usize,
    command: Command,
    picks: &mut impl Iterator<Item = usize>,
) -> Result<(), TestCaseError> {
    let mut events = Vec::new();
    single.execute(&command, &mut events);
    cluster.submit(index, command);
    cluster.drain(picks);
    prop_assert_eq!(cluster.answers.get(&index).copied(), Some(refusal(&events)), "answer to {:?}", command);
    Ok(())
}

/// The cluster keeps its invariants and holds the single engine's accounts, positions, books
/// and open interest.
fn same_as_single(single: &Engine, cluster: &Cluster, insts: &[Instrument], when: &str) -> Result<(), TestCaseError> {
    let states = cluster.states();
    check_cluster(&states).map_err(|e| TestCaseError::fail(format!("{when}: {e}")))?;
    let (a1, b1, o1) = single_view(single);
    let (a2, b2, o2) = cluster_view(&states, insts);
    prop_assert_eq!(a1, a2, "accounts {}", when);
    prop_assert_eq!(b1, b2, "books {}", when);
    prop_assert_eq!(o1, o2, "open interest {}", when);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// One command at a time, run to quiescence, any interleaving: the same as one engine.
    #[test]
    fn sequential_cluster_equals_single_engine(
        shards in 1..4u16,
        ops in prop::collection::vec(op(), 1..120),
        picks in prop::collection::vec(any::<usize>(), 0..400),
    ) {
        let insts = instruments();
        let mut single = Engine::new(insts.clone(), 20250102, EngineConfig::default());
        let mut cluster = Cluster::new(shards);
        let mut picks = picks.into_iter();
        let mut commands = setup_commands();
        commands.extend(ops.iter().enumerate().map(|(seq, op)| to_command(op, seq, &insts)));
        for (index, command) in commands.into_iter().enumerate() {
            let when = format!("after {command:?}");
            run_both(&mut single, &mut cluster, index, command, &mut picks)?;
            same_as_single(&single, &cluster, &insts, &when)?;
        }
        cluster.check_replay()?;
    }

    /// Many commands in flight at once: each answered once, invariants hold once drained, and
    /// every shard's log replays to the same state and messages.
    #[test]
    fn concurrent_cluster_keeps_invariants(
        shards in 2..4u16,
        ops in prop::collection::vec(op(), 1..150),
        bursts in prop::collection::vec(1..12usize, 1..40),
        picks in prop::collection::vec(any::<usize>(), 0..600),
    ) {
        let insts = instruments();
        let mut cluster = Cluster::new(shards);
        let mut picks = picks.into_iter().cycle();
        let mut index = 0;
        for command in setup_commands() {
            cluster.submit(index, command);
            index += 1;
        }
        cluster.drain(&mut picks);
        let mut ops = ops.iter().enumerate();
        let mut burst = bursts.iter().cycle();
        loop {
            let n = *burst.next().unwrap();
            let mut any = false;
            for _ in 0..n {
                let Some((seq, op)) = ops.next() else { break };
                cluster.submit(index, to_command(op, seq, &insts));
                index += 1;
                any = true;
                // A few deliveries between submissions, so requests overtake each other.
                for _ in 0..(picks.next().unwrap_or(0) % 4) {
                    cluster.deliver_one(picks.next().unwrap_or(0));
                }
            }
            if !any {
                break;
            }
        }
        cluster.drain(&mut picks);
        prop_assert_eq!(cluster.answers.len(), index, "every command answered");
        prop_assert!(cluster.pending.values().all(VecDeque::is_empty));
        check_cluster(&cluster.states()).map_err(TestCaseError::fail)?;
        cluster.check_replay()?;
    }
}

/// The money fields of the statements among `events`, sorted by account (frozen amounts may
/// differ: the single engine states before it drops orders outside the new band, the cluster
/// after).
fn statements(events: &[Event]) -> Vec<(String, i64, i64, i64, i64, i64)> {
    let mut out: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Settlement { statement, .. } => {
                let a = &statement.account;
                Some((
                    a.account_id.as_str().to_string(),
                    a.balance,
                    a.close_profit,
                    a.position_profit,
                    a.commission,
                    a.static_balance,
                ))
            }
            _ => None,
        })
        .collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A day of trading, settlement (with or without an operator's price), and trading on the
    /// next day: the cluster's sharded settlement gives the single engine's statements,
    /// accounts, positions, books and open interest; every shard's log replays.
    #[test]
    fn sharded_settlement_equals_single_engine(
        shards in 1..4u16,
        ops in prop::collection::vec(op(), 1..80),
        after in prop::collection::vec(op(), 0..30),
        price_ticks in prop::option::of(-8..8i64),
        picks in prop::collection::vec(any::<usize>(), 0..400),
    ) {
        let insts = instruments();
        let mut single = Engine::new(insts.clone(), 20250102, EngineConfig::default());
        let mut cluster = Cluster::new(shards);
        let mut picks = picks.into_iter();
        let mut events = Vec::new();
        let mut commands = setup_commands();
        commands.extend(ops.iter().enumerate().map(|(seq, op)| to_command(op, seq, &insts)));
        let mut index = 0;
        for command in commands {
            run_both(&mut single, &mut cluster, index, command, &mut picks)?;
            index += 1;
        }
        if let Some(ticks) = price_ticks {
            let inst = &insts[0];
            let command = Command::SetSettlementPrice {
                ts: 1_735_781_500_000_000_000,
                instrument_id: inst.instrument_id,
                price: inst.pre_settlement + ticks * inst.price_tick,
            };
            events.clear();
            single.execute(&command, &mut events);
            prop_assert_eq!(cluster.set_settlement_price(command), refusal(&events));
        }
        events.clear();
        single.execute(&Command::Settle { ts: 1_735_781_600_000_000_000, next_trading_day: None }, &mut events);
        let settled = cluster.settle(&mut picks);
        prop_assert_eq!(statements(&settled), statements(&events));
        same_as_single(&single, &cluster, &insts, "after settlement")?;
        // The next day, on the rolled positions and bands.
        for (seq, op) in after.iter().enumerate() {
            let mut command = to_command(op, 1000 + seq, &insts);
            if let Command::InsertOrder { ref mut order, .. } = command {
                order.client_order_id = ClientOrderId::new(&format!("n{seq}")).unwrap();
            }
            run_both(&mut single, &mut cluster, index, command, &mut picks)?;
            index += 1;
        }
        same_as_single(&single, &cluster, &insts, "on the next day")?;
        cluster.check_replay()?;
    }
}

/// Messages that cannot come from this venue's shards (as a WAL written elsewhere could hold)
/// are refused and change nothing; a message already handled is a duplicate.
#[test]
fn foreign_messages_are_refused_and_change_nothing() {
    let mut shard = ShardEngine::new(0, 2, instruments(), 20250102, EngineConfig::default());
    let mut out = StepOutput::default();
    let before = serde_json::to_string(&shard.state()).unwrap();
    // cu2501 (#1) is shard 1's, IF2501 (#0) shard 0's.
    let cases = [
        (1, 1, PeerMsg::Cancel { order_id: 2, instrument: 1 }, "owned by another shard"),
        (1, 1, PeerMsg::Cancel { order_id: 2, instrument: 9 }, "does not exist"),
        (1, 1, PeerMsg::Mark { instrument: 0, price: 1 }, "owned by another shard"),
        (0, 1, PeerMsg::CancelMissed { order_id: 2 }, "from shard 0"),
        (7, 1, PeerMsg::CancelMissed { order_id: 2 }, "from shard 7"),
        (1, 3, PeerMsg::CancelMissed { order_id: 2 }, "a gap"),
    ];
    for (from, seq, msg, why) in cases {
        match shard.deliver(1, from, seq, &msg, &mut out) {
            Delivery::Refused(text) => assert!(text.contains(why), "{text}"),
            other => panic!("{msg:?} from {from}: {other:?}"),
        }
    }
    assert_eq!(serde_json::to_string(&shard.state()).unwrap(), before);
    let mark = PeerMsg::Mark { instrument: 1, price: 750_100_000 };
    assert_eq!(shard.deliver(1, 1, 1, &mark, &mut out), Delivery::Applied);
    assert_eq!(shard.deliver(2, 1, 1, &mark, &mut out), Delivery::Duplicate);
    assert_eq!(shard.marks()[1], 750_100_000);
}
