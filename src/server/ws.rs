//! The WebSocket endpoint of one shard: accept on the shared WebSocket port (every shard binds
//! it, SO_REUSEPORT), upgrade with async-tungstenite, then run one session per connection: the
//! original QAExchange's legacy JSON API (`legacy_session`) on the path `/ws/legacy` (any query
//! string), a DIFF session (`diff_session`) on every other path. Extra handshake headers do not
//! matter: tqsdk uses one connection for market data and one for trading, either may do both.

use super::conn::ShardContext;
use super::diff_session::DiffSession;
use super::legacy_session::{self, LegacySession};
use glommio::net::{TcpListener, TcpStream};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// Most bytes one client message may have (a frame or a reassembled message); larger ones
/// close the connection (clients send small JSON objects).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Bytes tungstenite reads at once (see `serve`).
const READ_BUFFER_BYTES: usize = 4096;

/// CPU shares of the WebSocket sessions' task queue, against the default queue's 1,000 (HTTP
/// connections, the committer, messages from other shards): when a shard is saturated, order
/// flow keeps most of it and market data fan-out takes the rest.
const SESSION_SHARES: usize = 250;

/// Accepts WebSocket connections until shutdown, then waits for the open sessions to end.
pub async fn accept_loop(ctx: Rc<ShardContext>, listener: TcpListener) {
    let sessions = glommio::executor().create_task_queue(
        glommio::Shares::Static(SESSION_SHARES),
        glommio::Latency::NotImportant,
        "websocket-sessions",
    );
    while let Some(stream) = super::runtime::next_connection(&ctx, &listener, "WebSocket").await {
        if ctx.counters.ws_open.get() >= ctx.max_connections {
            // Over the limit: closed before the upgrade (the client sees the connection drop).
            drop(stream);
            continue;
        }
        match glommio::spawn_local_into(serve(ctx.clone(), stream), sessions) {
            Ok(task) => {
                task.detach();
            }
            Err(e) => tracing::warn!("shard {}: cannot start a WebSocket session: {e}", ctx.shard),
        }
    }
    drop(listener);
    while ctx.counters.ws_open.get() > 0 {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

async fn serve(ctx: Rc<ShardContext>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    ctx.counters.ws_open.set(ctx.counters.ws_open.get() + 1);
    // tungstenite clears its whole read buffer before each read: with the default 128 KiB that
    // was most of the fan-out's CPU (every quote change wakes a session, which reads again).
    // Client messages are small; longer ones still arrive over several reads.
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    // The handshake's request says which protocol the connection speaks.
    let legacy = Cell::new(false);
    // The error type is tungstenite's (a whole HTTP response); this closure never returns it.
    #[allow(clippy::result_large_err)]
    let record_path = |request: &tungstenite::handshake::server::Request, response| {
        legacy.set(request.uri().path() == legacy_session::PATH);
        Ok(response)
    };
    match async_tungstenite::accept_hdr_async_with_config(stream, record_path, Some(config)).await {
        Ok(ws) => {
            let (conn, answers) = ctx.register();
            let (protocol, result) = if legacy.get() {
                ("legacy", LegacySession::new(&ctx, conn, &answers).run(ws).await)
            } else {
                ("DIFF", DiffSession::new(&ctx, conn, &answers).run(ws).await)
            };
            if let Err(e) = result {
                tracing::debug!("{protocol} session {conn} on shard {}: {e}", ctx.shard);
            }
            ctx.unregister(conn);
        }
        Err(e) => tracing::debug!("shard {}: WebSocket handshake failed: {e}", ctx.shard),
    }
    ctx.counters.ws_open.set(ctx.counters.ws_open.get() - 1);
}
