//! OpenTelemetry traces from the real binary to an in-process OTLP receiver, over
//! HTTP/protobuf and over gRPC: a span per request, the child of the caller's `traceparent`,
//! with GenAI attributes (model, tokens, cost); children for the stages that wait (limits,
//! budgets, cache, each upstream attempt, the record); the upstream asked with a `traceparent`
//! naming its attempt; a stream's span carrying the usage that arrived at its end; the
//! collector's credentials sent and never logged. Off without an endpoint: nothing is passed on.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{Value, json};

use crate::support::otlp_receiver::OtlpReceiver;
use crate::support::{TestGateway, binary};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const COLLECTOR_SECRET: &str = "collector-secret-5f2a";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span's attributes as strings, integers and doubles rendered alike.
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => s.clone(),
                Some(Any::IntValue(i)) => i.to_string(),
                Some(Any::DoubleValue(d)) => d.to_string(),
                Some(Any::BoolValue(b)) => b.to_string(),
                _ => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

async fn traced_run(protocol: &str) {
    let receiver = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let binary::Stack {
        served, mock, key, ..
    } = binary::stack(
        dir.path(),
        None,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                format!("authorization=Bearer%20{COLLECTOR_SECRET}"),
            ),
            ("OTEL_SERVICE_NAME", "tollgate-under-test".to_owned()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/chat/completions", served.address);
    let answer = client
        .post(&url)
        .bearer_auth(&key)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "trace me" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let streamed = client
        .post(&url)
        .bearer_auth(&key)
        .json(&json!({ "model": "gpt-4o-mini", "stream": true, "stream_options": { "include_usage": true },
                        "messages": [{ "role": "user", "content": "stream me" }] }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(streamed.contains("[DONE]"));
    // A hostile trace header (a header break, a bad trace id) is not believed and not passed
    // on: the upstream gets a well-formed traceparent of a new trace.
    let hostile = client
        .post(&url)
        .bearer_auth(&key)
        .header("traceparent", "00-zzzz2f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("tracestate", "evil=1")
        .json(&json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hostile" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(hostile.status(), 200);
    // SIGTERM: the exporter sends what it holds before the process exits.
    served.signal("TERM").await;
    let (code, log) = served.finish().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains(COLLECTOR_SECRET), "{log}");

    let exports = receiver.exports();
    assert!(!exports.is_empty(), "spans were exported over {protocol}");
    for (arrived_as, headers) in &exports {
        assert_eq!(*arrived_as, protocol);
        assert_eq!(
            headers["authorization"],
            format!("Bearer {COLLECTOR_SECRET}").as_str()
        );
    }
    let spans = receiver.spans();
    let servers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "POST /v1/chat/completions")
        .collect();

    // The request's span continues the caller's trace, under the caller's span.
    let request = *servers
        .iter()
        .find(|s| hex(&s.trace_id) == CALLER_TRACE)
        .unwrap_or_else(|| panic!("no server span in the caller's trace: {spans:#?}"));
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN);
    assert_eq!(request.kind, SpanKind::Server as i32);
    let facts = attributes(request);
    assert_eq!(facts["gen_ai.request.model"], "gpt-4o-mini");
    assert_eq!(facts["gen_ai.operation.name"], "chat");
    assert_eq!(facts["gen_ai.provider.name"], "openai");
    assert_eq!(facts["http.response.status_code"], "200");
    assert!(facts["gen_ai.usage.input_tokens"].parse::<u64>().unwrap() > 0);
    assert!(facts["gen_ai.usage.output_tokens"].parse::<u64>().unwrap() > 0);
    assert!(facts["tollgate.cost_usd"].parse::<f64>().unwrap() > 0.0);

    // Its children: the stages that wait, one upstream attempt, the record.
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == request.span_id)
        .collect();
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    for stage in [
        "tollgate.rate_limit",
        "tollgate.budget",
        "tollgate.cache",
        "chat gpt-4o-mini",
        "tollgate.record",
    ] {
        assert!(names.contains(&stage), "{stage} missing from {names:?}");
    }
    let attempt = children
        .iter()
        .find(|s| s.name == "chat gpt-4o-mini")
        .unwrap();
    assert_eq!(attempt.kind, SpanKind::Client as i32);
    assert_eq!(attributes(attempt)["http.response.status_code"], "200");

    // The upstream was asked under the attempt's span, in the caller's trace.
    let upstream: Vec<Value> = client
        .get(format!(
            "{}/_mock/requests",
            mock.url().trim_end_matches("/v1")
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = &upstream[0]["headers"];
    assert_eq!(
        first["traceparent"],
        format!("00-{CALLER_TRACE}-{}-01", hex(&attempt.span_id)).as_str(),
        "{first}"
    );
    assert!(first.get("tracestate").is_none());
    let hostile = &upstream[2]["headers"];
    let forwarded = hostile["traceparent"].as_str().unwrap();
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts.len(), 4, "{forwarded}");
    assert!(parts[1].len() == 32 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!forwarded.contains("zzzz"), "{forwarded}");
    assert!(hostile.get("tracestate").is_none(), "{hostile}");

    // The stream's span carries the usage that came at its end, in a trace of its own.
    let stream = servers
        .iter()
        .find(|s| hex(&s.trace_id) != CALLER_TRACE)
        .expect("the stream's span");
    assert!(stream.parent_span_id.is_empty());
    assert!(
        attributes(stream)["gen_ai.usage.output_tokens"]
            .parse::<u64>()
            .unwrap()
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_go_to_an_otlp_collector_over_http_protobuf() {
    traced_run("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_go_to_an_otlp_collector_over_grpc() {
    traced_run("grpc").await;
}

/// Off (no endpoint): a caller's `traceparent` goes nowhere, the upstream never sees it.
#[tokio::test]
async fn without_an_endpoint_no_trace_header_is_passed_on() {
    let gw = TestGateway::start().await;
    let answer = gw
        .post(
            "/v1/chat/completions",
            &json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", "vendor=secret")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let upstream = gw.upstream_requests().await;
    let headers = &upstream.last().unwrap()["headers"];
    assert!(headers.get("traceparent").is_none(), "{headers}");
    assert!(headers.get("tracestate").is_none(), "{headers}");
}
