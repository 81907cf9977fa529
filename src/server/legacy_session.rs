//! One session of the original QAExchange's JSON WebSocket API (path `/ws/legacy`): JSON text
//! frames tagged by `type` (docs/API.md "Legacy JSON WebSocket API").
//!
//! Requests are answered at once (`auth_response`, `subscribe_response`, `order_response`,
//! `account_update`, `pong`, `error`); everything else is pushed as it happens, without a
//! peek: the shard's quote and account fan-outs compose their DIFF patches into this session's
//! `diff::session::Session` exactly as for a DIFF session and wake its task, which takes the
//! composed patch and translates it: `quotes/<symbol>` -> `quote`, `trade/<user>/orders/<id>`
//! -> `order_status`, `.../trades/<key>` -> `trade`, `.../accounts/CNY` -> `account_update`.
//! What waits for the client is therefore one composed patch, bounded like a DIFF session's
//! (`[websocket] max_pending_kib`), and a client that stops reading is cut off with a reason.

use super::body::OrderRef;
use super::conn::ShardContext;
use super::delivery_budget::Turn;
use super::diff_quote::{diff_quote, now_ns};
use super::diff_session::codes as diff_codes;
use super::diff_trading::{error_of, FollowLink, Login};
use super::quote_fanout::Topic;
use super::service::{Action, Answer, Query, Reply};
use super::ws_io::{self, Event, Incoming};
use crate::diff::merge_patch;
use crate::diff::session::Session;
use crate::domain::command::InsertOrder;
use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use crate::domain::types::{fixed4_opt, Direction, Offset, Price, PriceType, TimeCondition, Volume, VolumeCondition};
use async_tungstenite::WebSocketStream;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use tungstenite::protocol::frame::coding::CloseCode;

/// The URL path of the legacy API on the WebSocket port (any query string); every other path
/// is DIFF.
pub const PATH: &str = "/ws/legacy";

/// Stable codes of the legacy `error` message (the DIFF notify codes where the meaning is the
/// same).
pub mod codes {
    use super::diff_codes;
    /// Not JSON, not an object, not UTF-8, no string `type`, or a field missing, unknown or of
    /// the wrong type for its `type` (the message says which).
    pub const MALFORMED: i64 = diff_codes::MALFORMED;
    /// A `type` the server does not know.
    pub const UNKNOWN_TYPE: i64 = diff_codes::UNKNOWN_AID;
    /// A trading request or `query_account` before a successful `auth`.
    pub const NOT_AUTHENTICATED: i64 = diff_codes::NOT_LOGGED_IN;
    /// A request whose `account_id` names another account than the authenticated one.
    pub const OTHER_USER: i64 = diff_codes::OTHER_USER;
}

/// A client message, decoded.
#[derive(Debug)]
enum Request {
    Auth(Auth),
    Subscribe(Subscribe),
    Unsubscribe(Subscribe),
    SubmitOrder(SubmitOrder),
    CancelOrder(CancelOrder),
    QueryAccount,
    Ping,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Auth {
    user_id: String,
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    #[serde(default)]
    channels: Vec<String>,
    instruments: Vec<String>,
}

/// The original's `order_type` (LIMIT / MARKET), or one of the engine's price types.
#[derive(Clone, Copy, Debug, Deserialize)]
enum OrderType {
    #[serde(rename = "LIMIT")]
    Limit,
    #[serde(rename = "MARKET")]
    Market,
    #[serde(rename = "ANY")]
    Any,
    #[serde(rename = "BEST")]
    Best,
    #[serde(rename = "FIVELEVEL")]
    FiveLevel,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitOrder {
    #[serde(default, alias = "user_id")]
    account_id: Option<String>,
    #[serde(default)]
    client_order_id: Option<ClientOrderId>,
    instrument_id: InstrumentId,
    direction: Direction,
    offset: Offset,
    volume: Volume,
    #[serde(default, alias = "limit_price", with = "fixed4_opt")]
    price: Option<Price>,
    #[serde(default)]
    order_type: Option<OrderType>,
    #[serde(default)]
    time_condition: Option<TimeCondition>,
    #[serde(default)]
    volume_condition: Option<VolumeCondition>,
    #[serde(default)]
    min_volume: Volume,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelOrder {
    #[serde(default, alias = "user_id")]
    account_id: Option<String>,
    #[serde(default)]
    order_id: Option<OrderRef>,
    #[serde(default)]
    client_order_id: Option<ClientOrderId>,
}

/// Why a message was refused: an `error` with this code and message.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    code: i64,
    message: String,
}

fn malformed(message: String) -> Refusal {
    Refusal { code: codes::MALFORMED, message }
}

fn fields<T: serde::de::DeserializeOwned>(kind: &str, object: Map<String, Value>) -> Result<T, Refusal> {
    serde_json::from_value(Value::Object(object)).map_err(|e| malformed(format!("{kind}: {e}")))
}

impl Request {
    fn parse(text: &str) -> Result<Request, Refusal> {
        let value: Value = serde_json::from_str(text).map_err(|e| malformed(format!("not JSON: {e}")))?;
        let Value::Object(mut object) = value else {
            return Err(malformed("a message must be a JSON object".into()));
        };
        let kind = match object.remove("type") {
            Some(Value::String(kind)) => kind,
            Some(_) => return Err(malformed("`type` must be a string".into())),
            None => return Err(malformed("a message needs a `type`".into())),
        };
        Ok(match kind.as_str() {
            "auth" => Request::Auth(fields(&kind, object)?),
            "subscribe" => Request::Subscribe(fields(&kind, object)?),
            "unsubscribe" => Request::Unsubscribe(fields(&kind, object)?),
            "submit_order" => Request::SubmitOrder(fields(&kind, object)?),
            "cancel_order" => Request::CancelOrder(fields(&kind, object)?),
            // Nothing to mistype: other fields are ignored.
            "query_account" => Request::QueryAccount,
            "ping" => Request::Ping,
            _ => {
                let mut shown: String = kind.chars().take(64).collect();
                if shown.len() < kind.len() {
                    shown.push_str("...");
                }
                return Err(Refusal { code: codes::UNKNOWN_TYPE, message: format!("unknown type {shown:?}") });
            }
        })
    }
}

pub struct LegacySession<'a> {
    ctx: &'a ShardContext,
    conn: u64,
    answers: &'a LocalReceiver<(u32, Answer)>,
    /// Shared with the shard's quote and account fan-outs, which compose changes into it.
    session: Rc<RefCell<Session>>,
    /// The fan-outs wake the session's task here when they added something.
    wake_tx: Rc<LocalSender<()>>,
    wake_rx: LocalReceiver<()>,
    login: Option<Login>,
    /// What the client was last sent of the quotes and the account.
    pushed: Pushed,
    /// Answers to the client's messages, sent before the pushed changes.
    replies: Vec<Value>,
}

/// A session output that always has a peek outstanding: the legacy protocol pushes every
/// change as it comes (taken with `take_patches`, which leaves the peek in place), so the
/// fan-outs always wake the session.
fn always_waiting(max_pending_bytes: usize) -> Session {
    let mut session = Session::with_wake_past(max_pending_bytes);
    session.peek();
    session
}

impl<'a> LegacySession<'a> {
    pub fn new(ctx: &'a ShardContext, conn: u64, answers: &'a LocalReceiver<(u32, Answer)>) -> Self {
        let (wake_tx, wake_rx) = local_channel::new_bounded(1);
        Self {
            ctx,
            conn,
            answers,
            session: Rc::new(RefCell::new(always_waiting(ctx.ws_limits.max_pending_bytes))),
            wake_tx: Rc::new(wake_tx),
            wake_rx,
            login: None,
            pushed: Pushed::default(),
            replies: Vec::new(),
        }
    }

    /// Runs the session until the client closes, the connection fails, or shutdown.
    pub async fn run(mut self, ws: WebSocketStream<TcpStream>) -> Result<(), String> {
        let result = self.serve(ws).await;
        self.ctx.fanout.borrow_mut().unsubscribe_all(self.conn);
        if let Some(login) = self.login.take() {
            self.link().unfollow(&login.account).await;
        }
        result
    }

    fn link(&self) -> FollowLink<'a> {
        FollowLink { ctx: self.ctx, conn: self.conn, answers: self.answers }
    }

    async fn serve(&mut self, mut ws: WebSocketStream<TcpStream>) -> Result<(), String> {
        // Pushed market data takes a token of the shard's delivery budget; replies, fills and the
        // account do not.
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
                    Incoming::NotText => self.error(codes::MALFORMED, "a binary frame that is not UTF-8 text"),
                    Incoming::Close => return Ok(()),
                    Incoming::Nothing => {}
                },
            }
            for reply in std::mem::take(&mut self.replies) {
                ws_io::send(self.ctx, &mut ws, reply.to_string()).await?;
            }
            // Borrows end before each await: the fan-outs borrow the session meanwhile.
            let over = self.session.borrow().over_limit(self.ctx.ws_limits.max_pending_bytes);
            if let Some(over) = over {
                let reason = format!(
                    "client too slow: {} bytes of updates pending (limit {})",
                    over.pending_bytes, over.max_bytes
                );
                return ws_io::close(&mut ws, CloseCode::Policy, &reason).await;
            }
            // Always peeked (`always_waiting`): ready whenever something is pending.
            let (ready, urgent) = self.session.borrow().ready_to_send();
            let patches =
                if turn.may_send(ready, urgent) { self.session.borrow_mut().take_patches() } else { Vec::new() };
            if !patches.is_empty() {
                let mut out = Vec::new();
                let account = self.login.as_ref().map(|l| l.account);
                for patch in &patches {
                    translate(patch, account.as_ref().map(AccountId::as_str), &mut self.pushed, &mut out);
                }
                for message in out {
                    ws_io::send(self.ctx, &mut ws, message.to_string()).await?;
                }
            }
        }
    }

    async fn handle(&mut self, text: &str) {
        let request = match Request::parse(text) {
            Ok(request) => request,
            Err(refusal) => return self.error(refusal.code, &refusal.message),
        };
        match request {
            Request::Ping => self.replies.push(json!({"type": "pong"})),
            Request::Auth(auth) => self.auth(auth).await,
            Request::Subscribe(subscribe) => self.subscribe(subscribe).await,
            Request::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe),
            Request::SubmitOrder(order) => self.submit_order(order).await,
            Request::CancelOrder(cancel) => self.cancel_order(cancel).await,
            Request::QueryAccount => self.query_account().await,
        }
    }

    fn error(&mut self, code: i64, message: &str) {
        self.replies.push(json!({"type": "error", "code": code, "message": message}));
    }

    async fn auth(&mut self, auth: Auth) {
        if let Some(login) = &self.login {
            let message = format!("already authenticated as {}", login.account.as_str());
            self.replies
                .push(json!({"type": "auth_response", "success": false, "user_id": auth.user_id, "message": message}));
            return;
        }
        let followed = match AccountId::new(&auth.user_id) {
            Some(account) => self.link().follow(account, auth.token, &self.session, &self.wake_tx).await,
            None => None,
        };
        let Some(followed) = followed else {
            let message = "authentication failed: wrong user_id or token";
            self.replies
                .push(json!({"type": "auth_response", "success": false, "user_id": auth.user_id, "message": message}));
            return;
        };
        let account = followed.login.account;
        self.replies.push(json!({
            "type": "auth_response",
            "success": true,
            "user_id": account.as_str(),
            "message": format!("authenticated as {}", account.as_str()),
        }));
        // The state now: the account and its live orders (history is on the REST API).
        let tree = &followed.snapshot["trade"][account.as_str()];
        if let Some(cny) = tree["accounts"]["CNY"].as_object() {
            let update = account_update(cny);
            self.pushed.account = Some(update.clone());
            self.replies.push(update);
        }
        for order in tree["orders"].as_object().into_iter().flat_map(Map::values) {
            if order["status"] == "ALIVE" {
                self.replies.extend(order_status(order));
            }
        }
        // Changes made while the tree was on its way follow it as changes.
        {
            let mut session = self.session.borrow_mut();
            for patch in followed.early.iter().flat_map(|e| e.patches()) {
                session.push(patch);
            }
        }
        self.login = Some(followed.login);
    }

    /// Adds the listed instruments to the subscribed set: each gets a `quote` now and one per
    /// change from then on.
    async fn subscribe(&mut self, req: Subscribe) {
        let mut unknown = Vec::new();
        for symbol in &req.instruments {
            let listed = InstrumentId::new(symbol).and_then(|id| Some((self.ctx.full_symbol(&id)?, id)));
            let Some((full, id)) = listed else {
                unknown.push(symbol.clone());
                continue;
            };
            // Follow changes before asking for the quote: a change published meanwhile is
            // older than the quote, which covers it (`push_snapshot`), so none is missed.
            self.pushed.quotes.entry(full.clone()).or_insert_with(|| json!({}));
            self.ctx.fanout.borrow_mut().subscribe(&full, Topic::Quote, self.conn, &self.session, self.wake_tx.clone());
            let reply = self.ctx.call(self.conn, self.answers, Action::Query(Query::Tick(id))).await;
            if reply.status != 200 {
                unknown.push(symbol.clone());
                self.pushed.quotes.remove(&full);
                self.ctx.fanout.borrow_mut().unsubscribe(&full, self.conn);
                continue;
            }
            let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            let quote = diff_quote(&full, &body["data"], now_ns());
            self.session.borrow_mut().push_snapshot(&full, &json!({"quotes": {&full: quote}}));
        }
        let message = if unknown.is_empty() {
            format!("subscribed to {} instruments", self.pushed.quotes.len())
        } else {
            format!("unknown instruments: {}", unknown.join(", "))
        };
        self.subscribe_response(unknown.is_empty(), &req.channels, message);
    }

    /// Removes the listed instruments from the subscribed set (unknown or unsubscribed ones are
    /// ignored).
    fn unsubscribe(&mut self, req: Subscribe) {
        for symbol in &req.instruments {
            if let Some(full) = InstrumentId::new(symbol).and_then(|id| self.ctx.full_symbol(&id)) {
                self.pushed.quotes.remove(&full);
                self.ctx.fanout.borrow_mut().unsubscribe(&full, self.conn);
            }
        }
        let message = format!("subscribed to {} instruments", self.pushed.quotes.len());
        self.subscribe_response(true, &req.channels, message);
    }

    fn subscribe_response(&mut self, success: bool, channels: &[String], message: String) {
        let instruments: Vec<&String> = self.pushed.quotes.keys().collect();
        let reply = json!({
            "type": "subscribe_response",
            "success": success,
            "channels": channels,
            "instruments": instruments,
            "message": message,
        });
        self.replies.push(reply);
    }

    /// The authenticated account if `named` (a request's `account_id`) is absent or names it;
    /// otherwise an `error` and None.
    fn own_account(&mut self, named: Option<&str>, kind: &str) -> Option<AccountId> {
        match (&self.login, named) {
            (None, _) => {
                self.error(codes::NOT_AUTHENTICATED, &format!("{kind} before a successful auth"));
                None
            }
            (Some(login), Some(named)) if named != login.account.as_str() => {
                let message = format!(
                    "{kind} for account {named} refused: this session is authenticated as {}",
                    login.account.as_str()
                );
                self.error(codes::OTHER_USER, &message);
                None
            }
            (Some(login), _) => Some(login.account),
        }
    }

    async fn submit_order(&mut self, req: SubmitOrder) {
        let Some(account) = self.own_account(req.account_id.as_deref(), "submit_order") else { return };
        let price_type = match req.order_type {
            Some(OrderType::Limit) => PriceType::Limit,
            Some(OrderType::Market | OrderType::Any) => PriceType::Any,
            Some(OrderType::Best) => PriceType::Best,
            Some(OrderType::FiveLevel) => PriceType::FiveLevel,
            None if req.price.is_some() => PriceType::Limit,
            None => PriceType::Any,
        };
        let default_time = super::body::default_time_condition(price_type);
        let client_order_id = match req.client_order_id {
            Some(id) => id,
            None => self.ctx.auto_client_id(),
        };
        let order = InsertOrder {
            account_id: account,
            client_order_id,
            instrument_id: req.instrument_id,
            direction: req.direction,
            offset: req.offset,
            price_type,
            limit_price: req.price,
            volume: req.volume,
            time_condition: req.time_condition.unwrap_or(default_time),
            volume_condition: req.volume_condition.unwrap_or(VolumeCondition::Any),
            min_volume: req.min_volume,
        };
        let reply = self.ctx.call(self.conn, self.answers, Action::Submit(order)).await;
        self.replies.push(order_response(&reply, client_order_id.as_str()));
    }

    async fn cancel_order(&mut self, req: CancelOrder) {
        let Some(account) = self.own_account(req.account_id.as_deref(), "cancel_order") else { return };
        let (order_id, client_order_id) = match super::body::order_ref(req.order_id, req.client_order_id) {
            Ok(named) => named,
            Err(e) => return self.error(codes::MALFORMED, &format!("cancel_order: {}", e.0)),
        };
        let client = client_order_id.as_ref().map(ClientOrderId::as_str).unwrap_or("").to_owned();
        let action = Action::Cancel { account_id: account, order_id, client_order_id };
        let reply = self.ctx.call(self.conn, self.answers, action).await;
        let mut response = order_response(&reply, &client);
        if reply.status != 200 && response["order_id"].is_null() {
            response["order_id"] = order_id.map_or(Value::Null, Value::from);
        }
        self.replies.push(response);
    }

    async fn query_account(&mut self) {
        let Some(account) = self.own_account(None, "query_account") else { return };
        let reply = self.ctx.call(self.conn, self.answers, Action::Query(Query::Account(account))).await;
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        match body["data"].as_object().filter(|_| reply.status == 200) {
            Some(data) => {
                let update = account_update(data);
                self.pushed.account = Some(update.clone());
                self.replies.push(update);
            }
            None => {
                let (code, message) = error_of(&reply);
                self.error(i64::from(code), &format!("query_account: {message}"));
            }
        }
    }
}

/// What a session's client was last sent of what is pushed to it.
#[derive(Debug, Default)]
struct Pushed {
    /// Subscribed quotes (full symbols) as last sent: a `quote` message carries the whole
    /// quote, the fan-out's patches only what changed.
    quotes: BTreeMap<String, Value>,
    /// The last `account_update` (an unchanged account is not sent again).
    account: Option<Value>,
}

/// `order_response` for the reply to a submit or a cancel (`{order, trades}` on success).
fn order_response(reply: &Reply, client_order_id: &str) -> Value {
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let order = &body["data"]["order"];
    if reply.status == 200 {
        return json!({
            "type": "order_response",
            "success": true,
            "order_id": order["order_id"],
            "client_order_id": order["client_order_id"],
            "status": order["status"],
        });
    }
    let (code, message) = error_of(reply);
    let client = if client_order_id.is_empty() { Value::Null } else { Value::from(client_order_id) };
    json!({
        "type": "order_response",
        "success": false,
        "order_id": Value::Null,
        "client_order_id": client,
        "error_code": code,
        "error_message": message,
    })
}

/// `account_update` from an account object (the REST one, or DIFF's `accounts/CNY`, which
/// adds `user_id` and `currency`).
fn account_update(account: &Map<String, Value>) -> Value {
    let mut out = account.clone();
    out.remove("user_id");
    out.remove("currency");
    out.insert("type".into(), Value::from("account_update"));
    Value::Object(out)
}

/// `order_status` from a DIFF order (`trade/<user>/orders/<client id>`), in the REST order's
/// field names. None for an order the exchange never accepted (no `exchange_order_id`: the
/// `order_response` told the client why) or a patch that is not a whole order.
fn order_status(order: &Value) -> Option<Value> {
    let order_id = order["exchange_order_id"].as_str()?.parse::<u64>().ok()?;
    let finished = order["status"] == "FINISHED";
    let volume_left = if finished { json!(0) } else { order["volume_left"].clone() };
    Some(json!({
        "type": "order_status",
        "order_id": order_id,
        "client_order_id": order["order_id"],
        "account_id": order["user_id"],
        "exchange_id": order["exchange_id"],
        "instrument_id": order["instrument_id"],
        "direction": order["direction"],
        "offset": order["offset"],
        "price_type": order["price_type"],
        "limit_price": order["limit_price"],
        "volume_orign": order["volume_orign"],
        "volume_left": volume_left,
        "time_condition": order["time_condition"],
        "volume_condition": order["volume_condition"],
        "status": order["status"],
        "status_msg": order["last_msg"],
        "insert_time_ns": order["insert_date_time"],
    }))
}

/// `trade` from a DIFF trade (`trade/<user>/trades/<key>`), in the REST user trade's field
/// names.
fn trade(trade: &Value) -> Option<Value> {
    let order_id = trade["exchange_order_id"].as_str()?.parse::<u64>().ok()?;
    Some(json!({
        "type": "trade",
        "trade_id": trade["seqno"],
        "order_id": order_id,
        "client_order_id": trade["order_id"],
        "account_id": trade["user_id"],
        "exchange_id": trade["exchange_id"],
        "instrument_id": trade["instrument_id"],
        "direction": trade["direction"],
        "offset": trade["offset"],
        "price": trade["price"],
        "volume": trade["volume"],
        "commission": trade["commission"],
        "close_profit": trade["close_profit"],
        "ts": trade["trade_date_time"],
    }))
}

/// `quote` from a whole DIFF quote: its fields, with JSON null where it has no value (DIFF
/// writes `"-"` there for tqsdk).
fn quote(full: &Value) -> Option<Value> {
    let mut out = full.as_object()?.clone();
    if out.is_empty() {
        return None;
    }
    for (key, value) in out.iter_mut() {
        if key != "instrument_id" && key != "datetime" && value.as_str() == Some("-") {
            *value = Value::Null;
        }
    }
    out.insert("type".into(), Value::from("quote"));
    Some(Value::Object(out))
}

/// The legacy messages for one `rtn_data` text the session composed: quotes of subscribed
/// instruments (applied to `pushed.quotes`, sent whole), then the `account`'s orders, trades
/// and account (if it changed), in that order (so a fill's `order_status` and `trade` come
/// before the `account_update` they changed).
fn translate(patch: &Value, account: Option<&str>, pushed: &mut Pushed, out: &mut Vec<Value>) {
    for (symbol, change) in patch["quotes"].as_object().into_iter().flatten() {
        let Some(current) = pushed.quotes.get_mut(symbol) else { continue };
        merge_patch::apply(current, change);
        if !current.is_object() {
            *current = json!({});
        }
        out.extend(quote(current));
    }
    let Some(account) = account else { return };
    let tree = &patch["trade"][account];
    for order in tree["orders"].as_object().into_iter().flat_map(Map::values) {
        out.extend(order_status(order));
    }
    for one in tree["trades"].as_object().into_iter().flat_map(Map::values) {
        out.extend(trade(one));
    }
    if let Some(cny) = tree["accounts"]["CNY"].as_object() {
        let update = account_update(cny);
        if pushed.account.as_ref() != Some(&update) {
            pushed.account = Some(update.clone());
            out.push(update);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_type_and_refuses_bad_input_with_a_code() {
        assert!(matches!(Request::parse(r#"{"type":"ping"}"#), Ok(Request::Ping)));
        assert!(matches!(Request::parse(r#"{"type":"query_account","x":1}"#), Ok(Request::QueryAccount)));
        let Ok(Request::Auth(auth)) = Request::parse(r#"{"type":"auth","user_id":"A","token":"t"}"#) else {
            panic!("auth decodes")
        };
        assert_eq!((auth.user_id.as_str(), auth.token.as_str()), ("A", "t"));
        let submit = r#"{"type":"submit_order","instrument_id":"SHFE.cu2501","direction":"BUY","offset":"OPEN",
                        "volume":2,"price":70100.0,"order_type":"LIMIT","client_order_id":"c1"}"#;
        let Ok(Request::SubmitOrder(order)) = Request::parse(submit) else { panic!("submit decodes") };
        assert_eq!((order.volume, order.price), (2, Some(701_000_000)));
        let Ok(Request::CancelOrder(cancel)) = Request::parse(r#"{"type":"cancel_order","order_id":"12"}"#) else {
            panic!("cancel decodes")
        };
        assert!(matches!(cancel.order_id, Some(OrderRef::Text(ref t)) if t == "12"));
        let code = |text: &str| Request::parse(text).err().map(|r| r.code);
        assert_eq!(code("not json"), Some(codes::MALFORMED));
        assert_eq!(code("[1]"), Some(codes::MALFORMED));
        assert_eq!(code(r#"{"user_id":"A"}"#), Some(codes::MALFORMED));
        assert_eq!(code(r#"{"type":7}"#), Some(codes::MALFORMED));
        assert_eq!(code(r#"{"type":"auth","user_id":"A"}"#), Some(codes::MALFORMED));
        assert_eq!(code(r#"{"type":"auth","user_id":"A","token":"t","x":1}"#), Some(codes::MALFORMED));
        assert_eq!(code(r#"{"type":"subscribe","instruments":"SR501"}"#), Some(codes::MALFORMED));
        let lower = r#"{"type":"submit_order","instrument_id":"SR501","direction":"buy","offset":"OPEN","volume":1}"#;
        assert_eq!(code(lower), Some(codes::MALFORMED));
        let text_price = r#"{"type":"submit_order","instrument_id":"SR501","direction":"BUY","offset":"OPEN","volume":1,"price":"1"}"#;
        assert_eq!(code(text_price), Some(codes::MALFORMED));
        assert_eq!(code(r#"{"type":"fly"}"#), Some(codes::UNKNOWN_TYPE));
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(10_000));
        assert!(Request::parse(&long).unwrap_err().message.len() < 100);
    }

    #[test]
    fn translates_a_fill_into_order_status_trade_and_account_update() {
        let patch = json!({"trade": {"A": {
            "orders": {"o1": {"seqno": 5, "user_id": "A", "order_id": "o1", "exchange_id": "SHFE",
                "instrument_id": "cu2501", "direction": "BUY", "offset": "OPEN", "volume_orign": 2,
                "volume_left": 1, "price_type": "LIMIT", "limit_price": 70100.0, "time_condition": "GFD",
                "volume_condition": "ANY", "insert_date_time": 9, "exchange_order_id": "5",
                "status": "FINISHED", "last_msg": "cancelled"},
                "bad": {"order_id": "bad", "exchange_order_id": "", "status": "FINISHED"}},
            "trades": {"3|BUY": {"seqno": 3, "user_id": "A", "trade_id": "3|BUY", "order_id": "o1",
                "exchange_order_id": "5", "exchange_id": "SHFE", "instrument_id": "cu2501",
                "direction": "BUY", "offset": "OPEN", "volume": 1, "price": 70100.0,
                "trade_date_time": 10, "commission": 2.0, "close_profit": 0.0}},
            "positions": {"SHFE.cu2501": {"pos_long_today": 1}},
            "accounts": {"CNY": {"account_id": "A", "user_id": "A", "currency": "CNY", "balance": 1.0}},
        }, "B": {"accounts": {"CNY": {"balance": 2.0}}}}});
        let mut out = Vec::new();
        let mut pushed = Pushed::default();
        translate(&patch, Some("A"), &mut pushed, &mut out);
        let kinds: Vec<&str> = out.iter().map(|m| m["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["order_status", "trade", "account_update"]);
        assert_eq!(out[0]["order_id"], 5);
        assert_eq!(out[0]["client_order_id"], "o1");
        assert_eq!(out[0]["volume_left"], 0, "REST's meaning: nothing open once finished");
        assert_eq!(out[1]["order_id"], 5);
        assert_eq!(out[1]["trade_id"], 3);
        assert_eq!(out[1]["ts"], 10);
        assert_eq!(out[2], json!({"type": "account_update", "account_id": "A", "balance": 1.0}));
        // The same account again is not sent again.
        out.clear();
        translate(&patch, Some("A"), &mut pushed, &mut out);
        let kinds: Vec<&str> = out.iter().map(|m| m["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["order_status", "trade"]);
        // Nothing for a session that is not authenticated.
        out.clear();
        translate(&patch, None, &mut Pushed::default(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn quotes_are_sent_whole_for_subscribed_symbols_only() {
        let mut pushed = Pushed::default();
        pushed.quotes.insert("CZCE.SR501".to_owned(), json!({}));
        let mut out = Vec::new();
        let first = json!({"quotes": {
            "CZCE.SR501": {"instrument_id": "CZCE.SR501", "datetime": "-", "last_price": "-", "volume": 0},
            "SHFE.cu2501": {"last_price": 1.0},
        }});
        translate(&first, None, &mut pushed, &mut out);
        let change = json!({"quotes": {"CZCE.SR501": {"last_price": 5010.0, "volume": 2}}});
        translate(&change, None, &mut pushed, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["last_price"], Value::Null, "{}", out[0]);
        assert_eq!(out[0]["datetime"], "-");
        assert_eq!(
            out[1],
            json!({"type": "quote", "instrument_id": "CZCE.SR501", "datetime": "-", "last_price": 5010.0, "volume": 2})
        );
    }
}
