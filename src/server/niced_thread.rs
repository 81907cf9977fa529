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

/// Runs `job` on a new thread named `name` at nice value `nice`; the returned future resolves
/// to its result.
pub fn spawn<T: Send + 'static>(
    name: &str,
    nice: libc::c_int,
    job: impl FnOnce() -> T + Send + 'static,
) -> ThreadResult<T> {
    let shared: Shared<T> = Arc::new(Mutex::new(Slot { result: None, waker: None }));
    let deliver = Deliver { shared: shared.clone(), name: name.to_string(), result: None };
    let started = std::thread::Builder::new().name(name.into()).spawn(move || {
        let mut deliver = deliver;
        super::thread_priority::lower_thread_priority(nice);
        deliver.result = Some(job());
        drop(deliver);
    });
    if let Err(e) = started {
        // The closure (and its `Deliver`) is dropped unrun: replace what it left.
        lock(&shared).result = Some(Err(format!("starting a {name} thread: {e}")));
    }
    ThreadResult { shared }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_panics_reach_the_awaiting_task_without_blocking_its_executor() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                // A slow job and a quick one: the quick one's result comes first although
                // it started second (nothing waits in line behind the slow one).
                let slow = spawn("test-slow", 19, || {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    1
                });
                let began = std::time::Instant::now();
                assert_eq!(spawn("test-quick", 19, || 2).await, Ok(2));
                assert!(began.elapsed() < std::time::Duration::from_millis(250), "{:?}", began.elapsed());
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
                let panicked = spawn("test-panic", 19, || -> u8 { panic!("on purpose") }).await;
                assert_eq!(panicked, Err("the test-panic thread panicked".to_string()));
            })
            .expect("executor")
            .join()
            .expect("join");
    }
}
