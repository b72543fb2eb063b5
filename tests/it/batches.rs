//! Batches through Tollgate: the input file is checked against the caller before the batch is
//! created, its worst case is held on the caller's budget, and once it ends each answered
//! request is priced at the batch tier and recorded against the caller, the hold released.

use serde_json::{Value, json};
use tollgate::budget::BudgetLine;
use tollgate::config::{BudgetPeriod, BudgetSpec};
use tollgate::keys::{KeyBudgets, NewKey};
use tollgate::records::{SpendScope, now_ms};

use crate::support::{TestGateway, error_of, eventually};

/// A gateway that looks for ended batches every 100 ms.
async fn gateway() -> TestGateway {
    TestGateway::builder()
        .toml("[records]\nbatch_poll_ms = 100\n")
        .start()
        .await
        .unwrap()
}

fn one_dollar() -> BudgetSpec {
    BudgetSpec {
        max_usd: 1.0,
        period: BudgetPeriod::Month,
        alert_at: 1.0,
    }
}

/// A key allowed only gpt-4o-mini, held to `budget`.
async fn restricted_key(gw: &TestGateway, budget: BudgetSpec) -> (String, String) {
    gw.create_key_with(NewKey {
        name: "batcher".into(),
        models: vec!["gpt-4o-mini".into()],
        budgets: KeyBudgets {
            key: Some(budget),
            user: None,
        },
        ..NewKey::default()
    })
    .await
}

/// One chat request of an input file.
fn line(id: usize, model: &str, max_tokens: u64) -> Value {
    json!({
        "custom_id": format!("request-{id}"), "method": "POST", "url": "/v1/chat/completions",
        "body": { "model": model, "max_tokens": max_tokens,
                  "messages": [{ "role": "user", "content": "summarise this" }] }
    })
}

/// Uploads `lines` as a batch input file through Tollgate; its id.
async fn upload(gw: &TestGateway, secret: &str, lines: &[Value]) -> String {
    let jsonl: String = lines.iter().map(|l| format!("{l}\n")).collect();
    gw.upload_batch_file(secret, &jsonl).await
}

async fn create(gw: &TestGateway, secret: &str, file_id: &str) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/batches"))
        .bearer_auth(secret)
        .header("x-request-id", format!("create-{file_id}"))
        .json(
            &json!({ "input_file_id": file_id, "endpoint": "/v1/chat/completions",
                       "completion_window": "24h" }),
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_held_then_recorded_line_by_line_at_the_batch_price() {
    let gw = gateway().await;
    let (key_id, secret) = restricted_key(&gw, one_dollar()).await;
    let lines: Vec<Value> = (0..3).map(|i| line(i, "gpt-4o-mini", 100)).collect();
    let file_id = upload(&gw, &secret, &lines).await;
    // The upstream reports 1,000 prompt and 100 completion tokens for each request (two
    // faults: Tollgate reads the input file before it creates the batch).
    gw.fault(
        json!({ "usage": { "prompt_tokens": 1_000, "completion_tokens": 100,
                                "total_tokens": 1_100 }, "count": 2 }),
    )
    .await;
    let created = create(&gw, &secret, &file_id).await;
    assert_eq!(created.status(), 200);
    let batch: Value = created.json().await.unwrap();
    let batch_id = batch["id"].as_str().unwrap().to_owned();

    // Its creation holds its worst case: each request's prompt (counted) and 100 tokens out,
    // at half gpt-4o-mini's $0.15 and $0.60 per million.
    let creation = gw.record_of(&format!("create-{file_id}")).await;
    let held = creation.cost_nanos.unwrap();
    assert!(creation.estimated, "{creation:?}");
    assert_eq!(creation.model_requested.as_deref(), Some("gpt-4o-mini"));
    let prompt = (held * 2 - 3 * 100 * 600) / (3 * 150);
    assert!(
        (5..30).contains(&prompt),
        "about 12 prompt tokens a request: {held}"
    );

    // Recorded once it ends: three answers at half of (1,000 × 150 + 100 × 600) n$.
    let each = (1_000 * 150 + 100 * 600) / 2;
    let line_record = gw.record_of(&format!("{batch_id}/request-2")).await;
    assert_eq!(line_record.cost_nanos, Some(each), "{line_record:?}");
    assert_eq!(line_record.service_tier.as_deref(), Some("batch"));
    assert_eq!(line_record.key_id.as_deref(), Some(key_id.as_str()));
    assert_eq!(line_record.usage.prompt_tokens, 1_000);
    let budget = BudgetLine::new(SpendScope::Key(key_id.clone()), &one_dollar(), now_ms());
    let settled = eventually(std::time::Duration::from_secs(5), || async {
        gw.state.budgets.spent(&budget).await.ok() == Some(3 * each)
    })
    .await;
    assert!(
        settled,
        "the budget holds what the batch cost, its hold released"
    );
    gw.state.finish_records().await;
    let recorded = gw
        .state
        .records
        .spend(&SpendScope::Key(key_id), 0)
        .await
        .unwrap();
    assert_eq!(recorded, 3 * each, "and so do the records");
    // Recording again (another replica, a restart) counts nothing twice.
    assert_eq!(tollgate::batches::record_ended(&gw.state).await, Ok(0));
    gw.stop().await;
}

/// Answers whose usage is unknown cannot release the hold: the batch keeps what was held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_costs_are_unknown_keeps_its_hold() {
    let gw = gateway().await;
    let (key_id, secret) = restricted_key(&gw, one_dollar()).await;
    let lines: Vec<Value> = (0..2).map(|i| line(i, "gpt-4o-mini", 100)).collect();
    let file_id = upload(&gw, &secret, &lines).await;
    gw.fault(json!({ "no_usage": true, "count": 2 })).await;
    let created = create(&gw, &secret, &file_id).await;
    assert_eq!(created.status(), 200);
    let batch: Value = created.json().await.unwrap();
    let held = gw
        .record_of(&format!("create-{file_id}"))
        .await
        .cost_nanos
        .unwrap();
    assert!(held > 0);
    let answer = gw
        .record_of(&format!("{}/request-1", batch["id"].as_str().unwrap()))
        .await;
    assert_eq!(answer.cost_nanos, None, "{answer:?}");
    assert!(answer.estimated);
    gw.state.finish_records().await;
    let recorded = gw
        .state
        .records
        .spend(&SpendScope::Key(key_id.clone()), 0)
        .await
        .unwrap();
    assert_eq!(
        recorded, held,
        "no release: the hold stands for the unknown costs"
    );
    let budget = BudgetLine::new(SpendScope::Key(key_id), &one_dollar(), now_ms());
    assert_eq!(gw.state.budgets.spent(&budget).await.unwrap(), held);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_caller_may_not_run_or_pay_for_is_refused_before_it_is_created() {
    let gw = gateway().await;
    let (_, secret) = restricted_key(&gw, one_dollar()).await;
    let cases: Vec<(&str, Vec<Value>, u16, &str)> = vec![
        (
            "a model the key may not use, on any line",
            vec![line(0, "gpt-4o-mini", 10), line(1, "gpt-4o", 10)],
            400,
            "another model",
        ),
        (
            "a model the key may not use",
            vec![line(0, "gpt-4o", 10)],
            403,
            "gpt-4o",
        ),
        (
            "more than the budget can hold: 2,000 requests of 16,384 tokens",
            (0..2_000).map(|i| line(i, "gpt-4o-mini", 16_384)).collect(),
            429,
            "budget",
        ),
        (
            "a request to another endpoint",
            vec![
                json!({ "custom_id": "x", "method": "POST", "url": "/v1/embeddings",
                         "body": { "model": "gpt-4o-mini", "input": "x" } }),
            ],
            400,
            "another endpoint",
        ),
    ];
    for (name, lines, want, says) in cases {
        let file_id = upload(&gw, &secret, &lines).await;
        let (status, error) = error_of(create(&gw, &secret, &file_id).await).await;
        assert_eq!(status, want, "{name}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{name}: {error}"
        );
    }
    let tool = json!({ "custom_id": "t", "method": "POST", "url": "/v1/chat/completions",
                       "body": { "model": "gpt-4o-mini", "messages": [],
                                 "tools": [{ "type": "image_generation", "model": "gpt-image-1" }] } });
    let twice = r#"{"custom_id":"d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o","messages":[],"model":"gpt-4o-mini"}}"#;
    for (name, jsonl, says) in [
        (
            "a tool running a model of its own",
            format!("{tool}\n"),
            "a model of its own",
        ),
        (
            "a request naming its model twice",
            format!("{twice}\n"),
            "unambiguously",
        ),
    ] {
        let file_id = gw.upload_batch_file(&secret, &jsonl).await;
        let (status, error) = error_of(create(&gw, &secret, &file_id).await).await;
        assert_eq!(status, 400, "{name}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{name}: {error}"
        );
    }
    // A file that cannot be read is refused too, never forwarded unchecked.
    let (status, _) = error_of(create(&gw, &secret, "file-missing").await).await;
    assert_eq!(status, 400);
    let created = gw
        .upstream_requests()
        .await
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/v1/batches")
        .count();
    assert_eq!(created, 0, "no refused batch reached the upstream");
    gw.stop().await;
}

/// The `BatchStore` behaviour suite: remembered once, due lookups in order, failures put off,
/// claimed once.
async fn store_behaviour(store: std::sync::Arc<dyn tollgate::store::BatchStore>) {
    let batch = |id: &str, created_at_ms| tollgate::store::Batch {
        id: id.to_owned(),
        created_at_ms,
        key_id: Some("key_1".into()),
        user_id: Some("ann".into()),
        caller: "key".into(),
        endpoint: "/v1/chat/completions".into(),
        model: Some("gpt-4o-mini".into()),
        held_nanos: 1_234,
        failures: 0,
    };
    store.remember(&batch("batch_b", 2)).await.unwrap();
    store.remember(&batch("batch_a", 1)).await.unwrap();
    let mut again = batch("batch_a", 1);
    again.held_nanos = 99;
    store.remember(&again).await.unwrap();
    let pending = store.pending(0, 10).await.unwrap();
    assert_eq!(
        pending,
        [batch("batch_a", 1), batch("batch_b", 2)],
        "oldest first, kept as first told"
    );
    assert_eq!(store.pending(0, 1).await.unwrap().len(), 1);
    // A failing batch is put off, its failures counted, so it holds up no other.
    store.defer("batch_a", 100, true).await.unwrap();
    store.defer("batch_a", 200, true).await.unwrap();
    assert_eq!(store.pending(150, 10).await.unwrap(), [batch("batch_b", 2)]);
    let mut failing = batch("batch_a", 1);
    failing.failures = 2;
    assert_eq!(
        store.pending(200, 10).await.unwrap(),
        [batch("batch_b", 2), failing],
        "the longest due first"
    );
    store.defer("batch_a", 0, false).await.unwrap();
    assert_eq!(
        store.pending(0, 1).await.unwrap(),
        [batch("batch_a", 1)],
        "a lookup that worked starts the count again"
    );
    assert!(store.claim("batch_a", 5).await.unwrap());
    assert!(!store.claim("batch_a", 6).await.unwrap(), "claimed once");
    assert!(!store.claim("batch_unknown", 6).await.unwrap());
    assert_eq!(
        store.pending(i64::MAX, 10).await.unwrap(),
        [batch("batch_b", 2)]
    );
}

#[tokio::test]
async fn batch_store_behaviour_on_sqlite() {
    let gw = TestGateway::builder()
        .database(crate::support::Database::Sqlite)
        .start()
        .await
        .unwrap();
    store_behaviour(gw.state.batches.clone()).await;
    gw.stop().await;
}

#[tokio::test]
async fn batch_store_behaviour_on_postgres() {
    let Some(gw) = TestGateway::builder()
        .database(crate::support::Database::Postgres)
        .start()
        .await
    else {
        return;
    };
    store_behaviour(gw.state.batches.clone()).await;
    gw.stop().await;
}

/// A batch's `input_file_id` is read with Tollgate's key, so it is an attacker's path segment:
/// no spelling of it reaches anything but one file's content, and none creates a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_file_id_cannot_steer_the_gateways_key_elsewhere() {
    let gw = gateway().await;
    let (_, secret) = restricted_key(&gw, one_dollar()).await;
    for id in [
        "../../organization/costs",
        "file-1/../../organization/costs",
        "%2e%2e",
        "..",
        "file-1?limit=1",
        "file-1#x",
        "a/b",
        "%2Forganization",
        "",
        "http://attacker.invalid/x",
    ] {
        let (status, error) = error_of(create(&gw, &secret, id).await).await;
        assert_eq!(status, 400, "{id:?}: {error}");
    }
    for request in gw.upstream_requests().await {
        let path = request["path"].as_str().unwrap_or_default();
        let file_content = path.starts_with("/v1/files/")
            && path.ends_with("/content")
            && path.matches('/').count() == 4;
        assert!(
            request["method"] == "POST" && path == "/v1/files" || file_content,
            "the gateway's key went to {path}"
        );
        assert!(!path.contains("organization"), "{path}");
    }
    gw.stop().await;
}
