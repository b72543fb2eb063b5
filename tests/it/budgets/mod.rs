//! Budgets: the `BudgetStore` behaviour suite on memory and Redis; concurrent requests that
//! cannot overspend, on one gateway and on two processes sharing Redis and PostgreSQL; exactly
//! one alert per crossing; spend that survives a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use tollgate::budget::{
    BudgetLine, BudgetStore, Exceeded, MemoryBudgets, RedisBudgets, Reservation,
};
use tollgate::config::{BudgetPeriod, BudgetSpec};
use tollgate::keys::{self, KeyBudgets, NewKey};
use tollgate::records::SpendScope;

use crate::support::engines::required_env;
use crate::support::redis_topologies::Target;
use crate::support::{Database, TestDatabase, TestGateway, UPSTREAM_KEY, binary, eventually};

fn spec(max_usd: f64, alert_at: f64) -> BudgetSpec {
    BudgetSpec {
        max_usd,
        period: BudgetPeriod::Month,
        alert_at,
    }
}

pub(crate) async fn behaviour(store: Arc<dyn BudgetStore>) {
    let owner = uuid::Uuid::new_v4().simple().to_string();
    let now = tollgate::records::now_ms();
    // Limits of 100 and 60 nano-dollars; alerts at half.
    let key = BudgetLine::new(SpendScope::Key(owner.clone()), &spec(0.000_000_1, 0.5), now);
    let user = BudgetLine::new(
        SpendScope::KeyUser(owner.clone(), "ann".into()),
        &spec(0.000_000_06, 0.5),
        now,
    );
    let both = [key.clone(), user.clone()];
    assert_eq!(
        store.reserve(&both, 10).await.unwrap(),
        Reservation::Unseeded(vec![0, 1]),
        "lines met for the first time must be seeded first"
    );
    store.seed(&key, 20).await.unwrap();
    store.seed(&user, 0).await.unwrap();
    store.seed(&key, 999).await.unwrap();
    assert_eq!(
        store.spent(&key).await.unwrap(),
        Some(20),
        "a seed never overwrites"
    );

    assert_eq!(
        store.reserve(&both, 30).await.unwrap(),
        Reservation::Reserved
    );
    // The user line (0 spent + 30 reserved + 40 > 60) refuses, and nothing is reserved.
    assert_eq!(
        store.reserve(&both, 40).await.unwrap(),
        Reservation::Exceeded(Exceeded {
            line: 1,
            spent: 0,
            reserved: 30
        })
    );
    // So the key line still has exactly 100 − 20 − 30 = 50 left.
    assert_eq!(
        store.reserve(std::slice::from_ref(&key), 50).await.unwrap(),
        Reservation::Reserved
    );
    assert!(matches!(
        store.reserve(std::slice::from_ref(&key), 1).await.unwrap(),
        Reservation::Exceeded(_)
    ));

    // Settling: 30 reserved became 25 spent; nothing crossed (key 45 < 50, user 25 < 30).
    assert_eq!(
        store.settle(&both, 30, 25).await.unwrap(),
        Vec::<usize>::new()
    );
    // The key's other reservation settles to 10: 55 ≥ 50 crosses, once.
    assert_eq!(
        store
            .settle(std::slice::from_ref(&key), 50, 10)
            .await
            .unwrap(),
        vec![0]
    );
    assert_eq!(
        store
            .settle(std::slice::from_ref(&key), 0, 1)
            .await
            .unwrap(),
        Vec::<usize>::new()
    );
    assert_eq!(store.spent(&key).await.unwrap(), Some(56));
    assert_eq!(store.spent(&user).await.unwrap(), Some(25));

    // A line seeded above its threshold (after a restart) does not alert again.
    let late = BudgetLine::new(SpendScope::Jwt(owner.clone()), &spec(0.0001, 0.5), now);
    store.seed(&late, 70).await.unwrap();
    assert_eq!(
        store
            .settle(std::slice::from_ref(&late), 0, 1)
            .await
            .unwrap(),
        Vec::<usize>::new()
    );
    // Settling a line that has no counter (Redis lost it) does not create one.
    let lost = BudgetLine::new(SpendScope::Anonymous(owner), &spec(0.0001, 0.5), now);
    store
        .settle(std::slice::from_ref(&lost), 10, 10)
        .await
        .unwrap();
    assert_eq!(store.spent(&lost).await.unwrap(), None);
}

#[tokio::test]
async fn budget_store_behaviour_in_memory() {
    behaviour(Arc::new(MemoryBudgets::new())).await;
}

#[tokio::test]
async fn budget_store_behaviour_in_redis() {
    let Some(url) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let prefix = format!("tg-budget-{}", uuid::Uuid::new_v4().simple());
    behaviour(Arc::new(RedisBudgets::new(
        Target::plain(url).link(Duration::from_secs(1)),
        &prefix,
    )))
    .await;
}

fn chat() -> Value {
    json!({
        "model": "gpt-4o",
        "max_tokens": 20,
        "messages": [{ "role": "user", "content": "echo: one two three four five" }]
    })
}

/// Fires `n` chats at once, spread over `urls`; returns (admitted, refused for budget).
async fn fire(client: &reqwest::Client, urls: &[String], key: &str, n: usize) -> (usize, usize) {
    let calls = (0..n).map(|i| {
        client
            .post(&urls[i % urls.len()])
            .bearer_auth(key)
            .json(&chat())
            .send()
    });
    let mut admitted = 0;
    let mut refused = 0;
    for response in join_all(calls).await {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => {
                assert_eq!(
                    response.headers().get("x-should-retry").unwrap(),
                    "false",
                    "SDKs must not retry a spent budget"
                );
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
                assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    (admitted, refused)
}

/// $0.0015: a gpt-4o chat here reserves ~0.00023 (prompt + 20 output tokens) and costs
/// ~0.00012, so the budget holds between 6 and 12 of them.
const BUDGET_USD: f64 = 0.0015;

/// A key with these budgets, stored in the gateway's key store.
async fn budgeted(
    gw: &TestGateway,
    key: Option<BudgetSpec>,
    user: Option<BudgetSpec>,
) -> keys::IssuedKey {
    let issued = keys::issue(
        NewKey {
            name: "budgeted".into(),
            budgets: KeyBudgets { key, user },
            ..NewKey::default()
        },
        keys::now_ms(),
    );
    gw.store.insert(&issued.key, &issued.hash).await.unwrap();
    issued
}

#[tokio::test]
async fn concurrent_requests_never_overspend_one_gateway() {
    let gw = TestGateway::start().await;
    let issued = budgeted(&gw, Some(spec(BUDGET_USD, 0.8)), None).await;
    let url = gw.url("/v1/chat/completions");
    let (mut admitted, mut refused) = (0, 0);
    for _ in 0..3 {
        let (ok, no) = fire(&gw.client, std::slice::from_ref(&url), &issued.secret, 64).await;
        admitted += ok;
        refused += no;
    }
    assert!(
        admitted >= 5,
        "the budget admits several requests ({admitted})"
    );
    assert!(refused > 0, "and refuses the rest");
    let spent = eventually(Duration::from_secs(5), || async {
        gw.state
            .records
            .spend(&SpendScope::Key(issued.key.id.clone()), 0)
            .await
            .unwrap()
            > 0
    })
    .await;
    assert!(spent);
    gw.state.finish_records().await;
    let total = gw
        .state
        .records
        .spend(&SpendScope::Key(issued.key.id.clone()), 0)
        .await
        .unwrap();
    assert!(
        total <= tollgate::pricing::usd_to_nanos(BUDGET_USD),
        "spent {total} n$ of a {BUDGET_USD} budget"
    );
    gw.stop().await;
}

#[tokio::test]
async fn two_processes_sharing_redis_and_postgres_never_overspend() {
    let Some(redis) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let Some(database) = TestDatabase::create(Database::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mock = crate::support::MockServer::start().await;
    let prefix = format!("tg-e2e-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(
        dir.path().join("tollgate.toml"),
        format!("[limits]\nredis_prefix = \"{prefix}\"\nbackend_timeout_ms = 500\n"),
    )
    .unwrap();
    let (key_id, key) = binary::create_key_with(
        &database.url,
        dir.path(),
        &["--budget-usd", &BUDGET_USD.to_string(), "--period", "month"],
    )
    .await;
    let env = [
        ("OPENAI_API_KEY", UPSTREAM_KEY.to_owned()),
        ("OPENAI_BASE_URL", mock.url()),
        ("DATABASE_URL", database.url.clone()),
        ("REDIS_URL", redis),
        (
            "TOLLGATE_CONFIG",
            dir.path().join("tollgate.toml").display().to_string(),
        ),
    ];
    let first = binary::serve(&env, dir.path()).await;
    let second = binary::serve(&env, dir.path()).await;
    let urls = [
        format!("http://{}/v1/chat/completions", first.address),
        format!("http://{}/v1/chat/completions", second.address),
    ];
    let client = reqwest::Client::new();
    let mut admitted = 0;
    for _ in 0..3 {
        admitted += fire(&client, &urls, &key, 64).await.0;
    }
    assert!(
        admitted >= 5,
        "the budget admits several requests ({admitted})"
    );
    // SIGTERM drains both audit queues into PostgreSQL.
    for replica in [first, second] {
        replica.signal("TERM").await;
        let (code, _) = replica.finish().await;
        assert_eq!(code, Some(0));
    }
    let stores = tollgate::store::connect(
        &tollgate::config::Config::from_toml_str(
            "t",
            "",
            &[
                ("OPENAI_API_KEY", "sk-x"),
                ("DATABASE_URL", database.url.as_str()),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap()
        .database,
    )
    .await
    .unwrap();
    let total = stores
        .records
        .spend(&SpendScope::Key(key_id), 0)
        .await
        .unwrap();
    assert_eq!(
        stores.records.count().await.unwrap(),
        3 * 64,
        "every answered request, admitted or refused, has its record"
    );
    assert!(
        total <= tollgate::pricing::usd_to_nanos(BUDGET_USD),
        "two replicas spent {total} n$ of a {BUDGET_USD} budget"
    );
    assert!(total > 0);
    database.drop_schema().await;
}

/// A webhook receiver that counts POSTs.
async fn webhook() -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<Value>>>) {
    let count = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let app = {
        let count = count.clone();
        let bodies = bodies.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let count = count.clone();
                let bodies = bodies.clone();
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    bodies.lock().unwrap().push(body);
                    "ok"
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio_util::task::TaskTracker::new().spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{address}/hook"), count, bodies)
}

#[tokio::test]
async fn each_crossing_alerts_exactly_once() {
    let (hook, count, bodies) = webhook().await;
    let gw = TestGateway::builder()
        .env("TOLLGATE_ALERT_WEBHOOK", &hook)
        .start()
        .await
        .unwrap();
    let issued = budgeted(
        &gw,
        Some(spec(BUDGET_USD, 0.5)),
        Some(spec(BUDGET_USD, 0.3)),
    )
    .await;
    let url = gw.url("/v1/chat/completions");
    // Concurrent bursts until the budget is spent, all as one user.
    for _ in 0..4 {
        let calls = (0..16).map(|_| {
            gw.client
                .post(&url)
                .bearer_auth(&issued.secret)
                .header("x-user-id", "ann")
                .json(&chat())
                .send()
        });
        join_all(calls).await;
    }
    // Both lines crossed: one POST each, no more.
    assert!(
        eventually(Duration::from_secs(5), || async {
            count.load(Ordering::SeqCst) >= 2
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let bodies = bodies.lock().unwrap().clone();
    let mut scopes: Vec<&str> = bodies
        .iter()
        .map(|b| b["scope"].as_str().unwrap())
        .collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["key", "key_user"]);
    assert!(bodies.iter().all(|b| b["key_id"] == issued.key.id.as_str()));
    // A sentence for people rides beside the fields (Slack and Teams show `text`).
    assert!(
        bodies.iter().all(|b| b["text"]
            .as_str()
            .unwrap()
            .starts_with("Tollgate budget alert: ")),
        "{bodies:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_slack_format_posts_the_sentence_alone() {
    let (hook, count, bodies) = webhook().await;
    let gw = TestGateway::builder()
        .env("TOLLGATE_ALERT_WEBHOOK", &hook)
        .env("TOLLGATE_ALERT_FORMAT", "slack")
        .start()
        .await
        .unwrap();
    let issued = budgeted(&gw, Some(spec(BUDGET_USD, 0.01)), None).await;
    let sent = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&issued.secret)
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            count.load(Ordering::SeqCst) >= 1
        })
        .await
    );
    let bodies = bodies.lock().unwrap().clone();
    let body = bodies[0].as_object().unwrap();
    assert_eq!(body.keys().collect::<Vec<_>>(), ["text"], "{body:?}");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains(&format!("Key `{}`", issued.key.id)),
        "{body:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn spend_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("restart.db").display());
    let mock = crate::support::MockServer::start().await;
    let (_, key) = binary::create_key_with(
        &database,
        dir.path(),
        &["--budget-usd", &BUDGET_USD.to_string(), "--period", "day"],
    )
    .await;
    let env = [
        ("OPENAI_API_KEY", UPSTREAM_KEY.to_owned()),
        ("OPENAI_BASE_URL", mock.url()),
        ("DATABASE_URL", database),
    ];
    let client = reqwest::Client::new();
    let first = binary::serve(&env, dir.path()).await;
    let url = format!("http://{}/v1/chat/completions", first.address);
    // Spend it one request at a time, until refused. A refusal right after an answer may come
    // from that answer's reservation, not yet settled to its (smaller) cost: the budget is spent
    // only when a request is still refused once the settlements have landed.
    let mut admitted = 0;
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 2 {
        let response = client
            .post(&url)
            .bearer_auth(&key)
            .json(&chat())
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            refused_in_a_row += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        assert_eq!(response.status(), 200);
        refused_in_a_row = 0;
        admitted += 1;
        assert!(admitted < 100, "the budget never ran out");
    }
    first.signal("TERM").await;
    first.finish().await;
    // A new process knows the spend from the records: still refused.
    let second = binary::serve(&env, dir.path()).await;
    let url = format!("http://{}/v1/chat/completions", second.address);
    let response = client
        .post(&url)
        .bearer_auth(&key)
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        429,
        "spend was forgotten across the restart"
    );
    second.signal("TERM").await;
    second.finish().await;
}

mod outage;
