//! The committer of one shard: writes each staged group to the WAL and, once the group is
//! durable, sends its messages and releases its replies (output commit).
//!
//! Groups may be pipelined (`[storage] syncs_in_flight` above 1): while one group's sync is in
//! flight the next group is taken, written and its own sync started, up to that
//! many groups at once, and groups are answered strictly in the order they were taken. One at
//! a time, a request that arrives during a sync waits for that sync and then for its own
//! group's write and sync; pipelined, for one write and one sync. A sync started after a
//! group's write completed covers that group and every group written before it. Measured on
//! our 2-core VMs the overlapping syncs each took longer and acks were no faster, so the
//! default is 1 (docs/PERFORMANCE.md, "Syncs in flight"). Since the WAL writes durable
//! batches with `O_DSYNC`, a group's sync is its write itself (`WalWriter`'s module docs).
//!
//! Everything a group sends (quotes, trade patches, peer messages, history) was taken with it
//! from the engine, so answering it later, after later groups were executed, sends exactly
//! what that group made.

use super::{checkpointer, now_ns, Routes, SharedCore, Snapshot, Staged, WalRecord, WalWriter, MARK_REFRESH_NS};
use super::{encode, Answer, HttpErrorCode, Reply};
use crate::domain::market_data::Quote;
use crate::domain::name::AccountId;
use crate::storage::wal::SyncTicket;
use glommio::channels::local_channel::LocalReceiver;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Most records and bytes one WAL write carries (config `group_commit_max_records` /
/// `group_commit_max_bytes`); a larger group is written as several writes, each synced, before
/// its messages and replies leave. `syncs_in_flight` (config `[storage] syncs_in_flight`):
/// groups whose synced writes may be in flight at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub syncs_in_flight: usize,
}

/// A group taken from the engine and written, waiting for its sync to be answered.
struct Group {
    batch: Staged,
    /// When each reply of the group was staged.
    stamps: Vec<Instant>,
    quotes: Vec<Quote>,
    charts: Vec<(u32, String, serde_json::Value)>,
    trades: Vec<(AccountId, Vec<usize>, crate::diff::feed::SharedPatch)>,
    history_writes: Vec<(Vec<u8>, Vec<u8>)>,
    /// A checkpoint of the engine as of the group's last record.
    snapshot: Option<Snapshot>,
    /// What this shard had received from each other shard, as of the group's last record.
    received: Vec<u64>,
    /// The WAL sequence of the group's last record (of the log's last, for a group without
    /// records).
    last_sequence: u64,
    began: Instant,
    /// The sync in flight (None without records or WAL), or why the write failed.
    sync: Result<Option<SyncTicket>, String>,
}

impl Group {
    /// Resolves when the group's sync has ended; may be dropped before (the sync runs on).
    async fn synced(&mut self) {
        if let Ok(Some(ticket)) = &mut self.sync {
            ticket.done().await;
        }
    }
}

/// What woke a committer waiting with groups in flight.
enum Woken {
    /// The oldest group's sync ended.
    Synced,
    /// New work was staged.
    Staged,
    /// The core is gone.
    Closed,
}

/// The committer loop; returns when the core is closed and drained, with the WAL closed.
pub async fn run_committer(
    core: SharedCore,
    mut wal: Option<WalWriter>,
    limits: GroupLimits,
    notify: LocalReceiver<()>,
    routes: Routes,
) -> Result<(), String> {
    let activity = core.borrow().activity.clone();
    let most_in_flight = limits.syncs_in_flight.max(1);
    let mut in_flight: VecDeque<Group> = VecDeque::with_capacity(most_in_flight);
    // Buffers handed back and forth with the core, so a group costs no allocation.
    let mut spare = Staged::default();
    let mut stamps: Vec<Instant> = Vec::new();
    let mut received: Vec<u64> = Vec::new();
    loop {
        // WAL segments that a written checkpoint made unnecessary.
        let retire = core.borrow_mut().checkpoint.retire_through.take();
        if let (Some(through), Some(w)) = (retire, wal.as_mut()) {
            match w.retire_through(through).await {
                Ok(n) => core.borrow_mut().checkpoint.segments_retired += n as u64,
                Err(e) => tracing::warn!("shard {}: retiring WAL segments through {through}: {e}", routes.shard),
            }
        }
        // Groups in flight and nothing new: answer the oldest when its sync ends, unless work
        // is staged first (it is then written beside the syncs in flight).
        let idle = {
            let c = core.borrow();
            c.staged.is_empty() && !c.closing
        };
        if idle {
            if let Some(oldest) = in_flight.front_mut() {
                let woken = futures_lite::future::or(
                    async {
                        oldest.synced().await;
                        Woken::Synced
                    },
                    async { notify.recv().await.map_or(Woken::Closed, |_| Woken::Staged) },
                )
                .await;
                match woken {
                    Woken::Synced => {
                        if let Some(group) = in_flight.pop_front() {
                            (spare, stamps, received) = answer(&core, &mut wal, &routes, group).await;
                        }
                    }
                    Woken::Staged => {}
                    Woken::Closed => {
                        answer_all(&core, &mut wal, &routes, &mut in_flight).await;
                        break;
                    }
                }
                continue;
            }
        }
        // A checkpoint is taken with nothing in flight: the snapshot's outbox must hold every
        // message sent before it, and those of groups in flight are sent when they are answered.
        let checkpoint_due = match wal.as_ref() {
            Some(w) => {
                let c = core.borrow();
                c.checkpoint_target.is_some() && !c.closing && c.checkpoint.due(w.stats().bytes, Instant::now())
            }
            None => false,
        };
        if checkpoint_due && !in_flight.is_empty() {
            answer_all(&core, &mut wal, &routes, &mut in_flight).await;
            continue;
        }
        let (batch, closing, quotes, charts, trades, history_writes, snapshot) = {
            let mut c = core.borrow_mut();
            let history_writes = c.service.take_history();
            let quotes = c.service.take_changed_quotes();
            let charts = if routes.fanout.borrow().directory().anyone_charts() {
                c.service.take_chart_patches(&quotes)
            } else {
                Vec::new()
            };
            // Built now, from the state the staged group left: each object as of its end.
            let trades = c.service.take_trade_patches(now_ns());
            std::mem::swap(&mut c.staged, &mut spare);
            std::mem::swap(&mut c.staged_at, &mut stamps);
            c.staged_at.clear();
            if spare.is_empty() && in_flight.is_empty() {
                activity.busy.store(false, Ordering::SeqCst);
            }
            // The engine's state now is the state after the taken group's last record (nothing
            // is in flight when a checkpoint is due).
            let snapshot = match wal.as_ref() {
                Some(w) if checkpoint_due => {
                    let sequence = w.next_sequence() - 1 + spare.records.len() as u64;
                    Some(c.snapshot(sequence, &spare.sends, w.stats().bytes))
                }
                _ => None,
            };
            received.clear();
            if c.durable.is_some() && !spare.records.is_empty() {
                received.extend_from_slice(c.service.engine().received());
            }
            (std::mem::take(&mut spare), c.closing, quotes, charts, trades, history_writes, snapshot)
        };
        if batch.is_empty() {
            if !in_flight.is_empty() {
                // Closing: everything in flight is answered first.
                answer_all(&core, &mut wal, &routes, &mut in_flight).await;
                spare = batch;
                continue;
            }
            if let Some(snapshot) = snapshot {
                // Nothing new to write: the state is that of the last durable record.
                start_checkpoint(&core, wal.as_mut(), snapshot, routes.shard).await;
            }
            // Nothing staged or in flight: everything is durable, so account refreshes for
            // marks alone (held back to one per `MARK_REFRESH_NS`) may go now.
            routes.publish_trades(trades).await;
            if closing {
                break;
            }
            // Come back even if nothing else happens: for a held mark refresh, or when a
            // checkpoint falls due by time over a quiet log.
            let refresh = core.borrow().service.marks_waiting().then(|| Duration::from_nanos(MARK_REFRESH_NS as u64));
            let checkpoint_in = match wal.as_ref() {
                Some(w) => core.borrow().checkpoint.due_in(w.stats().bytes, Instant::now()),
                None => None,
            };
            let woken = match refresh.into_iter().chain(checkpoint_in).min() {
                Some(wait) => {
                    futures_lite::future::or(async { notify.recv().await.map(|_| true) }, async {
                        glommio::timer::sleep(wait).await;
                        Some(false)
                    })
                    .await
                }
                None => notify.recv().await.map(|_| true),
            };
            if woken.is_none() {
                break;
            }
            spare = batch;
            continue;
        }
        let began = Instant::now();
        if !batch.records.is_empty() && in_flight.iter().any(|g| matches!(&g.sync, Ok(Some(_)))) && wal_syncs(&wal) {
            core.borrow_mut().metrics.counters.wal_groups_overlapped += 1;
        }
        let (sync, last_sequence) = match wal.as_mut() {
            Some(w) if !batch.records.is_empty() => {
                let sync = write_group(w, &batch.records, limits).await.map(Some);
                (sync, w.next_sequence().saturating_sub(1))
            }
            Some(w) => (Ok(None), w.next_sequence().saturating_sub(1)),
            None => (Ok(None), 0),
        };
        // A checkpoint is finished with everything before it answered, and so is a close.
        let drain = snapshot.is_some() || closing;
        in_flight.push_back(Group {
            batch,
            stamps: std::mem::take(&mut stamps),
            quotes,
            charts,
            trades,
            history_writes,
            snapshot,
            received: std::mem::take(&mut received),
            last_sequence,
            began,
            sync,
        });
        if drain {
            answer_all(&core, &mut wal, &routes, &mut in_flight).await;
        } else {
            // Groups with nothing to wait for (no records, `sync = none`) go at once, in order;
            // past the bound the oldest is waited for.
            while let Some(group) = in_flight.pop_front() {
                let waiting = matches!(&group.sync, Ok(Some(_))) && wal_syncs(&wal);
                if waiting && in_flight.len() + 1 < most_in_flight {
                    in_flight.push_front(group);
                    break;
                }
                (spare, stamps, received) = answer(&core, &mut wal, &routes, group).await;
            }
        }
    }
    if let Some(wal) = wal {
        wal.close().await.map_err(|e| format!("closing the WAL: {e}"))?;
    }
    Ok(())
}

/// Whether this shard's WAL syncs (with `sync = none` a ticket is ready at once).
fn wal_syncs(wal: &Option<WalWriter>) -> bool {
    wal.as_ref().is_some_and(|w| w.syncs())
}

/// Answers every group in flight, oldest first.
async fn answer_all(core: &SharedCore, wal: &mut Option<WalWriter>, routes: &Routes, in_flight: &mut VecDeque<Group>) {
    while let Some(group) = in_flight.pop_front() {
        answer(core, wal, routes, group).await;
    }
}

/// Waits for the group's sync, then sends what it made and releases its replies; or, if its
/// write or sync failed (or an earlier group's did), refuses them. Returns the group's emptied
/// buffers for reuse.
async fn answer(
    core: &SharedCore,
    wal: &mut Option<WalWriter>,
    routes: &Routes,
    group: Group,
) -> (Staged, Vec<Instant>, Vec<u64>) {
    let Group {
        mut batch,
        stamps,
        quotes,
        charts,
        trades,
        history_writes,
        mut snapshot,
        received,
        last_sequence,
        began,
        sync,
    } = group;
    let synced = match (sync, wal.as_mut()) {
        (Ok(Some(ticket)), Some(w)) => w.finish_sync(ticket).await.map(|_| ()).map_err(|e| e.to_string()),
        (Ok(_), _) => Ok(()),
        (Err(e), _) => Err(e),
    };
    let has_records = !batch.records.is_empty();
    if let (Some(w), true) = (wal.as_ref(), has_records) {
        let stats = w.stats();
        let mut c = core.borrow_mut();
        c.checkpoint.segments_recycled = stats.segments_recycled;
        c.metrics.stage_since("wal_write_sync", began);
        let counters = &mut c.metrics.counters;
        counters.wal_records = stats.records;
        counters.wal_bytes = stats.bytes;
        counters.wal_syncs = stats.syncs;
        counters.wal_groups += 1;
        c.metrics.group_records.saturating_record(batch.records.len() as u64);
    }
    let earlier_failed = core.borrow().failed;
    let outcome = match synced {
        Err(e) => Err(e),
        // A group after a failed one: its records follow ones that may be lost.
        Ok(()) if earlier_failed && has_records => Err("an earlier WAL write failed".to_string()),
        Ok(()) => Ok(()),
    };
    if let Err(e) = outcome {
        // Nothing of this group is durable: send none of it, refuse it and everything after.
        if !earlier_failed {
            tracing::error!("shard {}: WAL write failed, refusing requests from now on: {e}", routes.shard);
        }
        core.borrow_mut().failed = true;
        if snapshot.take().is_some() {
            core.borrow_mut().checkpoint_ended(Err(format!("the WAL write failed: {e}")));
        }
        batch.sends.clear();
        for (origin, _) in batch.replies.drain(..) {
            routes.reply(origin, Answer::Reply(Reply::http(HttpErrorCode::StorageFailed))).await;
        }
    } else {
        // Durable now: the group's history goes into the store before anything leaves, so a
        // client that got its answer finds its order in the history.
        let history = core.borrow().history.clone();
        if let (true, Some(history)) = (wal.is_some(), history) {
            if !history_writes.is_empty() || has_records {
                // Rarely true: the clock is read only for a group that waits.
                if history.borrow().backlogged() {
                    let began = Instant::now();
                    super::super::history_store::wait_for_backlog(&history).await;
                    core.borrow_mut().metrics.stage_since("history_backlog_wait", began);
                } else {
                    // Bound first: no borrow of the history lives across the pause.
                    let slowdown = history.borrow().slowdown();
                    if let Some(pause) = slowdown {
                        let began = Instant::now();
                        glommio::timer::sleep(pause).await;
                        core.borrow_mut().metrics.stage_since("history_slowdown", began);
                    }
                }
                let began = Instant::now();
                let keys = history.borrow_mut().apply(history_writes, last_sequence);
                let mut c = core.borrow_mut();
                c.service.recycle_history_keys(keys);
                c.metrics.stage_since("history_apply", began);
            }
        }
        let durable = core.borrow().durable.clone();
        if let (Some(durable), true) = (&durable, has_records) {
            // The peer messages this group logged are durable now: their senders may forget
            // them.
            durable.publish(routes.shard, &received);
        }
        let activity = core.borrow().activity.clone();
        for out in batch.sends.drain(..) {
            let to = out.to;
            let kept = durable.as_ref().map(|_| out.clone());
            activity.peer_sent.fetch_add(1, Ordering::SeqCst);
            if !routes.peer(out).await {
                // Only while shutting down; recovery delivers it after the restart.
                activity.peer_sent.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("shard {}: shard {to} is gone; a message waits for the restart", routes.shard);
            }
            if let (Some(kept), Some(durable)) = (kept, &durable) {
                core.borrow_mut().outbox.sent(kept, routes.shard, durable);
            }
        }
        if let Some(snapshot) = snapshot.take() {
            start_checkpoint(core, wal.as_mut(), snapshot, routes.shard).await;
        }
        {
            let mut c = core.borrow_mut();
            for at in &stamps {
                c.metrics.stage_since("commit_wait", *at);
            }
        }
        // Before the replies: a client that reads a quote after its order's answer sees the
        // quote that order made.
        routes.publish_quotes(&quotes).await;
        routes.publish_topics(charts).await;
        // Before the replies too: a login's tree (a reply) comes after the patches of the
        // groups before it, which its session holds and applies after the tree.
        routes.publish_trades(trades).await;
        for (origin, answer) in batch.replies.drain(..) {
            routes.reply(origin, answer).await;
        }
    }
    let mut stamps = stamps;
    stamps.clear();
    batch.records.clear();
    (batch, stamps, received)
}

/// Finishes a checkpoint whose state is durable in the WAL, in a task of its own (history
/// flush, file write); its end answers the requests that waited for it.
async fn start_checkpoint(core: &SharedCore, wal: Option<&mut WalWriter>, snapshot: Snapshot, shard: usize) {
    if let Some(wal) = wal {
        // With `sync = "none"` the group's records may not be on disk yet; a checkpoint must
        // never cover records the WAL could lose.
        if let Err(e) = wal.sync_now().await {
            core.borrow_mut().checkpoint_ended(Err(format!("syncing the WAL: {e}")));
            return;
        }
    }
    let (history, target) = {
        let c = core.borrow();
        (c.history.clone(), c.checkpoint_target.clone())
    };
    let Some(target) = target else { return };
    let core = core.clone();
    glommio::spawn_local(async move {
        let result = checkpointer::finish(snapshot, history, target, shard).await;
        if let Ok((info, _)) = &result {
            tracing::info!(
                "shard {shard}: checkpoint at WAL sequence {} ({} bytes; pause {} us, encode {} us, history flush {} us, write {} us)",
                info.wal_sequence,
                info.bytes,
                info.pause_us,
                info.encode_us,
                info.history_flush_us,
                info.write_us
            );
        }
        core.borrow_mut().checkpoint_ended(result);
    })
    .detach();
}

/// Writes a group's records (a group over the limits as several writes, each synced) and
/// starts the sync of its last write.
async fn write_group(wal: &mut WalWriter, records: &[WalRecord], limits: GroupLimits) -> Result<SyncTicket, String> {
    let mut in_write = 0;
    for record in records {
        let bytes = encode(record)?;
        wal.append(&bytes).map_err(|e| e.to_string())?;
        in_write += 1;
        if in_write >= limits.max_records || wal.pending_bytes() >= limits.max_bytes {
            wal.commit().await.map_err(|e| e.to_string())?;
            in_write = 0;
        }
    }
    wal.write_pending().await.map_err(|e| e.to_string())?;
    Ok(wal.start_sync())
}
