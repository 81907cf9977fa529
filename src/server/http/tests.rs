use super::*;
use crate::domain::market_data::KLINE_PERIODS_NS;
use crate::domain::name::{AccountId, ClientOrderId, InstrumentId};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers

fn limits() -> Limits {
    Limits::default()
}

#[track_caller]
fn complete(buf: &[u8]) -> (Request<'_>, usize) {
    match parse_request(buf, &limits()) {
        ParseOutcome::Complete { request, consumed } => (request, consumed),
        other => panic!("expected a complete request, got {other:?} for {:?}", String::from_utf8_lossy(buf)),
    }
}

#[track_caller]
fn error(buf: &[u8]) -> HttpError {
    error_with(buf, &limits())
}

#[track_caller]
fn error_with(buf: &[u8], limits: &Limits) -> HttpError {
    match parse_request(buf, limits) {
        ParseOutcome::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[track_caller]
fn assert_error(buf: &[u8], status: u16, kind: HttpErrorCode) {
    let e = error(buf);
    assert_eq!((e.status, e.code), (status, kind.code()), "{e:?} for {:?}", String::from_utf8_lossy(buf));
    assert_eq!(kind.status(), status);
}

fn account(id: &str) -> AccountId {
    AccountId::new(id).unwrap()
}

fn instrument(id: &str) -> InstrumentId {
    InstrumentId::new(id).unwrap()
}

fn order(id: &str) -> ClientOrderId {
    ClientOrderId::new(id).unwrap()
}

const GET: &[u8] = b"GET /api/market/orderbook/cu2501?depth=10 HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";
const POST: &[u8] = b"POST /api/order/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Authorization: Bearer abc\r\nContent-Length: 13\r\n\r\n{\"volume\":1}\n";

// ---------------------------------------------------------------------------------------------
// Requests

#[test]
fn simple_get() {
    let (r, consumed) = complete(GET);
    assert_eq!(consumed, GET.len());
    assert_eq!(r.method, Method::Get);
    assert_eq!(r.raw_method, "GET");
    assert_eq!(r.path, "/api/market/orderbook/cu2501");
    assert_eq!(r.query, "depth=10");
    assert_eq!(r.version, Version::Http11);
    assert!(r.keep_alive);
    assert!(!r.connection_upgrade);
    assert_eq!(r.body, b"");
    assert_eq!(r.header(Header::Host), Some(&b"localhost"[..]));
    assert_eq!(r.header(Header::ContentType), None);
    // Headers the server does not keep are not found, known ones by any case.
    assert_eq!(r.header_by_name("accept"), None);
    assert_eq!(r.header_by_name("HOST"), Some(&b"localhost"[..]));
}

#[test]
fn post_with_body_and_header_lookup() {
    let (r, consumed) = complete(POST);
    assert_eq!(consumed, POST.len());
    assert_eq!(r.method, Method::Post);
    assert_eq!(r.path, "/api/order/submit");
    assert_eq!(r.query, "");
    assert_eq!(r.body, b"{\"volume\":1}\n");
    assert_eq!(r.header_str(Header::ContentType), Some("application/json"));
    assert_eq!(r.header_by_name("content-type"), Some(&b"application/json"[..]));
    assert_eq!(r.header_by_name("AUTHORIZATION"), Some(&b"Bearer abc"[..]));
    assert_eq!(r.header_str(Header::Authorization), Some("Bearer abc"));
}

#[test]
fn header_names_any_case_values_trimmed_first_kept() {
    let buf = b"GET / HTTP/1.1\r\ncOnTeNt-TyPe:   text/plain \t\r\ncontent-type: second\r\nUPGRADE: websocket\r\n\
sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (r, _) = complete(buf);
    assert_eq!(r.header(Header::ContentType), Some(&b"text/plain"[..]));
    assert_eq!(r.header_str(Header::Upgrade), Some("websocket"));
    assert_eq!(r.header_str(Header::SecWebSocketKey), Some("dGhlIHNhbXBsZSBub25jZQ=="));
    for h in Header::ALL {
        assert_eq!(Header::from_name(&h.name().to_ascii_uppercase()), Some(h));
    }
    assert_eq!(Header::from_name("X-Other"), None);
}

#[test]
fn methods() {
    for (token, method) in [
        ("GET", Method::Get),
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("DELETE", Method::Delete),
        ("HEAD", Method::Head),
        ("OPTIONS", Method::Options),
        ("PATCH", Method::Other),
        ("get", Method::Other),
    ] {
        let buf = format!("{token} /health HTTP/1.1\r\n\r\n");
        let (r, _) = complete(buf.as_bytes());
        assert_eq!(r.method, method);
        assert_eq!(r.raw_method, token);
        if method != Method::Other {
            assert_eq!(method.as_str(), token);
        }
    }
}

#[test]
fn targets() {
    let (r, _) = complete(b"GET http://example.com:8080/api/x?y=1 HTTP/1.1\r\n\r\n");
    assert_eq!((r.path, r.query), ("/api/x", "y=1"));
    let (r, _) = complete(b"GET HTTPS://example.com HTTP/1.1\r\n\r\n");
    assert_eq!((r.path, r.query), ("/", ""));
    let (r, _) = complete(b"OPTIONS * HTTP/1.1\r\n\r\n");
    assert_eq!(r.path, "*");
    let (r, _) = complete(b"GET /a?b=1?c#frag HTTP/1.1\r\n\r\n");
    assert_eq!((r.path, r.query), ("/a", "b=1?c"));
    let (r, _) = complete(b"GET /a? HTTP/1.1\r\n\r\n");
    assert_eq!((r.path, r.query), ("/a", ""));
    assert_error(b"GET foo HTTP/1.1\r\n\r\n", 400, HttpErrorCode::MalformedRequest);
    assert_error(b"GET ftp://x/y HTTP/1.1\r\n\r\n", 400, HttpErrorCode::MalformedRequest);
}

#[test]
fn leading_blank_lines_are_skipped() {
    let buf = b"\r\n\nGET /health HTTP/1.1\r\n\r\nGET";
    let (r, consumed) = complete(buf);
    assert_eq!(r.path, "/health");
    assert_eq!(consumed, buf.len() - 3);
}

#[test]
fn empty_buffer_is_partial() {
    assert_eq!(parse_request(b"", &limits()), ParseOutcome::Partial);
}

#[test]
fn keep_alive_semantics() {
    let cases: &[(&str, bool, bool)] = &[
        ("GET / HTTP/1.1\r\n\r\n", true, false),
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false, false),
        ("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", false, false),
        ("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", true, false),
        ("GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n", true, true),
        ("GET / HTTP/1.1\r\nConnection: Upgrade\r\nConnection: close\r\n\r\n", false, true),
        ("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", true, false),
        ("GET / HTTP/1.0\r\n\r\n", false, false),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, false),
        ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true, false),
        ("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false, false),
        ("GET / HTTP/1.0\r\nConnection: upgrade\r\n\r\n", false, true),
    ];
    for &(text, keep_alive, upgrade) in cases {
        let (r, _) = complete(text.as_bytes());
        assert_eq!(r.keep_alive, keep_alive, "{text:?}");
        assert_eq!(r.connection_upgrade, upgrade, "{text:?}");
        let version = if text.contains("HTTP/1.0") { Version::Http10 } else { Version::Http11 };
        assert_eq!(r.version, version);
    }
}

#[test]
fn pipelined_requests_in_one_buffer() {
    let mut buf = Vec::new();
    buf.extend_from_slice(GET);
    buf.extend_from_slice(POST);
    buf.extend_from_slice(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    buf.extend_from_slice(b"GET /metr"); // the start of a fourth

    let mut rest = &buf[..];
    let mut seen = Vec::new();
    loop {
        match parse_request(rest, &limits()) {
            ParseOutcome::Complete { request, consumed } => {
                seen.push((request.method, request.path, request.body.len(), request.keep_alive));
                rest = &rest[consumed..];
            }
            ParseOutcome::Partial => break,
            ParseOutcome::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            (Method::Get, "/api/market/orderbook/cu2501", 0, true),
            (Method::Post, "/api/order/submit", 13, true),
            (Method::Get, "/health", 0, false),
        ]
    );
    assert_eq!(rest, b"GET /metr");
}

#[test]
fn partial_at_every_split_point() {
    let with_cl_zero = b"POST /api/account/open HTTP/1.0\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n";
    for full in [GET, POST, &with_cl_zero[..]] {
        let (expected, consumed) = complete(full);
        assert_eq!(consumed, full.len());
        for split in 0..full.len() {
            assert_eq!(parse_request(&full[..split], &limits()), ParseOutcome::Partial, "split at {split}");
        }
        // Bytes after the request do not change it.
        let mut longer = full.to_vec();
        longer.extend_from_slice(b"GARBAGE");
        assert_eq!(parse_request(&longer, &limits()), ParseOutcome::Complete { request: expected, consumed });
    }
}

#[test]
fn transfer_encoding_is_not_implemented() {
    let chunked = b"POST /api/order/submit HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_error(chunked, 501, HttpErrorCode::NotImplemented);
    let both = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\ntransfer-encoding: gzip\r\n\r\nhello";
    assert_error(both, 501, HttpErrorCode::NotImplemented);
    assert_eq!(error(chunked).message, HttpErrorCode::NotImplemented.message());
}

#[test]
fn content_length_rules() {
    for bad in ["abc", "-1", "+5", "5, 5", "", "5 5", "0x10", "99999999999999999999", "1.0"] {
        let buf = format!("POST /x HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
        assert_error(buf.as_bytes(), 400, HttpErrorCode::InvalidContentLength);
    }
    let dup = b"POST /x HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nab";
    assert_error(dup, 400, HttpErrorCode::InvalidContentLength);
    assert!(error(dup).message.contains("more than once"));
    // Whitespace around the value is not part of it.
    let (r, _) = complete(b"POST /x HTTP/1.1\r\nContent-Length:  3 \r\n\r\nabc");
    assert_eq!(r.body, b"abc");
    // Leading zeros are still one decimal number.
    let (r, _) = complete(b"POST /x HTTP/1.1\r\nContent-Length: 003\r\n\r\nabc");
    assert_eq!(r.body, b"abc");
    // A GET may carry a body too; it is framed the same way.
    let with_body = b"GET /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET";
    let (r, consumed) = complete(with_body);
    assert_eq!((r.body, consumed), (&b"hi"[..], with_body.len() - 3));
}

#[test]
fn body_limit_is_413_before_the_body_arrives() {
    let max = limits().max_body_bytes;
    let over = format!("POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", max + 1);
    assert_error(over.as_bytes(), 413, HttpErrorCode::PayloadTooLarge);
    let at = format!("POST /x HTTP/1.1\r\nContent-Length: {max}\r\n\r\n");
    assert_eq!(parse_request(at.as_bytes(), &limits()), ParseOutcome::Partial);
    let mut full = at.into_bytes();
    let head = full.len();
    full.resize(head + max, b'x');
    let (r, consumed) = complete(&full);
    assert_eq!((r.body.len(), consumed), (max, head + max));

    let unbounded = Limits { max_body_bytes: usize::MAX, ..Limits::default() };
    let huge = format!("POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", u64::MAX / 2);
    assert!(matches!(parse_request(huge.as_bytes(), &unbounded), ParseOutcome::Partial | ParseOutcome::Error(_)));
    let small = Limits { max_body_bytes: 4, ..Limits::default() };
    assert_eq!(error_with(b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n", &small).status, 413);
}

#[test]
fn header_limits_are_431() {
    let max = limits().max_header_bytes;
    // A head that never ends.
    let mut endless = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    endless.resize(max, b'a');
    assert_eq!(parse_request(&endless, &limits()), ParseOutcome::Partial);
    endless.push(b'a');
    assert_error(&endless, 431, HttpErrorCode::HeadersTooLarge);
    // A complete head of exactly the limit, and one byte over.
    let mut exact = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    exact.resize(max - 4, b'a');
    exact.extend_from_slice(b"\r\n\r\n");
    assert_eq!(exact.len(), max);
    assert_eq!(complete(&exact).1, max);
    let mut over = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    over.resize(max - 3, b'a');
    over.extend_from_slice(b"\r\n\r\n");
    assert_error(&over, 431, HttpErrorCode::HeadersTooLarge);
    // A request line alone over the limit.
    let mut long_path = b"GET /".to_vec();
    long_path.resize(max + 10, b'a');
    assert_error(&long_path, 431, HttpErrorCode::HeadersTooLarge);

    // The header count.
    let with_headers = |n: usize| {
        let mut s = String::from("GET / HTTP/1.1\r\n");
        for i in 0..n {
            s.push_str(&format!("X-H{i}: v\r\n"));
        }
        s.push_str("\r\n");
        s
    };
    let n = limits().max_headers;
    assert!(matches!(parse_request(with_headers(n).as_bytes(), &limits()), ParseOutcome::Complete { .. }));
    assert_error(with_headers(n + 1).as_bytes(), 431, HttpErrorCode::HeadersTooLarge);
    // More than the stack slots are capped, not a panic.
    let huge = Limits { max_headers: 10_000, ..Limits::default() };
    let e = error_with(with_headers(Limits::HEADER_SLOTS + 1).as_bytes(), &huge);
    assert_eq!(e.status, 431);
    let zero = Limits { max_headers: 0, ..Limits::default() };
    assert!(matches!(parse_request(b"GET / HTTP/1.1\r\n\r\n", &zero), ParseOutcome::Complete { .. }));
    assert_eq!(error_with(b"GET / HTTP/1.1\r\nA: b\r\n\r\n", &zero).status, 431);
}

#[test]
fn malformed_requests_are_400() {
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n: novalue\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\rX: a\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\n\r\n",
        b"GET / HTTX/1.1\r\n\r\n",
        b"GET / HTTP/1.x\r\n\r\n",
        b"GET / HTTP/1.10\r\n\r\n",
        b"GET / http/1.1\r\n\r\n",
        b"GET / HTTP/11\r\n\r\n",
    ] {
        assert_error(bad, 400, HttpErrorCode::MalformedRequest);
    }
}

#[test]
fn other_versions_are_505() {
    for bad in [
        &b"GET / HTTP/2.0\r\n\r\n"[..],
        b"GET / HTTP/1.2\r\n\r\n",
        b"GET / HTTP/3\r\n\r\n",
        b"GET / HTTP/2",
        b"GET / HTTP/0.9\r\nHost: x\r\n\r\n",
        b"\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        assert_error(bad, 505, HttpErrorCode::VersionNotSupported);
    }
    // Cut short before the version is known: still partial.
    assert_eq!(parse_request(b"GET / HTTP/1.", &limits()), ParseOutcome::Partial);
}

// ---------------------------------------------------------------------------------------------
// Responses

#[test]
fn response_bytes_exactly() {
    let mut out = Vec::new();
    write_response(&mut out, 200, CONTENT_TYPE_TEXT, b"ok", true);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\
Connection: keep-alive\r\n\r\nok"
    );

    out.clear();
    write_success(&mut out, &serde_json::json!({"status": "ok"}), false);
    let body = r#"{"success":true,"data":{"status":"ok"},"error":null}"#;
    let expected = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);

    out.clear();
    write_error(&mut out, 400, 1004, "bad \"amount\"\n", true);
    let body = r#"{"success":false,"data":null,"error":{"code":1004,"message":"bad \"amount\"\n"}}"#;
    let expected = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
Connection: keep-alive\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn responses_append_and_frame() {
    let mut out = b"previous".to_vec();
    assert_eq!(write_success(&mut out, &[1, 2, 3], true), 200);
    write_http_error(&mut out, &HttpError::method_not_allowed("GET, POST"), true);
    write_response(&mut out, 204, CONTENT_TYPE_TEXT, b"", false);
    assert!(out.starts_with(b"previous"));

    // Parse the three responses back with httparse and check each body against its length.
    let mut rest = &out[b"previous".len()..];
    let mut seen = Vec::new();
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(rest).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial response"),
        };
        let find =
            |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.to_vec());
        let len: usize = String::from_utf8(find("content-length").unwrap()).unwrap().parse().unwrap();
        let body = rest[head..head + len].to_vec();
        seen.push((response.code.unwrap(), find("allow"), find("connection").unwrap(), body));
        rest = &rest[head + len..];
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].0, 200);
    assert_eq!(seen[0].3, br#"{"success":true,"data":[1,2,3],"error":null}"#);
    assert_eq!(seen[1].0, 405);
    assert_eq!(seen[1].1.as_deref(), Some(&b"GET, POST"[..]));
    let envelope: serde_json::Value = serde_json::from_slice(&seen[1].3).unwrap();
    assert_eq!(envelope["success"], false);
    assert_eq!(envelope["data"], serde_json::Value::Null);
    assert_eq!(envelope["error"]["code"], 9007);
    assert_eq!(seen[2], (204, None, b"close".to_vec(), Vec::new()));
}

#[test]
fn success_that_fails_to_serialize_is_500() {
    let mut out = b"keep".to_vec();
    let mut map = std::collections::BTreeMap::new();
    map.insert((1u8, 2u8), 3u8); // tuple keys are not JSON object keys
    assert_eq!(write_success(&mut out, &map, true), 500);
    assert!(out.starts_with(b"keepHTTP/1.1 500 Internal Server Error\r\n"));
    let body_start = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let envelope: serde_json::Value = serde_json::from_slice(&out[body_start..]).unwrap();
    assert_eq!(envelope["error"]["code"], 9010);
}

#[test]
fn status_lines() {
    for kind in HttpErrorCode::ALL {
        assert!(!reason_phrase(kind.status()).is_empty(), "{kind:?}");
    }
    assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
    assert_eq!(reason_phrase(299), "");
    let mut out = Vec::new();
    write_response(&mut out, 299, CONTENT_TYPE_TEXT, b"", true);
    assert!(out.starts_with(b"HTTP/1.1 299 \r\n"));
    out.clear();
    write_response(&mut out, 42, CONTENT_TYPE_TEXT, b"", true);
    assert!(out.starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
    out.clear();
    write_response_with_headers(&mut out, 200, CONTENT_TYPE_PROMETHEUS, &[("X-A", "1"), ("X-B", "2")], b"m 1\n", true);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\n\
Connection: keep-alive\r\nX-A: 1\r\nX-B: 2\r\n\r\nm 1\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Error table

#[test]
fn error_table_is_stable() {
    let expected: &[(HttpErrorCode, u32, u16)] = &[
        (HttpErrorCode::MalformedRequest, 9001, 400),
        (HttpErrorCode::InvalidContentLength, 9002, 400),
        (HttpErrorCode::InvalidPathParameter, 9003, 400),
        (HttpErrorCode::InvalidQueryParameter, 9004, 400),
        (HttpErrorCode::InvalidBody, 9005, 400),
        (HttpErrorCode::NotFound, 9006, 404),
        (HttpErrorCode::MethodNotAllowed, 9007, 405),
        (HttpErrorCode::PayloadTooLarge, 9008, 413),
        (HttpErrorCode::HeadersTooLarge, 9009, 431),
        (HttpErrorCode::InternalError, 9010, 500),
        (HttpErrorCode::NotImplemented, 9011, 501),
        (HttpErrorCode::VersionNotSupported, 9012, 505),
        (HttpErrorCode::StorageFailed, 9013, 503),
        (HttpErrorCode::TooManyConnections, 9014, 503),
        (HttpErrorCode::TooManyRequests, 9015, 429),
        (HttpErrorCode::SettlementRunning, 9016, 409),
        (HttpErrorCode::TooManyUserConnections, 9017, 429),
        (HttpErrorCode::MissingToken, 9201, 401),
        (HttpErrorCode::InvalidToken, 9202, 401),
        (HttpErrorCode::TokenExpired, 9203, 401),
        (HttpErrorCode::AdminOnly, 9204, 403),
        (HttpErrorCode::UserExists, 9205, 409),
        (HttpErrorCode::LoginFailed, 9206, 401),
        (HttpErrorCode::UserNotFound, 9207, 404),
    ];
    assert_eq!(HttpErrorCode::ALL.len(), expected.len());
    for (&kind, &(k, code, status)) in HttpErrorCode::ALL.iter().zip(expected) {
        assert_eq!((kind, kind.code(), kind.status()), (k, code, status));
        assert_eq!(HttpErrorCode::from_code(code), Some(kind));
        assert!(!kind.message().is_empty());
        let e = HttpError::new(kind);
        assert_eq!((e.status, e.code, e.message, e.allow, e.kind()), (status, code, kind.message(), None, Some(kind)));
        assert_eq!(HttpError::from(kind), e);
    }
    assert_eq!(HttpErrorCode::from_code(9000), None);
    let reject = HttpError::reject(crate::domain::risk::RejectCode::InvalidAccountId, 400);
    assert_eq!((reject.status, reject.code, reject.kind()), (400, 1006, None));
    assert_eq!(reject.to_string(), "400 (1006): account id must be 1..=31 bytes");
}

// ---------------------------------------------------------------------------------------------
// Routing

#[track_caller]
fn ok(method: Method, target: &str) -> Route {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    route(method, path, query).unwrap_or_else(|e| panic!("{method:?} {target}: {e:?}"))
}

#[track_caller]
fn err(method: Method, target: &str) -> HttpError {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match route(method, path, query) {
        Ok(r) => panic!("{method:?} {target}: expected an error, got {r:?}"),
        Err(e) => e,
    }
}

#[test]
fn every_route() {
    use Method::{Get, Post};
    let cases: Vec<(Method, &str, Route)> = vec![
        (Get, "/health", Route::Health),
        (Get, "/metrics", Route::Metrics),
        (Post, "/api/account/open", Route::OpenAccount),
        (Get, "/api/account/alice", Route::Account { account_id: account("alice") }),
        (Post, "/api/account/deposit", Route::Deposit),
        (Post, "/api/account/withdraw", Route::Withdraw),
        (Post, "/api/order/submit", Route::SubmitOrder),
        (Post, "/api/order/cancel", Route::CancelOrder),
        (Post, "/api/order/modify", Route::ModifyOrder),
        (Get, "/api/order/42", Route::Order { order_id: order("42") }),
        (Get, "/api/order/user", Route::Order { order_id: order("user") }),
        (Get, "/api/order/user/bob", Route::UserOrders { user_id: account("bob") }),
        (Get, "/api/position/bob", Route::Positions { user_id: account("bob") }),
        (Get, "/api/trades/user/bob", Route::UserTrades { user_id: account("bob") }),
        (Get, "/api/market/instruments", Route::Instruments),
        (Get, "/api/market/orderbook/cu2501", Route::OrderBook { instrument_id: instrument("cu2501"), depth: 5 }),
        (
            Get,
            "/api/market/orderbook/SHFE.cu2501?depth=50",
            Route::OrderBook { instrument_id: instrument("SHFE.cu2501"), depth: 50 },
        ),
        (Get, "/api/market/tick/IF2501", Route::Tick { instrument_id: instrument("IF2501") }),
        (Get, "/api/market/trades/IF2501", Route::MarketTrades { instrument_id: instrument("IF2501"), limit: 50 }),
        (
            Get,
            "/api/market/trades/IF2501?limit=1000",
            Route::MarketTrades { instrument_id: instrument("IF2501"), limit: 1000 },
        ),
        (
            Get,
            "/api/market/kline/IF2501",
            Route::Kline { instrument_id: instrument("IF2501"), period: KlinePeriod::M1, count: 200 },
        ),
        (
            Get,
            "/api/market/kline/IF2501?period=5m&count=2000",
            Route::Kline { instrument_id: instrument("IF2501"), period: KlinePeriod::M5, count: 2000 },
        ),
        // GET of the action paths reads the account or order with that id.
        (Get, "/api/account/open", Route::Account { account_id: account("open") }),
        (Get, "/api/account/deposit", Route::Account { account_id: account("deposit") }),
        (Get, "/api/account/withdraw", Route::Account { account_id: account("withdraw") }),
        (Get, "/api/order/submit", Route::Order { order_id: order("submit") }),
        (Get, "/api/order/cancel", Route::Order { order_id: order("cancel") }),
        (Get, "/api/order/modify", Route::Order { order_id: order("modify") }),
    ];
    let mut patterns = std::collections::BTreeSet::new();
    for (method, target, expected) in cases {
        let got = ok(method, target);
        assert_eq!(got, expected, "{method:?} {target}");
        assert!(got.pattern().starts_with(method.as_str()));
        patterns.insert(got.pattern());
    }
    assert_eq!(patterns.len(), 18, "every Route variant is covered");
}

#[test]
fn wrong_method_is_405_with_allow() {
    use Method::{Delete, Get, Head, Options, Other, Post, Put};
    let get_only = [
        "/health",
        "/metrics",
        "/api/account/alice",
        "/api/order/42",
        "/api/order/user/bob",
        "/api/position/bob",
        "/api/trades/user/bob",
        "/api/market/instruments",
        "/api/market/orderbook/cu2501",
        "/api/market/tick/cu2501",
        "/api/market/trades/cu2501",
        "/api/market/kline/cu2501",
    ];
    for path in get_only {
        for method in [Post, Put, Delete, Head, Options, Other] {
            let e = err(method, path);
            assert_eq!((e.status, e.code, e.allow), (405, 9007, Some("GET")), "{method:?} {path}");
        }
    }
    let get_or_post = [
        "/api/account/open",
        "/api/account/deposit",
        "/api/account/withdraw",
        "/api/order/submit",
        "/api/order/cancel",
        "/api/order/modify",
    ];
    for path in get_or_post {
        for method in [Put, Delete, Head, Options, Other] {
            let e = err(method, path);
            assert_eq!((e.status, e.allow), (405, Some("GET, POST")), "{method:?} {path}");
        }
        assert!(route(Get, path, "").is_ok() && route(Post, path, "").is_ok());
    }
    // The method is checked before the parameters.
    assert_eq!(err(Post, "/api/market/orderbook/cu2501?depth=0").status, 405);
    assert_eq!(err(Delete, &format!("/api/account/{}", "a".repeat(40))).status, 405);
}

#[test]
fn unknown_paths_are_404() {
    for path in [
        "",
        "/",
        "*",
        "health",
        "/health/",
        "//health",
        "/HEALTH",
        "/api",
        "/api/",
        "/api/account",
        "/api/account/",
        "/api/account/alice/extra",
        "/api/order/",
        "/api/order/user/",
        "/api/position",
        "/api/position/",
        "/api/trades/bob",
        "/api/trades/user/",
        "/api/market",
        "/api/market/instruments/x",
        "/api/market/orderbook",
        "/api/market/orderbook/",
        "/api/market/orderbook/cu2501/5",
        "/api/market/tick/",
        "/api/market/unknown/cu2501",
        "/api/%61ccount/alice",
        "/a/b/c/d/e/f/g",
        "/api/auth/logout",
        "/api/user/bob/account",
        "/api/user//accounts",
        "/api/user/bob/account/create/x",
    ] {
        for method in [Method::Get, Method::Post] {
            let e = err(method, path);
            assert_eq!((e.status, e.code, e.allow), (404, 9006, None), "{method:?} {path:?}");
        }
    }
}

#[test]
fn user_routes_and_who_may_call_them() {
    assert_eq!(ok(Method::Post, "/api/auth/register"), Route::Register);
    assert_eq!(ok(Method::Post, "/api/auth/login"), Route::Login);
    assert_eq!(err(Method::Get, "/api/auth/login").allow, Some("POST"));
    let bob = AccountId::new("bob").unwrap();
    assert_eq!(ok(Method::Post, "/api/user/bob/account/create"), Route::CreateUserAccount { user_id: bob });
    assert_eq!(err(Method::Get, "/api/user/bob/account/create").allow, Some("POST"));
    assert_eq!(ok(Method::Get, "/api/user/bob/accounts"), Route::UserAccounts { user_id: bob });
    assert_eq!(err(Method::Post, "/api/user/bob/accounts").allow, Some("GET"));
    assert_eq!(err(Method::Get, &format!("/api/user/{}/accounts", "u".repeat(32))).code, 1006);
    use super::route::Access;
    for (target, method, access) in [
        ("/health", Method::Get, Access::Public),
        ("/metrics", Method::Get, Access::Public),
        ("/api/market/tick/cu2501", Method::Get, Access::Public),
        ("/api/history/ticks/cu2501", Method::Get, Access::Public),
        ("/api/auth/login", Method::Post, Access::Public),
        ("/api/account/alice", Method::Get, Access::User),
        ("/api/order/submit", Method::Post, Access::User),
        ("/api/history/orders/alice", Method::Get, Access::User),
        ("/api/user/bob/accounts", Method::Get, Access::User),
        ("/admin/state", Method::Get, Access::Admin),
        ("/admin/checkpoint", Method::Post, Access::Admin),
    ] {
        assert_eq!(ok(method, target).access(), access, "{target}");
    }
}

#[test]
fn path_parameters_are_decoded_and_checked() {
    assert_eq!(ok(Method::Get, "/api/account/al%69ce"), Route::Account { account_id: account("alice") });
    assert_eq!(ok(Method::Get, "/api/account/%e4%B8%AD"), Route::Account { account_id: account("中") });
    assert_eq!(ok(Method::Get, "/api/account/a+b"), Route::Account { account_id: account("a+b") });
    assert_eq!(ok(Method::Get, "/api/account/a%2Fb"), Route::Account { account_id: account("a/b") });
    // Length limits count decoded bytes.
    let a31 = "a".repeat(31);
    assert_eq!(ok(Method::Get, &format!("/api/position/{a31}")), Route::Positions { user_id: account(&a31) });
    assert_eq!(
        ok(Method::Get, &format!("/api/account/{}", "%61".repeat(31))),
        Route::Account { account_id: account(&a31) }
    );
    for path in ["/api/account/", "/api/order/user/", "/api/position/", "/api/trades/user/"] {
        let e = err(Method::Get, &format!("{path}{}", "a".repeat(32)));
        assert_eq!((e.status, e.code), (400, 1006), "{path}");
        assert_eq!(e.message, "account id must be 1..=31 bytes");
    }
    let a63 = "o".repeat(63);
    assert_eq!(ok(Method::Get, &format!("/api/order/{a63}")), Route::Order { order_id: order(&a63) });
    let e = err(Method::Get, &format!("/api/order/{}", "o".repeat(64)));
    assert_eq!((e.status, e.code), (400, 2015));
    for path in ["orderbook", "tick", "trades", "kline"] {
        let e = err(Method::Get, &format!("/api/market/{path}/{}", "x".repeat(32)));
        assert_eq!((e.status, e.code, e.message), (400, 9003, "instrument id must be 1..=31 bytes"));
    }
    // Bad escapes, non-UTF-8, and an id that decodes to nothing.
    for bad in ["%", "%4", "%zz", "a%g1", "%ff", "%C3%28"] {
        let e = err(Method::Get, &format!("/api/account/{bad}"));
        assert_eq!((e.status, e.code), (400, 9003), "{bad}");
    }
}

#[test]
fn query_parameters() {
    let book = |q: &str| route(Method::Get, "/api/market/orderbook/cu2501", q);
    assert_eq!(book("depth=1").unwrap(), Route::OrderBook { instrument_id: instrument("cu2501"), depth: 1 });
    assert_eq!(book("x=1&depth=%33&y").unwrap(), Route::OrderBook { instrument_id: instrument("cu2501"), depth: 3 });
    assert_eq!(book("&&depth=7&").unwrap(), Route::OrderBook { instrument_id: instrument("cu2501"), depth: 7 });
    assert_eq!(book("Depth=9").unwrap(), Route::OrderBook { instrument_id: instrument("cu2501"), depth: 5 });
    for bad in ["depth=0", "depth=51", "depth=", "depth", "depth=abc", "depth=+5", "depth=-1", "depth=5.0", "depth=%zz"]
    {
        let e = book(bad).unwrap_err();
        assert_eq!((e.status, e.code), (400, 9004), "{bad}");
        assert_eq!(e.message, "query parameter depth must be an integer in 1..=50");
    }
    let e = book("depth=5&depth=5").unwrap_err();
    assert_eq!((e.status, e.code, e.message), (400, 9004, "query parameter depth is given more than once"));

    let trades = |q: &str| route(Method::Get, "/api/market/trades/cu2501", q);
    assert!(matches!(trades("limit=1"), Ok(Route::MarketTrades { limit: 1, .. })));
    for bad in ["limit=0", "limit=1001", "limit=99999999999"] {
        let e = trades(bad).unwrap_err();
        assert_eq!((e.status, e.message), (400, "query parameter limit must be an integer in 1..=1000"));
    }
    assert!(trades("depth=0").is_ok(), "other routes' keys are ignored");

    let kline = |q: &str| route(Method::Get, "/api/market/kline/cu2501", q);
    assert!(matches!(kline("count=1"), Ok(Route::Kline { count: 1, period: KlinePeriod::M1, .. })));
    assert!(kline("count=2001").unwrap_err().message.contains("count"));
    assert!(kline("count=0").unwrap_err().message.contains("1..=2000"));
    for (text, period) in [
        ("3", KlinePeriod::S3),
        ("3s", KlinePeriod::S3),
        ("60", KlinePeriod::M1),
        ("060", KlinePeriod::M1),
        ("1m", KlinePeriod::M1),
        ("300", KlinePeriod::M5),
        ("5m", KlinePeriod::M5),
        ("900", KlinePeriod::M15),
        ("15m", KlinePeriod::M15),
        ("1800", KlinePeriod::M30),
        ("30m", KlinePeriod::M30),
        ("3600", KlinePeriod::H1),
        ("1h", KlinePeriod::H1),
        ("86400", KlinePeriod::D1),
        ("1d", KlinePeriod::D1),
    ] {
        let got = kline(&format!("period={text}&count=10")).unwrap();
        assert_eq!(got, Route::Kline { instrument_id: instrument("cu2501"), period, count: 10 }, "{text}");
    }
    for bad in ["0", "120", "1M", "1H", "60000000000", "", "1w"] {
        let e = kline(&format!("period={bad}")).unwrap_err();
        assert_eq!((e.status, e.code), (400, 9004), "{bad}");
        assert!(e.message.starts_with("query parameter period must be one of"));
    }
    assert!(kline("period=1m&period=1m").unwrap_err().message.contains("period is given more than once"));
}

#[test]
fn kline_periods_match_the_engine() {
    assert_eq!(KlinePeriod::ALL.len(), KLINE_PERIODS_NS.len());
    for (i, p) in KlinePeriod::ALL.into_iter().enumerate() {
        assert_eq!(p.index(), i);
        assert_eq!(p.nanos(), i64::from(p.seconds()) * 1_000_000_000);
        assert_eq!(KlinePeriod::parse(p.name()), Some(p));
        assert_eq!(KlinePeriod::parse(&p.seconds().to_string()), Some(p));
    }
    assert_eq!(DEFAULT_KLINE_PERIOD.seconds(), 60);
}

#[test]
fn parse_then_route() {
    let (request, _) = complete(b"GET /api/market/kline/SHFE.cu2501?period=1h&count=3 HTTP/1.1\r\n\r\n");
    assert_eq!(
        route(request.method, request.path, request.query),
        Ok(Route::Kline { instrument_id: instrument("SHFE.cu2501"), period: KlinePeriod::H1, count: 3 })
    );
}

// ---------------------------------------------------------------------------------------------
// Properties: no input panics, and every outcome is consistent.

fn check_outcome(buf: &[u8], limits: &Limits) {
    match parse_request(buf, limits) {
        ParseOutcome::Complete { request, consumed } => {
            assert!(consumed > 0 && consumed <= buf.len());
            assert!(consumed <= limits.max_header_bytes + limits.max_body_bytes);
            assert!(request.body.len() <= limits.max_body_bytes);
            assert_eq!(&buf[consumed - request.body.len()..consumed], request.body);
            let _ = route(request.method, request.path, request.query);
        }
        ParseOutcome::Partial => assert!(buf.len() <= limits.max_header_bytes + limits.max_body_bytes),
        ParseOutcome::Error(e) => {
            let kind = e.kind().expect("the parser answers with the 9xxx table");
            assert_eq!(kind.status(), e.status);
            assert!(e.allow.is_none());
        }
    }
}

const SEEDS: &[&[u8]] = &[
    GET,
    POST,
    b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /api/account/deposit HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
    b"GET /api/market/kline/cu2501?period=1m&count=10 HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
];

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn apply(buf: &mut Vec<u8>, mutation: &Mutation) {
    match *mutation {
        Mutation::Set(i, b) if !buf.is_empty() => {
            let i = i % buf.len();
            buf[i] = b;
        }
        Mutation::Insert(i, b) => {
            let i = i % (buf.len() + 1);
            buf.insert(i, b);
        }
        Mutation::Remove(i) if !buf.is_empty() => {
            let i = i % buf.len();
            buf.remove(i);
        }
        Mutation::Truncate(n) => buf.truncate(n % (buf.len() + 1)),
        Mutation::Duplicate(start, len) if !buf.is_empty() => {
            let start = start % buf.len();
            let end = (start + len % 64).min(buf.len());
            let copy = buf[start..end].to_vec();
            buf.splice(start..start, copy);
        }
        _ => {}
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        Just(b'\r'),
        Just(b'\n'),
        Just(b' '),
        Just(b':'),
        Just(b'/'),
        Just(b'%'),
        Just(b'?'),
        Just(b'0'),
        Just(b'9'),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(s, l)| Mutation::Duplicate(s, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_outcome(&buf, &Limits::default());
        let tiny = Limits { max_header_bytes: 64, max_headers: 2, max_body_bytes: 8 };
        check_outcome(&buf, &tiny);
    }

    #[test]
    fn mutated_requests_never_panic(
        seed in 0..SEEDS.len(),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let mut buf = SEEDS[seed].to_vec();
        for m in &mutations {
            apply(&mut buf, m);
        }
        check_outcome(&buf, &Limits::default());
        let tiny = Limits { max_header_bytes: 48, max_headers: 1, max_body_bytes: 3 };
        check_outcome(&buf, &tiny);
    }

    #[test]
    fn routing_never_panics(
        method in prop_oneof![Just(Method::Get), Just(Method::Post), Just(Method::Put), Just(Method::Other)],
        path in "(/(api|market|account|order|user|orderbook|kline|trades|tick|[a-z%0-9A-F.]{0,40})){0,6}",
        query in "[a-z=&%0-9A-F+]{0,40}",
    ) {
        match route(method, &path, &query) {
            Ok(r) => prop_assert!(r.pattern().starts_with(method.as_str())),
            Err(e) => prop_assert!(matches!(e.status, 400 | 404 | 405)),
        }
    }

    #[test]
    fn generated_requests_split_anywhere(
        path in "/[a-zA-Z0-9%._~-]{0,30}",
        query in "[a-z0-9=&]{0,20}",
        body in proptest::collection::vec(any::<u8>(), 0..40),
        close in any::<bool>(),
        split in any::<usize>(),
    ) {
        let target = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
        let connection = if close { "close" } else { "keep-alive" };
        let mut buf = format!(
            "POST {target} HTTP/1.1\r\nHost: h\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        buf.extend_from_slice(&body);
        let full = parse_request(&buf, &Limits::default());
        let ParseOutcome::Complete { request, consumed } = full else {
            return Err(TestCaseError::fail(format!("{full:?}")));
        };
        prop_assert_eq!(consumed, buf.len());
        prop_assert_eq!(request.path, path.as_str());
        prop_assert_eq!(request.query, query.as_str());
        prop_assert_eq!(request.body, &body[..]);
        prop_assert_eq!(request.keep_alive, !close);
        let split = split % buf.len();
        prop_assert_eq!(parse_request(&buf[..split], &Limits::default()), ParseOutcome::Partial);
    }
}
