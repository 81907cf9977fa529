//! Which DIFF sessions of this shard follow which market data topics, and delivering a change
//! to them. A topic is a quote (`EXCHANGE.symbol`) or a chart series (`klines/<symbol>/<ns>`,
//! `ticks/<symbol>`, see `diff_chart`). A change is published once per commit group by the
//! instrument's shard: to its own sessions directly and, as one `ShardMsg::Quote` (the patch is
//! built once and shared), to each other shard that has sessions following that instrument
//! (the shared [`FanoutDirectory`] says which). Here each topic has one [`Feed`] of its recent
//! changes: publishing appends to it and wakes the following sessions that wait for data (a
//! peek outstanding); each session takes the delta since the version it last sent when it is
//! answered, composed and encoded once for every session at that version (`diff::feed`). So a
//! change costs O(1) plus a wake per waiting follower, not a merge per follower. A session
//! further behind than the feed keeps gets a quote's whole tree (a quote feed composes every
//! change once), or, for a chart series, the changes the feed drops composed into its own
//! pending patch (bounded by its tree, `diff::session`): nothing is lost, nothing queues per
//! event.

use super::conn::Router;
use crate::diff::feed::{Feed, SharedPatch, RECENT_WHOLE_TREE_PATCHES};
use crate::diff::session::Session;
use crate::domain::fast_hash::FastMap;
use crate::domain::name::InstrumentId;
use glommio::channels::local_channel::LocalSender;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// What every shard's publishers need to know about every shard's subscriptions, shared by all
/// shards: how many quote and chart subscriptions exist (while one is 0 the committers skip
/// building that kind of patch, so a server without DIFF sessions pays nothing per trade), and
/// per instrument which shards have sessions following it (a bit per shard; with more than 64
/// shards every shard is sent everything).
pub struct FanoutDirectory {
    quotes: AtomicUsize,
    charts: AtomicUsize,
    /// Per instrument (config slot): bit k set while shard k has a subscription to it.
    shard_bits: Vec<AtomicU64>,
    shards: usize,
}

impl FanoutDirectory {
    pub fn new(instruments: usize, shards: usize) -> Self {
        Self {
            quotes: AtomicUsize::new(0),
            charts: AtomicUsize::new(0),
            shard_bits: (0..instruments).map(|_| AtomicU64::new(0)).collect(),
            shards,
        }
    }

    /// Whether any session anywhere follows a quote.
    pub fn anyone_follows(&self) -> bool {
        self.quotes.load(Ordering::Relaxed) > 0
    }

    /// Whether any session anywhere follows a chart (k-lines or ticks).
    pub fn anyone_charts(&self) -> bool {
        self.charts.load(Ordering::Relaxed) > 0
    }

    /// Whether shard `shard` has sessions following instrument `slot`.
    pub fn shard_follows(&self, slot: u32, shard: usize) -> bool {
        if self.shards > 64 {
            return true;
        }
        self.shard_bits.get(slot as usize).is_some_and(|bits| bits.load(Ordering::Relaxed) & (1 << shard) != 0)
    }

    fn counter(&self, kind: Topic) -> &AtomicUsize {
        match kind {
            Topic::Quote => &self.quotes,
            Topic::Chart => &self.charts,
        }
    }

    fn set(&self, slot: u32, shard: usize, on: bool) {
        let (Some(bits), true) = (self.shard_bits.get(slot as usize), shard < 64) else { return };
        if on {
            bits.fetch_or(1 << shard, Ordering::Relaxed);
        } else {
            bits.fetch_and(!(1 << shard), Ordering::Relaxed);
        }
    }
}

/// What a topic is, for the counters above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    Quote,
    Chart,
}

/// The instrument a topic is about: `EXCH.sym`, `klines/EXCH.sym/<ns>`, `ticks/EXCH.sym`.
fn topic_symbol(topic: &str) -> &str {
    match topic.split_once('/') {
        Some((_, rest)) => rest.split('/').next().unwrap_or(rest),
        None => topic,
    }
}

struct Subscriber {
    kind: Topic,
    /// The instrument's config slot (None for a symbol the router does not know).
    slot: Option<u32>,
    output: Weak<RefCell<Session>>,
    /// Capacity 1: a full channel means the task is already woken.
    wake: Rc<LocalSender<()>>,
}

/// A follower that waited for data when it last looked (`QuoteFanout::arm`).
struct Armed {
    output: Weak<RefCell<Session>>,
    wake: Rc<LocalSender<()>>,
}

/// One topic of this shard: its feed and the sessions following it.
struct Followed {
    topic: Rc<str>,
    feed: Rc<RefCell<Feed>>,
    /// By session id.
    followers: FastMap<u64, Subscriber>,
    /// The followers that may wait for data, by session id (its cursor's `armed` flag keeps
    /// one entry each): the only ones a change can wake, so publishing looks at these, not at
    /// every follower.
    armed: FastMap<u64, Armed>,
}

/// The shard's subscriptions, by topic.
pub struct QuoteFanout {
    shard: usize,
    directory: Arc<FanoutDirectory>,
    router: Rc<Router>,
    by_topic: FastMap<String, Followed>,
    /// The topics each session follows, so that dropping a session's subscriptions looks at
    /// its own topics only: walking every topic's followers made a mass disconnect of N
    /// sessions cost O(N²) on the shard.
    by_session: FastMap<u64, Vec<Rc<str>>>,
    /// Subscriptions of this shard per instrument slot (the directory's bit is set while > 0).
    per_slot: FastMap<u32, usize>,
}

impl QuoteFanout {
    pub fn new(shard: usize, directory: Arc<FanoutDirectory>, router: Rc<Router>) -> Self {
        Self {
            shard,
            directory,
            router,
            by_topic: FastMap::default(),
            by_session: FastMap::default(),
            per_slot: FastMap::default(),
        }
    }

    fn added(&mut self, kind: Topic, slot: Option<u32>) {
        self.directory.counter(kind).fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = slot {
            let n = self.per_slot.entry(slot).or_default();
            *n += 1;
            if *n == 1 {
                self.directory.set(slot, self.shard, true);
            }
        }
    }

    fn removed(directory: &FanoutDirectory, per_slot: &mut FastMap<u32, usize>, shard: usize, s: &Subscriber) {
        directory.counter(s.kind).fetch_sub(1, Ordering::Relaxed);
        if let Some(slot) = s.slot {
            if let Some(n) = per_slot.get_mut(&slot) {
                *n -= 1;
                if *n == 0 {
                    per_slot.remove(&slot);
                    directory.set(slot, shard, false);
                }
            }
        }
    }

    pub fn subscribe(
        &mut self,
        topic: &str,
        kind: Topic,
        session_id: u64,
        output: &Rc<RefCell<Session>>,
        wake: Rc<LocalSender<()>>,
    ) {
        let slot = InstrumentId::new(topic_symbol(topic)).and_then(|id| self.router.instrument_slot(&id));
        let followed = self.by_topic.entry(topic.to_owned()).or_insert_with(|| Followed {
            topic: topic.into(),
            // A quote is a fixed set of fields; a chart series grows through the day.
            feed: Rc::new(RefCell::new(match kind {
                Topic::Quote => Feed::whole_tree(RECENT_WHOLE_TREE_PATCHES),
                Topic::Chart => Feed::default(),
            })),
            followers: FastMap::default(),
            armed: FastMap::default(),
        });
        if let std::collections::hash_map::Entry::Vacant(entry) = followed.followers.entry(session_id) {
            entry.insert(Subscriber { kind, slot, output: Rc::downgrade(output), wake });
            output.borrow_mut().follow(followed.topic.clone(), followed.feed.clone());
            self.by_session.entry(session_id).or_default().push(followed.topic.clone());
            self.added(kind, slot);
        }
    }

    /// Drops a session's subscription to one topic.
    pub fn unsubscribe(&mut self, topic: &str, session_id: u64) {
        self.retain_of_session(session_id, |t, _| t != topic);
    }

    /// Drops every quote subscription of a session (a new `subscribe_quote` replaces them).
    pub fn unsubscribe_quotes(&mut self, session_id: u64) {
        self.retain_of_session(session_id, |_, s| s.kind != Topic::Quote);
    }

    /// Drops every subscription of a session (it ended).
    pub fn unsubscribe_all(&mut self, session_id: u64) {
        self.retain_of_session(session_id, |_, _| false);
    }

    /// Keeps the subscriptions of `session_id` that `keep` says to, looking only at the
    /// session's own topics.
    fn retain_of_session(&mut self, session_id: u64, keep: impl Fn(&str, &Subscriber) -> bool) {
        let Some(topics) = self.by_session.remove(&session_id) else { return };
        let mut kept = Vec::with_capacity(topics.len());
        for topic in topics {
            let Some(followed) = self.by_topic.get_mut(&*topic) else { continue };
            let Some(s) = followed.followers.get(&session_id) else { continue };
            if keep(&topic, s) {
                kept.push(topic);
                continue;
            }
            if let Some(s) = followed.followers.remove(&session_id) {
                Self::removed(&self.directory, &mut self.per_slot, self.shard, &s);
                followed.armed.remove(&session_id);
                // Callers (the session's own task, between awaits) hold no borrow of the
                // session, so this borrow succeeds; `try_` only keeps a bug from panicking.
                if let Some(output) = s.output.upgrade() {
                    if let Ok(mut output) = output.try_borrow_mut() {
                        output.unfollow(&topic);
                    }
                }
            }
            if followed.followers.is_empty() {
                self.by_topic.remove(&*topic);
            }
        }
        if !kept.is_empty() {
            self.by_session.insert(session_id, kept);
        }
    }

    /// Puts a session that waits for data on the list of each topic it follows (once per
    /// topic), so the topic's next change looks at it. A session's task calls this before it
    /// waits for its next event.
    pub fn arm(&mut self, session_id: u64, output: &Rc<RefCell<Session>>, wake: &Rc<LocalSender<()>>) {
        let by_topic = &mut self.by_topic;
        output.borrow_mut().arm(|topic| match by_topic.get_mut(topic) {
            Some(followed) => {
                followed.armed.insert(session_id, Armed { output: Rc::downgrade(output), wake: wake.clone() });
                true
            }
            None => false,
        });
    }

    /// Appends `patch` to `topic`'s feed and wakes the following sessions it gives data to
    /// while they wait for some (`Session::wakes_after`). Only the armed followers can be
    /// waiting, so only they are looked at: O(1) per change plus one look per waiting
    /// session, where looking at every follower cost 8 % of a shard with 1,000 sessions on one
    /// quote. A change the feed drops (a chart series) is composed into every follower that
    /// has not sent it yet, which does look at them all.
    pub fn publish(&mut self, topic: &str, patch: &Arc<SharedPatch>) {
        let Some(followed) = self.by_topic.get_mut(topic) else { return };
        let (dropped, version) = {
            let mut feed = followed.feed.borrow_mut();
            (feed.publish(patch.clone()), feed.version())
        };
        if dropped.is_none() {
            for (_, armed) in followed.armed.drain() {
                let Some(output) = armed.output.upgrade() else { continue };
                let mut output = output.borrow_mut();
                output.disarm(&followed.topic);
                if output.wakes_after(output.waited_before(&followed.topic, version)) {
                    let _ = armed.wake.try_send(());
                }
            }
            return;
        }
        // Every follower is looked at; the armed ones stay armed (their entries and flags
        // unchanged), to be looked at again by a change that drops nothing.
        let (directory, per_slot, shard) = (&self.directory, &mut self.per_slot, self.shard);
        let (armed, by_session) = (&mut followed.armed, &mut self.by_session);
        followed.followers.retain(|&session_id, s| match s.output.upgrade() {
            Some(output) => {
                let mut output = output.borrow_mut();
                let waited = output.waited_before(&followed.topic, version);
                if let Some((version, dropped)) = &dropped {
                    output.absorb(&followed.topic, *version, dropped);
                }
                if output.wakes_after(waited) {
                    let _ = s.wake.try_send(());
                }
                true
            }
            None => {
                // The session is gone without unsubscribing (a bug elsewhere): forget it here.
                Self::removed(directory, per_slot, shard, s);
                armed.remove(&session_id);
                if let Some(topics) = by_session.get_mut(&session_id) {
                    topics.retain(|t| **t != *topic);
                    if topics.is_empty() {
                        by_session.remove(&session_id);
                    }
                }
                false
            }
        });
        if followed.followers.is_empty() {
            self.by_topic.remove(topic);
        }
    }

    pub fn directory(&self) -> &Arc<FanoutDirectory> {
        &self.directory
    }

    /// The config slot of an instrument (bare or full id).
    pub fn slot_of(&self, id: &InstrumentId) -> Option<u32> {
        self.router.instrument_slot(id)
    }

    /// Sessions following `topic` (for tests and metrics).
    pub fn followers(&self, topic: &str) -> usize {
        self.by_topic.get(topic).map_or(0, |f| f.followers.len())
    }

    /// Sessions on `topic`'s list of those that may wait for data (for tests).
    pub fn armed(&self, topic: &str) -> usize {
        self.by_topic.get(topic).map_or(0, |f| f.armed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::channels::local_channel::{self, LocalReceiver};
    use serde_json::json;

    struct Follower {
        session: Rc<RefCell<Session>>,
        wake: Rc<LocalSender<()>>,
        _woken: LocalReceiver<()>,
    }

    impl Follower {
        fn new() -> Self {
            let (wake, woken) = local_channel::new_bounded(1);
            Self { session: Rc::new(RefCell::new(Session::new())), wake: Rc::new(wake), _woken: woken }
        }

        fn woken(&self) -> bool {
            self.wake.len() > 0
        }
    }

    fn change(volume: i64) -> Arc<SharedPatch> {
        Arc::new(SharedPatch::new(json!({"quotes":{"SHFE.cu2501":{"volume":volume}}})))
    }

    #[test]
    fn a_change_looks_only_at_the_armed_followers_and_wakes_those_that_wait() {
        const TOPIC: &str = "SHFE.cu2501";
        let mut fanout = QuoteFanout::new(0, Arc::new(FanoutDirectory::new(0, 1)), Rc::new(Router::new(Vec::new(), 1)));
        let f: Vec<Follower> = (0..3).map(|_| Follower::new()).collect();
        for (id, follower) in f.iter().enumerate() {
            fanout.subscribe(TOPIC, Topic::Quote, id as u64, &follower.session, follower.wake.clone());
        }
        // 0 and 2 peeked and wait for data; 1 has no peek outstanding.
        f[0].session.borrow_mut().peek();
        f[2].session.borrow_mut().peek();
        for _ in 0..3 {
            for (id, follower) in f.iter().enumerate() {
                fanout.arm(id as u64, &follower.session, &follower.wake);
            }
        }
        assert_eq!(fanout.armed(TOPIC), 2, "the waiting ones, each once");
        fanout.publish(TOPIC, &change(1));
        assert_eq!(f.iter().map(Follower::woken).collect::<Vec<_>>(), [true, false, true]);
        assert_eq!(fanout.armed(TOPIC), 0, "a change takes them off the list");
        // 0 has data now: arming it adds nothing until it has sent it and peeked again.
        fanout.arm(0, &f[0].session, &f[0].wake);
        assert_eq!(fanout.armed(TOPIC), 0);
        // 1 peeks: the change is pending for it, so it does not wait either.
        f[1].session.borrow_mut().peek();
        fanout.arm(1, &f[1].session, &f[1].wake);
        assert!(f[1].session.borrow().ready_to_send().0);
        assert_eq!(fanout.armed(TOPIC), 0);
        f[1].session.borrow_mut().take_ready().unwrap();
        f[1].session.borrow_mut().peek();
        fanout.arm(1, &f[1].session, &f[1].wake);
        assert_eq!(fanout.armed(TOPIC), 1);
        fanout.publish(TOPIC, &change(2));
        assert!(f[1].woken(), "a follower that waits is woken by the next change");
        // Subscribing again and again between changes keeps one entry per session.
        f[1].session.borrow_mut().take_ready().unwrap();
        f[1].session.borrow_mut().peek();
        for _ in 0..100 {
            fanout.unsubscribe_quotes(1);
            fanout.subscribe(TOPIC, Topic::Quote, 1, &f[1].session, f[1].wake.clone());
            fanout.arm(1, &f[1].session, &f[1].wake);
        }
        assert_eq!(fanout.armed(TOPIC), 1);
        fanout.unsubscribe_all(1);
        assert_eq!(fanout.armed(TOPIC), 0, "leaving takes a session off the list");
        assert_eq!(fanout.followers(TOPIC), 2);
    }

    fn instrument(symbol: &str) -> crate::domain::instrument::Instrument {
        use crate::domain::instrument::{CommissionConfig, ExchangeId, Instrument, InstrumentConfig, InstrumentStatus};
        Instrument::from_config(&InstrumentConfig {
            instrument_id: symbol.into(),
            exchange_id: ExchangeId::SHFE,
            product_id: "cu".into(),
            volume_multiple: 5,
            price_tick: 10.0,
            margin_rate_long: 0.1,
            margin_rate_short: 0.1,
            commission: CommissionConfig::default(),
            limit_rate: 0.1,
            pre_settlement: 70000.0,
            pre_close: None,
            pre_open_interest: 0,
            max_order_volume: 100,
            status: InstrumentStatus::Trading,
            position_limit: None,
            shard: None,
            delivery_year: None,
            delivery_month: None,
        })
        .expect("a valid instrument")
    }

    /// One step of the model test: which session, which topic (by index), what to do.
    #[derive(Clone, Debug)]
    enum Step {
        Subscribe(u64, usize),
        Unsubscribe(u64, usize),
        UnsubscribeQuotes(u64),
        UnsubscribeAll(u64),
        Arm(u64),
        Publish(usize),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let (session, topic) = (0u64..6, 0usize..TOPICS.len());
        prop_oneof![
            4 => (session.clone(), topic.clone()).prop_map(|(s, t)| Step::Subscribe(s, t)),
            2 => (session.clone(), topic.clone()).prop_map(|(s, t)| Step::Unsubscribe(s, t)),
            1 => session.clone().prop_map(Step::UnsubscribeQuotes),
            1 => session.clone().prop_map(Step::UnsubscribeAll),
            2 => session.prop_map(Step::Arm),
            2 => topic.prop_map(Step::Publish),
        ]
    }

    /// Two instruments, each as a quote and as a chart series, and one the router does not know.
    const TOPICS: [(&str, Topic, Option<u32>); 5] = [
        ("SHFE.cu2501", Topic::Quote, Some(0)),
        ("klines/SHFE.cu2501/60000000000", Topic::Chart, Some(0)),
        ("SHFE.cu2502", Topic::Quote, Some(1)),
        ("ticks/SHFE.cu2502", Topic::Chart, Some(1)),
        ("SHFE.xx9999", Topic::Quote, None),
    ];

    proptest::proptest! {
        /// Subscriptions, the session cursors, the armed lists and the directory agree with a
        /// set of (session, topic) pairs after any sequence of steps.
        #[test]
        fn subscriptions_match_a_set_of_pairs(steps in proptest::collection::vec(step(), 1..80)) {
            use std::collections::BTreeSet;
            let directory = Arc::new(FanoutDirectory::new(2, 2));
            let router = Rc::new(Router::new(vec![instrument("cu2501"), instrument("cu2502")], 2));
            let mut fanout = QuoteFanout::new(1, directory.clone(), router);
            let f: Vec<Follower> = (0..6).map(|_| Follower::new()).collect();
            let mut model = BTreeSet::new();
            for step in steps {
                match step {
                    Step::Subscribe(s, t) => {
                        fanout.subscribe(TOPICS[t].0, TOPICS[t].1, s, &f[s as usize].session, f[s as usize].wake.clone());
                        model.insert((s, t));
                    }
                    Step::Unsubscribe(s, t) => {
                        fanout.unsubscribe(TOPICS[t].0, s);
                        model.remove(&(s, t));
                    }
                    Step::UnsubscribeQuotes(s) => {
                        fanout.unsubscribe_quotes(s);
                        model.retain(|&(ms, t)| ms != s || TOPICS[t].1 != Topic::Quote);
                    }
                    Step::UnsubscribeAll(s) => {
                        fanout.unsubscribe_all(s);
                        model.retain(|&(ms, _)| ms != s);
                    }
                    Step::Arm(s) => {
                        f[s as usize].session.borrow_mut().peek();
                        fanout.arm(s, &f[s as usize].session, &f[s as usize].wake);
                    }
                    Step::Publish(t) => fanout.publish(TOPICS[t].0, &change(1)),
                }
                for (t, (topic, _, _)) in TOPICS.iter().enumerate() {
                    let following = model.iter().filter(|&&(_, mt)| mt == t).count();
                    proptest::prop_assert_eq!(fanout.followers(topic), following);
                    let armed_follow = fanout.by_topic.get(*topic).is_none_or(|f| f.armed.keys().all(|s| f.followers.contains_key(s)));
                    proptest::prop_assert!(armed_follow, "only followers are armed on {}", topic);
                    for s in 0..6u64 {
                        let followed = f[s as usize].session.borrow().follows(topic);
                        proptest::prop_assert_eq!(followed, model.contains(&(s, t)), "session {} cursor on {}", s, topic);
                    }
                }
                for kind in [Topic::Quote, Topic::Chart] {
                    let n = model.iter().filter(|&&(_, t)| TOPICS[t].1 == kind).count();
                    proptest::prop_assert_eq!(directory.counter(kind).load(Ordering::Relaxed), n);
                }
                for slot in 0..2u32 {
                    let any = model.iter().any(|&(_, t)| TOPICS[t].2 == Some(slot));
                    proptest::prop_assert_eq!(directory.shard_follows(slot, 1), any);
                    proptest::prop_assert!(!directory.shard_follows(slot, 0));
                }
                let sessions: BTreeSet<u64> = model.iter().map(|&(s, _)| s).collect();
                proptest::prop_assert_eq!(fanout.by_session.keys().copied().collect::<BTreeSet<_>>(), sessions);
            }
        }
    }

    #[test]
    fn topics_name_their_instrument() {
        assert_eq!(topic_symbol("SHFE.cu2501"), "SHFE.cu2501");
        assert_eq!(topic_symbol("klines/SHFE.cu2501/60000000000"), "SHFE.cu2501");
        assert_eq!(topic_symbol("ticks/SHFE.cu2501"), "SHFE.cu2501");
    }

    #[test]
    fn the_directory_tracks_which_shards_follow_an_instrument() {
        let d = FanoutDirectory::new(3, 4);
        assert!(!d.shard_follows(1, 2));
        d.set(1, 2, true);
        d.set(1, 3, true);
        assert!(d.shard_follows(1, 2) && d.shard_follows(1, 3) && !d.shard_follows(0, 2));
        d.set(1, 2, false);
        assert!(!d.shard_follows(1, 2) && d.shard_follows(1, 3));
        assert!(!d.shard_follows(7, 0), "an unknown slot is followed by nobody");
        assert!(FanoutDirectory::new(1, 65).shard_follows(0, 64), "past 64 shards everyone gets everything");
    }
}
