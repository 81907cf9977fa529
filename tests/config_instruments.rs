//! The shipped config/instruments.toml parses, and its contracts carry the published specs.

use qaexchange::domain::instrument::{parse_instruments, ExchangeId, Instrument};
use qaexchange::domain::types::{apply_rate, money_from_f64, price_from_f64, rate_from_f64};

fn load() -> Vec<Instrument> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/instruments.toml");
    let text = std::fs::read_to_string(path).expect("config/instruments.toml is readable");
    parse_instruments(&text).expect("config/instruments.toml is valid")
}

fn find<'a>(all: &'a [Instrument], id: &str) -> &'a Instrument {
    all.iter().find(|i| i.instrument_id.as_str() == id).unwrap_or_else(|| panic!("{id} is listed"))
}

#[test]
fn lists_the_expected_contracts() {
    let all = load();
    assert_eq!(all.len(), 12);
    let expected = [
        ("IF2501", ExchangeId::CFFEX),
        ("IC2501", ExchangeId::CFFEX),
        ("IH2501", ExchangeId::CFFEX),
        ("IM2501", ExchangeId::CFFEX),
        ("cu2501", ExchangeId::SHFE),
        ("au2502", ExchangeId::SHFE),
        ("rb2501", ExchangeId::SHFE),
        ("i2501", ExchangeId::DCE),
        ("m2501", ExchangeId::DCE),
        ("SR501", ExchangeId::CZCE),
        ("TA501", ExchangeId::CZCE),
        ("sc2501", ExchangeId::INE),
    ];
    for (id, exchange) in expected {
        assert_eq!(find(&all, id).exchange_id, exchange, "{id}");
    }
}

#[test]
fn prices_sit_on_the_tick_grid_and_bands_are_sane() {
    for i in load() {
        let id = i.instrument_id.as_str();
        assert!(i.price_tick > 0, "{id}");
        assert_eq!(i.pre_settlement % i.price_tick, 0, "{id} pre_settlement off grid");
        assert_eq!(i.pre_close % i.price_tick, 0, "{id} pre_close off grid");
        assert_eq!(i.upper_limit % i.price_tick, 0, "{id} upper limit off grid");
        assert_eq!(i.lower_limit % i.price_tick, 0, "{id} lower limit off grid");
        assert!(0 < i.lower_limit && i.lower_limit < i.pre_settlement, "{id}");
        assert!(i.pre_settlement < i.upper_limit, "{id}");
        assert!(i.lower_limit <= i.pre_close && i.pre_close <= i.upper_limit, "{id}");
        // The band is pre_settlement x rate wide on each side, less at most one tick of rounding.
        let width = apply_rate(i.pre_settlement, i.limit_rate);
        let up = i.upper_limit - i.pre_settlement;
        let down = i.pre_settlement - i.lower_limit;
        let tick = i.price_tick;
        assert!(width - tick < up && up <= width, "{id} upper band width");
        assert!(width - tick < down && down <= width, "{id} lower band width");
        // Exchange bands run 2%..20%, margins 4%..30%, and margin covers at least the band.
        assert!((rate_from_f64(0.02)..=rate_from_f64(0.20)).contains(&i.limit_rate), "{id}");
        for margin in [i.margin_rate_long, i.margin_rate_short] {
            assert!((rate_from_f64(0.04)..=rate_from_f64(0.30)).contains(&margin), "{id}");
            assert!(margin >= i.limit_rate, "{id} margin below the daily band");
        }
        assert!(i.max_order_volume > 0 && i.max_order_volume <= 1000, "{id}");
        assert_eq!(i.pre_open_interest, 0, "{id}: a new venue holds no positions");
        assert_eq!(i.delivery_year, Some(2025), "{id}");
        let c = &i.commission;
        assert!(c.open_per_lot > 0 || c.open_rate > 0, "{id} charges nothing to open");
    }
}

#[test]
fn spot_values_match_the_contract_specs() {
    let all = load();

    let if_ = find(&all, "IF2501");
    assert_eq!((if_.volume_multiple, if_.price_tick), (300, price_from_f64(0.2)));
    assert_eq!(if_.limit_rate, rate_from_f64(0.10));
    assert_eq!(if_.commission.open_rate, rate_from_f64(0.000023));
    assert_eq!(if_.commission.close_today_rate, rate_from_f64(0.00023));
    assert_eq!(if_.max_order_volume, 20);
    // 3933.2 +/- 10%: 4326.52 rounds down to 4326.4, 3539.88 rounds up to 3540.0.
    assert_eq!((if_.upper_limit, if_.lower_limit), (price_from_f64(4326.4), price_from_f64(3540.0)));

    let ic = find(&all, "IC2501");
    assert_eq!((ic.volume_multiple, ic.price_tick), (200, price_from_f64(0.2)));
    let ih = find(&all, "IH2501");
    assert_eq!((ih.volume_multiple, ih.price_tick), (300, price_from_f64(0.2)));
    let im = find(&all, "IM2501");
    assert_eq!((im.volume_multiple, im.price_tick), (200, price_from_f64(0.2)));

    let cu = find(&all, "cu2501");
    assert_eq!((cu.volume_multiple, cu.price_tick), (5, price_from_f64(10.0)));
    assert!(cu.exchange_id.has_strict_close_today());

    let au = find(&all, "au2502");
    assert_eq!((au.volume_multiple, au.price_tick), (1000, price_from_f64(0.02)));
    assert_eq!(au.commission.open_per_lot, money_from_f64(10.0));

    let rb = find(&all, "rb2501");
    assert_eq!((rb.volume_multiple, rb.price_tick), (10, price_from_f64(1.0)));

    let i = find(&all, "i2501");
    assert_eq!((i.volume_multiple, i.price_tick), (100, price_from_f64(0.5)));

    let m = find(&all, "m2501");
    assert_eq!((m.volume_multiple, m.price_tick), (10, price_from_f64(1.0)));
    assert_eq!(m.commission.close_today_per_lot, money_from_f64(1.5));

    let sr = find(&all, "SR501");
    assert_eq!((sr.volume_multiple, sr.price_tick), (10, price_from_f64(1.0)));

    let ta = find(&all, "TA501");
    assert_eq!((ta.volume_multiple, ta.price_tick), (5, price_from_f64(2.0)));

    let sc = find(&all, "sc2501");
    assert_eq!((sc.volume_multiple, sc.price_tick), (1000, price_from_f64(0.1)));
    assert_eq!(sc.commission.open_per_lot, money_from_f64(20.0));
    assert!(sc.exchange_id.has_strict_close_today());
}
