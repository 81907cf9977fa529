//! A connection's request budget (`[http] max_requests_per_sec`): a token bucket that refills at
//! the configured rate and holds at most one second's worth, so a client may burst up to the
//! rate and then keeps to it. Over budget, a request is answered 429 (9015) without running, and
//! the connection stays usable: the client slows down and goes on.

use std::time::Instant;

#[derive(Clone, Debug)]
pub struct RequestBudget {
    /// Requests per second; 0: no limit.
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl RequestBudget {
    pub fn new(rate_per_s: u32) -> Self {
        Self { rate: f64::from(rate_per_s), tokens: f64::from(rate_per_s), last: None }
    }

    /// Whether a request that arrived at `now` may run (and takes its token if so).
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.rate);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_to_the_rate_then_keeps_to_it() {
        let start = Instant::now();
        let mut budget = RequestBudget::new(10);
        assert_eq!((0..15).filter(|_| budget.allow(start)).count(), 10);
        // 0.25 s later: 2.5 tokens, so two more.
        let later = start + Duration::from_millis(250);
        assert_eq!((0..5).filter(|_| budget.allow(later)).count(), 2);
        // A long pause refills one second's worth, no more.
        let much_later = later + Duration::from_secs(60);
        assert_eq!((0..50).filter(|_| budget.allow(much_later)).count(), 10);
        let mut unlimited = RequestBudget::new(0);
        assert!((0..100_000).all(|_| unlimited.allow(start)));
    }
}
