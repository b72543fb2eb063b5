-- A key's budgets (JSON {"key": {max_usd, period, alert_at}, "user": {...}}): one for the key as a
-- whole and one applied to each of its end users.
ALTER TABLE api_keys ADD COLUMN budgets TEXT NOT NULL DEFAULT '{}';
