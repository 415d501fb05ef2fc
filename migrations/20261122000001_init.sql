-- The schema of record. Rows of each workflow live in a typed table of their own
-- (rows_<workflow id>), created by the repository when the workflow is created.

CREATE TABLE projects (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    -- sha256 of the secret; the secret itself is never stored.
    key_hash    bytea NOT NULL UNIQUE,
    -- the first characters of the secret, to tell keys apart in listings and logs
    prefix      text NOT NULL,
    scopes      text[] NOT NULL CHECK (scopes <@ ARRAY['read', 'write', 'admin'] AND cardinality(scopes) > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_project ON api_keys (project_id);

CREATE TABLE workflows (
    id           uuid PRIMARY KEY,
    project_id   uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name         text NOT NULL,
    -- ordered [{name, type, nullable}]; field i is stored in column c(i+1) of table_name
    schema       jsonb NOT NULL,
    table_name   text NOT NULL UNIQUE,
    -- the _id the next ingested row gets; runs into one workflow serialize on this row
    next_row_id  bigint NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflows_project ON workflows (project_id, id DESC);

CREATE TABLE runs (
    id            uuid PRIMARY KEY,
    workflow_id   uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    row_count     bigint NOT NULL,
    first_row_id  bigint NOT NULL,
    executed_at   timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_workflow ON runs (workflow_id, id DESC);

-- One export job, through its whole lifecycle (API.md: Exports, Retention).
CREATE TABLE exports (
    id                uuid PRIMARY KEY,
    project_id        uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    workflow_id       uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    run_id            uuid REFERENCES runs (id) ON DELETE SET NULL,
    format            text NOT NULL CHECK (format IN ('csv', 'json', 'ndjson', 'parquet')),
    compression       text NOT NULL CHECK (compression IN ('none', 'gzip', 'snappy', 'zstd')),
    -- filters, sortBy, order, rowIds, columns as validated at creation
    params            jsonb NOT NULL,
    status            text NOT NULL DEFAULT 'QUEUED'
                      CHECK (status IN ('QUEUED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED', 'EXPIRED')),
    -- claims made (crashes included); the lease token fences completion to one claim
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL DEFAULT 5,
    lease_token       uuid,
    lease_expires_at  timestamptz,
    worker_id         text,
    next_attempt_at   timestamptz,
    enqueued_at       timestamptz,
    cancel_requested  boolean NOT NULL DEFAULT false,
    rows_written      bigint NOT NULL DEFAULT 0,
    rows_total        bigint,
    bytes_written     bigint NOT NULL DEFAULT 0,
    row_count         bigint,
    size_bytes        bigint,
    sha256            text,
    object_key        text,
    content_type      text,
    file_name         text,
    error_code        text,
    error_message     text,
    idempotency_key   text,
    request_hash      text,
    request_id        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    completed_at      timestamptz,
    expires_at        timestamptz
);
CREATE INDEX exports_workflow ON exports (workflow_id, id DESC);
CREATE UNIQUE INDEX exports_idempotency ON exports (project_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- the reconciler's and the janitor's scans
CREATE INDEX exports_active ON exports (status, lease_expires_at)
    WHERE status IN ('QUEUED', 'IN_PROGRESS');
CREATE INDEX exports_expiring ON exports (expires_at) WHERE status = 'COMPLETED';

-- Multipart uploads begun by workers, so the janitor can abort orphans without relying on
-- ListMultipartUploads (which not every S3 server has).
CREATE TABLE export_uploads (
    upload_id    text PRIMARY KEY,
    export_id    uuid NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    object_key   text NOT NULL,
    state        text NOT NULL DEFAULT 'OPEN' CHECK (state IN ('OPEN', 'COMPLETED', 'ABORTED')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX export_uploads_open ON export_uploads (created_at) WHERE state = 'OPEN';

-- The generic record every asynchronous job has (exports now, imports later).
CREATE TABLE dock_statuses (
    id           uuid PRIMARY KEY,
    project_id   uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    job_type     text NOT NULL CHECK (job_type IN ('EXPORT', 'WORKFLOWS', 'IMPORT')),
    action       text NOT NULL,
    workflow_id  uuid REFERENCES workflows (id) ON DELETE CASCADE,
    export_id    uuid UNIQUE REFERENCES exports (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dock_statuses_project ON dock_statuses (project_id);
