//! Azure OpenAI as an upstream kind, against the mock speaking Azure's dialect: the key in
//! `api-key` (never `Authorization`), `api-version` on every call, the model as a deployment in
//! the path, and Azure's error shapes answered to the caller in OpenAI's envelope.

use serde_json::{Value, json};
use tollgate::mock_upstream::MockOptions;
use tollgate::mock_upstream::azure::AzureMock;

use crate::support::{MockServer, TestGateway, error_of, sse_data};

const AZURE_KEY: &str = "azure-key-0123456789abcdef";

async fn azure_gateway() -> (TestGateway, MockServer) {
    let azure = MockServer::with(MockOptions {
        api_key: Some(AZURE_KEY.to_owned()),
        azure: Some(AzureMock {
            deployments: [
                ("prod-mini".to_owned(), "gpt-4o-mini-2024-07-18".to_owned()),
                ("embed".to_owned(), "text-embedding-3-small".to_owned()),
            ]
            .into(),
        }),
        ..MockOptions::default()
    })
    .await;
    let toml = format!(
        r#"
[upstream]
max_retries = 0

[[upstreams]]
name = "azure-east"
kind = "azure"
base_url = "{base}"
api_key_env = "AZURE_EAST_KEY"
api_version = "2024-10-21"
deployments = {{ "gpt-4o-mini" = "prod-mini", "text-embedding-3-small" = "embed" }}
models = ["gpt-4o-mini", "text-embedding-3-small", "gpt-4o"]
"#,
        base = azure.control("/openai"),
    );
    let gw = TestGateway::builder()
        .toml(&toml)
        .env("AZURE_EAST_KEY", AZURE_KEY)
        .start()
        .await
        .unwrap();
    (gw, azure)
}

async fn received(gw: &TestGateway, azure: &MockServer) -> Vec<Value> {
    azure.requests(&gw.client).await
}

/// One chat call through the gateway.
async fn call(gw: &TestGateway, model: &str) -> reqwest::Response {
    let response = gw
        .post("/v1/chat/completions", &chat(model, false))
        .send()
        .await;
    response.unwrap()
}

fn chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "hello azure"}],
    })
}

#[tokio::test]
async fn calls_reach_the_deployment_with_the_api_key_and_version_and_are_priced() {
    let (gw, azure) = azure_gateway().await;
    let response = call(&gw, "gpt-4o-mini").await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini-2024-07-18");
    let sent = received(&gw, &azure).await;
    let last = sent.last().unwrap();
    assert_eq!(
        last["path"],
        "/openai/deployments/prod-mini/chat/completions"
    );
    assert_eq!(last["query"], "api-version=2024-10-21");

    // A caller's own api-version, in any spelling, never reaches Azure.
    let response = gw
        .post(
            "/v1/chat/completions?API-Version=2023-01-01&%20api-version=x",
            &chat("gpt-4o-mini", false),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = received(&gw, &azure).await;
    let query = sent.last().unwrap()["query"].as_str().unwrap().to_owned();
    assert_eq!(query.matches("version").count(), 1, "{query}");
    assert!(query.ends_with("api-version=2024-10-21"), "{query}");
    assert_eq!(last["headers"]["api-key"], AZURE_KEY);
    assert!(
        last["headers"].get("authorization").is_none(),
        "no bearer to Azure"
    );
    let record = gw.record_of(&id).await;
    assert_eq!(record.upstream.as_deref(), Some("azure-east"));
    assert!(
        record.cost_nanos.unwrap_or(0) > 0,
        "priced: {:?}",
        record.cost_nanos
    );

    // A stream, and embeddings, go the same way.
    let response = gw
        .post("/v1/chat/completions", &chat("gpt-4o-mini", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let response = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": "hello"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = received(&gw, &azure).await;
    assert_eq!(
        sent.last().unwrap()["path"],
        "/openai/deployments/embed/embeddings"
    );
    gw.stop().await;
}

#[tokio::test]
async fn azures_errors_reach_the_caller_in_openais_envelope() {
    let (gw, azure) = azure_gateway().await;
    // No deployment serves gpt-4o on this resource.
    let (status, body) = error_of(call(&gw, "gpt-4o").await).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "model_not_found", "{body}");
    assert_eq!(body["type"], "invalid_request_error");
    assert!(body["message"].as_str().unwrap().contains("deployment"));

    // A content filter's refusal keeps its code and parameter.
    azure
        .fault(
            &gw.client,
            json!({"status": 400, "code": "content_filter", "message": "The prompt was filtered."}),
        )
        .await;
    let (status, body) = error_of(call(&gw, "gpt-4o-mini").await).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "content_filter");
    assert_eq!(body["message"], "The prompt was filtered.");

    // Azure's 429 is the gateway's upstream_rate_limited, with its Retry-After.
    azure
        .fault(&gw.client, json!({"status": 429, "retry_after": "7"}))
        .await;
    let response = call(&gw, "gpt-4o-mini").await;
    assert_eq!(response.headers()["retry-after"], "7");
    let (status, body) = error_of(response).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], "rate_limit_exceeded");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("upstream provider"),
        "{body}"
    );

    // An upstream that quotes the api-key back (in its error and its headers) never gets it
    // to the caller.
    azure
        .fault(
            &gw.client,
            json!({"status": 400, "message": "bad", "echo_authorization": true}),
        )
        .await;
    let response = call(&gw, "gpt-4o-mini").await;
    let headers = format!("{:?}", response.headers());
    let text = response.text().await.unwrap();
    assert!(
        text.contains("received Authorization"),
        "the fault fired: {text}"
    );
    assert!(
        !text.contains(AZURE_KEY) && !headers.contains(AZURE_KEY),
        "{text} {headers}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_wrong_azure_key_is_the_operators_problem_and_never_echoed() {
    let (gw, azure) = azure_gateway().await;
    drop(azure);
    let azure = MockServer::with(MockOptions {
        api_key: Some("another-key".to_owned()),
        azure: Some(AzureMock::default()),
        ..MockOptions::default()
    })
    .await;
    let toml = format!(
        "[[upstreams]]\nname = \"az\"\nkind = \"azure\"\nbase_url = \"{}\"\napi_key_env = \"AZ_KEY\"\nmodels = [\"gpt-4o-mini\"]\n",
        azure.control("/openai")
    );
    gw.stop().await;
    let gw = TestGateway::builder()
        .toml(&toml)
        .env("AZ_KEY", AZURE_KEY)
        .start()
        .await
        .unwrap();
    let response = call(&gw, "gpt-4o-mini").await;
    let text = response.text().await.unwrap();
    assert!(!text.contains(AZURE_KEY));
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "upstream_auth_failed");
    let sent = received(&gw, &azure).await;
    assert_eq!(
        sent.last().unwrap()["query"],
        format!("api-version={}", tollgate::config::AZURE_API_VERSION)
    );
    gw.stop().await;
}

#[test]
fn azure_settings_that_could_leave_the_path_or_leak_are_refused() {
    let mut env = tollgate::config::Env::default();
    env.set("OPENAI_API_KEY", "sk-x");
    env.set("AZ", "k");
    let load = |upstream: &str| {
        tollgate::config::Config::from_toml_str(
            "t.toml",
            &format!("[[upstreams]]\n{upstream}\n"),
            &env,
        )
        .map(drop)
        .map_err(|e| e.to_string())
    };
    let base = "name = \"az\"\nkind = \"azure\"\nbase_url = \"https://r.openai.azure.com/openai\"\napi_key_env = \"AZ\"";
    assert!(load(base).is_ok());
    for bad in [
        "deployments = { \"gpt-4o\" = \"../../admin\" }",
        "deployments = { \"gpt-4o\" = \"a/b\" }",
        "deployments = { \"gpt-4o\" = \"..\" }",
        "api_version = \"2024&x=1\"",
    ] {
        let error = load(&format!("{base}\n{bad}")).expect_err(bad);
        assert!(error.contains("upstreams[0]"), "{error}");
    }
    let no_key =
        "name = \"az\"\nkind = \"azure\"\nbase_url = \"https://r.openai.azure.com/openai\"";
    assert!(load(no_key).unwrap_err().contains("api_key_env"));
    let in_clear = "name = \"az\"\nkind = \"azure\"\nbase_url = \"http://r.openai.azure.com/openai\"\napi_key_env = \"AZ\"";
    assert!(
        load(in_clear).unwrap_err().contains("https"),
        "an api-key in clear"
    );
    let openai_with_version =
        "name = \"o\"\nbase_url = \"https://api.example.com/v1\"\napi_version = \"1\"";
    assert!(load(openai_with_version).is_err());
}
