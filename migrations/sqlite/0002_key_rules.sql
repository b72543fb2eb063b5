-- A key's own limit rules (JSON array of {scope, route, requests|tokens, per}); they replace the
-- configured defaults of the same scope and route for that key.
ALTER TABLE api_keys ADD COLUMN rules TEXT NOT NULL DEFAULT '[]';
