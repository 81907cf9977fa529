//! Measuring: latency histograms and their dumps (the load generator's and, later, the
//! server's per-stage ones), and a thread's own CPU clock.

pub mod hgrm;

/// The CPU time the calling thread has used, in µs (`CLOCK_THREAD_CPUTIME_ID`): what a
/// history job (and a compaction's table writer) costs its core, apart from the time it
/// spent waiting, sleeping or yielded.
#[allow(unsafe_code)]
pub fn thread_cpu_us() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec for the call to fill; this clock exists on every Linux.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    if !ok {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::thread_cpu_us;
    use std::time::{Duration, Instant};

    #[test]
    fn thread_cpu_counts_work_and_not_sleep() {
        let spun = std::thread::spawn(|| {
            let began = thread_cpu_us();
            let until = Instant::now() + Duration::from_millis(30);
            let mut x = 0u64;
            while Instant::now() < until {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            thread_cpu_us() - began
        });
        let slept = std::thread::spawn(|| {
            let began = thread_cpu_us();
            std::thread::sleep(Duration::from_millis(30));
            thread_cpu_us() - began
        });
        let (spun, slept) = (spun.join().unwrap(), slept.join().unwrap());
        // A spinner shares the machine's cores with the other tests; it still gets some.
        assert!(spun > 1_000 && spun <= 31_000, "spun {spun} us");
        assert!(slept < 1_000, "slept {slept} us");
    }
}
