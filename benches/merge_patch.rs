//! RFC 7386 merge patches (`diff::merge_patch`), the data model of every DIFF session, on
//! DIFF-shaped data: a whole quote (five levels a side and the day's figures, 40 fields) and
//! a trade tree's account and position. For each kind, `PATCH_BENCH_CHANGES` successive
//! changes (a trade: price, volumes and a few levels move) are made from a fixed
//! pseudo-random walk, and each operation is timed over all of them:
//! - `diff`: the smallest patch between two snapshots (what a snapshot comparison costs);
//! - `compose`: `ComposedPatch::push` of every change in turn (a session that has not peeked);
//! - `apply`: every patch applied to a client's tree in turn (what tqsdk does per patch).
//!
//! Baselines in the same run, on the same patches: `parse`, reading each patch's JSON text
//! into a tree (`serde_json::from_str`), which any client pays before it can apply; and
//! `clone`, copying each patch tree. Each operation is also given as a ratio of `parse`.
//!
//! Run: `cargo bench --bench merge_patch` (knobs: PATCH_BENCH_CHANGES=20000 PATCH_BENCH_ROUNDS=5).

#[path = "support/knobs.rs"]
mod knobs;

use knobs::{env_or as env, splitmix64 as mix};
use qaexchange::diff::merge_patch::{apply, diff, ComposedPatch};
use serde_json::{json, Map, Value};
use std::hint::black_box;
use std::time::Instant;

/// A quote as the server sends it, around `mid` (in ticks of 10) after `volume` lots.
fn quote(mid: i64, volume: i64) -> Value {
    let mut q = Map::new();
    for (k, v) in [
        ("instrument_id", json!("SHFE.cu2501")),
        ("datetime", json!(format!("2025-01-02 10:{:02}:{:02}.000000", volume / 60 % 60, volume % 60))),
        ("last_price", json!((mid * 10) as f64)),
        ("volume", json!(volume)),
        ("amount", json!((volume * mid * 50) as f64)),
        ("open_interest", json!(1000 + volume / 3)),
        ("highest", json!((mid * 10 + 50) as f64)),
        ("lowest", json!((mid * 10 - 50) as f64)),
        ("open", json!(70000.0)),
        ("close", json!("-")),
        ("average", json!((mid * 10) as f64)),
        ("upper_limit", json!(77000.0)),
        ("lower_limit", json!(63000.0)),
        ("pre_settlement", json!(70000.0)),
        ("pre_close", json!(69990.0)),
        ("pre_open_interest", json!(1000)),
        ("settlement", json!("-")),
        ("volume_multiple", json!(5)),
        ("price_tick", json!(10.0)),
        ("status", json!("CONTINOUS")),
    ] {
        q.insert(k.into(), v);
    }
    for level in 1..=5 {
        q.insert(format!("bid_price{level}"), json!(((mid - level) * 10) as f64));
        q.insert(format!("bid_volume{level}"), json!((volume + level * 7) % 40 + 1));
        q.insert(format!("ask_price{level}"), json!(((mid + level) * 10) as f64));
        q.insert(format!("ask_volume{level}"), json!((volume + level * 3) % 30 + 1));
    }
    json!({"quotes": {"SHFE.cu2501": q}})
}

/// An account and its position in one instrument after `volume` lots at `mid`.
fn trade_tree(mid: i64, volume: i64) -> Value {
    let price = (mid * 10) as f64;
    let profit = (mid - 7000) as f64 * 50.0 * volume as f64;
    let mut position = Map::new();
    for side in ["long", "short"] {
        for (k, v) in [
            ("volume_{}_today", json!(volume)),
            ("volume_{}_his", json!(0)),
            ("volume_{}", json!(volume)),
            ("volume_{}_frozen_today", json!(volume % 3)),
            ("volume_{}_frozen_his", json!(0)),
            ("volume_{}_frozen", json!(volume % 3)),
            ("pos_{}_his", json!(0)),
            ("pos_{}_today", json!(volume)),
            ("open_price_{}", json!(70000.0)),
            ("open_cost_{}", json!(350000.0 * volume as f64)),
            ("position_price_{}", json!(70000.0)),
            ("position_cost_{}", json!(350000.0 * volume as f64)),
            ("float_profit_{}", json!(profit)),
            ("position_profit_{}", json!(profit)),
            ("margin_{}", json!(35000.0 * volume as f64)),
        ] {
            position.insert(k.replace("{}", side), v);
        }
    }
    position.insert("last_price".into(), json!(price));
    position.insert("instrument_id".into(), json!("cu2501"));
    position.insert("exchange_id".into(), json!("SHFE"));
    let mut account = Map::new();
    let balance = 1e7 + 2.0 * profit;
    for (k, v) in [
        ("currency", json!("CNY")),
        ("pre_balance", json!(1e7)),
        ("deposit", json!(0.0)),
        ("withdraw", json!(0.0)),
        ("static_balance", json!(1e7)),
        ("close_profit", json!(0.0)),
        ("commission", json!(3.0 * volume as f64)),
        ("premium", json!(0.0)),
        ("position_profit", json!(2.0 * profit)),
        ("float_profit", json!(2.0 * profit)),
        ("balance", json!(balance)),
        ("margin", json!(70000.0 * volume as f64)),
        ("frozen_margin", json!(0.0)),
        ("frozen_commission", json!(0.0)),
        ("frozen_premium", json!(0.0)),
        ("available", json!(balance - 70000.0 * volume as f64)),
        ("risk_ratio", json!(70000.0 * volume as f64 / balance)),
    ] {
        account.insert(k.into(), v);
    }
    json!({"trade": {"A": {"accounts": {"CNY": account}, "positions": {"SHFE.cu2501": position}}}})
}

/// `changes` successive snapshots of `tree`, walking the price up and down a tick or two.
fn snapshots(tree: fn(i64, i64) -> Value, changes: usize) -> Vec<Value> {
    let (mut mid, mut seed) = (7000i64, 1u64);
    (0..=changes as i64)
        .map(|volume| {
            seed = mix(seed);
            mid += (seed % 5) as i64 - 2;
            tree(mid, volume)
        })
        .collect()
}

fn ns_per(changes: usize, rounds: usize, mut run: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let began = Instant::now();
            run();
            began.elapsed().as_nanos() as f64 / changes as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let (changes, rounds) = (env("PATCH_BENCH_CHANGES", 20_000).max(1), env("PATCH_BENCH_ROUNDS", 5).max(1));
    for (name, tree) in [("quote", quote as fn(i64, i64) -> Value), ("account+position", trade_tree)] {
        let snaps = snapshots(tree, changes);
        let patches: Vec<Value> = snaps.windows(2).map(|w| diff(&w[0], &w[1]).unwrap_or(Value::Null)).collect();
        let texts: Vec<String> = patches.iter().map(Value::to_string).collect();
        let fields = patches.iter().map(|p| p.to_string().matches(':').count()).sum::<usize>() / changes;
        let bytes = texts.iter().map(String::len).sum::<usize>() / changes;

        let diff_ns = ns_per(changes, rounds, || {
            for w in snaps.windows(2) {
                black_box(diff(&w[0], &w[1]));
            }
        });
        let compose_ns = ns_per(changes, rounds, || {
            let mut composed = ComposedPatch::new();
            for p in &patches {
                composed.push(p);
            }
            black_box(composed);
        });
        let apply_ns = ns_per(changes, rounds, || {
            let mut client = snaps[0].clone();
            for p in &patches {
                apply(&mut client, p);
            }
            black_box(client);
        });
        let parse_ns = ns_per(changes, rounds, || {
            for t in &texts {
                black_box(serde_json::from_str::<Value>(t).ok());
            }
        });
        let clone_ns = ns_per(changes, rounds, || {
            for p in &patches {
                black_box(p.clone());
            }
        });
        // The client's tree after every patch is the last snapshot: the patches are exact.
        let mut client = snaps[0].clone();
        patches.iter().for_each(|p| apply(&mut client, p));
        assert_eq!(client, snaps[changes], "{name}: applying the diffs gives the last snapshot");

        println!("{name}: {changes} changes, ~{fields} members and {bytes} bytes per patch");
        for (op, ns) in
            [("diff", diff_ns), ("compose", compose_ns), ("apply", apply_ns), ("parse", parse_ns), ("clone", clone_ns)]
        {
            println!("  {op:<8} {ns:>8.0} ns per change   {:>5.2}x parse", ns / parse_ns);
        }
    }
}
