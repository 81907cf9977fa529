//! Thread priorities: the server's helper threads (history jobs, checkpoint writing, and the
//! reader and journal threads of a replay) run below the threads whose progress they serve.

/// Sets the calling thread's nice value (Linux: per thread). Failure only means the thread
/// runs at normal priority.
#[allow(unsafe_code)]
pub fn lower_thread_priority(nice: libc::c_int) {
    // SAFETY: plain syscalls on this thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
}
