//! Start-up recovery: replays the engine shard's WAL through a fresh service. Synchronous and
//! free of glommio, so the recovery benchmark measures exactly what start-up runs.

use super::journal::JournalLimits;
use super::service::Service;
use super::wal_record::{decode, instruments_fingerprint, WalRecord, WAL_FORMAT};
use crate::domain::engine::EngineConfig;
use crate::domain::instrument::Instrument;
use crate::storage::wal::{recover, ResumePoint};
use std::path::Path;

/// What start-up found in the WAL.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub records: u64,
    pub bytes: u64,
    pub segments: usize,
    /// "file at offset N: cut a torn tail of M bytes", when one was cut.
    pub torn_tail: Option<String>,
    pub trading_day: u32,
    pub replay_ms: u128,
}

/// The service rebuilt from a WAL, and where the writer resumes.
pub struct Rebuilt {
    /// None when the log holds no records yet (a new venue: the caller writes the genesis).
    pub service: Option<Service>,
    pub resume: ResumePoint,
    pub recovered: Recovered,
}

/// Replays every durable record of `dir`. The log must begin with a genesis record written
/// with these instruments; any record that does not decode stops recovery with its sequence.
/// Errors mention `<instruments>` where the caller's instruments file belongs.
pub fn rebuild(
    dir: &Path,
    instruments: &[Instrument],
    engine: EngineConfig,
    journal: JournalLimits,
) -> Result<Rebuilt, String> {
    let fingerprint = instruments_fingerprint(instruments);
    let began = std::time::Instant::now();
    let mut service: Option<Service> = None;
    let mut failure: Option<String> = None;
    let (resume, report) = recover(dir, 1, |sequence, payload| {
        if failure.is_some() {
            return;
        }
        match (decode(payload), service.as_mut()) {
            (Ok(WalRecord::Genesis { format, trading_day, instruments_fingerprint }), None) => {
                if format != WAL_FORMAT {
                    failure = Some(format!("WAL format {format}, this server writes {WAL_FORMAT}"));
                } else if instruments_fingerprint != fingerprint {
                    failure = Some(
                        "<instruments>: the instruments differ from the ones this WAL was written with; \
                         restore the original instruments file"
                            .to_string(),
                    );
                } else {
                    service = Some(Service::new(instruments.to_vec(), trading_day, engine, journal));
                }
            }
            (Ok(WalRecord::Command(command)), Some(service)) => service.replay(&command),
            (Ok(_), _) => failure = Some(format!("record {sequence}: out of place (genesis must come first, once)")),
            (Err(e), _) => failure = Some(format!("record {sequence}: {e}")),
        }
    })
    .map_err(|e| format!("WAL recovery stopped: {e}"))?;
    if let Some(failure) = failure {
        return Err(format!("WAL recovery stopped in {}: {failure}", dir.display()));
    }
    let torn_tail = report.torn_tail.as_ref().map(|(path, offset, dropped)| {
        format!("{} at offset {offset}: cut a torn tail of {dropped} bytes", path.display())
    });
    let recovered = Recovered {
        records: report.records,
        bytes: report.bytes,
        segments: report.segments,
        torn_tail,
        trading_day: service.as_ref().map(|s| s.engine().trading_day()).unwrap_or_default(),
        replay_ms: began.elapsed().as_millis(),
    };
    Ok(Rebuilt { service, resume, recovered })
}
