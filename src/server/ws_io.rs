//! What every WebSocket session (DIFF and legacy) does with its socket: wait for the next
//! client message, a fan-out's wake-up, a delivery token or shutdown; read a frame as text;
//! send with the slow-reader timeout; close with a reason.

use super::conn::ShardContext;
use super::delivery_budget::DeliveryBudget;
use async_tungstenite::WebSocketStream;
use futures_lite::StreamExt;
use glommio::channels::local_channel::LocalReceiver;
use glommio::net::TcpStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

/// What woke a session's loop.
pub enum Event {
    /// A client message (None: the client closed the connection).
    Message(Option<Result<Message, tungstenite::Error>>),
    /// A fan-out added to the pending data.
    Woken,
    /// The session holds a token of the shard's delivery budget (it asked for one).
    Token,
    /// The server is shutting down.
    Stop,
}

/// Waits for the next client message, a wake-up from the fan-outs, a token of `budget` (when
/// the session has a message ready and waits for its turn) or shutdown.
pub async fn next_event(
    ctx: &ShardContext,
    ws: &mut WebSocketStream<TcpStream>,
    wake: &LocalReceiver<()>,
    budget: Option<&DeliveryBudget>,
) -> Event {
    let token = async {
        match budget {
            Some(budget) => {
                budget.take().await;
                Event::Token
            }
            None => std::future::pending().await,
        }
    };
    futures_lite::future::or(async { Event::Message(ws.next().await) }, async {
        futures_lite::future::or(
            async {
                let _ = wake.recv().await;
                Event::Woken
            },
            futures_lite::future::or(token, async {
                // Never granted: it ends only when the shard closes it at shutdown.
                let _ = ctx.sessions_stop.acquire(1).await;
                Event::Stop
            }),
        )
        .await
    })
    .await
}

/// A client frame as the session reads it.
pub enum Incoming<'m> {
    Text(&'m str),
    /// A binary frame that is not UTF-8 text.
    NotText,
    Close,
    /// Ping, pong, raw frames: nothing to do (tungstenite answers pings with the next write).
    Nothing,
}

pub fn incoming(message: &Message) -> Incoming<'_> {
    match message {
        Message::Text(text) => Incoming::Text(text.as_str()),
        Message::Binary(bytes) => std::str::from_utf8(bytes).map_or(Incoming::NotText, Incoming::Text),
        Message::Close(_) => Incoming::Close,
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Incoming::Nothing,
    }
}

/// Sends one message. A client that stopped reading fills the socket buffers and the write
/// waits: past `[websocket] send_timeout_ms` it is cut off (without a close frame: none could be
/// written) and counted.
pub async fn send(ctx: &ShardContext, ws: &mut WebSocketStream<TcpStream>, text: String) -> Result<(), String> {
    let limit = ctx.ws_limits.send_timeout;
    let sent = futures_lite::future::or(async { Some(ws.send(Message::text(text)).await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await;
    match sent {
        Some(result) => result.map_err(|e| e.to_string()),
        None => {
            ctx.counters.ws_slow_dropped.set(ctx.counters.ws_slow_dropped.get() + 1);
            Err(format!("client did not read for {} ms: disconnected", limit.as_millis()))
        }
    }
}

/// Closes with a code and a reason the client can show (cut to the protocol's 123 bytes).
pub async fn close(ws: &mut WebSocketStream<TcpStream>, code: CloseCode, reason: &str) -> Result<(), String> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame { code, reason: reason[..end].to_owned().into() };
    ws.close(Some(frame)).await.map_err(|e| e.to_string())
}
