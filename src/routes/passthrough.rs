//! The rest of OpenAI's API (files, batches, audio, moderations, ...): forwarded with method,
//! path, query and body kept, but only for the operations in the allowlist
//! (`openai::operations`), only along a path checked segment by segment (`openai::path`),
//! and only with a body of a kind the operation takes. JSON bodies are read (to check the
//! model); multipart uploads are streamed through without buffering, bounded by
//! `server.upload_limit_bytes`.

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;
use crate::extract::{Paced, read_limited};
use crate::middleware::content_type::media_type;
use crate::openai::operations::{BodyKinds, NotForwarded};
use crate::openai::path::ApiPath;
use crate::pipeline::{self, CallBody, ModelCall, ModelRoute, Principal};
use crate::records::LeftBehind;
use crate::state::AppState;

/// The handler.
pub async fn forward(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    request: Request,
) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let not_found = || {
        GatewayError::NotFound {
            method: method.to_string(),
            path: uri.path().to_owned(),
        }
        .into_response()
    };
    // The caller's path is data: checked segment by segment, never resolved against the base.
    let Ok(upstream_path) = ApiPath::parse(uri.path().strip_prefix("/v1/").unwrap_or_default())
    else {
        return not_found();
    };
    let operation = match state.operations.find(&method, &upstream_path) {
        Ok(operation) => operation,
        Err(NotForwarded::UnknownPath) => return not_found(),
        Err(NotForwarded::Method(allowed)) => return method_not_allowed(&method, &uri, &allowed),
    };
    let headers = request.headers().clone();
    let left_behind = request.extensions().get::<LeftBehind>().cloned();
    let body = match body_of(&state, request, operation.body).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let call = ModelCall {
        route: ModelRoute::Passthrough,
        method,
        upstream_path,
        query: uri.query().map(str::to_owned),
        headers,
        body,
        operation: Some(operation.clone()),
        left_behind,
    };
    pipeline::handle(&state, &principal, call).await
}

fn method_not_allowed(
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    allowed: &[axum::http::Method],
) -> Response {
    let mut response = GatewayError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
    .into_response();
    let list = allowed
        .iter()
        .map(axum::http::Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&list) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// The body, read as the operation takes it: JSON whole (so the model can be checked), a
/// multipart upload streamed, nothing when there is none. A body of a kind the operation
/// does not take is a 415, never forwarded unread.
async fn body_of(
    state: &AppState,
    request: Request,
    takes: BodyKinds,
) -> Result<CallBody, GatewayError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    if declared.unwrap_or(0) == 0 && !chunked {
        return Ok(CallBody::Empty);
    }
    let media = media_type(&request).map(str::to_ascii_lowercase);
    let expected = if takes.json {
        "application/json"
    } else {
        "multipart/form-data"
    };
    match media.as_deref() {
        Some("application/json") if takes.json => {
            let bytes = read_limited(request, &state.config.server).await?;
            Ok(if bytes.is_empty() {
                CallBody::Empty
            } else {
                CallBody::Json(bytes)
            })
        }
        Some("multipart/form-data") if takes.multipart => {
            let limit = state.config.server.upload_limit_bytes;
            if declared.is_some_and(|n| n > limit as u64) {
                return Err(GatewayError::PayloadTooLarge { limit_bytes: limit });
            }
            let paced = Paced::new(request.into_body(), &state.config.server);
            let limited = http_body_util::Limited::new(paced, limit);
            Ok(CallBody::Streamed(axum::body::Body::new(limited)))
        }
        _ => Err(GatewayError::UnsupportedMediaType { expected }),
    }
}
