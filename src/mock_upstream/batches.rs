//! The mock's Files and Batch APIs: files uploaded and read back, and batches that run at
//! once. A batch's input file is read line by line (`custom_id`, `method`, `url`, `body`),
//! each request answered as its route would answer it (a scripted `usage` fault replaces each
//! line's usage), billed at the batch tier, and written to an output file; the batch is
//! `completed` when created.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::answers::{Streaming, error, json_answer};
use super::fixtures;

/// Files and batches the mock holds.
#[derive(Debug, Default)]
pub(super) struct Store {
    files: Mutex<HashMap<String, (Value, Bytes)>>,
    batches: Mutex<HashMap<String, Value>>,
}

impl Store {
    /// `POST /files` (a form: `purpose` and `file`).
    pub(super) fn upload(&self, form: &Value, content: Bytes) -> Response {
        let id = fixtures::id("file");
        let object = json!({
            "id": id, "object": "file", "bytes": content.len(), "created_at": fixtures::now(),
            "filename": "input.jsonl", "purpose": form.get("purpose").cloned().unwrap_or(json!("batch")),
            "status": "processed",
        });
        self.keep(&id, object.clone(), content);
        json_answer(object, &Streaming::plain())
    }

    fn keep(&self, id: &str, object: Value, content: Bytes) {
        if let Ok(mut files) = self.files.lock() {
            files.insert(id.to_owned(), (object, content));
        }
    }

    /// `GET /files/{id}` and `GET /files/{id}/content`.
    pub(super) fn file(&self, id: &str, content: bool) -> Response {
        let found = self.files.lock().ok().and_then(|f| f.get(id).cloned());
        match found {
            Some((_, bytes)) if content => {
                let mut response = Response::new(Body::from(bytes));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                response
            }
            Some((object, _)) => json_answer(object, &Streaming::plain()),
            None => not_found("file", id),
        }
    }

    /// `GET /batches/{id}`.
    pub(super) fn batch(&self, id: &str) -> Response {
        match self.batches.lock().ok().and_then(|b| b.get(id).cloned()) {
            Some(batch) => json_answer(batch, &Streaming::plain()),
            None => not_found("batch", id),
        }
    }

    /// `POST /batches`: the input file's requests, answered now by `answer` (route, body →
    /// the route's JSON answer) and billed by `bill`, into an output file.
    pub(super) async fn create<F, Fut>(
        &self,
        body: &Value,
        stream: &Streaming,
        answer: F,
        bill: impl Fn(&str, &Value),
    ) -> Response
    where
        F: Fn(String, Value) -> Fut,
        Fut: std::future::Future<Output = Option<Value>>,
    {
        let input_file_id = body
            .get("input_file_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let endpoint = body
            .get("endpoint")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some((_, input)) = self
            .files
            .lock()
            .ok()
            .and_then(|f| f.get(input_file_id).cloned())
        else {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid 'input_file_id': '{input_file_id}'. No such file."),
                "invalid_request_error",
                None,
            );
        };
        let mut output = String::new();
        let mut total = 0;
        for line in String::from_utf8_lossy(&input)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let Ok(request) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            total += 1;
            let url = request
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or(endpoint);
            let route = url.strip_prefix("/v1").unwrap_or(url).to_owned();
            let Some(mut answer) = answer(route.clone(), request["body"].clone()).await else {
                continue;
            };
            if let Some(usage) = &stream.usage {
                answer["usage"] = usage.clone();
            }
            if stream.no_usage
                && let Some(fields) = answer.as_object_mut()
            {
                fields.remove("usage");
            }
            answer["service_tier"] = json!("batch");
            bill(&route, &answer);
            let result = json!({
                "id": fixtures::id("batch_req"), "custom_id": request["custom_id"],
                "response": { "status_code": 200, "request_id": fixtures::id("req"), "body": answer },
                "error": null,
            });
            output.push_str(&result.to_string());
            output.push('\n');
        }
        let output_id = fixtures::id("file");
        self.keep(
            &output_id,
            json!({ "id": output_id, "object": "file", "bytes": output.len(), "purpose": "batch_output",
                    "created_at": fixtures::now(), "filename": "output.jsonl", "status": "processed" }),
            Bytes::from(output),
        );
        let id = fixtures::id("batch");
        let batch = json!({
            "id": id, "object": "batch", "endpoint": endpoint, "errors": null,
            "input_file_id": input_file_id, "completion_window": body["completion_window"],
            "status": "completed", "output_file_id": output_id, "error_file_id": null,
            "created_at": fixtures::now(), "completed_at": fixtures::now(),
            "request_counts": { "total": total, "completed": total, "failed": 0 },
            "metadata": body.get("metadata").cloned().unwrap_or(Value::Null),
        });
        if let Ok(mut batches) = self.batches.lock() {
            batches.insert(id, batch.clone());
        }
        json_answer(batch, &Streaming::plain())
    }
}

fn not_found(what: &str, id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("No such {what}: '{id}'."),
        "invalid_request_error",
        None,
    )
}
