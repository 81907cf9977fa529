//! Work a shard must not do on its executor thread (table builds, file syscalls, checkpoint
//! writes) runs on a thread of its own at a low priority, and the shard awaits the result as
//! a future, so nothing else is held meanwhile.
//!
//! Why not glommio's `spawn_blocking`: an executor's blocking pool has one thread, which also
//! hashes login passwords. A job on it (or a pool thread waiting to join a job's thread) held
//! that thread for the job's whole length: a login, a checkpoint write or a flush queued behind
//! a compaction of seconds.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Where the thread leaves its result and the waker of the task awaiting it.
struct Slot<T> {
    result: Option<Result<T, String>>,
    waker: Option<Waker>,
}

type Shared<T> = Arc<Mutex<Slot<T>>>;

fn lock<T>(shared: &Shared<T>) -> std::sync::MutexGuard<'_, Slot<T>> {
    // Nothing panics while holding it; a poisoned slot is still whole.
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The result of `spawn`, as a future: Err when the thread could not start or panicked.
pub struct ThreadResult<T> {
    shared: Shared<T>,
}

impl<T> Future for ThreadResult<T> {
    type Output = Result<T, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = lock(&self.shared);
        match slot.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Hands the thread's result over when dropped: also when the job panics (then an error).
struct Deliver<T> {
    shared: Shared<T>,
    name: String,
    result: Option<T>,
}

impl<T> Drop for Deliver<T> {
    fn drop(&mut self) {
        let result = self.result.take().ok_or_else(|| format!("the {} thread panicked", self.name));
        let waker = {
            let mut slot = lock(&self.shared);
            slot.result = Some(result);
            slot.waker.take()
        };
        // Waking from this (foreign) thread queues the task on its executor.
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Which cores a helper thread may run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cores {
    /// Its creator's (a shard's thread is pinned to the shard's core): it gets what that
    /// shard leaves and never takes time from another shard.
    Creator,
    /// The online cores other than its creator's (its creator's when there is none). For work
    /// that holds something the shard pays for while it lasts: a checkpoint's snapshot (each
    /// of the shard's writes to a piece the snapshot shares copies it), which on a busy
    /// shard's core took 2.3 s to encode instead of 0.3 s. At nice 19 it still takes only
    /// what the other cores leave.
    Others,
    /// The cores no shard is pinned to (`thread_priority::note_shard_cores`), other than its
    /// creator's; its creator's when there is none (a shard on every core). History jobs: on
    /// a machine with cores to spare they take nothing from any shard, and otherwise only
    /// what their own shard leaves (docs/PERFORMANCE.md "History jobs on spare cores").
    Spare,
}

/// Runs `job` on a new thread named `name` at nice value `nice` on `cores`; the returned
/// future resolves to its result.
pub fn spawn<T: Send + 'static>(
    name: &str,
    nice: libc::c_int,
    cores: Cores,
    job: impl FnOnce() -> T + Send + 'static,
) -> ThreadResult<T> {
    let shared: Shared<T> = Arc::new(Mutex::new(Slot { result: None, waker: None }));
    let deliver = Deliver { shared: shared.clone(), name: name.to_string(), result: None };
    let started = std::thread::Builder::new().name(name.into()).spawn(move || {
        let mut deliver = deliver;
        super::thread_priority::lower_thread_priority(nice);
        match cores {
            Cores::Creator => {}
            Cores::Others => super::thread_priority::move_off_own_cores(),
            Cores::Spare => super::thread_priority::move_to_spare_cores(),
        }
        deliver.result = Some(job());
        drop(deliver);
    });
    if let Err(e) = started {
        // The closure (and its `Deliver`) is dropped unrun: replace what it left.
        lock(&shared).result = Some(Err(format!("starting a {name} thread: {e}")));
    }
    ThreadResult { shared }
}

/// The helper threads of one shard that run in the kernel's idle class, so that a shard
/// waking on their core gets it at once (docs/PERFORMANCE.md "History jobs in the idle class,
/// lifted when the shard waits for them"). An idle-class thread gets only what its core
/// leaves; when the shard must wait for one (the memtable's backlog bound), `lift` moves
/// them all to the normal class at `nice`, so that what the shard waits for cannot starve.
#[derive(Clone)]
pub struct IdleThreads {
    nice: libc::c_int,
    /// The ids of the threads in the set now; the lock also orders a thread's entry into the
    /// idle class against a `lift`, so none is left idle by a lift that ran meanwhile.
    members: Arc<Mutex<Vec<libc::pid_t>>>,
}

impl IdleThreads {
    pub fn new(nice: libc::c_int) -> Self {
        IdleThreads { nice, members: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Runs `job` on a new thread as `spawn` does, in the idle class while in this set.
    pub fn spawn<T: Send + 'static>(
        &self,
        name: &str,
        cores: Cores,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> ThreadResult<T> {
        let set = self.clone();
        // The creator's (a shard's thread's) cores, for the courtesy hook.
        let creator_cores = super::thread_priority::allowed_cores();
        spawn(name, self.nice, cores, move || {
            let _member = set.enter();
            super::shard_waits::Courtesy::install_if_sharing(&creator_cores);
            job()
        })
    }

    /// The calling thread joins the set and the idle class, until the guard is dropped.
    fn enter(&self) -> Member {
        let tid = super::thread_priority::current_tid();
        let mut members = self.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        super::thread_priority::enter_idle_class();
        members.push(tid);
        Member { set: self.clone(), tid }
    }

    /// Moves every thread in the set to the normal class at the set's nice value. Cheap when
    /// the set is empty; a thread that joins later starts in the idle class again.
    pub fn lift(&self) {
        let mut members = self.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for tid in members.drain(..) {
            super::thread_priority::leave_idle_class(tid, self.nice);
        }
    }
}

/// A thread's place in an `IdleThreads` set: leaves it when dropped.
struct Member {
    set: IdleThreads,
    tid: libc::pid_t,
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut members = self.set.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        members.retain(|&t| t != self.tid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_panics_reach_the_awaiting_task_without_blocking_its_executor() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                // A slow job and a quick one: the quick one's result comes first although
                // it started second (nothing waits in line behind the slow one). The margin
                // is wide because a nice-19 thread may wait for its turn a long time on a
                // machine loaded with other tests.
                let slow = spawn("test-slow", 19, Cores::Creator, || {
                    std::thread::sleep(std::time::Duration::from_millis(1000));
                    1
                });
                let began = std::time::Instant::now();
                assert_eq!(spawn("test-quick", 19, Cores::Creator, || 2).await, Ok(2));
                assert!(began.elapsed() < std::time::Duration::from_millis(800), "{:?}", began.elapsed());
                // Meanwhile the executor runs other tasks.
                let ticks = glommio::spawn_local(async {
                    let mut n = 0;
                    for _ in 0..5 {
                        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                        n += 1;
                    }
                    n
                });
                assert_eq!(ticks.await, 5);
                assert_eq!(slow.await, Ok(1));
                let panicked = spawn("test-panic", 19, Cores::Creator, || -> u8 { panic!("on purpose") }).await;
                assert_eq!(panicked, Err("the test-panic thread panicked".to_string()));
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn a_helper_runs_on_its_creators_core_or_on_the_others() {
        // The cores a thread may use, as an unpinned thread of this process sees them.
        let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
        let everywhere = std::thread::spawn(cores).join().expect("unpinned thread");
        // A shard's executor is pinned to one core, as the server's are.
        let (creator, others) = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0))
            .spawn(move || async move {
                assert_eq!(cores(), 1, "the executor is pinned");
                let creator = spawn("test-creator", 19, Cores::Creator, cores).await.expect("creator's cores");
                let others = spawn("test-others", 19, Cores::Others, cores).await.expect("other cores");
                (creator, others)
            })
            .expect("executor")
            .join()
            .expect("join");
        assert_eq!(creator, 1, "Cores::Creator keeps the shard's one core");
        // Every core but the shard's; the shard's when it is the only one.
        assert_eq!(others, (everywhere - 1).max(1), "Cores::Others leaves the shard's core");
    }

    #[test]
    fn spare_cores_are_those_of_no_shard() {
        use super::super::thread_priority::spare_cores;
        // Two shards pinned to cores 0 and 1 of four; a helper of shard 0.
        assert_eq!(spare_cores(&[0, 1, 2, 3], &[0], &[0, 1]), vec![2, 3]);
        // A shard on every core: none spare, so the helper stays on its creator's core.
        assert!(spare_cores(&[0, 1], &[0], &[0, 1]).is_empty());
        // Started under `taskset -c 2-5` with shards on 2 and 3.
        assert_eq!(spare_cores(&[2, 3, 4, 5], &[2], &[2, 3]), vec![4, 5]);
        // Nothing noted (no server in this process): every other core, as `Cores::Others`.
        assert_eq!(spare_cores(&[0, 1, 2], &[1], &[]), vec![0, 2]);
    }

    #[test]
    fn a_spare_helper_leaves_every_shards_core() {
        use super::super::thread_priority::{allowed_cores, note_shard_cores};
        let everywhere = std::thread::spawn(allowed_cores).join().expect("unpinned thread");
        // Core 0 holds a shard, noted as the server does.
        note_shard_cores([0]);
        let helper = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0))
            .spawn(|| async { spawn("test-spare", 19, Cores::Spare, allowed_cores).await })
            .expect("executor")
            .join()
            .expect("join")
            .expect("helper");
        if everywhere.len() > 1 {
            let want: Vec<usize> = everywhere.iter().copied().filter(|&c| c != 0).collect();
            assert_eq!(helper, want, "every core but the shard's");
        } else {
            assert_eq!(helper, vec![0], "no spare core: the creator's");
        }
    }

    /// The calling thread's scheduling class and nice value.
    #[allow(unsafe_code)]
    fn class_and_nice() -> (libc::c_int, libc::c_int) {
        // SAFETY: plain syscalls on this thread.
        unsafe { (libc::sched_getscheduler(0), libc::getpriority(libc::PRIO_PROCESS, 0)) }
    }

    #[test]
    fn an_idle_thread_runs_in_the_idle_class_until_lifted() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let set = IdleThreads::new(19);
                let (lifted_tx, lifted_rx) = std::sync::mpsc::channel::<()>();
                let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
                let job = set.spawn("test-idle", Cores::Creator, move || {
                    let before = class_and_nice();
                    entered_tx.send(()).expect("send");
                    lifted_rx.recv().expect("lifted");
                    (before, class_and_nice())
                });
                entered_rx.recv().expect("entered");
                assert_eq!(set.members.lock().expect("lock").len(), 1, "the thread is in the set");
                set.lift();
                lifted_tx.send(()).expect("send");
                let (before, after) = job.await.expect("job");
                assert_eq!(before.0, libc::SCHED_IDLE, "in the idle class until lifted");
                assert_eq!(after, (libc::SCHED_OTHER, 19), "lifted to the normal class at nice 19");
                assert!(set.members.lock().expect("lock").is_empty(), "a lifted thread leaves the set");
                // A thread that joins after a lift starts idle again, and leaves the set when done.
                let again = set.spawn("test-idle-2", Cores::Creator, class_and_nice).await.expect("job");
                assert_eq!(again.0, libc::SCHED_IDLE);
                assert!(set.members.lock().expect("lock").is_empty(), "a finished thread leaves the set");
            })
            .expect("executor")
            .join()
            .expect("join");
    }
}
