//! What a shard's subscription bookkeeping costs when many DIFF sessions come and go at once:
//! `SESSIONS` sessions each follow a quote and a k-line series of one instrument (and one
//! quote of their own), then all end (`QuoteFanout::unsubscribe_all`, as a mass disconnect
//! does), in the order they came. In between, `CHANGES` changes of the shared quote are each
//! delivered to every session (publish, then each session takes its text, peeks again and is
//! armed), which is what the follower lists cost on the delivery path. Reports the time per
//! session for subscribing, per delivery, and per session for leaving, the median of
//! `ROUNDS` rounds. Leaving used to walk every topic's followers, so a
//! mass disconnect of N sessions cost O(N²); it now looks at the session's own topics.
//!
//! Run: `cargo bench --bench fanout_churn` (knobs: FANOUT_SESSIONS="1000 10000" FANOUT_ROUNDS=5 FANOUT_CHANGES=20).

use glommio::channels::local_channel;
use qaexchange::diff::feed::SharedPatch;
use qaexchange::diff::session::Session;
use qaexchange::server::conn::Router;
use qaexchange::server::quote_fanout::{FanoutDirectory, QuoteFanout, Topic};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// (subscribe ns per session, ns per delivery, leave ns per session) for one round.
fn round(sessions: usize, changes: usize) -> (f64, f64, f64) {
    let mut fanout = QuoteFanout::new(0, Arc::new(FanoutDirectory::new(0, 1)), Rc::new(Router::new(Vec::new(), 1)));
    let outputs: Vec<_> = (0..sessions).map(|_| Rc::new(RefCell::new(Session::new()))).collect();
    // The receivers stay alive for the round, as a session's task keeps its own.
    let (wakes, _woken): (Vec<_>, Vec<_>) =
        (0..sessions).map(|_| local_channel::new_bounded::<()>(1)).map(|(tx, rx)| (Rc::new(tx), rx)).unzip();
    let own: Vec<String> = (0..sessions).map(|i| format!("SHFE.own{i}")).collect();
    let start = Instant::now();
    for (id, (output, wake)) in outputs.iter().zip(&wakes).enumerate() {
        fanout.subscribe("SHFE.cu2501", Topic::Quote, id as u64, output, wake.clone());
        fanout.subscribe(&own[id], Topic::Quote, id as u64, output, wake.clone());
        fanout.subscribe("klines/SHFE.cu2501/60000000000", Topic::Chart, id as u64, output, wake.clone());
    }
    let subscribe_ns = start.elapsed().as_nanos() as f64 / sessions as f64;
    let arm = |fanout: &mut QuoteFanout| {
        for (id, (output, wake)) in outputs.iter().zip(&wakes).enumerate() {
            let _ = output.borrow_mut().take_ready();
            output.borrow_mut().peek();
            fanout.arm(id as u64, output, wake);
        }
    };
    arm(&mut fanout);
    let start = Instant::now();
    for volume in 0..changes {
        let patch = serde_json::json!({"quotes": {"SHFE.cu2501": {"volume": volume}}});
        fanout.publish("SHFE.cu2501", &Arc::new(SharedPatch::new(patch)));
        arm(&mut fanout);
    }
    let delivery_ns = start.elapsed().as_nanos() as f64 / (sessions * changes).max(1) as f64;
    let start = Instant::now();
    for id in 0..sessions {
        fanout.unsubscribe_all(id as u64);
    }
    let leave_ns = start.elapsed().as_nanos() as f64 / sessions as f64;
    assert_eq!(fanout.followers("SHFE.cu2501"), 0);
    (subscribe_ns, delivery_ns, leave_ns)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = env("FANOUT_ROUNDS", "5").parse().unwrap_or(5).max(1);
    let changes: usize = env("FANOUT_CHANGES", "20").parse().unwrap_or(20);
    for sessions in env("FANOUT_SESSIONS", "1000 10000").split_whitespace().filter_map(|s| s.parse::<usize>().ok()) {
        let results: Vec<_> = (0..rounds).map(|_| round(sessions, changes)).collect();
        let subscribe = median(results.iter().map(|r| r.0).collect());
        let delivery = median(results.iter().map(|r| r.1).collect());
        let leave = median(results.iter().map(|r| r.2).collect());
        println!(
            "sessions={sessions} subscribe_ns_per_session={subscribe:.0} delivery_ns={delivery:.0} \
             leave_ns_per_session={leave:.0} mass_disconnect_ms={:.2}",
            leave * sessions as f64 / 1e6
        );
    }
}
