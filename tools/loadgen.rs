//! qaexchange-loadgen: drives a running server like many traders would and reports latency
//! percentiles, throughput and refusals; writes one `.hgrm` per measured path.
//!
//! Open loop at a constant rate (`--rate N`, latency measured from each request's intended
//! send time) or closed loop (`--rate 0`, as fast as answers come), one request at a time per
//! connection or up to `--pipeline D` outstanding (HTTP/1.1 pipelining). It opens its own
//! accounts and funds them. `--raw` targets the raw responder (`qaexchange-raw-responder`): no
//! set-up, a made-up instrument.

use clap::Parser;
use qaexchange::loadgen::mix::{Market, MixWeights, Path};
use qaexchange::loadgen::{run, setup, LoadConfig};
use qaexchange::metrics::hgrm::{summary_us, to_hgrm};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "qaexchange-loadgen", about = "Load generator for qaexchange-server (HTTP)")]
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
    /// `exchange-core` (GTC/IOC inserts, cancels, moves) or `submit` (inserts only).
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
    /// Requests outstanding per connection (HTTP/1.1 pipelining). 1 = one at a time: send,
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
    if !cli.target.ip().is_loopback() {
        return Err(format!("{}: this tool only sends to 127.0.0.1 / ::1", cli.target));
    }
    let weights = match cli.mix.as_str() {
        "exchange-core" => MixWeights::default(),
        "submit" => MixWeights::submit_only(),
        other => return Err(format!("unknown --mix {other} (exchange-core or submit)")),
    };
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() % 0xff_ffff
    );
    let markets = if cli.raw {
        vec![Market::new("SR501", 1.0, 4500.0, 5500.0, 5000.0)]
    } else {
        let markets = setup::markets(cli.target, &cli.instruments)?;
        // 100 billion each: no order of a run is refused for funds.
        setup::open_accounts(cli.target, &run_id, cli.connections, 100_000_000_000)?;
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
    };
    let mode = if config.rate > 0.0 { format!("open loop at {} req/s", config.rate) } else { "closed loop".into() };
    eprintln!(
        "loadgen {}: {} connections, pipeline {}, {mode}, {:?} warm-up + {:?} measured, instruments {:?}",
        cli.label,
        config.connections,
        config.pipeline,
        config.warmup,
        config.duration,
        markets.iter().map(|m| m.instrument_id.as_str()).collect::<Vec<_>>()
    );
    let progress = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let printer = {
        let (progress, finished) = (progress.clone(), finished.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            let mut second = 0;
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                second += 1;
                if second % 4 == 0 {
                    let now = progress.load(Ordering::Relaxed);
                    eprintln!("  {:>4} s: {:>9} answers/s", second / 4, now - last);
                    last = now;
                }
            }
        })
    };
    let report = run(&config, &markets, progress);
    finished.store(true, Ordering::Relaxed);
    let _ = printer.join();
    let report = report?;

    println!("loadgen {}: {mode}, {} connections, pipeline {}", cli.label, config.connections, config.pipeline);
    println!(
        "  throughput: {:.0} answers/s ({} of {} sent in {:?})",
        report.throughput(),
        report.completed,
        report.sent,
        report.measured
    );
    println!("  all:    {}", summary_us(&report.all));
    for path in Path::ALL {
        let h = &report.per_path[&path];
        if !h.is_empty() {
            println!("  {:<7} {}", format!("{}:", path.name()), summary_us(h));
        }
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
    std::fs::create_dir_all(&cli.out).map_err(|e| format!("{}: {e}", cli.out.display()))?;
    let mut files = vec![(format!("{}-all.hgrm", cli.label), &report.all)];
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
    println!(
        "RESULT label={} rate={} connections={} pipeline={} throughput={:.0} completed={} sent={} p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} refused={} broken={}",
        cli.label,
        config.rate,
        config.connections,
        config.pipeline,
        report.throughput(),
        report.completed,
        report.sent,
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        report.all.max() as f64 / 1000.0,
        report.refused.values().sum::<u64>(),
        report.broken_connections
    );
    Ok(())
}
