//! The validate stage: read and check the fields the gateway needs, and prepare the upstream
//! body.
//!
//! The caller's bytes are forwarded as they came; the body is rewritten only when Tollgate must
//! change a field (a chat stream gets `stream_options.include_usage = true`, so that usage can
//! be counted). Even then only that field changes: every other value is kept as the caller's
//! raw JSON text. A form to a model route starts upstream here, its end held back (`upload`).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{Call, CallBody, upload};
use crate::error::GatewayError;
use crate::extract::decode;
use crate::identity::Caller;
use crate::openai::ModelRoute;
use crate::openai::requests::{
    ChatRequest, EmbeddingsRequest, ImagesRequest, PassthroughRequest, RequestFacts,
    ResponsesRequest, add_operation_facts, with_field,
};
use crate::state::AppState;
use crate::upstream::OutgoingBody;

/// Reads the body the route received into `call`: its fields, the body to send, the end user
/// a key caller's body names, the model's targets, and the record's first facts.
pub async fn validate(call: &mut Call, state: &AppState) -> Result<(), GatewayError> {
    match call.received.take().unwrap_or(CallBody::Empty) {
        CallBody::Json(bytes) => {
            call.request = facts(call.route, &bytes)?;
            if let Some(operation) = call.operation.as_deref() {
                add_operation_facts(&operation.template, &bytes, &mut call.request)?;
            }
            let body = upstream_body(call.route, &call.request, bytes.clone())?;
            call.body = OutgoingBody::Buffered(body);
            call.keep_json(bytes);
        }
        CallBody::Empty => {}
        CallBody::Streamed(body) => upload::begin(call, state, body).await?,
    }
    // A key caller's end user is `x-user-id`, else the body's `user`; other callers keep theirs.
    if let (Caller::Key(_), None) = (&call.principal.caller, &call.principal.user) {
        call.principal.user.clone_from(&call.request.user);
    }
    call.targets = state.upstream.targets(call.request.model.as_deref());
    call.pool = state.upstream.pool(call.request.model.as_deref());
    let facts = &mut call.facts;
    facts.model_requested.clone_from(&call.request.model);
    facts.model_label = call
        .request
        .model
        .as_deref()
        .map(|model| state.model_labels.label(model));
    facts.stream = call.request.stream;
    if facts.user_id.is_none() {
        facts.user_id.clone_from(&call.principal.user);
    }
    Ok(())
}

/// Checks a JSON body for `route` and returns what later stages need.
pub fn facts(route: ModelRoute, body: &[u8]) -> Result<RequestFacts, GatewayError> {
    match route {
        ModelRoute::Chat => decode::<ChatRequest>(body)?.validate(),
        ModelRoute::Embeddings => decode::<EmbeddingsRequest>(body)?.validate(),
        ModelRoute::Images => decode::<ImagesRequest>(body)?.validate(),
        ModelRoute::Responses => decode::<ResponsesRequest>(body)?.validate(),
        // A session's events are read by `realtime`, never as a body.
        ModelRoute::Passthrough | ModelRoute::Realtime => {
            decode::<PassthroughRequest>(body)?.validate()
        }
    }
}

/// The body to send upstream: the caller's bytes, or — for a chat stream whose caller did not
/// ask for usage — the same JSON with `stream_options.include_usage` set.
pub fn upstream_body(
    route: ModelRoute,
    facts: &RequestFacts,
    body: Bytes,
) -> Result<Bytes, GatewayError> {
    if route != ModelRoute::Chat || !facts.stream || facts.include_usage {
        return Ok(body);
    }
    with_include_usage(&body)
}

fn with_include_usage(body: &[u8]) -> Result<Bytes, GatewayError> {
    let fields: BTreeMap<String, Box<RawValue>> = decode(body)?;
    let mut options: BTreeMap<String, Box<RawValue>> = match fields.get("stream_options") {
        Some(raw) if raw.get() != "null" => decode(raw.get().as_bytes())?,
        _ => BTreeMap::new(),
    };
    let yes = RawValue::from_string("true".to_owned())
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    options.insert("include_usage".to_owned(), yes);
    let options =
        serde_json::to_string(&options).map_err(|e| GatewayError::Internal(e.to_string()))?;
    with_field(body, "stream_options", &options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_usage_is_added_and_nothing_else_changes() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"h\u00e9"}],"stream":true,"future_param":{"a":[1,2.50]},"stream_options":{"other":1}}"#;
        let route = ModelRoute::Chat;
        let facts = facts(route, body).unwrap();
        let rewritten = upstream_body(route, &facts, Bytes::from_static(body)).unwrap();
        let text = std::str::from_utf8(&rewritten).unwrap();
        assert!(text.contains(r#""future_param":{"a":[1,2.50]}"#), "{text}");
        assert!(text.contains(r#""content":"h\u00e9""#), "{text}");
        assert!(
            text.contains(r#""stream_options":{"include_usage":true,"other":1}"#),
            "{text}"
        );
    }

    #[test]
    fn bodies_that_need_no_change_are_forwarded_byte_for_byte() {
        let body = Bytes::from_static(br#"{"model":"m",  "messages":[{"role":"user"}]}"#);
        let facts = facts(ModelRoute::Chat, &body).unwrap();
        assert_eq!(
            upstream_body(ModelRoute::Chat, &facts, body.clone()).unwrap(),
            body
        );
    }
}
