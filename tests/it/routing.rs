//! Models and upstreams: aliases rewrite the model, extra upstreams serve their models,
//! fallbacks follow 5xx, 429, timeouts and connect errors (never a 400), `/v1/models` lists
//! the aliases, and records keep the asked and the used model and the upstream.

use serde_json::{Value, json};
use tollgate::config::{Config, Env};
use tollgate::mock_upstream::MockOptions;
use tollgate::pricing::PriceTable;

use crate::support::{MockServer, TestGateway, error_of};

const BACKUP_KEY: &str = "sk-backup-secret-42";

/// A gateway whose default upstream is its own mock, plus a second mock named `backup`.
/// `fast` goes to the default upstream with `backup` as fallback; `broken` starts on a port
/// nothing listens on.
async fn routed() -> (TestGateway, MockServer) {
    let backup = MockServer::with(MockOptions {
        api_key: Some(BACKUP_KEY.to_owned()),
        ..MockOptions::default()
    })
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = format!(
        r#"
[upstream]
max_retries = 1

[[upstreams]]
name = "backup"
base_url = "{backup}"
api_key_env = "BACKUP_API_KEY"
models = ["gpt-4.1-nano"]

[[upstreams]]
name = "nowhere"
base_url = "http://{closed}/v1"

[models.fast]
target = "gpt-4o-mini"
fallbacks = [{{ target = "gpt-4.1-mini", upstream = "backup" }}]

[models.broken]
target = "gpt-4o-mini"
upstream = "nowhere"
fallbacks = [{{ target = "gpt-4o-mini", upstream = "backup" }}]
"#,
        backup = backup.url(),
    );
    let gw = TestGateway::builder()
        .toml(&toml)
        .env("BACKUP_API_KEY", BACKUP_KEY)
        .env("OPENAI_TIMEOUT", "1500")
        .start()
        .await
        .unwrap();
    (gw, backup)
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "route me"}]})
}

async fn received(client: &reqwest::Client, url: String) -> Vec<Value> {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn ok_call(gw: &TestGateway, body: &Value) -> (String, Value) {
    let response = gw.post("/v1/chat/completions", body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (id, response.json().await.unwrap())
}

#[tokio::test]
async fn an_alias_sends_its_target_and_the_record_keeps_both_names() {
    let (gw, backup) = routed().await;
    let (id, body) = ok_call(&gw, &chat("fast")).await;
    let sent = gw.upstream_requests().await;
    assert_eq!(sent.last().unwrap()["body"]["model"], "gpt-4o-mini");
    assert_eq!(body["model"], "gpt-4o-mini");
    let record = gw.record_of(&id).await;
    assert_eq!(record.model_requested.as_deref(), Some("fast"));
    assert_eq!(record.model_used.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(record.upstream.as_deref(), Some("default"));
    let usage = tollgate::openai::usage::summarize(&serde_json::to_vec(&body).unwrap())
        .usage
        .unwrap();
    assert_eq!(
        record.cost_nanos,
        PriceTable::builtin().cost("gpt-4o-mini", &usage, None),
        "an alias is priced as the model that served it"
    );

    // A model an extra upstream serves goes there, with that upstream's key.
    let (id, _) = ok_call(&gw, &chat("gpt-4.1-nano")).await;
    let at_backup = received(&gw.client, backup.control("/_mock/requests")).await;
    assert_eq!(at_backup.len(), 1);
    assert_eq!(
        at_backup[0]["headers"]["authorization"],
        format!("Bearer {BACKUP_KEY}")
    );
    assert_eq!(gw.record_of(&id).await.upstream.as_deref(), Some("backup"));
    gw.stop().await;
}

#[tokio::test]
async fn fallbacks_follow_server_errors_rate_limits_timeouts_and_refused_connections() {
    let (gw, backup) = routed().await;
    let backup_calls = async || {
        received(&gw.client, backup.control("/_mock/requests"))
            .await
            .len()
    };

    // 5xx on every attempt (1 + 1 retry) at the primary: the backup answers.
    gw.fault(json!({"status": 500, "count": 2})).await;
    let (id, body) = ok_call(&gw, &chat("fast")).await;
    assert_eq!(body["model"], "gpt-4.1-mini");
    let record = gw.record_of(&id).await;
    assert_eq!(record.upstream.as_deref(), Some("backup"));
    assert_eq!(record.model_requested.as_deref(), Some("fast"));
    assert_eq!(record.model_used.as_deref(), Some("gpt-4.1-mini"));
    assert_eq!(backup_calls().await, 1);

    // A 429 whose Retry-After is too long to wait: straight to the backup.
    gw.fault(json!({"status": 429, "retry_after": "600"})).await;
    ok_call(&gw, &chat("fast")).await;
    assert_eq!(backup_calls().await, 2);

    // A primary slower than the timeout (a timed-out call is not retried on the same upstream).
    gw.fault(json!({"latency_ms": 4000})).await;
    let (id, _) = ok_call(&gw, &chat("fast")).await;
    assert_eq!(gw.record_of(&id).await.upstream.as_deref(), Some("backup"));
    assert_eq!(backup_calls().await, 3);

    // A primary nobody listens on.
    let (id, _) = ok_call(&gw, &chat("broken")).await;
    assert_eq!(gw.record_of(&id).await.upstream.as_deref(), Some("backup"));
    assert_eq!(backup_calls().await, 4);

    // Streams fall back too (before their first byte).
    gw.fault(json!({"status": 503, "count": 2})).await;
    let mut streamed = chat("fast");
    streamed["stream"] = json!(true);
    let response = gw
        .post("/v1/chat/completions", &streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("[DONE]"));
    assert_eq!(backup_calls().await, 5);

    // A request the upstream rejects on its merits is not retried elsewhere.
    gw.fault(json!({"status": 400, "message": "bad parameter"}))
        .await;
    let (status, error) = error_of(
        gw.post("/v1/chat/completions", &chat("fast"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(backup_calls().await, 5);

    // When every target fails the caller gets the last error, as the error table says.
    gw.fault(json!({"status": 500, "count": 2})).await;
    let backup_faults = gw
        .client
        .post(backup.control("/_mock/faults"))
        .json(&json!({"status": 502, "count": 2}))
        .send()
        .await
        .unwrap();
    assert!(backup_faults.status().is_success());
    let (status, _) = error_of(
        gw.post("/v1/chat/completions", &chat("fast"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502);
    let metrics = gw.metrics().await;
    assert!(metrics.contains(r#"tollgate_upstream_fallbacks_total{upstream="default"}"#));
    gw.stop().await;
}

/// The ids `/v1/models` lists for `key`.
async fn model_ids(gw: &TestGateway, key: &str) -> Vec<String> {
    let list: Value = gw
        .client
        .get(gw.url("/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_model_list_shows_aliases_the_key_may_use() {
    let (gw, _backup) = routed().await;
    let ids = model_ids(&gw, &gw.key).await;
    assert!(
        ids.contains(&"fast".to_owned()) && ids.contains(&"broken".to_owned()),
        "{ids:?}"
    );
    assert!(
        ids.contains(&"gpt-4o-mini".to_owned()),
        "upstream models stay: {ids:?}"
    );
    let alias: Value = gw
        .get("/v1/models/fast")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(alias["id"], "fast");
    assert_eq!(alias["object"], "model");

    // A key limited to the alias sees it and may call it; the target's name is not a key to it.
    let (_, narrow) = gw.create_key(&["fast"]).await;
    assert_eq!(model_ids(&gw, &narrow).await, ["fast"]);
    let refused = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&narrow)
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    gw.stop().await;
}

#[test]
fn routing_config_mistakes_are_named() {
    let env: Env = [("OPENAI_API_KEY".to_owned(), "sk".to_owned())]
        .into_iter()
        .collect();
    let error = |toml: &str| {
        Config::from_toml_str("t.toml", toml, &env)
            .unwrap_err()
            .to_string()
    };
    let text = error("[models.fast]\ntarget = \"m\"\nupstream = \"missing\"\n");
    assert!(
        text.contains("models.fast") && text.contains("\"missing\""),
        "{text}"
    );
    let text = error(
        "[[upstreams]]\nname = \"b\"\nbase_url = \"http://h/v1\"\napi_key_env = \"NOT_SET_ANYWHERE\"\n",
    );
    assert!(text.contains("NOT_SET_ANYWHERE"), "{text}");
    let text = error("[[upstreams]]\nname = \"default\"\nbase_url = \"http://h/v1\"\n");
    assert!(text.contains("upstreams[0]"), "{text}");
    let text = error("[[upstreams]]\nname = \"b\"\nbase_url = \"ftp://h\"\n");
    assert!(text.contains("base_url"), "{text}");
}
