//! Which DIFF sessions of this shard follow which quotes, and delivering a quote change to
//! them. A change is published once per commit group by the instrument's shard: to its own
//! sessions directly and to every other shard as one `ShardMsg::Quote` (the patch is built
//! once and shared). Delivering composes the patch into each session's pending data (bounded
//! by the session's tree, `diff::session`) and wakes its task; nothing queues per event.

use crate::diff::session::Session;
use crate::domain::fast_hash::FastMap;
use glommio::channels::local_channel::LocalSender;
use serde_json::Value;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Subscriptions on all shards of this process. While it is 0 the committers skip building
/// and sending quote patches, so a server without DIFF sessions pays nothing per trade. (One
/// server per process; tests start servers as processes.)
static SUBSCRIPTIONS: AtomicUsize = AtomicUsize::new(0);

/// Whether any session anywhere follows a quote.
pub fn anyone_follows() -> bool {
    SUBSCRIPTIONS.load(Ordering::Relaxed) > 0
}

struct Subscriber {
    session_id: u64,
    output: Weak<RefCell<Session>>,
    /// Capacity 1: a full channel means the task is already woken.
    wake: Rc<LocalSender<()>>,
}

/// The shard's subscriptions, by full symbol (`EXCHANGE.symbol`).
#[derive(Default)]
pub struct QuoteFanout {
    by_symbol: FastMap<String, Vec<Subscriber>>,
}

impl QuoteFanout {
    pub fn subscribe(
        &mut self,
        symbol: &str,
        session_id: u64,
        output: &Rc<RefCell<Session>>,
        wake: Rc<LocalSender<()>>,
    ) {
        let list = self.by_symbol.entry(symbol.to_owned()).or_default();
        if list.iter().all(|s| s.session_id != session_id) {
            list.push(Subscriber { session_id, output: Rc::downgrade(output), wake });
            SUBSCRIPTIONS.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops every subscription of a session (a new `subscribe_quote`, or the session ended).
    pub fn unsubscribe_all(&mut self, session_id: u64) {
        let mut removed = 0;
        self.by_symbol.retain(|_, list| {
            let before = list.len();
            list.retain(|s| s.session_id != session_id);
            removed += before - list.len();
            !list.is_empty()
        });
        SUBSCRIPTIONS.fetch_sub(removed, Ordering::Relaxed);
    }

    /// Composes `patch` into every session following `symbol` and wakes them.
    pub fn publish(&mut self, symbol: &str, patch: &Value) {
        let Some(list) = self.by_symbol.get_mut(symbol) else { return };
        let before = list.len();
        list.retain(|s| match s.output.upgrade() {
            Some(output) => {
                output.borrow_mut().push(patch);
                let _ = s.wake.try_send(());
                true
            }
            None => false,
        });
        SUBSCRIPTIONS.fetch_sub(before - list.len(), Ordering::Relaxed);
    }

    /// Sessions following `symbol` (for tests and metrics).
    pub fn followers(&self, symbol: &str) -> usize {
        self.by_symbol.get(symbol).map_or(0, Vec::len)
    }
}
