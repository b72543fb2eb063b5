//! The cost table: every priced route and token class, each answer's cost checked against
//! arithmetic written from the price table. Prices below are nano-dollars per token (a price of
//! $0.15 per million tokens is 150 n$ a token), per image, per character or per millisecond.

use serde_json::{Value, json};
use tollgate::pricing::format_usd;

use crate::support::{TestGateway, form};

/// A request body: JSON, or a form with these fields and a file of this many bytes.
enum Body {
    Json(Value),
    Form(&'static [(&'static str, &'static str)], usize),
}

/// One row: a request, the usage the upstream reports for it (`None`: the mock's own), and
/// what it must cost.
struct Row {
    name: &'static str,
    path: &'static str,
    body: Body,
    usage: Option<Value>,
    nanos: i64,
}

fn chat(model: &str) -> Body {
    Body::Json(json!({ "model": model, "messages": [{ "role": "user", "content": "price me" }] }))
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "chat, cached input: gpt-4o-mini $0.15 in, $0.075 cached, $0.60 out",
            path: "/v1/chat/completions",
            body: chat("gpt-4o-mini"),
            usage: Some(json!({ "prompt_tokens": 1_000, "completion_tokens": 500,
                                "prompt_tokens_details": { "cached_tokens": 400 } })),
            nanos: 600 * 150 + 400 * 75 + 500 * 600,
        },
        Row {
            name: "chat, long context: gpt-5.4 above 272,000 prompt tokens, $5 in, $22.50 out",
            path: "/v1/chat/completions",
            body: chat("gpt-5.4"),
            usage: Some(json!({ "prompt_tokens": 300_000, "completion_tokens": 1_000 })),
            nanos: 300_000 * 5_000 + 1_000 * 22_500,
        },
        Row {
            name: "chat, a -MMDD snapshot: gpt-3.5-turbo-0125 at gpt-3.5-turbo's $0.50 and $1.50",
            path: "/v1/chat/completions",
            body: chat("gpt-3.5-turbo-0125"),
            usage: Some(json!({ "prompt_tokens": 1_000, "completion_tokens": 1_000 })),
            nanos: 1_000 * 500 + 1_000 * 1_500,
        },
        Row {
            name: "chat, priority tier: gpt-5.4 at its priority $5 in, $30 out",
            path: "/v1/chat/completions",
            body: Body::Json(json!({ "model": "gpt-5.4", "service_tier": "priority",
                                     "messages": [{ "role": "user", "content": "fast" }] })),
            usage: Some(json!({ "prompt_tokens": 1_000, "completion_tokens": 1_000 })),
            nanos: 1_000 * 5_000 + 1_000 * 30_000,
        },
        Row {
            name: "chat, audio in and out: gpt-4o-mini-audio-preview text $0.15/$0.60, audio $10/$20",
            path: "/v1/chat/completions",
            body: chat("gpt-4o-mini-audio-preview"),
            usage: Some(json!({ "prompt_tokens": 120, "completion_tokens": 300,
                                "prompt_tokens_details": { "audio_tokens": 100 },
                                "completion_tokens_details": { "audio_tokens": 250 } })),
            nanos: 20 * 150 + 100 * 10_000 + 50 * 600 + 250 * 20_000,
        },
        Row {
            name: "Responses, reasoning is output: o3 $2 in, $8 out",
            path: "/v1/responses",
            body: Body::Json(json!({ "model": "o3", "input": "why" })),
            usage: Some(json!({ "input_tokens": 100, "output_tokens": 1_000,
                                "output_tokens_details": { "reasoning_tokens": 900 } })),
            nanos: 100 * 2_000 + 1_000 * 8_000,
        },
        Row {
            name: "Responses, flex tier: o3 at half price",
            path: "/v1/responses",
            body: Body::Json(json!({ "model": "o3", "input": "slowly", "service_tier": "flex" })),
            usage: Some(json!({ "input_tokens": 1_000, "output_tokens": 1_000 })),
            nanos: (1_000 * 2_000 + 1_000 * 8_000) / 2,
        },
        Row {
            name: "embeddings: 3 tokens of text-embedding-3-small at $0.02",
            path: "/v1/embeddings",
            body: Body::Json(json!({ "model": "text-embedding-3-small", "input": "abc" })),
            usage: Some(json!({ "prompt_tokens": 3, "total_tokens": 3 })),
            nanos: 3 * 20,
        },
        Row {
            name: "images per image: dall-e-3, 2 hd 1792x1024 at $0.12",
            path: "/v1/images/generations",
            body: Body::Json(json!({ "model": "dall-e-3", "prompt": "a fox", "n": 2,
                                     "quality": "hd", "size": "1792x1024" })),
            usage: None,
            nanos: 2 * 120_000_000,
        },
        Row {
            name: "images by token class: gpt-image-1 text $5, image in $10, image out $40",
            path: "/v1/images/generations",
            body: Body::Json(
                json!({ "model": "gpt-image-1", "prompt": "a fox", "quality": "medium" }),
            ),
            usage: Some(
                json!({ "input_tokens": 20, "output_tokens": 1_056, "total_tokens": 1_076,
                                "input_tokens_details": { "text_tokens": 10, "image_tokens": 10 } }),
            ),
            nanos: 10 * 5_000 + 10 * 10_000 + 1_056 * 40_000,
        },
        Row {
            name: "image edits (a form): dall-e-2, 2 at 256x256, $0.016 each",
            path: "/v1/images/edits",
            body: Body::Form(
                &[
                    ("model", "dall-e-2"),
                    ("prompt", "a hat"),
                    ("n", "2"),
                    ("size", "256x256"),
                ],
                500,
            ),
            usage: None,
            nanos: 2 * 16_000_000,
        },
        Row {
            name: "image variations (a form): dall-e-2's default 1024x1024 at $0.020",
            path: "/v1/images/variations",
            body: Body::Form(&[("model", "dall-e-2")], 500),
            usage: None,
            nanos: 20_000_000,
        },
        Row {
            name: "speech by the character: tts-1-hd, 200 characters (not bytes) at $30 per million",
            path: "/v1/audio/speech",
            body: Body::Json(
                json!({ "model": "tts-1-hd", "input": "é".repeat(200), "voice": "alloy" }),
            ),
            usage: None,
            nanos: 200 * 30_000,
        },
        Row {
            name: "speech by the token, streamed: gpt-4o-mini-tts $0.60 in, $12 audio out",
            path: "/v1/audio/speech",
            body: Body::Json(json!({ "model": "gpt-4o-mini-tts", "input": "hello there",
                                     "voice": "alloy", "stream_format": "sse" })),
            usage: Some(json!({ "input_tokens": 14, "output_tokens": 101, "total_tokens": 115 })),
            nanos: 14 * 600 + 101 * 12_000,
        },
        Row {
            name: "transcription by the minute: whisper-1, 8.47 s at $0.006 a minute",
            path: "/v1/audio/transcriptions",
            body: Body::Form(&[("model", "whisper-1")], 2_000),
            usage: Some(json!({ "type": "duration", "seconds": 8.47 })),
            nanos: 8_470 * 100,
        },
        Row {
            name: "transcription by the token: gpt-4o-mini-transcribe text $1.25, audio $3, out $5",
            path: "/v1/audio/transcriptions",
            body: Body::Form(&[("model", "gpt-4o-mini-transcribe")], 2_000),
            usage: Some(
                json!({ "type": "tokens", "input_tokens": 110, "output_tokens": 20,
                                "total_tokens": 130,
                                "input_token_details": { "text_tokens": 10, "audio_tokens": 100 } }),
            ),
            nanos: 10 * 1_250 + 100 * 3_000 + 20 * 5_000,
        },
        Row {
            name: "transcription streamed: gpt-4o-transcribe text $2.50, audio $6, out $10",
            path: "/v1/audio/transcriptions",
            body: Body::Form(&[("model", "gpt-4o-transcribe"), ("stream", "true")], 2_000),
            usage: Some(
                json!({ "type": "tokens", "input_tokens": 50, "output_tokens": 10,
                                "total_tokens": 60,
                                "input_token_details": { "text_tokens": 10, "audio_tokens": 40 } }),
            ),
            nanos: 10 * 2_500 + 40 * 6_000 + 10 * 10_000,
        },
        Row {
            name: "moderations: free, not unpriced",
            path: "/v1/moderations",
            body: Body::Json(json!({ "model": "omni-moderation-latest", "input": "hi" })),
            usage: None,
            nanos: 0,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_token_class_costs_what_the_price_table_says() {
    let gw = TestGateway::start().await;
    for (index, row) in rows().into_iter().enumerate() {
        if let Some(usage) = &row.usage {
            gw.fault(json!({ "usage": usage })).await;
        }
        let request_id = format!("cost-table-{index}");
        let request = gw
            .client
            .post(gw.url(row.path))
            .bearer_auth(&gw.key)
            .header("x-request-id", &request_id);
        let request = match &row.body {
            Body::Json(body) => request.json(body),
            Body::Form(fields, file_bytes) => {
                let (content_type, body) = form(fields, *file_bytes);
                request.header("content-type", content_type).body(body)
            }
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", row.name);
        let header = response
            .headers()
            .get("x-tollgate-cost-usd")
            .map(|v| v.to_str().unwrap().to_owned());
        let streamed = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let body = response.bytes().await.unwrap();
        if streamed {
            let text = String::from_utf8_lossy(&body);
            assert!(
                text.contains(&format!(": x-tollgate-cost-usd: {}", format_usd(row.nanos))),
                "{}: the stream's cost comment: {text}",
                row.name
            );
        } else {
            assert_eq!(
                header.as_deref(),
                Some(format_usd(row.nanos).as_str()),
                "{}",
                row.name
            );
        }
        let record = gw.record_of(&request_id).await;
        assert_eq!(
            record.cost_nanos,
            Some(row.nanos),
            "{}: {record:?}",
            row.name
        );
        assert!(!record.estimated, "{}: {record:?}", row.name);
    }
    gw.stop().await;
}
