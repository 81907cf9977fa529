//! The exchange engine: one deterministic state machine, `execute(command) -> events`.
//!
//! It composes the account side (`Ledger`: holds, fills, settlement of accounts) with the
//! instrument side (books and market data). The steps of an order are explicit — hold on the
//! account, match on the book, apply fills to both accounts — so the sharded server can run the
//! same steps on different cores with messages between them.

mod orders;
mod settlement;
// Calendar arithmetic the server also needs (DIFF datetimes, instrument expiry dates).
pub(crate) use settlement::{civil_from_days, days_from_civil};
mod state;

pub use settlement::{closing_orders, is_valid_day, market_close, next_weekday};
pub use state::{account_states, AccountState, BookDump, EngineState, InstrumentState, RestingOrderView};

use crate::domain::account_ops;
use crate::domain::book::{Fill, OrderBook};
use crate::domain::command::Command;
use crate::domain::event::{Event, Reason};
use crate::domain::fast_hash::FastMap;
use crate::domain::instrument::Instrument;
use crate::domain::ledger::account::PositionSnapshot;
use crate::domain::ledger::Ledger;
use crate::domain::market_data::InstrumentMarket;
use crate::domain::name::{AccountId, InlineStr, InstrumentId};
use crate::domain::risk::RejectCode;
use crate::domain::touched::Touched;
use crate::domain::types::*;

/// Sizes that bound the engine's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineConfig {
    /// Resting orders per book reserved up front (the book grows past it if needed).
    pub book_capacity: usize,
    /// Live orders across all accounts reserved up front in the ledger's maps. hashbrown clears
    /// tombstones by rehashing in place only below half its capacity, so reserve about twice
    /// the expected peak to stay allocation-free in steady state.
    pub live_order_capacity: usize,
    /// Bars kept per k-line period per instrument.
    pub kline_capacity: usize,
    /// Ticks kept per instrument.
    pub tick_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { book_capacity: 4096, live_order_capacity: 4096, kline_capacity: 2048, tick_capacity: 4096 }
    }
}

/// Scratch lists reused by every command so steady-state execution allocates nothing.
#[derive(Clone, Debug, Default)]
struct Scratch {
    fills: Vec<Fill>,
    touched: Touched,
}

#[derive(Clone, Debug)]
pub struct Engine {
    config: EngineConfig,
    trading_day: u32,
    instruments: Vec<Instrument>,
    instrument_index: FastMap<InstrumentId, u32>,
    books: Vec<OrderBook>,
    markets: Vec<InstrumentMarket>,
    /// Price every position of an instrument is marked at: last trade or operator mark.
    marks: Vec<Price>,
    open_interest: Vec<Volume>,
    settlement_prices: Vec<Option<Price>>,
    ledger: Ledger,
    next_order_id: u64,
    next_trade_id: u64,
    statements: Vec<crate::domain::event::SettlementStatement>,
    scratch: Scratch,
}

impl Engine {
    /// An engine for `instruments` on `trading_day` (yyyymmdd).
    pub fn new(mut instruments: Vec<Instrument>, trading_day: u32, config: EngineConfig) -> Self {
        // Open interest is what this venue's accounts hold; a new engine holds nothing, so the
        // day starts at zero whatever a config's reference `pre_open_interest` says.
        for inst in &mut instruments {
            inst.pre_open_interest = 0;
        }
        let mut instrument_index = FastMap::default();
        for (i, inst) in instruments.iter().enumerate() {
            instrument_index.insert(inst.instrument_id, i as u32);
        }
        let books = instruments
            .iter()
            .map(|i| OrderBook::new(i.price_tick, i.lower_limit, i.upper_limit, config.book_capacity))
            .collect();
        let markets =
            instruments.iter().map(|i| InstrumentMarket::new(i, config.kline_capacity, config.tick_capacity)).collect();
        // Positions are marked at the reference settlement price until the first trade, so an
        // instrument that never trades settles at the price it started from.
        let marks = instruments.iter().map(|i| i.pre_settlement).collect();
        let open_interest = vec![0; instruments.len()];
        let settlement_prices = vec![None; instruments.len()];
        Self {
            config,
            trading_day,
            instruments,
            instrument_index,
            books,
            markets,
            marks,
            open_interest,
            settlement_prices,
            ledger: Ledger::with_capacity(config.live_order_capacity),
            next_order_id: 1,
            next_trade_id: 1,
            statements: Vec::new(),
            // Sized for a sweep through many makers; grown (once) only by a larger one.
            scratch: Scratch {
                fills: Vec::with_capacity(256),
                touched: Touched {
                    accounts: Vec::with_capacity(64),
                    positions: Vec::with_capacity(64),
                    quotes: Vec::with_capacity(16),
                    marked: Vec::with_capacity(16),
                },
            },
        }
    }

    pub fn config(&self) -> EngineConfig {
        self.config
    }

    pub fn trading_day(&self) -> u32 {
        self.trading_day
    }

    pub fn instruments(&self) -> &[Instrument] {
        &self.instruments
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn book(&self, instrument: u32) -> &OrderBook {
        &self.books[instrument as usize]
    }

    pub fn market(&self, instrument: u32) -> &InstrumentMarket {
        &self.markets[instrument as usize]
    }

    pub fn marks(&self) -> &[Price] {
        &self.marks
    }

    pub fn open_interest(&self, instrument: u32) -> Volume {
        self.open_interest[instrument as usize]
    }

    pub fn statements(&self) -> &[crate::domain::event::SettlementStatement] {
        &self.statements
    }

    /// Finds an instrument by `cu2501` or `SHFE.cu2501`.
    pub fn instrument_slot(&self, id: &InstrumentId) -> Option<u32> {
        if let Some(&slot) = self.instrument_index.get(id) {
            return Some(slot);
        }
        let (exchange, bare) = id.as_str().split_once('.')?;
        let slot = *self.instrument_index.get(&InstrumentId::new(bare)?)?;
        (self.instruments[slot as usize].exchange_id.as_str() == exchange).then_some(slot)
    }

    pub fn account_slot(&self, id: &AccountId) -> Option<u32> {
        self.ledger.slot_of(id)
    }

    /// Executes one command, appending its events to `out`.
    pub fn execute(&mut self, command: &Command, out: &mut Vec<Event>) {
        let ts = command.ts();
        let result = match *command {
            Command::OpenAccount { account_id, .. } => {
                account_ops::open_account(&mut self.ledger, &mut self.scratch.touched, ts, account_id, out)
            }
            Command::Deposit { account_id, amount, .. } => self.transfer(ts, account_id, amount, true, out),
            Command::Withdraw { account_id, amount, .. } => self.transfer(ts, account_id, amount, false, out),
            Command::SetAccountFrozen { account_id, frozen, mode, .. } => {
                account_ops::set_frozen(&mut self.ledger, &mut self.scratch.touched, ts, account_id, frozen, mode, out)
            }
            Command::InsertOrder { ref order, .. } => {
                self.insert_order(ts, order, out);
                Ok(())
            }
            Command::CancelOrder { account_id, order_id, client_order_id, .. } => {
                self.cancel_order(ts, account_id, order_id, client_order_id, out)
            }
            Command::ModifyOrder { account_id, order_id, client_order_id, new_price, new_volume, .. } => {
                self.modify_order(ts, account_id, order_id, client_order_id, new_price, new_volume, out)
            }
            Command::MarkPrice { instrument_id, price, .. } => self.mark_price(ts, instrument_id, price, out),
            Command::SetSettlementPrice { instrument_id, price, .. } => {
                self.set_settlement_price(ts, instrument_id, price, out)
            }
            Command::Settle { next_trading_day, .. } => self.settle(ts, next_trading_day, out),
            Command::ForceLiquidate { account_id, .. } => self.force_liquidate(ts, account_id, out),
        };
        if let Err(code) = result {
            let command_name = InlineStr::new(command.name()).expect("command names are short");
            out.push(Event::CommandRejected { ts, command: command_name, reason: Reason::from(code) });
        }
        self.flush_updates(ts, out);
        #[cfg(debug_assertions)]
        if let Err(broken) = self.check_invariants() {
            panic!("invariant broken after {command:?}: {broken}");
        }
    }

    fn transfer(
        &mut self,
        ts: TimestampNs,
        account_id: AccountId,
        amount: Money,
        is_deposit: bool,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectCode> {
        let touched = &mut self.scratch.touched;
        account_ops::transfer(
            &mut self.ledger,
            &self.instruments,
            &self.marks,
            touched,
            ts,
            account_id,
            amount,
            is_deposit,
            out,
        )
    }

    fn mark_price(
        &mut self,
        ts: TimestampNs,
        instrument_id: InstrumentId,
        price: Price,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectCode> {
        let slot = self.instrument_slot(&instrument_id).ok_or(RejectCode::InstrumentNotFound)?;
        self.check_price(slot, price)?;
        self.marks[slot as usize] = price;
        out.push(Event::MarkPriceSet { ts, instrument_id: self.instruments[slot as usize].instrument_id, price });
        // An operator mark is rare: report every holder's re-marked account and position.
        for account in 0..self.ledger.accounts().len() as u32 {
            if self.ledger.account(account).position(slot).is_some() {
                self.scratch.touched.position(account, slot);
            }
        }
        Ok(())
    }

    /// Emits the account, position and quote snapshots the command changed, once each.
    fn flush_updates(&mut self, ts: TimestampNs, out: &mut Vec<Event>) {
        for &slot in &self.scratch.touched.accounts {
            let account = self.ledger.snapshot(slot, &self.instruments, &self.marks);
            out.push(Event::AccountUpdated { ts, account });
        }
        for &(slot, instrument) in &self.scratch.touched.positions {
            let account = self.ledger.account(slot);
            let inst = &self.instruments[instrument as usize];
            let position = match account.position(instrument) {
                Some(p) => PositionSnapshot::new(account.account_id, p, inst, self.marks[instrument as usize]),
                None => PositionSnapshot::new(
                    account.account_id,
                    &crate::domain::ledger::position::Position::new(instrument),
                    inst,
                    self.marks[instrument as usize],
                ),
            };
            out.push(Event::PositionUpdated { ts, position });
        }
        for &(instrument, traded) in &self.scratch.touched.quotes {
            let market = &mut self.markets[instrument as usize];
            let book = &mut self.books[instrument as usize];
            // Skip re-reading depth when the book says its top levels cannot have changed.
            let depth_changed = book.take_depth_changed() && market.on_book(book, ts);
            if traded {
                market.record_tick(ts);
            }
            if depth_changed || traded {
                out.push(Event::QuoteUpdated { ts, quote: *market.quote() });
            }
        }
        self.scratch.touched.clear();
    }
}
