//! Hand-computed scenarios through the public `Engine`: every number below is worked out in the
//! comments, in yuan, and asserted exactly in fixed point. `Sim::run` checks the engine's
//! invariants after every command.

#![allow(clippy::inconsistent_digit_grouping)] // money reads as yuan.jiao-fen-li, not in groups of 3

mod common;

use common::*;
use qaexchange::domain::command::{Command, InsertOrder};
use qaexchange::domain::event::Event;
use qaexchange::domain::ledger::account::AccountStatus;
use qaexchange::domain::risk::RejectCode;
use qaexchange::domain::types::*;

use Direction::{Buy, Sell};
use Offset::{Close, CloseToday, Open};

/// Asserts the command was refused with `code`, emitted exactly one event, and changed nothing.
fn assert_refused(sim: &mut Sim, code: RejectCode, f: impl FnOnce(&mut Sim) -> Vec<Event>) {
    let before = sim.state_json();
    let ev = f(sim);
    assert_eq!(ev.len(), 1, "a refusal is one event: {ev:#?}");
    assert_eq!(rejection(&ev), Some((code.code(), code)), "{ev:#?}");
    assert_eq!(sim.state_json(), before, "refused with {code:?} but state changed");
}

fn order_of(events: &[Event]) -> Option<qaexchange::domain::event::OrderInfo> {
    events.iter().find_map(|e| match e {
        Event::OrderAccepted { order, .. } => Some(*order),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Open with a partial fill.
// ---------------------------------------------------------------------------------------------

#[test]
fn open_partial_fill_holds_the_remainder_and_charges_the_filled_lots() {
    let mut sim = Sim::new(vec![if2501()], 20250106);
    sim.open_account("A", 1_000_000.0);
    sim.open_account("B", 1_000_000.0);
    sim.open_account("C", 1_000_000.0);

    // A sells 2 @ 4000 to open. Per lot: margin = 4000 x 300 x 12% = 144,000;
    // commission = 1,200,000 x 0.000023 = 27.6. Frozen: 288,000 + 55.2.
    let (a1, _) = sim.place(limit("A", "a1", "IF2501", Sell, Open, 4000.0, 2));
    let a = sim.account("A");
    assert_eq!(a.frozen_margin, m(288_000.0));
    assert_eq!(a.frozen_commission, m(55.2));
    assert_eq!(a.available, m(1_000_000.0 - 288_055.2)); // 711,944.8
    assert_eq!(a.balance, m(1_000_000.0));

    // B buys 5 @ 4001: 2 fill at the resting price 4000, 3 rest at 4001.
    // Hold per lot at 4001: margin = 1,200,300 x 12% = 144,036; commission = 1,200,300 x
    // 0.000023 = 27.6069.
    let (b1, ev) = sim.place(limit("B", "b1", "IF2501", Buy, Open, 4001.0, 5));
    assert_eq!(trades(&ev), vec![(p(4000.0), 2, b1, a1)]);
    let trade_sides = ev
        .iter()
        .find_map(|e| match e {
            Event::Trade { buy, sell, .. } => Some((*buy, *sell)),
            _ => None,
        })
        .unwrap();
    // Commission on the 2 filled lots at 4000: 2,400,000 x 0.000023 = 55.2 each side.
    assert_eq!(trade_sides.0.commission, m(55.2));
    assert_eq!(trade_sides.0.volume_left, 3);
    assert_eq!(trade_sides.1.commission, m(55.2));
    assert_eq!(trade_sides.1.volume_left, 0);
    assert!(cancels(&ev).is_empty());

    let b = sim.account("B");
    assert_eq!(b.commission, m(55.2));
    // Margin of 2 lots at the open price 4000: 2,400,000 x 12% = 288,000.
    assert_eq!(b.margin, m(288_000.0));
    // Remainder 3 lots: 3 x 144,036 = 432,108 and 3 x 27.6069 = 82.8207.
    assert_eq!(b.frozen_margin, m(432_108.0));
    assert_eq!(b.frozen_commission, m(82.8207));
    assert_eq!(b.position_profit, 0); // marked at the trade price 4000
    assert_eq!(b.balance, m(999_944.8));
    // 999,944.8 - 288,000 - 432,108 - 82.8207 = 279,753.9793
    assert_eq!(b.available, m(279_753.9793));
    let bp = sim.position("B", "IF2501");
    assert_eq!((bp.volume_long_today, bp.volume_long_his), (2, 0));
    assert_eq!(bp.open_cost_long, m(2_400_000.0));
    assert_eq!(bp.position_cost_long, m(2_400_000.0));
    assert_eq!(bp.margin_long, m(288_000.0));
    assert_close(bp.open_price_long, 4000.0, "open price");

    // A's 2 lots are all filled: nothing frozen, short 2 today.
    let a = sim.account("A");
    assert_eq!((a.frozen_margin, a.frozen_commission), (0, 0));
    assert_eq!(a.margin, m(288_000.0));
    assert_eq!(a.commission, m(55.2));
    assert_eq!(a.balance, m(999_944.8));
    assert_eq!(a.available, m(711_944.8));
    assert_eq!(sim.position("A", "IF2501").volume_short_today, 2);

    // C sells 1 @ 4001: fills 1 of B's remainder at 4001.
    let (c1, ev) = sim.place(limit("C", "c1", "IF2501", Sell, Open, 4001.0, 1));
    assert_eq!(trades(&ev), vec![(p(4001.0), 1, b1, c1)]);
    let b = sim.account("B");
    // B: 3 lots, open cost 2,400,000 + 1,200,300 = 3,600,300; margin 12% = 432,036.
    assert_eq!(b.margin, m(432_036.0));
    // Commission 55.2 + 27.6069 = 82.8069.
    assert_eq!(b.commission, m(82.8069));
    // The filled lot's hold is released: 2 lots left = 288,072 + 55.2138.
    assert_eq!(b.frozen_margin, m(288_072.0));
    assert_eq!(b.frozen_commission, m(55.2138));
    // Marked at 4001: 4001 x 300 x 3 - 3,600,300 = 3,600,900 - 3,600,300 = 600.
    assert_eq!(b.position_profit, m(600.0));
    assert_eq!(b.float_profit, m(600.0));
    // 1,000,000 - 82.8069 + 600 = 1,000,517.1931
    assert_eq!(b.balance, m(1_000_517.1931));
    // 1,000,517.1931 - 432,036 - 288,072 - 55.2138 = 280,353.9793
    assert_eq!(b.available, m(280_353.9793));
    assert_close(b.risk_ratio, 1.0 - 280_353.9793 / 1_000_517.1931, "B risk ratio");
    let bp = sim.position("B", "IF2501");
    assert_eq!(bp.volume_long_today, 3);
    assert_eq!(bp.open_cost_long, m(3_600_300.0));
    assert_close(bp.open_price_long, 3_600_300.0 / 900.0, "avg open price");
    assert_close(bp.position_price_long, 3_600_300.0 / 900.0, "avg pos price");
    // A short 2 @ 4000 marked at 4001: -600; C short 1 @ 4001: 0.
    assert_eq!(sim.account("A").position_profit, m(-600.0));
    assert_eq!(sim.account("A").balance, m(999_344.8));
    let c = sim.account("C");
    assert_eq!(c.position_profit, 0);
    assert_eq!(c.commission, m(27.6069));
    assert_eq!(c.margin, m(144_036.0));
    assert_eq!(c.balance, m(999_972.3931));
    assert_eq!(sim.zero_sum(), (0, 0));
    assert_eq!(sim.engine.open_interest(0), 3);

    // B cancels the 2 left: the hold goes, nothing else changes.
    let ev = sim.cancel("B", b1);
    assert_eq!(cancels(&ev), vec![(b1, 2, RejectCode::CancelledByUser)]);
    let b = sim.account("B");
    assert_eq!((b.frozen_margin, b.frozen_commission), (0, 0));
    assert_eq!(b.balance, m(1_000_517.1931));
    // 1,000,517.1931 - 432,036 = 568,481.1931
    assert_eq!(b.available, m(568_481.1931));
    assert!(sim.engine.state().live_orders.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. SHFE: CLOSE is his only, CLOSETODAY today only.
// ---------------------------------------------------------------------------------------------

#[test]
fn shfe_close_his_and_close_today_are_strict() {
    // Thursday 2025-01-02.
    let mut sim = Sim::new(vec![cu2501()], 20250102);
    sim.open_account("A", 1_000_000.0);
    sim.open_account("B", 1_000_000.0);

    // A long 2 / B short 2 @ 70,000: turnover 70,000 x 5 x 2 = 700,000; commission
    // 700,000 x 0.00005 = 35 each; margin 700,000 x 10% = 70,000.
    sim.place(limit("B", "b1", "cu2501", Sell, Open, 70_000.0, 2));
    let (_, ev) = sim.place(limit("A", "a1", "cu2501", Buy, Open, 70_000.0, 2));
    assert_eq!(trades(&ev).len(), 1);
    let a = sim.account("A");
    assert_eq!(a.commission, m(35.0));
    assert_eq!(a.margin, m(70_000.0));

    // CLOSE on SHFE closes his only; A has only today's lots.
    assert_refused(&mut sim, RejectCode::InsufficientPosition, |s| {
        s.insert(limit("A", "a2", "cu2501", Sell, Close, 70_100.0, 1))
    });

    // CLOSETODAY freezes 1 today lot and the close-today commission at 70,100:
    // 70,100 x 5 = 350,500 x 0.0001 = 35.05.
    let (a2, _) = sim.place(limit("A", "a2", "cu2501", Sell, CloseToday, 70_100.0, 1));
    let ap = sim.position("A", "cu2501");
    assert_eq!((ap.volume_long_frozen_today, ap.volume_long_frozen_his), (1, 0));
    let a = sim.account("A");
    assert_eq!(a.frozen_commission, m(35.05));
    assert_eq!(a.frozen_margin, 0);
    // 1,000,000 - 35 - 70,000 - 35.05 = 929,929.95
    assert_eq!(a.available, m(929_929.95));

    // B closes today 1 @ 70,100 against it. Close profit against the open price 70,000:
    // A (long) 350,500 - 350,000 = +500; B (short) -500; close-today commission 35.05 each.
    let (b2, ev) = sim.place(limit("B", "b2", "cu2501", Buy, CloseToday, 70_100.0, 1));
    assert_eq!(trades(&ev), vec![(p(70_100.0), 1, b2, a2)]);
    let sell_side = ev
        .iter()
        .find_map(|e| match e {
            Event::Trade { sell, .. } => Some(*sell),
            _ => None,
        })
        .unwrap();
    assert_eq!(sell_side.close_profit, m(500.0));
    assert_eq!(sell_side.commission, m(35.05));
    let a = sim.account("A");
    assert_eq!(a.close_profit, m(500.0));
    assert_eq!(a.commission, m(70.05));
    // 1 lot left @ 70,000 marked at 70,100: +500.
    assert_eq!(a.position_profit, m(500.0));
    // 1,000,000 + 500 - 70.05 + 500 = 1,000,929.95
    assert_eq!(a.balance, m(1_000_929.95));
    assert_eq!(a.margin, m(35_000.0));
    assert_eq!(a.available, m(965_929.95));
    let b = sim.account("B");
    assert_eq!(b.close_profit, m(-500.0));
    assert_eq!(b.balance, m(998_929.95));
    assert_eq!(sim.zero_sum(), (0, 0));

    // Settle at 70,200: A's long becomes his at 70,200.
    sim.set_settlement_price("cu2501", 70_200.0);
    let ev = sim.settle(None);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::TradingDayAdvanced { settled_day: 20250102, trading_day: 20250103, .. })));
    // A at 70,200: position profit 351,000 - 350,000 = 1,000;
    // balance 1,000,000 + 500 - 70.05 + 1,000 = 1,001,429.95 -> pre_balance.
    let a = sim.account("A");
    assert_eq!(a.pre_balance, m(1_001_429.95));
    assert_eq!(a.static_balance, m(1_001_429.95));
    assert_eq!((a.close_profit, a.commission, a.position_profit), (0, 0, 0));
    assert_eq!(a.float_profit, m(1_000.0)); // against the open price 70,000
    assert_eq!(a.margin, m(35_100.0)); // 351,000 x 10%
    let ap = sim.position("A", "cu2501");
    assert_eq!((ap.volume_long_today, ap.volume_long_his), (0, 1));
    assert_eq!(ap.position_cost_long, m(351_000.0));
    assert_eq!(ap.open_cost_long, m(350_000.0));
    assert_close(ap.position_price_long, 70_200.0, "his priced at settlement");
    assert_close(ap.open_price_long, 70_000.0, "open price kept");
    // B: 1,000,000 - 500 - 70.05 - 1,000 = 998,429.95
    assert_eq!(sim.account("B").pre_balance, m(998_429.95));

    // Next day: CLOSETODAY finds no today lots.
    assert_refused(&mut sim, RejectCode::InsufficientPosition, |s| {
        s.insert(limit("A", "a3", "cu2501", Sell, CloseToday, 70_500.0, 1))
    });
    // CLOSE freezes the his lot and the close (his) commission: 352,500 x 0.00005 = 17.625.
    let (a3, _) = sim.place(limit("A", "a3", "cu2501", Sell, Close, 70_500.0, 1));
    let ap = sim.position("A", "cu2501");
    assert_eq!((ap.volume_long_frozen_his, ap.volume_long_frozen_today), (1, 0));
    assert_eq!(sim.account("A").frozen_commission, m(17.625));
    let (b3, ev) = sim.place(limit("B", "b3", "cu2501", Buy, Close, 70_500.0, 1));
    assert_eq!(trades(&ev), vec![(p(70_500.0), 1, b3, a3)]);
    // Close profit against the settlement price 70,200 (not the open price 70,000):
    // 352,500 - 351,000 = 1,500.
    let a = sim.account("A");
    assert_eq!(a.close_profit, m(1_500.0));
    assert_eq!(a.commission, m(17.625));
    // 1,001,429.95 + 1,500 - 17.625 = 1,002,912.325
    assert_eq!(a.balance, m(1_002_912.325));
    assert_eq!(a.available, m(1_002_912.325));
    assert_eq!(a.margin, 0);
    let b = sim.account("B");
    assert_eq!(b.close_profit, m(-1_500.0));
    // 998,429.95 - 1,500 - 17.625 = 996,912.325
    assert_eq!(b.balance, m(996_912.325));
    assert_eq!(sim.engine.open_interest(0), 0);
    // Over both days: 2,000,000 - commissions (2 x 70.05 + 2 x 17.625) = 1,999,824.65.
    assert_eq!(a.balance + b.balance, m(1_999_824.65));
}

// ---------------------------------------------------------------------------------------------
// 3. CFFEX: CLOSE takes his first, then today.
// ---------------------------------------------------------------------------------------------

/// Day 1: A long 1 / B short 1 IF @ 4000, settled at 4010. Day 2: A long 1 / B short 1 more
/// @ 4020. A ends with 1 his (position cost 4010 x 300 = 1,203,000) and 1 today (1,206,000).
fn cffex_his_and_today() -> Sim {
    let mut sim = Sim::new(vec![if2501()], 20250106);
    sim.open_account("A", 1_000_000.0);
    sim.open_account("B", 1_000_000.0);
    sim.place(limit("B", "b1", "IF2501", Sell, Open, 4000.0, 1));
    sim.place(limit("A", "a1", "IF2501", Buy, Open, 4000.0, 1));
    sim.set_settlement_price("IF2501", 4010.0);
    sim.settle(None);
    assert_eq!(sim.engine.trading_day(), 20250107);
    // A: 1,000,000 - 27.6 + (1,203,000 - 1,200,000) = 1,002,972.4; B: 996,972.4.
    assert_eq!(sim.account("A").pre_balance, m(1_002_972.4));
    assert_eq!(sim.account("B").pre_balance, m(996_972.4));
    sim.place(limit("B", "b2", "IF2501", Sell, Open, 4020.0, 1));
    sim.place(limit("A", "a2", "IF2501", Buy, Open, 4020.0, 1));
    // Open commission 1,206,000 x 0.000023 = 27.738.
    assert_eq!(sim.account("A").commission, m(27.738));
    let ap = sim.position("A", "IF2501");
    assert_eq!((ap.volume_long_his, ap.volume_long_today), (1, 1));
    // Marked at 4020: his 1,206,000 - 1,203,000 = 3,000; today 0.
    assert_eq!(ap.position_profit_long, m(3_000.0));
    // Float profit against the open prices: (4020 - 4000) x 300 = 6,000.
    assert_eq!(ap.float_profit_long, m(6_000.0));
    // Margin 12% of (1,203,000 + 1,206,000) = 289,080.
    assert_eq!(ap.margin_long, m(289_080.0));
    sim
}

#[test]
fn cffex_close_takes_his_then_today_in_one_fill() {
    let mut sim = cffex_his_and_today();
    // CLOSE 2 @ 4030 freezes his 1 + today 1. Turnover per lot 4030 x 300 = 1,209,000:
    // his 1,209,000 x 0.000023 = 27.807; today 1,209,000 x 0.00023 = 278.07; total 305.877.
    let (a3, _) = sim.place(limit("A", "a3", "IF2501", Sell, Close, 4030.0, 2));
    let ap = sim.position("A", "IF2501");
    assert_eq!((ap.volume_long_frozen_his, ap.volume_long_frozen_today), (1, 1));
    assert_eq!(sim.account("A").frozen_commission, m(305.877));
    // B closes 2 in one order (his 1 + today 1 on its side too): one fill of 2 lots.
    let (b3, ev) = sim.place(limit("B", "b3", "IF2501", Buy, Close, 4030.0, 2));
    assert_eq!(trades(&ev), vec![(p(4030.0), 2, b3, a3)]);
    let (buy, sell) = ev
        .iter()
        .find_map(|e| match e {
            Event::Trade { buy, sell, .. } => Some((*buy, *sell)),
            _ => None,
        })
        .unwrap();
    // A: his 1,209,000 - 1,203,000 = 6,000 (vs settlement) + today 1,209,000 - 1,206,000 =
    // 3,000 (vs open) = 9,000; commission 27.807 + 278.07 = 305.877.
    assert_eq!(sell.close_profit, m(9_000.0));
    assert_eq!(sell.commission, m(305.877));
    assert_eq!(buy.close_profit, m(-9_000.0));
    assert_eq!(buy.commission, m(305.877));
    let a = sim.account("A");
    assert_eq!(a.close_profit, m(9_000.0));
    // 27.738 + 305.877 = 333.615
    assert_eq!(a.commission, m(333.615));
    assert_eq!(a.frozen_commission, 0);
    assert_eq!((a.margin, a.position_profit), (0, 0));
    // 1,002,972.4 + 9,000 - 333.615 = 1,011,638.785
    assert_eq!(a.balance, m(1_011_638.785));
    assert_eq!(a.available, m(1_011_638.785));
    // B: 996,972.4 - 9,000 - 333.615 = 987,638.785
    assert_eq!(sim.account("B").balance, m(987_638.785));
    assert_eq!(sim.engine.open_interest(0), 0);
}

#[test]
fn cffex_close_his_first_across_partial_fills() {
    let mut sim = cffex_his_and_today();
    let (a3, _) = sim.place(limit("A", "a3", "IF2501", Sell, Close, 4030.0, 2));
    // First fill of 1 lot consumes A's his lot: close profit 6,000, commission 27.807.
    let (b3, ev) = sim.place(limit("B", "b3", "IF2501", Buy, Close, 4030.0, 1));
    assert_eq!(trades(&ev), vec![(p(4030.0), 1, b3, a3)]);
    let a = sim.account("A");
    assert_eq!(a.close_profit, m(6_000.0));
    assert_eq!(a.commission, m(27.738 + 27.807)); // 55.545
                                                  // What is left freezes today's lot at the close-today rate: 278.07.
    assert_eq!(a.frozen_commission, m(278.07));
    let ap = sim.position("A", "IF2501");
    assert_eq!((ap.volume_long_his, ap.volume_long_today), (0, 1));
    assert_eq!((ap.volume_long_frozen_his, ap.volume_long_frozen_today), (0, 1));
    // B closed its his lot too (its CLOSE also takes his first): -6,000, 27.807.
    let b = sim.account("B");
    assert_eq!(b.close_profit, m(-6_000.0));
    assert_eq!(b.commission, m(27.738 + 27.807));
    assert_eq!(sim.position("B", "IF2501").volume_short_his, 0);

    // Second fill: today's lot, close-today rate.
    let (b4, ev) = sim.place(limit("B", "b4", "IF2501", Buy, Close, 4030.0, 1));
    assert_eq!(trades(&ev), vec![(p(4030.0), 1, b4, a3)]);
    let a = sim.account("A");
    assert_eq!(a.close_profit, m(9_000.0));
    assert_eq!(a.commission, m(333.615));
    assert_eq!(a.balance, m(1_011_638.785));
    assert_eq!(sim.account("B").balance, m(987_638.785));
    assert!(sim.engine.state().live_orders.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 4. Commission per lot and by money.
// ---------------------------------------------------------------------------------------------

#[test]
fn commission_per_lot_plus_by_money() {
    let mut sim = Sim::new(vec![i2501()], 20250106);
    sim.open_account("A", 1_000_000.0);
    sim.open_account("B", 1_000_000.0);

    // A buys 3 @ 800.5. Per lot: margin 800.5 x 100 x 10% = 8,005;
    // commission 1 + 80,050 x 0.0001 = 9.005. Frozen 24,015 + 27.015.
    let (a1, _) = sim.place(limit("A", "a1", "i2501", Buy, Open, 800.5, 3));
    let a = sim.account("A");
    assert_eq!(a.frozen_margin, m(24_015.0));
    assert_eq!(a.frozen_commission, m(27.015));
    // Filled in one trade: 3 x 1 + 240,150 x 0.0001 = 3 + 24.015 = 27.015 each side.
    let (b1, ev) = sim.place(limit("B", "b1", "i2501", Sell, Open, 800.5, 3));
    assert_eq!(trades(&ev), vec![(p(800.5), 3, a1, b1)]);
    assert_eq!(sim.account("A").commission, m(27.015));
    assert_eq!(sim.account("B").commission, m(27.015));
    assert_eq!(sim.account("A").margin, m(24_015.0));

    // A closes 2 @ 801: DCE CLOSE with no his takes today's lots, at the close-today line:
    // per lot 2 + 80,100 x 0.0002 = 2 + 16.02 = 18.02; frozen 36.04.
    let (a2, _) = sim.place(limit("A", "a2", "i2501", Sell, Close, 801.0, 2));
    assert_eq!(sim.account("A").frozen_commission, m(36.04));
    let (b2, ev) = sim.place(limit("B", "b2", "i2501", Buy, Close, 801.0, 2));
    assert_eq!(trades(&ev), vec![(p(801.0), 2, b2, a2)]);
    // Commission of the fill: 2 x 2 + 160,200 x 0.0002 = 4 + 32.04 = 36.04.
    let a = sim.account("A");
    assert_eq!(a.commission, m(27.015 + 36.04)); // 63.055
                                                 // Close profit: 160,200 - 2/3 x 240,150 = 160,200 - 160,100 = 100.
    assert_eq!(a.close_profit, m(100.0));
    // 1 lot left: cost 80,050, marked at 801 -> 80,100: +50; margin 8,005.
    assert_eq!(a.position_profit, m(50.0));
    assert_eq!(a.margin, m(8_005.0));
    // 1,000,000 + 100 - 63.055 + 50 = 1,000,086.945; available - 8,005 = 992,081.945
    assert_eq!(a.balance, m(1_000_086.945));
    assert_eq!(a.available, m(992_081.945));
    // B: 1,000,000 - 100 - 63.055 - 50 = 999,786.945
    assert_eq!(sim.account("B").balance, m(999_786.945));

    // Settle at the last price 801 (no admin price); next day the lot is his and CLOSE pays
    // the close line: 1 + 80,100 x 0.0001 = 9.01.
    sim.settle(None);
    let a_pre = sim.account("A").pre_balance;
    // 1,000,000 + 100 - 63.055 + 50 = 1,000,086.945
    assert_eq!(a_pre, m(1_000_086.945));
    let (a3, _) = sim.place(limit("A", "a3", "i2501", Sell, Close, 801.0, 1));
    assert_eq!(sim.account("A").frozen_commission, m(9.01));
    let (b3, ev) = sim.place(limit("B", "b3", "i2501", Buy, Close, 801.0, 1));
    assert_eq!(trades(&ev), vec![(p(801.0), 1, b3, a3)]);
    let a = sim.account("A");
    assert_eq!(a.commission, m(9.01));
    assert_eq!(a.close_profit, 0); // his priced at the settlement 801
    assert_eq!(a.balance, m(1_000_086.945 - 9.01));
    assert_eq!(sim.account("B").commission, m(9.01));
}

#[test]
fn commission_per_lot_only() {
    let mut sim = Sim::new(vec![sr501()], 20250106);
    sim.open_account("C", 100_000.0);
    sim.open_account("D", 100_000.0);
    // 2 lots @ 6000: margin 6000 x 10 x 2 x 7% = 8,400; commission 3 x 2 = 6.
    let (c1, _) = sim.place(limit("C", "c1", "SR501", Buy, Open, 6000.0, 2));
    assert_eq!(sim.account("C").frozen_commission, m(6.0));
    assert_eq!(sim.account("C").frozen_margin, m(8_400.0));
    let (d1, ev) = sim.place(limit("D", "d1", "SR501", Sell, Open, 6000.0, 2));
    assert_eq!(trades(&ev), vec![(p(6000.0), 2, c1, d1)]);
    assert_eq!(sim.account("C").commission, m(6.0));
    assert_eq!(sim.account("D").commission, m(6.0));
    // Close today is free on this schedule; profit (6010 - 6000) x 10 x 2 = 200.
    let (c2, _) = sim.place(limit("C", "c2", "SR501", Sell, CloseToday, 6010.0, 2));
    assert_eq!(sim.account("C").frozen_commission, 0);
    let (d2, ev) = sim.place(limit("D", "d2", "SR501", Buy, Close, 6010.0, 2));
    assert_eq!(trades(&ev), vec![(p(6010.0), 2, d2, c2)]);
    let c = sim.account("C");
    assert_eq!(c.commission, m(6.0));
    assert_eq!(c.close_profit, m(200.0));
    assert_eq!(c.balance, m(100_194.0));
    let d = sim.account("D");
    assert_eq!(d.commission, m(6.0));
    assert_eq!(d.close_profit, m(-200.0));
    assert_eq!(d.balance, m(99_794.0));
}

// ---------------------------------------------------------------------------------------------
// 5. Daily settlement.
// ---------------------------------------------------------------------------------------------

#[test]
fn daily_settlement_realises_rolls_and_cancels_day_orders() {
    // Friday 2025-01-03: the next trading day is Monday 2025-01-06.
    let mut sim = Sim::new(vec![if2501(), cu2501()], 20250103);
    for id in ["A", "B", "C"] {
        sim.open_account(id, 2_000_000.0);
    }
    // IF: B short 2 / A long 2 @ 4000 (commission 2,400,000 x 0.000023 = 55.2 each).
    sim.place(limit("B", "b1", "IF2501", Sell, Open, 4000.0, 2));
    sim.place(limit("A", "a1", "IF2501", Buy, Open, 4000.0, 2));
    // A closes 1 today @ 4012 to C (who opens): A profit (4012 - 4000) x 300 = 3,600,
    // close-today commission 1,203,600 x 0.00023 = 276.828; C open 1,203,600 x 0.000023 =
    // 27.6828.
    sim.place(limit("A", "a2", "IF2501", Sell, Close, 4012.0, 1));
    sim.place(limit("C", "c1", "IF2501", Buy, Open, 4012.0, 1));
    assert_eq!(sim.account("A").close_profit, m(3_600.0));
    assert_eq!(sim.account("A").commission, m(55.2 + 276.828));
    // A's GFD bid 1 @ 3990 (to be cancelled at settlement): margin 1,197,000 x 12% = 143,640,
    // commission 27.531.
    let (a_gfd, _) = sim.place(limit("A", "a3", "IF2501", Buy, Open, 3990.0, 1));
    // A's GTC close of its last lot @ 4100 (survives): close-today commission
    // 1,230,000 x 0.00023 = 282.9.
    let mut gtc = limit("A", "a4", "IF2501", Sell, Close, 4100.0, 1);
    gtc.time_condition = TimeCondition::Gtc;
    let (a_gtc, _) = sim.place(gtc);
    let a = sim.account("A");
    assert_eq!(a.frozen_margin, m(143_640.0));
    assert_eq!(a.frozen_commission, m(27.531 + 282.9));
    // cu: C short 1 / B long 1 @ 70,300 (commission 351,500 x 0.00005 = 17.575 each).
    sim.place(limit("C", "c2", "cu2501", Sell, Open, 70_300.0, 1));
    sim.place(limit("B", "b2", "cu2501", Buy, Open, 70_300.0, 1));
    // B's GTC ask 1 @ 70,500 (survives): margin 352,500 x 10% = 35,250, commission 17.625.
    let mut gtc = limit("B", "b3", "cu2501", Sell, Open, 70_500.0, 1);
    gtc.time_condition = TimeCondition::Gtc;
    let (b_gtc, _) = sim.place(gtc);

    // Settlement prices: IF set by admin to 4006 (last trade 4012); cu defaults to its last
    // trade 70,300.
    let ev = sim.set_settlement_price("IF2501", 4006.0);
    assert!(matches!(ev[0], Event::SettlementPriceSet { price, .. } if price == p(4006.0)));
    assert_refused(&mut sim, RejectCode::InvalidSettlementPrice, |s| s.set_settlement_price("IF2501", 4006.1));
    assert_eq!(sim.mark("IF2501"), p(4012.0));
    let ev = sim.settle(None);

    // The GFD order is cancelled, the GTC ones are not.
    assert_eq!(cancels(&ev), vec![(a_gfd, 1, RejectCode::CancelledAtSettlement)]);
    let reason_code = ev.iter().find_map(|e| match e {
        Event::OrderCancelled { reason, .. } => Some(reason.code),
        _ => None,
    });
    assert_eq!(reason_code, Some(3104));
    let live: Vec<u64> = sim.engine.state().live_orders.iter().map(|o| o.order_id).collect();
    assert_eq!(live, vec![a_gtc, b_gtc]);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::TradingDayAdvanced { settled_day: 20250103, trading_day: 20250106, .. })));
    assert_eq!(sim.engine.trading_day(), 20250106);
    assert!(!ev.iter().any(|e| matches!(e, Event::ForcedLiquidationRequired { .. })));

    // Statements, one per account, at the settlement prices and before the reset.
    let statements: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Settlement { statement, .. } => Some(statement.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(statements.len(), 3);
    assert_eq!(sim.engine.statements(), &statements[..]);
    for s in &statements {
        assert_eq!(s.trading_day, 20250103);
    }
    // A: close profit 3,600; commission 55.2 + 276.828 = 332.028; 1 long today @ 4000 at
    // 4006: +1,800; balance 2,000,000 + 3,600 - 332.028 + 1,800 = 2,005,067.972; margin
    // 1,200,000 x 12% = 144,000; frozen commission still the GTC close-today 282.9;
    // available 2,005,067.972 - 144,000 - 282.9 = 1,860,785.072.
    let sa = &statements[0].account;
    assert_eq!(sa.account_id.as_str(), "A");
    assert_eq!(sa.deposit, m(2_000_000.0));
    assert_eq!(sa.close_profit, m(3_600.0));
    assert_eq!(sa.commission, m(332.028));
    assert_eq!(sa.position_profit, m(1_800.0));
    assert_eq!(sa.balance, m(2_005_067.972));
    assert_eq!(sa.margin, m(144_000.0));
    assert_eq!(sa.frozen_margin, 0);
    assert_eq!(sa.frozen_commission, m(282.9));
    assert_eq!(sa.available, m(1_860_785.072));
    assert_eq!(statements[0].positions.len(), 1);
    let sp = &statements[0].positions[0];
    assert_eq!((sp.volume_long_today, sp.volume_long_his), (1, 0));
    assert_eq!(sp.last_price, p(4006.0));
    assert_eq!(sp.position_profit, m(1_800.0));
    // B: IF short 2 @ 4000 at 4006: -3,600; cu long 1 @ 70,300: 0; commission 55.2 + 17.575 =
    // 72.775; balance 2,000,000 - 72.775 - 3,600 = 1,996,327.225; margin 288,000 + 35,150 =
    // 323,150; available 1,996,327.225 - 323,150 - 35,250 - 17.625 = 1,637,909.6.
    let sb = &statements[1].account;
    assert_eq!(sb.account_id.as_str(), "B");
    assert_eq!(sb.commission, m(72.775));
    assert_eq!(sb.position_profit, m(-3_600.0));
    assert_eq!(sb.balance, m(1_996_327.225));
    assert_eq!(sb.margin, m(323_150.0));
    assert_eq!(sb.available, m(1_637_909.6));
    assert_eq!(statements[1].positions.len(), 2);
    // C: IF long 1 @ 4012 at 4006: -1,800; commission 27.6828 + 17.575 = 45.2578;
    // balance 1,998,154.7422; margin 144,432 + 35,150 = 179,582.
    let sc = &statements[2].account;
    assert_eq!(sc.position_profit, m(-1_800.0));
    assert_eq!(sc.commission, m(45.2578));
    assert_eq!(sc.balance, m(1_998_154.7422));
    assert_eq!(sc.margin, m(179_582.0));
    assert_eq!(sc.available, m(1_818_572.7422));
    // Zero-sum on the statements: (3,600 + 1,800) - 3,600 - 1,800 = 0.
    let profit: Money = statements.iter().map(|s| s.account.close_profit + s.account.position_profit).sum();
    assert_eq!(profit, 0);

    // After: realised into pre_balance, daily sums reset, today rolled to his at 4006.
    let a = sim.account("A");
    assert_eq!(a.pre_balance, m(2_005_067.972));
    assert_eq!((a.deposit, a.withdraw), (0, 0));
    assert_eq!(a.static_balance, m(2_005_067.972));
    assert_eq!((a.close_profit, a.commission, a.position_profit), (0, 0, 0));
    assert_eq!(a.float_profit, m(1_800.0));
    assert_eq!(a.balance, m(2_005_067.972));
    // Margin at the settlement price: 1,201,800 x 12% = 144,216. The GTC close's lot is now his:
    // its frozen commission is the close (his) rate: 1,230,000 x 0.000023 = 28.29.
    assert_eq!(a.margin, m(144_216.0));
    assert_eq!(a.frozen_commission, m(28.29));
    assert_eq!(a.frozen_margin, 0);
    // 2,005,067.972 - 144,216 - 28.29 = 1,860,823.682
    assert_eq!(a.available, m(1_860_823.682));
    let ap = sim.position("A", "IF2501");
    assert_eq!((ap.volume_long_today, ap.volume_long_his), (0, 1));
    assert_eq!((ap.volume_long_frozen_today, ap.volume_long_frozen_his), (0, 1));
    assert_eq!(ap.position_cost_long, m(1_201_800.0));
    assert_eq!(ap.open_cost_long, m(1_200_000.0));
    assert_close(ap.position_price_long, 4006.0, "position price");
    assert_close(ap.open_price_long, 4000.0, "open price");
    let state = sim.engine.state();
    let a_order = state.live_orders.iter().find(|o| o.order_id == a_gtc).unwrap();
    assert_eq!((a_order.frozen_his, a_order.frozen_today), (1, 0));
    let b = sim.account("B");
    assert_eq!(b.pre_balance, m(1_996_327.225));
    // 2,403,600 x 12% + 351,500 x 10% = 288,432 + 35,150 = 323,582; GTC hold 35,250 + 17.625.
    assert_eq!(b.margin, m(323_582.0));
    assert_eq!(b.frozen_margin, m(35_250.0));
    assert_eq!(b.frozen_commission, m(17.625));
    assert_eq!(b.available, m(1_637_477.6));
    let bp = sim.position("B", "IF2501");
    assert_eq!((bp.volume_short_today, bp.volume_short_his), (0, 2));
    assert_eq!(bp.float_profit_short, m(-3_600.0));
    assert_eq!(bp.position_profit_short, 0);
    let c = sim.account("C");
    assert_eq!(c.pre_balance, m(1_998_154.7422));
    assert_eq!(c.margin, m(179_366.0));
    assert_eq!(c.available, m(1_818_788.7422));
    assert_eq!(sim.zero_sum(), (0, 0));

    // New day's instruments: IF 4006 +/- 10% = [3605.4, 4406.6]; cu 70,300 +/- 8% (5,624)
    // = [64,676 -> 64,680, 75,924 -> 75,920] on the 10 tick.
    let if_state = &state.instruments[0];
    assert_eq!(if_state.pre_settlement, p(4006.0));
    assert_eq!((if_state.lower_limit, if_state.upper_limit), (p(3605.4), p(4406.6)));
    assert_eq!(if_state.open_interest, 2);
    let cu_state = &state.instruments[1];
    assert_eq!(cu_state.pre_settlement, p(70_300.0));
    assert_eq!((cu_state.lower_limit, cu_state.upper_limit), (p(64_680.0), p(75_920.0)));
    assert_eq!(cu_state.open_interest, 1);

    // A next trading day that is not after the current one is refused.
    assert_refused(&mut sim, RejectCode::InvalidTradingDay, |s| s.settle(Some(20250106)));
    // A quiet day settled with an explicit next day: nothing moves (settles at the marks).
    let ev = sim.settle(Some(20250108));
    assert!(cancels(&ev).is_empty());
    assert_eq!(sim.engine.trading_day(), 20250108);
    assert_eq!(sim.account("A").pre_balance, m(2_005_067.972));
    assert_eq!(sim.account("B").available, m(1_637_477.6));
    assert_eq!(sim.engine.state().live_orders.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 6. Forced liquidation.
// ---------------------------------------------------------------------------------------------

#[test]
fn forced_liquidation_after_a_losing_settlement() {
    let mut sim = Sim::new(vec![if2501()], 20250106);
    sim.open_account("L", 160_000.0);
    sim.open_account("M", 10_000_000.0);
    sim.open_account("N", 10_000_000.0);
    // L long 1 @ 4000 from M: margin 144,000, commission 27.6.
    sim.place(limit("M", "m1", "IF2501", Sell, Open, 4000.0, 1));
    sim.place(limit("L", "l1", "IF2501", Buy, Open, 4000.0, 1));
    assert_eq!(sim.account("L").available, m(160_000.0 - 27.6 - 144_000.0));
    // A GTC take-profit @ 4300 freezes the close-today commission 1,290,000 x 0.00023 = 296.7.
    let mut tp = limit("L", "l2", "IF2501", Sell, Close, 4300.0, 1);
    tp.time_condition = TimeCondition::Gtc;
    let (l_tp, _) = sim.place(tp);
    assert_eq!(sim.account("L").frozen_commission, m(296.7));

    // Settle at 3930: L loses (3930 - 4000) x 300 = -21,000.
    sim.set_settlement_price("IF2501", 3930.0);
    let ev = sim.settle(None);
    // L's statement: balance 160,000 - 27.6 - 21,000 = 138,972.4; margin (open price) 144,000.
    let sl = ev
        .iter()
        .find_map(|e| match e {
            Event::Settlement { statement, .. } if statement.account.account_id.as_str() == "L" => {
                Some(statement.account)
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(sl.balance, m(138_972.4));
    assert_eq!(sl.position_profit, m(-21_000.0));
    // Next day: margin 3930 x 300 x 12% = 141,480; the take-profit lot is his now, so its
    // commission is the close rate 1,290,000 x 0.000023 = 29.67;
    // available 138,972.4 - 141,480 - 29.67 = -2,537.27 -> risk ratio > 1.
    let l = sim.account("L");
    assert_eq!(l.pre_balance, m(138_972.4));
    assert_eq!(l.margin, m(141_480.0));
    assert_eq!(l.frozen_commission, m(29.67));
    assert_eq!(l.available, m(-2_537.27));
    let want_ratio = 1.0 - (-2_537.27 / 138_972.4);
    assert_close(l.risk_ratio, want_ratio, "L risk ratio");
    let flagged: Vec<(String, f64, u32)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::ForcedLiquidationRequired { account_id, risk_ratio, trading_day, .. } => {
                Some((account_id.to_string(), *risk_ratio, *trading_day))
            }
            _ => None,
        })
        .collect();
    assert_eq!(flagged.len(), 1, "only L: {flagged:?}");
    assert_eq!(flagged[0].0, "L");
    assert_eq!(flagged[0].2, 20250107);
    assert_close(flagged[0].1, want_ratio, "flagged risk ratio");
    // M: 10,000,000 - 27.6 + 21,000 = 10,020,972.4.
    assert_eq!(sim.account("M").pre_balance, m(10_020_972.4));
    // New band: 3930 +/- 393 = [3537, 4323]; the take-profit @ 4300 is still live.
    assert_eq!(sim.engine.state().live_orders.len(), 1);

    // Counter orders for the liquidation: N bids 1 @ 3926 and 1 @ 3920.
    let (n1, _) = sim.place(limit("N", "n1", "IF2501", Buy, Open, 3926.0, 1));
    sim.place(limit("N", "n2", "IF2501", Buy, Open, 3920.0, 1));
    // The account is frozen by the operator; liquidation still runs.
    sim.set_frozen("L", true);

    let ev = sim.force_liquidate("L");
    assert_eq!(cancels(&ev), vec![(l_tp, 1, RejectCode::ForcedLiquidation)]);
    let force = order_of(&ev).expect("a liquidation order");
    assert!(force.client_order_id.as_str().starts_with("FORCE_"));
    assert_eq!(
        (force.direction, force.offset, force.price_type, force.time_condition, force.volume),
        (Sell, Close, PriceType::Any, TimeCondition::Ioc, 1)
    );
    // The market sell takes the best bid 3926.
    assert_eq!(trades(&ev), vec![(p(3926.0), 1, n1, force.order_id)]);
    // L: close profit against the settlement price 3930: 1,177,800 - 1,179,000 = -1,200;
    // close (his) commission 1,177,800 x 0.000023 = 27.0894;
    // balance 138,972.4 - 1,200 - 27.0894 = 137,745.3106, all available.
    let l = sim.account("L");
    assert_eq!(l.close_profit, m(-1_200.0));
    assert_eq!(l.commission, m(27.0894));
    assert_eq!(l.balance, m(137_745.3106));
    assert_eq!(l.available, m(137_745.3106));
    assert_eq!((l.margin, l.frozen_margin, l.frozen_commission), (0, 0, 0));
    assert_eq!(l.risk_ratio, 0.0);
    assert_eq!(l.status, AccountStatus::Frozen);
    let lp = sim.position("L", "IF2501");
    assert_eq!(lp.volume_long, 0);
    // N: long 1 @ 3926, commission 27.0894, the 3920 bid still holds 141,120 + 27.048.
    let n = sim.account("N");
    assert_eq!(n.commission, m(27.0894));
    assert_eq!(n.frozen_margin, m(141_120.0));
    assert_eq!(n.frozen_commission, m(27.048));
    assert_eq!(n.position_profit, 0);
    // M: short his @ 3930 marked at 3926: +1,200.
    let mm = sim.account("M");
    assert_eq!(mm.position_profit, m(1_200.0));
    assert_eq!(mm.balance, m(10_022_172.4));
    assert_eq!(sim.zero_sum(), (0, 0));
    assert_eq!(sim.engine.open_interest(0), 1);

    // Nothing left to liquidate.
    assert_refused(&mut sim, RejectCode::NothingToLiquidate, |s| s.force_liquidate("L"));
}

#[test]
fn forced_liquidation_without_counterparty_keeps_the_position() {
    let mut sim = Sim::new(vec![if2501()], 20250106);
    sim.open_account("L", 200_000.0);
    sim.open_account("M", 1_000_000.0);
    sim.place(limit("M", "m1", "IF2501", Sell, Open, 4000.0, 1));
    sim.place(limit("L", "l1", "IF2501", Buy, Open, 4000.0, 1));
    let before = sim.account("L");
    let ev = sim.force_liquidate("L");
    let force = order_of(&ev).expect("accepted");
    assert_eq!(cancels(&ev), vec![(force.order_id, 1, RejectCode::NoCounterparty)]);
    assert!(trades(&ev).is_empty());
    assert_eq!(sim.account("L"), before);
    assert_eq!(sim.position("L", "IF2501").volume_long_today, 1);
}

// ---------------------------------------------------------------------------------------------
// 7. Pre-trade rejects: code and no state change.
// ---------------------------------------------------------------------------------------------

#[test]
fn pre_trade_rejects_change_nothing() {
    let mut sim = Sim::new(vec![if2501(), cu2501()], 20250106);
    sim.open_account("A", 1_000_000.0);
    sim.open_account("B", 1_000_000.0);
    sim.open_account("C", 1_000_000.0);
    // A long 1 / B short 1 @ 4000; B rests an ask 1 @ 4010 ("b1").
    sim.place(limit("B", "b0", "IF2501", Sell, Open, 4000.0, 1));
    sim.place(limit("A", "a0", "IF2501", Buy, Open, 4000.0, 1));
    let (b1, _) = sim.place(limit("B", "b1", "IF2501", Sell, Open, 4010.0, 1));
    // A available: 1,000,000 - 27.6 - 144,000 = 855,972.4.
    assert_eq!(sim.account("A").available, m(855_972.4));

    let ok = || limit("A", "x", "IF2501", Buy, Open, 4000.0, 1);
    let with = |f: &dyn Fn(&mut InsertOrder)| {
        let mut o = ok();
        f(&mut o);
        o
    };
    let cases: Vec<(RejectCode, InsertOrder)> = vec![
        (RejectCode::AccountNotFound, with(&|o| o.account_id = aid("Z"))),
        (RejectCode::InstrumentNotFound, with(&|o| o.instrument_id = iid("XX2501"))),
        (RejectCode::InstrumentNotFound, with(&|o| o.instrument_id = iid("SHFE.IF2501"))),
        (RejectCode::InvalidVolume, with(&|o| o.volume = 0)),
        (RejectCode::InvalidVolume, with(&|o| o.volume = 21)),
        (RejectCode::PriceNotOnTick, with(&|o| o.limit_price = Some(p(4000.1)))),
        // Band [3600, 4400].
        (RejectCode::PriceOutOfBand, with(&|o| o.limit_price = Some(p(4400.2)))),
        (RejectCode::PriceOutOfBand, with(&|o| o.limit_price = Some(p(3599.8)))),
        // 6 lots need 6 x (144,000 + 27.6) = 864,165.6 > 855,972.4.
        (RejectCode::InsufficientFunds, with(&|o| o.volume = 6)),
        // A has 1 lot long.
        (
            RejectCode::InsufficientPosition,
            with(&|o| {
                o.direction = Sell;
                o.offset = Close;
                o.volume = 2;
                o.limit_price = Some(p(4010.0));
            }),
        ),
        (
            RejectCode::InsufficientPosition,
            with(&|o| {
                o.account_id = aid("C");
                o.offset = Close;
            }),
        ),
        (
            RejectCode::InsufficientPosition,
            with(&|o| {
                o.direction = Sell;
                o.offset = CloseToday;
                o.volume = 2;
                o.limit_price = Some(p(4010.0));
            }),
        ),
        // B's own ask @ 4010 rests.
        (
            RejectCode::SelfTrade,
            with(&|o| {
                o.account_id = aid("B");
                o.limit_price = Some(p(4010.0));
            }),
        ),
        (RejectCode::UnsupportedTimeCondition, with(&|o| o.time_condition = TimeCondition::Gtd)),
        (RejectCode::UnsupportedTimeCondition, with(&|o| o.time_condition = TimeCondition::Gfs)),
        (RejectCode::UnsupportedTimeCondition, with(&|o| o.time_condition = TimeCondition::Gfa)),
        (RejectCode::InvalidVolumeCondition, with(&|o| o.volume_condition = VolumeCondition::All)),
        (
            RejectCode::InvalidVolumeCondition,
            with(&|o| {
                o.volume_condition = VolumeCondition::Min;
                o.min_volume = 1;
            }),
        ),
        (
            RejectCode::InvalidVolumeCondition,
            with(&|o| {
                o.time_condition = TimeCondition::Ioc;
                o.volume_condition = VolumeCondition::Min;
                o.min_volume = 0;
            }),
        ),
        (
            RejectCode::InvalidVolumeCondition,
            with(&|o| {
                o.time_condition = TimeCondition::Ioc;
                o.volume_condition = VolumeCondition::Min;
                o.min_volume = 2;
            }),
        ),
        (
            RejectCode::MarketOrderMustBeImmediate,
            with(&|o| {
                o.price_type = PriceType::Any;
                o.limit_price = None;
            }),
        ),
        (RejectCode::LimitPriceRequired, with(&|o| o.limit_price = None)),
        // "b1" is B's live order.
        (
            RejectCode::DuplicateOrderId,
            with(&|o| {
                o.account_id = aid("B");
                o.client_order_id = cid("b1");
                o.direction = Sell;
                o.limit_price = Some(p(4020.0));
            }),
        ),
    ];
    for (code, order) in cases {
        let before = sim.state_json();
        let ev = sim.insert(order);
        assert_eq!(ev.len(), 1, "{code:?}: {ev:#?}");
        match &ev[0] {
            Event::OrderRejected { reason, client_order_id, .. } => {
                assert_eq!((reason.code, reason.reason), (code.code(), code), "{order:?}");
                assert_eq!(*client_order_id, order.client_order_id);
            }
            other => panic!("{code:?}: expected OrderRejected, got {other:?}"),
        }
        assert_eq!(sim.state_json(), before, "{code:?} changed the state");
    }
    // The refused "x" ids never went live: the same id is accepted now (and cancelled again).
    let (x, _) = sim.place(ok());
    sim.cancel("A", x);

    // A frozen account cannot trade.
    sim.set_frozen("C", true);
    assert_refused(&mut sim, RejectCode::AccountFrozen, |s| s.insert(limit("C", "c1", "IF2501", Buy, Open, 4000.0, 1)));
    assert_refused(&mut sim, RejectCode::AccountFrozen, |s| s.withdraw("C", 1.0));
    // Withdrawals: more than available (855,972.4), zero, unknown account.
    assert_refused(&mut sim, RejectCode::InsufficientFundsToWithdraw, |s| s.withdraw("A", 855_972.5));
    assert_refused(&mut sim, RejectCode::InvalidAmount, |s| s.withdraw("A", 0.0));
    // Negative amounts are invalid both ways: a negative deposit is never a withdrawal.
    assert_refused(&mut sim, RejectCode::InvalidAmount, |s| s.withdraw("A", -5.0));
    assert_refused(&mut sim, RejectCode::InvalidAmount, |s| s.deposit("A", -5.0));
    assert_refused(&mut sim, RejectCode::InvalidAmount, |s| s.deposit("A", 0.0));
    assert_refused(&mut sim, RejectCode::AccountNotFound, |s| s.withdraw("Z", 1.0));
    assert_refused(&mut sim, RejectCode::AccountExists, |s| {
        let ts = s.next_ts();
        s.run(Command::OpenAccount { ts, account_id: aid("A") })
    });
    // Another account's order is "not found", by order id or client id.
    assert_refused(&mut sim, RejectCode::OrderNotFound, |s| s.cancel("A", b1));
    assert_refused(&mut sim, RejectCode::OrderNotFound, |s| {
        let ts = s.next_ts();
        s.run(Command::CancelOrder { ts, account_id: aid("A"), order_id: None, client_order_id: Some(cid("b1")) })
    });
    assert_refused(&mut sim, RejectCode::OrderNotFound, |s| s.cancel("A", 9_999));
    assert_refused(&mut sim, RejectCode::OrderNotFound, |s| s.modify("A", b1, Some(4012.0), None));
    let ev = {
        let ts = sim.next_ts();
        sim.run(Command::Withdraw { ts, account_id: aid("A"), amount: m(1.0) * 10_000_000_000_000 })
    };
    assert_eq!(rejection(&ev), Some((1004, RejectCode::InvalidAmount)), "over 1e12");
    // The exact available amount can be withdrawn.
    let ev = sim.withdraw("A", 855_972.4);
    assert!(matches!(ev[0], Event::FundsTransferred { amount, .. } if amount == m(-855_972.4)));
    let a = sim.account("A");
    assert_eq!(a.available, 0);
    assert_eq!(a.withdraw, m(855_972.4));
    assert_eq!(a.static_balance, m(144_027.6));
}

// ---------------------------------------------------------------------------------------------
// 8. FOK, FAK, BEST, FIVELEVEL.
// ---------------------------------------------------------------------------------------------

fn ioc(mut o: InsertOrder, volume_condition: VolumeCondition) -> InsertOrder {
    o.time_condition = TimeCondition::Ioc;
    o.volume_condition = volume_condition;
    o
}

fn priced(mut o: InsertOrder, price_type: PriceType) -> InsertOrder {
    o.price_type = price_type;
    o.limit_price = None;
    o
}

#[test]
fn fok_fak_best_and_five_level() {
    let mut sim = Sim::new(vec![if2501()], 20250106);
    sim.open_account("S", 10_000_000.0);
    sim.open_account("T", 5_000_000.0);
    // S offers 1 lot at each of 9 levels 4000.0, 4000.2, ..., 4001.6.
    let mut asks = Vec::new();
    for i in 0..9 {
        let price = 4000.0 + 0.2 * i as f64;
        let (id, _) = sim.place(limit("S", &format!("s{i}"), "IF2501", Sell, Open, price, 1));
        asks.push(id);
    }

    // FOK (IOC + ALL) for 3 @ 4000.2: only 2 lots cross, so nothing trades.
    let books_before = serde_json::to_string(&sim.engine.state().books).unwrap();
    let t_before = sim.account("T");
    let ev = sim.insert(ioc(limit("T", "fok", "IF2501", Buy, Open, 4000.2, 3), VolumeCondition::All));
    let fok = order_of(&ev).expect("accepted").order_id;
    assert!(trades(&ev).is_empty());
    assert_eq!(cancels(&ev), vec![(fok, 3, RejectCode::NotFilledImmediately)]);
    assert_eq!(serde_json::to_string(&sim.engine.state().books).unwrap(), books_before);
    assert_eq!(sim.account("T"), t_before);
    assert!(sim.engine.state().live_orders.iter().all(|o| o.order_id != fok));

    // FAK (IOC + ANY) for 3 @ 4000.2: 2 fill, 1 cancelled.
    let ev = sim.insert(ioc(limit("T", "fak", "IF2501", Buy, Open, 4000.2, 3), VolumeCondition::Any));
    let fak = order_of(&ev).unwrap().order_id;
    assert_eq!(trades(&ev), vec![(p(4000.0), 1, fak, asks[0]), (p(4000.2), 1, fak, asks[1])]);
    assert_eq!(cancels(&ev), vec![(fak, 1, RejectCode::NotFilledImmediately)]);
    // Commission: 1,200,000 x 0.000023 = 27.6 and 1,200,060 x 0.000023 = 27.60138 -> 27.6014
    // (each fill rounded to 0.0001 yuan).
    let t = sim.account("T");
    assert_eq!(t.commission, m(27.6) + m(27.6014));
    assert_eq!((t.frozen_margin, t.frozen_commission), (0, 0));

    // BEST (IOC): takes the best ask level only (4000.4, 1 lot); the other lot is cancelled.
    let ev =
        sim.insert(ioc(priced(limit("T", "best", "IF2501", Buy, Open, 0.0, 2), PriceType::Best), VolumeCondition::Any));
    let best = order_of(&ev).unwrap();
    assert_eq!(best.limit_price, Some(p(4000.4)));
    assert_eq!(trades(&ev), vec![(p(4000.4), 1, best.order_id, asks[2])]);
    assert_eq!(cancels(&ev), vec![(best.order_id, 1, RejectCode::NotFilledImmediately)]);

    // FIVELEVEL (IOC) for 10: takes the 5 levels 4000.6 .. 4001.4, 5 cancelled; 4001.6 stays.
    let ev = sim.insert(ioc(
        priced(limit("T", "five", "IF2501", Buy, Open, 0.0, 10), PriceType::FiveLevel),
        VolumeCondition::Any,
    ));
    let five = order_of(&ev).unwrap();
    assert_eq!(five.limit_price, Some(p(4001.4)));
    let want: Vec<_> = (3..8).map(|i| (p(4000.0 + 0.2 * i as f64), 1, five.order_id, asks[i])).collect();
    assert_eq!(trades(&ev), want);
    assert_eq!(cancels(&ev), vec![(five.order_id, 5, RejectCode::NotFilledImmediately)]);
    let book = &sim.engine.state().books[0];
    assert_eq!(book.asks.len(), 1);
    assert_eq!(book.asks[0].price, p(4001.6));

    // FOK that can fill: 1 @ 4001.6.
    let ev = sim.insert(ioc(limit("T", "fok2", "IF2501", Buy, Open, 4001.6, 1), VolumeCondition::All));
    let fok2 = order_of(&ev).unwrap().order_id;
    assert_eq!(trades(&ev), vec![(p(4001.6), 1, fok2, asks[8])]);
    assert!(cancels(&ev).is_empty());

    // T now holds 9 lots. Per-fill commission (units of 0.0001 yuan, rounded half away):
    // 4000.0 276,000 | 4000.2 276,013.8 -> 276,014 | 4000.4 276,027.6 -> 276,028 |
    // 4000.6 276,041.4 -> 276,041 | 4000.8 276,055.2 -> 276,055 | 4001.0 276,069 |
    // 4001.2 276,082.8 -> 276,083 | 4001.4 276,096.6 -> 276,097 | 4001.6 276,110.4 -> 276,110
    // sum = 2,484,497 = 248.4497 yuan.
    // Open cost = 300 x (4000.0 + 4000.2 + ... + 4001.6) = 300 x 36,007.2 = 10,802,160.
    // Margin 12% = 1,296,259.2. Marked at 4001.6: 10,804,320 - 10,802,160 = 2,160.
    let t = sim.account("T");
    assert_eq!(t.commission, 2_484_497);
    assert_eq!(t.margin, m(1_296_259.2));
    assert_eq!(t.position_profit, m(2_160.0));
    // 5,000,000 - 248.4497 + 2,160 = 5,001,911.5503; - 1,296,259.2 = 3,705,652.3503
    assert_eq!(t.balance, m(5_001_911.5503));
    assert_eq!(t.available, m(3_705_652.3503));
    let tp = sim.position("T", "IF2501");
    assert_eq!(tp.volume_long_today, 9);
    assert_eq!(tp.open_cost_long, m(10_802_160.0));
    let s = sim.account("S");
    assert_eq!(s.commission, 2_484_497);
    assert_eq!(s.balance, m(9_997_591.5503));
    assert_eq!(sim.zero_sum(), (0, 0));

    // Against an empty side BEST, FIVELEVEL and market orders end at once: NoCounterparty.
    for (name, price_type) in [("best2", PriceType::Best), ("five2", PriceType::FiveLevel), ("any2", PriceType::Any)] {
        let ev =
            sim.insert(ioc(priced(limit("T", name, "IF2501", Buy, Open, 0.0, 1), price_type), VolumeCondition::Any));
        let id = order_of(&ev).expect("accepted").order_id;
        assert_eq!(cancels(&ev), vec![(id, 1, RejectCode::NoCounterparty)]);
        assert!(trades(&ev).is_empty());
    }
    assert_eq!(sim.account("T").frozen_margin, 0);

    // BEST as a day order: fills at the best ask, the rest rests there as a limit.
    let (s9, _) = sim.place(limit("S", "s9", "IF2501", Sell, Open, 4002.0, 1));
    let ev = sim.insert(priced(limit("T", "bestgfd", "IF2501", Buy, Open, 0.0, 2), PriceType::Best));
    let bg = order_of(&ev).unwrap().order_id;
    assert_eq!(trades(&ev), vec![(p(4002.0), 1, bg, s9)]);
    assert!(cancels(&ev).is_empty());
    // It held at the upper limit until its price was known; the resting lot now holds at 4002:
    // 4002 x 300 = 1,200,600; x 12% = 144,072 margin; x 0.000023 = 27.6138 commission.
    let t = sim.account("T");
    assert_eq!(t.frozen_margin, m(144_072.0));
    assert_eq!(t.frozen_commission, m(27.6138));
    let book = &sim.engine.state().books[0];
    assert_eq!(book.bids.len(), 1);
    assert_eq!((book.bids[0].order_id, book.bids[0].price, book.bids[0].volume_left), (bg, p(4002.0), 1));
}

#[test]
fn ioc_min_volume() {
    let mut sim = Sim::new(vec![if2501()], 20250106);
    sim.open_account("S", 1_000_000.0);
    sim.open_account("T", 1_000_000.0);
    sim.place(limit("S", "s1", "IF2501", Sell, Open, 4000.0, 2));
    // MIN 3 of 4: only 2 available -> nothing.
    let mut o = ioc(limit("T", "t1", "IF2501", Buy, Open, 4000.0, 4), VolumeCondition::Min);
    o.min_volume = 3;
    let ev = sim.insert(o);
    assert!(trades(&ev).is_empty());
    assert_eq!(cancels(&ev)[0].1, 4);
    // MIN 2 of 4: 2 fill, 2 cancelled.
    let mut o = ioc(limit("T", "t2", "IF2501", Buy, Open, 4000.0, 4), VolumeCondition::Min);
    o.min_volume = 2;
    let ev = sim.insert(o);
    assert_eq!(trades(&ev).len(), 1);
    assert_eq!(trades(&ev)[0].1, 2);
    assert_eq!(cancels(&ev)[0].1, 2);
}

// ---------------------------------------------------------------------------------------------
// 9. Modify.
// ---------------------------------------------------------------------------------------------

fn modified(events: &[Event]) -> Option<(Option<Price>, Volume, bool)> {
    events.iter().find_map(|e| match e {
        Event::OrderModified { limit_price, volume_left, kept_priority, .. } => {
            Some((*limit_price, *volume_left, *kept_priority))
        }
        _ => None,
    })
}

#[test]
fn modify_price_change_loses_priority() {
    let mut sim = Sim::new(vec![if2501()], 20250106);
    for id in ["X", "Y", "Z"] {
        sim.open_account(id, 10_000_000.0);
    }
    // X asks 4010.2 first, then Y asks 4010.
    let (x1, _) = sim.place(limit("X", "x1", "IF2501", Sell, Open, 4010.2, 1));
    let (y1, _) = sim.place(limit("Y", "y1", "IF2501", Sell, Open, 4010.0, 1));
    // X hold at 4010.2: 1,203,060 x 12% = 144,367.2; 1,203,060 x 0.000023 = 27.67038 -> 27.6704.
    assert_eq!(sim.account("X").frozen_margin, m(144_367.2));
    assert_eq!(sim.account("X").frozen_commission, m(27.6704));
    // X moves to 4010: re-queued behind Y even though it was inserted first.
    let ev = sim.modify("X", x1, Some(4010.0), None);
    assert_eq!(modified(&ev), Some((Some(p(4010.0)), 1, false)));
    assert!(trades(&ev).is_empty());
    // New hold at 4010: 144,360 + 27.669.
    assert_eq!(sim.account("X").frozen_margin, m(144_360.0));
    assert_eq!(sim.account("X").frozen_commission, m(27.669));
    let (z1, ev) = sim.place(limit("Z", "z1", "IF2501", Buy, Open, 4010.0, 1));
    assert_eq!(trades(&ev), vec![(p(4010.0), 1, z1, y1)]);
    let (z2, ev) = sim.place(limit("Z", "z2", "IF2501", Buy, Open, 4010.0, 1));
    assert_eq!(trades(&ev), vec![(p(4010.0), 1, z2, x1)]);

    // A modify that crosses trades at once, at the resting order's price.
    let (z3, _) = sim.place(limit("Z", "z3", "IF2501", Buy, Open, 4000.0, 1));
    let (x2, _) = sim.place(limit("X", "x2", "IF2501", Sell, Open, 4020.0, 2));
    let ev = sim.modify("X", x2, Some(4000.0), None);
    assert_eq!(modified(&ev), Some((Some(p(4000.0)), 2, false)));
    assert_eq!(trades(&ev), vec![(p(4000.0), 1, z3, x2)]);
    let book = &sim.engine.state().books[0];
    assert_eq!((book.asks[0].order_id, book.asks[0].price, book.asks[0].volume_left), (x2, p(4000.0), 1));
    // Modify into one's own resting order is a self-trade and changes nothing.
    let (z4, _) = sim.place(limit("Z", "z4", "IF2501", Buy, Open, 3990.0, 1));
    let (z5, _) = sim.place(limit("Z", "z5", "IF2501", Sell, Open, 4100.0, 1));
    assert_refused(&mut sim, RejectCode::SelfTrade, |s| s.modify("Z", z5, Some(3990.0), None));
    let _ = z4;
    // Same price and volume: nothing to modify.
    assert_refused(&mut sim, RejectCode::InvalidModify, |s| s.modify("Z", z5, Some(4100.0), Some(1)));
    assert_refused(&mut sim, RejectCode::PriceOutOfBand, |s| s.modify("Z", z5, Some(4400.2), None));
    assert_refused(&mut sim, RejectCode::InvalidVolume, |s| s.modify("Z", z5, None, Some(0)));
}

#[test]
fn modify_volume_decrease_keeps_priority_increase_requeues() {
    let mut sim = Sim::new(vec![if2501()], 20250106);
    for id in ["X", "Y", "Z"] {
        sim.open_account(id, 10_000_000.0);
    }
    let (x, _) = sim.place(limit("X", "x", "IF2501", Sell, Open, 4020.0, 3));
    let (y, _) = sim.place(limit("Y", "y", "IF2501", Sell, Open, 4020.0, 1));
    // Per lot at 4020: 1,206,000 x 12% = 144,720; x 0.000023 = 27.738.
    assert_eq!(sim.account("X").frozen_margin, m(3.0 * 144_720.0));
    // Decrease 3 -> 2: keeps its place; the hold drops to 2 lots.
    let ev = sim.modify("X", x, None, Some(2));
    assert_eq!(modified(&ev), Some((Some(p(4020.0)), 2, true)));
    let state = sim.engine.state();
    let xo = state.live_orders.iter().find(|o| o.order_id == x).unwrap();
    // The lot taken off was never traded: the order is now a 2-lot order with 2 left.
    assert_eq!((xo.volume_orign, xo.volume_left), (2, 2));
    let xa = sim.account("X");
    assert_eq!(xa.frozen_margin, m(289_440.0));
    assert_eq!(xa.frozen_commission, m(55.476));
    let (z1, ev) = sim.place(limit("Z", "z1", "IF2501", Buy, Open, 4020.0, 1));
    assert_eq!(trades(&ev), vec![(p(4020.0), 1, z1, x)]);
    // X has 1 left, still ahead of Y. Increase 1 -> 2: re-queued behind Y.
    let ev = sim.modify("X", x, None, Some(2));
    assert_eq!(modified(&ev), Some((Some(p(4020.0)), 2, false)));
    assert_eq!(sim.account("X").frozen_margin, m(289_440.0));
    let (z2, ev) = sim.place(limit("Z", "z2", "IF2501", Buy, Open, 4020.0, 1));
    assert_eq!(trades(&ev), vec![(p(4020.0), 1, z2, y)]);
    let state = sim.engine.state();
    let xo = state.live_orders.iter().find(|o| o.order_id == x).unwrap();
    // 1 filled + 2 left: volume_orign - volume_left is still the traded volume.
    assert_eq!((xo.volume_orign, xo.volume_left), (3, 2));
}

#[test]
fn modify_needing_more_funds_is_refused() {
    let mut sim = Sim::new(vec![if2501()], 20250106);
    sim.open_account("P", 150_000.0);
    // 1 @ 4030: 1,209,000 x 12% = 145,080 + 27.807 = 145,107.807 <= 150,000.
    let (p1, _) = sim.place(limit("P", "p1", "IF2501", Sell, Open, 4030.0, 1));
    assert_eq!(sim.account("P").available, m(150_000.0 - 145_107.807));
    // 2 lots need 290,215.614 > 150,000 (the current hold counts as free).
    assert_refused(&mut sim, RejectCode::InsufficientFunds, |s| s.modify("P", p1, None, Some(2)));
    // 1 @ 4400: 158,400 + 30.36 > 150,000.
    assert_refused(&mut sim, RejectCode::InsufficientFunds, |s| s.modify("P", p1, Some(4400.0), None));
    // 1 @ 4100: 147,600 + 28.29 = 147,628.29 fits; available 2,371.71.
    let ev = sim.modify("P", p1, Some(4100.0), None);
    assert_eq!(modified(&ev), Some((Some(p(4100.0)), 1, false)));
    let a = sim.account("P");
    assert_eq!(a.frozen_margin, m(147_600.0));
    assert_eq!(a.frozen_commission, m(28.29));
    assert_eq!(a.available, m(2_371.71));
}

#[test]
fn frozen_account_may_shrink_or_cancel_but_not_requeue() {
    let mut sim = Sim::new(vec![if2501()], 20250106);
    sim.open_account("X", 10_000_000.0);
    let (x, _) = sim.place(limit("X", "x", "IF2501", Sell, Open, 4020.0, 3));
    sim.set_frozen("X", true);
    assert_refused(&mut sim, RejectCode::AccountFrozen, |s| s.modify("X", x, Some(4010.0), None));
    assert_refused(&mut sim, RejectCode::AccountFrozen, |s| s.modify("X", x, None, Some(10)));
    // A pure decrease (like a partial cancel) is allowed: 3 -> 1 lot, hold 144,720 + 27.738.
    let ev = sim.modify("X", x, None, Some(1));
    assert_eq!(modified(&ev), Some((Some(p(4020.0)), 1, true)));
    assert_eq!(sim.account("X").frozen_margin, m(144_720.0));
    assert_eq!(sim.account("X").frozen_commission, m(27.738));
    let ev = sim.cancel("X", x);
    assert_eq!(cancels(&ev), vec![(x, 1, RejectCode::CancelledByUser)]);
}

#[test]
fn market_sell_holds_at_the_upper_limit() {
    let mut sim = Sim::new(vec![if2501()], 20250106);
    sim.open_account("P", 280_000.0);
    sim.open_account("Q", 10_000_000.0);
    sim.place(limit("Q", "q", "IF2501", Buy, Open, 4000.0, 2));
    let market_sell = |client: &str| {
        ioc(priced(limit("P", client, "IF2501", Sell, Open, 0.0, 2), PriceType::Any), VolumeCondition::Any)
    };
    // A market sell may fill anywhere up to the upper limit 4400, so it holds there:
    // 2 x (4400 x 300 x 12% + 1,320,000 x 0.000023) = 2 x (158,400 + 30.36) = 316,860.72 >
    // 280,000. (Held at the lower limit 3600 it would pass, fill at 4000 and leave
    // available = 280,000 - 55.2 - 288,000 = -8,055.2.)
    assert_refused(&mut sim, RejectCode::InsufficientFunds, |s| s.insert(market_sell("p1")));
    sim.deposit("P", 40_000.0);
    let ev = sim.insert(market_sell("p2"));
    assert_eq!(trades(&ev).len(), 1);
    // 320,000 - 55.2 - 288,000 = 31,944.8
    let a = sim.account("P");
    assert_eq!(a.available, m(31_944.8));
    assert_eq!((a.frozen_margin, a.frozen_commission), (0, 0));
}

#[test]
fn deposits_are_capped_far_from_overflow() {
    let mut sim = Sim::new(vec![if2501()], 20250106);
    sim.open_account("W", 1_000_000_000_000.0);
    for _ in 1..100 {
        sim.deposit("W", 1_000_000_000_000.0);
    }
    // 100 x 1e12 = 1e14 yuan is the most an account may hold; one more yuan is refused.
    assert_eq!(sim.account("W").balance, m(100_000_000_000_000.0));
    assert_refused(&mut sim, RejectCode::InvalidAmount, |s| s.deposit("W", 1.0));
}

const REFERENCE_PRICES: &str = r#"
[[instrument]]
instrument_id = "IF2501"
exchange_id = "CFFEX"
product_id = "IF"
volume_multiple = 300
price_tick = 0.2
margin_rate_long = 0.12
margin_rate_short = 0.12
limit_rate = 0.10
pre_settlement = 4000.0
pre_close = 3990.0
max_order_volume = 20
commission = { open_rate = 0.000023, close_rate = 0.000023, close_today_rate = 0.00023 }

[[instrument]]
instrument_id = "IH2501"
exchange_id = "CFFEX"
product_id = "IH"
volume_multiple = 300
price_tick = 0.2
margin_rate_long = 0.12
margin_rate_short = 0.12
limit_rate = 0.10
pre_settlement = 2700.0
pre_close = 2690.0
max_order_volume = 20
commission = { open_rate = 0.000023, close_rate = 0.000023, close_today_rate = 0.00023 }
"#;

fn reference_sim() -> Sim {
    let instruments = qaexchange::domain::instrument::parse_instruments(REFERENCE_PRICES).unwrap();
    let mut sim = Sim::new(instruments, 20250106);
    sim.open_account("A", 1_000_000.0);
    sim.open_account("B", 1_000_000.0);
    sim
}

#[test]
fn settlement_reference_prices_follow_trades_marks_and_carry() {
    let mut sim = reference_sim();
    // Before any trade positions are marked at the reference settlement price, not pre_close.
    assert_eq!(sim.mark("IF2501"), p(4000.0));
    sim.place(limit("A", "a1", "IF2501", Sell, Open, 4010.0, 1));
    sim.place(limit("B", "b1", "IF2501", Buy, Open, 4010.0, 1));
    let ts = sim.next_ts();
    sim.run(Command::MarkPrice { ts, instrument_id: iid("IF2501"), price: p(4020.0) });
    sim.settle(None);
    let state: serde_json::Value = serde_json::from_str(&sim.state_json()).unwrap();
    let inst =
        |id: &str| state["instruments"].as_array().unwrap().iter().find(|i| i["instrument_id"] == id).unwrap().clone();
    let quote =
        |id: &str| state["quotes"].as_array().unwrap().iter().find(|q| q["instrument_id"] == id).unwrap().clone();
    // IF: no settlement price set, so it settles at its last mark (the operator's 4020); the
    // day's close is the last trade (4010), not the mark.
    assert_eq!(inst("IF2501")["pre_settlement"], 4020.0);
    assert_eq!(quote("IF2501")["pre_close"], 4010.0);
    // IH never traded: it settles at the price it started from and carries its pre_close.
    assert_eq!(inst("IH2501")["pre_settlement"], 2700.0);
    assert_eq!(quote("IH2501")["pre_close"], 2690.0);
    // B bought at 4010 and is marked at 4020: +3,000 realised into pre_balance.
    let b = sim.account("B");
    assert_eq!(b.pre_balance, m(1_000_000.0 + 3_000.0 - 4010.0 * 300.0 * 0.000023));
    assert_eq!(sim.zero_sum(), (0, 0));
}

#[test]
fn operator_prices_are_checked_and_marks_reach_every_holder() {
    let mut sim = reference_sim();
    sim.place(limit("A", "a1", "IF2501", Sell, Open, 4010.0, 1));
    sim.place(limit("B", "b1", "IF2501", Buy, Open, 4010.0, 1));
    let mark = |sim: &mut Sim, price: f64| {
        let ts = sim.next_ts();
        sim.run(Command::MarkPrice { ts, instrument_id: iid("IF2501"), price: p(price) })
    };
    // Band is 4000 +/- 10% = [3600, 4400].
    assert_refused(&mut sim, RejectCode::PriceOutOfBand, |s| mark(s, 4400.2));
    assert_refused(&mut sim, RejectCode::PriceNotOnTick, |s| mark(s, 4000.1));
    assert_refused(&mut sim, RejectCode::InvalidSettlementPrice, |s| s.set_settlement_price("IF2501", 3599.8));
    assert_refused(&mut sim, RejectCode::InvalidSettlementPrice, |s| s.set_settlement_price("IF2501", 4000.1));
    let events = mark(&mut sim, 4000.0);
    let updated: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::AccountUpdated { account, .. } => Some(account.account_id.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(updated, vec!["A".to_string(), "B".to_string()]);
    // Marked at 4000: the long lost 10 x 300 = 3,000, the short made it.
    assert_eq!(sim.account("B").position_profit, m(-3_000.0));
    assert_eq!(sim.account("A").position_profit, m(3_000.0));
}

#[test]
fn refused_force_liquidation_changes_nothing() {
    let mut sim = reference_sim();
    // A live order but no position: nothing to liquidate, and the order stays.
    sim.place(limit("A", "a1", "IF2501", Buy, Open, 3990.0, 1));
    assert_refused(&mut sim, RejectCode::NothingToLiquidate, |s| s.force_liquidate("A"));
    assert_eq!(sim.engine.ledger().live_order_count(), 1);
}

#[test]
fn position_limit_counts_both_sides_and_live_opens_per_account() {
    let mut inst = if2501();
    inst.position_limit = Some(3);
    let mut sim = Sim::new(vec![inst], 20250106);
    for account in ["A", "B", "C"] {
        sim.open_account(account, 10_000_000.0);
    }
    assert_eq!(RejectCode::PositionLimitExceeded.code(), 2009);
    // A long 1 (from B) and a resting bid of 1: 2 of A's 3 lots are taken.
    sim.place(limit("B", "b0", "IF2501", Sell, Open, 4000.0, 1));
    sim.place(limit("A", "a0", "IF2501", Buy, Open, 4000.0, 1));
    let (bid, _) = sim.place(limit("A", "a-bid", "IF2501", Buy, Open, 3990.0, 1));
    let a = sim.account("A");
    assert_eq!((sim.position("A", "IF2501").volume_long_today, a.frozen_margin), (1, m(143_640.0)));

    // 2 more lots either way would make 4; a refusal holds nothing (the state is compared whole).
    assert_refused(&mut sim, RejectCode::PositionLimitExceeded, |s| {
        s.insert(limit("A", "a-sell2", "IF2501", Sell, Open, 4100.0, 2))
    });
    assert_refused(&mut sim, RejectCode::PositionLimitExceeded, |s| {
        s.insert(limit("A", "a-buy2", "IF2501", Buy, Open, 3980.0, 2))
    });
    let after = sim.account("A");
    assert_eq!(
        (after.frozen_margin, after.frozen_commission, after.available),
        (a.frozen_margin, a.frozen_commission, a.available)
    );
    // Exactly the limit is allowed: long 1 + bid 1 + this ask 1 = 3.
    let (ask, _) = sim.place(limit("A", "a-ask", "IF2501", Sell, Open, 4100.0, 1));
    assert_refused(&mut sim, RejectCode::PositionLimitExceeded, |s| {
        s.insert(limit("A", "a-buy1", "IF2501", Buy, Open, 3980.0, 1))
    });
    // Growing a resting open order counts only the added lots (its own are given back first).
    assert_refused(&mut sim, RejectCode::PositionLimitExceeded, |s| s.modify("A", bid, None, Some(2)));
    // Closing reduces the position, so it is not limited.
    sim.place(limit("A", "a-close", "IF2501", Sell, Close, 4100.0, 1));
    // A cancelled open order frees its lots.
    sim.cancel("A", ask);
    sim.place(limit("A", "a-buy1", "IF2501", Buy, Open, 3980.0, 1));

    // The limit is per account: B (short 1) still has 2 lots; C starts from nothing, and one
    // order over the limit is refused on its own.
    assert_refused(&mut sim, RejectCode::PositionLimitExceeded, |s| {
        s.insert(limit("B", "b-sell3", "IF2501", Sell, Open, 4200.0, 3))
    });
    sim.place(limit("B", "b-sell2", "IF2501", Sell, Open, 4200.0, 2));
    assert_refused(&mut sim, RejectCode::PositionLimitExceeded, |s| {
        s.insert(limit("C", "c-buy4", "IF2501", Buy, Open, 3900.0, 4))
    });
    sim.place(limit("C", "c-buy3", "IF2501", Buy, Open, 3900.0, 3));
}

#[test]
fn an_accounts_positions_are_bounded_in_value_so_its_sums_stay_inside_i64() {
    // IF2501: 300 per point, band 3510..=4290, margin 12 %. With large enough funds leverage
    // would let an account hold positions whose costs pass i64 (9.2e14 yuan); opening orders
    // are refused (2009) once held lots at their marks, resting opens, and the new lots at the
    // band's top would pass 1e14 yuan (`MAX_POSITION_VALUE`).
    let mut inst = if2501();
    inst.max_order_volume = 100_000_000;
    let mut sim = Sim::new(vec![inst], 20250106);
    sim.open_account("A", 0.0);
    for _ in 0..20 {
        sim.deposit("A", 1e12); // 2e13 yuan: margin for 1.67e14 yuan of positions
    }
    // 8e7 lots at the top, 4290 x 300: 1.03e14 yuan. Refused, nothing held.
    assert_refused(&mut sim, RejectCode::PositionLimitExceeded, |s| {
        s.insert(limit("A", "a-big", "IF2501", Buy, Open, 3900.0, 80_000_000))
    });
    // 7e7 lots: 9.0e13 yuan at the top; margin 7e7 x 3900 x 300 x 12 % = 9.83e12 yuan.
    sim.place(limit("A", "a-1", "IF2501", Buy, Open, 3900.0, 70_000_000));
    // Resting 7e7 at the mark (3900, the settlement price): 8.19e13; 1e7 more at the top:
    // 1.29e13, 9.48e13 in all: taken. Another 1e7: 1.06e14, refused.
    sim.place(limit("A", "a-2", "IF2501", Buy, Open, 3900.0, 10_000_000));
    assert_refused(&mut sim, RejectCode::PositionLimitExceeded, |s| {
        s.insert(limit("A", "a-3", "IF2501", Sell, Open, 4200.0, 10_000_000))
    });
    // Closing is never bounded by value: nothing is held to close, so it is refused for that.
    assert_refused(&mut sim, RejectCode::InsufficientPosition, |s| {
        s.insert(limit("A", "a-close", "IF2501", Sell, Close, 4200.0, 1))
    });
}
