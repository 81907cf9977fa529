//! Response writing: status line, headers and body appended to a reusable `Vec<u8>`, and the JSON
//! envelope of SPEC §3 (`{"success":bool,"data":...,"error":...}`).
//!
//! Every function appends to `out` (it never clears it), so pipelined responses can share one
//! buffer. Nothing allocates besides the growth of `out`: numbers are formatted on the stack and
//! JSON is serialized straight into `out`.
//!
//! Every response carries `Content-Type`, `Content-Length` and `Connection: keep-alive` or
//! `Connection: close` (the explicit `keep-alive` also serves HTTP/1.0 clients). The status line
//! always says `HTTP/1.1`, which HTTP/1.0 clients accept. No `Date` header: the layer has no clock.

use super::error::{HttpError, HttpErrorCode};
use serde::Serialize;

pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
/// The Prometheus text exposition format, for `/metrics`.
pub const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The reason phrase of a status (empty for a status not in the list, which HTTP allows).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends a whole response. A status outside 100..=599 is written as 500.
pub fn write_response(out: &mut Vec<u8>, status: u16, content_type: &str, body: &[u8], keep_alive: bool) {
    write_response_with_headers(out, status, content_type, &[], body, keep_alive);
}

/// [`write_response`] with extra header fields (e.g. `Allow`, CORS headers), written as given
/// after the standard ones. Names and values must not contain CR or LF.
pub fn write_response_with_headers(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    write_head(out, status, content_type, extra_headers, body.len(), keep_alive);
    out.extend_from_slice(body);
}

/// Appends 200 with `{"success":true,"data":<data>,"error":null}`. Returns the status written:
/// 200, or 500 (an envelope with code 9010) when `data` fails to serialize (e.g. a map with
/// non-string keys), in which case nothing of the failed attempt stays in `out`.
pub fn write_success<T: Serialize + ?Sized>(out: &mut Vec<u8>, data: &T, keep_alive: bool) -> u16 {
    let start = out.len();
    if push_success_body(out, data).is_err() {
        let kind = HttpErrorCode::InternalError;
        write_error(
            out,
            kind.status(),
            kind.code(),
            "internal server error: the answer could not be serialized",
            keep_alive,
        );
        return kind.status();
    }
    finish_json(out, start, 200, &[], keep_alive);
    200
}

/// Appends the body `{"success":true,"data":<data>,"error":null}` alone (no HTTP head). On a
/// serialization error nothing of the attempt stays in `out`.
pub fn push_success_body<T: Serialize + ?Sized>(out: &mut Vec<u8>, data: &T) -> Result<(), serde_json::Error> {
    let start = out.len();
    push_success_body_with(out, |out| serde_json::to_writer(out, data)).inspect_err(|_| out.truncate(start))
}

/// [`push_success_body`] with the data written by `write` (JSON text it writes itself).
pub fn push_success_body_with<E>(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    out.extend_from_slice(br#"{"success":true,"data":"#);
    write(out)?;
    out.extend_from_slice(br#","error":null}"#);
    Ok(())
}

/// Appends the body `{"success":false,"data":null,"error":{"code":..,"message":".."}}` alone.
pub fn push_error_body(out: &mut Vec<u8>, code: u32, message: &str) {
    out.extend_from_slice(br#"{"success":false,"data":null,"error":{"code":"#);
    push_decimal(out, u64::from(code));
    out.extend_from_slice(br#","message":"#);
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, message);
    out.extend_from_slice(b"}}");
}

/// Appends `status` with `{"success":false,"data":null,"error":{"code":<code>,"message":"..."}}`.
pub fn write_error(out: &mut Vec<u8>, status: u16, code: u32, message: &str, keep_alive: bool) {
    write_error_with_headers(out, status, code, message, &[], keep_alive);
}

/// [`write_error`] for an [`HttpError`], with its `Allow` header on a 405.
pub fn write_http_error(out: &mut Vec<u8>, error: &HttpError, keep_alive: bool) {
    match error.allow {
        Some(allow) => {
            write_error_with_headers(out, error.status, error.code, error.message, &[("Allow", allow)], keep_alive)
        }
        None => write_error(out, error.status, error.code, error.message, keep_alive),
    }
}

fn write_error_with_headers(
    out: &mut Vec<u8>,
    status: u16,
    code: u32,
    message: &str,
    extra_headers: &[(&str, &str)],
    keep_alive: bool,
) {
    let start = out.len();
    push_error_body(out, code, message);
    finish_json(out, start, status, extra_headers, keep_alive);
}

/// The JSON body is at `out[start..]`: appends the head after it, then rotates the head in front
/// of the body (the head's length depends on the body's, so it cannot be written first).
fn finish_json(out: &mut Vec<u8>, start: usize, status: u16, extra_headers: &[(&str, &str)], keep_alive: bool) {
    let body_len = out.len() - start;
    write_head(out, status, CONTENT_TYPE_JSON, extra_headers, body_len, keep_alive);
    let head_len = out.len() - start - body_len;
    out[start..].rotate_right(head_len);
}

fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    content_length: usize,
    keep_alive: bool,
) {
    let status = if (100..=599).contains(&status) { status } else { 500 };
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_decimal(out, content_length as u64);
    out.extend_from_slice(if keep_alive { b"\r\nConnection: keep-alive\r\n" } else { b"\r\nConnection: close\r\n" });
    for (name, value) in extra_headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal, formatted on the stack.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}
