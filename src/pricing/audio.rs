//! Audio: what a speech or transcription request asks for, and the most audio it can bill.
//!
//! OpenAI bills audio four ways: `whisper-1` by the minute of input audio, `tts-1` and
//! `tts-1-hd` by the character of input text, the transcribe and speech models by tokens
//! (audio input tokens at their own price), and the audio chat models (`gpt-audio`,
//! `gpt-4o-audio-preview`) by tokens with audio input and output at their own prices.
//!
//! A request's audio cannot be measured before it is sent without decoding it, so its worst
//! case is bounded by its size: no format OpenAI takes carries a second of audio in fewer
//! bytes than Opus at its lowest bitrate, 6 kbit/s.

use serde::Serialize;

/// What an audio request asks for, as far as its price depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AudioRequest {
    /// `/audio/speech`: the text to speak (with its `instructions`), in characters (what
    /// `tts-1` bills) and in UTF-8 bytes (no tokenizer makes more tokens than bytes).
    Speech { characters: u64, text_bytes: u64 },
    /// `/audio/transcriptions` and `/audio/translations`: the upload's size in bytes.
    Transcription { upload_bytes: u64 },
}

/// Bytes per second of the leanest audio OpenAI accepts (Opus at 6 kbit/s).
const FLOOR_BYTES_PER_SECOND: u64 = 750;

/// The most audio tokens one second of input audio takes. OpenAI counts one token per 100 ms
/// of input in its realtime guide, and its transcription estimates ($0.006 a minute at $6 per
/// million) imply about 17 a second; a worst case holds 20.
const INPUT_TOKENS_PER_SECOND: u64 = 20;

/// The longest audio `bytes` of upload can hold, in milliseconds.
pub fn most_millis(bytes: u64) -> u64 {
    bytes.saturating_mul(1_000).div_ceil(FLOOR_BYTES_PER_SECOND)
}

/// The most audio input tokens `bytes` of audio can be billed as.
pub fn most_input_tokens(bytes: u64) -> u64 {
    bytes
        .saturating_mul(INPUT_TOKENS_PER_SECOND)
        .div_ceil(FLOOR_BYTES_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_megabyte_holds_at_most_twenty_three_minutes() {
        // 1,000,000 bytes at 750 bytes a second: 1,333.3 s, rounded up to the millisecond.
        assert_eq!(most_millis(1_000_000), 1_333_334);
        assert_eq!(most_input_tokens(750), 20);
        assert_eq!(most_input_tokens(1), 1);
        assert_eq!(most_millis(u64::MAX), u64::MAX / FLOOR_BYTES_PER_SECOND + 1);
    }
}
