//! One provider: its base URL, its key as a ready header, and the headers a call to it carries.
//!
//! An Azure OpenAI endpoint differs in three ways, all kept here: the key goes in `api-key`,
//! every call carries `api-version`, and a model route's path names the deployment
//! (`deployments/{deployment}/chat/completions`), the model mapped to it by the configuration.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use url::Url;

use crate::config::AzureSettings;
use crate::error::GatewayError;
use crate::openai::path::{ApiPath, upstream_url};

/// The upstream key as a ready header, wrapped so it never prints.
struct UpstreamCredentials {
    /// `None` for an upstream configured without a key (a local model server).
    authorization: Option<(HeaderName, HeaderValue)>,
    organization: Option<HeaderValue>,
    project: Option<HeaderValue>,
}

impl std::fmt::Debug for UpstreamCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamCredentials([REDACTED])")
    }
}

/// One provider: where it is and how to authenticate.
#[derive(Debug)]
pub struct Endpoint {
    /// `default` or the `[[upstreams]]` name (records and metrics say it).
    pub name: Arc<str>,
    pub(super) base_url: Url,
    /// The model routes' URLs, joined and parsed once: URL parsing (with IDNA) per request
    /// showed in profiles.
    fixed_uris: Vec<(&'static str, Uri)>,
    credentials: UpstreamCredentials,
    /// Set for an Azure OpenAI resource.
    azure: Option<AzureSettings>,
}

/// The paths Azure serves under a deployment (`deployments/{name}/…`): the only ones an Azure
/// upstream is sent.
const AZURE_DEPLOYMENT_PATHS: [&str; 7] = [
    "chat/completions",
    "completions",
    "embeddings",
    "images/generations",
    "audio/transcriptions",
    "audio/translations",
    "audio/speech",
];

/// Paths whose upstream URL is computed once.
const FIXED_PATHS: [&str; 6] = [
    "chat/completions",
    "embeddings",
    "images/generations",
    "responses",
    "models",
    "moderations",
];

/// Request headers that go upstream: an allowlist, so that no credential header a client
/// invents (`x-api-key`, `api-key`, `cookie`, ...) and no hop-by-hop or control header can
/// pass. OpenAI's SDKs send these and `x-stainless-*` (their platform and retry details).
const FORWARDED_REQUEST_HEADERS: [&str; 5] = [
    "accept",
    "content-type",
    "idempotency-key",
    "openai-beta",
    "user-agent",
];

/// The prefix of the SDKs' own descriptive headers, forwarded too.
const FORWARDED_PREFIX: &str = "x-stainless-";

impl Endpoint {
    /// An endpoint for `base_url`; the credentials become sensitive header values.
    /// `authorization` is the header and value that carry the key.
    pub(super) fn new(
        name: &str,
        base_url: &Url,
        authorization: Option<(HeaderName, String)>,
        organization: Option<String>,
        project: Option<String>,
    ) -> Self {
        let secret_header = |value: String| {
            let mut header =
                HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""));
            header.set_sensitive(true);
            header
        };
        let fixed_uris = FIXED_PATHS
            .iter()
            .filter_map(|path| {
                let url = upstream_url(base_url, &ApiPath::fixed(path), None).ok()?;
                Some((*path, Uri::try_from(url.as_str()).ok()?))
            })
            .collect();
        Self {
            name: Arc::from(name),
            base_url: base_url.clone(),
            fixed_uris,
            azure: None,
            credentials: UpstreamCredentials {
                authorization: authorization.map(|(name, value)| (name, secret_header(value))),
                organization: organization.map(secret_header),
                project: project.map(secret_header),
            },
        }
    }

    /// An Azure OpenAI resource at `base_url` (`https://NAME.openai.azure.com/openai/`).
    pub(super) fn azure(
        name: &str,
        base_url: &Url,
        api_key: Option<String>,
        settings: AzureSettings,
    ) -> Self {
        let mut endpoint = Self::new(
            name,
            base_url,
            api_key.map(|key| (HeaderName::from_static("api-key"), key)),
            None,
            None,
        );
        endpoint.fixed_uris.clear();
        endpoint.azure = Some(settings);
        endpoint
    }

    /// Whether this endpoint speaks Azure OpenAI's dialect (its errors are reshaped).
    pub fn is_azure(&self) -> bool {
        self.azure.is_some()
    }

    /// The URI for `path`: every one is built by [`upstream_url`], which cannot leave the
    /// base (the model routes' URLs were built by it once, at start). `model` is what the
    /// call names (Azure's deployment is chosen by it).
    pub(super) fn uri_for(
        &self,
        method: &Method,
        path: &ApiPath,
        query: Option<&str>,
        model: Option<&str>,
    ) -> Result<Uri, GatewayError> {
        if let Some(azure) = &self.azure {
            return self.azure_uri(azure, method, path, query, model);
        }
        if query.is_none()
            && let Some((_, uri)) = self
                .fixed_uris
                .iter()
                .find(|(fixed, _)| *fixed == path.as_str())
        {
            return Ok(uri.clone());
        }
        upstream_url(&self.base_url, path, query)
            .ok()
            .and_then(|url| Uri::try_from(url.as_str()).ok())
            .ok_or_else(|| GatewayError::NotFound {
                method: method.to_string(),
                path: format!("/v1/{}", path.as_str()),
            })
    }

    /// Azure's URL for `path`: under `deployments/{deployment}/` for a model route, with the
    /// configured `api-version` in place of any the caller sent.
    fn azure_uri(
        &self,
        azure: &AzureSettings,
        method: &Method,
        path: &ApiPath,
        query: Option<&str>,
        model: Option<&str>,
    ) -> Result<Uri, GatewayError> {
        let not_found = || GatewayError::NotFound {
            method: method.to_string(),
            path: format!("/v1/{}", path.as_str()),
        };
        // Only the deployment routes: elsewhere (`responses`, files) Azure names the
        // deployment in the body or not at all, which this dialect does not rewrite.
        if !AZURE_DEPLOYMENT_PATHS.contains(&path.as_str()) {
            return Err(not_found());
        }
        let model = model.ok_or_else(not_found)?;
        let deployment = azure.deployments.get(model).map_or(model, String::as_str);
        let under = ApiPath::with_segment("deployments", deployment).map_err(|_| not_found())?;
        let path = ApiPath::parse(&format!("{}/{}", under.as_str(), path.as_str()))
            .map_err(|_| not_found())?;
        let mut pairs: Vec<(String, String)> = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .filter(|(name, _)| !name.trim().eq_ignore_ascii_case("api-version"))
                    .map(|(name, value)| (name.into_owned(), value.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        pairs.push(("api-version".to_owned(), azure.api_version.clone()));
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        upstream_url(&self.base_url, &path, Some(&query))
            .ok()
            .and_then(|url| Uri::try_from(url.as_str()).ok())
            .ok_or_else(not_found)
    }

    /// The caller's allowlisted headers with this endpoint's credentials.
    pub(super) fn outgoing_headers(&self, incoming: &HeaderMap) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(incoming.len() + 4);
        for (name, value) in incoming {
            let lower = name.as_str();
            // One content type only: the one the gateway read the body by.
            if *name == header::CONTENT_TYPE && headers.contains_key(header::CONTENT_TYPE) {
                continue;
            }
            if FORWARDED_REQUEST_HEADERS.contains(&lower) || lower.starts_with(FORWARDED_PREFIX) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(id) = incoming.get("x-request-id") {
            // Our id travels upstream under OpenAI's name for a client-chosen id.
            headers.insert(HeaderName::from_static("x-client-request-id"), id.clone());
        }
        if let Some((name, value)) = &self.credentials.authorization {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(organization) = &self.credentials.organization {
            headers.insert(
                HeaderName::from_static("openai-organization"),
                organization.clone(),
            );
        }
        if let Some(project) = &self.credentials.project {
            headers.insert(HeaderName::from_static("openai-project"), project.clone());
        }
        headers
    }
}
