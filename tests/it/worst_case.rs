//! Worst case means worst case: for each class of model, an upstream that bills the most a
//! request allows cannot take a key past its budget. Each budget is sized for one and a half
//! worst cases, so one request fits and the next must be refused; the upstream then reports
//! the largest usage the request permits (the model's own output limit when the request sets
//! none, every choice, the dearest image) and the recorded spend must stay within the budget.

use serde_json::{Value, json};
use tollgate::config::{BudgetPeriod, BudgetSpec};
use tollgate::keys::{KeyBudgets, NewKey};
use tollgate::records::SpendScope;

use crate::support::TestGateway;
use crate::support::engines::required_env;

/// One class of request, and the most its answer can cost, in USD, written out from the price
/// table (USD per million tokens) and the model's output limit.
struct Class {
    name: &'static str,
    path: &'static str,
    body: Value,
    /// What the upstream reports instead of the mock's own usage (`None`: the mock's own).
    usage: Option<Value>,
    worst_usd: f64,
}

fn classes() -> Vec<Class> {
    vec![
        Class {
            name: "gpt-5 chat without max_tokens: its 128,000-token limit at $10 per million",
            path: "/v1/chat/completions",
            body: json!({ "model": "gpt-5", "messages": [{ "role": "user", "content": "think hard" }] }),
            usage: Some(json!({
                "prompt_tokens": 12, "completion_tokens": 128_000, "total_tokens": 128_012,
                "completion_tokens_details": { "reasoning_tokens": 120_000 }
            })),
            worst_usd: 128_000.0 * 10.0 / 1e6,
        },
        Class {
            name: "gpt-4o-mini chat with n = 3 and no max: 3 × 16,384 tokens at $0.60 per million",
            path: "/v1/chat/completions",
            body: json!({ "model": "gpt-4o-mini", "n": 3, "messages": [{ "role": "user", "content": "three ways" }] }),
            usage: Some(json!({
                "prompt_tokens": 10, "completion_tokens": 49_152, "total_tokens": 49_162
            })),
            worst_usd: 3.0 * 16_384.0 * 0.60 / 1e6,
        },
        Class {
            name: "o3 Responses without max_output_tokens: 100,000 tokens at $8 per million",
            path: "/v1/responses",
            body: json!({ "model": "o3", "input": "prove it" }),
            usage: Some(json!({
                "input_tokens": 10, "output_tokens": 100_000, "total_tokens": 100_010,
                "output_tokens_details": { "reasoning_tokens": 90_000 }
            })),
            worst_usd: 100_000.0 * 8.0 / 1e6,
        },
        Class {
            name: "gpt-image-1, n = 10, high quality, size auto: 10 × 6,240 image tokens at $40 per million",
            path: "/v1/images/generations",
            body: json!({ "model": "gpt-image-1", "prompt": "a fox", "n": 10, "quality": "high" }),
            usage: None,
            worst_usd: 10.0 * 6_240.0 * 40.0 / 1e6,
        },
        Class {
            name: "dall-e-3 with quality auto (the API's default): one hd image, $0.08",
            path: "/v1/images/generations",
            body: json!({ "model": "dall-e-3", "prompt": "a fox", "quality": "auto" }),
            usage: None,
            worst_usd: 0.08,
        },
    ]
}

/// A gateway with its budget counters in memory, or in Redis under a prefix of its own.
async fn gateway(redis: Option<&str>) -> TestGateway {
    let mut builder = TestGateway::builder();
    if let Some(url) = redis {
        let prefix = format!("tg-worst-{}:", uuid::Uuid::new_v4().simple());
        builder = builder.env("REDIS_URL", url).toml(&format!(
            "[limits]\nredis_prefix = \"{prefix}\"\nbackend_timeout_ms = 500\n"
        ));
    }
    builder.start().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_class_of_model_can_spend_past_a_budget_in_memory() {
    spends_within_budgets(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_class_of_model_can_spend_past_a_budget_in_redis() {
    let Some(url) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    spends_within_budgets(Some(&url)).await;
}

async fn spends_within_budgets(redis: Option<&str>) {
    for class in classes() {
        let gw = gateway(redis).await;
        let budget_usd = class.worst_usd * 1.5;
        let (key_id, secret) = gw
            .create_key_with(NewKey {
                name: "budgeted".into(),
                budgets: KeyBudgets {
                    key: Some(BudgetSpec {
                        max_usd: budget_usd,
                        period: BudgetPeriod::Month,
                        alert_at: 1.0,
                    }),
                    user: None,
                },
                ..NewKey::default()
            })
            .await;
        if let Some(usage) = &class.usage {
            gw.fault(json!({ "usage": usage, "count": 10 })).await;
        }
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let response = gw
                .client
                .post(gw.url(class.path))
                .bearer_auth(&secret)
                .json(&class.body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or_default();
            if status == 429 {
                assert_eq!(
                    body["error"]["code"], "insufficient_quota",
                    "{}: {body}",
                    class.name
                );
            }
            statuses.push(status);
        }
        assert_eq!(
            statuses,
            [200, 429, 429],
            "{}: one worst case fits a budget of one and a half, the next does not",
            class.name
        );
        gw.state.finish_records().await;
        let spent = gw
            .state
            .records
            .spend(&SpendScope::Key(key_id), 0)
            .await
            .unwrap();
        let budget = tollgate::pricing::usd_to_nanos(budget_usd);
        assert!(spent > 0, "{}: the answer was priced", class.name);
        assert!(
            spent <= budget,
            "{}: spent {spent} n$ of a budget of {budget} n$",
            class.name
        );
        gw.stop().await;
    }
}
