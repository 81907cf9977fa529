//! One shard's settled days: each day's cut (settlement prices) and the statements of this
//! shard's accounts, the newest `KEPT_DAYS` days. Built from the settlement steps' events, so
//! replaying the WAL rebuilds it; kept in checkpoints. `GET /api/admin/settlement/history`
//! and `.../detail/{day}` gather it from every shard; `GET /api/settlement/{account}` reads the
//! account's own.

use crate::domain::event::SettlementStatement;
use crate::domain::name::AccountId;
use crate::domain::shard::settlement::SettleCut;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Settled days kept per shard (older ones are dropped, oldest first).
pub const KEPT_DAYS: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SettledDay {
    pub cut: Option<SettleCut>,
    pub statements: Vec<SettlementStatement>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SettlementLog {
    days: BTreeMap<u32, SettledDay>,
}

impl SettlementLog {
    pub fn statement(&mut self, statement: SettlementStatement) {
        self.day(statement.trading_day).statements.push(statement);
    }

    pub fn cut(&mut self, cut: &SettleCut) {
        self.day(cut.settled_day).cut = Some(cut.clone());
    }

    fn day(&mut self, day: u32) -> &mut SettledDay {
        while self.days.len() >= KEPT_DAYS && !self.days.contains_key(&day) {
            self.days.pop_first();
        }
        self.days.entry(day).or_default()
    }

    pub fn days(&self) -> impl Iterator<Item = (&u32, &SettledDay)> {
        self.days.iter()
    }

    pub fn get(&self, day: u32) -> Option<&SettledDay> {
        self.days.get(&day)
    }

    /// An account's statements, oldest first.
    pub fn of_account<'a>(&'a self, account: &'a AccountId) -> impl Iterator<Item = &'a SettlementStatement> + 'a {
        self.days.values().flat_map(move |d| d.statements.iter().filter(move |s| s.account.account_id == *account))
    }
}
