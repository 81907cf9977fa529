//! Starts the real `qaexchange-server` binary on 127.0.0.1 with a temporary data dir, and talks
//! HTTP/1.1 to it with a small blocking keep-alive client.
#![allow(dead_code)]

pub mod diff;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_qaexchange-server");

/// A running server process; killed (SIGKILL) on drop if still running.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub ready_line: String,
    pub stderr_path: PathBuf,
}

/// Options of one start.
#[derive(Clone, Debug)]
pub struct Options {
    pub shards: usize,
    pub storage: Option<PathBuf>,
    pub sync: &'static str,
    /// Reuse this port (restart on the same address); 0 picks a free one.
    pub port: u16,
    pub extra: Vec<String>,
    /// Config file passed with `--config`; None: the shipped config/exchange.toml.
    pub config: Option<PathBuf>,
    /// Environment variables for the server process.
    pub env: Vec<(String, String)>,
    /// Tokens required (`[auth]`); false (the default of these tests, which exercise the trading
    /// core) starts the server with `--no-auth`. `tests/server_auth.rs` turns it on.
    pub auth: bool,
}

impl Options {
    pub fn new(storage: Option<&Path>) -> Self {
        Self {
            shards: 2,
            storage: storage.map(Path::to_path_buf),
            sync: "durable",
            port: 0,
            extra: Vec::new(),
            config: None,
            env: Vec::new(),
            auth: false,
        }
    }
}

/// Raises this process's open-file soft limit to its hard limit (servers started afterwards
/// inherit it), for tests that hold a thousand sockets on each side. Returns the new limit.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    limit.rlim_cur
}

/// Runs `cmd` with stdout and stderr to files in `dir`, killing it after `limit`: (status, or
/// None when killed; stdout; stderr). For the real-client tests.
pub fn run_limited(
    mut cmd: Command,
    limit: Duration,
    dir: &Path,
    name: &str,
) -> (Option<std::process::ExitStatus>, String, String) {
    let out_path = dir.join(format!("{name}.stdout"));
    let err_path = dir.join(format!("{name}.stderr"));
    let out = std::fs::File::create(&out_path).expect("stdout file");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status, read(&out_path), read(&err_path))
}

/// The sum over shards of a Prometheus counter family from `GET /metrics`, and the whole text.
pub fn metric_sum(client: &mut Client, family: &str) -> (u64, String) {
    let text = String::from_utf8_lossy(&client.get("/metrics").body).to_string();
    let prefix = format!("{family}{{");
    let sum =
        text.lines().filter(|l| l.starts_with(&prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum();
    (sum, text)
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The server's command line for `opts` (working directory: the crate root); stdio not set.
pub fn command(opts: &Options) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(manifest_dir())
        .arg("--config")
        .arg(opts.config.clone().unwrap_or_else(|| manifest_dir().join("config/exchange.toml")))
        .arg("--http")
        .arg(format!("127.0.0.1:{}", opts.port))
        // The WebSocket port too is picked free (the ready line names it: `ws=`).
        .arg("--ws")
        .arg("127.0.0.1:0")
        .arg("--shards")
        .arg(opts.shards.to_string());
    match &opts.storage {
        Some(dir) => cmd.arg("--storage").arg(dir).arg("--sync").arg(opts.sync),
        None => cmd.arg("--no-storage"),
    };
    if !opts.auth {
        cmd.arg("--no-auth");
    }
    cmd.args(&opts.extra);
    cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Runs the server until it exits on its own (for start-ups that must fail): its exit status
/// and stderr. Kills it and panics if it is still running after `timeout`.
pub fn run_to_exit(opts: &Options, timeout: Duration) -> (std::process::ExitStatus, String) {
    let stderr_path =
        std::env::temp_dir().join(format!("qaexchange-server-{}-{}.exit.stderr", std::process::id(), rand_u64()));
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = command(opts).stdout(Stdio::null()).stderr(stderr).stdin(Stdio::null()).spawn().expect("spawn");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&stderr_path);
            panic!("server still running after {timeout:?}; it was expected to exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    (status, text)
}

/// Starts the server and waits (at most 60 s) for its ready line. Err(stderr) when it exits.
pub fn try_start(opts: &Options) -> Result<ServerProcess, String> {
    let stderr_path =
        std::env::temp_dir().join(format!("qaexchange-server-{}-{}.stderr", std::process::id(), rand_u64()));
    let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
    let mut cmd = command(opts);
    cmd.stdout(Stdio::piped()).stderr(stderr).stdin(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the server never blocks on a full pipe.
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    if !line.starts_with("qaexchange-server ready") {
        let _ = child.kill();
        let _ = child.wait();
        let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let _ = std::fs::remove_file(&stderr_path);
        return Err(format!("server did not start: stdout {line:?}, stderr:\n{err}"));
    }
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("no address in {line:?}"))?;
    Ok(ServerProcess { child, addr, ready_line: line.trim().to_string(), stderr_path })
}

pub fn start(opts: &Options) -> ServerProcess {
    try_start(opts).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts the server with `opts` and a config file `dir/exchange.toml` holding `toml`.
pub fn start_with_config(mut opts: Options, dir: &std::path::Path, toml: &str) -> ServerProcess {
    let config = dir.join("exchange.toml");
    std::fs::write(&config, toml).expect("write the config file");
    opts.config = Some(config);
    start(&opts)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(1);
    h.finish()
}

impl ServerProcess {
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A connection held by `shard` (SO_REUSEPORT spreads new connections over the shards).
    pub fn client_on_shard(&self, shard: u64) -> Client {
        for _ in 0..200 {
            let mut c = self.client();
            if c.ok("GET", "/health", None)["shard"].as_u64() == Some(shard) {
                return c;
            }
        }
        panic!("200 connections and none reached shard {shard}");
    }

    /// A field of the ready line, e.g. `recovered_records`.
    pub fn ready_field(&self, key: &str) -> Option<String> {
        self.ready_line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (at most 30 s) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!("server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// A blocking HTTP/1.1 keep-alive client.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Sent as `Authorization: Bearer <token>` with every request when set.
    pub token: Option<String>,
}

/// One response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client { stream, buf: Vec::new(), token: None }
    }

    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client { stream, buf: Vec::new(), token: None })
    }

    /// How long a read waits before it fails (30 s by default).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).expect("set_read_timeout");
    }

    /// Sends raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send(&mut self, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<()> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = self.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        self.stream.write_all(&bytes)
    }

    /// Reads one response (Content-Length framed). Err on EOF or timeout.
    pub fn read_response(&mut self) -> std::io::Result<Response> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap_or_default();
                let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let len: usize =
                    headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let body = self.buf[end + 4..end + 4 + len].to_vec();
                    self.buf.drain(..end + 4 + len);
                    return Ok(Response { status, headers, body });
                }
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn request(&mut self, method: &str, path: &str, body: Option<&Value>) -> Response {
        self.send(method, path, body).expect("send");
        self.read_response().expect("response")
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, None)
    }

    pub fn post(&mut self, path: &str, body: Value) -> Response {
        self.request("POST", path, Some(&body))
    }

    /// `data` of a successful envelope; panics with the body otherwise.
    pub fn ok(&mut self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = self.request(method, path, body.as_ref());
        let v = r.json();
        assert!(r.status == 200 && v["success"] == true, "{method} {path} -> {} {v}", r.status);
        v["data"].clone()
    }

    /// The error code of a refused request, checking the status.
    pub fn refused(&mut self, method: &str, path: &str, body: Option<Value>, status: u16) -> u64 {
        let r = self.request(method, path, body.as_ref());
        let v = r.json();
        assert_eq!(r.status, status, "{method} {path} -> {v}");
        assert_eq!(v["success"], false, "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v["error"]["code"].as_u64().expect("numeric code")
    }
}

/// A decimal JSON number as fixed point 1e-4 (exact for the values the API writes).
pub fn fixed4(v: &Value) -> i64 {
    (v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) * 10_000.0).round() as i64
}

/// Copies a directory tree (a data dir, to restart a copy of it).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A client logged in as `user` (`POST /api/auth/login`): its token goes with every request.
pub fn login_client(server: &ServerProcess, user: &str, password: &str) -> Client {
    let mut c = server.client();
    let data = c.ok("POST", "/api/auth/login", Some(serde_json::json!({"username": user, "password": password})));
    assert_eq!(data["user_id"], user);
    assert_eq!(data["token_type"], "Bearer");
    assert!(!data.to_string().contains(password));
    c.token = Some(data["token"].as_str().expect("token").to_string());
    c
}

/// Yuan in the API's fixed point (4 decimals), as `fixed4` reads them.
pub fn yuan(v: i64) -> i64 {
    v * 10_000
}

/// The settled state (`settled_state`), after checking SPEC §2's venue-wide identities on it:
/// futures are zero-sum (close plus position profit sum to 0 at one mark per instrument), so
/// balances plus commissions equal static balances.
pub fn zero_sum_state(c: &mut Client) -> Value {
    let state = settled_state(c);
    let (mut profit, mut balance, mut commission, mut statics) = (0, 0, 0, 0);
    for a in state["accounts"].as_array().expect("accounts") {
        let acc = &a["account"];
        profit += fixed4(&acc["close_profit"]) + fixed4(&acc["position_profit"]);
        balance += fixed4(&acc["balance"]);
        commission += fixed4(&acc["commission"]);
        statics += fixed4(&acc["static_balance"]);
    }
    assert_eq!(profit, 0, "{state}");
    assert_eq!(balance + commission, statics, "{state}");
    state
}

/// `/admin/state`'s merged state once the invariants hold: right after a restart, messages
/// recovery found undelivered may still be on their way between shards (`invariants` says so
/// until they land). Debug builds on a busy 2-core CI machine, with recovery's history flushes
/// and the history store's first jobs right after start, get 20 s.
pub fn settled_state(c: &mut Client) -> Value {
    let began = Instant::now();
    loop {
        let s = c.ok("GET", "/admin/state", None);
        if s["invariants"] == "ok" {
            return s["state"].clone();
        }
        assert!(
            s["invariants"].as_str().is_some_and(|i| i.starts_with("messages in flight"))
                && began.elapsed() < Duration::from_secs(20),
            "{s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
