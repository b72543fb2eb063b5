//! Money, exactly, end to end: costs in nano-dollars add up to their true price through the
//! records, the rollups and the admin usage API; every upstream call has its record, even one
//! whose caller left.

use futures_util::future::join_all;
use serde_json::{Value, json};
use tollgate::budget::BudgetLine;
use tollgate::config::{BudgetPeriod, BudgetSpec};
use tollgate::keys::{KeyBudgets, NewKey, now_ms};
use tollgate::records::SpendScope;

use crate::support::{TestGateway, eventually};

const ADMIN: &str = "money-suite-admin-token-0123456789";

/// A budget no test here comes near: what it holds and settles is what is checked.
fn ten_dollars_a_month() -> BudgetSpec {
    BudgetSpec {
        max_usd: 10.0,
        period: BudgetPeriod::Month,
        alert_at: 1.0,
    }
}

/// A key held to `budget`: its id and secret.
async fn budgeted_key(gw: &TestGateway, budget: &BudgetSpec) -> (String, String) {
    gw.create_key_with(NewKey {
        name: "budgeted".into(),
        budgets: KeyBudgets {
            key: Some(budget.clone()),
            user: None,
        },
        ..NewKey::default()
    })
    .await
}

/// A thousand 3-token embeddings at $0.02 per million tokens cost 60 n$ each, exactly $0.00006
/// together. In micro-dollars each call rounded to 0 and the thousand to $0.00.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tiny_calls_add_up_to_their_true_price() {
    let gw = TestGateway::builder()
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .start()
        .await
        .unwrap();
    let mut tokens = 0;
    for round in 0..10 {
        // Each input its own (three words, three tokens to the mock), so none is a cache hit.
        let bodies: Vec<Value> = (0..100)
            .map(|i| json!({ "model": "text-embedding-3-small", "input": format!("tiny call {round}x{i}") }))
            .collect();
        let calls = bodies
            .iter()
            .map(|body| gw.post("/v1/embeddings", body).send());
        for response in join_all(calls).await {
            let response = response.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.headers()["x-tollgate-cost-usd"],
                "0.00000006",
                "one call's exact cost"
            );
            let answer: Value = response.json().await.unwrap();
            tokens += answer["usage"]["prompt_tokens"].as_i64().unwrap();
        }
    }
    assert_eq!(tokens, 3_000);
    gw.state.finish_records().await;
    let usage: Value = gw
        .client
        .get(gw.url("/admin/usage?group_by=model"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "text-embedding-3-small")
        .unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(row["requests"], 1_000, "{row}");
    // 3,000 tokens × 20 n$ (USD 0.02 per million).
    assert_eq!(row["cost_nanos"], 3_000 * 20, "{row}");
    assert_eq!(row["cost_usd"], "0.000060", "{row}");
    gw.stop().await;
}

/// A caller who gives up on a plain call while the upstream is still answering: the upstream
/// call is cancelled (`streaming::a_client_that_leaves_a_plain_call_cancels_it_too`), but it
/// may have run, so its record says so — outcome `client_left`, the prompt as estimated and the
/// most output the request allowed, priced at the worst case its budget was charged, marked
/// estimated. Before, the call left no record at all while its budget paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_leaves_a_plain_call_leaves_its_record_at_the_worst_case() {
    let gw = TestGateway::start().await;
    let budget = ten_dollars_a_month();
    let (key_id, secret) = budgeted_key(&gw, &budget).await;
    // One call first, so the one that matters pays no first-call costs (a cold key cache, a
    // tokenizer still loading) before its caller's patience runs out.
    let warm = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&secret)
        .json(&json!({
            "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "warm up" }]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    let line = BudgetLine::new(SpendScope::Key(key_id.clone()), &budget, now_ms());
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            gw.state.budgets.spent(&line).await.unwrap_or(0) > 0
        })
        .await
    );
    let before = gw.state.budgets.spent(&line).await.unwrap();
    gw.fault(json!({ "latency_ms": 800 })).await;
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let gone = impatient
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&secret)
        .header("x-request-id", "left-before-the-answer")
        .json(&json!({
            "model": "gpt-4o-mini",
            "max_tokens": 50,
            "messages": [{ "role": "user", "content": "echo: worth paying for" }]
        }))
        .send()
        .await;
    assert!(gone.is_err(), "the caller gave up first");
    let record = gw.record_of("left-before-the-answer").await;
    assert_eq!(record.outcome, "client_left", "{record:?}");
    assert_eq!(record.status, 499, "{record:?}");
    assert_eq!(
        record.key_id.as_deref(),
        Some(key_id.as_str()),
        "{record:?}"
    );
    assert!(record.estimated, "{record:?}");
    assert_eq!(
        record.usage.completion_tokens, 50,
        "the most it allowed: {record:?}"
    );
    assert!(record.usage.prompt_tokens > 0, "{record:?}");
    // gpt-4o-mini: $0.15 in and $0.60 out per million, 150 and 600 n$ a token.
    let worst = (record.usage.prompt_tokens * 150 + 50 * 600) as i64;
    assert_eq!(record.cost_nanos, Some(worst), "{record:?}");
    let settled = eventually(std::time::Duration::from_secs(5), || async {
        gw.state.budgets.spent(&line).await.ok() == Some(before + worst)
    })
    .await;
    assert!(settled, "the budget was charged what the record says");
    gw.state.finish_records().await;
    let recorded = gw
        .state
        .records
        .spend(&SpendScope::Key(key_id), 0)
        .await
        .unwrap();
    assert_eq!(
        recorded,
        before + worst,
        "and the records, which seed the budget after a restart"
    );
    gw.stop().await;
}

/// Posts `body` to `path` with the gateway's key and an id of our own; the answer's JSON
/// (a stream's text as a string).
async fn call(gw: &TestGateway, path: &str, id: &str, body: Value) -> (u16, Value) {
    let response = gw
        .post(path, &body)
        .header("x-request-id", id)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The service tier is read from the answer: flex at half price, priority at its own prices,
/// a priority answer of a model without published priority prices unpriced (never the
/// standard price), and the tier recorded. A budgeted caller asking for priority on such a model
/// is held at twice the standard price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_tiers_are_priced_as_the_answer_reports_them() {
    let gw = TestGateway::start().await;
    let chat = |model: &str, tier: &str| {
        json!({ "model": model, "service_tier": tier, "max_tokens": 20,
                "messages": [{ "role": "user", "content": "echo: one two three four" }] })
    };
    let (status, flex) = call(&gw, "/v1/chat/completions", "tier-flex", chat("o3", "flex")).await;
    assert_eq!((status, flex["service_tier"].as_str()), (200, Some("flex")));
    let record = gw.record_of("tier-flex").await;
    let (p, c) = (
        record.usage.prompt_tokens as i64,
        record.usage.completion_tokens as i64,
    );
    // o3: $2 and $8 per million (2,000 and 8,000 n$ a token), half on flex.
    assert_eq!(record.cost_nanos, Some((p * 2_000 + c * 8_000) / 2));
    assert_eq!(record.service_tier.as_deref(), Some("flex"));

    call(
        &gw,
        "/v1/chat/completions",
        "tier-priority",
        chat("gpt-5.4", "priority"),
    )
    .await;
    let record = gw.record_of("tier-priority").await;
    let (p, c) = (
        record.usage.prompt_tokens as i64,
        record.usage.completion_tokens as i64,
    );
    // gpt-5.4 priority: $5 and $30 per million (standard: $2.50 and $15).
    assert_eq!(record.cost_nanos, Some(p * 5_000 + c * 30_000));
    assert_eq!(record.service_tier.as_deref(), Some("priority"));

    call(
        &gw,
        "/v1/chat/completions",
        "tier-unknown",
        chat("o3", "priority"),
    )
    .await;
    let record = gw.record_of("tier-unknown").await;
    assert_eq!(
        record.cost_nanos, None,
        "no priority price for o3: unpriced"
    );
    assert_eq!(record.service_tier.as_deref(), Some("priority"));

    let (_, secret) = budgeted_key(&gw, &ten_dollars_a_month()).await;
    let held = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&secret)
        .json(&chat("o3", "priority"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        held.status(),
        200,
        "held at twice the standard price: asking for priority neither slips past the budget nor is refused"
    );
    gw.stop().await;
}

/// A Responses stream is priced as the snapshot its `response` names (OpenAI answers `gpt-4o`
/// with a dated snapshot whose price may differ), and the record says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_stream_is_priced_as_the_snapshot_that_served_it() {
    let gw = TestGateway::start().await;
    gw.fault(json!({ "answer_model": "gpt-4o-2024-05-13" }))
        .await;
    let (status, _) = call(
        &gw,
        "/v1/responses",
        "snapshot-stream",
        json!({ "model": "gpt-4o", "input": "echo: priced as served", "stream": true }),
    )
    .await;
    assert_eq!(status, 200);
    let record = gw.record_of("snapshot-stream").await;
    assert_eq!(record.model_used.as_deref(), Some("gpt-4o-2024-05-13"));
    let (p, c) = (
        record.usage.prompt_tokens as i64,
        record.usage.completion_tokens as i64,
    );
    assert!(c > 0);
    // gpt-4o-2024-05-13: $5 and $15 per million, not gpt-4o's $2.50 and $10.
    assert_eq!(
        record.cost_nanos,
        Some(p * 5_000 + c * 15_000),
        "{record:?}"
    );
    gw.stop().await;
}

/// Moderations are free at OpenAI: recorded at a cost of 0, not counted as unpriced.
#[tokio::test]
async fn moderations_are_free_not_unpriced() {
    let gw = TestGateway::start().await;
    let (status, _) = call(
        &gw,
        "/v1/moderations",
        "moderation-free",
        json!({ "model": "omni-moderation-latest", "input": "a kind word" }),
    )
    .await;
    assert_eq!(status, 200);
    let record = gw.record_of("moderation-free").await;
    assert_eq!(record.cost_nanos, Some(0), "{record:?}");
    gw.state.finish_records().await;
    let usage = gw
        .state
        .records
        .usage(&tollgate::records::UsageQuery {
            group_by: vec![],
            from_ms: 0,
            to_ms: now_ms() + 3_600_000,
        })
        .await
        .unwrap();
    assert_eq!(usage[0].totals.unpriced, 0, "{usage:?}");
    gw.stop().await;
}

/// An upstream that answers 200 and then breaks its body has run the call and bills it: the
/// caller gets a 502, but the budget keeps the call's worst case and the record says so
/// (estimated), instead of both counting it free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_lost_after_a_success_head_is_paid_at_its_worst_case() {
    let gw = TestGateway::start().await;
    let budget = ten_dollars_a_month();
    let (key_id, secret) = budgeted_key(&gw, &budget).await;
    gw.fault(json!({ "cut_after_events": 1 })).await;
    let response = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&secret)
        .header("x-request-id", "cut-after-the-head")
        .json(&json!({ "model": "gpt-4o-mini", "max_tokens": 40,
                        "messages": [{ "role": "user", "content": "echo: cut me" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let record = gw.record_of("cut-after-the-head").await;
    assert!(record.estimated, "{record:?}");
    assert_eq!(record.usage.completion_tokens, 40, "{record:?}");
    // gpt-4o-mini: 150 and 600 n$ a token.
    let worst = (record.usage.prompt_tokens * 150 + 40 * 600) as i64;
    assert_eq!(record.cost_nanos, Some(worst), "{record:?}");
    let line = BudgetLine::new(SpendScope::Key(key_id), &budget, now_ms());
    let charged = eventually(std::time::Duration::from_secs(5), || async {
        gw.state.budgets.spent(&line).await.ok() == Some(worst)
    })
    .await;
    assert!(charged, "the budget was charged the worst case");
    gw.stop().await;
}

/// A GPT image stream is relayed as it comes (partial images, then the final image) and priced
/// from the usage its final event reports, with the cost comment after that event.
#[tokio::test]
async fn an_image_stream_is_relayed_and_priced_from_its_final_event() {
    let gw = TestGateway::start().await;
    let (status, body) = call(
        &gw,
        "/v1/images/generations",
        "image-stream",
        json!({ "model": "gpt-image-1", "prompt": "a fox at dawn", "stream": true }),
    )
    .await;
    assert_eq!(status, 200);
    let text = body.as_str().expect("an event stream");
    let partial = text.find("event: image_generation.partial_image").unwrap();
    let completed = text.find("event: image_generation.completed").unwrap();
    let comment = text.find(": x-tollgate-cost-usd: ").unwrap();
    assert!(partial < completed && completed < comment, "{text}");
    let record = gw.record_of("image-stream").await;
    let (p, c) = (
        record.usage.prompt_tokens as i64,
        record.usage.completion_tokens as i64,
    );
    assert!(c > 0 && !record.estimated, "{record:?}");
    // gpt-image-1: text in $5, image out $40 per million (5,000 and 40,000 n$ a token).
    assert_eq!(
        record.cost_nanos,
        Some(p * 5_000 + c * 40_000),
        "{record:?}"
    );
    assert!(record.stream);
    gw.stop().await;
}
