//! Usage, cost and audit records: every answered request leaves one record, priced exactly as
//! the price table prices the mock's usage, on SQLite and PostgreSQL.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate::openai::usage::{Usage, summarize};
use tollgate::pricing::{ImageRequest, PriceTable, format_usd};
use tollgate::records::{RecentQuery, Record};

use crate::support::{Database, TestGateway, eventually, sse_data};

/// Waits until at least `n` records are stored and returns the newest 200.
async fn records(gw: &TestGateway, n: u64) -> Vec<Record> {
    let stored = eventually(Duration::from_secs(5), || async {
        gw.state.records.count().await.unwrap() >= n
    })
    .await;
    assert!(stored, "fewer than {n} records after 5 s");
    gw.state
        .records
        .recent(&RecentQuery {
            limit: 200,
            ..RecentQuery::default()
        })
        .await
        .unwrap()
}

fn by_request_id<'a>(records: &'a [Record], id: &str) -> &'a Record {
    records
        .iter()
        .find(|r| r.request_id == id)
        .unwrap_or_else(|| panic!("no record for request {id}"))
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// What one plain call returned: its request id, cost header and body.
struct Answer {
    request_id: String,
    cost_header: Option<String>,
    body: Value,
}

async fn call(gw: &TestGateway, path: &str, body: Value) -> Answer {
    let response = gw.post(path, &body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    Answer {
        request_id: header(&response, "x-request-id").unwrap(),
        cost_header: header(&response, "x-tollgate-cost-usd"),
        body: response.json().await.unwrap(),
    }
}

/// What one streamed call returned: its request id, the data events, and the cost comment.
struct Streamed {
    request_id: String,
    data: Vec<String>,
    cost_comment: Option<String>,
}

async fn stream(gw: &TestGateway, path: &str, body: Value) -> Streamed {
    let response = gw.post(path, &body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let request_id = header(&response, "x-request-id").unwrap();
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let comment_at = lines
        .iter()
        .position(|l| l.starts_with(": x-tollgate-cost-usd: "));
    if let Some(at) = comment_at
        && lines.last() == Some(&"data: [DONE]")
    {
        assert_eq!(
            at,
            lines.len() - 2,
            "the cost comes just before [DONE]: {text}"
        );
    }
    Streamed {
        request_id,
        data: sse_data(&text),
        cost_comment: comment_at
            .map(|at| lines[at]["x-tollgate-cost-usd: ".len() + 2..].to_owned()),
    }
}

/// The price table's cost of what a body reports, as the gateway should have recorded it.
fn expected_cost(body: &Value, asked: &str, images: Option<&ImageRequest>) -> (Usage, i64) {
    let summary = summarize(body.to_string().as_bytes());
    let usage = summary.usage.unwrap_or_default();
    let model = summary.model.unwrap_or_else(|| asked.to_owned());
    let cost = PriceTable::builtin()
        .cost(&model, &usage, images)
        .expect("a priced model");
    (usage, cost)
}

async fn every_route_is_recorded_at_its_price(database: Database) {
    let Some(gw) = TestGateway::builder().database(database).start().await else {
        return;
    };
    let mut expected: Vec<(String, Usage, i64)> = Vec::new();
    let chat = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "echo: one two three four" }] });
    let plain = [
        ("/v1/chat/completions", chat.clone(), "gpt-4o-mini", None),
        (
            "/v1/embeddings",
            json!({ "model": "text-embedding-3-large", "input": ["alpha beta ".repeat(200), "gamma".to_owned()] }),
            "text-embedding-3-large",
            None,
        ),
        (
            "/v1/responses",
            json!({ "model": "o3", "input": "echo: reasoning costs output" }),
            "o3",
            None,
        ),
        (
            "/v1/images/generations",
            json!({ "model": "dall-e-3", "prompt": "a fox", "n": 2, "size": "1792x1024", "quality": "hd" }),
            "dall-e-3",
            Some(ImageRequest {
                count: 2,
                size: Some("1792x1024".into()),
                quality: Some("hd".into()),
            }),
        ),
        (
            "/v1/images/generations",
            json!({ "model": "gpt-image-1", "prompt": "a fox" }),
            "gpt-image-1",
            Some(ImageRequest {
                count: 1,
                size: None,
                quality: None,
            }),
        ),
    ];
    for (path, body, model, images) in plain {
        let answer = call(&gw, path, body).await;
        let (usage, cost) = expected_cost(&answer.body, model, images.as_ref());
        assert!(cost > 0, "{path}: the mock's usage costs something");
        assert_eq!(
            answer.cost_header.as_deref(),
            Some(format_usd(cost).as_str()),
            "{path}: x-tollgate-cost-usd"
        );
        expected.push((answer.request_id, usage, cost));
    }

    // Streams: with include_usage the caller sees the usage chunk; without it, the same prompt
    // (the mock is deterministic) is recorded at the same cost, and the caller sees no usage.
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({ "include_usage": true });
    let with_usage = stream(&gw, "/v1/chat/completions", streamed.clone()).await;
    let usage_chunk: Value = serde_json::from_str(
        with_usage
            .data
            .iter()
            .rev()
            .find(|d| d.contains("\"usage\":{"))
            .expect("usage chunk"),
    )
    .unwrap();
    let (usage, cost) = expected_cost(&usage_chunk, "gpt-4o-mini", None);
    assert_eq!(
        with_usage.cost_comment.as_deref(),
        Some(format_usd(cost).as_str())
    );
    expected.push((with_usage.request_id, usage, cost));
    streamed.as_object_mut().unwrap().remove("stream_options");
    let without = stream(&gw, "/v1/chat/completions", streamed).await;
    assert!(without.data.iter().all(|d| !d.contains("\"usage\":{")));
    assert_eq!(
        without.cost_comment.as_deref(),
        Some(format_usd(cost).as_str())
    );
    expected.push((without.request_id, usage, cost));

    let responses = stream(
        &gw,
        "/v1/responses",
        json!({ "model": "gpt-4.1", "input": "echo: streamed responses", "stream": true }),
    )
    .await;
    let completed: Value = serde_json::from_str(
        responses
            .data
            .iter()
            .find(|d| d.contains("response.completed"))
            .expect("completed event"),
    )
    .unwrap();
    let (usage, cost) = expected_cost(&completed, "gpt-4.1", None);
    assert_eq!(
        responses.cost_comment.as_deref(),
        Some(format_usd(cost).as_str())
    );
    expected.push((responses.request_id, usage, cost));

    let stored = records(&gw, expected.len() as u64).await;
    for (request_id, usage, cost) in &expected {
        let record = by_request_id(&stored, request_id);
        assert_eq!(record.cost_nanos, Some(*cost), "{record:?}");
        assert_eq!(
            record.price_version.as_deref(),
            Some(&*PriceTable::builtin().version()),
            "each cost names the table that priced it"
        );
        assert_eq!(record.usage, *usage, "{record:?}");
        assert_eq!(record.caller, "key");
        assert_eq!(record.outcome, "ok");
        assert_eq!(record.status, 200);
        assert!(!record.estimated);
        assert!(record.key_id.is_some());
        assert!(record.upstream_ms.is_some());
        assert!(record.prompt_text.is_none() && record.completion_text.is_none());
    }
    gw.stop().await;
}

#[tokio::test]
async fn every_route_is_recorded_at_its_price_on_sqlite() {
    every_route_is_recorded_at_its_price(Database::Sqlite).await;
}

#[tokio::test]
async fn every_route_is_recorded_at_its_price_on_postgres() {
    every_route_is_recorded_at_its_price(Database::Postgres).await;
}

#[tokio::test]
async fn refusals_are_recorded_and_health_is_not() {
    let gw = TestGateway::start().await;
    let refused = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("tg-not-a-key")
        .json(&json!({ "model": "gpt-4o-mini", "messages": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused_id = header(&refused, "x-request-id").unwrap();
    let invalid = gw
        .post(
            "/v1/chat/completions",
            &json!({ "model": "gpt-4o-mini", "messages": [] }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let invalid_id = header(&invalid, "x-request-id").unwrap();
    for path in ["/health", "/health/ready", "/metrics"] {
        gw.client.get(gw.url(path)).send().await.unwrap();
    }
    let stored = records(&gw, 2).await;
    let unauthenticated = by_request_id(&stored, &refused_id);
    assert_eq!(
        (
            unauthenticated.status,
            unauthenticated.outcome.as_str(),
            unauthenticated.caller.as_str()
        ),
        (401, "refused", "none")
    );
    assert_eq!(unauthenticated.key_id, None);
    let bad = by_request_id(&stored, &invalid_id);
    assert_eq!(
        (bad.status, bad.outcome.as_str(), bad.caller.as_str()),
        (400, "refused", "key")
    );
    assert_eq!(bad.cost_nanos, None);
    // Give a stray health record time to show up, then check there is none.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(gw.state.records.count().await.unwrap(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn a_broken_stream_is_recorded_with_an_estimate() {
    let gw = TestGateway::start().await;
    gw.fault(json!({ "cut_after_events": 4 })).await;
    let body = json!({
        "model": "gpt-4o-mini", "stream": true,
        "messages": [{ "role": "user", "content": "echo: w1 w2 w3 w4 w5 w6 w7 w8 w9 w10" }]
    });
    let broken = stream(&gw, "/v1/chat/completions", body).await;
    assert!(broken.cost_comment.is_none(), "no usage, no cost comment");
    let stored = records(&gw, 1).await;
    let record = by_request_id(&stored, &broken.request_id);
    assert_eq!(record.outcome, "stream_broken");
    assert!(record.estimated);
    assert!(record.usage.prompt_tokens > 0, "{record:?}");
    assert!(record.usage.completion_tokens > 0, "{record:?}");
    let expected = PriceTable::builtin().cost("gpt-4o-mini", &record.usage, None);
    assert_eq!(record.cost_nanos, expected);
    gw.stop().await;
}

#[tokio::test]
async fn an_unpriced_model_is_recorded_without_a_cost() {
    let gw = TestGateway::start().await;
    let answer = call(
        &gw,
        "/v1/chat/completions",
        json!({ "model": "my-private-model", "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await;
    assert_eq!(answer.cost_header, None);
    let stored = records(&gw, 1).await;
    let record = by_request_id(&stored, &answer.request_id);
    assert_eq!(record.cost_nanos, None);
    assert_eq!(record.price_version, None, "nothing was priced");
    assert!(record.usage.total_tokens() > 0);
    gw.stop().await;
}

#[tokio::test]
async fn pricing_overrides_apply() {
    let gw = TestGateway::builder()
        .toml("[pricing.\"my-private-model\"]\ninput = 1000\noutput = 2000\nmax_output_tokens = 4096\n")
        .start()
        .await
        .unwrap();
    let answer = call(
        &gw,
        "/v1/chat/completions",
        json!({ "model": "my-private-model", "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await;
    let usage = summarize(answer.body.to_string().as_bytes()).usage.unwrap();
    // $1,000 and $2,000 per million tokens: 1,000,000 and 2,000,000 n$ a token.
    let cost = (usage.prompt_tokens * 1_000_000 + usage.completion_tokens * 2_000_000) as i64;
    assert_eq!(answer.cost_header, Some(format_usd(cost)));
    let stored = records(&gw, 1).await;
    let version = by_request_id(&stored, &answer.request_id)
        .price_version
        .clone()
        .unwrap();
    assert!(
        version.starts_with(&format!("{}+config-", PriceTable::builtin().version())),
        "an overridden table is a version of its own: {version}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_seeds_generate_route_is_recorded_and_priced() {
    let gw = TestGateway::start().await;
    let response = gw
        .post(
            "/api/ai/generate",
            &json!({ "prompt": "echo: generate something", "model": "gpt-4o-mini" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = header(&response, "x-request-id").unwrap();
    let cost = header(&response, "x-tollgate-cost-usd").expect("cost header");
    let stored = records(&gw, 1).await;
    let record = by_request_id(&stored, &request_id);
    assert_eq!(record.route, "/api/ai/generate");
    assert_eq!(record.model_requested.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(record.cost_nanos.map(format_usd), Some(cost));
    assert!(record.usage.total_tokens() > 0);
    gw.stop().await;
}

/// Replayed batches count once, and usage over a range with partial days at both ends and
/// whole days between (which come from different rollups) equals the records' own sums, for
/// every grouping, users included.
async fn usage_adds_up_across_rollups(database: Database) {
    use std::collections::BTreeMap;
    use tollgate::records::{GroupBy, UsageQuery};

    let Some(gw) = TestGateway::builder().database(database).start().await else {
        return;
    };
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    let day0 = (tollgate::records::now_ms() / DAY - 6) * DAY;
    let mut all = Vec::new();
    for day in 0..5 {
        for hour in [1, 9, 13, 23] {
            for (n, (user, model)) in [
                ("ann", "gpt-4o-mini"),
                ("bob", "gpt-4o"),
                ("cy", "gpt-4o-mini"),
            ]
            .into_iter()
            .enumerate()
            {
                all.push(Record {
                    id: format!("rec-{day}-{hour}-{n}"),
                    created_at_ms: day0 + day * DAY + hour * HOUR + 1234,
                    request_id: format!("req-{day}-{hour}-{n}"),
                    key_id: Some(if n == 2 { "key_b" } else { "key_a" }.to_owned()),
                    user_id: Some(user.to_owned()),
                    caller: "key".to_owned(),
                    model_requested: Some(model.to_owned()),
                    model_used: Some(model.to_owned()),
                    status: 200,
                    outcome: "ok".to_owned(),
                    cost_nanos: Some(100 + day * 10 + hour + n as i64),
                    ..Record::default()
                });
            }
        }
    }
    // Stored in two overlapping batches and then once more whole, as a spill replay would:
    // each record and its rollup counted once.
    assert_eq!(gw.state.records.insert(&all[..30]).await.unwrap(), 30);
    assert_eq!(
        gw.state.records.insert(&all).await.unwrap(),
        all.len() as u64 - 30
    );
    assert_eq!(gw.state.records.insert(&all).await.unwrap(), 0);
    // From 10:00 on day 0 to 14:00 on day 3: partial, whole, whole, partial.
    let (from, to) = (day0 + 10 * HOUR, day0 + 3 * DAY + 14 * HOUR);
    let groupings = [
        vec![GroupBy::User],
        vec![GroupBy::User, GroupBy::Model, GroupBy::Day],
        vec![GroupBy::Key, GroupBy::Model, GroupBy::Day],
        vec![],
    ];
    for group_by in groupings {
        let rows = gw
            .state
            .records
            .usage(&UsageQuery {
                group_by: group_by.clone(),
                from_ms: from,
                to_ms: to,
            })
            .await
            .unwrap();
        let got: BTreeMap<String, (i64, i64)> = rows
            .iter()
            .map(|r| {
                let name = format!("{:?}/{:?}/{:?}/{:?}", r.key_id, r.user_id, r.model, r.day);
                (name, (r.totals.requests, r.totals.cost_nanos))
            })
            .collect();
        let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for record in all.iter().filter(|r| (from..to).contains(&r.created_at_ms)) {
            let pick = |g: GroupBy, value: Option<String>| {
                group_by.contains(&g).then_some(value).flatten()
            };
            let day = time::OffsetDateTime::from_unix_timestamp(record.created_at_ms / 1000)
                .unwrap()
                .date()
                .to_string();
            let name = format!(
                "{:?}/{:?}/{:?}/{:?}",
                pick(GroupBy::Key, record.key_id.clone()),
                pick(GroupBy::User, record.user_id.clone()),
                pick(GroupBy::Model, record.model_used.clone()),
                pick(GroupBy::Day, Some(day)),
            );
            let entry = expected.entry(name).or_default();
            entry.0 += 1;
            entry.1 += record.cost_nanos.unwrap();
        }
        assert_eq!(got, expected, "grouped by {group_by:?}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn usage_adds_up_across_rollups_on_sqlite() {
    usage_adds_up_across_rollups(Database::Sqlite).await;
}

#[tokio::test]
async fn usage_adds_up_across_rollups_on_postgres() {
    usage_adds_up_across_rollups(Database::Postgres).await;
}
