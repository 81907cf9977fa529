//! A shard's core: runs client actions and messages from other shards as they arrive, stages
//! what they logged, sent and answered, and a committer task writes each staged group to the
//! shard's WAL (one write + fdatasync per group) before it sends the group's messages and
//! releases its replies (output commit: nothing leaves a shard before the input that made it
//! is durable). While one group syncs the next one fills, so the sync cost is shared by
//! everything that arrived meanwhile (group commit).
//!
//! Replies of queries are staged behind the inputs before them too, so a client never reads
//! state that is not yet durable.

use super::http::HttpErrorCode;
use super::service::{Action, Answer, Origin, Reply, Service, Staged};
use super::wal_record::{encode, WalRecord};
use crate::domain::shard::{Outgoing, PeerMsg};
use crate::storage::wal::WalWriter;
use glommio::channels::local_channel::{LocalReceiver, LocalSender};
use glommio::channels::shared_channel::ConnectedSender;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Everything that crosses from one shard to another (one bounded channel per ordered pair).
#[derive(Debug)]
pub enum ShardMsg {
    /// A client request for an account or instrument the receiver owns.
    Request { origin: Origin, action: Action },
    /// The answer to a `Request`, for a connection of the receiver.
    Reply { conn: u64, answer: Answer },
    /// Account aggregation between shards: holds, fills, cancels, modifies, marks.
    Peer { seq: u64, msg: PeerMsg },
}

/// Connections of one shard waiting for their answer (one request in flight per connection).
pub type Waiters = Rc<RefCell<crate::domain::fast_hash::FastMap<u64, LocalSender<Answer>>>>;

/// Hands an answer to a connection of this shard. A connection that closed meanwhile is skipped.
pub fn deliver_local(waiters: &Waiters, conn: u64, answer: Answer) {
    if let Some(tx) = waiters.borrow().get(&conn) {
        let _ = tx.try_send(answer);
    }
}

/// What one shard tells the others about its activity, so they can agree that the whole
/// server is quiet before shutting down.
#[derive(Debug, Default)]
pub struct Activity {
    pub peer_sent: AtomicU64,
    pub peer_received: AtomicU64,
    /// Something is staged or being committed.
    pub busy: AtomicBool,
}

pub struct EngineCore {
    service: Service,
    staged: Staged,
    notify: LocalSender<()>,
    activity: std::sync::Arc<Activity>,
    closing: bool,
    /// Whether a WAL failure stopped the core: every later action is refused.
    failed: bool,
}

pub type SharedCore = Rc<RefCell<EngineCore>>;

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl EngineCore {
    pub fn new(service: Service, notify: LocalSender<()>, activity: std::sync::Arc<Activity>) -> Self {
        Self { service, staged: Staged::default(), notify, activity, closing: false, failed: false }
    }

    fn wake(&mut self) {
        self.activity.busy.store(true, Ordering::SeqCst);
        let _ = self.notify.try_send(());
    }

    /// Runs a client action now; its reply leaves when the committer has made it durable.
    pub fn submit(&mut self, origin: Origin, action: Action) {
        if self.failed {
            let reply = Reply::http_message(
                HttpErrorCode::StorageFailed,
                "storage failed: the server is refusing requests until it restarts",
            );
            self.staged.replies.push((origin, Answer::Reply(reply)));
        } else {
            self.service.handle(action, now_ns(), origin, &mut self.staged);
        }
        self.wake();
    }

    /// Runs message `seq` from shard `from`.
    pub fn deliver(&mut self, from: u16, seq: u64, msg: PeerMsg) {
        if !self.failed {
            self.service.deliver(from, seq, msg, now_ns(), &mut self.staged);
        }
        self.activity.peer_received.fetch_add(1, Ordering::SeqCst);
        self.wake();
    }

    /// Messages recovery found undelivered: they go out first, before anything new.
    pub fn redeliver(&mut self, sends: Vec<Outgoing>) {
        self.staged.sends.extend(sends);
        self.wake();
    }

    /// No more work will come: the committer drains what is staged and stops.
    pub fn close(&mut self) {
        self.closing = true;
        let _ = self.notify.try_send(());
    }

    pub fn service(&self) -> &Service {
        &self.service
    }
}

/// Where a shard's committer sends: its own connections, and a channel to every other shard.
pub struct Routes {
    pub shard: usize,
    pub local: Waiters,
    pub remote: Rc<Vec<Option<ConnectedSender<ShardMsg>>>>,
}

impl Routes {
    async fn reply(&self, origin: Origin, answer: Answer) {
        if origin.shard == self.shard {
            deliver_local(&self.local, origin.conn, answer);
        } else if let Some(Some(tx)) = self.remote.get(origin.shard) {
            // Bounded: a full channel makes the committer wait for that shard (backpressure).
            let _ = tx.send(ShardMsg::Reply { conn: origin.conn, answer }).await;
        }
    }

    async fn peer(&self, out: Outgoing) -> bool {
        match self.remote.get(out.to as usize) {
            Some(Some(tx)) => tx.send(ShardMsg::Peer { seq: out.seq, msg: out.msg }).await.is_ok(),
            _ => false,
        }
    }
}

/// Most records and bytes one WAL write carries (config `group_commit_max_records` /
/// `group_commit_max_bytes`); a larger group is written as several writes, each synced, before
/// its messages and replies leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLimits {
    pub max_records: usize,
    pub max_bytes: usize,
}

/// The committer loop; returns when the core is closed and drained, with the WAL closed.
pub async fn run_committer(
    core: SharedCore,
    mut wal: Option<WalWriter>,
    limits: GroupLimits,
    notify: LocalReceiver<()>,
    routes: Routes,
) -> Result<(), String> {
    let mut spare = Staged::default();
    let activity = core.borrow().activity.clone();
    loop {
        let (mut batch, closing) = {
            let mut c = core.borrow_mut();
            std::mem::swap(&mut c.staged, &mut spare);
            if spare.is_empty() {
                activity.busy.store(false, Ordering::SeqCst);
            }
            (std::mem::take(&mut spare), c.closing)
        };
        if batch.is_empty() {
            if closing {
                break;
            }
            if notify.recv().await.is_none() {
                break;
            }
            spare = batch;
            continue;
        }
        let written = match wal.as_mut() {
            Some(wal) => write_batch(wal, &batch.records, limits).await,
            None => Ok(()),
        };
        if let Err(e) = written {
            // Nothing of this group is durable: send none of it, refuse it and everything after.
            tracing::error!("shard {}: WAL write failed, refusing requests from now on: {e}", routes.shard);
            core.borrow_mut().failed = true;
            batch.sends.clear();
            for (origin, _) in batch.replies.drain(..) {
                routes.reply(origin, Answer::Reply(Reply::http(HttpErrorCode::StorageFailed))).await;
            }
        } else {
            for out in batch.sends.drain(..) {
                let to = out.to;
                activity.peer_sent.fetch_add(1, Ordering::SeqCst);
                if !routes.peer(out).await {
                    // Only while shutting down; recovery delivers it after the restart.
                    activity.peer_sent.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("shard {}: shard {to} is gone; a message waits for the restart", routes.shard);
                }
            }
            for (origin, answer) in batch.replies.drain(..) {
                routes.reply(origin, answer).await;
            }
        }
        batch.records.clear();
        spare = batch;
    }
    if let Some(wal) = wal {
        wal.close().await.map_err(|e| format!("closing the WAL: {e}"))?;
    }
    Ok(())
}

async fn write_batch(wal: &mut WalWriter, records: &[WalRecord], limits: GroupLimits) -> Result<(), String> {
    if records.is_empty() {
        return Ok(());
    }
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
    wal.commit().await.map_err(|e| e.to_string())?;
    Ok(())
}
