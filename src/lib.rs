//! QAExchange: a futures exchange. This crate's `domain` module is the pure, deterministic core
//! (order books, futures accounts, risk, market data, settlement) with no I/O and no wall clock:
//! commands go in, events come out, and the same commands always give the same events.
// `deny`, not `forbid`: the one exception is the read-only mmap of an SSTable
// (`storage::lsm::sstable::map_file`, memmap2), allowed there alone.
#![deny(unsafe_code)]

pub mod diff;
pub mod domain;
pub mod loadgen;
pub mod metrics;
pub mod replay;
pub mod server;
pub mod storage;
