-- Which formats exist is the worker's format registry's to say (shared/src/export/formats), not
-- a constraint that every new format would have to migrate: requests are validated against the
-- registry before an export is stored, so the column only ever holds a registered name (or
-- 'bundle'). Dropping the check is what lets `tsv` (and the formats after it) be added as one
-- file and one registry entry.
ALTER TABLE exports DROP CONSTRAINT exports_format_check;
