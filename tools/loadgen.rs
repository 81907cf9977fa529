//! qaexchange-loadgen: drives a running server like many traders would and reports latency
//! percentiles, throughput and refusals; writes one `.hgrm` per measured path.
//!
//! Open loop at a constant rate (`--rate N`, latency measured from each request's intended
//! send time) or closed loop (`--rate 0`, as fast as answers come), one request at a time per
//! connection or up to `--pipeline D` outstanding (HTTP/1.1 pipelining). It opens its own
//! accounts and funds them. `--raw` targets the raw responder (`qaexchange-raw-responder`): no
//! set-up, a made-up instrument.
//!
//! `--diff-sessions N --diff-target WS_ADDR --diff-instrument EXCHANGE.id` adds N DIFF
//! WebSocket sessions that subscribe to that quote and peek in a loop while the HTTP flow
//! trades: it reports the quote deliveries per second over all sessions and the trade-to-client
//! latency of each (read time minus the quote's `datetime`), written as `<label>-diff.hgrm`.
//!
//! `--diff-orders --diff-target WS_ADDR` sends the order flow over DIFF trading sessions instead
//! of HTTP (one per `--connections`, each logged in to its own account): `insert_order` and
//! `cancel_order`, each timed to the `rtn_data` that shows its order (paths `diff_insert` and
//! `diff_cancel`; `src/loadgen/diff_orders.rs`).

use clap::Parser;
use qaexchange::loadgen::diff::{self, DiffConfig};
use qaexchange::loadgen::diff_orders::{self, DiffOrderConfig};
use qaexchange::loadgen::mix::{Market, MixWeights, Path};
use qaexchange::loadgen::{run, setup, stall, LoadConfig};
use qaexchange::metrics::hgrm::{summary_us, to_hgrm};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "qaexchange-loadgen", about = "Load generator for qaexchange-server (HTTP and DIFF quotes)")]
struct Cli {
    /// The server's HTTP address (127.0.0.1 only for tests and benchmarks).
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: SocketAddr,
    /// Keep-alive connections, one account each.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Requests per second over all connections; 0 = closed loop (as fast as answers come).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds sent before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// glommio executors (threads) for the connections.
    #[arg(long, default_value_t = 1)]
    executors: usize,
    /// Pin executors to cores from this one on (default: unpinned).
    #[arg(long)]
    pin_from: Option<usize>,
    /// `exchange-core` (GTC/IOC inserts, cancels, moves), `submit` (inserts only) or
    /// `no-modify` (exchange-core with every move sent as a cancel: what DIFF sends).
    #[arg(long, default_value = "exchange-core")]
    mix: String,
    /// Instruments to trade (ids, comma-separated; default: every listed one).
    #[arg(long, value_delimiter = ',')]
    instruments: Vec<String>,
    /// Directory for the .hgrm files.
    #[arg(long, default_value = "target/loadgen")]
    out: std::path::PathBuf,
    /// Name of this run in file names and the result line.
    #[arg(long, default_value = "run")]
    label: String,
    /// Requests outstanding per connection (HTTP/1.1 pipelining; with --diff-orders, orders
    /// outstanding per DIFF session). 1 = one at a time: send,
    /// wait for the answer, send the next. D > 1: up to D sent before their answers come (those
    /// due together go in one write); closed loop keeps D outstanding and measures each from its
    /// send, open loop still from its intended send time. The flow learns of an order only from
    /// its answer, so with D > 1 more cancels and moves are refused: the order is gone (3001), a
    /// move of it is in flight (3003), or it already moved to that price (3002).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pipeline: u32,
    /// Target is the raw responder: no instruments query, no accounts.
    #[arg(long)]
    raw: bool,
    /// DIFF WebSocket sessions that follow `--diff-instrument`'s quote during the run
    /// (subscribe_quote, then peek_message -> rtn_data in a loop); 0 = none.
    #[arg(long, default_value_t = 0)]
    diff_sessions: usize,
    /// The server's WebSocket (DIFF) address, the `ws=` of its ready line.
    #[arg(long)]
    diff_target: Option<SocketAddr>,
    /// Send the order flow over DIFF WebSocket sessions instead of HTTP: one session per
    /// connection, logged in (req_login) to its own account, sending insert_order (GFD or IOC)
    /// and cancel_order (moves of the mix are sent as cancels) with a peek_message always
    /// outstanding. Each is timed to the first rtn_data showing its order (inserts) or showing
    /// it FINISHED (cancels), or to the ERROR notify refusing it. Needs --diff-target.
    #[arg(long)]
    diff_orders: bool,
    /// The password the --diff-orders accounts are opened with and log in with.
    #[arg(long, default_value = "loadgen-pw")]
    diff_password: String,
    /// The quote the DIFF sessions follow, as DIFF names it: EXCHANGE.id (e.g. SHFE.cu2501).
    /// Give `--instruments` the same id so the order flow moves it.
    #[arg(long)]
    diff_instrument: Option<String>,
    /// glommio executors (threads) for the DIFF sessions.
    #[arg(long, default_value_t = 1)]
    diff_executors: usize,
    /// Pin every DIFF executor to this core (default: unpinned).
    #[arg(long)]
    diff_pin: Option<usize>,
    /// Also measure the CPU time (user + system) this process (the server) uses in the
    /// measured window, from /proc/PID/stat, and report it beside the generator's own.
    #[arg(long)]
    cpu_pid: Option<u32>,
    /// A server with auth on: register USER (if new), log in, and send its bearer token with
    /// every request; the run's accounts are then USER's (HTTP modes only).
    #[arg(long, value_name = "USER:PASSWORD")]
    auth: Option<String>,
    /// Send nothing: spin SECONDS on each of `--stall-cores` at once, reading the clock, and
    /// report how long each core was taken away (`src/loadgen/stall.rs`): the floor below
    /// which no latency percentile on this machine can go.
    #[arg(long, value_name = "SECONDS")]
    stall_probe: Option<f64>,
    /// The cores `--stall-probe` spins on (default: every core).
    #[arg(long, value_delimiter = ',')]
    stall_cores: Vec<usize>,
}

/// `--stall-probe`: one pinned spinning thread per core, all at once; a line per core, and a
/// `STALL` line per core for scripts.
fn run_stall_probe(seconds: f64, cores: &[usize]) -> Result<(), String> {
    if !(0.01..=600.0).contains(&seconds) {
        return Err(format!("--stall-probe {seconds}: give 0.01 to 600 seconds"));
    }
    let cores: Vec<usize> = if cores.is_empty() {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    } else {
        cores.to_vec()
    };
    let length = Duration::from_secs_f64(seconds);
    let mut probes = Vec::new();
    for &core in &cores {
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(core))
            .name(&format!("stall-probe-{core}"))
            .spawn(move || async move { stall::probe(length) })
            .map_err(|e| format!("pinning a probe to core {core}: {e}"))?;
        probes.push((core, handle));
    }
    for (core, handle) in probes {
        let stalls = handle.join().map_err(|e| format!("the probe on core {core}: {e}"))?;
        println!("stall probe core {core}: {}", stalls.summary());
        println!(
            "STALL core={core} seconds={:.2} stalled_pct={:.3} over_half_ms={} over_half_ms_per_s={:.2} longest_us={:.0}",
            stalls.probed_ns as f64 / 1e9,
            100.0 * stalls.stalled_share(),
            stalls.over_half_ms(),
            stalls.over_half_ms_per_s(),
            stalls.longest_ns as f64 / 1e3
        );
    }
    Ok(())
}

/// CPU seconds (user + system) process `pid` used so far, from /proc/PID/stat (`self` for
/// this process); None where that cannot be read.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ, 100 on every Linux architecture this runs on (getconf CLK_TCK).
    Some(ticks as f64 / 100.0)
}

/// The machine's CPU seconds so far from /proc/stat: (busy, of which softirq). Busy is all but
/// idle and iowait; softirq is here mostly loopback TCP delivery (tick accounting also charges
/// it to the process it interrupted, so it overlaps the per-process figures).
fn machine_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line.split_whitespace().filter_map(|t| t.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user.
    let total: u64 = ticks.iter().take(8).sum();
    let busy = total - ticks.get(3)? - ticks.get(4)?;
    Some((busy as f64 / 100.0, *ticks.get(6)? as f64 / 100.0))
}

/// CPU use over the measured window, as CPU seconds over wall seconds (1.0 = one core busy).
#[derive(Clone, Copy, Debug, Default)]
struct CpuUse {
    server: Option<f64>,
    loadgen: Option<f64>,
    /// The whole machine: every process (other work too) and softirq.
    machine: Option<f64>,
    softirq: Option<f64>,
}

/// Samples the CPU time of `pid` and of this process at `start + warmup` (once `start` is set)
/// and `window` later; nothing (default) if `start` is not set before `finished`.
fn sample_cpu(
    pid: Option<u32>,
    start: Arc<OnceLock<Instant>>,
    warmup: Duration,
    window: Duration,
    finished: Arc<AtomicBool>,
) -> std::thread::JoinHandle<CpuUse> {
    std::thread::spawn(move || {
        let from = loop {
            if let Some(start) = start.get() {
                break *start + warmup;
            }
            if finished.load(Ordering::Relaxed) {
                return CpuUse::default();
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        std::thread::sleep(from.saturating_duration_since(Instant::now()));
        let pid = pid.map(|p| p.to_string());
        let sample = || (pid.as_deref().and_then(cpu_seconds), cpu_seconds("self"), machine_seconds(), Instant::now());
        let begin = sample();
        std::thread::sleep(window);
        let end = sample();
        let wall = end.3.duration_since(begin.3).as_secs_f64();
        let cores = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / wall);
        CpuUse {
            server: cores(begin.0, end.0),
            loadgen: cores(begin.1, end.1),
            machine: cores(begin.2.map(|m| m.0), end.2.map(|m| m.0)),
            softirq: cores(begin.2.map(|m| m.1), end.2.map(|m| m.1)),
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_cli(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qaexchange-loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_cli(cli: &Cli) -> Result<(), String> {
    if let Some(seconds) = cli.stall_probe {
        return run_stall_probe(seconds, &cli.stall_cores);
    }
    if !cli.target.ip().is_loopback() {
        return Err(format!("{}: this tool only sends to 127.0.0.1 / ::1", cli.target));
    }
    let weights = match cli.mix.as_str() {
        "exchange-core" => MixWeights::default(),
        "submit" => MixWeights::submit_only(),
        "no-modify" => MixWeights::default().without_modify(),
        other => return Err(format!("unknown --mix {other} (exchange-core, submit or no-modify)")),
    };
    let diff_orders_ws = if cli.diff_orders {
        let target = cli.diff_target.ok_or("--diff-orders needs --diff-target (the server's ws= address)")?;
        if !target.ip().is_loopback() {
            return Err(format!("{target}: this tool only sends to 127.0.0.1 / ::1"));
        }
        if cli.raw || cli.diff_sessions > 0 {
            return Err("--diff-orders goes with neither --raw nor --diff-sessions".into());
        }
        Some(target)
    } else {
        None
    };
    let diff_config = if cli.diff_sessions > 0 {
        let target = cli.diff_target.ok_or("--diff-sessions needs --diff-target (the server's ws= address)")?;
        if !target.ip().is_loopback() {
            return Err(format!("{target}: this tool only sends to 127.0.0.1 / ::1"));
        }
        let symbol = cli.diff_instrument.clone().ok_or("--diff-sessions needs --diff-instrument EXCHANGE.id")?;
        if !symbol.contains('.') || symbol.contains(['"', '\\', ',']) {
            return Err(format!("--diff-instrument {symbol}: expected one EXCHANGE.id, e.g. SHFE.cu2501"));
        }
        Some(DiffConfig {
            target,
            sessions: cli.diff_sessions,
            symbol,
            executors: cli.diff_executors.max(1),
            pin: cli.diff_pin,
            warmup: Duration::from_secs_f64(cli.warmup.max(0.0)),
            duration: Duration::from_secs_f64(cli.duration.max(0.1)),
        })
    } else {
        None
    };
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() % 0xff_ffff
    );
    // A server with auth on: the run's user, registered if new, and its token on every request.
    let token = match &cli.auth {
        Some(credentials) if !cli.raw => {
            let (user, password) =
                credentials.split_once(':').ok_or("--auth takes USER:PASSWORD (the run's user, registered if new)")?;
            Some(setup::login(cli.target, user, password)?)
        }
        _ => None,
    };
    let markets = if cli.raw {
        vec![Market::new("SR501", 1.0, 4500.0, 5500.0, 5000.0)]
    } else {
        let markets = setup::markets(cli.target, &cli.instruments)?;
        // 100 billion each: no order of a run is refused for funds.
        let password = cli.diff_orders.then_some(cli.diff_password.as_str());
        setup::open_accounts(cli.target, &run_id, cli.connections, 100_000_000_000, password, token.as_deref())?;
        markets
    };
    let config = LoadConfig {
        target: cli.target,
        connections: cli.connections.max(1),
        rate: cli.rate.max(0.0),
        warmup: Duration::from_secs_f64(cli.warmup.max(0.0)),
        duration: Duration::from_secs_f64(cli.duration.max(0.1)),
        executors: cli.executors,
        pin_from: cli.pin_from,
        weights,
        pipeline: cli.pipeline as usize,
        run_id,
        token,
    };
    let transport = if diff_orders_ws.is_some() { "DIFF orders, " } else { "" };
    let mode = if config.rate > 0.0 {
        format!("{transport}open loop at {} req/s", config.rate)
    } else {
        format!("{transport}closed loop")
    };
    eprintln!(
        "loadgen {}: {} connections, pipeline {}, {mode}, {:?} warm-up + {:?} measured, instruments {:?}",
        cli.label,
        config.connections,
        config.pipeline,
        config.warmup,
        config.duration,
        markets.iter().map(|m| m.instrument_id.as_str()).collect::<Vec<_>>()
    );
    if let Some(d) = &diff_config {
        eprintln!(
            "loadgen {}: {} DIFF sessions on {} following {} over {} executor(s)",
            cli.label, d.sessions, d.target, d.symbol, d.executors
        );
    }
    let progress = Arc::new(AtomicU64::new(0));
    let deliveries = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let printer = {
        let (progress, deliveries, finished) = (progress.clone(), deliveries.clone(), finished.clone());
        let with_diff = diff_config.is_some();
        std::thread::spawn(move || {
            let (mut last, mut last_deliveries) = (0, 0);
            let mut second = 0;
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                second += 1;
                if second % 4 == 0 {
                    let now = progress.load(Ordering::Relaxed);
                    let delivered = deliveries.load(Ordering::Relaxed);
                    if with_diff {
                        eprintln!(
                            "  {:>4} s: {:>9} answers/s {:>9} deliveries/s",
                            second / 4,
                            now - last,
                            delivered - last_deliveries
                        );
                    } else {
                        eprintln!("  {:>4} s: {:>9} answers/s", second / 4, now - last);
                    }
                    (last, last_deliveries) = (now, delivered);
                }
            }
        })
    };
    // The measured window begins the warm-up after the start: HTTP starts 200 ms after `run`
    // is called (as in `run`), DIFF orders once every session has logged in.
    let started = Arc::new(OnceLock::new());
    if diff_orders_ws.is_none() {
        let _ = started.set(Instant::now() + Duration::from_millis(200));
    }
    let cpu = sample_cpu(cli.cpu_pid, started.clone(), config.warmup, config.duration, finished.clone());
    // The DIFF sessions first: they connect and subscribe while the HTTP flow starts, and
    // their measured window is the HTTP one (both start 200 ms after their spawn).
    let diff_run = diff_config.as_ref().map(|d| diff::spawn(d, deliveries)).transpose();
    let report = match (diff_run, diff_orders_ws) {
        (Ok(diff_run), None) => run(&config, &markets, progress).map(|r| (r, diff_run)),
        (Ok(diff_run), Some(ws)) => {
            let diff_config = DiffOrderConfig {
                load: config.clone(),
                ws,
                password: cli.diff_password.clone(),
                login_timeout: Duration::from_secs(30),
            };
            diff_orders::run(&diff_config, &markets, progress, started.clone()).map(|r| (r, diff_run))
        }
        (Err(e), _) => Err(e),
    };
    let report = report.and_then(|(r, diff_run)| Ok((r, diff_run.map(|d| d.join()).transpose()?)));
    finished.store(true, Ordering::Relaxed);
    let _ = printer.join();
    let (report, diff_report) = report?;
    let cpu = cpu.join().unwrap_or_default();

    println!("loadgen {}: {mode}, {} connections, pipeline {}", cli.label, config.connections, config.pipeline);
    println!(
        "  throughput: {:.0} answers/s ({} of {} sent in {:?}; {:.0}/s answered within it)",
        report.throughput(),
        report.completed,
        report.sent,
        report.measured,
        report.answered_per_s()
    );
    println!("  all:    {}", summary_us(&report.all));
    for path in Path::ALL {
        let h = &report.per_path[&path];
        if !h.is_empty() {
            println!("  {:<7} {}", format!("{}:", path.name()), summary_us(h));
        }
    }
    if !report.send_lag.is_empty() {
        println!("  send lag (the generator's own lateness): {}", summary_us(&report.send_lag));
        println!("  slot wait (for an earlier answer):       {}", summary_us(&report.slot_wait));
    }
    if report.refused.is_empty() {
        println!("  refused: none");
    }
    for ((path, code), n) in &report.refused {
        println!("  refused: {} {} x {n}", path.name(), code);
    }
    if report.broken_connections > 0 {
        println!("  broken connections: {}", report.broken_connections);
    }
    if diff_orders_ws.is_some() {
        println!(
            "  diff orders: {} of {} sessions logged in, {} rtn_data read (whole run), {:.0} bytes each on average",
            report.logged_in,
            config.connections,
            report.rtn_data,
            report.rtn_data_bytes as f64 / report.rtn_data.max(1) as f64
        );
        for (code, n) in &report.other_notifies {
            println!("  diff notifies naming no outstanding order: code {code} x {n}");
        }
    }
    if let Some(d) = &diff_report {
        println!(
            "  diff:   {} sessions ({} connected, {} got the quote, {} broken), {} deliveries, {:.0} deliveries/s, {:.0} bytes each",
            d.sessions,
            d.connected,
            d.with_quote,
            d.broken,
            d.deliveries,
            d.deliveries_per_s(),
            d.bytes_per_delivery()
        );
        println!("  diff trade-to-client: {}", summary_us(&d.latency));
        if d.undated > 0 {
            println!("  diff deliveries without a datetime: {}", d.undated);
        }
    }
    if let Some(server) = cpu.server {
        println!(
            "  cpu:    server {server:.2} cores, loadgen {:.2}, machine {:.2} of {} (softirq {:.2}) (CPU s / wall s in the measured window)",
            cpu.loadgen.unwrap_or(f64::NAN),
            cpu.machine.unwrap_or(f64::NAN),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu.softirq.unwrap_or(f64::NAN)
        );
    }
    std::fs::create_dir_all(&cli.out).map_err(|e| format!("{}: {e}", cli.out.display()))?;
    let mut files = vec![(format!("{}-all.hgrm", cli.label), &report.all)];
    if let Some(d) = &diff_report {
        files.push((format!("{}-diff.hgrm", cli.label), &d.latency));
    }
    for path in Path::ALL {
        if !report.per_path[&path].is_empty() {
            files.push((format!("{}-{}.hgrm", cli.label, path.name()), &report.per_path[&path]));
        }
    }
    for (name, h) in files {
        let file = cli.out.join(name);
        std::fs::write(&file, to_hgrm(h)).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    let us = |q: f64| report.all.value_at_quantile(q) as f64 / 1000.0;
    let diff_fields = match &diff_report {
        None => String::new(),
        Some(d) => {
            let us = |q: f64| d.latency.value_at_quantile(q) as f64 / 1000.0;
            format!(
                " diff_sessions={} diff_connected={} diff_with_quote={} diff_broken={} diff_deliveries={} diff_deliveries_per_s={:.0} diff_bytes_per_delivery={:.0} diff_p50_us={:.1} diff_p90_us={:.1} diff_p99_us={:.1} diff_p999_us={:.1} diff_max_us={:.1}",
                d.sessions,
                d.connected,
                d.with_quote,
                d.broken,
                d.deliveries,
                d.deliveries_per_s(),
                d.bytes_per_delivery(),
                us(0.5),
                us(0.9),
                us(0.99),
                us(0.999),
                d.latency.max() as f64 / 1000.0
            )
        }
    };
    let cpu_fields = match cpu.server {
        Some(server) => format!(
            " server_cores={server:.3} loadgen_cores={:.3} machine_cores={:.3} softirq_cores={:.3}",
            cpu.loadgen.unwrap_or(f64::NAN),
            cpu.machine.unwrap_or(f64::NAN),
            cpu.softirq.unwrap_or(f64::NAN)
        ),
        None => String::new(),
    };
    // Per path: count and percentiles (`submit_p99_us`, `diff_insert_p50_us`, ...).
    let mut path_fields = String::new();
    for path in Path::ALL {
        let h = &report.per_path[&path];
        if !h.is_empty() {
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            let name = path.name();
            path_fields += &format!(
                " {name}_n={} {name}_p50_us={:.1} {name}_p90_us={:.1} {name}_p99_us={:.1} {name}_p999_us={:.1} {name}_max_us={:.1} {name}_refused={}",
                h.len(),
                us(0.5),
                us(0.9),
                us(0.99),
                us(0.999),
                h.max() as f64 / 1000.0,
                report.refused.iter().filter(|((p, _), _)| *p == path).map(|(_, n)| n).sum::<u64>()
            );
        }
    }
    let refused_codes: Vec<String> =
        report.refused.iter().map(|((path, code), n)| format!("{}:{code}:{n}", path.name())).collect();
    let send_lag_fields = if report.send_lag.is_empty() {
        String::new()
    } else {
        let (lag, wait) = (&report.send_lag, &report.slot_wait);
        let us = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        format!(
            " send_lag_p50_us={:.1} send_lag_p99_us={:.1} send_lag_max_us={:.1} slot_wait_p99_us={:.1} slot_wait_max_us={:.1}",
            us(lag, 0.5),
            us(lag, 0.99),
            lag.max() as f64 / 1000.0,
            us(wait, 0.99),
            wait.max() as f64 / 1000.0
        )
    };
    let diff_order_fields = if diff_orders_ws.is_some() {
        format!(
            " diff_logged_in={} rtn_data={} rtn_data_avg_bytes={:.0} other_notifies={}",
            report.logged_in,
            report.rtn_data,
            report.rtn_data_bytes as f64 / report.rtn_data.max(1) as f64,
            report.other_notifies.values().sum::<u64>()
        )
    } else {
        String::new()
    };
    println!(
        "RESULT label={} mode={} rate={} connections={} pipeline={} throughput={:.0} completed={} sent={} answered_per_s={:.0} p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} refused={} refused_codes={} broken={}{send_lag_fields}{path_fields}{diff_order_fields}{diff_fields}{cpu_fields}",
        cli.label,
        if diff_orders_ws.is_some() { "diff-orders" } else if cli.raw { "raw" } else { "http" },
        config.rate,
        config.connections,
        config.pipeline,
        report.throughput(),
        report.completed,
        report.sent,
        report.answered_per_s(),
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        report.all.max() as f64 / 1000.0,
        report.refused.values().sum::<u64>(),
        if refused_codes.is_empty() { "-".to_string() } else { refused_codes.join(",") },
        report.broken_connections
    );
    Ok(())
}
