//! Latency histograms in nanoseconds and their text dump in HdrHistogram's percentile
//! distribution format (`.hgrm`, as `outputPercentileDistribution` writes it), in microseconds,
//! so the usual plotters (HdrHistogram's plotFiles.html, `tools/plot_hgrm.py`) read them.

use hdrhistogram::Histogram;
use std::fmt::Write;

/// Latencies from 1 ns to 100 s at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid")
}

/// The percentile distribution of `h` (values in ns) with values in microseconds.
pub fn to_hgrm(h: &Histogram<u64>) -> String {
    const SCALE: f64 = 1_000.0;
    let mut out = String::new();
    let _ = writeln!(out, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = h.highest_equivalent(v.value_iterated_to()) as f64 / SCALE;
            if q < 1.0 {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let _ = writeln!(out, "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]", h.mean() / SCALE, h.stdev() / SCALE);
    let _ = writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", h.max() as f64 / SCALE, h.len());
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), h.distinct_values());
    out
}

/// One line of the usual percentiles, in microseconds.
pub fn summary_us(h: &Histogram<u64>) -> String {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    format!(
        "p50 {:.1} us  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}  (n = {})",
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        us(0.9999),
        // A cleared histogram keeps reporting a `max` (the top of its lowest bucket), which
        // is no value it holds.
        if h.is_empty() { 0.0 } else { h.max() as f64 / 1_000.0 },
        h.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_histograms_summary_is_all_zeros() {
        // The shards' stage histograms start at 1 µs.
        let mut h = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 2).unwrap();
        assert_eq!(summary_us(&h), "p50 0.0 us  p90 0.0  p99 0.0  p99.9 0.0  p99.99 0.0  max 0.0  (n = 0)");
        // Cleared after use (`POST /admin/latency/reset`).
        h.record(5_000).unwrap();
        h.reset();
        assert_eq!(summary_us(&h), "p50 0.0 us  p90 0.0  p99 0.0  p99.9 0.0  p99.99 0.0  max 0.0  (n = 0)");
    }

    #[test]
    fn hgrm_lists_percentiles_up_to_the_max_with_counts() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1_000).unwrap();
        }
        let text = to_hgrm(&h);
        let rows: Vec<&str> = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).skip(1).collect();
        assert!(rows.len() > 20, "{text}");
        let last: Vec<&str> = rows.last().unwrap().split_whitespace().collect();
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "1000");
        let max: f64 = last[0].parse().unwrap();
        assert!((999.0..=1001.0).contains(&max), "{max}");
        let first: Vec<&str> = rows[0].split_whitespace().collect();
        assert!(first[0].parse::<f64>().unwrap() <= 1.001);
        // Percentiles and counts never go down.
        let mut previous = (0.0, 0u64);
        for row in &rows {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let (q, n) = (cols[1].parse::<f64>().unwrap(), cols[2].parse::<u64>().unwrap());
            assert!(q >= previous.0 && n >= previous.1, "{row}");
            previous = (q, n);
        }
        assert!(text.contains("Total count    =         1000]"), "{text}");
        assert!(summary_us(&h).starts_with("p50 500."), "{}", summary_us(&h));
    }
}
