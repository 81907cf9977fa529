//! Checkpoint encode and decode speed on a large shard: 100,000 accounts and a million finished
//! orders in the journal (each rests, then a tenth trade and the rest are cancelled), one
//! shard on the two instruments of tests/data/server_instruments.toml. What a checkpoint costs
//! the shard (encode) and a restart (decode), by the size of the state rather than of the WAL
//! (the recovery bench measures the whole restart).
//!
//! Run: `cargo bench --bench checkpoint`. Knobs: `CHECKPOINT_BENCH_ACCOUNTS` (100,000),
//! `CHECKPOINT_BENCH_ORDERS` (1,000,000).

use qaexchange::domain::command::InsertOrder;
use qaexchange::domain::engine::EngineConfig;
use qaexchange::domain::instrument::parse_instruments;
use qaexchange::domain::name::{AccountId, ClientOrderId, InstrumentId};
use qaexchange::domain::types::{price_from_f64, Direction, Offset, PriceType, TimeCondition, VolumeCondition};
use qaexchange::server::journal::JournalLimits;
use qaexchange::server::service::{Action, Origin, Service, Staged};
use std::time::Instant;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn account(name: &str) -> AccountId {
    AccountId::new(name).expect("short account name")
}

fn limit(owner: &str, client: &str, instrument: &str, direction: Direction, price: f64) -> Action {
    Action::Submit(InsertOrder {
        account_id: account(owner),
        client_order_id: ClientOrderId::new(client).expect("short client id"),
        instrument_id: InstrumentId::new(instrument).expect("short instrument id"),
        direction,
        offset: Offset::Open,
        price_type: PriceType::Limit,
        limit_price: Some(price_from_f64(price)),
        volume: 1,
        time_condition: TimeCondition::Gfd,
        volume_condition: VolumeCondition::Any,
        min_volume: 0,
    })
}

fn main() {
    let accounts = env_or("CHECKPOINT_BENCH_ACCOUNTS", 100_000).max(1);
    let orders = env_or("CHECKPOINT_BENCH_ORDERS", 1_000_000);
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/server_instruments.toml"))
        .expect("instruments file");
    let instruments = parse_instruments(&text).expect("instruments parse");
    let mut service = Service::new(0, 1, instruments, 20250102, EngineConfig::default(), JournalLimits::default());
    let mut tag = 0u32;
    let mut now = 1_735_781_400_000_000_000i64;
    let mut run = |service: &mut Service, action: Action| {
        tag = tag.wrapping_add(1);
        now += 1_000_000;
        let mut staged = Staged::default();
        service.handle(action, now, Origin { shard: 0, conn: 1, tag }, &mut staged);
    };
    let names: Vec<String> = (0..accounts).map(|n| format!("acct{n}")).collect();
    for name in &names {
        let open = Action::OpenAccount {
            account_id: account(name),
            init_cash: Some(price_from_f64(1_000_000.0)),
            password: None,
            owner: None,
        };
        run(&mut service, open);
    }
    let began = Instant::now();
    for n in 0..orders {
        let name = &names[n % accounts];
        let (symbol, price) = if n % 4 < 2 { ("SR501", 5000.0) } else { ("cu2501", 70000.0) };
        let direction = if n % 2 == 0 { Direction::Buy } else { Direction::Sell };
        let client = format!("o{n}");
        run(&mut service, limit(name, &client, symbol, direction, price));
        if n % 10 != 9 {
            let cancel = Action::Cancel {
                account_id: account(name),
                order_id: None,
                client_order_id: Some(ClientOrderId::new(&client).expect("short client id")),
            };
            run(&mut service, cancel);
        }
    }
    eprintln!("built the state in {:.1?}", began.elapsed());
    let began = Instant::now();
    let bytes = service.encode_checkpoint().expect("encode");
    let encode = began.elapsed().as_secs_f64();
    let began = Instant::now();
    let decoded = Service::decode_checkpoint(&bytes, JournalLimits::default()).expect("decode");
    let decode = began.elapsed().as_secs_f64();
    assert_eq!(decoded.journal().order_count(), service.journal().order_count());
    let mb = bytes.len() as f64 / 1e6;
    println!(
        "checkpoint bench: {} accounts, {} orders in the journal; checkpoint {mb:.1} MB: encode {:.0} ms ({:.0} MB/s), \
         decode {:.0} ms ({:.0} MB/s)",
        service.engine().ledger().accounts().len(),
        service.journal().order_count(),
        encode * 1e3,
        mb / encode,
        decode * 1e3,
        mb / decode
    );
}
