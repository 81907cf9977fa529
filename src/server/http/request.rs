//! Request parsing: one HTTP/1.x request from the front of a byte buffer, on `httparse`.
//!
//! Framing rules:
//! - Only HTTP/1.1 and HTTP/1.0. Another `HTTP/<digit>` version is 505; anything else in the
//!   version position is 400.
//! - The body is `Content-Length` bytes (none when the header is absent). The value must be one
//!   plain decimal number; a second `Content-Length` header (even an equal one), a sign, a list or
//!   an overflow is 400.
//! - Any `Transfer-Encoding` (chunked or not) is 501 Not Implemented: the server does not decode
//!   transfer codings, and RFC 9112 §6.1 asks for 501 for a coding the server does not understand.
//!   Clients must send `Content-Length` (every JSON client does for a buffered body).
//! - Limits: the head (request line and headers) longer than `max_header_bytes` or with more than
//!   `max_headers` headers is 431; a `Content-Length` above `max_body_bytes` is 413, answered as
//!   soon as the head is in (before the body arrives).
//! - Keep-alive: HTTP/1.1 keeps the connection unless a `Connection` header has the `close` token;
//!   HTTP/1.0 closes it unless a `Connection` header has `keep-alive`.
//!
//! After an `Error`, the bytes of the connection can no longer be framed: answer the error with
//! `keep_alive = false` and close.

use super::error::{HttpError, HttpErrorCode};
use std::mem::MaybeUninit;

/// Size limits of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers plus the blank line, in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Number of header fields (431 beyond); at most [`Limits::HEADER_SLOTS`] are honoured.
    pub max_headers: usize,
    /// `Content-Length` (413 beyond).
    pub max_body_bytes: usize,
}

impl Limits {
    /// The parser keeps its header slots on the stack; a larger `max_headers` is capped to this.
    pub const HEADER_SLOTS: usize = 128;
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_header_bytes: 16 * 1024, max_headers: 64, max_body_bytes: 1024 * 1024 }
    }
}

/// The request method. Methods are case sensitive: `get` is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Head,
    Options,
    /// Any other token (PATCH, TRACE, CONNECT, extensions); see [`Request::raw_method`].
    Other,
}

impl Method {
    pub fn from_token(token: &str) -> Self {
        match token {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    /// The token of a known method, `"OTHER"` for `Other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// The HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    Http10,
    Http11,
}

/// The headers the server looks at; all others are skipped (but still count for the limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Header {
    ContentType,
    Authorization,
    Connection,
    Upgrade,
    Host,
    Expect,
    Origin,
    SecWebSocketKey,
    SecWebSocketVersion,
    SecWebSocketProtocol,
}

impl Header {
    pub const ALL: [Header; 10] = [
        Header::ContentType,
        Header::Authorization,
        Header::Connection,
        Header::Upgrade,
        Header::Host,
        Header::Expect,
        Header::Origin,
        Header::SecWebSocketKey,
        Header::SecWebSocketVersion,
        Header::SecWebSocketProtocol,
    ];

    /// The canonical field name.
    pub fn name(self) -> &'static str {
        match self {
            Header::ContentType => "Content-Type",
            Header::Authorization => "Authorization",
            Header::Connection => "Connection",
            Header::Upgrade => "Upgrade",
            Header::Host => "Host",
            Header::Expect => "Expect",
            Header::Origin => "Origin",
            Header::SecWebSocketKey => "Sec-WebSocket-Key",
            Header::SecWebSocketVersion => "Sec-WebSocket-Version",
            Header::SecWebSocketProtocol => "Sec-WebSocket-Protocol",
        }
    }

    /// The known header of a field name, compared case-insensitively.
    pub fn from_name(name: &str) -> Option<Header> {
        Header::ALL.into_iter().find(|h| h.name().eq_ignore_ascii_case(name))
    }
}

/// One parsed request; every slice borrows from the parsed buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The method token as sent (useful for `Method::Other`).
    pub raw_method: &'a str,
    /// The path of the request target, still percent-encoded, without the query (`/` for a bare
    /// authority in absolute form, `*` for `OPTIONS *`).
    pub path: &'a str,
    /// The raw query after `?`, empty when there is none.
    pub query: &'a str,
    pub version: Version,
    /// Whether the connection stays open after the response (see the module doc).
    pub keep_alive: bool,
    /// Whether some `Connection` header has the `upgrade` token (WebSocket handshakes).
    pub connection_upgrade: bool,
    /// Exactly `Content-Length` bytes (empty without the header).
    pub body: &'a [u8],
    headers: [Option<&'a [u8]>; Header::ALL.len()],
}

impl<'a> Request<'a> {
    /// The value of the first field of a known header, without surrounding whitespace.
    pub fn header(&self, header: Header) -> Option<&'a [u8]> {
        self.headers[header as usize]
    }

    /// Like [`Request::header`], None as well when the value is not UTF-8.
    pub fn header_str(&self, header: Header) -> Option<&'a str> {
        self.header(header).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Case-insensitive lookup by field name; only the names of [`Header`] are kept, so any
    /// other name gives None.
    pub fn header_by_name(&self, name: &str) -> Option<&'a [u8]> {
        Header::from_name(name).and_then(|h| self.header(h))
    }
}

/// What [`parse_request`] found at the front of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseOutcome<'a> {
    /// A whole request; the next one (pipelining) starts at `buf[consumed..]`.
    Complete { request: Request<'a>, consumed: usize },
    /// Not enough bytes yet: read more and parse the whole buffer again.
    Partial,
    /// The request is invalid or over a limit: answer the error and close the connection.
    Error(HttpError),
}

/// Parses the request at the front of `buf`. Never panics, whatever the bytes.
///
/// While it returns `Partial`, `buf` holds at most `max_header_bytes + max_body_bytes` bytes, so
/// a read buffer of that size (plus what pipelined requests bring) is always enough.
pub fn parse_request<'a>(buf: &'a [u8], limits: &Limits) -> ParseOutcome<'a> {
    // Uninitialized slots: httparse writes only the ones it fills, so no per-call clearing.
    let mut slots = [MaybeUninit::<httparse::Header<'a>>::uninit(); Limits::HEADER_SLOTS];
    let slots = &mut slots[..limits.max_headers.min(Limits::HEADER_SLOTS)];
    let mut parsed = httparse::Request::new(&mut []);
    // Only the first `max_header_bytes` can hold a head within the limit, so parse no further.
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    let head_len = match parsed.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_header_bytes => {
            return ParseOutcome::Error(HttpErrorCode::HeadersTooLarge.into());
        }
        Ok(httparse::Status::Partial) => return ParseOutcome::Partial,
        Err(e) => return ParseOutcome::Error(classify(e, window)),
    };
    let (Some(raw_method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version) else {
        return ParseOutcome::Error(HttpErrorCode::MalformedRequest.into());
    };
    let version = if minor == 1 { Version::Http11 } else { Version::Http10 };
    let Some((path, query)) = split_target(target) else {
        return ParseOutcome::Error(HttpError::with_message(
            HttpErrorCode::MalformedRequest,
            "request target must be an absolute path like /api/...",
        ));
    };

    let mut known: [Option<&'a [u8]>; Header::ALL.len()] = [None; Header::ALL.len()];
    let mut content_length: Option<usize> = None;
    let mut has_close = false;
    let mut has_keep_alive = false;
    let mut connection_upgrade = false;
    for field in parsed.headers.iter() {
        let value = trim_ows(field.value);
        if field.name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return ParseOutcome::Error(HttpError::with_message(
                    HttpErrorCode::InvalidContentLength,
                    "Content-Length is given more than once",
                ));
            }
            match parse_content_length(value) {
                Some(n) => content_length = Some(n),
                None => return ParseOutcome::Error(HttpErrorCode::InvalidContentLength.into()),
            }
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            return ParseOutcome::Error(HttpErrorCode::NotImplemented.into());
        } else if let Some(header) = Header::from_name(field.name) {
            if header == Header::Connection {
                for token in value.split(|&b| b == b',').map(trim_ows) {
                    has_close |= token.eq_ignore_ascii_case(b"close");
                    has_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    connection_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                }
            }
            let slot = &mut known[header as usize];
            if slot.is_none() {
                *slot = Some(value);
            }
        }
    }

    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body_bytes {
        return ParseOutcome::Error(HttpErrorCode::PayloadTooLarge.into());
    }
    let Some(consumed) = head_len.checked_add(body_len) else {
        return ParseOutcome::Error(HttpErrorCode::PayloadTooLarge.into());
    };
    let Some(body) = buf.get(head_len..consumed) else {
        return ParseOutcome::Partial;
    };
    let keep_alive = match version {
        Version::Http11 => !has_close,
        Version::Http10 => has_keep_alive && !has_close,
    };
    let request = Request {
        method: Method::from_token(raw_method),
        raw_method,
        path,
        query,
        version,
        keep_alive,
        connection_upgrade,
        body,
        headers: known,
    };
    ParseOutcome::Complete { request, consumed }
}

/// Maps an httparse error to the answer; a well-formed `HTTP/x[.y]` other than 1.0/1.1 is 505.
fn classify(error: httparse::Error, window: &[u8]) -> HttpError {
    match error {
        httparse::Error::TooManyHeaders => HttpError::with_message(HttpErrorCode::HeadersTooLarge, "too many headers"),
        httparse::Error::Version if is_other_http_version(window) => HttpErrorCode::VersionNotSupported.into(),
        _ => HttpErrorCode::MalformedRequest.into(),
    }
}

/// Whether the request line ends in `HTTP/<digit>` or `HTTP/<digit>.<digit>` (possibly cut short
/// by the end of the buffer).
fn is_other_http_version(window: &[u8]) -> bool {
    let start = window.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(window.len());
    let rest = &window[start..];
    let line_end = rest.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(rest.len());
    let line = &rest[..line_end];
    let token = match line.iter().rposition(|&b| b == b' ') {
        Some(i) => &line[i + 1..],
        None => return false,
    };
    match token.strip_prefix(b"HTTP/") {
        Some([major]) => major.is_ascii_digit(),
        Some([major, b'.']) => major.is_ascii_digit(),
        Some([major, b'.', minor]) => major.is_ascii_digit() && minor.is_ascii_digit(),
        _ => false,
    }
}

/// Splits the request target into (path, query). Origin form `/p?q`, absolute form
/// `http://host/p?q` (the authority is dropped) and `*` are accepted; None otherwise.
fn split_target(target: &str) -> Option<(&str, &str)> {
    let target = target.split_once('#').map_or(target, |(before, _)| before);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path.starts_with('/') || path == "*" {
        return Some((path, query));
    }
    let scheme_len = if starts_with_ignore_case(path, "http://") {
        7
    } else if starts_with_ignore_case(path, "https://") {
        8
    } else {
        return None;
    };
    let after_scheme = &path[scheme_len..];
    match after_scheme.find('/') {
        Some(i) => Some((&after_scheme[i..], query)),
        None => Some(("/", query)),
    }
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.as_bytes().get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// One plain decimal number, at most 19 digits (no sign, no list, no whitespace inside).
fn parse_content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = value.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    usize::try_from(n).ok()
}

/// Strips spaces and tabs from both ends.
fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(value.len());
    let end = value.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &value[start..end]
}
