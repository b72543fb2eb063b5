//! The admin API answers as `GET /admin/openapi.json` says: schemathesis, with every check,
//! sends schema-valid and schema-violating requests to every operation (and chains them:
//! create, read, change, revoke) and checks each answer against the document — its status is
//! documented, its body fits the schema, valid requests are accepted and invalid ones refused.
//! A field the code starts answering without the schema, or a bound the code enforces that the
//! schema does not state, fails here.

use std::time::Duration;

use serde_json::json;

use crate::support::{TestGateway, engines};

const ADMIN: &str = "admin-token-for-schemathesis-0123";

fn installed() -> bool {
    std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

#[tokio::test]
async fn schemathesis_finds_nothing_in_the_admin_api() {
    if !installed() {
        assert!(
            !engines::strict(),
            "schemathesis is not installed and TOLLGATE_TEST_STRICT=1 \
             (pip install -r tests/schemathesis/requirements.txt)"
        );
        eprintln!("SKIPPED: pip install -r tests/schemathesis/requirements.txt");
        return;
    }
    let gw = TestGateway::builder()
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .env("OPENAI_ADMIN_KEY", "sk-admin-for-reconciliation")
        .start()
        .await
        .unwrap();
    // Records and spend to answer with: a budgeted key, its users, a stream, an error.
    let created: serde_json::Value = gw
        .client
        .post(gw.url("/admin/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "fuzzed", "budgets": {"key": {"max_usd": 5, "period": "month"}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap();
    for body in [
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "gpt-4o-mini", "messages": "not a list"}),
    ] {
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-user-id", "ann")
            .json(&body)
            .send()
            .await
            .unwrap();
    }
    gw.client
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(key)
        .json(&json!({"model": "text-embedding-3-small", "input": "hi"}))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let run = tokio::process::Command::new("schemathesis")
        .args(["run", &gw.url("/admin/openapi.json"), "--checks", "all"])
        .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
        .args(["--max-examples", "30", "--seed", "1", "--no-color"])
        .args(["--output-sanitize", "false"])
        .env("SCHEMATHESIS_HOOKS", "")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finished within 10 minutes")
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    gw.stop().await;
}
