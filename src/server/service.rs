//! The exchange service: the engine plus the order/trade journal, answering [`Action`]s with
//! JSON envelope bodies. Pure and deterministic (no I/O, no clock: the caller passes the time),
//! so the same code serves live requests and rebuilds state from the WAL at start-up.

use super::http::{push_error_body, push_success_body, HttpErrorCode};
use super::journal::{Journal, JournalLimits, OrderRecord};
use crate::domain::command::{Command, InsertOrder};
use crate::domain::engine::{Engine, EngineConfig};
use crate::domain::event::Event;
use crate::domain::instrument::Instrument;
use crate::domain::ledger::account::PositionSnapshot;
use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use crate::domain::risk::RejectCode;
use crate::domain::types::*;
use serde::Serialize;

/// What a client asks for, decoded and checked by the connection's shard.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    OpenAccount {
        account_id: AccountId,
        init_cash: Option<Money>,
    },
    Transfer {
        account_id: AccountId,
        amount: Money,
        deposit: bool,
    },
    Submit(InsertOrder),
    Cancel {
        account_id: AccountId,
        order_id: Option<u64>,
        client_order_id: Option<ClientOrderId>,
    },
    Modify {
        account_id: AccountId,
        order_id: Option<u64>,
        client_order_id: Option<ClientOrderId>,
        new_price: Option<Price>,
        new_volume: Option<Volume>,
    },
    Query(Query),
}

impl Action {
    /// Whether the action may change state (and so goes through the WAL).
    pub fn is_command(&self) -> bool {
        !matches!(self, Action::Query(_))
    }
}

/// Read-only requests.
#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    Account(AccountId),
    /// The engine's numeric order id.
    Order(u64),
    UserOrders(AccountId),
    Positions(AccountId),
    UserTrades(AccountId),
    Instruments,
    OrderBook {
        instrument_id: InstrumentId,
        depth: u32,
    },
    Tick(InstrumentId),
    MarketTrades {
        instrument_id: InstrumentId,
        limit: u32,
    },
    Kline {
        instrument_id: InstrumentId,
        period_index: usize,
        count: u32,
    },
    /// The whole engine state and the invariant check (operators and recovery tests).
    State,
}

/// An answer: HTTP status and the JSON envelope body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn success<T: Serialize + ?Sized>(data: &T) -> Reply {
        let mut body = Vec::new();
        if push_success_body(&mut body, data).is_err() {
            return Reply::http_message(
                HttpErrorCode::InternalError,
                "internal server error: the answer could not be serialized",
            );
        }
        Reply { status: 200, body }
    }

    /// `{"success":false,"data":null,"error":{"code":..,"message":".."}}`, keys in the same
    /// order as every other envelope.
    pub fn error(status: u16, code: u32, message: &str) -> Reply {
        let mut body = Vec::new();
        push_error_body(&mut body, code, message);
        Reply { status, body }
    }

    /// An error of the HTTP layer's table with its default message.
    pub fn http(kind: HttpErrorCode) -> Reply {
        Reply::error(kind.status(), kind.code(), kind.message())
    }

    /// An error of the HTTP layer's table with a more precise message.
    pub fn http_message(kind: HttpErrorCode, message: &str) -> Reply {
        Reply::error(kind.status(), kind.code(), message)
    }

    /// An engine refusal: 404 for things that do not exist, 400 otherwise.
    pub fn reject(code: RejectCode) -> Reply {
        let status = match code {
            RejectCode::AccountNotFound | RejectCode::InstrumentNotFound | RejectCode::OrderNotFound => 404,
            _ => 400,
        };
        Reply::error(status, code.code(), code.message())
    }
}

/// The engine and its journal, with reused buffers.
pub struct Service {
    engine: Engine,
    journal: Journal,
    events: Vec<Event>,
    /// Timestamps handed to the engine never go backwards, whatever the wall clock does.
    last_ts: TimestampNs,
}

impl Service {
    pub fn new(instruments: Vec<Instrument>, trading_day: u32, engine: EngineConfig, journal: JournalLimits) -> Self {
        Self {
            engine: Engine::new(instruments, trading_day, engine),
            journal: Journal::new(journal),
            events: Vec::with_capacity(64),
            last_ts: 0,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// A monotonic timestamp at or after `now_ns`.
    fn stamp(&mut self, now_ns: TimestampNs) -> TimestampNs {
        self.last_ts = self.last_ts.max(now_ns);
        self.last_ts
    }

    /// Re-executes a command read back from the WAL (its timestamp is the original one).
    pub fn replay(&mut self, command: &Command) {
        self.last_ts = self.last_ts.max(command.ts());
        self.execute(command);
    }

    /// The engine, then the journal, over the command's events (kept in `self.events`).
    fn execute(&mut self, command: &Command) {
        self.events.clear();
        self.engine.execute(command, &mut self.events);
        for event in &self.events {
            self.journal.apply(event);
        }
    }

    /// Executes `command` with the time stamped in; pushes it to `logged` when it changed state.
    fn run(&mut self, command: Command, logged: &mut Vec<Command>) {
        self.execute(&command);
        let changed =
            self.events.iter().any(|e| !matches!(e, Event::OrderRejected { .. } | Event::CommandRejected { .. }));
        if changed {
            logged.push(command);
        }
    }

    /// The reason of the first refusal among the last command's events.
    fn refusal(&self) -> Option<RejectCode> {
        self.events.iter().find_map(|e| match e {
            Event::OrderRejected { reason, .. } | Event::CommandRejected { reason, .. } => Some(reason.reason),
            _ => None,
        })
    }

    /// Answers one action at `now_ns`; commands that changed state are pushed to `logged` (the
    /// caller writes them to the WAL and releases the reply only once they are durable).
    pub fn handle(&mut self, action: Action, now_ns: TimestampNs, logged: &mut Vec<Command>) -> Reply {
        let ts = self.stamp(now_ns);
        match action {
            Action::OpenAccount { account_id, init_cash } => {
                self.run(Command::OpenAccount { ts, account_id }, logged);
                if let Some(code) = self.refusal() {
                    return Reply::reject(code);
                }
                if let Some(amount) = init_cash {
                    self.run(Command::Deposit { ts, account_id, amount }, logged);
                    if let Some(code) = self.refusal() {
                        return Reply::reject(code);
                    }
                }
                self.account_reply(&account_id)
            }
            Action::Transfer { account_id, amount, deposit } => {
                let command = if deposit {
                    Command::Deposit { ts, account_id, amount }
                } else {
                    Command::Withdraw { ts, account_id, amount }
                };
                self.run(command, logged);
                match self.refusal() {
                    Some(code) => Reply::reject(code),
                    None => self.account_reply(&account_id),
                }
            }
            Action::Submit(order) => {
                self.run(Command::InsertOrder { ts, order }, logged);
                if let Some(code) = self.refusal() {
                    return Reply::reject(code);
                }
                let order_id = self.events.iter().find_map(|e| match e {
                    Event::OrderAccepted { order, .. } => Some(order.order_id),
                    _ => None,
                });
                let traded = self.events.iter().filter(|e| matches!(e, Event::Trade { .. })).count();
                self.order_reply(order_id, &order.account_id, traded)
            }
            Action::Cancel { account_id, order_id, client_order_id } => {
                self.run(Command::CancelOrder { ts, account_id, order_id, client_order_id }, logged);
                if let Some(code) = self.refusal() {
                    return Reply::reject(code);
                }
                let id = self.events.iter().find_map(|e| match e {
                    Event::OrderCancelled { order_id, .. } => Some(*order_id),
                    _ => None,
                });
                self.order_reply(id, &account_id, 0)
            }
            Action::Modify { account_id, order_id, client_order_id, new_price, new_volume } => {
                let command = Command::ModifyOrder { ts, account_id, order_id, client_order_id, new_price, new_volume };
                self.run(command, logged);
                if let Some(code) = self.refusal() {
                    return Reply::reject(code);
                }
                let id = self.events.iter().find_map(|e| match e {
                    Event::OrderModified { order_id, .. } => Some(*order_id),
                    _ => None,
                });
                let traded = self.events.iter().filter(|e| matches!(e, Event::Trade { .. })).count();
                self.order_reply(id, &account_id, traded)
            }
            Action::Query(query) => self.query(query),
        }
    }

    fn account_reply(&self, account_id: &AccountId) -> Reply {
        match self.engine.account_slot(account_id) {
            Some(slot) => {
                let engine = &self.engine;
                Reply::success(&engine.ledger().snapshot(slot, engine.instruments(), engine.marks()))
            }
            None => Reply::reject(RejectCode::AccountNotFound),
        }
    }

    /// The order as the journal has it now, with the account's last `traded` trades (the ones
    /// this command made).
    fn order_reply(&self, order_id: Option<u64>, account_id: &AccountId, traded: usize) -> Reply {
        let Some(order) = order_id.and_then(|id| self.journal.order(id)) else {
            return Reply::http_message(
                HttpErrorCode::InternalError,
                "internal server error: the order is missing from the journal",
            );
        };
        let trades: Vec<_> = self.journal.recent_account_trades(account_id, traded).collect();
        Reply::success(&OrderReply { order, trades: &trades })
    }

    fn instrument(&self, id: &InstrumentId) -> Result<u32, Reply> {
        self.engine.instrument_slot(id).ok_or_else(|| Reply::reject(RejectCode::InstrumentNotFound))
    }

    fn account(&self, id: &AccountId) -> Result<u32, Reply> {
        self.engine.account_slot(id).ok_or_else(|| Reply::reject(RejectCode::AccountNotFound))
    }

    fn query(&self, query: Query) -> Reply {
        match self.try_query(query) {
            Ok(reply) | Err(reply) => reply,
        }
    }

    fn try_query(&self, query: Query) -> Result<Reply, Reply> {
        let engine = &self.engine;
        Ok(match query {
            Query::Account(id) => {
                self.account(&id)?;
                self.account_reply(&id)
            }
            Query::Order(id) => match self.journal.order(id) {
                Some(order) => Reply::success(order),
                None => Reply::reject(RejectCode::OrderNotFound),
            },
            Query::UserOrders(id) => {
                self.account(&id)?;
                Reply::success(&self.journal.account_orders(&id).collect::<Vec<_>>())
            }
            Query::UserTrades(id) => {
                self.account(&id)?;
                Reply::success(&self.journal.account_trades(&id).collect::<Vec<_>>())
            }
            Query::Positions(id) => {
                let slot = self.account(&id)?;
                let account = engine.ledger().account(slot);
                let positions: Vec<PositionSnapshot> = (0..engine.instruments().len() as u32)
                    .filter_map(|i| {
                        let p = account.position(i)?;
                        let mark = engine.marks()[i as usize];
                        Some(PositionSnapshot::new(id, p, &engine.instruments()[i as usize], mark))
                    })
                    .collect();
                Reply::success(&positions)
            }
            Query::Instruments => {
                Reply::success(&engine.instruments().iter().map(InstrumentView::from).collect::<Vec<_>>())
            }
            Query::OrderBook { instrument_id, depth } => {
                let slot = self.instrument(&instrument_id)?;
                let inst = &engine.instruments()[slot as usize];
                let book = engine.book(slot);
                let levels = |direction| {
                    let mut out = Vec::new();
                    book.for_each_level(direction, depth as usize, |price, volume, orders| {
                        out.push(LevelView { price, volume, orders })
                    });
                    out
                };
                Reply::success(&BookView {
                    exchange_id: inst.exchange_id.as_str(),
                    instrument_id: inst.instrument_id.as_str(),
                    bids: levels(Direction::Buy),
                    asks: levels(Direction::Sell),
                })
            }
            Query::Tick(instrument_id) => {
                let slot = self.instrument(&instrument_id)?;
                Reply::success(engine.market(slot).quote())
            }
            Query::MarketTrades { instrument_id, limit } => {
                let slot = self.instrument(&instrument_id)?;
                let bare = engine.instruments()[slot as usize].instrument_id;
                Reply::success(&self.journal.market_trades(&bare, limit as usize).collect::<Vec<_>>())
            }
            Query::Kline { instrument_id, period_index, count } => {
                let slot = self.instrument(&instrument_id)?;
                let Some(series) = engine.market(slot).klines(period_index) else {
                    return Err(Reply::http_message(
                        HttpErrorCode::InvalidQueryParameter,
                        "invalid query parameter: period",
                    ));
                };
                let bars = series.bars();
                let from = (bars.last_id() + 1 - i64::from(count)).max(bars.first_id());
                let inst = &engine.instruments()[slot as usize];
                Reply::success(&KlineView {
                    instrument_id: inst.instrument_id.as_str(),
                    period_ns: series.period_ns(),
                    bars: bars.iter_from(from).map(|(id, bar)| BarView { id, bar }).collect(),
                })
            }
            Query::State => {
                let invariants = match engine.check_invariants() {
                    Ok(()) => "ok".to_string(),
                    Err(broken) => broken,
                };
                Reply::success(&StateView { invariants, state: engine.state() })
            }
        })
    }
}

#[derive(Serialize)]
struct OrderReply<'a> {
    order: &'a OrderRecord,
    trades: &'a [&'a super::journal::UserTrade],
}

#[derive(Serialize)]
struct LevelView {
    #[serde(with = "fixed4")]
    price: Price,
    volume: Volume,
    orders: u32,
}

#[derive(Serialize)]
struct BookView<'a> {
    exchange_id: &'a str,
    instrument_id: &'a str,
    bids: Vec<LevelView>,
    asks: Vec<LevelView>,
}

#[derive(Serialize)]
struct KlineView<'a> {
    instrument_id: &'a str,
    period_ns: i64,
    bars: Vec<BarView<'a>>,
}

/// A k-line with its DIFF id (position in the series since the venue started).
#[derive(Serialize)]
struct BarView<'a> {
    id: i64,
    #[serde(flatten)]
    bar: &'a crate::domain::market_data::Kline,
}

#[derive(Serialize)]
struct StateView {
    invariants: String,
    state: crate::domain::engine::EngineState,
}

/// An instrument as clients read it: decimals, not fixed point.
#[derive(Serialize)]
struct InstrumentView<'a> {
    instrument_id: &'a str,
    exchange_id: &'a str,
    product_id: &'a str,
    volume_multiple: i64,
    #[serde(with = "fixed4")]
    price_tick: Price,
    margin_rate_long: f64,
    margin_rate_short: f64,
    limit_rate: f64,
    #[serde(with = "fixed4")]
    pre_settlement: Price,
    #[serde(with = "fixed4")]
    upper_limit: Price,
    #[serde(with = "fixed4")]
    lower_limit: Price,
    max_order_volume: Volume,
    status: crate::domain::instrument::InstrumentStatus,
}

impl<'a> From<&'a Instrument> for InstrumentView<'a> {
    fn from(i: &'a Instrument) -> Self {
        let rate = |r: Rate| r as f64 / RATE_SCALE as f64;
        Self {
            instrument_id: i.instrument_id.as_str(),
            exchange_id: i.exchange_id.as_str(),
            product_id: &i.product_id,
            volume_multiple: i.volume_multiple,
            price_tick: i.price_tick,
            margin_rate_long: rate(i.margin_rate_long),
            margin_rate_short: rate(i.margin_rate_short),
            limit_rate: rate(i.limit_rate),
            pre_settlement: i.pre_settlement,
            upper_limit: i.upper_limit,
            lower_limit: i.lower_limit,
            max_order_volume: i.max_order_volume,
            status: i.status,
        }
    }
}
