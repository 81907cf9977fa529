use super::*;
use crate::domain::book::Incoming;
use crate::domain::instrument::{CommissionConfig, ExchangeId, InstrumentConfig, InstrumentStatus};
use crate::domain::types::{price_from_f64 as p, MONEY_SCALE};

const S: i64 = 1_000_000_000;
const MINUTE: i64 = 60 * S;
const DAY: i64 = 86_400 * S;
/// 2024-12-02 00:00:00 China time (2024-12-01 16:00:00 UTC).
const CHINA_MIDNIGHT: i64 = 1_733_068_800 * S;
/// 2024-12-02 09:30:00 China time.
const OPEN_0930: i64 = CHINA_MIDNIGHT + (9 * 3600 + 30 * 60) * S;

/// IF-like: 300 per point, tick 0.2, settlement 3900.0 +/- 10% -> band 3510.0 ..= 4290.0.
fn instrument() -> Instrument {
    Instrument::from_config(&InstrumentConfig {
        instrument_id: "IF2501".into(),
        exchange_id: ExchangeId::CFFEX,
        product_id: "IF".into(),
        volume_multiple: 300,
        price_tick: 0.2,
        margin_rate_long: 0.12,
        margin_rate_short: 0.12,
        commission: CommissionConfig::default(),
        limit_rate: 0.10,
        pre_settlement: 3900.0,
        pre_close: Some(3898.0),
        pre_open_interest: 1000,
        max_order_volume: 20,
        status: InstrumentStatus::Trading,
        position_limit: None,
        shard: None,
        delivery_year: None,
        delivery_month: None,
    })
    .unwrap()
}

fn bars(market: &InstrumentMarket, duration_ns: i64) -> Vec<(i64, Kline)> {
    market.klines_for_duration(duration_ns).unwrap().bars().iter().map(|(id, k)| (id, *k)).collect()
}

fn bar(datetime_ns: i64, ohlc: [f64; 4], volume: Volume, open_oi: Volume, close_oi: Volume) -> Kline {
    Kline {
        datetime_ns,
        open: p(ohlc[0]),
        high: p(ohlc[1]),
        low: p(ohlc[2]),
        close: p(ohlc[3]),
        volume,
        open_oi,
        close_oi,
    }
}

#[test]
fn quote_before_any_trade() {
    let m = InstrumentMarket::new(&instrument(), 8, 8);
    let q = m.quote();
    assert_eq!(q.instrument_id.as_str(), "IF2501");
    assert_eq!(q.last_price, p(3898.0), "last price starts at pre_close");
    assert_eq!((q.open, q.highest, q.lowest, q.average, q.close, q.settlement), (None, None, None, None, None, None));
    assert_eq!((q.volume, q.amount, q.open_interest, q.pre_open_interest), (0, 0, 1000, 1000));
    assert_eq!((q.pre_settlement, q.pre_close), (p(3900.0), p(3898.0)));
    assert_eq!((q.upper_limit, q.lower_limit), (p(4290.0), p(3510.0)));
    assert_eq!((q.bid_price, q.ask_volume), ([None; DEPTH], [0; DEPTH]));
    assert_eq!(m.klines(0).unwrap().bars().last_id(), -1);
    assert!(m.klines(7).is_none());
}

#[test]
fn trades_update_day_statistics_and_average() {
    let mut m = InstrumentMarket::new(&instrument(), 8, 8);
    m.on_trade(p(3900.0), 2, 1002, OPEN_0930);
    m.on_trade(p(3901.2), 3, 1005, OPEN_0930 + S);
    m.on_trade(p(3899.8), 1, 1004, OPEN_0930 + 2 * S);
    m.on_trade(p(3950.0), 0, 9999, OPEN_0930 + 3 * S); // no volume: ignored
    let q = m.quote();
    assert_eq!(q.last_price, p(3899.8));
    assert_eq!((q.open, q.highest, q.lowest), (Some(p(3900.0)), Some(p(3901.2)), Some(p(3899.8))));
    assert_eq!(q.volume, 6);
    // (3900.0 x 2 + 3901.2 x 3 + 3899.8 x 1) x 300 = 23403.4 x 300 = 7,021,020 yuan
    assert_eq!(q.amount, 7_021_020 * MONEY_SCALE);
    // 23403.4 / 6 = 3900.5666.. -> 3900.5667 at 1e-4
    assert_eq!(q.average, Some(39_005_667));
    assert_eq!(q.open_interest, 1004);
    assert_eq!(q.datetime_ns, OPEN_0930 + 2 * S);

    m.set_settlement(p(3900.4));
    assert_eq!((m.quote().settlement, m.quote().close), (Some(p(3900.4)), Some(p(3899.8))));
}

#[test]
fn average_rounds_to_the_nearest_price_unit() {
    assert_eq!(average_price(0, 0, 300), None);
    assert_eq!(average_price(10, 4, 1), Some(3)); // 2.5 -> 3
    assert_eq!(average_price(9, 4, 1), Some(2)); // 2.25 -> 2
    assert_eq!(average_price(-10, 4, 1), Some(-3));
}

#[test]
fn minute_bars_roll_at_the_minute() {
    let mut m = InstrumentMarket::new(&instrument(), 8, 8);
    m.on_trade(p(3900.0), 1, 1001, OPEN_0930 + 10 * S);
    m.on_trade(p(3902.0), 2, 1003, OPEN_0930 + MINUTE - 1);
    m.on_trade(p(3899.0), 1, 1002, OPEN_0930 + MINUTE);
    assert_eq!(
        bars(&m, MINUTE),
        vec![
            (0, bar(OPEN_0930, [3900.0, 3902.0, 3900.0, 3902.0], 3, 1000, 1003)),
            (1, bar(OPEN_0930 + MINUTE, [3899.0, 3899.0, 3899.0, 3899.0], 1, 1003, 1002)),
        ]
    );
    // 3 s bars: 09:30:09, 09:30:57, 09:31:00.
    let starts: Vec<i64> = bars(&m, 3 * S).iter().map(|(_, k)| k.datetime_ns).collect();
    assert_eq!(starts, vec![OPEN_0930 + 9 * S, OPEN_0930 + 57 * S, OPEN_0930 + MINUTE]);
    // 5 min, 15 min, 30 min: one bar from 09:30; 1 h: one bar from 09:00.
    for (duration, start) in [(5, OPEN_0930), (15, OPEN_0930), (30, OPEN_0930), (60, OPEN_0930 - 30 * MINUTE)] {
        let got = bars(&m, duration * MINUTE);
        assert_eq!(got, vec![(0, bar(start, [3900.0, 3902.0, 3899.0, 3899.0], 4, 1000, 1002))], "{duration} min");
    }

    // A trade stamped before the current bar (09:29) joins the current bar, never reorders.
    m.on_trade(p(3905.0), 1, 1003, OPEN_0930 - MINUTE);
    let minute = bars(&m, MINUTE);
    assert_eq!(minute.len(), 2);
    assert_eq!(minute[1].1, bar(OPEN_0930 + MINUTE, [3899.0, 3905.0, 3899.0, 3905.0], 2, 1003, 1003));
}

#[test]
fn daily_bars_start_at_china_midnight() {
    let mut m = InstrumentMarket::new(&instrument(), 8, 8);
    m.on_trade(p(3900.0), 1, 1001, OPEN_0930);
    m.on_trade(p(3910.0), 1, 1002, CHINA_MIDNIGHT + DAY - S); // 23:59:59 China
    m.on_trade(p(3920.0), 4, 1006, CHINA_MIDNIGHT + DAY + S); // 00:00:01 next China day
    assert_eq!(
        bars(&m, DAY),
        vec![
            (0, bar(CHINA_MIDNIGHT, [3900.0, 3910.0, 3900.0, 3910.0], 2, 1000, 1002)),
            (1, bar(CHINA_MIDNIGHT + DAY, [3920.0, 3920.0, 3920.0, 3920.0], 4, 1002, 1006)),
        ]
    );
    // Not UTC midnight: a UTC-aligned day would have split at 08:00 China.
    assert_ne!(CHINA_MIDNIGHT % DAY, 0);
}

#[test]
fn kline_ring_drops_the_oldest_bars_and_ids_keep_increasing() {
    let mut m = InstrumentMarket::new(&instrument(), 2, 8);
    for k in 0..5 {
        m.on_trade(p(3900.0) + k * p(0.2), 1, 1001 + k, OPEN_0930 + k * MINUTE);
    }
    let series = m.klines_for_duration(MINUTE).unwrap();
    let ring = series.bars();
    assert_eq!((ring.first_id(), ring.last_id(), ring.len(), ring.capacity()), (3, 4, 2, 2));
    assert_eq!(ring.get(3).unwrap().datetime_ns, OPEN_0930 + 3 * MINUTE);
    assert_eq!(ring.last().unwrap().close, p(3900.8));
    assert!(ring.get(2).is_none());
    // The hour and the day saw one bar each.
    assert_eq!(m.klines_for_duration(3600 * S).unwrap().bars().last_id(), 0);
    assert_eq!(m.klines(6).unwrap().bars().iter().len(), 1);
}

#[test]
fn a_kline_ring_keeps_the_closed_bar_when_the_next_opens() {
    // The history writes a bar when the next one opens: a ring of one would have dropped it.
    let mut m = InstrumentMarket::new(&instrument(), 1, 8);
    m.on_trade(p(3900.0), 1, 1001, OPEN_0930);
    m.on_trade(p(3900.2), 1, 1002, OPEN_0930 + MINUTE);
    let ring = m.klines_for_duration(MINUTE).unwrap().bars();
    assert_eq!((ring.capacity(), ring.first_id(), ring.last_id()), (2, 0, 1));
    assert_eq!(ring.get(0).unwrap().close, p(3900.0));
}

#[test]
fn on_book_reports_five_levels_and_changes() {
    let i = instrument();
    let mut book = OrderBook::new(i.price_tick, i.lower_limit, i.upper_limit, 64);
    let mut fills = Vec::new();
    let mut id = 0;
    let mut rest = |book: &mut OrderBook, direction: Direction, price: f64, volume: Volume| {
        id += 1;
        let order = Incoming {
            order_id: id,
            owner: 1,
            direction,
            limit: Some(p(price)),
            volume,
            min_fill: 0,
            rest_remainder: true,
        };
        book.submit(&order, &mut fills);
        id
    };
    // Six bid levels (only five show), two orders on the best bid, one ask level.
    let first_best_bid = rest(&mut book, Direction::Buy, 3899.8, 1);
    rest(&mut book, Direction::Buy, 3899.8, 1);
    for (k, price) in [3899.6, 3899.4, 3899.2, 3899.0, 3898.8].into_iter().enumerate() {
        rest(&mut book, Direction::Buy, price, k as Volume + 3);
    }
    rest(&mut book, Direction::Sell, 3900.2, 4);

    let mut m = InstrumentMarket::new(&i, 8, 8);
    assert!(m.on_book(&book, OPEN_0930));
    let q = *m.quote();
    assert_eq!(q.bid_price, [3899.8, 3899.6, 3899.4, 3899.2, 3899.0].map(|x| Some(p(x))));
    assert_eq!(q.bid_volume, [2, 3, 4, 5, 6]);
    assert_eq!(q.ask_price, [Some(p(3900.2)), None, None, None, None]);
    assert_eq!(q.ask_volume, [4, 0, 0, 0, 0]);
    assert_eq!(q.datetime_ns, OPEN_0930);

    // Nothing moved: no change, no new stamp.
    assert!(!m.on_book(&book, OPEN_0930 + S));
    assert_eq!(m.quote().datetime_ns, OPEN_0930);

    // A cancel on the best bid changes its volume.
    book.cancel(first_best_bid).unwrap();
    assert!(m.on_book(&book, OPEN_0930 + 2 * S));
    assert_eq!((m.quote().bid_volume[0], m.quote().datetime_ns), (1, OPEN_0930 + 2 * S));

    // An empty book clears every level.
    let empty = OrderBook::new(i.price_tick, i.lower_limit, i.upper_limit, 0);
    assert!(m.on_book(&empty, OPEN_0930 + 3 * S));
    assert_eq!((m.quote().bid_price, m.quote().ask_volume), ([None; DEPTH], [0; DEPTH]));
}

#[test]
fn ticks_snapshot_the_quote_in_a_bounded_ring() {
    let mut m = InstrumentMarket::new(&instrument(), 8, 2);
    m.on_trade(p(3900.0), 2, 1002, OPEN_0930);
    assert_eq!(m.record_tick(OPEN_0930), 0);
    m.on_trade(p(3900.4), 1, 1003, OPEN_0930 + S);
    assert_eq!(m.record_tick(OPEN_0930 + S), 1);
    m.on_trade(p(3900.6), 1, 1003, OPEN_0930 + 2 * S);
    assert_eq!(m.record_tick(OPEN_0930 + 2 * S), 2);

    let ticks = m.ticks();
    assert_eq!((ticks.first_id(), ticks.last_id(), ticks.len()), (1, 2, 2));
    let last = ticks.last().unwrap();
    assert_eq!(*last, Tick::from_quote(m.quote(), OPEN_0930 + 2 * S));
    assert_eq!((last.last_price, last.volume, last.open_interest), (p(3900.6), 4, 1003));
    // (3900.0 x 2 + 3900.4 + 3900.6) / 4 = 3900.25
    assert_eq!(last.average, Some(p(3900.25)));
    assert_eq!(ticks.get(1).unwrap().volume, 3);
}

#[test]
fn roll_day_resets_the_day_and_keeps_history() {
    let mut i = instrument();
    let mut m = InstrumentMarket::new(&i, 8, 8);
    m.on_trade(p(3900.0), 2, 1002, OPEN_0930);
    m.on_trade(p(3950.0), 1, 1003, OPEN_0930 + MINUTE);
    m.record_tick(OPEN_0930 + MINUTE);
    m.set_settlement(p(3940.0));

    let q = *m.quote();
    i.roll_day(q.settlement.unwrap(), q.close.unwrap(), q.open_interest);
    m.roll_day(&i);
    let q = m.quote();
    assert_eq!((q.pre_settlement, q.pre_close, q.pre_open_interest), (p(3940.0), p(3950.0), 1003));
    assert_eq!((q.upper_limit, q.lower_limit), (p(4334.0), p(3546.0)));
    assert_eq!((q.last_price, q.volume, q.amount, q.open_interest), (p(3950.0), 0, 0, 1003));
    assert_eq!((q.open, q.highest, q.lowest, q.average, q.close, q.settlement), (None, None, None, None, None, None));
    assert_eq!(m.klines_for_duration(MINUTE).unwrap().bars().len(), 2);
    assert_eq!(m.ticks().len(), 1);

    // The next day's first trade opens fresh statistics and continues the bar ids.
    m.on_trade(p(3945.0), 1, 1004, OPEN_0930 + DAY);
    assert_eq!((m.quote().open, m.quote().volume), (Some(p(3945.0)), 1));
    let day = bars(&m, DAY);
    assert_eq!(day.last().unwrap(), &(1, bar(CHINA_MIDNIGHT + DAY, [3945.0; 4], 1, 1003, 1004)));
}

#[test]
fn same_inputs_give_equal_state() {
    let run = || {
        let mut m = InstrumentMarket::new(&instrument(), 4, 4);
        for k in 0..50 {
            m.on_trade(p(3900.0) + (k % 7) * p(0.2), 1 + k % 3, 1000 + k, OPEN_0930 + k * 7 * S);
            if k % 5 == 0 {
                m.record_tick(OPEN_0930 + k * 7 * S);
            }
        }
        m
    };
    assert_eq!(run(), run());
}
