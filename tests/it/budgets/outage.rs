//! Budgets through an outage of their shared counters: local enforcement, repayment, and
//! the log of a failing backend.

use super::*;

/// A budget backend that fails for every request (Redis down, `fail_open`) writes one warning
/// per interval with how many it held back, not one per request: before, 6,000 requests in an
/// outage wrote 8,566 lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_budget_backend_logs_a_line_per_interval_not_per_request() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("quiet.db").display());
    let mock = crate::support::MockServer::start().await;
    std::fs::write(
        dir.path().join("tollgate.toml"),
        "[limits]\nbackend_timeout_ms = 50\non_backend_error = \"fail_open\"\n",
    )
    .unwrap();
    let (_, key) = binary::create_key_with(
        &database,
        dir.path(),
        &["--budget-usd", "10", "--period", "month"],
    )
    .await;
    let env = [
        ("OPENAI_API_KEY", UPSTREAM_KEY.to_owned()),
        ("OPENAI_BASE_URL", mock.url()),
        ("DATABASE_URL", database),
        ("REDIS_URL", format!("redis://127.0.0.1:{dead}")),
        (
            "TOLLGATE_CONFIG",
            dir.path().join("tollgate.toml").display().to_string(),
        ),
    ];
    let served = binary::serve(&env, dir.path()).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/chat/completions", served.address);
    for _ in 0..100 {
        let response = client
            .post(&url)
            .bearer_auth(&key)
            .json(&json!({ "model": "gpt-4o-mini", "max_tokens": 5,
                           "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "fail_open serves");
    }
    let log = served.stop().await;
    let budget_lines = log.matches("budget backend failed").count();
    assert_eq!(budget_lines, 1, "{log}");
    let warnings = log.lines().filter(|l| l.contains("\"WARN\"")).count();
    assert!(
        warnings < 10,
        "{warnings} warnings for 100 requests:\n{log}"
    );
}

/// The outage of the test below, with the gateway's budget and its calls.
struct Outage {
    gw: TestGateway,
    key_id: String,
    secret: String,
    line: BudgetLine,
}

/// Each call of [`Outage`] holds and costs 10 + 1,000 tokens of gpt-4o-mini.
const OUTAGE_CALL: i64 = 10 * 150 + 1_000 * 600;

impl Outage {
    /// A gateway on `redis` with a $0.01 budget, and four calls spent before the outage
    /// (recorded: the records seed the local counters).
    async fn start(redis: &crate::support::redis_server::RedisServer) -> Self {
        let gw = TestGateway::builder()
            .env("REDIS_URL", &redis.url())
            .toml("[limits]\nbackend_timeout_ms = 100\n\n[budgets]\noutage_share = 0.5\n")
            .start()
            .await
            .unwrap();
        let budget = BudgetSpec {
            max_usd: 0.01,
            period: BudgetPeriod::Month,
            alert_at: 1.0,
        };
        let (key_id, secret) = gw
            .create_key_with(NewKey {
                name: "outage".into(),
                budgets: KeyBudgets {
                    key: Some(budget.clone()),
                    user: None,
                },
                ..NewKey::default()
            })
            .await;
        let line = BudgetLine::new(SpendScope::Key(key_id.clone()), &budget, keys::now_ms());
        gw.fault(
            json!({ "usage": { "prompt_tokens": 10, "completion_tokens": 1_000 }, "count": 100 }),
        )
        .await;
        let outage = Self {
            gw,
            key_id,
            secret,
            line,
        };
        for _ in 0..4 {
            assert_eq!(outage.call().await, 200);
        }
        assert!(outage.recorded_reaches(4).await);
        outage
    }

    async fn call(&self) -> u16 {
        self.gw
            .client
            .post(self.gw.url("/v1/chat/completions"))
            .bearer_auth(&self.secret)
            .json(&json!({ "model": "gpt-4o-mini", "max_tokens": 1_000,
                           "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    async fn recorded(&self) -> i64 {
        self.gw
            .state
            .records
            .spend(&SpendScope::Key(self.key_id.clone()), 0)
            .await
            .unwrap()
    }

    /// Whether the records come to hold `calls` calls within 5 s.
    async fn recorded_reaches(&self, calls: i64) -> bool {
        eventually(Duration::from_secs(5), || async {
            self.recorded().await == calls * OUTAGE_CALL
        })
        .await
    }

    /// During the outage: 10,000,000 − 2,406,000 n$ left, half of it holds 6 more calls.
    async fn spend_through_the_outage(&self) {
        let mut statuses = Vec::new();
        for _ in 0..10 {
            statuses.push(self.call().await);
        }
        assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429, 429, 429, 429]);
        assert!(self.recorded_reaches(10).await);
    }

    /// After the outage: served again, and the shared counter agrees with the records.
    async fn agrees_after(self) {
        let back = eventually(Duration::from_secs(10), || async {
            self.call().await == 200
        })
        .await;
        assert!(back, "served again once Redis answers");
        assert!(self.recorded_reaches(11).await);
        let agreed = eventually(Duration::from_secs(5), || async {
            self.gw.state.budgets.spent(&self.line).await.ok() == Some(11 * OUTAGE_CALL)
        })
        .await;
        assert!(
            agreed,
            "the shared counter holds the outage's spend: {:?}",
            self.gw.state.budgets.spent(&self.line).await
        );
        self.gw.stop().await;
    }
}

/// Redis stops mid-run (`budgets.on_backend_error = "local"`, the default): the replica keeps
/// enforcing on its own counters, seeded from the records and allowed half of what was left,
/// so the budget holds through the outage instead of being served unreserved; when Redis
/// returns, its counters agree with the records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_hold_on_local_counters_while_redis_is_down() {
    let Some(_) = required_env("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    // Redis dies and comes back empty: its counters are seeded from the records, which hold
    // the outage's spend.
    let mut redis = crate::support::redis_server::RedisServer::start().await;
    let outage = Outage::start(&redis).await;
    redis.stop().await;
    outage.spend_through_the_outage().await;
    redis.restart().await;
    outage.agrees_after().await;

    // Redis freezes and thaws with its data: what was spent locally is added to its counter.
    let redis = crate::support::redis_server::RedisServer::start().await;
    let outage = Outage::start(&redis).await;
    redis.pause().await;
    outage.spend_through_the_outage().await;
    redis.resume().await;
    outage.agrees_after().await;
}
