//! Checkpoint encode and decode speed on a large shard: 100,000 accounts and a million finished
//! orders in the journal (each rests, then a tenth trade and the rest are cancelled), one
//! shard on the two instruments of tests/data/server_instruments.toml. What a checkpoint costs
//! the shard (encode) and a restart (decode), by the size of the state rather than of the WAL
//! (the recovery bench measures the whole restart).
//!
//! The shard pauses only for the snapshot (`Service::checkpoint_snapshot`); the encoding runs
//! on another thread meanwhile, and the service's next writes copy what they touch of what the
//! snapshot shares. So the bench prints the snapshot, the encode from it, and the same run of
//! further orders with and without a snapshot alive (the cost of those copies).
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
    let orders_kept = service.journal().order_count();
    let began = Instant::now();
    let snapshot = service.checkpoint_snapshot();
    let pause = began.elapsed().as_secs_f64();
    let began = Instant::now();
    let bytes = snapshot.encode().expect("encode");
    let encode = began.elapsed().as_secs_f64();
    // The same further orders twice: while the snapshot is alive (each write copies what it
    // touches that the snapshot shares), then with none.
    let more = (orders / 10).max(1);
    // Returns (seconds in all, the slowest order or cancel in seconds).
    let mut further = |service: &mut Service, round: usize| {
        let began = Instant::now();
        let mut slowest = 0f64;
        for n in 0..more {
            let name = &names[n % accounts];
            let client = format!("r{round}-{n}");
            let cancel = Action::Cancel {
                account_id: account(name),
                order_id: None,
                client_order_id: Some(ClientOrderId::new(&client).expect("short client id")),
            };
            for action in [limit(name, &client, "SR501", Direction::Buy, 4900.0), cancel] {
                let one = Instant::now();
                run(service, action);
                slowest = slowest.max(one.elapsed().as_secs_f64());
            }
        }
        (began.elapsed().as_secs_f64(), slowest)
    };
    let with_snapshot = further(&mut service, 1);
    drop(snapshot);
    let without = further(&mut service, 2);
    let began = Instant::now();
    let decoded = Service::decode_checkpoint(&bytes, JournalLimits::default()).expect("decode");
    let decode = began.elapsed().as_secs_f64();
    assert_eq!(decoded.journal().order_count(), orders_kept);
    let mb = bytes.len() as f64 / 1e6;
    println!(
        "checkpoint bench: {} accounts, {} orders in the journal; checkpoint {mb:.1} MB: the shard's pause (snapshot) \
         {:.1} ms; encode {:.0} ms ({:.0} MB/s) off the shard; decode {:.0} ms ({:.0} MB/s); {more} orders and cancels \
         after the snapshot {:.0} ms with it alive (slowest {:.0} us), {:.0} ms without (slowest {:.0} us)",
        service.engine().ledger().accounts().len(),
        orders_kept,
        pause * 1e3,
        encode * 1e3,
        mb / encode,
        decode * 1e3,
        mb / decode,
        with_snapshot.0 * 1e3,
        with_snapshot.1 * 1e6,
        without.0 * 1e3,
        without.1 * 1e6
    );
}
