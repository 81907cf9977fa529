//! Starting and stopping the server: one glommio executor per shard, each owning its accounts,
//! its instruments and its WAL, each accepting HTTP connections on the same port
//! (SO_REUSEPORT), joined by one bounded channel per ordered pair of shards
//! (docs/ARCHITECTURE.md "Server").
//!
//! Start-up: every shard's WAL is replayed first (`recovery::rebuild_cluster`); then shard 0
//! binds (so `--http 127.0.0.1:0` resolves one port for all shards), the other shards bind the
//! same address, every shard connects its channels, sends the messages recovery found
//! undelivered, and reports ready.
//! Shutdown (the stop flag, set on SIGINT/SIGTERM): every shard stops accepting and its
//! connections finish the request in hand; once no shard has a connection, nothing is staged
//! anywhere and every message sent was received, each shard commits, syncs and closes its WAL.

use super::checkpoint::{checkpoint_dir, CheckpointMeta};
use super::checkpointer::{CheckpointPolicy, CheckpointTarget, DurableReceived};
use super::config::ServerConfig;
use super::conn::{refuse, serve, AuthGate, Router, ShardContext};
use super::engine_core::{deliver_local, run_committer, Activity, EngineCore, GroupLimits, Routes, ShardMsg, Waiters};
use super::history_store::{open_store, spawn_background, ShardHistory};
use super::recovery::{rebuild_cluster, shard_wal_dir, RebuiltShard, Recovered};
use super::service::Service;
use super::wal_record::{encode, instruments_fingerprint, WalRecord, WAL_FORMAT};
use crate::domain::instrument::{parse_instruments, Instrument};
use crate::domain::shard::account_shard;
use crate::domain::shard::settlement::SettleCut;
use crate::storage::wal::{ResumePoint, WalConfig, WalWriter};
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// A running server; `wait` blocks until every shard has stopped.
pub struct Server {
    pub http: SocketAddr,
    /// The DIFF WebSocket address.
    pub ws: SocketAddr,
    pub recovered: Recovered,
    stop: Arc<AtomicBool>,
    handles: Vec<glommio::ExecutorJoinHandle<Result<(), String>>>,
}

impl Server {
    /// A handle that makes every shard shut down gracefully.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Waits for every shard; the first error of any shard, if one failed.
    pub fn wait(self) -> Result<(), String> {
        let mut first = Ok(());
        for (shard, handle) in self.handles.into_iter().enumerate() {
            let result = match handle.join() {
                Ok(result) => result,
                Err(e) => Err(format!("shard {shard} panicked: {e:?}")),
            };
            if let Err(e) = result {
                tracing::error!("shard {shard}: {e}");
                if first.is_ok() {
                    first = Err(format!("shard {shard}: {e}"));
                }
            }
        }
        first
    }
}

/// What every shard shares for an orderly shutdown (and, for checkpoints, how far each
/// shard's WAL holds the others' messages).
struct Quiesce {
    stop: Arc<AtomicBool>,
    /// Shards whose connections are all closed.
    idle_shards: AtomicUsize,
    activity: Vec<Arc<Activity>>,
    durable_received: Option<Arc<DurableReceived>>,
}

impl Quiesce {
    fn totals(&self) -> (u64, u64, bool) {
        let mut sent = 0;
        let mut received = 0;
        let mut busy = false;
        for a in &self.activity {
            sent += a.peer_sent.load(Ordering::SeqCst);
            received += a.peer_received.load(Ordering::SeqCst);
            busy |= a.busy.load(Ordering::SeqCst);
        }
        (sent, received, busy)
    }

    /// Resolves once no shard has a connection or work, and no message is in flight (seen
    /// twice, 10 ms apart, with the same counts).
    async fn settled(&self) {
        let shards = self.activity.len();
        loop {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            if self.idle_shards.load(Ordering::SeqCst) < shards {
                continue;
            }
            let (sent, received, busy) = self.totals();
            if busy || sent != received {
                continue;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
            if self.totals() == (sent, received, false) {
                return;
            }
        }
    }
}

fn pinned(shards: usize) -> bool {
    // Pinning more shards than cores would stack them; let the kernel place them instead.
    shards <= std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn placement(shard: usize, shards: usize) -> Placement {
    if pinned(shards) {
        Placement::Fixed(shard)
    } else {
        Placement::Unbound
    }
}

/// Notes the shards' cores, so that history jobs keep off them where the machine has cores
/// to spare (`niced_thread::Cores::Spare`). Unpinned shards may run anywhere: every core.
fn note_shard_cores(shards: usize) {
    let cores = if pinned(shards) { shards } else { libc::CPU_SETSIZE as usize };
    super::thread_priority::note_shard_cores(0..cores);
}

fn executor(shard: usize, shards: usize, spin_before_park_us: u64) -> LocalExecutorBuilder {
    let builder =
        LocalExecutorBuilder::new(placement(shard, shards)).name(&format!("shard-{shard}")).io_memory(1 << 20);
    match spin_before_park_us {
        0 => builder,
        us => builder.spin_before_park(Duration::from_micros(us)),
    }
}

/// One shard's part of the start-up: its recovered state and its channel ends.
struct Boot {
    shard: usize,
    rebuilt: Option<RebuiltShard>,
    senders: Vec<Option<SharedSender<ShardMsg>>>,
    receivers: Vec<Option<SharedReceiver<ShardMsg>>>,
    /// The venue's token key (None: auth is off).
    token_key: Option<super::auth::TokenKey>,
    /// A settlement other shards ran and this one did not before a crash: finished first.
    finish_settlement: Option<SettleCut>,
    /// Every shard's count of each user's open connections.
    user_connections: super::user_connections::UserConnections,
    /// The one gate between settlements and instrument changes.
    admin_gate: super::settlement_run::AdminGate,
}

enum StartUp {
    /// The HTTP and WebSocket addresses the shard bound.
    Bound(SocketAddr, SocketAddr),
    Ready,
    Failed(String),
}

/// Per shard, the cut it must still settle at: one that another shard settled from the day this
/// shard is still on (a crash came between the two shards' settlement steps). Every shard was
/// halted and quiet at the cut, and a settled shard stays halted until all have settled, so
/// the shard behind is exactly at the cut.
fn unfinished_settlements(rebuilt: &[Option<RebuiltShard>]) -> Vec<Option<SettleCut>> {
    let services: Vec<Option<&Service>> = rebuilt.iter().map(|r| r.as_ref().and_then(|r| r.service.as_ref())).collect();
    let cuts: Vec<&SettleCut> = services.iter().flatten().filter_map(|s| s.engine().last_settlement()).collect();
    services
        .iter()
        .map(|service| {
            let day = service.as_ref()?.engine().trading_day();
            cuts.iter().find(|cut| cut.settled_day == day).map(|cut| (*cut).clone())
        })
        .collect()
}

/// The venue's token signing key, in the storage directory.
pub const AUTH_KEY_FILE: &str = "auth.key";

/// Loads the instruments, recovers every shard, starts them, and returns once every shard is
/// accepting.
pub fn start(config: ServerConfig) -> Result<Server, String> {
    let text = std::fs::read_to_string(&config.instruments_path)
        .map_err(|e| format!("{}: {e}", config.instruments_path.display()))?;
    let instruments = parse_instruments(&text).map_err(|e| format!("{}: {e}", config.instruments_path.display()))?;
    let shards = config.shards.clamp(1, usize::from(u16::MAX));
    let (mut rebuilt, recovered): (Vec<Option<RebuiltShard>>, Recovered) = match &config.storage {
        Some(storage) => {
            super::wal_location::check_and_note(&storage.dir, storage.wal_root())?;
            let stores = (0..shards as u16)
                .map(|shard| open_store(&storage.dir, shard, storage.memtable_bytes, storage.level1_bytes).map(Some))
                .collect::<Result<Vec<_>, String>>()?;
            let cluster = rebuild_cluster(
                &storage.dir,
                storage.wal_root(),
                shards as u16,
                &instruments,
                config.engine,
                config.journal,
                stores,
            )
            .map_err(|e| e.replace("<instruments>", &config.instruments_path.display().to_string()))?;
            if let Some(line) = &cluster.recovered.torn_tail {
                tracing::warn!("WAL recovery: {line}");
            }
            for line in &cluster.recovered.checkpoint_warnings {
                tracing::warn!("checkpoint: {line}");
            }
            if cluster.recovered.checkpoints.iter().any(|&s| s > 0) {
                tracing::info!(
                    "recovery: started from checkpoints at WAL sequences {:?} (loaded in {} ms)",
                    cluster.recovered.checkpoints,
                    cluster.recovered.checkpoint_load_ms
                );
            }
            if cluster.recovered.redelivered > 0 {
                tracing::info!(
                    "recovery: {} messages between shards will be delivered again",
                    cluster.recovered.redelivered
                );
            }
            let mut recovered = cluster.recovered;
            if recovered.records == 0 {
                // A new venue: the log starts at the configured trading day.
                recovered.trading_day = config.trading_day;
            }
            (cluster.shards.into_iter().map(Some).collect(), recovered)
        }
        None => {
            ((0..shards).map(|_| None).collect(), Recovered { trading_day: config.trading_day, ..Default::default() })
        }
    };
    let token_key = match (&config.auth.enabled, &config.storage) {
        (false, _) => None,
        (true, None) => Some(super::auth::TokenKey::random()),
        (true, Some(storage)) => {
            std::fs::create_dir_all(&storage.dir).map_err(|e| format!("{}: {e}", storage.dir.display()))?;
            Some(super::auth::TokenKey::load_or_create(&storage.dir.join(AUTH_KEY_FILE))?)
        }
    };
    let finish = unfinished_settlements(&rebuilt);
    let user_connections = super::user_connections::UserConnections::default();
    let admin_gate = super::settlement_run::AdminGate::default();
    let mut boots: Vec<Boot> = (0..shards)
        .map(|shard| Boot {
            shard,
            rebuilt: rebuilt[shard].take(),
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
            token_key: token_key.clone(),
            finish_settlement: finish[shard].clone(),
            user_connections: user_connections.clone(),
            admin_gate: admin_gate.clone(),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(config.queue_depth);
                boots[from].senders[to] = Some(tx);
                boots[to].receivers[from] = Some(rx);
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let quiesce = Arc::new(Quiesce {
        stop: stop.clone(),
        idle_shards: AtomicUsize::new(0),
        activity: (0..shards).map(|_| Arc::new(Activity::default())).collect(),
        durable_received: (shards > 1).then(|| Arc::new(DurableReceived::new(shards))),
    });
    // Room for instruments created at run time.
    let directory = Arc::new(super::quote_fanout::FanoutDirectory::new(
        instruments.len().max(crate::domain::shard::MAX_INSTRUMENTS),
        shards,
    ));
    let (events_tx, events_rx) = mpsc::channel::<(usize, StartUp)>();
    let mut handles = Vec::with_capacity(shards);
    let mut http = config.http;
    let mut ws = config.ws;
    let fail = |handles: Vec<glommio::ExecutorJoinHandle<Result<(), String>>>, stop: &AtomicBool, e: String| {
        stop.store(true, Ordering::Relaxed);
        drop(handles);
        Err(e)
    };
    note_shard_cores(shards);
    for boot in boots {
        let shard = boot.shard;
        let shard_config = config.clone();
        let shard_instruments = instruments.clone();
        let shard_quiesce = quiesce.clone();
        let directory = directory.clone();
        let events = events_tx.clone();
        let handle = executor(shard, shards, config.spin_before_park_us)
            .spawn(move || {
                run_shard(boot, shard_config, shard_instruments, (http, ws), shard_quiesce, directory, events)
            })
            .map_err(|e| format!("starting shard {shard}: {e}"))?;
        handles.push(handle);
        // Each shard binds before the next starts, so port 0 resolves once, on shard 0.
        match events_rx.recv() {
            Ok((_, StartUp::Bound(bound_http, bound_ws))) => (http, ws) = (bound_http, bound_ws),
            Ok((s, StartUp::Failed(e))) => return fail(handles, &stop, format!("shard {s}: {e}")),
            Ok((s, StartUp::Ready)) => return fail(handles, &stop, format!("shard {s}: ready before bound")),
            Err(_) => return fail(handles, &stop, format!("shard {shard} stopped during start-up")),
        }
    }
    let mut ready = 0;
    while ready < shards {
        match events_rx.recv() {
            Ok((_, StartUp::Ready)) => ready += 1,
            Ok((s, StartUp::Failed(e))) => return fail(handles, &stop, format!("shard {s}: {e}")),
            Ok((s, StartUp::Bound(..))) => return fail(handles, &stop, format!("shard {s}: bound twice")),
            Err(_) => return fail(handles, &stop, "a shard stopped during start-up".into()),
        }
    }
    Ok(Server { http, ws, recovered, stop, handles })
}

/// Opens the shard's WAL writer where recovery left it, writing the genesis record on a new
/// log; returns the service (new or recovered).
async fn open_wal(
    config: &ServerConfig,
    shard: usize,
    instruments: Vec<Instrument>,
    rebuilt: Option<RebuiltShard>,
) -> Result<(Service, Option<WalWriter>, Vec<crate::domain::shard::Outgoing>), String> {
    let shards = config.shards as u16;
    let new_service = |instruments| {
        Service::new(shard as u16, shards, instruments, config.trading_day, config.engine, config.journal)
    };
    let (Some(storage), Some(rebuilt)) = (&config.storage, rebuilt) else {
        return Ok((new_service(instruments), None, Vec::new()));
    };
    let dir = shard_wal_dir(storage.wal_root(), shard as u16);
    let wal_config = WalConfig { dir: dir.clone(), segment_bytes: storage.segment_bytes, sync: storage.sync };
    let resume: &ResumePoint = &rebuilt.resume;
    let mut wal = WalWriter::open(wal_config, resume, rebuilt.torn_tail)
        .await
        .map_err(|e| format!("opening the WAL in {}: {e}", dir.display()))?;
    let service = match rebuilt.service {
        Some(service) => service,
        None => {
            let genesis = WalRecord::Genesis {
                format: WAL_FORMAT,
                trading_day: config.trading_day,
                instruments_fingerprint: instruments_fingerprint(&instruments),
                shards,
                shard: shard as u16,
            };
            wal.append(&encode(&genesis)?).map_err(|e| e.to_string())?;
            wal.commit().await.map_err(|e| format!("writing the WAL genesis: {e}"))?;
            new_service(instruments)
        }
    };
    Ok((service, Some(wal), rebuilt.redeliver))
}

/// The next accepted connection, or None once the server is stopping. Accept errors are
/// logged and retried after a short pause (both listeners, HTTP and WebSocket, use this).
pub(super) async fn next_connection(ctx: &ShardContext, listener: &TcpListener, what: &str) -> Option<TcpStream> {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            while !ctx.stopping() {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            None
        })
        .await;
        let Some(accepted) = accepted else {
            // Sessions wait on this instead of polling the flag themselves.
            ctx.sessions_stop.close();
            return None;
        };
        match accepted {
            Ok(stream) => return Some(stream),
            Err(e) => {
                tracing::warn!("shard {}: {what} accept failed: {e}", ctx.shard);
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Accepts connections until shutdown, then waits for the open ones to finish.
async fn accept_loop(ctx: Rc<ShardContext>, listener: TcpListener) {
    while let Some(stream) = next_connection(&ctx, &listener, "HTTP").await {
        if ctx.counters.connections_open.get() >= ctx.max_connections {
            refuse(&ctx, stream).await;
            continue;
        }
        glommio::spawn_local(serve(ctx.clone(), stream)).detach();
    }
    drop(listener);
    // Connections notice the stop flag after the request in hand (or within a read timeout).
    while ctx.counters.connections_open.get() > 0 {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

async fn run_shard(
    boot: Boot,
    config: ServerConfig,
    instruments: Vec<Instrument>,
    (http, ws): (SocketAddr, SocketAddr),
    quiesce: Arc<Quiesce>,
    directory: Arc<super::quote_fanout::FanoutDirectory>,
    events: mpsc::Sender<(usize, StartUp)>,
) -> Result<(), String> {
    let shard = boot.shard;
    let token_key = boot.token_key.clone();
    let failed = |e: String| {
        let _ = events.send((shard, StartUp::Failed(e.clone())));
        Err(e)
    };
    let listener = match TcpListener::bind(http) {
        Ok(listener) => listener,
        Err(e) => return failed(format!("binding {http}: {e}")),
    };
    let ws_listener = match TcpListener::bind(ws) {
        Ok(listener) => listener,
        Err(e) => return failed(format!("binding the WebSocket address {ws}: {e}")),
    };
    match (listener.local_addr(), ws_listener.local_addr()) {
        (Ok(http), Ok(ws)) => {
            let _ = events.send((shard, StartUp::Bound(http, ws)));
        }
        (Err(e), _) | (_, Err(e)) => return failed(e.to_string()),
    }
    let fingerprint = instruments_fingerprint(&instruments);
    let mut rebuilt = boot.rebuilt;
    let store = rebuilt.as_mut().and_then(|r| r.history.take());
    let (service, wal, redeliver) = match open_wal(&config, shard, instruments, rebuilt).await {
        Ok(opened) => opened,
        Err(e) => return failed(e),
    };
    // The instruments as the log left them: the config's, and any created since.
    let router = Rc::new(Router::new(service.engine().instruments().to_vec(), config.shards as u16));
    let (notify_tx, notify_rx) = glommio::channels::local_channel::new_bounded(1);
    let activity = quiesce.activity[shard].clone();
    let counters = Rc::new(super::conn::ShardCounters::default());
    let core = Rc::new(RefCell::new(EngineCore::new(service, notify_tx, activity, counters.clone())));
    core.borrow_mut().set_router(router.clone());
    if let Some(cut) = &boot.finish_settlement {
        tracing::warn!(
            "shard {shard}: finishing the settlement of trading day {} that other shards ran before the crash",
            cut.settled_day
        );
        if let Err(e) = core.borrow_mut().finish_settlement(cut) {
            return failed(format!("finishing the settlement of day {}: {e}", cut.settled_day));
        }
    }
    // Messages recovery found undelivered go first, before anything this run sends: a message
    // another shard sends us as soon as our receivers run can make this shard send the next
    // one on the same channel, and a receiver refuses a message that skips a sequence number.
    core.borrow_mut().redeliver(redeliver);
    let mut background = None;
    let mut history = None;
    if let (Some(store), Some(storage)) = (store, &config.storage) {
        let (shared, woken) =
            ShardHistory::new(shard, store, storage.compaction_trigger_tables, storage.memtable_backlog_bytes);
        // Recovery may have left a full memtable: let the background task look at once.
        shared.borrow_mut().apply(Vec::new(), 0);
        core.borrow_mut().set_history(shared.clone());
        background = spawn_background(shared.clone(), woken);
        history = Some(shared);
    }
    if let Some(storage) = &config.storage {
        let target = CheckpointTarget {
            dir: checkpoint_dir(&storage.dir, shard as u16),
            meta: CheckpointMeta {
                shard: shard as u16,
                shards: config.shards as u16,
                instruments_fingerprint: fingerprint,
                wal_format: WAL_FORMAT,
                wal_sequence: 0,
            },
        };
        let policy = CheckpointPolicy {
            every_wal_bytes: storage.checkpoint_wal_bytes,
            interval: Duration::from_secs(storage.checkpoint_interval_secs),
        };
        core.borrow_mut().set_checkpoints(target, policy, quiesce.durable_received.clone());
    }
    let waiters: Waiters = Rc::new(RefCell::new(Default::default()));
    let fanout = Rc::new(RefCell::new(super::quote_fanout::QuoteFanout::new(shard, directory, router.clone())));
    let accounts = Rc::new(RefCell::new(super::account_fanout::AccountFanout::default()));
    // Receivers first, as tasks: a sender's connect waits for its receiver.
    let mut receivers = Vec::new();
    for (from, rx) in boot.receivers.into_iter().enumerate() {
        let Some(rx) = rx else { continue };
        let core = core.clone();
        let waiters = waiters.clone();
        let fanout = fanout.clone();
        let accounts = accounts.clone();
        receivers.push(glommio::spawn_local(async move {
            let rx = rx.connect().await;
            while let Some(msg) = rx.recv().await {
                match msg {
                    ShardMsg::Request { origin, action, sent } => {
                        let mut core = core.borrow_mut();
                        core.metrics.stage_since("hop", sent);
                        core.submit(origin, action);
                    }
                    ShardMsg::Reply { origin, answer, sent } => {
                        core.borrow_mut().metrics.stage_since("reply_hop", sent);
                        deliver_local(&waiters, origin, answer);
                    }
                    ShardMsg::Peer { seq, msg } => core.borrow_mut().deliver(from as u16, seq, msg),
                    ShardMsg::Quote { symbol, patch } => fanout.borrow_mut().publish(&symbol, &patch),
                    ShardMsg::Account { account, patch } => accounts.borrow_mut().publish(&account, &patch),
                }
            }
        }));
    }
    let mut links = Vec::with_capacity(boot.senders.len());
    for tx in boot.senders {
        links.push(match tx {
            Some(tx) => Some(tx.connect().await),
            None => None,
        });
    }
    let links = Rc::new(links);
    let mut ctx = ShardContext::new(
        shard,
        config.http_limits,
        core.clone(),
        links.clone(),
        router,
        waiters.clone(),
        counters,
        quiesce.stop.clone(),
        config.max_connections_per_shard as u64,
        fanout.clone(),
        accounts.clone(),
    )
    .with_ws_limits(config.ws_limits)
    .with_rate_limit(config.max_requests_per_sec)
    .with_user_connections(boot.user_connections.clone(), config.max_connections_per_user)
    .with_admin_gate(boot.admin_gate.clone());
    if let Some(key) = token_key {
        ctx = ctx.with_auth(AuthGate { key: Rc::new(key), token_ttl_secs: config.auth.token_ttl_secs });
    }
    let ctx = Rc::new(ctx);
    if let Some(budget) = ctx.delivery_budget.clone() {
        let stop = ctx.stop.clone();
        glommio::spawn_local(async move { budget.refill(|| stop.load(Ordering::Relaxed)).await }).detach();
    }
    let limits = match &config.storage {
        Some(s) => GroupLimits {
            max_records: s.group_commit_max_records,
            max_bytes: s.group_commit_max_bytes,
            syncs_in_flight: s.syncs_in_flight,
        },
        None => GroupLimits { max_records: usize::MAX, max_bytes: usize::MAX, syncs_in_flight: 1 },
    };
    let routes = Routes { shard, local: waiters, remote: links, fanout, accounts };
    let committer = glommio::spawn_local(run_committer(core.clone(), wal, limits, notify_rx, routes));
    let admin_shard = account_shard(&config.auth.admin_user, config.shards as u16) as usize;
    if ctx.auth.is_some() && admin_shard == shard {
        let storage_dir = config.storage.as_ref().map(|s| s.dir.as_path());
        if let Err(e) = super::admin_bootstrap::ensure_admin(&ctx, &config.auth, storage_dir).await {
            tracing::error!("shard {shard}: {e}");
        }
    }
    if ctx.auth.is_some() {
        let own =
            config.auth.users.iter().filter(|u| account_shard(&u.user_id, config.shards as u16) as usize == shard);
        for user in own {
            if let Err(e) = super::admin_bootstrap::ensure_user(&ctx, user).await {
                tracing::error!("shard {shard}: {e}");
            }
        }
    }
    let _ = events.send((shard, StartUp::Ready));
    futures_lite::future::zip(accept_loop(ctx.clone(), listener), super::ws::accept_loop(ctx.clone(), ws_listener))
        .await;
    drop(ctx);
    quiesce.idle_shards.fetch_add(1, Ordering::SeqCst);
    quiesce.settled().await;
    core.borrow_mut().close();
    let result = committer.await;
    if let (Some(history), Some(background)) = (history, background) {
        // Flushes what the memtable holds, so the next start has nothing to derive again.
        history.borrow_mut().close();
        background.await;
    }
    if let Some(storage) = &config.storage {
        // The latency histograms of the run, for whoever compares runs after the fact.
        let dir = storage.dir.join("latency");
        let text = super::metrics::Gathered(vec![(shard, core.borrow().metrics_snapshot())]).latency_text();
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(format!("shard-{shard}.hgrm.txt")), text));
        if let Err(e) = written {
            tracing::warn!("shard {shard}: writing its latency histograms to {}: {e}", dir.display());
        }
    }
    // Our senders are gone with the committer and the context; the receivers end once every
    // other shard has dropped its senders too.
    for receiver in receivers {
        receiver.await;
    }
    result
}
