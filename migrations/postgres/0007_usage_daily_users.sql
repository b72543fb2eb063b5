-- The daily rollup keeps the end user too, so that user groupings over whole days read days
-- rather than hours (with thousands of users active every hour, the hourly rollup is nearly
-- as large as the records). Rebuilt from the hourly rollup, which has the same retention.
CREATE TABLE usage_daily_by_user (
    day_ms             BIGINT NOT NULL,
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
    PRIMARY KEY (day_ms, caller, key_id, user_id, model)
);
INSERT INTO usage_daily_by_user
SELECT hour_ms - hour_ms % 86400000, caller, key_id, user_id, model, SUM(requests), SUM(errors),
       SUM(prompt_tokens), SUM(cached_tokens), SUM(completion_tokens), SUM(reasoning_tokens),
       SUM(images), SUM(cost_micros), SUM(unpriced), SUM(estimated)
FROM usage_hourly GROUP BY 1, 2, 3, 4, 5;
DROP TABLE usage_daily;
ALTER TABLE usage_daily_by_user RENAME TO usage_daily;
