//! A shard's bound on WebSocket deliveries (`[websocket] max_deliveries_per_sec`): a token
//! bucket on a glommio semaphore, refilled by a task of the shard from the time that passed,
//! holding at most a tenth of a second's worth. A session with market data ready (and, for
//! DIFF, a peek outstanding) takes one token per message it pushes; without one it waits its
//! turn (first come, first served) while still reading its client, and its changes keep
//! composing (a quote feed's cursor simply falls behind, `diff::feed`), so what it finally gets
//! is current. A message that carries the session's own data (order answers, fills, its
//! account, notifies) goes at once, market data included: a trader's answers never wait
//! behind the market data of others.
//!
//! Why a count and not CPU shares: the kernel work of each send (TCP, waking the reader)
//! happens when glommio's reactor submits the sends, outside any task queue's run time, so the
//! sessions' shares did not bound it and 1,000 sessions starved the order flow
//! (docs/PERFORMANCE.md, "DIFF quote fan-out").

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::sync::Semaphore;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often the bucket is refilled.
const REFILL_EVERY: Duration = Duration::from_millis(5);

/// Tokens earned over time at `per_sec`, carrying fractions between calls.
#[derive(Debug)]
pub struct Refill {
    per_sec: u64,
    /// Tokens earned but not yet whole, in units of 1 / 1e9 token.
    carry_nano: u128,
}

impl Refill {
    pub fn new(per_sec: u64) -> Self {
        Self { per_sec, carry_nano: 0 }
    }

    /// Whole tokens earned over `elapsed`.
    pub fn earned(&mut self, elapsed: Duration) -> u64 {
        let nano = self.carry_nano + u128::from(self.per_sec) * elapsed.as_nanos();
        self.carry_nano = nano % 1_000_000_000;
        u64::try_from(nano / 1_000_000_000).unwrap_or(u64::MAX)
    }
}

pub struct DeliveryBudget {
    tokens: Semaphore,
    /// Most tokens held: a tenth of a second's worth (at least one).
    burst: u64,
    per_sec: u64,
    /// Told when a token is taken; the refill task sleeps on it while the bucket is full, so
    /// an idle shard runs no timer for it.
    taken: (LocalSender<()>, LocalReceiver<()>),
}

impl DeliveryBudget {
    /// The budget for `per_sec` deliveries a second; None for 0 (no bound).
    pub fn new(per_sec: u64) -> Option<Self> {
        (per_sec > 0).then(|| {
            let burst = (per_sec / 10).max(1);
            Self { tokens: Semaphore::new(burst), burst, per_sec, taken: local_channel::new_bounded(1) }
        })
    }

    /// Takes a token if one is there now.
    pub fn try_take(&self) -> bool {
        let took = self.tokens.try_acquire(1).unwrap_or(false);
        if took {
            let _ = self.taken.0.try_send(());
        }
        took
    }

    /// Waits for a token (in turn with the other waiters). Dropping the future gives up the
    /// place in line and takes nothing.
    pub async fn take(&self) {
        if self.tokens.acquire(1).await.is_ok() {
            let _ = self.taken.0.try_send(());
        }
    }

    /// Refills the bucket until `stopping` says so; while it is full, waits for a token to be
    /// taken instead of waking every `REFILL_EVERY`.
    pub async fn refill(&self, stopping: impl Fn() -> bool) {
        let mut refill = Refill::new(self.per_sec);
        let mut last = Instant::now();
        while !stopping() {
            if self.tokens.available() >= self.burst {
                let _ = self.taken.1.recv().await;
                // Full until now: nothing was earned meanwhile that would have fit.
                last = Instant::now();
            }
            glommio::timer::sleep(REFILL_EVERY).await;
            let now = Instant::now();
            let earned = refill.earned(now - last);
            last = now;
            let room = self.burst.saturating_sub(self.tokens.available());
            if earned.min(room) > 0 {
                self.tokens.signal(earned.min(room));
            }
        }
    }
}

/// One session's turn at the shard's budget: a session with a message ready either holds a
/// token (from waiting, [`Turn::granted`]) or takes one that is there; otherwise it waits for one
/// alongside its client's messages ([`Turn::wait_on`]).
pub struct Turn<'a> {
    budget: Option<&'a DeliveryBudget>,
    holding: bool,
    waiting: bool,
    /// Counts each wait (`qaexchange_ws_budget_waits_total`).
    waits: &'a Cell<u64>,
}

impl<'a> Turn<'a> {
    /// A turn at `budget` (None: no bound, every ready message is sent), counting its waits
    /// in `waits`.
    pub fn new(budget: Option<&'a DeliveryBudget>, waits: &'a Cell<u64>) -> Self {
        Self { budget, holding: false, waiting: false, waits }
    }

    /// The budget to wait for a token from: while the last [`Turn::may_send`] had to wait and
    /// no token is held.
    pub fn wait_on(&self) -> Option<&'a DeliveryBudget> {
        self.budget.filter(|_| self.waiting && !self.holding)
    }

    /// The wait for a token ended with one.
    pub fn granted(&mut self) {
        self.holding = true;
    }

    /// Whether a `ready` message may be sent now: an `urgent` one (it carries the session's
    /// own data: order answers, fills, notifies) always; market data alone spends a held token
    /// or takes one if there. Otherwise the session waits, counted once per wait.
    pub fn may_send(&mut self, ready: bool, urgent: bool) -> bool {
        if !ready {
            self.waiting = false;
            return false;
        }
        let go = match self.budget {
            None => true,
            Some(_) if urgent => true,
            Some(_) if std::mem::take(&mut self.holding) => true,
            Some(budget) => budget.try_take(),
        };
        if go {
            self.waiting = false;
        } else if !std::mem::replace(&mut self.waiting, true) {
            self.waits.set(self.waits.get() + 1);
        }
        go
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_carry_over_and_rates_hold() {
        let mut r = Refill::new(3);
        // 3 a second: one token per 333.3 ms, none lost to rounding.
        let earned: u64 = (0..300).map(|_| r.earned(Duration::from_millis(10))).sum();
        assert_eq!(earned, 9, "3/s over 3 s");
        let mut r = Refill::new(20_000);
        assert_eq!(r.earned(Duration::from_millis(5)), 100);
        assert_eq!(r.earned(Duration::from_micros(1)), 0);
        assert_eq!(r.earned(Duration::from_micros(49)), 1, "the carried 0.02 token joins");
    }

    #[test]
    fn a_turn_spends_a_held_token_first_and_counts_each_wait_once() {
        let waits = Cell::new(0);
        let mut free = Turn::new(None, &waits);
        assert!(free.may_send(true, false));
        assert!(free.wait_on().is_none());
        let budget = DeliveryBudget::new(10).unwrap();
        let mut turn = Turn::new(Some(&budget), &waits);
        assert!(!turn.may_send(false, false), "nothing ready takes nothing");
        assert!(turn.may_send(true, false), "the burst's one token");
        assert!(!turn.may_send(true, false) && waits.get() == 1, "spent: the session starts waiting");
        assert!(!turn.may_send(true, false) && waits.get() == 1, "still the same wait");
        assert!(turn.wait_on().is_some());
        assert!(turn.may_send(true, true), "a session's own data does not wait");
        assert!(turn.wait_on().is_none() && !turn.may_send(false, false));
        assert!(!turn.may_send(true, false) && waits.get() == 2, "a new wait");
        turn.granted();
        assert!(turn.wait_on().is_none(), "a held token is not waited for again");
        assert!(turn.may_send(true, false) && waits.get() == 2);
    }

    #[test]
    fn no_bound_at_zero_and_a_burst_of_a_tenth() {
        assert!(DeliveryBudget::new(0).is_none());
        let b = DeliveryBudget::new(50).unwrap();
        assert_eq!(b.burst, 5);
        assert_eq!(DeliveryBudget::new(3).unwrap().burst, 1);
    }
}
