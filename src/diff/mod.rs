//! The pure core of TianQin's DIFF protocol (what tqsdk speaks), with no I/O so it can be tested
//! exhaustively and shared by every shard:
//! - [`merge_patch`]: RFC 7386 JSON merge patches (apply, compose, diff), the unit of every
//!   `rtn_data`.
//! - [`session`]: one connection's output state: changes merge into one pending patch until the
//!   client peeks, so its memory is bounded by its tree, never by the number of events.
//! - [`feed`]: a market data topic's recent changes, kept once per shard; following sessions
//!   take the delta since the version they last sent, composed and encoded once for all of them.
//! - [`messages`]: client messages parsed by `aid` into typed values, and notify patches.
//! - [`size`]: a cheap upper bound of a JSON value's serialized length, used to bound sessions.
//!
//! The reference for field names and flows is `shared/reference/diff-protocol.md`.

pub mod feed;
pub mod merge_patch;
pub mod messages;
pub mod session;
pub mod size;
