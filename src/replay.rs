//! Offline replay: a JSON Lines command log in, JSON Lines events out, then one line with the
//! final state. Deterministic: the same input gives byte-identical output.

use crate::domain::command::Command;
use crate::domain::engine::{Engine, EngineConfig};
use crate::domain::event::Event;
use crate::domain::instrument::Instrument;
use serde::Serialize;
use std::io::{BufRead, Write};

/// Counts of what a replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub commands: u64,
    pub events: u64,
    pub input_errors: u64,
}

/// A line of the input that is not a valid command; reported in the output stream, skipped.
#[derive(Serialize)]
struct InputError<'a> {
    input_error: &'a str,
    line: u64,
}

#[derive(Serialize)]
struct FinalState<'a> {
    state: &'a crate::domain::engine::EngineState,
}

/// Replays `input` through a fresh engine and writes events and the final state to `output`.
/// Blank lines and lines starting with `#` are skipped.
pub fn replay(
    input: impl BufRead,
    mut output: impl Write,
    instruments: Vec<Instrument>,
    trading_day: u32,
) -> std::io::Result<ReplaySummary> {
    let mut engine = Engine::new(instruments, trading_day, EngineConfig::default());
    let mut summary = ReplaySummary::default();
    let mut events: Vec<Event> = Vec::with_capacity(64);
    for (index, line) in input.lines().enumerate() {
        let line = line?;
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let command: Command = match serde_json::from_str(text) {
            Ok(command) => command,
            Err(error) => {
                summary.input_errors += 1;
                let message = error.to_string();
                serde_json::to_writer(&mut output, &InputError { input_error: &message, line: index as u64 + 1 })?;
                output.write_all(b"\n")?;
                continue;
            }
        };
        summary.commands += 1;
        events.clear();
        engine.execute(&command, &mut events);
        for event in &events {
            serde_json::to_writer(&mut output, event)?;
            output.write_all(b"\n")?;
        }
        summary.events += events.len() as u64;
    }
    serde_json::to_writer(&mut output, &FinalState { state: &engine.state() })?;
    output.write_all(b"\n")?;
    output.flush()?;
    Ok(summary)
}
