//! One HTTP/1.1 connection on its shard: read, parse, route, decode the body, ask the shard
//! that owns the account or instrument (this one or another, over its channel), write the
//! reply. Pipelined requests are answered in order; those for one shard are sent together
//! (see `Batch`), so they share that shard's group commit.

use super::auth::{Claims, TokenError, TokenKey, UserId};
use super::body::{self, BodyError};
use super::credentials::Password;
use super::engine_core::{ShardMsg, SharedCore, Waiters};
use super::history::HistorySeries;
use super::http::{
    parse_request, route, write_response, write_response_with_headers, Access, Header, HttpError, HttpErrorCode,
    Limits, ParseOutcome, Request, Route, CONTENT_TYPE_JSON, CONTENT_TYPE_PROMETHEUS,
};
use super::metrics::Gathered;
use super::service::{cluster_reply, Action, Answer, Origin, Query, Reply};
use crate::domain::fast_hash::FastMap;
use crate::domain::instrument::Instrument;
use crate::domain::name::{ClientOrderId, InstrumentId};
use crate::domain::shard::{account_shard, find_instrument, instrument_shard, order_shard, ShardState};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::channels::shared_channel::ConnectedSender;
use glommio::net::TcpStream;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Which shard owns what a request names. One per shard; the instrument tables grow when the
/// shard's core runs an instrument's creation (`add`).
pub struct Router {
    pub shards: u16,
    tables: std::cell::RefCell<RouterTables>,
}

struct RouterTables {
    instruments: Vec<Instrument>,
    index: FastMap<InstrumentId, u32>,
    owner: Vec<u16>,
    /// `GET /api/market/instruments/shinny`, rebuilt when an instrument is created.
    shinny_file: Rc<Vec<u8>>,
}

impl Router {
    pub fn new(instruments: Vec<Instrument>, shards: u16) -> Self {
        let index = instruments.iter().enumerate().map(|(i, inst)| (inst.instrument_id, i as u32)).collect();
        let owner = instruments.iter().map(|i| instrument_shard(i, shards)).collect();
        let shinny_file = Rc::new(super::shinny::instruments_file(&instruments));
        Self { shards, tables: std::cell::RefCell::new(RouterTables { instruments, index, owner, shinny_file }) }
    }

    /// A created instrument, at the next slot (as every shard's engine adds it).
    pub fn add(&self, inst: Instrument) {
        let mut t = self.tables.borrow_mut();
        let slot = t.instruments.len() as u32;
        t.index.insert(inst.instrument_id, slot);
        t.owner.push(instrument_shard(&inst, self.shards));
        t.instruments.push(inst);
        t.shinny_file = Rc::new(super::shinny::instruments_file(&t.instruments));
    }

    /// The config position of an instrument (`cu2501` or `SHFE.cu2501`).
    pub fn instrument_slot(&self, id: &InstrumentId) -> Option<u32> {
        let t = self.tables.borrow();
        find_instrument(&t.instruments, &t.index, id)
    }

    /// The instrument's spec as this shard's router knows it.
    pub fn instrument(&self, id: &InstrumentId) -> Option<Instrument> {
        let slot = self.instrument_slot(id)?;
        Some(self.tables.borrow().instruments[slot as usize].clone())
    }

    pub fn instrument_count(&self) -> usize {
        self.tables.borrow().instruments.len()
    }

    fn owner_of(&self, slot: u32) -> usize {
        self.tables.borrow().owner[slot as usize] as usize
    }

    fn shinny_file(&self) -> Rc<Vec<u8>> {
        self.tables.borrow().shinny_file.clone()
    }

    /// The shard to ask; `here` for what any shard can answer (and for unknown instruments,
    /// which any shard refuses the same way).
    pub fn target(&self, action: &Action, here: usize) -> usize {
        let account = |id| account_shard(id, self.shards) as usize;
        let instrument = |id: &InstrumentId| self.instrument_slot(id).map_or(here, |s| self.owner_of(s));
        match action {
            Action::OpenAccount { account_id, .. }
            | Action::Transfer { account_id, .. }
            | Action::SetFrozen { account_id, .. }
            | Action::Follow { account_id, .. }
            | Action::Cancel { account_id, .. }
            | Action::Modify { account_id, .. } => account(account_id),
            Action::Submit(order) => account(&order.account_id),
            Action::Register { user_id, .. } => account(user_id),
            Action::CreateInstrument(inst) => instrument_shard(inst, self.shards) as usize,
            Action::SetSettlementPrice { instrument_id, .. }
            | Action::SetInstrumentStatus { instrument_id, .. }
            | Action::UpdateInstrument { instrument_id, .. } => instrument(instrument_id),
            Action::Settle(_) => here,
            Action::AsUser { action, .. } => self.target(action, here),
            Action::Query(query) => match query {
                Query::User(user_id) | Query::Statements(user_id) => account(user_id),
                Query::Account(id) | Query::UserOrders(id) | Query::Positions(id) | Query::UserTrades(id) => {
                    account(id)
                }
                Query::Order(id) => order_shard(*id, self.shards) as usize,
                Query::OrderBook { instrument_id, .. }
                | Query::Tick(instrument_id)
                | Query::MarketTrades { instrument_id, .. }
                | Query::Kline { instrument_id, .. }
                | Query::Chart { instrument_id, .. } => instrument(instrument_id),
                Query::History { series, .. } => match series {
                    HistorySeries::Orders(id) | HistorySeries::Trades(id) | HistorySeries::AccountChanges(id) => {
                        account(id)
                    }
                    HistorySeries::MarketTrades(id) | HistorySeries::Ticks(id) | HistorySeries::Klines(id, _) => {
                        instrument(id)
                    }
                },
                Query::Instruments
                | Query::ShardState
                | Query::ShardMetrics
                | Query::ResetLatency
                | Query::StorageStats
                | Query::TriggerCompaction
                | Query::Checkpoint
                | Query::OwnedAccounts(_)
                | Query::SettledDays
                | Query::SettledDay(_) => here,
            },
        }
    }
}

/// Per-shard counters (exposed by `/metrics`).
#[derive(Default)]
pub struct ShardCounters {
    pub connections_accepted: Cell<u64>,
    /// DIFF WebSocket sessions open now.
    pub ws_open: Cell<u64>,
    /// WebSocket sessions cut off because their client stopped reading.
    pub ws_slow_dropped: Cell<u64>,
    /// Times a WebSocket session with a message ready waited for the shard's delivery budget.
    pub ws_budget_waits: Cell<u64>,
    pub connections_open: Cell<u64>,
    pub connections_refused: Cell<u64>,
    pub requests: Cell<u64>,
    pub errors_4xx: Cell<u64>,
    pub errors_5xx: Cell<u64>,
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// What every connection of a shard shares.
pub struct ShardContext {
    pub shard: usize,
    pub shards: usize,
    pub limits: Limits,
    pub core: SharedCore,
    /// A channel to every other shard (None at this shard's own index).
    pub links: Rc<Vec<Option<ConnectedSender<ShardMsg>>>>,
    pub router: Rc<Router>,
    pub waiters: Waiters,
    pub stop: Arc<AtomicBool>,
    /// Shared with the shard's core, which reports them in `/metrics`.
    pub counters: Rc<ShardCounters>,
    pub max_connections: u64,
    /// This shard's DIFF sessions by quote (fed by every shard's committer).
    pub fanout: Rc<std::cell::RefCell<super::quote_fanout::QuoteFanout>>,
    /// This shard's DIFF sessions by the account they are logged in to.
    pub accounts: Rc<std::cell::RefCell<super::account_fanout::AccountFanout>>,
    pub ws_limits: super::config::WsLimits,
    /// Closed once the shard stops accepting (`next_connection` saw the stop flag): every
    /// WebSocket session waits on it, so shutdown reaches a session at once without each one
    /// polling the flag on a timer of its own.
    pub sessions_stop: glommio::sync::Semaphore,
    /// The shard's bound on WebSocket pushes (None: `max_deliveries_per_sec` is 0).
    pub delivery_budget: Option<Rc<super::delivery_budget::DeliveryBudget>>,
    /// Token checks (None: auth is off and every endpoint is open).
    pub auth: Option<AuthGate>,
    /// Requests per second per connection (0: no limit).
    pub max_requests_per_sec: u32,
    /// Every shard's count of each user's connections, and the limit (0: none).
    pub user_connections: super::user_connections::UserConnections,
    pub max_connections_per_user: u32,
    /// Keeps settlements and instrument changes apart (shared by every shard).
    pub admin_gate: super::settlement_run::AdminGate,
    next_conn: Cell<u64>,
    auto_ids: Cell<u64>,
}

impl ShardContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shard: usize,
        limits: Limits,
        core: SharedCore,
        links: Rc<Vec<Option<ConnectedSender<ShardMsg>>>>,
        router: Rc<Router>,
        waiters: Waiters,
        counters: Rc<ShardCounters>,
        stop: Arc<AtomicBool>,
        max_connections: u64,
        fanout: Rc<std::cell::RefCell<super::quote_fanout::QuoteFanout>>,
        accounts: Rc<std::cell::RefCell<super::account_fanout::AccountFanout>>,
    ) -> Self {
        Self {
            shard,
            shards: router.shards as usize,
            limits,
            core,
            links,
            router,
            waiters,
            stop,
            counters,
            max_connections,
            fanout,
            accounts,
            ws_limits: super::config::WsLimits::default(),
            sessions_stop: glommio::sync::Semaphore::new(0),
            delivery_budget: None,
            auth: None,
            max_requests_per_sec: 0,
            user_connections: Default::default(),
            max_connections_per_user: 0,
            admin_gate: Default::default(),
            next_conn: Cell::new(1),
            auto_ids: Cell::new(0),
        }
    }

    /// A new connection id on this shard, with the channel its answers come on (registered in
    /// `waiters` until `unregister`).
    pub fn register(&self) -> (u64, LocalReceiver<(u32, Answer)>) {
        let conn = self.next_conn.get();
        self.next_conn.set(conn + 1);
        let (tx, rx) = local_channel::new_bounded::<(u32, Answer)>(MAX_PIPELINED);
        self.waiters.borrow_mut().insert(conn, tx);
        (conn, rx)
    }

    /// The WebSocket session bounds (default: `WsLimits::default()`).
    pub fn with_ws_limits(mut self, ws_limits: super::config::WsLimits) -> Self {
        self.ws_limits = ws_limits;
        self.delivery_budget =
            super::delivery_budget::DeliveryBudget::new(ws_limits.max_deliveries_per_sec).map(Rc::new);
        self
    }

    /// Limits each connection to `rate` requests per second (0: no limit).
    pub fn with_rate_limit(mut self, rate: u32) -> Self {
        self.max_requests_per_sec = rate;
        self
    }

    /// Counts users' connections in `counts` (shared by every shard), at most `limit` each.
    pub fn with_user_connections(mut self, counts: super::user_connections::UserConnections, limit: u32) -> Self {
        self.user_connections = counts;
        self.max_connections_per_user = limit;
        self
    }

    /// Shares `gate` (the server's one) between settlements and instrument changes.
    pub fn with_admin_gate(mut self, gate: super::settlement_run::AdminGate) -> Self {
        self.admin_gate = gate;
        self
    }

    /// Counts this connection for the user of `caller` (not an admin) if it is not counted for
    /// them yet; refuses when the user holds the most connections allowed.
    fn count_connection(
        &self,
        caller: Caller,
        counted: &mut Option<super::user_connections::Counted>,
    ) -> Result<(), HttpError> {
        let Caller::User(user) = caller else { return Ok(()) };
        if counted.as_ref().is_some_and(|c| c.user() == user) {
            return Ok(());
        }
        // A connection that speaks for another user now stops counting for the first.
        *counted = None;
        match self.user_connections.acquire(user, self.max_connections_per_user) {
            Some(c) => {
                *counted = Some(c);
                Ok(())
            }
            None => Err(HttpError::new(HttpErrorCode::TooManyUserConnections)),
        }
    }

    /// Turns token checks on.
    pub fn with_auth(mut self, auth: AuthGate) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Who sends `request` for `route`: checked against its bearer token when auth is on and
    /// the route is not public. Refusals: 401 (9201 no token, 9202 bad, 9203 expired), 403
    /// (9204) for a user who is not an admin on an admin route.
    /// `verified` is the connection's last good token and its claims: a client sends the same
    /// token with every request, so only a new one is verified again (the MAC costs about as
    /// much as parsing the request); the expiry is checked every time.
    fn authenticate(
        &self,
        route: &Route,
        request: &Request,
        verified: &mut Option<(Vec<u8>, Claims)>,
    ) -> Result<Caller, HttpError> {
        let Some(gate) = &self.auth else { return Ok(Caller::Anyone) };
        let access = route.access();
        if access == Access::Public {
            return Ok(Caller::Anyone);
        }
        let now_s = unix_now_s();
        let claims = super::auth::bearer(request.header(Header::Authorization))
            .and_then(|token| match verified {
                Some((known, claims)) if known.as_slice() == token.as_bytes() => {
                    if now_s >= claims.expires_at_s {
                        Err(TokenError::Expired)
                    } else {
                        Ok(*claims)
                    }
                }
                _ => {
                    let claims = gate.key.verify(token, now_s)?;
                    *verified = Some((token.as_bytes().to_vec(), claims));
                    Ok(claims)
                }
            })
            .map_err(|e| {
                HttpError::new(match e {
                    TokenError::Missing => HttpErrorCode::MissingToken,
                    TokenError::Invalid => HttpErrorCode::InvalidToken,
                    TokenError::Expired => HttpErrorCode::TokenExpired,
                })
            })?;
        match (claims.admin, access) {
            (true, _) => Ok(Caller::Admin(claims.user_id)),
            (false, Access::Admin) => Err(HttpError::new(HttpErrorCode::AdminOnly)),
            (false, _) => Ok(Caller::User(claims.user_id)),
        }
    }

    pub fn unregister(&self, conn: u64) {
        self.waiters.borrow_mut().remove(&conn);
    }

    /// Asks the shard that owns what `action` names and waits for its reply (one request of
    /// connection `conn` in flight).
    pub async fn call(&self, conn: u64, answers: &LocalReceiver<(u32, Answer)>, action: Action) -> Reply {
        let target = self.router.target(&action, self.shard);
        match self.ask(conn, answers, target, action).await {
            Answer::Reply(reply) => reply,
            _ => Reply::http(HttpErrorCode::InternalError),
        }
    }

    /// Like [`Self::call`], but the shard's answer as it came (a DIFF login's is not a reply).
    pub async fn call_answer(&self, conn: u64, answers: &LocalReceiver<(u32, Answer)>, action: Action) -> Answer {
        let target = self.router.target(&action, self.shard);
        self.ask(conn, answers, target, action).await
    }

    /// A fresh account id for a user who named none: `<user>-<8 hex digits>` (the user part cut
    /// to fit 31 bytes), random so it is unique in practice; a clash is refused like any
    /// duplicate account and the client asks again.
    pub fn new_account_id(&self, user_id: &UserId) -> crate::domain::name::AccountId {
        use argon2::password_hash::rand_core::{OsRng, RngCore};
        let user = user_id.as_str();
        let mut cut = user.len().min(22);
        while !user.is_char_boundary(cut) {
            cut -= 1;
        }
        let text = format!("{}-{:08x}", &user[..cut], OsRng.next_u32());
        crate::domain::name::AccountId::new(&text).unwrap_or(*user_id)
    }

    /// An instrument's spec (bare or full id), if listed.
    pub fn instrument(&self, id: &InstrumentId) -> Option<Instrument> {
        self.router.instrument(id)
    }

    /// The bare ids of the venue's instruments, in config order.
    pub fn instrument_ids(&self) -> Vec<String> {
        let t = self.router.tables.borrow();
        t.instruments.iter().map(|i| i.instrument_id.as_str().to_string()).collect()
    }

    /// The `EXCHANGE.symbol` of an instrument (bare or full id), if listed.
    pub fn full_symbol(&self, id: &InstrumentId) -> Option<String> {
        let inst = self.router.instrument(id)?;
        Some(format!("{}.{}", inst.exchange_id.as_str(), inst.instrument_id.as_str()))
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A client order id for an order submitted without one: unique across shards and restarts
    /// (wall-clock nanoseconds, shard, counter).
    pub fn auto_client_id(&self) -> ClientOrderId {
        let n = self.auto_ids.get() + 1;
        self.auto_ids.set(n);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let text = format!("auto-{now}-{}-{n}", self.shard);
        // At most 5 + 20 + 1 + 20 + 1 + 20 = 67 bytes only in theory: nanoseconds since 1970
        // have 19 digits and shards are few, so the id fits the 63 bytes; keep the tail if not.
        let tail = &text[text.len().saturating_sub(63)..];
        ClientOrderId::new(tail).expect("at most 63 ASCII bytes")
    }

    /// Sends `action` to shard `target` for request `tag` of connection `conn`; the answer
    /// comes back on the connection's channel with that tag. Err: the shard is gone.
    async fn dispatch(&self, conn: u64, tag: u32, target: usize, action: Action) -> Result<(), ()> {
        let origin = Origin { shard: self.shard, conn, tag };
        if target == self.shard {
            self.core.borrow_mut().submit(origin, action);
            return Ok(());
        }
        let Some(Some(tx)) = self.links.get(target) else {
            return Err(());
        };
        tx.send(ShardMsg::Request { origin, action, sent: std::time::Instant::now() }).await.map_err(|_| ())
    }

    /// Asks shard `target` and waits for its answer (nothing else of the connection is in flight).
    pub(super) async fn ask(
        &self,
        conn: u64,
        answers: &LocalReceiver<(u32, Answer)>,
        target: usize,
        action: Action,
    ) -> Answer {
        if self.dispatch(conn, 0, target, action).await.is_err() {
            return shard_gone();
        }
        answers.recv().await.map_or_else(shard_gone, |(_, answer)| answer)
    }

    /// Every shard's metrics (`/metrics`, `/admin/latency`).
    async fn gather_metrics(&self, conn: u64, answers: &LocalReceiver<(u32, Answer)>) -> Result<Gathered, Reply> {
        let mut all = Vec::with_capacity(self.shards);
        for target in 0..self.shards {
            match self.ask(conn, answers, target, Action::Query(Query::ShardMetrics)).await {
                Answer::Metrics(m) => all.push((target, *m)),
                Answer::Reply(reply) => return Err(reply),
                _ => return Err(Reply::http(HttpErrorCode::InternalError)),
            }
        }
        Ok(Gathered(all))
    }

    /// `POST /admin/latency/reset`: every shard clears its histograms.
    async fn reset_latency(&self, conn: u64, answers: &LocalReceiver<(u32, Answer)>) -> Reply {
        for target in 0..self.shards {
            if let Answer::Reply(reply) = self.ask(conn, answers, target, Action::Query(Query::ResetLatency)).await {
                if reply.status != 200 {
                    return reply;
                }
            }
        }
        Reply::success(&serde_json::json!({"reset": self.shards}))
    }

    /// Every shard's answer to `query` (a JSON reply each), as one list in shard order.
    async fn gather_each(&self, conn: u64, answers: &LocalReceiver<(u32, Answer)>, query: Query) -> Reply {
        let mut all = Vec::with_capacity(self.shards);
        for target in 0..self.shards {
            match self.ask(conn, answers, target, Action::Query(query.clone())).await {
                Answer::Reply(reply) if reply.status == 200 => {
                    match serde_json::from_slice::<serde_json::Value>(&reply.body) {
                        Ok(mut v) => all.push(v["data"].take()),
                        Err(_) => return Reply::http(HttpErrorCode::InternalError),
                    }
                }
                Answer::Reply(reply) => return reply,
                _ => return Reply::http(HttpErrorCode::InternalError),
            }
        }
        Reply::success(&all)
    }

    /// `/admin/state`: every shard's state, merged, with the invariants checked over all.
    async fn gather_state(&self, conn: u64, answers: &LocalReceiver<(u32, Answer)>) -> Reply {
        let mut states: Vec<ShardState> = Vec::with_capacity(self.shards);
        for target in 0..self.shards {
            match self.ask(conn, answers, target, Action::Query(Query::ShardState)).await {
                Answer::State(state) => states.push(*state),
                Answer::Reply(reply) => return reply,
                _ => return Reply::http(HttpErrorCode::InternalError),
            }
        }
        cluster_reply(states, |id| self.router.instrument_slot(id))
    }
}

/// What a shard needs to check tokens: the venue's key, and how long a login's token lasts.
#[derive(Clone, Debug)]
pub struct AuthGate {
    pub key: Rc<TokenKey>,
    pub token_ttl_secs: u64,
}

/// Who sends a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Auth is off, or the route is public.
    Anyone,
    /// A token of an admin: everything, every account.
    Admin(UserId),
    /// A token of a user who is not an admin: only the accounts they own.
    User(UserId),
}

pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Most requests of one connection in flight at once (HTTP/1.1 pipelining). Further pipelined
/// requests stay in the read buffer until these are answered, so a connection's memory and its
/// share of the shards' queues stay bounded.
pub const MAX_PIPELINED: usize = 64;

fn gone_reply() -> Reply {
    Reply::http_message(HttpErrorCode::InternalError, "internal server error: a shard is gone")
}

fn shard_gone() -> Answer {
    Answer::Reply(gone_reply())
}

/// Serves one connection until the peer closes, an unframeable request, or shutdown.
pub async fn serve(ctx: Rc<ShardContext>, stream: TcpStream) {
    let (conn, rx) = ctx.register();
    bump(&ctx.counters.connections_accepted);
    ctx.counters.connections_open.set(ctx.counters.connections_open.get() + 1);
    let _ = stream.set_nodelay(true);
    // Idle reads wake up now and then so a shutdown can close idle connections.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let result = serve_loop(&ctx, stream, conn, &rx).await;
    if let Err(e) = result {
        tracing::debug!("connection {conn} on shard {}: {e}", ctx.shard);
    }
    ctx.unregister(conn);
    ctx.counters.connections_open.set(ctx.counters.connections_open.get() - 1);
}

/// Answers a connection over the limit and closes it.
pub async fn refuse(ctx: &ShardContext, mut stream: TcpStream) {
    bump(&ctx.counters.connections_refused);
    let mut out = Vec::new();
    let reply = Reply::http(HttpErrorCode::TooManyConnections);
    write_response(&mut out, reply.status, CONTENT_TYPE_JSON, &reply.body, false);
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}

/// What one request of a pipelined batch answers.
enum Output {
    Json(Reply, Option<&'static str>),
    Text(String),
}

/// One request of a batch, in the order it came.
struct Entry {
    pattern: Option<&'static str>,
    parsed_at: std::time::Instant,
    keep_alive: bool,
    /// None while its shard has not answered.
    output: Option<Output>,
}

/// The requests of a connection parsed from one read, answered in order. Orders, cancels,
/// modifies, transfers and account openings that go to the same shard are all sent before the
/// first answer is awaited: that shard runs them in the order sent (its own requests run at
/// once, another's come over one FIFO channel) and group-commits them together. A request for
/// another shard, a query, or a request that needs every shard first waits until everything
/// before it is answered, so what a connection reads reflects everything it sent before.
struct Batch {
    entries: Vec<Entry>,
    /// The shard the outstanding requests went to.
    target: Option<usize>,
    outstanding: usize,
}

impl Batch {
    fn new() -> Self {
        Self { entries: Vec::with_capacity(MAX_PIPELINED), target: None, outstanding: 0 }
    }

    /// Waits for every outstanding answer and puts each in its request's place.
    async fn settle(&mut self, answers: &LocalReceiver<(u32, Answer)>) {
        while self.outstanding > 0 {
            let (tag, answer) = answers.recv().await.unwrap_or_else(|| (u32::MAX, shard_gone()));
            self.outstanding -= 1;
            let output = match answer {
                Answer::Reply(reply) => Output::Json(reply, None),
                _ => Output::Json(Reply::http(HttpErrorCode::InternalError), None),
            };
            // A tag that names no waiting request would be a bug: that request is then
            // answered 500 by `write_entry`, and nothing else is disturbed.
            match self.entries.get_mut(tag as usize) {
                Some(entry) if entry.output.is_none() => entry.output = Some(output),
                _ => tracing::error!("an answer for request {tag}, which is not waiting"),
            }
        }
        self.target = None;
    }
}

async fn serve_loop(
    ctx: &ShardContext,
    mut stream: TcpStream,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
) -> std::io::Result<()> {
    let limits = ctx.limits;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut batch = Batch::new();
    let mut budget = super::rate_limit::RequestBudget::new(ctx.max_requests_per_sec);
    let mut verified: Option<(Vec<u8>, Claims)> = None;
    let mut counted: Option<super::user_connections::Counted> = None;
    loop {
        // Take every complete request in the buffer (up to MAX_PIPELINED), answer them in order.
        let mut start = 0;
        let mut close = false;
        while start < buf.len() && batch.entries.len() < MAX_PIPELINED {
            match parse_request(&buf[start..], &limits) {
                ParseOutcome::Partial => break,
                ParseOutcome::Error(error) => {
                    let reply = Reply::error(error.status, error.code, error.message);
                    let parsed_at = std::time::Instant::now();
                    let output = Some(Output::Json(reply, error.allow));
                    batch.entries.push(Entry { pattern: None, parsed_at, keep_alive: false, output });
                    close = true;
                    break;
                }
                ParseOutcome::Complete { request, consumed } => {
                    let parsed_at = std::time::Instant::now();
                    bump(&ctx.counters.requests);
                    let keep_alive = request.keep_alive && !ctx.stopping();
                    let target = route(request.method, request.path, request.query);
                    let pattern = target.as_ref().ok().map(Route::pattern);
                    let allowed = if budget.allow(parsed_at) {
                        Ok(())
                    } else {
                        Err(HttpError::new(HttpErrorCode::TooManyRequests))
                    };
                    let checked = allowed
                        .and(target)
                        .and_then(|t| ctx.authenticate(&t, &request, &mut verified).map(|c| (t, c)))
                        .and_then(|(t, c)| ctx.count_connection(c, &mut counted).map(|()| (t, c)));
                    let step = match checked {
                        Err(error) => Step::Answer(Reply::error(error.status, error.code, error.message), error.allow),
                        Ok((target, caller)) => plan(ctx, target, request.body, caller),
                    };
                    // Parsing started when the bytes arrived; this counts the work, not the wait.
                    ctx.core.borrow_mut().metrics.stage_since("parse", parsed_at);
                    start += consumed;
                    // In its place first: its answer may come while the step waits.
                    batch.entries.push(Entry { pattern, parsed_at, keep_alive, output: None });
                    if let Some(output) = run_step(ctx, conn, answers, &mut batch, step).await {
                        if let Some(entry) = batch.entries.last_mut() {
                            entry.output = Some(output);
                        }
                    }
                    if !keep_alive {
                        close = true;
                        break;
                    }
                }
            }
        }
        buf.drain(..start);
        let full = batch.entries.len() >= MAX_PIPELINED;
        batch.settle(answers).await;
        for entry in batch.entries.drain(..) {
            write_entry(ctx, &mut out, entry);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            let _ = stream.close().await;
            return Ok(());
        }
        if full {
            // More pipelined requests than one batch takes may wait in the buffer: answer
            // them before reading more.
            continue;
        }
        let n = loop {
            match stream.read(&mut chunk).await {
                Ok(n) => break n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
                    if ctx.stopping() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Runs the step of the batch's last request: answered here, sent to its shard (its answer
/// reaches its entry in `Batch::settle`; `None` here), or, for
/// what needs every shard, run to the end after everything before it is answered.
async fn run_step(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    batch: &mut Batch,
    step: Step,
) -> Option<Output> {
    let action = match step {
        Step::Answer(reply, allow) => return Some(Output::Json(reply, allow)),
        Step::Ask(action) => match hash_passwords(action).await {
            Ok(action) => action,
            Err(reply) => return Some(Output::Json(reply, None)),
        },
        Step::Login { user_id, password } => {
            batch.settle(answers).await;
            return Some(Output::Json(login(ctx, conn, answers, user_id, password).await, None));
        }
        Step::ForUser { user_id, action } => {
            batch.settle(answers).await;
            return Some(Output::Json(run_for_user(ctx, conn, answers, user_id, action).await, None));
        }
        Step::Owned(user_id) => {
            batch.settle(answers).await;
            return Some(Output::Json(owned_accounts(ctx, conn, answers, user_id).await, None));
        }
        Step::Batch(actions) => {
            batch.settle(answers).await;
            return Some(Output::Json(run_batch(ctx, conn, answers, actions).await, None));
        }
        Step::Settle(next_day) => {
            batch.settle(answers).await;
            return Some(Output::Json(super::settlement_run::execute(ctx, conn, answers, next_day).await, None));
        }
        Step::ForceLiquidate(account_id) => {
            batch.settle(answers).await;
            return Some(Output::Json(super::force_liquidation::liquidate(ctx, conn, answers, account_id).await, None));
        }
        Step::InstrumentChange(action) => {
            batch.settle(answers).await;
            return Some(Output::Json(instrument_change(ctx, conn, answers, action).await, None));
        }
        Step::SettledDays => {
            batch.settle(answers).await;
            return Some(Output::Json(settled_days(ctx, conn, answers).await, None));
        }
        Step::SettledDay(day) => {
            batch.settle(answers).await;
            let reply = match gather_lists(ctx, conn, answers, Query::SettledDay(day)).await {
                Ok(mut all) => {
                    all.sort_by(|a, b| a["account"]["account_id"].as_str().cmp(&b["account"]["account_id"].as_str()));
                    Reply::success(&all)
                }
                Err(reply) => reply,
            };
            return Some(Output::Json(reply, None));
        }
        Step::Gather => {
            batch.settle(answers).await;
            return Some(Output::Json(ctx.gather_state(conn, answers).await, None));
        }
        Step::Storage(query) => {
            batch.settle(answers).await;
            return Some(Output::Json(ctx.gather_each(conn, answers, query).await, None));
        }
        Step::ResetLatency => {
            batch.settle(answers).await;
            return Some(Output::Json(ctx.reset_latency(conn, answers).await, None));
        }
        Step::GatherText(kind) => {
            batch.settle(answers).await;
            return Some(match ctx.gather_metrics(conn, answers).await {
                Ok(gathered) => Output::Text(match kind {
                    TextKind::Prometheus => gathered.prometheus(),
                    TextKind::Latency => gathered.latency_text(),
                }),
                Err(reply) => Output::Json(reply, None),
            });
        }
    };
    let target = ctx.router.target(&action, ctx.shard);
    let is_query = matches!(action, Action::Query(_));
    if is_query || batch.target.is_some_and(|t| t != target) {
        batch.settle(answers).await;
    }
    // This request's entry is the last one.
    let tag = batch.entries.len().saturating_sub(1) as u32;
    if ctx.dispatch(conn, tag, target, action).await.is_err() {
        return Some(Output::Json(gone_reply(), None));
    }
    batch.outstanding += 1;
    batch.target = Some(target);
    if is_query {
        // Nothing after a query is sent before its answer, for the same reason.
        batch.settle(answers).await;
    }
    None
}

/// The action with every clear password in it hashed, off the executor, so only the hash
/// travels to the owning shard and its WAL.
async fn hash_passwords(action: Action) -> Result<Action, Reply> {
    let hash = |clear: String| async move {
        super::credentials::hash_off_executor(clear)
            .await
            .map(Password::Hashed)
            .map_err(|e| Reply::http_message(HttpErrorCode::InternalError, &e))
    };
    Ok(match action {
        Action::OpenAccount { account_id, init_cash, password: Some(Password::Clear(clear)), owner } => {
            Action::OpenAccount { account_id, init_cash, password: Some(hash(clear).await?), owner }
        }
        Action::Register { user_id, password: Password::Clear(clear), admin } => {
            Action::Register { user_id, password: hash(clear).await?, admin }
        }
        Action::AsUser { user, action } => {
            Action::AsUser { user, action: Box::new(Box::pin(hash_passwords(*action)).await?) }
        }
        action => action,
    })
}

/// The user's record from the user's shard (None: no such user).
async fn find_user(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    user_id: UserId,
) -> Result<Option<Box<super::users::UserRecord>>, Reply> {
    let query = Action::Query(Query::User(user_id));
    match ctx.call_answer(conn, answers, query).await {
        Answer::User(record) => Ok(record),
        Answer::Reply(reply) => Err(reply),
        _ => Err(Reply::http(HttpErrorCode::InternalError)),
    }
}

/// `POST /api/auth/login`: the password checked off the executor against the user's hash (a
/// missing user costs the same check, so timing does not tell which users exist), then a token.
async fn login(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    user_id: UserId,
    password: String,
) -> Reply {
    let record = match find_user(ctx, conn, answers, user_id).await {
        Ok(record) => record,
        Err(reply) => return reply,
    };
    let admin = record.as_ref().is_some_and(|r| r.admin);
    let hash = record.map(|r| r.password_hash);
    if !super::credentials::verify_user_off_executor(password, hash).await {
        return Reply::http(HttpErrorCode::LoginFailed);
    }
    let (key, ttl) = match &ctx.auth {
        Some(gate) => (gate.key.clone(), gate.token_ttl_secs),
        // Auth off: a token still identifies the user to clients that send one.
        None => (Rc::new(TokenKey::random()), super::config::DEFAULT_TOKEN_TTL_SECS),
    };
    let claims = Claims { user_id, admin, expires_at_s: unix_now_s() + ttl };
    Reply::success(&serde_json::json!({
        "token": key.mint(&claims),
        "token_type": "Bearer",
        "user_id": user_id.as_str(),
        "admin": admin,
        "expires_at": claims.expires_at_s,
    }))
}

/// An account opened for `user_id` by someone who is not that user (an admin, or anyone when
/// auth is off): the user must exist.
async fn run_for_user(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    user_id: UserId,
    action: Action,
) -> Reply {
    match find_user(ctx, conn, answers, user_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return Reply::http(HttpErrorCode::UserNotFound),
        Err(reply) => return reply,
    }
    match hash_passwords(action).await {
        Ok(action) => ctx.call(conn, answers, action).await,
        Err(reply) => reply,
    }
}

/// Every shard's list answer to `query`, concatenated in shard order.
async fn gather_lists(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    query: Query,
) -> Result<Vec<serde_json::Value>, Reply> {
    let mut all: Vec<serde_json::Value> = Vec::new();
    for target in 0..ctx.shards {
        match ctx.ask(conn, answers, target, Action::Query(query.clone())).await {
            Answer::Reply(reply) if reply.status == 200 => {
                match serde_json::from_slice::<serde_json::Value>(&reply.body) {
                    Ok(mut v) => match v["data"].take() {
                        serde_json::Value::Array(items) => all.extend(items),
                        _ => return Err(Reply::http(HttpErrorCode::InternalError)),
                    },
                    Err(_) => return Err(Reply::http(HttpErrorCode::InternalError)),
                }
            }
            Answer::Reply(reply) => return Err(reply),
            _ => return Err(Reply::http(HttpErrorCode::InternalError)),
        }
    }
    Ok(all)
}

/// `GET /api/user/{user_id}/accounts`: the user's accounts from every shard, as one list.
async fn owned_accounts(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    user_id: UserId,
) -> Reply {
    match gather_lists(ctx, conn, answers, Query::OwnedAccounts(user_id)).await {
        Ok(mut all) => {
            all.sort_by(|a, b| a["account_id"].as_str().cmp(&b["account_id"].as_str()));
            Reply::success(&all)
        }
        Err(reply) => reply,
    }
}

/// `GET /api/admin/settlement/history`: each settled day once (newest last), with its
/// settlement prices and how many statements the shards hold for it.
async fn settled_days(ctx: &ShardContext, conn: u64, answers: &LocalReceiver<(u32, Answer)>) -> Reply {
    let all = match gather_lists(ctx, conn, answers, Query::SettledDays).await {
        Ok(all) => all,
        Err(reply) => return reply,
    };
    let ids = ctx.instrument_ids();
    let mut days: std::collections::BTreeMap<u64, (u64, serde_json::Value)> = Default::default();
    for day in all {
        let Some(trading_day) = day["trading_day"].as_u64() else { continue };
        let entry = days.entry(trading_day).or_insert((0, serde_json::Value::Null));
        entry.0 += day["statements"].as_u64().unwrap_or(0);
        if entry.1.is_null() && !day["cut"].is_null() {
            entry.1 = day["cut"].clone();
        }
    }
    let list: Vec<serde_json::Value> = days
        .into_iter()
        .map(|(trading_day, (statements, cut))| {
            let prices: serde_json::Map<String, serde_json::Value> = ids
                .iter()
                .enumerate()
                .filter_map(|(i, id)| {
                    let price = cut["prices"][i].as_i64()?;
                    Some((id.clone(), serde_json::json!(crate::domain::types::price_to_f64(price))))
                })
                .collect();
            serde_json::json!({
                "trading_day": trading_day,
                "next_trading_day": cut["next_day"],
                "statements": statements,
                "settlement_prices": prices,
            })
        })
        .collect();
    Reply::success(&list)
}

/// An instrument's status or parameters changed on every shard, its owner first (whose matcher
/// is the authority), each change logged there; the owner's answer. One change at a time and
/// none while a settlement runs (refused up front, 409, 9016), so every shard sees the same
/// changes in the same order (`AdminGate`).
async fn instrument_change(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    action: Action,
) -> Reply {
    let _gate = match ctx.admin_gate.change().await {
        Ok(held) => held,
        Err(refused) => return refused,
    };
    let owner = ctx.router.target(&action, ctx.shard);
    let first = match ctx.ask(conn, answers, owner, action.clone()).await {
        Answer::Reply(reply) => reply,
        _ => return Reply::http(HttpErrorCode::InternalError),
    };
    if first.status != 200 {
        return first;
    }
    for shard in (0..ctx.shards).filter(|&s| s != owner) {
        match ctx.ask(conn, answers, shard, action.clone()).await {
            Answer::Reply(reply) if reply.status == 200 => {}
            Answer::Reply(reply) => return reply,
            _ => return Reply::http(HttpErrorCode::InternalError),
        }
    }
    first
}

/// Runs `actions` one after the other (each on its owner shard); answers every result in order,
/// stopping at the first refusal (what ran before it stays done).
async fn run_batch(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    actions: Vec<Action>,
) -> Reply {
    let mut done = Vec::with_capacity(actions.len());
    for action in actions {
        let reply = ctx.call(conn, answers, action).await;
        if reply.status != 200 {
            return reply;
        }
        let mut v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        done.push(v["data"].take());
    }
    Reply::success(&done)
}

/// Writes one answered request into `out` and counts it.
fn write_entry(ctx: &ShardContext, out: &mut Vec<u8>, entry: Entry) {
    let output = entry.output.unwrap_or_else(|| Output::Json(Reply::http(HttpErrorCode::InternalError), None));
    match output {
        Output::Json(reply, allow) => {
            count_status(ctx, reply.status);
            match allow {
                Some(allow) => write_response_with_headers(
                    out,
                    reply.status,
                    CONTENT_TYPE_JSON,
                    &[("Allow", allow)],
                    &reply.body,
                    entry.keep_alive,
                ),
                None => write_response(out, reply.status, CONTENT_TYPE_JSON, &reply.body, entry.keep_alive),
            }
        }
        Output::Text(text) => write_response(out, 200, CONTENT_TYPE_PROMETHEUS, text.as_bytes(), entry.keep_alive),
    }
    if let Some(pattern) = entry.pattern {
        ctx.core.borrow_mut().metrics.endpoint_since(pattern, entry.parsed_at);
    }
}

fn count_status(ctx: &ShardContext, status: u16) {
    if status >= 500 {
        bump(&ctx.counters.errors_5xx);
    } else if status >= 400 {
        bump(&ctx.counters.errors_4xx);
    }
}

enum TextKind {
    Prometheus,
    Latency,
}

enum Step {
    /// Answered on this shard (errors, health), with the `Allow` header of a 405.
    Answer(Reply, Option<&'static str>),
    /// Plain text gathered from every shard.
    GatherText(TextKind),
    /// Every shard clears its latency histograms.
    ResetLatency,
    /// Needs the shard that owns what it names.
    Ask(Action),
    /// Needs every shard (`/admin/state`).
    Gather,
    /// Every shard's answer to this query, as one list (`/admin/storage/stats`,
    /// `/admin/compaction/trigger`).
    Storage(Query),
    /// `POST /api/auth/login`.
    Login { user_id: UserId, password: String },
    /// An action for a user who must exist first (an account opened by an admin for a user).
    ForUser { user_id: UserId, action: Action },
    /// `GET /api/user/{user_id}/accounts`.
    Owned(UserId),
    /// Several actions, one after the other, their answers as one list (batch settlement prices).
    Batch(Vec<Action>),
    /// `POST /api/admin/settlement/execute` with the next trading day, if given.
    Settle(Option<u32>),
    /// `GET /api/admin/settlement/history`.
    SettledDays,
    /// `GET /api/admin/settlement/detail/{day}`.
    SettledDay(u32),
    /// `POST /api/admin/account/{id}/force-liquidate`.
    ForceLiquidate(crate::domain::name::AccountId),
    /// A change of an instrument's status or parameters, on every shard (its owner first).
    InstrumentChange(Action),
}

fn bad_body(e: BodyError) -> Step {
    let error = HttpError::new(HttpErrorCode::InvalidBody);
    Step::Answer(Reply::error(error.status, error.code, &e.0), None)
}

fn plan(ctx: &ShardContext, target: Route, body: &[u8], caller: Caller) -> Step {
    // Paths that name a user: another user's look like users that do not exist.
    if let (Route::CreateUserAccount { user_id } | Route::UserAccounts { user_id }, Caller::User(me)) = (target, caller)
    {
        if user_id != me {
            return Step::Answer(Reply::http(HttpErrorCode::UserNotFound), None);
        }
    }
    let step = plan_action(ctx, target, body);
    let (me, admin) = match caller {
        Caller::Anyone => return for_owner(step, None),
        Caller::Admin(me) => (me, true),
        Caller::User(me) => (me, false),
    };
    match step {
        // Opening an account: a user's own always; an admin's for the owner it names.
        Step::Ask(Action::OpenAccount { account_id, init_cash, password, owner }) if !admin => {
            if owner.is_some_and(|o| o != me) {
                return Step::Answer(Reply::http(HttpErrorCode::AdminOnly), None);
            }
            Step::Ask(Action::OpenAccount { account_id, init_cash, password, owner: Some(me) })
        }
        step if admin => for_owner(step, Some(me)),
        Step::Ask(action) if target.access() == Access::User => {
            Step::Ask(Action::AsUser { user: me, action: Box::new(action) })
        }
        step => step,
    }
}

/// An account opened for an owner other than the caller (`me`) waits for the owner's shard to
/// say the user exists.
fn for_owner(step: Step, me: Option<UserId>) -> Step {
    match step {
        Step::Ask(action @ Action::OpenAccount { owner: Some(owner), .. }) if Some(owner) != me => {
            Step::ForUser { user_id: owner, action }
        }
        step => step,
    }
}

/// The step of a route, for any caller (`plan` applies who the caller is).
fn plan_action(ctx: &ShardContext, target: Route, body: &[u8]) -> Step {
    let decoded = match target {
        Route::Health => {
            let data = serde_json::json!({"status": "ok", "shard": ctx.shard, "shards": ctx.shards});
            return Step::Answer(Reply::success(&data), None);
        }
        Route::Metrics => return Step::GatherText(TextKind::Prometheus),
        Route::AdminLatency => return Step::GatherText(TextKind::Latency),
        Route::AdminLatencyReset => return Step::ResetLatency,
        Route::OpenAccount => body::open_account(body),
        Route::Deposit => body::transfer(body, true),
        Route::Withdraw => body::transfer(body, false),
        Route::SubmitOrder => body::submit(body, || ctx.auto_client_id()),
        Route::CancelOrder => body::cancel(body),
        Route::ModifyOrder => body::modify(body),
        Route::Account { account_id } => Ok(Action::Query(Query::Account(account_id))),
        Route::Order { order_id } => match order_id.as_str().parse::<u64>() {
            Ok(id) => Ok(Action::Query(Query::Order(id))),
            Err(_) => {
                let code = crate::domain::risk::RejectCode::OrderNotFound;
                return Step::Answer(Reply::reject(code), None);
            }
        },
        Route::UserOrders { user_id } => Ok(Action::Query(Query::UserOrders(user_id))),
        Route::Positions { user_id } => Ok(Action::Query(Query::Positions(user_id))),
        Route::UserTrades { user_id } => Ok(Action::Query(Query::UserTrades(user_id))),
        Route::Instruments => Ok(Action::Query(Query::Instruments)),
        Route::ShinnyInstruments => {
            return Step::Answer(Reply { status: 200, body: ctx.router.shinny_file().to_vec() }, None);
        }
        Route::OrderBook { instrument_id, depth } => Ok(Action::Query(Query::OrderBook { instrument_id, depth })),
        Route::Tick { instrument_id } => Ok(Action::Query(Query::Tick(instrument_id))),
        Route::MarketTrades { instrument_id, limit } => Ok(Action::Query(Query::MarketTrades { instrument_id, limit })),
        Route::Kline { instrument_id, period, count } => {
            Ok(Action::Query(Query::Kline { instrument_id, period_index: period.index(), count }))
        }
        Route::AdminState => return Step::Gather,
        Route::History { series, range } => Ok(Action::Query(Query::History { series, range })),
        Route::AdminStorageStats => return Step::Storage(Query::StorageStats),
        Route::AdminCompactionTrigger => return Step::Storage(Query::TriggerCompaction),
        Route::AdminCheckpoint => return Step::Storage(Query::Checkpoint),
        Route::Register => body::credentials(body).map(|(user_id, clear)| Action::Register {
            user_id,
            password: Password::Clear(clear),
            admin: false,
        }),
        Route::Login => {
            return match body::credentials(body) {
                Ok((user_id, password)) => Step::Login { user_id, password },
                Err(e) => bad_body(e),
            }
        }
        Route::CreateUserAccount { user_id } => body::create_account(body, user_id, || ctx.new_account_id(&user_id)),
        Route::UserAccounts { user_id } => return Step::Owned(user_id),
        Route::AdminFreeze { account_id, frozen } => {
            body::freeze_mode(body).map(|mode| Action::SetFrozen { account_id, frozen, mode })
        }
        Route::AdminForceLiquidate { account_id } => return Step::ForceLiquidate(account_id),
        Route::SettlementSetPrice => body::settlement_price(body),
        Route::SettlementSetPrices => {
            return match body::settlement_prices(body) {
                Ok(actions) => Step::Batch(actions),
                Err(e) => bad_body(e),
            }
        }
        Route::SettlementExecute => {
            return match body::settlement_execute(body) {
                Ok(next_day) => Step::Settle(next_day),
                Err(e) => bad_body(e),
            }
        }
        Route::SettlementHistory => return Step::SettledDays,
        Route::AdminInstrumentStatus { instrument_id, status } => {
            return Step::InstrumentChange(Action::SetInstrumentStatus { instrument_id, status })
        }
        Route::AdminInstrumentCreate => {
            return match body::instrument_create(body) {
                Ok(inst) => Step::InstrumentChange(Action::CreateInstrument(Box::new(inst))),
                Err(e) => bad_body(e),
            }
        }
        Route::AdminInstrumentUpdate { instrument_id } => {
            return match body::instrument_update(body) {
                Ok(update) => Step::InstrumentChange(Action::UpdateInstrument { instrument_id, update }),
                Err(e) => bad_body(e),
            }
        }
        Route::SettlementDetail { trading_day } => return Step::SettledDay(trading_day),
        Route::Statements { account_id } => Ok(Action::Query(Query::Statements(account_id))),
    };
    match decoded {
        Ok(action) => Step::Ask(action),
        Err(e) => bad_body(e),
    }
}
