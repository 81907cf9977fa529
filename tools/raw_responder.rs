//! qaexchange-raw-responder: the HTTP baseline for the load generator. The same shape as the
//! server (one glommio executor per shard, SO_REUSEPORT, keep-alive, pipelining, httparse)
//! but every request gets one fixed JSON answer: no routing, no engine, no WAL. The server's
//! throughput and latency are reported as ratios to this, measured with the same tool.
//!
//! With `--ws` it is also the DIFF fan-out's baseline (`tools/fanout.sh`): a WebSocket
//! endpoint (async-tungstenite, as the server) that answers every `peek_message` at once with
//! an `rtn_data` carrying the subscribed quote, stamped with the time of the answer. That is
//! one receive and one send per delivery and nothing else: what one core can deliver here
//! when a quote changes faster than any session peeks.

use clap::Parser;
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use qaexchange::server::diff_quote::{beijing_datetime, now_ns};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc;
use tungstenite::Message;

#[derive(Parser, Debug)]
#[command(name = "qaexchange-raw-responder", about = "Fixed-answer HTTP server: the load generator's baseline")]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:8090")]
    http: SocketAddr,
    /// Executors (one per core, pinned from core 0 when there are enough cores).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Also answer DIFF peeks on this WebSocket address (the fan-out's baseline).
    #[arg(long)]
    ws: Option<SocketAddr>,
}

/// About the size of the server's order answer, so the bytes on the wire are alike.
const BODY: &str = r#"{"success":true,"data":{"order":{"order_id":1,"client_order_id":"raw","account_id":"raw","exchange_id":"CZCE","instrument_id":"SR501","direction":"BUY","offset":"OPEN","price_type":"LIMIT","limit_price":5000.0,"volume_orign":1,"volume_left":1,"time_condition":"GTC","volume_condition":"ANY","status":"ALIVE","filled_volume":0,"trade_amount":0.0,"last_code":null,"last_msg":null,"insert_time_ns":0,"update_time_ns":0},"trades":[]},"error":null}"#;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (bound_tx, bound_rx) = mpsc::channel::<Result<Bound, String>>();
    let mut addr = Bound { http: cli.http, ws: cli.ws };
    let mut handles = Vec::new();
    for shard in 0..cli.shards.max(1) {
        let placement = if cli.shards <= cores { Placement::Fixed(shard) } else { Placement::Unbound };
        let bound = bound_tx.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("raw-{shard}"))
            .spawn(move || serve(addr, bound))
            .map_err(|e| e.to_string());
        match handle {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                eprintln!("qaexchange-raw-responder: {e}");
                return ExitCode::from(1);
            }
        }
        match bound_rx.recv() {
            Ok(Ok(bound)) => addr = bound,
            Ok(Err(e)) => {
                eprintln!("qaexchange-raw-responder: {e}");
                return ExitCode::from(1);
            }
            Err(_) => return ExitCode::from(1),
        }
    }
    let ws = addr.ws.map(|ws| format!(" ws={ws}")).unwrap_or_default();
    println!("qaexchange-raw-responder ready http={}{ws} shards={}", addr.http, cli.shards.max(1));
    let _ = std::io::stdout().flush();
    for handle in handles {
        let _ = handle.join();
    }
    ExitCode::SUCCESS
}

/// The addresses every executor binds (the first one's, so port 0 becomes one shared port).
#[derive(Clone, Copy)]
struct Bound {
    http: SocketAddr,
    ws: Option<SocketAddr>,
}

fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("binding {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, local))
}

async fn serve(addr: Bound, bound: mpsc::Sender<Result<Bound, String>>) {
    let listeners = bind(addr.http).and_then(|http| match addr.ws {
        None => Ok((http, None)),
        Some(ws) => bind(ws).map(|ws| (http, Some(ws))),
    });
    let (http, ws) = match listeners {
        Ok(listeners) => listeners,
        Err(e) => {
            let _ = bound.send(Err(e));
            return;
        }
    };
    let _ = bound.send(Ok(Bound { http: http.1, ws: ws.as_ref().map(|ws| ws.1) }));
    if let Some((listener, _)) = ws {
        glommio::spawn_local(async move {
            while let Ok(stream) = listener.accept().await {
                glommio::spawn_local(ws_session(stream)).detach();
            }
        })
        .detach();
    }
    while let Ok(stream) = http.0.accept().await {
        glommio::spawn_local(connection(stream)).detach();
    }
}

/// One DIFF session of the fan-out baseline: greet, remember the subscribed quote, answer
/// every peek with it at once. The answer is a whole quote (five levels a side and the
/// day's figures), as most of the server's deliveries are: an order at the top of the book
/// shifts every level below it. The generator prints both sizes (`diff_bytes_per_delivery`).
async fn ws_session(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // As the server: tungstenite zeroes its whole read buffer before every read.
    let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let Ok(mut ws) = async_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let hello = r#"{"aid":"rtn_brokers","brokers":["local"]}"#;
    if ws.send(Message::text(hello)).await.is_err() {
        return;
    }
    let mut symbol = String::new();
    let mut price = 70_000u64;
    let mut volume = 0u64;
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else { continue };
        let text = text.as_str();
        if text.contains(r#""peek_message""#) {
            price = 70_000 + (price + 7) % 200;
            volume += 1;
            let answer = quote_patch(&symbol, price, volume);
            if ws.send(Message::text(answer)).await.is_err() {
                return;
            }
        } else if let Ok(request) = serde_json::from_str::<serde_json::Value>(text) {
            if let Some(list) = request.get("ins_list").and_then(|l| l.as_str()) {
                symbol = list.split(',').next().unwrap_or_default().to_owned();
            }
        }
    }
}

fn quote_patch(symbol: &str, price: u64, volume: u64) -> String {
    use std::fmt::Write as _;
    let mut quote = format!(r#"{{"instrument_id":"{symbol}","datetime":"{}""#, beijing_datetime(now_ns()));
    for level in 1..=5u64 {
        let _ =
            write!(quote, r#","ask_price{level}":{}.0,"ask_volume{level}":{}"#, price + 10 * level, level + volume % 7);
        let _ =
            write!(quote, r#","bid_price{level}":{}.0,"bid_volume{level}":{}"#, price - 10 * level, level + volume % 5);
    }
    let _ = write!(
        quote,
        r#","last_price":{price}.0,"highest":70199.0,"lowest":70000.0,"open":70100.0,"close":"-","average":{price}.0,"volume":{volume},"amount":{}.0,"open_interest":{},"pre_open_interest":0,"pre_close":"-","pre_settlement":70000.0,"settlement":"-","upper_limit":73500.0,"lower_limit":66500.0}}"#,
        price * volume * 5,
        volume / 2
    );
    format!(r#"{{"aid":"rtn_data","data":[{{"quotes":{{"{symbol}":{quote}}}}}]}}"#)
}

async fn connection(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let answer =
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}", BODY.len());
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let mut start = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            let head = match request.parse(&buf[start..]) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            };
            let length = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() - start < head + length {
                break;
            }
            start += head + length;
            out.extend_from_slice(answer.as_bytes());
        }
        buf.drain(..start);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
