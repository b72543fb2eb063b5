//! Any other `/v1/*` route (files, batches, audio, moderations, ...): forwarded with method,
//! path, query and body kept. JSON bodies are read (to check the model); multipart uploads are
//! streamed through without buffering, bounded by `server.upload_limit_bytes`.

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;
use crate::extract::read_limited;
use crate::middleware::content_type::media_type;
use crate::pipeline::{self, CallBody, ModelCall, ModelRoute, Principal};
use crate::state::AppState;

/// The handler.
pub async fn forward(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    request: Request,
) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let upstream_path = uri
        .path()
        .strip_prefix("/v1/")
        .unwrap_or_default()
        .to_owned();
    let headers = request.headers().clone();
    let body = match body_of(&state, request).await {
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
    };
    pipeline::handle(&state, &principal, call).await
}

async fn body_of(state: &AppState, request: Request) -> Result<CallBody, GatewayError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    if declared.unwrap_or(0) == 0 && !chunked {
        return Ok(CallBody::Empty);
    }
    if media_type(&request).is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
        let bytes = read_limited(request, state.config.server.body_limit_bytes).await?;
        return Ok(if bytes.is_empty() {
            CallBody::Empty
        } else {
            CallBody::Json(bytes)
        });
    }
    let limit = state.config.server.upload_limit_bytes;
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit_bytes: limit });
    }
    let limited = http_body_util::Limited::new(request.into_body(), limit);
    Ok(CallBody::Streamed(axum::body::Body::new(limited)))
}
