//! A market data topic's recent changes, kept once per shard for all the sessions that follow
//! it: the pull side of the quote fan-out.
//!
//! Publishing a change appends it here in O(1); nothing is done per session but marking it
//! (its cursor's version falls behind). When a session is answered, it takes the changes since
//! the version it last sent, composed into one delta. Sessions that peek at about the same time
//! were sent the same version before, so the delta from that version is composed and encoded
//! once and shared by all of them ([`Feed::since`] caches it until the next change). Before,
//! every change was composed into every waiting session's pending patch: the work grew with
//! changes × sessions, and a thousand slow sessions on one instrument starved the order flow
//! (docs/PERFORMANCE.md "DIFF quote fan-out").
//!
//! The feed keeps its newest [`RECENT_PATCHES`] changes. A session further behind than that
//! would miss the oldest one when it is dropped, so the fan-out first hands that change to
//! every session still behind it (composed into the session's own pending patch, bounded by its
//! tree as before): no change is ever lost, and the feed's memory is bounded per topic.

use super::merge_patch::ComposedPatch;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;

/// Changes a feed keeps; sessions further behind get the older ones composed into their own
/// pending patch.
pub const RECENT_PATCHES: usize = 128;

/// A patch published to many sessions, with its JSON text encoded once.
#[derive(Debug)]
pub struct SharedPatch {
    pub value: Value,
    pub text: Box<str>,
}

impl SharedPatch {
    pub fn new(value: Value) -> Self {
        let text = value.to_string().into_boxed_str();
        Self { value, text }
    }
}

/// One kept change: the patch and the text bytes of every kept change before it.
#[derive(Debug)]
struct Kept {
    patch: Arc<SharedPatch>,
    bytes_before: usize,
}

/// The newest changes of one topic, by version (the n-th published change is version n).
#[derive(Debug)]
pub struct Feed {
    version: u64,
    capacity: usize,
    /// Versions `version - recent.len() + 1 ..= version`, oldest first.
    recent: VecDeque<Kept>,
    /// Text bytes (each plus a comma) of everything in `recent` and of what was dropped from it.
    bytes_total: usize,
    /// Deltas to the current version, by the version they start after (cleared by a change).
    deltas: Vec<(u64, Vec<Arc<SharedPatch>>)>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::with_capacity(RECENT_PATCHES)
    }
}

impl Feed {
    /// A feed keeping its newest `capacity` (at least 1) changes.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { version: 0, capacity, recent: VecDeque::with_capacity(capacity), bytes_total: 0, deltas: Vec::new() }
    }

    /// The version of the newest change (0 before any).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Appends a change. Returns the change dropped to make room, with its version: every
    /// session that has not sent it yet must take it now (see the module docs).
    pub fn publish(&mut self, patch: Arc<SharedPatch>) -> Option<(u64, Arc<SharedPatch>)> {
        let dropped = if self.recent.len() == self.capacity {
            let oldest = self.version + 1 - self.capacity as u64;
            self.recent.pop_front().map(|k| (oldest, k.patch))
        } else {
            None
        };
        self.version += 1;
        let bytes = patch.text.len() + 1;
        self.recent.push_back(Kept { patch, bytes_before: self.bytes_total });
        self.bytes_total += bytes;
        self.deltas.clear();
        dropped
    }

    /// Index in `recent` of the first change after version `seen` (clamped to what is kept).
    fn first_after(&self, seen: u64) -> usize {
        let oldest_kept = self.version + 1 - self.recent.len() as u64;
        seen.saturating_add(1).saturating_sub(oldest_kept) as usize
    }

    /// Upper bound of the text bytes of [`Feed::since`]`(seen)` (each patch plus a comma):
    /// twice the changes' own bytes, because a composition may add a reset patch of `null`s
    /// at paths whose values the changes wrote (`[]` then `{}` composes to `null`, `{}`).
    pub fn bytes_since(&self, seen: u64) -> usize {
        match self.recent.get(self.first_after(seen)) {
            Some(first) if seen < self.version => 2 * (self.bytes_total - first.bytes_before),
            _ => 0,
        }
    }

    /// The changes after version `seen`, composed: usually one patch (two when a path changed
    /// from a value to an object, see `merge_patch`), none if `seen` is current. Composed and
    /// encoded once per starting version between two changes.
    pub fn since(&mut self, seen: u64) -> Vec<Arc<SharedPatch>> {
        if seen >= self.version {
            return Vec::new();
        }
        let first = self.first_after(seen);
        if first + 1 == self.recent.len() {
            return vec![self.recent[first].patch.clone()];
        }
        if let Some((_, delta)) = self.deltas.iter().find(|(from, _)| *from == seen) {
            return delta.clone();
        }
        let mut composed = ComposedPatch::new();
        for kept in self.recent.range(first..) {
            composed.push(&kept.patch.value);
        }
        let delta: Vec<Arc<SharedPatch>> =
            composed.into_patches().into_iter().map(|v| Arc::new(SharedPatch::new(v))).collect();
        self.deltas.push((seen, delta.clone()));
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::merge_patch::{apply, tests::arb_json};
    use proptest::prelude::*;
    use serde_json::json;

    fn patch(v: Value) -> Arc<SharedPatch> {
        Arc::new(SharedPatch::new(v))
    }

    #[test]
    fn a_delta_composes_the_changes_after_a_version_and_is_shared() {
        let mut feed = Feed::with_capacity(4);
        assert!(feed.since(0).is_empty());
        feed.publish(patch(json!({"q":{"last":1,"volume":1}})));
        feed.publish(patch(json!({"q":{"last":2}})));
        feed.publish(patch(json!({"q":{"volume":3}})));
        assert_eq!(feed.version(), 3);
        let delta = feed.since(0);
        assert_eq!(delta.len(), 1);
        assert_eq!(delta[0].value, json!({"q":{"last":2,"volume":3}}));
        // The same start version gets the same encoded delta.
        assert!(Arc::ptr_eq(&delta[0], &feed.since(0)[0]));
        // One change behind: the published patch itself.
        assert_eq!(feed.since(2)[0].value, json!({"q":{"volume":3}}));
        assert!(feed.since(3).is_empty());
        assert!(feed.bytes_since(0) >= delta[0].text.len());
        assert_eq!(feed.bytes_since(3), 0);
    }

    #[test]
    fn the_oldest_change_is_handed_out_when_dropped() {
        let mut feed = Feed::with_capacity(2);
        assert!(feed.publish(patch(json!({"a":1}))).is_none());
        assert!(feed.publish(patch(json!({"b":1}))).is_none());
        let (version, dropped) = feed.publish(patch(json!({"c":1}))).unwrap();
        assert_eq!((version, &dropped.value), (1, &json!({"a":1})));
        // Version 1 is the oldest a cursor may still be at: changes 2 and 3 are kept.
        assert_eq!(feed.since(1)[0].value, json!({"b":1,"c":1}));
    }

    proptest! {
        /// Sessions that take their deltas at random times (and take each dropped change as
        /// the fan-out hands it out) end with the tree of every change applied in order; every
        /// delta stays within `bytes_since`.
        #[test]
        fn cursors_see_every_change_in_order(
            ops in proptest::collection::vec(
                prop_oneof![arb_json().prop_map(Some), (0usize..3).prop_map(|_| None)], 0..40),
            capacity in 1usize..5,
            reader in 0usize..3,
        ) {
            let mut feed = Feed::with_capacity(capacity);
            let mut truth = json!({});
            let mut cursors = [(0u64, json!({})), (0u64, json!({})), (0u64, json!({}))];
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Some(p) => {
                        apply(&mut truth, &p);
                        if let Some((version, dropped)) = feed.publish(patch(p)) {
                            for (seen, tree) in &mut cursors {
                                if *seen < version {
                                    apply(tree, &dropped.value);
                                    *seen = version;
                                }
                            }
                        }
                    }
                    None => {
                        let (seen, tree) = &mut cursors[(i + reader) % 3];
                        let bound = feed.bytes_since(*seen);
                        let delta = feed.since(*seen);
                        prop_assert!(delta.iter().map(|p| p.text.len() + 1).sum::<usize>() <= bound);
                        for p in delta { apply(tree, &p.value); }
                        *seen = feed.version();
                    }
                }
            }
            for (seen, tree) in &mut cursors {
                for p in feed.since(*seen) { apply(tree, &p.value); }
                prop_assert_eq!(&*tree, &truth);
            }
        }
    }
}
