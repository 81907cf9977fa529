//! The pure exchange core: no I/O, no clock, no threads. See docs/ARCHITECTURE.md.

pub mod account_ops;
pub mod book;
pub mod chunked_vec;
pub mod command;
pub mod engine;
pub mod event;
pub mod fast_hash;
pub mod instrument;
pub mod ledger;
pub mod market_data;
pub mod name;
pub mod order_checks;
pub mod risk;
pub mod shard;
pub mod touched;
pub mod types;
