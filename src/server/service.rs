//! One shard's service: its `ShardEngine` plus the order/trade journal, answering [`Action`]s
//! with JSON envelope bodies and handling messages from other shards. Pure and deterministic
//! (no I/O, no clock: the caller passes the time), so the same code serves live requests and
//! rebuilds state from the WAL at start-up.

use super::auth::UserId;
use super::credentials::Password;
use super::diff_chart;
use super::diff_trade::{self, TradeWatch};
use super::history::HistoryWriter;
use super::http::{push_error_body, push_success_body, push_success_body_with, HttpErrorCode};
use super::journal::{FinishedOrders, FinishedSnapshot, Journal, JournalLimits};
use super::settlement_log::SettlementLog;
use super::users::{UserRecord, Users};
use super::wal_record::WalRecord;
use crate::domain::command::{Command, InsertOrder};
use crate::domain::engine::EngineConfig;
use crate::domain::event::Event;
use crate::domain::fast_hash::FastMap;
use crate::domain::instrument::Instrument;
use crate::domain::ledger::account::PositionSnapshot;
use crate::domain::ledger::position::Position;
use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use crate::domain::risk::RejectCode;
use crate::domain::shard::settlement::SettleCut;
use crate::domain::shard::{Completion, Delivery, Outcome, Outgoing, PeerMsg, ShardEngine, ShardState, StepOutput};
use crate::domain::types::*;
use bincode::Options;
use serde::Serialize;
use std::collections::VecDeque;

/// What a client asks for, decoded and checked by the connection's shard.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    OpenAccount {
        account_id: AccountId,
        init_cash: Option<Money>,
        /// The DIFF login password: clear in the request, hashed by the connection's shard
        /// before the action leaves it (`credentials`).
        password: Option<Password>,
        /// The user the account belongs to (`WalRecord::Owner`); None: no user's (a venue
        /// without auth, or an admin's own).
        owner: Option<UserId>,
    },
    /// A new user on the user's shard; the password is hashed by the connection's shard
    /// before the action leaves it. Refused with 409 (9205) when the id is taken.
    Register {
        user_id: UserId,
        password: Password,
        admin: bool,
    },
    /// The operator's settlement price of an instrument (on its owner shard).
    SetSettlementPrice {
        instrument_id: InstrumentId,
        price: Price,
    },
    /// A step of daily settlement, sent by the coordinator (`settlement_run`) to every shard.
    Settle(SettleStep),
    /// An instrument's status on one shard (the connection's shard sends it to every shard,
    /// the owner first).
    SetInstrumentStatus {
        instrument_id: InstrumentId,
        status: crate::domain::instrument::InstrumentStatus,
    },
    /// A new instrument on one shard (sent to every shard, the owner first).
    CreateInstrument(Box<Instrument>),
    /// An instrument's risk parameters on one shard (sent to every shard, the owner first).
    UpdateInstrument {
        instrument_id: InstrumentId,
        update: crate::domain::instrument::InstrumentUpdate,
    },
    /// An admin freezes (trading and withdrawals stop; cancels still run) or unfreezes an
    /// account (command `set_account_frozen`).
    SetFrozen {
        account_id: AccountId,
        frozen: bool,
        mode: crate::domain::ledger::account::FreezeMode,
    },
    /// `action` for a user who is not an admin (auth on): the shard that owns what it names
    /// runs it only when the user owns the account; otherwise it answers as if the account or
    /// order did not exist (`Service::authorize`).
    AsUser {
        user: UserId,
        action: Box<Action>,
    },
    /// A DIFF session on shard `origin.shard` starts (`on`) or stops following the account's
    /// trade tree; starting answers the whole tree and the password hash (`Answer::Follow`).
    Follow {
        account_id: AccountId,
        on: bool,
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

/// The steps of daily settlement, as the coordinator sends them to each shard.
#[derive(Clone, Debug, PartialEq)]
pub enum SettleStep {
    /// Stop client trading (orders, cancels, modifies, transfers, openings): 409 9017 if a
    /// settlement already holds it. Not logged: a restart resumes trading.
    Halt,
    /// Trading goes on.
    Resume,
    /// This shard's message counts: `{day, sent, received}` (the coordinator waits until every
    /// message sent has been received).
    Counts,
    /// This shard's instruments' part of the cut.
    Inputs,
    /// Step 1 at the cut (logged).
    Prepare(SettleCut),
    /// Step 2 at the cut (logged).
    Apply(SettleCut),
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
    /// A DIFF chart series: k-lines of `duration_ns`, or ticks when it is 0 (`diff_chart`).
    Chart {
        instrument_id: InstrumentId,
        duration_ns: i64,
        count: u32,
    },
    /// One shard's whole state (`/admin/state` gathers every shard's and checks the invariants
    /// over all of them).
    ShardState,
    /// One shard's metrics (`/metrics` and `/admin/latency` gather every shard's).
    ShardMetrics,
    /// Clears one shard's latency histograms.
    ResetLatency,
    /// A page of a history series (answered by the shard's core, which holds the store).
    History {
        series: crate::server::history::HistorySeries,
        range: crate::server::history::HistoryRange,
    },
    /// One shard's history store statistics.
    StorageStats,
    /// One shard flushes and compacts its history store now.
    TriggerCompaction,
    /// One shard writes a checkpoint now (answered once it is written).
    Checkpoint,
    /// A user's record, on the user's shard (`Answer::User`): login checks the password.
    User(UserId),
    /// The accounts of this shard that the user owns, as snapshots (gathered from every shard).
    OwnedAccounts(UserId),
    /// The settled days this shard keeps: `[{trading_day, statements, cut}]`.
    SettledDays,
    /// This shard's statements of one settled day.
    SettledDay(u32),
    /// One account's statements, oldest first.
    Statements(AccountId),
}

/// An answer: HTTP status and the JSON envelope body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Bytes reserved for a success body up front.
const SUCCESS_BODY_CAPACITY: usize = 512;

impl Reply {
    pub fn success<T: Serialize + ?Sized>(data: &T) -> Reply {
        // An order's answer is ~300-500 bytes: one allocation instead of a grow per doubling
        // (the reallocations were ~2 % of a busy shard's CPU).
        let mut body = Vec::with_capacity(SUCCESS_BODY_CAPACITY);
        if push_success_body(&mut body, data).is_err() {
            return Reply::http_message(
                HttpErrorCode::InternalError,
                "internal server error: the answer could not be serialized",
            );
        }
        Reply { status: 200, body }
    }

    /// `success` for data that `write` puts down as JSON text itself (the order answers).
    pub fn success_text(capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Reply {
        let mut body = Vec::with_capacity(capacity);
        let _ = push_success_body_with::<std::convert::Infallible>(&mut body, |out| {
            write(out);
            Ok(())
        });
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

    /// The `data` of a successful reply; the reply itself if it is a refusal (or, never
    /// expected, a body that is not JSON: 500).
    pub fn into_data(self) -> Result<serde_json::Value, Reply> {
        if self.status != 200 {
            return Err(self);
        }
        let mut v: serde_json::Value =
            serde_json::from_slice(&self.body).map_err(|_| Reply::http(HttpErrorCode::InternalError))?;
        Ok(v["data"].take())
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

/// Where a reply goes: the shard holding the connection, the connection, and which of the
/// connection's outstanding (pipelined) requests it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub shard: usize,
    pub conn: u64,
    pub tag: u32,
}

/// What a shard answers: an HTTP reply, or its state for `/admin/state` (merged by the
/// connection's shard).
#[derive(Debug)]
pub enum Answer {
    Reply(Reply),
    State(Box<ShardState>),
    Metrics(Box<super::metrics::ShardMetrics>),
    Follow(Box<FollowAnswer>),
    /// The answer to `Query::User`: None when there is no such user.
    User(Option<Box<UserRecord>>),
}

/// The answer to `Action::Follow { on: true }`: the account's password hash (None: it has no
/// password) and its owner (None: it has none), for the session's shard to check, and the
/// account's whole DIFF trade tree.
#[derive(Debug)]
pub struct FollowAnswer {
    pub password_hash: Option<String>,
    pub owner: Option<UserId>,
    pub snapshot: serde_json::Value,
}

/// What the service counts as it runs (the rest of a shard's metrics lives in its core).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    pub orders_accepted: u64,
    /// Trades matched on this shard's books.
    pub trades: u64,
    /// Refusals by reject code.
    pub rejects: std::collections::BTreeMap<u32, u64>,
}

/// What one step leaves to do once its records are durable: the records, the messages to
/// other shards, and the replies.
#[derive(Debug, Default)]
pub struct Staged {
    pub records: Vec<WalRecord>,
    pub sends: Vec<Outgoing>,
    pub replies: Vec<(Origin, Answer)>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.sends.is_empty() && self.replies.is_empty()
    }
}

/// The first bytes of a shard checkpoint.
const CHECKPOINT_MAGIC: [u8; 8] = *b"QAXSHCKP";
/// The checkpoint layout; any change to the serialised types (fields, their order, enum
/// variants) needs a new number.
pub const CHECKPOINT_FORMAT: u32 = 3;

/// bincode as both sides of a checkpoint use it: varint integers, little endian, trailing bytes
/// refused.
fn checkpoint_options() -> impl Options {
    bincode::DefaultOptions::new().with_varint_encoding().with_little_endian().reject_trailing_bytes()
}

/// The durable part of a [`Service`], borrowed to encode ...
#[derive(Serialize)]
struct CheckpointRef<'a> {
    engine: &'a ShardEngine,
    journal: &'a Journal,
    last_ts: TimestampNs,
    credentials: &'a FastMap<AccountId, String>,
    users: &'a Users,
    settlements: &'a SettlementLog,
}

/// ... and owned once decoded (the same fields in the same order).
#[derive(serde::Deserialize)]
struct CheckpointOwned {
    engine: ShardEngine,
    journal: Journal,
    last_ts: TimestampNs,
    credentials: FastMap<AccountId, String>,
    users: Users,
    settlements: SettlementLog,
}

/// A shard's durable state at one moment ([`Service::checkpoint_snapshot`]), owned, so that
/// another thread can encode it; what it shares with the live journal is copied there before
/// the journal changes it.
pub struct ServiceSnapshot {
    engine: ShardEngine,
    /// The journal without its finished orders (those are `finished`).
    journal: Journal,
    finished: FinishedSnapshot,
    last_ts: TimestampNs,
    credentials: FastMap<AccountId, String>,
    users: Users,
    settlements: SettlementLog,
}

impl ServiceSnapshot {
    /// The checkpoint's bytes. Layout: `CHECKPOINT_MAGIC`, `CHECKPOINT_FORMAT` (u32 LE), the
    /// length of the first payload (u64 LE), the two bincode payloads (`checkpoint_options`):
    /// the state without the journal's finished orders, then those (most of the bytes, so a
    /// second thread decodes them alongside the first), and the CRC32 of all that (u32 LE).
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let state = CheckpointRef {
            engine: &self.engine,
            journal: &self.journal,
            last_ts: self.last_ts,
            credentials: &self.credentials,
            users: &self.users,
            settlements: &self.settlements,
        };
        // Both parts into one buffer, each in one pass (encoding them on two threads was no
        // faster here: the time goes to growing and faulting in the buffer).
        let mut bytes = Vec::with_capacity(1 << 20);
        bytes.extend_from_slice(&CHECKPOINT_MAGIC);
        bytes.extend_from_slice(&CHECKPOINT_FORMAT.to_le_bytes());
        let length_at = bytes.len();
        bytes.extend_from_slice(&0u64.to_le_bytes());
        checkpoint_options().serialize_into(&mut bytes, &state).map_err(|e| format!("checkpoint: {e}"))?;
        let main_len = (bytes.len() - length_at - 8) as u64;
        bytes[length_at..length_at + 8].copy_from_slice(&main_len.to_le_bytes());
        checkpoint_options().serialize_into(&mut bytes, &self.finished).map_err(|e| format!("checkpoint: {e}"))?;
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        Ok(bytes)
    }
}

/// Which client request an order's pending reply belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Submit,
    Cancel,
    Modify,
}

/// One shard's engine and journal, with the replies waiting for other shards.
pub struct Service {
    engine: ShardEngine,
    journal: Journal,
    out: StepOutput,
    /// Requests waiting for an instrument shard's answer, per order and kind, oldest first.
    pending: FastMap<(u64, Kind), VecDeque<Origin>>,
    /// Timestamps handed to the engine never go backwards, whatever the wall clock does.
    last_ts: TimestampNs,
    counters: ServiceCounters,
    /// Quotes that changed since the committer last took them (`take_changed_quotes`), the
    /// newest per instrument: what DIFF sessions are sent once the steps are durable.
    changed_quotes: Vec<crate::domain::market_data::Quote>,
    /// Accounts' DIFF login password hashes (logged as `WalRecord::Credential`).
    credentials: FastMap<AccountId, String>,
    /// Users whose id hashes to this shard, and the owners of this shard's accounts.
    users: Users,
    /// Settled days and this shard's statements.
    settlements: SettlementLog,
    /// A settlement holds client trading (`SettleStep::Halt`); not state: a restart clears it.
    halted: bool,
    /// Accounts DIFF sessions follow, and what changed for them (`take_trade_patches`).
    watch: TradeWatch,
    /// Per instrument (config slot): what of its chart series was last published.
    chart_cursors: FastMap<u32, diff_chart::ChartCursor>,
    /// What the steps leave for the history store (off without storage).
    history: HistoryWriter,
}

impl Service {
    pub fn new(
        shard: u16,
        shards: u16,
        instruments: Vec<Instrument>,
        trading_day: u32,
        engine: EngineConfig,
        journal: JournalLimits,
    ) -> Self {
        Self {
            engine: ShardEngine::new(shard, shards, instruments, trading_day, engine),
            journal: Journal::new(journal),
            out: StepOutput::default(),
            pending: FastMap::default(),
            last_ts: 0,
            counters: ServiceCounters::default(),
            changed_quotes: Vec::new(),
            credentials: FastMap::default(),
            users: Users::default(),
            settlements: SettlementLog::default(),
            halted: false,
            watch: TradeWatch::default(),
            chart_cursors: FastMap::default(),
            history: HistoryWriter::default(),
        }
    }

    /// Turns the history writes of later steps on or off.
    pub fn set_history(&mut self, on: bool) {
        self.history.set_on(on);
        self.history.track_open_bars(&self.engine);
    }

    /// The history writes of the steps since the last call, in order (a bar once it closed;
    /// the open one is read from the engine, `history::live_bar`).
    pub fn take_history(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.history.take()
    }

    /// Hands the key buffers of applied history writes back to the writer.
    pub fn recycle_history_keys(&mut self, keys: Vec<Vec<u8>>) {
        self.history.recycle_keys(keys);
    }

    /// The DIFF chart patches (instrument slot, fan-out topic, patch) of the instruments whose quotes changed: new
    /// ticks, and the bars they changed. Call only while some session follows a chart.
    pub fn take_chart_patches(
        &mut self,
        quotes: &[crate::domain::market_data::Quote],
    ) -> Vec<(u32, String, serde_json::Value)> {
        let mut out = Vec::new();
        for quote in quotes {
            let Some(slot) = self.engine.instrument_slot(&quote.instrument_id) else { continue };
            let Some(market) = self.engine.market(slot) else { continue };
            let symbol = format!("{}.{}", quote.exchange_id.as_str(), quote.instrument_id.as_str());
            let cursor = self.chart_cursors.entry(slot).or_insert_with(|| diff_chart::ChartCursor::before_last(market));
            out.extend(cursor.patches(&symbol, market).into_iter().map(|(topic, patch)| (slot, topic, patch)));
        }
        out
    }

    /// Whether followed accounts wait for a refresh for marks alone (held back to one per
    /// `diff_trade::MARK_REFRESH_NS`).
    pub fn marks_waiting(&self) -> bool {
        self.watch.marks_waiting()
    }

    /// One DIFF trade patch per followed account the steps since the last call changed, with
    /// the shards whose sessions follow it.
    pub fn take_trade_patches(
        &mut self,
        now_ns: TimestampNs,
    ) -> Vec<(AccountId, Vec<usize>, crate::diff::feed::SharedPatch)> {
        let (changed, marked) = self.watch.take(now_ns);
        let mut out = Vec::with_capacity(changed.len());
        for (account_id, shards, changes) in changed {
            let Some(slot) = self.engine.account_slot(&account_id) else { continue };
            let engine = &self.engine;
            let ledger_account = engine.ledger().account(slot);
            let held_marked = marked.iter().any(|&i| ledger_account.position(i).is_some());
            if changes.is_empty() && !held_marked {
                continue;
            }
            // Positions that changed (a closed one as zeros, as the engine reports it) and those
            // held whose mark moved, at the marks of now; only those are computed.
            let instruments = engine.instruments();
            let positions: Vec<PositionSnapshot> = (0..instruments.len() as u32)
                .filter_map(|i| {
                    let inst = &instruments[i as usize];
                    let mark = engine.marks()[i as usize];
                    match ledger_account.position(i) {
                        Some(p) if marked.contains(&i) || changes.positions.contains(&inst.instrument_id) => {
                            Some(PositionSnapshot::new(account_id, p, inst, mark))
                        }
                        None if changes.positions.contains(&inst.instrument_id) => {
                            Some(PositionSnapshot::new(account_id, &Position::new(i), inst, mark))
                        }
                        _ => None,
                    }
                })
                .collect();
            let snapshot = engine.ledger().snapshot(slot, engine.instruments(), engine.marks());
            let patch = diff_trade::patch(&account_id, &changes, &self.journal, Some(&snapshot), &positions);
            out.push((account_id, shards, patch));
        }
        out
    }

    /// The quotes changed by the steps since the last call, one (the newest) per instrument.
    pub fn take_changed_quotes(&mut self) -> Vec<crate::domain::market_data::Quote> {
        std::mem::take(&mut self.changed_quotes)
    }

    pub fn counters(&self) -> &ServiceCounters {
        &self.counters
    }

    /// Counts from zero (after recovery replayed the log: the counters are this process's).
    pub fn reset_counters(&mut self) {
        self.counters = ServiceCounters::default();
    }

    pub fn engine(&self) -> &ShardEngine {
        &self.engine
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// A timestamp at or after `now_ns`, and after every one before: each client action of a
    /// shard has its own (the history store keys account changes by it).
    fn stamp(&mut self, now_ns: TimestampNs) -> TimestampNs {
        self.last_ts = now_ns.max(self.last_ts.saturating_add(1));
        self.last_ts
    }

    fn journal_step(&mut self) {
        for event in &self.out.events {
            self.journal.apply(event);
            self.history.observe(event, &self.journal);
            self.watch.observe(event);
            match event {
                Event::OrderAccepted { .. } => self.counters.orders_accepted += 1,
                Event::MarketTrade { instrument_id, .. } => {
                    self.counters.trades += 1;
                    if let Some(slot) = self.engine.instrument_slot(instrument_id) {
                        self.watch.marked(slot);
                    }
                }
                Event::QuoteUpdated { quote, .. } => {
                    match self.changed_quotes.iter_mut().find(|q| q.instrument_id == quote.instrument_id) {
                        Some(kept) => *kept = *quote,
                        None => self.changed_quotes.push(*quote),
                    }
                }
                Event::OrderRejected { reason, .. } | Event::CommandRejected { reason, .. } => {
                    *self.counters.rejects.entry(reason.reason.code()).or_default() += 1
                }
                _ => {}
            }
        }
        self.history.end_step(&self.out.events, &self.engine);
    }

    /// Whether steps report snapshot events (recovery turns them off while it replays).
    pub fn set_report_snapshots(&mut self, on: bool) {
        self.engine.set_report_snapshots(on);
    }

    /// Re-runs one logged input (recovery); returns the messages it sent.
    pub fn replay(&mut self, record: &WalRecord) -> Result<Vec<Outgoing>, String> {
        self.out.clear();
        match record {
            WalRecord::Command(command) => {
                self.last_ts = self.last_ts.max(command.ts());
                self.engine.execute(command, &mut self.out);
            }
            WalRecord::Peer { ts, from, seq, msg } => {
                self.last_ts = self.last_ts.max(*ts);
                match self.engine.deliver(*ts, *from, *seq, msg, &mut self.out) {
                    Delivery::Applied => {}
                    Delivery::Duplicate => return Err(format!("message {seq} from shard {from} is logged twice")),
                    Delivery::Refused(why) => return Err(why),
                }
            }
            WalRecord::Credential { .. } | WalRecord::User { .. } | WalRecord::Owner { .. } => {
                self.replay_beside_engine(record);
                return Ok(Vec::new());
            }
            WalRecord::Settlement { ts, apply, cut } => {
                self.last_ts = self.last_ts.max(*ts);
                self.settlement_step(*ts, *apply, cut)?;
            }
            WalRecord::InstrumentStatus { ts, instrument, status } => {
                self.last_ts = self.last_ts.max(*ts);
                let out = &mut self.out;
                self.engine
                    .set_instrument_status(*ts, *instrument, *status, out)
                    .map_err(|e| e.message().to_string())?;
            }
            WalRecord::InstrumentUpdate { ts, instrument, update } => {
                self.last_ts = self.last_ts.max(*ts);
                let out = &mut self.out;
                self.engine.update_instrument(*ts, *instrument, update, out).map_err(|e| e.message().to_string())?;
            }
            WalRecord::InstrumentCreate { ts, instrument } => {
                self.last_ts = self.last_ts.max(*ts);
                self.engine.add_instrument(instrument.clone()).map_err(|e| e.message().to_string())?;
                return Ok(Vec::new());
            }
            WalRecord::Genesis { .. } => return Err("a second genesis record".into()),
        }
        self.journal_step();
        Ok(std::mem::take(&mut self.out.sends))
    }

    /// Re-runs one logged input (recovery) like [`Service::replay`], but leaves the journal to
    /// the caller: the step's events are appended to `events`, to be applied in the same order
    /// to a journal elsewhere (recovery folds them on another thread) and handed back with
    /// [`Service::replace_journal`]. Counters are not kept (recovery resets them). Returns the
    /// messages it sent.
    pub fn replay_engine(&mut self, record: &WalRecord, events: &mut Vec<Event>) -> Result<Vec<Outgoing>, String> {
        self.out.sends.clear();
        self.out.completions.clear();
        // The engine pushes straight into the caller's batch: no copy of the events.
        std::mem::swap(&mut self.out.events, events);
        let result = match record {
            WalRecord::Command(command) => {
                self.last_ts = self.last_ts.max(command.ts());
                self.engine.execute(command, &mut self.out);
                Ok(())
            }
            WalRecord::Peer { ts, from, seq, msg } => {
                self.last_ts = self.last_ts.max(*ts);
                match self.engine.deliver(*ts, *from, *seq, msg, &mut self.out) {
                    Delivery::Applied => Ok(()),
                    Delivery::Duplicate => Err(format!("message {seq} from shard {from} is logged twice")),
                    Delivery::Refused(why) => Err(why),
                }
            }
            WalRecord::Credential { .. } | WalRecord::User { .. } | WalRecord::Owner { .. } => {
                self.replay_beside_engine(record);
                Ok(())
            }
            WalRecord::Settlement { ts, apply, cut } => {
                self.last_ts = self.last_ts.max(*ts);
                self.settlement_step(*ts, *apply, cut)
            }
            WalRecord::InstrumentStatus { ts, instrument, status } => {
                self.last_ts = self.last_ts.max(*ts);
                let out = &mut self.out;
                self.engine.set_instrument_status(*ts, *instrument, *status, out).map_err(|e| e.message().to_string())
            }
            WalRecord::InstrumentUpdate { ts, instrument, update } => {
                self.last_ts = self.last_ts.max(*ts);
                let out = &mut self.out;
                self.engine.update_instrument(*ts, *instrument, update, out).map_err(|e| e.message().to_string())
            }
            WalRecord::InstrumentCreate { ts, instrument } => {
                self.last_ts = self.last_ts.max(*ts);
                self.engine.add_instrument(instrument.clone()).map(|_| ()).map_err(|e| e.message().to_string())
            }
            WalRecord::Genesis { .. } => Err("a second genesis record".into()),
        };
        std::mem::swap(&mut self.out.events, events);
        result.map(|()| std::mem::take(&mut self.out.sends))
    }

    /// Replays a record of what the server keeps beside the engine (passwords, users, owners).
    fn replay_beside_engine(&mut self, record: &WalRecord) {
        match record {
            WalRecord::Credential { account_id, password_hash } => {
                self.credentials.insert(*account_id, password_hash.clone());
            }
            WalRecord::User { ts, user_id, password_hash, admin } => {
                self.last_ts = self.last_ts.max(*ts);
                let record = UserRecord { password_hash: password_hash.clone(), admin: *admin, created_ns: *ts };
                self.users.register(*user_id, record);
            }
            WalRecord::Owner { account_id, user_id } => self.users.bind(*account_id, *user_id),
            WalRecord::Genesis { .. }
            | WalRecord::Command(_)
            | WalRecord::Peer { .. }
            | WalRecord::Settlement { .. }
            | WalRecord::InstrumentStatus { .. }
            | WalRecord::InstrumentUpdate { .. }
            | WalRecord::InstrumentCreate { .. } => {}
        }
    }

    /// Runs settlement step 1 (`apply` false) or 2 at `cut` into `self.out` (the caller
    /// journals the events). Refuses a cut that does not fit, changing nothing.
    fn settlement_step(&mut self, ts: TimestampNs, apply: bool, cut: &SettleCut) -> Result<(), String> {
        if apply {
            // `out.events` may hold earlier records' events (recovery batches them): only this
            // step's statements are recorded.
            let from = self.out.events.len();
            self.engine.settle_cut(ts, cut, &mut self.out)?;
            for event in &self.out.events[from..] {
                if let Event::Settlement { statement, .. } = event {
                    self.settlements.statement(statement.clone());
                }
            }
            self.settlements.cut(cut);
        } else {
            self.engine.prepare_settlement(ts, cut, &mut self.out)?;
        }
        Ok(())
    }

    /// Runs a settlement step now, logging it; the messages it sends (step 1's cancels) go to
    /// `staged`. Also what recovery uses to finish a cut other shards ran before a crash.
    /// Returns the accounts step 2 flagged for forced liquidation.
    pub fn run_settlement(
        &mut self,
        apply: bool,
        cut: &SettleCut,
        now_ns: TimestampNs,
        staged: &mut Staged,
    ) -> Result<Vec<AccountId>, String> {
        let ts = self.stamp(now_ns);
        self.out.clear();
        self.settlement_step(ts, apply, cut)?;
        let flagged = self
            .out
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ForcedLiquidationRequired { account_id, .. } => Some(*account_id),
                _ => None,
            })
            .collect();
        self.journal_step();
        staged.records.push(WalRecord::Settlement { ts, apply, cut: cut.clone() });
        staged.sends.append(&mut self.out.sends);
        self.complete(staged);
        Ok(flagged)
    }

    /// Puts `journal` in place of this service's journal (recovery: the one it folded from
    /// [`Service::replay_engine`]'s events); returns the old one.
    pub fn replace_journal(&mut self, journal: Journal) -> Journal {
        std::mem::replace(&mut self.journal, journal)
    }

    /// Takes the journal out, leaving an empty one with the same limits (recovery from a
    /// checkpoint folds the replayed events into the checkpoint's journal on another thread,
    /// then puts it back with [`Service::replace_journal`]).
    pub fn take_journal(&mut self) -> Journal {
        let limits = self.journal.limits();
        std::mem::replace(&mut self.journal, Journal::new(limits))
    }

    /// The shard's durable state as a checkpoint: what replaying its WAL up to now rebuilds
    /// (engine, journal, the last timestamp handed out, the accounts' password hashes). The
    /// rest (replies waiting for other shards, DIFF followers and chart cursors, counters,
    /// quotes and history not yet taken, step scratch) belongs to this process's connections
    /// and starts empty after a restart. Take it between steps, once the committer has taken
    /// what the steps left (`take_changed_quotes`, `take_history`).
    ///
    /// This is the shard's only pause for a checkpoint: the engine is copied, the journal's
    /// bulk is shared ([`Journal::snapshot`]), and [`ServiceSnapshot::encode`] runs on
    /// another thread while the shard goes on.
    pub fn checkpoint_snapshot(&self) -> ServiceSnapshot {
        let (journal, finished) = self.journal.snapshot();
        ServiceSnapshot {
            engine: self.engine.clone(),
            journal,
            finished,
            last_ts: self.last_ts,
            credentials: self.credentials.clone(),
            users: self.users.clone(),
            settlements: self.settlements.clone(),
        }
    }

    /// [`Service::checkpoint_snapshot`] encoded at once (tests, benches, and what a restart
    /// reads: [`Service::decode_checkpoint`]).
    pub fn encode_checkpoint(&self) -> Result<Vec<u8>, String> {
        self.checkpoint_snapshot().encode()
    }

    /// A service from [`Service::encode_checkpoint`]'s bytes, in the state it was taken in;
    /// everything else starts as in [`Service::new`] (history writes off, snapshot events
    /// on, no followers, counters at zero). The journal keeps to `limits` (the config's, as
    /// `new` takes them) from now on. Refuses (never panics on) bytes that are not a whole,
    /// intact checkpoint of this format; bytes with the right checksum are trusted as written
    /// by `encode_checkpoint` (only their shape is checked, not every invariant).
    ///
    /// The shard, shard count, instruments, trading day and engine sizes are the checkpoint's:
    /// the caller checks them against its config (`engine()`).
    pub fn decode_checkpoint(bytes: &[u8], limits: JournalLimits) -> Result<Service, String> {
        let header = CHECKPOINT_MAGIC.len() + 4 + 8;
        if bytes.len() < header + 4 {
            return Err(format!("checkpoint of {} bytes: too short", bytes.len()));
        }
        let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let body = &bytes[..bytes.len() - 4];
        if body[..CHECKPOINT_MAGIC.len()] != CHECKPOINT_MAGIC {
            return Err("not a shard checkpoint".into());
        }
        let format = word(CHECKPOINT_MAGIC.len());
        if format != CHECKPOINT_FORMAT {
            return Err(format!("checkpoint format {format}, this server reads {CHECKPOINT_FORMAT}"));
        }
        if crc32fast::hash(body) != word(body.len()) {
            return Err("checkpoint checksum mismatch: damaged or cut short".into());
        }
        let mut main_len = [0u8; 8];
        main_len.copy_from_slice(&body[header - 8..header]);
        let payload = &body[header..];
        let main_len = u64::from_le_bytes(main_len);
        if main_len > payload.len() as u64 {
            return Err(format!("checkpoint: a first part of {main_len} bytes in {} bytes", payload.len()));
        }
        let (main, finished) = payload.split_at(main_len as usize);
        let (state, finished) = std::thread::scope(|scope| {
            let part = scope.spawn(|| {
                checkpoint_options().with_limit(finished.len() as u64).deserialize::<FinishedOrders>(finished)
            });
            let state = checkpoint_options().with_limit(main.len() as u64).deserialize::<CheckpointOwned>(main);
            (state, part.join())
        });
        let state = state.map_err(|e| format!("checkpoint: {e}"))?;
        let finished = finished
            .map_err(|_| "checkpoint: the decoding thread panicked".to_string())?
            .map_err(|e| format!("checkpoint: {e}"))?;
        let CheckpointOwned { mut engine, mut journal, last_ts, credentials, users, settlements } = state;
        journal.set_finished_part(finished);
        engine.finish_decode().map_err(|e| format!("checkpoint: {e}"))?;
        journal.check_decoded().map_err(|e| format!("checkpoint: {e}"))?;
        journal.set_limits(limits);
        Ok(Self {
            engine,
            journal,
            out: StepOutput::default(),
            pending: FastMap::default(),
            last_ts,
            counters: ServiceCounters::default(),
            changed_quotes: Vec::new(),
            credentials,
            users,
            settlements,
            halted: false,
            watch: TradeWatch::default(),
            chart_cursors: FastMap::default(),
            history: HistoryWriter::default(),
        })
    }

    /// Runs `command` now; pushes it to `staged` when it changed state or sent something.
    fn run(&mut self, command: Command, staged: &mut Staged) -> Outcome {
        self.out.clear();
        let outcome = self.engine.execute(&command, &mut self.out);
        self.journal_step();
        if !matches!(outcome, Outcome::Done(Err(_))) {
            staged.records.push(WalRecord::Command(command));
        }
        staged.sends.append(&mut self.out.sends);
        outcome
    }

    /// Answers one client action at `now_ns` for `origin`. The reply goes to `staged` now, or
    /// later when the instrument shard's answer is delivered.
    pub fn handle(&mut self, action: Action, now_ns: TimestampNs, origin: Origin, staged: &mut Staged) {
        if self.halted
            && matches!(
                action,
                Action::OpenAccount { .. }
                    | Action::Transfer { .. }
                    | Action::Submit(_)
                    | Action::Cancel { .. }
                    | Action::Modify { .. }
                    | Action::SetFrozen { .. }
                    | Action::SetSettlementPrice { .. }
                    | Action::SetInstrumentStatus { .. }
                    | Action::UpdateInstrument { .. }
                    | Action::CreateInstrument(_)
            )
        {
            return staged.replies.push((origin, Answer::Reply(Reply::http(HttpErrorCode::SettlementRunning))));
        }
        if let Action::Settle(step) = action {
            let reply = self.settle(step, now_ns, staged);
            return staged.replies.push((origin, Answer::Reply(reply)));
        }
        let ts = self.stamp(now_ns);
        let reply = match action {
            Action::OpenAccount { account_id, init_cash, password, owner } => {
                let password_hash = match password {
                    None => None,
                    Some(Password::Hashed(hash)) => Some(hash),
                    // The connection's shard hashes every password before sending it here.
                    Some(Password::Clear(_)) => {
                        let reply = Reply::http_message(
                            HttpErrorCode::InternalError,
                            "internal server error: a password arrived unhashed",
                        );
                        return staged.replies.push((origin, Answer::Reply(reply)));
                    }
                };
                let mut result = self.run(Command::OpenAccount { ts, account_id }, staged);
                if let (Outcome::Done(Ok(())), Some(user_id)) = (result, owner) {
                    staged.records.push(WalRecord::Owner { account_id, user_id });
                    self.users.bind(account_id, user_id);
                }
                if let (Outcome::Done(Ok(())), Some(password_hash)) = (result, password_hash) {
                    staged.records.push(WalRecord::Credential { account_id, password_hash: password_hash.clone() });
                    self.credentials.insert(account_id, password_hash);
                }
                if let (Outcome::Done(Ok(())), Some(amount)) = (result, init_cash) {
                    result = self.run(Command::Deposit { ts, account_id, amount }, staged);
                }
                match result {
                    Outcome::Done(Err(code)) => Reply::reject(code),
                    _ => self.account_reply(&account_id),
                }
            }
            Action::Register { user_id, password, admin } => {
                let Password::Hashed(password_hash) = password else {
                    let reply = Reply::http_message(
                        HttpErrorCode::InternalError,
                        "internal server error: a password arrived unhashed",
                    );
                    return staged.replies.push((origin, Answer::Reply(reply)));
                };
                if self.users.get(&user_id).is_some() {
                    Reply::http(HttpErrorCode::UserExists)
                } else {
                    let record = UserRecord { password_hash: password_hash.clone(), admin, created_ns: ts };
                    self.users.register(user_id, record);
                    staged.records.push(WalRecord::User { ts, user_id, password_hash, admin });
                    Reply::success(&UserView { user_id: user_id.as_str(), admin, created_ns: ts })
                }
            }
            Action::AsUser { user, action } => {
                // The core checks first (`ShardCore::submit`); this path serves replays of the
                // service alone (tests), with the same rule.
                match self.authorize(&user, &action) {
                    Ok(()) => return self.handle(*action, now_ns, origin, staged),
                    Err(reply) => reply,
                }
            }
            Action::Query(Query::User(user_id)) => {
                let answer = Answer::User(self.users.get(&user_id).cloned().map(Box::new));
                return staged.replies.push((origin, answer));
            }
            Action::Follow { account_id, on: true } => match self.engine.account_slot(&account_id) {
                None => Reply::reject(RejectCode::AccountNotFound),
                Some(slot) => {
                    self.watch.follow(account_id, origin.shard);
                    let engine = &self.engine;
                    let account = engine.ledger().snapshot(slot, engine.instruments(), engine.marks());
                    let positions = self.positions(slot, account_id);
                    let snapshot = diff_trade::snapshot(&account, &positions, &self.journal, engine.trading_day());
                    let password_hash = self.credentials.get(&account_id).cloned();
                    let owner = self.users.owner(&account_id).copied();
                    let answer = Answer::Follow(Box::new(FollowAnswer { password_hash, owner, snapshot }));
                    return staged.replies.push((origin, answer));
                }
            },
            Action::Follow { account_id, on: false } => {
                self.watch.unfollow(&account_id, origin.shard);
                Reply::success(&"unfollowed")
            }
            Action::Transfer { account_id, amount, deposit } => {
                let command = if deposit {
                    Command::Deposit { ts, account_id, amount }
                } else {
                    Command::Withdraw { ts, account_id, amount }
                };
                match self.run(command, staged) {
                    Outcome::Done(Err(code)) => Reply::reject(code),
                    _ => self.account_reply(&account_id),
                }
            }
            Action::SetSettlementPrice { instrument_id, price } => {
                match self.run(Command::SetSettlementPrice { ts, instrument_id, price }, staged) {
                    Outcome::Done(Err(code)) => Reply::reject(code),
                    _ => Reply::success(&serde_json::json!({
                        "instrument_id": instrument_id.as_str(),
                        "settlement_price": price_to_f64(price),
                    })),
                }
            }
            // Answered above.
            Action::Settle(_) => Reply::http(HttpErrorCode::InternalError),
            Action::CreateInstrument(instrument) => match self.engine.add_instrument((*instrument).clone()) {
                Ok(slot) => {
                    staged.records.push(WalRecord::InstrumentCreate { ts, instrument: *instrument });
                    Reply::success(&InstrumentView::from(&self.engine.instruments()[slot as usize]))
                }
                Err(code) => Reply::reject(code),
            },
            Action::UpdateInstrument { instrument_id, update } => {
                self.out.clear();
                let result = self.instrument(&instrument_id).and_then(|slot| {
                    let out = &mut self.out;
                    self.engine.update_instrument(ts, slot, &update, out).map(|()| slot).map_err(Reply::reject)
                });
                match result {
                    Ok(slot) => {
                        self.journal_step();
                        staged.records.push(WalRecord::InstrumentUpdate { ts, instrument: slot, update });
                        Reply::success(&InstrumentView::from(&self.engine.instruments()[slot as usize]))
                    }
                    Err(reply) => reply,
                }
            }
            Action::SetInstrumentStatus { instrument_id, status } => {
                self.out.clear();
                let result = self.instrument(&instrument_id).and_then(|slot| {
                    let out = &mut self.out;
                    self.engine.set_instrument_status(ts, slot, status, out).map(|()| slot).map_err(Reply::reject)
                });
                match result {
                    Ok(slot) => {
                        // The open of an auction trades: its fills go to the account shards.
                        self.journal_step();
                        staged.sends.append(&mut self.out.sends);
                        self.complete(staged);
                        staged.records.push(WalRecord::InstrumentStatus { ts, instrument: slot, status });
                        Reply::success(&InstrumentView::from(&self.engine.instruments()[slot as usize]))
                    }
                    Err(reply) => reply,
                }
            }
            Action::SetFrozen { account_id, frozen, mode } => {
                match self.run(Command::SetAccountFrozen { ts, account_id, frozen, mode }, staged) {
                    Outcome::Done(Err(code)) => Reply::reject(code),
                    _ => self.account_reply(&account_id),
                }
            }
            Action::Submit(order) => {
                let outcome = self.run(Command::InsertOrder { ts, order }, staged);
                return self.wait_or_reply(outcome, Kind::Submit, origin, staged);
            }
            Action::Cancel { account_id, order_id, client_order_id } => {
                let outcome = self.run(Command::CancelOrder { ts, account_id, order_id, client_order_id }, staged);
                return self.wait_or_reply(outcome, Kind::Cancel, origin, staged);
            }
            Action::Modify { account_id, order_id, client_order_id, new_price, new_volume } => {
                let command = Command::ModifyOrder { ts, account_id, order_id, client_order_id, new_price, new_volume };
                let outcome = self.run(command, staged);
                return self.wait_or_reply(outcome, Kind::Modify, origin, staged);
            }
            Action::Query(Query::ShardState) => {
                staged.replies.push((origin, Answer::State(Box::new(self.engine.state()))));
                return;
            }
            Action::Query(query) => self.query(query),
        };
        staged.replies.push((origin, Answer::Reply(reply)));
    }

    /// One settlement step of the coordinator's (`SettleStep`).
    fn settle(&mut self, step: SettleStep, now_ns: TimestampNs, staged: &mut Staged) -> Reply {
        let engine = &self.engine;
        match step {
            SettleStep::Halt if self.halted => Reply::http(HttpErrorCode::SettlementRunning),
            SettleStep::Halt | SettleStep::Resume => {
                self.halted = step == SettleStep::Halt;
                Reply::success(&serde_json::json!({"trading_day": engine.trading_day(), "halted": self.halted}))
            }
            SettleStep::Counts => Reply::success(&serde_json::json!({
                "trading_day": engine.trading_day(),
                "sent": engine.sent(),
                "received": engine.received(),
            })),
            SettleStep::Inputs => Reply::success(&engine.settlement_inputs()),
            SettleStep::Prepare(cut) | SettleStep::Apply(cut) if !self.halted => {
                let _ = cut;
                Reply::http_message(
                    HttpErrorCode::InternalError,
                    "internal server error: settlement step while trading",
                )
            }
            SettleStep::Prepare(cut) => self.settle_reply(false, &cut, now_ns, staged),
            SettleStep::Apply(cut) => self.settle_reply(true, &cut, now_ns, staged),
        }
    }

    fn settle_reply(&mut self, apply: bool, cut: &SettleCut, now_ns: TimestampNs, staged: &mut Staged) -> Reply {
        match self.run_settlement(apply, cut, now_ns, staged) {
            Ok(flagged) => Reply::success(&serde_json::json!({
                "trading_day": self.engine.trading_day(),
                "statements": self.settlements.get(cut.settled_day).map_or(0, |d| d.statements.len()),
                "flagged": flagged.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            })),
            Err(why) => Reply::http_message(HttpErrorCode::InternalError, &format!("internal server error: {why}")),
        }
    }

    /// Whether `user` (not an admin) may run `action`: Ok when every account it names is the
    /// user's; otherwise the refusal a missing account or order gets, so another user's
    /// accounts and orders look exactly like ones that do not exist.
    pub fn authorize(&self, user: &UserId, action: &Action) -> Result<(), Reply> {
        let account = |id: &AccountId| {
            if self.users.owns(user, id) {
                Ok(())
            } else {
                Err(Reply::reject(RejectCode::AccountNotFound))
            }
        };
        match action {
            Action::Transfer { account_id, .. }
            | Action::Cancel { account_id, .. }
            | Action::Modify { account_id, .. }
            | Action::Follow { account_id, .. } => account(account_id),
            Action::Submit(order) => account(&order.account_id),
            Action::Query(query) => match query {
                Query::Account(id)
                | Query::UserOrders(id)
                | Query::Positions(id)
                | Query::UserTrades(id)
                | Query::Statements(id) => account(id),
                Query::History { series, .. } => match series {
                    crate::server::history::HistorySeries::Orders(id)
                    | crate::server::history::HistorySeries::Trades(id)
                    | crate::server::history::HistorySeries::AccountChanges(id) => account(id),
                    _ => Ok(()),
                },
                Query::Order(order_id) => match self.journal.order(*order_id) {
                    Some(order) if self.users.owns(user, &order.account_id) => Ok(()),
                    _ => Err(Reply::reject(RejectCode::OrderNotFound)),
                },
                Query::OwnedAccounts(owner) if owner == user => Ok(()),
                Query::Instruments
                | Query::OrderBook { .. }
                | Query::Tick(_)
                | Query::MarketTrades { .. }
                | Query::Kline { .. }
                | Query::Chart { .. } => Ok(()),
                _ => Err(Reply::http(HttpErrorCode::AdminOnly)),
            },
            // Opening and registering are checked by the connection's shard (the owner is the
            // token's user); nothing else is a user's to send.
            Action::OpenAccount { owner, .. } if owner.as_ref() == Some(user) => Ok(()),
            _ => Err(Reply::http(HttpErrorCode::AdminOnly)),
        }
    }

    /// Registers the reply of an order command that waits for another shard, then answers
    /// whatever this step completed (all of it, when the instrument lives on this shard).
    fn wait_or_reply(&mut self, outcome: Outcome, kind: Kind, origin: Origin, staged: &mut Staged) {
        match outcome {
            Outcome::Done(result) => {
                let reply = match result {
                    Ok(()) => Reply::http_message(HttpErrorCode::InternalError, "internal server error: no order"),
                    Err(code) => Reply::reject(code),
                };
                staged.replies.push((origin, Answer::Reply(reply)));
            }
            Outcome::Pending(order_id) => {
                self.pending.entry((order_id, kind)).or_default().push_back(origin);
                self.complete(staged);
            }
        }
    }

    /// Handles message `seq` from shard `from` at `now_ns`.
    pub fn deliver(&mut self, from: u16, seq: u64, msg: PeerMsg, now_ns: TimestampNs, staged: &mut Staged) {
        let ts = self.stamp(now_ns);
        self.out.clear();
        match self.engine.deliver(ts, from, seq, &msg, &mut self.out) {
            Delivery::Applied => {
                if let PeerMsg::Mark { instrument, .. } = msg {
                    self.watch.marked(instrument);
                }
            }
            // Redelivered after a restart and already handled.
            Delivery::Duplicate => return,
            // Cannot come from this venue's shards; logged, and nothing changed.
            Delivery::Refused(why) => {
                tracing::error!("shard {}: refused a message from shard {from}: {why}", self.engine.shard());
                return;
            }
        }
        self.journal_step();
        staged.records.push(WalRecord::Peer { ts, from, seq, msg });
        staged.sends.append(&mut self.out.sends);
        self.complete(staged);
    }

    /// Answers the requests the last step completed.
    fn complete(&mut self, staged: &mut Staged) {
        let completions = std::mem::take(&mut self.out.completions);
        for completion in &completions {
            let (kind, result) = match *completion {
                Completion::Submit { result, .. } => (Kind::Submit, result),
                Completion::Cancel { result, .. } => (Kind::Cancel, result),
                Completion::Modify { result, .. } => (Kind::Modify, result),
            };
            let order_id = completion.order_id();
            let Some(origin) = self.pending.get_mut(&(order_id, kind)).and_then(VecDeque::pop_front) else {
                // Its client is gone (a request from before a restart).
                continue;
            };
            if self.pending.get(&(order_id, kind)).is_some_and(VecDeque::is_empty) {
                self.pending.remove(&(order_id, kind));
            }
            let reply = match result {
                Err(code) => Reply::reject(code),
                Ok(()) => {
                    let traded = if kind == Kind::Cancel {
                        0
                    } else {
                        self.out
                            .events
                            .iter()
                            .filter(|e| matches!(e, Event::Fill { side, .. } if side.order_id == order_id))
                            .count()
                    };
                    self.order_reply(order_id, traded)
                }
            };
            staged.replies.push((origin, Answer::Reply(reply)));
        }
        self.out.completions = completions;
        self.out.completions.clear();
    }

    /// The account's open positions, in instrument config order.
    fn positions(&self, slot: u32, id: AccountId) -> Vec<PositionSnapshot> {
        let engine = &self.engine;
        let account = engine.ledger().account(slot);
        (0..engine.instruments().len() as u32)
            .filter_map(|i| {
                let p = account.position(i)?;
                let mark = engine.marks()[i as usize];
                Some(PositionSnapshot::new(id, p, &engine.instruments()[i as usize], mark))
            })
            .collect()
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

    /// The order as the journal has it now, with its account's last `traded` trades (the ones
    /// this request made).
    fn order_reply(&self, order_id: u64, traded: usize) -> Reply {
        let Some(order) = self.journal.order(order_id) else {
            return Reply::http_message(
                HttpErrorCode::InternalError,
                "internal server error: the order is missing from the journal",
            );
        };
        let trades: Vec<_> = self.journal.recent_account_trades(&order.account_id, traded).collect();
        // ~530 bytes of envelope and order, ~330 per trade: one allocation.
        let capacity = 600 + 360 * trades.len();
        Reply::success_text(capacity, |out| super::order_json::push_order_reply(out, order, &trades))
    }

    fn instrument(&self, id: &InstrumentId) -> Result<u32, Reply> {
        self.engine.instrument_slot(id).ok_or_else(|| Reply::reject(RejectCode::InstrumentNotFound))
    }

    /// The bare id of an instrument this shard owns (`cu2501` or `SHFE.cu2501`), or the
    /// refusal a query about it gets.
    pub fn owned_instrument(&self, id: &InstrumentId) -> Result<InstrumentId, Reply> {
        let slot = self.instrument(id)?;
        self.engine.market(slot).ok_or_else(Self::not_here)?;
        Ok(self.engine.instruments()[slot as usize].instrument_id)
    }

    /// Ok when this shard holds the account, else the refusal a query about it gets.
    pub fn owned_account(&self, id: &AccountId) -> Result<(), Reply> {
        self.account(id).map(|_| ())
    }

    fn account(&self, id: &AccountId) -> Result<u32, Reply> {
        self.engine.account_slot(id).ok_or_else(|| Reply::reject(RejectCode::AccountNotFound))
    }

    fn query(&self, query: Query) -> Reply {
        match self.try_query(query) {
            Ok(reply) | Err(reply) => reply,
        }
    }

    fn not_here() -> Reply {
        Reply::http_message(HttpErrorCode::InternalError, "internal server error: asked the wrong shard")
    }

    fn try_query(&self, query: Query) -> Result<Reply, Reply> {
        let engine = &self.engine;
        Ok(match query {
            Query::Account(id) => {
                self.account(&id)?;
                self.account_reply(&id)
            }
            Query::SettledDays => Reply::success(
                &self
                    .settlements
                    .days()
                    .map(|(day, d)| serde_json::json!({"trading_day": day, "statements": d.statements.len(), "cut": d.cut}))
                    .collect::<Vec<_>>(),
            ),
            Query::SettledDay(day) => {
                Reply::success(&self.settlements.get(day).map_or(&[][..], |d| d.statements.as_slice()))
            }
            Query::Statements(id) => {
                self.account(&id)?;
                Reply::success(&self.settlements.of_account(&id).collect::<Vec<_>>())
            }
            Query::OwnedAccounts(user) => {
                let snapshots: Vec<_> = self
                    .users
                    .accounts_of(&user)
                    .into_iter()
                    .filter_map(|id| engine.account_slot(&id))
                    .map(|slot| engine.ledger().snapshot(slot, engine.instruments(), engine.marks()))
                    .collect();
                Reply::success(&snapshots)
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
                Reply::success(&self.positions(slot, id))
            }
            Query::Instruments => {
                Reply::success(&engine.instruments().iter().map(InstrumentView::from).collect::<Vec<_>>())
            }
            Query::OrderBook { instrument_id, depth } => {
                let slot = self.instrument(&instrument_id)?;
                let inst = &engine.instruments()[slot as usize];
                let book = engine.book(slot).ok_or_else(Self::not_here)?;
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
                Reply::success(engine.market(slot).ok_or_else(Self::not_here)?.quote())
            }
            Query::MarketTrades { instrument_id, limit } => {
                let slot = self.instrument(&instrument_id)?;
                let bare = engine.instruments()[slot as usize].instrument_id;
                Reply::success(&self.journal.market_trades(&bare, limit as usize).collect::<Vec<_>>())
            }
            Query::Kline { instrument_id, period_index, count } => {
                let slot = self.instrument(&instrument_id)?;
                let market = engine.market(slot).ok_or_else(Self::not_here)?;
                let Some(series) = market.klines(period_index) else {
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
            Query::Chart { instrument_id, duration_ns, count } => {
                let slot = self.instrument(&instrument_id)?;
                let market = engine.market(slot).ok_or_else(Self::not_here)?;
                let (from_id, series) = if duration_ns == 0 {
                    diff_chart::tick_history(market, i64::from(count))
                } else {
                    diff_chart::kline_history(market, duration_ns, i64::from(count)).ok_or_else(|| {
                        Reply::http_message(HttpErrorCode::InvalidQueryParameter, "invalid query parameter: duration")
                    })?
                };
                Reply::success(&serde_json::json!({"from_id": from_id, "series": series}))
            }
            Query::ShardState => Reply::success(&engine.state()),
            // Answered by the shard's core, which holds the metrics.
            Query::ShardMetrics
            | Query::ResetLatency
            | Query::History { .. }
            | Query::StorageStats
            | Query::TriggerCompaction
            | Query::Checkpoint
            | Query::User(_) => Reply::http(HttpErrorCode::InternalError),
        })
    }
}

/// A user as `POST /api/auth/register` answers it (never the password or its hash).
#[derive(Serialize)]
struct UserView<'a> {
    user_id: &'a str,
    admin: bool,
    created_ns: TimestampNs,
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

/// Every shard's state merged: what `/admin/state` shows, with the invariants over all shards.
#[derive(Serialize)]
struct ClusterView {
    invariants: String,
    state: ClusterState,
}

#[derive(Serialize)]
struct ClusterState {
    trading_day: u32,
    shards: usize,
    /// In config order.
    instruments: Vec<crate::domain::engine::InstrumentState>,
    /// By account id.
    accounts: Vec<crate::domain::engine::AccountState>,
    /// By order id.
    live_orders: Vec<crate::domain::ledger::order::LiveOrder>,
    books: Vec<crate::domain::engine::BookDump>,
    quotes: Vec<crate::domain::market_data::Quote>,
    /// Per shard: the last message sequence sent to and received from each shard.
    messages: Vec<MessageCounts>,
}

#[derive(Serialize)]
struct MessageCounts {
    shard: u16,
    sent: Vec<u64>,
    received: Vec<u64>,
}

/// Merges the shards' states (`slot` gives an instrument's config position) and checks the
/// cross-shard invariants; they hold whenever no message is in flight.
pub fn cluster_reply(states: Vec<ShardState>, slot: impl Fn(&InstrumentId) -> Option<u32>) -> Reply {
    let invariants = match crate::domain::shard::check_cluster(&states) {
        Ok(()) => "ok".to_string(),
        Err(broken) => broken,
    };
    let order = |id: &InstrumentId| slot(id).unwrap_or(u32::MAX);
    let mut merged = ClusterState {
        trading_day: states.first().map_or(0, |s| s.trading_day),
        shards: states.len(),
        instruments: Vec::new(),
        accounts: Vec::new(),
        live_orders: Vec::new(),
        books: Vec::new(),
        quotes: Vec::new(),
        messages: Vec::new(),
    };
    for s in states {
        merged.messages.push(MessageCounts { shard: s.shard, sent: s.sent, received: s.received });
        merged.instruments.extend(s.instruments);
        merged.accounts.extend(s.accounts);
        merged.live_orders.extend(s.live_orders);
        merged.books.extend(s.books);
        merged.quotes.extend(s.quotes);
    }
    merged.instruments.sort_by_key(|i| order(&i.instrument_id));
    merged.books.sort_by_key(|b| order(&b.instrument_id));
    merged.quotes.sort_by_key(|q| order(&q.instrument_id));
    merged.accounts.sort_by(|a, b| a.account.account_id.as_str().cmp(b.account.account_id.as_str()));
    merged.live_orders.sort_by_key(|o| o.order_id);
    Reply::success(&ClusterView { invariants, state: merged })
}
