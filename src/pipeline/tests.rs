//! The pipeline's promise that nothing leaks: a stage that fails with `?`, a call dropped mid
//! flight, and a call dropped after it went upstream, each against the real embedded backends.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::budget::BudgetLine;
use crate::identity::Caller;
use crate::keys::{ApiKey, KeyBudgets};
use crate::limiter::rules::{RouteClass, Rule, Scope, Unit};

const TOKEN_LIMIT: u64 = 10_000;
/// $1 in nano-dollars.
const BUDGET: i64 = 1_000_000_000;

/// A budget line's state, in nano-dollars.
#[derive(Debug, Default, PartialEq)]
struct Money {
    spent: i64,
    held: i64,
}

struct Fixture {
    state: AppState,
    principal: Principal,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let env: crate::config::Env = [
        ("OPENAI_API_KEY", "sk-test-upstream"),
        (
            "DATABASE_URL",
            &format!("sqlite://{}", dir.path().join("t.db").display()),
        ),
        ("TOLLGATE_DATA_DIR", &dir.path().display().to_string()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    let config = crate::config::Config::from_toml_str("t", "", &env).unwrap();
    let stores = crate::store::connect(&config.database).await.unwrap();
    let state = AppState::new(config, stores).unwrap();
    let budget: crate::config::BudgetSpec =
        serde_json::from_value(serde_json::json!({"max_usd": 1.0, "period": "total"})).unwrap();
    let key = ApiKey {
        id: "key_leak_test".to_owned(),
        name: "leak test".to_owned(),
        prefix: "abcdefgh".to_owned(),
        owner: None,
        models: Vec::new(),
        rules: Vec::new(),
        metadata: serde_json::Map::new(),
        routes: Vec::new(),
        budgets: KeyBudgets {
            key: Some(budget),
            user: None,
        },
        created_at_ms: 0,
        expires_at_ms: None,
        revoked_at_ms: None,
    };
    let principal = Principal {
        caller: Caller::Key(Arc::new(key)),
        user: None,
        client_ip: [127, 0, 0, 1].into(),
        models: Arc::from([]),
        rules: Arc::from([Rule {
            scope: Scope::Key,
            route: RouteClass::Chat,
            unit: Unit::Tokens,
            limit: TOKEN_LIMIT,
            per: Duration::from_secs(3600),
        }]),
        routes: Arc::from([]),
    };
    Fixture {
        state,
        principal,
        _dir: dir,
    }
}

fn chat() -> ModelCall {
    ModelCall {
        route: ModelRoute::Chat,
        method: Method::POST,
        upstream_path: ApiPath::fixed("chat/completions"),
        query: None,
        headers: HeaderMap::new(),
        body: CallBody::Json(Bytes::from_static(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],"max_tokens":1000}"#,
        )),
        operation: None,
        left_behind: None,
    }
}

/// The stages up to the budgets, then one added later that fails with `?`.
async fn stages_then_a_failing_one(
    call: &mut Call,
    state: &AppState,
) -> Result<Response, GatewayError> {
    validate::validate(call, state).await?;
    authorize::authorize(call, state)?;
    rate_limit::limit(call, state).await?;
    budget::reserve(call, state).await?;
    assert!(
        call.reservations.is_holding(),
        "the stages reserved nothing"
    );
    a_stage_added_later(call)?;
    unreachable!("the added stage always fails")
}

fn a_stage_added_later(_call: &mut Call) -> Result<(), GatewayError> {
    Err(GatewayError::invalid(
        "refused by a stage added later",
        None,
    ))
}

impl Fixture {
    /// Tokens left in the key's bucket, and what the key's budget line has spent and holds.
    async fn left(&self) -> (u64, Money) {
        let buckets: Vec<_> =
            rate_limit::buckets(&self.principal, &self.principal.rules, RouteClass::Chat)
                .into_iter()
                .map(|(_, bucket)| bucket)
                .collect();
        let tokens = self.state.limiter.peek(&buckets).await.unwrap()[0].remaining;
        let lines: Vec<BudgetLine> = budget::lines_for(&self.state, &self.principal);
        let money = match self.state.budgets.reserve(&lines, BUDGET).await.unwrap() {
            Ok(_) => {
                self.state.budgets.settle(&lines, BUDGET, 0).await.unwrap();
                Money::default()
            }
            Err(exceeded) => Money {
                spent: exceeded.spent,
                held: exceeded.reserved,
            },
        };
        (tokens, money)
    }

    /// A chat call through validation, the rate limits and the budgets: holding tokens and
    /// money.
    async fn holding_call(&self) -> Call {
        let mut call = Call::new(&self.state, &self.principal, chat());
        validate::validate(&mut call, &self.state).await.unwrap();
        rate_limit::limit(&mut call, &self.state).await.unwrap();
        budget::reserve(&mut call, &self.state).await.unwrap();
        call
    }

    /// Asserts that the token bucket and the budget line are back where they started.
    async fn releases_everything(&self) {
        let left = self
            .settles_to(|(tokens, money)| *tokens >= TOKEN_LIMIT - 1 && *money == Money::default())
            .await;
        // GCRA refills continuously: a token may be counted back a moment later.
        assert!(left.0 >= TOKEN_LIMIT - 1, "tokens not given back: {left:?}");
        assert_eq!(left.1, Money::default(), "the budget hold was not released");
    }

    /// Waits until the background settlements have made the state what `expected` says.
    async fn settles_to(&self, expected: impl Fn(&(u64, Money)) -> bool) -> (u64, Money) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.left().await;
            if expected(&left) || tokio::time::Instant::now() > deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn a_failing_stage_added_later_leaks_nothing() {
    let fixture = fixture().await;
    let state = &fixture.state;
    let mut call = Call::new(state, &fixture.principal, chat());
    let result = stages_then_a_failing_one(&mut call, state).await;
    let (result, _facts) = call.finish(result);
    assert_eq!(result.unwrap_err().status(), 400);
    fixture.releases_everything().await;
}

#[tokio::test]
async fn a_call_dropped_before_sending_releases_what_it_held() {
    let fixture = fixture().await;
    let call = fixture.holding_call().await;
    let (tokens, money) = fixture.left().await;
    assert!(
        tokens < TOKEN_LIMIT - 1000 && money.held > 0,
        "nothing held"
    );
    // The caller leaves: the handler's future, and the call with it, is dropped.
    drop(call);
    fixture.releases_everything().await;
}

#[tokio::test]
async fn a_call_dropped_after_sending_pays_its_worst_case() {
    let fixture = fixture().await;
    let mut call = fixture.holding_call().await;
    let worst = call.reservations.budget_held().unwrap();
    let (tokens_held, _) = fixture.left().await;
    // The upstream may have run it (the client left while the answer was awaited).
    call.reservations.mark_sent();
    drop(call);
    let paid = Money {
        spent: worst,
        held: 0,
    };
    let left = fixture.settles_to(|(_, money)| *money == paid).await;
    assert_eq!(left.1, paid, "the worst case was not spent");
    assert!(
        left.0 <= tokens_held + 1,
        "tokens were given back although the call may have run: {left:?}"
    );
}
