//! Budgets, model lists, JWT allowances and the unpriced policy where cost or model is hidden.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_and_model_lists_hold_where_cost_or_model_is_hidden() {
    let gw = gateway(
        "[anonymous]\nenabled = true\nbudget = { max_usd = 10.0, period = \"month\" }\n\n\
         [models.cheap]\ntarget = \"gpt-4o-mini\"\nfallbacks = [{ target = \"mystery-model\" }]\n",
    )
    .await;
    let (_, restricted) = gw.create_key(&["gpt-4o-mini"]).await;
    let (budgeted_id, budgeted) = budgeted_key(&gw, 100.0).await;
    let chat = json!({ "model": "gpt-4o-mini", "max_tokens": 50, "messages": [{ "role": "user", "content": "hi" }] });
    let post = |secret: Option<&str>, path: &str, body: &Value| {
        let request = gw.client.post(gw.url(path)).json(body);
        match secret {
            Some(secret) => request.bearer_auth(secret),
            None => request,
        }
    };

    // An answer without usage is charged what was reserved, never nothing.
    gw.fault(json!({ "no_usage": true })).await;
    let response = post(Some(&budgeted), "/v1/chat/completions", &chat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let spec = tollgate::config::BudgetSpec {
        max_usd: 100.0,
        period: tollgate::config::BudgetPeriod::Month,
        alert_at: 1.0,
    };
    let line = tollgate::budget::BudgetLine::new(
        tollgate::records::SpendScope::Key(budgeted_id),
        &spec,
        tollgate::records::now_ms(),
    );
    let charged = crate::support::eventually(Duration::from_secs(5), || async {
        gw.state.budgets.spent(&line).await.unwrap() > 0
    })
    .await;
    assert!(charged, "an answer without usage was free");
    // And its record says what the budget was charged, so a budget seeded from the records
    // after a restart agrees.
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let record = gw.record_of(&request_id).await;
    assert!(record.estimated, "{record:?}");
    assert_eq!(
        record.cost_nanos,
        gw.state.budgets.spent(&line).await.ok(),
        "{record:?}"
    );

    // A tool that runs its own model: the model list applies, and a budget cannot price it.
    let tooled = json!({ "model": "gpt-4o-mini", "input": "draw", "tools": [{ "type": "image_generation", "model": "gpt-image-1" }] });
    for (who, secret, want) in [
        ("free", &gw.key, 200),
        ("restricted", &restricted, 403),
        ("budgeted", &budgeted, 403),
    ] {
        let response = post(Some(secret), "/v1/responses", &tooled)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert_eq!(status, want, "{who}: {}", response.text().await.unwrap());
    }

    // An alias whose fallback has no price cannot be held to a budget.
    let (status, error) = error_of(
        post(
            Some(&budgeted),
            "/v1/chat/completions",
            &json!({ "model": "cheap", "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        error["message"].as_str().unwrap().contains("mystery-model"),
        "{error}"
    );

    // Anonymous budgets are per end user: without one, nothing is served unbudgeted.
    let (status, _) = error_of(
        post(None, "/v1/chat/completions", &chat)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let batch = json!({ "input_file_id": batch_input(&gw).await, "endpoint": "/v1/chat/completions", "completion_window": "24h" });
    let (status, error) = error_of(post(None, "/v1/batches", &batch).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(
        error["message"].as_str().unwrap().contains("x-user-id"),
        "{error}"
    );
    let response = post(None, "/v1/chat/completions", &chat)
        .header("x-user-id", "ann")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_routes_allowances_and_the_unpriced_policy_follow_the_config() {
    let gw = gateway(
        "[jwt]\nmodels = [\"gpt-4o-mini\"]\nroutes = [\"batches\"]\n\n[budgets]\nunpriced = \"allow\"\n",
    )
    .await;
    let jwt = sign_jwt("user-1");
    let (_, budgeted) = budgeted_key(&gw, 100.0).await;
    let batch = json!({ "input_file_id": batch_input(&gw).await, "endpoint": "/v1/chat/completions", "completion_window": "24h" });
    let tune = json!({ "model": "gpt-4o-mini", "training_file": "file-1" });
    let speech = json!({ "model": "my-voice", "input": "hi", "voice": "alloy" });
    // A JWT user's batch is checked against its model list; `[jwt] routes` opens nothing
    // else.
    for (secret, path, body, want) in [
        (&jwt, "/v1/batches", &batch, 200),
        (&jwt, "/v1/fine_tuning/jobs", &tune, 403),
        // `budgets.unpriced = "allow"`: an unpriced model is served to a budgeted key.
        (&budgeted, "/v1/audio/speech", &speech, 200),
    ] {
        clear_upstream_requests(&gw).await;
        let response = gw
            .client
            .post(gw.url(path))
            .bearer_auth(secret)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), want, "{path}");
        let forwarded = gw.upstream_requests().await;
        assert_eq!(
            !forwarded.is_empty(),
            matches!(want, 200 | 404),
            "{path}: {forwarded:?}"
        );
    }
    gw.stop().await;
}
