//! The admin API: keys, usage, recent requests and the cache, behind `TOLLGATE_ADMIN_TOKEN`.
//!
//! Off (404, as if absent) when no token is configured. The token is compared by SHA-256
//! digest, so the comparison's timing says nothing about the token. Every answer is JSON; lists
//! are paginated with a cursor (`after` for keys, `before` for requests) and say whether more
//! remain. The routes are described in `GET /admin/openapi.json`.

mod keys;
mod reconcile;
mod usage;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::state::AppState;

/// The admin routes, or none when no admin token is set.
pub fn router(state: &AppState) -> Router<AppState> {
    if state.config.keys.admin_token.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/admin/openapi.json", get(openapi))
        .route("/admin/keys", get(keys::list).post(keys::create))
        .route("/admin/keys/{id}", get(keys::show).patch(keys::update))
        .route("/admin/keys/{id}/revoke", axum::routing::post(keys::revoke))
        .route("/admin/usage", get(usage::usage))
        .route("/admin/reconcile", get(reconcile::reconcile_route))
        .route("/admin/requests", get(usage::requests))
        .route("/admin/cache", axum::routing::delete(purge_cache))
        .route("/admin/reload", axum::routing::post(reload))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ))
}

/// Refuses requests without the admin token.
async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.config.keys.admin_token else {
        return GatewayError::NotFound {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
        }
        .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let matches = presented.is_some_and(|presented| {
        Sha256::digest(presented.as_bytes()) == Sha256::digest(token.expose_secret().as_bytes())
    });
    if !matches {
        return GatewayError::Unauthenticated {
            reason: "the admin API needs Authorization: Bearer $TOLLGATE_ADMIN_TOKEN",
        }
        .into_response();
    }
    next.run(request).await
}

/// `GET /admin/openapi.json`.
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// `DELETE /admin/cache`: empties the response cache (every replica's, when it is in Redis).
/// Re-reads `tollgate.toml` ([`crate::reload`]): 200 when the new configuration serves the
/// requests from now on; 409 with every problem when it is kept out (the running one stays:
/// the request was sound, the file on disk is what conflicts).
async fn reload(State(state): State<AppState>) -> Result<Response, GatewayError> {
    state
        .reload
        .request()
        .await
        .map_err(|problem| GatewayError::Conflict {
            message: format!("configuration not reloaded: {problem}"),
        })?;
    Ok(axum::Json(serde_json::json!({ "status": "reloaded" })).into_response())
}

async fn purge_cache(State(state): State<AppState>) -> Result<Response, GatewayError> {
    let purged = state.cache.purge().await.map_err(|error| {
        tracing::error!(%error, "admin API: purging the cache failed");
        GatewayError::Unavailable { what: "cache" }
    })?;
    tracing::info!(
        purged,
        engine = state.cache.engine(),
        "response cache purged"
    );
    Ok(axum::Json(serde_json::json!({
        "purged": purged,
        "engine": state.cache.engine(),
    }))
    .into_response())
}

/// The query string, or a 400 in the envelope (axum's own rejection is plain text).
fn query<T>(
    parsed: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, GatewayError> {
    parsed
        .map(|axum::extract::Query(value)| value)
        .map_err(|rejection| GatewayError::invalid(rejection.body_text(), None))
}

/// A query-string problem, as a 400 naming the parameter.
fn bad_param(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, Some(param.to_owned()))
}

/// A store failure, logged and shown as 503.
fn unavailable(error: impl std::fmt::Display) -> GatewayError {
    tracing::error!(%error, "admin API: database call failed");
    GatewayError::Unavailable { what: "database" }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::keys::{bounds, is_unprintable};

    fn schema() -> Value {
        serde_json::from_str(include_str!("openapi.json")).unwrap()
    }

    /// The document is written by hand; these are the bounds it shares with the code, so a
    /// change to one without the other fails here (schemathesis, in `tests/it`, checks the
    /// answers).
    #[test]
    fn the_schema_states_the_bounds_the_code_enforces() {
        let doc = schema();
        let new_key = &doc["components"]["schemas"]["NewKey"]["properties"];
        let families: Vec<&str> = new_key["routes"]["items"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(families, crate::openai::operations::families());
        assert_eq!(new_key["routes"]["maxItems"], bounds::ROUTES);
        assert_eq!(new_key["name"]["maxLength"], bounds::TEXT_CHARS);
        assert_eq!(new_key["owner"]["maxLength"], bounds::TEXT_CHARS);
        assert_eq!(new_key["models"]["maxItems"], bounds::MODELS);
        assert_eq!(new_key["models"]["items"]["maxLength"], bounds::MODEL_CHARS);
        assert_eq!(new_key["rules"]["maxItems"], bounds::RULES);
        assert_eq!(
            new_key["metadata"]["maxProperties"],
            bounds::METADATA_PROPERTIES
        );
        assert_eq!(
            new_key["expires_at_ms"]["maximum"],
            bounds::MAX_EXPIRES_AT_MS
        );
        let rule = &doc["components"]["schemas"]["Rule"]["properties"];
        for unit in ["requests", "tokens"] {
            assert_eq!(rule[unit]["maximum"], crate::limiter::rules::MAX_LIMIT);
        }
        for route in rule["route"]["enum"].as_array().unwrap() {
            let parsed: Result<crate::limiter::rules::RouteClass, _> =
                serde_json::from_value(route.clone());
            assert!(parsed.is_ok(), "{route} is a rule route");
        }
    }

    /// The characters the schema forbids in names are exactly those the code refuses.
    #[test]
    fn the_schema_forbids_the_characters_the_code_refuses() {
        let doc = schema();
        let pattern =
            doc["components"]["schemas"]["NewKey"]["properties"]["name"]["not"]["pattern"]
                .as_str()
                .unwrap();
        // ECMA-262's \uXXXX as the regex crate writes it.
        let pattern = regex::Regex::new(r"\\u([0-9a-fA-F]{4})")
            .unwrap()
            .replace_all(pattern, r"\x{$1}");
        let forbidden = regex::Regex::new(&pattern).unwrap();
        for c in (0..=0x10_FFFF_u32).filter_map(char::from_u32) {
            assert_eq!(
                forbidden.is_match(c.encode_utf8(&mut [0; 4])),
                is_unprintable(c),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }
}
