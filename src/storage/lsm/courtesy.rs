//! Courtesy points: places in a job's long stretches of CPU work (each block of a table being
//! built) where its thread may give the core back to whoever waits for it.
//!
//! Why: the server runs a shard's history jobs on the shard's core in the kernel's idle class.
//! A waking shard preempts such a thread at once, but a shard that is running still loses the
//! core to it now and then: the kernel gives an idle-class thread its small share a whole
//! scheduler tick at a time (up to 4 ms here), and a thread that never sleeps takes it in
//! such slices (docs/PERFORMANCE.md "History jobs on spare cores, and courtesy points").
//! The server installs a hook on the job's thread (`set_hook`) that looks every so often
//! whether its shard is waiting for the core and sleeps a little while it is. Without a hook
//! a point costs a thread-local read.

use std::cell::RefCell;

type Hook = Box<dyn FnMut()>;

thread_local! {
    static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
}

/// Installs (or with `None` removes) the calling thread's hook.
pub fn set_hook(hook: Option<Hook>) {
    HOOK.with(|h| *h.borrow_mut() = hook);
}

/// A courtesy point: runs the calling thread's hook, if it has one.
#[inline]
pub fn point() {
    HOOK.with(|h| {
        // A point reached from inside the hook itself is skipped, not a panic.
        if let Ok(mut hook) = h.try_borrow_mut() {
            if let Some(hook) = hook.as_mut() {
                hook();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn a_point_runs_the_threads_hook_and_only_its_own() {
        let calls = Rc::new(std::cell::Cell::new(0));
        let seen = calls.clone();
        set_hook(Some(Box::new(move || seen.set(seen.get() + 1))));
        point();
        point();
        assert_eq!(calls.get(), 2);
        // Another thread has no hook.
        std::thread::spawn(point).join().expect("thread");
        assert_eq!(calls.get(), 2);
        set_hook(None);
        point();
        assert_eq!(calls.get(), 2);
    }
}
