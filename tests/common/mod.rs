//! Shared helpers for the engine scenario tests: instruments with round numbers, a command
//! runner that checks the invariants after every command, and event/snapshot accessors.
#![allow(dead_code)]

use qaexchange::domain::command::{Command, InsertOrder};
use qaexchange::domain::engine::{Engine, EngineConfig};
use qaexchange::domain::event::Event;
use qaexchange::domain::instrument::{CommissionConfig, ExchangeId, Instrument, InstrumentConfig, InstrumentStatus};
use qaexchange::domain::ledger::account::{AccountSnapshot, PositionSnapshot};
use qaexchange::domain::name::{AccountId, ClientOrderId, InstrumentId};
use qaexchange::domain::risk::RejectCode;
use qaexchange::domain::types::*;

/// Yuan -> fixed-point money.
pub fn m(yuan: f64) -> Money {
    money_from_f64(yuan)
}

/// Decimal price -> fixed-point price.
pub fn p(price: f64) -> Price {
    price_from_f64(price)
}

pub fn aid(id: &str) -> AccountId {
    AccountId::new(id).expect("account id")
}

pub fn iid(id: &str) -> InstrumentId {
    InstrumentId::new(id).expect("instrument id")
}

pub fn cid(id: &str) -> ClientOrderId {
    ClientOrderId::new(id).expect("client order id")
}

#[allow(clippy::too_many_arguments)]
fn config(
    id: &str,
    exchange: ExchangeId,
    product: &str,
    multiple: i64,
    tick: f64,
    margin: f64,
    commission: CommissionConfig,
    limit_rate: f64,
    pre_settlement: f64,
    max_order_volume: i64,
) -> InstrumentConfig {
    InstrumentConfig {
        instrument_id: id.into(),
        exchange_id: exchange,
        product_id: product.into(),
        volume_multiple: multiple,
        price_tick: tick,
        margin_rate_long: margin,
        margin_rate_short: margin,
        commission,
        limit_rate,
        pre_settlement,
        pre_close: None,
        pre_open_interest: 0,
        max_order_volume,
        status: InstrumentStatus::Trading,
        position_limit: None,
        shard: None,
        delivery_year: Some(2025),
        delivery_month: Some(1),
    }
}

/// CFFEX IF2501: x300, tick 0.2, margin 12%, commission 0.000023 of turnover to open and
/// close, 0.00023 to close today; band 4000 +/- 10% = [3600, 4400]; at most 20 lots an order.
pub fn if2501() -> Instrument {
    Instrument::from_config(&config(
        "IF2501",
        ExchangeId::CFFEX,
        "IF",
        300,
        0.2,
        0.12,
        CommissionConfig { open_rate: 0.000023, close_rate: 0.000023, close_today_rate: 0.00023, ..Default::default() },
        0.10,
        4000.0,
        20,
    ))
    .expect("IF2501")
}

/// SHFE cu2501 (strict close-today): x5, tick 10, margin 10%, commission 0.00005 of turnover
/// to open and close (his), 0.0001 to close today; band 70000 +/- 8% = [64400, 75600].
pub fn cu2501() -> Instrument {
    Instrument::from_config(&config(
        "cu2501",
        ExchangeId::SHFE,
        "cu",
        5,
        10.0,
        0.10,
        CommissionConfig { open_rate: 0.00005, close_rate: 0.00005, close_today_rate: 0.0001, ..Default::default() },
        0.08,
        70000.0,
        50,
    ))
    .expect("cu2501")
}

/// DCE i2501 with both commission parts: 1 yuan/lot + 0.0001 of turnover to open and close,
/// 2 yuan/lot + 0.0002 to close today; x100, tick 0.5, margin 10%, band 800 +/- 10%.
pub fn i2501() -> Instrument {
    Instrument::from_config(&config(
        "i2501",
        ExchangeId::DCE,
        "i",
        100,
        0.5,
        0.10,
        CommissionConfig {
            open_per_lot: 1.0,
            close_per_lot: 1.0,
            close_today_per_lot: 2.0,
            open_rate: 0.0001,
            close_rate: 0.0001,
            close_today_rate: 0.0002,
        },
        0.10,
        800.0,
        100,
    ))
    .expect("i2501")
}

/// CZCE SR501, per lot only: 3 yuan/lot to open and close, nothing to close today; x10, tick 1,
/// margin 7%, band 6000 +/- 6% = [5640, 6360].
pub fn sr501() -> Instrument {
    Instrument::from_config(&config(
        "SR501",
        ExchangeId::CZCE,
        "SR",
        10,
        1.0,
        0.07,
        CommissionConfig { open_per_lot: 3.0, close_per_lot: 3.0, close_today_per_lot: 0.0, ..Default::default() },
        0.06,
        6000.0,
        100,
    ))
    .expect("SR501")
}

/// A LIMIT GFD ANY order.
pub fn limit(
    account: &str,
    client_order_id: &str,
    instrument: &str,
    direction: Direction,
    offset: Offset,
    price: f64,
    volume: Volume,
) -> InsertOrder {
    InsertOrder {
        account_id: aid(account),
        client_order_id: cid(client_order_id),
        instrument_id: iid(instrument),
        direction,
        offset,
        price_type: PriceType::Limit,
        limit_price: Some(p(price)),
        volume,
        time_condition: TimeCondition::Gfd,
        volume_condition: VolumeCondition::Any,
        min_volume: 0,
    }
}

/// The engine plus a clock; every command is followed by `check_invariants`.
pub struct Sim {
    pub engine: Engine,
    pub ts: TimestampNs,
}

impl Sim {
    pub fn new(instruments: Vec<Instrument>, trading_day: u32) -> Self {
        Self { engine: Engine::new(instruments, trading_day, EngineConfig::default()), ts: 1_700_000_000_000_000_000 }
    }

    pub fn next_ts(&mut self) -> TimestampNs {
        self.ts += 1_000_000;
        self.ts
    }

    /// Executes one command and returns its events; panics if an invariant broke.
    pub fn run(&mut self, command: Command) -> Vec<Event> {
        let mut out = Vec::new();
        self.engine.execute(&command, &mut out);
        if let Err(broken) = self.engine.check_invariants() {
            panic!("invariant broken after {command:?}: {broken}\nevents: {out:#?}");
        }
        out
    }

    pub fn open_account(&mut self, id: &str, deposit: f64) {
        let ts = self.next_ts();
        let ev = self.run(Command::OpenAccount { ts, account_id: aid(id) });
        assert!(matches!(ev[0], Event::AccountOpened { .. }), "{ev:?}");
        if deposit > 0.0 {
            let ev = self.deposit(id, deposit);
            assert!(matches!(ev[0], Event::FundsTransferred { .. }), "deposit: {ev:?}");
        }
    }

    pub fn deposit(&mut self, id: &str, amount: f64) -> Vec<Event> {
        let ts = self.next_ts();
        self.run(Command::Deposit { ts, account_id: aid(id), amount: m(amount) })
    }

    pub fn withdraw(&mut self, id: &str, amount: f64) -> Vec<Event> {
        let ts = self.next_ts();
        self.run(Command::Withdraw { ts, account_id: aid(id), amount: m(amount) })
    }

    pub fn set_frozen(&mut self, id: &str, frozen: bool) -> Vec<Event> {
        let ts = self.next_ts();
        self.run(Command::SetAccountFrozen { ts, account_id: aid(id), frozen, mode: Default::default() })
    }

    pub fn insert(&mut self, order: InsertOrder) -> Vec<Event> {
        let ts = self.next_ts();
        self.run(Command::InsertOrder { ts, order })
    }

    /// Inserts an order that must be accepted; returns its exchange order id and the events.
    pub fn place(&mut self, order: InsertOrder) -> (u64, Vec<Event>) {
        let ev = self.insert(order);
        let id = accepted_id(&ev).unwrap_or_else(|| panic!("order not accepted: {ev:#?}"));
        (id, ev)
    }

    pub fn cancel(&mut self, account: &str, order_id: u64) -> Vec<Event> {
        let ts = self.next_ts();
        self.run(Command::CancelOrder { ts, account_id: aid(account), order_id: Some(order_id), client_order_id: None })
    }

    pub fn modify(
        &mut self,
        account: &str,
        order_id: u64,
        new_price: Option<f64>,
        new_volume: Option<Volume>,
    ) -> Vec<Event> {
        let ts = self.next_ts();
        self.run(Command::ModifyOrder {
            ts,
            account_id: aid(account),
            order_id: Some(order_id),
            client_order_id: None,
            new_price: new_price.map(p),
            new_volume,
        })
    }

    pub fn set_settlement_price(&mut self, instrument: &str, price: f64) -> Vec<Event> {
        let ts = self.next_ts();
        self.run(Command::SetSettlementPrice { ts, instrument_id: iid(instrument), price: p(price) })
    }

    pub fn settle(&mut self, next_trading_day: Option<u32>) -> Vec<Event> {
        let ts = self.next_ts();
        self.run(Command::Settle { ts, next_trading_day })
    }

    pub fn force_liquidate(&mut self, account: &str) -> Vec<Event> {
        let ts = self.next_ts();
        self.run(Command::ForceLiquidate { ts, account_id: aid(account) })
    }

    pub fn account(&self, id: &str) -> AccountSnapshot {
        let slot = self.engine.account_slot(&aid(id)).expect("account exists");
        self.engine.ledger().snapshot(slot, self.engine.instruments(), self.engine.marks())
    }

    /// The account's position in `instrument` as DIFF shows it (all zeros when it has none).
    pub fn position(&self, account: &str, instrument: &str) -> PositionSnapshot {
        let slot = self.engine.account_slot(&aid(account)).expect("account");
        let inst_slot = self.engine.instrument_slot(&iid(instrument)).expect("instrument");
        let inst = &self.engine.instruments()[inst_slot as usize];
        let mark = self.engine.marks()[inst_slot as usize];
        let acc = self.engine.ledger().account(slot);
        let empty = qaexchange::domain::ledger::position::Position::new(inst_slot);
        let pos = acc.position(inst_slot).unwrap_or(&empty);
        PositionSnapshot::new(acc.account_id, pos, inst, mark)
    }

    pub fn mark(&self, instrument: &str) -> Price {
        let slot = self.engine.instrument_slot(&iid(instrument)).expect("inst");
        self.engine.marks()[slot as usize]
    }

    pub fn state_json(&self) -> String {
        serde_json::to_string(&self.engine.state()).expect("state serializes")
    }

    /// sum(close_profit + position_profit) over accounts, and
    /// sum(balance) + sum(commission) - sum(static_balance): both must be 0.
    pub fn zero_sum(&self) -> (Money, Money) {
        let mut profit = 0;
        let mut books = 0;
        for a in self.engine.ledger().accounts() {
            let s = self.account(a.account_id.as_str());
            profit += s.close_profit + s.position_profit;
            books += s.balance + s.commission - s.static_balance;
        }
        (profit, books)
    }
}

pub fn accepted_id(events: &[Event]) -> Option<u64> {
    events.iter().find_map(|e| match e {
        Event::OrderAccepted { order, .. } => Some(order.order_id),
        _ => None,
    })
}

/// (price, volume, buy order id, sell order id) of every trade.
pub fn trades(events: &[Event]) -> Vec<(Price, Volume, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Trade { price, volume, buy, sell, .. } => Some((*price, *volume, buy.order_id, sell.order_id)),
            _ => None,
        })
        .collect()
}

/// (order id, volume cancelled, reason) of every OrderCancelled.
pub fn cancels(events: &[Event]) -> Vec<(u64, Volume, RejectCode)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::OrderCancelled { order_id, volume_cancelled, reason, .. } => {
                Some((*order_id, *volume_cancelled, reason.reason))
            }
            _ => None,
        })
        .collect()
}

/// The reason of an OrderRejected or CommandRejected, with its numeric code.
pub fn rejection(events: &[Event]) -> Option<(u32, RejectCode)> {
    events.iter().find_map(|e| match e {
        Event::OrderRejected { reason, .. } | Event::CommandRejected { reason, .. } => {
            Some((reason.code, reason.reason))
        }
        _ => None,
    })
}

/// Asserts two f64 display values agree to 1e-9.
pub fn assert_close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() < 1e-9, "{what}: got {got}, want {want}");
}
