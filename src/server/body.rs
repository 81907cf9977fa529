//! Decodes the JSON bodies of the POST endpoints into [`Action`]s, on the connection's shard, so
//! malformed input is answered there (400, code 9005 with serde's reason) and never reaches the
//! engine. Field names follow the command log (docs/API.md); the original QAExchange's names
//! (`user_id`, `order_id` for the client's id, `price`) are accepted as aliases.

use super::service::Action;
use crate::domain::command::InsertOrder;
use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use crate::domain::types::*;
use serde::Deserialize;

/// Why a body was refused: HTTP 400 with code 9005 and this message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyError(pub String);

fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BodyError> {
    if body.is_empty() {
        return Err(BodyError("request body is not valid for this endpoint: a JSON object is required".into()));
    }
    serde_json::from_slice(body).map_err(|e| BodyError(format!("request body is not valid for this endpoint: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    #[serde(alias = "user_id")]
    account_id: AccountId,
    #[serde(default, with = "fixed4_opt")]
    init_cash: Option<Money>,
    /// The DIFF login password (hashed before it leaves the connection's shard).
    #[serde(default)]
    password: Option<String>,
    /// The user the account belongs to (auth on: only an admin names another user).
    #[serde(default)]
    owner: Option<AccountId>,
}

/// `POST /api/user/{user_id}/account/create`: the user is in the path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// Generated when absent (`<user>-<8 hex digits>`).
    #[serde(default)]
    account_id: Option<AccountId>,
    #[serde(default, with = "fixed4_opt")]
    init_cash: Option<Money>,
    #[serde(default)]
    password: Option<String>,
}

/// `POST /api/auth/register` and `/api/auth/login`. The original's optional contact fields
/// are accepted on register and not kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsBody {
    #[serde(alias = "username")]
    user_id: AccountId,
    password: String,
    #[serde(default)]
    #[allow(dead_code)]
    phone: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    email: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    real_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    #[serde(alias = "user_id")]
    account_id: AccountId,
    #[serde(with = "fixed4")]
    amount: Money,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    #[serde(alias = "user_id")]
    account_id: AccountId,
    #[serde(default, alias = "order_id")]
    client_order_id: Option<ClientOrderId>,
    instrument_id: InstrumentId,
    direction: Direction,
    offset: Offset,
    #[serde(default)]
    price_type: Option<PriceType>,
    #[serde(default, alias = "price", with = "fixed4_opt")]
    limit_price: Option<Price>,
    volume: Volume,
    #[serde(default)]
    time_condition: Option<TimeCondition>,
    #[serde(default)]
    volume_condition: Option<VolumeCondition>,
    #[serde(default)]
    min_volume: Volume,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(alias = "user_id")]
    account_id: AccountId,
    #[serde(default)]
    order_id: Option<OrderRef>,
    #[serde(default)]
    client_order_id: Option<ClientOrderId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModifyBody {
    #[serde(alias = "user_id")]
    account_id: AccountId,
    #[serde(default)]
    order_id: Option<OrderRef>,
    #[serde(default)]
    client_order_id: Option<ClientOrderId>,
    #[serde(default, alias = "price", with = "fixed4_opt")]
    new_price: Option<Price>,
    #[serde(default, alias = "volume")]
    new_volume: Option<Volume>,
}

/// `order_id` as the exchange's number, either a JSON number or a string of digits (the
/// original API sent strings).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OrderRef {
    Number(u64),
    Text(String),
}

pub fn order_ref(
    order_id: Option<OrderRef>,
    client_order_id: Option<ClientOrderId>,
) -> Result<(Option<u64>, Option<ClientOrderId>), BodyError> {
    let order_id = match order_id {
        None => None,
        Some(OrderRef::Number(n)) => Some(n),
        Some(OrderRef::Text(text)) => Some(text.parse::<u64>().map_err(|_| {
            BodyError("request body is not valid for this endpoint: order_id must be the exchange's number".into())
        })?),
    };
    if order_id.is_none() && client_order_id.is_none() {
        return Err(BodyError("request body is not valid for this endpoint: give order_id or client_order_id".into()));
    }
    Ok((order_id, client_order_id))
}

pub fn open_account(body: &[u8]) -> Result<Action, BodyError> {
    let b: OpenBody = decode(body)?;
    if let Some(clear) = &b.password {
        super::credentials::check_password(clear)
            .map_err(|e| BodyError(format!("request body is not valid for this endpoint: {e}")))?;
    }
    Ok(Action::OpenAccount {
        account_id: b.account_id,
        init_cash: b.init_cash.filter(|&cash| cash != 0),
        password: b.password.map(super::credentials::Password::Clear),
        owner: b.owner,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    instrument_id: InstrumentId,
    #[serde(alias = "settlement_price", with = "fixed4")]
    price: Price,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PricesBody {
    prices: Vec<PriceBody>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    #[serde(default)]
    next_trading_day: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FreezeBody {
    #[serde(default)]
    mode: crate::domain::ledger::account::FreezeMode,
}

/// `POST /api/admin/account/{id}/freeze`: `{"mode"?}` (an empty body: `full`).
pub fn freeze_mode(body: &[u8]) -> Result<crate::domain::ledger::account::FreezeMode, BodyError> {
    let b: FreezeBody = if body.is_empty() { FreezeBody::default() } else { decode(body)? };
    Ok(b.mode)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstrumentUpdateBody {
    #[serde(default)]
    margin_rate_long: Option<f64>,
    #[serde(default)]
    margin_rate_short: Option<f64>,
    #[serde(default)]
    max_order_volume: Option<Volume>,
    #[serde(default)]
    commission: Option<crate::domain::instrument::CommissionConfig>,
}

/// `POST /api/admin/instrument/{id}/update`: any of `margin_rate_long`, `margin_rate_short`,
/// `max_order_volume`, `commission` (the config's fields; a commission replaces the whole
/// schedule, absent fields 0).
pub fn instrument_update(body: &[u8]) -> Result<crate::domain::instrument::InstrumentUpdate, BodyError> {
    let b: InstrumentUpdateBody = decode(body)?;
    crate::domain::instrument::InstrumentUpdate::from_values(
        b.margin_rate_long,
        b.margin_rate_short,
        b.max_order_volume,
        b.commission.as_ref(),
    )
    .map_err(|e| BodyError(format!("request body is not valid for this endpoint: {e}")))
}

/// `POST /api/admin/instrument/create`: one instrument as the instruments file writes it (the
/// same fields and checks), in JSON.
pub fn instrument_create(body: &[u8]) -> Result<crate::domain::instrument::Instrument, BodyError> {
    let config: crate::domain::instrument::InstrumentConfig = decode(body)?;
    crate::domain::instrument::Instrument::from_config(&config)
        .map_err(|e| BodyError(format!("request body is not valid for this endpoint: {e}")))
}

/// `POST /api/admin/settlement/set-price`: `{"instrument_id", "price"}`.
pub fn settlement_price(body: &[u8]) -> Result<Action, BodyError> {
    let b: PriceBody = decode(body)?;
    Ok(Action::SetSettlementPrice { instrument_id: b.instrument_id, price: b.price })
}

/// `POST /api/admin/settlement/batch-set-prices`: `{"prices": [{"instrument_id", "price"}, ...]}`
/// (1..=1000 of them).
pub fn settlement_prices(body: &[u8]) -> Result<Vec<Action>, BodyError> {
    let b: PricesBody = decode(body)?;
    if b.prices.is_empty() || b.prices.len() > 1000 {
        return Err(BodyError("request body is not valid for this endpoint: give 1..=1000 prices".into()));
    }
    Ok(b.prices
        .into_iter()
        .map(|p| Action::SetSettlementPrice { instrument_id: p.instrument_id, price: p.price })
        .collect())
}

/// `POST /api/admin/settlement/execute`: `{"next_trading_day"?}` (an empty body is `{}`).
pub fn settlement_execute(body: &[u8]) -> Result<Option<u32>, BodyError> {
    let b: ExecuteBody = if body.is_empty() { ExecuteBody::default() } else { decode(body)? };
    Ok(b.next_trading_day)
}

/// `POST /api/user/{owner}/account/create`; `fallback_id` names the account when the body
/// does not.
pub fn create_account(
    body: &[u8],
    owner: AccountId,
    fallback_id: impl FnOnce() -> AccountId,
) -> Result<Action, BodyError> {
    let b: CreateBody = if body.is_empty() { decode(b"{}")? } else { decode(body)? };
    if let Some(clear) = &b.password {
        super::credentials::check_password(clear)
            .map_err(|e| BodyError(format!("request body is not valid for this endpoint: {e}")))?;
    }
    Ok(Action::OpenAccount {
        account_id: b.account_id.unwrap_or_else(fallback_id),
        init_cash: b.init_cash.filter(|&cash| cash != 0),
        password: b.password.map(super::credentials::Password::Clear),
        owner: Some(owner),
    })
}

/// The user id and clear password of a register or login body; the password's length is
/// checked (1..=128 bytes).
pub fn credentials(body: &[u8]) -> Result<(AccountId, String), BodyError> {
    let b: CredentialsBody = decode(body)?;
    super::credentials::check_password(&b.password)
        .map_err(|e| BodyError(format!("request body is not valid for this endpoint: {e}")))?;
    Ok((b.user_id, b.password))
}

pub fn transfer(body: &[u8], deposit: bool) -> Result<Action, BodyError> {
    let b: TransferBody = decode(body)?;
    Ok(Action::Transfer { account_id: b.account_id, amount: b.amount, deposit })
}

/// The time condition of an order that states none: GFD for a limit order; IOC otherwise, since
/// market orders never rest.
pub fn default_time_condition(price_type: PriceType) -> TimeCondition {
    if price_type == PriceType::Limit {
        TimeCondition::Gfd
    } else {
        TimeCondition::Ioc
    }
}

/// `auto_client_id` names an order whose body gave no `client_order_id`.
pub fn submit(body: &[u8], auto_client_id: impl FnOnce() -> ClientOrderId) -> Result<Action, BodyError> {
    let b: SubmitBody = decode(body)?;
    let price_type = b.price_type.unwrap_or(if b.limit_price.is_some() { PriceType::Limit } else { PriceType::Any });
    let default_time = default_time_condition(price_type);
    Ok(Action::Submit(InsertOrder {
        account_id: b.account_id,
        client_order_id: b.client_order_id.unwrap_or_else(auto_client_id),
        instrument_id: b.instrument_id,
        direction: b.direction,
        offset: b.offset,
        price_type,
        limit_price: b.limit_price,
        volume: b.volume,
        time_condition: b.time_condition.unwrap_or(default_time),
        volume_condition: b.volume_condition.unwrap_or(VolumeCondition::Any),
        min_volume: b.min_volume,
    }))
}

pub fn cancel(body: &[u8]) -> Result<Action, BodyError> {
    let b: CancelBody = decode(body)?;
    let (order_id, client_order_id) = order_ref(b.order_id, b.client_order_id)?;
    Ok(Action::Cancel { account_id: b.account_id, order_id, client_order_id })
}

pub fn modify(body: &[u8]) -> Result<Action, BodyError> {
    let b: ModifyBody = decode(body)?;
    let (order_id, client_order_id) = order_ref(b.order_id, b.client_order_id)?;
    Ok(Action::Modify {
        account_id: b.account_id,
        order_id,
        client_order_id,
        new_price: b.new_price,
        new_volume: b.new_volume,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto() -> ClientOrderId {
        ClientOrderId::new("auto-1").unwrap()
    }

    #[test]
    fn submit_defaults_and_aliases() {
        let body = br#"{"user_id":"a1","instrument_id":"SHFE.cu2501","direction":"BUY","offset":"OPEN","price":75000,"volume":2}"#;
        let Ok(Action::Submit(order)) = submit(body, auto) else { panic!("decodes") };
        assert_eq!(order.account_id.as_str(), "a1");
        assert_eq!(order.client_order_id.as_str(), "auto-1");
        assert_eq!(order.price_type, PriceType::Limit);
        assert_eq!(order.limit_price, Some(750_000_000));
        assert_eq!(order.time_condition, TimeCondition::Gfd);
        let market = br#"{"account_id":"a1","client_order_id":"c9","instrument_id":"cu2501","direction":"SELL","offset":"CLOSE","volume":1}"#;
        let Ok(Action::Submit(order)) = submit(market, auto) else { panic!("decodes") };
        assert_eq!((order.price_type, order.time_condition), (PriceType::Any, TimeCondition::Ioc));
        assert_eq!(order.client_order_id.as_str(), "c9");
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        for (body, needle) in [
            (&b""[..], "JSON object is required"),
            (b"{", "EOF"),
            (br#"{"account_id":"a1","amount":"x"}"#, "invalid type"),
            (br#"{"account_id":"a1","amount":1,"extra":1}"#, "unknown field"),
            (br#"{"account_id":"a1"}"#, "missing field `amount`"),
            (br#"{"account_id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","amount":1}"#, "1..=31 bytes"),
            (br#"{"account_id":"a1","amount":1e300}"#, "out of range"),
        ] {
            let err = transfer(body, true).expect_err("refused");
            assert!(err.0.contains(needle), "{:?} -> {}", std::str::from_utf8(body), err.0);
        }
        let err = cancel(br#"{"account_id":"a1"}"#).expect_err("needs an id");
        assert!(err.0.contains("order_id or client_order_id"));
        let err = cancel(br#"{"account_id":"a1","order_id":"x1"}"#).expect_err("numeric");
        assert!(err.0.contains("number"));
        assert_eq!(
            cancel(br#"{"account_id":"a1","order_id":"17"}"#),
            Ok(Action::Cancel { account_id: AccountId::new("a1").unwrap(), order_id: Some(17), client_order_id: None })
        );
    }

    #[test]
    fn open_with_and_without_cash() {
        assert_eq!(
            open_account(br#"{"account_id":"a1","init_cash":1000.5}"#),
            Ok(Action::OpenAccount {
                account_id: AccountId::new("a1").unwrap(),
                init_cash: Some(10_005_000),
                password: None,
                owner: None
            })
        );
        assert_eq!(
            open_account(br#"{"account_id":"a1"}"#),
            Ok(Action::OpenAccount {
                account_id: AccountId::new("a1").unwrap(),
                init_cash: None,
                password: None,
                owner: None
            })
        );
        let alice = AccountId::new("alice").unwrap();
        let made = create_account(b"", alice, || AccountId::new("alice-1").unwrap()).unwrap();
        assert!(matches!(made, Action::OpenAccount { account_id, owner: Some(o), .. }
            if account_id.as_str() == "alice-1" && o == alice));
        assert!(create_account(br#"{"account_id":"x","owner":"y"}"#, alice, || alice).is_err());
        assert!(credentials(br#"{"username":"u","password":""}"#).unwrap_err().0.contains("empty"));
        let (user, password) = credentials(br#"{"username":"u","password":"p","email":"e"}"#).unwrap();
        assert_eq!((user.as_str(), password.as_str()), ("u", "p"));
        assert!(credentials(br#"{"username":"u","password":"p","role":"admin"}"#).is_err());
    }
}
