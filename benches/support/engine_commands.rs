//! The exchange-core mix (`mix.rs`) as engine commands: one instrument, one account per mix
//! owner (funded so no order is refused), Place = insert_order (LIMIT, OPEN, GTC or IOC),
//! Cancel = cancel_order, Move = modify_order with a new price. Shared by the engine and
//! recovery benchmarks.

#![allow(dead_code)]

use crate::mix::{Mix, Op};
use qaexchange::domain::command::{Command, InsertOrder};
use qaexchange::domain::instrument::{parse_instruments, Instrument};
use qaexchange::domain::name::{AccountId, ClientOrderId, InstrumentId};
use qaexchange::domain::types::*;

pub const INSTRUMENT: &str = r#"
[[instrument]]
instrument_id = "bm2501"
exchange_id = "DCE"
product_id = "bm"
volume_multiple = 10
price_tick = 1.0
margin_rate_long = 0.10
margin_rate_short = 0.10
limit_rate = 0.10
pre_settlement = 100000.0
max_order_volume = 100000
commission = { open_per_lot = 1.0, open_rate = 0.00005, close_per_lot = 1.0, close_rate = 0.00005 }
"#;

pub fn instrument() -> Instrument {
    parse_instruments(INSTRUMENT).expect("bench instrument").remove(0)
}

/// Account ids `acct<n>`; mix owner n (1-based) is account n - 1 (engine slot n - 1).
pub fn account_ids(n: u32) -> Vec<AccountId> {
    (0..n).map(|i| AccountId::new(&format!("acct{i}")).unwrap()).collect()
}

/// The commands of a mix, built before timing. Engine order ids are assigned 1, 2, ... in
/// insert order, and every insert is accepted, so mix id -> engine id is known up front.
/// `ids` maps mix id -> engine order id and `owner_of` mix id -> owner, across calls.
pub fn commands(
    ops: &[Op],
    first_engine_id: &mut u64,
    ids: &mut Vec<u64>,
    owner_of: &mut std::collections::HashMap<u64, u32>,
    accounts: &[AccountId],
) -> Vec<Command> {
    let instrument_id = InstrumentId::new("bm2501").unwrap();
    ops.iter()
        .enumerate()
        .map(|(seq, op)| {
            let ts = 1_735_781_400_000_000_000 + seq as i64 * 1_000;
            match *op {
                Op::Place { id, owner, buy, ioc, price, qty } => {
                    if ids.len() <= id as usize {
                        ids.resize(id as usize + 1, 0);
                    }
                    ids[id as usize] = *first_engine_id;
                    *first_engine_id += 1;
                    owner_of.insert(id, owner);
                    Command::InsertOrder {
                        ts,
                        order: InsertOrder {
                            account_id: accounts[owner as usize - 1],
                            client_order_id: ClientOrderId::new(&format!("o{id}")).unwrap(),
                            instrument_id,
                            direction: if buy { Direction::Buy } else { Direction::Sell },
                            offset: Offset::Open,
                            price_type: PriceType::Limit,
                            limit_price: Some(price * PRICE_SCALE),
                            volume: qty as Volume,
                            time_condition: if ioc { TimeCondition::Ioc } else { TimeCondition::Gtc },
                            volume_condition: VolumeCondition::Any,
                            min_volume: 0,
                        },
                    }
                }
                Op::Cancel { id } => Command::CancelOrder {
                    ts,
                    account_id: accounts[*owner_of.get(&id).expect("cancel of a placed order") as usize - 1],
                    order_id: Some(ids[id as usize]),
                    client_order_id: None,
                },
                Op::Move { id, price } => Command::ModifyOrder {
                    ts,
                    account_id: accounts[*owner_of.get(&id).expect("move of a placed order") as usize - 1],
                    order_id: Some(ids[id as usize]),
                    client_order_id: None,
                    new_price: Some(price * PRICE_SCALE),
                    new_volume: None,
                },
            }
        })
        .collect()
}

pub struct Prepared {
    pub setup: Vec<Command>,
    pub prefill: Vec<Command>,
    pub ops: Vec<Command>,
}

pub fn prepare(mix: &Mix) -> Prepared {
    let accounts = account_ids(mix.config.owners);
    let mut setup = Vec::new();
    for &account_id in &accounts {
        setup.push(Command::OpenAccount { ts: 0, account_id });
        // 900 billion yuan each: no order of the stream is ever short of funds.
        setup.push(Command::Deposit { ts: 0, account_id, amount: 900_000_000_000 * MONEY_SCALE });
    }
    let mut next_id = 1;
    let mut ids = Vec::new();
    let mut owner_of = std::collections::HashMap::new();
    let prefill = commands(&mix.prefill, &mut next_id, &mut ids, &mut owner_of, &accounts);
    let ops = commands(&mix.ops, &mut next_id, &mut ids, &mut owner_of, &accounts);
    Prepared { setup, prefill, ops }
}
