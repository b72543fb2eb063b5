-- Audio usage, priced apart (issue #13): audio input and output tokens (parts of prompt_tokens and
-- completion_tokens) and the length of input audio billed by the minute, in milliseconds.
ALTER TABLE requests ADD COLUMN audio_input_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN audio_output_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN audio_ms BIGINT NOT NULL DEFAULT 0;
