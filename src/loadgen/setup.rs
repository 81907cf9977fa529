//! Before the load: learn the instruments and open the run's accounts, over plain blocking
//! HTTP (a few requests, so no executor is needed).

use super::mix::Market;
use super::response;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// One request on a fresh connection; the status and the body.
pub fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Vec<u8>), String> {
    call_as(addr, method, path, body, None)
}

/// [`call`] with `Authorization: Bearer <token>` when a token is given.
pub fn call_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    let body = body.unwrap_or("");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: qaexchange\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("{path}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(framed) = response::frame(&buf)? {
            return Ok((framed.status, buf[framed.body].to_vec()));
        }
        let n = stream.read(&mut chunk).map_err(|e| format!("{path}: {e}"))?;
        if n == 0 {
            return Err(format!("{path}: the server closed the connection"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The listed instruments (all, or those named in `only`) as markets around their reference
/// price.
pub fn markets(addr: SocketAddr, only: &[String]) -> Result<Vec<Market>, String> {
    let (status, body) = call(addr, "GET", "/api/market/instruments", None)?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("instruments answer (status {status}): {e}"))?;
    let list = value["data"].as_array().ok_or_else(|| format!("instruments answer without data: {value}"))?;
    let mut markets = Vec::new();
    for i in list {
        let id = i["instrument_id"].as_str().unwrap_or_default();
        let exchange = i["exchange_id"].as_str().unwrap_or_default();
        if !only.is_empty() && !only.iter().any(|o| o == id || *o == format!("{exchange}.{id}")) {
            continue;
        }
        let num = |k: &str| i[k].as_f64().ok_or_else(|| format!("instrument {id} without {k}"));
        markets.push(
            Market::new(id, num("price_tick")?, num("lower_limit")?, num("upper_limit")?, num("pre_settlement")?)
                .with_exchange(exchange),
        );
    }
    if markets.is_empty() {
        return Err(format!("no instruments to trade (asked for {only:?})"));
    }
    Ok(markets)
}

/// Registers `user` (unless it exists) and logs in: the bearer token the run's requests carry
/// on a server with auth on.
pub fn login(addr: SocketAddr, user: &str, password: &str) -> Result<String, String> {
    let credentials = serde_json::json!({"username": user, "password": password}).to_string();
    let (status, answer) = call(addr, "POST", "/api/auth/register", Some(&credentials))?;
    if status != 200 && status != 409 {
        return Err(format!("registering {user}: {status} {}", String::from_utf8_lossy(&answer)));
    }
    let (status, answer) = call(addr, "POST", "/api/auth/login", Some(&credentials))?;
    let value: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| format!("login answer: {e}"))?;
    match value["data"]["token"].as_str() {
        Some(token) if status == 200 => Ok(token.to_string()),
        _ => Err(format!("logging in as {user}: {status} {value}")),
    }
}

/// Opens `n` accounts `account_of(run_id, i)` with `cash` each, and with `password` when given
/// (what DIFF's `req_login` checks; the server hashes it with Argon2id, some ms per account).
pub fn open_accounts(
    addr: SocketAddr,
    run_id: &str,
    n: usize,
    cash: u64,
    password: Option<&str>,
    token: Option<&str>,
) -> Result<(), String> {
    let password = match password {
        Some(p) => format!(r#","password":{}"#, serde_json::Value::from(p)),
        None => String::new(),
    };
    for i in 0..n {
        let account = super::account_of(run_id, i);
        let body = format!(r#"{{"account_id":"{account}","init_cash":{cash}{password}}}"#);
        let (status, answer) = call_as(addr, "POST", "/api/account/open", Some(&body), token)?;
        if status != 200 {
            return Err(format!("opening {account}: {status} {}", String::from_utf8_lossy(&answer)));
        }
    }
    Ok(())
}
