-- Costs in integer nano-dollars (10⁻⁹ USD) instead of micro-dollars, so that token-level
-- prices are exact and a million tiny calls add up to their true price (issue #13). Existing
-- costs are carried over exactly (× 1,000).
ALTER TABLE requests RENAME COLUMN cost_micros TO cost_nanos;
UPDATE requests SET cost_nanos = cost_nanos * 1000 WHERE cost_nanos IS NOT NULL;
ALTER TABLE usage_hourly RENAME COLUMN cost_micros TO cost_nanos;
UPDATE usage_hourly SET cost_nanos = cost_nanos * 1000;
ALTER TABLE usage_daily RENAME COLUMN cost_micros TO cost_nanos;
UPDATE usage_daily SET cost_nanos = cost_nanos * 1000;
