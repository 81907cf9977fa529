//! Durable storage of the server. This stage holds the WAL's on-disk format (framing, scanning,
//! recovery rules) as pure functions over bytes; the io_uring writer that uses it comes with the
//! server (issue 3).

pub mod lsm;
pub mod wal;
