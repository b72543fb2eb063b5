//! The admin API: token, keys with budgets and spend, usage, recent requests, its OpenAPI
//! document; on SQLite and PostgreSQL.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Database, TestGateway, error_of, eventually};

const ADMIN: &str = "admin-token-for-tests-0123456789";

async fn gateway(database: Database) -> Option<TestGateway> {
    TestGateway::builder()
        .database(database)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .start()
        .await
}

fn admin(gw: &TestGateway, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    gw.client.request(method, gw.url(path)).bearer_auth(ADMIN)
}

/// GET `path` with the admin token; the JSON answer.
async fn admin_get(gw: &TestGateway, path: &str) -> Value {
    admin(gw, reqwest::Method::GET, path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_admin_api_is_absent_without_a_token_and_refuses_a_wrong_one() {
    let gw = TestGateway::start().await;
    let response = gw
        .client
        .get(gw.url("/admin/keys"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.0, 404);
    gw.stop().await;

    let gw = gateway(Database::Sqlite).await.unwrap();
    // Every admin route, the one that spends OpenAI's admin key (reconcile) included.
    for path in ["/admin/keys", "/admin/usage", "/admin/reconcile"] {
        for token in ["wrong", &gw.key] {
            let response = gw
                .client
                .get(gw.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(error_of(response).await.0, 401, "{path} with token {token}");
        }
    }
    let response = gw.client.get(gw.url("/admin/keys")).send().await.unwrap();
    assert_eq!(error_of(response).await.0, 401);
    let openapi: Value = admin_get(&gw, "/admin/openapi.json").await;
    for path in [
        "/admin/keys",
        "/admin/keys/{id}",
        "/admin/keys/{id}/revoke",
        "/admin/usage",
        "/admin/requests",
        "/admin/reconcile",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} is documented");
    }
    gw.stop().await;
}

async fn keys_usage_and_requests(database: Database) {
    let Some(gw) = gateway(database).await else {
        return;
    };
    // Create a key with a budget; its secret comes back once.
    let created = admin(&gw, reqwest::Method::POST, "/admin/keys")
        .json(&json!({
            "name": "team-a",
            "models": ["gpt-4o-mini"],
            "budgets": { "key": { "max_usd": 5, "period": "month" } }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tg-"));

    // Spend with it, as two users.
    for user in ["ann", "bob", "ann"] {
        let response = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&secret)
            .header("x-user-id", user)
            .json(&json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "echo: spend some money please" }] }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let stored = eventually(Duration::from_secs(5), || async {
        gw.state.records.count().await.unwrap() >= 3
    })
    .await;
    assert!(stored);

    // The key shows its spend; it is the sum of its records.
    let shown: Value = admin_get(&gw, &format!("/admin/keys/{id}")).await;
    let records: Value = admin(
        &gw,
        reqwest::Method::GET,
        &format!("/admin/requests?key={id}&limit=2"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(records["data"].as_array().unwrap().len(), 2);
    assert_eq!(records["has_more"], true);
    let before = records["next_before"].as_str().unwrap();
    let rest: Value = admin(
        &gw,
        reqwest::Method::GET,
        &format!("/admin/requests?key={id}&before={before}"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let all: Vec<&Value> = records["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["data"].as_array().unwrap())
        .collect();
    assert_eq!(all.len(), 3, "{rest}");
    let total: i64 = all.iter().map(|r| r["cost_nanos"].as_i64().unwrap()).sum();
    assert!(total > 0);
    assert_eq!(
        shown["spend"]["spent_nanos"].as_i64(),
        Some(total),
        "{shown}"
    );
    assert_eq!(shown["budgets"]["key"]["max_usd"], 5.0);

    // Usage by user: ann 2 requests, bob 1, costs adding up to the total.
    let usage: Value = admin(
        &gw,
        reqwest::Method::GET,
        "/admin/usage?group_by=user,model,day",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let rows = usage["data"].as_array().unwrap();
    let ann = rows.iter().find(|r| r["user_id"] == "ann").unwrap();
    let bob = rows.iter().find(|r| r["user_id"] == "bob").unwrap();
    assert_eq!(
        (ann["requests"].as_i64(), bob["requests"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(ann["model"], "gpt-4o-mini");
    assert!(ann["day"].as_str().unwrap().starts_with("20"));
    assert_eq!(
        ann["cost_nanos"].as_i64().unwrap() + bob["cost_nanos"].as_i64().unwrap(),
        total
    );
    let bad = admin(&gw, reqwest::Method::GET, "/admin/usage?group_by=planet")
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(bad).await;
    assert_eq!((status, error["param"].as_str()), (400, Some("group_by")));

    // Change it, list it, revoke it.
    let patched: Value = admin(&gw, reqwest::Method::PATCH, &format!("/admin/keys/{id}"))
        .json(&json!({ "name": "team-a2", "budgets": {} }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["name"], "team-a2");
    assert!(patched["budgets"].as_object().unwrap().is_empty());
    let listed: Value = admin_get(&gw, "/admin/keys?limit=500").await;
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str())
    );
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key_hash").is_none())
    );
    let revoke = || {
        admin(
            &gw,
            reqwest::Method::POST,
            &format!("/admin/keys/{id}/revoke"),
        )
        .send()
    };
    let revoked = revoke().await.unwrap();
    assert_eq!(revoked.status(), 200);
    let revoked: Value = revoked.json().await.unwrap();
    let revoked_at = revoked["revoked_at_ms"]
        .as_i64()
        .expect("the key says when");
    // Idempotent, and the key stays readable for the audit.
    let again: Value = revoke().await.unwrap().json().await.unwrap();
    assert_eq!(again["revoked_at_ms"], revoked_at);
    let shown: Value = admin_get(&gw, &format!("/admin/keys/{id}")).await;
    assert_eq!(shown["revoked_at_ms"], revoked_at);
    let refused = eventually(Duration::from_millis(1500), || async {
        gw.client
            .get(gw.url("/v1/models"))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap()
            .status()
            == 401
    })
    .await;
    assert!(refused, "a revoked key stops within a second");
    // Pages never skip records that share a millisecond.
    let same_ms = tollgate::records::now_ms();
    let burst: Vec<tollgate::records::Record> = (0..3)
        .map(|i| tollgate::records::Record {
            id: format!("01a23ed0-0000-7000-8000-00000000000{i}"),
            created_at_ms: same_ms,
            request_id: format!("burst-{i}"),
            key_id: Some("key_burst".into()),
            caller: "key".into(),
            method: "POST".into(),
            route: "/v1/embeddings".into(),
            status: 200,
            outcome: "ok".into(),
            ..tollgate::records::Record::default()
        })
        .collect();
    gw.state.records.insert(&burst).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(before) => format!("/admin/requests?key=key_burst&limit=1&before={before}"),
            None => "/admin/requests?key=key_burst&limit=1".to_owned(),
        };
        let page: Value = admin_get(&gw, &path).await;
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        match page["next_before"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let burst_id = |i: u8| format!("01a23ed0-0000-7000-8000-00000000000{i}");
    assert_eq!(seen, [burst_id(2), burst_id(1), burst_id(0)]);

    let missing = admin(&gw, reqwest::Method::GET, "/admin/keys/key_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(missing).await.0, 404);
    gw.stop().await;
}

#[tokio::test]
async fn keys_usage_and_requests_on_sqlite() {
    keys_usage_and_requests(Database::Sqlite).await;
}

#[tokio::test]
async fn keys_usage_and_requests_on_postgres() {
    keys_usage_and_requests(Database::Postgres).await;
}

#[tokio::test]
async fn key_fields_are_bounded_and_routes_are_families() {
    let gw = gateway(Database::Sqlite).await.unwrap();
    let create = |body: Value| {
        admin(&gw, reqwest::Method::POST, "/admin/keys")
            .json(&body)
            .send()
    };
    let big = "x".repeat(17 * 1024);
    for (body, param) in [
        (json!({ "name": "line\nbreak" }), "name"),
        (json!({ "name": "bell\u{7}" }), "name"),
        (json!({ "name": "n".repeat(129) }), "name"),
        (json!({ "name": "   " }), "name"),
        (json!({ "name": "ok", "owner": "tab\there" }), "owner"),
        (json!({ "name": "ok", "models": ["gpt-4o\u{0}"] }), "models"),
        (
            json!({ "name": "ok", "metadata": { "blob": big } }),
            "metadata",
        ),
        (
            json!({ "name": "ok", "routes": ["organization"] }),
            "routes",
        ),
        (json!({ "name": "ok", "routes": ["nonsense"] }), "routes"),
        // Invisible characters that disguise a name: a right-to-left override, a zero-width
        // space, a line separator.
        (json!({ "name": "invoice\u{202e}fdp.exe" }), "name"),
        (json!({ "name": "ad\u{200b}min" }), "name"),
        (json!({ "name": "two\u{2028}lines" }), "name"),
        (
            json!({ "name": "ok", "metadata": (0..65).map(|i| (i.to_string(), json!(i))).collect::<serde_json::Map<_, _>>() }),
            "metadata",
        ),
        (
            json!({ "name": "ok", "expires_at_ms": -1 }),
            "expires_at_ms",
        ),
        (
            json!({ "name": "ok", "rules": [{ "scope": "key", "route": "chat", "requests": 1, "per": "01m" }] }),
            "rules",
        ),
    ] {
        let (status, error) = error_of(create(body.clone()).await.unwrap()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["param"], param, "{body}: {error}");
    }
    let created: Value = create(json!({ "name": "batch runner", "models": ["gpt-4o-mini"], "routes": ["batches", "files"] }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["routes"], json!(["batches", "files"]));
    // Objects only as objects, and whole numbers however JSON writes them (as the schema
    // says): an array of a struct's fields is refused, `7.0` is seven.
    for body in [
        json!({ "name": "ok", "budgets": [null, null] }),
        json!({ "name": "ok", "rules": [["key", "chat", 1, null, "1m"]] }),
        json!(["ok"]),
    ] {
        let (status, _) = error_of(create(body.clone()).await.unwrap()).await;
        assert_eq!(status, 400, "{body}");
    }
    let whole: Value = create(json!({ "name": "ok", "rules": [{ "scope": "key", "route": "chat", "requests": 7.0, "per": "1m" }], "expires_at_ms": 4.1e12 }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whole["rules"][0]["requests"], 7);
    assert_eq!(whole["expires_at_ms"], 4_100_000_000_000_i64);
    let id = created["id"].as_str().unwrap();
    let patched = admin(&gw, reqwest::Method::PATCH, &format!("/admin/keys/{id}"))
        .json(&json!({ "routes": ["fine_tuning"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_eq!(
        admin_get(&gw, &format!("/admin/keys/{id}")).await["routes"],
        json!(["fine_tuning"])
    );
    let (status, _) = error_of(
        admin(&gw, reqwest::Method::PATCH, &format!("/admin/keys/{id}"))
            .json(&json!({ "name": "a\u{1b}[31mred" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    gw.stop().await;
}
