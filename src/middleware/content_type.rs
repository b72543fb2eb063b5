//! 415 for a request that carries a body without a content type we accept.
//!
//! JSON routes check for `application/json` in their extractor (`extract::ApiJson`); this layer
//! is the coarse net for everything (checked by the gate layer in `server::with_layers`): a body must be JSON or a multipart upload (the passthrough
//! routes forward file uploads). Bodyless requests (no `Content-Length` or 0, no chunked
//! transfer) pass, since SDKs send `POST .../cancel` without one.

use axum::extract::Request;
use axum::http::{Method, header};

use crate::error::GatewayError;

/// Media types a body may have.
const ACCEPTED: [&str; 3] = [
    "application/json",
    "multipart/form-data",
    "application/x-www-form-urlencoded",
];

/// The 415 for a request whose body is of a type no route takes; `None` lets it on.
pub fn refusal(request: &Request) -> Option<GatewayError> {
    (carries_body(request) && !has_accepted_type(request)).then_some(
        GatewayError::UnsupportedMediaType {
            expected: "application/json",
        },
    )
}

fn carries_body(request: &Request) -> bool {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return false;
    }
    let headers = request.headers();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING)
}

fn has_accepted_type(request: &Request) -> bool {
    media_type(request).is_some_and(|media| {
        ACCEPTED
            .iter()
            .any(|accepted| media.eq_ignore_ascii_case(accepted))
    })
}

/// The request's media type without parameters (`application/json; charset=utf-8` → `application/json`).
pub fn media_type(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or_default().trim())
}
