//! Accounts, positions and live-order holds: the account side of the exchange.
//!
//! In the sharded server this is what an account shard owns (exchange-core's risk engine):
//! `hold` is the pre-trade step (R1), `fill`/`release` the post-trade settle (R2). It knows
//! instruments and mark prices only as arguments.

pub mod account;
pub mod order;
pub mod position;

use crate::domain::fast_hash::FastMap;
use crate::domain::instrument::{CommissionKind, Instrument};
use crate::domain::name::{AccountId, ClientOrderId};
use crate::domain::risk::RejectCode;
use crate::domain::types::*;
use account::{Account, AccountSnapshot, AccountStatus};
use order::LiveOrder;
use position::Side;

/// Largest single deposit or withdrawal: 1e12 yuan.
pub const MAX_TRANSFER: Money = 1_000_000_000_000 * MONEY_SCALE;
/// Most an account may hold in deposits: 1e14 yuan (1e18 units, a tenth of i64's range).
pub const MAX_ACCOUNT_FUNDS: Money = 100 * MAX_TRANSFER;
/// Most an account's positions and opening orders may be worth, all instruments together, for
/// an opening order to be taken: 1e14 yuan. Leverage would otherwise let funds within
/// `MAX_ACCOUNT_FUNDS` hold positions whose costs and profits pass i64's range (9.2e14 yuan);
/// at this bound they stay 9x inside it however far the marks move within later bands.
pub const MAX_POSITION_VALUE: Money = MAX_ACCOUNT_FUNDS;

/// An order asking for a hold. Prices are already validated against tick and band.
#[derive(Clone, Copy, Debug)]
pub struct HoldRequest {
    pub order_id: u64,
    pub client_order_id: ClientOrderId,
    pub account: u32,
    pub instrument: u32,
    pub direction: Direction,
    pub offset: Offset,
    pub price_type: PriceType,
    pub time_condition: TimeCondition,
    pub volume_condition: VolumeCondition,
    pub limit_price: Option<Price>,
    pub volume: Volume,
    pub insert_time_ns: TimestampNs,
}

/// What one fill did to one order's account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillApplied {
    pub account: u32,
    pub commission: Money,
    pub close_profit: Money,
    pub volume_left: Volume,
    pub offset: Offset,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    accounts: Vec<Account>,
    by_id: FastMap<AccountId, u32>,
    orders: FastMap<u64, LiveOrder>,
    by_client: FastMap<(u32, ClientOrderId), u64>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// A ledger whose live-order maps are reserved for `live_orders` orders.
    pub fn with_capacity(live_orders: usize) -> Self {
        let mut ledger = Self::default();
        ledger.orders.reserve(live_orders);
        ledger.by_client.reserve(live_orders);
        ledger
    }

    /// Checks that every index the ledger holds points inside its tables (`instruments`
    /// instruments): a checkpoint's ledger is trusted once its checksum matches, and an index
    /// out of range would panic at its first use instead of stopping start-up with an error.
    pub fn check_indexes(&self, instruments: usize) -> Result<(), String> {
        let accounts = self.accounts.len();
        if self.by_id.values().any(|&slot| slot as usize >= accounts) {
            return Err(format!("an account index beyond the {accounts} accounts"));
        }
        for account in &self.accounts {
            if account.positions.iter().any(|p| p.instrument as usize >= instruments) {
                return Err(format!(
                    "account {}: a position in an instrument beyond {instruments}",
                    account.account_id
                ));
            }
        }
        for (id, order) in &self.orders {
            if order.account as usize >= accounts || order.instrument as usize >= instruments {
                return Err(format!("live order {id}: account or instrument index out of range"));
            }
        }
        if self.by_client.iter().any(|((slot, _), id)| *slot as usize >= accounts || !self.orders.contains_key(id)) {
            return Err("a client order id of no live order".to_owned());
        }
        Ok(())
    }

    /// Reserves the live-order maps for `live_orders` orders in all (as `with_capacity`).
    pub fn reserve_live_orders(&mut self, live_orders: usize) {
        self.orders.reserve(live_orders.saturating_sub(self.orders.len()));
        self.by_client.reserve(live_orders.saturating_sub(self.by_client.len()));
    }

    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    pub fn account(&self, slot: u32) -> &Account {
        &self.accounts[slot as usize]
    }

    pub fn slot_of(&self, account_id: &AccountId) -> Option<u32> {
        self.by_id.get(account_id).copied()
    }

    pub fn order(&self, order_id: u64) -> Option<&LiveOrder> {
        self.orders.get(&order_id)
    }

    pub fn order_by_client(&self, account: u32, client_order_id: &ClientOrderId) -> Option<u64> {
        self.by_client.get(&(account, *client_order_id)).copied()
    }

    /// Live orders sorted by order id (deterministic order for dumps and settlement).
    pub fn live_orders_sorted(&self) -> Vec<LiveOrder> {
        let mut all: Vec<LiveOrder> = self.orders.values().copied().collect();
        all.sort_by_key(|o| o.order_id);
        all
    }

    pub fn live_order_count(&self) -> usize {
        self.orders.len()
    }

    pub fn open_account(&mut self, account_id: AccountId) -> Result<u32, RejectCode> {
        if self.by_id.contains_key(&account_id) {
            return Err(RejectCode::AccountExists);
        }
        let slot = self.accounts.len() as u32;
        self.accounts.push(Account::new(account_id));
        self.by_id.insert(account_id, slot);
        Ok(slot)
    }

    pub fn deposit(&mut self, slot: u32, amount: Money) -> Result<(), RejectCode> {
        if amount <= 0 || amount > MAX_TRANSFER {
            return Err(RejectCode::InvalidAmount);
        }
        // Keep every sum far from i64's edge: an account holds at most 1e14 yuan of deposits.
        let account = &mut self.accounts[slot as usize];
        match account.deposit.checked_add(amount) {
            Some(total) if total - account.withdraw + account.pre_balance <= MAX_ACCOUNT_FUNDS => {
                account.deposit = total;
                Ok(())
            }
            _ => Err(RejectCode::InvalidAmount),
        }
    }

    pub fn withdraw(
        &mut self,
        slot: u32,
        amount: Money,
        instruments: &[Instrument],
        marks: &[Price],
    ) -> Result<(), RejectCode> {
        if amount <= 0 || amount > MAX_TRANSFER {
            return Err(RejectCode::InvalidAmount);
        }
        let account = &self.accounts[slot as usize];
        if !account.status.can_withdraw() {
            return Err(RejectCode::AccountFrozen);
        }
        // Unrealised gains are not withdrawable: the cap is available minus positive position profit.
        let snap = account.snapshot(instruments, marks);
        let withdrawable = snap.available - snap.position_profit.max(0);
        if amount > withdrawable {
            return Err(RejectCode::InsufficientFundsToWithdraw);
        }
        self.accounts[slot as usize].withdraw += amount;
        Ok(())
    }

    /// Recomputes every position's margin in `instrument` (its margin rates changed); returns
    /// the slots of the accounts that hold it.
    pub fn refresh_margins(&mut self, instrument: u32, inst: &Instrument) -> Vec<u32> {
        let mut held = Vec::new();
        for (slot, account) in self.accounts.iter_mut().enumerate() {
            if account.positions.iter().any(|p| p.instrument == instrument) {
                account.refresh_margin(instrument, inst);
                held.push(slot as u32);
            }
        }
        held
    }

    pub fn set_status(&mut self, slot: u32, status: AccountStatus) {
        self.accounts[slot as usize].status = status;
    }

    pub fn snapshot(&self, slot: u32, instruments: &[Instrument], marks: &[Price]) -> AccountSnapshot {
        self.accounts[slot as usize].snapshot(instruments, marks)
    }

    /// Pre-trade check and hold: freezes margin + commission for opens (failing if the account
    /// cannot pay) and position lots for closes. On error nothing changed.
    pub fn hold(&mut self, req: &HoldRequest, instruments: &[Instrument], marks: &[Price]) -> Result<(), RejectCode> {
        let account = &self.accounts[req.account as usize];
        if !account.status.can_trade() {
            return Err(RejectCode::AccountFrozen);
        }
        if self.by_client.contains_key(&(req.account, req.client_order_id)) {
            return Err(RejectCode::DuplicateOrderId);
        }
        let order = self.plan_hold(req, instruments, marks, None, true)?;
        apply_hold(&mut self.accounts, &order, 1);
        self.by_client.insert((order.account, order.client_order_id), order.order_id);
        self.orders.insert(order.order_id, order);
        Ok(())
    }

    /// Works out the hold for `req` without changing anything. `replacing` is a live order whose
    /// hold is given back first (modify), so its funds and lots count as available. Unchecked,
    /// it skips the funds, lots and limit checks (the book has already acted).
    fn plan_hold(
        &self,
        req: &HoldRequest,
        instruments: &[Instrument],
        marks: &[Price],
        replacing: Option<&LiveOrder>,
        checked: bool,
    ) -> Result<LiveOrder, RejectCode> {
        let input = PlanInput {
            account: req.account,
            instrument: req.instrument,
            direction: req.direction,
            offset: req.offset,
            limit_price: req.limit_price,
            volume: req.volume,
        };
        let plan = plan_fields(&self.accounts, &input, instruments, marks, replacing, checked)?;
        let mut order = LiveOrder {
            order_id: req.order_id,
            client_order_id: req.client_order_id,
            account: req.account,
            instrument: req.instrument,
            direction: req.direction,
            offset: req.offset,
            price_type: req.price_type,
            time_condition: req.time_condition,
            volume_condition: req.volume_condition,
            limit_price: req.limit_price,
            volume_orign: req.volume,
            volume_left: req.volume,
            frozen_margin_per_lot: 0,
            frozen_commission_per_lot: 0,
            frozen_his: 0,
            frozen_today: 0,
            frozen_commission_his_per_lot: 0,
            frozen_commission_today_per_lot: 0,
            insert_time_ns: req.insert_time_ns,
        };
        plan.write(&mut order);
        Ok(order)
    }

    /// Replaces a live order's price and/or volume, re-checking funds and lots with its current
    /// hold counted as free. On error nothing changed.
    pub fn rehold(
        &mut self,
        order_id: u64,
        limit_price: Option<Price>,
        volume: Volume,
        instruments: &[Instrument],
        marks: &[Price],
    ) -> Result<(), RejectCode> {
        let old = self.orders.get_mut(&order_id).ok_or(RejectCode::OrderNotFound)?;
        let active = self.accounts[old.account as usize].status.can_trade();
        if old.is_open() && volume == old.volume_left && active {
            return reprice_open_hold(&mut self.accounts, old, limit_price, instruments, marks);
        }
        // Re-queueing is a new order in all but name: a frozen account may only cancel or
        // shrink (a pure decrease does not come here).
        if !active {
            return Err(RejectCode::AccountFrozen);
        }
        replan(&mut self.accounts, old, limit_price, volume, instruments, marks, true)
    }

    /// Sets a live order's price and volume left to what its book reports, without checking
    /// funds or lots: the book has already acted (sharded engine; the account shard reserved
    /// enough before asking). Keeps `volume_orign - volume_left` as the volume traded.
    pub fn set_hold(&mut self, order_id: u64, limit_price: Option<Price>, volume: Volume, instruments: &[Instrument]) {
        let Some(old) = self.orders.get_mut(&order_id) else {
            return;
        };
        if volume <= 0 {
            let left = old.volume_left;
            self.release(order_id, left);
            return;
        }
        // Unchecked, the plan cannot fail.
        let _ = replan(&mut self.accounts, old, limit_price, volume, instruments, &[], false);
    }

    /// Puts back a live order exactly as `old` was (undoes a `rehold` whose book step failed).
    pub fn restore(&mut self, old: LiveOrder) {
        if let Some(current) = self.orders.get_mut(&old.order_id) {
            apply_hold(&mut self.accounts, current, -1);
            apply_hold(&mut self.accounts, &old, 1);
            *current = old;
        }
    }

    /// Gives back the hold of `volume` unfilled lots (cancel, or a pure volume decrease).
    /// Returns the order's remaining volume; at zero the order is gone.
    pub fn release(&mut self, order_id: u64, volume: Volume) -> Volume {
        let Some(order) = self.orders.get_mut(&order_id) else {
            return 0;
        };
        debug_assert!(volume > 0 && volume <= order.volume_left);
        apply_hold(&mut self.accounts, order, -1);
        order.volume_left -= volume;
        if !order.is_open() {
            // Give back today's lots first: his are consumed first on fills, so keep those.
            let from_today = volume.min(order.frozen_today);
            order.frozen_today -= from_today;
            order.frozen_his -= volume - from_today;
        }
        self.finish_update(order_id)
    }

    /// A pure volume decrease of a live order to `volume_left` lots (modify keeping priority):
    /// gives back the hold of the lots taken off and shrinks the order's size by as much, so
    /// `volume_orign - volume_left` stays the volume traded (as `rehold` keeps it).
    pub fn reduce(&mut self, order_id: u64, volume_left: Volume) -> Volume {
        let Some(order) = self.orders.get(&order_id) else {
            return 0;
        };
        let cut = order.volume_left - volume_left;
        debug_assert!(cut > 0 && volume_left > 0);
        let left = self.release(order_id, cut);
        if let Some(o) = self.orders.get_mut(&order_id) {
            o.volume_orign -= cut;
        }
        left
    }

    /// After the hold of a live order was taken off and the order changed in place: removes
    /// it if nothing is left, else puts its hold back on.
    fn finish_update(&mut self, order_id: u64) -> Volume {
        let order = self.orders.get_mut(&order_id).expect("order is live");
        if order.volume_left == 0 {
            let (account, client_order_id) = (order.account, order.client_order_id);
            self.orders.remove(&order_id);
            self.by_client.remove(&(account, client_order_id));
            // The position entry may now be empty; keep it (it is reused) unless nothing is held.
            let account = &mut self.accounts[account as usize];
            account.positions.retain(|p| !p.is_empty() || p.pending_open != 0);
            0
        } else {
            apply_hold(&mut self.accounts, order, 1);
            order.volume_left
        }
    }

    /// Applies a trade of `volume` lots at `price` to the order's account: positions, close
    /// profit, commission; releases the hold of the filled lots.
    pub fn fill(&mut self, order_id: u64, price: Price, volume: Volume, inst: &Instrument) -> FillApplied {
        let order = self.orders.get_mut(&order_id).expect("fill for an order the ledger holds");
        debug_assert!(volume > 0 && volume <= order.volume_left);
        apply_hold(&mut self.accounts, order, -1);
        let mult = inst.volume_multiple;
        let account = &mut self.accounts[order.account as usize];
        let position = account.position_mut(order.instrument);
        let mut commission = 0;
        let mut close_profit = 0;
        if order.is_open() {
            position.bucket_mut(Side::opened_by(order.direction), true).add(price, mult, volume);
            commission += inst.commission.compute(CommissionKind::Open, price, mult, volume);
        } else {
            let side = Side::closed_by(order.direction);
            let his = volume.min(order.frozen_his);
            let today = volume - his;
            order.frozen_his -= his;
            order.frozen_today -= today;
            for (lots, is_today, kind) in
                [(his, false, CommissionKind::Close), (today, true, CommissionKind::CloseToday)]
            {
                if lots == 0 {
                    continue;
                }
                let (_, position_cost) = position.bucket_mut(side, is_today).remove(lots);
                let value = notional(price, mult, lots);
                close_profit += match side {
                    Side::Long => value - position_cost,
                    Side::Short => position_cost - value,
                };
                commission += inst.commission.compute(kind, price, mult, lots);
            }
        }
        account.commission += commission;
        account.close_profit += close_profit;
        account.refresh_margin(order.instrument, inst);
        order.volume_left -= volume;
        let (account, offset) = (order.account, order.offset);
        let volume_left = self.finish_update(order_id);
        FillApplied { account, commission, close_profit, volume_left, offset }
    }

    /// Settlement for one account: realise position profit at the marks into pre_balance, roll
    /// today to his at the settlement price, reset the day's sums. Holds of surviving orders stay.
    /// [`Ledger::settle_account`], with the statement of `trading_day`: the account and its
    /// open positions at the settlement prices, before the day rolls.
    pub fn settle_with_statement(
        &mut self,
        slot: u32,
        instruments: &[Instrument],
        settlement: &[Price],
        trading_day: u32,
    ) -> crate::domain::event::SettlementStatement {
        let account = &self.accounts[slot as usize];
        let positions = account
            .positions
            .iter()
            .filter(|p| p.volume(Side::Long) + p.volume(Side::Short) > 0)
            .map(|p| {
                let instrument = p.instrument as usize;
                account::PositionSnapshot::new(account.account_id, p, &instruments[instrument], settlement[instrument])
            })
            .collect();
        let account = self.settle_account(slot, instruments, settlement);
        crate::domain::event::SettlementStatement { trading_day, account, positions }
    }

    pub fn settle_account(&mut self, slot: u32, instruments: &[Instrument], settlement: &[Price]) -> AccountSnapshot {
        let snap = self.accounts[slot as usize].snapshot(instruments, settlement);
        let account = &mut self.accounts[slot as usize];
        account.pre_balance = snap.balance;
        account.deposit = 0;
        account.withdraw = 0;
        account.close_profit = 0;
        account.commission = 0;
        account.premium = 0;
        for i in 0..account.positions.len() {
            let instrument = account.positions[i].instrument;
            let inst = &instruments[instrument as usize];
            account.positions[i].roll_to_his(settlement[instrument as usize], inst.volume_multiple);
            account.refresh_margin(instrument, inst);
        }
        snap
    }

    /// Moves every live close order's today lots to his (after positions rolled).
    pub fn roll_close_holds(&mut self) {
        for order in self.orders.values_mut() {
            if !order.is_open() {
                order.frozen_his += order.frozen_today;
                order.frozen_today = 0;
                // Those lots now close his positions: they pay (and freeze) the close rate.
                order.frozen_commission_today_per_lot = order.frozen_commission_his_per_lot;
            }
        }
        // Recompute the accounts' frozen commission from the orders (it changed with the rates).
        for account in &mut self.accounts {
            account.frozen_commission = 0;
        }
        let mut orders: Vec<&LiveOrder> = self.orders.values().collect();
        orders.sort_by_key(|o| o.order_id);
        for order in orders {
            self.accounts[order.account as usize].frozen_commission += order.frozen_commission();
        }
    }

    /// Checks that frozen sums equal what the live orders need (SPEC §2 invariant).
    pub fn check_holds(&self) -> Result<(), String> {
        let n = self.accounts.len();
        let mut margin = vec![0; n];
        let mut commission = vec![0; n];
        let mut lots: FastMap<(u32, u32, bool, bool), Volume> = FastMap::default();
        let mut pending: FastMap<(u32, u32), Volume> = FastMap::default();
        for o in self.orders.values() {
            if o.volume_left <= 0 {
                return Err(format!("live order {} has volume_left {}", o.order_id, o.volume_left));
            }
            if !o.is_open() && o.frozen_his + o.frozen_today != o.volume_left {
                return Err(format!(
                    "close order {} freezes {} + {} lots for {} left",
                    o.order_id, o.frozen_his, o.frozen_today, o.volume_left
                ));
            }
            margin[o.account as usize] += o.frozen_margin();
            commission[o.account as usize] += o.frozen_commission();
            if o.is_open() {
                *pending.entry((o.account, o.instrument)).or_default() += o.volume_left;
            } else {
                let long = Side::closed_by(o.direction) == Side::Long;
                *lots.entry((o.account, o.instrument, long, false)).or_default() += o.frozen_his;
                *lots.entry((o.account, o.instrument, long, true)).or_default() += o.frozen_today;
            }
        }
        for (slot, a) in self.accounts.iter().enumerate() {
            let cached: Money = a.positions.iter().map(|p| p.margin).sum();
            if cached != a.margin {
                return Err(format!("account {}: margin {} but positions hold {cached}", a.account_id, a.margin));
            }
            if a.frozen_margin != margin[slot] || a.frozen_commission != commission[slot] {
                return Err(format!(
                    "account {}: frozen margin/commission {}/{} but live orders need {}/{}",
                    a.account_id, a.frozen_margin, a.frozen_commission, margin[slot], commission[slot]
                ));
            }
            for p in &a.positions {
                for (long, side) in [(true, Side::Long), (false, Side::Short)] {
                    for today in [false, true] {
                        let b = p.bucket(side, today);
                        let want = lots.get(&(slot as u32, p.instrument, long, today)).copied().unwrap_or(0);
                        if b.frozen != want || b.volume < 0 || b.frozen > b.volume {
                            return Err(format!(
                                "account {} instrument #{}: bucket {:?} today={today} frozen {} volume {} but orders freeze {want}",
                                a.account_id, p.instrument, side, b.frozen, b.volume
                            ));
                        }
                    }
                }
                let want = pending.get(&(slot as u32, p.instrument)).copied().unwrap_or(0);
                if p.pending_open != want {
                    return Err(format!(
                        "account {}: pending open {} but orders have {want}",
                        a.account_id, p.pending_open
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The common move: an open order changes price only. Same result as the general path of
/// `rehold`, with no position changes, since only the frozen money per lot differs (the
/// frozen-equals-need invariant checks it after every engine test step).
fn reprice_open_hold(
    accounts: &mut [Account],
    order: &mut LiveOrder,
    limit_price: Option<Price>,
    instruments: &[Instrument],
    marks: &[Price],
) -> Result<(), RejectCode> {
    let inst = &instruments[order.instrument as usize];
    let freeze_price = limit_price.unwrap_or(inst.upper_limit);
    let mult = inst.volume_multiple;
    let margin_per_lot = apply_rate(notional(freeze_price, mult, 1), inst.margin_rate(order.direction));
    let commission_per_lot = inst.commission.compute(CommissionKind::Open, freeze_price, mult, 1);
    let need = (margin_per_lot + commission_per_lot) * order.volume_left;
    let credit = order.frozen_margin() + order.frozen_commission();
    let account = &mut accounts[order.account as usize];
    if need > account.available(instruments, marks) + credit {
        return Err(RejectCode::InsufficientFunds);
    }
    account.frozen_margin += margin_per_lot * order.volume_left - order.frozen_margin();
    account.frozen_commission += commission_per_lot * order.volume_left - order.frozen_commission();
    order.limit_price = limit_price;
    order.frozen_margin_per_lot = margin_per_lot;
    order.frozen_commission_per_lot = commission_per_lot;
    Ok(())
}

/// Re-plans a live order in place at a new price and volume left (the general path of
/// `rehold`, and `set_hold`), its current hold counted as free. On error nothing changed.
fn replan(
    accounts: &mut [Account],
    order: &mut LiveOrder,
    limit_price: Option<Price>,
    volume: Volume,
    instruments: &[Instrument],
    marks: &[Price],
    checked: bool,
) -> Result<(), RejectCode> {
    let input = PlanInput {
        account: order.account,
        instrument: order.instrument,
        direction: order.direction,
        offset: order.offset,
        limit_price,
        volume,
    };
    let plan = plan_fields(accounts, &input, instruments, marks, Some(order), checked)?;
    apply_hold(accounts, order, -1);
    // The order keeps its original size and history; only what is left changes.
    order.volume_orign = order.volume_orign - order.volume_left + volume;
    order.volume_left = volume;
    order.limit_price = limit_price;
    plan.write(order);
    apply_hold(accounts, order, 1);
    Ok(())
}

/// What a hold is planned for.
#[derive(Clone, Copy)]
struct PlanInput {
    account: u32,
    instrument: u32,
    direction: Direction,
    offset: Offset,
    limit_price: Option<Price>,
    volume: Volume,
}

/// The frozen fields of a planned hold.
#[derive(Clone, Copy, Default)]
struct HoldPlan {
    margin_per_lot: Money,
    commission_per_lot: Money,
    his: Volume,
    today: Volume,
    commission_his_per_lot: Money,
    commission_today_per_lot: Money,
}

impl HoldPlan {
    fn write(&self, order: &mut LiveOrder) {
        order.frozen_margin_per_lot = self.margin_per_lot;
        order.frozen_commission_per_lot = self.commission_per_lot;
        order.frozen_his = self.his;
        order.frozen_today = self.today;
        order.frozen_commission_his_per_lot = self.commission_his_per_lot;
        order.frozen_commission_today_per_lot = self.commission_today_per_lot;
    }
}

/// Works out the frozen fields of a hold without changing anything (see `Ledger::plan_hold`).
fn plan_fields(
    accounts: &[Account],
    req: &PlanInput,
    instruments: &[Instrument],
    marks: &[Price],
    replacing: Option<&LiveOrder>,
    checked: bool,
) -> Result<HoldPlan, RejectCode> {
    let inst = &instruments[req.instrument as usize];
    let account = &accounts[req.account as usize];
    let mult = inst.volume_multiple;
    // Without a limit price, the worst case for both sides: margin and commission by money
    // grow with the price, and a market sell fills at any price up to the upper limit.
    let freeze_price = req.limit_price.unwrap_or(inst.upper_limit);
    let mut plan = HoldPlan::default();
    let position = account.position(req.instrument);
    if req.offset == Offset::Open {
        plan.margin_per_lot = apply_rate(notional(freeze_price, mult, 1), inst.margin_rate(req.direction));
        plan.commission_per_lot = inst.commission.compute(CommissionKind::Open, freeze_price, mult, 1);
        if let Some(limit) = inst.position_limit {
            let held = position.map_or(0, |p| p.volume(Side::Long) + p.volume(Side::Short) + p.pending_open);
            let released = replacing.map_or(0, |o| o.volume_left);
            if checked && held - released + req.volume > limit {
                return Err(RejectCode::PositionLimitExceeded);
            }
        }
        if checked {
            let (available, held) = account.available_and_lots_value(instruments, marks);
            // Held and resting lots at their marks, the new ones at the band's top (a sell may
            // fill above its limit); the replaced order's lots are given back.
            let lots_value = |lots: Volume, price: Price| lots as i128 * price as i128 * mult as i128;
            let released = replacing.map_or(0, |o| lots_value(o.volume_left, marks[req.instrument as usize]));
            if held - released + lots_value(req.volume, inst.upper_limit) > MAX_POSITION_VALUE as i128 {
                return Err(RejectCode::PositionLimitExceeded);
            }
            // Wide too: per-lot amounts times an order's volume, before the value bound holds.
            let need = (plan.margin_per_lot as i128 + plan.commission_per_lot as i128) * req.volume as i128;
            let credit = replacing.map_or(0, |o| o.frozen_margin() + o.frozen_commission());
            if need > (available + credit) as i128 {
                return Err(RejectCode::InsufficientFunds);
            }
        }
    } else {
        let side = Side::closed_by(req.direction);
        let (mut his_free, mut today_free) =
            position.map_or((0, 0), |p| (p.bucket(side, false).closable(), p.bucket(side, true).closable()));
        if let Some(old) = replacing {
            his_free += old.frozen_his;
            today_free += old.frozen_today;
        }
        let (his, today) = match (req.offset, inst.exchange_id.has_strict_close_today()) {
            (Offset::CloseToday, _) => (0, req.volume),
            (_, true) => (req.volume, 0),
            _ => {
                let his = req.volume.min(his_free);
                (his, req.volume - his)
            }
        };
        if checked && (his > his_free || today > today_free) {
            return Err(RejectCode::InsufficientPosition);
        }
        plan.his = his;
        plan.today = today;
        plan.commission_his_per_lot = inst.commission.compute(CommissionKind::Close, freeze_price, mult, 1);
        plan.commission_today_per_lot = inst.commission.compute(CommissionKind::CloseToday, freeze_price, mult, 1);
        // Closing reduces risk, so it is never refused for funds (a margin call must be able
        // to close); its commission is frozen all the same.
    }
    Ok(plan)
}

/// Adds (`sign` = 1) or removes (-1) everything `order` holds right now.
fn apply_hold(accounts: &mut [Account], order: &LiveOrder, sign: i64) {
    let account = &mut accounts[order.account as usize];
    account.frozen_margin += sign * order.frozen_margin();
    account.frozen_commission += sign * order.frozen_commission();
    let position = account.position_mut(order.instrument);
    if order.is_open() {
        position.pending_open += sign * order.volume_left;
    } else {
        let side = Side::closed_by(order.direction);
        position.bucket_mut(side, false).frozen += sign * order.frozen_his;
        position.bucket_mut(side, true).frozen += sign * order.frozen_today;
    }
}

#[cfg(test)]
mod tests {
    use super::position::Position;
    use super::*;

    #[test]
    fn indexes_out_of_range_are_found() {
        let mut ledger = Ledger::new();
        let id = AccountId::new("A").expect("short");
        ledger.accounts.push(Account::new(id));
        ledger.by_id.insert(id, 0);
        ledger.accounts[0].positions.push(Position::new(1));
        assert_eq!(ledger.check_indexes(2), Ok(()));
        assert!(ledger.check_indexes(1).expect_err("position").contains("a position in an instrument beyond 1"));
        ledger.by_id.insert(AccountId::new("B").expect("short"), 7);
        assert!(ledger.check_indexes(2).expect_err("slot").contains("account index"));
        ledger.by_id.remove(&AccountId::new("B").expect("short"));
        ledger.by_client.insert((0, ClientOrderId::new("c1").expect("short")), 42);
        assert!(ledger.check_indexes(2).expect_err("client id").contains("no live order"));
    }
}
