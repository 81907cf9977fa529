//! Recovery across shards, made deterministic: two shard services trade through each other
//! (A on shard 0 trades cu2501 of shard 1, B on shard 1 trades SR501 of shard 0), their inputs
//! written to real WALs, and then a crash is staged by leaving the last messages each shard
//! received out of its log (as if it died before logging them, after their senders had logged
//! their causes). `rebuild_cluster` must find exactly those messages to deliver again, and once
//! they are delivered the two shards equal a run that never crashed, books, accounts and
//! message counts included. A log that consumed more than its peer's log sends is refused.

use qaexchange::domain::engine::EngineConfig;
use qaexchange::domain::instrument::{parse_instruments, Instrument};
use qaexchange::domain::shard::{check_cluster, Outgoing};
use qaexchange::server::body;
use qaexchange::server::journal::JournalLimits;
use qaexchange::server::recovery::{rebuild_cluster, shard_wal_dir};
use qaexchange::server::service::{Action, Origin, Service, Staged};
use qaexchange::server::wal_record::{encode, instruments_fingerprint, WalRecord, WAL_FORMAT};
use qaexchange::storage::wal::{ResumePoint, SyncMode, WalConfig, WalWriter};
use std::collections::VecDeque;
use std::path::Path;

fn instruments() -> Vec<Instrument> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/server_instruments.toml");
    parse_instruments(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn service(shard: u16) -> Service {
    Service::new(shard, 2, instruments(), 20250102, EngineConfig::default(), JournalLimits::default())
}

/// Two services joined by FIFO queues, logging what each ran.
struct Pair {
    services: Vec<Service>,
    logs: Vec<Vec<WalRecord>>,
    queues: Vec<VecDeque<Outgoing>>,
    clock: i64,
}

impl Pair {
    fn new() -> Self {
        Self { services: vec![service(0), service(1)], logs: vec![Vec::new(), Vec::new()], queues: vec![], clock: 0 }
            .with_queues()
    }

    fn with_queues(mut self) -> Self {
        self.queues = vec![VecDeque::new(), VecDeque::new()];
        self
    }

    fn tick(&mut self) -> i64 {
        self.clock += 1_000;
        1_735_781_400_000_000_000 + self.clock
    }

    fn absorb(&mut self, shard: usize, staged: Staged) {
        self.logs[shard].extend(staged.records);
        for out in staged.sends {
            self.queues[out.to as usize].push_back(out);
        }
    }

    fn act(&mut self, shard: usize, body: &str, decode: fn(&[u8]) -> Action) {
        let mut staged = Staged::default();
        let now = self.tick();
        self.services[shard].handle(decode(body.as_bytes()), now, Origin { shard, conn: 1, tag: 0 }, &mut staged);
        self.absorb(shard, staged);
    }

    /// Delivers everything queued, in order, until both queues are empty.
    fn drain(&mut self) {
        loop {
            let Some(to) = (0..2).find(|&s| !self.queues[s].is_empty()) else { return };
            let out = self.queues[to].pop_front().unwrap();
            let mut staged = Staged::default();
            let now = self.tick();
            self.services[to].deliver(1 - out.to, out.seq, out.msg, now, &mut staged);
            self.absorb(to, staged);
        }
    }

    fn state(&self) -> String {
        let states: Vec<_> = self.services.iter().map(|s| s.engine().state()).collect();
        check_cluster(&states).expect("cluster invariants");
        serde_json::to_string(&states).unwrap()
    }
}

fn submit(body: &[u8]) -> Action {
    body::submit(body, || unreachable!("every order names its client id")).unwrap()
}

fn open(body: &[u8]) -> Action {
    body::open_account(body).unwrap()
}

/// Writes `records` after a genesis into the WAL of `shard` under `storage`.
fn write_wal(storage: &Path, shard: u16, records: Vec<WalRecord>) {
    let dir = shard_wal_dir(storage, shard);
    std::fs::create_dir_all(&dir).unwrap();
    let fingerprint = instruments_fingerprint(&instruments());
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move {
            let config = WalConfig { dir, segment_bytes: 1 << 20, sync: SyncMode::None };
            let resume = ResumePoint { segment: None, offset: 0, next_sequence: 1 };
            let mut wal = WalWriter::open(config, &resume, false).await.unwrap();
            let genesis = WalRecord::Genesis {
                format: WAL_FORMAT,
                trading_day: 20250102,
                instruments_fingerprint: fingerprint,
                shards: 2,
                shard,
            };
            wal.append(&encode(&genesis).unwrap()).unwrap();
            for record in &records {
                wal.append(&encode(record).unwrap()).unwrap();
            }
            wal.commit().await.unwrap();
            wal.close().await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}

fn order(account: &str, id: &str, instrument: &str, direction: &str, price: f64, volume: i64) -> String {
    format!(
        r#"{{"account_id":"{account}","client_order_id":"{id}","instrument_id":"{instrument}","direction":"{direction}","offset":"OPEN","limit_price":{price},"volume":{volume}}}"#
    )
}

/// The trading before the crash: both accounts rest and trade on both instruments.
fn trade(pair: &mut Pair) {
    pair.act(0, r#"{"account_id":"A","init_cash":1000000}"#, open);
    pair.act(1, r#"{"account_id":"B","init_cash":1000000}"#, open);
    pair.act(1, &order("B", "b1", "SR501", "SELL", 5010.0, 3), submit);
    pair.drain();
    pair.act(0, &order("A", "a1", "SR501", "BUY", 5010.0, 2), submit);
    pair.drain();
    pair.act(0, &order("A", "a2", "cu2501", "BUY", 70000.0, 2), submit);
    pair.drain();
}

/// The messages in flight at the crash: B crosses A's cu bid on cu2501's own shard while its
/// SR order travels to shard 0; A's order travels to shard 1.
fn in_flight(pair: &mut Pair) {
    pair.act(1, &order("B", "b2", "cu2501", "SELL", 70000.0, 1), submit);
    pair.act(1, &order("B", "b3", "SR501", "SELL", 5000.0, 1), submit);
    pair.act(0, &order("A", "a3", "cu2501", "SELL", 70100.0, 4), submit);
}

#[test]
fn undelivered_messages_are_found_and_delivered_once() {
    // The run that never crashed.
    let mut reference = Pair::new();
    trade(&mut reference);
    in_flight(&mut reference);
    reference.drain();
    let want = reference.state();

    // The crash: each shard's log stops before the messages then in flight.
    let mut crashed = Pair::new();
    trade(&mut crashed);
    in_flight(&mut crashed);
    let pending: Vec<usize> = crashed.queues.iter().map(VecDeque::len).collect();
    assert!(pending.iter().all(|&n| n > 0), "messages in flight both ways: {pending:?}");
    let storage = tempfile::tempdir().unwrap();
    for shard in 0..2u16 {
        write_wal(storage.path(), shard, crashed.logs[shard as usize].clone());
    }
    let cluster = rebuild_cluster(
        storage.path(),
        storage.path(),
        2,
        &instruments(),
        EngineConfig::default(),
        JournalLimits::default(),
        Vec::new(),
    )
    .expect("recovers");
    assert_eq!(cluster.recovered.redelivered, pending.iter().sum::<usize>());

    // Delivered again (by the runtime, first thing after start-up): the same state as never
    // crashing.
    let mut recovered = Pair::new();
    let mut redeliver = Vec::new();
    for (shard, rebuilt) in cluster.shards.into_iter().enumerate() {
        recovered.services[shard] = rebuilt.service.expect("a service");
        redeliver.push(rebuilt.redeliver);
    }
    for (shard, sends) in redeliver.into_iter().enumerate() {
        // What shard `shard` sends again is exactly what was queued from it at the crash.
        let queued: Vec<_> = crashed.queues[1 - shard].iter().cloned().collect();
        assert_eq!(sends, queued, "shard {shard}");
        for out in sends {
            recovered.queues[out.to as usize].push_back(out);
        }
    }
    recovered.clock = crashed.clock;
    reference.clock = crashed.clock;
    recovered.drain();
    // A delivery already logged is skipped, not applied twice.
    let mut staged = Staged::default();
    let again = crashed.queues[0].front().cloned().unwrap();
    recovered.services[0].deliver(1, again.seq, again.msg, recovered.clock, &mut staged);
    assert!(staged.records.is_empty() && staged.sends.is_empty());
    assert_eq!(recovered.state(), want);
}

#[test]
fn a_log_that_consumed_more_than_its_peer_sent_is_refused() {
    let mut pair = Pair::new();
    trade(&mut pair);
    in_flight(&mut pair);
    pair.drain();
    let storage = tempfile::tempdir().unwrap();
    // Shard 0's log lost its last records (e.g. sync = "none" and a power cut), shard 1's has
    // consumed what they sent.
    let mut short = pair.logs[0].clone();
    let last_match =
        short.iter().rposition(|r| matches!(r, WalRecord::Command(_))).expect("shard 0 ran a client command");
    short.truncate(last_match);
    write_wal(storage.path(), 0, short);
    write_wal(storage.path(), 1, pair.logs[1].clone());
    let error = rebuild_cluster(
        storage.path(),
        storage.path(),
        2,
        &instruments(),
        EngineConfig::default(),
        JournalLimits::default(),
        Vec::new(),
    )
    .err()
    .expect("refused");
    assert!(error.contains("the logs disagree"), "{error}");
}
