//! SSE relay: event by event, usage handling, broken streams, disconnects.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::{TestGateway, eventually, sse_data};

fn stream_body(include_usage: Option<bool>) -> Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "stream": true,
        "messages": [{ "role": "user", "content": "echo: one two three four five six seven eight" }],
    });
    if let Some(include) = include_usage {
        body["stream_options"] = json!({ "include_usage": include });
    }
    body
}

#[tokio::test]
async fn the_first_event_arrives_while_the_upstream_is_still_sending() {
    let gw = TestGateway::builder()
        .mock(|m| m.stream_interval = Duration::from_millis(150))
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let response = gw
        .post("/v1/chat/completions", &stream_body(None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(
        String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""),
        "the first event is the role chunk"
    );
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let total = started.elapsed();
    // 10 more events at 150 ms each follow the first: it must not have waited for them.
    assert!(
        first_at < Duration::from_millis(600),
        "first event after {first_at:?}"
    );
    assert!(
        total >= Duration::from_millis(1300),
        "the stream took {total:?}"
    );
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
    gw.stop().await;
}

#[tokio::test]
async fn usage_is_requested_upstream_and_hidden_unless_the_caller_asked() {
    let gw = TestGateway::start().await;
    for include in [None, Some(false), Some(true)] {
        let text = gw
            .post("/v1/chat/completions", &stream_body(include))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let data = sse_data(&text);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let usage_chunks = chunks.iter().filter(|c| c["usage"].is_object()).count();
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "one two three four five six seven eight");
        if include == Some(true) {
            assert_eq!(usage_chunks, 1, "the caller asked for usage");
            let last = chunks.last().unwrap();
            assert_eq!(last["choices"], json!([]));
            assert_eq!(last["usage"]["completion_tokens"], 8);
        } else {
            assert_eq!(
                usage_chunks, 0,
                "usage the caller did not ask for is removed ({include:?})"
            );
        }
    }
    for sent in gw.upstream_requests().await {
        assert_eq!(
            sent["body"]["stream_options"]["include_usage"], true,
            "always asked upstream"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_ends_with_an_error_event() {
    let gw = TestGateway::start().await;
    gw.fault(json!({ "cut_after_events": 3 })).await;
    let text = gw
        .post("/v1/chat/completions", &stream_body(None))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = sse_data(&text);
    assert_eq!(data.len(), 4, "three events then the error: {text}");
    let error: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(error["error"]["type"], "upstream_error");
    assert_eq!(error["error"]["code"], "stream_interrupted");
    assert!(!text.contains("[DONE]"));
    assert_eq!(
        gw.upstream_requests().await.len(),
        1,
        "a started stream is never retried"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_silent_upstream_stream_times_out_with_an_error_event() {
    let gw = TestGateway::builder()
        .toml("[upstream]\nstream_idle_timeout_ms = 200")
        .start()
        .await
        .unwrap();
    gw.fault(json!({ "stall_ms": 3000 })).await;
    let started = Instant::now();
    let text = gw
        .post("/v1/chat/completions", &stream_body(None))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "cut at the idle timeout, took {:?}",
        started.elapsed()
    );
    let data = sse_data(&text);
    let error: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "stream_timeout");
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_that_never_starts_is_a_504() {
    let gw = TestGateway::builder()
        .toml("[upstream]\nstream_first_byte_timeout_ms = 200")
        .start()
        .await
        .unwrap();
    gw.fault(json!({ "latency_ms": 3000 })).await;
    let response = gw
        .post("/v1/chat/completions", &stream_body(None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_stream() {
    let gw = TestGateway::builder()
        .mock(|m| m.stream_interval = Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let response = gw
        .post("/v1/chat/completions", &stream_body(None))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    let cancelled = eventually(Duration::from_secs(3), || async {
        gw.upstream_streams().await["cancelled"] == 1
    })
    .await;
    assert!(
        cancelled,
        "the upstream stream was not cancelled: {}",
        gw.upstream_streams().await
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_a_plain_call_cancels_it_too() {
    let gw = TestGateway::builder()
        .mock(|m| m.latency = Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    let request = gw.post(
        "/v1/chat/completions",
        &json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] }),
    );
    let outcome = tokio::time::timeout(Duration::from_millis(150), request.send()).await;
    assert!(outcome.is_err(), "the call was abandoned");
    let cancelled = eventually(Duration::from_secs(2), || async {
        gw.upstream_streams().await["calls_cancelled"] == 1
    })
    .await;
    assert!(
        cancelled,
        "the upstream call was not cancelled: {}",
        gw.upstream_streams().await
    );
    gw.stop().await;
}

#[tokio::test]
async fn responses_streams_are_relayed_with_their_event_names() {
    let gw = TestGateway::start().await;
    let text = gw
        .post(
            "/v1/responses",
            &json!({ "model": "gpt-4o-mini", "input": "echo: a b c", "stream": true }),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("event: response.created\n"), "{text}");
    assert!(text.contains("event: response.completed\n"));
    assert!(
        !text.contains("upstream_error"),
        "a completed Responses stream is not an error: {text}"
    );
    gw.stop().await;
}
