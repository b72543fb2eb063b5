-- Batches created through Tollgate (issue #13): who created each, what its creation held on
-- the caller's budgets, when it is next looked up (and how many lookups failed in a row), and
-- when its output was priced and recorded (NULL until then).
CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    key_id TEXT,
    user_id TEXT,
    caller TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT,
    held_nanos BIGINT NOT NULL,
    next_poll_ms BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    accounted_at_ms BIGINT
);
CREATE INDEX batches_pending ON batches (next_poll_ms) WHERE accounted_at_ms IS NULL;
