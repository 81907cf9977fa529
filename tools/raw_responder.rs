//! qaexchange-raw-responder: the HTTP baseline for the load generator. The same shape as the
//! server (one glommio executor per shard, SO_REUSEPORT, keep-alive, pipelining, httparse)
//! but every request gets one fixed JSON answer: no routing, no engine, no WAL. The server's
//! throughput and latency are reported as ratios to this, measured with the same tool.

use clap::Parser;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc;

#[derive(Parser, Debug)]
#[command(name = "qaexchange-raw-responder", about = "Fixed-answer HTTP server: the load generator's baseline")]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:8090")]
    http: SocketAddr,
    /// Executors (one per core, pinned from core 0 when there are enough cores).
    #[arg(long, default_value_t = 1)]
    shards: usize,
}

/// About the size of the server's order answer, so the bytes on the wire are alike.
const BODY: &str = r#"{"success":true,"data":{"order":{"order_id":1,"client_order_id":"raw","account_id":"raw","exchange_id":"CZCE","instrument_id":"SR501","direction":"BUY","offset":"OPEN","price_type":"LIMIT","limit_price":5000.0,"volume_orign":1,"volume_left":1,"time_condition":"GTC","volume_condition":"ANY","status":"ALIVE","filled_volume":0,"trade_amount":0.0,"last_code":null,"last_msg":null,"insert_time_ns":0,"update_time_ns":0},"trades":[]},"error":null}"#;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (bound_tx, bound_rx) = mpsc::channel::<Result<SocketAddr, String>>();
    let mut addr = cli.http;
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
    println!("qaexchange-raw-responder ready http={addr} shards={}", cli.shards.max(1));
    let _ = std::io::stdout().flush();
    for handle in handles {
        let _ = handle.join();
    }
    ExitCode::SUCCESS
}

async fn serve(addr: SocketAddr, bound: mpsc::Sender<Result<SocketAddr, String>>) {
    let listener = match TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = bound.send(Err(format!("binding {addr}: {e}")));
            return;
        }
    };
    let _ = bound.send(listener.local_addr().map_err(|e| e.to_string()));
    while let Ok(stream) = listener.accept().await {
        glommio::spawn_local(connection(stream)).detach();
    }
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
