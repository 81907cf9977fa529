//! `POST /api/admin/account/{id}/force-liquidate`, and the liquidation of accounts that a
//! settlement flagged (risk ratio 100 % or more at the settlement prices) as the next session
//! starts. Built from ordinary actions on the account's shard, in order: cancel every live
//! order of the account (each cancel answered before the next step, so the lots and funds they
//! held are free), then close every position with market (ANY + IOC) orders, split at the
//! instrument's largest order. A frozen account is unfrozen for its closes and frozen again.
//! What finds no counterparty stays open; the answer shows every order's outcome.

use super::conn::ShardContext;
use super::service::{Action, Answer, Query, Reply};
use crate::domain::engine::{closing_orders, market_close};
use crate::domain::ledger::account::FreezeMode;
use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use glommio::channels::local_channel::LocalReceiver;
use serde_json::Value;

/// The `data` of a successful reply, or the reply.
async fn data(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    action: Action,
) -> Result<Value, Reply> {
    ctx.call(conn, answers, action).await.into_data()
}

/// Liquidates `account_id`; the answer lists the cancels and the close orders with their
/// outcomes.
pub async fn liquidate(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    account_id: AccountId,
) -> Reply {
    match run(ctx, conn, answers, account_id).await {
        Ok(v) => Reply::success(&v),
        Err(reply) => reply,
    }
}

async fn run(
    ctx: &ShardContext,
    conn: u64,
    answers: &LocalReceiver<(u32, Answer)>,
    account_id: AccountId,
) -> Result<Value, Reply> {
    let account = data(ctx, conn, answers, Action::Query(Query::Account(account_id))).await?;
    // A frozen account is unfrozen for its closes, then frozen again the same way.
    let refreeze = match account["status"].as_str() {
        Some("frozen") => Some(FreezeMode::Full),
        Some("trading_frozen") => Some(FreezeMode::Trading),
        Some("withdraw_frozen") => Some(FreezeMode::Withdraw),
        _ => None,
    };
    // 1. Cancel every live order.
    let orders = data(ctx, conn, answers, Action::Query(Query::UserOrders(account_id))).await?;
    let mut cancelled = Vec::new();
    for order in orders.as_array().into_iter().flatten().filter(|o| o["status"] == "ALIVE") {
        let Some(order_id) = order["order_id"].as_u64() else { continue };
        let cancel = Action::Cancel { account_id, order_id: Some(order_id), client_order_id: None };
        // An order that ended meanwhile (filled) is simply not cancelled.
        if data(ctx, conn, answers, cancel).await.is_ok() {
            cancelled.push(order_id);
        }
    }
    // 2. Close every position at market.
    let positions = data(ctx, conn, answers, Action::Query(Query::Positions(account_id))).await?;
    if refreeze.is_some() {
        let unfreeze = Action::SetFrozen { account_id, frozen: false, mode: FreezeMode::Full };
        data(ctx, conn, answers, unfreeze).await?;
    }
    let mut closes = Vec::new();
    for p in positions.as_array().into_iter().flatten() {
        let Some(instrument_id) = p["instrument_id"].as_str().and_then(InstrumentId::new) else { continue };
        let Some(inst) = ctx.instrument(&instrument_id) else { continue };
        let lots = |key: &str| p[key].as_i64().unwrap_or(0);
        let long = (lots("volume_long_his"), lots("volume_long_today"));
        let short = (lots("volume_short_his"), lots("volume_short_today"));
        for (direction, offset, volume) in closing_orders(&inst, long, short) {
            let client = ClientOrderId::new(&format!("FORCE_{}_{}", super::conn::unix_now_s(), closes.len() + 1))
                .unwrap_or_else(|| ctx.auto_client_id());
            let order = market_close(account_id, client, instrument_id, direction, offset, volume);
            let reply = ctx.call(conn, answers, Action::Submit(order)).await;
            let v: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            closes.push(if reply.status == 200 { v["data"].clone() } else { v["error"].clone() });
        }
    }
    if let Some(mode) = refreeze {
        data(ctx, conn, answers, Action::SetFrozen { account_id, frozen: true, mode }).await?;
    }
    if cancelled.is_empty() && closes.is_empty() {
        return Err(Reply::reject(crate::domain::risk::RejectCode::NothingToLiquidate));
    }
    Ok(serde_json::json!({"account_id": account_id.as_str(), "cancelled": cancelled, "closes": closes}))
}
