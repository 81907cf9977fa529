//! What one shard measures about itself: latency histograms per stage and per endpoint, and
//! counters. Single-threaded (each shard owns its own; no atomics, no locks); `/metrics` and
//! `/admin/latency` gather every shard's snapshot over the shard channels and merge them.
//!
//! Stages of a request, in nanoseconds:
//! - `parse`: HTTP framing and parsing, routing and body decoding, on the connection's shard;
//! - `hop`: a request's trip from the connection's shard to the owning shard's core;
//! - `execute_command`: running a client command (checks and hold, and the match and fills
//!   when the instrument is on the same shard);
//! - `execute_peer`: running a message from another shard (match, or fills and endings);
//! - `wal_write_sync`: one group's WAL write and its sync (durable: one `O_DSYNC` write);
//! - `history_apply`: one commit group's writes into the history store's memtable, once its
//!   records are written (and synced, in durable mode), before its replies are released (part
//!   of their `commit_wait`);
//! - `commit_wait`: from a reply being staged to its release after the group's sync;
//! - `reply_hop`: a reply's trip back to the connection's shard;
//! - `endpoint <pattern>`: parsing done to answer written, per endpoint, on the connection's shard.

use crate::metrics::hgrm::{summary_us, to_hgrm};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::Instant;

/// 1 µs .. 60 s at 2 significant digits: small enough to gather from every shard per scrape.
fn stage_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 2).expect("static histogram bounds are valid")
}

pub const STAGES: [&str; 10] = [
    "parse",
    "hop",
    "execute_command",
    "execute_peer",
    "wal_write_sync",
    "history_apply",
    "history_backlog_wait",
    "history_slowdown",
    "commit_wait",
    "reply_hop",
];

/// Counters of one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub orders_accepted: u64,
    pub trades: u64,
    /// Refusals by reject or HTTP error code.
    pub rejects: BTreeMap<u32, u64>,
    pub wal_records: u64,
    pub wal_bytes: u64,
    pub wal_syncs: u64,
    pub wal_groups: u64,
    /// Commit groups written while an earlier group was in flight (written, not answered).
    pub wal_groups_overlapped: u64,
    pub peer_messages_sent: u64,
    pub peer_messages_received: u64,
    /// Records staged and not yet committed, sampled at each commit.
    pub staged_records: u64,
    pub connections_open: u64,
    /// WebSocket (DIFF and legacy) sessions open.
    pub ws_sessions_open: u64,
    /// WebSocket sessions cut off because their client stopped reading.
    pub ws_slow_disconnects: u64,
    /// Times a WebSocket session with a message ready waited for the delivery budget.
    pub ws_budget_waits: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub http_requests: u64,
    pub http_4xx: u64,
    pub http_5xx: u64,
}

#[derive(Clone, Debug)]
pub struct ShardMetrics {
    pub stages: BTreeMap<&'static str, Histogram<u64>>,
    pub endpoints: BTreeMap<&'static str, Histogram<u64>>,
    /// The group-size distribution of the WAL (records per group).
    pub group_records: Histogram<u64>,
    pub counters: Counters,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self {
            stages: STAGES.iter().map(|&s| (s, stage_histogram())).collect(),
            endpoints: BTreeMap::new(),
            group_records: Histogram::new_with_bounds(1, 10_000_000, 2).expect("static bounds"),
            counters: Counters::default(),
        }
    }
}

impl ShardMetrics {
    /// Records `since.elapsed()` under a stage.
    pub fn stage_since(&mut self, stage: &'static str, since: Instant) {
        self.stage_ns(stage, since.elapsed().as_nanos() as u64);
    }

    pub fn stage_ns(&mut self, stage: &'static str, ns: u64) {
        if let Some(h) = self.stages.get_mut(stage) {
            h.saturating_record(ns.max(1_000));
        }
    }

    pub fn endpoint_since(&mut self, pattern: &'static str, since: Instant) {
        let ns = since.elapsed().as_nanos() as u64;
        self.endpoints.entry(pattern).or_insert_with(stage_histogram).saturating_record(ns.max(1_000));
    }

    pub fn reject(&mut self, code: u32) {
        *self.counters.rejects.entry(code).or_default() += 1;
    }

    /// Clears the histograms (counters keep counting, as Prometheus expects).
    pub fn reset_latency(&mut self) {
        for h in self.stages.values_mut().chain(self.endpoints.values_mut()) {
            h.reset();
        }
        self.group_records.reset();
    }
}

/// Picks the labelled histograms of one shard for a Prometheus summary family.
type HistogramPicker = dyn Fn(&ShardMetrics) -> Vec<(String, &Histogram<u64>)>;

/// Every shard's metrics, as gathered.
pub struct Gathered(pub Vec<(usize, ShardMetrics)>);

impl Gathered {
    /// The histograms of all shards merged: stages, then endpoints.
    fn merged(&self) -> BTreeMap<String, Histogram<u64>> {
        let mut all: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
        for (_, m) in &self.0 {
            let named = m
                .stages
                .iter()
                .map(|(k, h)| (format!("stage {k}"), h))
                .chain(m.endpoints.iter().map(|(k, h)| (format!("endpoint {k}"), h)));
            for (name, h) in named {
                match all.get_mut(&name) {
                    Some(mine) => {
                        let _ = mine.add(h);
                    }
                    None => {
                        all.insert(name, h.clone());
                    }
                }
            }
        }
        all
    }

    /// `/admin/latency`: a summary line per histogram, then each one's `.hgrm` (microseconds),
    /// all shards merged.
    pub fn latency_text(&self) -> String {
        let merged = self.merged();
        let mut out = String::from("# qaexchange latency, all shards, microseconds\n");
        for (name, h) in &merged {
            out.push_str(&format!("# {name}: {}\n", summary_us(h)));
        }
        for (name, h) in merged.iter().filter(|(_, h)| !h.is_empty()) {
            out.push_str(&format!("\n### {name}\n"));
            out.push_str(&to_hgrm(h));
        }
        out
    }

    /// `/metrics`: Prometheus text exposition, one series per shard.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in rows {
                out.push_str(&format!("{name}{{{labels}}} {value}\n"));
            }
        };
        let per_shard = |f: &dyn Fn(&Counters) -> u64| {
            self.0.iter().map(|(s, m)| (format!("shard=\"{s}\""), f(&m.counters) as f64)).collect::<Vec<_>>()
        };
        family("qaexchange_orders_accepted_total", "counter", "Orders accepted.", per_shard(&|c| c.orders_accepted));
        family("qaexchange_trades_total", "counter", "Trades matched on this shard's books.", per_shard(&|c| c.trades));
        let rejects = self
            .0
            .iter()
            .flat_map(|(s, m)| {
                m.counters.rejects.iter().map(move |(code, n)| (format!("shard=\"{s}\",code=\"{code}\""), *n as f64))
            })
            .collect();
        family("qaexchange_rejects_total", "counter", "Refusals by error code.", rejects);
        family("qaexchange_wal_records_total", "counter", "WAL records written.", per_shard(&|c| c.wal_records));
        family("qaexchange_wal_bytes_total", "counter", "WAL payload bytes written.", per_shard(&|c| c.wal_bytes));
        family("qaexchange_wal_syncs_total", "counter", "WAL syncs.", per_shard(&|c| c.wal_syncs));
        family("qaexchange_wal_groups_total", "counter", "WAL commit groups.", per_shard(&|c| c.wal_groups));
        family(
            "qaexchange_wal_groups_overlapped_total",
            "counter",
            "WAL commit groups written while an earlier group was still in flight (written, not answered).",
            per_shard(&|c| c.wal_groups_overlapped),
        );
        family(
            "qaexchange_peer_messages_sent_total",
            "counter",
            "Messages sent to other shards.",
            per_shard(&|c| c.peer_messages_sent),
        );
        family(
            "qaexchange_peer_messages_received_total",
            "counter",
            "Messages received from other shards.",
            per_shard(&|c| c.peer_messages_received),
        );
        family(
            "qaexchange_staged_records",
            "gauge",
            "Records waiting for the next WAL commit.",
            per_shard(&|c| c.staged_records),
        );
        family("qaexchange_connections_open", "gauge", "HTTP connections open.", per_shard(&|c| c.connections_open));
        family("qaexchange_ws_sessions_open", "gauge", "WebSocket sessions open.", per_shard(&|c| c.ws_sessions_open));
        family(
            "qaexchange_ws_slow_disconnects_total",
            "counter",
            "WebSocket sessions cut off because their client stopped reading.",
            per_shard(&|c| c.ws_slow_disconnects),
        );
        family(
            "qaexchange_ws_budget_waits_total",
            "counter",
            "Times a WebSocket session with a message ready waited for the shard's delivery budget.",
            per_shard(&|c| c.ws_budget_waits),
        );
        family(
            "qaexchange_connections_accepted_total",
            "counter",
            "HTTP connections accepted.",
            per_shard(&|c| c.connections_accepted),
        );
        family(
            "qaexchange_connections_refused_total",
            "counter",
            "Connections refused over the limit.",
            per_shard(&|c| c.connections_refused),
        );
        family("qaexchange_http_requests_total", "counter", "HTTP requests parsed.", per_shard(&|c| c.http_requests));
        family("qaexchange_http_4xx_total", "counter", "Answers with a 4xx status.", per_shard(&|c| c.http_4xx));
        family("qaexchange_http_5xx_total", "counter", "Answers with a 5xx status.", per_shard(&|c| c.http_5xx));
        let quantiles = |pick: &HistogramPicker| {
            let mut rows = Vec::new();
            for (s, m) in &self.0 {
                for (label, h) in pick(m) {
                    if h.is_empty() {
                        continue;
                    }
                    for q in [0.5, 0.99, 0.999] {
                        rows.push((
                            format!("shard=\"{s}\",{label},quantile=\"{q}\""),
                            h.value_at_quantile(q) as f64 / 1e9,
                        ));
                    }
                }
            }
            rows
        };
        let stages = quantiles(&|m| m.stages.iter().map(|(k, h)| (format!("stage=\"{k}\""), h)).collect());
        family("qaexchange_stage_latency_seconds", "summary", "Latency per request stage.", stages);
        let endpoints = quantiles(&|m| m.endpoints.iter().map(|(k, h)| (format!("endpoint=\"{k}\""), h)).collect());
        family(
            "qaexchange_endpoint_latency_seconds",
            "summary",
            "Latency per endpoint, parsed to answered.",
            endpoints,
        );
        let groups = quantiles(&|m| vec![(String::from("kind=\"records\""), &m.group_records)]);
        family("qaexchange_wal_group_size", "summary", "Records per WAL commit group.", groups);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathered_shards_merge_into_latency_and_prometheus_text() {
        let mut a = ShardMetrics::default();
        let mut b = ShardMetrics::default();
        a.stage_ns("parse", 5_000);
        b.stage_ns("parse", 7_000);
        a.stage_ns("wal_write_sync", 300_000);
        a.endpoint_since("POST /api/order/submit", Instant::now());
        a.counters.orders_accepted = 3;
        b.counters.orders_accepted = 4;
        b.reject(2008);
        a.group_records.saturating_record(12);
        let g = Gathered(vec![(0, a), (1, b)]);
        let text = g.latency_text();
        assert!(text.contains("# stage parse: p50 5."), "{text}");
        assert!(text.contains("(n = 2)"), "{text}");
        assert!(text.contains("### endpoint POST /api/order/submit"), "{text}");
        let prom = g.prometheus();
        assert!(prom.contains("qaexchange_orders_accepted_total{shard=\"0\"} 3\n"), "{prom}");
        assert!(prom.contains("qaexchange_orders_accepted_total{shard=\"1\"} 4\n"), "{prom}");
        assert!(prom.contains("qaexchange_rejects_total{shard=\"1\",code=\"2008\"} 1\n"), "{prom}");
        assert!(
            prom.contains("qaexchange_stage_latency_seconds{shard=\"0\",stage=\"wal_write_sync\",quantile=\"0.99\"}")
        );
        for line in prom.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit_once(' ').unwrap().1;
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
