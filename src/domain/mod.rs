//! The pure exchange core: no I/O, no clock, no threads. See docs/ARCHITECTURE.md.

pub mod book;
pub mod instrument;
pub mod name;
pub mod types;
