-- The per-project cap on QUEUED exports (WHARF_PROJECT_QUEUE_MAX) counts with this.
CREATE INDEX exports_queued_by_project ON exports (project_id) WHERE status = 'QUEUED';
-- Key listing (GET /v1/api-keys) and the last-admin-key rule.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS last_used_at timestamptz;
