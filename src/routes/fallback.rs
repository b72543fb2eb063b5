//! 404 and 405 in OpenAI's envelope.

use axum::http::{Method, Uri};

use crate::error::GatewayError;

/// No route matched.
pub async fn not_found(method: Method, uri: Uri) -> GatewayError {
    GatewayError::NotFound {
        method: method.to_string(),
        path: shown_path(&uri),
    }
}

/// The path matched, the method did not.
pub async fn method_not_allowed(method: Method, uri: Uri) -> GatewayError {
    GatewayError::MethodNotAllowed {
        method: method.to_string(),
        path: shown_path(&uri),
    }
}

/// The path as echoed in a message: without the query (it may carry secrets) and bounded.
fn shown_path(uri: &Uri) -> String {
    uri.path().chars().take(200).collect()
}
