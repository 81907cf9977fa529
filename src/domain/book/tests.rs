use super::*;

fn book() -> OrderBook {
    // prices 90.00 .. 110.00 on a 0.5 tick (scaled by 10_000)
    OrderBook::new(5_000, 900_000, 1_100_000, 16)
}

fn limit(id: u64, owner: u64, direction: Direction, price: Price, volume: Volume) -> Incoming {
    Incoming { order_id: id, owner, direction, limit: Some(price), volume, min_fill: 0, rest_remainder: true }
}

#[test]
fn price_time_priority_and_maker_price() {
    let mut b = book();
    let mut fills = Vec::new();
    b.submit(&limit(1, 1, Direction::Sell, 1_000_000, 2), &mut fills);
    b.submit(&limit(2, 2, Direction::Sell, 1_000_000, 3), &mut fills);
    b.submit(&limit(3, 3, Direction::Sell, 995_000, 1), &mut fills);
    assert!(fills.is_empty());
    let outcome = b.submit(&limit(4, 4, Direction::Buy, 1_005_000, 4), &mut fills);
    assert_eq!(outcome, MatchOutcome::Done { filled: 4, rested: 0, cancelled: 0 });
    let got: Vec<(u64, Price, Volume, Volume)> =
        fills.iter().map(|f| (f.maker_order_id, f.price, f.volume, f.maker_volume_left)).collect();
    assert_eq!(got, vec![(3, 995_000, 1, 0), (1, 1_000_000, 2, 0), (2, 1_000_000, 1, 2)]);
    assert_eq!(b.best_ask(), Some(1_000_000));
    assert_eq!(b.order(2).unwrap().volume_left, 2);
    b.check_invariants().unwrap();
}

#[test]
fn self_trade_is_refused_without_changes() {
    let mut b = book();
    let mut fills = Vec::new();
    b.submit(&limit(1, 7, Direction::Sell, 1_000_000, 1), &mut fills);
    b.submit(&limit(2, 8, Direction::Sell, 1_005_000, 1), &mut fills);
    // Owner 8 buying through both levels would meet itself at the second level.
    assert_eq!(b.submit(&limit(3, 8, Direction::Buy, 1_005_000, 2), &mut fills), MatchOutcome::SelfTrade);
    assert!(fills.is_empty());
    assert_eq!(b.resting_count(), 2);
    // Volume 1 stops at the first level and never reaches its own order.
    assert_eq!(
        b.submit(&limit(4, 8, Direction::Buy, 1_005_000, 1), &mut fills),
        MatchOutcome::Done { filled: 1, rested: 0, cancelled: 0 }
    );
    b.check_invariants().unwrap();
}

#[test]
fn fill_or_kill_and_market_orders() {
    let mut b = book();
    let mut fills = Vec::new();
    b.submit(&limit(1, 1, Direction::Buy, 1_000_000, 2), &mut fills);
    let fok = Incoming { min_fill: 3, rest_remainder: false, ..limit(2, 2, Direction::Sell, 990_000, 3) };
    assert_eq!(b.submit(&fok, &mut fills), MatchOutcome::MinFillNotMet { available: 2 });
    assert_eq!(b.order(1).unwrap().volume_left, 2);
    let market = Incoming { limit: None, rest_remainder: false, ..limit(3, 2, Direction::Sell, 0, 5) };
    assert_eq!(b.submit(&market, &mut fills), MatchOutcome::Done { filled: 2, rested: 0, cancelled: 3 });
    assert_eq!(b.resting_count(), 0);
    assert_eq!(b.best_bid(), None);
    b.check_invariants().unwrap();
}

#[test]
fn off_grid_and_out_of_band_prices_are_refused() {
    let mut b = book();
    let mut fills = Vec::new();
    assert_eq!(b.submit(&limit(1, 1, Direction::Buy, 1_000_001, 1), &mut fills), MatchOutcome::BadPrice);
    assert_eq!(b.submit(&limit(1, 1, Direction::Buy, 1_100_000 + 5_000, 1), &mut fills), MatchOutcome::BadPrice);
    assert_eq!(b.resting_count(), 0);
}

#[test]
fn cancel_reduce_levels_and_rebase() {
    let mut b = book();
    let mut fills = Vec::new();
    for (id, price) in [(1, 1_000_000), (2, 995_000), (3, 1_000_000), (4, 950_000), (5, 900_000)] {
        b.submit(&limit(id, id, Direction::Buy, price, 2), &mut fills);
    }
    assert_eq!(b.nth_level_price(Direction::Buy, 1), Some(1_000_000));
    assert_eq!(b.nth_level_price(Direction::Buy, 3), Some(950_000));
    assert_eq!(b.nth_level_price(Direction::Buy, 9), Some(900_000));
    let mut levels = Vec::new();
    b.for_each_level(Direction::Buy, 5, |p, v, c| levels.push((p, v, c)));
    assert_eq!(levels[0], (1_000_000, 4, 2));
    assert_eq!(b.cancel(1).unwrap().volume_left, 2);
    assert!(b.cancel(1).is_none());
    assert!(b.reduce(3, 1));
    assert!(!b.reduce(3, 1));
    assert_eq!(b.best_bid(), Some(1_000_000));
    b.cancel(3);
    assert_eq!(b.best_bid(), Some(995_000));
    b.check_invariants().unwrap();
    let removed = b.rebase(920_000, 1_020_000);
    assert_eq!(removed.iter().map(|o| o.order_id).collect::<Vec<_>>(), vec![5]);
    assert_eq!(b.best_bid(), Some(995_000));
    assert_eq!(b.resting_count(), 2);
    b.check_invariants().unwrap();
}

#[test]
fn depth_tracking_ignores_changes_below_the_fifth_level() {
    let mut b = book();
    let mut fills = Vec::new();
    // Ten bid levels: 100.0, 99.5, ..., 95.5.
    for i in 0..10 {
        b.submit(&limit(i + 1, i + 1, Direction::Buy, 1_000_000 - i as i64 * 5_000, 1), &mut fills);
    }
    assert!(b.take_depth_changed(), "a new book starts dirty");
    assert!(!b.take_depth_changed(), "nothing happened since");
    // The 8th level (96.5) is below the published five: no depth change.
    b.cancel(8);
    assert!(!b.take_depth_changed());
    b.submit(&limit(20, 20, Direction::Buy, 960_000, 3), &mut fills);
    assert!(b.reduce(20, 1));
    assert!(!b.take_depth_changed());
    // The 5th level (98.0) is published: a change there is.
    b.submit(&limit(21, 21, Direction::Buy, 980_000, 1), &mut fills);
    assert!(b.take_depth_changed());
    // A new ask is on the other side's empty top: a change.
    b.submit(&limit(22, 22, Direction::Sell, 1_050_000, 1), &mut fills);
    assert!(b.take_depth_changed());
    // Moving a deep bid into the top five is a change; moving it back out is too.
    b.reprice(9, 995_000, 1, &mut fills).unwrap();
    assert!(b.take_depth_changed());
    b.reprice(9, 955_000, 1, &mut fills).unwrap();
    assert!(b.take_depth_changed());
    b.check_invariants().unwrap();
}
