//! What the gateway reads of Realtime events: as little as it needs, and only from the events
//! that matter to it.
//!
//! From the caller: `session.update` (and the beta `transcription_session.update`), which could
//! switch the session to another model or turn on input transcription — a second model, billed
//! outside any response's usage. From the upstream: `session.created` (the model serving),
//! `response.created` and `response.done` (a response under way; its usage). Every other event
//! passes untouched; a cheap substring test skips parsing the rest (audio deltas are most of
//! the traffic). The gateway's own events (a refusal, the budget's end) are Realtime `error`
//! events, which the official SDKs raise as errors.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::json;

use crate::error::ErrorBody;

/// A caller's event, as far as the session's checks read it.
#[derive(Debug, Deserialize)]
pub struct ClientEvent<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    session: Option<SessionFields>,
    #[serde(default)]
    response: Option<ResponseFields>,
}

#[derive(Debug, Default, Deserialize)]
struct SessionFields {
    #[serde(default)]
    model: Option<String>,
    /// Beta spelling of input transcription.
    #[serde(default)]
    input_audio_transcription: Option<Transcription>,
    /// GA spelling: `audio.input.transcription`.
    #[serde(default)]
    audio: Option<AudioFields>,
}

#[derive(Debug, Default, Deserialize)]
struct AudioFields {
    #[serde(default)]
    input: Option<AudioInput>,
}

#[derive(Debug, Default, Deserialize)]
struct AudioInput {
    #[serde(default)]
    transcription: Option<Transcription>,
}

#[derive(Debug, Default, Deserialize)]
struct Transcription {
    #[serde(default)]
    model: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResponseFields {
    #[serde(default)]
    conversation: Option<serde_json::Value>,
}

/// The event types whose contents the session checks.
const CHECKED: [&str; 3] = [
    "session.update",
    "transcription_session.update",
    "response.create",
];

/// Why a caller's event could not be checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Unreadable;

impl<'a> ClientEvent<'a> {
    /// The event when it is one the session checks; `None` for everything else (mostly left
    /// unparsed). An event that may be a checked one but cannot be read plainly (a field
    /// given twice, of the wrong type, or broken JSON) is [`Unreadable`]: what the upstream
    /// would make of it cannot be known, so it is not sent on.
    pub fn checked(text: &'a str) -> Result<Option<Self>, Unreadable> {
        if !CHECKED.iter().any(|kind| may_be(text, kind)) {
            return Ok(None);
        }
        match serde_json::from_str::<Self>(text) {
            Ok(event) if CHECKED.contains(&event.kind.as_ref()) => Ok(Some(event)),
            Ok(_) => Ok(None),
            // Text that is not JSON at all is the upstream's to refuse; a checked type in it is not.
            Err(_) if CHECKED.iter().any(|kind| text.contains(kind)) || text.contains('\\') => {
                Err(Unreadable)
            }
            Err(_) => Ok(None),
        }
    }

    /// Whether it updates the session.
    pub fn is_session_update(&self) -> bool {
        self.kind != "response.create"
    }

    /// The model the update asks the session to use, if it names one.
    pub fn model(&self) -> Option<&str> {
        self.session.as_ref()?.model.as_deref()
    }

    /// Each transcription of the caller's audio it turns on (in either spelling, each read
    /// on its own), with the model it names, if any.
    pub fn transcriptions(&self) -> impl Iterator<Item = Option<&str>> {
        let session = self.session.as_ref();
        let beta = session.and_then(|s| s.input_audio_transcription.as_ref());
        let ga = session.and_then(|s| s.audio.as_ref()?.input.as_ref()?.transcription.as_ref());
        beta.into_iter()
            .chain(ga)
            .map(|transcription| transcription.model.as_deref())
    }

    /// Whether it creates a response outside the conversation (`conversation: "none"`), which
    /// may run beside another.
    pub fn is_out_of_band(&self) -> bool {
        self.kind == "response.create"
            && self
                .response
                .as_ref()
                .and_then(|r| r.conversation.as_ref())
                .is_some_and(|c| c.as_str() == Some("none"))
    }
}

/// What an upstream event means to the session.
#[derive(Debug, PartialEq)]
pub enum ServerEvent {
    /// The session began, served by this model.
    SessionCreated { model: Option<String> },
    /// A response began.
    ResponseCreated,
    /// A response ended; its event carries its usage.
    ResponseDone,
    /// An `error` event.
    Error,
    /// Anything else: relayed untouched.
    Other,
}

#[derive(Deserialize)]
struct ServerPeek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    session: Option<SessionFields>,
}

impl ServerEvent {
    /// Reads what the session needs from one upstream event.
    pub fn of(text: &str) -> Self {
        let interesting = may_be(text, "response.created")
            || may_be(text, "response.done")
            || may_be(text, "session.created")
            || may_be(text, "\"error\"");
        if !interesting {
            return Self::Other;
        }
        let Ok(peek) = serde_json::from_str::<ServerPeek<'_>>(text) else {
            return Self::Other;
        };
        match peek.kind.as_ref() {
            "session.created" | "transcription_session.created" => Self::SessionCreated {
                model: peek.session.and_then(|s| s.model),
            },
            "response.created" => Self::ResponseCreated,
            "response.done" => Self::ResponseDone,
            "error" => Self::Error,
            _ => Self::Other,
        }
    }
}

/// Whether `text` may be an event of type `kind`: it says so plainly, or holds an escape (a
/// type spelled `session\u002eupdate` is the same type, and must not slip past). Audio, which
/// is most of the traffic, is base64: never an escape, so never parsed.
fn may_be(text: &str, kind: &str) -> bool {
    text.contains(kind) || text.contains('\\')
}

/// A Realtime `error` event carrying `error` (the same message, type and code as the HTTP
/// envelope), naming the caller's event it answers when there is one.
pub fn error_event(error: &ErrorBody, answering: Option<&str>) -> String {
    json!({
        "type": "error",
        "event_id": format!("event_tg_{}", uuid::Uuid::new_v4().simple()),
        "error": {
            "type": error.kind,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "event_id": answering,
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_update_is_read_in_both_spellings_and_other_events_are_not_parsed() {
        let read = |text| ClientEvent::checked(text).unwrap().unwrap();
        let ga = r#"{"type":"session.update","event_id":"e1","session":{"type":"realtime","model":"gpt-realtime-mini","audio":{"input":{"transcription":{"model":"whisper-1"}}}}}"#;
        let event = read(ga);
        assert!(event.is_session_update());
        assert_eq!(event.model(), Some("gpt-realtime-mini"));
        assert_eq!(
            event.transcriptions().collect::<Vec<_>>(),
            [Some("whisper-1")]
        );
        assert_eq!(event.event_id.as_deref(), Some("e1"));
        let beta = r#"{"type":"transcription_session.update","session":{"input_audio_transcription":{"model":"gpt-4o-transcribe"}}}"#;
        let event = read(beta);
        assert_eq!(
            event.transcriptions().collect::<Vec<_>>(),
            [Some("gpt-4o-transcribe")]
        );
        // Both spellings, each read: one without a model cannot hide the other.
        let both = r#"{"type":"session.update","session":{"input_audio_transcription":{},"audio":{"input":{"transcription":{"model":"whisper-1"}}}}}"#;
        assert_eq!(
            read(both).transcriptions().collect::<Vec<_>>(),
            [None, Some("whisper-1")]
        );
        let off = r#"{"type":"session.update","session":{"input_audio_transcription":null}}"#;
        assert_eq!(read(off).transcriptions().count(), 0);
        assert_eq!(event.model(), None);
        // Text that merely mentions the type is not an update.
        let item = r#"{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"session.update"}]}}"#;
        assert!(matches!(ClientEvent::checked(item), Ok(None)));
        let audio = r#"{"type":"input_audio_buffer.append","audio":"AAAA"}"#;
        assert!(matches!(ClientEvent::checked(audio), Ok(None)));
    }

    #[test]
    fn a_checked_event_that_cannot_be_read_plainly_is_not_sent_on() {
        // The type spelled with an escape is the same type.
        let escaped = r#"{"type":"session\u002eupdate","session":{"model":"gpt-4o"}}"#;
        assert_eq!(
            ClientEvent::checked(escaped).unwrap().unwrap().model(),
            Some("gpt-4o")
        );
        // A field given twice: which one the upstream keeps is unknown.
        for twice in [
            r#"{"type":"session.update","session":{"model":"gpt-realtime"},"session":{"model":"gpt-4o"}}"#,
            r#"{"type":"session.update","session":{"model":"gpt-realtime","model":"gpt-4o"}}"#,
            r#"{"type":"conversation.item.create","type":"session.update","session":{"model":"x"}}"#,
            r#"{"type":"session.update","session":{"model":["gpt-4o"]}}"#,
        ] {
            assert!(
                matches!(ClientEvent::checked(twice), Err(Unreadable)),
                "{twice}"
            );
        }
        let oob = r#"{"type":"response\u002ecreate","response":{"conversation":"none"}}"#;
        assert!(ClientEvent::checked(oob).unwrap().unwrap().is_out_of_band());
        let in_band = r#"{"type":"response.create","response":{"conversation":"auto"}}"#;
        assert!(
            !ClientEvent::checked(in_band)
                .unwrap()
                .unwrap()
                .is_out_of_band()
        );
        let plain = r#"{"type":"response.create"}"#;
        assert!(
            !ClientEvent::checked(plain)
                .unwrap()
                .unwrap()
                .is_out_of_band()
        );
    }

    #[test]
    fn upstream_events_are_told_apart() {
        assert_eq!(
            ServerEvent::of(
                r#"{"type":"session.created","session":{"model":"gpt-realtime-2025-08-28"}}"#
            ),
            ServerEvent::SessionCreated {
                model: Some("gpt-realtime-2025-08-28".to_owned())
            }
        );
        assert_eq!(
            ServerEvent::of(r#"{"type":"response.created","response":{"id":"r"}}"#),
            ServerEvent::ResponseCreated
        );
        assert_eq!(
            ServerEvent::of(r#"{"type":"response.done","response":{"usage":{}}}"#),
            ServerEvent::ResponseDone
        );
        // A delta whose text happens to say "response.done" is not the end of a response.
        assert_eq!(
            ServerEvent::of(r#"{"type":"response.output_text.delta","delta":"response.done"}"#),
            ServerEvent::Other
        );
    }

    #[test]
    fn an_error_event_has_realtimes_shape() {
        let body = crate::error::GatewayError::InsufficientQuota {
            message: "spent".to_owned(),
        }
        .body();
        let event: serde_json::Value =
            serde_json::from_str(&error_event(&body, Some("evt_1"))).unwrap();
        assert_eq!(event["type"], "error");
        assert_eq!(event["error"]["type"], "insufficient_quota");
        assert_eq!(event["error"]["code"], "insufficient_quota");
        assert_eq!(event["error"]["event_id"], "evt_1");
        assert!(event["event_id"].as_str().unwrap().starts_with("event_tg_"));
    }
}
