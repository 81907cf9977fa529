//! One DIFF session (tqsdk's protocol) on a WebSocket: client messages in, one `rtn_data` per
//! `peek_message` out (`diff::session::Session` composes everything pending into one patch).
//!
//! Served so far: `peek_message`, `subscribe_quote` (the `ins_list` echo, `mdhis_more_data`,
//! each listed quote as the owning shard has it, then its changes through the shard's quote
//! fan-out), `set_chart` for the k-lines or ticks of one instrument (the history its shard
//! keeps, then live changes through the same fan-out), `confirm_settlement`, and login and
//! trading (`req_login`, `insert_order`, `cancel_order`, `req_transfer`, in `diff_trading`).
//! Charts of several instruments are answered with an ERROR notify (code 9105), so a client
//! learns at once instead of waiting. Bad messages get an ERROR notify too; the connection
//! stays open.

use super::conn::ShardContext;
use super::delivery_budget::Turn;
use super::diff_chart::{kline_topic, tick_topic};
use super::diff_quote::{diff_quote, now_ns};
use super::quote_fanout::Topic;
use super::service::{Action, Answer, Query};
use super::ws_io::{self, Event, Incoming};
use crate::diff::messages::{notify, ClientMessage, NotifyLevel, NotifyType, SetChart};
use crate::diff::session::Session;
use crate::domain::market_data::kline::{kline_period_index, KLINE_PERIODS_NS};
use crate::domain::name::InstrumentId;
use async_tungstenite::WebSocketStream;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

/// Most bars one chart gets (the HTTP k-line query's limit).
/// tqsdk's own limit on `data_length` (what the engine keeps comes first, older bars from the
/// history store).
const MAX_CHART_BARS: i64 = 8_964;

/// Stable codes of the server's DIFF notifies.
pub mod codes {
    /// The message is not JSON, not an object, or lacks a field its `aid` needs.
    pub const MALFORMED: i64 = 9101;
    /// An `aid` the server does not know.
    pub const UNKNOWN_AID: i64 = 9102;
    /// A symbol in `ins_list` the server does not list.
    pub const UNKNOWN_INSTRUMENT: i64 = 9103;
    /// A well-formed request the server cannot serve as asked (e.g. a k-line duration it
    /// does not keep); the content says why.
    pub const BAD_REQUEST: i64 = 9104;
    /// A request this server does not serve over DIFF yet.
    pub const NOT_SERVED_YET: i64 = 9105;
    /// `req_login` with an unknown user name or a wrong password (one message for both).
    pub const LOGIN_FAILED: i64 = 9106;
    /// A trading request before a successful `req_login`, or a second login.
    pub const NOT_LOGGED_IN: i64 = 9107;
    /// A request naming another user than the one logged in.
    pub const OTHER_USER: i64 = 9108;
}

pub struct DiffSession<'a> {
    pub(super) ctx: &'a ShardContext,
    pub(super) conn: u64,
    pub(super) answers: &'a LocalReceiver<(u32, Answer)>,
    /// Shared with the shard's quote and account fan-outs, which compose changes into it.
    pub(super) session: Rc<RefCell<Session>>,
    /// The fan-outs wake the session's task here when they added something.
    pub(super) wake_tx: Rc<LocalSender<()>>,
    wake_rx: LocalReceiver<()>,
    /// Notifies sent so far (their keys must be unique within a session).
    notices: u64,
    /// The account logged in to, with its password hash (`req_transfer` checks it too).
    pub(super) login: Option<super::diff_trading::Login>,
    /// Transfers answered so far (keys of `trade/<user>/transfers`).
    pub(super) transfers: u64,
    /// Open charts: chart id -> the fan-out topic of its series.
    charts: std::collections::HashMap<String, String>,
}

impl<'a> DiffSession<'a> {
    pub fn new(ctx: &'a ShardContext, conn: u64, answers: &'a LocalReceiver<(u32, Answer)>) -> Self {
        let (wake_tx, wake_rx) = local_channel::new_bounded(1);
        let session = Rc::new(RefCell::new(Session::with_wake_past(ctx.ws_limits.max_pending_bytes)));
        Self {
            ctx,
            conn,
            answers,
            session,
            wake_tx: Rc::new(wake_tx),
            wake_rx,
            notices: 0,
            login: None,
            transfers: 0,
            charts: Default::default(),
        }
    }

    /// Runs the session until the client closes, the connection fails, or shutdown.
    pub async fn run(mut self, ws: WebSocketStream<TcpStream>) -> Result<(), String> {
        let result = self.serve(ws).await;
        self.ctx.fanout.borrow_mut().unsubscribe_all(self.conn);
        self.logout().await;
        result
    }

    async fn serve(&mut self, mut ws: WebSocketStream<TcpStream>) -> Result<(), String> {
        // tqsdk-js peeks only after it has received something: say who we are first.
        let hello = json!({"aid": "rtn_brokers", "brokers": ["local"]}).to_string();
        ws.send(Message::text(hello)).await.map_err(|e| e.to_string())?;
        // tqsdk's TqApi waits for `mdhis_more_data: false` before it subscribes to anything,
        // and md and td look alike: every session's first peek gets it (harmless to td).
        self.session.borrow_mut().push(&json!({"ins_list": "", "mdhis_more_data": false}));
        let mut turn = Turn::new(self.ctx.delivery_budget.as_deref(), &self.ctx.counters.ws_budget_waits);
        loop {
            // Waiting for data: on the followed topics' lists, so their next change wakes us.
            self.ctx.fanout.borrow_mut().arm(self.conn, &self.session, &self.wake_tx);
            match ws_io::next_event(self.ctx, &mut ws, &self.wake_rx, turn.wait_on()).await {
                Event::Stop => return ws_io::close(&mut ws, CloseCode::Away, "server shutting down").await,
                Event::Woken => {}
                Event::Token => turn.granted(),
                Event::Message(None) => return Ok(()),
                Event::Message(Some(Err(e))) => return Err(e.to_string()),
                Event::Message(Some(Ok(message))) => match ws_io::incoming(&message) {
                    Incoming::Text(text) => self.handle(text).await,
                    Incoming::NotText => self.notify_error(codes::MALFORMED, "a binary frame that is not UTF-8 text"),
                    Incoming::Close => return Ok(()),
                    Incoming::Nothing => {}
                },
            }
            // Borrows end before each await: the fan-out borrows the session meanwhile.
            // Pending data is one merged patch, bounded by the size of the client's tree, so
            // only a client that never peeks while its tree grows (trades), or a bug, gets here.
            let over = self.session.borrow().over_limit(self.ctx.ws_limits.max_pending_bytes);
            if let Some(over) = over {
                return ws_io::close(&mut ws, CloseCode::Policy, &over.to_string()).await;
            }
            let (ready, urgent) = self.session.borrow().ready_to_send();
            let text = if turn.may_send(ready, urgent) { self.session.borrow_mut().take_ready() } else { None };
            if let Some(text) = text {
                ws_io::send(self.ctx, &mut ws, text).await?;
            }
        }
    }

    async fn handle(&mut self, text: &str) {
        let message = match ClientMessage::parse(text) {
            Ok(message) => message,
            Err(e) => {
                let code = match e {
                    crate::diff::messages::MessageError::UnknownAid(_) => codes::UNKNOWN_AID,
                    _ => codes::MALFORMED,
                };
                return self.notify_error(code, &e.to_string());
            }
        };
        match message {
            ClientMessage::PeekMessage => self.session.borrow_mut().peek(),
            ClientMessage::ConfirmSettlement => {}
            ClientMessage::ReqLogin(login) => self.login(login).await,
            ClientMessage::InsertOrder(order) => self.insert_order(order).await,
            ClientMessage::CancelOrder(cancel) => self.cancel_order(cancel).await,
            ClientMessage::ReqTransfer(transfer) => self.transfer(transfer).await,
            ClientMessage::SetChart(chart) => self.set_chart(chart).await,
            ClientMessage::SubscribeQuote(subscribe) => {
                let symbols: Vec<String> = subscribe.instruments().map(str::to_owned).collect();
                // The new set replaces the old one.
                self.ctx.fanout.borrow_mut().unsubscribe_quotes(self.conn);
                self.session.borrow_mut().push(&json!({"ins_list": subscribe.ins_list, "mdhis_more_data": false}));
                for symbol in symbols {
                    self.push_quote(&symbol).await;
                }
            }
        }
    }

    /// `set_chart` for the k-lines (`duration` > 0, one the server keeps) or ticks
    /// (`duration` 0) of one instrument: the last `view_width` its shard keeps, as
    /// `klines/<symbol>/<duration>` or `ticks/<symbol>`, and `charts/<chart_id>`; then the
    /// series' changes as they trade. A new `set_chart` with the same id replaces the chart; an
    /// empty `ins_list` deletes it. Several instruments in one chart are refused with a notify.
    async fn set_chart(&mut self, chart: SetChart) {
        let symbols: Vec<&str> = chart.instruments().collect();
        let symbol = match symbols[..] {
            [] => {
                self.drop_chart(&chart.chart_id);
                return self.session.borrow_mut().push(&json!({"charts": {chart.chart_id.as_str(): null}}));
            }
            [one] => one.to_owned(),
            _ => return self.notify_error(codes::NOT_SERVED_YET, "set_chart with several instruments"),
        };
        if chart.duration != 0 && kline_period_index(chart.duration).is_none() {
            let kept: Vec<String> = KLINE_PERIODS_NS.iter().map(|p| p.to_string()).collect();
            let text = format!(
                "k-lines of {} ns are not kept; kept durations (ns): {} (0 for ticks)",
                chart.duration,
                kept.join(", ")
            );
            return self.notify_error(codes::BAD_REQUEST, &text);
        }
        let listed = InstrumentId::new(&symbol).and_then(|id| Some((self.ctx.full_symbol(&id)?, id)));
        let Some((full, instrument_id)) = listed else {
            return self.notify_error(codes::UNKNOWN_INSTRUMENT, &format!("unknown instrument {symbol}"));
        };
        let topic = if chart.duration == 0 { tick_topic(&full) } else { kline_topic(&full, chart.duration) };
        // Follow the series before asking for its history (as for quotes): nothing is missed.
        self.drop_chart(&chart.chart_id);
        self.charts.insert(chart.chart_id.clone(), topic.clone());
        self.ctx.fanout.borrow_mut().subscribe(&topic, Topic::Chart, self.conn, &self.session, self.wake_tx.clone());
        let count = chart.view_width.clamp(1, MAX_CHART_BARS) as u32;
        let query = Query::Chart { instrument_id, duration_ns: chart.duration, count };
        let reply = self.ctx.call(self.conn, self.answers, Action::Query(query)).await;
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let data = &body["data"];
        if reply.status != 200 || !data["series"].is_object() {
            let text = format!("chart of {full}: {}", body["error"]["message"].as_str().unwrap_or("unavailable"));
            return self.notify_error(codes::UNKNOWN_INSTRUMENT, &text);
        }
        let (left_id, right_id) =
            (data["from_id"].as_i64().unwrap_or(-1), data["series"]["last_id"].as_i64().unwrap_or(-1));
        let mut state = serde_json::to_value(&chart).unwrap_or(Value::Null);
        state["aid"] = json!("set_chart");
        let series = if chart.duration == 0 {
            json!({"ticks": {full.as_str(): data["series"]}})
        } else {
            json!({"klines": {full.as_str(): {chart.duration.to_string(): data["series"]}}})
        };
        let mut session = self.session.borrow_mut();
        session.push_snapshot(&topic, &series);
        session.push(&json!({"charts": {chart.chart_id.as_str(): {
            "left_id": left_id, "right_id": right_id, "more_data": false, "state": state,
        }}}));
    }

    /// Forgets chart `chart_id`; its series is no longer followed unless another chart shows it.
    fn drop_chart(&mut self, chart_id: &str) {
        let Some(topic) = self.charts.remove(chart_id) else { return };
        if !self.charts.values().any(|t| *t == topic) {
            self.ctx.fanout.borrow_mut().unsubscribe(&topic, self.conn);
        }
    }

    /// The quote of `symbol` as its shard has it now, or a WARNING notify if it is not listed.
    async fn push_quote(&mut self, symbol: &str) {
        let listed = InstrumentId::new(symbol).and_then(|id| Some((self.ctx.full_symbol(&id)?, id)));
        let Some((full, id)) = listed else {
            let text = format!("unknown instrument {symbol}");
            return self.notify(NotifyLevel::Warning, codes::UNKNOWN_INSTRUMENT, &text);
        };
        // Follow changes before asking for the snapshot: a change published meanwhile is
        // older than the snapshot, which covers it (`push_snapshot`), so none is missed.
        self.ctx.fanout.borrow_mut().subscribe(
            &full,
            super::quote_fanout::Topic::Quote,
            self.conn,
            &self.session,
            self.wake_tx.clone(),
        );
        let reply = self.ctx.call(self.conn, self.answers, Action::Query(Query::Tick(id))).await;
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if reply.status != 200 {
            let text = format!("quote of {full}: {}", body["error"]["message"].as_str().unwrap_or("unavailable"));
            return self.notify(NotifyLevel::Warning, codes::UNKNOWN_INSTRUMENT, &text);
        }
        let quote = diff_quote(&full, &body["data"], now_ns());
        self.session.borrow_mut().push_snapshot(&full, &json!({"quotes": {&full: quote}}));
    }

    pub(super) fn notify_error(&mut self, code: i64, content: &str) {
        self.notify(NotifyLevel::Error, code, content);
    }

    pub(super) fn notify(&mut self, level: NotifyLevel, code: i64, content: &str) {
        self.notices += 1;
        let key = format!("qx{}", self.notices);
        self.session.borrow_mut().push(&notify(&key, NotifyType::Message, level, code, content));
    }
}
