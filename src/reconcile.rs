//! Reconciliation: Tollgate's spend beside OpenAI's own account of it, per day and model.
//!
//! OpenAI's Costs API (`/v1/organization/costs`, by line item) and Usage API
//! (`/v1/organization/usage/completions` and `/embeddings`, by model) are read with an
//! organization admin key (`OPENAI_ADMIN_KEY`, environment only), added up per UTC day and base
//! model (dated snapshots folded into their model, as both sides name them differently), and
//! set beside the usage rollups. A day and model is a difference when the costs differ by more
//! than the tolerance or the input or output tokens differ at all. Requests are shown but not
//! compared: Tollgate counts refusals and cache hits that never reached OpenAI.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::pricing::{Nanos, base_model, format_usd};
use crate::store::StoreError;
use crate::store::audit::{GroupBy, RecordStore, UsageQuery, UsageRow};

/// The longest range compared, in days (each side is read whole).
pub const MAX_DAYS: i64 = 93;

/// The default tolerance on a day and model's cost: $0.00001 (OpenAI reports costs as decimal
/// USD, which may not carry every nano-dollar).
pub const DEFAULT_TOLERANCE: Nanos = 10_000;

/// Compares Tollgate's records with OpenAI's Costs and Usage APIs over whole UTC days from
/// `from_ms`'s day through `to_ms` (at most [`MAX_DAYS`]), for `project` when the upstream
/// names one (other projects of the organization are not Tollgate's).
pub async fn reconcile(
    records: &dyn RecordStore,
    (base, admin_key, project): (&Url, Option<&SecretString>, Option<&SecretString>),
    (from_ms, to_ms): (i64, i64),
    tolerance: Nanos,
) -> Result<Report, ReconcileError> {
    const HOUR_MS: i64 = 3_600_000;
    const DAY_MS: i64 = 86_400_000;
    if to_ms.saturating_sub(from_ms) > MAX_DAYS * DAY_MS {
        return Err(ReconcileError::Range);
    }
    // Whole days from `from`'s, through the end of the hour `to` falls in, on both sides.
    let from_ms = from_ms - from_ms.rem_euclid(DAY_MS);
    let to_ms = (to_ms - to_ms.rem_euclid(HOUR_MS)).saturating_add(HOUR_MS);
    let openai = openai_ledger(base, admin_key, project, from_ms / 1000, to_ms / 1000).await?;
    let rows = records
        .usage(&UsageQuery {
            group_by: vec![GroupBy::Day, GroupBy::Model],
            from_ms,
            to_ms,
        })
        .await
        .map_err(ReconcileError::Records)?;
    let mut report = compare(&tollgate_ledger(&rows), &openai, tolerance);
    report.from = day_of(from_ms / 1000);
    report.to = day_of((to_ms - 1) / 1000);
    Ok(report)
}

/// One day and model's totals on one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Line {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_nanos: Nanos,
}

/// Totals by `(YYYY-MM-DD, base model)`.
pub type Ledger = BTreeMap<(String, String), Line>;

/// Tollgate's side, from usage rows grouped by day and model.
pub fn tollgate_ledger(rows: &[UsageRow]) -> Ledger {
    let mut ledger = Ledger::new();
    for row in rows {
        let (Some(day), Some(model)) = (&row.day, &row.model) else {
            continue;
        };
        let line = ledger
            .entry((day.clone(), base_model(model).to_owned()))
            .or_default();
        line.requests += row.totals.requests - row.totals.errors;
        line.input_tokens += row.totals.prompt_tokens;
        line.output_tokens += row.totals.completion_tokens;
        line.cost_nanos += row.totals.cost_nanos;
    }
    ledger
}

/// Why OpenAI's side could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(
        "OPENAI_ADMIN_KEY is not set: reconciliation reads OpenAI's Costs and Usage APIs with an organization admin key"
    )]
    NoAdminKey,
    #[error("reading {what} from OpenAI: {detail}")]
    Upstream { what: &'static str, detail: String },
    #[error("reading the records: {0}")]
    Records(StoreError),
    #[error("a range of at most {MAX_DAYS} days")]
    Range,
}

/// A page of an organization API: buckets of results.
#[derive(Deserialize)]
struct Page<T> {
    data: Vec<Bucket<T>>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    next_page: Option<String>,
}

#[derive(Deserialize)]
struct Bucket<T> {
    start_time: i64,
    #[serde(default = "Vec::new")]
    results: Vec<T>,
}

#[derive(Deserialize)]
struct CostResult {
    amount: Amount,
    #[serde(default)]
    line_item: Option<String>,
}

#[derive(Deserialize)]
struct Amount {
    /// USD.
    value: f64,
}

#[derive(Deserialize)]
struct UsageResult {
    #[serde(default)]
    input_tokens: i64,
    #[serde(default)]
    output_tokens: i64,
    #[serde(default)]
    num_model_requests: i64,
    #[serde(default)]
    model: Option<String>,
}

/// OpenAI's side between `from_s` and `to_s` (Unix seconds), read from the API under `base`
/// (the upstream's base URL, ending in `/v1/`).
pub async fn openai_ledger(
    base: &Url,
    admin_key: Option<&SecretString>,
    project: Option<&SecretString>,
    from_s: i64,
    to_s: i64,
) -> Result<Ledger, ReconcileError> {
    let admin_key = admin_key.ok_or(ReconcileError::NoAdminKey)?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| upstream("a client", &e))?;
    let read = Reader {
        client,
        base,
        admin_key,
        project,
        from_s,
        to_s,
    };
    let mut ledger = Ledger::new();
    for (start, cost) in read.pages::<CostResult>("costs", "line_item").await? {
        let model = cost
            .line_item
            .as_deref()
            .map_or("", |item| item.split(',').next().unwrap_or(item).trim());
        #[expect(clippy::cast_possible_truncation, reason = "USD amounts of one day")]
        let nanos = (cost.amount.value * 1e9).round() as Nanos;
        line(&mut ledger, start, model).cost_nanos += nanos;
    }
    for route in ["usage/completions", "usage/embeddings"] {
        for (start, usage) in read.pages::<UsageResult>(route, "model").await? {
            let entry = line(&mut ledger, start, usage.model.as_deref().unwrap_or(""));
            entry.requests += usage.num_model_requests;
            entry.input_tokens += usage.input_tokens;
            entry.output_tokens += usage.output_tokens;
        }
    }
    Ok(ledger)
}

/// The ledger line of the day starting at `start_s` and `model`'s base model.
fn line<'a>(ledger: &'a mut Ledger, start_s: i64, model: &str) -> &'a mut Line {
    ledger
        .entry((day_of(start_s), base_model(model).to_owned()))
        .or_default()
}

/// `YYYY-MM-DD` of a Unix time (UTC).
fn day_of(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

fn upstream(what: &'static str, error: &dyn std::fmt::Display) -> ReconcileError {
    ReconcileError::Upstream {
        what,
        detail: error.to_string(),
    }
}

/// Reads one organization API, page by page.
struct Reader<'a> {
    client: reqwest::Client,
    base: &'a Url,
    admin_key: &'a SecretString,
    project: Option<&'a SecretString>,
    from_s: i64,
    to_s: i64,
}

impl Reader<'_> {
    /// Every result of `route` in daily buckets grouped by `group_by`, with its bucket's start.
    async fn pages<T: serde::de::DeserializeOwned>(
        &self,
        route: &'static str,
        group_by: &str,
    ) -> Result<Vec<(i64, T)>, ReconcileError> {
        let mut url = self
            .base
            .join(&format!("organization/{route}"))
            .map_err(|e| upstream(route, &e))?;
        url.query_pairs_mut()
            .append_pair("start_time", &self.from_s.to_string())
            .append_pair("end_time", &self.to_s.to_string())
            .append_pair("bucket_width", "1d")
            .append_pair("group_by", group_by)
            .append_pair("limit", "31");
        if let Some(project) = self.project {
            url.query_pairs_mut()
                .append_pair("project_ids", project.expose_secret());
        }
        let mut results = Vec::new();
        let mut cursor: Option<String> = None;
        // A bound on pages: 100 × 31 days is more than any range asked for.
        for _ in 0..100 {
            let mut page_url = url.clone();
            if let Some(cursor) = &cursor {
                page_url.query_pairs_mut().append_pair("page", cursor);
            }
            let response = self
                .client
                .get(page_url)
                .bearer_auth(self.admin_key.expose_secret())
                .send()
                .await
                .map_err(|e| upstream(route, &e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(upstream(route, &format!("status {status}")));
            }
            let page: Page<T> = response.json().await.map_err(|e| upstream(route, &e))?;
            for bucket in page.data {
                results.extend(bucket.results.into_iter().map(|r| (bucket.start_time, r)));
            }
            match page.next_page {
                Some(next) if page.has_more => cursor = Some(next),
                _ => return Ok(results),
            }
        }
        Ok(results)
    }
}

/// One side's totals, as the report shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_nanos: Nanos,
    pub cost_usd: String,
}

impl From<Line> for Side {
    fn from(line: Line) -> Self {
        Self {
            requests: line.requests,
            input_tokens: line.input_tokens,
            output_tokens: line.output_tokens,
            cost_nanos: line.cost_nanos,
            cost_usd: format_usd(line.cost_nanos),
        }
    }
}

/// A day and model on which the two sides disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub day: String,
    pub model: String,
    pub tollgate: Side,
    pub openai: Side,
    /// OpenAI's cost minus Tollgate's: positive when OpenAI billed more.
    pub cost_difference_usd: String,
}

/// The comparison of the two ledgers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The first and last day compared (UTC).
    pub from: String,
    pub to: String,
    /// Days and models on which both sides agree.
    pub matched: usize,
    pub tolerance_usd: String,
    pub differences: Vec<Difference>,
}

/// Sets the ledgers side by side: every day and model either side has.
pub fn compare(tollgate: &Ledger, openai: &Ledger, tolerance: Nanos) -> Report {
    let mut keys: Vec<&(String, String)> = tollgate.keys().chain(openai.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut report = Report {
        from: String::new(),
        to: String::new(),
        matched: 0,
        tolerance_usd: format_usd(tolerance),
        differences: Vec::new(),
    };
    for key in keys {
        let ours = tollgate.get(key).copied().unwrap_or_default();
        let theirs = openai.get(key).copied().unwrap_or_default();
        let agree = (ours.cost_nanos - theirs.cost_nanos).abs() <= tolerance
            && ours.input_tokens == theirs.input_tokens
            && ours.output_tokens == theirs.output_tokens;
        if agree {
            report.matched += 1;
            continue;
        }
        report.differences.push(Difference {
            day: key.0.clone(),
            model: key.1.clone(),
            tollgate: ours.into(),
            openai: theirs.into(),
            cost_difference_usd: format_usd(theirs.cost_nanos - ours.cost_nanos),
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(input_tokens: i64, cost_nanos: Nanos) -> Line {
        Line {
            requests: 1,
            input_tokens,
            output_tokens: 0,
            cost_nanos,
        }
    }

    #[test]
    fn days_and_models_either_side_has_are_compared_within_the_tolerance() {
        let key = |day: &str, model: &str| (day.to_owned(), model.to_owned());
        let tollgate = Ledger::from([
            (key("2026-12-01", "gpt-4o"), line(100, 1_000)),
            (key("2026-12-01", "o3"), line(10, 5_000)),
            (key("2026-12-02", "gpt-4o"), line(7, 700)),
        ]);
        let openai = Ledger::from([
            // Within the tolerance of 10 n$.
            (key("2026-12-01", "gpt-4o"), line(100, 1_009)),
            // OpenAI billed more.
            (key("2026-12-01", "o3"), line(10, 9_000)),
            // Only OpenAI saw it.
            (key("2026-12-03", "gpt-4o-mini"), line(3, 60)),
        ]);
        let report = compare(&tollgate, &openai, 10);
        assert_eq!(report.matched, 1);
        let found: Vec<(&str, &str, &str)> = report
            .differences
            .iter()
            .map(|d| {
                (
                    d.day.as_str(),
                    d.model.as_str(),
                    d.cost_difference_usd.as_str(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("2026-12-01", "o3", "0.000004"),
                ("2026-12-02", "gpt-4o", "-0.0000007"),
                ("2026-12-03", "gpt-4o-mini", "0.00000006"),
            ]
        );
    }
}
