//! What one engine step touched.

use crate::domain::types::Offset;

/// Accounts, positions and quotes a step changed, to report at its end once each (both
/// engines), and the instruments that traded (for the shard engine's marks).
#[derive(Clone, Debug, Default)]
pub struct Touched {
    pub accounts: Vec<u32>,
    pub positions: Vec<(u32, u32)>,
    /// Instruments whose book changed, and whether they traded.
    pub quotes: Vec<(u32, bool)>,
    /// Instruments that traded this step, for the marks sent to the other shards.
    pub marked: Vec<u32>,
}

impl Touched {
    pub fn account(&mut self, account: u32) {
        if !self.accounts.contains(&account) {
            self.accounts.push(account);
        }
    }

    pub fn position(&mut self, account: u32, instrument: u32) {
        self.account(account);
        if !self.positions.contains(&(account, instrument)) {
            self.positions.push((account, instrument));
        }
    }

    pub fn hold(&mut self, account: u32, instrument: u32, offset: Offset) {
        if offset == Offset::Open {
            self.account(account);
        } else {
            self.position(account, instrument);
        }
    }

    pub fn quote(&mut self, instrument: u32, traded: bool) {
        match self.quotes.iter_mut().find(|(i, _)| *i == instrument) {
            Some(entry) => entry.1 |= traded,
            None => self.quotes.push((instrument, traded)),
        }
        if traded && !self.marked.contains(&instrument) {
            self.marked.push(instrument);
        }
    }
}

impl Touched {
    pub fn clear(&mut self) {
        self.accounts.clear();
        self.positions.clear();
        self.quotes.clear();
        self.marked.clear();
    }
}
