//! Pipelined group commit (`[storage] syncs_in_flight`): clients stream orders at one shard, so
//! groups are written while earlier groups sync. Each answer is the one for its request, every
//! acknowledged order survives SIGKILL with its fills, and the venue stays zero-sum; with
//! `syncs_in_flight = 1` no group is written while another is in flight.

mod server_support;

use serde_json::{json, Value};
use server_support::{metric_sum, settled_state, start, zero_sum_state, Client, Options, ServerProcess};
use std::collections::BTreeMap;
use std::net::SocketAddr;

const CLIENTS: usize = 12;
const ORDERS_PER_CLIENT: usize = 120;

fn options(dir: &std::path::Path, syncs_in_flight: usize) -> Options {
    let config = dir.join("exchange.toml");
    std::fs::write(&config, format!("[storage]\nsyncs_in_flight = {syncs_in_flight}\n")).unwrap();
    let mut opts = Options::new(Some(&dir.join("data")));
    opts.shards = 1;
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    opts.config = Some(config);
    opts
}

/// One client: crossing limit orders one at a time; returns (order id -> (status, filled)) of
/// what was acknowledged, after checking that each answer is its own request's.
fn stream(addr: SocketAddr, k: usize) -> BTreeMap<u64, (String, i64)> {
    let mut c = Client::connect(addr);
    let account = format!("P{k}");
    let mut acked = BTreeMap::new();
    for n in 0..ORDERS_PER_CLIENT {
        let client_id = format!("{account}-{n}");
        // Buyers and sellers at overlapping prices, so groups carry trades between clients.
        let direction = if (k + n) % 2 == 0 { "BUY" } else { "SELL" };
        let price = 5_000 + ((k * 7 + n * 3) % 5) as i64 - 2;
        let body = json!({"account_id": account, "client_order_id": client_id, "instrument_id": "SR501",
            "direction": direction, "offset": "OPEN", "limit_price": price, "volume": 1, "time_condition": "GFD"});
        let v = c.post("/api/order/submit", body).json();
        if v["success"] != true {
            // Self-trade prevention may refuse one; nothing else should.
            assert_eq!(v["error"]["code"], 2008, "{v}");
            continue;
        }
        let o = &v["data"]["order"];
        assert_eq!(o["client_order_id"], json!(client_id), "an answer for another request: {v}");
        let status = o["status"].as_str().unwrap().to_string();
        acked.insert(o["order_id"].as_u64().unwrap(), (status, o["filled_volume"].as_i64().unwrap()));
    }
    acked
}

/// Streams from every client at once; returns what was acknowledged and the groups that
/// overlapped.
fn load(server: &ServerProcess) -> (BTreeMap<u64, (String, i64)>, u64) {
    {
        let mut c = server.client();
        for k in 0..CLIENTS {
            c.ok("POST", "/api/account/open", Some(json!({"account_id": format!("P{k}"), "init_cash": 10_000_000})));
        }
    }
    let threads: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let addr = server.addr;
            std::thread::spawn(move || stream(addr, k))
        })
        .collect();
    let mut acked = BTreeMap::new();
    for t in threads {
        acked.extend(t.join().unwrap());
    }
    let (overlapped, _) = metric_sum(&mut server.client(), "qaexchange_wal_groups_overlapped_total");
    (acked, overlapped)
}

fn check(server: &ServerProcess, acked: &BTreeMap<u64, (String, i64)>) -> Value {
    let mut c = server.client();
    for (id, (status, filled)) in acked {
        let o = c.ok("GET", &format!("/api/order/{id}"), None);
        let now_filled = o["filled_volume"].as_i64().unwrap();
        if status == "FINISHED" {
            assert_eq!((o["status"].as_str().unwrap(), now_filled), ("FINISHED", *filled), "order {id}: {o}");
        } else {
            assert!(now_filled >= *filled, "order {id} lost fills: {o}");
        }
    }
    zero_sum_state(&mut c)
}

#[test]
fn groups_written_during_syncs_are_answered_in_order_and_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&options(dir.path(), 8));
    let (acked, overlapped) = load(&server);
    assert!(acked.len() > CLIENTS * ORDERS_PER_CLIENT / 2, "too little acknowledged: {}", acked.len());
    assert!(overlapped > 0, "no group was written while another synced");
    let before = check(&server, &acked);
    server.kill9();
    let server = start(&options(dir.path(), 8));
    let after = check(&server, &acked);
    assert_eq!(before, after, "the restart differs from the state before the kill");
    assert_eq!(after, settled_state(&mut server.client()));
}

#[test]
fn one_sync_in_flight_writes_each_group_after_the_last_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&options(dir.path(), 1));
    let (acked, overlapped) = load(&server);
    assert!(!acked.is_empty());
    assert_eq!(overlapped, 0);
    check(&server, &acked);
}
