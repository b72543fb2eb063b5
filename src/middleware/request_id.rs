//! `x-request-id`: every request gets one, every response carries it.
//!
//! A caller's id is kept when it is well-formed (1–128 characters of `[A-Za-z0-9._:-]`), so a
//! trace can span the caller and Tollgate; anything else is replaced by a fresh UUID, so that
//! header injection or a megabyte of id cannot reach our logs. The id is also made available to
//! code deeper in the request (the 500 message, the audit record) through a task-local.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The header name, as OpenAI uses it.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request's id, as a request extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    /// The id as text (always ASCII by construction).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

tokio::task_local! {
    static CURRENT: RequestId;
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(|id| id.as_str().to_owned()).ok()
}

/// Whether a caller-supplied id may be kept.
pub fn is_well_formed(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The layer: assigns the id, runs the request inside its scope, stamps the response.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = match request.headers().get(REQUEST_ID_HEADER) {
        Some(value) if is_well_formed(value.as_bytes()) => value.clone(),
        _ => fresh(),
    };
    request.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
    let request_id = RequestId(id.clone());
    request.extensions_mut().insert(request_id.clone());
    let mut response = CURRENT.scope(request_id, next.run(request)).await;
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    response
}

fn fresh() -> HeaderValue {
    let mut buffer = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().simple().encode_lower(&mut buffer);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tidy_ids_are_kept() {
        assert!(is_well_formed(b"req_123-abc.def:1"));
        assert!(!is_well_formed(b""));
        assert!(!is_well_formed(b"has space"));
        assert!(!is_well_formed(b"new\nline"));
        assert!(!is_well_formed(&[b'a'; 129]));
    }
}
