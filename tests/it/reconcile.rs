//! Reconciliation against the mock's bill: calls made through the gateway agree with what the
//! mock's organization Costs and Usage APIs report; a line the gateway never saw is reported
//! as a difference of exactly its size, by the admin API and by `tollgate reconcile`.

use serde_json::{Value, json};

use crate::support::TestGateway;

const ADMIN: &str = "reconcile-suite-admin-token-0123456789";
const OPENAI_ADMIN_KEY: &str = "sk-admin-reconcile-test";

async fn reconcile(gw: &TestGateway) -> (u16, Value) {
    let response = gw
        .client
        .get(gw.url("/admin/reconcile"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_spend_is_reconciled_with_openais_bill() {
    let gw = TestGateway::builder()
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .env("OPENAI_ADMIN_KEY", OPENAI_ADMIN_KEY)
        .start()
        .await
        .unwrap();
    for i in 0..3 {
        let chat = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": format!("echo: call {i}") }] });
        assert_eq!(
            gw.post("/v1/chat/completions", &chat)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let embedding = json!({ "model": "text-embedding-3-small", "input": format!("text {i}") });
        assert_eq!(
            gw.post("/v1/embeddings", &embedding)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    gw.state.finish_records().await;

    let (status, report) = reconcile(&gw).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["differences"], json!([]), "{report}");
    assert_eq!(
        report["matched"], 2,
        "a chat model and an embedding model: {report}"
    );

    // A call OpenAI billed that never went through the gateway.
    let added = gw
        .client
        .post(format!("{}/_mock/ledger", gw.mock_base))
        .json(&json!({ "model": "gpt-4o-mini-2024-07-18", "input_tokens": 1000, "requests": 1, "cost_usd": 0.01 }))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 204);
    let (_, report) = reconcile(&gw).await;
    let differences = report["differences"].as_array().unwrap();
    assert_eq!(differences.len(), 1, "{report}");
    let difference = &differences[0];
    assert_eq!(
        difference["model"], "gpt-4o-mini",
        "snapshots fold into their model"
    );
    assert_eq!(difference["cost_difference_usd"], "0.010000");
    assert_eq!(
        difference["openai"]["input_tokens"].as_i64().unwrap(),
        difference["tollgate"]["input_tokens"].as_i64().unwrap() + 1000
    );
    assert_eq!(report["matched"], 1);

    // The command line says the same.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["reconcile", "--since", "1d", "--json"])
        .env_clear()
        .env("DATABASE_URL", gw.database_url())
        .env("OPENAI_ADMIN_BASE_URL", format!("{}/v1", gw.mock_base))
        .env("OPENAI_ADMIN_KEY", OPENAI_ADMIN_KEY)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cli: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(cli["differences"], report["differences"]);
    gw.stop().await;
}

#[tokio::test]
async fn without_an_admin_key_reconciliation_says_what_is_missing() {
    let gw = TestGateway::builder()
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .start()
        .await
        .unwrap();
    let (status, body) = reconcile(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OPENAI_ADMIN_KEY"),
        "{body}"
    );
    // The gateway's own key cannot read the organization's bill.
    let refused = gw
        .client
        .get(format!("{}/v1/organization/costs", gw.mock_base))
        .bearer_auth(crate::support::UPSTREAM_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    gw.stop().await;
}

#[tokio::test]
async fn the_admin_key_goes_only_to_https_or_loopback() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["reconcile", "--json"])
        .env_clear()
        .env("DATABASE_URL", "sqlite::memory:")
        .env("OPENAI_ADMIN_KEY", OPENAI_ADMIN_KEY)
        .env("OPENAI_ADMIN_BASE_URL", "http://billing.example.com/v1")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    // With --json the error is one document on stdout; nothing on either stream names the key.
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(message.contains("OPENAI_ADMIN_BASE_URL"), "{message}");
    for stream in [&output.stdout, &output.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains(OPENAI_ADMIN_KEY));
    }
}
