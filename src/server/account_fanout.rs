//! Which DIFF sessions of this shard follow which accounts' trade trees, and delivering the
//! account's patches to them. The account's shard builds one patch per commit group for each
//! followed account it changed (`diff_trade::TradeWatch`) and sends it only to the shards whose
//! sessions follow that account (`ShardMsg::Account`); here it is composed into each
//! following session's pending data and the session's task is woken.
//!
//! A session joins before it asks the account's shard for the whole tree, so no patch made
//! meanwhile is missed. Until the tree arrives (and the password is checked), its patches are
//! held apart, composed into one (`early`), and applied after the tree: a patch of a commit
//! group shows each object as the group left it, so applying it after an older or equal tree
//! gives the newest state, never an older one.

use crate::diff::feed::SharedPatch;
use crate::diff::merge_patch::ComposedPatch;
use crate::diff::session::Session;
use crate::domain::fast_hash::FastMap;
use crate::domain::name::AccountId;
use glommio::channels::local_channel::LocalSender;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::Arc;

struct Follower {
    session_id: u64,
    output: Weak<RefCell<Session>>,
    /// Capacity 1: a full channel means the task is already woken.
    wake: Rc<LocalSender<()>>,
    /// Some while the session waits for the account's tree: patches held until it comes.
    early: Option<ComposedPatch>,
}

/// This shard's sessions by the account they are logged in to.
#[derive(Default)]
pub struct AccountFanout {
    by_account: FastMap<AccountId, Vec<Follower>>,
}

impl AccountFanout {
    /// A session starts following `account`; its patches are held until [`Self::ready`].
    pub fn join(
        &mut self,
        account: AccountId,
        session_id: u64,
        output: &Rc<RefCell<Session>>,
        wake: Rc<LocalSender<()>>,
    ) {
        let list = self.by_account.entry(account).or_default();
        list.retain(|f| f.session_id != session_id);
        list.push(Follower { session_id, output: Rc::downgrade(output), wake, early: Some(ComposedPatch::new()) });
    }

    /// The session has its tree: later patches go straight to it. Returns the patches held
    /// meanwhile, to apply after the tree.
    pub fn ready(&mut self, account: &AccountId, session_id: u64) -> Option<ComposedPatch> {
        let follower = self.by_account.get_mut(account)?.iter_mut().find(|f| f.session_id == session_id)?;
        follower.early.take()
    }

    pub fn leave(&mut self, account: &AccountId, session_id: u64) {
        if let Some(list) = self.by_account.get_mut(account) {
            list.retain(|f| f.session_id != session_id);
            if list.is_empty() {
                self.by_account.remove(account);
            }
        }
    }

    /// Composes `patch` into every session following `account` and wakes those it gives data
    /// to while they wait for some (`Session::wakes_after`).
    pub fn publish(&mut self, account: &AccountId, patch: &Arc<SharedPatch>) {
        let Some(list) = self.by_account.get_mut(account) else { return };
        list.retain_mut(|f| {
            if let Some(early) = &mut f.early {
                early.push(patch.value());
                return f.output.strong_count() > 0;
            }
            match f.output.upgrade() {
                Some(output) => {
                    let mut output = output.borrow_mut();
                    let waited = output.waits_for_data();
                    output.push_shared(patch);
                    if output.wakes_after(waited) {
                        let _ = f.wake.try_send(());
                    }
                    true
                }
                None => false,
            }
        });
        if list.is_empty() {
            self.by_account.remove(account);
        }
    }

    /// Sessions of this shard following `account`.
    pub fn followers(&self, account: &AccountId) -> usize {
        self.by_account.get(account).map_or(0, Vec::len)
    }
}
