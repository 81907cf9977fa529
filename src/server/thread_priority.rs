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

/// The cores the server pinned its shards to (`note_shard_cores`), which
/// `move_to_spare_cores` keeps helper threads off.
static SHARD_CORES: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// Notes cores that shards are pinned to (added to those noted before; the server calls it
/// once at start-up, before any shard runs).
pub fn note_shard_cores(cores: impl IntoIterator<Item = usize>) {
    let mut noted = SHARD_CORES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    noted.extend(cores);
    noted.sort_unstable();
    noted.dedup();
}

/// The cores of `process` that are in neither `own` nor `shards`.
pub fn spare_cores(process: &[usize], own: &[usize], shards: &[usize]) -> Vec<usize> {
    process.iter().copied().filter(|core| !own.contains(core) && !shards.contains(core)).collect()
}

/// Moves the calling thread off the cores it may use now (its creator's: a shard's thread is
/// pinned to the shard's core) onto the process's other cores: those its main thread may use
/// (the cores the server was started on, e.g. under `taskset`), less the thread's own. When
/// there is no other, it stays.
///
/// Why not simply every core: the kernel balances cores by weighted load, and a nice-19
/// thread weighs 1/68 of a normal one, so a helper allowed everywhere stayed on its busy
/// shard's core (a checkpoint's encoding took 2.3 s there, against 0.3 s on the other core).
/// Failure only means the thread stays where it was.
pub fn move_off_own_cores() {
    move_to(|process, own| spare_cores(process, own, &[]));
}

/// Moves the calling thread onto the process's cores that no shard is pinned to
/// (`note_shard_cores`), less its own; when there is none, it stays (on its creator's core).
/// For helpers that should take no time from any shard when the machine has cores to spare.
pub fn move_to_spare_cores() {
    let shards = SHARD_CORES.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    move_to(|process, own| spare_cores(process, own, &shards));
}

/// Pins the calling thread to `core` alone. Failure (a core outside the process's set) only
/// means the thread stays where it was.
pub fn pin_to_core(core: usize) {
    if core < libc::CPU_SETSIZE as usize {
        move_to(|_, _| vec![core]);
    }
}

/// Gives the calling thread's core to another thread that waits for it there, if any; with
/// none, the call returns at once (a syscall, under a microsecond here).
#[allow(unsafe_code)]
pub fn yield_core() {
    // SAFETY: a plain syscall without arguments.
    unsafe {
        libc::sched_yield();
    }
}

/// The cores the calling thread may run on (empty if the kernel does not say).
#[allow(unsafe_code)]
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: a plain bitmask on this stack frame, zeroed, passed by pointer with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        cores_in(&set)
    }
}

/// The cores in `set`.
#[allow(unsafe_code)]
fn cores_in(set: &libc::cpu_set_t) -> Vec<usize> {
    // SAFETY: CPU_ISSET only reads the bitmask, at indices below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, set) }).collect()
}

/// Sets the calling thread's affinity to `choose(process cores, own cores)` unless that is
/// empty. Failure only means the thread stays where it was.
#[allow(unsafe_code)]
fn move_to(choose: impl FnOnce(&[usize], &[usize]) -> Vec<usize>) {
    // SAFETY: `own`, `process` and `target` are plain bitmasks on this stack frame, zeroed
    // before use and passed by pointer with their size; the calls touch nothing else.
    unsafe {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let mut own: libc::cpu_set_t = std::mem::zeroed();
        let mut process: libc::cpu_set_t = std::mem::zeroed();
        // The main thread's id is the process id; the server never pins its main thread.
        if libc::sched_getaffinity(0, size, &mut own) != 0
            || libc::sched_getaffinity(libc::getpid(), size, &mut process) != 0
        {
            return;
        }
        let chosen = choose(&cores_in(&process), &cores_in(&own));
        if chosen.is_empty() {
            return;
        }
        let mut target: libc::cpu_set_t = std::mem::zeroed();
        for core in chosen {
            libc::CPU_SET(core, &mut target);
        }
        libc::sched_setaffinity(0, size, &target);
    }
}

/// The calling thread's id.
#[allow(unsafe_code)]
pub fn current_tid() -> libc::pid_t {
    // SAFETY: a plain syscall without arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// Puts the calling thread in the kernel's idle class (`SCHED_IDLE`): it runs only when its
/// core has nothing else to run, and a waking normal thread preempts it at once, where a
/// nice-19 thread may keep the core until the next scheduler tick (4 ms here). Returns
/// whether the kernel took it (the thread keeps its class and nice value when not).
#[allow(unsafe_code)]
pub fn enter_idle_class() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a plain syscall on this thread; `param` lives through it.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
}

/// Whether the calling thread is in the kernel's idle class (`SCHED_IDLE`).
#[allow(unsafe_code)]
pub fn in_idle_class() -> bool {
    // SAFETY: a plain syscall on this thread, without memory arguments.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_IDLE }
}

/// Moves thread `tid` of this process back to the normal class at nice `nice`. Failure (the
/// thread has ended) leaves nothing to do.
#[allow(unsafe_code)]
pub fn leave_idle_class(tid: libc::pid_t, nice: libc::c_int) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on a thread id; `param` lives through the call.
    unsafe {
        if libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) == 0 {
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
        }
    }
}
