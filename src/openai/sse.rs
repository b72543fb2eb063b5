//! Server-sent events, split as they arrive.
//!
//! The relay forwards the upstream's bytes event by event; this parser only finds where each
//! event ends (a blank line: `\n\n`, `\r\n\r\n` or `\r\r`) and what its `data` says, so that a
//! stage can look at an event without re-encoding it.

use bytes::{Bytes, BytesMut};

/// One complete event: its raw bytes (terminator included) and its joined `data` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub raw: Bytes,
    pub data: Option<String>,
}

impl Event {
    /// Whether this is OpenAI's end-of-stream marker, `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.as_deref() == Some("[DONE]")
    }
}

/// Accumulates bytes and yields complete events.
#[derive(Debug, Default)]
pub struct Parser {
    buffer: BytesMut,
}

impl Parser {
    /// Adds bytes from the wire.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete event, if the buffer holds one.
    pub fn next_event(&mut self) -> Option<Event> {
        let end = event_end(&self.buffer)?;
        let raw = self.buffer.split_to(end).freeze();
        let data = data_of(&raw);
        Some(Event { raw, data })
    }

    /// Bytes of an unfinished event (what a cut stream leaves behind).
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

/// Index just past the first blank line, if any.
fn event_end(buffer: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buffer.len() {
        match buffer[i] {
            b'\n' if buffer.get(i + 1) == Some(&b'\n') => return Some(i + 2),
            b'\r' if buffer.get(i + 1) == Some(&b'\n') => {
                if buffer.get(i + 2) == Some(&b'\r') && buffer.get(i + 3) == Some(&b'\n') {
                    return Some(i + 4);
                }
                if buffer.get(i + 2) == Some(&b'\n') {
                    return Some(i + 3);
                }
            }
            b'\r' if buffer.get(i + 1) == Some(&b'\r') => return Some(i + 2),
            _ => {}
        }
        i += 1;
    }
    None
}

fn data_of(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut data: Option<String> = None;
    for line in text.split(['\n', '\r']) {
        let Some(value) = line.strip_prefix("data:") else {
            continue;
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match &mut data {
            Some(existing) => {
                existing.push('\n');
                existing.push_str(value);
            }
            None => data = Some(value.to_owned()),
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_come_out_whole() {
        let mut parser = Parser::default();
        parser.push(b"data: {\"a\":");
        assert_eq!(parser.next_event(), None);
        parser.push(b"1}\n\ndata: [DONE]\n");
        let first = parser.next_event().unwrap();
        assert_eq!(first.raw, Bytes::from_static(b"data: {\"a\":1}\n\n"));
        assert_eq!(first.data.as_deref(), Some("{\"a\":1}"));
        assert_eq!(parser.next_event(), None);
        parser.push(b"\n");
        assert!(parser.next_event().unwrap().is_done());
        assert_eq!(parser.pending(), 0);
    }

    #[test]
    fn crlf_comments_and_multiline_data() {
        let mut parser = Parser::default();
        parser.push(b": keep-alive\r\n\r\nevent: x\r\ndata: a\r\ndata: b\r\n\r\n");
        assert_eq!(parser.next_event().unwrap().data, None);
        assert_eq!(parser.next_event().unwrap().data.as_deref(), Some("a\nb"));
    }
}
