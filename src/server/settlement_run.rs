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

use super::conn::ShardContext;
use super::http::HttpErrorCode;
use super::service::{Action, Answer, Reply, SettleStep};
use crate::domain::engine::next_weekday;
use crate::domain::name::AccountId;
use crate::domain::shard::settlement::{SettleCut, SettlementInput};
use glommio::channels::local_channel::LocalReceiver;
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long the shards may take to exchange what is in flight at a halt.
const QUIET_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a settlement; the answer of `POST /api/admin/settlement/execute`.
pub async fn execute(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    next_trading_day: Option<u32>,
) -> Reply {
    let shards = ctx.shards;
    let mut halted = 0;
    let mut days = Vec::with_capacity(shards);
    for shard in 0..shards {
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
    for shard in 0..shards {
        if let Err(reply) = step(ctx, conn, answers, shard, SettleStep::Prepare(cut.clone())).await {
            return resume(ctx, conn, answers, halted, reply).await;
        }
    }
    if let Err(reply) = wait_quiet(ctx, conn, answers).await {
        return resume(ctx, conn, answers, halted, reply).await;
    }
    let pause = pause_between_shards();
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
    if answer.status != 200 {
        return answer;
    }
    // The next session starts with the flagged accounts closed out at market.
    let mut liquidated = Vec::new();
    for account_id in flagged {
        let reply = super::force_liquidation::liquidate(ctx, conn, answers, account_id).await;
        let v: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        let result = if reply.status == 200 { v["data"].clone() } else { v["error"].clone() };
        liquidated.push(serde_json::json!({"account_id": account_id.as_str(), "result": result}));
    }
    let instruments: Vec<Value> = ctx
        .instrument_ids()
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::json!({
                "instrument_id": id,
                "settlement_price": crate::domain::types::price_to_f64(cut.prices[i]),
                "close": crate::domain::types::price_to_f64(cut.closes[i]),
                "open_interest": cut.open_interest[i],
            })
        })
        .collect();
    Reply::success(&serde_json::json!({
        "settled_day": day,
        "trading_day": next_day,
        "statements": statements,
        "instruments": instruments,
        "force_liquidated": liquidated,
    }))
}

/// `QAEXCHANGE_SETTLE_PAUSE_MS`: a pause between two shards' step 2, so the crash test can kill
/// the server with some shards settled and some not. Tests only.
fn pause_between_shards() -> Option<Duration> {
    let ms: u64 = std::env::var("QAEXCHANGE_SETTLE_PAUSE_MS").ok()?.parse().ok()?;
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
