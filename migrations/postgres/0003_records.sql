-- Audit records: one row per answered request (DESIGN "Records"). Costs are integer
-- micro-dollars; NULL cost means unpriced or unknown, never free.
CREATE TABLE requests (
    id                 TEXT PRIMARY KEY,
    created_at_ms      BIGINT NOT NULL,
    request_id         TEXT NOT NULL,
    key_id             TEXT,
    user_id            TEXT,
    caller             TEXT NOT NULL,
    method             TEXT NOT NULL,
    route              TEXT NOT NULL,
    model_requested    TEXT,
    model_used         TEXT,
    upstream           TEXT,
    status             INTEGER NOT NULL,
    outcome            TEXT NOT NULL,
    error_kind         TEXT,
    stream             BOOLEAN NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    cached_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    reasoning_tokens   BIGINT NOT NULL,
    image_input_tokens BIGINT NOT NULL,
    images             BIGINT NOT NULL,
    image_size         TEXT,
    image_quality      TEXT,
    cost_micros        BIGINT,
    estimated          BOOLEAN NOT NULL,
    cache_status       TEXT,
    latency_ms         BIGINT NOT NULL,
    upstream_ms        BIGINT,
    prompt_chars       BIGINT,
    completion_chars   BIGINT,
    rules_fired        TEXT NOT NULL,
    client_ip          TEXT,
    prompt_text        TEXT,
    completion_text    TEXT
);
-- Recent records newest first, overall and per key or user (GET /admin/requests), retention.
CREATE INDEX requests_created ON requests (created_at_ms);
CREATE INDEX requests_key_created ON requests (key_id, created_at_ms);
CREATE INDEX requests_user_created ON requests (user_id, created_at_ms);

-- Usage by hour, caller, key, user and model, maintained by the writer in the same
-- transaction as the records it summarises (only records newly stored are added, so replaying
-- a spill file never counts twice). The usage API and budget rebuilds read this, not requests.
CREATE TABLE usage_hourly (
    hour_ms            BIGINT NOT NULL,
    caller             TEXT NOT NULL,
    key_id             TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    model              TEXT NOT NULL,
    requests           BIGINT NOT NULL,
    errors             BIGINT NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    cached_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    reasoning_tokens   BIGINT NOT NULL,
    images             BIGINT NOT NULL,
    cost_micros        BIGINT NOT NULL,
    unpriced           BIGINT NOT NULL,
    estimated          BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, caller, key_id, user_id, model)
);
