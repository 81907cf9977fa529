//! The load generator (`qaexchange-loadgen`): many HTTP keep-alive connections on glommio
//! executors, each sending the order flow of its own account (`mix.rs`), open loop at a
//! constant rate or closed loop as fast as answers come. Open loop measures each request from
//! the moment it was *meant* to be sent, so a server that stalls is charged for every request
//! that waited behind the stall (no coordinated omission). With `pipeline` > 1 a connection
//! keeps up to that many requests outstanding (HTTP/1.1 pipelining): a writer task sends,
//! batching the requests that are due into one write, and a reader task matches the answers,
//! which come in request order, to what was sent.
//!
//! Beside the HTTP flow, `diff` runs DIFF WebSocket sessions that follow one quote and measure
//! how fast and how soon its changes reach them; instead of it, `diff_orders` sends the same
//! order flow over DIFF trading sessions (`insert_order`, `cancel_order`) and measures each
//! order's round trip to the `rtn_data` that shows it.

pub mod diff;
pub mod diff_orders;
pub mod mix;
pub mod response;
pub mod setup;
pub mod stall;

use crate::metrics::hgrm::latency_histogram;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::sync::Semaphore;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use mix::{Flow, Market, MixWeights, Path};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub target: SocketAddr,
    pub connections: usize,
    /// Requests per second over all connections; 0 = closed loop.
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    /// glommio executors the connections are spread over.
    pub executors: usize,
    /// Pin executor i to core `pin_from + i`; None = let the kernel place them.
    pub pin_from: Option<usize>,
    pub weights: MixWeights,
    /// Requests outstanding per connection (HTTP/1.1 pipelining); 1 = send, wait for the
    /// answer, send the next. Closed loop keeps this many outstanding and measures from the
    /// send; open loop still measures from each request's intended send time.
    pub pipeline: usize,
    /// Account and client order id prefix, unique per run.
    pub run_id: String,
    /// Bearer token every request carries (a server with auth on); None: no header.
    pub token: Option<String>,
}

/// What a run measured (the measured window only; warm-up is sent but not counted).
#[derive(Debug)]
pub struct Report {
    pub per_path: BTreeMap<Path, Histogram<u64>>,
    pub all: Histogram<u64>,
    /// Open loop: how late each measured request was written once it could be, ns (its send
    /// minus the later of its intended time and its slot coming free): the generator's own
    /// lateness, a part of every latency it reports. Empty in closed loop.
    pub send_lag: Histogram<u64>,
    /// Open loop: how long each measured request waited past its intended time for a slot,
    /// ns, i.e. for an earlier answer on its connection (1 for none). Empty in closed loop.
    pub slot_wait: Histogram<u64>,
    pub completed: u64,
    /// Answers read within the measured window, whenever their requests were meant to be
    /// sent: the server's pace in the window, below the rate when it fell behind (and then
    /// answered the rest only after the end; open loop `completed` still counts those).
    pub answered_in_window: u64,
    /// Requests sent in the measured window; equal to `completed` when no connection broke
    /// (every answer still in flight at the end is waited for).
    pub sent: u64,
    /// Refusals by path and error code (the envelope's `code`; 0 = none found).
    pub refused: BTreeMap<(Path, u32), u64>,
    /// Connections that failed (connect, write, read, an unframeable answer, or answers still
    /// missing `DRAIN` after the end of the run); DIFF: also a failed login.
    pub broken_connections: u64,
    /// DIFF sessions that logged in (`trade_more_data: false` came); 0 for HTTP.
    pub logged_in: u64,
    /// DIFF `rtn_data` messages read over the whole run (warm-up and drain included), and
    /// their bytes.
    pub rtn_data: u64,
    pub rtn_data_bytes: u64,
    /// DIFF ERROR notifies that named none of the session's outstanding orders, by code
    /// (0: an `rtn_data` that did not parse).
    pub other_notifies: BTreeMap<u32, u64>,
    pub measured: Duration,
}

impl Report {
    fn empty(measured: Duration) -> Self {
        Self {
            per_path: Path::ALL.iter().map(|&p| (p, latency_histogram())).collect(),
            all: latency_histogram(),
            send_lag: latency_histogram(),
            slot_wait: latency_histogram(),
            completed: 0,
            answered_in_window: 0,
            sent: 0,
            refused: BTreeMap::new(),
            broken_connections: 0,
            logged_in: 0,
            rtn_data: 0,
            rtn_data_bytes: 0,
            other_notifies: BTreeMap::new(),
            measured,
        }
    }

    fn merge(&mut self, other: Report) {
        for (path, h) in other.per_path {
            if let Some(mine) = self.per_path.get_mut(&path) {
                let _ = mine.add(&h);
            }
        }
        let _ = self.all.add(&other.all);
        let _ = self.send_lag.add(&other.send_lag);
        let _ = self.slot_wait.add(&other.slot_wait);
        self.completed += other.completed;
        self.answered_in_window += other.answered_in_window;
        self.sent += other.sent;
        for (key, n) in other.refused {
            *self.refused.entry(key).or_default() += n;
        }
        self.broken_connections += other.broken_connections;
        self.logged_in += other.logged_in;
        self.rtn_data += other.rtn_data;
        self.rtn_data_bytes += other.rtn_data_bytes;
        for (code, n) in other.other_notifies {
            *self.other_notifies.entry(code).or_default() += n;
        }
    }

    /// A measured open-loop request meant for `intended`, with a free slot from `ready`, was
    /// written at `sent`.
    fn record_send_lag(&mut self, intended: Instant, ready: Instant, sent: Instant) {
        let ns = |from: Instant, to: Instant| (to.saturating_duration_since(from).as_nanos() as u64).max(1);
        self.slot_wait.saturating_record(ns(intended, ready));
        self.send_lag.saturating_record(ns(ready, sent));
    }

    pub fn throughput(&self) -> f64 {
        self.completed as f64 / self.measured.as_secs_f64()
    }

    /// Answers per second read within the measured window.
    pub fn answered_per_s(&self) -> f64 {
        self.answered_in_window as f64 / self.measured.as_secs_f64()
    }
}

/// The account of connection `i` of a run.
pub fn account_of(run_id: &str, i: usize) -> String {
    format!("lg{run_id}-{i}")
}

/// Runs the load; `progress` counts completed requests (warm-up included) as they come.
pub fn run(config: &LoadConfig, markets: &[Market], progress: Arc<AtomicU64>) -> Result<Report, String> {
    let executors = config.executors.clamp(1, config.connections.max(1));
    // Everyone starts together, a moment after the executors are up.
    let start = Instant::now() + Duration::from_millis(200);
    let mut handles = Vec::new();
    for e in 0..executors {
        let conns: Vec<usize> = (0..config.connections).filter(|c| c % executors == e).collect();
        let config = config.clone();
        let markets = markets.to_vec();
        let progress = progress.clone();
        let placement = match config.pin_from {
            Some(first) => Placement::Fixed(first + e),
            None => Placement::Unbound,
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("loadgen-{e}"))
            .spin_before_park(Duration::from_micros(50))
            .spawn(move || async move {
                let tasks: Vec<_> = conns
                    .into_iter()
                    .map(|c| {
                        glommio::spawn_local(connection(config.clone(), markets.clone(), c, start, progress.clone()))
                    })
                    .collect();
                let mut report = Report::empty(config.duration);
                for task in tasks {
                    report.merge(task.await);
                }
                report
            })
            .map_err(|e| format!("starting a load executor: {e}"))?;
        handles.push(handle);
    }
    let mut report = Report::empty(config.duration);
    for handle in handles {
        report.merge(handle.join().map_err(|e| format!("a load executor failed: {e:?}"))?);
    }
    Ok(report)
}

/// How long a connection keeps going after the end of the run, for the answers still in flight
/// (and, open loop, to send the requests due before the end that waited for a slot), before it
/// gives up and counts itself broken.
const DRAIN: Duration = Duration::from_secs(5);

/// A request on the wire whose answer has not been read yet.
struct InFlight {
    /// When it was meant to be sent (open loop) or when a slot for it was free (closed loop).
    intended: Instant,
    /// Open loop: when it could be sent, the later of `intended` and the moment a slot came
    /// free (an earlier answer on the connection came in after `intended`).
    ready: Instant,
    /// When the write that carried it began.
    sent: Instant,
    request: mix::Request,
    /// Sent in the measured window (not in the warm-up).
    measured: bool,
}

/// What the writer and the reader of one connection share (one executor, so `Rc`).
struct Shared {
    flow: RefCell<Flow>,
    report: RefCell<Report>,
    /// Free slots: `pipeline` at first; the writer takes one per request, the reader gives it
    /// back per answer. Closed by the reader when it stops, which stops the writer.
    slots: Semaphore,
    broken: Cell<bool>,
    /// When the reader last gave a slot back.
    freed_at: Cell<Instant>,
    /// `Authorization: Bearer <token>\r\n`, or empty.
    auth_header: String,
}

/// When a connection sends.
#[derive(Clone, Copy)]
struct Schedule {
    open_loop: bool,
    start: Instant,
    phase: Duration,
    interval: Duration,
    measure_from: Instant,
    /// Nothing is meant to be sent from here on.
    end: Instant,
    /// `end + DRAIN`: what is not answered by now never will be.
    give_up: Instant,
    pipeline: usize,
}

impl Schedule {
    /// The intended send time of request `k` (open loop); closed loop: now, not before start.
    fn intended(&self, k: u32, now: Instant) -> Instant {
        if self.open_loop {
            self.start + self.phase + self.interval * k
        } else {
            now.max(self.start)
        }
    }
}

/// One connection: a writer task sends at the intended times, up to `pipeline` requests
/// outstanding, several in one write when several are due; a reader task frames the answers,
/// which HTTP/1.1 returns in request order, matches them first in first out to what was sent,
/// and records.
///
/// With more than one request outstanding the flow learns of an answer only after it has sent
/// the requests behind it: it may cancel or move an order whose cancel is still in flight
/// (refused as gone, 3001), move one whose earlier move is still in flight (3003) or to the
/// price that move already set (3002), and an insert's order can be named only once its answer
/// is in. Those refusals are counted by code in `refused` like any other.
async fn connection(
    config: LoadConfig,
    markets: Vec<Market>,
    index: usize,
    start: Instant,
    progress: Arc<AtomicU64>,
) -> Report {
    let account = account_of(&config.run_id, index);
    let prefix = format!("{}c{index}", config.run_id);
    let flow = Flow::new(&account, markets, config.weights, 0x9e37_79b9 ^ ((index as u64 + 1) * 0x1000_0001), &prefix);
    let pipeline = config.pipeline.max(1);
    let shared = Rc::new(Shared {
        flow: RefCell::new(flow),
        report: RefCell::new(Report::empty(config.duration)),
        slots: Semaphore::new(pipeline as u64),
        broken: Cell::new(false),
        freed_at: Cell::new(start),
        auth_header: config.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default(),
    });
    let Ok(stream) = glommio::net::TcpStream::connect(config.target).await else {
        let mut report = shared.report.replace(Report::empty(config.duration));
        report.broken_connections = 1;
        return report;
    };
    let _ = stream.set_nodelay(true);
    let open_loop = config.rate > 0.0;
    // Each connection sends rate / connections per second, phases spread evenly.
    let interval =
        if open_loop { Duration::from_secs_f64(config.connections as f64 / config.rate) } else { Duration::ZERO };
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    let schedule = Schedule {
        open_loop,
        start,
        phase: interval.mul_f64(index as f64 / config.connections.max(1) as f64),
        interval,
        measure_from,
        end,
        give_up: end + DRAIN,
        pipeline,
    };
    let (read_half, write_half) = futures_lite::io::split(stream);
    let (to_reader, in_flight) = local_channel::new_unbounded();
    let reader = glommio::spawn_local(read_answers(
        read_half,
        in_flight,
        shared.clone(),
        open_loop,
        (measure_from, end),
        progress,
    ));
    let writer = glommio::spawn_local(send_requests(write_half, to_reader, shared.clone(), schedule));
    // The writer ends at the end of the run (or when the reader stopped), the reader when every
    // answer is in; whatever is not done by `give_up` never will be (dropping a task cancels it).
    let done = futures_lite::future::or(
        async {
            writer.await;
            reader.await;
            true
        },
        async {
            glommio::timer::sleep(schedule.give_up.saturating_duration_since(Instant::now())).await;
            false
        },
    )
    .await;
    if !done {
        shared.broken.set(true);
    }
    let mut report = shared.report.replace(Report::empty(config.duration));
    report.broken_connections = u64::from(shared.broken.get());
    report
}

/// The writer of a connection: sends until the end of the run, a slot per request.
async fn send_requests(
    mut stream: futures_lite::io::WriteHalf<glommio::net::TcpStream>,
    to_reader: local_channel::LocalSender<InFlight>,
    shared: Rc<Shared>,
    schedule: Schedule,
) {
    let mut out = Vec::with_capacity(1024 * schedule.pipeline.min(64));
    let mut batch: Vec<(Instant, Instant, mix::Request)> = Vec::with_capacity(schedule.pipeline.min(1024));
    let mut k: u32 = 0;
    loop {
        let intended = schedule.intended(k, Instant::now());
        if intended >= schedule.end {
            break;
        }
        let now = Instant::now();
        if intended > now {
            glommio::timer::sleep(intended - now).await;
        }
        // A free slot. A server that stops answering keeps none free; open loop, the requests
        // due before the end are still sent (and charged from their intended times) when it
        // answers again, after the end too, until the connection gives up.
        let had_slot = match shared.slots.try_acquire(1) {
            Ok(had) => had,
            Err(_) => break,
        };
        if (!had_slot && shared.slots.acquire(1).await.is_err()) || shared.broken.get() {
            break;
        }
        let now = Instant::now();
        let ready = if had_slot { intended } else { intended.max(shared.freed_at.get()) };
        // Closed loop: the slot may have come free only after the end.
        let intended = if schedule.open_loop { intended } else { now.max(schedule.start) };
        if intended >= schedule.end {
            break;
        }
        batch.clear();
        batch.push((intended, ready, shared.flow.borrow_mut().next_request()));
        k = k.wrapping_add(1);
        // More that are due, while slots are free: into the same write.
        while batch.len() < schedule.pipeline {
            let next = schedule.intended(k, now);
            if next > now || next >= schedule.end || !shared.slots.try_acquire(1).unwrap_or(false) {
                break;
            }
            batch.push((next, next, shared.flow.borrow_mut().next_request()));
            k = k.wrapping_add(1);
        }
        out.clear();
        for (_, _, request) in &batch {
            out.extend_from_slice(
                format!(
                    "POST {} HTTP/1.1\r\nHost: qaexchange\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    request.path.url(),
                    shared.auth_header,
                    request.body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(request.body.as_bytes());
        }
        let sent = Instant::now();
        let mut measured_sent = 0;
        for (intended, ready, request) in batch.drain(..) {
            let measured = intended >= schedule.measure_from;
            measured_sent += u64::from(measured);
            if to_reader.try_send(InFlight { intended, ready, sent, request, measured }).is_err() {
                return; // the reader stopped
            }
        }
        shared.report.borrow_mut().sent += measured_sent;
        if stream.write_all(&out).await.is_err() {
            shared.broken.set(true);
            break;
        }
    }
    // Dropping the sender tells the reader that nothing more comes once the FIFO is empty.
}

/// The reader of a connection: an answer per request, in the order they were sent.
async fn read_answers(
    mut stream: futures_lite::io::ReadHalf<glommio::net::TcpStream>,
    in_flight: local_channel::LocalReceiver<InFlight>,
    shared: Rc<Shared>,
    open_loop: bool,
    (measure_from, end): (Instant, Instant),
    progress: Arc<AtomicU64>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    // Answers before `at` are done with; dropped from `buf` before the next read.
    let mut at = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    while let Some(request) = in_flight.recv().await {
        let framed = loop {
            match response::frame(&buf[at..]) {
                Ok(Some(framed)) => break Some(framed),
                Ok(None) => {}
                Err(_) => break None,
            }
            buf.drain(..at);
            at = 0;
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let Some(framed) = framed else {
            shared.broken.set(true);
            shared.slots.close();
            return;
        };
        let done = Instant::now();
        let body = &buf[at + framed.body.start..at + framed.body.end];
        let outcome = response::outcome(body);
        shared.flow.borrow_mut().on_answer(
            &request.request,
            outcome.is_ok(),
            response::order_id(body),
            response::is_alive(body),
        );
        if request.measured {
            let from = if open_loop { request.intended } else { request.sent };
            let ns = (done.duration_since(from).as_nanos() as u64).max(1);
            let mut report = shared.report.borrow_mut();
            report.all.saturating_record(ns);
            if open_loop {
                report.record_send_lag(request.intended, request.ready, request.sent);
            }
            if let Some(h) = report.per_path.get_mut(&request.request.path) {
                h.saturating_record(ns);
            }
            report.completed += 1;
            if let Err(code) = outcome {
                *report.refused.entry((request.request.path, code)).or_default() += 1;
            }
        }
        if done >= measure_from && done < end {
            shared.report.borrow_mut().answered_in_window += 1;
        }
        progress.fetch_add(1, Ordering::Relaxed);
        at += framed.consumed;
        // The answer's arrival frees the slot (one clock read per answer, shared with the latency).
        shared.freed_at.set(done);
        shared.slots.signal(1);
    }
}
