//! Budget alerts: one log line, one metric and one webhook POST per crossing of `alert_at`.
//!
//! The crossing is decided where the counters are (the backend marks a window as alerted in
//! the same atomic step that crosses it), so with any number of replicas each crossing alerts
//! exactly once. The POST runs on the task tracker, off the request path, and is retried with
//! backoff; a receiver that stays down loses the alert after the last attempt (logged).

use std::time::Duration;

use serde::Serialize;
use tokio_util::task::TaskTracker;
use url::Url;

use super::BudgetLine;
use crate::pricing::{Nanos, format_usd};
use crate::records::SpendScope;

const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The webhook's JSON body.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetAlert {
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
        Self {
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

/// Sends alerts to `TOLLGATE_ALERT_WEBHOOK`, if set.
#[derive(Debug, Clone)]
pub struct AlertSender {
    client: reqwest::Client,
    url: Option<Url>,
}

impl AlertSender {
    pub fn new(url: Option<Url>) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            url,
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
        tasks.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=ATTEMPTS {
                match client.post(url.clone()).json(&alert).send().await {
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
