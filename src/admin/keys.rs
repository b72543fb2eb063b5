//! `/admin/keys`: create, list, show, change and revoke gateway keys, with their spend.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{bad_param, unavailable};
use crate::budget::BudgetLine;
use crate::error::GatewayError;
use crate::extract::ApiJson;
use crate::keys::{self, ApiKey, KeyPatch, NewKey};
use crate::pricing::{Nanos, format_usd};
use crate::records::SpendScope;
use crate::state::AppState;
use crate::strict_json::Object;

/// A key as the admin API shows it: the stored key and its spend in the current window.
#[derive(Serialize)]
struct KeyView {
    #[serde(flatten)]
    key: ApiKey,
    /// Spend of the whole key this budget window (this month without a budget).
    spend: Spend,
}

#[derive(Serialize)]
struct Spend {
    window_start_ms: i64,
    spent_usd: String,
    spent_nanos: Nanos,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_usd: Option<f64>,
}

async fn view(state: &AppState, key: ApiKey) -> Result<KeyView, GatewayError> {
    let spec = key
        .budgets
        .key
        .clone()
        .unwrap_or(crate::config::BudgetSpec {
            max_usd: f64::MAX,
            period: crate::config::BudgetPeriod::Month,
            alert_at: 1.0,
        });
    let line = BudgetLine::new(
        SpendScope::Key(key.id.clone()),
        &spec,
        crate::records::now_ms(),
    );
    let spent = state.budgets.spent(&line).await.map_err(unavailable)?;
    Ok(KeyView {
        spend: Spend {
            window_start_ms: line.window_start_ms,
            spent_usd: format_usd(spent),
            spent_nanos: spent,
            max_usd: key.budgets.key.as_ref().map(|b| b.max_usd),
        },
        key,
    })
}

/// `POST /admin/keys`: the secret is in this response only.
pub async fn create(
    State(state): State<AppState>,
    ApiJson(Object(new)): ApiJson<Object<NewKey>>,
) -> Result<Response, GatewayError> {
    new.validate()
        .map_err(|(param, message)| bad_param(param, message))?;
    let issued = keys::issue(new, keys::now_ms());
    state
        .keys
        .insert(&issued.key, &issued.hash)
        .await
        .map_err(unavailable)?;
    let mut body =
        serde_json::to_value(&issued.key).map_err(|e| GatewayError::Internal(e.to_string()))?;
    body["key"] = serde_json::Value::String(issued.secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Cursor pagination of `GET /admin/keys`.
#[derive(Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<u32>,
}

/// `GET /admin/keys?after=&limit=`: keys in creation order, with their spend.
pub async fn list(
    State(state): State<AppState>,
    parsed: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, GatewayError> {
    let query = super::query(parsed)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(bad_param("limit", "'limit' must be from 1 to 500."));
    }
    let mut page = state
        .keys
        .list(query.after.as_deref(), limit + 1)
        .await
        .map_err(unavailable)?;
    let has_more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next_after = has_more
        .then(|| page.last().map(|k| k.id.clone()))
        .flatten();
    let mut data = Vec::with_capacity(page.len());
    for key in page {
        data.push(view(&state, key).await?);
    }
    Ok(Json(serde_json::json!({
        "object": "list",
        "data": data,
        "has_more": has_more,
        "next_after": next_after,
    }))
    .into_response())
}

async fn find(state: &AppState, id: &str) -> Result<ApiKey, GatewayError> {
    state
        .keys
        .get(id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| GatewayError::NotFound {
            method: "GET".to_owned(),
            path: format!("/admin/keys/{id}"),
        })
}

/// `GET /admin/keys/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let key = find(&state, &id).await?;
    Ok(Json(view(&state, key).await?).into_response())
}

/// `PATCH /admin/keys/{id}`: name, models, rules, metadata, budgets, routes, expiry.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(Object(patch)): ApiJson<Object<KeyPatch>>,
) -> Result<Response, GatewayError> {
    patch
        .validate()
        .map_err(|(param, message)| bad_param(param, message))?;
    let mut key = find(&state, &id).await?;
    patch.apply(&mut key);
    state.keys.update(&key).await.map_err(unavailable)?;
    Ok(Json(view(&state, key).await?).into_response())
}

/// `POST /admin/keys/{id}/revoke`: refused by every replica within a second. Idempotent; the
/// key stays readable (with `revoked_at_ms`) for the audit, which is why this is not a `DELETE`.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    state
        .keys
        .revoke(&id, keys::now_ms())
        .await
        .map_err(unavailable)?;
    let key = find(&state, &id).await?;
    state.key_cache.forget_all();
    Ok(Json(view(&state, key).await?).into_response())
}
