//! A cheap upper bound of how many bytes `serde_json` writes for a value (compact form).
//!
//! Sessions keep a running total of their pending patch with this estimate so the server can cut
//! off a client that stopped reading without serializing anything. It is exact for everything
//! but floats and object/array commas: floats count as [`FLOAT_BYTES`] (the longest `ryu`
//! output, e.g. `-1.2345678901234567e-308`), and every member counts a trailing comma. Being an
//! upper bound is what matters: a limit enforced with it is never looser than the real size.

use serde_json::Value;

/// Upper bound of a finite `f64` as serde_json writes it (`ryu`, at most 24 bytes).
pub const FLOAT_BYTES: usize = 24;

/// Bytes of `null`, also the cost of a deletion marker in a patch.
pub const NULL_BYTES: usize = 4;

/// Estimated serialized length of `v` (never below the real length).
pub fn estimate(v: &Value) -> usize {
    match v {
        Value::Null => NULL_BYTES,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                int_len(i.unsigned_abs()) + usize::from(i < 0)
            } else if let Some(u) = n.as_u64() {
                int_len(u)
            } else {
                FLOAT_BYTES
            }
        }
        Value::String(s) => string(s),
        Value::Array(items) => 2 + items.iter().map(|x| estimate(x) + 1).sum::<usize>(),
        Value::Object(fields) => 2 + fields.iter().map(|(k, v)| member(k, v)).sum::<usize>(),
    }
}

/// Estimated length of one object member `"k":v,` (the comma always counted).
pub fn member(key: &str, v: &Value) -> usize {
    string(key) + 1 + estimate(v) + 1
}

/// Exact length of a JSON string literal as serde_json escapes it (quotes included).
pub fn string(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

fn int_len(mut u: u64) -> usize {
    let mut n = 1;
    while u >= 10 {
        u /= 10;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn exact_for_integers_strings_and_literals() {
        for v in [
            json!(0),
            json!(-1),
            json!(i64::MIN),
            json!(u64::MAX),
            json!("a\"b\\c\n\u{1}é"),
            json!(null),
            json!(true),
            json!(false),
        ] {
            assert_eq!(estimate(&v), serde_json::to_string(&v).unwrap().len(), "{v}");
        }
    }

    #[test]
    fn containers_count_one_comma_per_member() {
        let v = json!({"a": [1, 2], "b": {}});
        // {"a":[1,2],"b":{}} is 18 bytes; 2 objects' members and 2 array items add 4 commas,
        // 2 of which are real.
        assert_eq!(serde_json::to_string(&v).unwrap().len(), 18);
        assert_eq!(estimate(&v), 20);
    }

    proptest! {
        #[test]
        fn never_below_real_length(v in crate::diff::merge_patch::tests::arb_json()) {
            prop_assert!(estimate(&v) >= serde_json::to_string(&v).unwrap().len());
        }
    }
}
