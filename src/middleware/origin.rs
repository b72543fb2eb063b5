//! The origin check: with a CORS allowlist configured, a request that names an `Origin` outside
//! it is refused (403), not merely left without CORS headers.
//!
//! CORS only stops a browser from *reading* an answer; the request itself would still run, and
//! spend money. Server-to-server callers send no `Origin` and pass. Without an allowlist there
//! is no browser access to allow, so nothing is checked.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, header};

use crate::error::GatewayError;

/// The allowed origins, shared by every request.
#[derive(Debug, Clone)]
pub struct AllowedOrigins(pub Arc<[HeaderValue]>);

/// The 403 for a browser origin outside the allowlist; `None` lets the request on.
pub fn refusal(allowed: &AllowedOrigins, request: &Request) -> Option<GatewayError> {
    let origin = request.headers().get(header::ORIGIN)?;
    (!allowed.0.is_empty() && !allowed.0.iter().any(|a| a == origin)).then(|| {
        GatewayError::PermissionDenied {
            message: "This origin is not allowed to call the gateway.".to_owned(),
        }
    })
}
