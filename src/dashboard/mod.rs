//! The dashboard at `/dashboard`: one HTML page, a script and a stylesheet, compiled into the
//! binary (no CDN, no build step at runtime).
//!
//! The page itself holds no data. It asks for the admin token, keeps it in the tab's
//! `sessionStorage`, and reads everything through the admin API with it, so the dashboard is
//! exactly as protected as `/admin/*` (and absent, 404, when no admin token is configured).
//! Its CSP allows only its own script and style and requests to its own origin; every value
//! from the API is inserted as text, never as HTML (user ids and model names come from callers).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// The dashboard's CSP: nothing from anywhere but this origin; no inline code.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard routes, or none when the admin API is off.
pub fn router(state: &AppState) -> Router<AppState> {
    if state.config.keys.admin_token.is_none() {
        return Router::new();
    }
    Router::new()
        .route(
            "/dashboard",
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
        ],
        body,
    )
        .into_response()
}
