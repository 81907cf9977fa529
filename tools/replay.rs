//! qaexchange-replay: feeds a JSON Lines command log through the engine offline.
//!
//! Usage: qaexchange-replay [--instruments FILE] [--trading-day YYYYMMDD] [LOG | -]
//! Reads stdin when LOG is `-` or absent. Events go to stdout, one JSON object per line, then a
//! final `{"state": ...}` line. Exit status 1 if any input line was not a valid command.

use qaexchange::domain::instrument::parse_instruments;
use qaexchange::replay::replay;
use std::io::{BufReader, BufWriter};
use std::process::ExitCode;

const USAGE: &str = "usage: qaexchange-replay [--instruments FILE] [--trading-day YYYYMMDD] [LOG | -]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(message) => {
            eprintln!("qaexchange-replay: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut instruments_path = String::from("config/instruments.toml");
    let mut trading_day: u32 = 20250102;
    let mut log: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--instruments" => instruments_path = args.next().ok_or("--instruments needs a file")?,
            "--trading-day" => {
                let text = args.next().ok_or("--trading-day needs YYYYMMDD")?;
                trading_day = text.parse().map_err(|_| format!("bad trading day {text:?}"))?;
                if !qaexchange::domain::engine::is_valid_day(trading_day) {
                    return Err(format!("bad trading day {text:?}"));
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            _ if log.is_none() => log = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let toml = std::fs::read_to_string(&instruments_path).map_err(|e| format!("{instruments_path}: {e}"))?;
    let instruments = parse_instruments(&toml).map_err(|e| format!("{instruments_path}: {e}"))?;
    let stdout = std::io::stdout();
    let output = BufWriter::new(stdout.lock());
    let summary = match log.as_deref() {
        None | Some("-") => replay(std::io::stdin().lock(), output, instruments, trading_day),
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
            replay(BufReader::new(file), output, instruments, trading_day)
        }
    }
    .map_err(|e| format!("i/o error: {e}"))?;
    eprintln!("replayed {} commands, {} events, {} bad lines", summary.commands, summary.events, summary.input_errors);
    Ok(if summary.input_errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
