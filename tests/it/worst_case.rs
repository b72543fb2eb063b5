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
    body: Body,
    /// What the upstream reports instead of the mock's own usage (`None`: the mock's own).
    usage: Option<Value>,
    worst_usd: f64,
}

/// A request body: JSON, or a form with these fields and a file of this many bytes.
enum Body {
    Json(Value),
    Form(&'static [(&'static str, &'static str)], usize),
}

fn classes() -> Vec<Class> {
    let mut all = json_classes();
    all.extend(audio_and_upload_classes());
    all
}

fn json_classes() -> Vec<Class> {
    vec![
        Class {
            name: "gpt-5 chat without max_tokens: its 128,000-token limit at $10 per million",
            path: "/v1/chat/completions",
            body: Body::Json(
                json!({ "model": "gpt-5", "messages": [{ "role": "user", "content": "think hard" }] }),
            ),
            usage: Some(json!({
                "prompt_tokens": 12, "completion_tokens": 128_000, "total_tokens": 128_012,
                "completion_tokens_details": { "reasoning_tokens": 120_000 }
            })),
            worst_usd: 128_000.0 * 10.0 / 1e6,
        },
        Class {
            name: "gpt-4o-mini chat with n = 3 and no max: 3 × 16,384 tokens at $0.60 per million",
            path: "/v1/chat/completions",
            body: Body::Json(
                json!({ "model": "gpt-4o-mini", "n": 3, "messages": [{ "role": "user", "content": "three ways" }] }),
            ),
            usage: Some(json!({
                "prompt_tokens": 10, "completion_tokens": 49_152, "total_tokens": 49_162
            })),
            worst_usd: 3.0 * 16_384.0 * 0.60 / 1e6,
        },
        Class {
            name: "o3 Responses without max_output_tokens: 100,000 tokens at $8 per million",
            path: "/v1/responses",
            body: Body::Json(json!({ "model": "o3", "input": "prove it" })),
            usage: Some(json!({
                "input_tokens": 10, "output_tokens": 100_000, "total_tokens": 100_010,
                "output_tokens_details": { "reasoning_tokens": 90_000 }
            })),
            worst_usd: 100_000.0 * 8.0 / 1e6,
        },
        Class {
            name: "gpt-image-1, n = 10, high quality, size auto: 10 × 6,240 image tokens at $40 per million",
            path: "/v1/images/generations",
            body: Body::Json(
                json!({ "model": "gpt-image-1", "prompt": "a fox", "n": 10, "quality": "high" }),
            ),
            usage: None,
            worst_usd: 10.0 * 6_240.0 * 40.0 / 1e6,
        },
        Class {
            name: "dall-e-3 with quality auto (the API's default): one hd image, $0.08",
            path: "/v1/images/generations",
            body: Body::Json(json!({ "model": "dall-e-3", "prompt": "a fox", "quality": "auto" })),
            usage: None,
            worst_usd: 0.08,
        },
    ]
}

/// Audio (by the minute, the character and the token class, each bounded by the request's
/// size) and image uploads.
fn audio_and_upload_classes() -> Vec<Class> {
    // 10,000 base64 characters: 7,500 bytes of audio, at most 10 s (6 kbit/s), 200 tokens.
    let audio = "A".repeat(10_000);
    vec![
        Class {
            name: "whisper-1, a 75,000-byte upload: at most 100.4 s (the form's bytes at 6 kbit/s) at $0.006 a minute",
            path: "/v1/audio/transcriptions",
            body: Body::Form(&[("model", "whisper-1")], 75_000),
            usage: Some(json!({ "type": "duration", "seconds": 100.4 })),
            worst_usd: 100.5 * 0.006 / 60.0,
        },
        Class {
            name: "gpt-4o-transcribe, a 75,000-byte upload: 2,000 audio tokens at $6 and 2,000 out at $10 per million",
            path: "/v1/audio/translations",
            body: Body::Form(&[("model", "gpt-4o-transcribe")], 75_000),
            usage: Some(json!({
                "type": "tokens", "input_tokens": 2_000, "output_tokens": 2_000, "total_tokens": 4_000,
                "input_token_details": { "text_tokens": 0, "audio_tokens": 2_000 }
            })),
            worst_usd: (2_010.0 * 6.0 + 2_000.0 * 10.0) / 1e6,
        },
        Class {
            name: "tts-1, 1,000 characters: $15 per million characters, exactly, from an audio answer",
            path: "/v1/audio/speech",
            body: Body::Json(
                json!({ "model": "tts-1", "input": "a".repeat(1_000), "voice": "alloy" }),
            ),
            usage: None,
            worst_usd: 1_000.0 * 15.0 / 1e6,
        },
        Class {
            name: "gpt-4o-mini-tts streamed: 100 text bytes at $0.60, 16,384 audio tokens at $12 per million",
            path: "/v1/audio/speech",
            body: Body::Json(
                json!({ "model": "gpt-4o-mini-tts", "input": "a".repeat(100), "voice": "alloy", "stream_format": "sse" }),
            ),
            usage: Some(
                json!({ "input_tokens": 100, "output_tokens": 16_384, "total_tokens": 16_484 }),
            ),
            worst_usd: (100.0 * 0.60 + 16_384.0 * 12.0) / 1e6,
        },
        Class {
            name: "gpt-4o-mini-tts answered as raw audio (no usage): it keeps its hold, never free",
            path: "/v1/audio/speech",
            body: Body::Json(
                json!({ "model": "gpt-4o-mini-tts", "input": "a".repeat(100), "voice": "alloy" }),
            ),
            usage: None,
            worst_usd: (100.0 * 0.60 + 16_384.0 * 12.0) / 1e6,
        },
        Class {
            name: "gpt-audio chat that may speak: 200 audio tokens in at $32, 1,000 audio tokens out at $64 per million",
            path: "/v1/chat/completions",
            body: Body::Json(json!({
                "model": "gpt-audio", "modalities": ["text", "audio"], "max_completion_tokens": 1_000,
                "audio": { "voice": "alloy", "format": "wav" },
                "messages": [{ "role": "user", "content": [
                    { "type": "input_audio", "input_audio": { "data": audio, "format": "wav" } }
                ] }]
            })),
            usage: Some(json!({
                "prompt_tokens": 206, "completion_tokens": 1_000, "total_tokens": 1_206,
                "prompt_tokens_details": { "audio_tokens": 200 },
                "completion_tokens_details": { "audio_tokens": 1_000 }
            })),
            worst_usd: (6.0 * 2.5 + 200.0 * 32.0 + 1_000.0 * 64.0) / 1e6,
        },
        Class {
            name: "dall-e-2 variations, n = 3 at 512x512 (a form): 3 × $0.018",
            path: "/v1/images/variations",
            body: Body::Form(
                &[("model", "dall-e-2"), ("n", "3"), ("size", "512x512")],
                1_000,
            ),
            usage: None,
            worst_usd: 3.0 * 0.018,
        },
        Class {
            name: "gpt-image-1 edits, n = 2, high quality (a form): 2 × 6,240 image tokens at $40 per million",
            path: "/v1/images/edits",
            body: Body::Form(
                &[("model", "gpt-image-1"), ("n", "2"), ("quality", "high")],
                1_000,
            ),
            usage: Some(json!({
                "input_tokens": 0, "output_tokens": 12_480, "total_tokens": 12_480
            })),
            worst_usd: 2.0 * 6_240.0 * 40.0 / 1e6,
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
            let request = gw.client.post(gw.url(class.path)).bearer_auth(&secret);
            let request = match &class.body {
                Body::Json(body) => request.json(body),
                Body::Form(fields, file_bytes) => {
                    let (content_type, body) = crate::support::form(fields, *file_bytes);
                    request.header("content-type", content_type).body(body)
                }
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = serde_json::from_slice(&response.bytes().await.unwrap_or_default())
                .unwrap_or_default();
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

/// Two `tollgate serve` processes sharing Redis (budget counters) and PostgreSQL (keys and
/// records), one mock behind both. For each class, a key whose budget holds one and a half
/// worst cases gets four requests at once, two to each process: exactly one is served, and
/// what the records say it spent stays within the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_class_of_model_can_spend_past_a_budget_across_two_processes_sharing_redis() {
    use crate::support::binary;
    use crate::support::engines::{Database, TestDatabase};
    let Some(redis) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let Some(database) = TestDatabase::create(Database::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mock = crate::support::MockServer::start().await;
    let prefix = format!("tg-worst2-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(
        dir.path().join("tollgate.toml"),
        format!("[limits]\nredis_prefix = \"{prefix}\"\nbackend_timeout_ms = 500\n"),
    )
    .unwrap();
    let env = [
        ("OPENAI_API_KEY", crate::support::UPSTREAM_KEY.to_owned()),
        ("OPENAI_BASE_URL", mock.url()),
        ("DATABASE_URL", database.url.clone()),
        ("REDIS_URL", redis),
        (
            "TOLLGATE_CONFIG",
            dir.path().join("tollgate.toml").display().to_string(),
        ),
    ];
    let replicas = [
        binary::serve(&env, dir.path()).await,
        binary::serve(&env, dir.path()).await,
    ];
    let client = reqwest::Client::new();
    let mut keys = Vec::new();
    for class in classes() {
        let budget_usd = class.worst_usd * 1.5;
        let (key_id, secret) = binary::create_key_with(
            &database.url,
            dir.path(),
            &["--budget-usd", &budget_usd.to_string(), "--period", "month"],
        )
        .await;
        if let Some(usage) = &class.usage {
            let fault = json!({ "usage": usage, "count": 10 });
            client
                .post(mock.control("/_mock/faults"))
                .json(&fault)
                .send()
                .await
                .unwrap();
        }
        let sends = (0..4).map(|i| {
            let url = format!("http://{}{}", replicas[i % 2].address, class.path);
            let request = client.post(url).bearer_auth(&secret);
            let request = match &class.body {
                Body::Json(body) => request.json(body),
                Body::Form(fields, file_bytes) => {
                    let (content_type, body) = crate::support::form(fields, *file_bytes);
                    request.header("content-type", content_type).body(body)
                }
            };
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                // Read the whole answer: a stream settles when it ends.
                let _ = response.bytes().await;
                status
            }
        });
        let mut statuses = futures_util::future::join_all(sends).await;
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 429, 429, 429], "{}", class.name);
        client
            .delete(mock.control("/_mock/faults"))
            .send()
            .await
            .unwrap();
        keys.push((class.name, key_id, budget_usd));
    }
    // SIGTERM drains both audit queues into PostgreSQL.
    for replica in replicas {
        replica.signal("TERM").await;
        assert_eq!(replica.finish().await.0, Some(0));
    }
    let config = tollgate::config::Config::from_toml_str(
        "t",
        "",
        &[
            ("OPENAI_API_KEY", "sk-x"),
            ("DATABASE_URL", database.url.as_str()),
        ]
        .into_iter()
        .collect(),
    )
    .unwrap();
    let stores = tollgate::store::connect(&config.database).await.unwrap();
    for (name, key_id, budget_usd) in keys {
        let spent = stores
            .records
            .spend(&SpendScope::Key(key_id), 0)
            .await
            .unwrap();
        let budget = tollgate::pricing::usd_to_nanos(budget_usd);
        assert!(
            spent > 0 && spent <= budget,
            "{name}: spent {spent} n$ of {budget}"
        );
    }
    database.drop_schema().await;
}
