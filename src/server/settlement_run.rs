//! `POST /api/admin/settlement/execute`: daily settlement across every shard as one cut, run by
//! the shard that holds the admin's connection.
//!
//! 1. Halt client trading on every shard (in memory: a crash resumes trading), all on the same
//!    trading day.
//! 2. Wait until no message is in flight between shards (every `sent` count received).
//! 3. Read each instrument's settlement inputs from its owner: the cut.
//! 4. Every shard runs step 1 (cancels of what does not carry over, logged); wait again.
//! 5. Every shard runs step 2 (settles, logged). Between two shards' step 2 a crash leaves some
//!    settled and some not: recovery finishes the cut on the others before anything runs.
//! 6. Resume trading everywhere, on the next day.
//!
//! Any failure before step 5 resumes trading on the old day and answers the error.
//!
//! Instrument changes (create, status, update) also run on every shard in turn: the
//! [`AdminGate`] keeps them and settlements apart.

use super::conn::ShardContext;
use super::http::HttpErrorCode;
use super::service::{Action, Answer, Reply, SettleStep};
use crate::domain::engine::next_weekday;
use crate::domain::name::AccountId;
use crate::domain::shard::settlement::{SettleCut, SettlementInput};
use glommio::channels::local_channel::LocalReceiver;
use serde_json::Value;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the shards may take to exchange what is in flight at a halt, and how long a
/// settlement or an instrument change waits for the instrument change under way.
const QUIET_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps daily settlement and instrument changes (create, status, update) apart, across every
/// shard of the server (one gate, shared). Both run on every shard in turn, with awaits in
/// between: a create that met a shard halted for settlement after its owner had listed it left
/// the shards numbering instruments differently, and so did two creates interleaved on two
/// shards. So a change asked for while a settlement runs is refused (409, 9016) before any
/// shard sees it; a settlement waits for the change under way; changes run one at a time.
#[derive(Clone, Debug, Default)]
pub struct AdminGate(Arc<AtomicU8>);

const GATE_FREE: u8 = 0;
const GATE_SETTLING: u8 = 1;
const GATE_CHANGING: u8 = 2;

/// The gate, held until dropped.
#[derive(Debug)]
pub struct GateHeld(Arc<AtomicU8>);

impl Drop for GateHeld {
    fn drop(&mut self) {
        self.0.store(GATE_FREE, Ordering::Release);
    }
}

impl AdminGate {
    /// Takes the gate for a settlement: refused (409, 9016) while another runs; waits for an
    /// instrument change under way.
    pub async fn settle(&self) -> Result<GateHeld, Reply> {
        self.take(GATE_SETTLING).await
    }

    /// Takes the gate for an instrument change: refused (409, 9016) while a settlement runs;
    /// waits for another change under way.
    pub async fn change(&self) -> Result<GateHeld, Reply> {
        self.take(GATE_CHANGING).await
    }

    async fn take(&self, what: u8) -> Result<GateHeld, Reply> {
        let began = Instant::now();
        loop {
            match self.try_take(what) {
                Ok(held) => return Ok(held),
                Err(Some(refused)) => return Err(refused),
                Err(None) if began.elapsed() > QUIET_TIMEOUT => {
                    return Err(Reply::http_message(
                        HttpErrorCode::InternalError,
                        "internal server error: an instrument change did not finish within 10 s; nothing was done",
                    ))
                }
                Err(None) => glommio::timer::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    /// One try: the gate, or the refusal (a settlement holds it), or None (a change holds it).
    fn try_take(&self, what: u8) -> Result<GateHeld, Option<Reply>> {
        match self.0.compare_exchange(GATE_FREE, what, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(GateHeld(self.0.clone())),
            Err(GATE_SETTLING) => Err(Some(Reply::http(HttpErrorCode::SettlementRunning))),
            Err(_) => Err(None),
        }
    }
}

/// Runs a settlement; the answer of `POST /api/admin/settlement/execute`.
pub async fn execute(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    next_trading_day: Option<u32>,
) -> Reply {
    // No instrument is listed or changed from here until trading resumes.
    let gate = match ctx.admin_gate.settle().await {
        Ok(held) => held,
        Err(refused) => return refused,
    };
    let shards = ctx.shards;
    let mut halted = 0;
    let mut days = Vec::with_capacity(shards);
    let halt_pause = test_pause("QAEXCHANGE_SETTLE_HALT_PAUSE_MS");
    for shard in 0..shards {
        if let (true, Some(pause)) = (shard > 0, halt_pause) {
            glommio::timer::sleep(pause).await;
        }
        match step(ctx, conn, answers, shard, SettleStep::Halt).await {
            Ok(v) => {
                halted += 1;
                days.push(v["trading_day"].as_u64().unwrap_or(0) as u32);
            }
            Err(reply) => return resume(ctx, conn, answers, halted, reply).await,
        }
    }
    let day = days[0];
    if days.iter().any(|&d| d != day) {
        let why = format!("internal server error: the shards are on trading days {days:?}");
        return resume(ctx, conn, answers, halted, Reply::http_message(HttpErrorCode::InternalError, &why)).await;
    }
    let next_day = match next_trading_day {
        Some(next) if next > day && crate::domain::engine::is_valid_day(next) => next,
        Some(_) => {
            return resume(
                ctx,
                conn,
                answers,
                halted,
                Reply::reject(crate::domain::risk::RejectCode::InvalidTradingDay),
            )
            .await
        }
        None => next_weekday(day).unwrap_or(day),
    };
    if let Err(reply) = wait_quiet(ctx, conn, answers).await {
        return resume(ctx, conn, answers, halted, reply).await;
    }
    let cut = match read_cut(ctx, conn, answers, day, next_day).await {
        Ok(cut) => cut,
        Err(reply) => return resume(ctx, conn, answers, halted, reply).await,
    };
    // The instruments the cut was read for (none is listed while the gate is held).
    let ids = ctx.instrument_ids();
    for shard in 0..shards {
        if let Err(reply) = step(ctx, conn, answers, shard, SettleStep::Prepare(cut.clone())).await {
            return resume(ctx, conn, answers, halted, reply).await;
        }
    }
    if let Err(reply) = wait_quiet(ctx, conn, answers).await {
        return resume(ctx, conn, answers, halted, reply).await;
    }
    let pause = test_pause("QAEXCHANGE_SETTLE_PAUSE_MS");
    let mut statements = 0;
    let mut flagged: Vec<AccountId> = Vec::new();
    for shard in 0..shards {
        if shard > 0 {
            if let Some(pause) = pause {
                glommio::timer::sleep(pause).await;
            }
        }
        match step(ctx, conn, answers, shard, SettleStep::Apply(cut.clone())).await {
            Ok(v) => {
                statements += v["statements"].as_u64().unwrap_or(0);
                let names = v["flagged"].as_array().into_iter().flatten().filter_map(|a| a.as_str());
                flagged.extend(names.filter_map(AccountId::new));
            }
            // A shard that cannot settle a cut the others settle stopped on an internal error;
            // it is logged and answered; its restart finishes the cut.
            Err(reply) => return resume(ctx, conn, answers, halted, reply).await,
        }
    }
    let answer = resume(ctx, conn, answers, halted, Reply::success(&Value::Null)).await;
    drop(gate);
    if answer.status != 200 {
        return answer;
    }
    log_capped_bands(ctx, &ids, &cut);
    // The next session starts with the flagged accounts closed out at market.
    let mut liquidated = Vec::new();
    for account_id in flagged {
        let reply = super::force_liquidation::liquidate(ctx, conn, answers, account_id).await;
        let v: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        let result = if reply.status == 200 { v["data"].clone() } else { v["error"].clone() };
        liquidated.push(serde_json::json!({"account_id": account_id.as_str(), "result": result}));
    }
    Reply::success(&serde_json::json!({
        "settled_day": day,
        "trading_day": next_day,
        "statements": statements,
        "instruments": settled_instruments(&ids, &cut),
        "force_liquidated": liquidated,
    }))
}

/// The answer's line per instrument of the cut: `ids` are the instruments it was read for, in
/// slot order. Only what both have is listed (they are the same length; nothing is indexed).
fn settled_instruments(ids: &[String], cut: &SettleCut) -> Vec<Value> {
    ids.iter()
        .zip(&cut.prices)
        .zip(&cut.closes)
        .zip(&cut.open_interest)
        .map(|(((id, &price), &close), &open_interest)| {
            serde_json::json!({
                "instrument_id": id,
                "settlement_price": crate::domain::types::price_to_f64(price),
                "close": crate::domain::types::price_to_f64(close),
                "open_interest": open_interest,
            })
        })
        .collect()
}

/// Logs each instrument whose new band was capped (`Instrument::roll_day`: at most
/// `MAX_BAND_LEVELS` prices, one lot worth at most `MAX_LOT_VALUE` at the upper limit).
fn log_capped_bands(ctx: &ShardContext, ids: &[String], cut: &SettleCut) {
    for (id, &price) in ids.iter().zip(&cut.prices) {
        let Some(inst) = crate::domain::name::InstrumentId::new(id).and_then(|id| ctx.instrument(&id)) else {
            continue;
        };
        let band = inst.band_for(price);
        if band.capped() {
            let (lower, upper) = (band.lower, band.upper);
            tracing::warn!(
                "settlement: instrument {id} settled at {} asks for a band wider than allowed ({}); its band for the \
                 next day is capped to [{}, {}]",
                crate::domain::types::price_to_f64(price),
                if band.capped_levels {
                    "more prices than MAX_BAND_LEVELS"
                } else {
                    "a lot worth more than MAX_LOT_VALUE"
                },
                crate::domain::types::price_to_f64(lower),
                crate::domain::types::price_to_f64(upper),
            );
        }
    }
}

/// A pause the tests ask for through the environment: `QAEXCHANGE_SETTLE_PAUSE_MS` between two
/// shards' step 2 (the crash test kills the server with some shards settled and some not),
/// `QAEXCHANGE_SETTLE_HALT_PAUSE_MS` before halting each shard after the first (an instrument
/// change meets a settlement that has halted some shards only). Tests only.
fn test_pause(var: &str) -> Option<Duration> {
    let ms: u64 = std::env::var(var).ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// Asks shard `shard` to run `step`; the `data` of its answer, or the answer itself if refused.
async fn step(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    shard: usize,
    step: SettleStep,
) -> Result<Value, Reply> {
    match ctx.ask(conn, answers, shard, Action::Settle(step)).await {
        Answer::Reply(reply) => reply.into_data(),
        _ => Err(Reply::http(HttpErrorCode::InternalError)),
    }
}

/// Resumes trading on the first `halted` shards and answers `reply` (or the first failure).
async fn resume(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    halted: usize,
    reply: Reply,
) -> Reply {
    let mut out = reply;
    for shard in 0..halted {
        if let Err(failed) = step(ctx, conn, answers, shard, SettleStep::Resume).await {
            if out.status == 200 {
                out = failed;
            }
        }
    }
    out
}

/// Waits until every message a shard sent has been received by its target.
async fn wait_quiet(ctx: &ShardContext, conn: u64, answers: &LocalReceiver<(u32, Answer)>) -> Result<(), Reply> {
    let began = Instant::now();
    loop {
        let mut sent = Vec::with_capacity(ctx.shards);
        let mut received = Vec::with_capacity(ctx.shards);
        for shard in 0..ctx.shards {
            let v = step(ctx, conn, answers, shard, SettleStep::Counts).await?;
            let counts = |key: &str| -> Vec<u64> {
                v[key].as_array().map(|a| a.iter().map(|n| n.as_u64().unwrap_or(0)).collect()).unwrap_or_default()
            };
            sent.push(counts("sent"));
            received.push(counts("received"));
        }
        let quiet = (0..ctx.shards).all(|from| {
            (0..ctx.shards)
                .all(|to| sent[from].get(to).copied().unwrap_or(0) == received[to].get(from).copied().unwrap_or(0))
        });
        if quiet {
            return Ok(());
        }
        if began.elapsed() > QUIET_TIMEOUT {
            return Err(Reply::http_message(
                HttpErrorCode::InternalError,
                "internal server error: messages between shards did not settle within 10 s; trading resumed",
            ));
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}

/// The cut from every shard's inputs: each instrument from its owner, none missing.
async fn read_cut(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    day: u32,
    next_day: u32,
) -> Result<SettleCut, Reply> {
    let n = ctx.instrument_ids().len();
    let mut parts: Vec<Option<SettlementInput>> = vec![None; n];
    for shard in 0..ctx.shards {
        let v = step(ctx, conn, answers, shard, SettleStep::Inputs).await?;
        let inputs: Vec<SettlementInput> =
            serde_json::from_value(v).map_err(|_| Reply::http(HttpErrorCode::InternalError))?;
        for input in inputs {
            if let Some(slot) = parts.get_mut(input.instrument as usize) {
                *slot = Some(input);
            }
        }
    }
    let parts: Vec<SettlementInput> = parts.into_iter().collect::<Option<_>>().ok_or_else(|| {
        Reply::http_message(HttpErrorCode::InternalError, "internal server error: an instrument has no owner")
    })?;
    Ok(SettleCut {
        settled_day: day,
        next_day,
        prices: parts.iter().map(|p| p.price).collect(),
        closes: parts.iter().map(|p| p.close).collect(),
        open_interest: parts.iter().map(|p| p.open_interest).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(reply: &Reply) -> u64 {
        let v: Value = serde_json::from_slice(&reply.body).unwrap();
        v["error"]["code"].as_u64().unwrap()
    }

    #[test]
    fn the_gate_refuses_changes_during_a_settlement_and_holds_a_settlement_for_a_change() {
        let gate = AdminGate::default();
        // Every shard holds a clone of the one gate.
        let other_shard = gate.clone();
        let settling = gate.try_take(GATE_SETTLING).unwrap();
        for what in [GATE_CHANGING, GATE_SETTLING] {
            let refused = other_shard.try_take(what).unwrap_err().expect("refused, not waiting");
            assert_eq!((refused.status, code(&refused)), (409, 9016));
        }
        drop(settling);
        let changing = other_shard.try_take(GATE_CHANGING).unwrap();
        // A settlement or another change waits for it (None: not refused).
        assert!(gate.try_take(GATE_SETTLING).unwrap_err().is_none());
        assert!(gate.try_take(GATE_CHANGING).unwrap_err().is_none());
        drop(changing);
        drop(gate.try_take(GATE_SETTLING).unwrap());
        drop(gate.try_take(GATE_CHANGING).unwrap());
    }

    #[test]
    fn the_answer_lists_the_cut_s_instruments_only() {
        let cut = SettleCut {
            settled_day: 20250102,
            next_day: 20250103,
            prices: vec![50_000_000, 700_000_000],
            closes: vec![50_100_000, 700_000_000],
            open_interest: vec![2, 0],
        };
        // An id more than the cut has (an instrument listed after the cut was read).
        let ids: Vec<String> = ["SR501", "cu2501", "SR509"].iter().map(|s| s.to_string()).collect();
        let listed = settled_instruments(&ids, &cut);
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0]["settlement_price"], 5000.0);
        assert_eq!(listed[1]["instrument_id"], "cu2501");
        assert_eq!(listed[1]["close"], 70000.0);
        assert_eq!(settled_instruments(&ids[..1], &cut).len(), 1);
    }
}
