-- Usage by day, caller, key and model, without the user: what the usage API reads for the whole
-- days of a range not grouped by user. With thousands of users active every hour the hourly
-- rollup holds nearly as many rows as the records; this one holds days × keys × models.
CREATE TABLE usage_daily (
    day_ms             BIGINT NOT NULL,
    caller             TEXT NOT NULL,
    key_id             TEXT NOT NULL,
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
    PRIMARY KEY (day_ms, caller, key_id, model)
);
INSERT INTO usage_daily
SELECT hour_ms - hour_ms % 86400000, caller, key_id, model, SUM(requests), SUM(errors),
       SUM(prompt_tokens), SUM(cached_tokens), SUM(completion_tokens), SUM(reasoning_tokens),
       SUM(images), SUM(cost_micros), SUM(unpriced), SUM(estimated)
FROM usage_hourly GROUP BY 1, 2, 3, 4;
