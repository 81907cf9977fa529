//! Open HTTP connections per user (`[http] max_connections_per_user`), across every shard: a
//! connection counts for the user whose token it first sends, until it closes. The count is
//! the one piece of state the shards share (a mutex taken when a connection starts or stops
//! speaking for a user, never per request), because a user's connections land on any shard.

use super::auth::UserId;
use crate::domain::fast_hash::FastMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Default)]
pub struct UserConnections {
    counts: Arc<Mutex<FastMap<UserId, u32>>>,
}

/// One connection counted for a user; dropping it (the connection closed) uncounts it.
#[derive(Debug)]
pub struct Counted {
    user: UserId,
    counts: Arc<Mutex<FastMap<UserId, u32>>>,
}

impl Counted {
    pub fn user(&self) -> UserId {
        self.user
    }
}

impl UserConnections {
    /// Counts one more connection for `user`; None when it already has `limit` (0: no limit).
    pub fn acquire(&self, user: UserId, limit: u32) -> Option<Counted> {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(user).or_insert(0);
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(Counted { user, counts: self.counts.clone() })
    }

    pub fn count(&self, user: &UserId) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.get(user).copied().unwrap_or(0)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_limit_and_down_on_drop() {
        let all = UserConnections::default();
        let alice = UserId::new("alice").unwrap();
        let a = all.acquire(alice, 2).unwrap();
        let b = all.acquire(alice, 2).unwrap();
        assert!(all.acquire(alice, 2).is_none());
        assert!(all.acquire(UserId::new("bob").unwrap(), 2).is_some());
        drop(a);
        assert_eq!(all.count(&alice), 1);
        let c = all.acquire(alice, 2).unwrap();
        assert_eq!(c.user(), alice);
        drop((b, c));
        assert_eq!(all.count(&alice), 0);
        assert!(all.acquire(alice, 0).is_some(), "0 is no limit");
    }
}
