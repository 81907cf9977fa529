//! A courtesy hook (`storage::lsm::courtesy`) for a history job on its shard's core: every
//! `CHECK_EVERY` of the job's work, while the job is in the idle class, it yields the core
//! (`sched_yield`). If the shard waits for their shared core, it runs at once; if nothing
//! waits, the call returns at once. A job on another core gets no hook. Nor does a job lifted
//! out of the idle class yield: its shard waits for it at the memtable's backlog bound, and a
//! yield then would slow what the shard waits for.
//!
//! Why a yield and not a look at the shard: the hook first read the shard thread's state from
//! `/proc/self/task/<tid>/stat` (2.6 µs a read here) and, while it said runnable, napped 50 µs
//! at a time, up to 20 times in a row. On a busy core the shard is nearly always runnable when
//! the job runs, so the job spent its time reading and waking: in a profile of a busy store at
//! 18,500 orders/s, the reads were 22 % of the job threads' CPU and the nap's switches about as
//! much, and each nap's timer interrupted the shard (docs/PERFORMANCE.md "Courtesy points that
//! yield"). A yield needs no look: the kernel knows who waits.

use std::time::{Duration, Instant};

/// How much work a job does between two yields: the longest the shard waits behind a job
/// piece once the kernel gives the job its share (which it would otherwise take a whole tick,
/// up to 4 ms, at a time).
const CHECK_EVERY: Duration = Duration::from_micros(200);

/// The hook's state on one job thread.
pub struct Courtesy {
    last_yield: Instant,
    /// Yields made so far.
    yields: u64,
}

impl Courtesy {
    /// Installs the hook on the calling thread when it may run on the core its shard (pinned
    /// to `shard_cores`) is pinned to. Returns whether it did.
    pub fn install_if_sharing(shard_cores: &[usize]) -> bool {
        let own = super::thread_priority::allowed_cores();
        if !(shard_cores.len() == 1 && own.contains(&shard_cores[0])) {
            return false;
        }
        let mut courtesy = Courtesy::new();
        crate::storage::lsm::courtesy::set_hook(Some(Box::new(move || courtesy.point())));
        true
    }

    fn new() -> Self {
        Courtesy { last_yield: Instant::now(), yields: 0 }
    }

    fn point(&mut self) {
        if self.last_yield.elapsed() < CHECK_EVERY {
            return;
        }
        if super::thread_priority::in_idle_class() {
            super::thread_priority::yield_core();
            self.yields += 1;
        }
        self.last_yield = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::super::thread_priority::{allowed_cores, enter_idle_class, leave_idle_class, pin_to_core};
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_point_yields_after_its_interval_and_only_in_the_idle_class() {
        let yields = std::thread::spawn(|| {
            let mut courtesy = Courtesy::new();
            let mut yields = Vec::new();
            // Not yet in the idle class: no yield, however long since the last.
            courtesy.last_yield = Instant::now() - CHECK_EVERY * 2;
            courtesy.point();
            yields.push(courtesy.yields);
            assert!(enter_idle_class());
            courtesy.last_yield = Instant::now() - CHECK_EVERY * 2;
            courtesy.point();
            yields.push(courtesy.yields);
            // Right after one: none.
            courtesy.point();
            yields.push(courtesy.yields);
            // Lifted out of the idle class (the shard waits for the job): none.
            leave_idle_class(super::super::thread_priority::current_tid(), 19);
            courtesy.last_yield = Instant::now() - CHECK_EVERY * 2;
            courtesy.point();
            yields.push(courtesy.yields);
            yields
        })
        .join()
        .expect("job thread");
        assert_eq!(yields, [0, 1, 1, 1]);
    }

    /// Of up to `tries` points before `deadline`: how many let a spinner on the job's core run
    /// between the reads of its count just before and just after the point, and how many
    /// points were made.
    fn handed_over(courtesy: &mut Courtesy, count: &AtomicU64, tries: u32, deadline: Instant) -> (u32, u32) {
        let (mut handed, mut made) = (0, 0);
        while made < tries && Instant::now() < deadline {
            courtesy.last_yield = Instant::now() - CHECK_EVERY * 2;
            let before = count.load(Ordering::Relaxed);
            courtesy.point();
            handed += u32::from(count.load(Ordering::Relaxed) != before);
            made += 1;
        }
        (handed, made)
    }

    #[test]
    fn a_point_gives_the_core_to_a_thread_waiting_for_it() {
        let Some(&core) = allowed_cores().first() else { return };
        let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let pinned = Arc::new(AtomicBool::new(false));
        // The shard: a normal-class thread on the job's core that never sleeps.
        let spinner = {
            let (stop, count, pinned) = (stop.clone(), count.clone(), pinned.clone());
            std::thread::spawn(move || {
                pin_to_core(core);
                pinned.store(true, Ordering::Release);
                while !stop.load(Ordering::Relaxed) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let (idle, lifted) = std::thread::spawn(move || {
            pin_to_core(core);
            // A yield before the spinner runs on this core hands the core to nobody: on a
            // loaded machine (CI runs tests in parallel on 2 cores) the spinner's thread may
            // start late, so wait until it is pinned and counting.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !(pinned.load(Ordering::Acquire) && count.load(Ordering::Relaxed) > 0) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut courtesy = Courtesy::new();
            assert!(enter_idle_class());
            // Up to 12 tries in 5 s: beside a spinner that never sleeps, an idle-class thread
            // that gave the core away gets it back only with its tiny share, ~250 ms later here
            // (~700 ms with three more busy threads on the machine). A yield may now and then
            // go to another thread of a loaded machine, or the scheduler may hand the core
            // straight back; several tries keep the claim ("most yields") robust.
            let idle = handed_over(&mut courtesy, &count, 12, Instant::now() + Duration::from_secs(5));
            // Lifted: the point does nothing, and the spinner runs between two reads a few
            // nanoseconds apart only if a tick lands there.
            leave_idle_class(super::super::thread_priority::current_tid(), 19);
            let lifted = handed_over(&mut courtesy, &count, 40, Instant::now() + Duration::from_secs(3));
            (idle, lifted)
        })
        .join()
        .expect("job thread");
        stop.store(true, Ordering::Relaxed);
        spinner.join().expect("spinner");
        assert!(idle.1 >= 3 && idle.0 * 2 > idle.1, "the spinner ran in {} of {} yields", idle.0, idle.1);
        assert!(
            lifted.1 >= 10 && lifted.0 * 4 < lifted.1,
            "without yields the spinner ran in {} of {} points",
            lifted.0,
            lifted.1
        );
    }

    #[test]
    fn a_job_off_its_shards_core_gets_no_hook() {
        // A shard pinned to a core this thread may not use: nothing is installed.
        let own = allowed_cores();
        let elsewhere = (0..libc::CPU_SETSIZE as usize).find(|c| !own.contains(c)).expect("a core not ours");
        assert!(!Courtesy::install_if_sharing(&[elsewhere]));
        // One that shares this thread's core: installed.
        assert!(Courtesy::install_if_sharing(&[own[0]]));
        crate::storage::lsm::courtesy::set_hook(None);
    }
}
