//! What authentication costs a request, beside what the server does for every request anyway.
//!
//! - Baseline: parsing and routing one `POST /api/order/submit` with its headers and JSON body
//!   (`parse_request` + `route` + the body decode), the per-request HTTP work of every shard.
//! - Token check: reading the bearer header and verifying the token (hex decode, keyed
//!   BLAKE2b-256, expiry), which every protected request adds.
//! - Login: one Argon2id verify (what `POST /api/auth/login` costs, on a blocking thread).
//!
//! Run: `cargo bench --bench auth`. Knob: `AUTH_BENCH_ITERS` (200,000).

use qaexchange::domain::name::{AccountId, ClientOrderId};
use qaexchange::server::auth::{bearer, Claims, TokenKey};
use qaexchange::server::body;
use qaexchange::server::credentials::{hash_password, verify_password};
use qaexchange::server::http::{parse_request, route, Header, Limits, ParseOutcome};
use std::hint::black_box;
use std::time::Instant;

fn per_op_ns(iters: usize, mut op: impl FnMut()) -> f64 {
    // Warm up, then take the best of three passes (the machine is shared and noisy).
    for _ in 0..iters / 10 {
        op();
    }
    (0..3)
        .map(|_| {
            let began = Instant::now();
            for _ in 0..iters {
                op();
            }
            began.elapsed().as_nanos() as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let iters: usize = std::env::var("AUTH_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let key = TokenKey::random();
    let claims = Claims { user_id: AccountId::new("alice").unwrap(), admin: false, expires_at_s: u64::MAX };
    let token = key.mint(&claims);
    let body = r#"{"account_id":"alice-main","client_order_id":"c-000001","instrument_id":"SR501","direction":"BUY","offset":"OPEN","limit_price":5000.0,"volume":1}"#;
    let request = format!(
        "POST /api/order/submit HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let bytes = request.as_bytes();
    let limits = Limits::default();
    let auto = || ClientOrderId::new("auto").unwrap();

    let http_ns = per_op_ns(iters, || {
        let ParseOutcome::Complete { request, .. } = parse_request(black_box(bytes), &limits) else {
            panic!("the request parses")
        };
        let target = route(request.method, request.path, request.query).expect("routes");
        black_box(target);
        black_box(body::submit(request.body, auto).is_ok());
    });
    let ParseOutcome::Complete { request: parsed, .. } = parse_request(bytes, &limits) else { panic!("parses") };
    let header = parsed.header(Header::Authorization);
    let token_ns = per_op_ns(iters, || {
        let token = bearer(black_box(header)).expect("bearer");
        black_box(key.verify(token, 1).expect("valid"));
    });

    let phc = hash_password("a password of some length").expect("hash");
    let login_iters = 20;
    let began = Instant::now();
    for _ in 0..login_iters {
        assert!(verify_password(black_box("a password of some length"), &phc));
    }
    let login_ms = began.elapsed().as_secs_f64() * 1e3 / f64::from(login_iters);

    println!("token length: {} bytes", token.len());
    println!("baseline: parse + route + decode an order request: {http_ns:.0} ns");
    println!("token check (bearer + verify): {token_ns:.0} ns = {:.2}x the baseline", token_ns / http_ns);
    println!("login (one Argon2id verify, default parameters): {login_ms:.1} ms");
}
