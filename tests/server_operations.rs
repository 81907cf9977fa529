//! Operating the real server: the per-shard connection limit, clearing the latency histograms
//! (`POST /admin/latency/reset`), and the `.hgrm` files each shard writes when it shuts down.

mod server_support;

use serde_json::{json, Value};
use server_support::{metric_sum, start, start_with_config, Client, Options, ServerProcess};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn options(dir: &std::path::Path) -> Options {
    let mut opts = Options::new(Some(dir));
    opts.extra = vec!["--instruments".into(), "tests/data/server_instruments.toml".into()];
    opts
}

fn order(account: &str, id: &str, instrument: &str, direction: &str, price: f64) -> Value {
    json!({"account_id": account, "client_order_id": id, "instrument_id": instrument, "direction": direction,
           "offset": "OPEN", "limit_price": price, "volume": 1})
}

/// Accounts A (shard 0) and B (shard 1) trade SR501 (shard 0) and cu2501 (shard 1) once each,
/// each submitting over a connection of its own shard: 4 submits, every shard executing and
/// logging some. Returns the two connections.
fn trade_on_both_shards(server: &ServerProcess) -> (Client, Client) {
    let (mut c0, mut c1) = (server.client_on_shard(0), server.client_on_shard(1));
    c0.ok("POST", "/api/account/open", Some(json!({"account_id": "A", "init_cash": 1_000_000})));
    c1.ok("POST", "/api/account/open", Some(json!({"account_id": "B", "init_cash": 1_000_000})));
    c0.ok("POST", "/api/order/submit", Some(order("A", "a-sr", "SR501", "BUY", 5000.0)));
    let taken = c1.ok("POST", "/api/order/submit", Some(order("B", "b-sr", "SR501", "SELL", 5000.0)));
    assert_eq!(taken["trades"].as_array().unwrap().len(), 1, "{taken}");
    c1.ok("POST", "/api/order/submit", Some(order("B", "b-cu", "cu2501", "BUY", 70_000.0)));
    let taken = c0.ok("POST", "/api/order/submit", Some(order("A", "a-cu", "cu2501", "SELL", 70_000.0)));
    assert_eq!(taken["trades"].as_array().unwrap().len(), 1, "{taken}");
    (c0, c1)
}

/// The `(n = N)` of `/admin/latency`'s summary line of histogram `name` (e.g. `stage parse`).
fn summary_count(latency: &str, name: &str) -> u64 {
    let prefix = format!("# {name}: ");
    let line = latency.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name:?} in:\n{latency}"));
    let n = line.rsplit_once("(n = ").and_then(|(_, n)| n.strip_suffix(')')).unwrap_or_else(|| panic!("{line}"));
    n.parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn latency_text(c: &mut Client) -> String {
    let r = c.get("/admin/latency");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).expect("latency is text")
}

/// A shard's gauge or counter from `/metrics`.
fn shard_metric(c: &mut Client, family: &str, shard: u64) -> u64 {
    let (_, text) = metric_sum(c, family);
    let prefix = format!("{family}{{shard=\"{shard}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"));
    line[prefix.len()..].parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn connections_over_the_shard_limit_get_503_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(None);
    // One shard takes every connection, so the limit is reached exactly.
    opts.shards = 1;
    let server = start_with_config(opts, dir.path(), "[http]\nmax_connections_per_shard = 3\n");
    let mut held: Vec<Client> = (0..3).map(|_| server.client()).collect();
    for c in &mut held {
        c.ok("GET", "/health", None);
    }

    // The fourth is answered 503 (9014) without sending anything, then closed.
    let refused_probe = |server: &ServerProcess| {
        let mut probe = server.client();
        probe.set_read_timeout(Duration::from_secs(10));
        let r = probe.read_response().expect("the server answers a refused connection at once");
        let v = r.json();
        assert_eq!(
            (r.status, v["success"].as_bool(), v["error"]["code"].as_u64()),
            (503, Some(false), Some(9014)),
            "{v}"
        );
        assert!(probe.read_response().is_err(), "a refused connection is closed");
    };
    refused_probe(&server);
    // The held connections still work; the refusal is counted.
    for c in &mut held {
        c.ok("GET", "/health", None);
    }
    assert_eq!(shard_metric(&mut held[0], "qaexchange_connections_refused_total", 0), 1);
    assert_eq!(shard_metric(&mut held[0], "qaexchange_connections_open", 0), 3);

    // Closing one makes room once the server has seen it close.
    drop(held.pop());
    let began = Instant::now();
    while shard_metric(&mut held[0], "qaexchange_connections_open", 0) > 2 {
        assert!(began.elapsed() < Duration::from_secs(10), "the closed connection is still counted open");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut again = server.client();
    assert_eq!(again.ok("GET", "/health", None)["status"], "ok");
    // Full again: the next one is refused.
    refused_probe(&server);
    assert_eq!(shard_metric(&mut held[0], "qaexchange_connections_refused_total", 0), 2);
}

#[test]
fn latency_reset_clears_every_shards_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&options(dir.path()));
    let (mut c0, mut c1) = trade_on_both_shards(&server);
    let before = latency_text(&mut c0);
    assert_eq!(summary_count(&before, "endpoint POST /api/order/submit"), 4, "{before}");
    assert!(before.contains("\n### endpoint POST /api/order/submit\n"), "{before}");
    for stage in ["execute_command", "wal_write_sync", "history_apply", "commit_wait"] {
        assert!(summary_count(&before, &format!("stage {stage}")) > 0, "{before}");
    }

    assert_eq!(c1.refused("GET", "/admin/latency/reset", None, 405), 9007);
    assert_eq!(c1.ok("POST", "/admin/latency/reset", None)["reset"], 2);
    let after = latency_text(&mut c0);
    // What the opens and orders recorded, on either shard, is gone; empty histograms get no
    // `.hgrm`. (The reset and this read are themselves parsed, hopped and executed after some
    // shard's reset, so those stages need not be empty; only writes reach the WAL.)
    for name in [
        "endpoint POST /api/order/submit",
        "endpoint POST /api/account/open",
        "endpoint GET /health",
        "stage wal_write_sync",
        "stage history_apply",
    ] {
        assert_eq!(summary_count(&after, name), 0, "{name}:\n{after}");
        assert!(!after.contains(&format!("\n### {name}\n")), "{after}");
    }
    // Counters keep counting.
    assert_eq!(metric_sum(&mut c0, "qaexchange_orders_accepted_total").0, 4);

    // Histograms record again after a reset.
    c1.ok("POST", "/api/order/submit", Some(order("B", "b-sr-2", "SR501", "SELL", 5010.0)));
    let later = latency_text(&mut c0);
    assert_eq!(summary_count(&later, "endpoint POST /api/order/submit"), 1, "{later}");
    assert!(summary_count(&later, "stage wal_write_sync") >= 1, "{later}");
}

/// One histogram of a `.hgrm` percentile distribution: (value us, percentile, total count) rows
/// and the footer's `Total count`.
struct Hgrm {
    rows: Vec<(f64, f64, u64)>,
    total: u64,
}

/// Parses the sections (`### <name>` then HdrHistogram's percentile distribution) of a latency
/// dump, checking each one's form: the column header, rows with percentiles and counts that
/// never go down, ending at percentile 1 with the footer's total.
fn parse_hgrm_sections(text: &str) -> BTreeMap<String, Hgrm> {
    let mut sections = BTreeMap::new();
    for section in text.split("\n### ").skip(1) {
        let mut lines = section.lines();
        let name = lines.next().unwrap().to_string();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"], "{name}");
        let (mut rows, mut total) = (Vec::new(), None);
        for line in lines.filter(|l| !l.trim().is_empty()) {
            if let Some(footer) = line.strip_prefix("#[") {
                if let Some((_, n)) = footer.split_once("Total count    =") {
                    total = Some(n.trim().trim_end_matches(']').trim().parse::<u64>().expect("total count"));
                }
                continue;
            }
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert!(cols.len() == 3 || cols.len() == 4, "{name}: {line:?}");
            let row = (cols[0].parse().unwrap(), cols[1].parse().unwrap(), cols[2].parse().unwrap());
            rows.push(row);
        }
        let total = total.unwrap_or_else(|| panic!("{name}: no Total count footer"));
        for pair in rows.windows(2) {
            assert!(pair[1].0 >= pair[0].0 && pair[1].1 >= pair[0].1 && pair[1].2 >= pair[0].2, "{name}: {section}");
        }
        let last = rows.last().unwrap_or_else(|| panic!("{name}: no rows"));
        assert_eq!((last.1, last.2), (1.0, total), "{name}: {section}");
        sections.insert(name, Hgrm { rows, total });
    }
    sections
}

#[test]
fn shards_write_their_latency_histograms_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&options(dir.path()));
    trade_on_both_shards(&server);
    let files: Vec<_> = (0..2).map(|k| dir.path().join("latency").join(format!("shard-{k}.hgrm.txt"))).collect();
    assert!(files.iter().all(|f| !f.exists()), "written before shutdown");

    // SIGTERM is the clean shutdown (tools/server.rs).
    let status = server.terminate();
    assert!(status.success(), "{status:?}\n{}", server.stderr());
    let mut submits = 0;
    for (shard, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let sections = parse_hgrm_sections(&text);
        // Each shard executed and logged orders of its own accounts.
        for stage in ["stage execute_command", "stage wal_write_sync"] {
            let h = sections.get(stage).unwrap_or_else(|| panic!("shard {shard}: no {stage}:\n{text}"));
            assert!(h.total > 0 && h.rows.iter().all(|r| r.0 > 0.0), "shard {shard} {stage}:\n{text}");
            assert_eq!(h.total, summary_count(&text, stage), "shard {shard} {stage}");
        }
        submits += sections.get("endpoint POST /api/order/submit").map_or(0, |h| h.total);
    }
    // Each shard timed the submits that came over its connections: 4 in all.
    assert_eq!(submits, 4);
}
