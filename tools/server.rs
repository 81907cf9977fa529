//! qaexchange-server: the exchange over HTTP. `cargo run --release --bin qaexchange-server`
//! serves the instruments of config/instruments.toml on 127.0.0.1:8080 with its WAL under
//! ./data (config/exchange.toml; flags override it, see `--help`).
//!
//! Prints one line `qaexchange-server ready http=ADDR shards=N recovered_records=N ...` on
//! stdout once it accepts requests (tests wait for it). SIGINT or SIGTERM: stop accepting,
//! finish the requests in hand, sync the WAL, exit 0.

use clap::Parser;
use qaexchange::server::config::{Cli, ServerConfig};
use qaexchange::server::runtime;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

/// jemalloc, not glibc's malloc: glibc grows a thread's heap one page at a time with
/// `mprotect`, which needs the address-space lock exclusively, so a shard thread that
/// allocates waited for the history jobs' table `mmap`s and `munmap`s (1–3 ms stalls of the
/// order flow; docs/PERFORMANCE.md "jemalloc for the server"). jemalloc maps memory in large
/// extents and keeps them.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // glommio's probe of iopoll support logs an ERROR on virtual disks; it is harmless.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,glommio=warn,glommio::sys=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = match ServerConfig::resolve(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("qaexchange-server: {e}");
            return ExitCode::from(2);
        }
    };
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("qaexchange-server: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let storage = match &config.storage {
        Some(s) => format!("{} (sync {:?})", s.dir.display(), s.sync),
        None => "off".to_string(),
    };
    let shards = config.shards;
    let server = match runtime::start(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("qaexchange-server: {e}");
            return ExitCode::from(1);
        }
    };
    let r = &server.recovered;
    let torn = r.torn_tail.as_deref().unwrap_or("none");
    // Per shard, the WAL sequence of the checkpoint it started from (0: none).
    let checkpoints = r.checkpoints.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    println!(
        "qaexchange-server ready http={} ws={} shards={shards} storage={storage} trading_day={} recovered_records={} \
         recovered_bytes={} replay_ms={} redelivered={} checkpoints={} torn_tail={torn}",
        server.http,
        server.ws,
        r.trading_day,
        r.records,
        r.bytes,
        r.replay_ms,
        r.redelivered,
        if checkpoints.is_empty() { "none" } else { &checkpoints }
    );
    let _ = std::io::stdout().flush();
    let stop = server.stop_flag();
    let handle = signals.handle();
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!("signal {signal}: shutting down");
            stop.store(true, Ordering::Relaxed);
        }
    });
    let result = server.wait();
    handle.close();
    match result {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qaexchange-server: {e}");
            ExitCode::from(1)
        }
    }
}
