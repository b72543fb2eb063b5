//! The upstream call: one pooled client, the upstream key, retries, timeouts.
//!
//! Retry policy lives here and only here. A request is retried on a connect error, 408, 409,
//! 429 and 5xx, up to `max_retries` times, with exponential backoff and full jitter; an
//! upstream `Retry-After` (or OpenAI's `retry-after-ms`) replaces the computed delay when it is
//! within `retry_after_cap`, and a longer one ends the retries at once (the caller gets the 429
//! and the upstream's `Retry-After`, rather than a request held for minutes). Nothing is
//! retried once response headers have been accepted, so a stream that started is never
//! replayed. A non-streaming call, retries included, must finish within `OPENAI_TIMEOUT`.
//!
//! Headers: only an allowlist of the caller's headers goes upstream (content type, accept,
//! `openai-beta`, idempotency, the SDKs' `x-stainless-*`), so no credential header a caller
//! invents can pass; the upstream key is set here from a redacted type. Nothing an upstream
//! sends back carries a key: error bodies are scrubbed and leaking headers dropped
//! ([`KeyScrubber`]). Every URL is built by `openai::path::upstream_url`, which cannot leave
//! the endpoint's base.
//!
//! The client is hyper's pooled one (hyper-util), with rustls and the platform's roots: the
//! gateway builds every URL and header itself, so it needs nothing a fuller client adds (and
//! reqwest's URL re-parsing and redirect layer cost about a tenth of a request's instructions).
//!
//! There is one pooled client for every upstream: the default (`OPENAI_BASE_URL`) and each of
//! `[[upstreams]]`, each an [`Endpoint`] with its own URL and key (an Azure OpenAI resource's
//! dialect included). [`Upstream::targets`] says where a model goes: an alias's targets in
//! order (the pipeline falls back along them), a model an extra upstream serves, or the
//! default. An alias served by a [`Pool`] has its members first, ordered per call by the
//! pool's strategy; a member's failure is judged ([`pool::Verdict`]): the next member is tried
//! at once, and the failing one cools down as the verdict says.

mod azure;
mod body;
mod endpoint;
pub mod pool;
mod realtime;
mod retry;
pub mod scrub;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, Method};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::RngExt;
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Config, DEFAULT_UPSTREAM, UpstreamConfig, UpstreamKind};
use crate::error::GatewayError;
use crate::limiter::RateLimiter;
use crate::openai::path::ApiPath;
pub use body::{OutgoingBody, StreamedBody};
pub use endpoint::Endpoint;
pub use pool::{Board, Busy, Pool};
pub use realtime::{MAX_REALTIME_MESSAGE, RealtimeSocket, realtime_socket_config};
pub use retry::{RetryPolicy, upstream_retry_after};
use retry::{client_retry_after, is_retryable};
use scrub::KeyScrubber;

/// Where one attempt goes: an endpoint and, when an alias renames it, the model to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index into the endpoints; 0 is the default upstream.
    pub endpoint: usize,
    /// The model name sent upstream when it differs from the caller's.
    pub model: Option<Arc<str>>,
}

/// An upstream's answer: its head, and its body to read or relay.
pub type UpstreamResponse = axum::http::Response<hyper::body::Incoming>;

/// The pooled client (HTTP/1.1 and HTTP/2 by ALPN, TLS by rustls).
type HttpClient = Client<HttpsConnector<HttpConnector>, axum::body::Body>;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for upstream calls: {0}")]
pub struct ClientError(String);

/// The index of the default upstream.
pub const DEFAULT_ENDPOINT: usize = 0;

/// What pools need from the process: the deployments' live state (kept across reloads),
/// where their own limits are kept, and where replicas share their state (with Redis).
#[derive(Clone)]
pub struct PoolContext {
    pub board: Arc<Board>,
    pub limiter: Arc<dyn RateLimiter>,
    /// Whether members' limits turn calls away when the limiter cannot answer.
    pub limits_fail_closed: bool,
    pub shared: Option<Arc<dyn pool::shared::PoolStore>>,
}

/// A routed call's answer.
#[derive(Debug)]
pub struct Routed {
    pub response: UpstreamResponse,
    /// The target that answered.
    pub target: Target,
    /// When a pool's deployment answered: counted in flight until this is dropped (a stream
    /// keeps it to its end).
    pub busy: Option<Busy>,
}

/// Every upstream, the model routing between them, and how to call them.
#[derive(Debug)]
pub struct Upstream {
    client: HttpClient,
    /// HTTP/1.1 only, for Realtime's WebSocket handshakes (an HTTP/2 connection cannot upgrade).
    upgrading: HttpClient,
    /// Cuts every upstream key out of what upstreams send back.
    scrubber: KeyScrubber,
    endpoints: Vec<Endpoint>,
    /// Aliases and models served by an extra upstream, with their targets in order.
    routes: HashMap<String, Arc<[Target]>>,
    /// Aliases served by a pool (its members are their first targets).
    pools: HashMap<String, Arc<Pool>>,
    /// Everything else goes to the default upstream.
    default_route: Arc<[Target]>,
    policy: RetryPolicy,
    /// Whole non-streaming call, retries included.
    pub timeout: Duration,
    /// A stream's response headers and first event.
    pub first_byte_timeout: Duration,
    /// Silence allowed between stream events.
    pub idle_timeout: Duration,
}

/// One call to make.
pub struct UpstreamRequest {
    /// Which endpoint ([`DEFAULT_ENDPOINT`] unless routing chose another).
    pub endpoint: usize,
    pub method: Method,
    /// Path under the base URL (`chat/completions`), checked segment by segment.
    pub path: ApiPath,
    /// The caller's query string, verbatim.
    pub query: Option<String>,
    /// The caller's headers; filtered here before anything is sent.
    pub headers: HeaderMap,
    pub body: OutgoingBody,
    /// Whether the answer will be relayed as a stream (changes the timeouts).
    pub stream: bool,
    /// The model the call names, when it names one (each attempt's span carries it).
    pub model: Option<String>,
}

/// The most of an upstream error body relayed to the caller.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

impl Upstream {
    /// Builds the pooled client, the endpoints, the model routes and the pools.
    pub fn new(config: &Config, pools: &PoolContext) -> Result<Self, ClientError> {
        let mut upstream = Self::single(&config.upstream)?;
        for entry in &config.upstreams {
            let key = entry
                .api_key
                .as_ref()
                .map(|key| key.expose_secret().to_owned());
            upstream.endpoints.push(match &entry.kind {
                UpstreamKind::OpenAi => Endpoint::new(
                    &entry.name,
                    &entry.base_url,
                    key.map(|key| (axum::http::header::AUTHORIZATION, format!("Bearer {key}"))),
                    None,
                    None,
                ),
                UpstreamKind::Azure(settings) => {
                    Endpoint::azure(&entry.name, &entry.base_url, key, settings.clone())
                }
            });
        }
        let index_of = |name: &str| {
            upstream
                .endpoints
                .iter()
                .position(|e| &*e.name == name)
                .unwrap_or(DEFAULT_ENDPOINT)
        };
        let mut routes = HashMap::new();
        for (index, entry) in config.upstreams.iter().enumerate() {
            for model in &entry.models {
                let target = Target {
                    endpoint: index + 1,
                    model: None,
                };
                routes
                    .entry(model.clone())
                    .or_insert_with(|| Arc::from(vec![target]));
            }
        }
        for (alias, entry) in &config.models {
            let targets: Vec<Target> = entry
                .targets
                .iter()
                .map(|t| Target {
                    endpoint: index_of(&t.upstream),
                    model: (t.target != *alias).then(|| Arc::from(t.target.as_str())),
                })
                .collect();
            if let Some(pool) = &entry.pool {
                let names = entry
                    .targets
                    .iter()
                    .take(pool.members.len())
                    .map(|t| Arc::from(format!("{}/{}", t.upstream, t.target)))
                    .collect();
                upstream.pools.insert(
                    alias.clone(),
                    Arc::new(Pool::new(
                        alias,
                        pool,
                        &targets,
                        names,
                        &pools.board,
                        Arc::clone(&pools.limiter),
                        pools.limits_fail_closed,
                    )),
                );
            }
            routes.insert(alias.clone(), Arc::from(targets));
        }
        upstream.routes = routes;
        upstream.scrubber = KeyScrubber::new(
            std::iter::once(config.upstream.api_key.clone())
                .chain(config.upstreams.iter().filter_map(|u| u.api_key.clone())),
        );
        Ok(upstream)
    }

    /// Where requests for `model` go, in fallback order.
    pub fn targets(&self, model: Option<&str>) -> Arc<[Target]> {
        model
            .and_then(|model| self.routes.get(model))
            .unwrap_or(&self.default_route)
            .clone()
    }

    /// The pool serving `model`, when one does.
    pub fn pool(&self, model: Option<&str>) -> Option<Arc<Pool>> {
        if self.pools.is_empty() {
            return None;
        }
        model.and_then(|model| self.pools.get(model)).cloned()
    }

    /// `text` (an upstream's Realtime event or close reason) with every upstream key cut out.
    pub fn scrub_text(
        &self,
        text: tokio_tungstenite::tungstenite::Utf8Bytes,
    ) -> tokio_tungstenite::tungstenite::Utf8Bytes {
        if !self.scrubber.leaks(text.as_bytes()) {
            return text;
        }
        let scrubbed = self.scrubber.scrub(Bytes::copy_from_slice(text.as_bytes()));
        String::from_utf8_lossy(&scrubbed).into_owned().into()
    }

    /// The endpoint's name, for records.
    pub fn name_of(&self, endpoint: usize) -> Arc<str> {
        self.endpoint(endpoint).name.clone()
    }

    fn endpoint(&self, index: usize) -> &Endpoint {
        self.endpoints
            .get(index)
            .unwrap_or(&self.endpoints[DEFAULT_ENDPOINT])
    }

    /// The default upstream alone, from `[upstream]`.
    fn single(config: &UpstreamConfig) -> Result<Self, ClientError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let tls = || {
            hyper_rustls::HttpsConnectorBuilder::new()
                .try_with_platform_verifier()
                .map_err(|error| ClientError(error.to_string()))
                .map(hyper_rustls::HttpsConnectorBuilder::https_or_http)
        };
        let https = tls()?
            .enable_http1()
            .enable_http2()
            .wrap_connector(http.clone());
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https);
        let upgrading = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(tls()?.enable_http1().wrap_connector(http));
        let default = Endpoint::new(
            DEFAULT_UPSTREAM,
            &config.base_url,
            Some((
                axum::http::header::AUTHORIZATION,
                format!("Bearer {}", config.api_key.expose_secret()),
            )),
            config
                .organization
                .as_ref()
                .map(|o| o.expose_secret().to_owned()),
            config
                .project
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
        );
        Ok(Self {
            client,
            upgrading,
            scrubber: KeyScrubber::new([config.api_key.clone()]),
            endpoints: vec![default],
            routes: HashMap::new(),
            pools: HashMap::new(),
            default_route: Arc::from(vec![Target {
                endpoint: DEFAULT_ENDPOINT,
                model: None,
            }]),
            policy: RetryPolicy {
                max_retries: config.max_retries,
                base_delay: config.retry_base_delay,
                max_delay: config.retry_max_delay,
                retry_after_cap: config.retry_after_cap,
            },
            timeout: config.timeout,
            first_byte_timeout: config.stream_first_byte_timeout,
            idle_timeout: config.stream_idle_timeout,
        })
    }

    /// Sends `request` to each of `targets` in turn (each with its own retries and deadline)
    /// until one answers; the next is tried only after a 5xx, a 429, a timeout or a connect
    /// error. With a `pool` (serving the first targets), its members go first in the order it
    /// chooses: each must fit its own limits (`tokens`: the call's share of a tokens-per-minute
    /// limit), is tried once unless it is the last hope, and on failure is judged by
    /// [`pool::Verdict`] (a 401/403 passes to the next member: a deployment's bad key is not
    /// the caller's fault; a timeout ends the call). Returns the answer and the target that
    /// gave it.
    pub async fn send_routed(
        &self,
        targets: &[Target],
        pool: Option<&Pool>,
        tokens: u64,
        request: UpstreamRequest,
    ) -> Result<Routed, GatewayError> {
        let UpstreamRequest {
            method,
            path,
            query,
            mut headers,
            body,
            stream,
            model,
            ..
        } = request;
        let (buffered, mut streamed) = match body {
            OutgoingBody::Empty => (None, None),
            OutgoingBody::Buffered(bytes) => (Some(bytes), None),
            OutgoingBody::Streamed(body) => (None, Some(body)),
        };
        let order = pool.map(Pool::order).unwrap_or_default();
        let (plan, last) = pool::plan(pool, &order, targets);
        let mut outcome = Err(GatewayError::Internal("no upstream target".to_owned()));
        // The soonest any member at its own limit has room again.
        let mut soonest: Option<Duration> = None;
        for (index, (member, target)) in plan.enumerate() {
            let member = pool.zip(member);
            if let Some((pool, member)) = member
                && let Err(wait) = pool.admit(member, tokens).await
            {
                let wait = soonest.map_or(wait, |soonest| soonest.min(wait));
                soonest = Some(wait);
                outcome = Err(pool.all_at_their_limits(wait));
                continue;
            }
            let body = match (&buffered, streamed.take(), &target.model) {
                (Some(bytes), _, Some(model)) => {
                    OutgoingBody::Buffered(body::with_model(bytes, model)?)
                }
                (Some(bytes), _, None) => OutgoingBody::Buffered(bytes.clone()),
                (None, Some(body), _) => OutgoingBody::Streamed(body),
                (None, None, _) => OutgoingBody::Empty,
            };
            let headers = if index == last {
                std::mem::take(&mut headers)
            } else {
                headers.clone()
            };
            let busy = member.map(|(pool, member)| pool.member(member).state.busy());
            let sent_ms = pool::deployment::now_ms();
            let attempt = UpstreamRequest {
                endpoint: target.endpoint,
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
                headers,
                body,
                stream,
                model: target
                    .model
                    .as_deref()
                    .map(str::to_owned)
                    .or_else(|| model.clone()),
            };
            // A pool member is tried once: the next deployment is a better retry.
            let retries = member.is_none() || index == last;
            outcome = self
                .send_with(attempt, retries)
                .await
                .map(|response| Routed {
                    response,
                    target: target.clone(),
                    busy: None,
                });
            // Whether the next target may be tried: a pool member's failure is judged by what
            // it says of the deployment; any other target's by the fallback rules.
            let next = match (&mut outcome, member) {
                (Ok(routed), Some((pool, member))) => {
                    let deployment = pool.member(member);
                    deployment.served_call(sent_ms);
                    deployment.state.observe_headroom(routed.response.headers());
                    routed.busy = busy;
                    false
                }
                (Ok(_), None) => false,
                (Err(error), Some((pool, member))) => {
                    let azure = self.endpoint(target.endpoint).is_azure();
                    pool.failed(member, pool::Verdict::of(error, azure))
                }
                (Err(error), None) => error.allows_fallback(),
            };
            match &outcome {
                Err(error) if index < last && next && buffered.is_some() => {
                    let from = self.name_of(target.endpoint);
                    tracing::warn!(upstream = %from, error = %error, "upstream failed; trying the next target");
                    crate::metrics::record_fallback(&from);
                }
                _ => break,
            }
        }
        outcome
    }

    /// Sends `request`, retrying as the policy says, and returns the first successful (2xx)
    /// response with its headers read; its body is the caller's to read. Errors are already
    /// mapped to the error table.
    pub async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, GatewayError> {
        self.send_with(request, true).await
    }

    /// [`Self::send`], with the policy's retries or (`retries` false) one attempt.
    async fn send_with(
        &self,
        request: UpstreamRequest,
        retries: bool,
    ) -> Result<UpstreamResponse, GatewayError> {
        let started = Instant::now();
        let mut deadline = started
            + if request.stream {
                self.first_byte_timeout
            } else {
                self.timeout
            };
        let endpoint = self.endpoint(request.endpoint);
        let uri = endpoint.uri_for(
            &request.method,
            &request.path,
            request.query.as_deref(),
            request.model.as_deref(),
        )?;
        let headers = endpoint.outgoing_headers(&request.headers);
        // A streamed body can be sent once only.
        let max_retries = if !retries || matches!(request.body, OutgoingBody::Streamed(_)) {
            0
        } else {
            self.policy.max_retries
        };
        let (buffered, mut streamed, mut sent) = match request.body {
            OutgoingBody::Empty => (None, None, None),
            OutgoingBody::Buffered(bytes) => (Some(bytes), None, None),
            OutgoingBody::Streamed(StreamedBody { body, sent }) => (None, Some(body), Some(sent)),
        };

        let mut attempt = 0u32;
        loop {
            let body = match (&buffered, streamed.take()) {
                (Some(bytes), _) => axum::body::Body::from(bytes.clone()),
                (None, Some(body)) => body,
                (None, None) => axum::body::Body::empty(),
            };
            let mut outgoing = axum::http::Request::new(body);
            *outgoing.method_mut() = request.method.clone();
            *outgoing.uri_mut() = uri.clone();
            *outgoing.headers_mut() = headers.clone();
            let span = crate::otel::AttemptSpan::start(
                request.method.as_str(),
                request.path.as_str(),
                request.model.as_deref(),
                uri.host().unwrap_or_default(),
            );
            if let Some(span) = &span {
                span.inject(outgoing.headers_mut());
            }
            let call = self.client.request(outgoing);
            let answer = match sent.as_mut() {
                None => tokio::time::timeout_at(deadline, call).await.ok(),
                Some(sent) => {
                    let answer = after_upload(call, sent, self.timeout).await;
                    // What follows (an error body) gets its own time after the upload.
                    deadline = Instant::now() + self.timeout;
                    answer
                }
            };
            let failure = match answer {
                None => Failure::Timeout,
                Some(Err(error)) if error.is_connect() => Failure::Unreachable,
                // The caller's upload fell behind its minimum pace: the caller's fault.
                Some(Err(error)) if crate::extract::is_too_slow(&error) => {
                    crate::metrics::record_upstream_attempt("error");
                    return Err(GatewayError::RequestTimeout);
                }
                Some(Err(error)) => Failure::Transport(error.to_string()),
                Some(Ok(mut response)) if response.status().is_success() => {
                    crate::metrics::record_upstream_attempt("ok");
                    if let Some(span) = span {
                        span.finish(Ok(response.status().as_u16()));
                    }
                    self.drop_leaking_headers(response.headers_mut());
                    return Ok(response);
                }
                Some(Ok(response)) => Failure::Status(response),
            };
            if let Some(span) = span {
                span.finish(match &failure {
                    Failure::Timeout => Err("timeout"),
                    Failure::Unreachable => Err("connect"),
                    Failure::Transport(_) => Err("transport"),
                    Failure::Status(response) => Ok(response.status().as_u16()),
                });
            }
            let wait = if attempt < max_retries {
                self.retry_delay(&failure, attempt)
            } else {
                None
            };
            match wait.filter(|wait| Instant::now() + *wait < deadline) {
                Some(wait) => {
                    crate::metrics::record_upstream_attempt("retry");
                    tracing::debug!(
                        attempt,
                        delay_ms = wait.as_millis() as u64,
                        "retrying upstream call"
                    );
                    drop(failure);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                None => {
                    crate::metrics::record_upstream_attempt("error");
                    return Err(match failure {
                        Failure::Timeout => GatewayError::UpstreamTimeout,
                        Failure::Unreachable => GatewayError::UpstreamUnreachable,
                        Failure::Transport(detail) => GatewayError::UpstreamFailed { detail },
                        Failure::Status(response) => {
                            self.final_error(endpoint, response, deadline).await
                        }
                    });
                }
            }
        }
    }

    /// How long to wait before retrying after `failure`, or `None` to give up now.
    fn retry_delay(&self, failure: &Failure, attempt: u32) -> Option<Duration> {
        match failure {
            Failure::Timeout | Failure::Transport(_) => None,
            Failure::Unreachable => Some(self.backoff(attempt)),
            Failure::Status(response) if !is_retryable(response.status()) => None,
            Failure::Status(response) => match upstream_retry_after(response.headers()) {
                // Longer than we will hold a caller: hand the upstream's answer back now.
                Some(wait) if wait > self.policy.retry_after_cap => None,
                Some(wait) => Some(wait),
                None => Some(self.backoff(attempt)),
            },
        }
    }

    /// Reads a whole successful body within what is left of the call's deadline.
    pub async fn read_body(
        &self,
        response: UpstreamResponse,
        started: Instant,
    ) -> Result<Bytes, GatewayError> {
        let read = response.into_body().collect();
        match tokio::time::timeout_at(started + self.timeout, read).await {
            Err(_) => Err(GatewayError::UpstreamTimeout),
            Ok(Err(error)) => Err(GatewayError::UpstreamFailed {
                detail: format!("reading body: {error}"),
            }),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .policy
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.policy.max_delay);
        // Full jitter: spreads retries of many callers hit by the same upstream failure.
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis.max(1)))
    }

    /// Maps a final non-2xx answer to the error table.
    async fn final_error(
        &self,
        endpoint: &Endpoint,
        response: UpstreamResponse,
        deadline: Instant,
    ) -> GatewayError {
        let status = response.status();
        match status.as_u16() {
            401 | 403 => GatewayError::UpstreamAuth { status },
            429 => GatewayError::UpstreamRateLimited {
                retry_after: client_retry_after(response.headers()),
            },
            500..=599 => GatewayError::UpstreamFailed {
                detail: format!("status {status}"),
            },
            _ => {
                let body =
                    tokio::time::timeout_at(deadline, read_capped(response, ERROR_BODY_LIMIT))
                        .await
                        .unwrap_or_default();
                let body = self.scrubber.scrub(body);
                GatewayError::UpstreamRejected {
                    status,
                    body: if endpoint.is_azure() {
                        azure::openai_error(status, &body)
                    } else {
                        body
                    },
                }
            }
        }
    }

    /// Removes response headers that quote an upstream key (none should; a misbehaving
    /// upstream or proxy might).
    fn drop_leaking_headers(&self, headers: &mut HeaderMap) {
        let leaking: Vec<HeaderName> = headers
            .iter()
            .filter(|(_, value)| self.scrubber.leaks(value.as_bytes()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in leaking {
            headers.remove(name);
        }
    }
}

/// `call`'s output, unless `timeout` passes after the upload `sent` signals its end (or fails)
/// first; `None` then.
async fn after_upload<F: std::future::Future>(
    call: F,
    sent: &mut watch::Receiver<bool>,
    timeout: Duration,
) -> Option<F::Output> {
    let expired = async {
        let _ = sent.wait_for(|done| *done).await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        output = call => Some(output),
        () = expired => None,
    }
}

/// Up to `cap` bytes of a body; an error body larger than that is cut, not held in memory.
async fn read_capped(response: UpstreamResponse, cap: usize) -> Bytes {
    let mut incoming = response.into_body();
    let mut body = Vec::new();
    while let Some(Ok(frame)) = incoming.frame().await {
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        let room = cap - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= cap {
            break;
        }
    }
    Bytes::from(body)
}

/// Why an attempt did not succeed.
enum Failure {
    Timeout,
    Unreachable,
    Transport(String),
    Status(UpstreamResponse),
}
