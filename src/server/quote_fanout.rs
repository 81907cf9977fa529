//! Which DIFF sessions of this shard follow which market data topics, and delivering a change
//! to them. A topic is a quote (`EXCHANGE.symbol`) or a chart series (`klines/<symbol>/<ns>`,
//! `ticks/<symbol>`, see `diff_chart`). A change is published once per commit group by the
//! instrument's shard: to its own sessions directly and to every other shard as one
//! `ShardMsg::Quote` (the patch is built once and shared). Delivering composes the patch into
//! each session's pending data (bounded by the session's tree, `diff::session`) and wakes its
//! task; nothing queues per event.

use crate::diff::session::Session;
use crate::domain::fast_hash::FastMap;
use glommio::channels::local_channel::LocalSender;
use serde_json::Value;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Quote and chart subscriptions on all shards of this process. While one is 0 the committers
/// skip building and sending that kind of patch, so a server without DIFF sessions pays nothing
/// per trade. (One server per process; tests start servers as processes.)
static QUOTE_SUBSCRIPTIONS: AtomicUsize = AtomicUsize::new(0);
static CHART_SUBSCRIPTIONS: AtomicUsize = AtomicUsize::new(0);

/// Whether any session anywhere follows a quote.
pub fn anyone_follows() -> bool {
    QUOTE_SUBSCRIPTIONS.load(Ordering::Relaxed) > 0
}

/// Whether any session anywhere follows a chart (k-lines or ticks).
pub fn anyone_charts() -> bool {
    CHART_SUBSCRIPTIONS.load(Ordering::Relaxed) > 0
}

/// What a topic is, for the counters above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    Quote,
    Chart,
}

impl Topic {
    fn counter(self) -> &'static AtomicUsize {
        match self {
            Topic::Quote => &QUOTE_SUBSCRIPTIONS,
            Topic::Chart => &CHART_SUBSCRIPTIONS,
        }
    }
}

struct Subscriber {
    session_id: u64,
    kind: Topic,
    output: Weak<RefCell<Session>>,
    /// Capacity 1: a full channel means the task is already woken.
    wake: Rc<LocalSender<()>>,
}

/// The shard's subscriptions, by topic.
#[derive(Default)]
pub struct QuoteFanout {
    by_topic: FastMap<String, Vec<Subscriber>>,
}

impl QuoteFanout {
    pub fn subscribe(
        &mut self,
        topic: &str,
        kind: Topic,
        session_id: u64,
        output: &Rc<RefCell<Session>>,
        wake: Rc<LocalSender<()>>,
    ) {
        let list = self.by_topic.entry(topic.to_owned()).or_default();
        if list.iter().all(|s| s.session_id != session_id) {
            list.push(Subscriber { session_id, kind, output: Rc::downgrade(output), wake });
            kind.counter().fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops a session's subscription to one topic.
    pub fn unsubscribe(&mut self, topic: &str, session_id: u64) {
        self.retain(|t, s| !(t == topic && s.session_id == session_id));
    }

    /// Drops every quote subscription of a session (a new `subscribe_quote` replaces them).
    pub fn unsubscribe_quotes(&mut self, session_id: u64) {
        self.retain(|_, s| !(s.kind == Topic::Quote && s.session_id == session_id));
    }

    /// Drops every subscription of a session (it ended).
    pub fn unsubscribe_all(&mut self, session_id: u64) {
        self.retain(|_, s| s.session_id != session_id);
    }

    fn retain(&mut self, keep: impl Fn(&str, &Subscriber) -> bool) {
        self.by_topic.retain(|topic, list| {
            list.retain(|s| {
                let kept = keep(topic, s);
                if !kept {
                    s.kind.counter().fetch_sub(1, Ordering::Relaxed);
                }
                kept
            });
            !list.is_empty()
        });
    }

    /// Composes `patch` into every session following `topic` and wakes them.
    pub fn publish(&mut self, topic: &str, patch: &Value) {
        let Some(list) = self.by_topic.get_mut(topic) else { return };
        list.retain(|s| match s.output.upgrade() {
            Some(output) => {
                output.borrow_mut().push(patch);
                let _ = s.wake.try_send(());
                true
            }
            None => {
                s.kind.counter().fetch_sub(1, Ordering::Relaxed);
                false
            }
        });
        if list.is_empty() {
            self.by_topic.remove(topic);
        }
    }

    /// Sessions following `topic` (for tests and metrics).
    pub fn followers(&self, topic: &str) -> usize {
        self.by_topic.get(topic).map_or(0, Vec::len)
    }
}
