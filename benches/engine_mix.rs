//! Book + accounts + risk: the exchange-core order mix (see `support/mix.rs`) through the whole
//! domain `Engine` — pre-trade hold (funds, position, self-trade), matching, fills applied to
//! both accounts, commission, market data (quote, k-lines, ticks) and the event stream — beside
//! the bare `OrderBook` on the same op stream in the same run.
//!
//! Run: `cargo bench --bench engine_mix`. Knobs: `ENGINE_MIX_OPS` (default 2,000,000),
//! `ENGINE_MIX_REPS` (default 7), `ENGINE_MIX_SEED`.
//!
//! Mapping: each mix owner is one account (100 accounts, funded so that no order is refused);
//! Place = insert_order (LIMIT, OPEN, GTC or IOC), Cancel = cancel_order, Move = modify_order
//! with a new price (loses priority, may trade). Every op is checked to be accepted.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/engine_commands.rs"]
mod engine_commands;
#[path = "support/mix.rs"]
mod mix;
#[path = "support/schedstat.rs"]
mod schedstat;
use schedstat::schedstat;

#[global_allocator]
static ALLOC: counting_alloc::CountingAlloc = counting_alloc::CountingAlloc;

use counting_alloc::Snapshot;
use engine_commands::{instrument, prepare, Prepared};
use mix::{Mix, MixConfig, Op};
use qaexchange::domain::book::{Fill, Incoming, OrderBook};
use qaexchange::domain::command::Command;
use qaexchange::domain::engine::{Engine, EngineConfig};
use qaexchange::domain::event::Event;
use qaexchange::domain::types::*;
use std::hint::black_box;
use std::time::Instant;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn fresh_engine(p: &Prepared, events: &mut Vec<Event>) -> Engine {
    // Sized for this workload (about 1,000 live orders): reserving far more spreads the hash
    // tables over more cache lines and costs throughput.
    let config = EngineConfig { book_capacity: 4_096, live_order_capacity: 2_048, ..EngineConfig::default() };
    let mut engine = Engine::new(vec![instrument()], 20250102, config);
    for c in p.setup.iter().chain(&p.prefill) {
        events.clear();
        engine.execute(c, events);
    }
    engine
}

/// Counts of what the engine reported, to check the run against the mix's model.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    trades: u64,
    volume: u64,
    rejected: u64,
    events: u64,
}

fn run_engine(engine: &mut Engine, ops: &[Command], events: &mut Vec<Event>, tally: &mut Tally) {
    for c in ops {
        events.clear();
        engine.execute(c, events);
        tally.events += events.len() as u64;
        for e in events.iter() {
            match e {
                Event::Trade { volume, .. } => {
                    tally.trades += 1;
                    tally.volume += *volume as u64;
                }
                Event::OrderRejected { .. } | Event::CommandRejected { .. } => tally.rejected += 1,
                _ => {}
            }
        }
    }
}

/// The bare book on the same stream (the adapter of benches/book_mix.rs, in brief).
fn run_book(mix: &Mix, ops: &[Op], book: &mut OrderBook, fills: &mut Vec<Fill>) -> u64 {
    let mut trades = 0;
    for op in ops {
        let incoming = match *op {
            Op::Place { id, owner, buy, ioc, price, qty } => Incoming {
                order_id: id,
                owner: owner as u64,
                direction: if buy { Direction::Buy } else { Direction::Sell },
                limit: Some(price),
                volume: qty as Volume,
                min_fill: 0,
                rest_remainder: !ioc,
            },
            Op::Cancel { id } => {
                book.cancel(id);
                continue;
            }
            Op::Move { id, price } => match book.cancel(id) {
                Some(o) => Incoming {
                    order_id: id,
                    owner: o.owner,
                    direction: o.direction,
                    limit: Some(price),
                    volume: o.volume_left,
                    min_fill: 0,
                    rest_remainder: true,
                },
                None => continue,
            },
        };
        fills.clear();
        book.submit(&incoming, fills);
        trades += fills.len() as u64;
    }
    let _ = mix;
    trades
}

fn fresh_book(mix: &Mix, fills: &mut Vec<Fill>) -> OrderBook {
    let mid = mix.config.mid;
    let mut book = OrderBook::new(1, mid - 10_000, mid + 10_000, 8_192);
    run_book(mix, &mix.prefill, &mut book, fills);
    book
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn main() {
    let ops = env_or("ENGINE_MIX_OPS", 2_000_000) as usize;
    let reps = env_or("ENGINE_MIX_REPS", 7) as usize;
    let seed = env_or("ENGINE_MIX_SEED", MixConfig::default().seed);
    let mix = mix::generate(MixConfig { ops, seed, ..MixConfig::default() });
    let prepared = prepare(&mix);
    println!(
        "engine_mix: {} ops after {} prefill orders; {} places, {} IOC, {} cancels, {} moves; {} accounts",
        mix.ops.len(),
        mix.prefill.len(),
        mix.stats.places,
        mix.stats.iocs,
        mix.stats.cancels,
        mix.stats.moves,
        mix.config.owners
    );

    let mut events = Vec::with_capacity(1_024);
    // Check pass (untimed): every op accepted, trades as the model says.
    let mut engine = fresh_engine(&prepared, &mut events);
    let mut tally = Tally::default();
    run_engine(&mut engine, &prepared.ops, &mut events, &mut tally);
    engine.check_invariants().expect("invariants after the run");
    assert_eq!(tally.rejected, 0, "the mix is built so nothing is refused");
    assert_eq!(tally.trades, mix.expect.trades, "trades differ from the model");
    assert_eq!(tally.volume, mix.expect.volume, "traded volume differs from the model");
    assert_eq!(engine.book(0).resting_count(), mix.expect.resting_end);
    println!(
        "check: {} trades, {} lots, {} resting at the end, {:.1} events/op, invariants hold",
        tally.trades,
        tally.volume,
        engine.book(0).resting_count(),
        tally.events as f64 / ops as f64
    );

    // Timed passes: engine and bare book alternate, each on a fresh state after the prefill.
    let mut engine_best = f64::MAX;
    let mut engine_cpu_best = f64::MAX;
    let mut book_best = f64::MAX;
    let mut engine_allocs = Snapshot { allocations: 0, bytes: 0, deallocations: 0 };
    let mut fills = Vec::with_capacity(1_024);
    for rep in 0..reps {
        let mut engine = fresh_engine(&prepared, &mut events);
        let mut tally = Tally::default();
        let before = Snapshot::now();
        let cpu_before = schedstat();
        let start = Instant::now();
        run_engine(&mut engine, &prepared.ops, &mut events, &mut tally);
        let elapsed = start.elapsed().as_secs_f64();
        if let (Some((cpu0, _)), Some((cpu1, _))) = (cpu_before, schedstat()) {
            engine_cpu_best = engine_cpu_best.min((cpu1 - cpu0) as f64 / 1e9);
        }
        let allocs = Snapshot::now().since(before);
        black_box(&tally);
        if rep == 0 || allocs.allocations > engine_allocs.allocations {
            engine_allocs = allocs;
        }
        engine_best = engine_best.min(elapsed);

        let mut book = fresh_book(&mix, &mut fills);
        let start = Instant::now();
        black_box(run_book(&mix, &mix.ops, &mut book, &mut fills));
        book_best = book_best.min(start.elapsed().as_secs_f64());
        drop(engine);
    }

    // Latency pass: each op timed alone.
    let mut engine = fresh_engine(&prepared, &mut events);
    let mut samples = Vec::with_capacity(prepared.ops.len());
    for c in &prepared.ops {
        events.clear();
        let start = Instant::now();
        engine.execute(c, &mut events);
        samples.push(start.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();

    let engine_rate = ops as f64 / engine_best;
    let book_rate = ops as f64 / book_best;
    println!();
    println!(
        "allocations in the timed stream (worst repetition): {} ({} bytes) over {} ops",
        engine_allocs.allocations, engine_allocs.bytes, ops
    );
    println!("| path | best ops/s | ns/op | allocs/op (worst rep) | bytes/op |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| engine (book + accounts + risk + market data + events) | {:.0} | {:.1} | {:.4} | {:.1} |",
        engine_rate,
        engine_best * 1e9 / ops as f64,
        engine_allocs.allocations as f64 / ops as f64,
        engine_allocs.bytes as f64 / ops as f64
    );
    println!(
        "| bare order book, same stream, same run | {:.0} | {:.1} | - | - |",
        book_rate,
        book_best * 1e9 / ops as f64
    );
    println!();
    println!("engine / book throughput ratio: {:.3}", engine_rate / book_rate);
    if engine_cpu_best < f64::MAX {
        println!("engine ops per on-CPU second (least-CPU repetition): {:.0}", ops as f64 / engine_cpu_best);
    }
    println!(
        "engine per-op latency (Instant pair per op, ~30 ns included): p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
        samples[samples.len() - 1]
    );
}
