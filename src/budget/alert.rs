//! Budget alerts: one log line, one metric and one webhook POST per crossing of `alert_at`.
//!
//! The crossing is decided where the counters are (the backend marks a window as alerted in
//! the same atomic step that crosses it), so with any number of replicas each crossing alerts
//! exactly once. The POST runs on the task tracker, off the request path, and is retried with
//! backoff; a receiver that stays down loses the alert after the last attempt (logged).
//!
//! The body carries a sentence for people (`text`, which Slack's and Teams' incoming webhooks
//! show) beside the fields for programs; `budgets.alert_format = "slack"` sends the sentence
//! alone, for receivers that refuse fields they do not know.

use std::time::Duration;

use serde::Serialize;
use tokio_util::task::TaskTracker;
use url::Url;

use super::BudgetLine;
use crate::config::AlertFormat;
use crate::pricing::{Nanos, display_usd, format_usd};
use crate::records::SpendScope;

const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The webhook's JSON body.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetAlert {
    /// One sentence for people: whose budget, how much of it is spent, in which period.
    pub text: String,
    pub event: &'static str,
    /// `key`, `key_user`, `jwt_user` or `anonymous_user`.
    pub scope: &'static str,
    pub key_id: Option<String>,
    pub user: Option<String>,
    pub period: crate::config::BudgetPeriod,
    pub window_start_ms: i64,
    pub max_usd: f64,
    pub alert_threshold_usd: String,
    pub spent_usd: String,
}

impl BudgetAlert {
    /// The alert for `line` having reached `spent`.
    pub fn new(line: &BudgetLine, spent: Nanos) -> Self {
        let (scope, key_id, user) = match &line.scope {
            SpendScope::Key(key) => ("key", Some(key.clone()), None),
            SpendScope::KeyUser(key, user) => ("key_user", Some(key.clone()), Some(user.clone())),
            SpendScope::Jwt(user) => ("jwt_user", None, Some(user.clone())),
            SpendScope::Anonymous(user) => ("anonymous_user", None, Some(user.clone())),
        };
        let whose = match (&key_id, &user) {
            (Some(key), None) => format!("Key {}", inert(key)),
            (Some(key), Some(user)) => format!("User {} of key {}", inert(user), inert(key)),
            (None, Some(user)) if scope == "jwt_user" => format!("JWT user {}", inert(user)),
            (None, Some(user)) => format!("Anonymous caller {}", inert(user)),
            (None, None) => "A caller".to_owned(),
        };
        let period = match line.period {
            crate::config::BudgetPeriod::Day => "daily",
            crate::config::BudgetPeriod::Month => "monthly",
            crate::config::BudgetPeriod::Total => "total",
        };
        let text = format!(
            "Tollgate budget alert: {whose} has spent {} of its {} {period} budget (alert at {}).",
            display_usd(spent),
            display_usd(line.limit),
            display_usd(line.alert_threshold),
        );
        Self {
            text,
            event: "budget.alert",
            scope,
            key_id,
            user,
            period: line.period,
            window_start_ms: line.window_start_ms,
            max_usd: line.max_usd,
            alert_threshold_usd: format_usd(line.alert_threshold),
            spent_usd: format_usd(spent),
        }
    }
}

/// A caller-chosen name (a user id comes from `x-user-id`) as text a chat app shows and never
/// acts on: a code span (no links, no formatting), without backticks to break out of it, and
/// with Slack's three escapes, so `<!channel>` or `<https://…|click>` is not a mention or a link.
fn inert(name: &str) -> String {
    let escaped = name
        .replace('`', "'")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!("`{escaped}`")
}

/// Sends alerts to `TOLLGATE_ALERT_WEBHOOK`, if set.
#[derive(Debug, Clone)]
pub struct AlertSender {
    client: reqwest::Client,
    url: Option<Url>,
    format: AlertFormat,
}

impl AlertSender {
    pub fn new(url: Option<Url>, format: AlertFormat) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            url,
            format,
        }
    }

    /// Logs and counts the crossing, and POSTs it in the background.
    pub fn send(&self, tasks: &TaskTracker, alert: BudgetAlert) {
        tracing::warn!(
            budget.scope = alert.scope,
            key.id = alert.key_id.as_deref(),
            budget.spent_usd = %alert.spent_usd,
            budget.max_usd = alert.max_usd,
            "budget alert threshold crossed"
        );
        crate::metrics::record_budget_alert(alert.scope);
        let Some(url) = self.url.clone() else {
            return;
        };
        let client = self.client.clone();
        let body = match self.format {
            AlertFormat::Json => serde_json::to_value(&alert).unwrap_or_default(),
            AlertFormat::Slack => serde_json::json!({ "text": alert.text }),
        };
        tasks.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=ATTEMPTS {
                match client.post(url.clone()).json(&body).send().await {
                    Ok(response) if response.status().is_success() => return,
                    Ok(response) => {
                        tracing::warn!(attempt, status = response.status().as_u16(), "budget alert webhook refused");
                    }
                    Err(error) => {
                        tracing::warn!(attempt, error = %error.without_url(), "budget alert webhook unreachable");
                    }
                }
                if attempt < ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            tracing::error!("budget alert webhook failed after every attempt; the alert is lost");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BudgetPeriod, BudgetSpec};

    #[test]
    fn the_alert_says_in_a_sentence_whose_budget_and_how_much() {
        let spec = BudgetSpec {
            max_usd: 10.0,
            period: BudgetPeriod::Month,
            alert_at: 0.8,
        };
        let line = BudgetLine::new(
            SpendScope::KeyUser("key_1".to_owned(), "ann".to_owned()),
            &spec,
            0,
        );
        let alert = BudgetAlert::new(&line, 8_000_374_000);
        assert_eq!(
            alert.text,
            "Tollgate budget alert: User `ann` of key `key_1` has spent $8.000374 of its $10.00 \
             monthly budget (alert at $8.00)."
        );
        // A user id is the caller's to choose: in the operator's channel it is only text.
        let hostile = BudgetLine::new(
            SpendScope::KeyUser(
                "key_1".to_owned(),
                "<!channel> `[x](https://evil)`".to_owned(),
            ),
            &spec,
            0,
        );
        let text = BudgetAlert::new(&hostile, 1).text;
        assert!(
            text.contains("User `&lt;!channel&gt; '[x](https://evil)'` of key"),
            "{text}"
        );
        let body = serde_json::to_value(&alert).unwrap();
        assert_eq!(body["text"], alert.text.as_str());
        assert_eq!(body["spent_usd"], "8.000374");
    }
}
