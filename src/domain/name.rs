//! Short inline strings for identifiers (account ids, instrument ids, client order ids).
//!
//! They are `Copy` and live inline in commands and events, so the hot path never allocates for
//! an identifier. Serialized as plain strings in JSON and as bytes in rkyv.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An inline UTF-8 string of 1..=`N` bytes (its length is kept in a separate byte).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct InlineStr<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

/// Account ids and user names: up to 31 bytes.
pub type AccountId = InlineStr<31>;
/// Instrument ids without exchange prefix (e.g. `cu2501`): up to 31 bytes.
pub type InstrumentId = InlineStr<31>;
/// The client's own order id (tqsdk uses ids like `PYSDK_insert_<32 hex>`): up to 63 bytes.
pub type ClientOrderId = InlineStr<63>;

impl<const N: usize> InlineStr<N> {
    pub const CAPACITY: usize = N;

    /// None when the text is longer than `N` bytes or empty.
    pub fn new(text: &str) -> Option<Self> {
        if text.is_empty() || text.len() > N || N > u8::MAX as usize {
            return None;
        }
        let mut bytes = [0u8; N];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(Self { len: text.len() as u8, bytes })
    }

    pub fn as_str(&self) -> &str {
        // The bytes were copied from a &str, so they are valid UTF-8; checked anyway because
        // rkyv-deserialized values come from disk.
        std::str::from_utf8(self.used()).unwrap_or("")
    }

    /// The used bytes. `len` is at most `N` for every value made by `new`; one decoded from a
    /// damaged (but checksum-valid) file may say more, and is cut at `N` instead of panicking.
    fn used(&self) -> &[u8] {
        &self.bytes[..(self.len as usize).min(N)]
    }
}

/// Hashes only the used bytes (the padding is always zero, so this agrees with `Eq`).
impl<const N: usize> std::hash::Hash for InlineStr<N> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.used());
        state.write_u8(0xff);
    }
}

impl<const N: usize> fmt::Debug for InlineStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl<const N: usize> fmt::Display for InlineStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> Serialize for InlineStr<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de, const N: usize> Deserialize<'de> for InlineStr<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        InlineStr::new(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("identifier must be 1..={N} bytes, got {}", text.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_str_bounds() {
        assert!(AccountId::new("").is_none());
        assert!(AccountId::new(&"x".repeat(32)).is_none());
        let id = AccountId::new("u1").unwrap();
        assert_eq!(id.as_str(), "u1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"u1\"");
        let back: AccountId = serde_json::from_str("\"u1\"").unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<AccountId>(&format!("\"{}\"", "y".repeat(40))).is_err());
    }

    #[test]
    fn a_length_past_the_capacity_from_disk_is_cut_not_a_panic() {
        let id = AccountId::new("u1").unwrap();
        let mut bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&id).unwrap().to_vec();
        // The archived struct is the length byte, then the bytes (no padding: all u8).
        let at = bytes.len() - 32;
        assert_eq!(bytes[at], 2);
        bytes[at] = 200;
        let damaged: AccountId = rkyv::from_bytes::<AccountId, rkyv::rancor::Error>(&bytes).unwrap();
        // Cut at the capacity: "u1" and 29 zero bytes.
        assert_eq!(damaged.as_str().len(), 31);
        assert!(damaged.as_str().starts_with("u1"));
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&damaged, &mut hasher);
        let _ = format!("{damaged} {damaged:?}");
    }
}
