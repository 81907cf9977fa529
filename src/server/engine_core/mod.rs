//! A shard's core: runs client actions and messages from other shards as they arrive, stages
//! what they logged, sent and answered, and a committer task writes each staged group to the
//! shard's WAL (one synced write per group) before it sends the group's messages and
//! releases its replies (output commit: nothing leaves a shard before the input that made it
//! is durable). While one group syncs the next one fills, so the sync cost is shared by
//! everything that arrived meanwhile (group commit).
//!
//! Replies of queries are staged behind the inputs before them too, so a client never reads
//! state that is not yet durable.

use super::account_fanout::AccountFanout;
use super::checkpointer::{
    self, CheckpointControl, CheckpointPolicy, CheckpointTarget, DurableReceived, Outbox, Snapshot,
};
use super::conn::ShardCounters;
use super::diff_chart;
use super::history::{self, HistoryQuery, HistorySeries};
use super::history_store::SharedHistory;
use super::http::HttpErrorCode;
use super::metrics::ShardMetrics;
use super::quote_fanout::QuoteFanout;
use super::service::{Action, Answer, Origin, Query, Reply, Service, Staged};
use super::wal_record::{encode, WalRecord};
use crate::diff::feed::SharedPatch;
use crate::domain::market_data::Quote;
use crate::domain::name::{AccountId, InstrumentId};
use crate::domain::shard::{Outgoing, PeerMsg};
use crate::storage::wal::WalWriter;
use glommio::channels::local_channel::LocalSender;
use glommio::channels::shared_channel::ConnectedSender;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

mod committer;
use super::diff_trade::MARK_REFRESH_NS;
pub use committer::{run_committer, GroupLimits};

/// Everything that crosses from one shard to another (one bounded channel per ordered pair).
#[derive(Debug)]
pub enum ShardMsg {
    /// A client request for an account or instrument the receiver owns (`sent`: for the hop
    /// latency).
    Request { origin: Origin, action: Action, sent: Instant },
    /// The answer to a `Request`, for a connection of the receiver.
    Reply { origin: Origin, answer: Answer, sent: Instant },
    /// Account aggregation between shards: holds, fills, cancels, modifies, marks.
    Peer { seq: u64, msg: PeerMsg },
    /// DIFF fan-out: a quote of the sender's instrument changed (durably); the patch
    /// (`{"quotes":{symbol:{..}}}`) is built once by the sender and shared.
    Quote { symbol: Arc<str>, patch: Arc<crate::diff::feed::SharedPatch> },
    /// DIFF fan-out: what a commit group of the sender changed (durably) in an account's
    /// trade tree, sent only to shards with sessions following that account.
    Account { account: AccountId, patch: Arc<SharedPatch> },
}

/// Connections of one shard waiting for their answers, each tagged with the request it answers.
/// A connection's channel holds as many answers as it may have requests outstanding
/// (`conn::MAX_PIPELINED`), so handing one over never waits and never drops.
pub type Waiters = Rc<RefCell<crate::domain::fast_hash::FastMap<u64, LocalSender<(u32, Answer)>>>>;

/// Hands an answer to a connection of this shard. A connection that closed meanwhile is skipped.
pub fn deliver_local(waiters: &Waiters, origin: Origin, answer: Answer) {
    if let Some(tx) = waiters.borrow().get(&origin.conn) {
        let _ = tx.try_send((origin.tag, answer));
    }
}

/// What one shard tells the others about its activity, so they can agree that the whole
/// server is quiet before shutting down.
#[derive(Debug, Default)]
pub struct Activity {
    pub peer_sent: AtomicU64,
    pub peer_received: AtomicU64,
    /// Something is staged or being committed.
    pub busy: AtomicBool,
}

pub struct EngineCore {
    service: Service,
    /// This shard's router, told of instruments created at run time.
    router: Option<Rc<super::conn::Router>>,
    staged: Staged,
    /// When each staged reply was staged (aligned with `staged.replies`).
    staged_at: Vec<Instant>,
    pub metrics: ShardMetrics,
    connections: Rc<ShardCounters>,
    notify: LocalSender<()>,
    activity: Arc<Activity>,
    closing: bool,
    /// Whether a WAL failure stopped the core: every later action is refused.
    failed: bool,
    /// The shard's history store (None without storage).
    history: Option<SharedHistory>,
    /// Checkpoints: when they are due, the one running, the last one (None without storage).
    pub checkpoint: CheckpointControl,
    checkpoint_target: Option<CheckpointTarget>,
    /// Messages sent that their receivers may not hold durably yet (kept for checkpoints).
    outbox: Outbox,
    /// What every shard's WAL holds of the others' messages (None with one shard).
    durable: Option<Arc<DurableReceived>>,
}

pub type SharedCore = Rc<RefCell<EngineCore>>;

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl EngineCore {
    pub fn new(
        service: Service,
        notify: LocalSender<()>,
        activity: Arc<Activity>,
        connections: Rc<ShardCounters>,
    ) -> Self {
        Self {
            service,
            router: None,
            staged: Staged::default(),
            staged_at: Vec::new(),
            metrics: ShardMetrics::default(),
            connections,
            notify,
            activity,
            closing: false,
            failed: false,
            history: None,
            checkpoint: CheckpointControl::new(CheckpointPolicy { every_wal_bytes: 0, interval: Default::default() }),
            checkpoint_target: None,
            outbox: Outbox::default(),
            durable: None,
        }
    }

    /// Turns checkpoints on: written under `target`, taken per `policy` and on request.
    /// `durable` (with several shards) tells what the receivers hold of this shard's messages.
    pub fn set_checkpoints(
        &mut self,
        target: CheckpointTarget,
        policy: CheckpointPolicy,
        durable: Option<Arc<DurableReceived>>,
    ) {
        self.checkpoint.policy = policy;
        self.checkpoint_target = Some(target);
        self.outbox = Outbox::new(self.service.engine().sent().len());
        self.durable = durable;
    }

    /// Takes the state for a checkpoint at `wal_sequence` (the last record of the group
    /// being taken, whose messages `sending` are about to go out); it is encoded off the
    /// shard (`checkpointer::finish`).
    fn snapshot(&mut self, wal_sequence: u64, sending: &[Outgoing], wal_bytes: u64) -> Snapshot {
        let began = Instant::now();
        self.checkpoint.begin(wal_bytes, began);
        Snapshot {
            wal_sequence,
            service: self.service.checkpoint_snapshot(),
            outbox: self.outbox.all().chain(sending).cloned().collect(),
            pause_us: began.elapsed().as_micros() as u64,
        }
    }

    /// A checkpoint ended: answers the requests that waited for it.
    fn checkpoint_ended(&mut self, result: Result<(checkpointer::CheckpointInfo, u64), String>) {
        if let Err(e) = &result {
            let shard = self.service.engine().shard();
            tracing::error!("shard {shard}: checkpoint failed (the WAL still holds everything): {e}");
        }
        let waiters = self.checkpoint.finish(&result);
        let before = self.staged.replies.len();
        for origin in waiters {
            let reply = match &result {
                Ok((info, _)) => Reply::success(info),
                Err(e) => Reply::http_message(HttpErrorCode::StorageFailed, &format!("checkpoint failed: {e}")),
            };
            self.staged.replies.push((origin, Answer::Reply(reply)));
        }
        self.stamp_replies(before);
        self.wake();
    }

    /// Gives the core its history store: the committer feeds it, queries read it.
    pub fn set_history(&mut self, history: SharedHistory) {
        self.service.set_history(true);
        self.history = Some(history);
    }

    pub fn history(&self) -> Option<&SharedHistory> {
        self.history.as_ref()
    }

    /// A DIFF chart's history: the newest `count` bars or ticks the engine keeps, and, when it
    /// keeps fewer than asked and older ones exist, those from the history store (ids counted
    /// back from the engine's first one: both number every bar or tick since the WAL began).
    fn chart_reply(&self, instrument_id: InstrumentId, duration_ns: i64, count: u32) -> Reply {
        let bare = match self.service.owned_instrument(&instrument_id) {
            Ok(bare) => bare,
            Err(reply) => return reply,
        };
        let engine = self.service.engine();
        let Some(market) = engine.instrument_slot(&bare).and_then(|slot| engine.market(slot)) else {
            return Reply::http(HttpErrorCode::InternalError);
        };
        let bad_duration =
            || Reply::http_message(HttpErrorCode::InvalidQueryParameter, "invalid query parameter: duration");
        let (mut from_id, mut series, first_ts, step_ns) = if duration_ns == 0 {
            let (from, series) = diff_chart::tick_history(market, i64::from(count));
            let ticks = market.ticks();
            let first_ts = ticks.iter_from(ticks.first_id()).next().map(|(_, t)| t.datetime_ns);
            (from, series, first_ts, 1_000_000_000)
        } else {
            let Some((from, series)) = diff_chart::kline_history(market, duration_ns, i64::from(count)) else {
                return bad_duration();
            };
            let Some(bars) = market.klines_for_duration(duration_ns).map(|s| s.bars()) else {
                return bad_duration();
            };
            let first_ts = bars.iter_from(bars.first_id()).next().map(|(_, b)| b.datetime_ns);
            (from, series, first_ts, duration_ns)
        };
        let last_id = series["last_id"].as_i64().unwrap_or(-1);
        let have = if last_id < 0 { 0 } else { last_id - from_id + 1 };
        let missing = (i64::from(count) - have).min(from_id.max(0));
        if let (Some(history), Some(first_ts), true) = (&self.history, first_ts, missing > 0) {
            let older = history.borrow().chart_before(bare.as_str(), duration_ns, first_ts, from_id, missing, step_ns);
            match older {
                Ok(older) => from_id = diff_chart::prepend(&mut series, from_id, older),
                Err(e) => tracing::warn!("chart history of {bare} from the store: {e}"),
            }
        }
        Reply::success(&serde_json::json!({"from_id": from_id, "series": series}))
    }

    fn history_answer(&self, query: Query) -> Reply {
        let Some(history) = &self.history else {
            return Reply::http_message(
                HttpErrorCode::NotFound,
                "not found: this server runs without storage (--no-storage), so it keeps no history",
            );
        };
        match query {
            Query::History { series, range } => {
                let account = |code: u8, id: AccountId| {
                    self.service.owned_account(&id).map(|()| (code, id.as_str().to_string(), 0))
                };
                let instrument = |code: u8, id: InstrumentId, period: i64| {
                    self.service.owned_instrument(&id).map(|bare| (code, bare.as_str().to_string(), period))
                };
                let resolved = match series {
                    HistorySeries::Orders(id) => account(history::ORDERS, id),
                    HistorySeries::Trades(id) => account(history::USER_TRADES, id),
                    HistorySeries::AccountChanges(id) => account(history::ACCOUNT_CHANGES, id),
                    HistorySeries::MarketTrades(id) => instrument(history::MARKET_TRADES, id, 0),
                    HistorySeries::Ticks(id) => instrument(history::TICKS, id, 0),
                    HistorySeries::Klines(id, period) => instrument(history::KLINES, id, period),
                };
                let (code, name, period_ns) = match resolved {
                    Ok(resolved) => resolved,
                    Err(reply) => return reply,
                };
                let q = HistoryQuery {
                    series: code,
                    name,
                    period_ns,
                    start_ns: range.start_ns,
                    end_ns: range.end_ns,
                    limit: range.limit as usize,
                    after: range.cursor.map(|c| c.as_bytes().to_vec()),
                };
                // The open bar is the engine's until it closes, and a live order the journal's
                // until it finishes; the store has the closed bars and the finished orders.
                let live = match series {
                    HistorySeries::Klines(id, period) => self
                        .service
                        .owned_instrument(&id)
                        .ok()
                        .and_then(|bare| history::live_bar(self.service.engine(), &bare, period))
                        .into_iter()
                        .collect(),
                    HistorySeries::Orders(id) => {
                        history::live_orders(self.service.journal(), &id, range.start_ns, range.end_ns)
                    }
                    _ => Vec::new(),
                };
                history.borrow().query(&q, live)
            }
            Query::StorageStats => {
                let mut stats = history.borrow().stats();
                if let (Some(all), serde_json::Value::Object(more)) = (stats.as_object_mut(), self.checkpoint.stats()) {
                    all.extend(more);
                }
                Reply::success(&stats)
            }
            Query::TriggerCompaction => {
                history.borrow_mut().trigger();
                Reply::success(&serde_json::json!({"shard": history.borrow().stats()["shard"], "triggered": true}))
            }
            _ => Reply::http(HttpErrorCode::InternalError),
        }
    }

    /// This shard's metrics now, with the service's and the connections' counters.
    pub fn metrics_snapshot(&self) -> ShardMetrics {
        let mut m = self.metrics.clone();
        let s = self.service.counters();
        m.counters.orders_accepted = s.orders_accepted;
        m.counters.trades = s.trades;
        for (code, n) in &s.rejects {
            *m.counters.rejects.entry(*code).or_default() += n;
        }
        m.counters.peer_messages_sent = self.activity.peer_sent.load(Ordering::Relaxed);
        m.counters.peer_messages_received = self.activity.peer_received.load(Ordering::Relaxed);
        m.counters.staged_records = self.staged.records.len() as u64;
        m.counters.connections_open = self.connections.connections_open.get();
        m.counters.ws_sessions_open = self.connections.ws_open.get();
        m.counters.ws_slow_disconnects = self.connections.ws_slow_dropped.get();
        m.counters.ws_budget_waits = self.connections.ws_budget_waits.get();
        m.counters.connections_accepted = self.connections.connections_accepted.get();
        m.counters.connections_refused = self.connections.connections_refused.get();
        m.counters.http_requests = self.connections.requests.get();
        m.counters.http_4xx = self.connections.errors_4xx.get();
        m.counters.http_5xx = self.connections.errors_5xx.get();
        m
    }

    /// Stamps the replies staged since `before` replies were there.
    fn stamp_replies(&mut self, before: usize) {
        let now = Instant::now();
        let added = self.staged.replies.len().saturating_sub(before);
        self.staged_at.extend(std::iter::repeat(now).take(added));
    }

    fn wake(&mut self) {
        self.activity.busy.store(true, Ordering::SeqCst);
        let _ = self.notify.try_send(());
    }

    /// Runs a client action now; its reply leaves when the committer has made it durable.
    pub fn submit(&mut self, origin: Origin, action: Action) {
        let before = self.staged.replies.len();
        let began = Instant::now();
        // A user's request runs only on accounts the user owns; checked here, where the
        // account's owner lives, before whichever part of the core answers it.
        let action = match action {
            Action::AsUser { user, action } => match self.service.authorize(&user, &action) {
                Ok(()) => *action,
                Err(reply) => {
                    self.staged.replies.push((origin, Answer::Reply(reply)));
                    self.stamp_replies(before);
                    self.wake();
                    return;
                }
            },
            action => action,
        };
        match action {
            Action::Query(Query::ShardMetrics) => {
                let answer = Answer::Metrics(Box::new(self.metrics_snapshot()));
                self.staged.replies.push((origin, answer));
            }
            Action::Query(Query::Chart { instrument_id, duration_ns, count }) if self.history.is_some() => {
                let reply = self.chart_reply(instrument_id, duration_ns, count);
                self.staged.replies.push((origin, Answer::Reply(reply)));
            }
            Action::Query(query @ (Query::History { .. } | Query::StorageStats | Query::TriggerCompaction)) => {
                let reply = self.history_answer(query);
                self.staged.replies.push((origin, Answer::Reply(reply)));
            }
            Action::Query(Query::Checkpoint) => {
                if self.checkpoint_target.is_some() {
                    // Answered when the checkpoint is written (`checkpoint_ended`).
                    self.checkpoint.request(origin);
                } else {
                    let reply = Reply::http_message(
                        HttpErrorCode::NotFound,
                        "not found: this server runs without storage (--no-storage), so it takes no checkpoints",
                    );
                    self.staged.replies.push((origin, Answer::Reply(reply)));
                }
            }
            Action::Query(Query::ResetLatency) => {
                self.metrics.reset_latency();
                self.staged.replies.push((origin, Answer::Reply(Reply::success(&"reset"))));
            }
            action @ Action::CreateInstrument(_) => {
                self.run_action(origin, action);
                self.sync_router();
            }
            action => self.run_action(origin, action),
        }
        self.metrics.stage_since("execute_command", began);
        self.stamp_replies(before);
        self.wake();
    }

    fn run_action(&mut self, origin: Origin, action: Action) {
        if self.failed {
            let reply = Reply::http_message(
                HttpErrorCode::StorageFailed,
                "storage failed: the server is refusing requests until it restarts",
            );
            self.staged.replies.push((origin, Answer::Reply(reply)));
        } else {
            self.service.handle(action, now_ns(), origin, &mut self.staged);
        }
    }

    /// Runs message `seq` from shard `from`.
    pub fn deliver(&mut self, from: u16, seq: u64, msg: PeerMsg) {
        let before = self.staged.replies.len();
        let began = Instant::now();
        if !self.failed {
            self.service.deliver(from, seq, msg, now_ns(), &mut self.staged);
        }
        self.metrics.stage_since("execute_peer", began);
        self.stamp_replies(before);
        self.activity.peer_received.fetch_add(1, Ordering::SeqCst);
        self.wake();
    }

    /// Messages recovery found undelivered: they go out first, before anything new.
    /// Settles at `cut`, which other shards settled before a crash this shard did not survive
    /// with it (start-up, before anything else runs).
    pub fn finish_settlement(&mut self, cut: &crate::domain::shard::settlement::SettleCut) -> Result<(), String> {
        // Flagged accounts are not liquidated after a crash: the operator sees them in the
        // statements and liquidates them (`force-liquidate`).
        self.service.run_settlement(true, cut, now_ns(), &mut self.staged)?;
        self.wake();
        Ok(())
    }

    /// Routes this shard's requests with `router` from now on (kept in step with the engine's
    /// instruments).
    pub fn set_router(&mut self, router: Rc<super::conn::Router>) {
        self.router = Some(router);
    }

    /// Adds to the router the instruments the engine listed since it last looked.
    fn sync_router(&mut self) {
        let Some(router) = &self.router else { return };
        let instruments = self.service.engine().instruments();
        while router.instrument_count() < instruments.len() {
            router.add(instruments[router.instrument_count()].clone());
        }
    }

    pub fn redeliver(&mut self, sends: Vec<Outgoing>) {
        self.staged.sends.extend(sends);
        self.wake();
    }

    /// No more work will come: the committer drains what is staged and stops.
    pub fn close(&mut self) {
        self.closing = true;
        let _ = self.notify.try_send(());
    }

    pub fn service(&self) -> &Service {
        &self.service
    }
}

/// Where a shard's committer sends: its own connections, and a channel to every other shard.
pub struct Routes {
    pub shard: usize,
    pub local: Waiters,
    pub remote: Rc<Vec<Option<ConnectedSender<ShardMsg>>>>,
    /// This shard's DIFF sessions by quote.
    pub fanout: Rc<RefCell<QuoteFanout>>,
    /// This shard's DIFF sessions by the account they are logged in to.
    pub accounts: Rc<RefCell<AccountFanout>>,
}

impl Routes {
    async fn reply(&self, origin: Origin, answer: Answer) {
        if origin.shard == self.shard {
            deliver_local(&self.local, origin, answer);
        } else if let Some(Some(tx)) = self.remote.get(origin.shard) {
            // Bounded: a full channel makes the committer wait for that shard (backpressure).
            let _ = tx.send(ShardMsg::Reply { origin, answer, sent: Instant::now() }).await;
        }
    }

    /// Sends each changed quote, as a DIFF patch built once, to this shard's sessions and to
    /// every other shard with sessions following it (bounded channels: a full one makes the
    /// committer wait).
    async fn publish_quotes(&self, quotes: &[Quote]) {
        let directory = self.fanout.borrow().directory().clone();
        if quotes.is_empty() || !directory.anyone_follows() {
            return;
        }
        let now = super::diff_quote::now_ns();
        for quote in quotes {
            let Some(slot) = self.fanout.borrow().slot_of(&quote.instrument_id) else { continue };
            let symbol: Arc<str> = format!("{}.{}", quote.exchange_id.as_str(), quote.instrument_id.as_str()).into();
            let fields = serde_json::to_value(quote).unwrap_or(serde_json::Value::Null);
            let patch = Arc::new(SharedPatch::new(
                serde_json::json!({"quotes": {&*symbol: super::diff_quote::diff_quote(&symbol, &fields, now)}}),
            ));
            self.publish(slot, symbol, patch, &directory).await;
        }
    }

    /// Hands a market data patch to this shard's sessions on `topic` and sends it to the other
    /// shards whose sessions follow instrument `slot`.
    async fn publish(
        &self,
        slot: u32,
        topic: Arc<str>,
        patch: Arc<SharedPatch>,
        directory: &super::quote_fanout::FanoutDirectory,
    ) {
        self.fanout.borrow_mut().publish(&topic, &patch);
        for (shard, tx) in self.remote.iter().enumerate() {
            if let Some(tx) = tx {
                if directory.shard_follows(slot, shard) {
                    let _ = tx.send(ShardMsg::Quote { symbol: topic.clone(), patch: patch.clone() }).await;
                }
            }
        }
    }

    /// Sends each chart patch like a quote's, on its series' topic.
    async fn publish_topics(&self, patches: Vec<(u32, String, serde_json::Value)>) {
        let directory = self.fanout.borrow().directory().clone();
        for (slot, topic, patch) in patches {
            self.publish(slot, topic.into(), Arc::new(SharedPatch::new(patch)), &directory).await;
        }
    }

    /// Sends each changed account's trade patch to the shards whose sessions follow it.
    async fn publish_trades(&self, patches: Vec<(AccountId, Vec<usize>, SharedPatch)>) {
        for (account, shards, patch) in patches {
            // Written once, as text: the account's session sends it as it is (usually nothing
            // else is pending for it), with no tree and no copy.
            let patch = Arc::new(patch);
            for shard in shards {
                if shard == self.shard {
                    self.accounts.borrow_mut().publish(&account, &patch);
                } else if let Some(Some(tx)) = self.remote.get(shard) {
                    let _ = tx.send(ShardMsg::Account { account, patch: patch.clone() }).await;
                }
            }
        }
    }

    async fn peer(&self, out: Outgoing) -> bool {
        match self.remote.get(out.to as usize) {
            Some(Some(tx)) => tx.send(ShardMsg::Peer { seq: out.seq, msg: out.msg }).await.is_ok(),
            _ => false,
        }
    }
}
