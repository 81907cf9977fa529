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
//! A feed keeps its newest changes (a bounded number). A session further behind than that is
//! caught up in one of two ways, chosen per topic:
//! - A topic whose tree is small and bounded (a quote: a fixed set of fields) is a *whole-tree*
//!   feed: it also keeps every change composed into one patch (one composition per change for
//!   the topic, not per session), and a session that fell behind the kept changes gets that
//!   whole patch. Applying older changes again is harmless: a merge patch applied twice gives
//!   what applying it once gives, so a client that had changes up to version s and then gets
//!   changes 1..=v composed ends with changes 1..=v applied, whatever s was.
//! - A topic whose tree grows through the day (a chart series: bars, ticks) keeps only
//!   [`RECENT_PATCHES`]: when it drops the oldest, the fan-out first hands that change to every
//!   session still behind it (composed into the session's own pending patch, bounded by its
//!   tree). No change is ever lost, and the feed's memory is bounded per topic.

use super::merge_patch::ComposedPatch;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;

/// Changes a growing-tree feed keeps; sessions further behind get the older ones composed into
/// their own pending patch.
pub const RECENT_PATCHES: usize = 128;

/// Changes a whole-tree feed keeps (a quote change carries every field, so older ones add
/// nothing a lagging session needs: it gets the whole composed tree).
pub const RECENT_WHOLE_TREE_PATCHES: usize = 8;

/// A patch published to many sessions, with its JSON text encoded once. Its tree is needed
/// only where it is composed with other changes; a patch written as text (an account's trade
/// patch, `from_text`) parses it then, once, and a session that sends it alone never does.
pub struct SharedPatch {
    value: std::sync::OnceLock<Value>,
    pub text: Box<str>,
    /// Whether it carries a `notify` (sessions send those apart from data).
    has_notify: bool,
}

impl SharedPatch {
    pub fn new(value: Value) -> Self {
        let text = value.to_string().into_boxed_str();
        let has_notify = value.get("notify").is_some();
        Self { value: std::sync::OnceLock::from(value), text, has_notify }
    }

    /// A patch from its JSON text, which must be one JSON object without a `notify` (what our
    /// own writers make); anything else reads as the empty patch.
    pub fn from_text(text: String) -> Self {
        Self { value: std::sync::OnceLock::new(), text: text.into_boxed_str(), has_notify: false }
    }

    pub fn has_notify(&self) -> bool {
        self.has_notify
    }

    /// The patch as a tree (parsed from the text the first time, for a patch made from text).
    pub fn value(&self) -> &Value {
        self.value
            .get_or_init(|| serde_json::from_str(&self.text).unwrap_or_else(|_| Value::Object(serde_json::Map::new())))
    }
}

impl std::fmt::Debug for SharedPatch {
    // The text only: whether the tree was parsed yet is not part of the patch.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPatch").field("text", &self.text).finish()
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
    /// A whole-tree feed: every change composed, and its encoding at the current version once
    /// asked for.
    whole: Option<(ComposedPatch, Option<Vec<Arc<SharedPatch>>>)>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::with_capacity(RECENT_PATCHES)
    }
}

impl Feed {
    /// A growing-tree feed keeping its newest `capacity` (at least 1) changes.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            version: 0,
            capacity,
            recent: VecDeque::with_capacity(capacity),
            bytes_total: 0,
            deltas: Vec::new(),
            whole: None,
        }
    }

    /// A whole-tree feed keeping its newest `capacity` changes and all of them composed.
    pub fn whole_tree(capacity: usize) -> Self {
        Self { whole: Some((ComposedPatch::new(), None)), ..Self::with_capacity(capacity) }
    }

    /// The version of the newest change (0 before any).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Appends a change. Returns the change a growing-tree feed dropped to make room, with its
    /// version: every session that has not sent it yet must take it now (see the module docs).
    pub fn publish(&mut self, patch: Arc<SharedPatch>) -> Option<(u64, Arc<SharedPatch>)> {
        if let Some((composed, encoded)) = &mut self.whole {
            composed.push(patch.value());
            *encoded = None;
        }
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
        dropped.filter(|_| self.whole.is_none())
    }

    /// Whether a cursor at `seen` is behind the kept changes (a whole-tree feed then sends the
    /// whole tree).
    fn lost(&self, seen: u64) -> bool {
        seen + (self.recent.len() as u64) < self.version
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
        if let (Some((composed, _)), true) = (&self.whole, self.lost(seen)) {
            return composed.estimated_bytes();
        }
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
        let lost = self.lost(seen);
        if let (Some((composed, encoded)), true) = (&mut self.whole, lost) {
            return encoded.get_or_insert_with(|| encode(composed.patches().cloned().collect())).clone();
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
            composed.push(kept.patch.value());
        }
        let delta = encode(composed.into_patches());
        self.deltas.push((seen, delta.clone()));
        delta
    }
}

fn encode(patches: Vec<Value>) -> Vec<Arc<SharedPatch>> {
    patches.into_iter().map(|v| Arc::new(SharedPatch::new(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::merge_patch::{apply, tests::arb_json};
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_patch_written_as_text_is_the_tree_it_spells_and_prints_the_same_either_way() {
        let tree = json!({"trade": {"A": {"orders": {"a1": {"status": "ALIVE"}}}}});
        let from_text = SharedPatch::from_text(tree.to_string());
        let from_tree = SharedPatch::new(tree.clone());
        assert_eq!(format!("{from_text:?}"), format!("{from_tree:?}"));
        assert_eq!((from_text.value(), from_text.has_notify()), (&tree, false));
        // Parsed once, and the same text after.
        assert_eq!(format!("{from_text:?}"), format!("{from_tree:?}"));
        assert!(SharedPatch::new(json!({"notify": {"n": {}}})).has_notify());
    }

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
        assert_eq!(*delta[0].value(), json!({"q":{"last":2,"volume":3}}));
        // The same start version gets the same encoded delta.
        assert!(Arc::ptr_eq(&delta[0], &feed.since(0)[0]));
        // One change behind: the published patch itself.
        assert_eq!(*feed.since(2)[0].value(), json!({"q":{"volume":3}}));
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
        assert_eq!((version, dropped.value()), (1, &json!({"a":1})));
        // Version 1 is the oldest a cursor may still be at: changes 2 and 3 are kept.
        assert_eq!(*feed.since(1)[0].value(), json!({"b":1,"c":1}));
    }

    #[test]
    fn a_whole_tree_feed_sends_its_whole_tree_to_a_session_behind_what_it_keeps() {
        let mut feed = Feed::whole_tree(2);
        feed.publish(patch(json!({"q":{"a":1,"b":1}})));
        feed.publish(patch(json!({"q":{"a":2}})));
        assert!(feed.publish(patch(json!({"q":{"c":3}}))).is_none(), "nothing to hand out");
        assert_eq!(*feed.since(1)[0].value(), json!({"q":{"a":2,"c":3}}), "kept changes only");
        let whole = feed.since(0);
        assert_eq!(*whole[0].value(), json!({"q":{"a":2,"b":1,"c":3}}));
        assert!(Arc::ptr_eq(&whole[0], &feed.since(0)[0]), "encoded once per version");
        assert!(feed.bytes_since(0) > whole[0].text.len());
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
            whole_tree: bool,
        ) {
            let mut feed = if whole_tree { Feed::whole_tree(capacity) } else { Feed::with_capacity(capacity) };
            let mut truth = json!({});
            let mut cursors = [(0u64, json!({})), (0u64, json!({})), (0u64, json!({}))];
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Some(p) => {
                        apply(&mut truth, &p);
                        let dropped = feed.publish(patch(p));
                        prop_assert!(!(whole_tree && dropped.is_some()), "a whole-tree feed drops silently");
                        if let Some((version, dropped)) = dropped {
                            for (seen, tree) in &mut cursors {
                                if *seen < version {
                                    apply(tree, dropped.value());
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
                        for p in delta { apply(tree, p.value()); }
                        *seen = feed.version();
                    }
                }
            }
            for (seen, tree) in &mut cursors {
                for p in feed.since(*seen) { apply(tree, p.value()); }
                prop_assert_eq!(&*tree, &truth);
            }
        }
    }
}
