//! `GET /admin/reconcile`: Tollgate's spend beside OpenAI's Costs and Usage APIs.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::usage::parse_time;
use super::{bad_param, unavailable};
use crate::error::GatewayError;
use crate::reconcile::{DEFAULT_TOLERANCE, ReconcileError, reconcile};
use crate::state::AppState;

/// `GET /admin/reconcile?from=&to=&tolerance_usd=`.
#[derive(Deserialize)]
pub struct ReconcileParams {
    /// Unix ms or RFC 3339; default 7 days before `to` (from the start of that UTC day).
    from: Option<String>,
    /// Unix ms or RFC 3339; default now.
    to: Option<String>,
    /// The cost difference a day and model may have and still agree, in USD.
    tolerance_usd: Option<f64>,
}

pub async fn reconcile_route(
    State(state): State<AppState>,
    parsed: Result<Query<ReconcileParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, GatewayError> {
    let params = super::query(parsed)?;
    let to_ms = match &params.to {
        Some(text) => parse_time("to", text)?,
        None => crate::records::now_ms(),
    };
    let from_ms = match &params.from {
        Some(text) => parse_time("from", text)?,
        None => to_ms - 7 * 86_400_000,
    };
    // What is compared: at most MAX_DAYS up to `to`, from 1970 on (the answer's `from` and
    // `to` say which days), rather than a refusal the schema could not describe.
    let to_ms = to_ms.max(0);
    let from_ms = from_ms
        .max(to_ms - crate::reconcile::MAX_DAYS * 86_400_000 + 1)
        .clamp(0, to_ms);
    let tolerance = match params.tolerance_usd {
        None => DEFAULT_TOLERANCE,
        Some(usd) if usd.is_finite() && (0.0..=1_000.0).contains(&usd) => {
            crate::pricing::usd_to_nanos(usd)
        }
        Some(_) => {
            return Err(bad_param(
                "tolerance_usd",
                "'tolerance_usd' must be a number from 0 to 1000.",
            ));
        }
    };
    let upstream = &state.config.upstream;
    let report = reconcile(
        state.records.as_ref(),
        (
            &upstream.admin_base_url,
            upstream.admin_key.as_ref(),
            upstream.project.as_ref(),
        ),
        (from_ms, to_ms),
        tolerance,
    )
    .await
    .map_err(|error| match error {
        ReconcileError::NoAdminKey => GatewayError::Unavailable {
            what: "reconciliation (OPENAI_ADMIN_KEY is not set)",
        },
        ReconcileError::Records(error) => unavailable(error),
        ReconcileError::Range => bad_param("from", "The range compared is at most 93 days."),
        upstream @ ReconcileError::Upstream { .. } => GatewayError::UpstreamFailed {
            detail: upstream.to_string(),
        },
    })?;
    Ok(Json(report).into_response())
}
