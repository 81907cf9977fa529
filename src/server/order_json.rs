//! An order's answer (`{"order":..,"trades":[..]}`, the `data` of every submit, cancel and
//! modify reply) written as JSON text field by field, the same bytes `serde_json` writes for
//! the `Serialize` derives of `OrderRecord` and `UserTrade`. Through serde it was ~6 % of a
//! busy shard's CPU (docs/PERFORMANCE.md "Order answers written as text"): a visitor call per
//! field, prices through a float formatter. The tests below compare both writers byte for byte
//! over random records, odd names and extreme amounts included.

use super::journal::{OrderRecord, UserTrade};
use super::json_text::{push_object, Field};

/// Appends `{"order":<order>,"trades":[<trade>,..]}`.
pub fn push_order_reply(out: &mut Vec<u8>, order: &OrderRecord, trades: &[&UserTrade]) {
    out.extend_from_slice(br#"{"order":"#);
    push_order(out, order);
    out.extend_from_slice(br#","trades":["#);
    for (i, trade) in trades.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_user_trade(out, trade);
    }
    out.extend_from_slice(b"]}");
}

fn push_order(out: &mut Vec<u8>, o: &OrderRecord) {
    push_object(
        out,
        &[
            (r#""order_id":"#, Field::Id(o.order_id)),
            (r#""client_order_id":"#, Field::Str(o.client_order_id.as_str())),
            (r#""account_id":"#, Field::Str(o.account_id.as_str())),
            (r#""exchange_id":"#, Field::Str(o.exchange_id.as_str())),
            (r#""instrument_id":"#, Field::Str(o.instrument_id.as_str())),
            (r#""direction":"#, Field::Str(o.direction.as_str())),
            (r#""offset":"#, Field::Str(o.offset.as_str())),
            (r#""price_type":"#, Field::Str(o.price_type.as_str())),
            (r#""limit_price":"#, o.limit_price.map_or(Field::Null, Field::Fixed4)),
            (r#""volume_orign":"#, Field::Int(o.volume_orign)),
            (r#""volume_left":"#, Field::Int(o.volume_left)),
            (r#""time_condition":"#, Field::Str(o.time_condition.as_str())),
            (r#""volume_condition":"#, Field::Str(o.volume_condition.as_str())),
            (r#""status":"#, Field::Str(o.status.as_str())),
            (r#""filled_volume":"#, Field::Int(o.filled_volume)),
            (r#""trade_amount":"#, Field::Fixed4(o.trade_amount)),
            (r#""last_code":"#, o.last_code.map_or(Field::Null, |c| Field::Id(u64::from(c)))),
            (r#""last_msg":"#, o.last_msg.map_or(Field::Null, Field::Str)),
            (r#""insert_time_ns":"#, Field::Int(o.insert_time_ns)),
            (r#""update_time_ns":"#, Field::Int(o.update_time_ns)),
        ],
    );
}

fn push_user_trade(out: &mut Vec<u8>, t: &UserTrade) {
    push_object(
        out,
        &[
            (r#""trade_id":"#, Field::Id(t.trade_id)),
            (r#""order_id":"#, Field::Id(t.order_id)),
            (r#""client_order_id":"#, Field::Str(t.client_order_id.as_str())),
            (r#""account_id":"#, Field::Str(t.account_id.as_str())),
            (r#""exchange_id":"#, Field::Str(t.exchange_id.as_str())),
            (r#""instrument_id":"#, Field::Str(t.instrument_id.as_str())),
            (r#""direction":"#, Field::Str(t.direction.as_str())),
            (r#""offset":"#, Field::Str(t.offset.as_str())),
            (r#""price":"#, Field::Fixed4(t.price)),
            (r#""volume":"#, Field::Int(t.volume)),
            (r#""commission":"#, Field::Fixed4(t.commission)),
            (r#""close_profit":"#, Field::Fixed4(t.close_profit)),
            (r#""ts":"#, Field::Int(t.ts)),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::json_text::random::{order, trade, Rng};
    use serde::Serialize;

    #[derive(Serialize)]
    struct SerdeReply<'a> {
        order: &'a OrderRecord,
        trades: &'a [&'a UserTrade],
    }

    #[test]
    fn the_text_is_serdes_byte_for_byte() {
        let mut r = Rng(7);
        for case in 0..20_000 {
            let o = order(&mut r);
            let trades: Vec<UserTrade> = (0..r.next() % 4).map(|_| trade(&mut r)).collect();
            let refs: Vec<&UserTrade> = trades.iter().collect();
            let mut ours = Vec::new();
            push_order_reply(&mut ours, &o, &refs);
            let theirs = serde_json::to_vec(&SerdeReply { order: &o, trades: &refs }).expect("serializes");
            assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs), "case {case}: {o:?}");
        }
    }
}
