-- Route families (JSON array: "batches", "fine_tuning", ...) a key with a model list or a budget
-- may use although their model or cost cannot be checked before forwarding.
ALTER TABLE api_keys ADD COLUMN routes TEXT NOT NULL DEFAULT '[]';
