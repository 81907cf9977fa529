//! Server configuration: `config/exchange.toml` merged with the `qaexchange-server` flags.
//!
//! Precedence: command-line flags, then the file, then built-in defaults. Every TOML section
//! refuses unknown keys, so a typo stops start-up instead of silently running on a default.
//! Everything is validated here, so the runtime can use a [`ServerConfig`] as it is.

use crate::domain::engine::{is_valid_day, EngineConfig};
use crate::server::history_store::MEMTABLE_BACKLOG_FACTOR;
use crate::server::http::Limits;
/// Re-exported: the `[journal]` section configures the journal's own type.
pub use crate::server::journal::JournalLimits;
use crate::storage::wal::SyncMode;
use serde::Deserialize;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Read when `--config` is not given, if it exists (relative to the current directory).
pub const DEFAULT_CONFIG_PATH: &str = "config/exchange.toml";
pub const DEFAULT_INSTRUMENTS_PATH: &str = "config/instruments.toml";
pub const DEFAULT_STORAGE_DIR: &str = "./data";
pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_WS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);
pub const DEFAULT_TRADING_DAY: u32 = 20250102;
/// Upper bound on shards: more executors than that is a misconfiguration, not a bigger machine.
pub const MAX_SHARDS: usize = 256;
pub const DEFAULT_QUEUE_DEPTH: usize = 1024;
/// How long a shard with nothing to do polls before it sleeps, by default (0: it sleeps at
/// once); see docs/PERFORMANCE.md "Polling before a shard sleeps".
pub const DEFAULT_SPIN_BEFORE_PARK_US: u64 = 0;
/// Longest poll before sleeping that the configuration accepts.
pub const MAX_SPIN_BEFORE_PARK_US: u64 = 10_000;
pub const DEFAULT_MAX_CONNECTIONS_PER_SHARD: usize = 10_000;
/// WebSocket messages a shard pushes per second at most, by default (0: no bound); see
/// docs/PERFORMANCE.md "DIFF quote fan-out" for how it was chosen.
pub const DEFAULT_MAX_DELIVERIES_PER_SEC: u64 = 10_000;
pub const DEFAULT_SEGMENT_MIB: u64 = 64;
/// Segment sizes beyond this only delay the release of old segments.
pub const MAX_SEGMENT_MIB: u64 = 1024;
pub const DEFAULT_GROUP_COMMIT_MAX_RECORDS: usize = 4096;
/// Commit groups whose syncs may run at once. 1: on these 2-core VMs concurrent syncs of one
/// shard each took longer and the ack's p99 got slower (docs/PERFORMANCE.md, "Syncs in flight").
pub const DEFAULT_SYNCS_IN_FLIGHT: usize = 1;
/// More than this only queues flushes in the device.
pub const MAX_SYNCS_IN_FLIGHT: usize = 64;
/// History store: a shard's memtable is flushed to an SSTable at about this size.
pub const DEFAULT_MEMTABLE_KIB: usize = 64 << 10;
/// History store: level 0 is compacted into level 1 once it has this many tables.
pub const DEFAULT_COMPACTION_TRIGGER_TABLES: usize = 4;
/// History store: level 1 is compacted into level 2 past this many memtables' worth (unless
/// `[storage] level1_kib` says otherwise; each level below may hold ten times the one above).
/// About what level 0 holds when it is compacted, as RocksDB sizes its level 1.
pub const DEFAULT_LEVEL1_MEMTABLES: u64 = 4;
/// A checkpoint after this much WAL since the last one: at the measured replay speed
/// (~500 MB/s) a restart then replays at most about a second of log.
pub const DEFAULT_CHECKPOINT_WAL_MIB: u64 = 512;
/// ...or after this long with anything written.
pub const DEFAULT_CHECKPOINT_INTERVAL_SECS: u64 = 600;
pub const DEFAULT_GROUP_COMMIT_MAX_BYTES: usize = 1 << 20;

const MIB: u64 = 1 << 20;

/// The `qaexchange-server` command line. Every flag overrides the matching key of the file.
#[derive(Clone, Debug, Default, clap::Parser)]
#[command(
    name = "qaexchange-server",
    version,
    about = "QAExchange futures exchange server: HTTP REST and DIFF WebSocket, thread-per-core",
    long_about = "QAExchange futures exchange server: HTTP REST and DIFF WebSocket, thread-per-core.\n\n\
                  Settings come from the config file (--config, else config/exchange.toml if it \
                  exists, else built-in defaults); the flags below override the file."
)]
pub struct Cli {
    /// Config file; without it config/exchange.toml is read if it exists
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// HTTP listen address, e.g. 0.0.0.0:8080 [file: [http] listen; default 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// WebSocket (DIFF) listen address [file: [websocket] listen; default 127.0.0.1:8081]
    #[arg(long, value_name = "ADDR")]
    pub ws: Option<SocketAddr>,
    /// Data directory (WAL, SSTables); turns storage on even if the file turns it off
    #[arg(long, value_name = "DIR", conflicts_with = "no_storage")]
    pub storage: Option<PathBuf>,
    /// Keep everything in memory only: nothing is written, all state is lost on exit
    #[arg(long)]
    pub no_storage: bool,
    /// Number of shards (one pinned thread each); 0 = one per available core [max 256]
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// durable: acknowledge once the WAL write is on disk (O_DSYNC); none: acknowledge once in
    /// the page cache, a crash of the machine can lose acknowledged orders
    #[arg(long, value_enum, value_name = "MODE", conflicts_with = "no_storage")]
    pub sync: Option<SyncSetting>,
    /// First trading day of a new venue (used only when storage holds no state yet)
    #[arg(long, value_name = "YYYYMMDD")]
    pub trading_day: Option<u32>,
    /// Instruments file [file: [server] instruments; default config/instruments.toml]
    #[arg(long, value_name = "PATH")]
    pub instruments: Option<PathBuf>,
    /// Turn authentication off: every endpoint open, no tokens (a private test venue)
    /// [file: [auth] enabled = false]
    #[arg(long)]
    pub no_auth: bool,
}

/// `sync` as written in the file and on the command line; [`SyncMode`] is the WAL's own type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncSetting {
    Durable,
    None,
}

impl From<SyncSetting> for SyncMode {
    fn from(setting: SyncSetting) -> Self {
        match setting {
            SyncSetting::Durable => SyncMode::Durable,
            SyncSetting::None => SyncMode::None,
        }
    }
}

/// Everything the server needs, resolved and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub http: SocketAddr,
    pub ws: SocketAddr,
    /// Already resolved: 0 in the file or flag became the number of available cores.
    pub shards: usize,
    /// As given; a relative path is relative to the current directory.
    pub instruments_path: PathBuf,
    /// The first trading day of a new venue, used only when storage holds no state yet.
    pub trading_day: u32,
    /// `None`: in-memory only (`[storage] enabled = false` or `--no-storage`).
    pub storage: Option<StorageConfig>,
    pub http_limits: Limits,
    pub max_connections_per_shard: usize,
    /// Requests per second one HTTP connection may send (bursts up to one second's worth);
    /// 0: no limit.
    pub max_requests_per_sec: u32,
    /// Open HTTP connections one user (not an admin) may hold across all shards; 0: no limit.
    pub max_connections_per_user: u32,
    pub ws_limits: WsLimits,
    pub engine: EngineConfig,
    pub journal: JournalLimits,
    pub auth: AuthConfig,
    /// Bound of each cross-shard channel, so a slow shard pushes back instead of growing memory.
    pub queue_depth: usize,
    /// Microseconds a shard with nothing to do keeps polling its rings before it sleeps in the
    /// kernel (glommio's `spin_before_park`); 0: it sleeps at once.
    pub spin_before_park_us: u64,
}

/// Bounds of one WebSocket session: what a client that stops reading may cost before it is
/// disconnected with a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsLimits {
    /// Most bytes of changes pending for a client that does not peek ([websocket] max_pending_kib).
    pub max_pending_bytes: usize,
    /// Longest a message may take to be written to a client that does not read
    /// ([websocket] send_timeout_ms).
    pub send_timeout: std::time::Duration,
    /// Most WebSocket messages a shard pushes to its sessions per second, all sessions together
    /// (`[websocket] max_deliveries_per_sec`, 0: no bound): keeps the order flow's share of the
    /// core when many sessions follow busy instruments (`delivery_budget`).
    pub max_deliveries_per_sec: u64,
}

impl Default for WsLimits {
    fn default() -> Self {
        Self {
            max_pending_bytes: 4 << 20,
            send_timeout: std::time::Duration::from_secs(10),
            max_deliveries_per_sec: DEFAULT_MAX_DELIVERIES_PER_SEC,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageConfig {
    pub dir: PathBuf,
    /// `[storage] wal_dir`: the shards' WALs under this directory instead of `dir`, e.g. on a
    /// device of their own, where the history store's and the checkpoints' writes do not
    /// queue beside the log's (`wal_location` checks it against where the log was).
    pub wal_dir: Option<PathBuf>,
    pub sync: SyncMode,
    /// Bytes per WAL segment (a multiple of 1 MiB, so of the 4 KiB the writer needs).
    pub segment_bytes: u64,
    /// A group commit is closed after this many records...
    pub group_commit_max_records: usize,
    /// ...or this many bytes (at most one segment, since a batch never spans segments).
    pub group_commit_max_bytes: usize,
    /// `[storage] syncs_in_flight`: commit groups whose synced writes (durable: `O_DSYNC`)
    /// may be in flight at once (1: each group is written only after the one before is
    /// synced).
    pub syncs_in_flight: usize,
    /// History store (`[storage] memtable_kib`): flush a shard's memtable at this size.
    pub memtable_bytes: usize,
    /// History store (`[storage] compaction_trigger_tables`): compact at this many level-0
    /// tables.
    pub compaction_trigger_tables: usize,
    /// History store (`[storage] memtable_backlog_kib`, default `MEMTABLE_BACKLOG_FACTOR`
    /// memtables): while a flush or compaction runs, the memtable may reach this size before
    /// the committer waits for the job.
    pub memtable_backlog_bytes: usize,
    /// History store (`[storage] level1_kib`, default `DEFAULT_LEVEL1_MEMTABLES` memtables):
    /// level 1's size before it is compacted into level 2.
    pub level1_bytes: u64,
    /// `[storage] checkpoint_wal_mib`: a checkpoint once this much WAL was written since the
    /// last one (0: never by size).
    pub checkpoint_wal_bytes: u64,
    /// `[storage] checkpoint_interval_secs`: ...or once this long passed with WAL written
    /// (0: never by time).
    pub checkpoint_interval_secs: u64,
}

impl StorageConfig {
    /// The directory the shards' WAL directories (`shard-N/wal`) are under.
    pub fn wal_root(&self) -> &Path {
        self.wal_dir.as_deref().unwrap_or(&self.dir)
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_STORAGE_DIR),
            wal_dir: None,
            sync: SyncMode::Durable,
            segment_bytes: DEFAULT_SEGMENT_MIB * MIB,
            group_commit_max_records: DEFAULT_GROUP_COMMIT_MAX_RECORDS,
            group_commit_max_bytes: DEFAULT_GROUP_COMMIT_MAX_BYTES,
            syncs_in_flight: DEFAULT_SYNCS_IN_FLIGHT,
            memtable_bytes: DEFAULT_MEMTABLE_KIB << 10,
            compaction_trigger_tables: DEFAULT_COMPACTION_TRIGGER_TABLES,
            memtable_backlog_bytes: MEMTABLE_BACKLOG_FACTOR * (DEFAULT_MEMTABLE_KIB << 10),
            level1_bytes: DEFAULT_LEVEL1_MEMTABLES * ((DEFAULT_MEMTABLE_KIB as u64) << 10),
            checkpoint_wal_bytes: DEFAULT_CHECKPOINT_WAL_MIB * MIB,
            checkpoint_interval_secs: DEFAULT_CHECKPOINT_INTERVAL_SECS,
        }
    }
}

/// `[auth]` resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// Tokens required (on by default); off: every endpoint open (`--no-auth`).
    pub enabled: bool,
    /// How long a login's token is valid.
    pub token_ttl_secs: u64,
    /// The first admin, registered at start-up when no user of that name exists.
    pub admin_user: crate::domain::name::AccountId,
    /// Its password; None: a random one, written once to `<storage>/admin-password` (mode
    /// 0600), never to the log.
    pub admin_password: Option<Secret>,
    /// More users (`[[auth.users]]`), each registered at start-up when no user of that name
    /// exists; an existing one is left as it is.
    pub users: Vec<ConfiguredUser>,
}

/// A user of `[[auth.users]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfiguredUser {
    pub user_id: crate::domain::name::AccountId,
    pub password: Secret,
    pub admin: bool,
}

/// A configured secret: compared and cloned, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub const DEFAULT_TOKEN_TTL_SECS: u64 = 86_400;
/// Per HTTP connection: far above what one trading client sends (the load generator's
/// connections send a few thousand a second each), low enough that one connection cannot hold
/// a shard.
pub const DEFAULT_MAX_REQUESTS_PER_SEC: u32 = 20_000;
/// Per user: room for a strategy's connection pool, not for a connection flood.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: u32 = 256;
pub const DEFAULT_ADMIN_USER: &str = "admin";

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            token_ttl_secs: DEFAULT_TOKEN_TTL_SECS,
            admin_user: crate::domain::name::AccountId::new(DEFAULT_ADMIN_USER).expect("short"),
            admin_password: None,
            users: Vec::new(),
        }
    }
}

/// The built-in defaults: what runs when there is no config file and no flag.
impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http: DEFAULT_HTTP_ADDR,
            ws: DEFAULT_WS_ADDR,
            shards: available_cores(),
            instruments_path: PathBuf::from(DEFAULT_INSTRUMENTS_PATH),
            trading_day: DEFAULT_TRADING_DAY,
            storage: Some(StorageConfig::default()),
            http_limits: Limits::default(),
            max_connections_per_shard: DEFAULT_MAX_CONNECTIONS_PER_SHARD,
            max_requests_per_sec: DEFAULT_MAX_REQUESTS_PER_SEC,
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            ws_limits: WsLimits::default(),
            engine: EngineConfig::default(),
            journal: JournalLimits::default(),
            auth: AuthConfig::default(),
            queue_depth: DEFAULT_QUEUE_DEPTH,
            spin_before_park_us: DEFAULT_SPIN_BEFORE_PARK_US,
        }
    }
}

/// Why the configuration was refused. The message names the file or flag and the problem.
#[derive(Debug)]
pub enum ConfigError {
    /// The config file could not be read.
    Read { path: PathBuf, source: io::Error },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    Parse {
        path: PathBuf,
        /// 1-based line and column of the offending text, when toml knows it.
        position: Option<(usize, usize)>,
        /// The `[table]` holding the offending key, if any.
        section: Option<String>,
        message: String,
    },
    /// A well-typed value out of range; `setting` is e.g. `--shards` or `FILE: [server] shards`.
    Invalid { setting: String, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(f, "{}: cannot read: {source}", path.display()),
            ConfigError::Parse { path, position, section, message } => {
                write!(f, "{}", path.display())?;
                if let Some((line, column)) = position {
                    write!(f, ":{line}:{column}")?;
                }
                if let Some(section) = section {
                    write!(f, ": in [{section}]")?;
                }
                write!(f, ": {message}")
            }
            ConfigError::Invalid { setting, message } => write!(f, "{setting} {message}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl ServerConfig {
    /// Reads `--config` (which must exist), else [`DEFAULT_CONFIG_PATH`] if it exists, else
    /// starts from the defaults; then applies the flags over it.
    pub fn resolve(cli: &Cli) -> Result<ServerConfig, ConfigError> {
        Self::resolve_with_default(cli, Path::new(DEFAULT_CONFIG_PATH))
    }

    /// A config file's contents, without flags (for tests and tools).
    pub fn from_toml_str(text: &str) -> Result<ServerConfig, ConfigError> {
        Ok(Draft::from_toml(text, Path::new("<config>"))?.finish())
    }

    fn resolve_with_default(cli: &Cli, default_path: &Path) -> Result<ServerConfig, ConfigError> {
        let (path, text) = match &cli.config {
            Some(path) => (path.as_path(), Some(read(path)?)),
            None => match std::fs::read_to_string(default_path) {
                Ok(text) => (default_path, Some(text)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => (default_path, None),
                Err(source) => return Err(ConfigError::Read { path: default_path.to_path_buf(), source }),
            },
        };
        let mut draft = match text {
            Some(text) => Draft::from_toml(&text, path)?,
            None => Draft { config: ServerConfig::default(), storage_enabled: true },
        };
        draft.apply_cli(cli)?;
        Ok(draft.finish())
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_SHARDS)
}

/// A config whose storage settings are kept even while storage is off, so `--storage DIR` can
/// turn it back on with the file's sync and segment settings.
struct Draft {
    config: ServerConfig,
    storage_enabled: bool,
}

impl Draft {
    fn from_toml(text: &str, path: &Path) -> Result<Draft, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| parse_error(&e, text, path))?;
        file.resolve(path)
    }

    fn apply_cli(&mut self, cli: &Cli) -> Result<(), ConfigError> {
        let config = &mut self.config;
        if let Some(http) = cli.http {
            config.http = http;
        }
        if let Some(ws) = cli.ws {
            config.ws = ws;
        }
        if let Some(path) = &cli.instruments {
            config.instruments_path = path.clone();
        }
        if let Some(shards) = cli.shards {
            config.shards = resolve_shards(shards, || "--shards".to_string())?;
        }
        if let Some(day) = cli.trading_day {
            config.trading_day = check_day(day, || "--trading-day".to_string())?;
        }
        if let Some(dir) = &cli.storage {
            if let Some(storage) = config.storage.as_mut() {
                storage.dir = dir.clone();
            }
            self.storage_enabled = true;
        }
        if cli.no_storage {
            self.storage_enabled = false;
        }
        if cli.no_auth {
            config.auth.enabled = false;
        }
        if let Some(sync) = cli.sync {
            if !self.storage_enabled {
                return Err(invalid(
                    "--sync".into(),
                    "has no effect: storage is off ([storage] enabled = false); pass --storage DIR to turn it on"
                        .into(),
                ));
            }
            if let Some(storage) = config.storage.as_mut() {
                storage.sync = sync.into();
            }
        }
        check_listen(config.http, config.ws)
    }

    fn finish(mut self) -> ServerConfig {
        if !self.storage_enabled {
            self.config.storage = None;
        }
        self.config
    }
}

fn invalid(setting: String, message: String) -> ConfigError {
    ConfigError::Invalid { setting, message }
}

/// 0 means one shard per available core.
fn resolve_shards(shards: usize, setting: impl Fn() -> String) -> Result<usize, ConfigError> {
    match shards {
        0 => Ok(available_cores()),
        1..=MAX_SHARDS => Ok(shards),
        _ => Err(invalid(setting(), format!("must be 0..={MAX_SHARDS} (0 = one per available core), got {shards}"))),
    }
}

fn check_day(day: u32, setting: impl Fn() -> String) -> Result<u32, ConfigError> {
    if is_valid_day(day) {
        Ok(day)
    } else {
        Err(invalid(setting(), format!("must be a calendar date as YYYYMMDD, got {day}")))
    }
}

fn at_least(value: usize, min: usize, setting: impl Fn() -> String) -> Result<usize, ConfigError> {
    if value >= min {
        Ok(value)
    } else {
        Err(invalid(setting(), format!("must be at least {min}, got {value}")))
    }
}

/// Two listeners on the same port of overlapping addresses would fail to bind; say so up front.
fn check_listen(http: SocketAddr, ws: SocketAddr) -> Result<(), ConfigError> {
    let overlap = http.ip() == ws.ip()
        || (http.is_ipv4() == ws.is_ipv4() && (http.ip().is_unspecified() || ws.ip().is_unspecified()));
    if http.port() != 0 && http.port() == ws.port() && overlap {
        return Err(invalid(
            "HTTP and WebSocket listen addresses".into(),
            format!("must not share a port: {http} and {ws} ([http] listen, [websocket] listen, --http, --ws)"),
        ));
    }
    Ok(())
}

/// Turns a toml error into one line naming the file, position and table.
fn parse_error(error: &toml::de::Error, text: &str, path: &Path) -> ConfigError {
    let (position, section) = match error.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before[line_start..].chars().count() + 1;
            (Some((line, column)), enclosing_table(text, line_start))
        }
        None => (None, None),
    };
    ConfigError::Parse {
        path: path.to_path_buf(),
        position,
        section,
        message: error.message().trim().replace('\n', "; "),
    }
}

/// The last `[table]` header above the line at `line_start`; none if that line is a header
/// itself (then the problem is the table's own name, at the top level).
fn enclosing_table(text: &str, line_start: usize) -> Option<String> {
    let current = text[line_start..].lines().next().unwrap_or("");
    if current.trim_start().starts_with('[') {
        return None;
    }
    text[..line_start].lines().rev().find_map(|line| {
        let line = line.trim_start();
        let inner = line.strip_prefix('[')?;
        let end = inner.find(']')?;
        Some(inner[..end].trim_matches(|c: char| c == '[' || c.is_whitespace()).to_string())
    })
}

// ---- The file format. Every key optional; unknown keys are errors. ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    http: HttpSection,
    #[serde(default)]
    websocket: WebsocketSection,
    #[serde(default)]
    storage: StorageSection,
    #[serde(default)]
    engine: EngineSection,
    #[serde(default)]
    journal: JournalSection,
    #[serde(default)]
    auth: AuthSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    enabled: Option<bool>,
    token_ttl_secs: Option<u64>,
    admin_user: Option<String>,
    admin_password: Option<String>,
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password: String,
    #[serde(default)]
    admin: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    shards: Option<usize>,
    trading_day: Option<u32>,
    instruments: Option<PathBuf>,
    queue_depth: Option<usize>,
    spin_before_park_us: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    listen: Option<SocketAddr>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_body_bytes: Option<usize>,
    max_connections_per_shard: Option<usize>,
    max_requests_per_sec: Option<u32>,
    max_connections_per_user: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebsocketSection {
    listen: Option<SocketAddr>,
    max_pending_kib: Option<usize>,
    send_timeout_ms: Option<u64>,
    max_deliveries_per_sec: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageSection {
    enabled: Option<bool>,
    dir: Option<PathBuf>,
    wal_dir: Option<PathBuf>,
    sync: Option<SyncSetting>,
    segment_mib: Option<u64>,
    group_commit_max_records: Option<usize>,
    group_commit_max_bytes: Option<usize>,
    syncs_in_flight: Option<usize>,
    memtable_kib: Option<usize>,
    compaction_trigger_tables: Option<usize>,
    memtable_backlog_kib: Option<usize>,
    level1_kib: Option<u64>,
    checkpoint_wal_mib: Option<u64>,
    checkpoint_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineSection {
    book_capacity: Option<usize>,
    live_order_capacity: Option<usize>,
    kline_capacity: Option<usize>,
    tick_capacity: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalSection {
    orders_per_account: Option<usize>,
    trades_per_account: Option<usize>,
    trades_per_instrument: Option<usize>,
}

impl FileConfig {
    /// Fills the defaults and checks every range; errors name `path`, the table and the key.
    fn resolve(self, path: &Path) -> Result<Draft, ConfigError> {
        let key = |table: &'static str, name: &'static str| move || format!("{}: [{table}] {name}", path.display());
        let defaults = ServerConfig::default();

        let server = self.server;
        let shards = resolve_shards(server.shards.unwrap_or(0), key("server", "shards"))?;
        let trading_day = check_day(server.trading_day.unwrap_or(DEFAULT_TRADING_DAY), key("server", "trading_day"))?;
        let queue_depth = at_least(server.queue_depth.unwrap_or(DEFAULT_QUEUE_DEPTH), 1, key("server", "queue_depth"))?;
        let spin_before_park_us = server.spin_before_park_us.unwrap_or(DEFAULT_SPIN_BEFORE_PARK_US);
        if spin_before_park_us > MAX_SPIN_BEFORE_PARK_US {
            return Err(invalid(
                key("server", "spin_before_park_us")(),
                format!("must be 0..={MAX_SPIN_BEFORE_PARK_US}, got {spin_before_park_us}"),
            ));
        }

        let http = self.http;
        let default_limits = Limits::default();
        let max_header_bytes = at_least(
            http.max_header_bytes.unwrap_or(default_limits.max_header_bytes),
            1,
            key("http", "max_header_bytes"),
        )?;
        let max_headers = http.max_headers.unwrap_or(default_limits.max_headers);
        if !(1..=Limits::HEADER_SLOTS).contains(&max_headers) {
            return Err(invalid(
                key("http", "max_headers")(),
                format!("must be 1..={} (the parser's header slots), got {max_headers}", Limits::HEADER_SLOTS),
            ));
        }
        let http_limits = Limits {
            max_header_bytes,
            max_headers,
            max_body_bytes: http.max_body_bytes.unwrap_or(default_limits.max_body_bytes),
        };
        let max_connections_per_shard = at_least(
            http.max_connections_per_shard.unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_SHARD),
            1,
            key("http", "max_connections_per_shard"),
        )?;

        let websocket = &self.websocket;
        let default_ws = WsLimits::default();
        let ws_limits = WsLimits {
            max_pending_bytes: at_least(
                websocket.max_pending_kib.unwrap_or(default_ws.max_pending_bytes >> 10),
                1,
                key("websocket", "max_pending_kib"),
            )? << 10,
            send_timeout: std::time::Duration::from_millis(at_least(
                websocket.send_timeout_ms.unwrap_or(default_ws.send_timeout.as_millis() as u64) as usize,
                1,
                key("websocket", "send_timeout_ms"),
            )? as u64),
            max_deliveries_per_sec: websocket.max_deliveries_per_sec.unwrap_or(default_ws.max_deliveries_per_sec),
        };

        let storage = self.storage;
        let segment_mib = storage.segment_mib.unwrap_or(DEFAULT_SEGMENT_MIB);
        if !(1..=MAX_SEGMENT_MIB).contains(&segment_mib) {
            return Err(invalid(
                key("storage", "segment_mib")(),
                format!("must be 1..={MAX_SEGMENT_MIB}, got {segment_mib}"),
            ));
        }
        let segment_bytes = segment_mib * MIB;
        let group_commit_max_records = at_least(
            storage.group_commit_max_records.unwrap_or(DEFAULT_GROUP_COMMIT_MAX_RECORDS),
            1,
            key("storage", "group_commit_max_records"),
        )?;
        let group_commit_max_bytes = at_least(
            storage.group_commit_max_bytes.unwrap_or(DEFAULT_GROUP_COMMIT_MAX_BYTES),
            1,
            key("storage", "group_commit_max_bytes"),
        )?;
        if group_commit_max_bytes as u64 > segment_bytes {
            return Err(invalid(
                key("storage", "group_commit_max_bytes")(),
                format!(
                    "must be at most one segment ({segment_bytes} bytes with segment_mib = {segment_mib}), got \
                     {group_commit_max_bytes}"
                ),
            ));
        }
        let syncs_in_flight = storage.syncs_in_flight.unwrap_or(DEFAULT_SYNCS_IN_FLIGHT);
        if !(1..=MAX_SYNCS_IN_FLIGHT).contains(&syncs_in_flight) {
            return Err(invalid(
                key("storage", "syncs_in_flight")(),
                format!("must be 1..={MAX_SYNCS_IN_FLIGHT}, got {syncs_in_flight}"),
            ));
        }
        let memtable_kib = storage.memtable_kib.unwrap_or(DEFAULT_MEMTABLE_KIB);
        if !(64..=4 << 20).contains(&memtable_kib) {
            return Err(invalid(
                key("storage", "memtable_kib")(),
                format!("must be 64..=4194304 (64 KiB to 4 GiB), got {memtable_kib}"),
            ));
        }
        let compaction_trigger_tables = at_least(
            storage.compaction_trigger_tables.unwrap_or(DEFAULT_COMPACTION_TRIGGER_TABLES),
            1,
            key("storage", "compaction_trigger_tables"),
        )?;
        let memtable_backlog_kib = storage.memtable_backlog_kib.unwrap_or(MEMTABLE_BACKLOG_FACTOR * memtable_kib);
        if !(memtable_kib..=64 << 20).contains(&memtable_backlog_kib) {
            return Err(invalid(
                key("storage", "memtable_backlog_kib")(),
                format!("must be memtable_kib ({memtable_kib}) to 67108864 (64 GiB), got {memtable_backlog_kib}"),
            ));
        }
        let level1_kib = storage.level1_kib.unwrap_or(DEFAULT_LEVEL1_MEMTABLES * memtable_kib as u64);
        if !(64..=1 << 30).contains(&level1_kib) {
            return Err(invalid(
                key("storage", "level1_kib")(),
                format!("must be 64..=1073741824 (64 KiB to 1 TiB), got {level1_kib}"),
            ));
        }
        let checkpoint_wal_mib = storage.checkpoint_wal_mib.unwrap_or(DEFAULT_CHECKPOINT_WAL_MIB);
        if checkpoint_wal_mib > 1 << 30 {
            return Err(invalid(
                key("storage", "checkpoint_wal_mib")(),
                format!("must be 0 (off) to 1073741824, got {checkpoint_wal_mib}"),
            ));
        }
        let checkpoint_interval_secs = storage.checkpoint_interval_secs.unwrap_or(DEFAULT_CHECKPOINT_INTERVAL_SECS);
        if checkpoint_interval_secs > 365 * 86_400 {
            return Err(invalid(
                key("storage", "checkpoint_interval_secs")(),
                format!("must be 0 (off) to 31536000 (a year), got {checkpoint_interval_secs}"),
            ));
        }
        if storage.wal_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(invalid(
                key("storage", "wal_dir")(),
                "must name a directory (leave it out for the storage directory)".into(),
            ));
        }
        let storage_config = StorageConfig {
            dir: storage.dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE_DIR)),
            wal_dir: storage.wal_dir,
            sync: storage.sync.map_or(SyncMode::Durable, SyncMode::from),
            segment_bytes,
            group_commit_max_records,
            group_commit_max_bytes,
            syncs_in_flight,
            memtable_bytes: memtable_kib << 10,
            compaction_trigger_tables,
            memtable_backlog_bytes: memtable_backlog_kib << 10,
            level1_bytes: level1_kib << 10,
            checkpoint_wal_bytes: checkpoint_wal_mib * MIB,
            checkpoint_interval_secs,
        };

        let engine = self.engine;
        let default_engine = EngineConfig::default();
        let engine = EngineConfig {
            book_capacity: engine.book_capacity.unwrap_or(default_engine.book_capacity),
            live_order_capacity: engine.live_order_capacity.unwrap_or(default_engine.live_order_capacity),
            kline_capacity: engine.kline_capacity.unwrap_or(default_engine.kline_capacity),
            tick_capacity: engine.tick_capacity.unwrap_or(default_engine.tick_capacity),
        };

        let journal = self.journal;
        let default_journal = JournalLimits::default();
        let journal = JournalLimits {
            orders_per_account: at_least(
                journal.orders_per_account.unwrap_or(default_journal.orders_per_account),
                1,
                key("journal", "orders_per_account"),
            )?,
            trades_per_account: at_least(
                journal.trades_per_account.unwrap_or(default_journal.trades_per_account),
                1,
                key("journal", "trades_per_account"),
            )?,
            trades_per_instrument: at_least(
                journal.trades_per_instrument.unwrap_or(default_journal.trades_per_instrument),
                1,
                key("journal", "trades_per_instrument"),
            )?,
        };

        let auth = self.auth;
        let token_ttl_secs = auth.token_ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS);
        if !(1..=365 * 86_400).contains(&token_ttl_secs) {
            return Err(invalid(
                key("auth", "token_ttl_secs")(),
                format!("must be 1..=31536000 (a year), got {token_ttl_secs}"),
            ));
        }
        let admin_user = auth.admin_user.as_deref().unwrap_or(DEFAULT_ADMIN_USER);
        let admin_user = crate::domain::name::AccountId::new(admin_user)
            .ok_or_else(|| invalid(key("auth", "admin_user")(), "must be 1..=31 bytes".into()))?;
        if let Some(password) = &auth.admin_password {
            super::credentials::check_password(password)
                .map_err(|e| invalid(key("auth", "admin_password")(), format!("is not usable: {e}")))?;
        }
        let mut users: Vec<ConfiguredUser> = Vec::with_capacity(auth.users.len());
        for (i, entry) in auth.users.into_iter().enumerate() {
            let setting = || format!("{}: [[auth.users]] #{} name = {:?}", path.display(), i + 1, entry.name);
            let user_id = crate::domain::name::AccountId::new(&entry.name)
                .ok_or_else(|| invalid(setting(), "name must be 1..=31 bytes".into()))?;
            if user_id == admin_user || users.iter().any(|u| u.user_id == user_id) {
                return Err(invalid(setting(), "is named twice (admin_user counts too)".into()));
            }
            super::credentials::check_password(&entry.password)
                .map_err(|e| invalid(setting(), format!("password is not usable: {e}")))?;
            users.push(ConfiguredUser { user_id, password: Secret(entry.password), admin: entry.admin });
        }
        let auth = AuthConfig {
            enabled: auth.enabled.unwrap_or(true),
            token_ttl_secs,
            admin_user,
            admin_password: auth.admin_password.map(Secret),
            users,
        };

        let config = ServerConfig {
            http: http.listen.unwrap_or(defaults.http),
            ws: self.websocket.listen.unwrap_or(defaults.ws),
            shards,
            instruments_path: server.instruments.unwrap_or(defaults.instruments_path),
            trading_day,
            storage: Some(storage_config),
            http_limits,
            max_connections_per_shard,
            max_requests_per_sec: http.max_requests_per_sec.unwrap_or(DEFAULT_MAX_REQUESTS_PER_SEC),
            max_connections_per_user: http.max_connections_per_user.unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_USER),
            ws_limits,
            engine,
            journal,
            auth,
            queue_depth,
            spin_before_park_us,
        };
        check_listen(config.http, config.ws)?;
        Ok(Draft { config, storage_enabled: storage.enabled.unwrap_or(true) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        let mut argv = vec!["qaexchange-server"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("valid command line")
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    fn shipped_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH)
    }

    fn write_config(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut file, text.as_bytes()).expect("write temp file");
        file
    }

    fn err(text: &str) -> String {
        ServerConfig::from_toml_str(text).expect_err("config must be refused").to_string()
    }

    #[test]
    fn defaults_without_a_file() {
        let missing = tempfile::tempdir().expect("temp dir");
        let config = ServerConfig::resolve_with_default(&cli(&[]), &missing.path().join("exchange.toml"))
            .expect("defaults are valid");
        assert_eq!(config, ServerConfig::default());
        assert_eq!(config.http, addr("127.0.0.1:8080"));
        assert_eq!(config.ws, addr("127.0.0.1:8081"));
        assert!(config.shards >= 1 && config.shards <= MAX_SHARDS);
        assert_eq!(config.instruments_path, PathBuf::from("config/instruments.toml"));
        assert_eq!(config.trading_day, 20250102);
        let storage = config.storage.expect("storage on by default");
        assert_eq!(storage.dir, PathBuf::from("./data"));
        assert_eq!(storage.sync, SyncMode::Durable);
        assert_eq!(storage.segment_bytes, 64 << 20);
        assert_eq!(storage.group_commit_max_records, 4096);
        assert_eq!(storage.group_commit_max_bytes, 1 << 20);
        assert_eq!(config.http_limits, Limits::default());
        assert_eq!(config.max_connections_per_shard, 10_000);
        assert_eq!(config.engine, EngineConfig::default());
        assert_eq!(config.journal, JournalLimits::default());
        assert_eq!(config.queue_depth, 1024);
        assert_eq!(config.ws_limits.max_deliveries_per_sec, 10_000);
        let unbounded =
            ServerConfig::from_toml_str("[websocket]\nmax_deliveries_per_sec = 0\n").expect("0 is no bound");
        assert_eq!(unbounded.ws_limits.max_deliveries_per_sec, 0);
        let negative = err("[websocket]\nmax_deliveries_per_sec = -1\n");
        assert!(negative.contains(":2:") && negative.contains("[websocket]"), "{negative}");
        // An empty file is the defaults too.
        assert_eq!(ServerConfig::from_toml_str("").expect("empty file"), ServerConfig::default());
    }

    #[test]
    fn shipped_file_parses_to_the_defaults() {
        let text = std::fs::read_to_string(shipped_path()).expect("config/exchange.toml is shipped");
        assert_eq!(ServerConfig::from_toml_str(&text).expect("shipped config is valid"), ServerConfig::default());
        let path = shipped_path();
        let path = path.to_str().expect("utf-8 path");
        let config = ServerConfig::resolve(&cli(&["--config", path])).expect("shipped config via --config");
        assert_eq!(config, ServerConfig::default());
    }

    #[test]
    fn flags_override_the_file() {
        let file = write_config(
            r#"
            [server]
            shards = 2
            trading_day = 20240102
            instruments = "a.toml"
            [http]
            listen = "0.0.0.0:9000"
            [websocket]
            listen = "0.0.0.0:9001"
            [storage]
            dir = "/var/lib/qa"
            sync = "durable"
            segment_mib = 16
            "#,
        );
        let path = file.path().to_str().expect("utf-8 path");
        let from_file = ServerConfig::resolve(&cli(&["--config", path])).expect("file only");
        assert_eq!(from_file.shards, 2);
        assert_eq!(from_file.trading_day, 20240102);
        assert_eq!(from_file.http, addr("0.0.0.0:9000"));
        assert_eq!(from_file.storage.as_ref().map(|s| s.dir.clone()), Some(PathBuf::from("/var/lib/qa")));

        let config = ServerConfig::resolve(&cli(&[
            "--config",
            path,
            "--http",
            "127.0.0.1:7000",
            "--ws",
            "127.0.0.1:7001",
            "--shards",
            "3",
            "--trading-day",
            "20250303",
            "--instruments",
            "b.toml",
            "--storage",
            "/tmp/qa",
            "--sync",
            "none",
        ]))
        .expect("flags over file");
        assert_eq!(config.http, addr("127.0.0.1:7000"));
        assert_eq!(config.ws, addr("127.0.0.1:7001"));
        assert_eq!(config.shards, 3);
        assert_eq!(config.trading_day, 20250303);
        assert_eq!(config.instruments_path, PathBuf::from("b.toml"));
        let storage = config.storage.expect("storage on");
        assert_eq!(storage.dir, PathBuf::from("/tmp/qa"));
        assert_eq!(storage.sync, SyncMode::None);
        assert_eq!(storage.segment_bytes, 16 << 20, "keys without a flag keep the file's value");
    }

    #[test]
    fn storage_history_and_checkpoint_keys_are_read_and_bounded() {
        let text = "[storage]\nmemtable_kib = 128\ncompaction_trigger_tables = 3\ncheckpoint_wal_mib = 0\n\
                    checkpoint_interval_secs = 30\nsyncs_in_flight = 5\nlevel1_kib = 512\n";
        let storage = ServerConfig::from_toml_str(text).expect("valid").storage.expect("storage on");
        assert_eq!(storage.syncs_in_flight, 5);
        assert_eq!(StorageConfig::default().syncs_in_flight, DEFAULT_SYNCS_IN_FLIGHT);
        assert_eq!(storage.memtable_bytes, 128 << 10);
        assert_eq!(storage.compaction_trigger_tables, 3);
        assert_eq!((storage.level1_bytes, StorageConfig::default().level1_bytes), (512 << 10, 256 << 20));
        let derived =
            ServerConfig::from_toml_str("[storage]\nmemtable_kib = 1024\n").expect("valid").storage.expect("on");
        assert_eq!(derived.level1_bytes, 4 << 20, "four memtables unless set");
        assert_eq!(derived.memtable_backlog_bytes, 4 << 20, "four memtables unless set");
        let set = ServerConfig::from_toml_str("[storage]\nmemtable_kib = 1024\nmemtable_backlog_kib = 262144\n");
        assert_eq!(set.expect("valid").storage.expect("on").memtable_backlog_bytes, 256 << 20);
        assert_eq!((storage.checkpoint_wal_bytes, storage.checkpoint_interval_secs), (0, 30));
        let defaults = StorageConfig::default();
        assert_eq!((defaults.checkpoint_wal_bytes, defaults.checkpoint_interval_secs), (512 << 20, 600));
        for (bad, needle) in [
            ("memtable_kib = 63", "[storage] memtable_kib"),
            ("compaction_trigger_tables = 0", "[storage] compaction_trigger_tables"),
            ("level1_kib = 63", "[storage] level1_kib"),
            ("memtable_backlog_kib = 65535", "[storage] memtable_backlog_kib"),
            ("memtable_backlog_kib = 67108865", "[storage] memtable_backlog_kib"),
            ("level1_kib = 1073741825", "[storage] level1_kib"),
            ("checkpoint_wal_mib = 1073741825", "[storage] checkpoint_wal_mib"),
            ("checkpoint_interval_secs = 31536001", "[storage] checkpoint_interval_secs"),
            ("syncs_in_flight = 0", "[storage] syncs_in_flight"),
            ("syncs_in_flight = 65", "[storage] syncs_in_flight"),
        ] {
            let err = ServerConfig::from_toml_str(&format!("[storage]\n{bad}\n")).expect_err(bad);
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn no_storage() {
        let missing = tempfile::tempdir().expect("temp dir");
        let default_path = missing.path().join("exchange.toml");
        let config = ServerConfig::resolve_with_default(&cli(&["--no-storage"]), &default_path).expect("valid");
        assert_eq!(config.storage, None);
        assert_eq!(ServerConfig::from_toml_str("[storage]\nenabled = false\n").expect("valid").storage, None);

        // --storage turns a file-disabled store back on, keeping the file's other settings.
        let file = write_config("[storage]\nenabled = false\nsync = \"none\"\n");
        let path = file.path().to_str().expect("utf-8 path");
        let config = ServerConfig::resolve(&cli(&["--config", path, "--storage", "d"])).expect("valid");
        let storage = config.storage.expect("storage on");
        assert_eq!((storage.dir, storage.sync), (PathBuf::from("d"), SyncMode::None));

        let message = ServerConfig::resolve(&cli(&["--config", path, "--sync", "durable"]))
            .expect_err("--sync with storage off")
            .to_string();
        assert!(message.starts_with("--sync "), "{message}");
        assert!(Cli::try_parse_from(["qaexchange-server", "--no-storage", "--storage", "d"]).is_err());
        assert!(Cli::try_parse_from(["qaexchange-server", "--no-storage", "--sync", "none"]).is_err());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let message = err("[server]\nshards = 1\nshard = 2\n");
        assert!(message.contains("<config>:3:1: in [server]: unknown field `shard`"), "{message}");
        let message = err("[storage]\nsegment_mb = 8\n");
        assert!(message.contains("in [storage]") && message.contains("`segment_mb`"), "{message}");
        let message = err("[sever]\nshards = 1\n");
        assert!(message.contains("unknown field `sever`") && !message.contains("in ["), "{message}");
        let message = err("[server\n");
        assert!(message.starts_with("<config>:1:") && !message.contains('\n'), "one line: {message}");
        let message = err("[engine]\nbook_capacity = 1\nbook = 2\n");
        assert!(message.contains("in [engine]") && message.contains("`book`"), "{message}");
        let message = err("[journal]\ntrades = 2\n");
        assert!(message.contains("in [journal]") && message.contains("`trades`"), "{message}");

        let file = write_config("[websocket]\nlisten = \"127.0.0.1:1\"\nport = 2\n");
        let path = file.path().to_str().expect("utf-8 path");
        let message = ServerConfig::resolve(&cli(&["--config", path])).expect_err("unknown key").to_string();
        assert!(message.starts_with(&format!("{path}:3:1: in [websocket]: unknown field `port`")), "{message}");
    }

    #[test]
    fn bad_sync_value() {
        let message = err("[storage]\nsync = \"fast\"\n");
        assert!(message.contains("in [storage]") && message.contains("fast"), "{message}");
        assert!(message.contains("durable") && message.contains("none"), "{message}");
        assert!(Cli::try_parse_from(["qaexchange-server", "--sync", "fast"]).is_err());
    }

    #[test]
    fn bad_trading_day() {
        let message = err("[server]\ntrading_day = 20250230\n");
        assert_eq!(message, "<config>: [server] trading_day must be a calendar date as YYYYMMDD, got 20250230");
        let message =
            ServerConfig::resolve(&cli(&["--config", &shipped_path().to_string_lossy(), "--trading-day", "2025"]))
                .expect_err("bad day")
                .to_string();
        assert_eq!(message, "--trading-day must be a calendar date as YYYYMMDD, got 2025");
    }

    #[test]
    fn shards_zero_is_one_per_core_and_bounds_hold() {
        let config = ServerConfig::from_toml_str("[server]\nshards = 0\n").expect("valid");
        assert!(config.shards >= 1 && config.shards <= MAX_SHARDS);
        let config = ServerConfig::resolve(&cli(&["--config", &shipped_path().to_string_lossy(), "--shards", "0"]))
            .expect("valid");
        assert!(config.shards >= 1 && config.shards <= MAX_SHARDS);
        assert!(err("[server]\nshards = 257\n").contains("[server] shards must be 0..=256"));
        let message = ServerConfig::resolve(&cli(&["--config", &shipped_path().to_string_lossy(), "--shards", "300"]))
            .expect_err("too many shards")
            .to_string();
        assert!(message.starts_with("--shards must be 0..=256"), "{message}");
        assert!(err("[server]\nshards = -1\n").contains("in [server]"));
    }

    #[test]
    fn ranges_are_checked() {
        assert!(err("[storage]\nsegment_mib = 0\n").contains("[storage] segment_mib must be 1..=1024, got 0"));
        assert!(err("[storage]\nsegment_mib = 2048\n").contains("segment_mib must be 1..=1024"));
        assert!(err("[storage]\ngroup_commit_max_records = 0\n").contains("must be at least 1"));
        assert!(err("[storage]\nsegment_mib = 1\ngroup_commit_max_bytes = 2000000\n").contains("at most one segment"));
        assert!(err("[http]\nmax_headers = 129\n").contains("[http] max_headers must be 1..=128"));
        assert!(err("[server]\nqueue_depth = 0\n").contains("[server] queue_depth must be at least 1"));
        assert!(
            err("[server]\nspin_before_park_us = 10001\n").contains("[server] spin_before_park_us must be 0..=10000")
        );
        assert!(err("[journal]\norders_per_account = 0\n").contains("[journal] orders_per_account"));
        assert!(err("[http]\nlisten = \"localhost:80\"\n").contains("in [http]"));
        assert!(err("[http]\nlisten = \"0.0.0.0:8081\"\n").contains("must not share a port"));
        let config = ServerConfig::from_toml_str(
            "[http]\nmax_body_bytes = 4096\nmax_headers = 32\n[engine]\ntick_capacity = 7\n[journal]\n\
             trades_per_instrument = 5\n[storage]\nsegment_mib = 1\ngroup_commit_max_bytes = 1048576\n",
        )
        .expect("valid");
        assert_eq!(config.http_limits, Limits { max_body_bytes: 4096, max_headers: 32, ..Limits::default() });
        assert_eq!(config.engine, EngineConfig { tick_capacity: 7, ..EngineConfig::default() });
        assert_eq!(config.journal.trades_per_instrument, 5);
    }

    #[test]
    fn missing_config_flag_file_is_an_error() {
        let missing = tempfile::tempdir().expect("temp dir");
        let path = missing.path().join("nope.toml");
        let error = ServerConfig::resolve(&cli(&["--config", &path.to_string_lossy()])).expect_err("missing file");
        assert!(matches!(error, ConfigError::Read { .. }));
        assert!(error.to_string().starts_with(&format!("{}: cannot read", path.display())));
    }

    #[test]
    fn auth_section_and_flag() {
        let config = ServerConfig::from_toml_str(
            "[auth]\ntoken_ttl_secs = 60\nadmin_user = \"root\"\nadmin_password = \"hunter2\"\n",
        )
        .unwrap();
        assert!(config.auth.enabled);
        assert_eq!(config.auth.token_ttl_secs, 60);
        assert_eq!(config.auth.admin_user.as_str(), "root");
        assert_eq!(config.auth.admin_password, Some(Secret("hunter2".into())));
        // The password never shows in a debug print of the config.
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(err("[auth]\ntoken_ttl_secs = 0\n").contains("[auth] token_ttl_secs must be 1..=31536000"));
        assert!(err("[auth]\nadmin_user = \"\"\n").contains("[auth] admin_user must be 1..=31 bytes"));
        assert!(err("[auth]\nadmin_password = \"\"\n").contains("[auth] admin_password is not usable"));
        assert!(err("[auth]\nroles = 1\n").contains("roles"));
        // [[auth.users]]: named once (the admin too), usable passwords, known keys only.
        let users = ServerConfig::from_toml_str(
            "[[auth.users]]\nname = \"u1\"\npassword = \"pw-1\"\n[[auth.users]]\nname = \"u2\"\npassword = \"pw-2\"\nadmin = true\n",
        )
        .unwrap()
        .auth
        .users;
        assert_eq!(
            users.iter().map(|u| (u.user_id.as_str(), u.admin)).collect::<Vec<_>>(),
            [("u1", false), ("u2", true)]
        );
        assert!(!format!("{users:?}").contains("pw-1"));
        let twice =
            "[[auth.users]]\nname = \"u1\"\npassword = \"a\"\n[[auth.users]]\nname = \"u1\"\npassword = \"b\"\n";
        assert!(err(twice).contains("[[auth.users]] #2 name = \"u1\" is named twice"), "{}", err(twice));
        assert!(err("[[auth.users]]\nname = \"admin\"\npassword = \"a\"\n").contains("is named twice"));
        assert!(err("[[auth.users]]\nname = \"u1\"\npassword = \"\"\n").contains("password is not usable"));
        assert!(err("[[auth.users]]\nname = \"\"\npassword = \"a\"\n").contains("name must be 1..=31 bytes"));
        assert!(err("[[auth.users]]\nname = \"u1\"\npassword = \"a\"\nrole = \"x\"\n").contains("role"));
        let missing = tempfile::tempdir().expect("temp dir");
        let default_path = missing.path().join("exchange.toml");
        assert!(ServerConfig::resolve_with_default(&cli(&[]), &default_path).unwrap().auth.enabled);
        assert!(!ServerConfig::resolve_with_default(&cli(&["--no-auth"]), &default_path).unwrap().auth.enabled);
    }

    #[test]
    fn help_renders() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--config",
            "--http",
            "--ws",
            "--storage",
            "--no-storage",
            "--shards",
            "--sync",
            "--trading-day",
            "--no-auth",
        ] {
            assert!(help.contains(flag), "{flag} missing from help");
        }
    }
}
