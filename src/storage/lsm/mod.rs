//! The per-shard history store's storage engine (issue 6, first part): an LSM tree of byte
//! keys and values. Writes go to a memtable (`memtable`); an explicit flush turns it into an
//! immutable level-0 SSTable (`sstable`, `format`, `bloom`); an explicit compaction merges
//! level 0 into level 1 (`compaction`); the manifest (`manifest`) records which tables exist.
//! `store` ties them together. Files are created durably and atomically (`fsio`). A corrupt or
//! half-written file is an error (`error`), never served.
//!
//! Not here yet: a log for the memtable (unflushed writes are lost in a crash: the server's
//! WAL is meant to cover them), background compaction, checkpoints, server integration.

pub mod bloom;
pub mod compaction;
pub mod error;
pub mod format;
pub mod fsio;
pub mod manifest;
pub mod memtable;
pub mod sstable;
pub mod store;

pub use error::{LsmError, Result};
pub use store::{Store, StoreOptions};

/// One versioned key: `value: None` is a tombstone. Data blocks are rkyv archives of
/// `Vec<Entry>`.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Entry {
    pub key: Vec<u8>,
    pub seq: u64,
    pub value: Option<Vec<u8>>,
}
