//! The per-shard history store's storage engine (issue 6): an LSM tree of byte keys and
//! values. Writes go to a memtable (`memtable`); a flush turns it into an immutable level-0
//! SSTable (`sstable`, `format`, `bloom`); leveled compaction merges a level into the next
//! (`compaction` merges and cuts, `store` picks the inputs); the manifest (`manifest`) records
//! which tables exist. `store` ties them together and hands flushes and compactions out as jobs
//! to run on another thread. Files are created durably and atomically (`fsio`). A corrupt or
//! half-written file is an error (`error`), never served.
//!
//! The memtable has no log of its own: unflushed writes are lost in a crash, and the server
//! writes them again from its WAL (`server::history_store`, which also runs the jobs in the
//! background and ties the store to the shard's checkpoints).

pub mod block_reader;
pub mod bloom;
pub mod compaction;
pub mod courtesy;
pub mod error;
pub mod format;
pub mod fsio;
pub mod manifest;
pub mod memtable;
pub mod spare_files;
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

/// A fixed pseudo-random sequence for tests (xorshift64): `rand(n)` is in `0..n`.
#[cfg(test)]
pub(crate) fn test_rand(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed;
    move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    }
}
