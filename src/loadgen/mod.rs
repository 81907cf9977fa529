//! The load generator (`qaexchange-loadgen`): many HTTP keep-alive connections on glommio
//! executors, each sending the order flow of its own account (`mix.rs`), open loop at a
//! constant rate or closed loop as fast as answers come. Open loop measures each request from
//! the moment it was *meant* to be sent, so a server that stalls is charged for every request
//! that waited behind the stall (no coordinated omission).

pub mod mix;
pub mod response;
pub mod setup;

use crate::metrics::hgrm::latency_histogram;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use mix::{Flow, Market, MixWeights, Path};
use std::collections::BTreeMap;
use std::net::SocketAddr;
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
    /// Account and client order id prefix, unique per run.
    pub run_id: String,
}

/// What a run measured (the measured window only; warm-up is sent but not counted).
#[derive(Debug)]
pub struct Report {
    pub per_path: BTreeMap<Path, Histogram<u64>>,
    pub all: Histogram<u64>,
    pub completed: u64,
    /// Refusals by path and error code (the envelope's `code`; 0 = none found).
    pub refused: BTreeMap<(Path, u32), u64>,
    /// Connections that failed (connect, write, read, or an unframeable answer).
    pub broken_connections: u64,
    pub measured: Duration,
}

impl Report {
    fn empty(measured: Duration) -> Self {
        Self {
            per_path: Path::ALL.iter().map(|&p| (p, latency_histogram())).collect(),
            all: latency_histogram(),
            completed: 0,
            refused: BTreeMap::new(),
            broken_connections: 0,
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
        self.completed += other.completed;
        for (key, n) in other.refused {
            *self.refused.entry(key).or_default() += n;
        }
        self.broken_connections += other.broken_connections;
    }

    pub fn throughput(&self) -> f64 {
        self.completed as f64 / self.measured.as_secs_f64()
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

/// One connection's loop: send at the intended times, read each answer, record.
async fn connection(
    config: LoadConfig,
    markets: Vec<Market>,
    index: usize,
    start: Instant,
    progress: Arc<AtomicU64>,
) -> Report {
    let mut report = Report::empty(config.duration);
    let account = account_of(&config.run_id, index);
    let prefix = format!("{}c{index}", config.run_id);
    let mut flow =
        Flow::new(&account, markets, config.weights, 0x9e37_79b9 ^ ((index as u64 + 1) * 0x1000_0001), &prefix);
    let Ok(mut stream) = glommio::net::TcpStream::connect(config.target).await else {
        report.broken_connections = 1;
        return report;
    };
    let _ = stream.set_nodelay(true);
    let open_loop = config.rate > 0.0;
    // Each connection sends rate / connections per second, phases spread evenly.
    let interval =
        if open_loop { Duration::from_secs_f64(config.connections as f64 / config.rate) } else { Duration::ZERO };
    let phase = interval.mul_f64(index as f64 / config.connections.max(1) as f64);
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    let mut out = Vec::with_capacity(1024);
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut k: u32 = 0;
    loop {
        let intended = if open_loop { start + phase + interval * k } else { Instant::now().max(start) };
        if intended >= end {
            break;
        }
        let now = Instant::now();
        if intended > now {
            glommio::timer::sleep(intended - now).await;
        }
        let request = flow.next_request();
        out.clear();
        out.extend_from_slice(
            format!(
                "POST {} HTTP/1.1\r\nHost: qaexchange\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                request.path.url(),
                request.body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(request.body.as_bytes());
        let sent = Instant::now();
        if stream.write_all(&out).await.is_err() {
            report.broken_connections = 1;
            return report;
        }
        let framed = loop {
            match response::frame(&buf) {
                Ok(Some(framed)) => break framed,
                Ok(None) => {}
                Err(_) => {
                    report.broken_connections = 1;
                    return report;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    report.broken_connections = 1;
                    return report;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let done = Instant::now();
        let body = &buf[framed.body.clone()];
        let outcome = response::outcome(body);
        flow.on_answer(&request, outcome.is_ok(), response::order_id(body), response::is_alive(body));
        if intended >= measure_from {
            let from = if open_loop { intended } else { sent };
            let ns = done.duration_since(from).as_nanos() as u64;
            report.all.saturating_record(ns.max(1));
            if let Some(h) = report.per_path.get_mut(&request.path) {
                h.saturating_record(ns.max(1));
            }
            report.completed += 1;
            if let Err(code) = outcome {
                *report.refused.entry((request.path, code)).or_default() += 1;
            }
        }
        progress.fetch_add(1, Ordering::Relaxed);
        buf.drain(..framed.consumed);
        k = k.wrapping_add(1);
    }
    report
}
