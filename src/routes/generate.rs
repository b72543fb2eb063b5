//! `POST /api/ai/generate`: the seeds' simple prompt API, kept with the seeds' shapes.
//!
//! Request `{prompt, model?, maxTokens?, temperature?, context?}` with the seeds' validation
//! (prompt 1–10,000 characters, maxTokens 1–4,000, temperature 0–2, context an object), sent
//! upstream as a one-message chat completion. Answer
//! `{success: true, data: {content, model, usage: {promptTokens, completionTokens, totalTokens},
//! metadata: {requestId, latency, timestamp}}}`. Errors are `{success: false, error, message,
//! details?}` with the error table's status. Two deliberate differences from the seed: any
//! model the key allows is accepted (the seed pinned two retired models), and an explicit
//! `temperature: 0` stays 0 (the seed's `|| 0.1` turned it into 0.1).

use crate::records::{CallFacts, LeftBehind};
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ErrorBody, GatewayError};
use crate::extract::{JsonBody, decode};
use crate::middleware::request_id::RequestId;
use crate::pipeline::{self, Principal};
use crate::state::AppState;

/// The seeds' request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest {
    prompt: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    context: Option<serde_json::Map<String, Value>>,
}

impl GenerateRequest {
    fn validate(&self) -> Result<(), GatewayError> {
        let length = self.prompt.chars().count();
        if !(1..=10_000).contains(&length) {
            return Err(GatewayError::invalid(
                "prompt must be 1 to 10000 characters",
                Some("prompt".to_owned()),
            ));
        }
        if self.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
            return Err(GatewayError::invalid(
                "model must not be empty",
                Some("model".to_owned()),
            ));
        }
        if self.max_tokens.is_some_and(|n| !(1..=4000).contains(&n)) {
            return Err(GatewayError::invalid(
                "maxTokens must be 1 to 4000",
                Some("maxTokens".to_owned()),
            ));
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(GatewayError::invalid(
                "temperature must be 0 to 2",
                Some("temperature".to_owned()),
            ));
        }
        let _ = &self.context;
        Ok(())
    }
}

/// The handler.
pub async fn generate(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    left_behind: Option<Extension<LeftBehind>>,
    headers: HeaderMap,
    body: JsonBody,
) -> Response {
    let started = Instant::now();
    let left_behind = left_behind.map(|Extension(slot)| slot);
    match answer(&state, &principal, headers, body, left_behind).await {
        Ok((content, model, usage, limit_headers, facts)) => {
            let mut response = Json(json!({
            "success": true,
            "data": {
                "content": content,
                "model": model,
                "usage": usage,
                "metadata": {
                    "requestId": request_id.as_str(),
                    "latency": started.elapsed().as_millis() as u64,
                    "timestamp": now_rfc3339(),
                },
            },
            }))
            .into_response();
            // The rate-limit, cost and cache headers of the chat call are this route's too.
            for (name, value) in &limit_headers {
                if name.as_str().starts_with("x-ratelimit-")
                    || name == "x-tollgate-cost-usd"
                    || name == "x-tollgate-cache"
                {
                    response.headers_mut().insert(name.clone(), value.clone());
                }
            }
            response.extensions_mut().insert(facts);
            response
        }
        Err(error) => error.into_response(),
    }
}

async fn answer(
    state: &AppState,
    principal: &Principal,
    headers: HeaderMap,
    body: JsonBody,
    left_behind: Option<LeftBehind>,
) -> Result<(String, String, Value, HeaderMap, CallFacts), GatewayError> {
    let request: GenerateRequest = decode(&body.0)?;
    request.validate()?;
    let defaults = &state.config.generate;
    let chat = json!({
        "model": request.model.as_deref().unwrap_or(&defaults.default_model),
        "messages": [{ "role": "user", "content": request.prompt }],
        "max_tokens": request.max_tokens.unwrap_or(defaults.default_max_tokens),
        "temperature": request.temperature.unwrap_or(defaults.default_temperature),
    });
    let chat = serde_json::to_vec(&chat).map_err(|e| GatewayError::Internal(e.to_string()))?;
    let (limit_headers, upstream, facts) =
        pipeline::complete_chat(state, principal, (headers, left_behind), chat.into()).await?;

    #[derive(Deserialize)]
    struct Completion {
        model: String,
        choices: Vec<Choice>,
        #[serde(default)]
        usage: Option<WireUsage>,
    }
    #[derive(Deserialize)]
    struct Choice {
        message: Message,
    }
    #[derive(Deserialize)]
    struct Message {
        #[serde(default)]
        content: Option<String>,
    }
    #[derive(Deserialize, Default)]
    struct WireUsage {
        prompt_tokens: u64,
        completion_tokens: u64,
        total_tokens: u64,
    }
    let completion: Completion =
        serde_json::from_slice(&upstream).map_err(|e| GatewayError::UpstreamFailed {
            detail: format!("unreadable chat completion: {e}"),
        })?;
    let content = completion
        .choices
        .into_iter()
        .next()
        .and_then(|c| c.message.content)
        .unwrap_or_default();
    let usage = completion.usage.unwrap_or_default();
    Ok((
        content,
        completion.model,
        json!({
            "promptTokens": usage.prompt_tokens,
            "completionTokens": usage.completion_tokens,
            "totalTokens": usage.total_tokens,
        }),
        limit_headers,
        facts,
    ))
}

/// Re-renders any error of this route (authentication included) in the seeds' shape.
pub async fn seed_error_shape(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let Some(error) = response.extensions().get::<Arc<ErrorBody>>().cloned() else {
        return response;
    };
    let status = response.status();
    let summary = match status.as_u16() {
        400 | 413 | 415 => "Invalid request",
        401 => "Unauthorized",
        403 => "Forbidden",
        429 => "Rate limit exceeded",
        502..=504 => "AI service unavailable",
        _ => "Internal server error",
    };
    let mut body = json!({ "success": false, "error": summary, "message": error.message });
    if let Some(param) = &error.param {
        body["details"] = json!([{ "path": [param], "message": error.message }]);
    }
    let retry_after = response
        .headers()
        .get(axum::http::header::RETRY_AFTER)
        .cloned();
    if let Some(seconds) = retry_after
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        body["retryAfter"] = json!(seconds);
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut reshaped = (parts.status, Json(body)).into_response();
    for (name, value) in &parts.headers {
        reshaped.headers_mut().insert(name.clone(), value.clone());
    }
    *reshaped.extensions_mut() = parts.extensions;
    reshaped
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
