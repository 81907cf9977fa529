//! The engine shard's core: executes actions as they arrive, stages the commands that changed
//! state, and a committer task writes each staged group to the WAL (one write + fdatasync per
//! group) before it releases the group's replies. While one group syncs the next one fills, so
//! the sync cost is shared by everything that arrived meanwhile (group commit).
//!
//! Replies of queries are staged behind the commands before them too, so a client never reads
//! state that is not yet durable.

use super::http::HttpErrorCode;
use super::service::{Action, Reply, Service};
use super::wal_record::{encode, WalRecord};
use crate::domain::command::Command;
use crate::storage::wal::WalWriter;
use glommio::channels::local_channel::{LocalReceiver, LocalSender};
use glommio::channels::shared_channel::ConnectedSender;
use std::cell::RefCell;
use std::rc::Rc;

/// Where a reply goes: the shard holding the connection, and the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub shard: usize,
    pub conn: u64,
}

/// A request crossing to the engine shard.
#[derive(Debug)]
pub struct Envelope {
    pub origin: Origin,
    pub action: Action,
}

/// A reply crossing back to the connection's shard.
#[derive(Debug)]
pub struct ReplyEnvelope {
    pub conn: u64,
    pub reply: Reply,
}

/// Connections of one shard waiting for their reply (one request in flight per connection).
pub type Waiters = Rc<RefCell<crate::domain::fast_hash::FastMap<u64, LocalSender<Reply>>>>;

/// Hands a reply to a connection of this shard. A connection that closed meanwhile is skipped.
pub fn deliver_local(waiters: &Waiters, conn: u64, reply: Reply) {
    if let Some(tx) = waiters.borrow().get(&conn) {
        let _ = tx.try_send(reply);
    }
}

#[derive(Default)]
struct Staged {
    commands: Vec<Command>,
    replies: Vec<(Origin, Reply)>,
}

pub struct EngineCore {
    service: Service,
    staged: Staged,
    notify: LocalSender<()>,
    closing: bool,
    /// Whether a WAL failure stopped the core: every later action is refused.
    failed: bool,
}

pub type SharedCore = Rc<RefCell<EngineCore>>;

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl EngineCore {
    pub fn new(service: Service, notify: LocalSender<()>) -> Self {
        Self { service, staged: Staged::default(), notify, closing: false, failed: false }
    }

    /// Executes `action` now; its reply leaves when the committer has made it durable.
    pub fn submit(&mut self, origin: Origin, action: Action) {
        let reply = if self.failed {
            Reply::http_message(
                HttpErrorCode::StorageFailed,
                "storage failed: the server is refusing requests until it restarts",
            )
        } else {
            self.service.handle(action, now_ns(), &mut self.staged.commands)
        };
        self.staged.replies.push((origin, reply));
        let _ = self.notify.try_send(());
    }

    /// No more actions will come: the committer drains what is staged and stops.
    pub fn close(&mut self) {
        self.closing = true;
        let _ = self.notify.try_send(());
    }

    pub fn service(&self) -> &Service {
        &self.service
    }
}

/// Outputs of the engine shard: its own connections, and a reply channel per other shard.
pub struct ReplyRoutes {
    pub shard: usize,
    pub local: Waiters,
    pub remote: Vec<Option<ConnectedSender<ReplyEnvelope>>>,
}

impl ReplyRoutes {
    async fn deliver(&self, origin: Origin, reply: Reply) {
        if origin.shard == self.shard {
            deliver_local(&self.local, origin.conn, reply);
        } else if let Some(Some(tx)) = self.remote.get(origin.shard) {
            // Bounded: a full channel makes the committer wait for that shard (backpressure).
            let _ = tx.send(ReplyEnvelope { conn: origin.conn, reply }).await;
        }
    }
}

/// Most records and bytes one WAL write carries (config `group_commit_max_records` /
/// `group_commit_max_bytes`); a larger group is written as several writes, each synced, before
/// its replies leave.
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
    routes: ReplyRoutes,
) -> Result<(), String> {
    let mut spare = Staged::default();
    loop {
        let (batch, closing) = {
            let mut c = core.borrow_mut();
            std::mem::swap(&mut c.staged, &mut spare);
            (std::mem::take(&mut spare), c.closing)
        };
        let mut batch = batch;
        if batch.replies.is_empty() && batch.commands.is_empty() {
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
            Some(wal) => write_batch(wal, &batch.commands, limits).await,
            None => Ok(()),
        };
        if let Err(e) = written {
            // Nothing of this group is durable: refuse it, and everything after it.
            tracing::error!("WAL write failed, refusing requests from now on: {e}");
            core.borrow_mut().failed = true;
            for (origin, _) in batch.replies.drain(..) {
                let reply = Reply::http(HttpErrorCode::StorageFailed);
                routes.deliver(origin, reply).await;
            }
        } else {
            for (origin, reply) in batch.replies.drain(..) {
                routes.deliver(origin, reply).await;
            }
        }
        batch.commands.clear();
        spare = batch;
    }
    if let Some(wal) = wal {
        wal.close().await.map_err(|e| format!("closing the WAL: {e}"))?;
    }
    Ok(())
}

async fn write_batch(wal: &mut WalWriter, commands: &[Command], limits: GroupLimits) -> Result<(), String> {
    let mut in_write = 0;
    for command in commands {
        let bytes = encode(&WalRecord::Command(*command))?;
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
