//! The mock's bill: what it served, by day and model, answered through OpenAI's organization
//! Costs and Usage APIs (`GET /v1/organization/costs`, `/usage/completions`,
//! `/usage/embeddings`, daily buckets), which need an admin key (`sk-admin…`).
//!
//! Every JSON answer with usage is counted and priced with the built-in table (on the tier it
//! reports); streamed answers are not (the mock does not read back what it streamed). `POST
//! /_mock/ledger` adds a line the gateway never saw (`model`, `kind` = `completions` or
//! `embeddings`, `input_tokens`, `output_tokens`, `requests`, `cost_usd`), so a test can make
//! a known difference for reconciliation to find.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::openai::usage::{ResponseSummary, Usage};
use crate::pricing::{PriceTable, ServiceTier};

/// What one day and model cost at the mock.
#[derive(Debug, Default, Clone, Copy)]
struct Line {
    requests: i64,
    input_tokens: i64,
    output_tokens: i64,
    input_nanos: i64,
    output_nanos: i64,
}

/// `(day start, Unix seconds; "completions" or "embeddings"; model)`.
type Key = (i64, &'static str, String);

/// The bill, kept by the mock's state.
#[derive(Debug, Default)]
pub struct Ledger {
    lines: Mutex<BTreeMap<Key, Line>>,
}

/// A line added by a test (`POST /_mock/ledger`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraLine {
    model: String,
    #[serde(default = "completions")]
    kind: String,
    #[serde(default)]
    input_tokens: i64,
    #[serde(default)]
    output_tokens: i64,
    #[serde(default)]
    requests: i64,
    #[serde(default)]
    cost_usd: f64,
}

fn completions() -> String {
    "completions".to_owned()
}

const DAY_S: i64 = 86_400;

/// The prices the mock bills at: the built-in table.
static PRICES: std::sync::LazyLock<PriceTable> = std::sync::LazyLock::new(PriceTable::builtin);

fn today() -> i64 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    now - now.rem_euclid(DAY_S)
}

impl Ledger {
    /// Counts one answer of `path` (`/embeddings` or a completion route).
    pub fn count(&self, path: &str, summary: &ResponseSummary) {
        let (Some(model), Some(usage)) = (&summary.model, summary.usage) else {
            return;
        };
        let prices = &*PRICES;
        let tier = ServiceTier::parse(summary.service_tier.as_deref());
        let priced = |usage: Usage| {
            prices
                .cost_at(model, &usage, crate::pricing::Asked::default(), tier)
                .unwrap_or_default()
        };
        let input_nanos = priced(Usage {
            completion_tokens: 0,
            reasoning_tokens: 0,
            ..usage
        });
        let output_nanos = priced(Usage {
            completion_tokens: usage.completion_tokens,
            reasoning_tokens: usage.reasoning_tokens,
            ..Usage::default()
        });
        let kind = if path == "/embeddings" {
            "embeddings"
        } else {
            "completions"
        };
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.add(
            (today(), kind, model.clone()),
            Line {
                requests: 1,
                input_tokens: as_i64(usage.prompt_tokens),
                output_tokens: as_i64(usage.completion_tokens),
                input_nanos,
                output_nanos,
            },
        );
    }

    /// Adds a test's line (today, its whole cost as input).
    pub fn add_extra(&self, extra: &ExtraLine) -> Result<(), String> {
        let kind = match extra.kind.as_str() {
            "completions" => "completions",
            "embeddings" => "embeddings",
            other => return Err(format!("kind is completions or embeddings, not {other:?}")),
        };
        #[expect(clippy::cast_possible_truncation, reason = "a test's small amount")]
        let nanos = (extra.cost_usd * 1e9).round() as i64;
        self.add(
            (today(), kind, extra.model.clone()),
            Line {
                requests: extra.requests,
                input_tokens: extra.input_tokens,
                output_tokens: extra.output_tokens,
                input_nanos: nanos,
                output_nanos: 0,
            },
        );
        Ok(())
    }

    fn add(&self, key: Key, line: Line) {
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let into = lines.entry(key).or_default();
        into.requests += line.requests;
        into.input_tokens += line.input_tokens;
        into.output_tokens += line.output_tokens;
        into.input_nanos += line.input_nanos;
        into.output_nanos += line.output_nanos;
    }

    /// The organization API at `route` (`costs`, `usage/completions`, `usage/embeddings`) for
    /// the query's `start_time` and `end_time`, in daily buckets; `None` for another route.
    pub fn answer(&self, route: &str, query: &BTreeMap<String, String>) -> Option<Value> {
        let bound = |name: &str, default: i64| {
            query
                .get(name)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(default)
        };
        if !matches!(route, "costs" | "usage/completions" | "usage/embeddings") {
            return None;
        }
        let start = bound("start_time", 0);
        let end = bound("end_time", i64::MAX);
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut buckets: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
        for ((day, kind, model), line) in lines {
            if day + DAY_S <= start || day >= end {
                continue;
            }
            let results = buckets.entry(day).or_default();
            match route {
                "costs" => {
                    for (item, nanos) in
                        [("input", line.input_nanos), ("output", line.output_nanos)]
                    {
                        #[expect(
                            clippy::cast_precision_loss,
                            reason = "decimal USD, as OpenAI reports it"
                        )]
                        let value = nanos as f64 / 1e9;
                        results.push(json!({
                            "object": "organization.costs.result",
                            "amount": { "value": value, "currency": "usd" },
                            "line_item": format!("{model}, {item}"),
                            "project_id": null,
                        }));
                    }
                }
                "usage/completions" | "usage/embeddings" if route.ends_with(kind) => {
                    results.push(json!({
                        "object": format!("organization.usage.{kind}.result"),
                        "input_tokens": line.input_tokens,
                        "output_tokens": line.output_tokens,
                        "num_model_requests": line.requests,
                        "model": model,
                    }));
                }
                _ => {}
            }
        }
        let data: Vec<Value> = buckets
            .into_iter()
            .map(|(day, results)| {
                json!({
                    "object": "bucket",
                    "start_time": day,
                    "end_time": day + DAY_S,
                    "results": results,
                })
            })
            .collect();
        Some(json!({ "object": "page", "data": data, "has_more": false, "next_page": null }))
    }
}
