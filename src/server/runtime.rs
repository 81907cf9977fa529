//! Starting and stopping the server: one glommio executor per shard, each accepting HTTP
//! connections on the same port (SO_REUSEPORT), and the engine on shard 0 behind bounded
//! channels (docs/ARCHITECTURE.md "Server").
//!
//! Start-up: shard 0 binds first (so `--http 127.0.0.1:0` resolves one port for all shards),
//! recovers the engine from its WAL, and reports ready; then the other shards start.
//! Shutdown (the stop flag, set on SIGINT/SIGTERM): every shard stops accepting, connections
//! finish the request in hand and close, the other shards hang up on the engine shard, and the
//! engine shard commits what is staged, syncs and closes its WAL.

use super::config::ServerConfig;
use super::conn::{refuse, serve, EngineLink, ShardContext};
use super::engine_core::{deliver_local, run_committer, EngineCore, Envelope, GroupLimits, ReplyEnvelope, ReplyRoutes};
use super::recovery::{rebuild, Recovered};
use super::service::Service;
use super::wal_record::{encode, instruments_fingerprint, WalRecord, WAL_FORMAT};
use crate::domain::instrument::{parse_instruments, Instrument};
use crate::storage::wal::{WalConfig, WalWriter};
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// The shard that runs the engine.
pub const ENGINE_SHARD: usize = 0;

/// A running server; `wait` blocks until every shard has stopped.
pub struct Server {
    pub http: SocketAddr,
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

struct Links {
    /// Shard s (s != engine) -> engine: requests.
    requests: Vec<Option<(SharedSender<Envelope>, SharedReceiver<Envelope>)>>,
    /// Engine -> shard s: replies.
    replies: Vec<Option<(SharedSender<ReplyEnvelope>, SharedReceiver<ReplyEnvelope>)>>,
}

fn placement(shard: usize, shards: usize) -> Placement {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // Pinning more shards than cores would stack them; let the kernel place them instead.
    if shards <= cores {
        Placement::Fixed(shard)
    } else {
        Placement::Unbound
    }
}

fn executor(shard: usize, shards: usize) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(placement(shard, shards)).name(&format!("shard-{shard}")).io_memory(1 << 20)
}

/// Loads the instruments, starts every shard, and returns once the engine has recovered and
/// every shard is accepting.
pub fn start(config: ServerConfig) -> Result<Server, String> {
    let text = std::fs::read_to_string(&config.instruments_path)
        .map_err(|e| format!("{}: {e}", config.instruments_path.display()))?;
    let instruments = parse_instruments(&text).map_err(|e| format!("{}: {e}", config.instruments_path.display()))?;
    let shards = config.shards.max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let mut links = Links { requests: Vec::new(), replies: Vec::new() };
    for s in 0..shards {
        let remote = s != ENGINE_SHARD;
        links.requests.push(remote.then(|| shared_channel::new_bounded(config.queue_depth)));
        links.replies.push(remote.then(|| shared_channel::new_bounded(config.queue_depth)));
    }
    let mut request_rx = Vec::new();
    let mut reply_tx = Vec::new();
    let mut remote_ends = Vec::new();
    for s in 0..shards {
        let request = links.requests[s].take();
        let reply = links.replies[s].take();
        match (request, reply) {
            (Some((req_tx, req_rx)), Some((rep_tx, rep_rx))) => {
                request_rx.push(Some(req_rx));
                reply_tx.push(Some(rep_tx));
                remote_ends.push(Some((req_tx, rep_rx)));
            }
            _ => {
                request_rx.push(None);
                reply_tx.push(None);
                remote_ends.push(None);
            }
        }
    }

    let (ready_tx, ready_rx) = mpsc::channel::<Result<(SocketAddr, Recovered), String>>();
    let engine_config = config.clone();
    let engine_stop = stop.clone();
    let engine_handle = executor(ENGINE_SHARD, shards)
        .spawn(move || engine_shard(engine_config, instruments, engine_stop, request_rx, reply_tx, ready_tx))
        .map_err(|e| format!("starting shard {ENGINE_SHARD}: {e}"))?;
    let (http, recovered) = match ready_rx.recv() {
        Ok(Ok(ready)) => ready,
        Ok(Err(e)) => {
            let _ = engine_handle.join();
            return Err(e);
        }
        Err(_) => {
            let detail = match engine_handle.join() {
                Ok(Err(e)) => e,
                other => format!("{other:?}"),
            };
            return Err(format!("shard {ENGINE_SHARD} stopped during start-up: {detail}"));
        }
    };

    let mut handles = vec![engine_handle];
    for (shard, ends) in remote_ends.into_iter().enumerate() {
        let Some((req_tx, rep_rx)) = ends else { continue };
        let shard_config = config.clone();
        let shard_stop = stop.clone();
        let (bound_tx, bound_rx) = mpsc::channel::<Result<(), String>>();
        let handle = executor(shard, shards)
            .spawn(move || io_shard(shard, shard_config, http, shard_stop, req_tx, rep_rx, bound_tx))
            .map_err(|e| format!("starting shard {shard}: {e}"))?;
        match bound_rx.recv() {
            Ok(Ok(())) => handles.push(handle),
            Ok(Err(e)) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                return Err(format!("shard {shard} stopped during start-up"));
            }
        }
    }
    Ok(Server { http, recovered, stop, handles })
}

/// Rebuilds the service from the WAL (or starts a new log) and opens the writer.
async fn open_storage(
    config: &ServerConfig,
    instruments: Vec<Instrument>,
) -> Result<(Service, Option<WalWriter>, Recovered), String> {
    let Some(storage) = &config.storage else {
        let service = Service::new(instruments, config.trading_day, config.engine, config.journal);
        return Ok((service, None, Recovered { trading_day: config.trading_day, ..Default::default() }));
    };
    let dir = storage.dir.join(format!("shard-{ENGINE_SHARD}")).join("wal");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let fingerprint = instruments_fingerprint(&instruments);
    let rebuilt = rebuild(&dir, &instruments, config.engine, config.journal)
        .map_err(|e| e.replace("<instruments>", &config.instruments_path.display().to_string()))?;
    if let Some(line) = &rebuilt.recovered.torn_tail {
        tracing::warn!("WAL recovery: {line}");
    }
    let wal_config = WalConfig { dir: dir.clone(), segment_bytes: storage.segment_bytes, sync: storage.sync };
    let mut wal = WalWriter::open(wal_config, &rebuilt.resume, rebuilt.recovered.torn_tail.is_some())
        .await
        .map_err(|e| format!("opening the WAL in {}: {e}", dir.display()))?;
    let mut recovered = rebuilt.recovered;
    let service = match rebuilt.service {
        Some(service) => service,
        None => {
            let genesis = WalRecord::Genesis {
                format: WAL_FORMAT,
                trading_day: config.trading_day,
                instruments_fingerprint: fingerprint,
            };
            wal.append(&encode(&genesis)?).map_err(|e| e.to_string())?;
            wal.commit().await.map_err(|e| format!("writing the WAL genesis: {e}"))?;
            Service::new(instruments, config.trading_day, config.engine, config.journal)
        }
    };
    recovered.trading_day = service.engine().trading_day();
    Ok((service, Some(wal), recovered))
}

/// Resolves when the stop flag is set (checked every 50 ms).
async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

/// Accepts connections until shutdown, then waits for the open ones to finish.
async fn accept_loop(ctx: Rc<ShardContext>, listener: TcpListener) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stopped(&ctx.stop).await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!("shard {}: accept failed: {e}", ctx.shard);
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
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

async fn engine_shard(
    config: ServerConfig,
    instruments: Vec<Instrument>,
    stop: Arc<AtomicBool>,
    request_rx: Vec<Option<SharedReceiver<Envelope>>>,
    reply_tx: Vec<Option<SharedSender<ReplyEnvelope>>>,
    ready: mpsc::Sender<Result<(SocketAddr, Recovered), String>>,
) -> Result<(), String> {
    let listener = match TcpListener::bind(config.http) {
        Ok(listener) => listener,
        Err(e) => {
            let message = format!("binding {}: {e}", config.http);
            let _ = ready.send(Err(message.clone()));
            return Err(message);
        }
    };
    let http = listener.local_addr().map_err(|e| e.to_string())?;
    let (service, wal, recovered) = match open_storage(&config, instruments).await {
        Ok(opened) => opened,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let (notify_tx, notify_rx) = glommio::channels::local_channel::new_bounded(1);
    let core = Rc::new(RefCell::new(EngineCore::new(service, notify_tx)));
    let ctx = Rc::new(ShardContext::new(
        ENGINE_SHARD,
        config.shards,
        config.http_limits,
        EngineLink::Local(core.clone()),
        stop.clone(),
        config.max_connections_per_shard as u64,
    ));
    // Feeders first: their receivers must connect before the other shards can finish theirs.
    let mut feeders = Vec::new();
    for rx in request_rx.into_iter().flatten() {
        let core = core.clone();
        feeders.push(glommio::spawn_local(async move {
            let rx = rx.connect().await;
            while let Some(envelope) = rx.recv().await {
                core.borrow_mut().submit(envelope.origin, envelope.action);
            }
        }));
    }
    let _ = ready.send(Ok((http, recovered)));
    // The other shards start after `ready`; connecting waits for each of them.
    let mut remote = Vec::new();
    for tx in reply_tx {
        remote.push(match tx {
            Some(tx) => Some(tx.connect().await),
            None => None,
        });
    }
    let routes = ReplyRoutes { shard: ENGINE_SHARD, local: ctx.waiters.clone(), remote };
    let limits = match &config.storage {
        Some(s) => GroupLimits { max_records: s.group_commit_max_records, max_bytes: s.group_commit_max_bytes },
        None => GroupLimits { max_records: usize::MAX, max_bytes: usize::MAX },
    };
    let committer = glommio::spawn_local(run_committer(core.clone(), wal, limits, notify_rx, routes));
    accept_loop(ctx.clone(), listener).await;
    // Other shards close their request channels once their connections are done.
    for feeder in feeders {
        feeder.await;
    }
    core.borrow_mut().close();
    committer.await
}

async fn io_shard(
    shard: usize,
    config: ServerConfig,
    http: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: SharedSender<Envelope>,
    replies: SharedReceiver<ReplyEnvelope>,
    bound: mpsc::Sender<Result<(), String>>,
) -> Result<(), String> {
    let listener = match TcpListener::bind(http) {
        Ok(listener) => listener,
        Err(e) => {
            let message = format!("shard {shard}: binding {http}: {e}");
            let _ = bound.send(Err(message.clone()));
            return Err(message);
        }
    };
    let (requests, replies) = futures_lite::future::zip(requests.connect(), replies.connect()).await;
    let ctx = Rc::new(ShardContext::new(
        shard,
        config.shards,
        config.http_limits,
        EngineLink::Remote(requests),
        stop,
        config.max_connections_per_shard as u64,
    ));
    let waiters = ctx.waiters.clone();
    let dispatcher = glommio::spawn_local(async move {
        while let Some(envelope) = replies.recv().await {
            deliver_local(&waiters, envelope.conn, envelope.reply);
        }
    });
    let _ = bound.send(Ok(()));
    accept_loop(ctx.clone(), listener).await;
    // Hanging up the request channel tells the engine shard this shard is done.
    drop(ctx);
    dispatcher.await;
    Ok(())
}
