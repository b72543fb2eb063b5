//! Content rules end to end: redaction before forwarding, deny regexes, the prompt-length cap
//! and moderation through the upstream, each named in the record without the text; and all
//! of it off by default.

use serde_json::{Value, json};

use crate::support::{TestGateway, error_of};

const RULES: &str = r#"
[content]
deny = ["(?i)forbidden topic"]
redact = ["email", "card", "phone", "api_key"]
max_prompt_chars = 300
moderation = true
"#;

fn chat(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The bodies the mock received on `path`.
async fn sent_to(gw: &TestGateway, path: &str) -> Vec<Value> {
    gw.upstream_requests()
        .await
        .into_iter()
        .filter(|r| r["path"] == path)
        .map(|r| r["body"].clone())
        .collect()
}

#[tokio::test]
async fn secrets_are_redacted_before_forwarding_and_only_rule_names_are_recorded() {
    let gw = TestGateway::builder().toml(RULES).start().await.unwrap();
    let prompt = "I am ann@example.com, card 4111 1111 1111 1111, phone +1 (415) 555-2671, key sk-live-abcdefghijklmnop0123";
    let response = gw
        .post("/v1/chat/completions", &chat(prompt))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let forwarded = sent_to(&gw, "/v1/chat/completions").await;
    let content = forwarded[0]["messages"][0]["content"].as_str().unwrap();
    assert_eq!(
        content,
        "I am [REDACTED:email], card [REDACTED:card], phone [REDACTED:phone], key [REDACTED:api_key]"
    );
    let record = gw.record_of(&id).await;
    assert_eq!(
        record.rules_fired,
        [
            "redact:api_key",
            "redact:card",
            "redact:email",
            "redact:phone"
        ]
    );
    let stored = serde_json::to_string(&record).unwrap();
    for secret in [
        "ann@example.com",
        "4111 1111 1111 1111",
        "555-2671",
        "sk-live",
    ] {
        assert!(!stored.contains(secret), "the record holds {secret}");
    }
    // Moderation saw the redacted text, not the original.
    let moderated = sent_to(&gw, "/v1/moderations").await;
    assert_eq!(moderated[0]["input"][0], content);

    // Embeddings inputs are redacted too.
    let response = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": ["mail bob@example.org"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        sent_to(&gw, "/v1/embeddings").await[0]["input"][0],
        "mail [REDACTED:email]"
    );

    // Moderation is asked only when the request goes upstream: a cache hit needs none.
    let before = sent_to(&gw, "/v1/moderations").await.len();
    let mut deterministic = chat("moderate me once");
    deterministic["temperature"] = json!(0);
    let mut caches = Vec::new();
    for _ in 0..5 {
        let response = gw
            .post("/v1/chat/completions", &deterministic)
            .send()
            .await
            .unwrap();
        caches.push(
            response.headers()["x-tollgate-cache"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(caches[0], "MISS");
    assert_eq!(caches[4], "HIT", "{caches:?}");
    let misses = caches.iter().filter(|c| *c == "MISS").count();
    assert_eq!(sent_to(&gw, "/v1/moderations").await.len() - before, misses);
    gw.stop().await;
}

/// `tollgate_content_refusals_total` as `/metrics` shows it.
async fn refusals(gw: &TestGateway) -> u64 {
    gw.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("tollgate_content_refusals_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn deny_length_and_moderation_refuse_without_forwarding() {
    let gw = TestGateway::builder().toml(RULES).start().await.unwrap();
    let cases = [
        ("let us discuss the Forbidden Topic", "deny:0"),
        (&"x".repeat(301) as &str, "max_prompt_chars"),
        ("please flag-me now", "moderation"),
    ];
    let refusals_before = refusals(&gw).await;
    for (prompt, rule) in cases {
        let response = gw
            .post("/v1/chat/completions", &chat(prompt))
            .send()
            .await
            .unwrap();
        let id = request_id(&response);
        let (status, error) = error_of(response).await;
        assert_eq!(status, 400, "{rule}: {error}");
        assert_eq!(error["code"], "content_policy_violation", "{rule}: {error}");
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], "messages");
        assert!(
            !error.to_string().contains(prompt),
            "the error does not echo the prompt"
        );
        let record = gw.record_of(&id).await;
        assert_eq!(record.rules_fired, [rule]);
        assert_eq!(record.status, 400);
    }
    assert!(
        sent_to(&gw, "/v1/chat/completions").await.is_empty(),
        "nothing refused reached the upstream"
    );
    // The counter is process-wide (other tests share it): count this test's refusals.
    assert_eq!(refusals(&gw).await - refusals_before, 3);
    gw.stop().await;
}

#[tokio::test]
async fn content_rules_are_off_by_default() {
    let gw = TestGateway::start().await;
    let prompt = "ann@example.com flag-me forbidden topic";
    let response = gw
        .post("/v1/chat/completions", &chat(prompt))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        sent_to(&gw, "/v1/chat/completions").await[0]["messages"][0]["content"],
        prompt
    );
    assert!(sent_to(&gw, "/v1/moderations").await.is_empty());
    gw.stop().await;
}
