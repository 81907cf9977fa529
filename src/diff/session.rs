//! One DIFF connection's output state, pure: what is pending for the client and whether it may
//! be sent.
//!
//! DIFF is pull-based: the client sends `peek_message`, the server answers with ONE `rtn_data`
//! as soon as it has changes, then sends nothing until the next peek. Between peeks every change
//! is composed into one pending patch ([`ComposedPatch`]), so the pending data is bounded by the
//! size of the tree it describes (its subscribed quotes, charts, account...), never by the number
//! of events: a million updates of the same quote fields keep one copy of each field. A client
//! that stops reading therefore costs at most its tree; [`Session::over_limit`] lets the server
//! cut it off, with a reason, when even that exceeds a bound.
//!
//! Market data topics (quotes, chart series) are not pushed: the session follows their
//! [`Feed`]s with a cursor, and their changes since the cursor are taken, composed once per
//! feed version for every session at that version, when the client is answered. Changes a
//! feed drops before the session sent them are composed into its own pending patch, so they
//! too stay bounded by the tree.
//!
//! Notifies are kept apart and sent as a patch of their own, after the data, in the same
//! `rtn_data` (one transaction either way): tqsdk-js takes every element of `data` that has a
//! `notify` out of the array and never applies the rest of that element, so a login's tree or
//! a refused order sharing a patch with its notify would be lost to it.

use super::feed::{Feed, SharedPatch};
use super::merge_patch::ComposedPatch;
use serde_json::Value;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

/// A market data topic the session follows, and the version of its feed it has sent (or
/// composed into its pending patch).
#[derive(Debug, Clone)]
struct Cursor {
    topic: Rc<str>,
    feed: Rc<RefCell<Feed>>,
    seen: u64,
    /// Whether the topic's publisher has this session on its list of sessions to look at
    /// (see [`Session::arm`]); set exactly while it is there.
    armed: bool,
}

impl Cursor {
    fn behind(&self) -> bool {
        self.seen < self.feed.borrow().version()
    }
}

/// Output state of one DIFF session.
#[derive(Debug, Clone)]
pub struct Session {
    pending: ComposedPatch,
    /// The `notify` parts of what was pushed.
    notices: ComposedPatch,
    /// All the session's own pending data, when that is one shared patch pushed while nothing
    /// else was (then `pending` and `notices` are empty): sent as its encoded text, never
    /// copied (an account's trade patch to its one session, the common case).
    shared: Option<Arc<SharedPatch>>,
    /// The market data topics followed: their changes since `seen` are pending too, taken
    /// from the topic's shared [`Feed`] when the client is answered.
    cursors: Vec<Cursor>,
    peeked: bool,
    /// Pending bytes past which publishers wake the session even without a peek, so it can
    /// cut the client off ([`Session::over_limit`]); `usize::MAX`: never.
    wake_past_bytes: usize,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            pending: ComposedPatch::default(),
            notices: ComposedPatch::default(),
            shared: None,
            cursors: Vec::new(),
            peeked: false,
            wake_past_bytes: usize::MAX,
        }
    }
}

/// Why a session should be disconnected: its pending data grew past the server's bound because
/// the client stopped peeking (or its tree is larger than allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    /// Upper bound of the pending `rtn_data` size.
    pub pending_bytes: usize,
    /// The bound it exceeded.
    pub max_bytes: usize,
}

impl fmt::Display for OverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client too slow: {} bytes of DIFF data pending (limit {}) without a peek_message",
            self.pending_bytes, self.max_bytes
        )
    }
}

impl std::error::Error for OverLimit {}

/// Bytes of `{"aid":"rtn_data","data":[` and `]}` around the patches.
const ENVELOPE_BYTES: usize = r#"{"aid":"rtn_data","data":[]}"#.len();

impl Session {
    /// A session with nothing pending and no peek outstanding.
    pub fn new() -> Self {
        Self::default()
    }

    /// A session whose publishers wake it past `bytes` pending even without a peek.
    pub fn with_wake_past(bytes: usize) -> Self {
        Self { wake_past_bytes: bytes, ..Self::default() }
    }

    /// Whether the session waits for data: a peek outstanding and nothing pending. A
    /// publisher that gives such a session data wakes its task (`wakes_after`); a session
    /// that already had data is awake (sending, or waiting for its turn to), and one without
    /// a peek finds everything composed when its peek comes.
    pub fn waits_for_data(&self) -> bool {
        self.peeked && !self.has_pending()
    }

    /// Whether a publisher that just pushed should wake the session's task, given whether it
    /// [`Session::waits_for_data`] before the push: it did, or the data the session holds grew
    /// past the bound (the task then cuts the client off). Waking sessions that are awake
    /// anyway would cost a task run per change per session.
    pub fn wakes_after(&self, waited_for_data: bool) -> bool {
        waited_for_data || self.held_bytes() > self.wake_past_bytes
    }

    /// Whether the session has something to send now (a peek outstanding and data pending),
    /// and whether that includes its own data (which does not wait for the delivery budget).
    pub fn ready_to_send(&self) -> (bool, bool) {
        (self.peeked && self.has_pending(), self.has_own_pending())
    }

    /// [`Session::waits_for_data`] as it was before change `version` of `topic` was
    /// published (the feed already holds it).
    pub fn waited_before(&self, topic: &str, version: u64) -> bool {
        self.peeked
            && !self.has_own_pending()
            && self.cursors.iter().all(|c| if &*c.topic == topic { c.seen + 1 >= version } else { !c.behind() })
    }

    /// Follows a market data topic from its feed's current version on: later changes are
    /// pending until sent. Following it again keeps the cursor as it is.
    pub fn follow(&mut self, topic: Rc<str>, feed: Rc<RefCell<Feed>>) {
        if self.cursors.iter().all(|c| c.topic != topic) {
            let seen = feed.borrow().version();
            self.cursors.push(Cursor { topic, feed, seen, armed: false });
        }
    }

    /// While the session waits for data, puts it on the list of every followed topic it is not
    /// on yet: `register(topic)` adds it and says whether it did (a publisher then looks only
    /// at the sessions on its topic's list, not at every follower). A publisher takes the
    /// session off with [`Session::disarm`] when it looks at it.
    pub fn arm(&mut self, mut register: impl FnMut(&str) -> bool) {
        if !self.waits_for_data() {
            return;
        }
        for c in self.cursors.iter_mut().filter(|c| !c.armed) {
            c.armed = register(&c.topic);
        }
    }

    /// The publisher of `topic` took the session off its list.
    pub fn disarm(&mut self, topic: &str) {
        if let Some(c) = self.cursors.iter_mut().find(|c| &*c.topic == topic) {
            c.armed = false;
        }
    }

    /// Whether the session follows `topic`.
    pub fn follows(&self, topic: &str) -> bool {
        self.cursors.iter().any(|c| &*c.topic == topic)
    }

    /// Stops following a topic; its changes not sent yet are dropped with it.
    pub fn unfollow(&mut self, topic: &str) {
        self.cursors.retain(|c| &*c.topic != topic);
    }

    /// Pushes a patch that shows `topic` as it is now (a snapshot answered by its shard):
    /// the feed's changes so far are older, so only later ones are left to send.
    pub fn push_snapshot(&mut self, topic: &str, patch: &Value) {
        self.push(patch);
        if let Some(c) = self.cursors.iter_mut().find(|c| &*c.topic == topic) {
            c.seen = c.feed.borrow().version();
        }
    }

    /// `topic`'s feed drops change `version`: if not sent yet, it is composed into the pending
    /// patch now (after everything the session holds, which is all older).
    pub fn absorb(&mut self, topic: &str, version: u64, patch: &SharedPatch) {
        let Some(c) = self.cursors.iter_mut().find(|c| &*c.topic == topic) else { return };
        if c.seen < version {
            c.seen = version;
            self.push(patch.value());
        }
    }

    /// Pushes a patch encoded once (without a `notify`): kept as it is while nothing else of
    /// the session's own is pending, composed otherwise.
    pub fn push_shared(&mut self, patch: &Arc<SharedPatch>) {
        if !self.has_own_pending() && !patch.has_notify() {
            self.shared = Some(patch.clone());
        } else {
            self.push(patch.value());
        }
    }

    /// Merges `patch` into the pending data (sent at the next peek, after earlier pushes).
    pub fn push(&mut self, patch: &Value) {
        if let Some(shared) = self.shared.take() {
            self.pending.push(shared.value());
        }
        match patch.as_object() {
            Some(fields) if fields.contains_key("notify") => {
                let (notify, rest): (serde_json::Map<String, Value>, serde_json::Map<String, Value>) =
                    fields.iter().map(|(k, v)| (k.clone(), v.clone())).partition(|(k, _)| k == "notify");
                if !rest.is_empty() {
                    self.pending.push(&Value::Object(rest));
                }
                self.notices.push(&Value::Object(notify));
            }
            _ => self.pending.push(patch),
        }
    }

    /// Pushes patches that must reach the client in the same `rtn_data` (e.g. an order, its
    /// trade, the position and the account after a fill). Since everything pending is composed
    /// into one value and taken at once by [`Session::take_ready`], this is the same as pushing
    /// them one by one without a take in between; it exists to make that guarantee explicit at
    /// call sites.
    pub fn push_transaction(&mut self, patches: impl IntoIterator<Item = Value>) {
        for p in patches {
            self.push(&p);
        }
    }

    /// Records the client's `peek_message`.
    pub fn peek(&mut self) {
        self.peeked = true;
    }

    /// Whether a `peek_message` is outstanding.
    pub fn is_peeked(&self) -> bool {
        self.peeked
    }

    /// Whether the session holds data of its own (its trade tree, notifies, snapshots), not
    /// only followed topics' changes: answers to the client's own requests, which do not wait
    /// for market data's delivery budget.
    pub fn has_own_pending(&self) -> bool {
        self.shared.is_some() || !self.pending.is_empty() || !self.notices.is_empty()
    }

    /// Whether something is waiting for the client.
    pub fn has_pending(&self) -> bool {
        self.has_own_pending() || self.cursors.iter().any(Cursor::behind)
    }

    /// The one `rtn_data` text to send now, if a peek is outstanding and something is pending.
    /// Clears both: the server then sends nothing until the next peek.
    pub fn take_ready(&mut self) -> Option<String> {
        if !self.peeked || !self.has_pending() {
            return None;
        }
        self.peeked = false;
        Some(self.take_pending())
    }

    /// The pending data as an `rtn_data` text regardless of peeks (an outstanding peek stays
    /// outstanding), or `None` if nothing is pending. For the one message a server sends
    /// unprompted on connect: tqsdk-js only peeks after it received something.
    pub fn take_unsolicited(&mut self) -> Option<String> {
        if !self.has_pending() {
            return None;
        }
        Some(self.take_pending())
    }

    /// The pending patches as values, regardless of peeks, for a server that pushes changes
    /// in another form (the legacy JSON API); empty when nothing is pending.
    pub fn take_patches(&mut self) -> Vec<Value> {
        let mut patches: Vec<Value> = self.shared.take().map(|p| p.value().clone()).into_iter().collect();
        patches.extend(std::mem::take(&mut self.pending).into_patches());
        patches.extend(self.take_feeds().iter().map(|p| p.value().clone()));
        patches.extend(std::mem::take(&mut self.notices).into_patches());
        patches
    }

    /// Upper bound of the size of the `rtn_data` text [`Session::take_ready`] would return,
    /// kept in O(1) per changed field and followed topic (never serializes).
    pub fn pending_bytes(&self) -> usize {
        let feeds: usize = self.cursors.iter().map(|c| c.feed.borrow().bytes_since(c.seen)).sum();
        self.held_bytes() + feeds
    }

    /// Upper bound of what the session holds itself: its pending patch, the envelope and the
    /// notifies. The followed topics' changes not sent yet are held once per topic by its feed
    /// (bounded by [`super::feed::RECENT_PATCHES`]), not by the session.
    pub fn held_bytes(&self) -> usize {
        let shared = self.shared.as_ref().map_or(0, |p| p.text.len() + 1);
        ENVELOPE_BYTES + shared + self.pending.estimated_bytes() + self.notices.estimated_bytes()
    }

    /// `Some(reason)` when the data the session holds exceeds `max_bytes`: the server should
    /// disconnect.
    pub fn over_limit(&self, max_bytes: usize) -> Option<OverLimit> {
        let pending_bytes = self.held_bytes();
        (pending_bytes > max_bytes).then_some(OverLimit { pending_bytes, max_bytes })
    }

    /// The followed topics' changes not sent yet (composed per topic, shared with the other
    /// sessions at the same version); the cursors move to the feeds' current versions.
    fn take_feeds(&mut self) -> Vec<Arc<SharedPatch>> {
        let mut out = Vec::new();
        for c in &mut self.cursors {
            let mut feed = c.feed.borrow_mut();
            if c.seen < feed.version() {
                out.extend(feed.since(c.seen));
                c.seen = feed.version();
            }
        }
        out
    }

    /// Everything pending as one `rtn_data`, in order: the session's own pending patch (which
    /// holds topic snapshots and dropped feed changes, all older than the feeds' deltas), the
    /// feeds' deltas, then the notifies.
    fn take_pending(&mut self) -> String {
        let shared = self.shared.take();
        let own = std::mem::take(&mut self.pending).into_patches();
        let feeds = self.take_feeds();
        let notices = std::mem::take(&mut self.notices).into_patches();
        let shared_bytes: usize = shared.iter().chain(&feeds).map(|p| p.text.len() + 1).sum();
        let mut out = String::with_capacity(ENVELOPE_BYTES + shared_bytes + 64);
        out.push_str(r#"{"aid":"rtn_data","data":["#);
        let mut first = true;
        let mut comma = |out: &mut String| {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
        };
        if let Some(p) = &shared {
            comma(&mut out);
            out.push_str(&p.text);
        }
        for p in &own {
            comma(&mut out);
            // `Value`'s Display is its compact JSON.
            out.push_str(&p.to_string());
        }
        for p in &feeds {
            comma(&mut out);
            out.push_str(&p.text);
        }
        for p in &notices {
            comma(&mut out);
            out.push_str(&p.to_string());
        }
        out.push_str("]}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::merge_patch::{apply, tests::arb_json};
    use proptest::prelude::*;
    use serde_json::json;

    fn data(text: &str) -> Vec<Value> {
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["aid"], "rtn_data");
        v["data"].as_array().unwrap().clone()
    }

    #[test]
    fn nothing_is_sent_without_a_peek() {
        let mut s = Session::new();
        s.push(&json!({"quotes":{"SHFE.cu2501":{"last_price":1}}}));
        assert_eq!(s.take_ready(), None);
        s.peek();
        let text = s.take_ready().unwrap();
        assert_eq!(data(&text), vec![json!({"quotes":{"SHFE.cu2501":{"last_price":1}}})]);
        // Answered: no more until the next peek, even with new changes.
        s.push(&json!({"quotes":{"SHFE.cu2501":{"last_price":2}}}));
        assert_eq!(s.take_ready(), None);
        s.peek();
        assert!(s.take_ready().is_some());
        assert!(!s.has_pending());
    }

    #[test]
    fn peek_with_nothing_pending_waits_for_data() {
        let mut s = Session::new();
        s.peek();
        assert_eq!(s.take_ready(), None);
        assert!(s.is_peeked());
        s.push(&json!({"a":1}));
        assert_eq!(data(&s.take_ready().unwrap()), vec![json!({"a":1})]);
        assert!(!s.is_peeked());
    }

    #[test]
    fn changes_between_peeks_merge_into_one_patch() {
        let mut s = Session::new();
        s.push(&json!({"quotes":{"X":{"last_price":1,"volume":3}}}));
        s.push(&json!({"quotes":{"X":{"last_price":2}}}));
        s.push(&json!({"notify":{"n1":{"code":1}}}));
        s.push(&json!({"notify":{"n1":null}}));
        s.peek();
        // The data as one patch, then the notifies as their own.
        assert_eq!(
            data(&s.take_ready().unwrap()),
            vec![json!({"quotes":{"X":{"last_price":2,"volume":3}}}), json!({"notify":{"n1":null}})]
        );
    }

    fn feed() -> Rc<RefCell<Feed>> {
        Rc::new(RefCell::new(Feed::with_capacity(2)))
    }

    fn publish(feed: &Rc<RefCell<Feed>>, sessions: &mut [&mut Session], topic: &str, v: Value) {
        let dropped = feed.borrow_mut().publish(Arc::new(SharedPatch::new(v)));
        if let Some((version, patch)) = dropped {
            for s in sessions {
                s.absorb(topic, version, &patch);
            }
        }
    }

    #[test]
    fn followed_topics_are_sent_as_their_feeds_encoded_deltas() {
        let quotes = feed();
        publish(&quotes, &mut [], "X", json!({"quotes":{"X":{"last_price":0}}}));
        let mut s = Session::new();
        s.follow("X".into(), quotes.clone());
        assert!(!s.has_pending(), "changes before following are not pending");
        publish(&quotes, &mut [&mut s], "X", json!({"quotes":{"X":{"last_price":1,"volume":3}}}));
        assert!(s.has_pending() && !s.waits_for_data() && !s.wakes_after(false));
        s.peek();
        assert!(s.ready_to_send() == (true, false));
        let one = quotes.borrow_mut().since(1)[0].text.to_string();
        assert_eq!(s.take_ready().unwrap(), format!(r#"{{"aid":"rtn_data","data":[{one}]}}"#));
        assert!(!s.has_pending());
        // A snapshot covers the changes before it; own data first, then the feed, then notifies.
        publish(&quotes, &mut [&mut s], "X", json!({"quotes":{"X":{"last_price":2}}}));
        s.push_snapshot("X", &json!({"quotes":{"X":{"last_price":2,"volume":3,"open":1}}}));
        publish(&quotes, &mut [&mut s], "X", json!({"quotes":{"X":{"volume":4}}}));
        s.push(&json!({"notify":{"n":{"code":1}}}));
        s.peek();
        assert_eq!(
            data(&s.take_ready().unwrap()),
            vec![
                json!({"quotes":{"X":{"last_price":2,"volume":3,"open":1}}}),
                json!({"quotes":{"X":{"volume":4}}}),
                json!({"notify":{"n":{"code":1}}}),
            ]
        );
        // Changes the feed drops before the session sent them are composed into its own data.
        for i in 5..9 {
            publish(&quotes, &mut [&mut s], "X", json!({"quotes":{"X":{"volume":i}}}));
        }
        assert!(s.held_bytes() > ENVELOPE_BYTES, "dropped changes are held by the session");
        s.peek();
        let got = data(&s.take_ready().unwrap());
        let mut tree = json!({});
        for p in &got {
            crate::diff::merge_patch::apply(&mut tree, p);
        }
        assert_eq!(tree["quotes"]["X"]["volume"], 8, "{got:?}");
        // Unfollowed: nothing more is pending.
        s.unfollow("X");
        publish(&quotes, &mut [&mut s], "X", json!({"quotes":{"X":{"volume":9}}}));
        assert!(!s.has_pending());
        // Past its bound a session is woken without a peek, to be cut off.
        let mut bounded = Session::with_wake_past(100);
        bounded.push(&json!({"a":1}));
        assert!(!bounded.wakes_after(false));
        bounded.push(&json!({"notify":{"n":{"content":"x".repeat(200)}}}));
        assert!(bounded.wakes_after(false));
    }

    #[test]
    fn a_shared_patch_alone_is_sent_as_encoded_and_composes_otherwise() {
        let first = Arc::new(SharedPatch::new(json!({"trade":{"u":{"orders":{"o1":{"status":"ALIVE"}}}}})));
        let second = Arc::new(SharedPatch::new(json!({"trade":{"u":{"orders":{"o1":{"status":"FINISHED"}}}}})));
        let mut s = Session::new();
        s.push_shared(&first);
        assert!(s.has_own_pending() && s.held_bytes() > ENVELOPE_BYTES);
        s.peek();
        assert_eq!(s.take_ready().unwrap(), format!(r#"{{"aid":"rtn_data","data":[{}]}}"#, first.text));
        // Two shared patches, or a shared one and another push, compose in order.
        s.push_shared(&first);
        s.push_shared(&second);
        s.push(&json!({"notify":{"n":{"code":1}}}));
        s.peek();
        assert_eq!(
            data(&s.take_ready().unwrap()),
            vec![json!({"trade":{"u":{"orders":{"o1":{"status":"FINISHED"}}}}}), json!({"notify":{"n":{"code":1}}})]
        );
        // A notify is never kept whole (tqsdk-js drops the rest of an element with a notify).
        s.push_shared(&Arc::new(SharedPatch::new(json!({"notify":{"n2":{"code":2}},"trade":{"u":{"x":1}}}))));
        s.peek();
        assert_eq!(
            data(&s.take_ready().unwrap()),
            vec![json!({"trade":{"u":{"x":1}}}), json!({"notify":{"n2":{"code":2}}})]
        );
    }

    #[test]
    fn a_change_wakes_only_a_session_it_gives_its_first_data_to() {
        let quotes = feed();
        let mut s = Session::new();
        s.follow("X".into(), quotes.clone());
        let wakes = |s: &Session, version: u64| s.wakes_after(s.waited_before("X", version));
        publish(&quotes, &mut [&mut s], "X", json!({"quotes":{"X":{"volume":1}}}));
        assert!(!wakes(&s, 1), "no peek: the peek finds the change");
        s.take_unsolicited();
        s.peek();
        assert!(s.waits_for_data());
        publish(&quotes, &mut [&mut s], "X", json!({"quotes":{"X":{"volume":2}}}));
        assert!(wakes(&s, 2), "a waiting session gets its first data");
        publish(&quotes, &mut [&mut s], "X", json!({"quotes":{"X":{"volume":3}}}));
        assert!(!wakes(&s, 3), "it was woken already and has not sent yet");
        s.take_ready().unwrap();
        s.peek();
        s.push(&json!({"trade":{}}));
        assert!(!s.waits_for_data() && s.ready_to_send() == (true, true));
        publish(&quotes, &mut [&mut s], "X", json!({"quotes":{"X":{"volume":4}}}));
        assert!(!wakes(&s, 4), "other data was pending: awake already");
        let mut bounded = Session::with_wake_past(10);
        bounded.follow("X".into(), quotes.clone());
        bounded.push(&json!({"notify":{"n":{"content":"x".repeat(20)}}}));
        assert!(bounded.wakes_after(bounded.waited_before("X", 4)), "past its bound, to be cut off");
    }

    #[test]
    fn notifies_travel_in_a_patch_of_their_own() {
        // tqsdk-js drops the rest of any element of `data` that has a `notify`.
        let mut s = Session::new();
        s.push(&json!({"notify":{"qx1":{"code":0}},"trade":{"u":{"session":{"user_id":"u"}}}}));
        s.push(&json!({"trade":{"u":{"trade_more_data":false}}}));
        s.peek();
        let patches = data(&s.take_ready().unwrap());
        assert_eq!(
            patches,
            vec![
                json!({"trade":{"u":{"session":{"user_id":"u"},"trade_more_data":false}}}),
                json!({"notify":{"qx1":{"code":0}}}),
            ]
        );
        assert!(!s.has_pending());
    }

    #[test]
    fn transaction_reaches_client_in_one_rtn_data() {
        let mut s = Session::new();
        s.push_transaction(vec![
            json!({"trade":{"u1":{"orders":{"o1":{"status":"FINISHED","volume_left":0}}}}}),
            json!({"trade":{"u1":{"trades":{"t1|1":{"order_id":"o1","volume":2}}}}}),
            json!({"trade":{"u1":{"positions":{"SHFE.cu2501":{"pos_long_today":2}}}}}),
        ]);
        s.peek();
        let got = data(&s.take_ready().unwrap());
        assert_eq!(got.len(), 1);
        let u1 = &got[0]["trade"]["u1"];
        assert_eq!(u1["orders"]["o1"]["status"], "FINISHED");
        assert_eq!(u1["trades"]["t1|1"]["volume"], 2);
        assert_eq!(u1["positions"]["SHFE.cu2501"]["pos_long_today"], 2);
    }

    #[test]
    fn unsolicited_send_keeps_the_peek() {
        let mut s = Session::new();
        assert_eq!(s.take_unsolicited(), None);
        s.push(&json!({"mdhis_more_data":false}));
        s.peek();
        assert!(s.take_unsolicited().is_some());
        assert!(s.is_peeked());
        assert!(!s.has_pending());
    }

    #[test]
    fn pending_stays_bounded_by_the_tree_not_the_events() {
        let mut s = Session::new();
        let mut first_size = 0;
        for i in 0..100_000i64 {
            s.push(&json!({"quotes":{"SHFE.cu2501":{
                "datetime": format!("2024-12-02 14:59:{:02}.{:06}", i % 60, i % 1_000_000),
                "last_price": 74000.0 + (i % 100) as f64,
                "volume": i,
                "bid_price1": 73990.0, "ask_price1": 74010.0,
            }}}));
            if i == 0 {
                first_size = s.pending_bytes();
            }
            // Integers may grow a few digits; nothing else grows.
            assert!(s.pending_bytes() <= first_size + 8, "{}", s.pending_bytes());
            assert!(s.over_limit(1024).is_none());
        }
        s.peek();
        let text = s.take_ready().unwrap();
        assert!(text.len() <= 1024, "{text}");
        assert_eq!(data(&text)[0]["quotes"]["SHFE.cu2501"]["volume"], 99_999);
    }

    #[test]
    fn over_limit_reports_a_reason_and_clears_when_taken() {
        let mut s = Session::new();
        assert!(s.over_limit(100).is_none());
        for i in 0..50 {
            s.push(&json!({"klines":{"X":{"60":{"data":{ i.to_string(): {"close": 1.5}}}}}}));
        }
        let over = s.over_limit(100).unwrap();
        assert!(over.pending_bytes > 100);
        assert!(over.to_string().contains("limit 100"), "{over}");
        s.peek();
        let text = s.take_ready().unwrap();
        assert!(text.len() <= over.pending_bytes);
        assert!(s.over_limit(100).is_none());
    }

    proptest! {
        /// A client applying every rtn_data it receives ends with the same tree as one that
        /// applied every pushed patch, whatever the interleaving of pushes and peeks; each text
        /// stays within the size the session reported.
        #[test]
        fn client_tree_matches_pushed_patches(
            ops in proptest::collection::vec(
                prop_oneof![(arb_json(), any::<bool>()).prop_map(Some), Just(None)], 0..20),
        ) {
            let mut s = Session::new();
            let mut client = json!({});
            let mut truth = json!({});
            for op in ops {
                match op {
                    Some((p, shared)) => {
                        apply(&mut truth, &p);
                        if shared { s.push_shared(&Arc::new(SharedPatch::new(p))) } else { s.push(&p) }
                    }
                    None => s.peek(),
                }
                let bound = s.pending_bytes();
                if let Some(text) = s.take_ready() {
                    prop_assert!(text.len() <= bound);
                    for p in data(&text) { apply(&mut client, &p); }
                }
            }
            s.peek();
            if let Some(text) = s.take_ready() {
                for p in data(&text) { apply(&mut client, &p); }
            }
            prop_assert_eq!(client, truth);
        }
    }
}
