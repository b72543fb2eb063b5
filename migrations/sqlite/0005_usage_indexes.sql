-- Budget seeding reads one key's (or user's) spend since the window start: without these it
-- would scan every rollup row of the window.
CREATE INDEX usage_hourly_key_user ON usage_hourly (key_id, user_id, hour_ms);
CREATE INDEX usage_hourly_caller_user ON usage_hourly (caller, user_id, hour_ms);
