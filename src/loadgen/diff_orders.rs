//! The order flow over DIFF trading sessions (`--diff-orders`): one WebSocket session per
//! connection, each logged in (`req_login`) to its own account (opened over HTTP with a
//! password), sending the mix of `mix.rs` as `insert_order` (limit price, GFD or IOC) and
//! `cancel_order` (by the client's order id; DIFF has no modify, so a move is sent as a cancel)
//! and keeping one `peek_message` outstanding at all times (a new one after each `rtn_data`), as
//! tqsdk does.
//!
//! DIFF answers no request directly: an order shows up in the account's trade tree
//! (`trade/<user>/orders/<order_id>`) in a later `rtn_data`. So the round trip of an insert is
//! from its intended send time (open loop; closed loop: its send) to the read of the first
//! `rtn_data` in which its order appears, ALIVE or FINISHED; a refused insert appears FINISHED
//! with an empty `exchange_order_id`, with an ERROR notify whose code is the refusal's. The
//! round trip of a cancel ends at the `rtn_data` where its order is FINISHED, or at the ERROR
//! notify that refuses it (an order already filled: 3001). A cancel whose order shows FINISHED
//! for another reason (it filled while the cancel was on its way) ends there too, and its
//! refusal, which follows, is counted when it comes. The server's session handles a session's
//! messages one at a time, so with several outstanding they queue in the server.
//!
//! Each session sends at most `pipeline` orders outstanding (default 1, as HTTP): open loop at
//! `rate / connections` per second from evenly spread phases (an order due while the session
//! has `pipeline` outstanding waits, and is charged from its intended time: no coordinated
//! omission); closed loop the next as soon as one completes. The sessions log in first; the
//! run (warm-up, then the measured window) starts once all of them have, or have failed.
//!
//! `rtn_data` is parsed with serde_json into borrowed views that skip everything but orders and
//! notifies (accounts, positions and trades are skipped without being built); one that names
//! no order and carries no notify (the account and positions moving with the marks) is only
//! counted.

use super::mix::{DiffRequest, Flow, Market, Path};
use super::{account_of, LoadConfig, Report, Schedule, DRAIN};
use futures_lite::StreamExt;
use glommio::{LocalExecutorBuilder, Placement};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// What a DIFF order run needs beyond the HTTP flow's configuration.
#[derive(Clone, Debug)]
pub struct DiffOrderConfig {
    /// Sessions (`connections`), rate, warm-up, duration, executors, pinning, mix (its moves
    /// are sent as cancels), outstanding orders per session (`pipeline`), run id.
    pub load: LoadConfig,
    /// The server's WebSocket (DIFF) address.
    pub ws: SocketAddr,
    /// The password the accounts were opened with.
    pub password: String,
    /// How long a session may take to connect and log in before it counts as broken.
    pub login_timeout: Duration,
}

/// The sessions' logins: the run starts for everyone a moment after the last one is in (or
/// failed).
struct Gate {
    total: usize,
    arrived: AtomicUsize,
    start: Arc<OnceLock<Instant>>,
}

impl Gate {
    fn arrive(&self) {
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.total {
            let _ = self.start.set(Instant::now() + Duration::from_millis(100));
        }
    }

    async fn start(&self, deadline: Instant) -> Option<Instant> {
        loop {
            if let Some(start) = self.start.get() {
                return Some(*start);
            }
            if Instant::now() >= deadline {
                return None;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Runs the DIFF order flow; `progress` counts completed orders and cancels (warm-up included)
/// as they come; `started` is set to the common start (the measured window begins `warmup`
/// after it) once every session has logged in or failed.
pub fn run(
    config: &DiffOrderConfig,
    markets: &[Market],
    progress: Arc<AtomicU64>,
    started: Arc<OnceLock<Instant>>,
) -> Result<Report, String> {
    let sessions = config.load.connections.max(1);
    let executors = config.load.executors.clamp(1, sessions);
    let gate = Arc::new(Gate { total: sessions, arrived: AtomicUsize::new(0), start: started });
    let mut handles = Vec::new();
    for e in 0..executors {
        let mine: Vec<usize> = (0..sessions).filter(|c| c % executors == e).collect();
        let (config, markets, progress, gate) = (config.clone(), markets.to_vec(), progress.clone(), gate.clone());
        let placement = match config.load.pin_from {
            Some(first) => Placement::Fixed(first + e),
            None => Placement::Unbound,
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("loadgen-diff-orders-{e}"))
            .spin_before_park(Duration::from_micros(50))
            .spawn(move || async move {
                let config = Rc::new(config);
                let tasks: Vec<_> = mine
                    .into_iter()
                    .map(|c| {
                        glommio::spawn_local(session(
                            config.clone(),
                            markets.clone(),
                            c,
                            gate.clone(),
                            progress.clone(),
                        ))
                    })
                    .collect();
                let mut report = Report::empty(config.load.duration);
                for task in tasks {
                    report.merge(task.await);
                }
                report
            })
            .map_err(|e| format!("starting a DIFF order executor: {e}"))?;
        handles.push(handle);
    }
    let mut report = Report::empty(config.load.duration);
    for handle in handles {
        report.merge(handle.join().map_err(|e| format!("a DIFF order executor failed: {e:?}"))?);
    }
    Ok(report)
}

type Ws = async_tungstenite::WebSocketStream<glommio::net::TcpStream>;

const PEEK: &str = r#"{"aid":"peek_message"}"#;

/// Connects, logs in and waits for the whole trade tree (`trade_more_data: false`); leaves a
/// peek outstanding. None when anything fails, the login included.
async fn connect_and_login(target: SocketAddr, user: &str, password: &str) -> Option<Ws> {
    let stream = glommio::net::TcpStream::connect(target).await.ok()?;
    let _ = stream.set_nodelay(true);
    // tungstenite zeroes `read_buffer_size` bytes before every read attempt (128 KiB by
    // default); an order's rtn_data is a few KiB at most.
    let ws_config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024);
    let url = format!("ws://{target}/trade");
    let (mut ws, _) = async_tungstenite::client_async_with_config(url, stream, Some(ws_config)).await.ok()?;
    let login = serde_json::json!({"aid": "req_login", "bid": "local", "user_name": user, "password": password});
    ws.send(Message::text(login.to_string())).await.ok()?;
    ws.send(Message::text(PEEK)).await.ok()?;
    loop {
        let text = match ws.next().await? {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        };
        let text = text.as_str();
        if !text.contains(r#""aid":"rtn_data""#) {
            continue; // the greeting (rtn_brokers)
        }
        if text.contains(r#""trade_more_data":false"#) {
            ws.send(Message::text(PEEK)).await.ok()?;
            return Some(ws);
        }
        let seen = parse_rtn_data(text)?;
        if seen.notifies.iter().any(|n| n.level == "ERROR") {
            return None; // 9106: wrong password or unknown user
        }
        ws.send(Message::text(PEEK)).await.ok()?;
    }
}

/// An order or cancel sent and not yet seen through.
struct Pending {
    path: Path,
    intended: Instant,
    sent: Instant,
    measured: bool,
    /// Inserts that may rest: where (to cancel them later).
    rest: Option<(usize, i64)>,
}

/// One session's bookkeeping while it runs.
struct Book {
    flow: Flow,
    report: Report,
    /// Outstanding inserts and cancels by order number.
    inserts: HashMap<u64, Pending>,
    cancels: HashMap<u64, Pending>,
    /// Cancels that ended because their order finished otherwise (it filled): their refusal is
    /// still to come (whether they were measured).
    refusal_due: HashMap<u64, bool>,
    open_loop: bool,
    measure_from: Instant,
    end: Instant,
    progress: Arc<AtomicU64>,
}

impl Book {
    fn outstanding(&self) -> usize {
        self.inserts.len() + self.cancels.len()
    }

    /// `pending` was seen through at `at`; `refused` with its code.
    fn complete(&mut self, pending: &Pending, at: Instant, refused: Option<u32>) {
        if pending.measured {
            let from = if self.open_loop { pending.intended } else { pending.sent };
            let ns = (at.duration_since(from).as_nanos() as u64).max(1);
            let report = &mut self.report;
            report.all.saturating_record(ns);
            if let Some(h) = report.per_path.get_mut(&pending.path) {
                h.saturating_record(ns);
            }
            report.completed += 1;
            if let Some(code) = refused {
                *report.refused.entry((pending.path, code)).or_default() += 1;
            }
        }
        if at >= self.measure_from && at < self.end {
            self.report.answered_in_window += 1;
        }
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Learns from one `rtn_data` read at `at`.
    fn on_rtn_data(&mut self, seen: &Seen, at: Instant) {
        // Refusals first: an insert's comes with its FINISHED order, a cancel's alone.
        for notify in seen.notifies.iter().filter(|n| n.level == "ERROR") {
            let code = notify.code.clamp(0, i64::from(u32::MAX)) as u32;
            let (is_cancel, seq) = match refused_order(&notify.content) {
                Some((is_cancel, id)) => (is_cancel, self.flow.seq_of(id)),
                None => (false, None),
            };
            match seq {
                Some(seq) if is_cancel => {
                    if let Some(pending) = self.cancels.remove(&seq) {
                        self.complete(&pending, at, Some(code));
                    } else if let Some(measured) = self.refusal_due.remove(&seq) {
                        if measured {
                            *self.report.refused.entry((Path::DiffCancel, code)).or_default() += 1;
                        }
                    } else {
                        *self.report.other_notifies.entry(code).or_default() += 1;
                    }
                }
                Some(seq) => {
                    if let Some(pending) = self.inserts.remove(&seq) {
                        self.complete(&pending, at, Some(code));
                    }
                    // Else its FINISHED order came first and was counted with its code.
                }
                None => *self.report.other_notifies.entry(code).or_default() += 1,
            }
        }
        for order in &seen.orders {
            let Some(seq) = self.flow.seq_of(order.order_id) else { continue };
            let finished = order.status == "FINISHED";
            if let Some(pending) = self.inserts.remove(&seq) {
                let refused = finished && order.exchange_order_id.is_empty();
                let code = refused.then(|| code_in(&order.last_msg).unwrap_or(0));
                self.complete(&pending, at, code);
                if order.status == "ALIVE" {
                    if let Some(rest) = pending.rest {
                        self.flow.rests(seq, rest);
                    }
                }
            } else if finished {
                if let Some(pending) = self.cancels.remove(&seq) {
                    self.complete(&pending, at, None);
                    if code_in(&order.last_msg) != Some(CANCELLED_BY_USER) {
                        self.refusal_due.insert(seq, pending.measured);
                    }
                }
            }
            if finished {
                self.flow.forget(seq);
            }
        }
    }
}

/// The engine's code of an order cancelled by its owner.
const CANCELLED_BY_USER: u32 = 3103;

/// What a session's loop ended with.
enum Ended {
    /// Everything sent was seen through.
    Done,
    /// The connection failed or closed, or orders were still outstanding `DRAIN` after the end.
    Broken,
}

/// One session: connect and log in, wait for the common start, then send and read until the end
/// of the run and every order sent is seen through.
async fn session(
    config: Rc<DiffOrderConfig>,
    markets: Vec<Market>,
    index: usize,
    gate: Arc<Gate>,
    progress: Arc<AtomicU64>,
) -> Report {
    let load = &config.load;
    let mut report = Report::empty(load.duration);
    let account = account_of(&load.run_id, index);
    let login_deadline = Instant::now() + config.login_timeout;
    let logged_in = futures_lite::future::or(connect_and_login(config.ws, &account, &config.password), async {
        glommio::timer::sleep(config.login_timeout).await;
        None
    })
    .await;
    gate.arrive();
    let Some(mut ws) = logged_in else {
        report.broken_connections = 1;
        return report;
    };
    report.logged_in = 1;
    let Some(start) = gate.start(login_deadline + Duration::from_secs(1)).await else {
        report.broken_connections = 1;
        return report;
    };
    let sessions = load.connections.max(1);
    let open_loop = load.rate > 0.0;
    let interval = if open_loop { Duration::from_secs_f64(sessions as f64 / load.rate) } else { Duration::ZERO };
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let schedule = Schedule {
        open_loop,
        start,
        phase: interval.mul_f64(index as f64 / sessions as f64),
        interval,
        measure_from,
        end,
        give_up: end + DRAIN,
        pipeline: load.pipeline.max(1),
    };
    let prefix = format!("{}c{index}", load.run_id);
    let seed = 0x9e37_79b9 ^ ((index as u64 + 1) * 0x1000_0001);
    let flow = Flow::new(&account, markets, load.weights.without_modify(), seed, &prefix);
    let mut book = Book {
        flow,
        report,
        inserts: HashMap::new(),
        cancels: HashMap::new(),
        refusal_due: HashMap::new(),
        open_loop,
        measure_from,
        end,
        progress,
    };
    let ended = drive(&mut ws, &mut book, &schedule).await;
    let mut report = std::mem::replace(&mut book.report, Report::empty(load.duration));
    match ended {
        Ended::Broken => report.broken_connections = 1,
        Ended::Done => {
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
    report
}

/// What woke the loop.
enum Step {
    Message(Option<Result<Message, tungstenite::Error>>),
    Timer,
}

/// The session's loop: send what is due while fewer than `pipeline` are outstanding, read
/// `rtn_data` and peek again after each.
async fn drive(ws: &mut Ws, book: &mut Book, schedule: &Schedule) -> Ended {
    let mut k: u32 = 0;
    let mut sending = true;
    loop {
        let now = Instant::now();
        let mut due = None;
        if sending && book.outstanding() < schedule.pipeline {
            let intended = schedule.intended(k, now);
            if intended >= schedule.end {
                sending = false;
            } else {
                due = Some(intended);
            }
        }
        if !sending && book.outstanding() == 0 {
            return Ended::Done;
        }
        if now >= schedule.give_up {
            return Ended::Broken;
        }
        if let Some(intended) = due.filter(|&t| t <= now) {
            let request: DiffRequest = book.flow.next_diff();
            k = k.wrapping_add(1);
            let sent = Instant::now();
            let pending = Pending {
                path: request.path,
                intended,
                sent,
                measured: intended >= schedule.measure_from,
                rest: request.rest,
            };
            if pending.measured {
                book.report.sent += 1;
            }
            match request.path {
                Path::DiffCancel => book.cancels.insert(request.seq, pending),
                _ => book.inserts.insert(request.seq, pending),
            };
            if ws.send(Message::text(request.text)).await.is_err() {
                return Ended::Broken;
            }
            continue;
        }
        let wake = due.unwrap_or(schedule.give_up).min(schedule.give_up);
        let step = futures_lite::future::or(async { Step::Message(ws.next().await) }, async {
            glommio::timer::sleep(wake.saturating_duration_since(Instant::now())).await;
            Step::Timer
        })
        .await;
        let text = match step {
            Step::Timer => continue,
            Step::Message(Some(Ok(Message::Text(text)))) => text,
            Step::Message(Some(Ok(Message::Close(_)))) | Step::Message(Some(Err(_))) | Step::Message(None) => {
                return Ended::Broken;
            }
            Step::Message(Some(Ok(_))) => continue,
        };
        let at = Instant::now();
        let text = text.as_str();
        if !text.contains(r#""aid":"rtn_data""#) {
            continue;
        }
        book.report.rtn_data += 1;
        book.report.rtn_data_bytes += text.len() as u64;
        // Patches of marks moving (positions and the account only) name no order: not parsed.
        if text.contains(r#""orders":"#) || text.contains(r#""notify":"#) {
            match parse_rtn_data(text) {
                Some(seen) => book.on_rtn_data(&seen, at),
                None => *book.report.other_notifies.entry(0).or_default() += 1,
            }
        }
        if ws.send(Message::text(PEEK)).await.is_err() {
            return Ended::Broken;
        }
    }
}

/// The orders and notifies of one `rtn_data`, borrowed from its text.
#[derive(Debug, Default, PartialEq)]
pub struct Seen<'a> {
    pub orders: Vec<SeenOrder<'a>>,
    pub notifies: Vec<SeenNotify<'a>>,
}

/// An order under `trade/<user>/orders/<order_id>` (fields absent from the patch are empty).
#[derive(Debug, PartialEq)]
pub struct SeenOrder<'a> {
    pub order_id: &'a str,
    pub status: Cow<'a, str>,
    pub exchange_order_id: Cow<'a, str>,
    pub last_msg: Cow<'a, str>,
}

/// A notify under `notify/<key>`.
#[derive(Debug, PartialEq)]
pub struct SeenNotify<'a> {
    pub level: Cow<'a, str>,
    pub code: i64,
    pub content: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RtnDataView<'a> {
    #[serde(borrow)]
    aid: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Vec<PatchView<'a>>,
}

#[derive(Deserialize)]
struct PatchView<'a> {
    #[serde(borrow, default)]
    trade: Option<HashMap<&'a str, Option<UserView<'a>>>>,
    #[serde(borrow, default)]
    notify: Option<HashMap<&'a str, Option<NotifyView<'a>>>>,
}

#[derive(Deserialize)]
struct UserView<'a> {
    #[serde(borrow, default)]
    orders: Option<HashMap<&'a str, Option<OrderView<'a>>>>,
}

#[derive(Deserialize)]
struct OrderView<'a> {
    #[serde(borrow, default)]
    status: Cow<'a, str>,
    #[serde(borrow, default)]
    exchange_order_id: Cow<'a, str>,
    #[serde(borrow, default)]
    last_msg: Cow<'a, str>,
}

#[derive(Deserialize)]
struct NotifyView<'a> {
    #[serde(borrow, default)]
    level: Cow<'a, str>,
    #[serde(default)]
    code: i64,
    #[serde(borrow, default)]
    content: Cow<'a, str>,
}

/// The orders and notifies of an `rtn_data` message; None for another message or what does not
/// parse.
pub fn parse_rtn_data(text: &str) -> Option<Seen<'_>> {
    let view: RtnDataView = serde_json::from_str(text).ok()?;
    if view.aid != "rtn_data" {
        return None;
    }
    let mut seen = Seen::default();
    for patch in view.data {
        for user in patch.trade.into_iter().flatten().filter_map(|(_, u)| u) {
            for (order_id, order) in user.orders.into_iter().flatten() {
                let Some(o) = order else { continue };
                seen.orders.push(SeenOrder {
                    order_id,
                    status: o.status,
                    exchange_order_id: o.exchange_order_id,
                    last_msg: o.last_msg,
                });
            }
        }
        for (_, notify) in patch.notify.into_iter().flatten() {
            let Some(n) = notify else { continue };
            seen.notifies.push(SeenNotify { level: n.level, code: n.code, content: n.content });
        }
    }
    Some(seen)
}

/// The order a refusal notify names: `order <id> refused: ...` (an insert) or `cancel of order
/// <id> refused: ...` (a cancel), as (is a cancel, id).
pub fn refused_order(content: &str) -> Option<(bool, &str)> {
    let (is_cancel, rest) = match content.strip_prefix("cancel of order ") {
        Some(rest) => (true, rest),
        None => (false, content.strip_prefix("order ")?),
    };
    Some((is_cancel, rest.split_once(" refused")?.0))
}

/// The code at the end of a `last_msg` such as `cancelled by the user (code 3103)`.
pub fn code_in(last_msg: &str) -> Option<u32> {
    let at = last_msg.rfind("(code ")? + "(code ".len();
    last_msg[at..].strip_suffix(')')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_orders_and_notifies_of_an_rtn_data() {
        let text = r#"{"aid":"rtn_data","data":[{"trade":{"lg1-0":{"accounts":{"CNY":{"balance":1.0,"x":[1,{"y":null}]}},"orders":{"r1c0-7":{"seqno":3,"order_id":"r1c0-7","exchange_order_id":"3","status":"ALIVE","last_msg":"accepted"}},"positions":{}}}},{"notify":{"qx2":{"type":"MESSAGE","level":"ERROR","code":2008,"content":"order r1c0-8 refused: self \"trade\" (code 2008)"}},"trade":{"lg1-0":{"orders":{"r1c0-8":{"order_id":"r1c0-8","exchange_order_id":"","status":"FINISHED","last_msg":"would trade with own order (code 2008)"}}}}}]}"#;
        let seen = parse_rtn_data(text).expect("an rtn_data");
        assert_eq!(seen.orders.len(), 2);
        assert_eq!((seen.orders[0].order_id, &*seen.orders[0].status), ("r1c0-7", "ALIVE"));
        assert_eq!(&*seen.orders[0].exchange_order_id, "3");
        assert_eq!((&*seen.orders[1].status, &*seen.orders[1].exchange_order_id), ("FINISHED", ""));
        assert_eq!(code_in(&seen.orders[1].last_msg), Some(2008));
        assert_eq!(seen.notifies.len(), 1);
        let n = &seen.notifies[0];
        assert_eq!((&*n.level, n.code), ("ERROR", 2008));
        assert_eq!(refused_order(&n.content), Some((false, "r1c0-8")));
        assert_eq!(
            refused_order("cancel of order r1c0-9 refused: no such live order (code 3001)"),
            Some((true, "r1c0-9"))
        );
        assert_eq!(refused_order("login failed: wrong user name or password"), None);
        assert_eq!(code_in("cancelled by the user (code 3103)"), Some(CANCELLED_BY_USER));
        assert_eq!(code_in("filled"), None);
        // Other messages, and what is not JSON.
        assert!(parse_rtn_data(r#"{"aid":"rtn_brokers","brokers":["local"]}"#).is_none());
        assert!(parse_rtn_data("not json").is_none());
        let quotes = r#"{"aid":"rtn_data","data":[{"ins_list":"","mdhis_more_data":false},{"quotes":{"SHFE.cu2501":{"last_price":1.0}}}]}"#;
        assert_eq!(parse_rtn_data(quotes), Some(Seen::default()));
    }
}
