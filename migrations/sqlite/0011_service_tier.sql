-- The processing tier each answer reports (default, flex, priority, batch, ...): flex and batch
-- are priced at half, priority at its own prices (issue #13).
ALTER TABLE requests ADD COLUMN service_tier TEXT;
