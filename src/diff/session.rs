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
//! Notifies are kept apart and sent as a patch of their own, after the data, in the same
//! `rtn_data` (one transaction either way): tqsdk-js takes every element of `data` that has a
//! `notify` out of the array and never applies the rest of that element, so a login's tree or
//! a refused order sharing a patch with its notify would be lost to it.

use super::merge_patch::ComposedPatch;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// A patch published to many sessions, with its JSON text encoded once. A session whose
/// pending data is just this patch sends the text as it is (the common case: a client that
/// peeks again after each answer gets each change alone); otherwise the value is composed.
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

/// Output state of one DIFF session.
#[derive(Debug, Clone)]
pub struct Session {
    pending: ComposedPatch,
    /// The `notify` parts of what was pushed.
    notices: ComposedPatch,
    /// Everything pending, when that is one shared patch (then `pending` and `notices` are
    /// empty).
    shared: Option<Arc<SharedPatch>>,
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

    /// Whether a publisher that just pushed should wake the session's task: a peek is
    /// waiting for data, or the pending data grew past the bound (the task then cuts the
    /// client off). A session without a peek is otherwise left asleep: its next peek finds
    /// everything composed.
    pub fn wants_wake(&self) -> bool {
        self.peeked || self.pending_bytes() > self.wake_past_bytes
    }

    /// Pushes a patch shared by many sessions: kept as its encoded text when nothing else is
    /// pending, composed otherwise.
    pub fn push_shared(&mut self, patch: &Arc<SharedPatch>) {
        if self.shared.is_none() && self.pending.is_empty() && self.notices.is_empty() {
            self.shared = Some(patch.clone());
        } else {
            self.push(&patch.value);
        }
    }

    /// Merges `patch` into the pending data (sent at the next peek, after earlier pushes).
    pub fn push(&mut self, patch: &Value) {
        if let Some(shared) = self.shared.take() {
            self.pending.push(&shared.value);
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

    /// Whether something is waiting for the client.
    pub fn has_pending(&self) -> bool {
        self.shared.is_some() || !self.pending.is_empty() || !self.notices.is_empty()
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
        let mut patches = match self.shared.take() {
            Some(shared) => vec![shared.value.clone()],
            None => Vec::new(),
        };
        patches.extend(std::mem::take(&mut self.pending).into_patches());
        patches.extend(std::mem::take(&mut self.notices).into_patches());
        patches
    }

    /// Upper bound of the size of the `rtn_data` text [`Session::take_ready`] would return,
    /// kept in O(1) per changed field (never serializes).
    pub fn pending_bytes(&self) -> usize {
        let shared = self.shared.as_ref().map_or(0, |p| p.text.len());
        ENVELOPE_BYTES + shared + self.pending.estimated_bytes() + self.notices.estimated_bytes()
    }

    /// `Some(reason)` when the pending data exceeds `max_bytes`: the server should disconnect.
    pub fn over_limit(&self, max_bytes: usize) -> Option<OverLimit> {
        let pending_bytes = self.pending_bytes();
        (pending_bytes > max_bytes).then_some(OverLimit { pending_bytes, max_bytes })
    }

    fn take_pending(&mut self) -> String {
        if let Some(shared) = self.shared.take() {
            let mut out = String::with_capacity(ENVELOPE_BYTES + shared.text.len());
            out.push_str(r#"{"aid":"rtn_data","data":["#);
            out.push_str(&shared.text);
            out.push_str("]}");
            return out;
        }
        let mut patches = std::mem::take(&mut self.pending).into_patches();
        patches.extend(std::mem::take(&mut self.notices).into_patches());
        let mut out = String::with_capacity(ENVELOPE_BYTES + 64);
        out.push_str(r#"{"aid":"rtn_data","data":["#);
        for (i, p) in patches.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // `Value`'s Display is its compact JSON.
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

    #[test]
    fn a_shared_patch_alone_is_sent_as_encoded_and_composes_otherwise() {
        let first = Arc::new(SharedPatch::new(json!({"quotes":{"X":{"last_price":1,"volume":3}}})));
        let second = Arc::new(SharedPatch::new(json!({"quotes":{"X":{"last_price":2}}})));
        let mut s = Session::new();
        s.push_shared(&first);
        assert!(s.has_pending() && !s.wants_wake());
        s.peek();
        assert!(s.wants_wake());
        assert_eq!(s.take_ready().unwrap(), format!(r#"{{"aid":"rtn_data","data":[{}]}}"#, first.text));
        // Two shared patches, or a shared one and another push, compose as usual.
        s.push_shared(&first);
        s.push_shared(&second);
        s.push(&json!({"notify":{"n":{"code":1}}}));
        s.peek();
        assert_eq!(
            data(&s.take_ready().unwrap()),
            vec![json!({"quotes":{"X":{"last_price":2,"volume":3}}}), json!({"notify":{"n":{"code":1}}})]
        );
        // Past its bound a session is woken without a peek, to be cut off.
        let mut bounded = Session::with_wake_past(100);
        bounded.push_shared(&first);
        assert!(!bounded.wants_wake());
        bounded.push(&json!({"notify":{"n":{"content":"x".repeat(200)}}}));
        assert!(bounded.wants_wake());
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
                prop_oneof![arb_json().prop_map(Some), Just(None)], 0..20),
        ) {
            let mut s = Session::new();
            let mut client = json!({});
            let mut truth = json!({});
            for op in ops {
                match op {
                    Some(p) => { apply(&mut truth, &p); s.push(&p); }
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
