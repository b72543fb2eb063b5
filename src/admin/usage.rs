//! `/admin/usage` and `/admin/requests`: what was spent, and the audit log itself.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{bad_param, unavailable};
use crate::error::GatewayError;
use crate::pricing::format_usd;
use crate::records::{GroupBy, RecentQuery, UsageQuery};
use crate::state::AppState;

/// `GET /admin/usage?group_by=key,user,model,day&from=&to=`.
#[derive(Deserialize)]
pub struct UsageParams {
    group_by: Option<String>,
    /// Unix ms or RFC 3339; default 30 days before `to`.
    from: Option<String>,
    /// Unix ms or RFC 3339; default now.
    to: Option<String>,
}

/// Parses a time given as Unix milliseconds or RFC 3339.
pub(crate) fn parse_time(param: &str, text: &str) -> Result<i64, GatewayError> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .ok()
            .filter(|ms| *ms <= crate::keys::bounds::MAX_EXPIRES_AT_MS)
            .ok_or_else(|| {
                bad_param(
                    param,
                    format!("'{param}' must be Unix milliseconds before the year 10000."),
                )
            });
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
        .map_err(|_| {
            bad_param(
                param,
                format!("'{param}' must be Unix milliseconds or an RFC 3339 time."),
            )
        })
}

/// Parses `key,user,model,day` (any subset, in any order).
pub(crate) fn parse_group_by(text: Option<&str>) -> Result<Vec<GroupBy>, GatewayError> {
    let mut groups = Vec::new();
    let text = text.unwrap_or("");
    if text.is_empty() {
        return Ok(groups);
    }
    for part in text.split(',') {
        let group = GroupBy::exactly(part).ok_or_else(|| {
            bad_param(
                "group_by",
                "'group_by' takes key, user, model, day and hour, comma-separated.",
            )
        })?;
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    Ok(groups)
}

pub async fn usage(
    State(state): State<AppState>,
    parsed: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, GatewayError> {
    let params = super::query(parsed)?;
    let to_ms = match &params.to {
        Some(text) => parse_time("to", text)?,
        None => crate::records::now_ms() + 3_600_000,
    };
    let from_ms = match &params.from {
        Some(text) => parse_time("from", text)?,
        None => to_ms - 30 * 86_400_000,
    };
    let query = UsageQuery {
        group_by: parse_group_by(params.group_by.as_deref())?,
        from_ms,
        to_ms,
    };
    // An empty range holds no groups (not an error: a dashboard may ask for one).
    let rows = if from_ms >= to_ms {
        Vec::new()
    } else {
        state.records.usage(&query).await.map_err(unavailable)?
    };
    let data: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|row| {
            let cost = format_usd(row.totals.cost_nanos);
            let mut value = serde_json::to_value(row).unwrap_or_default();
            value["cost_usd"] = serde_json::Value::String(cost);
            value
        })
        .collect();
    Ok(Json(serde_json::json!({
        "object": "list",
        "from_ms": from_ms,
        "to_ms": to_ms,
        "group_by": query.group_by,
        "data": data,
    }))
    .into_response())
}

/// `MS_ID` (a page cursor) or `MS` (everything before that millisecond).
fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (ms, id) = cursor.split_once('_').unwrap_or((cursor, ""));
    let well_formed = (1..=15).contains(&ms.len())
        && ms.bytes().all(|b| b.is_ascii_digit())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
        && id.len() <= 64;
    well_formed.then(|| Some((ms.parse().ok()?, id.to_owned())))?
}

/// `GET /admin/requests?key=&user=&status=&limit=&before=`.
#[derive(Deserialize)]
pub struct RequestsParams {
    key: Option<String>,
    user: Option<String>,
    status: Option<u16>,
    limit: Option<u32>,
    /// The previous page's `next_before` (`MS_ID`; a bare Unix-ms time also works).
    before: Option<String>,
}

pub async fn requests(
    State(state): State<AppState>,
    parsed: Result<Query<RequestsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, GatewayError> {
    let params = super::query(parsed)?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(bad_param("limit", "'limit' must be from 1 to 500."));
    }
    if params
        .status
        .is_some_and(|status| !(100..=599).contains(&status))
    {
        return Err(bad_param(
            "status",
            "'status' must be an HTTP status, 100 to 599.",
        ));
    }
    let before = match params.before.as_deref() {
        None => None,
        Some(cursor) => Some(parse_cursor(cursor).ok_or_else(|| {
            bad_param(
                "before",
                "'before' must be a next_before value or Unix milliseconds.",
            )
        })?),
    };
    let records = state
        .records
        .recent(&RecentQuery {
            key_id: params.key,
            user_id: params.user,
            status: params.status,
            before,
            limit: limit + 1,
        })
        .await
        .map_err(unavailable)?;
    let has_more = records.len() > limit as usize;
    let records: Vec<_> = records.into_iter().take(limit as usize).collect();
    let next_before = has_more
        .then(|| {
            records
                .last()
                .map(|r| format!("{}_{}", r.created_at_ms, r.id))
        })
        .flatten();
    Ok(Json(serde_json::json!({
        "object": "list",
        "data": records,
        "has_more": has_more,
        "next_before": next_before,
    }))
    .into_response())
}
