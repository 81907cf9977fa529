//! A shard's state as a serialisable dump, the checks one shard can make alone (after every
//! step in debug builds), and the checks over all shards together (when no message is in
//! flight: tests, `/admin/state`).

use super::ShardEngine;
use crate::domain::engine::{account_states, AccountState, BookDump, InstrumentState};
use crate::domain::ledger::order::LiveOrder;
use crate::domain::market_data::Quote;
use crate::domain::types::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// Everything one shard holds, in a deterministic order.
#[derive(Clone, Debug, Serialize)]
pub struct ShardState {
    pub shard: u16,
    pub trading_day: u32,
    pub next_order_n: u64,
    pub next_trade_n: u64,
    /// Last message sequence sent to / received from each shard.
    pub sent: Vec<u64>,
    pub received: Vec<u64>,
    /// This shard's marks of every instrument (the owner's last trade, as far as it has heard).
    #[serde(with = "fixed4_vec")]
    pub marks: Vec<Price>,
    /// Instruments this shard owns.
    pub instruments: Vec<InstrumentState>,
    pub books: Vec<BookDump>,
    pub quotes: Vec<Quote>,
    /// Accounts this shard owns, by id.
    pub accounts: Vec<AccountState>,
    pub live_orders: Vec<LiveOrder>,
}

mod fixed4_vec {
    use crate::domain::types::Price;
    use serde::ser::SerializeSeq;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(prices: &[Price], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(prices.len()))?;
        for p in prices {
            seq.serialize_element(&(*p as f64 / crate::domain::types::PRICE_SCALE as f64))?;
        }
        seq.end()
    }
}

impl ShardEngine {
    pub fn state(&self) -> ShardState {
        let mut instruments = Vec::new();
        let mut books = Vec::new();
        let mut quotes = Vec::new();
        for (i, inst) in self.instruments.iter().enumerate() {
            let (Some(book), Some(market)) = (&self.books[i], &self.markets[i]) else {
                continue;
            };
            instruments.push(InstrumentState {
                exchange_id: inst.exchange_id,
                instrument_id: inst.instrument_id,
                status: inst.status,
                pre_settlement: inst.pre_settlement,
                upper_limit: inst.upper_limit,
                lower_limit: inst.lower_limit,
                mark_price: self.marks[i],
                open_interest: self.open_interest[i],
            });
            let mut bids = Vec::new();
            let mut asks = Vec::new();
            book.for_each_order(Direction::Buy, |o| bids.push(o.into()));
            book.for_each_order(Direction::Sell, |o| asks.push(o.into()));
            books.push(BookDump { instrument_id: inst.instrument_id, bids, asks });
            quotes.push(*market.quote());
        }
        let mut accounts = account_states(&self.ledger, &self.instruments, &self.marks);
        accounts.sort_by(|a, b| a.account.account_id.as_str().cmp(b.account.account_id.as_str()));
        ShardState {
            shard: self.shard,
            trading_day: self.trading_day,
            next_order_n: self.next_order_n,
            next_trade_n: self.next_trade_n,
            sent: self.sent.clone(),
            received: self.received.clone(),
            marks: self.marks.clone(),
            instruments,
            books,
            quotes,
            accounts,
            live_orders: self.ledger.live_orders_sorted(),
        }
    }

    /// What holds on this shard alone after every step: frozen == what its live orders need,
    /// the account identities, books consistent, quotes equal to the books.
    pub fn check_local(&self) -> Result<(), String> {
        self.ledger.check_holds()?;
        for slot in 0..self.ledger.accounts().len() as u32 {
            let s = self.ledger.snapshot(slot, &self.instruments, &self.marks);
            if s.static_balance != s.pre_balance + s.deposit - s.withdraw
                || s.balance != s.static_balance + s.close_profit - s.commission - s.premium + s.position_profit
                || s.available != s.balance - s.margin - s.frozen_margin - s.frozen_commission - s.frozen_premium
            {
                return Err(format!("account {} breaks the balance identities", s.account_id));
            }
        }
        for (i, book) in self.books.iter().enumerate() {
            let (Some(book), Some(market)) = (book, &self.markets[i]) else {
                continue;
            };
            let id = self.instruments[i].instrument_id;
            book.check_invariants().map_err(|e| format!("{id}: {e}"))?;
            let quote = market.quote();
            for (direction, prices, volumes) in [
                (Direction::Buy, &quote.bid_price, &quote.bid_volume),
                (Direction::Sell, &quote.ask_price, &quote.ask_volume),
            ] {
                let mut n = 0;
                let mut same = true;
                book.for_each_level(direction, prices.len(), |price, volume, _| {
                    same &= prices[n] == Some(price) && volumes[n] == volume;
                    n += 1;
                });
                same &= prices[n..].iter().all(Option::is_none) && volumes[n..].iter().all(|&v| v == 0);
                if !same {
                    return Err(format!("{id}: quote depth differs from the book"));
                }
            }
        }
        Ok(())
    }
}

/// SPEC §2 invariants over all shards, valid when no message is in flight (every `sent` equals
/// its peer's `received`): marks agree, zero-sum profits, long == short == open interest per
/// instrument, every resting order live in its account's ledger with the same volume and
/// every live order resting.
pub fn check_cluster(states: &[ShardState]) -> Result<(), String> {
    for a in states {
        for b in states {
            if a.sent[b.shard as usize] != b.received[a.shard as usize] {
                return Err(format!(
                    "messages in flight: shard {} sent {} to shard {}, which has {}",
                    a.shard, a.sent[b.shard as usize], b.shard, b.received[a.shard as usize]
                ));
            }
        }
    }
    let mut owner_marks: BTreeMap<&str, (Price, Volume)> = BTreeMap::new();
    for s in states {
        for inst in &s.instruments {
            owner_marks.insert(inst.instrument_id.as_str(), (inst.mark_price, inst.open_interest));
        }
    }
    let (mut profit, mut balance, mut commission, mut statics): (i128, i128, i128, i128) = (0, 0, 0, 0);
    let mut long: BTreeMap<&str, Volume> = BTreeMap::new();
    let mut short: BTreeMap<&str, Volume> = BTreeMap::new();
    for s in states {
        for a in &s.accounts {
            profit += (a.account.close_profit + a.account.position_profit) as i128;
            balance += a.account.balance as i128;
            commission += a.account.commission as i128;
            statics += a.account.static_balance as i128;
            for p in &a.positions {
                *long.entry(p.instrument_id.as_str()).or_default() += p.volume_long;
                *short.entry(p.instrument_id.as_str()).or_default() += p.volume_short;
                if let Some(&(mark, _)) = owner_marks.get(p.instrument_id.as_str()) {
                    if p.last_price != mark {
                        return Err(format!(
                            "shard {} marks {} at {} but its owner at {}",
                            s.shard, p.instrument_id, p.last_price, mark
                        ));
                    }
                }
            }
        }
    }
    if profit != 0 {
        return Err(format!("not zero-sum: close + position profit over accounts = {profit}"));
    }
    if balance + commission != statics {
        return Err("sum(balance) + sum(commission) != sum(static_balance)".into());
    }
    for (id, &(_, oi)) in &owner_marks {
        let (l, sh) = (long.get(id).copied().unwrap_or(0), short.get(id).copied().unwrap_or(0));
        if l != sh || l != oi {
            return Err(format!("{id}: long {l} short {sh} open interest {oi}"));
        }
    }
    let mut live: BTreeMap<u64, Volume> = BTreeMap::new();
    for s in states {
        for o in &s.live_orders {
            live.insert(o.order_id, o.volume_left);
        }
    }
    let mut resting = 0;
    for s in states {
        for book in &s.books {
            for o in book.bids.iter().chain(&book.asks) {
                resting += 1;
                if live.get(&o.order_id) != Some(&o.volume_left) {
                    return Err(format!("resting order {} does not match its account's ledger", o.order_id));
                }
            }
        }
    }
    if resting != live.len() {
        return Err(format!("{resting} resting orders but {} live in the ledgers", live.len()));
    }
    Ok(())
}
