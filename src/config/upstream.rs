//! `[upstream]`: the OpenAI-compatible provider and how it is called.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::source::{Millis, Sources};

/// The default upstream, its key and the call policy (retries, timeouts).
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `OPENAI_API_KEY` (environment only); only ever read by `pipeline::forward` to set the
    /// upstream request's `Authorization`.
    pub api_key: SecretString,
    /// `OPENAI_BASE_URL`, ending in the API version (`/v1`).
    pub base_url: Url,
    /// `OPENAI_ORGANIZATION`, sent as `OpenAI-Organization`.
    pub organization: Option<SecretString>,
    /// `OPENAI_PROJECT`, sent as `OpenAI-Project`.
    pub project: Option<SecretString>,
    /// `OPENAI_ADMIN_KEY` (environment only): an organization admin key, used only to read
    /// OpenAI's Costs and Usage APIs for `tollgate reconcile`; never sent with a request.
    pub admin_key: Option<SecretString>,
    /// `OPENAI_ADMIN_BASE_URL`: where the admin key goes (OpenAI itself by default, not the
    /// upstream, which may be a proxy or another provider); https, or http to loopback only.
    pub admin_base_url: Url,
    /// `OPENAI_MAX_RETRIES`: retries after the first attempt on 408/409/429/5xx/connect errors.
    pub max_retries: u32,
    /// `OPENAI_TIMEOUT`: a whole non-streaming call, retries included.
    pub timeout: Duration,
    /// Time allowed to open a TCP/TLS connection to the upstream.
    pub connect_timeout: Duration,
    /// A stream must deliver its response headers and first event within this time.
    pub stream_first_byte_timeout: Duration,
    /// A stream that goes silent for this long is ended with an error event.
    pub stream_idle_timeout: Duration,
    /// First backoff step; doubled per retry, with full jitter.
    pub retry_base_delay: Duration,
    /// Largest computed backoff step.
    pub retry_max_delay: Duration,
    /// The longest upstream `Retry-After` we wait for before retrying; beyond it the 429 goes
    /// back to the caller at once with the upstream's `Retry-After`.
    pub retry_after_cap: Duration,
    /// Operations forwarded beyond OpenAI's own (`"POST /custom/{id}/run"`): opened by the
    /// operator explicitly, and governed as opaque routes (see `openai::operations`).
    pub extra_paths: Vec<String>,
}

impl UpstreamConfig {
    pub(super) fn read(s: &mut Sources<'_>) -> Self {
        let api_key = s
            .required_env::<SecretString>(
                "OPENAI_API_KEY",
                "required: the upstream provider's key (from the environment only, never the file)",
            )
            .unwrap_or_else(|| SecretString::from(String::new()));
        let default_url = Url::parse("https://api.openai.com/v1")
            .unwrap_or_else(|_| unreachable!("constant URL"));
        let mut base_url: Url = s.get("upstream.base_url", Some("OPENAI_BASE_URL"), default_url);
        if !base_url.path().ends_with('/') {
            base_url.set_path(&format!("{}/", base_url.path()));
        }
        if !base_url.username().is_empty() || base_url.password().is_some() {
            s.invalid(
                "upstream.base_url",
                Some("OPENAI_BASE_URL"),
                "must not carry credentials; use OPENAI_API_KEY",
            );
        }
        let mut admin_base_url: Url = s.get(
            "upstream.admin_base_url",
            Some("OPENAI_ADMIN_BASE_URL"),
            Url::parse("https://api.openai.com/v1/")
                .unwrap_or_else(|_| unreachable!("constant URL")),
        );
        if !admin_base_url.path().ends_with('/') {
            admin_base_url.set_path(&format!("{}/", admin_base_url.path()));
        }
        let loopback = is_loopback(&admin_base_url);
        let carries_credentials =
            !admin_base_url.username().is_empty() || admin_base_url.password().is_some();
        if !(admin_base_url.scheme() == "https" || admin_base_url.scheme() == "http" && loopback)
            || carries_credentials
        {
            s.invalid(
                "upstream.admin_base_url",
                Some("OPENAI_ADMIN_BASE_URL"),
                "must be https (http only to a loopback address), without credentials: the \
                 organization admin key is sent there",
            );
        }
        let max_retries = s.get("upstream.max_retries", Some("OPENAI_MAX_RETRIES"), 3u32);
        if max_retries > 10 {
            s.invalid(
                "upstream.max_retries",
                Some("OPENAI_MAX_RETRIES"),
                format!("at most 10, got {max_retries}"),
            );
        }
        let positive = |s: &mut Sources<'_>, path: &str, env: Option<&str>, default_ms: u64| {
            let value = s
                .get(path, env, Millis(Duration::from_millis(default_ms)))
                .0;
            if value.is_zero() {
                s.invalid(path, env, "must be greater than 0");
            }
            value
        };
        let extra_paths: Vec<String> = s.get("upstream.extra_paths", None, Vec::new());
        for entry in &extra_paths {
            if let Err(why) = crate::openai::operations::parse_extra(entry) {
                s.invalid("upstream.extra_paths", None, format!("{entry:?}: {why}"));
            }
        }
        Self {
            extra_paths,
            api_key,
            base_url,
            organization: s.optional("upstream.organization", Some("OPENAI_ORGANIZATION")),
            project: s.optional("upstream.project", Some("OPENAI_PROJECT")),
            admin_key: s.optional_env("OPENAI_ADMIN_KEY"),
            admin_base_url,
            max_retries,
            timeout: positive(s, "upstream.timeout_ms", Some("OPENAI_TIMEOUT"), 60_000),
            connect_timeout: positive(s, "upstream.connect_timeout_ms", None, 5_000),
            stream_first_byte_timeout: positive(
                s,
                "upstream.stream_first_byte_timeout_ms",
                None,
                60_000,
            ),
            stream_idle_timeout: positive(s, "upstream.stream_idle_timeout_ms", None, 30_000),
            retry_base_delay: positive(s, "upstream.retry_base_delay_ms", None, 250),
            retry_max_delay: positive(s, "upstream.retry_max_delay_ms", None, 8_000),
            retry_after_cap: positive(s, "upstream.retry_after_cap_ms", None, 20_000),
        }
    }
}

/// Whether `url` names this machine (`localhost` or a loopback address): the one place plain
/// `http` may carry a credential (tests, a local mock).
pub(super) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
