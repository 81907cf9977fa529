//! Client -> server DIFF messages, parsed by `aid` into typed values, and notify patches.
//!
//! Parsing never panics on input: malformed JSON, a non-object, a missing or unknown `aid`, a
//! missing field or a wrongly typed one each give a [`MessageError`] whose text says what was
//! wrong, for the server to put in an ERROR notify or a disconnect reason. Unknown fields are
//! ignored because real clients send extras (`client_app_id`, `focus_datetime`, ...). Request
//! structs also serialize, e.g. to echo a `set_chart` as the chart's `state`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;

/// A parsed client message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `peek_message`: the client may receive one `rtn_data`.
    PeekMessage,
    ReqLogin(ReqLogin),
    /// `confirm_settlement`: sent automatically after login; accepted.
    ConfirmSettlement,
    SubscribeQuote(SubscribeQuote),
    SetChart(SetChart),
    InsertOrder(InsertOrder),
    CancelOrder(CancelOrder),
    ReqTransfer(ReqTransfer),
}

/// `req_login`; optional fields (`client_app_id`, `client_system_info`, `broker_id`, `front`)
/// are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReqLogin {
    pub bid: String,
    pub user_name: String,
    pub password: String,
}

/// `subscribe_quote`: replaces the previous set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribeQuote {
    /// Comma-separated symbols, e.g. `"SHFE.cu2501,CFFEX.IF2501"`; echoed at the tree root.
    pub ins_list: String,
}

impl SubscribeQuote {
    /// The symbols of `ins_list`, trimmed, empty entries skipped.
    pub fn instruments(&self) -> impl Iterator<Item = &str> {
        split_ins_list(&self.ins_list)
    }
}

/// `set_chart`: k-lines (`duration` > 0, ns) or ticks (`duration` == 0) of `ins_list`; an empty
/// `ins_list` deletes the chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetChart {
    pub chart_id: String,
    pub ins_list: String,
    /// Bar length in nanoseconds; 0 means ticks.
    pub duration: i64,
    /// Number of bars or ticks wanted.
    pub view_width: i64,
}

impl SetChart {
    /// The symbols of `ins_list`, trimmed, empty entries skipped (none: delete the chart).
    pub fn instruments(&self) -> impl Iterator<Item = &str> {
        split_ins_list(&self.ins_list)
    }
}

/// `insert_order`. The `order_id` is chosen by the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsertOrder {
    pub user_id: String,
    pub order_id: String,
    pub exchange_id: String,
    /// Without the exchange, e.g. `cu2501`.
    pub instrument_id: String,
    pub direction: Direction,
    pub offset: Offset,
    pub volume: i64,
    pub price_type: PriceType,
    /// Absent (or null) for market orders (`price_type` ANY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_price: Option<f64>,
    pub time_condition: TimeCondition,
    pub volume_condition: VolumeCondition,
}

/// `cancel_order`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelOrder {
    pub user_id: String,
    pub order_id: String,
}

/// `req_transfer`: bank-futures transfer; a positive `amount` deposits, a negative one
/// withdraws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReqTransfer {
    pub future_account: String,
    pub future_password: String,
    pub bank_id: String,
    pub bank_password: String,
    pub currency: String,
    pub amount: f64,
}

/// The order enums are the domain's own (same DIFF spellings); this defines the notify ones.
pub use crate::domain::types::{Direction, Offset, PriceType, TimeCondition, VolumeCondition};

/// Defines a wire enum with its exact DIFF spelling, parsed and written by serde.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// The DIFF spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Notify `type`.
    NotifyType { Message = "MESSAGE", Text = "TEXT", Html = "HTML", Settlement = "SETTLEMENT" }
);
wire_enum!(
    /// Notify `level`.
    NotifyLevel { Info = "INFO", Warning = "WARNING", Error = "ERROR" }
);

/// Why a client message was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// Not JSON (serde_json's message, with line and column).
    Json(String),
    /// JSON, but not an object.
    NotAnObject,
    /// No `aid`, or an `aid` that is not a string.
    MissingAid,
    /// An `aid` this server does not handle.
    UnknownAid(String),
    /// A known `aid` with a missing or wrongly typed field.
    Invalid { aid: &'static str, reason: String },
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(e) => write!(f, "malformed JSON: {e}"),
            Self::NotAnObject => f.write_str("message is not a JSON object"),
            Self::MissingAid => f.write_str("message has no string field \"aid\""),
            Self::UnknownAid(aid) => write!(f, "unknown aid {aid:?}"),
            Self::Invalid { aid, reason } => write!(f, "invalid {aid}: {reason}"),
        }
    }
}

impl std::error::Error for MessageError {}

impl ClientMessage {
    /// Parses one text frame: as [`ClientMessage::from_value`] of its JSON, without building
    /// the JSON's tree when the frame is well formed. One pass reads only the `aid` (skipping
    /// the other fields), a second reads the typed message for that `aid` straight from the
    /// text. Building the tree (a map and an allocation per field) was most of a DIFF order's
    /// parsing, 4 % of its server CPU. A frame either pass refuses is read again through the
    /// tree, whose errors (and whose acceptance of a field given twice: the last one counts)
    /// are the reference. Unread fields are skipped without a depth limit (serde_json skips
    /// iteratively), so a deeply nested field the message does not use no longer refuses it.
    pub fn parse(text: &str) -> Result<Self, MessageError> {
        if let Ok(Aid(aid)) = serde_json::from_str::<Aid>(text) {
            let Some(aid) = aid else {
                return Err(MessageError::MissingAid);
            };
            if let Ok(message) = Self::of_aid(&aid, &text) {
                return Ok(message);
            }
        }
        let v: Value = serde_json::from_str(text).map_err(|e| MessageError::Json(e.to_string()))?;
        Self::from_value(v)
    }

    /// Parses one frame given as bytes (must be UTF-8 JSON).
    pub fn parse_slice(bytes: &[u8]) -> Result<Self, MessageError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse(text),
            Err(e) => Err(MessageError::Json(e.to_string())),
        }
    }

    /// Interprets an already parsed JSON value.
    pub fn from_value(v: Value) -> Result<Self, MessageError> {
        let Value::Object(fields) = &v else {
            return Err(MessageError::NotAnObject);
        };
        let Some(Value::String(aid)) = fields.get("aid") else {
            return Err(MessageError::MissingAid);
        };
        Self::of_aid(aid, &v)
    }

    /// The message of `aid`, its fields read from `fields` (the frame's text or its tree).
    fn of_aid(aid: &str, fields: &impl Fields) -> Result<Self, MessageError> {
        Ok(match aid {
            "peek_message" => Self::PeekMessage,
            "confirm_settlement" => Self::ConfirmSettlement,
            "req_login" => Self::ReqLogin(fields.read("req_login")?),
            "subscribe_quote" => Self::SubscribeQuote(fields.read("subscribe_quote")?),
            "set_chart" => Self::SetChart(fields.read("set_chart")?),
            "insert_order" => Self::InsertOrder(fields.read("insert_order")?),
            "cancel_order" => Self::CancelOrder(fields.read("cancel_order")?),
            "req_transfer" => Self::ReqTransfer(fields.read("req_transfer")?),
            other => return Err(MessageError::UnknownAid(other.to_owned())),
        })
    }

    /// The message's `aid`.
    pub fn aid(&self) -> &'static str {
        match self {
            Self::PeekMessage => "peek_message",
            Self::ReqLogin(_) => "req_login",
            Self::ConfirmSettlement => "confirm_settlement",
            Self::SubscribeQuote(_) => "subscribe_quote",
            Self::SetChart(_) => "set_chart",
            Self::InsertOrder(_) => "insert_order",
            Self::CancelOrder(_) => "cancel_order",
            Self::ReqTransfer(_) => "req_transfer",
        }
    }
}

/// Where a message's typed fields are read from.
trait Fields {
    fn read<T: DeserializeOwned>(&self, aid: &'static str) -> Result<T, MessageError>;
}

/// The frame's text (its errors carry a position; `parse` reports the tree's instead).
impl Fields for &str {
    fn read<T: DeserializeOwned>(&self, aid: &'static str) -> Result<T, MessageError> {
        serde_json::from_str(self).map_err(|e| MessageError::Invalid { aid, reason: e.to_string() })
    }
}

/// The frame's JSON tree.
impl Fields for Value {
    fn read<T: DeserializeOwned>(&self, aid: &'static str) -> Result<T, MessageError> {
        T::deserialize(self).map_err(|e| MessageError::Invalid { aid, reason: e.to_string() })
    }
}

/// A message's `aid` when it is a string (the last one, as a JSON tree keeps it); what a map
/// of anything else holds is skipped unread into values. Only a JSON object reads as this.
struct Aid(Option<String>);

impl<'de> Deserialize<'de> for Aid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(AidVisitor)
    }
}

struct AidVisitor;

impl<'de> serde::de::Visitor<'de> for AidVisitor {
    type Value = Aid;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Aid, A::Error> {
        let mut aid = None;
        while let Some(is_aid) = map.next_key_seed(IsAid)? {
            if is_aid {
                aid = match map.next_value::<Value>()? {
                    Value::String(text) => Some(text),
                    _ => None,
                };
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(Aid(aid))
    }
}

/// Reads a key and says whether it is `aid`, without copying it.
struct IsAid;

impl<'de> serde::de::DeserializeSeed<'de> for IsAid {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for IsAid {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == "aid")
    }
}

fn split_ins_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A patch adding one notify: `{"notify":{key:{"type":..,"level":..,"code":..,"content":..}}}`.
/// `key` must be unique per session (clients show each key once).
pub fn notify(key: &str, kind: NotifyType, level: NotifyLevel, code: i64, content: &str) -> Value {
    json!({"notify": {key: {
        "type": kind.as_str(),
        "level": level.as_str(),
        "code": code,
        "content": content,
    }}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_aid_of_the_reference() {
        let m = |t: &str| ClientMessage::parse(t).unwrap();
        assert_eq!(m(r#"{"aid":"peek_message"}"#), ClientMessage::PeekMessage);
        assert_eq!(m(r#"{"aid":"confirm_settlement"}"#), ClientMessage::ConfirmSettlement);
        assert_eq!(
            m(r#"{"aid":"req_login","bid":"local","user_name":"u1","password":"pw",
                "client_app_id":"x","client_system_info":"y","broker_id":"b","front":"f"}"#),
            ClientMessage::ReqLogin(ReqLogin { bid: "local".into(), user_name: "u1".into(), password: "pw".into() })
        );
        let ClientMessage::SubscribeQuote(q) =
            m(r#"{"aid":"subscribe_quote","ins_list":"SHFE.cu2501, CFFEX.IF2501,,"}"#)
        else {
            panic!()
        };
        assert_eq!(q.instruments().collect::<Vec<_>>(), ["SHFE.cu2501", "CFFEX.IF2501"]);
        let ClientMessage::SetChart(c) = m(r#"{"aid":"set_chart","chart_id":"c1",
            "ins_list":"SHFE.cu2501","duration":60000000000,"view_width":200,"focus_position":1}"#)
        else {
            panic!()
        };
        assert_eq!((c.duration, c.view_width), (60_000_000_000, 200));
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"chart_id":"c1","ins_list":"SHFE.cu2501","duration":60000000000i64,"view_width":200})
        );
        assert_eq!(
            m(r#"{"aid":"insert_order","user_id":"u1","order_id":"PYSDK_insert_9b",
                "exchange_id":"SHFE","instrument_id":"cu2501","direction":"BUY","offset":"OPEN",
                "volume":2,"price_type":"LIMIT","limit_price":74010.0,"time_condition":"GFD",
                "volume_condition":"ANY"}"#),
            ClientMessage::InsertOrder(InsertOrder {
                user_id: "u1".into(),
                order_id: "PYSDK_insert_9b".into(),
                exchange_id: "SHFE".into(),
                instrument_id: "cu2501".into(),
                direction: Direction::Buy,
                offset: Offset::Open,
                volume: 2,
                price_type: PriceType::Limit,
                limit_price: Some(74010.0),
                time_condition: TimeCondition::Gfd,
                volume_condition: VolumeCondition::Any,
            })
        );
        let ClientMessage::InsertOrder(o) = m(r#"{"aid":"insert_order","user_id":"u1",
            "order_id":"o","exchange_id":"SHFE","instrument_id":"cu2501","direction":"SELL",
            "offset":"CLOSETODAY","volume":1,"price_type":"ANY","time_condition":"IOC",
            "volume_condition":"ALL"}"#)
        else {
            panic!()
        };
        assert_eq!(o.limit_price, None);
        assert_eq!(
            (o.direction, o.offset, o.price_type, o.time_condition, o.volume_condition),
            (Direction::Sell, Offset::CloseToday, PriceType::Any, TimeCondition::Ioc, VolumeCondition::All)
        );
        assert_eq!(
            m(r#"{"aid":"cancel_order","user_id":"u1","order_id":"o"}"#),
            ClientMessage::CancelOrder(CancelOrder { user_id: "u1".into(), order_id: "o".into() })
        );
        let ClientMessage::ReqTransfer(t) = m(r#"{"aid":"req_transfer","future_account":"a",
            "future_password":"p","bank_id":"1","bank_password":"q","currency":"CNY",
            "amount":135.4}"#)
        else {
            panic!()
        };
        assert_eq!((t.currency.as_str(), t.amount), ("CNY", 135.4));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = |t: &str| ClientMessage::parse(t).unwrap_err();
        assert!(matches!(e("{"), MessageError::Json(_)));
        assert!(e("{").to_string().starts_with("malformed JSON"));
        assert_eq!(e("[1]"), MessageError::NotAnObject);
        assert_eq!(e(r#"{"x":1}"#), MessageError::MissingAid);
        assert_eq!(e(r#"{"aid":3}"#), MessageError::MissingAid);
        assert_eq!(e(r#"{"aid":"rtn_foo"}"#), MessageError::UnknownAid("rtn_foo".into()));
        assert_eq!(e(r#"{"aid":"rtn_foo"}"#).to_string(), r#"unknown aid "rtn_foo""#);
        let missing = e(r#"{"aid":"req_login","bid":"b","user_name":"u"}"#);
        assert_eq!(missing.to_string(), "invalid req_login: missing field `password`");
        let bad = e(r#"{"aid":"cancel_order","user_id":"u1","order_id":5}"#);
        assert!(bad.to_string().starts_with("invalid cancel_order: invalid type"), "{bad}");
        let side = e(r#"{"aid":"insert_order","user_id":"u1","order_id":"o",
            "exchange_id":"SHFE","instrument_id":"cu2501","direction":"UP","offset":"OPEN",
            "volume":1,"price_type":"LIMIT","limit_price":1,"time_condition":"GFD",
            "volume_condition":"ANY"}"#);
        assert!(side.to_string().contains("unknown variant `UP`"), "{side}");
        let vol = e(r#"{"aid":"set_chart","chart_id":"c","ins_list":"","duration":1.5,
            "view_width":1}"#);
        assert!(vol.to_string().starts_with("invalid set_chart"), "{vol}");
        // Deep nesting is refused by serde_json's recursion limit, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(e(&deep), MessageError::Json(_)));
        assert!(matches!(ClientMessage::parse_slice(b"\xff\xfe"), Err(MessageError::Json(_))));
    }

    #[test]
    fn notify_patch_shape() {
        assert_eq!(
            notify("login", NotifyType::Message, NotifyLevel::Info, 324, "ok"),
            json!({"notify":{"login":{"type":"MESSAGE","level":"INFO","code":324,"content":"ok"}}})
        );
    }

    #[test]
    fn aid_round_trips() {
        for text in [
            r#"{"aid":"peek_message"}"#,
            r#"{"aid":"confirm_settlement"}"#,
            r#"{"aid":"cancel_order","user_id":"u","order_id":"o"}"#,
        ] {
            let m = ClientMessage::parse(text).unwrap();
            assert!(text.contains(m.aid()));
        }
    }

    /// A valid message of each aid (as the reference's examples).
    fn valid_message(aid: &str) -> Value {
        let mut v = match aid {
            "req_login" => json!({"bid": "local", "user_name": "u1", "password": "pw"}),
            "subscribe_quote" => json!({"ins_list": "SHFE.cu2501"}),
            "set_chart" => json!({"chart_id": "c", "ins_list": "SHFE.cu2501", "duration": 60, "view_width": 5}),
            "insert_order" => json!({"user_id": "u1", "order_id": "o", "exchange_id": "SHFE",
                "instrument_id": "cu2501", "direction": "BUY", "offset": "OPEN", "volume": 2,
                "price_type": "LIMIT", "limit_price": 74010.5, "time_condition": "GFD",
                "volume_condition": "ANY"}),
            "cancel_order" => json!({"user_id": "u1", "order_id": "o"}),
            "req_transfer" => json!({"future_account": "a", "future_password": "p", "bank_id": "1",
                "bank_password": "q", "currency": "CNY", "amount": 10.5}),
            _ => json!({}),
        };
        v["aid"] = Value::from(aid);
        v
    }

    const AIDS: &[&str] = &[
        "peek_message",
        "req_login",
        "confirm_settlement",
        "subscribe_quote",
        "set_chart",
        "insert_order",
        "cancel_order",
        "req_transfer",
        "rtn_data",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,64}") {
            let _ = ClientMessage::parse(&text);
            let _ = ClientMessage::parse_slice(text.as_bytes());
        }

        #[test]
        fn arbitrary_fields_never_panic(
            aid in proptest::sample::select(AIDS),
            fields in proptest::collection::btree_map(
                proptest::sample::select(&[
                    "bid", "user_name", "password", "ins_list", "chart_id", "duration",
                    "view_width", "user_id", "order_id", "exchange_id", "instrument_id",
                    "direction", "offset", "volume", "price_type", "limit_price",
                    "time_condition", "volume_condition", "amount", "currency",
                ][..]),
                crate::diff::merge_patch::tests::arb_json(),
                0..12,
            ),
        ) {
            let mut obj: serde_json::Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            obj.insert("aid".into(), Value::from(aid));
            let text = Value::Object(obj).to_string();
            match ClientMessage::parse(&text) {
                Ok(m) => prop_assert_eq!(m.aid(), aid),
                Err(MessageError::UnknownAid(a)) => prop_assert_eq!(a, aid),
                Err(MessageError::Invalid { aid: a, .. }) => prop_assert_eq!(a, aid),
                Err(other) => prop_assert!(false, "{other}"),
            }
        }

        /// The text parse gives what the tree parse gives, errors included: random fields
        /// (mostly refused), and valid messages of every aid with random extra fields.
        #[test]
        fn parsing_the_text_gives_what_parsing_its_tree_gives(
            aid in proptest::option::of(proptest::sample::select(AIDS)),
            valid in any::<bool>(),
            fields in proptest::collection::btree_map(
                proptest::sample::select(&[
                    "bid", "user_name", "password", "ins_list", "chart_id", "duration",
                    "view_width", "user_id", "order_id", "exchange_id", "instrument_id",
                    "direction", "offset", "volume", "price_type", "limit_price",
                    "time_condition", "volume_condition", "amount", "currency", "aid",
                    "client_app_id", "focus_datetime", "x",
                ][..]),
                crate::diff::merge_patch::tests::arb_json(),
                0..14,
            ),
        ) {
            let mut obj = match (valid, aid) {
                (true, Some(aid)) => match valid_message(aid) {
                    Value::Object(base) => base,
                    _ => unreachable!(),
                },
                _ => serde_json::Map::new(),
            };
            let extra = |k: &str| !valid || matches!(k, "client_app_id" | "focus_datetime" | "x");
            obj.extend(fields.into_iter().filter(|(k, _)| extra(k)).map(|(k, v)| (k.to_owned(), v)));
            if let Some(aid) = aid {
                obj.insert("aid".into(), Value::from(aid));
            }
            let tree = Value::Object(obj);
            let parsed = ClientMessage::parse(&tree.to_string());
            if valid && aid.is_some_and(|a| a != "rtn_data") {
                prop_assert!(parsed.is_ok(), "{tree}: {parsed:?}");
            }
            prop_assert_eq!(parsed, ClientMessage::from_value(tree));
        }

        #[test]
        fn insert_order_round_trips(
            volume in any::<i64>(),
            // Prices with at most 12 significant digits read back exactly (see arb_json).
            price in proptest::option::of((-100_000_000_000i64..100_000_000_000)
                .prop_map(|n| n as f64 / 100.0)),
            buy in any::<bool>(),
            id in "[A-Za-z0-9_]{1,20}",
        ) {
            let o = InsertOrder {
                user_id: "u1".into(),
                order_id: id,
                exchange_id: "SHFE".into(),
                instrument_id: "cu2501".into(),
                direction: if buy { Direction::Buy } else { Direction::Sell },
                offset: Offset::Close,
                volume,
                price_type: PriceType::FiveLevel,
                limit_price: price,
                time_condition: TimeCondition::Gtc,
                volume_condition: VolumeCondition::Min,
            };
            let mut v = serde_json::to_value(&o).unwrap();
            v["aid"] = Value::from("insert_order");
            prop_assert_eq!(
                ClientMessage::parse(&v.to_string()).unwrap(),
                ClientMessage::InsertOrder(o)
            );
        }
    }
}
