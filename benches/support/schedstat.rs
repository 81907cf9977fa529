//! This thread's on-CPU and run-queue wait time, so a bench on a shared machine can report
//! throughput over CPU time beside wall time.

/// (on-CPU ns, run-queue wait ns) of this thread, where Linux provides them.
pub fn schedstat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}
