//! The server around the domain core: HTTP and WebSocket (DIFF) on every shard, each shard's
//! engine, WAL and sessions, and the bounded channels between shards (docs/ARCHITECTURE.md
//! "Server").

pub mod account_fanout;
pub mod admin_bootstrap;
pub mod auth;
pub mod body;
pub mod checkpoint;
pub mod checkpointer;
pub mod config;
pub mod conn;
pub mod credentials;
pub mod delivery_budget;
pub mod diff_chart;
pub mod diff_quote;
pub mod diff_session;
pub mod diff_trade;
pub mod diff_trading;
pub mod engine_core;
pub mod force_liquidation;
pub mod history;
pub mod history_store;
pub mod http;
pub mod journal;
pub mod json_text;
pub mod legacy_session;
pub mod metrics;
pub mod niced_thread;
pub mod order_json;
pub mod quote_fanout;
pub mod rate_limit;
pub mod recovery;
pub mod runtime;
pub mod service;
pub mod settlement_log;
pub mod settlement_run;
pub mod shard_waits;
pub mod shinny;
pub mod thread_priority;
pub mod user_connections;
pub mod users;
pub mod wal_location;
pub mod wal_record;
pub mod ws;
pub mod ws_io;
