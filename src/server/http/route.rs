//! Routing: (method, path, query) to a [`Route`] of the REST API of SPEC §3, with path
//! parameters percent-decoded and length-checked and query parameters checked.
//!
//! Rules:
//! - Paths match segment by segment, exactly as sent (no trailing slash, no empty segment); an
//!   empty parameter segment does not match. No match: 404 (9006).
//! - A path that matches with another method: 405 (9007) with `Allow` listing the methods.
//!   `/api/account/{open,deposit,withdraw}` and `/api/order/{submit,cancel,modify}` accept POST
//!   (the action) and GET (the account or order of that id), so `Allow: GET, POST` there.
//! - Path parameters: account and user ids 1..=31 bytes (else 400 with code 1006
//!   INVALID_ACCOUNT_ID), order ids 1..=63 bytes (else 400 with 2015 INVALID_ORDER_ID),
//!   instrument ids 1..=31 bytes (else 400, 9003); bad percent-encoding or non-UTF-8: 400 (9003).
//! - Query parameters: unknown keys are ignored; a known key twice, an empty value or a value out
//!   of range is 400 (9004) with a message naming the parameter. Numbers are plain decimal digits.
//!   `depth` 1..=50 (default 5), `limit` 1..=1000 (default 50), `count` 1..=2000 (default 200),
//!   `period` (default 60 s) is a number of seconds (3, 60, 300, 900, 1800, 3600, 86400) or a name
//!   (3s, 1m, 5m, 15m, 30m, 1h, 1d; lower case): the k-line periods the engine keeps.
//! - Methods are checked before parameters: a wrong method is 405 even with a bad parameter.

use super::error::{HttpError, HttpErrorCode};
use super::params::{decode_id, decode_short, parse_in_range, query_value, DecodeError};
use super::request::Method;
use crate::domain::market_data::KLINE_PERIODS_NS;
use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use crate::domain::risk::RejectCode;
use crate::server::history::{Cursor, HistoryRange, HistorySeries};

pub const DEFAULT_DEPTH: u32 = 5;
pub const MAX_DEPTH: u32 = 50;
pub const DEFAULT_TRADES_LIMIT: u32 = 50;
pub const MAX_TRADES_LIMIT: u32 = 1000;
pub const DEFAULT_KLINE_COUNT: u32 = 200;
pub const MAX_KLINE_COUNT: u32 = 2000;
pub const DEFAULT_KLINE_PERIOD: KlinePeriod = KlinePeriod::M1;
pub const DEFAULT_HISTORY_LIMIT: u32 = crate::server::history::DEFAULT_LIMIT as u32;
pub const MAX_HISTORY_LIMIT: u32 = crate::server::history::MAX_LIMIT as u32;

/// A k-line period the engine keeps (`crate::domain::market_data::KLINE_PERIODS_NS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KlinePeriod {
    S3,
    M1,
    M5,
    M15,
    M30,
    H1,
    D1,
}

impl KlinePeriod {
    pub const ALL: [KlinePeriod; 7] = [
        KlinePeriod::S3,
        KlinePeriod::M1,
        KlinePeriod::M5,
        KlinePeriod::M15,
        KlinePeriod::M30,
        KlinePeriod::H1,
        KlinePeriod::D1,
    ];

    pub fn seconds(self) -> u32 {
        match self {
            KlinePeriod::S3 => 3,
            KlinePeriod::M1 => 60,
            KlinePeriod::M5 => 300,
            KlinePeriod::M15 => 900,
            KlinePeriod::M30 => 1800,
            KlinePeriod::H1 => 3600,
            KlinePeriod::D1 => 86_400,
        }
    }

    /// The period in ns (a DIFF chart duration).
    pub fn nanos(self) -> i64 {
        KLINE_PERIODS_NS[self.index()]
    }

    /// Index into `KLINE_PERIODS_NS` (what `MarketData::klines` takes).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The short name accepted in the query (`3s`, `1m`, ..., `1d`).
    pub fn name(self) -> &'static str {
        match self {
            KlinePeriod::S3 => "3s",
            KlinePeriod::M1 => "1m",
            KlinePeriod::M5 => "5m",
            KlinePeriod::M15 => "15m",
            KlinePeriod::M30 => "30m",
            KlinePeriod::H1 => "1h",
            KlinePeriod::D1 => "1d",
        }
    }

    /// A number of seconds or a short name.
    pub fn parse(text: &str) -> Option<Self> {
        KlinePeriod::ALL.into_iter().find(|p| p.name() == text || parse_in_range(text, 1..=86_400) == Some(p.seconds()))
    }
}

/// An endpoint with its parameters. Request bodies (POST) are decoded by the handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`
    Health,
    /// `GET /metrics`
    Metrics,
    /// `POST /api/account/open`
    OpenAccount,
    /// `GET /api/account/{id}`
    Account { account_id: AccountId },
    /// `POST /api/account/deposit`
    Deposit,
    /// `POST /api/account/withdraw`
    Withdraw,
    /// `POST /api/order/submit`
    SubmitOrder,
    /// `POST /api/order/cancel`
    CancelOrder,
    /// `POST /api/order/modify`
    ModifyOrder,
    /// `GET /api/order/{order_id}`: the id as sent (1..=63 bytes); whether it names the engine's
    /// numeric order id or a client order id is the handler's choice.
    Order { order_id: ClientOrderId },
    /// `GET /api/order/user/{user_id}`
    UserOrders { user_id: AccountId },
    /// `GET /api/position/{user_id}`
    Positions { user_id: AccountId },
    /// `GET /api/trades/user/{user_id}`
    UserTrades { user_id: AccountId },
    /// `GET /api/market/instruments`
    Instruments,
    /// `GET /api/market/instruments/shinny`: the instruments file in Shinny's format, for
    /// tqsdk's `_ins_url` (the bare map, no envelope).
    ShinnyInstruments,
    /// `GET /api/market/orderbook/{id}?depth=N`; the id may be bare or `EXCHANGE.id`.
    OrderBook { instrument_id: InstrumentId, depth: u32 },
    /// `GET /api/market/tick/{id}`
    Tick { instrument_id: InstrumentId },
    /// `GET /api/market/trades/{id}?limit=N`
    MarketTrades { instrument_id: InstrumentId, limit: u32 },
    /// `GET /api/market/kline/{id}?period=P&count=N`
    Kline { instrument_id: InstrumentId, period: KlinePeriod, count: u32 },
    /// `GET /admin/state`: the engine's whole state and its invariant check.
    AdminState,
    /// `GET /admin/latency`: every shard's latency histograms, merged, as `.hgrm` text.
    AdminLatency,
    /// `POST /admin/latency/reset`: clear them.
    AdminLatencyReset,
    /// `GET /api/history/{orders|trades|account_changes}/{account}` and
    /// `GET /api/history/{market_trades|ticks|klines}/{instrument}`
    /// `?start=NS&end=NS&limit=N&cursor=HEX` (k-lines also `period=P`).
    History { series: HistorySeries, range: HistoryRange },
    /// `GET /admin/storage/stats`: every shard's history store.
    AdminStorageStats,
    /// `POST /admin/compaction/trigger`: every shard flushes and compacts its history store.
    AdminCompactionTrigger,
    /// `POST /admin/checkpoint`: every shard writes a checkpoint now.
    AdminCheckpoint,
    /// `POST /api/auth/register`
    Register,
    /// `POST /api/auth/login`
    Login,
    /// `POST /api/user/{user_id}/account/create`
    CreateUserAccount { user_id: AccountId },
    /// `GET /api/user/{user_id}/accounts`
    UserAccounts { user_id: AccountId },
    /// `POST /api/admin/account/{account_id}/freeze` (body: the mode) and `.../unfreeze`
    AdminFreeze { account_id: AccountId, frozen: bool },
    /// `POST /api/admin/account/{account_id}/force-liquidate`
    AdminForceLiquidate { account_id: AccountId },
    /// `POST /api/admin/settlement/set-price`
    SettlementSetPrice,
    /// `POST /api/admin/settlement/batch-set-prices`
    SettlementSetPrices,
    /// `POST /api/admin/settlement/execute`
    SettlementExecute,
    /// `GET /api/admin/settlement/history`
    SettlementHistory,
    /// `GET /api/admin/settlement/detail/{trading_day}`
    SettlementDetail { trading_day: u32 },
    /// `GET /api/settlement/{account_id}`: the account's statements.
    Statements { account_id: AccountId },
    /// `POST /api/admin/instrument/{id}/{suspend|resume|close|delist}`
    AdminInstrumentStatus { instrument_id: InstrumentId, status: crate::domain::instrument::InstrumentStatus },
    /// `POST /api/admin/instrument/{id}/update`
    AdminInstrumentUpdate { instrument_id: InstrumentId },
    /// `POST /api/admin/instrument/create`
    AdminInstrumentCreate,
}

/// Who may call a route once auth is on (`[auth] enabled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, metrics, market data, register and login.
    Public,
    /// A valid token; a user who is not an admin only reaches accounts and orders they own.
    User,
    /// A valid token of an admin.
    Admin,
}

impl Route {
    /// The method and path pattern, e.g. `"GET /api/account/{id}"` (for logs and metric labels).
    pub fn pattern(&self) -> &'static str {
        match self {
            Route::Health => "GET /health",
            Route::Metrics => "GET /metrics",
            Route::OpenAccount => "POST /api/account/open",
            Route::Account { .. } => "GET /api/account/{id}",
            Route::Deposit => "POST /api/account/deposit",
            Route::Withdraw => "POST /api/account/withdraw",
            Route::SubmitOrder => "POST /api/order/submit",
            Route::CancelOrder => "POST /api/order/cancel",
            Route::ModifyOrder => "POST /api/order/modify",
            Route::Order { .. } => "GET /api/order/{order_id}",
            Route::UserOrders { .. } => "GET /api/order/user/{user_id}",
            Route::Positions { .. } => "GET /api/position/{user_id}",
            Route::UserTrades { .. } => "GET /api/trades/user/{user_id}",
            Route::Instruments => "GET /api/market/instruments",
            Route::ShinnyInstruments => "GET /api/market/instruments/shinny",
            Route::OrderBook { .. } => "GET /api/market/orderbook/{id}",
            Route::Tick { .. } => "GET /api/market/tick/{id}",
            Route::MarketTrades { .. } => "GET /api/market/trades/{id}",
            Route::Kline { .. } => "GET /api/market/kline/{id}",
            Route::AdminState => "GET /admin/state",
            Route::AdminLatency => "GET /admin/latency",
            Route::AdminLatencyReset => "POST /admin/latency/reset",
            Route::History { series, .. } => match series {
                HistorySeries::Orders(_) => "GET /api/history/orders/{user_id}",
                HistorySeries::Trades(_) => "GET /api/history/trades/{user_id}",
                HistorySeries::AccountChanges(_) => "GET /api/history/account_changes/{user_id}",
                HistorySeries::MarketTrades(_) => "GET /api/history/market_trades/{id}",
                HistorySeries::Ticks(_) => "GET /api/history/ticks/{id}",
                HistorySeries::Klines(..) => "GET /api/history/klines/{id}",
            },
            Route::AdminStorageStats => "GET /admin/storage/stats",
            Route::AdminCompactionTrigger => "POST /admin/compaction/trigger",
            Route::AdminCheckpoint => "POST /admin/checkpoint",
            Route::Register => "POST /api/auth/register",
            Route::Login => "POST /api/auth/login",
            Route::CreateUserAccount { .. } => "POST /api/user/{user_id}/account/create",
            Route::UserAccounts { .. } => "GET /api/user/{user_id}/accounts",
            Route::AdminFreeze { frozen: true, .. } => "POST /api/admin/account/{account_id}/freeze",
            Route::AdminFreeze { frozen: false, .. } => "POST /api/admin/account/{account_id}/unfreeze",
            Route::AdminForceLiquidate { .. } => "POST /api/admin/account/{account_id}/force-liquidate",
            Route::SettlementSetPrice => "POST /api/admin/settlement/set-price",
            Route::SettlementSetPrices => "POST /api/admin/settlement/batch-set-prices",
            Route::SettlementExecute => "POST /api/admin/settlement/execute",
            Route::SettlementHistory => "GET /api/admin/settlement/history",
            Route::SettlementDetail { .. } => "GET /api/admin/settlement/detail/{trading_day}",
            Route::Statements { .. } => "GET /api/settlement/{account_id}",
            Route::AdminInstrumentStatus { .. } => "POST /api/admin/instrument/{id}/{action}",
            Route::AdminInstrumentUpdate { .. } => "POST /api/admin/instrument/{id}/update",
            Route::AdminInstrumentCreate => "POST /api/admin/instrument/create",
        }
    }

    /// Who may call it once auth is on. `/metrics` stays public so a Prometheus scraper needs no
    /// token (it holds counts, never account data).
    pub fn access(&self) -> Access {
        match self {
            Route::Health
            | Route::Metrics
            | Route::Instruments
            | Route::ShinnyInstruments
            | Route::OrderBook { .. }
            | Route::Tick { .. }
            | Route::MarketTrades { .. }
            | Route::Kline { .. }
            | Route::Register
            | Route::Login => Access::Public,
            Route::History { series, .. } => match series {
                HistorySeries::MarketTrades(_) | HistorySeries::Ticks(_) | HistorySeries::Klines(..) => Access::Public,
                HistorySeries::Orders(_) | HistorySeries::Trades(_) | HistorySeries::AccountChanges(_) => Access::User,
            },
            Route::OpenAccount
            | Route::Account { .. }
            | Route::Deposit
            | Route::Withdraw
            | Route::SubmitOrder
            | Route::CancelOrder
            | Route::ModifyOrder
            | Route::Order { .. }
            | Route::UserOrders { .. }
            | Route::Positions { .. }
            | Route::UserTrades { .. }
            | Route::CreateUserAccount { .. }
            | Route::UserAccounts { .. }
            | Route::Statements { .. } => Access::User,
            Route::AdminState
            | Route::AdminLatency
            | Route::AdminLatencyReset
            | Route::AdminStorageStats
            | Route::AdminCompactionTrigger
            | Route::AdminCheckpoint
            | Route::AdminFreeze { .. }
            | Route::AdminForceLiquidate { .. }
            | Route::SettlementSetPrice
            | Route::SettlementSetPrices
            | Route::SettlementExecute
            | Route::SettlementHistory
            | Route::SettlementDetail { .. }
            | Route::AdminInstrumentStatus { .. }
            | Route::AdminInstrumentUpdate { .. }
            | Route::AdminInstrumentCreate => Access::Admin,
        }
    }
}

/// The most segments of any route (`/api/user/{user_id}/account/create`).
const MAX_SEGMENTS: usize = 5;

/// Finds the route of a request (`path` still percent-encoded, `query` raw, as in `Request`).
pub fn route(method: Method, path: &str, query: &str) -> Result<Route, HttpError> {
    let not_found = || HttpError::new(HttpErrorCode::NotFound);
    let rest = path.strip_prefix('/').ok_or_else(not_found)?;
    let mut segments = [""; MAX_SEGMENTS];
    let mut count = 0;
    for segment in rest.split('/') {
        *segments.get_mut(count).ok_or_else(not_found)? = segment;
        count += 1;
    }
    let is_get = method == Method::Get;
    let is_post = method == Method::Post;
    let get_only = || if is_get { Ok(()) } else { Err(HttpError::method_not_allowed("GET")) };
    let get_or_post = || if is_get || is_post { Ok(()) } else { Err(HttpError::method_not_allowed("GET, POST")) };

    match &segments[..count] {
        ["health"] => get_only().map(|()| Route::Health),
        ["metrics"] => get_only().map(|()| Route::Metrics),
        ["admin", "state"] => get_only().map(|()| Route::AdminState),
        ["admin", "latency"] => get_only().map(|()| Route::AdminLatency),
        ["admin", "latency", "reset"] => {
            if is_post {
                Ok(Route::AdminLatencyReset)
            } else {
                Err(HttpError::method_not_allowed("POST"))
            }
        }
        ["admin", "storage", "stats"] => get_only().map(|()| Route::AdminStorageStats),
        ["admin", "compaction", "trigger"] => {
            if is_post {
                Ok(Route::AdminCompactionTrigger)
            } else {
                Err(HttpError::method_not_allowed("POST"))
            }
        }
        ["admin", "checkpoint"] => {
            if is_post {
                Ok(Route::AdminCheckpoint)
            } else {
                Err(HttpError::method_not_allowed("POST"))
            }
        }
        ["api", "history", kind @ ("orders" | "trades" | "account_changes"), id] if !id.is_empty() => {
            get_only()?;
            let account = account_id(id)?;
            let range = history_range(query)?;
            let series = match *kind {
                "orders" => HistorySeries::Orders(account),
                "trades" => HistorySeries::Trades(account),
                _ => HistorySeries::AccountChanges(account),
            };
            Ok(Route::History { series, range })
        }
        ["api", "history", kind @ ("market_trades" | "ticks" | "klines"), id] if !id.is_empty() => {
            get_only()?;
            let instrument = instrument_id(id)?;
            let range = history_range(query)?;
            let series = match *kind {
                "market_trades" => HistorySeries::MarketTrades(instrument),
                "ticks" => HistorySeries::Ticks(instrument),
                _ => HistorySeries::Klines(instrument, KLINE_PERIODS_NS[period_param(query)?.index()]),
            };
            Ok(Route::History { series, range })
        }
        ["api", "account", action @ ("open" | "deposit" | "withdraw")] => {
            get_or_post()?;
            Ok(match (is_post, *action) {
                (true, "open") => Route::OpenAccount,
                (true, "deposit") => Route::Deposit,
                (true, _) => Route::Withdraw,
                (false, id) => Route::Account { account_id: account_id(id)? },
            })
        }
        ["api", "account", id] if !id.is_empty() => {
            get_only()?;
            Ok(Route::Account { account_id: account_id(id)? })
        }
        ["api", "order", action @ ("submit" | "cancel" | "modify")] => {
            get_or_post()?;
            Ok(match (is_post, *action) {
                (true, "submit") => Route::SubmitOrder,
                (true, "cancel") => Route::CancelOrder,
                (true, _) => Route::ModifyOrder,
                (false, id) => Route::Order { order_id: order_id(id)? },
            })
        }
        ["api", "order", id] if !id.is_empty() => {
            get_only()?;
            Ok(Route::Order { order_id: order_id(id)? })
        }
        ["api", "order", "user", id] if !id.is_empty() => {
            get_only()?;
            Ok(Route::UserOrders { user_id: account_id(id)? })
        }
        ["api", "position", id] if !id.is_empty() => {
            get_only()?;
            Ok(Route::Positions { user_id: account_id(id)? })
        }
        ["api", "trades", "user", id] if !id.is_empty() => {
            get_only()?;
            Ok(Route::UserTrades { user_id: account_id(id)? })
        }
        ["api", "auth", action @ ("register" | "login")] => {
            if !is_post {
                return Err(HttpError::method_not_allowed("POST"));
            }
            Ok(if *action == "register" { Route::Register } else { Route::Login })
        }
        ["api", "user", id, "account", "create"] if !id.is_empty() => {
            if !is_post {
                return Err(HttpError::method_not_allowed("POST"));
            }
            Ok(Route::CreateUserAccount { user_id: account_id(id)? })
        }
        ["api", "admin", "account", id, action @ ("freeze" | "unfreeze" | "force-liquidate")] if !id.is_empty() => {
            if !is_post {
                return Err(HttpError::method_not_allowed("POST"));
            }
            let account_id = account_id(id)?;
            Ok(match *action {
                "force-liquidate" => Route::AdminForceLiquidate { account_id },
                action => Route::AdminFreeze { account_id, frozen: action == "freeze" },
            })
        }
        ["api", "admin", "settlement", action @ ("set-price" | "batch-set-prices" | "execute")] => {
            if !is_post {
                return Err(HttpError::method_not_allowed("POST"));
            }
            Ok(match *action {
                "set-price" => Route::SettlementSetPrice,
                "batch-set-prices" => Route::SettlementSetPrices,
                _ => Route::SettlementExecute,
            })
        }
        ["api", "admin", "settlement", "history"] => get_only().map(|()| Route::SettlementHistory),
        ["api", "admin", "instrument", "create"] => {
            if !is_post {
                return Err(HttpError::method_not_allowed("POST"));
            }
            Ok(Route::AdminInstrumentCreate)
        }
        ["api", "admin", "instrument", id, action @ ("suspend" | "resume" | "open" | "pre-open" | "close" | "delist" | "update")]
            if !id.is_empty() =>
        {
            if !is_post {
                return Err(HttpError::method_not_allowed("POST"));
            }
            use crate::domain::instrument::InstrumentStatus;
            if *action == "update" {
                return Ok(Route::AdminInstrumentUpdate { instrument_id: instrument_id(id)? });
            }
            let status = match *action {
                "suspend" => InstrumentStatus::Suspended,
                "resume" | "open" => InstrumentStatus::Trading,
                "pre-open" => InstrumentStatus::PreOpen,
                "close" => InstrumentStatus::Closed,
                _ => InstrumentStatus::Delisted,
            };
            Ok(Route::AdminInstrumentStatus { instrument_id: instrument_id(id)?, status })
        }
        ["api", "admin", "settlement", "detail", day] if !day.is_empty() => {
            get_only()?;
            let trading_day = parse_in_range(day, 19_700_101..=99_991_231).ok_or_else(|| {
                HttpError::with_message(HttpErrorCode::InvalidPathParameter, "trading day must be YYYYMMDD")
            })?;
            Ok(Route::SettlementDetail { trading_day })
        }
        ["api", "settlement", id] if !id.is_empty() => {
            get_only()?;
            Ok(Route::Statements { account_id: account_id(id)? })
        }
        ["api", "user", id, "accounts"] if !id.is_empty() => {
            get_only()?;
            Ok(Route::UserAccounts { user_id: account_id(id)? })
        }
        ["api", "market", "instruments"] => get_only().map(|()| Route::Instruments),
        ["api", "market", "instruments", "shinny"] => get_only().map(|()| Route::ShinnyInstruments),
        ["api", "market", "orderbook", id] if !id.is_empty() => {
            get_only()?;
            let instrument_id = instrument_id(id)?;
            let depth = number_param(query, "depth", DEFAULT_DEPTH, MAX_DEPTH, DEPTH_MESSAGES)?;
            Ok(Route::OrderBook { instrument_id, depth })
        }
        ["api", "market", "tick", id] if !id.is_empty() => {
            get_only()?;
            Ok(Route::Tick { instrument_id: instrument_id(id)? })
        }
        ["api", "market", "trades", id] if !id.is_empty() => {
            get_only()?;
            let instrument_id = instrument_id(id)?;
            let limit = number_param(query, "limit", DEFAULT_TRADES_LIMIT, MAX_TRADES_LIMIT, LIMIT_MESSAGES)?;
            Ok(Route::MarketTrades { instrument_id, limit })
        }
        ["api", "market", "kline", id] if !id.is_empty() => {
            get_only()?;
            let instrument_id = instrument_id(id)?;
            let period = period_param(query)?;
            let count = number_param(query, "count", DEFAULT_KLINE_COUNT, MAX_KLINE_COUNT, COUNT_MESSAGES)?;
            Ok(Route::Kline { instrument_id, period, count })
        }
        _ => Err(not_found()),
    }
}

fn malformed_path() -> HttpError {
    HttpError::with_message(
        HttpErrorCode::InvalidPathParameter,
        "path parameter has an invalid percent-encoding or is not UTF-8",
    )
}

fn account_id(raw: &str) -> Result<AccountId, HttpError> {
    decode_id(raw).map_err(|e| match e {
        DecodeError::Length => HttpError::reject(RejectCode::InvalidAccountId, 400),
        DecodeError::Malformed => malformed_path(),
    })
}

fn order_id(raw: &str) -> Result<ClientOrderId, HttpError> {
    decode_id(raw).map_err(|e| match e {
        DecodeError::Length => HttpError::reject(RejectCode::InvalidOrderId, 400),
        DecodeError::Malformed => malformed_path(),
    })
}

fn instrument_id(raw: &str) -> Result<InstrumentId, HttpError> {
    decode_id(raw).map_err(|e| match e {
        DecodeError::Length => {
            HttpError::with_message(HttpErrorCode::InvalidPathParameter, "instrument id must be 1..=31 bytes")
        }
        DecodeError::Malformed => malformed_path(),
    })
}

/// (message for a bad value, message for a repeated key) of one query parameter.
type ParamMessages = (&'static str, &'static str);

const DEPTH_MESSAGES: ParamMessages =
    ("query parameter depth must be an integer in 1..=50", "query parameter depth is given more than once");
const LIMIT_MESSAGES: ParamMessages =
    ("query parameter limit must be an integer in 1..=1000", "query parameter limit is given more than once");
const COUNT_MESSAGES: ParamMessages =
    ("query parameter count must be an integer in 1..=2000", "query parameter count is given more than once");
const HISTORY_LIMIT_MESSAGES: ParamMessages =
    ("query parameter limit must be an integer in 1..=1000", "query parameter limit is given more than once");
const CURSOR_MESSAGES: ParamMessages = (
    "query parameter cursor must be the `next` value of a previous page",
    "query parameter cursor is given more than once",
);
const PERIOD_MESSAGES: ParamMessages = (
    "query parameter period must be one of 3, 60, 300, 900, 1800, 3600, 86400 (seconds) or 3s, 1m, 5m, 15m, 30m, 1h, 1d",
    "query parameter period is given more than once",
);

fn query_error(message: &'static str) -> HttpError {
    HttpError::with_message(HttpErrorCode::InvalidQueryParameter, message)
}

/// The decoded value of `key`, None when absent.
fn query_text<'b>(
    query: &str,
    key: &str,
    buf: &'b mut [u8; 16],
    (bad, twice): ParamMessages,
) -> Result<Option<&'b str>, HttpError> {
    match query_value(query, key).map_err(|_| query_error(twice))? {
        None => Ok(None),
        Some(raw) => decode_short(raw, buf).map(Some).ok_or_else(|| query_error(bad)),
    }
}

fn number_param(query: &str, key: &str, default: u32, max: u32, messages: ParamMessages) -> Result<u32, HttpError> {
    let mut buf = [0u8; 16];
    match query_text(query, key, &mut buf, messages)? {
        None => Ok(default),
        Some(text) => parse_in_range(text, 1..=max).ok_or_else(|| query_error(messages.0)),
    }
}

/// `start` and `end` (ns since the epoch, `[start, end)`, defaults: everything), `limit`
/// (1..=1000, default 100) and `cursor` (the `next` of the previous page).
fn history_range(query: &str) -> Result<HistoryRange, HttpError> {
    let time = |key: &str, default: i64, bad: &'static str, twice: &'static str| -> Result<i64, HttpError> {
        match query_value(query, key).map_err(|_| query_error(twice))? {
            None => Ok(default),
            Some(text) => {
                let digits = text.strip_prefix('-').unwrap_or(text);
                if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(query_error(bad));
                }
                text.parse::<i64>().map_err(|_| query_error(bad))
            }
        }
    };
    let start_ns = time(
        "start",
        i64::MIN,
        "query parameter start must be an integer (ns since the epoch)",
        "query parameter start is given more than once",
    )?;
    let end_ns = time(
        "end",
        i64::MAX,
        "query parameter end must be an integer (ns since the epoch)",
        "query parameter end is given more than once",
    )?;
    if end_ns < start_ns {
        return Err(query_error("query parameter end must not be before start"));
    }
    let limit = number_param(query, "limit", DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, HISTORY_LIMIT_MESSAGES)?;
    let cursor = match query_value(query, "cursor").map_err(|_| query_error(CURSOR_MESSAGES.1))? {
        None => None,
        Some(text) => Some(Cursor::parse(text).ok_or_else(|| query_error(CURSOR_MESSAGES.0))?),
    };
    Ok(HistoryRange { start_ns, end_ns, limit, cursor })
}

fn period_param(query: &str) -> Result<KlinePeriod, HttpError> {
    let mut buf = [0u8; 16];
    match query_text(query, "period", &mut buf, PERIOD_MESSAGES)? {
        None => Ok(DEFAULT_KLINE_PERIOD),
        Some(text) => KlinePeriod::parse(text).ok_or_else(|| query_error(PERIOD_MESSAGES.0)),
    }
}
