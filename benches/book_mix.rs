//! Order book alone, exchange-core order mix: our `domain::book::OrderBook` against the
//! `orderbook-rs` crate on the same pre-generated op stream (see `support/mix.rs`).
//!
//! Run: `cargo bench --bench book_mix`. Environment knobs: `BOOK_MIX_OPS` (stream length,
//! default 3,000,000), `BOOK_MIX_REPS` (timed repetitions per book; default 10 for ours, 3 for
//! orderbook-rs, which is far slower), `BOOK_MIX_SEED`, `BOOK_MIX_ONLY=ours|theirs` (one book
//! only), `BOOK_MIX_THEIRS_MOVE=update` (orderbook-rs moves via `update_order`).
//!
//! Throughput is wall clock (`Instant`) over the whole stream; "on-CPU" divides by the thread's
//! CPU time from /proc/thread-self/schedstat instead, and "waited" is the share of the wall time
//! the thread was runnable but not running: on a shared machine, read both.
//!
//! Per book: one untimed warm-up pass, then `reps` timed passes (each on a fresh book that first
//! gets the untimed prefill), then one pass timing every op with its own pair of `Instant`s, then
//! one untimed pass that checks trades, traded volume and resting orders against the model.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/mix.rs"]
mod mix;
#[path = "support/schedstat.rs"]
mod schedstat;
use schedstat::schedstat;

#[global_allocator]
static ALLOC: counting_alloc::CountingAlloc = counting_alloc::CountingAlloc;

use counting_alloc::Snapshot;
use mix::{Mix, MixConfig, Op};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// Our price band: the mid never leaves start +- `mix::MID_EXCURSION`, so +-10 % of a
/// 100,000-tick mid leaves ample room (20,001 levels per side).
const BAND_TICKS: i64 = 10_000;

/// What a book reports after a pass, for the sanity check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    trades: u64,
    volume: u64,
    resting: usize,
    /// Submits the book refused (self-trade, bad price, ...): should be 0.
    refused: u64,
}

trait Book {
    const NAME: &'static str;
    fn fresh(mix: &Mix) -> Self;
    fn apply(&mut self, op: &Op);
    /// Trades, volume and refusals as far as this pass counts them, plus resting orders.
    fn tally(&self) -> Tally;
}

mod ours {
    use super::*;
    use qaexchange::domain::book::{Fill, Incoming, MatchOutcome, OrderBook};
    use qaexchange::domain::types::{Direction, Price, Volume};

    /// Our book, with one tick = price unit 1. A move is `reprice` (the book's own move) to the
    /// new price with the remaining volume; the order loses priority, as it does in orderbook-rs.
    pub struct Ours {
        book: OrderBook,
        fills: Vec<Fill>,
        trades: u64,
        volume: u64,
        refused: u64,
    }

    impl Ours {
        #[inline]
        fn submit(&mut self, id: u64, owner: u64, direction: Direction, price: Price, volume: Volume, rest: bool) {
            let incoming = Incoming {
                order_id: id,
                owner,
                direction,
                limit: Some(price),
                volume,
                min_fill: 0,
                rest_remainder: rest,
            };
            self.fills.clear();
            match self.book.submit(&incoming, &mut self.fills) {
                MatchOutcome::Done { filled, .. } => {
                    self.trades += self.fills.len() as u64;
                    self.volume += filled as u64;
                }
                _ => self.refused += 1,
            }
        }
    }

    impl Book for Ours {
        const NAME: &'static str = "ours";

        fn fresh(mix: &Mix) -> Self {
            let mid = mix.config.mid;
            let capacity = (mix.stats.max_resting * 2).max(1_024);
            Self {
                book: OrderBook::new(1, mid - BAND_TICKS, mid + BAND_TICKS, capacity),
                fills: Vec::with_capacity(1_024),
                trades: 0,
                volume: 0,
                refused: 0,
            }
        }

        #[inline]
        fn apply(&mut self, op: &Op) {
            match *op {
                Op::Place { id, owner, buy, ioc, price, qty } => {
                    let direction = if buy { Direction::Buy } else { Direction::Sell };
                    self.submit(id, owner as u64, direction, price, qty as Volume, !ioc);
                }
                Op::Cancel { id } => {
                    self.book.cancel(id);
                }
                Op::Move { id, price } => {
                    // The book's own move: same slab slot and index entry, back of the queue at
                    // the new price, trading first with whatever crosses.
                    let Some(volume) = self.book.order(id).map(|o| o.volume_left) else { return };
                    self.fills.clear();
                    match self.book.reprice(id, price, volume, &mut self.fills) {
                        Some(MatchOutcome::Done { filled, .. }) => {
                            self.trades += self.fills.len() as u64;
                            self.volume += filled as u64;
                        }
                        _ => self.refused += 1,
                    }
                }
            }
        }

        fn tally(&self) -> Tally {
            Tally {
                trades: self.trades,
                volume: self.volume,
                resting: self.book.resting_count(),
                refused: self.refused,
            }
        }
    }
}

mod theirs {
    use super::*;
    use orderbook_rs::prelude::{StubClock, TradeResult};
    use orderbook_rs::{Id, OrderBook, Side, TimeInForce};
    use pricelevel::{OrderUpdate, Price};

    /// orderbook-rs 0.15 through its plain single-book API: `add_limit_order` (GTC or IOC),
    /// `cancel_order`, and a move as cancel + add (see `readd`). No listeners, STP off (its
    /// default), and its deterministic `StubClock` instead of the wall clock (ours reads none).
    /// Trades are only visible through a trade listener, so the timed passes count nothing
    /// and the checking pass installs one.
    pub struct Theirs {
        book: OrderBook<()>,
        counters: Option<Arc<[AtomicU64; 2]>>,
        refused: u64,
        /// Move by `cancel_order` + `add_limit_order` (the default: same outcome, same speed
        /// within noise, a third of the allocations) or, with `BOOK_MIX_THEIRS_MOVE=update`, by
        /// `update_order(UpdatePrice)`.
        readd: bool,
    }

    impl Theirs {
        pub fn counting(mix: &Mix) -> Self {
            let mut me = Self::fresh(mix);
            let counters: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
            let seen = counters.clone();
            me.book.set_trade_listener(Arc::new(move |result: &TradeResult| {
                let trades = result.match_result.trades();
                seen[0].fetch_add(trades.len() as u64, Relaxed);
                let volume: u64 = trades.as_vec().iter().map(|t| t.quantity().as_u64()).sum();
                seen[1].fetch_add(volume, Relaxed);
            }));
            me.counters = Some(counters);
            me
        }

        pub fn counting_prefilled(mix: &Mix) -> Self {
            let mut me = Self::counting(mix);
            for op in &mix.prefill {
                me.apply(op);
            }
            me
        }
    }

    impl Book for Theirs {
        const NAME: &'static str = "orderbook-rs";

        fn fresh(_mix: &Mix) -> Self {
            Self {
                book: OrderBook::with_clock("BENCH", Arc::new(StubClock::new())),
                counters: None,
                refused: 0,
                readd: !std::env::var("BOOK_MIX_THEIRS_MOVE").is_ok_and(|v| v == "update"),
            }
        }

        #[inline]
        fn apply(&mut self, op: &Op) {
            match *op {
                Op::Place { id, buy, ioc, price, qty, .. } => {
                    let side = if buy { Side::Buy } else { Side::Sell };
                    let tif = if ioc { TimeInForce::Ioc } else { TimeInForce::Gtc };
                    // An IOC that leaves a remainder reports an error; only GTC refusals count.
                    if self.book.add_limit_order(Id::from_u64(id), price as u128, qty as u64, side, tif, None).is_err()
                        && !ioc
                    {
                        self.refused += 1;
                    }
                }
                Op::Cancel { id } => {
                    let _ = black_box(self.book.cancel_order(Id::from_u64(id)));
                }
                Op::Move { id, price } if self.readd => {
                    if let Ok(Some(order)) = self.book.cancel_order(Id::from_u64(id)) {
                        let qty = order.visible_quantity().as_u64();
                        let (side, tif) = (order.side(), TimeInForce::Gtc);
                        if self.book.add_limit_order(Id::from_u64(id), price as u128, qty, side, tif, None).is_err() {
                            self.refused += 1;
                        }
                    }
                }
                Op::Move { id, price } => {
                    let update =
                        OrderUpdate::UpdatePrice { order_id: Id::from_u64(id), new_price: Price::new(price as u128) };
                    if self.book.update_order(update).is_err() {
                        self.refused += 1;
                    }
                }
            }
        }

        fn tally(&self) -> Tally {
            let (trades, volume) = match &self.counters {
                Some(c) => (c[0].load(Relaxed), c[1].load(Relaxed)),
                None => (0, 0),
            };
            Tally { trades, volume, resting: self.book.get_all_orders().len(), refused: self.refused }
        }
    }
}

/// Figures for one book.
#[derive(Clone, Debug, Default)]
struct Figures {
    /// Ops over wall-clock time of the fastest repetition.
    best_ops_per_s: f64,
    /// Ops over on-CPU time (from /proc/thread-self/schedstat) of the least-CPU repetition.
    best_cpu_ops_per_s: f64,
    /// Share of the fastest repetition's wall time spent runnable but off the CPU.
    best_waited: f64,
    mean_ns_per_op: f64,
    allocs_per_op: f64,
    bytes_per_op: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    /// Median latency of GTC placements, IOC placements, cancels and moves.
    p50_by_kind: [u64; 4],
    tally: Tally,
}

fn kind(op: &Op) -> usize {
    match op {
        Op::Place { ioc: false, .. } => 0,
        Op::Place { ioc: true, .. } => 1,
        Op::Cancel { .. } => 2,
        Op::Move { .. } => 3,
    }
}

fn prefilled<B: Book>(mix: &Mix) -> B {
    let mut book = B::fresh(mix);
    for op in &mix.prefill {
        book.apply(op);
    }
    book
}

fn run_stream<B: Book>(book: &mut B, ops: &[Op]) {
    for op in ops {
        book.apply(black_box(op));
    }
}

fn measure<B: Book>(mix: &Mix, reps: usize, checked: impl FnOnce(&Mix) -> B) -> Figures {
    let n = mix.ops.len() as f64;
    let mut warm = prefilled::<B>(mix);
    run_stream(&mut warm, &mix.ops);
    drop(black_box(warm));

    let mut best = f64::INFINITY;
    let mut best_cpu = f64::INFINITY;
    let mut best_waited = 0.0;
    let mut total = 0.0;
    let mut allocs = 0;
    let mut bytes = 0;
    for rep in 0..reps {
        let mut book = prefilled::<B>(mix);
        let sched_before = schedstat();
        let before = Snapshot::now();
        let start = Instant::now();
        run_stream(&mut book, &mix.ops);
        let seconds = start.elapsed().as_secs_f64();
        let traffic = Snapshot::now().since(before);
        let sched_after = schedstat();
        black_box(&book);
        drop(book);
        // Time on the CPU, and time runnable but waiting for it, as the kernel saw this thread.
        let (cpu, waited) = match (sched_before, sched_after) {
            (Some(a), Some(b)) => ((b.0 - a.0) as f64 * 1e-9, (b.1 - a.1) as f64 * 1e-9),
            _ => (f64::NAN, f64::NAN),
        };
        if seconds < best {
            best = seconds;
            best_waited = waited / seconds;
        }
        best_cpu = best_cpu.min(cpu);
        total += seconds;
        allocs = allocs.max(traffic.allocations);
        bytes = bytes.max(traffic.bytes);
        eprintln!(
            "  {:<13} rep {:>2}: {:>6.2} M ops/s wall, {:>6.2} M ops/s on-CPU, waited {:>4.1} %, {} allocations",
            B::NAME,
            rep + 1,
            n / seconds / 1e6,
            n / cpu / 1e6,
            waited / seconds * 100.0,
            traffic.allocations
        );
    }

    // Per-op latency: one Instant pair around every op (the pair's own cost is included).
    let mut latencies: Vec<u64> = Vec::with_capacity(mix.ops.len());
    let mut book = prefilled::<B>(mix);
    for op in &mix.ops {
        let start = Instant::now();
        book.apply(black_box(op));
        latencies.push(start.elapsed().as_nanos() as u64);
    }
    drop(book);
    let mut by_kind: [Vec<u64>; 4] = Default::default();
    for (op, &ns) in mix.ops.iter().zip(&latencies) {
        by_kind[kind(op)].push(ns);
    }
    let mut p50_by_kind = [0; 4];
    for (p50, mut v) in p50_by_kind.iter_mut().zip(by_kind) {
        v.sort_unstable();
        *p50 = v.get(v.len() / 2).copied().unwrap_or(0);
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];

    let mut book = checked(mix);
    run_stream(&mut book, &mix.ops);
    Figures {
        best_ops_per_s: n / best,
        best_cpu_ops_per_s: n / best_cpu,
        best_waited,
        mean_ns_per_op: total / reps as f64 / n * 1e9,
        allocs_per_op: allocs as f64 / n,
        bytes_per_op: bytes as f64 / n,
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: *latencies.last().unwrap_or(&0),
        p50_by_kind,
        tally: book.tally(),
    }
}

/// Median cost of an empty `Instant::now()` / `elapsed()` pair, in ns.
fn timer_floor() -> u64 {
    let mut samples: Vec<u64> = (0..200_000)
        .map(|_| {
            let start = Instant::now();
            start.elapsed().as_nanos() as u64
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let defaults = MixConfig::default();
    let config = MixConfig {
        ops: env_or("BOOK_MIX_OPS", defaults.ops),
        seed: env_or("BOOK_MIX_SEED", defaults.seed),
        ..defaults
    };
    let reps_override: Option<usize> = std::env::var("BOOK_MIX_REPS").ok().and_then(|v| v.parse().ok());
    let (reps_ours, reps_theirs) = match reps_override {
        Some(r) => (r.max(1), r.max(1)),
        None => (10, 3),
    };
    let only = std::env::var("BOOK_MIX_ONLY").unwrap_or_default();

    let started = Instant::now();
    let mix = mix::generate(config);
    let s = &mix.stats;
    println!("book_mix: exchange-core order mix on one book (seed {:#x})", config.seed);
    println!(
        "  prefill {} GTC orders on {} levels; stream {} ops: {} GTC, {} IOC, {} cancel, {} move",
        mix.prefill.len(),
        s.levels_after_prefill,
        thousands(mix.ops.len() as u64),
        thousands(s.places),
        thousands(s.iocs),
        thousands(s.cancels),
        thousands(s.moves)
    );
    println!(
        "  model: {} trades ({} lots) in {} trading ops (max {} fills/op); resting min/mean/max {}/{:.0}/{}, end {} on {} levels; prices {}..{} ticks; {} self-trades steered away",
        thousands(mix.expect.trades),
        thousands(mix.expect.volume),
        thousands(s.trading_ops),
        s.max_fills_per_op,
        s.min_resting,
        s.mean_resting,
        s.max_resting,
        mix.expect.resting_end,
        s.levels_end,
        s.min_price,
        s.max_price,
        s.self_trade_avoided
    );
    println!(
        "  generated in {:.1} s; Op is {} bytes; timer floor (empty Instant pair, median) {} ns",
        started.elapsed().as_secs_f64(),
        std::mem::size_of::<Op>(),
        timer_floor()
    );
    println!();

    let run_ours = only.is_empty() || only == "ours";
    let run_theirs = only.is_empty() || only == "theirs";
    let ours = run_ours.then(|| measure::<ours::Ours>(&mix, reps_ours, prefilled::<ours::Ours>));
    let theirs = run_theirs.then(|| measure::<theirs::Theirs>(&mix, reps_theirs, theirs::Theirs::counting_prefilled));
    let books = [("ours", reps_ours, &ours), ("orderbook-rs 0.15", reps_theirs, &theirs)];

    println!(
        "{:<18} {:>5} {:>12} {:>8} {:>10} {:>13} {:>7} {:>10} {:>9}",
        "throughput", "reps", "best ops/s", "ns/op", "mean ns/op", "on-CPU ops/s", "waited", "allocs/op", "bytes/op"
    );
    for (name, reps, figures) in books {
        if let Some(f) = figures {
            println!(
                "{:<18} {:>5} {:>12} {:>8.1} {:>10.1} {:>13} {:>6.1}% {:>10.3} {:>9.1}",
                name,
                reps,
                thousands(f.best_ops_per_s as u64),
                1e9 / f.best_ops_per_s,
                f.mean_ns_per_op,
                thousands(f.best_cpu_ops_per_s as u64),
                f.best_waited * 100.0,
                f.allocs_per_op,
                f.bytes_per_op
            );
        }
    }
    println!();
    println!(
        "{:<18} {:>8} {:>8} {:>8} {:>10}   p50 by op (GTC / IOC / cancel / move)",
        "per-op latency ns", "p50", "p99", "p99.9", "max"
    );
    for (name, _, figures) in books {
        if let Some(f) = figures {
            let [gtc, ioc, cancel, moves] = f.p50_by_kind;
            println!(
                "{:<18} {:>8} {:>8} {:>8} {:>10}   {gtc} / {ioc} / {cancel} / {moves}",
                name, f.p50, f.p99, f.p999, f.max
            );
        }
    }
    if let (Some(a), Some(b)) = (&ours, &theirs) {
        println!();
        println!(
            "ours / orderbook-rs: throughput {:.1}x (on-CPU {:.1}x); latency p50 {:.3}, p99 {:.3}, p99.9 {:.3}",
            a.best_ops_per_s / b.best_ops_per_s,
            a.best_cpu_ops_per_s / b.best_cpu_ops_per_s,
            a.p50 as f64 / b.p50 as f64,
            a.p99 as f64 / b.p99 as f64,
            a.p999 as f64 / b.p999 as f64
        );
    }
    println!();
    println!("sanity (stream only): {:<13} {:>12} {:>12} {:>8} {:>8}", "", "trades", "lots", "resting", "refused");
    let check = |name: &str, t: Tally| {
        println!(
            "                      {:<13} {:>12} {:>12} {:>8} {:>8}",
            name,
            thousands(t.trades),
            thousands(t.volume),
            t.resting,
            t.refused
        );
    };
    check(
        "model",
        Tally { trades: mix.expect.trades, volume: mix.expect.volume, resting: mix.expect.resting_end, refused: 0 },
    );
    if let Some(f) = &ours {
        check("ours", f.tally);
    }
    if let Some(f) = &theirs {
        check("orderbook-rs", f.tally);
    }
    let expected =
        Tally { trades: mix.expect.trades, volume: mix.expect.volume, resting: mix.expect.resting_end, refused: 0 };
    if let Some(f) = &ours {
        assert_eq!(f.tally, expected, "our book disagrees with the reference model");
    }
    if let Some(f) = &theirs {
        if f.tally != expected {
            println!("  note: orderbook-rs differs from the model (see docs/PERFORMANCE.md)");
        }
    }
}
