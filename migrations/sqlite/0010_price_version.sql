-- The price table that priced each record's cost (PriceTable::version: the built-in table's
-- digest, plus one of the [pricing] overrides), so a cost can be audited against the prices
-- in force when it was made (issue #13).
ALTER TABLE requests ADD COLUMN price_version TEXT;
