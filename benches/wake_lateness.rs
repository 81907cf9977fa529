//! How late a nice-0 thread wakes while a helper thread keeps its core busy, by the helper's
//! priority: what a shard's wake-up waits for while a history job runs on the shard's core.
//! The server's helpers run at nice 19 (`server::thread_priority::lower_thread_priority`);
//! `SCHED_IDLE`, where any waking normal thread preempts the helper at once, is the
//! alternative this compares it with (docs/PERFORMANCE.md: it did not wake the sleeper sooner
//! here, so the helpers stay at nice 19). Both threads are pinned to one core; the sleeper
//! sleeps `SLEEP_US` to an absolute deadline, `WAKE_SAMPLES` times, and records how far past
//! the deadline it ran. Rounds alternate the helper's priorities, because this machine is
//! shared and noisy; "alone" is the sleeper without a helper.
//!
//! Run: `cargo bench --bench wake_lateness` (knobs: WAKE_ROUNDS=4 WAKE_SAMPLES=4000 WAKE_CORE=0).

use qaexchange::server::thread_priority::lower_thread_priority;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SLEEP_US: u64 = 500;

#[derive(Clone, Copy)]
enum Priority {
    Nice19,
    Idle,
}

#[allow(unsafe_code)]
fn set_thread_priority(priority: Priority) {
    match priority {
        Priority::Nice19 => lower_thread_priority(19),
        Priority::Idle => {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `param` lives on this stack frame for the call; 0 names this thread.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
                eprintln!("SCHED_IDLE refused: {}", std::io::Error::last_os_error());
            }
        }
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[allow(unsafe_code)]
fn pin(core: usize) {
    // SAFETY: `set` is a plain bitmask on this stack frame, zeroed before use.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Lateness of each wake-up in µs, sorted, with a helper at `helper` spinning on `core`.
fn round(core: usize, samples: usize, helper: Option<Priority>) -> Vec<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = helper.map(|priority| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin(core);
            set_thread_priority(priority);
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        })
    });
    pin(core);
    std::thread::sleep(Duration::from_millis(100));
    let mut late: Vec<f64> = (0..samples)
        .map(|_| {
            let deadline = Instant::now() + Duration::from_micros(SLEEP_US);
            std::thread::sleep(deadline - Instant::now());
            Instant::now().duration_since(deadline).as_secs_f64() * 1e6
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = spinner {
        let _ = s.join();
    }
    late.sort_by(f64::total_cmp);
    late
}

fn at(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn main() {
    let (rounds, samples, core) = (env("WAKE_ROUNDS", 4), env("WAKE_SAMPLES", 4000).max(1), env("WAKE_CORE", 0));
    let kinds: [(&str, Option<Priority>); 3] =
        [("alone", None), ("helper nice 19", Some(Priority::Nice19)), ("helper SCHED_IDLE", Some(Priority::Idle))];
    println!("wake lateness of a nice-0 thread sleeping {SLEEP_US} us, {samples} wake-ups per round, core {core}");
    println!("| round | beside | p50 us | p90 us | p99 us | p99.9 us | max us |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for r in 1..=rounds {
        for (name, helper) in kinds {
            let late = round(core, samples, helper);
            println!(
                "| {r} | {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                at(&late, 0.5),
                at(&late, 0.9),
                at(&late, 0.99),
                at(&late, 0.999),
                late[late.len() - 1]
            );
        }
    }
}
