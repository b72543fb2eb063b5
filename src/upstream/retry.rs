//! Retry timing: which answers are worth retrying, and what `Retry-After` the upstream asked
//! for and the caller is told.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

/// The retry and timeout policy, from `[upstream]`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub retry_after_cap: Duration,
}

/// Whether an answer with `status` is worth another attempt.
pub(super) fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error()
}

/// The delay the upstream asked for: OpenAI's `retry-after-ms`, else `Retry-After` in seconds
/// or as an HTTP date.
pub fn upstream_retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_millis(ms as u64));
    }
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_millis((seconds * 1000.0) as u64));
    }
    let when = httpdate_to_unix(value)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(when.saturating_sub(now)))
}

/// The `Retry-After` we give the caller for an upstream 429: whole seconds, rounded up.
pub(super) fn client_retry_after(headers: &HeaderMap) -> Option<HeaderValue> {
    let wait = upstream_retry_after(headers)?;
    let seconds = wait.as_millis().div_ceil(1000).max(1);
    HeaderValue::from_str(&seconds.to_string()).ok()
}

fn httpdate_to_unix(value: &str) -> Option<u64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let parsed = time::PrimitiveDateTime::parse(value, format).ok()?;
    u64::try_from(parsed.assume_utc().unix_timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_every_spelling() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(upstream_retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(
            upstream_retry_after(&headers),
            Some(Duration::from_millis(150))
        );
        let mut dated = HeaderMap::new();
        dated.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(upstream_retry_after(&dated), Some(Duration::ZERO));
        let mut junk = HeaderMap::new();
        junk.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(upstream_retry_after(&junk), None);
    }

    #[test]
    fn the_caller_gets_whole_seconds_rounded_up() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after-ms", HeaderValue::from_static("1200"));
        assert_eq!(
            client_retry_after(&headers),
            Some(HeaderValue::from_static("2"))
        );
    }
}
