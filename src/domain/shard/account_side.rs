//! The account side of a shard: client commands for its accounts (R1: checks and holds), and
//! applying what instrument shards report (R2: fills, endings, modify results).
//!
//! While an order's `Match` or `Modify` is in flight the ledger may hold more for it than the
//! book has left (never less): every report from the instrument shard carries the book's
//! truth, and the ledger is set to it.

use super::msg::{Completion, FillReport, MatchReport, MatchRequest, MatchResult, ModifyReport, Outcome, PeerMsg};
use super::{ShardEngine, StepOutput};
use crate::domain::account_ops;
use crate::domain::command::{Command, InsertOrder};
use crate::domain::event::{Event, OrderInfo, Reason, TradeSide};
use crate::domain::ledger::order::LiveOrder;
use crate::domain::ledger::HoldRequest;
use crate::domain::name::{AccountId, ClientOrderId};
use crate::domain::order_checks::{check_order, check_price};
use crate::domain::risk::RejectCode;
use crate::domain::types::*;

/// The few fields of a live order a modify needs (a `LiveOrder` is large to copy).
struct OrderKey {
    order_id: u64,
    account: u32,
    instrument: u32,
    offset: Offset,
    limit_price: Option<Price>,
    volume_left: Volume,
}

fn done(result: Result<(), RejectCode>) -> Outcome {
    Outcome::Done(result)
}

impl ShardEngine {
    pub(super) fn client_command(&mut self, ts: TimestampNs, command: &Command, out: &mut StepOutput) -> Outcome {
        match *command {
            Command::OpenAccount { account_id, .. } => {
                done(account_ops::open_account(&mut self.ledger, &mut self.touched, ts, account_id, &mut out.events))
            }
            Command::Deposit { account_id, amount, .. } => done(self.transfer(ts, account_id, amount, true, out)),
            Command::Withdraw { account_id, amount, .. } => done(self.transfer(ts, account_id, amount, false, out)),
            Command::SetAccountFrozen { account_id, frozen, mode, .. } => done(account_ops::set_frozen(
                &mut self.ledger,
                &mut self.touched,
                ts,
                account_id,
                frozen,
                mode,
                &mut out.events,
            )),
            Command::InsertOrder { ref order, .. } => self.insert_order(ts, order, out),
            Command::CancelOrder { account_id, order_id, client_order_id, .. } => {
                self.cancel_order(account_id, order_id, client_order_id, out)
            }
            Command::ModifyOrder { account_id, order_id, client_order_id, new_price, new_volume, .. } => {
                self.modify_order(account_id, order_id, client_order_id, new_price, new_volume, out)
            }
            // Run by the instrument's owner (the server sends it there).
            Command::SetSettlementPrice { instrument_id, price, .. } => {
                let result = match self.instrument_slot(&instrument_id) {
                    None => Err(RejectCode::InstrumentNotFound),
                    Some(slot) => self.set_settlement_price(slot, price).map(|()| {
                        let instrument_id = self.instruments[slot as usize].instrument_id;
                        out.events.push(Event::SettlementPriceSet { ts, instrument_id, price });
                    }),
                };
                done(result)
            }
            // Settlement across shards is a cut the server coordinates (`settlement.rs`), not
            // one shard's command; marks and forced liquidation are not sharded yet.
            Command::MarkPrice { .. } | Command::Settle { .. } | Command::ForceLiquidate { .. } => {
                done(Err(RejectCode::NotShardedYet))
            }
        }
    }

    fn transfer(
        &mut self,
        ts: TimestampNs,
        account_id: AccountId,
        amount: Money,
        is_deposit: bool,
        out: &mut StepOutput,
    ) -> Result<(), RejectCode> {
        let (ledger, touched) = (&mut self.ledger, &mut self.touched);
        account_ops::transfer(
            ledger,
            &self.instruments,
            &self.marks,
            touched,
            ts,
            account_id,
            amount,
            is_deposit,
            &mut out.events,
        )
    }

    fn check_price(&self, instrument: u32, price: Price) -> Result<(), RejectCode> {
        check_price(&self.instruments[instrument as usize], price)
    }

    /// The static checks of SPEC §2, as the single engine makes them.
    fn validate(&self, order: &InsertOrder) -> Result<(u32, u32), RejectCode> {
        let account = self.ledger.slot_of(&order.account_id).ok_or(RejectCode::AccountNotFound)?;
        let instrument = self.instrument_slot(&order.instrument_id).ok_or(RejectCode::InstrumentNotFound)?;
        check_order(&self.instruments[instrument as usize], order)?;
        Ok((account, instrument))
    }

    /// R1: checks and holds, then sends the order to its instrument's shard.
    fn insert_order(&mut self, ts: TimestampNs, order: &InsertOrder, out: &mut StepOutput) -> Outcome {
        let order_id = self.next_order_n * u64::from(self.shards) + u64::from(self.shard);
        let held = self.validate(order).and_then(|(account, instrument)| {
            let req = HoldRequest {
                order_id,
                client_order_id: order.client_order_id,
                account,
                instrument,
                direction: order.direction,
                offset: order.offset,
                price_type: order.price_type,
                time_condition: order.time_condition,
                volume_condition: order.volume_condition,
                // Market-like orders hold at the band edge until the book says their price.
                limit_price: if order.price_type == PriceType::Limit { order.limit_price } else { None },
                volume: order.volume,
                insert_time_ns: ts,
            };
            self.ledger.hold(&req, &self.instruments, &self.marks).map(|()| (account, instrument))
        });
        let (account, instrument) = match held {
            Ok(slots) => slots,
            Err(code) => {
                out.events.push(Event::OrderRejected {
                    ts,
                    account_id: order.account_id,
                    client_order_id: order.client_order_id,
                    instrument_id: order.instrument_id,
                    reason: Reason::from(code),
                });
                return done(Err(code));
            }
        };
        self.next_order_n += 1;
        // Until the book answers, the order may be cancelled but not modified.
        self.modifying.insert(order_id, ());
        let req = MatchRequest {
            order_id,
            owner: (u64::from(self.shard) << 32) | u64::from(account),
            instrument,
            direction: order.direction,
            offset: order.offset,
            price_type: order.price_type,
            limit_price: order.limit_price,
            volume: order.volume,
            min_fill: match order.volume_condition {
                VolumeCondition::Any => 0,
                VolumeCondition::Min => order.min_volume,
                VolumeCondition::All => order.volume,
            },
            rests: order.time_condition != TimeCondition::Ioc && order.price_type != PriceType::Any,
        };
        self.send(self.instrument_owner[instrument as usize], PeerMsg::Match(req), out);
        Outcome::Pending(order_id)
    }

    /// A live order of `account_id` by exchange or client id; another account's is "not found".
    fn find_order(
        &self,
        account_id: &AccountId,
        order_id: Option<u64>,
        client_order_id: Option<ClientOrderId>,
    ) -> Result<&LiveOrder, RejectCode> {
        if let Some(id) = order_id {
            // The order's own account, when it is `account_id`'s (ids are unique), saves
            // hashing the id.
            if let Some(o) = self.ledger.order(id) {
                if self.ledger.account(o.account).account_id == *account_id {
                    return Ok(o);
                }
            }
            self.ledger.slot_of(account_id).ok_or(RejectCode::AccountNotFound)?;
            return Err(RejectCode::OrderNotFound);
        }
        let account = self.ledger.slot_of(account_id).ok_or(RejectCode::AccountNotFound)?;
        let id = match client_order_id {
            Some(client) => self.ledger.order_by_client(account, &client).ok_or(RejectCode::OrderNotFound)?,
            None => return Err(RejectCode::OrderNotFound),
        };
        match self.ledger.order(id) {
            Some(o) if o.account == account => Ok(o),
            _ => Err(RejectCode::OrderNotFound),
        }
    }

    fn cancel_order(
        &mut self,
        account_id: AccountId,
        order_id: Option<u64>,
        client_order_id: Option<ClientOrderId>,
        out: &mut StepOutput,
    ) -> Outcome {
        match self.find_order(&account_id, order_id, client_order_id) {
            Ok(order) => {
                let (order_id, instrument) = (order.order_id, order.instrument);
                let msg = PeerMsg::Cancel { order_id, instrument };
                self.send(self.instrument_owner[instrument as usize], msg, out);
                Outcome::Pending(order_id)
            }
            Err(code) => done(Err(code)),
        }
    }

    fn modify_order(
        &mut self,
        account_id: AccountId,
        order_id: Option<u64>,
        client_order_id: Option<ClientOrderId>,
        new_price: Option<Price>,
        new_volume: Option<Volume>,
        out: &mut StepOutput,
    ) -> Outcome {
        let order = match self.find_order(&account_id, order_id, client_order_id) {
            Ok(o) => OrderKey {
                order_id: o.order_id,
                account: o.account,
                instrument: o.instrument,
                offset: o.offset,
                limit_price: o.limit_price,
                volume_left: o.volume_left,
            },
            Err(code) => return done(Err(code)),
        };
        if self.modifying.contains_key(&order.order_id) {
            return done(Err(RejectCode::ModifyInFlight));
        }
        let instrument = order.instrument;
        // Live orders hold at their resting price (BEST / FIVELEVEL ones once they rested);
        // one whose match is still in flight has none yet and cannot be modified.
        let Some(resting_price) = order.limit_price else {
            return done(Err(RejectCode::OrderNotFound));
        };
        let price = new_price.unwrap_or(resting_price);
        let volume = new_volume.unwrap_or(order.volume_left);
        if price == resting_price && volume == order.volume_left {
            return done(Err(RejectCode::InvalidModify));
        }
        if volume < 1 || volume > self.instruments[instrument as usize].max_order_volume {
            return done(Err(RejectCode::InvalidVolume));
        }
        if let Err(code) = self.check_price(instrument, price) {
            return done(Err(code));
        }
        if price != resting_price || volume > order.volume_left {
            // Reserve for the new price at the larger of the new and current volume: fills
            // the book made before it sees the modify may still arrive for the current one.
            let reserve = volume.max(order.volume_left);
            let reheld = self.ledger.rehold(order.order_id, Some(price), reserve, &self.instruments, &self.marks);
            if let Err(code) = reheld {
                return done(Err(code));
            }
            self.touched.hold(order.account, instrument, order.offset);
        }
        self.modifying.insert(order.order_id, ());
        let msg = PeerMsg::Modify { order_id: order.order_id, instrument, price, volume };
        self.send(self.instrument_owner[instrument as usize], msg, out);
        Outcome::Pending(order.order_id)
    }

    fn order_info(&self, order: &LiveOrder, match_limit: Option<Price>) -> OrderInfo {
        let inst = &self.instruments[order.instrument as usize];
        OrderInfo {
            order_id: order.order_id,
            client_order_id: order.client_order_id,
            account_id: self.ledger.account(order.account).account_id,
            exchange_id: inst.exchange_id,
            instrument_id: inst.instrument_id,
            direction: order.direction,
            offset: order.offset,
            price_type: order.price_type,
            limit_price: match_limit,
            volume: order.volume_orign,
            time_condition: order.time_condition,
            volume_condition: order.volume_condition,
        }
    }

    /// R2 for the taker: how its match ended.
    pub(super) fn on_matched(&mut self, ts: TimestampNs, report: &MatchReport, out: &mut StepOutput) {
        let order_id = report.order_id;
        self.modifying.remove(&order_id);
        let Some(order) = self.ledger.order(order_id) else {
            return;
        };
        let (account, instrument, offset, price_type) =
            (order.account, order.instrument, order.offset, order.price_type);
        if let MatchResult::Rejected(code) = report.result {
            let (client_order_id, volume_left) = (order.client_order_id, order.volume_left);
            self.ledger.release(order_id, volume_left);
            let inst = &self.instruments[instrument as usize];
            out.events.push(Event::OrderRejected {
                ts,
                account_id: self.ledger.account(account).account_id,
                client_order_id,
                instrument_id: inst.instrument_id,
                reason: Reason::from(code),
            });
            out.completions.push(Completion::Submit { order_id, result: Err(code) });
            return;
        }
        out.events.push(Event::OrderAccepted { ts, order: self.order_info(order, report.match_limit) });
        for fill in &report.fills {
            self.apply_fill(fill, out);
        }
        if report.rested > 0 && price_type != PriceType::Limit {
            // BEST / FIVELEVEL held at the band edge; what rests now holds at its price.
            self.ledger.set_hold(order_id, report.match_limit, report.rested, &self.instruments);
        }
        if report.cancelled > 0 {
            self.end_order(ts, order_id, report.cancelled, report.end_reason, out);
        } else {
            self.touched.hold(account, instrument, offset);
        }
        out.completions.push(Completion::Submit { order_id, result: Ok(()) });
    }

    /// Applies one trade to this side's account.
    pub(super) fn apply_fill(&mut self, fill: &FillReport, out: &mut StepOutput) {
        // A fill the ledger cannot hold (unknown order, more than it has left) is not this
        // venue's: it changes nothing.
        let Some(order) = self.ledger.order(fill.order_id) else {
            return;
        };
        if fill.volume < 1 || fill.volume > order.volume_left {
            return;
        }
        let (account, instrument, direction, offset, client_order_id) =
            (order.account, order.instrument, order.direction, order.offset, order.client_order_id);
        let inst = &self.instruments[instrument as usize];
        let applied = self.ledger.fill(fill.order_id, fill.price, fill.volume, inst);
        if fill.volume_left == 0 && applied.volume_left > 0 {
            // The book is done with it; a modify reserve beyond that is given back.
            self.ledger.release(fill.order_id, applied.volume_left);
        }
        let inst = &self.instruments[instrument as usize];
        out.events.push(Event::Fill {
            ts: fill.ts,
            trade_id: fill.trade_id,
            exchange_id: inst.exchange_id,
            instrument_id: inst.instrument_id,
            price: fill.price,
            volume: fill.volume,
            direction,
            side: TradeSide {
                order_id: fill.order_id,
                client_order_id,
                account_id: self.ledger.account(account).account_id,
                offset,
                commission: applied.commission,
                close_profit: applied.close_profit,
                volume_left: fill.volume_left,
            },
        });
        self.touched.position(account, instrument);
    }

    /// Gives back the whole hold of an order the book no longer has, reporting `volume` lots
    /// (the book's count) ended with `why`.
    fn end_order(&mut self, ts: TimestampNs, order_id: u64, volume: Volume, why: RejectCode, out: &mut StepOutput) {
        let Some(order) = self.ledger.order(order_id) else {
            return;
        };
        let (account, instrument, offset, client_order_id) =
            (order.account, order.instrument, order.offset, order.client_order_id);
        self.ledger.release(order_id, order.volume_left);
        out.events.push(Event::OrderCancelled {
            ts,
            order_id,
            client_order_id,
            account_id: self.ledger.account(account).account_id,
            instrument_id: self.instruments[instrument as usize].instrument_id,
            volume_cancelled: volume,
            reason: Reason::from(why),
        });
        self.touched.hold(account, instrument, offset);
    }

    pub(super) fn on_cancel_done(&mut self, ts: TimestampNs, order_id: u64, volume: Volume, out: &mut StepOutput) {
        // Settlement's own cancels answer no request.
        if let Some(why) = self.take_settle_cancel(order_id) {
            self.end_order(ts, order_id, volume, why, out);
            return;
        }
        let result = if self.ledger.order(order_id).is_some() {
            self.end_order(ts, order_id, volume, RejectCode::CancelledByUser, out);
            Ok(())
        } else {
            Err(RejectCode::OrderNotFound)
        };
        out.completions.push(Completion::Cancel { order_id, result });
    }

    pub(super) fn on_modify_done(&mut self, ts: TimestampNs, report: &ModifyReport, out: &mut StepOutput) {
        let order_id = report.order_id;
        self.modifying.remove(&order_id);
        let Some(order) = self.ledger.order(order_id) else {
            return;
        };
        let (account, instrument, offset, client_order_id) =
            (order.account, order.instrument, order.offset, order.client_order_id);
        self.ledger.set_hold(order_id, Some(report.price), report.volume, &self.instruments);
        out.events.push(Event::OrderModified {
            ts,
            order_id,
            client_order_id,
            account_id: self.ledger.account(account).account_id,
            limit_price: Some(report.price),
            volume_left: report.volume,
            kept_priority: report.kept_priority,
        });
        for fill in &report.fills {
            self.apply_fill(fill, out);
        }
        self.touched.hold(account, instrument, offset);
        out.completions.push(Completion::Modify { order_id, result: Ok(()) });
    }

    pub(super) fn on_modify_failed(
        &mut self,
        order_id: u64,
        code: RejectCode,
        live: Option<(Price, Volume)>,
        out: &mut StepOutput,
    ) {
        self.modifying.remove(&order_id);
        if let Some(order) = self.ledger.order(order_id) {
            let (account, instrument, offset, volume_left) =
                (order.account, order.instrument, order.offset, order.volume_left);
            match live {
                // Back to what the book has: the refused modify changes nothing.
                Some((price, volume)) => self.ledger.set_hold(order_id, Some(price), volume, &self.instruments),
                None => {
                    self.ledger.release(order_id, volume_left);
                }
            }
            self.touched.hold(account, instrument, offset);
        }
        out.completions.push(Completion::Modify { order_id, result: Err(code) });
    }
}
