//! Rate limits end to end: what callers see, who is counted, and limits shared by replicas.

pub(crate) mod redis;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate::keys::{self, NewKey};
use tollgate::limiter::rules::RuleSpec;

use crate::support::engines::required_env;
use crate::support::{TestGateway, UPSTREAM_KEY, binary, error_of};

fn chat() -> Value {
    json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hello world" }], "max_tokens": 5 })
}

const KEY_CHAT_3: &str =
    "[[limits.rules]]\nscope = \"key\"\nroute = \"chat\"\nrequests = 3\nper = \"1h\"\n";

#[tokio::test]
async fn a_request_rule_admits_exactly_its_limit_with_openai_headers() {
    let gw = TestGateway::builder()
        .toml(KEY_CHAT_3)
        .start()
        .await
        .unwrap();
    for remaining in ["2", "1", "0"] {
        let response = gw
            .post("/v1/chat/completions", &chat())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["x-ratelimit-limit-requests"], "3");
        assert_eq!(headers["x-ratelimit-remaining-requests"], remaining);
        assert!(
            headers["x-ratelimit-reset-requests"]
                .to_str()
                .unwrap()
                .ends_with('s')
        );
    }
    let refused = gw
        .post("/v1/chat/completions", &chat())
        .send()
        .await
        .unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1195..=1201).contains(&retry_after),
        "one request refills every 20 minutes: {retry_after}"
    );
    let (status, error) = error_of(refused).await;
    assert_eq!(status, 429);
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("3 requests per 1h for each key on chat"),
        "{error}"
    );
    // Other routes have their own rules.
    let embeddings = gw
        .post(
            "/v1/embeddings",
            &json!({ "model": "text-embedding-3-small", "input": "x" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(embeddings.status(), 200);
    assert_eq!(
        gw.upstream_requests().await.len(),
        4,
        "the refused request never reached the upstream"
    );
    gw.stop().await;
}

#[tokio::test]
async fn users_have_their_own_buckets_and_the_header_wins_over_the_body() {
    let rules =
        "[[limits.rules]]\nscope = \"user\"\nroute = \"chat\"\nrequests = 2\nper = \"1h\"\n";
    let gw = TestGateway::builder().toml(rules).start().await.unwrap();
    let as_user = |header: Option<&str>, body_user: Option<&str>| {
        let mut body = chat();
        if let Some(user) = body_user {
            body["user"] = json!(user);
        }
        let mut request = gw.post("/v1/chat/completions", &body);
        if let Some(user) = header {
            request = request.header("x-user-id", user);
        }
        request.send()
    };
    assert_eq!(as_user(Some("alice"), None).await.unwrap().status(), 200);
    assert_eq!(
        as_user(None, Some("alice")).await.unwrap().status(),
        200,
        "the body's user is the same alice"
    );
    assert_eq!(as_user(Some("alice"), None).await.unwrap().status(), 429);
    assert_eq!(
        as_user(Some("bob"), Some("alice")).await.unwrap().status(),
        200,
        "x-user-id wins over the body"
    );
    assert_eq!(
        as_user(None, None).await.unwrap().status(),
        200,
        "no user: user rules do not apply"
    );
    let bad = as_user(Some("not ok!"), None).await.unwrap();
    let (status, error) = error_of(bad).await;
    assert_eq!((status, error["param"].as_str()), (400, Some("x-user-id")));
    gw.stop().await;
}

#[tokio::test]
async fn client_ips_follow_trusted_proxies_only() {
    let rules = "[[limits.rules]]\nscope = \"ip\"\nroute = \"*\"\nrequests = 2\nper = \"1h\"\n";
    let spoofed = TestGateway::builder().toml(rules).start().await.unwrap();
    for (i, forwarded) in ["1.1.1.1", "2.2.2.2", "3.3.3.3"].iter().enumerate() {
        let response = spoofed
            .post("/v1/chat/completions", &chat())
            .header("x-forwarded-for", *forwarded)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            if i < 2 { 200 } else { 429 },
            "an untrusted peer's X-Forwarded-For changes nothing"
        );
    }
    spoofed.stop().await;
    let behind_proxy = TestGateway::builder()
        .toml(rules)
        .env("TOLLGATE_TRUSTED_PROXIES", "127.0.0.1/32")
        .start()
        .await
        .unwrap();
    for forwarded in ["1.1.1.1", "2.2.2.2", "3.3.3.3", "9.9.9.9, 4.4.4.4"] {
        let response = behind_proxy
            .post("/v1/chat/completions", &chat())
            .header("x-forwarded-for", forwarded)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "each client behind the proxy has its own bucket ({forwarded})"
        );
    }
    let status: Value = behind_proxy
        .get("/rate-limit/status")
        .header("x-forwarded-for", "6.6.6.6, 4.4.4.4")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["client_ip"], "4.4.4.4",
        "the rightmost untrusted hop"
    );
    assert_eq!(status["buckets"][0]["remaining"], 1);
    behind_proxy.stop().await;
}

#[tokio::test]
async fn a_keys_own_rules_replace_the_defaults_of_the_same_scope_and_route() {
    let gw = TestGateway::builder()
        .toml(KEY_CHAT_3)
        .start()
        .await
        .unwrap();
    let new = NewKey {
        name: "vip".into(),
        rules: vec![RuleSpec::parse_cli("scope=key,route=chat,requests=5,per=1h").unwrap()],
        ..NewKey::default()
    };
    let issued = keys::issue(new, keys::now_ms());
    gw.store.insert(&issued.key, &issued.hash).await.unwrap();
    for _ in 0..5 {
        let response = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&issued.secret)
            .json(&chat())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ratelimit-limit-requests"], "5");
    }
    let sixth = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&issued.secret)
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(sixth.status(), 429);
    gw.stop().await;
}

#[tokio::test]
async fn token_rules_reserve_the_estimate_and_settle_to_the_usage() {
    // "hello world" is 2 tokens to the tokenizer and 2 words to the mock: prompt 2 + 3 + 3 = 8,
    // completion max_tokens = 5 (the mock's reply is cut to it): 13 tokens reserved and used.
    let rules = "[[limits.rules]]\nscope = \"key\"\nroute = \"chat\"\ntokens = 130\nper = \"1h\"\n";
    let gw = TestGateway::builder().toml(rules).start().await.unwrap();
    let first = gw
        .post("/v1/chat/completions", &chat())
        .send()
        .await
        .unwrap();
    assert_eq!(first.headers()["x-ratelimit-limit-tokens"], "130");
    assert_eq!(first.headers()["x-ratelimit-remaining-tokens"], "117");
    // A request that reserves far more than it uses gets the difference back.
    let mut generous = chat();
    generous["max_tokens"] = json!(100);
    generous["messages"][0]["content"] = json!("echo: just four words");
    let answer: Value = gw
        .post("/v1/chat/completions", &generous)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let used = answer["usage"]["total_tokens"].as_u64().unwrap();
    let settled = crate::support::eventually(Duration::from_secs(2), || async {
        let status: Value = gw
            .get("/rate-limit/status")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["unit"] == "tokens" && b["remaining"] == 117 - used)
    })
    .await;
    assert!(settled, "the reservation settled to the {used} tokens used");
    // A request that could never fit is refused outright, not told to retry.
    let mut huge = chat();
    huge["max_tokens"] = json!(1000);
    let (status, error) =
        error_of(gw.post("/v1/chat/completions", &huge).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(
        error["message"].as_str().unwrap().contains("can ever hold"),
        "{error}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn status_reports_every_bucket_without_consuming() {
    let gw = TestGateway::start().await;
    let read = || async {
        gw.get("/rate-limit/status")
            .header("x-user-id", "carol")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let before = read().await;
    let after = read().await;
    assert_eq!(before["buckets"], after["buckets"], "reading takes nothing");
    let rules: Vec<&str> = before["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        [
            "1000 requests per 1h for each ip on *",
            "100 requests per 1m for each user on chat",
            "50 requests per 1h for each user on images",
            "500 requests per 1h for each user on embeddings",
        ],
        "the seeds' defaults"
    );
    assert_eq!(before["buckets"][1]["remaining"], 100);
    gw.post("/v1/chat/completions", &chat())
        .header("x-user-id", "carol")
        .send()
        .await
        .unwrap();
    assert_eq!(read().await["buckets"][1]["remaining"], 99);
    gw.stop().await;
}

#[tokio::test]
async fn anonymous_callers_are_limited_per_ip_and_user_when_the_mode_is_on() {
    let off = TestGateway::start().await;
    let refused = off
        .client
        .post(off.url("/v1/chat/completions"))
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "anonymous mode is off by default");
    off.stop().await;

    let toml = "[anonymous]\nenabled = true\nmodels = [\"gpt-4o-mini\"]\n\n\
                [[anonymous.rules]]\nscope = \"user\"\nroute = \"chat\"\nrequests = 1\nper = \"1h\"\n\n\
                [[anonymous.rules]]\nscope = \"ip\"\nroute = \"*\"\nrequests = 3\nper = \"1h\"\n";
    let gw = TestGateway::builder().toml(toml).start().await.unwrap();
    let anonymous = |user: &'static str, model: &'static str| {
        let mut body = chat();
        body["model"] = json!(model);
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .header("x-user-id", user)
            .json(&body)
            .send()
    };
    assert_eq!(anonymous("u1", "gpt-4o-mini").await.unwrap().status(), 200);
    assert_eq!(
        anonymous("u1", "gpt-4o-mini").await.unwrap().status(),
        429,
        "one per user"
    );
    assert_eq!(anonymous("u2", "gpt-4o-mini").await.unwrap().status(), 200);
    assert_eq!(
        anonymous("u3", "gpt-4o").await.unwrap().status(),
        403,
        "[anonymous] models"
    );
    assert_eq!(anonymous("u4", "gpt-4o-mini").await.unwrap().status(), 200);
    assert_eq!(
        anonymous("u5", "gpt-4o-mini").await.unwrap().status(),
        429,
        "three per IP, whoever the user"
    );
    // A key still works as a key.
    assert_eq!(
        gw.post("/v1/chat/completions", &chat())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn passthrough_families_have_route_classes_of_their_own() {
    let rules = "[[limits.rules]]\nscope = \"key\"\nroute = \"moderations\"\nrequests = 1\nper = \"1h\"\n\n\
                 [[limits.rules]]\nscope = \"key\"\nroute = \"files\"\nrequests = 2\nper = \"1h\"\n";
    let gw = TestGateway::builder().toml(rules).start().await.unwrap();
    let moderate = || gw.post("/v1/moderations", &json!({ "input": "hi" })).send();
    assert_eq!(moderate().await.unwrap().status(), 200);
    let (status, error) = error_of(moderate().await.unwrap()).await;
    assert_eq!(status, 429, "{error}");
    // Files count against their own rule, not the moderations one; chat against neither.
    for _ in 0..2 {
        assert_eq!(gw.get("/v1/files").send().await.unwrap().status(), 404);
    }
    assert_eq!(gw.get("/v1/files").send().await.unwrap().status(), 429);
    // Uploads are files too.
    let cancel = gw
        .client
        .post(gw.url("/v1/uploads/upload_1/cancel"))
        .bearer_auth(&gw.key)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 429);
    assert_eq!(
        gw.post("/v1/chat/completions", &chat())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.stop().await;
}
