//! Login and trading in a DIFF session: `req_login`, `insert_order`, `cancel_order`,
//! `req_transfer`.
//!
//! Login: the session joins the shard's account fan-out, then asks the account's shard to be
//! followed (`Action::Follow`), which answers the account's whole trade tree and its password
//! hash. The password is checked here, off the executor; on success the client gets, in one
//! `rtn_data`, an INFO notify, `trade/<user>/session`, the tree with `trade_more_data: false`,
//! and whatever changed meanwhile. A wrong password (or an unknown user: one message for both)
//! gets an ERROR notify and no tree. From then on the account's shard sends one patch per
//! commit group that changed the account (orders, trades, positions and the account together,
//! so one fill is one `rtn_data`).
//!
//! Orders name the client's `order_id`; a refused order shows as FINISHED with an empty
//! `exchange_order_id` and the reason in `last_msg` (tqsdk's sign of an error), with an ERROR
//! notify whose code is the risk code.

use super::conn::ShardContext;
use super::credentials::verify_off_executor;
use super::diff_session::{codes, DiffSession};
use super::diff_trade::diff_rejected_order;
use super::service::{Action, Answer, Reply};
use crate::diff::merge_patch::ComposedPatch;
use crate::diff::messages::{CancelOrder, InsertOrder, NotifyLevel, ReqLogin, ReqTransfer};
use crate::diff::session::Session;
use crate::domain::command;
use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use crate::domain::risk::RejectCode;
use crate::domain::types::{fixed4, price_to_f64};
use glommio::channels::local_channel::{LocalReceiver, LocalSender};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;

/// Who a session is logged in as.
pub struct Login {
    pub account: AccountId,
    pub password_hash: String,
}

/// The `code` and `message` of an error envelope (code 0 if it has none).
pub(super) fn error_of(reply: &Reply) -> (u32, String) {
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let code = body["error"]["code"].as_u64().unwrap_or(0) as u32;
    let message = body["error"]["message"].as_str().unwrap_or("refused").to_owned();
    (code, message)
}

/// A session's way to its account's shard, for following the account's trade tree (shared by
/// the DIFF session and the legacy JSON session).
pub(super) struct FollowLink<'a> {
    pub ctx: &'a ShardContext,
    pub conn: u64,
    pub answers: &'a LocalReceiver<(u32, Answer)>,
}

/// A successful [`FollowLink::follow`]: who is logged in, the account's whole trade tree, and
/// the patches made while it was on its way (to apply after it).
pub(super) struct Followed {
    pub login: Login,
    pub snapshot: Value,
    pub early: Option<ComposedPatch>,
}

impl FollowLink<'_> {
    /// Checks `secret` and starts delivering the account's patches into `session` (waking
    /// `wake`). None (and nothing followed) for an unknown account or a wrong secret.
    /// `secret` is the account's password, or (auth on) a bearer token of
    /// `POST /api/auth/login` whose user owns the account or is an admin: a venue with users
    /// lets its WebSocket clients log in as they log in over HTTP.
    pub async fn follow(
        &self,
        account: AccountId,
        secret: String,
        session: &Rc<RefCell<Session>>,
        wake: &Rc<LocalSender<()>>,
    ) -> Option<Followed> {
        // Join first: patches made while the tree is on its way are held, not lost.
        self.ctx.accounts.borrow_mut().join(account, self.conn, session, wake.clone());
        let answer =
            self.ctx.call_answer(self.conn, self.answers, Action::Follow { account_id: account, on: true }).await;
        let follow = match answer {
            Answer::Follow(follow) => follow,
            // No such account (or a shard is gone): nothing is followed.
            _ => {
                self.ctx.accounts.borrow_mut().leave(&account, self.conn);
                return None;
            }
        };
        let token = self.ctx.auth.as_ref().and_then(|gate| gate.key.verify(&secret, super::conn::unix_now_s()).ok());
        let verified = match (token, follow.password_hash) {
            // A token's user may use the account as over HTTP; a later `req_transfer` still
            // needs the account's password (an account without one can transfer nothing).
            (Some(claims), hash) => {
                (claims.admin || follow.owner == Some(claims.user_id)).then(|| hash.unwrap_or_default())
            }
            (None, Some(hash)) => verify_off_executor(secret, hash.clone()).await.then_some(hash),
            (None, None) => None,
        };
        let Some(password_hash) = verified else {
            self.ctx.accounts.borrow_mut().leave(&account, self.conn);
            let _ = self.ctx.call(self.conn, self.answers, Action::Follow { account_id: account, on: false }).await;
            return None;
        };
        let early = self.ctx.accounts.borrow_mut().ready(&account, self.conn);
        Some(Followed { login: Login { account, password_hash }, snapshot: follow.snapshot, early })
    }

    /// Stops following `account` (the session ended).
    pub async fn unfollow(&self, account: &AccountId) {
        self.ctx.accounts.borrow_mut().leave(account, self.conn);
        if !self.ctx.stopping() {
            let action = Action::Follow { account_id: *account, on: false };
            let _ = self.ctx.call(self.conn, self.answers, action).await;
        }
    }
}

impl DiffSession<'_> {
    pub(super) async fn login(&mut self, req: ReqLogin) {
        if let Some(login) = &self.login {
            let text = format!("already logged in as {}", login.account.as_str());
            return self.notify_error(codes::NOT_LOGGED_IN, &text);
        }
        let failed = "login failed: wrong user name or password";
        let Some(account) = AccountId::new(&req.user_name) else {
            return self.notify_error(codes::LOGIN_FAILED, failed);
        };
        let link = FollowLink { ctx: self.ctx, conn: self.conn, answers: self.answers };
        let Some(followed) = link.follow(account, req.password, &self.session, &self.wake_tx).await else {
            return self.notify_error(codes::LOGIN_FAILED, failed);
        };
        self.notify(NotifyLevel::Info, 0, &format!("login succeeded: {}", account.as_str()));
        {
            let mut session = self.session.borrow_mut();
            session.push(&followed.snapshot);
            for patch in followed.early.iter().flat_map(|e| e.patches()) {
                session.push(patch);
            }
        }
        self.login = Some(followed.login);
    }

    /// Stops following the account (the session ended).
    pub(super) async fn logout(&mut self) {
        let Some(login) = self.login.take() else { return };
        FollowLink { ctx: self.ctx, conn: self.conn, answers: self.answers }.unfollow(&login.account).await;
    }

    /// The logged-in account if `user_id` names it; otherwise an ERROR notify and None.
    fn own_account(&mut self, user_id: &str, aid: &str) -> Option<AccountId> {
        match &self.login {
            None => {
                self.notify_error(codes::NOT_LOGGED_IN, &format!("{aid} before a successful req_login"));
                None
            }
            Some(login) if login.account.as_str() != user_id => {
                let text = format!(
                    "{aid} for user {user_id} refused: this session is logged in as {}",
                    login.account.as_str()
                );
                self.notify_error(codes::OTHER_USER, &text);
                None
            }
            Some(login) => Some(login.account),
        }
    }

    pub(super) async fn insert_order(&mut self, req: InsertOrder) {
        let Some(account) = self.own_account(&req.user_id, "insert_order") else { return };
        let Some(client_order_id) = ClientOrderId::new(&req.order_id) else {
            let text = format!("insert_order: order_id must be 1 to 63 bytes, got {:?}", req.order_id);
            return self.notify_error(codes::MALFORMED, &text);
        };
        let symbol = format!("{}.{}", req.exchange_id, req.instrument_id);
        let limit_price = match req.limit_price.map(fixed4::from_decimal) {
            Some(None) => return self.refuse_order(&req, 0, "limit_price is not a finite price"),
            Some(Some(price)) => Some(price),
            None => None,
        };
        let Some(instrument_id) = InstrumentId::new(&symbol) else {
            let code = RejectCode::InstrumentNotFound;
            return self.refuse_order(&req, code.code(), code.message());
        };
        let order = command::InsertOrder {
            account_id: account,
            client_order_id,
            instrument_id,
            direction: req.direction,
            offset: req.offset,
            price_type: req.price_type,
            limit_price,
            volume: req.volume,
            time_condition: req.time_condition,
            volume_condition: req.volume_condition,
            min_volume: 0,
        };
        let reply = self.ctx.call(self.conn, self.answers, Action::Submit(order)).await;
        if reply.status != 200 {
            let (code, message) = error_of(&reply);
            if code == RejectCode::DuplicateOrderId.code() {
                // The live order of that id stays as it is in the client's tree.
                let text = format!("order {} refused: {message} (code {code})", req.order_id);
                return self.notify_error(i64::from(code), &text);
            }
            self.refuse_order(&req, code, &message);
        }
    }

    /// Shows `req` as a refused order (FINISHED, no exchange id, the reason) with an ERROR notify.
    fn refuse_order(&mut self, req: &InsertOrder, code: u32, message: &str) {
        let ts = super::diff_quote::now_ns();
        let mut order = diff_rejected_order(&req.user_id, &req.order_id, &req.instrument_id, code, message, ts);
        order["exchange_id"] = json!(req.exchange_id);
        order["direction"] = json!(req.direction);
        order["offset"] = json!(req.offset);
        order["volume_orign"] = json!(req.volume);
        order["volume_left"] = json!(req.volume);
        order["price_type"] = json!(req.price_type);
        order["time_condition"] = json!(req.time_condition);
        order["volume_condition"] = json!(req.volume_condition);
        if let Some(price) = req.limit_price.and_then(fixed4::from_decimal) {
            order["limit_price"] = json!(price_to_f64(price));
        }
        self.session
            .borrow_mut()
            .push(&json!({"trade": {req.user_id.as_str(): {"orders": {req.order_id.as_str(): order}}}}));
        let text = format!("order {} refused: {message} (code {code})", req.order_id);
        self.notify_error(i64::from(code), &text);
    }

    pub(super) async fn cancel_order(&mut self, req: CancelOrder) {
        let Some(account) = self.own_account(&req.user_id, "cancel_order") else { return };
        let Some(client_order_id) = ClientOrderId::new(&req.order_id) else {
            let code = RejectCode::OrderNotFound;
            let text = format!("cancel of order {} refused: {} (code {})", req.order_id, code.message(), code.code());
            return self.notify_error(i64::from(code.code()), &text);
        };
        let action = Action::Cancel { account_id: account, order_id: None, client_order_id: Some(client_order_id) };
        let reply = self.ctx.call(self.conn, self.answers, action).await;
        if reply.status != 200 {
            let (code, message) = error_of(&reply);
            let text = format!("cancel of order {} refused: {message} (code {code})", req.order_id);
            self.notify_error(i64::from(code), &text);
        }
    }

    /// A positive amount deposits, a negative one withdraws; `future_account` must be the
    /// logged-in account and `future_password` its password.
    pub(super) async fn transfer(&mut self, req: ReqTransfer) {
        let Some(account) = self.own_account(&req.future_account, "req_transfer") else { return };
        let hash = self.login.as_ref().map(|l| l.password_hash.clone()).unwrap_or_default();
        let (code, message) = if !verify_off_executor(req.future_password.clone(), hash).await {
            (codes::LOGIN_FAILED as u32, "wrong future_password".to_owned())
        } else {
            match fixed4::from_decimal(req.amount.abs()).filter(|&a| a > 0) {
                None => (codes::BAD_REQUEST as u32, "amount must be a non-zero finite number".to_owned()),
                Some(amount) => {
                    let action = Action::Transfer { account_id: account, amount, deposit: req.amount > 0.0 };
                    let reply = self.ctx.call(self.conn, self.answers, action).await;
                    if reply.status == 200 {
                        (0, "transfer done".to_owned())
                    } else {
                        error_of(&reply)
                    }
                }
            }
        };
        self.transfers += 1;
        let entry = json!({
            "datetime": super::diff_quote::now_ns(),
            "currency": req.currency,
            "amount": req.amount,
            "error_id": code,
            "error_msg": message,
        });
        let key = format!("qx{}", self.transfers);
        self.session.borrow_mut().push(&json!({"trade": {account.as_str(): {"transfers": {key: entry}}}}));
        if code == 0 {
            self.notify(NotifyLevel::Info, 0, &format!("transfer of {} CNY done", req.amount));
        } else {
            self.notify_error(
                i64::from(code),
                &format!("transfer of {} CNY refused: {message} (code {code})", req.amount),
            );
        }
    }
}
