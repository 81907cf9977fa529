//! DIFF quote subscribers for the load generator: N WebSocket sessions on glommio executors,
//! each subscribes to one quote (`subscribe_quote`) and then loops `peek_message` -> read the
//! one `rtn_data` the server answers with, as tqsdk does. Alongside the HTTP order flow of the
//! same run (whose trades and book changes move the quote), they count the deliveries of that
//! quote and measure each one's trade-to-client latency: the time it was read minus the quote's
//! `datetime`, which the server stamps with the time of the event that last changed the quote
//! (Beijing wall-clock text, microseconds; the server runs on the same machine, same clock).
//!
//! A delivery is an `rtn_data` that carries the quote, after the session's first one (the
//! snapshot the subscription brings, whose time is that of the last change before the
//! subscription, not a delivery of a change). Changes made while a session had no peek
//! outstanding reach it composed into one patch, stamped with the newest change: the latency
//! is that of the newest change delivered. Only deliveries read in the measured window count.
//!
//! The answers are scanned, not parsed: the quote object (`"<symbol>":{...}`, flat) and its
//! `"datetime":"..."` are found by text, so the client stays cheap next to the server it
//! measures.

use crate::metrics::hgrm::latency_histogram;
use futures_lite::StreamExt;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::Message;

#[derive(Clone, Debug)]
pub struct DiffConfig {
    /// The server's WebSocket (DIFF) address.
    pub target: SocketAddr,
    pub sessions: usize,
    /// The full symbol to subscribe to, `EXCHANGE.id` (e.g. `SHFE.cu2501`).
    pub symbol: String,
    /// glommio executors (threads) the sessions are spread over.
    pub executors: usize,
    /// Pin every DIFF executor to this core (several may share it); None: unpinned.
    pub pin: Option<usize>,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What the sessions saw (deliveries and latencies of the measured window only).
#[derive(Debug)]
pub struct DiffReport {
    pub sessions: u64,
    /// Sessions whose WebSocket handshake succeeded.
    pub connected: u64,
    /// Sessions that received the quote at least once (the snapshot counts).
    pub with_quote: u64,
    /// `rtn_data` carrying a change of the quote, read in the measured window.
    pub deliveries: u64,
    /// Bytes of the `rtn_data` texts of those deliveries (to compare answers' sizes).
    pub delivered_bytes: u64,
    /// Deliveries whose quote had no readable `datetime` (not in `latency`).
    pub undated: u64,
    /// Trade-to-client latency per delivery, ns.
    pub latency: Histogram<u64>,
    /// Sessions that failed: connect, handshake, or the connection broke before the end.
    pub broken: u64,
    pub measured: Duration,
}

impl DiffReport {
    fn empty(measured: Duration) -> Self {
        Self {
            sessions: 0,
            connected: 0,
            with_quote: 0,
            deliveries: 0,
            delivered_bytes: 0,
            undated: 0,
            latency: latency_histogram(),
            broken: 0,
            measured,
        }
    }

    fn merge(&mut self, other: DiffReport) {
        self.sessions += other.sessions;
        self.connected += other.connected;
        self.with_quote += other.with_quote;
        self.deliveries += other.deliveries;
        self.delivered_bytes += other.delivered_bytes;
        self.undated += other.undated;
        let _ = self.latency.add(&other.latency);
        self.broken += other.broken;
    }

    pub fn deliveries_per_s(&self) -> f64 {
        self.deliveries as f64 / self.measured.as_secs_f64()
    }

    pub fn bytes_per_delivery(&self) -> f64 {
        self.delivered_bytes as f64 / self.deliveries.max(1) as f64
    }
}

/// DIFF sessions running on their executors; `join` waits for the end of the run.
pub struct DiffRun {
    handles: Vec<glommio::ExecutorJoinHandle<DiffReport>>,
    measured: Duration,
}

impl DiffRun {
    pub fn join(self) -> Result<DiffReport, String> {
        let mut report = DiffReport::empty(self.measured);
        for handle in self.handles {
            report.merge(handle.join().map_err(|e| format!("a DIFF executor failed: {e:?}"))?);
        }
        Ok(report)
    }
}

/// Starts the sessions: they connect and subscribe at once, count from `warmup` after a
/// moment from now (the HTTP load's start, when started right after) for `duration`.
/// `progress` counts deliveries (warm-up included) as they come.
pub fn spawn(config: &DiffConfig, progress: Arc<AtomicU64>) -> Result<DiffRun, String> {
    let executors = config.executors.clamp(1, config.sessions.max(1));
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    let mut handles = Vec::new();
    for e in 0..executors {
        let sessions: Vec<usize> = (0..config.sessions).filter(|s| s % executors == e).collect();
        let config = config.clone();
        let progress = progress.clone();
        let placement = match config.pin {
            Some(core) => Placement::Fixed(core),
            None => Placement::Unbound,
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("loadgen-diff-{e}"))
            .spawn(move || async move {
                let report = Rc::new(RefCell::new(DiffReport::empty(config.duration)));
                let config = Rc::new(config);
                let tasks: Vec<_> = sessions
                    .into_iter()
                    .map(|_| {
                        glommio::spawn_local(session(
                            config.clone(),
                            measure_from,
                            end,
                            report.clone(),
                            progress.clone(),
                        ))
                    })
                    .collect();
                for task in tasks {
                    task.await;
                }
                report.replace(DiffReport::empty(config.duration))
            })
            .map_err(|e| format!("starting a DIFF executor: {e}"))?;
        handles.push(handle);
    }
    Ok(DiffRun { handles, measured: config.duration })
}

/// What a session's loop ended with.
enum Ended {
    /// The run's end came.
    Time,
    /// The connection failed or closed.
    Broken,
}

/// One session: connect, subscribe, peek and read until the end of the run.
async fn session(
    config: Rc<DiffConfig>,
    measure_from: Instant,
    end: Instant,
    report: Rc<RefCell<DiffReport>>,
    progress: Arc<AtomicU64>,
) {
    report.borrow_mut().sessions += 1;
    let connected = futures_lite::future::or(
        async {
            let stream = glommio::net::TcpStream::connect(config.target).await.ok()?;
            let _ = stream.set_nodelay(true);
            let url = format!("ws://{}/md", config.target);
            // tungstenite zeroes `read_buffer_size` bytes before every read attempt (128 KiB
            // by default); the answers are a few KiB at most.
            let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024);
            async_tungstenite::client_async_with_config(url, stream, Some(config)).await.ok().map(|(ws, _)| ws)
        },
        sleep_until(end),
    )
    .await;
    let Some(mut ws) = connected else {
        report.borrow_mut().broken += 1;
        return;
    };
    report.borrow_mut().connected += 1;
    let subscribe = format!(r#"{{"aid":"subscribe_quote","ins_list":"{}"}}"#, config.symbol);
    const PEEK: &str = r#"{"aid":"peek_message"}"#;
    if ws.send(Message::text(subscribe)).await.is_err() || ws.send(Message::text(PEEK)).await.is_err() {
        report.borrow_mut().broken += 1;
        return;
    }
    let key = format!("\"{}\":{{", config.symbol);
    let mut seen_quote = false;
    let ended = loop {
        let next = futures_lite::future::or(async { Some(ws.next().await) }, sleep_until(end)).await;
        let text = match next {
            None => break Ended::Time,
            Some(None) | Some(Some(Err(_))) => break Ended::Broken,
            Some(Some(Ok(Message::Text(text)))) => text,
            Some(Some(Ok(Message::Close(_)))) => break Ended::Broken,
            Some(Some(Ok(_))) => continue,
        };
        let read_at = Instant::now();
        let read_ns = wall_clock_ns();
        let text = text.as_str();
        if !text.contains(r#""aid":"rtn_data""#) {
            continue; // the greeting (rtn_brokers)
        }
        if let Some(dated) = quote_datetime_ns(text, &key) {
            if !seen_quote {
                seen_quote = true;
                report.borrow_mut().with_quote += 1;
            } else {
                progress.fetch_add(1, Ordering::Relaxed);
                if read_at >= measure_from && read_at < end {
                    let mut r = report.borrow_mut();
                    r.deliveries += 1;
                    r.delivered_bytes += text.len() as u64;
                    match dated {
                        Some(ns) => {
                            r.latency.saturating_record((read_ns - ns).max(1) as u64);
                        }
                        None => r.undated += 1,
                    }
                }
            }
        }
        if ws.send(Message::text(PEEK)).await.is_err() {
            break Ended::Broken;
        }
    };
    match ended {
        Ended::Broken => report.borrow_mut().broken += 1,
        Ended::Time => {
            // Leave politely, but do not wait long for the server's close.
            let _ = futures_lite::future::or(
                async {
                    let _ = ws.close(None).await;
                },
                glommio::timer::sleep(Duration::from_millis(100)),
            )
            .await;
        }
    }
}

/// Never anything: sleeps until `end`, then None (to race against what a session waits for).
async fn sleep_until<T>(end: Instant) -> Option<T> {
    glommio::timer::sleep(end.saturating_duration_since(Instant::now())).await;
    None
}

fn wall_clock_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Whether `text` (an `rtn_data`) carries the quote whose object starts with `key`
/// (`"<symbol>":{`), and then the newest `datetime` among its occurrences as ns since the
/// epoch (None: the quote came without a readable one). The quote object is flat, so it ends
/// at the first `}`.
pub fn quote_datetime_ns(text: &str, key: &str) -> Option<Option<i64>> {
    let mut found = None;
    let mut from = 0;
    while let Some(at) = text[from..].find(key) {
        let object_start = from + at + key.len();
        let object_end = text[object_start..].find('}').map_or(text.len(), |e| object_start + e);
        let object = &text[object_start..object_end];
        let dated = object.find(r#""datetime":""#).and_then(|d| {
            let value = &object[d + r#""datetime":""#.len()..];
            value.get(..26).and_then(beijing_to_epoch_ns)
        });
        found = Some(match (found.flatten(), dated) {
            (Some(a), Some(b)) => Some(i64::max(a, b)),
            (a, b) => a.or(b),
        });
        from = object_end;
    }
    found
}

/// `"YYYY-MM-DD HH:MM:SS.ffffff"` in Beijing time (UTC+8, no daylight saving) as ns since the
/// epoch.
pub fn beijing_to_epoch_ns(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 26 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' || b[19] != b'.'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = &text[range];
        if digits.bytes().all(|c| c.is_ascii_digit()) {
            digits.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second, micros) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second - 8 * 3_600;
    Some(secs * 1_000_000_000 + micros * 1_000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_text_to_epoch() {
        // The inverse of the server's `beijing_datetime`.
        assert_eq!(beijing_to_epoch_ns("2024-12-02 14:59:59.999500"), Some(1_733_122_799_999_500_000));
        assert_eq!(beijing_to_epoch_ns("1970-01-01 08:00:00.000000"), Some(0));
        assert_eq!(beijing_to_epoch_ns("2024-02-29 08:00:00.000000"), Some(1_709_164_800_000_000_000));
        assert_eq!(beijing_to_epoch_ns("2024-02-29 08:00:00.00000"), None);
        assert_eq!(beijing_to_epoch_ns("2024-13-29 08:00:00.000000"), None);
        assert_eq!(beijing_to_epoch_ns("2024-02-29T08:00:00.000000"), None);
        for ns in [1_733_122_799_999_500_000i64, 1_767_225_599_123_456_000, 951_782_400_000_001_000] {
            let text = crate::server::diff_quote::beijing_datetime(ns);
            assert_eq!(beijing_to_epoch_ns(&text), Some(ns), "{text}");
        }
    }

    #[test]
    fn finds_the_quote_and_its_newest_datetime() {
        let key = "\"SHFE.cu2501\":{";
        let one = r#"{"aid":"rtn_data","data":[{"quotes":{"SHFE.cu2501":{"ask_price1":70110.0,"datetime":"2024-12-02 14:59:59.999500","volume":3}}}]}"#;
        assert_eq!(quote_datetime_ns(one, key), Some(Some(1_733_122_799_999_500_000)));
        // Two patches in one transaction: the newest time.
        let two = r#"{"aid":"rtn_data","data":[{"quotes":{"SHFE.cu2501":{"datetime":"2024-12-02 14:59:59.999500"}}},{"quotes":{"SHFE.cu2501":{"datetime":"2024-12-02 14:59:59.999700","x":1}}}]}"#;
        assert_eq!(quote_datetime_ns(two, key), Some(Some(1_733_122_799_999_700_000)));
        // A change without a time; the symbol only in ins_list; another quote's datetime.
        let undated = r#"{"aid":"rtn_data","data":[{"quotes":{"SHFE.cu2501":{"volume":4},"CZCE.SR501":{"datetime":"2024-12-02 14:59:59.999500"}}}]}"#;
        assert_eq!(quote_datetime_ns(undated, key), Some(None));
        let none = r#"{"aid":"rtn_data","data":[{"ins_list":"SHFE.cu2501","mdhis_more_data":false}]}"#;
        assert_eq!(quote_datetime_ns(none, key), None);
    }
}
