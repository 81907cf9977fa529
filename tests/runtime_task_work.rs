//! The patched runtime (vendor/glommio: rings with IORING_SETUP_COOP_TASKRUN) defers a
//! completion's task work until the thread next enters the kernel. These tests guard what that
//! must not cost: a shard busy with pure computation (no system calls, only the runtime's own
//! preemption points) still sees a socket's data within its preemption interval, and a parked
//! shard wakes when data arrives.

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::Cell;
use std::io::Write;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the busy task computes at most (the test's bound on its own run time).
const BUSY_FOR: Duration = Duration::from_secs(3);
/// The peer writes this long after the connection is up, while the task computes.
const WRITE_AFTER: Duration = Duration::from_millis(100);

/// Starts a peer that accepts one connection, waits `WRITE_AFTER`, writes one byte and reports
/// when it wrote it.
fn peer() -> (std::net::SocketAddr, mpsc::Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        std::thread::sleep(WRITE_AFTER);
        socket.write_all(b"x").expect("write");
        tx.send(Instant::now()).expect("report");
        // Keep the socket open until the reader is done.
        std::thread::sleep(BUSY_FOR);
    });
    (addr, rx)
}

/// The byte was read within a second of the peer writing it.
fn assert_read_soon(executor: &str, read_at: Instant, written: &mpsc::Receiver<Instant>) {
    let wrote_at = written.recv().expect("peer wrote");
    let delay = read_at.saturating_duration_since(wrote_at);
    assert!(delay < Duration::from_secs(1), "the {executor} executor read the byte {delay:?} after it was written");
}

#[test]
fn a_busy_executor_still_reads_a_socket_within_its_preemption_interval() {
    let (addr, written) = peer();
    let read_at = LocalExecutorBuilder::new(Placement::Unbound)
        .preempt_timer(Duration::from_millis(10))
        .spawn(move || async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let done = Rc::new(Cell::new(false));
            let reader_done = done.clone();
            let reader = glommio::spawn_local(async move {
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.expect("read");
                reader_done.set(true);
                Instant::now()
            });
            let busy = glommio::spawn_local(async move {
                // Pure computation: no system call, so only the runtime's preemption timer
                // (and the kernel's own interrupts) lets completed I/O in.
                let start = Instant::now();
                let mut x = 1u64;
                while !done.get() && start.elapsed() < BUSY_FOR {
                    for _ in 0..1_000 {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                    glommio::yield_if_needed().await;
                }
                reader.await
            });
            busy.await
        })
        .expect("executor")
        .join()
        .expect("join");
    assert_read_soon("busy", read_at, &written);
}

#[test]
fn a_parked_executor_wakes_when_data_arrives() {
    let (addr, written) = peer();
    let read_at = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.expect("read");
            Instant::now()
        })
        .expect("executor")
        .join()
        .expect("join");
    assert_read_soon("parked", read_at, &written);
}
