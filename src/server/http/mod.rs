//! The HTTP/1.1 layer of the server, as pure functions over byte buffers: no sockets, no async,
//! no clock. The connection loop owns a read buffer and a write buffer per connection and calls:
//!
//! 1. [`parse_request`] on the bytes read so far. `Partial`: read more. `Complete { request,
//!    consumed }`: handle the request, then parse again from `buf[consumed..]` (pipelining; keep
//!    the responses in request order). `Error(e)`: write `e` with [`write_http_error`] and
//!    `keep_alive = false`, flush, close (the stream can no longer be framed).
//! 2. [`route`] on `(request.method, request.path, request.query)`: a [`Route`] with decoded,
//!    length-checked path parameters and checked query parameters, or an [`HttpError`] (404, 405
//!    with `Allow`, 400) to write with `request.keep_alive` (the connection stays usable).
//! 3. The handler's answer with [`write_success`] (200, `{"success":true,"data":...,"error":null}`)
//!    or [`write_error`] / [`write_http_error`] (`{"success":false,"data":null,"error":{"code":n,
//!    "message":"..."}}`), or [`write_response`] for other bodies (`/metrics`), appended to the
//!    write buffer; close after writing if `request.keep_alive` is false.
//!
//! Error codes of this layer are the 9xxx table of [`HttpErrorCode`]; the router also answers the
//! engine's 1006 (account id length) and 2015 (order id length). Files: `request` (framing and
//! limits), `response` (writing), `route` (the endpoint table), `params` (percent-decoding and
//! query values), `error` (the code table).

mod error;
mod params;
mod request;
mod response;
mod route;

#[cfg(test)]
mod tests;

pub use error::{HttpError, HttpErrorCode};
pub use request::{parse_request, Header, Limits, Method, ParseOutcome, Request, Version};
pub(crate) use response::push_decimal;
pub use response::{
    push_error_body, push_success_body, push_success_body_with, reason_phrase, write_error, write_http_error,
    write_response, write_response_with_headers, write_success, CONTENT_TYPE_JSON, CONTENT_TYPE_PROMETHEUS,
    CONTENT_TYPE_TEXT,
};
pub use route::{
    route, Access, KlinePeriod, Route, DEFAULT_DEPTH, DEFAULT_KLINE_COUNT, DEFAULT_KLINE_PERIOD, DEFAULT_TRADES_LIMIT,
    MAX_DEPTH, MAX_KLINE_COUNT, MAX_TRADES_LIMIT,
};
