//! The server around the domain core: HTTP on every shard, the engine on shard 0 behind
//! bounded channels, and its WAL (docs/ARCHITECTURE.md "Server").

pub mod body;
pub mod config;
pub mod conn;
pub mod diff_quote;
pub mod diff_session;
pub mod engine_core;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod quote_fanout;
pub mod recovery;
pub mod runtime;
pub mod service;
pub mod shinny;
pub mod wal_record;
pub mod ws;
