//! One HTTP/1.1 connection on its shard: read, parse (pipelined requests are answered in
//! order, one at a time), route, decode the body, ask the shard that owns the account or
//! instrument (this one or another, over its channel), write the reply.

use super::body::{self, BodyError};
use super::engine_core::{ShardMsg, SharedCore, Waiters};
use super::http::{
    parse_request, route, write_http_error, write_response, write_response_with_headers, HttpError, HttpErrorCode,
    Limits, ParseOutcome, Route, CONTENT_TYPE_JSON, CONTENT_TYPE_PROMETHEUS,
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

/// Which shard owns what a request names.
pub struct Router {
    pub shards: u16,
    instruments: Vec<Instrument>,
    index: FastMap<InstrumentId, u32>,
    owner: Vec<u16>,
}

impl Router {
    pub fn new(instruments: Vec<Instrument>, shards: u16) -> Self {
        let index = instruments.iter().enumerate().map(|(i, inst)| (inst.instrument_id, i as u32)).collect();
        let owner = instruments.iter().map(|i| instrument_shard(i, shards)).collect();
        Self { shards, instruments, index, owner }
    }

    /// The config position of an instrument (`cu2501` or `SHFE.cu2501`).
    pub fn instrument_slot(&self, id: &InstrumentId) -> Option<u32> {
        find_instrument(&self.instruments, &self.index, id)
    }

    /// The shard to ask; `here` for what any shard can answer (and for unknown instruments,
    /// which any shard refuses the same way).
    pub fn target(&self, action: &Action, here: usize) -> usize {
        let account = |id| account_shard(id, self.shards) as usize;
        let instrument = |id: &InstrumentId| self.instrument_slot(id).map_or(here, |s| self.owner[s as usize] as usize);
        match action {
            Action::OpenAccount { account_id, .. }
            | Action::Transfer { account_id, .. }
            | Action::Cancel { account_id, .. }
            | Action::Modify { account_id, .. } => account(account_id),
            Action::Submit(order) => account(&order.account_id),
            Action::Query(query) => match query {
                Query::Account(id) | Query::UserOrders(id) | Query::Positions(id) | Query::UserTrades(id) => {
                    account(id)
                }
                Query::Order(id) => order_shard(*id, self.shards) as usize,
                Query::OrderBook { instrument_id, .. }
                | Query::Tick(instrument_id)
                | Query::MarketTrades { instrument_id, .. }
                | Query::Kline { instrument_id, .. } => instrument(instrument_id),
                Query::Instruments | Query::ShardState | Query::ShardMetrics | Query::ResetLatency => here,
            },
        }
    }
}

/// Per-shard counters (exposed by `/metrics`).
#[derive(Default)]
pub struct ShardCounters {
    pub connections_accepted: Cell<u64>,
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
            next_conn: Cell::new(1),
            auto_ids: Cell::new(0),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A client order id for an order submitted without one: unique across shards and restarts
    /// (wall-clock nanoseconds, shard, counter).
    fn auto_client_id(&self) -> ClientOrderId {
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

    /// Asks shard `target` and waits for its answer.
    async fn ask(&self, conn: u64, answers: &LocalReceiver<Answer>, target: usize, action: Action) -> Answer {
        let gone = || {
            Answer::Reply(Reply::http_message(HttpErrorCode::InternalError, "internal server error: a shard is gone"))
        };
        let origin = Origin { shard: self.shard, conn };
        if target == self.shard {
            self.core.borrow_mut().submit(origin, action);
        } else {
            let Some(Some(tx)) = self.links.get(target) else {
                return gone();
            };
            if tx.send(ShardMsg::Request { origin, action, sent: std::time::Instant::now() }).await.is_err() {
                return gone();
            }
        }
        answers.recv().await.unwrap_or_else(gone)
    }

    async fn call(&self, conn: u64, answers: &LocalReceiver<Answer>, action: Action) -> Reply {
        let target = self.router.target(&action, self.shard);
        match self.ask(conn, answers, target, action).await {
            Answer::Reply(reply) => reply,
            Answer::State(_) | Answer::Metrics(_) => Reply::http(HttpErrorCode::InternalError),
        }
    }

    /// Every shard's metrics (`/metrics`, `/admin/latency`).
    async fn gather_metrics(&self, conn: u64, answers: &LocalReceiver<Answer>) -> Result<Gathered, Reply> {
        let mut all = Vec::with_capacity(self.shards);
        for target in 0..self.shards {
            match self.ask(conn, answers, target, Action::Query(Query::ShardMetrics)).await {
                Answer::Metrics(m) => all.push((target, *m)),
                Answer::Reply(reply) => return Err(reply),
                Answer::State(_) => return Err(Reply::http(HttpErrorCode::InternalError)),
            }
        }
        Ok(Gathered(all))
    }

    /// `POST /admin/latency/reset`: every shard clears its histograms.
    async fn reset_latency(&self, conn: u64, answers: &LocalReceiver<Answer>) -> Reply {
        for target in 0..self.shards {
            if let Answer::Reply(reply) = self.ask(conn, answers, target, Action::Query(Query::ResetLatency)).await {
                if reply.status != 200 {
                    return reply;
                }
            }
        }
        Reply::success(&serde_json::json!({"reset": self.shards}))
    }

    /// `/admin/state`: every shard's state, merged, with the invariants checked over all.
    async fn gather_state(&self, conn: u64, answers: &LocalReceiver<Answer>) -> Reply {
        let mut states: Vec<ShardState> = Vec::with_capacity(self.shards);
        for target in 0..self.shards {
            match self.ask(conn, answers, target, Action::Query(Query::ShardState)).await {
                Answer::State(state) => states.push(*state),
                Answer::Reply(reply) => return reply,
                Answer::Metrics(_) => return Reply::http(HttpErrorCode::InternalError),
            }
        }
        cluster_reply(states, |id| self.router.instrument_slot(id))
    }
}

/// Serves one connection until the peer closes, an unframeable request, or shutdown.
pub async fn serve(ctx: Rc<ShardContext>, stream: TcpStream) {
    let conn = ctx.next_conn.get();
    ctx.next_conn.set(conn + 1);
    bump(&ctx.counters.connections_accepted);
    ctx.counters.connections_open.set(ctx.counters.connections_open.get() + 1);
    let (tx, rx) = local_channel::new_bounded::<Answer>(1);
    ctx.waiters.borrow_mut().insert(conn, tx);
    let _ = stream.set_nodelay(true);
    // Idle reads wake up now and then so a shutdown can close idle connections.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let result = serve_loop(&ctx, stream, conn, &rx).await;
    if let Err(e) = result {
        tracing::debug!("connection {conn} on shard {}: {e}", ctx.shard);
    }
    ctx.waiters.borrow_mut().remove(&conn);
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

async fn serve_loop(
    ctx: &ShardContext,
    mut stream: TcpStream,
    conn: u64,
    replies: &LocalReceiver<Answer>,
) -> std::io::Result<()> {
    let limits = ctx.limits;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Answer every complete request in the buffer, in order.
        let mut start = 0;
        let mut close = false;
        while start < buf.len() {
            match parse_request(&buf[start..], &limits) {
                ParseOutcome::Partial => break,
                ParseOutcome::Error(error) => {
                    count_status(ctx, error.status);
                    write_http_error(&mut out, &error, false);
                    close = true;
                    break;
                }
                ParseOutcome::Complete { request, consumed } => {
                    let parsed_at = std::time::Instant::now();
                    bump(&ctx.counters.requests);
                    let keep_alive = request.keep_alive && !ctx.stopping();
                    let target = route(request.method, request.path, request.query);
                    let pattern = target.as_ref().ok().map(Route::pattern);
                    let step = match target {
                        Err(error) => Step::Answer(Reply::error(error.status, error.code, error.message), error.allow),
                        Ok(target) => plan(ctx, target, request.body),
                    };
                    // Parsing started when the bytes arrived; this counts the work, not the wait.
                    ctx.core.borrow_mut().metrics.stage_since("parse", parsed_at);
                    start += consumed;
                    let (reply, allow) = match step {
                        Step::Answer(reply, allow) => (reply, allow),
                        Step::Ask(action) => (ctx.call(conn, replies, action).await, None),
                        Step::Gather => (ctx.gather_state(conn, replies).await, None),
                        Step::ResetLatency => (ctx.reset_latency(conn, replies).await, None),
                        Step::GatherText(kind) => match ctx.gather_metrics(conn, replies).await {
                            Ok(gathered) => {
                                let text = match kind {
                                    TextKind::Prometheus => gathered.prometheus(),
                                    TextKind::Latency => gathered.latency_text(),
                                };
                                write_response(&mut out, 200, CONTENT_TYPE_PROMETHEUS, text.as_bytes(), keep_alive);
                                if let Some(pattern) = pattern {
                                    ctx.core.borrow_mut().metrics.endpoint_since(pattern, parsed_at);
                                }
                                if !keep_alive {
                                    close = true;
                                    break;
                                }
                                continue;
                            }
                            Err(reply) => (reply, None),
                        },
                    };
                    count_status(ctx, reply.status);
                    match allow {
                        Some(allow) => write_response_with_headers(
                            &mut out,
                            reply.status,
                            CONTENT_TYPE_JSON,
                            &[("Allow", allow)],
                            &reply.body,
                            keep_alive,
                        ),
                        None => write_response(&mut out, reply.status, CONTENT_TYPE_JSON, &reply.body, keep_alive),
                    }
                    if let Some(pattern) = pattern {
                        ctx.core.borrow_mut().metrics.endpoint_since(pattern, parsed_at);
                    }
                    if !keep_alive {
                        close = true;
                        break;
                    }
                }
            }
        }
        buf.drain(..start);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            let _ = stream.close().await;
            return Ok(());
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
}

fn bad_body(e: BodyError) -> Step {
    let error = HttpError::new(HttpErrorCode::InvalidBody);
    Step::Answer(Reply::error(error.status, error.code, &e.0), None)
}

fn plan(ctx: &ShardContext, target: Route, body: &[u8]) -> Step {
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
        Route::OrderBook { instrument_id, depth } => Ok(Action::Query(Query::OrderBook { instrument_id, depth })),
        Route::Tick { instrument_id } => Ok(Action::Query(Query::Tick(instrument_id))),
        Route::MarketTrades { instrument_id, limit } => Ok(Action::Query(Query::MarketTrades { instrument_id, limit })),
        Route::Kline { instrument_id, period, count } => {
            Ok(Action::Query(Query::Kline { instrument_id, period_index: period.index(), count }))
        }
        Route::AdminState => return Step::Gather,
    };
    match decoded {
        Ok(action) => Step::Ask(action),
        Err(e) => bad_body(e),
    }
}
