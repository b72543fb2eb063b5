//! The Realtime API end to end: a WebSocket client, the real gateway, and the mock's Realtime
//! endpoint. The session is checked before the upgrade (key, model, limits, budget), proxied
//! with the server's key, and each response priced, recorded and charged as it ends; the
//! budget closes the session with an `error` event when it has no room for another response.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tollgate::budget::BudgetLine;
use tollgate::config::{BudgetPeriod, BudgetSpec};
use tollgate::keys::{KeyBudgets, NewKey};
use tollgate::limiter::rules::RuleSpec;
use tollgate::records::{RecentQuery, Record, SpendScope, now_ms};

use crate::support::{MockServer, TestGateway, UPSTREAM_KEY, eventually};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What one `response.done` of the mock costs on `gpt-realtime`: 57 text tokens in at $4, 256
/// cached at $0.40, 92 audio at $32, 384 cached audio at $0.40, 9 text out at $16, 23 audio out
/// at $64 (per million): $0.005044.
const RESPONSE_NANOS: i64 = 5_044_000;

/// The most one `gpt-realtime` response can cost: 32,000 tokens of context as audio at $32 and
/// 4,096 of audio out at $64 per million: $1.286144.
const WORST_NANOS: i64 = 1_286_144_000;

fn ws_url(gw: &TestGateway, path_and_query: &str) -> String {
    format!(
        "{}{path_and_query}",
        gw.base.replacen("http://", "ws://", 1)
    )
}

/// Opens a session with `secret` in `Authorization` (or no header when `None`).
async fn connect(
    gw: &TestGateway,
    path_and_query: &str,
    secret: Option<&str>,
) -> Result<
    (
        Socket,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    WsError,
> {
    let mut request = ws_url(gw, path_and_query).into_client_request().unwrap();
    if let Some(secret) = secret {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {secret}")).unwrap(),
        );
    }
    tokio_tungstenite::connect_async(request).await
}

/// The next text event, within five seconds.
async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("an event within 5 s")
            .expect("the socket is open")
            .expect("a readable frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// Events until one of type `kind` (returned with those before it).
async fn until(socket: &mut Socket, kind: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(socket).await;
        let done = event["type"] == kind;
        seen.push(event);
        if done {
            return seen;
        }
    }
}

async fn send(socket: &mut Socket, event: Value) {
    socket.send(Message::text(event.to_string())).await.unwrap();
}

/// Asks for one response and reads it to its `response.done`.
async fn one_response(socket: &mut Socket) -> Vec<Value> {
    send(socket, json!({"type": "response.create"})).await;
    until(socket, "response.done").await
}

/// The HTTP refusal of a handshake: status and error envelope.
fn refusal(result: Result<(Socket, impl std::fmt::Debug), WsError>) -> (u16, Value) {
    match result {
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok((_, response)) => panic!("the session opened: {response:?}"),
    }
}

fn request_id(response: &tokio_tungstenite::tungstenite::handshake::client::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The records of one session (its opening and each response), oldest first, once there are
/// `count`.
async fn records_of(gw: &TestGateway, request_id: &str, count: usize) -> Vec<Record> {
    let mut found = Vec::new();
    for _ in 0..100 {
        found = gw
            .state
            .records
            .recent(&RecentQuery {
                limit: 500,
                ..RecentQuery::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.request_id == request_id)
            .collect();
        if found.len() >= count {
            found.sort_by_key(|r| (r.status != 101, r.created_at_ms));
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} records of {count} for {request_id} after 5 s",
        found.len()
    );
}

/// What the mock received over WebSockets: the handshake's headers, and each event.
async fn upstream_events(gw: &TestGateway) -> (Vec<Value>, Vec<Value>) {
    let received = gw.upstream_requests().await;
    let handshakes = received
        .iter()
        .filter(|r| r["path"] == "/v1/realtime" && r["method"] == "GET")
        .map(|r| r["headers"].clone())
        .collect();
    let events = received
        .iter()
        .filter(|r| r["method"] == "WS")
        .map(|r| r["body"].clone())
        .collect();
    (handshakes, events)
}

fn budget(max_usd: f64) -> BudgetSpec {
    BudgetSpec {
        max_usd,
        period: BudgetPeriod::Month,
        alert_at: 1.0,
    }
}

async fn budgeted_key(gw: &TestGateway, spec: &BudgetSpec) -> (String, String) {
    gw.create_key_with(NewKey {
        name: "realtime".into(),
        budgets: KeyBudgets {
            key: Some(spec.clone()),
            user: None,
        },
        ..NewKey::default()
    })
    .await
}

/// Opens a `gpt-realtime` session with `secret` and reads its `session.created`: the socket and
/// the session's request id.
async fn open_session(gw: &TestGateway, secret: &str) -> (Socket, String) {
    let (mut socket, response) = connect(gw, "/v1/realtime?model=gpt-realtime", Some(secret))
        .await
        .unwrap();
    assert_eq!(next_event(&mut socket).await["type"], "session.created");
    (socket, request_id(&response))
}

/// Whether the key's spend under `spec` comes to `nanos` within five seconds (settling runs
/// off the session's path).
async fn spend_reaches(gw: &TestGateway, key_id: &str, spec: &BudgetSpec, nanos: i64) -> bool {
    let line = BudgetLine::new(SpendScope::Key(key_id.to_owned()), spec, now_ms());
    let reached = eventually(Duration::from_secs(5), || async {
        gw.state.budgets.spent(&line).await.ok() == Some(nanos)
    })
    .await;
    if !reached {
        eprintln!(
            "spent {:?}, expected {nanos}",
            gw.state.budgets.spent(&line).await
        );
    }
    reached
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_proxied_with_the_servers_key_and_each_response_is_priced_and_recorded() {
    let gw = TestGateway::start().await;
    let (mut socket, response) = connect(&gw, "/v1/realtime?model=gpt-realtime", Some(&gw.key))
        .await
        .unwrap();
    let id = request_id(&response);
    let created = next_event(&mut socket).await;
    assert_eq!(created["type"], "session.created");
    assert_eq!(created["session"]["model"], "gpt-realtime-2025-08-28");
    // The same model (or its snapshot) may be named in an update; it goes on.
    send(
        &mut socket,
        json!({"type": "session.update", "session": {"type": "realtime", "model": "gpt-realtime", "instructions": "Be brief."}}),
    )
    .await;
    assert_eq!(next_event(&mut socket).await["type"], "session.updated");
    for _ in 0..2 {
        let events = one_response(&mut socket).await;
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(kinds[0], "response.created", "{kinds:?}");
        assert!(kinds.contains(&"response.output_text.delta"), "{kinds:?}");
        let done = events.last().unwrap();
        assert_eq!(
            done["response"]["usage"]["input_tokens"], 789,
            "usage is relayed as sent"
        );
    }
    socket.close(None).await.unwrap();

    let records = records_of(&gw, &id, 3).await;
    assert_eq!(records[0].status, 101, "the session's opening");
    assert_eq!(records[0].cost_nanos, None);
    assert_eq!(records[0].outcome, "ok");
    for record in &records[1..] {
        assert_eq!(record.route, "/v1/realtime");
        assert_eq!(record.status, 200);
        assert_eq!(record.outcome, "ok");
        assert_eq!(record.model_requested.as_deref(), Some("gpt-realtime"));
        assert_eq!(
            record.model_used.as_deref(),
            Some("gpt-realtime-2025-08-28")
        );
        assert_eq!(record.upstream.as_deref(), Some("default"));
        assert_eq!(
            (record.usage.prompt_tokens, record.usage.completion_tokens),
            (789, 32)
        );
        assert_eq!(record.cost_nanos, Some(RESPONSE_NANOS));
        assert!(!record.estimated);
    }
    // Upstream: the server's key, never the caller's; every event went on.
    let (handshakes, events) = upstream_events(&gw).await;
    assert_eq!(handshakes.len(), 1);
    let headers = handshakes[0].to_string();
    assert_eq!(
        handshakes[0]["authorization"],
        format!("Bearer {UPSTREAM_KEY}")
    );
    assert!(
        !headers.contains(&gw.key),
        "the gateway key went upstream: {headers}"
    );
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        ["session.update", "response.create", "response.create"]
    );
    let counted = eventually(Duration::from_secs(5), || async {
        gw.metrics()
            .await
            .contains("tollgate_realtime_sessions_total{end=\"client_left\"}")
    })
    .await;
    assert!(counted, "the session's end is not in the metrics");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browsers_key_in_the_subprotocol_opens_a_session_and_never_goes_upstream() {
    let gw = TestGateway::start().await;
    let mut request = ws_url(&gw, "/v1/realtime?model=gpt-realtime")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("realtime, openai-insecure-api-key.{}", gw.key)).unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "realtime");
    assert_eq!(next_event(&mut socket).await["type"], "session.created");
    one_response(&mut socket).await;
    socket.close(None).await.unwrap();
    let (handshakes, _) = upstream_events(&gw).await;
    let headers = handshakes[0].to_string();
    assert!(
        !headers.contains(&gw.key),
        "the browser's key went upstream: {headers}"
    );
    assert!(
        handshakes[0].get("sec-websocket-protocol").is_none(),
        "{headers}"
    );
    // A beta browser client's protocol becomes the header a server client would send.
    let mut beta = ws_url(&gw, "/v1/realtime?model=gpt-realtime")
        .into_client_request()
        .unwrap();
    beta.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!(
            "realtime, openai-insecure-api-key.{}, openai-beta.realtime-v1",
            gw.key
        ))
        .unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(beta).await.unwrap();
    next_event(&mut socket).await;
    socket.close(None).await.unwrap();
    let (handshakes, _) = upstream_events(&gw).await;
    assert_eq!(
        handshakes[1]["openai-beta"], "realtime=v1",
        "{}",
        handshakes[1]
    );
    // A key in both places is ambiguous: refused.
    let mut both = ws_url(&gw, "/v1/realtime?model=gpt-realtime")
        .into_client_request()
        .unwrap();
    both.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("realtime, openai-insecure-api-key.{}", gw.key)).unwrap(),
    );
    both.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", gw.key)).unwrap(),
    );
    let (status, body) = refusal(tokio_tungstenite::connect_async(both).await);
    assert_eq!(status, 401, "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_refused_before_the_upgrade_in_openais_envelope() {
    let gw = TestGateway::start().await;
    let path = "/v1/realtime?model=gpt-realtime";
    let (status, body) = refusal(connect(&gw, path, None).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );

    let (_, limited) = gw.create_key(&["gpt-4o-mini"]).await;
    let (status, body) = refusal(connect(&gw, path, Some(&limited)).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("model_not_allowed"))
    );

    let (status, body) = refusal(connect(&gw, "/v1/realtime", Some(&gw.key)).await);
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("model"))
    );

    // A plain GET is not a session.
    let plain = gw.get(path).send().await.unwrap();
    assert_eq!(plain.status(), 400);

    // A budget smaller than one response's worst case cannot hold a session.
    let (_, small) = budgeted_key(&gw, &budget(1.0)).await;
    let (status, body) = refusal(connect(&gw, path, Some(&small)).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("insufficient_quota")),
        "{body}"
    );

    // A budgeted caller cannot open a session on a model whose responses have no price.
    let (_, budgeted) = budgeted_key(&gw, &budget(100.0)).await;
    let (status, body) =
        refusal(connect(&gw, "/v1/realtime?model=my-voice-model", Some(&budgeted)).await);
    assert_eq!(status, 403, "{body}");

    // A session is one request to the `realtime` rules.
    let (_, one_a_minute) = gw
        .create_key_with(NewKey {
            name: "one session a minute".into(),
            rules: vec![RuleSpec::parse_cli("scope=key,route=realtime,requests=1,per=1m").unwrap()],
            ..NewKey::default()
        })
        .await;
    let (socket, _) = connect(&gw, path, Some(&one_a_minute)).await.unwrap();
    let (status, body) = refusal(connect(&gw, path, Some(&one_a_minute)).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limit_exceeded"))
    );
    drop(socket);

    // Nothing refused reached the upstream.
    let (handshakes, _) = upstream_events(&gw).await;
    assert_eq!(handshakes.len(), 1, "only the admitted session was dialled");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cannot_switch_its_model_add_transcription_or_slip_an_event_past() {
    let gw = TestGateway::start().await;
    let (_, limited) = gw.create_key(&["gpt-realtime"]).await;
    let (mut socket, _) = open_session(&gw, &limited).await;
    let refused = [
        json!({"type": "session.update", "event_id": "evt_1", "session": {"model": "gpt-4o-realtime-preview"}}).to_string(),
        // The type spelled with an escape, and a field given twice.
        r#"{"type":"session\u002eupdate","event_id":"evt_2","session":{"model":"gpt-4o-realtime-preview"}}"#.to_owned(),
        r#"{"type":"session.update","session":{"model":"gpt-realtime"},"session":{"model":"gpt-4o-realtime-preview"}}"#.to_owned(),
        // Transcription by a model this key may not use.
        json!({"type": "session.update", "event_id": "evt_4", "session": {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}}).to_string(),
    ];
    for event in &refused {
        socket.send(Message::text(event.clone())).await.unwrap();
        let answer = next_event(&mut socket).await;
        assert_eq!(answer["type"], "error", "{event} → {answer}");
    }
    let first = json!({"type": "session.update", "event_id": "evt_1", "session": {"model": "gpt-4o-realtime-preview"}});
    socket.send(Message::text(first.to_string())).await.unwrap();
    let answer = next_event(&mut socket).await;
    assert_eq!(answer["error"]["param"], "session.model");
    assert_eq!(answer["error"]["event_id"], "evt_1");
    socket
        .send(Message::binary(b"{\"type\":\"session.update\"}".to_vec()))
        .await
        .unwrap();
    assert_eq!(next_event(&mut socket).await["type"], "error");
    // The session goes on.
    one_response(&mut socket).await;
    socket.close(None).await.unwrap();
    let (_, events) = upstream_events(&gw).await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        ["response.create"],
        "refused events reached the upstream: {events:?}"
    );

    // Under a budget, transcription (billed apart) and out-of-band responses are refused.
    let (_, budgeted) = budgeted_key(&gw, &budget(100.0)).await;
    let (mut socket, _) = open_session(&gw, &budgeted).await;
    send(&mut socket, json!({"type": "session.update", "session": {"input_audio_transcription": {"model": "whisper-1"}}})).await;
    let answer = next_event(&mut socket).await;
    assert_eq!(answer["error"]["type"], "permission_error", "{answer}");
    send(
        &mut socket,
        json!({"type": "response.create", "response": {"conversation": "none"}}),
    )
    .await;
    let answer = next_event(&mut socket).await;
    assert_eq!(answer["error"]["type"], "permission_error", "{answer}");
    socket.close(None).await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_charged_per_response_and_closes_the_session_when_it_has_no_room() {
    let gw = TestGateway::start().await;
    // $1.30 holds one worst case ($1.286144) and two responses ($0.005044 each) beside it: the
    // third is charged out of the hold, and the session ends.
    let spec = budget(1.30);
    let (key_id, secret) = budgeted_key(&gw, &spec).await;
    let (mut socket, id) = open_session(&gw, &secret).await;
    for _ in 0..3 {
        one_response(&mut socket).await;
    }
    let error = next_event(&mut socket).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["code"], "insufficient_quota", "{error}");
    let closed = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap();
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Policy),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let records = records_of(&gw, &id, 4).await;
    let charged: i64 = records.iter().filter_map(|r| r.cost_nanos).sum();
    assert_eq!(charged, 3 * RESPONSE_NANOS);
    assert!(spend_reaches(&gw, &key_id, &spec, charged).await);
    // The hold was one response's worst case, and a fourth beside it would not have fit.
    assert_eq!(
        gw.state.prices.realtime_worst_case("gpt-realtime"),
        Some(WORST_NANOS)
    );
    const { assert!(2 * RESPONSE_NANOS + WORST_NANOS <= 1_300_000_000) };
    const { assert!(3 * RESPONSE_NANOS + WORST_NANOS > 1_300_000_000) };
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_leaving_mid_response_is_charged_what_was_held() {
    let gw = TestGateway::start().await;
    let spec = budget(10.0);
    let (key_id, secret) = budgeted_key(&gw, &spec).await;
    let (mut socket, id) = open_session(&gw, &secret).await;
    send(
        &mut socket,
        json!({"type": "response.create", "response": {"metadata": {"mock_delay_ms": "3000"}}}),
    )
    .await;
    until(&mut socket, "response.created").await;
    drop(socket);
    let records = records_of(&gw, &id, 2).await;
    let left = &records[1];
    assert_eq!(left.outcome, "client_left");
    assert!(left.estimated);
    assert_eq!(left.cost_nanos, Some(WORST_NANOS));
    assert!(spend_reaches(&gw, &key_id, &spec, WORST_NANOS).await);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_limit_is_charged_per_response_and_ends_the_session_when_spent() {
    let gw = TestGateway::start().await;
    let (_, secret) = gw
        .create_key_with(NewKey {
            name: "1000 tokens a minute".into(),
            rules: vec![
                RuleSpec::parse_cli("scope=key,route=realtime,tokens=1000,per=1m").unwrap(),
            ],
            ..NewKey::default()
        })
        .await;
    let (mut socket, _) = open_session(&gw, &secret).await;
    // 821 tokens fit in 1,000; the next 821 do not: that response is relayed, then the end.
    one_response(&mut socket).await;
    one_response(&mut socket).await;
    let error = next_event(&mut socket).await;
    assert_eq!(error["error"]["code"], "rate_limit_exceeded", "{error}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_that_spends_the_token_limit_is_still_charged_to_the_budget() {
    let gw = TestGateway::start().await;
    let spec = budget(10.0);
    let (key_id, secret) = gw
        .create_key_with(NewKey {
            name: "tokens and a budget".into(),
            rules: vec![
                RuleSpec::parse_cli("scope=key,route=realtime,tokens=1000,per=1m").unwrap(),
            ],
            budgets: KeyBudgets {
                key: Some(spec.clone()),
                user: None,
            },
            ..NewKey::default()
        })
        .await;
    let (mut socket, _) = open_session(&gw, &secret).await;
    one_response(&mut socket).await;
    one_response(&mut socket).await;
    assert_eq!(
        next_event(&mut socket).await["error"]["code"],
        "rate_limit_exceeded"
    );
    assert!(spend_reaches(&gw, &key_id, &spec, 2 * RESPONSE_NANOS).await);
    // The bucket is empty: the next session is refused before it opens.
    let (status, body) =
        refusal(connect(&gw, "/v1/realtime?model=gpt-realtime", Some(&secret)).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limit_exceeded"))
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_session_under_a_budget_must_name_its_user() {
    let gw = TestGateway::builder()
        .toml(
            r#"
[anonymous]
enabled = true
budget = { max_usd = 5.0, period = "day" }
"#,
        )
        .start()
        .await
        .unwrap();
    let path = "/v1/realtime?model=gpt-realtime";
    let (status, body) = refusal(connect(&gw, path, None).await);
    assert_eq!(status, 400, "{body}");
    let mut named = ws_url(&gw, path).into_client_request().unwrap();
    named
        .headers_mut()
        .insert("x-user-id", HeaderValue::from_static("visitor-1"));
    let (mut socket, _) = tokio_tungstenite::connect_async(named).await.unwrap();
    assert_eq!(next_event(&mut socket).await["type"], "session.created");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcription_naming_no_model_is_refused_to_a_key_with_a_model_list() {
    let gw = TestGateway::start().await;
    let (_, limited) = gw.create_key(&["gpt-realtime", "whisper-1"]).await;
    let (mut socket, _) = open_session(&gw, &limited).await;
    // The upstream's default transcriber could be any model; and an empty beta spelling must
    // not hide the GA one.
    for update in [
        json!({"type": "session.update", "session": {"audio": {"input": {"transcription": {}}}}}),
        json!({"type": "session.update", "session": {"input_audio_transcription": {}, "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}}),
    ] {
        send(&mut socket, update.clone()).await;
        let answer = next_event(&mut socket).await;
        assert_eq!(answer["type"], "error", "{update} → {answer}");
    }
    // Naming an allowed one goes on.
    send(&mut socket, json!({"type": "session.update", "session": {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}})).await;
    assert_eq!(next_event(&mut socket).await["type"], "session.updated");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_stops_reading_loses_its_session_and_its_hold_is_settled() {
    let gw = TestGateway::builder()
        .toml("[upstream]\nstream_idle_timeout_ms = 1000\n")
        .start()
        .await
        .unwrap();
    let (_, secret) = budgeted_key(&gw, &budget(10.0)).await;
    let (mut socket, id) = open_session(&gw, &secret).await;
    // Ask for far more than the sockets buffer, and read none of it.
    for _ in 0..40 {
        send(
            &mut socket,
            json!({"type": "response.create", "response": {"metadata": {"mock_delta_bytes": "1000000"}}}),
        )
        .await;
    }
    // The relay gives up on the caller after a second unread and ends the session: the
    // response under way is recorded as left, at what was held.
    let left = eventually(Duration::from_secs(15), || async {
        gw.state
            .records
            .recent(&RecentQuery {
                limit: 500,
                ..RecentQuery::default()
            })
            .await
            .unwrap()
            .iter()
            .any(|r| r.request_id == id && r.outcome == "client_left")
    })
    .await;
    assert!(
        left,
        "the session of a caller that stopped reading did not end"
    );
    drop(socket);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_the_handshake_costs_nothing() {
    // A listener that accepts and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = hole.local_addr().unwrap();
    let mut holder = tokio::task::JoinSet::new();
    holder.spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hole.accept().await {
            held.push(stream);
        }
    });
    let gw = TestGateway::builder()
        .toml(&format!(
            r#"
[upstream]
stream_first_byte_timeout_ms = 500
max_retries = 0

[[upstreams]]
name = "hole"
base_url = "http://{address}/v1"
models = ["gpt-realtime"]
"#
        ))
        .start()
        .await
        .unwrap();
    let spec = budget(10.0);
    let (key_id, secret) = budgeted_key(&gw, &spec).await;
    let (status, body) =
        refusal(connect(&gw, "/v1/realtime?model=gpt-realtime", Some(&secret)).await);
    assert_eq!(status, 504, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let line = BudgetLine::new(SpendScope::Key(key_id), &spec, now_ms());
    assert_eq!(gw.state.budgets.spent(&line).await.unwrap(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sessions_count_toward_the_per_ip_connection_cap() {
    let gw = TestGateway::builder()
        .toml("[server]\nmax_connections_per_ip = 2\n")
        .start()
        .await
        .unwrap();
    let path = "/v1/realtime?model=gpt-realtime";
    let (mut first, _) = connect(&gw, path, Some(&gw.key)).await.unwrap();
    let (mut second, _) = connect(&gw, path, Some(&gw.key)).await.unwrap();
    next_event(&mut first).await;
    next_event(&mut second).await;
    assert!(
        connect(&gw, path, Some(&gw.key)).await.is_err(),
        "a third connection while two sessions are open"
    );
    first.close(None).await.unwrap();
    drop(first);
    let reopened = eventually(Duration::from_secs(5), || async {
        connect(&gw, path, Some(&gw.key)).await.is_ok()
    })
    .await;
    assert!(reopened, "a closed session gives its place back");
    drop(second);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_model_spreads_sessions_over_its_deployments_and_passes_over_a_dead_one() {
    let second = MockServer::start().await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_address = dead.local_addr().unwrap();
    drop(dead);
    let gw = TestGateway::builder()
        .toml(&format!(
            r#"
[upstream]
max_retries = 0

[[upstreams]]
name = "second"
base_url = "{second}/v1"
api_key_env = "SECOND_KEY"

[[upstreams]]
name = "dead"
base_url = "http://{dead_address}/v1"
api_key_env = "SECOND_KEY"

[models.voice]
strategy = "least_busy"
pool = [{{ upstream = "default", target = "gpt-realtime" }}, {{ upstream = "second", target = "gpt-realtime" }}]

[models.voice-with-a-dead-one]
pool = [{{ upstream = "dead", target = "gpt-realtime" }}, {{ upstream = "default", target = "gpt-realtime" }}]
"#,
            second = second.control("")
        ))
        .env("SECOND_KEY", UPSTREAM_KEY)
        .start()
        .await
        .unwrap();
    // Two sessions at once: the least busy deployment takes each, one apiece.
    let (mut one, _) = connect(&gw, "/v1/realtime?model=voice", Some(&gw.key))
        .await
        .unwrap();
    let (mut two, _) = connect(&gw, "/v1/realtime?model=voice", Some(&gw.key))
        .await
        .unwrap();
    for socket in [&mut one, &mut two] {
        // The alias is sent upstream as its target.
        let created = next_event(socket).await;
        assert_eq!(
            created["session"]["model"], "gpt-realtime-2025-08-28",
            "{created}"
        );
    }
    let dialled = |requests: Vec<Value>| {
        requests
            .iter()
            .filter(|r| r["path"] == "/v1/realtime" && r["method"] == "GET")
            .count()
    };
    assert_eq!(dialled(gw.upstream_requests().await), 1);
    assert_eq!(dialled(second.requests(&gw.client).await), 1);
    drop((one, two));
    // A deployment that cannot be reached is passed over (and cools down): every session opens.
    for _ in 0..4 {
        let (mut socket, _) = connect(
            &gw,
            "/v1/realtime?model=voice-with-a-dead-one",
            Some(&gw.key),
        )
        .await
        .unwrap();
        assert_eq!(next_event(&mut socket).await["type"], "session.created");
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("tollgate_pool_cooldowns_total{deployment=\"dead/gpt-realtime\"}"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_error_event_that_quotes_the_key_is_scrubbed() {
    let gw = TestGateway::start().await;
    let (mut socket, _) = open_session(&gw, &gw.key).await;
    send(
        &mut socket,
        json!({"type": "mock.echo_authorization", "event_id": "evt_echo"}),
    )
    .await;
    let error = next_event(&mut socket).await;
    let text = error.to_string();
    assert_eq!(error["type"], "error");
    assert!(
        !text.contains(UPSTREAM_KEY),
        "the upstream key came back: {text}"
    );
    assert!(text.contains("[REDACTED]"), "{text}");
    assert_eq!(error["error"]["event_id"], "evt_echo");
    gw.stop().await;
}
