//! Path and query parameters: percent-decoding into stack buffers and checked numbers.
//!
//! Percent-decoding follows RFC 3986: `%XX` (hex, either case) is a byte, every other byte is
//! itself (`+` stays `+`); the result must be UTF-8. Query strings are `key=value` pairs joined
//! by `&`; keys are compared as sent (not decoded), unknown keys are ignored, a known key given
//! twice is an error.

use crate::domain::name::InlineStr;

/// Why a parameter could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A `%` not followed by two hex digits, or bytes that are not UTF-8 once decoded.
    Malformed,
    /// Empty, or longer than allowed once decoded.
    Length,
}

/// The longest decoded parameter: client order ids (63 bytes).
const MAX_DECODED: usize = 63;

/// Percent-decodes `raw` into an inline string of 1..=`N` bytes (`N` <= 63).
pub(crate) fn decode_id<const N: usize>(raw: &str) -> Result<InlineStr<N>, DecodeError> {
    let mut buf = [0u8; MAX_DECODED];
    let text = percent_decode(raw, &mut buf[..N.min(MAX_DECODED)])?;
    InlineStr::new(text).ok_or(DecodeError::Length)
}

/// Percent-decodes `raw` into `buf`; `Length` when the result is empty or does not fit.
pub(crate) fn percent_decode<'b>(raw: &str, buf: &'b mut [u8]) -> Result<&'b str, DecodeError> {
    let bytes = raw.as_bytes();
    let mut len = 0;
    let mut i = 0;
    while i < bytes.len() {
        let byte = if bytes[i] == b'%' {
            let high = bytes.get(i + 1).and_then(|&b| hex_value(b)).ok_or(DecodeError::Malformed)?;
            let low = bytes.get(i + 2).and_then(|&b| hex_value(b)).ok_or(DecodeError::Malformed)?;
            i += 3;
            high << 4 | low
        } else {
            i += 1;
            bytes[i - 1]
        };
        *buf.get_mut(len).ok_or(DecodeError::Length)? = byte;
        len += 1;
    }
    if len == 0 {
        return Err(DecodeError::Length);
    }
    std::str::from_utf8(&buf[..len]).map_err(|_| DecodeError::Malformed)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A query key given more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Duplicate;

/// The raw value of `key` in `query` (None when absent); `Err` when the key appears twice.
pub(crate) fn query_value<'q>(query: &'q str, key: &str) -> Result<Option<&'q str>, Duplicate> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            if found.is_some() {
                return Err(Duplicate);
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// A percent-decoded short value (numbers and period names); None when malformed or over 16 bytes.
pub(crate) fn decode_short<'b>(raw: &str, buf: &'b mut [u8; 16]) -> Option<&'b str> {
    percent_decode(raw, buf).ok()
}

/// A plain decimal integer (digits only) inside `range`.
pub(crate) fn parse_in_range(text: &str, range: std::ops::RangeInclusive<u32>) -> Option<u32> {
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = text.parse::<u32>().ok()?;
    range.contains(&n).then_some(n)
}
