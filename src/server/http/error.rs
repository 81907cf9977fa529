//! HTTP-level errors: one table of stable numeric codes (9xxx) with their HTTP status and a
//! default message, and [`HttpError`], the value the parser and the router return.
//!
//! The codes are part of the public API (docs/API.md lists them); never renumber. Engine reject
//! codes (1xxx-4xxx, `crate::domain::risk::RejectCode`) can be carried by an [`HttpError`] too:
//! the router uses 1006 and 2015 for account and order ids of the wrong length.

use crate::domain::risk::RejectCode;

macro_rules! http_error_codes {
    ($($variant:ident = $code:literal, $status:literal, $message:literal;)+) => {
        /// A failure of the HTTP layer itself (framing, limits, routing, query parameters).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum HttpErrorCode { $($variant),+ }

        impl HttpErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [HttpErrorCode] = &[$(HttpErrorCode::$variant),+];
            /// The stable number (9xxx) sent as `error.code` in the JSON envelope.
            pub const fn code(self) -> u32 {
                match self { $(HttpErrorCode::$variant => $code),+ }
            }
            /// The HTTP status of the response.
            pub const fn status(self) -> u16 {
                match self { $(HttpErrorCode::$variant => $status),+ }
            }
            /// The default English message (an [`HttpError`] may carry a more precise one).
            pub const fn message(self) -> &'static str {
                match self { $(HttpErrorCode::$variant => $message),+ }
            }
            pub fn from_code(code: u32) -> Option<Self> {
                match code { $($code => Some(HttpErrorCode::$variant),)+ _ => None }
            }
        }
    };
}

http_error_codes! {
    MalformedRequest = 9001, 400, "malformed HTTP request";
    InvalidContentLength = 9002, 400, "Content-Length must be one decimal number";
    InvalidPathParameter = 9003, 400, "invalid path parameter";
    InvalidQueryParameter = 9004, 400, "invalid query parameter";
    InvalidBody = 9005, 400, "request body is not valid for this endpoint";
    NotFound = 9006, 404, "no such endpoint";
    MethodNotAllowed = 9007, 405, "method not allowed for this endpoint";
    PayloadTooLarge = 9008, 413, "request body too large";
    HeadersTooLarge = 9009, 431, "request headers too large";
    InternalError = 9010, 500, "internal server error";
    NotImplemented = 9011, 501, "Transfer-Encoding is not supported: send the body with Content-Length";
    VersionNotSupported = 9012, 505, "HTTP version not supported: use HTTP/1.1 or HTTP/1.0";
    StorageFailed = 9013, 503, "storage failed: the request was not made durable";
    TooManyConnections = 9014, 503, "too many connections on this shard";
    TooManyRequests = 9015, 429, "too many requests on this connection: slow down";
    SettlementRunning = 9016, 409, "daily settlement is running: trading resumes when it ends";
    TooManyUserConnections = 9017, 429, "too many connections for this user: close one first";
    MissingToken = 9201, 401, "authentication required: send Authorization: Bearer <token> from POST /api/auth/login";
    InvalidToken = 9202, 401, "invalid token: log in again";
    TokenExpired = 9203, 401, "token expired: log in again";
    AdminOnly = 9204, 403, "forbidden: this needs an admin";
    UserExists = 9205, 409, "user already exists";
    LoginFailed = 9206, 401, "wrong user name or password";
    UserNotFound = 9207, 404, "user not found";
}

/// An error answer: HTTP status, envelope code and message, and for 405 the `Allow` header.
///
/// All fields are `'static` or `Copy`, so building one never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpError {
    /// HTTP status of the response.
    pub status: u16,
    /// `error.code` of the envelope: a 9xxx [`HttpErrorCode`] or an engine reject code.
    pub code: u32,
    /// `error.message` of the envelope.
    pub message: &'static str,
    /// Value of the `Allow` header (405 only), e.g. `"POST"` or `"GET, POST"`.
    pub allow: Option<&'static str>,
}

impl HttpError {
    /// The error with the table's default message.
    pub const fn new(kind: HttpErrorCode) -> Self {
        Self::with_message(kind, kind.message())
    }

    /// The error with a more precise message (e.g. naming the bad query parameter).
    pub const fn with_message(kind: HttpErrorCode, message: &'static str) -> Self {
        Self { status: kind.status(), code: kind.code(), message, allow: None }
    }

    /// 405 with the methods the path accepts.
    pub const fn method_not_allowed(allow: &'static str) -> Self {
        let mut error = Self::new(HttpErrorCode::MethodNotAllowed);
        error.allow = Some(allow);
        error
    }

    /// An engine reject code answered with `status` (e.g. 1006 INVALID_ACCOUNT_ID with 400).
    pub fn reject(code: RejectCode, status: u16) -> Self {
        Self { status, code: code.code(), message: code.message(), allow: None }
    }

    /// The table entry of this error, None when it carries an engine reject code.
    pub fn kind(&self) -> Option<HttpErrorCode> {
        HttpErrorCode::from_code(self.code)
    }
}

impl From<HttpErrorCode> for HttpError {
    fn from(kind: HttpErrorCode) -> Self {
        Self::new(kind)
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for HttpError {}
