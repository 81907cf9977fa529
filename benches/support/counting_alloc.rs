//! A global allocator that forwards to the system allocator and counts what passes through it.
//!
//! Install it once per bench binary:
//!
//! ```ignore
//! #[path = "support/counting_alloc.rs"]
//! mod counting_alloc;
//! #[global_allocator]
//! static ALLOC: counting_alloc::CountingAlloc = counting_alloc::CountingAlloc;
//! ```
//!
//! Counters are process-wide relaxed atomics: read them before and after a single-threaded phase
//! and subtract. `realloc` counts as one allocation (it may move the block).

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static DEALLOCATIONS: AtomicU64 = AtomicU64::new(0);

pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counters
// only observe.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        DEALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations (including reallocations) since the process started.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Relaxed)
}

/// Bytes requested by those allocations (new size for a reallocation).
pub fn allocated_bytes() -> u64 {
    BYTES.load(Relaxed)
}

/// Deallocations since the process started.
pub fn deallocations() -> u64 {
    DEALLOCATIONS.load(Relaxed)
}

/// The three counters at one instant; subtract two snapshots to get a phase's traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub allocations: u64,
    pub bytes: u64,
    pub deallocations: u64,
}

impl Snapshot {
    pub fn now() -> Self {
        Self { allocations: allocations(), bytes: allocated_bytes(), deallocations: deallocations() }
    }

    /// Traffic from `earlier` to `self`.
    pub fn since(self, earlier: Snapshot) -> Snapshot {
        Snapshot {
            allocations: self.allocations - earlier.allocations,
            bytes: self.bytes - earlier.bytes,
            deallocations: self.deallocations - earlier.deallocations,
        }
    }
}
