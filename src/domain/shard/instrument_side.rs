//! The instrument side of a shard: matching held orders on the books it owns, cancels and
//! modifies, and reporting every trade to the account shards of both sides. The book is the
//! authority on an order's remaining volume; account shards mirror what it reports.

use super::msg::{FillReport, MatchReport, MatchRequest, MatchResult, ModifyReport, PeerMsg};
use super::{order_shard, RestInfo, ShardEngine, StepOutput};
use crate::domain::book::{Incoming, MatchOutcome};
use crate::domain::event::Event;
use crate::domain::risk::RejectCode;
use crate::domain::types::*;

/// How many opposite levels FIVELEVEL orders may take.
const FIVE_LEVELS: usize = 5;

impl ShardEngine {
    pub(super) fn on_match(&mut self, ts: TimestampNs, req: &MatchRequest, out: &mut StepOutput) {
        let instrument = req.instrument;
        let reply_to = order_shard(req.order_id, self.shards);
        let Some(book) = self.books[instrument as usize].as_mut() else {
            return;
        };
        let opposite = req.direction.opposite();
        let match_limit = match req.price_type {
            PriceType::Limit => req.limit_price,
            PriceType::Any => None,
            PriceType::Best => book.best(opposite),
            PriceType::FiveLevel => book.nth_level_price(opposite, FIVE_LEVELS),
        };
        let mut report = MatchReport {
            order_id: req.order_id,
            result: MatchResult::Accepted,
            match_limit,
            fills: Vec::new(),
            rested: 0,
            cancelled: 0,
            end_reason: RejectCode::NotFilledImmediately,
        };
        // The owner's status is the authority: an order checked on another shard just before
        // a suspension reached it is refused here.
        use crate::domain::instrument::InstrumentStatus;
        match self.instruments[instrument as usize].status {
            InstrumentStatus::Trading => {}
            InstrumentStatus::PreOpen => return self.rest_for_auction(req, report, out),
            _ => {
                report.result = MatchResult::Rejected(RejectCode::InstrumentNotTrading);
                self.send(reply_to, PeerMsg::Matched(report), out);
                return;
            }
        }
        if match_limit.is_none() && req.price_type != PriceType::Any {
            // BEST / FIVELEVEL against an empty side: accepted, then ends at once.
            report.cancelled = req.volume;
            report.end_reason = RejectCode::NoCounterparty;
            self.send(reply_to, PeerMsg::Matched(report), out);
            return;
        }
        let incoming = Incoming {
            order_id: req.order_id,
            owner: req.owner,
            direction: req.direction,
            limit: match_limit,
            volume: req.volume,
            min_fill: req.min_fill,
            rest_remainder: req.rests,
        };
        self.fills.clear();
        match book.submit(&incoming, &mut self.fills) {
            MatchOutcome::SelfTrade => report.result = MatchResult::Rejected(RejectCode::SelfTrade),
            MatchOutcome::BadPrice => report.result = MatchResult::Rejected(RejectCode::PriceOutOfBand),
            MatchOutcome::MinFillNotMet { .. } => report.cancelled = req.volume,
            MatchOutcome::Done { filled, rested, cancelled } => {
                report.fills =
                    self.report_fills(ts, instrument, req.order_id, req.offset, req.volume, req.direction, out);
                report.rested = rested;
                report.cancelled = cancelled;
                if cancelled > 0 && filled == 0 && req.price_type == PriceType::Any && report.fills.is_empty() {
                    report.end_reason = RejectCode::NoCounterparty;
                }
                if rested > 0 {
                    self.resting.insert(req.order_id, RestInfo { offset: req.offset });
                }
                self.touched.quote(instrument, filled > 0);
            }
        }
        self.send(reply_to, PeerMsg::Matched(report), out);
    }

    /// A pre-open order: rests without matching (the book may cross until the open), unless it
    /// is not an auction order or would cross the same account's own resting order.
    fn rest_for_auction(&mut self, req: &MatchRequest, mut report: MatchReport, out: &mut StepOutput) {
        let reply_to = order_shard(req.order_id, self.shards);
        let instrument = req.instrument;
        let Some(book) = self.books[instrument as usize].as_mut() else { return };
        let incoming = Incoming {
            order_id: req.order_id,
            owner: req.owner,
            direction: req.direction,
            limit: req.limit_price,
            volume: req.volume,
            min_fill: 0,
            rest_remainder: true,
        };
        let auction_order = req.price_type == PriceType::Limit && req.rests && req.min_fill == 0;
        if !auction_order {
            report.result = MatchResult::Rejected(RejectCode::AuctionOrdersOnly);
        } else if book.would_self_trade(&incoming) {
            report.result = MatchResult::Rejected(RejectCode::SelfTrade);
        } else if !book.rest_unmatched(&incoming) {
            report.result = MatchResult::Rejected(RejectCode::PriceOutOfBand);
        } else {
            report.rested = req.volume;
            self.resting.insert(req.order_id, RestInfo { offset: req.offset });
            self.touched.quote(instrument, false);
        }
        self.send(reply_to, PeerMsg::Matched(report), out);
    }

    /// The open after a pre-open auction: the book's crossing orders trade at one price, each
    /// side reported to its account shard as a maker fill (both were resting).
    pub(super) fn run_auction(&mut self, ts: TimestampNs, instrument: u32, out: &mut StepOutput) {
        let i = instrument as usize;
        let reference = self.instruments[i].pre_settlement;
        let Some(book) = self.books[i].as_mut() else { return };
        let (price, fills) = book.uncross(reference);
        self.touched.quote(instrument, !fills.is_empty());
        let Some(price) = price else { return };
        for fill in fills {
            let offset = |id: u64| self.resting.get(&id).map_or(Offset::Open, |r| r.offset);
            let (bid_offset, ask_offset) = (offset(fill.bid.order_id), offset(fill.ask.order_id));
            for (order, left) in [(fill.bid, fill.bid_left), (fill.ask, fill.ask_left)] {
                if left == 0 {
                    self.resting.remove(&order.order_id);
                }
            }
            // An auction trade has no aggressor; it is shown as the buyer's.
            let offsets = (bid_offset, ask_offset);
            let trade_id = self.record_trade(i, price, fill.volume, offsets, Direction::Buy, ts, out);
            for (order, left) in [(fill.bid, fill.bid_left), (fill.ask, fill.ask_left)] {
                let report = FillReport {
                    order_id: order.order_id,
                    trade_id,
                    price,
                    volume: fill.volume,
                    volume_left: left,
                    ts,
                };
                self.send(order_shard(order.order_id, self.shards), PeerMsg::MakerFill(report), out);
            }
        }
    }

    /// One trade of instrument `i` at `price`: open interest (up when both sides open, down
    /// when both close), the mark, a trade id, the market data and the public trade event.
    /// Returns the trade id.
    #[allow(clippy::too_many_arguments)]
    fn record_trade(
        &mut self,
        i: usize,
        price: Price,
        volume: Volume,
        offsets: (Offset, Offset),
        aggressor: Direction,
        ts: TimestampNs,
        out: &mut StepOutput,
    ) -> u64 {
        self.open_interest[i] += match (offsets.0 == Offset::Open, offsets.1 == Offset::Open) {
            (true, true) => volume,
            (false, false) => -volume,
            _ => 0,
        };
        self.marks[i] = price;
        let trade_id = self.next_trade_n * u64::from(self.shards) + u64::from(self.shard);
        self.next_trade_n += 1;
        if let Some(market) = self.markets[i].as_mut() {
            market.on_trade(price, volume, self.open_interest[i], ts);
        }
        let inst = &self.instruments[i];
        out.events.push(Event::MarketTrade {
            ts,
            trade_id,
            exchange_id: inst.exchange_id,
            instrument_id: inst.instrument_id,
            price,
            volume,
            aggressor,
        });
        trade_id
    }

    /// Turns the fills in `self.fills` (taker `taker_id` with `taker_volume` lots before them)
    /// into trades: open interest, mark, market data, a report per maker sent to its account
    /// shard; returns the taker's reports.
    #[allow(clippy::too_many_arguments)]
    fn report_fills(
        &mut self,
        ts: TimestampNs,
        instrument: u32,
        taker_id: u64,
        taker_offset: Offset,
        taker_volume: Volume,
        taker_direction: Direction,
        out: &mut StepOutput,
    ) -> Vec<FillReport> {
        let i = instrument as usize;
        let mut taker_left = taker_volume;
        let mut taker_reports = Vec::with_capacity(self.fills.len());
        for n in 0..self.fills.len() {
            let fill = self.fills[n];
            let maker_offset = self.resting.get(&fill.maker_order_id).map_or(Offset::Open, |r| r.offset);
            if fill.maker_volume_left == 0 {
                self.resting.remove(&fill.maker_order_id);
            }
            let offsets = (taker_offset, maker_offset);
            let trade_id = self.record_trade(i, fill.price, fill.volume, offsets, taker_direction, ts, out);
            taker_left -= fill.volume;
            taker_reports.push(FillReport {
                order_id: taker_id,
                trade_id,
                price: fill.price,
                volume: fill.volume,
                volume_left: taker_left,
                ts,
            });
            let maker = FillReport {
                order_id: fill.maker_order_id,
                trade_id,
                price: fill.price,
                volume: fill.volume,
                volume_left: fill.maker_volume_left,
                ts,
            };
            self.send(order_shard(fill.maker_order_id, self.shards), PeerMsg::MakerFill(maker), out);
        }
        taker_reports
    }

    pub(super) fn on_cancel(&mut self, order_id: u64, instrument: u32, out: &mut StepOutput) {
        let reply_to = order_shard(order_id, self.shards);
        let removed = self.books[instrument as usize].as_mut().and_then(|book| book.cancel(order_id));
        let msg = match removed {
            Some(order) => {
                self.resting.remove(&order_id);
                self.touched.quote(instrument, false);
                PeerMsg::CancelDone { order_id, volume: order.volume_left }
            }
            None => PeerMsg::CancelMissed { order_id },
        };
        self.send(reply_to, msg, out);
    }

    pub(super) fn on_modify(
        &mut self,
        ts: TimestampNs,
        order_id: u64,
        instrument: u32,
        price: Price,
        volume: Volume,
        out: &mut StepOutput,
    ) {
        let reply_to = order_shard(order_id, self.shards);
        let Some(book) = self.books[instrument as usize].as_mut() else {
            return;
        };
        let Some(resting) = book.order(order_id).copied() else {
            let msg = PeerMsg::ModifyFailed { order_id, code: RejectCode::OrderNotFound, live: None };
            self.send(reply_to, msg, out);
            return;
        };
        if book.in_auction() && (price != resting.price || volume > resting.volume_left) {
            // Re-queueing could trade; in the pre-open auction nothing trades before the open.
            let live = Some((resting.price, resting.volume_left));
            let msg = PeerMsg::ModifyFailed { order_id, code: RejectCode::AuctionOrdersOnly, live };
            self.send(reply_to, msg, out);
            return;
        }
        if price == resting.price && volume <= resting.volume_left {
            // A pure decrease keeps its place in the queue (equal: trades since made it one).
            if volume < resting.volume_left {
                book.reduce(order_id, volume);
                self.touched.quote(instrument, false);
            }
            let report = ModifyReport { order_id, price, volume, kept_priority: true, fills: Vec::new() };
            self.send(reply_to, PeerMsg::ModifyDone(report), out);
            return;
        }
        self.fills.clear();
        match book.reprice(order_id, price, volume, &mut self.fills) {
            Some(MatchOutcome::Done { .. }) => {
                let offset = self.resting.get(&order_id).map_or(Offset::Open, |r| r.offset);
                let traded = !self.fills.is_empty();
                let fills = self.report_fills(ts, instrument, order_id, offset, volume, resting.direction, out);
                if fills.last().is_some_and(|f| f.volume_left == 0) {
                    self.resting.remove(&order_id);
                }
                self.touched.quote(instrument, traded);
                let report = ModifyReport { order_id, price, volume, kept_priority: false, fills };
                self.send(reply_to, PeerMsg::ModifyDone(report), out);
            }
            outcome => {
                let code = if outcome == Some(MatchOutcome::SelfTrade) {
                    RejectCode::SelfTrade
                } else {
                    RejectCode::OrderNotFound
                };
                let live = Some((resting.price, resting.volume_left));
                self.send(reply_to, PeerMsg::ModifyFailed { order_id, code, live }, out);
            }
        }
    }
}
