-- Bundles and imports (API.md, "Bundles (definition + data) and imports").
-- A bundle is an export with format 'bundle' and a scope: one workflow's runs ('workflow'), the
-- project's definitions ('schema') or definitions and runs ('database'); the last two belong to
-- no workflow. An import is a job of the same ledger (claim, lease, retries, fenced completion)
-- of kind 'import', reading an uploaded file and recording what it created in `result`.

CREATE TABLE files (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    object_key  text NOT NULL,
    file_name   text NOT NULL,
    size_bytes  bigint NOT NULL,
    sha256      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX files_expiring ON files (expires_at);

ALTER TABLE exports ALTER COLUMN workflow_id DROP NOT NULL;
ALTER TABLE exports DROP CONSTRAINT exports_format_check;
ALTER TABLE exports ADD CONSTRAINT exports_format_check
    CHECK (format IN ('csv', 'json', 'ndjson', 'parquet', 'bundle'));
ALTER TABLE exports ADD COLUMN kind text NOT NULL DEFAULT 'export'
    CHECK (kind IN ('export', 'import'));
ALTER TABLE exports ADD COLUMN scope text NOT NULL DEFAULT 'table'
    CHECK (scope IN ('table', 'workflow', 'schema', 'database'));
ALTER TABLE exports ADD COLUMN file_id uuid REFERENCES files (id) ON DELETE SET NULL;
ALTER TABLE exports ADD COLUMN result jsonb;
-- Project-level listings (Zangtable's GET /projects/{project}/exports).
CREATE INDEX exports_project ON exports (project_id, id DESC);
ALTER TABLE exports ADD COLUMN import_name text;
