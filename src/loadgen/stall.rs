//! The machine's own stalls: how long a thread that never sleeps goes without running.
//!
//! On a virtual machine the host takes a vCPU away now and then (other guests, its own
//! interrupts), and the guest kernel runs its softirqs and timers on the same core. Neither the
//! server nor the load generator can answer faster than that: a request due while its core is
//! stalled waits for the stall, and the generator's intended-time clock charges the wait. A
//! latency percentile measured on the machine therefore cannot go below the stalls'. The probe
//! spins on one core reading the monotonic clock and counts every gap between two reads longer
//! than `GAP_FLOOR_NS`; `qaexchange-loadgen --stall-probe SECONDS` runs it on each pinned core
//! before the load, so a report carries the floor it was measured on.

use std::time::{Duration, Instant};

/// Gaps shorter than this are the loop itself (a clock read is ~20 ns; cache misses and
/// frequency changes add a few µs) and are not counted.
pub const GAP_FLOOR_NS: u64 = 20_000;

/// Upper bounds of the gap buckets, ns; a last bucket holds the gaps above the last bound.
pub const BUCKET_BOUNDS_NS: [u64; 6] = [50_000, 100_000, 500_000, 1_000_000, 2_000_000, 5_000_000];

/// What one probe saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stalls {
    /// Gaps per bucket of `BUCKET_BOUNDS_NS` (the last, one more, is above 5 ms).
    pub buckets: [u64; BUCKET_BOUNDS_NS.len() + 1],
    /// Sum of the counted gaps, ns: the time the spinning thread did not run.
    pub stalled_ns: u64,
    /// The longest gap, ns.
    pub longest_ns: u64,
    /// How long the probe ran, ns.
    pub probed_ns: u64,
}

impl Stalls {
    /// Counts the gap between two clock reads `gap_ns` apart.
    pub fn observe(&mut self, gap_ns: u64) {
        if gap_ns <= GAP_FLOOR_NS {
            return;
        }
        let bucket = BUCKET_BOUNDS_NS.iter().position(|&bound| gap_ns <= bound).unwrap_or(BUCKET_BOUNDS_NS.len());
        self.buckets[bucket] += 1;
        self.stalled_ns += gap_ns;
        self.longest_ns = self.longest_ns.max(gap_ns);
    }

    /// Gaps longer than 0.5 ms, the ones that reach a p99 of a few hundred µs.
    pub fn over_half_ms(&self) -> u64 {
        let first = BUCKET_BOUNDS_NS.iter().position(|&bound| bound == 500_000).map_or(0, |at| at + 1);
        self.buckets[first..].iter().sum()
    }

    /// Gaps longer than 0.5 ms per second probed.
    pub fn over_half_ms_per_s(&self) -> f64 {
        self.over_half_ms() as f64 / (self.probed_ns as f64 / 1e9).max(1e-9)
    }

    /// The share of the probe's time the thread did not run.
    pub fn stalled_share(&self) -> f64 {
        self.stalled_ns as f64 / self.probed_ns.max(1) as f64
    }

    /// One line: `stalled 1.9 % (95.2 ms of 5.0 s), gaps > 0.5 ms: 13 (2.6/s), longest 1.8 ms,
    /// 20-50 us 1370 | 50-100 us 504 | ...`.
    pub fn summary(&self) -> String {
        let seconds = self.probed_ns as f64 / 1e9;
        let mut low_ns = GAP_FLOOR_NS;
        let mut buckets = Vec::new();
        for (i, n) in self.buckets.iter().enumerate() {
            match BUCKET_BOUNDS_NS.get(i) {
                Some(&high_ns) => {
                    buckets.push(format!("{}-{} us {n}", low_ns / 1000, high_ns / 1000));
                    low_ns = high_ns;
                }
                None => buckets.push(format!("> {} us {n}", low_ns / 1000)),
            }
        }
        format!(
            "stalled {:.2} % ({:.1} ms of {seconds:.1} s), gaps > 0.5 ms: {} ({:.1}/s), longest {:.2} ms; {}",
            100.0 * self.stalled_share(),
            self.stalled_ns as f64 / 1e6,
            self.over_half_ms(),
            self.over_half_ms_per_s(),
            self.longest_ns as f64 / 1e6,
            buckets.join(" | ")
        )
    }
}

/// Spins on the calling thread for `length`, reading the clock, and returns the gaps it saw.
/// Pin the thread first; the probe takes the whole core while it runs.
pub fn probe(length: Duration) -> Stalls {
    let mut stalls = Stalls::default();
    let start = Instant::now();
    let mut previous = start;
    loop {
        let now = Instant::now();
        stalls.observe(now.duration_since(previous).as_nanos() as u64);
        previous = now;
        if now.duration_since(start) >= length {
            break;
        }
    }
    stalls.probed_ns = previous.duration_since(start).as_nanos() as u64;
    stalls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_land_in_their_buckets_and_short_ones_are_not_counted() {
        let mut stalls = Stalls { probed_ns: 1_000_000_000, ..Stalls::default() };
        for gap_ns in [100, GAP_FLOOR_NS, GAP_FLOOR_NS + 1, 50_000, 50_001, 700_000, 1_500_000, 6_000_000] {
            stalls.observe(gap_ns);
        }
        assert_eq!(stalls.buckets, [2, 1, 0, 1, 1, 0, 1]);
        assert_eq!(stalls.stalled_ns, GAP_FLOOR_NS + 1 + 50_000 + 50_001 + 700_000 + 1_500_000 + 6_000_000);
        assert_eq!(stalls.longest_ns, 6_000_000);
        assert_eq!(stalls.over_half_ms(), 3);
        assert!((stalls.stalled_share() - 0.008320002).abs() < 1e-9);
        let line = stalls.summary();
        assert!(line.contains("gaps > 0.5 ms: 3 (3.0/s)"), "{line}");
        assert!(line.contains("20-50 us 2 | 50-100 us 1 | 100-500 us 0 | 500-1000 us 1"), "{line}");
        assert!(line.ends_with("> 5000 us 1"), "{line}");
    }

    #[test]
    fn a_probe_runs_for_its_length_and_never_counts_more_stall_than_time() {
        let probed = probe(Duration::from_millis(20));
        assert!(probed.probed_ns >= 20_000_000, "{probed:?}");
        assert!(probed.stalled_ns <= probed.probed_ns, "{probed:?}");
        assert!(probed.longest_ns <= probed.stalled_ns, "{probed:?}");
    }
}
