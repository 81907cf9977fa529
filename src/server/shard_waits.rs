//! A courtesy hook (`storage::lsm::courtesy`) for a history job on its shard's core: every
//! `CHECK_EVERY` of the job's work it reads the shard thread's state, and while the shard is
//! runnable (so, on their one shared core, waiting for the job to let it run) it naps, up to
//! `MAX_NAPS` times in a row. A job on another core gets no hook: there "runnable" would mostly
//! mean "running", and the job would nap for nothing. Nor does a job that its shard lifted out
//! of the idle class (the shard waits for it at the memtable's backlog bound, and may be
//! runnable meanwhile with other work): napping then would slow what the shard waits for.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// How much work a job does between two looks at its shard (each look is a read of a small
/// /proc file, a few microseconds).
const CHECK_EVERY: Duration = Duration::from_micros(200);
/// One nap; the kernel's timer slack makes it 50 µs or so longer.
const NAP: Duration = Duration::from_micros(50);
/// At most this many naps in a row, so that a job beside a shard that never sleeps still
/// progresses (the backlog bound lifts it when the shard must wait for it).
const MAX_NAPS: u32 = 20;

/// Whether the process's thread `tid` is runnable now, read from its /proc stat file.
pub struct ShardState {
    stat: File,
    buf: [u8; 256],
}

impl ShardState {
    pub fn open(tid: libc::pid_t) -> std::io::Result<Self> {
        Ok(ShardState { stat: File::open(format!("/proc/self/task/{tid}/stat"))?, buf: [0; 256] })
    }

    /// The thread's state letter is the first field after its name, which ends at the last ')'.
    /// A read that fails says not runnable: the hook then never naps.
    pub fn runnable(&mut self) -> bool {
        let Ok(n) = self.stat.read_at(&mut self.buf, 0) else { return false };
        let text = &self.buf[..n];
        let Some(close) = text.iter().rposition(|&b| b == b')') else { return false };
        text.get(close + 2) == Some(&b'R')
    }
}

/// The hook's state on one job thread.
pub struct Courtesy {
    shard: ShardState,
    last_look: Instant,
    /// Naps taken so far.
    naps: u64,
}

impl Courtesy {
    /// Installs the hook on the calling thread when it may run on the core its shard
    /// (`shard_tid`, pinned to `shard_cores`) is pinned to. Returns whether it did.
    pub fn install_if_sharing(shard_tid: libc::pid_t, shard_cores: &[usize]) -> bool {
        let own = super::thread_priority::allowed_cores();
        let shares = shard_cores.len() == 1 && own.contains(&shard_cores[0]);
        let Some(shard) = shares.then(|| ShardState::open(shard_tid).ok()).flatten() else { return false };
        let mut courtesy = Courtesy { shard, last_look: Instant::now(), naps: 0 };
        crate::storage::lsm::courtesy::set_hook(Some(Box::new(move || courtesy.point())));
        true
    }

    fn point(&mut self) {
        if self.last_look.elapsed() < CHECK_EVERY {
            return;
        }
        for _ in 0..MAX_NAPS {
            if !self.shard.runnable() || !super::thread_priority::in_idle_class() {
                break;
            }
            std::thread::sleep(NAP);
            self.naps += 1;
        }
        self.last_look = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A thread that spins until stopped (a shard that never sleeps): its id and its stop.
    fn spinner() -> (libc::pid_t, Spinner) {
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let spin_stop = stop.clone();
        let thread = std::thread::spawn(move || {
            tid_tx.send(super::super::thread_priority::current_tid()).expect("send");
            while !spin_stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        (tid_rx.recv().expect("tid"), Spinner { stop, thread: Some(thread) })
    }

    struct Spinner {
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Spinner {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    #[test]
    fn a_spinning_thread_reads_runnable_and_a_sleeping_one_does_not() {
        let (tid, spinning_thread) = spinner();
        let mut spinning = ShardState::open(tid).expect("stat");
        assert!(spinning.runnable(), "a spinning thread is running or runnable");
        drop(spinning_thread);

        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (wake_tx, wake_rx) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            tid_tx.send(super::super::thread_priority::current_tid()).expect("send");
            wake_rx.recv().expect("wake");
        });
        let mut sleeping = ShardState::open(tid_rx.recv().expect("tid")).expect("stat");
        // It blocks in recv() right after sending; give it that moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while sleeping.runnable() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!sleeping.runnable(), "a thread blocked in recv() sleeps");
        wake_tx.send(()).expect("wake");
        sleeper.join().expect("join");
    }

    #[test]
    fn a_point_naps_while_the_shard_is_runnable_and_not_while_it_sleeps() {
        let (spinner_tid, spinning_thread) = spinner();
        let (idle_naps, again_naps, lifted_naps) = std::thread::spawn(move || {
            let shard = ShardState::open(spinner_tid).expect("stat");
            let mut courtesy = Courtesy { shard, last_look: Instant::now() - CHECK_EVERY * 2, naps: 0 };
            // A job in the idle class, as the server's are.
            assert!(super::super::thread_priority::enter_idle_class());
            courtesy.point();
            let idle = courtesy.naps;
            // Right after a look: no look, no nap.
            courtesy.point();
            let again = courtesy.naps;
            // Lifted to the normal class: no nap however busy the shard.
            super::super::thread_priority::leave_idle_class(super::super::thread_priority::current_tid(), 19);
            courtesy.last_look = Instant::now() - CHECK_EVERY * 2;
            courtesy.point();
            (idle, again, courtesy.naps)
        })
        .join()
        .expect("job thread");
        assert_eq!(idle_naps, u64::from(MAX_NAPS), "a shard that never sleeps: the most naps, then on");
        assert_eq!(again_naps, idle_naps);
        assert_eq!(lifted_naps, idle_naps, "a lifted job does not nap");
        drop(spinning_thread);

        // The main test thread, blocked in join() meanwhile, is a sleeping shard.
        let main_tid = super::super::thread_priority::current_tid();
        let naps = std::thread::spawn(move || {
            let shard = ShardState::open(main_tid).expect("stat");
            let mut courtesy = Courtesy { shard, last_look: Instant::now() - CHECK_EVERY * 2, naps: 0 };
            super::super::thread_priority::enter_idle_class();
            // Until the main thread has gone to sleep in join().
            std::thread::sleep(Duration::from_millis(50));
            courtesy.point();
            courtesy.naps
        })
        .join()
        .expect("join");
        assert_eq!(naps, 0, "a sleeping shard: no nap");
    }

    #[test]
    fn a_job_off_its_shards_core_gets_no_hook() {
        // A shard pinned to a core this thread may not use: nothing is installed.
        let own = super::super::thread_priority::allowed_cores();
        let elsewhere = (0..libc::CPU_SETSIZE as usize).find(|c| !own.contains(c)).expect("a core not ours");
        assert!(!Courtesy::install_if_sharing(super::super::thread_priority::current_tid(), &[elsewhere]));
        // One that shares this thread's core: installed.
        assert!(Courtesy::install_if_sharing(super::super::thread_priority::current_tid(), &[own[0]]));
        crate::storage::lsm::courtesy::set_hook(None);
    }
}
