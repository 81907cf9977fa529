//! Taking a shard's checkpoints while it runs (docs/ARCHITECTURE.md "Checkpoints").
//!
//! The committer decides when one is due (`[storage] checkpoint_wal_mib` of WAL written, or
//! `checkpoint_interval_secs`, since the last one; or `POST /admin/checkpoint`). At the moment
//! it takes a staged group, the engine's state is exactly the state after that group's last
//! record S, so it snapshots the state there, in the same borrow (the shard's only pause:
//! the engine is copied, the journal's bulk shared, `Service::checkpoint_snapshot`), together
//! with the outbox: every message to another shard that the receiver has not made durable yet
//! (sent or about to be). Once the group is durable a task finishes the checkpoint off the
//! shard's critical path:
//! 1. a thread at low priority encodes the snapshot, while
//! 2. the history store flushes through S, so the tables cover every record the checkpoint
//!    covers (a restart re-derives history only past the store's watermark, and replays only
//!    past S: without this the history of records up to S could be lost);
//! 3. a thread at low priority writes the file atomically (`checkpoint::write`), keeping the
//!    newest two;
//! 4. the committer retires the WAL segments wholly before the oldest kept checkpoint (their
//!    files are reused for new segments).
//!
//! Receivers publish how far their WAL holds each sender's messages (`DurableReceived`,
//! atomics shared between the shards' threads, read without messages), so a sender keeps in
//! its outbox only what could still be lost.

use super::checkpoint::{self, CheckpointMeta};
use super::history_store::SharedHistory;
use super::service::{Origin, ServiceSnapshot};
use crate::domain::shard::Outgoing;
use serde::Serialize;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When checkpoints are taken without being asked for (0 turns a trigger off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub every_wal_bytes: u64,
    pub interval: Duration,
}

/// For each (receiver, sender) pair, the last message sequence the receiver's WAL holds
/// durably: written by the receiver's committer after each group, read by the sender.
#[derive(Debug)]
pub struct DurableReceived {
    shards: usize,
    cells: Vec<AtomicU64>,
}

impl DurableReceived {
    pub fn new(shards: usize) -> Self {
        Self { shards, cells: (0..shards * shards).map(|_| AtomicU64::new(0)).collect() }
    }

    /// Receiver `to` has made durable everything through `received[from]` from each `from`.
    pub fn publish(&self, to: usize, received: &[u64]) {
        for (from, &seq) in received.iter().enumerate().take(self.shards) {
            self.cells[to * self.shards + from].fetch_max(seq, Ordering::Release);
        }
    }

    pub fn get(&self, to: usize, from: usize) -> u64 {
        self.cells.get(to * self.shards + from).map(|c| c.load(Ordering::Acquire)).unwrap_or(0)
    }
}

/// Messages this shard sent whose receivers may not have them durably yet, per receiver.
#[derive(Debug, Default)]
pub struct Outbox {
    by_receiver: Vec<VecDeque<Outgoing>>,
}

impl Outbox {
    pub fn new(shards: usize) -> Self {
        Self { by_receiver: (0..shards).map(|_| VecDeque::new()).collect() }
    }

    /// Keeps a sent message, and drops the ones the receivers have durably (bounded by
    /// what is in flight: the channel and the receiver's group being written).
    pub fn sent(&mut self, out: Outgoing, me: usize, durable: &DurableReceived) {
        let to = out.to as usize;
        if let Some(queue) = self.by_receiver.get_mut(to) {
            queue.push_back(out);
            let done = durable.get(to, me);
            while queue.front().is_some_and(|o| o.seq <= done) {
                queue.pop_front();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_receiver.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything kept, receiver by receiver, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &Outgoing> {
        self.by_receiver.iter().flatten()
    }
}

/// A checkpoint's state, taken when its group was taken, waiting for the group to be
/// durable.
pub struct Snapshot {
    pub wal_sequence: u64,
    pub service: ServiceSnapshot,
    pub outbox: Vec<Outgoing>,
    /// How long the shard paused to take it.
    pub pause_us: u64,
}

/// What the last checkpoint of a shard was (`/admin/storage/stats`, `POST /admin/checkpoint`).
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointInfo {
    pub shard: usize,
    pub wal_sequence: u64,
    pub bytes: u64,
    pub file: String,
    /// The shard paused this long to take its state.
    pub pause_us: u64,
    /// A background thread encoded the state in this long (the shard went on meanwhile).
    pub encode_us: u64,
    /// Waiting for the history store to flush through the checkpoint.
    pub history_flush_us: u64,
    pub write_us: u64,
    pub outbox_messages: usize,
}

/// A shard's checkpoint bookkeeping, held by its engine core.
#[derive(Debug)]
pub struct CheckpointControl {
    pub policy: CheckpointPolicy,
    /// Asked for (admin), not yet begun.
    requested: bool,
    /// Admin requests for the next checkpoint (their state must be in it).
    waiters: Vec<Origin>,
    /// Admin requests the running checkpoint answers.
    running_waiters: Vec<Origin>,
    running: bool,
    wal_bytes_at_last: u64,
    last_at: Instant,
    pub last: Option<CheckpointInfo>,
    pub taken: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// Segments through this sequence may go (the committer retires them).
    pub retire_through: Option<u64>,
    pub segments_retired: u64,
    /// New segments made from retired files (WAL stats of this process).
    pub segments_recycled: u64,
}

impl CheckpointControl {
    pub fn new(policy: CheckpointPolicy) -> Self {
        Self {
            policy,
            requested: false,
            waiters: Vec::new(),
            running_waiters: Vec::new(),
            running: false,
            wal_bytes_at_last: 0,
            last_at: Instant::now(),
            last: None,
            taken: 0,
            failures: 0,
            last_error: None,
            retire_through: None,
            segments_retired: 0,
            segments_recycled: 0,
        }
    }

    pub fn request(&mut self, origin: Origin) {
        self.requested = true;
        self.waiters.push(origin);
    }

    /// Whether to begin one now, with `wal_bytes` written by this run so far.
    pub fn due(&self, wal_bytes: u64, now: Instant) -> bool {
        if self.running {
            return false;
        }
        let written = wal_bytes.saturating_sub(self.wal_bytes_at_last);
        self.requested
            || (self.policy.every_wal_bytes > 0 && written >= self.policy.every_wal_bytes)
            || (!self.policy.interval.is_zero() && written > 0 && now - self.last_at >= self.policy.interval)
    }

    /// How long until one falls due by time alone (None: not by time, or one is running).
    pub fn due_in(&self, wal_bytes: u64, now: Instant) -> Option<Duration> {
        let written = wal_bytes > self.wal_bytes_at_last;
        if self.running || self.policy.interval.is_zero() || !written {
            return None;
        }
        Some((self.last_at + self.policy.interval).saturating_duration_since(now))
    }

    pub fn begin(&mut self, wal_bytes: u64, now: Instant) {
        self.requested = false;
        self.running_waiters = std::mem::take(&mut self.waiters);
        self.running = true;
        self.wal_bytes_at_last = wal_bytes;
        self.last_at = now;
    }

    /// The checkpoint ended; returns the admin requests to answer.
    pub fn finish(&mut self, result: &Result<(CheckpointInfo, u64), String>) -> Vec<Origin> {
        self.running = false;
        match result {
            Ok((info, oldest_kept)) => {
                self.taken += 1;
                self.last = Some(info.clone());
                self.last_error = None;
                self.retire_through = Some(*oldest_kept);
            }
            Err(e) => {
                self.failures += 1;
                self.last_error = Some(e.clone());
            }
        }
        std::mem::take(&mut self.running_waiters)
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "checkpoint_wal_sequence": self.last.as_ref().map(|l| l.wal_sequence),
            "checkpoint_bytes": self.last.as_ref().map(|l| l.bytes),
            "checkpoints_taken": self.taken,
            "checkpoint_failures": self.failures,
            "checkpoint_last_error": self.last_error,
            "checkpoint_running": self.running,
            "wal_segments_retired": self.segments_retired,
            "wal_segments_recycled": self.segments_recycled,
        })
    }
}

/// Where a shard writes its checkpoints, and what they are checked against on load.
#[derive(Clone, Debug)]
pub struct CheckpointTarget {
    pub dir: PathBuf,
    pub meta: CheckpointMeta,
}

/// Finishes a checkpoint whose group is durable: history flushed through it, file written.
/// Returns what was written and the oldest checkpoint kept.
pub async fn finish(
    snapshot: Snapshot,
    history: Option<SharedHistory>,
    target: CheckpointTarget,
    shard: usize,
) -> Result<(CheckpointInfo, u64), String> {
    let sequence = snapshot.wal_sequence;
    let Snapshot { service, outbox, pause_us, .. } = snapshot;
    // Encoding starts now, beside the history flush below.
    let encoding = super::history_store::on_background_thread("checkpoint-encode", move || {
        let began = Instant::now();
        let bytes = service.encode()?;
        drop(service);
        Ok((bytes, began.elapsed().as_micros() as u64))
    });
    let began = Instant::now();
    if let Some(history) = &history {
        let failures_before = history.borrow().failures();
        history.borrow_mut().flush_through(sequence);
        while history.borrow().watermark() < sequence {
            if history.borrow().failures() > failures_before {
                return Err(format!(
                    "the history store could not flush through WAL sequence {sequence}: {}",
                    history.borrow().last_error().unwrap_or_default()
                ));
            }
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    }
    let history_flush_us = began.elapsed().as_micros() as u64;
    let (service, encode_us) = encoding.await?;
    let outbox_messages = outbox.len();
    let meta = CheckpointMeta { wal_sequence: sequence, ..target.meta };
    let written_at = Instant::now();
    let dir = target.dir.clone();
    let written = super::history_store::on_background_thread("checkpoint", move || {
        let outbox = checkpoint::encode_outbox(&outbox)?;
        let file = checkpoint::encode_file(&meta, &service, &outbox);
        drop(service);
        checkpoint::write(&dir, sequence, &file, test_pause)
            .map_err(|e| format!("writing a checkpoint in {}: {e}", dir.display()))
    })
    .await?;
    let info = CheckpointInfo {
        shard,
        wal_sequence: sequence,
        bytes: written.bytes,
        file: written.path.display().to_string(),
        pause_us,
        encode_us,
        history_flush_us,
        write_us: written_at.elapsed().as_micros() as u64,
        outbox_messages,
    };
    Ok((info, written.oldest_kept))
}

/// Crash tests only: `QAEXCHANGE_CHECKPOINT_PAUSE_MS` makes a checkpoint wait that long once
/// its temporary file is written, before the rename, so a test can kill the server there.
/// Unset (always, in production): no pause.
fn test_pause() {
    static PAUSE: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    let pause = *PAUSE.get_or_init(|| {
        std::env::var("QAEXCHANGE_CHECKPOINT_PAUSE_MS").ok().and_then(|v| v.parse().ok()).map(Duration::from_millis)
    });
    if let Some(pause) = pause {
        std::thread::sleep(pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::shard::PeerMsg;

    fn out(to: u16, seq: u64) -> Outgoing {
        Outgoing { to, seq, msg: PeerMsg::Cancel { order_id: seq, instrument: 0 } }
    }

    #[test]
    fn the_outbox_keeps_only_what_receivers_may_lack() {
        let durable = DurableReceived::new(3);
        let mut outbox = Outbox::new(3);
        for seq in 1..=4 {
            outbox.sent(out(1, seq), 0, &durable);
            outbox.sent(out(2, seq), 0, &durable);
        }
        assert_eq!(outbox.len(), 8);
        // Shard 1 holds 3 of shard 0's messages durably; shard 2 none; a count for another
        // sender (shard 2's from shard 1) changes nothing here.
        durable.publish(1, &[3, 0, 0]);
        durable.publish(2, &[0, 9, 0]);
        outbox.sent(out(1, 5), 0, &durable);
        let kept: Vec<(u16, u64)> = outbox.all().map(|o| (o.to, o.seq)).collect();
        assert_eq!(kept, vec![(1, 4), (1, 5), (2, 1), (2, 2), (2, 3), (2, 4)]);
        // Counts only grow: a stale publish does not bring messages back.
        durable.publish(1, &[1, 0, 0]);
        assert_eq!(durable.get(1, 0), 3);
    }

    #[test]
    fn checkpoints_are_due_by_size_time_or_request_and_one_runs_at_a_time() {
        let policy = CheckpointPolicy { every_wal_bytes: 1000, interval: Duration::from_secs(60) };
        let mut c = CheckpointControl::new(policy);
        let t0 = Instant::now();
        assert!(!c.due(999, t0));
        assert!(c.due(1000, t0));
        // Nothing written: no checkpoint by time.
        assert!(!c.due(0, t0 + Duration::from_secs(61)));
        assert!(c.due(1, t0 + Duration::from_secs(61)));
        assert_eq!(c.due_in(0, t0), None, "nothing written");
        assert!(c.due_in(1, t0 + Duration::from_secs(30)).is_some_and(|d| d <= Duration::from_secs(30)));
        let origin = |tag| Origin { shard: 0, conn: 1, tag };
        c.request(origin(1));
        assert!(c.due(0, t0));
        c.begin(1500, t0);
        assert!(!c.due(10_000, t0), "one at a time");
        // A request while one runs waits for the next one.
        c.request(origin(2));
        let info = CheckpointInfo {
            shard: 0,
            wal_sequence: 7,
            bytes: 1,
            file: String::new(),
            pause_us: 0,
            encode_us: 0,
            history_flush_us: 0,
            write_us: 0,
            outbox_messages: 0,
        };
        assert_eq!(c.finish(&Ok((info.clone(), 5))), vec![origin(1)]);
        assert_eq!(c.retire_through, Some(5));
        assert!(c.due(1500, t0), "the second request is pending");
        c.begin(1500, t0);
        assert_eq!(c.finish(&Err("disk full".into())), vec![origin(2)]);
        assert_eq!((c.taken, c.failures), (1, 1));
        assert!(!c.due(2499, t0) && c.due(2500, t0));
    }
}
