//! The mock as an Azure OpenAI resource (`mock-upstream --azure`): paths under
//! `/openai/deployments/{deployment}/…?api-version=…`, the key in `api-key`, and Azure's error
//! shapes (`{"error": {"code": "429", "message": …}}`, `DeploymentNotFound`), so the gateway's
//! Azure dialect is tested against what Azure says rather than against itself.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What the mock's Azure resource serves.
#[derive(Debug, Clone, Default)]
pub struct AzureMock {
    /// Deployment name → the model it runs (answers name the model). Empty: any deployment
    /// name is served as the model of that name.
    pub deployments: BTreeMap<String, String>,
}

/// An Azure request read: the OpenAI path it stands for, and the deployment's model.
pub struct AzureCall {
    pub path: String,
    pub model: Option<String>,
}

impl AzureMock {
    /// Reads `parts` as Azure would: the path must be under `/openai/`, `api-version` must be
    /// present, and a deployment must exist.
    pub fn read(&self, parts: &Parts) -> Result<AzureCall, Refusal> {
        let has_version = parts.uri.query().is_some_and(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .any(|(name, value)| name == "api-version" && !value.is_empty())
        });
        let Some(rest) = parts.uri.path().strip_prefix("/openai/") else {
            return Err(Refusal::NotFound);
        };
        if !has_version {
            return Err(Refusal::NotFound);
        }
        let Some(under) = rest.strip_prefix("deployments/") else {
            return Ok(AzureCall {
                path: format!("/{rest}"),
                model: None,
            });
        };
        let (deployment, path) = under.split_once('/').unwrap_or((under, ""));
        let model = if self.deployments.is_empty() {
            Some(deployment.to_owned())
        } else {
            self.deployments.get(deployment).cloned()
        };
        let Some(model) = model else {
            return Err(Refusal::NoDeployment);
        };
        Ok(AzureCall {
            path: format!("/{path}"),
            model: Some(model),
        })
    }
}

/// Why Azure would refuse a request before reading it.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// Not under `/openai/`, or no `api-version`.
    NotFound,
    /// No such deployment.
    NoDeployment,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::NotFound => error(StatusCode::NOT_FOUND, "404", "Resource not found"),
            Self::NoDeployment => error(
                StatusCode::NOT_FOUND,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the \
                 deployment within the last 5 minutes, please wait a moment and try again.",
            ),
        }
    }
}

/// Azure's error body: a code (often the status as text) and a message.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// Azure's answer to a missing or wrong `api-key`.
pub fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to \
         provide a valid key for an active subscription and use a correct regional API endpoint \
         for your resource.",
    )
}
