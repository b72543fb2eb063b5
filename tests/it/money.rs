//! Money, exactly, end to end: costs in nano-dollars add up to their true price through the
//! records, the rollups and the admin usage API.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::support::TestGateway;

const ADMIN: &str = "money-suite-admin-token-0123456789";

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
