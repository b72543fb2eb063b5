//! Azure OpenAI's errors in OpenAI's envelope. Azure answers `{"error": {"code": "429",
//! "message": ...}}`, `{"error": {"code": "DeploymentNotFound", ...}}`, a content filter's
//! `{"error": {..., "code": "content_filter", "innererror": {...}}}`, and from API Management
//! `{"statusCode": 401, "message": ...}`; the SDKs a caller uses read OpenAI's `message`,
//! `type`, `param` and `code`.

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Value, json};

/// `body` (an Azure error answered with `status`) as OpenAI's error envelope. A body that is
/// not JSON keeps its text as the message.
pub fn openai_error(status: StatusCode, body: &[u8]) -> Bytes {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .filter(|e| e.is_object())
        .or(parsed.as_ref());
    let text = |field: &str| {
        error
            .and_then(|e| e.get(field))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let message = text("message").unwrap_or_else(|| {
        if parsed.is_none() && !body.is_empty() {
            String::from_utf8_lossy(body).into_owned()
        } else {
            format!("The upstream rejected the request ({}).", status.as_u16())
        }
    });
    // Azure's numeric codes repeat the status; its names map to OpenAI's where one exists.
    let code = match text("code").as_deref() {
        Some("DeploymentNotFound") => Some("model_not_found".to_owned()),
        Some(code) if code.bytes().all(|b| b.is_ascii_digit()) => None,
        other => other.map(str::to_owned),
    };
    let kind = text("type").unwrap_or_else(|| "invalid_request_error".to_owned());
    Bytes::from(
        json!({
            "error": {
                "message": message,
                "type": kind,
                "param": text("param"),
                "code": code,
            }
        })
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(status: u16, body: &str) -> Value {
        let status = StatusCode::from_u16(status).unwrap();
        serde_json::from_slice(&openai_error(status, body.as_bytes())).unwrap()
    }

    #[test]
    fn azures_errors_read_as_openais() {
        let missing = read(
            404,
            r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#,
        );
        assert_eq!(
            missing,
            json!({"error": {"message": "The API deployment for this resource does not exist.", "type": "invalid_request_error", "param": null, "code": "model_not_found"}})
        );
        let filtered = read(
            400,
            r#"{"error":{"message":"filtered","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation"}}}"#,
        );
        assert_eq!(filtered["error"]["code"], "content_filter");
        assert_eq!(filtered["error"]["param"], "prompt");
        assert_eq!(filtered["error"]["type"], "invalid_request_error");
        assert!(filtered["error"].get("innererror").is_none());
        let numeric = read(400, r#"{"error":{"code":"400","message":"bad"}}"#);
        assert_eq!(numeric["error"]["code"], Value::Null);
        let apim = read(400, r#"{"statusCode": 400, "message": "Bad request."}"#);
        assert_eq!(apim["error"]["message"], "Bad request.");
        let text = read(400, "not json");
        assert_eq!(text["error"]["message"], "not json");
    }
}
