//! One shard's users and account bindings, beside its engine (the domain core knows accounts,
//! not people).
//!
//! - A user lives on the shard of its id's hash (`account_shard`, the same hash as accounts):
//!   its password hash (Argon2id) and role. Logged as `WalRecord::User`.
//! - An account's owner lives on the account's shard, next to the account, so the shard that
//!   runs an order checks who may send it without asking anyone (`WalRecord::Owner`).
//!   A user's list of accounts is gathered from every shard (`Query::OwnedAccounts`): rare, and
//!   it keeps one source of truth per binding.
//!
//! Pure and deterministic: replaying the records rebuilds it exactly; it is in checkpoints.

use super::auth::UserId;
use crate::domain::fast_hash::FastMap;
use crate::domain::name::AccountId;
use crate::domain::types::TimestampNs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Argon2id PHC string; never the password.
    pub password_hash: String,
    pub admin: bool,
    pub created_ns: TimestampNs,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Users {
    users: BTreeMap<UserId, UserRecord>,
    owners: FastMap<AccountId, UserId>,
}

impl Users {
    pub fn get(&self, user_id: &UserId) -> Option<&UserRecord> {
        self.users.get(user_id)
    }

    /// Adds a user; false (and nothing changes) when the id is taken.
    pub fn register(&mut self, user_id: UserId, record: UserRecord) -> bool {
        if self.users.contains_key(&user_id) {
            return false;
        }
        self.users.insert(user_id, record);
        true
    }

    /// Binds an account of this shard to its owner (an account has one owner, set once).
    pub fn bind(&mut self, account_id: AccountId, user_id: UserId) {
        self.owners.entry(account_id).or_insert(user_id);
    }

    pub fn owner(&self, account_id: &AccountId) -> Option<&UserId> {
        self.owners.get(account_id)
    }

    /// Whether `user_id` owns `account_id` (an account without an owner belongs to no user:
    /// only an admin may use it once auth is on).
    pub fn owns(&self, user_id: &UserId, account_id: &AccountId) -> bool {
        self.owners.get(account_id) == Some(user_id)
    }

    /// The accounts of this shard that `user_id` owns, sorted.
    pub fn accounts_of(&self, user_id: &UserId) -> Vec<AccountId> {
        let mut out: Vec<AccountId> = self.owners.iter().filter(|(_, u)| *u == user_id).map(|(a, _)| *a).collect();
        out.sort();
        out
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> AccountId {
        AccountId::new(text).unwrap()
    }

    #[test]
    fn users_register_once_and_accounts_bind_once() {
        let mut users = Users::default();
        let record = UserRecord { password_hash: "$argon2id$x".into(), admin: false, created_ns: 1 };
        assert!(users.register(id("alice"), record.clone()));
        assert!(!users.register(id("alice"), UserRecord { admin: true, ..record.clone() }));
        assert_eq!(users.get(&id("alice")), Some(&record));
        users.bind(id("a2"), id("alice"));
        users.bind(id("a1"), id("alice"));
        users.bind(id("a1"), id("mallory"));
        users.bind(id("b1"), id("bob"));
        assert!(users.owns(&id("alice"), &id("a1")));
        assert!(!users.owns(&id("mallory"), &id("a1")));
        assert!(!users.owns(&id("alice"), &id("nobody")));
        assert_eq!(users.accounts_of(&id("alice")), vec![id("a1"), id("a2")]);
        assert_eq!(users.user_count(), 1);
    }
}
